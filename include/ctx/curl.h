/*
 * libctx-curl: libcurl transfers bounded by a context (Go's
 * http.NewRequestWithContext + client.Do).
 *
 *     ctx_t *c = ctx_with_timeout(parent, 100 * CTX_MILLISECOND);
 *     CURLcode rc = ctx_curl_perform(c, easy);   // instead of curl_easy_perform
 *     if (rc == CURLE_OPERATION_TIMEDOUT && ctx_err(c) != 0) ... // the budget
 *     ctx_cancel(c); ctx_release(c);
 *
 * The rule for "the context ended first", stated once for this header: the
 * transfer is stopped (its connection closed, so the server sees the client
 * go away) and reported in curl's vocabulary, CURLE_ABORTED_BY_CALLBACK when
 * the context was cancelled and CURLE_OPERATION_TIMEDOUT when its deadline
 * passed, with ctx_err() already set when the result is seen. This happens
 * within milliseconds in every phase: name resolution, connecting, waiting
 * for the first byte on an idle connection, mid-body.
 *
 * Link with libctx-curl (pkg-config libctx-curl, CMake ctx::curl).
 */
#ifndef CTX_CURL_H
#define CTX_CURL_H

#include <ctx.h>
#include <curl/curl.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * curl_easy_perform() bounded by ctx. Runs the transfer of `easy` on a
 * private multi handle cached per thread (its connection and DNS caches are
 * shared by the calls of that thread, so keep-alive works across calls) and
 * wakes it through curl_multi_wakeup() when ctx ends: no thread and no fd
 * per call. The handle leaves the call as it came: no option is changed,
 * except CURLOPT_QUICK_EXIT, which is set back to 0 (curl's default) after a
 * transfer stopped during name resolution (see docs/integrations/curl.md).
 *
 * Returns curl's own result when the transfer ends first, including the
 * application's CURLOPT_TIMEOUT_MS (CURLE_OPERATION_TIMEDOUT) and its
 * progress, xferinfo and write callbacks; a curl timeout that fires within
 * a few milliseconds before ctx's deadline is reported as ctx's deadline
 * (ctx_err() set). When ctx ends first, or is already done:
 * CURLE_ABORTED_BY_CALLBACK (cancelled) or CURLE_OPERATION_TIMEDOUT
 * (deadline), ctx_err() set. NULL ctx or easy, or a handle that is in a
 * multi handle already (also one being performed): CURLE_BAD_FUNCTION_ARGUMENT;
 * out of memory: CURLE_OUT_OF_MEMORY. A call made from inside a curl
 * callback of another ctx_curl_perform() of the same thread works, on a
 * temporary multi handle of its own (no connection reuse).
 *
 * Threads: as curl_easy_perform(): one call per easy handle at a time. ctx
 * may be cancelled from any thread. The per-thread multi handle is freed
 * when the thread exits, or by ctx_curl_thread_cleanup().
 */
CTX_API CURLcode ctx_curl_perform(ctx_t *ctx, CURL *easy);

/*
 * Frees the calling thread's cached multi handle and closes the idle
 * connections it keeps (ctx_curl_perform() makes a new one when next
 * called). Thread exit does the same; call this before curl_global_cleanup()
 * in the thread that used ctx_curl_perform(), or to drop kept-alive
 * connections. Must not be called from inside a curl callback of a
 * ctx_curl_perform() of the same thread (it then does nothing).
 */
CTX_API void ctx_curl_thread_cleanup(void);

/*
 * Contexts for transfers in the application's own multi handle, for
 * event-driven programs: each easy handle is bound to its own context; when
 * a bound context ends, the transfer is removed from the multi handle and
 * completed with CURLE_ABORTED_BY_CALLBACK or CURLE_OPERATION_TIMEDOUT, and
 * curl_multi_poll() is woken (curl_multi_wakeup()). No thread and no fd per
 * transfer. The loop uses three calls of this layer in place of curl's:
 *
 *     ctx_curl_multi_t *cm = ctx_curl_multi_new(multi);
 *     ctx_curl_multi_add_handle(cm, easy, ctx);     // per transfer
 *     do {
 *         ctx_curl_multi_perform(cm, &running);
 *         while ((msg = ctx_curl_multi_info_read(cm, &left)) != NULL)
 *             if (msg->msg == CURLMSG_DONE) {
 *                 ... msg->data.result ...
 *                 ctx_curl_multi_remove_handle(cm, msg->easy_handle);
 *             }
 *         curl_multi_poll(multi, NULL, 0, 1000, NULL);
 *     } while (running > 0 || ctx_curl_multi_pending(cm) > 0);
 *     ctx_curl_multi_free(cm);
 *
 * Lifetime: the layer borrows the multi handle, which must outlive it
 * (ctx_curl_multi_free() before curl_multi_cleanup()); each bound easy
 * handle stays bound until ctx_curl_multi_remove_handle() (before
 * curl_easy_cleanup()). Threads: like the multi handle itself, every call of
 * this layer is made by the one thread that drives the multi handle; the
 * bound contexts may end in any thread.
 */
typedef struct ctx_curl_multi ctx_curl_multi_t;

/* Wraps `multi` (borrowed). Returns a new layer to free with
 * ctx_curl_multi_free(), or NULL with errno EINVAL (NULL multi) or ENOMEM. */
CTX_API ctx_curl_multi_t *ctx_curl_multi_new(CURLM *multi);

/* Unbinds every easy handle still bound (they stay in the multi handle as
 * they are) and frees the layer. NULL is a no-op. */
CTX_API void ctx_curl_multi_free(ctx_curl_multi_t *cm);

/* curl_multi_add_handle() with `easy` bound to ctx (the binding holds a
 * reference to ctx until ctx_curl_multi_remove_handle()). If ctx is already
 * done, the handle is bound but not added: its completion is queued at once
 * (see ctx_curl_multi_info_read()). Returns CURLM_OK, CURLM_BAD_HANDLE
 * (NULL cm), CURLM_BAD_EASY_HANDLE (NULL easy or ctx, or easy already
 * bound), CURLM_OUT_OF_MEMORY, or curl_multi_add_handle()'s error (nothing
 * bound then). */
CTX_API CURLMcode ctx_curl_multi_add_handle(ctx_curl_multi_t *cm, CURL *easy,
                                            ctx_t *ctx);

/* Unbinds `easy` (releasing its context) and curl_multi_remove_handle()s it;
 * a transfer that its context stopped was already removed. Returns CURLM_OK,
 * CURLM_BAD_HANDLE (NULL cm), CURLM_BAD_EASY_HANDLE (NULL easy), or
 * curl_multi_remove_handle()'s error. An easy handle that is not bound is
 * only removed from the multi handle. */
CTX_API CURLMcode ctx_curl_multi_remove_handle(ctx_curl_multi_t *cm,
                                               CURL *easy);

/* Stops the transfers whose contexts have ended (removing them from the
 * multi handle and queueing their completion), then curl_multi_perform().
 * *running_handles counts curl's running transfers only. Returns
 * curl_multi_perform()'s code, or CURLM_BAD_HANDLE (NULL cm). */
CTX_API CURLMcode ctx_curl_multi_perform(ctx_curl_multi_t *cm,
                                         int *running_handles);

/* curl_multi_info_read() with the completions of stopped transfers mixed
 * in: a CURLMSG_DONE message whose data.result is CURLE_ABORTED_BY_CALLBACK
 * (context cancelled) or CURLE_OPERATION_TIMEDOUT (deadline), ctx_err() of
 * the bound context set. Stops the ended transfers first, as
 * ctx_curl_multi_perform() does. The message is owned by the layer and
 * valid until the next call of this function or the handle's removal.
 * Returns NULL when no message is left (and for NULL cm);
 * *msgs_in_queue, if not NULL, is set to the messages still queued. */
CTX_API CURLMsg *ctx_curl_multi_info_read(ctx_curl_multi_t *cm,
                                          int *msgs_in_queue);

/* The completions queued by the layer and not read yet, plus the bound
 * transfers whose contexts have ended and that are not stopped yet: a loop
 * that runs while running_handles > 0 also runs while this is > 0. NULL: 0. */
CTX_API int ctx_curl_multi_pending(ctx_curl_multi_t *cm);

#ifdef __cplusplus
}
#endif
#endif /* CTX_CURL_H */
