/* Test hooks: internal symbols (ctx__ prefix, hidden in the shared library),
 * reachable by tests that link the static library. */
#ifndef CTX_TESTING_H
#define CTX_TESTING_H

#include <stdbool.h>

#ifdef CTX_FAULT_INJECTION
/* The nth allocation from now fails with ENOMEM (1 = the next one); 0 turns
 * failing off. Resets the counter read by ctx__fault_allocs(). Global to the
 * process; thread-safe. */
void ctx__fault_fail_nth(long n);
/* Allocations attempted since the last ctx__fault_fail_nth(). */
long ctx__fault_allocs(void);
/* Whether the armed failure has happened since the last ctx__fault_fail_nth(). */
bool ctx__fault_triggered(void);
#endif

#ifdef CTX_DEBUG
struct ctx;
/* Contexts (not counting the static roots) and after-func registrations
 * allocated and not yet freed, process-wide. */
long ctx__live_contexts(void);
long ctx__live_afters(void);
/* Sets a context's reference count, to provoke the overflow check. */
void ctx__debug_set_refs(struct ctx *c, unsigned refs);
/* The shared executor's workers, started and not yet leaving. */
long ctx__executor_workers(void);
#endif

#endif
