/* Signal contexts (ctx/sigctx.h): cancelled by a signal, promptly; the
 * disposition restored, the watcher thread and its pipe gone afterwards. */
#include "testutil.h"

#include <ctx/io.h>
#include <ctx/sigctx.h>

#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#define MS CTX_MILLISECOND

static int threads_before, fds_before;
static atomic_int prev_calls;

/* The program's own handler, which a signal context must restore. */
static void prev_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&prev_calls, 1);
}

static void install_prev(int sig)
{
    struct sigaction sa = {.sa_handler = prev_handler};
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(sig, &sa, NULL), 0);
}

static bool is_prev(int sig)
{
    struct sigaction sa;
    assert_int_equal(sigaction(sig, NULL, &sa), 0);
    return sa.sa_handler == prev_handler;
}

/* The watcher thread exits on its own when a signal ended the last signal
 * context (it cannot join itself): give it a moment to leave /proc. */
static void wait_threads(int n)
{
    ctx_time_t end = ctx_now() + CTX_SECOND;
    while (tu_threads() != n && ctx_now() < end)
        tu_sleep(MS);
    assert_int_equal(tu_threads(), n);
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&prev_calls, 0);
    threads_before = tu_threads();
    fds_before = tu_open_fds();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    wait_threads(threads_before);
    assert_int_equal(tu_open_fds(), fds_before);
    assert_true(is_prev(SIGUSR1));
    assert_true(is_prev(SIGUSR2));
    assert_int_equal(atomic_load(&prev_calls), 0);
    tu_assert_no_live();
    return 0;
}

static const int usr12[] = {SIGUSR1, SIGUSR2};

static void test_signal_cancels(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_signals(ctx_background(), usr12, 2);
    assert_non_null(c);
    ctx_t *child = ctx_with_cancel(c);
    assert_false(ctx_is_done(c));
    assert_false(is_prev(SIGUSR1)); /* the library's handler meanwhile */
    assert_int_equal(tu_threads(), threads_before + 1); /* the watcher */
    assert_int_equal(ctx_signal_caught(c), 0);

    ctx_time_t t0 = ctx_now();
    assert_int_equal(kill(getpid(), SIGUSR2), 0);
    assert_int_equal(ctx_wait_until(c, t0 + CTX_SECOND), ECANCELED);
    assert_true(ctx_now() - t0 < TU_PROMPT);
    assert_int_equal(ctx_cause(c), EINTR);
    assert_int_equal(ctx_signal_caught(c), SIGUSR2);
    assert_int_equal(ctx_wait(child), ECANCELED);
    assert_int_equal(ctx_signal_caught(child), SIGUSR2); /* descendants too */
    ctx_release(child);
    /* once done, the watch ends and the program's handler is back */
    ctx_time_t end = ctx_now() + CTX_SECOND;
    while (!is_prev(SIGUSR2) && ctx_now() < end)
        tu_sleep(MS);
    assert_true(is_prev(SIGUSR2));
    ctx_release(c);
}

struct killer {
    ctx_duration_t after;
    int sig;
};

static void *kill_main(void *arg)
{
    struct killer *k = arg;
    tu_sleep(k->after);
    kill(getpid(), k->sig);
    return NULL;
}

/* The usual shape: main blocks on the signal context's work; the signal
 * may be handled by any thread (here, maybe the blocked one). */
static void test_interrupts_blocking_call(void **state)
{
    (void)state;
    static const int usr1[] = {SIGUSR1};
    ctx_t *c = ctx_with_signals(ctx_background(), usr1, 1);
    struct killer k = {30 * MS, SIGUSR1};
    ctx_time_t t0 = ctx_now(); /* before the killer's 30 ms start */
    pthread_t t = tu_spawn(kill_main, &k);
    assert_int_equal(ctx_sleep(c, 10 * CTX_SECOND), ECANCELED);
    tu_assert_between(ctx_now() - t0, 30 * MS, 30 * MS + TU_PROMPT);
    assert_int_equal(ctx_signal_caught(c), SIGUSR1);
    pthread_join(t, NULL);
    ctx_release(c);
}

static void test_cancel_stops_watch(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_signals(ctx_background(), usr12, 2);
    assert_false(is_prev(SIGUSR1));
    ctx_cancel(c);
    /* the detached watcher leaves a moment after the last context ends */
    wait_threads(threads_before);
    assert_int_equal(tu_open_fds(), fds_before);
    assert_true(is_prev(SIGUSR1));
    assert_true(is_prev(SIGUSR2));
    assert_int_equal(ctx_signal_caught(c), 0);
    assert_int_equal(ctx_cause(c), ECANCELED);
    ctx_release(c);
}

static void test_several_contexts(void **state)
{
    (void)state;
    static const int usr1[] = {SIGUSR1};
    ctx_t *a = ctx_with_signals(ctx_background(), usr1, 1);
    ctx_t *b = ctx_with_signals(ctx_background(), usr12, 2);
    ctx_t *d = ctx_with_signals(ctx_background(), usr1, 1);
    assert_int_equal(tu_threads(), threads_before + 1); /* one watcher */
    kill(getpid(), SIGUSR2);
    assert_int_equal(ctx_wait_until(b, ctx_now() + CTX_SECOND), ECANCELED);
    assert_int_equal(ctx_signal_caught(b), SIGUSR2);
    assert_false(ctx_is_done(a));
    assert_false(ctx_is_done(d));
    /* SIGUSR2 is nobody's now; SIGUSR1 still watched by a and d */
    ctx_time_t end = ctx_now() + CTX_SECOND;
    while (!is_prev(SIGUSR2) && ctx_now() < end)
        tu_sleep(MS);
    assert_true(is_prev(SIGUSR2));
    assert_false(is_prev(SIGUSR1));
    ctx_cancel(d);
    assert_false(is_prev(SIGUSR1));
    kill(getpid(), SIGUSR1);
    assert_int_equal(ctx_wait_until(a, ctx_now() + CTX_SECOND), ECANCELED);
    assert_int_equal(ctx_signal_caught(a), SIGUSR1);
    assert_int_equal(ctx_signal_caught(d), 0); /* cancelled before */
    ctx_release(a);
    ctx_release(b);
    ctx_release(d);
}

static void test_parent(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_signals(p, usr12, 2);
    ctx_cancel(p); /* the parent's end stops the watch too */
    assert_int_equal(ctx_err(c), ECANCELED);
    wait_threads(threads_before);
    assert_true(is_prev(SIGUSR1));
    ctx_release(c);
    /* a done parent: done at birth, nothing installed, nothing left */
    c = ctx_with_signals(p, usr12, 2);
    assert_non_null(c);
    assert_int_equal(ctx_err(c), ECANCELED);
    wait_threads(threads_before);
    assert_true(is_prev(SIGUSR1));
    ctx_release(c);
    ctx_release(p);
}

static void test_bad_input(void **state)
{
    (void)state;
    static const int bad[][1] = {{0},       {-1},   {SIGKILL}, {SIGSTOP},
                                 {SIGSEGV}, {NSIG}, {1000}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        assert_null(ctx_with_signals(ctx_background(), bad[i], 1));
        assert_int_equal(errno, EINVAL);
    }
    errno = 0;
    assert_null(ctx_with_signals(NULL, usr12, 2));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_signals(ctx_background(), NULL, 2));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_signals(ctx_background(), usr12, 0));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(ctx_signal_caught(NULL), 0);
    assert_int_equal(ctx_signal_caught(ctx_background()), 0);
}

/* Many rounds of signal-or-cancel, racing: no leak, no hang. */
static void test_churn(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        ctx_t *c = ctx_with_signals(ctx_background(), usr12, 2);
        assert_non_null(c);
        if (i % 2 == 0) {
            kill(getpid(), SIGUSR1);
            assert_int_equal(ctx_wait_until(c, ctx_now() + CTX_SECOND),
                             ECANCELED);
        } else {
            ctx_cancel(c);
        }
        ctx_release(c);
    }
}

int main(void)
{
    install_prev(SIGUSR1);
    install_prev(SIGUSR2);
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_signal_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupts_blocking_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_stops_watch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_several_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_churn, setup, teardown),
    };
    return cmocka_run_group_tests_name("sigctx", tests, NULL, NULL);
}
