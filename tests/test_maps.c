/* test_maps.c: the maps that need no iterator (tm/maps.c: range, array, lines), a map's options
 * (fpp_map_ex: fini exactly once however the map ends), and the header's counter iterator. */
#include <stdint.h>
#include <sys/stat.h>

#include "common.h"

static fpp_tm *tm_with(fpp_executor *ex, fpp_policy p, size_t max_in_flight)
{
    fpp_tm_opts to = {.error_policy = p, .monitor_interval_ms = -1, .max_in_flight = max_in_flight};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    return tm;
}

/* Runs tm to the end and returns the results (echoed arguments) by task id, in *out (malloc). */
static size_t echoed(fpp_tm *tm, unsigned char **out, size_t elem, int want_rc)
{
    size_t cap = 1024, n = 0;
    unsigned char *all = calloc(cap, elem);
    fpp_task *t;
    int rc;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
        size_t len;
        const void *r = fpp_task_result(t, &len);
        cr_assert_eq(len, elem);
        size_t id = (size_t)fpp_task_id(t);
        while (id >= cap) {
            all = realloc(all, cap * 2 * elem);
            memset(all + cap * elem, 0, cap * elem);
            cap *= 2;
        }
        memcpy(all + id * elem, r, elem);
        n++;
    }
    cr_expect_eq(rc, want_rc);
    *out = all;
    return n;
}

/* ------------------------------------------------------------- range */

static void expect_range(fpp_executor *ex, int64_t start, int64_t stop, int64_t step, size_t want_n)
{
    fpp_tm *tm = tm_with(ex, FPP_RAISE, 0);
    cr_assert_eq(fpp_map_range(tm, F_ECHO, start, stop, step), 0);
    unsigned char *got;
    size_t n = echoed(tm, &got, 8, 0);
    cr_expect_eq(n, want_n, "range(%lld, %lld, %lld): %zu tasks", (long long)start, (long long)stop, (long long)step, n);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, got + i * 8, 8);
        cr_assert_eq(v, start + (int64_t)i * step, "item %zu of range(%lld, %lld, %lld): %lld", i, (long long)start,
                     (long long)stop, (long long)step, (long long)v);
    }
    free(got);
    fpp_tm_free(tm);
}

BOTH_EXECUTORS(map_range, hands_out_each_value_once_in_order_of_ids, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    expect_range(ex, 0, 1000, 1, 1000);
    expect_range(ex, -5, 100, 7, 15);
    expect_range(ex, 10, 0, -3, 4); /* 10 7 4 1 */
    expect_range(ex, 5, 5, 1, 0);
    expect_range(ex, 5, 0, 1, 0);
    /* Near the ends of int64_t: no overflow, no wrap-around. */
    expect_range(ex, INT64_MAX - 5, INT64_MAX, 2, 3);
    expect_range(ex, INT64_MIN + 5, INT64_MIN, -2, 3);
    expect_range(ex, INT64_MAX - 1, INT64_MAX, INT64_MAX, 1);
    fpp_tm *tm = tm_with(ex, FPP_RAISE, 0);
    cr_expect_eq(fpp_map_range(tm, F_ECHO, 0, 10, 0), FPP_EINVAL);
    cr_expect_eq(fpp_map_range(tm, 9999, 0, 10, 1), FPP_ENOFN);
    cr_expect_eq(fpp_map_range(NULL, F_ECHO, 0, 10, 1), FPP_EINVAL);
    cr_expect_eq(fpp_run(tm), 0, "nothing was queued by the failed calls");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(map_range, is_lazy_a_large_range_holds_only_max_in_flight_tasks, .fini = assert_clean, .timeout = 60)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = tm_with(ex, FPP_RAISE, 64);
    cr_assert_eq(fpp_map_range(tm, F_ECHO, 0, INT64_MAX, 1), 0);
    fpp_task *t;
    size_t most = 0;
    for (int64_t i = 0; i < 20000; i++) {
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
        fpp_stats st;
        fpp_tm_stats(tm, &st);
        if (st.submitted - (uint64_t)i > most)
            most = st.submitted - (uint64_t)i;
    }
    cr_expect_leq(most, 64, "never more than max_in_flight ahead of the reader: %zu", most);
    fpp_tm_free(tm); /* stops the endless map */
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------- array */

typedef struct point { double x, y; int32_t tag; } point;

BOTH_EXECUTORS(map_array, hands_out_each_element_as_it_lies, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    enum { N = 3000 };
    point *pts = malloc(N * sizeof *pts);
    for (int i = 0; i < N; i++)
        pts[i] = (point){.x = i * 0.5, .y = -i, .tag = i * 7};
    fpp_tm *tm = tm_with(ex, FPP_RAISE, 0);
    cr_assert_eq(fpp_map_array(tm, F_ECHO, pts, N, sizeof *pts), 0);
    unsigned char *got;
    cr_expect_eq(echoed(tm, &got, sizeof(point), 0), N);
    cr_expect_eq(memcmp(got, pts, N * sizeof *pts), 0, "every element, byte for byte, at its id");
    free(got);
    cr_expect_eq(fpp_map_array(tm, F_ECHO, pts, 0, sizeof *pts), 0, "an empty array");
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(fpp_map_array(tm, F_ECHO, NULL, 3, 8), FPP_EINVAL);
    cr_expect_eq(fpp_map_array(tm, F_ECHO, pts, 3, 0), FPP_EINVAL);
    cr_expect_eq(fpp_map_array(tm, F_ECHO, pts, SIZE_MAX / 2, 4), FPP_EINVAL);
    fpp_tm_free(tm);
    free(pts);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------- lines */

static FILE *text_file(const char *s)
{
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    fputs(s, f);
    rewind(f);
    return f;
}

BOTH_EXECUTORS(map_lines, each_line_is_a_c_string_argument_labelled_with_its_text, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    FILE *f = text_file("alpha\nbeta\r\n\nsay \"hi\"\tnow\nno newline at the end");
    fpp_tm_opts to = {.error_policy = FPP_RAISE, .monitor_interval_ms = -1, .retain_completed = 1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    cr_assert_eq(fpp_map_lines(tm, F_ECHO, f), 0);
    cr_assert_eq(fpp_run(tm), 0);
    static const char *want[] = {"alpha", "beta", "", "say \"hi\"\tnow", "no newline at the end"};
    static const char *labels[] = {"alpha", "beta", NULL, "say \\\"hi\\\"\\tnow", "no newline at the end"};
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++) {
        const fpp_task *t = all[i];
        size_t id = (size_t)fpp_task_id(t), len;
        const char *r = fpp_task_result(t, &len);
        cr_assert_eq(len, strlen(want[id]) + 1, "line %zu: the line and its NUL (%zu bytes)", id, len);
        cr_expect_str_eq(r, want[id]);
        if (labels[id])
            cr_expect_str_eq(fpp_task_label(t), labels[id]);
        else
            cr_expect_null(fpp_task_label(t), "an empty line has no label");
    }
    fpp_tm_free(tm);
    fclose(f); /* after the map: the map never closes it */
    fpp_executor_free(ex);
}

Test(map_lines, a_crash_names_the_line_and_a_read_error_ends_the_map_with_fpp_esys, .fini = assert_clean,
     .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(PROC, NULL);
    FILE *f = text_file("inputs/a.bin\ninputs/b.bin\n");
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = -1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    cr_assert_eq(fpp_map_lines(tm, F_SEGV, f), 0);
    cr_assert_eq(fpp_run(tm), 0);
    const char *log = captured_logs();
    cr_expect(strstr(log, "task 1 \"inputs/b.bin\" (segv, 13-byte argument) crashed: worker ") != NULL, "%s", log);
    cr_expect(strstr(log, "while running task 1 \"inputs/b.bin\"") != NULL, "%s", log);
    fclose(f);

    /* A directory opens for reading, and its first read fails (EISDIR). */
    FILE *d = fopen("/", "r");
    cr_assert_not_null(d);
    cr_assert_eq(fpp_map_lines(tm, F_ECHO, d), 0);
    cr_expect_eq(fpp_run(tm), FPP_ESYS, "the map's error, once nothing else is left");
    cr_expect(strstr(captured_logs(), "fpp_map_lines: reading line 1: Is a directory") != NULL, "%s", captured_logs());
    cr_expect_eq(fpp_map_lines(tm, F_ECHO, NULL), FPP_EINVAL);
    fclose(d);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ---------------------------------------------------- a map's own options */

/* Counts up to end (-1: for ever), then returns err (0: the end, < 0: an error). */
typedef struct counted { int64_t next, end, item; int err, finis; } counted;

static int counted_next(void *state, const void **arg, size_t *len)
{
    counted *c = state;
    if (c->end >= 0 && c->next >= c->end)
        return c->err;
    c->item = c->next++;
    *arg = &c->item;
    *len = sizeof c->item;
    return 1;
}

static void counted_fini(void *state) { ((counted *)state)->finis++; }

Test(map_opts, fini_runs_exactly_once_however_the_map_ends, .fini = assert_clean, .timeout = 60)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_map_opts o = {.fini = counted_fini};

    /* Runs out. */
    fpp_tm *tm = tm_with(ex, FPP_RAISE, 0);
    counted a = {.end = 100};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, counted_next, &a, &o), 0);
    cr_assert_eq(fpp_run(tm), 0);
    cr_expect_eq(a.finis, 1);
    fpp_tm_free(tm);
    cr_expect_eq(a.finis, 1, "not again at fpp_tm_free");

    /* Fails: the iterator's error. */
    tm = tm_with(ex, FPP_RAISE, 0);
    counted b = {.end = 10, .err = -42};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, counted_next, &b, &o), 0);
    cr_expect_eq(fpp_run(tm), -42);
    cr_expect_eq(b.finis, 1);
    fpp_tm_free(tm);

    /* Stopped: an endless map, freed midway; a raise. */
    tm = tm_with(ex, FPP_RAISE, 16);
    counted c = {.end = -1};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, counted_next, &c, &o), 0);
    fpp_task *t;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(fpp_as_completed(tm, &t), 1);
    cr_expect_eq(c.finis, 0, "still running");
    fpp_tm_free(tm);
    cr_expect_eq(c.finis, 1, "fpp_tm_free stopped it");

    tm = tm_with(ex, FPP_RAISE, 16);
    counted d = {.end = -1};
    cr_assert_eq(fpp_map_ex(tm, F_SEGV, counted_next, &d, &o), 0);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    cr_expect_eq(d.finis, 1, "a raise stopped it");
    fpp_tm_free(tm);
    cr_expect_eq(d.finis, 1);

    /* Refused: the state is still the caller's. */
    tm = tm_with(ex, FPP_RAISE, 0);
    counted e = {.end = 5};
    cr_expect_eq(fpp_map_ex(tm, 9999, counted_next, &e, &o), FPP_ENOFN);
    cr_expect_eq(fpp_map_ex(tm, F_ECHO, NULL, &e, &o), FPP_EINVAL);
    cr_expect_eq(e.finis, 0);
    fpp_tm_free(tm);

    /* The executor freed first. */
    tm = tm_with(ex, FPP_RAISE, 16);
    counted g = {.end = -1};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, counted_next, &g, &o), 0);
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    fpp_executor_free(ex);
    cr_expect_eq(g.finis, 1, "fpp_executor_free stopped it");
    fpp_tm_free(tm);
    cr_expect_eq(g.finis, 1);
}

/* The header's counter iterator (fpp.h, at fpp_next), as written there. */
struct count { int64_t next, end, item; };
static int count_next(void *state, const void **arg, size_t *len)
{
    struct count *c = state;
    if (c->next >= c->end)
        return 0;
    c->item = c->next++;  // not `*arg = &c->next; c->next++`: that hands out next + 1
    *arg = &c->item;
    *len = sizeof c->item;
    return 1;
}

static int wrong_next(void *state, const void **arg, size_t *len)
{
    struct count *c = state;
    if (c->next >= c->end)
        return 0;
    *arg = &c->next; /* the mistake the header warns about */
    *len = sizeof c->next;
    c->next++;
    return 1;
}

Test(map_opts, the_headers_counter_iterator_hands_out_0_to_n_and_the_mistake_it_warns_about_does_not,
     .fini = assert_clean, .timeout = 60)
{
    fpp_executor *ex = mk_exec(THR, NULL);
    for (int wrong = 0; wrong < 2; wrong++) {
        fpp_tm *tm = tm_with(ex, FPP_RAISE, 0);
        struct count c = {.end = 500};
        cr_assert_eq(fpp_map(tm, F_ECHO, wrong ? wrong_next : count_next, &c), 0);
        unsigned char *got;
        cr_assert_eq(echoed(tm, &got, 8, 0), 500);
        int64_t first, last;
        memcpy(&first, got, 8);
        memcpy(&last, got + 499 * 8, 8);
        if (wrong)
            cr_expect(first == 1 && last == 500, "shifted by one: %lld..%lld", (long long)first, (long long)last);
        else
            cr_expect(first == 0 && last == 499, "%lld..%lld", (long long)first, (long long)last);
        free(got);
        fpp_tm_free(tm);
    }
    fpp_executor_free(ex);
}
