/* The library's allocations.
 *
 * Allocation-failure injection (CTX_FAULT_INJECTION builds only): every
 * allocation of the library goes through ctx__malloc/calloc/realloc (see
 * alloc.h), which count the attempts and fail the armed one with ENOMEM, as
 * SQLite's OOM tests and curl's torture mode do. The hooks are declared in
 * ctx_testing.h. Lock-free: any thread may allocate while a test arms. */
#ifdef CTX_FAULT_INJECTION

#include "alloc.h"
#include "ctx_testing.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>

/* The attempt number that fails (1-based since the last arming); 0: none. */
static _Atomic long fail_at;
/* Attempts since the last arming. */
static _Atomic long attempts;
static _Atomic bool triggered;

void ctx__fault_fail_nth(long n)
{
    /* Disarm first so that an allocation racing with the re-arming cannot
     * match the new target against the old count. */
    atomic_store_explicit(&fail_at, 0, memory_order_seq_cst);
    atomic_store_explicit(&attempts, 0, memory_order_seq_cst);
    atomic_store_explicit(&triggered, false, memory_order_seq_cst);
    atomic_store_explicit(&fail_at, n > 0 ? n : 0, memory_order_seq_cst);
}

long ctx__fault_allocs(void)
{
    return atomic_load_explicit(&attempts, memory_order_seq_cst);
}

bool ctx__fault_triggered(void)
{
    return atomic_load_explicit(&triggered, memory_order_seq_cst);
}

/* Counts one attempt; true if it is the one to fail. */
bool ctx__fault_should_fail(void)
{
    long n = atomic_fetch_add_explicit(&attempts, 1, memory_order_seq_cst) + 1;
    long target = atomic_load_explicit(&fail_at, memory_order_seq_cst);
    if (target == 0 || n != target)
        return false;
    atomic_store_explicit(&triggered, true, memory_order_seq_cst);
    errno = ENOMEM;
    return true;
}

void *ctx__malloc(size_t size)
{
    return ctx__fault_should_fail() ? NULL : malloc(size);
}

void *ctx__calloc(size_t n, size_t size)
{
    return ctx__fault_should_fail() ? NULL : calloc(n, size);
}

void *ctx__realloc(void *p, size_t size)
{
    /* A failed realloc leaves the block untouched, as realloc does. */
    return ctx__fault_should_fail() ? NULL : realloc(p, size);
}

#endif
