/* fpp_internal.h: what the files of lib/ share and users never see.
 *
 * Owns: the layout of the shared segment (header, task ring cells, worker blocks, arenas),
 * the parent-side pool state, the task object, and the small interface every executor
 * implements (fpp__exec_ops). Symbols here are fpp__* and hidden from the shared library.
 *
 * Lock order (the only locks in the parent): tm calls hold none; the supervisor's queue
 * mutex and the log mutex are leaves, never held while taking another lock. */
#ifndef FPP_INTERNAL_H
#define FPP_INTERNAL_H

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fpp.h"

#define FPP__HIDDEN __attribute__((visibility("hidden")))
/* Internal, but exported from libfpp for fpp's own out-of-library backends (libfpp_mpi): no
 * API promise, never declared in fpp.h. Keep this set small. Today: fpp__executor_create,
 * fpp__tm_finished, fpp__task_fail, fpp__task_set_result, fpp__log (the MPI rank-0 backend). */
#define FPP__BACKEND __attribute__((visibility("default")))

/* ------------------------------------------------------------- small tools */

#define FPP__LINE 64
#define FPP__PAGE 4096u
#define FPP__ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((size_t)(a) - 1))
#define FPP__MIN(a, b) ((a) < (b) ? (a) : (b))
#define FPP__MAX(a, b) ((a) > (b) ? (a) : (b))
#define FPP__UNUSED(x) ((void)(x))

static inline int64_t fpp__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void fpp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Event counts in shared memory, on raw futexes. Not glibc semaphores: glibc trusts the
 * fields inside a sem_t and aborts the process when a futex call on a scribbled one fails,
 * and these words are writable by untrusted workers. A futex call here can only fail with a
 * return code. A waiter reads the count, checks its condition, then waits on that value; a
 * poster bumps the count and wakes. */
static inline void fpp__event_post(_Atomic uint32_t *w)
{
    atomic_fetch_add_explicit(w, 1, memory_order_seq_cst);
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Waits while *w == seen, until deadline_ns (CLOCK_MONOTONIC; INT64_MAX: no deadline). */
static inline void fpp__event_wait(_Atomic uint32_t *w, uint32_t seen, int64_t deadline_ns)
{
    struct timespec ts, *tp = NULL;
    if (deadline_ns != INT64_MAX) {
        ts.tv_sec = deadline_ns / 1000000000;
        ts.tv_nsec = deadline_ns % 1000000000;
        tp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET, seen, tp, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* All allocation goes through these, so that a test build can fail the Nth call. */
FPP__HIDDEN void *fpp__malloc(size_t n);
FPP__HIDDEN void *fpp__calloc(size_t n, size_t size);
FPP__HIDDEN void *fpp__realloc(void *p, size_t n);
FPP__HIDDEN void fpp__free(void *p);
FPP__HIDDEN char *fpp__strdup(const char *s);
/* A buffer of at least n bytes (its real size in *cap), from the large-buffer cache when it can. */
FPP__HIDDEN void *fpp__buf_get(size_t n, size_t *cap);
FPP__HIDDEN void fpp__buf_put(void *p, size_t cap);

/* owner.c: a token unique to this process, different in the child of any fork (one load). */
FPP__HIDDEN uint64_t fpp__proc_token(void);

/* ----------------------------------------------------------------- logging */

FPP__BACKEND void fpp__log(fpp_log_level level, const char *fmt, ...) FPP_PRINTF(2, 3);
FPP__HIDDEN bool fpp__log_enabled(fpp_log_level level);
/* Logs "call(what): strerror(errno)" at ERROR, keeps errno, returns FPP_ESYS. */
FPP__HIDDEN int fpp__sys_error(const char *call, const char *what);

/* ---------------------------------------------------------------- registry */

FPP__HIDDEN fpp_fn fpp__registry_fn(int id); /* NULL for an unknown id; lock-free read */
FPP__HIDDEN void fpp__registry_freeze(int delta); /* +1 an executor exists, -1 freed */

/* -------------------------------------------------------- shared segment */

/* Everything a worker could write is validated by the parent before use; the parent keeps
 * its own copy of every size and offset below and never reads them back from the segment. */

#define FPP__MAGIC 0x31707066u /* "fpp1" */
#define FPP__INLINE_ARG 32     /* argument bytes carried in the ring cell */
#define FPP__INLINE_RES 40     /* result or message bytes carried in a completion record */
#define FPP__ERR_MAX 512       /* longest error message a worker may return */
#define FPP__CRING 64          /* completion records per worker (power of two) */
#define FPP__ARENA_ALIGN 64u
#define FPP__MAX_WORKERS 1024

/* Task ring cell states: (ring position << 16) | tag. Tags: FREE (the cell waits for the
 * producer at that position), READY (holds the task at that position), TAKEN+w (worker w is
 * claiming it). See ring.c for the protocol and the recovery argument. */
#define FPP__ST_FREE 0u
#define FPP__ST_READY 1u
#define FPP__ST_TAKEN 2u
#define FPP__ST(pos, tag) (((uint64_t)(pos) << 16) | (uint64_t)(tag))
#define FPP__ST_POS(s) ((s) >> 16)
#define FPP__ST_TAG(s) ((uint32_t)((s) & 0xffffu))
#define FPP__POS_MASK ((UINT64_C(1) << 48) - 1)

typedef struct fpp__cell {
    _Atomic uint64_t state;
    uint64_t ticket; /* (generation << 32) | tag of the parent's in-flight table */
    uint32_t fn;
    uint32_t arg_len;
    uint64_t arg_off; /* in the argument arena when arg_len > FPP__INLINE_ARG */
    unsigned char arg[FPP__INLINE_ARG];
} fpp__cell;

/* Completion record, worker -> parent. */
enum { FPP__R_DONE = 1, FPP__R_FAILED = 2 };
typedef struct fpp__crec {
    uint64_t ticket;
    uint32_t status;
    uint32_t len;  /* result bytes (DONE) or message bytes (FAILED) */
    uint64_t off;  /* arena position when len > FPP__INLINE_RES */
    unsigned char data[FPP__INLINE_RES];
} fpp__crec;

/* Worker phases, written by the worker. */
enum { FPP__PH_IDLE = 0, FPP__PH_RUNNING = 1, FPP__PH_RETIRED = 2 };

typedef struct fpp__wblock {
    /* Written by the worker. */
    _Alignas(FPP__LINE) _Atomic uint32_t phase;
    _Atomic uint32_t sleeping;
    _Atomic uint64_t ticket;     /* the task held while RUNNING */
    _Atomic int64_t started_ns;  /* when it started (CLOCK_MONOTONIC) */
    _Atomic uint64_t need;       /* arena or ring space the worker waits for */
    _Atomic uint64_t ctail;      /* completion records published */
    _Atomic uint64_t tasks;      /* tasks finished by this worker */
    /* Written by the parent. */
    _Alignas(FPP__LINE) _Atomic uint64_t chead; /* completion records consumed */
    _Atomic uint64_t atail;                     /* arena bytes released */
    _Atomic uint64_t apos;                      /* where a new worker starts in the arena */
    _Atomic uint32_t drain;                     /* 1: take no more tasks */
    _Alignas(FPP__LINE) _Atomic uint32_t wake;  /* event count the worker sleeps on */
    _Alignas(FPP__LINE) fpp__crec ring[FPP__CRING];
} fpp__wblock;

typedef struct fpp__hdr {
    uint32_t magic, version;
    uint32_t ncells, nworkers;
    _Alignas(FPP__LINE) _Atomic uint64_t head; /* consumers' claim hint; any worker writes */
    _Alignas(FPP__LINE) _Atomic uint32_t parent_sleeping;
    _Alignas(FPP__LINE) _Atomic uint32_t parent_wake; /* event count the parent sleeps on */
    /* The process executor's spare worker waits here for the slot it is to take. */
    _Alignas(FPP__LINE) _Atomic uint32_t spare_pid; /* the spare to start now (futex word) */
    _Atomic uint32_t spare_slot;                     /* and the slot it takes */
} fpp__hdr;

/* Where everything lies; computed once from the options, kept private by each side. */
typedef struct fpp__layout {
    uint32_t ncells, nworkers;
    size_t cells_off, args_off, args_size, wblock_size, warena_size, worker_off, worker_stride;
    size_t arenas_off;
    size_t total;
    size_t max_arg, max_result;
} fpp__layout;

/* What a worker knows of its pool: trusted values copied before the worker started. */
typedef struct fpp__wctx {
    unsigned char *base;
    fpp__layout lay;
    uint32_t slot;
    bool process;          /* forked worker (false: thread) */
    unsigned max_tasks;    /* recycle after this many tasks; 0: never */
    size_t max_rss_kib;    /* retire when grown past it; 0: no cap */
    _Atomic int *stop;     /* thread executor: set to end the thread */
} fpp__wctx;

/* Runs the worker loop until told to stop, retired or dead. Returns the exit status. */
FPP__HIDDEN int fpp__worker_main(fpp__wctx *w);

static inline fpp__hdr *fpp__hdr_of(unsigned char *base) { return (fpp__hdr *)base; }
static inline fpp__cell *fpp__cells_of(unsigned char *base, const fpp__layout *l)
{
    return (fpp__cell *)(base + l->cells_off);
}
static inline fpp__wblock *fpp__wblock_of(unsigned char *base, const fpp__layout *l, uint32_t w)
{
    return (fpp__wblock *)(base + l->worker_off + (size_t)w * l->worker_stride);
}
static inline unsigned char *fpp__warena_of(unsigned char *base, const fpp__layout *l, uint32_t w)
{
    return base + l->arenas_off + (size_t)w * l->warena_size;
}

FPP__HIDDEN int fpp__layout_compute(fpp__layout *l, const fpp_executor_opts *o);

/* shm.c: the segment itself. */
FPP__HIDDEN int fpp__shm_create(size_t size, size_t prefault, unsigned char **base);
FPP__HIDDEN int fpp__mem_create(size_t size, unsigned char **base); /* private, for threads */
FPP__HIDDEN void fpp__mem_destroy(unsigned char *base, size_t size);

/* ring.c: the task ring, worker side and parent side. */
FPP__HIDDEN void fpp__ring_init(fpp__cell *cells, uint32_t ncells);
/* Parent: publish at position pos. 0 published, 1 cell busy (ring full), FPP_ESTATE corrupt. */
FPP__HIDDEN int fpp__ring_push_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos,
                                      const fpp__cell *src);
/* Worker: claim the next ready cell for worker w. 1 claimed (*pos set), 0 empty. */
FPP__HIDDEN int fpp__ring_claim_worker(fpp__hdr *h, fpp__cell *cells, uint32_t ncells,
                                       uint32_t w, uint64_t *pos);
FPP__HIDDEN void fpp__ring_release_worker(fpp__cell *cells, uint32_t ncells, uint64_t pos,
                                          uint32_t w);
/* Parent: take back an unclaimed task at pos. 1 revoked, 0 a worker claimed it first. */
FPP__HIDDEN int fpp__ring_revoke_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos);
/* Parent, after worker w is dead: 1 if the cell at pos is still claimed by w (the task never
 * started), in which case the cell is released. */
FPP__HIDDEN int fpp__ring_reclaim_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos,
                                         uint32_t w);

/* arena.c: the argument arena's allocator (parent only, metadata in parent memory). */
typedef struct fpp__buddy {
    uint32_t nblocks, max_order;
    uint32_t *next, *prev;  /* free lists, by block index */
    uint32_t *head;         /* per order; UINT32_MAX: empty */
    uint8_t *order;         /* per block: order + 1 when a free head, 0 otherwise */
} fpp__buddy;
#define FPP__BUDDY_MIN 256u
FPP__HIDDEN int fpp__buddy_init(fpp__buddy *b, size_t size);
FPP__HIDDEN void fpp__buddy_fini(fpp__buddy *b);
/* Offset of a block of at least n bytes, or -1 when none is free. */
FPP__HIDDEN int64_t fpp__buddy_alloc(fpp__buddy *b, size_t n);
FPP__HIDDEN void fpp__buddy_free(fpp__buddy *b, uint64_t off, size_t n);

/* ------------------------------------------------------------------ tasks */

enum {
    FPP__AT_FREE = 0,  /* in the task manager's free list */
    FPP__AT_PENDING,   /* submitted, not yet handed to the executor */
    FPP__AT_EXEC,      /* in the executor */
    FPP__AT_DONEQ,     /* finished, not yet returned by fpp_as_completed */
    FPP__AT_CURRENT,   /* returned by the last fpp_as_completed */
    FPP__AT_KEPT,      /* retained, or the raising task */
};

struct fpp_task {
    int64_t id;
    int fn;
    fpp_status status;
    int signo;
    uint8_t where;
    uint32_t tag;          /* the executor's in-flight tag while FPP__AT_EXEC */
    void *user;            /* fpp_task_opts.user */
    unsigned timeout_ms;   /* fpp_task_opts.timeout_ms; 0: the executor's */
    unsigned attempts;     /* attempts started so far (1 + retries) */
    int slot;              /* set by the executor: the worker slot it last ran on, or -1 */
    int avoid_slot;        /* set by the task manager for a retry: run elsewhere if possible */
    void *hold;            /* the executor's hold on the result bytes (zero-copy), or NULL */
    size_t arg_len, result_len, result_cap;
    unsigned char *arg;    /* arg_inline, heap, or NULL */
    unsigned char *result; /* res_inline, heap, or NULL */
    char *error;           /* heap, or NULL */
    struct fpp_task *next;
    unsigned char arg_inline[FPP__INLINE_ARG];
    unsigned char res_inline[FPP__INLINE_RES];
};

typedef struct fpp__tq { fpp_task *head, *tail; size_t n; } fpp__tq;
static inline void fpp__tq_push(fpp__tq *q, fpp_task *t)
{
    t->next = NULL;
    if (q->tail) q->tail->next = t; else q->head = t;
    q->tail = t;
    q->n++;
}
static inline fpp_task *fpp__tq_pop(fpp__tq *q)
{
    fpp_task *t = q->head;
    if (t) {
        q->head = t->next;
        if (!q->head) q->tail = NULL;
        t->next = NULL;
        q->n--;
    }
    return t;
}

/* Sets the task's outcome. The message is copied (printf-style); result bytes are copied. */
FPP__BACKEND void fpp__task_fail(fpp_task *t, fpp_status st, int signo, const char *fmt, ...)
    FPP_PRINTF(4, 5);
FPP__BACKEND int fpp__task_set_result(fpp_task *t, const void *data, size_t len);
FPP__HIDDEN void fpp__task_clear(fpp_task *t); /* frees what the task owns */

/* --------------------------------------------------------------- executors */

/* The interface between the task manager and an executor: six calls. A backend implements
 * these and nothing in tm.c changes. All run on the thread calling into the task manager, except wake,
 * which must be async-signal-safe. Finished tasks are handed back through fpp__tm_finished. */
typedef struct fpp__exec_ops {
    const char *kind;
    /* Takes t for running. 0 taken, 1 full (try after a poll), < 0 an error for this task. */
    int (*dispatch)(fpp_executor *ex, fpp_task *t);
    /* Makes what was dispatched visible to sleeping workers. */
    void (*flush)(fpp_executor *ex);
    /* Harvests finished tasks and dead workers; if there were none, waits until something
     * happens or until deadline_ns (0: do not wait; INT64_MAX: no deadline). Returns the number
     * of tasks finished, or a negative code. */
    int (*poll)(fpp_executor *ex, int64_t deadline_ns);
    /* Cancels every task in the executor: queued ones come back FPP_CANCELLED; running ones
     * are abandoned (process: their workers are killed and replaced). If wait (Ctrl-C), the
     * process executor stops every worker and forks none until the next dispatch, and returns
     * once they are dead; the thread executor returns once running functions returned. */
    void (*cancel)(fpp_executor *ex, bool wait);
    /* Makes a waiting poll return at once. Async-signal-safe. */
    void (*wake)(fpp_executor *ex);
    /* Stops every worker and frees the executor. owner false: called in a process other than
     * the creator (a forked child): release only this process's memory and descriptors, touch
     * nothing shared, signal nobody. */
    void (*destroy)(fpp_executor *ex, bool owner);
    /* 0.2. Cancels one task in the executor: queued, it never runs; running, its worker is
     * killed and replaced (process) or abandoned (thread). The task is finished CANCELLED
     * through fpp__tm_finished before this returns 1; 0: the executor does not hold it. */
    int (*cancel_task)(fpp_executor *ex, fpp_task *t);
    /* 0.2. The task manager is done with t's result bytes while t->hold is set: keep true
     * (the task is kept or retained, or the executor detaches): move the bytes to memory the
     * task owns; false (the task is recycled): drop them. Clears t->hold. May be NULL for a
     * backend that never sets hold. */
    void (*unpin)(fpp_executor *ex, fpp_task *t, bool keep);
} fpp__exec_ops;

struct fpp_executor {
    const fpp__exec_ops *ops;
    fpp_executor_opts opts; /* resolved: no zero left where a default applies */
    fpp_tm *tm;             /* the task manager attached, or NULL */
    _Atomic uint64_t restarts;
    _Atomic int poked;      /* fpp__exec_poke was called: the next poll returns at once */
    void *impl;             /* the backend's own state */
    uint64_t owner;         /* fpp__proc_token() of the creating process */
};

/* Makes the executor's current or next poll return at once (async-signal-safe). */
static inline void fpp__exec_poke(fpp_executor *ex, _Atomic uint32_t *parent_wake)
{
    atomic_store(&ex->poked, 1);
    fpp__event_post(parent_wake);
}

FPP__HIDDEN int fpp__opts_resolve(fpp_executor_opts *o, const fpp_executor_opts *in);
/* Creates an executor on a backend's start function (which fills ex->ops and ex->impl, or
 * cleans up and returns an error). For fpp's own backends, in or out of libfpp. */
FPP__BACKEND int fpp__executor_create(fpp_executor **out, const fpp_executor_opts *opts,
                                      int (*start)(fpp_executor *ex));
/* The fork hooks of fpp_set_fork_hooks (each may be NULL). */
typedef struct fpp__fork_hooks { void (*prepare)(void), (*parent)(void), (*child)(void); } fpp__fork_hooks;
FPP__HIDDEN fpp__fork_hooks fpp__fork_hooks_get(void);
/* The backends' constructors: fill ex->ops and ex->impl, or clean up and return an error. */
FPP__HIDDEN int fpp__process_start(fpp_executor *ex);
FPP__HIDDEN int fpp__thread_start(fpp_executor *ex);

/* ------------------------------------------------------------------- pool */

/* The parent-side state of a ring-and-arena pool, shared by the process and thread
 * executors (pool.c). Only the parent's thread calling into the task manager touches it. */
enum { FPP__FL_FREE = 0, FPP__FL_QUEUED, FPP__FL_ABANDONED };
typedef struct fpp__flight {
    fpp_task *task;   /* NULL once abandoned */
    uint64_t pos;     /* ring position it was published at */
    uint64_t arg_off; /* argument arena block, or UINT64_MAX */
    uint32_t gen;
    uint32_t arg_len;
    uint8_t state;
    uint8_t strikes;  /* audits in a row that found no one holding it */
    uint32_t next_free;
} fpp__flight;

typedef struct fpp__wpriv {
    uint64_t chead;       /* completion records consumed */
    uint64_t apos;        /* end of the last result taken from the arena */
    uint64_t seen_ticket; /* last RUNNING ticket seen, for timeouts */
    int64_t seen_ns;
    uint64_t timeout_ticket; /* ticket whose timeout made us kill this worker */
    int64_t timeout_ms;
    bool alive;
    bool corrupt; /* its block was found scribbled over; reported once */
    uint64_t audit_chead; /* chead at the previous audit: progress between audits */
    int stuck;            /* audits in a row that found it stuck */
} fpp__wpriv;

typedef struct fpp__pool {
    fpp__layout lay;
    unsigned char *base;
    bool shared;
    fpp__hdr *hdr;
    fpp__cell *cells;
    uint64_t tail; /* next position to publish */
    uint32_t unflushed; /* tasks published since the last flush: how many sleepers to wake */
    bool woke_sleeper;  /* the last flush woke a sleeping worker */
    int64_t spin_ns;    /* how long the parent spins before sleeping; adapts to the tasks */
    fpp__flight *fl;
    uint32_t nfl, free_fl, used_fl;
    uint32_t *cell_tag; /* per cell: the in-flight entry last published there, or UINT32_MAX */
    fpp__buddy args;
    fpp__wpriv *wp;
    fpp__tq retry;   /* tasks to publish again (their worker died before starting them) */
    uint64_t bogus;  /* completion records refused */
    fpp_executor *ex;
    void (*bad)(struct fpp__pool *p, uint32_t w); /* a worker wrote nonsense: replace it */
} fpp__pool;

FPP__HIDDEN int fpp__pool_create(fpp__pool *p, const fpp_executor_opts *o, bool shared);
FPP__HIDDEN void fpp__pool_destroy(fpp__pool *p);
FPP__HIDDEN int fpp__pool_dispatch(fpp__pool *p, fpp_task *t);
FPP__HIDDEN void fpp__pool_flush(fpp__pool *p);
/* Harvests every worker's completion records; returns how many tasks finished. */
FPP__HIDDEN int fpp__pool_collect(fpp__pool *p);
FPP__HIDDEN int fpp__pool_collect_worker(fpp__pool *p, uint32_t w);
/* Sleeps until a worker posts, or deadline; spins a little first. `seen` is the value of
 * hdr->parent_wake read before the caller last looked for work: any post since then ends the
 * wait at once. */
FPP__HIDDEN void fpp__pool_wait(fpp__pool *p, uint32_t seen, int64_t deadline_ns);
static inline uint32_t fpp__pool_seq(fpp__pool *p) { return atomic_load(&p->hdr->parent_wake); }
/* Worker w is dead: drain it, fail the task it ran (st, signo, message), publish again what it
 * claimed but never started. Returns the number of tasks finished. */
FPP__HIDDEN int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo,
                                  const char *why);
/* Revokes queued tasks (CANCELLED) and abandons running ones (also CANCELLED for the task
 * manager; their entries wait for the worker to report or die). Marks in kill[] (nworkers
 * entries, or NULL) the workers running abandoned tasks; returns how many. */
FPP__HIDDEN int fpp__pool_cancel(fpp__pool *p, bool *kill);
FPP__HIDDEN size_t fpp__pool_in_flight(const fpp__pool *p);
/* Finishes an in-flight entry's task with st and a message (timeouts in thread mode). */
FPP__HIDDEN void fpp__pool_abandon(fpp__pool *p, uint64_t ticket, fpp_status st,
                                   const char *why);
/* Checks RUNNING tasks against the timeout; calls kill(w) for each one over it. Returns the
 * earliest deadline still pending (INT64_MAX: none). */
/* The watchdog, run when the pool has made no progress for a while: a worker block whose
 * indices are impossible is reported to bad(w); a task that nothing holds any more (its cell
 * and every worker block were scribbled over) fails as crashed on the second audit in a row;
 * the claim hint is put back on the oldest task still waiting. Returns tasks finished. */
FPP__HIDDEN int fpp__pool_audit(fpp__pool *p);
FPP__HIDDEN int64_t fpp__pool_timeouts(fpp__pool *p, unsigned timeout_ms,
                                       void (*over)(fpp__pool *p, uint32_t w, uint64_t ticket));

/* ---------------------------------------------------------- task manager */

/* Called by executors for each task that leaves them finished. */
FPP__BACKEND void fpp__tm_finished(fpp_tm *tm, fpp_task *t);
/* True once the task manager raised or was interrupted: nothing more may be dispatched. */
FPP__HIDDEN bool fpp__tm_halted(const fpp_tm *tm);

/* sigint.c */
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

/* monitor.c */
typedef struct fpp__monitor fpp__monitor;
FPP__HIDDEN int fpp__monitor_start(fpp__monitor **out, _Atomic uint64_t *finished, int interval_ms);
FPP__HIDDEN void fpp__monitor_stop(fpp__monitor *m); /* asks it to stop; does not wait */
FPP__HIDDEN void fpp__monitor_join(fpp__monitor *m); /* waits for it and frees it */

#endif /* FPP_INTERNAL_H */
