/* The 4-byte lock's slow path (the fast path is inline in platform.h). */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

void ctx__lock_slow(ctx__lock_t *l)
{
    /* Spin briefly: critical sections are a few dozen instructions. */
    for (int i = 0; i < 64; i++) {
        uint32_t free_ = 0;
        if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(l, &free_, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    /* Drepper's mutex: mark contended, sleep while it stays contended.
     * The wait reports through its return value; errno is the caller's
     * (a lock taken while leaving a CTX_DEFER_CANCEL scope must not change
     * the errno of the call that failed just before). */
    int saved = errno;
    while (atomic_exchange_explicit(l, 2, memory_order_acquire) != 0)
        ctx__futex_wait(l, 2, CTX_TIME_MAX);
    errno = saved;
}
