/* Races (Go: TestSimultaneousCancels, TestInterlockedCancels, the -race
 * runs of the context tests): creation, cancellation, release, waits,
 * after-funcs and the timer thread, all at once. Every case checks the
 * contract's invariants once the threads have joined, and leaks nothing.
 * Iteration counts scale down under sanitizers (TU_SLOW). */
#include "testutil.h"
#include "platform.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>

/* ---- Failures seen in worker threads (cmocka asserts only in main). ---- */

static _Atomic int failures;
static char first_failure[256];

static void note_failure(int line, const char *what, long long a, long long b)
{
    if (atomic_fetch_add(&failures, 1) == 0)
        snprintf(first_failure, sizeof first_failure,
                 "line %d: %s (%lld, %lld)", line, what, a, b);
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            note_failure(__LINE__, #cond, 0, 0);                               \
    } while (0)
#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_)                                                          \
            note_failure(__LINE__, #a " == " #b, a_, b_);                      \
    } while (0)

static void assert_no_failures(void)
{
    int n = atomic_load(&failures);
    if (n != 0)
        fail_msg("%d failed checks in threads; first: %s", n, first_failure);
}

static int reset(void **state)
{
    (void)state;
    atomic_store(&failures, 0);
    first_failure[0] = '\0';
    return 0;
}

static void assert_live(long contexts)
{
#ifdef CTX_DEBUG
    assert_int_equal(ctx__live_contexts(), contexts);
#else
    (void)contexts;
#endif
}

/* ---- A crew: persistent threads that run one role per iteration, in step
 * with the main thread (start and end barriers). ---- */

struct crew {
    pthread_barrier_t start, end;
    int iters;
    int n;
    void (*role)(int who, int iter, void *arg);
    void *arg;
    pthread_t th[8];
    int ids[8];
};

static struct crew *the_crew;

static void *crew_main(void *arg)
{
    int who = *(int *)arg;
    struct crew *c = the_crew;
    for (int i = 0; i < c->iters; i++) {
        pthread_barrier_wait(&c->start);
        c->role(who, i, c->arg);
        pthread_barrier_wait(&c->end);
    }
    return NULL;
}

static void crew_start(struct crew *c, int n, int iters,
                       void (*role)(int, int, void *), void *arg)
{
    c->n = n;
    c->iters = iters;
    c->role = role;
    c->arg = arg;
    the_crew = c;
    assert_int_equal(pthread_barrier_init(&c->start, NULL, (unsigned)n + 1), 0);
    assert_int_equal(pthread_barrier_init(&c->end, NULL, (unsigned)n + 1), 0);
    for (int i = 0; i < n; i++) {
        c->ids[i] = i;
        c->th[i] = tu_spawn(crew_main, &c->ids[i]);
    }
}

static void crew_finish(struct crew *c)
{
    for (int i = 0; i < c->n; i++)
        tu_join_within(c->th[i], 30 * CTX_SECOND);
    pthread_barrier_destroy(&c->start);
    pthread_barrier_destroy(&c->end);
}

/* A short random spin so that the two sides meet at varied points. */
static void jitter(unsigned *seed)
{
    int n = (int)(rand_r(seed) % 200);
    for (volatile int i = 0; i < n; i++)
        ;
}

static void count_fn(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static const ctx_key_t key = CTX_KEY("race");


/* ==== 1. A parent's cancel racing the creation of its children. ==== */

#define CREATE_N 8

struct create_race {
    ctx_t *parent;
    ctx_t *kids[CREATE_N];
    ctx_after_t *regs[CREATE_N];
    _Atomic int calls[CREATE_N];
    int cause;
    unsigned seed;
};

static void create_role(int who, int iter, void *arg)
{
    (void)who;
    (void)iter;
    struct create_race *r = arg;
    jitter(&r->seed);
    ctx_t *p = r->parent;
    ctx_t **k = r->kids;
    k[0] = ctx_with_cancel(p);
    k[1] = ctx_with_timeout(p, CTX_HOUR);
    k[2] = ctx_with_value(p, &key, NULL, NULL);
    k[3] = ctx_with_cancel(k[2]);
    k[4] = ctx_with_deadline_cause(k[0], ctx_now() + CTX_HOUR, EDOM);
    k[5] = ctx_with_cancel(k[1]);
    k[6] = ctx_with_timeout(k[3], CTX_HOUR);
    k[7] = ctx_with_cancel(p);
    for (int i = 0; i < CREATE_N; i++) {
        CHECK(k[i] != NULL);
        r->regs[i] = ctx_after_func(k[i], count_fn, (void *)&r->calls[i]);
        CHECK(r->regs[i] != NULL);
    }
}

static void test_parent_cancel_vs_child_creation(void **state)
{
    (void)state;
    static struct create_race r;
    struct crew crew;
    const int iters = 1000;
    r.seed = 12345;
    crew_start(&crew, 1, iters, create_role, &r);
    unsigned seed = 777;
    for (int it = 0; it < iters; it++) {
        r.parent = ctx_with_cancel(ctx_background());
        r.cause = 1000 + it;
        for (int i = 0; i < CREATE_N; i++)
            atomic_store(&r.calls[i], 0);
        pthread_barrier_wait(&crew.start);
        jitter(&seed);
        assert_int_equal(ctx_cancel_cause(r.parent, r.cause), 0);
        pthread_barrier_wait(&crew.end);
        assert_no_failures();
        for (int i = 0; i < CREATE_N; i++) {
            ctx_t *k = r.kids[i];
            /* Born before the cancel: cancelled by it; after: done at
             * birth. Either way the parent's err and cause. */
            assert_true(ctx_is_done(k));
            assert_int_equal(ctx_err(k), CTX_CANCELED);
            assert_int_equal(ctx_cause(k), r.cause);
            assert_int_equal(ctx_wait_until(k, 0), CTX_CANCELED);
            /* Its after-func ran exactly once, already: inline at
             * registration or inside the parent's ctx_cancel. */
            assert_int_equal(atomic_load(&r.calls[i]), 1);
            assert_false(ctx_after_stop(r.regs[i]));
        }
        for (int i = CREATE_N - 1; i >= 0; i--)
            ctx_release(r.kids[i]);
        ctx_release(r.parent);
        assert_live(0);
    }
    crew_finish(&crew);
    tu_assert_no_live();
}

/* ==== 2. Concurrent random cancels on a random tree of mixed kinds. ==== */

#define TREE_N 100
#define TREE_THREADS 4
#define CBASE 1000000 /* cancel causes: CBASE + seq * 128 + node */
#define DBASE 500000  /* deadline causes: DBASE + node */

enum kind { K_CANCEL, K_TIMEOUT_SHORT, K_TIMEOUT_LONG, K_VALUE, K_WITHOUT };

struct tree {
    ctx_t *n[TREE_N];
    enum kind kind[TREE_N];
    int parent[TREE_N];
    int src[TREE_N];  /* nearest cancellable ancestor-or-self, -1: none */
    int psrc[TREE_N]; /* for cancellable nodes: src of the parent */
    int vals[TREE_N];
    ctx_key_t keys[TREE_N];
    ctx_after_t *regs[TREE_N];
    _Atomic int calls[TREE_N];
    /* The first (err, cause) any thread saw on a done node. */
    _Atomic long long seen[TREE_N]; /* pack(): 64 bits on every ABI */
    int cancellable[TREE_N], ncancellable;
    tu_event_t fired;
    unsigned seeds[TREE_THREADS];
};

static struct tree T;

static bool is_cancellable(enum kind k)
{
    return k == K_CANCEL || k == K_TIMEOUT_SHORT || k == K_TIMEOUT_LONG;
}

static void tree_fn(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&T.calls[i], 1);
    tu_event_set(&T.fired);
}

static long long pack(int err, int cause)
{
    return (long long)err << 32 | (unsigned)cause;
}

/* Records or compares what is seen of node i. */
static void observe(int i)
{
    int cause = ctx_cause(T.n[i]);
    int err = ctx_err(T.n[i]);
    /* Cause never visible before err. */
    if (cause != 0)
        CHECK(err != 0);
    if (err == 0)
        return;
    cause = ctx_cause(T.n[i]);
    CHECK(cause != 0);
    long long expect = 0, now = pack(err, cause);
    if (!atomic_compare_exchange_strong(&T.seen[i], &expect, now))
        CHECK_EQ(expect, now); /* never changes once done */
}

/* Whether node j's cancel state is reached by cancelling node i. */
static bool in_domain(int j, int i)
{
    for (int s = T.src[j]; s >= 0; s = T.psrc[s])
        if (s == i)
            return true;
    return false;
}

static void tree_role(int who, int iter, void *arg)
{
    (void)iter;
    (void)arg;
    unsigned *seed = &T.seeds[who];
    for (int k = 0; k < 40; k++) {
        int i = T.cancellable[rand_r(seed) % (unsigned)T.ncancellable];
        int cause = CBASE + (who * 1000 + k) * 128 + i;
        CHECK_EQ(ctx_cancel_cause(T.n[i], cause), 0);
        /* Synchronous: the node and every descendant are done now, also
         * when another thread's cancellation (or the timer's) won. */
        CHECK(ctx_is_done(T.n[i]));
        for (int j = 0; j < TREE_N; j++)
            if (in_domain(j, i) && !ctx_is_done(T.n[j]))
                note_failure(__LINE__, "descendant live after cancel returned",
                             i, j);
        observe(i);
        /* Look around too. */
        for (int j = 0; j < 3; j++)
            observe((int)(rand_r(seed) % TREE_N));
        if (rand_r(seed) % 8 == 0)
            sched_yield();
    }
}

static void build_tree(unsigned seed)
{
    T.ncancellable = 0;
    int nshort = 0;
    for (int i = 0; i < TREE_N; i++) {
        enum kind k;
        int p;
        if (i == 0) {
            k = K_CANCEL;
            p = -1;
        } else {
            unsigned r = rand_r(&seed) % 100;
            k = r < 35   ? K_CANCEL
                : r < 50 ? K_TIMEOUT_SHORT
                : r < 60 ? K_TIMEOUT_LONG
                : r < 88 ? K_VALUE
                         : K_WITHOUT;
            p = (int)(rand_r(&seed) % (unsigned)i);
        }
        ctx_t *parent = p < 0 ? ctx_background() : T.n[p];
        ctx_t *c = NULL;
        T.keys[i].name = "k";
        T.vals[i] = i;
        switch (k) {
        case K_CANCEL:
            c = ctx_with_cancel(parent);
            break;
        case K_TIMEOUT_SHORT:
            c = ctx_with_timeout_cause(
                parent, (1 + rand_r(&seed) % 15) * CTX_MILLISECOND, DBASE + i);
            nshort++;
            break;
        case K_TIMEOUT_LONG:
            c = ctx_with_timeout_cause(parent, CTX_HOUR, DBASE + i);
            break;
        case K_VALUE:
            c = ctx_with_value(parent, &T.keys[i], &T.vals[i], NULL);
            break;
        case K_WITHOUT:
            c = ctx_without_cancel(parent);
            break;
        }
        assert_non_null(c);
        T.n[i] = c;
        T.kind[i] = k;
        T.parent[i] = p;
        int ps = p < 0 ? -1 : T.src[p];
        if (is_cancellable(k)) {
            T.src[i] = i;
            T.psrc[i] = ps;
            T.cancellable[T.ncancellable++] = i;
        } else {
            T.src[i] = k == K_WITHOUT ? -1 : ps;
            T.psrc[i] = -1;
        }
        atomic_store(&T.calls[i], 0);
        atomic_store(&T.seen[i], 0);
        T.regs[i] = ctx_after_func(c, tree_fn, (void *)(intptr_t)i);
        assert_non_null(T.regs[i]);
    }
    (void)nshort;
}

/* The values of every value ancestor are visible (through without_cancel
 * too), and stay readable after cancellation. */
static void check_values(int i)
{
    for (int a = T.parent[i]; a >= 0; a = T.parent[a])
        if (T.kind[a] == K_VALUE)
            assert_ptr_equal(ctx_value(T.n[i], &T.keys[a]), &T.vals[a]);
    if (T.kind[i] == K_VALUE)
        assert_ptr_equal(ctx_value(T.n[i], &T.keys[i]), &T.vals[i]);
}

static void check_tree(void)
{
    for (int i = 0; i < TREE_N; i++) {
        ctx_t *n = T.n[i];
        int err = ctx_err(n), cause = ctx_cause(n);
        check_values(i);
        if (err != 0 && atomic_load(&T.seen[i]) != 0 &&
            atomic_load(&T.seen[i]) != pack(err, cause))
            fail_msg("node %d: err/cause changed after done", i);
        if (T.src[i] < 0) {
            /* Never done. */
            assert_false(ctx_is_done(n));
            assert_int_equal(err, 0);
            assert_int_equal(cause, 0);
            assert_int_equal(atomic_load(&T.calls[i]), 0);
            continue;
        }
        if (!is_cancellable(T.kind[i])) {
            /* Reports its cancellable ancestor's state; its after-func ran
             * exactly once iff that is done. */
            ctx_t *s = T.n[T.src[i]];
            assert_int_equal(err, ctx_err(s));
            assert_int_equal(cause, ctx_cause(s));
            assert_int_equal(atomic_load(&T.calls[i]), err != 0 ? 1 : 0);
            continue;
        }
        /* After-funcs ran exactly once iff done. */
        assert_int_equal(atomic_load(&T.calls[i]), err != 0 ? 1 : 0);
        int ps = T.psrc[i];
        if (ps >= 0 && ctx_is_done(T.n[ps]) && !ctx_is_done(n))
            fail_msg("node %d live under done node %d", i, ps);
        if (err == 0) {
            assert_int_equal(cause, 0);
            continue;
        }
        /* Done: either through its parent, with the parent's err and
         * cause, or by its own cancellation, whose cause names it. */
        bool via_parent = ps >= 0 && ctx_err(T.n[ps]) == err &&
                          ctx_cause(T.n[ps]) == cause;
        bool own_cancel = err == CTX_CANCELED && cause >= CBASE &&
                          (cause - CBASE) % 128 == i;
        bool own_deadline = err == CTX_DEADLINE_EXCEEDED &&
                            cause == DBASE + i &&
                            T.kind[i] == K_TIMEOUT_SHORT;
        if (!via_parent && !own_cancel && !own_deadline)
            fail_msg("node %d (kind %d, parent src %d): err %d cause %d "
                     "(parent err %d cause %d)",
                     i, T.kind[i], ps, err, cause,
                     ps >= 0 ? ctx_err(T.n[ps]) : -1,
                     ps >= 0 ? ctx_cause(T.n[ps]) : -1);
    }
}

static void test_random_tree_concurrent_cancels(void **state)
{
    (void)state;
    const int rounds = 80 / TU_SLOW;
    tu_event_init(&T.fired);
    for (int round = 0; round < rounds; round++) {
        unsigned seed = 0xc0ffee + (unsigned)round;
        build_tree(seed);
        for (int t = 0; t < TREE_THREADS; t++)
            T.seeds[t] = seed * 31 + (unsigned)t;
        struct crew crew;
        crew_start(&crew, TREE_THREADS, 1, tree_role, NULL);
        pthread_barrier_wait(&crew.start);
        pthread_barrier_wait(&crew.end);
        crew_finish(&crew);
        assert_no_failures();
        /* The short deadlines all pass; once each such node's after-func
         * has run, the cancel that marked it has finished its subtree, and
         * nothing else is in flight. */
        for (int i = 0; i < TREE_N; i++) {
            if (T.kind[i] != K_TIMEOUT_SHORT)
                continue;
            ctx_time_t until = ctx_now() + 10 * CTX_SECOND;
            while (atomic_load(&T.calls[i]) == 0 && ctx_now() < until) {
                long seen = tu_event_get(&T.fired);
                if (atomic_load(&T.calls[i]) == 0)
                    tu_event_wait_n(&T.fired, seen + 1, 100 * CTX_MILLISECOND);
            }
            if (atomic_load(&T.calls[i]) != 1)
                fail_msg("round %d: short timeout node %d never fired", round,
                         i);
        }
        /* The cancel that marked a short node may still be running the
         * rest of its after-funcs (phase 2) in the timer thread: wait until
         * every registration on a done node has run. Nothing can become
         * done any more, so the set is fixed. */
        int expected = 0;
        for (int i = 0; i < TREE_N; i++)
            if (T.src[i] >= 0 && ctx_is_done(T.n[i]))
                expected++;
        ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
        for (;;) {
            long seen = tu_event_get(&T.fired);
            int total = 0;
            for (int i = 0; i < TREE_N; i++)
                total += atomic_load(&T.calls[i]);
            if (total >= expected || ctx_now() > end)
                break;
            tu_event_wait_n(&T.fired, seen + 1, 100 * CTX_MILLISECOND);
        }
        check_tree();
        /* End every registration: true iff its node never became done. */
        for (int i = 0; i < TREE_N; i++) {
            bool done = ctx_is_done(T.n[i]);
            bool never = T.src[i] < 0;
            bool r = ctx_after_stop(T.regs[i]);
            if (never)
                assert_true(r);
            else
                assert_int_equal(r, !done);
        }
        /* Release in a random order: a child holds its parent. */
        int order[TREE_N];
        for (int i = 0; i < TREE_N; i++)
            order[i] = i;
        for (int i = TREE_N - 1; i > 0; i--) {
            int j = (int)(rand_r(&seed) % (unsigned)(i + 1));
            int tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (int i = 0; i < TREE_N; i++)
            ctx_release(T.n[order[i]]);
        tu_settle();
        tu_assert_no_live();
    }
    tu_event_destroy(&T.fired);
}

/* ==== 3. Releasing the last references of children while the parent is
 * being cancelled. ==== */

#define REL_N 8

struct release_race {
    ctx_t *parent;
    ctx_t *kids[REL_N];
    ctx_after_t *regs[REL_N];
    _Atomic int calls[REL_N];
    bool stopped[REL_N];
    unsigned seed;
};

static void release_role(int who, int iter, void *arg)
{
    (void)who;
    (void)iter;
    struct release_race *r = arg;
    jitter(&r->seed);
    for (int i = 0; i < REL_N; i++) {
        if (r->regs[i] != NULL) {
            r->stopped[i] = ctx_after_stop(r->regs[i]);
            /* Not prevented: it ran, completely, before stop returned. */
            CHECK_EQ(atomic_load(&r->calls[i]), r->stopped[i] ? 0 : 1);
        }
        ctx_release(r->kids[i]);
    }
}

static void test_release_vs_cancel(void **state)
{
    (void)state;
    static struct release_race r;
    struct crew crew;
    const int iters = 1000;
    r.seed = 99;
    crew_start(&crew, 1, iters, release_role, &r);
    unsigned seed = 4242;
    for (int it = 0; it < iters; it++) {
        ctx_t *p = ctx_with_cancel(ctx_background());
        r.parent = p;
        ctx_t **k = r.kids;
        k[0] = ctx_with_cancel(p);
        k[1] = ctx_with_timeout(p, CTX_HOUR);
        k[2] = ctx_with_value(p, &key, NULL, NULL);
        k[3] = ctx_with_cancel(k[2]);
        k[4] = ctx_with_cancel(k[0]);
        k[5] = ctx_with_timeout(k[3], CTX_HOUR);
        k[6] = ctx_without_cancel(p);
        k[7] = ctx_with_cancel(k[6]);
        /* Each holds its parent: hand the references over, keeping one
         * per child (the one the other thread drops). */
        for (int i = 0; i < REL_N; i++) {
            atomic_store(&r.calls[i], 0);
            r.stopped[i] = false;
            r.regs[i] = i % 2 ? ctx_after_func(k[i], count_fn,
                                               (void *)&r.calls[i])
                              : NULL;
        }
        pthread_barrier_wait(&crew.start);
        jitter(&seed);
        assert_int_equal(ctx_cancel(p), 0);
        pthread_barrier_wait(&crew.end);
        assert_no_failures();
        assert_true(ctx_is_done(p));
        /* Registrations on contexts reached by the cancel: ran iff not
         * prevented. k[7] is under without_cancel: never. */
        for (int i = 1; i < REL_N; i += 2) {
            assert_int_equal(atomic_load(&r.calls[i]), r.stopped[i] ? 0 : 1);
            if (i == 7)
                assert_true(r.stopped[i]);
        }
        assert_live(1);
        ctx_release(p);
        assert_live(0);
    }
    crew_finish(&crew);
    tu_assert_no_live();
}

/* ==== 4. 20 000 children released without cancel, then the parent is
 * cancelled: they have all left its list (and the timer heap). ==== */

static void test_release_many_then_cancel(void **state)
{
    (void)state;
    const int n = 20000;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(p, &key, NULL, NULL);
    ctx_t **kids = malloc(sizeof *kids * (size_t)n);
    assert_non_null(kids);
    for (int i = 0; i < n; i++) {
        switch (i % 4) {
        case 0:
            kids[i] = ctx_with_cancel(p);
            break;
        case 1:
            kids[i] = ctx_with_timeout(p, CTX_HOUR + i);
            break;
        case 2:
            kids[i] = ctx_with_cancel(v);
            break;
        default:
            kids[i] = ctx_with_deadline(v, ctx_now() + CTX_MINUTE);
            break;
        }
        assert_non_null(kids[i]);
    }
    assert_live(2 + n);
    /* Out of order, from both ends. */
    for (int i = 0; i < n / 2; i++) {
        ctx_release(kids[i * 2]);
        ctx_release(kids[n - 1 - i * 2]);
    }
    assert_live(2);
    struct rec_after {
        _Atomic int calls;
    } ra = {0};
    ctx_after_t *a = ctx_after_func(v, count_fn, (void *)&ra.calls);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_cancel(p), 0);
    /* Nothing left to walk: the cancel is quick. */
    tu_assert_between(ctx_now() - t0, 0, TU_PROMPT);
    assert_int_equal(atomic_load(&ra.calls), 1);
    assert_false(ctx_after_stop(a));
    ctx_release(v);
    ctx_release(p);
    free(kids);
    tu_assert_no_live();

    /* The heap holds no freed node: a new short timer fires normally. */
    ctx_t *t = ctx_with_timeout(ctx_background(), 5 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    ctx_release(t);
    tu_settle();
    tu_assert_no_live();
}

/* ==== 5. Waiters, cancellers and after-func registrations/stops. ==== */

#define MAX_REGS 48

struct mixed_race {
    ctx_t *c, *v;
    int causes[2];
    int wait_result[2];
    int cancel_seen_err[2], cancel_seen_cause[2];
    ctx_after_t *regs[MAX_REGS];
    _Atomic int calls[MAX_REGS];
    int stopped[MAX_REGS]; /* -1: still registered */
    int nregs;
    unsigned seeds[5];
};

static void mixed_role(int who, int iter, void *arg)
{
    (void)iter;
    struct mixed_race *m = arg;
    unsigned *seed = &m->seeds[who];
    switch (who) {
    case 0: /* waiter on the context */
        m->wait_result[0] = ctx_wait(m->c);
        break;
    case 1: /* waiter on the value child, by fd or by wait */
        if (rand_r(seed) % 2) {
            struct pollfd p = {ctx_done_fd(m->v), POLLIN, 0};
            int r = poll(&p, 1, 30000);
            CHECK_EQ(r, 1);
            m->wait_result[1] = ctx_err(m->v);
        } else {
            m->wait_result[1] = ctx_wait_until(m->v, CTX_TIME_MAX);
        }
        break;
    case 2:
    case 3: /* cancellers */
        jitter(seed);
        CHECK_EQ(ctx_cancel_cause(m->c, m->causes[who - 2]), 0);
        m->cancel_seen_err[who - 2] = ctx_err(m->v);
        m->cancel_seen_cause[who - 2] = ctx_cause(m->v);
        break;
    case 4: { /* registrar */
        int n = 0;
        bool saw_done = false;
        while (n < MAX_REGS) {
            ctx_t *on = rand_r(seed) % 2 ? m->c : m->v;
            bool done_before = ctx_is_done(on);
            m->regs[n] = ctx_after_func(on, count_fn, (void *)&m->calls[n]);
            CHECK(m->regs[n] != NULL);
            if (done_before) /* done: ran inline */
                CHECK_EQ(atomic_load(&m->calls[n]), 1);
            if (rand_r(seed) % 2) {
                bool s = ctx_after_stop(m->regs[n]);
                m->stopped[n] = s;
                CHECK_EQ(atomic_load(&m->calls[n]), s ? 0 : 1);
            }
            n++;
            if (saw_done && n % 4 == 0)
                break;
            saw_done = saw_done || ctx_is_done(m->c);
        }
        m->nregs = n;
        break;
    }
    }
}

static void test_waiters_cancellers_afters(void **state)
{
    (void)state;
    static struct mixed_race m;
    struct crew crew;
    const int iters = 2000 / TU_SLOW;
    for (int i = 0; i < 5; i++)
        m.seeds[i] = 1000u + (unsigned)i;
    crew_start(&crew, 5, iters, mixed_role, &m);
    for (int it = 0; it < iters; it++) {
        m.c = ctx_with_cancel(ctx_background());
        m.v = ctx_with_value(m.c, &key, NULL, NULL);
        m.causes[0] = 2000 + it * 2;
        m.causes[1] = 2001 + it * 2;
        for (int i = 0; i < MAX_REGS; i++) {
            atomic_store(&m.calls[i], 0);
            m.stopped[i] = -1;
            m.regs[i] = NULL;
        }
        m.nregs = 0;
        pthread_barrier_wait(&crew.start);
        pthread_barrier_wait(&crew.end);
        assert_no_failures();
        int cause = ctx_cause(m.c);
        assert_true(cause == m.causes[0] || cause == m.causes[1]);
        assert_int_equal(m.wait_result[0], CTX_CANCELED);
        assert_int_equal(m.wait_result[1], CTX_CANCELED);
        for (int k = 0; k < 2; k++) {
            /* Whichever cancel won, both saw the winner's cause. */
            assert_int_equal(m.cancel_seen_err[k], CTX_CANCELED);
            assert_int_equal(m.cancel_seen_cause[k], cause);
        }
        for (int i = 0; i < m.nregs; i++) {
            if (m.stopped[i] < 0) {
                /* Still registered: the cancel ran it. */
                assert_int_equal(atomic_load(&m.calls[i]), 1);
                assert_false(ctx_after_stop(m.regs[i]));
            } else {
                assert_int_equal(atomic_load(&m.calls[i]),
                                 m.stopped[i] ? 0 : 1);
            }
        }
        ctx_release(m.v);
        ctx_release(m.c);
        assert_live(0);
    }
    crew_finish(&crew);
    tu_assert_no_live();
}

/* ==== 6. Threads creating and cancelling short timeouts while the timer
 * thread fires them. ==== */

#define STORM_THREADS 4

struct storm {
    _Atomic int calls[STORM_THREADS];
    unsigned seeds[STORM_THREADS];
    int ops;
};

static void storm_role(int who, int iter, void *arg)
{
    (void)iter;
    struct storm *s = arg;
    unsigned *seed = &s->seeds[who];
    for (int k = 0; k < s->ops; k++) {
        ctx_duration_t d =
            (ctx_duration_t)(rand_r(seed) % 2500) * CTX_MICROSECOND -
            100 * CTX_MICROSECOND;
        int cause = 3000 + who * 100000 + k;
        ctx_time_t before = ctx_now();
        ctx_t *c = ctx_with_timeout_cause(ctx_background(), d, cause);
        CHECK(c != NULL);
        ctx_time_t dl;
        CHECK(ctx_deadline(c, &dl));
        CHECK(dl >= before + d);
        switch (rand_r(seed) % 5) {
        case 0: /* wait for it */
            CHECK_EQ(ctx_wait(c), CTX_DEADLINE_EXCEEDED);
            CHECK(ctx_now() >= dl);
            CHECK_EQ(ctx_cause(c), cause);
            break;
        case 1: { /* cancel it, maybe after the timer fired */
            jitter(seed);
            CHECK_EQ(ctx_cancel(c), 0);
            int err = ctx_err(c);
            CHECK(err == CTX_CANCELED || err == CTX_DEADLINE_EXCEEDED);
            CHECK_EQ(ctx_cause(c), err == CTX_CANCELED ? CTX_CANCELED : cause);
            if (err == CTX_DEADLINE_EXCEEDED)
                CHECK(ctx_now() >= dl);
            break;
        }
        case 2: /* drop it uncancelled, timer pending or firing */
            jitter(seed);
            break;
        case 3: { /* an after-func, maybe stopped while the timer fires */
            _Atomic int n = 0;
            ctx_t *ch = ctx_with_cancel(c);
            ctx_after_t *a = ctx_after_func(ch, count_fn, (void *)&n);
            CHECK(a != NULL);
            jitter(seed);
            bool stopped = ctx_after_stop(a);
            CHECK_EQ(atomic_load(&n), stopped ? 0 : 1);
            if (!stopped)
                CHECK(ctx_is_done(ch));
            ctx_cancel(ch);
            CHECK_EQ(atomic_load(&n), stopped ? 0 : 1);
            atomic_fetch_add(&s->calls[who], atomic_load(&n));
            ctx_release(ch);
            break;
        }
        default: { /* a child with its own deadline, earlier or later */
            ctx_duration_t d2 =
                (ctx_duration_t)(rand_r(seed) % 2500) * CTX_MICROSECOND;
            ctx_t *ch = ctx_with_timeout_cause(c, d2, cause + 50000);
            ctx_time_t cdl;
            CHECK(ctx_deadline(ch, &cdl));
            CHECK(cdl <= dl);
            CHECK_EQ(ctx_wait(ch), CTX_DEADLINE_EXCEEDED);
            CHECK(ctx_now() >= cdl);
            int cc = ctx_cause(ch);
            /* An earlier own deadline usually wins, but when the parent's
             * deadline passes while ch is being created (between linking
             * it and arming its timer, as in Go between propagateCancel and
             * the timer), the parent's cancellation reaches it first. */
            if (cdl <= dl && cc != cause)
                CHECK_EQ(cc, cause + 50000);
            else if (cc == cause)
                CHECK_EQ(ctx_err(c), CTX_DEADLINE_EXCEEDED);
            else
                CHECK_EQ(cc, cause);
            ctx_release(ch);
            break;
        }
        }
        ctx_release(c);
    }
}

static void test_timeout_storm(void **state)
{
    (void)state;
    static struct storm s;
    s.ops = 3000 / TU_SLOW;
    for (int i = 0; i < STORM_THREADS; i++) {
        s.seeds[i] = 55u + (unsigned)i;
        atomic_store(&s.calls[i], 0);
    }
    struct crew crew;
    crew_start(&crew, STORM_THREADS, 1, storm_role, &s);
    pthread_barrier_wait(&crew.start);
    pthread_barrier_wait(&crew.end);
    crew_finish(&crew);
    assert_no_failures();
    tu_settle();
    tu_assert_no_live();
    /* The timer thread is still healthy. */
    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout(ctx_background(), 10 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    tu_assert_between(ctx_now() - t0, 10 * CTX_MILLISECOND,
                      10 * CTX_MILLISECOND + 5 * TU_PROMPT);
    ctx_release(t);
    tu_settle();
    tu_assert_no_live();
}

/* ==== 7. Go: TestInterlockedCancels and TestSimultaneousCancels. ==== */

static void *wait_then_cancel(void *arg)
{
    ctx_t **pc = arg;
    ctx_wait(pc[0]);
    ctx_cancel(pc[1]);
    return NULL;
}

static void test_interlocked_and_simultaneous(void **state)
{
    (void)state;
    /* A thread cancels the child as soon as the parent is done. */
    for (int it = 0; it < 500 / TU_SLOW; it++) {
        ctx_t *p = ctx_with_cancel(ctx_background());
        ctx_t *c = ctx_with_cancel(p);
        ctx_t *pc[2] = {p, c};
        pthread_t t = tu_spawn(wait_then_cancel, pc);
        ctx_cancel(p);
        assert_int_equal(ctx_wait_until(c, ctx_now() + 10 * CTX_SECOND),
                         CTX_CANCELED);
        tu_join_within(t, 10 * CTX_SECOND);
        ctx_release(c);
        ctx_release(p);
    }
    tu_assert_no_live();
}

/* ==== 8. A cancel that loses the race still returns only once the whole
 * subtree is done (Go: the loser blocks on the parent's mutex, which the
 * winner holds while it cancels the children). ==== */

#define CHAIN 20000

static ctx_t *chain[CHAIN];

static void *cancel_root_thread(void *arg)
{
    ctx_cancel_cause((ctx_t *)arg, EOWNERDEAD);
    return NULL;
}

static void test_losing_cancel_waits_for_propagation(void **state)
{
    (void)state;
    /* Regression test: before 15674ff, ctx_cancel_cause() returned at once
     * when it found err already set, while the winner was still walking;
     * this failed in most runs. */
    const int depth = CHAIN / TU_SLOW;
    int bad = 0;
    for (int round = 0; round < 12; round++) {
        /* A deep chain: the winner's walk takes a while. The winner is
         * another thread, or (odd rounds) the timer thread. */
        bool timer = round % 2;
        chain[0] = timer ? ctx_with_timeout(ctx_background(),
                                            100 * CTX_MILLISECOND * TU_SLOW)
                         : ctx_with_cancel(ctx_background());
        for (int i = 1; i < depth; i++)
            chain[i] = ctx_with_cancel(chain[i - 1]);
        ctx_t *root = chain[0], *leaf = chain[depth - 1];
        pthread_t t;
        if (!timer)
            t = tu_spawn(cancel_root_thread, root);
        while (!ctx_is_done(root))
            ;
        assert_int_equal(ctx_cancel(root), 0); /* loses */
        if (!ctx_is_done(leaf))
            bad++;
        if (!timer)
            assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(ctx_wait_until(leaf, ctx_now() + 10 * CTX_SECOND),
                         timer ? CTX_DEADLINE_EXCEEDED : CTX_CANCELED);
        for (int i = depth - 1; i >= 0; i--)
            ctx_release(chain[i]);
    }
    tu_settle();
    tu_assert_no_live();
    if (bad != 0)
        fail_msg("in %d of 12 rounds ctx_cancel() returned while the leaf was "
                 "live",
                 bad);
}

/* ---- errno survives the library's lock waits (issue 9, defect 7). ----
 * A failed call sets errno; leaving a CTX_DEFER_CANCEL scope right after
 * must not change it. Under contention the 4-byte lock sleeps on a futex,
 * whose EAGAIN (the word changed before the sleep) used to leak into errno
 * (2 in a million scopes). Three threads share one parent and one lock; each
 * checks errno after every scope and every lock, for about a second. */

struct errno_arg {
    ctx_t *parent;
    ctx__lock_t *lock;
    int sentinel;
    _Atomic bool *stop;
    long scopes, locks, bad;
};

static void *errno_main(void *p)
{
    struct errno_arg *a = p;
    while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
        for (int i = 0; i < 64; i++) {
            {
                ctx_t *c CTX_DEFER_CANCEL = ctx_with_cancel(a->parent);
                ctx_t *t CTX_DEFER_CANCEL = ctx_with_timeout(c, CTX_HOUR);
                errno = a->sentinel; /* as a failed call would */
            }
            a->scopes++;
            if (errno != a->sentinel)
                a->bad++;
            errno = a->sentinel;
            ctx__lock(a->lock);
            /* Hold it a little: waiters then reach the futex sleep. */
            for (volatile int k = 0; k < 200; k++)
                ;
            ctx__unlock(a->lock);
            a->locks++;
            if (errno != a->sentinel)
                a->bad++;
        }
    }
    return NULL;
}

static void test_errno_kept_under_contention(void **state)
{
    (void)state;
    enum { N = 3 };
    ctx_t *parent = ctx_with_cancel(ctx_background());
    static ctx__lock_t lock;
    _Atomic bool stop = false;
    struct errno_arg args[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct errno_arg){parent, &lock, 10000 + i, &stop, 0, 0, 0};
        th[i] = tu_spawn(errno_main, &args[i]);
    }
    tu_sleep(CTX_SECOND); /* the length of the run, not synchronisation */
    atomic_store(&stop, true);
    long scopes = 0, locks = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        tu_join_within(th[i], 30 * CTX_SECOND);
        scopes += args[i].scopes;
        locks += args[i].locks;
        bad += args[i].bad;
    }
    print_message("errno: %ld scopes, %ld locks, %ld changed errno\n", scopes,
                  locks, bad);
    assert_int_equal(bad, 0);
    assert_true(scopes > 0);
    ctx_cancel(parent);
    ctx_release(parent);
    tu_settle();
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_parent_cancel_vs_child_creation, reset),
        cmocka_unit_test_setup(test_random_tree_concurrent_cancels, reset),
        cmocka_unit_test_setup(test_release_vs_cancel, reset),
        cmocka_unit_test_setup(test_release_many_then_cancel, reset),
        cmocka_unit_test_setup(test_waiters_cancellers_afters, reset),
        cmocka_unit_test_setup(test_timeout_storm, reset),
        cmocka_unit_test_setup(test_interlocked_and_simultaneous, reset),
        cmocka_unit_test_setup(test_losing_cancel_waits_for_propagation,
                               reset),
        cmocka_unit_test_setup(test_errno_kept_under_contention, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
