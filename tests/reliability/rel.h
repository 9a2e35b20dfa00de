/* Shared helpers of the reliability tests: plain C checks (no framework, so
 * that forked children and libFuzzer can use them), sanitizer detection and
 * small utilities. */
#ifndef CTX_REL_H
#define CTX_REL_H

#include "ctx.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define REL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define REL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define REL_TSAN 1
#endif
#endif
#ifndef REL_ASAN
#define REL_ASAN 0
#endif
#ifndef REL_TSAN
#define REL_TSAN 0
#endif

/* A failed check prints where and what, then aborts (so a core dump or the
 * sanitizer's stack trace shows the state). */
#define REL_CHECK(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__,  \
                    #cond);                                                    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            fflush(stderr);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define REL_EQ(a, b)                                                           \
    do {                                                                       \
        long long rel_a_ = (long long)(a), rel_b_ = (long long)(b);            \
        REL_CHECK(rel_a_ == rel_b_, "%s = %lld, %s = %lld", #a, rel_a_, #b,    \
                  rel_b_);                                                     \
    } while (0)

/* The number of open file descriptors of this process. */
static inline int rel_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static inline void *rel_cancel_main(void *c)
{
    usleep(5000);
    REL_EQ(ctx_cancel((ctx_t *)c), 0);
    return NULL;
}

/* Cancels c from another thread in 5 ms (join the thread returned). */
static inline pthread_t rel_cancel_soon(ctx_t *c)
{
    pthread_t th;
    REL_EQ(pthread_create(&th, NULL, rel_cancel_main, c), 0);
    return th;
}

/* The handler currently installed for sig (SIG_DFL, SIG_IGN or a function). */
static inline void (*rel_disposition(int sig))(int)
{
    struct sigaction sa;
    REL_CHECK(sigaction(sig, NULL, &sa) == 0, "sigaction(%d)", sig);
    return sa.sa_handler;
}

/* An integer from the environment, or `def`. */
static inline long rel_env_long(const char *name, long def)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return def;
    return strtol(s, NULL, 10);
}

#endif
