/*
 * libctx-pq: libpq's asynchronous API driven by poll() on PQsocket() and the
 * context's done fd; PostgreSQL's cancel request on the shared executor when
 * a context ends mid-query; a bounded clean-up afterwards.
 */
#include <ctx/executor.h>
#include <ctx/io.h>
#include <ctx/pq.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GRACE_DEFAULT ((ctx_duration_t)CTX_PQ_GRACE_MS * CTX_MILLISECOND)
static _Atomic ctx_duration_t grace_ns = GRACE_DEFAULT;
#define GRACE atomic_load_explicit(&grace_ns, memory_order_relaxed)

CTX_API ctx_duration_t ctx_pq_set_grace(ctx_duration_t grace)
{
    if (grace <= 0)
        grace = GRACE_DEFAULT;
    if (grace > CTX_HOUR)
        grace = CTX_HOUR;
    return atomic_exchange(&grace_ns, grace);
}
/* A cancel request that found the backend idle (the query bytes were still
 * in flight) is sent again after this long, until the grace ends. */
#define RESEND (100 * CTX_MILLISECOND)

/* ---- waiting ------------------------------------------------------------ */

/* Waits until sock is ready for `events`, ctx (may be NULL) is done, or
 * `until` (0: none) passes. Returns the socket's revents (> 0), 0 when
 * `until` passed, or -1 with errno: ctx_err(ctx), or poll's error. */
static int wait_sock(ctx_t *ctx, int sock, short events, ctx_time_t until)
{
    struct pollfd p[2] = {{.fd = sock, .events = events}, {.fd = -1}};
    nfds_t n = 1;
    if (ctx != NULL) {
        p[1].fd = ctx_done_fd(ctx);
        p[1].events = POLLIN;
        if (p[1].fd < 0)
            return -1;
        n = 2;
    }
    for (;;) {
        if (ctx != NULL && ctx_is_done(ctx)) {
            errno = ctx_err(ctx);
            return -1;
        }
        int ms = -1;
        if (until != 0) {
            ctx_time_t left = until - ctx_now();
            if (left <= 0)
                return 0;
            ms = (int)((left + CTX_MILLISECOND - 1) / CTX_MILLISECOND);
        }
        int r = poll(p, n, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (p[0].revents != 0)
            return p[0].revents;
        /* done fd readable, or timeout: the loop head decides */
    }
}

/* ---- cancel requests on the executor ------------------------------------ */

/* One PQcancel() to run. Shared by the query that asked for it and the lane
 * that runs it; the last of the two to let go frees it. */
struct cancel_job {
    struct cancel_job *next;
    PGcancel *cancel;
    int refs;  /* under lanes_mu */
    bool done; /* under lanes_mu */
};

static pthread_mutex_t lanes_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lanes_cv; /* a job finished; CLOCK_MONOTONIC */
static pthread_once_t lanes_once = PTHREAD_ONCE_INIT;
static struct cancel_job *q_head, **q_tail = &q_head;
static ctx_task_t lane_task[CTX_PQ_CANCEL_LANES];
static bool lane_on[CTX_PQ_CANCEL_LANES];

static void job_unref_locked(struct cancel_job *j)
{
    if (--j->refs == 0) {
        PQfreeCancel(j->cancel);
        free(j);
    }
}

static void job_finish_locked(struct cancel_job *j)
{
    j->done = true;
    pthread_cond_broadcast(&lanes_cv);
    job_unref_locked(j);
}

/* A lane: runs queued cancel requests one after the other, then leaves. */
static void lane_run(ctx_task_t *t)
{
    size_t lane = (size_t)(t - lane_task);
    pthread_mutex_lock(&lanes_mu);
    for (;;) {
        struct cancel_job *j = q_head;
        if (j == NULL)
            break;
        q_head = j->next;
        if (q_head == NULL)
            q_tail = &q_head;
        pthread_mutex_unlock(&lanes_mu);
        char msg[256];
        /* Blocks until the postmaster closes the cancel connection: a few
         * ms from a live server; as long as a stopped one stays stopped. */
        (void)PQcancel(j->cancel, msg, (int)sizeof msg);
        pthread_mutex_lock(&lanes_mu);
        job_finish_locked(j);
    }
    lane_on[lane] = false;
    pthread_mutex_unlock(&lanes_mu);
}

/* In a child of fork(), the parent's lanes do not exist: start empty (the
 * parent's queued jobs are not sent from the child; their memory is left). */
static void lanes_atfork_child(void)
{
    pthread_mutex_init(&lanes_mu, NULL);
    q_head = NULL;
    q_tail = &q_head;
    for (size_t i = 0; i < CTX_PQ_CANCEL_LANES; i++)
        lane_on[i] = false;
}

static void lanes_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&lanes_cv, &a);
    pthread_condattr_destroy(&a);
    for (size_t i = 0; i < CTX_PQ_CANCEL_LANES; i++)
        lane_task[i].fn = lane_run;
    pthread_atfork(NULL, NULL, lanes_atfork_child);
}

/* Queues a cancel request for conn's running query. Returns the job (one
 * reference for the caller), or NULL when it could not be queued. */
static struct cancel_job *cancel_start(PGconn *conn)
{
    pthread_once(&lanes_once, lanes_init);
    struct cancel_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->cancel = PQgetCancel(conn);
    if (j->cancel == NULL) {
        free(j);
        return NULL;
    }
    j->refs = 2;
    pthread_mutex_lock(&lanes_mu);
    *q_tail = j;
    q_tail = &j->next;
    int lane = -1;
    for (int i = 0; i < CTX_PQ_CANCEL_LANES; i++) {
        if (!lane_on[i]) {
            lane = i;
            lane_on[i] = true;
            break;
        }
    }
    pthread_mutex_unlock(&lanes_mu);
    if (lane >= 0 && ctx_executor_submit(&lane_task[lane]) != 0) {
        /* No executor thread: if no lane runs either, nothing will send the
         * queued requests: fail them (their queries end up broken). */
        pthread_mutex_lock(&lanes_mu);
        lane_on[lane] = false;
        bool any = false;
        for (int i = 0; i < CTX_PQ_CANCEL_LANES; i++)
            any = any || lane_on[i];
        while (!any && q_head != NULL) {
            struct cancel_job *q = q_head;
            q_head = q->next;
            job_finish_locked(q);
        }
        if (q_head == NULL)
            q_tail = &q_head;
        pthread_mutex_unlock(&lanes_mu);
    }
    return j;
}

static bool job_done(struct cancel_job *j)
{
    pthread_mutex_lock(&lanes_mu);
    bool d = j->done;
    pthread_mutex_unlock(&lanes_mu);
    return d;
}

/* Waits until the job has run or `until` passes; returns whether it ran. */
static bool job_wait(struct cancel_job *j, ctx_time_t until)
{
    struct timespec ts = {(time_t)(until / CTX_SECOND),
                          (long)(until % CTX_SECOND)};
    pthread_mutex_lock(&lanes_mu);
    while (!j->done && ctx_now() < until)
        (void)pthread_cond_timedwait(&lanes_cv, &lanes_mu, &ts);
    bool d = j->done;
    pthread_mutex_unlock(&lanes_mu);
    return d;
}

static void job_put(struct cancel_job *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&lanes_mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&lanes_mu);
}

/* ---- queries ------------------------------------------------------------ */

static void clear_results(PGconn *conn)
{
    PGresult *r;
    while (!PQisBusy(conn) && (r = PQgetResult(conn)) != NULL)
        PQclear(r);
}

/* Marks conn broken: shuts its socket down so that libpq reads end of file,
 * drops the connection (closing the socket) and says CONNECTION_BAD. Every
 * pending result is read and discarded; nothing here can block for long:
 * after the shutdown the socket has only what was already received. */
static void mark_broken(PGconn *conn, int was_nb)
{
    int s = PQsocket(conn);
    if (s >= 0)
        (void)shutdown(s, SHUT_RDWR);
    /* While the connection is still "OK" the mode can be set; a flush of
     * leftover output fails at once on the shut socket. */
    (void)PQsetnonblocking(conn, was_nb);
    for (int i = 0; i < 1024 && PQstatus(conn) != CONNECTION_BAD; i++) {
        int ok = PQconsumeInput(conn);
        clear_results(conn);
        if (!ok)
            break;
    }
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL)
        PQclear(r);
}

/* ---- the cancel request, sent without blocking -------------------------
 *
 * PQcancel() opens a connection to the postmaster, sends 16 bytes and then
 * blocks until the postmaster's child that served the request exits, which
 * on a busy machine takes 100 ms or more after the query has already been
 * cancelled; and forever if the postmaster is stopped. When the connection's
 * cancel key can be read (below), the calling thread sends the same 16-byte
 * CancelRequest itself on a non-blocking socket, polled beside the query's
 * socket: any number of queries can be cancelled at once, each bounded by
 * the grace. Otherwise PQcancel() runs on an executor lane (above).
 *
 * libpq 15 and 16 have no accessor for the key: it is read from the
 * PGcancel that PQgetCancel() returns, whose layout in those versions
 * begins with the server address (sockaddr_storage, socklen_t), the backend
 * pid and the key. It is used only when libpq at run time is older than 17
 * and the copy checks out: the address equals the connection's peer and
 * the pid equals PQbackendPID(). */
/* CTX_PQ_FORCE_PQCANCEL=1 in the environment: always use PQcancel() on the
 * executor (the path taken where the key cannot be read); for tests. */
static bool force_pqcancel(void)
{
    static int v = -1; /* racy but idempotent */
    if (v < 0) {
        const char *e = getenv("CTX_PQ_FORCE_PQCANCEL");
        v = e != NULL && e[0] == '1';
    }
    return v == 1;
}

struct pgcancel_head {
    struct {
        struct sockaddr_storage addr;
        socklen_t salen;
    } raddr; /* libpq's SockAddr, padded as a struct of its own */
    int be_pid;
    int be_key;
};

struct cancel {
    bool direct;                  /* our own request is possible */
    struct sockaddr_storage addr; /* the postmaster's */
    socklen_t alen;
    unsigned char pkt[16];
    int fd;      /* request socket, -1 when none in flight */
    size_t off;  /* bytes of pkt sent */
    int sent;    /* requests sent */
    struct cancel_job *job; /* executor fallback */
};

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* a (libpq's copy) names the same peer as p (getpeername's, plen bytes). */
static bool same_addr(const struct sockaddr_storage *a,
                      const struct sockaddr_storage *p, socklen_t plen)
{
    if (a->ss_family != p->ss_family)
        return false;
    switch (a->ss_family) {
    case AF_UNIX: {
        const struct sockaddr_un *ua = (const void *)a, *up = (const void *)p;
        return plen > offsetof(struct sockaddr_un, sun_path) &&
               strncmp(ua->sun_path, up->sun_path, sizeof ua->sun_path) == 0;
    }
    case AF_INET: {
        const struct sockaddr_in *ia = (const void *)a, *ip = (const void *)p;
        return ia->sin_port == ip->sin_port &&
               ia->sin_addr.s_addr == ip->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *ia = (const void *)a, *ip = (const void *)p;
        return ia->sin6_port == ip->sin6_port &&
               memcmp(&ia->sin6_addr, &ip->sin6_addr, sizeof ia->sin6_addr) == 0;
    }
    default:
        return false;
    }
}

static void cancel_init(struct cancel *cn, PGconn *conn)
{
    memset(cn, 0, sizeof *cn);
    cn->fd = -1;
    if (PQlibVersion() >= 170000 || force_pqcancel())
        return;
    PGcancel *pc = PQgetCancel(conn);
    if (pc == NULL)
        return;
    struct pgcancel_head h;
    memcpy(&h, pc, sizeof h);
    PQfreeCancel(pc);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    memset(&peer, 0, sizeof peer);
    if (getpeername(PQsocket(conn), (struct sockaddr *)&peer, &plen) != 0)
        return;
    if (h.raddr.salen == 0 || h.raddr.salen > sizeof h.raddr.addr ||
        !same_addr(&h.raddr.addr, &peer, plen) ||
        h.be_pid != PQbackendPID(conn) || h.be_pid <= 0)
        return;
    cn->direct = true;
    cn->addr = h.raddr.addr;
    cn->alen = h.raddr.salen;
    put32(cn->pkt, 16);
    put32(cn->pkt + 4, 80877102); /* CANCEL_REQUEST_CODE */
    put32(cn->pkt + 8, (uint32_t)h.be_pid);
    put32(cn->pkt + 12, (uint32_t)h.be_key);
}

static void cancel_close_fd(struct cancel *cn)
{
    if (cn->fd >= 0)
        close(cn->fd);
    cn->fd = -1;
}

/* Starts one cancel request. */
static void cancel_send(struct cancel *cn, PGconn *conn)
{
    cn->sent++;
    if (!cn->direct) {
        job_put(cn->job);
        cn->job = cancel_start(conn);
        return;
    }
    cancel_close_fd(cn);
    cn->off = 0;
    int fd = socket(cn->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return; /* out of fds: retried at the next resend */
    if (connect(fd, (struct sockaddr *)&cn->addr, cn->alen) != 0 &&
        errno != EINPROGRESS) {
        close(fd); /* refused, or a Unix listener's backlog full: retried */
        return;
    }
    cn->fd = fd;
}

/* The request's socket to poll, and for what. */
static short cancel_events(const struct cancel *cn)
{
    if (cn->fd < 0)
        return 0;
    return cn->off < sizeof cn->pkt ? POLLOUT : POLLIN;
}

/* Moves the request on after poll said `revents`. */
static void cancel_progress(struct cancel *cn, short revents)
{
    if (cn->fd < 0 || revents == 0)
        return;
    if (cn->off < sizeof cn->pkt) {
        ssize_t n = send(cn->fd, cn->pkt + cn->off, sizeof cn->pkt - cn->off,
                         MSG_NOSIGNAL);
        if (n > 0)
            cn->off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            cancel_close_fd(cn); /* connect failed: retried at resend */
        return;
    }
    /* The postmaster closes the connection once it has served it. */
    char c;
    ssize_t n = recv(cn->fd, &c, 1, 0);
    if (n >= 0 || (errno != EAGAIN && errno != EINTR))
        cancel_close_fd(cn);
}

/* No request of ours is queued or in flight. */
static bool cancel_idle(struct cancel *cn)
{
    if (!cn->direct)
        return cn->job == NULL || job_done(cn->job);
    return cn->fd < 0;
}

static void cancel_end(struct cancel *cn)
{
    cancel_close_fd(cn);
    job_put(cn->job);
    cn->job = NULL;
}

/* The context ended (err) while a query was in progress: finish sending it,
 * cancel it on the server, read and discard the rest of its results, and
 * make sure no cancel request of ours can reach a later query, all within
 * GRACE; else mark the connection broken. Returns err. */
static int abandon(PGconn *conn, int was_nb, int err, bool send_cancel)
{
    ctx_time_t end = ctx_now() + GRACE;
    ctx_time_t resend = 0;
    struct cancel cn;
    int f;
    cancel_init(&cn, conn);
    /* A cancel request that arrives before the query does is ignored by
     * the server: the query goes out in full first. */
    while ((f = PQflush(conn)) == 1) {
        int ev = wait_sock(NULL, PQsocket(conn), POLLIN | POLLOUT, end);
        if (ev <= 0)
            goto broken;
        if ((ev & POLLIN) && !PQconsumeInput(conn))
            break;
    }
    for (;;) {
        /* Discard what has arrived. */
        PGresult *r;
        while (!PQisBusy(conn)) {
            r = PQgetResult(conn);
            if (r == NULL)
                goto drained;
            ExecStatusType st = PQresultStatus(r);
            PQclear(r);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
                st == PGRES_COPY_BOTH)
                goto broken; /* a COPY in progress: no clean way back */
        }
        if (PQstatus(conn) == CONNECTION_BAD)
            goto broken;
        ctx_time_t now = ctx_now();
        if (now >= end)
            goto broken;
        if (send_cancel && (cn.sent == 0 || (now >= resend && cancel_idle(&cn)))) {
            cancel_send(&cn, conn);
            resend = now + RESEND;
        }
        ctx_time_t until = end;
        if (send_cancel && resend < until)
            until = resend;
        struct pollfd p[2] = {{.fd = PQsocket(conn), .events = POLLIN},
                              {.fd = cn.fd, .events = cancel_events(&cn)}};
        int ms = (int)((until - now + CTX_MILLISECOND - 1) / CTX_MILLISECOND);
        int n = poll(p, cn.fd >= 0 ? 2 : 1, ms < 1 ? 1 : ms);
        if (n < 0 && errno != EINTR)
            goto broken;
        if (n <= 0)
            continue;
        if (cn.fd >= 0)
            cancel_progress(&cn, p[1].revents);
        if (p[0].revents != 0 && !PQconsumeInput(conn)) {
            clear_results(conn);
            goto broken;
        }
    }
drained:
    /* A request still queued or in flight would cancel the next query. A
     * request not fully sent is dropped (the postmaster ignores a partial
     * one). A sent one is waited for until the postmaster closes it, as
     * PQcancel() does, even when the server already reported the cancel:
     * the postmaster signals the backend twice (its pid, then its process
     * group), and the second signal may come after the first has ended the
     * query; only the close says both have been sent. */
    if (cn.direct) {
        if (cn.fd >= 0 && cn.off < sizeof cn.pkt)
            cancel_close_fd(&cn);
        while (cn.fd >= 0) {
            int ev = wait_sock(NULL, cn.fd, POLLIN, end);
            if (ev <= 0)
                goto broken;
            cancel_progress(&cn, (short)ev);
        }
    } else if (cn.job != NULL && !job_wait(cn.job, end)) {
        goto broken;
    }
    cancel_end(&cn);
    return err;
broken:
    cancel_end(&cn);
    mark_broken(conn, was_nb);
    return err;
}

/* Reads results as PQexec() does (last result; a COPY result at once),
 * waiting on the socket with ctx until `until` (0: none). Returns 0 with
 * *out set (maybe NULL), or the error that ended the wait: ctx_err(ctx),
 * ETIMEDOUT when `until` passed; the connection has then been cleaned up by
 * abandon(). */
static int collect(ctx_t *ctx, PGconn *conn, ctx_time_t until, int was_nb,
                   bool cancel_on_timeout, PGresult **out)
{
    PGresult *last = NULL;
    int f, ev;
    *out = NULL;
    while ((f = PQflush(conn)) == 1) {
        ev = wait_sock(ctx, PQsocket(conn), POLLIN | POLLOUT, until);
        if (ev <= 0)
            goto ended;
        if ((ev & POLLIN) && !PQconsumeInput(conn))
            break;
    }
    /* Sent: the application's mode can come back now, with nothing left to
     * flush. Done before the results arrive because PQsetnonblocking()
     * clears the connection's error message, which PQerrorMessage() must
     * report after a failed command as it does after PQexec(). Reading
     * never blocks in either mode: PQgetResult() is called only when
     * PQisBusy() says the result is complete. */
    if (!was_nb && PQstatus(conn) != CONNECTION_BAD)
        (void)PQsetnonblocking(conn, 0);
    for (;;) {
        while (PQisBusy(conn)) {
            ev = wait_sock(ctx, PQsocket(conn), POLLIN, until);
            if (ev <= 0)
                goto ended;
            if (!PQconsumeInput(conn))
                break; /* PQgetResult() reports the error */
        }
        PGresult *r = PQgetResult(conn);
        if (r == NULL)
            break;
        PQclear(last);
        last = r;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
            st == PGRES_COPY_BOTH || PQstatus(conn) == CONNECTION_BAD)
            break;
    }
    *out = last;
    return 0;
ended:
    PQclear(last);
    if (ev == 0 || ctx_is_done(ctx)) {
        int err = ev == 0 ? ETIMEDOUT : ctx_err(ctx);
        return abandon(conn, was_nb, err, ev != 0 || cancel_on_timeout);
    }
    /* poll itself failed (EBADF: libpq dropped the socket): let libpq say
     * what happened, as results. */
    clear_results(conn);
    *out = PQgetResult(conn);
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL)
        PQclear(r);
    return 0;
}

struct query {
    const char *command;
    int nParams;
    const Oid *paramTypes;
    const char *const *paramValues;
    const int *paramLengths;
    const int *paramFormats;
    int resultFormat;
    bool params;
};

static PGresult *run(ctx_t *ctx, PGconn *conn, const struct query *q,
                     ctx_time_t until, bool cancel_on_timeout)
{
    if (ctx == NULL || conn == NULL || q->command == NULL) {
        errno = EINVAL;
        return NULL;
    }
    int err = ctx_err(ctx);
    if (err != 0) {
        errno = err;
        return NULL;
    }
    /* Made before anything is sent: a failure here changes nothing. */
    if (ctx_done_fd(ctx) < 0)
        return NULL;
    int was_nb = PQisnonblocking(conn);
    if (!was_nb && PQsetnonblocking(conn, 1) != 0) {
        errno = EIO;
        return NULL;
    }
    int sent = q->params
                   ? PQsendQueryParams(conn, q->command, q->nParams,
                                       q->paramTypes, q->paramValues,
                                       q->paramLengths, q->paramFormats,
                                       q->resultFormat)
                   : PQsendQuery(conn, q->command);
    PGresult *res = NULL;
    err = sent ? collect(ctx, conn, until, was_nb, cancel_on_timeout, &res)
               : EIO;
    if (!was_nb && PQisnonblocking(conn) && PQstatus(conn) != CONNECTION_BAD)
        (void)PQsetnonblocking(conn, 0);
    if (err != 0) {
        errno = err;
        return NULL;
    }
    if (res == NULL) {
        errno = EIO; /* PQexec() too returns NULL when nothing came back */
        return NULL;
    }
    return res;
}

CTX_API PGresult *ctx_pq_exec(ctx_t *ctx, PGconn *conn, const char *command)
{
    struct query q = {.command = command};
    return run(ctx, conn, &q, 0, true);
}

CTX_API PGresult *ctx_pq_exec_params(ctx_t *ctx, PGconn *conn,
                                     const char *command, int nParams,
                                     const Oid *paramTypes,
                                     const char *const *paramValues,
                                     const int *paramLengths,
                                     const int *paramFormats,
                                     int resultFormat)
{
    struct query q = {.command = command,
                      .nParams = nParams,
                      .paramTypes = paramTypes,
                      .paramValues = paramValues,
                      .paramLengths = paramLengths,
                      .paramFormats = paramFormats,
                      .resultFormat = resultFormat,
                      .params = true};
    return run(ctx, conn, &q, 0, true);
}

CTX_API int ctx_pq_rollback(PGconn *conn)
{
    if (conn == NULL)
        return EINVAL;
    if (PQstatus(conn) != CONNECTION_OK)
        return ENOTCONN;
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts == PQTRANS_IDLE)
        return 0;
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return EBUSY;
    struct query q = {.command = "ROLLBACK"};
    /* A ROLLBACK the server does not answer is not worth cancelling. */
    PGresult *r = run(ctx_background(), conn, &q, ctx_now() + GRACE, false);
    if (r == NULL)
        return errno == EIO && PQstatus(conn) == CONNECTION_BAD ? ENOTCONN
                                                                 : errno;
    PQclear(r);
    return PQtransactionStatus(conn) == PQTRANS_IDLE ? 0 : EIO;
}

/* ---- connecting --------------------------------------------------------- */

/* libpq's connect_timeout of conn's options in ns (0: none), with libpq's
 * rule that a value under 2 s means 2 s. */
static ctx_duration_t connect_timeout(PGconn *conn)
{
    PQconninfoOption *opts = PQconninfo(conn);
    ctx_duration_t t = 0;
    if (opts == NULL)
        return 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL &&
            o->val[0] != '\0') {
            long s = strtol(o->val, NULL, 10);
            if (s > 0)
                t = (ctx_duration_t)(s < 2 ? 2 : s > INT_MAX ? INT_MAX : s) *
                    CTX_SECOND;
        }
    }
    PQconninfoFree(opts);
    return t;
}

CTX_API PGconn *ctx_pq_connect(ctx_t *ctx, const char *conninfo)
{
    if (ctx == NULL || conninfo == NULL) {
        errno = EINVAL;
        return NULL;
    }
    int err = ctx_err(ctx);
    if (err != 0) {
        errno = err;
        return NULL;
    }
    if (ctx_done_fd(ctx) < 0)
        return NULL;
    PGconn *conn = PQconnectStart(conninfo);
    if (conn == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (PQstatus(conn) == CONNECTION_BAD)
        return conn;
    ctx_duration_t tmo = connect_timeout(conn);
    ctx_time_t until = tmo > 0 ? ctx_now() + tmo : 0;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        short ev = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        int r = wait_sock(ctx, PQsocket(conn), ev, until);
        if (r == 0 || (r < 0 && ctx_is_done(ctx))) {
            err = r == 0 ? ETIMEDOUT : ctx_err(ctx);
            PQfinish(conn);
            errno = err;
            return NULL;
        }
        /* r < 0 otherwise: a bad socket, which PQconnectPoll() reports */
        st = PQconnectPoll(conn);
    }
    return conn;
}

/* ---- pool --------------------------------------------------------------- */

struct ctx_pq_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a slot or an idle connection is free */
    char *conninfo;
    unsigned max;   /* connections at most */
    unsigned total; /* made or being made */
    unsigned nidle, nout;
    PGconn **idle; /* max entries */
    PGconn **out;  /* max entries: handed out */
    bool closing;
    char lasterr[256];
};

/* PQfinish() without a blocking flush of the Terminate message. */
static void close_conn(PGconn *conn)
{
    if (PQstatus(conn) == CONNECTION_OK)
        (void)PQsetnonblocking(conn, 1);
    PQfinish(conn);
}

/* An idle connection is still good if its socket has nothing to say. Data
 * on an idle connection is a notification, a parameter change, or the
 * server ending the connection (a FATAL message, which libpq reports as a
 * notice, then end of file, maybe not yet): after reading it, one empty
 * query (a round trip, bounded by ctx) tells which. */
static bool idle_ok(PGconn *conn, ctx_t *ctx)
{
    if (PQstatus(conn) != CONNECTION_OK ||
        PQtransactionStatus(conn) != PQTRANS_IDLE)
        return false;
    struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return true;
    if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
        return false;
    PGresult *r;
    while (!PQisBusy(conn) && (r = PQgetResult(conn)) != NULL)
        PQclear(r);
    r = ctx_pq_exec(ctx, conn, "");
    bool ok = r != NULL && PQresultStatus(r) == PGRES_EMPTY_QUERY;
    PQclear(r);
    return ok && PQstatus(conn) == CONNECTION_OK &&
           PQtransactionStatus(conn) == PQTRANS_IDLE;
}

CTX_API ctx_pq_pool_t *ctx_pq_pool_new(const char *conninfo, unsigned max_conns)
{
    if (conninfo == NULL || max_conns == 0 || max_conns > 65536) {
        errno = EINVAL;
        return NULL;
    }
    ctx_pq_pool_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->conninfo = strdup(conninfo);
    p->idle = calloc(max_conns, sizeof *p->idle);
    p->out = calloc(max_conns, sizeof *p->out);
    if (p->conninfo == NULL || p->idle == NULL || p->out == NULL) {
        free(p->conninfo);
        free(p->idle);
        free(p->out);
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->max = max_conns;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    return p;
}

CTX_API PGconn *ctx_pq_pool_acquire(ctx_pq_pool_t *pool, ctx_t *ctx)
{
    if (pool == NULL || ctx == NULL) {
        errno = EINVAL;
        return NULL;
    }
    int err = ctx_err(ctx);
    if (err != 0) {
        errno = err;
        return NULL;
    }
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        if (pool->closing) {
            err = EINVAL;
            break;
        }
        err = ctx_err(ctx);
        if (err != 0)
            break;
        if (pool->nidle > 0) {
            /* Checked outside the lock: the check may take a round trip. */
            PGconn *c = pool->idle[--pool->nidle];
            pthread_mutex_unlock(&pool->mu);
            bool ok = idle_ok(c, ctx);
            pthread_mutex_lock(&pool->mu);
            if (ok) {
                pool->out[pool->nout++] = c;
                pthread_mutex_unlock(&pool->mu);
                return c;
            }
            pool->total--;
            pthread_cond_signal(&pool->cv);
            pthread_mutex_unlock(&pool->mu);
            close_conn(c);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        if (pool->total < pool->max) {
            pool->total++;
            pthread_mutex_unlock(&pool->mu);
            PGconn *c = ctx_pq_connect(ctx, pool->conninfo);
            err = errno;
            pthread_mutex_lock(&pool->mu);
            if (c != NULL && PQstatus(c) == CONNECTION_OK) {
                pool->out[pool->nout++] = c;
                pthread_mutex_unlock(&pool->mu);
                return c;
            }
            pool->total--;
            pthread_cond_signal(&pool->cv);
            if (c != NULL) {
                snprintf(pool->lasterr, sizeof pool->lasterr, "%s",
                         PQerrorMessage(c));
                err = ECONNREFUSED;
            }
            pthread_mutex_unlock(&pool->mu);
            if (c != NULL)
                PQfinish(c);
            errno = err;
            return NULL;
        }
        err = ctx_cond_wait(ctx, &pool->cv, &pool->mu);
        if (err != 0)
            break;
    }
    pthread_mutex_unlock(&pool->mu);
    errno = err;
    return NULL;
}

CTX_API void ctx_pq_pool_release(ctx_pq_pool_t *pool, PGconn *conn)
{
    if (pool == NULL || conn == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    unsigned i = 0;
    while (i < pool->nout && pool->out[i] != conn)
        i++;
    if (i == pool->nout) {
        pthread_mutex_unlock(&pool->mu);
        return;
    }
    pool->out[i] = pool->out[--pool->nout];
    bool keep = !pool->closing && PQstatus(conn) == CONNECTION_OK &&
                PQtransactionStatus(conn) == PQTRANS_IDLE;
    if (keep)
        pool->idle[pool->nidle++] = conn;
    else
        pool->total--;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    if (!keep)
        close_conn(conn);
}

CTX_API size_t ctx_pq_pool_last_error(ctx_pq_pool_t *pool, char *buf,
                                      size_t size)
{
    if (pool == NULL) {
        if (buf != NULL && size > 0)
            buf[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&pool->mu);
    int n = snprintf(buf, size, "%s", pool->lasterr);
    pthread_mutex_unlock(&pool->mu);
    return n < 0 ? 0 : (size_t)n;
}

CTX_API void ctx_pq_pool_free(ctx_pq_pool_t *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->closing = true;
    pthread_mutex_unlock(&pool->mu);
    for (unsigned i = 0; i < pool->nidle; i++)
        close_conn(pool->idle[i]);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->conninfo);
    free(pool->idle);
    free(pool->out);
    free(pool);
}
