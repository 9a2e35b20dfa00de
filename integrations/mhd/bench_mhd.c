/*
 * Per-request cost of libctx-mhd's context machinery: the same
 * libmicrohttpd daemon (internal polling thread, loopback) answering a
 * small GET, once from a plain MHD_AccessHandlerCallback and once through
 * ctx_mhd_start() (request context from the propagated headers, hang-up
 * watch, reply). One in-process client sends N sequential requests on a
 * keep-alive connection; each round measures both servers, alternating,
 * and the medians of the per-request times are reported.
 *
 *     bench_mhd [rounds] [requests per round]
 *
 * Prints a Markdown section (no target: "measured").
 */
#include <ctx.h>
#include <ctx/mhd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REQ[] =
    "GET /fast HTTP/1.1\r\nHost: b\r\n"
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    "grpc-timeout: 5S\r\n\r\n";

static enum MHD_Result raw_ahc(void *cls, struct MHD_Connection *conn,
                               const char *url, const char *method,
                               const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload;
    static int first;
    if (*con_cls == NULL) {
        *con_cls = &first;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(
        5, (void *)"fast\n", MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    enum MHD_Result ok = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ok;
}

static void ctx_handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                        ctx_mhd_reply_t *reply, void *arg)
{
    (void)ctx;
    (void)req;
    (void)arg;
    ctx_mhd_reply_buffer(reply, 200, "text/plain", "fast\n", 5);
}

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request, its whole response read (headers + Content-Length body). */
static void roundtrip(int fd)
{
    if (send(fd, REQ, sizeof REQ - 1, 0) != (ssize_t)(sizeof REQ - 1)) {
        perror("send");
        exit(1);
    }
    char buf[2048];
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (k <= 0) {
            fprintf(stderr, "bench_mhd: connection closed\n");
            exit(1);
        }
        n += (size_t)k;
        buf[n] = '\0';
        char *h = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "content-length:");
        if (h != NULL && cl != NULL &&
            (size_t)(h + 4 - buf) + strtoul(cl + 15, NULL, 10) <= n)
            return;
    }
}

/* ns per request over n keep-alive requests. */
static double run(uint16_t port, int n)
{
    int fd = dial(port);
    for (int i = 0; i < 50; i++) /* warm */
        roundtrip(fd);
    ctx_time_t t0 = ctx_now();
    for (int i = 0; i < n; i++)
        roundtrip(fd);
    double ns = (double)(ctx_now() - t0) / n;
    close(fd);
    return ns;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    int n = argc > 2 ? atoi(argv[2]) : 3000;
    if (rounds < 1 || rounds > 100 || n < 1)
        return 2;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, raw_ahc,
                         NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1"};
    ctx_mhd_server_t *srv = ctx_mhd_start(ctx_background(), &o, ctx_handler, NULL);
    if (d == NULL || srv == NULL) {
        fprintf(stderr, "bench_mhd: cannot start the servers\n");
        return 1;
    }
    uint16_t raw_port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    double raw[100], lib[100];
    for (int r = 0; r < rounds; r++) {
        raw[r] = run(raw_port, n);
        lib[r] = run(ctx_mhd_port(srv), n);
    }
    double mr = median(raw, rounds), ml = median(lib, rounds);
    printf("### libctx-mhd: per-request cost of the context machinery\n\n");
    printf("| workload | raw median | libctx median | ratio | target | met? |\n");
    printf("|---|---|---|---|---|---|\n");
    printf("| keep-alive GET on loopback, MHD internal polling thread, "
           "traceparent + grpc-timeout (%d requests x %d rounds) | %.1f us | "
           "%.1f us | %.2f | none | measured |\n",
           n, rounds, mr / 1000, ml / 1000, ml / mr);
    printf("\nPer request: +%.1f us (request context with propagated deadline "
           "and trace, hang-up watch, reply).\n",
           (ml - mr) / 1000);
    ctx_mhd_free(srv);
    MHD_stop_daemon(d);
    return 0;
}
