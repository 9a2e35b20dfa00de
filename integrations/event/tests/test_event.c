/* libctx-event against a real libevent event_base: callbacks in the base's
 * thread, cancel from other threads, deadlines, 100,000 watches, unwatch
 * inside callbacks, release of the context while watched, the base kept
 * running exactly while something is watched, and a clean teardown: no fd,
 * thread or context left over. */
#include "testutil.h"

#include <ctx/event.h>

#include <stdatomic.h>

#define MS CTX_MILLISECOND

static pthread_t loop_thread;
static struct event_base *base;
static ctx_event_t *ce;

struct rec {
    ctx_event_watch_t w;
    int runs;
    int err;
    bool wrong_thread;
    struct rec *other;
    bool other_result;
    bool self_result;
    bool free_ce; /* ctx_event_free(ce) from the callback */
};

static long total_runs;

static void on_done(ctx_event_watch_t *w, ctx_t *ctx)
{
    struct rec *r = w->data;
    r->runs++;
    total_runs++;
    r->err = ctx_err(ctx);
    if (!pthread_equal(pthread_self(), loop_thread))
        r->wrong_thread = true;
    r->self_result = ctx_event_unwatch(ce, w);
    if (r->other != NULL)
        r->other_result = ctx_event_unwatch(ce, &r->other->w);
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    r->w.data = r;
}

static int setup(void **state)
{
    loop_thread = pthread_self();
    total_runs = 0;
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer thread */
    tu_count_setup(state);
    base = event_base_new();
    assert_non_null(base);
    ce = ctx_event_new(base);
    assert_non_null(ce);
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(ctx_event_free(ce), 0);
    /* Nothing left pending: the loop returns at once (1: no events). */
    assert_int_equal(event_base_dispatch(base), 1);
    event_base_free(base);
    return tu_count_teardown(state);
}

static void on_go(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tu_event_set(&((tu_canceller_t *)arg)->go);
}

/* The canceller starts once the base is running. */
static void start_canceller(tu_canceller_t *k, ctx_t *ctx)
{
    tu_canceller_start(k, ctx);
    struct timeval zero = {0, 0};
    assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, on_go, k, &zero), 0);
}


/* ---- tests ---------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    ctx_t *c = ctx_with_cancel(ctx_background());
    errno = 0;
    assert_null(ctx_event_new(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_int_equal(ctx_event_watch(NULL, &r.w, c, on_done), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(ctx_event_watch(ce, NULL, c, on_done), -1);
    assert_int_equal(ctx_event_watch(ce, &r.w, NULL, on_done), -1);
    assert_int_equal(ctx_event_watch(ce, &r.w, c, NULL), -1);
    assert_false(ctx_event_unwatch(NULL, &r.w));
    assert_false(ctx_event_unwatch(ce, NULL));
    assert_false(ctx_event_unwatch(ce, &r.w));
    assert_int_equal(ctx_event_free(NULL), 0);

    assert_int_equal(ctx_event_watch(ce, &r.w, c, on_done), 0);
    errno = 0;
    assert_int_equal(ctx_event_watch(ce, &r.w, c, on_done), -1);
    assert_int_equal(errno, EBUSY);
    errno = 0;
    assert_int_equal(ctx_event_free(ce), -1);
    assert_int_equal(errno, EBUSY);
    assert_true(ctx_event_unwatch(ce, &r.w));
    ctx_release(c);
}

/* Pending exactly while something is watched. */
static void test_pending_while_watched(void **state)
{
    (void)state;
    assert_int_equal(event_base_dispatch(base), 1); /* nothing: returns */
    struct rec r;
    rec_init(&r);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_event_watch(ce, &r.w, c, on_done), 0);
    assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 0); /* pending */
    assert_true(ctx_event_unwatch(ce, &r.w));
    assert_int_equal(event_base_dispatch(base), 1);
    ctx_release(c);
}

static void test_cancel_other_thread(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_event_watch(ce, &r.w, c, on_done), 0);
    ctx_release(c); /* the watch keeps it alive */
    tu_canceller_t k;
    start_canceller(&k, c);
    assert_int_equal(event_base_dispatch(base), 1); /* ran out of events */
    tu_canceller_join(&k);
    assert_int_equal(r.runs, 1);
    assert_int_equal(r.err, CTX_CANCELED);
    assert_false(r.wrong_thread);
    assert_false(r.self_result);
}

static void test_deadlines(void **state)
{
    (void)state;
    enum { N = 5 };
    struct rec r[N];
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < N; i++) {
        rec_init(&r[i]);
        ctx_t *c = ctx_with_timeout(ctx_background(), (N - i) * 4 * MS);
        assert_int_equal(ctx_event_watch(ce, &r[i].w, c, on_done), 0);
        ctx_release(c);
    }
    assert_int_equal(event_base_dispatch(base), 1); /* ran out of events */
    assert_true(ctx_now() - t0 >= 20 * MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].runs, 1);
        assert_int_equal(r[i].err, CTX_DEADLINE_EXCEEDED);
        assert_false(r[i].wrong_thread);
    }
}

static void test_done_at_watch(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    ctx_t *c = ctx_with_timeout(ctx_background(), 0);
    assert_int_equal(ctx_event_watch(ce, &r.w, c, on_done), 0);
    ctx_release(c);
    assert_int_equal(r.runs, 0);
    assert_int_equal(event_base_dispatch(base), 1); /* ran out of events */
    assert_int_equal(r.runs, 1);
}

static void test_unwatch_inside(void **state)
{
    (void)state;
    ctx_t *x[3];
    struct rec r[3];
    for (int i = 0; i < 3; i++) {
        rec_init(&r[i]);
        x[i] = ctx_with_cancel(ctx_background());
        assert_int_equal(ctx_event_watch(ce, &r[i].w, x[i], on_done), 0);
    }
    r[0].other = &r[1];
    for (int i = 0; i < 3; i++) {
        ctx_cancel(x[i]);
        ctx_release(x[i]);
    }
    assert_int_equal(event_base_dispatch(base), 1); /* ran out of events */
    assert_int_equal(r[0].runs, 1);
    assert_true(r[0].other_result);
    assert_int_equal(r[1].runs, 0);
    assert_int_equal(r[2].runs, 1);
}

static void test_many(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct rec *r = calloc(N, sizeof *r);
    ctx_t *root = ctx_with_cancel(ctx_background());
    int fds = tu_open_fds();
    for (int i = 0; i < N; i++) {
        rec_init(&r[i]);
        ctx_t *c = ctx_with_cancel(root);
        assert_int_equal(ctx_event_watch(ce, &r[i].w, c, on_done), 0);
        ctx_release(c);
    }
    assert_int_equal(tu_open_fds(), fds);
    tu_canceller_t k;
    start_canceller(&k, root);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(event_base_dispatch(base), 1); /* ran out of events */
    ctx_duration_t took = ctx_now() - t0;
    tu_canceller_join(&k);
    print_message("event: 100000 callbacks in %.1f ms\n", (double)took / MS);
    assert_int_equal(total_runs, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].runs, 1);
        assert_false(r[i].wrong_thread);
    }
    free(r);
    ctx_release(root);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_bad_input),
        T(test_pending_while_watched),
        T(test_cancel_other_thread),
        T(test_deadlines),
        T(test_done_at_watch),
        T(test_unwatch_inside),
        T(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
