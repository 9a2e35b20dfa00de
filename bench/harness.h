/* The benchmark harness shared by the C benchmarks (ctx_bench) and the C++
 * std::stop_source peer (stop_bench): a Go-style b.N runner, RunParallel, and
 * a malloc-counting shim (the binaries link with -Wl,--wrap=malloc,...).
 *
 * Output follows `go test -bench` so that one parser reads all three:
 *   BenchmarkName-P  <N>  <ns> ns/op  <bytes> B/op  <allocs> allocs/op
 * and, for the scaling tables,
 *   SCALE<TAB>section<TAB>row<TAB>column<TAB>value
 */
#ifndef CTX_BENCH_HARNESS_H
#define CTX_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bench bench_t;
struct bench {
    long n;                  /* iterations asked for in this run */
    void *arg;               /* the benchmark's argument */
    /* timer state, like Go's testing.B */
    bool timer_on;
    int64_t start_ns, elapsed_ns;
    uint64_t start_allocs, start_bytes;
    uint64_t allocs, bytes;
    /* RunParallel's grain comes from the previous run (Go's formula) */
    long prev_n;
    int64_t prev_ns;
    /* allocations counted by RunParallel's worker threads */
    uint64_t par_allocs, par_bytes; /* __atomic builtins: C and C++ */
};

typedef void (*bench_fn)(bench_t *b);

/* Settings (from argv via bench_main_args). */
extern int64_t bench_benchtime_ns;
extern int bench_procs; /* GOMAXPROCS equivalent: online CPUs */

int64_t bench_now_ns(void);
void bench_reset_timer(bench_t *b);
void bench_start_timer(bench_t *b);
void bench_stop_timer(bench_t *b);

/* Runs fn with Go's b.N calibration and prints one Benchmark line, when
 * `name` matches the -bench filter. */
void bench_run(const char *name, bench_fn fn, void *arg);
bool bench_selected(const char *name);
/* Prints a line saying a benchmark is deliberately not reproduced. */
void bench_skip(const char *name, const char *why);

/* Go's b.RunParallel: bench_procs threads share b->n iterations, handed out
 * in grains. body() loops with `while (bench_pb_next(pb))`. */
typedef struct bench_pb {
    bench_t *b;
    long *next; /* shared counter, __atomic builtins */
    long grain, cache;
    void *arg;
    int id;
} bench_pb_t;
bool bench_pb_next(bench_pb_t *pb);
void bench_run_parallel(bench_t *b, void (*body)(bench_pb_t *pb), void *arg);

/* Runs fn(arg) on `nthreads` threads at once and waits for them. */
void bench_on_threads(int nthreads, void (*fn)(int id, void *arg), void *arg);

/* The malloc shim. Per-thread counters of allocations and of their
 * malloc_usable_size() (the allocator's view, as Go's B/op counts size-class
 * bytes), kept only in bench_run()'s separate counting run (a quarter of
 * the timed iterations, after them), so that timed runs pay nothing for
 * them. bench_live_begin()/end() measure, process-wide, the net live
 * chunks and usable bytes and the gross requested bytes in between. */
void bench_alloc_counters(uint64_t *allocs, uint64_t *bytes);
struct bench_live {
    int64_t chunks, usable, requested;
};
void bench_live_begin(void);
struct bench_live bench_live_end(void);
/* The bench's own allocations, never counted. */
void *bench_xmalloc(size_t n);
void bench_xfree(void *p);

/* Parses -bench REGEX, -benchtime 200ms|1s|100x, -scale, -scale-max N.
 * Returns true if the scaling tables were asked for. */
bool bench_main_args(int argc, char **argv);
extern long bench_scale_max;

void bench_scale(const char *section, const char *row, const char *col,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Runs fn(arg) in a forked child (fresh process: no timer thread, own RSS)
 * with a stack of `stack_mb` MiB (0: the default); reports a crash as a
 * SCALE line in `section`/`row`/`col`. Returns the child's peak RSS in KiB
 * (ru_maxrss), or -1. */
long bench_fork(const char *section, const char *row, const char *col,
                void (*fn)(void *arg), void *arg, size_t stack_mb);

/* Keeps a value alive for the optimiser. */
#define BENCH_KEEP(x) __asm__ volatile("" : : "g"(x) : "memory")
#define BENCH_OPAQUE(x) __asm__ volatile("" : "+r"(x))

void bench_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A small deterministic PRNG (xorshift64*). */
static inline uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The sections of the scaling tables, shared by ctx_bench and stop_bench. */
#define SEC_TIMERS "Timers: with_timeout + cancel + release, n timers pending"
#define SEC_TREE "Tree cancel: one cancel of the root, ns per node"
#define SEC_VALUE "Value miss by depth"
#define SEC_RSS "Memory: pending timeout contexts"
#define SEC_BYTES "Bytes per context, by kind (malloc shim, 10^5 of each)"
#define SEC_AFTER "Callback registration: k callbacks already on the context"

/* "10^3" for exact powers of ten, else the number. */
const char *bench_n_label(long n, char *buf, size_t size);
/* The median of v[0..n) (sorts v). */
double bench_median(double *v, int n);

#ifdef __cplusplus
}
#endif

#endif
