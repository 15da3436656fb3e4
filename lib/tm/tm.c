/* tm/tm.c: a task manager's life: fpp_tm_create (attached to its executor as the sink of
 * finished jobs), fpp_tm_free, detaching when the executor is freed first, and the same in a
 * process other than the creator; the guard every public call passes; the monitor's start and
 * stop; stats and the other accessors of the tm. tm/tm.h says which file holds what. */
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tm/tm.h"

#define MAX_IN_FLIGHT_LIMIT ((size_t)1 << 28)
#define MAX_RETRIES 1000u
#define KNOWN_FLAGS \
    ((unsigned)(FPP_TM_NO_SIGINT | FPP_TM_ORDERED | FPP_TM_RETRY_FAILED | FPP_TM_PROGRESS | FPP_TM_RERUN_FAILED))
#define KNOWN_RETRY_ON ((unsigned)(FPP_RETRY_FAILED | FPP_RETRY_CRASHED | FPP_RETRY_TIMEOUT))
_Static_assert(FPP_RETRY_FAILED == 1 << FPP_FAILED && FPP_RETRY_CRASHED == 1 << FPP_CRASHED &&
                   FPP_RETRY_TIMEOUT == 1 << FPP_TIMEOUT,
               "retry_on's bits are 1 << status (outcome.c tests them so)");

/* ------------------------------------------------------------ the guard */

bool fpp__tm_busy_take(fpp_tm *tm)
{
    for (unsigned spins = 0;; spins++) {
        int expect = 0;
        if (atomic_compare_exchange_strong_explicit(&tm->busy, &expect, 1, memory_order_acquire, memory_order_relaxed))
            return true;
        if (expect != FPP__BUSY_JOURNAL)
            return false;
        /* The journal's flusher is writing what finished (microseconds). */
        if (spins < 64)
            fpp__cpu_relax();
        else
            sched_yield();
    }
}

/* Every public call on a tm starts here; 0 means go on and call fpp__tm_leave() when done. */
int fpp__tm_enter(fpp_tm *tm, const char *call, int how)
{
    if (!tm) {
        fpp__log(FPP_LOG_ERROR, "%s: NULL task manager", call);
        return FPP_EINVAL;
    }
    if (tm->owner != fpp__proc_token()) {
        fpp__log(FPP_LOG_ERROR, "%s: this executor belongs to process %ld (this is process %ld); "
                 "only its creator may use it", call, tm->owner_pid, (long)getpid());
        return FPP_ESTATE;
    }
    if (fpp__log_in_sink()) {
        fpp__log(FPP_LOG_ERROR, "%s: called from inside the log sink, which may call only the "
                 "pure functions (fpp_strerror, fpp_lookup, ...)", call);
        return FPP_ESTATE;
    }
    if (!fpp__tm_busy_take(tm)) {
        fpp__log(FPP_LOG_ERROR, "%s: a call on this task manager is in progress (a map iterator "
                 "calling back, or a second thread)", call);
        return FPP_ESTATE;
    }
    if (tm->detached && !(how & FPP__ALLOW_DETACHED)) {
        atomic_store_explicit(&tm->busy, 0, memory_order_release);
        fpp__log(FPP_LOG_ERROR, "%s: the executor of this task manager was freed; only "
                 "fpp_tm_free, fpp_completed and the tasks' accessors remain", call);
        return FPP_ESTATE;
    }
    return 0;
}

void fpp__tm_leave(fpp_tm *tm) { atomic_store_explicit(&tm->busy, 0, memory_order_release); }

/* ------------------------------------------------------------ the monitor */

void fpp__tm_monitor_check(fpp_tm *tm)
{
    bool want = tm->opts.monitor_interval_ms >= 0 || tm->progress;
    bool busy = (tm->unfinished > 0 || tm->maps) && !fpp__tm_stopped(tm);
    if (busy && !tm->mon_running && want) {
        int iv = tm->opts.monitor_interval_ms ? tm->opts.monitor_interval_ms : 1000;
        if (tm->mon) {
            fpp__monitor_resume(tm->mon); /* parked since the last busy period */
            tm->mon_running = true;
        } else if (fpp__monitor_start(&tm->mon, &tm->c, iv, tm->progress) == 0) {
            tm->mon_running = true;
        }
    } else if (!busy && tm->mon_running) {
        fpp__monitor_stop(tm->mon);
        tm->mon_running = false;
    }
}

void fpp__tm_monitor_stop(fpp_tm *tm)
{
    if (tm->mon_running) {
        fpp__monitor_stop(tm->mon);
        tm->mon_running = false;
    }
}

/* ------------------------------------------------------------- life */

int fpp_tm_create(fpp_tm **out, fpp_executor *ex, const fpp_tm_opts *opts)
{
    if (!out || !ex) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: NULL %s", !out ? "out pointer" : "executor");
        if (out)
            *out = NULL;
        return FPP_EINVAL;
    }
    *out = NULL;
    static const fpp_tm_opts zero;
    fpp_tm_opts o = opts ? *opts : zero;
    if ((int)o.error_policy < FPP_RAISE || o.error_policy > FPP_IGNORE) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: unknown error policy %d", (int)o.error_policy);
        return FPP_EINVAL;
    }
    if (o.max_in_flight > MAX_IN_FLIGHT_LIMIT) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: max_in_flight = %zu is over %zu (a negative number cast?)",
                 o.max_in_flight, MAX_IN_FLIGHT_LIMIT);
        return FPP_EINVAL;
    }
    if (o.flags & ~KNOWN_FLAGS) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: unknown flags %#x", o.flags & ~KNOWN_FLAGS);
        return FPP_EINVAL;
    }
    if (o.retry_on & ~KNOWN_RETRY_ON) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: unknown retry_on bits %#x (FPP_RETRY_FAILED, _CRASHED, _TIMEOUT)",
                 o.retry_on & ~KNOWN_RETRY_ON);
        return FPP_EINVAL;
    }
    if (o.retries > MAX_RETRIES) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: retries = %u is over %u", o.retries, MAX_RETRIES);
        return FPP_EINVAL;
    }
    if (!o.journal && (o.journal_key || o.journal_flush_ms || o.journal_result_max || (o.flags & FPP_TM_RERUN_FAILED))) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: %s without a journal (fpp_tm_opts.journal is NULL)",
                 o.flags & FPP_TM_RERUN_FAILED ? "FPP_TM_RERUN_FAILED" : "a journal option");
        return FPP_EINVAL;
    }
    if (ex->owner != fpp__proc_token()) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: this executor belongs to process %ld (this is process %ld)",
                 ex->owner_pid, (long)getpid());
        return FPP_ESTATE;
    }
    if (fpp__log_in_sink()) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: called from inside the log sink");
        return FPP_ESTATE;
    }
    if (ex->sink) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: this executor already has a task manager");
        return FPP_ESTATE;
    }
    fpp_tm *tm = fpp__calloc(1, sizeof *tm);
    if (!tm)
        return FPP_ENOMEM;
    tm->ex = ex;
    atomic_init(&tm->stats_ex, ex);
    tm->opts = o;
    tm->retry_on = o.retry_on ? o.retry_on : (unsigned)(FPP_RETRY_CRASHED | FPP_RETRY_TIMEOUT);
    if (o.flags & FPP_TM_RETRY_FAILED)
        tm->retry_on |= FPP_RETRY_FAILED;
    tm->ordered = o.flags & FPP_TM_ORDERED;
    tm->ids_on = tm->ordered;
    tm->progress = (o.flags & FPP_TM_PROGRESS) && isatty(STDERR_FILENO);
    tm->owner = ex->owner;
    tm->owner_pid = ex->owner_pid;
    tm->max_in_flight = o.max_in_flight ? o.max_in_flight
                                        : ex->opts.queue_capacity + 2 * (size_t)ex->opts.workers;
    atomic_init(&tm->c.wait_id, -1);
    pthread_mutex_init(&tm->c.text_mu, NULL);
    tm->c.wait_named = -1;
    tm->wait_named = -1;
    tm->c.expected_total = o.expected_total;
    tm->sig.slot = -1;
    tm->sig.ex = ex;
    if (o.journal) {
        int rc = fpp__journal_open(tm, &o);
        if (rc) {
            fpp__free(tm);
            return rc;
        }
        tm->opts.journal = tm->opts.journal_key = NULL; /* the caller's strings: not kept */
    }
    if (!(o.flags & FPP_TM_NO_SIGINT))
        fpp__sigint_register(&tm->sig);
    fpp__exec_attach(ex, tm, &fpp__tm_sink);
    *out = tm;
    return 0;
}

static void free_memory(fpp_tm *tm, bool owner)
{
    fpp__task_free_all(tm, owner);
    while (tm->maps)
        fpp__map_end(tm);
    if (!owner && tm->mon)
        fpp__monitor_forget(tm->mon);
    if (!owner)
        fpp__journal_forget(tm);
    fpp__idmap_fini(&tm->ids);
    fpp__free(tm->retained);
    if (owner) /* in another process the mutex may be a copy taken while locked */
        pthread_mutex_destroy(&tm->c.text_mu);
    fpp__free(tm);
}

static void unpin_one(fpp_tm *tm, fpp_task *t, bool keep) { fpp__task_unpin(tm, t, keep); }

void fpp_tm_free(fpp_tm *tm)
{
    if (!tm)
        return;
    if (tm->owner != fpp__proc_token()) {
        fpp__log(FPP_LOG_WARN, "fpp_tm_free: this executor belongs to process %ld (this is process %ld); "
                 "releasing only this process's memory", tm->owner_pid, (long)getpid());
        fpp__sigint_forget(&tm->sig);
        if (tm->ex && tm->ex->sink == tm)
            fpp__exec_attach(tm->ex, NULL, NULL);
        free_memory(tm, false);
        return;
    }
    if (fpp__tm_enter(tm, "fpp_tm_free", FPP__ALLOW_DETACHED) != 0)
        return; /* inside the sink or another call: freeing now would pull the floor away */
    if (!tm->detached) {
        fpp__sigint_unregister(&tm->sig);
        if (tm->unfinished || tm->maps)
            fpp__log(FPP_LOG_INFO, "fpp_tm_free: cancelled %zu unfinished task(s)%s", tm->unfinished,
                     tm->maps ? " and stopped the map(s) in progress" : "");
        tm->closing = true; /* nothing is handed out from here on */
        fpp__tm_cancel_all(tm, false);
        /* The executor finished every task it held (CANCELLED) before cancel returned:
         * abandoned work never comes back to a freed task manager. */
        fpp__task_for_each_live(tm, unpin_one, false);
        fpp__journal_close(tm); /* what finished, written and made durable */
        fpp__exec_attach(tm->ex, NULL, NULL);
    }
    if (tm->mon)
        fpp__monitor_join(tm->mon);
    tm->mon = NULL;
    free_memory(tm, true);
}

int fpp__tm_detach(void *arg)
{
    fpp_tm *tm = arg;
    if (!fpp__tm_busy_take(tm)) {
        fpp__log(FPP_LOG_ERROR, "fpp_executor_free: a call on its task manager is in progress (a map iterator "
                 "calling back, or a second thread); not freed");
        return FPP_ESTATE;
    }
    fpp__sigint_unregister(&tm->sig);
    if (tm->unfinished || tm->maps)
        fpp__log(FPP_LOG_INFO, "fpp_executor_free: cancelled %zu unfinished task(s) of its task manager%s",
                 tm->unfinished, tm->maps ? " and stopped the map(s) in progress" : "");
    tm->detached = true;
    fpp__tm_cancel_all(tm, false);
    fpp__tm_drop_done(tm); /* nothing can hand them out any more */
    fpp__journal_close(tm); /* nothing finishes any more: written, made durable, closed */
    if (tm->mon)
        fpp__monitor_join(tm->mon);
    tm->mon = NULL;
    tm->mon_running = false;
    /* What the caller still holds (the current task, kept, retained, the failure) must not
     * point into the executor's memory once it is gone. */
    fpp__task_for_each_live(tm, unpin_one, true);
    tm->restarts_final = atomic_load(&tm->ex->restarts);
    tm->ranks_lost_final = atomic_load(&tm->ex->ranks_lost);
    atomic_store(&tm->stats_ex, NULL);
    fpp__exec_attach(tm->ex, NULL, NULL);
    tm->ex = NULL;
    fpp__tm_leave(tm);
    return 0;
}

void fpp__tm_forget_executor(void *arg)
{
    fpp_tm *tm = arg;
    tm->ex = NULL;
}

/* ------------------------------------------------------------- accessors */

size_t fpp_completed(fpp_tm *tm, fpp_task *const **tasks)
{
    if (tasks)
        *tasks = NULL;
    if (!tasks || fpp__tm_enter(tm, "fpp_completed", FPP__ALLOW_DETACHED) != 0)
        return 0;
    size_t n = 0;
    if (tm->opts.retain_completed) {
        *tasks = tm->retained;
        n = tm->nretained;
    }
    fpp__tm_leave(tm);
    return n;
}

const fpp_task *fpp_tm_failure(const fpp_tm *tm) { return tm ? tm->failure : NULL; }

void fpp_tm_stats(const fpp_tm *tm, fpp_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!tm)
        return;
    const fpp__counters *c = &tm->c;
    /* A4: acquire; pairs with R4 in bump. Outcomes first, submissions last: a snapshot never
     * shows more tasks finished than submitted. */
    out->done = atomic_load_explicit(&c->done, memory_order_acquire);
    out->failed = atomic_load_explicit(&c->failed, memory_order_acquire);
    out->crashed = atomic_load_explicit(&c->crashed, memory_order_acquire);
    out->timed_out = atomic_load_explicit(&c->timed_out, memory_order_acquire);
    out->cancelled = atomic_load_explicit(&c->cancelled, memory_order_acquire);
    out->retried = atomic_load_explicit(&c->retried, memory_order_acquire);
    out->skipped = atomic_load_explicit(&c->skipped, memory_order_acquire);
    out->in_flight = atomic_load_explicit(&c->in_flight, memory_order_relaxed);
    out->submitted = atomic_load_explicit(&c->submitted, memory_order_acquire);
    const fpp_executor *ex = atomic_load(&tm->stats_ex);
    out->worker_restarts = ex ? atomic_load_explicit(&ex->restarts, memory_order_relaxed) : tm->restarts_final;
    out->ranks_lost = ex ? atomic_load_explicit(&ex->ranks_lost, memory_order_relaxed) : tm->ranks_lost_final;
}
