/* test_neighbours.c: what a task can do to the pool's own processes (its neighbours: the fork
 * server, the keeper, the other workers; issue 16 items 3-5), and the signals and kills the
 * parent sends them (items 8-9): a stopped server, a stopped process group, lowered limits,
 * a program that ends while its server is stopped, a kill that fails, a pid that may have
 * been reused.
 * Every test ends with the pool whole (every_slot_serves) and nothing left behind. */
#include "common.h"

#include <linux/capability.h>
#include <sys/resource.h>
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

/* ------------------------------------------------ what a task does to its neighbours */

static int F_STOP_GROUP, F_STOP_SERVER, F_LOWER_SERVER_AS, F_ANCHOR_AND_STOP;

/* Item 5: SIGSTOP to its own process group (kill(0, ...)); answers once continued. */
static int stop_group(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    kill(0, SIGSTOP);
    return fpp_out_set(out, "up", 2);
}

/* SIGSTOP to the fork server (its parent). */
static int stop_server(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    return kill(getppid(), SIGSTOP);
}

/* Item 4: the server's address-space limit lowered (soft and hard) to just above its size,
 * then the task dies: the server's next fork would have it. */
static int lower_server_as(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    pid_t server = getppid();
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/statm", (long)server);
    FILE *f = fopen(path, "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1)
        return 1;
    fclose(f);
    rlim_t size = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (4u << 20);
    struct rlimit rl = {size, size};
    if (prlimit(server, RLIMIT_AS, &rl, NULL) != 0)
        return 2;
    atomic_store(&T_SHARED[0], 1);
    raise(SIGKILL);
    return 3;
}

/* Item 3: a helper in a group of its own whose child moves back into the server's group (so
 * that group never looks orphaned to the kernel), then SIGSTOP to the server. The helper and
 * its child wait; their pids go to T_SHARED[1..2]. */
static int anchor_and_stop(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    pid_t server = getppid(), group = getpgid(server);
    pid_t h = fork();
    if (h == 0) {
        setpgid(0, 0);
        pid_t c = fork();
        if (c == 0) {
            setpgid(0, group);
            atomic_store(&T_SHARED[2], (long)getpid());
            for (;;)
                pause();
        }
        atomic_store(&T_SHARED[1], (long)getpid());
        for (;;)
            pause();
    }
    for (int i = 0; i < 200 && !atomic_load(&T_SHARED[2]); i++)
        sleep_ms(5);
    return kill(server, SIGSTOP);
}

__attribute__((constructor)) static void register_neighbours(void)
{
    F_STOP_GROUP = fpp_register("n_stop_group", stop_group);
    F_STOP_SERVER = fpp_register("n_stop_server", stop_server);
    F_LOWER_SERVER_AS = fpp_register("n_lower_server_as", lower_server_as);
    F_ANCHOR_AND_STOP = fpp_register("n_anchor_and_stop", anchor_and_stop);
}

/* Item 5: a task's kill(0, SIGSTOP) stopped the server, every worker and the spare on 0.2 (one
 * process group): without a timeout the run never ended. Each worker now has a group of its
 * own: the task stops its own worker alone, and the other tasks all run meanwhile. Its own
 * task is its cost (like a task that hangs); cancelling it kills its worker. */
Test(groups, a_tasks_kill_0_sigstop_stops_its_own_worker_alone, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    int64_t stopper = fpp_submit(tm, F_STOP_GROUP, NULL, 0);
    sleep_ms(50);
    for (uint64_t i = 0; i < 100; i++)
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
    fpp_task *t;
    int done = 0;
    while (done < 100 && fpp_as_completed_for(tm, &t, 20000) == 1) {
        cr_expect_neq(fpp_task_id(t), stopper);
        cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        done++;
    }
    cr_expect_eq(done, 100, "the other tasks ran while the stopper's worker was stopped");
    cr_expect(fpp_task_status(t) == FPP_DONE);
    cr_expect_eq(fpp_cancel(tm, stopper), 1, "the stopped task is still running: cancelled");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A task stops the fork server (SIGSTOP to its parent) and another one crashes: the parent's
 * heartbeat finds the server stopped and continues it, and the crashed worker is replaced.
 * The same server serves on. */
Test(groups, a_server_a_task_stopped_is_continued, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t fs0 = the_fork_server();
    fpp_submit(tm, F_STOP_SERVER, NULL, 0);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_submit(tm, F_SEGV, NULL, 0);
    for (uint64_t i = 0; i < 20; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_assert_eq(fpp_run(tm), 0);
    every_slot_serves(tm, 2);
    cr_expect_eq(the_fork_server(), fs0, "continued, not replaced");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Item 4: a task lowers the server's RLIMIT_AS to just above its size and dies. On 0.2 every
 * later worker failed to map its memory and the breaker tripped for good (0 of 40 tasks a
 * round). Workers now start with the program's limits at creation: 3 rounds of 40 complete. */
static void lowered_limits_rounds(void)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    atomic_store(&T_SHARED[0], 0);
    fpp_submit(tm, F_LOWER_SERVER_AS, NULL, 0);
    fpp_run(tm);
    cr_assert_eq(atomic_load(&T_SHARED[0]), 1, "the server's limit was lowered");
    for (int round = 0; round < 3; round++) {
        for (uint64_t i = 0; i < 40; i++)
            fpp_submit(tm, F_SQUARE, &i, 8);
        cr_assert_eq(fpp_run(tm), 0);
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 2 + 120, "every task of the 3 rounds done (%llu)", (unsigned long long)st.done);
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(limits, a_task_lowering_the_servers_limits_costs_only_its_own_task, .fini = assert_clean, .timeout = 120)
{
    lowered_limits_rounds();
}

/* The same without CAP_SYS_RESOURCE (as any unprivileged program): a worker cannot raise the
 * lowered hard limit back, so the server is replaced (forked again by the keeper, whose limits
 * the task did not touch) when its workers keep failing to start. */
Test(limits, without_cap_sys_resource_the_server_is_replaced, .fini = assert_clean, .timeout = 120)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    cr_assert_eq(syscall(SYS_capget, &h, d), 0);
    unsigned bit = CAP_SYS_RESOURCE;
    d[bit / 32].effective &= ~(1u << (bit % 32));
    d[bit / 32].permitted &= ~(1u << (bit % 32));
    d[bit / 32].inheritable &= ~(1u << (bit % 32));
    cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
    lowered_limits_rounds();
}

/* Item 3: a task anchors the server's process group (so it never looks orphaned) and stops
 * the server; then the program dies (SIGKILL, or a return from main without freeing). On 0.2
 * the server stayed stopped for ever with both workers alive (8 of 8). Now the keeper, continued
 * by its parent-death signal, ends the server (SIGKILL, which ends a stopped process), the
 * workers die with it, and the keeper kills what the task left. */
static void stop_then_the_program_ends(bool kill_it)
{
    shared_reset();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t program = fork();
    cr_assert_geq(program, 0);
    if (program == 0) {
        close(p[0]);
        alarm(50);
        fpp_executor *ex;
        fpp_executor_opts o = {.workers = 2};
        if (fpp_process_executor(&ex, &o) != 0)
            _exit(1);
        fpp_tm *tm;
        fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
        if (fpp_tm_create(&tm, ex, &to) != 0)
            _exit(2);
        fpp_submit(tm, F_ANCHOR_AND_STOP, NULL, 0);
        fpp_run(tm);
        sleep_ms(100); /* the spare */
        pid_t pids[64];
        int n = keeper_pids(pids, 4);
        n += pool_pids(pids + n, 40, NULL);
        pids[n++] = (pid_t)atomic_load(&T_SHARED[1]);
        pids[n++] = (pid_t)atomic_load(&T_SHARED[2]);
        ssize_t w = write(p[1], pids, (size_t)n * sizeof *pids);
        (void)w;
        close(p[1]);
        if (kill_it)
            pause();
        _exit(0); /* returns without freeing anything */
    }
    close(p[1]);
    pid_t pids[64];
    ssize_t got = read(p[0], pids, sizeof pids);
    close(p[0]);
    int n = got > 0 ? (int)(got / (ssize_t)sizeof(pid_t)) : 0;
    cr_assert_geq(n, 6, "keeper, server, 2 workers, the helper and its child (%d)", n);
    if (kill_it)
        kill(program, SIGKILL);
    waitpid(program, NULL, 0);
    pid_t left = all_gone_by(pids, n, mono_ns() + 2000000000LL);
    cr_expect_eq(left, 0, "process %ld outlived the program by 2 s", (long)left);
    for (int i = 0; i < n; i++)
        if (!gone(pids[i]))
            kill(pids[i], SIGKILL);
}

Test(outlive, a_stopped_server_ends_with_the_program_killed, .fini = assert_clean, .timeout = 60)
{
    stop_then_the_program_ends(true);
}

Test(outlive, a_stopped_server_ends_with_the_program_returning_without_freeing, .fini = assert_clean, .timeout = 60)
{
    stop_then_the_program_ends(false);
}
