/* Value contexts: a key, a borrowed value and its destructor. */
#include "ctx_int.h"

CTX_API ctx_t *ctx_with_value(ctx_t *parent, const ctx_key_t *key,
                              void *value, void (*destroy)(void *value))
{
    if (parent == NULL || key == NULL) {
        errno = EINVAL;
        return NULL;
    }
    CTX_CHECK(parent);
    ctx_t *c = ctx__node_alloc(parent, CTX_KIND_VALUE, CTX_VALUE_SIZE);
    if (c == NULL)
        return NULL;
    c->u.v.key = key;
    c->u.v.value = value;
    c->u.v.destroy = destroy;
    return c;
}

CTX_API void *ctx_value(ctx_t *c, const ctx_key_t *key)
{
    if (key == NULL)
        return NULL;
    CTX_CHECK(c);
    /* Parents never change, so the walk needs no lock. */
    for (; c != NULL; c = c->parent) {
        if (c->kind == CTX_KIND_VALUE && c->u.v.key == key)
            return c->u.v.value;
    }
    return NULL;
}
