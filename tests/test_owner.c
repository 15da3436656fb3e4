/* test_owner.c: who may call what (lib/tm.c's guard, lib/executor.c, lib/log.c): calls from a
 * process other than the creator (a fork of the parent, a worker running an atexit handler)
 * get FPP_ESTATE and touch nothing shared; re-entrant calls from a map iterator or a log sink
 * get FPP_ESTATE instead of crashing or hanging; the executor and the task manager may be freed
 * in either order; a recycled task is poisoned under AddressSanitizer. Each scenario crashed,
 * hung or corrupted the pool in 0.1. */
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>

#include "common.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

extern char **environ;

static size_t read_until(int fd, char *buf, size_t cap, int max_ms)
{
    size_t n = 0;
    int64_t until = mono_ns() + (int64_t)max_ms * 1000000;
    for (;;) {
        int left = (int)((until - mono_ns()) / 1000000);
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    return n;
}

/* ------------------------------------------------------- another process */

enum { NCODES = 11 };

Test(owner, a_fork_of_the_parent_gets_estate_everywhere_and_the_parent_goes_on, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &eo);
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = 50, .retain_completed = 1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (uint64_t i = 0; i < 300; i++) {
        if (i % 50 == 0) {
            uint64_t us = 20000;
            fpp_submit(tm, F_SPIN, &us, 8); /* keep tasks in flight across the fork */
        } else {
            fpp_submit(tm, F_SQUARE, &i, 8);
        }
    }
    fpp_task *first;
    cr_assert_eq(fpp_wait(tm, 1, &first), 1);
    int codes[2], errs[2];
    cr_assert_eq(pipe(codes), 0);
    cr_assert_eq(pipe(errs), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(20); /* a hang (0.1: joining the monitor thread, which does not exist here) */
        dup2(errs[1], STDERR_FILENO);
        fpp_task *t;
        fpp_tm *tm2;
        fpp_task *const *all;
        long c[NCODES] = {
            fpp_submit(tm, F_SQUARE, &(uint64_t){7}, 8),
            fpp_run(tm),
            fpp_as_completed(tm, &t),
            fpp_as_completed_for(tm, &t, 0),
            fpp_wait(tm, 2, &t),
            fpp_cancel(tm, 2),
            fpp_map(tm, F_ECHO, (fpp_next)1, NULL),
            fpp_tm_interrupt(tm),
            fpp_executor_workers(ex),
            fpp_tm_create(&tm2, ex, NULL),
            fpp_completed(tm, &all) == 0 && fpp_task_keep(first) == NULL ? FPP_ESTATE : 0,
        };
        fpp_tm_free(tm);      /* this process's memory only */
        fpp_executor_free(ex);
        ssize_t w = write(codes[1], c, sizeof c);
        _exit(w == (ssize_t)sizeof c ? 0 : 1);
    }
    close(codes[1]);
    close(errs[1]);
    long c[NCODES] = {0};
    ssize_t got = read(codes[0], c, sizeof c);
    static char err[1 << 16];
    read_until(errs[0], err, sizeof err, 20000);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child did not finish cleanly (status %#x):\n%s",
              status, err);
    cr_assert_eq(got, (ssize_t)sizeof c);
    for (int i = 0; i < NCODES; i++)
        cr_expect_eq(c[i], FPP_ESTATE, "call %d in the child: %ld", i, c[i]);
    char want[64];
    snprintf(want, sizeof want, "this executor belongs to process %ld", (long)getpid());
    cr_expect(strstr(err, want) != NULL, "%s", err);
    cr_expect(strstr(err, "releasing only this process's memory") != NULL, "%s", err);
    close(codes[0]);
    close(errs[0]);
    /* The parent never noticed. */
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_expect_eq(n, 300);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(fpp_task_status(all[i]), FPP_DONE, "%s", fpp_task_error(all[i]));
        uint64_t x = u64_of(fpp_task_arg(all[i], NULL)), y = u64_of(fpp_task_result(all[i], NULL));
        if (x % 50 != 0 || fpp_task_fn(all[i]) == F_SQUARE)
            cr_expect_eq(y, x * x, "task %lld got another task's result", (long long)fpp_task_id(all[i]));
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.submitted, 300);
    cr_expect_eq(st.crashed, 0);
    cr_expect_eq(st.worker_restarts, 0);
    fpp_task_release(first);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(owner, a_tasks_exit_that_runs_an_atexit_handler_freeing_everything_harms_nothing, .fini = assert_clean, .timeout = 90)
{
    int out[2];
    cr_assert_eq(pipe(out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {FPP_HELPER_ATEXIT, "50", NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, FPP_HELPER_ATEXIT, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    static char text[1 << 16];
    read_until(out[0], text, sizeof text, 60000);
    close(out[0]);
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < 1000 && (r = waitpid(pid, &status, WNOHANG)) == 0; i++)
        sleep_ms(10);
    if (r == 0) { /* hung: 0.1 did, in the worker's join of a monitor thread it does not have */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the helper hung:\n%s", text);
    }
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x:\n%s", status, text);
    cr_expect(strstr(text, "rc=0 done=200 crashed=3 wrong=0") != NULL, "%s", text);
    /* Whether the worker's handler had objects to free depends on when that worker was forked
     * (see helper_atexit.c); when it did, it said so. */
    cr_log_info("the worker's handler %s", strstr(text, "belongs to process") ? "was refused (FPP_ESTATE)"
                                                                              : "found nothing to free");
}

/* ---------------------------------------------------------- re-entrancy */

typedef struct reenter {
    fpp_tm *tm;
    fpp_executor *ex;
    int i, n, at;
    uint64_t cur;
    long codes[6];
} reenter;

static int reenter_next(void *state, const void **arg, size_t *len)
{
    reenter *r = state;
    if (r->i == r->n)
        return 0;
    if (r->i == r->at) {
        fpp_task *t;
        r->codes[0] = fpp_submit(r->tm, F_ECHO, NULL, 0);
        r->codes[1] = fpp_run(r->tm);
        r->codes[2] = fpp_as_completed(r->tm, &t);
        r->codes[3] = fpp_wait(r->tm, 0, &t);
        r->codes[4] = fpp_cancel(r->tm, 0);
        r->codes[5] = fpp_map(r->tm, F_ECHO, reenter_next, r);
        fpp_tm_free(r->tm);       /* refused: the call in progress needs it */
        fpp_executor_free(r->ex); /* refused too */
    }
    r->cur = (uint64_t)r->i++;
    *arg = &r->cur;
    *len = 8;
    return 1;
}

BOTH_EXECUTORS(reentry, a_map_iterator_calling_back_gets_estate_and_the_map_goes_on, .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    reenter r = {.tm = tm, .ex = ex, .n = 20, .at = 3};
    cr_assert_eq(fpp_map(tm, F_SQUARE, reenter_next, &r), 0);
    cr_assert_eq(fpp_run(tm), 0);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(r.codes[i], FPP_ESTATE, "call %d from the iterator: %ld", i, r.codes[i]);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 20);
    const char *log = captured_logs();
    cr_expect(strstr(log, "fpp_submit: a call on this task manager is in progress") != NULL, "%s", log);
    cr_expect(strstr(log, "fpp_tm_free: a call on this task manager is in progress") != NULL, "%s", log);
    cr_expect(strstr(log, "fpp_executor_free: a call on its task manager is in progress") != NULL, "%s", log);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

static fpp_tm *sink_tm;
static _Atomic int sink_calls, sink_bad;

static void reentrant_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level; (void)msg; (void)user;
    atomic_fetch_add(&sink_calls, 1);
    /* The pure functions are fine from anywhere. */
    if (strcmp(fpp_strerror(FPP_EINVAL), "invalid argument") != 0 || fpp_lookup("echo") != F_ECHO)
        atomic_fetch_add(&sink_bad, 1);
    /* The task manager is not: FPP_ESTATE, and the refusal's own log line must not deadlock. */
    if (fpp_submit(sink_tm, F_ECHO, NULL, 0) != FPP_ESTATE)
        atomic_fetch_add(&sink_bad, 1);
    fpp_tm_free(sink_tm);
    /* Logging through fpp again (a NULL task manager is logged): no deadlock either. */
    if (fpp_submit(NULL, F_ECHO, NULL, 0) != FPP_EINVAL)
        atomic_fetch_add(&sink_bad, 1);
}

BOTH_EXECUTORS(reentry, a_log_sink_calling_back_gets_estate_and_never_deadlocks, .timeout = 60)
{
    /* Lines logged from inside the sink go straight to stderr: keep the test output clean. */
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDERR_FILENO);
    close(devnull);
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = 20}; /* the monitor thread logs too */
    cr_assert_eq(fpp_tm_create(&sink_tm, ex, &to), 0);
    fpp_log_set(reentrant_sink, NULL, FPP_LOG_INFO);
    int ms = 5;
    for (int i = 0; i < 30; i++) {
        if (i % 10 == 0)
            fpp_submit(sink_tm, F_FAIL, "s", 1);
        else
            fpp_submit(sink_tm, F_SLEEP, &ms, sizeof ms);
    }
    cr_expect_eq(fpp_run(sink_tm), 0);
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    fpp_stats st;
    fpp_tm_stats(sink_tm, &st);
    cr_expect_eq(st.done, 27);
    cr_expect_eq(st.failed, 3);
    cr_expect_geq(atomic_load(&sink_calls), 3);
    cr_expect_eq(atomic_load(&sink_bad), 0);
    fpp_tm_free(sink_tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------ free order */

BOTH_EXECUTORS(free_order, executor_first_detaches_the_tm_which_stays_valid_until_tm_free, .timeout = 60)
{
    capture_logs();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = 50, .retain_completed = 1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (uint64_t i = 0; i < 5; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    fpp_task *t0, *t4, *tx;
    cr_assert_eq(fpp_wait(tm, 0, &t0), 1);
    cr_assert_eq(fpp_wait(tm, 4, &t4), 1);
    for (int64_t id = 1; id <= 3; id++) { /* all five done before the free */
        cr_assert_eq(fpp_wait(tm, id, &tx), 1);
        fpp_task_release(tx);
    }
    int ms = k == PROC ? 30000 : 300;
    for (int i = 0; i < 4; i++)
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    fpp_executor_free(ex); /* the natural order of a C program's cleanup */
    cr_expect(strstr(captured_logs(), "fpp_executor_free: cancelled 4 unfinished task(s) of its task manager") != NULL,
              "%s", captured_logs());
    fpp_task *t;
    cr_expect_eq(fpp_submit(tm, F_ECHO, NULL, 0), FPP_ESTATE);
    cr_expect_eq(fpp_run(tm), FPP_ESTATE);
    cr_expect_eq(fpp_as_completed(tm, &t), FPP_ESTATE);
    cr_expect_eq(fpp_as_completed_for(tm, &t, 0), FPP_ESTATE);
    cr_expect_eq(fpp_wait(tm, 1, &t), FPP_ESTATE);
    cr_expect_eq(fpp_cancel(tm, 1), FPP_ESTATE);
    cr_expect_eq(fpp_map(tm, F_ECHO, (fpp_next)1, NULL), FPP_ESTATE);
    cr_expect_eq(fpp_tm_interrupt(tm), FPP_ESTATE);
    cr_expect(strstr(captured_logs(), "the executor of this task manager was freed") != NULL, "%s", captured_logs());
    /* What was kept and retained is still there. */
    cr_expect_eq(u64_of(fpp_task_result(t0, NULL)), 0);
    cr_expect_eq(u64_of(fpp_task_result(t4, NULL)), 16);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_expect_eq(n, 9, "5 done and 4 cancelled, retained");
    int cancelled = 0;
    for (size_t i = 0; i < n; i++)
        cancelled += fpp_task_status(all[i]) == FPP_CANCELLED;
    cr_expect_eq(cancelled, 4);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.cancelled, 4);
    cr_expect_eq(st.in_flight, 0);
    fpp_task_release(t0);
    fpp_task_release(t4);
    fpp_tm_free(tm);
}

BOTH_EXECUTORS(free_order, tm_first_logs_how_many_unfinished_tasks_it_cancelled, .timeout = 60)
{
    capture_logs();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    int ms = k == PROC ? 30000 : 200;
    for (int i = 0; i < 5; i++)
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    fpp_tm_free(tm);
    cr_expect(strstr(captured_logs(), "fpp_tm_free: cancelled 5 unfinished task(s)") != NULL, "%s", captured_logs());
    /* And the executor takes a new task manager afterwards. */
    tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t x = 6;
    fpp_submit(tm, F_SQUARE, &x, 8);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_executor_free(ex); /* nothing unfinished: no line */
    fpp_tm_free(tm);
    fpp_tm_free(NULL);
    fpp_executor_free(NULL);
}

/* ---------------------------------------------------------------- poison */

Test(poison, a_task_used_after_its_life_ended_is_poisoned_under_asan, .fini = assert_clean)
{
#if defined(__SANITIZE_ADDRESS__)
    capture_logs();
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 4; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    fpp_task *a, *b, *c;
    cr_assert_eq(fpp_as_completed(tm, &a), 1);
    cr_expect_eq(__asan_address_is_poisoned(a), 0, "alive until the next call");
    cr_assert_eq(fpp_as_completed(tm, &b), 1);
    cr_expect_eq(fpp_task_keep(b), b);
    cr_expect_eq(__asan_address_is_poisoned(a), 1, "recycled: a read of it is reported");
    cr_expect_null(fpp_task_keep(a), "the library itself checks before touching it");
    cr_expect(strstr(captured_logs(), "fpp_task_keep: this task's life has ended") != NULL, "%s", captured_logs());
    cr_assert_eq(fpp_as_completed(tm, &c), 1);
    cr_expect_eq(__asan_address_is_poisoned(b), 0, "kept: alive");
    fpp_task_release(b);
    cr_expect_eq(__asan_address_is_poisoned(b), 1, "released: poisoned");
    fpp_task_release(b); /* released twice: a log line, not an ASan report */
    cr_expect(strstr(captured_logs(), "life has ended already") != NULL, "%s", captured_logs());
    fpp_tm_free(tm);
    fpp_executor_free(ex);
#else
    cr_skip_test("AddressSanitizer builds only");
#endif
}
