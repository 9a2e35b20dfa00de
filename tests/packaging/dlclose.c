/* dlopen() the shared libctx, use it from several threads (deadlines that
 * fire and deadlines that are cancelled, so the timer thread runs and each
 * thread's node cache holds freed nodes), dlclose() it while those threads
 * live, then let them exit and let time pass: the detached timer thread
 * wakes for a deadline planned before the dlclose, and each thread's
 * node-cache destructor runs at its exit. Language bindings unload their
 * libraries this way. Before libctx was linked with -z nodelete, the
 * library was unmapped under both: SIGSEGV. Exits 0 when the process
 * survives, 1 with a message otherwise.
 *
 * Usage: packaging_dlclose PATH-TO-libctx.so
 * Links neither libctx nor its headers' inline functions: everything goes
 * through dlsym(). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ctx ctx_t;
typedef int64_t ctx_time_t;
#define MS ((int64_t)1000000)

static struct {
    ctx_t *(*background)(void);
    ctx_t *(*with_cancel)(ctx_t *);
    ctx_t *(*with_timeout)(ctx_t *, int64_t);
    ctx_t *(*with_deadline)(ctx_t *, ctx_time_t);
    ctx_time_t (*now)(void);
    int (*cancel)(ctx_t *);
    void (*release)(ctx_t *);
    int (*wait)(ctx_t *);
} api;

enum { THREADS = 4, ROUNDS = 200 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;     /* threads done with the library */
static bool unloaded; /* main has called dlclose() */
static _Atomic int failures;

static void fail(const char *what)
{
    atomic_fetch_add(&failures, 1);
    fprintf(stderr, "packaging_dlclose: %s\n", what);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        ctx_t *c = api.with_cancel(api.background());
        ctx_t *d = api.with_timeout(c, 10 * 1000 * MS); /* cancelled */
        ctx_t *e = api.with_timeout(d, (i % 20 == 0) ? 1 * MS : 10 * 1000 * MS);
        if (c == NULL || d == NULL || e == NULL) {
            fail("a constructor returned NULL");
            break;
        }
        if (i % 20 == 0 && api.wait(e) != ETIMEDOUT) /* fired by the timer */
            fail("a 1 ms timeout did not end with ETIMEDOUT");
        api.cancel(c);
        api.release(e);
        api.release(d);
        api.release(c);
    }
    /* This thread's node cache now holds freed nodes; its destructor runs
     * at thread exit, after the dlclose(). */
    pthread_mutex_lock(&mu);
    ready++;
    pthread_cond_broadcast(&cv);
    while (!unloaded)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *sym(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (p == NULL) {
        fprintf(stderr, "packaging_dlclose: dlsym(%s): %s\n", name, dlerror());
        exit(1);
    }
    return p;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-TO-libctx.so\n", argv[0]);
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "packaging_dlclose: dlopen: %s\n", dlerror());
        return 1;
    }
    *(void **)&api.background = sym(h, "ctx_background");
    *(void **)&api.with_cancel = sym(h, "ctx_with_cancel");
    *(void **)&api.with_timeout = sym(h, "ctx_with_timeout");
    *(void **)&api.with_deadline = sym(h, "ctx_with_deadline");
    *(void **)&api.now = sym(h, "ctx_now");
    *(void **)&api.cancel = sym(h, "ctx_cancel");
    *(void **)&api.release = sym(h, "ctx_release");
    *(void **)&api.wait = sym(h, "ctx_wait");

    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "packaging_dlclose: pthread_create failed\n");
            return 1;
        }
    }
    pthread_mutex_lock(&mu);
    while (ready < THREADS)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    /* The timer thread plans to wake 100 ms from now for this deadline; it
     * is released at once, so the wake-up finds nothing to fire, but the
     * thread runs library code then, after the dlclose(). */
    ctx_t *later = api.with_deadline(api.background(), api.now() + 100 * MS);
    if (later == NULL)
        fail("ctx_with_deadline returned NULL");
    api.release(later);
    /* Main's own node cache too. */
    api.release(api.with_cancel(api.background()));

    if (dlclose(h) != 0) {
        fprintf(stderr, "packaging_dlclose: dlclose: %s\n", dlerror());
        return 1;
    }
    memset(&api, 0, sizeof api);

    /* The workers exit now: their node-cache destructors run. */
    pthread_mutex_lock(&mu);
    unloaded = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* Not a synchronisation: the time in which an unmapped library would
     * crash this process (the timer's planned wake-up is at 100 ms). */
    pause_ms(400);
    if (atomic_load(&failures) != 0)
        return 1;
    printf("packaging_dlclose: %d threads used libctx, dlclose(), threads "
           "exited, 400 ms passed: no crash\n", THREADS);
    return 0;
}
