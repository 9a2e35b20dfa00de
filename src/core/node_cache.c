/* The per-thread cache of freed context nodes (see alloc.h). */
#include "alloc.h"
#include "ctx_int.h"

#include <pthread.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define CTX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTX_ASAN 1
#endif
#endif
/* Under ASan the cache is off: reusing a block at once would hide a use of
 * a stale context behind the new context that took its memory, which ASan's
 * quarantine of freed blocks reports. (Valgrind builds turn it off with
 * CTX_NODE_CACHE=OFF for the same reason.) */
#if defined(CTX_NO_NODE_CACHE) || defined(CTX_ASAN)
void *ctx__node_block_get(size_t size)
{
    return ctx__malloc(size);
}

void ctx__node_block_put(void *p, size_t size)
{
    (void)size;
    ctx__free(p);
}
#else

/* Up to 32 blocks per size: 2.8 KiB of cancel nodes and 1.5 KiB of value
 * nodes per thread at most, enough for a request's worth of contexts. */
#define CACHE_MAX 32
enum { CLASS_CANCEL, CLASS_VALUE, N_CLASSES };

/* A cached block is linked through its last pointer-sized word, not its
 * first: the debug poison of a freed node (its magic, at the start) stays
 * in place for the misuse checks. */
struct block_cache {
    void *top[N_CLASSES];
    uint8_t n[N_CLASSES];
    uint8_t state; /* enum below */
};
enum { CACHE_NEW, CACHE_ON, CACHE_OFF };

/* The default TLS model, so that libctx.so can be dlopen()ed (by other
 * languages' bindings); linked into an executable, the linker relaxes it to
 * a load off the thread pointer. */
static _Thread_local struct block_cache tl_cache;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_err = -1;

static int class_of(size_t size)
{
    if (size == CTX_CANCEL_SIZE)
        return CLASS_CANCEL;
    if (size == CTX_VALUE_SIZE)
        return CLASS_VALUE;
    return -1;
}

static void **link_of(void *p, size_t size)
{
    return (void **)((char *)p + size - sizeof(void *));
}

static void cache_drain(struct block_cache *c)
{
    static const size_t sizes[N_CLASSES] = {CTX_CANCEL_SIZE, CTX_VALUE_SIZE};
    for (int k = 0; k < N_CLASSES; k++) {
        while (c->top[k] != NULL) {
            void *p = c->top[k];
            c->top[k] = *link_of(p, sizes[k]);
            free(p);
        }
        c->n[k] = 0;
    }
}

/* Thread exit: the blocks go back to malloc, and the blocks of contexts
 * freed by later exit handlers go straight there. */
static void cache_exit(void *arg)
{
    struct block_cache *c = arg;
    cache_drain(c);
    c->state = CACHE_OFF;
}

static void cache_key_init(void)
{
    cache_key_err = pthread_key_create(&cache_key, cache_exit);
}

/* The first put of a thread registers the exit handler; without one the
 * thread does not cache. */
static bool cache_enable(struct block_cache *c)
{
    pthread_once(&cache_once, cache_key_init);
    if (cache_key_err != 0 || pthread_setspecific(cache_key, c) != 0) {
        c->state = CACHE_OFF;
        return false;
    }
    c->state = CACHE_ON;
    return true;
}

void *ctx__node_block_get(size_t size)
{
#ifdef CTX_FAULT_INJECTION
    if (ctx__fault_should_fail())
        return NULL;
#endif
    struct block_cache *c = &tl_cache;
    int k = class_of(size);
    if (k >= 0 && c->top[k] != NULL) {
        void *p = c->top[k];
        c->top[k] = *link_of(p, size);
        c->n[k]--;
        return p;
    }
    return malloc(size);
}

void ctx__node_block_put(void *p, size_t size)
{
    struct block_cache *c = &tl_cache;
    int k = class_of(size);
    if (k < 0 || c->n[k] >= CACHE_MAX || c->state == CACHE_OFF ||
        (c->state == CACHE_NEW && !cache_enable(c))) {
        free(p);
        return;
    }
    *link_of(p, size) = c->top[k];
    c->top[k] = p;
    c->n[k]++;
}
#endif
