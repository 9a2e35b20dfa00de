/* libFuzzer target: baggage. Any bytes, split at '\n' into several baggage
 * fields: extract never crashes; the kept baggage is within 180 members
 * and 8192 bytes, every member and property valid by a reading of the W3C
 * grammar written here; normalising is idempotent; every kept key can be
 * looked up; ctx_with_baggage() with a key and value taken from the input
 * either fails with EINVAL or round-trips the value exactly. */
#include "fuzz_common.h"

#include <errno.h>

static int tch(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int octet(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

/* key=value(;pkey(=pvalue)?)* with no OWS left. Returns the key length. */
static size_t check_member(const char *m, size_t len)
{
    size_t i = 0;
    while (i < len && tch(m[i]))
        i++;
    size_t klen = i;
    FUZZ_CHECK(klen > 0 && i < len && m[i] == '=');
    i++;
    while (i < len && octet((unsigned char)m[i]))
        i++;
    while (i < len) {
        FUZZ_CHECK(m[i] == ';');
        i++;
        size_t s = i;
        while (i < len && tch(m[i]))
            i++;
        FUZZ_CHECK(i > s);
        if (i < len && m[i] == '=') {
            i++;
            while (i < len && octet((unsigned char)m[i]))
                i++;
        }
    }
    return klen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_carrier fc;
    fuzz_lines(&fc, CTX_PROPAGATE_KEY_BAGGAGE, data, size);
    ctx_carrier_t car = fuzz_carrier_of(&fc);
    ctx_t *c = ctx_propagate_extract(ctx_background(), &car, 0,
                                     CTX_PROPAGATE_BAGGAGE);
    FUZZ_CHECK(c != NULL);
    const char *b = ctx_baggage(c);
    if (b != NULL) {
        size_t len = strlen(b), members = 0;
        FUZZ_CHECK(len > 0 && len <= 8192);
        const char *p = b;
        for (;;) {
            const char *e = strchr(p, ',');
            size_t ml = e ? (size_t)(e - p) : strlen(p);
            size_t kl = check_member(p, ml);
            members++;
            char key[8200];
            memcpy(key, p, kl);
            key[kl] = '\0';
            char val[64];
            FUZZ_CHECK(ctx_baggage_get(c, key, val, sizeof val) >= 0);
            if (e == NULL)
                break;
            p = e + 1;
        }
        FUZZ_CHECK(members <= 180);
        /* Idempotent. */
        struct fuzz_out out = {0};
        ctx_carrier_t oc = {.self = &out, .set = fuzz_out_set,
                            .get = fuzz_out_get};
        FUZZ_CHECK(ctx_propagate_inject(c, &oc, CTX_PROPAGATE_BAGGAGE) == 0);
        ctx_t *c2 = ctx_propagate_extract(ctx_background(), &oc, 0,
                                          CTX_PROPAGATE_BAGGAGE);
        FUZZ_CHECK(c2 != NULL && ctx_baggage(c2) != NULL &&
                   strcmp(ctx_baggage(c2), b) == 0);
        ctx_release(c2);
        fuzz_out_free(&out);
    }

    /* ctx_with_baggage: first line = key, second = value. */
    if (fc.n >= 2) {
        errno = 0;
        ctx_t *w = ctx_with_baggage(c, fc.lines[0], fc.lines[1]);
        if (w == NULL) {
            FUZZ_CHECK(errno == EINVAL);
        } else {
            size_t vl = strlen(fc.lines[1]);
            char *got = malloc(vl + 1);
            FUZZ_CHECK(ctx_baggage_get(w, fc.lines[0], got, vl + 1) == (long)vl);
            FUZZ_CHECK(memcmp(got, fc.lines[1], vl + 1) == 0);
            free(got);
            ctx_release(w);
        }
    }
    ctx_release(c);
    fuzz_lines_free(&fc);
    return 0;
}
