/* Linux: futex waits and eventfd done fds (CTX_USE_FUTEX=ON). */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#ifdef CTX_HAVE_FUTEX

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

int ctx__futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                    ctx_time_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != CTX_TIME_MAX) {
        if (deadline <= ctx_now())
            return ETIMEDOUT;
        ts = ctx__timespec(deadline);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. The
     * result is returned, never left in errno: the library's waits happen
     * inside calls (a lock, a release) that must keep the caller's errno. */
    int saved = errno;
    long r = syscall(SYS_futex, (uint32_t *)addr,
                     FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    int e = r == 0 ? 0 : errno == EWOULDBLOCK ? EAGAIN : errno;
    errno = saved;
    return e;
}

/* Not instrumented by ASan: a cancel unwinds out of this frame from the
 * cancellation signal's handler, and redzones ASan left poisoned here would
 * be reported (falsely) when the unwinding code runs below them. */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize_address)
__attribute__((no_sanitize_address))
#endif
#endif
int ctx__futex_wait_cancel(_Atomic uint32_t *addr, uint32_t expected,
                           ctx_time_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != CTX_TIME_MAX) {
        if (deadline <= ctx_now())
            return ETIMEDOUT;
        ts = ctx__timespec(deadline);
        tsp = &ts;
    }
    /* A futex wait is no cancellation point of the C library: do what it
     * does for its own blocking calls, and accept an asynchronous cancel
     * for the duration of the system call only. */
    int saved = errno, old;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    long r = syscall(SYS_futex, (uint32_t *)addr,
                     FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    int e = r == 0 ? 0 : errno == EWOULDBLOCK ? EAGAIN : errno;
    pthread_setcanceltype(old, NULL);
    errno = saved;
    return e;
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n,
            NULL, NULL, 0);
    errno = saved;
}

void ctx__futex_wake_all(_Atomic uint32_t *addr)
{
    futex_wake(addr, INT_MAX);
}

void ctx__futex_wake_one(_Atomic uint32_t *addr)
{
    futex_wake(addr, 1);
}

void ctx__platform_init(void)
{
}

int ctx__fd_make(int *wfd)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    *wfd = fd;
    return fd;
}

void ctx__fd_signal(int wfd)
{
    uint64_t one = 1;
    /* Nonblocking; it can only fail if the counter would overflow, and it is
     * written once per context. */
    int saved = errno;
    ssize_t r;
    do {
        r = write(wfd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
    errno = saved;
}

void ctx__fd_close(int fd, int wfd)
{
    (void)wfd;
    close(fd);
}


#endif
