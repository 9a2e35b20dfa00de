/* libctx-sqlite against real SQLite: a CPU-bound query in :memory: and lock
 * waits between two connections of a file database, cut by cancel and by
 * deadline; cancels racing the start of a call; the busy timeout while the
 * context is live; the connection's hooks restored; nested and concurrent
 * use; bad arguments and out of memory; no fd or thread left behind. */
#include "testutil.h"

#include <ctx/sqlite.h>

#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS CTX_MILLISECOND

/* Runs for minutes unless stopped: ~10^9 rows of a recursive CTE. */
#define LONG_SQL                                                               \
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "            \
    "LIMIT 1000000000) SELECT count(*) FROM c"

/* "Within a few ms" on an idle machine (bench/integrations/sqlite.sh
 * measures it); generous here, since tests share a loaded machine. */
#define PROMPT TU_PROMPT

/* ---- helpers ------------------------------------------------------------ */

static char dir[64];
static char path[96];

static sqlite3 *open_mem(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(":memory:", &db,
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL),
                     SQLITE_OK);
    return db;
}

static sqlite3 *open_file(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db,
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                         SQLITE_OPEN_FULLMUTEX,
                                     NULL),
                     SQLITE_OK);
    return db;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("%s: %d %s", sql, rc, err ? err : "");
}

static int busy_timeout_of(sqlite3 *db)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    return st;
}

/* The connection answers a plain query, and one under a fresh context. */
static void assert_usable(sqlite3 *db)
{
    sqlite3_stmt *st = prep(db, "SELECT 40 + 2");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 42);
    sqlite3_finalize(st);
    ctx_t *c = ctx_with_cancel(ctx_background());
    st = prep(db, "SELECT 7");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 7);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_DONE);
    sqlite3_finalize(st);
    ctx_cancel(c);
    ctx_release(c);
}

/* An application progress handler that reports that the VM is running. */
static tu_event_t running;
static atomic_long app_progress_calls;

static int app_progress(void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&app_progress_calls, 1) == 0)
        tu_event_set(&running);
    return 0;
}

/* Cancels ctx once `running` is set; records when. */
struct canceller {
    ctx_t *ctx;
    ctx_time_t at;
    pthread_t t;
};

static void *cancel_when_running(void *arg)
{
    struct canceller *c = arg;
    if (!tu_event_wait(&running, 30 * CTX_SECOND))
        return NULL;
    c->at = ctx_now();
    ctx_cancel(c->ctx);
    return NULL;
}

static void warm_up(void)
{
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR));
    (void)ctx_done_fd(ctx_background());
}

static int setup(void **state)
{
    warm_up();
    tu_event_init(&running);
    atomic_store(&app_progress_calls, 0);
    snprintf(dir, sizeof dir, "/tmp/ctx-sqlite-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/test.db", dir);
    return tu_count_setup(state);
}

static int teardown(void **state)
{
    char p[128];
    const char *sfx[] = {"", "-journal", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
    tu_event_destroy(&running);
    return tu_count_teardown(state);
}

/* ---- bad arguments ------------------------------------------------------ */

static void test_null_args(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    sqlite3_stmt *st = prep(db, "SELECT 1");
    ctx_t *c = ctx_with_cancel(ctx_background());
    char *err = (char *)"junk";
    assert_int_equal(ctx_sqlite_step(NULL, st), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_step(c, NULL), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_exec(NULL, db, "SELECT 1", NULL, NULL, &err), SQLITE_MISUSE);
    assert_null(err);
    err = (char *)"junk";
    assert_int_equal(ctx_sqlite_exec(c, NULL, "SELECT 1", NULL, NULL, &err), SQLITE_MISUSE);
    assert_null(err);
    assert_int_equal(ctx_sqlite_exec(c, db, NULL, NULL, NULL, NULL), SQLITE_MISUSE);
    ctx_sqlite_binding_t *b = (ctx_sqlite_binding_t *)&err;
    assert_int_equal(ctx_sqlite_bind(NULL, db, &b), SQLITE_MISUSE);
    assert_null(b);
    assert_int_equal(ctx_sqlite_bind(c, NULL, &b), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_bind(c, db, NULL), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_unbind(NULL), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_progress_handler(NULL, 1, app_progress, NULL), SQLITE_MISUSE);
    assert_int_equal(ctx_sqlite_busy_handler(NULL, NULL, NULL), SQLITE_MISUSE);
    /* Still fine. */
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    sqlite3_finalize(st);
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- plain results ------------------------------------------------------- */

static int collect(void *arg, int n, char **vals, char **names)
{
    char *buf = arg;
    if (vals == NULL) { /* an empty result, PRAGMA empty_result_callbacks */
        for (int i = 0; i < n; i++)
            snprintf(buf + strlen(buf), 256 - strlen(buf), "empty:%s;", names[i]);
        return 0;
    }
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), 256 - strlen(buf), "%s=%s;", names[i],
                 vals[i] ? vals[i] : "NULL");
    return 0;
}

static int stop_cb(void *arg, int n, char **vals, char **names)
{
    (void)arg, (void)n, (void)vals, (void)names;
    return 1;
}

static void test_results_like_sqlite(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_t *c = ctx_with_timeout(ctx_background(), CTX_MINUTE);
    char buf[256] = "", *err = NULL;
    assert_int_equal(ctx_sqlite_exec(c, db,
                                     "CREATE TABLE t(a, b); -- comment\n"
                                     "INSERT INTO t VALUES(1, 'x'), (2, NULL);  "
                                     "SELECT a, b FROM t ORDER BY a;",
                                     collect, buf, &err),
                     SQLITE_OK);
    assert_null(err);
    assert_string_equal(buf, "a=1;b=x;a=2;b=NULL;");
    /* Callback abort, syntax error: sqlite3_exec's codes and messages. */
    assert_int_equal(ctx_sqlite_exec(c, db, "SELECT 1; SELECT 2", stop_cb, NULL, &err),
                     SQLITE_ABORT);
    assert_non_null(err);
    sqlite3_free(err);
    assert_int_equal(ctx_sqlite_exec(c, db, "SELEKT 1", NULL, NULL, &err), SQLITE_ERROR);
    assert_non_null(strstr(err, "syntax error"));
    sqlite3_free(err);
    assert_int_equal(ctx_sqlite_exec(c, db, "INSERT INTO nosuch VALUES(1)", NULL, NULL, NULL),
                     SQLITE_ERROR);
    /* Empty result callbacks, as sqlite3_exec. */
    exec_ok(db, "PRAGMA empty_result_callbacks = 1");
    buf[0] = '\0';
    assert_int_equal(ctx_sqlite_exec(c, db, "SELECT a AS z FROM t WHERE a > 5", collect, buf,
                                     NULL),
                     SQLITE_OK);
    assert_string_equal(buf, "empty:z;");
    /* Steps: rows, done, a constraint error stays what it is. */
    exec_ok(db, "CREATE TABLE u(x UNIQUE); INSERT INTO u VALUES(1)");
    sqlite3_stmt *st = prep(db, "INSERT INTO u VALUES(1)");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_CONSTRAINT);
    sqlite3_finalize(st);
    st = prep(db, "SELECT a FROM t ORDER BY a");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_DONE);
    sqlite3_finalize(st);
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- CPU-bound, :memory: ------------------------------------------------ */

static void test_cpu_cancel_step(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    assert_int_equal(ctx_sqlite_progress_handler(db, 1000, app_progress, NULL), SQLITE_OK);
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct canceller k = {.ctx = c};
    k.t = tu_spawn(cancel_when_running, &k);
    sqlite3_stmt *st = prep(db, LONG_SQL);
    int rc = ctx_sqlite_step(c, st);
    ctx_time_t ret = ctx_now();
    tu_join_within(k.t, 10 * CTX_SECOND);
    assert_int_equal(rc, SQLITE_INTERRUPT);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    assert_true(k.at > 0);
    tu_assert_between(ret - k.at, 0, PROMPT);
    /* The statement was reset: it runs again (and is cut at once). */
    assert_int_equal(sqlite3_stmt_busy(st), 0);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_INTERRUPT);
    sqlite3_finalize(st);
    assert_usable(db);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_cpu_deadline_step(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_time_t t0 = ctx_now();
    ctx_t *c = ctx_with_timeout(ctx_background(), 100 * MS);
    sqlite3_stmt *st = prep(db, LONG_SQL);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_INTERRUPT);
    ctx_time_t took = ctx_now() - t0;
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    tu_assert_between(took, 100 * MS, 100 * MS + PROMPT);
    sqlite3_finalize(st);
    assert_usable(db);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_cpu_cancel_exec(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    assert_int_equal(ctx_sqlite_progress_handler(db, 500, app_progress, NULL), SQLITE_OK);
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct canceller k = {.ctx = c};
    k.t = tu_spawn(cancel_when_running, &k);
    char *err = NULL;
    int rc = ctx_sqlite_exec(c, db, "CREATE TABLE t(x); " LONG_SQL "; INSERT INTO t VALUES(1)",
                             NULL, NULL, &err);
    ctx_time_t ret = ctx_now();
    tu_join_within(k.t, 10 * CTX_SECOND);
    assert_int_equal(rc, SQLITE_INTERRUPT);
    assert_string_equal(err, "interrupted");
    sqlite3_free(err);
    tu_assert_between(ret - k.at, 0, PROMPT);
    /* The statement before ran, the one after did not. */
    sqlite3_stmt *st = prep(db, "SELECT count(*) FROM t");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    assert_usable(db);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_cpu_deadline_exec(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_time_t t0 = ctx_now();
    ctx_t *c = ctx_with_timeout(ctx_background(), 80 * MS);
    assert_int_equal(ctx_sqlite_exec(c, db, LONG_SQL, NULL, NULL, NULL), SQLITE_INTERRUPT);
    tu_assert_between(ctx_now() - t0, 80 * MS, 80 * MS + PROMPT);
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    assert_usable(db);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_done_before_call(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    exec_ok(db, "CREATE TABLE t(x)");
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel(c);
    sqlite3_stmt *st = prep(db, "INSERT INTO t VALUES(1)");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_INTERRUPT);
    char *err = NULL;
    assert_int_equal(ctx_sqlite_exec(c, db, "INSERT INTO t VALUES(2)", NULL, NULL, &err),
                     SQLITE_INTERRUPT);
    assert_string_equal(err, "interrupted");
    sqlite3_free(err);
    ctx_sqlite_binding_t *b;
    assert_int_equal(ctx_sqlite_bind(c, db, &b), SQLITE_INTERRUPT);
    assert_null(b);
    sqlite3_finalize(st);
    /* Nothing ran. */
    st = prep(db, "SELECT count(*) FROM t");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A row produced after the context ended is not reported, and a row loop
 * under a context stops at the next step once it ends. */
static void test_row_loop(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_t *c = ctx_with_cancel(ctx_background());
    sqlite3_stmt *st = prep(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 "
                                "FROM c LIMIT 100000) SELECT x FROM c");
    int rows = 0, rc;
    while ((rc = ctx_sqlite_step(c, st)) == SQLITE_ROW)
        if (++rows == 500)
            ctx_cancel(c);
    assert_int_equal(rc, SQLITE_INTERRUPT);
    assert_int_equal(rows, 500);
    assert_int_equal(sqlite3_stmt_busy(st), 0);
    sqlite3_finalize(st);
    assert_usable(db);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- the race with the start of a call --------------------------------- */

struct racer {
    atomic_int go;      /* round number released to the canceller */
    atomic_int stop;
    ctx_t *_Atomic ctx;
    atomic_long delay_ns; /* how long the canceller waits after `go` */
    tu_event_t done;    /* rounds the canceller has finished */
    atomic_int returned; /* round number whose call has returned */
    atomic_int lost;     /* rounds that needed the watchdog */
    _Atomic ctx_time_t cancel_at;
    sqlite3 *db;
};

static void spin_for(ctx_duration_t d)
{
    ctx_time_t end = ctx_now() + d;
    while (ctx_now() < end)
        ;
}

static void *race_canceller(void *arg)
{
    struct racer *r = arg;
    int seen = 0;
    for (;;) {
        int g;
        while ((g = atomic_load(&r->go)) == seen && !atomic_load(&r->stop))
            ;
        if (atomic_load(&r->stop))
            return NULL;
        seen = g;
        spin_for(atomic_load(&r->delay_ns));
        atomic_store(&r->cancel_at, ctx_now());
        ctx_cancel(atomic_load(&r->ctx));
        /* Watchdog: a lost cancel would let the query run for minutes;
         * count it and stop the query so that the test fails, not hangs. */
        ctx_time_t end = ctx_now() + 5 * CTX_SECOND * TU_SLOW;
        while (atomic_load(&r->returned) != g && ctx_now() < end)
            tu_sleep(CTX_MILLISECOND / 4);
        if (atomic_load(&r->returned) != g) {
            atomic_fetch_add(&r->lost, 1);
            while (atomic_load(&r->returned) != g) {
                sqlite3_interrupt(r->db);
                tu_sleep(CTX_MILLISECOND);
            }
        }
        tu_event_set(&r->done);
    }
}

static int cmp_dur(const void *a, const void *b)
{
    ctx_duration_t x = *(const ctx_duration_t *)a, y = *(const ctx_duration_t *)b;
    return x < y ? -1 : x > y;
}

static void race(bool use_exec)
{
    enum { ROUNDS = 400 };
    sqlite3 *db = open_mem();
    sqlite3_busy_timeout(db, 4321);
    sqlite3_stmt *st = prep(db, LONG_SQL);
    struct racer r = {0};
    r.db = db;
    tu_event_init(&r.done);
    pthread_t t = tu_spawn(race_canceller, &r);
    unsigned seed = 12345;
    ctx_duration_t worst = 0;
    static ctx_duration_t lat[ROUNDS];
    /* The window that matters is the call's set-up, before SQLite's VM
     * starts: measure how long a trivial call takes and spread the cancels
     * over twice that, so that most land in or near the set-up. */
    ctx_duration_t setup = CTX_SECOND;
    {
        sqlite3_stmt *one = prep(db, "SELECT 1");
        ctx_t *c = ctx_with_cancel(ctx_background());
        for (int i = 0; i < 50; i++) {
            ctx_time_t t0 = ctx_now();
            assert_int_equal(use_exec ? ctx_sqlite_exec(c, db, "SELECT 1", NULL, NULL, NULL)
                                      : ctx_sqlite_step(c, one),
                             use_exec ? SQLITE_OK : SQLITE_ROW);
            ctx_duration_t d = ctx_now() - t0;
            if (d < setup)
                setup = d;
            sqlite3_reset(one);
        }
        sqlite3_finalize(one);
        ctx_cancel(c);
        ctx_release(c);
    }
    for (int i = 1; i <= ROUNDS; i++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        atomic_store(&r.ctx, c);
        /* Before the call, during its set-up, and after SQLite started;
         * every fourth round anywhere in the first 100 us. */
        long span = (i % 4 == 0) ? 100000 : (long)(2 * setup + 1);
        atomic_store(&r.delay_ns, (long)rand_r(&seed) % span);
        atomic_store(&r.go, i);
        int rc = use_exec ? ctx_sqlite_exec(c, db, LONG_SQL, NULL, NULL, NULL)
                          : ctx_sqlite_step(c, st);
        ctx_time_t ret = ctx_now();
        atomic_store(&r.returned, i);
        assert_true(tu_event_wait_n(&r.done, i, 30 * CTX_SECOND));
        if (atomic_load(&r.lost) != 0)
            fail_msg("round %d: the cancel was lost (the query ran on)", i);
        if (rc != SQLITE_INTERRUPT)
            fail_msg("round %d: rc %d", i, rc);
        assert_int_equal(ctx_err(c), CTX_CANCELED);
        /* From the cancel, or 0 when the call noticed the cancel before the
         * canceller read the clock (a cancel before the call). */
        ctx_duration_t took = ret - atomic_load(&r.cancel_at);
        if (took < 0)
            took = 0;
        if (took > worst)
            worst = took;
        lat[i - 1] = took;
        /* Promptness is measured by the single-shot tests and the bench;
         * 400 rounds on a loaded machine meet a descheduled thread now and
         * then, so this bound only rules out "ran on until something else
         * stopped it". */
        if (took > 20 * PROMPT)
            fail_msg("round %d: returned after %lld us", i, (long long)(took / 1000));
        ctx_release(c);
    }
    atomic_store(&r.stop, 1);
    tu_join_within(t, 10 * CTX_SECOND);
    tu_event_destroy(&r.done);
    qsort(lat, ROUNDS, sizeof lat[0], cmp_dur);
    print_message("%d races (%s), set-up %lld ns, cancel to return p50 %lld us, "
                  "p99 %lld us, max %lld us\n",
                  ROUNDS, use_exec ? "exec" : "step", (long long)setup,
                  (long long)(lat[ROUNDS / 2] / 1000), (long long)(lat[ROUNDS * 99 / 100] / 1000),
                  (long long)(worst / 1000));
    sqlite3_finalize(st);
    /* Hooks back, interrupt state gone. */
    assert_int_equal(busy_timeout_of(db), 4321);
    assert_usable(db);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_race_step(void **state)
{
    (void)state;
    race(false);
}

static void test_race_exec(void **state)
{
    (void)state;
    race(true);
}

/* ---- lock waits: a file database, two connections ------------------------ */

struct worker {
    ctx_t *ctx;
    sqlite3 *db;
    const char *sql;
    bool bind; /* plain sqlite3_exec inside a bound scope */
    int rc, unbind_rc;
    ctx_time_t ret;
    _Atomic long tid;
    pthread_t t;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    atomic_store(&w->tid, tu_gettid());
    if (w->bind) {
        ctx_sqlite_binding_t *b;
        w->rc = ctx_sqlite_bind(w->ctx, w->db, &b);
        if (w->rc == SQLITE_OK) {
            w->rc = sqlite3_exec(w->db, w->sql, NULL, NULL, NULL);
            w->unbind_rc = ctx_sqlite_unbind(b);
        }
    } else {
        w->rc = ctx_sqlite_exec(w->ctx, w->db, w->sql, NULL, NULL, NULL);
    }
    w->ret = ctx_now();
    return NULL;
}

static void start_worker(struct worker *w)
{
    atomic_store(&w->tid, 0);
    w->t = tu_spawn(worker_main, w);
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while (atomic_load(&w->tid) == 0 && ctx_now() < end)
        tu_sleep(100 * CTX_MICROSECOND);
    /* In the busy wait: asleep in ctx_wait_until most of the time. */
    assert_true(tu_wait_blocked(atomic_load(&w->tid), 10 * CTX_SECOND));
}

/* b holds the write lock; a's write waits for it. */
static void lock_pair(sqlite3 **a, sqlite3 **b, int timeout_ms)
{
    *a = open_file();
    *b = open_file();
    exec_ok(*a, "CREATE TABLE IF NOT EXISTS t(x)");
    sqlite3_busy_timeout(*a, timeout_ms);
    exec_ok(*b, "BEGIN EXCLUSIVE");
}

static int count_rows(sqlite3 *db)
{
    sqlite3_stmt *st = prep(db, "SELECT count(*) FROM t");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void lock_cut(bool by_deadline, bool bind)
{
    sqlite3 *a, *b;
    lock_pair(&a, &b, 20000);
    struct worker w = {.db = a, .sql = "INSERT INTO t VALUES(1)", .bind = bind};
    ctx_time_t t0 = ctx_now();
    w.ctx = by_deadline ? ctx_with_timeout(ctx_background(), 200 * MS)
                        : ctx_with_cancel(ctx_background());
    start_worker(&w);
    ctx_time_t at;
    if (by_deadline) {
        tu_join_within(w.t, 10 * CTX_SECOND);
        at = t0 + 200 * MS;
        assert_true(w.ret >= at);
        assert_int_equal(ctx_err(w.ctx), CTX_DEADLINE_EXCEEDED);
    } else {
        at = ctx_now();
        ctx_cancel(w.ctx);
        tu_join_within(w.t, 10 * CTX_SECOND);
        assert_int_equal(ctx_err(w.ctx), CTX_CANCELED);
    }
    tu_assert_between(w.ret - at, 0, PROMPT);
    if (bind) {
        assert_int_equal(w.rc, SQLITE_BUSY); /* plain SQLite call in a scope */
        assert_int_equal(w.unbind_rc, SQLITE_INTERRUPT);
    } else {
        assert_int_equal(w.rc, SQLITE_INTERRUPT);
    }
    /* a's busy timeout is back; once b lets go, a works. */
    assert_int_equal(busy_timeout_of(a), 20000);
    exec_ok(b, "COMMIT");
    assert_usable(a);
    exec_ok(a, "INSERT INTO t VALUES(2)");
    assert_int_equal(count_rows(b), 1);
    ctx_release(w.ctx);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
}

static void test_lock_cancel(void **state)
{
    (void)state;
    lock_cut(false, false);
}

static void test_lock_deadline(void **state)
{
    (void)state;
    lock_cut(true, false);
}

static void test_lock_bound_scope(void **state)
{
    (void)state;
    lock_cut(false, true);
}

/* Live context: a lock held for a while is waited out, as the busy timeout
 * says; a lock held past the busy timeout gives SQLITE_BUSY, not INTERRUPT. */
static void test_busy_timeout_applies(void **state)
{
    (void)state;
    sqlite3 *a, *b;
    lock_pair(&a, &b, 20000);
    struct worker w = {.db = a, .sql = "INSERT INTO t VALUES(1)"};
    w.ctx = ctx_with_timeout(ctx_background(), CTX_MINUTE);
    start_worker(&w);
    exec_ok(b, "COMMIT"); /* the waiter gets the lock on its next try */
    tu_join_within(w.t, 10 * CTX_SECOND);
    assert_int_equal(w.rc, SQLITE_OK);
    assert_int_equal(ctx_err(w.ctx), 0);
    assert_int_equal(count_rows(b), 1);

    /* Busy timeout 150 ms, lock held throughout, context live. */
    sqlite3_busy_timeout(a, 150);
    exec_ok(b, "BEGIN EXCLUSIVE");
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_sqlite_exec(w.ctx, a, "INSERT INTO t VALUES(2)", NULL, NULL, NULL),
                     SQLITE_BUSY);
    tu_assert_between(ctx_now() - t0, 150 * MS, 150 * MS + 2 * PROMPT);
    assert_int_equal(ctx_err(w.ctx), 0);
    assert_int_equal(busy_timeout_of(a), 150);
    /* No busy timeout at all: SQLITE_BUSY at once, as SQLite does. */
    sqlite3_busy_timeout(a, 0);
    t0 = ctx_now();
    assert_int_equal(ctx_sqlite_exec(w.ctx, a, "INSERT INTO t VALUES(2)", NULL, NULL, NULL),
                     SQLITE_BUSY);
    tu_assert_between(ctx_now() - t0, 0, PROMPT);
    exec_ok(b, "COMMIT");
    ctx_cancel(w.ctx);
    ctx_release(w.ctx);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
}

/* A busy timeout that ends at the context's deadline is the deadline. */
static void test_busy_timeout_at_deadline(void **state)
{
    (void)state;
    sqlite3 *a, *b;
    lock_pair(&a, &b, 120);
    ctx_t *c = ctx_with_timeout(ctx_background(), 120 * MS);
    sqlite3_stmt *st = prep(a, "INSERT INTO t VALUES(1)");
    int rc = ctx_sqlite_step(c, st);
    /* Either the deadline won (INTERRUPT, err set) or the busy timeout ran
     * out clearly first; never BUSY with the deadline already passed. */
    if (rc == SQLITE_BUSY)
        assert_int_equal(ctx_err(c), 0);
    else
        assert_int_equal(rc, SQLITE_INTERRUPT);
    sqlite3_finalize(st);
    exec_ok(b, "COMMIT");
    ctx_release(c);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
}

/* A COMMIT that got SQLITE_BUSY is retried (the documented pattern): the
 * retry waits for the lock again, and that wait is bounded by the context. */
static void test_commit_retry(void **state)
{
    (void)state;
    sqlite3 *a = open_file(), *b = open_file();
    exec_ok(a, "CREATE TABLE t(x); INSERT INTO t VALUES(0)");
    exec_ok(a, "BEGIN; INSERT INTO t VALUES(1)");
    /* b reads and keeps its read lock: a's COMMIT cannot get EXCLUSIVE. */
    sqlite3_stmt *rd = prep(b, "SELECT x FROM t");
    assert_int_equal(sqlite3_step(rd), SQLITE_ROW);
    sqlite3_stmt *commit = prep(a, "COMMIT");
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_sqlite_step(c, commit), SQLITE_BUSY); /* no busy timeout */
    assert_int_equal(ctx_err(c), 0);
    sqlite3_busy_timeout(a, 20000);
    ctx_time_t t0 = ctx_now();
    ctx_t *d = ctx_with_timeout(ctx_background(), 100 * MS);
    assert_int_equal(ctx_sqlite_step(d, commit), SQLITE_INTERRUPT);
    tu_assert_between(ctx_now() - t0, 100 * MS, 100 * MS + PROMPT);
    assert_int_equal(ctx_err(d), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(busy_timeout_of(a), 20000);
    /* b lets go; the retry commits. */
    sqlite3_finalize(rd);
    assert_int_equal(ctx_sqlite_step(c, commit), SQLITE_DONE);
    sqlite3_finalize(commit);
    assert_int_equal(count_rows(b), 2);
    ctx_cancel(c);
    ctx_release(c);
    ctx_release(d);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
}

/* ---- hooks --------------------------------------------------------------- */

static atomic_int app_busy_calls;

static int app_busy(void *arg, int count)
{
    (void)arg;
    atomic_fetch_add(&app_busy_calls, 1);
    return count < 3; /* three tries, then SQLITE_BUSY */
}

static int stop_progress(void *arg)
{
    (void)arg;
    return 1;
}

static void test_hooks_restored(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_t *c = ctx_with_cancel(ctx_background());
    /* Busy timeout: read back and restored after each kind of call. */
    sqlite3_busy_timeout(db, 2500);
    sqlite3_stmt *st = prep(db, "SELECT 1");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    assert_int_equal(busy_timeout_of(db), 2500);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_DONE);
    assert_int_equal(ctx_sqlite_exec(c, db, "SELECT 1", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(busy_timeout_of(db), 2500);
    ctx_sqlite_binding_t *b;
    assert_int_equal(ctx_sqlite_bind(c, db, &b), SQLITE_OK);
    assert_int_equal(busy_timeout_of(db), 0); /* ours, inside the scope */
    assert_int_equal(ctx_sqlite_unbind(b), SQLITE_OK);
    assert_int_equal(busy_timeout_of(db), 2500);
    sqlite3_finalize(st);

    /* Progress handler registered through ctx_sqlite: runs during a call and
     * is back on the connection afterwards. */
    assert_int_equal(ctx_sqlite_progress_handler(db, 100, app_progress, NULL), SQLITE_OK);
    st = prep(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
                  "LIMIT 20000) SELECT count(*) FROM c");
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    long during = atomic_load(&app_progress_calls);
    assert_true(during > 10);
    sqlite3_reset(st);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW); /* plain: still installed */
    assert_true(atomic_load(&app_progress_calls) > during + 10);
    sqlite3_reset(st);
    /* An application progress handler that stops the statement: its
     * SQLITE_INTERRUPT is reported as is, the context is still live. */
    assert_int_equal(ctx_sqlite_progress_handler(db, 100, stop_progress, NULL), SQLITE_OK);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_INTERRUPT);
    assert_int_equal(ctx_err(c), 0);
    sqlite3_reset(st);
    assert_int_equal(ctx_sqlite_progress_handler(db, 0, NULL, NULL), SQLITE_OK);
    long before = atomic_load(&app_progress_calls);
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    assert_int_equal(atomic_load(&app_progress_calls), before);
    sqlite3_finalize(st);
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK); /* frees the record */
}

static void test_app_busy_handler(void **state)
{
    (void)state;
    sqlite3 *a, *b;
    lock_pair(&a, &b, 0);
    assert_int_equal(ctx_sqlite_busy_handler(a, app_busy, NULL), SQLITE_OK);
    ctx_t *c = ctx_with_cancel(ctx_background());
    atomic_store(&app_busy_calls, 0);
    assert_int_equal(ctx_sqlite_exec(c, a, "INSERT INTO t VALUES(1)", NULL, NULL, NULL),
                     SQLITE_BUSY);
    assert_int_equal(atomic_load(&app_busy_calls), 4); /* counts 0..3 */
    /* Back on the connection for plain calls. */
    atomic_store(&app_busy_calls, 0);
    assert_int_equal(sqlite3_exec(a, "INSERT INTO t VALUES(1)", NULL, NULL, NULL), SQLITE_BUSY);
    assert_int_equal(atomic_load(&app_busy_calls), 4);
    /* A busy timeout set later wins, as in SQLite, and stays. */
    sqlite3_busy_timeout(a, 30);
    atomic_store(&app_busy_calls, 0);
    assert_int_equal(ctx_sqlite_exec(c, a, "INSERT INTO t VALUES(1)", NULL, NULL, NULL),
                     SQLITE_BUSY);
    assert_int_equal(atomic_load(&app_busy_calls), 0);
    assert_int_equal(busy_timeout_of(a), 30);
    exec_ok(b, "COMMIT");
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
}

/* ---- scopes, nesting, threads -------------------------------------------- */

struct nested {
    ctx_t *ctx;
    sqlite3 *db;
    int rows;
    int inner_rc;
};

static int nested_cb(void *arg, int n, char **vals, char **names)
{
    (void)n, (void)vals, (void)names;
    struct nested *x = arg;
    sqlite3_stmt *st = prep(x->db, "SELECT 5");
    x->inner_rc = ctx_sqlite_step(x->ctx, st);
    sqlite3_finalize(st);
    x->rows++;
    return 0;
}

static void test_bound_scope(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    sqlite3_busy_timeout(db, 777);
    /* A plain long query in a scope is cut by the context. */
    ctx_t *c = ctx_with_timeout(ctx_background(), 100 * MS);
    ctx_sqlite_binding_t *b;
    assert_int_equal(ctx_sqlite_bind(c, db, &b), SQLITE_OK);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(sqlite3_exec(db, LONG_SQL, NULL, NULL, NULL), SQLITE_INTERRUPT);
    tu_assert_between(ctx_now() - t0, 90 * MS, 100 * MS + PROMPT);
    assert_int_equal(ctx_sqlite_unbind(b), SQLITE_INTERRUPT);
    assert_int_equal(busy_timeout_of(db), 777);
    assert_usable(db);
    ctx_release(c);

    /* Nested: ctx_sqlite_step inside a scope and inside an exec callback;
     * an inner call is cut by the outer context too. */
    ctx_t *outer = ctx_with_cancel(ctx_background());
    ctx_t *inner = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_sqlite_bind(outer, db, &b), SQLITE_OK);
    struct nested x = {.ctx = inner, .db = db};
    assert_int_equal(ctx_sqlite_exec(inner, db, "SELECT 1 UNION ALL SELECT 2", nested_cb, &x,
                                     NULL),
                     SQLITE_OK);
    assert_int_equal(x.rows, 2);
    assert_int_equal(x.inner_rc, SQLITE_ROW);
    assert_int_equal(busy_timeout_of(db), 0); /* still the scope's */
    ctx_cancel(outer);
    sqlite3_stmt *st = prep(db, LONG_SQL);
    assert_int_equal(ctx_sqlite_step(inner, st), SQLITE_INTERRUPT);
    assert_int_equal(ctx_err(inner), 0);
    sqlite3_finalize(st);
    assert_int_equal(ctx_sqlite_unbind(b), SQLITE_INTERRUPT);
    assert_int_equal(busy_timeout_of(db), 777);
    assert_usable(db);
    ctx_cancel(inner);
    ctx_release(inner);
    ctx_release(outer);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

struct sharer {
    sqlite3 *db;
    ctx_t *ctx;
    int id;
    int failures;
};

static void *share_main(void *arg)
{
    struct sharer *s = arg;
    char sql[64];
    for (int i = 0; i < 200; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES(%d)", s->id * 1000 + i);
        if (ctx_sqlite_exec(s->ctx, s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            s->failures++;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM t", -1, &st, NULL) != SQLITE_OK ||
            ctx_sqlite_step(s->ctx, st) != SQLITE_ROW)
            s->failures++;
        sqlite3_finalize(st);
    }
    return NULL;
}

/* Serialized mode: calls from several threads on one connection. */
static void test_shared_connection(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    exec_ok(db, "CREATE TABLE t(x)");
    sqlite3_busy_timeout(db, 999);
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct sharer s[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct sharer){.db = db, .ctx = c, .id = i};
        t[i] = tu_spawn(share_main, &s[i]);
    }
    for (int i = 0; i < 4; i++) {
        tu_join_within(t[i], 60 * CTX_SECOND);
        assert_int_equal(s[i].failures, 0);
    }
    assert_int_equal(count_rows(db), 800);
    assert_int_equal(busy_timeout_of(db), 999);
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- out of memory ------------------------------------------------------- */

static void test_out_of_memory(void **state)
{
    (void)state;
    sqlite3 *db = open_mem();
    ctx_t *c = ctx_with_cancel(ctx_background());
    sqlite3_stmt *st = prep(db, "SELECT 1");
    sqlite3_int64 old = sqlite3_hard_heap_limit64(-1);
    sqlite3_hard_heap_limit64(sqlite3_memory_used());
    ctx_sqlite_binding_t *b;
    int rc = ctx_sqlite_bind(c, db, &b);
    int rc2 = ctx_sqlite_progress_handler(db, 10, app_progress, NULL);
    int rc3 = ctx_sqlite_exec(c, db, "SELECT 1", NULL, NULL, NULL);
    sqlite3_hard_heap_limit64(old);
    assert_int_equal(rc, SQLITE_NOMEM);
    assert_null(b);
    assert_int_equal(rc2, SQLITE_NOMEM);
    assert_int_equal(rc3, SQLITE_NOMEM);
    /* Everything works again afterwards. */
    assert_int_equal(ctx_sqlite_step(c, st), SQLITE_ROW);
    sqlite3_finalize(st);
    assert_int_equal(ctx_sqlite_bind(c, db, &b), SQLITE_OK);
    assert_int_equal(ctx_sqlite_unbind(b), SQLITE_OK);
    assert_usable(db);
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_null_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_results_like_sqlite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_cancel_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_deadline_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_cancel_exec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_deadline_exec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_before_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_exec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_bound_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_timeout_applies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_timeout_at_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hooks_restored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_busy_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bound_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
