/* Shared by the propagation fuzz targets: the input as field lines (split
 * at '\n'), a carrier over them, and a check that aborts with a message. */
#ifndef CTX_FUZZ_COMMON_H
#define CTX_FUZZ_COMMON_H

#include <ctx.h>
#include <ctx/propagate.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond,          \
                    __FILE__, __LINE__);                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define FUZZ_MAX_LINES 80

/* One field name with up to FUZZ_MAX_LINES values, plus fixed extra fields. */
struct fuzz_carrier {
    const char *key;
    size_t n;
    char *lines[FUZZ_MAX_LINES];
    const char *extra_key[4];
    const char *extra_val[4];
    size_t nextra;
};

/* Splits a copy of data at '\n' into NUL-terminated lines, each its own
 * exact-size allocation so that ASan sees any read past a NUL. */
static inline void fuzz_lines(struct fuzz_carrier *c, const char *key,
                              const uint8_t *data, size_t size)
{
    memset(c, 0, sizeof *c);
    c->key = key;
    size_t start = 0;
    for (size_t i = 0; i <= size && c->n < FUZZ_MAX_LINES; i++) {
        if (i == size || data[i] == '\n') {
            size_t len = i - start;
            char *l = malloc(len + 1);
            memcpy(l, data + start, len);
            l[len] = '\0';
            c->lines[c->n++] = l;
            start = i + 1;
        }
    }
}

static inline void fuzz_lines_free(struct fuzz_carrier *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->lines[i]);
}

static inline size_t fuzz_get_all(void *self, const char *key,
                                  const char **values, size_t max)
{
    struct fuzz_carrier *c = self;
    if (strcmp(key, c->key) == 0) {
        for (size_t i = 0; i < c->n && i < max; i++)
            values[i] = c->lines[i];
        return c->n;
    }
    for (size_t i = 0; i < c->nextra; i++) {
        if (strcmp(key, c->extra_key[i]) == 0) {
            if (max > 0)
                values[0] = c->extra_val[i];
            return 1;
        }
    }
    return 0;
}

static inline ctx_carrier_t fuzz_carrier_of(struct fuzz_carrier *c)
{
    ctx_carrier_t car = {.self = c, .get_all = fuzz_get_all};
    return car;
}

/* A map carrier that inject writes into (one value per key). */
struct fuzz_out {
    char key[4][16];
    char *val[4];
    size_t n;
};

static inline int fuzz_out_set(void *self, const char *key, const char *value)
{
    struct fuzz_out *o = self;
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->key[i], key) == 0) {
            free(o->val[i]);
            o->val[i] = strdup(value);
            return 0;
        }
    }
    FUZZ_CHECK(o->n < 4 && strlen(key) < 16);
    strcpy(o->key[o->n], key);
    o->val[o->n++] = strdup(value);
    return 0;
}

static inline const char *fuzz_out_get(void *self, const char *key)
{
    struct fuzz_out *o = self;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->key[i], key) == 0)
            return o->val[i];
    return NULL;
}

static inline void fuzz_out_free(struct fuzz_out *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->val[i]);
    o->n = 0;
}

#endif
