/* ctx_format (Go's String() shape) and ctx_strerror. */
#include "testutil.h"

#include <time.h>

static const ctx_key_t trace_key = CTX_KEY("trace-id");

static void test_shapes(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(ctx_format(ctx_background(), buf, sizeof buf), 18);
    assert_string_equal(buf, "context.Background");
    ctx_format(ctx_todo(), buf, sizeof buf);
    assert_string_equal(buf, "context.TODO");

    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &trace_key, "x", NULL);
    ctx_t *w = ctx_without_cancel(v);
    size_t n = ctx_format(v, buf, sizeof buf);
    assert_string_equal(buf,
                        "context.Background.WithCancel.WithValue(trace-id, ...)");
    assert_int_equal(n, strlen(buf));
    ctx_format(w, buf, sizeof buf);
    assert_string_equal(
        buf, "context.Background.WithCancel.WithValue(trace-id, ...)"
             ".WithoutCancel");

    /* The deadline on the wall clock, UTC, RFC 3339 (as Go's String()
     * prints the time), then the time left:
     * context.TODO.WithDeadline(2026-12-02T01:50:12.123456789Z [1m29.99...s]) */
    time_t before = time(NULL);
    ctx_t *t = ctx_with_timeout(ctx_todo(), 90 * CTX_SECOND);
    ctx_format(t, buf, sizeof buf);
    time_t after = time(NULL);
    assert_memory_equal(buf, "context.TODO.WithDeadline(", 26);
    struct tm tm = {0};
    char tail[64] = "";
    assert_int_equal(sscanf(buf + 26, "%4d-%2d-%2dT%2d:%2d:%2d%63s",
                            &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, tail),
                     7);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t printed = timegm(&tm);
    /* printed is the deadline's second, truncated */
    assert_true(printed >= before + 90 - 1);
    assert_true(printed <= after + 90);
    /* a fraction without trailing zeros (or none), then Z */
    char *z = strchr(tail, 'Z');
    assert_non_null(z);
    if (tail[0] == '.') {
        assert_true(z - tail >= 2 && z - tail <= 10);
        assert_true(z[-1] != '0');
    } else {
        assert_true(z == tail);
    }
    assert_non_null(strstr(buf, "Z [1m29.9"));
    assert_int_equal(buf[strlen(buf) - 1], ')');
    ctx_release(t);

    /* The end of time: the latest instant an int64 of ns can name, as Go's
     * time prints it (the wall clock is ahead of the monotonic one, so the
     * sum saturates). */
    t = ctx_with_deadline(ctx_background(), CTX_TIME_MAX);
    ctx_format(t, buf, sizeof buf);
    assert_non_null(strstr(buf, ".WithDeadline(2262-04-11T23:47:16.854775807Z ["));
    ctx_release(t);

    /* a deadline long past (0 on the monotonic clock: boot, and the
     * earliest int64) prints a negative time left, and nothing overflows */
    t = ctx_with_deadline(ctx_background(), 0);
    ctx_format(t, buf, sizeof buf);
    assert_memory_equal(buf, "context.Background.WithDeadline(", 32);
    assert_non_null(strstr(buf, "Z [-"));
    ctx_release(t);
    t = ctx_with_deadline(ctx_background(), INT64_MIN);
    assert_true(ctx_format(t, buf, sizeof buf) < sizeof buf);
    assert_non_null(strstr(buf, "Z [-"));
    ctx_release(t);
    ctx_release(w);
    ctx_release(v);
    ctx_release(c);
    tu_assert_no_live();
}

static void test_snprintf_rules(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &trace_key, NULL, NULL);
    const char *full = "context.Background.WithCancel.WithValue(trace-id, ...)";
    size_t len = strlen(full);
    assert_int_equal(ctx_format(v, NULL, 0), len);
    char buf[128];
    for (size_t size = 1; size <= len + 2; size++) {
        memset(buf, 'Z', sizeof buf);
        assert_int_equal(ctx_format(v, buf, size), len);
        size_t want = size - 1 < len ? size - 1 : len;
        assert_int_equal(strlen(buf), want);
        assert_memory_equal(buf, full, want);
        assert_int_equal(buf[size], 'Z'); /* nothing past size */
    }
    ctx_format(NULL, buf, sizeof buf);
    assert_string_equal(buf, "<nil>");
    ctx_release(v);
    ctx_release(c);
    tu_assert_no_live();
}

static void test_deep_format(void **state)
{
    (void)state;
    ctx_t *c = ctx_retain(ctx_background());
    for (int i = 0; i < 5000; i++) {
        ctx_t *n = ctx_with_cancel(c);
        ctx_release(c);
        c = n;
    }
    size_t len = ctx_format(c, NULL, 0);
    assert_int_equal(len, strlen("context.Background") + 5000 * 11);
    char *buf = malloc(len + 1);
    assert_int_equal(ctx_format(c, buf, len + 1), len);
    assert_int_equal(strlen(buf), len);
    assert_memory_equal(buf + len - 22, ".WithCancel.WithCancel", 22);
    free(buf);
    ctx_release(c);
    tu_assert_no_live();
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(ctx_strerror(CTX_CANCELED), "context canceled");
    assert_string_equal(ctx_strerror(CTX_DEADLINE_EXCEEDED),
                        "context deadline exceeded");
    assert_string_equal(ctx_strerror(EINVAL), "invalid argument");
    assert_string_equal(ctx_strerror(ENOMEM), "out of memory");
    assert_string_equal(ctx_strerror(EMFILE), "too many open files");
    assert_non_null(ctx_strerror(EPIPE));
    assert_string_not_equal(ctx_strerror(EPIPE), "unknown error");
    assert_string_equal(ctx_strerror(-12345), "unknown error");
    assert_string_equal(ctx_strerror(0), "success");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_snprintf_rules),
        cmocka_unit_test(test_deep_format),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
