/* Thread groups (errgroup.WithContext + WaitGroup). Every member thread is
 * joined: finished members are reaped by the next ctx_group_go() and by
 * ctx_group_wait(), so the number of threads stays bounded by `limit` plus
 * the ones finishing. */
#include "ctx/group.h"

#include "alloc.h"

#include <pthread.h>
#include <stdbool.h>

struct member {
    struct member *next;
    struct ctx_group *g;
    ctx_group_fn fn;
    void *arg;
    pthread_t tid;
};

struct ctx_group {
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* a member finished */
    ctx_t *ctx;              /* the group's context (own reference) */
    unsigned limit;          /* 0: none */
    unsigned running;        /* started, not finished */
    struct member *finished; /* finished, not joined yet */
    int first_err;
};

ctx_group_t *ctx_group_new(ctx_t *parent, unsigned limit)
{
    if (parent == NULL) {
        errno = EINVAL;
        return NULL;
    }
    struct ctx_group *g = ctx__calloc(1, sizeof *g);
    if (g == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    g->ctx = ctx_with_cancel(parent);
    if (g->ctx == NULL) {
        int e = errno;
        ctx__free(g);
        errno = e;
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->limit = limit;
    return g;
}

ctx_t *ctx_group_ctx(ctx_group_t *g)
{
    return g != NULL ? g->ctx : NULL;
}

/* The member is over: it returned, called pthread_exit() or was cancelled
 * (a cleanup handler then). The last touch of g and m: once on the finished
 * list, a waiter may join this thread and free both. */
static void member_done(void *arg)
{
    struct member *m = arg;
    struct ctx_group *g = m->g;
    pthread_mutex_lock(&g->mu);
    g->running--;
    m->next = g->finished;
    g->finished = m;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

static void *member_main(void *arg)
{
    struct member *m = arg;
    struct ctx_group *g = m->g;
    int err = 0;
    pthread_cleanup_push(member_done, m);
    err = m->fn(g->ctx, m->arg);
    bool first = false;
    if (err != 0) {
        pthread_mutex_lock(&g->mu);
        if (g->first_err == 0) {
            g->first_err = err;
            first = true;
        }
        pthread_mutex_unlock(&g->mu);
    }
    if (first)
        (void)ctx_cancel_cause(g->ctx, err);
    pthread_cleanup_pop(1);
    return NULL;
}

static void unlock_mu(void *mu)
{
    pthread_mutex_unlock(mu);
}

static void join_all(struct member *m)
{
    while (m != NULL) {
        struct member *next = m->next;
        pthread_join(m->tid, NULL);
        ctx__free(m);
        m = next;
    }
}

static int group_go(ctx_group_t *g, ctx_group_fn fn, void *arg, bool block)
{
    if (g == NULL || fn == NULL)
        return EINVAL;
    struct member *m = ctx__calloc(1, sizeof *m);
    if (m == NULL)
        return ENOMEM;
    m->g = g;
    m->fn = fn;
    m->arg = arg;

    pthread_mutex_lock(&g->mu);
    /* pthread_cond_wait is a cancellation point. */
    pthread_cleanup_push(ctx__free, m);
    pthread_cleanup_push(unlock_mu, &g->mu);
    while (g->limit != 0 && g->running >= g->limit) {
        if (!block)
            break;
        pthread_cond_wait(&g->cond, &g->mu);
    }
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    if (g->limit != 0 && g->running >= g->limit) {
        pthread_mutex_unlock(&g->mu);
        ctx__free(m);
        return EAGAIN;
    }
    struct member *reap = g->finished;
    g->finished = NULL;
    g->running++;
    int err = pthread_create(&m->tid, NULL, member_main, m);
    if (err != 0) {
        g->running--;
        pthread_cond_broadcast(&g->cond);
    }
    pthread_mutex_unlock(&g->mu);
    if (err != 0)
        ctx__free(m);
    join_all(reap);
    return err;
}

int ctx_group_go(ctx_group_t *g, ctx_group_fn fn, void *arg)
{
    return group_go(g, fn, arg, true);
}

int ctx_group_try_go(ctx_group_t *g, ctx_group_fn fn, void *arg)
{
    return group_go(g, fn, arg, false);
}

int ctx_group_wait(ctx_group_t *g)
{
    if (g == NULL)
        return EINVAL;
    pthread_mutex_lock(&g->mu);
    /* pthread_cond_wait is a cancellation point: leave mu free then. */
    pthread_cleanup_push(unlock_mu, &g->mu);
    while (g->running > 0)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_cleanup_pop(0);
    struct member *reap = g->finished;
    g->finished = NULL;
    int err = g->first_err;
    pthread_mutex_unlock(&g->mu);
    join_all(reap);
    (void)ctx_cancel(g->ctx);
    return err;
}

unsigned ctx_group_running(ctx_group_t *g)
{
    if (g == NULL)
        return 0;
    pthread_mutex_lock(&g->mu);
    unsigned n = g->running;
    pthread_mutex_unlock(&g->mu);
    return n;
}

void ctx_group_free(ctx_group_t *g)
{
    if (g == NULL)
        return;
    (void)ctx_group_wait(g);
    ctx_release(g->ctx);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->mu);
    ctx__free(g);
}
