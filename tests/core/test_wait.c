/* Waiting for done: ctx_wait, ctx_wait_until and the done fd (Go's Done
 * channel: closed once, stays closed; nil for a context that is never done). */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Upper bound for "returned at `until`" on a loaded machine. */
#define LATE (250 * CTX_MILLISECOND * TU_SLOW)

static const ctx_key_t key = CTX_KEY("key");

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r == 1 && !(p.revents & POLLIN))
        return -2;
    return r;
}

static bool fd_valid(int fd)
{
    return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

/* A thread that waits (or polls) and records when and how it returned. */
struct waiter {
    ctx_t *ctx;
    enum { W_WAIT, W_UNTIL_MAX, W_UNTIL, W_POLL } how;
    ctx_time_t until;
    _Atomic long tid;
    int result;
    ctx_time_t returned_at;
    pthread_t th;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->tid, tu_gettid());
    switch (w->how) {
    case W_WAIT:
        w->result = ctx_wait(w->ctx);
        break;
    case W_UNTIL_MAX:
        w->result = ctx_wait_until(w->ctx, CTX_TIME_MAX);
        break;
    case W_UNTIL:
        w->result = ctx_wait_until(w->ctx, w->until);
        break;
    case W_POLL:
        w->result = readable(ctx_done_fd(w->ctx), 30 * 1000);
        break;
    }
    w->returned_at = ctx_now();
    return NULL;
}

static void start_waiter(struct waiter *w)
{
    atomic_init(&w->tid, 0);
    w->result = -100;
    w->returned_at = 0;
    w->th = tu_spawn(waiter_main, w);
    while (atomic_load(&w->tid) == 0)
        sched_yield();
    /* It is asleep in the kernel: the wake-up is what is being tested. */
    assert_true(tu_wait_blocked(atomic_load(&w->tid), 10 * CTX_SECOND));
}

/* The never-done fd is made once and kept: make it before any fd count. */
static int setup(void **state)
{
    (void)state;
    return ctx_done_fd(ctx_background()) >= 0 ? 0 : -1;
}

/* A waiter in another thread is woken promptly by cancel, through the
 * context itself and through a value child. */
static void test_wait_woken_by_cancel(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &key, NULL, NULL);
    struct waiter w1 = {.ctx = c, .how = W_WAIT};
    struct waiter w2 = {.ctx = v, .how = W_WAIT};
    start_waiter(&w1);
    start_waiter(&w2);
    assert_int_equal(w1.returned_at, 0);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_cancel_cause(c, EPIPE), 0);
    tu_join_within(w1.th, 10 * CTX_SECOND);
    tu_join_within(w2.th, 10 * CTX_SECOND);
    assert_int_equal(w1.result, CTX_CANCELED); /* the err, not the cause */
    assert_int_equal(w2.result, CTX_CANCELED);
    tu_assert_between(w1.returned_at - t0, 0, TU_PROMPT);
    tu_assert_between(w2.returned_at - t0, 0, TU_PROMPT);
    ctx_release(v);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* ctx_wait returns the err: CTX_CANCELED or CTX_DEADLINE_EXCEEDED, never the
 * cause; at once on a done context. */
static void test_wait_returns_err(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(c, EIO);
    assert_int_equal(ctx_wait(c), CTX_CANCELED);
    assert_int_equal(ctx_wait_until(c, CTX_TIME_MAX), CTX_CANCELED);
    assert_int_equal(ctx_wait_until(c, 0), CTX_CANCELED);

    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout_cause(ctx_background(), 20 * CTX_MILLISECOND,
                                      ENOSPC);
    ctx_t *tv = ctx_with_value(t, &key, NULL, NULL);
    ctx_t *tc = ctx_with_cancel(tv);
    assert_int_equal(ctx_wait(tc), CTX_DEADLINE_EXCEEDED);
    ctx_time_t dl;
    assert_true(ctx_deadline(t, &dl));
    assert_true(ctx_now() >= dl); /* never early */
    tu_assert_between(ctx_now() - t0, 20 * CTX_MILLISECOND,
                      20 * CTX_MILLISECOND + LATE);
    assert_int_equal(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_wait(tv), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_cause(tc), ENOSPC);

    /* Cancelled before its deadline: CTX_CANCELED. */
    ctx_t *t2 = ctx_with_timeout(ctx_background(), CTX_HOUR);
    ctx_cancel(t2);
    assert_int_equal(ctx_wait(t2), CTX_CANCELED);
    /* Done at birth. */
    ctx_t *t3 = ctx_with_timeout(ctx_background(), -CTX_SECOND);
    assert_int_equal(ctx_wait(t3), CTX_DEADLINE_EXCEEDED);

    ctx_release(t3);
    ctx_release(t2);
    ctx_release(tc);
    ctx_release(tv);
    ctx_release(t);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* ctx_wait_until on a live context returns 0 at `until`, not before. */
static void test_wait_until_live_returns_at_until(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_timeout(p, CTX_HOUR);
    ctx_t *v = ctx_with_value(c, &key, NULL, NULL);
    ctx_t *all[] = {p, c, v};
    for (int i = 0; i < 3; i++) {
        const ctx_duration_t d = 30 * CTX_MILLISECOND;
        ctx_time_t until = ctx_now() + d;
        assert_int_equal(ctx_wait_until(all[i], until), 0);
        ctx_time_t now = ctx_now();
        assert_true(now >= until);
        tu_assert_between(now - until, 0, LATE);
        assert_false(ctx_is_done(all[i]));
    }
    ctx_cancel(p);
    ctx_release(v);
    ctx_release(c);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* On contexts that are never done it sleeps until `until`. */
static void test_wait_until_never_done(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *w = ctx_without_cancel(p);
    ctx_cancel(p); /* does not reach w */
    ctx_t *never[] = {ctx_background(), ctx_todo(), w};
    for (int i = 0; i < 3; i++) {
        const ctx_duration_t d = 25 * CTX_MILLISECOND;
        ctx_time_t until = ctx_now() + d;
        assert_int_equal(ctx_wait_until(never[i], until), 0);
        ctx_time_t now = ctx_now();
        assert_true(now >= until);
        tu_assert_between(now - until, 0, LATE);
    }
    ctx_release(w);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* An `until` in the past returns at once, done or not. */
static void test_wait_until_past(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *w = ctx_without_cancel(c);
    ctx_t *list[] = {c, w, ctx_background()};
    const ctx_time_t past[] = {0, 1, ctx_now() - CTX_SECOND, ctx_now()};
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            assert_int_equal(ctx_wait_until(list[i], past[j]), 0);
    tu_assert_between(ctx_now() - t0, 0, TU_PROMPT);
    ctx_cancel(c);
    for (int j = 0; j < 4; j++)
        assert_int_equal(ctx_wait_until(c, past[j]), CTX_CANCELED);
    ctx_release(w);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* Negative times are times too: long past. */
static void test_wait_until_negative(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *w = ctx_without_cancel(c);
    ctx_t *list[] = {c, w, ctx_background()};
    const ctx_time_t past[] = {-1, -CTX_SECOND - 1, INT64_MIN};
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            assert_int_equal(ctx_wait_until(list[i], past[j]), 0);
    tu_assert_between(ctx_now() - t0, 0, TU_PROMPT);
    ctx_cancel(c);
    for (int j = 0; j < 3; j++)
        assert_int_equal(ctx_wait_until(c, past[j]), CTX_CANCELED);
    ctx_release(w);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* wait_until with a far `until` returns the err as soon as the context is
 * done (deadline from the timer thread, cancel from another thread). */
static void test_wait_until_woken_before_until(void **state)
{
    (void)state;
    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout(ctx_background(), 30 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait_until(t, ctx_now() + 20 * CTX_SECOND),
                     CTX_DEADLINE_EXCEEDED);
    tu_assert_between(ctx_now() - t0, 30 * CTX_MILLISECOND,
                      30 * CTX_MILLISECOND + LATE);

    ctx_t *c = ctx_with_cancel(ctx_background());
    struct waiter w = {.ctx = c, .how = W_UNTIL,
                       .until = ctx_now() + 20 * CTX_SECOND};
    start_waiter(&w);
    ctx_time_t t1 = ctx_now();
    ctx_cancel(c);
    tu_join_within(w.th, 10 * CTX_SECOND);
    assert_int_equal(w.result, CTX_CANCELED);
    tu_assert_between(w.returned_at - t1, 0, TU_PROMPT);
    ctx_release(c);
    ctx_release(t);
    tu_settle();
    tu_assert_no_live();
}

/* Many waiters of every kind on one context are all woken by one cancel. */
#define NWAITERS 12

static void test_many_waiters(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &key, NULL, NULL);
    static struct waiter ws[NWAITERS];
    for (int i = 0; i < NWAITERS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].ctx = i % 2 ? v : c;
        ws[i].how = i % 4 == 0   ? W_WAIT
                    : i % 4 == 1 ? W_UNTIL_MAX
                    : i % 4 == 2 ? W_UNTIL
                                 : W_POLL;
        ws[i].until = ctx_now() + 60 * CTX_SECOND;
        start_waiter(&ws[i]);
    }
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_cancel(c), 0);
    for (int i = 0; i < NWAITERS; i++) {
        tu_join_within(ws[i].th, 10 * CTX_SECOND);
        if (ws[i].how == W_POLL)
            assert_int_equal(ws[i].result, 1);
        else
            assert_int_equal(ws[i].result, CTX_CANCELED);
        tu_assert_between(ws[i].returned_at - t0, 0, 2 * TU_PROMPT);
    }
    ctx_release(v);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* The done fd is made lazily, once, and closed when the context is freed. */
static void test_done_fd_lazy_and_closed(void **state)
{
    (void)state;
    int base = tu_open_fds();
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *t = ctx_with_timeout(c, CTX_HOUR);
    ctx_t *v = ctx_with_value(t, &key, NULL, NULL);
    ctx_cancel(t); /* cancel alone makes no fd either */
    assert_int_equal(tu_open_fds(), base);

    int fd = ctx_done_fd(c);
    assert_true(fd_valid(fd));
    int with_one = tu_open_fds();
    tu_assert_between(with_one, base + 1, base + 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ctx_done_fd(c), fd);
    assert_int_equal(tu_open_fds(), with_one);

    /* A value child shares its cancellable ancestor's fd. */
    int tfd = ctx_done_fd(t);
    assert_true(fd_valid(tfd));
    assert_int_not_equal(tfd, fd);
    assert_int_equal(ctx_done_fd(v), tfd);
    int with_two = tu_open_fds();
    assert_int_equal(with_two - with_one, with_one - base);

    /* t's fd lives while v (which holds t) lives. */
    ctx_release(t);
    assert_int_equal(ctx_done_fd(v), tfd);
    assert_int_equal(tu_open_fds(), with_two);
    assert_int_equal(readable(tfd, 0), 1);
    ctx_release(v);
    assert_int_equal(tu_open_fds(), with_one);

    ctx_cancel(c);
    assert_int_equal(readable(fd, 0), 1);
    ctx_release(c);
    assert_int_equal(tu_open_fds(), base);
    tu_settle();
    tu_assert_no_live();

    /* A context that never asked for one never opens one, even when it is
     * cancelled, times out, or has after-funcs and waiters. */
    ctx_t *x = ctx_with_timeout(ctx_background(), CTX_MILLISECOND);
    assert_int_equal(ctx_wait(x), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(tu_open_fds(), base);
    ctx_release(x);
    assert_int_equal(tu_open_fds(), base);
    tu_settle();
    tu_assert_no_live();
}

/* Not readable before done; readable after, and it stays readable (level
 * triggered) through any number of polls, from poll, select-style timeouts
 * and epoll. */
static void test_done_fd_level_triggered(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    int fd = ctx_done_fd(c);
    assert_true(fd_valid(fd));
    assert_int_equal(readable(fd, 0), 0);
    assert_int_equal(readable(fd, 10), 0);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    assert_true(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data = {.u32 = 77}};
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    struct epoll_event out;
    assert_int_equal(epoll_wait(ep, &out, 1, 0), 0);

    ctx_cancel(c);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(readable(fd, 0), 1);
        assert_int_equal(readable(fd, 1000), 1);
        assert_int_equal(epoll_wait(ep, &out, 1, 1000), 1);
        assert_int_equal(out.data.u32, 77);
        assert_true(out.events & EPOLLIN);
    }
    /* Cancelling again changes nothing. */
    ctx_cancel(c);
    assert_int_equal(readable(fd, 0), 1);
    close(ep);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* A context done before its fd was made gets a readable fd. */
static void test_done_fd_made_after_done(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel(c);
    ctx_t *birth = ctx_with_timeout(ctx_background(), 0);
    ctx_t *child = ctx_with_cancel(c); /* done at birth via its parent */
    ctx_t *v = ctx_with_value(birth, &key, NULL, NULL);
    ctx_t *t = ctx_with_timeout(ctx_background(), CTX_MILLISECOND);
    assert_int_equal(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    ctx_t *all[] = {c, birth, child, v, t};
    for (int i = 0; i < 5; i++) {
        int fd = ctx_done_fd(all[i]);
        assert_true(fd_valid(fd));
        assert_int_equal(readable(fd, 0), 1);
        assert_int_equal(readable(fd, 0), 1);
    }
    for (int i = 4; i >= 0; i--)
        ctx_release(all[i]);
    tu_settle();
    tu_assert_no_live();
}

/* poll() on the fd is woken by the deadline, not before it. */
static void test_done_fd_wakes_poll_on_deadline(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_timeout(ctx_background(), 40 * CTX_MILLISECOND);
    ctx_t *c = ctx_with_cancel(p); /* inherits the deadline */
    ctx_time_t dl;
    assert_true(ctx_deadline(c, &dl));
    int fd = ctx_done_fd(c);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(readable(fd, 20 * 1000), 1);
    ctx_time_t now = ctx_now();
    assert_true(now >= dl);
    tu_assert_between(now - t0, 0, 40 * CTX_MILLISECOND + LATE);
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(readable(fd, 0), 1);
    ctx_release(c);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* poll() in another thread is woken promptly by a cancel. */
static void test_done_fd_wakes_poll_on_cancel(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &key, NULL, NULL);
    struct waiter w = {.ctx = v, .how = W_POLL};
    start_waiter(&w);
    ctx_time_t t0 = ctx_now();
    ctx_cancel(c);
    tu_join_within(w.th, 10 * CTX_SECOND);
    assert_int_equal(w.result, 1);
    tu_assert_between(w.returned_at - t0, 0, TU_PROMPT);
    ctx_release(v);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* Never-done contexts: a valid fd that is never readable and never closed;
 * without_cancel does not share its parent's fd. */
static void test_done_fd_never_done(void **state)
{
    (void)state;
    int base = tu_open_fds();
    ctx_t *p = ctx_with_cancel(ctx_background());
    int pfd = ctx_done_fd(p);
    ctx_t *w = ctx_without_cancel(p);
    ctx_t *wv = ctx_with_value(w, &key, NULL, NULL);
    ctx_t *never[] = {ctx_background(), ctx_todo(), w, wv};
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = ctx_done_fd(never[i]);
        assert_true(fd_valid(fds[i]));
        assert_int_not_equal(fds[i], pfd);
        assert_int_equal(readable(fds[i], 0), 0);
        assert_int_equal(ctx_done_fd(never[i]), fds[i]);
    }
    ctx_cancel(p);
    assert_int_equal(readable(pfd, 0), 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(readable(fds[i], i == 0 ? 30 : 0), 0);
    ctx_release(wv);
    ctx_release(w);
    ctx_release(p);
    ctx_release(ctx_background()); /* a no-op */
    assert_int_equal(tu_open_fds(), base);
    for (int i = 0; i < 4; i++) {
        assert_true(fd_valid(fds[i])); /* never closed */
        assert_int_equal(readable(fds[i], 0), 0);
    }
    tu_settle();
    tu_assert_no_live();
}

/* A child cancelled by its parent signals its own fd. */
static void test_done_fd_child_cancelled_by_parent(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c1 = ctx_with_cancel(p);
    ctx_t *v1 = ctx_with_value(c1, &key, NULL, NULL);
    ctx_t *c2 = ctx_with_timeout(v1, CTX_HOUR);
    ctx_release(v1); /* c2 holds it */
    int f1 = ctx_done_fd(c1), f2 = ctx_done_fd(c2);
    assert_int_not_equal(f1, f2);
    assert_int_equal(readable(f1, 0), 0);
    assert_int_equal(readable(f2, 0), 0);
    ctx_cancel(p);
    assert_int_equal(readable(f1, 0), 1);
    assert_int_equal(readable(f2, 0), 1);
    assert_int_equal(ctx_err(c2), CTX_CANCELED);
    ctx_release(c2);
    ctx_release(c1);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* Bad input. */
static void test_null(void **state)
{
    (void)state;
    errno = 0;
    assert_int_equal(ctx_done_fd(NULL), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(ctx_wait(NULL), EINVAL);
    assert_int_equal(ctx_wait_until(NULL, 0), EINVAL);
    assert_int_equal(ctx_wait_until(NULL, CTX_TIME_MAX), EINVAL);
    tu_settle();
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_woken_by_cancel),
        cmocka_unit_test(test_wait_returns_err),
        cmocka_unit_test(test_wait_until_live_returns_at_until),
        cmocka_unit_test(test_wait_until_never_done),
        cmocka_unit_test(test_wait_until_past),
        cmocka_unit_test(test_wait_until_negative),
        cmocka_unit_test(test_wait_until_woken_before_until),
        cmocka_unit_test(test_many_waiters),
        cmocka_unit_test(test_done_fd_lazy_and_closed),
        cmocka_unit_test(test_done_fd_level_triggered),
        cmocka_unit_test(test_done_fd_made_after_done),
        cmocka_unit_test(test_done_fd_wakes_poll_on_deadline),
        cmocka_unit_test(test_done_fd_wakes_poll_on_cancel),
        cmocka_unit_test(test_done_fd_never_done),
        cmocka_unit_test(test_done_fd_child_cancelled_by_parent),
        cmocka_unit_test(test_null),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
