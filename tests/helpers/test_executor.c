/* The shared executor: tasks run on a library thread, in order on one
 * worker, never more than CTX_EXECUTOR_MAX_THREADS workers, bad input
 * refused, and the pool works again in a forked child. */
#include "testutil.h"

#include <ctx/executor.h>

#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

/* The forked child's pool must start a worker. */
TU_TSAN_ALLOW_THREADS_AFTER_FORK;

struct job {
    ctx_task_t task; /* first member */
    pthread_t ran_on;
    _Atomic int done;
    int order;
};

static _Atomic int order_next;

static void run_job(ctx_task_t *t)
{
    struct job *j = (struct job *)t;
    j->ran_on = pthread_self();
    j->order = atomic_fetch_add(&order_next, 1);
    atomic_store(&j->done, 1);
}

static void wait_done(struct job *j)
{
    ctx_time_t until = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
    while (!atomic_load(&j->done)) {
        assert_true(ctx_now() < until);
        tu_sleep(100 * CTX_MICROSECOND);
    }
}

static void test_runs_on_library_thread(void **state)
{
    (void)state;
    struct job j = {.task = {.fn = run_job}};
    assert_int_equal(ctx_executor_submit(&j.task), 0);
    wait_done(&j);
    assert_false(pthread_equal(j.ran_on, pthread_self()));
}

static void test_bad_input(void **state)
{
    (void)state;
    assert_int_equal(ctx_executor_submit(NULL), EINVAL);
    ctx_task_t t = {.fn = NULL};
    assert_int_equal(ctx_executor_submit(&t), EINVAL);
}

/* A task blocked on a gate: while MAX of them block, later tasks queue and
 * run once the gate opens; no more than MAX distinct workers ever run. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static _Atomic int blocked_now, blocked_max;

static void run_blocking(ctx_task_t *t)
{
    int now = atomic_fetch_add(&blocked_now, 1) + 1;
    int m = atomic_load(&blocked_max);
    while (now > m && !atomic_compare_exchange_weak(&blocked_max, &m, now))
        ;
    pthread_mutex_lock(&gate_mu);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    atomic_fetch_sub(&blocked_now, 1);
    run_job(t);
}

static void test_bounded(void **state)
{
    (void)state;
    enum { N = 3 * CTX_EXECUTOR_MAX_THREADS };
    struct job jobs[N];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < N; i++) {
        jobs[i].task.fn = run_blocking;
        assert_int_equal(ctx_executor_submit(&jobs[i].task), 0);
    }
    /* Wait until the pool is full of blocked tasks. */
    ctx_time_t until = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
    while (atomic_load(&blocked_now) < CTX_EXECUTOR_MAX_THREADS) {
        assert_true(ctx_now() < until);
        tu_sleep(100 * CTX_MICROSECOND);
    }
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    for (int i = 0; i < N; i++)
        wait_done(&jobs[i]);
    assert_true(atomic_load(&blocked_max) <= CTX_EXECUTOR_MAX_THREADS);
}

static void test_fork_child_pool_works(void **state)
{
    (void)state;
    struct job warm = {.task = {.fn = run_job}};
    assert_int_equal(ctx_executor_submit(&warm.task), 0);
    wait_done(&warm);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct job j = {.task = {.fn = run_job}};
        if (ctx_executor_submit(&j.task) != 0)
            _exit(1);
        /* Sleep between looks: under valgrind, which runs one thread at
         * a time, a child spinning on the flag starved the worker it
         * waits for past a 10 s bound (CI, the valgrind step). */
        ctx_time_t until = ctx_now() + 10 * CTX_SECOND * TU_SLOW;
        while (!atomic_load(&j.done)) {
            if (ctx_now() > until)
                _exit(2);
            tu_sleep(100 * CTX_MICROSECOND);
        }
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_on_library_thread),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_fork_child_pool_works),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
