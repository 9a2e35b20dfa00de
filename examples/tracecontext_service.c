/*
 * tracecontext_service: the service the W3C Trace Context test suite drives
 * (https://github.com/w3c/trace-context/tree/main/test), built on
 * libctx-mhd (the server) and libcurl (the client, through libctx-curl when
 * it is built).
 *
 *     tracecontext_service --port N [--bind 127.0.0.1]
 *
 * It accepts `POST /test` whose JSON body is an array of
 *     {"url": U, "arguments": A}
 * and, for each element in order, POSTs A as JSON to U carrying the trace
 * context it extracted from the incoming request (same trace id and
 * tracestate, its own new parent id; an invalid traceparent restarts the
 * trace and drops tracestate), then answers 200. Each outgoing call is
 * bounded by the request's context: the caller's grpc-timeout, the server's
 * 10 s maximum, the client hanging up.
 *
 * It prints "listening on port N" once it serves, and shuts down
 * gracefully (5 s grace) on SIGINT or SIGTERM.
 */
#include <ctx.h>
#include <ctx/mhd.h>
#include <ctx/propagate.h>

#include <curl/curl.h>
#include <jansson.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TRACECONTEXT_CTX_CURL
#include <ctx/curl.h>
#endif

/* Outgoing headers as a propagation carrier. */
struct out_headers {
    struct curl_slist *list;
};

static int header_set(void *self, const char *key, const char *value)
{
    struct out_headers *h = self;
    char line[8400];
    int n = snprintf(line, sizeof line, "%s: %s", key, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return EINVAL;
    struct curl_slist *l = curl_slist_append(h->list, line);
    if (l == NULL)
        return ENOMEM;
    h->list = l;
    return 0;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* POSTs `json` to `url` with ctx's trace context; a curl result. */
static CURLcode post(ctx_t *ctx, const char *url, const char *json)
{
    CURL *easy = curl_easy_init();
    if (easy == NULL)
        return CURLE_OUT_OF_MEMORY;
    struct out_headers h = {NULL};
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (header_set(&h, "Content-Type", "application/json") != 0 ||
        ctx_propagate_inject(ctx, &(ctx_carrier_t){.self = &h, .set = header_set},
                             CTX_PROPAGATE_ALL) != 0)
        goto out;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h.list);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#ifdef TRACECONTEXT_CTX_CURL
    rc = ctx_curl_perform(ctx, easy);
#else
    /* Without libctx-curl: bounded by the deadline only. */
    ctx_time_t dl;
    if (ctx_deadline(ctx, &dl)) {
        ctx_duration_t left = dl - ctx_now();
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                         left > CTX_MILLISECOND ? (long)(left / CTX_MILLISECOND) : 1L);
    }
    rc = ctx_is_done(ctx) ? CURLE_ABORTED_BY_CALLBACK : curl_easy_perform(easy);
#endif
out:
    curl_slist_free_all(h.list);
    curl_easy_cleanup(easy);
    return rc;
}

static void reply_text(ctx_mhd_reply_t *reply, unsigned status, const char *s)
{
    ctx_mhd_reply_buffer(reply, status, "text/plain", s, strlen(s));
}

static void handle(ctx_t *ctx, const ctx_mhd_request_t *req,
                   ctx_mhd_reply_t *reply, void *arg)
{
    (void)arg;
    if (strcmp(req->url, "/test") != 0) {
        reply_text(reply, 404, "not found\n");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        reply_text(reply, 405, "POST only\n");
        return;
    }
    json_error_t jerr;
    json_t *cases = json_loadb(req->body, req->body_size, 0, &jerr);
    if (!json_is_array(cases)) {
        json_decref(cases);
        reply_text(reply, 400, "expected a JSON array\n");
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *url = json_string_value(json_object_get(c, "url"));
        json_t *args = json_object_get(c, "arguments");
        if (url == NULL || args == NULL)
            continue; /* not a test case: skip it, as the reference does */
        char *body = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
        if (body == NULL)
            continue;
        CURLcode rc = post(ctx, url, body);
        free(body);
        if (rc != CURLE_OK)
            fprintf(stderr, "tracecontext_service: POST %s: %s%s%s\n", url,
                    curl_easy_strerror(rc), ctx_is_done(ctx) ? ", " : "",
                    ctx_is_done(ctx) ? ctx_strerror(ctx_cause(ctx)) : "");
        if (ctx_is_done(ctx))
            break;
    }
    json_decref(cases);
    reply_text(reply, 200, "ok\n");
}

int main(int argc, char **argv)
{
    ctx_mhd_options_t o = {
        .bind_address = "127.0.0.1",
        .mode = CTX_MHD_MODE_THREAD_PER_CONNECTION, /* handlers block in curl */
        .max_deadline = 10 * CTX_SECOND,
    };
    long port = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc)
            o.bind_address = argv[++i];
        else {
            fprintf(stderr, "usage: %s --port N [--bind ADDR]\n", argv[0]);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s --port N [--bind ADDR]\n", argv[0]);
        return 2;
    }
    o.port = (uint16_t)port;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return 1;
    /* Signals go to sigwait() below, not to the server's threads. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    ctx_mhd_server_t *srv = ctx_mhd_start(ctx_background(), &o, handle, NULL);
    if (srv == NULL) {
        fprintf(stderr, "tracecontext_service: cannot listen: %s\n",
                strerror(errno));
        return 1;
    }
    printf("listening on port %u\n", (unsigned)ctx_mhd_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    int e = ctx_mhd_shutdown(srv, 5 * CTX_SECOND);
    ctx_mhd_free(srv);
    curl_global_cleanup();
    printf("stopped (%s)\n", e == 0 ? "graceful" : "handlers cancelled");
    return 0;
}
