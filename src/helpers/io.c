/* Blocking helpers that end with a context: every wait is a poll() on the
 * caller's fds plus the context's done fd, bounded by the context's deadline,
 * so cancellation from another thread and the deadline both end it. */
#include "ctx/io.h"

#include "alloc.h"
#include "executor_int.h"
#include "platform.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The error a helper reports once ctx has ended (or its deadline passed
 * before the timer thread got to it). */
static int ended_err(ctx_t *ctx)
{
    int err = ctx_err(ctx);
    return err != 0 ? err : CTX_DEADLINE_EXCEEDED;
}

static int fail(int err)
{
    errno = err;
    return -1;
}

int ctx_sleep(ctx_t *ctx, ctx_duration_t d)
{
    if (ctx == NULL)
        return EINVAL;
    if (ctx_is_done(ctx))
        return ctx_err(ctx);
    if (d <= 0)
        return 0;
    ctx_time_t now = ctx_now();
    ctx_time_t until = d > CTX_TIME_MAX - now ? CTX_TIME_MAX : now + d;
    for (;;) {
        int err = ctx_wait_until(ctx, until);
        if (err != 0)
            return err;
        if (ctx_now() >= until)
            return 0;
    }
}

/* The poll() timeout for the rest of ctx's deadline: -1 (none) or the
 * deadline in a timespec; false once the deadline has passed. */
static bool time_left(ctx_t *ctx, struct timespec *ts, bool *bounded)
{
    ctx_time_t dl;
    *bounded = ctx_deadline(ctx, &dl);
    if (!*bounded)
        return true;
    ctx_time_t left = dl - ctx_now();
    if (left <= 0)
        return false;
    ts->tv_sec = (time_t)(left / CTX_SECOND);
    ts->tv_nsec = (long)(left % CTX_SECOND);
    return true;
}

#define STACK_FDS 16

int ctx_poll(ctx_t *ctx, struct pollfd *fds, nfds_t n)
{
    if (ctx == NULL || (fds == NULL && n > 0))
        return fail(EINVAL);
    if (ctx_is_done(ctx))
        return fail(ctx_err(ctx));
    int dfd = ctx_done_fd(ctx);
    if (dfd < 0)
        return -1; /* errno from ctx_done_fd */

    struct pollfd stack[STACK_FDS + 1];
    struct pollfd *all = stack;
    if (n > STACK_FDS) {
        if (n >= SIZE_MAX / sizeof *all)
            return fail(EINVAL);
        all = ctx__malloc((n + 1) * sizeof *all);
        if (all == NULL)
            return fail(ENOMEM);
    }
    int ret;
    /* ppoll is a cancellation point: a pthread_cancel() frees the copy. */
    pthread_cleanup_push(ctx__free, all != stack ? all : NULL);
    for (;;) {
        for (nfds_t i = 0; i < n; i++) {
            all[i] = fds[i];
            all[i].revents = 0;
        }
        all[n].fd = dfd;
        all[n].events = POLLIN;
        all[n].revents = 0;

        struct timespec ts;
        bool bounded;
        if (!time_left(ctx, &ts, &bounded)) {
            ret = fail(ended_err(ctx));
            break;
        }
        int r = ppoll(all, n + 1, bounded ? &ts : NULL, NULL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            ret = -1;
            break;
        }
        /* Cancellation wins over readiness: once ctx is done, helpers fail,
         * whatever else is ready (Go's select would pick at random). */
        if (all[n].revents != 0 || ctx_is_done(ctx)) {
            ret = fail(ended_err(ctx));
            break;
        }
        if (r == 0)
            continue; /* deadline reached: time_left() reports it */
        int ready = 0;
        for (nfds_t i = 0; i < n; i++) {
            fds[i].revents = all[i].revents;
            if (all[i].revents != 0)
                ready++;
        }
        ret = ready;
        break;
    }
    pthread_cleanup_pop(0);
    if (ret < 0) {
        for (nfds_t i = 0; i < n; i++)
            fds[i].revents = 0;
    }
    if (all != stack) {
        int e = errno;
        ctx__free(all);
        errno = e;
    }
    return ret;
}

int ctx_wait_fd(ctx_t *ctx, int fd, short events)
{
    if (ctx == NULL)
        return fail(EINVAL);
    if (fd < 0)
        return fail(EBADF);
    struct pollfd p = {.fd = fd, .events = events};
    int r = ctx_poll(ctx, &p, 1);
    if (r < 0)
        return -1;
    if (p.revents & POLLNVAL)
        return fail(EBADF);
    return p.revents;
}

/* Whether fd is a socket: recv/send with MSG_DONTWAIT never block then. */
static bool is_socket(int fd)
{
    int type;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
}

static bool transient(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

ssize_t ctx_read(ctx_t *ctx, int fd, void *buf, size_t n)
{
    if (ctx == NULL || (buf == NULL && n > 0))
        return fail(EINVAL);
    if (fd < 0)
        return fail(EBADF);
    bool sock = is_socket(fd);
    for (;;) {
        if (ctx_is_done(ctx))
            return fail(ctx_err(ctx));
        if (n == 0) /* read(2) checks the fd even then */
            return fcntl(fd, F_GETFD) < 0 ? -1 : 0;
        if (sock) {
            /* Try first: data already there costs no poll. */
            ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
            if (r >= 0)
                return r;
            if (!transient(errno))
                return -1;
        }
        if (ctx_wait_fd(ctx, fd, POLLIN) < 0)
            return -1;
        if (sock)
            continue;
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        if (!transient(errno))
            return -1;
    }
}

ssize_t ctx_write_all(ctx_t *ctx, int fd, const void *buf, size_t n,
                      size_t *written)
{
    size_t done = 0;
    if (written != NULL)
        *written = 0;
    /* n must fit the ssize_t the call returns. */
    if (ctx == NULL || (buf == NULL && n > 0) || n > SSIZE_MAX)
        return fail(EINVAL);
    if (fd < 0)
        return fail(EBADF);
    bool sock = is_socket(fd);
    int fl = fcntl(fd, F_GETFL);
    struct stat st;
    if (fl < 0 || fstat(fd, &st) < 0)
        return -1;
    /* A blocking fd is written only after POLLOUT. A blocking pipe write of
     * more than PIPE_BUF bytes waits until all is written, while after
     * POLLOUT PIPE_BUF bytes always fit: write no more than that at once. */
    bool blocking = !sock && !(fl & O_NONBLOCK);
    size_t chunk = blocking && !S_ISREG(st.st_mode) ? PIPE_BUF : SSIZE_MAX;
    const char *p = buf;
    ssize_t ret = (ssize_t)n;
    if (ctx_is_done(ctx))
        ret = fail(ctx_err(ctx));
    while (ret >= 0 && done < n) {
        if (ctx_is_done(ctx)) {
            ret = fail(ctx_err(ctx));
            break;
        }
        if (blocking && ctx_wait_fd(ctx, fd, POLLOUT) < 0) {
            ret = -1;
            break;
        }
        size_t want = n - done < chunk ? n - done : chunk;
        ssize_t r = sock ? send(fd, p + done, want, MSG_DONTWAIT | MSG_NOSIGNAL)
                         : write(fd, p + done, want);
        if (r >= 0) {
            done += (size_t)r;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            ret = -1;
            break;
        }
        if (!blocking && ctx_wait_fd(ctx, fd, POLLOUT) < 0) {
            ret = -1;
            break;
        }
    }
    if (written != NULL)
        *written = done;
    return ret;
}

/* connect() on the non-blocking fd. A Unix-domain listener whose backlog is
 * full makes it fail with EAGAIN where a blocking connect would wait for
 * room; poll() cannot tell when there is room, so retry, backing off from
 * 50 us to 5 ms, until it is there or ctx ends. */
static int start_connect(ctx_t *ctx, int fd, const struct sockaddr *addr,
                        socklen_t addrlen)
{
    ctx_duration_t pause = 50 * CTX_MICROSECOND;
    for (;;) {
        if (connect(fd, addr, addrlen) == 0)
            return 0;
        if (errno != EAGAIN || addr->sa_family != AF_UNIX)
            return -1;
        int err = ctx_sleep(ctx, pause);
        if (err != 0)
            return fail(err);
        if (pause < 5 * CTX_MILLISECOND)
            pause *= 2;
    }
}

struct restore_fl {
    int fd, fl;
};

/* Puts back a blocking socket's mode, keeping errno. */
static void restore_flags(void *arg)
{
    struct restore_fl *r = arg;
    if (!(r->fl & O_NONBLOCK)) {
        int e = errno;
        (void)fcntl(r->fd, F_SETFL, r->fl);
        errno = e;
    }
}

int ctx_connect(ctx_t *ctx, int fd, const struct sockaddr *addr,
                socklen_t addrlen)
{
    if (ctx == NULL || addr == NULL)
        return fail(EINVAL);
    if (fd < 0)
        return fail(EBADF);
    if (ctx_is_done(ctx))
        return fail(ctx_err(ctx));
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int ret = 0;
    /* The waits are cancellation points: a pthread_cancel() puts the
     * blocking mode back. */
    struct restore_fl r = {fd, fl};
    pthread_cleanup_push(restore_flags, &r);
    if (start_connect(ctx, fd, addr, addrlen) < 0) {
        /* EINTR: the connection goes on asynchronously, as EINPROGRESS. */
        if (errno != EINPROGRESS && errno != EINTR) {
            ret = -1;
        } else if (ctx_wait_fd(ctx, fd, POLLOUT) < 0) {
            ret = -1;
        } else {
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
                ret = -1;
            else if (soerr != 0)
                ret = fail(soerr);
        }
    }
    pthread_cleanup_pop(1);
    return ret;
}

int ctx_accept(ctx_t *ctx, int fd, struct sockaddr *addr, socklen_t *addrlen,
               int flags)
{
    if (ctx == NULL || (addr != NULL && addrlen == NULL))
        return fail(EINVAL);
    if (fd < 0)
        return fail(EBADF);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    bool nonblock = (fl & O_NONBLOCK) != 0;
    for (;;) {
        if (ctx_is_done(ctx))
            return fail(ctx_err(ctx));
        /* On a blocking listener accept only after poll said readable. */
        if (!nonblock && ctx_wait_fd(ctx, fd, POLLIN) < 0)
            return -1;
        socklen_t len0 = addrlen != NULL ? *addrlen : 0;
        int c = accept4(fd, addr, addrlen, flags);
        if (c >= 0)
            return c;
        if (addrlen != NULL)
            *addrlen = len0;
        if (!transient(errno) && errno != ECONNABORTED && errno != EPROTO)
            return -1;
        if (nonblock && errno != EINTR && ctx_wait_fd(ctx, fd, POLLIN) < 0)
            return -1;
    }
}

/* ---- condition variables ------------------------------------------------ */

/* A cancelled wait is woken by a broadcast of cond. Only a broadcast made
 * with mu held is sure to reach the waiter (else it could fall between the
 * waiter's check of ctx and its sleep), but the after-func that learns of
 * the cancellation runs in whichever thread cancelled, possibly holding mu
 * itself, or in the timer thread that serves every deadline of the process:
 * it must never wait for mu, nor spin on it. So it hands the broadcast to
 * the shared executor, whose worker takes mu, however long that takes.
 *
 * The waiter pins the executor (a worker exists for as long as it waits),
 * so that handing over cannot fail for want of a thread. If no worker could
 * be started at all, the waiter sleeps in bounded slices instead, and the
 * after-func broadcasts without waiting: under mu if mu is free, else
 * without it (which wakes a waiter already asleep; one that was between its
 * check and its sleep sees ctx done at the end of its slice). */

enum { WAKE_NONE = 0, WAKE_QUEUED = 1, WAKE_DONE = 2 };

/* The degraded mode's slice, when no wake can be handed to a thread. */
#define COND_SLICE (10 * CTX_MILLISECOND)

struct cond_waker {
    ctx_task_t task; /* first: the executor's task is the waker */
    pthread_mutex_t *mu;
    pthread_cond_t *cond;
    _Atomic uint32_t state; /* WAKE_*: the task's progress (futex word) */
};

/* On an executor worker: may block on mu. */
static void wake_task(ctx_task_t *t)
{
    struct cond_waker *w = (struct cond_waker *)t;
    pthread_mutex_lock(w->mu);
    pthread_cond_broadcast(w->cond);
    pthread_mutex_unlock(w->mu);
    /* The last touch of w: once it reads DONE, the waiter returns. The
     * wake below only names the address. */
    atomic_store_explicit(&w->state, WAKE_DONE, memory_order_release);
    ctx__futex_wake_all(&w->state);
}

/* The after-func, in the cancelling thread or the timer thread: never
 * blocks. */
static void cond_wake(void *arg)
{
    struct cond_waker *w = arg;
    atomic_store_explicit(&w->state, WAKE_QUEUED, memory_order_relaxed);
    if (ctx_executor_submit(&w->task) == 0)
        return;
    atomic_store_explicit(&w->state, WAKE_NONE, memory_order_relaxed);
    if (pthread_mutex_trylock(w->mu) == 0) {
        pthread_cond_broadcast(w->cond);
        pthread_mutex_unlock(w->mu);
    } else {
        pthread_cond_broadcast(w->cond);
    }
}

struct cond_state {
    struct cond_waker w;
    ctx_after_t *reg;
    bool pinned;
    bool released_mu; /* mu was let go while a queued wake finished */
};

/* Ends the registration; with mu held on entry and on return. After it, no
 * cond_wake and no wake_task runs or will run for this wait. Also the
 * cleanup handler of a pthread_cancel() in the wait (the C library takes mu
 * again before running it, and the caller's own handlers expect it held). */
static void cond_finish(void *arg)
{
    struct cond_state *st = arg;
    /* Waits for a running cond_wake, which never needs mu. */
    ctx_after_stop(st->reg);
    if (atomic_load_explicit(&st->w.state, memory_order_acquire) ==
        WAKE_QUEUED) {
        /* The task needs mu: let go of it until the task is over. */
        pthread_mutex_unlock(st->w.mu);
        while (atomic_load_explicit(&st->w.state, memory_order_acquire) ==
               WAKE_QUEUED)
            ctx__futex_wait(&st->w.state, WAKE_QUEUED, CTX_TIME_MAX);
        pthread_mutex_lock(st->w.mu);
        st->released_mu = true;
    }
    if (st->pinned)
        ctx__executor_unpin();
}

#define RETRY (-1)

/* One sleep on cond, bounded by a slice in the degraded mode. Returns 0 when
 * woken, ETIMEDOUT at the end of a slice. */
static int cond_sleep(struct cond_state *st)
{
    if (st->pinned)
        return pthread_cond_wait(st->w.cond, st->w.mu);
    /* The slice on CLOCK_MONOTONIC, whatever clock cond was made with. */
    struct timespec ts = ctx__timespec(ctx_now() + COND_SLICE);
    int e = pthread_cond_clockwait(st->w.cond, st->w.mu, CLOCK_MONOTONIC, &ts);
    return e == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* One wait with mu held; pred may be NULL (plain wait). With pred, RETRY
 * means: pred is false again and ctx is live, wait once more. */
static int cond_wait(ctx_t *ctx, pthread_cond_t *cond, pthread_mutex_t *mu,
                     bool (*pred)(void *), void *arg)
{
    if (ctx == NULL || cond == NULL || mu == NULL)
        return EINVAL;
    if (pred != NULL && pred(arg))
        return 0;
    if (ctx_is_done(ctx))
        return ctx_err(ctx);
    if (ctx_is_never_done(ctx)) {
        /* Nothing will ever need waking: a plain wait, no registration,
         * no executor worker kept (pthread_cond_wait is the cancellation
         * point, with nothing of ours to undo). */
        int e = pthread_cond_wait(cond, mu);
        if (e != 0)
            return e;
        return pred == NULL || pred(arg) ? 0 : RETRY;
    }

    struct cond_state st = {
        .w = {.task = {.fn = wake_task}, .mu = mu, .cond = cond}};
    st.pinned = ctx__executor_pin() == 0;
    /* Never inline: when ctx is done already, we hold mu and return. */
    st.reg = ctx_after_func_flags(ctx, cond_wake, &st.w, CTX_AFTER_NO_INLINE);
    if (st.reg == NULL) {
        int e = errno;
        if (st.pinned)
            ctx__executor_unpin();
        return ctx_is_done(ctx) ? ctx_err(ctx) : e != 0 ? e : ENOMEM;
    }

    /* From here a cancellation runs cond_wake, whose broadcast is made with
     * mu held: it cannot fall between our check and our sleep, since we hold
     * mu until pthread_cond_wait releases it. pthread_cond_wait is a
     * cancellation point: cond_finish then unregisters. */
    pthread_cleanup_push(cond_finish, &st);
    while (!ctx_is_done(ctx)) {
        if (cond_sleep(&st) == ETIMEDOUT)
            continue;
        if (pred == NULL || pred(arg))
            break;
    }
    pthread_cleanup_pop(1);
    if (pred != NULL && pred(arg))
        return 0;
    if (ctx_is_done(ctx))
        return ctx_err(ctx);
    /* Plain wait: woken by the program. With pred: mu was let go while a
     * wake finished, and another thread may have taken what pred saw. */
    return pred == NULL ? 0 : RETRY;
}

int ctx_cond_wait(ctx_t *ctx, pthread_cond_t *cond, pthread_mutex_t *mu)
{
    return cond_wait(ctx, cond, mu, NULL, NULL);
}

int ctx_cond_wait_pred(ctx_t *ctx, pthread_cond_t *cond, pthread_mutex_t *mu,
                       bool (*pred)(void *arg), void *arg)
{
    if (pred == NULL)
        return EINVAL;
    int err;
    while ((err = cond_wait(ctx, cond, mu, pred, arg)) == RETRY)
        ;
    return err;
}
