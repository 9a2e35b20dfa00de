/* Every allocation of the library goes through these, so that builds with
 * CTX_FAULT_INJECTION can fail the Nth one (see ctx_testing.h). */
#ifndef CTX_ALLOC_H
#define CTX_ALLOC_H

#include <stdlib.h>

#ifdef CTX_FAULT_INJECTION
void *ctx__malloc(size_t size);
void *ctx__calloc(size_t n, size_t size);
void *ctx__realloc(void *p, size_t size);
#else
static inline void *ctx__malloc(size_t size) { return malloc(size); }
static inline void *ctx__calloc(size_t n, size_t size) { return calloc(n, size); }
static inline void *ctx__realloc(void *p, size_t size) { return realloc(p, size); }
#endif
static inline void ctx__free(void *p) { free(p); }

#endif
