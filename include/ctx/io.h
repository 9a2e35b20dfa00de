/*
 * libctx blocking helpers: sleep, fd readiness, read, write-all, connect,
 * accept and condition-variable waits that end when a context ends.
 *
 * Rules shared by every function of this header, stated once:
 *
 *  - Prompt return. Each call returns within a few milliseconds of its
 *    context being cancelled (from any thread) or of its deadline passing.
 *    A context that is already done makes the call fail at once, before any
 *    I/O is attempted.
 *  - Errors. The fd-style helpers (ctx_poll .. ctx_accept) return -1 and set
 *    errno; the others return 0 or an error number (pthread style). When the
 *    context ends the error is ctx_err() of the context: CTX_CANCELED
 *    (ECANCELED) or CTX_DEADLINE_EXCEEDED (ETIMEDOUT); ctx_cause() tells why.
 *    NULL arguments give EINVAL and a negative or closed fd gives EBADF;
 *    nothing crashes, prints or aborts.
 *  - EINTR. A signal caught while a helper waits never surfaces as EINTR:
 *    the helper recomputes its deadline and waits again. To stop a wait on a
 *    signal, wait on a context made by ctx_with_signals() (ctx/sigctx.h),
 *    which the library cancels when the signal arrives. Do not call
 *    ctx_cancel() in a signal handler: it takes locks and is not
 *    async-signal-safe (see "Signal handlers" in ctx.h).
 *  - Resources. The fd helpers use the context's done fd (ctx_done_fd(),
 *    made once per context and owned by it) and no other fd, thread or
 *    lasting allocation; if that fd cannot be made they fail with its errno
 *    (EMFILE, ENFILE, ENOMEM). ctx_cond_wait*() allocate one after-func
 *    registration per call and free it before returning.
 *  - Blocking fds. The helpers work on blocking and non-blocking fds alike.
 *    On connected sockets they never block outside poll(). On a blocking
 *    pipe or tty shared by several readers (or writers), another thread may
 *    take the data between poll() and read(), and on a blocking listening
 *    socket shared by several acceptors another thread may take the
 *    connection between poll() and accept4() (which then blocks until the
 *    next connection, whatever the context); make such fds O_NONBLOCK to
 *    keep the prompt return guarantee.
 *  - Threads. Every function may be called from any thread; the context is
 *    borrowed for the duration of the call.
 *  - pthread_cancel(). Every blocking function here is a cancellation point
 *    (ctx_sleep, ctx_poll, ctx_wait_fd, ctx_read, ctx_write_all,
 *    ctx_connect, ctx_accept, ctx_cond_wait*): a deferred cancel acts while
 *    the call waits. Cleanup handlers then undo what the call set up (the
 *    cond wait's registration, ctx_poll's copy of the fds, ctx_connect's
 *    switch to non-blocking), so the context, the fds and the mutex stay
 *    usable by other threads. A cancelled ctx_cond_wait*() holds `mu` when
 *    the caller's own cleanup handlers run, as pthread_cond_wait() does.
 *    How much ctx_read/ctx_write_all transferred before the cancel is not
 *    reported.
 */
#ifndef CTX_IO_H
#define CTX_IO_H

#include <ctx.h>

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Go's  select { case <-time.After(d): case <-ctx.Done(): }
 * Sleeps for `d` ns or until ctx is done, whichever comes first. Returns 0
 * after the full duration, else ctx_err(ctx) (ETIMEDOUT when ctx's deadline
 * falls inside the sleep). A zero or negative d only checks ctx. EINVAL for
 * a NULL ctx. */
CTX_API int ctx_sleep(ctx_t *ctx, ctx_duration_t d);

/* poll(2) that also ends when ctx is done. Waits until one of fds[0..n) is
 * ready (fds[i].revents set as poll does) and returns the number of entries
 * with revents, or -1 with errno: ctx_err(ctx) when ctx is done or its
 * deadline passes first (revents all 0), EINVAL (NULL ctx, NULL fds with n
 * > 0), ENOMEM (n > 16 and no memory), or poll's own errors. A negative fd
 * is ignored, as poll does; a closed fd reports POLLNVAL. Never times out
 * on its own: bound the wait with a deadline on ctx. */
CTX_API int ctx_poll(ctx_t *ctx, struct pollfd *fds, nfds_t n);

/* Waits until `fd` is ready for `events` (POLLIN, POLLOUT, POLLRDHUP ...) or
 * ctx is done. Returns the revents (> 0; POLLHUP and POLLERR count as ready)
 * or -1 with errno: ctx_err(ctx), EBADF (negative or closed fd), EINVAL. */
CTX_API int ctx_wait_fd(ctx_t *ctx, int fd, short events);

/* read(2) that honours ctx: waits until fd is readable, then reads at most
 * `n` bytes once. Returns the count (0 at end of file, or when n is 0 and
 * ctx is live) or -1 with errno: ctx_err(ctx) when ctx ended before any byte
 * was read, EBADF, EINVAL, or read's own errors. A short count is normal. */
CTX_API ssize_t ctx_read(ctx_t *ctx, int fd, void *buf, size_t n);

/* Writes all `n` bytes of buf to fd, looping over short writes, waiting for
 * POLLOUT as needed. Returns n, or -1 with errno: ctx_err(ctx) when ctx ended
 * first, EBADF, EINVAL, EPIPE, or write's own errors. In every case, if
 * `written` is not NULL, it receives the number of bytes written before the
 * return, so a caller can tell how far a cancelled write got. Sockets are
 * written with MSG_NOSIGNAL (EPIPE instead of SIGPIPE); for a pipe whose
 * reader is gone, SIGPIPE is raised as by write(2) unless it is ignored. */
CTX_API ssize_t ctx_write_all(ctx_t *ctx, int fd, const void *buf, size_t n,
                              size_t *written);

/* connect(2) that honours ctx. The socket may be blocking: it is switched to
 * non-blocking for the call and restored before returning. Returns 0 or -1
 * with errno: ctx_err(ctx) when ctx ended first, connect's own errors
 * (ECONNREFUSED, ENETUNREACH ...), EBADF, EINVAL. A Unix-domain listener
 * with a full backlog is waited for, as a blocking connect(2) does (by
 * retrying, since poll cannot tell when there is room). After a failure the
 * state of the socket is unspecified (a connection may be in progress):
 * close it. */
CTX_API int ctx_connect(ctx_t *ctx, int fd, const struct sockaddr *addr,
                        socklen_t addrlen);

/* accept4(2) that honours ctx: waits for a connection on the listening
 * socket fd, then accepts it with `flags` (SOCK_CLOEXEC, SOCK_NONBLOCK).
 * Returns the new fd (owned by the caller) or -1 with errno: ctx_err(ctx)
 * when ctx ended first, EBADF, EINVAL, or accept's own errors. Transient
 * errors (EAGAIN after a race with another acceptor, ECONNABORTED, EINTR)
 * are retried. A listener shared by several accepting threads must be
 * O_NONBLOCK (see "Blocking fds" above). addr and addrlen are as for accept(2) and may be NULL. */
CTX_API int ctx_accept(ctx_t *ctx, int fd, struct sockaddr *addr,
                       socklen_t *addrlen, int flags);

/* pthread_cond_wait() that also wakes when ctx is done.
 * The caller holds `mu` (a normal, non-recursive mutex that `cond` is used
 * with); it is held again when the call returns. Returns 0 when woken by a
 * signal or broadcast on cond (or spuriously: re-check your predicate, as
 * with pthread_cond_wait), ctx_err(ctx) when ctx is done, ENOMEM, or EINVAL
 * (NULL argument). Waking on cancellation works by an after-func that
 * broadcasts `cond` with `mu` held, so `mu` must stay valid and usable by
 * other threads for the duration of the call. The after-func never waits
 * for `mu`: it hands the broadcast to the shared executor (ctx/executor.h),
 * whose worker takes `mu`; the call waits for that hand-over to finish
 * before returning. So the cancelling thread may hold `mu`, and the timer
 * thread is never held up. The waiter keeps an executor worker alive while
 * it waits; if no thread can be started at all, it sleeps in 10 ms slices
 * and wakes within one slice of the cancellation. Bound the wait with a
 * deadline on ctx (ctx_with_timeout) for a timed wait.
 */
CTX_API int ctx_cond_wait(ctx_t *ctx, pthread_cond_t *cond,
                          pthread_mutex_t *mu);

/* C++20's condition_variable_any::wait(lock, stop_token, pred): waits on
 * cond until pred(arg) is true or ctx is done, whichever comes first. pred is
 * called with `mu` held, before the first wait and after every wake-up; it
 * must not block. Returns 0 when pred(arg) returned true (even if ctx is
 * done too: the predicate wins, as in C++), else ctx_err(ctx), ENOMEM or
 * EINVAL. Same rules as ctx_cond_wait() for mu.
 * This is the C form of Go's
 *     select { case r := <-results: ...; case <-ctx.Done(): ... }  */
CTX_API int ctx_cond_wait_pred(ctx_t *ctx, pthread_cond_t *cond,
                               pthread_mutex_t *mu, bool (*pred)(void *arg),
                               void *arg);

#ifdef __cplusplus
}
#endif

#endif /* CTX_IO_H */
