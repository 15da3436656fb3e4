/* test_futures.c: tasks you can hold, wait for and cancel (lib/tm.c, fpp.h "tasks you can
 * hold"): fpp_submit_ex with a user pointer and a timeout of its own, fpp_task_keep and
 * fpp_task_release, fpp_wait, fpp_cancel, fpp_as_completed_for, fpp_tm_interrupt from another
 * thread and from a signal handler, and the bad input of each. Public API only: these are also
 * the acceptance tests for any executor that implements cancel_task and per-task timeouts. */
#include <pthread.h>
#include <sys/time.h>

#include "common.h"

/* Slots of T_SHARED the tests use. */
enum { S_STARTED = 0, S_RELEASE = 1, S_BARRIER = 2, S_PIDS = 16 };

static fpp_tm *mk_tm_opts(fpp_executor *ex, fpp_tm_opts o)
{
    fpp_tm *tm = NULL;
    int rc = fpp_tm_create(&tm, ex, &o);
    cr_assert_eq(rc, 0, "tm: %s", fpp_strerror(rc));
    return tm;
}

/* -------------------------------------------------- submit_ex and the task */

BOTH_EXECUTORS(futures, submit_ex_carries_a_user_pointer_and_a_timeout_of_its_own, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2, .task_timeout_ms = 300};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    int tags[10];
    for (uint64_t i = 0; i < 10; i++) {
        fpp_task_opts o = {.user = &tags[i]};
        cr_assert_eq(fpp_submit_ex(tm, F_SQUARE, &i, 8, &o), (int64_t)i);
    }
    cr_assert_eq(fpp_submit_ex(tm, F_SQUARE, &(uint64_t){3}, 8, NULL), 10, "options NULL: none");
    int slow = 1500, medium = 700;
    fpp_task_opts shorter = {.timeout_ms = 100}, longer = {.timeout_ms = 20000};
    cr_assert_eq(fpp_submit_ex(tm, F_SLEEP, &slow, sizeof slow, &shorter), 11);
    cr_assert_eq(fpp_submit_ex(tm, F_SLEEP, &medium, sizeof medium, &longer), 12);
    cr_assert_eq(fpp_submit(tm, F_SLEEP, &slow, sizeof slow), 13); /* the executor's 300 ms */
    fpp_task *t;
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        n++;
        cr_expect_eq(fpp_task_attempts(t), 1);
        if (id < 10) {
            cr_expect_eq(fpp_task_user(t), &tags[id]);
            cr_expect_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)(id * id));
        } else {
            cr_expect_null(fpp_task_user(t));
        }
        if (id == 11) {
            cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT, "its own 100 ms: %s", fpp_task_error(t));
            cr_expect(strstr(fpp_task_error(t), "timeout of 100 ms") != NULL, "%s", fpp_task_error(t));
        }
        if (id == 12)
            cr_expect_eq(fpp_task_status(t), FPP_DONE, "its own 20 s beats the executor's 300 ms: %s",
                         fpp_task_error(t) ? fpp_task_error(t) : "");
        if (id == 13) {
            cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT);
            cr_expect(strstr(fpp_task_error(t), "timeout of 300 ms") != NULL, "%s", fpp_task_error(t));
        }
    }
    cr_expect_eq(n, 14);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------------ keep */

/* Result of F_BYTES for n: byte i = (i * 31 + 7) & 0xff. */
static bool bytes_ok(const fpp_task *t, size_t n)
{
    size_t len;
    const unsigned char *r = fpp_task_result(t, &len);
    if (!r || len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (r[i] != (unsigned char)((i * 31 + 7) & 0xff))
            return false;
    return true;
}

BOTH_EXECUTORS(keep, ten_thousand_kept_tasks_outlive_as_completed_and_fpp_run_intact, .timeout = 180)
{
    enum { KEPT = 10000, MORE = 2000 };
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    static fpp_task *kept[KEPT + MORE];
    memset(kept, 0, sizeof kept);
    for (uint64_t i = 0; i < KEPT + MORE; i++) {
        uint64_t n = (i * 37) % 300; /* inline (<= 40 bytes) and heap results */
        cr_assert_eq(fpp_submit(tm, F_BYTES, &n, 8), (int64_t)i);
    }
    fpp_task *t;
    int got = 0;
    while (got < KEPT && fpp_as_completed(tm, &t) == 1) {
        kept[fpp_task_id(t)] = fpp_task_keep(t);
        cr_assert_eq(kept[fpp_task_id(t)], t);
        got++;
    }
    cr_assert_eq(got, KEPT);
    /* fpp_run drops the other 2,000: their memory is recycled under the kept ones' feet, and
     * more tasks reuse it. */
    cr_assert_eq(fpp_run(tm), 0);
    for (uint64_t i = 0; i < MORE; i++)
        fpp_submit(tm, F_BYTES, &(uint64_t){299}, 8);
    cr_assert_eq(fpp_run(tm), 0);
    int n_kept = 0;
    for (uint64_t i = 0; i < KEPT + MORE; i++) {
        if (!kept[i])
            continue;
        n_kept++;
        cr_assert_eq(fpp_task_id(kept[i]), (int64_t)i);
        cr_assert_eq(fpp_task_status(kept[i]), FPP_DONE);
        cr_assert(bytes_ok(kept[i], (i * 37) % 300), "task %llu's result bytes changed", (unsigned long long)i);
    }
    cr_expect_eq(n_kept, KEPT);
    for (uint64_t i = 0; i < KEPT + MORE; i++)
        fpp_task_release(kept[i]);
    fpp_task_release(NULL); /* does nothing */
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(keep, releasing_twice_or_a_task_not_kept_is_a_log_line, .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 50; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    fpp_task *a, *b;
    cr_assert_eq(fpp_as_completed(tm, &a), 1);
    fpp_task_release(a); /* current, never kept */
    cr_expect(strstr(captured_logs(), "is not kept") != NULL, "%s", captured_logs());
    cr_assert_eq(fpp_task_keep(a), a);
    cr_assert_eq(fpp_task_keep(a), a); /* kept twice: released twice */
    cr_assert_eq(fpp_as_completed(tm, &b), 1);
    uint64_t x = u64_of(fpp_task_arg(a, NULL));
    cr_expect_eq(u64_of(fpp_task_result(a, NULL)), x * x, "kept past the next call");
    fpp_task_release(a);
    cr_expect_eq(u64_of(fpp_task_result(a, NULL)), x * x, "still kept once");
    fpp_task_release(a); /* its life ends here */
    cr_expect_eq(fpp_run(tm), 0);
    /* Released once too often: memory the task manager still owns, recycled (and poisoned
     * under AddressSanitizer, which the release checks before touching it). */
    fpp_task_release(a);
    cr_expect(strstr(captured_logs(), "life has ended already") != NULL ||
                  strstr(captured_logs(), "is not kept") != NULL,
              "%s", captured_logs());
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------------ wait */

BOTH_EXECUTORS(wait, for_one_task_while_others_finish_and_still_come_out_once_each, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    enum { N = 40, SLOW = 5 };
    for (int i = 0; i < N; i++) {
        int ms = i == SLOW ? 300 : 5;
        cr_assert_eq(fpp_submit(tm, F_SLEEP, &ms, sizeof ms), i);
    }
    fpp_task *t = NULL;
    cr_assert_eq(fpp_wait(tm, SLOW, &t), 1);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_id(t), SLOW);
    cr_expect_eq(fpp_task_status(t), FPP_DONE);
    int ms;
    memcpy(&ms, fpp_task_result(t, NULL), sizeof ms);
    cr_expect_eq(ms, 300);
    fpp_task *again = (fpp_task *)1;
    cr_expect_eq(fpp_wait(tm, SLOW, &again), FPP_ESTATE, "returned by fpp_wait already");
    cr_expect_null(again);
    int seen[N] = {0};
    fpp_task *u;
    while (fpp_as_completed(tm, &u) == 1)
        seen[fpp_task_id(u)]++;
    for (int i = 0; i < N; i++)
        cr_expect_eq(seen[i], i == SLOW ? 0 : 1, "task %d came out %d time(s)", i, seen[i]);
    cr_expect_eq(fpp_task_status(t), FPP_DONE, "the waited task is kept until released");
    fpp_task_release(t);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(wait, for_a_finished_task_returns_at_once_and_one_handed_out_is_estate, .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 5; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    fpp_task *t;
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    int64_t out = fpp_task_id(t);
    cr_expect_eq(fpp_wait(tm, out, &t), FPP_ESTATE, "handed out by fpp_as_completed");
    cr_expect(strstr(captured_logs(), "was handed out already") != NULL, "%s", captured_logs());
    /* Let everything finish, then wait for one still unreturned: it is there already. */
    int64_t other = out == 4 ? 3 : 4;
    int ms = 100;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    cr_assert_eq(fpp_wait(tm, 5, &t), 1);
    fpp_task_release(t);
    cr_assert_eq(fpp_wait(tm, other, &t), 1);
    cr_expect_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)(other * other));
    fpp_task_release(t);
    cr_expect_eq(fpp_wait(tm, -1, &t), FPP_EINVAL);
    cr_expect_eq(fpp_wait(tm, 6, &t), FPP_EINVAL, "never issued");
    cr_expect_eq(fpp_wait(tm, (int64_t)1 << 40, &t), FPP_EINVAL);
    cr_expect_eq(fpp_wait(tm, 0, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_wait(NULL, 0, &t), FPP_EINVAL);
    cr_expect(strstr(captured_logs(), "fpp_wait: no task with id 6") != NULL, "%s", captured_logs());
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(wait, a_task_that_fails_under_raise_is_handed_out_as_the_failure, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    int ms = 20;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    fpp_submit(tm, F_FAIL, "w", 1);
    fpp_task *t;
    cr_expect_eq(fpp_wait(tm, 1, &t), FPP_ETASK);
    cr_expect_eq(t, fpp_tm_failure(tm));
    cr_expect_eq(fpp_task_id(t), 1);
    cr_expect_eq(fpp_wait(tm, 0, &t), FPP_ETASK, "every later call raises");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ---------------------------------------------------------------- cancel */

/* Every worker runs a task at the same time: each slot still takes work. */
static void every_slot_runs_tasks(fpp_tm *tm, int workers)
{
    atomic_store(&T_SHARED[S_BARRIER], 0);
    int64_t first = -1;
    for (int i = 0; i < workers; i++) {
        barrier_arg a = {.counter = S_BARRIER, .n = workers, .max_ms = 20000};
        int64_t id = fpp_submit(tm, F_BARRIER, &a, sizeof a);
        cr_assert_geq(id, 0);
        if (first < 0)
            first = id;
    }
    for (int i = 0; i < workers; i++) {
        fpp_task *t;
        cr_assert_eq(fpp_wait(tm, first + i, &t), 1);
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        long seen;
        memcpy(&seen, fpp_task_result(t, NULL), sizeof seen);
        cr_expect_geq(seen, workers, "only %ld of %d workers ran at once", seen, workers);
        fpp_task_release(t);
    }
}

BOTH_EXECUTORS(cancel, a_queued_and_a_running_task_and_nothing_else_is_affected, .timeout = 90)
{
    shared_reset();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_LOG, 0);
    block_arg b = {.started = S_STARTED, .release = S_RELEASE, .pid_at = S_PIDS, .max_ms = 30000};
    cr_assert_eq(fpp_submit(tm, F_BLOCK, &b, sizeof b), 0);
    cr_assert_eq(fpp_submit(tm, F_BLOCK, &b, sizeof b), 1);
    cr_assert(wait_shared(S_STARTED, 2, 20000), "both workers run a blocking task");
    uint64_t x = 9;
    cr_assert_eq(fpp_submit(tm, F_SQUARE, &x, 8), 2); /* queued: both workers are busy */
    cr_expect_eq(fpp_cancel(tm, 2), 1, "queued: cancelled, never runs");
    /* Which blocking task is task 0? The pids say who runs what only in process mode; cancel
     * task 0 whichever worker has it. */
    cr_expect_eq(fpp_cancel(tm, 0), 1, "running: cancelled");
    fpp_task *t;
    int cancelled = 0;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        cr_expect(fpp_task_id(t) == 0 || fpp_task_id(t) == 2);
        cr_expect_eq(fpp_task_status(t), FPP_CANCELLED, "task %lld: %s", (long long)fpp_task_id(t),
                     fpp_status_name(fpp_task_status(t)));
        cancelled++;
    }
    cr_expect_eq(fpp_cancel(tm, 0), 0, "finished (handed out): nothing to cancel");
    cr_expect_eq(fpp_cancel(tm, 2), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.cancelled, 2);
    if (k == PROC) {
        /* Its worker was killed and replaced: one of the two pids is gone for good. */
        pid_t p0 = (pid_t)T_SHARED[S_PIDS], p1 = (pid_t)T_SHARED[S_PIDS + 1];
        int64_t until = mono_ns() + 10 * 1000000000LL;
        while (kill(p0, 0) == 0 && kill(p1, 0) == 0 && mono_ns() < until) {
            fpp_as_completed_for(tm, &t, 10); /* drive the executor: it reaps and replaces */
        }
        cr_expect(kill(p0, 0) != 0 || kill(p1, 0) != 0, "a worker was killed");
        cr_expect(kill(p0, 0) == 0 || kill(p1, 0) == 0, "the other was not");
    }
    /* Task 1 was not affected: released, it finishes normally. */
    atomic_store(&T_SHARED[S_RELEASE], 1);
    cr_assert_eq(fpp_wait(tm, 1, &t), 1);
    cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t) ? fpp_task_error(t) : "");
    int released;
    memcpy(&released, fpp_task_result(t, NULL), sizeof released);
    cr_expect_eq(released, 1);
    fpp_task_release(t);
    cr_expect_eq(fpp_cancel(tm, 1), 0, "finished");
    fpp_tm_stats(tm, &st);
    if (k == PROC)
        cr_expect_geq(st.worker_restarts, 1, "the killed worker was replaced");
    every_slot_runs_tasks(tm, 2);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 3);
    cr_expect_eq(st.cancelled, 2);
    cr_expect_eq(st.crashed, 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(cancel, an_id_never_issued_is_einval_and_a_finished_task_is_zero, .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 1);
    cr_expect_eq(fpp_cancel(tm, 0), FPP_EINVAL, "nothing issued yet");
    for (uint64_t i = 0; i < 3; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(fpp_cancel(tm, 1), 0, "finished");
    cr_expect_eq(fpp_cancel(tm, 3), FPP_EINVAL);
    cr_expect_eq(fpp_cancel(tm, -5), FPP_EINVAL);
    cr_expect_eq(fpp_cancel(NULL, 0), FPP_EINVAL);
    cr_expect(strstr(captured_logs(), "fpp_cancel: no task with id 3") != NULL, "%s", captured_logs());
    fpp_task *const *all;
    cr_assert_eq(fpp_completed(tm, &all), 3);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(fpp_task_status(all[i]), FPP_DONE);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* --------------------------------------------------- as_completed_for */

BOTH_EXECUTORS(as_completed_for, times_out_with_no_task_and_a_negative_timeout_waits, .timeout = 60)
{
    capture_logs();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    int slow = 3000, quick = 200;
    cr_assert_eq(fpp_submit(tm, F_SLEEP, &slow, sizeof slow), 0);
    fpp_task *t = (fpp_task *)1;
    cr_expect_eq(fpp_as_completed_for(tm, &t, 50), FPP_ETIMEDOUT);
    cr_expect_null(t);
    t = (fpp_task *)1;
    cr_expect_eq(fpp_as_completed_for(tm, &t, 0), FPP_ETIMEDOUT, "0: look once, do not wait");
    cr_expect_null(t);
    cr_assert_eq(fpp_submit(tm, F_SLEEP, &quick, sizeof quick), 1);
    cr_assert_eq(fpp_as_completed_for(tm, &t, -1), 1, "negative: waits for ever");
    cr_expect_eq(fpp_task_id(t), 1);
    cr_expect_eq(fpp_cancel(tm, 0), 1);
    cr_assert_eq(fpp_as_completed_for(tm, &t, 10000), 1);
    cr_expect_eq(fpp_task_status(t), FPP_CANCELLED);
    cr_expect_eq(fpp_as_completed_for(tm, &t, 10), 0, "nothing left: 0, not a timeout");
    cr_expect_eq(fpp_as_completed_for(NULL, &t, 10), FPP_EINVAL);
    cr_expect_eq(fpp_as_completed_for(tm, NULL, 10), FPP_EINVAL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------ interrupt */

typedef struct stopper { fpp_tm *tm; int delay_ms; _Atomic int64_t at; int rc; } stopper;

static void *stop_later(void *arg)
{
    stopper *s = arg;
    sleep_ms(s->delay_ms);
    atomic_store(&s->at, mono_ns());
    s->rc = fpp_tm_interrupt(s->tm);
    return NULL;
}

static void submit_sleepers(fpp_tm *tm, int n, int ms)
{
    for (int i = 0; i < n; i++)
        cr_assert_geq(fpp_submit(tm, F_SLEEP, &ms, sizeof ms), 0);
}

Test(interrupt, from_another_thread_makes_fpp_run_return_eintr_within_100_ms, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    submit_sleepers(tm, 4, 30000);
    stopper s = {.tm = tm, .delay_ms = 300};
    pthread_t th;
    pthread_create(&th, NULL, stop_later, &s);
    int rc = fpp_run(tm);
    int64_t back = mono_ns();
    pthread_join(th, NULL);
    cr_expect_eq(s.rc, 0);
    cr_expect_eq(rc, FPP_EINTR);
    double ms = (double)(back - atomic_load(&s.at)) / 1e6;
    cr_expect_lt(ms, 100.0, "fpp_run returned %.1f ms after fpp_tm_interrupt", ms);
    cr_log_info("process executor: fpp_run returned %.1f ms after fpp_tm_interrupt", ms);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.cancelled, 4);
    cr_expect_eq(st.in_flight, 0);
    cr_expect_eq(fpp_run(tm), FPP_EINTR, "and every later call");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

static fpp_tm *alarm_tm;
static _Atomic int64_t alarm_at;
static void on_alarm(int sig)
{
    (void)sig;
    atomic_store(&alarm_at, mono_ns()); /* clock_gettime is async-signal-safe */
    fpp_tm_interrupt(alarm_tm);
}

Test(interrupt, from_a_sigalrm_handler_makes_fpp_run_return_eintr_within_100_ms, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &eo);
    alarm_tm = mk_tm(ex, FPP_RAISE, 0);
    submit_sleepers(alarm_tm, 4, 30000);
    struct sigaction sa = {.sa_handler = on_alarm};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {0, 300000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int rc = fpp_run(alarm_tm);
    int64_t back = mono_ns();
    cr_expect_eq(rc, FPP_EINTR);
    double ms = (double)(back - atomic_load(&alarm_at)) / 1e6;
    cr_expect_lt(ms, 100.0, "fpp_run returned %.1f ms after the handler's fpp_tm_interrupt", ms);
    cr_log_info("process executor: fpp_run returned %.1f ms after SIGALRM", ms);
    fpp_tm_free(alarm_tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(interrupt, before_a_call_makes_the_next_blocking_call_return_eintr, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    submit_sleepers(tm, 2, 100);
    cr_expect_eq(fpp_tm_interrupt(tm), 0);
    fpp_task *t;
    cr_expect_eq(fpp_as_completed(tm, &t), FPP_EINTR);
    cr_expect_eq(fpp_submit(tm, F_ECHO, NULL, 0), FPP_EINTR);
    cr_expect_eq(fpp_tm_interrupt(NULL), FPP_EINVAL);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.in_flight, 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(interrupt, thread_executor_returns_eintr_once_running_functions_end, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(THR, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    submit_sleepers(tm, 6, 300);
    stopper s = {.tm = tm, .delay_ms = 100};
    pthread_t th;
    pthread_create(&th, NULL, stop_later, &s);
    cr_expect_eq(fpp_run(tm), FPP_EINTR);
    pthread_join(th, NULL);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_geq(st.cancelled, 4, "the queued ones at least");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------ stats, any thread */

typedef struct watcher { fpp_tm *tm; _Atomic int stop; int bad; long reads; } watcher;

static void *watch(void *arg)
{
    watcher *w = arg;
    fpp_stats prev = {0};
    while (!atomic_load(&w->stop)) {
        fpp_stats st;
        fpp_tm_stats(w->tm, &st);
        if (st.submitted < prev.submitted || st.done < prev.done || st.done > st.submitted ||
            st.in_flight > 64)
            w->bad++;
        prev = st;
        w->reads++;
    }
    return NULL;
}

typedef struct upto { uint64_t i, n, cur; } upto;
static int upto_next(void *state, const void **arg, size_t *len)
{
    upto *u = state;
    if (u->i == u->n)
        return 0;
    u->cur = u->i++;
    *arg = &u->cur;
    *len = 8;
    return 1;
}

BOTH_EXECUTORS(tm_stats, may_be_read_from_another_thread_while_the_tm_runs, .timeout = 120)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm_opts o = {.monitor_interval_ms = -1, .max_in_flight = 64};
    fpp_tm *tm = mk_tm_opts(ex, o);
    watcher w = {.tm = tm};
    pthread_t th;
    pthread_create(&th, NULL, watch, &w);
    upto u = {.n = 20000};
    cr_assert_eq(fpp_map(tm, F_SQUARE, upto_next, &u), 0);
    cr_assert_eq(fpp_run(tm), 0);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    cr_expect_eq(w.bad, 0, "%d inconsistent reads of %ld", w.bad, w.reads);
    cr_expect_gt(w.reads, 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.submitted, 20000);
    cr_expect_eq(st.done, 20000);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------- bad input */

Test(futures, bad_input_is_a_code_and_never_a_crash, .fini = assert_clean)
{
    capture_logs();
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = NULL;
    fpp_tm_opts o = {.retries = 1001};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL, "retries over 1000");
    cr_expect_null(tm);
    cr_expect(strstr(captured_logs(), "retries = 1001 is over 1000") != NULL, "%s", captured_logs());
    o = (fpp_tm_opts){.flags = FPP_TM_PROGRESS << 1};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL, "an unknown flag");
    o = (fpp_tm_opts){.retries = 1000, .monitor_interval_ms = -1,
                      .flags = FPP_TM_NO_SIGINT | FPP_TM_ORDERED | FPP_TM_RETRY_FAILED | FPP_TM_PROGRESS};
    cr_assert_eq(fpp_tm_create(&tm, ex, &o), 0, "every known flag, 1000 retries");
    cr_expect_eq(fpp_submit_ex(NULL, F_ECHO, NULL, 0, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_submit_ex(tm, 9999, NULL, 0, &(fpp_task_opts){0}), FPP_ENOFN);
    cr_expect_null(fpp_task_user(NULL));
    cr_expect_eq(fpp_task_attempts(NULL), 0);
    cr_expect_null(fpp_task_keep(NULL));
    fpp_task_release(NULL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
