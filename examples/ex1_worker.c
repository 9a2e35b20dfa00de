/* Seed example 1: how to stop a worker, four ways.
 *   1. a worker that cannot be stopped (only killing the process does it);
 *   2. a global flag;  3. a channel (a pipe);  4. a context, where the
 *   worker starts a second worker on the same context and one cancel stops
 *   both, at once (the cancellable sleep ends when the context does).
 * Usage: ex1_worker [tick_ms]   (the seed's tick is 1000 ms; default 100) */
#define _GNU_SOURCE
#include "common.h"

#include <ctx/group.h>

#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static ctx_duration_t tick;

static void nap(ctx_duration_t d)
{
    struct timespec ts = {(time_t)(d / CTX_SECOND), (long)(d % CTX_SECOND)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* 1. for { fmt.Println("worker"); time.Sleep(time.Second) } */
static void part1(void)
{
    ex_log("main", "--- 1. a worker with no way to be told to stop");
    fflush(stdout);
    pid_t pid = fork(); /* a process, so that it can be killed at all */
    if (pid == 0) {
        for (;;) {
            ex_log("worker", "worker");
            nap(tick);
        }
    }
    nap(3 * tick + tick / 2);
    ex_log("main", "wg.Wait() would never return: nothing can reach the "
                   "worker; killing the process is the only way");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* 2. a global flag, checked after each sleep */
static atomic_bool exit_flag;

static void *flag_worker(void *arg)
{
    (void)arg;
    for (;;) {
        ex_log("worker", "worker");
        nap(tick);
        if (atomic_load(&exit_flag))
            break;
    }
    return NULL;
}

static void part2(void)
{
    ex_log("main", "--- 2. a global flag (one per program; sub-workers?)");
    pthread_t t;
    pthread_create(&t, NULL, flag_worker, NULL);
    nap(3 * tick + tick / 2);
    atomic_store(&exit_flag, true);
    double t0 = ex_elapsed_ms();
    pthread_join(t, NULL);
    ex_log("main", "over (the worker noticed after %.0f ms: it was asleep)",
           ex_elapsed_ms() - t0);
}

/* 3. a channel: select { case <-exitChan: break LOOP; default: } */
static void *chan_worker(void *arg)
{
    int exit_fd = *(int *)arg;
    for (;;) {
        ex_log("worker", "worker");
        nap(tick);
        struct pollfd p = {.fd = exit_fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1)
            break;
    }
    return NULL;
}

static void part3(void)
{
    ex_log("main", "--- 3. a channel (a pipe that every caller must share)");
    int p[2];
    if (pipe(p) != 0)
        exit(1);
    pthread_t t;
    pthread_create(&t, NULL, chan_worker, &p[0]);
    nap(3 * tick + tick / 2);
    if (write(p[1], "x", 1) != 1)
        exit(1);
    double t0 = ex_elapsed_ms();
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    ex_log("main", "over (the worker noticed after %.0f ms: it was asleep)",
           ex_elapsed_ms() - t0);
}

/* 4. the context way: worker(ctx) starts worker2(ctx) */
static int worker2(ctx_t *ctx, void *arg)
{
    (void)arg;
    while (!ctx_is_done(ctx)) {
        ex_log("worker2", "worker2");
        ctx_sleep(ctx, tick); /* time.Sleep that ends with ctx */
    }
    ex_log("worker2", "stopped: %s", ctx_strerror(ctx_err(ctx)));
    return 0;
}

static int worker(ctx_t *ctx, void *arg)
{
    ctx_group_t *g = arg;
    ctx_group_go(g, worker2, NULL); /* go worker2(ctx) */
    while (!ctx_is_done(ctx)) {
        ex_log("worker", "worker");
        ctx_sleep(ctx, tick);
    }
    ex_log("worker", "stopped: %s", ctx_strerror(ctx_err(ctx)));
    return 0;
}

static void part4(void)
{
    ex_log("main", "--- 4. a context: one cancel stops the worker and the "
                   "worker it started");
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    ctx_group_t *g = ctx_group_new(ctx, 0); /* sync.WaitGroup */
    ctx_group_go(g, worker, g);
    nap(3 * tick + tick / 2);
    double t0 = ex_elapsed_ms();
    ctx_cancel(ctx); /* cancel(): notify every worker */
    ctx_group_wait(g);
    ex_log("main", "over (both workers stopped %.1f ms after cancel)",
           ex_elapsed_ms() - t0);
    ctx_group_free(g);
    ctx_release(ctx);
}

int main(int argc, char **argv)
{
    ex_init();
    tick = (argc > 1 ? atoi(argv[1]) : 100) * CTX_MILLISECOND;
    if (tick <= 0)
        tick = 100 * CTX_MILLISECOND;
    part1();
    part2();
    part3();
    part4();
    return 0;
}
