/* The harness: Go's b.N calibration and RunParallel, redone in C, and the
 * malloc shim that counts what the library allocates. See harness.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t bench_benchtime_ns = 1000000000;
static long benchtime_n; /* -benchtime Nx */
int bench_procs = 1;
long bench_scale_max = 1000000;
static regex_t bench_re;
static bool bench_re_set;

/* ---- malloc shim (-Wl,--wrap=...) ------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);

static __thread uint64_t tl_allocs, tl_bytes;
/* Counting costs a TLS update and a malloc_usable_size() per allocation:
 * off during the timed runs, on in a separate run that only counts. */
static _Atomic int shim_on;
static _Atomic int live_on;
static _Atomic int64_t live_chunks, live_usable, live_requested;

static inline void note_alloc(void *p, size_t req)
{
    if (!atomic_load_explicit(&shim_on, memory_order_relaxed) || p == NULL)
        return;
    size_t u = malloc_usable_size(p);
    tl_allocs++;
    tl_bytes += u;
    if (atomic_load_explicit(&live_on, memory_order_relaxed)) {
        atomic_fetch_add(&live_chunks, 1);
        atomic_fetch_add(&live_usable, (int64_t)u);
        atomic_fetch_add(&live_requested, (int64_t)req);
    }
}

static inline void note_free(void *p)
{
    if (p != NULL && atomic_load_explicit(&shim_on, memory_order_relaxed) &&
        atomic_load_explicit(&live_on, memory_order_relaxed)) {
        atomic_fetch_sub(&live_chunks, 1);
        atomic_fetch_sub(&live_usable, (int64_t)malloc_usable_size(p));
    }
}

void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
    void *p = __real_malloc(n);
    note_alloc(p, n);
    return p;
}

void *__wrap_calloc(size_t n, size_t m);
void *__wrap_calloc(size_t n, size_t m)
{
    void *p = __real_calloc(n, m);
    note_alloc(p, n * m);
    return p;
}

void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
    note_free(p);
    void *q = __real_realloc(p, n);
    if (q == NULL && p != NULL && n != 0) { /* failed: p is still live */
        if (atomic_load_explicit(&live_on, memory_order_relaxed)) {
            atomic_fetch_add(&live_chunks, 1);
            atomic_fetch_add(&live_usable, (int64_t)malloc_usable_size(p));
        }
        return NULL;
    }
    note_alloc(q, n);
    return q;
}

void __wrap_free(void *p);
void __wrap_free(void *p)
{
    note_free(p);
    __real_free(p);
}

int __wrap_posix_memalign(void **pp, size_t a, size_t n);
int __wrap_posix_memalign(void **pp, size_t a, size_t n)
{
    int r = __real_posix_memalign(pp, a, n);
    if (r == 0)
        note_alloc(*pp, n);
    return r;
}

void *__wrap_aligned_alloc(size_t a, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n)
{
    void *p = __real_aligned_alloc(a, n);
    note_alloc(p, n);
    return p;
}

void *bench_xmalloc(size_t n)
{
    void *p = __real_malloc(n ? n : 1);
    if (p == NULL)
        bench_fatal("out of memory (%zu bytes)", n);
    return p;
}

void bench_xfree(void *p)
{
    __real_free(p);
}

void bench_alloc_counters(uint64_t *allocs, uint64_t *bytes)
{
    *allocs = tl_allocs;
    *bytes = tl_bytes;
}

void bench_live_begin(void)
{
    atomic_store(&live_chunks, 0);
    atomic_store(&live_usable, 0);
    atomic_store(&live_requested, 0);
    atomic_store(&live_on, 1);
    atomic_store(&shim_on, 1);
}

struct bench_live bench_live_end(void)
{
    atomic_store(&live_on, 0);
    atomic_store(&shim_on, 0);
    struct bench_live l = {atomic_load(&live_chunks), atomic_load(&live_usable),
                           atomic_load(&live_requested)};
    return l;
}

/* ---- timing ------------------------------------------------------------ */

void bench_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "bench: fatal: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_start_timer(bench_t *b)
{
    if (b->timer_on)
        return;
    bench_alloc_counters(&b->start_allocs, &b->start_bytes);
    b->start_ns = bench_now_ns();
    b->timer_on = true;
}

void bench_stop_timer(bench_t *b)
{
    if (!b->timer_on)
        return;
    b->elapsed_ns += bench_now_ns() - b->start_ns;
    uint64_t a, by;
    bench_alloc_counters(&a, &by);
    b->allocs += a - b->start_allocs + __atomic_exchange_n(&b->par_allocs, 0, __ATOMIC_SEQ_CST);
    b->bytes += by - b->start_bytes + __atomic_exchange_n(&b->par_bytes, 0, __ATOMIC_SEQ_CST);
    b->timer_on = false;
}

void bench_reset_timer(bench_t *b)
{
    if (b->timer_on) {
        bench_alloc_counters(&b->start_allocs, &b->start_bytes);
        b->start_ns = bench_now_ns();
    }
    __atomic_store_n(&b->par_allocs, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&b->par_bytes, 0, __ATOMIC_SEQ_CST);
    b->elapsed_ns = 0;
    b->allocs = b->bytes = 0;
}

static void run_n(bench_t *b, bench_fn fn, long n)
{
    b->n = n;
    b->elapsed_ns = 0;
    b->allocs = b->bytes = 0;
    __atomic_store_n(&b->par_allocs, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&b->par_bytes, 0, __ATOMIC_SEQ_CST);
    b->timer_on = false;
    bench_start_timer(b);
    fn(b);
    bench_stop_timer(b);
    b->prev_n = n;
    b->prev_ns = b->elapsed_ns;
}

static long min_l(long a, long b) { return a < b ? a : b; }
static long max_l(long a, long b) { return a > b ? a : b; }

bool bench_selected(const char *name)
{
    return !bench_re_set || regexec(&bench_re, name, 0, NULL, 0) == 0;
}

void bench_run(const char *name, bench_fn fn, void *arg)
{
    if (!bench_selected(name))
        return;
    bench_t *b = bench_xmalloc(sizeof *b);
    memset(b, 0, sizeof *b);
    b->arg = arg;
    /* Go's launch(): run once, then predict n to fill the benchtime. */
    run_n(b, fn, 1);
    if (benchtime_n > 0) {
        if (benchtime_n > 1)
            run_n(b, fn, benchtime_n);
    } else {
        for (long n = 1; b->elapsed_ns < bench_benchtime_ns && n < 1000000000;) {
            long last = n;
            int64_t prevns = b->elapsed_ns > 0 ? b->elapsed_ns : 1;
            n = (long)(bench_benchtime_ns * (double)b->n / (double)prevns);
            n += n / 5;
            n = min_l(n, 100 * last);
            n = max_l(n, last + 1);
            n = min_l(n, 1000000000);
            run_n(b, fn, n);
        }
    }
    long n = b->n;
    double ns = (double)b->elapsed_ns / (double)n;
    /* The counting run: a quarter of the iterations, with the shim on. */
    long cn = n / 4 > 0 ? n / 4 : 1;
    atomic_store(&shim_on, 1);
    run_n(b, fn, cn);
    atomic_store(&shim_on, 0);
    printf("Benchmark%s-%d\t%10ld\t%12.2f ns/op\t%10.1f B/op\t%8.2f allocs/op\n",
           name, bench_procs, n, ns, (double)b->bytes / (double)cn,
           (double)b->allocs / (double)cn);
    fflush(stdout);
    bench_xfree(b);
}

void bench_skip(const char *name, const char *why)
{
    if (!bench_selected(name))
        return;
    printf("# SKIP Benchmark%s: %s\n", name, why);
    fflush(stdout);
}

/* ---- RunParallel --------------------------------------------------------- */

bool bench_pb_next(bench_pb_t *pb)
{
    if (pb->cache == 0) {
        long bn = pb->b->n;
        long n = __atomic_add_fetch(pb->next, pb->grain, __ATOMIC_RELAXED);
        if (n <= bn)
            pb->cache = pb->grain;
        else if (n < bn + pb->grain)
            pb->cache = bn + pb->grain - n;
        else
            return false;
    }
    pb->cache--;
    return true;
}

struct par {
    bench_t *b;
    void (*body)(bench_pb_t *);
    void *arg;
    long next;
    long grain;
};

static void par_worker(int id, void *arg)
{
    struct par *p = arg;
    uint64_t a0, b0, a1, b1;
    bench_pb_t pb = {p->b, &p->next, p->grain, 0, p->arg, id};
    bench_alloc_counters(&a0, &b0);
    p->body(&pb);
    bench_alloc_counters(&a1, &b1);
    __atomic_fetch_add(&p->b->par_allocs, a1 - a0, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&p->b->par_bytes, b1 - b0, __ATOMIC_SEQ_CST);
}

void bench_run_parallel(bench_t *b, void (*body)(bench_pb_t *pb), void *arg)
{
    long grain = 0;
    if (b->prev_n > 0 && b->prev_ns > 0)
        grain = (long)(1e5 * (double)b->prev_n / (double)b->prev_ns);
    grain = max_l(1, min_l(grain, 10000));
    struct par p = {b, body, arg, 0, grain};
    bench_on_threads(bench_procs, par_worker, &p);
}

struct thr {
    pthread_t t;
    int id;
    void (*fn)(int, void *);
    void *arg;
};

static void *thr_main(void *a)
{
    struct thr *t = a;
    t->fn(t->id, t->arg);
    return NULL;
}

void bench_on_threads(int nthreads, void (*fn)(int id, void *arg), void *arg)
{
    struct thr t[64];
    if (nthreads > 64)
        nthreads = 64;
    for (int i = 0; i < nthreads; i++) {
        t[i] = (struct thr){0, i, fn, arg};
        int e = pthread_create(&t[i].t, NULL, thr_main, &t[i]);
        if (e != 0)
            bench_fatal("pthread_create: %s", strerror(e));
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i].t, NULL);
}

/* ---- scaling-table helpers ------------------------------------------------ */

void bench_scale(const char *section, const char *row, const char *col,
                 const char *fmt, ...)
{
    char v[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    printf("SCALE\t%s\t%s\t%s\t%s\n", section, row, col, v);
    fflush(stdout);
}

struct fork_arg {
    void (*fn)(void *);
    void *arg;
};

static void *fork_thread(void *a)
{
    struct fork_arg *f = a;
    f->fn(f->arg);
    return NULL;
}

long bench_fork(const char *section, const char *row, const char *col,
                void (*fn)(void *arg), void *arg, size_t stack_mb)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        bench_fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        if (stack_mb == 0) {
            fn(arg);
        } else {
            pthread_attr_t at;
            pthread_t t;
            struct fork_arg f = {fn, arg};
            pthread_attr_init(&at);
            pthread_attr_setstacksize(&at, stack_mb << 20);
            if (pthread_create(&t, &at, fork_thread, &f) != 0)
                bench_fatal("pthread_create (big stack)");
            pthread_join(t, NULL);
        }
        fflush(stdout);
        _exit(0);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0)
        bench_fatal("wait4: %s", strerror(errno));
    if (WIFSIGNALED(st)) {
        bench_scale(section, row, col, "crashed (%s)", strsignal(WTERMSIG(st)));
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        bench_scale(section, row, col, "failed (exit %d)", WEXITSTATUS(st));
        return -1;
    }
    return ru.ru_maxrss;
}

/* ---- arguments -------------------------------------------------------------- */

bool bench_main_args(int argc, char **argv)
{
    bool scale = false;
    long p = sysconf(_SC_NPROCESSORS_ONLN);
    bench_procs = p > 0 ? (int)p : 1;
    const char *gmp = getenv("GOMAXPROCS");
    if (gmp != NULL && atoi(gmp) > 0)
        bench_procs = atoi(gmp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-scale") == 0) {
            scale = true;
        } else if (strcmp(a, "-bench") == 0 && v) {
            if (regcomp(&bench_re, v, REG_EXTENDED | REG_NOSUB) != 0)
                bench_fatal("bad -bench regex: %s", v);
            bench_re_set = true;
            i++;
        } else if (strcmp(a, "-benchtime") == 0 && v) {
            char *end;
            double d = strtod(v, &end);
            if (strcmp(end, "x") == 0)
                benchtime_n = (long)d;
            else if (strcmp(end, "s") == 0)
                bench_benchtime_ns = (int64_t)(d * 1e9);
            else if (strcmp(end, "ms") == 0)
                bench_benchtime_ns = (int64_t)(d * 1e6);
            else
                bench_fatal("bad -benchtime: %s (use 1s, 200ms or 100x)", v);
            i++;
        } else if (strcmp(a, "-scale-max") == 0 && v) {
            bench_scale_max = atol(v);
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [-bench REGEX] [-benchtime 1s|200ms|100x] "
                    "[-scale [-scale-max N]]\n",
                    argv[0]);
            exit(2);
        }
    }
    return scale;
}

const char *bench_n_label(long n, char *buf, size_t size)
{
    int k = 0;
    long m = n;
    while (m >= 10 && m % 10 == 0) {
        m /= 10;
        k++;
    }
    if (m == 1 && k > 0)
        snprintf(buf, size, "10^%d", k);
    else
        snprintf(buf, size, "%ld", n);
    return buf;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
