/* Consumes the installed libctx-event: a cancelled context's callback runs
 * in the event_base's loop. */
#include <ctx/event.h>

static int runs;

static void on_done(ctx_event_watch_t *w, ctx_t *ctx)
{
    (void)w;
    runs += ctx_err(ctx) == CTX_CANCELED;
}

int main(void)
{
    struct event_base *base = event_base_new();
    ctx_event_t *ce = base ? ctx_event_new(base) : NULL;
    ctx_event_watch_t w = CTX_EVENT_WATCH_INIT;
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    if (ce == NULL || ctx_event_watch(ce, &w, ctx, on_done) != 0)
        return 1;
    ctx_cancel(ctx);
    ctx_release(ctx);
    event_base_dispatch(base);
    int ok = runs == 1 && ctx_event_free(ce) == 0;
    event_base_free(base);
    return ok ? 0 : 1;
}
