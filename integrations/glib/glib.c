/* libctx-glib: see include/ctx/glib.h.
 *
 * Three pieces:
 *  - the hub: one internal GSource per GMainContext polling the wakeup fd of
 *    a libctx notifier, found again through a table keyed by the context;
 *  - the context source: a GSource that watches its context on the hub of
 *    the main context it is attached to (from its first prepare(), on that
 *    context's thread) and is made ready when the watch is delivered;
 *  - the two GCancellable bridges, whose blocking GLib calls
 *    (g_cancellable_cancel runs user handlers, g_cancellable_disconnect
 *    waits for running ones) go to libctx's executor, never to the thread
 *    that ended the context. */
#include "ctx/glib.h"

#include <ctx/executor.h>
#include <ctx/notify.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

/* ---- the hub -------------------------------------------------------------- */

typedef struct {
    GSource source;
    GMainContext *mc; /* the key in `hubs` (never dereferenced) */
    ctx_notify_t *n;
    /* Guards every call on n: watches are made in prepare() on the loop
     * thread, but a context source may be finalized in any thread. A
     * pthread mutex (not a GMutex) so that TSan sees it; recursive because a
     * delivery (inside dispatch) may finalize a context source. */
    pthread_mutex_t mu;
    unsigned users; /* context sources watching here; under mu */
} Hub;

static gboolean hub_dispatch(GSource *s, GSourceFunc cb, gpointer data)
{
    (void)cb;
    (void)data;
    Hub *h = (Hub *)s;
    pthread_mutex_lock(&h->mu);
    ctx_notify_dispatch(h->n);
    pthread_mutex_unlock(&h->mu);
    return G_SOURCE_CONTINUE;
}

/* The hub of each main context, so that a source finds it in O(1) (a scan
 * of the main context's sources per watch would be quadratic). An entry
 * whose hub is destroyed is stale and replaced; a hub removes its own entry
 * when finalized. */
static pthread_mutex_t hubs_mu = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *hubs;

static void hub_finalize(GSource *s)
{
    Hub *h = (Hub *)s;
    pthread_mutex_lock(&hubs_mu);
    if (hubs != NULL && g_hash_table_lookup(hubs, h->mc) == h)
        g_hash_table_remove(hubs, h->mc);
    pthread_mutex_unlock(&hubs_mu);
    /* The last user may have left in another thread; its unlock and our
     * lock order the two (GLib's own refcount does too, but TSan cannot see
     * inside an uninstrumented GLib). */
    pthread_mutex_lock(&h->mu);
    pthread_mutex_unlock(&h->mu);
    ctx_notify_free(h->n); /* no watch is left: each user held a ref */
    pthread_mutex_destroy(&h->mu);
}

static GSourceFuncs hub_funcs = {
    .dispatch = hub_dispatch,
    .finalize = hub_finalize,
};

/* The hub of mc, made on first use; a new reference, or NULL (ENOMEM,
 * EMFILE). Called on mc's thread (from a source's prepare()). */
static Hub *hub_get(GMainContext *mc)
{
    pthread_mutex_lock(&hubs_mu);
    if (hubs == NULL)
        hubs = g_hash_table_new(g_direct_hash, g_direct_equal);
    Hub *h = g_hash_table_lookup(hubs, mc);
    if (h != NULL && !g_source_is_destroyed(&h->source) &&
        g_source_get_context(&h->source) == mc) {
        g_source_ref(&h->source);
        pthread_mutex_unlock(&hubs_mu);
        return h;
    }
    ctx_notify_t *n = ctx_notify_new();
    if (n == NULL) {
        pthread_mutex_unlock(&hubs_mu);
        return NULL;
    }
    h = (Hub *)g_source_new(&hub_funcs, sizeof(Hub));
    h->mc = mc;
    h->n = n;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h->mu, &a);
    pthread_mutexattr_destroy(&a);
    h->users = 0;
    g_source_set_name(&h->source, "libctx notifier");
    g_source_add_unix_fd(&h->source, ctx_notify_fd(n), G_IO_IN);
    g_hash_table_replace(hubs, mc, h);
    pthread_mutex_unlock(&hubs_mu);
    g_source_attach(&h->source, mc); /* mc holds one reference, we one */
    return h;
}

/* ---- the context source ---------------------------------------------------- */

typedef struct {
    GSource source;
    ctx_t *ctx;
    Hub *hub; /* set in prepare() once watching; a reference */
    ctx_notify_watch_t w;
} CtxSource;

/* The watch's only job is to make the hub's fd readable, which wakes the
 * main context: in that same iteration GLib calls every source's check(),
 * and src_check() sees the context done. So the delivery itself has nothing
 * left to do (a g_source_set_ready_time() here would cost one wakeup write
 * per source: 100,000 sources took 400 ms that way, against 60 without). */
static void on_delivered(ctx_notify_watch_t *w, ctx_t *ctx)
{
    (void)w;
    (void)ctx;
}

static gboolean src_prepare(GSource *s, gint *timeout)
{
    CtxSource *cs = (CtxSource *)s;
    *timeout = -1;
    if (ctx_is_done(cs->ctx))
        return TRUE;
    if (cs->hub == NULL) {
        Hub *h = hub_get(g_source_get_context(s));
        if (h == NULL) {
            *timeout = 10; /* no fd or memory now: look again soon */
            return FALSE;
        }
        pthread_mutex_lock(&h->mu);
        int e = ctx_notify_watch(h->n, &cs->w, cs->ctx, on_delivered);
        if (e == 0)
            h->users++;
        pthread_mutex_unlock(&h->mu);
        if (e != 0) {
            g_source_unref(&h->source);
            *timeout = 10;
            return FALSE;
        }
        cs->hub = h;
    }
    return FALSE;
}

static gboolean src_check(GSource *s)
{
    return ctx_is_done(((CtxSource *)s)->ctx);
}

static gboolean src_dispatch(GSource *s, GSourceFunc cb, gpointer data)
{
    CtxSource *cs = (CtxSource *)s;
    if (cb == NULL) {
        g_warning("libctx: a context source dispatched without a callback; "
                  "call g_source_set_callback()");
        return G_SOURCE_REMOVE;
    }
    return ((ctx_glib_source_func)(void (*)(void))cb)(cs->ctx, data);
}

static void src_finalize(GSource *s)
{
    CtxSource *cs = (CtxSource *)s;
    Hub *h = cs->hub;
    if (h != NULL) {
        pthread_mutex_lock(&h->mu);
        ctx_notify_unwatch(&cs->w);
        bool last = --h->users == 0;
        pthread_mutex_unlock(&h->mu);
        if (last)
            g_source_destroy(&h->source);
        g_source_unref(&h->source);
    }
    ctx_release(cs->ctx);
}

static GSourceFuncs src_funcs = {
    .prepare = src_prepare,
    .check = src_check,
    .dispatch = src_dispatch,
    .finalize = src_finalize,
};

CTX_API GSource *ctx_glib_source_new(ctx_t *ctx)
{
    g_return_val_if_fail(ctx != NULL, NULL);
    CtxSource *cs = (CtxSource *)g_source_new(&src_funcs, sizeof(CtxSource));
    cs->ctx = ctx_retain(ctx);
    cs->hub = NULL;
    cs->w = (ctx_notify_watch_t)CTX_NOTIFY_WATCH_INIT;
    cs->w.data = cs;
    g_source_set_name(&cs->source, "libctx context");
    return &cs->source;
}

/* ---- shared by the bridges --------------------------------------------------- */

/* A registration slot settled between the registering thread and the
 * after-func's continuation: whichever comes second ends the registration. */
#define REG_TAKEN ((ctx_after_t *)1)

static void reg_settle(_Atomic(ctx_after_t *) *slot)
{
    ctx_after_t *prev = atomic_exchange(slot, REG_TAKEN);
    if (prev != NULL && prev != REG_TAKEN)
        ctx_after_stop(prev); /* fn has run: frees the registration */
}

/* Returns true if the continuation had already finished, in which case the
 * caller ends the registration (fn has run). */
static void reg_publish(_Atomic(ctx_after_t *) *slot, ctx_after_t *reg)
{
    ctx_after_t *prev = atomic_exchange(slot, reg);
    if (prev == REG_TAKEN)
        ctx_after_stop(reg);
}

/* ---- GCancellable cancelled when a context ends ------------------------------ */

struct bridge {
    ctx_task_t task; /* first member */
    GWeakRef cancellable;
    _Atomic(ctx_after_t *) reg;
    _Atomic int refs; /* the object's data, the after-func's path */
};

static void bridge_unref(struct bridge *b)
{
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        g_weak_ref_clear(&b->cancellable);
        g_free(b);
    }
}

/* The after-func's continuation: on the executor (or, without one, in the
 * thread that ended the context). */
static void bridge_cancel(ctx_task_t *t)
{
    struct bridge *b = (struct bridge *)t;
    GCancellable *c = g_weak_ref_get(&b->cancellable);
    if (c != NULL) {
        g_cancellable_cancel(c);
        g_object_unref(c);
    }
    reg_settle(&b->reg);
    bridge_unref(b);
}

static void bridge_on_done(void *arg)
{
    struct bridge *b = arg;
    b->task.fn = bridge_cancel;
    if (ctx_executor_submit(&b->task) != 0)
        bridge_cancel(&b->task);
}

/* The cancellable is finalized: end the registration unless its fn ran. */
static void bridge_on_finalize(gpointer data)
{
    struct bridge *b = data;
    ctx_after_t *prev = atomic_exchange(&b->reg, REG_TAKEN);
    if (prev != NULL && prev != REG_TAKEN && ctx_after_stop(prev))
        bridge_unref(b); /* prevented: the after-func's path never comes */
    bridge_unref(b);
}

CTX_API GCancellable *ctx_glib_cancellable_new(ctx_t *ctx)
{
    if (ctx == NULL) {
        errno = EINVAL;
        return NULL;
    }
    GCancellable *c = g_cancellable_new();
    struct bridge *b = g_try_new0(struct bridge, 1);
    if (b == NULL) {
        g_object_unref(c);
        errno = ENOMEM;
        return NULL;
    }
    g_weak_ref_init(&b->cancellable, c);
    atomic_init(&b->reg, NULL);
    atomic_init(&b->refs, 2);
    ctx_after_t *reg =
        ctx_after_func_flags(ctx, bridge_on_done, b, CTX_AFTER_NO_INLINE);
    if (reg == NULL) {
        int e = errno;
        g_weak_ref_clear(&b->cancellable);
        g_free(b);
        if (e == CTX_CANCELED || e == CTX_DEADLINE_EXCEEDED) {
            g_cancellable_cancel(c); /* done already: no handler yet */
            return c;
        }
        g_object_unref(c);
        errno = e;
        return NULL;
    }
    reg_publish(&b->reg, reg);
    g_object_set_data_full(G_OBJECT(c), "libctx-bridge", b, bridge_on_finalize);
    return c;
}

/* ---- a context cancelled when a GCancellable is ------------------------------ */

struct link {
    ctx_task_t task; /* first member */
    /* A reference, owned by the signal handler's data. Atomic, stored with
     * release before the handler is connected: GLib's own locks order the
     * handler after the connect, but TSan cannot see inside GLib. */
    _Atomic(ctx_t *) child;
    GWeakRef cancellable;
    gulong handler;
    _Atomic(ctx_after_t *) reg;
    _Atomic int refs; /* the handler's data, the after-func's path */
};

static void link_unref(struct link *l)
{
    if (atomic_fetch_sub(&l->refs, 1) == 1) {
        g_weak_ref_clear(&l->cancellable);
        g_free(l);
    }
}

static void link_on_cancelled(GCancellable *c, gpointer data)
{
    (void)c;
    struct link *l = data;
    ctx_cancel(atomic_load_explicit(&l->child, memory_order_acquire));
}

/* The handler is disconnected, or the cancellable finalized. */
static void link_handler_gone(gpointer data)
{
    struct link *l = data;
    ctx_release(atomic_load_explicit(&l->child, memory_order_acquire));
    link_unref(l);
}

static void link_disconnect(struct link *l)
{
    GCancellable *c = g_weak_ref_get(&l->cancellable);
    if (c != NULL) {
        if (l->handler != 0)
            g_cancellable_disconnect(c, l->handler);
        g_object_unref(c);
    }
}

/* The child is done: disconnect on the executor (g_cancellable_disconnect
 * waits for a running handler, and this may run inside that very handler). */
static void link_task(ctx_task_t *t)
{
    struct link *l = (struct link *)t;
    link_disconnect(l);
    reg_settle(&l->reg);
    link_unref(l);
}

static void link_on_done(void *arg)
{
    struct link *l = arg;
    l->task.fn = link_task;
    if (ctx_executor_submit(&l->task) != 0) {
        /* No thread: stay connected (the handler's cancel of a done child is
         * harmless) until the cancellable is finalized. */
        reg_settle(&l->reg);
        link_unref(l);
    }
}

CTX_API ctx_t *ctx_glib_with_cancellable(ctx_t *parent,
                                         GCancellable *cancellable)
{
    if (parent == NULL || cancellable == NULL ||
        !G_IS_CANCELLABLE(cancellable)) {
        errno = EINVAL;
        return NULL;
    }
    ctx_t *child = ctx_with_cancel(parent);
    if (child == NULL)
        return NULL;
    struct link *l = g_try_new0(struct link, 1);
    if (l == NULL) {
        ctx_release(child);
        errno = ENOMEM;
        return NULL;
    }
    atomic_store_explicit(&l->child, ctx_retain(child), memory_order_release);
    g_weak_ref_init(&l->cancellable, cancellable);
    atomic_init(&l->reg, NULL);
    atomic_init(&l->refs, 2);
    /* Runs link_on_cancelled at once if already cancelled (and then drops
     * the data: handler 0). */
    l->handler = g_cancellable_connect(cancellable, G_CALLBACK(link_on_cancelled),
                                       l, link_handler_gone);
    ctx_after_t *reg =
        ctx_after_func_flags(child, link_on_done, l, CTX_AFTER_NO_INLINE);
    if (reg == NULL) {
        int e = errno;
        /* Done already (or no memory): nothing left to watch for. We are not
         * inside the handler, so disconnecting here is safe. */
        link_disconnect(l);
        link_unref(l);
        if (e == CTX_CANCELED || e == CTX_DEADLINE_EXCEEDED)
            return child;
        ctx_release(child);
        errno = e;
        return NULL;
    }
    reg_publish(&l->reg, reg);
    return child;
}
