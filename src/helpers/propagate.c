/* Propagation across processes: grpc-timeout, W3C traceparent/tracestate,
 * W3C baggage (include/ctx/propagate.h). Work in progress. */
#include <ctx/propagate.h>

#include <errno.h>
#include <string.h>

int ctx_propagate_inject(ctx_t *ctx, const ctx_carrier_t *carrier, unsigned what)
{ (void)ctx; (void)carrier; (void)what; return ENOSYS; }
ctx_t *ctx_propagate_extract(ctx_t *parent, const ctx_carrier_t *carrier,
                             ctx_duration_t limit, unsigned what)
{ (void)parent; (void)carrier; (void)limit; (void)what; errno = ENOSYS; return NULL; }
char **ctx_propagate_env(ctx_t *ctx, char *const base[], unsigned what)
{ (void)ctx; (void)base; (void)what; errno = ENOSYS; return NULL; }
void ctx_propagate_env_free(char **envp) { (void)envp; }
ctx_t *ctx_propagate_extract_env(ctx_t *parent, char *const envp[],
                                 ctx_duration_t limit, unsigned what)
{ (void)parent; (void)envp; (void)limit; (void)what; errno = ENOSYS; return NULL; }
size_t ctx_grpc_timeout_format(ctx_duration_t timeout, char *buf)
{ (void)timeout; (void)buf; return 0; }
int ctx_grpc_timeout_parse(const char *value, ctx_duration_t *timeout)
{ (void)value; (void)timeout; return ENOSYS; }
ctx_t *ctx_trace_start(ctx_t *parent, unsigned flags)
{ (void)parent; (void)flags; errno = ENOSYS; return NULL; }
ctx_t *ctx_trace_child(ctx_t *parent) { (void)parent; errno = ENOSYS; return NULL; }
bool ctx_trace_id(ctx_t *ctx, uint8_t out[16]) { (void)ctx; (void)out; return false; }
bool ctx_trace_span_id(ctx_t *ctx, uint8_t out[8]) { (void)ctx; (void)out; return false; }
bool ctx_trace_parent_id(ctx_t *ctx, uint8_t out[8]) { (void)ctx; (void)out; return false; }
int ctx_trace_flags(ctx_t *ctx) { (void)ctx; return -1; }
const char *ctx_trace_state(ctx_t *ctx) { (void)ctx; return NULL; }
size_t ctx_trace_format(ctx_t *ctx, char *buf, size_t size)
{ (void)ctx; if (size) buf[0] = 0; return 0; }
const char *ctx_baggage(ctx_t *ctx) { (void)ctx; return NULL; }
long ctx_baggage_get(ctx_t *ctx, const char *key, char *buf, size_t size)
{ (void)ctx; (void)key; (void)buf; (void)size; return -1; }
ctx_t *ctx_with_baggage(ctx_t *parent, const char *key, const char *value)
{ (void)parent; (void)key; (void)value; errno = ENOSYS; return NULL; }
