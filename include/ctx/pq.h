/*
 * libctx-pq: PostgreSQL (libpq) connections and queries that end when a
 * context ends, and a connection pool whose waits honour a context: the C
 * form of Go's db.QueryContext / db.ExecContext and of database/sql's pool.
 *
 * Rules shared by every function of this header, stated once:
 *
 *  - libpq's conventions. A query returns a PGresult, also for SQL errors
 *    (check PQresultStatus); the caller PQclear()s it. A connection returned
 *    by ctx_pq_connect() is the caller's to PQfinish(), also a failed one.
 *  - "The context ended first": NULL with errno = ctx_err(ctx)
 *    (CTX_CANCELED = ECANCELED, CTX_DEADLINE_EXCEEDED = ETIMEDOUT);
 *    ctx_cause() tells why. A context already done fails the call at once,
 *    before anything is sent.
 *  - Prompt in every phase: connecting (a server that accepts and never
 *    answers included), sending, waiting for the server, receiving rows.
 *    Calls wait in poll() on PQsocket() and the context's done fd: no thread
 *    and no fd per call.
 *  - Cancel on the server. When the context ends during a query, the query
 *    is cancelled on the server with PostgreSQL's cancel request and the
 *    rest of the result is read and thrown away, so the connection is ready
 *    for the next query. The calling thread sends the request itself on a
 *    non-blocking socket (libpq 15 and 16: with the key PQgetCancel()
 *    copies, checked against the connection); where that is not possible it
 *    falls back to the blocking PQcancel() on libctx's shared executor, at
 *    most CTX_PQ_CANCEL_LANES at a time process-wide. No request of the call
 *    is left in flight when it returns, so none can hit a later query.
 *    This clean-up is bounded by the grace (CTX_PQ_GRACE_MS, see
 *    ctx_pq_set_grace()), counted from the moment the call saw its context
 *    end and independent of that context: a call returns at the latest one
 *    grace (plus scheduling) after the deadline or cancel. If the server
 *    has not acknowledged the cancel by then (a backend or postmaster
 *    stopped, a network gone silent), the connection is marked broken: its
 *    socket is shut down and closed, PQstatus() is CONNECTION_BAD, PQsocket()
 *    is -1, every later query fails at once (the ctx_pq_exec* functions
 *    return NULL with errno EIO, PQerrorMessage() says "no connection to the
 *    server"), and PQreset() or PQfinish() are the ways on. The server ends
 *    that backend when it next reads the closed socket.
 *  - Transactions. A statement cancelled inside a transaction block aborts
 *    the transaction on the server: PQtransactionStatus() is PQTRANS_INERROR
 *    afterwards and the server refuses further statements until ROLLBACK.
 *    ctx_pq_rollback() is the bounded way out; the pool never hands out a
 *    connection that is not PQTRANS_IDLE (it closes it, the server rolls
 *    back), as Go's database/sql rolls back a transaction whose context ends.
 *  - Blocking mode. The calls switch the connection to non-blocking mode
 *    (PQsetnonblocking) for their duration and restore the application's
 *    mode before returning. Other settings of the connection (notice
 *    processors, single-row mode of other queries, client encoding) are not
 *    touched.
 *  - Bad input: NULL ctx, conn, conninfo or command give NULL (or EINVAL)
 *    with errno EINVAL; nothing crashes, prints or aborts.
 *  - Threads. A PGconn is used by one thread at a time (libpq's rule); any
 *    thread may cancel the context. The pool may be used from any thread.
 */
#ifndef CTX_PQ_H
#define CTX_PQ_H

#include <ctx.h>

#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How long a query that was cancelled by its context may take to clean up
 * (cancel acknowledged and the rest of the result read) before the
 * connection is marked broken and the call returns anyway. Also the bound
 * of ctx_pq_rollback(). */
#define CTX_PQ_GRACE_MS 1000

/* Sets the grace (see "Cancel on the server" above) for every connection
 * of the process, in ns; 0 or less restores CTX_PQ_GRACE_MS, more than an
 * hour is an hour. Returns the previous value. A longer grace keeps more
 * connections usable when the server is slow to serve a burst of cancel
 * requests (each costs the postmaster a fork); a shorter one bounds the
 * return after an unanswered cancel more tightly. Thread-safe; calls already
 * cleaning up keep the value they started with. */
CTX_API ctx_duration_t ctx_pq_set_grace(ctx_duration_t grace);

/* Fallback path only: at most this many PQcancel() calls block executor
 * threads at once, process-wide; others queue behind them. A postmaster
 * that stops answering can therefore hold at most this many of libctx's
 * shared executor threads, never all of them. */
#define CTX_PQ_CANCEL_LANES 3

/* Go's sql.Open + db.PingContext: PQconnectdb() bounded by ctx.
 * Connects with PQconnectStart()/PQconnectPoll(), waiting on the socket
 * with ctx. Returns libpq's PGconn (owned by the caller; check PQstatus():
 * a failed connection is returned as CONNECTION_BAD with PQerrorMessage(),
 * as PQconnectdb() does), or NULL with errno: ctx_err(ctx) when ctx ended
 * first (the half-made connection is finished), ETIMEDOUT when the
 * conninfo's own connect_timeout passed first (applied to the whole attempt;
 * ctx_err(ctx) is then 0), EINVAL (NULL argument), ENOMEM. Host names are
 * resolved inside PQconnectStart(), which libpq does synchronously: give
 * hostaddr= (or a Unix socket) where name resolution may hang. */
CTX_API PGconn *ctx_pq_connect(ctx_t *ctx, const char *conninfo);

/* Go's db.ExecContext / db.QueryContext: PQexec() bounded by ctx.
 * Sends `command` (one or more SQL statements) with PQsendQuery() and
 * collects the results as PQexec() does: returns the last result (or the
 * first COPY result), owned by the caller. SQL errors are results
 * (PGRES_FATAL_ERROR). NULL with errno: ctx_err(ctx) when ctx ended first
 * (see "Cancel on the server" above for the connection's state), EIO when
 * libpq could not send the command (connection bad, another command in
 * progress: PQerrorMessage(conn) says why), EINVAL, ENOMEM, or EMFILE/ENFILE
 * when the context's done fd cannot be made (then nothing was sent). */
CTX_API PGresult *ctx_pq_exec(ctx_t *ctx, PGconn *conn, const char *command);

/* PQexecParams() bounded by ctx: one statement with out-of-line parameters,
 * arguments as PQexecParams(). Results and errors as ctx_pq_exec(). */
CTX_API PGresult *ctx_pq_exec_params(ctx_t *ctx, PGconn *conn,
                                     const char *command, int nParams,
                                     const Oid *paramTypes,
                                     const char *const *paramValues,
                                     const int *paramLengths,
                                     const int *paramFormats,
                                     int resultFormat);

/* Go's tx.Rollback: ends the connection's transaction block, if any, with
 * ROLLBACK, bounded by CTX_PQ_GRACE_MS and independent of any context (the
 * caller's context has typically just ended). Returns 0 when the
 * connection is PQTRANS_IDLE afterwards (also when it already was), else
 * an error number: ENOTCONN (connection bad, e.g. marked broken after an
 * unacknowledged cancel), ETIMEDOUT (no answer within the bound: the
 * connection is then marked broken), EIO (the server refused), EBUSY (a
 * query is still in progress on the connection), EINVAL (NULL), ENOMEM. */
CTX_API int ctx_pq_rollback(PGconn *conn);

/* ---- pool ----------------------------------------------------------------
 * Go's *sql.DB: up to max_conns connections to one conninfo, made lazily,
 * reused, handed to one user at a time. */
typedef struct ctx_pq_pool ctx_pq_pool_t;

/* Makes a pool (no connection yet). conninfo is copied. Returns the pool,
 * owned by the caller (ctx_pq_pool_free), or NULL with errno EINVAL (NULL
 * conninfo, max_conns 0) or ENOMEM. */
CTX_API ctx_pq_pool_t *ctx_pq_pool_new(const char *conninfo,
                                       unsigned max_conns);

/* Go's db.Conn(ctx): takes an idle connection, or connects a new one with
 * ctx_pq_connect() while fewer than max_conns exist, or waits for one to be
 * released, the wait and the connect bounded by ctx. The connection is the
 * caller's until ctx_pq_pool_release(); it is CONNECTION_OK and PQTRANS_IDLE
 * when handed out (an idle connection that received data while idle, e.g.
 * the server ending it, is probed with one empty query under ctx first). Returns NULL with errno: ctx_err(ctx) when ctx ended
 * first, ECONNREFUSED when a new connection failed (its libpq message is
 * kept, see ctx_pq_pool_last_error), ETIMEDOUT (the conninfo's
 * connect_timeout), EINVAL (NULL argument, pool being freed), ENOMEM. */
CTX_API PGconn *ctx_pq_pool_acquire(ctx_pq_pool_t *pool, ctx_t *ctx);

/* Gives a connection back. A connection that is not CONNECTION_OK (broken,
 * e.g. after an unacknowledged cancel), not PQTRANS_IDLE (left inside a
 * transaction, or aborted by a cancel: the server rolls it back) or still
 * busy with a query is closed (PQfinish) and its slot freed for a new one:
 * it is never handed out again. Wakes one waiting acquirer. A NULL pool or
 * conn, or a conn this pool did not hand out, is ignored. */
CTX_API void ctx_pq_pool_release(ctx_pq_pool_t *pool, PGconn *conn);

/* Copies the libpq message of the last failed connection attempt (snprintf
 * rules: returns the length it needed; "" if none). */
CTX_API size_t ctx_pq_pool_last_error(ctx_pq_pool_t *pool, char *buf,
                                      size_t size);

/* Closes every connection and frees the pool. Every acquired connection
 * must have been released first. NULL is a no-op. */
CTX_API void ctx_pq_pool_free(ctx_pq_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif /* CTX_PQ_H */
