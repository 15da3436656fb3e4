/* tm/tm.h: the task manager's own header, shared by the files of tm/ and by nothing else: the
 * task object, the task manager's state, and the calls its files make of each other. The task
 * manager sees executors through exec/exec.h only, never the pool (lib/LAYERS).
 *
 * The files, by concept: tm.c (a task manager's life, the guard every public call passes, stats),
 * drive.c (submit, the blocking loop and the calls that wait on it), map.c (lazy maps), order.c
 * (FPP_TM_ORDERED's window), outcome.c (what happens to a finished task: retries, counters, error
 * policies), cancel.c (fpp_cancel, cancel everything, Ctrl-C and fpp_tm_interrupt), task.c (task
 * memory, keep and release, the public accessors), idmap.c (id -> task), monitor.c and
 * progress.c (the monitor thread and the progress line), sigint.c (one Ctrl-C), journal.c (the
 * task journal: its file format, its writer and flusher thread, resume, the read API).
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
 * Threads and calls: a tm is used by one thread at a time, and only in the process that created
 * it. Every public call checks, in this order: the process (one load, fpp__proc_token), that it
 * is not made from inside the log sink, and `busy` (a call already in progress: a map iterator
 * calling back); each refusal is FPP_ESTATE plus a log line, and touches nothing. The executor
 * hands finished tasks back through the sink (outcome.c) during its calls (poll, dispatch,
 * cancel); raising and interrupting are applied after those return, never inside them, so the
 * executor is never re-entered. fpp_tm_stats may run on any thread: the counters are relaxed
 * atomics with one writer each. fpp_tm_interrupt may run on any thread or in a signal handler:
 * it sets `intr` and wakes the executor (both async-signal-safe).
 *
 * `busy` is also the journal's lock: its flusher thread takes it (FPP__BUSY_JOURNAL, by CAS from
 * 0) to write what finished while no call is in progress; a call that finds it so waits the
 * few microseconds that takes (fpp__tm_busy_take).
 *
 * Lock order: no lock is taken in tm/ but the monitor's, the journal flusher's and the
 * counters' text_mu (leaves, never held together). */
#ifndef FPP_TM_TM_H
#define FPP_TM_TM_H

#include <pthread.h>

#include "core/core.h"
#include "core/job.h"
#include "core/list.h"
#include "exec/exec.h"

enum {
    FPP__AT_FREE = 0,  /* in the task manager's free list */
    FPP__AT_PENDING,   /* submitted, not yet handed to the executor */
    FPP__AT_EXEC,      /* in the executor */
    FPP__AT_DONEQ,     /* finished, not yet returned by fpp_as_completed */
    FPP__AT_CURRENT,   /* returned by the last fpp_as_completed */
    FPP__AT_KEPT,      /* handed out or dropped; alive because kept, retained or the failure */
};

struct fpp_task {
    fpp__job job;          /* what the executor sees; job.link: the pending or done list */
    uint8_t where;
    uint8_t past;          /* outcomes of earlier attempts (bit 1 << status) */
    bool retained;         /* in the retain_completed list */
    bool listed;           /* in the id table (not yet returned) */
    uint32_t keeps;        /* fpp_task_keep count */
    struct fpp_tm *tm;     /* the task manager that owns it */
    void *user;            /* fpp_task_opts.user */
    unsigned attempts;     /* attempts started so far (1 + retries) */
    bool jrerun;           /* journal: a recorded failure run again (FPP_TM_RERUN_FAILED) */
    int64_t jstart;        /* journal: when it was first handed to the executor (the tm's
                              cached coarse clock, fpp__tm_jnow); 0: never */
};

static inline fpp_task *fpp__task_of(fpp__job *j) { return j ? FPP__CONTAINER(j, fpp_task, job) : NULL; }
static inline fpp_task *fpp__task_at(fpp__link *l) { return fpp__task_of(fpp__job_of(l)); }

/* The counters: written by the thread driving the tm (relaxed atomics, one writer each), read
 * by the monitor thread and by fpp_tm_stats from any thread. */
typedef struct fpp__counters {
    _Atomic uint64_t submitted, done, failed, crashed, timed_out, cancelled, retried;
    _Atomic uint64_t finished;  /* tasks that ran to an outcome (not cancelled), for the monitor */
    _Atomic uint64_t skipped;   /* ids an earlier run finished (journal): not run */
    _Atomic size_t in_flight;   /* unfinished tasks */
    /* FPP_TM_ORDERED: the oldest unfinished task while later finished ones wait behind it. */
    _Atomic int64_t wait_id;    /* -1: nothing waits */
    _Atomic int64_t wait_since_ns;
    _Atomic uint64_t held;      /* finished tasks held back */
    uint64_t expected_total;    /* constant: fpp_tm_opts.expected_total */
    /* Names for the monitor, written by the driving thread under text_mu only when they
     * change, read by the monitor under text_mu (monitor.c). */
    pthread_mutex_t text_mu;
    int64_t wait_named;                  /* the task wait_name names; -1: none */
    char wait_name[FPP__NAME_MAX];       /* a labelled wait_id's name */
    char last_failure[FPP__NAME_MAX + 16]; /* progress line: `task 17 "x" crashed`, or "" */
} fpp__counters;

/* idmap.c: task id -> task, for the tasks a task manager has not handed out yet (open
 * addressing, Fibonacci hashing, linear probing, backward-shift deletion). */
typedef struct fpp__idmap_slot { int64_t id; fpp_task *t; } fpp__idmap_slot;
typedef struct fpp__idmap { fpp__idmap_slot *slot; size_t mask, n; unsigned shift; } fpp__idmap;
FPP__HIDDEN int fpp__idmap_put(fpp__idmap *m, fpp_task *t); /* 0 or FPP_ENOMEM */
FPP__HIDDEN fpp_task *fpp__idmap_get(const fpp__idmap *m, int64_t id);
FPP__HIDDEN void fpp__idmap_del(fpp__idmap *m, int64_t id);
FPP__HIDDEN void fpp__idmap_fini(fpp__idmap *m);

/* sigint.c: one Ctrl-C. */
typedef struct fpp__sigint_reg {
    _Atomic int in_call;   /* 1 while inside a blocking call */
    _Atomic int hit;       /* a SIGINT arrived inside a call */
    fpp_executor *ex;      /* whose wake to call */
    int slot;              /* index in the global table, -1 when not registered */
} fpp__sigint_reg;
FPP__HIDDEN int fpp__sigint_register(fpp__sigint_reg *r);
FPP__HIDDEN void fpp__sigint_unregister(fpp__sigint_reg *r);
FPP__HIDDEN void fpp__sigint_enter(fpp__sigint_reg *r); /* entering a blocking call */
FPP__HIDDEN void fpp__sigint_leave(fpp__sigint_reg *r);
FPP__HIDDEN void fpp__sigint_restore(void); /* give SIGINT back to the application */
FPP__HIDDEN void fpp__sigint_cleanup_begin(void);
FPP__HIDDEN void fpp__sigint_cleanup_end(void);
FPP__HIDDEN void fpp__sigint_forget(fpp__sigint_reg *r); /* another process: drop, no lock */

/* monitor.c: the monitor thread. interval_ms < 0 and !progress: no thread. With progress, it
 * redraws the status line 10 times a second instead of logging monitor lines. */
typedef struct fpp__monitor fpp__monitor;
FPP__HIDDEN int fpp__monitor_start(fpp__monitor **out, fpp__counters *c, int interval_ms,
                                   bool progress);
FPP__HIDDEN void fpp__monitor_stop(fpp__monitor *m); /* ends its busy period (clears the
                                                        progress line at once) and parks the
                                                        thread; does not wait */
FPP__HIDDEN void fpp__monitor_resume(fpp__monitor *m); /* a new busy period, same thread */
FPP__HIDDEN void fpp__monitor_join(fpp__monitor *m); /* waits for it and frees it */
FPP__HIDDEN void fpp__monitor_forget(fpp__monitor *m); /* another process: free, no join */

/* The driving thread tells the monitor the names it shows (only when they change; cheap
 * otherwise): the task holding ordered results back (its label), the last failure. */
FPP__HIDDEN void fpp__monitor_name_wait(fpp__counters *c, const fpp__job *j);
FPP__HIDDEN void fpp__monitor_name_failure(fpp__counters *c, const fpp__job *j);

/* progress.c: the progress line's text from a snapshot, cut to width columns (0: no cut). */
typedef struct fpp__progress_snap {
    uint64_t finished, failed, crashed, timed_out, cancelled, total;
    double rate;              /* tasks a second; < 0: unknown yet */
    const char *waiting;      /* the task holding ordered results back, or NULL */
    double wait_s;
    const char *last_failure; /* or NULL */
} fpp__progress_snap;
FPP__HIDDEN size_t fpp__progress_format(char *buf, size_t cap, const fpp__progress_snap *s, int width);



/* journal.c: the task journal. The writer runs on the thread driving the tm (inside its calls)
 * or on the journal's flusher thread while that holds `busy` (FPP__BUSY_JOURNAL); the flusher
 * asks the driving thread to write by setting FPP__JF_DUE in tm->jflags (and waking the
 * executor), and reports a failed fdatasync with FPP__JF_ERR. */
typedef struct fpp__journal fpp__journal;
enum { FPP__JF_DUE = 1, FPP__JF_ERR = 2 };
#define FPP__BUSY_JOURNAL 2
/* Opens (creating or resuming) the journal of o->journal for tm and starts its flusher; sets
 * tm->jr and tm->resuming. 0, or FPP_EINVAL, FPP_ENOMEM, FPP_ESTATE, FPP_EMISMATCH,
 * FPP_EJOURNAL (logged). tm->ex, tm->busy and tm->jflags must be in place. */
FPP__HIDDEN int fpp__journal_open(fpp_tm *tm, const fpp_tm_opts *o);
/* Resume: true if an earlier run finished id (it is then counted recorded in this run too);
 * false to run it (*rerun: a recorded failure run again). */
FPP__HIDDEN bool fpp__journal_skip(fpp_tm *tm, int64_t id, bool *rerun);
/* Did an earlier run finish id? (For messages.) */
FPP__HIDDEN bool fpp__journal_finished_before(fpp_tm *tm, int64_t id);
/* t reached its final outcome (not FPP_CANCELLED): record it. */
FPP__HIDDEN void fpp__journal_finished(fpp_tm *tm, fpp_task *t);
/* Acts on tm->jflags: writes if due; 0, or FPP_EJOURNAL once the journal failed (tm->jfailed). */
FPP__HIDDEN int fpp__journal_service(fpp_tm *tm);
/* Writes what finished and makes it durable now, on this thread. 0 or FPP_EJOURNAL. */
FPP__HIDDEN int fpp__journal_sync(fpp_tm *tm);
/* Writes what finished now (no fdatasync: the flusher's, within a period). 0 or FPP_EJOURNAL. */
FPP__HIDDEN int fpp__journal_write(fpp_tm *tm);
/* The creating process: stops the flusher, writes, makes durable, closes. Another process:
 * closes its copy of the descriptor and frees memory, writing nothing. Both clear tm->jr. */
FPP__HIDDEN void fpp__journal_close(fpp_tm *tm);
FPP__HIDDEN void fpp__journal_forget(fpp_tm *tm);
/* CRC-32C (Castagnoli), the journal's record checksum; crc 0 to start. */
FPP__HIDDEN uint32_t fpp__crc32c(uint32_t crc, const void *data, size_t n);

/* ------------------------------------------------------------ the state */

typedef struct fpp__map fpp__map; /* map.c */

struct fpp_tm {
    fpp_executor *ex;       /* NULL once the executor was freed (detached) */
    _Atomic(const fpp_executor *) stats_ex; /* for fpp_tm_stats on other threads */
    uint64_t restarts_final;                /* the executor's restarts when it detached */
    uint64_t ranks_lost_final;              /* ... and its lost ranks */
    fpp_tm_opts opts;
    unsigned retry_on;      /* outcomes retries apply to: bit 1 << status */
    size_t max_in_flight;
    bool ordered, progress;
    uint64_t owner;         /* fpp__proc_token() of the creating process */
    long owner_pid;
    _Atomic int busy;       /* a public call is in progress */
    _Atomic int intr;       /* fpp_tm_interrupt was called and not yet acted on */
    int64_t next_id;
    fpp__list pending, doneq; /* tasks, by job.link */
    size_t unfinished;
    fpp_task *current, *failure;
    bool raised, interrupted, cancelled, closing, detached;
    fpp_task **retained;
    size_t nretained, capretained;
    /* Task memory (task.c): slabs, and a FIFO of free tasks (a recycled task is reused as late
     * as possible, which gives AddressSanitizer the longest time to catch a stale pointer). */
    void **slabs;
    size_t nslabs, capslabs;
    fpp_task **freeq;
    size_t fq_head, fq_n, fq_cap;
    fpp__idmap ids;
    bool ids_on; /* the table is kept from the first fpp_wait or fpp_cancel on (ordered: always) */
    /* FPP_TM_ORDERED (order.c) */
    int64_t next_out, frontier;
    uint64_t held;
    int64_t wait_named;     /* the last window holder whose name went to the monitor */
    fpp__map *maps, *maps_tail;
    int map_error;
    fpp__monitor *mon;
    bool mon_running;
    fpp__sigint_reg sig;
    fpp__counters c;
    /* The journal (journal.c), or NULL. */
    fpp__journal *jr;
    bool resuming;          /* it holds finished ids of earlier runs: look each id up */
    bool jfailed;           /* it could not be written: the run stopped (FPP_EJOURNAL) */
    _Atomic int jflags;     /* FPP__JF_*, set by its flusher thread */
    int64_t jnow;           /* a coarse clock reading shared by the tasks handed over or finished
                               in one pass (0: stale): one read per poll, not per task */
};

/* CLOCK_MONOTONIC_COARSE: a quarter of CLOCK_MONOTONIC's cost, to the kernel's tick (4 ms
 * here). The journal stamps every task with it (core/timing.h, FPP__JOURNAL_PLAIN_NS). */
static inline int64_t fpp__now_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The tm's clock for the journal: read once per pass of the blocking loop (and per poll). */
static inline int64_t fpp__tm_jnow(fpp_tm *tm)
{
    if (!tm->jnow)
        tm->jnow = fpp__now_coarse_ns();
    return tm->jnow;
}

/* Looks at the journal's flags (one relaxed load); acts if one is up. */
static inline void fpp__tm_journal_check(fpp_tm *tm)
{
    if (tm->jr && atomic_load_explicit(&tm->jflags, memory_order_relaxed))
        fpp__journal_service(tm);
}

/* One writer: a load and a store, no locked instruction. R4: release; pairs with A4 in
 * fpp_tm_stats, so a reader that sees an outcome counted sees its submission counted. */
static inline void fpp__tm_bump(_Atomic uint64_t *a)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + 1, memory_order_release);
}

static inline void fpp__tm_set_unfinished(fpp_tm *tm, size_t n)
{
    tm->unfinished = n;
    atomic_store_explicit(&tm->c.in_flight, n, memory_order_relaxed);
}

/* Nothing more is handed out or dispatched: raised, interrupted, being freed or detached, or
 * its journal failed. */
static inline bool fpp__tm_stopped(const fpp_tm *tm)
{
    return tm->raised || tm->interrupted || tm->closing || tm->detached || tm->jfailed;
}

static inline const char *fpp__tm_fn_name(int fn)
{
    const char *n = fpp_fn_name(fn);
    return n ? n : "?";
}

/* tm.c: the guard. Every public call on a tm starts with enter; 0 means go on and call leave. */
enum { FPP__ALLOW_DETACHED = 1 };
FPP__HIDDEN int fpp__tm_enter(fpp_tm *tm, const char *call, int how);
FPP__HIDDEN void fpp__tm_leave(fpp_tm *tm);
/* Takes `busy` (0 -> 1), waiting while the journal's flusher holds it. False: a call is in
 * progress. */
FPP__HIDDEN bool fpp__tm_busy_take(fpp_tm *tm);
/* Starts or stops the monitor thread as the tm gets busy or idle. */
FPP__HIDDEN void fpp__tm_monitor_check(fpp_tm *tm);
FPP__HIDDEN void fpp__tm_monitor_stop(fpp_tm *tm);
/* The executor's fpp_executor_free: detach (FPP_ESTATE: a call on the tm is in progress); in a
 * process other than the creator: forget the executor. */
FPP__HIDDEN int fpp__tm_detach(void *tm);
FPP__HIDDEN void fpp__tm_forget_executor(void *tm);
/* An id issued by this tm, else FPP_EINVAL with a log line. */
FPP__HIDDEN int fpp__tm_check_id(fpp_tm *tm, int64_t id, const char *call);

/* task.c: task memory. */
FPP__HIDDEN fpp_task *fpp__task_new(fpp_tm *tm);
/* A new task for fn: its argument copied (unless oversize: it will fail without one), its id
 * issued, counted submitted and unfinished. NULL: out of memory. */
FPP__HIDDEN fpp_task *fpp__task_make(fpp_tm *tm, int fn, const void *arg, size_t len, bool oversize);
FPP__HIDDEN void fpp__task_recycle(fpp_tm *tm, fpp_task *t);
/* Asks the executor to move (keep) or drop t's held result bytes. */
FPP__HIDDEN void fpp__task_unpin(fpp_tm *tm, fpp_task *t, bool keep);
/* Tells the executor that the caller may be reading t's result in place now (on) or no longer. */
FPP__HIDDEN void fpp__task_pin(fpp_tm *tm, fpp_task *t, bool on);
/* t leaves the task manager's hands: alive while kept, retained or the failure; else recycled. */
FPP__HIDDEN void fpp__task_let_go(fpp_tm *tm, fpp_task *t);
FPP__HIDDEN void fpp__task_retain(fpp_tm *tm, fpp_task *t);
FPP__HIDDEN void fpp__task_unlist(fpp_tm *tm, fpp_task *t);
/* Builds the id table from the live tasks the first time it is needed. */
FPP__HIDDEN int fpp__tm_ids_needed(fpp_tm *tm);
/* Calls fn on every task that is not free. */
FPP__HIDDEN void fpp__task_for_each_live(fpp_tm *tm, void (*fn)(fpp_tm *tm, fpp_task *t, bool arg), bool arg);
/* Frees every task and the task memory (owner false: another process: drop nothing shared). */
FPP__HIDDEN void fpp__task_free_all(fpp_tm *tm, bool owner);

/* order.c: FPP_TM_ORDERED's window. */
FPP__HIDDEN void fpp__order_done(fpp_tm *tm, fpp_task *t);  /* t finished */
FPP__HIDDEN void fpp__order_skipped(fpp_tm *tm, int64_t id); /* the newest id has no task (journal) */
FPP__HIDDEN void fpp__order_gone(fpp_tm *tm, fpp_task *t);  /* a finished t left out of order */
/* The next task to hand out (in order with FPP_TM_ORDERED), or NULL. */
FPP__HIDDEN fpp_task *fpp__order_peek(fpp_tm *tm);

/* outcome.c: a task finished (from the executor, or without reaching it). */
FPP__HIDDEN void fpp__tm_finished(fpp_tm *tm, fpp_task *t);
FPP__HIDDEN extern const fpp__sink_ops fpp__tm_sink;

/* map.c */
/* fpp_map_ex under the name of the public call (for its log lines); o NULL: none. */
FPP__HIDDEN int fpp__map_start(fpp_tm *tm, const char *call, int fn, fpp_next next, void *state,
                               const fpp_map_opts *o);
FPP__HIDDEN int fpp__map_pull(fpp_tm *tm);  /* 1 an item was taken (a task made, or its id
                                                skipped: journal), 0 the map ended */
FPP__HIDDEN void fpp__map_end(fpp_tm *tm);  /* drops the first map */

/* drive.c */
FPP__HIDDEN void fpp__tm_feed(fpp_tm *tm);
/* FPP_EJOURNAL, FPP_ETASK (after making the journal durable), FPP_EINTR, or 0. */
FPP__HIDDEN int fpp__tm_state_error(fpp_tm *tm);

/* cancel.c */
FPP__HIDDEN void fpp__tm_cancel_all(fpp_tm *tm, bool wait);
FPP__HIDDEN void fpp__tm_drop_done(fpp_tm *tm);
/* Ctrl-C (sigint) or fpp_tm_interrupt: cancel everything, stop the workers, hand out nothing.
 * Returns FPP_EINTR. */
FPP__HIDDEN int fpp__tm_interrupt(fpp_tm *tm, bool sigint);

#endif /* FPP_TM_TM_H */
