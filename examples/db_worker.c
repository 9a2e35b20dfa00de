/*
 * db_worker: a worker that serves requests with PostgreSQL queries, each
 * under a request context with a deadline (Go: ctx, cancel :=
 * context.WithTimeout(r.Context(), d); db.QueryContext(ctx, ...)).
 * A slow query is cut at its deadline, and the worker asks the server
 * (pg_stat_activity) to confirm that the query stopped there too.
 *
 *   db_worker 'host=/tmp/sock port=5432 dbname=postgres'
 */
#include <ctx.h>
#include <ctx/pq.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct request {
    const char *name;
    const char *sql;
    ctx_duration_t deadline;
};

static double ms(ctx_duration_t d)
{
    return (double)d / CTX_MILLISECOND;
}

/* Asks the server whether backend `pid` still runs a query; waits up to
 * 5 s for it to stop. Returns true once it is no longer active. */
static bool server_confirms_stopped(ctx_pq_pool_t *pool, int pid)
{
    ctx_t *ctx = ctx_with_timeout(ctx_background(), 5 * CTX_SECOND);
    PGconn *c = ctx_pq_pool_acquire(pool, ctx);
    bool stopped = false;
    if (c == NULL) {
        ctx_release(ctx);
        return false;
    }
    char pidbuf[16];
    snprintf(pidbuf, sizeof pidbuf, "%d", pid);
    const char *params[1] = {pidbuf};
    while (!stopped && !ctx_is_done(ctx)) {
        PGresult *r = ctx_pq_exec_params(
            ctx, c,
            "SELECT coalesce((SELECT state FROM pg_stat_activity WHERE pid = $1), 'gone'),"
            " pg_sleep(0.01)",
            1, NULL, params, NULL, NULL, 0);
        if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK) {
            const char *state = PQgetvalue(r, 0, 0);
            if (strcmp(state, "active") != 0) {
                printf("  server: backend %d is '%s' in pg_stat_activity: "
                       "the query stopped on the server too\n",
                       pid, state);
                stopped = true;
            }
        }
        PQclear(r);
    }
    ctx_pq_pool_release(pool, c);
    ctx_release(ctx);
    return stopped;
}

/* Serves one request under its own deadline. Returns 0 when the request
 * behaved as expected (answered, or cut and confirmed stopped). */
static int serve(ctx_pq_pool_t *pool, const struct request *rq)
{
    ctx_time_t t0 = ctx_now();
    ctx_t *ctx = ctx_with_timeout(ctx_background(), rq->deadline);
    if (ctx == NULL)
        return 1;
    PGconn *c = ctx_pq_pool_acquire(pool, ctx);
    if (c == NULL) {
        printf("%s: no connection: %s\n", rq->name, ctx_strerror(errno));
        ctx_release(ctx);
        return 1;
    }
    int pid = PQbackendPID(c);
    PGresult *r = ctx_pq_exec(ctx, c, rq->sql);
    int err = errno;
    ctx_duration_t took = ctx_now() - t0;
    int rc = 0;
    if (r == NULL && ctx_err(ctx) != 0) {
        /* The context ended first: the query was cancelled on the server. */
        printf("%s: %s -> cut at its deadline of %.0f ms after %.1f ms (%s)\n",
               rq->name, rq->sql, ms(rq->deadline), ms(took), ctx_strerror(err));
        rc = server_confirms_stopped(pool, pid) ? 0 : 1;
    } else if (r == NULL) {
        printf("%s: failed: %s", rq->name, PQerrorMessage(c));
        rc = 1;
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        printf("%s: SQL error: %s", rq->name, PQresultErrorMessage(r));
        rc = 1;
    } else {
        printf("%s: %s -> %s (%.1f ms)\n", rq->name, rq->sql,
               PQgetvalue(r, 0, 0), ms(took));
    }
    PQclear(r);
    /* The connection goes back to the pool, usable (or, were it broken,
     * closed and replaced). */
    ctx_pq_pool_release(pool, c);
    ctx_release(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    ctx_pq_pool_t *pool = ctx_pq_pool_new(argv[1], 2);
    if (pool == NULL)
        return 1;
    const struct request reqs[] = {
        {"request 1", "SELECT 'hello from ' || current_database()", 2 * CTX_SECOND},
        {"request 2", "SELECT sum(g) FROM generate_series(1, 100000) g", 2 * CTX_SECOND},
        {"request 3", "SELECT pg_sleep(10)", 300 * CTX_MILLISECOND},
        {"request 4", "SELECT 'still serving: ' || now()::date", 2 * CTX_SECOND},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
        failed += serve(pool, &reqs[i]);
    ctx_pq_pool_free(pool);
    printf("%s\n", failed == 0 ? "all requests served as expected"
                               : "some requests went wrong");
    return failed == 0 ? 0 : 1;
}
