/* Seed example 6, the server: HTTP/1.1 on loopback; GET / answers "quick
 * response" or, at random (seeded), sleeps 10 s before "slow response".
 * Better than the seed:
 *  - each request's handler runs under a context derived from the server's
 *    root context, cancelled when the client hangs up, so a slow handler
 *    stops within milliseconds instead of sleeping on;
 *  - SIGINT/SIGTERM (a signal context) stop the accept loop; in-flight
 *    handlers get a grace period, then their contexts are cancelled.
 * Usage: ex6_server [--port N] [--port-file F] [--seed N | --pattern qsq..]
 *                   [--slow-ms 10000] [--grace-ms 2000]
 * GET /slow and GET /quick force the choice. */
#define _GNU_SOURCE
#include "common.h"

#include <ctx/group.h>
#include <ctx/sigctx.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static ctx_duration_t slow_time = 10 * CTX_SECOND;
static ctx_duration_t grace = 2 * CTX_SECOND;
static const char *pattern;
static unsigned seed = 1;
static pthread_mutex_t rng_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int next_id;

struct conn {
    int fd, id;
    ctx_t *req;                /* the request's context */
    _Atomic ctx_time_t hup_at; /* when the hang-up was seen, or 0 */
};

/* rand.Intn(2) == 0 means slow, as in the seed; --pattern overrides. */
static bool pick_slow(int id)
{
    if (pattern != NULL && *pattern != '\0')
        return pattern[(size_t)(id - 1) % strlen(pattern)] == 's';
    pthread_mutex_lock(&rng_mu);
    int n = rand_r(&seed) % 2;
    pthread_mutex_unlock(&rng_mu);
    return n == 0;
}

/* Watches the connection: the client hanging up cancels the request. */
static int watch_hangup(ctx_t *ctx, void *arg)
{
    struct conn *c = arg;
    int r = ctx_wait_fd(ctx, c->fd, POLLRDHUP);
    if (r > 0) {
        atomic_store(&c->hup_at, ctx_now());
        ctx_cancel_cause(c->req, ECONNRESET);
    }
    return 0;
}

static void respond(ctx_t *ctx, struct conn *c, int status, const char *body)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, status == 200 ? "OK" : "Service Unavailable",
                     strlen(body), body);
    ctx_write_all(ctx, c->fd, buf, (size_t)n, NULL);
}

/* Reads the request head; returns the path (in buf) or NULL. */
static char *read_request(struct conn *c, char *buf, size_t size)
{
    ctx_t *rctx = ctx_with_timeout(c->req, 5 * CTX_SECOND);
    size_t got = 0;
    char *path = NULL;
    while (got < size - 1) {
        ssize_t r = ctx_read(rctx, c->fd, buf + got, size - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL) {
            char *sp = strchr(buf, ' ');
            if (strncmp(buf, "GET ", 4) == 0 && sp != NULL) {
                path = sp + 1;
                path[strcspn(path, " \r\n")] = '\0';
            }
            break;
        }
    }
    ctx_cancel(rctx);
    ctx_release(rctx);
    return path;
}

/* func indexHandler(w http.ResponseWriter, r *http.Request), with r.Context()
 */
static void index_handler(struct conn *c, bool slow)
{
    if (!slow) {
        respond(c->req, c, 200, "quick response");
        ex_log("server", "#%d quick response sent", c->id);
        return;
    }
    ctx_time_t t0 = ctx_now();
    int err = ctx_sleep(c->req, slow_time); /* the slow work, cancellable */
    ctx_time_t stopped = ctx_now();
    if (err == 0) {
        respond(c->req, c, 200, "slow response");
        ex_log("server", "#%d slow response sent", c->id);
    } else if (ctx_cause(c->req) == ECONNRESET) {
        ctx_time_t hup = atomic_load(&c->hup_at);
        ex_log("server",
               "#%d client hung up after %.1f ms; handler stopped %.2f ms "
               "later (%s: %s)",
               c->id, (double)(hup - t0) / 1e6, (double)(stopped - hup) / 1e6,
               ctx_strerror(err), ctx_strerror(ctx_cause(c->req)));
    } else {
        /* c->req is cancelled: answer under a short context of its own
         * that keeps the request's values (Go's WithoutCancel). */
        ctx_t *keep = ctx_without_cancel(c->req);
        ctx_t *wctx = ctx_with_timeout(keep, 500 * CTX_MILLISECOND);
        respond(wctx, c, 503, "server shutting down");
        ctx_cancel(wctx);
        ctx_release(wctx);
        ctx_release(keep);
        ex_log("server",
               "#%d handler cancelled by the shutdown after %.0f ms "
               "(%s); answered 503",
               c->id, (double)(stopped - t0) / 1e6, ctx_strerror(err));
    }
}

static int handle_conn(ctx_t *server_ctx, void *arg)
{
    struct conn *c = arg;
    c->req = ctx_with_cancel(server_ctx);
    char buf[2048];
    char *path = c->req != NULL ? read_request(c, buf, sizeof buf) : NULL;
    if (path != NULL) {
        bool slow = strcmp(path, "/slow") == 0 ||
                    (strcmp(path, "/quick") != 0 && pick_slow(c->id));
        ex_log("server", "#%d GET %s -> %s handler", c->id, path,
               slow ? "slow (10 s)" : "quick");
        ctx_group_t *watchers = ctx_group_new(c->req, 0);
        if (watchers != NULL)
            ctx_group_go(watchers, watch_hangup, c);
        index_handler(c, slow);
        ctx_cancel(c->req); /* the handler is done: stop the watcher */
        ctx_group_free(watchers);
    }
    close(c->fd);
    ctx_cancel(c->req);
    ctx_release(c->req);
    free(c);
    return 0;
}

static void cancel_fn(void *arg)
{
    ctx_cancel_cause(arg, ESHUTDOWN);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fd, 64) < 0) {
        perror("ex6_server: listen");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    ex_init();
    int port = 0;
    const char *port_file = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--port-file") == 0)
            port_file = argv[i + 1];
        else if (strcmp(argv[i], "--seed") == 0)
            seed = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--pattern") == 0)
            pattern = argv[i + 1];
        else if (strcmp(argv[i], "--slow-ms") == 0)
            slow_time = atoll(argv[i + 1]) * CTX_MILLISECOND;
        else if (strcmp(argv[i], "--grace-ms") == 0)
            grace = atoll(argv[i + 1]) * CTX_MILLISECOND;
    }
    /* The root: cancelled by SIGINT or SIGTERM (signal.NotifyContext). */
    static const int sigs[] = {SIGINT, SIGTERM};
    ctx_t *root = ctx_with_signals(ctx_background(), sigs, 2);
    /* Handlers' root: not the signal context, so that a signal stops the
     * accept loop while in-flight handlers get their grace period. */
    ctx_t *base = ctx_with_cancel(ctx_background());
    ctx_group_t *handlers = ctx_group_new(base, 0);
    if (root == NULL || base == NULL || handlers == NULL) {
        fprintf(stderr, "ex6_server: %s\n", ctx_strerror(errno));
        return 1;
    }

    int l = listen_on(port);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &alen);
    port = ntohs(a.sin_port);
    ex_log("server", "listening on http://127.0.0.1:%d (pid %d)", port,
           (int)getpid());
    if (port_file != NULL) {
        FILE *f = fopen(port_file, "w");
        if (f != NULL) {
            fprintf(f, "%d\n", port);
            fclose(f);
        }
    }

    for (;;) {
        int fd = ctx_accept(root, l, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (ctx_is_done(root))
                break;
            ex_log("server", "accept: %s", ctx_strerror(errno));
            ctx_sleep(root, 10 * CTX_MILLISECOND);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->id = atomic_fetch_add(&next_id, 1) + 1;
        if (ctx_group_go(handlers, handle_conn, c) != 0) {
            close(fd);
            free(c);
        }
    }
    close(l);
    int sig = ctx_signal_caught(root);
    unsigned inflight = ctx_group_running(handlers);
    ex_log("server",
           "SIG%s: shutting down; no new connections; %u handler(s) "
           "in flight, grace %lld ms",
           sig != 0 ? sigabbrev_np(sig) : "NONE", inflight,
           (long long)(grace / CTX_MILLISECOND));
    /* Shutdown(ctx): wait for the handlers, cancel them at the deadline. */
    ctx_t *sd = ctx_with_timeout(ctx_background(), grace);
    ctx_after_t *reg = ctx_after_func(sd, cancel_fn, base);
    ctx_group_wait(handlers);
    bool in_time = ctx_after_stop(reg);
    ex_log("server", "shutdown complete: %s",
           in_time ? "every handler finished within the grace period"
                   : "grace period over, remaining handlers were cancelled");
    ctx_release(sd);
    ctx_group_free(handlers);
    ctx_cancel(base);
    ctx_release(base);
    ctx_cancel(root);
    ctx_release(root);
    return 0;
}
