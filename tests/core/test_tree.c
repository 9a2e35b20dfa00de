/* The tree: derivations, cancel propagation, err and cause, lifetime, bad
 * input. Translated from Go's context_test.go where it applies. */
#include "testutil.h"

#include <errno.h>

static void test_roots(void **state)
{
    (void)state;
    ctx_t *bg = ctx_background(), *todo = ctx_todo();
    assert_non_null(bg);
    assert_non_null(todo);
    assert_ptr_not_equal(bg, todo);
    assert_false(ctx_is_done(bg));
    assert_int_equal(ctx_err(bg), 0);
    assert_int_equal(ctx_cause(bg), 0);
    assert_false(ctx_deadline(bg, NULL));
    assert_int_equal(ctx_cancel(bg), EINVAL);
    assert_int_equal(ctx_cancel_cause(todo, EIO), EINVAL);
    /* retain/release are no-ops on roots */
    assert_ptr_equal(ctx_retain(bg), bg);
    for (int i = 0; i < 5; i++)
        ctx_release(bg);
    assert_false(ctx_is_done(bg));
    tu_assert_no_live();
}

static void test_cancel_propagates_to_every_kind(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t *c1 = ctx_with_cancel(root);
    ctx_t *v = ctx_with_value(root, &k, "v", NULL);
    ctx_t *c2 = ctx_with_cancel(v);
    ctx_t *t = ctx_with_timeout(c2, CTX_HOUR);
    ctx_t *d = ctx_with_deadline(v, ctx_now() + CTX_HOUR);
    ctx_t *vv = ctx_with_value(t, &k, "w", NULL);
    ctx_t *all[] = {root, c1, v, c2, t, d, vv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        assert_non_null(all[i]);
        assert_false(ctx_is_done(all[i]));
        assert_int_equal(ctx_err(all[i]), 0);
        assert_int_equal(ctx_cause(all[i]), 0);
    }
    assert_int_equal(ctx_cancel_cause(root, EPIPE), 0);
    /* synchronous: every descendant is done when cancel returns */
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        assert_true(ctx_is_done(all[i]));
        assert_int_equal(ctx_err(all[i]), CTX_CANCELED);
        assert_int_equal(ctx_cause(all[i]), EPIPE);
    }
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        ctx_release(all[i]);
    tu_assert_no_live();
}

static void test_child_cancel_leaves_parent(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_cancel(p);
    ctx_t *sib = ctx_with_cancel(p);
    ctx_t *gc = ctx_with_cancel(c);
    assert_int_equal(ctx_cancel(c), 0);
    assert_true(ctx_is_done(c));
    assert_true(ctx_is_done(gc));
    assert_false(ctx_is_done(p));
    assert_false(ctx_is_done(sib));
    assert_int_equal(ctx_err(p), 0);
    /* a new child of the live parent is live */
    ctx_t *c3 = ctx_with_cancel(p);
    assert_false(ctx_is_done(c3));
    ctx_cancel(p);
    assert_true(ctx_is_done(sib));
    assert_true(ctx_is_done(c3));
    /* the earlier cancellation of c stands */
    assert_int_equal(ctx_cause(c), CTX_CANCELED);
    ctx_release(gc);
    ctx_release(c);
    ctx_release(sib);
    ctx_release(c3);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_children_of_done_parent_born_done(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(p, EHOSTDOWN);
    ctx_t *kids[] = {
        ctx_with_cancel(p),
        ctx_with_timeout(p, CTX_HOUR),
        ctx_with_deadline_cause(p, ctx_now() + CTX_HOUR, EIO),
        ctx_with_value(p, &k, NULL, NULL),
    };
    for (size_t i = 0; i < sizeof kids / sizeof *kids; i++) {
        assert_non_null(kids[i]);
        assert_true(ctx_is_done(kids[i]));
        assert_int_equal(ctx_err(kids[i]), CTX_CANCELED);
        assert_int_equal(ctx_cause(kids[i]), EHOSTDOWN);
    }
    ctx_t *gk = ctx_with_cancel(kids[3]);
    assert_true(ctx_is_done(gk));
    assert_int_equal(ctx_cause(gk), EHOSTDOWN);
    ctx_release(gk);
    for (size_t i = 0; i < sizeof kids / sizeof *kids; i++)
        ctx_release(kids[i]);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_cause_rules(void **state)
{
    (void)state;
    /* plain cancel: err = cause = CTX_CANCELED */
    ctx_t *a = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_cancel(a), 0);
    assert_int_equal(ctx_err(a), CTX_CANCELED);
    assert_int_equal(ctx_cause(a), CTX_CANCELED);
    /* first cancellation wins, later ones return 0 and change nothing */
    assert_int_equal(ctx_cancel_cause(a, EIO), 0);
    assert_int_equal(ctx_cause(a), CTX_CANCELED);
    ctx_release(a);

    ctx_t *b = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(b, EIO);
    ctx_cancel_cause(b, EPIPE);
    ctx_cancel(b);
    assert_int_equal(ctx_err(b), CTX_CANCELED);
    assert_int_equal(ctx_cause(b), EIO);
    ctx_release(b);

    /* cause 0 means "no cause": the err */
    ctx_t *z = ctx_with_cancel(ctx_background());
    ctx_cancel_cause(z, 0);
    assert_int_equal(ctx_cause(z), CTX_CANCELED);
    ctx_release(z);

    /* Go's stacked cases: the cause of the cancellation that reached the
     * node first, whether its own or an ancestor's. */
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_cancel(p);
    ctx_cancel_cause(c, EIO);
    ctx_cancel_cause(p, EPIPE);
    assert_int_equal(ctx_cause(c), EIO);
    assert_int_equal(ctx_cause(p), EPIPE);
    ctx_release(c);
    ctx_release(p);

    p = ctx_with_cancel(ctx_background());
    c = ctx_with_cancel(p);
    ctx_cancel_cause(p, EPIPE);
    ctx_cancel_cause(c, EIO);
    assert_int_equal(ctx_cause(c), EPIPE);
    ctx_release(c);
    ctx_release(p);

    /* deadline cause under a cancelled parent: the parent's */
    p = ctx_with_cancel(ctx_background());
    ctx_t *t = ctx_with_timeout_cause(p, CTX_HOUR, EIO);
    ctx_cancel_cause(p, EPIPE);
    assert_int_equal(ctx_err(t), CTX_CANCELED);
    assert_int_equal(ctx_cause(t), EPIPE);
    /* cancelling a deadline context by hand: Canceled with the given cause */
    ctx_t *t2 = ctx_with_timeout_cause(ctx_background(), CTX_HOUR, EIO);
    ctx_cancel_cause(t2, EALREADY);
    assert_int_equal(ctx_err(t2), CTX_CANCELED);
    assert_int_equal(ctx_cause(t2), EALREADY);
    ctx_release(t2);
    ctx_release(t);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_cancel_is_only_for_cancellable(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(p, &k, NULL, NULL);
    ctx_t *w = ctx_without_cancel(p);
    assert_int_equal(ctx_cancel(v), EINVAL);
    assert_int_equal(ctx_cancel(w), EINVAL);
    assert_int_equal(ctx_cancel_cause(v, EIO), EINVAL);
    assert_int_equal(ctx_cancel(NULL), EINVAL);
    assert_int_equal(ctx_cancel_cause(NULL, EIO), EINVAL);
    assert_false(ctx_is_done(p));
    assert_false(ctx_is_done(v));
    ctx_release(w);
    ctx_release(v);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_without_cancel(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    ctx_t *p = ctx_with_timeout(ctx_background(), CTX_HOUR);
    ctx_t *v = ctx_with_value(p, &k, "val", NULL);
    ctx_t *w = ctx_without_cancel(v);
    ctx_t *wc = ctx_with_cancel(w);
    assert_non_null(w);
    assert_false(ctx_deadline(w, NULL));
    assert_false(ctx_deadline(wc, NULL));
    assert_string_equal(ctx_value(w, &k), "val");
    assert_string_equal(ctx_value(wc, &k), "val");
    ctx_cancel_cause(p, EIO);
    assert_true(ctx_is_done(v));
    assert_false(ctx_is_done(w));
    assert_int_equal(ctx_err(w), 0);
    assert_int_equal(ctx_cause(w), 0);
    assert_false(ctx_is_done(wc));
    assert_string_equal(ctx_value(w, &k), "val");
    /* its own cancellable children work as usual */
    ctx_cancel(wc);
    assert_true(ctx_is_done(wc));
    assert_int_equal(ctx_cause(wc), CTX_CANCELED);
    /* a without_cancel of a done parent is live */
    ctx_t *w2 = ctx_without_cancel(p);
    assert_false(ctx_is_done(w2));
    ctx_release(w2);
    ctx_release(wc);
    ctx_release(w);
    ctx_release(v);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_null_and_bad_input(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    errno = 0;
    assert_null(ctx_with_cancel(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_deadline(NULL, 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_deadline_cause(NULL, 0, EIO));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_timeout(NULL, CTX_SECOND));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_timeout_cause(NULL, CTX_SECOND, EIO));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_value(NULL, &k, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_with_value(ctx_background(), NULL, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ctx_without_cancel(NULL));
    assert_int_equal(errno, EINVAL);
    /* queries on NULL */
    assert_false(ctx_is_done(NULL));
    assert_int_equal(ctx_err(NULL), 0);
    assert_int_equal(ctx_cause(NULL), 0);
    assert_false(ctx_deadline(NULL, NULL));
    assert_null(ctx_value(NULL, &k));
    assert_null(ctx_value(ctx_background(), NULL));
    assert_null(ctx_retain(NULL));
    ctx_release(NULL);
    assert_int_equal(ctx_wait(NULL), EINVAL);
    assert_int_equal(ctx_wait_until(NULL, 0), EINVAL);
    errno = 0;
    assert_int_equal(ctx_done_fd(NULL), -1);
    assert_int_equal(errno, EINVAL);
    tu_assert_no_live();
}

static int destroyed;
static void count_destroy(void *v)
{
    (void)v;
    destroyed++;
}

static void test_lifetime_child_keeps_parent(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    destroyed = 0;
    ctx_t *p = ctx_with_value(ctx_background(), &k, "p", count_destroy);
    ctx_t *c = ctx_with_cancel(p);
    ctx_t *gc = ctx_with_value(c, &k, "gc", count_destroy);
    ctx_release(p); /* the child keeps it alive */
    ctx_release(c);
    assert_int_equal(destroyed, 0);
    assert_string_equal(ctx_value(gc, &k), "gc");
    ctx_t *r = ctx_retain(gc);
    assert_ptr_equal(r, gc);
    ctx_release(gc);
    assert_int_equal(destroyed, 0);
    ctx_release(r); /* frees the whole chain, each destructor once */
    assert_int_equal(destroyed, 2);
    tu_assert_no_live();
}

static void test_release_uncancelled_detaches(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    enum { N = 20000 };
    ctx_t **kids = malloc(N * sizeof *kids);
    assert_non_null(kids);
    for (int i = 0; i < N; i++) {
        kids[i] = i % 2 ? ctx_with_cancel(p) : ctx_with_timeout(p, CTX_HOUR);
        assert_non_null(kids[i]);
    }
    /* release without cancel: each leaves the parent's list and the heap */
    for (int i = 0; i < N; i++)
        ctx_release(kids[i]);
#ifdef CTX_DEBUG
    assert_int_equal(ctx__live_contexts(), 1);
#endif
    ctx_t *survivor = ctx_with_cancel(p);
    ctx_cancel(p);
    assert_true(ctx_is_done(survivor));
    ctx_release(survivor);
    ctx_release(p);
    free(kids);
    tu_assert_no_live();
}

static void test_deep_chain(void **state)
{
    (void)state;
    /* Deep chains cost no stack: cancel and release are iterative. */
    enum { DEPTH = 100000 };
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_retain(root);
    for (int i = 0; i < DEPTH; i++) {
        ctx_t *n = ctx_with_cancel(c);
        assert_non_null(n);
        ctx_release(c);
        c = n;
    }
    assert_false(ctx_is_done(c));
    ctx_cancel_cause(root, EIO);
    assert_true(ctx_is_done(c));
    assert_int_equal(ctx_cause(c), EIO);
    ctx_release(root);
    ctx_release(c); /* frees 100001 nodes */
    tu_assert_no_live();
}

static void test_cancel_wide_tree(void **state)
{
    (void)state;
    ctx_t *root = ctx_with_cancel(ctx_background());
    enum { FAN = 30 };
    ctx_t *nodes[1 + FAN + FAN * FAN];
    int n = 0;
    nodes[n++] = root;
    for (int i = 0; i < FAN; i++) {
        ctx_t *mid = ctx_with_cancel(root);
        nodes[n++] = mid;
        for (int j = 0; j < FAN; j++)
            nodes[n++] = j % 3 ? ctx_with_cancel(mid)
                               : ctx_with_timeout(mid, CTX_HOUR);
    }
    ctx_cancel(nodes[5]);
    ctx_cancel(root);
    for (int i = 0; i < n; i++)
        assert_int_equal(ctx_err(nodes[i]), CTX_CANCELED);
    for (int i = n - 1; i >= 0; i--)
        ctx_release(nodes[i]);
    tu_assert_no_live();
}

static void test_defer_cancel_macro(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *seen;
    {
        ctx_t *c CTX_DEFER_CANCEL = ctx_with_cancel(p);
        seen = ctx_retain(c);
        assert_false(ctx_is_done(seen));
    }
    assert_true(ctx_is_done(seen)); /* cancelled at scope exit */
    assert_false(ctx_is_done(p));
    ctx_release(seen);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_inline_and_function_queries_agree(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    bool (*is_done)(ctx_t *) = ctx_is_done; /* the exported functions */
    int (*err)(ctx_t *) = ctx_err;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(p, &k, NULL, NULL);
    ctx_t *w = ctx_without_cancel(v);
    ctx_t *all[] = {ctx_background(), ctx_todo(), p, v, w, NULL};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
            assert_int_equal(ctx_is_done(all[i]), is_done(all[i]));
            assert_int_equal((ctx_is_done)(all[i]), is_done(all[i]));
            assert_int_equal(ctx_err(all[i]), err(all[i]));
            assert_int_equal((ctx_err)(all[i]), err(all[i]));
        }
        ctx_cancel_cause(p, EIO);
    }
    assert_true(ctx_is_done(v));
    assert_int_equal(ctx_err(v), CTX_CANCELED);
    assert_false(ctx_is_done(w));
    ctx_release(w);
    ctx_release(v);
    ctx_release(p);
    tu_assert_no_live();
}

static void test_is_never_done(void **state)
{
    (void)state;
    static const ctx_key_t k = CTX_KEY("k");
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(c, &k, NULL, NULL);
    ctx_t *w = ctx_without_cancel(v);
    ctx_t *wv = ctx_with_value(w, &k, NULL, NULL);
    ctx_t *d = ctx_with_timeout(w, CTX_HOUR);
    assert_true(ctx_is_never_done(ctx_background()));
    assert_true(ctx_is_never_done(ctx_todo()));
    assert_true(ctx_is_never_done(w));
    assert_true(ctx_is_never_done(wv));
    assert_false(ctx_is_never_done(c));
    assert_false(ctx_is_never_done(v));
    assert_false(ctx_is_never_done(d));
    assert_false(ctx_is_never_done(NULL));
    ctx_cancel(c);
    assert_false(ctx_is_never_done(c)); /* done, not never done */
    assert_true(ctx_is_never_done(w));
    ctx_release(d);
    ctx_release(wv);
    ctx_release(w);
    ctx_release(v);
    ctx_release(c);
}

/* The last release keeps the caller's errno when it runs a value
 * destructor that sets errno (the case that fails if release stops saving
 * it), and when it closes a done fd on the way. */
static void destroy_setting_errno(void *v)
{
    (void)v;
    errno = EBADMSG;
}

static void test_release_keeps_errno(void **state)
{
    (void)state;
    static const ctx_key_t key = CTX_KEY("errno");
    static int value;
    ctx_t *c = ctx_with_cancel(ctx_background());
    assert_true(ctx_done_fd(c) >= 0);
    ctx_t *v = ctx_with_value(c, &key, &value, destroy_setting_errno);
    assert_non_null(v);
    ctx_cancel(c);
    errno = ERANGE;
    ctx_release(c); /* v still holds it */
    assert_int_equal(errno, ERANGE);
    ctx_release(v); /* destroy, then c: close of its done fd */
    assert_int_equal(errno, ERANGE);
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roots),
        cmocka_unit_test(test_cancel_propagates_to_every_kind),
        cmocka_unit_test(test_child_cancel_leaves_parent),
        cmocka_unit_test(test_children_of_done_parent_born_done),
        cmocka_unit_test(test_cause_rules),
        cmocka_unit_test(test_cancel_is_only_for_cancellable),
        cmocka_unit_test(test_without_cancel),
        cmocka_unit_test(test_null_and_bad_input),
        cmocka_unit_test(test_lifetime_child_keeps_parent),
        cmocka_unit_test(test_release_uncancelled_detaches),
        cmocka_unit_test(test_deep_chain),
        cmocka_unit_test(test_cancel_wide_tree),
        cmocka_unit_test(test_defer_cancel_macro),
        cmocka_unit_test(test_inline_and_function_queries_agree),
        cmocka_unit_test(test_is_never_done),
        cmocka_unit_test(test_release_keeps_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
