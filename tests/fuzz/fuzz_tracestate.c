/* libFuzzer target: tracestate. Any bytes, split at '\n' into several
 * tracestate fields beside a valid traceparent: extract never crashes;
 * the traceparent is never affected; a kept tracestate has 1 to 32
 * members, each valid by a reading of the Level 1 grammar written here,
 * with distinct keys; normalising is idempotent (extracting the kept
 * value again gives the same string) and inject forwards it unchanged. */
#include "fuzz_common.h"

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static int lc(char c) { return c >= 'a' && c <= 'z'; }
static int dg(char c) { return c >= '0' && c <= '9'; }
static int kc(char c)
{
    return lc(c) || dg(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

static int ref_key(const char *k, size_t n)
{
    size_t at = n;
    for (size_t i = 0; i < n; i++)
        if (k[i] == '@') {
            if (at != n)
                return 0;
            at = i;
        }
    if (at == n) { /* simple-key */
        if (n < 1 || n > 256 || !lc(k[0]))
            return 0;
        for (size_t i = 1; i < n; i++)
            if (!kc(k[i]))
                return 0;
        return 1;
    }
    size_t sys = n - at - 1;
    if (at < 1 || at > 241 || sys < 1 || sys > 14)
        return 0;
    if (!lc(k[0]) && !dg(k[0]))
        return 0;
    for (size_t i = 1; i < at; i++)
        if (!kc(k[i]))
            return 0;
    if (!lc(k[at + 1]))
        return 0;
    for (size_t i = at + 2; i < n; i++)
        if (!kc(k[i]))
            return 0;
    return 1;
}

static int ref_value(const char *v, size_t n)
{
    if (n < 1 || n > 256 || v[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return 0;
    }
    return 1;
}

/* Checks a kept (normalised) tracestate: members valid, keys distinct. */
static void check_kept(const char *s)
{
    const char *keys[33];
    size_t klen[33], n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        FUZZ_CHECK(eq != NULL);
        FUZZ_CHECK(ref_key(p, (size_t)(eq - p)));
        FUZZ_CHECK(ref_value(eq + 1, len - (size_t)(eq - p) - 1));
        FUZZ_CHECK(n < 32);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(!(klen[i] == (size_t)(eq - p) &&
                         memcmp(keys[i], p, klen[i]) == 0));
        keys[n] = p;
        klen[n++] = (size_t)(eq - p);
        if (e == NULL)
            break;
        p = e + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_carrier fc;
    fuzz_lines(&fc, CTX_PROPAGATE_KEY_TRACESTATE, data, size);
    fc.extra_key[0] = CTX_PROPAGATE_KEY_TRACEPARENT;
    fc.extra_val[0] = TP;
    fc.nextra = 1;
    ctx_carrier_t car = fuzz_carrier_of(&fc);
    ctx_t *c = ctx_propagate_extract(ctx_background(), &car, 0,
                                     CTX_PROPAGATE_TRACE);
    FUZZ_CHECK(c != NULL);
    char buf[64];
    FUZZ_CHECK(ctx_trace_format(c, buf, sizeof buf) == 55);
    FUZZ_CHECK(memcmp(buf, TP, 36) == 0); /* same version and trace id */
    uint8_t pid[8];
    FUZZ_CHECK(ctx_trace_parent_id(c, pid) && pid[0] == 0xb7 && pid[7] == 0x31);

    const char *ts = ctx_trace_state(c);
    if (ts != NULL) {
        FUZZ_CHECK(ts[0] != '\0');
        check_kept(ts);
        /* Idempotent, and forwarded unchanged. */
        struct fuzz_out out = {0};
        ctx_carrier_t oc = {.self = &out, .set = fuzz_out_set,
                            .get = fuzz_out_get};
        FUZZ_CHECK(ctx_propagate_inject(c, &oc, CTX_PROPAGATE_TRACE) == 0);
        const char *fw = fuzz_out_get(&out, CTX_PROPAGATE_KEY_TRACESTATE);
        FUZZ_CHECK(fw != NULL && strcmp(fw, ts) == 0);
        ctx_t *c2 = ctx_propagate_extract(ctx_background(), &oc, 0, 0);
        FUZZ_CHECK(c2 != NULL && ctx_trace_state(c2) != NULL &&
                   strcmp(ctx_trace_state(c2), ts) == 0);
        ctx_release(c2);
        fuzz_out_free(&out);
    }
    ctx_t *ch = ctx_trace_child(c);
    FUZZ_CHECK(ch != NULL);
    FUZZ_CHECK((ts == NULL) == (ctx_trace_state(ch) == NULL));
    ctx_release(ch);
    ctx_release(c);
    fuzz_lines_free(&fc);
    return 0;
}
