/* Platform layer: see platform.h. */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

CTX_API ctx_time_t ctx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ctx_time_t)ts.tv_sec * CTX_SECOND + ts.tv_nsec;
}

static struct timespec to_timespec(ctx_time_t t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(t / CTX_SECOND);
    ts.tv_nsec = (long)(t % CTX_SECOND);
    return ts;
}

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
        ts = to_timespec(deadline);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
    long r = syscall(SYS_futex, (uint32_t *)addr,
                     FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    return errno == EWOULDBLOCK ? EAGAIN : errno;
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n,
            NULL, NULL, 0);
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
    ssize_t r;
    do {
        r = write(wfd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
}

void ctx__fd_close(int fd, int wfd)
{
    (void)wfd;
    close(fd);
}

#else /* portable fallback: a parking lot of striped condition variables */

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
    pthread_atfork(park_prepare, park_parent, park_init_all);
}

void ctx__platform_init(void)
{
    pthread_once(&park_once, park_once_init);
}

static struct park_bucket *park_bucket(const void *addr)
{
    pthread_once(&park_once, park_once_init);
    uintptr_t h = (uintptr_t)addr;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ull;
    return &park_table[(h >> 40) % PARK_BUCKETS];
}

int ctx__futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                    ctx_time_t deadline)
{
    /* A past deadline (negative ones included) must not reach
     * pthread_cond_timedwait, which rejects negative fields with EINVAL. */
    if (deadline != CTX_TIME_MAX && deadline <= ctx_now())
        return ETIMEDOUT;
    struct park_bucket *b = park_bucket(addr);
    int r = 0;
    pthread_mutex_lock(&b->mu);
    if (atomic_load(addr) != expected) {
        r = EAGAIN;
    } else if (deadline == CTX_TIME_MAX) {
        pthread_cond_wait(&b->cv, &b->mu);
    } else {
        struct timespec ts = to_timespec(deadline);
        r = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    pthread_mutex_unlock(&b->mu);
    return r;
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
    /* Drepper's mutex: mark contended, sleep while it stays contended. */
    while (atomic_exchange_explicit(l, 2, memory_order_acquire) != 0)
        ctx__futex_wait(l, 2, CTX_TIME_MAX);
}
