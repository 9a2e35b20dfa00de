/* Model-based fuzz harness (libFuzzer entry point; tests/fuzz/fuzz_replay.c
 * gives it a plain main()).
 *
 * The input is read as a sequence of operations on a small tree: derive each
 * kind (cancel, deadline far or past, short real timeouts, huge timeouts,
 * value, without_cancel), cancel with and without a cause, retain, release,
 * register and stop after-funcs, done fds, value and deadline lookups,
 * format, waits, "advance past the deadlines", a wait woken by a cancel
 * from another thread, races of done_fd / after_func / derivations with a
 * cancel from another thread and, in fault-injection builds, failing the
 * Nth allocation of the next operation (other builds parse that prefix the
 * same way and run the operation without it, so an input means the same in
 * every build). After every operation each observable result of every
 * context the harness holds is checked against a reference model kept here:
 * err, cause, is_done, deadline, values, after-func runs, format's shape,
 * and the readiness of every done fd obtained so far (readable iff done,
 * so a cancel that reaches a descendant without signalling its fd shows). At
 * the end of each input everything is released and the library's live
 * counters (CTX_DEBUG) must be back to zero, every value destroyed once.
 *
 * Determinism: short real deadlines race with nothing the model decides.
 * A context with a pending short deadline is "settled" (waited for, then
 * marked expired in the model) before any operation that could observe it
 * or race with it: an operation on it or a descendant settles its
 * ancestors, a cancel settles the pending contexts of its subtree, and the
 * per-operation check skips contexts below a pending one. New short
 * deadlines are only made under settled ancestors, so pending contexts never
 * nest. After-funcs run by the timer thread are "maybe ran" until stopped,
 * when ctx_after_stop()'s answer must agree with the run count. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXNODES 40
#define MAXREGS 24
#define MAXOPS 200
#define NKEYS 3

#define ROOT_BG (-1)
#define ROOT_TODO (-2)

enum mkind { M_CANCEL, M_VALUE, M_WITHOUT };

struct mnode {
    ctx_t *c;
    int parent; /* index, or ROOT_BG / ROOT_TODO */
    enum mkind kind;
    int handles;  /* references the harness holds for the user */
    bool pending; /* a short real deadline not settled yet (hidden ref) */
    int err, cause;
    int own_cause; /* the cause its own deadline gives */
    bool own_dl;   /* made by a deadline derivation that kept its deadline */
    bool fmt_ambiguous; /* own_dl could not be decided (timeout vs timeout) */
    bool has_dl;
    ctx_time_t dl_lo, dl_hi;
    const ctx_key_t *key;
    void *value;
    bool destroy;
    int fd; /* its done fd once obtained (kept for every check), else -1 */
};

enum rstate { R_NEVER, R_LIVE, R_RAN, R_MAYBE };

struct after_arg {
    atomic_int runs;
    ctx_t *ctx;
};

struct mreg {
    ctx_after_t *h;
    struct after_arg *arg;
    int src; /* model node whose cancel state it follows, -1: never done */
    enum rstate st;
};

static struct mnode nodes[MAXNODES];
static int nnodes;
static struct mreg regs[MAXREGS];
static int nregs;
static int vals[MAXNODES];
static atomic_int destroyed[MAXNODES];
static const ctx_key_t keys[NKEYS] = {CTX_KEY("k0"), CTX_KEY("k1"),
                                      CTX_KEY("k2")};
static int never_fd = -1;
static ctx_time_t base;

struct input {
    const uint8_t *p;
    size_t n;
};

static unsigned next(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static void destroy_value(void *v)
{
    int i = (int)((int *)v - vals);
    REL_CHECK(i >= 0 && i < MAXNODES, "destroy got a foreign value");
    int n = atomic_fetch_add(&destroyed[i], 1);
    REL_CHECK(n == 0, "destroy of node %d ran twice", i);
}

static void after_fn(void *p)
{
    struct after_arg *a = p;
    REL_CHECK(ctx_is_done(a->ctx), "after-func ran on a live context");
    int n = atomic_fetch_add(&a->runs, 1);
    REL_CHECK(n == 0, "after-func ran twice");
}

/* ---- the model ------------------------------------------------------- */

static ctx_t *handle(int i)
{
    return i == ROOT_BG ? ctx_background()
                        : i == ROOT_TODO ? ctx_todo() : nodes[i].c;
}

/* The node whose cancel state i reports, or -1 (never done). */
static int msrc(int i)
{
    while (i >= 0 && nodes[i].kind == M_VALUE)
        i = nodes[i].parent;
    if (i < 0 || nodes[i].kind == M_WITHOUT)
        return -1;
    return i;
}

static int merr(int i)
{
    int s = msrc(i);
    return s < 0 ? 0 : nodes[s].err;
}

static int mcause(int i)
{
    int s = msrc(i);
    return s < 0 ? 0 : nodes[s].cause;
}

/* Whether anc is i or an ancestor of i. */
static bool is_ancestor(int anc, int i)
{
    for (; i >= 0; i = nodes[i].parent)
        if (i == anc)
            return true;
    return false;
}

/* Whether node i (cancellable) follows cancellations of anc: anc is an
 * ancestor with no without_cancel between them. */
static bool follows(int i, int anc)
{
    for (int j = i; j >= 0; j = nodes[j].parent) {
        if (j == anc)
            return true;
        if (nodes[j].kind == M_WITHOUT)
            return false;
    }
    return false;
}

/* Marks x and the live cancellable nodes that follow it done; after-funcs
 * on them become `st` (R_RAN: our cancel ran them; R_MAYBE: the timer). */
static void mcancel(int x, int err, int cause, enum rstate st)
{
    for (int i = 0; i < nnodes; i++) {
        struct mnode *n = &nodes[i];
        if (n->kind != M_CANCEL || n->err != 0 || !follows(i, x))
            continue;
        n->err = err;
        n->cause = cause;
        for (int r = 0; r < nregs; r++)
            if (regs[r].src == i && regs[r].st == R_LIVE)
                regs[r].st = st;
    }
}

/* Waits for a pending short deadline and applies it to the model. */
static void settle_one(int i)
{
    struct mnode *n = &nodes[i];
    if (!n->pending)
        return;
    int e = ctx_wait(n->c);
    REL_EQ(e, CTX_DEADLINE_EXCEEDED);
    REL_EQ(ctx_cause(n->c), n->own_cause);
    REL_EQ(n->err, 0); /* nothing cancelled it first: cancels settle */
    n->pending = false;
    mcancel(i, CTX_DEADLINE_EXCEEDED, n->own_cause, R_MAYBE);
    ctx_release(n->c); /* the hidden reference */
}

static void settle_ancestors(int i)
{
    for (; i >= 0; i = nodes[i].parent)
        settle_one(i);
}

static void settle_subtree(int x)
{
    for (int i = 0; i < nnodes; i++)
        if (nodes[i].pending && is_ancestor(x, i))
            settle_one(i);
}

static void settle_all(void)
{
    for (int i = 0; i < nnodes; i++)
        settle_one(i);
}

static bool under_pending(int i)
{
    for (; i >= 0; i = nodes[i].parent)
        if (nodes[i].pending)
            return true;
    return false;
}

/* The model's value of key k seen from i. */
static void *mvalue(int i, const ctx_key_t *k)
{
    for (; i >= 0; i = nodes[i].parent)
        if (nodes[i].kind == M_VALUE && nodes[i].key == k)
            return nodes[i].value;
    return NULL;
}

/* '*' matches any run of characters other than ')'. */
static bool glob(const char *pat, const char *s)
{
    if (*pat == '\0')
        return *s == '\0';
    if (*pat == '*') {
        for (const char *t = s;; t++) {
            if (glob(pat + 1, t))
                return true;
            if (*t == '\0' || *t == ')')
                return false;
        }
    }
    return *pat == *s && glob(pat + 1, s + 1);
}

static bool fmt_ambiguous(int i)
{
    for (; i >= 0; i = nodes[i].parent)
        if (nodes[i].fmt_ambiguous)
            return true;
    return false;
}

static bool any_own_dl(int i)
{
    for (; i >= 0; i = nodes[i].parent)
        if (nodes[i].own_dl || nodes[i].fmt_ambiguous)
            return true;
    return false;
}

static void mformat(int i, char *out, size_t size)
{
    int chain[MAXNODES], n = 0;
    int j = i;
    for (; j >= 0; j = nodes[j].parent)
        chain[n++] = j;
    size_t len = (size_t)snprintf(out, size, "%s",
                                  j == ROOT_TODO ? "context.TODO"
                                                 : "context.Background");
    while (n-- > 0 && len < size) {
        struct mnode *m = &nodes[chain[n]];
        const char *seg = m->kind == M_VALUE     ? ".WithValue(%s, ...)"
                          : m->kind == M_WITHOUT ? ".WithoutCancel"
                          : m->own_dl            ? ".WithDeadline(*)"
                                                 : ".WithCancel";
        len += (size_t)snprintf(out + len, size - len, seg,
                                m->kind == M_VALUE ? m->key->name : "");
    }
}

static bool fd_readable(int fd, bool wait)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    /* The fd is signalled just after err is stored: a done context gets a
     * moment; a live one must not be readable now. libFuzzer's SIGALRM
     * (its -timeout watchdog, every second) interrupts poll, even one with
     * a zero timeout on an fd that is not ready: EINTR, wait again. */
    ctx_time_t end = ctx_now() + (wait ? 5 * CTX_SECOND : 0);
    int r;
    for (;;) {
        ctx_time_t left = end - ctx_now();
        r = poll(&p, 1, left > 0 ? (int)(left / CTX_MILLISECOND) : 0);
        if (r >= 0 || errno != EINTR)
            break;
    }
    REL_CHECK(r >= 0, "poll on done fd %d: %s", fd, strerror(errno));
    REL_CHECK(!(p.revents & POLLNVAL), "done fd %d is not open", fd);
    return r == 1;
}

/* Checks every observable of node i (not below a pending deadline). */
static void check_node(int i)
{
    ctx_t *c = handle(i);
    REL_EQ(ctx_is_done(c), merr(i) != 0);
    REL_EQ(ctx_err(c), merr(i));
    REL_EQ(ctx_cause(c), mcause(i));
    struct mnode *n = &nodes[i];
    ctx_time_t dl = 0;
    bool has = ctx_deadline(c, &dl);
    REL_EQ(has, n->has_dl);
    if (has)
        REL_CHECK(dl >= n->dl_lo && dl <= n->dl_hi,
                  "deadline %lld outside [%lld, %lld]", (long long)dl,
                  (long long)n->dl_lo, (long long)n->dl_hi);
    for (int k = 0; k < NKEYS; k++)
        REL_CHECK(ctx_value(c, &keys[k]) == mvalue(i, &keys[k]),
                  "value of %s", keys[k].name);
    REL_EQ(ctx_wait_until(c, 0), merr(i));
    if (n->fd >= 0) {
        /* The same fd every time, readable iff done (a done one gets the
         * moment fd_readable gives: a deadline's waiter may run before the
         * timer thread signals it). */
        REL_EQ(ctx_done_fd(c), n->fd);
        if (msrc(i) < 0) {
            REL_EQ(n->fd, never_fd);
            REL_CHECK(!fd_readable(n->fd, false), "never-ready fd is readable");
        } else {
            bool done = merr(i) != 0;
            REL_CHECK(fd_readable(n->fd, done) == done,
                      "done fd of node %d: readable %d, model err %d", i,
                      !done, merr(i));
        }
    }
    if (n->kind == M_VALUE && n->destroy)
        REL_EQ(atomic_load(&destroyed[i]), 0);
}

static void check_regs(void)
{
    for (int r = 0; r < nregs; r++) {
        struct mreg *g = &regs[r];
        int runs = atomic_load(&g->arg->runs);
        if (g->st == R_NEVER || g->st == R_LIVE)
            REL_CHECK(runs == 0, "after-func ran on a live context");
        else if (g->st == R_RAN)
            REL_CHECK(runs == 1, "after-func did not run when its context "
                                 "was cancelled");
        else
            REL_CHECK(runs <= 1, "after-func ran twice");
    }
}

static void check_all(void)
{
    for (int i = 0; i < nnodes; i++)
        if (nodes[i].handles > 0 && !under_pending(i))
            check_node(i);
    check_regs();
}

/* ---- operations ------------------------------------------------------ */

/* A usable node (handles > 0) or a root, chosen by b. */
static int pick(unsigned b)
{
    int usable[MAXNODES], n = 0;
    for (int i = 0; i < nnodes; i++)
        if (nodes[i].handles > 0)
            usable[n++] = i;
    unsigned k = b % (unsigned)(n + 2);
    if (k == (unsigned)n)
        return ROOT_BG;
    if (k == (unsigned)n + 1)
        return ROOT_TODO;
    return usable[k];
}

static void inherit_deadline(struct mnode *n, int parent)
{
    /* The nearest cancellable ancestor's effective deadline. */
    int s = msrc(parent);
    n->has_dl = s >= 0 && nodes[s].has_dl;
    if (n->has_dl) {
        n->dl_lo = nodes[s].dl_lo;
        n->dl_hi = nodes[s].dl_hi;
    }
}

/* Records a derivation. `dl_lo..dl_hi`: the deadline asked (own), if any. */
static int add_node(ctx_t *c, int parent, enum mkind kind, bool own,
                    ctx_time_t lo, ctx_time_t hi, int cause)
{
    int i = nnodes++;
    struct mnode *n = &nodes[i];
    memset(n, 0, sizeof *n);
    n->c = c;
    n->parent = parent;
    n->kind = kind;
    n->handles = 1;
    n->fd = -1;
    if (kind != M_WITHOUT)
        inherit_deadline(n, parent);
    if (kind == M_CANCEL && own) {
        n->own_cause = cause != 0 ? cause : CTX_DEADLINE_EXCEEDED;
        /* Kept when no earlier deadline is inherited (ties keep it). */
        if (!n->has_dl || hi <= n->dl_lo) {
            n->own_dl = true;
            n->has_dl = true;
            n->dl_lo = lo;
            n->dl_hi = hi;
        } else if (lo <= n->dl_hi) {
            /* Overlapping intervals: the effective deadline is the min. */
            n->fmt_ambiguous = true;
            n->own_dl = false;
            if (lo < n->dl_lo)
                n->dl_lo = lo;
            if (hi < n->dl_hi)
                n->dl_hi = hi;
        }
    }
    return i;
}

/* Checks the birth state of a new cancellable node: the parent's err if
 * the parent is done, else done iff its own deadline passed. */
static void birth(int i, bool past)
{
    struct mnode *n = &nodes[i];
    int p = n->parent;
    if (merr(p) != 0) {
        n->err = merr(p);
        n->cause = mcause(p);
    } else if (past && n->own_dl) {
        n->err = CTX_DEADLINE_EXCEEDED;
        n->cause = n->own_cause;
    }
    REL_EQ(ctx_err(n->c), n->err);
    REL_EQ(ctx_cause(n->c), n->cause);
}

static bool derive_failed(ctx_t *c)
{
    if (c != NULL)
        return false;
#ifdef CTX_FAULT_INJECTION
    REL_CHECK(ctx__fault_triggered() && (errno == ENOMEM || errno == EAGAIN),
              "derivation failed (errno %d) without an injected failure",
              errno);
    return true;
#else
    REL_CHECK(0, "derivation failed: %s", strerror(errno));
    return true;
#endif
}

static void op_derive(unsigned op, struct input *in)
{
    int p = pick(next(in));
    if (nnodes >= MAXNODES)
        return;
    settle_ancestors(p);
    ctx_t *pc = handle(p);
    unsigned a = next(in), b = next(in);
    int cause = (b & 1) ? 0 : (int)(b >> 1) + 1000;
    ctx_t *c;
    int i;
    switch (op) {
    case 0: /* with_cancel */
        c = ctx_with_cancel(pc);
        if (derive_failed(c))
            return;
        i = add_node(c, p, M_CANCEL, false, 0, 0, 0);
        birth(i, false);
        break;
    case 1: { /* far deadline, exact */
        ctx_time_t d = base + (ctx_time_t)a * CTX_SECOND;
        c = cause ? ctx_with_deadline_cause(pc, d, cause)
                  : ctx_with_deadline(pc, d);
        if (derive_failed(c))
            return;
        i = add_node(c, p, M_CANCEL, true, d, d, cause);
        birth(i, false);
        break;
    }
    case 2: { /* past deadline: done at birth */
        ctx_time_t d = ctx_now() - (ctx_time_t)a * CTX_MILLISECOND;
        c = ctx_with_deadline_cause(pc, d, cause);
        if (derive_failed(c))
            return;
        i = add_node(c, p, M_CANCEL, true, d, d, cause);
        birth(i, true);
        break;
    }
    case 3: { /* short real timeout: pending until settled */
        ctx_duration_t t = (ctx_duration_t)(a % 8 + 1) * 25 * CTX_MICROSECOND;
        ctx_time_t t0 = ctx_now();
        c = ctx_with_timeout_cause(pc, t, cause);
        ctx_time_t t1 = ctx_now();
        if (derive_failed(c))
            return;
        i = add_node(c, p, M_CANCEL, true, t0 + t, t1 + t, cause);
        if (merr(p) != 0 || !nodes[i].own_dl) {
            birth(i, false);
        } else {
            nodes[i].pending = true;
            ctx_retain(c); /* hidden: kept until settled */
        }
        break;
    }
    case 4: { /* zero, negative or huge timeouts */
        static const ctx_duration_t ts[] = {0, -1, INT64_MIN, INT64_MAX,
                                            INT64_MAX - 1};
        ctx_duration_t t = ts[a % 5];
        ctx_time_t t0 = ctx_now();
        c = ctx_with_timeout_cause(pc, t, cause);
        ctx_time_t t1 = ctx_now();
        if (derive_failed(c))
            return;
        bool huge = t > 0;
        i = add_node(c, p, M_CANCEL, true, huge ? CTX_TIME_MAX : t0,
                     huge ? CTX_TIME_MAX : t1, cause);
        birth(i, !huge);
        break;
    }
    case 5: { /* with_value */
        const ctx_key_t *k = &keys[a % NKEYS];
        bool null = (a / NKEYS) % 4 == 0;
        bool destroy = !null && (b & 2);
        int slot = nnodes;
        void *v = null ? NULL : &vals[slot];
        c = ctx_with_value(pc, k, v, destroy ? destroy_value : NULL);
        if (derive_failed(c)) {
            REL_EQ(atomic_load(&destroyed[slot]), 0);
            return;
        }
        i = add_node(c, p, M_VALUE, false, 0, 0, 0);
        nodes[i].key = k;
        nodes[i].value = v;
        nodes[i].destroy = destroy;
        break;
    }
    default: /* without_cancel */
        c = ctx_without_cancel(pc);
        if (derive_failed(c))
            return;
        i = add_node(c, p, M_WITHOUT, false, 0, 0, 0);
        break;
    }
}

/* Applies to the model a cancel of x that returned e. */
static void model_cancel(int x, int e, bool with_cause, int cause)
{
    if (x < 0 || nodes[x].kind != M_CANCEL) {
        REL_EQ(e, EINVAL);
        return;
    }
    REL_EQ(e, 0);
    int mc = with_cause && cause != 0 ? cause : CTX_CANCELED;
    if (nodes[x].err == 0)
        mcancel(x, CTX_CANCELED, mc, R_RAN);
    /* Propagation is synchronous: checked by check_all() next. */
}

static void op_cancel(struct input *in, bool with_cause)
{
    int x = pick(next(in));
    unsigned b = next(in);
    int cause = with_cause ? (int)b : 0;
    if (x >= 0)
        settle_subtree(x);
    ctx_t *c = handle(x);
    int e = with_cause ? ctx_cancel_cause(c, cause) : ctx_cancel(c);
    model_cancel(x, e, with_cause, cause);
}

static void op_release(struct input *in)
{
    int x = pick(next(in));
    if (x < 0) {
        ctx_release(handle(x)); /* a no-op on the roots */
        return;
    }
    struct mnode *n = &nodes[x];
    /* (n->c stays: it is alive while a descendant or the hidden reference
     * of a pending deadline holds it, and is used only then) */
    ctx_release(n->c);
    n->handles--;
}

static void op_retain(struct input *in)
{
    int x = pick(next(in));
    REL_CHECK(ctx_retain(handle(x)) == handle(x), "retain");
    if (x >= 0)
        nodes[x].handles++;
}

static void op_after(struct input *in)
{
    int x = pick(next(in));
    if (nregs >= MAXREGS)
        return;
    if (x >= 0)
        settle_ancestors(x);
    struct after_arg *a = calloc(1, sizeof *a);
    REL_CHECK(a != NULL, "harness out of memory");
    a->ctx = handle(x);
    ctx_after_t *h = ctx_after_func(a->ctx, after_fn, a);
    if (h == NULL) {
#ifdef CTX_FAULT_INJECTION
        REL_CHECK(ctx__fault_triggered() && errno == ENOMEM, "after_func");
#else
        REL_CHECK(0, "after_func: %s", strerror(errno));
#endif
        REL_EQ(atomic_load(&a->runs), 0);
        free(a);
        return;
    }
    struct mreg *g = &regs[nregs++];
    g->h = h;
    g->arg = a;
    g->src = x >= 0 ? msrc(x) : -1;
    if (g->src < 0)
        g->st = R_NEVER;
    else if (nodes[g->src].err != 0)
        g->st = R_RAN; /* ran before ctx_after_func returned */
    else
        g->st = R_LIVE;
    REL_EQ(atomic_load(&a->runs), g->st == R_RAN ? 1 : 0);
}

static void stop_reg(int r)
{
    struct mreg *g = &regs[r];
    bool prevented = ctx_after_stop(g->h);
    int runs = atomic_load(&g->arg->runs);
    switch (g->st) {
    case R_NEVER:
    case R_LIVE:
        REL_CHECK(prevented && runs == 0, "stop of a pending registration");
        break;
    case R_RAN:
        REL_CHECK(!prevented && runs == 1, "stop after fn ran");
        break;
    case R_MAYBE:
        REL_CHECK(prevented ? runs == 0 : runs == 1,
                  "stop returned %d, fn ran %d times", prevented, runs);
        break;
    }
    free(g->arg);
    regs[r] = regs[--nregs];
}

static void op_stop(struct input *in)
{
    unsigned b = next(in);
    if (nregs > 0)
        stop_reg((int)(b % (unsigned)nregs));
}

/* Checks fd, the answer of ctx_done_fd(x), and keeps it for check_node. */
static void got_fd(int x, int fd)
{
    REL_CHECK(fd >= 0, "done_fd: %s", strerror(errno));
    if (x >= 0) {
        if (nodes[x].fd >= 0)
            REL_EQ(fd, nodes[x].fd);
        nodes[x].fd = fd;
    }
    int s = x >= 0 ? msrc(x) : -1;
    if (s < 0) {
        /* The shared never-ready fd. */
        if (never_fd < 0)
            never_fd = fd;
        REL_EQ(fd, never_fd);
        REL_CHECK(!fd_readable(fd, false), "never-ready fd is readable");
        return;
    }
    REL_EQ(ctx_done_fd(nodes[s].c), fd); /* shared with its source */
    REL_EQ(fd_readable(fd, merr(x) != 0), merr(x) != 0);
}

static void op_done_fd(struct input *in)
{
    int x = pick(next(in));
    if (x >= 0)
        settle_ancestors(x);
    got_fd(x, ctx_done_fd(handle(x)));
}

static void op_format(struct input *in)
{
    int x = pick(next(in));
    unsigned b = next(in);
    char buf[1024], small[40], want[1024];
    size_t n = ctx_format(handle(x), buf, sizeof buf);
    REL_CHECK(n < sizeof buf && strlen(buf) == n, "format length %zu", n);
    size_t sz = b % sizeof small;
    memset(small, 'x', sizeof small);
    size_t n2 = ctx_format(handle(x), sz ? small : NULL, sz);
    /* The deadline text's length may change between calls (time left). */
    if (!any_own_dl(x))
        REL_EQ(n2, n);
    if (sz > 0)
        REL_CHECK(memchr(small, '\0', sz) != NULL, "not terminated");
    if (sz > 0 && sz < sizeof small)
        REL_CHECK(small[sz] == 'x', "wrote past size");
    if (x >= 0 && fmt_ambiguous(x))
        return;
    if (x >= 0)
        mformat(x, want, sizeof want);
    else
        snprintf(want, sizeof want, "%s",
                 x == ROOT_TODO ? "context.TODO" : "context.Background");
    REL_CHECK(glob(want, buf), "format: got %s, want %s", buf, want);
}

static void op_wait(struct input *in)
{
    int x = pick(next(in));
    unsigned b = next(in);
    if (x >= 0)
        settle_ancestors(x);
    ctx_t *c = handle(x);
    if (merr(x) != 0 && (b & 1)) {
        REL_EQ(ctx_wait(c), merr(x));
        return;
    }
    /* Live: a short bounded wait returns 0 (nothing can end it: no
     * pending deadline above x). */
    REL_EQ(ctx_wait_until(c, ctx_now() + (ctx_time_t)(b % 4) * 20000),
           merr(x));
}

/* ---- operations racing with a cancel from another thread --------------- */

struct canceller {
    ctx_t *c;
    int cause; /* 0: ctx_cancel */
    unsigned delay_us;
    int ret;
};

/* One cancelling thread for the process, handed one cancel at a time (a
 * thread per operation would cost more than the rest of the input). */
static pthread_mutex_t w_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w_cv = PTHREAD_COND_INITIALIZER;
static struct canceller *w_job; /* posted, not taken yet */
static bool w_busy;             /* posted or running */
static pthread_once_t w_once = PTHREAD_ONCE_INIT;

static void *worker_main(void *p)
{
    (void)p;
    for (;;) {
        pthread_mutex_lock(&w_mu);
        while (w_job == NULL)
            pthread_cond_wait(&w_cv, &w_mu);
        struct canceller *k = w_job;
        w_job = NULL;
        pthread_mutex_unlock(&w_mu);
        if (k->delay_us > 0)
            usleep(k->delay_us);
        k->ret = k->cause != 0 ? ctx_cancel_cause(k->c, k->cause)
                               : ctx_cancel(k->c);
        pthread_mutex_lock(&w_mu);
        w_busy = false;
        pthread_cond_broadcast(&w_cv);
        pthread_mutex_unlock(&w_mu);
    }
    return NULL;
}

static void worker_start(void)
{
    pthread_t t;
    REL_CHECK(pthread_create(&t, NULL, worker_main, NULL) == 0,
              "pthread_create");
    pthread_detach(t);
}

/* A held node on x's chain (x or an ancestor), chosen by b; x if none. */
static int pick_chain(int x, unsigned b)
{
    int chain[MAXNODES], n = 0;
    for (int j = x; j >= 0; j = nodes[j].parent)
        if (nodes[j].handles > 0)
            chain[n++] = j;
    return n > 0 ? chain[b % (unsigned)n] : x;
}

/* Picks the context x the operation works on and a held context a on its
 * chain that another thread cancels, settling whatever could race with
 * that; then hands the cancel to that thread. Its after-funcs run there
 * (R_RAN once it is done: the model is updated in join_cancel). */
static void start_cancel(struct canceller *k, int *xp, int *ap, unsigned c,
                         struct input *in)
{
    int x = pick(next(in));
    int a = pick_chain(x, next(in));
    unsigned cb = next(in);
    static const unsigned delays[] = {0, 0, 10, 100};
    if (x >= 0)
        settle_ancestors(x);
    if (a >= 0)
        settle_subtree(a);
    k->c = handle(a);
    k->cause = (cb & 1) ? 0 : (int)(cb >> 1) + 2000;
    k->delay_us = delays[c & 3];
    k->ret = -1;
    pthread_once(&w_once, worker_start);
    pthread_mutex_lock(&w_mu);
    w_job = k;
    w_busy = true;
    pthread_cond_broadcast(&w_cv);
    pthread_mutex_unlock(&w_mu);
    *xp = x;
    *ap = a;
}

static void join_cancel(struct canceller *k, int a)
{
    pthread_mutex_lock(&w_mu);
    while (w_busy)
        pthread_cond_wait(&w_cv, &w_mu);
    pthread_mutex_unlock(&w_mu);
    model_cancel(a, k->ret, k->cause != 0, k->cause);
}

/* A wait on x woken by a cancel of x or an ancestor from another thread (the
 * waiter-wake path of every node the cancel reaches, not only its root). */
static void op_wait_woken(struct input *in)
{
    unsigned c = next(in);
    struct canceller k;
    int x, a;
    start_cancel(&k, &x, &a, c, in);
    /* What x's err will be once the cancel is done. */
    int s = msrc(x);
    int want = merr(x);
    if (want == 0 && a >= 0 && nodes[a].kind == M_CANCEL && s >= 0 &&
        follows(s, a))
        want = CTX_CANCELED;
    ctx_time_t bound = want != 0 ? 10 * CTX_SECOND
                                 : (ctx_time_t)((c >> 2) % 4) * 20000;
    int e = ctx_wait_until(handle(x), ctx_now() + bound);
    REL_CHECK(e == want, "wait woken by a cancel from a thread: %d, want %d",
              e, want);
    join_cancel(&k, a);
}

/* One of done_fd, after_func, with_cancel or a far with_deadline on x while
 * another thread cancels x or an ancestor: whichever comes first, once both
 * are done the result is as if the cancel had come first or last. */
static void op_race(struct input *in)
{
    unsigned c = next(in);
    unsigned mode = (c >> 2) % 4;
    if (mode == 1 && nregs >= MAXREGS)
        mode = 0;
    if (mode >= 2 && nnodes >= MAXNODES)
        mode = 0;
    struct canceller k;
    int x, a;
    start_cancel(&k, &x, &a, c, in);
    ctx_t *xc = handle(x);
    switch (mode) {
    case 0: {
        int fd = ctx_done_fd(xc);
        join_cancel(&k, a);
        got_fd(x, fd);
        break;
    }
    case 1: {
        struct after_arg *g = calloc(1, sizeof *g);
        REL_CHECK(g != NULL, "harness out of memory");
        g->ctx = xc;
        ctx_after_t *h = ctx_after_func(xc, after_fn, g);
        int en = errno;
        join_cancel(&k, a);
        if (h == NULL) {
#ifdef CTX_FAULT_INJECTION
            REL_CHECK(ctx__fault_triggered() && en == ENOMEM, "after_func");
#else
            REL_CHECK(0, "after_func: %s", strerror(en));
#endif
            REL_EQ(atomic_load(&g->runs), 0);
            free(g);
            break;
        }
        struct mreg *r = &regs[nregs++];
        r->h = h;
        r->arg = g;
        r->src = msrc(x);
        r->st = r->src < 0                ? R_NEVER
                : nodes[r->src].err != 0 ? R_RAN
                                          : R_LIVE;
        break; /* the run count: check_regs() next */
    }
    default: {
        ctx_time_t d = base + (ctx_time_t)(c >> 4) * CTX_SECOND;
        ctx_t *nc = mode == 2 ? ctx_with_cancel(xc) : ctx_with_deadline(xc, d);
        int en = errno;
        join_cancel(&k, a);
        errno = en;
        if (derive_failed(nc))
            break;
        int i = mode == 2 ? add_node(nc, x, M_CANCEL, false, 0, 0, 0)
                          : add_node(nc, x, M_CANCEL, true, d, d, 0);
        birth(i, false);
        break;
    }
    }
}

static void op_strerror(struct input *in)
{
    int e = (int)next(in) - 10;
    const char *s = ctx_strerror(e);
    REL_CHECK(s != NULL && *s != '\0', "strerror(%d)", e);
    if (e == CTX_CANCELED)
        REL_CHECK(strcmp(s, "context canceled") == 0, "%s", s);
    if (e == CTX_DEADLINE_EXCEEDED)
        REL_CHECK(strcmp(s, "context deadline exceeded") == 0, "%s", s);
}

/* ---- the input ------------------------------------------------------- */

static void reset(void)
{
    for (int i = 0; i < MAXNODES; i++)
        atomic_store(&destroyed[i], 0);
    nnodes = 0;
    nregs = 0;
    base = ctx_now() + CTX_HOUR;
}

static void teardown(void)
{
#ifdef CTX_FAULT_INJECTION
    ctx__fault_fail_nth(0);
#endif
    settle_all();
    check_all();
    while (nregs > 0)
        stop_reg(nregs - 1);
    for (int i = 0; i < nnodes; i++) {
        while (nodes[i].handles > 0) {
            ctx_release(nodes[i].c);
            nodes[i].handles--;
        }
        nodes[i].c = NULL;
    }
#ifdef CTX_DEBUG
    /* The timer thread may still hold the reference it fired with. */
    for (int k = 0; k < 20000 && (ctx__live_contexts() || ctx__live_afters());
         k++)
        usleep(100);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
    for (int i = 0; i < nnodes; i++)
        if (nodes[i].kind == M_VALUE)
            REL_EQ(atomic_load(&destroyed[i]), nodes[i].destroy ? 1 : 0);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    reset();
#ifdef CTX_DEBUG
    REL_EQ(ctx__live_contexts(), 0);
#endif
    for (int ops = 0; in.n > 0 && ops < MAXOPS; ops++) {
        unsigned op = next(&in) % 24;
        bool armed = false;
        if (op == 23) { /* fail the Nth allocation of the next operation */
            long nth = (long)(next(&in) % 4) + 1;
#ifdef CTX_FAULT_INJECTION
            ctx__fault_fail_nth(nth);
            armed = true;
#else
            (void)nth; /* parsed the same: the operation runs unarmed */
#endif
            op = next(&in) % 23;
        }
        switch (op) {
        case 0: case 1: case 2: case 3: case 4: case 5: case 6:
            op_derive(op, &in);
            break;
        case 7: case 8: /* more cancels and derivations of the common kinds */
            op_derive(op == 7 ? 0 : 5, &in);
            break;
        case 9:
            op_cancel(&in, false);
            break;
        case 10:
            op_cancel(&in, true);
            break;
        case 11: case 12:
            op_release(&in);
            break;
        case 13:
            op_retain(&in);
            break;
        case 14:
            op_after(&in);
            break;
        case 15:
            op_stop(&in);
            break;
        case 16:
            op_done_fd(&in);
            break;
        case 17:
            op_format(&in);
            break;
        case 18:
            op_wait(&in);
            break;
        case 19: /* advance past every pending deadline */
            settle_all();
            break;
        case 20:
            op_strerror(&in);
            break;
        case 21:
            op_wait_woken(&in);
            break;
        default:
            op_race(&in);
            break;
        }
#ifdef CTX_FAULT_INJECTION
        if (armed)
            ctx__fault_fail_nth(0);
#else
        (void)armed;
#endif
        check_all();
    }
    teardown();
    return 0;
}
