/* Consumes the installed libctx-uv: a cancelled context's callback runs on
 * the loop, and the loop closes cleanly. */
#include <ctx/uv.h>

static int runs;

static void on_done(ctx_uv_watch_t *w, ctx_t *ctx)
{
    (void)w;
    runs += ctx_err(ctx) == CTX_CANCELED;
}

static void on_closed(ctx_uv_t *h)
{
    (void)h;
}

int main(void)
{
    uv_loop_t loop;
    ctx_uv_t cu;
    ctx_uv_watch_t w = CTX_UV_WATCH_INIT;
    if (uv_loop_init(&loop) != 0 || ctx_uv_init(&loop, &cu) != 0)
        return 1;
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    if (ctx_uv_watch(&cu, &w, ctx, on_done) != 0)
        return 1;
    ctx_cancel(ctx);
    ctx_release(ctx);
    uv_run(&loop, UV_RUN_DEFAULT);
    ctx_uv_close(&cu, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    return runs == 1 && uv_loop_close(&loop) == 0 ? 0 : 1;
}
