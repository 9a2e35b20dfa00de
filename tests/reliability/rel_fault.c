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
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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
    EXP_ROOT,  /* done with the root's err and cause */
    EXP_BIRTH, /* done at birth with (err, cause), unchanged since */
    EXP_TIMED, /* a short deadline: fires by itself with (err, cause) */
    EXP_SELF,  /* cancellable but not under root: live until cancelled */
    EXP_NEVER, /* can never be done */
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
    int group_started;    /* functions started successfully */
    unsigned group_limit; /* 0: none */
#endif
#ifdef REL_HAVE_SIGNAL
    /* The program's own dispositions of SIGUSR1 and SIGUSR2 (no signal
     * context watching): what every watch must leave behind. */
    void (*prog_disp[2])(int);
    int sigs[2], nsigs; /* what op_signals watches (0: SIGUSR2) */
    int sigctx;         /* 1 + index in made of the setup's signal context */
    int sigctx_sig;     /* the signal it watches */
#endif
    int values_made;    /* value contexts made, each with a counted destroy */
    int fd_allowance;   /* fds that may outlive the iteration (shared fd) */
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
#ifdef REL_HAVE_SIGNAL
    struct sigaction sa;
    REL_CHECK(sigaction(SIGUSR1, NULL, &sa) == 0, "sigaction");
    f->prog_disp[0] = sa.sa_handler;
    REL_CHECK(sigaction(SIGUSR2, NULL, &sa) == 0, "sigaction");
    f->prog_disp[1] = sa.sa_handler;
#endif
}

/* Records a derivation's result: returns 0, or the errno of a failure after
 * checking it is one the header documents: ENOMEM, or for the deadline
 * derivations (eagain_ok) also EAGAIN (the timer thread could not start). */
static int derived_(struct fx *f, ctx_t *c, enum expect exp, int err, int cause,
                    bool eagain_ok)
{
    if (c == NULL) {
        int e = errno;
        REL_CHECK(e == ENOMEM || (eagain_ok && e == EAGAIN),
                  "derivation failed with errno %d (%s), want ENOMEM%s", e,
                  strerror(e), eagain_ok ? " or EAGAIN" : "");
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
/* with_cancel, with_value, without_cancel: ENOMEM only. */
static int derived(struct fx *f, ctx_t *c, enum expect exp, int err, int cause)
{
    return derived_(f, c, exp, err, cause, false);
}
/* with_deadline*, with_timeout*: ENOMEM or EAGAIN. */
static int derived_dl(struct fx *f, ctx_t *c, enum expect exp, int err,
                      int cause)
{
    return derived_(f, c, exp, err, cause, true);
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
            REL_CHECK(!ctx_is_done(f->made[i].c), "made context %d is done", i);

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
    int r = derived_dl(f, ctx_with_deadline(f->root, f->far - CTX_SECOND),
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
    int r = derived_dl(f, ctx_with_deadline(f->dc, f->far + CTX_HOUR), EXP_ROOT,
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
    return derived_dl(f, ctx_with_deadline(f->root, ctx_now() - CTX_SECOND),
                      EXP_BIRTH, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_deadline_past_cause(struct fx *f)
{
    return derived_dl(f, ctx_with_deadline_cause(f->v, 0, 99), EXP_BIRTH,
                      CTX_DEADLINE_EXCEEDED, 99);
}
static int op_deadline_done_parent(struct fx *f)
{
    return derived_dl(f, ctx_with_deadline(f->dn, f->far), EXP_BIRTH,
                      CTX_CANCELED, CAUSE_DONE);
}
static int op_timeout_short(struct fx *f)
{
    return derived_dl(f, ctx_with_timeout(f->root, CTX_MILLISECOND), EXP_TIMED,
                      CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_timeout_cause_short(struct fx *f)
{
    return derived_dl(f, ctx_with_timeout_cause(f->v, CTX_MILLISECOND, 55),
                      EXP_TIMED, CTX_DEADLINE_EXCEEDED, 55);
}
static int op_timeout_zero(struct fx *f)
{
    return derived_dl(f, ctx_with_timeout(f->root, 0), EXP_BIRTH,
                      CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}
static int op_timeout_huge(struct fx *f)
{
    int r = derived_dl(f, ctx_with_timeout(ctx_background(), INT64_MAX),
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
    return derived_dl(f, ctx_with_timeout(f->w, CTX_HOUR), EXP_SELF, 0, 0);
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
    ctx_t *b =
        a ? ctx_with_value(a, &key_b, &value_token, count_destroy) : NULL;
    ctx_t *c = b ? ctx_with_deadline(b, f->far) : NULL;
    ctx_t *d = c ? ctx_without_cancel(c) : NULL;
    ctx_t *e = d ? ctx_with_timeout(d, CTX_HOUR) : NULL;
    int err = errno;
    if (b != NULL)
        f->values_made++;
    if (e == NULL) {
        /* EAGAIN only from the deadline derivations (c, e). */
        bool dl = b != NULL && (c == NULL || d != NULL);
        REL_CHECK(err == ENOMEM || (dl && err == EAGAIN), "errno %d", err);
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
    return derived_dl(f, ctx_with_deadline(f->root, f->far + CTX_SECOND),
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
/* Runs until the group's context ends (the root's cancel at teardown), so
 * that the group's running count is known. */
static int group_block_fn(ctx_t *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&group_runs, 1);
    REL_EQ(ctx_wait(ctx), CTX_CANCELED);
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
/* A group with `limit`, one blocking function running. */
static void setup_group_limit(struct fx *f, unsigned limit)
{
    f->group = ctx_group_new(f->root, limit);
    REL_CHECK(f->group != NULL, "setup");
    f->group_limit = limit;
    REL_EQ(ctx_group_go(f->group, group_block_fn, NULL), 0);
    f->group_started = 1;
    REL_EQ(ctx_group_running(f->group), 1);
}
static void setup_group_room(struct fx *f)
{
    setup_group_limit(f, 2);
}
static void setup_group_full(struct fx *f)
{
    setup_group_limit(f, 1);
}
/* A failed start: ENOMEM (the only error an allocation can cause), fn never
 * called (teardown counts the runs), the group neither cancelled nor
 * changed. */
static int group_failed(struct fx *f, int e, unsigned running)
{
    REL_CHECK(e == ENOMEM, "group start failed with %d (%s), want ENOMEM", e,
              strerror(e));
    REL_CHECK(!ctx_is_done(ctx_group_ctx(f->group)), "group cancelled");
    if (f->group_limit != 0)
        REL_EQ(ctx_group_running(f->group), running);
    return e;
}
static int op_group_go(struct fx *f)
{
    unsigned running = ctx_group_running(f->group);
    int e = ctx_group_go(f->group, group_fn, NULL);
    if (e != 0)
        return group_failed(f, e, running);
    f->group_started++;
    return 0;
}
static int op_group_try_go(struct fx *f)
{
    unsigned running = ctx_group_running(f->group);
    bool full = f->group_limit != 0 && running >= f->group_limit;
    int e = ctx_group_try_go(f->group, group_block_fn, NULL);
    if (e == EAGAIN && full) {
        /* The documented answer at the limit, not an allocation failure. */
        REL_CHECK(!ctx__fault_triggered(), "EAGAIN for an allocation failure");
        REL_EQ(ctx_group_running(f->group), running);
        return 0;
    }
    if (e != 0)
        return group_failed(f, e, running);
    REL_CHECK(!full, "try_go started a function beyond the limit");
    REL_EQ(ctx_group_running(f->group), running + 1);
    f->group_started++;
    return 0;
}
#endif
#ifdef REL_HAVE_SIGNAL
typedef void (*handler_t)(int);
static atomic_int prog_handler_runs;
/* A handler of the program's own, which a signal context must put back. */
static void prog_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&prog_handler_runs, 1);
}
static bool library_owns(int sig)
{
    handler_t h = rel_disposition(sig);
    return h != SIG_DFL && h != SIG_IGN && h != prog_handler;
}
static void set_disposition(int sig, handler_t h)
{
    struct sigaction sa = {.sa_handler = h};
    sigemptyset(&sa.sa_mask);
    REL_CHECK(sigaction(sig, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
}
static const char *handler_name(handler_t h)
{
    return h == SIG_DFL        ? "SIG_DFL"
           : h == SIG_IGN      ? "SIG_IGN"
           : h == prog_handler ? "the program's handler"
                               : "another handler (the library's)";
}
/* A watch ended by a signal ends in the watcher thread, a moment after the
 * context is seen done: give it up to 2 s to put the disposition back. */
static void expect_disposition(int sig, handler_t want)
{
    handler_t h = rel_disposition(sig);
    for (int i = 0; i < 2000 && h != want; i++) {
        usleep(1000);
        h = rel_disposition(sig);
    }
    REL_CHECK(h == want, "signal %d: disposition %s, want %s", sig,
              handler_name(h), handler_name(want));
}
static int sig_slot(int sig)
{
    return sig == SIGUSR1 ? 0 : 1;
}
/* A new signal context on sigs, cancelled by raise(sig) through the
 * library's handler (the program's never runs). */
static void check_raise(const int *sigs, int n, int sig)
{
    ctx_t *c = ctx_with_signals(ctx_background(), sigs, (size_t)n);
    REL_CHECK(c != NULL, "ctx_with_signals after a failed one: %s",
              strerror(errno));
    REL_CHECK(library_owns(sig), "no library handler for signal %d", sig);
    int runs = atomic_load(&prog_handler_runs);
    REL_EQ(raise(sig), 0);
    REL_EQ(ctx_wait_until(c, ctx_now() + 10 * CTX_SECOND), CTX_CANCELED);
    REL_EQ(ctx_cause(c), EINTR);
    REL_EQ(ctx_signal_caught(c), sig);
    REL_EQ(atomic_load(&prog_handler_runs), runs);
    ctx_release(c);
}
/* The setup's signal context, if it watches sig: cancelled by it. */
static void setup_sigctx_fired(struct fx *f, int sig)
{
    if (f->sigctx == 0 || f->sigctx_sig != sig)
        return;
    struct made *m = &f->made[f->sigctx - 1];
    if (m->exp != EXP_ROOT)
        return;
    REL_EQ(ctx_wait_until(m->c, ctx_now() + 10 * CTX_SECOND), CTX_CANCELED);
    REL_EQ(ctx_cause(m->c), EINTR);
    REL_EQ(ctx_signal_caught(m->c), sig);
    *m = (struct made){m->c, EXP_BIRTH, CTX_CANCELED, EINTR};
}
static int op_signals(struct fx *f)
{
    static const int usr2[] = {SIGUSR2};
    const int *sigs = f->nsigs != 0 ? f->sigs : usr2;
    int n = f->nsigs != 0 ? f->nsigs : 1;
    f->fd_allowance = 0; /* the watcher's pipe goes with its thread */
    handler_t before[2] = {rel_disposition(SIGUSR1), rel_disposition(SIGUSR2)};
    ctx_t *c = ctx_with_signals(f->root, sigs, (size_t)n);
    if (c != NULL) {
        for (int i = 0; i < n; i++)
            REL_CHECK(library_owns(sigs[i]), "signal %d not watched", sigs[i]);
        fx_add(f, c, EXP_ROOT, 0, 0);
        return 0;
    }
    int e = errno;
    REL_CHECK(e == ENOMEM, "ctx_with_signals: errno %d (%s), want ENOMEM", e,
              strerror(e));
    /* The dispositions are exactly what they were before the call: the
     * program's, or the handler of a signal context still watching. */
    REL_CHECK(rel_disposition(SIGUSR1) == before[0],
              "SIGUSR1 disposition changed by a failed ctx_with_signals");
    REL_CHECK(rel_disposition(SIGUSR2) == before[1],
              "SIGUSR2 disposition changed by a failed ctx_with_signals");
    /* Signal contexts still work: a new one on the same signals, and the
     * setup's (which a raise of its signal cancels too). */
    for (int i = 0; i < n; i++) {
        check_raise(sigs, n, sigs[i]);
        setup_sigctx_fired(f, sigs[i]);
    }
    if (f->sigctx != 0 && f->made[f->sigctx - 1].exp == EXP_ROOT) {
        REL_CHECK(library_owns(f->sigctx_sig), "the setup's watch is gone");
        REL_EQ(raise(f->sigctx_sig), 0);
        setup_sigctx_fired(f, f->sigctx_sig);
    }
    /* No watch is left: the program's dispositions are back. */
    expect_disposition(SIGUSR1, f->prog_disp[0]);
    expect_disposition(SIGUSR2, f->prog_disp[1]);
    return e;
}
/* Another signal context is alive (the watcher exists) on `sig`. */
static void setup_sigctx(struct fx *f, int sig)
{
    ctx_t *c = ctx_with_signals(f->root, &sig, 1);
    REL_CHECK(c != NULL, "setup: %s", strerror(errno));
    fx_add(f, c, EXP_ROOT, 0, 0);
    f->sigctx = f->nmade;
    f->sigctx_sig = sig;
}
static void setup_sig_other(struct fx *f)
{
    setup_sigctx(f, SIGUSR1);
}
static void setup_sig_same(struct fx *f)
{
    setup_sigctx(f, SIGUSR2);
}
/* The program has a handler of its own for SIGUSR2. */
static void setup_sig_prog(struct fx *f)
{
    set_disposition(SIGUSR2, prog_handler);
    f->prog_disp[sig_slot(SIGUSR2)] = prog_handler;
}
/* Two signals, one with the program's handler, one default. */
static void setup_sig_pair(struct fx *f)
{
    set_disposition(SIGUSR1, prog_handler);
    f->prog_disp[sig_slot(SIGUSR1)] = prog_handler;
    f->sigs[0] = SIGUSR1;
    f->sigs[1] = SIGUSR2;
    f->nsigs = 2;
}
/* Two signals while a signal context watches one of them. */
static void setup_sig_pair_watched(struct fx *f)
{
    setup_sig_pair(f);
    setup_sigctx(f, SIGUSR2);
}
#endif
#ifdef REL_HAVE_IO
/* The caller's mutex is held again when a cond wait returns, even on
 * failure. */
static void check_held(pthread_mutex_t *mu)
{
    int e = pthread_mutex_trylock(mu);
    if (e == 0)
        pthread_mutex_unlock(mu);
    REL_CHECK(e == EBUSY, "the mutex is not held after the wait (%d)", e);
}
static int op_cond_wait(struct fx *f)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    ctx_t *t = f->made[0].c;
    pthread_mutex_lock(&mu);
    int e = ctx_cond_wait(t, &cv, &mu);
    check_held(&mu);
    pthread_mutex_unlock(&mu);
    if (e == ENOMEM)
        return e;
    REL_CHECK(e == 0 || e == CTX_DEADLINE_EXCEEDED, "cond_wait: %d", e);
    return 0;
}
struct pred_arg {
    int calls;
    int true_from; /* the first call that returns true */
};
static bool pred_fn(void *p)
{
    struct pred_arg *a = p;
    return ++a->calls >= a->true_from;
}
/* pred never true: the wait ends with the 1 ms deadline. */
static int op_cond_wait_pred(struct fx *f)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct pred_arg a = {0, INT_MAX};
    pthread_mutex_lock(&mu);
    int e = ctx_cond_wait_pred(f->made[0].c, &cv, &mu, pred_fn, &a);
    check_held(&mu);
    pthread_mutex_unlock(&mu);
    if (e == ENOMEM) {
        REL_EQ(a.calls, 1); /* checked once before waiting, then failed */
        return e;
    }
    REL_EQ(e, CTX_DEADLINE_EXCEEDED);
    REL_CHECK(a.calls >= 2, "pred not re-checked (%d calls)", a.calls);
    return 0;
}
/* pred true after the first wake-up (the deadline's, or a spurious one):
 * the predicate wins over the deadline. */
static int op_cond_wait_pred_wake(struct fx *f)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct pred_arg a = {0, 2};
    pthread_mutex_lock(&mu);
    int e = ctx_cond_wait_pred(f->made[0].c, &cv, &mu, pred_fn, &a);
    check_held(&mu);
    pthread_mutex_unlock(&mu);
    if (e == ENOMEM) {
        REL_EQ(a.calls, 1);
        return e;
    }
    REL_EQ(e, 0);
    REL_CHECK(a.calls >= 2, "pred calls: %d", a.calls);
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
    {"with_deadline(later than parent's)", op_deadline_later_than_parent, NULL,
     0, 0},
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
    {"ctx_group_go(limit 2, 1 running)", op_group_go, setup_group_room, 0, 0},
    {"ctx_group_try_go(limit 2, 1 running)", op_group_try_go, setup_group_room,
     0, 0},
    {"ctx_group_try_go(limit reached)", op_group_try_go, setup_group_full, 0,
     0},
#endif
#ifdef REL_HAVE_SIGNAL
    {"ctx_with_signals", op_signals, NULL, 0, 0},
    {"ctx_with_signals(watcher on another sig)", op_signals, setup_sig_other, 0,
     0},
    {"ctx_with_signals(watcher on the same sig)", op_signals, setup_sig_same, 0,
     0},
    {"ctx_with_signals(program's handler)", op_signals, setup_sig_prog, 0, 0},
    {"ctx_with_signals(2 sigs, one handled)", op_signals, setup_sig_pair, 0, 0},
    {"ctx_with_signals(2 sigs, one watched)", op_signals,
     setup_sig_pair_watched, 0, 0},
#endif
#ifdef REL_HAVE_IO
    {"ctx_cond_wait", op_cond_wait, setup_short, 0, 0},
    {"ctx_cond_wait_pred(until deadline)", op_cond_wait_pred, setup_short, 0,
     0},
    {"ctx_cond_wait_pred(true on wake-up)", op_cond_wait_pred_wake, setup_short,
     0, 0},
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

/* ---- operations that allocate nothing ----------------------------------
 * They cannot fail for want of memory, and callers rely on it (cancel and
 * release in cleanup paths, the blocking helpers in loops): an allocation
 * added to one of them would need its own failure handling and a scenario
 * above, so it must be noticed. Each runs with the counter reset and must
 * leave it at 0; setup and cleanup around them may allocate. */
static int no_alloc_checked;
#define NO_ALLOC(what, ...)                                                    \
    do {                                                                       \
        snprintf(where, sizeof where, "allocation-free: %s", what);            \
        ctx__fault_fail_nth(0);                                                \
        __VA_ARGS__;                                                           \
        long rel_n_ = ctx__fault_allocs();                                     \
        REL_CHECK(rel_n_ == 0, "%s made %ld allocation(s)", what, rel_n_);     \
        no_alloc_checked++;                                                    \
    } while (0)

static void *wait_main(void *c)
{
    return (void *)(intptr_t)ctx_wait(c);
}
#ifdef REL_HAVE_GROUP
static int group_err_fn(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&group_runs, 1);
    return 5;
}
static int group_nap_fn(ctx_t *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&group_runs, 1);
    REL_EQ(ctx_sleep(ctx, 2 * CTX_MILLISECOND), 0);
    return 0;
}
#endif

static void no_alloc_checks(void)
{
    static const ctx_key_t key_c = CTX_KEY("c");
    int fds_before = rel_count_fds();
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t *val = ctx_with_value(root, &key_a, &value_token, NULL);
    ctx_t *chain[8];
    ctx_t *prev = val;
    for (int i = 0; i < 8; i++) {
        chain[i] = i % 2 ? ctx_with_value(prev, &key_c, &value_token, NULL)
                         : ctx_with_cancel(prev);
        REL_CHECK(chain[i] != NULL, "setup");
        prev = chain[i];
    }
    ctx_t *dl = ctx_with_deadline(root, ctx_now() + CTX_HOUR);
    ctx_t *dn = ctx_with_cancel(root);
    ctx_t *wo = ctx_without_cancel(val);
    REL_CHECK(root && val && dl && dn && wo, "setup");
    REL_EQ(ctx_cancel_cause(dn, 5), 0);
    ctx_time_t t = 0;

    /* Queries. */
    NO_ALLOC("ctx_now", REL_CHECK(ctx_now() > 0, "now"));
    NO_ALLOC("ctx_background, ctx_todo",
             REL_CHECK(ctx_background() && ctx_todo(), "roots"));
    NO_ALLOC("ctx_is_done",
             REL_CHECK(!(ctx_is_done)(root) && (ctx_is_done)(dn) &&
                           !ctx_is_done(chain[7]) && !(ctx_is_done)(NULL),
                       "is_done"));
    NO_ALLOC("ctx_err", REL_EQ((ctx_err)(dn), CTX_CANCELED);
             REL_EQ((ctx_err)(chain[7]), 0); REL_EQ(ctx_err(dn), CTX_CANCELED));
    NO_ALLOC("ctx_cause", REL_EQ(ctx_cause(dn), 5);
             REL_EQ(ctx_cause(chain[7]), 0));
    NO_ALLOC("ctx_deadline",
             REL_CHECK(ctx_deadline(dl, &t) && ctx_deadline(dl, NULL) &&
                           !ctx_deadline(wo, NULL) &&
                           !ctx_deadline(chain[7], &t),
                       "deadline"));
    NO_ALLOC("ctx_value",
             REL_CHECK(ctx_value(chain[7], &key_a) == &value_token &&
                           ctx_value(chain[7], &key_c) == &value_token &&
                           ctx_value(root, &key_a) == NULL &&
                           ctx_value(wo, &key_a) == &value_token &&
                           ctx_value(ctx_background(), &key_b) == NULL,
                       "value"));
    static const int errs[] = {0,      CTX_CANCELED, CTX_DEADLINE_EXCEEDED,
                               EINVAL, ENOMEM,       EAGAIN,
                               EMFILE, ENFILE,       EBADF,
                               EINTR,  EPIPE,        123456};
    NO_ALLOC(
        "ctx_strerror",
        for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
            const char *m = ctx_strerror(errs[i]);
            REL_CHECK(m != NULL && m[0] != '\0', "strerror(%d)", errs[i]);
        });
    NO_ALLOC("ctx_retain", REL_CHECK(ctx_retain(root) == root, "retain");
             REL_CHECK(ctx_retain(ctx_background()) == ctx_background(), "bg");
             REL_CHECK(ctx_retain(NULL) == NULL, "NULL"));
    NO_ALLOC("ctx_release (not the last reference)", ctx_release(root);
             ctx_release(ctx_background()); ctx_release(NULL));

    /* Waits: done, timing out, woken by a deadline, by another thread. */
    NO_ALLOC("ctx_wait (done)", REL_EQ(ctx_wait(dn), CTX_CANCELED));
    NO_ALLOC("ctx_wait_until",
             REL_EQ(ctx_wait_until(root, ctx_now() + CTX_MILLISECOND), 0);
             REL_EQ(ctx_wait_until(wo, ctx_now() + CTX_MICROSECOND), 0);
             REL_EQ(ctx_wait_until(dn, CTX_TIME_MAX), CTX_CANCELED));
    ctx_t *sh = ctx_with_timeout(root, 2 * CTX_MILLISECOND);
    REL_CHECK(sh != NULL, "setup");
    NO_ALLOC("ctx_wait (woken by its deadline)",
             REL_EQ(ctx_wait(sh), CTX_DEADLINE_EXCEEDED));
    ctx_t *x = ctx_with_cancel(root);
    REL_CHECK(x != NULL, "setup");
    pthread_t th = rel_cancel_soon(x);
    NO_ALLOC("ctx_wait (woken by another thread's cancel)",
             REL_EQ(ctx_wait(x), CTX_CANCELED));
    pthread_join(th, NULL);
    ctx_release(x);
    ctx_release(sh);

    /* ctx_sleep. */
    NO_ALLOC("ctx_sleep (full duration)",
             REL_EQ(ctx_sleep(root, CTX_MILLISECOND), 0);
             REL_EQ(ctx_sleep(root, 0), 0));
    NO_ALLOC("ctx_sleep (done)", REL_EQ(ctx_sleep(dn, CTX_HOUR), CTX_CANCELED));
    sh = ctx_with_timeout(root, 2 * CTX_MILLISECOND);
    REL_CHECK(sh != NULL, "setup");
    NO_ALLOC("ctx_sleep (deadline inside)",
             REL_EQ(ctx_sleep(sh, CTX_HOUR), CTX_DEADLINE_EXCEEDED));
    x = ctx_with_cancel(root);
    REL_CHECK(x != NULL, "setup");
    th = rel_cancel_soon(x);
    NO_ALLOC("ctx_sleep (cancelled from another thread)",
             REL_EQ(ctx_sleep(x, CTX_HOUR), CTX_CANCELED));
    pthread_join(th, NULL);
    ctx_release(x);
    ctx_release(sh);

    /* Cancel of a populated subtree: children of each kind, after-funcs, a
     * done fd, a blocked waiter, a pending timer. */
    ctx_t *sub = ctx_with_cancel(root);
    REL_CHECK(sub != NULL, "setup");
    enum { KIDS = 24, REGS = 6 };
    ctx_t *kids[KIDS];
    for (int i = 0; i < KIDS; i++) {
        kids[i] = i % 3 == 0   ? ctx_with_cancel(sub)
                  : i % 3 == 1 ? ctx_with_deadline(sub, ctx_now() + CTX_HOUR)
                               : ctx_with_value(sub, &key_b, NULL, NULL);
        REL_CHECK(kids[i] != NULL, "setup");
    }
    struct after_arg args[REGS];
    ctx_after_t *regs[REGS];
    for (int i = 0; i < REGS; i++) {
        args[i] = (struct after_arg){0, i % 2 ? sub : kids[i]};
        regs[i] = ctx_after_func(args[i].ctx, after_fn, &args[i]);
        REL_CHECK(regs[i] != NULL, "setup");
    }
    REL_CHECK(ctx_done_fd(sub) >= 0 && ctx_done_fd(kids[0]) >= 0, "setup");
    REL_EQ(pthread_create(&th, NULL, wait_main, kids[3]), 0);
    usleep(1000);
    NO_ALLOC("ctx_cancel (a subtree with after-funcs, fds, waiter, timers)",
             REL_EQ(ctx_cancel(sub), 0));
    NO_ALLOC("ctx_cancel, ctx_cancel_cause (no-ops)",
             REL_EQ(ctx_cancel_cause(sub, 9), 0);
             REL_EQ(ctx_cancel(sub), 0); REL_EQ(ctx_cancel(val), EINVAL);
             REL_EQ(ctx_cancel(wo), EINVAL);
             REL_EQ(ctx_cancel(ctx_background()), EINVAL);
             REL_EQ(ctx_cancel(NULL), EINVAL));
    void *res;
    pthread_join(th, &res);
    REL_EQ((intptr_t)res, CTX_CANCELED);
    for (int i = 0; i < REGS; i++)
        REL_EQ(atomic_load(&args[i].runs), 1);
    NO_ALLOC("ctx_after_stop (fn ran)",
             for (int i = 0; i < REGS; i++)
                 REL_CHECK(!ctx_after_stop(regs[i]), "stop %d", i));
    struct after_arg la = {0, root}, ba = {0, ctx_background()};
    ctx_after_t *lr = ctx_after_func(root, after_fn, &la);
    ctx_after_t *br = ctx_after_func(ctx_background(), after_fn, &ba);
    REL_CHECK(lr && br, "setup");
    NO_ALLOC("ctx_after_stop (fn prevented)",
             REL_CHECK(ctx_after_stop(lr) && ctx_after_stop(br), "stop");
             REL_CHECK(!ctx_after_stop(NULL), "stop(NULL)"));
    NO_ALLOC("ctx_release (last references: a cancelled subtree)",
             for (int i = 0; i < KIDS; i++) ctx_release(kids[i]);
             ctx_release(sub));
    ctx_t *live = ctx_with_deadline(root, ctx_now() + CTX_HOUR);
    ctx_t *livec =
        live ? ctx_with_value(live, &key_b, &value_token, count_destroy) : NULL;
    REL_CHECK(livec != NULL, "setup");
    NO_ALLOC("ctx_release (last references: live, with timer and destroy)",
             ctx_release(live);
             ctx_release(livec));
    REL_EQ(atomic_exchange(&destroys, 0), 1);

#ifdef REL_HAVE_IO
    int p[2];
    REL_EQ(pipe(p), 0);
    char buf[8];
    size_t w = 0;
    NO_ALLOC("ctx_done_fd (eventfd)",
             REL_CHECK(ctx_done_fd(root) >= 0 &&
                           ctx_done_fd(val) == ctx_done_fd(root),
                       "done_fd"));
    REL_EQ(write(p[1], "x", 1), 1);
    NO_ALLOC("ctx_wait_fd",
             REL_CHECK(ctx_wait_fd(root, p[0], POLLIN) & POLLIN, "wait_fd"));
    NO_ALLOC("ctx_poll (2 fds)",
             struct pollfd pf[2] = {{.fd = p[0], .events = POLLIN},
                                    {.fd = p[1], .events = POLLOUT}};
             REL_EQ(ctx_poll(chain[7], pf, 2), 2));
    NO_ALLOC("ctx_read", REL_EQ(ctx_read(root, p[0], buf, sizeof buf), 1));
    NO_ALLOC("ctx_write_all",
             REL_EQ(ctx_write_all(root, p[1], "abc", 3, &w), 3);
             REL_EQ(w, 3));
    REL_EQ(read(p[0], buf, sizeof buf), 3);
    NO_ALLOC("ctx_read, ctx_write_all, ctx_wait_fd (done)",
             REL_EQ(ctx_read(dn, p[0], buf, 1), -1);
             REL_EQ(errno, CTX_CANCELED);
             REL_EQ(ctx_write_all(dn, p[1], "a", 1, &w), -1);
             REL_EQ(errno, CTX_CANCELED); REL_EQ(w, 0);
             REL_EQ(ctx_wait_fd(dn, p[0], POLLIN), -1);
             REL_EQ(errno, CTX_CANCELED));
    x = ctx_with_cancel(root);
    REL_CHECK(x != NULL, "setup");
    th = rel_cancel_soon(x);
    NO_ALLOC("ctx_read (cancelled while waiting)",
             REL_EQ(ctx_read(x, p[0], buf, 1), -1);
             REL_EQ(errno, CTX_CANCELED));
    pthread_join(th, NULL);
    ctx_release(x);

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REL_CHECK(lfd >= 0 && cfd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    /* An abstract address: nothing to clean up. */
    int len = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1,
                       "libctx-rel_fault-%d", (int)getpid());
    socklen_t salen =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
    REL_EQ(bind(lfd, (struct sockaddr *)&sa, salen), 0);
    REL_EQ(listen(lfd, 4), 0);
    int afd = -1;
    NO_ALLOC("ctx_connect",
             REL_EQ(ctx_connect(root, cfd, (struct sockaddr *)&sa, salen), 0));
    NO_ALLOC("ctx_accept",
             afd = ctx_accept(root, lfd, NULL, NULL, SOCK_CLOEXEC);
             REL_CHECK(afd >= 0, "accept: %s", strerror(errno)));
    NO_ALLOC("ctx_write_all, ctx_read (socket)",
             REL_EQ(ctx_write_all(root, cfd, "hi", 2, NULL), 2);
             REL_EQ(ctx_read(root, afd, buf, sizeof buf), 2));
    x = ctx_with_cancel(root);
    REL_CHECK(x != NULL, "setup");
    th = rel_cancel_soon(x);
    NO_ALLOC("ctx_accept (cancelled while waiting)",
             REL_EQ(ctx_accept(x, lfd, NULL, NULL, 0), -1);
             REL_EQ(errno, CTX_CANCELED));
    pthread_join(th, NULL);
    ctx_release(x);
    close(afd);
    close(cfd);
    close(lfd);
    close(p[0]);
    close(p[1]);

    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct pred_arg pa = {0, 1};
    pthread_mutex_lock(&mu);
    NO_ALLOC("ctx_cond_wait (done), ctx_cond_wait_pred (pred true)",
             REL_EQ(ctx_cond_wait(dn, &cv, &mu), CTX_CANCELED);
             REL_EQ(ctx_cond_wait_pred(root, &cv, &mu, pred_fn, &pa), 0));
    pthread_mutex_unlock(&mu);
#endif

#ifdef REL_HAVE_SIGNAL
    static const int usr2[] = {SIGUSR2};
    ctx_t *sc = ctx_with_signals(root, usr2, 1);
    ctx_t *scc = sc ? ctx_with_cancel(sc) : NULL;
    REL_CHECK(scc != NULL, "setup: %s", strerror(errno));
    NO_ALLOC("ctx_signal_caught (none yet)", REL_EQ(ctx_signal_caught(sc), 0);
             REL_EQ(ctx_signal_caught(scc), 0);
             REL_EQ(ctx_signal_caught(root), 0);
             REL_EQ(ctx_signal_caught(NULL), 0));
    REL_EQ(raise(SIGUSR2), 0);
    REL_EQ(ctx_wait_until(scc, ctx_now() + 10 * CTX_SECOND), CTX_CANCELED);
    NO_ALLOC("ctx_signal_caught (caught)",
             REL_EQ(ctx_signal_caught(sc), SIGUSR2);
             REL_EQ(ctx_signal_caught(scc), SIGUSR2));
    ctx_release(scc);
    ctx_release(sc);
    expect_disposition(SIGUSR2, SIG_DFL);
#endif

#ifdef REL_HAVE_GROUP
    ctx_group_t *g = ctx_group_new(root, 0);
    REL_CHECK(g != NULL, "setup");
    REL_EQ(ctx_group_go(g, group_fn, NULL), 0);
    REL_EQ(ctx_group_go(g, group_err_fn, NULL), 0);
    NO_ALLOC("ctx_group_ctx, ctx_group_running",
             REL_CHECK(ctx_group_ctx(g) != NULL, "group ctx");
             REL_CHECK(ctx_group_running(g) <= 2, "running");
             REL_CHECK(ctx_group_ctx(NULL) == NULL, "NULL");
             REL_EQ(ctx_group_running(NULL), 0));
    NO_ALLOC("ctx_group_wait", REL_EQ(ctx_group_wait(g), 5);
             REL_EQ(ctx_group_running(g), 0);
             REL_EQ(ctx_err(ctx_group_ctx(g)), CTX_CANCELED);
             REL_EQ(ctx_group_wait(NULL), EINVAL));
    NO_ALLOC("ctx_group_free", ctx_group_free(g); ctx_group_free(NULL));
    g = ctx_group_new(root, 0);
    REL_CHECK(g != NULL, "setup");
    REL_EQ(ctx_group_go(g, group_nap_fn, NULL), 0);
    REL_EQ(ctx_group_go(g, group_nap_fn, NULL), 0);
    NO_ALLOC("ctx_group_free (functions running)", ctx_group_free(g));
    REL_EQ(atomic_exchange(&group_runs, 0), 4);
#endif

    snprintf(where, sizeof where, "allocation-free checks: teardown");
    REL_EQ(ctx_cancel(root), 0);
    ctx_t *mine[] = {wo, dn, dl, val, root};
    for (int i = 7; i >= 0; i--)
        ctx_release(chain[i]);
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        ctx_release(mine[i]);
#ifdef CTX_DEBUG
    for (int i = 0; i < 1000 && (ctx__live_contexts() || ctx__live_afters());
         i++)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
    REL_EQ(ctx__live_afters(), 0);
#endif
    int fds_after = rel_count_fds();
    for (int i = 0; i < 2000 && fds_after > fds_before; i++) {
        usleep(1000);
        fds_after = rel_count_fds();
    }
    REL_EQ(fds_after, fds_before);
}

int main(void)
{
    signal(SIGABRT, on_abort);
    long points = 0, absorbed = 0, ops = 0;
    /* Distinct (scenario, N) pairs: a scenario run over a parameter range
     * (timers pending, registrations) fails the same sites again for each
     * value, so it counts as many pairs as its largest N. */
    long pairs = 0;
    int nscenarios = 0;

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
    printf("  %-44s %4ld failure points\n", "first deadline of the process",
           first);
    points += first;
    pairs += first;
    nscenarios++;
    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++) {
        const struct scenario *sc = &scenarios[s];
        long sc_points = 0, sc_maxn = 0;
        for (long param = sc->param_from; param <= sc->param_to; param++) {
            long param_points = 0;
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
                snprintf(where, sizeof where, "%s, param %ld, n %ld", sc->name,
                         param, n);
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
#ifdef REL_HAVE_SIGNAL
                /* Every watch has ended: the program's dispositions are
                 * back; then the defaults for the next scenario. */
                expect_disposition(SIGUSR1, f.prog_disp[0]);
                expect_disposition(SIGUSR2, f.prog_disp[1]);
                set_disposition(SIGUSR1, SIG_DFL);
                set_disposition(SIGUSR2, SIG_DFL);
#endif
                if (!hit)
                    break;
                param_points++;
                if (r == 0)
                    absorbed++;
            }
            sc_points += param_points;
            if (param_points > sc_maxn)
                sc_maxn = param_points;
        }
        printf("  %-44s %4ld failure points\n", sc->name, sc_points);
        points += sc_points;
        pairs += sc_maxn;
        nscenarios++;
    }
#ifdef REL_HAVE_SIGNAL
    REL_EQ(atomic_load(&prog_handler_runs), 0);
#endif
    no_alloc_checks();
    printf("  %-44s %4d checked\n", "operations that allocate nothing",
           no_alloc_checked);
    printf("rel_fault: %ld failure points exercised in %d scenarios (%ld "
           "distinct scenario/N pairs, %ld absorbed without error), %ld "
           "operations, %d allocation-free operations, all consistent and "
           "leak-free\n",
           points, nscenarios, pairs, absorbed, ops, no_alloc_checked);
    return 0;
}
#endif
