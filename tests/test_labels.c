/* test_labels.c: task labels (core/label.c) and the names every line gives a task: the stored
 * text (escaped, shortened, never more than FPP_LABEL_MAX), fpp_task_opts.label and a map's
 * labels, and each line that names a task (fpp_task_error, the log policy's line, the
 * monitor's waiting line, the progress line's last failure); and the progress line's words,
 * which are fpp_stats' (tm/progress.c). */
#include "core/job.h"
#include "tm/tm.h"

#include "common.h"

static char *label_of(const char *s) { return fpp__label_make(s, strlen(s)); }

static void expect_label(const char *in, const char *want)
{
    char *got = label_of(in);
    cr_assert_not_null(got, "label of %s", in);
    cr_expect_str_eq(got, want);
    free(got);
}

/* Valid UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF). */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n)
            return false;
        uint32_t cp = k == 1 ? c : c & (0x7F >> k);
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k;
    }
    return true;
}

/* ------------------------------------------------------------- the text */

Test(label_text, printable_text_is_kept_as_it_is)
{
    expect_label("inputs/0042.bin", "inputs/0042.bin");
    expect_label("naïve café – 日本", "naïve café – 日本");
    char *none = fpp__label_make("", 0);
    cr_expect_null(none, "an empty label is no label");
}

Test(label_text, quotes_line_breaks_controls_and_bytes_that_are_not_utf8_are_escaped)
{
    expect_label("say \"hi\"", "say \\\"hi\\\"");
    expect_label("a\\b", "a\\\\b");
    expect_label("two\nlines\r\tx", "two\\nlines\\r\\tx");
    expect_label("\033[2Jclear", "\\x1b[2Jclear");
    expect_label("del\x7f", "del\\x7f");
    expect_label("bad \xff\xfe byte", "bad \\xff\\xfe byte");
    expect_label("cut \xc3", "cut \\xc3");                /* a sequence cut short */
    expect_label("overlong \xc0\xaf", "overlong \\xc0\\xaf"); /* "/" in two bytes */
    expect_label("surrogate \xed\xa0\x80", "surrogate \\xed\\xa0\\x80");
    expect_label("too high \xf4\x90\x80\x80", "too high \\xf4\\x90\\x80\\x80");
    char nul[] = {'a', 0, 'b'};
    char *l = fpp__label_make(nul, sizeof nul);
    cr_assert_not_null(l);
    cr_expect_str_eq(l, "a\\x00b", "a NUL inside the bytes is escaped, not an end");
    free(l);
}

Test(label_text, a_long_label_keeps_its_head_and_tail_within_the_limit)
{
    char path[512];
    snprintf(path, sizeof path, "/data/%s/inputs/batch-7/0042.bin",
             "a-very-long-directory-name-that-goes-on-and-on-and-on-and-on-and-on-and-on-forever");
    char *l = label_of(path);
    cr_assert_not_null(l);
    size_t n = strlen(l);
    cr_expect_leq(n, FPP_LABEL_MAX);
    cr_expect_geq(n, FPP_LABEL_MAX - 4, "the room is used: %zu bytes", n);
    cr_expect(strncmp(l, "/data/a-very-long", 17) == 0, "the head: %s", l);
    cr_expect(strstr(l, "...") != NULL, "shortened in the middle: %s", l);
    size_t tl = strlen("inputs/batch-7/0042.bin");
    cr_expect_str_eq(l + n - tl, "inputs/batch-7/0042.bin", "the tail, with the file name: %s", l);
    free(l);

    /* A huge input costs no more than a short one: only its ends are read. */
    size_t big = 64u << 20;
    char *huge = malloc(big);
    cr_assert_not_null(huge);
    memset(huge, 'x', big);
    memcpy(huge, "start", 5);
    memcpy(huge + big - 3, "end", 3);
    l = fpp__label_make(huge, big);
    cr_assert_not_null(l);
    cr_expect(strncmp(l, "start", 5) == 0 && strcmp(l + strlen(l) - 3, "end") == 0, "%s", l);
    free(l);
    free(huge);
}

Test(label_text, any_bytes_give_printable_utf8_within_the_limit_cut_at_character_boundaries)
{
    uint64_t x = 0x9E3779B97F4A7C15u;
    unsigned char in[600];
    /* Inputs drawn from ASCII, valid multi-byte characters, escapes and garbage. */
    static const char *pieces[] = {"a", "Z", "/", " ", "\"", "\\", "\n", "\x01", "\x7f", "é", "日", "😀",
                                   "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80"};
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t want = x % 200;
        while (n < want) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const char *p = pieces[x % (sizeof pieces / sizeof pieces[0])];
            size_t k = strlen(p);
            memcpy(in + n, p, k);
            n += k;
        }
        char *l = fpp__label_make(in, n);
        if (!n) {
            cr_assert_null(l);
            continue;
        }
        cr_assert_not_null(l);
        size_t m = strlen(l);
        cr_assert_leq(m, FPP_LABEL_MAX, "round %d: %zu bytes", round, m);
        cr_assert(m > 0);
        cr_assert(valid_utf8((const unsigned char *)l, m), "round %d: not UTF-8: %s", round, l);
        for (size_t i = 0; i < m; i++) {
            unsigned char c = (unsigned char)l[i];
            cr_assert(c >= 0x20 && c != 0x7f, "round %d: control byte %#x in %s", round, c, l);
            if (c == '\\') {
                /* Every backslash starts a whole escape (never cut by the shortening). */
                char e = l[i + 1];
                cr_assert(e == '"' || e == '\\' || e == 'n' || e == 'r' || e == 't' || e == 'x',
                          "round %d: a cut escape at %zu: %s", round, i, l);
                i += e == 'x' ? 3 : 1;
                cr_assert_leq(i, m - 1 + 1, "round %d: escape past the end: %s", round, l);
            } else {
                cr_assert(c != '"', "round %d: an unescaped quote in %s", round, l);
            }
        }
        free(l);
    }
}

/* ------------------------------------------------------------ the tasks */

static fpp_task *find(fpp_tm *tm, int64_t id)
{
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    for (size_t i = 0; i < n; i++)
        if (fpp_task_id(all[i]) == id)
            return all[i];
    return NULL;
}

static fpp_tm *tm_with(fpp_executor *ex, fpp_policy p, unsigned retries)
{
    fpp_tm_opts to = {.error_policy = p, .monitor_interval_ms = -1, .retain_completed = 1, .retries = retries};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    return tm;
}

Test(labels, a_crash_names_the_task_by_its_label_in_its_error_and_the_log_line, .fini = assert_clean,
     .timeout = 60)
{
    capture_logs();
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = tm_with(ex, FPP_LOG, 0);
    fpp_task_opts o = {.label = "inputs/0042.bin"};
    cr_assert_eq(fpp_submit_ex(tm, F_SEGV, NULL, 0, &o), 0);
    fpp_task_opts none = {.label = ""};
    cr_assert_eq(fpp_submit_ex(tm, F_SEGV, NULL, 0, &none), 1);
    cr_assert_eq(fpp_submit(tm, F_ECHO, "x", 1), 2);
    cr_assert_eq(fpp_run(tm), 0);

    fpp_task *t = find(tm, 0);
    cr_assert_not_null(t);
    cr_expect_str_eq(fpp_task_label(t), "inputs/0042.bin");
    cr_expect(strstr(fpp_task_error(t), "killed by SIGSEGV while running task 0 \"inputs/0042.bin\"") != NULL, "%s",
              fpp_task_error(t));
    cr_expect_null(fpp_task_label(find(tm, 1)), "\"\" is no label");
    cr_expect(strstr(fpp_task_error(find(tm, 1)), "while running task 1") != NULL, "%s", fpp_task_error(find(tm, 1)));
    cr_expect_null(fpp_task_label(find(tm, 2)));
    const char *log = captured_logs();
    cr_expect(strstr(log, "task 0 \"inputs/0042.bin\" (segv, 0-byte argument) crashed: worker ") != NULL, "%s", log);
    cr_expect(strstr(log, "task 1 (segv, 0-byte argument) crashed: worker ") != NULL, "%s", log);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(labels, a_timeout_and_a_retried_crash_name_the_task_by_its_label, .timeout = 60)
{
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = tm_with(ex, FPP_IGNORE, 1);
    int ms = 5000;
    fpp_task_opts o = {.label = "sleeps \"for ever\"", .timeout_ms = 200};
    cr_assert_eq(fpp_submit_ex(tm, F_SLEEP, &ms, sizeof ms, &o), 0);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *t = find(tm, 0);
    cr_assert_not_null(t);
    cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT);
    cr_expect_eq(fpp_task_attempts(t), 2, "timeouts are retried by default");
    cr_expect_str_eq(fpp_task_label(t), "sleeps \\\"for ever\\\"");
    const char *e = fpp_task_error(t);
    cr_expect(strncmp(e, "timed out on 2 attempts; last: task 0 \"sleeps \\\"for ever\\\"\" exceeded its timeout of 200 ms",
                      strlen("timed out on 2 attempts; last: task 0 \"sleeps \\\"for ever\\\"\" exceeded its timeout of "
                             "200 ms")) == 0,
              "%s", e);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

static const char *name_item(void *state, const void *arg, size_t len)
{
    static char buf[64];
    (void)state;
    uint64_t v;
    cr_assert_eq(len, sizeof v);
    memcpy(&v, arg, sizeof v);
    snprintf(buf, sizeof buf, "item #%llu", (unsigned long long)v);
    return v % 3 == 0 ? buf : NULL; /* NULL: that one has no label */
}

typedef struct counter { uint64_t next, end, item; } counter;

static int count_next(void *state, const void **arg, size_t *len)
{
    counter *c = state;
    if (c->next >= c->end)
        return 0;
    c->item = c->next++;
    *arg = &c->item;
    *len = sizeof c->item;
    return 1;
}

typedef struct text_item { const char *s; size_t len; } text_item;
typedef struct texts { text_item items[8]; size_t n, at; } texts;

static int texts_next(void *state, const void **arg, size_t *len)
{
    texts *t = state;
    if (t->at == t->n)
        return 0;
    *arg = t->items[t->at].s;
    *len = t->items[t->at++].len;
    return 1;
}

Test(labels, a_map_labels_its_tasks_through_a_function_or_their_text, .fini = assert_clean, .timeout = 60)
{
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = tm_with(ex, FPP_IGNORE, 0);
    counter c = {.end = 10};
    fpp_map_opts o = {.label = name_item};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, count_next, &c, &o), 0);
    cr_assert_eq(fpp_run(tm), 0);
    for (int64_t i = 0; i < 10; i++) {
        const char *l = fpp_task_label(find(tm, i));
        if (i % 3 == 0) {
            char want[32];
            snprintf(want, sizeof want, "item #%lld", (long long)i);
            cr_expect(l && strcmp(l, want) == 0, "task %lld: %s", (long long)i, l ? l : "(none)");
        } else {
            cr_expect_null(l, "task %lld", (long long)i);
        }
    }
    fpp_tm_free(tm);

    /* The text itself: a trailing newline (and NUL) is left out, the rest escaped. */
    tm = tm_with(ex, FPP_IGNORE, 0);
    texts t = {.items = {{"plain.txt\n", 10}, {"tab\there\r\n", 10}, {"", 0}, {"with-nul\n", 10}, {"\n", 1}}, .n = 5};
    fpp_map_opts text = {.flags = FPP_MAP_LABEL_TEXT};
    cr_assert_eq(fpp_map_ex(tm, F_ECHO, texts_next, &t, &text), 0);
    cr_assert_eq(fpp_run(tm), 0);
    cr_expect_str_eq(fpp_task_label(find(tm, 0)), "plain.txt");
    cr_expect_str_eq(fpp_task_label(find(tm, 1)), "tab\\there");
    cr_expect_null(fpp_task_label(find(tm, 2)), "no text, no label");
    cr_expect_str_eq(fpp_task_label(find(tm, 3)), "with-nul");
    cr_expect_null(fpp_task_label(find(tm, 4)), "a bare newline, no label");
    size_t len;
    cr_expect_eq(memcmp(fpp_task_arg(find(tm, 1), &len), "tab\there\r\n", 10), 0, "the argument is untouched");
    cr_expect_eq(len, 10);
    fpp_tm_free(tm);

    /* Both ways at once is a mistake. */
    tm = tm_with(ex, FPP_IGNORE, 0);
    fpp_map_opts both = {.flags = FPP_MAP_LABEL_TEXT, .label = name_item};
    cr_expect_eq(fpp_map_ex(tm, F_ECHO, count_next, &c, &both), FPP_EINVAL);
    fpp_map_opts odd = {.flags = 1u << 7};
    cr_expect_eq(fpp_map_ex(tm, F_ECHO, count_next, &c, &odd), FPP_EINVAL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

BOTH_EXECUTORS(labels, the_monitor_names_a_labelled_task_that_holds_ordered_results_back, .timeout = 60)
{
    capture_logs();
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &eo);
    fpp_tm_opts to = {.error_policy = FPP_RAISE, .monitor_interval_ms = 200, .flags = FPP_TM_ORDERED};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    int ms = 1500;
    fpp_task_opts o = {.label = "the slow one"};
    cr_assert_eq(fpp_submit_ex(tm, F_SLEEP, &ms, sizeof ms, &o), 0);
    for (int i = 1; i < 10; i++)
        cr_assert_eq(fpp_submit(tm, F_ECHO, "x", 1), i);
    fpp_task *t;
    int64_t expect = 0;
    while (fpp_as_completed(tm, &t) == 1)
        cr_expect_eq(fpp_task_id(t), expect++);
    cr_expect_eq(expect, 10);
    const char *log = captured_logs();
    cr_expect(strstr(log, "waiting on task 0 \"the slow one\" for ") != NULL, "%s", log);
    cr_expect(strstr(log, "finished task(s) held back)") != NULL, "%s", log);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------- the progress line's words */

static const char *line_of(const fpp__progress_snap *s, int width)
{
    static char buf[512];
    fpp__progress_format(buf, sizeof buf, s, width);
    return buf;
}

Test(progress_words, the_line_counts_outcomes_in_fpp_stats_words_and_leaves_zeros_out)
{
    fpp__progress_snap s = {.finished = 41200, .total = 100000, .rate = 12345};
    cr_expect_str_eq(line_of(&s, 0), "[#####.........] 41% 41,200/100,000 finished, 12.3k/s, ETA 0:05");
    s.failed = 3;
    s.crashed = 20;
    s.timed_out = 6;
    s.cancelled = 1;
    s.last_failure = "task 17 \"in/0042.bin\" crashed";
    cr_expect_str_eq(line_of(&s, 0), "[#####.........] 41% 41,200/100,000 finished, 3 failed, 20 crashed, 6 timed out, "
                                     "1 cancelled, 12.3k/s, ETA 0:05, last: task 17 \"in/0042.bin\" crashed");
    fpp__progress_snap u = {.finished = 7, .crashed = 1, .rate = -1, .waiting = "task 3 \"x\"", .wait_s = 12.4};
    cr_expect_str_eq(line_of(&u, 0), "7 finished, 1 crashed, -/s, waiting on task 3 \"x\" for 12 s");
    /* The words are fpp_stats' and the log lines': one vocabulary. */
    cr_expect_str_eq(fpp_status_name(FPP_TIMEOUT), "timed out");
    cr_expect_str_eq(fpp_status_name(FPP_CRASHED), "crashed");
    cr_expect_str_eq(fpp_status_name(FPP_FAILED), "failed");
}

Test(progress_words, the_line_is_cut_to_the_width_in_columns_never_inside_a_character)
{
    fpp__progress_snap s = {.finished = 5, .rate = 1, .failed = 1, .last_failure = "task 4 \"日本語のファイル名.txt\" failed"};
    const char *whole = line_of(&s, 0);
    size_t cols = 0;
    for (const char *p = whole; *p; p++)
        cols += ((unsigned char)*p & 0xC0) != 0x80;
    for (int w = 2; w < (int)cols + 3; w++) {
        const char *l = line_of(&s, w);
        size_t c = 0, n = strlen(l);
        for (size_t i = 0; i < n; i++)
            c += ((unsigned char)l[i] & 0xC0) != 0x80;
        cr_assert_leq(c, (size_t)w - 1, "width %d: %zu columns: %s", w, c, l);
        cr_assert(valid_utf8((const unsigned char *)l, n), "width %d: a character cut in two: %s", w, l);
        cr_assert_eq(strncmp(l, whole, n), 0, "a prefix of the whole line");
        if ((size_t)w > cols)
            cr_assert_str_eq(l, whole, "width %d leaves it whole", w);
    }
}
