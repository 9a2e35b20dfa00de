/* Seed example 5: WithValue. A trace code is set at the entry point and read
 * by the worker through a typed accessor pair. As ctx.h recommends (CTX_KEY),
 * the key is a private static const ctx_key_t (its address is its identity, so
 * no other module can collide with it) and only the accessors are exported,
 * the C form of Go's unexported key type with NewContext/FromContext. */
#define _GNU_SOURCE
#include "common.h"

#include <ctx/group.h>

/* ---- the "trace" module: key private, accessors public --------------------
 */
static const ctx_key_t trace_key = CTX_KEY("TRACE_CODE");

static void trace_free(void *code)
{
    free(code);
}

/* A child of parent carrying a copy of code (new reference; NULL + errno). */
static ctx_t *trace_new_context(ctx_t *parent, const char *code)
{
    char *copy = strdup(code);
    if (copy == NULL)
        return NULL;
    ctx_t *c = ctx_with_value(parent, &trace_key, copy, trace_free);
    if (c == NULL)
        free(copy);
    return c;
}

/* The trace code of ctx, or NULL (borrowed while the caller holds ctx). */
static const char *trace_from_context(ctx_t *ctx)
{
    return ctx_value(ctx, &trace_key);
}

/* ---- the program -------------------------------------------------------- */
static int worker(ctx_t *ctx, void *arg)
{
    (void)arg;
    const char *code = trace_from_context(ctx);
    if (code == NULL) {
        ex_log("worker", "invalid trace code");
        code = "";
    }
    for (;;) {
        ex_log("worker", "worker, trace code:%s", code);
        if (ctx_sleep(ctx, 10 * CTX_MILLISECOND) != 0)
            break;
    }
    ex_log("worker", "worker done!");
    return 0;
}

int main(void)
{
    ex_init();
    ctx_t *tctx = ctx_with_timeout(ctx_background(), 50 * CTX_MILLISECOND);
    /* at the entry point: attach the trace code for everything below */
    ctx_t *ctx = trace_new_context(tctx, "12512312234");
    char desc[160];
    ctx_format(ctx, desc, sizeof desc);
    ex_log("main", "%s", desc);
    ctx_group_t *wg = ctx_group_new(ctx, 0);
    ctx_group_go(wg, worker, NULL);
    ctx_group_wait(wg);
    ctx_cancel(tctx);
    ctx_group_free(wg);
    ctx_release(ctx);
    ctx_release(tctx);
    ex_log("main", "over");
    return 0;
}
