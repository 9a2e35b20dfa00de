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
#define tu_assert_no_live()                                                    \
    do {                                                                       \
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
