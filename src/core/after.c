/* After-funcs (Go's AfterFunc).
 *
 * A registration is linked in the list of the node holding its context's
 * cancel state. Cancel moves it, under that node's lock, to a run list and
 * runs it once every lock is dropped. Its memory has two owners while it sits
 * in a run list: the user (until ctx_after_stop) and the run list (until fn
 * has returned or been skipped); `refs` counts them and the last frees it.
 * `state` decides the race between starting fn and stopping it.
 *
 * Intrusive nodes (ctx_after_node_t) share the node's list but have no
 * owner count: the run list never outlives them because a stop of a node
 * sitting in a run list waits until the cancelling thread has passed it.
 * That wait is short: nodes run before every registration of the same
 * cancellation, and their fns are short and never stop other nodes. The
 * runner reads a node's link before starting fn (fn may then reuse it) and
 * touches only the state word afterwards. */
#include "alloc.h"
#include "ctx_int.h"

#include <stddef.h>
#include <string.h>

enum { CTX_AFTER_RUNNING_WAITED = 4 }; /* running, and a stop sleeps on it */

static _Thread_local char thread_marker;

static uintptr_t self_id(void)
{
    return (uintptr_t)&thread_marker;
}

static void after_free(struct ctx_after *a)
{
#ifdef CTX_DEBUG
    ctx__live_add(&ctx__n_afters, -1);
    memset(a, 0xdb, sizeof *a);
#endif
    ctx__free(a);
}

static void after_unref(struct ctx_after *a)
{
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        after_free(a);
}

static void run_one(struct ctx_after *a)
{
    atomic_store_explicit(&a->runner, self_id(), memory_order_relaxed);
    uint32_t s = CTX_AFTER_PENDING;
    if (atomic_compare_exchange_strong_explicit(&a->state, &s,
                                                CTX_AFTER_RUNNING,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
        a->fn(a->arg);
        if (atomic_exchange_explicit(&a->state, CTX_AFTER_FINISHED,
                                     memory_order_acq_rel) ==
            CTX_AFTER_RUNNING_WAITED)
            ctx__futex_wake_all(&a->state);
    }
    after_unref(a);
}

_Static_assert(offsetof(struct ctx_after, l) == 0 &&
                   offsetof(ctx_after_node_t, link) == 0 &&
                   offsetof(struct ctx_after, state) ==
                       offsetof(ctx_after_node_t, state_),
               "registrations and nodes share the list and the state word");
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(ctx_after_node_t) == 40, "a node is 40 bytes on LP64");
#endif

enum {
    N_IDLE = 0,
    N_LINKED = CTX_AFTER_NODE_BIT | 1,  /* in the context's list */
    N_QUEUED = CTX_AFTER_NODE_BIT | 2,  /* in a run list */
    N_RUNNING = CTX_AFTER_NODE_BIT | 3,
    N_RUNNING_WAITED = CTX_AFTER_NODE_BIT | 4,
    N_STOPPED = CTX_AFTER_NODE_BIT | 5, /* stopped in a run list */
    N_STOPPED_WAITED = CTX_AFTER_NODE_BIT | 6,
    N_NEVER = CTX_AFTER_NODE_BIT | 7,   /* on a context never done */
};

static _Atomic uint32_t *nstate(ctx_after_node_t *n)
{
    return (_Atomic uint32_t *)&n->state_;
}

/* The nodes whose fn this thread is running, innermost first (a stop from
 * inside fn must not wait for itself). */
struct node_frame {
    ctx_after_node_t *node;
    struct node_frame *up;
};
static _Thread_local struct node_frame *running_nodes;

static bool running_here(ctx_after_node_t *n)
{
    for (struct node_frame *f = running_nodes; f != NULL; f = f->up)
        if (f->node == n)
            return true;
    return false;
}

static void node_call(ctx_after_node_t *n)
{
    struct node_frame f = {n, running_nodes};
    running_nodes = &f;
    n->fn_(n);
    running_nodes = f.up;
    if (atomic_exchange_explicit(nstate(n), N_IDLE, memory_order_acq_rel) ==
        N_RUNNING_WAITED)
        ctx__futex_wake_all(nstate(n));
}

static void run_node(ctx_after_node_t *n)
{
    uint32_t s = N_QUEUED;
    if (atomic_compare_exchange_strong_explicit(nstate(n), &s, N_RUNNING,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
        node_call(n);
        return;
    }
    /* Stopped while queued: its stop waits for us to pass. */
    if (atomic_exchange_explicit(nstate(n), N_IDLE, memory_order_acq_rel) ==
        N_STOPPED_WAITED)
        ctx__futex_wake_all(nstate(n));
}

static void append(ctx_after_link_t ***tail, ctx_after_link_t *rev,
                   ctx_after_link_t *first)
{
    if (rev == NULL)
        return;
    **tail = rev;
    *tail = &first->next;
}

void ctx__after_collect(ctx_t *node, struct ctx__run *run)
{
    /* The node's list is newest first; reverse it so that fns run in the
     * order they were registered. */
    ctx_after_link_t *rev = NULL, *first = NULL;
    ctx_after_link_t *nrev = NULL, *nfirst = NULL;
    ctx_after_link_t *l = node->u.c.afters;
    node->u.c.afters = NULL;
    while (l != NULL) {
        ctx_after_link_t *next = l->next;
        l->prev = NULL;
        /* Both kinds keep their state word at the same offset. */
        _Atomic uint32_t *st =
            (_Atomic uint32_t *)((char *)l + offsetof(struct ctx_after, state));
        if (atomic_load_explicit(st, memory_order_relaxed) &
            CTX_AFTER_NODE_BIT) {
            atomic_store_explicit(st, N_QUEUED, memory_order_relaxed);
            l->next = nrev;
            if (nrev == NULL)
                nfirst = l;
            nrev = l;
        } else {
            struct ctx_after *a = (struct ctx_after *)l;
            atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
            l->next = rev;
            if (rev == NULL)
                first = l;
            rev = l;
        }
        l = next;
    }
    append(&run->tail, rev, first);
    append(&run->ntail, nrev, nfirst);
}

void ctx__after_run(struct ctx__run *run)
{
    ctx_after_link_t *l = run->nodes;
    while (l != NULL) {
        ctx_after_link_t *next = l->next; /* fn may reuse the link */
        run_node((ctx_after_node_t *)l);
        l = next;
    }
    l = run->head;
    while (l != NULL) {
        ctx_after_link_t *next = l->next; /* a may be freed by run_one */
        run_one((struct ctx_after *)l);
        l = next;
    }
}

static void unlink_l(ctx_after_link_t *l)
{
    if (l->next != NULL)
        l->next->prev = l->prev;
    *l->prev = l->next;
    l->prev = NULL;
}

CTX_API int ctx_after_node_start(ctx_after_node_t *node, ctx_t *ctx,
                                 void (*fn)(ctx_after_node_t *node),
                                 unsigned flags)
{
    if (node == NULL || ctx == NULL || fn == NULL ||
        (flags & ~CTX_AFTER_NO_INLINE) != 0)
        return EINVAL;
    CTX_CHECK(ctx);
    if (atomic_load_explicit(nstate(node), memory_order_acquire) != N_IDLE)
        return EBUSY;
    node->ctx = ctx;
    node->fn_ = fn;
    node->link.next = NULL;
    node->link.prev = NULL;
    ctx_t *n = ctx->src;
    if (n == NULL) {
        atomic_store_explicit(nstate(node), N_NEVER, memory_order_relaxed);
        return 0; /* can never be done: fn never runs */
    }
    ctx__lock(&n->u.c.lock);
    int err = ctx__load_err(n);
    if (err == 0) {
        ctx_after_link_t *l = &node->link;
        l->next = n->u.c.afters;
        if (l->next != NULL)
            l->next->prev = &l->next;
        l->prev = &n->u.c.afters;
        n->u.c.afters = l;
        atomic_store_explicit(nstate(node), N_LINKED, memory_order_relaxed);
        ctx__unlock(&n->u.c.lock);
        return 0;
    }
    ctx__unlock(&n->u.c.lock);
    if (flags & CTX_AFTER_NO_INLINE)
        return err;
    /* Done already: run it here, before returning. */
    atomic_store_explicit(nstate(node), N_RUNNING, memory_order_relaxed);
    int saved = errno;
    node_call(node);
    errno = saved;
    return 0;
}

CTX_API bool ctx_after_node_stop(ctx_after_node_t *node)
{
    if (node == NULL)
        return false;
    _Atomic uint32_t *st = nstate(node);
    uint32_t s = atomic_load_explicit(st, memory_order_acquire);
    if (s == N_IDLE)
        return false;
    if (s == N_NEVER) {
        atomic_store_explicit(st, N_IDLE, memory_order_relaxed);
        return true;
    }
    if (s == N_LINKED) {
        ctx_t *n = node->ctx->src;
        ctx__lock(&n->u.c.lock);
        if (atomic_load_explicit(st, memory_order_relaxed) == N_LINKED) {
            /* Still pending in the context: nobody else can see it. */
            unlink_l(&node->link);
            node->link.next = NULL;
            atomic_store_explicit(st, N_IDLE, memory_order_relaxed);
            ctx__unlock(&n->u.c.lock);
            return true;
        }
        ctx__unlock(&n->u.c.lock);
        s = atomic_load_explicit(st, memory_order_acquire);
    }
    bool prevented = false;
    while (s == N_QUEUED) {
        if (atomic_compare_exchange_strong_explicit(st, &s, N_STOPPED,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire)) {
            prevented = true;
            s = N_STOPPED;
        }
    }
    if ((s == N_RUNNING || s == N_RUNNING_WAITED) && running_here(node))
        return false; /* from inside fn: the runner ends it */
    /* Wait for the runner to finish fn or to pass the stopped node. */
    for (;;) {
        s = atomic_load_explicit(st, memory_order_acquire);
        if (s == N_IDLE)
            break;
        uint32_t w = s == N_RUNNING   ? N_RUNNING_WAITED
                     : s == N_STOPPED ? N_STOPPED_WAITED
                                      : s;
        if (w != s &&
            !atomic_compare_exchange_strong_explicit(st, &s, w,
                                                     memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        ctx__futex_wait(st, w, CTX_TIME_MAX);
    }
    return prevented;
}

CTX_API ctx_after_t *ctx_after_func(ctx_t *ctx, void (*fn)(void *arg),
                                    void *arg)
{
    return ctx_after_func_flags(ctx, fn, arg, 0);
}

CTX_API ctx_after_t *ctx_after_func_flags(ctx_t *ctx, void (*fn)(void *arg),
                                          void *arg, unsigned flags)
{
    if (ctx == NULL || fn == NULL || (flags & ~CTX_AFTER_NO_INLINE) != 0) {
        errno = EINVAL;
        return NULL;
    }
    CTX_CHECK(ctx);
    struct ctx_after *a = ctx__malloc(sizeof *a);
    if (a == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    a->fn = fn;
    a->arg = arg;
    a->ctx = ctx_retain(ctx);
    a->node = ctx->src;
    a->l.next = NULL;
    a->l.prev = NULL;
    atomic_init(&a->state, CTX_AFTER_PENDING);
    atomic_init(&a->refs, 1);
    atomic_init(&a->runner, 0);
#ifdef CTX_DEBUG
    a->magic = CTX_AFTER_MAGIC;
    ctx__live_add(&ctx__n_afters, 1);
#endif
    ctx_t *n = a->node;
    if (n == NULL)
        return a; /* can never be done: fn never runs */

    ctx__lock(&n->u.c.lock);
    if (ctx__load_err(n) == 0) {
        a->l.next = n->u.c.afters;
        if (a->l.next != NULL)
            a->l.next->prev = &a->l.next;
        a->l.prev = &n->u.c.afters;
        n->u.c.afters = &a->l;
        ctx__unlock(&n->u.c.lock);
        return a;
    }
    ctx__unlock(&n->u.c.lock);
    if (flags & CTX_AFTER_NO_INLINE) {
        /* Done already, and the caller asked not to run fn here. */
        int err = (int)ctx__load_err(n);
#ifdef CTX_DEBUG
        a->magic = 0;
#endif
        after_free(a);
        ctx_release(ctx);
        errno = err;
        return NULL;
    }
    /* Done already: run it here, before returning. */
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    run_one(a);
    return a;
}

CTX_API bool ctx_after_stop(ctx_after_t *a)
{
    if (a == NULL)
        return false;
#ifdef CTX_DEBUG
    if (a->magic != CTX_AFTER_MAGIC)
        ctx__misuse("ctx_after_stop on a registration already stopped "
                    "(or not one)",
                    a);
    a->magic = 0;
#endif
    bool prevented;
    ctx_t *n = a->node;
    if (n != NULL) {
        ctx__lock(&n->u.c.lock);
        if (a->l.prev != NULL) {
            /* Still pending in the node: nobody else can see it. */
            unlink_l(&a->l);
            ctx__unlock(&n->u.c.lock);
            ctx_t *ctx = a->ctx;
            after_unref(a);
            ctx_release(ctx);
            return true;
        }
        ctx__unlock(&n->u.c.lock);
    }
    uint32_t s = CTX_AFTER_PENDING;
    if (atomic_compare_exchange_strong_explicit(&a->state, &s,
                                                CTX_AFTER_STOPPED,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
        prevented = true;
    } else {
        prevented = false;
        /* Running: wait for fn to return, unless we are inside it. */
        if (s != CTX_AFTER_FINISHED &&
            atomic_load_explicit(&a->runner, memory_order_relaxed) !=
                self_id()) {
            for (;;) {
                s = atomic_load_explicit(&a->state, memory_order_acquire);
                if (s == CTX_AFTER_FINISHED)
                    break;
                if (s == CTX_AFTER_RUNNING &&
                    !atomic_compare_exchange_strong(&a->state, &s,
                                                    CTX_AFTER_RUNNING_WAITED))
                    continue;
                ctx__futex_wait(&a->state, CTX_AFTER_RUNNING_WAITED,
                                CTX_TIME_MAX);
            }
        }
    }
    ctx_t *ctx = a->ctx;
    after_unref(a);
    ctx_release(ctx);
    return prevented;
}
