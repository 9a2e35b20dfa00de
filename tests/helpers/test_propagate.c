/* Propagation (ctx/propagate.h): grpc-timeout wire format, W3C Trace
 * Context Level 1 vectors (the spec's and the W3C test suite's), W3C
 * Baggage limits, round trips through a header map and the environment,
 * deadlines (done at birth, the earlier of two), accessors, bad arguments,
 * and allocation failure (fault-injection builds). */
#include "testutil.h"

#include <ctx/propagate.h>

#include <stdatomic.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#define MS CTX_MILLISECOND

/* ---- a header map carrier: several lines per name, names without case -- */

#define MAP_MAX 512

struct hmap {
    size_t n;
    char *name[MAP_MAX];
    char *value[MAP_MAX];
    int sets;     /* set() calls */
    int fail_set; /* set() fails with EIO at this call (1-based), 0: never */
};

static void hmap_add(struct hmap *m, const char *name, const char *value)
{
    assert_true(m->n < MAP_MAX);
    m->name[m->n] = strdup(name);
    m->value[m->n] = strdup(value);
    m->n++;
}

static void hmap_clear(struct hmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->name[i]);
        free(m->value[i]);
    }
    m->n = 0;
    m->sets = 0;
}

static int hmap_set(void *self, const char *key, const char *value)
{
    struct hmap *m = self;
    m->sets++;
    if (m->fail_set != 0 && m->sets == m->fail_set)
        return EIO;
    size_t j = 0;
    for (size_t i = 0; i < m->n; i++) { /* replace: drop every old line */
        if (strcasecmp(m->name[i], key) == 0) {
            free(m->name[i]);
            free(m->value[i]);
        } else {
            m->name[j] = m->name[i];
            m->value[j] = m->value[i];
            j++;
        }
    }
    m->n = j;
    hmap_add(m, key, value);
    return 0;
}

static size_t hmap_get_all(void *self, const char *key, const char **values,
                           size_t max)
{
    struct hmap *m = self;
    size_t count = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (strcasecmp(m->name[i], key) == 0) {
            if (count < max)
                values[count] = m->value[i];
            count++;
        }
    }
    return count;
}

/* The first line only: a carrier without get_all. */
static const char *hmap_get(void *self, const char *key)
{
    const char *v = NULL;
    return hmap_get_all(self, key, &v, 1) > 0 ? v : NULL;
}

static const char *hmap_find(struct hmap *m, const char *key)
{
    return hmap_get(m, key);
}

static ctx_carrier_t carrier_of(struct hmap *m)
{
    ctx_carrier_t c = {.self = m, .set = hmap_set, .get = hmap_get,
                       .get_all = hmap_get_all};
    return c;
}

/* Extracts from a map built from name/value pairs (NULL-terminated). */
static ctx_t *extract_pairs(ctx_t *parent, ctx_duration_t limit,
                            unsigned what, const char *const *pairs)
{
    struct hmap m = {0};
    for (size_t i = 0; pairs[i] != NULL; i += 2)
        hmap_add(&m, pairs[i], pairs[i + 1]);
    ctx_carrier_t c = carrier_of(&m);
    ctx_t *x = ctx_propagate_extract(parent, &c, limit, what);
    hmap_clear(&m);
    return x;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void trace_id_hex(ctx_t *c, char out[33])
{
    uint8_t id[16];
    assert_true(ctx_trace_id(c, id));
    hex(id, 16, out);
}

#define TID "12345678901234567890123456789012"
#define PID "1234567890123456"

/* The trace id an extracted context got from one traceparent line. */
static void tp_trace_id(const char *tp, char out[33])
{
    const char *pairs[] = {"traceparent", tp, "tracestate", "foo=1", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, pairs);
    assert_non_null(c);
    trace_id_hex(c, out);
    ctx_release(c);
}

static void assert_tp_valid(const char *tp)
{
    char id[33];
    tp_trace_id(tp, id);
    if (strcmp(id, TID) != 0)
        fail_msg("traceparent '%s' should be accepted", tp);
}

static void assert_tp_invalid(const char *tp)
{
    const char *pairs[] = {"traceparent", tp, "tracestate", "foo=1", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, pairs);
    assert_non_null(c);
    char id[33];
    trace_id_hex(c, id);
    if (strcmp(id, TID) == 0 || strcmp(id, "00000000000000000000000000000000") == 0)
        fail_msg("traceparent '%s' should restart the trace", tp);
    uint8_t pid[8];
    assert_false(ctx_trace_parent_id(c, pid)); /* restarted: no parent */
    assert_null(ctx_trace_state(c));           /* and tracestate dropped */
    assert_int_equal(ctx_trace_flags(c), 0);
    ctx_release(c);
}

/* The tracestate kept from a valid traceparent and these lines. */
static char *ts_of(const char *const *lines)
{
    struct hmap m = {0};
    hmap_add(&m, "traceparent", "00-" TID "-" PID "-00");
    for (size_t i = 0; lines[i] != NULL; i++)
        hmap_add(&m, "TraceState", lines[i]);
    ctx_carrier_t c = carrier_of(&m);
    ctx_t *x = ctx_propagate_extract(ctx_background(), &c, 0, 0);
    hmap_clear(&m);
    assert_non_null(x);
    char id[33];
    trace_id_hex(x, id);
    assert_string_equal(id, TID); /* tracestate never affects traceparent */
    const char *s = ctx_trace_state(x);
    char *r = s != NULL ? strdup(s) : NULL;
    ctx_release(x);
    return r;
}

static void assert_ts(const char *const *lines, const char *expect)
{
    char *got = ts_of(lines);
    if (expect == NULL) {
        if (got != NULL)
            fail_msg("tracestate '%s' should be dropped, got '%s'", lines[0], got);
    } else {
        if (got == NULL || strcmp(got, expect) != 0)
            fail_msg("tracestate '%s': expected '%s', got '%s'", lines[0],
                     expect, got ? got : "(none)");
    }
    free(got);
}

#define TS1(line, expect)                                                      \
    do {                                                                       \
        const char *l_[] = {line, NULL};                                       \
        assert_ts(l_, expect);                                                 \
    } while (0)

/* ---- grpc-timeout -------------------------------------------------------- */

static void test_grpc_timeout_format(void **state)
{
    (void)state;
    static const struct {
        ctx_duration_t d;
        const char *s;
    } table[] = {
        {INT64_MIN, "0n"},
        {-1, "0n"},
        {0, "0n"},
        {1, "1n"},
        {999, "999n"},
        {99999999, "99999999n"},      /* the largest in ns */
        {100000000, "100000u"},       /* the next: microseconds */
        {100000001, "100001u"},       /* rounded up */
        {CTX_SECOND, "1000000u"},
        {99999999 * CTX_MICROSECOND, "99999999u"},
        {99999999 * CTX_MICROSECOND + 1, "100000m"},
        {CTX_MINUTE, "60000000u"},
        {CTX_HOUR, "3600000m"},
        {99999999 * CTX_MILLISECOND, "99999999m"},
        {99999999 * CTX_MILLISECOND + 1, "100000S"},
        {99999999 * CTX_SECOND, "99999999S"},
        {99999999 * CTX_SECOND + 1, "1666667M"},
        {99999999 * CTX_MINUTE, "99999999M"},
        {99999999 * CTX_MINUTE + 1, "1666667H"},
        {INT64_MAX, "2562048H"}, /* huge: hours always fit */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char buf[CTX_GRPC_TIMEOUT_SIZE];
        memset(buf, 'x', sizeof buf);
        size_t n = ctx_grpc_timeout_format(table[i].d, buf);
        if (strcmp(buf, table[i].s) != 0)
            fail_msg("%lld ns: expected %s, got %s", (long long)table[i].d,
                     table[i].s, buf);
        assert_int_equal(n, strlen(table[i].s));
        /* Rounding up: never less than asked, and it parses back. */
        ctx_duration_t back;
        assert_int_equal(ctx_grpc_timeout_parse(buf, &back), 0);
        if (table[i].d > 0)
            assert_true(back >= table[i].d);
    }
    assert_int_equal(ctx_grpc_timeout_format(1, NULL), 0);
    /* Every value: at most 8 digits and a unit, within one unit of it. */
    for (ctx_duration_t d = 1; d > 0 && d < INT64_MAX / 3; d = d * 3 + 7) {
        char buf[CTX_GRPC_TIMEOUT_SIZE];
        size_t n = ctx_grpc_timeout_format(d, buf);
        assert_true(n >= 2 && n <= 9);
        ctx_duration_t back;
        assert_int_equal(ctx_grpc_timeout_parse(buf, &back), 0);
        assert_true(back >= d);
    }
}

static void test_grpc_timeout_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        ctx_duration_t d;
    } ok[] = {
        {"1n", 1},
        {"0n", 0},
        {"99999999n", 99999999},
        {"00000001S", CTX_SECOND},
        {"5u", 5 * CTX_MICROSECOND},
        {"250m", 250 * MS},
        {"30S", 30 * CTX_SECOND},
        {"2M", 2 * CTX_MINUTE},
        {"1H", CTX_HOUR},
        {" 1S", CTX_SECOND},
        {"1S\t ", CTX_SECOND},
        {"99999999H", INT64_MAX}, /* saturates */
        {"99999999M", 99999999 * CTX_MINUTE},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ctx_duration_t d = -7;
        if (ctx_grpc_timeout_parse(ok[i].s, &d) != 0)
            fail_msg("'%s' should parse", ok[i].s);
        assert_int_equal(d, ok[i].d);
    }
    static const char *const bad[] = {
        "", " ", "n", "S", "1", "12", "123456789n", "000000001n", "1x", "1s",
        "1h", "1N", "-1S", "+1S", "1.5S", "1 S", "S1", "1SS", "0x1S", "1\nS",
        "\x80S", "1S,2S", "1S 2S", "１S",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctx_duration_t d = -7;
        if (ctx_grpc_timeout_parse(bad[i], &d) != EINVAL)
            fail_msg("'%s' should be invalid", bad[i]);
        assert_int_equal(d, -7); /* untouched */
    }
    ctx_duration_t d;
    assert_int_equal(ctx_grpc_timeout_parse(NULL, &d), EINVAL);
    assert_int_equal(ctx_grpc_timeout_parse("1S", NULL), EINVAL);
}

/* ---- deadlines ----------------------------------------------------------- */

static ctx_duration_t left(ctx_t *c)
{
    ctx_time_t dl;
    assert_true(ctx_deadline(c, &dl));
    return dl - ctx_now();
}

static void test_deadline_extract(void **state)
{
    (void)state;
    const ctx_duration_t slack = TU_PROMPT;
    /* The propagated deadline. */
    const char *p1[] = {"grpc-timeout", "10S", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, CTX_PROPAGATE_DEADLINE, p1);
    assert_non_null(c);
    tu_assert_between(left(c), 10 * CTX_SECOND - slack, 10 * CTX_SECOND);
    assert_false(ctx_is_done(c));
    ctx_release(c);

    /* The earlier of the propagated one and the receiver's limit. */
    c = extract_pairs(ctx_background(), CTX_SECOND, 0, p1);
    tu_assert_between(left(c), CTX_SECOND - slack, CTX_SECOND);
    ctx_release(c);
    const char *p2[] = {"grpc-timeout", "1000m", NULL};
    c = extract_pairs(ctx_background(), 10 * CTX_SECOND, 0, p2);
    tu_assert_between(left(c), CTX_SECOND - slack, CTX_SECOND);
    ctx_release(c);

    /* And the parent's own deadline. */
    ctx_t *parent = ctx_with_timeout(ctx_background(), 500 * MS);
    c = extract_pairs(parent, 0, 0, p1);
    tu_assert_between(left(c), 500 * MS - slack, 500 * MS);
    ctx_release(c);
    ctx_release(parent);

    /* No deadline at all: no grpc-timeout, no limit. Still cancellable. */
    const char *none[] = {NULL};
    c = extract_pairs(ctx_background(), 0, 0, none);
    assert_false(ctx_deadline(c, NULL));
    assert_int_equal(ctx_cancel_cause(c, ECONNRESET), 0);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    assert_int_equal(ctx_cause(c), ECONNRESET);
    ctx_release(c);

    /* Invalid or duplicated values are ignored (the limit still applies). */
    static const char *const ignored[] = {"abc", "1", "123456789S", "-1S", ""};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        const char *p[] = {"grpc-timeout", ignored[i], NULL};
        c = extract_pairs(ctx_background(), 0, 0, p);
        assert_non_null(c);
        assert_false(ctx_deadline(c, NULL));
        ctx_release(c);
        c = extract_pairs(ctx_background(), 2 * CTX_SECOND, 0, p);
        tu_assert_between(left(c), 2 * CTX_SECOND - slack, 2 * CTX_SECOND);
        ctx_release(c);
    }
    const char *dup[] = {"grpc-timeout", "1S", "grpc-timeout", "2S", NULL};
    c = extract_pairs(ctx_background(), 0, 0, dup);
    assert_false(ctx_deadline(c, NULL));
    ctx_release(c);

    /* Not asked for: ignored. */
    c = extract_pairs(ctx_background(), 0, CTX_PROPAGATE_TRACE, p1);
    assert_false(ctx_deadline(c, NULL));
    ctx_release(c);
}

static void test_done_at_birth(void **state)
{
    (void)state;
    const char *zero[] = {"grpc-timeout", "0n", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, zero);
    assert_non_null(c);
    assert_true(ctx_is_done(c));
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    ctx_release(c);

    /* A context whose deadline has passed injects "0n"; the receiver's
     * context is done at birth. */
    ctx_t *old = ctx_with_deadline(ctx_background(), ctx_now() - CTX_SECOND);
    struct hmap m = {0};
    ctx_carrier_t car = carrier_of(&m);
    assert_int_equal(ctx_propagate_inject(old, &car, CTX_PROPAGATE_DEADLINE), 0);
    assert_string_equal(hmap_find(&m, "grpc-timeout"), "0n");
    c = ctx_propagate_extract(ctx_background(), &car, 0, 0);
    assert_true(ctx_is_done(c));
    assert_int_equal(ctx_err(c), CTX_DEADLINE_EXCEEDED);
    ctx_release(c);
    hmap_clear(&m);
    ctx_release(old);

    /* 1 ns has passed by the time the context is made. */
    const char *one[] = {"grpc-timeout", "1n", NULL};
    c = extract_pairs(ctx_background(), 0, 0, one);
    assert_int_equal(ctx_wait_until(c, ctx_now() + TU_PROMPT),
                     CTX_DEADLINE_EXCEEDED);
    ctx_release(c);

    /* A done parent gives a done child, with the parent's err. */
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_cancel(p);
    const char *ten[] = {"grpc-timeout", "10S", NULL};
    c = extract_pairs(p, 0, 0, ten);
    assert_int_equal(ctx_err(c), CTX_CANCELED);
    ctx_release(c);
    ctx_release(p);
}

/* ---- traceparent --------------------------------------------------------- */

static void test_traceparent_valid(void **state)
{
    (void)state;
    const char *pairs[] = {"traceparent", "00-" TID "-" PID "-01", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, pairs);
    char id[33], pid[17], sid[17];
    trace_id_hex(c, id);
    assert_string_equal(id, TID);
    uint8_t b[8];
    assert_true(ctx_trace_parent_id(c, b));
    hex(b, 8, pid);
    assert_string_equal(pid, PID);
    assert_true(ctx_trace_span_id(c, b));
    hex(b, 8, sid);
    assert_string_not_equal(sid, PID);
    assert_string_not_equal(sid, "0000000000000000");
    assert_int_equal(ctx_trace_flags(c), 1);
    char tp[64];
    assert_int_equal(ctx_trace_format(c, tp, sizeof tp), 55);
    char expect[64];
    snprintf(expect, sizeof expect, "00-%s-%s-01", TID, sid);
    assert_string_equal(tp, expect);
    ctx_release(c);

    /* The spec's examples, OWS around the value, names in any case (the
     * carrier's job), future versions. */
    assert_tp_valid("00-" TID "-" PID "-00");
    assert_tp_valid(" 00-" TID "-" PID "-01");
    assert_tp_valid("\t00-" TID "-" PID "-01");
    assert_tp_valid("00-" TID "-" PID "-01 ");
    assert_tp_valid("00-" TID "-" PID "-01\t");
    assert_tp_valid("\t 00-" TID "-" PID "-01 \t");
    assert_tp_valid("00-" TID "-" PID "-ff"); /* unknown flags: accepted */
    assert_tp_valid("cc-" TID "-" PID "-01");
    assert_tp_valid("cc-" TID "-" PID "-01-what-the-future-will-be-like");
    assert_tp_valid("01-" TID "-" PID "-01-");
    assert_tp_valid("fe-" TID "-" PID "-00-x");
    const char *casing[] = {"TrAcEpArEnT", "00-" TID "-" PID "-01", NULL};
    c = extract_pairs(ctx_background(), 0, 0, casing);
    trace_id_hex(c, id);
    assert_string_equal(id, TID);
    ctx_release(c);
    /* A higher version: only its sampled bit is read. */
    const char *hv[] = {"traceparent", "cc-" TID "-" PID "-ff-x", NULL};
    c = extract_pairs(ctx_background(), 0, 0, hv);
    assert_int_equal(ctx_trace_flags(c), 1);
    ctx_release(c);
    const char *v0[] = {"traceparent", "00-" TID "-" PID "-ff", NULL};
    c = extract_pairs(ctx_background(), 0, 0, v0);
    assert_int_equal(ctx_trace_flags(c), 0xff); /* as received; sent as 01 */
    ctx_release(c);
    const char *ex[] = {"traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        NULL};
    c = extract_pairs(ctx_background(), 0, 0, ex);
    trace_id_hex(c, id);
    assert_string_equal(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    ctx_release(c);
}

static void test_traceparent_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00",
        "00-" TID "-" PID "-01.",                                /* trailing */
        "00-" TID "-" PID "-01-what-the-future-will-be-like",    /* 00 is 55 */
        "00-" TID "-" PID "-01-",
        "cc-" TID "-" PID "-01.what-the-future-will-be-like",
        "ff-" TID "-" PID "-01",                                 /* version ff */
        ".0-" TID "-" PID "-01",
        "0.-" TID "-" PID "-01",
        "000-" TID "-" PID "-01",
        "0000-" TID "-" PID "-01",
        "0-" TID "-" PID "-01",
        "00-00000000000000000000000000000000-" PID "-01",        /* zero id */
        "00-.2345678901234567890123456789012-" PID "-01",
        "00-1234567890123456789012345678901.-" PID "-01",
        "00-123456789012345678901234567890123-" PID "-01",
        "00-1234567890123456789012345678901-" PID "-01",
        "00-" TID "-0000000000000000-01",                        /* zero parent */
        "00-" TID "-.234567890123456-01",
        "00-" TID "-123456789012345.-01",
        "00-" TID "-12345678901234567-01",
        "00-" TID "-123456789012345-01",
        "00-" TID "-" PID "-.0",
        "00-" TID "-" PID "-0.",
        "00-" TID "-" PID "-001",
        "00-" TID "-" PID "-1",
        "00-1234567890ABCDEF1234567890123456-" PID "-01",        /* uppercase */
        "00-" TID "-1234567890ABCDEF-01",
        "00-" TID "-" PID "-0A",
        "0A-" TID "-" PID "-01",
        "00_" TID "_" PID "_01",
        "00-" TID "-" PID "-01\n",
        "cc-" TID "-" PID,                                       /* short */
        "cc-00000000000000000000000000000000-" PID "-01-x",
        "00-" TID "-" PID "-01,00-" TID "-" PID "-01",           /* joined */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_tp_invalid(bad[i]);

    /* Two traceparent lines: invalid, even when equal. */
    const char *dup[] = {"traceparent", "00-" TID "-" PID "-01",
                         "traceparent", "00-" TID "-" PID "-01", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, dup);
    char id[33];
    trace_id_hex(c, id);
    assert_string_not_equal(id, TID);
    ctx_release(c);

    /* Wrong names are not traceparent. Missing: a new trace. */
    const char *names[] = {"trace-parent", "00-" TID "-" PID "-01",
                           "trace.parent", "00-" TID "-" PID "-01", NULL};
    c = extract_pairs(ctx_background(), 0, 0, names);
    trace_id_hex(c, id);
    assert_string_not_equal(id, TID);
    ctx_release(c);

    /* Two restarts give two different traces. */
    const char *none[] = {NULL};
    ctx_t *a = extract_pairs(ctx_background(), 0, 0, none);
    ctx_t *b = extract_pairs(ctx_background(), 0, 0, none);
    char ia[33], ib[33];
    trace_id_hex(a, ia);
    trace_id_hex(b, ib);
    assert_string_not_equal(ia, ib);
    ctx_release(a);
    ctx_release(b);
}

/* ---- tracestate ---------------------------------------------------------- */

static void test_tracestate(void **state)
{
    (void)state;
    TS1("foo=1,bar=2", "foo=1,bar=2");
    TS1("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    TS1("", NULL);
    TS1(" , ,\t", NULL);
    TS1("foo=1 \t , \t bar=2, \t baz=3", "foo=1,bar=2,baz=3");
    TS1("foo=1\t \t,\t \tbar=2,\t \tbaz=3", "foo=1,bar=2,baz=3");
    TS1(" foo=1", "foo=1");
    TS1("\tfoo=1", "foo=1");
    TS1("foo=1 ", "foo=1");
    TS1("foo=1\t", "foo=1");
    TS1("\t foo=1 \t", "foo=1");
    TS1("foo=1,,bar=2,", "foo=1,bar=2"); /* empty members skipped */
    TS1("foo= 1", "foo= 1");             /* leading spaces are the value's */
    TS1("foo=a b", "foo=a b");
    TS1("0tenant@vendor=1", "0tenant@vendor=1");
    /* Dropped whole: the W3C suite's strict cases. */
    TS1("foo=1,foo=1", NULL);
    TS1("foo=1,foo=2", NULL);
    TS1("foo =1", NULL);
    TS1("FOO=1", NULL);
    TS1("foo.bar=1", NULL);
    TS1("foo@=1,bar=2", NULL);
    TS1("@foo=1,bar=2", NULL);
    TS1("foo@@bar=1,bar=2", NULL);
    TS1("foo@bar@baz=1,bar=2", NULL);
    TS1("foo=bar=baz", NULL);
    TS1("foo=,bar=3", NULL);
    TS1("foo", NULL);
    TS1("=1", NULL);
    TS1("1foo=1", NULL);         /* a simple key starts with a letter */
    TS1("foo@1vendor=1", NULL);  /* so does a system id */
    TS1("foo=1\tx", NULL);       /* tab inside a value */
    TS1("foo=\x7f", NULL);
    TS1("foo=\xc3\xa9", NULL);

    /* Several lines: combined in order; an empty line is fine; duplicate
     * keys across lines drop it all. */
    const char *l1[] = {"foo=1,bar=2", "rojo=1,congo=2", "baz=3", NULL};
    assert_ts(l1, "foo=1,bar=2,rojo=1,congo=2,baz=3");
    const char *l2[] = {"foo=1", "", NULL};
    assert_ts(l2, "foo=1");
    const char *l3[] = {"", "foo=1", NULL};
    assert_ts(l3, "foo=1");
    const char *l4[] = {"foo=1", "foo=1", NULL};
    assert_ts(l4, NULL);
    const char *l5[] = {"foo=1", "foo=2", NULL};
    assert_ts(l5, NULL);

    /* 32 members kept, 33 dropped. */
    char line[4][128];
    char expect[512] = "";
    for (int i = 0; i < 4; i++) {
        line[i][0] = '\0';
        for (int j = 1; j <= 10; j++) {
            int k = i * 10 + j;
            if (k > 32)
                break;
            char mbr[16];
            snprintf(mbr, sizeof mbr, "%sbar%02d=%02d", j > 1 ? "," : "", k, k);
            strcat(line[i], mbr);
            snprintf(mbr, sizeof mbr, "%sbar%02d=%02d", k > 1 ? "," : "", k, k);
            strcat(expect, mbr);
        }
    }
    const char *m32[] = {line[0], line[1], line[2], line[3], NULL};
    assert_ts(m32, expect);
    strcat(line[3], ",bar33=33");
    assert_ts(m32, NULL);

    /* Key lengths: 256 / 257, tenant 241 / 242, system 14 / 15. */
    char key[600];
    memset(key, 'z', 256);
    strcpy(key + 256, "=1");
    const char *k256[] = {"foo=1", key, NULL};
    char *got = ts_of(k256);
    assert_non_null(got);
    assert_int_equal(strncmp(got, "foo=1,zzz", 9), 0);
    free(got);
    memset(key, 'z', 257);
    strcpy(key + 257, "=1");
    assert_ts(k256, NULL);
    memset(key, 't', 241);
    key[241] = '@';
    memset(key + 242, 'v', 14);
    strcpy(key + 256, "=1");
    got = ts_of(k256);
    assert_non_null(got);
    free(got);
    memset(key, 't', 242);
    strcpy(key + 242, "@v=1");
    assert_ts(k256, NULL);
    strcpy(key, "t@");
    memset(key + 2, 'v', 15);
    strcpy(key + 17, "=1");
    assert_ts(k256, NULL);
    /* Value lengths: 256 / 257. */
    strcpy(key, "bar=");
    memset(key + 4, 'v', 256);
    key[260] = '\0';
    got = ts_of(k256);
    assert_non_null(got);
    free(got);
    memset(key + 4, 'v', 257);
    key[261] = '\0';
    assert_ts(k256, NULL);

    /* Every allowed character. */
    char all[512], val[256];
    size_t n = 0;
    for (int ch = 0x20; ch <= 0x7e; ch++)
        if (ch != ',' && ch != '=')
            val[n++] = (char)ch;
    val[n] = '\0';
    snprintf(all, sizeof all, "abcdefghijklmnopqrstuvwxyz0123456789_-*/=%s", val);
    TS1(all, all);
    snprintf(all, sizeof all,
             "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/=%s", val);
    TS1(all, all);

    /* Without a (valid) traceparent, tracestate is not even parsed. */
    const char *orphan[] = {"tracestate", "foo=1", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, orphan);
    assert_null(ctx_trace_state(c));
    ctx_release(c);

    /* A carrier with get() only: the joined value works too. */
    struct hmap m = {0};
    hmap_add(&m, "traceparent", "00-" TID "-" PID "-00");
    hmap_add(&m, "tracestate", "a=1, b=2");
    ctx_carrier_t only_get = {.self = &m, .get = hmap_get};
    c = ctx_propagate_extract(ctx_background(), &only_get, 0, 0);
    assert_string_equal(ctx_trace_state(c), "a=1,b=2");
    ctx_release(c);
    hmap_clear(&m);
}

/* ---- inject -------------------------------------------------------------- */

static void test_inject(void **state)
{
    (void)state;
    const char *in[] = {"traceparent", "cc-" TID "-" PID "-ff-future",
                        "tracestate", "congo=t61rcWkgMzE , rojo=1",
                        "baggage", "a=1", NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, in);
    uint8_t span[8];
    assert_true(ctx_trace_span_id(c, span));
    char sid[17];
    hex(span, 8, sid);

    /* A new parent id per call; version 00; only the sampled flag. */
    char seen[3][17];
    for (int i = 0; i < 3; i++) {
        struct hmap m = {0};
        ctx_carrier_t car = carrier_of(&m);
        assert_int_equal(ctx_propagate_inject(c, &car, CTX_PROPAGATE_ALL), 0);
        const char *tp = hmap_find(&m, "traceparent");
        assert_non_null(tp);
        assert_int_equal(strlen(tp), 55);
        assert_int_equal(strncmp(tp, "00-" TID "-", 36), 0);
        assert_string_equal(tp + 52, "-01");
        memcpy(seen[i], tp + 36, 16);
        seen[i][16] = '\0';
        assert_string_not_equal(seen[i], PID);
        assert_string_not_equal(seen[i], sid);
        assert_string_equal(hmap_find(&m, "tracestate"),
                            "congo=t61rcWkgMzE,rojo=1");
        assert_string_equal(hmap_find(&m, "baggage"), "a=1");
        assert_null(hmap_find(&m, "grpc-timeout")); /* no deadline */
        hmap_clear(&m);
    }
    assert_string_not_equal(seen[0], seen[1]);
    assert_string_not_equal(seen[1], seen[2]);
    assert_string_not_equal(seen[0], seen[2]);

    /* KEEP_SPAN sends the context's own span id. */
    struct hmap m = {0};
    ctx_carrier_t car = carrier_of(&m);
    assert_int_equal(ctx_propagate_inject(c, &car, CTX_PROPAGATE_TRACE |
                                                       CTX_PROPAGATE_KEEP_SPAN),
                     0);
    char expect[64];
    snprintf(expect, sizeof expect, "00-%s-%s-01", TID, sid);
    assert_string_equal(hmap_find(&m, "traceparent"), expect);
    assert_null(hmap_find(&m, "baggage")); /* not asked for */
    hmap_clear(&m);

    /* `what` selects; a failing set() stops and reports its error. */
    ctx_t *d = ctx_with_timeout(c, 2 * CTX_SECOND);
    assert_int_equal(ctx_propagate_inject(d, &car, CTX_PROPAGATE_DEADLINE), 0);
    assert_int_equal(m.n, 1);
    ctx_duration_t t;
    assert_int_equal(ctx_grpc_timeout_parse(hmap_find(&m, "grpc-timeout"), &t), 0);
    tu_assert_between(t, 2 * CTX_SECOND - TU_PROMPT, 2 * CTX_SECOND);
    hmap_clear(&m);
    m.fail_set = 2;
    assert_int_equal(ctx_propagate_inject(d, &car, 0), EIO);
    assert_int_equal(m.n, 1); /* the grpc-timeout before it */
    hmap_clear(&m);
    m.fail_set = 0;
    ctx_release(d);

    /* Nothing to inject from a bare context. */
    assert_int_equal(ctx_propagate_inject(ctx_background(), &car, 0), 0);
    assert_int_equal(m.n, 0);
    ctx_release(c);
}

static void test_round_trip(void **state)
{
    (void)state;
    ctx_t *root = ctx_trace_start(ctx_background(), CTX_TRACE_SAMPLED);
    ctx_t *b1 = ctx_with_baggage(root, "user", "alice smith");
    ctx_t *client = ctx_with_timeout(b1, 3 * CTX_SECOND);
    char tid[33];
    trace_id_hex(client, tid);
    uint8_t span[8];
    assert_true(ctx_trace_span_id(client, span));

    /* Hop 1: header map. */
    struct hmap m = {0};
    ctx_carrier_t car = carrier_of(&m);
    assert_int_equal(ctx_propagate_inject(client, &car, 0), 0);
    ctx_t *server = ctx_propagate_extract(ctx_background(), &car, 0, 0);
    char sent_parent[17];
    memcpy(sent_parent, hmap_find(&m, "traceparent") + 36, 16);
    sent_parent[16] = '\0';
    hmap_clear(&m);
    char got[33];
    trace_id_hex(server, got);
    assert_string_equal(got, tid);
    uint8_t pid[8];
    char pidh[17];
    assert_true(ctx_trace_parent_id(server, pid));
    hex(pid, 8, pidh);
    assert_string_equal(pidh, sent_parent);
    assert_int_equal(ctx_trace_flags(server), 1);
    tu_assert_between(left(server), 3 * CTX_SECOND - TU_PROMPT, 3 * CTX_SECOND);
    char v[64];
    assert_int_equal(ctx_baggage_get(server, "user", v, sizeof v), 11);
    assert_string_equal(v, "alice smith");
    assert_string_equal(ctx_baggage(server), "user=alice%20smith");

    /* Hop 2: a child process's environment. */
    char *base[] = {"PATH=/bin", "TRACEPARENT=stale", "HOME=/x", "GRPC_TIMEOUT=1H",
                    NULL};
    char **env = ctx_propagate_env(server, base, 0);
    assert_non_null(env);
    int ours = 0, kept = 0;
    for (char **p = env; *p != NULL; p++) {
        if (strcmp(*p, "PATH=/bin") == 0 || strcmp(*p, "HOME=/x") == 0)
            kept++;
        if (strncmp(*p, "TRACEPARENT=00-", 15) == 0 ||
            strncmp(*p, "GRPC_TIMEOUT=", 13) == 0 ||
            strcmp(*p, "BAGGAGE=user=alice%20smith") == 0)
            ours++;
        assert_string_not_equal(*p, "TRACEPARENT=stale");
        assert_string_not_equal(*p, "GRPC_TIMEOUT=1H");
    }
    assert_int_equal(kept, 2);
    assert_int_equal(ours, 3);
    ctx_t *child = ctx_propagate_extract_env(ctx_background(), env, 0, 0);
    ctx_propagate_env_free(env);
    trace_id_hex(child, got);
    assert_string_equal(got, tid);
    tu_assert_between(left(child), 3 * CTX_SECOND - TU_PROMPT, 3 * CTX_SECOND);
    assert_int_equal(ctx_baggage_get(child, "user", v, sizeof v), 11);

    /* The process's own environment (base NULL / envp NULL). */
    env = ctx_propagate_env(child, NULL, CTX_PROPAGATE_TRACE);
    assert_non_null(env);
    const char *tp = NULL;
    for (char **p = env; *p != NULL; p++)
        if (strncmp(*p, "TRACEPARENT=", 12) == 0)
            tp = *p + 12;
    assert_non_null(tp);
    assert_int_equal(setenv("TRACEPARENT", tp, 1), 0);
    ctx_propagate_env_free(env);
    ctx_t *self = ctx_propagate_extract_env(ctx_background(), NULL, 0, 0);
    trace_id_hex(self, got);
    assert_string_equal(got, tid);
    assert_int_equal(unsetenv("TRACEPARENT"), 0);
    ctx_release(self);

    /* Duplicate variables in an environment block: traceparent invalid. */
    char t1[80];
    snprintf(t1, sizeof t1, "TRACEPARENT=00-%s-%s-01", tid, sent_parent);
    char *dupenv[] = {t1, t1, NULL};
    self = ctx_propagate_extract_env(ctx_background(), dupenv, 0, 0);
    trace_id_hex(self, got);
    assert_string_not_equal(got, tid);
    ctx_release(self);
    ctx_propagate_env_free(NULL);

    ctx_release(child);
    ctx_release(server);
    ctx_release(client);
    ctx_release(b1);
    ctx_release(root);
}

/* ---- baggage ------------------------------------------------------------- */

static void test_baggage(void **state)
{
    (void)state;
    /* The spec's examples: OWS trimmed, properties and percent-encoding
     * kept, several lines combined. */
    const char *p1[] = {"baggage", "key1=value1;property1;property2, key2 = value2, "
                                   "key3=value3; propertyKey=propertyValue",
                        NULL};
    ctx_t *c = extract_pairs(ctx_background(), 0, 0, p1);
    assert_string_equal(ctx_baggage(c), "key1=value1;property1;property2,key2=value2,"
                                        "key3=value3;propertyKey=propertyValue");
    char v[64];
    assert_int_equal(ctx_baggage_get(c, "key3", v, sizeof v), 6);
    assert_string_equal(v, "value3");
    assert_int_equal(ctx_baggage_get(c, "nokey", v, sizeof v), -1);
    ctx_release(c);
    const char *p2[] = {"baggage", "userId =   alice",
                        "baggage", "serverNode = DF%2028, isProduction = false", NULL};
    c = extract_pairs(ctx_background(), 0, 0, p2);
    assert_string_equal(ctx_baggage(c),
                        "userId=alice,serverNode=DF%2028,isProduction=false");
    assert_int_equal(ctx_baggage_get(c, "serverNode", v, sizeof v), 5);
    assert_string_equal(v, "DF 28");
    assert_int_equal(ctx_baggage_get(c, "serverNode", v, 3), 5); /* snprintf */
    assert_string_equal(v, "DF");
    assert_int_equal(ctx_baggage_get(c, "serverNode", NULL, 0), 5);
    ctx_release(c);

    /* Invalid members dropped, the others kept; '=' inside values. */
    const char *p3[] = {"baggage", "good=1,bad key=2,\"q\"=3,x=a\\b,y=a=b,=z,noeq,"
                                   "p=1;bad prop,e=,ok=2",
                        NULL};
    c = extract_pairs(ctx_background(), 0, 0, p3);
    assert_string_equal(ctx_baggage(c), "good=1,y=a=b,e=,ok=2");
    ctx_release(c);
    const char *p4[] = {"baggage", " , ,", NULL};
    c = extract_pairs(ctx_background(), 0, 0, p4);
    assert_null(ctx_baggage(c));
    ctx_release(c);

    /* Limits: 180 members kept (at least 64 required), the 181st dropped. */
    char *big = malloc(8192 * 2);
    size_t len = 0;
    for (int i = 0; i < 181; i++)
        len += (size_t)sprintf(big + len, "%sk%d=v%d", i ? "," : "", i, i);
    const char *p5[] = {"baggage", big, NULL};
    c = extract_pairs(ctx_background(), 0, 0, p5);
    const char *b = ctx_baggage(c);
    assert_non_null(b);
    int members = 1;
    for (const char *q = b; *q; q++)
        members += *q == ',';
    assert_int_equal(members, 180);
    assert_int_equal(ctx_baggage_get(c, "k179", v, sizeof v), 4);
    assert_int_equal(ctx_baggage_get(c, "k180", v, sizeof v), -1);
    ctx_release(c);

    /* 8192 bytes kept: 64 members of 127 bytes + 63 commas = 8191. */
    len = 0;
    for (int i = 0; i < 64; i++) {
        len += (size_t)sprintf(big + len, "%sk%02d=", i ? "," : "", i);
        memset(big + len, 'v', 123);
        len += 123;
    }
    big[len] = '\0';
    assert_int_equal(len, 8191);
    c = extract_pairs(ctx_background(), 0, 0, p5);
    assert_int_equal(strlen(ctx_baggage(c)), 8191);
    ctx_release(c);
    /* One byte more than 8192 in total: the last member is dropped whole. */
    strcpy(big + len, ",z=12");
    c = extract_pairs(ctx_background(), 0, 0, p5);
    assert_int_equal(strlen(ctx_baggage(c)), 8191);
    assert_int_equal(ctx_baggage_get(c, "z", v, sizeof v), -1);
    ctx_release(c);
    free(big);

    /* ctx_with_baggage: encode, replace, limits. */
    ctx_t *a = ctx_with_baggage(ctx_background(), "k", "a,b;c%d é\"");
    assert_non_null(a);
    assert_string_equal(ctx_baggage(a), "k=a%2Cb%3Bc%25d%20%C3%A9%22");
    assert_int_equal(ctx_baggage_get(a, "k", v, sizeof v), 11);
    assert_string_equal(v, "a,b;c%d é\"");
    ctx_t *a2 = ctx_with_baggage(a, "j", "1");
    ctx_t *a3 = ctx_with_baggage(a2, "k", "2");
    assert_string_equal(ctx_baggage(a3), "j=1,k=2");
    assert_string_equal(ctx_baggage(a), "k=a%2Cb%3Bc%25d%20%C3%A9%22");
    errno = 0;
    assert_null(ctx_with_baggage(a3, "bad key", "1"));
    assert_int_equal(errno, EINVAL);
    assert_null(ctx_with_baggage(a3, "", "1"));
    char *huge = malloc(9000);
    memset(huge, 'x', 8999);
    huge[8999] = '\0';
    errno = 0;
    assert_null(ctx_with_baggage(a3, "h", huge));
    assert_int_equal(errno, EINVAL);
    free(huge);
    ctx_release(a3);
    ctx_release(a2);
    ctx_release(a);
}

/* ---- trace accessors, start, child ---------------------------------------- */

static void test_trace_accessors(void **state)
{
    (void)state;
    uint8_t id[16], s[8];
    char buf[64];
    assert_false(ctx_trace_id(ctx_background(), id));
    assert_false(ctx_trace_span_id(ctx_background(), s));
    assert_false(ctx_trace_parent_id(ctx_background(), s));
    assert_int_equal(ctx_trace_flags(ctx_background()), -1);
    assert_null(ctx_trace_state(ctx_background()));
    strcpy(buf, "x");
    assert_int_equal(ctx_trace_format(ctx_background(), buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    assert_null(ctx_baggage(ctx_background()));

    ctx_t *t = ctx_trace_start(ctx_background(), CTX_TRACE_SAMPLED);
    assert_non_null(t);
    assert_true(ctx_trace_id(t, id));
    assert_false(ctx_trace_parent_id(t, s)); /* a root span */
    assert_int_equal(ctx_trace_flags(t), CTX_TRACE_SAMPLED);
    assert_int_equal(ctx_trace_format(t, NULL, 0), 55);
    assert_int_equal(ctx_trace_format(t, buf, 10), 55);
    assert_int_equal(strlen(buf), 9);

    /* Values are inherited by descendants, and survive cancellation. */
    ctx_t *k = ctx_with_cancel(t);
    ctx_t *ch = ctx_trace_child(k);
    uint8_t id2[16], ps[8], cs[8], cp[8];
    assert_true(ctx_trace_id(ch, id2));
    assert_memory_equal(id, id2, 16);
    assert_true(ctx_trace_span_id(t, ps));
    assert_true(ctx_trace_span_id(ch, cs));
    assert_true(ctx_trace_parent_id(ch, cp));
    assert_memory_equal(cp, ps, 8);
    assert_memory_not_equal(cs, ps, 8);
    ctx_cancel(k);
    assert_true(ctx_trace_id(ch, id2));
    ctx_release(ch);
    ctx_release(k);

    /* A child of a context without a trace starts one. */
    ctx_t *fresh = ctx_trace_child(ctx_background());
    assert_true(ctx_trace_id(fresh, id2));
    assert_false(ctx_trace_parent_id(fresh, cp));
    assert_int_equal(ctx_trace_flags(fresh), 0);
    ctx_release(fresh);

    /* A child keeps the tracestate. */
    const char *in[] = {"traceparent", "00-" TID "-" PID "-00", "tracestate", "a=1",
                        NULL};
    ctx_t *x = extract_pairs(ctx_background(), 0, 0, in);
    ctx_t *xc = ctx_trace_child(x);
    assert_string_equal(ctx_trace_state(xc), "a=1");
    ctx_release(xc);
    ctx_release(x);

    /* Extract without TRACE: no trace context; without BAGGAGE: none. */
    const char *all[] = {"traceparent", "00-" TID "-" PID "-00", "baggage", "a=1",
                         NULL};
    x = extract_pairs(ctx_background(), 0, CTX_PROPAGATE_DEADLINE, all);
    assert_false(ctx_trace_id(x, id));
    assert_null(ctx_baggage(x));
    ctx_release(x);
    ctx_release(t);
}

/* Ids differ across fork() (the child reseeds) and threads. */
static void test_ids_unique(void **state)
{
    (void)state;
    ctx_t *t = ctx_trace_start(ctx_background(), 0); /* seeds this thread */
    ctx_release(t);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t id[16] = {0};
        ctx_t *c = ctx_trace_start(ctx_background(), 0);
        ctx_trace_id(c, id);
        ctx_release(c); /* nothing left for valgrind to call a leak */
        _exit(write(fds[1], id, 16) == 16 ? 0 : 1);
    }
    uint8_t mine[16], theirs[16];
    ctx_t *c = ctx_trace_start(ctx_background(), 0);
    assert_true(ctx_trace_id(c, mine));
    ctx_release(c);
    assert_int_equal(read(fds[0], theirs, 16), 16);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fds[0]);
    close(fds[1]);
    assert_memory_not_equal(mine, theirs, 16);
}

struct idrun {
    uint8_t ids[64][8];
};

static void *id_main(void *arg)
{
    struct idrun *r = arg;
    for (int i = 0; i < 64; i++) {
        ctx_t *c = ctx_trace_start(ctx_background(), 0);
        ctx_trace_span_id(c, r->ids[i]);
        ctx_release(c);
    }
    return NULL;
}

static void test_ids_threads(void **state)
{
    (void)state;
    struct idrun r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        th[i] = tu_spawn(id_main, &r[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int a = 0; a < 4 * 64; a++)
        for (int b = a + 1; b < 4 * 64; b++)
            assert_memory_not_equal(r[a / 64].ids[a % 64], r[b / 64].ids[b % 64], 8);
}

static size_t liar_get_all(void *self, const char *key, const char **values,
                           size_t max)
{
    (void)self;
    if (strcmp(key, "traceparent") == 0) {
        values[0] = "00-" TID "-" PID "-01";
        return 1;
    }
    if (max > 0)
        values[0] = NULL;
    return max + 1;
}

/* ---- bad arguments --------------------------------------------------------- */

static void test_bad_args(void **state)
{
    (void)state;
    struct hmap m = {0};
    ctx_carrier_t car = carrier_of(&m);
    ctx_carrier_t empty = {0};
    assert_int_equal(ctx_propagate_inject(NULL, &car, 0), EINVAL);
    assert_int_equal(ctx_propagate_inject(ctx_background(), NULL, 0), EINVAL);
    assert_int_equal(ctx_propagate_inject(ctx_background(), &empty, 0), EINVAL);
    assert_int_equal(ctx_propagate_inject(ctx_background(), &car, 16), EINVAL);
    errno = 0;
    assert_null(ctx_propagate_extract(NULL, &car, 0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_extract(ctx_background(), NULL, 0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_extract(ctx_background(), &empty, 0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_extract(ctx_background(), &car, 0, 0x100));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_env(NULL, NULL, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_env(ctx_background(), NULL, 99));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_propagate_extract_env(NULL, NULL, 0, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_trace_start(NULL, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_trace_child(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_baggage(NULL, "a", "b"));
    assert_int_equal(errno, EINVAL);
    assert_null(ctx_with_baggage(ctx_background(), NULL, "b"));
    assert_null(ctx_with_baggage(ctx_background(), "a", NULL));
    uint8_t b[16];
    assert_false(ctx_trace_id(NULL, b));
    assert_false(ctx_trace_span_id(NULL, b));
    assert_false(ctx_trace_parent_id(NULL, b));
    assert_int_equal(ctx_trace_flags(NULL), -1);
    assert_null(ctx_trace_state(NULL));
    assert_int_equal(ctx_trace_format(NULL, NULL, 0), 0);
    assert_null(ctx_baggage(NULL));
    assert_int_equal(ctx_baggage_get(NULL, "a", NULL, 0), -1);
    ctx_t *t = ctx_trace_start(ctx_background(), 0);
    assert_false(ctx_trace_id(t, NULL));
    assert_false(ctx_trace_span_id(t, NULL));
    ctx_release(t);
    ctx_t *bg = ctx_with_baggage(ctx_background(), "a", "b");
    assert_int_equal(ctx_baggage_get(bg, NULL, NULL, 0), -1);
    ctx_release(bg);

    /* A carrier whose get_all() reports more lines than it stores, or
     * stores NULL, is survived. */
    ctx_carrier_t liar = {.self = &m, .get_all = liar_get_all};
    ctx_t *c = ctx_propagate_extract(ctx_background(), &liar, 0, 0);
    assert_non_null(c);
    ctx_release(c);
    hmap_clear(&m);
}

/* ---- allocation failure ------------------------------------------------- */

#ifdef CTX_FAULT_INJECTION
/* Fails the 1st, 2nd ... allocation of op until it succeeds: each failure
 * is NULL with ENOMEM, and nothing leaks (ASan and the live count). */
static long live_now(void)
{
#ifdef CTX_DEBUG
    return ctx__live_contexts();
#else
    return 0;
#endif
}

static void fault_loop(const char *name, void *(*op)(void), void (*undo)(void *))
{
    long live = live_now();
    for (long n = 1;; n++) {
        ctx__fault_fail_nth(n);
        errno = 0;
        void *r = op();
        bool hit = ctx__fault_triggered();
        int e = errno;
        ctx__fault_fail_nth(0);
        if (!hit) {
            assert_non_null(r);
            undo(r);
            printf("%s: %ld allocation failure points\n", name, n - 1);
            return;
        }
        if (r != NULL)
            fail_msg("%s: allocation %ld failed but the call succeeded", name, n);
        assert_int_equal(e, ENOMEM);
        assert_int_equal(live_now(), live); /* nothing left half-made */
    }
}

static struct hmap fault_map;

static void *op_extract(void)
{
    ctx_carrier_t c = carrier_of(&fault_map);
    return ctx_propagate_extract(ctx_background(), &c, CTX_SECOND, 0);
}

static ctx_t *fault_src;

static void *op_env(void)
{
    char *base[] = {"A=1", "B=2", NULL};
    return ctx_propagate_env(fault_src, base, 0);
}

static void *op_start(void)
{
    return ctx_trace_start(ctx_background(), 1);
}

static void *op_baggage(void)
{
    return ctx_with_baggage(ctx_background(), "k", "v");
}

static void undo_ctx(void *p)
{
    ctx_release(p);
}

static void undo_env(void *p)
{
    ctx_propagate_env_free(p);
}
#endif

static void test_out_of_memory(void **state)
{
    (void)state;
#ifdef CTX_FAULT_INJECTION
    hmap_add(&fault_map, "traceparent", "00-" TID "-" PID "-01");
    hmap_add(&fault_map, "tracestate", "a=1");
    hmap_add(&fault_map, "baggage", "b=2");
    hmap_add(&fault_map, "grpc-timeout", "5S");
    fault_loop("extract", op_extract, undo_ctx);
    fault_src = op_extract();
    assert_non_null(fault_src);
    fault_loop("env", op_env, undo_env);
    ctx_release(fault_src);
    fault_loop("trace_start", op_start, undo_ctx);
    fault_loop("with_baggage", op_baggage, undo_ctx);
    hmap_clear(&fault_map);
#else
    printf("out of memory: fault injection not built (CTX_FAULT_INJECTION)\n");
#endif
}

int main(void)
{
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR)); /* timer */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_timeout_format),
        cmocka_unit_test(test_grpc_timeout_parse),
        cmocka_unit_test_setup_teardown(test_deadline_extract, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_done_at_birth, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_traceparent_valid, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_traceparent_invalid, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_tracestate, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_inject, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_baggage, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_trace_accessors, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_ids_unique, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_ids_threads, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, tu_count_setup, tu_count_teardown),
    };
    return cmocka_run_group_tests_name("propagate", tests, NULL, NULL);
}
