/* Shared by the demo's two servers: serve on a free loopback port (written
 * to port_file) until SIGINT or SIGTERM, then shut down gracefully (1 s of
 * grace, then cancel what is left) and log what happened. Returns the exit
 * status. */
#ifndef DEMO_SERVER_H
#define DEMO_SERVER_H

#include "../common.h"

#include <ctx.h>
#include <ctx/mhd.h>
#include <ctx/sigctx.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>

static inline int demo_serve(const char *who, const char *port_file,
                             ctx_mhd_handler_fn *handler, const char *in_flight)
{
    /* The signals only start the shutdown: requests derive from the
     * server's own root, so that they get their grace period. */
    int sigs[] = {SIGINT, SIGTERM};
    ctx_t *stop = ctx_with_signals(ctx_background(), sigs, 2);
    ctx_mhd_options_t o = {.bind_address = "127.0.0.1",
                           .mode = CTX_MHD_MODE_THREAD_PER_CONNECTION,
                           .max_deadline = 30 * CTX_SECOND};
    ctx_mhd_server_t *srv =
        stop ? ctx_mhd_start(ctx_background(), &o, handler, NULL) : NULL;
    if (srv == NULL) {
        fprintf(stderr, "%s: start: %s\n", who, ctx_strerror(errno));
        return 1;
    }
    FILE *f = fopen(port_file, "w");
    if (f == NULL || fprintf(f, "%u\n", ctx_mhd_port(srv)) < 0 || fclose(f) != 0) {
        perror(port_file);
        return 1;
    }
    ctx_wait(stop); /* until SIGINT or SIGTERM */
    ex_log(who, "signal: shutting down (1 s grace for %s)", in_flight);
    int e = ctx_mhd_shutdown(srv, CTX_SECOND);
    ctx_mhd_stats_t st;
    ctx_mhd_stats(srv, &st);
    ex_log(who, "stopped: %llu requests, %llu callers hung up, %llu "
           "cancelled by the shutdown", (unsigned long long)st.requests,
           (unsigned long long)st.hangups, (unsigned long long)st.shutdown_cancels);
    ctx_mhd_free(srv);
    ctx_release(stop);
    return e == 0 || e == ETIMEDOUT ? 0 : 1; /* ETIMEDOUT: some were cancelled */
}

#endif
