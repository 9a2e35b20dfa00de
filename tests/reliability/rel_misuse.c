/* Misuse is caught in debug builds (CTX_DEBUG): each case runs in a forked
 * child, which must die by SIGABRT after printing a line that starts with
 * "libctx:" on stderr, rather than corrupt memory silently. Bad input that
 * the contract defines (NULL, cancel of a non-cancellable context, roots
 * released too often) must not abort: checked in-process.
 *
 * Cases that work by reading a freed node or registration must die of
 * ASan's heap-use-after-free report under ASan (which sees the read before
 * the library's check does), and are skipped under TSan; the library's own
 * message is checked in the plain and fallback configurations. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CTX_DEBUG
int main(void)
{
    printf("rel_misuse: SKIPPED: needs -DCTX_DEBUG_CHECKS=ON\n");
    return 77;
}
#else

static int failures, ran, skipped;

/* Runs fn in a child, which must not survive: it must die by SIGABRT (or,
 * for a sanitizer's report, exit non-zero) after a line on stderr that
 * starts with `line`. */
static void death_by(const char *name, void (*fn)(void), const char *line)
{
    int p[2];
    REL_CHECK(pipe(p) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    REL_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        fn();
        fprintf(stderr, "survived\n");
        _exit(0);
    }
    close(p[1]);
    char out[16384];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof out - 1 &&
           (r = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(p[0]);
    int st;
    REL_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    bool sanitizer = strncmp(line, "libctx:", 7) != 0;
    bool died = (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) ||
                (sanitizer && WIFEXITED(st) && WEXITSTATUS(st) != 0);
    const char *hit = strstr(out, line);
    while (hit != NULL && hit != out && hit[-1] != '\n' && !sanitizer)
        hit = strstr(hit + 1, line);
    ran++;
    if (died && hit != NULL) {
        char shown[120];
        snprintf(shown, sizeof shown, "%s", hit);
        char *nl = strchr(shown, '\n');
        if (nl != NULL)
            *nl = '\0';
        printf("  ok   %-48s %s\n", name, shown);
        return;
    }
    failures++;
    printf("  FAIL %-48s status %#x (%s), expected \"%s\", stderr:\n%s\n",
           name, st, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited",
           line, out);
}

/* A libctx misuse check: "libctx: <expect>" (the message of this misuse,
 * not just any). A case that reads freed memory dies of ASan's report
 * under ASan, which finds the read first; it is skipped under TSan. */
static void death(const char *name, void (*fn)(void), bool reads_freed,
                  const char *expect)
{
    if (reads_freed && REL_ASAN) {
        death_by(name, fn, "AddressSanitizer: heap-use-after-free");
        return;
    }
    if (reads_freed && REL_TSAN) {
        printf("  SKIP %-48s (reads freed memory: the sanitizer reports "
               "it first)\n",
               name);
        skipped++;
        return;
    }
    char line[160];
    snprintf(line, sizeof line, "libctx: %s", expect);
    death_by(name, fn, line);
}

static void release_twice(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_release(c);
    ctx_release(c);
}

static void release_twice_with_child(void)
{
    /* The child keeps the parent alive: the extra release makes the count
     * drop to zero while a child still points at it. Caught when the child
     * goes and releases its parent once more. */
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_value(p, &(ctx_key_t){"k"}, NULL, NULL);
    ctx_release(p);
    ctx_release(p); /* frees p under c: the misuse */
    ctx_release(c); /* releases p again */
}

static void retain_after_release(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_release(c);
    ctx_retain(c);
}

/* A stale context whose memory a new context has already taken: the node
 * is valid again, so no magic check can tell; only a quarantine of freed
 * memory can. ASan keeps one (the node cache is off under ASan and valgrind
 * so as not to defeat it); other builds reuse the block at once, as glibc's
 * malloc does, and this case is skipped there. */
static void stale_after_reuse(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_release(c);
    ctx_t *d = ctx_with_cancel(ctx_background());
    ctx_release(c); /* stale */
    ctx_release(d);
}

static void cancel_after_release(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_release(c);
    ctx_cancel(c);
}

static void derive_from_freed(void)
{
    ctx_t *c = ctx_with_timeout(ctx_background(), CTX_HOUR);
    ctx_release(c);
    ctx_release(ctx_with_cancel(c));
}

static void after_func_on_freed(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_release(c);
    ctx_after_func(c, (void (*)(void *))abort, NULL);
}

static void refcount_overflow(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx__debug_set_refs(c, INT32_MAX);
    ctx_retain(c);
}

static void release_at_zero_count(void)
{
    /* A count of zero on a live node: the underflow check. */
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx__debug_set_refs(c, 0);
    ctx_release(c);
}

static void nop(void *arg)
{
    (void)arg;
}

static void after_stop_twice(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_after_t *r = ctx_after_func(c, nop, NULL);
    ctx_after_stop(r);
    ctx_after_stop(r);
}

static void after_stop_twice_done(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel(c);
    ctx_after_t *r = ctx_after_func(c, nop, NULL);
    ctx_after_stop(r);
    ctx_after_stop(r);
}

/* The registration is still alive (the run list holds it while fn runs), so
 * this one reads no freed memory and runs under ASan too. */
static ctx_after_t *self_reg;
static void stop_self_twice(void *arg)
{
    (void)arg;
    ctx_after_stop(self_reg);
    ctx_after_stop(self_reg);
}
static void after_stop_twice_inside_fn(void)
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    self_reg = ctx_after_func(c, stop_self_twice, NULL);
    ctx_cancel(c);
}

/* Pointers that are not contexts: a zeroed block, a block of garbage. */
static _Alignas(64) unsigned char fake[256];
static void not_a_context_derive(void)
{
    memset(fake, 0, sizeof fake);
    ctx_with_cancel((ctx_t *)fake);
}
static void not_a_context_release(void)
{
    memset(fake, 0x5a, sizeof fake);
    ctx_release((ctx_t *)fake);
}
static void not_a_context_cancel(void)
{
    memset(fake, 0, sizeof fake);
    ctx_cancel((ctx_t *)fake);
}
static void not_a_registration(void)
{
    memset(fake, 0x5a, sizeof fake);
    ctx_after_stop((ctx_after_t *)fake);
}

/* Defined bad input: never aborts. */
static void bad_input_is_not_misuse(void)
{
    errno = 0;
    REL_CHECK(ctx_with_cancel(NULL) == NULL && errno == EINVAL, "NULL");
    errno = 0;
    REL_CHECK(ctx_with_timeout(NULL, 1) == NULL && errno == EINVAL, "NULL");
    errno = 0;
    REL_CHECK(ctx_with_deadline_cause(NULL, 1, 2) == NULL && errno == EINVAL,
              "NULL");
    errno = 0;
    REL_CHECK(ctx_with_value(ctx_background(), NULL, NULL, NULL) == NULL &&
                  errno == EINVAL,
              "NULL key");
    errno = 0;
    REL_CHECK(ctx_with_value(NULL, &(ctx_key_t){"k"}, NULL, NULL) == NULL &&
                  errno == EINVAL,
              "NULL parent");
    errno = 0;
    REL_CHECK(ctx_without_cancel(NULL) == NULL && errno == EINVAL, "NULL");
    errno = 0;
    REL_CHECK(ctx_after_func(NULL, nop, NULL) == NULL && errno == EINVAL,
              "NULL");
    errno = 0;
    REL_CHECK(ctx_after_func(ctx_background(), NULL, NULL) == NULL &&
                  errno == EINVAL,
              "NULL fn");
    errno = 0;
    REL_CHECK(ctx_done_fd(NULL) == -1 && errno == EINVAL, "NULL");
    REL_EQ(ctx_cancel(NULL), EINVAL);
    REL_EQ(ctx_cancel_cause(NULL, 5), EINVAL);
    REL_EQ(ctx_cancel(ctx_background()), EINVAL);
    REL_EQ(ctx_cancel(ctx_todo()), EINVAL);
    REL_EQ(ctx_wait(NULL), EINVAL);
    REL_EQ(ctx_wait_until(NULL, 0), EINVAL);
    REL_CHECK(!ctx_after_stop(NULL), "stop(NULL)");
    REL_CHECK(!ctx_is_done(NULL) && ctx_err(NULL) == 0 &&
                  ctx_cause(NULL) == 0 && !ctx_deadline(NULL, NULL) &&
                  ctx_value(NULL, &(ctx_key_t){"k"}) == NULL,
              "NULL queries");
    REL_CHECK(ctx_retain(NULL) == NULL, "retain(NULL)");
    ctx_release(NULL);
    char buf[64];
    ctx_format(NULL, buf, sizeof buf);
    REL_CHECK(ctx_strerror(-12345) != NULL, "strerror");
    /* The roots are released as often as one likes. */
    for (int i = 0; i < 1000; i++) {
        ctx_release(ctx_background());
        ctx_release(ctx_todo());
    }
    ctx_t *v = ctx_with_value(ctx_background(), &(ctx_key_t){"k"}, NULL,
                              NULL);
    ctx_t *w = ctx_without_cancel(v);
    REL_EQ(ctx_cancel(v), EINVAL);
    REL_EQ(ctx_cancel_cause(w, 3), EINVAL);
    REL_CHECK(!ctx_is_done(v) && !ctx_is_done(w), "cancel changed something");
    ctx_release(w);
    ctx_release(v);
    /* The overflow check leaves room up to INT32_MAX references. */
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx__debug_set_refs(c, INT32_MAX - 1);
    REL_CHECK(ctx_retain(c) == c, "retain");
    ctx__debug_set_refs(c, 1);
    ctx_release(c);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
    printf("  ok   %-48s\n", "defined bad input does not abort");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    bad_input_is_not_misuse();
    death("release after the last reference", release_twice, true,
          "use of a freed or invalid context");
    death("release of a parent freed under its child",
          release_twice_with_child, true,
          "use of a freed or invalid context");
    const char *name_stale = "release of a context whose memory was reused";
    if (REL_ASAN)
        death_by(name_stale, stale_after_reuse, "AddressSanitizer: heap-use-after-free");
    else {
        printf("  SKIP %-48s (needs ASan's quarantine of freed memory)\n",
               name_stale);
        skipped++;
    }
    death("retain after the last release", retain_after_release, true,
          "use of a freed or invalid context");
    death("cancel after the last release", cancel_after_release, true,
          "use of a freed or invalid context");
    death("derive from a freed context", derive_from_freed, true,
          "use of a freed or invalid context");
    death("after_func on a freed context", after_func_on_freed, true,
          "use of a freed or invalid context");
    death("refcount overflow (2^31-1 references)", refcount_overflow, false,
          "context reference count overflow");
    death("release with a zero count", release_at_zero_count, false,
          "ctx_release after the last reference");
    death("after_stop twice (pending registration)", after_stop_twice, true,
          "ctx_after_stop on a registration already stopped");
    death("after_stop twice (fn ran)", after_stop_twice_done, true,
          "ctx_after_stop on a registration already stopped");
    death("after_stop twice from inside fn", after_stop_twice_inside_fn,
          false,
          "ctx_after_stop on a registration already stopped");
    death("derive from a pointer that is not a context",
          not_a_context_derive, false,
          "use of a freed or invalid context");
    death("release of a pointer that is not a context",
          not_a_context_release, false,
          "use of a freed or invalid context");
    death("cancel of a pointer that is not a context", not_a_context_cancel,
          false,
          "use of a freed or invalid context");
    death("after_stop on a pointer that is not a registration",
          not_a_registration, false,
          "ctx_after_stop on a registration already stopped");
    printf("rel_misuse: %d death tests run, %d skipped, %d failed\n", ran,
           skipped, failures);
    return failures == 0 ? 0 : 1;
}
#endif
