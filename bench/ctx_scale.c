/* The scaling tables: how the cost of each operation grows with the work
 * already there. Each case runs in a forked child (a fresh process: its own
 * timer thread, its own peak RSS; a crash is reported, not fatal). */
#include "ctx.h"
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

void ctx_bench_scale(void);

static ctx_t *must(ctx_t *c, const char *what)
{
    if (c == NULL)
        bench_fatal("%s returned NULL (errno %d)", what, errno);
    return c;
}

static void cancel_release(ctx_t *c)
{
    ctx_cancel(c);
    ctx_release(c);
}

/* ---- timers ----------------------------------------------------------------- */

struct timers_arg {
    long n;
    bool random; /* random deadlines in [1h, 2h) or all now+1h (Go's pattern) */
    double *out; /* shared result slot: not shared after fork, so printed */
    const char *col;
};

static void timers_case(void *a)
{
    struct timers_arg *t = a;
    char row[32];
    uint64_t seed = 88172645463325252ULL;
    ctx_t **pending = bench_xmalloc(sizeof(ctx_t *) * (size_t)t->n);
    for (long i = 0; i < t->n; i++) {
        ctx_duration_t d = CTX_HOUR + (t->random ? (ctx_duration_t)(bench_rand(&seed) % CTX_HOUR) : 0);
        pending[i] = must(ctx_with_timeout(ctx_background(), d), "ctx_with_timeout");
    }
    enum { BATCHES = 7, OPS = 20000 };
    double v[BATCHES];
    for (int r = 0; r < BATCHES; r++) {
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < OPS; i++) {
            ctx_duration_t d = CTX_HOUR + (t->random ? (ctx_duration_t)(bench_rand(&seed) % CTX_HOUR) : 0);
            cancel_release(must(ctx_with_timeout(ctx_background(), d), "ctx_with_timeout"));
        }
        v[r] = (double)(bench_now_ns() - t0) / OPS;
    }
    bench_scale(SEC_TIMERS, bench_n_label(t->n, row, sizeof row), t->col, "%.1f",
                bench_median(v, BATCHES));
    for (long i = 0; i < t->n; i++)
        cancel_release(pending[i]);
    bench_xfree(pending);
}

static void scale_timers(void)
{
    char row[32];
    for (long n = 1000; n <= bench_scale_max; n *= 10) {
        struct timers_arg r = {n, true, NULL, "C ns/op (random deadlines)"};
        struct timers_arg g = {n, false, NULL, "C ns/op (all now+1h, Go's pattern)"};
        bench_fork(SEC_TIMERS, bench_n_label(n, row, sizeof row), r.col, timers_case, &r, 0);
        bench_fork(SEC_TIMERS, bench_n_label(n, row, sizeof row), g.col, timers_case, &g, 0);
        bench_scale(SEC_TIMERS, row, "log2(n)/log2(10^3)", "%.2f", log2((double)n) / log2(1000.0));
    }
}

/* ---- tree cancel -------------------------------------------------------------- */

enum shape { FLAT, KARY, CHAIN };
static const char *const shape_name[] = {"flat: n children of the root",
                                         "8-ary balanced", "chain: depth n"};

struct tree_arg {
    long n;
    enum shape shape;
};

static void tree_case(void *a)
{
    struct tree_arg *t = a;
    char row[32], col[96];
    long n = t->n;
    ctx_t **node = bench_xmalloc(sizeof(ctx_t *) * (size_t)(n + 1));
    int reps = (int)(100000 / n);
    if (reps < 1)
        reps = 1;
    if (reps > 15)
        reps = 15;
    double vc[15], vr[15], vb[15];
    for (int r = 0; r < reps; r++) {
        int64_t t0 = bench_now_ns();
        node[0] = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
        for (long i = 1; i <= n; i++) {
            ctx_t *parent = t->shape == FLAT ? node[0]
                            : t->shape == KARY ? node[(i - 1) / 8]
                                               : node[i - 1];
            node[i] = must(ctx_with_cancel(parent), "ctx_with_cancel");
        }
        int64_t t1 = bench_now_ns();
        ctx_cancel(node[0]);
        int64_t t2 = bench_now_ns();
        if (!ctx_is_done(node[n]))
            bench_fatal("a leaf is not done after its root was cancelled");
        for (long i = n; i >= 0; i--) /* children first: each release frees one */
            ctx_release(node[i]);
        int64_t t3 = bench_now_ns();
        vb[r] = (double)(t1 - t0) / (double)n;
        vc[r] = (double)(t2 - t1) / (double)n;
        vr[r] = (double)(t3 - t2) / (double)n;
    }
    bench_n_label(n, row, sizeof row);
    snprintf(col, sizeof col, "C cancel (%s)", shape_name[t->shape]);
    bench_scale(SEC_TREE, row, col, "%.1f", bench_median(vc, reps));
    if (t->shape == KARY) {
        bench_scale(SEC_TREE, row, "C build, ns/node (8-ary)", "%.1f", bench_median(vb, reps));
        bench_scale(SEC_TREE, row, "C release, ns/node (8-ary)", "%.1f", bench_median(vr, reps));
    }
    bench_xfree(node);
}

static void scale_tree(void)
{
    char row[32], col[96];
    for (long n = 1000; n <= bench_scale_max; n *= 10) {
        for (int s = FLAT; s <= CHAIN; s++) {
            struct tree_arg t = {n, (enum shape)s};
            snprintf(col, sizeof col, "C cancel (%s)", shape_name[s]);
            /* The default 8 MiB stack: a recursive cancel shows up here. */
            bench_fork(SEC_TREE, bench_n_label(n, row, sizeof row), col, tree_case, &t, 0);
        }
    }
}

/* ---- value miss by depth ------------------------------------------------------ */

static ctx_key_t vkeys[100000];
static const ctx_key_t vmiss = CTX_KEY("miss");

static void value_case(void *a)
{
    long depth = *(long *)a;
    char row[32];
    ctx_t *c = ctx_background();
    for (long i = 0; i < depth; i++) {
        ctx_t *child = must(ctx_with_value(c, &vkeys[i], NULL, NULL), "ctx_with_value");
        ctx_release(c);
        c = child;
    }
    long iters = 20000000 / depth;
    double v[7];
    for (int r = 0; r < 7; r++) {
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < iters; i++) {
            void *p = ctx_value(c, &vmiss);
            BENCH_KEEP(p);
        }
        v[r] = (double)(bench_now_ns() - t0) / (double)iters;
    }
    double m = bench_median(v, 7);
    bench_n_label(depth, row, sizeof row);
    bench_scale(SEC_VALUE, row, "C ns/op", "%.1f", m);
    bench_scale(SEC_VALUE, row, "C ns per level", "%.2f", m / (double)depth);
    ctx_release(c);
}

static void scale_value(void)
{
    char row[32];
    for (long d = 1; d <= 10000 && d <= bench_scale_max; d *= 10)
        bench_fork(SEC_VALUE, bench_n_label(d, row, sizeof row), "C ns/op", value_case, &d, 0);
}

/* ---- peak RSS with 10^6 pending timeouts ------------------------------------ */

static void rss_case(void *a)
{
    long n = *(long *)a;
    char row[48], nl[32];
    snprintf(row, sizeof row, "C, n=%s", bench_n_label(n, nl, sizeof nl));
    ctx_t **pending = bench_xmalloc(sizeof(ctx_t *) * (size_t)n);
    memset(pending, 0, sizeof(ctx_t *) * (size_t)n);
    /* Start the timer thread first, so that its stack is in the baseline. */
    cancel_release(must(ctx_with_timeout(ctx_background(), CTX_HOUR), "ctx_with_timeout"));
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    bench_live_begin();
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        pending[i] = must(ctx_with_timeout(ctx_background(), CTX_HOUR + i), "ctx_with_timeout");
    int64_t t1 = bench_now_ns();
    struct bench_live l = bench_live_end();
    getrusage(RUSAGE_SELF, &r1);
    bench_scale(SEC_RSS, row, "peak RSS (MiB)", "%.1f", (double)r1.ru_maxrss / 1024);
    bench_scale(SEC_RSS, row, "RSS growth per context (B)", "%.1f",
                (double)(r1.ru_maxrss - r0.ru_maxrss) * 1024 / (double)n);
    bench_scale(SEC_RSS, row, "malloc usable per context (B)", "%.1f", (double)l.usable / (double)n);
    bench_scale(SEC_RSS, row, "create, ns/op", "%.1f", (double)(t1 - t0) / (double)n);
    int64_t t2 = bench_now_ns();
    for (long i = 0; i < n; i++)
        cancel_release(pending[i]);
    bench_scale(SEC_RSS, row, "cancel+release, ns/op", "%.1f",
                (double)(bench_now_ns() - t2) / (double)n);
    bench_xfree(pending);
}

static void scale_rss(void)
{
    long n = bench_scale_max < 1000000 ? bench_scale_max : 1000000;
    char row[48], nl[32];
    snprintf(row, sizeof row, "C, n=%s", bench_n_label(n, nl, sizeof nl));
    bench_fork(SEC_RSS, row, "peak RSS (MiB)", rss_case, &n, 0);
}

/* ---- bytes per context, by kind ----------------------------------------------- */

enum kind { K_CANCEL_BG, K_CANCEL_CHILD, K_TIMEOUT, K_VALUE, K_WITHOUT, K_AFTER, K_DONE_FD, K_N };
static const char *const kind_name[] = {
    "C cancel (child of background)",
    "C cancel (child of a cancel context)",
    "C timeout (pending timer)",
    "C value",
    "C without_cancel",
    "C after_func registration",
    "C done_fd (added to a cancel context)",
};

static void noop(void *arg)
{
    (void)arg;
}

static void bytes_case(void *a)
{
    enum kind k = *(enum kind *)a;
    long n = k == K_DONE_FD ? 1000 : 100000;
    static const ctx_key_t key = CTX_KEY("k");
    ctx_t **c = bench_xmalloc(sizeof(ctx_t *) * (size_t)n);
    ctx_after_t **r = bench_xmalloc(sizeof(ctx_after_t *) * (size_t)n);
    ctx_t *parent = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    /* warm up the timer thread and anything lazily made */
    cancel_release(must(ctx_with_timeout(parent, CTX_HOUR), "ctx_with_timeout"));
    if (k == K_DONE_FD)
        for (long i = 0; i < n; i++)
            c[i] = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    bench_live_begin();
    for (long i = 0; i < n; i++) {
        switch (k) {
        case K_CANCEL_BG: c[i] = ctx_with_cancel(ctx_background()); break;
        case K_CANCEL_CHILD: c[i] = ctx_with_cancel(parent); break;
        case K_TIMEOUT: c[i] = ctx_with_timeout(ctx_background(), CTX_HOUR + i); break;
        case K_VALUE: c[i] = ctx_with_value(parent, &key, NULL, NULL); break;
        case K_WITHOUT: c[i] = ctx_without_cancel(parent); break;
        case K_AFTER: r[i] = ctx_after_func(parent, noop, NULL); break;
        case K_DONE_FD:
            if (ctx_done_fd(c[i]) < 0)
                bench_fatal("ctx_done_fd: errno %d", errno);
            break;
        default: break;
        }
    }
    struct bench_live l = bench_live_end();
    const char *row = kind_name[k];
    bench_scale(SEC_BYTES, row, "requested B", "%.1f", (double)l.requested / (double)n);
    bench_scale(SEC_BYTES, row, "usable B (net live)", "%.1f", (double)l.usable / (double)n);
    bench_scale(SEC_BYTES, row, "malloc chunks", "%.2f", (double)l.chunks / (double)n);
    bench_scale(SEC_BYTES, row, "footprint B (usable + 8 per chunk)", "%.1f",
                (double)(l.usable + 8 * l.chunks) / (double)n);
    for (long i = 0; i < n; i++) {
        if (k == K_AFTER)
            ctx_after_stop(r[i]);
        else if (k != K_VALUE && k != K_WITHOUT)
            ctx_cancel(c[i]);
        if (k != K_AFTER)
            ctx_release(c[i]);
    }
    cancel_release(parent);
    bench_xfree(c);
    bench_xfree(r);
}

static void scale_bytes(void)
{
    for (int k = 0; k < K_N; k++)
        bench_fork(SEC_BYTES, kind_name[k], "requested B", bytes_case, &k, 0);
}

/* ---- callback registration ---------------------------------------------------- */

static void count_fn(void *arg)
{
    (*(long *)arg)++;
}

static void after_case(void *a)
{
    long k = *(long *)a;
    char row[32];
    bench_n_label(k, row, sizeof row);
    long hits = 0;
    ctx_t *c = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    ctx_after_t **r = bench_xmalloc(sizeof(ctx_after_t *) * (size_t)(k + 1));
    for (long i = 0; i < k; i++)
        r[i] = ctx_after_func(c, count_fn, &hits);
    enum { OPS = 100000 };
    double v[7];
    for (int rep = 0; rep < 7; rep++) {
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < OPS; i++)
            ctx_after_stop(ctx_after_func(c, count_fn, &hits));
        v[rep] = (double)(bench_now_ns() - t0) / OPS;
    }
    bench_scale(SEC_AFTER, row, "C after_func+after_stop, ns/op", "%.1f", bench_median(v, 7));
    if (k > 0) {
        int64_t t0 = bench_now_ns();
        ctx_cancel(c);
        bench_scale(SEC_AFTER, row, "C cancel running k callbacks, ns/callback", "%.1f",
                    (double)(bench_now_ns() - t0) / (double)k);
        if (hits != k)
            bench_fatal("after-funcs ran %ld times, expected %ld", hits, k);
    }
    for (long i = 0; i < k; i++)
        ctx_after_stop(r[i]);
    cancel_release(c);
    bench_xfree(r);
}

static void scale_after(void)
{
    char row[32];
    for (long k = 0; k <= 1000000 && k <= bench_scale_max; k = k ? k * 100 : 1000)
        bench_fork(SEC_AFTER, bench_n_label(k, row, sizeof row), "C after_func+after_stop, ns/op",
                   after_case, &k, 0);
}

void ctx_bench_scale(void)
{
    for (int i = 0; i < 100000; i++)
        vkeys[i].name = "k";
    scale_timers();
    scale_tree();
    scale_value();
    scale_rss();
    scale_bytes();
    scale_after();
}
