/* Thread groups (ctx/group.h): errgroup semantics, the limit, and no thread
 * left behind. */
#include "testutil.h"

#include <ctx/group.h>
#include <ctx/io.h>

#include <stdatomic.h>

#define MS CTX_MILLISECOND





static atomic_int calls, running, max_running;

static int count_fn(ctx_t *ctx, void *arg)
{
    (void)arg;
    assert_non_null(ctx);
    int now = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&max_running);
    while (now > m && !atomic_compare_exchange_weak(&max_running, &m, now))
        ;
    ctx_sleep(ctx, 15 * MS);
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&calls, 1);
    return 0;
}

static void reset_counts(void)
{
    atomic_store(&calls, 0);
    atomic_store(&running, 0);
    atomic_store(&max_running, 0);
}

static void test_all_succeed(void **state)
{
    (void)state;
    reset_counts();
    ctx_group_t *g = ctx_group_new(ctx_background(), 0);
    assert_non_null(g);
    ctx_t *gc = ctx_group_ctx(g);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ctx_group_go(g, count_fn, NULL), 0);
    assert_true(tu_threads() >= tu_threads_before + 1);
    assert_int_equal(ctx_group_wait(g), 0);
    assert_int_equal(atomic_load(&calls), 5);
    assert_int_equal(ctx_group_running(g), 0);
    /* every thread joined by the time wait returns */
    assert_int_equal(tu_settled_threads(tu_threads_before), tu_threads_before);
    /* like errgroup, the context is cancelled once Wait returns */
    assert_int_equal(ctx_err(gc), ECANCELED);
    assert_int_equal(ctx_cause(gc), ECANCELED);
    ctx_group_free(g);
}

static int fail_fn(ctx_t *ctx, void *arg)
{
    ctx_sleep(ctx, 20 * MS);
    return (int)(intptr_t)arg;
}

static atomic_int stopped_err;

static int wait_fn(ctx_t *ctx, void *arg)
{
    (void)arg;
    int err = ctx_sleep(ctx, 10 * CTX_SECOND);
    atomic_store(&stopped_err, err);
    return err;
}

static void test_first_error_cancels(void **state)
{
    (void)state;
    ctx_group_t *g = ctx_group_new(ctx_background(), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ctx_group_go(g, wait_fn, NULL), 0);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_group_go(g, fail_fn, (void *)(intptr_t)EIO), 0);
    /* the first error wins over the ECANCELED of the others */
    assert_int_equal(ctx_group_wait(g), EIO);
    tu_assert_between(ctx_now() - t0, 20 * MS, 20 * MS + TU_PROMPT);
    assert_int_equal(atomic_load(&stopped_err), ECANCELED);
    assert_int_equal(ctx_err(ctx_group_ctx(g)), ECANCELED);
    assert_int_equal(ctx_cause(ctx_group_ctx(g)), EIO);
    assert_int_equal(tu_settled_threads(tu_threads_before), tu_threads_before);
    ctx_group_free(g);
}

static void test_limit(void **state)
{
    (void)state;
    reset_counts();
    ctx_group_t *g = ctx_group_new(ctx_background(), 2);
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < 6; i++)
        assert_int_equal(ctx_group_go(g, count_fn, NULL), 0);
    /* the last go waited for a slot: two are running, and no more */
    assert_true(ctx_group_running(g) <= 2);
    assert_int_equal(ctx_group_try_go(g, count_fn, NULL), EAGAIN);
    assert_int_equal(ctx_group_wait(g), 0);
    /* 3 rounds of 15 ms, two at a time */
    assert_true(ctx_now() - t0 >= 45 * MS);
    assert_int_equal(atomic_load(&calls), 6);
    assert_int_equal(atomic_load(&max_running), 2);
    /* threads are reaped as they finish: never more than limit + 1 */
    assert_int_equal(tu_settled_threads(tu_threads_before), tu_threads_before);
    assert_int_equal(ctx_group_try_go(g, count_fn, NULL), 0);
    assert_int_equal(ctx_group_wait(g), 0);
    ctx_group_free(g);
}

static int nested_fn(ctx_t *ctx, void *arg)
{
    ctx_group_t *g = arg;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ctx_group_go(g, count_fn, NULL), 0);
    return 0;
}

static void test_nested_and_parent(void **state)
{
    (void)state;
    reset_counts();
    ctx_t *parent = ctx_with_cancel(ctx_background());
    ctx_group_t *g = ctx_group_new(parent, 0);
    assert_int_equal(ctx_group_go(g, nested_fn, g), 0);
    assert_int_equal(ctx_group_wait(g), 0);
    assert_int_equal(atomic_load(&calls), 3);
    ctx_group_free(g);

    /* the parent's cancellation reaches the functions */
    g = ctx_group_new(parent, 0);
    atomic_store(&stopped_err, 0);
    assert_int_equal(ctx_group_go(g, wait_fn, NULL), 0);
    tu_sleep(10 * MS);
    ctx_time_t t0 = ctx_now();
    ctx_cancel(parent);
    assert_int_equal(ctx_group_wait(g), ECANCELED);
    assert_true(ctx_now() - t0 < TU_PROMPT);
    ctx_group_free(g);
    ctx_release(parent);
}

static void test_free_waits(void **state)
{
    (void)state;
    reset_counts();
    ctx_group_t *g = ctx_group_new(ctx_background(), 0);
    assert_int_equal(ctx_group_go(g, count_fn, NULL), 0);
    ctx_group_free(g); /* joins first: no thread left behind */
    assert_int_equal(atomic_load(&calls), 1);
    assert_int_equal(tu_settled_threads(tu_threads_before), tu_threads_before);
}

static void test_bad_input(void **state)
{
    (void)state;
    errno = 0;
    assert_null(ctx_group_new(NULL, 0));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(ctx_group_go(NULL, count_fn, NULL), EINVAL);
    assert_int_equal(ctx_group_try_go(NULL, count_fn, NULL), EINVAL);
    assert_int_equal(ctx_group_wait(NULL), EINVAL);
    assert_null(ctx_group_ctx(NULL));
    assert_int_equal(ctx_group_running(NULL), 0);
    ctx_group_free(NULL);
    ctx_group_t *g = ctx_group_new(ctx_background(), 0);
    assert_int_equal(ctx_group_go(g, NULL, NULL), EINVAL);
    ctx_group_free(g);
}

/* ---- members that never return (issue 9) ---------------------------------
 * A member that calls pthread_exit(), or is cancelled with pthread_cancel()
 * in a cancellation point, counts as finished (without an error): the
 * group's wait used to hang for ever on it. */

static _Atomic(pthread_t) blocked_member;
static atomic_int blocked_ready;

static int exit_fn(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    pthread_exit(NULL);
}

static int blocked_fn(ctx_t *ctx, void *arg)
{
    (void)arg;
    atomic_store(&blocked_member, pthread_self());
    atomic_store(&blocked_ready, 1);
    return ctx_sleep(ctx, 3600 * CTX_SECOND); /* a cancellation point */
}

struct group_waiter {
    ctx_group_t *g;
    int ret;
};

static void *group_wait_main(void *arg)
{
    struct group_waiter *w = arg;
    w->ret = ctx_group_wait(w->g);
    return NULL;
}

static void test_member_pthread_exit(void **state)
{
    (void)state;
    ctx_group_t *g = ctx_group_new(ctx_background(), 0);
    assert_non_null(g);
    assert_int_equal(ctx_group_go(g, exit_fn, NULL), 0);
    assert_int_equal(ctx_group_go(g, count_fn, NULL), 0);
    assert_int_equal(ctx_group_go(g, blocked_fn, NULL), 0);
    while (!atomic_load(&blocked_ready))
        tu_sleep(CTX_MILLISECOND / 2);
    assert_int_equal(pthread_cancel(atomic_load(&blocked_member)), 0);
    struct group_waiter w = {g, -1};
    pthread_t t = tu_spawn(group_wait_main, &w);
    tu_join_within(t, 10 * CTX_SECOND); /* fails instead of hanging */
    assert_int_equal(w.ret, 0);
    assert_int_equal(ctx_group_running(g), 0);
    assert_false(ctx_cause(ctx_group_ctx(g)) != 0 &&
                 ctx_cause(ctx_group_ctx(g)) != ECANCELED);
    ctx_group_free(g);
}

int main(void)
{
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_succeed, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_first_error_cancels, tu_count_setup,
                                        tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_limit, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_nested_and_parent, tu_count_setup,
                                        tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_free_waits, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_member_pthread_exit, tu_count_setup, tu_count_teardown),
    };
    return cmocka_run_group_tests_name("group", tests, NULL, NULL);
}
