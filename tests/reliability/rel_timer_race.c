/* Regression test: the timer thread against a concurrent last release.
 *
 * A context whose deadline is due is released by its owner at about the
 * moment the timer thread fires it. The timer thread holds no reference: it
 * takes one with a "retain unless the count is zero" before it cancels, and
 * a node being freed removes itself from the timer heap first. The freeing
 * thread skips the heap lock when the node's heap index already says "not in
 * the heap", so the timer thread must not mark the node removed before it
 * has its reference (or found the count at zero): otherwise the node can be
 * freed in between and the timer thread then touches freed memory (and, if
 * the memory was reused for a new context, cancels that one instead).
 *
 * Many far deadlines in the same timer shard make the window between the
 * two steps as wide as a sift through a large heap. ASan reports a
 * use-after-free if the race is lost; in other builds, a far context done
 * early, a wrong err on a fresh context, or the live counter shows it. */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <stdatomic.h>
#include <unistd.h>

#define FAR 20000
#define ATTEMPTS 3000

static ctx_t *far[FAR];

int main(void)
{
    long attempts = rel_env_long("CTX_TIMER_RACE_ATTEMPTS", ATTEMPTS);
    ctx_time_t far_dl = ctx_now() + CTX_HOUR;
    /* Same thread as the racing contexts: the same shard, if sharded. */
    for (int i = 0; i < FAR; i++) {
        far[i] = ctx_with_deadline(ctx_background(), far_dl + i);
        REL_CHECK(far[i] != NULL, "with_deadline");
    }
    /* The release time tracks the moment the timer fires: later after a
     * release that came first, earlier after one that came too late. */
    ctx_time_t offset = 0;
    unsigned jitter = 1;
    long fired = 0;
    for (long a = 0; a < attempts; a++) {
        ctx_time_t dl = ctx_now() + 100 * CTX_MICROSECOND;
        ctx_t *c = ctx_with_deadline(ctx_background(), dl);
        REL_CHECK(c != NULL, "with_deadline");
        /* Release at the deadline, give or take a few microseconds. */
        jitter = jitter * 1103515245u + 12345u;
        ctx_time_t at = dl + offset + (ctx_time_t)((jitter >> 16) % 5) * 1000 -
                        2 * CTX_MICROSECOND;
        while (ctx_now() < at)
            ;
        bool done = ctx_is_done(c);
        ctx_release(c);
        fired += done;
        offset += done ? -2 * CTX_MICROSECOND : CTX_MICROSECOND;
        /* A fresh context must not be hit by a stale firing. */
        ctx_t *fresh = ctx_with_cancel(ctx_background());
        REL_CHECK(!ctx_is_done(fresh), "a fresh context is done at birth");
        ctx_release(fresh);
    }
    for (int i = 0; i < FAR; i++) {
        REL_CHECK(!ctx_is_done(far[i]), "far context %d done early", i);
        ctx_release(far[i]);
    }
#ifdef CTX_DEBUG
    for (int i = 0; i < 1000 && ctx__live_contexts() != 0; i++)
        usleep(1000);
    REL_EQ(ctx__live_contexts(), 0);
#endif
    printf("rel_timer_race: %ld releases raced with the timer (%ld after it "
           "fired, release %.1f us after the deadline); no failed check\n",
           attempts, fired, (double)offset / 1000);
    return 0;
}
