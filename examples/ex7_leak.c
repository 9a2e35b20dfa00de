/* Seed 002's leak: 50 workers, each with a 1 s timeout, wait for a 1.2 s job
 * that reports on an unbuffered channel. The worker gives up at 1 s; the
 * job's send then has no receiver and blocks forever: 50 threads leak. The
 * fix is the seed's: a buffered channel (make(chan struct{}, 1)), so the
 * late send completes and the job's thread ends. The live thread count is
 * printed over time (Go's runtime.NumGoroutine()).
 * Usage: ex7_leak [scale]   times are the seed's divided by scale (10). */
#define _GNU_SOURCE
#include "common.h"

#include <stdatomic.h>

#define WORKERS 50

static ctx_duration_t timeout, job_time;
static ex_chan_t chans[2][WORKERS]; /* live for the whole program */

struct job {
    ex_chan_t *ch;
};

static void *job_main(void *arg)
{
    ex_chan_t *ch = arg;
    ctx_sleep(ctx_background(), job_time); /* business logic */
    /* done <- struct{}{}: no context here, exactly like the seed */
    ex_chan_send(ch, ctx_background(), 1);
    return NULL;
}

static void *worker_main(void *arg)
{
    ex_chan_t *ch = arg;
    ctx_t *ctx = ctx_with_timeout(ctx_background(), timeout);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    pthread_create(&t, &a, job_main, ch); /* go func() { ... }() */
    pthread_attr_destroy(&a);
    int v;
    /* select { case <-done: case <-ctx.Done(): } */
    ex_chan_recv(ch, ctx, &v);
    ctx_cancel(ctx);
    ctx_release(ctx);
    return NULL;
}

static void spawn_workers(ex_chan_t *chs)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < WORKERS; i++) {
        pthread_t t;
        pthread_create(&t, &a, worker_main, &chs[i]);
    }
    pthread_attr_destroy(&a);
}

static int watch(const char *who, ctx_duration_t for_, ctx_duration_t every)
{
    ctx_time_t start = ctx_now(), end = start + for_;
    int n = 0;
    for (ctx_time_t t = start; t <= end; t += every) {
        ctx_sleep(ctx_background(), t - ctx_now());
        n = ex_threads();
        ex_log(who, "t=%4lld ms  threads: %d",
               (long long)((ctx_now() - start) / CTX_MILLISECOND), n);
    }
    return n;
}

int main(int argc, char **argv)
{
    ex_init();
    int scale = argc > 1 ? atoi(argv[1]) : 10;
    if (scale <= 0)
        scale = 10;
    timeout = CTX_SECOND / scale;
    job_time = 1200 * CTX_MILLISECOND / scale;
    ctx_duration_t every = timeout / 2;
    ex_threads_warm_up();
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer */
    int baseline = ex_threads();
    ex_log("main",
           "%d workers, timeout %lld ms, job %lld ms; baseline "
           "threads: %d",
           WORKERS, (long long)(timeout / CTX_MILLISECOND),
           (long long)(job_time / CTX_MILLISECOND), baseline);
    for (int i = 0; i < WORKERS; i++) {
        ex_chan_init(&chans[0][i], 0); /* the bug: make(chan struct{}) */
        ex_chan_init(&chans[1][i], 1); /* the fix: make(chan struct{}, 1) */
    }

    ex_log("leaky", "--- unbuffered channel: the late send blocks forever");
    spawn_workers(chans[0]);
    watch("leaky", timeout + job_time + 2 * every, every);
    int leaked = ex_threads_settle(baseline + WORKERS) - baseline;
    ex_log("leaky", "%d threads leaked (stuck in the send)", leaked);
    /* Free them before the next part (a Go program could not): receive. */
    /* Bounded: a job that beat its worker's timeout (a busy machine) has
     * nothing left to send, and a receive from it must not hang. */
    ctx_t *drain = ctx_with_timeout(ctx_background(), 2 * CTX_SECOND);
    for (int i = 0; i < WORKERS; i++) {
        int v;
        ex_chan_recv(&chans[0][i], drain != NULL ? drain : ctx_background(), &v);
    }
    ctx_release(drain);
    int back = ex_threads_settle(baseline);
    ex_log("leaky", "drained the channels by hand: threads: %d", back);

    ex_log("fixed", "--- buffered channel: the late send completes");
    spawn_workers(chans[1]);
    watch("fixed", timeout + job_time + 2 * every, every);
    int after = ex_threads_settle(baseline);
    ex_log("fixed", "threads: %d, baseline %d: %s", after, baseline,
           after == baseline ? "back to the baseline, no leak" : "LEAK");
    return leaked == WORKERS && back == baseline && after == baseline ? 0 : 1;
}
