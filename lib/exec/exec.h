/* exec/exec.h: the executor layer: the interface every executor implements (fpp__exec_ops: the
 * process and thread executors here, libfpp_mpi's rank-0 executor in lib/mpi), the executor
 * object, and the sink through which finished jobs go back up to the task manager attached.
 * It may include pool/ and core/ (lib/LAYERS); the task manager above sees this header only.
 *
 * Calls go down (task manager -> executor -> pool); finished work comes back up only through
 * the sink the task manager installs (fpp__exec_attach), so no lower layer names a higher one. */
#ifndef FPP_EXEC_EXEC_H
#define FPP_EXEC_EXEC_H

#include "core/core.h"
#include "core/ec.h"
#include "core/job.h"

/* The interface between the task manager and an executor. All calls run on the thread calling
 * into the task manager, except wake, which must be async-signal-safe. Finished jobs are handed
 * back through fpp__exec_finished during dispatch, poll, cancel and cancel_task. */
typedef struct fpp__exec_ops {
    const char *kind;
    /* Takes j for running. 0 taken, 1 full (try after a poll), < 0 an error for this job. */
    int (*dispatch)(fpp_executor *ex, fpp__job *j);
    /* Makes what was dispatched visible to sleeping workers. */
    void (*flush)(fpp_executor *ex);
    /* Harvests finished jobs and dead workers; if there were none, waits until something
     * happens or until deadline_ns (0: do not wait; INT64_MAX: no deadline). Returns the number
     * of jobs finished, or a negative code. */
    int (*poll)(fpp_executor *ex, int64_t deadline_ns);
    /* Cancels every job in the executor: queued ones come back FPP_CANCELLED; running ones are
     * abandoned (process: their workers are killed and replaced). If wait (Ctrl-C), the process
     * executor stops every worker and forks none until the next dispatch, and returns once they
     * are told to die; the thread executor returns once running functions returned. */
    void (*cancel)(fpp_executor *ex, bool wait);
    /* Makes a waiting poll return at once. Async-signal-safe. */
    void (*wake)(fpp_executor *ex);
    /* Stops every worker and frees the executor's state. owner false: called in a process other
     * than the creator (a forked child): release only this process's memory and descriptors,
     * touch nothing shared, signal nobody. */
    void (*destroy)(fpp_executor *ex, bool owner);
    /* Cancels one job: queued, it never runs; running, its worker is killed and replaced
     * (process) or abandoned (thread). The job is finished CANCELLED through
     * fpp__exec_finished before this returns 1; 0: the executor does not hold it. */
    int (*cancel_task)(fpp_executor *ex, fpp__job *j);
    /* The task manager is done with j's result bytes while j->hold is set: keep true (the task
     * is kept or retained, or the executor detaches): move the bytes to memory the job owns;
     * false (recycled): drop them. Clears j->hold. May be NULL for a backend that never holds. */
    void (*unpin)(fpp_executor *ex, fpp__job *j, bool keep);
    /* 0.3. The caller may be reading j's held result bytes in place now (on: the task
     * fpp_as_completed handed out) or no longer (off). The executor never moves pinned bytes,
     * and must make progress all the same (pool/result_arena.c). May be NULL. */
    void (*pin)(fpp_executor *ex, fpp__job *j, bool on);
} fpp__exec_ops;

/* What the task manager attached gives its executor: where finished jobs go, whether it has
 * stopped taking them (a raise or an interrupt: nothing more may be dispatched, not even what
 * was taken back from a worker), and what fpp_executor_free must do to it. */
typedef struct fpp__sink_ops {
    void (*finished)(void *tm, fpp__job *j);
    bool (*halted)(void *tm);
    /* fpp_executor_free: cancel the task manager's unfinished tasks, move held results out, and
     * detach it (it stays valid until fpp_tm_free). Non-zero: a call on it is in progress. */
    int (*detach)(void *tm);
    /* The same in a process other than the creator: forget the executor, touch nothing else. */
    void (*forget)(void *tm);
} fpp__sink_ops;

struct fpp_executor {
    const fpp__exec_ops *ops;
    fpp_executor_opts opts; /* resolved: no zero left where a default applies */
    void *sink;             /* the task manager attached, or NULL */
    const fpp__sink_ops *sink_ops;
    _Atomic uint64_t restarts;
    _Atomic uint64_t ranks_lost; /* the MPI executor's lost ranks (fpp_stats.ranks_lost) */
    _Atomic int poked;      /* fpp__exec_poke was called: the next poll returns at once */
    fpp__ec poke;           /* posted by fpp__exec_poke: a sleeping poll wakes */
    void *impl;             /* the backend's own state */
    uint64_t owner;         /* fpp__proc_token() of the creating process */
    int init_fn;            /* opts.worker_init's id, or -1 (opts.worker_init_arg: our copy) */
    long owner_pid;         /* its pid, for messages */
};

/* Makes the executor's current or next poll return at once (async-signal-safe: an atomic
 * store and a futex wake). */
static inline void fpp__exec_poke(fpp_executor *ex)
{
    atomic_store(&ex->poked, 1);
    fpp__ec_post(&ex->poke);
}

/* A job leaves the executor finished: to the task manager attached. */
FPP__BACKEND void fpp__exec_finished(fpp_executor *ex, fpp__job *j);
/* The task manager attached raised or was interrupted: dispatch nothing more. */
FPP__HIDDEN bool fpp__exec_halted(const fpp_executor *ex);
/* Attaches a task manager (sink non-NULL) or detaches it (NULL). */
FPP__HIDDEN void fpp__exec_attach(fpp_executor *ex, void *sink, const fpp__sink_ops *ops);

FPP__HIDDEN int fpp__opts_resolve(fpp_executor_opts *o, const fpp_executor_opts *in);
/* Creates an executor on a backend's start function (which fills ex->ops and ex->impl, or
 * cleans up and returns an error). For fpp's own backends, in or out of libfpp. */
FPP__BACKEND int fpp__executor_create(fpp_executor **out, const fpp_executor_opts *opts,
                                      int (*start)(fpp_executor *ex));
/* The backends' constructors: fill ex->ops and ex->impl, or clean up and return an error. */
FPP__HIDDEN int fpp__process_start(fpp_executor *ex);
FPP__HIDDEN int fpp__thread_start(fpp_executor *ex);

/* exec/breaker.c: the start breaker and back-off both executors share. Workers that cannot
 * start back off (FPP__BACKOFF_MIN_NS doubling to FPP__BACKOFF_MAX_NS between attempts, one
 * log line a second at most); after FPP__BREAKER_FAILURES in a row the breaker trips: while no
 * worker is alive, every waiting and later task ends FPP_CRASHED "workers cannot start:
 * <cause>"; attempts go on, and the first worker that starts closes it. */
typedef struct fpp__breaker {
    const char *kind;          /* "process executor", for the log */
    int failures;              /* starts in a row that failed */
    bool broken;               /* the breaker tripped */
    bool trip_unsaid;          /* ...and the log has not said so yet */
    int64_t next_ns;           /* the next attempt is not before then; 0: now */
    int64_t last_log_ns;
    char cause[FPP__ERR_MAX + 64];
} fpp__breaker;
/* A worker could not start: back off, say so (once a second at most), trip after too many. */
FPP__HIDDEN void fpp__breaker_fail(fpp__breaker *b, const char *fmt, ...) FPP_PRINTF(2, 3);
/* A worker started: the failures in a row end (and a tripped breaker closes, with a line). */
FPP__HIDDEN void fpp__breaker_ok(fpp__breaker *b);
/* May a start be tried now? */
FPP__HIDDEN bool fpp__breaker_due(const fpp__breaker *b, int64_t now);
/* The message tasks fail with while it is tripped. */
FPP__HIDDEN void fpp__breaker_message(const fpp__breaker *b, char *buf, size_t cap);

#endif /* FPP_EXEC_EXEC_H */
