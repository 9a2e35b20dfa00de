/* The demo's client: one GET to the gateway under a context with a budget
 * (a timeout), starting a new trace. With --hangup-ms it gives up earlier
 * by cancelling its own context, as a user closing the page would.
 *
 *     demo_client --timeout-ms N [--hangup-ms M] PORT PATH
 *
 * Exit status: 0 answered, 2 the budget ran out, 3 gave up (hang-up),
 * 1 any other failure. */
#include "demo_http.h"

#include <pthread.h>
#include <stdlib.h>

struct hangup {
    ctx_t *ctx;
    long ms;
};

static void *hang_up_later(void *arg)
{
    struct hangup *h = arg;
    /* Sleeps until the call ends or the hang-up time comes. */
    if (ctx_wait_until(h->ctx, ctx_now() + h->ms * CTX_MILLISECOND) == 0)
        ctx_cancel(h->ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_init();
    long timeout_ms = 100, hangup_ms = -1;
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--hangup-ms") == 0)
            hangup_ms = atol(argv[i + 1]);
    }
    if (i + 2 != argc) {
        fprintf(stderr, "usage: demo_client --timeout-ms N [--hangup-ms M] PORT PATH\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char url[128], trace[33];
    snprintf(url, sizeof url, "http://127.0.0.1:%s%s", argv[i], argv[i + 1]);
    ctx_t *budget = ctx_with_timeout(ctx_background(), timeout_ms * CTX_MILLISECOND);
    ctx_t *ctx = ctx_trace_start(budget, CTX_TRACE_SAMPLED);
    ctx_release(budget);
    if (ctx == NULL) {
        perror("demo_client");
        return 1;
    }
    ctx_t *call = ctx_with_cancel(ctx); /* what a hang-up cancels */
    ex_log("client", "trace %s  GET %s with a %ld ms budget%s",
           demo_trace(ctx, trace), argv[i + 1], timeout_ms,
           hangup_ms >= 0 ? ", giving up early" : "");
    pthread_t t;
    struct hangup h = {call, hangup_ms};
    if (hangup_ms >= 0)
        pthread_create(&t, NULL, hang_up_later, &h);
    struct demo_body body;
    long status = 0;
    ctx_time_t t0 = ctx_now();
    CURLcode rc = demo_get(call, url, &body, &status);
    double ms = (double)(ctx_now() - t0) / 1e6;
    int code;
    if (rc == CURLE_OK) {
        size_t n = strlen(body.buf);
        if (n > 0 && body.buf[n - 1] == '\n')
            body.buf[n - 1] = '\0';
        ex_log("client", "trace %s  %ld \"%s\" after %.1f ms", trace, status,
               body.buf, ms);
        code = status == 200 ? 0 : 1;
    } else if (ctx_err(call) == CTX_DEADLINE_EXCEEDED) {
        ex_log("client", "trace %s  gave up: the %ld ms budget ran out "
               "(%.1f ms)", trace, timeout_ms, ms);
        code = 2;
    } else if (ctx_err(call) == CTX_CANCELED) {
        ex_log("client", "trace %s  hung up after %.1f ms", trace, ms);
        code = 3;
    } else {
        ex_log("client", "trace %s  failed: %s", trace, curl_easy_strerror(rc));
        code = 1;
    }
    ctx_cancel(call);
    if (hangup_ms >= 0)
        pthread_join(t, NULL);
    ctx_release(call);
    ctx_release(ctx);
    curl_global_cleanup();
    return code;
}
