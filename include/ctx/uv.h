/*
 * libctx-uv: contexts on a libuv loop.
 *
 *     ctx_uv_t cu;                       // one per loop, like a uv handle
 *     ctx_uv_init(loop, &cu);
 *
 *     struct conn { uv_tcp_t tcp; ctx_uv_watch_t w; ctx_t *ctx; };
 *     static void on_done(ctx_uv_watch_t *w, ctx_t *ctx)
 *     {
 *         struct conn *c = w->data;      // on the loop thread
 *         uv_close((uv_handle_t *)&c->tcp, on_closed);
 *     }
 *     c->w = (ctx_uv_watch_t)CTX_UV_WATCH_INIT;
 *     c->w.data = c;
 *     ctx_uv_watch(&cu, &c->w, c->ctx, on_done);   // cancel from anywhere
 *     ...
 *     ctx_uv_unwatch(&cu, &c->w);        // true: on_done will not run
 *     ctx_uv_close(&cu, on_cu_closed);   // then uv_loop_close() == 0
 *
 * A ctx_uv_t is a uv_poll_t on the fd of a libctx notifier (<ctx/notify.h>):
 * one fd for the whole loop, however many contexts are watched, and each
 * callback runs on the loop thread once its context is done (cancelled in
 * any thread, or at its deadline). A ctx_uv_watch_t is a ctx_notify_watch_t:
 * the notifier's lifetime rules hold as written there (64 bytes owned by
 * the caller, the watch keeps its context alive, the callback may free or
 * re-watch it, unwatch returns true iff it prevented the callback).
 *
 * Keeping the loop alive: the handle is referenced (uv_ref) while at least
 * one watch is active, like a running uv_timer_t, so uv_run() does not
 * return while a callback is still to come; with no active watch it is
 * unreferenced and does not keep the loop alive (it still counts as open
 * for uv_loop_close() until ctx_uv_close() has completed). Do not call
 * uv_ref()/uv_unref() on it yourself.
 *
 * Threads: like every libuv handle, call these functions on the loop's
 * thread only. Only the contexts may be cancelled from other threads.
 *
 * Errors: libuv's convention: 0 or a negative UV_E* code (uv_strerror()).
 */
#ifndef CTX_UV_H
#define CTX_UV_H

#include <ctx.h>
#include <ctx/notify.h>

#include <stdbool.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A watched context: a ctx_notify_watch_t (64 bytes on LP64); `data` is
 * the caller's. Zero it before first use (CTX_UV_WATCH_INIT). */
typedef ctx_notify_watch_t ctx_uv_watch_t;
#define CTX_UV_WATCH_INIT CTX_NOTIFY_WATCH_INIT

/* Runs on the loop thread once ctx is done; ctx is borrowed for the call,
 * and w is already inactive (it may be freed or watched again). */
typedef ctx_notify_cb ctx_uv_watch_cb;

typedef struct ctx_uv ctx_uv_t;

/* Called on the loop thread once the handle is closed: its memory may then
 * be freed. */
typedef void (*ctx_uv_close_cb)(ctx_uv_t *h);

/* Caller-owned, like any libuv handle; `data` is the caller's. */
struct ctx_uv {
    void *data;
    /* private */
    uv_poll_t poll_;
    ctx_notify_t *n_;
    ctx_uv_close_cb close_cb_;
    int closing_;
};

/* Initializes h on loop: makes a notifier (one fd) and starts polling it,
 * unreferenced until something is watched. Returns 0, UV_EINVAL (NULL
 * argument), UV_ENOMEM, UV_EMFILE or UV_ENFILE, or the error of
 * uv_poll_init()/uv_poll_start(); on error h needs no close. (Should
 * uv_poll_start() itself fail, which libuv does not do for a valid fd, the
 * poll handle is already closing through the loop: keep h valid until the
 * loop has run once.) */
CTX_API int ctx_uv_init(uv_loop_t *loop, ctx_uv_t *h);

/* Watches ctx: cb(w, ctx) runs on the loop thread once ctx is done (on the
 * next loop iteration if it already is; never inside this call), unless
 * ctx_uv_unwatch() comes first. The watch holds a reference to ctx.
 * Returns 0, UV_EINVAL (NULL argument, or h is closing) or UV_EBUSY (w is
 * active); on error cb will never be called. Never allocates. */
CTX_API int ctx_uv_watch(ctx_uv_t *h, ctx_uv_watch_t *w, ctx_t *ctx,
                         ctx_uv_watch_cb cb);

/* Stops watching w (watched on h): true iff this prevented the callback,
 * false if it has already started (also from inside it) or w was not
 * active. Either way h no longer uses w and has dropped its reference to
 * the context. Safe in any callback, including w's own. */
CTX_API bool ctx_uv_unwatch(ctx_uv_t *h, ctx_uv_watch_t *w);

/* Starts closing h, like uv_close(): close_cb (may be NULL) runs on a later
 * loop iteration, after which h's memory may be freed and, once every other
 * handle is closed too, uv_loop_close() returns 0. Every watch must be
 * inactive first (delivered or unwatched): otherwise returns UV_EBUSY and
 * changes nothing. Returns 0, UV_EINVAL (NULL, or already closing) or
 * UV_EBUSY. */
CTX_API int ctx_uv_close(ctx_uv_t *h, ctx_uv_close_cb close_cb);

#ifdef __cplusplus
}
#endif

#endif /* CTX_UV_H */
