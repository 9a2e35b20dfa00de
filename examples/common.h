/* Shared by the example programs: timestamped output, a live thread count,
 * and a tiny Go-style channel of ints built on ctx_cond_wait_pred(). */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <ctx.h>
#include <ctx/io.h>

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- output: one line per event, with elapsed milliseconds ----------------
 * Elapsed since DEMO_T0 (ms since the Unix epoch, set by scripts/demo.sh so
 * that several processes share one clock), else since the program started. */
static double ex_t0_ms = -1;

static inline double ex_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline void ex_init(void)
{
    const char *t0 = getenv("DEMO_T0");
    ex_t0_ms = t0 != NULL ? strtod(t0, NULL) : ex_wall_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static inline double ex_elapsed_ms(void)
{
    if (ex_t0_ms < 0)
        ex_init();
    return ex_wall_ms() - ex_t0_ms;
}

/* Prints "[   123 ms] <who>: <message>" as one line (one write). */
__attribute__((format(printf, 2, 3))) static inline void
ex_log(const char *who, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("[%6.0f ms] %-7s %s\n", ex_elapsed_ms(), who, msg);
}

/* Threads of this process (Go's runtime.NumGoroutine()). */
static inline int ex_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Waits (up to 2 s) until the thread count is n and returns the last count:
 * a thread that has returned, even one already joined, leaves /proc a
 * moment later. A leaked thread never does. */
static inline int ex_threads_settle(int n)
{
    ctx_time_t end = ctx_now() + 2 * CTX_SECOND;
    int got;
    while ((got = ex_threads()) != n && ctx_now() < end)
        ctx_sleep(ctx_background(), CTX_MILLISECOND);
    return got;
}

static inline void *ex_noop(void *arg)
{
    return arg;
}

/* Sanitizer runtimes (TSan) start a helper thread of their own with the
 * first pthread_create(): start and join one thread before taking a
 * baseline thread count. */
static inline void ex_threads_warm_up(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, ex_noop, NULL) == 0)
        pthread_join(t, NULL);
}

/* ---- a channel of ints -------------------------------------------------
 * cap 0: unbuffered, a send waits until a receiver took the value (Go's
 * make(chan int)); cap 1: one slot, a send waits only while the slot is full
 * (make(chan int, 1)). Both ends honour a context: ctx_cond_wait_pred() is
 * Go's select { case ch <- v: ... case <-ctx.Done(): ... }. */
typedef struct ex_chan {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int cap;
    bool full;
    int value;
    unsigned long sent, taken; /* tickets: an unbuffered send waits for its */
    unsigned long want;        /* (scratch for the predicate) */
} ex_chan_t;

static inline void ex_chan_init(ex_chan_t *ch, int cap)
{
    memset(ch, 0, sizeof *ch);
    pthread_mutex_init(&ch->mu, NULL);
    pthread_cond_init(&ch->cond, NULL);
    ch->cap = cap;
}

static inline void ex_chan_destroy(ex_chan_t *ch)
{
    pthread_cond_destroy(&ch->cond);
    pthread_mutex_destroy(&ch->mu);
}

static inline bool ex_chan_empty_slot(void *arg)
{
    return !((ex_chan_t *)arg)->full;
}

static inline bool ex_chan_has_value(void *arg)
{
    return ((ex_chan_t *)arg)->full;
}

struct ex_ticket {
    ex_chan_t *ch;
    unsigned long n;
};

static inline bool ex_chan_ticket_taken(void *arg)
{
    struct ex_ticket *t = arg;
    return t->ch->taken >= t->n;
}

/* Sends v; returns 0, or ctx_err(ctx) if ctx ended first (v not sent). */
static inline int ex_chan_send(ex_chan_t *ch, ctx_t *ctx, int v)
{
    pthread_mutex_lock(&ch->mu);
    int err =
        ctx_cond_wait_pred(ctx, &ch->cond, &ch->mu, ex_chan_empty_slot, ch);
    if (err == 0) {
        ch->full = true;
        ch->value = v;
        struct ex_ticket t = {ch, ++ch->sent};
        pthread_cond_broadcast(&ch->cond);
        if (ch->cap == 0) {
            err = ctx_cond_wait_pred(ctx, &ch->cond, &ch->mu,
                                     ex_chan_ticket_taken, &t);
            if (err != 0 && ch->full && ch->sent == t.n) {
                ch->full = false; /* nobody took it: take it back */
                ch->sent--;
                pthread_cond_broadcast(&ch->cond);
            } else {
                err = 0; /* taken after all */
            }
        }
    }
    pthread_mutex_unlock(&ch->mu);
    return err;
}

/* Receives into *v; returns 0, or ctx_err(ctx) if ctx ended first. */
static inline int ex_chan_recv(ex_chan_t *ch, ctx_t *ctx, int *v)
{
    pthread_mutex_lock(&ch->mu);
    int err =
        ctx_cond_wait_pred(ctx, &ch->cond, &ch->mu, ex_chan_has_value, ch);
    if (err == 0) {
        *v = ch->value;
        ch->full = false;
        ch->taken++;
        pthread_cond_broadcast(&ch->cond);
    }
    pthread_mutex_unlock(&ch->mu);
    return err;
}

#endif
