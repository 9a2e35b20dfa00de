/*
 * libctx-glib: contexts on a GLib main loop, and GCancellable bridged both
 * ways.
 *
 *     // A source that dispatches once ctx is done (like g_cancellable_source_new):
 *     GSource *s = ctx_glib_source_new(ctx);
 *     g_source_set_callback(s, G_SOURCE_FUNC(on_done), conn, NULL);
 *     g_source_attach(s, main_context);
 *     g_source_unref(s);
 *
 *     static gboolean on_done(ctx_t *ctx, gpointer data)  // ctx_glib_source_func
 *     {
 *         close_conn(data, ctx_err(ctx));     // on the main context's thread
 *         return G_SOURCE_REMOVE;
 *     }
 *
 *     // GIO calls bounded by a context:
 *     GCancellable *c = ctx_glib_cancellable_new(ctx);
 *     g_input_stream_read(in, buf, n, c, &error);  // G_IO_ERROR_CANCELLED once ctx ends
 *     g_object_unref(c);
 *
 *     // A context that ends when a GCancellable is cancelled:
 *     ctx_t *op = ctx_glib_with_cancellable(parent, cancellable);
 *     ...
 *     ctx_cancel(op); ctx_release(op);    // Go's defer cancel()
 *
 * One fd per main context. Every context source attached to one
 * GMainContext shares one libctx notifier (<ctx/notify.h>): a single
 * internal source polls its wakeup fd, however many contexts are watched,
 * and makes each context source ready on the main context's own thread
 * once its context is done (cancelled in any thread, or at its deadline).
 * The internal source is created with the first context source that needs
 * it and destroyed with the last one.
 *
 * GLib's rules hold. The sources and cancellables are reference-counted
 * GLib objects: unref them as usual, from any thread. A context source
 * holds a reference to its context until it is finalized; destroying the
 * source (g_source_destroy) before the context ends means its callback will
 * never run. Like a GCancellable source, a done context stays done, so the
 * callback should return G_SOURCE_REMOVE: returning G_SOURCE_CONTINUE
 * dispatches it again on every iteration.
 *
 * No GLib callback runs in libctx's timer thread or in the thread that
 * cancels a context: a GCancellable made by ctx_glib_cancellable_new() is
 * cancelled (and its "cancelled" handlers run) on a thread of libctx's
 * shared executor (<ctx/executor.h>).
 */
#ifndef CTX_GLIB_H
#define CTX_GLIB_H

#include <ctx.h>

#include <gio/gio.h>
#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The callback of a context source, set with g_source_set_callback()
 * (cast with G_SOURCE_FUNC). ctx is borrowed for the call; ctx_err(ctx)
 * tells cancel from deadline. Return G_SOURCE_REMOVE. */
typedef gboolean (*ctx_glib_source_func)(ctx_t *ctx, gpointer user_data);

/* A new GSource (reference owned by the caller) that dispatches on the
 * thread of the GMainContext it is attached to once ctx is done; if ctx is
 * already done, on the next iteration. The source holds a reference to ctx
 * until it is finalized. Returns NULL for a NULL ctx (with a GLib critical
 * warning, as GLib's own constructors do). */
CTX_API GSource *ctx_glib_source_new(ctx_t *ctx);

/* A new GCancellable (reference owned by the caller) that is cancelled once
 * ctx is done. It is cancelled on a thread of libctx's executor (so its
 * "cancelled" handlers never run in the cancelling thread or the timer
 * thread); if ctx is already done, before this call returns. If no executor
 * thread can be started, it is cancelled in the thread that ended ctx. The
 * bridge ends when the cancellable is finalized (no reference to it is
 * kept) or after it was cancelled. Returns NULL with errno EINVAL (NULL ctx)
 * or ENOMEM. */
CTX_API GCancellable *ctx_glib_cancellable_new(ctx_t *ctx);

/* A new cancellable child of parent (a new reference: ctx_release() it)
 * that is cancelled (CTX_CANCELED) once `cancellable` is cancelled, in the
 * thread that cancels it; a child of an already cancelled cancellable is
 * done at birth. It is also done when parent is, or when cancelled itself.
 * The link to the GCancellable is dropped once the child is done (the
 * handler is disconnected on libctx's executor), so cancel the child when
 * the work is over, as with Go's `defer cancel()`; a GCancellable that is
 * finalized first drops it too. The child does not keep the cancellable
 * alive. Returns NULL with errno EINVAL (NULL argument) or ENOMEM. */
CTX_API ctx_t *ctx_glib_with_cancellable(ctx_t *parent,
                                         GCancellable *cancellable);

#ifdef __cplusplus
}
#endif

#endif /* CTX_GLIB_H */
