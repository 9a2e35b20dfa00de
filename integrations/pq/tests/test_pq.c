/* libctx-pq against a real server: queries, cancel and deadline in every
 * phase (connecting, running, streaming rows), a stopped and a terminated
 * backend, 50 queries cancelled at once, out of fds; each cancel checked on
 * the far side (pg_stat_activity) and followed by a query on the same
 * connection. */
#include "pqtest.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static PGconn *admin;

static int group_setup(void **state)
{
    (void)state;
    tp_load_conninfo();
    tp_warm_up();
    admin = tp_plain(tp_conninfo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(admin);
    return 0;
}

static PGconn *connect_ok(void)
{
    PGconn *c = ctx_pq_connect(ctx_background(), tp_conninfo);
    assert_non_null(c);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("ctx_pq_connect: %s", PQerrorMessage(c));
    return c;
}

/* ---- plain use ----------------------------------------------------------- */

static void test_bad_args(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    errno = 0;
    assert_null(ctx_pq_connect(NULL, tp_conninfo));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_connect(ctx_background(), NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_exec(NULL, c, "SELECT 1"));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_exec(ctx_background(), NULL, "SELECT 1"));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_exec(ctx_background(), c, NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_pq_exec_params(ctx_background(), c, NULL, 0, NULL, NULL,
                                   NULL, NULL, 0));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(ctx_pq_rollback(NULL), EINVAL);

    /* A context already done: nothing is sent, the connection is intact. */
    ctx_t *done = ctx_with_cancel(ctx_background());
    ctx_cancel(done);
    errno = 0;
    assert_null(ctx_pq_exec(done, c, "SELECT pg_sleep(30)"));
    assert_int_equal(errno, ECANCELED);
    errno = 0;
    assert_null(ctx_pq_connect(done, tp_conninfo));
    assert_int_equal(errno, ECANCELED);
    ctx_release(done);
    tp_assert_usable(c);

    /* A bad conninfo is libpq's: a CONNECTION_BAD conn with a message. */
    PGconn *bad = ctx_pq_connect(ctx_background(), "nosuchkeyword=1");
    assert_non_null(bad);
    assert_int_equal(PQstatus(bad), CONNECTION_BAD);
    assert_true(strlen(PQerrorMessage(bad)) > 0);
    PQfinish(bad);
    bad = ctx_pq_connect(ctx_background(), "host=/nonexistent/dir port=1");
    assert_non_null(bad);
    assert_int_equal(PQstatus(bad), CONNECTION_BAD);
    PQfinish(bad);

    /* A bad connection: the query cannot be sent, libpq says why. */
    PQfinish(c);
}

static void test_exec(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    assert_int_equal(PQisnonblocking(c), 0);
    PGresult *r = ctx_pq_exec(ctx_background(), c, "SELECT 1");
    assert_non_null(r);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    assert_int_equal(PQisnonblocking(c), 0); /* the application's mode */

    /* Several statements: the last result, as PQexec(). */
    r = ctx_pq_exec(ctx_background(), c, "SELECT 1; SELECT 2, 3");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQnfields(r), 2);
    assert_string_equal(PQgetvalue(r, 0, 0), "2");
    PQclear(r);

    /* SQL errors are results. */
    r = ctx_pq_exec(ctx_background(), c, "SELECT 1/0");
    assert_non_null(r);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22012");
    PQclear(r);
    /* ... and PQerrorMessage() reports it, as after PQexec(). */
    assert_non_null(strstr(PQerrorMessage(c), "division by zero"));

    /* Parameters, under a live deadline; non-blocking mode kept. */
    assert_int_equal(PQsetnonblocking(c, 1), 0);
    ctx_t *d = ctx_with_timeout(ctx_background(), 30 * CTX_SECOND);
    const char *vals[2] = {"20", "22"};
    r = ctx_pq_exec_params(d, c, "SELECT $1::int + $2::int", 2, NULL, vals,
                           NULL, NULL, 0);
    assert_non_null(r);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    assert_int_equal(PQisnonblocking(c), 1);
    assert_int_equal(PQsetnonblocking(c, 0), 0);
    ctx_cancel(d);
    ctx_release(d);

    /* A large command and a large result go through the flush and read
     * loops. */
    size_t n = 1 << 20;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "SELECT length('");
    memset(big + strlen(big), 'x', n);
    strcpy(big + 15 + n, "')");
    r = ctx_pq_exec(ctx_background(), c, big);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), (long)n);
    PQclear(r);
    free(big);
    r = ctx_pq_exec(ctx_background(), c,
                    "SELECT g, repeat('y', 100) FROM generate_series(1, 100000) g");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 100000);
    PQclear(r);

    /* Another command in progress: libpq's refusal, as EIO. */
    assert_int_equal(PQsendQuery(c, "SELECT 1"), 1);
    errno = 0;
    assert_null(ctx_pq_exec(ctx_background(), c, "SELECT 2"));
    assert_int_equal(errno, EIO);
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    tp_assert_usable(c);
    PQfinish(c);
}

/* ---- cancel and deadline while the query runs ---------------------------- */

static void test_cancel_running(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    for (int round = 0; round < 3; round++) {
        ctx_t *ctx = ctx_with_cancel(ctx_background());
        struct tp_job j;
        tp_job_start(&j, ctx, c, "SELECT pg_sleep(30)");
        tp_assert_running(admin, pid);
        ctx_time_t t0 = ctx_now();
        ctx_cancel(ctx);
        tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
        assert_null(j.res);
        assert_int_equal(j.err, ECANCELED);
        tu_assert_between(j.returned - t0, 0, TP_RETURN);
        tp_assert_gone(admin, pid);
        assert_int_equal(PQisnonblocking(c), 0);
        tp_assert_usable(c);
        ctx_release(ctx);
    }
    PQfinish(c);
}

static void test_deadline_running(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    const ctx_duration_t d = 300 * MS;
    ctx_time_t t0 = ctx_now();
    ctx_t *ctx = ctx_with_timeout(ctx_background(), d);
    errno = 0;
    assert_null(ctx_pq_exec(ctx, c, "SELECT pg_sleep(30)"));
    assert_int_equal(errno, ETIMEDOUT);
    tu_assert_between(ctx_now() - t0, d, d + TP_RETURN);
    tp_assert_gone(admin, pid);
    tp_assert_usable(c);
    ctx_release(ctx);

    /* With parameters. */
    t0 = ctx_now();
    ctx = ctx_with_timeout(ctx_background(), d);
    const char *vals[1] = {"30"};
    errno = 0;
    assert_null(ctx_pq_exec_params(ctx, c, "SELECT pg_sleep($1::float8)", 1,
                                   NULL, vals, NULL, NULL, 0));
    assert_int_equal(errno, ETIMEDOUT);
    tu_assert_between(ctx_now() - t0, d, d + TP_RETURN);
    tp_assert_gone(admin, pid);
    tp_assert_usable(c);
    ctx_release(ctx);
    PQfinish(c);
}

/* Rows are flowing (each row sleeps a little, so the server sends them as
 * it makes them) when the deadline passes. */
static void test_deadline_streaming(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    const ctx_duration_t d = 400 * MS;
    const char *sql = "SELECT g, repeat('z', 2000), pg_sleep(0.0005) "
                      "FROM generate_series(1, 1000000) g";
    ctx_time_t t0 = ctx_now();
    ctx_t *ctx = ctx_with_timeout(ctx_background(), d);
    struct tp_job j;
    tp_job_start(&j, ctx, c, sql);
    tp_assert_running(admin, pid);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_null(j.res);
    assert_int_equal(j.err, ETIMEDOUT);
    tu_assert_between(j.returned - t0, d, d + TP_RETURN);
    tp_assert_gone(admin, pid);
    tp_assert_usable(c);
    ctx_release(ctx);

    /* And cancelled from another thread while rows flow. */
    ctx = ctx_with_cancel(ctx_background());
    tp_job_start(&j, ctx, c, sql);
    tp_assert_running(admin, pid);
    tu_sleep(100 * MS); /* not a synchronisation: lets rows accumulate */
    t0 = ctx_now();
    ctx_cancel(ctx);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_null(j.res);
    assert_int_equal(j.err, ECANCELED);
    tu_assert_between(j.returned - t0, 0, TP_RETURN);
    tp_assert_gone(admin, pid);
    tp_assert_usable(c);
    ctx_release(ctx);
    PQfinish(c);
}

/* ---- connecting ---------------------------------------------------------- */

/* A TCP listener that never accepts: the kernel completes the handshake,
 * nothing ever answers libpq's startup (or SSL) request. */
static int silent_listener(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return s;
}

struct conn_job {
    ctx_t *ctx;
    const char *ci;
    PGconn *res;
    int err;
    ctx_time_t returned;
};

static void *conn_job_main(void *arg)
{
    struct conn_job *j = arg;
    errno = 0;
    j->res = ctx_pq_connect(j->ctx, j->ci);
    j->err = errno;
    j->returned = ctx_now();
    return NULL;
}

static void test_connect_silent(void **state)
{
    (void)state;
    int port;
    int ls = silent_listener(&port);
    char ci[256];
    const char *modes[2] = {"disable", "prefer"};
    for (int m = 0; m < 2; m++) {
        snprintf(ci, sizeof ci,
                 "hostaddr=127.0.0.1 port=%d user=x dbname=x sslmode=%s", port,
                 modes[m]);
        /* Deadline. */
        const ctx_duration_t d = 200 * MS;
        ctx_time_t t0 = ctx_now();
        ctx_t *ctx = ctx_with_timeout(ctx_background(), d);
        errno = 0;
        assert_null(ctx_pq_connect(ctx, ci));
        assert_int_equal(errno, ETIMEDOUT);
        tu_assert_between(ctx_now() - t0, d, d + TP_RETURN);
        ctx_release(ctx);

        /* Cancel from another thread, once the connect waits. */
        ctx = ctx_with_cancel(ctx_background());
        struct conn_job j = {.ctx = ctx, .ci = ci};
        pthread_t t = tu_spawn(conn_job_main, &j);
        tu_sleep(50 * MS); /* not a synchronisation: any phase will do */
        t0 = ctx_now();
        ctx_cancel(ctx);
        tu_join_within(t, TP_FAR);
        assert_null(j.res);
        assert_int_equal(j.err, ECANCELED);
        tu_assert_between(j.returned - t0, 0, TP_RETURN);
        ctx_release(ctx);
    }

    /* The conninfo's own connect_timeout still applies (libpq's minimum is
     * 2 s), reported as ETIMEDOUT with the context still live. */
    snprintf(ci, sizeof ci,
             "hostaddr=127.0.0.1 port=%d user=x sslmode=disable connect_timeout=1",
             port);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    ctx_time_t t0 = ctx_now();
    errno = 0;
    assert_null(ctx_pq_connect(ctx, ci));
    assert_int_equal(errno, ETIMEDOUT);
    assert_int_equal(ctx_err(ctx), 0);
    tu_assert_between(ctx_now() - t0, 2 * CTX_SECOND, 2 * CTX_SECOND + TP_RETURN);
    ctx_release(ctx);
    close(ls);
}

/* ---- faults -------------------------------------------------------------- */

/* The backend is stopped (SIGSTOP) mid-query: the cancel request is
 * delivered but never acted on. The call returns by the grace bound, the
 * connection fails cleanly, and the query ends once the backend resumes. */
static void test_stopped_backend(void **state)
{
    (void)state;
    /* The grace runs out by design here: a short one keeps the suite
     * short (tp_setup restores the default for the next test). */
    tp_grace = 500 * MS * TU_SLOW;
    ctx_pq_set_grace(tp_grace);
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    struct tp_job j;
    tp_job_start(&j, ctx, c, "SELECT pg_sleep(30)");
    tp_assert_running(admin, pid);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    ctx_time_t t0 = ctx_now();
    ctx_cancel(ctx);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    ctx_duration_t took = j.returned - t0;
    assert_int_equal(kill(pid, SIGCONT), 0);
    assert_null(j.res);
    assert_int_equal(j.err, ECANCELED);
    tu_assert_between(took, tp_grace - 5 * MS, TP_GRACE_RETURN);
    /* Fails cleanly: CONNECTION_BAD, no socket, queries refused at once. */
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_int_equal(PQsocket(c), -1);
    assert_int_equal(PQisnonblocking(c), 0);
    errno = 0;
    assert_null(ctx_pq_exec(ctx_background(), c, "SELECT 1"));
    assert_int_equal(errno, EIO);
    assert_int_equal(ctx_pq_rollback(c), ENOTCONN);
    /* Resumed, the backend acts on the cancel and leaves. */
    tp_assert_gone(admin, pid);
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_true(tp_wait_value(admin, sql, 0, TP_FAR));
    /* PQreset is the way on. */
    PQreset(c);
    tp_assert_usable(c);
    ctx_release(ctx);
    PQfinish(c);
}

/* The server ends the backend mid-query (the context still live): libpq's
 * error result, promptly. */
static void test_terminated_backend(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    struct tp_job j;
    tp_job_start(&j, ctx, c, "SELECT pg_sleep(30)");
    tp_assert_running(admin, pid);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::int", pid);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(tp_scalar(admin, sql), 1);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_non_null(j.res);
    assert_int_equal(PQresultStatus(j.res), PGRES_FATAL_ERROR);
    tu_assert_between(j.returned - t0, 0, TP_RETURN * 4);
    PQclear(j.res);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_int_equal(ctx_err(ctx), 0);
    ctx_release(ctx);
    PQfinish(c);
}

/* 50 queries under one parent, cancelled at once: all gone on the server,
 * all connections usable. */
#define N50 50
static void test_fifty(void **state)
{
    (void)state;
    PGconn *c[N50];
    ctx_t *kid[N50];
    struct tp_job j[N50];
    /* 50 cancel requests cost the postmaster 50 forks: on a loaded machine
     * that takes longer than the default grace. */
    const ctx_duration_t grace = 20 * CTX_SECOND * TU_SLOW;
    ctx_duration_t old = ctx_pq_set_grace(grace);
    assert_int_equal(old, tp_grace);
    ctx_t *parent = ctx_with_cancel(ctx_background());
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_sleep(30) /* fifty %d */", getpid());
    char count[256];
    snprintf(count, sizeof count,
             "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
             "AND query = 'SELECT pg_sleep(30) /* fifty %d */'",
             getpid());
    for (int i = 0; i < N50; i++) {
        c[i] = connect_ok();
        kid[i] = ctx_with_cancel(parent);
    }
    for (int i = 0; i < N50; i++)
        tp_job_start(&j[i], kid[i], c[i], sql);
    if (!tp_wait_value(admin, count, N50, TP_FAR))
        fail_msg("the 50 queries never all ran");
    ctx_time_t t0 = ctx_now();
    ctx_cancel(parent);
    ctx_time_t last = t0;
    for (int i = 0; i < N50; i++) {
        tu_join_within(j[i].t, TP_FAR);
        assert_null(j[i].res);
        assert_int_equal(j[i].err, ECANCELED);
        if (j[i].returned > last)
            last = j[i].returned;
    }
    int bad = 0;
    for (int i = 0; i < N50; i++)
        bad += PQstatus(c[i]) != CONNECTION_OK;
    print_message("50 cancelled: last returned after %.1f ms, %d broken\n",
                  (double)(last - t0) / MS, bad);
    assert_int_equal(ctx_pq_set_grace(old), grace);
    assert_int_equal(bad, 0);
    tu_assert_between(last - t0, 0, grace);
    if (!tp_wait_value(admin, count, 0, TP_FAR))
        fail_msg("cancelled queries still active on the server");
    for (int i = 0; i < N50; i++) {
        tp_assert_usable(c[i]);
        PQfinish(c[i]);
        ctx_release(kid[i]);
    }
    ctx_release(parent);
}

/* No fd left: a clean error, nothing leaked, everything works after. */
static void test_out_of_fds(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int fds = tu_open_fds();
    ctx_t *ctx = ctx_with_cancel(ctx_background()); /* no done fd yet */
    struct rlimit low = {(rlim_t)fds + 64, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int filler[128], nfill = 0; /* take every fd left */
    while (nfill < 128 && (filler[nfill] = dup(0)) >= 0)
        nfill++;
    assert_true(nfill < 128);
    errno = 0;
    PGresult *r = ctx_pq_exec(ctx, c, "SELECT 1");
    int e1 = errno;
    errno = 0;
    PGconn *c2 = ctx_pq_connect(ctx, tp_conninfo);
    int e2 = errno;
    PGconn *c3 = ctx_pq_connect(ctx_background(), tp_conninfo);
    for (int i = 0; i < nfill; i++)
        close(filler[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_null(r);
    assert_int_equal(e1, EMFILE);
    assert_null(c2);
    assert_int_equal(e2, EMFILE);
    /* libpq itself cannot make its socket: its own error. */
    assert_non_null(c3);
    assert_int_equal(PQstatus(c3), CONNECTION_BAD);
    print_message("libpq says: %s", PQerrorMessage(c3));
    PQfinish(c3);
    assert_int_equal(tu_open_fds(), fds);
    tp_assert_usable(c);
    r = ctx_pq_exec(ctx, c, "SELECT 1");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    ctx_release(ctx);
    PQfinish(c);
}

/* Memory: many cancelled queries on one connection leave the heap as it was
 * (beyond libpq's buffers, which grow once). ASan checks for leaks too. */
static void test_memory(void **state)
{
    (void)state;
    PGconn *c = connect_ok();
    int pid = PQbackendPID(c);
    struct mallinfo2 before = {0};
    for (int i = 0; i < 12; i++) {
        if (i == 2)
            before = mallinfo2();
        ctx_t *ctx = ctx_with_timeout(ctx_background(), 20 * MS);
        errno = 0;
        PGresult *r = ctx_pq_exec(ctx, c, "SELECT pg_sleep(30)");
        if (r != NULL)
            fail_msg("round %d: a result: %s %s", i,
                     PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
        assert_int_equal(errno, ETIMEDOUT);
        ctx_release(ctx);
        tp_assert_gone(admin, pid);
    }
    tp_assert_usable(c);
    struct mallinfo2 after = mallinfo2();
    long grew = (long)after.uordblks - (long)before.uordblks;
    print_message("heap change over 10 cancelled queries: %ld bytes\n", grew);
    assert_true(grew < 64 * 1024);
    PQfinish(c);
}

int main(void)
{
    /* The PQcancel()-on-the-executor path (libpq 17+ at run time without the
     * key, or forced): the same checks for one query at a time. */
    const struct CMUnitTest executor_tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_running, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_running, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_streaming, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_backend, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_memory, tp_setup, tp_teardown),
    };
    if (getenv("CTX_PQ_FORCE_PQCANCEL") != NULL)
        return cmocka_run_group_tests(executor_tests, group_setup, group_teardown);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_args, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_exec, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_running, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_streaming, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_connect_silent, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_backend, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_terminated_backend, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_fifty, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_out_of_fds, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_memory, tp_setup, tp_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
