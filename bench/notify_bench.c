/* The notifier (<ctx/notify.h>) beside the done-fd-per-context way
 * (ctx_done_fd() of each context in one epoll set), on one loop thread.
 *
 *   notify_bench raw|ctx      prints "key value" lines, one round of one side
 *
 * watch_ns    watch + unwatch of a live context, per context (net of
 *             ctx_with_cancel + ctx_release, measured in the same run)
 * lat_p50_ns, lat_p99_ns
 *             cancel in another thread -> the loop thread's callback runs
 * cancel_ms   cancel of a parent with N watched children, until every
 *             callback has run on the loop thread (cancel + dispatch, one
 *             thread: the whole cost, no overlap); raw: N is limited by
 *             RLIMIT_NOFILE and the figure is scaled to 100,000
 * cancel_cpu_ms  the same, CPU time of that thread (what a loaded machine
 *             adds to the wall-clock figure is waiting for a CPU)
 * mem_bytes   heap bytes per watched context (glibc mallinfo2, chunk sizes,
 *             beyond the contexts themselves) plus, for the notifier, the
 *             caller's 64-byte watch
 * fds         fds per watched context
 */
#include <ctx.h>
#include <ctx/notify.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>
#include <dirent.h>
#include <time.h>

#define N_CHILDREN 100000

static bool raw;
static long runs;

static void on_done(ctx_notify_watch_t *w, ctx_t *ctx)
{
    (void)w;
    (void)ctx;
    runs++;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3;
}

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- watch + unwatch -------------------------------------------------------- */

static void bench_watch(void)
{
    enum { N = 200000 };
    ctx_t *root = ctx_with_cancel(ctx_background());
    /* baseline: the context alone */
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < N; i++)
        ctx_release(ctx_with_cancel(root));
    ctx_duration_t base = ctx_now() - t0;

    ctx_notify_t *n = ctx_notify_new();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ctx_notify_watch_t w = CTX_NOTIFY_WATCH_INIT;
    t0 = ctx_now();
    for (int i = 0; i < N; i++) {
        ctx_t *c = ctx_with_cancel(root);
        if (raw) {
            int fd = ctx_done_fd(c);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 ||
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) != 0)
                abort();
        } else {
            if (ctx_notify_watch(n, &w, c, on_done) != 0 ||
                !ctx_notify_unwatch(&w))
                abort();
        }
        ctx_release(c);
    }
    ctx_duration_t took = ctx_now() - t0;
    printf("watch_ns %.1f\n", (double)(took - base) / N);
    close(ep);
    ctx_notify_free(n);
    ctx_release(root);
}

/* ---- cancel-to-callback latency --------------------------------------------- */

static _Atomic(ctx_t *) published;
static _Atomic int canceller_done;
static _Atomic ctx_time_t cancelled_at;
static _Atomic int stop;

static void *canceller(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        ctx_t *c = atomic_load(&published);
        if (c == NULL) {
            sched_yield();
            continue;
        }
        atomic_store(&published, NULL);
        atomic_store(&cancelled_at, ctx_now());
        ctx_cancel(c); /* holds the reference the loop gave it */
        ctx_release(c);
        atomic_store(&canceller_done, 1);
    }
    return NULL;
}

static ctx_time_t called_at;
static void on_lat(ctx_notify_watch_t *w, ctx_t *ctx)
{
    (void)w;
    (void)ctx;
    called_at = ctx_now();
}

static void bench_latency(void)
{
    enum { M = 3000 };
    static int64_t lat[M];
    pthread_t t;
    pthread_create(&t, NULL, canceller, NULL);
    ctx_notify_t *n = ctx_notify_new();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (!raw)
        epoll_ctl(ep, EPOLL_CTL_ADD, ctx_notify_fd(n), &ev);
    for (int i = 0; i < M; i++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        ctx_notify_watch_t w = CTX_NOTIFY_WATCH_INIT;
        int fd = -1;
        if (raw) {
            fd = ctx_done_fd(c);
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        } else {
            ctx_notify_watch(n, &w, c, on_lat);
        }
        called_at = 0;
        atomic_store(&canceller_done, 0);
        atomic_store(&published, ctx_retain(c));
        struct epoll_event got;
        while (called_at == 0) {
            if (epoll_wait(ep, &got, 1, -1) != 1)
                continue;
            if (raw)
                called_at = ctx_now();
            else
                ctx_notify_dispatch(n);
        }
        lat[i] = called_at - atomic_load(&cancelled_at);
        if (raw)
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        while (!atomic_load(&canceller_done))
            sched_yield();
        ctx_release(c);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    qsort(lat, M, sizeof lat[0], cmp_i64);
    printf("lat_p50_ns %lld\nlat_p99_ns %lld\n", (long long)lat[M / 2],
           (long long)lat[M * 99 / 100]);
    close(ep);
    ctx_notify_free(n);
}

/* ---- 100,000 children, and memory --------------------------------------------- */

static void bench_children(void)
{
    int nchildren = N_CHILDREN;
    if (raw) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)N_CHILDREN + 100)
            nchildren = (int)rl.rlim_cur - 100;
    }
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t **c = calloc((size_t)nchildren, sizeof *c);
    ctx_notify_watch_t *w = calloc((size_t)nchildren, sizeof *w);
    ctx_notify_t *n = ctx_notify_new();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, ctx_notify_fd(n), &ev);

    for (int i = 0; i < nchildren; i++)
        c[i] = ctx_with_cancel(root);
    struct mallinfo2 m0 = mallinfo2();
    int fds0 = count_fds();
    for (int i = 0; i < nchildren; i++) {
        if (raw) {
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = c[i]};
            int fd = ctx_done_fd(c[i]);
            if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) {
                fprintf(stderr, "done fd %d: %s\n", i, strerror(errno));
                exit(2);
            }
        } else if (ctx_notify_watch(n, &w[i], c[i], on_done) != 0) {
            abort();
        }
    }
    struct mallinfo2 m1 = mallinfo2();
    int fds1 = count_fds();
    double per = (double)(m1.uordblks - m0.uordblks) / nchildren;
    if (!raw)
        per += sizeof(ctx_notify_watch_t);
    printf("mem_bytes %.1f\nfds %.2f\n", per,
           (double)(fds1 - fds0) / nchildren);

    static struct epoll_event evs[1024];
    runs = 0;
    double c0 = cpu_ms();
    ctx_time_t t0 = ctx_now();
    ctx_cancel(root);
    while (runs < nchildren) {
        int k = epoll_wait(ep, evs, 1024, -1);
        if (raw) {
            for (int j = 0; j < k; j++) {
                ctx_t *x = evs[j].data.ptr;
                epoll_ctl(ep, EPOLL_CTL_DEL, ctx_done_fd(x), NULL);
                runs++;
            }
        } else if (k > 0) {
            ctx_notify_dispatch(n);
        }
    }
    ctx_duration_t took = ctx_now() - t0;
    double cpu = cpu_ms() - c0;
    printf("cancel_ms %.2f\ncancel_cpu_ms %.2f\nchildren %d\n",
           (double)took / CTX_MILLISECOND * N_CHILDREN / nchildren,
           cpu * N_CHILDREN / nchildren, nchildren);
    for (int i = 0; i < nchildren; i++)
        ctx_release(c[i]);
    free(c);
    free(w);
    close(ep);
    ctx_notify_free(n);
    ctx_release(root);
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "raw") != 0 && strcmp(argv[1], "ctx") != 0)) {
        fprintf(stderr, "usage: notify_bench raw|ctx\n");
        return 2;
    }
    raw = strcmp(argv[1], "raw") == 0;
    bench_watch();
    bench_latency();
    bench_children();
    return 0;
}
