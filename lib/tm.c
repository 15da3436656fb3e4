/* tm.c: the task manager, futureproof's TaskManager in C: submit, lazy map with
 * backpressure, results in completion or submission order, tasks you can wait for, cancel and
 * keep, retries, error policies, the monitor and the progress line, Ctrl-C and
 * fpp_tm_interrupt.
 *
 * Where a task is (fpp_task.where): PENDING (the tm's pending list: submitted or to be run
 * again, not yet taken by the executor), EXEC (in the executor), DONEQ (finished, not yet
 * handed out), CURRENT (handed out by the last fpp_as_completed; recycled at the next call
 * unless kept), KEPT (handed out or dropped, alive only because it is kept, retained or the
 * task that raised), FREE (recycled: poisoned under AddressSanitizer). `unfinished` counts
 * PENDING + EXEC. `listed` marks exactly the tasks not handed out yet (PENDING, EXEC, DONEQ);
 * the id table (idmap.c) holds them from the first fpp_wait or fpp_cancel on (with
 * FPP_TM_ORDERED, always): those calls find them there, and an issued id that is not there was
 * handed out (or dropped by fpp_run) already.
 *
 * Backpressure: the map pulls an item only while unfinished + |DONEQ| < max_in_flight;
 * fpp_submit blocks while unfinished (plus, with FPP_TM_ORDERED, the finished tasks held back
 * behind an unfinished one) >= max_in_flight. So an unread backlog and the reorder window
 * both count toward max_in_flight, and a map over 10^9 items runs in constant memory.
 *
 * FPP_TM_ORDERED: `frontier` is the oldest unfinished task's id (next_id when none); every id
 * below it is finished or handed out. `held` counts finished, unreturned tasks above it (the
 * reorder window). fpp_as_completed hands out `next_out` once it is below the frontier,
 * skipping ids taken by fpp_wait. Each id is passed once by the frontier: O(1) amortised.
 *
 * Retries: a task that comes back from the executor CRASHED or TIMEOUT (or FAILED, with
 * FPP_TM_RETRY_FAILED) and has attempts left goes back to the front of the pending list with
 * avoid_slot set to the worker it ran on; policies, counters and the caller see only the final
 * outcome, whose error names the attempts.
 *
 * Threads and calls: a tm is used by one thread at a time, and only in the process that created
 * it. Every public call checks, in this order: the process (one load, fpp__proc_token), that it
 * is not made from inside the log sink, and `busy` (a call already in progress: a map iterator
 * calling back); each refusal is FPP_ESTATE plus a log line, and touches nothing. The executor
 * hands finished tasks back through fpp__tm_finished during its calls (poll, dispatch, cancel);
 * raising and interrupting are applied after those return, never inside them, so the executor
 * is never re-entered. fpp_tm_stats may run on any thread: the counters are relaxed atomics
 * with one writer each (fpp__counters). fpp_tm_interrupt may run on any thread or in a signal
 * handler: it sets `intr` and wakes the executor (both async-signal-safe).
 *
 * Lock order: no lock is taken here. The monitor thread reads the counters only; the log lock,
 * the sigint table's lock and the executors' locks are leaves taken inside the calls made. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fpp_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define FPP__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FPP__ASAN 1
#endif
#endif
#ifdef FPP__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
/* A recycled task is poisoned as a whole: ask ASan rather than read it. */
static bool task_dead(const fpp_task *t) { return __asan_address_is_poisoned(t); }
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
static bool task_dead(const fpp_task *t) { return t->where == FPP__AT_FREE; }
#endif

#define SLAB 256
#define MAX_IN_FLIGHT_LIMIT ((size_t)1 << 28)
#define MAX_RETRIES 1000u
#define KNOWN_FLAGS \
    ((unsigned)(FPP_TM_NO_SIGINT | FPP_TM_ORDERED | FPP_TM_RETRY_FAILED | FPP_TM_PROGRESS))

typedef struct map {
    int fn;
    fpp_next next;
    void *state;
    uint64_t items;
    struct map *link;
} map;

/* A doubly linked list of tasks (next/prev), so that fpp_wait and fpp_cancel unlink in O(1). */
typedef struct tlist { fpp_task *head, *tail; size_t n; } tlist;

struct fpp_tm {
    fpp_executor *ex;       /* NULL once the executor was freed (detached) */
    _Atomic(const fpp_executor *) stats_ex; /* for fpp_tm_stats on other threads */
    uint64_t restarts_final;                /* the executor's restarts when it detached */
    fpp_tm_opts opts;
    size_t max_in_flight;
    bool ordered, progress;
    uint64_t owner;         /* fpp__proc_token() of the creating process */
    long owner_pid;
    _Atomic int busy;       /* a public call is in progress */
    _Atomic int intr;       /* fpp_tm_interrupt was called and not yet acted on */
    int64_t next_id;
    tlist pending, doneq;
    size_t unfinished;
    fpp_task *current, *failure;
    bool raised, interrupted, cancelled, closing, detached;
    fpp_task **retained;
    size_t nretained, capretained;
    /* Task memory: slabs, and a FIFO of free tasks (a recycled task is reused as late as
     * possible, which gives AddressSanitizer the longest time to catch a stale pointer). */
    void **slabs;
    size_t nslabs, capslabs;
    fpp_task **freeq;
    size_t fq_head, fq_n, fq_cap;
    fpp__idmap ids;
    bool ids_on; /* the table is kept from the first fpp_wait or fpp_cancel on (ordered: always) */
    /* FPP_TM_ORDERED */
    int64_t next_out, frontier;
    uint64_t held;
    map *maps, *maps_tail;
    int map_error;
    fpp__monitor *mon;
    bool mon_running;
    fpp__sigint_reg sig;
    fpp__counters c;
};

/* ---------------------------------------------------------------- helpers */

static void bump(_Atomic uint64_t *a)
{
    /* One writer: a load and a store, no locked instruction. R4: release; pairs with A4 in
     * fpp_tm_stats, so a reader that sees an outcome counted sees its submission counted. */
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + 1, memory_order_release);
}

static void set_unfinished(fpp_tm *tm, size_t n)
{
    tm->unfinished = n;
    atomic_store_explicit(&tm->c.in_flight, n, memory_order_relaxed);
}

static bool halted(const fpp_tm *tm) { return tm->raised || tm->interrupted || tm->closing || tm->detached; }

static const char *fn_name(int fn)
{
    const char *n = fpp_fn_name(fn);
    return n ? n : "?";
}

static void tl_push_back(tlist *l, fpp_task *t)
{
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    l->n++;
}

static void tl_push_front(tlist *l, fpp_task *t)
{
    t->prev = NULL;
    t->next = l->head;
    if (l->head)
        l->head->prev = t;
    else
        l->tail = t;
    l->head = t;
    l->n++;
}

static void tl_unlink(tlist *l, fpp_task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->next = t->prev = NULL;
    l->n--;
}

static fpp_task *tl_pop(tlist *l)
{
    fpp_task *t = l->head;
    if (t)
        tl_unlink(l, t);
    return t;
}

/* ------------------------------------------------------------ the guard */

enum { ALLOW_DETACHED = 1 };

/* Every public call on a tm starts here; 0 means go on and call leave() when done. */
static int enter(fpp_tm *tm, const char *call, int how)
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
    if (atomic_exchange_explicit(&tm->busy, 1, memory_order_acquire)) {
        fpp__log(FPP_LOG_ERROR, "%s: a call on this task manager is in progress (a map iterator "
                 "calling back, or a second thread)", call);
        return FPP_ESTATE;
    }
    if (tm->detached && !(how & ALLOW_DETACHED)) {
        atomic_store_explicit(&tm->busy, 0, memory_order_release);
        fpp__log(FPP_LOG_ERROR, "%s: the executor of this task manager was freed; only "
                 "fpp_tm_free, fpp_completed and the tasks' accessors remain", call);
        return FPP_ESTATE;
    }
    return 0;
}

static void leave(fpp_tm *tm) { atomic_store_explicit(&tm->busy, 0, memory_order_release); }

/* ---------------------------------------------------------- task memory */

static int add_slab(fpp_tm *tm)
{
    if (tm->nslabs == tm->capslabs) {
        size_t cap = tm->capslabs ? tm->capslabs * 2 : 16;
        void **s = fpp__realloc(tm->slabs, cap * sizeof *s);
        if (!s)
            return FPP_ENOMEM;
        tm->slabs = s;
        tm->capslabs = cap;
    }
    size_t qcap = (tm->nslabs + 1) * SLAB;
    fpp_task **q = fpp__malloc(qcap * sizeof *q);
    fpp_task *slab = fpp__calloc(SLAB, sizeof *slab);
    if (!q || !slab) {
        fpp__free(q);
        fpp__free(slab);
        return FPP_ENOMEM;
    }
    for (size_t i = 0; i < tm->fq_n; i++)
        q[i] = tm->freeq[(tm->fq_head + i) % tm->fq_cap];
    fpp__free(tm->freeq);
    tm->freeq = q;
    tm->fq_cap = qcap;
    tm->fq_head = 0;
    tm->slabs[tm->nslabs++] = slab;
    for (int i = 0; i < SLAB; i++) {
        slab[i].where = FPP__AT_FREE;
        POISON(&slab[i], sizeof slab[i]);
        tm->freeq[tm->fq_n++] = &slab[i];
    }
    return 0;
}

static fpp_task *task_new(fpp_tm *tm)
{
    if (!tm->fq_n && add_slab(tm) != 0)
        return NULL;
    fpp_task *t = tm->freeq[tm->fq_head];
    tm->fq_head = (tm->fq_head + 1) % tm->fq_cap;
    tm->fq_n--;
    UNPOISON(t, sizeof *t);
    memset(t, 0, offsetof(fpp_task, arg_inline));
    t->tm = tm;
    t->slot = -1;
    t->avoid_slot = -1;
    t->tag = UINT32_MAX;
    t->attempts = 1;
    return t;
}

static void unpin(fpp_tm *tm, fpp_task *t, bool keep)
{
    if (t->hold && tm->ex && tm->ex->ops->unpin)
        tm->ex->ops->unpin(tm->ex, t, keep);
}

static void recycle(fpp_tm *tm, fpp_task *t)
{
    unpin(tm, t, false);
    fpp__task_clear(t);
    t->where = FPP__AT_FREE;
    POISON(t, sizeof *t);
    tm->freeq[(tm->fq_head + tm->fq_n) % tm->fq_cap] = t;
    tm->fq_n++;
}

/* Calls fn on every task that is not free (AddressSanitizer: not poisoned). */
static void for_each_live(fpp_tm *tm, void (*fn)(fpp_tm *tm, fpp_task *t, bool arg), bool arg)
{
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        for (int j = 0; j < SLAB; j++)
            if (!task_dead(&slab[j]))
                fn(tm, &slab[j], arg);
    }
}

static void unpin_one(fpp_tm *tm, fpp_task *t, bool keep) { unpin(tm, t, keep); }

static void unlist(fpp_tm *tm, fpp_task *t)
{
    if (t->listed) {
        if (tm->ids_on)
            fpp__idmap_del(&tm->ids, t->id);
        t->listed = false;
    }
}

static void put_listed(fpp_tm *tm, fpp_task *t, bool arg)
{
    FPP__UNUSED(arg);
    if (t->listed && fpp__idmap_put(&tm->ids, t) != 0)
        tm->ids_on = false; /* reported by the caller */
}

/* The id table costs a hash insert and delete per task (about 5% of the parent's time with
 * no-op tasks), so it is built only when first needed, from the tasks not yet handed out. */
static int ids_needed(fpp_tm *tm)
{
    if (tm->ids_on)
        return 0;
    tm->ids_on = true;
    for_each_live(tm, put_listed, false);
    if (!tm->ids_on) {
        fpp__idmap_fini(&tm->ids);
        fpp__log(FPP_LOG_ERROR, "out of memory for the task id table");
        return FPP_ENOMEM;
    }
    return 0;
}

/* t leaves the task manager's hands (handed out and done with, or dropped): it stays alive
 * while kept, retained or the failure; otherwise it is recycled. */
static void let_go(fpp_tm *tm, fpp_task *t)
{
    unlist(tm, t);
    if (t->keeps || t->retained || t == tm->failure) {
        t->where = FPP__AT_KEPT;
        return;
    }
    recycle(tm, t);
}

static void retain(fpp_tm *tm, fpp_task *t)
{
    if (tm->nretained == tm->capretained) {
        size_t cap = tm->capretained ? tm->capretained * 2 : 64;
        fpp_task **k = fpp__realloc(tm->retained, cap * sizeof *k);
        if (!k) {
            fpp__log(FPP_LOG_ERROR, "retain_completed: out of memory; task %lld is not retained", (long long)t->id);
            return;
        }
        tm->retained = k;
        tm->capretained = cap;
    }
    tm->retained[tm->nretained++] = t;
    t->retained = true;
    unpin(tm, t, true); /* it lives until fpp_tm_free: it must not hold a worker's arena */
}

/* --------------------------------------------------------- ordered results */

static void publish_wait(fpp_tm *tm)
{
    atomic_store_explicit(&tm->c.held, tm->held, memory_order_relaxed);
    atomic_store_explicit(&tm->c.wait_id, tm->held ? tm->frontier : -1, memory_order_relaxed);
}

/* The frontier's task finished: move on to the next unfinished one. */
static void advance(fpp_tm *tm)
{
    int64_t f = tm->frontier + 1;
    while (f < tm->next_id) {
        fpp_task *t = fpp__idmap_get(&tm->ids, f);
        if (t && t->where != FPP__AT_DONEQ)
            break;
        if (t)
            tm->held--; /* finished above the old frontier: it was held back */
        f++;
    }
    tm->frontier = f;
    atomic_store_explicit(&tm->c.wait_since_ns, tm->held ? fpp__now_ns() : 0, memory_order_relaxed);
    publish_wait(tm);
}

static void order_done(fpp_tm *tm, fpp_task *t)
{
    if (t->id > tm->frontier) {
        if (tm->held++ == 0)
            atomic_store_explicit(&tm->c.wait_since_ns, fpp__now_ns(), memory_order_relaxed);
        publish_wait(tm);
    } else if (t->id == tm->frontier) {
        advance(tm);
    }
}

/* A finished task left the table other than in order (fpp_wait, dropped). */
static void order_gone(fpp_tm *tm, fpp_task *t)
{
    if (tm->ordered && t->id > tm->frontier) {
        tm->held--;
        publish_wait(tm);
    }
}

static fpp_task *peek_next(fpp_tm *tm)
{
    if (!tm->ordered)
        return tm->doneq.head;
    while (tm->next_out < tm->frontier) {
        fpp_task *t = fpp__idmap_get(&tm->ids, tm->next_out);
        if (t)
            return t; /* below the frontier: finished */
        tm->next_out++; /* taken by fpp_wait or dropped */
    }
    return NULL;
}

/* ------------------------------------------------------------ outcomes */

static const char *verb(fpp_status s)
{
    switch (s) {
    case FPP_CRASHED: return "crashed";
    case FPP_TIMEOUT: return "timed out";
    case FPP_FAILED: return "failed";
    case FPP_DONE: return "done";
    case FPP_CANCELLED: return "cancelled";
    }
    return "ended";
}

/* "crashed on 3 attempts; last: worker 4312 killed by SIGSEGV while running task 17" */
static void name_attempts(fpp_task *t)
{
    char last[FPP__ERR_MAX + 64], earlier[64] = "";
    snprintf(last, sizeof last, "%s", fpp_task_error(t));
    unsigned others = t->past & ~(1u << t->status);
    if (others) {
        size_t n = 0;
        for (int s = FPP_FAILED; s <= FPP_TIMEOUT; s++)
            if (others & (1u << s)) {
                int k = snprintf(earlier + n, sizeof earlier - n, "%s%s", n ? ", " : " (earlier attempts also ", verb((fpp_status)s));
                if (k > 0)
                    n = FPP__MIN(n + (size_t)k, sizeof earlier - 2);
            }
        snprintf(earlier + n, sizeof earlier - n, ")");
    }
    fpp__task_fail(t, t->status, t->signo, "%s on %u attempts%s; last: %s", verb(t->status), t->attempts,
                   earlier, last);
}

void fpp__tm_finished(fpp_tm *tm, fpp_task *t)
{
    fpp_status st = t->status;
    bool bad = st == FPP_FAILED || st == FPP_CRASHED || st == FPP_TIMEOUT;
    bool from_exec = t->where == FPP__AT_EXEC;
    if (bad && from_exec && !halted(tm) && t->attempts <= tm->opts.retries &&
        (st != FPP_FAILED || (tm->opts.flags & FPP_TM_RETRY_FAILED))) {
        /* Run it again, elsewhere; nobody sees this outcome. */
        fpp__log(FPP_LOG_DEBUG, "task %lld (%s) %s on attempt %u: %s; running it again", (long long)t->id,
                 fn_name(t->fn), verb(st), t->attempts, fpp_task_error(t));
        t->past |= (uint8_t)(1u << st);
        t->avoid_slot = t->slot;
        t->attempts++;
        bump(&tm->c.retried);
        unpin(tm, t, false);
        t->where = FPP__AT_PENDING;
        tl_push_front(&tm->pending, t);
        return;
    }
    set_unfinished(tm, tm->unfinished - 1);
    if (bad && t->attempts > 1)
        name_attempts(t);
    switch (st) {
    case FPP_DONE: bump(&tm->c.done); break;
    case FPP_FAILED: bump(&tm->c.failed); break;
    case FPP_CRASHED: bump(&tm->c.crashed); break;
    case FPP_TIMEOUT: bump(&tm->c.timed_out); break;
    case FPP_CANCELLED: bump(&tm->c.cancelled); break;
    }
    if (st != FPP_CANCELLED)
        bump(&tm->c.finished);
    if (tm->opts.retain_completed)
        retain(tm, t);

    if (bad && !halted(tm)) {
        if (tm->opts.error_policy == FPP_RAISE) {
            tm->raised = true;
            tm->failure = t;
            unpin(tm, t, true); /* it lives until fpp_tm_free */
            fpp__log(FPP_LOG_ERROR, "task %lld (%s, %zu-byte argument) %s: %s; raising", (long long)t->id,
                     fn_name(t->fn), t->arg_len, fpp_status_name(st), fpp_task_error(t));
            let_go(tm, t);
            return;
        }
        if (tm->opts.error_policy == FPP_LOG)
            fpp__log(FPP_LOG_ERROR, "task %lld (%s, %zu-byte argument) %s: %s", (long long)t->id, fn_name(t->fn),
                     t->arg_len, fpp_status_name(st), fpp_task_error(t));
    }
    if (halted(tm)) {
        /* Never handed out: the call in progress returns FPP_ETASK, FPP_EINTR, or the tm is
         * going away. */
        let_go(tm, t);
        return;
    }
    t->where = FPP__AT_DONEQ;
    tl_push_back(&tm->doneq, t);
    if (tm->ordered)
        order_done(tm, t);
}

bool fpp__tm_halted(const fpp_tm *tm) { return tm->raised || tm->interrupted; }

/* ------------------------------------------------------------- feeding */

static void monitor_check(fpp_tm *tm)
{
    bool want = tm->opts.monitor_interval_ms >= 0 || tm->progress;
    bool busy = (tm->unfinished > 0 || tm->maps) && !halted(tm);
    if (busy && !tm->mon_running && want) {
        if (tm->mon) {
            fpp__monitor_join(tm->mon);
            tm->mon = NULL;
        }
        int iv = tm->opts.monitor_interval_ms ? tm->opts.monitor_interval_ms : 1000;
        if (fpp__monitor_start(&tm->mon, &tm->c, iv, tm->progress) == 0)
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
    t->id = tm->next_id;
    if (!oversize) {
        t->arg = t->arg_inline;
        if (len > sizeof t->arg_inline) {
            t->arg = fpp__malloc(len);
            if (!t->arg) {
                recycle(tm, t);
                return NULL;
            }
        }
        if (len)
            memcpy(t->arg, arg, len);
    }
    if (tm->ids_on && fpp__idmap_put(&tm->ids, t) != 0) {
        recycle(tm, t);
        return NULL;
    }
    t->listed = true;
    tm->next_id++;
    t->where = FPP__AT_PENDING;
    set_unfinished(tm, tm->unfinished + 1);
    bump(&tm->c.submitted);
    return t;
}

static void end_map(fpp_tm *tm)
{
    map *m = tm->maps;
    tm->maps = m->link;
    if (!tm->maps)
        tm->maps_tail = NULL;
    fpp__free(m);
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
                     fn_name(m->fn), rc, (unsigned long long)m->items);
            if (!tm->map_error)
                tm->map_error = rc;
        }
        end_map(tm);
        return 0;
    }
    bool oversize = len > tm->ex->opts.max_arg_size;
    fpp_task *t = make_task(tm, m->fn, arg, len, oversize);
    if (!t) {
        fpp__log(FPP_LOG_ERROR, "map: out of memory for item %llu; the map stops there", (unsigned long long)m->items);
        if (!tm->map_error)
            tm->map_error = FPP_ENOMEM;
        end_map(tm);
        return 0;
    }
    m->items++;
    if (oversize) {
        fpp__task_fail(t, FPP_FAILED, 0, "FPP_ETOOBIG: argument of %zu bytes exceeds max_arg_size (%zu bytes)",
                       len, tm->ex->opts.max_arg_size);
        fpp__tm_finished(tm, t); /* it never reached the executor */
    } else {
        tl_push_back(&tm->pending, t);
    }
    return 1;
}

/* Pulls map items while there is room, hands pending tasks to the executor. */
static void feed(fpp_tm *tm)
{
    if (halted(tm))
        return;
    while (tm->maps && tm->unfinished + tm->doneq.n < tm->max_in_flight && !tm->raised)
        pull(tm);
    int sent = 0;
    bool polled = false;
    while (tm->pending.head && !tm->raised) {
        /* Off the list before the executor sees it: dispatch and poll may finish other tasks,
         * and a retry goes to the front of this list. */
        fpp_task *t = tl_pop(&tm->pending);
        int rc = tm->ex->ops->dispatch(tm->ex, t);
        if (rc == 1) {
            tl_push_front(&tm->pending, t);
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
        fpp_task *t = tl_pop(&tm->pending);
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t); /* it never reached the executor */
    }
    while (tm->maps)
        end_map(tm);
}

static void cancel_all(fpp_tm *tm, bool wait)
{
    if (tm->cancelled)
        return;
    tm->cancelled = true;
    cancel_pending(tm);
    if (tm->ex)
        tm->ex->ops->cancel(tm->ex, wait);
}

/* Finished tasks not handed out are dropped (recycled unless kept or retained). */
static void drop_done(fpp_tm *tm)
{
    while (tm->doneq.head) {
        fpp_task *t = tl_pop(&tm->doneq);
        order_gone(tm, t);
        let_go(tm, t);
    }
}

static void stop_monitor(fpp_tm *tm)
{
    if (tm->mon_running) {
        fpp__monitor_stop(tm->mon);
        tm->mon_running = false;
    }
}

/* Ctrl-C (sigint) or fpp_tm_interrupt: cancel everything, stop the workers, hand out nothing. */
static int interrupt(fpp_tm *tm, bool sigint)
{
    if (sigint)
        fpp__sigint_cleanup_begin();
    tm->interrupted = true;
    fpp__log(FPP_LOG_WARN, "%s: cancelling %zu unfinished task(s)", sigint ? "SIGINT" : "interrupted",
             tm->unfinished);
    drop_done(tm);
    cancel_all(tm, true);
    stop_monitor(tm);
    if (sigint) {
        fpp__sigint_restore();
        fpp__sigint_cleanup_end();
    }
    return FPP_EINTR;
}

/* ------------------------------------------------------ the blocking loop */

enum goal { ROOM, NEXT, ALL, ONE };

static bool nothing_left(fpp_tm *tm) { return tm->unfinished == 0 && !tm->maps; }

static bool room(fpp_tm *tm)
{
    return tm->unfinished + (tm->ordered ? tm->held : 0) < tm->max_in_flight;
}

/* Drives the executor until the goal is met: ROOM for a submit, NEXT for the next task to hand
 * out, ALL for everything, ONE for `want` to finish. deadline_ns: INT64_MAX for none, else
 * FPP_ETIMEDOUT once it passes (after one poll at least). */
static int drive(fpp_tm *tm, enum goal g, fpp_task *want, int64_t deadline_ns)
{
    bool sig = tm->sig.slot >= 0;
    if (sig)
        fpp__sigint_enter(&tm->sig);
    int rc;
    bool polled = false;
    for (;;) {
        if (tm->raised) {
            cancel_all(tm, false);
            rc = FPP_ETASK;
            break;
        }
        if (sig && atomic_exchange(&tm->sig.hit, 0)) {
            rc = interrupt(tm, true);
            break;
        }
        if (atomic_exchange(&tm->intr, 0)) {
            rc = interrupt(tm, false);
            break;
        }
        feed(tm);
        if (tm->raised)
            continue;
        if (g == ALL && tm->doneq.head) {
            /* Dropping them makes room for the map: feed again before polling, or a poll that
             * finished every task in flight would leave nothing to wake the next one. */
            drop_done(tm);
            continue;
        }
        if (g == ROOM && room(tm)) {
            rc = 0;
            break;
        }
        if (g == NEXT && peek_next(tm)) {
            rc = 1;
            break;
        }
        if (g == ONE && want->where == FPP__AT_DONEQ) {
            rc = 1;
            break;
        }
        if ((g == NEXT || g == ALL) && nothing_left(tm)) {
            rc = tm->map_error;
            tm->map_error = 0;
            break;
        }
        if (polled && deadline_ns != INT64_MAX && fpp__now_ns() >= deadline_ns) {
            rc = FPP_ETIMEDOUT;
            break;
        }
        int n = tm->ex->ops->poll(tm->ex, deadline_ns);
        polled = true;
        if (n < 0) {
            rc = n;
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

/* The task handed out by the last fpp_as_completed lives until the next call. */
static void finish_current(fpp_tm *tm)
{
    fpp_task *t = tm->current;
    tm->current = NULL;
    if (t && t->where == FPP__AT_CURRENT)
        let_go(tm, t);
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
    if (o.flags & ~KNOWN_FLAGS) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: unknown flags %#x", o.flags & ~KNOWN_FLAGS);
        return FPP_EINVAL;
    }
    if (o.retries > MAX_RETRIES) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: retries = %u is over %u", o.retries, MAX_RETRIES);
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
    if (ex->tm) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: this executor already has a task manager");
        return FPP_ESTATE;
    }
    fpp_tm *tm = fpp__calloc(1, sizeof *tm);
    if (!tm)
        return FPP_ENOMEM;
    tm->ex = ex;
    atomic_init(&tm->stats_ex, ex);
    tm->opts = o;
    tm->ordered = o.flags & FPP_TM_ORDERED;
    tm->ids_on = tm->ordered;
    tm->progress = (o.flags & FPP_TM_PROGRESS) && isatty(STDERR_FILENO);
    tm->owner = ex->owner;
    tm->owner_pid = ex->owner_pid;
    tm->max_in_flight = o.max_in_flight ? o.max_in_flight
                                        : ex->opts.queue_capacity + 2 * (size_t)ex->opts.workers;
    atomic_init(&tm->c.wait_id, -1);
    tm->c.expected_total = o.expected_total;
    tm->sig.slot = -1;
    tm->sig.ex = ex;
    if (!(o.flags & FPP_TM_NO_SIGINT))
        fpp__sigint_register(&tm->sig);
    ex->tm = tm;
    *out = tm;
    return 0;
}

static void clear_one(fpp_tm *tm, fpp_task *t, bool owner)
{
    FPP__UNUSED(tm);
    if (!owner)
        t->hold = NULL; /* another process: the executor's memory is not ours to touch */
    fpp__task_clear(t);
}

static void free_memory(fpp_tm *tm, bool owner)
{
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        UNPOISON(slab, SLAB * sizeof *slab);
        for (int j = 0; j < SLAB; j++)
            clear_one(tm, &slab[j], owner);
        fpp__free(slab);
    }
    while (tm->maps)
        end_map(tm);
    if (!owner && tm->mon)
        fpp__monitor_forget(tm->mon);
    fpp__idmap_fini(&tm->ids);
    fpp__free(tm->slabs);
    fpp__free(tm->freeq);
    fpp__free(tm->retained);
    fpp__free(tm);
}

void fpp_tm_free(fpp_tm *tm)
{
    if (!tm)
        return;
    if (tm->owner != fpp__proc_token()) {
        fpp__log(FPP_LOG_WARN, "fpp_tm_free: this executor belongs to process %ld (this is process %ld); "
                 "releasing only this process's memory", tm->owner_pid, (long)getpid());
        fpp__sigint_forget(&tm->sig);
        if (tm->ex && tm->ex->tm == tm)
            tm->ex->tm = NULL;
        free_memory(tm, false);
        return;
    }
    if (enter(tm, "fpp_tm_free", ALLOW_DETACHED) != 0)
        return; /* inside the sink or another call: freeing now would pull the floor away */
    if (!tm->detached) {
        fpp__sigint_unregister(&tm->sig);
        if (tm->unfinished || tm->maps)
            fpp__log(FPP_LOG_INFO, "fpp_tm_free: cancelled %zu unfinished task(s)%s", tm->unfinished,
                     tm->maps ? " and stopped the map(s) in progress" : "");
        tm->closing = true; /* nothing is handed out from here on */
        cancel_all(tm, false);
        /* The executor finished every task it held (CANCELLED) before cancel returned:
         * abandoned work never comes back to a freed task manager. */
        for_each_live(tm, unpin_one, false);
        tm->ex->tm = NULL;
    }
    if (tm->mon)
        fpp__monitor_join(tm->mon);
    tm->mon = NULL;
    free_memory(tm, true);
}

int fpp__tm_detach(fpp_tm *tm)
{
    if (atomic_exchange_explicit(&tm->busy, 1, memory_order_acquire)) {
        fpp__log(FPP_LOG_ERROR, "fpp_executor_free: a call on its task manager is in progress (a map iterator "
                 "calling back, or a second thread); not freed");
        return FPP_ESTATE;
    }
    fpp__sigint_unregister(&tm->sig);
    if (tm->unfinished || tm->maps)
        fpp__log(FPP_LOG_INFO, "fpp_executor_free: cancelled %zu unfinished task(s) of its task manager%s",
                 tm->unfinished, tm->maps ? " and stopped the map(s) in progress" : "");
    tm->detached = true;
    cancel_all(tm, false);
    drop_done(tm); /* nothing can hand them out any more */
    if (tm->mon)
        fpp__monitor_join(tm->mon);
    tm->mon = NULL;
    tm->mon_running = false;
    /* What the caller still holds (the current task, kept, retained, the failure) must not
     * point into the executor's memory once it is gone. */
    for_each_live(tm, unpin_one, true);
    tm->restarts_final = atomic_load(&tm->ex->restarts);
    atomic_store(&tm->stats_ex, NULL);
    tm->ex->tm = NULL;
    tm->ex = NULL;
    leave(tm);
    return 0;
}

void fpp__tm_forget_executor(fpp_tm *tm) { tm->ex = NULL; }

static int64_t submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
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
                 fn_name(fn), arg_len, tm->ex->opts.max_arg_size);
        return FPP_ETOOBIG;
    }
    int rc = state_error(tm);
    if (rc)
        return rc;
    if (atomic_exchange(&tm->intr, 0))
        return interrupt(tm, false);
    if (!room(tm)) {
        rc = drive(tm, ROOM, NULL, INT64_MAX);
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
    tl_push_back(&tm->pending, t);
    int64_t id = t->id;
    feed(tm);
    if (!tm->mon_running)
        monitor_check(tm);
    return id;
}

int64_t fpp_submit_ex(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
    int rc = enter(tm, "fpp_submit", 0);
    if (rc)
        return rc;
    int64_t id = submit(tm, fn, arg, arg_len, o);
    leave(tm);
    return id;
}

int64_t fpp_submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len)
{
    return fpp_submit_ex(tm, fn, arg, arg_len, NULL);
}

int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state)
{
    int rc = enter(tm, "fpp_map", 0);
    if (rc)
        return rc;
    if (!next) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: NULL iterator");
        rc = FPP_EINVAL;
    } else if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: no function with id %d", fn);
        rc = FPP_ENOFN;
    } else {
        rc = state_error(tm);
    }
    map *m = NULL;
    if (!rc && !(m = fpp__calloc(1, sizeof *m)))
        rc = FPP_ENOMEM;
    if (!rc) {
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
    }
    leave(tm);
    return rc;
}

static int next_task(fpp_tm *tm, fpp_task **task, int64_t deadline_ns, const char *call)
{
    int rc = enter(tm, call, 0);
    if (rc) {
        if (task)
            *task = NULL;
        return rc;
    }
    if (!task) {
        fpp__log(FPP_LOG_ERROR, "%s: NULL task pointer", call);
        leave(tm);
        return FPP_EINVAL;
    }
    *task = NULL;
    finish_current(tm);
    rc = state_error(tm);
    if (rc == 0)
        rc = drive(tm, NEXT, NULL, deadline_ns);
    if (rc == 1) {
        fpp_task *t = peek_next(tm);
        tl_unlink(&tm->doneq, t);
        if (tm->ordered)
            tm->next_out = t->id + 1;
        unlist(tm, t);
        t->where = FPP__AT_CURRENT;
        tm->current = t;
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    leave(tm);
    return rc;
}

int fpp_as_completed(fpp_tm *tm, fpp_task **task)
{
    return next_task(tm, task, INT64_MAX, "fpp_as_completed");
}

int fpp_as_completed_for(fpp_tm *tm, fpp_task **task, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : fpp__now_ns() + (int64_t)timeout_ms * 1000000;
    return next_task(tm, task, deadline, "fpp_as_completed_for");
}

int fpp_run(fpp_tm *tm)
{
    int rc = enter(tm, "fpp_run", 0);
    if (rc)
        return rc;
    finish_current(tm);
    rc = state_error(tm);
    if (rc == 0)
        rc = drive(tm, ALL, NULL, INT64_MAX);
    leave(tm);
    return rc;
}

static int check_id(fpp_tm *tm, int64_t id, const char *call)
{
    if (id < 0 || id >= tm->next_id) {
        fpp__log(FPP_LOG_ERROR, "%s: no task with id %lld (ids issued so far: 0..%lld)", call, (long long)id,
                 (long long)tm->next_id - 1);
        return FPP_EINVAL;
    }
    return 0;
}

int fpp_wait(fpp_tm *tm, int64_t id, fpp_task **task)
{
    int rc = enter(tm, "fpp_wait", 0);
    if (rc) {
        if (task)
            *task = NULL;
        return rc;
    }
    if (!task) {
        fpp__log(FPP_LOG_ERROR, "fpp_wait: NULL task pointer");
        leave(tm);
        return FPP_EINVAL;
    }
    *task = NULL;
    rc = check_id(tm, id, "fpp_wait");
    if (!rc)
        rc = state_error(tm);
    if (!rc)
        rc = ids_needed(tm);
    fpp_task *t = NULL;
    if (!rc && !(t = fpp__idmap_get(&tm->ids, id))) {
        fpp__log(FPP_LOG_ERROR, "fpp_wait: task %lld was handed out already (by fpp_as_completed or fpp_wait) "
                 "or dropped by fpp_run", (long long)id);
        rc = FPP_ESTATE;
    }
    if (!rc)
        rc = drive(tm, ONE, t, INT64_MAX); /* at once if t is finished; an interrupt first */
    if (rc == 1) {
        /* Only now is t known to be alive: any other outcome may have recycled it. */
        tl_unlink(&tm->doneq, t);
        order_gone(tm, t);
        unlist(tm, t);
        t->where = FPP__AT_KEPT;
        t->keeps++;
        unpin(tm, t, true);
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    leave(tm);
    return rc;
}

int fpp_cancel(fpp_tm *tm, int64_t id)
{
    int rc = enter(tm, "fpp_cancel", 0);
    if (rc)
        return rc;
    rc = check_id(tm, id, "fpp_cancel");
    if (!rc)
        rc = ids_needed(tm);
    fpp_task *t = rc || halted(tm) ? NULL : fpp__idmap_get(&tm->ids, id);
    if (t && t->where == FPP__AT_EXEC) {
        if (!tm->ex->ops->cancel_task) {
            fpp__log(FPP_LOG_ERROR, "fpp_cancel: the %s executor cannot cancel one task", tm->ex->ops->kind);
            rc = FPP_ESTATE;
            t = NULL;
        } else if (tm->ex->ops->cancel_task(tm->ex, t) == 1) {
            rc = 1;
            t = NULL;
        } else if (halted(tm)) {
            t = NULL; /* finishing what was ready raised: t may be gone, everything is cancelled */
        }
        /* Else the executor had finished it (DONEQ now) or, with FPP_TM_RETRY_FAILED, handed
         * it back to run again (PENDING now): alive either way, settled below. */
    }
    if (t && t->where == FPP__AT_PENDING) {
        tl_unlink(&tm->pending, t);
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t); /* it never reached the executor (this time) */
        rc = 1;
    }
    /* Otherwise: handed out, dropped, finished, or everything was cancelled already: 0. */
    monitor_check(tm);
    leave(tm);
    return rc;
}

int fpp_tm_interrupt(fpp_tm *tm)
{
    /* Async-signal-safe: atomics and a futex wake only; never logs. */
    if (!tm)
        return FPP_EINVAL;
    if (tm->owner != fpp__proc_token())
        return FPP_ESTATE;
    fpp_executor *ex = tm->ex;
    if (!ex)
        return FPP_ESTATE; /* its executor was freed: nothing runs any more */
    atomic_store(&tm->intr, 1);
    ex->ops->wake(ex);
    return 0;
}

size_t fpp_completed(fpp_tm *tm, fpp_task *const **tasks)
{
    if (tasks)
        *tasks = NULL;
    if (!tasks || enter(tm, "fpp_completed", ALLOW_DETACHED) != 0)
        return 0;
    size_t n = 0;
    if (tm->opts.retain_completed) {
        *tasks = tm->retained;
        n = tm->nretained;
    }
    leave(tm);
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
    out->in_flight = atomic_load_explicit(&c->in_flight, memory_order_relaxed);
    out->submitted = atomic_load_explicit(&c->submitted, memory_order_acquire);
    const fpp_executor *ex = atomic_load(&tm->stats_ex);
    out->worker_restarts = ex ? atomic_load_explicit(&ex->restarts, memory_order_relaxed) : tm->restarts_final;
}

/* ------------------------------------------------------ keeping tasks */

fpp_task *fpp_task_keep(fpp_task *t)
{
    if (!t)
        return NULL;
    if (task_dead(t)) {
        fpp__log(FPP_LOG_ERROR, "fpp_task_keep: this task's life has ended (recycled after the next "
                 "fpp_as_completed, or released)");
        return NULL;
    }
    fpp_tm *tm = t->tm;
    if (enter(tm, "fpp_task_keep", ALLOW_DETACHED) != 0)
        return NULL;
    if (t->keeps < UINT32_MAX)
        t->keeps++;
    unpin(tm, t, true);
    leave(tm);
    return t;
}

void fpp_task_release(fpp_task *t)
{
    if (!t)
        return;
    if (task_dead(t)) {
        fpp__log(FPP_LOG_ERROR, "fpp_task_release: this task's life has ended already (released twice?)");
        return;
    }
    fpp_tm *tm = t->tm;
    if (enter(tm, "fpp_task_release", ALLOW_DETACHED) != 0)
        return;
    if (!t->keeps)
        fpp__log(FPP_LOG_ERROR, "fpp_task_release: task %lld is not kept (released twice, or never kept)",
                 (long long)t->id);
    else if (--t->keeps == 0 && t->where == FPP__AT_KEPT)
        let_go(tm, t);
    leave(tm);
}
