/* test_result_arena.c: the result arena's promise (lib/pool/result_arena.c): whatever result
 * the caller holds, every call that waits makes progress, and the result it reads in place is
 * never written over. One worker, so that every result goes through one arena; results of
 * 16 KiB, 32 KiB, the largest allowed (1 MiB), and a 24 MiB one (a third of 0.2's arena for
 * that size); the current task (fpp_as_completed's, read in place) held across fpp_wait,
 * fpp_submit waiting for room, a map's pulls and fpp_as_completed_for; kept tasks across
 * fpp_as_completed_for and fpp_run. Every result's bytes are stamped with its task's id
 * (F_STAMP), so a result written over by another is caught.
 *
 * On 0.2 each of the current-task cases waits for ever (the worker waits for room behind the
 * held result, which nothing moves): the test's timeout fails it. */
#include "common.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

static void check_stamp(const fpp_task *t, uint64_t id, uint64_t len)
{
    size_t got = 0;
    const unsigned char *p = fpp_task_result(t, &got);
    cr_assert_eq(fpp_task_status(t), FPP_DONE, "task %lld: %s", (long long)id, fpp_task_error(t));
    cr_assert_eq(got, len, "task %lld: %zu bytes", (long long)id, got);
    for (uint64_t i = 0; i < len; i += (i < 4096 ? 1 : 4093))
        cr_assert_eq(p[i], stamp_byte(id, i), "task %lld byte %llu written over", (long long)id, (unsigned long long)i);
    cr_assert_eq(p[len - 1], stamp_byte(id, len - 1), "task %lld: its last byte written over", (long long)id);
}

static int64_t submit_stamp(fpp_tm *tm, uint64_t len)
{
    /* The id the task will get is the number submitted so far: stamp with it. */
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    stamp_arg a = {st.submitted, len};
    int64_t id = fpp_submit(tm, F_STAMP, &a, sizeof a);
    cr_assert_eq((uint64_t)id, a.id, "fpp_submit: %lld", (long long)id);
    return id;
}

/* Enough tasks that their results, written around the held one, go round the arena twice. */
static int tasks_for(uint64_t max_result, uint64_t len)
{
    uint64_t arena = 4 * max_result;
    uint64_t n = 2 * arena / len + 8;
    return (int)(n < 40 ? 40 : n);
}

static fpp_executor *one_worker(kind k, uint64_t max_result)
{
    fpp_executor_opts o = {.workers = 1, .max_result_size = max_result};
    return mk_exec(k, &o);
}

static fpp_tm *wide_tm(fpp_executor *ex, size_t max_in_flight)
{
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .max_in_flight = max_in_flight};
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    return tm;
}

/* The current task held across fpp_wait on the last task. */
static void current_across_wait(kind k, uint64_t max_result, uint64_t len)
{
    fpp_executor *ex = one_worker(k, max_result);
    int n = tasks_for(max_result, len);
    fpp_tm *tm = wide_tm(ex, (size_t)n + 16);
    int64_t last = -1;
    for (int i = 0; i < n; i++)
        last = submit_stamp(tm, len);
    fpp_task *cur, *t;
    cr_assert_eq(fpp_as_completed(tm, &cur), 1);
    int64_t cid = fpp_task_id(cur);
    cr_assert_eq(fpp_wait(tm, last, &t), 1, "fpp_wait returns while the caller holds task %lld", (long long)cid);
    check_stamp(t, (uint64_t)last, len);
    fpp_task_release(t);
    check_stamp(cur, (uint64_t)cid, len); /* read in place all along: never written over */
    int seen = 1;
    while (fpp_as_completed(tm, &t) == 1) {
        check_stamp(t, (uint64_t)fpp_task_id(t), len);
        seen++;
    }
    cr_assert_eq(seen, n - 1, "every other task comes out once");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The current task held across fpp_submit waiting for room (the crawler's pattern: read a
 * result, submit what it names). */
static void current_across_submit(kind k, uint64_t max_result, uint64_t len)
{
    fpp_executor *ex = one_worker(k, max_result);
    fpp_tm *tm = wide_tm(ex, 8); /* a small window: the submits below wait for room */
    for (int i = 0; i < 4; i++)
        submit_stamp(tm, len);
    fpp_task *cur, *t;
    cr_assert_eq(fpp_as_completed(tm, &cur), 1);
    int64_t cid = fpp_task_id(cur);
    int more = tasks_for(max_result, len);
    for (int i = 0; i < more; i++)
        submit_stamp(tm, len); /* returns: the worker never waits on the held result */
    check_stamp(cur, (uint64_t)cid, len);
    int seen = 1;
    while (fpp_as_completed(tm, &t) == 1) {
        check_stamp(t, (uint64_t)fpp_task_id(t), len);
        seen++;
    }
    cr_assert_eq(seen, 4 + more);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

typedef struct stamp_iter { uint64_t next, n, len; stamp_arg a; } stamp_iter;
static int next_stamp(void *s, const void **arg, size_t *len)
{
    stamp_iter *it = s;
    if (it->next >= it->n)
        return 0;
    it->a = (stamp_arg){it->next++, it->len};
    *arg = &it->a;
    *len = sizeof it->a;
    return 1;
}

/* The current task held while a map's items are pulled and run: a submit waits for room (the
 * map fills the window first) and a wait needs every task before it to have run. */
static void current_across_map(kind k, uint64_t max_result, uint64_t len)
{
    fpp_executor *ex = one_worker(k, max_result);
    int n = tasks_for(max_result, len);
    fpp_tm *tm = wide_tm(ex, (size_t)n);
    stamp_iter it = {0, (uint64_t)n, len, {0, 0}};
    cr_assert_eq(fpp_map(tm, F_STAMP, next_stamp, &it), 0);
    fpp_task *cur, *t;
    cr_assert_eq(fpp_as_completed(tm, &cur), 1); /* the map pulled its window: ids 0..n-1 */
    int64_t cid = fpp_task_id(cur);
    stamp_arg a = {(uint64_t)n, len};
    int64_t id = fpp_submit(tm, F_STAMP, &a, sizeof a);
    cr_assert_eq(id, n, "the map's items come first");
    cr_assert_eq(fpp_wait(tm, id, &t), 1, "fpp_wait returns while the caller holds task %lld", (long long)cid);
    check_stamp(t, (uint64_t)id, len);
    fpp_task_release(t);
    check_stamp(cur, (uint64_t)cid, len);
    int seen = 1;
    while (fpp_as_completed(tm, &t) == 1) {
        check_stamp(t, (uint64_t)fpp_task_id(t), len);
        seen++;
    }
    cr_assert_eq(seen, n);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Kept tasks (moved out of the arena when kept) across fpp_as_completed_for and fpp_run. */
static void kept_across_calls(kind k, uint64_t max_result, uint64_t len)
{
    fpp_executor *ex = one_worker(k, max_result);
    int n = tasks_for(max_result, len);
    fpp_tm *tm = wide_tm(ex, (size_t)n + 16);
    for (int i = 0; i < n; i++)
        submit_stamp(tm, len);
    fpp_task *kept[8], *t;
    int nk = 0;
    while (nk < 8 && fpp_as_completed_for(tm, &t, 10000) == 1)
        kept[nk++] = fpp_task_keep(t);
    cr_assert_eq(nk, 8);
    for (int i = 0; i < n; i++)
        submit_stamp(tm, len);
    cr_assert_eq(fpp_run(tm), 0, "fpp_run returns while the caller keeps 8 tasks");
    for (int i = 0; i < nk; i++) {
        check_stamp(kept[i], (uint64_t)fpp_task_id(kept[i]), len);
        fpp_task_release(kept[i]);
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_assert_eq(st.done, (uint64_t)2 * (uint64_t)n);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

#define SIZES(mode)                                                                                        \
    BOTH_EXECUTORS(mode, results_of_16_kib, .timeout = 60) { mode(k, MIB, 16 * KIB); }                    \
    BOTH_EXECUTORS(mode, results_of_32_kib, .timeout = 60) { mode(k, MIB, 32 * KIB); }                    \
    BOTH_EXECUTORS(mode, results_of_the_largest_size, .timeout = 60) { mode(k, MIB, MIB); }             \
    BOTH_EXECUTORS(mode, results_of_24_mib, .timeout = 120) { mode(k, 24 * MIB, 24 * MIB); }

SIZES(current_across_wait)
SIZES(current_across_submit)
SIZES(current_across_map)
SIZES(kept_across_calls)

/* Sizes drawn at random (a fixed seed) between 16 KiB and the largest, so that the held result
 * and the worker's position fall at every kind of offset: round after round, the current task
 * is held while the worker writes past it twice round the arena. */
BOTH_EXECUTORS(geometry, results_of_random_sizes_around_the_held_one, .timeout = 120)
{
    fpp_executor *ex = one_worker(k, MIB);
    fpp_tm *tm = wide_tm(ex, 4096);
    uint64_t seed = 12345, lens[4096];
    int64_t next = 0;
    for (int round = 0; round < 20; round++) {
        int n = 24;
        for (int i = 0; i < n; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            uint64_t len = 16 * KIB + (seed >> 33) % (MIB - 16 * KIB + 1);
            stamp_arg a = {(uint64_t)next, len};
            lens[next % 4096] = len;
            cr_assert_eq(fpp_submit(tm, F_STAMP, &a, sizeof a), next);
            next++;
        }
        fpp_task *cur, *t;
        cr_assert_eq(fpp_as_completed(tm, &cur), 1);
        int64_t cid = fpp_task_id(cur);
        cr_assert_eq(fpp_wait(tm, next - 1, &t), 1, "round %d", round);
        check_stamp(t, (uint64_t)(next - 1), lens[(next - 1) % 4096]);
        fpp_task_release(t);
        check_stamp(cur, (uint64_t)cid, lens[cid % 4096]);
        for (int i = 0; i < n - 2; i++) {
            cr_assert_eq(fpp_as_completed(tm, &t), 1);
            check_stamp(t, (uint64_t)fpp_task_id(t), lens[fpp_task_id(t) % 4096]);
        }
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A forked child asks for results: one handed out in place (it lies in the pool's memory, which
 * the child does not have: NULL and a log line, never a crash), a small one and a kept one (the
 * task's own memory, copied by fork: the bytes). On 0.2 the child died of SIGSEGV. */
BOTH_EXECUTORS(fork, a_forked_child_gets_the_bytes_or_null_never_a_crash, .timeout = 60)
{
    fpp_executor *ex = one_worker(k, MIB);
    fpp_tm *tm = wide_tm(ex, 64);
    stamp_arg big = {0, MIB}, small = {1, 24}, kept = {2, MIB};
    cr_assert_eq(fpp_submit(tm, F_STAMP, &big, sizeof big), 0);
    cr_assert_eq(fpp_submit(tm, F_STAMP, &small, sizeof small), 1);
    cr_assert_eq(fpp_submit(tm, F_STAMP, &kept, sizeof kept), 2);
    fpp_task *tk, *ts, *tb;
    cr_assert_eq(fpp_wait(tm, 2, &tk), 1); /* waited for: kept, its bytes moved to the task */
    cr_assert_eq(fpp_wait(tm, 1, &ts), 1);
    cr_assert_eq(fpp_as_completed(tm, &tb), 1); /* the big one, current: in place */
    cr_assert_eq(fpp_task_id(tb), 0);
    check_stamp(tb, 0, MIB);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        size_t len = 7;
        const unsigned char *p = fpp_task_result(tb, &len);
        int bad = 0;
        if (k == PROC && (p != NULL || len != 0))
            bad |= 1; /* the pool's memory is not in the child: a documented NULL */
        if (k == THR && p && (len != MIB || p[5] != stamp_byte(0, 5)))
            bad |= 1;
        p = fpp_task_result(ts, &len);
        if (!p || len != 24 || p[23] != stamp_byte(1, 23))
            bad |= 2;
        p = fpp_task_result(tk, &len);
        if (!p || len != MIB || p[MIB - 1] != stamp_byte(2, MIB - 1))
            bad |= 4;
        _exit(bad);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child was killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "what the child read was wrong (bits: 1 big, 2 small, 4 kept): %d",
                 WEXITSTATUS(st));
    check_stamp(tb, 0, MIB); /* and the parent still reads it */
    fpp_task_release(tk);
    fpp_task_release(ts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
