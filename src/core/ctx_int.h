/* Private to the library: the node layout and the internal interfaces
 * between the files of src/. */
#ifndef CTX_INT_H
#define CTX_INT_H

#include "ctx.h"
#include "platform.h"

#include <stdatomic.h>
#include <stdint.h>

enum ctx_kind {
    CTX_KIND_ROOT = 1,    /* background, todo: static */
    CTX_KIND_CANCEL = 2,  /* with_cancel, with_deadline, with_timeout */
    CTX_KIND_VALUE = 3,   /* with_value */
    CTX_KIND_WITHOUT = 4, /* without_cancel */
    CTX_KIND_DEAD = 0xdd, /* poisoned on free (debug builds) */
};

enum ctx_flag {
    CTX_F_STATIC = 1 << 0,       /* a root: never freed, refcount unused */
    CTX_F_HAS_DEADLINE = 1 << 1, /* deadline field is meaningful */
    CTX_F_OWN_DEADLINE = 1 << 2, /* made by with_deadline with its own deadline */
    CTX_F_TODO = 1 << 3,         /* the TODO root (for ctx_format) */
};

#define CTX_MAGIC 0xc7u
#define CTX_NO_HEAP UINT32_MAX

/* The part only cancellable nodes have. `err` is the word waiters sleep on
 * (futex) and the one every done check loads; `cause` is stored before it
 * with release ordering, so a reader that sees err sees the cause. */
struct ctx_cancel_part {
    _Atomic uint32_t err;
    _Atomic int cause;
    ctx__lock_t lock;           /* guards the lists below and done_fd creation */
    _Atomic uint32_t waiters;   /* threads sleeping on err */
    struct ctx *children;       /* cancellable descendants registered here */
    struct ctx *next;           /* siblings in the registered parent's list */
    struct ctx **pprev;         /* NULL when not linked */
    ctx_time_t deadline;        /* effective: own or inherited (if HAS_DEADLINE) */
    _Atomic uint32_t heap_idx;  /* timer shard << 28 | slot in its heap, or CTX_NO_HEAP; changed under that shard's lock */
    _Atomic int done_fd;        /* -1 until ctx_done_fd() */
    ctx_after_link_t *afters;   /* pending registrations and nodes */
#ifndef CTX_HAVE_FUTEX
    int done_wfd;               /* write end of the pipe */
#endif
};

struct ctx_value_part {
    const ctx_key_t *key;
    void *value;
    void (*destroy)(void *value);
};

struct ctx {
    _Atomic uint32_t refs;
    uint8_t kind;
    uint8_t flags;
    uint8_t magic;
    /* Set when the node's own cancel unlinked it from its parent: no cancel
     * walk can hold it then, so freeing it needs no parent lock. */
    _Atomic uint8_t self_detached;
    struct ctx *parent; /* holds a reference; NULL for roots */
    /* The node holding the cancel state this context reports: itself for
     * cancellable nodes, the nearest cancellable ancestor for the others,
     * NULL when it can never be done. Never changes. */
    struct ctx *src;
    union {
        struct ctx_cancel_part c;
        struct ctx_value_part v;
    } u;
};

#define CTX_HEADER_SIZE offsetof(struct ctx, u)
#define CTX_CANCEL_SIZE (CTX_HEADER_SIZE + sizeof(struct ctx_cancel_part))
#define CTX_VALUE_SIZE (CTX_HEADER_SIZE + sizeof(struct ctx_value_part))

/* An after-func registration. It starts like a ctx_after_node (link, then
 * the state word) so that both kinds share the node's list; node states
 * carry CTX_AFTER_NODE_BIT, a registration's never do. */
struct ctx_after {
    ctx_after_link_t l;       /* in node's list (l.prev != NULL), then in a
                               * run list */
    _Atomic uint32_t state;   /* enum below; futex word for stop's wait */
    _Atomic uint32_t refs;    /* the user's stop + a run list holding it */
    void (*fn)(void *arg);
    void *arg;
    struct ctx *ctx;          /* the context given: holds a reference */
    struct ctx *node;         /* ctx->src: where it is linked, or NULL */
    _Atomic(uintptr_t) runner; /* thread running fn (for stop from inside) */
#ifdef CTX_DEBUG
    uint32_t magic;
#endif
};

enum {
    CTX_AFTER_PENDING = 0,
    CTX_AFTER_RUNNING = 1,
    CTX_AFTER_FINISHED = 2,
    CTX_AFTER_STOPPED = 3,
};
#define CTX_AFTER_NODE_BIT 0x100u
#define CTX_AFTER_MAGIC 0xaf7e4f0cu

/* Internal interfaces. */

/* Debug checks (CTX_DEBUG): abort with a message on misuse. */
void ctx__misuse(const char *what, const void *p);
#ifdef CTX_DEBUG
#define CTX_CHECK(c)                                                           \
    do {                                                                       \
        if ((c) != NULL && (c)->magic != CTX_MAGIC)                            \
            ctx__misuse("use of a freed or invalid context", (c));             \
    } while (0)
void ctx__live_add(_Atomic long *counter, long d);
extern _Atomic long ctx__n_contexts, ctx__n_afters;
#else
#define CTX_CHECK(c) ((void)0)
#endif

/* tree.c */
ctx_t *ctx__node_alloc(ctx_t *parent, uint8_t kind, size_t size);
void ctx__node_free_one(ctx_t *c);
/* Cancels `c` (a cancellable node the caller keeps alive) and all its
 * descendants; returns false if it was already done. Runs after-funcs. */
bool ctx__cancel(ctx_t *c, int err, int cause);

bool ctx__try_retain(ctx_t *c);

/* after.c: moves a node's pending registrations to the end of a run list
 * (under the node's lock), then runs them (no lock held). */
struct ctx__run {
    ctx_after_link_t *head; /* registrations */
    ctx_after_link_t **tail;
    ctx_after_link_t *nodes; /* intrusive nodes (run first) */
    ctx_after_link_t **ntail;
};
void ctx__after_collect(ctx_t *node, struct ctx__run *run);
void ctx__after_run(struct ctx__run *run);

/* timer.c */
int ctx__timer_insert(ctx_t *c);  /* 0 or ENOMEM / EAGAIN */
void ctx__timer_remove(ctx_t *c); /* no-op if in no timer heap */

/* wait.c */
void ctx__done_signal(ctx_t *node); /* under node's lock, at cancel */
void ctx__done_close(ctx_t *node);  /* at free */

static inline ctx_t *ctx__src(ctx_t *c)
{
    return c->src;
}

static inline int ctx__load_err(ctx_t *src)
{
    return (int)atomic_load_explicit(&src->u.c.err, memory_order_acquire);
}

#endif
