/* Seed example 3: WithDeadline 50 ms against a 1 s sleep.
 *     select { case <-time.After(1 * time.Second): fmt.Println("overslept")
 *              case <-ctx.Done(): fmt.Println(ctx.Err()) }  */
#define _GNU_SOURCE
#include "common.h"

int main(void)
{
    ex_init();
    ctx_time_t d = ctx_now() + 50 * CTX_MILLISECOND;
    ctx_t *ctx CTX_DEFER_CANCEL = ctx_with_deadline(ctx_background(), d);
    char desc[128];
    ctx_format(ctx, desc, sizeof desc);
    ex_log("main", "%s", desc);
    int err = ctx_sleep(ctx, CTX_SECOND);
    if (err == 0)
        ex_log("main", "overslept");
    else
        ex_log("main", "%s", ctx_strerror(err)); /* fmt.Println(ctx.Err()) */
    return err == CTX_DEADLINE_EXCEEDED ? 0 : 1;
}
