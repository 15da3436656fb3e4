/* test_harvest.c: results handed out where the worker wrote them (lib/harvest.c): the bytes
 * stay right through every way a task lives on (current, kept, retained, waited for), a kept
 * or unread result never pins a worker, and the task the caller reads is never moved. */
#include "common.h"

#define MIB ((uint64_t)1 << 20)

/* F_BYTES makes byte i = (i * 31 + 7) & 0xff. */
static void check_bytes(const fpp_task *t, uint64_t n)
{
    size_t len = 0;
    const unsigned char *p = fpp_task_result(t, &len);
    cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
    cr_assert_eq(len, n);
    for (uint64_t i = 0; i < n; i += 4093)
        cr_assert_eq(p[i], (unsigned char)((i * 31 + 7) & 0xff), "byte %llu of task %lld", (unsigned long long)i,
                     (long long)fpp_task_id(t));
    cr_assert_eq(p[n - 1], (unsigned char)(((n - 1) * 31 + 7) & 0xff));
}

typedef struct iter { int i, n; uint64_t len; } iter;
static int next_len(void *s, const void **arg, size_t *len)
{
    iter *it = s;
    if (it->i >= it->n)
        return 0;
    it->i++;
    *arg = &it->len;
    *len = sizeof it->len;
    return 1;
}

BOTH_EXECUTORS(zerocopy, a_lazy_map_of_1_mib_results_keeps_every_byte_and_every_kept_task, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2, .max_result_size = MIB};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    iter it = {0, 300, MIB};
    cr_assert_eq(fpp_map(tm, F_BYTES, next_len, &it), 0);
    fpp_task *t, *kept[30];
    int n = 0, nk = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        check_bytes(t, MIB);
        if (n++ % 10 == 0)
            kept[nk++] = fpp_task_keep(t); /* 30 MiB kept: far more than any worker's arena */
    }
    cr_assert_eq(n, 300);
    for (int i = 0; i < nk; i++) {
        check_bytes(kept[i], MIB);
        fpp_task_release(kept[i]);
    }
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(zerocopy, submitting_everything_before_reading_moves_unread_results_out_of_the_way, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2, .max_result_size = MIB};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm_opts to = {.error_policy = FPP_RAISE, .monitor_interval_ms = -1, .max_in_flight = 100};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    uint64_t len = MIB;
    for (int i = 0; i < 100; i++) /* 100 MiB of results before any is read */
        cr_assert_geq(fpp_submit(tm, F_BYTES, &len, sizeof len), 0);
    cr_assert_eq(fpp_run(tm), 0, "no worker waits for ever for room that unread results take");
    for (int i = 0; i < 20; i++)
        cr_assert_geq(fpp_submit(tm, F_BYTES, &len, sizeof len), 0);
    fpp_task *t;
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        check_bytes(t, MIB);
        n++;
    }
    cr_assert_eq(n, 20);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(zerocopy, the_result_being_read_is_never_moved_or_overwritten, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 1, .max_result_size = MIB};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t len = MIB;
    for (int i = 0; i < 40; i++)
        cr_assert_geq(fpp_submit(tm, F_BYTES, &len, sizeof len), 0);
    fpp_task *t;
    for (int round = 0; round < 40; round++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        const unsigned char *p = fpp_task_result(t, NULL);
        /* The worker runs on meanwhile, as far as the room it has allows. */
        sleep_ms(round % 8 == 0 ? 50 : 1);
        cr_assert_eq(fpp_task_result(t, NULL), p, "the current task's bytes did not move");
        check_bytes(t, MIB);
    }
    cr_assert_eq(fpp_as_completed(tm, &t), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(zerocopy, retained_and_waited_for_results_outlive_the_arena, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2, .max_result_size = MIB / 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    uint64_t len = MIB / 2;
    int64_t ids[60];
    for (int i = 0; i < 60; i++)
        ids[i] = fpp_submit(tm, F_BYTES, &len, sizeof len);
    fpp_task *w;
    cr_assert_eq(fpp_wait(tm, ids[7], &w), 1);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 60);
    for (size_t i = 0; i < n; i++)
        check_bytes(all[i], len);
    check_bytes(w, len);
    fpp_task_release(w);
    fpp_tm_free(tm);
    /* Both orders of freeing: the executor goes first with results still referenced. */
    fpp_tm *tm2 = mk_tm(ex, FPP_IGNORE, 1);
    for (int i = 0; i < 10; i++)
        fpp_submit(tm2, F_BYTES, &len, sizeof len);
    cr_assert_eq(fpp_run(tm2), 0);
    fpp_executor_free(ex);
    n = fpp_completed(tm2, &all);
    cr_assert_eq(n, 10);
    for (size_t i = 0; i < n; i++)
        check_bytes(all[i], len); /* moved out when the executor detached its task manager */
    fpp_tm_free(tm2);
}
