/*
 * libctx-sqlite: SQLite calls bounded by a context.
 *
 * A call (or a binding) puts three things on the connection for its
 * duration, and takes them off afterwards:
 *
 *  - an after-func on the context that calls sqlite3_interrupt(db): the
 *    prompt path while SQLite computes (the VM checks the flag on every jump
 *    and in its long-running loops). It only sets a flag, so it is safe on
 *    the cancelling thread and on the timer thread.
 *  - a progress handler that returns non-zero once the context is done. It
 *    closes the race sqlite3_interrupt() alone loses: sqlite3_step() clears
 *    the interrupt flag when a statement starts on a connection with no
 *    other active statement, so an interrupt that lands between our last
 *    check and that point would be forgotten and the statement would run to
 *    its end. The progress handler sees the context itself, not the flag.
 *  - a busy handler that waits for another connection's lock on SQLite's
 *    own schedule (1, 2, 5, 10 ... 100 ms), up to the application's busy
 *    timeout, but sleeps with ctx_wait_until(), so the wait ends the moment
 *    the context does. SQLite's default handler sleeps in an uninterruptible
 *    usleep() and never looks at the interrupt flag.
 *
 * SQLite has no getter for either handler, and PRAGMA busy_timeout is the
 * only way to read the busy timeout back. So the timeout is read at the
 * start of each outermost call, and the application's own handlers are
 * kept in a per-connection record (ctx_sqlite_progress_handler() and
 * ctx_sqlite_busy_handler()); both are reinstalled when the call ends. The
 * record lives as long as the connection: it is the user data of a hidden
 * SQL function, whose destructor SQLite calls at sqlite3_close().
 *
 * Calls nest (an exec callback that steps another statement, a call inside
 * a bound scope): the active bindings of each connection form a stack, kept
 * in a small process-wide table keyed by the connection. An inner binding's
 * handlers check every context on the stack.
 */
#include <ctx/sqlite.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* VM instructions between two progress checks. A check is one inlined
 * ctx_is_done() per binding plus, when a deadline is set, one clock read
 * (about 40 ns on a KVM guest). SQLite runs 4000 simple instructions in
 * about 60 us (a 100k-row CTE: 1.7M instructions in 25 ms), so the cost
 * is about 0.1% (callgrind: +0.05% instructions at 1000), and a cancel
 * that races the statement's start, or a deadline the timer thread is
 * slow to fire, is caught within tens of microseconds. The interrupt flag,
 * checked on every jump, stays the main path. */
#ifndef PROGRESS_OPS
#define PROGRESS_OPS 4000
#endif

/* The application's handlers on one connection (see the header). */
struct app {
    sqlite3 *db;
    struct app *next;
    int prog_n;
    int (*prog_fn)(void *);
    void *prog_arg;
    int (*busy_fn)(void *, int);
    void *busy_arg;
};

struct ctx_sqlite_binding {
    sqlite3 *db;
    ctx_t *ctx;
    ctx_after_t *after;
    struct ctx_sqlite_binding *prev; /* outer binding on db, or NULL */
    struct ctx_sqlite_binding *next; /* in the table's bucket (tops only) */
    sqlite3_mutex *mutex;
    bool heap;        /* made by ctx_sqlite_bind() */
    bool busy_hooked; /* our busy handler is installed */
    int timeout_ms;   /* the application's busy timeout */
    struct app app;   /* snapshot of the application's handlers */
    bool has_app;
    unsigned prog_every; /* call the app's progress handler every n checks */
    unsigned prog_count;
    ctx_time_t deadline;  /* ctx's deadline, or CTX_TIME_MAX */
    ctx_time_t earliest;  /* the earliest deadline on the stack */
    ctx_time_t busy_start;
};
typedef struct ctx_sqlite_binding binding_t;

/* ---- the table of active bindings and application records --------------- */

#define BUCKETS 64
static struct bucket {
    pthread_mutex_t mu;
    binding_t *tops;
    struct app *apps;
} table[BUCKETS];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
    for (int i = 0; i < BUCKETS; i++)
        pthread_mutex_init(&table[i].mu, NULL);
}

static struct bucket *bucket_of(sqlite3 *db)
{
    uintptr_t h = (uintptr_t)db;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    pthread_once(&table_once, table_init);
    return &table[(h >> 32) % BUCKETS];
}

static struct app *find_app(struct bucket *bk, sqlite3 *db)
{
    for (struct app *a = bk->apps; a != NULL; a = a->next)
        if (a->db == db)
            return a;
    return NULL;
}

/* Links b as the innermost binding of its connection; fills b->prev and the
 * snapshot of the application's handlers. */
static void push(binding_t *b)
{
    struct bucket *bk = bucket_of(b->db);
    pthread_mutex_lock(&bk->mu);
    binding_t **pp = &bk->tops;
    while (*pp != NULL && (*pp)->db != b->db)
        pp = &(*pp)->next;
    b->prev = *pp;
    if (*pp != NULL)
        b->next = (*pp)->next;
    else
        b->next = NULL;
    *pp = b;
    struct app *a = find_app(bk, b->db);
    b->has_app = a != NULL;
    if (a != NULL)
        b->app = *a;
    pthread_mutex_unlock(&bk->mu);
}

/* Unlinks b (normally the innermost binding of its connection); returns
 * whether it was the innermost, whose hooks are on the connection. */
static bool pop(binding_t *b)
{
    bool top = false;
    struct bucket *bk = bucket_of(b->db);
    pthread_mutex_lock(&bk->mu);
    binding_t **pp = &bk->tops;
    while (*pp != NULL && (*pp)->db != b->db)
        pp = &(*pp)->next;
    if (*pp == b) {
        top = true;
        if (b->prev != NULL) {
            b->prev->next = b->next;
            *pp = b->prev;
        } else {
            *pp = b->next;
        }
    } else if (*pp != NULL) {
        /* Unbound out of order: unlink from the middle of the stack. */
        binding_t *q = *pp;
        while (q->prev != NULL && q->prev != b)
            q = q->prev;
        if (q->prev == b)
            q->prev = b->prev;
    }
    pthread_mutex_unlock(&bk->mu);
    return top;
}

/* A busy timeout set after ctx_sqlite_busy_handler() replaced the handler. */
static void forget_busy_handler(sqlite3 *db)
{
    struct bucket *bk = bucket_of(db);
    pthread_mutex_lock(&bk->mu);
    struct app *a = find_app(bk, db);
    if (a != NULL) {
        a->busy_fn = NULL;
        a->busy_arg = NULL;
    }
    pthread_mutex_unlock(&bk->mu);
}

/* ---- the hooks -------------------------------------------------------- */

static bool stack_done(const binding_t *b)
{
    for (; b != NULL; b = b->prev)
        if (ctx_is_done(b->ctx))
            return true;
    return false;
}

static void on_done(void *arg)
{
    binding_t *b = arg;
    sqlite3_interrupt(b->db);
}

/* The deadline has passed by our clock but the timer thread has not marked
 * the context done yet: on a busy machine it waits for a CPU, which this
 * thread, computing, holds. Give it the CPU until it has, so that ctx_err()
 * is set when we return. */
static bool deadline_passed(binding_t *b)
{
    if (b->earliest == CTX_TIME_MAX)
        return false;
    ctx_time_t now = ctx_now();
    if (now < b->earliest)
        return false;
    /* Yield first: the timer thread usually fires within microseconds and
     * may be queued on this CPU. Then sleep, so that on a loaded machine
     * this thread stops competing with it. */
    ctx_time_t spin_end = now + CTX_MILLISECOND;
    while (!stack_done(b) && ctx_now() < spin_end)
        sched_yield();
    for (binding_t *o = b; o != NULL; o = o->prev)
        if (o->deadline <= now && !ctx_is_done(o->ctx))
            (void)ctx_wait_until(o->ctx, o->deadline + 100 * CTX_MILLISECOND);
    return stack_done(b);
}

static int progress_cb(void *arg)
{
    binding_t *b = arg;
    if (stack_done(b) || deadline_passed(b))
        return 1;
    if (b->prog_every != 0 && ++b->prog_count >= b->prog_every) {
        b->prog_count = 0;
        return b->app.prog_fn(b->app.prog_arg);
    }
    return 0;
}

/* sqliteDefaultBusyCallback's schedule, in ms. */
static const int busy_delays[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};

/* Sleeps until `until` or until a context of the stack ends. */
static void wait_stack(binding_t *b, ctx_time_t until)
{
    if (b->prev == NULL) {
        (void)ctx_wait_until(b->ctx, until);
        return;
    }
    /* Several contexts: wait on the innermost in slices, checking all. */
    for (;;) {
        ctx_time_t now = ctx_now();
        if (now >= until || stack_done(b))
            return;
        ctx_time_t slice = now + CTX_MILLISECOND;
        (void)ctx_wait_until(b->ctx, slice < until ? slice : until);
    }
}

static int busy_cb(void *arg, int count)
{
    binding_t *b = arg;
    if (stack_done(b))
        return 0;
    if (b->has_app && b->app.busy_fn != NULL) {
        int keep = b->app.busy_fn(b->app.busy_arg, count);
        return keep != 0 && !stack_done(b);
    }
    if (b->timeout_ms <= 0)
        return 0;
    ctx_time_t now = ctx_now();
    if (count == 0)
        b->busy_start = now;
    ctx_time_t end = b->busy_start + (ctx_duration_t)b->timeout_ms * CTX_MILLISECOND;
    if (now >= end) {
        /* The busy timeout is up. If the context's deadline is due at the
         * same moment, let the deadline win: it is what the caller set. */
        ctx_time_t d;
        if (ctx_deadline(b->ctx, &d) && d <= end + CTX_MILLISECOND)
            (void)ctx_wait_until(b->ctx, d + 20 * CTX_MILLISECOND);
        return 0;
    }
    int n = (int)(sizeof busy_delays / sizeof busy_delays[0]);
    ctx_time_t until = now + (ctx_duration_t)busy_delays[count < n ? count : n - 1] *
                                 CTX_MILLISECOND;
    wait_stack(b, until < end ? until : end);
    return !stack_done(b);
}

/* Reads the connection's busy timeout (0 when none or a custom handler). */
static int read_busy_timeout(sqlite3 *db, int *ms)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    *ms = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    int rc2 = sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc2 != SQLITE_OK ? rc2 : rc;
}

static void install_progress(binding_t *b)
{
    int n = PROGRESS_OPS;
    b->prog_every = 0;
    b->prog_count = 0;
    if (b->has_app && b->app.prog_fn != NULL && b->app.prog_n > 0) {
        if (b->app.prog_n < n)
            n = b->app.prog_n;
        b->prog_every = (unsigned)((b->app.prog_n + n / 2) / n);
        if (b->prog_every == 0)
            b->prog_every = 1;
    }
    sqlite3_progress_handler(b->db, n, progress_cb, b);
}

/* Puts back what was on the connection before b: the outer binding's hooks,
 * or the application's. */
static void restore(binding_t *b)
{
    binding_t *o = b->prev;
    if (o != NULL) {
        install_progress(o);
        if (b->busy_hooked) {
            if (o->busy_hooked)
                sqlite3_busy_handler(b->db, busy_cb, o);
            else
                sqlite3_busy_timeout(b->db, b->timeout_ms);
        }
        return;
    }
    if (b->has_app && b->app.prog_fn != NULL)
        sqlite3_progress_handler(b->db, b->app.prog_n, b->app.prog_fn, b->app.prog_arg);
    else
        sqlite3_progress_handler(b->db, 0, NULL, NULL);
    if (b->busy_hooked) {
        if (b->timeout_ms > 0 || !b->has_app || b->app.busy_fn == NULL)
            sqlite3_busy_timeout(b->db, b->timeout_ms);
        else
            sqlite3_busy_handler(b->db, b->app.busy_fn, b->app.busy_arg);
    }
}

/* Starts a binding of ctx to db (the db mutex is held). need_busy: whether
 * the work may wait for a lock. Returns SQLITE_OK, SQLITE_INTERRUPT (ctx
 * done, nothing bound) or an error. */
static int begin(binding_t *b, ctx_t *ctx, sqlite3 *db, bool need_busy)
{
    b->db = db;
    b->ctx = ctx;
    b->busy_hooked = false;
    b->after = ctx_after_func_flags(ctx, on_done, b, CTX_AFTER_NO_INLINE);
    if (b->after == NULL)
        return errno == ENOMEM ? SQLITE_NOMEM : SQLITE_INTERRUPT;
    push(b);
    if (!ctx_deadline(ctx, &b->deadline))
        b->deadline = CTX_TIME_MAX;
    b->earliest = b->deadline;
    if (b->prev != NULL && b->prev->earliest < b->earliest)
        b->earliest = b->prev->earliest;
    if (need_busy) {
        if (b->prev != NULL && b->prev->busy_hooked) {
            b->timeout_ms = b->prev->timeout_ms;
        } else {
            int rc = read_busy_timeout(db, &b->timeout_ms);
            if (rc != SQLITE_OK) {
                pop(b);
                ctx_after_stop(b->after);
                return ctx_is_done(ctx) ? SQLITE_INTERRUPT : rc;
            }
            /* A timeout set after ctx_sqlite_busy_handler() replaced that
             * handler in SQLite: the last one set wins, as in SQLite. */
            if (b->timeout_ms > 0 && b->has_app && b->app.busy_fn != NULL) {
                b->app.busy_fn = NULL;
                forget_busy_handler(db);
            }
        }
        sqlite3_busy_handler(db, busy_cb, b);
        b->busy_hooked = true;
    } else if (b->prev != NULL) {
        b->timeout_ms = b->prev->timeout_ms;
    }
    install_progress(b);
    return SQLITE_OK;
}

/* Ends a binding; returns true if its context ended while it was bound. */
static bool end(binding_t *b)
{
    bool fired = !ctx_after_stop(b->after);
    /* Unbound out of order, an inner binding's hooks stay on the
     * connection; it restores b's predecessor's when it ends. */
    if (pop(b))
        restore(b);
    return fired || ctx_is_done(b->ctx);
}

/* ---- the calls -------------------------------------------------------- */

static bool ended_code(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_INTERRUPT || p == SQLITE_BUSY || rc == SQLITE_ROW;
}

int ctx_sqlite_step(ctx_t *ctx, sqlite3_stmt *stmt)
{
    if (ctx == NULL || stmt == NULL)
        return SQLITE_MISUSE;
    if (ctx_is_done(ctx)) {
        sqlite3_reset(stmt);
        return SQLITE_INTERRUPT;
    }
    sqlite3 *db = sqlite3_db_handle(stmt);
    sqlite3_mutex *mu = sqlite3_db_mutex(db);
    sqlite3_mutex_enter(mu);
    /* A read-only statement that has just returned a row holds its locks:
     * it cannot wait for one, so the busy timeout need not be read (row
     * loops). Not so after SQLITE_BUSY (no row: data count 0), where the
     * retry of, say, a COMMIT waits for a lock again. */
    bool need_busy = !(sqlite3_stmt_busy(stmt) && sqlite3_stmt_readonly(stmt) &&
                       sqlite3_data_count(stmt) > 0);
    binding_t b;
    int rc = begin(&b, ctx, db, need_busy);
    if (rc == SQLITE_OK) {
        rc = ctx_is_done(ctx) ? SQLITE_INTERRUPT : sqlite3_step(stmt);
        if (end(&b) && ended_code(rc)) {
            /* Cut by the context: leave no lock, no half-run statement and
             * no pending interrupt behind (see the header). */
            sqlite3_reset(stmt);
            rc = SQLITE_INTERRUPT;
        }
    } else if (rc == SQLITE_INTERRUPT) {
        sqlite3_reset(stmt);
    }
    sqlite3_mutex_leave(mu);
    return rc;
}

/* sqlite3_exec (legacy.c), statement by statement, checking ctx between. */
static int exec_all(ctx_t *ctx, sqlite3 *db, const char *sql,
                    int (*cb)(void *, int, char **, char **), void *arg,
                    bool null_callback, char **errmsg)
{
    int rc = SQLITE_OK;
    const char *rest = sql;
    char **cols = NULL;
    while (rc == SQLITE_OK && rest[0] != '\0') {
        if (ctx_is_done(ctx))
            return SQLITE_INTERRUPT;
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        rc = sqlite3_prepare_v2(db, rest, -1, &st, &tail);
        if (rc != SQLITE_OK)
            break;
        rest = tail;
        if (st == NULL) /* a comment or white space */
            continue;
        bool init = false;
        int ncol = 0;
        for (;;) {
            rc = ctx_is_done(ctx) ? SQLITE_INTERRUPT : sqlite3_step(st);
            if (cb != NULL &&
                (rc == SQLITE_ROW || (rc == SQLITE_DONE && !init && null_callback))) {
                if (!init) {
                    ncol = sqlite3_column_count(st);
                    cols = sqlite3_malloc64((2 * (sqlite3_uint64)ncol + 1) * sizeof *cols);
                    if (cols == NULL) {
                        sqlite3_finalize(st);
                        return SQLITE_NOMEM;
                    }
                    for (int i = 0; i < ncol; i++)
                        cols[i] = (char *)sqlite3_column_name(st, i);
                    init = true;
                }
                char **vals = NULL;
                if (rc == SQLITE_ROW) {
                    vals = &cols[ncol];
                    for (int i = 0; i < ncol; i++) {
                        vals[i] = (char *)sqlite3_column_text(st, i);
                        if (vals[i] == NULL && sqlite3_column_type(st, i) != SQLITE_NULL) {
                            sqlite3_finalize(st);
                            sqlite3_free(cols);
                            return SQLITE_NOMEM;
                        }
                    }
                    vals[ncol] = NULL;
                }
                if (cb(arg, ncol, vals, cols) != 0) {
                    sqlite3_finalize(st);
                    sqlite3_free(cols);
                    if (errmsg != NULL)
                        *errmsg = sqlite3_mprintf("%s", sqlite3_errstr(SQLITE_ABORT));
                    return SQLITE_ABORT;
                }
            }
            if (rc != SQLITE_ROW) {
                int frc = sqlite3_finalize(st);
                if (rc != SQLITE_INTERRUPT || frc != SQLITE_OK)
                    rc = frc;
                while (rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' ||
                       rest[0] == '\r' || rest[0] == '\f' || rest[0] == '\v')
                    rest++;
                break;
            }
        }
        sqlite3_free(cols);
        cols = NULL;
    }
    if (rc != SQLITE_OK && errmsg != NULL && *errmsg == NULL) {
        *errmsg = sqlite3_mprintf("%s", sqlite3_errmsg(db));
        if (*errmsg == NULL)
            rc = SQLITE_NOMEM;
    }
    return rc;
}

/* PRAGMA empty_result_callbacks: sqlite3_exec() honours it, so do we. */
static bool null_callback_on(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    bool on = false;
    if (sqlite3_prepare_v2(db, "PRAGMA empty_result_callbacks", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        on = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return on;
}

int ctx_sqlite_exec(ctx_t *ctx, sqlite3 *db, const char *sql,
                    int (*callback)(void *, int, char **, char **), void *arg,
                    char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    if (ctx == NULL || db == NULL || sql == NULL)
        return SQLITE_MISUSE;
    int rc;
    if (ctx_is_done(ctx)) {
        rc = SQLITE_INTERRUPT;
    } else {
        sqlite3_mutex *mu = sqlite3_db_mutex(db);
        sqlite3_mutex_enter(mu);
        binding_t b;
        rc = begin(&b, ctx, db, true);
        if (rc == SQLITE_OK) {
            bool nullcb = callback != NULL && null_callback_on(db);
            rc = exec_all(ctx, db, sql, callback, arg, nullcb, errmsg);
            if (end(&b) && ended_code(rc))
                rc = SQLITE_INTERRUPT;
        }
        sqlite3_mutex_leave(mu);
    }
    if (rc == SQLITE_INTERRUPT && errmsg != NULL) {
        sqlite3_free(*errmsg);
        *errmsg = sqlite3_mprintf("%s", sqlite3_errstr(SQLITE_INTERRUPT));
    }
    return rc;
}

/* ---- bound scopes ----------------------------------------------------- */

int ctx_sqlite_bind(ctx_t *ctx, sqlite3 *db, ctx_sqlite_binding_t **binding)
{
    if (binding != NULL)
        *binding = NULL;
    if (ctx == NULL || db == NULL || binding == NULL)
        return SQLITE_MISUSE;
    if (ctx_is_done(ctx))
        return SQLITE_INTERRUPT;
    binding_t *b = sqlite3_malloc64(sizeof *b);
    if (b == NULL)
        return SQLITE_NOMEM;
    memset(b, 0, sizeof *b);
    b->heap = true;
    b->mutex = sqlite3_db_mutex(db);
    sqlite3_mutex_enter(b->mutex);
    int rc = begin(b, ctx, db, true);
    if (rc != SQLITE_OK) {
        sqlite3_mutex_leave(b->mutex);
        sqlite3_free(b);
        return rc;
    }
    *binding = b;
    return SQLITE_OK;
}

int ctx_sqlite_unbind(ctx_sqlite_binding_t *b)
{
    if (b == NULL || !b->heap)
        return SQLITE_MISUSE;
    bool ended = end(b);
    sqlite3_mutex_leave(b->mutex);
    sqlite3_free(b);
    return ended ? SQLITE_INTERRUPT : SQLITE_OK;
}

/* ---- the application's handlers ----------------------------------------- */

#define RECORD_FN "ctx_sqlite_record_"

static void record_sqlfn(sqlite3_context *c, int n, sqlite3_value **v)
{
    (void)n;
    (void)v;
    sqlite3_result_error(c, "ctx_sqlite: internal function", -1);
}

/* Called by SQLite when the connection closes: forget its record. */
static void record_destroy(void *p)
{
    struct app *a = p;
    struct bucket *bk = bucket_of(a->db);
    pthread_mutex_lock(&bk->mu);
    for (struct app **pp = &bk->apps; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    pthread_mutex_unlock(&bk->mu);
    sqlite3_free(a);
}

/* Finds or makes the record of db and applies set(record) under the lock. */
static int update_record(sqlite3 *db, void (*set)(struct app *, const struct app *),
                         const struct app *val)
{
    struct bucket *bk = bucket_of(db);
    pthread_mutex_lock(&bk->mu);
    struct app *a = find_app(bk, db);
    if (a != NULL) {
        set(a, val);
        pthread_mutex_unlock(&bk->mu);
        return SQLITE_OK;
    }
    pthread_mutex_unlock(&bk->mu);

    a = sqlite3_malloc64(sizeof *a);
    if (a == NULL)
        return SQLITE_NOMEM;
    memset(a, 0, sizeof *a);
    a->db = db;
    set(a, val);
    pthread_mutex_lock(&bk->mu);
    a->next = bk->apps;
    bk->apps = a;
    pthread_mutex_unlock(&bk->mu);
    /* The record's lifetime is the connection's: SQLite calls
     * record_destroy at sqlite3_close() (or if this call fails). */
    int rc = sqlite3_create_function_v2(db, RECORD_FN, 0, SQLITE_UTF8, a, record_sqlfn,
                                        NULL, NULL, record_destroy);
    return rc;
}

static void set_progress(struct app *a, const struct app *v)
{
    a->prog_n = v->prog_n;
    a->prog_fn = v->prog_fn;
    a->prog_arg = v->prog_arg;
}

static void set_busy(struct app *a, const struct app *v)
{
    a->busy_fn = v->busy_fn;
    a->busy_arg = v->busy_arg;
}

int ctx_sqlite_progress_handler(sqlite3 *db, int n, int (*handler)(void *), void *arg)
{
    if (db == NULL)
        return SQLITE_MISUSE;
    struct app v = {.prog_n = n, .prog_fn = n > 0 ? handler : NULL, .prog_arg = arg};
    if (v.prog_fn == NULL)
        v.prog_arg = NULL;
    sqlite3_mutex *mu = sqlite3_db_mutex(db);
    sqlite3_mutex_enter(mu);
    int rc = update_record(db, set_progress, &v);
    if (rc == SQLITE_OK)
        sqlite3_progress_handler(db, n, v.prog_fn, v.prog_arg);
    sqlite3_mutex_leave(mu);
    return rc;
}

int ctx_sqlite_busy_handler(sqlite3 *db, int (*handler)(void *, int), void *arg)
{
    if (db == NULL)
        return SQLITE_MISUSE;
    struct app v = {.busy_fn = handler, .busy_arg = handler != NULL ? arg : NULL};
    sqlite3_mutex *mu = sqlite3_db_mutex(db);
    sqlite3_mutex_enter(mu);
    int rc = update_record(db, set_busy, &v);
    if (rc == SQLITE_OK)
        sqlite3_busy_handler(db, v.busy_fn, v.busy_arg);
    sqlite3_mutex_leave(mu);
    return rc;
}
