/* Waiting for done: blocking waits on the err word, and the done fd. */
#include "ctx_int.h"

static _Atomic uint32_t never_word; /* never changes: a wait on it is a nap */
static _Atomic int never_fd = -1;

static void waiter_gone(void *node)
{
    ctx_t *s = node;
    atomic_fetch_sub_explicit(&s->u.c.waiters, 1, memory_order_relaxed);
}

CTX_API int ctx_wait_until(ctx_t *c, ctx_time_t until)
{
    if (c == NULL)
        return EINVAL;
    CTX_CHECK(c);
    ctx_t *s = c->src;
    if (s == NULL) {
        /* Never done: sleep until `until` (forever for CTX_TIME_MAX). */
        while (ctx__futex_wait_cancel(&never_word, 0, until) != ETIMEDOUT)
            ;
        return 0;
    }
    int e = ctx__load_err(s);
    if (e != 0)
        return e;
    /* Register under the node's lock: cancel reads waiters under it. */
    ctx__lock(&s->u.c.lock);
    e = ctx__load_err(s);
    if (e == 0)
        atomic_fetch_add_explicit(&s->u.c.waiters, 1, memory_order_relaxed);
    ctx__unlock(&s->u.c.lock);
    if (e != 0)
        return e;
    /* A cancellation point: a pthread_cancel() acts in the sleep, and the
     * cleanup handler takes this waiter off the count. */
    pthread_cleanup_push(waiter_gone, s);
    for (;;) {
        e = ctx__load_err(s);
        if (e != 0)
            break;
        if (ctx__futex_wait_cancel(&s->u.c.err, 0, until) == ETIMEDOUT) {
            e = ctx__load_err(s);
            break;
        }
    }
    pthread_cleanup_pop(1);
    return e;
}

CTX_API int ctx_wait(ctx_t *c)
{
    return ctx_wait_until(c, CTX_TIME_MAX);
}

static int get_never_fd(void)
{
    int fd = atomic_load_explicit(&never_fd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    int wfd;
    fd = ctx__fd_make(&wfd);
    if (fd < 0)
        return -1;
    /* The write end (a pipe's) stays open, so the read end never reports
     * end-of-file. */
    int expected = -1;
    if (!atomic_compare_exchange_strong(&never_fd, &expected, fd)) {
        ctx__fd_close(fd, wfd);
        fd = expected;
    }
    return fd;
}

CTX_API int ctx_done_fd(ctx_t *c)
{
    if (c == NULL) {
        errno = EINVAL;
        return -1;
    }
    CTX_CHECK(c);
    ctx_t *s = c->src;
    if (s == NULL)
        return get_never_fd();
    int fd = atomic_load_explicit(&s->u.c.done_fd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    ctx__lock(&s->u.c.lock);
    fd = atomic_load_explicit(&s->u.c.done_fd, memory_order_relaxed);
    if (fd < 0) {
        int wfd;
        fd = ctx__fd_make(&wfd);
        if (fd < 0) {
            int e = errno;
            ctx__unlock(&s->u.c.lock);
            errno = e;
            return -1;
        }
#ifndef CTX_HAVE_FUTEX
        s->u.c.done_wfd = wfd;
#endif
        /* Cancel signals the fd under this lock, so a done context either
         * was signalled already (no fd then) or is signalled here. */
        if (ctx__load_err(s) != 0)
            ctx__fd_signal(wfd);
        atomic_store_explicit(&s->u.c.done_fd, fd, memory_order_release);
    }
    ctx__unlock(&s->u.c.lock);
    return fd;
}

static int write_end(ctx_t *node)
{
#ifdef CTX_HAVE_FUTEX
    return atomic_load_explicit(&node->u.c.done_fd, memory_order_relaxed);
#else
    return node->u.c.done_wfd;
#endif
}

void ctx__done_signal(ctx_t *node)
{
    ctx__fd_signal(write_end(node));
}

void ctx__done_close(ctx_t *node)
{
    int fd = atomic_load_explicit(&node->u.c.done_fd, memory_order_relaxed);
    if (fd >= 0)
        ctx__fd_close(fd, write_end(node));
}
