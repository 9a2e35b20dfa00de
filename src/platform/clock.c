/* The clock: CLOCK_MONOTONIC in nanoseconds. */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

CTX_API ctx_time_t ctx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ctx_time_t)ts.tv_sec * CTX_SECOND + ts.tv_nsec;
}
