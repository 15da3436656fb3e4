/* tm/monitor.c: the executor monitor, a thread of the parent (never a worker). From a task
 * manager's first submit or map until nothing is left or it is freed, it logs "Starting
 * executor monitor", then each interval "N task(s) completed in the last X second(s)" (and,
 * for ordered results held back by an unfinished task, "waiting on task 123 for 40 s (57
 * finished task(s) held back)"), then "Shutting down monitor...".
 *
 * With FPP_TM_PROGRESS on a terminal it logs none of these: it redraws the progress line
 * (progress.c) every FPP__PROGRESS_TICK_MS instead, which is at most 10 times a second, and the
 * line is cleared the moment the monitor is stopped, on the caller's thread, so that nothing
 * the program prints after the call returns lands on the line.
 *
 * It reads the task manager's counters (relaxed atomics, fpp__counters) and nothing else: the
 * names it shows (a labelled task holding ordered results back, the progress line's last
 * failure) are copied into the counters under text_mu by the driving thread when they change,
 * so the monitor never touches a task. It
 * sleeps on a condition variable (CLOCK_MONOTONIC) between ticks, from the task manager's first
 * busy period to fpp_tm_free, and shows something only while a period is active: the driving
 * thread starts and ends a period with two atomic stores and logs "Starting executor monitor"
 * and "Shutting down monitor..." itself (or claims and clears the progress line), so a lone
 * task into an idle task manager wakes no thread and starts none (0.2 started and joined a
 * thread per busy period: about 50 us a lone task). An idle task manager's monitor ticks once
 * an interval (10 times a second for the progress line) and does nothing else. A line of the
 * period may rarely follow its "Shutting down" (read as active just before the end).
 *
 * Lock order: `mu` is never held while logging or drawing. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/timing.h"
#include "tm/tm.h"

#define PROGRESS_WAIT_S 1.0  /* the line names a task holding ordered results back after 1 s */
#define RATE_SAMPLES 31      /* the rate is measured over the last 3 s of ticks */

struct fpp__monitor {
    pthread_t th;
    pthread_mutex_t mu; /* with cv: only for ending the thread */
    pthread_cond_t cv;
    bool quit;
    /* A busy period, as the driving thread starts and ends it (fpp__monitor_resume/stop): no
     * lock, no wake-up; the thread reads them at its next tick. */
    _Atomic bool active;
    _Atomic uint64_t gen;          /* bumped by each resume */
    _Atomic int64_t start_ns;      /* the period's start, and the count then */
    _Atomic uint64_t start_finished;
    fpp__counters *c;
    int interval_ms;
    bool progress;
};

static uint64_t ld(const _Atomic uint64_t *a) { return atomic_load_explicit(a, memory_order_relaxed); }

/* Sleeps until due_ns; false once the thread is to end. */
static bool sleep_until(fpp__monitor *m, int64_t due_ns)
{
    struct timespec ts = {.tv_sec = due_ns / 1000000000, .tv_nsec = due_ns % 1000000000};
    pthread_mutex_lock(&m->mu);
    while (!m->quit && pthread_cond_timedwait(&m->cv, &m->mu, &ts) == 0)
        ;
    bool go = !m->quit;
    pthread_mutex_unlock(&m->mu);
    return go;
}

/* ------------------------------------------------------------- names */

void fpp__monitor_name_wait(fpp__counters *c, const fpp__job *j)
{
    pthread_mutex_lock(&c->text_mu);
    c->wait_named = j->id;
    fpp__job_name(j, c->wait_name, sizeof c->wait_name);
    pthread_mutex_unlock(&c->text_mu);
}

void fpp__monitor_name_failure(fpp__counters *c, const fpp__job *j)
{
    char name[FPP__NAME_MAX];
    fpp__job_name(j, name, sizeof name);
    pthread_mutex_lock(&c->text_mu);
    snprintf(c->last_failure, sizeof c->last_failure, "%s %s", name, fpp_status_name(j->status));
    pthread_mutex_unlock(&c->text_mu);
}

/* Task id's name: its label if the driving thread named it, else "task <id>". */
static void wait_name(fpp__counters *c, int64_t id, char *out, size_t cap)
{
    pthread_mutex_lock(&c->text_mu);
    if (c->wait_named == id)
        snprintf(out, cap, "%s", c->wait_name);
    else
        snprintf(out, cap, "task %lld", (long long)id);
    pthread_mutex_unlock(&c->text_mu);
}

/* ------------------------------------------------------------- lines */

/* Names the task holding ordered results back, once it has done so for a whole interval
 * (shorter waits are the normal jitter of a reorder window). */
static void waiting_line(fpp__counters *c, int64_t now, int interval_ms)
{
    int64_t id = atomic_load_explicit(&c->wait_id, memory_order_relaxed);
    int64_t since = atomic_load_explicit(&c->wait_since_ns, memory_order_relaxed);
    uint64_t held = ld(&c->held);
    if (id < 0 || held == 0 || since <= 0 || now - since < (int64_t)interval_ms * 1000000)
        return;
    double s = (double)(now - since) / 1e9;
    char name[FPP__NAME_MAX];
    wait_name(c, id, name, sizeof name);
    fpp__log(FPP_LOG_INFO, "waiting on %s for %.*f s (%llu finished task(s) held back)", name, s >= 10 ? 0 : 1, s,
             (unsigned long long)held);
}

/* A line each interval of a busy period ("Starting" and "Shutting down" are the driving
 * thread's, at its start and end). A period that began since the last tick is counted from
 * its start. */
static void run_lines(fpp__monitor *m)
{
    uint64_t seen = 0, last = 0;
    int64_t t0 = 0, tick = fpp__now_ns();
    while (sleep_until(m, tick + (int64_t)m->interval_ms * 1000000)) {
        int64_t t1 = fpp__now_ns();
        tick = t1;
        uint64_t now_n = ld(&m->c->finished);
        uint64_t gen = atomic_load_explicit(&m->gen, memory_order_acquire);
        if (!atomic_load_explicit(&m->active, memory_order_acquire))
            continue;
        if (gen != seen) {
            seen = gen;
            t0 = atomic_load_explicit(&m->start_ns, memory_order_relaxed);
            last = atomic_load_explicit(&m->start_finished, memory_order_relaxed);
        }
        fpp__log(FPP_LOG_INFO, "%llu task(s) completed in the last %.2f second(s)",
                 (unsigned long long)(now_n - last), (double)(t1 - t0) / 1e9);
        waiting_line(m->c, t1, m->interval_ms);
        last = now_n;
        t0 = t1;
    }
}

static uint64_t ended(const fpp__counters *c)
{
    /* Ids an earlier run finished count as ended: the bar reaches 100% on a resumed run. */
    return ld(&c->done) + ld(&c->failed) + ld(&c->crashed) + ld(&c->timed_out) + ld(&c->cancelled) + ld(&c->skipped);
}

static void run_progress(fpp__monitor *m)
{
    fpp__counters *c = m->c;
    int64_t st[RATE_SAMPLES];
    uint64_t sn[RATE_SAMPLES];
    int head = 0, count = 0;
    uint64_t seen = 0;
    int64_t last = fpp__now_ns();
    while (sleep_until(m, last + (int64_t)FPP__PROGRESS_TICK_MS * 1000000)) {
        int64_t now = fpp__now_ns();
        last = now;
        uint64_t gen = atomic_load_explicit(&m->gen, memory_order_acquire);
        if (!atomic_load_explicit(&m->active, memory_order_acquire))
            continue;
        if (gen != seen) { /* a new period: the rate from its first tick */
            seen = gen;
            head = 0;
            count = 1;
            st[0] = now;
            sn[0] = ended(c);
        }
        uint64_t e = ended(c);
        head = (head + 1) % RATE_SAMPLES;
        st[head] = now;
        sn[head] = e;
        if (count < RATE_SAMPLES)
            count++;
        int oldest = (head - count + 1 + RATE_SAMPLES) % RATE_SAMPLES;
        double dt = (double)(now - st[oldest]) / 1e9;
        double rate = dt >= 0.2 ? (double)(e - sn[oldest]) / dt : -1;
        int64_t wid = atomic_load_explicit(&c->wait_id, memory_order_relaxed);
        int64_t since = atomic_load_explicit(&c->wait_since_ns, memory_order_relaxed);
        double wait_s = 0;
        if (wid >= 0 && ld(&c->held) > 0 && since > 0)
            wait_s = (double)(now - since) / 1e9;
        if (wait_s < PROGRESS_WAIT_S)
            wid = -1;
        struct winsize ws;
        int width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
        char waiting[FPP__NAME_MAX], failure[sizeof c->last_failure];
        if (wid >= 0)
            wait_name(c, wid, waiting, sizeof waiting);
        pthread_mutex_lock(&c->text_mu);
        memcpy(failure, c->last_failure, sizeof failure);
        pthread_mutex_unlock(&c->text_mu);
        fpp__progress_snap s = {.finished = e, .failed = ld(&c->failed), .crashed = ld(&c->crashed),
                                .timed_out = ld(&c->timed_out), .cancelled = ld(&c->cancelled),
                                .total = c->expected_total, .rate = rate, .waiting = wid >= 0 ? waiting : NULL,
                                .wait_s = wait_s, .last_failure = failure};
        char line[512];
        fpp__progress_format(line, sizeof line, &s, width);
        fpp__status_draw(m, line);
    }
}

/* One thread for the task manager's life, from its first busy period to fpp_tm_free: it ticks
 * every interval (lines) or FPP__PROGRESS_TICK_MS (the progress line) and shows something only
 * in a busy period, so a lone task into an idle task manager wakes nothing and pays for no
 * thread (0.2 started and joined one per busy period: about 50 us a lone task). */
static void *run(void *arg)
{
    fpp__monitor *m = arg;
    if (m->progress)
        run_progress(m);
    else
        run_lines(m);
    return NULL;
}

/* A busy period starts: its start for the rates, then active (release: the thread that sees it
 * active sees the start); "Starting executor monitor" or the progress line claimed, on the
 * driving thread. No lock, no wake-up. */
static void begin_period(fpp__monitor *m)
{
    atomic_store_explicit(&m->start_ns, fpp__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&m->start_finished, ld(&m->c->finished), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->gen, 1, memory_order_release);
    atomic_store_explicit(&m->active, true, memory_order_release);
    if (m->progress)
        fpp__status_claim(m); /* if another task manager holds the line, this one stays quiet */
    else
        fpp__log(FPP_LOG_INFO, "Starting executor monitor");
}

int fpp__monitor_start(fpp__monitor **out, fpp__counters *c, int interval_ms, bool progress)
{
    fpp__monitor *m = fpp__calloc(1, sizeof *m);
    if (!m)
        return FPP_ENOMEM;
    m->c = c;
    m->interval_ms = interval_ms;
    m->progress = progress;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    begin_period(m);
    int e = pthread_create(&m->th, NULL, run, m);
    if (e) {
        fpp__monitor_stop(m);
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        fpp__free(m);
        errno = e;
        return fpp__sys_error("pthread_create", "monitor");
    }
    *out = m;
    return 0;
}

void fpp__monitor_stop(fpp__monitor *m)
{
    if (!m || !atomic_load_explicit(&m->active, memory_order_relaxed))
        return;
    atomic_store_explicit(&m->active, false, memory_order_release);
    if (m->progress)
        fpp__status_release(m); /* now, on the caller's thread: the line is gone on return */
    else
        fpp__log(FPP_LOG_INFO, "Shutting down monitor...");
}

void fpp__monitor_resume(fpp__monitor *m) { begin_period(m); }

void fpp__monitor_join(fpp__monitor *m)
{
    if (!m)
        return;
    fpp__monitor_stop(m);
    pthread_mutex_lock(&m->mu);
    m->quit = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->th, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    fpp__free(m);
}

void fpp__monitor_forget(fpp__monitor *m)
{
    /* In a process other than the creator the thread does not exist, and the mutex may be a
     * copy taken by it: free the memory and touch nothing else. */
    fpp__free(m);
}
