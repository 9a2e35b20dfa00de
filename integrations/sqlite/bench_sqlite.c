/* bench_sqlite: libctx-sqlite beside plain SQLite.
 *
 *   bench_sqlite [rounds]
 *
 * Prints a Markdown section (### title, then a table) and exits 1 when a
 * target is missed:
 *  - ctx_sqlite_step / sqlite3_step on a CPU-bound query (a 100000-row
 *    recursive CTE in :memory:), thread CPU time, interleaved back-to-back
 *    pairs, medians; target <= 1.02;
 *  - the per-call cost on a trivial statement (informative);
 *  - cancel to return (cancel, deadline) while computing, and cancel to
 *    return while waiting for another connection's lock: p50 and p99;
 *    target p99 <= 5 ms.
 */
#include <ctx/sqlite.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CPU_SQL                                                                \
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "            \
    "LIMIT 100000) SELECT sum(x) FROM c"
#define LONG_SQL                                                               \
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "            \
    "LIMIT 1000000000) SELECT count(*) FROM c"

static int64_t cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_sqlite: %s: %d %s\n", what, rc, sqlite3_errstr(rc));
    exit(2);
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK)
        die("open", rc);
    return db;
}

/* One run of the CPU-bound query, raw or under a live context. */
static int64_t run_cpu(sqlite3_stmt *st, ctx_t *c)
{
    int64_t t0 = cpu_now();
    int rc = c != NULL ? ctx_sqlite_step(c, st) : sqlite3_step(st);
    int64_t t = cpu_now() - t0;
    if (rc != SQLITE_ROW)
        die("cpu query", rc);
    sqlite3_reset(st);
    return t;
}

/* One long-lived canceller thread (a thread started per run would measure
 * its own start-up): given a context and a delay, it sleeps, records the
 * time and cancels. */
static struct killer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ctx_t *ctx; /* set: a job to do; cleared when done */
    ctx_duration_t delay;
    ctx_time_t at;
    bool quit;
} K = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, false};

static void *killer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&K.mu);
    for (;;) {
        while (K.ctx == NULL && !K.quit)
            pthread_cond_wait(&K.cv, &K.mu);
        if (K.quit)
            break;
        ctx_t *c = K.ctx;
        struct timespec ts = {0, (long)K.delay};
        pthread_mutex_unlock(&K.mu);
        nanosleep(&ts, NULL);
        ctx_time_t at = ctx_now();
        ctx_cancel(c);
        pthread_mutex_lock(&K.mu);
        K.at = at;
        K.ctx = NULL;
        pthread_cond_broadcast(&K.cv);
    }
    pthread_mutex_unlock(&K.mu);
    return NULL;
}

/* Cancel (or deadline) to return, in ns, for n calls of `call`. */
typedef int (*call_fn)(ctx_t *c, void *arg);

static void latency(call_fn call, void *arg, int n, bool deadline, int64_t *out)
{
    unsigned seed = 7;
    for (int i = 0; i < n; i++) {
        ctx_duration_t delay = (2 + rand_r(&seed) % 8) * CTX_MILLISECOND;
        if (deadline) {
            ctx_time_t at = ctx_now() + delay;
            ctx_t *c = ctx_with_deadline(ctx_background(), at);
            int rc = call(c, arg);
            out[i] = ctx_now() - at;
            if (rc != SQLITE_INTERRUPT)
                die("deadline run", rc);
            ctx_release(c);
            continue;
        }
        ctx_t *c = ctx_with_cancel(ctx_background());
        pthread_mutex_lock(&K.mu);
        K.ctx = c;
        K.delay = delay;
        pthread_cond_broadcast(&K.cv);
        pthread_mutex_unlock(&K.mu);
        int rc = call(c, arg);
        ctx_time_t ret = ctx_now();
        pthread_mutex_lock(&K.mu);
        while (K.ctx != NULL)
            pthread_cond_wait(&K.cv, &K.mu);
        out[i] = ret - K.at;
        pthread_mutex_unlock(&K.mu);
        if (rc != SQLITE_INTERRUPT)
            die("cancel run", rc);
        ctx_release(c);
    }
}

static int long_step(ctx_t *c, void *arg)
{
    return ctx_sqlite_step(c, (sqlite3_stmt *)arg);
}

static int lock_exec(ctx_t *c, void *arg)
{
    return ctx_sqlite_exec(c, (sqlite3 *)arg, "INSERT INTO t VALUES(1)", NULL, NULL, NULL);
}

/* The floor for the deadline rows: libctx's own deadline delivery to a
 * thread that sleeps in ctx_wait() (the timer thread's wake-up). */
static int plain_wait(ctx_t *c, void *arg)
{
    (void)arg;
    ctx_wait(c);
    return SQLITE_INTERRUPT;
}

static int failed;

static void lat_row(const char *name, int64_t *v, int n, bool target)
{
    int64_t p50 = pct(v, n, 50), p99 = pct(v, n, 99);
    bool ok = p99 <= 5 * CTX_MILLISECOND;
    if (target)
        failed |= !ok;
    printf("| %s, p50 / p99 (%d runs) | - | %.3f / %.3f ms | - | %s | %s |\n", name, n,
           p50 / 1e6, p99 / 1e6, target ? "p99 <= 5 ms" : "- (the floor)",
           !target ? "-" : ok ? "yes" : "**no**");
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1)
        rounds = 1;
    enum { PER_ROUND = 30, TRIVIAL = 20000, LAT = 100 };

    /* ---- CPU-bound query ---------------------------------------------- */
    sqlite3 *db = open_db(":memory:");
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, CPU_SQL, -1, &st, NULL);
    if (rc != SQLITE_OK)
        die("prepare", rc);
    /* A live context with a deadline: the progress check then also reads
     * the clock, the dearer case. */
    ctx_t *live = ctx_with_timeout(ctx_background(), CTX_HOUR);
    run_cpu(st, NULL);
    run_cpu(st, live);
    int n = rounds * PER_ROUND;
    int64_t *raw = calloc((size_t)n, sizeof *raw), *lib = calloc((size_t)n, sizeof *lib);
    for (int r = 0, k = 0; r < rounds; r++)
        for (int i = 0; i < PER_ROUND; i++, k++) {
            /* Alternate which goes first, so neither gets the warmer
             * cache or the quieter moment systematically. */
            if ((r + i) % 2 == 0) {
                raw[k] = run_cpu(st, NULL);
                lib[k] = run_cpu(st, live);
            } else {
                lib[k] = run_cpu(st, live);
                raw[k] = run_cpu(st, NULL);
            }
        }
    /* The ratio is the median of the ratios of back-to-back pairs: on a
     * shared machine the two runs of a pair see the same conditions, which
     * the two medians taken apart do not. */
    int64_t *pr = calloc((size_t)n, sizeof *pr);
    for (int k = 0; k < n; k++)
        pr[k] = (int64_t)(1e6 * (double)lib[k] / (double)raw[k]);
    double ratio = (double)pct(pr, n, 50) / 1e6;
    free(pr);
    int64_t mraw = pct(raw, n, 50), mlib = pct(lib, n, 50);
    sqlite3_finalize(st);

    /* ---- per call, trivial statement ----------------------------------- */
    sqlite3_prepare_v2(db, "SELECT 1", -1, &st, NULL);
    int64_t traw = 0, tlib = 0;
    for (int r = 0; r < rounds; r++) {
        int64_t t0 = cpu_now();
        for (int i = 0; i < TRIVIAL; i++) {
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        int64_t t1 = cpu_now();
        for (int i = 0; i < TRIVIAL; i++) {
            ctx_sqlite_step(live, st);
            sqlite3_reset(st);
        }
        int64_t t2 = cpu_now();
        if (r == 0 || t1 - t0 < traw)
            traw = t1 - t0;
        if (r == 0 || t2 - t1 < tlib)
            tlib = t2 - t1;
    }
    sqlite3_finalize(st);

    /* ---- cancel / deadline to return ------------------------------------ */
    pthread_t killer;
    pthread_create(&killer, NULL, killer_main, NULL);
    int64_t lat_cancel[LAT], lat_deadline[LAT], lat_lock[LAT], lat_floor[LAT];
    latency(plain_wait, NULL, LAT, true, lat_floor);
    sqlite3_prepare_v2(db, LONG_SQL, -1, &st, NULL);
    latency(long_step, st, LAT, false, lat_cancel);
    latency(long_step, st, LAT, true, lat_deadline);
    sqlite3_finalize(st);
    sqlite3_close(db);

    char dir[] = "/tmp/ctx-sqlite-bench-XXXXXX", path[64], p2[80];
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", 0);
    snprintf(path, sizeof path, "%s/b.db", dir);
    sqlite3 *a = open_db(path), *b = open_db(path);
    sqlite3_exec(a, "CREATE TABLE t(x)", NULL, NULL, NULL);
    sqlite3_busy_timeout(a, 60000);
    sqlite3_exec(b, "BEGIN EXCLUSIVE", NULL, NULL, NULL);
    latency(lock_exec, a, LAT, false, lat_lock);
    sqlite3_exec(b, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(a);
    sqlite3_close(b);
    unlink(path);
    snprintf(p2, sizeof p2, "%s-journal", path);
    unlink(p2);
    rmdir(dir);
    pthread_mutex_lock(&K.mu);
    K.quit = true;
    pthread_cond_broadcast(&K.cv);
    pthread_mutex_unlock(&K.mu);
    pthread_join(killer, NULL);
    ctx_cancel(live);
    ctx_release(live);

    bool ok = ratio <= 1.02;
    failed |= !ok;
    printf("### SQLite (libctx-sqlite, SQLite %s)\n\n", sqlite3_libversion());
    printf("| workload | raw median | libctx median | ratio | target | met? |\n");
    printf("|---|---|---|---|---|---|\n");
    printf("| `ctx_sqlite_step` / `sqlite3_step`, CPU-bound query (100k-row CTE, "
           "thread CPU time, %d pairs; ratio: median of paired ratios) | %.3f ms | %.3f ms | %.4f | <= 1.02 | %s |\n",
           n, mraw / 1e6, mlib / 1e6, ratio, ok ? "yes" : "**no**");
    printf("| per call, `SELECT 1` step + reset (best of %d x %d) | %.0f ns | %.0f ns | %.2f | "
           "- (informative) | - |\n",
           rounds, TRIVIAL, (double)traw / TRIVIAL, (double)tlib / TRIVIAL,
           (double)tlib / (double)traw);
    lat_row("cancel to return, computing", lat_cancel, LAT, true);
    lat_row("deadline to return, computing", lat_deadline, LAT, true);
    lat_row("cancel to return, waiting for a lock", lat_lock, LAT, true);
    lat_row("libctx alone: deadline to return of `ctx_wait()`", lat_floor, LAT, false);
    printf("\nReproduce: `cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release "
           "-DCTX_BUILD_BENCH=ON && cmake --build build-rel --target bench_sqlite && "
           "bash bench/integrations/sqlite.sh build-rel`\n");
    free(raw);
    free(lib);
    return failed ? 1 : 0;
}
