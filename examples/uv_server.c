/* uv_server: a TCP echo server on libuv where every connection has its own
 * context with an idle deadline, derived from the server's root context.
 *
 *   uv_server [PORT [IDLE_MS]]      (PORT 0: any free port; IDLE_MS 10000)
 *
 * Go's shape, in C on one libuv loop:
 *   root := signal.NotifyContext(ctx.Background(), SIGINT, SIGTERM)
 *   per connection: ctx, cancel := context.WithTimeout(root, idle), renewed
 *   on every read; `<-ctx.Done()` closes the connection.
 *
 * - The root is cancelled by SIGINT or SIGTERM (ctx_with_signals). Every
 *   connection's context is its child, so that one cancel ends them all:
 *   each connection's watch fires on the loop thread and closes it.
 * - One ctx_uv_t serves every context of the loop: one fd in total.
 * - After the last connection is closed the server closes the listener and
 *   the ctx_uv_t, uv_run() returns by itself and uv_loop_close() returns 0.
 */
#include <ctx.h>
#include <ctx/sigctx.h>
#include <ctx/uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct conn {
    uv_tcp_t tcp;
    ctx_t *ctx;       /* this connection's: idle deadline, child of root */
    ctx_uv_watch_t w; /* fires when ctx is done */
    unsigned id;
};

static uv_loop_t *loop;
static uv_tcp_t server;
static ctx_uv_t cu;
static ctx_t *root;
static ctx_uv_watch_t root_watch = CTX_UV_WATCH_INIT;
static ctx_duration_t idle;
static unsigned live, next_id;
static int shutting_down;

static void maybe_finish(void)
{
    if (shutting_down && live == 0 && !uv_is_closing((uv_handle_t *)&server)) {
        uv_close((uv_handle_t *)&server, NULL);
        ctx_uv_close(&cu, NULL); /* nothing is watched any more */
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    ctx_release(c->ctx);
    free(c);
    live--;
    maybe_finish();
}

static void conn_close(struct conn *c)
{
    ctx_uv_unwatch(&cu, &c->w); /* its memory goes with c */
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* The connection's context ended: idle deadline, or the root cancelled. */
static void on_conn_done(ctx_uv_watch_t *w, ctx_t *ctx)
{
    struct conn *c = w->data;
    printf("conn %u: %s, closing\n", c->id,
           ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? "idle" : "shutdown");
    conn_close(c);
}

/* A fresh idle deadline: unwatch and end the old context, watch a new one. */
static int conn_renew(struct conn *c)
{
    if (c->ctx != NULL) {
        ctx_uv_unwatch(&cu, &c->w);
        ctx_cancel(c->ctx);
        ctx_release(c->ctx);
    }
    c->ctx = ctx_with_timeout(root, idle);
    if (c->ctx == NULL)
        return UV_ENOMEM;
    return ctx_uv_watch(&cu, &c->w, c->ctx, on_conn_done);
}

struct wreq {
    uv_write_t req;
    char data[];
};

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* UV_ECANCELED when the connection closed first */
    free(req);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    struct wreq *w = malloc(sizeof *w + hint);
    *buf = uv_buf_init(w ? w->data : NULL, w ? (unsigned)hint : 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    struct wreq *w =
        buf->base ? (struct wreq *)(buf->base - offsetof(struct wreq, data))
                  : NULL;
    if (n <= 0) {
        free(w);
        if (n < 0) { /* EOF or error: end the context, close */
            ctx_cancel(c->ctx);
            conn_close(c);
        }
        return;
    }
    if (ctx_is_done(c->ctx) || conn_renew(c) != 0) {
        free(w);
        conn_close(c);
        return;
    }
    uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, s, &out, 1, on_written) != 0)
        free(w);
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->id = ++next_id;
    c->tcp.data = c;
    c->w.data = c;
    uv_tcp_init(loop, &c->tcp);
    live++;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0 || conn_renew(c) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    printf("conn %u: open\n", c->id);
}

/* The root ended (a signal): stop accepting; the connections' own watches
 * fire for the same cancel and close them. */
static void on_root_done(ctx_uv_watch_t *w, ctx_t *ctx)
{
    (void)w;
    printf("signal %d: shutting down %u connection(s)\n",
           ctx_signal_caught(ctx), live);
    shutting_down = 1;
    uv_read_stop((uv_stream_t *)&server);
    maybe_finish();
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    idle = (argc > 2 ? atoll(argv[2]) : 10000) * CTX_MILLISECOND;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);

    static const int sigs[] = {SIGINT, SIGTERM};
    root = ctx_with_signals(ctx_background(), sigs, 2);
    if (root == NULL) {
        perror("ctx_with_signals");
        return 1;
    }
    static uv_loop_t l;
    loop = &l;
    struct sockaddr_in addr;
    int e = uv_loop_init(loop);
    if (e == 0)
        e = ctx_uv_init(loop, &cu);
    if (e == 0)
        e = ctx_uv_watch(&cu, &root_watch, root, on_root_done);
    if (e == 0)
        e = uv_tcp_init(loop, &server);
    if (e == 0)
        e = uv_ip4_addr("127.0.0.1", port, &addr);
    if (e == 0)
        e = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (e == 0)
        e = uv_listen((uv_stream_t *)&server, 128, on_connection);
    if (e != 0) {
        fprintf(stderr, "uv_server: %s\n", uv_strerror(e));
        return 1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
    printf("listening on 127.0.0.1:%d\n",
           ntohs(((struct sockaddr_in *)&bound)->sin_port));

    uv_run(loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(loop);
    printf("loop closed: %s\n", closed == 0 ? "clean exit" : uv_strerror(closed));
    ctx_cancel(root);
    ctx_release(root);
    return closed == 0 ? 0 : 1;
}
