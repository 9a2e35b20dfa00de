/* libctx-mhd against real libmicrohttpd daemons and raw loopback clients:
 * client hang-up cancels the request context (cause ECONNRESET) in every
 * supported mode, synchronous and asynchronous (suspended) handlers; the
 * propagated deadline, clamped; trace values; graceful shutdown; malformed
 * requests; fds and threads back to their baseline. */
#include "testutil.h"

#include <ctx/mhd.h>
#include <ctx/propagate.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS CTX_MILLISECOND
#define LONG_WAIT (10 * CTX_SECOND * TU_SLOW)
/* "Promptly" for a hang-up: typically well under 1 ms; this bound holds on
 * the 2-core machine at load 15 (up to 90 ms was seen there). */
#define HANGUP_PROMPT (3 * TU_PROMPT)

/* ---- a raw HTTP client -------------------------------------------------- */

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10 * TU_SLOW, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return; /* the server may close early (413, 431) */
        s += k;
        n -= (size_t)k;
    }
}

/* Reads until the peer closes or the buffer is full; returns the status
 * code of the response (0 if none). */
static int read_status(int fd, char *buf, size_t size)
{
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + n, size - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        buf[n] = '\0';
        /* a complete response with Content-Length is enough */
        char *h = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "content-length:");
        if (h != NULL && cl != NULL && cl < h &&
            (size_t)(h + 4 - buf) + strtoul(cl + 15, NULL, 10) <= n)
            break;
        if (n + 1 >= size)
            break;
    }
    buf[n] = '\0';
    int st = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

/* One request on a new connection ("Connection: close"); returns the status. */
static int request(uint16_t port, const char *raw, char *out, size_t size)
{
    int fd = dial(port);
    if (fd < 0)
        return -1;
    send_all(fd, raw, strlen(raw));
    int st = read_status(fd, out, size);
    close(fd);
    return st;
}

/* ---- handlers ----------------------------------------------------------- */

struct probe {
    tu_event_t started, done;
    atomic_int cause, err;
    atomic_llong done_at;
    atomic_llong deadline_left; /* -1: none */
    atomic_int reply_rc;
    bool async;
    bool ignore; /* ignore the context: wait for `release` instead */
    tu_event_t release;
    pthread_t worker;
    atomic_bool have_worker;
    ctx_duration_t work; /* 0: wait for the context (up to LONG_WAIT) */
    char trace[64];
    char state[256];
    bool have_parent;
};

static void probe_init(struct probe *p)
{
    memset(p, 0, sizeof *p);
    tu_event_init(&p->started);
    tu_event_init(&p->done);
    tu_event_init(&p->release);
    atomic_init(&p->deadline_left, -1);
}

static void probe_destroy(struct probe *p)
{
    if (atomic_load(&p->have_worker))
        tu_join_within(p->worker, LONG_WAIT);
    tu_event_destroy(&p->started);
    tu_event_destroy(&p->done);
    tu_event_destroy(&p->release);
}

struct job {
    struct probe *p;
    ctx_t *ctx;
    ctx_mhd_reply_t *reply;
};

/* The work: wait for the context (or `work` time), record how it ended. */
static void work(struct probe *p, ctx_t *ctx, ctx_mhd_reply_t *reply)
{
    if (p->ignore)
        (void)tu_event_wait(&p->release, LONG_WAIT);
    else
        ctx_wait_until(ctx, ctx_now() + (p->work ? p->work : LONG_WAIT));
    atomic_store(&p->done_at, ctx_now());
    atomic_store(&p->err, ctx_err(ctx));
    atomic_store(&p->cause, ctx_cause(ctx));
    atomic_store(&p->reply_rc,
                 ctx_mhd_reply_buffer(reply, 200, "text/plain", "ok\n", 3));
    tu_event_set(&p->done);
}

/* Held while a handler spawns its worker and records it, so that the
 * worker's "done" comes after the record (the test joins what it records). */
static pthread_mutex_t spawn_mu = PTHREAD_MUTEX_INITIALIZER;

static void *worker_main(void *arg)
{
    struct job *j = arg;
    pthread_mutex_lock(&spawn_mu);
    pthread_mutex_unlock(&spawn_mu);
    work(j->p, j->ctx, j->reply);
    ctx_release(j->ctx);
    free(j);
    return NULL;
}

static void probe_handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                          ctx_mhd_reply_t *reply, void *arg)
{
    (void)req;
    struct probe *p = arg;
    ctx_time_t dl;
    if (ctx_deadline(ctx, &dl))
        atomic_store(&p->deadline_left, dl - ctx_now());
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* many at once */
    pthread_mutex_lock(&mu);
    ctx_trace_format(ctx, p->trace, sizeof p->trace);
    uint8_t pid[8];
    p->have_parent = ctx_trace_parent_id(ctx, pid);
    const char *ts = ctx_trace_state(ctx);
    snprintf(p->state, sizeof p->state, "%s", ts ? ts : "");
    pthread_mutex_unlock(&mu);
    tu_event_set(&p->started);
    if (!p->async) {
        work(p, ctx, reply);
        return;
    }
    struct job *j = malloc(sizeof *j);
    assert_non_null(j);
    j->p = p;
    j->ctx = ctx_retain(ctx);
    j->reply = reply;
    pthread_mutex_lock(&spawn_mu);
    p->worker = tu_spawn(worker_main, j);
    atomic_store(&p->have_worker, true);
    pthread_mutex_unlock(&spawn_mu);
}

static void echo_handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                         ctx_mhd_reply_t *reply, void *arg)
{
    (void)ctx;
    (void)arg;
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%s %s %zu", req->method, req->url,
                     req->body_size);
    ctx_mhd_reply_buffer(reply, 200, "text/plain", buf, (size_t)n);
}

static void warm_up(void)
{
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR));
    (void)ctx_done_fd(ctx_background());
}

static ctx_mhd_server_t *start(ctx_mhd_mode_t mode, ctx_mhd_handler_fn *h,
                               void *arg, ctx_duration_t max_deadline)
{
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1", .mode = mode,
                           .max_deadline = max_deadline};
    ctx_mhd_server_t *s = ctx_mhd_start(ctx_background(), &o, h, arg);
    assert_non_null(s);
    assert_true(ctx_mhd_port(s) != 0);
    return s;
}

static const char GET[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

/* ---- hang-up ------------------------------------------------------------ */

static void hangup_case(ctx_mhd_mode_t mode, bool async)
{
    struct probe p;
    probe_init(&p);
    p.async = async;
    ctx_mhd_server_t *s = start(mode, probe_handler, &p, 0);
    int fd = dial(ctx_mhd_port(s));
    assert_true(fd >= 0);
    send_all(fd, GET, strlen(GET));
    assert_true(tu_event_wait(&p.started, LONG_WAIT));
    ctx_time_t t0 = ctx_now();
    close(fd);
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(atomic_load(&p.err), CTX_CANCELED);
    assert_int_equal(atomic_load(&p.cause), ECONNRESET);
    tu_assert_between(atomic_load(&p.done_at) - t0, 0, HANGUP_PROMPT);
    assert_int_equal(atomic_load(&p.reply_rc), ECONNRESET);
    ctx_mhd_stats_t st;
    /* the stop is counted once the reply is in and the handler returned */
    ctx_time_t end = ctx_now() + LONG_WAIT;
    do {
        assert_int_equal(ctx_mhd_stats(s, &st), 0);
        if (st.active == 0)
            break;
        tu_sleep(MS / 2);
    } while (ctx_now() < end);
    assert_int_equal(st.hangups, 1);
    assert_int_equal(st.active, 0);
    tu_assert_between(st.hangup_stop_max, 0, HANGUP_PROMPT);
    assert_int_equal(ctx_mhd_shutdown(s, CTX_SECOND), 0);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

static void test_hangup_poll_sync(void **state)
{
    (void)state;
    hangup_case(CTX_MHD_MODE_POLL, false);
}

static void test_hangup_poll_async(void **state)
{
    (void)state;
    hangup_case(CTX_MHD_MODE_POLL, true);
}

static void test_hangup_tpc_sync(void **state)
{
    (void)state;
    hangup_case(CTX_MHD_MODE_THREAD_PER_CONNECTION, false);
}

static void test_hangup_tpc_async(void **state)
{
    (void)state;
    hangup_case(CTX_MHD_MODE_THREAD_PER_CONNECTION, true);
}

/* A client that sends the next request early (pipelining) is not a
 * hang-up: more data to read must not cancel the running handler. */
static void test_pipelined_is_not_hangup(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    p.work = 150 * MS;
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, probe_handler, &p, 0);
    int fd = dial(ctx_mhd_port(s));
    send_all(fd, GET, strlen(GET));
    assert_true(tu_event_wait(&p.started, LONG_WAIT));
    send_all(fd, GET, strlen(GET)); /* the next one, early */
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(atomic_load(&p.err), 0);
    assert_int_equal(atomic_load(&p.reply_rc), 0);
    assert_true(tu_event_wait_n(&p.done, 2, LONG_WAIT));
    ctx_mhd_stats_t st;
    ctx_time_t end = ctx_now() + LONG_WAIT;
    do {
        ctx_mhd_stats(s, &st);
    } while (st.active != 0 && ctx_now() < end && (tu_sleep(MS / 2), 1));
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.hangups, 0);
    close(fd);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

/* ---- a normal request ---------------------------------------------------- */

static void test_echo_and_body(void **state)
{
    (void)state;
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, echo_handler, NULL, 0);
    char buf[4096];
    const char *req = "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                      "Content-Length: 5\r\n\r\nhello";
    assert_int_equal(request(ctx_mhd_port(s), req, buf, sizeof buf), 200);
    assert_non_null(strstr(buf, "POST /echo 5"));
    ctx_mhd_free(s);
}

/* ---- deadline ----------------------------------------------------------- */

static void deadline_case(const char *timeout_hdr, ctx_duration_t max,
                          ctx_duration_t lo, ctx_duration_t hi)
{
    struct probe p;
    probe_init(&p);
    p.work = 1; /* return at once */
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, probe_handler, &p, max);
    char req[512], buf[4096];
    snprintf(req, sizeof req,
             "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
             timeout_hdr);
    assert_int_equal(request(ctx_mhd_port(s), req, buf, sizeof buf), 200);
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    long long left = atomic_load(&p.deadline_left);
    if (hi < 0)
        assert_int_equal(left, -1);
    else
        tu_assert_between(left, lo, hi);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

static void test_deadline_propagated(void **state)
{
    (void)state;
    /* 300 ms from the caller, the server allows 10 s */
    deadline_case("grpc-timeout: 300m\r\n", 10 * CTX_SECOND,
                  300 * MS - TU_PROMPT, 300 * MS);
}

static void test_deadline_clamped(void **state)
{
    (void)state;
    /* an hour from the caller, the server allows 500 ms */
    deadline_case("grpc-timeout: 1H\r\n", 500 * MS, 500 * MS - TU_PROMPT,
                  500 * MS);
    /* no grpc-timeout: the server's limit */
    deadline_case("", 500 * MS, 500 * MS - TU_PROMPT, 500 * MS);
    /* neither: no deadline */
    deadline_case("", 0, 0, -1);
}

static void test_deadline_malformed_ignored(void **state)
{
    (void)state;
    deadline_case("grpc-timeout: 1x\r\n", 0, 0, -1);
    deadline_case("grpc-timeout: 123456789m\r\n", 0, 0, -1);
    deadline_case("grpc-timeout: 5S\r\ngrpc-timeout: 5S\r\n", 0, 0, -1);
}

static void test_deadline_expired_done_at_birth(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, probe_handler, &p, 0);
    char buf[4096];
    assert_int_equal(request(ctx_mhd_port(s),
                             "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "grpc-timeout: 0n\r\n\r\n",
                             buf, sizeof buf),
                     200);
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(atomic_load(&p.err), CTX_DEADLINE_EXCEEDED);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

/* ---- trace context ------------------------------------------------------ */

static void trace_case(const char *headers, bool want_same_trace,
                       const char *want_state)
{
    static const char tid[] = "4bf92f3577b34da6a3ce929d0e0e4736";
    struct probe p;
    probe_init(&p);
    p.work = 1;
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, probe_handler, &p, 0);
    char req[2048], buf[4096];
    snprintf(req, sizeof req,
             "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
             headers);
    assert_int_equal(request(ctx_mhd_port(s), req, buf, sizeof buf), 200);
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(strlen(p.trace), 55);
    if (want_same_trace) {
        assert_memory_equal(p.trace + 3, tid, 32);
        assert_true(p.have_parent);
        /* a new span id for this hop */
        assert_false(strncmp(p.trace + 36, "00f067aa0ba902b7", 16) == 0);
    } else {
        assert_false(memcmp(p.trace + 3, tid, 32) == 0);
        assert_false(p.have_parent);
    }
    assert_string_equal(p.state, want_state);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

static void test_trace_values(void **state)
{
    (void)state;
    const char *tp =
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
    char h[1024];
    trace_case(tp, true, "");
    snprintf(h, sizeof h, "%stracestate: congo=t61rcWkgMzE\r\n", tp);
    trace_case(h, true, "congo=t61rcWkgMzE");
    /* tracestate split over two lines: joined */
    snprintf(h, sizeof h, "%stracestate: a=1\r\ntracestate: b=2\r\n", tp);
    trace_case(h, true, "a=1,b=2");
    /* duplicated traceparent: invalid, the trace restarts, no tracestate */
    snprintf(h, sizeof h, "%s%stracestate: a=1\r\n", tp, tp);
    trace_case(h, false, "");
    /* invalid (uppercase hex): restart */
    trace_case("traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\r\n"
               "tracestate: a=1\r\n",
               false, "");
    /* none: a new trace */
    trace_case("", false, "");
}

/* ---- shutdown ------------------------------------------------------------ */

struct client {
    uint16_t port;
    int status;
    pthread_t t;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    char buf[4096];
    c->status = request(c->port,
                        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        buf, sizeof buf);
    return NULL;
}

static void test_shutdown_within_grace(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    p.ignore = true; /* finishes when released, whatever its context */
    ctx_mhd_server_t *s = start(CTX_MHD_MODE_POLL, probe_handler, &p, 0);
    struct client c = {.port = ctx_mhd_port(s)};
    c.t = tu_spawn(client_main, &c);
    assert_true(tu_event_wait(&p.started, LONG_WAIT));
    tu_event_set(&p.release); /* finishes well within the grace */
    assert_int_equal(ctx_mhd_shutdown(s, LONG_WAIT), 0);
    tu_join_within(c.t, LONG_WAIT);
    assert_int_equal(c.status, 200);
    assert_int_equal(atomic_load(&p.err), 0);
    /* stopped: nothing listens any more */
    assert_int_equal(dial(c.port), -1);
    assert_int_equal(ctx_mhd_shutdown(s, 0), EALREADY);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

static void shutdown_slow_case(ctx_mhd_mode_t mode, bool async)
{
    struct probe p;
    probe_init(&p);
    p.async = async;
    ctx_mhd_server_t *s = start(mode, probe_handler, &p, 0);
    struct client c = {.port = ctx_mhd_port(s)};
    c.t = tu_spawn(client_main, &c);
    assert_true(tu_event_wait(&p.started, LONG_WAIT));
    ctx_duration_t grace = 100 * MS;
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_mhd_shutdown(s, grace), ETIMEDOUT);
    ctx_time_t took = ctx_now() - t0;
    tu_assert_between(took, grace, grace + 10 * TU_PROMPT); /* MHD_stop_daemon joins threads */
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(atomic_load(&p.err), CTX_CANCELED);
    assert_int_equal(atomic_load(&p.cause), ESHUTDOWN);
    tu_assert_between(atomic_load(&p.done_at) - t0, grace, grace + 10 * TU_PROMPT);
    tu_join_within(c.t, LONG_WAIT);
    assert_int_equal(c.status, 200); /* it replied after its cancel */
    ctx_mhd_stats_t st;
    ctx_mhd_stats(s, &st);
    assert_int_equal(st.shutdown_cancels, 1);
    assert_int_equal(dial(c.port), -1);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

static void test_shutdown_cancels_slow_poll(void **state)
{
    (void)state;
    shutdown_slow_case(CTX_MHD_MODE_POLL, false);
    shutdown_slow_case(CTX_MHD_MODE_POLL, true);
}

static void test_shutdown_cancels_slow_tpc(void **state)
{
    (void)state;
    shutdown_slow_case(CTX_MHD_MODE_THREAD_PER_CONNECTION, false);
    shutdown_slow_case(CTX_MHD_MODE_THREAD_PER_CONNECTION, true);
}

/* An asynchronous handler that never replies, even after its cancel:
 * shutdown answers 503 for it after cancel_wait, and stops anyway. */
static ctx_mhd_reply_t *stuck_reply;
static tu_event_t stuck_started;

static void stuck_handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                          ctx_mhd_reply_t *reply, void *arg)
{
    (void)ctx;
    (void)req;
    (void)arg;
    stuck_reply = reply;
    tu_event_set(&stuck_started);
}

static void test_shutdown_stuck_async_answered(void **state)
{
    (void)state;
    tu_event_init(&stuck_started);
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1",
                           .cancel_wait = 50 * MS};
    ctx_mhd_server_t *s = ctx_mhd_start(ctx_background(), &o, stuck_handler,
                                        NULL);
    assert_non_null(s);
    struct client c = {.port = ctx_mhd_port(s)};
    c.t = tu_spawn(client_main, &c);
    assert_true(tu_event_wait(&stuck_started, LONG_WAIT));
    ctx_time_t t0 = ctx_now();
    assert_int_equal(ctx_mhd_shutdown(s, 50 * MS), ETIMEDOUT);
    tu_assert_between(ctx_now() - t0, 100 * MS, 100 * MS + 10 * TU_PROMPT);
    tu_join_within(c.t, LONG_WAIT);
    assert_int_equal(c.status, 503);
    ctx_mhd_free(s);
    /* the late reply is refused and frees what is left */
    assert_int_equal(ctx_mhd_reply(stuck_reply, 200, NULL), ESHUTDOWN);
    tu_event_destroy(&stuck_started);
}

/* The root context: cancelling it cancels every running request. */
static void test_root_cancel(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1"};
    ctx_mhd_server_t *s = ctx_mhd_start(root, &o, probe_handler, &p);
    assert_non_null(s);
    struct client c = {.port = ctx_mhd_port(s)};
    c.t = tu_spawn(client_main, &c);
    assert_true(tu_event_wait(&p.started, LONG_WAIT));
    ctx_cancel_cause(root, EOWNERDEAD);
    assert_true(tu_event_wait(&p.done, LONG_WAIT));
    assert_int_equal(atomic_load(&p.cause), EOWNERDEAD);
    tu_join_within(c.t, LONG_WAIT);
    ctx_mhd_free(s);
    ctx_release(root);
    probe_destroy(&p);
}

/* ---- malformed input ---------------------------------------------------- */

static void test_malformed(void **state)
{
    (void)state;
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1",
                           .max_body = 1000, .max_header_bytes = 8192};
    ctx_mhd_server_t *s = ctx_mhd_start(ctx_background(), &o, echo_handler,
                                        NULL);
    assert_non_null(s);
    uint16_t port = ctx_mhd_port(s);
    char buf[8192];
    size_t big = 64 * 1024;
    char *req = malloc(big + 256);
    assert_non_null(req);

    /* an oversized header: 431 (or 413 from libmicrohttpd for the line) */
    int n = sprintf(req, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'a', big);
    strcpy(req + n + big, "\r\n\r\n");
    int st = request(port, req, buf, sizeof buf);
    assert_true(st == 431 || st == 413);
    /* an oversized traceparent, likewise */
    n = sprintf(req, "GET / HTTP/1.1\r\nHost: t\r\ntraceparent: 00-");
    memset(req + n, 'a', big);
    strcpy(req + n + big, "\r\n\r\n");
    st = request(port, req, buf, sizeof buf);
    assert_true(st == 431 || st == 413);
    /* a too long URL */
    n = sprintf(req, "GET /");
    memset(req + n, 'u', big);
    strcpy(req + n + big, " HTTP/1.1\r\nHost: t\r\n\r\n");
    st = request(port, req, buf, sizeof buf);
    assert_true(st == 414 || st == 431 || st == 413);
    /* a body over max_body, announced */
    assert_int_equal(request(port,
                             "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
                             buf, sizeof buf),
                     413);
    /* ... and chunked */
    n = sprintf(req, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        n += sprintf(req + n, "400\r\n");
        memset(req + n, 'b', 1024);
        n += 1024;
        n += sprintf(req + n, "\r\n");
    }
    n += sprintf(req + n, "0\r\n\r\n");
    assert_int_equal(request(port, req, buf, sizeof buf), 413);
    /* garbage */
    assert_int_equal(request(port, "\x01\x02 garbage\r\n\r\n", buf, sizeof buf),
                     400);
    assert_int_equal(request(port, "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                             buf, sizeof buf),
                     400);
    /* a bad Content-Length */
    assert_int_equal(request(port,
                             "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x1\r\n\r\n",
                             buf, sizeof buf),
                     400);
    /* bad bytes in the propagated headers are ignored, not fatal */
    assert_int_equal(request(port,
                             "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "grpc-timeout: \xff\xfe\r\ntraceparent: \x7f-00\r\n"
                             "tracestate: ,,,==\r\nbaggage: %%%;;\r\n\r\n",
                             buf, sizeof buf),
                     200);
    /* the server still serves */
    assert_int_equal(request(port,
                             "GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                             buf, sizeof buf),
                     200);
    free(req);
    ctx_mhd_stats_t stt;
    ctx_mhd_stats(s, &stt);
    assert_true(stt.rejected >= 2);
    ctx_mhd_free(s);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1"};
    errno = 0;
    assert_null(ctx_mhd_start(NULL, &o, echo_handler, NULL));
    assert_int_equal(errno, EINVAL);
    assert_null(ctx_mhd_start(ctx_background(), NULL, echo_handler, NULL));
    assert_int_equal(errno, EINVAL);
    assert_null(ctx_mhd_start(ctx_background(), &o, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    ctx_mhd_options_t bad = {.bind_address = "not an address"};
    assert_null(ctx_mhd_start(ctx_background(), &bad, echo_handler, NULL));
    assert_int_equal(errno, EINVAL);
    ctx_mhd_options_t badm = {.mode = (ctx_mhd_mode_t)7};
    assert_null(ctx_mhd_start(ctx_background(), &badm, echo_handler, NULL));
    assert_int_equal(errno, EINVAL);
    /* a port in use */
    ctx_mhd_server_t *s = ctx_mhd_start(ctx_background(), &o, echo_handler, NULL);
    assert_non_null(s);
    ctx_mhd_options_t same = {.bind_address = "127.0.0.1",
                              .port = ctx_mhd_port(s)};
    assert_null(ctx_mhd_start(ctx_background(), &same, echo_handler, NULL));
    assert_true(errno != 0);
    ctx_mhd_free(s);
    assert_int_equal(ctx_mhd_reply(NULL, 200, NULL), EINVAL);
    assert_int_equal(ctx_mhd_reply_buffer(NULL, 200, NULL, "", 0), EINVAL);
    assert_int_equal(ctx_mhd_shutdown(NULL, 0), EINVAL);
    assert_int_equal(ctx_mhd_stats(NULL, NULL), EINVAL);
    assert_int_equal(ctx_mhd_port(NULL), 0);
    assert_null(ctx_mhd_daemon(NULL));
    ctx_mhd_free(NULL);
}

/* Many hang-ups at once in a pool of polling threads: each handler is
 * cancelled promptly, none is missed. */
static void test_many_hangups(void **state)
{
    (void)state;
    enum { N = 40 };
    struct probe p;
    probe_init(&p);
    p.async = false;
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1",
                           .mode = CTX_MHD_MODE_THREAD_PER_CONNECTION};
    ctx_mhd_server_t *s = ctx_mhd_start(ctx_background(), &o, probe_handler, &p);
    assert_non_null(s);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = dial(ctx_mhd_port(s));
        assert_true(fds[i] >= 0);
        send_all(fds[i], GET, strlen(GET));
    }
    assert_true(tu_event_wait_n(&p.started, N, LONG_WAIT));
    for (int i = 0; i < N; i++)
        close(fds[i]);
    assert_true(tu_event_wait_n(&p.done, N, LONG_WAIT));
    ctx_mhd_stats_t st;
    ctx_time_t end = ctx_now() + LONG_WAIT;
    do {
        ctx_mhd_stats(s, &st);
    } while (st.active != 0 && ctx_now() < end && (tu_sleep(MS), 1));
    assert_int_equal(st.hangups, N);
    /* 40 blocked threads each to be woken and scheduled on 2 cores */
    tu_assert_between(st.hangup_stop_max, 0, 10 * TU_PROMPT);
    ctx_mhd_free(s);
    probe_destroy(&p);
}

int main(void)
{
    warm_up();
    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_and_body, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_hangup_poll_sync, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_hangup_poll_async, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_hangup_tpc_sync, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_hangup_tpc_async, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_is_not_hangup, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_many_hangups, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_propagated, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_clamped, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_malformed_ignored, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_expired_done_at_birth, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_trace_values, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_within_grace, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_cancels_slow_poll, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_cancels_slow_tpc, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_stuck_async_answered, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_root_cancel, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_malformed, tu_count_setup, tu_count_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, tu_count_setup, tu_count_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
