/* ctx_format (Go's String()) and ctx_strerror. */
#include "ctx_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Writes into buf[0, size-1) at a running position, counting what does not
 * fit, so the same code measures and writes. */
struct sink {
    char *buf;
    size_t size;
    size_t pos;
};

static void put(struct sink *s, const char *str, size_t len)
{
    if (s->size > 0 && s->pos < s->size - 1) {
        size_t room = s->size - 1 - s->pos;
        memcpy(s->buf + s->pos, str, len < room ? len : room);
    }
    s->pos += len;
}

static void puts_(struct sink *s, const char *str)
{
    put(s, str, strlen(str));
}

/* Go's time.Duration.String(): 1.5s, 2m0.5s, 99.8ms, 12µs, 7ns. */
static void put_duration(struct sink *s, int64_t d)
{
    char tmp[64];
    uint64_t u = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    char *p = tmp;
    if (d == 0) { /* as Go's time.Duration(0).String() */
        puts_(s, "0s");
        return;
    }
    if (d < 0)
        *p++ = '-';
    if (u < 1000) {
        snprintf(p, sizeof tmp - 1, "%" PRIu64 "ns", u);
        puts_(s, tmp);
        return;
    }
    static const struct {
        uint64_t div;
        int digits;
        const char *unit;
    } small[] = {{1000, 3, "\xc2\xb5s"}, {1000000, 6, "ms"}};
    uint64_t whole, frac;
    int digits;
    const char *unit = "s";
    uint64_t hours = 0, mins = 0;
    if (u < 1000000000) {
        int i = u < 1000000 ? 0 : 1;
        whole = u / small[i].div;
        frac = u % small[i].div;
        digits = small[i].digits;
        unit = small[i].unit;
    } else {
        uint64_t secs = u / 1000000000;
        frac = u % 1000000000;
        digits = 9;
        hours = secs / 3600;
        mins = secs / 60 % 60;
        whole = secs % 60;
    }
    int n = 0;
    if (hours > 0)
        n = snprintf(p, sizeof tmp - 1, "%" PRIu64 "h%" PRIu64 "m", hours,
                     mins);
    else if (mins > 0)
        n = snprintf(p, sizeof tmp - 1, "%" PRIu64 "m", mins);
    n += snprintf(p + n, sizeof tmp - 1 - (size_t)n, "%" PRIu64, whole);
    if (frac != 0) {
        char f[16];
        snprintf(f, sizeof f, "%0*" PRIu64, digits, frac);
        size_t fl = strlen(f);
        while (fl > 0 && f[fl - 1] == '0')
            f[--fl] = '\0';
        n += snprintf(p + n, sizeof tmp - 1 - (size_t)n, ".%s", f);
    }
    snprintf(p + n, sizeof tmp - 1 - (size_t)n, "%s", unit);
    puts_(s, tmp);
}

/* A wall-clock instant, ns since the Unix epoch, in UTC as RFC 3339 with
 * the fraction's trailing zeros dropped (Go's time.RFC3339Nano):
 * 2026-12-02T01:50:12.5Z. Civil date from days without time_t or gmtime,
 * so that every int64 instant prints the same on 32-bit ABIs. */
static void put_wall(struct sink *s, int64_t ns)
{
    int64_t secs = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    /* H. Hinnant's civil_from_days. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp,
                     "%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64
                     ":%02" PRId64 ":%02" PRId64,
                     y, m, d, sod / 3600, sod / 60 % 60, sod % 60);
    if (frac != 0) {
        char f[16];
        snprintf(f, sizeof f, "%09" PRId64, frac);
        size_t fl = strlen(f);
        while (fl > 0 && f[fl - 1] == '0')
            f[--fl] = '\0';
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, ".%s", f);
    }
    snprintf(tmp + n, sizeof tmp - (size_t)n, "Z");
    puts_(s, tmp);
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        r = b < 0 ? INT64_MIN : INT64_MAX;
    return r;
}

/* The part of the description that node c adds. `now` is on ctx_now()'s
 * clock, `wall` the same instant on CLOCK_REALTIME. */
static void segment(ctx_t *c, ctx_time_t now, int64_t wall, struct sink *s)
{
    switch (c->kind) {
    case CTX_KIND_ROOT:
        puts_(s, (c->flags & CTX_F_TODO) ? "context.TODO"
                                         : "context.Background");
        break;
    case CTX_KIND_CANCEL:
        if (c->flags & CTX_F_OWN_DEADLINE) {
            ctx_time_t dl = c->u.c.deadline, left;
            /* Any deadline is valid input, INT64_MIN included: saturate. */
            if (__builtin_sub_overflow(dl, now, &left))
                left = dl < 0 ? INT64_MIN : INT64_MAX;
            /* As Go: the deadline on the wall clock (UTC), then the time
             * left. The deadline itself is on the monotonic clock: its wall
             * time is now's plus the time left. */
            puts_(s, ".WithDeadline(");
            put_wall(s, sat_add(wall, left));
            puts_(s, " [");
            put_duration(s, left);
            puts_(s, "])");
        } else {
            puts_(s, ".WithCancel");
        }
        break;
    case CTX_KIND_VALUE:
        puts_(s, ".WithValue(");
        puts_(s, c->u.v.key->name != NULL ? c->u.v.key->name : "?");
        /* The value is opaque to the library, like Go's non-Stringers. */
        puts_(s, ", ...)");
        break;
    case CTX_KIND_WITHOUT:
        puts_(s, ".WithoutCancel");
        break;
    default:
        puts_(s, "<invalid context>");
        break;
    }
}

static size_t segment_len(ctx_t *c, ctx_time_t now, int64_t wall)
{
    struct sink m = {NULL, 0, 0};
    segment(c, now, wall, &m);
    return m.pos;
}

CTX_API size_t ctx_format(ctx_t *ctx, char *buf, size_t size)
{
    if (buf == NULL)
        size = 0;
    if (ctx == NULL) {
        struct sink s = {buf, size, 0};
        puts_(&s, "<nil>");
        if (size > 0)
            buf[s.pos < size - 1 ? s.pos : size - 1] = '\0';
        return s.pos;
    }
    CTX_CHECK(ctx);
    /* Segments read from root to leaf; walking leaf to root, place each at
     * its offset from the end: no recursion, no allocation. */
    ctx_time_t now = ctx_now();
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t wall = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec;
    size_t total = 0;
    for (ctx_t *c = ctx; c != NULL; c = c->parent)
        total += segment_len(c, now, wall);
    size_t off = total;
    for (ctx_t *c = ctx; c != NULL; c = c->parent) {
        off -= segment_len(c, now, wall);
        if (size > 0 && off < size - 1) {
            struct sink s = {buf, size, off};
            segment(c, now, wall, &s);
        }
    }
    if (size > 0)
        buf[total < size - 1 ? total : size - 1] = '\0';
    return total;
}

CTX_API const char *ctx_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case CTX_CANCELED:
        return "context canceled";
    case CTX_DEADLINE_EXCEEDED:
        return "context deadline exceeded";
    case EINVAL:
        return "invalid argument";
    case ENOMEM:
        return "out of memory";
    case EMFILE:
        return "too many open files";
    case ENFILE:
        return "too many open files in system";
    case EAGAIN:
        return "resource temporarily unavailable";
    case EBADF:
        return "bad file descriptor";
    case EINTR:
        return "interrupted system call";
    default:
        break;
    }
#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    const char *d = strerrordesc_np(err);
    if (d != NULL)
        return d;
#endif
    return "unknown error";
}
