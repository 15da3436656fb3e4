/* pool/pool_int.h: what the files of the pool layer share among themselves: the parent's private
 * state of a pool (per worker: its slot memory, its queue position, its list of in-flight
 * entries; the in-flight table; the retry queue), and the halves of the protocols that other
 * pool files call. Private to pool/ (lib/LAYERS).
 *
 * Invariants: an in-flight entry is FREE, QUEUED (its task is in its worker's queue or running
 * there) or ABANDONED (the parent finished its job, but the worker may still run it: the entry
 * and its argument block are kept until the worker reports or dies). Every QUEUED or ABANDONED
 * entry is on exactly one worker's list, in queue order, and that worker's records must come
 * back in that order. Every job dispatched leaves the pool exactly once, through
 * fpp__pool_finish (the executor's finished hook). The parent keeps its own copy of every
 * index and size and never reads them back from worker memory. */
#ifndef FPP_POOL_POOL_INT_H
#define FPP_POOL_POOL_INT_H

#include <sched.h>
#include <sys/resource.h>

#include "core/list.h"
#include "pool/layout.h"
#include "pool/pool.h"

#define FPP__NIL UINT32_MAX

/* ----------------------------------------------------------- slot memory */

struct fpp__hold;
struct fpp__slotmem {
    fpp__region r;
    _Atomic unsigned refs;
    struct fpp__hold *first, *last; /* results handed out from its arena, oldest first (parent) */
};

/* ------------------------------------------------------------- task queue */

/* pool/task_queue.c: a worker's task queue (see the protocol there). */
FPP__HIDDEN void fpp__queue_init(fpp__cell *cells, uint32_t n);
/* Parent: publish src at position pos. 0 published, 1 the cell is not free yet. */
FPP__HIDDEN int fpp__queue_publish(fpp__cell *cells, uint32_t n, uint64_t pos, const fpp__cell *src);
/* Parent: take back the task at pos if no worker claimed it. 1 revoked, 0 claimed. */
FPP__HIDDEN int fpp__queue_revoke(fpp__cell *cells, uint32_t n, uint64_t pos);
/* Parent: what the cell says of the task published at pos: 1 claimed (or the cell was reused
 * since, which needs a claim first), 0 still READY, -1 revoked, -2 nonsense. */
FPP__HIDDEN int fpp__queue_claimed(fpp__cell *cells, uint32_t n, uint64_t pos);
/* Parent: the cell at pos can take a new task (it says CLAIMED(pos - n)). */
FPP__HIDDEN bool fpp__queue_free(fpp__cell *cells, uint32_t n, uint64_t pos);
/* Worker: the next task of its queue at *head, copied to *out and claimed. 1 claimed, 0
 * nothing ready. Acknowledges revoked cells on the way. *ticket_word gets the ticket before
 * the claim (the parent's timeout clock). */
FPP__HIDDEN int fpp__queue_claim(fpp__cell *cells, uint32_t n, uint64_t *head, fpp__cell *out,
                                 _Atomic uint64_t *ticket_word);

/* --------------------------------------------------------- argument arena */

/* pool/arg_arena.c: the argument arena's buddy allocator (parent only, metadata in parent
 * memory) and placing an argument in it. */
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

/* ------------------------------------------------------------ in flight */

enum { FPP__FL_FREE = 0, FPP__FL_QUEUED, FPP__FL_ABANDONED };
typedef struct fpp__flight {
    fpp__job *job;        /* NULL once abandoned */
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

/* The parent's private view of one worker slot. */
typedef struct fpp__wpriv {
    fpp__slotmem *mem;     /* the current worker's slot memory; NULL: no worker */
    fpp__wblock *b;
    fpp__cell *cells;
    unsigned char *arena;
    uint32_t *cell_entry;  /* per queue cell: the entry last published there, or FPP__NIL */
    uint64_t tail;         /* next queue position */
    uint64_t chead;        /* completion records consumed */
    uint64_t apos;         /* result arena: end of the last result taken */
    struct fpp__hold *pin; /* result arena: the hold the caller may be reading (never moved) */
    uint32_t first, last, n; /* its entries, oldest first, and how many */
    uint32_t unflushed;    /* published since the last flush */
    uint32_t depth;        /* how many tasks to queue on it: adapts to the tasks' length */
    int64_t svc_ns;        /* estimated time per task */
    int64_t last_done_ns;  /* when it last returned a record (or last went from idle to busy) */
    bool alive;            /* a worker runs in the slot and takes tasks */
    bool corrupt;          /* reported to bad() already */
    uint64_t timeout_ticket; /* the task whose timeout made us stop it */
    int64_t unacked_since_ns; /* the audit saw a revoke blocking its queue since then; 0: no */
    uint32_t noise;        /* the parent's sleeps its bell ended for nothing, in a row */
    int64_t muted_until;   /* its bell is not slept on until then (0: it is) */
    int64_t mute_ns;       /* how long the next mute lasts (doubles) */
    unsigned timeout_ms;
} fpp__wpriv;

struct fpp__pool {
    fpp__layout lay;
    bool shared;            /* memfds (process executor) or private memory (threads) */
    fpp__region args;       /* the argument arena */
    fpp__buddy argbuddy;
    fpp__flight *fl;
    uint32_t nfl, free_fl, used_fl;
    uint64_t next_ticket;
    fpp__wpriv *wp;
    uint32_t cursor;        /* where the next dispatch starts looking */
    uint32_t linked;        /* entries linked to a worker (the sum of the workers' n) */
    uint32_t last_w;        /* the worker an entry was last unlinked from (its task ended) */
    size_t hold_min;        /* results from this size on are handed out zero-copy */
    uint32_t ntimed;        /* entries with a timeout */
    unsigned min_timeout_ms; /* the shortest of those since ntimed was last 0 */
    fpp__list retry;        /* jobs to publish again (revoked: never started), by their link */
    uint64_t bogus;         /* records refused */
    uint64_t finished;      /* jobs handed back finished, ever (fpp__pool_finished) */
    int64_t spin_ns;        /* how long the parent spins before sleeping; adapts */
    bool woke_worker;       /* the last flush woke a sleeping worker */
    fpp__pool_hooks h;
    /* Further words a sleeping parent wakes on, with the counts seen when the current poll
     * began (fpp__pool_mark). */
    fpp__ec *extra[2];
    uint32_t extra_seen[2];
    int nextra;
};

/* pool/flight.c: the in-flight table. */
FPP__HIDDEN int fpp__flight_init(fpp__pool *p, uint32_t n);
FPP__HIDDEN uint32_t fpp__flight_get(fpp__pool *p);            /* FPP__NIL: none free */
FPP__HIDDEN void fpp__flight_put(fpp__pool *p, uint32_t tag);  /* frees it and its argument */
FPP__HIDDEN void fpp__flight_link(fpp__pool *p, uint32_t w, uint32_t tag);   /* at the end */
FPP__HIDDEN void fpp__flight_unlink(fpp__pool *p, uint32_t tag);

/* pool/arg_arena.c: places j's argument for entry e: inline in the cell d, or in a block of the
 * argument arena. 0 placed, 1 the arena is full until tasks finish, < 0 an error. */
FPP__HIDDEN int fpp__args_create(fpp__pool *p);
FPP__HIDDEN void fpp__args_destroy(fpp__pool *p, bool unmap);
FPP__HIDDEN int fpp__args_place(fpp__pool *p, fpp__flight *e, const fpp__job *j, fpp__cell *d);
FPP__HIDDEN void fpp__args_release(fpp__pool *p, fpp__flight *e);

/* pool/dispatch.c: publishes j in worker w's queue. 0 done, 1 no room there, < 0 an error. */
FPP__HIDDEN int fpp__pool_publish_on(fpp__pool *p, uint32_t w, fpp__job *j);

/* pool/pool.c: a job leaves the pool finished (slot: where it ran, or -1). */
FPP__HIDDEN void fpp__pool_finish(fpp__pool *p, fpp__job *j, int slot);
/* Worker w wrote nonsense: it gets no more tasks, nothing more is read from it, and the
 * executor is told to replace it (once). */
FPP__HIDDEN void fpp__pool_bad(fpp__pool *p, uint32_t w, const char *why);

/* pool/recover.c: revokes every task worker w has not claimed yet; they go out again (to other
 * workers, or to w's successor), ahead of what already waits. */
FPP__HIDDEN void fpp__pool_revoke_unclaimed(fpp__pool *p, uint32_t w);

/* pool/completion_ring.c */
/* Parent: harvests worker w's records; returns how many jobs finished. */
FPP__HIDDEN int fpp__pool_collect_worker(fpp__pool *p, uint32_t w);

/* ------------------------------------------------------------ result arena */

/* pool/result_arena.c, the parent's half. */
/* Checks a record's arena position for worker w (len bytes at off, past what the parent took
 * already, within one lap): the bytes, or NULL with *bad saying why. Advances the parent's
 * position when good. */
FPP__HIDDEN const unsigned char *fpp__rarena_take(fpp__pool *p, uint32_t w, uint64_t off, uint64_t len,
                                                 const char **bad);
/* Hands j the result at [off, off + len) of worker w's arena without a copy (a hold); false if
 * it could not (no memory for the hold: the caller copies). */
FPP__HIDDEN bool fpp__rarena_hold(fpp__pool *p, uint32_t w, fpp__job *j, const unsigned char *data,
                                  uint64_t off, uint64_t len);
/* After a harvest of worker w: makes room it waits for, and publishes where it may write. */
FPP__HIDDEN void fpp__rarena_release(fpp__pool *p, uint32_t w);
/* Worker w waits for room and has published no record: make room for it. */
FPP__HIDDEN void fpp__rarena_make_room(fpp__pool *p, uint32_t w);

/* The worker's half: where results are written in its arena. */
typedef struct fpp__rarena_writer {
    fpp__wblock *b;
    unsigned char *arena;
    uint64_t size;
    uint64_t apos;   /* where the next result starts (before alignment) */
} fpp__rarena_writer;
/* Space for len bytes (its arena position in *off), waiting for the parent to release older
 * results; NULL if stop(arg) said to give up while waiting. */
FPP__HIDDEN unsigned char *fpp__rarena_reserve(fpp__rarena_writer *a, size_t len, uint64_t *off,
                                               bool (*stop)(void *arg), void *arg);
/* The result at off of len bytes was written (it is published with its record). */
static inline void fpp__rarena_wrote(fpp__rarena_writer *a, uint64_t off, size_t len) { a->apos = off + len; }

/* ------------------------------------------------------ the pool's processes */

/* pool/proc.c: descriptors over a SOCK_SEQPACKET channel (at most 4 sent, maxfds received;
 * 1, 0 end of channel, -1 error: EAGAIN none now, EBADMSG malformed and dropped). */
FPP__HIDDEN int fpp__chan_send(int sock, const void *buf, size_t len, const int *fds, int nfds);
FPP__HIDDEN int fpp__chan_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int flags);
/* Closes every descriptor from `from` on but those in keep (sorted here). */
FPP__HIDDEN void fpp__close_except(int *keep, int nkeep, int from);
/* Closes fpp's own descriptors (core/owner.c's list) but those in keep. */
FPP__HIDDEN void fpp__close_fpp_fds(const int *keep, int nkeep);
/* The process state the keeper saves when it starts and every process it and the server fork
 * is given back: resource limits, priority, CPU affinity. */
#define FPP__RLIMITS RLIM_NLIMITS
typedef struct fpp__proc_state {
    struct rlimit lim[FPP__RLIMITS];
    bool have[FPP__RLIMITS];
    int nice;
    bool have_nice, have_cpus;
    cpu_set_t cpus;
} fpp__proc_state;
FPP__HIDDEN void fpp__proc_state_save(fpp__proc_state *s);
/* In a new process: puts the state back (a hard limit a task lowered comes back only with
 * CAP_SYS_RESOURCE); returns how many parts could not be. */
FPP__HIDDEN int fpp__proc_state_apply(const fpp__proc_state *s);
/* Kills every child of this process, and what they leave to it, until none is left or grace_ns
 * passes; reaped(arg, pid) for each one reaped. */
FPP__HIDDEN void fpp__kill_all_children(pid_t self, int64_t grace_ns, void (*reaped)(void *arg, pid_t pid), void *arg);

/* pool/forkserver.c: the server's life, in a child of the keeper. */
typedef struct fpp__server_args {
    const fpp__fs_config *cfg;
    int sock;                    /* its end of the channel to the parent */
    pid_t parent, keeper;
    fpp__ec *mailbox;
    fpp__fork_hooks hooks;
    const fpp__proc_state *state;
    int close[4], nclose;        /* the keeper's descriptors */
} fpp__server_args;
FPP__HIDDEN void fpp__server_main(const fpp__server_args *a) __attribute__((noreturn));

/* pool/completion_ring.c, the worker's half: publishes one record, waiting while the ring is
 * full (unless stop(arg) says to give up), and rings the parent's bell. Returns true when the
 * ring woke the parent from its sleep. */
FPP__HIDDEN bool fpp__completion_publish(fpp__wblock *b, uint64_t *ctail, const fpp__crec *r,
                                         bool (*stop)(void *arg), void *arg);

#endif /* FPP_POOL_POOL_INT_H */
