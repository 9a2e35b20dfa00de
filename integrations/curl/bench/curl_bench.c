/* libctx-curl benchmark (run by bench/integrations/curl.sh).
 *
 *   curl_bench get ROUNDS N    keep-alive GET against an in-process loopback
 *                              server: curl_easy_perform, then
 *                              ctx_curl_perform (a ctx_with_timeout per
 *                              request), alternating request by request,
 *                              ROUNDS rounds of N each; prints
 *                              "get RAW_NS CTX_NS" (medians over the rounds
 *                              of each round's median request time)
 *   curl_bench cancel N        cancel-to-return latency while waiting for the
 *                              first byte, and deadline-to-return latency;
 *                              prints "cancel P50_US P99_US",
 *                              "deadline P50_US P99_US" and, for reference,
 *                              "core P50_US P99_US" (a thread in ctx_wait
 *                              woken by a cancel: the machine's own wake-up
 *                              latency under its current load)
 *   curl_bench dns             a resolver that never answers (the hook below):
 *                              prints "dns CTX_MS CURL_MS", the time to return
 *                              of ctx_curl_perform with a 50 ms deadline and of
 *                              curl_easy_perform with CURLOPT_TIMEOUT_MS 50,
 *                              when the resolve is released after 500 ms
 *   curl_bench dnsreal         the same against glibc's real resolver, with a
 *                              name server that never answers: run in a
 *                              private user, mount and network namespace
 *                              (see curl.sh); prints "dnsreal CTX_MS CURL_MS"
 */
#include "http_server.h"

#include <ctx/curl.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MS CTX_MILLISECOND
#define HANG_HOST "hang.ctx-bench.invalid"

static hs_t *srv;

/* ---- a resolver that hangs on demand (as in the tests) ---- */
static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gcv = PTHREAD_COND_INITIALIZER;
static bool gopen;
static long gleft;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                      struct addrinfo **);

__attribute__((visibility("default"))) int
getaddrinfo(const char *node, const char *service,
            const struct addrinfo *hints, struct addrinfo **res)
{
    if (node != NULL && strcmp(node, HANG_HOST) == 0) {
        pthread_mutex_lock(&gmu);
        while (!gopen)
            pthread_cond_wait(&gcv, &gmu);
        gleft++;
        pthread_cond_broadcast(&gcv);
        pthread_mutex_unlock(&gmu);
        return EAI_NONAME;
    }
    gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static CURL *easy_for(const char *host, int port, const char *path)
{
    char url[160];
    CURL *e = curl_easy_init();
    if (e == NULL)
        exit(1);
    snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    return e;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, int n, int p)
{
    qsort(v, (size_t)n, sizeof *v, cmp64);
    int i = (n * p + 99) / 100 - 1;
    return v[i < 0 ? 0 : i];
}

static int bench_get(int rounds, int n)
{
    CURL *raw = easy_for("127.0.0.1", hs_port(srv), "/fast");
    CURL *wc = easy_for("127.0.0.1", hs_port(srv), "/fast");
    int64_t *r = calloc((size_t)rounds, sizeof *r);
    int64_t *c = calloc((size_t)rounds, sizeof *c);
    /* Warm both connections. */
    if (curl_easy_perform(raw) != CURLE_OK ||
        ctx_curl_perform(ctx_background(), wc) != CURLE_OK)
        return 1;
    /* Requests alternate one by one (which side goes first alternating too),
     * so that the load of a busy machine hits both sides alike; a round's
     * figure is the median request time of each side. */
    int64_t *tr = calloc((size_t)n, sizeof *tr), *tc = calloc((size_t)n, sizeof *tc);
    for (int k = 0; k < rounds; k++) {
        for (int i = 0; i < n; i++) {
            for (int side = 0; side < 2; side++) {
                bool is_raw = (side == 0) == (i % 2 == 0);
                ctx_time_t t0 = ctx_now();
                CURLcode rc;
                if (is_raw) {
                    rc = curl_easy_perform(raw);
                } else {
                    ctx_t *x = ctx_with_timeout(ctx_background(),
                                                10 * CTX_SECOND);
                    rc = ctx_curl_perform(x, wc);
                    ctx_cancel(x);
                    ctx_release(x);
                }
                if (rc != CURLE_OK)
                    return 1;
                if (is_raw)
                    tr[i] = ctx_now() - t0;
                else
                    tc[i] = ctx_now() - t0;
            }
        }
        r[k] = pct(tr, n, 50);
        c[k] = pct(tc, n, 50);
    }
    free(tr);
    free(tc);
    long nc = -1;
    curl_easy_getinfo(wc, CURLINFO_NUM_CONNECTS, &nc);
    if (nc != 0) {
        fprintf(stderr, "curl_bench: the connection was not reused\n");
        return 1;
    }
    printf("get %lld %lld\n", (long long)pct(r, rounds, 50),
           (long long)pct(c, rounds, 50));
    curl_easy_cleanup(raw);
    curl_easy_cleanup(wc);
    free(r);
    free(c);
    return 0;
}

struct canceller {
    ctx_t *ctx;
    long n;
    ctx_time_t at;
};

static void *cancel_main(void *arg)
{
    struct canceller *c = arg;
    if (!hs_wait(srv, HS_SLOW, c->n, 10 * CTX_SECOND))
        exit(1);
    c->at = ctx_now();
    ctx_cancel(c->ctx);
    return NULL;
}

static void *cancel_after_1ms(void *arg)
{
    struct canceller *c = arg;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
    c->at = ctx_now();
    ctx_cancel(c->ctx);
    return NULL;
}

static int bench_cancel(int n)
{
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    CURL *e = easy_for("127.0.0.1", hs_port(srv), "/slow");
    for (int i = 0; i < n; i++) {
        struct canceller c = {.ctx = ctx_with_cancel(ctx_background()),
                              .n = hs_get(srv, HS_SLOW) + 1};
        pthread_t t;
        pthread_create(&t, NULL, cancel_main, &c);
        CURLcode rc = ctx_curl_perform(c.ctx, e);
        ctx_time_t back = ctx_now();
        pthread_join(t, NULL);
        if (rc != CURLE_ABORTED_BY_CALLBACK)
            return 1;
        lat[i] = back - c.at;
        ctx_release(c.ctx);
    }
    printf("cancel %.0f %.0f\n", pct(lat, n, 50) / 1e3, pct(lat, n, 99) / 1e3);
    for (int i = 0; i < n; i++) {
        ctx_time_t d = ctx_now() + 5 * MS;
        ctx_t *x = ctx_with_deadline(ctx_background(), d);
        CURLcode rc = ctx_curl_perform(x, e);
        lat[i] = ctx_now() - d;
        ctx_release(x);
        if (rc != CURLE_OPERATION_TIMEDOUT)
            return 1;
    }
    printf("deadline %.0f %.0f\n", pct(lat, n, 50) / 1e3,
           pct(lat, n, 99) / 1e3);
    /* Reference: the core's own wake (ctx_wait) under the same load. */
    for (int i = 0; i < n; i++) {
        struct canceller c = {.ctx = ctx_with_cancel(ctx_background())};
        pthread_t t;
        pthread_create(&t, NULL, cancel_after_1ms, &c);
        ctx_wait(c.ctx);
        lat[i] = ctx_now() - c.at;
        pthread_join(t, NULL);
        ctx_release(c.ctx);
    }
    printf("core %.0f %.0f\n", pct(lat, n, 50) / 1e3, pct(lat, n, 99) / 1e3);
    curl_easy_cleanup(e);
    free(lat);
    return 0;
}

static void *open_gate_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&gmu);
    gopen = true;
    pthread_cond_broadcast(&gcv);
    pthread_mutex_unlock(&gmu);
    return NULL;
}

/* ctx_curl_perform with a 50 ms deadline, then curl_easy_perform with
 * CURLOPT_TIMEOUT_MS 50, on a host whose resolution hangs. Returns the two
 * times in ms. */
static void time_dns(const char *host, bool hook, double *ctx_ms,
                     double *curl_ms)
{
    CURL *e = easy_for(host, 80, "/");
    pthread_t t;
    if (hook) {
        gopen = false;
        pthread_create(&t, NULL, open_gate_later, NULL);
    }
    ctx_time_t t0 = ctx_now();
    ctx_t *x = ctx_with_timeout(ctx_background(), 50 * MS);
    CURLcode rc = ctx_curl_perform(x, e);
    *ctx_ms = (double)(ctx_now() - t0) / 1e6;
    if (rc != CURLE_OPERATION_TIMEDOUT || ctx_err(x) != CTX_DEADLINE_EXCEEDED)
        fprintf(stderr, "dns: ctx_curl_perform gave %d\n", rc);
    ctx_release(x);
    if (hook) {
        pthread_join(t, NULL);
        pthread_mutex_lock(&gmu);
        while (gleft < 1)
            pthread_cond_wait(&gcv, &gmu);
        gopen = false;
        pthread_mutex_unlock(&gmu);
        pthread_create(&t, NULL, open_gate_later, NULL);
    }
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 50L);
    t0 = ctx_now();
    rc = curl_easy_perform(e);
    *curl_ms = (double)(ctx_now() - t0) / 1e6;
    if (rc != CURLE_OPERATION_TIMEDOUT)
        fprintf(stderr, "dns: curl_easy_perform gave %d\n", rc);
    if (hook)
        pthread_join(t, NULL);
    curl_easy_cleanup(e);
}

/* In a private network namespace (lo only) whose /etc/resolv.conf names
 * 127.0.0.1: a UDP socket on port 53 that reads nothing and answers
 * nothing, so glibc's resolver waits for its own timeout. */
static int bench_dnsreal(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("dnsreal: bind 127.0.0.1:53");
        return 1;
    }
    double c, u;
    time_dns("never-answered.example", false, &c, &u);
    printf("dnsreal %.1f %.1f\n", c, u);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || curl_global_init(CURL_GLOBAL_ALL) != 0)
        return 2;
    int rc = 2;
    if (strcmp(argv[1], "dnsreal") == 0) {
        rc = bench_dnsreal();
    } else if (strcmp(argv[1], "dns") == 0) {
        double c, u;
        time_dns(HANG_HOST, true, &c, &u);
        printf("dns %.1f %.1f\n", c, u);
        rc = 0;
    } else {
        srv = hs_start();
        if (srv == NULL)
            return 1;
        if (strcmp(argv[1], "get") == 0 && argc == 4)
            rc = bench_get(atoi(argv[2]), atoi(argv[3]));
        else if (strcmp(argv[1], "cancel") == 0 && argc == 3)
            rc = bench_cancel(atoi(argv[2]));
        ctx_curl_thread_cleanup();
        hs_stop(srv);
    }
    ctx_curl_thread_cleanup();
    curl_global_cleanup();
    return rc;
}
