/* libctx-mhd: request contexts for GNU libmicrohttpd (see <ctx/mhd.h>). */
#include <ctx/mhd.h>
#include <ctx/propagate.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define DEFAULT_HEADER_BYTES ((size_t)32 << 10)
#define STOP_TOKEN UINT64_MAX

/* Where a request is. */
enum phase {
    PH_BODY,    /* headers in, body arriving */
    PH_RUNNING, /* handler started, no reply queued with MHD yet */
    PH_DONE     /* a response was queued with MHD */
};

/* One request. The reply handle the handler gets is this struct. Two
 * owners: libmicrohttpd's side (until the completion notification) and,
 * from the handler's start, the handler's side (until its reply). */
struct ctx_mhd_reply {
    ctx_mhd_server_t *srv;
    struct MHD_Connection *conn;
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* thread-per-connection: the reply has come */
    ctx_mhd_request_t info;
    char *body;
    size_t body_len, body_cap;
    bool body_too_big;
    enum phase phase;
    ctx_t *cancel; /* the cancellable base of the request's context */
    ctx_t *ctx;    /* what the handler got */
    /* under mu */
    bool returned;  /* the handler has returned */
    bool replied;   /* a reply is stored (by the handler or by shutdown) */
    bool forced;    /* shutdown answered for the handler */
    bool suspended; /* MHD_suspend_connection() in force */
    bool finished;  /* watch removed and accounting done */
    unsigned status;
    struct MHD_Response *resp;
    /* under srv->mu */
    bool started; /* the handler has been called: cancel is set */
    bool resuming; /* MHD_resume_connection() called, not yet processed */
    bool hung;
    bool listed;
    ctx_time_t hung_at;
    int slot; /* watcher slot or -1 */
    int fd;
    struct ctx_mhd_reply *prev, *next; /* srv's open requests */
};

typedef struct ctx_mhd_reply req_t;

struct slot {
    req_t *r;
    uint32_t gen;
    int next_free;
};

struct ctx_mhd_server {
    ctx_t *root;
    ctx_mhd_options_t o;
    ctx_mhd_handler_fn *handler;
    void *arg;
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* open requests or active handlers changed */
    req_t *open;       /* requests between the first callback and completion */
    uint64_t nopen;
    uint64_t resuming; /* requests with resuming set */
    bool shutting_down, shut;
    ctx_mhd_stats_t st;
    /* the hang-up watcher */
    int epfd, evfd;
    pthread_t watcher;
    struct slot *slots;
    int nslots, free_slot;
};

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static struct timespec mono_ts(ctx_time_t t)
{
    struct timespec ts = {(time_t)(t / CTX_SECOND), (long)(t % CTX_SECOND)};
    return ts;
}

/* ---- requests ------------------------------------------------------------ */

static void req_unref(req_t *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (r->resp != NULL)
        MHD_destroy_response(r->resp);
    if (r->ctx != NULL && r->cancel != NULL)
        ctx_cancel(r->cancel);
    ctx_release(r->ctx);
    ctx_release(r->cancel);
    free(r->body);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- the watcher ------------------------------------------------------- */

static void *watcher_main(void *arg)
{
    ctx_mhd_server_t *srv = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(srv->epfd, ev, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tok = ev[i].data.u64;
            if (tok == STOP_TOKEN)
                return NULL;
            int s = (int)(tok >> 32);
            uint32_t gen = (uint32_t)tok;
            ctx_t *c = NULL;
            pthread_mutex_lock(&srv->mu);
            if (s >= 0 && s < srv->nslots && srv->slots[s].gen == gen &&
                srv->slots[s].r != NULL && !srv->slots[s].r->hung) {
                req_t *r = srv->slots[s].r;
                r->hung = true;
                r->hung_at = ctx_now();
                srv->st.hangups++;
                c = ctx_retain(r->cancel);
            }
            pthread_mutex_unlock(&srv->mu);
            if (c != NULL) {
                ctx_cancel_cause(c, ECONNRESET);
                ctx_release(c);
            }
        }
    }
}

/* Starts watching r's socket for a hang-up. Without a slot or an fd the
 * request runs unwatched (libmicrohttpd's completion notice still cancels
 * it once the handler is done). */
static void watch_add(ctx_mhd_server_t *srv, req_t *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    r->fd = ci->connect_fd;
    pthread_mutex_lock(&srv->mu);
    if (srv->free_slot < 0) {
        int n = srv->nslots ? srv->nslots * 2 : 64;
        struct slot *ns = realloc(srv->slots, (size_t)n * sizeof *ns);
        if (ns == NULL) {
            pthread_mutex_unlock(&srv->mu);
            return;
        }
        for (int i = srv->nslots; i < n; i++) {
            ns[i].r = NULL;
            ns[i].gen = 0;
            ns[i].next_free = i + 1 < n ? i + 1 : -1;
        }
        srv->free_slot = srv->nslots;
        srv->slots = ns;
        srv->nslots = n;
    }
    int s = srv->free_slot;
    srv->free_slot = srv->slots[s].next_free;
    srv->slots[s].r = r;
    uint32_t gen = ++srv->slots[s].gen;
    r->slot = s;
    pthread_mutex_unlock(&srv->mu);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT,
                             .data.u64 = ((uint64_t)(uint32_t)s << 32) | gen};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, r->fd, &ev) != 0) {
        pthread_mutex_lock(&srv->mu);
        srv->slots[s].r = NULL;
        srv->slots[s].gen++;
        srv->slots[s].next_free = srv->free_slot;
        srv->free_slot = s;
        r->slot = -1;
        pthread_mutex_unlock(&srv->mu);
    }
}

/* Stops watching (before libmicrohttpd may close the socket) and accounts
 * for the end of the handler's work: called once per started handler,
 * when it has both replied and returned. */
static void finish(ctx_mhd_server_t *srv, req_t *r)
{
    if (r->slot >= 0)
        (void)epoll_ctl(srv->epfd, EPOLL_CTL_DEL, r->fd, NULL);
    ctx_time_t now = ctx_now();
    pthread_mutex_lock(&srv->mu);
    if (r->slot >= 0) {
        int s = r->slot;
        srv->slots[s].r = NULL;
        srv->slots[s].gen++;
        srv->slots[s].next_free = srv->free_slot;
        srv->free_slot = s;
        r->slot = -1;
    }
    if (r->hung) {
        ctx_duration_t d = now - r->hung_at;
        if (d > srv->st.hangup_stop_max)
            srv->st.hangup_stop_max = d;
        srv->st.hangup_stop_total += d;
    }
    srv->st.active--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Resumes a suspended connection. libmicrohttpd acts on it in its own
 * thread, later; until then the connection still counts as suspended, and
 * MHD_stop_daemon() must not be called: shutdown waits for `resuming`. */
static void resume(ctx_mhd_server_t *srv, req_t *r)
{
    pthread_mutex_lock(&srv->mu);
    r->resuming = true;
    srv->resuming++;
    pthread_mutex_unlock(&srv->mu);
    MHD_resume_connection(r->conn);
}

static void resumed(ctx_mhd_server_t *srv, req_t *r)
{
    pthread_mutex_lock(&srv->mu);
    if (r->resuming) {
        r->resuming = false;
        srv->resuming--;
        pthread_cond_broadcast(&srv->cv);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* ---- libmicrohttpd callbacks ------------------------------------------ */

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
                             struct MHD_Response *resp)
{
    if (resp == NULL)
        resp = MHD_create_response_from_buffer(0, (void *)"",
                                               MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result reject(ctx_mhd_server_t *srv,
                              struct MHD_Connection *conn, unsigned status,
                              const char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                  "text/plain");
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    pthread_mutex_lock(&srv->mu);
    srv->st.rejected++;
    pthread_mutex_unlock(&srv->mu);
    return queue(conn, status, resp);
}

static void list_add(ctx_mhd_server_t *srv, req_t *r)
{
    pthread_mutex_lock(&srv->mu);
    r->next = srv->open;
    r->prev = NULL;
    if (srv->open != NULL)
        srv->open->prev = r;
    srv->open = r;
    r->listed = true;
    srv->nopen++;
    pthread_mutex_unlock(&srv->mu);
}

static void list_del(ctx_mhd_server_t *srv, req_t *r)
{
    pthread_mutex_lock(&srv->mu);
    if (r->listed) {
        if (r->prev != NULL)
            r->prev->next = r->next;
        else
            srv->open = r->next;
        if (r->next != NULL)
            r->next->prev = r->prev;
        r->listed = false;
        srv->nopen--;
        pthread_cond_broadcast(&srv->cv);
    }
    pthread_mutex_unlock(&srv->mu);
}

static req_t *req_new(ctx_mhd_server_t *srv, struct MHD_Connection *conn,
                      const char *url, const char *method,
                      const char *version)
{
    req_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->cv);
    r->info.connection = conn;
    r->info.method = method;
    r->info.url = url;
    r->info.version = version;
    r->info.body = "";
    r->slot = -1;
    r->fd = -1;
    r->phase = PH_BODY;
    return r;
}

static bool body_append(ctx_mhd_server_t *srv, req_t *r, const char *data,
                        size_t n)
{
    if (r->body_too_big || n > srv->o.max_body - r->body_len) {
        r->body_too_big = true;
        return true;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return false;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return true;
}

/* The request's headers as a propagation carrier: every line of a field,
 * names compared without regard to case. */
struct lines {
    const char *key;
    const char **values;
    size_t max, n;
};

static enum MHD_Result line_it(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *value)
{
    (void)kind;
    struct lines *l = cls;
    if (key != NULL && strcasecmp(key, l->key) == 0) {
        if (l->n < l->max)
            l->values[l->n] = value != NULL ? value : "";
        l->n++;
    }
    return MHD_YES;
}

static size_t carrier_get_all(void *self, const char *key,
                              const char **values, size_t max)
{
    struct lines l = {key, values, max, 0};
    (void)MHD_get_connection_values((struct MHD_Connection *)self,
                                    MHD_HEADER_KIND, line_it, &l);
    return l.n;
}

/* Builds the handler's context: a cancellable child of the server's root
 * with the caller's propagated deadline (clamped by max_deadline) and trace
 * context. r->cancel is what hang-up and shutdown cancel. */
static int make_ctx(ctx_mhd_server_t *srv, req_t *r)
{
    ctx_carrier_t car = {.self = r->conn, .get_all = carrier_get_all};
    r->cancel = ctx_propagate_extract(srv->root, &car, srv->o.max_deadline,
                                      CTX_PROPAGATE_ALL);
    if (r->cancel == NULL)
        return errno;
    r->ctx = ctx_retain(r->cancel);
    return 0;
}

/* Hands a stored reply to libmicrohttpd (on its own thread). */
static enum MHD_Result queue_stored(req_t *r)
{
    pthread_mutex_lock(&r->mu);
    struct MHD_Response *resp = r->resp;
    unsigned status = r->status;
    r->resp = NULL;
    r->phase = PH_DONE;
    pthread_mutex_unlock(&r->mu);
    return queue(r->conn, status, resp);
}

static enum MHD_Result run_handler(ctx_mhd_server_t *srv, req_t *r)
{
    r->phase = PH_RUNNING;
    if (r->body != NULL) {
        r->info.body = r->body;
        r->info.body_size = r->body_len;
    }
    if (make_ctx(srv, r) != 0) {
        r->phase = PH_DONE;
        return reject(srv, r->conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                      "out of memory\n");
    }
    pthread_mutex_lock(&srv->mu);
    r->started = true;
    srv->st.requests++;
    srv->st.active++;
    pthread_mutex_unlock(&srv->mu);
    watch_add(srv, r);
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    srv->handler(r->ctx, &r->info, r, srv->arg);

    pthread_mutex_lock(&r->mu);
    r->returned = true;
    if (r->replied) {
        r->finished = true;
        pthread_mutex_unlock(&r->mu);
        finish(srv, r);
        return queue_stored(r);
    }
    if (srv->o.mode == CTX_MHD_MODE_POLL) {
        /* The reply comes later, from another thread: park the connection.
         * ctx_mhd_reply() resumes it; libmicrohttpd then calls us again. */
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    /* Thread per connection: this thread belongs to the connection. */
    while (!r->replied)
        pthread_cond_wait(&r->cv, &r->mu);
    bool fin = !r->finished;
    r->finished = true;
    pthread_mutex_unlock(&r->mu);
    if (fin)
        finish(srv, r);
    return queue_stored(r);
}

static enum MHD_Result ahc(void *cls, struct MHD_Connection *conn,
                           const char *url, const char *method,
                           const char *version, const char *upload_data,
                           size_t *upload_data_size, void **con_cls)
{
    ctx_mhd_server_t *srv = cls;
    req_t *r = *con_cls;
    if (r == NULL) {
        /* The request line and headers are in. */
        const char *cl = MHD_lookup_connection_value(
            conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > srv->o.max_body)
            return reject(srv, conn, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body too large\n");
        pthread_mutex_lock(&srv->mu);
        bool closing = srv->shutting_down;
        pthread_mutex_unlock(&srv->mu);
        if (closing)
            return reject(srv, conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "shutting down\n");
        r = req_new(srv, conn, url, method, version);
        if (r == NULL)
            return MHD_NO;
        list_add(srv, r);
        *con_cls = r;
        return MHD_YES;
    }
    switch (r->phase) {
    case PH_BODY:
        if (*upload_data_size != 0) {
            bool ok = body_append(srv, r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return ok ? MHD_YES : MHD_NO;
        }
        if (r->body_too_big) {
            r->phase = PH_DONE;
            return reject(srv, conn, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body too large\n");
        }
        return run_handler(srv, r);
    case PH_RUNNING:
        /* Called again after MHD_resume_connection(): the reply is in. */
        *upload_data_size = 0;
        resumed(srv, r);
        return queue_stored(r);
    case PH_DONE:
    default:
        *upload_data_size = 0;
        return MHD_YES;
    }
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    ctx_mhd_server_t *srv = cls;
    req_t *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    if (r->cancel != NULL) {
        int cause = CTX_CANCELED;
        switch (toe) {
        case MHD_REQUEST_TERMINATED_WITH_ERROR:
        case MHD_REQUEST_TERMINATED_READ_ERROR:
        case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
            cause = ECONNRESET;
            break;
        case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
            cause = ESHUTDOWN;
            break;
        default:
            break;
        }
        ctx_cancel_cause(r->cancel, cause);
    }
    resumed(srv, r);
    list_del(srv, r);
    req_unref(r);
}

/* ---- replies ----------------------------------------------------------- */

int ctx_mhd_reply(ctx_mhd_reply_t *r, unsigned status,
                  struct MHD_Response *response)
{
    if (r == NULL) {
        if (response != NULL)
            MHD_destroy_response(response);
        return EINVAL;
    }
    if (status < 100 || status > 999) {
        /* A bad status still ends the handler's claim (a 500 is sent), so
         * that nothing hangs. */
        if (response != NULL)
            MHD_destroy_response(response);
        int e = ctx_mhd_reply(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
        return e == 0 ? EINVAL : e;
    }
    /* A NULL response (also when queue() cannot make an empty one: then
     * libmicrohttpd closes the connection) sends an empty body. */
    ctx_mhd_server_t *srv = r->srv;
    pthread_mutex_lock(&r->mu);
    if (r->replied) {
        int e = r->forced ? ESHUTDOWN : EALREADY;
        bool forced = r->forced;
        pthread_mutex_unlock(&r->mu);
        if (response != NULL)
            MHD_destroy_response(response);
        if (forced)
            req_unref(r); /* the handler's claim ends with this reply */
        return e;
    }
    r->replied = true;
    r->status = status;
    r->resp = response;
    bool need_resume = false, wake = false, fin = false;
    if (r->returned) {
        /* the asynchronous form: the handler is gone, finish here */
        fin = !r->finished;
        r->finished = true;
        need_resume = r->suspended;
        r->suspended = false;
        wake = !need_resume;
    }
    int e = 0;
    pthread_mutex_lock(&srv->mu);
    if (r->hung)
        e = ECONNRESET;
    pthread_mutex_unlock(&srv->mu);
    /* The watch goes before libmicrohttpd may close the socket: before the
     * connection thread wakes (thread per connection) or the resume. */
    if (fin)
        finish(srv, r);
    if (wake)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (need_resume)
        resume(srv, r);
    req_unref(r);
    return e;
}

int ctx_mhd_reply_buffer(ctx_mhd_reply_t *r, unsigned status,
                         const char *content_type, const void *body,
                         size_t size)
{
    if (r == NULL)
        return EINVAL;
    if (body == NULL && size != 0) {
        (void)ctx_mhd_reply(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
        return EINVAL;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        size, (void *)(size ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        (void)ctx_mhd_reply(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
        return ENOMEM;
    }
    if (content_type != NULL &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type) != MHD_YES) {
        MHD_destroy_response(resp);
        (void)ctx_mhd_reply(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
        return ENOMEM;
    }
    return ctx_mhd_reply(r, status, resp);
}

/* Shutdown answers a request whose handler has not replied: 503. */
static void force_reply(ctx_mhd_server_t *srv, req_t *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        14, (void *)"shutting down\n", MHD_RESPMEM_PERSISTENT);
    if (resp != NULL)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
                                      "close");
    pthread_mutex_lock(&r->mu);
    if (r->replied) {
        pthread_mutex_unlock(&r->mu);
        if (resp != NULL)
            MHD_destroy_response(resp);
        return;
    }
    r->replied = true;
    r->forced = true;
    r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    r->resp = resp;
    bool fin = r->returned && !r->finished;
    if (fin)
        r->finished = true;
    bool need_resume = r->suspended;
    r->suspended = false;
    if (fin)
        finish(srv, r); /* before the socket may be closed, as in reply */
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (need_resume)
        resume(srv, r);
}

/* ---- the server -------------------------------------------------------- */

ctx_mhd_server_t *ctx_mhd_start(ctx_t *root, const ctx_mhd_options_t *opts,
                                ctx_mhd_handler_fn *handler, void *arg)
{
    if (root == NULL || opts == NULL || handler == NULL ||
        (opts->mode != CTX_MHD_MODE_POLL &&
         opts->mode != CTX_MHD_MODE_THREAD_PER_CONNECTION)) {
        errno = EINVAL;
        return NULL;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(opts->port);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (opts->bind_address != NULL &&
        inet_pton(AF_INET, opts->bind_address, &sa.sin_addr) != 1) {
        errno = EINVAL;
        return NULL;
    }
    ctx_mhd_server_t *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return NULL;
    srv->o = *opts;
    if (srv->o.max_body == 0)
        srv->o.max_body = DEFAULT_MAX_BODY;
    if (srv->o.max_header_bytes == 0)
        srv->o.max_header_bytes = DEFAULT_HEADER_BYTES;
    if (srv->o.cancel_wait <= 0)
        srv->o.cancel_wait = CTX_SECOND;
    if (srv->o.threads == 0)
        srv->o.threads = 1;
    srv->handler = handler;
    srv->arg = arg;
    srv->free_slot = -1;
    pthread_mutex_init(&srv->mu, NULL);
    cond_init_mono(&srv->cv);
    int err;
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        err = errno;
        goto fail_ep;
    }
    srv->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->evfd < 0) {
        err = errno;
        goto fail_ev;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_TOKEN};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->evfd, &ev) != 0) {
        err = errno;
        goto fail_th;
    }
    err = pthread_create(&srv->watcher, NULL, watcher_main, srv);
    if (err != 0)
        goto fail_th;
    srv->root = ctx_retain(root);

    unsigned flags = MHD_USE_ERROR_LOG * 0;
    if (srv->o.mode == CTX_MHD_MODE_POLL)
        flags |= MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    else
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                 MHD_USE_ITC;
    struct MHD_OptionItem ops[8];
    int n = 0;
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &sa};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED,
                                       (intptr_t)completed, srv};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                       (intptr_t)srv->o.max_header_bytes, NULL};
    if (srv->o.mode == CTX_MHD_MODE_POLL && srv->o.threads > 1)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                           (intptr_t)srv->o.threads, NULL};
    if (srv->o.connection_limit != 0)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                           (intptr_t)srv->o.connection_limit,
                                           NULL};
    if (srv->o.connection_timeout_s != 0)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                           (intptr_t)srv->o.connection_timeout_s,
                                           NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    errno = 0;
    srv->d = MHD_start_daemon(flags, 0, NULL, NULL, ahc, srv,
                              MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (srv->d == NULL) {
        err = errno != 0 ? errno : EIO;
        goto fail_d;
    }
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di != NULL ? di->port : opts->port;
    return srv;

fail_d:
    ctx_release(srv->root);
    {
        uint64_t one = 1;
        (void)!write(srv->evfd, &one, sizeof one);
        pthread_join(srv->watcher, NULL);
    }
fail_th:
    close(srv->evfd);
fail_ev:
    close(srv->epfd);
fail_ep:
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    errno = err;
    return NULL;
}

uint16_t ctx_mhd_port(ctx_mhd_server_t *srv)
{
    return srv == NULL ? 0 : srv->port;
}

struct MHD_Daemon *ctx_mhd_daemon(ctx_mhd_server_t *srv)
{
    return srv == NULL ? NULL : srv->d;
}

int ctx_mhd_stats(ctx_mhd_server_t *srv, ctx_mhd_stats_t *stats)
{
    if (srv == NULL || stats == NULL)
        return EINVAL;
    pthread_mutex_lock(&srv->mu);
    *stats = srv->st;
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

/* Waits until `pred` holds or `until`; srv->mu held. */
static bool wait_srv(ctx_mhd_server_t *srv, bool (*pred)(ctx_mhd_server_t *),
                     ctx_time_t until)
{
    struct timespec ts = mono_ts(until);
    while (!pred(srv)) {
        if (ctx_now() >= until)
            return false;
        pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
    }
    return true;
}

static bool none_open(ctx_mhd_server_t *srv)
{
    return srv->nopen == 0;
}

static bool none_resuming(ctx_mhd_server_t *srv)
{
    return srv->resuming == 0;
}

/* Applies fn to every open request whose handler has started. */
static void each_running(ctx_mhd_server_t *srv, void (*fn)(ctx_mhd_server_t *,
                                                          req_t *))
{
    pthread_mutex_lock(&srv->mu);
    size_t n = 0;
    for (req_t *r = srv->open; r != NULL; r = r->next)
        n++;
    req_t **v = n ? malloc(n * sizeof *v) : NULL;
    size_t k = 0;
    for (req_t *r = srv->open; r != NULL && v != NULL; r = r->next) {
        if (!r->started)
            continue;
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
        v[k++] = r;
    }
    pthread_mutex_unlock(&srv->mu);
    for (size_t i = 0; i < k; i++) {
        fn(srv, v[i]);
        req_unref(v[i]);
    }
    free(v);
}

static void cancel_one(ctx_mhd_server_t *srv, req_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool live = !r->replied;
    pthread_mutex_unlock(&r->mu);
    if (live && ctx_err(r->cancel) == 0) {
        pthread_mutex_lock(&srv->mu);
        srv->st.shutdown_cancels++;
        pthread_mutex_unlock(&srv->mu);
        ctx_cancel_cause(r->cancel, ESHUTDOWN);
    }
}

int ctx_mhd_shutdown(ctx_mhd_server_t *srv, ctx_duration_t grace)
{
    if (srv == NULL)
        return EINVAL;
    pthread_mutex_lock(&srv->mu);
    if (srv->shutting_down) {
        pthread_mutex_unlock(&srv->mu);
        return EALREADY;
    }
    srv->shutting_down = true;
    pthread_mutex_unlock(&srv->mu);

    MHD_socket ls = MHD_quiesce_daemon(srv->d);
    ctx_time_t end = ctx_now() + (grace > 0 ? grace : 0);
    pthread_mutex_lock(&srv->mu);
    bool clean = wait_srv(srv, none_open, end);
    pthread_mutex_unlock(&srv->mu);
    if (!clean) {
        /* Cancel the rest; give their replies time to be sent. */
        each_running(srv, cancel_one);
        pthread_mutex_lock(&srv->mu);
        bool all = wait_srv(srv, none_open, ctx_now() + srv->o.cancel_wait);
        pthread_mutex_unlock(&srv->mu);
        if (!all) {
            /* MHD must not be stopped with suspended connections: answer
             * for handlers that did not reply, and let the 503 go out. */
            each_running(srv, force_reply);
            pthread_mutex_lock(&srv->mu);
            (void)wait_srv(srv, none_open, ctx_now() + srv->o.cancel_wait);
            pthread_mutex_unlock(&srv->mu);
        }
    }
    /* Every resume processed (libmicrohttpd does it at once, in its own
     * thread); the bound only guards against a daemon that stopped. */
    pthread_mutex_lock(&srv->mu);
    (void)wait_srv(srv, none_resuming, ctx_now() + srv->o.cancel_wait);
    pthread_mutex_unlock(&srv->mu);
    MHD_stop_daemon(srv->d);
    srv->d = NULL;
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    pthread_mutex_lock(&srv->mu);
    srv->shut = true;
    pthread_mutex_unlock(&srv->mu);
    return clean ? 0 : ETIMEDOUT;
}

void ctx_mhd_free(ctx_mhd_server_t *srv)
{
    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->mu);
    bool need = !srv->shutting_down;
    pthread_mutex_unlock(&srv->mu);
    if (need)
        (void)ctx_mhd_shutdown(srv, 0);
    uint64_t one = 1;
    (void)!write(srv->evfd, &one, sizeof one);
    pthread_join(srv->watcher, NULL);
    close(srv->evfd);
    close(srv->epfd);
    ctx_release(srv->root);
    free(srv->slots);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}
