/* Portable fallback (CTX_USE_FUTEX=OFF): a parking lot of striped condition
 * variables for futex-style waits, and a pipe for the done fd. */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#ifndef CTX_HAVE_FUTEX

#define PARK_BUCKETS 64

struct park_bucket {
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static struct park_bucket park_table[PARK_BUCKETS];
static pthread_once_t park_once = PTHREAD_ONCE_INIT;

static void park_init_all(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    for (int i = 0; i < PARK_BUCKETS; i++) {
        pthread_mutex_init(&park_table[i].mu, NULL);
        pthread_cond_init(&park_table[i].cv, &attr);
    }
    pthread_condattr_destroy(&attr);
}

static void park_prepare(void)
{
    for (int i = 0; i < PARK_BUCKETS; i++)
        pthread_mutex_lock(&park_table[i].mu);
}

static void park_parent(void)
{
    for (int i = PARK_BUCKETS - 1; i >= 0; i--)
        pthread_mutex_unlock(&park_table[i].mu);
}

static void park_once_init(void)
{
    park_init_all();
    ctx__atfork_register(CTX__FORK_PARK, park_prepare, park_parent,
                         park_init_all);
}

void ctx__platform_init(void)
{
    pthread_once(&park_once, park_once_init);
}

static struct park_bucket *park_bucket(const void *addr)
{
    pthread_once(&park_once, park_once_init);
    /* Fibonacci hashing in 64 bits whatever the pointer width: on a 32-bit
     * target a uintptr_t shifted by 40 would be undefined. */
    uint64_t h = (uint64_t)(uintptr_t)addr;
    h ^= h >> 17;
    h *= UINT64_C(0x9e3779b97f4a7c15);
    return &park_table[(h >> 40) % PARK_BUCKETS];
}

static void park_unlock(void *mu)
{
    pthread_mutex_unlock(mu);
}

/* pthread_cond_wait is a cancellation point: a cancel re-takes the bucket's
 * mutex before the cleanup handlers run, so one of ours gives it back. */
static int park_wait(_Atomic uint32_t *addr, uint32_t expected,
                     ctx_time_t deadline)
{
    /* A past deadline (negative ones included) must not reach
     * pthread_cond_timedwait, which rejects negative fields with EINVAL. */
    if (deadline != CTX_TIME_MAX && deadline <= ctx_now())
        return ETIMEDOUT;
    struct park_bucket *b = park_bucket(addr);
    int r = 0;
    pthread_mutex_lock(&b->mu);
    pthread_cleanup_push(park_unlock, &b->mu);
    if (atomic_load(addr) != expected) {
        r = EAGAIN;
    } else if (deadline == CTX_TIME_MAX) {
        pthread_cond_wait(&b->cv, &b->mu);
    } else {
        struct timespec ts = ctx__timespec(deadline);
        r = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    pthread_cleanup_pop(1);
    return r;
}

int ctx__futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                    ctx_time_t deadline)
{
    /* Not a cancellation point, as a futex is not: the library waits here
     * inside its locks and after-func stops. */
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    int r = park_wait(addr, expected, deadline);
    pthread_setcancelstate(old, NULL);
    return r;
}

int ctx__futex_wait_cancel(_Atomic uint32_t *addr, uint32_t expected,
                           ctx_time_t deadline)
{
    return park_wait(addr, expected, deadline);
}

void ctx__futex_wake_all(_Atomic uint32_t *addr)
{
    struct park_bucket *b = park_bucket(addr);
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void ctx__futex_wake_one(_Atomic uint32_t *addr)
{
    /* A bucket is shared by unrelated addresses: wake them all, each waiter
     * rechecks its own word. */
    ctx__futex_wake_all(addr);
}

int ctx__fd_make(int *wfd)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, O_NONBLOCK);
    }
    *wfd = p[1];
    return p[0];
}

void ctx__fd_signal(int wfd)
{
    char one = 1;
    ssize_t r;
    do {
        r = write(wfd, &one, 1);
    } while (r < 0 && errno == EINTR);
}

void ctx__fd_close(int fd, int wfd)
{
    close(fd);
    if (wfd != fd)
        close(wfd);
}

#endif
