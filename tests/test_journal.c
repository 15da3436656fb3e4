/* test_journal.c: the task journal (lib/tm/journal.c): what it records, resume (skips, reruns of
 * failures, ordered maps, submits), its format's defences (a torn tail, another run's journal,
 * a file that is no journal, a second writer), its failures (a full disk, a failed fdatasync),
 * Ctrl-C then resume, retries, a forked child, the flusher writing while the caller is away or
 * asleep in a call, the read API and fpp-joblog, and a 20 M-task map SIGKILLed at random
 * moments 100 times and resumed until done.
 *
 * Every task here counts its runs per id in J_RUNS (shared memory, seen by every worker of every
 * process), so "ran again" and "never ran" are facts, not timings. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "common.h"
#include "tm/tm.h"

#define MAXIDS ((uint64_t)21 << 20) /* ids counted in J_RUNS */
enum { HEAL = 4000, TOTAL = 4001 }; /* T_SHARED words: failures heal; runs of F_COUNT (all ids) */

static _Atomic unsigned char *J_RUNS;
static int F_COUNT, F_JFAIL, F_JFLAKY, F_CSLOW;

static uint64_t id_of(const void *arg, size_t len)
{
    uint64_t id = 0;
    if (len >= 8)
        memcpy(&id, arg, 8);
    return id;
}

static void ran(uint64_t id)
{
    if (id < MAXIDS)
        atomic_fetch_add_explicit(&J_RUNS[id], 1, memory_order_relaxed);
}

/* u64 id: counts the run; result: the id. */
static int count(const void *arg, size_t len, fpp_out *out)
{
    uint64_t id = id_of(arg, len);
    ran(id);
    atomic_fetch_add_explicit(&T_SHARED[TOTAL], 1, memory_order_relaxed);
    return fpp_out_set(out, &id, 8);
}

/* u64 id: counts the run, takes 200 us; result: the id. */
static int cslow(const void *arg, size_t len, fpp_out *out)
{
    uint64_t id = id_of(arg, len);
    ran(id);
    usleep(200);
    return fpp_out_set(out, &id, 8);
}

/* u64 id: fails ("bad id N") when id % 10 == 3, unless T_SHARED[HEAL]. */
static int jfail(const void *arg, size_t len, fpp_out *out)
{
    uint64_t id = id_of(arg, len);
    ran(id);
    if (id % 10 == 3 && !atomic_load(&T_SHARED[HEAL]))
        return fpp_out_fail(out, "bad id %" PRIu64, id), 1;
    return fpp_out_set(out, &id, 8);
}

/* {u64 id, u32 bad, u32 how}: attempt k = the id's run count; the first `bad` go wrong (how 0:
 * the worker kills itself, 1: fpp_out_fail). */
typedef struct flaky { uint64_t id; uint32_t bad, how; } flaky;
static int jflaky(const void *arg, size_t len, fpp_out *out)
{
    flaky f;
    if (len != sizeof f)
        return 1;
    memcpy(&f, arg, sizeof f);
    unsigned k = (unsigned)atomic_fetch_add(&J_RUNS[f.id], 1) + 1;
    if (k <= f.bad) {
        if (f.how == 0)
            raise(SIGKILL);
        return fpp_out_fail(out, "attempt %u of id %" PRIu64 " fails", k, f.id), 1;
    }
    return fpp_out_set(out, &f.id, 8);
}

__attribute__((constructor)) static void journal_setup(void)
{
    void *m = mmap(NULL, MAXIDS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    J_RUNS = m == MAP_FAILED ? NULL : m;
    F_COUNT = fpp_register("count", count);
    F_JFAIL = fpp_register("jfail", jfail);
    F_JFLAKY = fpp_register("jflaky", jflaky);
    F_CSLOW = fpp_register("cslow", cslow);
}

/* ------------------------------------------------------------------ helpers */

static char tdir[128];

/* Removes the test's directory (unmounting it if a test mounted it). At exit too: a failed
 * assertion ends a test before its own dir_done. */
static void dir_remove(void)
{
    if (!tdir[0])
        return;
    umount2(tdir, MNT_DETACH); /* fails harmlessly where nothing is mounted */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    int rc = system(cmd);
    (void)rc;
    tdir[0] = 0;
}

static void dir_new(void)
{
    cr_assert_not_null(J_RUNS, "shared run counters");
    snprintf(tdir, sizeof tdir, "/tmp/fpp-journal-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
    atexit(dir_remove); /* the forked children here leave with _exit: only the test runs it */
    shared_reset();
}

static const char *in_dir(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tdir, name);
    return p[k];
}

static void dir_done(void)
{
    char was[sizeof tdir];
    memcpy(was, tdir, sizeof was);
    dir_remove();
    cr_expect_neq(access(was, F_OK), 0, "%s removed (nothing of the test left in /tmp)", was);
}

static void runs_reset(uint64_t n) { memset((void *)J_RUNS, 0, n); }

typedef struct ids { uint64_t next, end, cur; fpp_tm *interrupt; uint64_t interrupt_at; } ids;

static int ids_next(void *state, const void **arg, size_t *len)
{
    ids *it = state;
    if (it->next >= it->end)
        return 0;
    if (it->interrupt && it->next == it->interrupt_at)
        fpp_tm_interrupt(it->interrupt); /* as Ctrl-C would, at a known item */
    it->cur = it->next++;
    *arg = &it->cur;
    *len = 8;
    return 1;
}

static fpp_tm *jtm(fpp_executor *ex, const char *path, fpp_policy pol, unsigned flags)
{
    fpp_tm_opts to = {.error_policy = pol, .monitor_interval_ms = -1, .journal = path, .journal_key = "test",
                      .flags = flags};
    fpp_tm *tm;
    int rc = fpp_tm_create(&tm, ex, &to);
    cr_assert_eq(rc, 0, "fpp_tm_create: %s", fpp_err_name(rc));
    return tm;
}

/* Maps fn over ids [0, n) and hands out everything; *handed: tasks handed out. */
static int map_all(fpp_tm *tm, int fn, uint64_t n, uint64_t *handed)
{
    ids it = {0, n, 0, NULL, 0};
    cr_assert_eq(fpp_map(tm, fn, ids_next, &it), 0);
    fpp_task *t;
    int rc;
    *handed = 0;
    while ((rc = fpp_as_completed(tm, &t)) == 1)
        (*handed)++;
    return rc;
}

static fpp_journal_info jstat(const char *path)
{
    fpp_journal *j;
    int rc = fpp_journal_open(&j, path);
    cr_assert_eq(rc, 0, "fpp_journal_open(%s): %s", path, fpp_err_name(rc));
    fpp_journal_info in;
    cr_assert_eq(fpp_journal_stat(j, &in), 0);
    fpp_journal_close(j);
    in.key = NULL; /* its strings died with j */
    in.fn_names = NULL;
    return in;
}

/* Iterating the journal gives every id in [0, n) exactly once, and no other. */
static void each_id_once(const char *path, uint64_t n)
{
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    uint64_t *seen = calloc(n / 64 + 1, 8), got = 0, twice = 0, stray = 0;
    cr_assert_not_null(seen);
    fpp_journal_rec r;
    int rc;
    while ((rc = fpp_journal_next(j, &r)) == 1) {
        got++;
        if (r.id < 0 || (uint64_t)r.id >= n) {
            stray++;
            continue;
        }
        uint64_t b = UINT64_C(1) << (r.id & 63);
        twice += (seen[r.id / 64] & b) != 0;
        seen[r.id / 64] |= b;
    }
    cr_assert_eq(rc, 0, "iteration ended with %s", fpp_err_name(rc));
    cr_expect_eq(twice, 0, "%" PRIu64 " id(s) recorded twice", twice);
    cr_expect_eq(stray, 0, "%" PRIu64 " id(s) outside 0..%" PRIu64, stray, n - 1);
    cr_expect_eq(got, n, "%" PRIu64 " outcomes for %" PRIu64 " ids", got, n);
    free(seen);
    fpp_journal_close(j);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ------------------------------------------------------------ what is recorded */

Test(journal, crc32c_is_castagnoli)
{
    /* The check value of CRC-32C (RFC 3720, B.4): "123456789" -> 0xE3069283; and in pieces. */
    cr_expect_eq(fpp__crc32c(0, "123456789", 9), 0xE3069283u);
    cr_expect_eq(fpp__crc32c(fpp__crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    unsigned char zeros[32] = {0};
    cr_expect_eq(fpp__crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4: 32 bytes of zeros */
}

BOTH_EXECUTORS(journal, records_every_outcome_and_a_rerun_skips_them_all, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 20000 };
    runs_reset(N);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_IGNORE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_JFAIL, N, &handed), 0);
    cr_expect_eq(handed, N);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, N - N / 10);
    cr_expect_eq(st.failed, N / 10);
    cr_expect_eq(st.skipped, 0);
    fpp_tm_free(tm);

    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.failed, N / 10);
    cr_expect_eq(in.duplicates, 0);
    cr_expect_eq(in.torn_bytes, 0);
    cr_expect_eq(in.watermark, N);
    cr_expect_eq(in.open, 0);
    each_id_once(path, N);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    fpp_journal_rec r;
    cr_assert_eq(fpp_journal_find(j, 13, &r), 1);
    cr_expect_eq(r.status, FPP_FAILED);
    cr_expect_str_eq(r.error, "bad id 13");
    cr_expect_str_eq(r.fn_name, "jfail");
    cr_expect_eq(r.attempts, 1);
    cr_expect_eq(r.arg_len, 8);
    cr_expect_eq(r.detail, 1);
    cr_assert_eq(fpp_journal_find(j, 14, &r), 1);
    cr_expect_eq(r.status, FPP_DONE);
    cr_expect_null(r.error);
    cr_expect_str_eq(r.fn_name, "jfail", "a range's ids carry their function too");
    cr_expect_eq(fpp_journal_find(j, N, &r), 0, "an id never issued is not finished");
    cr_expect_eq(fpp_journal_find(j, -1, &r), FPP_EINVAL);
    fpp_journal_close(j);

    /* A rerun: nothing runs, nothing is handed out, everything is counted skipped. */
    runs_reset(N);
    capture_logs();
    tm = jtm(ex, path, FPP_IGNORE, 0);
    cr_assert_eq(map_all(tm, F_JFAIL, N, &handed), 0);
    cr_expect_eq(handed, 0, "skipped tasks are not handed out again");
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.skipped, N);
    cr_expect_eq(st.submitted, 0);
    cr_expect_eq(st.done + st.failed, 0);
    fpp_tm_free(tm);
    for (uint64_t i = 0; i < N; i++)
        if (J_RUNS[i])
            cr_assert_fail("id %" PRIu64 " ran again", i);
    cr_expect(strstr(captured_logs(), "resuming: 20000 task(s) finished in earlier runs (2000 of them failed)") != NULL,
              "%s", captured_logs());
    in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.duplicates, 0);
    fpp_executor_free(ex);
    dir_done();
}

BOTH_EXECUTORS(journal, rerun_failed_runs_only_the_failures_and_supersedes_them, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 5000 };
    runs_reset(N);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_IGNORE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_JFAIL, N, &handed), 0);
    fpp_tm_free(tm);
    cr_expect_eq(jstat(path).failed, N / 10);

    runs_reset(N);
    atomic_store(&T_SHARED[HEAL], 1);
    tm = jtm(ex, path, FPP_IGNORE, FPP_TM_RERUN_FAILED);
    cr_assert_eq(map_all(tm, F_JFAIL, N, &handed), 0);
    cr_expect_eq(handed, N / 10, "the failures are run and handed out again");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, N / 10);
    cr_expect_eq(st.skipped, N - N / 10);
    fpp_tm_free(tm);
    for (uint64_t i = 0; i < N; i++)
        if (J_RUNS[i] != (i % 10 == 3))
            cr_assert_fail("id %" PRIu64 " ran %d time(s) on the rerun", i, (int)J_RUNS[i]);
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.failed, 0, "the reruns' successes supersede the failures");
    cr_expect_eq(in.superseded, N / 10);
    cr_expect_eq(in.duplicates, 0);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    fpp_journal_rec r;
    cr_assert_eq(fpp_journal_find(j, 3, &r), 1);
    cr_expect_eq(r.status, FPP_DONE, "find gives the latest outcome");
    /* Iteration gives the history: the failure, then the success. */
    int seen3 = 0;
    fpp_status first = FPP_CANCELLED;
    while (fpp_journal_next(j, &r) == 1)
        if (r.id == 3 && seen3++ == 0)
            first = r.status;
    cr_expect_eq(seen3, 2);
    cr_expect_eq(first, FPP_FAILED);
    fpp_journal_close(j);
    fpp_executor_free(ex);
    dir_done();
}

BOTH_EXECUTORS(journal, results_are_stored_up_to_the_size_asked, .timeout = 60)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .journal = path, .journal_result_max = 64};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    enum { N = 300 };
    for (uint64_t i = 0; i < N; i++) {
        stamp_arg a = {i, i % 3 == 0 ? 100 : i % 3 == 1 ? 64 : 0};
        cr_assert_eq(fpp_submit(tm, F_STAMP, &a, sizeof a), (int64_t)i);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    for (uint64_t i = 0; i < N; i++) {
        fpp_journal_rec r;
        cr_assert_eq(fpp_journal_find(j, (int64_t)i, &r), 1);
        cr_assert_eq(r.status, FPP_DONE);
        uint64_t len = i % 3 == 0 ? 100 : i % 3 == 1 ? 64 : 0;
        cr_assert_eq(r.result_len, len, "id %" PRIu64 ": the result's size is always recorded", i);
        cr_assert_eq(r.detail, 1, "a stored result makes a record of its own");
        if (len > 64) {
            cr_assert_null(r.result, "id %" PRIu64 ": over journal_result_max, not stored", i);
            continue;
        }
        cr_assert_not_null(r.result, "id %" PRIu64 ": stored", i);
        for (uint64_t b = 0; b < len; b++)
            cr_assert_eq(((const unsigned char *)r.result)[b], stamp_byte(i, b));
    }
    fpp_journal_close(j);
    fpp_executor_free(ex);
    dir_done();
}

/* ---------------------------------------------------------- the format's defences */

Test(journal, another_runs_journal_is_refused_and_left_untouched, .fini = assert_clean)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_IGNORE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_COUNT, 100, &handed), 0);
    fpp_tm_free(tm);
    uint64_t size = file_size(path);

    capture_logs();
    fpp_tm_opts to = {.monitor_interval_ms = -1, .journal = path, .journal_key = "another key"};
    cr_expect_eq(fpp_tm_create(&tm, ex, &to), FPP_EMISMATCH);
    cr_expect_null(tm);
    cr_expect(strstr(captured_logs(), "belongs to another run: its key is \"test\", this run's is \"another key\"") != NULL,
              "%s", captured_logs());
    cr_expect_eq(file_size(path), size, "refused, never applied nor written");

    /* Other functions: one more registered (possible once no executor exists). */
    fpp_executor_free(ex);
    cr_assert_geq(fpp_register("one_more", jfail), 0);
    ex = mk_exec(THR, NULL);
    cr_expect_eq(fpp_tm_create(&tm, ex, &(fpp_tm_opts){.journal = path, .journal_key = "test"}), FPP_EMISMATCH);
    cr_expect(strstr(captured_logs(), "is none, this run's is \"one_more\"") != NULL, "%s", captured_logs());
    cr_expect_eq(file_size(path), size);

    /* A file that is no journal: refused, untouched. */
    const char *other = in_dir("notes.txt");
    FILE *f = fopen(other, "w");
    fputs("my notes, not a journal\n", f);
    fclose(f);
    cr_expect_eq(fpp_tm_create(&tm, ex, &(fpp_tm_opts){.journal = other}), FPP_EJOURNAL);
    cr_expect(strstr(captured_logs(), "not an fpp journal") != NULL, "%s", captured_logs());
    cr_expect_eq(file_size(other), 24);
    fpp_journal *j;
    cr_expect_eq(fpp_journal_open(&j, other), FPP_EJOURNAL);
    cr_expect_null(j);
    fpp_executor_free(ex);
    dir_done();
}

Test(journal, one_writer_at_a_time, .fini = assert_clean)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex1 = mk_exec(THR, NULL), *ex2 = mk_exec(THR, NULL);
    fpp_tm *tm1 = jtm(ex1, path, FPP_IGNORE, 0), *tm2;
    capture_logs();
    cr_expect_eq(fpp_tm_create(&tm2, ex2, &(fpp_tm_opts){.journal = path, .journal_key = "test"}), FPP_ESTATE);
    cr_expect(strstr(captured_logs(), "in use by another task manager") != NULL, "%s", captured_logs());
    fpp_tm_free(tm1);
    tm2 = jtm(ex2, path, FPP_IGNORE, 0); /* free now */
    fpp_tm_free(tm2);
    fpp_executor_free(ex1);
    fpp_executor_free(ex2);
    dir_done();
}

/* The offset of the last TASK record whose id is the one it returns (walking the frames:
 * u32 length, u8 type, payload, u32 CRC; after the 8-byte magic). */
static uint64_t last_task_record(const char *path, int64_t *id, uint64_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 8, SEEK_SET);
    uint64_t at = 8, last = 0;
    for (;;) {
        unsigned char h[13];
        uint32_t n;
        if (fread(h, 1, 5, f) != 5)
            break;
        memcpy(&n, h, 4);
        if (h[4] == 4 && fread(h + 5, 1, 8, f) == 8) {
            last = at;
            memcpy(id, h + 5, 8);
            *len = 5 + n + 4;
            fseek(f, (long)(at + 5 + n + 4), SEEK_SET);
        } else {
            fseek(f, (long)(at + 5 + n + 4), SEEK_SET);
        }
        at += 5 + n + 4;
    }
    fclose(f);
    cr_assert_gt(last, 0, "a TASK record");
    return last;
}

static void torn_tail(kind k, bool flip)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 400 };
    runs_reset(N);
    fpp_executor *ex = mk_exec(k, NULL);
    /* Results stored: every task a record of its own, the last one in the file cuttable. */
    fpp_tm_opts to = {.monitor_interval_ms = -1, .journal = path, .journal_result_max = 8};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_COUNT, N, &handed), 0);
    fpp_tm_free(tm);
    int64_t victim = -1;
    uint64_t rlen, at = last_task_record(path, &victim, &rlen);
    uint64_t size = file_size(path);
    if (flip) {
        /* One byte of the record's payload changed: its CRC no longer holds. */
        int fd = open(path, O_RDWR);
        unsigned char c;
        cr_assert_eq(pread(fd, &c, 1, (off_t)(at + 20)), 1);
        c ^= 0x40;
        cr_assert_eq(pwrite(fd, &c, 1, (off_t)(at + 20)), 1);
        close(fd);
    } else {
        /* A crash in the middle of writing it. */
        cr_assert_eq(truncate(path, (off_t)(at + rlen / 2)), 0);
        size = at + rlen / 2;
    }
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.torn_bytes, size - at, "the read API sees the tail and ignores it");
    cr_expect_eq(in.finished, N - 1);
    cr_expect_eq(file_size(path), size, "reading never writes");

    runs_reset(N);
    capture_logs();
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    char want[128];
    snprintf(want, sizeof want, "cut a torn tail of %" PRIu64 " byte(s) at offset %" PRIu64, size - at, at);
    cr_expect(strstr(captured_logs(), want) != NULL, "%s\n%s", want, captured_logs());
    cr_assert_eq(map_all(tm, F_COUNT, N, &handed), 0);
    cr_expect_eq(handed, 1, "only the task whose record was torn runs again");
    fpp_tm_free(tm);
    for (int64_t i = 0; i < N; i++)
        cr_assert_eq(J_RUNS[i], i == victim, "id %" PRId64 " ran %d time(s)", i, (int)J_RUNS[i]);
    in = jstat(path);
    cr_expect_eq(in.torn_bytes, 0);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.duplicates, 0);
    each_id_once(path, N);
    fpp_executor_free(ex);
    dir_done();
}

Test(journal, a_torn_tail_is_cut_and_its_task_runs_again_process, .fini = assert_clean) { torn_tail(PROC, false); }
Test(journal, a_torn_tail_is_cut_and_its_task_runs_again_thread, .fini = assert_clean) { torn_tail(THR, false); }
Test(journal, a_record_with_a_bad_crc_at_the_end_is_a_torn_tail, .fini = assert_clean) { torn_tail(PROC, true); }

/* --------------------------------------------------------------- failures */

Test(journal, a_full_disk_stops_the_run_with_fpp_ejournal, .fini = assert_clean, .timeout = 120)
{
    dir_new();
    if (mount("fpp-journal-test", tdir, "tmpfs", MS_NOSUID | MS_NODEV, "size=512k") != 0) {
        int e = errno;
        dir_done();
        cr_skip_test("cannot mount a small tmpfs to fill (%s): this test needs root", strerror(e));
    }
    const char *path = in_dir("j");
    enum { N = 20000 };
    runs_reset(N);
    fpp_executor *ex = mk_exec(PROC, NULL);
    /* Every task an 81-byte record (its result stored): 512 KiB hold about 6,400 of them, and
     * at 200 us a task a write of 10 ms holds about 100: the disk fills after many writes. */
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .journal = path, .journal_result_max = 8,
                      .journal_key = "disk"};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    capture_logs();
    uint64_t handed;
    int rc = map_all(tm, F_CSLOW, N, &handed);
    cr_expect_eq(rc, FPP_EJOURNAL, "the run stops: %s", fpp_err_name(rc));
    cr_expect(strstr(captured_logs(), "No space left on device; the run stops (FPP_EJOURNAL)") != NULL, "%s",
              captured_logs());
    fpp_task *t;
    cr_expect_eq(fpp_as_completed(tm, &t), FPP_EJOURNAL, "every later call says so");
    cr_expect_eq(fpp_submit(tm, F_COUNT, &(uint64_t){1}, 8), FPP_EJOURNAL);
    cr_expect_eq(fpp_run(tm), FPP_EJOURNAL);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_lt(st.done, N);
    fpp_tm_free(tm);

    fpp_journal_info in = jstat(path);
    cr_expect_gt(in.finished, 0);
    cr_expect_leq(in.finished, st.done, "nothing is recorded that did not finish");
    cr_expect_eq(in.torn_bytes, 0, "a partial write is cut back to whole records");
    cr_expect_eq(in.duplicates, 0);

    /* Room again: the run resumes where the journal says and ends with every id once. */
    cr_assert_eq(mount(NULL, tdir, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, "size=16m"), 0, "%s", strerror(errno));
    unsigned char before[N];
    for (int i = 0; i < N; i++)
        before[i] = J_RUNS[i];
    tm = NULL;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    cr_assert_eq(map_all(tm, F_CSLOW, N, &handed), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.duplicates, 0);
    each_id_once(path, N);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    fpp_journal_rec r;
    uint64_t recorded = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_geq(J_RUNS[i], 1, "id %d never ran", i);
        if (before[i] && J_RUNS[i] == before[i])
            recorded++;
        cr_assert_eq(fpp_journal_find(j, i, &r), 1);
    }
    fpp_journal_close(j);
    cr_expect_geq(recorded, 1);
    dir_done(); /* unmounts it */
}

Test(journal, a_failed_fdatasync_stops_the_run_with_fpp_ejournal, .fini = assert_clean, .timeout = 60)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_IGNORE, 0); /* created (its header made durable) */
    fpp_tm_free(tm);
    /* From now on fdatasync fails with EIO in this thread and the threads it starts: the
     * journal's flusher, started by fpp_tm_create. */
    fail_syscall(SYS_fdatasync, EIO);
    capture_logs();
    tm = jtm(ex, path, FPP_IGNORE, 0);
    uint64_t handed;
    int rc = map_all(tm, F_COUNT, 200000, &handed);
    cr_expect_eq(rc, FPP_EJOURNAL, "%s", fpp_err_name(rc));
    cr_expect(strstr(captured_logs(), "fdatasync: Input/output error; the run stops (FPP_EJOURNAL)") != NULL, "%s",
              captured_logs());
    cr_expect_eq(fpp_run(tm), FPP_EJOURNAL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    dir_done();
}

/* ------------------------------------------------------------ Ctrl-C, retries */

/* In a child of its own process group: maps F_COUNT over n ids with the journal; reports
 * {rc, stats.done, journal finished right after fpp_run returned} on fd. */
static void sigint_child(kind k, const char *path, uint64_t n, int fd)
{
    setpgid(0, 0);
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    fpp_executor *ex;
    fpp_executor_opts o = {.workers = 2};
    if ((k == PROC ? fpp_process_executor(&ex, &o) : fpp_thread_executor(&ex, &o)) != 0)
        _exit(2);
    fpp_tm *tm;
    fpp_tm_opts to = {.monitor_interval_ms = -1, .journal = path, .journal_key = "test"};
    if (fpp_tm_create(&tm, ex, &to) != 0)
        _exit(3);
    ids it = {0, n, 0, NULL, 0};
    fpp_map(tm, F_COUNT, ids_next, &it);
    int rc = fpp_run(tm);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    fpp_journal *j;
    fpp_journal_info in = {0};
    if (fpp_journal_open(&j, path) == 0) { /* before fpp_tm_free: what Ctrl-C made durable */
        fpp_journal_stat(j, &in);
        fpp_journal_close(j);
    }
    int64_t report[3] = {rc, (int64_t)st.done, (int64_t)in.finished};
    ssize_t w = write(fd, report, sizeof report);
    (void)w;
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    _exit(0);
}

BOTH_EXECUTORS(journal, ctrl_c_makes_it_durable_and_a_rerun_does_the_rest, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    const uint64_t N = 3000000;
    runs_reset(N);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        sigint_child(k, path, N, p[1]);
    }
    close(p[1]);
    /* Ctrl-C once a tenth has run. */
    cr_assert(wait_shared(TOTAL, (long)N / 10, 60000), "the child runs tasks");
    cr_assert_eq(kill(-pid, SIGINT), 0);
    int64_t rep[3] = {0};
    cr_assert_eq(read(p[0], rep, sizeof rep), (ssize_t)sizeof rep);
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_expect_eq(rep[0], FPP_EINTR);
    cr_expect_lt(rep[1], (int64_t)N, "stopped before the end");
    cr_expect_eq(rep[2], rep[1], "every task that finished is in the journal when fpp_run returns FPP_EINTR");

    unsigned char *before = malloc(N), *recorded = calloc(N, 1);
    memcpy(before, (void *)J_RUNS, N);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0); /* what the first run recorded */
    for (uint64_t i = 0; i < N; i++)
        recorded[i] = fpp_journal_find(j, (int64_t)i, NULL) == 1;
    fpp_journal_close(j);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_COUNT, N, &handed), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.skipped, (uint64_t)rep[2]);
    cr_expect_eq(handed, N - (uint64_t)rep[2]);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    uint64_t again = 0;
    for (uint64_t i = 0; i < N; i++) {
        cr_assert_geq(J_RUNS[i], 1, "id %" PRIu64 " never ran", i);
        if (recorded[i])
            cr_assert_eq(J_RUNS[i], before[i], "id %" PRIu64 " was recorded, then ran again", i);
        else
            again += before[i]; /* in flight at Ctrl-C: ran (or started) and ran again */
    }
    cr_log_info("Ctrl-C after %" PRId64 " tasks: %" PRIu64 " run(s) of unrecorded tasks repeated", rep[1], again);
    free(before);
    free(recorded);
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.duplicates, 0);
    each_id_once(path, N);
    dir_done();
}

BOTH_EXECUTORS(journal, retries_record_the_final_outcome_and_its_attempts, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 200 };
    runs_reset(N);
    /* Process executor: the worker kills itself (a crash); thread executor: a failure, retried
     * with FPP_TM_RETRY_FAILED. id % 5 == 0: one bad attempt; id % 50 == 1: five. */
    uint32_t how = k == PROC ? 0 : 1;
    unsigned flags = k == PROC ? 0 : FPP_TM_RETRY_FAILED;
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .journal = path, .retries = 2,
                      .flags = flags};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (uint64_t i = 0; i < N; i++) {
        flaky f = {i, i % 5 == 0 ? 1 : i % 50 == 1 ? 5 : 0, how};
        cr_assert_eq(fpp_submit(tm, F_JFLAKY, &f, sizeof f), (int64_t)i);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0);
    fpp_status bad = k == PROC ? FPP_CRASHED : FPP_FAILED;
    for (uint64_t i = 0; i < N; i++) {
        fpp_journal_rec r;
        cr_assert_eq(fpp_journal_find(j, (int64_t)i, &r), 1);
        if (i % 5 == 0) {
            cr_expect_eq(r.status, FPP_DONE);
            cr_expect_eq(r.attempts, 2, "id %" PRIu64, i);
            cr_expect_eq(r.detail, 1, "a retried task is a record of its own");
        } else if (i % 50 == 1) {
            cr_expect_eq(r.status, bad);
            cr_expect_eq(r.attempts, 3);
            cr_expect(strstr(r.error, "on 3 attempts; last: ") != NULL, "%s", r.error);
            if (k == PROC)
                cr_expect_eq(r.signo, SIGKILL);
        } else {
            cr_expect_eq(r.status, FPP_DONE);
            cr_expect_eq(r.attempts, 1);
        }
    }
    fpp_journal_close(j);
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.failed, N / 50);
    cr_expect_eq(in.duplicates, 0);

    /* Resumed: the failures stay failures (skipped)... */
    to.journal = path;
    unsigned char before[N];
    memcpy(before, (void *)J_RUNS, N);
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (uint64_t i = 0; i < N; i++) {
        flaky f = {i, i % 5 == 0 ? 1 : i % 50 == 1 ? 5 : 0, how};
        fpp_submit(tm, F_JFLAKY, &f, sizeof f);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    cr_expect_eq(memcmp(before, (void *)J_RUNS, N), 0, "nothing ran");
    /* ...unless asked: attempts 4 and 5 go wrong, the 6th (a 3rd here) succeeds. */
    to.flags |= FPP_TM_RERUN_FAILED;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    for (uint64_t i = 0; i < N; i++) {
        flaky f = {i, i % 5 == 0 ? 1 : i % 50 == 1 ? 5 : 0, how};
        fpp_submit(tm, F_JFLAKY, &f, sizeof f);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.done, N / 50);
    cr_expect_eq(st.retried, 2 * (N / 50));
    fpp_tm_free(tm);
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(J_RUNS[i], before[i] + (i % 50 == 1 ? 3 : 0), "id %" PRIu64, i);
    in = jstat(path);
    cr_expect_eq(in.failed, 0);
    cr_expect_eq(in.superseded, N / 50);
    cr_expect_eq(in.duplicates, 0);
    fpp_executor_free(ex);
    dir_done();
}

/* ------------------------------------------------------------- resume's forms */

BOTH_EXECUTORS(journal, an_ordered_map_resumes_in_order_without_the_finished_ids, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 20000 };
    runs_reset(N);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    ids it = {0, N, 0, tm, N / 2};
    cr_assert_eq(fpp_map(tm, F_COUNT, ids_next, &it), 0);
    cr_assert_eq(fpp_run(tm), FPP_EINTR);
    fpp_tm_free(tm);
    uint64_t done1 = jstat(path).finished;
    cr_assert_gt(done1, 0);
    cr_assert_lt(done1, N);

    tm = jtm(ex, path, FPP_RAISE, FPP_TM_ORDERED);
    ids it2 = {0, N, 0, NULL, 0};
    cr_assert_eq(fpp_map(tm, F_COUNT, ids_next, &it2), 0);
    fpp_task *t;
    int64_t last = -1;
    uint64_t handed = 0;
    int rc;
    fpp_journal *j;
    cr_assert_eq(fpp_journal_open(&j, path), 0); /* as the first run left it */
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert_gt(id, last, "in id order");
        cr_assert_eq(fpp_journal_find(j, id, NULL), 0, "id %" PRId64 " was finished already", id);
        last = id;
        handed++;
    }
    fpp_journal_close(j);
    cr_expect_eq(rc, 0);
    cr_expect_eq(handed, N - done1);
    fpp_tm_free(tm);
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, N);
    cr_expect_eq(in.duplicates, 0);
    fpp_executor_free(ex);
    dir_done();
}

BOTH_EXECUTORS(journal, resumed_submits_keep_their_ids_and_skipped_ones_are_neither_waited_nor_cancelled)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 500 };
    runs_reset(N + 50);
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(fpp_submit(tm, F_COUNT, &i, 8), (int64_t)i);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);

    capture_logs();
    tm = jtm(ex, path, FPP_RAISE, 0);
    for (uint64_t i = 0; i < N + 50; i++)
        cr_assert_eq(fpp_submit(tm, F_COUNT, &i, 8), (int64_t)i, "the same ids as before");
    fpp_task *t;
    cr_expect_eq(fpp_wait(tm, 7, &t), FPP_ESTATE);
    cr_expect(strstr(captured_logs(), "task 7 was finished by an earlier run") != NULL, "%s", captured_logs());
    cr_expect_eq(fpp_cancel(tm, 8), 0, "already finished");
    cr_expect_eq(fpp_wait(tm, N + 3, &t), 1, "a new one is waited as usual");
    cr_expect_eq(u64_of(fpp_task_result(t, NULL)), N + 3);
    fpp_task_release(t);
    uint64_t handed = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        cr_assert_geq(fpp_task_id(t), N);
        handed++;
    }
    cr_expect_eq(handed, 49);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.skipped, N);
    cr_expect_eq(st.submitted, 50);
    fpp_tm_free(tm);
    for (uint64_t i = 0; i < N + 50; i++)
        cr_assert_eq(J_RUNS[i], 1, "id %" PRIu64 " ran %d times", i, (int)J_RUNS[i]);
    each_id_once(path, N + 50);
    fpp_executor_free(ex);
    dir_done();
}

/* A resumed map replays its iterator over what finished before without running it: those
 * items take no room, yet an interrupt (Ctrl-C) in the middle of them is seen at once. */
Test(journal, an_interrupt_during_a_long_replay_is_seen_at_once, .fini = assert_clean, .timeout = 60)
{
    dir_new();
    const char *path = in_dir("j");
    const uint64_t N = 1000000;
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_COUNT, N, &handed), 0);
    fpp_tm_free(tm);
    tm = jtm(ex, path, FPP_RAISE, 0);
    ids it = {0, 2 * N, 0, tm, N / 2}; /* interrupted halfway through the finished half */
    cr_assert_eq(fpp_map(tm, F_COUNT, ids_next, &it), 0);
    cr_expect_eq(fpp_run(tm), FPP_EINTR);
    cr_expect_lt(it.next, N / 2 + 5000, "the replay stopped within 4096 items of the interrupt (at %" PRIu64 ")",
                 it.next);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.submitted, 0, "nothing ran");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    dir_done();
}

/* ------------------------------------------------------- threads and processes */

Test(journal, a_forked_child_never_writes_the_parents_journal, .fini = assert_clean)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 1000; i++)
        fpp_submit(tm, F_COUNT, &i, 8);
    cr_assert_eq(fpp_run(tm), 0); /* its end made it durable */
    uint64_t size = file_size(path);
    for (uint64_t i = 1000; i < 1100; i++)
        fpp_submit(tm, F_COUNT, &i, 8);
    pid_t pid = fork();
    if (pid == 0) {
        fpp_log_set(NULL, NULL, FPP_LOG_OFF);
        uint64_t x = 5;
        int bad = fpp_submit(tm, F_COUNT, &x, 8) != FPP_ESTATE || fpp_run(tm) != FPP_ESTATE;
        fpp_tm_free(tm); /* this process's copy only */
        fpp_executor_free(ex);
        _exit(bad);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's calls were refused");
    cr_expect_eq(file_size(path), size, "the child wrote nothing");
    /* The parent's lock survives the child closing its copy of the descriptor. */
    fpp_executor *ex2 = mk_exec(THR, NULL);
    fpp_tm *tm2;
    cr_expect_eq(fpp_tm_create(&tm2, ex2, &(fpp_tm_opts){.journal = path, .journal_key = "test"}), FPP_ESTATE);
    fpp_executor_free(ex2);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, 1100);
    cr_expect_eq(in.duplicates, 0);
    dir_done();
}

/* While the caller is away (no call in progress), what finished is still written: the flusher
 * takes the task manager's guard and writes it. */
BOTH_EXECUTORS(journal, what_finished_is_written_while_the_caller_is_away)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor *ex = mk_exec(k, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    for (uint64_t i = 0; i < 100; i++)
        fpp_submit(tm, F_COUNT, &i, 8);
    fpp_task *t;
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    int64_t id = fpp_task_id(t);
    /* Now away, for up to 10 s: the journal must show this task (no sync point was passed). */
    bool seen = false;
    for (int i = 0; i < 1000 && !seen; i++) {
        fpp_journal *j;
        if (fpp_journal_open(&j, path) == 0) {
            seen = fpp_journal_find(j, id, NULL) == 1;
            fpp_journal_close(j);
        }
        if (!seen)
            sleep_ms(10);
    }
    cr_expect(seen, "task %" PRId64 " was written while no call was in progress", id);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    dir_done();
}

typedef struct watcher { const char *path; uint64_t want; bool saw; } watcher;

static void *watch(void *arg)
{
    watcher *w = arg;
    for (int i = 0; i < 1000 && !w->saw; i++) {
        fpp_journal *j;
        if (fpp_journal_open(&j, w->path) == 0) {
            fpp_journal_info in;
            fpp_journal_stat(j, &in);
            w->saw = in.finished >= w->want;
            fpp_journal_close(j);
        }
        if (!w->saw)
            sleep_ms(10);
    }
    atomic_store(&T_SHARED[1], 1); /* release the blocked task either way */
    return NULL;
}

/* While the caller sleeps inside a call (fpp_wait on a task that waits for the journal to
 * show the others), the flusher wakes it to write. */
BOTH_EXECUTORS(journal, what_finished_is_written_while_the_caller_sleeps_in_a_call, .timeout = 60)
{
    dir_new();
    const char *path = in_dir("j");
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    block_arg b = {.started = 0, .release = 1, .pid_at = 10, .max_ms = 20000};
    int64_t blocked = fpp_submit(tm, F_BLOCK, &b, sizeof b);
    for (uint64_t i = 1; i <= 200; i++)
        fpp_submit(tm, F_COUNT, &i, 8);
    watcher w = {path, 200, false};
    pthread_t th;
    pthread_create(&th, NULL, watch, &w);
    fpp_task *t;
    cr_assert_eq(fpp_wait(tm, blocked, &t), 1);
    pthread_join(th, NULL);
    cr_expect(w.saw, "the 200 finished tasks were written while fpp_wait slept");
    cr_expect_eq(*(const int *)fpp_task_result(t, NULL), 1, "released by the watcher");
    fpp_task_release(t);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    dir_done();
}

/* ------------------------------------------------------------------ sizes, API */

Test(journal, a_no_op_map_costs_bits_not_records, .fini = assert_clean, .timeout = 120)
{
    dir_new();
    const char *path = in_dir("j");
    const uint64_t N = 2000000;
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm *tm = jtm(ex, path, FPP_RAISE, 0);
    uint64_t handed;
    cr_assert_eq(map_all(tm, F_COUNT, N, &handed), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    uint64_t size = file_size(path);
    fpp_journal_info in = jstat(path);
    cr_log_info("2 M no-op tasks: a journal of %" PRIu64 " bytes (%.3f per task), %" PRIu64 " records of single tasks",
                size, (double)size / (double)N, in.records);
    /* A record per task would be at least 21 bytes each (a DONE record); ranges make it a few
     * bits. Single records remain for tasks in flight at each mark and for those slower than
     * 1 ms (a loaded machine makes more of them). */
    cr_expect_lt(size, 4 * N, "%" PRIu64 " bytes for %" PRIu64 " tasks", size, N);
    cr_expect_lt(in.records, N / 5);
    cr_expect_eq(in.finished, N);
    dir_done();
}

Test(journal, bad_options_are_refused_with_a_reason, .fini = assert_clean)
{
    dir_new();
    fpp_executor *ex = mk_exec(THR, NULL);
    fpp_tm *tm;
    capture_logs();
    char key[5000];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    struct { fpp_tm_opts o; const char *says; } bad[] = {
        {{.flags = FPP_TM_RERUN_FAILED}, "FPP_TM_RERUN_FAILED without a journal"},
        {{.journal_flush_ms = 5}, "a journal option without a journal"},
        {{.journal = in_dir("j"), .journal_flush_ms = -1}, "journal_flush_ms = -1 is out of 0..60000"},
        {{.journal = in_dir("j"), .journal_flush_ms = 60001}, "journal_flush_ms = 60001"},
        {{.journal = in_dir("j"), .journal_result_max = ((size_t)1 << 30) + 1}, "journal_result_max"},
        {{.journal = "", }, "empty journal path"},
        {{.journal = in_dir("j"), .journal_key = key}, "journal_key over 4096 bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(fpp_tm_create(&tm, ex, &bad[i].o), FPP_EINVAL, "case %zu", i);
        cr_expect(strstr(captured_logs(), bad[i].says) != NULL, "case %zu: %s", i, bad[i].says);
    }
    cr_expect_eq(file_size(in_dir("j")), 0, "nothing was created");
    cr_expect_eq(fpp_tm_create(&tm, ex, &(fpp_tm_opts){.journal = "/nonexistent-dir/j"}), FPP_EJOURNAL);
    cr_expect(strstr(captured_logs(), "open(/nonexistent-dir/j): No such file or directory") != NULL, "%s",
              captured_logs());
    fpp_journal *j;
    cr_expect_eq(fpp_journal_open(NULL, "x"), FPP_EINVAL);
    cr_expect_eq(fpp_journal_open(&j, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_journal_open(&j, "/nonexistent-dir/j"), FPP_EJOURNAL);
    cr_expect_eq(fpp_journal_next(NULL, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_journal_stat(NULL, NULL), FPP_EINVAL);
    cr_expect_eq(fpp_journal_find(NULL, 0, NULL), FPP_EINVAL);
    fpp_journal_close(NULL);
    fpp_executor_free(ex);
    dir_done();
}

#ifdef FPP_JOBLOG
Test(journal, fpp_joblog_prints_gnu_parallels_joblog, .fini = assert_clean)
{
    dir_new();
    const char *path = in_dir("j");
    enum { N = 1000 };
    fpp_executor *ex = mk_exec(PROC, NULL);
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .journal = path, .retries = 1};
    fpp_tm *tm;
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    uint64_t seg = 0;
    cr_assert_eq(fpp_submit(tm, F_SEGV, &seg, 8), 0); /* id 0 (Seq 1) crashes twice: retried once */
    ids it = {0, N, 0, NULL, 0};
    fpp_map(tm, F_JFAIL, ids_next, &it); /* item v is id v + 1 (Seq v + 2) */
    cr_assert_eq(fpp_run(tm), 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s", FPP_JOBLOG, path);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char line[512];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_expect_str_eq(line, "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
    int lines = 0, failed = 0, crashed = 0;
    char *seen = calloc(N + 2, 1);
    while (fgets(line, sizeof line, f)) {
        long seq, send, recv;
        int ev, sig;
        double start, run;
        char cmdname[64];
        cr_assert_eq(sscanf(line, "%ld\t:\t%lf\t%lf\t%ld\t%ld\t%d\t%d\t%63s", &seq, &start, &run, &send, &recv, &ev, &sig,
                            cmdname), 8, "%s", line);
        cr_assert(seq >= 1 && seq <= N + 1 && !seen[seq], "%s", line);
        seen[seq] = 1;
        cr_expect_gt(start, 1e9, "seconds since the epoch: %s", line);
        lines++;
        if (seq == 1) {
            crashed++;
            cr_expect_eq(ev, -1);
            cr_expect_eq(sig, SIGSEGV);
            cr_expect_str_eq(cmdname, "segv");
        } else {
            cr_expect_str_eq(cmdname, "jfail");
            cr_expect_eq(ev, (seq - 2) % 10 == 3, "%s", line);
            cr_expect_eq(sig, 0);
            failed += ev == 1;
            if (ev == 1)
                cr_expect_eq(send, 8);
        }
    }
    free(seen);
    cr_expect_eq(pclose(f), 0);
    cr_expect_eq(lines, N + 1);
    cr_expect_eq(failed, N / 10);
    cr_expect_eq(crashed, 1);
    snprintf(cmd, sizeof cmd, "%s --summary %s", FPP_JOBLOG, path);
    f = popen(cmd, "r");
    char all[4096] = "";
    size_t got = fread(all, 1, sizeof all - 1, f);
    all[got] = 0;
    pclose(f);
    cr_expect(strstr(all, "finished 1001 (101 failed)") != NULL, "%s", all);
    cr_expect(strstr(all, "duplicates 0") != NULL, "%s", all);
    snprintf(cmd, sizeof cmd, "%s %s/missing 2>/dev/null", FPP_JOBLOG, tdir);
    cr_expect_eq(WEXITSTATUS(system(cmd)), 1);
    dir_done();
}
#endif

/* ------------------------------------------------------- SIGKILL at any moment */

/* In a child: maps F_COUNT over n ids with the journal until done; exit 0 when all finished. */
static void kill_child(kind k, const char *path, uint64_t n)
{
    fpp_log_set(NULL, NULL, FPP_LOG_ERROR);
    fpp_executor *ex;
    fpp_executor_opts o = {.workers = 2};
    if ((k == PROC ? fpp_process_executor(&ex, &o) : fpp_thread_executor(&ex, &o)) != 0)
        _exit(3);
    fpp_tm *tm;
    /* retries: a worker the pool replaces mid-task (its audit, after 250 ms without progress
     * on a loaded machine, can count a task just reported as still claimed: lib/pool/audit.c)
     * crashes that task; it runs again rather than ending the storm. */
    fpp_tm_opts to = {.monitor_interval_ms = -1, .journal = path, .journal_key = "kill", .retries = 3};
    int rc = fpp_tm_create(&tm, ex, &to);
    if (rc != 0)
        _exit(4);
    ids it = {0, n, 0, NULL, 0};
    fpp_map(tm, F_COUNT, ids_next, &it);
    rc = fpp_run(tm);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    _exit(rc == 0 ? 0 : 10 - rc); /* 11: FPP_EINVAL ... 22: FPP_EMISMATCH */
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Runs the map in children killed with SIGKILL `kills` times, at random moments: a quarter
 * at a random time within 40 ms of the fork (starting, opening and reading the journal,
 * replaying the iterator), the rest once a random number of tasks ran; then once to the end.
 * After every kill the journal is read: no id twice, nothing recorded before is lost, and each
 * id recorded is remembered with its run count, which must never move again: a recorded task
 * never runs again. At the end every id ran, and is recorded exactly once. */
static void kill_storm(kind k, uint64_t n, int kills)
{
    dir_new();
    const char *path = in_dir("j");
    runs_reset(n);
    uint64_t seed = (uint64_t)mono_ns() | 1;
    cr_log_info("kill storm: %" PRIu64 " tasks, %d kills, seed %" PRIu64, n, kills, seed);
    unsigned char *snap = calloc(n, 1);
    cr_assert_not_null(snap);
    uint64_t fin_prev = 0, done_by_kill = 0, torn_seen = 0;
    int64_t w_prev = 0;
    int killed = 0;
    bool finished = false;
    while (killed < kills && !finished) {
        long runs0 = atomic_load(&T_SHARED[TOTAL]);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
            kill_child(k, path, n);
        int status = 0;
        bool exited = false;
        if (rnd(&seed) % 4 == 0) {
            int64_t until = mono_ns() + (int64_t)(rnd(&seed) % 40000) * 1000;
            while (mono_ns() < until && !(exited = waitpid(pid, &status, WNOHANG) == pid))
                usleep(200);
        } else {
            long target = runs0 + 1 + (long)(rnd(&seed) % (2 * n / (uint64_t)kills));
            int64_t give_up = mono_ns() + (int64_t)60 * 1000000000;
            while (atomic_load(&T_SHARED[TOTAL]) < target && mono_ns() < give_up &&
                   !(exited = waitpid(pid, &status, WNOHANG) == pid))
                usleep(200);
        }
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        if (WIFEXITED(status)) {
            cr_assert_eq(WEXITSTATUS(status), 0, "the child failed (%d: %s)", WEXITSTATUS(status),
                         fpp_err_name(10 - WEXITSTATUS(status)));
            finished = true; /* it got to the end before the kill */
            break;
        }
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        killed++;
        if (file_size(path) < 64)
            continue; /* killed before its header was written: nothing to read */
        fpp_journal *j;
        int rc = fpp_journal_open(&j, path);
        cr_assert_eq(rc, 0, "after kill %d: %s", killed, fpp_err_name(rc));
        fpp_journal_info in;
        fpp_journal_stat(j, &in);
        torn_seen += in.torn_bytes > 0;
        cr_assert_eq(in.duplicates, 0, "after kill %d: an id recorded twice", killed);
        cr_assert_geq(in.finished, fin_prev, "after kill %d: recorded outcomes were lost", killed);
        for (int64_t id = w_prev; id < in.watermark; id++)
            if (fpp_journal_find(j, id, NULL) == 1) {
                unsigned char r = J_RUNS[id];
                cr_assert_geq(r, 1, "id %" PRId64 " recorded but never ran", id);
                snap[id] = r;
            }
        fpp_journal_close(j);
        fin_prev = in.finished;
        w_prev = FPP__MAX(w_prev, in.watermark);
        done_by_kill = in.finished;
    }
    if (!finished) {
        pid_t pid = fork();
        if (pid == 0)
            kill_child(k, path, n);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the last run ends cleanly (%d)", status);
    }
    fpp_journal_info in = jstat(path);
    cr_expect_eq(in.finished, n);
    cr_expect_eq(in.duplicates, 0);
    cr_expect_eq(in.open, 0);
    each_id_once(path, n);
    uint64_t again = 0, snapped = 0;
    for (uint64_t id = 0; id < n; id++) {
        unsigned char r = J_RUNS[id];
        if (!r)
            cr_assert_fail("id %" PRIu64 " never ran", id);
        if (snap[id]) {
            snapped++;
            if (r != snap[id])
                cr_assert_fail("id %" PRIu64 " was recorded, then ran again (%d -> %d runs)", id, snap[id], r);
        }
        again += r - 1u;
    }
    free(snap);
    cr_expect_geq(killed, kills, "%d kills", killed);
    cr_log_info("%d kills (%" PRIu64 " left a torn tail); %" PRIu64 " tasks finished before the last run; %" PRIu64
                " recorded ids checked never to run again; %" PRIu64 " task runs repeated in all (%.0f per kill)",
                killed, torn_seen, done_by_kill, snapped, again, killed ? (double)again / killed : 0.0);
    dir_done();
}

Test(kill, a_20M_map_sigkilled_100_times_ends_with_every_id_recorded_once_process, .fini = assert_clean,
     .timeout = 900)
{
    kill_storm(PROC, 20000000, 100);
}

Test(kill, a_map_sigkilled_30_times_ends_with_every_id_recorded_once_thread, .fini = assert_clean, .timeout = 600)
{
    kill_storm(THR, 4000000, 30);
}
