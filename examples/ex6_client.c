/* Seed example 6, the client: calls the server with a 100 ms timeout and
 * prints "call api timeout" or the response. Connect, write and read all
 * honour the context, so on timeout the call returns at once and closing
 * the socket tells the server that we hung up.
 * Usage: ex6_client [--timeout-ms 100] [--path /] PORT */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* doCall(ctx): 0 = response, CTX_DEADLINE_EXCEEDED = timeout, else error */
static int do_call(ctx_t *ctx, int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[256], resp[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Connection: close\r\n\r\n",
                     path, port);
    size_t got = 0;
    int err = 0;
    if (ctx_connect(ctx, fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        ctx_write_all(ctx, fd, req, (size_t)n, NULL) < 0) {
        err = errno;
    } else {
        for (;;) { /* ioutil.ReadAll(resp.Body), Connection: close */
            ssize_t r = ctx_read(ctx, fd, resp + got, sizeof resp - 1 - got);
            if (r < 0)
                err = errno;
            if (r <= 0 || got + (size_t)r >= sizeof resp - 1)
                break;
            got += (size_t)r;
        }
    }
    close(fd); /* on timeout: the server sees the hang-up */
    if (err == CTX_DEADLINE_EXCEEDED || err == CTX_CANCELED) {
        ex_log("client", "call api timeout (%s)", ctx_strerror(err));
        return err;
    }
    if (err != 0) {
        ex_log("client", "call server api failed, err: %s", ctx_strerror(err));
        return err;
    }
    resp[got] = '\0';
    const char *body = strstr(resp, "\r\n\r\n");
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    ex_log("client", "call server api success: HTTP %d, resp: %s", status,
           body != NULL ? body + 4 : "");
    return 0;
}

int main(int argc, char **argv)
{
    ex_init();
    long timeout_ms = 100;
    const char *path = "/";
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--path") == 0 && i + 1 < argc)
            path = argv[++i];
        else
            port = atoi(argv[i]);
    }
    if (port <= 0) {
        fprintf(stderr, "usage: ex6_client [--timeout-ms N] [--path P] PORT\n");
        return 1;
    }
    /* ctx, cancel := context.WithTimeout(context.Background(), 100ms) */
    ctx_t *ctx CTX_DEFER_CANCEL =
        ctx_with_timeout(ctx_background(), timeout_ms * CTX_MILLISECOND);
    int err = do_call(ctx, port, path);
    return err == 0 ? 0 : err == CTX_DEADLINE_EXCEEDED ? 2 : 1;
}
