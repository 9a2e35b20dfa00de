/*
 * libctx-pq bench: ctx_pq_exec() beside PQexec() for SELECT 1 over a Unix
 * socket (rounds interleaved: raw, then libctx), and the cancel-to-return
 * latency of a long query (p50, p99). Prints the Markdown table rows.
 *
 *   bench_pq CONNINFO [ROUNDS]
 */
#define _POSIX_C_SOURCE 200809L
#include <ctx.h>
#include <ctx/pq.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OPS 4000
#define SAMPLES 100

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t median(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void check(PGresult *r)
{
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_pq: query failed\n");
        exit(1);
    }
    PQclear(r);
}

static int64_t round_raw(PGconn *c)
{
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < OPS; i++)
        check(PQexec(c, "SELECT 1"));
    return (ctx_now() - t0) / OPS;
}

static int64_t round_ctx(PGconn *c)
{
    ctx_t *ctx = ctx_with_cancel(ctx_background()); /* a request context */
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < OPS; i++)
        check(ctx_pq_exec(ctx, c, "SELECT 1"));
    int64_t ns = (ctx_now() - t0) / OPS;
    ctx_cancel(ctx);
    ctx_release(ctx);
    return ns;
}

struct canceller {
    ctx_t *ctx;
    ctx_time_t at;
};

static void *cancel_main(void *arg)
{
    struct canceller *k = arg;
    struct timespec ts = {0, 20 * 1000 * 1000}; /* the query is running */
    nanosleep(&ts, NULL);
    k->at = ctx_now();
    ctx_cancel(k->ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (rounds < 1)
        rounds = 1;
    PGconn *c = ctx_pq_connect(ctx_background(), argv[1]);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_pq: connect: %s\n", c ? PQerrorMessage(c) : "NULL");
        return 1;
    }
    /* warm-up */
    round_raw(c);
    round_ctx(c);
    int64_t raw[64], lib[64];
    if (rounds > 64)
        rounds = 64;
    for (int r = 0; r < rounds; r++) {
        raw[r] = round_raw(c);
        lib[r] = round_ctx(c);
    }
    int64_t mr = median(raw, rounds), ml = median(lib, rounds);

    int64_t lat[SAMPLES];
    int bad = 0;
    for (int i = 0; i < SAMPLES; i++) {
        struct canceller k = {.ctx = ctx_with_cancel(ctx_background())};
        pthread_t t;
        pthread_create(&t, NULL, cancel_main, &k);
        PGresult *res = ctx_pq_exec(k.ctx, c, "SELECT pg_sleep(10)");
        ctx_time_t back = ctx_now();
        pthread_join(t, NULL);
        if (res != NULL || errno != ECANCELED || PQstatus(c) != CONNECTION_OK)
            bad++;
        PQclear(res);
        lat[i] = back - k.at;
        ctx_release(k.ctx);
    }
    qsort(lat, SAMPLES, sizeof *lat, cmp_i64);
    int64_t p50 = lat[SAMPLES / 2], p99 = lat[(SAMPLES * 99) / 100 - 1];
    double ratio = (double)ml / (double)mr;
    int ok1 = ratio <= 1.10, ok2 = p99 <= 5 * CTX_MILLISECOND && bad == 0;
    printf("| `SELECT 1` over a Unix socket (per query) | %.1f us (PQexec) | %.1f us (ctx_pq_exec) | %.3f | <= 1.10 | %s |\n",
           mr / 1e3, ml / 1e3, ratio, ok1 ? "yes" : "no");
    printf("| cancel-to-return, `SELECT pg_sleep(10)`, p50 / p99 (%d samples%s) | - | %.2f / %.2f ms | - | p99 <= 5 ms | %s |\n",
           SAMPLES, bad ? ", SOME FAILED" : "", p50 / 1e6, p99 / 1e6,
           ok2 ? "yes" : "no");
    PQfinish(c);
    return ok1 && ok2 ? 0 : 3;
}
