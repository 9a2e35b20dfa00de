/* libctx-glib against a real GMainContext: context sources dispatch on the
 * loop's thread when their context is cancelled in another thread or at its
 * deadline; 100,000 sources share one fd; a source destroyed first never
 * dispatches; the GCancellable bridges both ways, including already-done
 * and already-cancelled starts, finalization before the end, and handlers
 * that never run in the cancelling thread. fds and contexts are counted
 * around every test. */
#include "testutil.h"

#include <ctx/glib.h>

#include <stdatomic.h>

#define MS CTX_MILLISECOND

/* ---- context sources ------------------------------------------------------ */

struct hit {
    int runs;
    int err;
    pthread_t thread;
};

static int total_runs;

static gboolean on_ctx_done(ctx_t *ctx, gpointer data)
{
    struct hit *h = data;
    total_runs++;
    h->runs++;
    h->err = ctx_err(ctx);
    h->thread = pthread_self();
    return G_SOURCE_REMOVE;
}

static GSource *attach(GMainContext *mc, ctx_t *ctx, struct hit *h)
{
    GSource *s = ctx_glib_source_new(ctx);
    assert_non_null(s);
    g_source_set_callback(s, G_SOURCE_FUNC(on_ctx_done), h, NULL);
    g_source_attach(s, mc);
    return s;
}

/* Iterates mc until *done or the bound passes; fails on the bound. */
static void iterate_until(GMainContext *mc, const int *runs, int want)
{
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
    while (*runs < want) {
        assert_true(ctx_now() < end);
        g_main_context_iteration(mc, TRUE);
    }
}

static void *cancel_later(void *arg)
{
    /* Cancels while the loop thread iterates (or blocks in poll). */
    ctx_t *c = arg;
    ctx_cancel(c);
    return NULL;
}

static void test_source_cancel_from_thread(void **state)
{
    (void)state;
    GMainContext *mc = g_main_context_new();
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct hit h = {0};
    GSource *s = attach(mc, c, &h);
    /* One iteration that does not block: the source watches now. */
    g_main_context_iteration(mc, FALSE);
    assert_int_equal(h.runs, 0);
    pthread_t t = tu_spawn(cancel_later, c);
    ctx_time_t t0 = ctx_now();
    iterate_until(mc, &h.runs, 1);
    tu_assert_between(ctx_now() - t0, 0, TU_PROMPT * 4);
    tu_join_within(t, 10 * CTX_SECOND);
    assert_int_equal(h.err, CTX_CANCELED);
    assert_true(pthread_equal(h.thread, pthread_self()));
    /* Removed by G_SOURCE_REMOVE: no second dispatch. */
    g_main_context_iteration(mc, FALSE);
    assert_int_equal(h.runs, 1);
    g_source_unref(s);
    ctx_release(c);
    g_main_context_unref(mc);
}

static void test_source_deadline_and_done_at_attach(void **state)
{
    (void)state;
    GMainContext *mc = g_main_context_new();
    ctx_t *d = ctx_with_timeout(ctx_background(), 20 * MS);
    struct hit h = {0};
    GSource *s = attach(mc, d, &h);
    ctx_release(d); /* the source keeps it */
    iterate_until(mc, &h.runs, 1);
    assert_int_equal(h.err, CTX_DEADLINE_EXCEEDED);
    g_source_unref(s);

    /* Already done when attached: dispatched on the next iteration. */
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel(c);
    struct hit h2 = {0};
    s = attach(mc, c, &h2);
    iterate_until(mc, &h2.runs, 1);
    assert_int_equal(h2.err, CTX_CANCELED);
    g_source_unref(s);
    ctx_release(c);
    g_main_context_unref(mc);
}

static void test_source_destroyed_first_never_runs(void **state)
{
    (void)state;
    GMainContext *mc = g_main_context_new();
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct hit h = {0};
    GSource *s = attach(mc, c, &h);
    g_main_context_iteration(mc, FALSE); /* watching */
    g_source_destroy(s);
    g_source_unref(s);
    ctx_cancel(c);
    for (int i = 0; i < 5; i++)
        g_main_context_iteration(mc, FALSE);
    assert_int_equal(h.runs, 0);
    ctx_release(c);
    g_main_context_unref(mc);
}

/* Finalized in another thread while the loop thread dispatches. */
static void *unref_source(void *arg)
{
    g_source_unref(arg);
    return NULL;
}

static void test_source_unref_in_other_thread(void **state)
{
    (void)state;
    GMainContext *mc = g_main_context_new();
    for (int round = 0; round < 200; round++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        struct hit h = {0};
        GSource *s = attach(mc, c, &h);
        g_main_context_iteration(mc, FALSE);
        g_source_destroy(s);
        pthread_t t = tu_spawn(unref_source, s);
        ctx_cancel(c);
        g_main_context_iteration(mc, FALSE);
        tu_join_within(t, 10 * CTX_SECOND);
        assert_int_equal(h.runs, 0);
        ctx_release(c);
    }
    g_main_context_unref(mc);
}

/* 100,000 sources on one main context: one fd in all, every callback runs
 * once after one cancel of their parent. */
static void test_source_100k(void **state)
{
    (void)state;
    enum { N = 100000 };
    GMainContext *mc = g_main_context_new();
    int fds0 = tu_open_fds();
    ctx_t *root = ctx_with_cancel(ctx_background());
    struct hit *hits = calloc(N, sizeof *hits);
    GSource **srcs = calloc(N, sizeof *srcs);
    assert_non_null(hits);
    assert_non_null(srcs);
    total_runs = 0;
    /* The first source brings the hub's notifier (one eventfd, or a pipe
     * in the portable build); the other 99,999 add no fd. */
    ctx_t *c0 = ctx_with_cancel(root);
    srcs[0] = attach(mc, c0, &hits[0]);
    ctx_release(c0);
    g_main_context_iteration(mc, FALSE);
    int fds1 = tu_open_fds();
    assert_true(fds1 > fds0 && fds1 <= fds0 + 2);
    for (int i = 1; i < N; i++) {
        ctx_t *c = ctx_with_cancel(root);
        srcs[i] = attach(mc, c, &hits[i]);
        ctx_release(c);
    }
    g_main_context_iteration(mc, FALSE); /* every source watches */
    assert_int_equal(tu_open_fds(), fds1);
    ctx_time_t t0 = ctx_now();
    ctx_cancel(root);
    iterate_until(mc, &total_runs, N);
    ctx_duration_t took = ctx_now() - t0;
    print_message("100000 GLib sources: every callback %.1f ms after the cancel\n",
                  (double)took / 1e6);
    for (int i = 0; i < N; i++) {
        assert_int_equal(hits[i].runs, 1);
        g_source_unref(srcs[i]);
    }
    free(hits);
    free(srcs);
    ctx_release(root);
    assert_int_equal(tu_open_fds(), fds0); /* the hub went with its sources */
    g_main_context_unref(mc);
}

/* ---- GCancellable cancelled when a context ends ---------------------------- */

struct seen {
    tu_event_t ev;
    pthread_t thread;
};

static void on_cancelled(GCancellable *c, gpointer data)
{
    (void)c;
    struct seen *s = data;
    s->thread = pthread_self();
    tu_event_set(&s->ev);
}

static void test_cancellable_follows_ctx(void **state)
{
    (void)state;
    /* Made before anything can signal them: GLib's own locks order the
     * handler after g_cancellable_connect(), but TSan cannot see inside an
     * uninstrumented GLib; libctx's locks it sees. */
    struct seen s, s2;
    tu_event_init(&s.ev);
    tu_event_init(&s2.ev);
    ctx_t *c = ctx_with_cancel(ctx_background());
    GCancellable *gc = ctx_glib_cancellable_new(c);
    assert_non_null(gc);
    g_cancellable_connect(gc, G_CALLBACK(on_cancelled), &s, NULL);
    assert_false(g_cancellable_is_cancelled(gc));
    ctx_cancel(c);
    assert_true(tu_event_wait(&s.ev, 10 * CTX_SECOND * TU_SLOW));
    assert_true(g_cancellable_is_cancelled(gc));
    /* The handler ran on the executor, not in the cancelling thread. */
    assert_false(pthread_equal(s.thread, pthread_self()));
    g_object_unref(gc);
    ctx_release(c);

    /* A deadline, with the context released first. */
    ctx_t *d = ctx_with_timeout(ctx_background(), 10 * MS);
    gc = ctx_glib_cancellable_new(d);
    ctx_release(d);
    g_cancellable_connect(gc, G_CALLBACK(on_cancelled), &s2, NULL);
    assert_true(tu_event_wait(&s2.ev, 10 * CTX_SECOND * TU_SLOW));
    g_object_unref(gc);

    /* Already done: cancelled before the call returns. */
    ctx_t *e = ctx_with_cancel(ctx_background());
    ctx_cancel(e);
    gc = ctx_glib_cancellable_new(e);
    assert_true(g_cancellable_is_cancelled(gc));
    g_object_unref(gc);
    ctx_release(e);
    tu_event_destroy(&s.ev);
    tu_event_destroy(&s2.ev);
}

/* Finalized before the context ends: the registration is gone (the live
 * counters of debug builds reach 0), and a later cancel touches nothing. */
static void test_cancellable_finalized_first(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    for (int i = 0; i < 1000; i++) {
        GCancellable *gc = ctx_glib_cancellable_new(c);
        assert_non_null(gc);
        g_object_unref(gc);
    }
    ctx_cancel(c);
    ctx_release(c);
}

/* The race between the end of the context and the finalization. */
static void *unref_obj(void *arg)
{
    g_object_unref(arg);
    return NULL;
}

static void test_cancellable_finalize_races_cancel(void **state)
{
    (void)state;
    for (int i = 0; i < 500; i++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        GCancellable *gc = ctx_glib_cancellable_new(c);
        pthread_t t = tu_spawn(unref_obj, gc);
        ctx_cancel(c);
        tu_join_within(t, 10 * CTX_SECOND);
        ctx_release(c);
    }
}

/* ---- a context cancelled when a GCancellable is ---------------------------- */

static void test_ctx_follows_cancellable(void **state)
{
    (void)state;
    GCancellable *gc = g_cancellable_new();
    ctx_t *c = ctx_glib_with_cancellable(ctx_background(), gc);
    assert_non_null(c);
    assert_false(ctx_is_done(c));
    g_cancellable_cancel(gc);
    assert_int_equal(ctx_err(c), CTX_CANCELED); /* synchronous */
    ctx_release(c);
    /* Already cancelled: done at birth. */
    c = ctx_glib_with_cancellable(ctx_background(), gc);
    assert_non_null(c);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    ctx_release(c);
    g_object_unref(gc);

    /* Ended by its parent: the handler is disconnected (the live counters
     * of debug builds reach 0 though the cancellable lives on). */
    gc = g_cancellable_new();
    ctx_t *p = ctx_with_cancel(ctx_background());
    c = ctx_glib_with_cancellable(p, gc);
    ctx_cancel(p);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    ctx_release(c);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
    g_cancellable_cancel(gc); /* nothing connected any more */
    g_object_unref(gc);

    /* The cancellable finalized while the child lives: the child stays
     * usable and is not kept by it. */
    gc = g_cancellable_new();
    c = ctx_glib_with_cancellable(ctx_background(), gc);
    g_object_unref(gc);
    assert_false(ctx_is_done(c));
    ctx_cancel(c);
    ctx_release(c);
}

static void *cancel_gc(void *arg)
{
    g_cancellable_cancel(arg);
    return NULL;
}

static void test_ctx_cancellable_races(void **state)
{
    (void)state;
    for (int i = 0; i < 500; i++) {
        GCancellable *gc = g_cancellable_new();
        pthread_t t = tu_spawn(cancel_gc, gc);
        ctx_t *c = ctx_glib_with_cancellable(ctx_background(), gc);
        assert_non_null(c);
        tu_join_within(t, 10 * CTX_SECOND);
        assert_int_equal(ctx_err(c), CTX_CANCELED);
        if (i % 2)
            ctx_cancel(c);
        ctx_release(c);
        g_object_unref(gc);
    }
}

static void test_null_args(void **state)
{
    (void)state;
    errno = 0;
    assert_null(ctx_glib_cancellable_new(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_glib_with_cancellable(NULL, NULL));
    assert_int_equal(errno, EINVAL);
    GCancellable *gc = g_cancellable_new();
    errno = 0;
    assert_null(ctx_glib_with_cancellable(NULL, gc));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_glib_with_cancellable(ctx_background(), NULL));
    assert_int_equal(errno, EINVAL);
    g_object_unref(gc);
}

/* libctx's executor threads leave after half a second idle: wait for them
 * (generously: the machine may be loaded) before counting. */
static int teardown(void **state)
{
    tu_settle();
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
    while (tu_threads() != tu_threads_before && ctx_now() < end)
        tu_sleep(CTX_MILLISECOND);
    return tu_count_teardown(state);
}

int main(void)
{
    /* The timer thread lives from the first deadline on: start it first so
     * that the thread counts compare like with like. */
    ctx_t *warm = ctx_with_timeout(ctx_background(), CTX_HOUR);
    ctx_release(warm);
    /* g_return_val_if_fail criticals are not fatal here. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_source_cancel_from_thread, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_deadline_and_done_at_attach, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_destroyed_first_never_runs, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_unref_in_other_thread, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_100k, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancellable_follows_ctx, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancellable_finalized_first, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancellable_finalize_races_cancel, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctx_follows_cancellable, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctx_cancellable_races, tu_count_setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_args, tu_count_setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
