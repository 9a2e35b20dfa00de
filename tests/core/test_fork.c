/* fork(): the child may use the roots and the contexts it creates after
 * fork, the timer thread restarting there lazily; the parent is unaffected.
 * The child checks with plain code (no cmocka there), reports the failing
 * line on stderr and leaves with _exit(0 or 1); the parent waits for it. */
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h> /* RUNNING_ON_VALGRIND */
#define TU_HAVE_VALGRIND_H 1
#endif
#endif
#include <unistd.h>

/* The forked children start the timer thread. */
TU_TSAN_ALLOW_THREADS_AFTER_FORK;

#define LATE (250 * CTX_MILLISECOND * TU_SLOW)

static const ctx_key_t key = CTX_KEY("fork");

/* In the child: on failure, say where and leave with 1. */
#define CCHECK(cond)                                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            dprintf(2, "fork child %d: %s:%d: check failed: %s\n",            \
                    (int)getpid(), __FILE__, __LINE__, #cond);                 \
            _exit(1);                                                          \
        }                                                                      \
    } while (0)

/* In a child: what fork copied of the parent's live counters (the parent's
 * contexts are counted but not usable here). */
static long base_contexts, base_afters;

static void child_record_base(void)
{
#ifdef CTX_DEBUG
    base_contexts = ctx__live_contexts();
    base_afters = ctx__live_afters();
#endif
}

/* In a child: everything it made is freed (the timer thread may drop the
 * last reference a moment later). */
static void child_check_no_leak(void)
{
#ifdef CTX_DEBUG
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while ((ctx__live_contexts() != base_contexts ||
            ctx__live_afters() != base_afters) &&
           ctx_now() < end)
        tu_sleep(100 * CTX_MICROSECOND);
    CCHECK(ctx__live_contexts() == base_contexts);
    CCHECK(ctx__live_afters() == base_afters);
#endif
}

/* A forked child inherits the contexts and after-func registrations made
 * before fork(), which it must neither use nor release (the fork rule), and
 * it _exit()s holding them. Those a local variable or another thread's
 * register held at the fork would look lost to memcheck (valgrind build):
 * the forking code lists them here, in static memory, so that they are
 * still reachable when the child exits, not the child's leaks. */
#define KEEP_MAX 32
static void *volatile child_keep[KEEP_MAX];
static int child_nkeep;

static void keep_for_child(void *p)
{
    if (child_nkeep >= KEEP_MAX)
        abort(); /* raise KEEP_MAX */
    child_keep[child_nkeep++] = p;
}

/* In the parent once its children are done (stale pointers are harmless,
 * but the next test starts from an empty list). */
static void keep_clear(void)
{
    for (int i = 0; i < KEEP_MAX; i++)
        child_keep[i] = NULL;
    child_nkeep = 0;
}

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Forks; runs child_fn in the child (guarded by an alarm) and _exits with
 * its verdict. Returns the pid in the parent. */
static pid_t fork_child(void (*child_fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_record_base();
        alarm(30 * TU_SLOW); /* a hang ends the child with SIGALRM */
        child_fn(arg);
        _exit(0);
    }
    return pid;
}

/* Waits for the child (bounded) and asserts it exited with 0. */
static void expect_child_ok(pid_t pid)
{
    ctx_time_t end = ctx_now() + 60 * CTX_SECOND * TU_SLOW;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        assert_true(r == 0 || (r < 0 && errno == EINTR));
        if (ctx_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("fork child %d did not finish", (int)pid);
        }
        tu_sleep(CTX_MILLISECOND);
    }
    if (WIFSIGNALED(status))
        fail_msg("fork child %d killed by signal %d", (int)pid,
                 WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- Deadlines in the child, after the parent's timer thread ran. ---- */

struct after_seen {
    _Atomic int calls;
    pthread_t thread;
    int err;
    ctx_t *ctx;
};

static void after_fn(void *arg)
{
    struct after_seen *s = arg;
    s->thread = pthread_self();
    s->err = ctx_err(s->ctx);
    atomic_fetch_add(&s->calls, 1);
}

static void child_deadlines(void *arg)
{
    bool grandchild = arg != NULL;
    const ctx_duration_t d = 30 * CTX_MILLISECOND;

    /* A timeout from background fires on time. */
    ctx_time_t t0 = ctx_now();
    ctx_t *c = ctx_with_timeout_cause(ctx_background(), d, EHOSTDOWN);
    CCHECK(c != NULL);
    /* Done only if its time is up: starting the timer thread in the child
     * can take longer than d on a busy machine (and under TSan). */
    CCHECK(!ctx_is_done(c) || ctx_now() - t0 >= d);
    CCHECK(ctx_wait(c) == CTX_DEADLINE_EXCEEDED);
    ctx_time_t el = ctx_now() - t0;
    CCHECK(el >= d);
    CCHECK(el <= d + LATE);
    CCHECK(ctx_cause(c) == EHOSTDOWN);

    /* A deadline from todo, watched through its done fd. */
    ctx_time_t dl = ctx_now() + d;
    ctx_t *t = ctx_with_deadline(ctx_todo(), dl);
    ctx_t *tv = ctx_with_value(t, &key, (void *)&key, NULL);
    int fd = ctx_done_fd(tv);
    CCHECK(fd >= 0);
    CCHECK(readable(fd, 0) == 0);
    CCHECK(readable(fd, 20000) == 1);
    CCHECK(ctx_now() >= dl);
    CCHECK(ctx_now() - dl <= LATE);
    CCHECK(ctx_err(tv) == CTX_DEADLINE_EXCEEDED);
    CCHECK(ctx_value(tv, &key) == &key);

    /* An after-func on a deadline runs in the child's (new) timer thread. */
    ctx_t *a = ctx_with_timeout(ctx_background(), d);
    struct after_seen s = {0, pthread_self(), 0, a};
    ctx_after_t *reg = ctx_after_func(a, after_fn, &s);
    CCHECK(reg != NULL);
    CCHECK(ctx_wait(a) == CTX_DEADLINE_EXCEEDED);
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while (atomic_load(&s.calls) == 0 && ctx_now() < end)
        tu_sleep(100 * CTX_MICROSECOND);
    CCHECK(atomic_load(&s.calls) == 1);
    CCHECK(!pthread_equal(s.thread, pthread_self()));
    CCHECK(s.err == CTX_DEADLINE_EXCEEDED);
    CCHECK(!ctx_after_stop(reg));

    /* Many at once, in deadline order. */
    ctx_t *many[16];
    ctx_time_t base = ctx_now();
    for (int i = 0; i < 16; i++)
        many[i] = ctx_with_deadline(ctx_background(),
                                    base + (16 - i) * CTX_MILLISECOND);
    for (int i = 0; i < 16; i++) {
        CCHECK(ctx_wait(many[i]) == CTX_DEADLINE_EXCEEDED);
        CCHECK(ctx_now() >= base + (16 - i) * CTX_MILLISECOND);
        ctx_release(many[i]);
    }

    if (!grandchild) {
        /* And again one generation down. The grandchild inherits this
         * child's contexts (the timer thread may still hold one of many[]
         * that it just cancelled). */
        keep_for_child(c);
        keep_for_child(t);
        keep_for_child(tv);
        keep_for_child(a);
        keep_for_child(reg);
        for (int i = 0; i < 16; i++)
            keep_for_child(many[i]);
        fflush(stdout);
        pid_t pid = fork();
        CCHECK(pid >= 0);
        if (pid == 0) {
            child_record_base();
            child_deadlines((void *)1);
            _exit(0);
        }
        int status;
        CCHECK(waitpid(pid, &status, 0) == pid);
        CCHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        keep_clear();
    }

    ctx_release(a);
    ctx_release(tv);
    ctx_release(t);
    ctx_release(c);
    child_check_no_leak();
}

static void test_child_deadlines_after_parent_timers(void **state)
{
    (void)state;
    /* The parent's timer thread is running, and has work pending. */
    ctx_t *w = ctx_with_timeout(ctx_background(), 5 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(w), CTX_DEADLINE_EXCEEDED);
    ctx_release(w);
    tu_settle();
    tu_assert_no_live(); /* so the child's counter starts at 0 */

    pid_t pid = fork_child(child_deadlines, NULL);
    expect_child_ok(pid);
    tu_assert_no_live();
}

/* ---- Counting in the child starts from what fork copied. ---- */

static void child_no_leak(void *arg)
{
    (void)arg;
    ctx_t *c = ctx_with_timeout(ctx_background(), 10 * CTX_MILLISECOND);
    ctx_t *v = ctx_with_value(c, &key, NULL, NULL);
    CCHECK(ctx_wait(v) == CTX_DEADLINE_EXCEEDED);
    ctx_release(v);
    ctx_release(c);
    child_check_no_leak();
}

/* ---- Cancel, wait, done fd, values and after-funcs in the child. ---- */

struct child_waiter {
    ctx_t *ctx;
    int result;
    _Atomic long tid;
};

static void *child_wait_main(void *arg)
{
    struct child_waiter *w = arg;
    atomic_store(&w->tid, tu_gettid());
    w->result = ctx_wait(w->ctx);
    return NULL;
}

static void count_fn(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static void child_basic(void *arg)
{
    (void)arg;
    ctx_t *p = ctx_with_cancel(ctx_background());
    CCHECK(p != NULL);
    ctx_t *v = ctx_with_value(p, &key, (void *)&key, NULL);
    ctx_t *c = ctx_with_cancel(v);
    ctx_t *w = ctx_without_cancel(c);
    CCHECK(ctx_value(w, &key) == &key);

    int fd = ctx_done_fd(c);
    CCHECK(fd >= 0);
    CCHECK(readable(fd, 0) == 0);
    int wfd = ctx_done_fd(w);
    CCHECK(wfd >= 0 && wfd != fd);

    _Atomic int calls = 0;
    ctx_after_t *reg = ctx_after_func(c, count_fn, (void *)&calls);
    CCHECK(reg != NULL);

    /* A waiter thread, woken by the cancel. */
    struct child_waiter cw = {c, -1, 0};
    /* On its own stack: after fork, glibc hands the child the cached stacks
     * of the parent's threads, and ThreadSanitizer (which still lists those
     * threads) rejects a new thread with a reused id. */
    static char stack[1 << 20] __attribute__((aligned(64)));
    pthread_attr_t attr;
    CCHECK(pthread_attr_init(&attr) == 0);
    CCHECK(pthread_attr_setstack(&attr, stack, sizeof stack) == 0);
    pthread_t th;
    CCHECK(pthread_create(&th, &attr, child_wait_main, &cw) == 0);
    pthread_attr_destroy(&attr);
    while (atomic_load(&cw.tid) == 0)
        sched_yield();
    CCHECK(tu_wait_blocked(atomic_load(&cw.tid), 10 * CTX_SECOND));
    CCHECK(atomic_load(&calls) == 0);

    CCHECK(ctx_cancel_cause(p, ESTALE) == 0);
    CCHECK(atomic_load(&calls) == 1);
    CCHECK(pthread_join(th, NULL) == 0);
    CCHECK(cw.result == CTX_CANCELED);
    CCHECK(ctx_cause(c) == ESTALE);
    CCHECK(readable(fd, 0) == 1);
    CCHECK(readable(fd, 0) == 1);
    CCHECK(readable(wfd, 0) == 0);
    CCHECK(!ctx_is_done(w));
    CCHECK(!ctx_after_stop(reg));

    /* wait_until on a live and on a never-done context returns at until. */
    ctx_t *live = ctx_with_cancel(ctx_background());
    ctx_time_t until = ctx_now() + 20 * CTX_MILLISECOND;
    CCHECK(ctx_wait_until(live, until) == 0);
    CCHECK(ctx_now() >= until);
    until = ctx_now() + 20 * CTX_MILLISECOND;
    CCHECK(ctx_wait_until(ctx_background(), until) == 0);
    CCHECK(ctx_now() >= until);
    CCHECK(ctx_wait_until(w, ctx_now() + CTX_MILLISECOND) == 0);
    ctx_cancel(live);
    ctx_release(live);

    ctx_release(w);
    ctx_release(c);
    ctx_release(v);
    ctx_release(p);
    child_check_no_leak();
}

static void test_child_cancel_wait_fd(void **state)
{
    (void)state;
    tu_assert_no_live();
    pid_t pid = fork_child(child_basic, NULL);
    expect_child_ok(pid);
    tu_assert_no_live();
}

/* ---- The parent keeps working: its contexts made before fork, with
 * pending deadlines, waiters and done fds, behave as if nothing happened. */

static void child_trivial(void *arg)
{
    /* Contexts inherited from the parent are not usable here: do not touch
     * them; just use the roots. */
    child_no_leak(arg);
}

static void test_parent_keeps_working(void **state)
{
    (void)state;
    const ctx_duration_t d = 150 * CTX_MILLISECOND * TU_SLOW;
    ctx_t *pending = ctx_with_timeout(ctx_background(), d);
    ctx_time_t dl;
    assert_true(ctx_deadline(pending, &dl));
    int fd = ctx_done_fd(pending);
    ctx_t *c = ctx_with_cancel(ctx_background());
    _Atomic int calls = 0;
    ctx_after_t *reg = ctx_after_func(pending, count_fn, (void *)&calls);
    keep_for_child(pending);
    keep_for_child(c);
    keep_for_child(reg);
    pid_t pid = fork_child(child_trivial, NULL);
    expect_child_ok(pid);
    keep_clear();

    /* The parent's pending deadline fires on time, in the parent. */
    assert_int_equal(readable(fd, 20000), 1);
    ctx_time_t now = ctx_now();
    assert_true(now >= dl);
    tu_assert_between(now - dl, 0, LATE);
    assert_int_equal(ctx_wait(pending), CTX_DEADLINE_EXCEEDED);
    ctx_time_t end = ctx_now() + 10 * CTX_SECOND;
    while (atomic_load(&calls) == 0 && ctx_now() < end)
        tu_sleep(100 * CTX_MICROSECOND);
    assert_int_equal(atomic_load(&calls), 1);
    assert_false(ctx_after_stop(reg));

    /* Cancel and new deadlines still work. */
    assert_false(ctx_is_done(c));
    assert_int_equal(ctx_cancel(c), 0);
    assert_int_equal(ctx_wait(c), CTX_CANCELED);
    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout(ctx_background(), 20 * CTX_MILLISECOND);
    assert_int_equal(ctx_wait(t), CTX_DEADLINE_EXCEEDED);
    tu_assert_between(ctx_now() - t0, 20 * CTX_MILLISECOND,
                      20 * CTX_MILLISECOND + LATE);

    ctx_release(t);
    ctx_release(c);
    ctx_release(pending);
    tu_settle();
    tu_assert_no_live();
}

/* ---- fork while other threads create and cancel timeouts (the timer's
 * and the library's locks may be held at the moment of fork). ---- */

static _Atomic bool stop_busy;

/* Every context the busy threads made lately, in static memory (see
 * child_keep): a child forked meanwhile inherits them, and at that moment
 * one may be held only by the timer thread's transient reference (released
 * by its busy thread already); that thread does not exist in the child. A
 * ring, for the timer thread may still hold a context a while after its
 * busy thread moved on. */
#define BUSY_RING 4096
static void *volatile busy_made[2][BUSY_RING][3];

/* Under valgrind only: no fork() while a busy thread is inside a ctx_with_*
 * call, where the new context is held in its registers alone (and may even
 * be cancelled by the timer meanwhile, unlinked from its parent): memcheck
 * would count it as the child's leak. The fork still lands anywhere else:
 * in a wait, a cancel walk, a release, or the timer's firing. */
static bool busy_guard;
static pthread_mutex_t busy_mu[2] = {PTHREAD_MUTEX_INITIALIZER,
                                     PTHREAD_MUTEX_INITIALIZER};

static bool on_valgrind(void)
{
#ifdef TU_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND != 0;
#else
    const char *pre = getenv("LD_PRELOAD"); /* valgrind's vgpreload_*.so */
    return pre != NULL && strstr(pre, "vgpreload") != NULL;
#endif
}

static void busy_lock(unsigned id)
{
    if (busy_guard)
        pthread_mutex_lock(&busy_mu[id]);
}

static void busy_unlock(unsigned id)
{
    if (busy_guard)
        pthread_mutex_unlock(&busy_mu[id]);
}

static void *busy_main(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id + 1;
    for (unsigned n = 0; !atomic_load(&stop_busy); n++) {
        void *volatile *made = busy_made[id][n % BUSY_RING];
        ctx_duration_t d =
            (ctx_duration_t)(rand_r(&seed) % 500) * CTX_MICROSECOND;
        busy_lock(id);
        ctx_t *p = ctx_with_cancel(ctx_background());
        made[0] = p;
        busy_unlock(id);
        busy_lock(id);
        ctx_t *t = ctx_with_timeout(p, d);
        made[1] = t;
        busy_unlock(id);
        busy_lock(id);
        ctx_t *c = ctx_with_cancel(t);
        made[2] = c;
        busy_unlock(id);
        if (rand_r(&seed) % 2)
            ctx_wait(c);
        ctx_cancel(p);
        busy_lock(id);
        ctx_release(c);
        ctx_release(t);
        ctx_release(p);
        busy_unlock(id);
    }
    return NULL;
}

static void child_quick(void *arg)
{
    (void)arg;
    ctx_time_t t0 = ctx_now();
    ctx_t *t = ctx_with_timeout(ctx_background(), 5 * CTX_MILLISECOND);
    CCHECK(t != NULL);
    ctx_t *c = ctx_with_cancel(t);
    CCHECK(ctx_wait(c) == CTX_DEADLINE_EXCEEDED);
    CCHECK(ctx_now() - t0 >= 5 * CTX_MILLISECOND);
    ctx_t *x = ctx_with_cancel(ctx_background());
    CCHECK(ctx_done_fd(x) >= 0);
    CCHECK(ctx_cancel(x) == 0);
    CCHECK(readable(ctx_done_fd(x), 0) == 1);
    ctx_release(x);
    ctx_release(c);
    ctx_release(t);
    child_check_no_leak();
}

/* ASan's allocator (GCC 12's libasan) is not fork-safe: a fork while another
 * thread allocates or frees can leave its lock held in the child, whose
 * first malloc then hangs (seen in about 1 of 3 runs of make test under
 * load). glibc's malloc is, so the plain, TSan and fallback builds fork
 * anywhere; under ASan, as under valgrind, never inside an allocation or a
 * free of the busy threads. */
static bool on_asan(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

static void test_fork_while_busy(void **state)
{
    (void)state;
    atomic_store(&stop_busy, false);
    busy_guard = on_valgrind() || on_asan();
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        th[i] = tu_spawn(busy_main, (void *)(uintptr_t)i);
    const int n = 12 / TU_SLOW + 2;
    for (int i = 0; i < n; i++) {
        if (busy_guard) {
            pthread_mutex_lock(&busy_mu[0]);
            pthread_mutex_lock(&busy_mu[1]);
        }
        pid_t pid = fork_child(child_quick, NULL);
        if (busy_guard) {
            pthread_mutex_unlock(&busy_mu[1]);
            pthread_mutex_unlock(&busy_mu[0]);
        }
        expect_child_ok(pid);
    }
    atomic_store(&stop_busy, true);
    for (int i = 0; i < 2; i++)
        tu_join_within(th[i], 10 * CTX_SECOND);
    tu_settle();
    tu_assert_no_live();
}

/* ---- Cancelling and releasing inherited deadline contexts (issue 9). ----
 * The child inherits deadline contexts that sit in the parent's timer heaps,
 * which the child's timer starts without. Leaving a CTX_DEFER_CANCEL scope
 * after fork() cancels and releases them in the child; that must neither
 * touch the child's own heap entries nor crash, and the child's own
 * deadlines must keep firing. */

static ctx_t *inherited[3];

static void child_expect_fires(ctx_duration_t d)
{
    ctx_time_t t0 = ctx_now();
    ctx_t *own = ctx_with_timeout(ctx_background(), d);
    CCHECK(own != NULL);
    CCHECK(ctx_wait_until(own, t0 + d + LATE) == CTX_DEADLINE_EXCEEDED);
    ctx_release(own);
}

static void child_release_inherited(void *arg)
{
    (void)arg;
    /* A deadline of the child's own, in the heap the inherited entries
     * claimed: cancelling an inherited context must not take it out. */
    ctx_time_t t0 = ctx_now();
    ctx_t *own = ctx_with_timeout(ctx_background(), 30 * CTX_MILLISECOND);
    CCHECK(own != NULL);
    {
        ctx_t *scoped CTX_DEFER_CANCEL = inherited[0];
        (void)scoped; /* leaving the scope cancels and releases it */
    }
    CCHECK(ctx_cancel(inherited[1]) == 0);
    CCHECK(ctx_err(inherited[1]) == CTX_CANCELED);
    ctx_release(inherited[1]);
    ctx_release(inherited[2]); /* released without a cancel */
#ifdef CTX_DEBUG
    base_contexts -= 3; /* the three inherited ones are gone */
#endif
    CCHECK(ctx_wait_until(own, t0 + 30 * CTX_MILLISECOND + LATE) ==
           CTX_DEADLINE_EXCEEDED);
    ctx_release(own);
    /* And later deadlines still fire, several at a time. */
    child_expect_fires(5 * CTX_MILLISECOND);
    ctx_t *a = ctx_with_timeout(ctx_background(), 10 * CTX_MILLISECOND);
    ctx_t *b = ctx_with_timeout(ctx_background(), 20 * CTX_MILLISECOND);
    CCHECK(a != NULL && b != NULL);
    CCHECK(ctx_wait_until(b, ctx_now() + 20 * CTX_MILLISECOND + LATE) ==
           CTX_DEADLINE_EXCEEDED);
    CCHECK(ctx_err(a) == CTX_DEADLINE_EXCEEDED);
    ctx_release(a);
    ctx_release(b);
    child_expect_fires(CTX_MILLISECOND);
    child_check_no_leak();
}

static void test_child_releases_inherited_deadlines(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        inherited[i] = ctx_with_timeout(ctx_background(), CTX_HOUR);
        assert_non_null(inherited[i]);
    }
    pid_t pid = fork_child(child_release_inherited, NULL);
    expect_child_ok(pid);
    for (int i = 0; i < 3; i++) {
        assert_false(ctx_is_done(inherited[i])); /* the parent's are live */
        ctx_cancel(inherited[i]);
        ctx_release(inherited[i]);
    }
    tu_settle();
    tu_assert_no_live();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_deadlines_after_parent_timers),
        cmocka_unit_test(test_child_cancel_wait_fd),
        cmocka_unit_test(test_parent_keeps_working),
        cmocka_unit_test(test_fork_while_busy),
        cmocka_unit_test(test_child_releases_inherited_deadlines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
