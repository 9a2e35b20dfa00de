/* Shared by the cross-process demo's programs: an outgoing HTTP GET bounded
 * by a context, carrying its deadline (grpc-timeout) and trace context
 * (traceparent) in the request headers. */
#ifndef DEMO_HTTP_H
#define DEMO_HTTP_H

#include "../common.h"

#include <ctx.h>
#include <ctx/curl.h>
#include <ctx/propagate.h>

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Outgoing headers as a propagation carrier (ctx_carrier_t.set). */
static inline int demo_header_set(void *self, const char *key, const char *value)
{
    struct curl_slist **list = self;
    char line[8400];
    int n = snprintf(line, sizeof line, "%s: %s", key, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return EINVAL;
    struct curl_slist *l = curl_slist_append(*list, line);
    if (l == NULL)
        return ENOMEM;
    *list = l;
    return 0;
}

struct demo_body {
    char buf[512];
    size_t len;
};

static inline size_t demo_body_write(char *p, size_t size, size_t n, void *arg)
{
    struct demo_body *b = arg;
    size_t take = size * n;
    if (take > sizeof b->buf - 1 - b->len)
        take = sizeof b->buf - 1 - b->len;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return size * n;
}

/* GETs url under ctx (its deadline and trace context go along as headers);
 * the body goes to *body, the status to *status. A curl result: when the
 * context ended first, CURLE_ABORTED_BY_CALLBACK (cancel) or
 * CURLE_OPERATION_TIMEDOUT (deadline), within milliseconds. */
static inline CURLcode demo_get(ctx_t *ctx, const char *url, struct demo_body *body,
                         long *status)
{
    CURL *easy = curl_easy_init();
    if (easy == NULL)
        return CURLE_OUT_OF_MEMORY;
    struct curl_slist *headers = NULL;
    ctx_carrier_t carrier = {.self = &headers, .set = demo_header_set};
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (ctx_propagate_inject(ctx, &carrier,
                             CTX_PROPAGATE_DEADLINE | CTX_PROPAGATE_TRACE) != 0)
        goto out;
    body->len = 0;
    body->buf[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, demo_body_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    rc = ctx_curl_perform(ctx, easy);
    *status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, status);
out:
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return rc;
}

/* The trace id a context carries, as 32 hex digits ("-" when none). */
static inline const char *demo_trace(ctx_t *ctx, char out[33])
{
    uint8_t id[16];
    if (!ctx_trace_id(ctx, id)) {
        strcpy(out, "-");
        return out;
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
    return out;
}

/* Why a context ended, in words. */
static inline const char *demo_why(ctx_t *ctx)
{
    switch (ctx_cause(ctx)) {
    case ECONNRESET:
        return "its caller hung up";
    case CTX_DEADLINE_EXCEEDED:
        return "the budget ran out";
    case ESHUTDOWN:
        return "the server is shutting down";
    default:
        return ctx_strerror(ctx_cause(ctx));
    }
}

#endif
