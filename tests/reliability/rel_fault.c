/* Allocation-failure injection (CTX_FAULT_INJECTION builds), after SQLite's
 * OOM tests, jansson's test_chaos.c and curl's torture mode.
 *
 * Each scenario builds a small tree with failures off, arms the Nth
 * allocation to fail, runs one public operation, disarms, and checks:
 *  - the operation either succeeded or returned the documented error (NULL
 *    with errno ENOMEM, -1 with ENOMEM, ...) and changed nothing visible: no
 *    new node, no after-func run, no destroy() call;
 *  - the tree is still consistent: a cancel of the root reaches every live
 *    descendant (err and cause), after-funcs run exactly once, done fds are
 *    readable, deadlines still fire, without_cancel subtrees stay live;
 *  - nothing leaked: once everything is released the library's live context
 *    and registration counters are back to zero (CTX_DEBUG), every value's
 *    destroy ran exactly once, the fd count is back where it was, and ASan's
 *    leak checker sees nothing at exit.
 * N goes 1, 2, ... until the operation runs without hitting the armed
 * failure. The number of failure points exercised is printed at the end.
 */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include("ctx/io.h")
#include "ctx/io.h"
#define REL_HAVE_IO 1
#endif
#if __has_include("ctx/group.h")
#include "ctx/group.h"
#define REL_HAVE_GROUP 1
#endif
#if __has_include("ctx/sigctx.h")
#include "ctx/sigctx.h"
#define REL_HAVE_SIGNAL 1
#endif
#endif

#ifndef CTX_FAULT_INJECTION
int main(void)
{
    printf("rel_fault: SKIPPED: needs -DCTX_FAULT_INJECTION=ON\n");
    return 77;
}
#else

#define MAXN 400
#define CAUSE_ROOT 4242
#define CAUSE_DONE 77

/* What a context made by a scenario must do when the fixture's root is
 * cancelled. */
enum expect {
    EXP_ROOT,     /* done with the root's err and cause */
    EXP_BIRTH,    /* done at birth with (err, cause), unchanged since */
    EXP_TIMED,    /* a short deadline: fires by itself with (err, cause) */
    EXP_SELF,     /* cancellable but not under root: live until cancelled */
    EXP_NEVER,    /* can never be done */
};

struct after_arg {
    atomic_int runs;
    ctx_t *ctx;
};

struct made {
    ctx_t *c;
    enum expect exp;
    int err, cause;
};

struct reg {
    ctx_after_t *r;
    struct after_arg *arg;
};

struct fdrec {
    int fd;
    ctx_t *c;
};

struct fx {
    /* root: with_cancel(bg); v = value(root); w = without(v);
     * wc = cancel(w); d = deadline(v, far); dc = cancel(d);
     * dn = cancel(root), cancelled with cause CAUSE_DONE at setup. */
    ctx_t *root, *v, *w, *wc, *d, *dc, *dn;
    ctx_time_t far;
    struct after_arg fixture_arg;
    ctx_after_t *fixture_reg;
    struct made made[MAXN];
    int nmade;
    struct reg regs[MAXN];
    int nregs;
    struct fdrec fds[MAXN];
    int nfds;
    long param;
#ifdef REL_HAVE_GROUP
    ctx_group_t *group;
    int group_started; /* functions started successfully */
#endif
    int values_made; /* value contexts made, each with a counted destroy */
    int fd_allowance; /* fds that may outlive the iteration (shared fd) */
};

static atomic_long destroys;
#ifdef REL_HAVE_GROUP
static atomic_int group_runs;
#endif
static int value_token;
static const ctx_key_t key_a = CTX_KEY("a");
static const ctx_key_t key_b = CTX_KEY("b");

static void count_destroy(void *v)
{
    REL_CHECK(v == &value_token, "destroy got the wrong value");
    atomic_fetch_add(&destroys, 1);
}

static void after_fn(void *p)
{
    struct after_arg *a = p;
    REL_CHECK(ctx_is_done(a->ctx), "after-func ran on a live context");
    atomic_fetch_add(&a->runs, 1);
}

static void fx_add(struct fx *f, ctx_t *c, enum expect exp, int err, int cause)
{
    REL_CHECK(f->nmade < MAXN, "too many contexts");
    f->made[f->nmade++] = (struct made){c, exp, err, cause};
}

static void fx_setup(struct fx *f)
{
    memset(f, 0, sizeof *f);
    f->far = ctx_now() + CTX_HOUR;
    f->root = ctx_with_cancel(ctx_background());
    f->v = ctx_with_value(f->root, &key_a, &value_token, count_destroy);
    f->w = ctx_without_cancel(f->v);
    f->wc = ctx_with_cancel(f->w);
    f->d = ctx_with_deadline(f->v, f->far);
    f->dc = ctx_with_cancel(f->d);
    f->dn = ctx_with_cancel(f->root);
    REL_CHECK(f->root && f->v && f->w && f->wc && f->d && f->dc && f->dn,
              "fixture setup failed with failures off: %s", strerror(errno));
    f->values_made = 1;
    REL_EQ(ctx_cancel_cause(f->dn, CAUSE_DONE), 0);
    f->fixture_arg.ctx = f->dc;
    f->fixture_reg = ctx_after_func(f->dc, after_fn, &f->fixture_arg);
    REL_CHECK(f->fixture_reg != NULL, "after_func failed with failures off");
}

/* Records a derivation's result: returns 0, or the errno of a failure after
 * checking it is one the header documents. */
static int derived(struct fx *f, ctx_t *c, enum expect exp, int err,
                   int cause)
{
    if (c == NULL) {
        int e = errno;
        REL_CHECK(e == ENOMEM || e == EAGAIN,
                  "derivation failed with errno %d (%s), want ENOMEM", e,
                  strerror(e));
        return e;
    }
    fx_add(f, c, exp, err, cause);
    if (exp == EXP_BIRTH) {
        REL_EQ(ctx_err(c), err);
        REL_EQ(ctx_cause(c), cause);
    } else if (exp != EXP_TIMED) {
        REL_CHECK(!ctx_is_done(c), "a new context is done at birth");
    }
    return 0;
}

static int after(struct fx *f, ctx_t *c)
{
    struct after_arg *a = calloc(1, sizeof *a);
    REL_CHECK(a != NULL, "test out of memory");
    a->ctx = c;
    bool done = ctx_is_done(c);
    ctx_after_t *r = ctx_after_func(c, after_fn, a);
    if (r == NULL) {
        int e = errno;
        REL_EQ(e, ENOMEM);
        REL_EQ(atomic_load(&a->runs), 0); /* the callback rule */
        free(a);
        return e;
    }
    /* On a done context fn runs before ctx_after_func returns. */
    REL_EQ(atomic_load(&a->runs), done ? 1 : 0);
    REL_CHECK(f->nregs < MAXN, "too many registrations");
    f->regs[f->nregs++] = (struct reg){r, a};
    return 0;
}

static int done_fd(struct fx *f, ctx_t *c)
{
    int fd = ctx_done_fd(c);
    if (fd < 0) {
        int e = errno;
        REL_EQ(e, ENOMEM);
        return e;
    }
    REL_CHECK(f->nfds < MAXN, "too many fds");
    f->fds[f->nfds++] = (struct fdrec){fd, c};
    return 0;
}

static bool fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    REL_CHECK(r >= 0, "poll: %s", strerror(errno));
    REL_CHECK(!(p.revents & POLLNVAL), "done fd %d is not open", fd);
    return r == 1 && (p.revents & POLLIN);
}

/* The fixture's own nodes, and what the root's cancellation does to them. */
static void fx_check_fixture(struct fx *f)
{
    ctx_t *under[] = {f->root, f->v, f->d, f->dc};
    for (size_t i = 0; i < sizeof under / sizeof under[0]; i++) {
        REL_EQ(ctx_err(under[i]), CTX_CANCELED);
        REL_EQ(ctx_cause(under[i]), CAUSE_ROOT);
    }
    REL_EQ(ctx_err(f->dn), CTX_CANCELED);
    REL_EQ(ctx_cause(f->dn), CAUSE_DONE);
    REL_CHECK(!ctx_is_done(f->w), "without_cancel child was cancelled");
    REL_CHECK(!ctx_is_done(f->wc), "child of without_cancel was cancelled");
    REL_EQ(atomic_load(&f->fixture_arg.runs), 1);
    REL_CHECK(ctx_value(f->dc, &key_a) == &value_token, "value lost");
    REL_CHECK(ctx_value(f->wc, &key_a) == &value_token, "value lost");
    ctx_time_t dl = 0;
    REL_CHECK(ctx_deadline(f->dc, &dl) && dl == f->far, "deadline lost");
    REL_CHECK(!ctx_deadline(f->wc, NULL), "without_cancel has a deadline");
}

/* Checks the tree after the operation, then frees everything and checks that
 * nothing is left. */
static void fx_verify_teardown(struct fx *f, int fds_before)
{
    /* Short deadlines still fire. */
    for (int i = 0; i < f->nmade; i++) {
        struct made *m = &f->made[i];
        if (m->exp != EXP_TIMED)
            continue;
        REL_EQ(ctx_wait_until(m->c, ctx_now() + 10 * CTX_SECOND), m->err);
        REL_EQ(ctx_cause(m->c), m->cause);
    }
    /* Nothing under root is done before the root is cancelled. */
    REL_CHECK(!ctx_is_done(f->root) && !ctx_is_done(f->dc),
              "the fixture was cancelled by the operation");
    for (int i = 0; i < f->nmade; i++)
        if (f->made[i].exp == EXP_ROOT)
            REL_CHECK(!ctx_is_done(f->made[i].c), "made context %d is done",
                      i);

    REL_EQ(ctx_cancel_cause(f->root, CAUSE_ROOT), 0);
    fx_check_fixture(f);
    for (int i = 0; i < f->nmade; i++) {
        struct made *m = &f->made[i];
        switch (m->exp) {
        case EXP_ROOT:
            REL_EQ(ctx_err(m->c), CTX_CANCELED);
            REL_EQ(ctx_cause(m->c), CAUSE_ROOT);
            break;
        case EXP_BIRTH:
        case EXP_TIMED:
            REL_EQ(ctx_err(m->c), m->err);
            REL_EQ(ctx_cause(m->c), m->cause);
            break;
        case EXP_SELF:
        case EXP_NEVER:
            REL_CHECK(!ctx_is_done(m->c), "context %d done by the root", i);
            break;
        }
    }
    /* After-funcs of done contexts have run, exactly once. */
    for (int i = 0; i < f->nregs; i++)
        REL_EQ(atomic_load(&f->regs[i].arg->runs),
               ctx_is_done(f->regs[i].arg->ctx) ? 1 : 0);
    for (int i = 0; i < f->nfds; i++)
        REL_EQ(fd_readable(f->fds[i].fd), ctx_is_done(f->fds[i].c));

    /* Cancel what is left; the without_cancel subtree stays apart. */
    REL_EQ(ctx_cancel(f->wc), 0);
    REL_CHECK(!ctx_is_done(f->w), "without_cancel is done");
    for (int i = 0; i < f->nmade; i++)
        if (f->made[i].exp == EXP_SELF) {
            REL_EQ(ctx_cancel(f->made[i].c), 0);
            REL_EQ(ctx_err(f->made[i].c), CTX_CANCELED);
        }
    for (int i = 0; i < f->nfds; i++)
        REL_EQ(fd_readable(f->fds[i].fd), ctx_is_done(f->fds[i].c));

#ifdef REL_HAVE_GROUP
    if (f->group != NULL) {
        ctx_t *gc = ctx_group_ctx(f->group);
        REL_EQ(ctx_err(gc), CTX_CANCELED); /* a child of root */
        REL_EQ(ctx_cause(gc), CAUSE_ROOT);
        REL_EQ(ctx_group_wait(f->group), 0);
        REL_EQ(atomic_exchange(&group_runs, 0), f->group_started);
        ctx_group_free(f->group);
    }
#endif
    /* Teardown: every registration ends with one stop. */
    REL_CHECK(!ctx_after_stop(f->fixture_reg), "stop after fn ran");
    for (int i = 0; i < f->nregs; i++) {
        struct reg *r = &f->regs[i];
        int runs = atomic_load(&r->arg->runs);
        REL_EQ(ctx_after_stop(r->r), runs == 0);
        REL_EQ(atomic_load(&r->arg->runs), runs);
        free(r->arg);
    }
    for (int i = 0; i < f->nmade; i++)
        ctx_release(f->made[i].c);
    ctx_t *mine[] = {f->root, f->v, f->w, f->wc, f->d, f->dc, f->dn};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        ctx_release(mine[i]);

#ifdef CTX_DEBUG
    /* Frees are synchronous; allow a moment for a timer thread finishing a
     * firing it started before the release. */
    for (int i = 0; i < 1000 && (ctx__live_contexts() || ctx__live_afters());
         i++)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
#endif
    REL_EQ(atomic_exchange(&destroys, 0), f->values_made);
    /* A signal context's watcher thread is detached and closes its pipe a
     * moment after the last signal context ends: wait for it (up to 2 s),
     * so that no scenario starts while the previous one's fds go away. */
    int fds_after = rel_count_fds();
    for (int i = 0; i < 2000 && fds_after > fds_before + f->fd_allowance; i++) {
        usleep(1000);
        fds_after = rel_count_fds();
    }
    REL_CHECK(fds_after >= fds_before &&
                  fds_after <= fds_before + f->fd_allowance,
              "fd leak: %d open before, %d after", fds_before, fds_after);
}

/* ---- scenarios ---------------------------------------------------------- */

static int op_cancel_root(struct fx *f)
{
    return derived(f, ctx_with_cancel(f->root), EXP_ROOT, 0, 0);
}
static int op_cancel_bg(struct fx *f)
{
    return derived(f, ctx_with_cancel(ctx_background()), EXP_SELF, 0, 0);
}
static int op_cancel_todo(struct fx *f)
{
    return derived(f, ctx_with_cancel(ctx_todo()), EXP_SELF, 0, 0);
}
static int op_cancel_value(struct fx *f)
{
    return derived(f, ctx_with_cancel(f->v), EXP_ROOT, 0, 0);
}
static int op_cancel_without(struct fx *f)
{
    return derived(f, ctx_with_cancel(f->w), EXP_SELF, 0, 0);
}
static int op_cancel_deep(struct fx *f)
{
    return derived(f, ctx_with_cancel(f->dc), EXP_ROOT, 0, 0);
}
static int op_cancel_done(struct fx *f)
{
    return derived(f, ctx_with_cancel(f->dn), EXP_BIRTH, CTX_CANCELED,
                   CAUSE_DONE);
}
static int op_deadline_far(struct fx *f)
{
    int r = derived(f, ctx_with_deadline(f->root, f->far - CTX_SECOND),
                    EXP_ROOT, 0, 0);
    if (r == 0) {
        ctx_time_t dl;
        REL_CHECK(ctx_deadline(f->made[f->nmade - 1].c, &dl) &&
                      dl == f->far - CTX_SECOND,
                  "wrong deadline");
    }
    return r;
}
static int op_deadline_later_than_parent(struct fx *f)
{
    int r = derived(f, ctx_with_deadline(f->dc, f->far + CTX_HOUR), EXP_ROOT,
                    0, 0);
    if (r == 0) {
        ctx_time_t dl;
        REL_CHECK(ctx_deadline(f->made[f->nmade - 1].c, &dl) && dl == f->far,
                  "the parent's earlier deadline is not reported");
    }
    return r;
}
static int op_deadline_past(struct fx *f)
{
    return derived(f, ctx_with_deadline(f->root, ctx_now() - CTX_SECOND),
                   EXP_BIRTH, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_deadline_past_cause(struct fx *f)
{
    return derived(f, ctx_with_deadline_cause(f->v, 0, 99), EXP_BIRTH,
                   CTX_DEADLINE_EXCEEDED, 99);
}
static int op_deadline_done_parent(struct fx *f)
{
    return derived(f, ctx_with_deadline(f->dn, f->far), EXP_BIRTH,
                   CTX_CANCELED, CAUSE_DONE);
}
static int op_timeout_short(struct fx *f)
{
    return derived(f, ctx_with_timeout(f->root, CTX_MILLISECOND), EXP_TIMED,
                   CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_timeout_cause_short(struct fx *f)
{
    return derived(f, ctx_with_timeout_cause(f->v, CTX_MILLISECOND, 55),
                   EXP_TIMED, CTX_DEADLINE_EXCEEDED, 55);
}
static int op_timeout_zero(struct fx *f)
{
    return derived(f, ctx_with_timeout(f->root, 0), EXP_BIRTH,
                   CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_timeout_huge(struct fx *f)
{
    int r = derived(f, ctx_with_timeout(ctx_background(), INT64_MAX),
                    EXP_SELF, 0, 0);
    if (r == 0) {
        ctx_time_t dl = 0;
        REL_CHECK(ctx_deadline(f->made[f->nmade - 1].c, &dl) &&
                      dl == CTX_TIME_MAX,
                  "huge timeout does not saturate");
    }
    return r;
}
static int op_timeout_without(struct fx *f)
{
    return derived(f, ctx_with_timeout(f->w, CTX_HOUR), EXP_SELF, 0, 0);
}
static int op_value_root(struct fx *f)
{
    long before = atomic_load(&destroys);
    ctx_t *c = ctx_with_value(f->root, &key_b, &value_token, count_destroy);
    if (c == NULL)
        REL_EQ(atomic_load(&destroys), before); /* no destroy on failure */
    else
        f->values_made++;
    int r = derived(f, c, EXP_ROOT, 0, 0);
    if (r == 0) {
        REL_CHECK(ctx_value(c, &key_b) == &value_token, "value lost");
        REL_CHECK(ctx_value(c, &key_a) == NULL, "a sibling's value seen");
    }
    return r;
}
static int op_value_shadow_null(struct fx *f)
{
    ctx_t *c = ctx_with_value(f->dc, &key_a, NULL, NULL);
    int r = derived(f, c, EXP_ROOT, 0, 0);
    if (r == 0)
        REL_CHECK(ctx_value(c, &key_a) == NULL, "NULL does not shadow");
    return r;
}
static int op_value_without(struct fx *f)
{
    ctx_t *c = ctx_with_value(f->w, &key_b, &value_token, count_destroy);
    if (c != NULL)
        f->values_made++;
    return derived(f, c, EXP_NEVER, 0, 0);
}
static int op_value_done(struct fx *f)
{
    ctx_t *c = ctx_with_value(f->dn, &key_b, &value_token, count_destroy);
    if (c != NULL)
        f->values_made++;
    return derived(f, c, EXP_BIRTH, CTX_CANCELED, CAUSE_DONE);
}
static int op_without_root(struct fx *f)
{
    return derived(f, ctx_without_cancel(f->root), EXP_NEVER, 0, 0);
}
static int op_without_done(struct fx *f)
{
    ctx_t *c = ctx_without_cancel(f->dn);
    int r = derived(f, c, EXP_NEVER, 0, 0);
    if (r == 0)
        REL_CHECK(!ctx_is_done(c) && ctx_cause(c) == 0,
                  "without_cancel of a done parent is done");
    return r;
}
/* Several allocations in one go: a chain, freed back on failure. */
static int op_chain(struct fx *f)
{
    ctx_t *a = ctx_with_cancel(f->root);
    ctx_t *b = a ? ctx_with_value(a, &key_b, &value_token, count_destroy)
                 : NULL;
    ctx_t *c = b ? ctx_with_deadline(b, f->far) : NULL;
    ctx_t *d = c ? ctx_without_cancel(c) : NULL;
    ctx_t *e = d ? ctx_with_timeout(d, CTX_HOUR) : NULL;
    int err = errno;
    if (b != NULL)
        f->values_made++;
    if (e == NULL) {
        REL_CHECK(err == ENOMEM || err == EAGAIN, "errno %d", err);
        ctx_release(d);
        ctx_release(c);
        ctx_release(b);
        ctx_release(a);
        return err;
    }
    fx_add(f, a, EXP_ROOT, 0, 0);
    fx_add(f, b, EXP_ROOT, 0, 0);
    fx_add(f, c, EXP_ROOT, 0, 0);
    fx_add(f, d, EXP_NEVER, 0, 0);
    fx_add(f, e, EXP_SELF, 0, 0);
    return 0;
}
static int op_after_root(struct fx *f)
{
    return after(f, f->root);
}
static int op_after_value(struct fx *f)
{
    return after(f, f->v);
}
static int op_after_deep(struct fx *f)
{
    return after(f, f->dc);
}
static int op_after_done(struct fx *f)
{
    return after(f, f->dn);
}
static int op_after_without(struct fx *f)
{
    return after(f, f->w);
}
static int op_after_bg(struct fx *f)
{
    return after(f, ctx_background());
}
static int op_fd_root(struct fx *f)
{
    return done_fd(f, f->root);
}
static int op_fd_value(struct fx *f)
{
    return done_fd(f, f->v);
}
static int op_fd_done(struct fx *f)
{
    return done_fd(f, f->dn);
}
static int op_fd_deadline(struct fx *f)
{
    return done_fd(f, f->d);
}
static int op_fd_without(struct fx *f)
{
    f->fd_allowance = 2; /* the shared never-ready fd (a pipe: 2), once */
    return done_fd(f, f->w);
}
static int op_fd_bg(struct fx *f)
{
    f->fd_allowance = 2;
    return done_fd(f, ctx_background());
}
static int op_format(struct fx *f)
{
    /* (no deadline on the way: the time left would change the length) */
    char buf[512];
    size_t n = ctx_format(f->wc, buf, sizeof buf);
    REL_CHECK(n > 0 && n < sizeof buf && strlen(buf) == n, "format: %zu", n);
    REL_CHECK(strncmp(buf, "context.Background", 18) == 0, "format: %s", buf);
    char small[8];
    REL_EQ(ctx_format(f->wc, small, sizeof small), n);
    REL_EQ(strlen(small), sizeof small - 1);
    REL_EQ(ctx_format(f->wc, NULL, 0), n);
    n = ctx_format(f->dc, buf, sizeof buf);
    REL_CHECK(n > 0 && n < sizeof buf && strlen(buf) == n, "format: %zu", n);
    return 0;
}
static int op_cancel_op(struct fx *f)
{
    /* Cancelling never allocates visibly: it cannot fail. */
    ctx_t *c = f->made[0].c;
    REL_EQ(ctx_cancel_cause(c, 31), 0);
    f->made[0].exp = EXP_BIRTH;
    f->made[0].err = CTX_CANCELED;
    f->made[0].cause = 31;
    REL_EQ(ctx_cancel(f->v), EINVAL);
    REL_EQ(ctx_cancel(f->w), EINVAL);
    return 0;
}
static void setup_cancel_op(struct fx *f)
{
    ctx_t *c = ctx_with_cancel(f->dc);
    REL_CHECK(c != NULL, "setup");
    fx_add(f, c, EXP_ROOT, 0, 0);
    struct after_arg *a = calloc(1, sizeof *a);
    a->ctx = c;
    ctx_after_t *r = ctx_after_func(c, after_fn, a);
    REL_CHECK(r != NULL, "setup");
    f->regs[f->nregs++] = (struct reg){r, a};
}
static int op_waits(struct fx *f)
{
    REL_EQ(ctx_wait_until(f->root, ctx_now() + CTX_MICROSECOND), 0);
    REL_EQ(ctx_wait_until(f->dn, CTX_TIME_MAX), CTX_CANCELED);
    REL_EQ(ctx_wait(f->dn), CTX_CANCELED);
    REL_EQ(ctx_wait_until(f->w, ctx_now()), 0);
    return 0;
}
/* The timer heap grows as deadlines pile up: param far deadlines pending. */
static void setup_heap(struct fx *f)
{
    for (long i = 0; i < f->param; i++) {
        ctx_t *c = ctx_with_deadline(ctx_background(), f->far + i);
        REL_CHECK(c != NULL, "setup");
        fx_add(f, c, EXP_SELF, 0, 0);
    }
}
static int op_heap(struct fx *f)
{
    return derived(f, ctx_with_deadline(f->root, f->far + CTX_SECOND),
                   EXP_ROOT, 0, 0);
}
/* Many registrations on one context. */
static void setup_afters(struct fx *f)
{
    for (long i = 0; i < f->param; i++) {
        struct after_arg *a = calloc(1, sizeof *a);
        a->ctx = f->root;
        ctx_after_t *r = ctx_after_func(f->root, after_fn, a);
        REL_CHECK(r != NULL, "setup");
        f->regs[f->nregs++] = (struct reg){r, a};
    }
}

/* ---- the helpers (ctx/io.h, ctx/group.h, ctx/sigctx.h) ---------------- */
#ifdef REL_HAVE_GROUP
static int group_fn(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&group_runs, 1);
    return 0;
}
static int op_group_new(struct fx *f)
{
    f->group = ctx_group_new(f->root, 0);
    if (f->group == NULL) {
        REL_EQ(errno, ENOMEM);
        return errno;
    }
    REL_CHECK(!ctx_is_done(ctx_group_ctx(f->group)), "group ctx done");
    return 0;
}
static void setup_group(struct fx *f)
{
    f->group = ctx_group_new(f->root, 0);
    REL_CHECK(f->group != NULL, "setup");
    REL_EQ(ctx_group_go(f->group, group_fn, NULL), 0);
    f->group_started = 1;
}
static int op_group_go(struct fx *f)
{
    int e = ctx_group_go(f->group, group_fn, NULL);
    if (e != 0) {
        REL_CHECK(e == ENOMEM || e == EAGAIN, "group_go: %d", e);
        return e;
    }
    f->group_started++;
    return 0;
}
#endif
#ifdef REL_HAVE_SIGNAL
static int op_signals(struct fx *f)
{
    static const int sigs[] = {SIGUSR2};
    f->fd_allowance = 0; /* the watcher's pipe goes with its thread */
    ctx_t *c = ctx_with_signals(f->root, sigs, 1);
    if (c == NULL) {
        int e = errno;
        REL_CHECK(e == ENOMEM || e == EAGAIN || e == EMFILE, "errno %d", e);
        return e;
    }
    fx_add(f, c, EXP_ROOT, 0, 0);
    return 0;
}
#endif
#ifdef REL_HAVE_IO
static int op_cond_wait(struct fx *f)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    ctx_t *t = f->made[0].c;
    pthread_mutex_lock(&mu);
    int e = ctx_cond_wait(t, &cv, &mu);
    pthread_mutex_unlock(&mu);
    if (e == ENOMEM)
        return e;
    REL_CHECK(e == 0 || e == CTX_DEADLINE_EXCEEDED, "cond_wait: %d", e);
    return 0;
}
static int op_poll_many(struct fx *f)
{
    struct pollfd p[65];
    for (int i = 0; i < 65; i++)
        p[i] = (struct pollfd){.fd = -1, .events = POLLIN};
    int r = ctx_poll(f->made[0].c, p, 65);
    if (r < 0 && errno == ENOMEM)
        return ENOMEM;
    REL_CHECK(r == -1 && errno == CTX_DEADLINE_EXCEEDED, "poll: %d, %d", r,
              errno);
    return 0;
}
static void setup_short(struct fx *f)
{
    ctx_t *c = ctx_with_timeout(f->root, CTX_MILLISECOND);
    REL_CHECK(c != NULL, "setup");
    fx_add(f, c, EXP_TIMED, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
#endif

struct scenario {
    const char *name;
    int (*op)(struct fx *f);
    void (*setup)(struct fx *f);
    long param_from, param_to; /* the setup's parameter range */
};

static const struct scenario scenarios[] = {
    {"with_timeout(short)", op_timeout_short, NULL, 0, 0},
    {"with_timeout_cause(short)", op_timeout_cause_short, NULL, 0, 0},
    {"with_deadline(far)", op_deadline_far, NULL, 0, 0},
    {"with_deadline(later than parent's)", op_deadline_later_than_parent,
     NULL, 0, 0},
    {"with_deadline(past)", op_deadline_past, NULL, 0, 0},
    {"with_deadline_cause(past)", op_deadline_past_cause, NULL, 0, 0},
    {"with_deadline(done parent)", op_deadline_done_parent, NULL, 0, 0},
    {"with_timeout(0)", op_timeout_zero, NULL, 0, 0},
    {"with_timeout(huge)", op_timeout_huge, NULL, 0, 0},
    {"with_timeout(under without_cancel)", op_timeout_without, NULL, 0, 0},
    {"with_deadline with N timers pending", op_heap, setup_heap, 0, 300},
    {"with_cancel(root)", op_cancel_root, NULL, 0, 0},
    {"with_cancel(background)", op_cancel_bg, NULL, 0, 0},
    {"with_cancel(todo)", op_cancel_todo, NULL, 0, 0},
    {"with_cancel(value)", op_cancel_value, NULL, 0, 0},
    {"with_cancel(without_cancel)", op_cancel_without, NULL, 0, 0},
    {"with_cancel(deep)", op_cancel_deep, NULL, 0, 0},
    {"with_cancel(done parent)", op_cancel_done, NULL, 0, 0},
    {"with_value", op_value_root, NULL, 0, 0},
    {"with_value(NULL shadow)", op_value_shadow_null, NULL, 0, 0},
    {"with_value(without_cancel)", op_value_without, NULL, 0, 0},
    {"with_value(done parent)", op_value_done, NULL, 0, 0},
    {"without_cancel", op_without_root, NULL, 0, 0},
    {"without_cancel(done parent)", op_without_done, NULL, 0, 0},
    {"chain of 5 derivations", op_chain, NULL, 0, 0},
    {"after_func(live)", op_after_root, NULL, 0, 0},
    {"after_func(value)", op_after_value, NULL, 0, 0},
    {"after_func(deep)", op_after_deep, NULL, 0, 0},
    {"after_func(done)", op_after_done, NULL, 0, 0},
    {"after_func(without_cancel)", op_after_without, NULL, 0, 0},
    {"after_func(background)", op_after_bg, NULL, 0, 0},
    {"after_func with N registered", op_after_root, setup_afters, 0, 40},
    {"done_fd(cancel)", op_fd_root, NULL, 0, 0},
    {"done_fd(value)", op_fd_value, NULL, 0, 0},
    {"done_fd(deadline)", op_fd_deadline, NULL, 0, 0},
    {"done_fd(done)", op_fd_done, NULL, 0, 0},
    {"done_fd(without_cancel)", op_fd_without, NULL, 0, 0},
    {"done_fd(background)", op_fd_bg, NULL, 0, 0},
    {"format", op_format, NULL, 0, 0},
    {"cancel, cancel_cause", op_cancel_op, setup_cancel_op, 0, 0},
    {"wait, wait_until", op_waits, NULL, 0, 0},
#ifdef REL_HAVE_GROUP
    {"ctx_group_new", op_group_new, NULL, 0, 0},
    {"ctx_group_go", op_group_go, setup_group, 0, 0},
#endif
#ifdef REL_HAVE_SIGNAL
    {"ctx_with_signals", op_signals, NULL, 0, 0},
#endif
#ifdef REL_HAVE_IO
    {"ctx_cond_wait", op_cond_wait, setup_short, 0, 0},
    {"ctx_poll (65 fds)", op_poll_many, setup_short, 0, 0},
#endif
};

static char where[200];
static void on_abort(int sig)
{
    (void)sig;
    static const char m[] = "rel_fault: failed in scenario: ";
    (void)!write(2, m, sizeof m - 1);
    (void)!write(2, where, strlen(where));
    (void)!write(2, "\n", 1);
}

int main(void)
{
    signal(SIGABRT, on_abort);
    long points = 0, absorbed = 0, ops = 0;

    /* The first deadline of the process allocates the timer's heap (and
     * starts its thread): before any fixture, which has a deadline. */
    long first = 0;
    snprintf(where, sizeof where, "first deadline of the process");
    for (long n = 1;; n++) {
        REL_CHECK(n < 100, "never succeeds");
        int fds_before = rel_count_fds();
        ctx__fault_fail_nth(n);
        ctx_t *c = ctx_with_timeout(ctx_background(), CTX_MILLISECOND);
        int e = errno;
        bool hit = ctx__fault_triggered();
        ctx__fault_fail_nth(0);
        ops++;
        if (c == NULL) {
            REL_CHECK(hit && (e == ENOMEM || e == EAGAIN), "errno %d", e);
        } else {
            REL_EQ(ctx_wait_until(c, ctx_now() + 10 * CTX_SECOND),
                   CTX_DEADLINE_EXCEEDED);
            ctx_release(c);
        }
#ifdef CTX_DEBUG
        /* The timer thread may still hold the reference it fired with. */
        for (int i = 0; i < 1000 && ctx__live_contexts() != 0; i++)
            usleep(1000);
        REL_EQ(ctx__live_contexts(), 0);
#endif
        REL_EQ(rel_count_fds(), fds_before);
        if (!hit)
            break;
        first++;
        if (c != NULL)
            absorbed++;
    }
    printf("  %-40s %4ld failure points\n", "first deadline of the process",
           first);
    points += first;
    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++) {
        const struct scenario *sc = &scenarios[s];
        long sc_points = 0;
        for (long param = sc->param_from; param <= sc->param_to; param++) {
            for (long n = 1;; n++) {
                REL_CHECK(n < 10000, "%s: never succeeds", sc->name);
                static struct fx f;
                int fds_before = rel_count_fds();
                fx_setup(&f);
                f.param = param;
                if (sc->setup != NULL)
                    sc->setup(&f);
                int nmade = f.nmade, nregs = f.nregs;
                int values = f.values_made;
                long destroyed = atomic_load(&destroys);
                snprintf(where, sizeof where, "%s, param %ld, n %ld",
                         sc->name, param, n);
                ctx__fault_fail_nth(n);
                int r = sc->op(&f);
                bool hit = ctx__fault_triggered();
                ctx__fault_fail_nth(0);
                ops++;
                if (r != 0) {
                    REL_CHECK(hit, "%s: failed (%s) with no injected failure",
                              sc->name, strerror(r));
                    /* A failure changes nothing. */
                    REL_EQ(f.nmade, nmade);
                    REL_EQ(f.nregs, nregs);
                    /* (values made and freed by the operation itself) */
                    REL_EQ(atomic_load(&destroys) - destroyed,
                           f.values_made - values);
                }
                fx_verify_teardown(&f, fds_before);
                if (!hit)
                    break;
                sc_points++;
                if (r == 0)
                    absorbed++;
            }
        }
        printf("  %-40s %4ld failure points\n", sc->name, sc_points);
        points += sc_points;
    }
    printf("rel_fault: %ld failure points exercised (%ld absorbed without "
           "error), %ld operations, all consistent and leak-free\n",
           points, absorbed, ops);
    return 0;
}
#endif
