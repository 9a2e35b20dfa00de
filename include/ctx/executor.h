/*
 * libctx's shared executor: one small pool of library threads for the work
 * that must block but must never block the thread that triggered it: the
 * wake of a cancelled ctx_cond_wait() that needs a busy mutex, PostgreSQL's
 * blocking cancel request, closing a connection after a deadline. The timer
 * thread and a cancelling thread hand such work here instead of doing it.
 *
 *     struct job { ctx_task_t task; int fd; };
 *     static void run(ctx_task_t *t)
 *     {
 *         struct job *j = (struct job *)t;   // task is the first member
 *         close(j->fd);
 *         free(j);
 *     }
 *     ...
 *     j->task.fn = run;
 *     if (ctx_executor_submit(&j->task) != 0)
 *         run(&j->task);                     // no thread: do it here
 *
 * Bounded: at most CTX_EXECUTOR_MAX_THREADS workers, started lazily when a
 * task arrives and none is idle, each leaving after a short idle time, so a
 * process that never submits has no worker and an idle one soon has none.
 * Tasks run in submission order when one worker is busy; with several
 * workers they may run concurrently. A task should block only for a bounded
 * time: every task of the process shares these few threads.
 *
 * Tasks are intrusive: the caller owns the ctx_task_t (usually embedded in
 * its own struct) and must keep it valid until fn has started; submitting
 * allocates nothing, so it works even when memory is short. fn runs with
 * every signal blocked and no library lock held; it may submit tasks.
 *
 * fork(): tasks still queued in the parent are not run in the child (they
 * belong to the parent's state); the child's pool starts empty and works.
 */
#ifndef CTX_EXECUTOR_H
#define CTX_EXECUTOR_H

#include <ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CTX_EXECUTOR_MAX_THREADS 4

typedef struct ctx_task ctx_task_t;
struct ctx_task {
    void (*fn)(ctx_task_t *task); /* set by the caller before submitting */
    ctx_task_t *next_;            /* private to the executor */
};

/* Queues task to run fn(task) on a worker. Returns 0, EINVAL (NULL task or
 * fn), or EAGAIN when no worker exists and none could be started (fn will
 * not be called: the caller must do the work another way). */
CTX_API int ctx_executor_submit(ctx_task_t *task);

#ifdef __cplusplus
}
#endif
#endif
