/* Deadlines and timeouts: the timer thread and the heap. */
#include "testutil.h"

static void test_deadline_fires(void **state)
{
    (void)state;
    ctx_time_t start = ctx_now();
    ctx_t *c = ctx_with_timeout(ctx_background(), 20 * CTX_MILLISECOND);
    ctx_time_t d;
    assert_true(ctx_deadline(c, &d));
    tu_assert_between(d - start, 20 * CTX_MILLISECOND,
                      20 * CTX_MILLISECOND + TU_PROMPT);
    /* Not done early. (Done already is fine if 20 ms have passed: on a busy
     * machine, or under an emulator, the first deadline of the process
     * starts the timer thread, which may take that long.) */
    bool done = ctx_is_done(c);
    if (done)
        assert_true(ctx_now() - start >= 20 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(c), CTX_DEADLINE_EXCEEDED);
    ctx_time_t took = ctx_now() - start;
    tu_assert_between(took, 20 * CTX_MILLISECOND,
                      20 * CTX_MILLISECOND + TU_PROMPT);
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_cause(c), CTX_DEADLINE_EXCEEDED);
    /* cancelling afterwards changes nothing */
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    ctx_release(c);
    tu_assert_no_live();
}

static void test_deadline_cause(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_timeout_cause(ctx_background(), 5 * CTX_MILLISECOND,
                                      ENOLINK);
    ctx_t *child = ctx_with_cancel(c);
    /* Cause never before err (the 5 ms may already have passed on a busy
     * machine: then both are set). */
    if (ctx_cause(c) != 0)
        assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_wait(child), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_cause(c), ENOLINK);
    assert_int_equal(ctx_cause(child), ENOLINK);
    assert_int_equal(ctx_err(child), CTX_DEADLINE_EXCEEDED);
    ctx_release(child);
    ctx_release(c);

    ctx_t *d = ctx_with_deadline_cause(ctx_background(), ctx_now() - 1,
                                       ENOLINK);
    assert_int_equal(ctx_err(d), CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_cause(d), ENOLINK);
    ctx_release(d);
    tu_assert_no_live();
}

static void test_earlier_parent_deadline_wins(void **state)
{
    (void)state;
    ctx_time_t now = ctx_now();
    ctx_t *p = ctx_with_deadline(ctx_background(), now + 30 * CTX_MILLISECOND);
    ctx_t *c = ctx_with_deadline(p, now + CTX_HOUR);
    ctx_t *cc = ctx_with_cancel(c);
    ctx_time_t pd, cd, ccd;
    assert_true(ctx_deadline(p, &pd));
    assert_true(ctx_deadline(c, &cd));
    assert_true(ctx_deadline(cc, &ccd));
    assert_int_equal(pd, now + 30 * CTX_MILLISECOND);
    assert_int_equal(cd, pd);
    assert_int_equal(ccd, pd);
    /* a later child deadline is reported as the parent's (Go: WithCancel) */
    char buf[256];
    ctx_format(c, buf, sizeof buf);
    assert_non_null(strstr(buf, ".WithDeadline("));
    assert_true(strstr(buf, ".WithCancel") == buf + strlen(buf) - 11);
    /* a child with an earlier deadline reports its own */
    ctx_t *e = ctx_with_deadline(p, now + 10 * CTX_MILLISECOND);
    ctx_time_t ed;
    assert_true(ctx_deadline(e, &ed));
    assert_int_equal(ed, now + 10 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(e), CTX_DEADLINE_EXCEEDED);
    /* p is not done before its own deadline (on a busy machine that may
     * have passed too by now). */
    bool p_done = ctx_is_done(p);
    if (p_done)
        assert_true(ctx_now() >= now + 30 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(cc), CTX_DEADLINE_EXCEEDED);
    assert_true(ctx_is_done(c));
    ctx_time_t late = ctx_now() - now;
    tu_assert_between(late, 30 * CTX_MILLISECOND,
                      30 * CTX_MILLISECOND + TU_PROMPT);
    ctx_release(e);
    ctx_release(cc);
    ctx_release(c);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_past_zero_negative_timeouts(void **state)
{
    (void)state;
    ctx_duration_t ts[] = {0, -1, -CTX_HOUR, INT64_MIN};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        ctx_t *c = ctx_with_timeout(ctx_background(), ts[i]);
        assert_non_null(c);
        assert_true(ctx_is_done(c));
        assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
        assert_true(ctx_deadline(c, NULL));
        ctx_release(c);
    }
    ctx_time_t pasts[] = {ctx_now(), ctx_now() - CTX_SECOND, 0, INT64_MIN};
    for (size_t i = 0; i < sizeof pasts / sizeof *pasts; i++) {
        ctx_t *c = ctx_with_deadline(ctx_background(), pasts[i]);
        assert_non_null(c);
        assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
        assert_int_equal(ctx_cause(c), CTX_DEADLINE_EXCEEDED);
        ctx_t *child = ctx_with_cancel(c);
        assert_int_equal(ctx_err(child), CTX_DEADLINE_EXCEEDED);
        ctx_release(child);
        ctx_release(c);
    }
    /* a done parent's err wins over a passed deadline (Go's order) */
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(p, EIO);
    ctx_t *c = ctx_with_timeout(p, -1);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    assert_int_equal(ctx_cause(c), EIO);
    ctx_release(c);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_huge_timeouts_saturate(void **state)
{
    (void)state;
    ctx_duration_t ts[] = {INT64_MAX, INT64_MAX - 1, 200 * 365 * 24 * CTX_HOUR};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        ctx_t *c = ctx_with_timeout(ctx_background(), ts[i]);
        assert_non_null(c);
        assert_false(ctx_is_done(c));
        ctx_time_t d;
        assert_true(ctx_deadline(c, &d));
        assert_true(d > ctx_now()); /* no overflow into the past */
        assert_int_equal(ctx_wait_until(c, ctx_now() + CTX_MILLISECOND), 0);
        ctx_cancel(c);
        assert_int_equal(ctx_err(c), CTX_CANCELED);
        ctx_release(c);
    }
    ctx_t *c = ctx_with_deadline(ctx_background(), CTX_TIME_MAX);
    ctx_time_t d;
    assert_true(ctx_deadline(c, &d));
    assert_int_equal(d, CTX_TIME_MAX);
    ctx_release(c);
    tu_assert_no_live();
}

static void test_cancel_before_deadline_stops_timer(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_timeout_cause(ctx_background(), 10 * CTX_MILLISECOND,
                                      EIO);
    ctx_cancel(c);
    tu_sleep(30 * CTX_MILLISECOND);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    assert_int_equal(ctx_cause(c), CTX_CANCELED);
    ctx_release(c);
    /* released before its deadline: the timer must not touch it */
    for (int i = 0; i < 1000; i++)
        ctx_release(ctx_with_timeout(ctx_background(), CTX_MILLISECOND));
    tu_sleep(20 * CTX_MILLISECOND);
    tu_assert_no_live();
}

static void test_many_timers_fire_on_time(void **state)
{
    (void)state;
    enum { N = 50000 };
    ctx_t **cs = malloc(N * sizeof *cs);
    assert_non_null(cs);
    ctx_time_t start = ctx_now();
    /* deadlines spread over 100..300 ms, created in shuffled order */
    for (int i = 0; i < N; i++) {
        ctx_duration_t off = 100 * CTX_MILLISECOND +
                             (ctx_duration_t)((i * 7919) % N) *
                                 (200 * CTX_MILLISECOND / N);
        cs[i] = ctx_with_deadline(ctx_background(), start + off);
        assert_non_null(cs[i]);
    }
    ctx_time_t created = ctx_now();
    int early = 0;
    for (int i = 0; i < N; i++) {
        ctx_time_t d;
        assert_true(ctx_deadline(cs[i], &d));
        if (ctx_is_done(cs[i]) && ctx_now() < d)
            early++;
        assert_int_equal(ctx_wait(cs[i]), CTX_DEADLINE_EXCEEDED);
        /* never before its deadline */
        assert_true(ctx_now() >= d);
    }
    assert_int_equal(early, 0);
    ctx_time_t all_done = ctx_now() - start;
    /* the last fires at 300 ms; allow for load and sanitizers */
    if (created - start < 100 * CTX_MILLISECOND)
        tu_assert_between(all_done, 300 * CTX_MILLISECOND - CTX_MILLISECOND,
                          300 * CTX_MILLISECOND + 4 * TU_PROMPT);
    for (int i = 0; i < N; i++)
        ctx_release(cs[i]);
    free(cs);
    tu_assert_no_live();
}

static void test_timer_order_with_removals(void **state)
{
    (void)state;
    /* Interleave inserts and removals so the heap's sift paths all run,
     * then check the survivors fire in deadline order. */
    enum { N = 2000 };
    static ctx_t *cs[N];
    static ctx_time_t fired[N];
    ctx_time_t base = ctx_now() + 30 * CTX_MILLISECOND;
    for (int i = 0; i < N; i++) {
        cs[i] = ctx_with_deadline(ctx_background(),
                                  base + (ctx_time_t)((i * 37) % N) * 20000);
        if (i % 3 == 0) {
            ctx_release(cs[i]);
            cs[i] = NULL;
        } else if (i % 5 == 0) {
            ctx_cancel(cs[i]);
        }
    }
    for (int i = 0; i < N; i++) {
        if (cs[i] == NULL)
            continue;
        ctx_wait(cs[i]);
        fired[i] = ctx_now();
        ctx_time_t d;
        ctx_deadline(cs[i], &d);
        if (i % 5 != 0) {
            assert_int_equal(ctx_err(cs[i]), CTX_DEADLINE_EXCEEDED);
            assert_true(fired[i] >= d);
        } else {
            /* Cancelled, unless its deadline came first (on a busy machine
             * the insert loop may outlast the first deadlines). */
            int e = ctx_err(cs[i]);
            if (e != CTX_CANCELED) {
                assert_int_equal(e, CTX_DEADLINE_EXCEEDED);
                assert_true(fired[i] >= d);
            }
        }
    }
    for (int i = 0; i < N; i++)
        ctx_release(cs[i]);
    tu_assert_no_live();
}

static void test_new_earlier_deadline_wakes_timer(void **state)
{
    (void)state;
    ctx_t *late = ctx_with_timeout(ctx_background(), CTX_HOUR);
    tu_sleep(5 * CTX_MILLISECOND); /* let the thread plan to sleep an hour */
    ctx_time_t start = ctx_now();
    ctx_t *soon = ctx_with_timeout(ctx_background(), 10 * CTX_MILLISECOND);
    ctx_wait(soon);
    tu_assert_between(ctx_now() - start, 10 * CTX_MILLISECOND,
                      10 * CTX_MILLISECOND + TU_PROMPT);
    assert_false(ctx_is_done(late));
    ctx_release(soon);
    ctx_release(late);
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_fires),
        cmocka_unit_test(test_deadline_cause),
        cmocka_unit_test(test_earlier_parent_deadline_wins),
        cmocka_unit_test(test_past_zero_negative_timeouts),
        cmocka_unit_test(test_huge_timeouts_saturate),
        cmocka_unit_test(test_cancel_before_deadline_stops_timer),
        cmocka_unit_test(test_many_timers_fire_on_time),
        cmocka_unit_test(test_timer_order_with_removals),
        cmocka_unit_test(test_new_earlier_deadline_wakes_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
