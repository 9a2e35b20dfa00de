// ctx.h and the helper headers compile as C++, and their functions link
// with C linkage.
#include <ctx.h>
#include <ctx/group.h>
#include <ctx/io.h>
#include <ctx/propagate.h>
#include <ctx/sigctx.h>

#include <cstdio>

static const ctx_key_t key = CTX_KEY("cpp");

int main()
{
    ctx_t *c = ctx_with_cancel(ctx_background());
    int value = 42;
    ctx_t *v = ctx_with_value(c, &key, &value, nullptr);
    ctx_cancel_cause(c, EPIPE);
    bool ok = ctx_is_done(v) && ctx_cause(v) == EPIPE &&
              *static_cast<int *>(ctx_value(v, &key)) == 42;
    {
        ctx_t *d CTX_DEFER_CANCEL = ctx_with_timeout(v, CTX_SECOND);
        ok = ok && ctx_err(d) == CTX_CANCELED;
    }
    ok = ok && ctx_sleep(v, CTX_MILLISECOND) == CTX_CANCELED;
    std::printf("C++: %s\n", ok ? "ok" : "FAILED");
    ctx_release(v);
    ctx_release(c);
    return ok ? 0 : 1;
}
