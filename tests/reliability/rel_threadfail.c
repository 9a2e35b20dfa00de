/* Thread-start failure: every thread the library starts (the timer thread,
 * a group's threads, the signal watcher, a cond wait's deferred wake) goes
 * through pthread_create(), which this test wraps (-Wl,--wrap) so that it
 * fails with EAGAIN while armed. What must hold, for each:
 *  - the documented error comes back (NULL with errno EAGAIN, or EAGAIN),
 *    the callback is never called, nothing is left half made (no live
 *    context, no handler installed, no fd);
 *  - once threads can start again, the same operation works;
 *  - a cond wait whose wake cannot be handed to a thread is still woken,
 *    and the cancel never waits for the mutex (whoever holds it).
 * Root may not be limited by RLIMIT_NPROC, hence the wrapper. */
#include "ctx.h"
#include "ctx/group.h"
#include "ctx/io.h"
#include "ctx/sigctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);

static atomic_int fail_threads;   /* armed: pthread_create fails */
static atomic_int failed_creates; /* how many it failed */

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg)
{
    if (atomic_load(&fail_threads)) {
        atomic_fetch_add(&failed_creates, 1);
        return EAGAIN;
    }
    return __real_pthread_create(t, a, fn, arg);
}

static void arm(bool on)
{
    atomic_store(&fail_threads, on);
}

static void no_live(void)
{
#ifdef CTX_DEBUG
    /* The timer thread may hold a just-fired context for a moment. */
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while (ctx__live_contexts() != 0 && ctx_now() < end)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
#endif
}

/* The first deadline of the process starts the timer thread. */
static void timer_thread(void)
{
    int before = atomic_load(&failed_creates);
    arm(true);
    errno = 0;
    REL_CHECK(ctx_with_timeout(ctx_background(), CTX_HOUR) == NULL, "made");
    REL_EQ(errno, EAGAIN);
    ctx_t *p = ctx_with_cancel(ctx_background());
    errno = 0;
    REL_CHECK(ctx_with_deadline_cause(p, ctx_now() + CTX_SECOND, 7) == NULL,
              "made");
    REL_EQ(errno, EAGAIN);
    /* No timer needed: a past deadline, a plain cancel, a huge timeout. */
    ctx_t *past = ctx_with_deadline(p, ctx_now() - 1);
    REL_CHECK(past != NULL && ctx_err(past) == CTX_DEADLINE_EXCEEDED, "past");
    ctx_t *huge = ctx_with_timeout(p, INT64_MAX);
    REL_CHECK(huge != NULL && !ctx_is_done(huge), "huge");
    arm(false);
    REL_CHECK(atomic_load(&failed_creates) > before, "no thread was asked for");
    /* The parent is intact: its cancel reaches the children made. */
    REL_EQ(ctx_cancel(p), 0);
    REL_EQ(ctx_err(huge), CTX_CANCELED);
    ctx_release(huge);
    ctx_release(past);
    ctx_release(p);

    /* Threads can start again: the timer works. */
    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout_cause(ctx_background(), 20 * CTX_MILLISECOND,
                                      ENOLINK);
    REL_CHECK(t != NULL, "with_timeout: %s", ctx_strerror(errno));
    REL_EQ(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    REL_EQ(ctx_cause(t), ENOLINK);
    REL_CHECK(ctx_now() - t0 >= 20 * CTX_MILLISECOND, "early");
    ctx_release(t);
    no_live();
    printf("  ok   timer thread: EAGAIN, then deadlines fire\n");
}

static atomic_int group_calls;

static int group_fn(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&group_calls, 1);
    return 0;
}

static void group_threads(void)
{
    ctx_group_t *g = ctx_group_new(ctx_background(), 2);
    REL_CHECK(g != NULL, "group");
    arm(true);
    REL_EQ(ctx_group_go(g, group_fn, NULL), EAGAIN);
    REL_EQ(ctx_group_try_go(g, group_fn, NULL), EAGAIN);
    arm(false);
    REL_EQ(atomic_load(&group_calls), 0);
    REL_EQ(ctx_group_running(g), 0);
    REL_CHECK(!ctx_is_done(ctx_group_ctx(g)), "the group was cancelled");
    /* The failed starts took no slot of the limit. */
    REL_EQ(ctx_group_go(g, group_fn, NULL), 0);
    REL_EQ(ctx_group_go(g, group_fn, NULL), 0);
    REL_EQ(ctx_group_wait(g), 0);
    REL_EQ(atomic_load(&group_calls), 2);
    ctx_group_free(g);
    no_live();
    printf("  ok   group threads: EAGAIN, fn never called, then it runs\n");
}

static void signal_watcher(void)
{
    static const int usr1[] = {SIGUSR1};
    int fds = rel_count_fds();
    REL_CHECK(rel_disposition(SIGUSR1) == SIG_DFL, "SIGUSR1 is not SIG_DFL");
    arm(true);
    errno = 0;
    REL_CHECK(ctx_with_signals(ctx_background(), usr1, 1) == NULL, "made");
    REL_EQ(errno, EAGAIN);
    arm(false);
    REL_CHECK(rel_disposition(SIGUSR1) == SIG_DFL, "handler left installed");
    REL_EQ(rel_count_fds(), fds);
    no_live();

    ctx_t *c = ctx_with_signals(ctx_background(), usr1, 1);
    REL_CHECK(c != NULL, "with_signals: %s", ctx_strerror(errno));
    REL_EQ(raise(SIGUSR1), 0);
    REL_EQ(ctx_wait_until(c, ctx_now() + 10 * CTX_SECOND), CTX_CANCELED);
    REL_EQ(ctx_signal_caught(c), SIGUSR1);
    ctx_release(c);
    printf("  ok   signal watcher: EAGAIN, no handler left, then signals "
           "cancel\n");
}

/* Cond waits when no thread can be started. The wake of a cancelled wait
 * is normally handed to the shared executor (the waiter keeps a worker
 * alive while it waits); with no worker at all the waiter sleeps in bounded
 * slices and the cancel's after-func broadcasts without ever waiting for
 * the mutex: it must not block, whoever holds the mutex, the cancelling
 * thread included (the header allows that). Nothing here depends on how
 * long anything takes: a cancel that blocked would hang, and the alarm
 * ends the test. */
struct box {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    ctx_t *ctx;
    atomic_int waiting, holding, release_mu, done;
    int ret;
};

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void *waiter_main(void *arg)
{
    struct box *b = arg;
    pthread_mutex_lock(&b->mu);
    atomic_store(&b->waiting, 1);
    b->ret = ctx_cond_wait_pred(b->ctx, &b->cond, &b->mu, never, NULL);
    pthread_mutex_unlock(&b->mu);
    atomic_store(&b->done, 1);
    return NULL;
}

static void *holder_main(void *arg)
{
    struct box *b = arg;
    pthread_mutex_lock(&b->mu);
    atomic_store(&b->holding, 1);
    while (!atomic_load(&b->release_mu)) /* until the cancel returned */
        usleep(1000);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void wait_flag(atomic_int *f)
{
    while (!atomic_load(f))
        usleep(1000);
}

/* Starts a waiter while thread starts fail: it finds no executor worker.
 * Returns once the waiter sleeps in the wait (the mutex is free then). */
static pthread_t start_stranded_waiter(struct box *b)
{
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->ctx = ctx_with_cancel(ctx_background());
    REL_CHECK(b->ctx != NULL, "with_cancel");
    int before = atomic_load(&failed_creates);
    arm(true);
    pthread_t w;
    REL_EQ(__real_pthread_create(&w, NULL, waiter_main, b), 0);
    wait_flag(&b->waiting);
    /* Taking mu proves the waiter released it inside the wait. */
    pthread_mutex_lock(&b->mu);
    pthread_mutex_unlock(&b->mu);
    REL_CHECK(atomic_load(&failed_creates) > before,
              "the waiter did not ask for an executor worker");
    return w;
}

static void finish_box(struct box *b, pthread_t w)
{
    REL_EQ(pthread_join(w, NULL), 0);
    REL_EQ(b->ret, CTX_CANCELED);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cond);
    ctx_release(b->ctx);
    no_live();
}

/* Another thread holds the mutex while the context is cancelled. */
static void cond_wake_mutex_busy(void)
{
    struct box b = {0};
    pthread_t w = start_stranded_waiter(&b);
    pthread_t h;
    REL_EQ(__real_pthread_create(&h, NULL, holder_main, &b), 0);
    wait_flag(&b.holding);
    int before = atomic_load(&failed_creates);
    REL_EQ(ctx_cancel(b.ctx), 0); /* returns with mu still held by h */
    REL_CHECK(atomic_load(&failed_creates) > before,
              "the wake was not offered to the executor");
    REL_CHECK(!atomic_load(&b.done), "returned without the mutex");
    arm(false);
    atomic_store(&b.release_mu, 1);
    REL_EQ(pthread_join(h, NULL), 0);
    finish_box(&b, w);
    printf("  ok   cond wait: no thread for the wake, mutex busy: the "
           "cancel does not wait, the waiter wakes\n");
}

/* The cancelling thread itself holds the mutex (issue 9, defect 3: the wake
 * used to lock it in the same thread, a self-deadlock). */
static void cond_wake_canceller_holds_mutex(void)
{
    struct box b = {0};
    pthread_t w = start_stranded_waiter(&b);
    pthread_mutex_lock(&b.mu);
    REL_EQ(ctx_cancel(b.ctx), 0); /* must return: we hold mu */
    REL_CHECK(!atomic_load(&b.done), "returned without the mutex");
    pthread_mutex_unlock(&b.mu);
    arm(false);
    finish_box(&b, w);
    printf("  ok   cond wait: no thread for the wake, the canceller holds "
           "the mutex: no deadlock, the waiter wakes\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    timer_thread(); /* first: no deadline before it in this process */
    group_threads();
    signal_watcher();
    alarm(25); /* a blocked cancel is a failure, not a hang */
    cond_wake_mutex_busy();
    cond_wake_canceller_holds_mutex();
    printf("rel_threadfail: %d thread starts failed on purpose, every "
           "operation reported EAGAIN or coped\n",
           atomic_load(&failed_creates));
    return 0;
}
