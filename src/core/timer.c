/* The timer: one thread per process, started lazily, serving sharded 4-ary
 * min-heaps of pending deadlines.
 *
 * - Each thread inserts into its own shard (assigned round-robin on first
 *   use), so threads creating and cancelling timeouts do not contend on one
 *   lock. A node records its shard and slot: removal is O(log n).
 * - The heaps hold no reference: a node being freed removes itself, and the
 *   timer thread takes a reference (unless the count already reached zero)
 *   before it cancels a node.
 * - The thread sleeps on `wake_seq` until `planned`, the earliest deadline it
 *   saw. An insert wakes it only when its deadline is earlier than that, so
 *   a steady create/cancel loop costs no context switch and no syscall.
 * - After fork() the child starts with empty heaps and no thread; the thread
 *   starts again on the first deadline. The nodes the heaps held are marked
 *   "not in a heap" there, so that the child may cancel or release the
 *   contexts it inherited (leaving a CTX_DEFER_CANCEL scope does): their
 *   slot numbers would otherwise name slots of the emptied heaps. */
#include "alloc.h"
#include "ctx_int.h"

#include <pthread.h>
#include <signal.h>

#define ARITY 4
#define SHARDS 8
#define SHARD_SHIFT 28
#define SLOT_MASK ((1u << SHARD_SHIFT) - 1)

struct heap_ent {
    ctx_time_t when;
    ctx_t *node;
};

struct shard {
    ctx__lock_t lock;
    uint32_t size, cap;
    struct heap_ent *heap;
} __attribute__((aligned(64)));

static struct shard shards[SHARDS];
static _Atomic uint32_t wake_seq;
static _Atomic ctx_time_t planned = CTX_TIME_MAX;
static _Atomic bool started;
static ctx__lock_t start_lock;
static _Atomic uint32_t next_shard;
static _Thread_local int my_shard = -1;
static pthread_once_t timer_once = PTHREAD_ONCE_INIT;

static void set_slot(struct shard *s, uint32_t sid, uint32_t i,
                     struct heap_ent e)
{
    s->heap[i] = e;
    atomic_store_explicit(&e.node->u.c.heap_idx, (sid << SHARD_SHIFT) | i,
                          memory_order_relaxed);
}

static void sift_up(struct shard *s, uint32_t sid, uint32_t i,
                    struct heap_ent e)
{
    while (i > 0) {
        uint32_t p = (i - 1) / ARITY;
        if (s->heap[p].when <= e.when)
            break;
        set_slot(s, sid, i, s->heap[p]);
        i = p;
    }
    set_slot(s, sid, i, e);
}

static void sift_down(struct shard *s, uint32_t sid, uint32_t i,
                      struct heap_ent e)
{
    for (;;) {
        uint32_t c = i * ARITY + 1;
        if (c >= s->size)
            break;
        uint32_t end = c + ARITY < s->size ? c + ARITY : s->size;
        uint32_t m = c;
        for (uint32_t j = c + 1; j < end; j++)
            if (s->heap[j].when < s->heap[m].when)
                m = j;
        if (e.when <= s->heap[m].when)
            break;
        set_slot(s, sid, i, s->heap[m]);
        i = m;
    }
    set_slot(s, sid, i, e);
}

static void remove_at(struct shard *s, uint32_t sid, uint32_t i)
{
    /* Release: pairs with ctx__timer_remove's lock-free check, after which
     * the node may be freed. */
    atomic_store_explicit(&s->heap[i].node->u.c.heap_idx, CTX_NO_HEAP,
                          memory_order_release);
    s->size--;
    if (i == s->size)
        return;
    struct heap_ent last = s->heap[s->size];
    if (i > 0 && last.when < s->heap[(i - 1) / ARITY].when)
        sift_up(s, sid, i, last);
    else
        sift_down(s, sid, i, last);
}

/* Fires what is due in one shard; returns its earliest pending deadline. */
static ctx_time_t fire_shard(uint32_t sid)
{
    struct shard *s = &shards[sid];
    ctx__lock(&s->lock);
    ctx_time_t now = ctx_now();
    while (s->size > 0 && s->heap[0].when <= now) {
        ctx_t *n = s->heap[0].node;
        /* Take the reference before leaving the heap: once its slot says
         * "not in a heap", a node whose count reached zero is freed without
         * this lock, so remove_at must be the last touch of a dying node. */
        bool alive = ctx__try_retain(n);
        remove_at(s, sid, 0);
        if (!alive)
            continue;
        ctx__unlock(&s->lock);
        ctx__cancel(n, CTX_DEADLINE_EXCEEDED,
                    atomic_load_explicit(&n->u.c.cause, memory_order_relaxed));
        ctx_release(n);
        ctx__lock(&s->lock);
        now = ctx_now();
    }
    ctx_time_t next = s->size > 0 ? s->heap[0].when : CTX_TIME_MAX;
    ctx__unlock(&s->lock);
    return next;
}

static void *timer_main(void *arg)
{
    (void)arg;
    for (;;) {
        /* While scanning, planned is "never": an insert meanwhile lowers it
         * and bumps wake_seq, which sends us round again. */
        atomic_store(&planned, CTX_TIME_MAX);
        uint32_t seq = atomic_load(&wake_seq);
        ctx_time_t next = CTX_TIME_MAX;
        for (uint32_t i = 0; i < SHARDS; i++) {
            ctx_time_t t = fire_shard(i);
            if (t < next)
                next = t;
        }
        ctx_time_t expected = CTX_TIME_MAX;
        if (!atomic_compare_exchange_strong(&planned, &expected, next))
            continue;
        ctx__futex_wait(&wake_seq, seq, next);
    }
    return NULL;
}

static void atfork_prepare(void)
{
    ctx__lock(&start_lock);
    for (int i = 0; i < SHARDS; i++)
        ctx__lock(&shards[i].lock);
}

static void atfork_parent(void)
{
    for (int i = SHARDS - 1; i >= 0; i--)
        ctx__unlock(&shards[i].lock);
    ctx__unlock(&start_lock);
}

static void atfork_child(void)
{
    /* The thread did not survive the fork, and the contexts in the heaps
     * belong to the parent: start afresh. Every node still in a heap is
     * alive (a node leaves its heap, under the shard lock that prepare
     * took, before it is freed): mark it out of the heap, so that its
     * cancel or release in the child does not remove it from a slot that
     * now belongs to another node, or to none. */
    for (int i = 0; i < SHARDS; i++) {
        for (uint32_t j = 0; j < shards[i].size; j++)
            atomic_store_explicit(&shards[i].heap[j].node->u.c.heap_idx,
                                  CTX_NO_HEAP, memory_order_relaxed);
        shards[i].size = 0;
        atomic_store(&shards[i].lock, 0);
    }
    atomic_store(&started, false);
    atomic_store(&planned, CTX_TIME_MAX);
    atomic_store(&wake_seq, 0);
    atomic_store(&start_lock, 0);
}

static void timer_init(void)
{
    ctx__platform_init(); /* the parking lot's fork slot (fallback) */
    ctx__atfork_register(CTX__FORK_TIMER, atfork_prepare, atfork_parent,
                         atfork_child);
}

/* The thread blocks every signal, so that signals meant for the
 * application's threads never land on it. */
static int ensure_started(void)
{
    if (atomic_load_explicit(&started, memory_order_acquire))
        return 0;
    pthread_once(&timer_once, timer_init);
    int e = 0;
    ctx__lock(&start_lock);
    if (!atomic_load_explicit(&started, memory_order_relaxed)) {
        pthread_t th;
        e = ctx__thread_start(&th, timer_main, NULL, true);
        if (e == 0)
            atomic_store_explicit(&started, true, memory_order_release);
    }
    ctx__unlock(&start_lock);
    return e;
}

int ctx__timer_insert(ctx_t *c)
{
    int e = ensure_started();
    if (e != 0)
        return e;
    if (my_shard < 0)
        my_shard = (int)(atomic_fetch_add(&next_shard, 1) % SHARDS);
    uint32_t sid = (uint32_t)my_shard;
    struct shard *s = &shards[sid];
    ctx_time_t when = c->u.c.deadline;

    ctx__lock(&s->lock);
    if (s->size == s->cap) {
        uint32_t cap = s->cap != 0 ? s->cap * 2 : 64;
        struct heap_ent *h = cap > SLOT_MASK ? NULL
                             : ctx__realloc(s->heap, (size_t)cap * sizeof *h);
        if (h == NULL) {
            ctx__unlock(&s->lock);
            return ENOMEM;
        }
        s->heap = h;
        s->cap = cap;
    }
    s->size++;
    sift_up(s, sid, s->size - 1, (struct heap_ent){when, c});
    /* seq_cst: pairs with mark_done's store of err then load of heap_idx. */
    atomic_store(&c->u.c.heap_idx,
                 atomic_load_explicit(&c->u.c.heap_idx, memory_order_relaxed));
    ctx__unlock(&s->lock);

    ctx_time_t p = atomic_load_explicit(&planned, memory_order_relaxed);
    while (when < p) {
        if (atomic_compare_exchange_weak(&planned, &p, when)) {
            atomic_fetch_add(&wake_seq, 1);
            ctx__futex_wake_all(&wake_seq);
            break;
        }
    }
    return 0;
}

void ctx__timer_remove(ctx_t *c)
{
    uint32_t idx = atomic_load(&c->u.c.heap_idx);
    if (idx == CTX_NO_HEAP)
        return;
    /* A node's shard never changes once it is in a heap. */
    uint32_t sid = idx >> SHARD_SHIFT;
    struct shard *s = &shards[sid];
    ctx__lock(&s->lock);
    idx = atomic_load_explicit(&c->u.c.heap_idx, memory_order_relaxed);
    if (idx != CTX_NO_HEAP)
        remove_at(s, sid, idx & SLOT_MASK);
    ctx__unlock(&s->lock);
}
