/* Consumes the installed libctx-mhd: a server on a free loopback port,
 * shut down at once. */
#include <ctx/mhd.h>

static void handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                    ctx_mhd_reply_t *reply, void *arg)
{
    (void)ctx;
    (void)req;
    (void)arg;
    ctx_mhd_reply_buffer(reply, 200, "text/plain", "ok\n", 3);
}

int main(void)
{
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1"};
    ctx_mhd_server_t *srv = ctx_mhd_start(ctx_background(), &o, handler, NULL);
    if (srv == NULL || ctx_mhd_port(srv) == 0)
        return 1;
    int e = ctx_mhd_shutdown(srv, CTX_SECOND);
    ctx_mhd_free(srv);
    return e == 0 ? 0 : 1;
}
