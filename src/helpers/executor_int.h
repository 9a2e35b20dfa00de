/* Private to the helpers: keeping a worker of the shared executor alive. */
#ifndef CTX_EXECUTOR_INT_H
#define CTX_EXECUTOR_INT_H

#include "ctx/executor.h"

/* Makes sure a worker exists and stays (no idle exit) until the matching
 * unpin, so that a ctx_executor_submit() made meanwhile, from any thread,
 * cannot fail for want of a thread. Returns 0, or EAGAIN when no worker
 * exists and none could be started (nothing to unpin then). */
int ctx__executor_pin(void);
void ctx__executor_unpin(void);

#endif
