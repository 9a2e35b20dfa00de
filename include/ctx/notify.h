/*
 * libctx notifier: many watched contexts, one wakeup fd per event loop.
 *
 *     ctx_notify_t *n = ctx_notify_new();          // one per loop
 *     // add ctx_notify_fd(n) to the loop, readable -> ctx_notify_dispatch(n)
 *
 *     struct conn { ctx_notify_watch_t w; ... };  // the watch is embedded
 *     static void on_done(ctx_notify_watch_t *w, ctx_t *ctx)
 *     {
 *         struct conn *c = w->data;               // on the loop's thread
 *         close_conn(c, ctx_err(ctx));
 *     }
 *     c->w = (ctx_notify_watch_t)CTX_NOTIFY_WATCH_INIT;
 *     c->w.data = c;
 *     ctx_notify_watch(n, &c->w, c->ctx, on_done);
 *     ...
 *     ctx_notify_unwatch(&c->w);                   // true: on_done will not run
 *
 * How it works. A watch embeds one intrusive after-func node
 * (ctx_after_node_start() with CTX_AFTER_NO_INLINE): nothing is allocated
 * for it. When the context is done, the node's function, running in the
 * cancelling thread or the timer thread, only pushes the watch onto the
 * notifier's lock-free ready list and, if no wakeup is pending yet, writes
 * the wakeup fd once (an eventfd on Linux, a pipe elsewhere): a batch of
 * any size costs one write. The loop sees the fd readable and calls
 * ctx_notify_dispatch(), which runs the callbacks in its own thread. No
 * callback ever runs in the cancelling thread or the timer thread, and no
 * fd is used per watch.
 *
 * Cost of a watch (LP64): the ctx_notify_watch_t, 64 bytes, owned by the
 * caller (embed it in your own struct), and nothing else: no allocation,
 * no fd. Watching, unwatching and delivery allocate nothing.
 *
 * Threads. The notifier belongs to one loop: ctx_notify_watch(),
 * ctx_notify_unwatch(), ctx_notify_dispatch(), ctx_notify_watching(),
 * ctx_notify_active() and ctx_notify_free() on one notifier (and on its
 * watches) must not run concurrently with each other; call them from the
 * loop's thread. The contexts themselves may be cancelled from any thread,
 * at any time, also while the loop watches or unwatches them; that is the
 * race this header settles.
 *
 * Lifetime rules, stated once:
 *  1. A watch is "active" from a successful ctx_notify_watch() until its
 *     callback starts or ctx_notify_unwatch() returns. While active, the
 *     watch's memory must stay valid and untouched, and the notifier must
 *     not be freed (ctx_notify_free() refuses with EBUSY).
 *  2. An active watch holds a reference to its context: the caller may
 *     release its own reference at once; the callback still gets a valid
 *     context, and the loop never sees a context freed under it.
 *  3. When the callback starts, the watch is already inactive and owns
 *     nothing: the callback may free the watch's memory, watch it again
 *     (on any context), unwatch other watches, or watch new ones. The
 *     context passed to it is borrowed for the duration of the call
 *     (ctx_retain() it to keep it).
 *  4. ctx_notify_unwatch() returns true iff it prevented the callback: the
 *     callback will not run, now or later. False means the callback has
 *     already started (it returns false when called from inside the
 *     callback) or the watch was not active. In both cases, when unwatch
 *     returns, the library no longer uses the watch: its memory may be freed.
 *  5. ctx_notify_free() needs every watch of the notifier inactive (each
 *     either delivered or unwatched). It must not be called from inside a
 *     callback of the same notifier.
 *  6. fork(): a notifier and its watches are not usable in the child.
 *
 * Errors follow ctx.h: constructors return NULL with errno; operations
 * return 0 or an error number.
 */
#ifndef CTX_NOTIFY_H
#define CTX_NOTIFY_H

#include <ctx.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque: one wakeup fd and the ready list. */
typedef struct ctx_notify ctx_notify_t;

typedef struct ctx_notify_watch ctx_notify_watch_t;

/* A watch's callback: runs once, in the thread that calls
 * ctx_notify_dispatch(), after `ctx` is done (ctx_err(ctx) tells cancel from
 * deadline). `ctx` is borrowed for the call. See the lifetime rules above. */
typedef void (*ctx_notify_cb)(ctx_notify_watch_t *w, ctx_t *ctx);

/* One watched context. Caller-owned memory, usually a member of the
 * caller's own struct. Zero it before its first use (CTX_NOTIFY_WATCH_INIT,
 * memset, calloc); after that it can be watched again each time it is
 * inactive. Only `data` is the caller's; the other fields are private. */
struct ctx_notify_watch {
    void *data; /* the caller's: never read or written by the library */
    /* private */
    ctx_notify_cb cb_;
    ctx_notify_t *n_;
    ctx_after_node_t node_; /* the registration; its link queues the watch
                             * once done, its user word is the state */
};
#ifdef __cplusplus
#define CTX_NOTIFY_WATCH_INIT {}
#else
#define CTX_NOTIFY_WATCH_INIT {0}
#endif

/* A new notifier with its wakeup fd (close-on-exec, nonblocking), or NULL
 * with errno ENOMEM, EMFILE or ENFILE. Free it with ctx_notify_free(). */
CTX_API ctx_notify_t *ctx_notify_new(void);

/* Frees the notifier and closes its fd (remove the fd from your loop
 * first). Returns 0 (also for NULL, which is a no-op) or EBUSY when a watch
 * is still active, in which case nothing changes. */
CTX_API int ctx_notify_free(ctx_notify_t *n);

/* The wakeup fd to watch for readability (level-triggered). Owned by the
 * notifier: do not read, write or close it; ctx_notify_dispatch() resets it.
 * Returns -1 with errno EINVAL for NULL. */
CTX_API int ctx_notify_fd(const ctx_notify_t *n);

/* Starts watching ctx: cb(w, ctx) will run inside a later
 * ctx_notify_dispatch(n) once ctx is done, unless ctx_notify_unwatch(w)
 * comes first. If ctx is already done, cb runs on the next dispatch (never
 * inside this call), and the fd is made readable. A context that can never
 * be done (the roots, without_cancel) is accepted and never delivered.
 * The watch takes its own reference to ctx (rule 2).
 * Returns 0, EINVAL (NULL n, w, ctx or cb) or EBUSY (w is active); on
 * error cb will never be called and w stays inactive. Never allocates. */
CTX_API int ctx_notify_watch(ctx_notify_t *n, ctx_notify_watch_t *w,
                             ctx_t *ctx, ctx_notify_cb cb);

/* Stops watching: returns true iff this call prevented the callback (it
 * will never run), false if the callback has already started or w was not
 * active (also NULL). Either way, on return the library no longer uses w
 * and has dropped its reference to the context. Never blocks for long: if
 * the context is being cancelled in another thread at this very moment, it
 * waits for the library's short after-func (a few atomic operations) to
 * finish, never for user code. Safe inside any callback of the notifier,
 * including w's own (returns false there). */
CTX_API bool ctx_notify_unwatch(ctx_notify_watch_t *w);

/* Runs the callbacks of the watches that are done: call it when the fd is
 * readable (calling it at other times is harmless). Resets the fd first, so
 * a context done during the call makes it readable again for the next call.
 * Watches made done while it runs may be delivered now or on the next call.
 * Returns the number of callbacks run (0 for NULL). Never blocks, except
 * as ctx_notify_unwatch() may, for a few atomic operations. */
CTX_API size_t ctx_notify_dispatch(ctx_notify_t *n);

/* Whether w is active (watched, callback not started). NULL: false. */
CTX_API bool ctx_notify_watching(const ctx_notify_watch_t *w);

/* The number of active watches of n (0 for NULL): event-loop adapters use
 * it to keep the loop alive only while something is watched. */
CTX_API size_t ctx_notify_active(const ctx_notify_t *n);

#ifdef __cplusplus
}
#endif

#endif /* CTX_NOTIFY_H */
