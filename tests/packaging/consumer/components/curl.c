/* Consumes the installed libctx-curl: a transfer under a cancelled context
 * stops with CURLE_ABORTED_BY_CALLBACK (no server needed). */
#include <ctx/curl.h>

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, "http://127.0.0.1:9/");
    ctx_t *ctx = ctx_with_cancel(ctx_background());
    ctx_cancel(ctx);
    int ok = ctx_curl_perform(ctx, easy) == CURLE_ABORTED_BY_CALLBACK &&
             ctx_curl_perform(NULL, easy) == CURLE_BAD_FUNCTION_ARGUMENT;
    ctx_release(ctx);
    curl_easy_cleanup(easy);
    ctx_curl_thread_cleanup();
    curl_global_cleanup();
    return ok ? 0 : 1;
}
