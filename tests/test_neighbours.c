/* test_neighbours.c: what a task can do to the pool's own processes, and the signals and kills
 * the parent sends them (issue 16): a kill that fails, a pid that may have been reused.
 * Every test ends with the pool whole (every_slot_serves) and nothing left behind. */
#include "common.h"

#include <sys/syscall.h>

/* --------------------------------------------------------- kill() counted */

/* The library's kill() calls in this process land here (the test binary defines the symbol,
 * which the static test library then uses): the pids signalled are noted, then signalled. */
static pid_t killed[256];
static _Atomic int nkilled;

int kill(pid_t pid, int sig)
{
    int i = atomic_fetch_add(&nkilled, 1);
    if (i < 256)
        killed[i] = pid;
    return (int)syscall(SYS_kill, pid, sig);
}

static bool killed_one_of(const pid_t *pids, int n)
{
    int k = atomic_load(&nkilled);
    if (k > 256)
        k = 256;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n; j++)
            if (killed[i] == pids[j])
                return true;
    return false;
}

static int64_t submit_sleep(fpp_tm *tm, int ms, unsigned timeout_ms)
{
    fpp_task_opts o = {.timeout_ms = timeout_ms};
    int64_t id = fpp_submit_ex(tm, F_SLEEP, &ms, sizeof ms, &o);
    cr_assert_geq(id, 0);
    return id;
}

/* Item 8: pidfd_send_signal fails with ESRCH exactly when the process was reaped already (the
 * fork server reaps before the parent reads its report): the pid may belong to another process
 * by then. 0.2 fell back to kill(pid) there. Here pidfd_send_signal always says ESRCH (as if
 * every worker were reaped at that moment): timeouts and cancels must signal no worker pid. */
Test(kills, esrch_from_the_pidfd_means_dead_and_no_pid_is_signalled, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t workers[16];
    int nw = pool_pids(workers, 16, NULL);
    cr_assert_geq(nw, 2);
    fail_syscall(SYS_pidfd_send_signal, ESRCH);
    atomic_store(&nkilled, 0);
    submit_sleep(tm, 400, 50);        /* times out */
    int64_t c = submit_sleep(tm, 400, 0);
    sleep_ms(50);
    fpp_cancel(tm, c);                /* cancelled while running */
    fpp_task *t;
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1)
        n++;
    cr_expect_eq(n, 2, "both tasks came back");
    cr_expect(!killed_one_of(workers, nw), "a worker's pid was signalled after its pidfd said it was gone");
    /* No wholeness check here: the workers this test calls gone are alive (the ESRCH is made
     * up), so their slots wait for deaths the fork server will never report. */
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Item 9: a kill that fails (EPERM: the worker is not ours to kill any more, as after a change
 * of credentials) was ignored by 0.2, and the timed-out task never ended. Now it ends in its
 * final state, a log line names the worker and the error, and a new worker takes the slot; the
 * old one is left behind (the fork server, not limited here, ends it when the pool goes). */
Test(kills, a_kill_that_fails_ends_the_task_and_replaces_the_worker, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    capture_logs();
    fail_syscall(SYS_pidfd_send_signal, EPERM);
    int64_t to = submit_sleep(tm, 3000, 100);
    int64_t c = submit_sleep(tm, 3000, 0);
    sleep_ms(100);
    cr_expect_eq(fpp_cancel(tm, c), 1);
    fpp_task *t;
    cr_assert_eq(fpp_wait(tm, to, &t), 1, "the timed-out task ends");
    cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT, "%s", fpp_task_error(t));
    fpp_task_release(t);
    cr_expect(strstr(captured_logs(), "cannot kill worker") != NULL, "logs: %s", captured_logs());
    cr_expect(strstr(captured_logs(), "Operation not permitted") != NULL, "logs: %s", captured_logs());
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
