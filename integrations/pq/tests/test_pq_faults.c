/* Faults that would disturb other tests, on a throwaway server of their own
 * (pg_server.sh, started and always stopped here; the pq_server fixture's
 * cleanup stops it too if this process dies): a postmaster stopped with
 * SIGSTOP (connecting, and a cancel request that is never served), and the
 * server killed mid-query. */
#include "pqtest.h"

#include <ctx/executor.h>

#include <sys/wait.h>
#include <unistd.h>

static char dir[1024], ci[1024], script[1024];
static pid_t postmaster;
static PGconn *admin;

static int run_script(const char *cmd)
{
    char line[2600];
    snprintf(line, sizeof line, "bash '%s' %s '%s' >&2", script, cmd, dir);
    int st = system(line);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group_setup(void **state)
{
    (void)state;
    const char *s = getenv("CTX_PQ_SERVER_SCRIPT");
    const char *scratch = getenv("CTX_PQ_SCRATCH");
    if (s == NULL || scratch == NULL)
        fail_msg("CTX_PQ_SERVER_SCRIPT / CTX_PQ_SCRATCH not set: run via ctest");
    snprintf(script, sizeof script, "%s", s);
    snprintf(dir, sizeof dir, "%s/faults", scratch);
    if (run_script("start") != 0)
        fail_msg("could not start the throwaway server");
    char path[1100], buf[64];
    snprintf(path, sizeof path, "%s/conninfo", dir);
    tp_read_file(path, ci, sizeof ci);
    snprintf(path, sizeof path, "%s/pid", dir);
    tp_read_file(path, buf, sizeof buf);
    postmaster = (pid_t)strtol(buf, NULL, 10);
    assert_true(postmaster > 1);
    tp_warm_up();
    tp_set_default_grace();
    admin = tp_plain(ci);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (postmaster > 1)
        kill(postmaster, SIGCONT);
    PQfinish(admin);
    return run_script("stop");
}

static void on_task(ctx_task_t *t);
struct probe {
    ctx_task_t task;
    tu_event_t ran;
};
static void on_task(ctx_task_t *t)
{
    tu_event_set(&((struct probe *)t)->ran);
}

/* Postmaster stopped: new connections are queued by the kernel and never
 * answered; cancel requests are never served. */
static void test_stopped_postmaster(void **state)
{
    (void)state;
    PGconn *c = ctx_pq_connect(ctx_background(), ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    int pid = PQbackendPID(c);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    struct tp_job j;
    tp_job_start(&j, ctx, c, "SELECT pg_sleep(30)");
    tp_assert_running(admin, pid);
    assert_int_equal(kill(postmaster, SIGSTOP), 0);

    /* Connecting: bounded by the deadline. */
    const ctx_duration_t d = 300 * MS;
    ctx_time_t t0 = ctx_now();
    ctx_t *cc = ctx_with_timeout(ctx_background(), d);
    errno = 0;
    assert_null(ctx_pq_connect(cc, ci));
    assert_int_equal(errno, ETIMEDOUT);
    tu_assert_between(ctx_now() - t0, d, d + TP_RETURN);
    ctx_release(cc);

    /* The running query: its cancel request hangs in PQcancel() on a lane,
     * the call returns after the grace with the connection broken. */
    t0 = ctx_now();
    ctx_cancel(ctx);
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_null(j.res);
    assert_int_equal(j.err, ECANCELED);
    tu_assert_between(j.returned - t0, 0, TP_GRACE_RETURN);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);

    /* A hung cancel holds a lane, not the whole shared executor. */
    struct probe pr = {.task.fn = on_task};
    tu_event_init(&pr.ran);
    assert_int_equal(ctx_executor_submit(&pr.task), 0);
    assert_true(tu_event_wait(&pr.ran, TP_FAR));
    tu_event_destroy(&pr.ran);

    assert_int_equal(kill(postmaster, SIGCONT), 0);
    /* The queued cancel request is served now; the backend, whose client
     * is gone, ends its query. */
    tp_assert_gone(admin, pid);
    PQreset(c);
    tp_assert_usable(c);
    ctx_release(ctx);
    PQfinish(c);
}

/* The server dies mid-query (immediate shutdown): libpq's error, promptly;
 * the context is not involved. Last test: it ends the server. */
static void test_server_killed(void **state)
{
    (void)state;
    PGconn *c = ctx_pq_connect(ctx_background(), ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    int pid = PQbackendPID(c);
    ctx_t *ctx = ctx_with_timeout(ctx_background(), 60 * CTX_SECOND);
    struct tp_job j;
    tp_job_start(&j, ctx, c, "SELECT pg_sleep(30)");
    tp_assert_running(admin, pid);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(kill(postmaster, SIGQUIT), 0); /* immediate shutdown */
    tu_join_within(j.t, TP_GRACE_RETURN + TP_FAR);
    assert_non_null(j.res);
    assert_int_equal(PQresultStatus(j.res), PGRES_FATAL_ERROR);
    print_message("server killed: %s", PQresultErrorMessage(j.res));
    tu_assert_between(j.returned - t0, 0, TP_FAR);
    PQclear(j.res);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_int_equal(ctx_err(ctx), 0);
    /* The next query fails at once; connecting fails cleanly. */
    errno = 0;
    assert_null(ctx_pq_exec(ctx, c, "SELECT 1"));
    assert_int_equal(errno, EIO);
    ctx_release(ctx);
    PQfinish(c);
    ctx = ctx_with_timeout(ctx_background(), 5 * CTX_SECOND);
    PGconn *c2 = ctx_pq_connect(ctx, ci);
    assert_non_null(c2);
    assert_int_equal(PQstatus(c2), CONNECTION_BAD);
    PQfinish(c2);
    ctx_release(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stopped_postmaster, tp_setup, tp_teardown),
        cmocka_unit_test_setup_teardown(test_server_killed, tp_setup, tp_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
