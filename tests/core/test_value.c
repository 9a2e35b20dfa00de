/* Values: lookup, identity keys, shadowing, destructors. */
#include "testutil.h"

static const ctx_key_t key_a = CTX_KEY("a");
static const ctx_key_t key_b = CTX_KEY("b");
static const ctx_key_t key_a2 = CTX_KEY("a"); /* same name, other key */

static void test_nearest_ancestor(void **state)
{
    (void)state;
    int one = 1, two = 2, three = 3;
    ctx_t *c1 = ctx_with_value(ctx_background(), &key_a, &one, NULL);
    ctx_t *c2 = ctx_with_cancel(c1);
    ctx_t *c3 = ctx_with_value(c2, &key_b, &two, NULL);
    ctx_t *c4 = ctx_with_value(c3, &key_a, &three, NULL);
    ctx_t *c5 = ctx_with_timeout(c4, CTX_HOUR);
    assert_ptr_equal(ctx_value(c1, &key_a), &one);
    assert_null(ctx_value(c1, &key_b));
    assert_ptr_equal(ctx_value(c3, &key_a), &one);
    assert_ptr_equal(ctx_value(c3, &key_b), &two);
    assert_ptr_equal(ctx_value(c4, &key_a), &three);
    assert_ptr_equal(ctx_value(c5, &key_a), &three);
    assert_ptr_equal(ctx_value(c5, &key_b), &two);
    assert_null(ctx_value(ctx_background(), &key_a));
    assert_null(ctx_value(ctx_todo(), &key_a));
    ctx_t *all[] = {c5, c4, c3, c2, c1};
    for (size_t i = 0; i < 5; i++)
        ctx_release(all[i]);
    tu_assert_no_live();
}

static void test_identity_keys(void **state)
{
    (void)state;
    int x = 1;
    ctx_t *c = ctx_with_value(ctx_background(), &key_a, &x, NULL);
    assert_ptr_equal(ctx_value(c, &key_a), &x);
    assert_null(ctx_value(c, &key_a2)); /* equal names are different keys */
    ctx_key_t copy = key_a;             /* a copy is a different key too */
    assert_null(ctx_value(c, &copy));
    ctx_release(c);
    tu_assert_no_live();
}

static void test_null_shadows(void **state)
{
    (void)state;
    int x = 1;
    ctx_t *c1 = ctx_with_value(ctx_background(), &key_a, &x, NULL);
    ctx_t *c2 = ctx_with_value(c1, &key_a, NULL, NULL);
    assert_ptr_equal(ctx_value(c1, &key_a), &x);
    assert_null(ctx_value(c2, &key_a));
    ctx_release(c2);
    ctx_release(c1);
    tu_assert_no_live();
}

static void test_values_after_cancel(void **state)
{
    (void)state;
    int x = 7;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *v = ctx_with_value(p, &key_a, &x, NULL);
    ctx_t *c = ctx_with_cancel(v);
    ctx_cancel(p);
    assert_true(ctx_is_done(v));
    assert_ptr_equal(ctx_value(v, &key_a), &x);
    assert_ptr_equal(ctx_value(c, &key_a), &x);
    ctx_release(c);
    ctx_release(v);
    ctx_release(p);
    tu_assert_no_live();
}

static int destroy_calls;
static void *destroyed_value;
static void on_destroy(void *v)
{
    destroy_calls++;
    destroyed_value = v;
    free(v);
}

static void test_destroy_once(void **state)
{
    (void)state;
    destroy_calls = 0;
    char *s = strdup("request-42");
    ctx_t *v = ctx_with_value(ctx_background(), &key_a, s, on_destroy);
    ctx_t *c = ctx_with_cancel(v);
    ctx_t *r = ctx_retain(v);
    ctx_release(v);
    ctx_cancel(c); /* cancelling does not free */
    assert_int_equal(destroy_calls, 0);
    ctx_release(r);
    assert_int_equal(destroy_calls, 0); /* c still holds v */
    assert_string_equal(ctx_value(c, &key_a), "request-42");
    ctx_release(c);
    assert_int_equal(destroy_calls, 1);
    assert_ptr_equal(destroyed_value, s);
    /* NULL value with a destructor: still called once, with NULL */
    destroy_calls = 0;
    ctx_release(ctx_with_value(ctx_background(), &key_b, NULL, on_destroy));
    assert_int_equal(destroy_calls, 1);
    assert_null(destroyed_value);
    tu_assert_no_live();
}

static void test_deep_miss(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_value(ctx_background(), &key_a, "bottom", NULL);
    for (int i = 0; i < 1000; i++) {
        ctx_t *n = i % 2 ? ctx_with_value(c, &key_b, NULL, NULL)
                         : ctx_with_cancel(c);
        ctx_release(c);
        c = n;
    }
    assert_string_equal(ctx_value(c, &key_a), "bottom");
    assert_null(ctx_value(c, &key_a2));
    ctx_release(c);
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nearest_ancestor),
        cmocka_unit_test(test_identity_keys),
        cmocka_unit_test(test_null_shadows),
        cmocka_unit_test(test_values_after_cancel),
        cmocka_unit_test(test_destroy_once),
        cmocka_unit_test(test_deep_miss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
