/* pool/pool.h: what the pool layer gives the executors above it. The pool layer is the only code
 * that reads or writes worker-writable memory (the task queue, the result arena, the worker
 * block), and every value it reads there is validated (or clamped) here before anything uses
 * it; the executors see jobs, slots, and validated reports only.
 *
 * It owns: a pool's memory (regions: sealed memfds or private memory; each worker's slot
 * memory), its layout, the parent's side of each worker's queue and result arena, the
 * in-flight table, harvest, recovery, cancel, timeouts, the audit, the worker loop, and the
 * fork server every worker process is forked from. It may include core/ only (lib/LAYERS).
 *
 * Threads: everything on a pool runs on the thread calling into the task manager; the worker
 * loop runs in its worker. Finished jobs leave the pool exactly once, through the hooks' finished
 * call, during one of these calls (never from another thread). */
#ifndef FPP_POOL_POOL_H
#define FPP_POOL_POOL_H

#include <sys/types.h>

#include "core/core.h"
#include "core/ec.h"
#include "core/job.h"

#define FPP__MAX_WORKERS 1024

typedef struct fpp__pool fpp__pool;

/* Where everything lies; computed once from the options, kept privately by each side. */
typedef struct fpp__layout {
    uint32_t qcells, nworkers;     /* queue cells per worker (power of two), workers */
    size_t cells_off, arena_off, arena_size, slot_size; /* within one slot memory */
    size_t args_size;              /* the argument arena */
    size_t max_arg, max_result;
} fpp__layout;

FPP__HIDDEN int fpp__layout_compute(fpp__layout *l, const fpp_executor_opts *o);

/* What a worker says of itself (validated: any other value reads as STARTING). */
enum { FPP__WS_STARTING = 0, FPP__WS_READY = 1, FPP__WS_INIT_FAILED = 2, FPP__WS_RETIRED = 3 };
#define FPP__EXIT_INIT 121  /* a worker's initializer failed (its message is in its block) */
#define FPP__EXIT_SETUP 122 /* a worker could not map its memory */

/* ------------------------------------------------------------- memory */

/* A region: a sealed memfd mapped shared (process executor; fd kept so it can be handed to a
 * worker, -1 once closed) or private anonymous memory (thread executor). pool/region.c. */
typedef struct fpp__region {
    unsigned char *base;
    size_t size;
    int fd;
} fpp__region;
FPP__HIDDEN int fpp__region_create(fpp__region *r, const char *name, size_t size, size_t prefault,
                                   bool shared);
FPP__HIDDEN int fpp__region_seal(fpp__region *r, bool no_writes);
FPP__HIDDEN void fpp__region_close_fd(fpp__region *r);
FPP__HIDDEN void fpp__region_destroy(fpp__region *r);
/* In a forked child: frees the bookkeeping of a shared region's memory, unmaps nothing. */
FPP__HIDDEN void fpp__region_forget(fpp__region *r);

/* A worker slot's memory (pool/slot.c): a region plus references (the slot's current worker,
 * and each result handed out from its arena). A new worker always gets new slot memory; the
 * old one lives until its last reference goes. */
typedef struct fpp__slotmem fpp__slotmem;
FPP__HIDDEN fpp__slotmem *fpp__slotmem_new(const fpp__layout *l, bool shared);
FPP__HIDDEN void fpp__slotmem_ref(fpp__slotmem *m);
FPP__HIDDEN void fpp__slotmem_unref(fpp__slotmem *m);
FPP__HIDDEN int fpp__slotmem_fd(const fpp__slotmem *m);    /* the memfd to hand a worker */
FPP__HIDDEN void fpp__slotmem_close_fd(fpp__slotmem *m);   /* the worker has it now */

/* ------------------------------------------------------------- the worker */

/* What a worker knows of its pool: trusted values copied before it started (pool/worker.c). */
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

/* Runs a worker to its end: the initializer (init_fn >= 0: that registered function on those
 * bytes), then says READY (or INIT_FAILED with the message) in its block, then the loop until
 * told to stop, retired or abandoned. Returns the exit status: FPP__EXIT_INIT when the
 * initializer failed, else 0. */
FPP__HIDDEN int fpp__worker_run(fpp__wctx *w, int init_fn, const void *init_arg, size_t init_len);
/* Thread workers. stop: asks the thread to end after its task. abandon: the pool gives up on it
 * (it starts no new claim and publishes nothing more). claiming: it is between a claim and the
 * copy of that task's argument (the argument's block must not be reused until it is not). */
FPP__HIDDEN void fpp__worker_stop(fpp__wctx *w);
FPP__HIDDEN void fpp__worker_abandon(fpp__wctx *w);
FPP__HIDDEN bool fpp__worker_claiming(fpp__wctx *w);
/* The worker's side: makes the parent look at this worker (a thread that has ended). */
FPP__HIDDEN void fpp__worker_ring(fpp__wctx *w);
/* The context of a thread worker in slot w on mem (a process worker's is made by the fork
 * server). */
FPP__HIDDEN void fpp__wctx_thread(fpp__wctx *w, const fpp__pool *p, fpp__slotmem *mem, uint32_t slot,
                                  unsigned max_tasks);

/* -------------------------------------------------------------- the pool */

/* What the executor gives its pool: whom to hand finished jobs to and whom to ask to stop a
 * worker, what else its sleep wakes on, and a default timeout. */
typedef struct fpp__pool_hooks {
    void *owner;
    /* A job leaves the pool finished (each job exactly once). */
    void (*finished)(void *owner, fpp__job *j);
    /* Worker w wrote nonsense: replace it. */
    void (*bad)(void *owner, uint32_t w);
    /* Stop worker w's running task (timeout, cancel): kill the process, or abandon the thread. */
    void (*stop)(void *owner, uint32_t w);
    /* Set by a poke from any thread or signal handler: the current or next wait returns. */
    _Atomic int *poked;
    unsigned task_timeout_ms; /* a job without its own: 0 none */
} fpp__pool_hooks;

FPP__HIDDEN int fpp__pool_create(fpp__pool **out, const fpp_executor_opts *o, bool shared,
                                 const fpp__pool_hooks *hooks);
/* owner false (a forked child of the parent): the shared regions are not mapped in this
 * process (MADV_DONTFORK); only heap memory and descriptors are released. */
FPP__HIDDEN void fpp__pool_destroy(fpp__pool *p, bool owner);
FPP__HIDDEN const fpp__layout *fpp__pool_layout(const fpp__pool *p);
FPP__HIDDEN int fpp__pool_args_fd(const fpp__pool *p);
FPP__HIDDEN const unsigned char *fpp__pool_args(const fpp__pool *p);
/* Further words a sleeping parent wakes on (at most 2: the fork server's mailbox, the poke);
 * word 0 is slept on alone where futex_waitv is missing. */
FPP__HIDDEN void fpp__pool_set_word(fpp__pool *p, int i, fpp__ec *e);

/* A new worker starts in the empty slot w on mem (the pool takes over the caller's reference). */
FPP__HIDDEN void fpp__pool_attach(fpp__pool *p, uint32_t w, fpp__slotmem *mem);
/* Slot w takes no more tasks (its worker is being stopped). */
FPP__HIDDEN void fpp__pool_close_slot(fpp__pool *p, uint32_t w);
/* Worker w's state (FPP__WS_*), read from its block and validated; msg (cap bytes, may be
 * NULL) gets its initializer's message, printable characters only, when INIT_FAILED. */
FPP__HIDDEN uint32_t fpp__pool_worker_state(fpp__pool *p, uint32_t w, char *msg, size_t cap);
/* The same, once it is no longer STARTING or at deadline_ns (sleeping on its bell meanwhile). */
FPP__HIDDEN uint32_t fpp__pool_await_state(fpp__pool *p, uint32_t w, int64_t deadline_ns, char *msg, size_t cap);
/* What worker w did before it died: whether it ran (started up or finished a task), and the
 * resident memory it started with (clamped to [0, limit_kib]). */
FPP__HIDDEN bool fpp__pool_worker_ran(fpp__pool *p, uint32_t w);
FPP__HIDDEN uint64_t fpp__pool_worker_rss_start(fpp__pool *p, uint32_t w, uint64_t limit_kib);
/* The worker in slot w was stopped for a timeout (its task ends FPP_TIMEOUT). */
FPP__HIDDEN bool fpp__pool_timed_out(const fpp__pool *p, uint32_t w);

/* Takes j: publishes it in a worker's queue. 0 taken, 1 no room now, < 0 an error. j NULL:
 * only sends out again what was taken back from workers (first, always: so with 1, or an
 * error, some of those may have been published). The workers are woken by fpp__pool_flush,
 * which must follow whatever this returned. */
FPP__HIDDEN int fpp__pool_dispatch(fpp__pool *p, fpp__job *j);
/* Takes j to be dispatched later (or failed by fpp__pool_fail_waiting). */
FPP__HIDDEN void fpp__pool_defer(fpp__pool *p, fpp__job *j);
FPP__HIDDEN bool fpp__pool_has_waiting(const fpp__pool *p);
/* Fails every job waiting to be dispatched with st and the message; returns how many. */
FPP__HIDDEN int fpp__pool_fail_waiting(fpp__pool *p, fpp_status st, const char *msg);
/* Wakes the workers that got tasks since the last flush. */
FPP__HIDDEN void fpp__pool_flush(fpp__pool *p);
/* Zero-copy results (pool/result_arena.c): the executor's unpin and pin. */
FPP__HIDDEN void fpp__pool_unpin(fpp__pool *p, fpp__job *j, bool keep);
FPP__HIDDEN void fpp__pool_pin(fpp__pool *p, fpp__job *j, bool on);
/* Harvests every worker's completion records; returns how many jobs finished. */
FPP__HIDDEN int fpp__pool_collect(fpp__pool *p);
/* Notes the words' values at the start of a poll: a later post ends the wait. */
FPP__HIDDEN void fpp__pool_mark(fpp__pool *p);
/* Sleeps until a worker posts, a word moves, a poke, or deadline; spins a little first. */
FPP__HIDDEN void fpp__pool_wait(fpp__pool *p, int64_t deadline_ns);
FPP__HIDDEN size_t fpp__pool_in_flight(const fpp__pool *p);
/* Jobs handed back finished so far, ever: a poll that finished any, wherever (a timeout's
 * recovery, a collect inside it), must not go to sleep. */
FPP__HIDDEN uint64_t fpp__pool_finished(const fpp__pool *p);
/* Moves queued tasks from a stalled or busy worker to an idle one. */
FPP__HIDDEN void fpp__pool_steal(fpp__pool *p);

/* The worker in slot w is gone (dead, or abandoned): its records are harvested, its unclaimed
 * tasks go out again, the task it held fails with st, signo and "<why> while running task N";
 * the slot is left empty. Returns the number of jobs finished. pool/recover.c. */
FPP__HIDDEN int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo, const char *why);
/* Revokes queued tasks (CANCELLED) and abandons running ones (also CANCELLED; their entries
 * wait for the worker to report or die). Marks in kill[] (nworkers entries, or NULL) the
 * workers running abandoned tasks; returns how many. pool/cancel.c. */
FPP__HIDDEN int fpp__pool_cancel(fpp__pool *p, bool *kill);
/* Cancels one job: 1 done (CANCELLED; its worker was stopped if it ran it), 0 not here. */
FPP__HIDDEN int fpp__pool_cancel_task(fpp__pool *p, fpp__job *j);
/* Checks claimed tasks against their timeout; stops the workers over it. Returns the earliest
 * deadline still pending (INT64_MAX: none). pool/timeout.c. */
FPP__HIDDEN int64_t fpp__pool_timeouts(fpp__pool *p);
/* How often a sleeping parent must look at the workers for timeouts to be on time; INT64_MAX
 * when no task has one. */
FPP__HIDDEN int64_t fpp__pool_tick_ns(const fpp__pool *p);
/* The audit, run when the pool made no progress for a while: a worker whose block or queue
 * says impossible things is reported to bad(). Returns jobs finished. pool/audit.c. */
FPP__HIDDEN int fpp__pool_audit(fpp__pool *p);

/* ---------------------------------------------------------- the fork server */

/* pool/forkserver.c and pool/keeper.c: the process every worker of a process executor is forked
 * from, and the keeper it is forked from. */
enum { FPP__FS_SPAWN = 1, FPP__FS_QUIT, FPP__FS_SPAWNED, FPP__FS_FAILED, FPP__FS_DIED, FPP__FS_PING, FPP__FS_PONG };
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
    pid_t pid;        /* the fork server (the keeper's child) */
    int pidfd;        /* -1 where pidfd_open is missing */
    int sock;         /* the parent's end of the channel (SOCK_SEQPACKET, non-blocking) */
    fpp__ec *mailbox; /* a shared page the server posts after each message it sends */
    uint32_t seen;    /* mailbox count when the channel was last read empty */
    pid_t kpid;       /* the keeper (our child) */
    int kpidfd, ksock;
    fpp__fs_config cfg;
} fpp__fs;
/* Forks the keeper from the calling thread (fork hooks around it) and has it fork the first
 * server. 0 or FPP_ESYS. */
FPP__HIDDEN int fpp__fs_start(fpp__fs *fs, const fpp__fs_config *cfg);
/* Kills the current server (its workers die with it) and has the keeper fork a new one, or,
 * if the keeper is gone or does not answer, forks a new keeper from the program as it is now
 * (logged). 0 or an error. */
FPP__HIDDEN int fpp__fs_replace(fpp__fs *fs);
/* The parent's heartbeat: asks the server for a PONG carrying seq. 0 sent, -1 not sent (errno
 * EAGAIN: the channel is full). */
FPP__HIDDEN int fpp__fs_ping(fpp__fs *fs, uint32_t seq);
/* Continues the server or the keeper if it is stopped (SIGCONT, with a log line); true if it
 * did. */
FPP__HIDDEN bool fpp__fs_continue_if_stopped(fpp__fs *fs);
/* Asks for a worker in slot (generation gen) on the slot memory behind memfd: 0 asked, 1 the
 * channel is full for now (nothing sent: ask again later), or an error (the channel failed). */
FPP__HIDDEN int fpp__fs_spawn(fpp__fs *fs, uint32_t slot, uint32_t gen, int memfd);
/* The next message: 1 (*pidfd: the descriptor it carried, or -1), 0 none now, -1 channel gone. */
FPP__HIDDEN int fpp__fs_recv(fpp__fs *fs, fpp__fs_msg *m, int *pidfd);
/* True while the server process lives. */
FPP__HIDDEN bool fpp__fs_alive(fpp__fs *fs);
/* Kills the server at once (its workers die with it: their death signal). */
FPP__HIDDEN void fpp__fs_kill(fpp__fs *fs);
/* Ends the server and the keeper (they kill and reap every process they started, and anything
 * those left), waiting up to grace_ns before killing them. owner false: only closes our side. */
FPP__HIDDEN void fpp__fs_stop(fpp__fs *fs, int64_t grace_ns, bool owner);

#endif /* FPP_POOL_POOL_H */
