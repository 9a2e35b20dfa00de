/* The pool (waits bounded by the context, maximum size, broken connections
 * replaced) and transactions (what a cancelled statement leaves behind, the
 * way out), against the private server. */
#include "pqtest.h"

#include <unistd.h>

static PGconn *admin;
static char pool_ci[1200];
static char app_count[256]; /* this process's pool connections */

static int group_setup(void **state)
{
    (void)state;
    tp_load_conninfo();
    tp_warm_up();
    admin = tp_plain(tp_conninfo);
    snprintf(pool_ci, sizeof pool_ci, "%s application_name=ctxpool%d",
             tp_conninfo, (int)getpid());
    snprintf(app_count, sizeof app_count,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
             "'ctxpool%d'",
             (int)getpid());
    PGresult *r = PQexec(admin, "CREATE TABLE IF NOT EXISTS ctx_pq_tx (x int)");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(admin);
    return 0;
}

struct acq_job {
    ctx_pq_pool_t *pool;
    ctx_t *ctx;
    PGconn *res;
    int err;
    ctx_time_t returned;
    pthread_t t;
};

static void *acq_main(void *arg)
{
    struct acq_job *j = arg;
    errno = 0;
    j->res = ctx_pq_pool_acquire(j->pool, j->ctx);
    j->err = errno;
    j->returned = ctx_now();
    return NULL;
}

static void test_pool_args(void **state)
{
    (void)state;
    errno = 0;
    assert_null(ctx_pq_pool_new(NULL, 2));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_pool_new(pool_ci, 0));
    assert_int_equal(errno, EINVAL);
    ctx_pq_pool_t *p = ctx_pq_pool_new(pool_ci, 1);
    assert_non_null(p);
    errno = 0;
    assert_null(ctx_pq_pool_acquire(NULL, ctx_background()));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_pool_acquire(p, NULL));
    assert_int_equal(errno, EINVAL);
    ctx_pq_pool_release(NULL, NULL);
    ctx_pq_pool_release(p, NULL);
    ctx_pq_pool_release(p, admin); /* not the pool's: ignored */
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    char buf[64];
    assert_int_equal(ctx_pq_pool_last_error(p, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    ctx_pq_pool_free(p);
    ctx_pq_pool_free(NULL);

    /* A server that is not there: ECONNREFUSED and libpq's message. */
    p = ctx_pq_pool_new("host=/nonexistent/dir port=1", 1);
    errno = 0;
    assert_null(ctx_pq_pool_acquire(p, ctx_background()));
    assert_int_equal(errno, ECONNREFUSED);
    assert_true(ctx_pq_pool_last_error(p, buf, sizeof buf) > 0);
    print_message("last error: %s\n", buf);
    /* ... the slot was given back: the next try fails the same way. */
    errno = 0;
    assert_null(ctx_pq_pool_acquire(p, ctx_background()));
    assert_int_equal(errno, ECONNREFUSED);
    ctx_pq_pool_free(p);
}

/* Max size respected, the wait for a free connection bounded by the
 * context (deadline and cancel), a release wakes a waiter, reuse. */
static void test_pool_wait(void **state)
{
    (void)state;
    ctx_pq_pool_t *p = ctx_pq_pool_new(pool_ci, 2);
    assert_non_null(p);
    PGconn *a = ctx_pq_pool_acquire(p, ctx_background());
    PGconn *b = ctx_pq_pool_acquire(p, ctx_background());
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(tp_scalar(admin, app_count), 2);

    /* Full: the wait ends with the deadline. */
    const ctx_duration_t d = 200 * MS;
    ctx_time_t t0 = ctx_now();
    ctx_t *ctx = ctx_with_timeout(ctx_background(), d);
    errno = 0;
    assert_null(ctx_pq_pool_acquire(p, ctx));
    assert_int_equal(errno, ETIMEDOUT);
    tu_assert_between(ctx_now() - t0, d, d + TP_RETURN);
    ctx_release(ctx);
    assert_int_equal(tp_scalar(admin, app_count), 2);

    /* ... and with a cancel from another thread. */
    ctx = ctx_with_cancel(ctx_background());
    struct acq_job j = {.pool = p, .ctx = ctx};
    j.t = tu_spawn(acq_main, &j);
    tu_sleep(50 * MS); /* not a synchronisation: it may or may not wait yet */
    t0 = ctx_now();
    ctx_cancel(ctx);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_null(j.res);
    assert_int_equal(j.err, ECANCELED);
    tu_assert_between(j.returned - t0, 0, TP_RETURN);
    ctx_release(ctx);

    /* A release hands the connection to the waiter. */
    ctx = ctx_with_timeout(ctx_background(), TP_FAR);
    struct acq_job w = {.pool = p, .ctx = ctx};
    w.t = tu_spawn(acq_main, &w);
    tu_sleep(50 * MS); /* not a synchronisation: either order is right */
    ctx_pq_pool_release(p, a);
    tu_join_within(w.t, TP_FAR);
    assert_ptr_equal(w.res, a);
    tp_assert_usable(w.res);
    ctx_release(ctx);

    /* Released connections are reused, never more than 2 exist. */
    ctx_pq_pool_release(p, w.res);
    ctx_pq_pool_release(p, b);
    for (int i = 0; i < 10; i++) {
        PGconn *x = ctx_pq_pool_acquire(p, ctx_background());
        assert_true(x == a || x == b);
        tp_assert_usable(x);
        ctx_pq_pool_release(p, x);
    }
    assert_int_equal(tp_scalar(admin, app_count), 2);
    ctx_pq_pool_free(p);
    assert_true(tp_wait_value(admin, app_count, 0, TP_FAR));
}

/* Broken connections are closed and replaced, never handed out again:
 * one ended by the server while idle in the pool, one marked broken after
 * an unacknowledged cancel. */
static void test_pool_broken(void **state)
{
    (void)state;
    ctx_pq_pool_t *p = ctx_pq_pool_new(pool_ci, 1);
    PGconn *a = ctx_pq_pool_acquire(p, ctx_background());
    assert_non_null(a);
    int pid = PQbackendPID(a);
    ctx_pq_pool_release(p, a);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::int", pid);
    assert_int_equal(tp_scalar(admin, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_true(tp_wait_value(admin, sql, 0, TP_FAR));
    PGconn *b = ctx_pq_pool_acquire(p, ctx_background());
    assert_non_null(b);
    assert_int_not_equal(PQbackendPID(b), pid);
    tp_assert_usable(b);

    /* Unacknowledged cancel: backend stopped, the call gives up after the
     * grace and marks the connection broken; release closes it. */
    pid = PQbackendPID(b);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    struct tp_job j;
    tp_job_start(&j, ctx, b, "SELECT pg_sleep(30)");
    tp_assert_running(admin, pid);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    ctx_cancel(ctx);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_int_equal(kill(pid, SIGCONT), 0);
    assert_int_equal(j.err, ECANCELED);
    assert_int_equal(PQstatus(b), CONNECTION_BAD);
    ctx_pq_pool_release(p, b);
    ctx_release(ctx);
    PGconn *c = ctx_pq_pool_acquire(p, ctx_background());
    assert_non_null(c);
    assert_int_not_equal(PQbackendPID(c), pid);
    tp_assert_usable(c);
    ctx_pq_pool_release(p, c);
    tp_assert_gone(admin, pid);
    ctx_pq_pool_free(p);
}

static long rows(const char *tag)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM ctx_pq_tx WHERE x = %d",
             (int)getpid() * 10 + tag[0]);
    return tp_scalar(admin, sql);
}

static PGresult *exec_ok(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = ctx_pq_exec(ctx_background(), c, sql);
    assert_non_null(r);
    if (PQresultStatus(r) != want)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

/* A statement cancelled inside a transaction aborts the transaction
 * (PQTRANS_INERROR, later statements refused); ctx_pq_rollback() is the way
 * out; the pool closes such a connection instead of handing it out. */
static void test_transaction(void **state)
{
    (void)state;
    PGconn *c = ctx_pq_connect(ctx_background(), tp_conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    int pid = PQbackendPID(c);
    char ins[128];
    snprintf(ins, sizeof ins, "INSERT INTO ctx_pq_tx VALUES (%d)",
             (int)getpid() * 10 + 'a');
    assert_int_equal(ctx_pq_rollback(c), 0); /* nothing to end */
    PQclear(exec_ok(c, "BEGIN", PGRES_COMMAND_OK));
    PQclear(exec_ok(c, ins, PGRES_COMMAND_OK));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INTRANS);
    ctx_t *ctx = ctx_with_timeout(ctx_background(), 200 * MS);
    errno = 0;
    assert_null(ctx_pq_exec(ctx, c, "SELECT pg_sleep(30)"));
    assert_int_equal(errno, ETIMEDOUT);
    ctx_release(ctx);
    tp_assert_gone(admin, pid);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    PGresult *r = exec_ok(c, "SELECT 1", PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "25P02");
    PQclear(r);
    assert_int_equal(ctx_pq_rollback(c), 0);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(rows("a"), 0); /* rolled back */
    tp_assert_usable(c);
    PQfinish(c);

    /* The pool: a connection released inside a transaction (aborted or
     * not) is closed; the server rolls back; the next one is fresh. */
    ctx_pq_pool_t *p = ctx_pq_pool_new(pool_ci, 1);
    snprintf(ins, sizeof ins, "INSERT INTO ctx_pq_tx VALUES (%d)",
             (int)getpid() * 10 + 'b');
    for (int aborted = 0; aborted < 2; aborted++) {
        PGconn *a = ctx_pq_pool_acquire(p, ctx_background());
        pid = PQbackendPID(a);
        PQclear(exec_ok(a, "BEGIN", PGRES_COMMAND_OK));
        PQclear(exec_ok(a, ins, PGRES_COMMAND_OK));
        if (aborted) {
            ctx = ctx_with_timeout(ctx_background(), 100 * MS);
            assert_null(ctx_pq_exec(ctx, a, "SELECT pg_sleep(30)"));
            ctx_release(ctx);
            assert_int_equal(PQtransactionStatus(a), PQTRANS_INERROR);
        }
        ctx_pq_pool_release(p, a);
        char sql[128];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
        assert_true(tp_wait_value(admin, sql, 0, TP_FAR));
        assert_int_equal(rows("b"), 0);
        PGconn *b = ctx_pq_pool_acquire(p, ctx_background());
        assert_int_not_equal(PQbackendPID(b), pid);
        assert_int_equal(PQtransactionStatus(b), PQTRANS_IDLE);
        tp_assert_usable(b);
        ctx_pq_pool_release(p, b);
    }
    ctx_pq_pool_free(p);
}

/* Many threads share a small pool under deadlines. */
#define NT 8
struct worker {
    ctx_pq_pool_t *pool;
    int ok, timeouts;
    pthread_t t;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 20; i++) {
        ctx_t *ctx = ctx_with_timeout(ctx_background(), (i % 4 == 0 ? 5 : 2000) * MS);
        PGconn *c = ctx_pq_pool_acquire(w->pool, ctx);
        if (c != NULL) {
            PGresult *r = ctx_pq_exec(ctx, c, i % 4 == 0 ? "SELECT pg_sleep(1)"
                                                         : "SELECT 1");
            if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK)
                w->ok++;
            else if (r == NULL && errno == ETIMEDOUT)
                w->timeouts++;
            PQclear(r);
            ctx_pq_pool_release(w->pool, c);
        } else if (errno == ETIMEDOUT) {
            w->timeouts++;
        }
        ctx_release(ctx);
    }
    return NULL;
}

static void test_pool_threads(void **state)
{
    (void)state;
    ctx_pq_pool_t *p = ctx_pq_pool_new(pool_ci, 3);
    struct worker w[NT];
    for (int i = 0; i < NT; i++) {
        w[i] = (struct worker){.pool = p};
        w[i].t = tu_spawn(worker_main, &w[i]);
    }
    int ok = 0, to = 0;
    for (int i = 0; i < NT; i++) {
        tu_join_within(w[i].t, 4 * TP_FAR);
        ok += w[i].ok;
        to += w[i].timeouts;
    }
    print_message("pool threads: %d ok, %d deadlines\n", ok, to);
    assert_true(ok > 0);
    assert_true(tp_scalar(admin, app_count) <= 3);
    ctx_pq_pool_free(p);
    assert_true(tp_wait_value(admin, app_count, 0, TP_FAR));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_args, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_pool_wait, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_pool_broken, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_transaction, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_pool_threads, tp_setup, tp_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
