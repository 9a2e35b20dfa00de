/* The context tree: roots, cancellable nodes, without_cancel, reference
 * counting and the two-phase cancel.
 *
 * Locking. Each cancellable node has a 4-byte lock guarding its list of
 * registered children (the cancellable descendants whose nearest cancellable
 * ancestor it is), its after-func list and its done fd. Lock order is parent
 * before child. Cancel walks the subtree depth-first, holding the locks of the
 * path from the cancelled node down to the current one: a child is unlinked
 * from its parent's list under the parent's lock, so a child being freed
 * concurrently (it must take the parent's lock to unlink itself) stays valid
 * until the walk is done with it, and a thread that finds a child already
 * done knows that child's subtree is done too, because it could only take
 * the child's lock once the walk below it had finished. The walk is iterative
 * (it climbs back up through parent pointers), so depth costs no stack. */
#include "alloc.h"
#include "ctx_int.h"
#include "ctx_testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ctx background_node = {
    .refs = 1, .kind = CTX_KIND_ROOT, .flags = CTX_F_STATIC,
    .magic = CTX_MAGIC};
static struct ctx todo_node = {
    .refs = 1, .kind = CTX_KIND_ROOT, .flags = CTX_F_STATIC | CTX_F_TODO,
    .magic = CTX_MAGIC};

CTX_API ctx_t *ctx_background(void)
{
    return &background_node;
}

CTX_API ctx_t *ctx_todo(void)
{
    return &todo_node;
}

void ctx__misuse(const char *what, const void *p)
{
    fprintf(stderr, "libctx: %s (%p)\n", what, p);
    abort();
}

#ifdef CTX_DEBUG
_Atomic long ctx__n_contexts, ctx__n_afters;

void ctx__live_add(_Atomic long *counter, long d)
{
    atomic_fetch_add_explicit(counter, d, memory_order_relaxed);
}

long ctx__live_contexts(void)
{
    return atomic_load(&ctx__n_contexts);
}

long ctx__live_afters(void)
{
    return atomic_load(&ctx__n_afters);
}

void ctx__debug_set_refs(struct ctx *c, unsigned refs)
{
    atomic_store(&c->refs, refs);
}
#endif

/* Allocates a node of `kind` under parent (retained). The caller sets src. */
ctx_t *ctx__node_alloc(ctx_t *parent, uint8_t kind, size_t size)
{
    ctx_t *c = ctx__node_block_get(size);
    if (c == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->kind = kind;
    c->flags = 0;
    c->magic = CTX_MAGIC;
    atomic_init(&c->self_detached, 0);
    c->parent = ctx_retain(parent);
    c->src = parent->src;
#ifdef CTX_DEBUG
    ctx__live_add(&ctx__n_contexts, 1);
#endif
    return c;
}

static size_t node_size(const ctx_t *c)
{
    switch (c->kind) {
    case CTX_KIND_CANCEL:
        return CTX_CANCEL_SIZE;
    case CTX_KIND_VALUE:
        return CTX_VALUE_SIZE;
    default:
        return sizeof(struct ctx);
    }
}

static inline ctx_t *registered_parent(const ctx_t *c)
{
    return c->parent != NULL ? c->parent->src : NULL;
}

/* Under the registered parent's lock. */
static void unlink_child(ctx_t *c)
{
    struct ctx_cancel_part *k = &c->u.c;
    if (k->next != NULL)
        k->next->u.c.pprev = k->pprev;
    *k->pprev = k->next;
    k->next = NULL;
    k->pprev = NULL;
}

static void link_child(ctx_t *p, ctx_t *c)
{
    struct ctx_cancel_part *k = &c->u.c;
    k->next = p->u.c.children;
    if (k->next != NULL)
        k->next->u.c.pprev = &k->next;
    k->pprev = &p->u.c.children;
    p->u.c.children = c;
}

/* Returns true if c was still linked (so no cancel walk can be holding it). */
static bool detach_from_parent(ctx_t *c)
{
    ctx_t *p = registered_parent(c);
    if (p == NULL)
        return true;
    ctx__lock(&p->u.c.lock);
    bool linked = c->u.c.pprev != NULL;
    if (linked)
        unlink_child(c);
    ctx__unlock(&p->u.c.lock);
    return linked;
}

/* Frees one node whose last reference is gone; not its parent. The
 * caller's errno survives: the locks' slow paths keep it, free() does not
 * change it (glibc 2.33 and later, as POSIX.1-2024 requires), and it is
 * saved here around the only calls that may set it. */
void ctx__node_free_one(ctx_t *c)
{
    if (c->kind == CTX_KIND_CANCEL) {
        /* Unless its own cancel took it out of its parent's list, a cancel
         * walk may still list or hold it: the parent's lock settles that. */
        if (!atomic_load_explicit(&c->self_detached, memory_order_relaxed))
            detach_from_parent(c);
        if (c->flags & CTX_F_OWN_DEADLINE)
            ctx__timer_remove(c);
        if (atomic_load_explicit(&c->u.c.done_fd, memory_order_relaxed) >= 0) {
            int saved = errno; /* close() may set it */
            ctx__done_close(c);
            errno = saved;
        }
    } else if (c->kind == CTX_KIND_VALUE && c->u.v.destroy != NULL) {
        int saved = errno; /* user code */
        c->u.v.destroy(c->u.v.value);
        errno = saved;
    }
    size_t size = node_size(c);
#ifdef CTX_DEBUG
    ctx__live_add(&ctx__n_contexts, -1);
    memset(c, 0xdb, size);
    c->kind = CTX_KIND_DEAD;
#endif
    ctx__node_block_put(c, size);
}

CTX_API ctx_t *ctx_retain(ctx_t *c)
{
    /* Checked before the flags: a freed node's poison must not pass for a
     * static root's. */
    CTX_CHECK(c);
    if (c == NULL || (c->flags & CTX_F_STATIC))
        return c;
    uint32_t old = atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
#ifdef CTX_DEBUG
    if (old == 0)
        ctx__misuse("ctx_retain after the last ctx_release", c);
    if (old >= INT32_MAX)
        ctx__misuse("context reference count overflow", c);
#else
    (void)old;
#endif
    return c;
}

/* Takes a reference unless the count already reached zero (the node is
 * being freed). For the timer thread, which holds no reference. */
bool ctx__try_retain(ctx_t *c)
{
    uint32_t r = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (r != 0) {
        if (atomic_compare_exchange_weak_explicit(&c->refs, &r, r + 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

CTX_API void ctx_release(ctx_t *c)
{
    /* A loop, not recursion: freeing a chain of last references costs no
     * stack. */
    while (c != NULL) {
        CTX_CHECK(c); /* before the flags, as in ctx_retain() */
        if (c->flags & CTX_F_STATIC)
            return;
        /* The last owner of a node that no timer entry can resurrect
         * (try_retain) needs no read-modify-write: with one reference,
         * nobody else can take another. */
        uint32_t old;
        if (!(c->flags & CTX_F_OWN_DEADLINE) &&
            atomic_load_explicit(&c->refs, memory_order_acquire) == 1)
            old = 1;
        else
            /* acq_rel rather than release plus a fence: the same code on
             * x86, and TSan understands it. */
            old = atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);
        if (old != 1) {
#ifdef CTX_DEBUG
            if (old == 0)
                ctx__misuse("ctx_release after the last reference", c);
#endif
            return;
        }
        ctx_t *parent = c->parent;
        ctx__node_free_one(c); /* keeps errno */
        c = parent;
    }
}

/* Phase 1 for one node, under its lock. Inline: it is on the path of every
 * cancel. */
static inline void mark_done(ctx_t *n, int err, int cause, struct ctx__run *run)
{
    struct ctx_cancel_part *k = &n->u.c;
    atomic_store_explicit(&k->cause, cause, memory_order_relaxed);
    /* Waiters register under this lock, so only a node in the timer heap
     * needs seq_cst (it pairs with the creator's insert-then-check). */
    if (n->flags & CTX_F_OWN_DEADLINE)
        atomic_store_explicit(&k->err, (uint32_t)err, memory_order_seq_cst);
    else
        atomic_store_explicit(&k->err, (uint32_t)err, memory_order_release);
    if (atomic_load_explicit(&k->waiters, memory_order_relaxed) != 0)
        ctx__futex_wake_all(&k->err);
    if (atomic_load_explicit(&k->done_fd, memory_order_relaxed) >= 0)
        ctx__done_signal(n);
    if (n->flags & CTX_F_OWN_DEADLINE)
        ctx__timer_remove(n);
    if (k->afters != NULL)
        ctx__after_collect(n, run);
}

bool ctx__cancel(ctx_t *root, int err, int cause)
{
    struct ctx__run run = {NULL, &run.head, NULL, &run.nodes};

    ctx__lock(&root->u.c.lock);
    if (ctx__load_err(root) != 0) {
        ctx__unlock(&root->u.c.lock);
        return false;
    }
    mark_done(root, err, cause, &run);
    ctx_t *cur = root;
    for (;;) {
        ctx_t *ch = cur->u.c.children;
        if (ch != NULL) {
            unlink_child(ch);
            ctx__lock(&ch->u.c.lock);
            if (ctx__load_err(ch) == 0) {
                mark_done(ch, err, cause, &run);
                cur = ch; /* descend, keeping ch locked */
            } else {
                /* Done already: whoever did it finished its subtree before
                 * releasing the lock we just took. */
                ctx__unlock(&ch->u.c.lock);
            }
            continue;
        }
        if (cur == root)
            break;
        ctx_t *up = registered_parent(cur);
        ctx__unlock(&cur->u.c.lock);
        cur = up;
    }
    ctx__unlock(&root->u.c.lock);
    if (detach_from_parent(root))
        atomic_store_explicit(&root->self_detached, 1, memory_order_relaxed);

    /* Phase 2: no lock held. After-funcs are user code: the canceller's
     * errno survives them. */
    if (run.head != NULL || run.nodes != NULL) {
        int saved = errno;
        ctx__after_run(&run);
        errno = saved;
    }
    return true;
}

CTX_API int ctx_cancel_cause(ctx_t *c, int cause)
{
    if (c == NULL)
        return EINVAL;
    CTX_CHECK(c);
    if (c->kind != CTX_KIND_CANCEL)
        return EINVAL;
    /* No lock-free shortcut when already done: a cancel that loses the race
     * must still return only once the winner's walk is over, and the winner
     * holds this node's lock until then. */
    ctx__cancel(c, CTX_CANCELED, cause != 0 ? cause : CTX_CANCELED);
    return 0;
}

CTX_API int ctx_cancel(ctx_t *c)
{
    return ctx_cancel_cause(c, CTX_CANCELED);
}

/* Every cancellable derivation. `own`: the caller asked for `deadline`;
 * `past`: it has passed already (the callers read the clock once). */
static ctx_t *cancel_new(ctx_t *parent, bool own, ctx_time_t deadline,
                         int cause, bool past)
{
    if (parent == NULL) {
        errno = EINVAL;
        return NULL;
    }
    CTX_CHECK(parent);
    ctx_t *c = ctx__node_alloc(parent, CTX_KIND_CANCEL, CTX_CANCEL_SIZE);
    if (c == NULL)
        return NULL;
    ctx_t *p = c->src; /* the registered parent, or NULL */
    c->src = c;
    struct ctx_cancel_part *k = &c->u.c;
    atomic_init(&k->err, 0);
    atomic_init(&k->cause, 0);
    atomic_init(&k->lock, 0);
    atomic_init(&k->waiters, 0);
    k->children = NULL;
    k->next = NULL;
    k->pprev = NULL;
    k->deadline = CTX_TIME_MAX;
    atomic_init(&k->heap_idx, CTX_NO_HEAP);
    atomic_init(&k->done_fd, -1);
    k->afters = NULL;
#ifndef CTX_HAVE_FUTEX
    k->done_wfd = -1;
#endif
    if (p != NULL && (p->flags & CTX_F_HAS_DEADLINE)) {
        k->deadline = p->u.c.deadline;
        c->flags |= CTX_F_HAS_DEADLINE;
    }
    /* A parent deadline earlier than the one asked for makes this a plain
     * cancel context (Go does the same). */
    if (own && (!(c->flags & CTX_F_HAS_DEADLINE) || deadline <= k->deadline)) {
        k->deadline = deadline;
        c->flags |= CTX_F_HAS_DEADLINE | CTX_F_OWN_DEADLINE;
        /* The cause the timer will use; invisible until err is set. */
        atomic_init(&k->cause, cause != 0 ? cause : CTX_DEADLINE_EXCEEDED);
    } else {
        own = past = false;
    }

    int perr = 0, pcause = 0;
    bool linked = false;
    if (p != NULL) {
        /* A done parent stays done: no lock needed to see it. */
        perr = ctx__load_err(p);
        if (perr == 0 && !past) {
            ctx__lock(&p->u.c.lock);
            perr = ctx__load_err(p);
            if (perr == 0) {
                link_child(p, c);
                linked = true;
            }
            ctx__unlock(&p->u.c.lock);
        }
        if (perr != 0)
            pcause = atomic_load_explicit(&p->u.c.cause, memory_order_relaxed);
    }
    if (!linked) /* nothing to detach from, ever */
        atomic_store_explicit(&c->self_detached, 1, memory_order_relaxed);
    if (perr != 0 || past) {
        /* Done at birth. No other thread can see c yet: no waiter, child,
         * after-func, fd or timer entry to deal with, so no lock. */
        int e = perr != 0 ? perr : CTX_DEADLINE_EXCEEDED;
        int ca = perr != 0 ? pcause
                           : atomic_load_explicit(&k->cause, memory_order_relaxed);
        atomic_store_explicit(&k->cause, ca, memory_order_relaxed);
        atomic_store_explicit(&k->err, (uint32_t)e, memory_order_release);
    } else if (own && deadline != CTX_TIME_MAX) {
        int e = ctx__timer_insert(c);
        if (e != 0) {
            ctx_release(c); /* unlinks it */
            errno = e;
            return NULL;
        }
        /* A parent cancel that ran before the insert could not remove it. */
        if (atomic_load_explicit(&k->err, memory_order_seq_cst) != 0)
            ctx__timer_remove(c);
    }
    return c;
}

CTX_API ctx_t *ctx_with_cancel(ctx_t *parent)
{
    return cancel_new(parent, false, 0, 0, false);
}

CTX_API ctx_t *ctx_with_deadline_cause(ctx_t *parent, ctx_time_t deadline,
                                       int cause)
{
    return cancel_new(parent, true, deadline, cause, deadline <= ctx_now());
}

CTX_API ctx_t *ctx_with_deadline(ctx_t *parent, ctx_time_t deadline)
{
    return ctx_with_deadline_cause(parent, deadline, 0);
}

CTX_API ctx_t *ctx_with_timeout_cause(ctx_t *parent, ctx_duration_t timeout,
                                      int cause)
{
    ctx_time_t now = ctx_now(), deadline;
    if (timeout <= 0)
        deadline = now;
    else if (timeout > CTX_TIME_MAX - now)
        deadline = CTX_TIME_MAX; /* saturate */
    else
        deadline = now + timeout;
    return cancel_new(parent, true, deadline, cause, timeout <= 0);
}

CTX_API ctx_t *ctx_with_timeout(ctx_t *parent, ctx_duration_t timeout)
{
    return ctx_with_timeout_cause(parent, timeout, 0);
}

CTX_API ctx_t *ctx_without_cancel(ctx_t *parent)
{
    if (parent == NULL) {
        errno = EINVAL;
        return NULL;
    }
    CTX_CHECK(parent);
    /* Full size, though it uses only the header: a rare kind, and compilers
     * rightly object to a struct ctx in a smaller block. */
    ctx_t *c = ctx__node_alloc(parent, CTX_KIND_WITHOUT, sizeof(struct ctx));
    if (c != NULL)
        c->src = NULL;
    return c;
}

/* Parenthesised: ctx.h also defines these names as inline macros. */
CTX_API bool (ctx_is_done)(ctx_t *c)
{
    if (c == NULL)
        return false;
    ctx_t *s = c->src;
    return s != NULL && ctx__load_err(s) != 0;
}

CTX_API bool ctx_is_never_done(ctx_t *c)
{
    return c != NULL && c->src == NULL;
}

CTX_API int (ctx_err)(ctx_t *c)
{
    if (c == NULL)
        return 0;
    ctx_t *s = c->src;
    return s != NULL ? ctx__load_err(s) : 0;
}

CTX_API int ctx_cause(ctx_t *c)
{
    if (c == NULL || c->src == NULL)
        return 0;
    ctx_t *s = c->src;
    if (ctx__load_err(s) == 0)
        return 0;
    return atomic_load_explicit(&s->u.c.cause, memory_order_relaxed);
}

CTX_API bool ctx_deadline(ctx_t *c, ctx_time_t *deadline)
{
    if (c == NULL || c->src == NULL || !(c->src->flags & CTX_F_HAS_DEADLINE))
        return false;
    if (deadline != NULL)
        *deadline = c->src->u.c.deadline;
    return true;
}

/* The inline queries of ctx.h read this layout. */
_Static_assert(offsetof(struct ctx, src) == offsetof(struct ctx__view, src),
               "ctx.h's view of a context: src");
_Static_assert(offsetof(struct ctx, u.c.err) ==
                   offsetof(struct ctx__view, err),
               "ctx.h's view of a context: err");

/* The memory target: a cancel context in at most 96 bytes (bench/RESULTS.md). */
_Static_assert(CTX_CANCEL_SIZE <= 96, "a cancel context must fit in 96 bytes");
