/* After-funcs (Go 1.21's context.AfterFunc and its tests, with C's rules):
 * fn never runs before done, runs exactly once, in the cancelling thread (the
 * timer thread for deadlines) after every library lock is dropped, inline
 * when the context is already done; ctx_after_stop's return value, its wait
 * for a running fn, and the lifetime rules of a registration. */
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>

static const ctx_key_t vkey = CTX_KEY("vkey");
static const ctx_key_t okey = CTX_KEY("other");

/* A record one fn fills in. */
struct rec {
    _Atomic int calls;
    pthread_t thread;     /* where fn ran (last call) */
    int err, cause;       /* what fn saw of `ctx` */
    ctx_t *ctx;           /* optional: queried from fn */
    tu_event_t ev;        /* set when fn returns */
};

static void rec_init(struct rec *r, ctx_t *ctx)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->calls, 0);
    r->ctx = ctx;
    tu_event_init(&r->ev);
}

static void rec_fn(void *arg)
{
    struct rec *r = arg;
    r->thread = pthread_self();
    if (r->ctx != NULL) {
        r->err = ctx_err(r->ctx);
        r->cause = ctx_cause(r->ctx);
    }
    atomic_fetch_add(&r->calls, 1);
    tu_event_set(&r->ev);
}

static void count_fn(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

/* Go: TestAfterFuncCalledAfterCancel. fn does not run before done, runs
 * synchronously inside ctx_cancel, exactly once however often it is
 * cancelled, and stop afterwards reports that it did not prevent it. */
static void test_not_before_done_then_once(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_non_null(c);
    struct rec r;
    rec_init(&r, c);
    ctx_after_t *a = ctx_after_func(c, rec_fn, &r);
    assert_non_null(a);
    assert_int_equal(atomic_load(&r.calls), 0);

    /* Unrelated activity does not trigger it. */
    ctx_t *other = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_cancel(other), 0);
    ctx_release(other);
    ctx_t *child = ctx_with_cancel(c);
    assert_int_equal(ctx_cancel(child), 0); /* a child's cancel does not */
    ctx_release(child);
    assert_int_equal(ctx_wait_until(c, ctx_now() + 5 * CTX_MILLISECOND), 0);
    assert_int_equal(atomic_load(&r.calls), 0);

    assert_int_equal(ctx_cancel_cause(c, EPIPE), 0);
    /* Synchronous: ran before ctx_cancel returned, saw the context done. */
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_int_equal(r.err, CTX_CANCELED);
    assert_int_equal(r.cause, EPIPE);

    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(ctx_cancel_cause(c, EIO), 0);
    assert_int_equal(atomic_load(&r.calls), 1);

    assert_false(ctx_after_stop(a));
    assert_int_equal(atomic_load(&r.calls), 1);
    ctx_release(c);
    tu_event_destroy(&r.ev);
    tu_settle();
    tu_assert_no_live();
}

/* Go: TestAfterFuncNotCalledAfterStop. */
static void test_stop_before_cancel_prevents(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    _Atomic int n = 0;
    ctx_after_t *a = ctx_after_func(c, count_fn, (void *)&n);
    assert_non_null(a);
    assert_true(ctx_after_stop(a));
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&n), 0);
    ctx_release(c);
    assert_int_equal(atomic_load(&n), 0);
    tu_settle();
    tu_assert_no_live();
}

struct thread_cancel {
    ctx_t *ctx;
    int cause;
    pthread_t self;
    int rc;
};

/* No cmocka assertions outside the main thread: results are checked there. */
static void *cancel_thread(void *arg)
{
    struct thread_cancel *t = arg;
    t->self = pthread_self();
    t->rc = ctx_cancel_cause(t->ctx, t->cause);
    return NULL;
}

/* fn runs in the thread that cancelled, including when the cancellation
 * comes through an ancestor, and sees the ancestor's err and cause. */
static void test_runs_in_cancelling_thread(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_cancel(p);
    ctx_t *v = ctx_with_value(c, &okey,
                              NULL, NULL);
    assert_non_null(v);
    struct rec rc, rv;
    rec_init(&rc, c);
    rec_init(&rv, v);
    ctx_after_t *ac = ctx_after_func(c, rec_fn, &rc);
    ctx_after_t *av = ctx_after_func(v, rec_fn, &rv);
    assert_non_null(ac);
    assert_non_null(av);

    struct thread_cancel tc = {p, EXDEV, 0, -1};
    pthread_t t = tu_spawn(cancel_thread, &tc);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(tc.rc, 0);
    /* The cancelling thread has returned from ctx_cancel, so both ran. */
    assert_int_equal(atomic_load(&rc.calls), 1);
    assert_int_equal(atomic_load(&rv.calls), 1);
    assert_true(pthread_equal(rc.thread, t));
    assert_true(pthread_equal(rv.thread, t));
    assert_false(pthread_equal(rc.thread, pthread_self()));
    assert_int_equal(rc.err, CTX_CANCELED);
    assert_int_equal(rc.cause, EXDEV);
    assert_int_equal(rv.err, CTX_CANCELED);
    assert_int_equal(rv.cause, EXDEV);

    assert_false(ctx_after_stop(ac));
    assert_false(ctx_after_stop(av));
    ctx_release(v);
    ctx_release(c);
    ctx_release(p);
    tu_event_destroy(&rc.ev);
    tu_event_destroy(&rv.ev);
    tu_settle();
    tu_assert_no_live();
}

/* fn runs after every library lock is dropped: it may call anything on the
 * same tree. It cancels the parent of its own context (whose lock cancel had
 * to take), creates contexts under its done context and a live one, uses the
 * done fd, registers (and stops) another after-func, and cancels a sibling
 * that has an after-func of its own (a nested cancel inside phase 2). */
struct reentrant {
    ctx_t *parent, *self, *sibling;
    struct rec sib_rec;
    ctx_after_t *sib_reg;
    int inner_calls;
    bool inner_inline, inner_stop_result;
    int child_err, child_cause, fresh_err, fd_ok, sibling_done;
    int calls;
};

static void inner_fn(void *arg)
{
    ((struct reentrant *)arg)->inner_calls++;
}

static void reentrant_fn(void *arg)
{
    struct reentrant *x = arg;
    x->calls++;
    /* A child of the done context is done at birth with its err/cause. */
    ctx_t *ch = ctx_with_cancel(x->self);
    x->child_err = ctx_err(ch);
    x->child_cause = ctx_cause(ch);
    ctx_cancel(ch);
    ctx_release(ch);
    /* A fresh, live context under the (still live) parent. */
    ctx_t *fresh = ctx_with_timeout(x->parent, CTX_HOUR);
    x->fresh_err = ctx_err(fresh);
    ctx_cancel(fresh);
    ctx_release(fresh);
    /* The done fd of the done context is readable. */
    int fd = ctx_done_fd(x->self);
    struct pollfd pfd = {fd, POLLIN, 0};
    x->fd_ok = fd >= 0 && poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
    /* Registering on a done context runs inline, here, before returning. */
    ctx_after_t *in = ctx_after_func(x->self, inner_fn, x);
    x->inner_inline = x->inner_calls == 1;
    x->inner_stop_result = ctx_after_stop(in);
    /* Cancel the parent: its lock must be free, and the sibling's
     * after-func runs (nested) before this ctx_cancel returns. */
    ctx_cancel(x->parent);
    x->sibling_done = ctx_is_done(x->sibling) &&
                      atomic_load(&x->sib_rec.calls) == 1;
}

#include <poll.h>

static void test_fn_may_call_library(void **state)
{
    (void)state;
    struct reentrant x;
    memset(&x, 0, sizeof x);
    x.parent = ctx_with_cancel(ctx_background());
    x.self = ctx_with_cancel(x.parent);
    x.sibling = ctx_with_cancel(x.parent);
    rec_init(&x.sib_rec, x.sibling);
    x.sib_reg = ctx_after_func(x.sibling, rec_fn, &x.sib_rec);
    ctx_after_t *a = ctx_after_func(x.self, reentrant_fn, &x);
    assert_non_null(a);

    assert_int_equal(ctx_cancel_cause(x.self, ENOLINK), 0);
    assert_int_equal(x.calls, 1);
    assert_int_equal(x.child_err, CTX_CANCELED);
    assert_int_equal(x.child_cause, ENOLINK);
    assert_int_equal(x.fresh_err, 0);
    assert_true(x.fd_ok);
    assert_true(x.inner_inline);
    assert_false(x.inner_stop_result);
    assert_int_equal(x.inner_calls, 1);
    assert_true(x.sibling_done);
    assert_int_equal(ctx_err(x.parent), CTX_CANCELED);
    assert_int_equal(ctx_cause(x.parent), CTX_CANCELED);
    assert_int_equal(ctx_cause(x.sibling), CTX_CANCELED);
    /* self keeps its own cause: the first cancellation wins. */
    assert_int_equal(ctx_cause(x.self), ENOLINK);
    assert_true(pthread_equal(x.sib_rec.thread, pthread_self()));

    assert_false(ctx_after_stop(a));
    assert_false(ctx_after_stop(x.sib_reg));
    ctx_release(x.sibling);
    ctx_release(x.self);
    ctx_release(x.parent);
    tu_event_destroy(&x.sib_rec.ev);
    tu_settle();
    tu_assert_no_live();
}

/* Go: TestAfterFuncCalledImmediately. A done context runs fn inline. */
static void test_already_done_runs_inline(void **state)
{
    (void)state;
    ctx_t *dones[4];
    dones[0] = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(dones[0], EBADMSG);
    dones[1] = ctx_with_timeout(ctx_background(), 0); /* done at birth */
    dones[2] = ctx_with_value(dones[0], &okey,
                              NULL, NULL);
    dones[3] = ctx_with_cancel(dones[1]); /* done at birth via its parent */
    const int want_err[4] = {CTX_CANCELED, CTX_DEADLINE_EXCEEDED, CTX_CANCELED,
                             CTX_DEADLINE_EXCEEDED};
    const int want_cause[4] = {EBADMSG, CTX_DEADLINE_EXCEEDED, EBADMSG,
                               CTX_DEADLINE_EXCEEDED};
    for (int i = 0; i < 4; i++) {
        assert_non_null(dones[i]);
        struct rec r;
        rec_init(&r, dones[i]);
        ctx_after_t *a = ctx_after_func(dones[i], rec_fn, &r);
        assert_non_null(a);
        assert_int_equal(atomic_load(&r.calls), 1);
        assert_true(pthread_equal(r.thread, pthread_self()));
        assert_int_equal(r.err, want_err[i]);
        assert_int_equal(r.cause, want_cause[i]);
        assert_false(ctx_after_stop(a));
        assert_int_equal(atomic_load(&r.calls), 1);
        tu_event_destroy(&r.ev);
    }
    for (int i = 3; i >= 0; i--)
        ctx_release(dones[i]);
    tu_settle();
    tu_assert_no_live();
}

/* stop waits for a fn running in another thread to return. */
struct blocking {
    tu_event_t started;
    tu_event_t release;
    _Atomic bool returned;
};

static void blocking_fn(void *arg)
{
    struct blocking *b = arg;
    tu_event_set(&b->started);
    /* Blocks until the test lets it go (bounded, so a bug cannot hang). */
    tu_event_wait(&b->release, 30 * CTX_SECOND);
    atomic_store(&b->returned, true);
}

struct releaser {
    struct blocking *b;
    ctx_duration_t after;
};

static void *releaser_thread(void *arg)
{
    struct releaser *r = arg;
    tu_sleep(r->after); /* the time stop must spend waiting */
    tu_event_set(&r->b->release);
    return NULL;
}

static void test_stop_waits_for_running_fn(void **state)
{
    (void)state;
    struct blocking b;
    tu_event_init(&b.started);
    tu_event_init(&b.release);
    atomic_init(&b.returned, false);
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_after_t *a = ctx_after_func(c, blocking_fn, &b);
    assert_non_null(a);

    struct thread_cancel tc = {c, 0, 0, -1};
    pthread_t canceller = tu_spawn(cancel_thread, &tc);
    assert_true(tu_event_wait(&b.started, 10 * CTX_SECOND));
    assert_true(ctx_is_done(c));

    const ctx_duration_t hold = 100 * CTX_MILLISECOND;
    struct releaser rel = {&b, hold};
    ctx_time_t t0 = ctx_now();
    pthread_t rt = tu_spawn(releaser_thread, &rel);
    bool prevented = ctx_after_stop(a);
    ctx_time_t waited = ctx_now() - t0;
    /* fn was running: stop did not prevent it, and it returned only once
     * fn had finished. */
    assert_false(prevented);
    assert_true(atomic_load(&b.returned));
    tu_assert_between(waited, hold - 2 * CTX_MILLISECOND, 20 * CTX_SECOND);

    assert_int_equal(pthread_join(rt, NULL), 0);
    assert_int_equal(pthread_join(canceller, NULL), 0);
    assert_int_equal(tc.rc, 0);
    ctx_release(c);
    tu_event_destroy(&b.started);
    tu_event_destroy(&b.release);
    tu_settle();
    tu_assert_no_live();
}

/* stop called from inside fn does not wait for itself. */
struct self_stop {
    ctx_after_t *reg;
    int result; /* -1 not called, 0 false, 1 true */
    int calls;
};

static void self_stop_fn(void *arg)
{
    struct self_stop *s = arg;
    s->calls++;
    s->result = ctx_after_stop(s->reg) ? 1 : 0;
}

static void *cancel_plain_thread(void *arg)
{
    ctx_cancel((ctx_t *)arg);
    return NULL;
}

static void test_stop_from_inside_fn(void **state)
{
    (void)state;
    /* Cancelled from this thread. */
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct self_stop s = {NULL, -1, 0};
    s.reg = ctx_after_func(c, self_stop_fn, &s);
    assert_non_null(s.reg);
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.result, 0);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live(); /* the stop inside fn ended the registration */

    /* Cancelled from another thread (which must not hang). */
    c = ctx_with_cancel(ctx_background());
    struct self_stop s2 = {NULL, -1, 0};
    s2.reg = ctx_after_func(c, self_stop_fn, &s2);
    pthread_t t = tu_spawn(cancel_plain_thread, c);
    tu_join_within(t, 10 * CTX_SECOND);
    assert_int_equal(s2.calls, 1);
    assert_int_equal(s2.result, 0);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* A registration on a value or a cancel child fires when the cancellable
 * ancestor is cancelled; values stay readable from fn. */
struct value_seen {
    ctx_t *ctx;
    void *value;
    int err;
    int calls;
};

static void value_fn(void *arg)
{
    struct value_seen *v = arg;
    v->calls++;
    v->value = ctx_value(v->ctx, &vkey);
    v->err = ctx_err(v->ctx);
}

static void test_value_context_of_cancellable(void **state)
{
    (void)state;
    int payload = 7;
    ctx_t *p = ctx_with_timeout(ctx_background(), CTX_HOUR);
    ctx_t *v1 = ctx_with_value(p, &vkey, &payload, NULL);
    ctx_t *v2 = ctx_with_value(v1, &okey,
                               NULL, NULL);
    struct value_seen s = {v2, NULL, 0, 0};
    ctx_after_t *a = ctx_after_func(v2, value_fn, &s);
    assert_non_null(a);
    assert_int_equal(s.calls, 0);
    ctx_release(v2); /* the registration keeps it */
    ctx_release(v1);
    assert_int_equal(ctx_cancel(p), 0);
    assert_int_equal(s.calls, 1);
    assert_ptr_equal(s.value, &payload);
    assert_int_equal(s.err, CTX_CANCELED);
    assert_false(ctx_after_stop(a));
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* On a context that can never be done, fn never runs and stop returns
 * true; a without_cancel child of a cancellable parent included. */
static void test_never_done_contexts(void **state)
{
    (void)state;
    _Atomic int n = 0;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *w = ctx_without_cancel(p);
    ctx_t *wv = ctx_with_value(w, &vkey, NULL, NULL);
    ctx_t *bv = ctx_with_value(ctx_background(), &vkey, NULL, NULL);
    ctx_t *never[] = {ctx_background(), ctx_todo(), w, wv, bv};
    ctx_after_t *regs[5];
    for (int i = 0; i < 5; i++) {
        assert_non_null(never[i]);
        regs[i] = ctx_after_func(never[i], count_fn, (void *)&n);
        assert_non_null(regs[i]);
    }
    assert_int_equal(ctx_cancel(p), 0);
    assert_true(ctx_is_done(p));
    assert_false(ctx_is_done(w));
    /* A context cancelled later under w is not one of these. */
    ctx_t *c = ctx_with_cancel(w);
    assert_false(ctx_is_done(c));
    ctx_cancel(c);
    ctx_release(c);
    assert_int_equal(atomic_load(&n), 0);
    for (int i = 0; i < 5; i++)
        assert_true(ctx_after_stop(regs[i]));
    assert_int_equal(atomic_load(&n), 0);
    ctx_release(bv);
    ctx_release(wv);
    ctx_release(w);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* A live registration keeps its context alive. */
static _Atomic int destroyed;

static void destroy_fn(void *v)
{
    (void)v;
    atomic_fetch_add(&destroyed, 1);
}

static void test_registration_keeps_context_alive(void **state)
{
    (void)state;
    atomic_store(&destroyed, 0);
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_cancel(p);
    ctx_t *v = ctx_with_value(c, &vkey, &destroyed, destroy_fn);
    struct rec r;
    rec_init(&r, v);
    ctx_after_t *a = ctx_after_func(v, rec_fn, &r);
    assert_non_null(a);
    ctx_release(v);
    ctx_release(c);
#ifdef CTX_DEBUG
    assert_int_equal(ctx__live_contexts(), 3);
#endif
    assert_int_equal(atomic_load(&destroyed), 0);

    /* Fires on the parent's cancel, on a context nobody else holds. */
    assert_int_equal(ctx_cancel_cause(p, ENOTCONN), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_int_equal(r.err, CTX_CANCELED);
    assert_int_equal(r.cause, ENOTCONN);
    assert_int_equal(atomic_load(&destroyed), 0);

    /* stop drops the last references: v and c go, p stays. */
    assert_false(ctx_after_stop(a));
    assert_int_equal(atomic_load(&destroyed), 1);
#ifdef CTX_DEBUG
    assert_int_equal(ctx__live_contexts(), 1);
#endif
    ctx_release(p);
    tu_event_destroy(&r.ev);
    tu_settle();
    tu_assert_no_live();

    /* Never cancelled: stop prevents fn and frees the context, which
     * detaches from its (live) parent. */
    atomic_store(&destroyed, 0);
    p = ctx_with_cancel(ctx_background());
    c = ctx_with_timeout(p, CTX_HOUR);
    _Atomic int n = 0;
    a = ctx_after_func(c, count_fn, (void *)&n);
    ctx_release(c);
    assert_true(ctx_after_stop(a));
    assert_int_equal(ctx_cancel(p), 0);
    assert_int_equal(atomic_load(&n), 0);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* Many registrations on one context: each runs exactly once, stopped ones
 * never. */
#define MANY 1000

static void test_many_registrations(void **state)
{
    (void)state;
    static _Atomic int counts[MANY];
    static ctx_after_t *regs[MANY];
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_value(p, &vkey, NULL, NULL);
    for (int i = 0; i < MANY; i++) {
        atomic_store(&counts[i], 0);
        regs[i] = ctx_after_func(i % 2 ? c : p, count_fn, (void *)&counts[i]);
        assert_non_null(regs[i]);
    }
    /* Stop every third before the cancel. */
    for (int i = 0; i < MANY; i += 3) {
        assert_true(ctx_after_stop(regs[i]));
        regs[i] = NULL;
    }
    assert_int_equal(ctx_cancel(p), 0);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(atomic_load(&counts[i]), i % 3 == 0 ? 0 : 1);
    assert_int_equal(ctx_cancel(p), 0);
    for (int i = 0; i < MANY; i++) {
        if (regs[i] != NULL)
            assert_false(ctx_after_stop(regs[i]));
        assert_int_equal(atomic_load(&counts[i]), i % 3 == 0 ? 0 : 1);
    }
    ctx_release(c);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

/* Go: TestAfterFuncCalledAfterTimeout. A deadline's after-funcs run in the
 * timer thread, after the deadline. */
static void test_deadline_runs_in_timer_thread(void **state)
{
    (void)state;
    const ctx_duration_t d = 20 * CTX_MILLISECOND;
    ctx_time_t t0 = ctx_now();
    ctx_t *c = ctx_with_timeout_cause(ctx_background(), d, ENOSR);
    ctx_t *ch = ctx_with_cancel(c);
    struct rec r1, r2;
    rec_init(&r1, c);
    rec_init(&r2, ch);
    ctx_after_t *a1 = ctx_after_func(c, rec_fn, &r1);
    ctx_after_t *a2 = ctx_after_func(ch, rec_fn, &r2);
    assert_true(tu_event_wait(&r1.ev, 10 * CTX_SECOND));
    assert_true(tu_event_wait(&r2.ev, 10 * CTX_SECOND));
    assert_true(ctx_now() - t0 >= d);
    assert_int_equal(atomic_load(&r1.calls), 1);
    assert_int_equal(atomic_load(&r2.calls), 1);
    assert_false(pthread_equal(r1.thread, pthread_self()));
    assert_true(pthread_equal(r1.thread, r2.thread));
    assert_int_equal(r1.err, CTX_DEADLINE_EXCEEDED);
    assert_int_equal(r1.cause, ENOSR);
    assert_int_equal(r2.err, CTX_DEADLINE_EXCEEDED);
    assert_int_equal(r2.cause, ENOSR);

    /* A second deadline uses the same (one per process) timer thread. */
    ctx_t *c2 = ctx_with_timeout(ctx_background(), d);
    struct rec r3;
    rec_init(&r3, c2);
    ctx_after_t *a3 = ctx_after_func(c2, rec_fn, &r3);
    assert_true(tu_event_wait(&r3.ev, 10 * CTX_SECOND));
    assert_true(pthread_equal(r3.thread, r1.thread));
    assert_int_equal(r3.err, CTX_DEADLINE_EXCEEDED);
    assert_int_equal(r3.cause, CTX_DEADLINE_EXCEEDED);

    assert_false(ctx_after_stop(a1));
    assert_false(ctx_after_stop(a2));
    assert_false(ctx_after_stop(a3));
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&r1.calls), 1);
    ctx_release(ch);
    ctx_release(c);
    ctx_release(c2);
    tu_event_destroy(&r1.ev);
    tu_event_destroy(&r2.ev);
    tu_event_destroy(&r3.ev);
    tu_settle();
    tu_assert_no_live();
}

/* One fn stops a sibling registration of the same cancellation: the
 * sibling either ran already (stop false) or never runs (stop true):
 * "true also when the context is done but fn has not started yet". */
struct pair {
    ctx_after_t *other;
    int stop_result;
    _Atomic int other_calls;
};

static void stopper_fn(void *arg)
{
    struct pair *p = arg;
    p->stop_result = ctx_after_stop(p->other) ? 1 : 0;
}

static void other_fn(void *arg)
{
    struct pair *p = arg;
    atomic_fetch_add(&p->other_calls, 1);
}

static void test_stop_sibling_from_fn(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        struct pair p = {NULL, -1, 0};
        ctx_after_t *s = NULL;
        if (order == 0) {
            s = ctx_after_func(c, stopper_fn, &p);
            p.other = ctx_after_func(c, other_fn, &p);
        } else {
            p.other = ctx_after_func(c, other_fn, &p);
            s = ctx_after_func(c, stopper_fn, &p);
        }
        assert_int_equal(ctx_cancel(c), 0);
        assert_int_not_equal(p.stop_result, -1);
        /* Exactly one of: prevented, or ran (once). */
        assert_int_equal(p.stop_result, atomic_load(&p.other_calls) == 0);
        assert_true(atomic_load(&p.other_calls) <= 1);
        assert_false(ctx_after_stop(s));
        ctx_release(c);
        tu_settle();
        tu_assert_no_live();
    }
}

/* stop racing cancel in another thread: exactly one of "stop prevented fn"
 * and "fn ran", and when stop says it did not prevent fn, fn has already
 * returned. */
struct slow_rec {
    _Atomic int calls;
    _Atomic int finished;
};

static void slow_fn(void *arg)
{
    struct slow_rec *s = arg;
    atomic_fetch_add(&s->calls, 1);
    for (volatile int i = 0; i < 2000; i++)
        ;
    atomic_fetch_add(&s->finished, 1);
}

static void test_stop_races_cancel(void **state)
{
    (void)state;
    const int iters = 2000 / TU_SLOW;
    int prevented = 0, ran = 0;
    for (int i = 0; i < iters; i++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        struct slow_rec s;
        atomic_init(&s.calls, 0);
        atomic_init(&s.finished, 0);
        ctx_after_t *a = ctx_after_func(c, slow_fn, &s);
        pthread_t t = tu_spawn(cancel_plain_thread, c);
        if (i % 2)
            sched_yield();
        bool stopped = ctx_after_stop(a);
        if (stopped) {
            prevented++;
            assert_int_equal(atomic_load(&s.calls), 0);
        } else {
            ran++;
            assert_int_equal(atomic_load(&s.finished), 1);
        }
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(atomic_load(&s.calls), stopped ? 0 : 1);
        ctx_release(c);
    }
    assert_int_equal(prevented + ran, iters);
    tu_settle();
    tu_assert_no_live();
}

static void nop_fn(void *arg)
{
    assert_null(arg);
}

/* Bad input. */
static void test_null_args(void **state)
{
    (void)state;
    _Atomic int n = 0;
    errno = 0;
    assert_null(ctx_after_func(NULL, count_fn, (void *)&n));
    assert_int_equal(errno, EINVAL);
    ctx_t *c = ctx_with_cancel(ctx_background());
    errno = 0;
    assert_null(ctx_after_func(c, NULL, (void *)&n));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_after_func(ctx_background(), NULL, NULL));
    assert_int_equal(errno, EINVAL);
    assert_false(ctx_after_stop(NULL));
    ctx_cancel(c);
    errno = 0;
    assert_null(ctx_after_func(c, NULL, NULL)); /* done: still EINVAL */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(atomic_load(&n), 0);
    /* A NULL arg is fine. */
    ctx_after_t *a = ctx_after_func(c, nop_fn, NULL);
    assert_non_null(a);
    assert_false(ctx_after_stop(a));
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

/* CTX_AFTER_NO_INLINE: a done context registers nothing and reports its
 * err; a live one behaves as ctx_after_func(). */
static void add_one(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static void test_no_inline_flag(void **state)
{
    (void)state;
    _Atomic int n = 0;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_after_t *a = ctx_after_func_flags(c, add_one, (void *)&n,
                                          CTX_AFTER_NO_INLINE);
    assert_non_null(a);
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&n), 1); /* ran in the cancelling thread */
    assert_false(ctx_after_stop(a));

    errno = 0;
    assert_null(ctx_after_func_flags(c, add_one, (void *)&n,
                                     CTX_AFTER_NO_INLINE));
    assert_int_equal(errno, CTX_CANCELED);
    assert_int_equal(atomic_load(&n), 1); /* not run inline */
    ctx_release(c);

    ctx_t *d = ctx_with_timeout(ctx_background(), 0);
    errno = 0;
    assert_null(ctx_after_func_flags(d, add_one, (void *)&n,
                                     CTX_AFTER_NO_INLINE));
    assert_int_equal(errno, CTX_DEADLINE_EXCEEDED);
    errno = 0;
    assert_null(ctx_after_func_flags(d, add_one, (void *)&n, 2));
    assert_int_equal(errno, EINVAL);
    ctx_after_t *b = ctx_after_func_flags(d, add_one, (void *)&n, 0);
    assert_non_null(b); /* flags 0: inline run, as ctx_after_func */
    assert_int_equal(atomic_load(&n), 2);
    assert_false(ctx_after_stop(b));
    ctx_release(d);
    tu_settle();
    tu_assert_no_live();
}

/* ---- intrusive nodes (ctx_after_node_t) ---- */

struct nrec {
    ctx_after_node_t node; /* first: the tests cast back */
    _Atomic int calls;
    _Atomic int in_fn;     /* 1 while fn runs */
    _Atomic int finished;
    pthread_t thread;
    int self_stop;         /* -1: fn does not stop itself */
    int spin;              /* busy iterations inside fn (race widening) */
    ctx_duration_t hold;   /* time fn takes (yielding), if not 0 */
};

static void nrec_init(struct nrec *r)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->calls, 0);
    atomic_init(&r->in_fn, 0);
    atomic_init(&r->finished, 0);
    r->self_stop = -1;
}

static void nrec_fn(ctx_after_node_t *node)
{
    struct nrec *r = (struct nrec *)node;
    atomic_store(&r->in_fn, 1);
    r->thread = pthread_self();
    atomic_fetch_add(&r->calls, 1);
    /* The link is ours once fn has started. */
    node->link.next = (ctx_after_link_t *)(uintptr_t)0x5a5a;
    node->link.prev = NULL;
    if (r->self_stop != -1)
        r->self_stop = ctx_after_node_stop(node) ? 1 : 0;
    for (volatile int i = 0; i < r->spin; i++)
        ;
    for (ctx_time_t t0 = ctx_now(); r->hold != 0 && ctx_now() - t0 < r->hold;)
        sched_yield();
    atomic_store(&r->in_fn, 0);
    atomic_store(&r->finished, 1);
}

static void test_node_once(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct nrec r;
    nrec_init(&r);
    assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 0), 0);
    assert_ptr_equal(r.node.ctx, c);
    /* Started: a second start is refused and changes nothing. */
    assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 0), EBUSY);
    assert_int_equal(atomic_load(&r.calls), 0);
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_false(ctx_after_node_stop(&r.node)); /* ran */
    assert_false(ctx_after_node_stop(&r.node)); /* stopped already */
    ctx_release(c);

    /* Reused: stopped before the cancel, it never runs. */
    c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 0), 0);
    assert_true(ctx_after_node_stop(&r.node));
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    ctx_release(c);

    /* Many nodes and registrations on one context and on a child: each runs
     * once; stopped ones (every third) never. */
    enum { N = 64 };
    struct nrec *rs = calloc(N, sizeof *rs);
    assert_non_null(rs);
    _Atomic int regs;
    atomic_init(&regs, 0);
    ctx_after_t *reg[N];
    c = ctx_with_cancel(ctx_background());
    ctx_t *mid = ctx_with_cancel(c);
    ctx_t *child = ctx_with_value(mid, &vkey, NULL, NULL);
    for (int i = 0; i < N; i++) {
        nrec_init(&rs[i]);
        assert_int_equal(
            ctx_after_node_start(&rs[i].node, i % 2 ? child : c, nrec_fn, 0),
            0);
        reg[i] = ctx_after_func(i % 2 ? c : child, count_fn, &regs);
        assert_non_null(reg[i]);
    }
    for (int i = 0; i < N; i += 3)
        assert_true(ctx_after_node_stop(&rs[i].node));
    assert_int_equal(ctx_cancel(c), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&rs[i].calls), i % 3 ? 1 : 0);
        if (i % 3)
            assert_false(ctx_after_node_stop(&rs[i].node));
        assert_false(ctx_after_stop(reg[i]));
    }
    assert_int_equal(atomic_load(&regs), N);
    free(rs);
    ctx_release(child);
    ctx_release(mid);
    ctx_release(c);
    tu_settle();
    tu_assert_no_live();
}

static void test_node_done_at_start(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_cancel(c);
    struct nrec r;
    nrec_init(&r);
    errno = 0;
    assert_int_equal(
        ctx_after_node_start(&r.node, c, nrec_fn, CTX_AFTER_NO_INLINE),
        CTX_CANCELED);
    assert_ptr_equal(r.node.ctx, c);
    assert_int_equal(atomic_load(&r.calls), 0);
    assert_false(ctx_after_node_stop(&r.node)); /* not started */
    assert_int_equal(errno, 0);

    /* Without the flag: inline, before start returns. */
    assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 0), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_false(ctx_after_node_stop(&r.node));
    ctx_release(c);

    /* A deadline already past, through a value context. */
    ctx_t *d = ctx_with_timeout(ctx_background(), -1);
    ctx_t *v = ctx_with_value(d, &vkey, NULL, NULL);
    assert_int_equal(
        ctx_after_node_start(&r.node, v, nrec_fn, CTX_AFTER_NO_INLINE),
        CTX_DEADLINE_EXCEEDED);
    assert_int_equal(atomic_load(&r.calls), 1);
    ctx_release(v);
    ctx_release(d);
    tu_settle();
    tu_assert_no_live();
}

static void test_node_never_done(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *w = ctx_without_cancel(p);
    ctx_t *roots[] = {ctx_background(), ctx_todo(), w};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        struct nrec r;
        nrec_init(&r);
        assert_int_equal(
            ctx_after_node_start(&r.node, roots[i], nrec_fn,
                                 i % 2 ? CTX_AFTER_NO_INLINE : 0),
            0);
        assert_int_equal(ctx_after_node_start(&r.node, roots[i], nrec_fn, 0),
                         EBUSY);
        assert_true(ctx_after_node_stop(&r.node));
        assert_false(ctx_after_node_stop(&r.node));
        assert_int_equal(atomic_load(&r.calls), 0);
    }
    ctx_cancel(p); /* w stays not done */
    ctx_release(w);
    ctx_release(p);
    tu_settle();
    tu_assert_no_live();
}

static void test_node_null_args(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct nrec r;
    nrec_init(&r);
    assert_int_equal(ctx_after_node_start(NULL, c, nrec_fn, 0), EINVAL);
    assert_int_equal(ctx_after_node_start(&r.node, NULL, nrec_fn, 0), EINVAL);
    assert_int_equal(ctx_after_node_start(&r.node, c, NULL, 0), EINVAL);
    assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 2), EINVAL);
    assert_false(ctx_after_node_stop(NULL));
    assert_false(ctx_after_node_stop(&r.node)); /* zeroed */
    ctx_after_node_t z = CTX_AFTER_NODE_INIT;
    assert_false(ctx_after_node_stop(&z));
    ctx_cancel(c);
    assert_int_equal(atomic_load(&r.calls), 0);
    ctx_release(c);
#if UINTPTR_MAX == UINT64_MAX
    assert_int_equal(sizeof(ctx_after_node_t), 40);
#endif
}

static void *cancel_node_thread(void *arg)
{
    ctx_cancel((ctx_t *)arg);
    return NULL;
}

/* From inside fn, in the cancelling thread and inline. */
static void test_node_stop_from_inside_fn(void **state)
{
    (void)state;
    for (int inline_run = 0; inline_run < 3; inline_run++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        struct nrec r;
        nrec_init(&r);
        r.self_stop = 2;
        if (inline_run == 1)
            ctx_cancel(c);
        assert_int_equal(ctx_after_node_start(&r.node, c, nrec_fn, 0), 0);
        if (inline_run == 0)
            ctx_cancel(c);
        if (inline_run == 2) {
            pthread_t t = tu_spawn(cancel_node_thread, c);
            assert_int_equal(pthread_join(t, NULL), 0);
        }
        assert_int_equal(atomic_load(&r.calls), 1);
        assert_int_equal(r.self_stop, 0);
        assert_false(ctx_after_node_stop(&r.node));
        ctx_release(c);
    }
}

/* stop waits for an fn running in another thread. */
struct node_gate {
    ctx_after_node_t node;
    tu_event_t started;
    _Atomic int go, finished;
};

static void gate_fn(ctx_after_node_t *node)
{
    struct node_gate *g = (struct node_gate *)node;
    tu_event_set(&g->started);
    while (!atomic_load(&g->go))
        sched_yield();
    atomic_store(&g->finished, 1);
}

struct node_stopper {
    ctx_after_node_t *node;
    _Atomic long tid;
    _Atomic int done;
    bool result;
};

static void *node_stopper_thread(void *arg)
{
    struct node_stopper *s = arg;
    atomic_store(&s->tid, tu_gettid());
    s->result = ctx_after_node_stop(s->node);
    atomic_store(&s->done, 1);
    return NULL;
}

static void test_node_stop_waits_for_fn(void **state)
{
    (void)state;
    struct node_gate g;
    memset(&g, 0, sizeof g);
    tu_event_init(&g.started);
    atomic_init(&g.go, 0);
    atomic_init(&g.finished, 0);
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_after_node_start(&g.node, c, gate_fn, 0), 0);
    pthread_t ct = tu_spawn(cancel_node_thread, c);
    assert_true(tu_event_wait(&g.started, 10 * CTX_SECOND));
    struct node_stopper s = {&g.node, 0, 0, true};
    atomic_init(&s.tid, 0);
    atomic_init(&s.done, 0);
    pthread_t st = tu_spawn(node_stopper_thread, &s);
    while (atomic_load(&s.tid) == 0)
        sched_yield();
    assert_true(tu_wait_blocked(atomic_load(&s.tid), 10 * CTX_SECOND));
    assert_int_equal(atomic_load(&s.done), 0);
    atomic_store(&g.go, 1);
    assert_int_equal(pthread_join(st, NULL), 0);
    assert_false(s.result);
    assert_int_equal(atomic_load(&g.finished), 1);
    assert_int_equal(pthread_join(ct, NULL), 0);
    ctx_release(c);
    tu_event_destroy(&g.started);
    tu_settle();
    tu_assert_no_live();
}

/* Hundreds of races between stops in this thread and a cancel in another,
 * with many nodes per context so that stops also find nodes queued in the
 * run list. Each node's memory is freed as soon as its stop returns: the
 * sanitizers catch the library touching it afterwards. */
static void test_node_stop_races_cancel(void **state)
{
    (void)state;
    enum { K = 16 };
    const int iters = 800 / TU_SLOW;
    long prevented = 0, ran = 0;
    for (int i = 0; i < iters; i++) {
        ctx_t *c = ctx_with_cancel(ctx_background());
        ctx_t *child = ctx_with_cancel(c);
        struct nrec *rs[K];
        for (int k = 0; k < K; k++) {
            rs[k] = malloc(sizeof *rs[k]);
            assert_non_null(rs[k]);
            nrec_init(rs[k]);
            rs[k]->spin = (i + k) % 4 * 200;
            assert_int_equal(ctx_after_node_start(&rs[k]->node,
                                                  k % 2 ? child : c, nrec_fn,
                                                  CTX_AFTER_NO_INLINE),
                             0);
        }
        /* Every eighth round: stop once the first node's fn (a long one,
         * 5 ms) runs, last node first, so that the stops find the others
         * queued in the run list and must wait for the canceller to pass
         * them. */
        bool queued = i % 8 == 7;
        if (queued)
            rs[0]->hold = 5 * CTX_MILLISECOND;
        pthread_t t = tu_spawn(cancel_node_thread, c);
        if (i % 3 == 1)
            sched_yield();
        if (queued)
            while (atomic_load(&rs[0]->calls) == 0)
                sched_yield();
        for (int k = 0; k < K; k++) {
            int j = (i % 2) ? K - 1 - k : k;
            bool stopped = ctx_after_node_stop(&rs[j]->node);
            int calls = atomic_load(&rs[j]->calls);
            if (stopped) {
                prevented++;
                assert_int_equal(calls, 0);
            } else {
                ran++;
                assert_int_equal(calls, 1);
                assert_int_equal(atomic_load(&rs[j]->finished), 1);
                assert_int_equal(atomic_load(&rs[j]->in_fn), 0);
            }
            free(rs[j]);
        }
        assert_int_equal(pthread_join(t, NULL), 0);
        ctx_release(child);
        ctx_release(c);
    }
    assert_int_equal(prevented + ran, (long)iters * K);
    print_message("%ld stops prevented fn, %ld found it run\n", prevented, ran);
    tu_settle();
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_before_done_then_once),
        cmocka_unit_test(test_stop_before_cancel_prevents),
        cmocka_unit_test(test_runs_in_cancelling_thread),
        cmocka_unit_test(test_fn_may_call_library),
        cmocka_unit_test(test_already_done_runs_inline),
        cmocka_unit_test(test_stop_waits_for_running_fn),
        cmocka_unit_test(test_stop_from_inside_fn),
        cmocka_unit_test(test_value_context_of_cancellable),
        cmocka_unit_test(test_never_done_contexts),
        cmocka_unit_test(test_registration_keeps_context_alive),
        cmocka_unit_test(test_many_registrations),
        cmocka_unit_test(test_deadline_runs_in_timer_thread),
        cmocka_unit_test(test_stop_sibling_from_fn),
        cmocka_unit_test(test_stop_races_cancel),
        cmocka_unit_test(test_null_args),
        cmocka_unit_test(test_no_inline_flag),
        cmocka_unit_test(test_node_once),
        cmocka_unit_test(test_node_done_at_start),
        cmocka_unit_test(test_node_never_done),
        cmocka_unit_test(test_node_null_args),
        cmocka_unit_test(test_node_stop_from_inside_fn),
        cmocka_unit_test(test_node_stop_waits_for_fn),
        cmocka_unit_test(test_node_stop_races_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
