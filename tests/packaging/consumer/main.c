/* A program that uses the installed library. */
#include <ctx.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    static const ctx_key_t k = CTX_KEY("who");
    ctx_t *c = ctx_with_timeout(ctx_background(), 5 * CTX_MILLISECOND);
    ctx_t *v = ctx_with_value(c, &k, "consumer", NULL);
    int err = ctx_wait(v);
    char buf[128];
    ctx_format(v, buf, sizeof buf);
    int ok = err == CTX_DEADLINE_EXCEEDED &&
             strcmp(ctx_value(v, &k), "consumer") == 0 &&
             strncmp(buf, "context.Background.WithDeadline(", 32) == 0;
    printf("libctx %s: %s -> %s\n", CTX_VERSION_STRING, buf, ctx_strerror(err));
    ctx_release(v);
    ctx_release(c);
    return ok ? 0 : 1;
}
