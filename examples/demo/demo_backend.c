/* The demo's backend service: answers GET /quick with a quick SQLite query
 * and GET /slow with one that would run for about a minute. Each query runs
 * under the request's context (libctx-mhd derives it from the server's
 * root: the caller's propagated budget, its trace id, cancelled when the
 * caller hangs up), through ctx_sqlite_step(), so SQLite stops as soon as
 * the context ends and the handler says how long the query ran.
 *
 *     demo_backend --port-file FILE
 *
 * SIGINT or SIGTERM: graceful shutdown (stop accepting, 1 s of grace for
 * running queries, then cancel them). */
#include "demo_http.h"
#include "demo_server.h"

#include <ctx/mhd.h>
#include <ctx/sigctx.h>
#include <ctx/sqlite.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>

/* About a minute of pure computation in SQLite (no table, no I/O). */
static const char slow_sql[] =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
    "WHERE x < 3000000000) SELECT count(*) FROM c";
static const char quick_sql[] = "SELECT 6 * 7";

static void handle(ctx_t *ctx, const ctx_mhd_request_t *req,
                   ctx_mhd_reply_t *reply, void *arg)
{
    (void)arg;
    char trace[33], line[300];
    bool slow = strcmp(req->url, "/slow") == 0;
    if (!slow && strcmp(req->url, "/quick") != 0) {
        ctx_mhd_reply_buffer(reply, 404, "text/plain", "not found\n", 10);
        return;
    }
    ctx_time_t dl, t0 = ctx_now();
    if (ctx_deadline(ctx, &dl))
        ex_log("backend", "trace %s  GET %s: query starts, budget left %.0f ms",
               demo_trace(ctx, trace), req->url, (double)(dl - t0) / 1e6);
    else
        ex_log("backend", "trace %s  GET %s: query starts, no deadline",
               demo_trace(ctx, trace), req->url);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open(":memory:", &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, slow ? slow_sql : quick_sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = ctx_sqlite_step(ctx, st);
    double ms = (double)(ctx_now() - t0) / 1e6;
    if (rc == SQLITE_ROW) {
        ex_log("backend", "trace %s  GET %s: query answered in %.1f ms",
               trace, req->url, ms);
        int n = snprintf(line, sizeof line, "answer %lld from the backend\n",
                         (long long)sqlite3_column_int64(st, 0));
        ctx_mhd_reply_buffer(reply, 200, "text/plain", line, (size_t)n);
    } else if (rc == SQLITE_INTERRUPT) {
        ex_log("backend", "trace %s  GET %s: query INTERRUPTED after %.1f ms "
               "(%s), not left running", trace, req->url, ms, demo_why(ctx));
        int n = snprintf(line, sizeof line, "query interrupted: %s\n",
                         demo_why(ctx));
        ctx_mhd_reply_buffer(reply, 504, "text/plain", line, (size_t)n);
    } else {
        ex_log("backend", "trace %s  GET %s: SQLite error %s", trace, req->url,
               sqlite3_errstr(rc));
        ctx_mhd_reply_buffer(reply, 500, "text/plain", "error\n", 6);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(int argc, char **argv)
{
    ex_init();
    const char *port_file = argc == 3 && strcmp(argv[1], "--port-file") == 0
                                ? argv[2]
                                : NULL;
    if (port_file == NULL) {
        fprintf(stderr, "usage: demo_backend --port-file FILE\n");
        return 2;
    }
    return demo_serve("backend", port_file, handle, "running queries");
}
