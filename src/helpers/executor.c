/* The shared executor (see ctx/executor.h): a FIFO of intrusive tasks served
 * by at most CTX_EXECUTOR_MAX_THREADS detached workers, started on demand
 * and leaving after IDLE_NS without work. */
#include "executor_int.h"

#include "platform.h"
#include "ctx_testing.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#define IDLE_NS (500 * CTX_MILLISECOND)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv; /* CLOCK_MONOTONIC; made in exec_init */
static ctx_task_t *head, **tail = &head;
static unsigned workers; /* started and not yet exited */
static unsigned idle;    /* workers waiting on cv */
static unsigned pins;    /* ctx__executor_pin()s: keep one worker */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void make_cond(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &a);
    pthread_condattr_destroy(&a);
}

static void fork_prepare(void) { pthread_mutex_lock(&mu); }
static void fork_parent(void) { pthread_mutex_unlock(&mu); }

/* The workers do not exist in the child, and the queued tasks belong to the
 * parent's threads: start afresh. */
static void fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    make_cond();
    head = NULL;
    tail = &head;
    workers = 0;
    idle = 0;
    pins = 0;
}

static void exec_init(void)
{
    make_cond();
    ctx__atfork_register(CTX__FORK_EXECUTOR, fork_prepare, fork_parent,
                         fork_child);
}

static void *worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&mu);
    for (;;) {
        ctx_task_t *t = head;
        if (t != NULL) {
            head = t->next_;
            if (head == NULL)
                tail = &head;
            pthread_mutex_unlock(&mu);
            t->fn(t); /* t may be freed by fn */
            pthread_mutex_lock(&mu);
            continue;
        }
        struct timespec until = ctx__timespec(ctx_now() + IDLE_NS);
        idle++;
        int e = pthread_cond_timedwait(&cv, &mu, &until);
        idle--;
        /* Idle for long: leave, unless this is the last worker and a
         * pin needs one. */
        if (e == ETIMEDOUT && head == NULL && (pins == 0 || workers > 1))
            break;
    }
    workers--;
    pthread_mutex_unlock(&mu);
    return NULL;
}

#ifdef CTX_DEBUG
/* Test hook (ctx_testing.h): workers started and not yet leaving. */
long ctx__executor_workers(void)
{
    pthread_mutex_lock(&mu);
    long n = (long)workers;
    pthread_mutex_unlock(&mu);
    return n;
}
#endif

CTX_API int ctx_executor_submit(ctx_task_t *task)
{
    if (task == NULL || task->fn == NULL)
        return EINVAL;
    pthread_once(&once, exec_init);
    int saved = errno;
    pthread_mutex_lock(&mu);
    /* A worker is needed unless an idle one will take this task. Count the
     * tasks already queued against the idle workers. */
    unsigned queued = 0;
    for (ctx_task_t *q = head; q != NULL && queued <= idle; q = q->next_)
        queued++;
    if (queued >= idle && workers < CTX_EXECUTOR_MAX_THREADS) {
        pthread_t th;
        if (ctx__thread_start(&th, worker_main, NULL, true) == 0)
            workers++;
        else if (workers == 0) {
            pthread_mutex_unlock(&mu);
            errno = saved;
            return EAGAIN;
        }
    }
    task->next_ = NULL;
    *tail = task;
    tail = &task->next_;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return 0;
}

int ctx__executor_pin(void)
{
    pthread_once(&once, exec_init);
    int saved = errno, e = 0;
    pthread_mutex_lock(&mu);
    if (workers == 0) {
        pthread_t th;
        e = ctx__thread_start(&th, worker_main, NULL, true);
        if (e == 0)
            workers++;
    }
    if (e == 0)
        pins++;
    pthread_mutex_unlock(&mu);
    errno = saved;
    return e != 0 ? EAGAIN : 0;
}

void ctx__executor_unpin(void)
{
    pthread_mutex_lock(&mu);
    pins--;
    pthread_mutex_unlock(&mu);
}
