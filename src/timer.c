/* The timer: one thread per process, started lazily, with a 4-ary min-heap
 * of pending deadlines. Insert and remove are O(log n). The heap holds no
 * reference: a node being freed removes itself, and the thread takes a
 * reference (unless the count is already zero) before it cancels a node.
 * The thread is woken only when a new deadline is earlier than the time it
 * already plans to wake at, so a steady create/cancel loop costs no context
 * switch. After fork() the child starts with an empty heap and no thread;
 * the thread starts again on the first deadline. */
#include "alloc.h"
#include "ctx_int.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

struct heap_ent {
    ctx_time_t when;
    ctx_t *node;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct heap_ent *heap;
    uint32_t size, cap;
    bool started;
    ctx_time_t planned; /* when the thread will next look; MAX: asleep */
} T;

static pthread_once_t timer_once = PTHREAD_ONCE_INIT;

#define ARITY 4

static void set_slot(uint32_t i, struct heap_ent e)
{
    T.heap[i] = e;
    atomic_store_explicit(&e.node->u.c.heap_idx, i, memory_order_relaxed);
}

static void sift_up(uint32_t i, struct heap_ent e)
{
    while (i > 0) {
        uint32_t p = (i - 1) / ARITY;
        if (T.heap[p].when <= e.when)
            break;
        set_slot(i, T.heap[p]);
        i = p;
    }
    set_slot(i, e);
}

static void sift_down(uint32_t i, struct heap_ent e)
{
    for (;;) {
        uint32_t c = i * ARITY + 1;
        if (c >= T.size)
            break;
        uint32_t end = c + ARITY < T.size ? c + ARITY : T.size;
        uint32_t m = c;
        for (uint32_t j = c + 1; j < end; j++)
            if (T.heap[j].when < T.heap[m].when)
                m = j;
        if (e.when <= T.heap[m].when)
            break;
        set_slot(i, T.heap[m]);
        i = m;
    }
    set_slot(i, e);
}

static void remove_at(uint32_t i)
{
    ctx_t *n = T.heap[i].node;
    atomic_store_explicit(&n->u.c.heap_idx, CTX_NO_HEAP, memory_order_relaxed);
    T.size--;
    if (i == T.size)
        return;
    struct heap_ent last = T.heap[T.size];
    if (i > 0 && last.when < T.heap[(i - 1) / ARITY].when)
        sift_up(i, last);
    else
        sift_down(i, last);
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&T.mu);
    for (;;) {
        ctx_time_t now = ctx_now();
        while (T.size > 0 && T.heap[0].when <= now) {
            ctx_t *n = T.heap[0].node;
            remove_at(0);
            if (!ctx__try_retain(n))
                continue; /* being freed */
            pthread_mutex_unlock(&T.mu);
            ctx__cancel(n, CTX_DEADLINE_EXCEEDED,
                        atomic_load_explicit(&n->u.c.cause,
                                             memory_order_relaxed));
            ctx_release(n);
            pthread_mutex_lock(&T.mu);
            now = ctx_now();
        }
        if (T.size == 0) {
            T.planned = CTX_TIME_MAX;
            pthread_cond_wait(&T.cv, &T.mu);
        } else {
            T.planned = T.heap[0].when;
            struct timespec ts = {(time_t)(T.planned / CTX_SECOND),
                                  (long)(T.planned % CTX_SECOND)};
            pthread_cond_timedwait(&T.cv, &T.mu, &ts);
        }
    }
    return NULL;
}

static void timer_init_locks(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&T.mu, NULL);
    pthread_cond_init(&T.cv, &attr);
    pthread_condattr_destroy(&attr);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&T.mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&T.mu);
}

static void atfork_child(void)
{
    /* The thread did not survive the fork, and the contexts in the heap
     * belong to the parent: start afresh. */
    timer_init_locks();
    T.size = 0;
    T.started = false;
    T.planned = CTX_TIME_MAX;
}

static void timer_init(void)
{
    timer_init_locks();
    T.planned = CTX_TIME_MAX;
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Under T.mu. The thread blocks every signal, so that signals meant for the
 * application's threads never land on it. */
static int start_thread(void)
{
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t th;
    if (pthread_attr_init(&attr) != 0)
        return EAGAIN;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&th, &attr, timer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (e != 0)
        return e == ENOMEM ? ENOMEM : EAGAIN;
    T.started = true;
    return 0;
}

int ctx__timer_insert(ctx_t *c)
{
    pthread_once(&timer_once, timer_init);
    pthread_mutex_lock(&T.mu);
    int e = 0;
    if (!T.started && (e = start_thread()) != 0)
        goto out;
    if (T.size == T.cap) {
        uint32_t cap = T.cap != 0 ? T.cap * 2 : 64;
        struct heap_ent *h = ctx__realloc(T.heap, (size_t)cap * sizeof *h);
        if (h == NULL) {
            e = ENOMEM;
            goto out;
        }
        T.heap = h;
        T.cap = cap;
    }
    struct heap_ent ent = {c->u.c.deadline, c};
    T.size++;
    sift_up(T.size - 1, ent);
    /* seq_cst: pairs with mark_done's store of err then load of heap_idx. */
    atomic_store(&c->u.c.heap_idx, atomic_load_explicit(&c->u.c.heap_idx,
                                                       memory_order_relaxed));
    bool wake = ent.when < T.planned;
    if (wake) {
        T.planned = ent.when;
        pthread_cond_signal(&T.cv);
    }
out:
    pthread_mutex_unlock(&T.mu);
    return e;
}

void ctx__timer_remove(ctx_t *c)
{
    if (atomic_load(&c->u.c.heap_idx) == CTX_NO_HEAP)
        return;
    pthread_mutex_lock(&T.mu);
    uint32_t i = atomic_load_explicit(&c->u.c.heap_idx, memory_order_relaxed);
    if (i != CTX_NO_HEAP)
        remove_at(i);
    pthread_mutex_unlock(&T.mu);
}
