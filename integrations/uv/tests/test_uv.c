/* libctx-uv against a real libuv loop: callbacks on the loop thread, cancel
 * from other threads, deadlines, 100,000 watches, unwatch inside callbacks,
 * release of the context while watched, the loop kept alive exactly while
 * something is watched, and a clean teardown: uv_loop_close() == 0, no fd,
 * thread or context left over. */
#include "testutil.h"

#include <ctx/uv.h>

#include <stdatomic.h>

#define MS CTX_MILLISECOND

static pthread_t loop_thread;

struct rec {
    ctx_uv_watch_t w;
    ctx_uv_t *h;
    int runs;
    int err;
    bool wrong_thread;
    struct rec *other;
    bool other_result;
    bool self_result;
    bool close_h; /* ctx_uv_close(h) from the callback */
};

static long total_runs;
static int closed;

static void on_closed(ctx_uv_t *h)
{
    (void)h;
    closed++;
}

static void on_done(ctx_uv_watch_t *w, ctx_t *ctx)
{
    struct rec *r = w->data;
    r->runs++;
    total_runs++;
    r->err = ctx_err(ctx);
    if (!pthread_equal(pthread_self(), loop_thread))
        r->wrong_thread = true;
    r->self_result = ctx_uv_unwatch(r->h, w);
    if (r->other != NULL)
        r->other_result = ctx_uv_unwatch(r->h, &r->other->w);
    if (r->close_h)
        assert_int_equal(ctx_uv_close(r->h, on_closed), 0);
}

static void rec_init(struct rec *r, ctx_uv_t *h)
{
    memset(r, 0, sizeof *r);
    r->w.data = r;
    r->h = h;
}

static uv_loop_t loop;
static ctx_uv_t cu;

static int setup(void **state)
{
    loop_thread = pthread_self();
    total_runs = 0;
    closed = 0;
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer thread */
    tu_count_setup(state);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(ctx_uv_init(&loop, &cu), 0);
    return 0;
}

/* Closes the handle, runs the loop until every handle is closed, and checks
 * the loop closes cleanly; then the fd/thread/context counts. */
static int teardown(void **state)
{
    if (!cu.closing_)
        assert_int_equal(ctx_uv_close(&cu, on_closed), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    return tu_count_teardown(state);
}

/* A 0 ms timer, to release the canceller once the loop is running. */
static void on_go_timer(uv_timer_t *t)
{
    tu_canceller_t *k = t->data;
    tu_event_set(&k->go);
    uv_close((uv_handle_t *)t, NULL);
}

static void go_when_running(uv_timer_t *t, tu_canceller_t *k)
{
    assert_int_equal(uv_timer_init(&loop, t), 0);
    t->data = k;
    assert_int_equal(uv_timer_start(t, on_go_timer, 0, 0), 0);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r, &cu);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_uv_init(NULL, &cu), UV_EINVAL);
    assert_int_equal(ctx_uv_init(&loop, NULL), UV_EINVAL);
    assert_int_equal(ctx_uv_watch(NULL, &r.w, c, on_done), UV_EINVAL);
    assert_int_equal(ctx_uv_watch(&cu, NULL, c, on_done), UV_EINVAL);
    assert_int_equal(ctx_uv_watch(&cu, &r.w, NULL, on_done), UV_EINVAL);
    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, NULL), UV_EINVAL);
    assert_false(ctx_uv_unwatch(NULL, &r.w));
    assert_false(ctx_uv_unwatch(&cu, NULL));
    assert_false(ctx_uv_unwatch(&cu, &r.w));
    assert_int_equal(ctx_uv_close(NULL, NULL), UV_EINVAL);

    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, on_done), 0);
    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, on_done), UV_EBUSY);
    assert_int_equal(ctx_uv_close(&cu, on_closed), UV_EBUSY);
    assert_true(ctx_uv_unwatch(&cu, &r.w));
    ctx_release(c);
    assert_int_equal(ctx_uv_close(&cu, on_closed), 0);
    assert_int_equal(ctx_uv_close(&cu, on_closed), UV_EINVAL); /* closing */
    assert_int_equal(ctx_uv_watch(&cu, &r.w, ctx_background(), on_done),
                     UV_EINVAL);
}

/* Nothing watched: the handle does not keep the loop alive. */
static void test_unref_when_idle(void **state)
{
    (void)state;
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    struct rec r;
    rec_init(&r, &cu);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, on_done), 0);
    assert_true(uv_loop_alive(&loop)); /* a callback is to come */
    assert_true(ctx_uv_unwatch(&cu, &r.w));
    assert_false(uv_loop_alive(&loop));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ctx_release(c);
}

/* Cancel from another thread while uv_run() sleeps: the callback runs on
 * the loop thread, and uv_run() returns by itself once nothing is watched. */
static void test_cancel_other_thread(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r, &cu);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, on_done), 0);
    ctx_release(c); /* the watch keeps it alive */
    tu_canceller_t k;
    tu_canceller_start(&k, c);
    uv_timer_t t;
    go_when_running(&t, &k);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    tu_canceller_join(&k);
    assert_int_equal(r.runs, 1);
    assert_int_equal(r.err, CTX_CANCELED);
    assert_false(r.wrong_thread);
    assert_false(r.self_result);
}

/* Deadlines fire on the timer thread; callbacks run on the loop thread, in
 * deadline order; the loop stays alive until the last one. */
static void test_deadlines(void **state)
{
    (void)state;
    enum { N = 5 };
    struct rec r[N];
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], &cu);
        ctx_t *c = ctx_with_timeout(ctx_background(), (N - i) * 4 * MS);
        assert_int_equal(ctx_uv_watch(&cu, &r[i].w, c, on_done), 0);
        ctx_release(c);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(ctx_now() - t0 >= 20 * MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].runs, 1);
        assert_int_equal(r[i].err, CTX_DEADLINE_EXCEEDED);
        assert_false(r[i].wrong_thread);
    }
}

/* Done at watch: delivered on the next iteration, not inside the call. */
static void test_done_at_watch(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r, &cu);
    ctx_t *c = ctx_with_timeout(ctx_background(), 0);
    assert_int_equal(ctx_uv_watch(&cu, &r.w, c, on_done), 0);
    ctx_release(c);
    assert_int_equal(r.runs, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(r.runs, 1);
    assert_int_equal(r.err, CTX_DEADLINE_EXCEEDED);
}

/* Inside a callback: unwatching another queued watch prevents it, and the
 * handle may be closed from there once nothing else is watched. */
static void test_unwatch_and_close_inside(void **state)
{
    (void)state;
    ctx_t *x[3];
    struct rec r[3];
    for (int i = 0; i < 3; i++) {
        rec_init(&r[i], &cu);
        x[i] = ctx_with_cancel(ctx_background());
        assert_int_equal(ctx_uv_watch(&cu, &r[i].w, x[i], on_done), 0);
    }
    r[0].other = &r[1];
    r[2].close_h = true;
    for (int i = 0; i < 3; i++) {
        ctx_cancel(x[i]); /* in order: delivered in this order */
        ctx_release(x[i]);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(r[0].runs, 1);
    assert_true(r[0].other_result);
    assert_int_equal(r[1].runs, 0);
    assert_int_equal(r[2].runs, 1);
    assert_int_equal(closed, 1);
}

/* 100,000 watched children of one root, cancelled from another thread
 * while the loop runs: every callback on the loop thread, no fd per watch. */
static void test_many(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct rec *r = calloc(N, sizeof *r);
    ctx_t *root = ctx_with_cancel(ctx_background());
    int fds = tu_open_fds();
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], &cu);
        ctx_t *c = ctx_with_cancel(root);
        assert_int_equal(ctx_uv_watch(&cu, &r[i].w, c, on_done), 0);
        ctx_release(c);
    }
    assert_int_equal(tu_open_fds(), fds);
    tu_canceller_t k;
    tu_canceller_start(&k, root);
    uv_timer_t t;
    go_when_running(&t, &k);
    ctx_time_t t0 = ctx_now();
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ctx_duration_t took = ctx_now() - t0;
    tu_canceller_join(&k);
    print_message("uv: 100000 callbacks in %.1f ms\n", (double)took / MS);
    assert_int_equal(total_runs, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].runs, 1);
        assert_false(r[i].wrong_thread);
    }
    free(r);
    ctx_release(root);
}

/* Unwatch racing cancels from another thread: each watch is either
 * prevented (unwatch true) or delivered, never both, never neither. */
static void on_race_timer(uv_timer_t *t);
struct race {
    struct rec r[256];
    ctx_t *c[256];
    bool prevented[256];
    int next;
};

static void on_race_timer(uv_timer_t *t)
{
    struct race *rc = t->data;
    for (int i = 0; i < 16 && rc->next < 256; i++, rc->next++)
        rc->prevented[rc->next] = ctx_uv_unwatch(&cu, &rc->r[rc->next].w);
    if (rc->next == 256)
        uv_close((uv_handle_t *)t, NULL);
}

static void test_unwatch_races_cancel(void **state)
{
    (void)state;
    static struct race rc;
    memset(&rc, 0, sizeof rc);
    ctx_t *root = ctx_with_cancel(ctx_background());
    for (int i = 0; i < 256; i++) {
        rec_init(&rc.r[i], &cu);
        ctx_t *c = ctx_with_cancel(root);
        assert_int_equal(ctx_uv_watch(&cu, &rc.r[i].w, c, on_done), 0);
        ctx_release(c);
    }
    tu_canceller_t k;
    tu_canceller_start(&k, root);
    tu_event_set(&k.go);
    uv_timer_t t;
    assert_int_equal(uv_timer_init(&loop, &t), 0);
    t.data = &rc;
    assert_int_equal(uv_timer_start(&t, on_race_timer, 0, 0), 0);
    /* 16 unwatches per loop iteration while the canceller runs */
    while (rc.next < 256) {
        if (!uv_is_active((uv_handle_t *)&t))
            assert_int_equal(uv_timer_start(&t, on_race_timer, 0, 0), 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    tu_canceller_join(&k);
    for (int i = 0; i < 256; i++)
        if (rc.prevented[i] == (rc.r[i].runs == 1) || rc.r[i].runs > 1)
            fail_msg("watch %d: unwatch %d, runs %d", i, rc.prevented[i],
                     rc.r[i].runs);
    ctx_release(root);
}

/* libuv opens a process-wide signal pipe on the first uv_loop_init() and
 * keeps it: make it before any test counts fds. */
static int group_setup(void **state)
{
    (void)state;
    uv_loop_t l;
    assert_int_equal(uv_loop_init(&l), 0);
    assert_int_equal(uv_loop_close(&l), 0);
    return 0;
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_bad_input),
        T(test_unref_when_idle),
        T(test_cancel_other_thread),
        T(test_deadlines),
        T(test_done_at_watch),
        T(test_unwatch_and_close_inside),
        T(test_many),
        T(test_unwatch_races_cancel),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
