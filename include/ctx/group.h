/*
 * libctx thread groups: Go's errgroup.WithContext plus sync.WaitGroup.
 *
 *     ctx_group_t *g = ctx_group_new(parent, 0);      // no limit
 *     ctx_group_go(g, fetch, &urls[0]);
 *     ctx_group_go(g, fetch, &urls[1]);
 *     int err = ctx_group_wait(g);    // joins all; the first error, or 0
 *     ctx_group_free(g);
 *
 * Each function runs on its own thread with the group's context, a child of
 * `parent` that is cancelled (cause = the error) as soon as one function
 * returns non-zero, and in any case when ctx_group_wait() returns. Threads
 * are joined (never detached): when ctx_group_wait() returns, every thread
 * the group started has exited.
 *
 * A function that ends its thread without returning (pthread_exit(), or a
 * pthread_cancel() acting in a cancellation point such as ctx_sleep() or
 * ctx_cond_wait()) counts as finished, without an error: the group's wait
 * does not hang on it. ctx_group_wait() and ctx_group_go() are cancellation
 * points while they wait (the group stays usable; a cancelled
 * ctx_group_wait() has joined nothing, and ctx_group_free() still must be
 * called).
 *
 * Errors follow ctx.h: the constructor returns NULL and sets errno, the
 * operations return 0 or an error number. Threads: ctx_group_go() may be
 * called from any thread, including the group's own functions;
 * ctx_group_wait() and ctx_group_free() from one thread at a time, not from
 * a function of the same group (it would wait for itself).
 */
#ifndef CTX_GROUP_H
#define CTX_GROUP_H

#include <ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ctx_group ctx_group_t;

/* A function run by the group: returns 0 or an error number. `ctx` is the
 * group's context, borrowed for the duration of the call. */
typedef int (*ctx_group_fn)(ctx_t *ctx, void *arg);

/* A new group whose context is a cancellable child of `parent` (the group
 * holds its own reference; the caller keeps its own). `limit` caps the
 * number of functions running at once (errgroup's SetLimit); 0 means no cap.
 * Returns NULL with errno EINVAL (NULL parent) or ENOMEM. Free it with
 * ctx_group_free(). */
CTX_API ctx_group_t *ctx_group_new(ctx_t *parent, unsigned limit);

/* The group's context (borrowed: valid until ctx_group_free(); retain it to
 * keep it longer). Derive from it the work that belongs to the group. NULL
 * for a NULL group. */
CTX_API ctx_t *ctx_group_ctx(ctx_group_t *g);

/* Starts fn(ctx, arg) on a new thread. When `limit` functions are running,
 * blocks until one returns (errgroup's Go). The function runs even if the
 * group's context is already done: it is expected to check it. Returns 0, or
 * EINVAL (NULL g or fn), ENOMEM or pthread_create()'s error (EAGAIN), in
 * which case fn is never called and the group is not cancelled. */
CTX_API int ctx_group_go(ctx_group_t *g, ctx_group_fn fn, void *arg);

/* As ctx_group_go(), but returns EAGAIN at once instead of blocking when
 * `limit` functions are running (errgroup's TryGo). */
CTX_API int ctx_group_try_go(ctx_group_t *g, ctx_group_fn fn, void *arg);

/* Waits for every started function to return, joins their threads, cancels
 * the group's context, and returns the first non-zero value a function
 * returned (0 if none; EINVAL for NULL). The group may be used again
 * afterwards (new functions get the now-cancelled context). */
CTX_API int ctx_group_wait(ctx_group_t *g);

/* Number of functions started and not yet returned (a snapshot). */
CTX_API unsigned ctx_group_running(ctx_group_t *g);

/* Waits as ctx_group_wait() if functions are still running (so no thread is
 * ever left behind), then frees the group and releases its context. NULL is
 * a no-op. */
CTX_API void ctx_group_free(ctx_group_t *g);

#ifdef __cplusplus
}
#endif

#endif /* CTX_GROUP_H */
