/* Reads the raw outputs of the interleaved rounds (Go's `go test -bench`,
 * ctx_bench, stop_bench) and the scaling runs, and prints one table of
 * medians, the scaling tables and the project's performance targets.
 *
 *   ctx_report [-o RESULTS.md] [-m meta.txt] go:FILE c:FILE cxx:FILE scale:FILE ...
 *
 * The last line of stdout is `worst ratio: X.XX (workload)`. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum impl { GO, C, CXX, NIMPL };

#define MAXV 64
struct series {
    int n;
    double ns[MAXV], bytes[MAXV], allocs[MAXV];
};

struct bench {
    char name[160];
    struct series s[NIMPL];
    char skip[NIMPL][200];
};

static struct bench benches[256];
static int nbench;

struct cell {
    char sec[160], row[160], col[160], val[80];
};
static struct cell cells[4096];
static int ncell;

static FILE *out_md;

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (out_md) {
        va_start(ap, fmt);
        vfprintf(out_md, fmt, ap);
        va_end(ap);
    }
}

static struct bench *find(const char *name, bool add)
{
    for (int i = 0; i < nbench; i++)
        if (strcmp(benches[i].name, name) == 0)
            return &benches[i];
    if (!add || nbench == (int)(sizeof benches / sizeof benches[0]))
        return NULL;
    struct bench *b = &benches[nbench++];
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
}

/* "BenchmarkFoo/bar-2" -> "Foo/bar" */
static void bare_name(const char *in, char *out, size_t size)
{
    snprintf(out, size, "%s", in + strlen("Benchmark"));
    char *dash = strrchr(out, '-');
    if (dash != NULL && dash[1] != '\0' && strspn(dash + 1, "0123456789") == strlen(dash + 1))
        *dash = '\0';
}

static void read_bench(enum impl im, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char raw[256], name[200];
        if (strncmp(line, "# SKIP Benchmark", 16) == 0) {
            char *colon = strchr(line + 7, ':');
            if (colon == NULL)
                continue;
            *colon = '\0';
            snprintf(raw, sizeof raw, "%s", line + 7);
            bare_name(raw, name, sizeof name);
            struct bench *b = find(name, true);
            if (b == NULL)
                continue;
            char *why = colon + 2;
            why[strcspn(why, "\n")] = '\0';
            snprintf(b->skip[im], sizeof b->skip[im], "%s", why);
            continue;
        }
        if (strncmp(line, "Benchmark", 9) != 0)
            continue;
        long n;
        double ns, bytes = NAN, allocs = NAN;
        /* Go: "name N x ns/op [y B/op z allocs/op] [extra metrics]" */
        if (sscanf(line, "%255s %ld %lf ns/op", raw, &n, &ns) != 3)
            continue;
        char *p = strstr(line, "ns/op");
        char *q = p ? strstr(p, "B/op") : NULL;
        if (q != NULL) {
            char *r = q;
            while (r > p && r[-1] == ' ')
                r--;
            while (r > p && r[-1] != ' ' && r[-1] != '\t')
                r--;
            bytes = atof(r);
            char *a = strstr(q, "allocs/op");
            if (a != NULL) {
                char *s = a;
                while (s > q && s[-1] == ' ')
                    s--;
                while (s > q && s[-1] != ' ' && s[-1] != '\t')
                    s--;
                allocs = atof(s);
            }
        }
        bare_name(raw, name, sizeof name);
        struct bench *b = find(name, true);
        if (b == NULL || b->s[im].n == MAXV)
            continue;
        struct series *s = &b->s[im];
        s->ns[s->n] = ns;
        s->bytes[s->n] = bytes;
        s->allocs[s->n] = allocs;
        s->n++;
    }
    fclose(f);
}

static void read_scale(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "SCALE\t", 6) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *f1 = line + 6, *f2 = strchr(f1, '\t');
        char *f3 = f2 ? strchr(f2 + 1, '\t') : NULL;
        char *f4 = f3 ? strchr(f3 + 1, '\t') : NULL;
        if (f4 == NULL)
            continue;
        *f2++ = *f3++ = *f4++ = '\0';
        struct cell *c = NULL;
        for (int i = 0; i < ncell; i++)
            if (!strcmp(cells[i].sec, f1) && !strcmp(cells[i].row, f2) && !strcmp(cells[i].col, f3))
                c = &cells[i];
        if (c == NULL) {
            if (ncell == (int)(sizeof cells / sizeof cells[0]))
                continue;
            c = &cells[ncell++];
        }
        snprintf(c->sec, sizeof c->sec, "%s", f1);
        snprintf(c->row, sizeof c->row, "%s", f2);
        snprintf(c->col, sizeof c->col, "%s", f3);
        snprintf(c->val, sizeof c->val, "%s", f4);
    }
    fclose(f);
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double t[MAXV];
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i]))
            t[m++] = v[i];
    if (m == 0)
        return NAN;
    qsort(t, (size_t)m, sizeof *t, cmpd);
    return m % 2 ? t[m / 2] : (t[m / 2 - 1] + t[m / 2]) / 2;
}

static double med_ns(const struct bench *b, enum impl im)
{
    return b && b->s[im].n ? median(b->s[im].ns, b->s[im].n) : NAN;
}

static const char *fmt_ns(double v, char *buf, size_t size)
{
    if (isnan(v))
        snprintf(buf, size, "n/a");
    else if (v >= 100000)
        snprintf(buf, size, "%.0f", v);
    else if (v >= 100)
        snprintf(buf, size, "%.1f", v);
    else
        snprintf(buf, size, "%.2f", v);
    return buf;
}

static const char *fmt_num(double v, char *buf, size_t size)
{
    if (isnan(v))
        snprintf(buf, size, "n/a");
    else if (v == floor(v))
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.2f", v);
    return buf;
}

/* How each workload maps between Go and C, printed under the table. */
static const char *const mapping[] = {
    "**CommonParentCancel**: Go `WithCancel(shared)` + `Value(\"key\")` + 100 divisions + "
    "`cancel()` + 100 divisions, on GOMAXPROCS goroutines (RunParallel). C: "
    "`ctx_with_cancel(shared)` + `ctx_value` + the same divisions + `ctx_cancel` + "
    "`ctx_release`, on as many threads, same b.N split. C++: a stop_source linked to the "
    "shared one by a stop_callback (no value lookup: stop_source carries none).",
    "**WithTimeout/concurrency=N**: N `WithTimeout(Background, time.Hour)` pending (made "
    "before the timer starts); per op, 10 `WithTimeout` then their 10 `cancel()`, 2 threads. "
    "C: `ctx_with_timeout(background, CTX_HOUR)` x10 then `ctx_cancel` + `ctx_release` x10.",
    "**CancelTree/depth=D**: D nested `WithCancel`. Root=Background: Go never cancels (its "
    "GC frees the chain); C builds the chain and releases it (freeing is in the C figure). "
    "Root=OpenCanceler: `cancel()` of the root after the build; C then releases. "
    "Root=ClosedCanceler: the root is cancelled first, every node is done at birth. In C "
    "each parent's reference is dropped as soon as its child holds one. C++: a chain of "
    "stop_sources linked by stop_callbacks, deleted leaf first.",
    "**CheckCanceled/Err, /Done**: on a cancelled context, Go `ctx.Err()` and `select { case "
    "<-ctx.Done(): default: }`; C `ctx_err()` and `ctx_is_done()` (a call into the "
    "library each); C++ `stop_token::stop_requested()` (inline).",
    "**ContextCancelDone**: Done() polled by GOMAXPROCS goroutines on a live context; C "
    "`ctx_is_done()` on as many threads.",
    "**DeepValueSameGoRoutine/depth=D**: D nested `WithValue(ctx, i, i)`, then `Value(-1)` "
    "(a miss). C: D nested `ctx_with_value` with D distinct keys, then `ctx_value` of "
    "another key.",
    "**DeepValueNewGoRoutine**: not reproduced in C: Go starts a goroutine per op (~1 us of "
    "scheduler work); a pthread per op would measure the kernel, not libctx.",
    "**Lifecycle/\\***: not in Go's suite; Go peers in `bench/go/lifecycle_test.go`. "
    "WithCancelBackground: Go `WithCancel(Background)` + `cancel()`; C `ctx_with_cancel` + "
    "`ctx_cancel` + `ctx_release`. WithCancelChild: the same under a live cancellable parent "
    "(registration in its children). WithTimeout: `WithTimeout(Background, time.Hour)` + "
    "`cancel()` (no other timer pending). WithValue: `WithValue(Background, k, v).Value(k)`; "
    "C also releases. DoneFd: C only, `ctx_with_cancel` + `ctx_done_fd` + cancel + release "
    "(an eventfd: Go's Done channel is not an fd). AfterFuncStop: `ctx_after_func` + "
    "`ctx_after_stop` on a live context (Go 1.19 has no AfterFunc; C++: a stop_callback "
    "constructed and destroyed on the stack). AfterFuncFire: with_cancel + after_func + "
    "cancel (runs fn) + after_stop + release (C++: stop_source + stop_callback + request_stop).",
    "B/op: Go counts size-class bytes; C counts `malloc_usable_size()` of each allocation "
    "made by the library in the timed region (malloc shim, `-Wl,--wrap`), divided by b.N. "
    "Nodes freed in a thread are reused from its cache of up to 32 blocks per node size "
    "before malloc is called, so a steady create/cancel/release loop shows 0 B/op and 0 "
    "allocs/op; a context still takes its 88 (cancel) or 48 (value) bytes, as the "
    "bytes-per-context table below shows.",
    NULL,
};

static const char *section_note(const char *sec)
{
    if (strstr(sec, "Timers:"))
        return "ns per create+cancel+release with n other timers pending (random deadlines in "
               "[1h, 2h), or all at now+1h as in Go's benchmark). O(log n) allows growth up to "
               "the last column; cache misses on a large heap add to it.";
    if (strstr(sec, "Tree cancel:"))
        return "Time of the one `ctx_cancel(root)` (C++: `request_stop()`) that marks n "
               "descendants done, divided by n; build and release are timed apart (8-ary). "
               "C runs on the default 8 MiB stack; the C++ chain needs a 1 GiB one "
               "(request_stop runs callbacks recursively).";
    if (strstr(sec, "Value miss"))
        return "A miss walks the whole chain in Go and in C: O(depth) by design.";
    if (strstr(sec, "Memory:"))
        return "Peak RSS of a fresh process holding n (10^6 by default) pending `ctx_with_timeout` contexts "
               "(the 8 MB array of pointers and the timer thread are in the baseline).";
    if (strstr(sec, "Bytes per context"))
        return "Net live bytes per context from the malloc shim: requested sizes, "
               "`malloc_usable_size()`, and glibc's footprint (usable + the 8-byte chunk "
               "header). A timeout's figure includes its share of the timer heap array. The "
               "done fd is kernel memory (an eventfd), not malloc.";
    if (strstr(sec, "Callback registration"))
        return "Register + unregister with k callbacks already registered on the same "
               "context (O(1) expected), and the cost per callback of the cancel that runs k.";
    return NULL;
}

static const char *cell_val(const char *sec, const char *row, const char *col)
{
    for (int i = 0; i < ncell; i++)
        if (!strcmp(cells[i].sec, sec) && !strcmp(cells[i].row, row) && !strcmp(cells[i].col, col))
            return cells[i].val;
    return NULL;
}

static void print_scale(void)
{
    for (int i = 0; i < ncell; i++) {
        const char *sec = cells[i].sec;
        bool seen = false;
        for (int j = 0; j < i; j++)
            if (!strcmp(cells[j].sec, sec))
                seen = true;
        if (seen)
            continue;
        const char *cols[32], *rows[64];
        int nc = 0, nr = 0;
        for (int j = i; j < ncell; j++) {
            if (strcmp(cells[j].sec, sec))
                continue;
            bool have = false;
            for (int k = 0; k < nc; k++)
                have |= !strcmp(cols[k], cells[j].col);
            if (!have && nc < 32)
                cols[nc++] = cells[j].col;
            have = false;
            for (int k = 0; k < nr; k++)
                have |= !strcmp(rows[k], cells[j].row);
            if (!have && nr < 64)
                rows[nr++] = cells[j].row;
        }
        emit("\n### %s\n\n", sec);
        const char *note = section_note(sec);
        if (note)
            emit("%s\n\n", note);
        emit("| |");
        for (int k = 0; k < nc; k++)
            emit(" %s |", cols[k]);
        emit("\n|---|");
        for (int k = 0; k < nc; k++)
            emit("---:|");
        emit("\n");
        for (int r = 0; r < nr; r++) {
            emit("| %s |", rows[r]);
            for (int k = 0; k < nc; k++) {
                const char *v = cell_val(sec, rows[r], cols[k]);
                emit(" %s |", v ? v : "");
            }
            emit("\n");
        }
    }
}

struct target_line {
    char text[400];
};

int main(int argc, char **argv)
{
    const char *out_path = NULL, *meta_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            meta_path = argv[++i];
        } else if (!strncmp(argv[i], "go:", 3)) {
            read_bench(GO, argv[i] + 3);
        } else if (!strncmp(argv[i], "c:", 2)) {
            read_bench(C, argv[i] + 2);
        } else if (!strncmp(argv[i], "cxx:", 4)) {
            read_bench(CXX, argv[i] + 4);
        } else if (!strncmp(argv[i], "scale:", 6)) {
            read_scale(argv[i] + 6);
        } else {
            fprintf(stderr, "usage: %s [-o out.md] [-m meta] go:F c:F cxx:F scale:F ...\n", argv[0]);
            return 2;
        }
    }
    if (out_path) {
        out_md = fopen(out_path, "w");
        if (out_md == NULL) {
            perror(out_path);
            return 1;
        }
    }

    emit("# libctx benchmarks: side by side with Go's context\n\n");
    if (meta_path) {
        FILE *m = fopen(meta_path, "r");
        char line[512];
        while (m && fgets(line, sizeof line, m))
            emit("%s", line);
        if (m)
            fclose(m);
        emit("\n");
    }
    int rounds = 0;
    for (int i = 0; i < nbench; i++)
        for (int im = 0; im < NIMPL; im++)
            if (benches[i].s[im].n > rounds)
                rounds = benches[i].s[im].n;
    emit("Medians of %d interleaved rounds (Go, C, C++, Go, C, C++ ...). ns/op: lower is "
         "better; C/Go < 1 means libctx is faster.\n\n",
         rounds);
    emit("| workload | Go ns/op | C ns/op | C/Go | Go B/op | C B/op | Go allocs/op | C allocs/op "
         "| C++ ns/op | C/C++ |\n");
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    double worst = -1;
    const char *worst_name = "none";
    for (int i = 0; i < nbench; i++) {
        struct bench *b = &benches[i];
        char a1[32], a2[32], a3[32], a4[32], a5[32], a6[32], a7[32], a8[32], a9[32];
        double g = med_ns(b, GO), c = med_ns(b, C), x = med_ns(b, CXX);
        double ratio = g / c > 0 ? c / g : NAN;
        double xr = x > 0 ? c / x : NAN;
        if (!isnan(ratio) && ratio > worst) {
            worst = ratio;
            worst_name = b->name;
        }
        const char *cns = fmt_ns(c, a2, sizeof a2);
        if (isnan(c) && b->skip[C][0])
            cns = "not reproduced";
        emit("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", b->name,
             fmt_ns(g, a1, sizeof a1), cns,
             isnan(ratio) ? "" : (snprintf(a3, sizeof a3, "%.2f", ratio), a3),
             fmt_num(b->s[GO].n ? median(b->s[GO].bytes, b->s[GO].n) : NAN, a4, sizeof a4),
             fmt_num(b->s[C].n ? median(b->s[C].bytes, b->s[C].n) : NAN, a5, sizeof a5),
             fmt_num(b->s[GO].n ? median(b->s[GO].allocs, b->s[GO].n) : NAN, a6, sizeof a6),
             fmt_num(b->s[C].n ? median(b->s[C].allocs, b->s[C].n) : NAN, a7, sizeof a7),
             isnan(x) ? "" : fmt_ns(x, a8, sizeof a8),
             isnan(xr) ? "" : (snprintf(a9, sizeof a9, "%.2f", xr), a9));
    }
    emit("\nHow each workload maps (Go op -> C op):\n\n");
    for (int i = 0; mapping[i]; i++)
        emit("- %s\n", mapping[i]);

    emit("\n## Scaling\n");
    print_scale();

    /* The project's performance targets: each row states its goal. */
    emit("\n## Targets (the project's performance goals)\n\n");
    emit("| target | measured | met |\n|---|---|---|\n");
    struct {
        const char *what, *name;
        double limit;
        bool absolute;
        double per;
    } tg[] = {
        {"with_cancel + cancel + release <= 0.3 of Go", "Lifecycle/WithCancelBackground", 0.3, false, 1},
        {"the same under a live cancellable parent (not a target, for reference)",
         "Lifecycle/WithCancelChild", 0.3, false, 1},
        {"cancel propagation through a tree, per node <= 0.3 of Go",
         "CancelTree/depth=1000/Root=OpenCanceler", 0.3, false, 1000},
        {"with_timeout + cancel, 400k timers pending <= 0.3 of Go",
         "WithTimeout/concurrency=400000", 0.3, false, 1},
        {"done check on a done context <= 2 ns", "CheckCanceled/Done", 2, true, 1},
        {"err check on a done context <= 2 ns", "CheckCanceled/Err", 2, true, 1},
        {"value miss at depth 100 <= 0.5 of Go", "DeepValueSameGoRoutine/depth=100", 0.5, false, 1},
    };
    for (size_t i = 0; i < sizeof tg / sizeof tg[0]; i++) {
        struct bench *b = find(tg[i].name, false);
        double g = med_ns(b, GO), c = med_ns(b, C);
        if (tg[i].absolute) {
            emit("| %s | C %.2f ns (Go %.2f ns) | %s |\n", tg[i].what, c, g,
                 isnan(c) ? "?" : c <= tg[i].limit ? "yes" : "**no**");
        } else if (tg[i].per > 1) {
            emit("| %s | %.2f (C %.1f ns/node, Go %.1f ns/node; `%s`) | %s |\n", tg[i].what,
                 c / g, c / tg[i].per, g / tg[i].per, tg[i].name,
                 isnan(c / g) ? "?" : c / g <= tg[i].limit ? "yes" : "**no**");
        } else {
            bool info = strstr(tg[i].what, "not a target") != NULL;
            emit("| %s | %.2f (C %.1f ns, Go %.1f ns) | %s |\n", tg[i].what, c / g, c, g,
                 isnan(c / g) ? "?" : info ? "-" : c / g <= tg[i].limit ? "yes" : "**no**");
        }
    }
    const char *row = "C cancel (child of background)";
    const char *sec = NULL;
    for (int i = 0; i < ncell; i++)
        if (strstr(cells[i].sec, "Bytes per context"))
            sec = cells[i].sec;
    const char *req = sec ? cell_val(sec, row, "requested B") : NULL;
    const char *use = sec ? cell_val(sec, row, "usable B (net live)") : NULL;
    const char *foot = sec ? cell_val(sec, row, "footprint B (usable + 8 per chunk)") : NULL;
    if (use) {
        double u = atof(use), fp = foot ? atof(foot) : NAN;
        emit("| memory per cancel context <= 96 bytes | %s B usable (requested %s B, glibc "
             "footprint %s B) | %s |\n",
             use, req ? req : "?", foot ? foot : "?",
             u <= 96 ? (fp <= 96 ? "yes" : "yes (usable; footprint above)") : "**no**");
    } else {
        emit("| memory per cancel context <= 96 bytes | not measured (run with the scaling "
             "tables) | ? |\n");
    }

    char line[256];
    snprintf(line, sizeof line, "worst ratio: %.2f (%s)\n", worst, worst_name);
    emit("\n%s", line);
    if (out_md)
        fclose(out_md);
    return 0;
}
