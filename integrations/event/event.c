/* libctx-event: one persistent event on a notifier's fd (<ctx/event.h>). */
#include <ctx/event.h>

#include <errno.h>
#include <stdlib.h>

struct ctx_event {
    ctx_notify_t *n;
    struct event *ev;
    bool added;
};

/* Pending exactly while a callback is still to come. */
static void update_added(ctx_event_t *ce)
{
    bool want = ctx_notify_active(ce->n) > 0;
    if (want == ce->added)
        return;
    /* event_add() of an initialized event without a timeout fails only on
     * out-of-memory in the backend; keep the state honest if it does. */
    if (want)
        ce->added = event_add(ce->ev, NULL) == 0;
    else
        ce->added = event_del(ce->ev) != 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ctx_event_t *ce = arg;
    ctx_notify_dispatch(ce->n);
    update_added(ce);
}

CTX_API ctx_event_t *ctx_event_new(struct event_base *base)
{
    if (base == NULL) {
        errno = EINVAL;
        return NULL;
    }
    ctx_event_t *ce = calloc(1, sizeof *ce);
    if (ce == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    ce->n = ctx_notify_new();
    if (ce->n == NULL) {
        int e = errno;
        free(ce);
        errno = e;
        return NULL;
    }
    ce->ev = event_new(base, ctx_notify_fd(ce->n), EV_READ | EV_PERSIST,
                       on_readable, ce);
    if (ce->ev == NULL) {
        (void)ctx_notify_free(ce->n);
        free(ce);
        errno = ENOMEM;
        return NULL;
    }
    return ce;
}

CTX_API int ctx_event_free(ctx_event_t *ce)
{
    if (ce == NULL)
        return 0;
    if (ctx_notify_active(ce->n) != 0) {
        errno = EBUSY;
        return -1;
    }
    event_free(ce->ev); /* deletes it first if pending */
    (void)ctx_notify_free(ce->n);
    free(ce);
    return 0;
}

CTX_API int ctx_event_watch(ctx_event_t *ce, ctx_event_watch_t *w, ctx_t *ctx,
                            ctx_event_watch_cb cb)
{
    if (ce == NULL) {
        errno = EINVAL;
        return -1;
    }
    int e = ctx_notify_watch(ce->n, w, ctx, cb);
    if (e != 0) {
        errno = e;
        return -1;
    }
    update_added(ce);
    if (!ce->added) { /* the event could not be added: nothing would come */
        (void)ctx_notify_unwatch(w);
        update_added(ce);
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

CTX_API bool ctx_event_unwatch(ctx_event_t *ce, ctx_event_watch_t *w)
{
    if (ce == NULL)
        return false;
    bool prevented = ctx_notify_unwatch(w);
    update_added(ce);
    return prevented;
}
