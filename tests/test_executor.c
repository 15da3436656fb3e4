/* test_executor.c: what both executors must do alike (lib/process_executor.c,
 * lib/thread_executor.c over lib/pool.c): results, sizes, failures and bad input. */
#include "common.h"

BOTH_EXECUTORS(executor, runs_20000_tasks_with_every_result_right_and_every_id_once, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    enum { N = 20000 };
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(fpp_submit(tm, F_SQUARE, &i, 8), (int64_t)i, "ids count from 0 in order");
    fpp_task *t;
    int rc, n = 0;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert(id >= 0 && id < N);
        cr_assert_eq(seen[id], 0, "task %lld returned twice", (long long)id);
        seen[id] = 1;
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        size_t len;
        const void *r = fpp_task_result(t, &len);
        cr_assert_eq(len, 8);
        cr_assert_eq(u64_of(r), (uint64_t)id * (uint64_t)id);
        n++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(n, N, "every task came back");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.submitted, N);
    cr_expect_eq(st.done, N);
    cr_expect_eq(st.in_flight, 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, round_trips_an_8_mib_result_and_a_60_kb_argument, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2, .max_result_size = 8 << 20};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    uint64_t n = 8 << 20;
    cr_assert_geq(fpp_submit(tm, F_BYTES, &n, 8), 0);
    size_t alen = 60000;
    unsigned char *arg = malloc(alen);
    for (size_t i = 0; i < alen; i++)
        arg[i] = (unsigned char)(i * 7 + 3);
    cr_assert_geq(fpp_submit(tm, F_ECHO, arg, alen), 0);
    fpp_task *t;
    int got = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        size_t len;
        const unsigned char *r = fpp_task_result(t, &len);
        if (fpp_task_fn(t) == F_BYTES) {
            cr_assert_eq(len, n);
            for (size_t i = 0; i < len; i++)
                if (r[i] != (unsigned char)((i * 31 + 7) & 0xff))
                    cr_assert_fail("result byte %zu differs", i);
        } else {
            cr_assert_eq(len, alen);
            cr_assert_eq(memcmp(r, arg, alen), 0, "argument came back byte for byte");
        }
        got++;
    }
    cr_expect_eq(got, 2);
    free(arg);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, many_mid_size_results_and_arguments_cross_whole, .timeout = 60)
{
    /* Sizes around the inline limits and the arena laps, many at once. */
    fpp_executor_opts o = {.workers = 2, .max_result_size = 100000, .queue_capacity = 16};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    static unsigned char buf[70000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i ^ (i >> 8));
    size_t sizes[] = {0, 1, 31, 32, 33, 39, 40, 41, 255, 256, 257, 4096, 65535, 65536};
    int ns = sizeof sizes / sizeof *sizes, total = 0;
    for (int r = 0; r < 40; r++)
        for (int i = 0; i < ns; i++, total++)
            cr_assert_geq(fpp_submit(tm, F_ECHO, buf, sizes[i]), 0);
    fpp_task *t;
    int got = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        size_t alen, rlen;
        const void *a = fpp_task_arg(t, &alen);
        const void *r = fpp_task_result(t, &rlen);
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        cr_assert_eq(rlen, alen);
        cr_assert(alen == 0 || memcmp(a, r, alen) == 0);
        cr_assert(alen == 0 || memcmp(a, buf, alen) == 0);
        got++;
    }
    cr_expect_eq(got, total);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, returns_a_tasks_own_failure_message)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    fpp_submit(tm, F_FAIL, "xyz", 3);
    fpp_submit(tm, F_RETURN7, NULL, 0);
    fpp_task *t;
    int got = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        cr_assert_eq(fpp_task_status(t), FPP_FAILED);
        cr_assert_null(fpp_task_result(t, NULL));
        if (fpp_task_fn(t) == F_FAIL)
            cr_expect_str_eq(fpp_task_error(t), "failing on purpose (xyz)");
        else
            cr_expect_str_eq(fpp_task_error(t), "function returned 7");
        got++;
    }
    cr_expect_eq(got, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, rejects_unknown_function_ids_with_enofn)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    cr_expect_eq(fpp_submit(tm, 9999, NULL, 0), FPP_ENOFN);
    cr_expect_eq(fpp_submit(tm, -1, NULL, 0), FPP_ENOFN);
    cr_expect_eq(fpp_map(tm, 4242, (fpp_next)1, NULL), FPP_ENOFN);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, rejects_an_argument_over_max_arg_size_with_etoobig)
{
    fpp_executor_opts o = {.max_arg_size = 100};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    char buf[101] = {0};
    cr_expect_eq(fpp_submit(tm, F_ECHO, buf, 101), FPP_ETOOBIG);
    cr_expect_eq(fpp_submit(tm, F_ECHO, buf, 100), 0, "exactly the limit is fine, and ids are not used up");
    cr_expect_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, fails_a_result_over_max_result_size_naming_both_sizes)
{
    fpp_executor_opts o = {.max_result_size = 1 << 20};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    fpp_submit(tm, F_TOOBIG, NULL, 0);
    uint64_t n = (1 << 20) + 1;
    fpp_submit(tm, F_BYTES, &n, 8);
    fpp_task *t;
    int got = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        cr_assert_eq(fpp_task_status(t), FPP_FAILED);
        const char *e = fpp_task_error(t);
        char want[128];
        snprintf(want, sizeof want, "result of %zu bytes exceeds max_result_size (1048576 bytes)",
                 fpp_task_fn(t) == F_TOOBIG ? (size_t)(2 << 20) : (size_t)n);
        cr_expect_str_eq(e, want);
        got++;
    }
    cr_expect_eq(got, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, rejects_null_pointers_and_bad_options)
{
    fpp_executor *ex = (fpp_executor *)1;
    fpp_executor_opts bad = {.workers = -1};
    int (*make)(fpp_executor **, const fpp_executor_opts *) = k == PROC ? fpp_process_executor : fpp_thread_executor;
    cr_expect_eq(make(NULL, NULL), FPP_EINVAL);
    cr_expect_eq(make(&ex, &bad), FPP_EINVAL);
    cr_expect_null(ex, "*out is NULL after a failure");
    bad = (fpp_executor_opts){.workers = 100000};
    cr_expect_eq(make(&ex, &bad), FPP_EINVAL);
    bad = (fpp_executor_opts){.max_result_size = ((size_t)1 << 30) + 1};
    cr_expect_eq(make(&ex, &bad), FPP_EINVAL);
    bad = (fpp_executor_opts){.queue_capacity = (size_t)-1};
    cr_expect_eq(make(&ex, &bad), FPP_EINVAL);

    ex = mk_exec(k, NULL);
    fpp_tm *tm = NULL;
    cr_expect_eq(fpp_tm_create(NULL, ex, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_tm_create(&tm, NULL, NULL), FPP_EINVAL);
    cr_expect_null(tm);
    tm = mk_tm(ex, FPP_RAISE, 0);
    fpp_tm *second = NULL;
    cr_expect_eq(fpp_tm_create(&second, ex, NULL), FPP_ESTATE, "one task manager at a time");
    fpp_task *t;
    cr_expect_eq(fpp_submit(NULL, F_ECHO, NULL, 0), FPP_EINVAL);
    cr_expect_eq(fpp_submit(tm, F_ECHO, NULL, 5), FPP_EINVAL);
    cr_expect_eq(fpp_as_completed(NULL, &t), FPP_EINVAL);
    cr_expect_eq(fpp_as_completed(tm, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_run(NULL), FPP_EINVAL);
    cr_expect_eq(fpp_map(tm, F_ECHO, NULL, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_executor_workers(NULL), FPP_EINVAL);
    fpp_stats st;
    fpp_tm_stats(NULL, &st);
    cr_expect_eq(st.submitted, 0);
    cr_expect_null(fpp_tm_failure(NULL));
    fpp_tm_free(NULL);
    fpp_executor_free(NULL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(executor, zero_options_mean_defaults)
{
    fpp_executor *ex = mk_exec(k, NULL);
    cr_expect_eq(fpp_executor_workers(ex), (int)sysconf(_SC_NPROCESSORS_ONLN));
    fpp_executor_free(ex);
    fpp_executor_opts o = {0};
    ex = mk_exec(k, &o);
    cr_expect_eq(fpp_executor_workers(ex), (int)sysconf(_SC_NPROCESSORS_ONLN));
    fpp_executor_free(ex);
}

static _Atomic int null_lines;
static void count_line(fpp_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)user;
    (void)msg;
    atomic_fetch_add(&null_lines, 1);
}

/* "Every call that can fail returns ... plus one log line saying why": these failed silently
 * (fpp_task_keep(NULL) is even documented "with a log line"). */
Test(executor, calls_given_null_say_why_in_a_log_line)
{
    fpp_log_set(count_line, NULL, FPP_LOG_DEBUG);
    struct { const char *call; int rc; int lines; } got[8];
    int n = 0;
#define ONE(name, expr)                                                                                               \
    do {                                                                                                             \
        int before = atomic_load(&null_lines);                                                                        \
        got[n].call = name;                                                                                          \
        got[n].rc = (int)(expr);                                                                                     \
        got[n].lines = atomic_load(&null_lines) - before;                                                            \
        n++;                                                                                                         \
    } while (0)
    fpp_journal_info info;
    fpp_journal_rec rec;
    ONE("fpp_task_keep", fpp_task_keep(NULL) == NULL ? FPP_EINVAL : 0);
    ONE("fpp_executor_workers", fpp_executor_workers(NULL));
    ONE("fpp_journal_stat", fpp_journal_stat(NULL, &info));
    ONE("fpp_journal_next", fpp_journal_next(NULL, &rec));
    ONE("fpp_journal_find", fpp_journal_find(NULL, 0, &rec));
    ONE("fpp_out_set", fpp_out_set(NULL, "x", 1));
    ONE("fpp_out_alloc", fpp_out_alloc(NULL, 1) == NULL ? FPP_EINVAL : 0);
    ONE("fpp_out_fail", fpp_out_fail(NULL, "x"));
#undef ONE
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    for (int i = 0; i < n; i++) {
        cr_expect_eq(got[i].rc, FPP_EINVAL, "%s(NULL): %d", got[i].call, got[i].rc);
        cr_expect_eq(got[i].lines, 1, "%s(NULL) wrote %d log lines", got[i].call, got[i].lines);
    }
}
