/* test_watchdog.c: what the parent does when workers crash in storms, run over their timeouts,
 * stop, or cannot be started (lib/watchdog.c, lib/process_executor.c, lib/pool.c,
 * lib/forkserver.c), through the public API, with real processes and real signals. Issue 8,
 * items 1-4 and 9-12; each test says what fpp 0.1 did. Every storm ends with the wholeness
 * check (every_slot_serves: W tasks on W distinct workers at once), which 0.1's tests lacked:
 * they checked that the counts added up, not that the pool was still whole afterwards. */
#include <fcntl.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "common.h"
#include "exec/exec.h"
#include "pool/pool_int.h"

static int F_USLEEP, F_TOUCH;

/* F_USLEEP: sleeps a uint64_t number of microseconds; result: the argument. */
static int usleep_us(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    uint64_t us = u64_of(arg);
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return fpp_out_set(out, arg, len);
}

/* Slots of T_SHARED. */
enum { S_TOUCHED = 0, S_COUNT = 1 };

/* F_TOUCH: allocates and touches a uint64_t number of MiB, says so in T_SHARED[S_TOUCHED], then
 * sleeps (up to 60 s) holding it. */
static int touch(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    size_t n = (size_t)u64_of(arg) << 20;
    volatile char *p = malloc(n);
    if (!p)
        return 2;
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    atomic_fetch_add(&T_SHARED[S_TOUCHED], 1);
    sleep_ms(60000);
    return fpp_out_set(out, arg, len);
}

__attribute__((constructor)) static void register_here(void)
{
    F_USLEEP = fpp_register("wd_usleep", usleep_us);
    F_TOUCH = fpp_register("wd_touch", touch);
}

/* ------------------------------------------------------------------ helpers */

/* The state letter of a process (R, S, T, Z...), 0 when it is gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* True if pid maps a worker slot (a worker with a slot, not the spare). */
static bool has_slot(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%ld/maps", (long)pid);
    FILE *m = fopen(path, "r");
    bool yes = false;
    while (m && !yes && fgets(line, sizeof line, m))
        yes = strstr(line, "memfd:fpp-worker") != NULL;
    if (m)
        fclose(m);
    return yes;
}

/* The pids of the workers that hold a slot, up to max. */
static int slot_pids(pid_t *out, int max)
{
    pid_t all[64];
    int n = worker_pids(all, 64), k = 0;
    for (int i = 0; i < n && k < max; i++)
        if (has_slot(all[i]))
            out[k++] = all[i];
    return k;
}

/* After a storm the pool settles to W workers and one spare: more would be processes asleep
 * for ever (0.1's lost spares), fewer a slot without a worker. */
static void expect_settled(int W)
{
    int n = 0;
    for (int ms = 0; ms < 2000; ms += 10) {
        pid_t p[64];
        n = worker_pids(p, 64);
        if (n == W + 1)
            return;
        sleep_ms(10);
    }
    cr_expect_eq(n, W + 1, "%d processes under the fork server, want %d workers and a spare", n, W + 1);
}

static unsigned seed_from_clock(const char *what)
{
    unsigned seed = (unsigned)mono_ns() ^ (unsigned)getpid();
    cr_log_info("%s: seed %u", what, seed);
    return seed;
}

/* =========================================================== item 1: storms */

/* Runs n tasks of which every `every`-th (from offset 0) segfaults; each must come back once,
 * the segfaults CRASHED by SIGSEGV, the rest DONE with the right square. */
static void crash_storm(int W, uint64_t n, uint64_t every)
{
    fpp_executor_opts o = {.workers = W};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    unsigned char *seen = calloc(n, 1);
    cr_assert_not_null(seen);
    int64_t t0 = mono_ns();
    uint64_t done = 0, crashed = 0;
    fpp_task *t;
    for (uint64_t i = 0; i < n; i++) {
        int64_t id = fpp_submit(tm, i % every == 0 ? F_SEGV : F_SQUARE, &i, 8);
        cr_assert_eq(id, (int64_t)i, "submit: %s", fpp_strerror((int)id));
    }
    while (fpp_as_completed(tm, &t) == 1) {
        uint64_t id = (uint64_t)fpp_task_id(t);
        cr_assert_lt(id, n);
        cr_assert_eq(seen[id], 0, "task %llu came back twice", (unsigned long long)id);
        seen[id] = 1;
        if (id % every == 0) {
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED, "task %llu: %s", (unsigned long long)id,
                         fpp_status_name(fpp_task_status(t)));
            cr_assert_eq(fpp_task_signal(t), SIGSEGV, "%s", fpp_task_error(t));
            crashed++;
        } else {
            cr_assert_eq(fpp_task_status(t), FPP_DONE, "innocent task %llu: %s", (unsigned long long)id,
                         fpp_task_error(t));
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), id * id);
            done++;
        }
    }
    cr_assert_eq(crashed, (n + every - 1) / every);
    cr_assert_eq(done + crashed, n, "nothing lost");
    int64_t t1 = mono_ns();
    every_slot_serves(tm, W);
    cr_log_info("storm on %d workers: %llu done, %llu crashed in %.2f s; wholeness check %.0f ms", W,
                (unsigned long long)done, (unsigned long long)crashed, (t1 - t0) / 1e9, (mono_ns() - t1) / 1e6);
    expect_settled(W);
    free(seen);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* 0.1: the spare hand-off rewrote spare_pid/spare_slot before the previous spare had read them;
 * after this storm 3 of 4 slots belonged to processes asleep on the spare futex for ever, and
 * 4 naps of 300 ms took 1,200 ms (this check's barrier would never fill: it fails). */
Test(storms, one_task_in_three_segfaulting_on_4_workers_leaves_every_slot_serving, .fini = assert_clean,
     .timeout = 300)
{
    crash_storm(4, 6000, 3);
}

/* 0.1: with 1% of tasks crashing on 2 workers, 1 of 2 slots was dead afterwards (2 naps took
 * 600 ms instead of 300 ms). */
Test(storms, one_percent_segfaulting_on_2_workers_leaves_every_slot_serving, .fini = assert_clean, .timeout = 300)
{
    crash_storm(2, 60000, 100);
}

/* 0.1: timeout kills go through the same hand-off, so slots died here too (17 s instead of
 * 7.4 s, 2 processes asleep on the spare futex afterwards); and the drain handshake could park a
 * worker the parent had spared until it exited 0, counted as a crash ("exited with status 0"). */
Test(storms, a_timeout_storm_ends_each_task_done_or_timed_out_and_every_slot_serves, .fini = assert_clean,
     .timeout = 300)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 10};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    enum { N = 1500 };
    static unsigned char seen[N];
    uint64_t us[N];
    unsigned seed = 8;
    int64_t t0 = mono_ns();
    for (int i = 0; i < N; i++) {
        us[i] = 9000 + rand_r(&seed) % 2501; /* 9 to 11.5 ms: borderline, both sides */
        cr_assert_eq(fpp_submit(tm, F_USLEEP, &us[i], 8), i);
    }
    int done = 0, timed_out = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert_eq(seen[id], 0, "task %lld came back twice", (long long)id);
        seen[id] = 1;
        fpp_status st = fpp_task_status(t);
        if (st == FPP_DONE) {
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), us[id]);
            done++;
        } else {
            cr_assert_eq(st, FPP_TIMEOUT, "task %lld (%llu us): %s: %s", (long long)id, (unsigned long long)us[id],
                         fpp_status_name(st), fpp_task_error(t));
            cr_assert(strstr(fpp_task_error(t), "exceeded its timeout of 10 ms") != NULL, "%s", fpp_task_error(t));
            timed_out++;
        }
    }
    cr_assert_eq(done + timed_out, N);
    int64_t t1 = mono_ns();
    every_slot_serves(tm, 2);
    cr_log_info("timeout storm: %d done, %d timed out in %.2f s (ideal about 7.7 s); wholeness check %.0f ms", done,
                timed_out, (t1 - t0) / 1e9, (mono_ns() - t1) / 1e6);
    cr_expect_gt(timed_out, 0, "the storm had kills");
    cr_expect_gt(done, 0);
    expect_settled(2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ================================================== item 2: stopped workers */

static _Atomic int watch_stop, watch_release;
static _Atomic pid_t victim;
static _Atomic long continued, victim_seen_at;
static fpp_tm *watch_tm;

/* With FPP_TEST_CRASH=2:500:19 every worker stops itself at its 500th claim. The first one seen
 * stopped is the victim and stays stopped until released; any other is continued at once (the
 * test is about one stopped worker). */
static void *stop_watcher(void *arg)
{
    (void)arg;
    while (!atomic_load(&watch_stop)) {
        pid_t p[64];
        int n = worker_pids(p, 64);
        for (int i = 0; i < n; i++) {
            if (proc_state(p[i]) != 'T')
                continue;
            pid_t v = 0;
            if (atomic_compare_exchange_strong(&victim, &v, p[i])) {
                fpp_stats st;
                fpp_tm_stats(watch_tm, &st);
                atomic_store(&victim_seen_at, (long)st.done);
                continue;
            }
            if (v != p[i] || atomic_load(&watch_release)) {
                kill(p[i], SIGCONT);
                atomic_fetch_add(&continued, 1);
            }
        }
        sleep_ms(1);
    }
    return NULL;
}

/* 0.1: a worker stopped between its claim CAS and its release of the cell blocked the producer
 * one lap later: 0 tasks in 3 s on the other worker. Here the worker stops itself right after
 * claiming (phase 2): it holds its own task and nothing else. */
Test(stops, a_worker_stopped_right_after_its_claim_holds_back_only_that_task, .fini = assert_clean, .timeout = 120)
{
    setenv("FPP_TEST_CRASH", "2:500:19", 1);
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    unsetenv("FPP_TEST_CRASH");
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    atomic_store(&watch_stop, 0);
    atomic_store(&watch_release, 0);
    atomic_store(&victim, 0);
    watch_tm = tm;
    pthread_t th;
    pthread_create(&th, NULL, stop_watcher, NULL);
    enum { N = 2000 };
    static unsigned char seen[N];
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(fpp_submit(tm, F_SQUARE, &i, 8), (int64_t)i);
    fpp_task *t;
    for (int k = 0; k < N - 1; k++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        int64_t id = fpp_task_id(t);
        cr_assert_eq(seen[id], 0);
        seen[id] = 1;
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        cr_assert_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)(id * id));
    }
    pid_t v = atomic_load(&victim);
    cr_assert_neq(v, 0, "a worker stopped itself at its 500th claim");
    cr_assert_eq(proc_state(v), 'T', "the victim is still stopped with %d of %d tasks back", N - 1, N);
    long before = atomic_load(&victim_seen_at);
    cr_log_info("stopped worker: %ld tasks were done when it was seen stopped, %ld more while it stayed stopped; "
                "other self-stops continued: %ld", before, (long)(N - 1) - before, atomic_load(&continued));
    cr_expect_lt(before, N - 1, "it stopped before the others were done");
    atomic_store(&watch_release, 1);
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    int64_t id = fpp_task_id(t);
    cr_assert_eq(seen[id], 0);
    cr_expect_eq(fpp_task_status(t), FPP_DONE, "the stopped worker's task, continued: %s", fpp_task_error(t));
    cr_expect_eq(u64_of(fpp_task_result(t, NULL)), (uint64_t)(id * id));
    cr_expect_eq(fpp_as_completed(tm, &t), 0);
    every_slot_serves(tm, 2);
    atomic_store(&watch_stop, 1);
    pthread_join(th, NULL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* An idle worker, stopped. One task at a time, each placed by round robin: half of them land
 * on the stopped worker, which never claims them. Each must still come back, run by the other
 * worker, while the stopped one stays stopped. 0.1's shared ring passed this (a stopped idle
 * worker claimed nothing); per-worker queues failed it until the steal took a silent worker's
 * only task too: every second task never came back, timeout or not. */
Test(stops, an_idle_worker_stopped_holds_back_no_task, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t p[4];
    cr_assert_eq(slot_pids(p, 4), 2);
    cr_assert_eq(kill(p[0], SIGSTOP), 0);
    while (proc_state(p[0]) != 'T')
        sleep_ms(1);
    for (uint64_t i = 0; i < 20; i++) {
        int64_t id = fpp_submit(tm, F_SQUARE, &i, 8);
        cr_assert_geq(id, 0);
        fpp_task *t;
        int rc = fpp_wait(tm, id, &t);
        cr_assert_eq(rc, 1, "%s", fpp_strerror(rc));
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
        fpp_task_release(t);
    }
    cr_expect_eq(proc_state(p[0]), 'T', "still stopped");
    kill(p[0], SIGCONT);
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A map that runs until told to stop, and a thread that stops a random worker at a random
 * moment for 3 s, ROUNDS times, counting the tasks that finish during each second of each stop. */
enum { ROUNDS = 3 };
static _Atomic int map_end;
static _Atomic uint64_t mapped;
static long progress[ROUNDS][3];
static fpp_tm *stop_tm;

static int endless(void *state, const void **arg, size_t *len)
{
    if (atomic_load(&map_end))
        return 0;
    uint64_t *item = state;
    *item = atomic_fetch_add(&mapped, 1);
    *arg = item;
    *len = 8;
    return 1;
}

static uint64_t finished_now(void)
{
    fpp_stats st;
    fpp_tm_stats(stop_tm, &st);
    return st.done + st.failed + st.crashed + st.timed_out;
}

static void *stopper(void *arg)
{
    unsigned seed = *(unsigned *)arg;
    while (finished_now() < 2000)
        sleep_ms(1);
    for (int r = 0; r < ROUNDS; r++) {
        pid_t p[4];
        int n = slot_pids(p, 4);
        cr_assert_eq(n, 2);
        pid_t v = p[rand_r(&seed) % 2];
        sleep_ms((int)(rand_r(&seed) % 20));
        cr_assert_eq(kill(v, SIGSTOP), 0);
        while (proc_state(v) != 'T' && proc_state(v) != 0)
            ;
        for (int sec = 0; sec < 3; sec++) {
            uint64_t d0 = finished_now();
            sleep_ms(1000);
            progress[r][sec] = (long)(finished_now() - d0);
        }
        kill(v, SIGCONT);
        sleep_ms(300);
    }
    atomic_store(&map_end, 1);
    return NULL;
}

/* 0.1: one stopped worker wedged the whole pool: 0 tasks in 3 s on the other worker, with or
 * without task_timeout_ms (caught after 5 to 111 random stops). Here the other worker must
 * finish tasks in every second of every 3 s stop. */
static void stopped_for_3_s(unsigned timeout_ms)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = timeout_ms};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    stop_tm = tm;
    atomic_store(&map_end, 0);
    atomic_store(&mapped, 0);
    unsigned seed = seed_from_clock("stops");
    pthread_t th;
    pthread_create(&th, NULL, stopper, &seed);
    uint64_t item;
    cr_assert_eq(fpp_map(tm, F_SQUARE, endless, &item), 0);
    fpp_task *t;
    long done = 0, other = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        uint64_t i = u64_of(fpp_task_arg(t, NULL));
        if (fpp_task_status(t) == FPP_DONE) {
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
            done++;
        } else {
            /* Only with a timeout: the task the stopped worker held. */
            cr_assert_eq(fpp_task_status(t), FPP_TIMEOUT, "%s", fpp_task_error(t));
            cr_assert_neq(timeout_ms, 0);
            other++;
        }
    }
    pthread_join(th, NULL);
    cr_assert_eq((uint64_t)(done + other), atomic_load(&mapped), "every item came back once");
    cr_assert_leq(other, ROUNDS, "at most the stopped worker's own task, once per stop");
    for (int r = 0; r < ROUNDS; r++) {
        cr_log_info("stop %d (timeout %u ms): tasks finished in its 1st, 2nd, 3rd second: %ld, %ld, %ld", r,
                    timeout_ms, progress[r][0], progress[r][1], progress[r][2]);
        for (int sec = 0; sec < 3; sec++)
            cr_expect_gt(progress[r][sec], 0, "stop %d, second %d: the pool stood still", r, sec + 1);
    }
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(stops, a_worker_stopped_3_s_at_random_moments_stops_only_itself, .fini = assert_clean, .timeout = 120)
{
    stopped_for_3_s(0);
}

Test(stops, a_worker_stopped_3_s_at_random_moments_stops_only_itself_under_a_timeout, .fini = assert_clean,
     .timeout = 120)
{
    stopped_for_3_s(200);
}

/* ================================================== item 3: 64-bit tickets */

static _Atomic int tk_stop;
static _Atomic uint64_t tk_fired; /* the ticket B ran when A was killed */
static _Atomic uint64_t *tk_running;  /* B's block: the ticket it runs */
static uint64_t tk_stale;         /* A's: the ticket it ran last, kept while idle */
static pid_t tk_victim;

/* Kills the stopped, idle worker A at the moment B runs the ticket whose low 32 bits are A's
 * stale ticket: with 32-bit tickets anywhere, A's death would blame B's task. */
static void *ticket_killer(void *arg)
{
    (void)arg;
    while (!atomic_load(&tk_stop)) {
        uint64_t r = atomic_load(tk_running);
        if (r != tk_stale && (uint32_t)r == (uint32_t)tk_stale) {
            kill(tk_victim, SIGKILL);
            atomic_store(&tk_fired, r);
            return NULL;
        }
    }
    return NULL;
}

/* 0.1: tickets were a 32-bit generation and a tag; after 2^31 reuses of one in-flight entry
 * (the review fast-forwarded it) an idle worker's death failed another worker's running task
 * ("crashed: worker N killed by SIGKILL while running task 1") and dropped its real result.
 * Here the parent's ticket counter is fast-forwarded past 2^32 and B runs the ticket that
 * equals A's stale one modulo 2^32 when A, stopped and idle, is killed. */
Test(tickets, tickets_crossing_2_to_the_32_never_blame_an_innocent_task, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    fpp__pool *p = *(fpp__pool **)ex->impl; /* the process executor's state starts with its pool */
    every_slot_serves(tm, 2); /* one task on each worker: each keeps its last ticket */
    uint32_t A = 0, B = 1;
    tk_stale = atomic_load(&p->wp[A].b->running);
    cr_assert_neq(tk_stale, 0);
    cr_assert_lt(tk_stale, 16);
    tk_victim = (pid_t)atomic_load(&p->wp[A].b->pid);
    tk_running = &p->wp[B].b->running;
    cr_assert_eq(kill(tk_victim, SIGSTOP), 0);
    while (proc_state(tk_victim) != 'T')
        sleep_ms(1);
    atomic_store(&tk_stop, 0);
    atomic_store(&tk_fired, 0);
    pthread_t th;
    pthread_create(&th, NULL, ticket_killer, NULL);
    /* One task at a time, each published on B first (so B runs every ticket in turn), each
     * 20 ms long, so that the kill lands while B runs it. A task B is slow to claim may be
     * moved (to the stopped A, and back), under a new ticket: then the colliding one may not
     * run on B, and the next pass tries again 2^32 further on. */
    int64_t id0 = -1;
    int nsub = 0;
    for (uint64_t pass = 1; pass <= 5 && !atomic_load(&tk_fired); pass++) {
        p->next_ticket = (pass << 32) + tk_stale - 16;
        for (uint64_t i = 0; i < 32; i++) {
            uint64_t us = 20000 + i;
            p->cursor = B;
            int64_t id = fpp_submit(tm, F_USLEEP, &us, 8);
            cr_assert_geq(id, 0);
            if (id0 < 0)
                id0 = id;
            nsub++;
            fpp_task *t;
            cr_assert_eq(fpp_wait(tm, id, &t), 1);
            cr_assert_eq(fpp_task_status(t), FPP_DONE, "task %llu: %s", (unsigned long long)i, fpp_task_error(t));
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), us);
            fpp_task_release(t);
        }
    }
    atomic_store(&tk_stop, 1);
    pthread_join(th, NULL);
    uint64_t fired = atomic_load(&tk_fired);
    cr_assert_neq(fired, 0, "B ran the colliding ticket while A was killed");
    cr_log_info("tickets: A's stale ticket %llu; A killed while B ran ticket %#llx; next ticket %#llx",
                (unsigned long long)tk_stale, (unsigned long long)fired, (unsigned long long)p->next_ticket);
    cr_assert_gt(p->next_ticket, UINT64_C(1) << 32);
    /* Past the boundary, everything as usual on both workers (A's successor included). */
    int64_t base = id0 + nsub;
    for (uint64_t i = 0; i < 2000; i++)
        cr_assert_eq(fpp_submit(tm, F_SQUARE, &i, 8), base + (int64_t)i);
    fpp_task *t;
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        uint64_t i = (uint64_t)(fpp_task_id(t) - base);
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
        n++;
    }
    cr_assert_eq(n, 2000);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.crashed, 0, "A held no task: its death failed none");
    cr_expect_eq(st.worker_restarts, 1, "A was replaced");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ============================================ item 4: kills meant for one task */

static int F_FLAGGED;

/* F_FLAGGED: spins arg[1] microseconds, raises T_SHARED[S_COUNT] to arg[0] and returns after
 * a pseudo-random few hundred nanoseconds more: the test cancels it right as it finishes. */
static int flagged(const void *arg, size_t len, fpp_out *out)
{
    uint64_t a[2];
    if (len != sizeof a)
        return 1;
    memcpy(a, arg, sizeof a);
    int64_t until = mono_ns() + (int64_t)a[1] * 1000;
    while (mono_ns() < until)
        ;
    atomic_store(&T_SHARED[S_COUNT], (long)a[0]);
    for (volatile uint64_t i = 0; i < (a[0] * 2654435761u) % 4096; i++)
        ;
    return fpp_out_set(out, a, 8);
}

__attribute__((constructor)) static void register_flagged(void) { F_FLAGGED = fpp_register("wd_flagged", flagged); }

/* The worker finishes task A, publishes it and claims B (queued behind A) while the parent
 * cancels A: the parent must not kill the worker for A once it runs B. The same interleaving
 * as the timeout storm's (a look, the worker publishes A and claims B, the revokes leave B
 * alone, the kill fails B), on the cancel path. The cancels land on both sides of A's end
 * (the counts are logged). 0.1 had no cancel of one task. */
Test(kills, a_cancel_landing_as_its_task_finishes_never_fails_the_next_task, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 1};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    shared_reset();
    int cancelled = 0, missed = 0;
    for (uint64_t i = 1; i <= 3000; i++) {
        uint64_t a[2] = {i, 50};
        int64_t ida = fpp_submit(tm, F_FLAGGED, a, sizeof a);
        int64_t idb = fpp_submit(tm, F_SQUARE, &i, 8);
        cr_assert_geq(ida, 0);
        cr_assert_geq(idb, 0);
        /* Spin (not driving the task manager) until A is about to return; if A does not run
         * soon (its worker is being replaced: only a call into the task manager attaches the
         * new one), let this round go without a cancel. */
        int64_t until = mono_ns() + 2000000;
        while (atomic_load(&T_SHARED[S_COUNT]) != (long)i && mono_ns() < until)
            ;
        int rc = atomic_load(&T_SHARED[S_COUNT]) == (long)i ? fpp_cancel(tm, ida) : 0;
        cr_assert_geq(rc, 0);
        cancelled += rc;
        missed += rc == 0;
        fpp_task *t;
        cr_assert_eq(fpp_wait(tm, idb, &t), 1);
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "round %llu: task B: %s", (unsigned long long)i, fpp_task_error(t));
        cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
        fpp_task_release(t);
        cr_assert_eq(fpp_wait(tm, ida, &t), 1);
        cr_assert(fpp_task_status(t) == (rc ? FPP_CANCELLED : FPP_DONE), "round %llu: task A: %s",
                  (unsigned long long)i, fpp_status_name(fpp_task_status(t)));
        fpp_task_release(t);
    }
    cr_log_info("cancels as the task ends: %d cancelled (worker killed), %d too late (already done)", cancelled, missed);
    every_slot_serves(tm, 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ============================================== item 10: Ctrl-C, big workers */

static _Atomic int64_t sigint_at;

static void *send_sigint(void *arg)
{
    (void)arg;
    if (!wait_shared(S_TOUCHED, 2, 60000))
        return NULL;
    sleep_ms(50);
    atomic_store(&sigint_at, mono_ns());
    kill(getpid(), SIGINT);
    return NULL;
}

/* 0.1: Ctrl-C took over 100 ms with 1.5 GiB workers (7 of 8 runs, up to 310 ms): the parent
 * waited for the killed workers to be reaped, and a big process takes long to die. Here the
 * bound the issue asks: fpp_run returns FPP_EINTR within 100 ms of the kill(). */
Test(sigint, ctrl_c_returns_within_100_ms_with_two_512_mib_workers, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    shared_reset();
    uint64_t mib = 512;
    for (int i = 0; i < 2; i++)
        cr_assert_geq(fpp_submit(tm, F_TOUCH, &mib, 8), 0);
    atomic_store(&sigint_at, 0);
    pthread_t th;
    pthread_create(&th, NULL, send_sigint, NULL);
    int rc = fpp_run(tm);
    int64_t back_at = mono_ns();
    pthread_join(th, NULL);
    cr_assert_neq(atomic_load(&sigint_at), 0, "both workers touched their 512 MiB");
    cr_assert_eq(rc, FPP_EINTR, "%s", fpp_strerror(rc));
    double ms = (back_at - atomic_load(&sigint_at)) / 1e6;
    cr_log_info("Ctrl-C with two 512 MiB workers: fpp_run returned %.2f ms after kill()", ms);
    cr_expect_lt(ms, 100.0, "fpp_run returned %.1f ms after SIGINT", ms);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ========================================= item 11: fork failing for good */

static char cg_dir[128];

static bool write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return false;
    bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok;
}

static void cg_cleanup(void)
{
    if (cg_dir[0]) {
        for (int ms = 0; ms < 3000 && rmdir(cg_dir) != 0 && errno == EBUSY; ms += 10)
            sleep_ms(10);
        cg_dir[0] = 0;
    }
    assert_clean();
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* 0.1: with fork failing for good (a pids cgroup at its limit), fpp_run spun for ever, logging
 * 20 lines a second. Here the keeper and the fork server are moved into a pids cgroup with no
 * room left and the only worker crashes: the waiting tasks fail with the cause (the server's
 * fork of a worker, then the keeper's of a new server: replacing the server does not help when
 * no process of the pool can fork), fpp_run returns, the log says so at most once a second, and
 * the pool comes back once fork works again. */
Test(forkfail, fork_failing_for_good_fails_the_waiting_tasks_with_the_cause, .fini = cg_cleanup, .timeout = 120)
{
    capture_logs();
    fpp_executor_opts o = {.workers = 1};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 1);
    pid_t fs[4];
    cr_assert_eq(child_pids(fs, 4), 1);
    snprintf(cg_dir, sizeof cg_dir, "/sys/fs/cgroup/pids/fpp-test-%ld", (long)getpid());
    if (mkdir(cg_dir, 0755) != 0) {
        int e = errno;
        cg_dir[0] = 0;
        fpp_tm_free(tm);
        fpp_executor_free(ex);
        cr_skip_test("cannot create a cgroup-v1 pids group (/sys/fs/cgroup/pids/...): %s", strerror(e));
    }
    char pid[32], kpid[32];
    pid_t keeper = 0;
    cr_assert_eq(keeper_pids(&keeper, 1), 1);
    snprintf(pid, sizeof pid, "%ld", (long)fs[0]);
    snprintf(kpid, sizeof kpid, "%ld", (long)keeper);
    if (!write_file(cg_dir, "cgroup.procs", kpid) || !write_file(cg_dir, "cgroup.procs", pid) ||
        !write_file(cg_dir, "pids.max", "1")) {
        int e = errno;
        fpp_tm_free(tm);
        fpp_executor_free(ex);
        cr_skip_test("cannot move the fork server into a pids cgroup: %s", strerror(e));
    }
    /* The spare, forked before, is outside the group: kill it; the server cannot fork another. */
    pid_t w[8];
    int n = worker_pids(w, 8);
    for (int i = 0; i < n; i++)
        if (!has_slot(w[i]))
            kill(w[i], SIGKILL);
    for (int ms = 0; ms < 2000 && worker_pids(w, 8) != 1; ms += 5)
        sleep_ms(5);
    cr_assert_eq(worker_pids(w, 8), 1, "the worker alone, no spare");

    int64_t t0 = mono_ns();
    int64_t segv = fpp_submit(tm, F_SEGV, NULL, 0);
    for (uint64_t i = 0; i < 20; i++)
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
    fpp_task *t;
    const char *cause = "Resource temporarily unavailable";
    int failed = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_id(t) == segv) {
            cr_expect_eq(fpp_task_status(t), FPP_CRASHED);
            continue;
        }
        cr_assert_eq(fpp_task_status(t), FPP_CRASHED, "%s", fpp_task_error(t) ? fpp_task_error(t) : "done");
        cr_assert(strstr(fpp_task_error(t), cause) != NULL, "%s", fpp_task_error(t));
        failed++;
    }
    cr_assert_eq(failed, 20);
    double first = (mono_ns() - t0) / 1e9;
    /* Keep it failing for 3 s more: every task fails at once, with the cause. */
    while (mono_ns() - t0 < 3500000000LL) {
        uint64_t x = 5;
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &x, 8), 0);
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        cr_assert_eq(fpp_task_status(t), FPP_CRASHED);
        cr_assert(strstr(fpp_task_error(t), cause) != NULL, "%s", fpp_task_error(t));
        sleep_ms(20);
    }
    double elapsed = (mono_ns() - t0) / 1e9;
    int lines = count_lines(captured_logs(), "Resource temporarily unavailable");
    cr_log_info("fork failing: the 20 waiting tasks failed after %.2f s; %d log lines in %.2f s", first, lines, elapsed);
    cr_expect_geq(lines, 1, "the cause is logged");
    cr_expect_leq(lines, (int)elapsed + 1, "%d lines in %.1f s:\n%s", lines, elapsed, captured_logs());
    /* fork works again: the next attempt (once a second) starts a worker. */
    cr_assert(write_file(cg_dir, "pids.max", "max"));
    bool again = false;
    for (int k = 0; k < 100 && !again; k++) {
        uint64_t x = 6;
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &x, 8), 0);
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        again = fpp_task_status(t) == FPP_DONE;
        if (!again)
            sleep_ms(50);
    }
    cr_assert(again, "the pool started again once fork worked");
    cr_expect(strstr(captured_logs(), "workers start again") != NULL, "%s", captured_logs());
    every_slot_serves(tm, 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* 0.1: a failed pidfd_open was logged as a failed fork. */
Test(forkfail, pidfd_open_failing_is_named_in_the_log, .fini = assert_clean, .timeout = 60)
{
    capture_logs();
    fail_syscall(SYS_pidfd_open, EPERM);
    fpp_executor_opts o = {.workers = 1};
    fpp_executor *ex = (fpp_executor *)1;
    int rc = fpp_process_executor(&ex, &o);
    cr_expect_eq(rc, FPP_ESYS, "%s", fpp_strerror(rc));
    cr_expect_null(ex);
    const char *log = captured_logs();
    cr_expect(strstr(log, "pidfd_open(worker): Operation not permitted") != NULL, "%s", log);
    cr_expect(strstr(log, "fork(") == NULL, "the log blames fork: %s", log);
}

/* A kernel without pidfd_open (before 5.3): everything works on pids and waitpid instead,
 * crashes included (0.1 needed pidfds for its supervisor; here the seccomp filter makes it
 * ENOSYS in the fork server and the workers too). */
Test(forkfail, without_pidfd_open_the_pool_still_works_and_recovers, .fini = assert_clean, .timeout = 60)
{
    fail_syscall(SYS_pidfd_open, ENOSYS);
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    for (uint64_t i = 0; i < 300; i++)
        cr_assert_geq(fpp_submit(tm, i % 30 == 0 ? F_SEGV : F_SQUARE, &i, 8), 0);
    fpp_task *t;
    int done = 0, crashed = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        uint64_t i = (uint64_t)fpp_task_id(t);
        if (i % 30 == 0) {
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED);
            crashed++;
        } else {
            cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
            done++;
        }
    }
    cr_assert_eq(done + crashed, 300);
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ======================================== item 9: nothing left in /dev/shm */

/* The child: creates and frees executors with a 128 MiB argument limit (a 256 MiB argument
 * arena, 64 MiB of it backed at creation) for ever, reporting each pool's pids. */
static void creator(int wfd) __attribute__((noreturn));
static void creator(int wfd)
{
    for (;;) {
        fpp_executor *ex = NULL;
        fpp_executor_opts o = {.workers = 2, .max_arg_size = (size_t)128 << 20};
        if (fpp_process_executor(&ex, &o) == 0) {
            pid_t pids[16];
            int n = pool_pids(pids, 16, NULL);
            ssize_t w = write(wfd, pids, (size_t)n * sizeof *pids);
            (void)w;
            fpp_executor_free(ex);
        }
    }
}

/* 0.1: a parent killed during fpp_process_executor left its /dev/shm entry behind (61 of 300
 * runs; 69 of 100 with 256 MiB arguments): the name was unlinked only after ftruncate,
 * posix_fallocate and mmap. Here a child creating executors is SIGKILLed at random moments
 * 100 times: no fpp name ever appears in /dev/shm (inotify sees even a short-lived one), and
 * no process of its pools survives it (this process is made their subreaper, so a survivor
 * would become our child: none may be left a few seconds later). */
Test(devshm, a_parent_killed_at_random_moments_of_creation_leaves_nothing_behind, .fini = assert_clean,
     .timeout = 300)
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    cr_assert_geq(in, 0);
    cr_assert_geq(inotify_add_watch(in, "/dev/shm", IN_CREATE | IN_MOVED_TO), 0, "watch /dev/shm: %s", strerror(errno));
    unsigned seed = seed_from_clock("devshm");
    pid_t kids[100];
    int reported = 0, names = 0, ours = 0;
    for (int round = 0; round < 100; round++) {
        int p[2];
        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        pid_t kid = fork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
            close(p[0]);
            creator(p[1]);
        }
        close(p[1]);
        kids[round] = kid;
        sleep_ms((int)(rand_r(&seed) % 80));
        kill(kid, SIGKILL);
        cr_assert_eq(waitpid(kid, NULL, 0), kid);
        pid_t pids[1024];
        ssize_t got = read(p[0], pids, sizeof pids);
        close(p[0]);
        int n = got > 0 ? (int)(got / (ssize_t)sizeof(pid_t)) : 0;
        reported += n;
        /* Its pool's processes are orphans now, ours as the subreaper: all must go. */
        int left = 0;
        for (int ms = 0; ms < 5000; ms += 5) {
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
            left = live_children();
            if (left == 0)
                break;
            sleep_ms(5);
        }
        cr_assert_eq(left, 0, "round %d: %d process(es) of the killed parent's pools still alive after 5 s", round, left);
        for (int i = 0; i < n; i++)
            cr_assert(proc_state(pids[i]) == 0 || proc_state(pids[i]) == 'Z', "round %d: pool process %ld survived",
                      round, (long)pids[i]);
    }
    /* Every name created in /dev/shm meanwhile. Another program on this machine may use fpp
     * 0.1 (its names are fpp-<pid>-...): only names carrying one of our children's pids count. */
    char buf[1 << 16];
    ssize_t len;
    while ((len = read(in, buf, sizeof buf)) > 0) {
        for (char *q = buf; q < buf + len;) {
            struct inotify_event *ev = (struct inotify_event *)q;
            if (ev->len && strstr(ev->name, "fpp")) {
                names++;
                for (int r = 0; r < 100; r++) {
                    char pid[32];
                    snprintf(pid, sizeof pid, "%ld", (long)kids[r]);
                    if (strstr(ev->name, pid)) {
                        ours++;
                        cr_log_error("/dev/shm/%s appeared", ev->name);
                    }
                }
            }
            q += sizeof *ev + ev->len;
        }
    }
    close(in);
    cr_log_info("devshm: 100 kills, %d pool pids reported, %d fpp names in /dev/shm (%d ours)", reported, names, ours);
    cr_expect_eq(ours, 0, "%d names of ours appeared in /dev/shm", ours);
    cr_expect_gt(reported, 0, "some kills landed after a pool was up");
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    while (d && (e = readdir(d)))
        for (int r = 0; r < 100; r++) {
            char pid[32];
            snprintf(pid, sizeof pid, "-%ld-", (long)kids[r]);
            cr_expect(!strstr(e->d_name, pid), "/dev/shm/%s left behind", e->d_name);
        }
    if (d)
        closedir(d);
}

/* ============================== item 12: stops and kills of any pool process */

static int F_CHAOS;

/* F_CHAOS: a uint64_t i; every 101st segfaults (so that workers are replaced while the chaos
 * goes on), the others spin 20 us; result: i * i. */
__attribute__((no_sanitize("undefined", "address"))) static int chaos_task(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    uint64_t i = u64_of(arg);
    if (i % 101 == 0)
        *(volatile int *)NULL = 1;
    int64_t until = mono_ns() + 20000;
    while (mono_ns() < until)
        ;
    i *= i;
    return fpp_out_set(out, &i, 8);
}

__attribute__((constructor)) static void register_chaos(void) { F_CHAOS = fpp_register("wd_chaos", chaos_task); }

static _Atomic int chaos_stops[3]; /* fork server, worker, spare */

/* Stops a process of the pool for 0.5 to 3 s, 6 times (the fork server, a worker, the spare,
 * then at random: the fork server one time in three, else a worker or the spare), then ends
 * the map. */
static void *chaos_stopper(void *arg)
{
    unsigned seed = *(unsigned *)arg;
    sleep_ms(200);
    for (int k = 0; k < 6; k++) {
        pid_t pids[16];
        int nfs = 0, n = pool_pids(pids, 16, &nfs);
        if (n <= nfs) {
            sleep_ms(10);
            k--;
            continue;
        }
        pid_t v = rand_r(&seed) % 3 == 0 ? pids[0] : pids[nfs + (int)(rand_r(&seed) % (unsigned)(n - nfs))];
        if (k < 3) { /* the first three: the fork server, a worker, the spare */
            v = 0;
            for (int i = k == 0 ? 0 : nfs; i < (k == 0 ? 1 : n) && !v; i++)
                if (k == 0 || has_slot(pids[i]) == (k == 1))
                    v = pids[i];
            if (!v) {
                sleep_ms(10);
                k--;
                continue;
            }
        }
        int which = v == pids[0] ? 0 : has_slot(v) ? 1 : 2;
        if (kill(v, SIGSTOP) != 0)
            continue;
        atomic_fetch_add(&chaos_stops[which], 1);
        sleep_ms(500 + (int)(rand_r(&seed) % 2501));
        kill(v, SIGCONT);
        sleep_ms(100 + (int)(rand_r(&seed) % 200));
    }
    atomic_store(&map_end, 1);
    return NULL;
}

static _Atomic int chaos_kills[2]; /* fork server, spare */

/* Kills the spare, or one time in four the fork server, every 5 to 40 ms for 4 s. */
static void *chaos_killer(void *arg)
{
    unsigned seed = *(unsigned *)arg;
    int64_t until = mono_ns() + 4000000000LL;
    while (mono_ns() < until) {
        pid_t pids[16];
        int nfs = 0, n = pool_pids(pids, 16, &nfs);
        if (nfs > 0 && rand_r(&seed) % 4 == 0) {
            if (kill(pids[0], SIGKILL) == 0)
                atomic_fetch_add(&chaos_kills[0], 1);
        } else {
            for (int i = nfs; i < n; i++)
                if (!has_slot(pids[i]) && kill(pids[i], SIGKILL) == 0) {
                    atomic_fetch_add(&chaos_kills[1], 1);
                    break;
                }
        }
        sleep_ms(5 + (int)(rand_r(&seed) % 36));
    }
    atomic_store(&map_end, 1);
    return NULL;
}

/* Runs an endless map of F_CHAOS under the chaos thread until it ends the map; every item
 * comes back once: DONE with its square, or CRASHED (its own segfault, or SIGKILL: its worker
 * taken down with a fork server killed or replaced), never anything else; then the wholeness
 * check. */
static void chaos_run(void *(*chaos)(void *), const char *what)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    atomic_store(&map_end, 0);
    atomic_store(&mapped, 0);
    unsigned seed = seed_from_clock(what);
    pthread_t th;
    pthread_create(&th, NULL, chaos, &seed);
    uint64_t item;
    cr_assert_eq(fpp_map(tm, F_CHAOS, endless, &item), 0);
    fpp_task *t;
    long done = 0, own = 0, taken = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        uint64_t i = u64_of(fpp_task_arg(t, NULL));
        fpp_status st = fpp_task_status(t);
        if (i % 101 == 0) {
            cr_assert_eq(st, FPP_CRASHED, "item %llu: %s", (unsigned long long)i, fpp_status_name(st));
            own++;
        } else if (st == FPP_DONE) {
            cr_assert_eq(u64_of(fpp_task_result(t, NULL)), i * i);
            done++;
        } else {
            /* Taken down with its worker: the fork server's death takes its workers along (and
             * a spare killed just as it took its slot is a worker by then). */
            cr_assert_eq(st, FPP_CRASHED, "item %llu: %s: %s", (unsigned long long)i, fpp_status_name(st),
                         fpp_task_error(t));
            cr_assert_eq(fpp_task_signal(t), SIGKILL, "item %llu: %s", (unsigned long long)i, fpp_task_error(t));
            taken++;
        }
    }
    pthread_join(th, NULL);
    cr_assert_eq((uint64_t)(done + own + taken), atomic_load(&mapped), "every item came back once");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_log_info("%s: %ld done, %ld crashed by their own segfault, %ld taken down with their worker; %llu restarts",
                what, done, own, taken, (unsigned long long)st.worker_restarts);
    every_slot_serves(tm, 2);
    expect_settled(2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* 0.1's fault injection was SIGKILL of workers only; stops never lasted more than 9 ms. A
 * stopped fork server with a spawn waiting is replaced after 2 s (its workers go with it). */
Test(chaos, stops_of_any_pool_process_for_seconds_leave_every_slot_serving, .fini = assert_clean, .timeout = 300)
{
    chaos_run(chaos_stopper, "stops");
    cr_log_info("stops: fork server %d, workers %d, spare %d", atomic_load(&chaos_stops[0]),
                atomic_load(&chaos_stops[1]), atomic_load(&chaos_stops[2]));
}

/* 0.1: a spare dying before it took its slot left the slot to no one (the hand-off race). */
Test(chaos, kills_of_spares_and_of_the_fork_server_leave_every_slot_serving, .fini = assert_clean, .timeout = 300)
{
    chaos_run(chaos_killer, "kills");
    cr_log_info("kills: fork server %d, spares %d", atomic_load(&chaos_kills[0]), atomic_load(&chaos_kills[1]));
    cr_expect_gt(atomic_load(&chaos_kills[0]), 0);
    cr_expect_gt(atomic_load(&chaos_kills[1]), 0);
}

/* The fork server reaps the workers and reports their deaths: stopped (a task's SIGSTOP, a
 * user's) right before a worker crashes, it reports nothing. The parent's heartbeat finds it
 * stopped and continues it: the crashed task comes back, every other task runs, and the same
 * server serves on. 0.1 had no fork server; 0.2 replaced a server silent 2 s about a death,
 * and every innocent task its workers ran went down with it. */
Test(chaos, a_fork_server_stopped_before_a_crash_is_continued_and_loses_nothing, .fini = assert_clean, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t fs[4];
    cr_assert_eq(child_pids(fs, 4), 1);
    cr_assert_eq(kill(fs[0], SIGSTOP), 0);
    while (proc_state(fs[0]) != 'T')
        sleep_ms(1);
    int64_t segv = fpp_submit(tm, F_SEGV, NULL, 0);
    for (uint64_t i = 0; i < 200; i++)
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
    fpp_task *t;
    int done = 0, crashed = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_id(t) == segv) {
            cr_assert_eq(fpp_task_status(t), FPP_CRASHED);
            crashed++;
            continue;
        }
        cr_expect_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        done += fpp_task_status(t) == FPP_DONE;
    }
    cr_assert_eq(crashed, 1, "the crashed task came back");
    cr_expect_eq(done, 200, "no innocent task lost");
    every_slot_serves(tm, 2);
    char st = proc_state(fs[0]);
    cr_expect(st != 'T' && st != 0 && st != 'Z', "the stopped server was continued (state %c)", st ? st : '-');
    pid_t now[4];
    cr_expect_eq(child_pids(now, 4), 1);
    cr_expect_eq(now[0], fs[0], "the same server");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The audit (after 250 ms without progress) harvested every worker, then counted each one's
 * claimed tasks: a healthy worker that finished its task and claimed the next in between was
 * counted holding two, replaced, and the next task failed CRASHED ("it holds more than one
 * claimed task"); seen under ASan in the journal's kill storm. The test build holds the audit
 * in that window (FPP_AUDIT_PAUSE_MS): one worker, a 600 ms task then a 500 ms one; the audit
 * starts while the first runs and is held past its end. */
Test(audit, a_worker_that_finishes_and_claims_the_next_while_the_audit_looks_is_not_replaced,
     .fini = assert_clean, .timeout = 60)
{
    setenv("FPP_AUDIT_PAUSE_MS", "500", 1);
    fpp_executor_opts eo = {.workers = 1};
    fpp_executor *ex = mk_exec(PROC, &eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    uint64_t first = 600000, second = 500000;
    cr_assert_eq(fpp_submit(tm, F_USLEEP, &first, sizeof first), 0);
    cr_assert_eq(fpp_submit(tm, F_USLEEP, &second, sizeof second), 1);
    cr_assert_eq(fpp_run(tm), 0);
    unsetenv("FPP_AUDIT_PAUSE_MS");
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(fpp_task_status(all[i]), FPP_DONE, "task %lld: %s", (long long)fpp_task_id(all[i]),
                     fpp_task_error(all[i]));
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.worker_restarts, 0, "the healthy worker was not replaced");
    every_slot_serves(tm, 1);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
