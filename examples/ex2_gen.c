/* Seed example 2: gen(ctx) sends 1, 2, 3 ... on a channel until the consumer
 * cancels after 5; the generator's thread ends instead of leaking.
 *     for n := range gen(ctx) { fmt.Println(n); if n == 5 { break } }  */
#define _GNU_SOURCE
#include "common.h"

#include <ctx/group.h>

struct gen {
    ex_chan_t ch; /* unbuffered, as make(chan int) */
    ctx_group_t *g;
};

static int gen_main(ctx_t *ctx, void *arg)
{
    struct gen *gn = arg;
    for (int n = 1;; n++) {
        /* select { case <-ctx.Done(): return; case dst <- n: } */
        int err = ex_chan_send(&gn->ch, ctx, n);
        if (err != 0) {
            ex_log("gen", "stops at %d: %s", n, ctx_strerror(err));
            return 0;
        }
    }
}

/* Starts the generator on its own thread; gen_free() waits for it. */
static struct gen *gen_start(ctx_t *ctx)
{
    struct gen *gn = calloc(1, sizeof *gn);
    if (gn == NULL)
        return NULL;
    ex_chan_init(&gn->ch, 0);
    gn->g = ctx_group_new(ctx, 0);
    if (gn->g == NULL || ctx_group_go(gn->g, gen_main, gn) != 0) {
        ctx_group_free(gn->g);
        free(gn);
        return NULL;
    }
    return gn;
}

static void gen_free(struct gen *gn)
{
    ctx_group_free(gn->g); /* joins the generator thread */
    ex_chan_destroy(&gn->ch);
    free(gn);
}

int main(void)
{
    ex_init();
    ex_threads_warm_up();
    int baseline = ex_threads();
    ex_log("main", "threads: %d", baseline);
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    struct gen *gn = gen_start(ctx);
    if (gn == NULL)
        return 1;
    int n;
    while (ex_chan_recv(&gn->ch, ctx, &n) == 0) {
        ex_log("main", "%d", n);
        if (n == 5)
            break;
    }
    ex_log("main", "threads while the generator runs: %d", ex_threads());
    ctx_cancel(ctx); /* defer cancel() */
    gen_free(gn);
    int after = ex_threads_settle(baseline);
    ex_log("main", "threads after cancel: %d (baseline %d): %s", after,
           baseline, after == baseline ? "no leak" : "LEAK");
    ctx_release(ctx);
    return after == baseline ? 0 : 1;
}
