/* tm.c: the task manager, futureproof's TaskManager in C: submit, lazy map with
 * backpressure, completion-order results, error policies, the monitor and Ctrl-C.
 *
 * Where a task is: PENDING (the tm's queue, not yet taken by the executor), EXEC (in the
 * executor), DONEQ (finished, not yet handed out), CURRENT (handed out by the last
 * fpp_as_completed; recycled at the next call unless retained), FREE. `unfinished` counts
 * PENDING + EXEC; the map pulls an item only while unfinished + |DONEQ| < max_in_flight, and
 * fpp_submit blocks only while unfinished >= max_in_flight.
 *
 * Everything here runs on the caller's thread, inside its calls (a tm is used by one thread
 * at a time); the executor hands finished tasks back through fpp__tm_finished during poll.
 * Raising and interrupting are applied after poll returns, never from inside it, so the
 * executor is never re-entered. Lock order: no lock is held here; the monitor thread only
 * reads `finished` (relaxed atomic) and the stats are relaxed atomics. */
#include <string.h>

#include "fpp_internal.h"


#define SLAB 256
#define MAX_IN_FLIGHT_LIMIT ((size_t)1 << 28)

typedef struct map {
    int fn;
    fpp_next next;
    void *state;
    uint64_t items;
    struct map *link;
} map;

struct fpp_tm {
    fpp_executor *ex;
    fpp_tm_opts opts;
    size_t max_in_flight;
    int64_t next_id;
    fpp__tq pending, doneq;
    size_t unfinished;
    fpp_task *current;
    fpp_task *failure;
    bool raised, interrupted, cancelled;
    fpp_task **kept;
    size_t nkept, capkept;
    fpp_task *freelist;
    void **slabs;
    size_t nslabs, capslabs;
    map *maps, *maps_tail;
    int map_error;
    fpp__monitor *mon;
    bool mon_running;
    fpp__sigint_reg sig;
    _Atomic uint64_t finished; /* for the monitor: tasks that ran to an outcome */
    _Atomic uint64_t submitted, done, failed, crashed, timed_out, cancelled_n;
};

/* ----------------------------------------------------------------- tasks */

static fpp_task *task_new(fpp_tm *tm)
{
    if (!tm->freelist) {
        if (tm->nslabs == tm->capslabs) {
            size_t cap = tm->capslabs ? tm->capslabs * 2 : 16;
            void **s = fpp__realloc(tm->slabs, cap * sizeof *s);
            if (!s)
                return NULL;
            tm->slabs = s;
            tm->capslabs = cap;
        }
        fpp_task *slab = fpp__calloc(SLAB, sizeof *slab);
        if (!slab)
            return NULL;
        tm->slabs[tm->nslabs++] = slab;
        for (int i = SLAB - 1; i >= 0; i--) {
            slab[i].next = tm->freelist;
            tm->freelist = &slab[i];
        }
    }
    fpp_task *t = tm->freelist;
    tm->freelist = t->next;
    memset(t, 0, offsetof(fpp_task, arg_inline));
    return t;
}

static bool is_kept(fpp_tm *tm, fpp_task *t)
{
    return t->where == FPP__AT_KEPT || t == tm->failure;
}

static void task_release(fpp_tm *tm, fpp_task *t)
{
    if (!t || is_kept(tm, t))
        return;
    fpp__task_clear(t);
    t->where = FPP__AT_FREE;
    t->next = tm->freelist;
    tm->freelist = t;
}

static int keep(fpp_tm *tm, fpp_task *t)
{
    if (tm->nkept == tm->capkept) {
        size_t cap = tm->capkept ? tm->capkept * 2 : 64;
        fpp_task **k = fpp__realloc(tm->kept, cap * sizeof *k);
        if (!k)
            return FPP_ENOMEM;
        tm->kept = k;
        tm->capkept = cap;
    }
    tm->kept[tm->nkept++] = t;
    return 0;
}

/* ------------------------------------------------------------ outcomes */

void fpp__tm_finished(fpp_tm *tm, fpp_task *t)
{
    tm->unfinished--;
    switch (t->status) {
    case FPP_DONE: atomic_fetch_add_explicit(&tm->done, 1, memory_order_relaxed); break;
    case FPP_FAILED: atomic_fetch_add_explicit(&tm->failed, 1, memory_order_relaxed); break;
    case FPP_CRASHED: atomic_fetch_add_explicit(&tm->crashed, 1, memory_order_relaxed); break;
    case FPP_TIMEOUT: atomic_fetch_add_explicit(&tm->timed_out, 1, memory_order_relaxed); break;
    case FPP_CANCELLED: atomic_fetch_add_explicit(&tm->cancelled_n, 1, memory_order_relaxed); break;
    }
    if (t->status != FPP_CANCELLED)
        atomic_fetch_add_explicit(&tm->finished, 1, memory_order_relaxed);

    bool failed = t->status == FPP_FAILED || t->status == FPP_CRASHED || t->status == FPP_TIMEOUT;
    if (failed && !tm->raised && !tm->interrupted) {
        if (tm->opts.error_policy == FPP_RAISE) {
            tm->raised = true;
            tm->failure = t;
            t->where = FPP__AT_KEPT;
            if (tm->opts.retain_completed)
                keep(tm, t);
            fpp__log(FPP_LOG_ERROR, "task %lld (%s, %zu-byte argument) %s: %s; raising",
                     (long long)t->id, fpp_fn_name(t->fn) ? fpp_fn_name(t->fn) : "?", t->arg_len,
                     fpp_status_name(t->status), fpp_task_error(t));
            return;
        }
        if (tm->opts.error_policy == FPP_LOG)
            fpp__log(FPP_LOG_ERROR, "task %lld (%s, %zu-byte argument) %s: %s", (long long)t->id,
                     fpp_fn_name(t->fn) ? fpp_fn_name(t->fn) : "?", t->arg_len,
                     fpp_status_name(t->status), fpp_task_error(t));
    }
    if (tm->opts.retain_completed && keep(tm, t) == 0)
        t->where = FPP__AT_KEPT;
    if (tm->raised || tm->interrupted) {
        /* Never handed out: the call in progress returns FPP_ETASK or FPP_EINTR. */
        task_release(tm, t);
        return;
    }
    if (t->where != FPP__AT_KEPT)
        t->where = FPP__AT_DONEQ;
    fpp__tq_push(&tm->doneq, t);
}

bool fpp__tm_halted(const fpp_tm *tm) { return tm->raised || tm->interrupted; }

/* ------------------------------------------------------------- feeding */

static void monitor_check(fpp_tm *tm)
{
    bool busy = tm->unfinished > 0 || tm->maps;
    if (busy && !tm->mon_running && tm->opts.monitor_interval_ms >= 0) {
        if (tm->mon) {
            fpp__monitor_join(tm->mon);
            tm->mon = NULL;
        }
        int iv = tm->opts.monitor_interval_ms ? tm->opts.monitor_interval_ms : 1000;
        if (fpp__monitor_start(&tm->mon, &tm->finished, iv) == 0)
            tm->mon_running = true;
    } else if (!busy && tm->mon_running) {
        fpp__monitor_stop(tm->mon);
        tm->mon_running = false;
    }
}

static fpp_task *make_task(fpp_tm *tm, int fn, const void *arg, size_t len, bool oversize)
{
    fpp_task *t = task_new(tm);
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg_len = len;
    t->tag = UINT32_MAX;
    if (!oversize) {
        t->arg = t->arg_inline;
        if (len > sizeof t->arg_inline) {
            t->arg = fpp__malloc(len);
            if (!t->arg) {
                t->next = tm->freelist;
                tm->freelist = t;
                return NULL;
            }
        }
        if (len)
            memcpy(t->arg, arg, len);
    }
    t->id = tm->next_id++;
    t->where = FPP__AT_PENDING;
    tm->unfinished++;
    atomic_fetch_add_explicit(&tm->submitted, 1, memory_order_relaxed);
    return t;
}

/* Pulls one item of the first map. Returns 1 if a task was made, 0 if the map ended. */
static int pull(fpp_tm *tm)
{
    map *m = tm->maps;
    const void *arg = NULL;
    size_t len = 0;
    int rc = m->next(m->state, &arg, &len);
    if (rc > 0 && !arg && len) {
        fpp__log(FPP_LOG_ERROR, "map: the iterator gave NULL with %zu bytes", len);
        rc = FPP_EINVAL;
    }
    if (rc <= 0) {
        if (rc < 0) {
            fpp__log(FPP_LOG_ERROR, "map over %s: the iterator returned %d after %llu item(s); the map stops there",
                     fpp_fn_name(m->fn), rc, (unsigned long long)m->items);
            if (!tm->map_error)
                tm->map_error = rc;
        }
        tm->maps = m->link;
        if (!tm->maps)
            tm->maps_tail = NULL;
        fpp__free(m);
        return 0;
    }
    bool oversize = len > tm->ex->opts.max_arg_size;
    fpp_task *t = make_task(tm, m->fn, arg, len, oversize);
    if (!t) {
        fpp__log(FPP_LOG_ERROR, "map: out of memory for item %llu; the map stops there", (unsigned long long)m->items);
        if (!tm->map_error)
            tm->map_error = FPP_ENOMEM;
        tm->maps = m->link;
        if (!tm->maps)
            tm->maps_tail = NULL;
        fpp__free(m);
        return 0;
    }
    m->items++;
    if (oversize) {
        fpp__task_fail(t, FPP_FAILED, 0, "FPP_ETOOBIG: argument of %zu bytes exceeds max_arg_size (%zu bytes)",
                       len, tm->ex->opts.max_arg_size);
        fpp__tm_finished(tm, t); /* it never reached the executor */
    } else {
        fpp__tq_push(&tm->pending, t);
    }
    return 1;
}

/* Pulls map items while there is room, hands pending tasks to the executor. */
static void feed(fpp_tm *tm)
{
    if (tm->raised || tm->interrupted)
        return;
    while (tm->maps && tm->unfinished + tm->doneq.n < tm->max_in_flight && !tm->raised)
        pull(tm);
    int sent = 0;
    bool polled = false;
    while (tm->pending.head && !tm->raised) {
        fpp_task *t = tm->pending.head;
        int rc = tm->ex->ops->dispatch(tm->ex, t);
        if (rc == 1) {
            if (polled)
                break;
            /* Full: harvest what is ready (no wait) and try once more, so that a caller who
             * submits everything first still keeps the workers busy. */
            polled = true;
            if (sent) {
                tm->ex->ops->flush(tm->ex);
                sent = 0;
            }
            tm->ex->ops->poll(tm->ex, 0);
            continue;
        }
        fpp__tq_pop(&tm->pending);
        if (rc < 0) {
            fpp__task_fail(t, FPP_FAILED, 0, "could not hand the task to the executor: %s", fpp_strerror(rc));
            fpp__tm_finished(tm, t); /* it never reached the executor */
            continue;
        }
        t->where = FPP__AT_EXEC;
        sent++;
    }
    if (sent)
        tm->ex->ops->flush(tm->ex);
}

/* ------------------------------------------------------ stopping early */

static void cancel_pending(fpp_tm *tm)
{
    while (tm->pending.head) {
        fpp_task *t = fpp__tq_pop(&tm->pending);
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t); /* it never reached the executor */
    }
    while (tm->maps) {
        map *m = tm->maps;
        tm->maps = m->link;
        fpp__free(m);
    }
    tm->maps_tail = NULL;
}

static void cancel_all(fpp_tm *tm, bool wait)
{
    if (tm->cancelled)
        return;
    tm->cancelled = true;
    cancel_pending(tm);
    tm->ex->ops->cancel(tm->ex, wait);
}

static int interrupt(fpp_tm *tm)
{
    fpp__sigint_cleanup_begin();
    tm->interrupted = true;
    fpp__log(FPP_LOG_WARN, "SIGINT: cancelling %zu unfinished task(s)", tm->unfinished);
    /* Finished tasks not handed out yet stay finished; nothing is handed out any more. */
    while (tm->doneq.head)
        task_release(tm, fpp__tq_pop(&tm->doneq));
    cancel_all(tm, true);
    if (tm->mon_running) {
        fpp__monitor_stop(tm->mon);
        tm->mon_running = false;
    }
    fpp__sigint_restore();
    fpp__sigint_cleanup_end();
    return FPP_EINTR;
}

/* ------------------------------------------------------ the blocking loop */

enum goal { ROOM, NEXT, ALL };

static bool nothing_left(fpp_tm *tm) { return tm->unfinished == 0 && !tm->maps; }

/* deadline_ns: INT64_MAX waits for ever; otherwise FPP_ETIMEDOUT once it passes (0: look once). */
static int drive(fpp_tm *tm, enum goal g, int64_t deadline_ns)
{
    bool sig = tm->sig.slot >= 0;
    if (sig)
        fpp__sigint_enter(&tm->sig);
    int rc;
    for (;;) {
        if (tm->raised) {
            cancel_all(tm, false);
            rc = FPP_ETASK;
            break;
        }
        if (sig && atomic_exchange(&tm->sig.hit, 0)) {
            rc = interrupt(tm);
            break;
        }
        feed(tm);
        if (tm->raised)
            continue;
        if (g == ALL)
            while (tm->doneq.head)
                task_release(tm, fpp__tq_pop(&tm->doneq));
        if (g == ROOM && tm->unfinished < tm->max_in_flight) {
            rc = 0;
            break;
        }
        if (g == NEXT && tm->doneq.head) {
            rc = 1;
            break;
        }
        if (g != ROOM && nothing_left(tm)) {
            rc = tm->map_error;
            tm->map_error = 0;
            break;
        }
        if (deadline_ns != INT64_MAX && deadline_ns > 0 && fpp__now_ns() >= deadline_ns) {
            rc = FPP_ETIMEDOUT;
            break;
        }
        int n = tm->ex->ops->poll(tm->ex, deadline_ns);
        if (n < 0) {
            rc = n;
            break;
        }
        if (deadline_ns == 0 && n == 0 && !tm->doneq.head && !tm->raised) {
            rc = FPP_ETIMEDOUT;
            break;
        }
    }
    if (sig)
        fpp__sigint_leave(&tm->sig);
    monitor_check(tm);
    return rc;
}

static int state_error(const fpp_tm *tm)
{
    if (tm->raised)
        return FPP_ETASK;
    if (tm->interrupted)
        return FPP_EINTR;
    return 0;
}

/* ------------------------------------------------------------- public */

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
    if (o.flags & ~(unsigned)FPP_TM_NO_SIGINT) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: unknown flags %#x", o.flags);
        return FPP_EINVAL;
    }
    if (ex->tm) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: this executor already has a task manager");
        return FPP_ESTATE;
    }
    fpp_tm *tm = fpp__calloc(1, sizeof *tm);
    if (!tm)
        return FPP_ENOMEM;
    tm->ex = ex;
    tm->opts = o;
    tm->max_in_flight = o.max_in_flight ? o.max_in_flight
                                        : ex->opts.queue_capacity + 2 * (size_t)ex->opts.workers;
    tm->sig.slot = -1;
    tm->sig.ex = ex;
    if (!(o.flags & FPP_TM_NO_SIGINT))
        fpp__sigint_register(&tm->sig);
    ex->tm = tm;
    *out = tm;
    return 0;
}

void fpp_tm_free(fpp_tm *tm)
{
    if (!tm)
        return;
    fpp__sigint_unregister(&tm->sig);
    tm->interrupted = tm->interrupted || !tm->raised; /* nothing is handed out from here on */
    cancel_all(tm, false);
    /* Abandoned work must not come back to a freed task manager: the pool has finished every
     * task it held (CANCELLED) before cancel returned. */
    if (tm->mon)
        fpp__monitor_join(tm->mon);
    tm->ex->tm = NULL;
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        for (int j = 0; j < SLAB; j++)
            fpp__task_clear(&slab[j]);
        fpp__free(slab);
    }
    while (tm->maps) {
        map *m = tm->maps;
        tm->maps = m->link;
        fpp__free(m);
    }
    fpp__free(tm->slabs);
    fpp__free(tm->kept);
    fpp__free(tm);
}

static int64_t submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
    if (!tm) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit: NULL task manager");
        return FPP_EINVAL;
    }
    if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit: no function with id %d", fn);
        return FPP_ENOFN;
    }
    if (!arg && arg_len) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit: NULL argument with length %zu", arg_len);
        return FPP_EINVAL;
    }
    if (arg_len > tm->ex->opts.max_arg_size) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit(%s): argument of %zu bytes exceeds max_arg_size (%zu bytes)",
                 fpp_fn_name(fn), arg_len, tm->ex->opts.max_arg_size);
        return FPP_ETOOBIG;
    }
    int rc = state_error(tm);
    if (rc)
        return rc;
    if (tm->unfinished >= tm->max_in_flight) {
        rc = drive(tm, ROOM, INT64_MAX);
        if (rc < 0)
            return rc;
    }
    fpp_task *t = make_task(tm, fn, arg, arg_len, false);
    if (!t)
        return FPP_ENOMEM;
    if (o) {
        t->user = o->user;
        t->timeout_ms = o->timeout_ms;
    }
    fpp__tq_push(&tm->pending, t);
    int64_t id = t->id;
    feed(tm);
    if (!tm->mon_running)
        monitor_check(tm);
    return id;
}

int64_t fpp_submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len)
{
    return submit(tm, fn, arg, arg_len, NULL);
}

int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state)
{
    if (!tm || !next) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: NULL %s", !tm ? "task manager" : "iterator");
        return FPP_EINVAL;
    }
    if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: no function with id %d", fn);
        return FPP_ENOFN;
    }
    int rc = state_error(tm);
    if (rc)
        return rc;
    map *m = fpp__calloc(1, sizeof *m);
    if (!m)
        return FPP_ENOMEM;
    m->fn = fn;
    m->next = next;
    m->state = state;
    if (tm->maps_tail)
        tm->maps_tail->link = m;
    else
        tm->maps = m;
    tm->maps_tail = m;
    monitor_check(tm);
    feed(tm);
    return 0;
}

int fpp_as_completed(fpp_tm *tm, fpp_task **task)
{
    if (!tm || !task) {
        fpp__log(FPP_LOG_ERROR, "fpp_as_completed: NULL %s", !tm ? "task manager" : "task pointer");
        return FPP_EINVAL;
    }
    *task = NULL;
    task_release(tm, tm->current);
    tm->current = NULL;
    int rc = state_error(tm);
    if (rc == 0)
        rc = drive(tm, NEXT, INT64_MAX);
    if (rc == 1) {
        fpp_task *t = fpp__tq_pop(&tm->doneq);
        if (t->where != FPP__AT_KEPT) {
            t->where = FPP__AT_CURRENT;
            tm->current = t;
        }
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    return rc;
}

int fpp_run(fpp_tm *tm)
{
    if (!tm) {
        fpp__log(FPP_LOG_ERROR, "fpp_run: NULL task manager");
        return FPP_EINVAL;
    }
    task_release(tm, tm->current);
    tm->current = NULL;
    int rc = state_error(tm);
    if (rc)
        return rc;
    return drive(tm, ALL, INT64_MAX);
}

size_t fpp_completed(fpp_tm *tm, fpp_task *const **tasks)
{
    if (tasks)
        *tasks = NULL;
    if (!tm || !tasks || !tm->opts.retain_completed)
        return 0;
    *tasks = tm->kept;
    return tm->nkept;
}

const fpp_task *fpp_tm_failure(const fpp_tm *tm) { return tm ? tm->failure : NULL; }

void fpp_tm_stats(const fpp_tm *tm, fpp_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!tm)
        return;
    out->submitted = atomic_load_explicit(&tm->submitted, memory_order_relaxed);
    out->done = atomic_load_explicit(&tm->done, memory_order_relaxed);
    out->failed = atomic_load_explicit(&tm->failed, memory_order_relaxed);
    out->crashed = atomic_load_explicit(&tm->crashed, memory_order_relaxed);
    out->timed_out = atomic_load_explicit(&tm->timed_out, memory_order_relaxed);
    out->cancelled = atomic_load_explicit(&tm->cancelled_n, memory_order_relaxed);
    out->worker_restarts = atomic_load_explicit(&tm->ex->restarts, memory_order_relaxed);
    out->in_flight = tm->unfinished;
}

/* ------------------------------------------------ 0.2 stop-gap (issue 11)
 *
 * The MPI serve loop (lib/mpi_serve.c) needs four 0.2 calls of the SPEC before issue 10
 * lands: a bounded wait, per-task options and cancelling one task. These are the smallest
 * versions that keep the SPEC's contract for what they do; issue 10's tm.c replaces this
 * block whole (the signatures are the SPEC's). Limits until then: fpp_cancel of a task the
 * executor holds needs the executor's cancel_task (the process executor gains it with the
 * 0.2 rewrite; until then such a task runs on and fpp_cancel returns FPP_ESTATE), and only
 * executors that read fpp_task.timeout_ms apply a per-task timeout. */

int64_t fpp_submit_ex(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
    return submit(tm, fn, arg, arg_len, o);
}

void *fpp_task_user(const fpp_task *t) { return t ? t->user : NULL; }

int fpp_as_completed_for(fpp_tm *tm, fpp_task **task, int timeout_ms)
{
    if (!tm || !task) {
        fpp__log(FPP_LOG_ERROR, "fpp_as_completed_for: NULL %s", !tm ? "task manager" : "task pointer");
        return FPP_EINVAL;
    }
    *task = NULL;
    task_release(tm, tm->current);
    tm->current = NULL;
    int rc = state_error(tm);
    if (rc == 0) {
        int64_t deadline = timeout_ms < 0 ? INT64_MAX
                           : timeout_ms == 0 ? 0
                                             : fpp__now_ns() + (int64_t)timeout_ms * 1000000;
        rc = drive(tm, NEXT, deadline);
    }
    if (rc == 1) {
        fpp_task *t = fpp__tq_pop(&tm->doneq);
        if (t->where != FPP__AT_KEPT) {
            t->where = FPP__AT_CURRENT;
            tm->current = t;
        }
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    return rc;
}

int fpp_cancel(fpp_tm *tm, int64_t id)
{
    if (!tm || id < 0 || id >= tm->next_id) {
        fpp__log(FPP_LOG_ERROR, "fpp_cancel: %s", !tm ? "NULL task manager" : "no task with that id");
        return FPP_EINVAL;
    }
    fpp_task *prev = NULL;
    for (fpp_task *t = tm->pending.head; t; prev = t, t = t->next) {
        if (t->id != id)
            continue;
        if (prev)
            prev->next = t->next;
        else
            tm->pending.head = t->next;
        if (tm->pending.tail == t)
            tm->pending.tail = prev;
        tm->pending.n--;
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t);
        return 1;
    }
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        for (int j = 0; j < SLAB; j++) {
            fpp_task *t = &slab[j];
            if (t->where != FPP__AT_EXEC || t->id != id)
                continue;
            if (!tm->ex->ops->cancel_task) {
                fpp__log(FPP_LOG_WARN, "fpp_cancel(%lld): the %s executor cannot stop a task it holds",
                         (long long)id, tm->ex->ops->kind);
                return FPP_ESTATE;
            }
            return tm->ex->ops->cancel_task(tm->ex, t);
        }
    }
    return 0; /* finished already */
}
