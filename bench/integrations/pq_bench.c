/*
 * libctx-pq bench: ctx_pq_exec() beside PQexec() for SELECT 1 over a Unix
 * socket (pairs of rounds, the order alternating; the ratio is the median of
 * the pairs' ratios, so a slow moment of the machine or the server hits
 * both sides of a pair), and the cancel-to-return latency of a long query
 * (p50, p99) beside the same cancel done with libpq alone (PQcancel() from
 * another thread while PQexec() waits): the server's own floor.
 * Prints the Markdown table rows.
 *
 *   bench_pq CONNINFO [ROUNDS]
 */
#define _POSIX_C_SOURCE 200809L
#include <ctx.h>
#include <ctx/pq.h>

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OPS 1000
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

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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
    ctx_t *ctx;         /* libctx: cancel this */
    PGcancel *pqcancel; /* raw: or send this */
    ctx_time_t at;
};

static void *cancel_main(void *arg)
{
    struct canceller *k = arg;
    struct timespec ts = {0, 20 * 1000 * 1000}; /* the query is running */
    nanosleep(&ts, NULL);
    k->at = ctx_now();
    if (k->ctx != NULL) {
        ctx_cancel(k->ctx);
    } else {
        char err[256];
        (void)PQcancel(k->pqcancel, err, sizeof err);
    }
    return NULL;
}

/* One cancelled pg_sleep: the time from the cancel to the return of the
 * call, or -1 if the query did not end as a cancelled one should. */
static int64_t cancel_once(PGconn *c, bool raw)
{
    struct canceller k = {0};
    if (raw)
        k.pqcancel = PQgetCancel(c);
    else
        k.ctx = ctx_with_cancel(ctx_background());
    pthread_t t;
    pthread_create(&t, NULL, cancel_main, &k);
    PGresult *res = raw ? PQexec(c, "SELECT pg_sleep(10)")
                        : ctx_pq_exec(k.ctx, c, "SELECT pg_sleep(10)");
    int e = errno;
    ctx_time_t back = ctx_now();
    pthread_join(t, NULL);
    bool ok = raw ? PQresultStatus(res) == PGRES_FATAL_ERROR
                  : res == NULL && e == ECANCELED;
    ok = ok && PQstatus(c) == CONNECTION_OK;
    PQclear(res);
    if (raw)
        PQfreeCancel(k.pqcancel);
    else
        ctx_release(k.ctx);
    return ok ? back - k.at : -1;
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
    enum { MAXR = 256 };
    int64_t raw[MAXR], lib[MAXR];
    double ratios[MAXR];
    rounds *= 8; /* 1000 queries a round: 5 -> 40 pairs */
    if (rounds > MAXR)
        rounds = MAXR;
    for (int r = 0; r < rounds; r++) {
        if (r % 2) {
            raw[r] = round_raw(c);
            lib[r] = round_ctx(c);
        } else {
            lib[r] = round_ctx(c);
            raw[r] = round_raw(c);
        }
        ratios[r] = (double)lib[r] / (double)raw[r];
    }
    qsort(ratios, (size_t)rounds, sizeof *ratios, cmp_dbl);
    double ratio = rounds % 2 ? ratios[rounds / 2]
                              : (ratios[rounds / 2 - 1] + ratios[rounds / 2]) / 2;
    int64_t mr = median(raw, rounds), ml = median(lib, rounds);

    /* Cancels, interleaved: libctx, then libpq alone. */
    int64_t lat[SAMPLES], rawlat[SAMPLES];
    int bad = 0, rawbad = 0;
    for (int i = 0; i < SAMPLES; i++) {
        lat[i] = cancel_once(c, false);
        rawlat[i] = cancel_once(c, true);
        if (lat[i] < 0)
            bad++;
        if (rawlat[i] < 0)
            rawbad++;
    }
    qsort(lat, SAMPLES, sizeof *lat, cmp_i64);
    qsort(rawlat, SAMPLES, sizeof *rawlat, cmp_i64);
    int i50 = SAMPLES / 2, i99 = (SAMPLES * 99) / 100 - 1;
    int64_t p50 = lat[i50], p99 = lat[i99];
    int ok1 = ratio <= 1.10, ok2 = p99 <= 5 * CTX_MILLISECOND && bad == 0;
    printf("| `SELECT 1` over a Unix socket (per query; ratio: median of %d paired rounds of %d) | %.1f us (PQexec) | %.1f us (ctx_pq_exec) | %.3f | <= 1.10 | %s |\n",
           rounds, OPS, mr / 1e3, ml / 1e3, ratio, ok1 ? "yes" : "no");
    printf("| cancel-to-return, `SELECT pg_sleep(10)` cancelled 20 ms in, p50 / p99 (%d samples each%s; raw: `PQcancel()` from another thread while `PQexec()` waits) | %.2f / %.2f ms | %.2f / %.2f ms | %.2f (p99) | p99 <= 5 ms | %s |\n",
           SAMPLES, bad || rawbad ? ", SOME FAILED" : "", rawlat[i50] / 1e6,
           rawlat[i99] / 1e6, p50 / 1e6, p99 / 1e6,
           (double)p99 / (double)rawlat[i99], ok2 ? "yes" : "no");
    PQfinish(c);
    return ok1 && ok2 ? 0 : 3;
}
