/* The notifier: many watched contexts, one wakeup fd (see <ctx/notify.h>).
 *
 * A watch is in one of three states (kept in node_.user):
 *   IDLE    inactive; the library holds nothing of it.
 *   ARMED   its node is started on its context.
 *   QUEUED  done: it sits in the notifier's `incoming` stack (pushed by the
 *           node's function in any thread, link.prev == NULL) or in the
 *           loop's `ready` list (link.prev != NULL). The node's link is
 *           ours once its function has started (or when the context was
 *           done at watch time and the node was never started).
 * Only the loop thread moves a watch to IDLE, and it stops the node first:
 * ctx_after_node_stop() either prevents the function or waits until it has
 * returned, so once the node is stopped no other thread touches the watch.
 * The node's function moves ARMED to QUEUED and is the only code that runs
 * outside the loop thread. An active watch holds its own reference to its
 * context (node_.ctx), which also keeps the node's context alive as
 * ctx_after_node_start() requires.
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
#include <stddef.h>
#include <unistd.h>

enum { W_IDLE = 0, W_ARMED = 1, W_QUEUED = 2 };

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(ctx_notify_watch_t) <= 64,
               "a watch is at most 64 bytes on LP64 (documented in notify.h)");
#endif

typedef ctx_after_link_t link_t;

static ctx_notify_watch_t *of_link(link_t *l)
{
    return (ctx_notify_watch_t *)((char *)l -
                                  offsetof(ctx_notify_watch_t, node_.link));
}

struct ctx_notify {
    _Atomic(link_t *) incoming; /* pushed by the nodes' functions */
    _Atomic uint32_t signalled;
    int rfd, wfd;
    link_t *ready; /* loop thread only, FIFO */
    link_t **ready_tail;
    size_t active; /* loop thread only */
};

static uint32_t state_load(const ctx_notify_watch_t *w)
{
    return __atomic_load_n(&w->node_.user, __ATOMIC_ACQUIRE);
}

static void state_store(ctx_notify_watch_t *w, uint32_t s)
{
    __atomic_store_n(&w->node_.user, s, __ATOMIC_RELEASE);
}

/* Any thread. */
static void push(ctx_notify_t *n, ctx_notify_watch_t *w)
{
    link_t *l = &w->node_.link;
    link_t *head = atomic_load_explicit(&n->incoming, memory_order_relaxed);
    do {
        l->next = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &n->incoming, &head, l, memory_order_seq_cst, memory_order_relaxed));
    if (atomic_load_explicit(&n->signalled, memory_order_seq_cst) == 0 &&
        atomic_exchange_explicit(&n->signalled, 1, memory_order_seq_cst) == 0)
        ctx__fd_signal(n->wfd);
}

/* The node's function: runs in the cancelling thread or the timer thread.
 * Once pushed, the watch may be taken by the loop at once, but not
 * delivered or unwatched before this returns (both stop the node first,
 * which waits for it), and the notifier cannot be freed before either. */
static void on_done(ctx_after_node_t *node)
{
    ctx_notify_watch_t *w =
        (ctx_notify_watch_t *)((char *)node -
                               offsetof(ctx_notify_watch_t, node_));
    ctx_notify_t *n = w->n_;
    state_store(w, W_QUEUED);
    push(n, w);
}

static void ready_append(ctx_notify_t *n, link_t *l)
{
    l->next = NULL;
    l->prev = n->ready_tail;
    *n->ready_tail = l;
    n->ready_tail = &l->next;
}

static void ready_unlink(ctx_notify_t *n, link_t *l)
{
    *l->prev = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    else
        n->ready_tail = l->prev;
    l->next = NULL;
    l->prev = NULL;
}

/* Moves everything pushed so far to the ready list, oldest first. */
static void take_incoming(ctx_notify_t *n)
{
    link_t *s = atomic_exchange_explicit(&n->incoming, NULL,
                                         memory_order_seq_cst);
    link_t *rev = NULL;
    while (s != NULL) {
        link_t *next = s->next;
        s->next = rev;
        rev = s;
        s = next;
    }
    while (rev != NULL) {
        link_t *next = rev->next;
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

/* The node is stopped (or was never started). */
static void clear(ctx_notify_watch_t *w)
{
    w->cb_ = NULL;
    w->n_ = NULL;
    w->node_.link.next = NULL;
    w->node_.link.prev = NULL;
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
    w->n_ = n;
    ctx_retain(ctx); /* rule 2; also keeps the node's context alive */
    state_store(w, W_ARMED);
    int e = ctx_after_node_start(&w->node_, ctx, on_done, CTX_AFTER_NO_INLINE);
    if (e == 0) {
        /* on_done may already have run in another thread: it touches only
         * the link, the state and the notifier. */
        n->active++;
        return 0;
    }
    if (e == CTX_CANCELED || e == CTX_DEADLINE_EXCEEDED) {
        /* Done already: the node was not started (its link is ours, and
         * node_.ctx is set); deliver on the next dispatch. */
        state_store(w, W_QUEUED);
        w->node_.link.prev = NULL;
        n->active++;
        push(n, w);
        return 0;
    }
    ctx_release(ctx);
    clear(w);
    return e;
}

CTX_API bool ctx_notify_unwatch(ctx_notify_watch_t *w)
{
    if (w == NULL || state_load(w) == W_IDLE)
        return false;
    ctx_notify_t *n = w->n_;
    ctx_t *ctx = w->node_.ctx;
    if (!ctx_after_node_stop(&w->node_)) {
        /* on_done has run and returned (or the context was done at watch
         * time): w is queued. */
        if (w->node_.link.prev == NULL)
            take_incoming(n);
        ready_unlink(n, &w->node_.link);
    }
    n->active--;
    clear(w);
    ctx_release(ctx);
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
    link_t *l;
    /* Pop one at a time: a callback may unwatch (unlink) any other. */
    while ((l = n->ready) != NULL) {
        ctx_notify_watch_t *w = of_link(l);
        ready_unlink(n, l);
        /* Waits, rarely, for on_done's last instructions: once it returns
         * no other thread uses w, which the callback may free. */
        (void)ctx_after_node_stop(&w->node_);
        ctx_t *c = w->node_.ctx;
        ctx_notify_cb cb = w->cb_;
        n->active--;
        clear(w); /* inactive before the callback: it may free or reuse w */
        cb(w, c); /* our reference keeps c alive through the call */
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
