/* Platform layer: the clock, futex-style waits, a 4-byte lock, and the
 * done-fd primitive. Linux uses futex and eventfd; with CTX_USE_FUTEX=OFF a
 * portable fallback uses striped condition variables and a pipe. */
#ifndef CTX_PLATFORM_H
#define CTX_PLATFORM_H

#include "ctx.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline struct timespec ctx__timespec(ctx_time_t t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(t / CTX_SECOND);
    ts.tv_nsec = (long)(t % CTX_SECOND);
    return ts;
}

/* Sleeps while *addr == expected, until woken or `deadline` (CTX_TIME_MAX:
 * none). Returns 0 when woken (possibly spuriously), EAGAIN when *addr was
 * not `expected`, ETIMEDOUT at the deadline, EINTR on a signal. */
int ctx__futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                    ctx_time_t deadline);
/* The same wait as a cancellation point: a pthread_cancel() of the caller
 * acts while it sleeps (the caller's cleanup handlers then run). For the
 * waits that the API documents as cancellation points (ctx_wait_until);
 * ctx__futex_wait() itself never acts on a cancellation. */
int ctx__futex_wait_cancel(_Atomic uint32_t *addr, uint32_t expected,
                           ctx_time_t deadline);
/* Wakes every thread sleeping on addr. */
void ctx__futex_wake_all(_Atomic uint32_t *addr);
void ctx__futex_wake_one(_Atomic uint32_t *addr);

/* A 4-byte mutex (0 free, 1 locked, 2 locked with waiters). */
typedef _Atomic uint32_t ctx__lock_t;
void ctx__lock_slow(ctx__lock_t *l);

static inline void ctx__lock(ctx__lock_t *l)
{
    uint32_t free_ = 0;
    if (!atomic_compare_exchange_strong_explicit(
            l, &free_, 1, memory_order_acquire, memory_order_relaxed))
        ctx__lock_slow(l);
}

static inline void ctx__unlock(ctx__lock_t *l)
{
    if (atomic_exchange_explicit(l, 0, memory_order_release) == 2)
        ctx__futex_wake_one(l);
}

/* Sets up the platform layer's fork handlers (the parking lot's slot). */
void ctx__platform_init(void);

/* The library's one fork handler (atfork.c). Each component registers its
 * handlers in its own slot, once, before it takes the locks they guard.
 * prepare runs in slot order (the lock order: outermost first); parent and
 * child run in reverse order. Handlers registered after a fork's prepare
 * are not called for that fork. */
enum ctx__fork_slot {
    CTX__FORK_SIGCTX = 0, /* the signal watcher's mutex */
    CTX__FORK_EXECUTOR,   /* the executor's queue mutex */
    CTX__FORK_TIMER,      /* the timer's start lock, then its shards */
    CTX__FORK_PARK,       /* the fallback's parking lot (innermost) */
    CTX__FORK_NSLOTS
};
void ctx__atfork_register(enum ctx__fork_slot slot, void (*prepare)(void),
                          void (*parent)(void), void (*child)(void));

/* A done fd: returns the fd to poll (and sets *wfd to the end to signal, the
 * same fd for an eventfd), or -1 with errno. */
int ctx__fd_make(int *wfd);
void ctx__fd_signal(int wfd);
void ctx__fd_close(int fd, int wfd);

/* Starts one of the library's own threads with every signal blocked.
 * Returns 0, or EAGAIN when no thread could be started. */
int ctx__thread_start(pthread_t *th, void *(*fn)(void *), void *arg,
                      bool detached);

#endif
