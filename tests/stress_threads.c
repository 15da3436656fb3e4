/* stress_threads.c: the threaded parts under ThreadSanitizer (Criterion's runner does not run
 * under TSan, so this is a plain program): the thread executor's workers, the task manager,
 * the monitor thread, the process executor's supervisor thread, timeouts, recycling and
 * cancellation, all at once; the task journal's flusher thread taking the task manager's guard
 * while the caller is away, and waking it while it sleeps in a call. Prints "stress_threads: N
 * passed, M failed" and exits non-zero on any failure. */
#define _GNU_SOURCE
#include <fpp.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(c, what) do { if (c) passed++; else { failed++; printf("FAIL: %s\n", what); } } while (0)

static int square(const void *a, size_t n, fpp_out *o)
{
    unsigned long x = 0;
    memcpy(&x, a, n < sizeof x ? n : sizeof x);
    x *= x;
    return fpp_out_set(o, &x, sizeof x);
}

static int nap(const void *a, size_t n, fpp_out *o)
{
    (void)a; (void)n; (void)o;
    struct timespec ts = {0, 30000000};
    nanosleep(&ts, NULL);
    return 0;
}

static int fails(const void *a, size_t n, fpp_out *o) { (void)a; (void)n; return fpp_out_fail(o, "no"), 1; }

typedef struct it { unsigned long i, n, cur; } it;
static int next(void *s, const void **a, size_t *n)
{
    it *x = s;
    if (x->i == x->n) return 0;
    x->cur = x->i++;
    *a = &x->cur;
    *n = sizeof x->cur;
    return 1;
}

static void quiet(fpp_log_level l, const char *m, void *u) { (void)l; (void)m; (void)u; }

/* fpp_tm_stats from another thread while the task manager runs. */
typedef struct reader { fpp_tm *tm; _Atomic int stop; long reads; int bad; } reader;
static void *read_stats(void *arg)
{
    reader *r = arg;
    fpp_stats prev = {0};
    while (!atomic_load(&r->stop)) {
        fpp_stats st;
        fpp_tm_stats(r->tm, &st);
        if (st.done < prev.done || st.submitted < prev.submitted || st.done + st.failed + st.timed_out +
                st.cancelled > st.submitted)
            r->bad++;
        prev = st;
        r->reads++;
    }
    return NULL;
}

typedef struct stopper { fpp_tm *tm; int ms; } stopper;
static void *interrupt_later(void *arg)
{
    stopper *s = arg;
    struct timespec ts = {0, (long)s->ms * 1000000L};
    nanosleep(&ts, NULL);
    fpp_tm_interrupt(s->tm);
    return NULL;
}

typedef struct forever { unsigned long i, cur; } forever;
static int endless(void *st, const void **a, size_t *n)
{
    forever *f = st;
    f->cur = f->i++;
    *a = &f->cur;
    *n = sizeof f->cur;
    return 1;
}

/* Ordered results, retries, per-task timeouts, wait and cancel, with a stats reader and the
 * monitor running; then fpp_tm_interrupt from another thread stops an endless map. */
static void round_0_2(int threads)
{
    int f_sq = fpp_lookup("square"), f_nap = fpp_lookup("nap");
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 3};
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    CHECK(rc == 0, "executor (0.2 round)");
    if (rc) return;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = 5, .max_in_flight = 64, .retries = 1,
                      .flags = FPP_TM_ORDERED | FPP_TM_RETRY_FAILED};
    fpp_tm_create(&tm, ex, &to);
    reader r = {.tm = tm};
    pthread_t rt;
    pthread_create(&rt, NULL, read_stats, &r);
    fpp_task_opts quick = {.timeout_ms = 5};
    for (unsigned long i = 0; i < 3000; i++) {
        if (i % 300 == 7)
            fpp_submit_ex(tm, f_nap, NULL, 0, &quick); /* times out twice (one retry) */
        else
            fpp_submit(tm, f_sq, &i, sizeof i);
    }
    fpp_task *t;
    CHECK(fpp_wait(tm, 1500, &t) == 1, "wait");
    fpp_task_release(t);
    CHECK(fpp_cancel(tm, 2999) >= 0, "cancel");
    long last = -1, n = 0;
    int ordered = 1;
    while (fpp_as_completed(tm, &t) == 1) {
        ordered = ordered && fpp_task_id(t) > last;
        last = (long)fpp_task_id(t);
        n++;
    }
    CHECK(ordered, "results in id order");
    CHECK(n == 2999, "every task but the waited one came out");
    forever f = {0, 0};
    fpp_map(tm, f_sq, endless, &f);
    stopper s = {tm, 50};
    pthread_t st;
    pthread_create(&st, NULL, interrupt_later, &s);
    CHECK(fpp_run(tm) == FPP_EINTR, "fpp_tm_interrupt from another thread");
    pthread_join(st, NULL);
    atomic_store(&r.stop, 1);
    pthread_join(rt, NULL);
    CHECK(r.bad == 0 && r.reads > 0, "consistent stats from another thread");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

static void round_on(int threads)
{
    int f_sq = fpp_lookup("square"), f_nap = fpp_lookup("nap"), f_fail = fpp_lookup("fails");
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 3, .task_timeout_ms = 10, .max_tasks_per_worker = 500};
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    CHECK(rc == 0, "executor");
    if (rc) return;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = 5, .max_in_flight = 64};
    fpp_tm_create(&tm, ex, &to);
    it items = {0, 20000, 0};
    fpp_map(tm, f_sq, next, &items);
    for (int i = 0; i < 20; i++) {
        fpp_submit(tm, f_nap, NULL, 0);  /* times out: abandoned (threads) or killed */
        fpp_submit(tm, f_fail, NULL, 0);
    }
    fpp_task *t;
    long done = 0, other = 0;
    while (fpp_as_completed(tm, &t) == 1)
        fpp_task_status(t) == FPP_DONE ? done++ : other++;
    CHECK(done == 20000, "every map item done");
    CHECK(other == 40, "timeouts and failures reported");
    /* Free with work running: cancellation races with the workers. */
    for (int i = 0; i < 10; i++)
        fpp_submit(tm, f_nap, NULL, 0);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The journal's flusher (every millisecond here) against the caller: it takes the guard while
 * the caller is away between calls (pauses below), wakes it while it sleeps in a call, and
 * fdatasyncs beside its writes; fpp_tm_stats and fpp_tm_interrupt from other threads meanwhile.
 * Then a resume: everything recorded is skipped. */
static void round_journal(int threads)
{
    int f_sq = fpp_lookup("square"), f_nap = fpp_lookup("nap");
    char path[64];
    snprintf(path, sizeof path, "/tmp/stress_threads-journal-%ld", (long)getpid());
    unlink(path);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 3};
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    CHECK(rc == 0, "executor");
    if (rc) return;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = 5, .journal = path, .journal_flush_ms = 1};
    CHECK(fpp_tm_create(&tm, ex, &to) == 0, "journal created");
    reader r = {.tm = tm};
    pthread_t th;
    pthread_create(&th, NULL, read_stats, &r);
    it items = {0, 20000, 0};
    fpp_map(tm, f_sq, next, &items);
    for (int i = 0; i < 10; i++)
        fpp_submit(tm, f_nap, NULL, 0); /* the caller sleeps in polls meanwhile */
    fpp_task *t;
    long got = 0;
    while (fpp_as_completed(tm, &t) == 1)
        if (++got % 2000 == 0) {
            struct timespec away = {0, 3000000};
            nanosleep(&away, NULL); /* away between calls: the flusher writes */
        }
    CHECK(got == 20010, "every task of the journaled run");
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    CHECK(r.bad == 0, "stats consistent while the journal's flusher runs");
    fpp_tm_free(tm);
    /* A rerun: nothing to do; then one interrupted from another thread. */
    CHECK(fpp_tm_create(&tm, ex, &to) == 0, "journal resumed");
    it again = {0, 20000, 0};
    fpp_map(tm, f_sq, next, &again);
    got = 0;
    while (fpp_as_completed(tm, &t) == 1)
        got++;
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(got == 0 && st.skipped == 20000, "a rerun skips everything recorded");
    it more = {0, 1000000000, 0};
    fpp_map(tm, f_sq, next, &more); /* ids 20000 on: new */
    stopper stop = {tm, 50};
    pthread_create(&th, NULL, interrupt_later, &stop);
    CHECK(fpp_run(tm) == FPP_EINTR, "interrupted while journaling");
    pthread_join(th, NULL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    fpp_journal *j;
    CHECK(fpp_journal_open(&j, path) == 0, "journal readable");
    fpp_journal_info in;
    fpp_journal_stat(j, &in);
    CHECK(in.duplicates == 0 && in.finished >= 20010, "every outcome recorded once");
    fpp_journal_close(j);
    unlink(path);
}

/* Issue 9's threaded parts: worker threads that start with an initializer and then cannot
 * (the breaker, threads ended and started again), and tasks abandoned on timeouts and at free
 * while they read arguments of their own (copies: worker.c). */
static _Atomic long inits;
static int init_later(const void *a, size_t n, fpp_out *o)
{
    (void)a; (void)n;
    if (atomic_fetch_add(&inits, 1) >= 6)
        return fpp_out_fail(o, "no more"), 1;
    return 0;
}

static int nap_read(const void *a, size_t n, fpp_out *o)
{
    (void)o;
    const unsigned char *p = a;
    unsigned char first = n ? p[0] : 0;
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    unsigned long bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += p[i] != first;
    return bad ? 1 : 0;
}

static void round_worker_world(void)
{
    int f_sq = fpp_lookup("square"), f_nap = fpp_lookup("nap_read");
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 3, .task_timeout_ms = 5, .max_tasks_per_worker = 50, .worker_init = "init_later"};
    atomic_store(&inits, 0);
    int rc = fpp_thread_executor(&ex, &eo);
    CHECK(rc == 0, "thread executor with an initializer");
    if (rc) return;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = 5};
    fpp_tm_create(&tm, ex, &to);
    unsigned char arg[256];
    for (int i = 0; i < 300; i++) {
        unsigned long x = (unsigned long)i;
        fpp_submit(tm, f_sq, &x, sizeof x);
        if (i % 30 == 0) {
            memset(arg, i, sizeof arg);
            fpp_submit(tm, f_nap, arg, sizeof arg); /* times out: abandoned while reading */
        }
    }
    fpp_stats st;
    CHECK(fpp_run(tm) == 0, "fpp_run returns when workers stop starting");
    fpp_tm_stats(tm, &st);
    CHECK(st.done + st.crashed + st.timed_out == st.submitted, "every task accounted for");
    CHECK(atomic_load(&inits) < 40, "no thrashing");
    for (int i = 0; i < 3; i++) {
        memset(arg, 0x40 + i, sizeof arg);
        fpp_submit(tm, f_nap, arg, sizeof arg);
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    struct timespec ts = {0, 100000000}; /* the abandoned threads return after the frees */
    nanosleep(&ts, NULL);
}

int main(void)
{
    fpp_log_set(quiet, NULL, FPP_LOG_DEBUG);
    fpp_register("square", square);
    fpp_register("nap", nap);
    fpp_register("fails", fails);
    fpp_register("init_later", init_later);
    fpp_register("nap_read", nap_read);
    round_on(1);
    round_on(0);
    round_0_2(1);
    round_0_2(0);
    round_worker_world();
    round_journal(1);
    round_journal(0);
    printf("stress_threads: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
