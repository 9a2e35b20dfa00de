/*
 * libctx-event: contexts on a libevent event_base.
 *
 *     ctx_event_t *ce = ctx_event_new(base);       // one per event_base
 *
 *     struct conn { struct bufferevent *bev; ctx_event_watch_t w; ... };
 *     static void on_done(ctx_event_watch_t *w, ctx_t *ctx)
 *     {
 *         struct conn *c = w->data;                // on the loop thread
 *         bufferevent_free(c->bev);
 *         free(c);
 *     }
 *     c->w = (ctx_event_watch_t)CTX_EVENT_WATCH_INIT;
 *     c->w.data = c;
 *     ctx_event_watch(ce, &c->w, c->ctx, on_done); // cancel from anywhere
 *     ...
 *     ctx_event_unwatch(ce, &c->w);                // true: on_done will not run
 *     ctx_event_free(ce);                          // before event_base_free()
 *
 * A ctx_event_t is one persistent EV_READ event on the fd of a libctx
 * notifier (<ctx/notify.h>): one fd for the whole event_base, however many
 * contexts are watched; each callback runs in the thread that runs the
 * event_base once its context is done (cancelled in any thread, or at its
 * deadline). A ctx_event_watch_t is a ctx_notify_watch_t: the notifier's
 * lifetime rules hold as written there (64 bytes owned by the caller, the
 * watch keeps its context alive, the callback may free or re-watch it,
 * unwatch returns true iff it prevented the callback).
 *
 * Keeping the loop alive: the event is added (pending) while at least one
 * watch is active, so event_base_dispatch() does not return while a
 * callback is still to come, and deleted when nothing is watched, so it
 * does not keep the base running by itself.
 *
 * Threads: call these functions in the thread that runs the event_base
 * (or with the base not running). Only the contexts may be cancelled from
 * other threads; libevent's own threading support is not needed.
 *
 * Errors: libevent's convention: 0 or -1 with errno set; constructors
 * return NULL with errno set.
 */
#ifndef CTX_EVENT_H
#define CTX_EVENT_H

#include <ctx.h>
#include <ctx/notify.h>

#include <event2/event.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A watched context: a ctx_notify_watch_t (64 bytes on LP64); `data` is
 * the caller's. Zero it before first use (CTX_EVENT_WATCH_INIT). */
typedef ctx_notify_watch_t ctx_event_watch_t;
#define CTX_EVENT_WATCH_INIT CTX_NOTIFY_WATCH_INIT

/* Runs in the event_base's thread once ctx is done; ctx is borrowed for
 * the call, and w is already inactive (it may be freed or watched again). */
typedef ctx_notify_cb ctx_event_watch_cb;

/* Opaque: the notifier and its event. */
typedef struct ctx_event ctx_event_t;

/* A new watcher on base (one notifier fd and one event), or NULL with errno
 * EINVAL (NULL base), ENOMEM, EMFILE or ENFILE. Free it with
 * ctx_event_free() before freeing the base. */
CTX_API ctx_event_t *ctx_event_new(struct event_base *base);

/* Frees ce: deletes its event and closes its fd. Every watch must be
 * inactive (delivered or unwatched); otherwise returns -1 with errno EBUSY
 * and changes nothing. Returns 0 (also for NULL). Not from inside one of
 * its own watch callbacks. */
CTX_API int ctx_event_free(ctx_event_t *ce);

/* Watches ctx: cb(w, ctx) runs in the base's thread once ctx is done (on
 * the next loop iteration if it already is; never inside this call),
 * unless ctx_event_unwatch() comes first. The watch holds a reference to
 * ctx. Returns 0, or -1 with errno EINVAL (NULL argument), EBUSY (w is
 * active) or ENOMEM (libevent's event_add() failed, which it does only when
 * out of memory); on error cb will never be called. The watch itself never
 * allocates. */
CTX_API int ctx_event_watch(ctx_event_t *ce, ctx_event_watch_t *w, ctx_t *ctx,
                            ctx_event_watch_cb cb);

/* Stops watching w (watched on ce): true iff this prevented the callback,
 * false if it has already started (also from inside it) or w was not
 * active. Either way ce no longer uses w and has dropped its reference to
 * the context. Safe in any callback, including w's own. */
CTX_API bool ctx_event_unwatch(ctx_event_t *ce, ctx_event_watch_t *w);

#ifdef __cplusplus
}
#endif

#endif /* CTX_EVENT_H */
