/* The notifier: callbacks on the dispatching thread, one fd, unwatch races. */
#include "testutil.h"

#include <ctx/notify.h>

#include <poll.h>

static int hits;
static void on_done(ctx_notify_watch_t *w, ctx_t *ctx)
{
    (void)w;
    (void)ctx;
    hits++;
}

static void test_basic(void **state)
{
    (void)state;
    ctx_notify_t *n = ctx_notify_new();
    assert_non_null(n);
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_notify_watch_t w = CTX_NOTIFY_WATCH_INIT;
    assert_int_equal(ctx_notify_watch(n, &w, c, on_done), 0);
    ctx_cancel(c);
    ctx_release(c);
    struct pollfd p = {ctx_notify_fd(n), POLLIN, 0};
    assert_int_equal(poll(&p, 1, 1000), 1);
    assert_int_equal(ctx_notify_dispatch(n), 1);
    assert_int_equal(ctx_notify_free(n), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basic, tu_count_setup, tu_count_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
