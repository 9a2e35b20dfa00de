/* Consumes the installed libctx-glib: a GCancellable follows a context. */
#include <ctx/glib.h>

int main(void)
{
    GCancellable *c = g_cancellable_new();
    ctx_t *ctx = ctx_glib_with_cancellable(ctx_background(), c);
    if (ctx == NULL)
        return 1;
    g_cancellable_cancel(c);
    int ok = ctx_err(ctx) == CTX_CANCELED;
    ctx_release(ctx);
    g_object_unref(c);
    return ok ? 0 : 1;
}
