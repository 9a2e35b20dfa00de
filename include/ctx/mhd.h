/*
 * libctx-mhd: an HTTP server on GNU libmicrohttpd whose handlers get a
 * context, as Go's net/http gives r.Context().
 *
 *     static void hello(ctx_t *ctx, const ctx_mhd_request_t *req,
 *                       ctx_mhd_reply_t *reply, void *arg)
 *     {
 *         // ctx: cancelled (cause ECONNRESET) if the client hangs up,
 *         // done at the caller's propagated deadline, carries its trace
 *         ctx_mhd_reply_buffer(reply, 200, "text/plain", "hi\n", 3);
 *     }
 *     ctx_mhd_options_t o = {.port = 8080, .bind_address = "127.0.0.1"};
 *     ctx_mhd_server_t *srv = ctx_mhd_start(ctx_background(), &o, hello, NULL);
 *     ...
 *     ctx_mhd_shutdown(srv, 5 * CTX_SECOND);   // Go: srv.Shutdown(ctx)
 *     ctx_mhd_free(srv);
 *
 * Each request's context is derived from the server's root context:
 *  - cancelled with cause ECONNRESET when the client hangs up while the
 *    handler runs or while its reply is pending (an asynchronous handler);
 *  - done at the deadline the caller propagated in `grpc-timeout`, clamped
 *    by the server's max_deadline (err CTX_DEADLINE_EXCEEDED);
 *  - carrying the caller's W3C trace context (traceparent, tracestate,
 *    baggage) as values, read with <ctx/propagate.h>'s accessors;
 *  - cancelled with cause ESHUTDOWN when ctx_mhd_shutdown()'s grace period
 *    ends before the handler has replied;
 *  - cancelled with CTX_CANCELED once the request is over (as Go does when
 *    ServeHTTP returns).
 *
 * Replying. A handler replies exactly once with ctx_mhd_reply() or
 * ctx_mhd_reply_buffer(), either before it returns (the synchronous form)
 * or later from any thread (the asynchronous form: the handler hands
 * `reply` to a worker and returns; the request stays open until the worker
 * replies). In the internal polling modes a pending connection is
 * suspended (MHD_suspend_connection) and costs no thread; in thread-per-
 * connection mode its connection thread waits for the reply.
 *
 * Hang-up detection: one watcher thread per server holds an epoll set with
 * the sockets of exactly the requests whose handler is running or whose
 * reply is pending, armed for EPOLLRDHUP (plus the implicit EPOLLHUP and
 * EPOLLERR). libmicrohttpd does not read a connection while its handler
 * runs or while it is suspended, so this is the only prompt signal; its
 * completion notification (client abort, read error) covers what remains.
 *
 * Conventions are those of <ctx.h>: constructors return NULL and set
 * errno, operations return 0 or an error number.
 */
#ifndef CTX_MHD_H
#define CTX_MHD_H

#include <ctx.h>

#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ctx_mhd_server ctx_mhd_server_t;
typedef struct ctx_mhd_reply ctx_mhd_reply_t;

/* How libmicrohttpd runs connections. */
typedef enum ctx_mhd_mode {
    /* MHD_USE_AUTO_INTERNAL_THREAD: `threads` polling threads (epoll or
     * poll, MHD's choice), each serving many connections. Handlers run on
     * them: a slow synchronous handler stalls the other connections of its
     * thread, so slow work belongs to the asynchronous form. */
    CTX_MHD_MODE_POLL = 0,
    /* MHD_USE_THREAD_PER_CONNECTION: one thread per connection. */
    CTX_MHD_MODE_THREAD_PER_CONNECTION = 1
} ctx_mhd_mode_t;

/* Server options; a zeroed struct gives the defaults. */
typedef struct ctx_mhd_options {
    uint16_t port;              /* 0: any free port (see ctx_mhd_port()) */
    const char *bind_address;   /* IPv4 literal, e.g. "127.0.0.1"; NULL: any */
    ctx_mhd_mode_t mode;
    unsigned threads;           /* CTX_MHD_MODE_POLL: polling threads (0: 1) */
    unsigned connection_limit;  /* 0: libmicrohttpd's default */
    unsigned connection_timeout_s; /* idle connection timeout; 0: none */
    ctx_duration_t max_deadline; /* clamps every request's deadline; 0: none */
    size_t max_body;            /* larger bodies get 413; 0: 1 MiB */
    size_t max_header_bytes;    /* per-connection memory for the request
                                   line and headers (more gets 431); 0: 32 KiB */
    /* After shutdown's grace period has cancelled the rest, how long
     * ctx_mhd_shutdown() waits for handlers to honour the cancel before it
     * answers still-pending asynchronous requests with 503 itself.
     * 0: 1 second. */
    ctx_duration_t cancel_wait;
} ctx_mhd_options_t;

/* What a handler is told about its request. Every pointer is borrowed and
 * valid until the request is replied to. */
typedef struct ctx_mhd_request {
    struct MHD_Connection *connection; /* for MHD_lookup_connection_value() */
    const char *method;                /* "GET", "POST" ... */
    const char *url;                   /* path, without the query string */
    const char *version;               /* "HTTP/1.1" */
    const char *body;                  /* the whole body, NUL-terminated */
    size_t body_size;                  /* its length (it may hold NULs) */
} ctx_mhd_request_t;

/* A handler. `ctx` is borrowed: valid until the handler has replied and
 * returned (ctx_retain() it to keep it longer). `req` is valid until the
 * reply. The handler replies exactly once, before returning or later from
 * any thread; a request that is never replied to stays open until
 * ctx_mhd_shutdown() answers it with 503. */
typedef void ctx_mhd_handler_fn(ctx_t *ctx, const ctx_mhd_request_t *req,
                                ctx_mhd_reply_t *reply, void *arg);

/* Starts a server: handler(ctx, req, reply, arg) for every request, ctx a
 * child of `root` (which the server retains). Returns a new server, or
 * NULL with errno: EINVAL (NULL root, opts or handler, a bad mode or
 * bind_address), ENOMEM, EMFILE, EAGAIN (no thread), EADDRINUSE or another
 * error from binding (libmicrohttpd's errno, EIO when it sets none). */
CTX_API ctx_mhd_server_t *ctx_mhd_start(ctx_t *root,
                                        const ctx_mhd_options_t *opts,
                                        ctx_mhd_handler_fn *handler, void *arg);

/* The port the server listens on (useful with port 0), or 0 (NULL). */
CTX_API uint16_t ctx_mhd_port(ctx_mhd_server_t *srv);

/* The libmicrohttpd daemon, borrowed, for MHD_get_daemon_info() and the
 * like; do not stop it. NULL for NULL. */
CTX_API struct MHD_Daemon *ctx_mhd_daemon(ctx_mhd_server_t *srv);

/* Go's Server.Shutdown, bounded: stops accepting (MHD_quiesce_daemon),
 * waits up to `grace` for open requests to finish, then cancels the
 * contexts of the rest with cause ESHUTDOWN, waits up to cancel_wait for
 * their handlers to reply, answers still-pending asynchronous requests with
 * 503 itself, and stops the daemon (closing idle keep-alive connections).
 * A synchronous handler that ignores its context keeps its libmicrohttpd
 * thread, and this call waits for it when stopping the daemon.
 * Returns 0 when every request finished within `grace`, ETIMEDOUT when
 * some had to be cancelled, EINVAL (NULL), EALREADY (called before).
 * Not from a handler. */
CTX_API int ctx_mhd_shutdown(ctx_mhd_server_t *srv, ctx_duration_t grace);

/* Shuts down with no grace if ctx_mhd_shutdown() was not called, and frees
 * the server. NULL is a no-op. Not from a handler. */
CTX_API void ctx_mhd_free(ctx_mhd_server_t *srv);

/* Replies with `status` and `response` (libmicrohttpd's; this call owns it
 * from now on and destroys it in every case; NULL sends an empty body).
 * Ends the handler's claim on `reply` and `req`: neither may be used after.
 * Any thread. Returns 0 (queued), EINVAL (NULL reply, status outside
 * 100..999), ECONNRESET (the client hung up: nothing sent), ESHUTDOWN
 * (shutdown answered the request already), EALREADY (replied before: a
 * misuse, the second response is destroyed). */
CTX_API int ctx_mhd_reply(ctx_mhd_reply_t *reply, unsigned status,
                          struct MHD_Response *response);

/* ctx_mhd_reply() with a copy of `size` bytes of `body` and, if not NULL,
 * a Content-Type header. Also ENOMEM (a 500 is then sent instead). */
CTX_API int ctx_mhd_reply_buffer(ctx_mhd_reply_t *reply, unsigned status,
                                 const char *content_type, const void *body,
                                 size_t size);

/* Counters of a server since it started. */
typedef struct ctx_mhd_stats {
    uint64_t requests;       /* handlers started */
    uint64_t active;         /* handlers running or replies pending now */
    uint64_t hangups;        /* requests whose client hung up first */
    uint64_t shutdown_cancels; /* requests cancelled by shutdown */
    uint64_t rejected;       /* answered 4xx by the server itself */
    /* From the hang-up being seen to the handler having replied and
     * returned (its work stopped), over every hang-up: */
    ctx_duration_t hangup_stop_max;
    ctx_duration_t hangup_stop_total;
} ctx_mhd_stats_t;

/* Fills *stats. Returns 0 or EINVAL (NULL). Any thread. */
CTX_API int ctx_mhd_stats(ctx_mhd_server_t *srv, ctx_mhd_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif
