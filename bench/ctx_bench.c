/* libctx benchmarks: Go 1.19's context/benchmark_test.go reproduced workload
 * for workload, then the lifecycle figures. Names match Go's so that
 * bench/report.c pairs them. How each Go op maps to C is said beside each
 * benchmark and in bench/RESULTS.md.
 *
 *   ctx_bench [-bench REGEX] [-benchtime 200ms]   the Go-suite table
 *   ctx_bench -scale [-scale-max N]               the scaling tables
 */
#include "ctx.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ctx_bench_scale(void); /* ctx_scale.c */

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

/* ---- BenchmarkCommonParentCancel ---------------------------------------------
 * Go: root = WithValue(Background, "key", "value"); shared = WithCancel(root);
 * RunParallel: WithCancel(shared), Value("key") check, 100 divisions,
 * cancel(), 100 divisions. C: the same, with ctx_release right after
 * ctx_cancel (Go leaves the child to its GC). */
static const ctx_key_t key_key = CTX_KEY("key");
static const char value_str[] = "value";

static void busy(long *px)
{
    long x = *px;
    for (int i = 0; i < 100; i++) {
        BENCH_OPAQUE(x); /* a real division, as Go's compiler emits it */
        x /= x + 1;
    }
    *px = x;
}

static void common_parent_body(bench_pb_t *pb)
{
    ctx_t *shared = pb->arg;
    long x = 0;
    while (bench_pb_next(pb)) {
        ctx_t *c = must(ctx_with_cancel(shared), "ctx_with_cancel");
        const char *v = ctx_value(c, &key_key);
        if (v == NULL || strcmp(v, "value") != 0)
            bench_fatal("should not be reached");
        busy(&x);
        ctx_cancel(c);
        ctx_release(c);
        busy(&x);
    }
    BENCH_KEEP(x);
}

static void bm_common_parent_cancel(bench_t *b)
{
    ctx_t *root = must(ctx_with_value(ctx_background(), &key_key, (void *)value_str, NULL),
                       "ctx_with_value");
    ctx_t *shared = must(ctx_with_cancel(root), "ctx_with_cancel");
    bench_reset_timer(b);
    bench_run_parallel(b, common_parent_body, shared);
    cancel_release(shared); /* Go's deferred sharedcancel(), inside the timer */
    ctx_release(root);
}

/* ---- BenchmarkWithTimeout/concurrency=N ----------------------------------------
 * Go: GOMAXPROCS goroutines first create N/GOMAXPROCS WithTimeout(Background,
 * time.Hour) each (not timed); then RunParallel: 10 WithTimeout(Background,
 * time.Hour), then their 10 cancel(). C: ctx_with_timeout(background,
 * CTX_HOUR) x10, then (ctx_cancel + ctx_release) x10. */
struct wt {
    int per;
    ctx_t ***pending; /* [procs][per] */
};

static void wt_fill(int id, void *arg)
{
    struct wt *w = arg;
    for (int j = 0; j < w->per; j++)
        w->pending[id][j] = must(ctx_with_timeout(ctx_background(), CTX_HOUR),
                                 "ctx_with_timeout");
}

static void wt_body(bench_pb_t *pb)
{
    ctx_t *wcf[10];
    while (bench_pb_next(pb)) {
        for (int i = 0; i < 10; i++)
            wcf[i] = must(ctx_with_timeout(ctx_background(), CTX_HOUR), "ctx_with_timeout");
        for (int i = 0; i < 10; i++)
            cancel_release(wcf[i]);
    }
}

static void bm_with_timeout(bench_t *b)
{
    int concurrency = (int)(intptr_t)b->arg;
    struct wt w = {concurrency / bench_procs, NULL};
    w.pending = bench_xmalloc(sizeof(ctx_t **) * (size_t)bench_procs);
    for (int i = 0; i < bench_procs; i++)
        w.pending[i] = bench_xmalloc(sizeof(ctx_t *) * (size_t)(w.per ? w.per : 1));
    bench_on_threads(bench_procs, wt_fill, &w);
    bench_reset_timer(b);
    bench_run_parallel(b, wt_body, NULL);
    bench_stop_timer(b);
    for (int i = 0; i < bench_procs; i++) {
        for (int j = 0; j < w.per; j++)
            cancel_release(w.pending[i][j]);
        bench_xfree(w.pending[i]);
    }
    bench_xfree(w.pending);
}

/* ---- BenchmarkCancelTree/depth=D/Root=... -----------------------------------
 * Go: buildContextTree(root, D) is D nested WithCancel, never cancelled
 * (the GC reclaims them). C: the same chain; each parent's reference is
 * released as soon as its child holds one, and the leaf is released at the
 * end (which frees the chain: C has no GC, so freeing is in the figure).
 *   Root=Background:      chain from Background, then release (Go: garbage).
 *   Root=OpenCanceler:    root = WithCancel(Background); chain; cancel(root);
 *                         C then releases leaf and root.
 *   Root=ClosedCanceler:  root cancelled first; every node is done at birth. */
static ctx_t *build_tree(ctx_t *root, int depth)
{
    ctx_t *c = ctx_retain(root);
    for (int d = 0; d < depth; d++) {
        ctx_t *child = must(ctx_with_cancel(c), "ctx_with_cancel");
        ctx_release(c);
        c = child;
    }
    return c; /* the leaf: one reference for the caller */
}

static void bm_tree_background(bench_t *b)
{
    int depth = (int)(intptr_t)b->arg;
    for (long i = 0; i < b->n; i++)
        ctx_release(build_tree(ctx_background(), depth));
}

static void bm_tree_open(bench_t *b)
{
    int depth = (int)(intptr_t)b->arg;
    for (long i = 0; i < b->n; i++) {
        ctx_t *root = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
        ctx_t *leaf = build_tree(root, depth);
        ctx_cancel(root);
        ctx_release(leaf);
        ctx_release(root);
    }
}

static void bm_tree_closed(bench_t *b)
{
    int depth = (int)(intptr_t)b->arg;
    for (long i = 0; i < b->n; i++) {
        ctx_t *root = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
        ctx_cancel(root);
        ctx_t *leaf = build_tree(root, depth);
        ctx_release(leaf);
        ctx_release(root);
    }
}

/* ---- BenchmarkCheckCanceled/{Err,Done} ----------------------------------------
 * Go: on a cancelled WithCancel: ctx.Err(), and `select { case <-ctx.Done():
 * default: }`. C: ctx_err() and ctx_is_done(). */
static ctx_t *checked;

static void bm_check_err(bench_t *b)
{
    ctx_t *c = b->arg;
    int sink = 0;
    for (long i = 0; i < b->n; i++)
        sink += ctx_err(c);
    BENCH_KEEP(sink);
}

static void bm_check_done(bench_t *b)
{
    ctx_t *c = b->arg;
    int sink = 0;
    for (long i = 0; i < b->n; i++)
        sink += ctx_is_done(c);
    BENCH_KEEP(sink);
}

/* ---- BenchmarkContextCancelDone ------------------------------------------------
 * Go: RunParallel polling Done() of a live WithCancel. C: ctx_is_done(). */
static void cancel_done_body(bench_pb_t *pb)
{
    ctx_t *c = pb->arg;
    int sink = 0;
    while (bench_pb_next(pb))
        sink += ctx_is_done(c);
    BENCH_KEEP(sink);
}

static void bm_context_cancel_done(bench_t *b)
{
    ctx_t *c = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    bench_run_parallel(b, cancel_done_body, c);
    cancel_release(c);
}

/* ---- BenchmarkDeepValue{Same,New}GoRoutine/depth=D ---------------------------
 * Go: D nested WithValue(ctx, i, i), then ctx.Value(-1) (a miss). C: D
 * nested ctx_with_value with D distinct keys, then ctx_value of another key.
 * NewGoRoutine starts a goroutine per op (~1 us of scheduling); a C thread
 * per op would measure pthread_create, not libctx: not reproduced. */
static ctx_key_t value_keys[10000];
static const ctx_key_t miss_key = CTX_KEY("miss");

static ctx_t *value_chain(int depth)
{
    ctx_t *c = ctx_background();
    for (int i = 0; i < depth; i++) {
        ctx_t *child = must(ctx_with_value(c, &value_keys[i], (void *)(intptr_t)i, NULL),
                            "ctx_with_value");
        ctx_release(c);
        c = child;
    }
    return c;
}

static void bm_deep_value(bench_t *b)
{
    ctx_t *c = b->arg;
    void *sink = NULL;
    for (long i = 0; i < b->n; i++) {
        sink = ctx_value(c, &miss_key);
        BENCH_KEEP(sink);
    }
}

/* ---- Lifecycle figures (not in Go's suite; Go peers in bench/go) ------------ */
static const ctx_key_t life_key = CTX_KEY("life");

/* Go: _, cancel := WithCancel(Background()); cancel() */
static void bm_life_cancel_bg(bench_t *b)
{
    for (long i = 0; i < b->n; i++)
        cancel_release(must(ctx_with_cancel(ctx_background()), "ctx_with_cancel"));
}

/* Go: the same with a live WithCancel parent (registration in its children) */
static void bm_life_cancel_child(bench_t *b)
{
    ctx_t *p = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    bench_reset_timer(b);
    for (long i = 0; i < b->n; i++)
        cancel_release(must(ctx_with_cancel(p), "ctx_with_cancel"));
    bench_stop_timer(b);
    cancel_release(p);
}

/* Go: _, cancel := WithTimeout(Background(), time.Hour); cancel() */
static void bm_life_timeout(bench_t *b)
{
    for (long i = 0; i < b->n; i++)
        cancel_release(must(ctx_with_timeout(ctx_background(), CTX_HOUR), "ctx_with_timeout"));
}

/* Go: WithValue(Background(), k, v).Value(k) */
static void bm_life_value(bench_t *b)
{
    void *sink = NULL;
    for (long i = 0; i < b->n; i++) {
        ctx_t *c = must(ctx_with_value(ctx_background(), &life_key, &sink, NULL),
                        "ctx_with_value");
        sink = ctx_value(c, &life_key);
        ctx_release(c);
    }
    BENCH_KEEP(sink);
}

/* C only: with_cancel + done_fd + cancel + release (the fd is an eventfd or
 * a pipe; Go has no fd, its Done channel is not pollable by epoll). */
static void bm_life_done_fd(bench_t *b)
{
    for (long i = 0; i < b->n; i++) {
        ctx_t *c = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
        if (ctx_done_fd(c) < 0)
            bench_fatal("ctx_done_fd: errno %d", errno);
        cancel_release(c);
    }
}

static void after_fn(void *arg)
{
    (*(long *)arg)++;
}

/* C only (Go 1.19 has no AfterFunc, added in 1.21): register on a live
 * context, then stop. */
static void bm_life_after_stop(bench_t *b)
{
    long hits = 0;
    ctx_t *c = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    bench_reset_timer(b);
    for (long i = 0; i < b->n; i++) {
        ctx_after_t *r = ctx_after_func(c, after_fn, &hits);
        if (r == NULL)
            bench_fatal("ctx_after_func: errno %d", errno);
        if (!ctx_after_stop(r))
            bench_fatal("ctx_after_stop returned false on a live context");
    }
    bench_stop_timer(b);
    cancel_release(c);
}

/* C only: with_cancel + after_func + cancel (fn runs) + after_stop + release */
static void bm_life_after_fire(bench_t *b)
{
    long hits = 0;
    for (long i = 0; i < b->n; i++) {
        ctx_t *c = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
        ctx_after_t *r = ctx_after_func(c, after_fn, &hits);
        if (r == NULL)
            bench_fatal("ctx_after_func: errno %d", errno);
        ctx_cancel(c);
        ctx_after_stop(r);
        ctx_release(c);
    }
    if (hits != b->n)
        bench_fatal("after-func ran %ld times for %ld ops", hits, b->n);
}

int main(int argc, char **argv)
{
    if (bench_main_args(argc, argv)) {
        ctx_bench_scale();
        return 0;
    }
    for (int i = 0; i < 10000; i++)
        value_keys[i].name = "k";
    char name[128];

    bench_run("CommonParentCancel", bm_common_parent_cancel, NULL);
    for (int conc = 40; conc <= 400000; conc *= 100) {
        snprintf(name, sizeof name, "WithTimeout/concurrency=%d", conc);
        bench_run(name, bm_with_timeout, (void *)(intptr_t)conc);
    }
    static const int depths[] = {1, 10, 100, 1000};
    for (int i = 0; i < 4; i++) {
        void *d = (void *)(intptr_t)depths[i];
        snprintf(name, sizeof name, "CancelTree/depth=%d/Root=Background", depths[i]);
        bench_run(name, bm_tree_background, d);
        snprintf(name, sizeof name, "CancelTree/depth=%d/Root=OpenCanceler", depths[i]);
        bench_run(name, bm_tree_open, d);
        snprintf(name, sizeof name, "CancelTree/depth=%d/Root=ClosedCanceler", depths[i]);
        bench_run(name, bm_tree_closed, d);
    }
    checked = must(ctx_with_cancel(ctx_background()), "ctx_with_cancel");
    ctx_cancel(checked);
    bench_run("CheckCanceled/Err", bm_check_err, checked);
    bench_run("CheckCanceled/Done", bm_check_done, checked);
    ctx_release(checked);
    bench_run("ContextCancelDone", bm_context_cancel_done, NULL);

    static const int vdepths[] = {10, 20, 30, 50, 100};
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "DeepValueNewGoRoutine/depth=%d", vdepths[i]);
        bench_skip(name, "no fair C equivalent: Go spawns a goroutine per op "
                         "(a pthread per op would measure the kernel, not libctx)");
    }
    for (int i = 0; i < 5; i++) {
        ctx_t *c = value_chain(vdepths[i]);
        snprintf(name, sizeof name, "DeepValueSameGoRoutine/depth=%d", vdepths[i]);
        bench_run(name, bm_deep_value, c);
        ctx_release(c);
    }

    bench_run("Lifecycle/WithCancelBackground", bm_life_cancel_bg, NULL);
    bench_run("Lifecycle/WithCancelChild", bm_life_cancel_child, NULL);
    bench_run("Lifecycle/WithTimeout", bm_life_timeout, NULL);
    bench_run("Lifecycle/WithValue", bm_life_value, NULL);
    bench_run("Lifecycle/DoneFd", bm_life_done_fd, NULL);
    bench_run("Lifecycle/AfterFuncStop", bm_life_after_stop, NULL);
    bench_run("Lifecycle/AfterFuncFire", bm_life_after_fire, NULL);
    return 0;
}
