/* Consumes the installed libctx-pq: a connection attempt bounded by an
 * already-cancelled context returns NULL with its err (no server needed). */
#include <ctx/pq.h>

int main(void)
{
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    ctx_cancel(ctx);
    errno = 0;
    PGconn *c = ctx_pq_connect(ctx, "host=/nonexistent dbname=x");
    int ok = c == NULL && errno == CTX_CANCELED;
    ctx_release(ctx);
    errno = 0;
    ok = ok && ctx_pq_exec(NULL, NULL, "SELECT 1") == NULL && errno == EINVAL;
    return ok ? 0 : 1;
}
