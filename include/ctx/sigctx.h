/*
 * libctx signal contexts: Go's signal.NotifyContext.
 *
 *     static const int sigs[] = {SIGINT, SIGTERM};
 *     ctx_t *root CTX_DEFER_CANCEL =
 *         ctx_with_signals(ctx_background(), sigs, 2);
 *     serve(root);          // returns when SIGINT or SIGTERM arrives
 *     if (ctx_signal_caught(root)) ...
 *
 * How it works, and what it asks of the program:
 *  - While at least one signal context watches a signal, the library owns
 *    that signal's disposition: it installs (sigaction, SA_RESTART) a handler
 *    that only writes the signal number to a pipe, and a watcher thread
 *    reads the pipe and cancels the contexts. Nothing else runs in the
 *    handler. When the last context watching a signal ends, the disposition
 *    the program had before is restored (so a second Ctrl-C after shutdown
 *    began kills the process, as in Go after stop()), and when no signal
 *    context is left the watcher thread exits and the pipe is closed (the
 *    thread is detached: it finishes shortly after, never waited for, so
 *    ending a signal context never waits for another's after-funcs).
 *  - Signal masks: a process-directed signal (kill, Ctrl-C) is handled by
 *    any thread that does not block it, so no mask change is needed in
 *    threads created before or after the call. A thread may block the
 *    signals; at least one thread (for example the main one) must not, or
 *    the signal stays pending and the context is never cancelled. Do not
 *    call sigaction() or signal() for a watched signal yourself meanwhile,
 *    and do not sigwait() for it in another thread: either takes the signal
 *    away from the library.
 *  - The watcher thread blocks every signal, so it never runs a handler.
 *  - fork(): in the child, the dispositions the program had before are
 *    restored and the watcher's pipe is closed, so a signal sent to the
 *    child never reaches the parent's contexts; the parent's signal
 *    contexts are not usable there (see ctx.h) and never fire, and the child
 *    may make signal contexts of its own.
 */
#ifndef CTX_SIGCTX_H
#define CTX_SIGCTX_H

#include <ctx.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A new reference to a cancellable child of `parent` that is cancelled when
 * the process receives one of signals[0..n): err CTX_CANCELED, cause EINTR;
 * ctx_signal_caught() then names the signal. Cancelling it (ctx_cancel(), or
 * its parent ending) stops the watch, like Go's stop(): cancel it when done,
 * for example with CTX_DEFER_CANCEL. Releasing it without cancelling keeps
 * the watch, and the context, alive until a signal arrives.
 * Returns NULL with errno: EINVAL (NULL parent or signals, n == 0, a signal
 * number that is out of range or SIGKILL, SIGSTOP or one of the signals
 * that report faults: SIGSEGV, SIGBUS, SIGFPE, SIGILL), ENOMEM, EMFILE,
 * EAGAIN (the watcher thread could not start). */
CTX_API ctx_t *ctx_with_signals(ctx_t *parent, const int *signals, size_t n);

/* The signal that cancelled the signal context `ctx` or its nearest
 * signal-context ancestor, or 0 (none yet, not a signal context, NULL). */
CTX_API int ctx_signal_caught(ctx_t *ctx);

#ifdef __cplusplus
}
#endif

#endif /* CTX_SIGCTX_H */
