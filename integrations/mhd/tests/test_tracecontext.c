/* The tracecontext_service example as a W3C Trace Context forwarding
 * service: a scripted client sends traceparent/tracestate variations and a
 * loopback receiver (a libctx-mhd server) records what the service
 * forwarded: the same trace id with a new parent id and the tracestate, or,
 * for an invalid traceparent, a new trace id and no tracestate. */
#include "testutil.h"

#include <ctx/mhd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TRACECONTEXT_SERVICE
#error "TRACECONTEXT_SERVICE: the path of the example program"
#endif

#define LONG_WAIT (10 * CTX_SECOND * TU_SLOW)

/* ---- the receiver ------------------------------------------------------- */

struct hit {
    char tp[256];
    char ts[1024];
    int ntp;
    char body[256];
};

static struct {
    pthread_mutex_t mu;
    struct hit hits[16];
    int n;
} rx = {PTHREAD_MUTEX_INITIALIZER, {{{0}}}, 0};
static tu_event_t rx_ev;

static enum MHD_Result count_tp(void *cls, enum MHD_ValueKind k,
                                const char *key, const char *value)
{
    (void)k;
    (void)value;
    if (strcasecmp(key, "traceparent") == 0)
        (*(int *)cls)++;
    return MHD_YES;
}

static void receiver(ctx_t *ctx, const ctx_mhd_request_t *req,
                     ctx_mhd_reply_t *reply, void *arg)
{
    (void)ctx;
    (void)arg;
    pthread_mutex_lock(&rx.mu);
    if (rx.n < 16) {
        struct hit *h = &rx.hits[rx.n++];
        const char *tp = MHD_lookup_connection_value(req->connection,
                                                     MHD_HEADER_KIND, "traceparent");
        const char *ts = MHD_lookup_connection_value(req->connection,
                                                     MHD_HEADER_KIND, "tracestate");
        snprintf(h->tp, sizeof h->tp, "%s", tp ? tp : "");
        snprintf(h->ts, sizeof h->ts, "%s", ts ? ts : "");
        snprintf(h->body, sizeof h->body, "%s", req->body);
        h->ntp = 0;
        MHD_get_connection_values(req->connection, MHD_HEADER_KIND, count_tp,
                                  &h->ntp);
    }
    pthread_mutex_unlock(&rx.mu);
    tu_event_set(&rx_ev);
    ctx_mhd_reply_buffer(reply, 200, "text/plain", "", 0);
}

/* ---- the service -------------------------------------------------------- */

static pid_t svc_pid;
static uint16_t svc_port, rx_port;
static ctx_mhd_server_t *rx_srv;
static FILE *svc_out;

static int start_all(void **state)
{
    (void)state;
    tu_event_init(&rx_ev);
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1"};
    rx_srv = ctx_mhd_start(ctx_background(), &o, receiver, NULL);
    if (rx_srv == NULL)
        return -1;
    rx_port = ctx_mhd_port(rx_srv);
    int p[2];
    if (pipe(p) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    char *argv[] = {TRACECONTEXT_SERVICE, "--port", "0", NULL};
    extern char **environ;
    if (posix_spawn(&svc_pid, argv[0], &fa, NULL, argv, environ) != 0)
        return -1;
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    svc_out = fdopen(p[0], "r");
    unsigned port = 0;
    if (svc_out == NULL || fscanf(svc_out, "listening on port %u", &port) != 1)
        return -1;
    svc_port = (uint16_t)port;
    return 0;
}

static int stop_all(void **state)
{
    (void)state;
    kill(svc_pid, SIGTERM);
    int st = 0;
    waitpid(svc_pid, &st, 0);
    char line[128] = "";
    /* it says it stopped, gracefully, and exits 0 */
    while (fgets(line, sizeof line, svc_out) != NULL &&
           strncmp(line, "stopped", 7) != 0)
        ;
    fclose(svc_out);
    ctx_mhd_free(rx_srv);
    tu_event_destroy(&rx_ev);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        strcmp(line, "stopped (graceful)\n") != 0) {
        fprintf(stderr, "service exit status %d, last line %s\n", st, line);
        return -1;
    }
    return 0;
}

static int post_test(const char *headers, const char *json)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(svc_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10 * TU_SLOW, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "POST /test HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s",
                     headers, strlen(json), json);
    assert_true(send(fd, req, (size_t)n, MSG_NOSIGNAL) == n);
    char buf[4096];
    size_t got = 0;
    ssize_t k;
    while ((k = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
        got += (size_t)k;
    buf[got] = '\0';
    close(fd);
    int st = 0;
    sscanf(buf, "HTTP/1.1 %d", &st);
    return st;
}

/* Sends one /test call with `n` forwards to the receiver; returns the hits. */
static int forward(const char *headers, int n, struct hit *out)
{
    pthread_mutex_lock(&rx.mu);
    rx.n = 0;
    pthread_mutex_unlock(&rx.mu);
    long before = tu_event_get(&rx_ev);
    char json[2048];
    int k = snprintf(json, sizeof json, "[");
    for (int i = 0; i < n; i++)
        k += snprintf(json + k, sizeof json - (size_t)k,
                      "%s{\"url\": \"http://127.0.0.1:%u/rx\", \"arguments\": [{\"n\": %d}]}",
                      i ? ", " : "", (unsigned)rx_port, i);
    snprintf(json + k, sizeof json - (size_t)k, "]");
    assert_int_equal(post_test(headers, json), 200);
    assert_true(tu_event_wait_n(&rx_ev, before + n, LONG_WAIT));
    pthread_mutex_lock(&rx.mu);
    int got = rx.n;
    memcpy(out, rx.hits, sizeof rx.hits);
    pthread_mutex_unlock(&rx.mu);
    return got;
}

static const char TID[] = "4bf92f3577b34da6a3ce929d0e0e4736";
static const char PID[] = "00f067aa0ba902b7";

static void assert_valid_tp(const struct hit *h)
{
    assert_int_equal(h->ntp, 1);
    assert_int_equal(strlen(h->tp), 55);
    assert_memory_equal(h->tp, "00-", 3);
    for (int i = 3; i < 55; i++) {
        char c = h->tp[i];
        if (i == 35 || i == 52)
            assert_int_equal(c, '-');
        else
            assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
    assert_false(strncmp(h->tp + 3, "00000000000000000000000000000000", 32) == 0);
    assert_false(strncmp(h->tp + 36, "0000000000000000", 16) == 0);
}

static void test_valid_forwarded(void **state)
{
    (void)state;
    struct hit h[16];
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "traceparent: 00-%s-%s-01\r\ntracestate: foo=1,bar=2\r\n", TID, PID);
    assert_int_equal(forward(hdr, 2, h), 2);
    for (int i = 0; i < 2; i++) {
        assert_valid_tp(&h[i]);
        assert_memory_equal(h[i].tp + 3, TID, 32);   /* same trace */
        assert_false(memcmp(h[i].tp + 36, PID, 16) == 0); /* new parent */
        assert_memory_equal(h[i].tp + 53, "01", 2);  /* sampled kept */
        assert_string_equal(h[i].ts, "foo=1,bar=2");
    }
    /* each forward is its own span */
    assert_false(memcmp(h[0].tp + 36, h[1].tp + 36, 16) == 0);
    assert_string_equal(h[0].body, "[{\"n\":0}]");
    assert_string_equal(h[1].body, "[{\"n\":1}]");
}

static void test_higher_version_parsed(void **state)
{
    (void)state;
    struct hit h[16];
    char hdr[512];
    /* a future version with extra fields: parsed as 00, sent as 00 */
    snprintf(hdr, sizeof hdr, "traceparent: cc-%s-%s-01-what-the-future\r\n",
             TID, PID);
    assert_int_equal(forward(hdr, 1, h), 1);
    assert_valid_tp(&h[0]);
    assert_memory_equal(h[0].tp + 3, TID, 32);
}

static void restart_case(const char *hdr)
{
    struct hit h[16];
    assert_int_equal(forward(hdr, 1, h), 1);
    assert_valid_tp(&h[0]);
    assert_false(memcmp(h[0].tp + 3, TID, 32) == 0); /* a new trace */
    assert_string_equal(h[0].ts, "");                /* tracestate dropped */
}

static void test_invalid_restarts(void **state)
{
    (void)state;
    char hdr[512];
    /* uppercase hex */
    restart_case("traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\r\n"
                 "tracestate: foo=1\r\n");
    /* all-zero trace id, all-zero parent id, version ff */
    restart_case("traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n"
                 "tracestate: foo=1\r\n");
    restart_case("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01\r\n"
                 "tracestate: foo=1\r\n");
    restart_case("traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                 "tracestate: foo=1\r\n");
    /* version 00 with trailing data, wrong lengths, garbage */
    restart_case("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x\r\n"
                 "tracestate: foo=1\r\n");
    restart_case("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01\r\n"
                 "tracestate: foo=1\r\n");
    restart_case("traceparent: \x01\x02\x03\r\ntracestate: foo=1\r\n");
    /* duplicated traceparent */
    snprintf(hdr, sizeof hdr,
             "traceparent: 00-%s-%s-01\r\ntraceparent: 00-%s-%s-01\r\n"
             "tracestate: foo=1\r\n",
             TID, PID, TID, PID);
    restart_case(hdr);
    /* none at all */
    restart_case("tracestate: foo=1\r\n");
}

static void test_tracestate_lines_combined(void **state)
{
    (void)state;
    struct hit h[16];
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "traceparent: 00-%s-%s-00\r\ntracestate: foo=1\r\ntracestate: bar=2\r\n",
             TID, PID);
    assert_int_equal(forward(hdr, 1, h), 1);
    assert_memory_equal(h[0].tp + 3, TID, 32);
    assert_memory_equal(h[0].tp + 53, "00", 2);
    assert_string_equal(h[0].ts, "foo=1,bar=2");
}

static void test_bad_requests(void **state)
{
    (void)state;
    assert_int_equal(post_test("", "not json"), 400);
    assert_int_equal(post_test("", "{\"url\": 1}"), 400);
    /* an empty list: nothing forwarded, 200 */
    assert_int_equal(post_test("", "[]"), 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_forwarded),
        cmocka_unit_test(test_higher_version_parsed),
        cmocka_unit_test(test_invalid_restarts),
        cmocka_unit_test(test_tracestate_lines_combined),
        cmocka_unit_test(test_bad_requests),
    };
    return cmocka_run_group_tests(tests, start_all, stop_all);
}
