/* test_process_executor.c: crash isolation and the workers' life (lib/process_executor.c,
 * lib/worker.c, lib/pool.c recovery): real processes and real signals, no mocks. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#include "common.h"

Test(process, segfault_and_exit_fail_only_their_task_while_1000_more_run, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    int64_t segv_id = -1, exit_id = -1, abort_id = -1;
    for (uint64_t i = 0; i < 1003; i++) {
        int fn = F_SQUARE;
        if (i == 10) fn = F_SEGV;
        if (i == 500) fn = F_EXIT;
        if (i == 900) fn = F_ABORT;
        int64_t id = fpp_submit(tm, fn, &i, 8);
        cr_assert_geq(id, 0);
        if (fn == F_SEGV) segv_id = id;
        if (fn == F_EXIT) exit_id = id;
        if (fn == F_ABORT) abort_id = id;
    }
    fpp_task *t;
    int done = 0, crashed = 0;
    char want[128];
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        if (id == segv_id || id == exit_id || id == abort_id) {
            crashed++;
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED, "task %lld: %s", (long long)id, fpp_status_name(fpp_task_status(t)));
            const char *e = fpp_task_error(t);
            snprintf(want, sizeof want, " while running task %lld", (long long)id);
            cr_expect(strstr(e, want) != NULL, "error names the task: %s", e);
            cr_expect_null(fpp_task_result(t, NULL));
            if (id == segv_id) {
                cr_expect_eq(fpp_task_signal(t), SIGSEGV);
                cr_expect(strstr(e, "killed by SIGSEGV") != NULL, "%s", e);
            } else if (id == abort_id) {
                cr_expect_eq(fpp_task_signal(t), SIGABRT);
                cr_expect(strstr(e, "killed by SIGABRT") != NULL, "%s", e);
            } else {
                cr_expect_eq(fpp_task_signal(t), 0);
                cr_expect(strstr(e, "exited with status 3") != NULL, "%s", e);
            }
        } else {
            cr_assert_eq(fpp_task_status(t), FPP_DONE, "task %lld: %s", (long long)id, fpp_task_error(t));
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)id * (uint64_t)id);
            done++;
        }
    }
    cr_expect_eq(crashed, 3);
    cr_expect_eq(done, 1000);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.crashed, 3);
    cr_expect_geq(st.worker_restarts, 3, "each dead worker was replaced");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, shared_memory_never_shows_in_dev_shm, .fini = assert_clean)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    cr_expect_eq(shm_entries(), 0, "the segment is unlinked as soon as it is mapped");
    fpp_executor_free(ex);
}

Test(process, workers_ignore_sigint, .fini = assert_clean, .timeout = 30)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    pid_t pids[8];
    sleep_ms(100);
    int n = pool_pids(pids, 8, NULL);
    cr_assert(n >= 3 && n <= 4, "the fork server, two workers and, once forked, the spare (%d)", n);
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGINT);
    sleep_ms(50);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 100; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.worker_restarts, 0, "no worker died of SIGINT");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, workers_hold_only_stdio, .fini = assert_clean)
{
    int p[2];
    cr_assert_eq(pipe(p), 0); /* inheritable: a worker must still not keep it */
    fpp_executor *ex = mk_exec(PROC, NULL);
    sleep_ms(100); /* the spare worker is forked just after the others */
    pid_t pids[64];
    int n = worker_pids(pids, 64);
    cr_assert_geq(n, 2);
    int workers = 0;
    for (int i = 0; i < n; i++) {
        /* A worker maps its slot memory; the spare does not have one yet and holds only the
         * channel it waits on for its slot. */
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/%ld/maps", (long)pids[i]);
        FILE *m = fopen(path, "r");
        bool worker = false;
        while (m && fgets(line, sizeof line, m))
            worker = worker || strstr(line, "memfd:fpp-worker") != NULL;
        if (m)
            fclose(m);
        workers += worker;
        snprintf(path, sizeof path, "/proc/%ld/fd", (long)pids[i]);
        DIR *d = opendir(path);
        cr_assert_not_null(d);
        struct dirent *e;
        int extra = 0;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' || atoi(e->d_name) < 3)
                continue;
            char link[256] = "", fdp[600];
            snprintf(fdp, sizeof fdp, "%s/%s", path, e->d_name);
            ssize_t k = readlink(fdp, link, sizeof link - 1);
            link[k > 0 ? k : 0] = 0;
            cr_expect(!worker, "worker %ld holds fd %s (%s)", (long)pids[i], e->d_name, link);
            cr_expect(strncmp(link, "socket:", 7) == 0, "the spare %ld holds fd %s (%s)", (long)pids[i], e->d_name, link);
            extra++;
        }
        cr_expect_leq(extra, worker ? 0 : 1);
        closedir(d);
    }
    cr_expect_eq(workers, 2, "two workers");
    fpp_executor_free(ex);
    close(p[0]);
    close(p[1]);
}

Test(process, fork_failing_is_esys_naming_the_call, .fini = assert_clean)
{
    capture_logs();
    fail_fork(EAGAIN);
    fpp_executor *ex = (fpp_executor *)1;
    cr_expect_eq(fpp_process_executor(&ex, NULL), FPP_ESYS);
    cr_expect_null(ex);
    cr_expect(strstr(captured_logs(), "fork(keeper): Resource temporarily unavailable") != NULL, "%s", captured_logs());
}

Test(process, no_memory_for_the_pool_is_esys_naming_the_call, .fini = assert_clean)
{
    capture_logs();
    fail_syscall(SYS_fallocate, ENOSPC);
    fpp_executor *ex = (fpp_executor *)1;
    cr_expect_eq(fpp_process_executor(&ex, NULL), FPP_ESYS);
    cr_expect_null(ex);
    cr_expect(strstr(captured_logs(), "posix_fallocate(fpp-args)") != NULL, "%s", captured_logs());
    cr_expect(strstr(captured_logs(), "No space left on device") != NULL, "%s", captured_logs());
}

/* ------------------------------------------------------------- chaos */

static _Atomic int chaos_stop;
static _Atomic int chaos_kills;

/* Kills a random worker (or spare) every few milliseconds, and the fork server one time in 50. */
static void *killer(void *arg)
{
    (void)arg;
    unsigned seed = 12345;
    while (!atomic_load(&chaos_stop)) {
        pid_t pids[16];
        int nfs = 0, n = pool_pids(pids, 16, &nfs);
        if (n > nfs) {
            pid_t victim = rand_r(&seed) % 50 == 0 ? pids[0] : pids[nfs + (int)(rand_r(&seed) % (unsigned)(n - nfs))];
            if (kill(victim, SIGKILL) == 0)
                atomic_fetch_add(&chaos_kills, 1);
        }
        sleep_ms(1 + (int)(rand_r(&seed) % 4));
    }
    return NULL;
}

Test(process, sigkill_at_random_moments_loses_and_duplicates_nothing, .fini = assert_clean, .timeout = 300)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    enum { N = 100000 };
    static unsigned char seen[N];
    pthread_t th;
    pthread_create(&th, NULL, killer, NULL);
    int done = 0, crashed = 0;
    fpp_task *t;
    for (uint64_t i = 0; i < N; i++) {
        uint64_t us = 10;
        cr_assert_eq(fpp_submit(tm, F_SPIN, &us, 8), (int64_t)i);
    }
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert(id >= 0 && id < N);
        cr_assert_eq(seen[id], 0, "task %lld came back twice", (long long)id);
        seen[id] = 1;
        if (fpp_task_status(t) == FPP_DONE) {
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), 10);
            done++;
        } else {
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED, "%s", fpp_task_error(t));
            cr_assert_eq(fpp_task_signal(t), SIGKILL);
            crashed++;
        }
    }
    atomic_store(&chaos_stop, 1);
    pthread_join(th, NULL);
    int kills = atomic_load(&chaos_kills);
    cr_log_info("chaos: %d kills, %d done, %d crashed", kills, done, crashed);
    cr_expect_eq(done + crashed, N, "nothing lost");
    cr_expect_gt(kills, 100, "hundreds of kills landed");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, a_task_over_its_timeout_is_killed_and_replaced, .fini = assert_clean, .timeout = 30)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 200};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    int ms = 20000, quick = 1;
    int64_t slow = fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    for (int i = 0; i < 20; i++)
        fpp_submit(tm, F_SLEEP, &quick, sizeof quick);
    fpp_task *t;
    int done = 0, timed_out = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_id(t) == slow) {
            cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT);
            cr_expect(strstr(fpp_task_error(t), "exceeded its timeout of 200 ms") != NULL, "%s", fpp_task_error(t));
            timed_out++;
        } else {
            cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
            done++;
        }
    }
    cr_expect_eq(timed_out, 1);
    cr_expect_eq(done, 20);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.timed_out, 1);
    cr_expect_geq(st.worker_restarts, 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A task at a time (submit, wait for it, submit the next) goes to the worker whose task ended
 * last, the one awake, not to each worker in turn (which woke a sleeping worker for every task
 * while the last one spun on a core the parent needed). */
Test(process, a_task_at_a_time_runs_on_the_worker_that_ran_the_last, .fini = assert_clean, .timeout = 30)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    int32_t first = 0;
    int others = 0;
    for (int i = 0; i < 50; i++) {
        cr_assert_geq(fpp_submit(tm, F_PID, NULL, 0), 0);
        fpp_task *t;
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        size_t len;
        const int32_t *pid = fpp_task_result(t, &len);
        cr_assert_eq(len, sizeof *pid);
        if (i == 0)
            first = *pid;
        else if (*pid != first)
            others++;
        cr_assert_eq(fpp_as_completed(tm, &t), 0);
    }
    cr_expect_eq(others, 0, "%d of 49 lone tasks went to another worker than the first one's", others);
    /* And a burst still goes round: both workers serve. */
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The most workers a pool takes: their spawn requests fill the fork server's channel (a few
 * hundred fit), which is no reason to think it dead. Before: every request past the channel's
 * room failed with EAGAIN, the server was declared dead and replaced, and the new one was
 * flooded the same way: from about 360 workers up not one task ever ran (fpp-run -j 500). */
Test(process, the_most_workers_start_and_serve, .fini = assert_clean, .timeout = 120)
{
    capture_logs();
    fpp_executor_opts o = {.workers = 1024};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 4096; i++)
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
    cr_expect_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 4096);
    cr_expect_eq(st.worker_restarts, 0, "workers started again: %llu", (unsigned long long)st.worker_restarts);
    cr_expect_null(strstr(captured_logs(), "fork server"), "%s", captured_logs());
    cr_expect_eq(fpp_executor_workers(ex), 1024);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, workers_are_recycled_after_max_tasks, .fini = assert_clean, .timeout = 30)
{
    fpp_executor_opts o = {.workers = 2, .max_tasks_per_worker = 10};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 200; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_expect_eq(fpp_run(tm), 0, "no task lost or failed by recycling");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, 200);
    cr_expect_geq(st.worker_restarts, 18);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, workers_die_with_their_parent, .timeout = 30)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t parent = fork();
    if (parent == 0) {
        fpp_executor *ex;
        fpp_executor_opts o = {.workers = 2};
        if (fpp_process_executor(&ex, &o) != 0)
            _exit(1);
        sleep_ms(100);
        pid_t pids[8];
        int n = pool_pids(pids, 8, NULL);
        ssize_t w = write(p[1], pids, (size_t)n * sizeof *pids);
        (void)w;
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t pids[8];
    ssize_t got = read(p[0], pids, sizeof pids);
    int n = (int)(got / (ssize_t)sizeof(pid_t));
    cr_assert(n >= 3 && n <= 4, "the fork server, two workers and, once forked, the spare (%d)", n);
    kill(parent, SIGKILL);
    waitpid(parent, NULL, 0);
    for (int i = 0; i < n; i++) {
        bool gone = false;
        for (int ms = 0; ms < 1000 && !gone; ms += 10) {
            char path[64], st = 0;
            snprintf(path, sizeof path, "/proc/%ld/stat", (long)pids[i]);
            FILE *f = fopen(path, "r");
            if (!f) {
                gone = true;
                break;
            }
            if (fscanf(f, "%*d %*s %c", &st) == 1 && (st == 'Z' || st == 'X'))
                gone = true;
            fclose(f);
            if (!gone)
                sleep_ms(10);
        }
        cr_expect(gone, "worker %ld outlived its parent by a second", (long)pids[i]);
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "fpp-%ld-", (long)parent);
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    while (d && (e = readdir(d)))
        cr_expect_neq(strncmp(e->d_name, prefix, strlen(prefix)), 0, "/dev/shm/%s outlived its parent", e->d_name);
    if (d)
        closedir(d);
}

/* ------------------------------------------------------------- hostile */

Test(process, a_task_scribbling_over_all_shared_memory_cannot_break_the_parent, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    enum { N = 2000 };
    static unsigned char seen[N + 1];
    for (uint64_t i = 0; i < N; i++) {
        if (i == N / 2)
            cr_assert_eq(fpp_submit(tm, F_SCRIBBLE, NULL, 0), (int64_t)i);
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
    }
    fpp_task *t;
    int done = 0, other = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert(id >= 0 && id <= N);
        cr_assert_eq(seen[id], 0, "task %lld came back twice", (long long)id);
        seen[id] = 1;
        if (fpp_task_status(t) == FPP_DONE)
            done++;
        else {
            other++;
            cr_assert_not_null(fpp_task_error(t));
        }
    }
    cr_log_info("hostile: %d done, %d failed or crashed with an error", done, other);
    cr_expect_eq(done + other, N + 1, "every task came back exactly once");
    /* And the pool still works. */
    for (uint64_t i = 0; i < 200; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    int after = 0;
    while (fpp_as_completed(tm, &t) == 1)
        after += fpp_task_status(t) == FPP_DONE;
    cr_expect_geq(after, 190, "the pool recovered (%d of 200 done)", after);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------- kills at each fragile phase */

/* Runs 3000 tasks with the worker killing itself at `phase` every 37th task; every id must
 * come back exactly once, and then every slot must still serve. Returns how many came back
 * crashed (SIGKILL); *kills gets how many workers died. */
static int phase_run(int phase, uint64_t *kills)
{
    char env[32];
    snprintf(env, sizeof env, "%d:37", phase);
    setenv("FPP_TEST_CRASH", env, 1);
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    unsetenv("FPP_TEST_CRASH"); /* the fork server has it; the barrier below must not die */
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    enum { N = 3000 };
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(fpp_submit(tm, F_SQUARE, &i, 8), (int64_t)i);
    fpp_task *t;
    int crashed = 0, done = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert_eq(seen[id], 0, "phase %d: task %lld came back twice", phase, (long long)id);
        seen[id] = 1;
        if (fpp_task_status(t) == FPP_DONE) {
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)id * (uint64_t)id);
            done++;
        } else {
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED, "%s", fpp_task_error(t));
            cr_assert_eq(fpp_task_signal(t), SIGKILL);
            crashed++;
        }
    }
    cr_assert_eq(done + crashed, N, "phase %d: nothing lost", phase);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_assert_gt(st.worker_restarts, 10, "phase %d: the injected kills happened", phase);
    cr_log_info("phase %d: %llu kills, %d crashed, %d done", phase, (unsigned long long)st.worker_restarts, crashed, done);
    *kills = st.worker_restarts;
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return crashed;
}

Test(phases, killed_before_claiming_loses_nothing, .fini = assert_clean, .timeout = 120)
{
    uint64_t kills;
    cr_expect_eq(phase_run(1, &kills), 0, "it held no task: its queued tasks run elsewhere");
}

Test(phases, killed_after_claiming_fails_exactly_that_task, .fini = assert_clean, .timeout = 120)
{
    uint64_t kills;
    int crashed = phase_run(2, &kills);
    cr_expect_eq((uint64_t)crashed, kills, "a claimed task is never run again: one crash per kill (%d, %llu)",
                 crashed, (unsigned long long)kills);
}

Test(phases, killed_between_writing_and_publishing_the_result_fails_exactly_that_task, .fini = assert_clean, .timeout = 120)
{
    uint64_t kills;
    int crashed = phase_run(3, &kills);
    cr_expect_eq((uint64_t)crashed, kills, "one crash per kill (%d, %llu)", crashed, (unsigned long long)kills);
}

Test(phases, killed_after_publishing_the_result_loses_nothing, .fini = assert_clean, .timeout = 120)
{
    uint64_t kills;
    cr_expect_eq(phase_run(4, &kills), 0, "the record was out: the task is done");
}

/* ------------------------------------------------- stalled workers */

static void *staller(void *arg)
{
    (void)arg;
    unsigned seed = 777;
    while (!atomic_load(&chaos_stop)) {
        pid_t pids[16];
        int n = pool_pids(pids, 16, NULL);
        if (n > 0) {
            pid_t p = pids[rand_r(&seed) % n];
            if (kill(p, SIGSTOP) == 0) {
                atomic_fetch_add(&chaos_kills, 1);
                sleep_ms(2 + (int)(rand_r(&seed) % 8));
                kill(p, SIGCONT);
            }
        }
        sleep_ms(1 + (int)(rand_r(&seed) % 3));
    }
    return NULL;
}

Test(process, sigstop_and_sigcont_stall_workers_without_losing_anything, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    enum { N = 40000 };
    static unsigned char seen[N];
    atomic_store(&chaos_stop, 0);
    atomic_store(&chaos_kills, 0);
    pthread_t th;
    pthread_create(&th, NULL, staller, NULL);
    for (uint64_t i = 0; i < N; i++) {
        uint64_t us = 10;
        cr_assert_eq(fpp_submit(tm, F_SPIN, &us, 8), (int64_t)i);
    }
    fpp_task *t;
    int done = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert_eq(seen[id], 0);
        seen[id] = 1;
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "a stalled worker is not a dead one: %s", fpp_task_error(t));
        done++;
    }
    atomic_store(&chaos_stop, 1);
    pthread_join(th, NULL);
    cr_log_info("stalls: %d SIGSTOPs, %d done", atomic_load(&chaos_kills), done);
    cr_expect_eq(done, N);
    cr_expect_geq(atomic_load(&chaos_kills), 5, "the staller did its job");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------ memory */

#if defined(__SANITIZE_ADDRESS__)
#define SKIP_UNDER_ASAN() cr_skip_test("AddressSanitizer's allocator and quarantine do not fit a memory cap")
#else
#define SKIP_UNDER_ASAN() ((void)0)
#endif

Test(memory, a_worker_grown_past_its_cap_is_replaced_after_its_task, .fini = assert_clean, .timeout = 60)
{
    SKIP_UNDER_ASAN();
    fpp_executor_opts o = {.workers = 1, .max_worker_rss_kib = 96 * 1024};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t mib = 64; /* under the cap's address space, over nothing: stays */
    fpp_submit(tm, F_HOG, &mib, 8);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    uint64_t before = st.worker_restarts;
    mib = 80;
    fpp_submit(tm, F_HOG, &mib, 8); /* 64 + 80 MiB leaked: resident past 96 MiB */
    cr_assert_eq(fpp_run(tm), 0, "the task itself completes");
    uint64_t x = 3;
    fpp_submit(tm, F_SQUARE, &x, 8);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_stats(tm, &st);
    cr_expect_gt(st.worker_restarts, before, "the grown worker was replaced");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(memory, an_allocation_past_the_cap_crashes_with_a_message_that_says_so, .fini = assert_clean, .timeout = 60)
{
    SKIP_UNDER_ASAN();
    fpp_executor_opts o = {.workers = 1, .max_worker_rss_kib = 64 * 1024};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    uint64_t mib = 4096;
    fpp_submit(tm, F_HOG, &mib, 8);
    fpp_task *t;
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    cr_expect_eq(fpp_task_status(t), FPP_CRASHED);
    cr_expect(strstr(fpp_task_error(t), "memory cap") != NULL, "%s", fpp_task_error(t));
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* -------------------------------------------------------------- leaks */

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

Test(leaks, a_million_tasks_with_crashes_and_timeouts_leave_nothing_behind, .fini = assert_clean, .timeout = 300)
{
    int fds = open_fds();
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 50};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    int ms = 5000;
    long crashed = 0, timed_out = 0, done = 0;
    fpp_task *t;
    for (uint64_t i = 0; i < 1000000; i++) {
        int64_t id;
        if (i % 50000 == 17)
            id = fpp_submit(tm, F_SEGV, NULL, 0);
        else if (i % 200000 == 99)
            id = fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
        else
            id = fpp_submit(tm, F_SQUARE, &i, 8);
        cr_assert_geq(id, 0);
        if (i >= 4096 && fpp_as_completed(tm, &t) == 1) {
            done += fpp_task_status(t) == FPP_DONE;
            crashed += fpp_task_status(t) == FPP_CRASHED;
            timed_out += fpp_task_status(t) == FPP_TIMEOUT;
        }
    }
    while (fpp_as_completed(tm, &t) == 1) {
        done += fpp_task_status(t) == FPP_DONE;
        crashed += fpp_task_status(t) == FPP_CRASHED;
        timed_out += fpp_task_status(t) == FPP_TIMEOUT;
    }
    cr_expect_eq(crashed, 20);
    cr_expect_eq(timed_out, 5);
    cr_expect_eq(done, 1000000 - 25);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    cr_expect_eq(open_fds(), fds, "file descriptors: %d before, %d after", fds, open_fds());
    cr_log_info("leaks: %ld done, %ld crashed, %ld timed out; fds %d before, %d after", done, crashed, timed_out, fds, open_fds());
}

Test(policy, a_timeout_raises_under_raise, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 100};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    int ms = 10000;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    cr_expect_eq(fpp_task_status(fpp_tm_failure(tm)), FPP_TIMEOUT);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(process, a_timeout_kill_never_fails_the_next_task, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 4, .task_timeout_ms = 20};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    srand(1);
    for (int i = 0; i < 400; i++) {
        int ms = (i % 2) ? 0 : 19 + rand() % 3; /* borderline tasks, and short innocent ones */
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 400);
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fpp_task_id(all[i]) % 2 && fpp_task_status(all[i]) != FPP_DONE)
            bad++;
    cr_expect_eq(bad, 0, "%d short tasks failed by a kill meant for another", bad);
    /* Item 4 of issue 8: and no worker was parked or left behind by the kills (0.1's drain
     * handshake could park a spared worker for 5 s, its hand-off could lose a slot). */
    every_slot_serves(tm, 4);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
