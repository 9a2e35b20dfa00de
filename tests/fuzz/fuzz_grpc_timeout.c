/* libFuzzer target: grpc-timeout. Any bytes: parse never crashes and agrees
 * with a plain reading of the grammar (1-8 digits and a unit, OWS around);
 * what parses formats back to at most 9 characters that parse to at least
 * the same value; extract gives a deadline exactly when the value is
 * valid, and a context done at birth for 0. */
#include "fuzz_common.h"

#include <limits.h>

static int64_t unit_ns(char u)
{
    switch (u) {
    case 'n': return 1;
    case 'u': return 1000;
    case 'm': return 1000000;
    case 'S': return 1000000000;
    case 'M': return 60LL * 1000000000;
    case 'H': return 3600LL * 1000000000;
    default: return 0;
    }
}

/* The reference reading, written independently of the library's. */
static int ref_parse(const char *s, int64_t *out)
{
    size_t len = strlen(s), b = 0, e = len;
    while (b < e && (s[b] == ' ' || s[b] == '\t'))
        b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
        e--;
    if (e - b < 2 || e - b > 9 || unit_ns(s[e - 1]) == 0)
        return -1;
    long long v = 0;
    for (size_t i = b; i < e - 1; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    /* v < 10^8 and the unit <= 3.6e12: saturate without a 128-bit type
     * (there is none on 32-bit targets). */
    int64_t unit = unit_ns(s[e - 1]);
    *out = v > INT64_MAX / unit ? INT64_MAX : (int64_t)v * unit;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_carrier fc;
    fuzz_lines(&fc, CTX_PROPAGATE_KEY_GRPC_TIMEOUT, data, size);
    const char *s = fc.lines[0];

    ctx_duration_t d = -12345;
    int rc = ctx_grpc_timeout_parse(s, &d);
    int64_t ref = 0;
    int rrc = ref_parse(s, &ref);
    FUZZ_CHECK((rc == 0) == (rrc == 0));
    if (rc == 0) {
        FUZZ_CHECK(d == ref && d >= 0);
        char buf[CTX_GRPC_TIMEOUT_SIZE + 8];
        memset(buf, 0x55, sizeof buf);
        size_t n = ctx_grpc_timeout_format(d, buf);
        FUZZ_CHECK(n >= 2 && n <= 9 && buf[n] == '\0' && strlen(buf) == n);
        FUZZ_CHECK(buf[CTX_GRPC_TIMEOUT_SIZE] == 0x55); /* no overrun */
        ctx_duration_t back;
        FUZZ_CHECK(ctx_grpc_timeout_parse(buf, &back) == 0);
        FUZZ_CHECK(back >= d);
    } else {
        FUZZ_CHECK(rc == EINVAL && d == -12345);
    }
    /* Any 8 bytes as a duration format and parse back. */
    if (size >= 8) {
        int64_t any;
        memcpy(&any, data, 8);
        char buf[CTX_GRPC_TIMEOUT_SIZE];
        size_t n = ctx_grpc_timeout_format(any, buf);
        FUZZ_CHECK(n >= 2 && n <= 9);
        ctx_duration_t back;
        FUZZ_CHECK(ctx_grpc_timeout_parse(buf, &back) == 0);
        FUZZ_CHECK(any <= 0 ? back == 0 : back >= any);
    }

    /* Through extract: a deadline iff exactly one valid line. */
    ctx_carrier_t car = fuzz_carrier_of(&fc);
    ctx_t *c = ctx_propagate_extract(ctx_background(), &car, 0,
                                     CTX_PROPAGATE_DEADLINE);
    FUZZ_CHECK(c != NULL);
    bool want = fc.n == 1 && rc == 0;
    FUZZ_CHECK(ctx_deadline(c, NULL) == want);
    if (want && d == 0)
        FUZZ_CHECK(ctx_err(c) == CTX_DEADLINE_EXCEEDED);
    ctx_release(c);
    fuzz_lines_free(&fc);
    return 0;
}
