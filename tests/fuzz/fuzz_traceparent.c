/* libFuzzer target: traceparent. Any bytes (lines split at '\n' are
 * several traceparent fields): extract never crashes; it keeps the trace
 * exactly when a regular-expression reading of W3C Trace Context Level 1
 * accepts the one line (version ff and all-zero ids excluded, version 00
 * exactly 55 characters); otherwise it restarts the trace (new non-zero
 * id, no parent, tracestate dropped). What it injects parses back. */
#include "fuzz_common.h"

#include <regex.h>

static regex_t re;
static int re_ready;

static int hexv(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

/* The reference: 1 if the trimmed value must be accepted (and its ids). */
static int ref_accept(const char *s, uint8_t tid[16], uint8_t pid[8],
                      uint8_t *flags)
{
    if (!re_ready) {
        FUZZ_CHECK(regcomp(&re,
                           "^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-"
                           "([0-9a-f]{2})(-[^\n]*)?[ \t]*$",
                           REG_EXTENDED) == 0);
        re_ready = 1;
    }
    /* regexec stops at the NUL, as the library must. The suffix group is
     * greedy over anything but '\n', trailing OWS is then trimmed. */
    regmatch_t m[6];
    if (regexec(&re, s, 6, m, 0) != 0)
        return 0;
    const char *v = s + m[1].rm_so;
    int version = hexv(v[0]) * 16 + hexv(v[1]);
    if (version == 0xff)
        return 0;
    if (version == 0 && m[5].rm_so != -1) {
        /* A suffix made only of OWS was trimmed; anything else is extra. */
        return 0;
    }
    const char *t = s + m[2].rm_so, *p = s + m[3].rm_so, *f = s + m[4].rm_so;
    int nz = 0;
    for (int i = 0; i < 16; i++) {
        tid[i] = (uint8_t)(hexv(t[2 * i]) * 16 + hexv(t[2 * i + 1]));
        nz |= tid[i];
    }
    if (!nz)
        return 0;
    nz = 0;
    for (int i = 0; i < 8; i++) {
        pid[i] = (uint8_t)(hexv(p[2 * i]) * 16 + hexv(p[2 * i + 1]));
        nz |= pid[i];
    }
    if (!nz)
        return 0;
    *flags = (uint8_t)(hexv(f[0]) * 16 + hexv(f[1]));
    if (version != 0)
        *flags &= 1; /* only the sampled bit of a higher version */
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_carrier fc;
    fuzz_lines(&fc, CTX_PROPAGATE_KEY_TRACEPARENT, data, size);
    fc.extra_key[0] = CTX_PROPAGATE_KEY_TRACESTATE;
    fc.extra_val[0] = "a=1";
    fc.nextra = 1;
    ctx_carrier_t car = fuzz_carrier_of(&fc);
    ctx_t *c = ctx_propagate_extract(ctx_background(), &car, 0, 0);
    FUZZ_CHECK(c != NULL);

    uint8_t tid[16], pid[8], rt[16], rp[8], rf = 0, span[8];
    int accept = fc.n == 1 && ref_accept(fc.lines[0], rt, rp, &rf);
    FUZZ_CHECK(ctx_trace_id(c, tid));
    FUZZ_CHECK(ctx_trace_span_id(c, span));
    static const uint8_t zero[16];
    FUZZ_CHECK(memcmp(tid, zero, 16) != 0 && memcmp(span, zero, 8) != 0);
    if (accept) {
        FUZZ_CHECK(memcmp(tid, rt, 16) == 0);
        FUZZ_CHECK(ctx_trace_parent_id(c, pid) && memcmp(pid, rp, 8) == 0);
        FUZZ_CHECK(ctx_trace_flags(c) == rf);
        FUZZ_CHECK(ctx_trace_state(c) != NULL &&
                   strcmp(ctx_trace_state(c), "a=1") == 0);
    } else {
        FUZZ_CHECK(!ctx_trace_parent_id(c, pid));
        FUZZ_CHECK(ctx_trace_flags(c) == 0);
        FUZZ_CHECK(ctx_trace_state(c) == NULL);
    }

    /* Inject: version 00, 55 characters, accepted by the next hop with the
     * same trace id and the sampled flag only. */
    struct fuzz_out out = {0};
    ctx_carrier_t oc = {.self = &out, .set = fuzz_out_set, .get = fuzz_out_get};
    FUZZ_CHECK(ctx_propagate_inject(c, &oc, CTX_PROPAGATE_TRACE) == 0);
    const char *tp = fuzz_out_get(&out, CTX_PROPAGATE_KEY_TRACEPARENT);
    FUZZ_CHECK(tp != NULL && strlen(tp) == 55 && tp[0] == '0' && tp[1] == '0');
    FUZZ_CHECK(ref_accept(tp, rt, rp, &rf) && memcmp(rt, tid, 16) == 0);
    FUZZ_CHECK(rf == (ctx_trace_flags(c) & 1));
    ctx_t *c2 = ctx_propagate_extract(ctx_background(), &oc, 0, 0);
    FUZZ_CHECK(c2 != NULL && ctx_trace_id(c2, rt) && memcmp(rt, tid, 16) == 0);
    ctx_release(c2);
    fuzz_out_free(&out);

    char buf[64];
    FUZZ_CHECK(ctx_trace_format(c, buf, sizeof buf) == 55 && strlen(buf) == 55);
    ctx_release(c);
    fuzz_lines_free(&fc);
    return 0;
}
