/* After-funcs (Go's AfterFunc).
 *
 * A registration is linked in the list of the node holding its context's
 * cancel state. Cancel moves it, under that node's lock, to a run list and
 * runs it once every lock is dropped. Its memory has two owners while it sits
 * in a run list: the user (until ctx_after_stop) and the run list (until fn
 * has returned or been skipped); `refs` counts them and the last frees it.
 * `state` decides the race between starting fn and stopping it. */
#include "alloc.h"
#include "ctx_int.h"

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

void ctx__after_collect(ctx_t *node, struct ctx__run *run)
{
    /* The node's list is newest first; reverse it so that fns run in the
     * order they were registered. */
    struct ctx_after *rev = NULL, *first = NULL;
    struct ctx_after *a = node->u.c.afters;
    node->u.c.afters = NULL;
    while (a != NULL) {
        struct ctx_after *next = a->next;
        a->pprev = NULL;
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
        a->next = rev;
        if (rev == NULL)
            first = a;
        rev = a;
        a = next;
    }
    if (rev == NULL)
        return;
    *run->tail = rev;
    run->tail = &first->next;
}

void ctx__after_run(struct ctx_after *a)
{
    while (a != NULL) {
        struct ctx_after *next = a->next; /* a may be freed by run_one */
        run_one(a);
        a = next;
    }
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
    a->next = NULL;
    a->pprev = NULL;
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
        a->next = n->u.c.afters;
        if (a->next != NULL)
            a->next->pprev = &a->next;
        a->pprev = &n->u.c.afters;
        n->u.c.afters = a;
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
        if (a->pprev != NULL) {
            /* Still pending in the node: nobody else can see it. */
            if (a->next != NULL)
                a->next->pprev = a->pprev;
            *a->pprev = a->next;
            a->pprev = NULL;
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
