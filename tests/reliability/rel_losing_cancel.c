/* Regression test for a core bug found by rel_soak, "losing cancel"
 * (docs/RELIABILITY.md), fixed in 15674ff.
 *
 * Contract (ctx.h, "Cancellation"): when ctx_cancel() returns, every descendant
 * is done. A ctx_cancel() that finds the context already done returns 0 at
 * once, though, even while the cancellation that won (another thread's, or
 * the timer's) is still walking the subtree: the caller then sees live
 * descendants of a context it has just cancelled. Go holds the context's
 * lock for the whole walk, so a second cancel waits for the first.
 *
 * Here thread A cancels a root with many children; the main thread waits
 * until the root is done, cancels it again, and checks every child.
 */
#include "ctx.h"
#include "ctx_testing.h"
#include "rel.h"

#include <pthread.h>
#include <stdatomic.h>

#define NCHILD 50000
#define ROUNDS 30

static ctx_t *children[NCHILD];
static atomic_bool go;

static void *canceller(void *arg)
{
    while (!atomic_load(&go))
        ;
    ctx_cancel(arg);
    return NULL;
}

int main(void)
{
    int live_seen = 0, rounds_bad = 0, round;
    for (round = 0; round < ROUNDS && rounds_bad < 3; round++) {
        ctx_t *root = ctx_with_cancel(ctx_background());
        for (int i = 0; i < NCHILD; i++) {
            children[i] = ctx_with_cancel(root);
            REL_CHECK(children[i] != NULL, "with_cancel");
        }
        atomic_store(&go, false);
        pthread_t th;
        REL_EQ(pthread_create(&th, NULL, canceller, root), 0);
        atomic_store(&go, true);
        while (!ctx_is_done(root))
            ;
        REL_EQ(ctx_cancel(root), 0); /* loses: the walk is A's */
        int live = 0;
        for (int i = 0; i < NCHILD; i++)
            live += !ctx_is_done(children[i]);
        pthread_join(th, NULL);
        if (live != 0) {
            rounds_bad++;
            live_seen += live;
        }
        for (int i = 0; i < NCHILD; i++)
            ctx_release(children[i]);
        ctx_release(root);
    }
    if (rounds_bad == 0) {
        printf("rel_losing_cancel: %d rounds, every descendant done when "
               "the losing cancel returned\n",
               round);
        return 0;
    }
    printf("rel_losing_cancel: FAILED: losing cancel: in %d "
           "of %d rounds ctx_cancel() returned with live descendants (%d in "
           "all)\n",
           rounds_bad, round, live_seen);
    return 1;
}
