/*
 * libctx-curl: libcurl transfers bounded by a context.
 *
 * ctx_curl_perform() drives the easy handle itself on a private multi handle
 * (one per thread, cached) and sleeps in curl_multi_poll(). An after-func on
 * the context calls curl_multi_wakeup() when it ends, which writes to the
 * multi handle's own socketpair: the poll returns at once, in any phase,
 * without a thread or an fd per call. The after-func runs in the cancelling
 * thread or the timer thread; curl_multi_wakeup() is a non-blocking send(),
 * so it never blocks either.
 *
 * The ctx_curl_multi_* layer does the same for the application's multi
 * handle: the after-func of each bound transfer queues it on a locked list
 * and wakes the multi handle; the thread that drives the multi handle stops
 * the queued transfers (curl_multi_remove_handle) and reports them as
 * CURLMSG_DONE messages.
 */
#include <ctx/curl.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A curl timeout that fires this close to the context's deadline is taken
 * for the deadline (curl rounds its timers to milliseconds). */
#define CURL_DEADLINE_SLACK (5 * CTX_MILLISECOND)
/* How long to wait for the timer thread to mark such a deadline. */
#define CURL_DEADLINE_WAIT (100 * CTX_MILLISECOND)
/* curl_multi_poll's own cap; the wake comes from curl_multi_wakeup(). */
#define CURL_POLL_MS 1000

static CURLcode ended_code(ctx_t *ctx)
{
    return ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? CURLE_OPERATION_TIMEDOUT
                                                 : CURLE_ABORTED_BY_CALLBACK;
}

static void wake_multi(void *arg)
{
    (void)curl_multi_wakeup((CURLM *)arg);
}

/* Removes a transfer that is being stopped. Curl 7.87 and later join a
 * threaded-resolver thread still resolving on removal, unless
 * CURLOPT_QUICK_EXIT is set, which detaches it instead (it finishes on its
 * own and frees itself). Before the name is resolved, set it for the removal
 * and put curl's default back. */
static CURLMcode remove_stopped(CURLM *multi, CURL *easy)
{
    curl_off_t lookup = 0;
    bool quick = curl_easy_getinfo(easy, CURLINFO_NAMELOOKUP_TIME_T,
                                   &lookup) == CURLE_OK &&
                 lookup == 0;
    if (quick)
        (void)curl_easy_setopt(easy, CURLOPT_QUICK_EXIT, 1L);
    CURLMcode mc = curl_multi_remove_handle(multi, easy);
    if (quick)
        (void)curl_easy_setopt(easy, CURLOPT_QUICK_EXIT, 0L);
    return mc;
}

/* ---- the per-thread multi handle ----------------------------------------- */

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static bool tls_key_ok;
static unsigned long fork_gen; /* bumped in a forked child */

static _Thread_local CURLM *tls_multi;
static _Thread_local bool tls_busy;
static _Thread_local unsigned long tls_gen;

static void tls_destroy(void *m)
{
    if (m != NULL && tls_multi == m && tls_gen == fork_gen)
        curl_multi_cleanup((CURLM *)m);
    tls_multi = NULL;
}

/* The child must not use (or clean up) a multi handle whose connections
 * share their sockets with the parent: it forgets it. */
static void tls_atfork_child(void)
{
    fork_gen++;
}

static void tls_init(void)
{
    tls_key_ok = pthread_key_create(&tls_key, tls_destroy) == 0;
    (void)pthread_atfork(NULL, NULL, tls_atfork_child);
}

/* The calling thread's multi handle, made on first use; NULL when out of
 * memory. *temp is set when the cached one is busy (a call from inside a
 * callback of another call): a temporary one is returned instead. */
static CURLM *multi_get(bool *temp)
{
    *temp = false;
    if (tls_multi != NULL && tls_gen != fork_gen) {
        tls_multi = NULL; /* inherited over fork(): leaked on purpose */
        tls_busy = false;
    }
    if (tls_busy) {
        *temp = true;
        return curl_multi_init();
    }
    if (tls_multi == NULL) {
        pthread_once(&tls_once, tls_init);
        if (!tls_key_ok) {
            *temp = true;
            return curl_multi_init();
        }
        CURLM *m = curl_multi_init();
        if (m == NULL)
            return NULL;
        if (pthread_setspecific(tls_key, m) != 0) {
            curl_multi_cleanup(m);
            return NULL;
        }
        tls_multi = m;
        tls_gen = fork_gen;
    }
    tls_busy = true;
    return tls_multi;
}

static void multi_put(CURLM *m, bool temp)
{
    if (temp)
        curl_multi_cleanup(m);
    else
        tls_busy = false;
}

void ctx_curl_thread_cleanup(void)
{
    if (tls_multi == NULL || tls_busy)
        return;
    CURLM *m = tls_multi;
    tls_multi = NULL;
    if (tls_key_ok)
        (void)pthread_setspecific(tls_key, NULL);
    if (tls_gen == fork_gen)
        curl_multi_cleanup(m);
}

/* ---- ctx_curl_perform --------------------------------------------------- */

static CURLcode multi_code(CURLMcode mc)
{
    return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
                                     : CURLE_BAD_FUNCTION_ARGUMENT;
}

/* Runs the transfer until it completes (*ended false, curl's result) or ctx
 * ends (*ended true). */
static CURLcode drive(ctx_t *ctx, CURLM *m, CURL *easy, bool *ended)
{
    *ended = false;
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc != CURLM_OK)
            return multi_code(mc);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
                return msg->data.result;
        }
        if (ctx_is_done(ctx)) {
            *ended = true;
            return CURLE_OK;
        }
        mc = curl_multi_poll(m, NULL, 0, CURL_POLL_MS, NULL);
        if (mc != CURLM_OK)
            return multi_code(mc);
        if (ctx_is_done(ctx)) {
            *ended = true;
            return CURLE_OK;
        }
    }
}

/* curl's own timeout fired: if ctx's deadline is (almost) here, report that
 * instead, once the timer thread has marked it. */
static bool curl_timeout_is_deadline(ctx_t *ctx)
{
    ctx_time_t d;
    if (ctx_is_done(ctx))
        return true;
    if (!ctx_deadline(ctx, &d) || d > ctx_now() + CURL_DEADLINE_SLACK)
        return false;
    return ctx_wait_until(ctx, d + CURL_DEADLINE_WAIT) != 0;
}

CURLcode ctx_curl_perform(ctx_t *ctx, CURL *easy)
{
    if (ctx == NULL || easy == NULL)
        return CURLE_BAD_FUNCTION_ARGUMENT;
    if (ctx_is_done(ctx))
        return ended_code(ctx);

    bool temp;
    CURLM *m = multi_get(&temp);
    if (m == NULL)
        return CURLE_OUT_OF_MEMORY;
    CURLMcode mc = curl_multi_add_handle(m, easy);
    if (mc != CURLM_OK) {
        multi_put(m, temp);
        return multi_code(mc);
    }
    CURLcode res;
    bool ended;
    ctx_after_t *reg =
        ctx_after_func_flags(ctx, wake_multi, m, CTX_AFTER_NO_INLINE);
    if (reg == NULL) {
        ended = errno == CTX_CANCELED || errno == CTX_DEADLINE_EXCEEDED;
        res = ended ? CURLE_OK : CURLE_OUT_OF_MEMORY;
    } else {
        res = drive(ctx, m, easy, &ended);
        /* Waits for a wake running in another thread: m stays valid. A wake
         * that came after the last poll leaves a byte in the socketpair,
         * which the next call's first poll drains (one spare round). */
        (void)ctx_after_stop(reg);
    }
    if (ended)
        (void)remove_stopped(m, easy);
    else
        (void)curl_multi_remove_handle(m, easy);
    multi_put(m, temp);

    if (ended)
        return ended_code(ctx);
    if (res == CURLE_OPERATION_TIMEDOUT && curl_timeout_is_deadline(ctx))
        return CURLE_OPERATION_TIMEDOUT;
    return res;
}

/* ---- the multi layer ------------------------------------------------------ */

enum bstate {
    B_ACTIVE,    /* in the multi handle, transfer running */
    B_STOPPED,   /* stopped by its context: removed, completion queued */
    B_COMPLETED, /* curl reported CURLMSG_DONE for it */
};

struct binding {
    CURL *easy;
    ctx_t *ctx;          /* own reference */
    ctx_after_t *reg;    /* NULL when ctx was done at add */
    ctx_curl_multi_t *cm;
    struct binding *hnext;              /* hash chain */
    struct binding *enext;              /* ended list, under cm->mu */
    bool in_ended;                      /* under cm->mu */
    struct binding *qprev, *qnext;      /* completion queue */
    bool queued;
    enum bstate state;
    CURLMsg msg;
};

struct ctx_curl_multi {
    CURLM *multi;
    pthread_mutex_t mu;
    struct binding *ended; /* contexts ended, not handled yet (mu) */
    int nended;            /* (mu) */
    struct binding **table;
    size_t nbuckets, count;
    struct binding *qhead, *qtail;
    int nq;
};

static size_t bucket_of(const ctx_curl_multi_t *cm, const CURL *easy)
{
    uint64_t h = (uint64_t)(uintptr_t)easy * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (cm->nbuckets - 1);
}

static struct binding *lookup(ctx_curl_multi_t *cm, const CURL *easy)
{
    for (struct binding *b = cm->table[bucket_of(cm, easy)]; b; b = b->hnext)
        if (b->easy == easy)
            return b;
    return NULL;
}

static int table_grow(ctx_curl_multi_t *cm)
{
    size_t n = cm->nbuckets * 2;
    struct binding **t = calloc(n, sizeof *t);
    if (t == NULL)
        return ENOMEM;
    struct binding **old = cm->table;
    size_t oldn = cm->nbuckets;
    cm->table = t;
    cm->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (struct binding *b = old[i], *next; b != NULL; b = next) {
            next = b->hnext;
            size_t k = bucket_of(cm, b->easy);
            b->hnext = t[k];
            t[k] = b;
        }
    }
    free(old);
    return 0;
}

static void unhash(ctx_curl_multi_t *cm, struct binding *b)
{
    struct binding **pp = &cm->table[bucket_of(cm, b->easy)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    cm->count--;
}

static void enqueue(ctx_curl_multi_t *cm, struct binding *b)
{
    b->msg.msg = CURLMSG_DONE;
    b->msg.easy_handle = b->easy;
    b->msg.data.result = ended_code(b->ctx);
    b->qnext = NULL;
    b->qprev = cm->qtail;
    if (cm->qtail != NULL)
        cm->qtail->qnext = b;
    else
        cm->qhead = b;
    cm->qtail = b;
    b->queued = true;
    cm->nq++;
}

static void dequeue(ctx_curl_multi_t *cm, struct binding *b)
{
    if (b->qprev != NULL)
        b->qprev->qnext = b->qnext;
    else
        cm->qhead = b->qnext;
    if (b->qnext != NULL)
        b->qnext->qprev = b->qprev;
    else
        cm->qtail = b->qprev;
    b->qprev = b->qnext = NULL;
    b->queued = false;
    cm->nq--;
}

/* The after-func: in the cancelling thread or the timer thread. */
static void binding_ended(void *arg)
{
    struct binding *b = arg;
    ctx_curl_multi_t *cm = b->cm;
    pthread_mutex_lock(&cm->mu);
    b->enext = cm->ended;
    cm->ended = b;
    b->in_ended = true;
    cm->nended++;
    pthread_mutex_unlock(&cm->mu);
    (void)curl_multi_wakeup(cm->multi);
}

/* Stops the transfers whose contexts have ended. */
static void stop_ended(ctx_curl_multi_t *cm)
{
    pthread_mutex_lock(&cm->mu);
    struct binding *list = cm->ended;
    cm->ended = NULL;
    cm->nended = 0;
    for (struct binding *b = list; b != NULL; b = b->enext)
        b->in_ended = false;
    pthread_mutex_unlock(&cm->mu);
    /* The list is LIFO: reverse it so completions come in order of ending. */
    struct binding *rev = NULL;
    while (list != NULL) {
        struct binding *next = list->enext;
        list->enext = rev;
        rev = list;
        list = next;
    }
    for (struct binding *b = rev; b != NULL; b = b->enext) {
        if (b->state != B_ACTIVE)
            continue;
        (void)remove_stopped(cm->multi, b->easy);
        b->state = B_STOPPED;
        enqueue(cm, b);
    }
}

ctx_curl_multi_t *ctx_curl_multi_new(CURLM *multi)
{
    if (multi == NULL) {
        errno = EINVAL;
        return NULL;
    }
    ctx_curl_multi_t *cm = calloc(1, sizeof *cm);
    if (cm == NULL)
        return NULL;
    cm->nbuckets = 64;
    cm->table = calloc(cm->nbuckets, sizeof *cm->table);
    if (cm->table == NULL || pthread_mutex_init(&cm->mu, NULL) != 0) {
        free(cm->table);
        free(cm);
        errno = ENOMEM;
        return NULL;
    }
    cm->multi = multi;
    return cm;
}

static void binding_free(struct binding *b)
{
    if (b->reg != NULL)
        (void)ctx_after_stop(b->reg); /* waits for a running binding_ended */
    ctx_release(b->ctx);
    free(b);
}

void ctx_curl_multi_free(ctx_curl_multi_t *cm)
{
    if (cm == NULL)
        return;
    for (size_t i = 0; i < cm->nbuckets; i++) {
        for (struct binding *b = cm->table[i], *next; b != NULL; b = next) {
            next = b->hnext;
            binding_free(b);
        }
    }
    free(cm->table);
    pthread_mutex_destroy(&cm->mu);
    free(cm);
}

CURLMcode ctx_curl_multi_add_handle(ctx_curl_multi_t *cm, CURL *easy,
                                    ctx_t *ctx)
{
    if (cm == NULL)
        return CURLM_BAD_HANDLE;
    if (easy == NULL || ctx == NULL || lookup(cm, easy) != NULL)
        return CURLM_BAD_EASY_HANDLE;
    if (cm->count >= cm->nbuckets && table_grow(cm) != 0)
        return CURLM_OUT_OF_MEMORY;
    struct binding *b = calloc(1, sizeof *b);
    if (b == NULL)
        return CURLM_OUT_OF_MEMORY;
    b->easy = easy;
    b->cm = cm;
    b->ctx = ctx_retain(ctx);

    bool done = ctx_is_done(ctx);
    if (!done) {
        CURLMcode mc = curl_multi_add_handle(cm->multi, easy);
        if (mc != CURLM_OK) {
            ctx_release(b->ctx);
            free(b);
            return mc;
        }
        b->reg = ctx_after_func_flags(ctx, binding_ended, b,
                                      CTX_AFTER_NO_INLINE);
        if (b->reg == NULL) {
            if (errno != CTX_CANCELED && errno != CTX_DEADLINE_EXCEEDED) {
                (void)curl_multi_remove_handle(cm->multi, easy);
                ctx_release(b->ctx);
                free(b);
                return CURLM_OUT_OF_MEMORY;
            }
            (void)remove_stopped(cm->multi, easy);
            done = true;
        }
    }
    size_t k = bucket_of(cm, easy);
    b->hnext = cm->table[k];
    cm->table[k] = b;
    cm->count++;
    if (done) {
        b->state = B_STOPPED;
        enqueue(cm, b);
        (void)curl_multi_wakeup(cm->multi); /* the next poll returns at once */
    } else {
        b->state = B_ACTIVE;
    }
    return CURLM_OK;
}

CURLMcode ctx_curl_multi_remove_handle(ctx_curl_multi_t *cm, CURL *easy)
{
    if (cm == NULL)
        return CURLM_BAD_HANDLE;
    if (easy == NULL)
        return CURLM_BAD_EASY_HANDLE;
    struct binding *b = lookup(cm, easy);
    if (b != NULL) {
        if (b->reg != NULL) {
            (void)ctx_after_stop(b->reg);
            b->reg = NULL;
        }
        pthread_mutex_lock(&cm->mu);
        if (b->in_ended) {
            struct binding **pp = &cm->ended;
            while (*pp != b)
                pp = &(*pp)->enext;
            *pp = b->enext;
            b->in_ended = false;
            cm->nended--;
        }
        pthread_mutex_unlock(&cm->mu);
        if (b->queued)
            dequeue(cm, b);
        unhash(cm, b);
        bool stopped = b->state == B_STOPPED;
        binding_free(b);
        if (stopped)
            return CURLM_OK; /* removed already */
    }
    return curl_multi_remove_handle(cm->multi, easy);
}

CURLMcode ctx_curl_multi_perform(ctx_curl_multi_t *cm, int *running_handles)
{
    if (cm == NULL)
        return CURLM_BAD_HANDLE;
    stop_ended(cm);
    return curl_multi_perform(cm->multi, running_handles);
}

CURLMsg *ctx_curl_multi_info_read(ctx_curl_multi_t *cm, int *msgs_in_queue)
{
    int left = 0;
    if (cm == NULL) {
        if (msgs_in_queue != NULL)
            *msgs_in_queue = 0;
        return NULL;
    }
    stop_ended(cm);
    CURLMsg *msg = curl_multi_info_read(cm->multi, &left);
    if (msg != NULL) {
        if (msg->msg == CURLMSG_DONE) {
            struct binding *b = lookup(cm, msg->easy_handle);
            if (b != NULL && b->state == B_ACTIVE)
                b->state = B_COMPLETED;
        }
    } else if (cm->qhead != NULL) {
        struct binding *b = cm->qhead;
        dequeue(cm, b);
        msg = &b->msg;
    }
    if (msgs_in_queue != NULL)
        *msgs_in_queue = left + cm->nq;
    return msg;
}

int ctx_curl_multi_pending(ctx_curl_multi_t *cm)
{
    if (cm == NULL)
        return 0;
    pthread_mutex_lock(&cm->mu);
    int n = cm->nended;
    pthread_mutex_unlock(&cm->mu);
    return n + cm->nq;
}
