/* Propagation bench: the cost of carrying a deadline and a W3C traceparent
 * across one hop, client inject + server extract (+ release), against the
 * same wire work done by hand with snprintf/sscanf (format a grpc-timeout
 * and a traceparent, parse them back) and no contexts.
 *
 *   propagate_bench [rounds]      (bench/integrations/propagate.sh)
 *
 * Each round runs every workload for a fixed number of iterations,
 * alternating raw and libctx; the table shows the medians over rounds in
 * ns per hop. Exits 1 when inject + extract misses its 1 us target. */
#include <ctx.h>
#include <ctx/propagate.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITERS 200000

/* A flat header map: no allocation in the carrier itself. */
struct hdrs {
    int n;
    char key[4][16];
    char val[4][64];
};

static int h_set(void *self, const char *key, const char *value)
{
    struct hdrs *h = self;
    if (h->n == 4 || strlen(value) >= 64)
        return ENOSPC;
    strcpy(h->key[h->n], key);
    strcpy(h->val[h->n], value);
    h->n++;
    return 0;
}

static const char *h_get(void *self, const char *key)
{
    struct hdrs *h = self;
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->key[i], key) == 0)
            return h->val[i];
    return NULL;
}

static size_t h_get_all(void *self, const char *key, const char **v, size_t max)
{
    const char *x = h_get(self, key);
    if (x == NULL)
        return 0;
    if (max > 0)
        v[0] = x;
    return 1;
}

static volatile uint64_t sink;

/* The raw peer: the same two header values formatted and parsed by hand. */
static void raw_hop(uint64_t i)
{
    struct hdrs h = {0};
    uint8_t tid[16], pid[8];
    for (int k = 0; k < 16; k++)
        tid[k] = (uint8_t)(i + k + 1);
    for (int k = 0; k < 8; k++)
        pid[k] = (uint8_t)(i * 7 + k + 1);
    long long left = 2500000000LL - (long long)(i & 1023);
    h.n = 2;
    strcpy(h.key[0], "grpc-timeout");
    snprintf(h.val[0], 64, "%lldu", (left + 999) / 1000);
    strcpy(h.key[1], "traceparent");
    char *p = h.val[1];
    p += sprintf(p, "00-");
    for (int k = 0; k < 16; k++)
        p += sprintf(p, "%02x", tid[k]);
    p += sprintf(p, "-");
    for (int k = 0; k < 8; k++)
        p += sprintf(p, "%02x", pid[k]);
    sprintf(p, "-01");
    /* Receiver. */
    long long v;
    char unit;
    unsigned ver, flags;
    char t[33], s[17];
    if (sscanf(h_get(&h, "grpc-timeout"), "%8lld%c", &v, &unit) == 2 &&
        sscanf(h_get(&h, "traceparent"), "%2x-%32[0-9a-f]-%16[0-9a-f]-%2x",
               &ver, t, s, &flags) == 4)
        sink += (uint64_t)v + (unsigned char)t[0] + (unsigned char)s[0];
}

static void ctx_hop(ctx_t *client)
{
    struct hdrs h = {0};
    ctx_carrier_t c = {.self = &h, .set = h_set, .get = h_get,
                       .get_all = h_get_all};
    const unsigned what = CTX_PROPAGATE_DEADLINE | CTX_PROPAGATE_TRACE;
    if (ctx_propagate_inject(client, &c, what) != 0)
        abort();
    ctx_t *server = ctx_propagate_extract(ctx_background(), &c, 0, what);
    if (server == NULL)
        abort();
    sink += (uint64_t)ctx_trace_flags(server);
    ctx_release(server);
}

static void inject_only(ctx_t *client)
{
    struct hdrs h = {0};
    ctx_carrier_t c = {.self = &h, .set = h_set};
    if (ctx_propagate_inject(client, &c,
                             CTX_PROPAGATE_DEADLINE | CTX_PROPAGATE_TRACE) != 0)
        abort();
    sink += (unsigned char)h.val[1][40];
}

static struct hdrs incoming;

static void extract_only(void)
{
    ctx_carrier_t c = {.self = &incoming, .get = h_get, .get_all = h_get_all};
    ctx_t *server = ctx_propagate_extract(
        ctx_background(), &c, 0, CTX_PROPAGATE_DEADLINE | CTX_PROPAGATE_TRACE);
    if (server == NULL)
        abort();
    ctx_release(server);
}

/* CPU time of this thread: on a loaded machine (other jobs sharing the
 * cores) wall time would count the time others ran. Neither workload
 * blocks or sleeps, so CPU time is the cost. */
static int64_t cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double per_op(int64_t t0)
{
    return (double)(cpu_now() - t0) / ITERS;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > 100)
        rounds = 5;
    ctx_t *traced = ctx_trace_start(ctx_background(), CTX_TRACE_SAMPLED);
    ctx_t *client = ctx_with_timeout(traced, 10 * CTX_MINUTE);
    ctx_carrier_t in = {.self = &incoming, .set = h_set};
    ctx_propagate_inject(client, &in, 0);
    for (int i = 0; i < ITERS / 10; i++) /* warm up */
        ctx_hop(client);

    double raw[100], lib[100], inj[100], ext[100];
    for (int r = 0; r < rounds; r++) {
        int64_t t0 = cpu_now();
        for (uint64_t i = 0; i < ITERS; i++)
            raw_hop(i);
        raw[r] = per_op(t0);
        t0 = cpu_now();
        for (int i = 0; i < ITERS; i++)
            ctx_hop(client);
        lib[r] = per_op(t0);
        t0 = cpu_now();
        for (int i = 0; i < ITERS; i++)
            inject_only(client);
        inj[r] = per_op(t0);
        t0 = cpu_now();
        for (int i = 0; i < ITERS; i++)
            extract_only();
        ext[r] = per_op(t0);
    }
    double mr = median(raw, rounds), ml = median(lib, rounds);
    double mi = median(inj, rounds), me = median(ext, rounds);
    int met = ml <= 1000.0;
    printf("### Propagation: deadline (grpc-timeout) + traceparent, one hop\n\n");
    printf("| workload | raw median | libctx median | ratio | target | met? |\n");
    printf("|---|---|---|---|---|---|\n");
    printf("| inject + extract + release (client ctx -> headers -> server ctx) "
           "| %.0f ns | %.0f ns | %.2f | <= 1 us | %s |\n",
           mr, ml, ml / mr, met ? "yes" : "NO");
    printf("| inject only (grpc-timeout + traceparent with a new span id) "
           "| - | %.0f ns | - | - | - |\n", mi);
    printf("| extract + release only (deadline node + trace value) "
           "| - | %.0f ns | - | - | - |\n\n", me);
    printf("Raw: the same two header values formatted with snprintf and parsed "
           "with sscanf, no contexts. %d rounds of %d hops, medians of the "
           "per-round means, in thread CPU time.\n\n", rounds, ITERS);
    ctx_release(client);
    ctx_release(traced);
    return met ? 0 : 1;
}
