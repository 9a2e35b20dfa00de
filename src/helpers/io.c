/* Blocking helpers that end with a context: every wait is a poll() on the
 * caller's fds plus the context's done fd, bounded by the context's deadline,
 * so cancellation from another thread and the deadline both end it. */
#include "ctx/io.h"

#include "alloc.h"

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
    if (!(fl & O_NONBLOCK)) {
        int e = errno;
        (void)fcntl(fd, F_SETFL, fl);
        errno = e;
    }
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

struct cond_waker {
    pthread_mutex_t *mu;
    pthread_cond_t *cond;
    pthread_t owner;     /* the waiting thread */
    _Atomic int inline_; /* registering: an inline run must not lock mu */
    bool deferred;       /* a thread was started to deliver the wake */
    pthread_t thread;    /* that thread, joined by the waiter */
};

/* About 50-100 us of yielding before a thread is started instead. */
#define COND_WAKE_TRIES 64

static void deliver_wake(struct cond_waker *w)
{
    pthread_mutex_lock(w->mu);
    pthread_cond_broadcast(w->cond);
    pthread_mutex_unlock(w->mu);
}

static void *deferred_wake_main(void *arg)
{
    deliver_wake(arg);
    return NULL;
}

/* The after-func. A broadcast can only be sure to reach the waiter with mu
 * held (else it could fall between the waiter's check and its wait), but
 * this runs in whichever thread cancelled, or in the timer thread that
 * serves every deadline of the process: it must not block on a mutex the
 * program may hold for long, or hold itself. So it takes mu only if it is
 * free (trying for a few scheduler rounds: when a cancel wakes many waiters
 * of one mutex, they hold it only briefly), and otherwise hands the
 * broadcast to a short-lived thread, which the waiter joins. Only if no
 * thread can be started does it block on mu. */
static void cond_wake(void *arg)
{
    struct cond_waker *w = arg;
    /* ctx_after_func() runs fn before returning when ctx is already done;
     * the waiter holds mu then, and sees ctx done right after. */
    if (atomic_load(&w->inline_) && pthread_equal(pthread_self(), w->owner))
        return;
    for (int i = 0; i < COND_WAKE_TRIES; i++) {
        if (pthread_mutex_trylock(w->mu) == 0) {
            pthread_cond_broadcast(w->cond);
            pthread_mutex_unlock(w->mu);
            return;
        }
        sched_yield();
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    w->deferred = pthread_create(&w->thread, NULL, deferred_wake_main, w) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!w->deferred)
        deliver_wake(w);
}

#define RETRY (-1)

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

    struct cond_waker w = {.mu = mu, .cond = cond, .owner = pthread_self()};
    atomic_store(&w.inline_, 1);
    ctx_after_t *reg = ctx_after_func(ctx, cond_wake, &w);
    atomic_store(&w.inline_, 0);
    if (reg == NULL)
        return errno != 0 ? errno : ENOMEM;

    /* From here a cancellation in another thread runs cond_wake, which
     * broadcasts with mu held: it cannot fall between our check and our
     * wait, since we hold mu until pthread_cond_wait releases it. */
    while (!ctx_is_done(ctx)) {
        pthread_cond_wait(cond, mu);
        if (pred == NULL || pred(arg))
            break;
    }
    /* ctx_after_stop() waits for a running cond_wake, and a deferred wake
     * needs mu: let go of it until both are over. After the stop, w is ours
     * again (the stop synchronises with the end of cond_wake). */
    pthread_mutex_unlock(mu);
    ctx_after_stop(reg);
    if (w.deferred)
        pthread_join(w.thread, NULL);
    pthread_mutex_lock(mu);
    if (pred != NULL && pred(arg))
        return 0;
    if (ctx_is_done(ctx))
        return ctx_err(ctx);
    /* Plain wait: woken by the program. With pred: another thread may have
     * taken what pred saw while mu was free. */
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
