/* test_tm.c: the task manager (lib/tm.c, lib/monitor.c, lib/sigint.c): error policies,
 * backpressure, lazy map, retained tasks, the monitor, Ctrl-C, and bad input. */
#include <pthread.h>
#include <pty.h>
#include <regex.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#include "common.h"

static void submit_mix(fpp_tm *tm, int fail_at, int n, int ms)
{
    for (int i = 0; i < n; i++) {
        if (i == fail_at)
            cr_assert_geq(fpp_submit(tm, F_FAIL, "boom", 4), 0);
        else
            cr_assert_geq(fpp_submit(tm, F_SLEEP, &ms, sizeof ms), 0);
    }
}

BOTH_EXECUTORS(policy, raise_stops_at_the_first_failure_and_cancels_the_rest, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = 500, .retain_completed = 1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    submit_mix(tm, 3, 300, 20);
    cr_assert_eq(fpp_run(tm), FPP_ETASK);
    const fpp_task *f = fpp_tm_failure(tm);
    cr_assert_not_null(f);
    cr_expect_eq(fpp_task_id(f), 3);
    cr_expect_str_eq(fpp_task_error(f), "failing on purpose (boom)");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.failed, 1);
    cr_expect_gt(st.cancelled, 250, "most of the rest cancelled, not run (%llu)", (unsigned long long)st.cancelled);
    cr_expect_eq(st.in_flight, 0);
    /* Every later call raises, until the tm is freed. */
    fpp_task *t;
    cr_expect_eq(fpp_submit(tm, F_ECHO, NULL, 0), FPP_ETASK);
    cr_expect_eq(fpp_as_completed(tm, &t), FPP_ETASK);
    cr_expect_eq(t, f);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    cr_expect_eq(fpp_map(tm, F_ECHO, (fpp_next)1, NULL), FPP_ETASK);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    size_t cancelled = 0;
    for (size_t i = 0; i < n; i++)
        cancelled += fpp_task_status(all[i]) == FPP_CANCELLED;
    cr_expect_eq(cancelled, st.cancelled, "retained tasks include the cancelled ones");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(policy, raise_through_as_completed_hands_out_the_failed_task, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 10; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    fpp_submit(tm, F_RETURN7, NULL, 0);
    fpp_task *t;
    int rc, done = 0;
    while ((rc = fpp_as_completed(tm, &t)) == 1)
        done++;
    cr_expect_eq(rc, FPP_ETASK);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_id(t), 10);
    cr_expect_eq(fpp_task_status(t), FPP_FAILED);
    cr_expect_leq(done, 10);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Process executor only: a crash takes a thread executor's whole process down. */
Test(policy, a_crash_raises_too, .fini = assert_clean)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    fpp_submit(tm, F_SEGV, NULL, 0);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    cr_expect_eq(fpp_task_status(fpp_tm_failure(tm)), FPP_CRASHED);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(policy, log_logs_each_failure_at_error_and_goes_on)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_LOG, 0);
    for (uint64_t i = 0; i < 50; i++) {
        if (i == 7 || i == 30)
            fpp_submit(tm, F_FAIL, "boom", 4);
        else
            fpp_submit(tm, F_SQUARE, &i, 8);
    }
    cr_expect_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 48);
    cr_expect_eq(st.failed, 2);
    const char *log = captured_logs();
    cr_expect(strstr(log, "task 7 (fail, 4-byte argument) failed: failing on purpose (boom)") != NULL, "%s", log);
    cr_expect(strstr(log, "task 30 (fail, 4-byte argument) failed: failing on purpose (boom)") != NULL, "%s", log);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

static int errors_logged;
static void count_errors(fpp_log_level level, const char *msg, void *user)
{
    (void)msg; (void)user;
    errors_logged += level == FPP_LOG_ERROR;
}

BOTH_EXECUTORS(policy, ignore_is_silent_and_keeps_errors_on_retained_tasks)
{
    fpp_log_set(count_errors, NULL, FPP_LOG_DEBUG);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    for (uint64_t i = 0; i < 20; i++)
        fpp_submit(tm, i % 5 == 0 ? F_FAIL : F_SQUARE, i % 5 == 0 ? (const void *)"x" : (const void *)&i, i % 5 == 0 ? 1 : 8);
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(errors_logged, 0, "no ERROR line under IGNORE");
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 20);
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        if (fpp_task_status(all[i]) == FPP_FAILED) {
            failed++;
            cr_expect_str_eq(fpp_task_error(all[i]), "failing on purpose (x)");
            cr_expect_eq(fpp_task_id(all[i]) % 5, 0);
        }
    cr_expect_eq(failed, 4);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* --------------------------------------------------------- backpressure */

typedef struct counter { uint64_t next, cur, end, pulled; _Atomic uint64_t *returned; uint64_t max_ahead; } counter;

static int count_next(void *state, const void **arg, size_t *len)
{
    counter *c = state;
    if (c->next == c->end)
        return 0;
    uint64_t ahead = c->pulled - atomic_load(c->returned);
    if (ahead > c->max_ahead)
        c->max_ahead = ahead;
    c->pulled++;
    c->cur = c->next++;
    *arg = &c->cur;
    *len = 8;
    return 1;
}

BOTH_EXECUTORS(backpressure, map_never_pulls_more_than_max_in_flight_ahead_of_results, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = 8};
    fpp_tm *tm;
    fpp_tm_create(&tm, ex, &to);
    _Atomic uint64_t returned = 0;
    counter c = {.next = 0, .end = 3000, .returned = &returned};
    cr_assert_eq(fpp_map(tm, F_SQUARE, count_next, &c), 0);
    cr_expect_leq(c.pulled, 8, "fpp_map returns at once, having pulled at most max_in_flight");
    fpp_task *t;
    uint64_t sum = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        atomic_fetch_add(&returned, 1);
        sum += u64_of(fpp_task_arg(t, NULL));
        /* Slow consumer: the unread backlog must not grow. */
        if (atomic_load(&returned) % 500 == 0)
            sleep_ms(20);
    }
    cr_expect_eq(atomic_load(&returned), 3000);
    cr_expect_eq(sum, 3000ULL * 2999 / 2);
    cr_expect_leq(c.max_ahead, 8, "pulled ahead of results: %llu", (unsigned long long)c.max_ahead);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(backpressure, a_map_over_a_billion_items_is_lazy, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = 64};
    fpp_tm *tm;
    fpp_tm_create(&tm, ex, &to);
    _Atomic uint64_t returned = 0;
    counter c = {.next = 0, .end = 1000000000ULL, .returned = &returned};
    cr_assert_eq(fpp_map(tm, F_SQUARE, count_next, &c), 0);
    fpp_task *t;
    for (int i = 0; i < 10000; i++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        atomic_fetch_add(&returned, 1);
    }
    cr_expect_leq(c.pulled, 10000 + 64);
    cr_expect_leq(c.max_ahead, 64);
    fpp_tm_free(tm); /* cancels the rest of the billion at once */
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(backpressure, submit_blocks_while_max_in_flight_are_unfinished, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = 4, .retain_completed = 1};
    fpp_tm *tm;
    fpp_tm_create(&tm, ex, &to);
    int ms = 5;
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(fpp_submit(tm, F_SLEEP, &ms, sizeof ms), i);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        cr_assert_leq(st.in_flight, 4, "after submit %d: %zu unfinished", i, st.in_flight);
    }
    cr_expect_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    cr_expect_eq(fpp_completed(tm, &all), 40, "finished tasks are not what submit waits on");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* --------------------------------------------------------------- map */

typedef struct items { int i, n, fail_at; size_t big_at; char buf[256]; } items;

static int item_next(void *state, const void **arg, size_t *len)
{
    items *it = state;
    if (it->i == it->fail_at)
        return -42;
    if (it->i == it->n)
        return 0;
    *len = (size_t)it->i == it->big_at ? 200 : 8;
    memset(it->buf, it->i, sizeof it->buf);
    *arg = it->buf;
    it->i++;
    return 1;
}

BOTH_EXECUTORS(map, an_iterator_error_stops_the_map_and_is_reported_once)
{
    capture_logs();
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 1);
    items it = {.n = 100, .fail_at = 30, .big_at = (size_t)-1};
    cr_assert_eq(fpp_map(tm, F_ECHO, item_next, &it), 0);
    cr_expect_eq(fpp_run(tm), -42, "the iterator's error, once everything produced completed");
    fpp_task *const *all;
    cr_expect_eq(fpp_completed(tm, &all), 30, "the 30 items produced still completed");
    cr_expect_eq(fpp_run(tm), 0, "reported once");
    cr_expect(strstr(captured_logs(), "the iterator returned -42 after 30 item(s)") != NULL, "%s", captured_logs());
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(map, an_item_over_max_arg_size_fails_alone_under_log)
{
    fpp_executor_opts o = {.max_arg_size = 100};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_LOG, 1);
    items it = {.n = 20, .fail_at = -1, .big_at = 5};
    cr_assert_eq(fpp_map(tm, F_ECHO, item_next, &it), 0);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 20, "the map went on past the oversize item");
    for (size_t i = 0; i < n; i++) {
        size_t len;
        if (fpp_task_id(all[i]) == 5) {
            cr_expect_eq(fpp_task_status(all[i]), FPP_FAILED);
            cr_expect_str_eq(fpp_task_error(all[i]), "FPP_ETOOBIG: argument of 200 bytes exceeds max_arg_size (100 bytes)");
            cr_expect_null(fpp_task_arg(all[i], &len));
            cr_expect_eq(len, 200);
        } else {
            cr_expect_eq(fpp_task_status(all[i]), FPP_DONE);
        }
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(map, ids_follow_submission_order_across_submit_and_map)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 1);
    uint64_t x = 1;
    cr_expect_eq(fpp_submit(tm, F_SQUARE, &x, 8), 0);
    items it = {.n = 5, .fail_at = -1, .big_at = (size_t)-1};
    fpp_map(tm, F_ECHO, item_next, &it);
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(fpp_submit(tm, F_SQUARE, &x, 8), 6);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 7);
    int seen[7] = {0};
    for (size_t i = 0; i < n; i++)
        seen[fpp_task_id(all[i])]++;
    for (int i = 0; i < 7; i++)
        cr_expect_eq(seen[i], 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(tm, rejects_absurd_max_in_flight_and_bad_policy, .fini = assert_clean)
{
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = (fpp_tm *)1;
    fpp_tm_opts o = {.max_in_flight = (size_t)-1};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL);
    cr_expect_null(tm);
    o = (fpp_tm_opts){.max_in_flight = (size_t)1 << 40};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL);
    o = (fpp_tm_opts){.error_policy = (fpp_policy)7};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL);
    o = (fpp_tm_opts){.flags = 0x80};
    cr_expect_eq(fpp_tm_create(&tm, ex, &o), FPP_EINVAL);
    fpp_executor_free(ex);
}

Test(tm, completed_is_empty_without_retain, .fini = assert_clean)
{
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t x = 3;
    fpp_submit(tm, F_SQUARE, &x, 8);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_task *const *all = (fpp_task *const *)1;
    cr_expect_eq(fpp_completed(tm, &all), 0);
    cr_expect_null(all);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(tm, retained_tasks_are_listed_in_completion_order, .fini = assert_clean)
{
    fpp_executor_opts o = {.workers = 1};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 1);
    int ms[] = {30, 1, 1};
    for (int i = 0; i < 3; i++)
        fpp_submit(tm, F_SLEEP, &ms[i], sizeof ms[i]);
    fpp_task *t;
    int64_t order[3];
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1)
        order[n++] = fpp_task_id(t);
    fpp_task *const *all;
    cr_assert_eq(fpp_completed(tm, &all), 3);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(fpp_task_id(all[i]), order[i], "same order as fpp_as_completed");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* -------------------------------------------------------------- monitor */

BOTH_EXECUTORS(monitor, logs_start_progress_and_shutdown_lines, .timeout = 30)
{
    capture_logs();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm_opts to = {.monitor_interval_ms = 100};
    fpp_tm *tm;
    fpp_tm_create(&tm, ex, &to);
    int ms = 50;
    for (int i = 0; i < 12; i++)
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    const char *log = captured_logs();
    const char *a = strstr(log, "Starting executor monitor");
    const char *b = strstr(log, " task(s) completed in the last ");
    const char *c = strstr(log, "Shutting down monitor...");
    cr_expect(a && b && c && a < b && b < c, "the three lines, in order:\n%s", log);
}

Test(monitor, a_negative_interval_means_no_monitor, .fini = assert_clean)
{
    capture_logs();
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0); /* monitor_interval_ms = -1 */
    uint64_t x = 2;
    fpp_submit(tm, F_SQUARE, &x, 8);
    fpp_run(tm);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    cr_expect_null(strstr(captured_logs(), "monitor"));
}

/* -------------------------------------------------------------- Ctrl-C */

/* Runs in a child process of its own group: six tasks that sleep 30 s, fpp_run, then reports
 * (rc, cancelled, ms it took after the signal, SIGINT disposition restored?) on fd. */
static void sigint_child(kind k, int fd, int ready_fd, int sleep_ms_each)
{
    setpgid(0, 0);
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    fpp_executor *ex;
    fpp_executor_opts o = {.workers = 2};
    if ((k == PROC ? fpp_process_executor(&ex, &o) : fpp_thread_executor(&ex, &o)) != 0)
        _exit(2);
    fpp_tm *tm;
    fpp_tm_opts to = {.monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &to);
    for (int i = 0; i < 6; i++)
        fpp_submit(tm, F_SLEEP, &sleep_ms_each, sizeof sleep_ms_each);
    char c = 'r';
    ssize_t w = write(ready_fd, &c, 1);
    (void)w;
    int rc = fpp_run(tm);
    int left = live_children(); /* right after EINTR: workers stopped (an idle spare may remain) */
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    struct sigaction sa;
    sigaction(SIGINT, NULL, &sa);
    long report[5] = {rc, (long)st.cancelled, 0, sa.sa_handler == SIG_DFL, left};
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    report[2] = live_children();
    w = write(fd, report, sizeof report);
    _exit(0);
}

static void sigint_scenario(kind k, int sleep_each, long *report, double *secs)
{
    int p[2], r[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(r), 0);
    pid_t pid = fork();
    if (pid == 0)
        sigint_child(k, p[1], r[1], sleep_each);
    close(p[1]);
    close(r[1]);
    char c;
    cr_assert_eq(read(r[0], &c, 1), 1);
    sleep_ms(300); /* let fpp_run block */
    struct timeval a, b;
    gettimeofday(&a, NULL);
    cr_assert_eq(kill(-pid, SIGINT), 0, "SIGINT to the child's whole process group");
    ssize_t got = read(p[0], report, 5 * sizeof(long));
    gettimeofday(&b, NULL);
    *secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
    int status;
    waitpid(pid, &status, 0);
    cr_assert_eq(got, 5 * (ssize_t)sizeof(long), "child died: status %d", status);
    close(p[0]);
    close(r[0]);
}

Test(sigint, one_sigint_to_the_group_stops_fpp_run_with_eintr, .fini = assert_clean, .timeout = 60)
{
    long rep[5];
    double secs;
    sigint_scenario(PROC, 30000, rep, &secs);
    cr_expect_eq(rep[0], FPP_EINTR);
    cr_expect_eq(rep[1], 6, "six tasks cancelled");
    cr_expect_eq(rep[2], 0, "no worker left after free");
    cr_expect_eq(rep[3], 1, "the previous SIGINT disposition restored");
    cr_expect_leq(rep[4], 1, "workers stopped at EINTR (%ld processes left; an idle spare may remain)", rep[4]);
    cr_expect_lt(secs, 20.0, "returned long before the 30 s tasks would end (%.3f s)", secs);
    cr_log_info("process executor: fpp_run returned %.3f s after SIGINT", secs);
}

Test(sigint, thread_executor_returns_once_running_functions_end, .fini = assert_clean, .timeout = 60)
{
    long rep[5];
    double secs;
    sigint_scenario(THR, 500, rep, &secs);
    cr_expect_eq(rep[0], FPP_EINTR);
    cr_expect_eq(rep[1], 6);
    cr_expect_eq(rep[3], 1);
}

static _Atomic int app_handler_ran;
static void app_handler(int s) { (void)s; atomic_store(&app_handler_ran, 1); }

Test(sigint, no_sigint_flag_leaves_sigint_to_the_application, .fini = assert_clean, .timeout = 60)
{
    struct sigaction sa = {.sa_handler = app_handler};
    sigaction(SIGINT, &sa, NULL);
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .flags = FPP_TM_NO_SIGINT};
    fpp_tm *tm;
    fpp_tm_create(&tm, ex, &to);
    int ms = 300;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    uint64_t x = 5;
    fpp_submit(tm, F_SQUARE, &x, 8);
    kill(getpid(), SIGINT);
    cr_expect_eq(fpp_run(tm), 0, "not interrupted");
    cr_expect_eq(atomic_load(&app_handler_ran), 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(sigint, outside_a_call_sigint_keeps_the_applications_disposition, .fini = assert_clean, .timeout = 60)
{
    struct sigaction sa = {.sa_handler = app_handler};
    sigaction(SIGINT, &sa, NULL);
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t x = 5;
    fpp_submit(tm, F_SQUARE, &x, 8);
    cr_expect_eq(fpp_run(tm), 0); /* our handler is installed now */
    kill(getpid(), SIGINT);       /* not inside a call: the application's handler runs */
    cr_expect_eq(atomic_load(&app_handler_ran), 1);
    fpp_submit(tm, F_SQUARE, &x, 8);
    cr_expect_eq(fpp_run(tm), 0, "and the task manager was not interrupted");
    fpp_tm_free(tm);
    struct sigaction cur;
    sigaction(SIGINT, NULL, &cur);
    cr_expect_eq(cur.sa_handler, app_handler, "restored at fpp_tm_free");
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------- fpp_run */

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

/* 0.1 dropped the finished backlog after feeding: when one poll finished every task in flight,
 * the map was not fed again and fpp_run slept for ever. */
BOTH_EXECUTORS(map, fpp_run_over_a_map_finishes_whatever_the_window, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    for (size_t w = 1; w <= 64; w *= 4) {
        fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = w};
        fpp_tm *tm;
        cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
        upto u = {.n = 5000};
        cr_assert_eq(fpp_map(tm, F_SQUARE, upto_next, &u), 0);
        cr_assert_eq(fpp_run(tm), 0);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        cr_expect_eq(st.done, 5000, "window %zu", w);
        fpp_tm_free(tm);
    }
    fpp_executor_free(ex);
}

/* --------------------------------------------------------------- retries */

enum { S_FLAKY = 100, S_FLAKY_PIDS = 110 };

static fpp_tm *mk_tm_retry(fpp_executor *ex, fpp_policy p, unsigned retries, unsigned flags)
{
    fpp_tm_opts to = {.error_policy = p, .monitor_interval_ms = -1, .retain_completed = 1,
                      .retries = retries, .flags = flags};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    return tm;
}

static const fpp_task *find(fpp_tm *tm, int64_t id)
{
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    for (size_t i = 0; i < n; i++)
        if (fpp_task_id(all[i]) == id)
            return all[i];
    return NULL;
}

/* Process executor only: a crash takes a thread executor's whole process down. */
Test(retries, a_task_that_segfaults_twice_succeeds_on_its_third_attempt_in_other_workers, .fini = assert_clean, .timeout = 60)
{
    shared_reset();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &eo);
    fpp_tm *tm = mk_tm_retry(ex, FPP_RAISE, 2, 0); /* raise: a crash that is retried never raises */
    flaky_arg a = {.counter = S_FLAKY, .pid_at = S_FLAKY_PIDS, .bad = 2, .how = 0};
    cr_assert_eq(fpp_submit(tm, F_FLAKY, &a, sizeof a), 0);
    for (uint64_t i = 0; i < 20; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_assert_eq(fpp_run(tm), 0);
    const fpp_task *t = find(tm, 0);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t) ? fpp_task_error(t) : "");
    cr_expect_eq(fpp_task_attempts(t), 3);
    long k3;
    memcpy(&k3, fpp_task_result(t, NULL), sizeof k3);
    cr_expect_eq(k3, 3, "the third attempt returned");
    long p1 = T_SHARED[S_FLAKY_PIDS + 1], p2 = T_SHARED[S_FLAKY_PIDS + 2], p3 = T_SHARED[S_FLAKY_PIDS + 3];
    cr_expect(p1 && p2 && p3 && p1 != p2 && p2 != p3 && p1 != p3, "each attempt in another worker: %ld %ld %ld", p1, p2, p3);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.retried, 2);
    cr_expect_eq(st.crashed, 0, "only final outcomes are counted");
    cr_expect_eq(st.done, 21);
    cr_expect_geq(st.worker_restarts, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Task i's first attempt dies (SIGKILL); its retry returns i. Counts in T_SHARED[i]. */
static int crash_once(const void *arg, size_t len, fpp_out *out)
{
    uint32_t i;
    cr_assert_eq(len, sizeof i);
    memcpy(&i, arg, sizeof i);
    if (atomic_fetch_add(&T_SHARED[i], 1) == 0)
        raise(SIGKILL);
    return fpp_out_set(out, &i, sizeof i);
}

/* Retried tasks go out before new ones; a worker that got some and then a new task found no
 * room was never woken (the callers flushed only after a dispatch that placed the new task):
 * both workers slept with tasks queued until their sleep ran out (1 s: a run of 1000 took
 * 1.2-58 s instead of 0.2). Here a worker sleeps 10 minutes at a time: such a wake-up lost
 * hangs the test. */
Test(retries, retried_crashes_never_wait_for_a_worker_to_wake_on_its_own, .fini = assert_clean, .timeout = 120)
{
    static int fn = -1;
    if (fn < 0)
        fn = fpp_register("crash_once", crash_once);
    enum { N = 1000 };
    setenv("FPP_TEST_WORKER_SLEEP_MS", "600000", 1);
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    unsetenv("FPP_TEST_WORKER_SLEEP_MS");
    for (int round = 0; round < 3; round++) {
        shared_reset();
        fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .retries = 1};
        fpp_tm *tm;
        cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
        for (uint32_t i = 0; i < N; i++)
            cr_assert_eq(fpp_submit(tm, fn, &i, sizeof i), (int64_t)i);
        cr_expect_eq(fpp_run(tm), 0);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        cr_expect_eq(st.done, N, "round %d: %llu done", round, (unsigned long long)st.done);
        cr_expect_eq(st.retried, N);
        for (int i = 0; i < N; i++)
            cr_expect_eq(atomic_load(&T_SHARED[i]), 2, "task %d ran %ld times", i, atomic_load(&T_SHARED[i]));
        every_slot_serves(tm, 2); /* after 1000 crashes, both slots still take tasks */
        fpp_tm_free(tm);
    }
    fpp_executor_free(ex);
}

Test(retries, the_final_error_names_the_attempts_and_the_policy_sees_it_once, .fini = assert_clean, .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = mk_tm_retry(ex, FPP_LOG, 2, 0);
    cr_assert_eq(fpp_submit(tm, F_SEGV, NULL, 0), 0);
    cr_assert_eq(fpp_run(tm), 0);
    const fpp_task *t = find(tm, 0);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_status(t), FPP_CRASHED);
    cr_expect_eq(fpp_task_attempts(t), 3);
    cr_expect_eq(fpp_task_signal(t), SIGSEGV);
    const char *e = fpp_task_error(t);
    cr_expect(strncmp(e, "crashed on 3 attempts; last: worker ", 36) == 0, "%s", e);
    cr_expect(strstr(e, "killed by SIGSEGV while running task 0") != NULL, "%s", e);
    const char *log = captured_logs();
    const char *first = strstr(log, "task 0 (segv, 0-byte argument) crashed: crashed on 3 attempts");
    cr_expect(first != NULL, "%s", log);
    cr_expect(first && !strstr(first + 1, "task 0 (segv"), "logged once, for the final outcome:\n%s", log);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.retried, 2);
    cr_expect_eq(st.crashed, 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(retries, a_crash_that_runs_out_of_retries_raises, .fini = assert_clean, .timeout = 60)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = mk_tm_retry(ex, FPP_RAISE, 1, 0);
    fpp_submit(tm, F_SEGV, NULL, 0);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    cr_expect_eq(fpp_task_attempts(fpp_tm_failure(tm)), 2);
    cr_expect_eq(fpp_task_status(fpp_tm_failure(tm)), FPP_CRASHED);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(retries, failed_tasks_run_again_only_with_retry_failed, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    for (int with = 0; with < 2; with++) {
        shared_reset();
        fpp_tm *tm = mk_tm_retry(ex, FPP_IGNORE, 3, with ? FPP_TM_RETRY_FAILED : 0);
        flaky_arg a = {.counter = S_FLAKY, .pid_at = S_FLAKY_PIDS, .bad = 1, .how = 1};
        fpp_submit(tm, F_FLAKY, &a, sizeof a);
        cr_assert_eq(fpp_run(tm), 0);
        const fpp_task *t = find(tm, 0);
        cr_assert_not_null(t);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        if (with) {
            cr_expect_eq(fpp_task_status(t), FPP_DONE);
            cr_expect_eq(fpp_task_attempts(t), 2);
            cr_expect_eq(st.retried, 1);
        } else {
            cr_expect_eq(fpp_task_status(t), FPP_FAILED);
            cr_expect_str_eq(fpp_task_error(t), "flaky: attempt 1 fails", "the error is untouched");
            cr_expect_eq(fpp_task_attempts(t), 1);
            cr_expect_eq(st.retried, 0);
        }
        fpp_tm_free(tm);
    }
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(retries, a_task_that_times_out_runs_again, .timeout = 60)
{
    shared_reset();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm *tm = mk_tm_retry(ex, FPP_RAISE, 1, 0);
    flaky_arg a = {.counter = S_FLAKY, .pid_at = S_FLAKY_PIDS, .bad = 1, .how = 2}; /* 5 s once */
    fpp_task_opts o = {.timeout_ms = 200};
    cr_assert_eq(fpp_submit_ex(tm, F_FLAKY, &a, sizeof a, &o), 0);
    cr_assert_eq(fpp_run(tm), 0);
    const fpp_task *t = find(tm, 0);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t) ? fpp_task_error(t) : "");
    cr_expect_eq(fpp_task_attempts(t), 2);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.retried, 1);
    cr_expect_eq(st.timed_out, 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Retries choose the outcomes they apply to (retry_on): an input that always hangs costs one
 * timeout, not one per attempt, while crashes are still retried. */
Test(retries, retry_on_chooses_which_outcomes_run_again, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &eo);
    static const struct {
        unsigned retry_on, flags;
        unsigned crash_attempts, hang_attempts, fail_attempts;
    } cases[] = {
        {0, 0, 3, 3, 1},                                       /* the default: crashed, timed out */
        {0, FPP_TM_RETRY_FAILED, 3, 3, 3},                     /* the 0.2 flag adds failed */
        {FPP_RETRY_CRASHED, 0, 3, 1, 1},                       /* crashes only */
        {FPP_RETRY_TIMEOUT, 0, 1, 3, 1},
        {FPP_RETRY_FAILED, 0, 1, 1, 3},
        {FPP_RETRY_CRASHED, FPP_TM_RETRY_FAILED, 3, 1, 3},     /* the flag still adds failed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .retain_completed = 1,
                          .retries = 2, .retry_on = cases[i].retry_on, .flags = cases[i].flags};
        fpp_tm *tm;
        cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
        int ms = 10000;
        fpp_task_opts hang = {.timeout_ms = 150};
        cr_assert_eq(fpp_submit(tm, F_SEGV, NULL, 0), 0);
        cr_assert_eq(fpp_submit_ex(tm, F_SLEEP, &ms, sizeof ms, &hang), 1);
        cr_assert_eq(fpp_submit(tm, F_FAIL, "x", 1), 2);
        cr_assert_eq(fpp_run(tm), 0);
        cr_expect_eq(fpp_task_status(find(tm, 0)), FPP_CRASHED);
        cr_expect_eq(fpp_task_status(find(tm, 1)), FPP_TIMEOUT);
        cr_expect_eq(fpp_task_status(find(tm, 2)), FPP_FAILED);
        cr_expect_eq(fpp_task_attempts(find(tm, 0)), cases[i].crash_attempts, "case %zu: the crash", i);
        cr_expect_eq(fpp_task_attempts(find(tm, 1)), cases[i].hang_attempts, "case %zu: the hang", i);
        cr_expect_eq(fpp_task_attempts(find(tm, 2)), cases[i].fail_attempts, "case %zu: the failure", i);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        cr_expect_eq(st.retried, cases[i].crash_attempts + cases[i].hang_attempts + cases[i].fail_attempts - 3,
                     "case %zu", i);
        fpp_tm_free(tm);
    }
    fpp_tm_opts bad = {.retry_on = 1u << 9};
    fpp_tm *tm;
    cr_expect_eq(fpp_tm_create(&tm, ex, &bad), FPP_EINVAL);
    cr_expect_null(tm);
    bad.retry_on = 1u << FPP_DONE; /* done is no outcome to retry */
    cr_expect_eq(fpp_tm_create(&tm, ex, &bad), FPP_EINVAL);
    fpp_executor_free(ex);
}

/* --------------------------------------------------------------- ordered */

typedef struct window { uint64_t next, end, cur, pulled; const uint64_t *returned; uint64_t max_ahead; } window;

static int window_next(void *state, const void **arg, size_t *len)
{
    window *w = state;
    if (w->next == w->end)
        return 0;
    uint64_t ahead = w->pulled - *w->returned;
    if (ahead > w->max_ahead)
        w->max_ahead = ahead;
    w->pulled++;
    w->cur = w->next++;
    *arg = &w->cur;
    *len = 8;
    return 1;
}

BOTH_EXECUTORS(ordered, a_map_of_a_million_items_comes_back_in_id_order_within_the_window, .timeout = 600)
{
    enum { WINDOW = 64 };
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = WINDOW, .flags = FPP_TM_ORDERED};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    uint64_t returned = 0;
    window w = {.end = 1000000, .returned = &returned};
    cr_assert_eq(fpp_map(tm, F_JITTER, window_next, &w), 0);
    fpp_task *t;
    size_t max_in_flight = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        cr_assert_eq(fpp_task_id(t), (int64_t)returned, "in id order");
        cr_assert_eq(u64_of(fpp_task_result(t, NULL)), returned);
        returned++;
        if ((returned & 1023) == 0) {
            fpp_stats st;
            fpp_tm_stats(tm, &st);
            if (st.in_flight > max_in_flight)
                max_in_flight = st.in_flight;
        }
    }
    cr_expect_eq(returned, 1000000);
    cr_expect_leq(w.max_ahead, WINDOW, "pulled ahead of results (reorder window included): %llu",
                  (unsigned long long)w.max_ahead);
    cr_expect_leq(max_in_flight, WINDOW);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

typedef struct releaser { int delay_ms; } releaser;
static void *release_later(void *arg)
{
    releaser *r = arg;
    sleep_ms(r->delay_ms);
    atomic_store(&T_SHARED[1], 1);
    return NULL;
}

BOTH_EXECUTORS(ordered, submit_counts_the_results_held_back_toward_max_in_flight, .timeout = 60)
{
    shared_reset();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .max_in_flight = 4, .flags = FPP_TM_ORDERED};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    block_arg b = {.started = 0, .release = 1, .pid_at = 16, .max_ms = 20000};
    cr_assert_eq(fpp_submit(tm, F_BLOCK, &b, sizeof b), 0);
    for (uint64_t i = 1; i < 4; i++)
        cr_assert_eq(fpp_submit(tm, F_SQUARE, &i, 8), (int64_t)i);
    pthread_t th;
    releaser r = {.delay_ms = 300};
    pthread_create(&th, NULL, release_later, &r);
    /* Tasks 1-3 finish at once but wait behind task 0: no room until it is done. */
    uint64_t x = 4;
    cr_assert_eq(fpp_submit(tm, F_SQUARE, &x, 8), 4);
    cr_expect_eq(atomic_load(&T_SHARED[1]), 1, "fpp_submit returned only once task 0 was released");
    pthread_join(th, NULL);
    fpp_task *t;
    for (int64_t i = 0; i < 5; i++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        cr_expect_eq(fpp_task_id(t), i);
    }
    cr_expect_eq(fpp_as_completed(tm, &t), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(ordered, wait_and_cancel_take_tasks_out_of_the_order, .timeout = 60)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.monitor_interval_ms = -1, .flags = FPP_TM_ORDERED, .error_policy = FPP_LOG};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (int i = 0; i < 12; i++) {
        int ms = (12 - i) * 10;
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    }
    fpp_task *w;
    cr_assert_eq(fpp_wait(tm, 7, &w), 1);
    cr_expect_eq(fpp_cancel(tm, 11), 1);
    int64_t expect = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        if (expect == 7)
            expect++;
        cr_expect_eq(fpp_task_id(t), expect, "in order, skipping the waited task");
        cr_expect_eq(fpp_task_status(t), expect == 11 ? FPP_CANCELLED : FPP_DONE);
        expect++;
    }
    cr_expect_eq(expect, 12);
    fpp_task_release(w);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(ordered, the_monitor_names_the_task_that_holds_the_window, .timeout = 60)
{
    capture_logs();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.monitor_interval_ms = 50, .flags = FPP_TM_ORDERED};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    int slow = 600, quick = 1;
    fpp_submit(tm, F_SLEEP, &slow, sizeof slow);
    for (int i = 0; i < 5; i++)
        fpp_submit(tm, F_SLEEP, &quick, sizeof quick);
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1)
        ;
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    const char *log = captured_logs();
    cr_expect(strstr(log, "waiting on task 0 for ") != NULL, "%s", log);
    cr_expect(strstr(log, "(5 finished task(s) held back)") != NULL, "%s", log);
}

/* -------------------------------------------------------------- progress */

/* In the child: 40 tasks of 30 ms (after the 20th, 100 ms) on 2 workers with FPP_TM_PROGRESS
 * (the 20th, labelled "p-input", fails under FPP_LOG,
 * which logs a line while the progress line is up), then "END <ms>" on stderr. */
static void progress_child(int monitor_ms)
{
    fpp_log_set(NULL, NULL, FPP_LOG_INFO);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if (fpp_thread_executor(&ex, &eo) != 0)
        _exit(2);
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = monitor_ms, .flags = FPP_TM_PROGRESS,
                      .expected_total = 40};
    if (fpp_tm_create(&tm, ex, &to) != 0)
        _exit(3);
    int64_t t0 = mono_ns();
    int ms = 30, after = 100; /* a second of run after the failure: the line shows it */
    fpp_task_opts o = {.label = "p-input"};
    for (int i = 0; i < 40; i++) {
        if (i == 20)
            fpp_submit_ex(tm, F_FAIL, "p", 1, &o);
        else
            fpp_submit(tm, F_SLEEP, i < 20 ? &ms : &after, sizeof ms);
    }
    int rc = fpp_run(tm);
    int64_t elapsed = (mono_ns() - t0) / 1000000;
    char end[64];
    int n = snprintf(end, sizeof end, "END %lld rc %d\n", (long long)elapsed, rc);
    ssize_t w = write(STDERR_FILENO, end, (size_t)n);
    (void)w;
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    _exit(0);
}

static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
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

#define CLEAR "\r\033[K"

Test(progress, on_a_terminal_one_line_is_redrawn_in_place_and_cleared_before_logs_and_at_the_end,
     .fini = assert_clean, .timeout = 60)
{
    int master;
    struct winsize ws = {.ws_row = 24, .ws_col = 120};
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    cr_assert_geq(pid, 0, "forkpty: %s", strerror(errno));
    if (pid == 0)
        progress_child(-1); /* the monitor off: the line shows all the same */
    static char out[1 << 20];
    size_t n = read_all(master, out, sizeof out); /* EIO once the child is gone */
    int status;
    waitpid(pid, &status, 0);
    close(master);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d:\n%s", status, out);
    long elapsed = -1;
    int rc = -1;
    const char *end = strstr(out, "END ");
    cr_assert_not_null(end, "%s", out);
    cr_assert_eq(sscanf(end, "END %ld rc %d", &elapsed, &rc), 2);
    cr_expect_eq(rc, 0);

    /* Every draw: "\r" + the line + erase to the end of the line. */
    regex_t re;
    cr_assert_eq(regcomp(&re, "^\r\\[[#.]{14}\\] [0-9]+% [0-9,]+/40 finished(, 1 failed)?, [-0-9.kM]+/s, ETA [-0-9:]+"
                              "(, last: task 20 \"p-input\" failed)?\033\\[K",
                         REG_EXTENDED | REG_NEWLINE), 0);
    int draws = 0, naming = 0;
    const char *last_draw = NULL;
    for (const char *p = out; (p = strstr(p, "\r[")) != NULL; p++) {
        if (p[2] != '#' && p[2] != '.')
            continue; /* a log line's timestamp after a clear: "\r\033[K[12:..." has no "\r[" */
        cr_expect_eq(regexec(&re, p, 0, NULL, 0), 0, "a malformed progress line: %.100s", p + 1);
        draws++;
        const char *eol = strstr(p, "\033[K");
        const char *named = strstr(p, ", 1 failed, ");
        const char *last = strstr(p, "last: task 20 \"p-input\" failed");
        naming += named && eol && last && named < eol && last < eol;
        last_draw = p;
    }
    regfree(&re);
    cr_expect_geq(draws, 2, "redrawn in place (%d draws in %ld ms):\n%s", draws, elapsed, out);
    cr_expect_geq(naming, 1, "after the failure, the line counts it and names it by its label:\n%s", out);
    cr_expect_leq(draws, elapsed / 100 + 1, "at most 10 draws a second: %d in %ld ms", draws, elapsed);
    /* The failed task's log line starts on a cleared line when a progress line was up. */
    const char *log = strstr(out, "failed: failing on purpose (p)");
    cr_assert_not_null(log, "%s", out);
    const char *start = log;
    while (start > out && *start != '[')
        start--;
    bool drawn_before = false;
    for (const char *p = out; (p = strstr(p, "\r[")) != NULL && p < start; p++)
        drawn_before = drawn_before || p[2] == '#' || p[2] == '.';
    size_t cl = strlen(CLEAR);
    if (drawn_before)
        cr_expect(start - out >= (long)cl && memcmp(start - cl, CLEAR, cl) == 0,
                  "the log line follows a clear: ...%.40s", start - 20);
    /* Cleared at the end: nothing of the line is left when fpp_run returns. */
    cr_assert_not_null(last_draw);
    cr_expect(end - out >= (long)cl && memcmp(end - cl, CLEAR, cl) == 0, "cleared before END: ...%.60s", end - 30);
    cr_expect_lt(last_draw, end);
    cr_expect_eq(strstr(out, "task(s) completed in the last"), NULL, "no monitor lines on a terminal");
    cr_log_info("%d draws in %ld ms, %zu bytes", draws, elapsed, n);
}

Test(progress, elsewhere_the_monitor_lines_as_before, .fini = assert_clean, .timeout = 60)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        progress_child(100);
    }
    close(p[1]);
    static char out[1 << 20];
    read_all(p[0], out, sizeof out);
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d:\n%s", status, out);
    cr_expect(strstr(out, "Starting executor monitor") != NULL, "%s", out);
    cr_expect(strstr(out, "task(s) completed in the last") != NULL, "%s", out);
    cr_expect(strstr(out, "failed: failing on purpose (p)") != NULL, "%s", out);
    cr_expect_eq(strchr(out, '\r'), NULL, "no progress line off a terminal:\n%s", out);
}
