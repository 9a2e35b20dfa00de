/* A loopback HTTP/1.1 server for the libctx-curl tests and bench: one
 * thread, poll(), keep-alive. Endpoints (GET, any query ignored):
 *   /fast    200 with a 5-byte body "hello"
 *   /slow    reads the request, never answers (the first byte never comes)
 *   /stall   sends the headers (Content-Length 2000) and 1000 bytes, stalls
 *   other    404
 * A second listener (hs_blackhole_port) has backlog 0, is never accepted and
 * is filled up at start, so that a new connection's SYN is never answered. */
#ifndef CTX_CURL_TEST_HTTP_SERVER_H
#define CTX_CURL_TEST_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct hs hs_t;

/* Starts the server; NULL on failure. */
hs_t *hs_start(void);
/* Stops the thread, closes every fd of the server. */
void hs_stop(hs_t *s);
int hs_port(hs_t *s);
/* The port of the full, never-accepting listener (-1 if it could not be
 * filled: then hs_start fails instead). */
int hs_blackhole_port(hs_t *s);

enum hs_counter { HS_ACCEPTED, HS_REQUESTS, HS_CLOSED, HS_SLOW, HS_STALL,
                  HS_NCOUNTERS };
long hs_get(hs_t *s, enum hs_counter c);
/* Waits until counter c reaches n or timeout_ns passes; true if reached. */
bool hs_wait(hs_t *s, enum hs_counter c, long n, int64_t timeout_ns);
/* Connections currently open on the server side. */
long hs_open_conns(hs_t *s);

#endif
