/*
 * libctx: Go's context package for C.
 *
 * A context carries cancellation, a deadline and request-scoped values down
 * a tree of work that may span threads, event loops and blocking I/O.
 *
 * Conventions, stated once for the whole header:
 *
 *  - Ownership. "New reference": the caller owns one reference and must give
 *    it back with ctx_release(). "Borrowed": valid as long as the caller
 *    holds a reference to the context it came from; do not release it.
 *  - Errors. Constructors return NULL and set errno. Operations return 0 or
 *    an error number, as pthreads do. Nothing prints or aborts on bad input
 *    (debug builds abort with a message on memory-safety misuse such as a
 *    release after the last reference).
 *  - Callbacks. When a function that takes a callback returns an error, the
 *    callback will never be called. No callback ever runs while a library
 *    lock is held, so a callback may call any function of this header; but
 *    an after-func fired by a deadline runs on the one timer thread that
 *    serves every deadline of the process, so it must not block (see
 *    ctx_after_func()).
 *  - Threads. Every function may be called from any thread at any time on a
 *    context the caller holds a reference to.
 *  - Time. ctx_time_t is nanoseconds on CLOCK_MONOTONIC (see ctx_now());
 *    durations are nanoseconds. Deadlines are absolute; a deadline at or
 *    before now is already passed. Arithmetic saturates, never overflows.
 *  - fork(). The child may use the roots and the contexts it creates after
 *    fork(). Contexts inherited from the parent may only be cancelled and
 *    released there (leaving a CTX_DEFER_CANCEL scope does both); their
 *    deadlines no longer fire in the child, and waiting on them there is not
 *    supported. The child's own deadlines work as usual.
 *  - errno. ctx_cancel(), ctx_release(), ctx_wait() and leaving a
 *    CTX_DEFER_CANCEL scope leave errno as it was (the after-funcs and value
 *    destructors they run included), so a failed call's errno can be read
 *    after the cleanup of its scope.
 *  - Signal handlers. Only these are async-signal-safe (lock-free loads, no
 *    allocation), on a context that stays referenced while the handler may
 *    run: ctx_now(), ctx_is_done(), ctx_err(), ctx_cause(), ctx_deadline().
 *    Nothing else is, ctx_cancel() and ctx_release() in particular: they
 *    take locks, and a handler that interrupts a thread holding one of
 *    those locks deadlocks. To cancel on a signal, use ctx_with_signals()
 *    (<ctx/sigctx.h>): its handler only writes to a pipe, and a library
 *    thread cancels. Otherwise set a volatile sig_atomic_t flag in the
 *    handler and cancel from a thread.
 */
#ifndef CTX_H
#define CTX_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The API version, kept here only; the build reads it from this file. */
#define CTX_VERSION_MAJOR 0
#define CTX_VERSION_MINOR 1
#define CTX_VERSION_PATCH 0
#define CTX_VERSION_STRING "0.1.0"

#if defined(CTX_STATIC)
#define CTX_API
#elif defined(_WIN32)
#define CTX_API __declspec(dllimport)
#elif defined(__GNUC__)
#define CTX_API __attribute__((visibility("default")))
#else
#define CTX_API
#endif

/* Opaque, reference-counted, thread-safe. */
typedef struct ctx ctx_t;

/* A value key. Its identity is its address: two keys with equal names are
 * different keys. Define one per value, static and const, in the module that
 * owns the value, and export typed accessors rather than the key:
 *     static const ctx_key_t trace_key = CTX_KEY("trace-id");
 * The name is only used by ctx_format(). */
typedef struct ctx_key {
    const char *name;
} ctx_key_t;
#define CTX_KEY(name) {name}

typedef int64_t ctx_time_t;     /* ns on CLOCK_MONOTONIC */
typedef int64_t ctx_duration_t; /* ns */
#define CTX_NANOSECOND ((ctx_duration_t)1)
#define CTX_MICROSECOND (1000 * CTX_NANOSECOND)
#define CTX_MILLISECOND (1000 * CTX_MICROSECOND)
#define CTX_SECOND (1000 * CTX_MILLISECOND)
#define CTX_MINUTE (60 * CTX_SECOND)
#define CTX_HOUR (60 * CTX_MINUTE)
#define CTX_TIME_MAX INT64_MAX /* the end of time: a wait until it never ends */

#define CTX_CANCELED ECANCELED         /* Go: context.Canceled */
#define CTX_DEADLINE_EXCEEDED ETIMEDOUT /* Go: context.DeadlineExceeded */

/* The current time on CLOCK_MONOTONIC, in ns. */
CTX_API ctx_time_t ctx_now(void);

/* The two roots. Static: never done, no deadline, no values, never freed;
 * ctx_retain() and ctx_release() on them are no-ops, so they may be passed
 * and released like any other context. ctx_todo() marks a place where the
 * right context is not known yet (Go's context.TODO). */
CTX_API ctx_t *ctx_background(void);
CTX_API ctx_t *ctx_todo(void);

/*
 * Derivations. Each returns a new reference to a child of `parent`, or NULL
 * with errno set: EINVAL (NULL parent or key), ENOMEM, or EAGAIN (the timer
 * thread could not be started). The child holds a reference to its parent,
 * so the caller may release the parent at once. A child of a done parent is
 * done at birth with the parent's err and cause.
 */

/* A cancellable child (Go: WithCancel, and WithCancelCause with
 * ctx_cancel_cause()). Done when cancelled or when its parent is done. */
CTX_API ctx_t *ctx_with_cancel(ctx_t *parent);

/* A cancellable child that is also done at `deadline` with err
 * CTX_DEADLINE_EXCEEDED and cause `cause` (or CTX_DEADLINE_EXCEEDED when
 * cause is 0). If the parent's deadline is earlier, this is ctx_with_cancel()
 * and ctx_deadline() reports the parent's (the child is then done when the
 * parent is: if the parent's deadline has just passed, a few microseconds
 * later, when the timer thread reaches it). Otherwise a deadline at or
 * before now gives a child done at birth. No thread or fd is used per context: one timer
 * thread serves the process. */
CTX_API ctx_t *ctx_with_deadline(ctx_t *parent, ctx_time_t deadline);
CTX_API ctx_t *ctx_with_deadline_cause(ctx_t *parent, ctx_time_t deadline,
                                       int cause);

/* ctx_with_deadline(parent, ctx_now() + timeout), saturating: a zero or
 * negative timeout gives a child done at birth, a huge one a deadline at
 * CTX_TIME_MAX. */
CTX_API ctx_t *ctx_with_timeout(ctx_t *parent, ctx_duration_t timeout);
CTX_API ctx_t *ctx_with_timeout_cause(ctx_t *parent, ctx_duration_t timeout,
                                      int cause);

/* A child that carries `value` under `key` (Go: WithValue). The value is
 * borrowed by the context; `destroy`, if not NULL, is called with it exactly
 * once, when the context is freed, in whichever thread drops the last
 * reference. A NULL value is stored and shadows an ancestor's. If the call
 * fails, destroy is not called. */
CTX_API ctx_t *ctx_with_value(ctx_t *parent, const ctx_key_t *key,
                              void *value, void (*destroy)(void *value));

/* A child that keeps the parent's values but not its cancellation: never
 * done, no deadline, cause 0 (Go: WithoutCancel). */
CTX_API ctx_t *ctx_without_cancel(ctx_t *parent);

/*
 * Cancellation. Only contexts made by the cancel, deadline and timeout
 * derivations can be cancelled; for any other, and for NULL, these return
 * EINVAL and change nothing. The first cancellation wins; later ones return
 * 0 and change nothing. When the call returns, every descendant is done with
 * the same err and cause, and every after-func this cancellation triggered
 * has run (in the calling thread). Cancelling does not release: the idiom is
 * ctx_cancel(c); ctx_release(c); or CTX_DEFER_CANCEL below.
 */
CTX_API int ctx_cancel(ctx_t *ctx); /* err = cause = CTX_CANCELED */
/* err = CTX_CANCELED, cause = `cause` (CTX_CANCELED when cause is 0). */
CTX_API int ctx_cancel_cause(ctx_t *ctx, int cause);

/* Reference counting. ctx_retain() returns ctx (NULL stays NULL). Releasing
 * the last reference frees the context; if it was never cancelled it is
 * first detached from its parent and its timer is stopped, so nothing leaks
 * (unlike Go, where an uncancelled child lives as long as its parent).
 * ctx_release(NULL) is a no-op. Using a context after its last release is
 * undefined; debug builds abort with a message. */
CTX_API ctx_t *ctx_retain(ctx_t *ctx);
CTX_API void ctx_release(ctx_t *ctx);

/* Queries. Each is lock-free; ctx_is_done() is one pointer hop and one
 * atomic load. NULL gives false / 0 / NULL. */
CTX_API bool ctx_is_done(ctx_t *ctx);
/* True when ctx can never be done: the roots, ctx_without_cancel() and the
 * value contexts below them (Go: ctx.Done() == nil). Code that would arrange
 * to be told of the end (an after-func, a done fd, a wake-up thread) can
 * skip it. NULL: false. */
CTX_API bool ctx_is_never_done(ctx_t *ctx);
/* 0 while live, then CTX_CANCELED or CTX_DEADLINE_EXCEEDED, never changing. */
CTX_API int ctx_err(ctx_t *ctx);
/* 0 while live, then the cause given to the cancellation that won (or the
 * err when none was given). Never visible before ctx_err(). */
CTX_API int ctx_cause(ctx_t *ctx);
/* True and *deadline set (if deadline is not NULL) when the context or an
 * ancestor up to the nearest without_cancel has a deadline: the earliest. */
CTX_API bool ctx_deadline(ctx_t *ctx, ctx_time_t *deadline);
/* The value of the nearest ancestor (or ctx itself) that holds `key`, or
 * NULL. Borrowed: valid while the caller holds a reference to ctx. Values
 * stay readable after cancellation. */
CTX_API void *ctx_value(ctx_t *ctx, const ctx_key_t *key);

/* ctx_is_done() and ctx_err() are also inline (GCC and Clang): the check a
 * loop makes on every iteration then costs a load and a compare, not a call.
 * They read the start of a context, which is part of the ABI (SOVERSION 1):
 * every context begins with this view, and the context that holds its
 * cancel state keeps err right after it. Define CTX_NO_INLINE_QUERIES to
 * call the functions instead. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(CTX_NO_INLINE_QUERIES)
struct __attribute__((may_alias)) ctx__view {
    uint32_t reserved0_;
    uint8_t reserved1_[4];
    const void *reserved2_;
    const struct ctx__view *src; /* the holder of the cancel state, or NULL */
    uint32_t err;                /* meaningful in a holder only */
};

static inline int ctx__err_inline(ctx_t *ctx)
{
    const struct ctx__view *v = (const struct ctx__view *)(const void *)ctx;
    if (v == NULL || v->src == NULL)
        return 0;
    return (int)__atomic_load_n(&v->src->err, __ATOMIC_ACQUIRE);
}
#define ctx_is_done(ctx) (ctx__err_inline(ctx) != 0)
#define ctx_err(ctx) ctx__err_inline(ctx)
#endif

/*
 * Waiting. Waiters sleep on the context's err word (futex on Linux) and cost
 * nothing while nobody waits.
 */
/* Blocks until done and returns ctx_err(). On a context that can never be
 * done it blocks forever, like receiving from Go's nil Done channel.
 * NULL returns EINVAL. ctx_wait() and ctx_wait_until() are cancellation
 * points: a pthread_cancel() acts while they sleep, leaving the context as
 * it was. */
CTX_API int ctx_wait(ctx_t *ctx);
/* Blocks until done or until `until` (CTX_TIME_MAX: forever); returns
 * ctx_err() at return: 0 means still live. NULL returns EINVAL. */
CTX_API int ctx_wait_until(ctx_t *ctx, ctx_time_t until);
/* A file descriptor that becomes readable once the context is done and stays
 * readable (level-triggered, like a closed channel), for poll/epoll/select
 * and event loops. Made on the first call (no fd otherwise) and owned by the
 * context: do not read from, write to or close it; it is closed when the
 * last context sharing it is freed. Value contexts share the fd of their
 * nearest cancellable ancestor. A context that can never be done (the roots,
 * without_cancel and the value contexts below them) returns a valid fd that
 * never becomes readable (one for the process, never closed). So two
 * contexts may return the same fd: epoll rejects a second registration
 * of it (EEXIST); dup() it per context, or register it once
 * (docs/reference/ctx_done_fd.md).
 * Returns -1 with errno EINVAL (NULL), EMFILE/ENFILE (no fd left) or ENOMEM;
 * the context works as before without it. */
CTX_API int ctx_done_fd(ctx_t *ctx);

/*
 * After-funcs (Go: AfterFunc). fn(arg) runs exactly once after ctx is done,
 * unless ctx_after_stop() prevents it: in the thread that cancelled (the
 * timer thread for deadlines), after every library lock is dropped. If ctx is
 * already done, fn runs in the calling thread before ctx_after_func()
 * returns. On a context that can never be done, fn never runs. fn runs
 * synchronously (Go's AfterFunc starts a goroutine): keep it short. While
 * an fn fired by a deadline runs, no other deadline of the process fires, so
 * it must not block, and must never wait for another context's deadline,
 * which could not come; hand such work to a thread of your own.
 *
 * Returns a registration (holding a reference to ctx, so the context stays
 * alive while it is registered), or NULL with errno EINVAL (NULL ctx or fn)
 * or ENOMEM, in which case fn is never called.
 */
typedef struct ctx_after ctx_after_t;
CTX_API ctx_after_t *ctx_after_func(ctx_t *ctx, void (*fn)(void *arg),
                                    void *arg);
/* ctx_after_func() with flags. CTX_AFTER_NO_INLINE: fn never runs in the
 * calling thread. If ctx is already done, nothing is registered and NULL is
 * returned with errno set to ctx_err(ctx) (CTX_CANCELED or
 * CTX_DEADLINE_EXCEEDED), so the caller handles the done context on its
 * own path, under whatever locks it holds. Otherwise fn runs as for
 * ctx_after_func(), in the cancelling thread or the timer thread. Every
 * helper and integration that registers while holding its own state (a
 * mutex, a half-built handle) uses this instead of checking for an inline
 * run. Unknown flags: NULL with EINVAL. flags 0 is ctx_after_func(). */
#define CTX_AFTER_NO_INLINE 1u
CTX_API ctx_after_t *ctx_after_func_flags(ctx_t *ctx, void (*fn)(void *arg),
                                          void *arg, unsigned flags);
/* Ends a registration: each one must be ended by exactly one call, which
 * frees it and drops its reference to the context. Returns true iff this
 * call prevented fn from starting (also when the context is done but fn has
 * not started yet, and always on a context that can never be done). If fn is
 * running in another thread, waits for it to return, so arg may be freed
 * afterwards; called from inside fn itself, it does not wait. NULL: false. */
CTX_API bool ctx_after_stop(ctx_after_t *reg);

/*
 * Intrusive after-funcs: the registration lives in caller memory (40 bytes
 * on LP64) and nothing is allocated, for code that watches many contexts
 * (the notifier of <ctx/notify.h> embeds one per watch). Same exactly-once
 * and stop rules as ctx_after_func_flags() and ctx_after_stop(), with these
 * differences:
 *  - The node holds no reference: ctx must stay alive (the caller holds a
 *    reference) from ctx_after_node_start() until ctx_after_node_stop()
 *    returns, and the node's memory must stay valid as long.
 *  - Every successful start is ended by exactly one ctx_after_node_stop();
 *    after it returns the library never touches the node, which may then be
 *    freed or started again. Stop on a zeroed or stopped node: false.
 *  - Once fn has started, the library no longer uses `link` (fn may use it,
 *    e.g. to queue the node), and writes only its private state word, once,
 *    when fn returns: fn must not free the node.
 *  - fn must be short and must never block, stop another node, or wait for
 *    anything: fns of nodes run before the other after-funcs of a
 *    cancellation, and a stop of a node whose context is being cancelled
 *    waits until the cancelling thread has reached that node (a few atomic
 *    operations per node queued before it).
 *  - `user` is the caller's (never read or written by the library) and so
 *    is `link` while the node is not started or once fn has started;
 *    `ctx` is the context of the last start (read-only).
 * Zero a node before its first use (memset, calloc, CTX_AFTER_NODE_INIT).
 */
typedef struct ctx_after_link {
    struct ctx_after_link *next;
    struct ctx_after_link **prev;
} ctx_after_link_t;
typedef struct ctx_after_node ctx_after_node_t;
struct ctx_after_node {
    ctx_after_link_t link; /* see above */
    uint32_t state_;       /* private */
    uint32_t user;         /* the caller's */
    ctx_t *ctx;            /* read-only: the context of the last start */
    void (*fn_)(ctx_after_node_t *node); /* private */
};
#ifdef __cplusplus
#define CTX_AFTER_NODE_INIT {}
#else
#define CTX_AFTER_NODE_INIT {0}
#endif

/* Starts `node`: fn(node) runs exactly once after ctx is done, unless
 * ctx_after_node_stop() prevents it, in the cancelling thread or the timer
 * thread, after every library lock is dropped. On a context that can never
 * be done, fn never runs. If ctx is already done: with CTX_AFTER_NO_INLINE,
 * returns ctx_err(ctx) (CTX_CANCELED or CTX_DEADLINE_EXCEEDED) and the node
 * is not started (node->ctx is set all the same); without it, fn runs in
 * the calling thread before this returns 0 (stop the node afterwards as
 * usual). Returns 0, or EINVAL (NULL node, ctx or fn, unknown flags) or
 * EBUSY (node started and not stopped), in which case fn never runs and
 * the node is unchanged. Never allocates. */
CTX_API int ctx_after_node_start(ctx_after_node_t *node, ctx_t *ctx,
                                 void (*fn)(ctx_after_node_t *node),
                                 unsigned flags);

/* Ends a started node: returns true iff this call prevented fn from
 * starting (also when the context is done but fn has not started yet, and
 * always on a context that can never be done). If fn is running in another
 * thread, waits for it to return; called from inside fn itself, it does not
 * wait (and returns false). On return the library no longer uses the node.
 * NULL, a zeroed or an already stopped node: false. */
CTX_API bool ctx_after_node_stop(ctx_after_node_t *node);

/* Describes ctx in the shape of Go's String(), e.g.
 *   context.Background.WithCancel.WithValue(trace-id, ...)
 *   context.Background.WithDeadline(2026-12-02T01:50:12.5Z [99.8ms])
 * (the deadline on the wall clock, UTC, RFC 3339, then the time left; the
 * wall time is computed from the time left, so setting the system clock
 * moves it while the deadline itself stays put). snprintf rules:
 * writes at most size bytes including the NUL (buf may be NULL when size is
 * 0) and returns the length of the whole description. */
CTX_API size_t ctx_format(ctx_t *ctx, char *buf, size_t size);

/* A static, thread-safe description of an error number: "context canceled"
 * for CTX_CANCELED, "context deadline exceeded" for CTX_DEADLINE_EXCEEDED,
 * "success" for 0, the library's own text for the errors it returns itself
 * (EINVAL, ENOMEM, EAGAIN, EMFILE, ENFILE, EBADF, EINTR), the system's text
 * for other errno values where the C library offers a thread-safe one (glibc
 * 2.32 and later), and "unknown error" otherwise. Never NULL. */
CTX_API const char *ctx_strerror(int err);

/* Go's `defer cancel()`: a context variable that is cancelled (if it can be)
 * and released when it leaves scope. GCC and Clang only. Leaving the scope
 * keeps errno as it was, so a failed call's errno can be read after it.
 *     ctx_t *c CTX_DEFER_CANCEL = ctx_with_timeout(parent, CTX_SECOND);  */
static inline void ctx__cancel_release(ctx_t **pctx)
{
    if (*pctx != NULL) {
        int saved = errno;
        (void)ctx_cancel(*pctx);
        ctx_release(*pctx);
        errno = saved;
    }
}
#if defined(__GNUC__)
#define CTX_DEFER_CANCEL __attribute__((cleanup(ctx__cancel_release)))
#endif

#ifdef __cplusplus
}
#endif

#endif /* CTX_H */
