/* fd exhaustion: with RLIMIT_NOFILE lowered and every fd below it taken,
 * ctx_done_fd() fails with EMFILE (and leaks nothing, not even half of a
 * pipe), while everything else keeps working: derivations, cancel and its
 * propagation, waits, after-funcs, deadlines fired by the timer thread, even
 * the first deadline of a process (the timer thread needs no fd),
 * ctx_sleep() and ctx_cond_wait(). What needs an fd fails with its
 * documented errno and leaves nothing behind: ctx_poll() (the done fd) and
 * ctx_with_signals() (the watcher's pipe; no handler left installed). Once
 * fds are free again, ctx_done_fd() works on the same contexts. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include("ctx/io.h")
#include "ctx/io.h"
#define REL_HAVE_IO 1
#endif
#if __has_include("ctx/sigctx.h")
#include "ctx/sigctx.h"
#define REL_HAVE_SIGNAL 1
#endif
#endif

#define LIMIT 256

static int fillers[LIMIT];
static int nfillers;
static const ctx_key_t key = CTX_KEY("k");

/* Takes every fd below the limit. */
static void exhaust(void)
{
    for (;;) {
        int fd = dup(2);
        if (fd < 0) {
            REL_CHECK(errno == EMFILE, "dup: %s", strerror(errno));
            return;
        }
        REL_CHECK(nfillers < LIMIT, "the lowered limit is not applied");
        fillers[nfillers++] = fd;
    }
}

static void free_fds(int n)
{
    while (n-- > 0 && nfillers > 0)
        close(fillers[--nfillers]);
}

static bool readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    REL_CHECK(r >= 0 && !(p.revents & POLLNVAL), "poll on fd %d", fd);
    return r == 1;
}

static void expect_emfile(ctx_t *c, const char *what)
{
    errno = 0;
    int fd = ctx_done_fd(c);
    REL_CHECK(fd == -1 && (errno == EMFILE || errno == ENFILE),
              "ctx_done_fd(%s) with no fd left: %d, errno %d (%s)", what, fd,
              errno, strerror(errno));
}

static atomic_int after_runs;
static void after_fn(void *arg)
{
    REL_CHECK(ctx_is_done(arg), "after-func on a live context");
    atomic_fetch_add(&after_runs, 1);
}

static void *waiter(void *arg)
{
    return (void *)(intptr_t)ctx_wait(arg);
}


static void lower_limit(const struct rlimit *old)
{
    struct rlimit low = *old;
    low.rlim_cur = LIMIT;
    REL_CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit: %s",
              strerror(errno));
}

/* In a child that has never used a deadline: lower the limit, take every
 * fd, then make the first deadline of the process. Starting the timer
 * thread must need no fd, and the deadline must fire on time. */
static void first_deadline_at_limit(void)
{
    fflush(NULL);
    pid_t pid = fork();
    REL_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit old;
        REL_CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0, "getrlimit");
        lower_limit(&old);
        exhaust();
        ctx_time_t t0 = ctx_now();
        ctx_t *t = ctx_with_timeout(ctx_background(), 20 * CTX_MILLISECOND);
        REL_CHECK(t != NULL,
                  "the first deadline of a process fails at the fd limit: "
                  "errno %d (%s)",
                  errno, strerror(errno));
        REL_EQ(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
        ctx_duration_t took = ctx_now() - t0;
        REL_CHECK(took >= 20 * CTX_MILLISECOND && took < 2 * CTX_SECOND,
                  "a 20 ms deadline fired after %lld us",
                  (long long)took / 1000);
        /* And the next ones, through the thread now running. */
        ctx_t *t2 = ctx_with_timeout_cause(t, CTX_HOUR, 3);
        ctx_t *t3 =
            ctx_with_timeout_cause(ctx_background(), CTX_MILLISECOND, 3);
        REL_CHECK(t2 && t3, "deadline at the limit: %s", strerror(errno));
        REL_EQ(ctx_err(t2), CTX_DEADLINE_EXCEEDED); /* done parent */
        REL_EQ(ctx_wait(t3), CTX_DEADLINE_EXCEEDED);
        REL_EQ(ctx_cause(t3), 3);
        expect_emfile(t, "first deadline");
        ctx_release(t3);
        ctx_release(t2);
        ctx_release(t);
        _exit(0);
    }
    int st;
    REL_EQ(waitpid(pid, &st, 0), pid);
    REL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the first-deadline child failed (status %#x)", st);
}

#ifdef REL_HAVE_IO
/* ctx_sleep and ctx_cond_wait need no fd; ctx_poll needs the done fd. */
static void io_at_limit(ctx_t *parent)
{
    ctx_time_t t0 = ctx_now();
    REL_EQ(ctx_sleep(parent, 5 * CTX_MILLISECOND), 0);
    REL_CHECK(ctx_now() - t0 >= 5 * CTX_MILLISECOND,
              "ctx_sleep returned early");
    ctx_t *c = ctx_with_cancel(parent);
    REL_CHECK(c != NULL, "with_cancel: %s", strerror(errno));
    pthread_t th = rel_cancel_soon(c);
    t0 = ctx_now();
    REL_EQ(ctx_sleep(c, CTX_HOUR), CTX_CANCELED);
    REL_CHECK(ctx_now() - t0 < 5 * CTX_SECOND, "ctx_sleep not prompt");
    pthread_join(th, NULL);
    ctx_release(c);
    ctx_t *t = ctx_with_timeout(parent, 5 * CTX_MILLISECOND);
    REL_CHECK(t != NULL, "with_timeout: %s", strerror(errno));
    REL_EQ(ctx_sleep(t, CTX_HOUR), CTX_DEADLINE_EXCEEDED);
    ctx_release(t);

    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    c = ctx_with_cancel(parent);
    REL_CHECK(c != NULL, "with_cancel: %s", strerror(errno));
    pthread_mutex_lock(&mu);
    th = rel_cancel_soon(c);
    int e;
    do /* 0: a spurious wake-up */
        e = ctx_cond_wait(c, &cv, &mu);
    while (e == 0);
    pthread_mutex_unlock(&mu);
    REL_EQ(e, CTX_CANCELED);
    pthread_join(th, NULL);
    ctx_release(c);

    /* A fresh context has no done fd yet: ctx_poll cannot make one. */
    c = ctx_with_cancel(parent);
    REL_CHECK(c != NULL, "with_cancel: %s", strerror(errno));
    struct pollfd p = {.fd = 2, .events = POLLOUT};
    errno = 0;
    REL_EQ(ctx_poll(c, &p, 1), -1);
    REL_CHECK(errno == EMFILE, "ctx_poll at the limit: errno %d (%s)", errno,
              strerror(errno));
    REL_EQ(p.revents, 0);
    errno = 0;
    REL_EQ(ctx_wait_fd(c, 2, POLLOUT), -1);
    REL_EQ(errno, EMFILE);
    /* A done one fails at once with its err, before needing the fd. */
    REL_EQ(ctx_cancel(c), 0);
    REL_EQ(ctx_poll(c, &p, 1), -1);
    REL_EQ(errno, CTX_CANCELED);
    ctx_release(c);
}
#endif

#ifdef REL_HAVE_SIGNAL
typedef void (*handler_t)(int);
static atomic_int prog_handler_runs;
static void prog_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&prog_handler_runs, 1);
}

/* ctx_with_signals needs a pipe for its watcher: EMFILE, no handler left,
 * no fd taken (with one free, half a pipe must not stay). */
static void signals_at_limit(ctx_t *parent)
{
    static const int sigs[] = {SIGUSR1, SIGUSR2};
    struct sigaction sa = {.sa_handler = prog_handler};
    sigemptyset(&sa.sa_mask);
    REL_CHECK(sigaction(SIGUSR2, &sa, NULL) == 0, "sigaction");
    for (int free_slots = 0; free_slots < 2; free_slots++) {
        free_fds(free_slots);
        errno = 0;
        ctx_t *c = ctx_with_signals(parent, sigs, 2);
        REL_CHECK(c == NULL && errno == EMFILE,
                  "ctx_with_signals with %d fd free: %p, errno %d (%s)",
                  free_slots, (void *)c, errno, strerror(errno));
        REL_CHECK(rel_disposition(SIGUSR1) == SIG_DFL,
                  "a failed ctx_with_signals left a SIGUSR1 handler");
        REL_CHECK(rel_disposition(SIGUSR2) == prog_handler,
                  "a failed ctx_with_signals replaced the program's handler");
        if (free_slots > 0) {
            int probe = dup(2);
            REL_CHECK(probe >= 0, "ctx_with_signals leaked an fd on failure");
            close(probe);
        }
        exhaust();
    }
}

/* With fds back, signal contexts work: raise() cancels one. */
static void signals_after_limit(ctx_t *parent)
{
    static const int sigs[] = {SIGUSR1, SIGUSR2};
    ctx_t *c = ctx_with_signals(parent, sigs, 2);
    REL_CHECK(c != NULL, "ctx_with_signals: %s", strerror(errno));
    REL_CHECK(rel_disposition(SIGUSR2) != prog_handler, "not watched");
    REL_EQ(raise(SIGUSR2), 0);
    REL_EQ(ctx_wait_until(c, ctx_now() + 10 * CTX_SECOND), CTX_CANCELED);
    REL_EQ(ctx_cause(c), EINTR);
    REL_EQ(ctx_signal_caught(c), SIGUSR2);
    REL_EQ(atomic_load(&prog_handler_runs), 0);
    ctx_release(c);
    /* The watch ends in the watcher thread, a moment after. */
    for (int i = 0; i < 2000 && rel_disposition(SIGUSR2) != prog_handler; i++)
        usleep(1000);
    REL_CHECK(rel_disposition(SIGUSR2) == prog_handler, "handler not restored");
    REL_CHECK(rel_disposition(SIGUSR1) == SIG_DFL, "SIGUSR1 not restored");
    signal(SIGUSR2, SIG_DFL);
}
#endif

int main(void)
{
    /* First, before this process uses any deadline. */
    first_deadline_at_limit();

    int baseline = rel_count_fds();
    struct rlimit old;
    REL_CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0, "getrlimit");

    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t *val = ctx_with_value(root, &key, (void *)&key, NULL);
    ctx_t *dl = ctx_with_deadline(val, ctx_now() + CTX_HOUR);
    ctx_t *wo = ctx_without_cancel(dl);
    REL_CHECK(root && val && dl && wo, "setup");
    /* Start the timer thread before the limit, as a long-running program
     * would have; a second test below starts deadlines afterwards anyway. */
    ctx_t *warm = ctx_with_timeout(ctx_background(), CTX_MILLISECOND);
    REL_EQ(ctx_wait(warm), CTX_DEADLINE_EXCEEDED);
    ctx_release(warm);

    lower_limit(&old);
    exhaust();

    /* No fd left: done_fd fails on every kind, cleanly. */
    expect_emfile(root, "cancel");
    expect_emfile(val, "value");
    expect_emfile(dl, "deadline");
    expect_emfile(wo, "without_cancel (shared never-ready fd)");
    expect_emfile(ctx_background(), "background");
    expect_emfile(root, "cancel, again");

    /* One fd free: an eventfd fits, a pipe does not and must not leak its
     * first half. */
    free_fds(1);
    int fd1 = ctx_done_fd(dl);
    if (fd1 < 0) {
        REL_CHECK(errno == EMFILE || errno == ENFILE, "errno %d", errno);
        int probe = dup(2); /* the free slot is still free */
        REL_CHECK(probe >= 0, "done_fd leaked an fd on failure");
        close(probe);
    } else {
        REL_CHECK(!readable(fd1), "fd of a live context is readable");
    }
    exhaust();

    /* Everything else works. */
    ctx_t *c = ctx_with_cancel(dl);
    ctx_t *cv = ctx_with_value(c, &key, NULL, NULL);
    ctx_t *t = ctx_with_timeout(c, 5 * CTX_MILLISECOND);
    ctx_t *tc = ctx_with_timeout_cause(ctx_background(), CTX_MILLISECOND, 7);
    ctx_t *past = ctx_with_deadline(c, ctx_now() - 1);
    REL_CHECK(c && cv && t && tc && past, "derivation failed: %s",
              strerror(errno));
    REL_EQ(ctx_err(past), CTX_DEADLINE_EXCEEDED);
    expect_emfile(c, "new cancel");
    expect_emfile(past, "done at birth");

    /* Timers fire. */
    REL_EQ(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    REL_EQ(ctx_wait_until(tc, ctx_now() + 10 * CTX_SECOND),
           CTX_DEADLINE_EXCEEDED);
    REL_EQ(ctx_cause(tc), 7);
    REL_EQ(ctx_wait_until(c, ctx_now() + CTX_MILLISECOND), 0);

    /* After-funcs: on a live context, on a done one, from the timer. */
    ctx_t *t2 = ctx_with_timeout(root, 2 * CTX_MILLISECOND);
    REL_CHECK(t2 != NULL, "with_timeout: %s", strerror(errno));
    ctx_after_t *r1 = ctx_after_func(cv, after_fn, cv);
    ctx_after_t *r2 = ctx_after_func(past, after_fn, past);
    ctx_after_t *r3 = ctx_after_func(t2, after_fn, t2);
    REL_CHECK(r1 && r2 && r3, "after_func: %s", strerror(errno));
    REL_EQ(atomic_load(&after_runs), 1);
    REL_EQ(ctx_wait(t2), CTX_DEADLINE_EXCEEDED);

    /* Cancel propagates and wakes a blocked waiter. */
    pthread_t th;
    REL_EQ(pthread_create(&th, NULL, waiter, cv), 0);
    usleep(2000);
    REL_EQ(ctx_cancel_cause(c, 99), 0);
    void *res;
    pthread_join(th, &res);
    REL_EQ((intptr_t)res, CTX_CANCELED);
    REL_EQ(ctx_cause(cv), 99);
    REL_CHECK(!ctx_after_stop(r1), "r1 ran");
    REL_CHECK(!ctx_after_stop(r2), "r2 ran");
    REL_CHECK(!ctx_after_stop(r3), "r3 ran");
    REL_EQ(atomic_load(&after_runs), 3);
    REL_CHECK(!ctx_is_done(dl), "cancel went up the tree");
    expect_emfile(c, "cancelled");

#ifdef REL_HAVE_IO
    io_at_limit(dl);
#endif
#ifdef REL_HAVE_SIGNAL
    signals_at_limit(dl);
#endif

    /* Fds back: the same contexts now give fds, ready iff done. */
    free_fds(2);
    int fc = ctx_done_fd(c);
    REL_CHECK(fc >= 0, "done_fd after fds came back: %s", strerror(errno));
    REL_CHECK(readable(fc), "fd of a cancelled context not readable");
    REL_EQ(ctx_done_fd(cv), fc); /* shared with its cancellable source */
    free_fds(LIMIT);
    int fr = ctx_done_fd(root);
    int fw = ctx_done_fd(wo);
    REL_CHECK(fr >= 0 && fw >= 0, "done_fd: %s", strerror(errno));
    REL_CHECK(!readable(fr) && !readable(fw), "live fd readable");
    REL_EQ(ctx_cancel(root), 0);
    REL_CHECK(readable(fr), "fd not readable after cancel");
    REL_CHECK(!readable(fw), "without_cancel's fd readable");

    REL_CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0, "restore rlimit");
#ifdef REL_HAVE_SIGNAL
    signals_after_limit(ctx_background());
#endif
    ctx_t *all[] = {cv, t, tc, past, t2, c, wo, dl, val, root};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ctx_release(all[i]);
#ifdef CTX_DEBUG
    for (int i = 0; i < 1000 && ctx__live_contexts() != 0; i++)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
#endif
    /* The never-ready fd is shared and kept (with its pipe's write end in
     * the fallback build); the others are closed. */
    int after = rel_count_fds();
    /* (a signal context's watcher closes its pipe a moment after it ends) */
    for (int i = 0; i < 2000 && after > baseline + 2; i++) {
        usleep(1000);
        after = rel_count_fds();
    }
    REL_CHECK(after >= baseline && after <= baseline + 2,
              "fd leak: %d before, %d after", baseline, after);
    printf("rel_fdlimit: done_fd, ctx_poll and ctx_with_signals fail with "
           "EMFILE at the limit, leaving nothing behind; cancel, waits, "
           "after-funcs, timers (even the first deadline of a process), "
           "ctx_sleep and ctx_cond_wait unaffected\n");
    return 0;
}
