/* Seed example 4: WithTimeout 50 ms; a worker "connecting to a database"
 * every 10 ms stops when the timeout passes. */
#define _GNU_SOURCE
#include "common.h"

#include <ctx/group.h>

static int worker(ctx_t *ctx, void *arg)
{
    (void)arg;
    for (;;) {
        ex_log("worker", "db connecting ...");
        /* time.Sleep(10ms), then select { case <-ctx.Done(): break LOOP } */
        if (ctx_sleep(ctx, 10 * CTX_MILLISECOND) != 0)
            break;
    }
    ex_log("worker", "worker done! (%s)", ctx_strerror(ctx_err(ctx)));
    return 0;
}

int main(void)
{
    ex_init();
    ctx_t *ctx = ctx_with_timeout(ctx_background(), 50 * CTX_MILLISECOND);
    ctx_group_t *wg = ctx_group_new(ctx, 0);
    ctx_group_go(wg, worker, NULL);
    /* The seed sleeps 5 s here before cancel(); the worker is long done by
     * then, so wait for it instead. */
    ctx_group_wait(wg);
    ctx_cancel(ctx);
    ctx_group_free(wg);
    ctx_release(ctx);
    ex_log("main", "over");
    return 0;
}
