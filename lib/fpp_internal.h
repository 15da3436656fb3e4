/* fpp_internal.h: what the files of lib/ share and users never see.
 *
 * Owns: the layout of a pool's memory (each worker's slot memory: block, task queue, result
 * arena; the argument arena), the event count every sleep uses, the parent-side pool state,
 * the task object, and the small interface every executor implements (fpp__exec_ops).
 * Symbols here are fpp__* and hidden from the shared library (FPP__BACKEND ones excepted).
 *
 * Threads: everything in pool/ring/harvest/watchdog/flight runs on the thread calling into the
 * task manager; only fpp__exec_poke runs anywhere (signal handlers included). The only locks
 * in the parent are leaves (the log sink, the fork-hook table, the large-buffer cache). */
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
 * fpp__tm_finished, fpp__task_fail, fpp__task_set_result, fpp__log, and the event count's
 * arm/wait/post (the MPI rank-0 backend). */
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

/* Event counts (ec.c): the one way anything in fpp sleeps and is woken, in shared memory or
 * not. A 32-bit futex word: bit 0 says "someone is about to sleep or sleeps here", the other
 * bits count posts. Not glibc semaphores: glibc trusts the fields of a sem_t and aborts the
 * process when a futex call on a scribbled one fails; a word here can only be wrong, never
 * fatal. The protocol, checkable in one place (ec.c):
 *   waiter:  v = fpp__ec_arm(e);  if (condition) done;  else fpp__ec_wait(e, v, deadline);
 *   poster:  make the condition true (stores);  fpp__ec_post(e);
 * fpp__ec_arm is a seq_cst read-modify-write and fpp__ec_post starts with a seq_cst fence, so
 * either the poster sees the waiter's bit (and wakes it), or the waiter's check sees the
 * poster's stores: no lost wake-up. A post changes the word, so a wait on a stale value
 * returns at once. Every wait has a deadline; a scribbled word costs a spurious wake-up or a
 * wait until the deadline, never a spin and never a crash. */
typedef struct fpp__ec { _Atomic uint32_t w; } fpp__ec;
FPP__BACKEND uint32_t fpp__ec_arm(fpp__ec *e);
FPP__BACKEND void fpp__ec_post(fpp__ec *e);
/* A post that always counts (fpp__ec_count moves): for rare events polled by count. */
FPP__HIDDEN void fpp__ec_bump(fpp__ec *e);
/* Sleeps while the word still holds armed, until deadline_ns (CLOCK_MONOTONIC). */
FPP__BACKEND void fpp__ec_wait(fpp__ec *e, uint32_t armed, int64_t deadline_ns);
/* The parent's sleep on several words at once (futex_waitv); armed[i] from fpp__ec_arm.
 * Returns 0, or -1 when futex_waitv is unavailable (the caller then sleeps in short slices). */
FPP__HIDDEN int fpp__ec_waitv(fpp__ec **e, const uint32_t *armed, int n, int64_t deadline_ns);
/* The count part of a word, for "has anything been posted since I looked". */
static inline uint32_t fpp__ec_count(fpp__ec *e) { return atomic_load(&e->w) >> 1; }

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
/* owner.c: the descriptors fpp opened (closed in fork servers even with keep_fds). */
FPP__HIDDEN void fpp__fd_own(int fd);
FPP__HIDDEN void fpp__fd_close(int fd);  /* forgets it and closes it, if it is ours */
FPP__HIDDEN void fpp__fd_forget_all(void); /* in a fork server: the parent's are not ours */
FPP__HIDDEN bool fpp__fd_is_ours(int fd);

/* ----------------------------------------------------------------- logging */

FPP__BACKEND void fpp__log(fpp_log_level level, const char *fmt, ...) FPP_PRINTF(2, 3);
FPP__HIDDEN bool fpp__log_enabled(fpp_log_level level);
/* True on a thread that is inside the log sink right now (a sink calling back into fpp). */
FPP__HIDDEN bool fpp__log_in_sink(void);
/* The status line (the progress line of FPP_TM_PROGRESS): one line on stderr, redrawn in place,
 * cleared before every log line. One owner at a time: claim returns false if another holds it.
 * draw is a no-op unless `owner` holds it; release clears the line and gives it up. All three
 * take the log lock (a leaf), so a line is never drawn half over a log line. */
FPP__HIDDEN bool fpp__status_claim(const void *owner);
FPP__HIDDEN void fpp__status_draw(const void *owner, const char *line);
FPP__HIDDEN void fpp__status_release(const void *owner);
/* Logs "call(what): strerror(errno)" at ERROR, keeps errno, returns FPP_ESYS. */
FPP__HIDDEN int fpp__sys_error(const char *call, const char *what);

/* ---------------------------------------------------------------- registry */

FPP__HIDDEN fpp_fn fpp__registry_fn(int id); /* NULL for an unknown id; lock-free read */
FPP__HIDDEN void fpp__registry_freeze(int delta); /* +1 an executor exists, -1 freed */

/* ----------------------------------------------------------- pool memory */

/* A pool's memory is not one segment shared by all: each worker has its own slot memory
 * (block, task queue, result arena), and the argument arena is the only thing every worker
 * maps, read-only. So a worker can write nothing but its own slot; whatever it writes there
 * can only hurt its own tasks. The process executor puts each in a sealed memfd (shm.c); the
 * thread executor in private anonymous memory. Everything a worker could write is validated
 * by the parent before use; the parent keeps its own copy of every index and size and never
 * reads them back. */

#define FPP__INLINE_ARG 32     /* argument bytes carried in the queue cell */
#define FPP__INLINE_RES 40     /* result or message bytes carried in a completion record */
#define FPP__ERR_MAX 512       /* longest error message a worker may return */
#define FPP__CRING 64          /* completion records per worker (power of two) */
#define FPP__ARENA_ALIGN 64u
#define FPP__MAX_WORKERS 1024

/* Task queue cell states: (position << 2) | tag, positions free-running per worker queue.
 * READY(p): the parent published position p; CLAIMED(p): the worker took p (or acknowledged
 * its revocation); REVOKED(p): the parent took p back before the worker claimed it. See ring.c
 * for the protocol and the recovery argument. */
#define FPP__Q_READY 1u
#define FPP__Q_CLAIMED 2u
#define FPP__Q_REVOKED 3u
#define FPP__Q(pos, tag) (((uint64_t)(pos) << 2) | (uint64_t)(tag))
#define FPP__Q_POS(s) ((s) >> 2)
#define FPP__Q_TAG(s) ((uint32_t)((s) & 3u))

typedef struct fpp__cell {
    _Atomic uint64_t state;
    uint64_t ticket;   /* 64 bits, never reused: the parent's publish sequence */
    uint32_t fn;
    uint32_t arg_len;
    uint64_t arg_off;  /* in the argument arena when arg_len > FPP__INLINE_ARG */
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

/* What a worker says of itself (untrusted: used for messages and to wait for start-up). */
enum { FPP__WS_STARTING = 0, FPP__WS_READY = 1, FPP__WS_INIT_FAILED = 2, FPP__WS_RETIRED = 3 };

typedef struct fpp__wblock {
    /* Written by the worker. */
    _Alignas(FPP__LINE) _Atomic uint64_t running; /* ticket it is claiming or running; 0: none yet */
    _Atomic uint64_t ctail;      /* completion records published */
    _Atomic uint64_t need;       /* arena bytes it waits for; 0: none */
    _Atomic uint64_t tasks;      /* tasks finished by this worker */
    _Atomic uint32_t wstate;     /* FPP__WS_* */
    _Atomic uint32_t pid;
    _Atomic uint64_t rss_start_kib; /* resident memory when it started */
    char msg[FPP__ERR_MAX];      /* FPP__WS_INIT_FAILED: why */
    /* Written by the parent. */
    _Alignas(FPP__LINE) _Atomic uint64_t chead; /* completion records consumed */
    _Atomic uint64_t atail;                     /* arena bytes released */
    /* The worker sleeps on wake (the parent posts: tasks published, room made); the parent
     * sleeps on bell (the worker posts: a record published, start-up done). */
    _Alignas(FPP__LINE) fpp__ec wake;
    _Alignas(FPP__LINE) fpp__ec bell;
    _Alignas(FPP__LINE) fpp__crec ring[FPP__CRING];
} fpp__wblock;

/* Where everything lies; computed once from the options, kept privately by each side. */
typedef struct fpp__layout {
    uint32_t qcells, nworkers;     /* queue cells per worker (power of two), workers */
    size_t cells_off, arena_off, arena_size, slot_size; /* within one slot memory */
    size_t args_size;              /* the argument arena */
    size_t max_arg, max_result;
} fpp__layout;

FPP__HIDDEN int fpp__layout_compute(fpp__layout *l, const fpp_executor_opts *o);

static inline fpp__wblock *fpp__slot_block(unsigned char *slot) { return (fpp__wblock *)slot; }
static inline fpp__cell *fpp__slot_cells(unsigned char *slot, const fpp__layout *l)
{
    return (fpp__cell *)(slot + l->cells_off);
}
static inline unsigned char *fpp__slot_arena(unsigned char *slot, const fpp__layout *l)
{
    return slot + l->arena_off;
}

/* shm.c: memory for pools. A region is a sealed memfd mapped shared (process executor; fd
 * kept so it can be handed to a worker, -1 once closed) or private anonymous memory (thread
 * executor). The parent's mappings are MADV_DONTFORK: no fork of the parent (another
 * executor's fork server, the application's own fork) inherits them. */
typedef struct fpp__region {
    unsigned char *base;
    size_t size;
    int fd;
} fpp__region;
/* shared: a memfd of size bytes (the first prefault bytes backed now, so that no room is an
 * FPP_ESYS here and never a fault later), sealed against shrinking and growing. */
FPP__HIDDEN int fpp__region_create(fpp__region *r, const char *name, size_t size, size_t prefault,
                                   bool shared);
/* Seals a shared region for good (F_SEAL_SEAL); no_writes: also against any new writable
 * mapping or write (the parent's own mapping stays writable): workers can map it read-only. */
FPP__HIDDEN int fpp__region_seal(fpp__region *r, bool no_writes);
FPP__HIDDEN void fpp__region_close_fd(fpp__region *r);
FPP__HIDDEN void fpp__region_destroy(fpp__region *r);

/* A worker slot's memory: a region plus references (the slot's current worker, and each
 * result the parent hands out from its arena, zero-copy). A new worker always gets new slot
 * memory; the old one lives until its last reference goes. */
struct fpp__hold;
typedef struct fpp__slotmem {
    fpp__region r;
    _Atomic unsigned refs;
    struct fpp__hold *first, *last; /* results handed out from its arena, oldest first (parent) */
} fpp__slotmem;
FPP__HIDDEN fpp__slotmem *fpp__slotmem_new(const fpp__layout *l, bool shared);
FPP__HIDDEN void fpp__slotmem_ref(fpp__slotmem *m);
FPP__HIDDEN void fpp__slotmem_unref(fpp__slotmem *m);
/* In a forked child: frees the bookkeeping of a shared region's memory, unmaps nothing. */
FPP__HIDDEN void fpp__region_forget(fpp__region *r);

/* What a worker knows of its pool: trusted values copied before the worker started. */
typedef struct fpp__wctx {
    unsigned char *slot;         /* its slot memory */
    const unsigned char *args;   /* the argument arena (read-only) */
    fpp__layout lay;
    uint32_t slot_id;
    bool process;                /* forked worker (false: thread) */
    unsigned max_tasks;          /* recycle after this many tasks; 0: never */
    size_t max_rss_kib;          /* retire when grown past it; 0: no cap */
    _Atomic int stop;            /* thread: set to end the thread */
    _Atomic int abandoned;       /* thread: the pool gave up on it; publish nothing more */
    _Atomic int claiming;        /* thread: from before a claim until its argument is copied
                                    (the pool frees an abandoned task's block only after) */
    uint64_t token;              /* fpp__proc_token() when it started: a forked copy differs */
} fpp__wctx;

/* Runs the worker loop until told to stop, retired or abandoned. Returns the exit status. */
FPP__HIDDEN int fpp__worker_main(fpp__wctx *w);
/* Runs an initializer (registered function fn on the given bytes) in a starting worker w: 0,
 * or -1 with its message in msg. */
FPP__HIDDEN int fpp__worker_init(int fn, const void *arg, size_t len, fpp__wctx *w, char *msg,
                                 size_t cap);

/* ring.c: the task queue of one worker (see the protocol there). */
FPP__HIDDEN void fpp__ring_init(fpp__cell *cells, uint32_t n);
/* Parent: publish src at position pos. 0 published, 1 the cell is not free yet. */
FPP__HIDDEN int fpp__ring_publish(fpp__cell *cells, uint32_t n, uint64_t pos, const fpp__cell *src);
/* Parent: take back the task at pos if no worker claimed it. 1 revoked, 0 claimed. */
FPP__HIDDEN int fpp__ring_revoke(fpp__cell *cells, uint32_t n, uint64_t pos);
/* Parent: what the cell says of the task published at pos: 1 claimed (or the cell was reused
 * since, which needs a claim first), 0 still READY, -1 revoked, -2 nonsense. */
FPP__HIDDEN int fpp__ring_claimed(fpp__cell *cells, uint32_t n, uint64_t pos);
/* Worker: the next task of its queue at *head, copied to *out and claimed. 1 claimed, 0
 * nothing ready. Acknowledges revoked cells on the way. *ticket_word gets the ticket before
 * the claim (the parent's timeout clock). */
FPP__HIDDEN int fpp__ring_claim(fpp__cell *cells, uint32_t n, uint64_t *head, fpp__cell *out,
                                _Atomic uint64_t *ticket_word);
/* Worker: is there anything at head to look at (READY or REVOKED)? */
FPP__HIDDEN bool fpp__ring_pending(fpp__cell *cells, uint32_t n, uint64_t head);

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
    FPP__AT_KEPT,      /* handed out or dropped; alive because kept, retained or the failure */
};

struct fpp_task {
    int64_t id;
    int fn;
    fpp_status status;
    int signo;
    uint8_t where;
    uint8_t past;          /* task manager: outcomes of earlier attempts (bit 1 << status) */
    bool retained;         /* task manager: in the retain_completed list */
    bool listed;           /* task manager: in the id table (not yet returned) */
    uint32_t keeps;        /* task manager: fpp_task_keep count */
    struct fpp_tm *tm;     /* the task manager that owns it */
    struct fpp_task *prev; /* task manager: its pending and done lists are doubly linked */
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

/* The parent-side state of a pool of per-worker task queues, shared by the process and the
 * thread executor (pool.c, flight.c, harvest.c, watchdog.c). Only the thread calling into the
 * task manager touches it.
 *
 * Invariants: an in-flight entry is FREE, QUEUED (its task is in its worker's queue or
 * running there) or ABANDONED (the parent finished its task, but the worker may still run
 * it: the entry and its argument block are kept until the worker reports or dies). Every
 * QUEUED or ABANDONED entry is on exactly one worker's list, in queue order, and that worker's
 * records must come back in that order. Every task dispatched leaves the pool exactly once,
 * through fpp__tm_finished. */
enum { FPP__FL_FREE = 0, FPP__FL_QUEUED, FPP__FL_ABANDONED };
typedef struct fpp__flight {
    fpp_task *task;       /* NULL once abandoned */
    uint64_t ticket;
    uint64_t pos;         /* position in its worker's queue */
    uint64_t arg_off;     /* argument arena block, or UINT64_MAX */
    int64_t claimed_ns;   /* when the parent first saw it claimed; 0: not yet */
    uint32_t arg_len;
    uint32_t w;           /* its worker slot */
    uint32_t prev, next;  /* the worker's list (oldest first), or the free list */
    uint8_t state;
    bool claimed;         /* known to be claimed */
    unsigned timeout_ms;  /* its timeout (its own, else the executor's); 0: none */
} fpp__flight;

typedef struct fpp__wpriv {
    fpp__slotmem *mem;     /* the current worker's slot memory; NULL: no worker */
    fpp__wblock *b;
    fpp__cell *cells;
    unsigned char *arena;
    uint32_t *cell_entry;  /* per queue cell: the entry last published there, or UINT32_MAX */
    uint64_t tail;         /* next queue position */
    uint64_t chead;        /* completion records consumed */
    uint64_t apos;         /* arena: end of the last result taken */
    uint32_t first, last, n; /* its entries, oldest first, and how many */
    uint32_t unflushed;    /* published since the last flush */
    uint32_t depth;        /* how many tasks to queue on it: adapts to the tasks' length */
    int64_t svc_ns;        /* estimated time per task */
    int64_t last_done_ns;  /* when it last returned a record (or last went from idle to busy) */
    bool alive;            /* a worker runs in the slot and takes tasks */
    bool corrupt;          /* reported to bad() already */
    uint64_t timeout_ticket; /* the task whose timeout made us stop it */
    int64_t unacked_since_ns; /* the audit saw a revoke blocking its queue since then; 0: no */
    unsigned timeout_ms;
} fpp__wpriv;

typedef struct fpp__pool {
    fpp__layout lay;
    bool shared;            /* memfds (process executor) or private memory (threads) */
    fpp__region args;       /* the argument arena */
    fpp__buddy argbuddy;
    fpp__flight *fl;
    uint32_t nfl, free_fl, used_fl;
    uint64_t next_ticket;
    fpp__wpriv *wp;
    uint32_t cursor;        /* where the next dispatch starts looking */
    size_t hold_min;        /* results from this size on are handed out zero-copy */
    uint32_t ntimed;        /* entries with a timeout */
    unsigned min_timeout_ms; /* the shortest of those since ntimed was last 0 */
    fpp__tq retry;          /* tasks to publish again (revoked: never started) */
    uint64_t bogus;         /* records refused */
    uint64_t finished;      /* tasks handed back to the task manager (fpp__pool_finish), ever:
                               a poll that finished any, wherever (a timeout's recovery, a
                               collect inside it), must not go to sleep */
    int64_t spin_ns;        /* how long the parent spins before sleeping; adapts */
    bool woke_worker;       /* the last flush woke a sleeping worker */
    fpp_executor *ex;
    void *owner;            /* the backend's state */
    /* Backend hooks: worker w wrote nonsense (replace it); stop worker w's running task
     * (timeout or cancel: kill the process, or abandon the thread). */
    void (*bad)(struct fpp__pool *p, uint32_t w);
    void (*stop)(struct fpp__pool *p, uint32_t w);
    /* Further words a sleeping parent wakes on (the fork server's mailbox, the poke), with the
     * values seen when the current poll began (fpp__pool_mark). */
    fpp__ec *extra[2];
    uint32_t extra_seen[2];
    int nextra;
} fpp__pool;

FPP__HIDDEN int fpp__pool_create(fpp__pool *p, const fpp_executor_opts *o, bool shared);
/* owner false (a forked child of the parent): the shared regions are not mapped in this
 * process (MADV_DONTFORK); only heap memory and descriptors are released. */
FPP__HIDDEN void fpp__pool_destroy(fpp__pool *p, bool owner);
/* A new worker starts in the empty slot w on mem (the pool takes over the caller's reference). */
FPP__HIDDEN void fpp__pool_attach(fpp__pool *p, uint32_t w, fpp__slotmem *mem);
/* Takes t: publishes it in a worker's queue. 0 taken, 1 no room now, < 0 an error. */
FPP__HIDDEN int fpp__pool_dispatch(fpp__pool *p, fpp_task *t);
/* Wakes the workers that got tasks since the last flush. */
FPP__HIDDEN void fpp__pool_flush(fpp__pool *p);
/* Zero-copy results (harvest.c): a result of at least FPP__HOLD_MIN bytes is handed out where
 * the worker wrote it; the task's hold keeps that arena space (and the slot memory) until the
 * task manager unpins it. keep: copy it into memory the task owns first. */
#define FPP__HOLD_MIN ((size_t)16 << 10)
FPP__HIDDEN void fpp__pool_unpin(fpp__pool *p, fpp_task *t, bool keep);
/* Harvests every worker's completion records; returns how many tasks finished. */
FPP__HIDDEN int fpp__pool_collect(fpp__pool *p);
FPP__HIDDEN int fpp__pool_collect_worker(fpp__pool *p, uint32_t w);
/* Notes the extra words' values at the start of a poll: a later post ends the wait. */
FPP__HIDDEN void fpp__pool_mark(fpp__pool *p);
/* Sleeps until a worker posts, an extra word moves, or deadline; spins a little first. */
FPP__HIDDEN void fpp__pool_wait(fpp__pool *p, int64_t deadline_ns);
FPP__HIDDEN size_t fpp__pool_in_flight(const fpp__pool *p);
/* Moves queued tasks from a stalled or busy worker to an idle one. */
FPP__HIDDEN void fpp__pool_steal(fpp__pool *p);

/* watchdog.c */
/* The worker in slot w is gone (dead, or abandoned): its records are harvested, its unclaimed
 * tasks go out again, the task it held fails with st, signo and "<why> while running task N";
 * the slot is left empty. Returns the number of tasks finished. */
FPP__HIDDEN int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo,
                                  const char *why);
/* Revokes queued tasks (CANCELLED) and abandons running ones (also CANCELLED for the task
 * manager; their entries wait for the worker to report or die). Marks in kill[] (nworkers
 * entries, or NULL) the workers running abandoned tasks; returns how many. */
FPP__HIDDEN int fpp__pool_cancel(fpp__pool *p, bool *kill);
/* Cancels one task: 1 done (CANCELLED; its worker was stopped if it ran it), 0 not here. */
FPP__HIDDEN int fpp__pool_cancel_task(fpp__pool *p, fpp_task *t);
/* Checks claimed tasks against their timeout; stops the workers over it. Returns the earliest
 * deadline still pending (INT64_MAX: none). */
FPP__HIDDEN int64_t fpp__pool_timeouts(fpp__pool *p);
/* How often a sleeping parent must look at the workers for timeouts to be on time (a claim
 * is seen only when the parent looks): a quarter of the shortest timeout in flight, 1 ms at
 * least; INT64_MAX when no task has one. */
FPP__HIDDEN int64_t fpp__pool_tick_ns(const fpp__pool *p);
/* The watchdog, run when the pool made no progress for a while: a worker whose block or
 * queue says impossible things is reported to bad(). Returns tasks finished. */
FPP__HIDDEN int fpp__pool_audit(fpp__pool *p);

/* flight.c: the in-flight table. */
#define FPP__NIL UINT32_MAX
FPP__HIDDEN int fpp__flight_init(fpp__pool *p, uint32_t n);
FPP__HIDDEN uint32_t fpp__flight_get(fpp__pool *p);            /* FPP__NIL: none free */
FPP__HIDDEN void fpp__flight_put(fpp__pool *p, uint32_t tag);  /* frees it and its argument */
FPP__HIDDEN void fpp__flight_link(fpp__pool *p, uint32_t w, uint32_t tag);   /* at the end */
FPP__HIDDEN void fpp__flight_unlink(fpp__pool *p, uint32_t tag);
/* Finishes a task that leaves the pool (the executor records where it ran). */
FPP__HIDDEN void fpp__pool_finish(fpp__pool *p, fpp_task *t, int slot);

/* forkserver.c: the process every worker of a process executor is forked from. */
enum { FPP__FS_SPAWN = 1, FPP__FS_QUIT, FPP__FS_SPAWNED, FPP__FS_FAILED, FPP__FS_DIED };
#define FPP__EXIT_INIT 121  /* a worker's initializer failed (its message is in its block) */
#define FPP__EXIT_SETUP 122 /* a worker could not map its memory */
typedef struct fpp__fs_msg {
    uint32_t op, slot, gen;
    int32_t pid, status, err; /* status: as wait4, -1 unknown; err: errno of a failed call */
    int64_t maxrss_kib;
    char call[24];            /* FPP__FS_FAILED: the call that failed */
} fpp__fs_msg;
typedef struct fpp__fs_config {
    fpp__layout lay;
    int args_fd;
    unsigned max_tasks;
    size_t max_rss_kib;
    int init_fn;
    const void *init_arg;
    size_t init_len;
    bool keep_fds;
} fpp__fs_config;
typedef struct fpp__fs {
    pid_t pid;
    int pidfd;        /* -1 where pidfd_open is missing */
    int sock;         /* the parent's end of the channel (SOCK_SEQPACKET, non-blocking) */
    fpp__ec *mailbox; /* a shared page the server posts after each message it sends */
    uint32_t seen;    /* mailbox count when the channel was last read empty */
} fpp__fs;
/* Forks the server from the calling thread (fork hooks around it). 0 or FPP_ESYS. */
FPP__HIDDEN int fpp__fs_start(fpp__fs *fs, const fpp__fs_config *cfg);
/* Asks for a worker in slot (generation gen) on the slot memory behind memfd. */
FPP__HIDDEN int fpp__fs_spawn(fpp__fs *fs, uint32_t slot, uint32_t gen, int memfd);
/* The next message: 1 (*pidfd: the descriptor it carried, or -1), 0 none now, -1 channel gone. */
FPP__HIDDEN int fpp__fs_recv(fpp__fs *fs, fpp__fs_msg *m, int *pidfd);
/* True while the server process lives. */
FPP__HIDDEN bool fpp__fs_alive(fpp__fs *fs);
/* Ends the server (it kills and reaps every process it started, and anything they left),
 * waiting up to grace_ns before killing it; reaps it. owner false: only closes our side. */
FPP__HIDDEN void fpp__fs_stop(fpp__fs *fs, int64_t grace_ns, bool owner);

/* ---------------------------------------------------------- task manager */

/* Called by executors for each task that leaves them finished. */
FPP__BACKEND void fpp__tm_finished(fpp_tm *tm, fpp_task *t);
/* True once the task manager raised or was interrupted: nothing more may be dispatched. */
FPP__HIDDEN bool fpp__tm_halted(const fpp_tm *tm);
/* fpp_executor_free with a task manager attached: cancel its unfinished tasks, move held
 * results out, and detach it (it stays valid until fpp_tm_free). FPP_ESTATE if a call on it
 * is in progress (then nothing is done). */
FPP__HIDDEN int fpp__tm_detach(fpp_tm *tm);
/* The same in a process other than the creator: forget the executor, touch nothing else. */
FPP__HIDDEN void fpp__tm_forget_executor(fpp_tm *tm);

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

FPP__HIDDEN void fpp__sigint_forget(fpp__sigint_reg *r); /* another process: drop, no lock */

/* The task manager's counters: written by the thread driving it (relaxed atomics, one writer
 * each), read by the monitor thread and by fpp_tm_stats from any thread. */
typedef struct fpp__counters {
    _Atomic uint64_t submitted, done, failed, crashed, timed_out, cancelled, retried;
    _Atomic uint64_t finished;  /* tasks that ran to an outcome (not cancelled), for the monitor */
    _Atomic size_t in_flight;   /* unfinished tasks */
    /* FPP_TM_ORDERED: the oldest unfinished task while later finished ones wait behind it. */
    _Atomic int64_t wait_id;    /* -1: nothing waits */
    _Atomic int64_t wait_since_ns;
    _Atomic uint64_t held;      /* finished tasks held back */
    uint64_t expected_total;    /* constant: fpp_tm_opts.expected_total */
} fpp__counters;

/* monitor.c: the monitor thread. interval_ms < 0 and !progress: no thread. With progress, it
 * redraws the status line 10 times a second instead of logging monitor lines. */
typedef struct fpp__monitor fpp__monitor;
FPP__HIDDEN int fpp__monitor_start(fpp__monitor **out, const fpp__counters *c, int interval_ms,
                                   bool progress);
FPP__HIDDEN void fpp__monitor_stop(fpp__monitor *m); /* asks it to stop (clears the progress
                                                        line at once); does not wait */
FPP__HIDDEN void fpp__monitor_join(fpp__monitor *m); /* waits for it and frees it */
FPP__HIDDEN void fpp__monitor_forget(fpp__monitor *m); /* another process: free, no join */

/* progress.c: the progress line's text from a snapshot. rate < 0: unknown yet. */
FPP__HIDDEN size_t fpp__progress_format(char *buf, size_t cap, uint64_t ended, uint64_t failed,
                                        uint64_t total, double rate, int64_t wait_id,
                                        double wait_s, int width);

/* idmap.c: task id -> task, for the tasks a task manager has not handed out yet (open
 * addressing, Fibonacci hashing, linear probing, backward-shift deletion). */
typedef struct fpp__idmap_slot { int64_t id; fpp_task *t; } fpp__idmap_slot;
typedef struct fpp__idmap { fpp__idmap_slot *slot; size_t mask, n; unsigned shift; } fpp__idmap;
FPP__HIDDEN int fpp__idmap_put(fpp__idmap *m, fpp_task *t); /* 0 or FPP_ENOMEM */
FPP__HIDDEN fpp_task *fpp__idmap_get(const fpp__idmap *m, int64_t id);
FPP__HIDDEN void fpp__idmap_del(fpp__idmap *m, int64_t id);
FPP__HIDDEN void fpp__idmap_fini(fpp__idmap *m);

#endif /* FPP_INTERNAL_H */
