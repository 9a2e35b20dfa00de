/*
 * libctx-sqlite: SQLite statements that stop when their context ends
 * (Go's db.QueryContext / db.ExecContext for SQLite).
 *
 *     sqlite3_stmt *st;
 *     sqlite3_prepare_v2(db, "SELECT ...", -1, &st, NULL);
 *     ctx_t *c = ctx_with_timeout(parent, 2 * CTX_SECOND);
 *     int rc;
 *     while ((rc = ctx_sqlite_step(c, st)) == SQLITE_ROW)
 *         use(st);
 *     if (rc == SQLITE_INTERRUPT && ctx_err(c) != 0)
 *         ... cut by the context: ctx_err(c) says cancel or deadline ...
 *     sqlite3_finalize(st);
 *     ctx_cancel(c);
 *     ctx_release(c);
 *
 * Rules shared by every function of this header:
 *
 *  - Results are SQLite's own result codes. When the context ends before the
 *    work does, the call returns SQLITE_INTERRUPT, within a few milliseconds,
 *    whether SQLite was computing or waiting for another connection's lock,
 *    and ctx_err(ctx) is already set when it returns. A context that is
 *    already done runs nothing. NULL arguments give SQLITE_MISUSE; out of
 *    memory SQLITE_NOMEM.
 *  - Connection hooks. For the duration of a call (or of a binding) the
 *    connection's progress handler and busy handler are libctx's, and the
 *    context's end calls sqlite3_interrupt() on the connection. Afterwards
 *    the busy timeout is restored exactly as the application set it (read
 *    back with PRAGMA busy_timeout), and the progress handler and busy
 *    handler registered through ctx_sqlite_progress_handler() and
 *    ctx_sqlite_busy_handler() are reinstalled. SQLite cannot report a
 *    progress or busy handler set directly with sqlite3_progress_handler()
 *    or sqlite3_busy_handler(): on a connection used with this header,
 *    register them through the ctx_sqlite_ functions instead, or they are
 *    removed by the first call.
 *  - While the context is live, the application's busy timeout applies as
 *    it set it (same waiting schedule as SQLite's default busy handler; the
 *    wait ends early only when the context ends), and its registered
 *    progress and busy handlers keep being called.
 *  - Threads. Each call holds the connection's mutex (sqlite3_db_mutex(),
 *    in SQLite's serialized mode) from start to end, as SQLite's own calls
 *    do, so calls on one connection from several threads run one after the
 *    other. In multi-thread mode the application must not use one
 *    connection from two threads at once, as SQLite requires. Cancelling
 *    from any thread (or a deadline on the timer thread) is safe: libctx only
 *    calls sqlite3_interrupt() there, which never blocks.
 *  - sqlite3_interrupt() is per connection: when a context ends while other
 *    statements of the same connection are active (stepped, not yet reset
 *    or finished), SQLite may report SQLITE_INTERRUPT from them too.
 */
#ifndef CTX_SQLITE_H
#define CTX_SQLITE_H

#include <ctx.h>
#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* sqlite3_step(stmt), bounded by ctx. Returns what sqlite3_step() returns
 * (SQLITE_ROW, SQLITE_DONE or an error code), or SQLITE_INTERRUPT when ctx
 * ended first: during the step, or before it (nothing run). A row that
 * SQLite produced after ctx ended is not reported: SQLITE_INTERRUPT. After
 * SQLITE_INTERRUPT because of the context the statement has been reset
 * (its bindings are kept), so no lock or interrupt is left behind.
 * Use statements made by sqlite3_prepare_v2() or _v3(). Inside an explicit
 * transaction, SQLite may have rolled it back (sqlite3_get_autocommit()
 * tells): roll back yourself when it has not, as Go's database/sql does.
 * NULL ctx or stmt: SQLITE_MISUSE. */
CTX_API int ctx_sqlite_step(ctx_t *ctx, sqlite3_stmt *stmt);

/* sqlite3_exec() bounded by ctx: runs each statement of sql in turn and
 * calls callback(arg, ncols, values, names) for each row, with sqlite3_exec's
 * rules (callback non-zero: SQLITE_ABORT; *errmsg, if errmsg is not NULL,
 * gets an error message to free with sqlite3_free(), or NULL). When ctx ends
 * first: SQLITE_INTERRUPT, the statements before it done, the current one
 * stopped, the rest not started; *errmsg says "interrupted". NULL ctx, db or
 * sql: SQLITE_MISUSE (*errmsg set to NULL). */
CTX_API int ctx_sqlite_exec(ctx_t *ctx, sqlite3 *db, const char *sql,
                            int (*callback)(void *, int, char **, char **),
                            void *arg, char **errmsg);

/*
 * Binding a context to a connection for a scope. Between ctx_sqlite_bind()
 * and ctx_sqlite_unbind(), plain SQLite calls on db (sqlite3_step(),
 * sqlite3_exec(), sqlite3_prepare_v2() ...) are bounded by ctx, without
 * wrapping each one: when ctx ends they fail within milliseconds, with
 * SQLITE_INTERRUPT while computing or SQLITE_BUSY while waiting for a lock
 * (test ctx_err(ctx) to tell). A statement too short to reach a progress
 * check (a few thousand VM instructions) may still complete. ctx_sqlite_
 * calls inside the scope are bounded by both contexts and cost less (the
 * busy timeout is not read again), which makes a bound scope the cheap way
 * to run a long row loop or a transaction.
 *
 * The binding holds the connection's mutex (serialized mode) until unbind:
 * other threads that use the connection wait, and unbind must be called by
 * the thread that bound. Bindings nest (last bound, first unbound).
 */
typedef struct ctx_sqlite_binding ctx_sqlite_binding_t;

/* Binds ctx to db and stores the binding in *binding. Returns SQLITE_OK,
 * SQLITE_INTERRUPT (ctx already done: nothing bound), SQLITE_NOMEM or
 * SQLITE_MISUSE (a NULL argument). *binding is NULL on error. */
CTX_API int ctx_sqlite_bind(ctx_t *ctx, sqlite3 *db,
                            ctx_sqlite_binding_t **binding);

/* Ends a binding made by ctx_sqlite_bind(), restores the connection's
 * hooks as described above and frees the binding. Returns SQLITE_INTERRUPT
 * if the context ended while bound (work in the scope may have been cut),
 * else SQLITE_OK; NULL: SQLITE_MISUSE. */
CTX_API int ctx_sqlite_unbind(ctx_sqlite_binding_t *binding);

/*
 * The application's own handlers, on a connection used with this header.
 * SQLite has no way to read a handler back, so libctx keeps these and
 * reinstalls them after each call; during a call they are chained behind
 * libctx's. Each also installs the handler on the connection at once, so
 * plain SQLite calls see it as with sqlite3_progress_handler() and
 * sqlite3_busy_handler(). Passing a NULL handler removes it. The record is
 * freed when the connection is closed (sqlite3_close()). Do not change them
 * while a ctx_sqlite_ call runs on the connection in another thread.
 * Returns SQLITE_OK, SQLITE_NOMEM or SQLITE_MISUSE (NULL db).
 */
/* As sqlite3_progress_handler(db, n, handler, arg). */
CTX_API int ctx_sqlite_progress_handler(sqlite3 *db, int n,
                                        int (*handler)(void *), void *arg);
/* As sqlite3_busy_handler(db, handler, arg): while a ctx_sqlite_ call
 * waits for a lock, handler(arg, count) decides whether to keep waiting (the
 * busy timeout does not apply then, as in SQLite); once the context ends,
 * the wait ends at the handler's next return, so keep its sleeps short. A
 * busy timeout set afterwards replaces it, as in SQLite. */
CTX_API int ctx_sqlite_busy_handler(sqlite3 *db, int (*handler)(void *, int),
                                    void *arg);

#ifdef __cplusplus
}
#endif
#endif
