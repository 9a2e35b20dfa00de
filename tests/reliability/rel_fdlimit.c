/* fd exhaustion: with RLIMIT_NOFILE lowered and every fd below it taken,
 * ctx_done_fd() fails with EMFILE (and leaks nothing, not even half of a
 * pipe), while everything else keeps working: derivations, cancel and its
 * propagation, waits, after-funcs, deadlines fired by the timer thread. Once
 * fds are free again, ctx_done_fd() works on the same contexts. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <unistd.h>

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

int main(void)
{
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

    struct rlimit low = old;
    low.rlim_cur = LIMIT;
    REL_CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit: %s",
              strerror(errno));
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
    REL_CHECK(after >= baseline && after <= baseline + 2,
              "fd leak: %d before, %d after", baseline, after);
    printf("rel_fdlimit: done_fd fails with EMFILE at the limit; cancel, "
           "waits, after-funcs and timers unaffected\n");
    return 0;
}
