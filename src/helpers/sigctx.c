/* Signal contexts (Go's signal.NotifyContext). The handler only writes the
 * signal number to a pipe (async-signal-safe); a watcher thread reads it and
 * cancels the contexts watching that signal. The handler, the pipe and the
 * thread exist only while at least one signal context is live.
 *
 * The watcher is detached and frees itself: ending the last signal context
 * never waits for it, since it may be busy running another context's
 * after-funcs (user code that may wait for the thread that ends it). */
#include "ctx/sigctx.h"

#include "alloc.h"
#include "platform.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

/* The value that records which signal ended a signal context; a value node
 * so that ctx_signal_caught() works on descendants too. */
struct box {
    _Atomic int sig;
};
static const ctx_key_t box_key = CTX_KEY("signal");

struct entry {
    struct entry *next, *prev;
    unsigned gen; /* fork generation: entries from before fork() are inert */
    ctx_t *ctx; /* own reference, dropped when the entry ends */
    struct box *box;
    ctx_after_t *reg;
    bool registered;  /* reg is set */
    bool ended_early; /* on_done ran before reg was set */
    bool fired;       /* a signal is cancelling it */
    sigset_t set;
    size_t n;
    int sigs[];
};

struct watcher {
    struct watcher *next; /* in `watchers`, until its pipe is closed */
    int rfd, wfd;
    bool stop; /* leave the loop */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *entries;
static struct watcher *cur;
static struct watcher *watchers; /* every watcher whose pipe is open */
static unsigned gen;             /* bumped in a forked child */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static unsigned watching[NSIG];
static struct sigaction saved[NSIG];

/* Read by the handler: only lock-free atomics there. */
static _Atomic int handler_fd = -1;
static _Atomic int in_handler;

static void on_signal(int sig)
{
    int saved_errno = errno;
    atomic_fetch_add(&in_handler, 1);
    int fd = atomic_load(&handler_fd);
    if (fd >= 0) {
        unsigned char b = (unsigned char)sig;
        /* Non-blocking: when the pipe is full, signals coalesce anyway. */
        ssize_t r = write(fd, &b, 1);
        (void)r;
    }
    atomic_fetch_sub(&in_handler, 1);
    errno = saved_errno;
}

/* Cancels, outside the lock, every entry watching sig. */
static void deliver(int sig)
{
    enum { BATCH = 32 };
    for (;;) {
        ctx_t *batch[BATCH];
        struct box *boxes[BATCH];
        int nb = 0;
        pthread_mutex_lock(&mu);
        for (struct entry *e = entries; e != NULL && nb < BATCH; e = e->next) {
            /* A context already ended otherwise (its on_done has not
             * unlinked it yet) was not cancelled by this signal. */
            if (e->fired || !sigismember(&e->set, sig) ||
                ctx_is_done(e->ctx))
                continue;
            e->fired = true;
            atomic_store(&e->box->sig, sig);
            boxes[nb] = e->box; /* lives in a parent of e->ctx */
            batch[nb++] = ctx_retain(e->ctx);
        }
        pthread_mutex_unlock(&mu);
        for (int i = 0; i < nb; i++) {
            (void)ctx_cancel_cause(batch[i], EINTR);
            /* Another cancellation won the race: not the signal's doing. */
            if (ctx_cause(batch[i]) != EINTR)
                atomic_store(&boxes[i]->sig, 0);
            ctx_release(batch[i]);
        }
        if (nb < BATCH)
            return;
    }
}

static void *watch_main(void *arg)
{
    struct watcher *w = arg;
    for (;;) {
        unsigned char buf[64];
        ssize_t r = read(w->rfd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != 0)
                deliver(buf[i]);
        }
        pthread_mutex_lock(&mu);
        bool stop = w->stop || r <= 0;
        pthread_mutex_unlock(&mu);
        if (stop)
            break;
    }
    pthread_mutex_lock(&mu);
    if (cur == w) { /* the read failed: nobody stopped us */
        cur = NULL;
        atomic_store(&handler_fd, -1);
    }
    pthread_mutex_unlock(&mu);
    /* handler_fd no longer names our pipe; wait out a handler that loaded
     * it before, so that it never writes into a reused fd number. */
    while (atomic_load(&in_handler) != 0)
        sched_yield();
    /* Closed under mu, so that a fork() sees the pipe open and listed, or
     * closed and unlisted. */
    pthread_mutex_lock(&mu);
    close(w->rfd);
    close(w->wfd);
    for (struct watcher **pw = &watchers; *pw != NULL; pw = &(*pw)->next) {
        if (*pw == w) {
            *pw = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    ctx__free(w);
    return NULL;
}

/* Under mu: a watcher with its pipe, running with every signal blocked. */
static int start_watcher(void)
{
    struct watcher *w = ctx__calloc(1, sizeof *w);
    if (w == NULL)
        return ENOMEM;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        int e = errno;
        ctx__free(w);
        return e;
    }
    (void)fcntl(fds[1], F_SETFL, O_NONBLOCK);
    w->rfd = fds[0];
    w->wfd = fds[1];
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    if (err == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t tid;
        err = pthread_create(&tid, &attr, watch_main, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        close(fds[0]);
        close(fds[1]);
        ctx__free(w);
        return err;
    }
    cur = w;
    w->next = watchers;
    watchers = w;
    atomic_store(&handler_fd, w->wfd);
    return 0;
}

/* Under mu: unlinks e, restores the dispositions nobody watches any more,
 * and stops the watcher when e was the last entry (it exits on its own). */
static void remove_locked(struct entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        entries = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    for (size_t i = 0; i < e->n; i++) {
        int s = e->sigs[i];
        if (--watching[s] == 0)
            sigaction(s, &saved[s], NULL);
    }
    if (entries != NULL || cur == NULL)
        return;
    struct watcher *w = cur;
    cur = NULL;
    atomic_store(&handler_fd, -1);
    w->stop = true;
    unsigned char zero = 0;
    ssize_t r = write(w->wfd, &zero, 1);
    (void)r; /* a full pipe wakes the reader as well */
}

static void finish_entry(struct entry *e)
{
    ctx_after_stop(e->reg);
    ctx_release(e->ctx);
    ctx__free(e);
}

/* After-func: the context ended (signal, cancel, parent): stop watching. */
static void on_done(void *arg)
{
    struct entry *e = arg;
    pthread_mutex_lock(&mu);
    if (e->gen != gen) {
        /* Made before fork(), in this forked child: not in the lists any
         * more, and its context is the parent's. Leave it alone. */
        pthread_mutex_unlock(&mu);
        return;
    }
    if (!e->registered) {
        e->ended_early = true; /* ctx_with_signals() finishes it */
        pthread_mutex_unlock(&mu);
        return;
    }
    remove_locked(e);
    pthread_mutex_unlock(&mu);
    finish_entry(e);
}

/* fork(): the child has no watcher thread, and the parent's signal contexts
 * are not usable there. Give the child a clean slate: the program's own
 * dispositions back, the watchers' pipes closed (the child's handler must
 * never write into the parent's pipe), no entries; the child may then make
 * signal contexts of its own. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&mu);
}

static void fork_child(void)
{
    atomic_store(&handler_fd, -1);
    atomic_store(&in_handler, 0); /* no other thread exists here */
    for (int s = 1; s < NSIG; s++) {
        if (watching[s] != 0) {
            watching[s] = 0;
            sigaction(s, &saved[s], NULL);
        }
    }
    while (watchers != NULL) {
        struct watcher *w = watchers;
        watchers = w->next;
        close(w->rfd);
        close(w->wfd);
        ctx__free(w);
    }
    cur = NULL;
    entries = NULL; /* the parent's: left as they are, inert (see gen) */
    gen++;
    pthread_mutex_unlock(&mu);
}

static void fork_init(void)
{
    ctx__atfork_register(CTX__FORK_SIGCTX, fork_prepare, fork_parent,
                         fork_child);
}

static void box_free(void *v)
{
    ctx__free(v);
}

static bool watchable(int s)
{
    return s > 0 && s < NSIG && s != SIGKILL && s != SIGSTOP && s != SIGSEGV &&
           s != SIGBUS && s != SIGFPE && s != SIGILL;
}

static ctx_t *fail_null(int err)
{
    errno = err;
    return NULL;
}

ctx_t *ctx_with_signals(ctx_t *parent, const int *signals, size_t n)
{
    if (parent == NULL || signals == NULL || n == 0 || n > NSIG)
        return fail_null(EINVAL);
    for (size_t i = 0; i < n; i++) {
        if (!watchable(signals[i]))
            return fail_null(EINVAL);
    }
    struct box *box = ctx__calloc(1, sizeof *box);
    if (box == NULL)
        return fail_null(ENOMEM);
    ctx_t *v = ctx_with_value(parent, &box_key, box, box_free);
    if (v == NULL) {
        int err = errno;
        ctx__free(box);
        return fail_null(err);
    }
    ctx_t *c = ctx_with_cancel(v);
    ctx_release(v);
    if (c == NULL)
        return NULL;
    struct entry *e = ctx__calloc(1, sizeof *e + n * sizeof e->sigs[0]);
    if (e == NULL) {
        ctx_release(c);
        return fail_null(ENOMEM);
    }
    e->ctx = ctx_retain(c);
    e->box = box;
    e->n = n;
    sigemptyset(&e->set);
    for (size_t i = 0; i < n; i++) {
        e->sigs[i] = signals[i];
        sigaddset(&e->set, signals[i]);
    }

    pthread_once(&fork_once, fork_init);
    pthread_mutex_lock(&mu);
    e->gen = gen;
    int err = cur == NULL ? start_watcher() : 0;
    if (err != 0) {
        pthread_mutex_unlock(&mu);
        ctx_release(e->ctx);
        ctx__free(e);
        ctx_release(c);
        return fail_null(err);
    }
    e->next = entries;
    if (entries != NULL)
        entries->prev = e;
    entries = e;
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < n; i++) {
        int s = signals[i];
        if (watching[s]++ == 0)
            sigaction(s, &sa, &saved[s]);
    }
    pthread_mutex_unlock(&mu);

    /* Never inline: a context done already (its parent was) gives NULL,
     * and is finished below, as one that ends before e->reg is set. */
    ctx_after_t *reg =
        ctx_after_func_flags(c, on_done, e, CTX_AFTER_NO_INLINE);
    err = reg == NULL && !ctx_is_done(c) ? (errno != 0 ? errno : ENOMEM) : 0;
    pthread_mutex_lock(&mu);
    e->reg = reg;
    e->registered = true;
    bool end = reg == NULL || e->ended_early;
    if (end)
        remove_locked(e);
    pthread_mutex_unlock(&mu);
    if (err != 0) {
        finish_entry(e);
        ctx_release(c);
        return fail_null(err);
    }
    if (end)
        finish_entry(e);
    return c;
}

int ctx_signal_caught(ctx_t *ctx)
{
    struct box *b = ctx != NULL ? ctx_value(ctx, &box_key) : NULL;
    return b != NULL ? atomic_load(&b->sig) : 0;
}
