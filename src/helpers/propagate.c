/* Propagation across processes (include/ctx/propagate.h): gRPC's
 * grpc-timeout, W3C Trace Context Level 1 (traceparent, tracestate) and W3C
 * Baggage, over caller-supplied carriers.
 *
 * The parsers work on NUL-terminated strings and never look past the NUL:
 * every scan stops at a length computed once with strlen(), so any bytes
 * are safe (fuzzed in tests/fuzz/). Values live in the extracted context
 * under two private keys: one immutable trace record and one baggage
 * string, both freed with the value context that holds them. */
#include "ctx/propagate.h"

#include "alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

extern char **environ;

/* ---- limits ------------------------------------------------------------ */

#define TRACESTATE_MAX_MEMBERS 32
#define TRACESTATE_KEY_MAX 256
#define TRACESTATE_VALUE_MAX 256
/* The baggage ABNF allows 180 members; W3C asks to keep at least 64 and
 * 8192 bytes. We keep up to 180 members within 8192 bytes. */
#define BAGGAGE_MAX_MEMBERS 180
#define BAGGAGE_MAX_BYTES 8192
/* Field lines of one name that extract looks at (tracestate, baggage). */
#define MAX_LINES 64

/* ---- values carried by a context --------------------------------------- */

struct trace_rec {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* this hop's span */
    uint8_t parent_id[8]; /* the caller's span (valid if has_parent) */
    uint8_t flags;
    bool has_parent;
    size_t state_len; /* 0: no tracestate */
    char state[];     /* NUL-terminated */
};

static const ctx_key_t trace_key = CTX_KEY("trace");
static const ctx_key_t baggage_key = CTX_KEY("baggage");

static void free_value(void *p)
{
    ctx__free(p);
}

/* ---- random ids: xoshiro256** per thread, seeded from getrandom --------- */

/* fork() duplicates every thread-local state into the child, which would
 * then repeat the parent's ids: a child handler bumps the generation and
 * each thread reseeds when it sees a new one. */
static atomic_uint rng_fork_gen = 1;
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;

static void rng_fork_child(void)
{
    atomic_fetch_add_explicit(&rng_fork_gen, 1, memory_order_relaxed);
}

static void rng_init_once(void)
{
    (void)pthread_atfork(NULL, NULL, rng_fork_child);
}

static _Thread_local struct {
    uint64_t s[4];
    unsigned gen; /* 0: not seeded */
} rng;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_seed(unsigned gen)
{
    uint64_t seed[4] = {0, 0, 0, 0};
    size_t got = 0;
    while (got < sizeof seed) {
        /* Never block (early boot): ids need to be unique, not secret. */
        ssize_t n = getrandom((char *)seed + got, sizeof seed - got,
                              GRND_NONBLOCK);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR)
            break;
    }
    if (got < sizeof seed) {
        /* No getrandom (old kernel, seccomp, entropy not ready yet): mix
         * what differs per thread and per moment. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)(uintptr_t)&rng ^ ((uint64_t)ctx_now() << 17);
        for (int i = 0; i < 4; i++)
            seed[i] ^= splitmix(&x);
    }
    /* An all-zero state would stay zero. */
    if ((seed[0] | seed[1] | seed[2] | seed[3]) == 0)
        seed[0] = 0x9e3779b97f4a7c15u;
    memcpy(rng.s, seed, sizeof seed);
    rng.gen = gen;
}

static uint64_t rng_next(void)
{
    unsigned gen = atomic_load_explicit(&rng_fork_gen, memory_order_relaxed);
    if (rng.gen != gen) {
        (void)pthread_once(&rng_once, rng_init_once);
        gen = atomic_load_explicit(&rng_fork_gen, memory_order_relaxed);
        rng_seed(gen);
    }
    uint64_t *s = rng.s;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Random non-zero ids (all-zero ids are invalid in W3C Trace Context). */
static void new_span_id(uint8_t out[8])
{
    uint64_t v;
    do
        v = rng_next();
    while (v == 0);
    memcpy(out, &v, 8);
}

static void new_trace_id(uint8_t out[16])
{
    uint64_t a, b;
    do {
        a = rng_next();
        b = rng_next();
    } while ((a | b) == 0);
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
}

/* ---- small string helpers ---------------------------------------------- */

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims OWS from both ends of [*b, *e). */
static void trim_ows(const char **b, const char **e)
{
    while (*b < *e && is_ows(**b))
        (*b)++;
    while (*e > *b && is_ows((*e)[-1]))
        (*e)--;
}

static const char hexdig[] = "0123456789abcdef";

/* Lowercase hex only, as W3C Trace Context requires; -1 otherwise. */
static inline int hexval_lc(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes 2*n lowercase hex digits; false on any other character. */
static bool hex_decode(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval_lc(s[2 * i]), lo = hexval_lc(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static char *hex_encode(char *p, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *p++ = hexdig[in[i] >> 4];
        *p++ = hexdig[in[i] & 15];
    }
    return p;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

/* ---- grpc-timeout ------------------------------------------------------- */

#define GRPC_MAX_VALUE 99999999 /* 8 digits */

static const struct {
    char unit;
    ctx_duration_t ns;
} grpc_units[] = {
    {'n', CTX_NANOSECOND}, {'u', CTX_MICROSECOND}, {'m', CTX_MILLISECOND},
    {'S', CTX_SECOND},     {'M', CTX_MINUTE},      {'H', CTX_HOUR},
};

size_t ctx_grpc_timeout_format(ctx_duration_t timeout, char *buf)
{
    if (buf == NULL)
        return 0;
    if (timeout <= 0) {
        memcpy(buf, "0n", 3);
        return 2;
    }
    /* The finest unit whose value, rounded up, fits in 8 digits. Hours
     * always fit: INT64_MAX ns is about 2.6 million hours. */
    int64_t v = 0;
    char unit = 'H';
    for (size_t i = 0; i < sizeof grpc_units / sizeof grpc_units[0]; i++) {
        ctx_duration_t u = grpc_units[i].ns;
        v = timeout / u + (timeout % u != 0);
        unit = grpc_units[i].unit;
        if (v <= GRPC_MAX_VALUE)
            break;
    }
    char tmp[12];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = unit;
    buf[n + 1] = '\0';
    return n + 1;
}

/* Parses [b, e) (already trimmed). */
static int grpc_timeout_parse_span(const char *b, const char *e,
                                   ctx_duration_t *timeout)
{
    size_t len = (size_t)(e - b);
    if (len < 2 || len > 9)
        return EINVAL;
    int64_t v = 0;
    for (const char *p = b; p < e - 1; p++) {
        if (*p < '0' || *p > '9')
            return EINVAL;
        v = v * 10 + (*p - '0');
    }
    for (size_t i = 0; i < sizeof grpc_units / sizeof grpc_units[0]; i++) {
        if (e[-1] == grpc_units[i].unit) {
            ctx_duration_t u = grpc_units[i].ns;
            *timeout = v > INT64_MAX / u ? INT64_MAX : v * u;
            return 0;
        }
    }
    return EINVAL;
}

int ctx_grpc_timeout_parse(const char *value, ctx_duration_t *timeout)
{
    if (value == NULL || timeout == NULL)
        return EINVAL;
    const char *b = value, *e = value + strlen(value);
    trim_ows(&b, &e);
    return grpc_timeout_parse_span(b, e, timeout);
}

/* ---- traceparent -------------------------------------------------------- */

/* Parses a traceparent value (W3C Trace Context Level 1, "Versioning of
 * traceparent"). Version 00: exactly 55 characters. A higher version (not
 * ff): at least 55, the first four fields as for 00, and after the flags
 * either the end or '-' (unknown fields that follow are not looked at). */
static bool traceparent_parse(const char *s, struct trace_rec *r)
{
    const char *b = s, *e = s + strlen(s);
    trim_ows(&b, &e);
    size_t len = (size_t)(e - b);
    uint8_t version;
    if (len < 55 || !hex_decode(b, &version, 1) || b[2] != '-' ||
        version == 0xff)
        return false;
    if (version == 0 && len != 55)
        return false;
    if (len > 55 && b[55] != '-')
        return false;
    if (b[35] != '-' || b[52] != '-')
        return false;
    if (!hex_decode(b + 3, r->trace_id, 16) ||
        !hex_decode(b + 36, r->parent_id, 8) ||
        !hex_decode(b + 53, &r->flags, 1))
        return false;
    if (all_zero(r->trace_id, 16) || all_zero(r->parent_id, 8))
        return false;
    /* A higher version: only the sampled bit has a meaning we know. */
    if (version != 0)
        r->flags &= CTX_TRACE_SAMPLED;
    r->has_parent = true;
    return true;
}

/* ---- tracestate --------------------------------------------------------- */

static inline bool ts_keychar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '*' || c == '/';
}

/* Level 1 key: simple-key = lcalpha 0*255(keychar), or
 * multi-tenant-key = (lcalpha / DIGIT) 0*240(keychar) "@" lcalpha
 * 0*13(keychar). */
static bool ts_key_valid(const char *k, size_t n)
{
    if (n == 0 || n > TRACESTATE_KEY_MAX)
        return false;
    const char *at = memchr(k, '@', n);
    if (at == NULL) {
        if (!(k[0] >= 'a' && k[0] <= 'z'))
            return false;
        for (size_t i = 1; i < n; i++)
            if (!ts_keychar(k[i]))
                return false;
        return true;
    }
    size_t tn = (size_t)(at - k), sn = n - tn - 1;
    if (tn == 0 || tn > 241 || sn == 0 || sn > 14)
        return false;
    if (!((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')))
        return false;
    for (size_t i = 1; i < tn; i++)
        if (!ts_keychar(k[i]))
            return false;
    if (!(at[1] >= 'a' && at[1] <= 'z'))
        return false;
    for (size_t i = 2; i <= sn; i++)
        if (!ts_keychar(at[i]))
            return false;
    return true;
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr;
 * nblk-chr = %x21-2B / %x2D-3C / %x3E-7E. */
static bool ts_value_valid(const char *v, size_t n)
{
    if (n == 0 || n > TRACESTATE_VALUE_MAX || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return false;
    }
    return true;
}

struct ts_member {
    const char *key;
    size_t klen;
    const char *m; /* the whole member, trimmed */
    size_t mlen;
};

/* Validates and combines the tracestate lines into out (members joined by
 * ',', OWS removed). Returns the length (0: no tracestate), or -1 when the
 * tracestate is invalid and must be dropped: a bad key or value, a
 * duplicate key, more than 32 members (the W3C test suite's strict
 * expectations). out must hold the sum of the line lengths + nlines + 1. */
static long tracestate_combine(const char *const *lines, size_t nlines,
                               char *out)
{
    struct ts_member mem[TRACESTATE_MAX_MEMBERS];
    size_t n = 0;
    for (size_t l = 0; l < nlines; l++) {
        const char *p = lines[l];
        if (p == NULL)
            continue;
        const char *end = p + strlen(p);
        while (p <= end) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            const char *me = c != NULL ? c : end;
            const char *b = p, *e = me;
            trim_ows(&b, &e);
            p = me + 1;
            if (b == e)
                continue; /* empty and whitespace-only members are allowed */
            const char *eq = memchr(b, '=', (size_t)(e - b));
            if (eq == NULL || n == TRACESTATE_MAX_MEMBERS)
                return -1;
            size_t klen = (size_t)(eq - b);
            if (!ts_key_valid(b, klen) ||
                !ts_value_valid(eq + 1, (size_t)(e - eq - 1)))
                return -1;
            for (size_t i = 0; i < n; i++)
                if (mem[i].klen == klen && memcmp(mem[i].key, b, klen) == 0)
                    return -1;
            mem[n++] = (struct ts_member){b, klen, b, (size_t)(e - b)};
        }
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            out[len++] = ',';
        memcpy(out + len, mem[i].m, mem[i].mlen);
        len += mem[i].mlen;
    }
    out[len] = '\0';
    return (long)len;
}

/* ---- baggage ------------------------------------------------------------ */

/* RFC 7230 tchar. */
static inline bool tchar(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool token_valid(const char *k, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!tchar(k[i]))
            return false;
    return true;
}

/* baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E */
static inline bool baggage_octet(char ch)
{
    unsigned char c = (unsigned char)ch;
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' &&
           c != '\\';
}

static bool bvalue_valid(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!baggage_octet(v[i]))
            return false;
    return true;
}

/* Appends [b, e) to out at *len. */
static void put(char *out, size_t *len, const char *b, size_t n)
{
    memcpy(out + *len, b, n);
    *len += n;
}

/* Normalises one list-member [b, e) (trimmed, non-empty) into out at *len:
 * key=value[;pkey[=pvalue]]..., OWS removed. Returns false (nothing
 * written) when it is not valid. out has room for e - b bytes. */
static bool baggage_member(const char *b, const char *e, char *out,
                           size_t *len)
{
    size_t start = *len;
    const char *semi = memchr(b, ';', (size_t)(e - b));
    const char *kv_end = semi != NULL ? semi : e;
    const char *eq = memchr(b, '=', (size_t)(kv_end - b));
    if (eq == NULL)
        return false;
    const char *kb = b, *ke = eq, *vb = eq + 1, *ve = kv_end;
    trim_ows(&kb, &ke);
    trim_ows(&vb, &ve);
    if (!token_valid(kb, (size_t)(ke - kb)) ||
        !bvalue_valid(vb, (size_t)(ve - vb)))
        return false;
    put(out, len, kb, (size_t)(ke - kb));
    out[(*len)++] = '=';
    put(out, len, vb, (size_t)(ve - vb));
    const char *p = kv_end;
    while (p < e) { /* p points at ';' */
        const char *pb = p + 1;
        const char *pe = memchr(pb, ';', (size_t)(e - pb));
        if (pe == NULL)
            pe = e;
        p = pe;
        const char *peq = memchr(pb, '=', (size_t)(pe - pb));
        const char *pkb = pb, *pke = peq != NULL ? peq : pe;
        trim_ows(&pkb, &pke);
        if (!token_valid(pkb, (size_t)(pke - pkb))) {
            *len = start;
            return false;
        }
        out[(*len)++] = ';';
        put(out, len, pkb, (size_t)(pke - pkb));
        if (peq != NULL) {
            const char *pvb = peq + 1, *pve = pe;
            trim_ows(&pvb, &pve);
            if (!bvalue_valid(pvb, (size_t)(pve - pvb))) {
                *len = start;
                return false;
            }
            out[(*len)++] = '=';
            put(out, len, pvb, (size_t)(pve - pvb));
        }
    }
    return true;
}

/* Validates and combines baggage lines into out: valid members joined with
 * ',', OWS removed, percent-encoding and properties kept. Invalid members
 * are dropped (W3C Baggage: "MAY remove that entry"); members that would
 * pass 180 members or 8192 bytes are dropped whole. Returns the length (0:
 * no baggage). out must hold the sum of the line lengths + nlines + 1. */
static size_t baggage_combine(const char *const *lines, size_t nlines,
                              char *out)
{
    size_t len = 0, n = 0;
    for (size_t l = 0; l < nlines; l++) {
        const char *p = lines[l];
        if (p == NULL)
            continue;
        const char *end = p + strlen(p);
        while (p <= end) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            const char *me = c != NULL ? c : end;
            const char *b = p, *e = me;
            trim_ows(&b, &e);
            p = me + 1;
            if (b == e || n == BAGGAGE_MAX_MEMBERS)
                continue;
            size_t before = len;
            if (n > 0)
                out[len++] = ',';
            if (!baggage_member(b, e, out, &len) ||
                len > BAGGAGE_MAX_BYTES) {
                len = before;
                continue;
            }
            n++;
        }
    }
    out[len] = '\0';
    return len;
}

/* ---- carriers ----------------------------------------------------------- */

/* The lines of field `key`: up to max in vals; returns how many there are. */
static size_t carrier_lines(const ctx_carrier_t *c, const char *key,
                            const char **vals, size_t max)
{
    if (c->get_all != NULL)
        return c->get_all(c->self, key, vals, max);
    const char *v = c->get(c->self, key);
    if (v == NULL)
        return 0;
    vals[0] = v;
    return 1;
}

static size_t lines_len(const char *const *lines, size_t n)
{
    size_t sum = 0;
    for (size_t i = 0; i < n; i++)
        if (lines[i] != NULL)
            sum += strlen(lines[i]);
    return sum;
}

/* ---- inject ------------------------------------------------------------- */

#define TRACEPARENT_LEN 55

static void format_traceparent(char *out, const uint8_t trace_id[16],
                               const uint8_t span_id[8], uint8_t flags)
{
    char *p = out;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p = hex_encode(p, trace_id, 16);
    *p++ = '-';
    p = hex_encode(p, span_id, 8);
    *p++ = '-';
    p = hex_encode(p, &flags, 1);
    *p = '\0';
}

static bool what_valid(unsigned what)
{
    return (what & ~(CTX_PROPAGATE_ALL | CTX_PROPAGATE_KEEP_SPAN)) == 0;
}

static unsigned what_fields(unsigned what)
{
    unsigned f = what & CTX_PROPAGATE_ALL;
    return f != 0 ? f : CTX_PROPAGATE_ALL;
}

int ctx_propagate_inject(ctx_t *ctx, const ctx_carrier_t *carrier,
                         unsigned what)
{
    if (ctx == NULL || carrier == NULL || carrier->set == NULL ||
        !what_valid(what))
        return EINVAL;
    unsigned f = what_fields(what);
    int err;
    ctx_time_t dl;
    if ((f & CTX_PROPAGATE_DEADLINE) && ctx_deadline(ctx, &dl)) {
        char buf[CTX_GRPC_TIMEOUT_SIZE];
        ctx_time_t now = ctx_now();
        ctx_duration_t left = dl > now ? dl - now : 0;
        ctx_grpc_timeout_format(left, buf);
        if ((err = carrier->set(carrier->self, CTX_PROPAGATE_KEY_GRPC_TIMEOUT,
                                buf)) != 0)
            return err;
    }
    if (f & CTX_PROPAGATE_TRACE) {
        const struct trace_rec *r = ctx_value(ctx, &trace_key);
        if (r != NULL) {
            char tp[TRACEPARENT_LEN + 1];
            uint8_t span[8];
            if (what & CTX_PROPAGATE_KEEP_SPAN)
                memcpy(span, r->span_id, 8);
            else
                new_span_id(span);
            /* Version 00 defines only the sampled flag; others are sent 0. */
            format_traceparent(tp, r->trace_id, span,
                               r->flags & CTX_TRACE_SAMPLED);
            if ((err = carrier->set(carrier->self,
                                    CTX_PROPAGATE_KEY_TRACEPARENT, tp)) != 0)
                return err;
            if (r->state_len > 0 &&
                (err = carrier->set(carrier->self, CTX_PROPAGATE_KEY_TRACESTATE,
                                    r->state)) != 0)
                return err;
        }
    }
    if (f & CTX_PROPAGATE_BAGGAGE) {
        const char *b = ctx_value(ctx, &baggage_key);
        if (b != NULL && b[0] != '\0' &&
            (err = carrier->set(carrier->self, CTX_PROPAGATE_KEY_BAGGAGE, b)) !=
                0)
            return err;
    }
    return 0;
}

/* ---- extract ------------------------------------------------------------ */

static struct trace_rec *trace_rec_new(size_t state_cap)
{
    struct trace_rec *r = ctx__malloc(sizeof *r + state_cap + 1);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof *r);
    r->state[0] = '\0';
    return r;
}

/* The trace record for an incoming request: the caller's, or a restarted
 * trace when its traceparent is missing or invalid. NULL: ENOMEM. */
static struct trace_rec *extract_trace(const ctx_carrier_t *c)
{
    const char *tp[2] = {NULL, NULL};
    size_t ntp = carrier_lines(c, CTX_PROPAGATE_KEY_TRACEPARENT, tp, 2);
    struct trace_rec parsed;
    bool ok = ntp == 1 && tp[0] != NULL && traceparent_parse(tp[0], &parsed);
    const char *ts[MAX_LINES] = {NULL}; /* a carrier may store fewer */
    size_t nts = 0, cap = 0;
    if (ok) {
        nts = carrier_lines(c, CTX_PROPAGATE_KEY_TRACESTATE, ts, MAX_LINES);
        if (nts > MAX_LINES)
            nts = 0; /* more lines than members can be: drop it */
        cap = lines_len(ts, nts) + nts; /* + the ',' joining lines */
    }
    struct trace_rec *r = trace_rec_new(cap);
    if (r == NULL)
        return NULL;
    if (ok) {
        memcpy(r->trace_id, parsed.trace_id, 16);
        memcpy(r->parent_id, parsed.parent_id, 8);
        r->flags = parsed.flags;
        r->has_parent = true;
        long n = nts > 0 ? tracestate_combine(ts, nts, r->state) : 0;
        r->state_len = n > 0 ? (size_t)n : 0;
        if (n <= 0)
            r->state[0] = '\0';
    } else {
        new_trace_id(r->trace_id);
    }
    new_span_id(r->span_id);
    return r;
}

/* The combined baggage, or NULL with *oom set when out of memory. NULL
 * without *oom: no baggage. */
static char *extract_baggage(const ctx_carrier_t *c, bool *oom)
{
    const char *lines[MAX_LINES] = {NULL};
    size_t n = carrier_lines(c, CTX_PROPAGATE_KEY_BAGGAGE, lines, MAX_LINES);
    if (n > MAX_LINES)
        n = MAX_LINES; /* the members past them would pass the limits */
    if (n == 0)
        return NULL;
    /* Normalising removes bytes; joining lines adds at most one ',' per
     * line. */
    char *out = ctx__malloc(lines_len(lines, n) + n + 1);
    if (out == NULL) {
        *oom = true;
        return NULL;
    }
    if (baggage_combine(lines, n, out) == 0) {
        ctx__free(out);
        return NULL;
    }
    return out;
}

/* The propagated deadline, if any: false when absent or invalid. */
static bool extract_deadline(const ctx_carrier_t *c, ctx_time_t now,
                             ctx_time_t *dl)
{
    const char *v[2] = {NULL, NULL};
    size_t n = carrier_lines(c, CTX_PROPAGATE_KEY_GRPC_TIMEOUT, v, 2);
    ctx_duration_t t;
    if (n != 1 || v[0] == NULL || ctx_grpc_timeout_parse(v[0], &t) != 0)
        return false;
    *dl = t > INT64_MAX - now ? INT64_MAX : now + t;
    return true;
}

/* Adds a value node on *cur (consuming the reference in *cur). On failure
 * frees value, releases *cur's node if owned, and returns false. */
static bool push_value(ctx_t **cur, bool *owned, const ctx_key_t *key,
                       void *value)
{
    ctx_t *v = ctx_with_value(*cur, key, value, free_value);
    if (v == NULL) {
        ctx__free(value);
        return false;
    }
    if (*owned)
        ctx_release(*cur);
    *cur = v;
    *owned = true;
    return true;
}

ctx_t *ctx_propagate_extract(ctx_t *parent, const ctx_carrier_t *carrier,
                             ctx_duration_t limit, unsigned what)
{
    if (parent == NULL || carrier == NULL ||
        (carrier->get == NULL && carrier->get_all == NULL) ||
        !what_valid(what)) {
        errno = EINVAL;
        return NULL;
    }
    unsigned f = what_fields(what);
    ctx_time_t now = ctx_now(), dl = INT64_MAX;
    bool has_dl = false;
    if (f & CTX_PROPAGATE_DEADLINE)
        has_dl = extract_deadline(carrier, now, &dl);
    if (limit > 0) {
        ctx_time_t l = limit > INT64_MAX - now ? INT64_MAX : now + limit;
        if (!has_dl || l < dl)
            dl = l;
        has_dl = true;
    }
    struct trace_rec *tr = NULL;
    char *bag = NULL;
    if (f & CTX_PROPAGATE_TRACE) {
        if ((tr = extract_trace(carrier)) == NULL) {
            errno = ENOMEM;
            return NULL;
        }
    }
    if (f & CTX_PROPAGATE_BAGGAGE) {
        bool oom = false;
        bag = extract_baggage(carrier, &oom);
        if (oom) {
            ctx__free(tr);
            errno = ENOMEM;
            return NULL;
        }
    }
    ctx_t *cur = parent;
    bool owned = false;
    if (tr != NULL && !push_value(&cur, &owned, &trace_key, tr)) {
        ctx__free(bag);
        errno = ENOMEM;
        return NULL;
    }
    if (bag != NULL && !push_value(&cur, &owned, &baggage_key, bag))
        goto fail;
    ctx_t *top = has_dl ? ctx_with_deadline(cur, dl) : ctx_with_cancel(cur);
    if (top == NULL)
        goto fail;
    if (owned)
        ctx_release(cur);
    return top;
fail: {
    int e = errno;
    if (owned)
        ctx_release(cur);
    errno = e;
    return NULL;
}
}

/* ---- environment carrier ------------------------------------------------ */

/* "grpc-timeout" -> "GRPC_TIMEOUT"; keys are short and known. */
static size_t env_name(const char *key, char *out, size_t size)
{
    size_t n = 0;
    for (; key[n] != '\0' && n + 1 < size; n++) {
        char c = key[n];
        out[n] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    out[n] = '\0';
    return n;
}

static const char *const env_names[] = {"GRPC_TIMEOUT", "TRACEPARENT",
                                        "TRACESTATE", "BAGGAGE"};

static bool env_is_ours(const char *entry)
{
    for (size_t i = 0; i < 4; i++) {
        size_t n = strlen(env_names[i]);
        if (strncmp(entry, env_names[i], n) == 0 && entry[n] == '=')
            return true;
    }
    return false;
}

struct env_builder {
    char **v;
    size_t n, cap;
};

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ctx__malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static int env_set(void *self, const char *key, const char *value)
{
    struct env_builder *b = self;
    char name[32];
    size_t nl = env_name(key, name, sizeof name), vl = strlen(value);
    if (b->n + 1 >= b->cap)
        return ENOMEM; /* room was reserved for the four fields */
    char *s = ctx__malloc(nl + 1 + vl + 1);
    if (s == NULL)
        return ENOMEM;
    memcpy(s, name, nl);
    s[nl] = '=';
    memcpy(s + nl + 1, value, vl + 1);
    b->v[b->n++] = s;
    b->v[b->n] = NULL;
    return 0;
}

void ctx_propagate_env_free(char **envp)
{
    if (envp == NULL)
        return;
    for (char **p = envp; *p != NULL; p++)
        ctx__free(*p);
    ctx__free(envp);
}

char **ctx_propagate_env(ctx_t *ctx, char *const base[], unsigned what)
{
    if (ctx == NULL || !what_valid(what)) {
        errno = EINVAL;
        return NULL;
    }
    char *const *src = base != NULL ? base : environ;
    size_t n = 0;
    if (src != NULL)
        while (src[n] != NULL)
            n++;
    struct env_builder b = {NULL, 0, n + 4 + 1};
    b.v = ctx__malloc(b.cap * sizeof *b.v);
    if (b.v == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    b.v[0] = NULL;
    for (size_t i = 0; i < n; i++) {
        if (env_is_ours(src[i]))
            continue;
        if ((b.v[b.n] = str_dup(src[i])) == NULL)
            goto oom;
        b.v[++b.n] = NULL;
    }
    ctx_carrier_t c = {.self = &b, .set = env_set};
    int err = ctx_propagate_inject(ctx, &c, what);
    if (err != 0) {
        ctx_propagate_env_free(b.v);
        errno = err;
        return NULL;
    }
    return b.v;
oom:
    ctx_propagate_env_free(b.v);
    errno = ENOMEM;
    return NULL;
}

struct env_reader {
    char *const *envp;
};

static size_t env_get_all(void *self, const char *key, const char **values,
                          size_t max)
{
    struct env_reader *r = self;
    char name[32];
    size_t nl = env_name(key, name, sizeof name), count = 0;
    if (r->envp == NULL)
        return 0;
    for (char *const *p = r->envp; *p != NULL; p++) {
        if (strncmp(*p, name, nl) == 0 && (*p)[nl] == '=') {
            if (count < max)
                values[count] = *p + nl + 1;
            count++;
        }
    }
    return count;
}

ctx_t *ctx_propagate_extract_env(ctx_t *parent, char *const envp[],
                                 ctx_duration_t limit, unsigned what)
{
    struct env_reader r = {envp != NULL ? envp : environ};
    ctx_carrier_t c = {.self = &r, .get_all = env_get_all};
    return ctx_propagate_extract(parent, &c, limit, what);
}

/* ---- trace accessors ---------------------------------------------------- */

static const struct trace_rec *trace_of(ctx_t *ctx)
{
    return ctx != NULL ? ctx_value(ctx, &trace_key) : NULL;
}

static ctx_t *with_trace(ctx_t *parent, struct trace_rec *r)
{
    ctx_t *c = ctx_with_value(parent, &trace_key, r, free_value);
    if (c == NULL)
        ctx__free(r);
    return c;
}

ctx_t *ctx_trace_start(ctx_t *parent, unsigned flags)
{
    if (parent == NULL) {
        errno = EINVAL;
        return NULL;
    }
    struct trace_rec *r = trace_rec_new(0);
    if (r == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    new_trace_id(r->trace_id);
    new_span_id(r->span_id);
    r->flags = (uint8_t)flags;
    return with_trace(parent, r);
}

ctx_t *ctx_trace_child(ctx_t *parent)
{
    if (parent == NULL) {
        errno = EINVAL;
        return NULL;
    }
    const struct trace_rec *p = trace_of(parent);
    if (p == NULL)
        return ctx_trace_start(parent, 0);
    struct trace_rec *r = trace_rec_new(p->state_len);
    if (r == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memcpy(r, p, sizeof *r + p->state_len + 1);
    memcpy(r->parent_id, p->span_id, 8);
    r->has_parent = true;
    new_span_id(r->span_id);
    return with_trace(parent, r);
}

bool ctx_trace_id(ctx_t *ctx, uint8_t out[16])
{
    const struct trace_rec *r = trace_of(ctx);
    if (r == NULL || out == NULL)
        return false;
    memcpy(out, r->trace_id, 16);
    return true;
}

bool ctx_trace_span_id(ctx_t *ctx, uint8_t out[8])
{
    const struct trace_rec *r = trace_of(ctx);
    if (r == NULL || out == NULL)
        return false;
    memcpy(out, r->span_id, 8);
    return true;
}

bool ctx_trace_parent_id(ctx_t *ctx, uint8_t out[8])
{
    const struct trace_rec *r = trace_of(ctx);
    if (r == NULL || out == NULL || !r->has_parent)
        return false;
    memcpy(out, r->parent_id, 8);
    return true;
}

int ctx_trace_flags(ctx_t *ctx)
{
    const struct trace_rec *r = trace_of(ctx);
    return r != NULL ? r->flags : -1;
}

const char *ctx_trace_state(ctx_t *ctx)
{
    const struct trace_rec *r = trace_of(ctx);
    return r != NULL && r->state_len > 0 ? r->state : NULL;
}

size_t ctx_trace_format(ctx_t *ctx, char *buf, size_t size)
{
    const struct trace_rec *r = trace_of(ctx);
    if (r == NULL) {
        if (buf != NULL && size > 0)
            buf[0] = '\0';
        return 0;
    }
    char tp[TRACEPARENT_LEN + 1];
    format_traceparent(tp, r->trace_id, r->span_id, r->flags);
    if (buf != NULL && size > 0) {
        size_t n = size - 1 < TRACEPARENT_LEN ? size - 1 : TRACEPARENT_LEN;
        memcpy(buf, tp, n);
        buf[n] = '\0';
    }
    return TRACEPARENT_LEN;
}

/* ---- baggage accessors -------------------------------------------------- */

const char *ctx_baggage(ctx_t *ctx)
{
    return ctx != NULL ? ctx_value(ctx, &baggage_key) : NULL;
}

/* Finds member `key` in a normalised baggage string: its value span. */
static bool baggage_find(const char *s, const char *key, size_t klen,
                         const char **vb, const char **ve)
{
    const char *p = s;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq != NULL && (size_t)(eq - p) == klen &&
            memcmp(p, key, klen) == 0) {
            const char *semi = memchr(eq + 1, ';', (size_t)(end - eq - 1));
            *vb = eq + 1;
            *ve = semi != NULL ? semi : end;
            return true;
        }
        p = *end == ',' ? end + 1 : end;
    }
    return false;
}

static inline int hexval_any(char c)
{
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return hexval_lc(c);
}

long ctx_baggage_get(ctx_t *ctx, const char *key, char *buf, size_t size)
{
    const char *s = ctx_baggage(ctx), *vb, *ve;
    if (s == NULL || key == NULL || (buf == NULL && size > 0) ||
        !baggage_find(s, key, strlen(key), &vb, &ve))
        return -1;
    size_t n = 0;
    for (const char *p = vb; p < ve; n++) {
        char c = *p;
        int hi, lo;
        if (c == '%' && ve - p >= 3 && (hi = hexval_any(p[1])) >= 0 &&
            (lo = hexval_any(p[2])) >= 0) {
            c = (char)(hi << 4 | lo);
            p += 3;
        } else {
            p++; /* a '%' not followed by two hex digits stays as it is */
        }
        if (n + 1 < size)
            buf[n] = c;
    }
    if (size > 0)
        buf[n < size ? n : size - 1] = '\0';
    return (long)n;
}

/* Percent-encodes what is not a baggage-octet, and '%' itself. */
static size_t bvalue_encode(const char *v, char *out)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (baggage_octet((char)*p) && *p != '%') {
            if (out != NULL)
                out[n] = (char)*p;
            n++;
        } else {
            if (out != NULL) {
                out[n] = '%';
                out[n + 1] = "0123456789ABCDEF"[*p >> 4];
                out[n + 2] = "0123456789ABCDEF"[*p & 15];
            }
            n += 3;
        }
    }
    return n;
}

ctx_t *ctx_with_baggage(ctx_t *parent, const char *key, const char *value)
{
    if (parent == NULL || key == NULL || value == NULL ||
        !token_valid(key, strlen(key))) {
        errno = EINVAL;
        return NULL;
    }
    const char *old = ctx_value(parent, &baggage_key);
    size_t klen = strlen(key), vlen = bvalue_encode(value, NULL);
    size_t oldlen = old != NULL ? strlen(old) : 0;
    char *s = ctx__malloc(oldlen + 1 + klen + 1 + vlen + 1);
    if (s == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    /* The old members but `key`, then key=value. */
    size_t len = 0, members = 0;
    const char *p = old;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        bool same = eq != NULL && (size_t)(eq - p) == klen &&
                    memcmp(p, key, klen) == 0;
        if (!same) {
            if (len > 0)
                s[len++] = ',';
            put(s, &len, p, (size_t)(end - p));
            members++;
        }
        p = *end == ',' ? end + 1 : end;
    }
    if (len > 0)
        s[len++] = ',';
    put(s, &len, key, klen);
    s[len++] = '=';
    len += bvalue_encode(value, s + len);
    s[len] = '\0';
    if (members + 1 > BAGGAGE_MAX_MEMBERS || len > BAGGAGE_MAX_BYTES) {
        ctx__free(s);
        errno = EINVAL;
        return NULL;
    }
    ctx_t *c = ctx_with_value(parent, &baggage_key, s, free_value);
    if (c == NULL)
        ctx__free(s);
    return c;
}
