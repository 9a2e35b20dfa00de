/* The loopback HTTP server of the libctx-curl tests (see http_server.h). */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HS_BUF 4096
#define HS_MAX_FILL 64

struct conn {
    int fd;
    size_t len;
    bool silent; /* answered /slow or /stall: only watch for the close */
    char buf[HS_BUF];
};

struct hs {
    pthread_t thread;
    int wake; /* eventfd: stop */
    int lfd, port;
    int bfd, bport; /* the blackhole listener and its queued clients */
    int fill[HS_MAX_FILL];
    int nfill;
    struct conn **conns;
    size_t nconns, cap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long counters[HS_NCOUNTERS];
    long open;
};

static void bump(hs_t *s, enum hs_counter c, long open_delta)
{
    pthread_mutex_lock(&s->mu);
    s->counters[c]++;
    s->open += open_delta;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

long hs_get(hs_t *s, enum hs_counter c)
{
    pthread_mutex_lock(&s->mu);
    long v = s->counters[c];
    pthread_mutex_unlock(&s->mu);
    return v;
}

long hs_open_conns(hs_t *s)
{
    pthread_mutex_lock(&s->mu);
    long v = s->open;
    pthread_mutex_unlock(&s->mu);
    return v;
}

bool hs_wait(hs_t *s, enum hs_counter c, long n, int64_t timeout_ns)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t end = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + timeout_ns;
    struct timespec ts = {(time_t)(end / 1000000000), (long)(end % 1000000000)};
    pthread_mutex_lock(&s->mu);
    while (s->counters[c] < n) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool ok = s->counters[c] >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

int hs_port(hs_t *s)
{
    return s->port;
}

int hs_blackhole_port(hs_t *s)
{
    return s->bport;
}

static int listener(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Connects clients to the backlog-0 listener until one is left hanging in
 * SYN_SENT (its SYN dropped because the accept queue is full). */
static int fill_blackhole(hs_t *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)s->bport);
    while (s->nfill < HS_MAX_FILL) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return -1;
        s->fill[s->nfill++] = fd;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        if (errno != EINPROGRESS)
            return -1;
        /* A loopback handshake completes in microseconds; 200 ms without
         * one means the SYN was dropped: the queue is full. */
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 200) == 0)
            return 0;
    }
    return -1;
}

static void conn_close(hs_t *s, size_t i)
{
    struct conn *c = s->conns[i];
    close(c->fd);
    free(c);
    s->conns[i] = s->conns[--s->nconns];
    bump(s, HS_CLOSED, -1);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            (void)poll(&pf, 1, 1000);
            continue;
        }
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Answers the complete requests in c's buffer. */
static void serve(hs_t *s, struct conn *c)
{
    static const char fast[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                               "Content-Type: text/plain\r\n\r\nhello";
    static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    static const char stall[] = "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n";
    for (;;) {
        if (c->silent) {
            c->len = 0;
            return;
        }
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        size_t used = (size_t)(end + 4 - c->buf);
        bump(s, HS_REQUESTS, 0);
        char *sp = memchr(c->buf, ' ', c->len);
        const char *path = sp != NULL ? sp + 1 : "";
        if (strncmp(path, "/fast", 5) == 0) {
            send_all(c->fd, fast, sizeof fast - 1);
        } else if (strncmp(path, "/slow", 5) == 0) {
            c->silent = true;
            bump(s, HS_SLOW, 0);
        } else if (strncmp(path, "/stall", 6) == 0) {
            char body[1000];
            memset(body, 'x', sizeof body);
            send_all(c->fd, stall, sizeof stall - 1);
            send_all(c->fd, body, sizeof body);
            c->silent = true;
            bump(s, HS_STALL, 0);
        } else {
            send_all(c->fd, nf, sizeof nf - 1);
        }
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static int conns_reserve(hs_t *s)
{
    if (s->nconns < s->cap)
        return 0;
    size_t nc = s->cap ? s->cap * 2 : 64;
    struct conn **p = realloc(s->conns, nc * sizeof *p);
    if (p == NULL)
        return -1;
    s->conns = p;
    s->cap = nc;
    return 0;
}

static void *hs_main(void *arg)
{
    hs_t *s = arg;
    struct pollfd *pf = NULL;
    size_t pfcap = 0;
    for (;;) {
        size_t n = s->nconns + 2;
        if (n > pfcap) {
            pfcap = n * 2;
            struct pollfd *np = realloc(pf, pfcap * sizeof *pf);
            if (np == NULL)
                break;
            pf = np;
        }
        pf[0] = (struct pollfd){.fd = s->wake, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (size_t i = 0; i < s->nconns; i++)
            pf[i + 2] = (struct pollfd){.fd = s->conns[i]->fd, .events = POLLIN};
        if (poll(pf, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[0].revents != 0)
            break;
        /* Connections first, from the back: conn_close moves the last one
         * into the freed slot, which is then already handled. */
        for (size_t i = n - 2; i-- > 0;) {
            if (pf[i + 2].revents == 0)
                continue;
            struct conn *c = s->conns[i];
            if (c->len == HS_BUF)
                c->len = 0; /* oversized request: drop it */
            ssize_t r = recv(c->fd, c->buf + c->len, HS_BUF - c->len, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                conn_close(s, i);
                continue;
            }
            c->len += (size_t)r;
            serve(s, c);
        }
        if (pf[1].revents != 0) {
            for (;;) {
                int fd = accept4(s->lfd, NULL, NULL,
                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0)
                    break;
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct conn *c = calloc(1, sizeof *c);
                if (c == NULL || conns_reserve(s) != 0) {
                    free(c);
                    close(fd);
                    continue;
                }
                c->fd = fd;
                s->conns[s->nconns++] = c;
                bump(s, HS_ACCEPTED, 1);
            }
        }
    }
    free(pf);
    return NULL;
}

hs_t *hs_start(void)
{
    hs_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->wake = eventfd(0, EFD_CLOEXEC);
    s->lfd = listener(1024, &s->port);
    s->bfd = listener(0, &s->bport);
    if (s->wake < 0 || s->lfd < 0 || s->bfd < 0 || fill_blackhole(s) != 0 ||
        pthread_create(&s->thread, NULL, hs_main, s) != 0) {
        if (s->wake >= 0)
            close(s->wake);
        if (s->lfd >= 0)
            close(s->lfd);
        if (s->bfd >= 0)
            close(s->bfd);
        for (int i = 0; i < s->nfill; i++)
            close(s->fill[i]);
        free(s);
        return NULL;
    }
    return s;
}

void hs_stop(hs_t *s)
{
    uint64_t one = 1;
    if (write(s->wake, &one, sizeof one) != sizeof one)
        abort();
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->nconns; i++) {
        close(s->conns[i]->fd);
        free(s->conns[i]);
    }
    free(s->conns);
    for (int i = 0; i < s->nfill; i++)
        close(s->fill[i]);
    close(s->bfd);
    close(s->lfd);
    close(s->wake);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
