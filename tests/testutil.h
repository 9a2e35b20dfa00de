/* Shared by the unit tests: cmocka, time tolerances, counters. */
#ifndef CTX_TESTUTIL_H
#define CTX_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <ctx.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctx_testing.h"

/* Sanitizers slow everything down; timing tolerances scale with this. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SLOW 4
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SLOW 4
#endif
#endif
#ifndef TU_SLOW
#define TU_SLOW 1
#endif

/* A test whose forked children start threads (the timer thread, the
 * executor's workers) puts TU_TSAN_ALLOW_THREADS_AFTER_FORK; at file scope:
 * ThreadSanitizer otherwise refuses new threads in the child of a
 * multi-threaded process. In other builds it expands to an empty struct
 * declaration, so the `;` after it stays legal at file scope. */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifdef TU_TSAN
#define TU_TSAN_ALLOW_THREADS_AFTER_FORK                                       \
    const char *__tsan_default_options(void);                                  \
    __attribute__((visibility("default"))) const char *__tsan_default_options( \
        void)                                                                  \
    {                                                                          \
        return "die_after_fork=0";                                             \
    }                                                                          \
    struct tu_tsan_allow_threads_after_fork_
#else
#define TU_TSAN_ALLOW_THREADS_AFTER_FORK struct tu_tsan_allow_threads_after_fork_
#endif

/* Generous bound for "promptly" on a loaded 2-core machine. */
#define TU_PROMPT (50 * CTX_MILLISECOND * TU_SLOW)

static inline void tu_sleep(ctx_duration_t d)
{
    struct timespec ts = {(time_t)(d / CTX_SECOND), (long)(d % CTX_SECOND)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Asserts lo <= x <= hi with a readable message (libdill's time_assert). */
#define tu_assert_between(x, lo, hi)                                           \
    do {                                                                       \
        int64_t x_ = (int64_t)(x), lo_ = (int64_t)(lo), hi_ = (int64_t)(hi);   \
        if (x_ < lo_ || x_ > hi_)                                              \
            fail_msg("%s = %lld not in [%lld, %lld]", #x, (long long)x_,       \
                     (long long)lo_, (long long)hi_);                          \
    } while (0)

static inline int tu_count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 2;
}

static inline int tu_open_fds(void)
{
    return tu_count_dir("/proc/self/fd") - 1; /* minus the dir's own fd */
}

static inline int tu_threads(void)
{
    return tu_count_dir("/proc/self/task");
}

/* Every test checks that it left no context alive (debug builds count). */
#ifdef CTX_DEBUG
/* The timer thread may still hold its reference to a context whose deadline
 * has just fired (waiters wake as soon as err is set): give it time. */
#define tu_assert_no_live()                                                    \
    do {                                                                       \
        ctx_time_t end_ = ctx_now() + 10 * CTX_SECOND;                         \
        while ((ctx__live_contexts() != 0 || ctx__live_afters() != 0) &&      \
               ctx_now() < end_)                                               \
            tu_sleep(100 * CTX_MICROSECOND);                                   \
        assert_int_equal(ctx__live_contexts(), 0);                             \
        assert_int_equal(ctx__live_afters(), 0);                               \
    } while (0)
#else
#define tu_assert_no_live() ((void)0)
#endif

static inline pthread_t tu_spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

#endif

/* ---- Appended: thread-state and event helpers (test_after/wait/race/fork).
 * Own include guard so that other appended blocks stay independent. */
#ifndef TU_SYNC_HELPERS
#define TU_SYNC_HELPERS
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel thread id of the calling thread. */
static inline long tu_gettid(void)
{
    return (long)syscall(SYS_gettid);
}

/* The scheduler state letter of one of our threads ('R', 'S', ...), or 0. */
static inline char tu_thread_state(long tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    return (p != NULL && p[1] == ' ') ? p[2] : 0;
}

/* Waits (polling, up to `timeout`) until thread `tid` sleeps in the kernel,
 * i.e. has reached a blocking call. Returns false on timeout. */
static inline bool tu_wait_blocked(long tid, ctx_duration_t timeout)
{
    ctx_time_t end = ctx_now() + timeout;
    for (;;) {
        if (tu_thread_state(tid) == 'S')
            return true;
        if (ctx_now() > end)
            return false;
        tu_sleep(200 * CTX_MICROSECOND);
    }
}

/* A counter with a timed wait for it to reach a value (mutex + condvar on
 * CLOCK_MONOTONIC), for "wait for this to happen" without sleeps. */
typedef struct tu_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long count;
} tu_event_t;

static inline void tu_event_init(tu_event_t *e)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, &a);
    pthread_condattr_destroy(&a);
    e->count = 0;
}

static inline void tu_event_destroy(tu_event_t *e)
{
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
}

static inline void tu_event_add(tu_event_t *e, long d)
{
    pthread_mutex_lock(&e->mu);
    e->count += d;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static inline void tu_event_set(tu_event_t *e)
{
    tu_event_add(e, 1);
}

static inline long tu_event_get(tu_event_t *e)
{
    pthread_mutex_lock(&e->mu);
    long v = e->count;
    pthread_mutex_unlock(&e->mu);
    return v;
}

/* Waits until count >= n or `timeout` passes; returns whether it got there. */
static inline bool tu_event_wait_n(tu_event_t *e, long n, ctx_duration_t timeout)
{
    ctx_time_t end = ctx_now() + timeout;
    struct timespec ts = {(time_t)(end / CTX_SECOND), (long)(end % CTX_SECOND)};
    pthread_mutex_lock(&e->mu);
    while (e->count < n) {
        if (pthread_cond_timedwait(&e->cv, &e->mu, &ts) != 0 && e->count < n &&
            ctx_now() >= end)
            break;
    }
    bool ok = e->count >= n;
    pthread_mutex_unlock(&e->mu);
    return ok;
}

static inline bool tu_event_wait(tu_event_t *e, ctx_duration_t timeout)
{
    return tu_event_wait_n(e, 1, timeout);
}

/* Joins a thread, failing the test if it does not end within `timeout`
 * (a hang is reported instead of blocking the suite). */
static inline void tu_join_within(pthread_t t, ctx_duration_t timeout)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (timeout % CTX_SECOND);
    ts.tv_sec += (time_t)(timeout / CTX_SECOND) + (time_t)(ns / CTX_SECOND);
    ts.tv_nsec = (long)(ns % CTX_SECOND);
    int e = pthread_timedjoin_np(t, NULL, &ts);
    if (e != 0)
        fail_msg("thread did not finish in time (pthread_timedjoin_np: %d)", e);
}

/* A thread that cancels ctx once told to (tu_event_set(&k->go)), for tests
 * that cancel from another thread while a loop runs. It holds its own
 * reference to ctx (a thread uses only contexts it holds) and drops it
 * after the cancel. */
typedef struct tu_canceller {
    ctx_t *ctx;
    tu_event_t go;
    pthread_t t;
} tu_canceller_t;

static inline void *tu_canceller_main_(void *arg)
{
    tu_canceller_t *k = arg;
    assert_true(tu_event_wait(&k->go, 30 * CTX_SECOND));
    ctx_cancel(k->ctx);
    ctx_release(k->ctx);
    return NULL;
}

static inline void tu_canceller_start(tu_canceller_t *k, ctx_t *ctx)
{
    k->ctx = ctx_retain(ctx);
    tu_event_init(&k->go);
    k->t = tu_spawn(tu_canceller_main_, k);
}

static inline void tu_canceller_join(tu_canceller_t *k)
{
    tu_join_within(k->t, 30 * CTX_SECOND);
    tu_event_destroy(&k->go);
}
#endif /* TU_SYNC_HELPERS */

/* ---- Appended: waiting for deferred frees. ---- */
#ifndef TU_SETTLE_HELPER
#define TU_SETTLE_HELPER
/* The timer thread holds a transient reference while it cancels a context
 * whose deadline passed, so a context released right after ctx_wait() saw
 * its deadline may be freed by the timer thread a moment later. Waits (up to
 * 10 s) for the live counters to reach zero; follow with tu_assert_no_live(). */
static inline void tu_settle(void)
{
#ifdef CTX_DEBUG
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while ((ctx__live_contexts() != 0 || ctx__live_afters() != 0) &&
           ctx_now() < end)
        tu_sleep(100 * CTX_MICROSECOND);
#endif
}

/* Resource accounting around a test, as cmocka setup/teardown: a test ends
 * with the fds and threads it started with, and no live context. */
static int tu_fds_before __attribute__((unused));
static int tu_threads_before __attribute__((unused));

/* A joined thread can linger in /proc/self/task for a moment (the kernel
 * wakes the joiner before the task is fully gone): poll up to 1 s. */
static inline int tu_settled_threads(int want)
{
    ctx_time_t end = ctx_now() + CTX_SECOND;
    int n;
    while ((n = tu_threads()) != want && ctx_now() < end)
        tu_sleep(CTX_MILLISECOND / 2);
    return n;
}

/* The same for fds: an in-process test server closes its side of a
 * connection when it sees the client's close, a moment after the client
 * call returned. Polls up to 2 s. */
static inline int tu_settled_fds(int want)
{
    ctx_time_t end = ctx_now() + 2 * CTX_SECOND;
    int n;
    while ((n = tu_open_fds()) != want && ctx_now() < end)
        tu_sleep(CTX_MILLISECOND / 2);
    return n;
}

static inline int tu_count_setup(void **state)
{
    (void)state;
    tu_fds_before = tu_open_fds();
    tu_threads_before = tu_threads();
    return 0;
}

static inline int tu_count_teardown(void **state)
{
    (void)state;
    assert_int_equal(tu_settled_fds(tu_fds_before), tu_fds_before);
    assert_int_equal(tu_settled_threads(tu_threads_before), tu_threads_before);
    tu_assert_no_live();
    return 0;
}

#endif /* TU_SETTLE_HELPER */
