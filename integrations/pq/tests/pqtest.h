/* Shared by the libctx-pq tests: the private server's conninfo, a plain
 * libpq "admin" connection that looks at the far side (pg_stat_activity),
 * and a thread that runs one query. */
#ifndef CTX_PQTEST_H
#define CTX_PQTEST_H

#include "testutil.h"

#include <ctx/pq.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS CTX_MILLISECOND
/* Far-side events (a backend leaving pg_stat_activity ...) on a busy box. */
#define TP_FAR (10 * CTX_SECOND * TU_SLOW)
/* A call that saw its context end returns within this (normal case): the
 * cancel request is served by a child the postmaster forks, and the call
 * waits until that child has closed the request (see pq.c); on this loaded
 * 2-core box that alone took up to ~700 ms. */
#define TP_RETURN (2 * CTX_SECOND * TU_SLOW)
/* The grace the tests run with (tp_load_conninfo sets it): the default,
 * scaled under sanitizers; longer where PQcancel() on the executor is
 * forced, whose requests are served one lane at a time. */
static ctx_duration_t tp_grace;
/* ... and within this when the server never acknowledges the cancel. */
#define TP_GRACE_RETURN (tp_grace + TP_RETURN)

static char tp_conninfo[1024];

static void tp_read_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s (is the pq_server fixture running?)", path);
    if (fgets(buf, (int)size, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    if (buf[0] == '\0')
        fail_msg("%s is empty", path);
}

/* The grace of most tests: 3 x the default (a cancel must be served well
 * within it on a loaded machine), 5 times that when PQcancel() on the
 * executor's lanes is forced (each blocks until the postmaster's child
 * exits). */
static void tp_set_default_grace(void)
{
    tp_grace = 3 * (ctx_duration_t)CTX_PQ_GRACE_MS * MS * TU_SLOW;
    if (getenv("CTX_PQ_FORCE_PQCANCEL") != NULL)
        tp_grace *= 5;
    ctx_pq_set_grace(tp_grace);
}

static void tp_load_conninfo(void)
{
    const char *f = getenv("CTX_PQ_CONNINFO_FILE");
    if (f == NULL)
        fail_msg("CTX_PQ_CONNINFO_FILE is not set: run through ctest, whose "
                 "pq_server fixture starts the server");
    tp_read_file(f, tp_conninfo, sizeof tp_conninfo);
    tp_set_default_grace();
}

static PGconn *tp_plain(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    assert_non_null(c);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

/* The first cell of a one-row query, as a number (-1 on error). */
static long tp_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    else
        print_message("tp_scalar(%s): %s", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

/* Waits until `sql` (one number) gives `want`, or `bound` passes. */
static bool tp_wait_value(PGconn *admin, const char *sql, long want,
                          ctx_duration_t bound)
{
    ctx_time_t end = ctx_now() + bound;
    for (;;) {
        if (tp_scalar(admin, sql) == want)
            return true;
        if (ctx_now() > end)
            return false;
        tu_sleep(2 * MS);
    }
}

/* Queries of backend `pid` that are running (state active) and match. */
static bool tp_wait_active(PGconn *admin, int pid, long want,
                           ctx_duration_t bound)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND "
             "state = 'active' AND query LIKE '%%pg_sleep%%'",
             pid);
    return tp_wait_value(admin, sql, want, bound);
}

/* The far side: the query of backend `pid` is gone from pg_stat_activity. */
#define tp_assert_gone(admin, pid)                                            \
    do {                                                                       \
        if (!tp_wait_active(admin, pid, 0, TP_FAR))                            \
            fail_msg("backend %d still runs its query", (int)(pid));          \
    } while (0)

#define tp_assert_running(admin, pid)                                         \
    do {                                                                       \
        if (!tp_wait_active(admin, pid, 1, TP_FAR))                            \
            fail_msg("backend %d never started its query", (int)(pid));       \
    } while (0)

/* The connection answers a query (through libctx) with the right value. */
static void tp_assert_usable(PGconn *c)
{
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = ctx_pq_exec(ctx_background(), c, "SELECT 41 + 1");
    assert_non_null(r);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
}

/* One query in its own thread. */
struct tp_job {
    ctx_t *ctx;
    PGconn *conn;
    const char *sql;
    PGresult *res;
    int err;
    ctx_time_t returned;
    pthread_t t;
};

static void *tp_job_main(void *arg)
{
    struct tp_job *j = arg;
    errno = 0;
    j->res = ctx_pq_exec(j->ctx, j->conn, j->sql);
    j->err = errno;
    j->returned = ctx_now();
    return NULL;
}

static void tp_job_start(struct tp_job *j, ctx_t *ctx, PGconn *conn,
                         const char *sql)
{
    j->ctx = ctx;
    j->conn = conn;
    j->sql = sql;
    j->res = NULL;
    j->err = 0;
    j->returned = 0;
    j->t = tu_spawn(tp_job_main, j);
}

/* Process-wide resources made once (the timer thread, the roots' fd) and
 * libpq's own one-time state, before counting. */
static void tp_warm_up(void)
{
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR));
    (void)ctx_done_fd(ctx_background());
}

/* Executor threads leave 0.5 s after their last task: wait for that. */
static int tp_setup(void **state)
{
    (void)state;
    tp_set_default_grace(); /* a test may have shortened it */
    /* Executor workers of an earlier test may still be leaving: wait until
     * none is left (they leave after 500 ms without work), then until the
     * thread count holds still for a moment (a worker that has counted
     * itself out may not have exited yet). */
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
#ifdef CTX_DEBUG
    while (ctx__executor_workers() != 0 && ctx_now() < end)
        tu_sleep(5 * MS);
    const ctx_duration_t window = 50 * MS * TU_SLOW;
#else
    const ctx_duration_t window = 700 * MS; /* longer than the idle time */
#endif
    ctx_time_t still = ctx_now();
    int n = tu_threads();
    while (ctx_now() < end && ctx_now() - still < window) {
        tu_sleep(10 * MS);
        int m = tu_threads();
        if (m != n) {
            n = m;
            still = ctx_now();
        }
    }
    tu_fds_before = tu_open_fds();
    tu_threads_before = tu_threads();
    return 0;
}

static int tp_teardown(void **state)
{
    (void)state;
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
    while ((tu_threads() != tu_threads_before ||
            tu_open_fds() != tu_fds_before) &&
           ctx_now() < end)
        tu_sleep(5 * MS);
    assert_int_equal(tu_open_fds(), tu_fds_before);
    assert_int_equal(tu_threads(), tu_threads_before);
    tu_settle();
    tu_assert_no_live();
    return 0;
}

#endif
