/* libctx-uv: a uv_poll_t on a notifier's fd (see <ctx/uv.h>). */
#include <ctx/uv.h>

#include <errno.h>
#include <stddef.h>

static ctx_uv_t *from_poll(uv_poll_t *p)
{
    return (ctx_uv_t *)(void *)((char *)p - offsetof(ctx_uv_t, poll_));
}

/* Referenced exactly while a callback is still to come. */
static void update_ref(ctx_uv_t *h)
{
    if (h->closing_)
        return;
    if (ctx_notify_active(h->n_) > 0)
        uv_ref((uv_handle_t *)&h->poll_);
    else
        uv_unref((uv_handle_t *)&h->poll_);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    (void)status; /* an eventfd or pipe reports no error of its own */
    (void)events;
    ctx_uv_t *h = from_poll(p);
    ctx_notify_dispatch(h->n_);
    update_ref(h);
}

static void on_closed(uv_handle_t *handle)
{
    ctx_uv_t *h = from_poll((uv_poll_t *)handle);
    (void)ctx_notify_free(h->n_); /* no active watch: cannot fail */
    h->n_ = NULL;
    if (h->close_cb_ != NULL)
        h->close_cb_(h);
}

CTX_API int ctx_uv_init(uv_loop_t *loop, ctx_uv_t *h)
{
    if (loop == NULL || h == NULL)
        return UV_EINVAL;
    h->close_cb_ = NULL;
    h->closing_ = 0;
    h->n_ = ctx_notify_new();
    if (h->n_ == NULL)
        return uv_translate_sys_error(errno);
    int r = uv_poll_init(loop, &h->poll_, ctx_notify_fd(h->n_));
    if (r != 0) {
        (void)ctx_notify_free(h->n_);
        h->n_ = NULL;
        return r;
    }
    r = uv_poll_start(&h->poll_, UV_READABLE, on_readable);
    if (r != 0) {
        /* The poll handle exists now and can only be closed through the
         * loop: free the notifier when that is done. */
        h->closing_ = 1;
        uv_close((uv_handle_t *)&h->poll_, on_closed);
        return r;
    }
    uv_unref((uv_handle_t *)&h->poll_);
    return 0;
}

CTX_API int ctx_uv_watch(ctx_uv_t *h, ctx_uv_watch_t *w, ctx_t *ctx,
                         ctx_uv_watch_cb cb)
{
    if (h == NULL || h->n_ == NULL || h->closing_)
        return UV_EINVAL;
    int e = ctx_notify_watch(h->n_, w, ctx, cb);
    if (e != 0)
        return uv_translate_sys_error(e);
    update_ref(h);
    return 0;
}

CTX_API bool ctx_uv_unwatch(ctx_uv_t *h, ctx_uv_watch_t *w)
{
    if (h == NULL || h->n_ == NULL)
        return false;
    bool prevented = ctx_notify_unwatch(w);
    update_ref(h);
    return prevented;
}

CTX_API int ctx_uv_close(ctx_uv_t *h, ctx_uv_close_cb close_cb)
{
    if (h == NULL || h->n_ == NULL || h->closing_)
        return UV_EINVAL;
    if (ctx_notify_active(h->n_) != 0)
        return UV_EBUSY;
    h->closing_ = 1;
    h->close_cb_ = close_cb;
    uv_close((uv_handle_t *)&h->poll_, on_closed);
    return 0;
}
