/* Every allocation of the library goes through these, so that builds with
 * CTX_FAULT_INJECTION can fail the Nth one (see ctx_testing.h). */
#ifndef CTX_ALLOC_H
#define CTX_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

#ifdef CTX_FAULT_INJECTION
#include <stdbool.h>
/* Counts one allocation attempt; true when it is the one armed to fail. */
bool ctx__fault_should_fail(void);
void *ctx__malloc(size_t size);
void *ctx__calloc(size_t n, size_t size);
void *ctx__realloc(void *p, size_t size);
#else
static inline void *ctx__malloc(size_t size) { return malloc(size); }
static inline void *ctx__calloc(size_t n, size_t size) { return calloc(n, size); }
static inline void *ctx__realloc(void *p, size_t size) { return realloc(p, size); }
#endif
static inline void ctx__free(void *p) { free(p); }

/* Context nodes. A node is made and freed once per derivation, often by the
 * same thread within microseconds, so each thread keeps a small stack of
 * freed node blocks of each node size and reuses them before calling malloc
 * (CTX_NODE_CACHE=OFF, and ASan builds: always malloc/free). A block freed by another thread
 * than the one that made it simply joins the freeing thread's stack. Blocks
 * go back to malloc when the stack is full and when the thread exits.
 * ctx__node_block_get() counts as one allocation for fault injection and
 * fails like ctx__malloc(); `size` must be the same at get and put. */
void *ctx__node_block_get(size_t size);
void ctx__node_block_put(void *p, size_t size);

#endif
