/*
 * libctx propagation: a context's deadline, trace context and baggage
 * across processes (gRPC's deadline propagation and OpenTelemetry's W3C
 * propagators, for C).
 *
 *     // client: put the context into the outgoing request's headers
 *     ctx_propagate_inject(ctx, &headers_carrier, CTX_PROPAGATE_ALL);
 *
 *     // server: a request context from the incoming headers, done at the
 *     // earlier of the caller's deadline and 5 s from now
 *     ctx_t *rc = ctx_propagate_extract(root, &req_carrier, 5 * CTX_SECOND,
 *                                       CTX_PROPAGATE_ALL);
 *
 * Fields (the keys the carrier sees, lowercase):
 *  - "grpc-timeout": the time left until the context's deadline, in gRPC's
 *    wire format: 1 to 8 ASCII digits and a unit (H hours, M minutes,
 *    S seconds, m milliseconds, u microseconds, n nanoseconds); the sender
 *    picks the finest unit whose value fits in 8 digits, rounding up.
 *  - "traceparent" and "tracestate": W3C Trace Context Level 1.
 *  - "baggage": W3C Baggage.
 *
 * Carriers. A carrier is a few callbacks over whatever holds the fields:
 * HTTP headers, gRPC metadata, the environment of a child process (ready
 * made below). Callbacks run in the calling thread, before the call
 * returns, and never after. Values given to set() are NUL-terminated and
 * valid only during the call (copy them). Values returned by get() and
 * get_all() must stay valid until ctx_propagate_extract() returns; the
 * extracted context keeps copies. An HTTP carrier compares names without
 * regard to case (HTTP field names are case-insensitive).
 *
 * Several field lines with one name: W3C allows tracestate and baggage to
 * be split across lines (they are joined with ','); two traceparent lines
 * make the traceparent invalid; two grpc-timeout lines make it ignored.
 * A carrier that can see every line provides get_all(). A carrier with get()
 * only returns one value: either the only line, or every line joined with
 * ',' (as RFC 9110 allows for list fields; a joined traceparent is then
 * invalid by its format, as it must be).
 *
 * Values are kept in the extracted context under private keys; read them
 * with the typed accessors (ctx_trace_id() ...). Errors follow ctx.h:
 * constructors return NULL and set errno, operations return 0 or an error
 * number. Bad field values are never errors: they are ignored (deadline,
 * baggage) or restart the trace (traceparent), as the specifications say.
 * Threads: every function may be called from any thread; a carrier is used
 * only by the thread that passed it.
 */
#ifndef CTX_PROPAGATE_H
#define CTX_PROPAGATE_H

#include <ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The field names, as given to the carrier's callbacks. */
#define CTX_PROPAGATE_KEY_GRPC_TIMEOUT "grpc-timeout"
#define CTX_PROPAGATE_KEY_TRACEPARENT "traceparent"
#define CTX_PROPAGATE_KEY_TRACESTATE "tracestate"
#define CTX_PROPAGATE_KEY_BAGGAGE "baggage"

/* What to inject or extract (bits of `what`; 0 means CTX_PROPAGATE_ALL). */
#define CTX_PROPAGATE_DEADLINE 1u /* grpc-timeout */
#define CTX_PROPAGATE_TRACE 2u    /* traceparent and tracestate */
#define CTX_PROPAGATE_BAGGAGE 4u  /* baggage */
#define CTX_PROPAGATE_ALL 7u
/* Inject only: send the context's own span id as the parent id instead of
 * a new one (see ctx_propagate_inject()). */
#define CTX_PROPAGATE_KEEP_SPAN 8u

/* A carrier: `self` is passed to every callback. Inject needs set; extract
 * needs get or get_all (get_all is used when both are given). */
typedef struct ctx_carrier {
    void *self;
    /* Sets field `key` to `value`, replacing any earlier value of that
     * field. Returns 0 or an error number (which inject then returns). */
    int (*set)(void *self, const char *key, const char *value);
    /* The value of field `key` (see above for several lines), or NULL when
     * the field is absent. */
    const char *(*get)(void *self, const char *key);
    /* Every line of field `key`, in order: stores up to `max` value
     * pointers in `values` and returns how many lines there are (which may
     * be more than max; 0 when the field is absent). */
    size_t (*get_all)(void *self, const char *key, const char **values,
                      size_t max);
} ctx_carrier_t;

/* Writes ctx's deadline, trace context and baggage (as `what` selects)
 * into the carrier, one set() per field:
 *  - grpc-timeout when ctx has a deadline: the time left, rounded up
 *    ("0n" if it has passed); nothing without a deadline;
 *  - traceparent (version 00) and tracestate when ctx carries a trace
 *    context (ctx_propagate_extract(), ctx_trace_start()); nothing
 *    otherwise. The parent id sent is a new random span id per call (each
 *    outgoing request is a new span, child of ctx's span), or ctx's own
 *    span id with CTX_PROPAGATE_KEEP_SPAN (use ctx_trace_child() first to
 *    have one to log). The sampled flag is kept; other flags are sent as 0.
 *  - baggage when ctx carries any.
 * Returns 0, EINVAL (NULL ctx or carrier, no set(), unknown bits in `what`)
 * or the first error set() returned (fields after it are not set). Never
 * allocates. */
CTX_API int ctx_propagate_inject(ctx_t *ctx, const ctx_carrier_t *carrier,
                                 unsigned what);

/* A new reference to a cancellable child of `parent` (ctx_cancel() works
 * on it: a server cancels it when the client hangs up) carrying what the
 * carrier holds (as `what` selects):
 *  - deadline: done at the earliest of the propagated grpc-timeout (from
 *    now), now + `limit` (when limit > 0: the receiver's own maximum) and
 *    the parent's deadline. A propagated timeout of 0 or one that has
 *    already passed gives a context done at birth with
 *    CTX_DEADLINE_EXCEEDED. An invalid grpc-timeout is ignored.
 *  - trace: the caller's trace id and flags, its parent id as this
 *    context's parent id, and a new random span id for this hop. A missing
 *    or invalid traceparent restarts the trace: a new trace id, no parent
 *    id, flags 0, and tracestate dropped. A tracestate with an invalid
 *    member, a duplicate key or more than 32 members is dropped whole;
 *    empty members are skipped; several lines are combined in order.
 *  - baggage: the valid members (invalid ones are dropped), combined over
 *    several lines, up to 180 members (the most the W3C grammar allows;
 *    W3C asks for at least 64) and 8192 bytes; members beyond these limits
 *    are dropped whole. Percent-encoding and properties are kept.
 * Returns NULL with errno EINVAL (NULL parent or carrier, neither get nor
 * get_all, unknown bits in `what`) or ENOMEM (nothing leaked). */
CTX_API ctx_t *ctx_propagate_extract(ctx_t *parent,
                                     const ctx_carrier_t *carrier,
                                     ctx_duration_t limit, unsigned what);

/*
 * The environment of a child process as a carrier. Field names map to
 * variable names by upper-casing and '-' -> '_' (TRACEPARENT, TRACESTATE,
 * BAGGAGE, GRPC_TIMEOUT), as OpenTelemetry's environment carrier does. The
 * grpc-timeout is measured when the environment is built: time spent until
 * the child extracts it is not counted (keep that short, or pass a limit).
 */

/* A new environment block for execve()/posix_spawn(): a copy of `base`
 * (NULL: the calling process's environ) without any of the four variables,
 * then the fields ctx_propagate_inject() would set for ctx and `what`.
 * NULL-terminated; free it with ctx_propagate_env_free(). The strings of
 * base are copied, so base may change afterwards (but environ must not
 * change during the call: setenv() in another thread races with it, as
 * with any reader of environ). Returns NULL with errno EINVAL (NULL ctx,
 * unknown bits) or ENOMEM. */
CTX_API char **ctx_propagate_env(ctx_t *ctx, char *const base[],
                                 unsigned what);

/* Frees a block from ctx_propagate_env(). NULL is a no-op. */
CTX_API void ctx_propagate_env_free(char **envp);

/* ctx_propagate_extract() from an environment block (NULL: the calling
 * process's environ, e.g. at the start of main() in the child). Same
 * results and errors. */
CTX_API ctx_t *ctx_propagate_extract_env(ctx_t *parent, char *const envp[],
                                         ctx_duration_t limit, unsigned what);

/*
 * grpc-timeout on its own, for carriers that need it elsewhere.
 */
/* Room for the longest grpc-timeout value and its NUL ("99999999H"). */
#define CTX_GRPC_TIMEOUT_SIZE 10

/* Writes `timeout` in grpc-timeout format into buf (at least
 * CTX_GRPC_TIMEOUT_SIZE bytes, NUL-terminated): the finest unit whose
 * value fits in 8 digits, rounded up (99999999 ns is "99999999n",
 * 100000000 ns is "100000u"); "0n" for zero or a negative timeout.
 * Returns the length (2 to 9), or 0 for a NULL buf. */
CTX_API size_t ctx_grpc_timeout_format(ctx_duration_t timeout, char *buf);

/* Parses a grpc-timeout value: 1 to 8 ASCII digits then one unit letter,
 * optionally surrounded by spaces or tabs (HTTP's OWS), nothing else. A
 * value too large for ctx_duration_t saturates at INT64_MAX. Returns 0 and
 * sets *timeout, or EINVAL (NULL argument, or not in that format; *timeout
 * is then unchanged). */
CTX_API int ctx_grpc_timeout_parse(const char *value, ctx_duration_t *timeout);

/*
 * The trace context a context carries (W3C Trace Context). The accessors
 * read the nearest ancestor's trace context, like ctx_value().
 */
#define CTX_TRACE_SAMPLED 1u /* the sampled bit of the trace flags */

/* A new reference to a child of `parent` starting a new trace: a new random
 * trace id and span id, no parent id, the given trace flags (e.g.
 * CTX_TRACE_SAMPLED), no tracestate; baggage stays. For a process that
 * originates requests. Returns NULL with errno EINVAL (NULL parent) or
 * ENOMEM. */
CTX_API ctx_t *ctx_trace_start(ctx_t *parent, unsigned flags);

/* A new reference to a child of `parent` in the same trace with a new
 * random span id whose parent id is parent's span id (a child span);
 * tracestate and flags stay. Without a trace context in parent, as
 * ctx_trace_start(parent, 0). Returns NULL with errno EINVAL or ENOMEM. */
CTX_API ctx_t *ctx_trace_child(ctx_t *parent);

/* Copies the 16-byte trace id into out and returns true, or returns false
 * (out untouched) when ctx carries no trace context or an argument is
 * NULL. */
CTX_API bool ctx_trace_id(ctx_t *ctx, uint8_t out[16]);

/* This hop's own 8-byte span id (the parent id that
 * CTX_PROPAGATE_KEEP_SPAN injects). As ctx_trace_id(). */
CTX_API bool ctx_trace_span_id(ctx_t *ctx, uint8_t out[8]);

/* The caller's span id (the parent-id field of the traceparent that was
 * extracted). False also when the trace was started here (no parent). */
CTX_API bool ctx_trace_parent_id(ctx_t *ctx, uint8_t out[8]);

/* The trace flags (0 to 255; bit CTX_TRACE_SAMPLED), as received in a
 * version-00 traceparent (only the sampled bit of a higher version), or -1
 * without a trace context (or NULL ctx). */
CTX_API int ctx_trace_flags(ctx_t *ctx);

/* The tracestate to forward (list members joined with ',', as validated
 * and combined at extraction), or NULL when there is none. Borrowed: valid
 * while the caller holds a reference to ctx. */
CTX_API const char *ctx_trace_state(ctx_t *ctx);

/* Formats ctx's trace context as a version-00 traceparent with ctx's own
 * span id, "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>", for logs.
 * snprintf rules (buf may be NULL when size is 0): returns 55, or 0 (and
 * writes "" if size > 0) without a trace context. */
CTX_API size_t ctx_trace_format(ctx_t *ctx, char *buf, size_t size);

/*
 * Baggage (W3C Baggage).
 */
/* The baggage ctx carries, as a header value (members joined with ',',
 * values still percent-encoded, properties kept), or NULL. Borrowed: valid
 * while the caller holds a reference to ctx. */
CTX_API const char *ctx_baggage(ctx_t *ctx);

/* The value of baggage member `key`, percent-decoded, into buf (snprintf
 * rules: at most size bytes with the NUL; buf may be NULL when size is 0).
 * Returns the length of the whole decoded value, or -1 when ctx has no
 * such member (or an argument is NULL). Properties are not included. */
CTX_API long ctx_baggage_get(ctx_t *ctx, const char *key, char *buf,
                             size_t size);

/* A new reference to a child of `parent` whose baggage is the parent's
 * with member `key` set to `value` (percent-encoded as needed; an existing
 * member with that key is replaced). Returns NULL with errno EINVAL (NULL
 * argument, key not a valid token, or the baggage would exceed 180
 * members or 8192 bytes) or ENOMEM. */
CTX_API ctx_t *ctx_with_baggage(ctx_t *parent, const char *key,
                                const char *value);

#ifdef __cplusplus
}
#endif

#endif /* CTX_PROPAGATE_H */
