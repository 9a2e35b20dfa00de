/*
 * A demo backend on libctx-mhd for the load test (load.sh) and the bench.
 *
 *     mhd_backend [--mode poll|tpc] [--threads N] [--raw]
 *
 * Listens on a free loopback port and prints "port N". Endpoints:
 *   /fast   answers at once;
 *   /slow   works until its context ends (client hang-up, shutdown) or
 *           30 s, then answers: in poll mode asynchronously (an after-func
 *           on the request context replies, no thread), in tpc mode
 *           blocking its connection thread in ctx_wait_until();
 *   /stats  "requests R active A hangups H stop_max_us M fds F threads T".
 * --raw serves /fast from a plain libmicrohttpd daemon in the same mode,
 * without libctx-mhd (the bench's baseline).
 * SIGTERM or SIGINT: graceful shutdown (1 s grace), then exit 0.
 */
#include <ctx.h>
#include <ctx/mhd.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ctx_mhd_server_t *srv;

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 2;
}

struct slow {
    ctx_t *ctx;
    ctx_mhd_reply_t *reply;
    ctx_after_t *reg;
};

static void slow_done(void *arg)
{
    struct slow *s = arg;
    ctx_mhd_reply_buffer(s->reply, 200, "text/plain", "slow\n", 5);
    /* End the registration here (from inside fn: no wait). A hang-up right
     * after registering may get here before the handler stored it. */
    ctx_after_t *reg;
    while ((reg = __atomic_load_n(&s->reg, __ATOMIC_ACQUIRE)) == NULL)
        sched_yield();
    ctx_after_stop(reg);
    ctx_release(s->ctx);
    free(s);
}

static void handler(ctx_t *ctx, const ctx_mhd_request_t *req,
                    ctx_mhd_reply_t *reply, void *arg)
{
    int tpc = *(int *)arg;
    if (strcmp(req->url, "/slow") == 0) {
        ctx_t *c = ctx_with_timeout(ctx, 30 * CTX_SECOND);
        if (c == NULL) {
            ctx_mhd_reply(reply, 500, NULL);
            return;
        }
        if (tpc) {
            ctx_wait(c);
            ctx_release(c);
            ctx_mhd_reply_buffer(reply, 200, "text/plain", "slow\n", 5);
            return;
        }
        struct slow *s = malloc(sizeof *s);
        if (s == NULL) {
            ctx_release(c);
            ctx_mhd_reply(reply, 500, NULL);
            return;
        }
        s->ctx = c;
        s->reply = reply;
        s->reg = NULL;
        /* reg must be stored before slow_done can read it: register on a
         * context it does not see done yet, under no lock of ours; a done
         * context means the client is already gone. */
        ctx_after_t *reg = ctx_after_func_flags(c, slow_done, s, CTX_AFTER_NO_INLINE);
        if (reg == NULL) {
            ctx_release(c);
            free(s);
            ctx_mhd_reply_buffer(reply, 200, "text/plain", "slow\n", 5);
            return;
        }
        __atomic_store_n(&s->reg, reg, __ATOMIC_RELEASE);
        return;
    }
    if (strcmp(req->url, "/stats") == 0) {
        ctx_mhd_stats_t st;
        ctx_mhd_stats(srv, &st);
        char buf[256];
        int n = snprintf(buf, sizeof buf,
                         "requests %llu active %llu hangups %llu stop_max_us %lld "
                         "fds %d threads %d\n",
                         (unsigned long long)st.requests,
                         (unsigned long long)st.active,
                         (unsigned long long)st.hangups,
                         (long long)(st.hangup_stop_max / CTX_MICROSECOND),
                         count_dir("/proc/self/fd") - 1,
                         count_dir("/proc/self/task"));
        ctx_mhd_reply_buffer(reply, 200, "text/plain", buf, (size_t)n);
        return;
    }
    ctx_mhd_reply_buffer(reply, 200, "text/plain", "fast\n", 5);
}

/* ---- the baseline: the same daemon without libctx-mhd ----------------- */

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

int main(int argc, char **argv)
{
    static int tpc = 0;
    int raw = 0;
    unsigned threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            tpc = strcmp(argv[++i], "tpc") == 0;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--raw") == 0)
            raw = 1;
        else {
            fprintf(stderr, "usage: %s [--mode poll|tpc] [--threads N] [--raw]\n",
                    argv[0]);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int sig;
    if (raw) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        unsigned flags = tpc ? MHD_USE_THREAD_PER_CONNECTION |
                                   MHD_USE_INTERNAL_POLLING_THREAD
                             : MHD_USE_AUTO_INTERNAL_THREAD;
        struct MHD_Daemon *d = MHD_start_daemon(
            flags, 0, NULL, NULL, raw_ahc, NULL, MHD_OPTION_SOCK_ADDR, &sa,
            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(tpc ? 0 : threads),
            MHD_OPTION_END);
        if (d == NULL)
            return 1;
        printf("port %u\n",
               (unsigned)MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
        fflush(stdout);
        sigwait(&set, &sig);
        MHD_stop_daemon(d);
        return 0;
    }
    /* The timer thread (first deadline) belongs to the baseline. */
    ctx_release(ctx_with_timeout(ctx_background(), CTX_HOUR));
    ctx_mhd_options_t o = {
        .bind_address = "127.0.0.1",
        .mode = tpc ? CTX_MHD_MODE_THREAD_PER_CONNECTION : CTX_MHD_MODE_POLL,
        .threads = threads,
        .connection_limit = 2000,
    };
    srv = ctx_mhd_start(ctx_background(), &o, handler, &tpc);
    if (srv == NULL) {
        fprintf(stderr, "mhd_backend: %s\n", strerror(errno));
        return 1;
    }
    printf("port %u\n", (unsigned)ctx_mhd_port(srv));
    fflush(stdout);
    sigwait(&set, &sig);
    int e = ctx_mhd_shutdown(srv, CTX_SECOND);
    ctx_mhd_stats_t st;
    ctx_mhd_stats(srv, &st);
    ctx_mhd_free(srv);
    printf("stopped %s hangups %llu stop_max_us %lld\n",
           e == 0 ? "graceful" : "cancelled",
           (unsigned long long)st.hangups,
           (long long)(st.hangup_stop_max / CTX_MICROSECOND));
    return 0;
}
