/* Soak: several threads do random operations on one shared tree for a
 * bounded time (CTX_SOAK_SECONDS; default 20 s under TSan, 3 s elsewhere)
 * and check invariants as they go:
 *  - a descendant of a context whose ctx_cancel() has returned is done
 *    (propagation is synchronous), and a child of a done parent is done at
 *    birth with the parent's err and cause;
 *  - err never changes once set, and neither does the cause; the cause is
 *    never visible before err; err is one of the two documented values;
 *  - (err, cause) is a pair that a cancellation of the context or of an
 *    ancestor (up to a without_cancel) could have produced: CTX_CANCELED
 *    with a cause passed to a cancel of one of them (every cancel has a
 *    unique cause, or none: CTX_CANCELED), or CTX_DEADLINE_EXCEEDED with the
 *    cause of one of their own deadlines (each unique, or none: the err);
 *    and over the run some cancel with a unique cause won;
 *  - an after-func runs at most once, only on a done context, and
 *    ctx_after_stop() tells the truth (true: it never ran; false: it ran and
 *    has returned);
 *  - a done fd is readable iff the context is done;
 *  - values are those of the nearest ancestor holding the key; deadlines
 *    never change;
 *  - at the end, with everything released, the library's live context and
 *    registration counters (CTX_DEBUG) are back to zero.
 * It prints the operations per second and the number of checks made.
 *
 * The test keeps its own record of each context (parent, kind, what it has
 * seen), reference-counted, so that checks can walk the ancestry. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define NSLOTS 64
#define NROOTS 4
#define MAXDEPTH 10
#define NTHREADS 4
#define MAXREGS 16
#define MAXCAUSES 8

/* Unique causes: a worker's cancels use arg * 10000000 + n, deadlines
 * DL_CAUSE_BASE + n; none is CTX_CANCELED or CTX_DEADLINE_EXCEEDED. */
#define DL_CAUSE_BASE 1000000000

enum kind { K_ROOT, K_CANCEL, K_DEADLINE, K_TIMEOUT, K_VALUE, K_WITHOUT };

struct rec {
    ctx_t *c;
    struct rec *parent;
    enum kind kind;
    int depth;
    const ctx_key_t *key; /* K_VALUE */
    void *value;
    bool has_deadline;
    ctx_time_t deadline;
    atomic_int refs;
    atomic_int seen_err, seen_cause;
    atomic_bool cancel_returned;
    /* Every cancel that may have won (it found the context live): its
     * cause, or `plain` for a cancel without one. A cancel that finds the
     * record full is skipped; one that finds the context done cannot win
     * and is made unrecorded. */
    atomic_int causes[MAXCAUSES];
    atomic_int ncauses;
    atomic_bool plain;
    /* The cause its own deadline reports; 0 when it has no deadline of its
     * own (a parent deadline earlier than the one asked for, or none). */
    int dl_cause;
};

static const ctx_key_t keys[3] = {CTX_KEY("k0"), CTX_KEY("k1"),
                                  CTX_KEY("k2")};
static int values[4];

struct slot {
    pthread_mutex_t mu;
    struct rec *r;
};
static struct slot slots[NSLOTS];
static struct slot roots[NROOTS];

static atomic_bool stop_flag;
static atomic_long total_ops, total_checks, destroys_pending;
static atomic_long total_won, total_skipped;
static atomic_int next_dl_cause = DL_CAUSE_BASE;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        REL_CHECK(cond, __VA_ARGS__);                                          \
    } while (0)

static void value_destroy(void *v)
{
    REL_CHECK(v >= (void *)&values[0] && v <= (void *)&values[3],
              "destroy got a wrong value");
    atomic_fetch_sub(&destroys_pending, 1);
}

static struct rec *rec_retain(struct rec *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

static void rec_release(struct rec *r)
{
    while (r != NULL &&
           atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
        struct rec *p = r->parent;
        ctx_release(r->c);
        free(r);
        r = p;
    }
}

static struct rec *slot_get(struct slot *s)
{
    pthread_mutex_lock(&s->mu);
    struct rec *r = s->r ? rec_retain(s->r) : NULL;
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void slot_put(struct slot *s, struct rec *r)
{
    pthread_mutex_lock(&s->mu);
    struct rec *old = s->r;
    s->r = r;
    pthread_mutex_unlock(&s->mu);
    rec_release(old);
}

/* Empties s if it still holds r. */
static void slot_clear_if(struct slot *s, struct rec *r)
{
    pthread_mutex_lock(&s->mu);
    struct rec *old = s->r == r ? r : NULL;
    if (old != NULL)
        s->r = NULL;
    pthread_mutex_unlock(&s->mu);
    rec_release(old);
}

struct rng {
    uint64_t s;
};
static uint32_t rnd(struct rng *g, uint32_t n)
{
    g->s ^= g->s << 13;
    g->s ^= g->s >> 7;
    g->s ^= g->s << 17;
    return (uint32_t)((g->s >> 11) % n);
}

static bool cancellable(const struct rec *r)
{
    return r->kind == K_CANCEL || r->kind == K_DEADLINE ||
           r->kind == K_TIMEOUT || r->kind == K_ROOT;
}

static const char *kind_name(enum kind k)
{
    static const char *const names[] = {"root",    "cancel", "deadline",
                                        "timeout", "value",  "without"};
    return names[k];
}

/* Could a cancellation of r or an ancestor (up to a without_cancel) have
 * made r done with (err, cause)? The cancel or timer that won recorded its
 * cause before it ran, so reading err (acquire) makes the record visible. */
static bool pair_possible(struct rec *r, int err, int cause)
{
    for (struct rec *a = r; a != NULL && a->kind != K_WITHOUT; a = a->parent) {
        if (err == CTX_DEADLINE_EXCEEDED) {
            if (a->dl_cause != 0 && a->dl_cause == cause)
                return true;
        } else if (err == CTX_CANCELED) {
            if (cause == CTX_CANCELED && atomic_load(&a->plain))
                return true;
            int n = atomic_load(&a->ncauses);
            for (int i = 0; i < n && i < MAXCAUSES; i++)
                if (atomic_load(&a->causes[i]) == cause)
                    return true;
        }
    }
    return false;
}

/* ctx_cancel_cause(r, cause) (ctx_cancel() when cause is 0 and `plain_fn`),
 * recorded first if it may win. Returns its result, or -1 when skipped. */
static int do_cancel(struct rec *r, int cause, bool plain_fn)
{
    if (cancellable(r) && !ctx_is_done(r->c)) {
        if (cause == 0) {
            atomic_store(&r->plain, true);
        } else {
            int i = atomic_fetch_add(&r->ncauses, 1);
            if (i >= MAXCAUSES) {
                atomic_fetch_add_explicit(&total_skipped, 1,
                                          memory_order_relaxed);
                return -1;
            }
            atomic_store(&r->causes[i], cause);
        }
    }
    return cause == 0 && plain_fn ? ctx_cancel(r->c)
                                  : ctx_cancel_cause(r->c, cause);
}

/* Observes r: err and cause stable, cause never before err, propagation. */
static long observe(struct rec *r)
{
    long checks = 0;
    /* Each read below comes after the one it is checked against. */
    int seen = atomic_load(&r->seen_err);
    int cause = ctx_cause(r->c);
    bool done = ctx_is_done(r->c);
    int err = ctx_err(r->c);
    CHECK(cause == 0 || done, "cause %d visible before done", cause);
    CHECK(cause == 0 || err != 0, "cause %d visible before err", cause);
    CHECK(!done || err != 0, "done, then err 0");
    CHECK(err == 0 || err == CTX_CANCELED || err == CTX_DEADLINE_EXCEEDED,
          "err %d", err);
    if (r->kind == K_WITHOUT)
        CHECK(!done, "without_cancel is done");
    if (err != 0) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&r->seen_err, &expected, err))
            CHECK(expected == err, "err changed from %d to %d", expected, err);
        cause = ctx_cause(r->c);
        CHECK(cause != 0, "done with cause 0");
        expected = 0;
        if (!atomic_compare_exchange_strong(&r->seen_cause, &expected, cause))
            CHECK(expected == cause, "cause changed from %d to %d", expected,
                  cause);
        else /* the first to see it checks its value */
            CHECK(pair_possible(r, err, cause),
                  "err %d with cause %d: no cancellation of this %s context "
                  "(depth %d) or its ancestors could give that",
                  err, cause, kind_name(r->kind), r->depth);
    } else {
        CHECK(seen == 0, "err went back from %d to 0", seen);
    }
    /* An ancestor (up to a without_cancel) whose cancel returned: done. */
    for (struct rec *a = r; a != NULL && a->kind != K_WITHOUT; a = a->parent) {
        if (atomic_load_explicit(&a->cancel_returned, memory_order_acquire)) {
            CHECK(ctx_is_done(r->c), "descendant of a cancelled context "
                                     "is live (depth %d below)",
                  r->depth - a->depth);
            break;
        }
    }
    /* Values: the nearest holder's. */
    for (int k = 0; k < 3; k++) {
        void *want = NULL;
        for (struct rec *a = r; a != NULL; a = a->parent)
            if (a->kind == K_VALUE && a->key == &keys[k]) {
                want = a->value;
                break;
            }
        CHECK(ctx_value(r->c, &keys[k]) == want, "wrong value");
    }
    ctx_time_t dl = 0;
    bool has = ctx_deadline(r->c, &dl);
    CHECK(has == r->has_deadline && (!has || dl == r->deadline),
          "deadline changed");
    return checks;
}

/* Regression guard for the "losing cancel" core bug found by this soak
 * (docs/RELIABILITY.md; fixed in 15674ff): a ctx_cancel() that loses the
 * race to a cancellation in progress must still return only once every
 * descendant is done. Every cancel arms the propagation check; with
 * CTX_SOAK_STRICT=0 only cancels known to have won (their unique cause is
 * the one reported) do, to tell that bug from others. */
static bool strict;

/* After ctx_cancel_cause(r, cause) returned: arms the propagation check. */
static void cancel_returned(struct rec *r, int cause)
{
    bool won = cause != 0 && ctx_cause(r->c) == cause;
    if (won)
        atomic_fetch_add_explicit(&total_won, 1, memory_order_relaxed);
    if (won || strict)
        atomic_store_explicit(&r->cancel_returned, true, memory_order_release);
}

struct after_arg {
    atomic_int runs;
    struct rec *r;
};

static void after_fn(void *p)
{
    struct after_arg *a = p;
    REL_CHECK(ctx_is_done(a->r->c), "after-func ran on a live context");
    int n = atomic_fetch_add(&a->runs, 1);
    REL_CHECK(n == 0, "after-func ran %d times", n + 1);
}

struct reg {
    ctx_after_t *h;
    struct after_arg *a;
};

static long stop_reg(struct reg *g)
{
    long checks = 0;
    bool prevented = ctx_after_stop(g->h);
    int runs = atomic_load(&g->a->runs);
    CHECK(prevented ? runs == 0 : runs == 1,
          "after_stop returned %d but fn ran %d times", prevented, runs);
    rec_release(g->a->r);
    free(g->a);
    return checks;
}

static struct rec *new_rec(struct rec *parent, enum kind kind, struct rng *g,
                           long *checks_out)
{
    long checks = 0;
    ctx_t *pc = parent ? parent->c : ctx_background();
    /* Read before the derivation: a parent done now gives a child done at
     * birth with the parent's err and cause. */
    int perr = ctx_err(pc), pcause = ctx_cause(pc);
    struct rec *r = calloc(1, sizeof *r);
    REL_CHECK(r != NULL, "out of memory");
    r->kind = kind;
    r->parent = parent ? rec_retain(parent) : NULL;
    r->depth = parent ? parent->depth + 1 : 0;
    atomic_init(&r->refs, 1);
    switch (kind) {
    case K_ROOT:
        if (rnd(g, 4) == 0) {
            r->c = ctx_with_timeout(pc, (ctx_duration_t)rnd(g, 200) *
                                            CTX_MILLISECOND);
            r->dl_cause = CTX_DEADLINE_EXCEEDED; /* background: its own */
        } else {
            r->c = ctx_with_cancel(pc);
        }
        break;
    case K_CANCEL:
        r->c = ctx_with_cancel(pc);
        break;
    case K_DEADLINE: {
        /* A unique cause two times in three, else none (either call). */
        int ca = rnd(g, 3) ? atomic_fetch_add_explicit(&next_dl_cause, 1,
                                                       memory_order_relaxed)
                           : 0;
        ctx_time_t dl = rnd(g, 8) == 0 ? ctx_now() - 1
                                       : ctx_now() + CTX_HOUR + rnd(g, 9);
        r->c = ca != 0 || rnd(g, 2) ? ctx_with_deadline_cause(pc, dl, ca)
                                    : ctx_with_deadline(pc, dl);
        /* Its own deadline iff it reports the one asked for (else the
         * parent's, earlier). */
        ctx_time_t got = 0;
        if (r->c != NULL && ctx_deadline(r->c, &got) && got == dl)
            r->dl_cause = ca != 0 ? ca : CTX_DEADLINE_EXCEEDED;
        break;
    }
    case K_TIMEOUT: {
        int ca = rnd(g, 3) ? atomic_fetch_add_explicit(&next_dl_cause, 1,
                                                       memory_order_relaxed)
                           : 0;
        ctx_duration_t to = (ctx_duration_t)rnd(g, 3000) * CTX_MICROSECOND;
        ctx_time_t t0 = ctx_now();
        r->c = ca != 0 || rnd(g, 2) ? ctx_with_timeout_cause(pc, to, ca)
                                    : ctx_with_timeout(pc, to);
        /* Asked for t0 + to or a little later; earlier is the parent's. */
        ctx_time_t got = 0;
        if (r->c != NULL && ctx_deadline(r->c, &got) && got >= t0 + to)
            r->dl_cause = ca != 0 ? ca : CTX_DEADLINE_EXCEEDED;
        break;
    }
    case K_VALUE:
        r->key = &keys[rnd(g, 3)];
        r->value = rnd(g, 5) == 0 ? NULL : &values[rnd(g, 4)];
        atomic_fetch_add(&destroys_pending, 1);
        r->c = ctx_with_value(pc, r->key, r->value,
                              r->value ? value_destroy : NULL);
        if (r->value == NULL)
            atomic_fetch_sub(&destroys_pending, 1);
        break;
    case K_WITHOUT:
        r->c = ctx_without_cancel(pc);
        break;
    }
    REL_CHECK(r->c != NULL, "derivation failed: %s", strerror(errno));
    r->has_deadline = ctx_deadline(r->c, &r->deadline);
    if (perr != 0 && kind != K_WITHOUT) {
        CHECK(ctx_err(r->c) == perr && ctx_cause(r->c) == pcause,
              "child of a done parent (%d/%d) is %d/%d at birth", perr,
              pcause, ctx_err(r->c), ctx_cause(r->c));
    }
    *checks_out += checks;
    return r;
}

static void *worker(void *arg)
{
    struct rng g = {0x9e3779b97f4a7c15ull * (uintptr_t)arg + 1};
    struct reg regs[MAXREGS];
    int nregs = 0;
    long ops = 0, checks = 0;
    /* Unique causes tell whether this thread's cancel won. */
    int my_cause = (int)(uintptr_t)arg * 10000000;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        for (int burst = 0; burst < 64; burst++, ops++) {
            struct slot *s = &slots[rnd(&g, NSLOTS)];
            struct rec *r = slot_get(s);
            if (r == NULL)
                r = slot_get(&roots[rnd(&g, NROOTS)]);
            unsigned op = rnd(&g, 100);
            if (op < 30) { /* derive, into a random slot */
                struct rec *p = r;
                if (p->depth >= MAXDEPTH) {
                    rec_release(p);
                    p = slot_get(&roots[rnd(&g, NROOTS)]);
                }
                static const enum kind ks[] = {K_CANCEL, K_CANCEL,  K_DEADLINE,
                                               K_TIMEOUT, K_VALUE, K_VALUE,
                                               K_WITHOUT};
                struct rec *c =
                    new_rec(p, ks[rnd(&g, sizeof ks / sizeof ks[0])], &g,
                            &checks);
                checks += observe(c);
                slot_put(&slots[rnd(&g, NSLOTS)], c);
                rec_release(p);
                continue;
            } else if (op < 40) { /* cancel */
                int cause = rnd(&g, 4) ? ++my_cause : 0;
                int e = do_cancel(r, cause, rnd(&g, 2));
                if (e == -1) /* its record is full */
                    goto observe;
                CHECK(e == (cancellable(r) ? 0 : EINVAL), "cancel returned %d",
                      e);
                if (cancellable(r)) {
                    CHECK(ctx_is_done(r->c), "cancelled but live");
                    cancel_returned(r, cause);
                }
            } else if (op < 55) { /* observe */
                /* (falls through to the observe below) */
            } else if (op < 62) { /* release: the slot becomes empty */
                slot_clear_if(s, r);
            } else if (op < 74) { /* after-func */
                if (nregs < MAXREGS) {
                    struct after_arg *a = calloc(1, sizeof *a);
                    a->r = rec_retain(r);
                    bool was_done = ctx_is_done(r->c);
                    ctx_after_t *h = ctx_after_func(r->c, after_fn, a);
                    REL_CHECK(h != NULL, "after_func: %s", strerror(errno));
                    if (was_done)
                        CHECK(atomic_load(&a->runs) == 1,
                              "after-func of a done context did not run "
                              "before after_func returned");
                    regs[nregs++] = (struct reg){h, a};
                } else {
                    int i = (int)rnd(&g, (uint32_t)nregs);
                    checks += stop_reg(&regs[i]);
                    regs[i] = regs[--nregs];
                }
            } else if (op < 80) { /* wait_until, briefly */
                int e = ctx_wait_until(
                    r->c, ctx_now() + (ctx_time_t)rnd(&g, 200) * 1000);
                int now_err = ctx_err(r->c);
                CHECK(e == 0 || e == now_err, "wait_until returned %d, err %d",
                      e, now_err);
            } else if (op < 86) { /* done fd */
                /* Readable implies done (Go: Done closed => Err set); done
                 * implies readable promptly (the signal follows the err
                 * store), so a done context gets a short poll. */
                bool was_done = ctx_is_done(r->c);
                int fd = ctx_done_fd(r->c);
                REL_CHECK(fd >= 0, "done_fd: %s", strerror(errno));
                struct pollfd pf = {.fd = fd, .events = POLLIN};
                int n = poll(&pf, 1, was_done ? 5000 : 0);
                bool done_after = ctx_is_done(r->c);
                CHECK(n >= 0 && !(pf.revents & POLLNVAL), "poll");
                CHECK(!was_done || n == 1, "done but fd not readable");
                CHECK(n == 0 || done_after, "fd readable but live");
            } else if (op < 90) { /* retain/release pair, format */
                ctx_t *c = ctx_retain(r->c);
                char buf[64];
                size_t n = ctx_format(c, buf, sizeof buf);
                CHECK(n > 0 && strncmp(buf, "context.", 8) == 0, "format");
                ctx_release(c);
            } else if (op < 92) { /* replace a root */
                struct rec *nr = new_rec(NULL, K_ROOT, &g, &checks);
                struct slot *rs = &roots[rnd(&g, NROOTS)];
                struct rec *old = slot_get(rs);
                if (rnd(&g, 2)) {
                    int cause = ++my_cause;
                    if (do_cancel(old, cause, false) != -1)
                        cancel_returned(old, cause);
                }
                rec_release(old);
                slot_put(rs, nr);
            }
        observe:
            checks += observe(r);
            rec_release(r);
        }
    }
    while (nregs > 0)
        checks += stop_reg(&regs[--nregs]);
    atomic_fetch_add(&total_ops, ops);
    atomic_fetch_add(&total_checks, checks);
    return NULL;
}

int main(void)
{
    double seconds =
        (double)rel_env_long("CTX_SOAK_SECONDS", REL_TSAN ? 20 : 3);
    strict = rel_env_long("CTX_SOAK_STRICT", 1) != 0;
    struct rng g = {12345};
    long checks = 0;
    for (int i = 0; i < NROOTS; i++) {
        pthread_mutex_init(&roots[i].mu, NULL);
        roots[i].r = new_rec(NULL, K_CANCEL, &g, &checks);
    }
    for (int i = 0; i < NSLOTS; i++)
        pthread_mutex_init(&slots[i].mu, NULL);

    pthread_t th[NTHREADS];
    ctx_time_t t0 = ctx_now();
    for (long i = 0; i < NTHREADS; i++)
        REL_EQ(pthread_create(&th[i], NULL, worker, (void *)(i + 1)), 0);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop_flag, true);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    double elapsed = (double)(ctx_now() - t0) / 1e9;

    for (int i = 0; i < NSLOTS; i++)
        slot_put(&slots[i], NULL);
    for (int i = 0; i < NROOTS; i++)
        slot_put(&roots[i], NULL);
#ifdef CTX_DEBUG
    /* The timer thread may still hold the reference it fired with. */
    for (int i = 0; i < 2000 && ctx__live_contexts() != 0; i++)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
    total_checks += 2;
#endif
    REL_EQ(atomic_load(&destroys_pending), 0);
    /* The cause checks above are empty if no unique cause ever wins. */
    REL_CHECK(atomic_load(&total_won) > 0, "no cancel with a cause won");
    total_checks++;
    long ops = atomic_load(&total_ops);
    printf("rel_soak: %d threads, %.1f s: %ld operations (%.0f ops/s), "
           "%ld invariant checks, all held; live contexts back to 0\n",
           NTHREADS, elapsed, ops, (double)ops / elapsed,
           atomic_load(&total_checks) + checks + 1);
    return 0;
}
