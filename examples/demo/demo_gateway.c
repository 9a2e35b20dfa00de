/* The demo's gateway: answers GET /quick and GET /slow by calling the
 * backend with libcurl under the request's context (ctx_curl_perform). The
 * caller's budget and trace id reach the backend in the grpc-timeout and
 * traceparent headers (<ctx/propagate.h>), so every hop stops at the same
 * deadline; if the caller hangs up, the request's context is cancelled
 * (cause ECONNRESET) and the backend call stops at once, which the backend
 * sees as its own caller hanging up.
 *
 *     demo_gateway --backend-port N --port-file FILE
 *
 * SIGINT or SIGTERM: graceful shutdown (stop accepting, 1 s of grace for
 * requests in flight, then cancel them). */
#include "demo_http.h"
#include "demo_server.h"

#include <ctx/mhd.h>
#include <ctx/sigctx.h>

#include <signal.h>
#include <stdlib.h>

static unsigned backend_port;

static void handle(ctx_t *ctx, const ctx_mhd_request_t *req,
                   ctx_mhd_reply_t *reply, void *arg)
{
    (void)arg;
    char trace[33], url[128], line[700];
    if (strcmp(req->url, "/quick") != 0 && strcmp(req->url, "/slow") != 0) {
        ctx_mhd_reply_buffer(reply, 404, "text/plain", "not found\n", 10);
        return;
    }
    ctx_time_t dl, t0 = ctx_now();
    bool has_dl = ctx_deadline(ctx, &dl);
    ex_log("gateway", "trace %s  GET %s: calling the backend, budget left %.0f ms",
           demo_trace(ctx, trace), req->url,
           has_dl ? (double)(dl - t0) / 1e6 : -1.0);
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", backend_port, req->url);
    struct demo_body body;
    long status = 0;
    CURLcode rc = demo_get(ctx, url, &body, &status);
    double ms = (double)(ctx_now() - t0) / 1e6;
    if (rc == CURLE_OK) {
        ex_log("gateway", "trace %s  GET %s: backend answered %ld in %.1f ms",
               trace, req->url, status, ms);
        int n = snprintf(line, sizeof line, "%s", body.buf);
        ctx_mhd_reply_buffer(reply, (unsigned)status, "text/plain", line,
                             (size_t)n);
    } else if (ctx_is_done(ctx)) {
        ex_log("gateway", "trace %s  GET %s: backend call STOPPED after %.1f ms "
               "(%s)", trace, req->url, ms, demo_why(ctx));
        int n = snprintf(line, sizeof line, "gateway: %s\n", demo_why(ctx));
        ctx_mhd_reply_buffer(reply, 504, "text/plain", line, (size_t)n);
    } else {
        ex_log("gateway", "trace %s  GET %s: backend call failed: %s", trace,
               req->url, curl_easy_strerror(rc));
        ctx_mhd_reply_buffer(reply, 502, "text/plain", "bad gateway\n", 12);
    }
}

int main(int argc, char **argv)
{
    ex_init();
    const char *port_file = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--backend-port") == 0)
            backend_port = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--port-file") == 0)
            port_file = argv[i + 1];
    }
    if (port_file == NULL || backend_port == 0) {
        fprintf(stderr, "usage: demo_gateway --backend-port N --port-file FILE\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int st = demo_serve("gateway", port_file, handle, "requests in flight");
    curl_global_cleanup();
    return st;
}
