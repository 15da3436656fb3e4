/* test_tm.c: the task manager (lib/tm.c, lib/monitor.c, lib/sigint.c): error policies,
 * backpressure, lazy map, retained tasks, the monitor, Ctrl-C, and bad input. */
#include <pthread.h>
#include <stdatomic.h>
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
