/* The library's one fork handler. Every component with state that a forked
 * child must reset (the parking lot, the timer, the executor, the signal
 * watcher) registers its handlers in a slot of this table instead of calling
 * pthread_atfork() itself, so that the order is written here, once, rather
 * than implied by which component happened to register first:
 *
 *  - prepare takes the components' locks in lock order, outermost first:
 *    the signal watcher's mutex (nothing else is held under it), then the
 *    executor's (a task submission may come from an after-func, under no
 *    library lock), then the timer's start lock and shards, and last the
 *    parking lot, which any ctx__lock() may enter while holding the others;
 *  - parent and child run in the reverse order: the parking lot is reset
 *    first, so that the locks the later handlers release or reset work.
 *
 * Only the slots whose prepare ran get their parent or child handler, so a
 * component registering while another thread forks is harmless. */
#include "platform.h"

#include <pthread.h>

struct fork_slot {
    void (*prepare)(void);
    void (*parent)(void);
    void (*child)(void);
};

/* Written once per slot (before its first use), read by the handlers. */
static struct fork_slot slots[CTX__FORK_NSLOTS];
static _Atomic unsigned registered; /* bit i: slot i is set */
static unsigned prepared;           /* the bits whose prepare ran */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void on_prepare(void)
{
    unsigned mask = atomic_load(&registered);
    for (int i = 0; i < CTX__FORK_NSLOTS; i++)
        if (mask & (1u << i))
            slots[i].prepare();
    prepared = mask; /* guarded by the locks just taken */
}

static void on_parent(void)
{
    unsigned mask = prepared;
    for (int i = CTX__FORK_NSLOTS - 1; i >= 0; i--)
        if (mask & (1u << i))
            slots[i].parent();
}

static void on_child(void)
{
    unsigned mask = prepared;
    for (int i = CTX__FORK_NSLOTS - 1; i >= 0; i--)
        if (mask & (1u << i))
            slots[i].child();
}

static void install(void)
{
    pthread_atfork(on_prepare, on_parent, on_child);
}

void ctx__atfork_register(enum ctx__fork_slot slot, void (*prepare)(void),
                          void (*parent)(void), void (*child)(void))
{
    pthread_once(&once, install);
    slots[slot] = (struct fork_slot){prepare, parent, child};
    atomic_fetch_or(&registered, 1u << slot);
}
