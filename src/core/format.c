/* ctx_format (Go's String()) and ctx_strerror. */
#include "ctx_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

/* The part of the description that node c adds. */
static void segment(ctx_t *c, ctx_time_t now, struct sink *s)
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
            puts_(s, ".WithDeadline(");
            put_duration(s, dl);
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

static size_t segment_len(ctx_t *c, ctx_time_t now)
{
    struct sink m = {NULL, 0, 0};
    segment(c, now, &m);
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
    size_t total = 0;
    for (ctx_t *c = ctx; c != NULL; c = c->parent)
        total += segment_len(c, now);
    size_t off = total;
    for (ctx_t *c = ctx; c != NULL; c = c->parent) {
        off -= segment_len(c, now);
        if (size > 0 && off < size - 1) {
            struct sink s = {buf, size, off};
            segment(c, now, &s);
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
