/* The notifier: many watched contexts, one wakeup fd (see <ctx/notify.h>).
 *
 * A watch is in one of three states:
 *   IDLE    inactive; the library holds nothing of it.
 *   ARMED   an after-func is registered on its context (reg_ != NULL).
 *   QUEUED  done: it sits in the notifier's `incoming` stack (pushed by the
 *           after-func in any thread, pprev_ == NULL) or in the loop's
 *           `ready` list (pprev_ != NULL).
 * Only the loop thread moves a watch to IDLE, and it stops the registration
 * first: ctx_after_stop() either prevents the after-func or waits until it
 * has returned, so once reg_ is stopped no other thread touches the watch.
 * The after-func moves ARMED to QUEUED and is the only code that runs
 * outside the loop thread.
 *
 * Wakeups: `signalled` is 1 while a write to the fd is pending or done and
 * not yet consumed. A producer pushes, then writes the fd only if it turns
 * `signalled` from 0 to 1; dispatch reads the fd, clears `signalled`, then
 * takes the stack. The push and the flag test, and the clear and the take,
 * are sequentially consistent, so a watch pushed after the take always
 * finds the flag clear or set by a producer whose write is still to come:
 * no lost wakeup, and one write per batch. */
#include <ctx/notify.h>

#include "alloc.h"
#include "platform.h"

#include <errno.h>
#include <stdatomic.h>
#include <unistd.h>

enum { W_IDLE = 0, W_ARMED = 1, W_QUEUED = 2 };

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(ctx_notify_watch_t) == 64,
               "a watch is 64 bytes on LP64 (documented in notify.h)");
#endif

struct ctx_notify {
    _Atomic(ctx_notify_watch_t *) incoming; /* pushed by after-funcs */
    _Atomic uint32_t signalled;
    int rfd, wfd;
    ctx_notify_watch_t *ready;        /* loop thread only, FIFO */
    ctx_notify_watch_t **ready_tail;
    size_t active;                    /* loop thread only */
};

static uint32_t state_load(const ctx_notify_watch_t *w)
{
    return __atomic_load_n(&w->state_, __ATOMIC_ACQUIRE);
}

static void state_store(ctx_notify_watch_t *w, uint32_t s)
{
    __atomic_store_n(&w->state_, s, __ATOMIC_RELEASE);
}

/* Any thread. */
static void push(ctx_notify_t *n, ctx_notify_watch_t *w)
{
    ctx_notify_watch_t *head =
        atomic_load_explicit(&n->incoming, memory_order_relaxed);
    do {
        w->next_ = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &n->incoming, &head, w, memory_order_seq_cst, memory_order_relaxed));
    if (atomic_load_explicit(&n->signalled, memory_order_seq_cst) == 0 &&
        atomic_exchange_explicit(&n->signalled, 1, memory_order_seq_cst) == 0)
        ctx__fd_signal(n->wfd);
}

/* The after-func: runs in the cancelling thread or the timer thread. Once
 * pushed, the watch may be delivered (and freed by its callback) at once:
 * after the push only the notifier is touched, and the notifier outlives
 * this call because dispatch and unwatch end the registration (waiting for
 * this function to return) before the notifier can be freed. */
static void on_done(void *arg)
{
    ctx_notify_watch_t *w = arg;
    ctx_notify_t *n = w->n_;
    state_store(w, W_QUEUED);
    push(n, w);
}

static void ready_append(ctx_notify_t *n, ctx_notify_watch_t *w)
{
    w->next_ = NULL;
    w->pprev_ = n->ready_tail;
    *n->ready_tail = w;
    n->ready_tail = &w->next_;
}

static void ready_unlink(ctx_notify_t *n, ctx_notify_watch_t *w)
{
    *w->pprev_ = w->next_;
    if (w->next_ != NULL)
        w->next_->pprev_ = w->pprev_;
    else
        n->ready_tail = w->pprev_;
    w->next_ = NULL;
    w->pprev_ = NULL;
}

/* Moves everything pushed so far to the ready list, oldest first. */
static void take_incoming(ctx_notify_t *n)
{
    ctx_notify_watch_t *s =
        atomic_exchange_explicit(&n->incoming, NULL, memory_order_seq_cst);
    ctx_notify_watch_t *rev = NULL;
    while (s != NULL) {
        ctx_notify_watch_t *next = s->next_;
        s->next_ = rev;
        rev = s;
        s = next;
    }
    while (rev != NULL) {
        ctx_notify_watch_t *next = rev->next_;
        ready_append(n, rev);
        rev = next;
    }
}

static void drain_fd(int fd)
{
    uint64_t buf[8];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < (ssize_t)sizeof buf)
            return; /* eventfd: one read resets it; pipe: drained */
    }
}

static void clear(ctx_notify_watch_t *w)
{
    w->cb_ = NULL;
    w->ctx_ = NULL;
    w->reg_ = NULL;
    w->n_ = NULL;
    w->next_ = NULL;
    w->pprev_ = NULL;
    state_store(w, W_IDLE);
}

CTX_API ctx_notify_t *ctx_notify_new(void)
{
    ctx_notify_t *n = ctx__malloc(sizeof *n);
    if (n == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    int wfd;
    int rfd = ctx__fd_make(&wfd);
    if (rfd < 0) {
        int e = errno;
        ctx__free(n);
        errno = e;
        return NULL;
    }
    atomic_init(&n->incoming, NULL);
    atomic_init(&n->signalled, 0);
    n->rfd = rfd;
    n->wfd = wfd;
    n->ready = NULL;
    n->ready_tail = &n->ready;
    n->active = 0;
    return n;
}

CTX_API int ctx_notify_free(ctx_notify_t *n)
{
    if (n == NULL)
        return 0;
    if (n->active != 0)
        return EBUSY;
    ctx__fd_close(n->rfd, n->wfd);
    ctx__free(n);
    return 0;
}

CTX_API int ctx_notify_fd(const ctx_notify_t *n)
{
    if (n == NULL) {
        errno = EINVAL;
        return -1;
    }
    return n->rfd;
}

CTX_API int ctx_notify_watch(ctx_notify_t *n, ctx_notify_watch_t *w,
                             ctx_t *ctx, ctx_notify_cb cb)
{
    if (n == NULL || w == NULL || ctx == NULL || cb == NULL)
        return EINVAL;
    if (state_load(w) != W_IDLE)
        return EBUSY;
    w->cb_ = cb;
    w->ctx_ = ctx;
    w->n_ = n;
    w->next_ = NULL;
    w->pprev_ = NULL;
    w->reg_ = NULL;
    state_store(w, W_ARMED);
    ctx_after_t *reg =
        ctx_after_func_flags(ctx, on_done, w, CTX_AFTER_NO_INLINE);
    if (reg != NULL) {
        /* on_done may already have run in another thread: it does not read
         * reg_, and only this thread reads it later. */
        w->reg_ = reg;
        n->active++;
        return 0;
    }
    int e = errno;
    if (e == CTX_CANCELED || e == CTX_DEADLINE_EXCEEDED) {
        /* Done already: deliver on the next dispatch, holding our own
         * reference in place of the registration's. */
        ctx_retain(ctx);
        state_store(w, W_QUEUED);
        n->active++;
        push(n, w);
        return 0;
    }
    clear(w);
    return e == EINVAL ? EINVAL : ENOMEM;
}

CTX_API bool ctx_notify_unwatch(ctx_notify_watch_t *w)
{
    if (w == NULL || state_load(w) == W_IDLE)
        return false;
    ctx_notify_t *n = w->n_;
    if (w->reg_ != NULL) {
        if (ctx_after_stop(w->reg_)) {
            /* on_done never ran and never will. */
            n->active--;
            clear(w);
            return true;
        }
        /* on_done has run and returned: w is queued. The registration's
         * reference went with it. */
    } else {
        ctx_release(w->ctx_); /* the reference of a done-at-watch */
    }
    if (w->pprev_ == NULL)
        take_incoming(n);
    ready_unlink(n, w);
    n->active--;
    clear(w);
    return true;
}

CTX_API size_t ctx_notify_dispatch(ctx_notify_t *n)
{
    if (n == NULL)
        return 0;
    drain_fd(n->rfd);
    atomic_store_explicit(&n->signalled, 0, memory_order_seq_cst);
    take_incoming(n);
    size_t ran = 0;
    ctx_notify_watch_t *w;
    /* Pop one at a time: a callback may unwatch (unlink) any other. */
    while ((w = n->ready) != NULL) {
        ready_unlink(n, w);
        ctx_t *c = w->ctx_;
        ctx_notify_cb cb = w->cb_;
        ctx_after_t *reg = w->reg_;
        n->active--;
        clear(w); /* inactive before the callback: it may free or reuse w */
        /* The registration (or, done at watch, our own reference) keeps c
         * alive through the callback. on_done touches only the notifier
         * after its push, so the callback need not wait for it to return;
         * ending the registration afterwards does (rarely: it is a few
         * instructions from its end), so that once dispatch returns no
         * other thread uses the notifier for a delivered watch. */
        cb(w, c);
        if (reg != NULL)
            (void)ctx_after_stop(reg);
        else
            ctx_release(c);
        ran++;
    }
    return ran;
}

CTX_API bool ctx_notify_watching(const ctx_notify_watch_t *w)
{
    return w != NULL && state_load(w) != W_IDLE;
}

CTX_API size_t ctx_notify_active(const ctx_notify_t *n)
{
    return n == NULL ? 0 : n->active;
}
