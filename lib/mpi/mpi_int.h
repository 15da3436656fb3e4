/* mpi/mpi_int.h: what the files of libfpp_mpi share (never installed). libfpp_mpi is a library
 * of its own, on libfpp: it may include core/ and exec/ (an executor backend), never the pool or
 * the task manager (lib/LAYERS).
 *
 *   mpi/wire.c      message layout, batches, bulk transfers in chunks, requests in flight,
 *                   naps (the one sleep primitive of the MPI side)
 *   mpi/join.c      the collective handshake when rank 0 creates its executor and the other
 *                   ranks start serving
 *   mpi/executor.c  rank 0: the executor backend (fpp__exec_ops) behind the task manager
 *   mpi/serve.c     every other rank: the serve loop around a local process executor
 *   mpi/guard.c     MPI refused in pool processes (tasks), with the wrappers generated from
 *                   <mpi.h> at build time (cmake/mpi-guard-gen.sh)
 *
 * Traffic runs on a duplicate of the user's communicator, in two tags per direction:
 * TAG_CTL carries every message (batches of tasks, batches of results, cancels, credits, the
 * stop) and TAG_BULK carries nothing but the bytes of large arguments and results, cut into
 * chunks of at most `chunk` bytes (MPI counts are int). MPI keeps messages from one sender
 * on one tag in order, so a receiver that parses a record saying "n bytes follow in bulk"
 * posts its receives for those chunks before it looks at any later message, and they match
 * the right bytes.
 *
 * Exactly one reply per task: rank 0 sends each task once under a ticket; the rank answers
 * that ticket exactly once (its result, or CANCELLED when rank 0 asked), except after a
 * cancel-all, whose single acknowledgement answers every ticket sent before it. Rank 0 frees
 * an entry only on its reply, so no late reply can ever meet a reused entry.
 *
 * Credits: a rank grants credits (tasks it is ready to take); rank 0 spends one per task it
 * sends there and never sends without one. A rank grants as its pool drains, aiming at
 * about WINDOW_NS of work at its measured rate (at least two tasks per worker), so a slow
 * rank holds little that another could run.
 *
 * All ranks run the same build on machines of the same byte order (checked when they meet);
 * messages are host-order structs. Rank 0 validates every record a rank sends before use. */
#ifndef FPP_MPI_MPI_INT_H
#define FPP_MPI_MPI_INT_H

#include <mpi.h>

#include "core/core.h"
#include "core/ec.h"
#include "exec/exec.h"
#include "fpp_mpi.h"

/* ------------------------------------------------------------ constants */

#define FPP__MPI_MAGIC 0x3169706du   /* "mpi1" */
#define FPP__MPI_VERSION 2u
#define FPP__MPI_ENDIAN 0x01020304u  /* read back as another value on a machine of other order */

enum { FPP__MPI_TAG_CTL = 1, FPP__MPI_TAG_BULK = 2 };

/* Batches: a batch goes out when it holds this many tasks or bytes, or when the rank is
 * about to run dry, or before the sender sleeps. 512 tasks of 8 bytes is about 24 KiB: well
 * past the point where per-message cost stops mattering (64 per message already reaches
 * 40-65 M tasks/s over shared memory and 4 M/s over TCP on this machine). */
#define FPP__MPI_BATCH_TASKS 512u
#define FPP__MPI_BATCH_BYTES ((size_t)512 << 10)
/* A batch not full goes out anyway once it waited FLUSH_AGE_NS, or, on a rank, once it holds
 * RESULTS_MIN results or the rank is about to wait or run dry. Over TCP here a message costs
 * both sides a few microseconds of system calls: sending results as soon as a harvest found no
 * more averaged 11 per message and held noop tasks to 0.27-0.5 M/s. */
#define FPP__MPI_FLUSH_AGE_NS 200000
/* Looking at MPI without waiting (a poll that must not wait, a rank's busy loop) happens at
 * most once per PROGRESS_GAP_NS: over TCP each look is a poll() system call in Open MPI's
 * progress engine, and rank 0 looked once per fpp_as_completed (2 M times for 2 M tasks: 40%
 * of its CPU). Messages wait at most this long on a busy side; a side about to sleep always
 * looks first. */
#define FPP__MPI_PROGRESS_GAP_NS 20000
#define FPP__MPI_RESULTS_MIN 128u
/* An argument or result larger than this travels alone, in bulk (no copy into a batch). */
#define FPP__MPI_INLINE_MAX ((size_t)128 << 10)
/* Bulk chunk: MPI counts are int, so no message may carry 2 GiB; 64 MiB also bounds the
 * scratch a receiver without memory drops bytes into. FPP_MPI_CHUNK in rank 0's environment
 * (bytes, 4096 up to 1 GiB) sets another size, for tests of the chunking. */
#define FPP__MPI_CHUNK ((size_t)64 << 20)
#define FPP__MPI_CHUNK_MAX ((size_t)1 << 30)

/* Credits. WINDOW_NS: the work a rank asks to hold, at its measured rate: it covers the
 * round trip (tens of microseconds over TCP here) plus both sides' naps (up to NAP_MAX_NS
 * each) several times over, so workers never wait on the network, and it bounds the backlog
 * a slow rank holds. RATE_NS: the period over which a rank measures its rate. WINDOW_MAX:
 * most tasks one rank holds; 4096 noop tasks last ~4 ms at 1 M tasks/s. */
#define FPP__MPI_WINDOW_NS 10000000
#define FPP__MPI_LOCAL_NS 1000000   /* the part of it handed to the local pool at once */
#define FPP__MPI_RATE_NS 10000000
#define FPP__MPI_WINDOW_MAX 4096u

#define FPP__MPI_BIG_MIN_SHIFT 16
#define FPP__MPI_BIG_CLASSES 15      /* 64 KiB .. 1 GiB */
#define FPP__MPI_BIG_PER_CLASS 4
#define FPP__MPI_BIG_HELD ((size_t)64 << 20)

/* Naps: a side with nothing to do spins a while, then naps NAP_MIN_NS at a time while it has
 * been idle less than SHORT_IDLE_NS, then naps doubling up to NAP_MAX_NS, checking MPI between
 * naps (MPI has no descriptor to sleep on, and Open MPI's blocking calls spin at full CPU: on
 * 2 cores shared by three ranks and their workers, a spinning rank halves the workers' speed).
 * The spin adapts, as the process executor's parent does: a wait that ended within SPIN_MAX_NS
 * moves the spin halfway towards 1.5 times that wait, a longer one halves it (down to
 * SPIN_MIN_NS): quick round trips are caught spinning on both sides, 1 ms tasks are waited for
 * asleep. Doubling naps from the first one made every hop of a lone task wait for a nap grown
 * to most of a millisecond (p50 2.8-3.9 ms per task). A side idle for good costs ~1,000
 * wake-ups a second, under 1% of a core. */
#define FPP__MPI_SPIN_MIN_NS 5000
#define FPP__MPI_SPIN_NS 20000
#define FPP__MPI_SPIN_MAX_NS 200000
#define FPP__MPI_NAP_MIN_NS 50000
#define FPP__MPI_SHORT_IDLE_NS 2000000
#define FPP__MPI_NAP_MAX_NS 1000000

/* Lost ranks (fpp_mpi_opts.rank_timeout_ms). With a rank timeout, a serving rank sends
 * something at least every BEAT_NS (a BEAT when nothing else went out). Rank 0 counts a rank's
 * silence only while it looks: when it comes back from BEAT_NS or more without looking (the
 * caller was busy elsewhere), silence counts again from then, as messages may still be
 * waiting unread. A rank silent for the timeout is lost: rank 0 fails what it held
 * (FPP_CRASHED, so the task manager runs it elsewhere while retries allow), abandons every
 * request toward it (fpp__mpi_link_abandon), sends it nothing and drops whatever it still
 * sends; the first such message proves it alive, and gets it one LOST notice (a send never
 * waited for). No call of rank 0 ever waits on a serving rank.
 *
 * The rank's side of the same rule: rank 0 can have declared it lost only if nothing it sent
 * for the timeout was received, so only if it sent nothing for the timeout (a message is
 * received after it is sent). So a rank that finds, at the top of its loop, that it sent
 * nothing for the timeout (it was stopped, or stalled) stops serving by itself, as if told
 * LOST: it may be lost already, and if rank 0 was not looking, it will be. So a stopped rank
 * never serves on after the job, whenever it comes back. */
#define FPP__MPI_BEAT_NS 100000000
#define FPP__MPI_RANK_TIMEOUT_MIN_MS 200u

/* ------------------------------------------------------------- messages */

enum {
    FPP__MT_TASKS = 1,   /* 0 -> r: count task records */
    FPP__MT_CANCEL,      /* 0 -> r: count tickets (uint64_t) to cancel */
    FPP__MT_CANCEL_ALL,  /* 0 -> r: aux = epoch; drop everything, acknowledge */
    FPP__MT_STOP,        /* 0 -> r: end serving */
    FPP__MT_RESULTS,     /* r -> 0: count result records; credit; aux = worker restarts */
    FPP__MT_CREDIT,      /* r -> 0: credit only; aux = worker restarts */
    FPP__MT_CANCEL_DONE, /* r -> 0: aux = the epoch acknowledged; credit */
    FPP__MT_BYE,         /* r -> 0: stopped serving; aux: 0 as asked, else the error */
    FPP__MT_BEAT,        /* r -> 0: a heartbeat (with a rank timeout); aux = worker restarts */
    FPP__MT_LOST,        /* 0 -> r: rank 0 declared you lost: stop, answer nothing */
    FPP__MT_LAST = FPP__MT_LOST
};

typedef struct fpp__mpi_hdr {
    uint32_t magic;
    uint16_t type;
    uint16_t flags;
    uint32_t count;  /* records that follow */
    uint32_t credit; /* r -> 0: more tasks the rank takes */
    uint64_t aux;
} fpp__mpi_hdr;

enum { FPP__REC_BULK = 1u, FPP__REC_CANCELLED = 2u };

typedef struct fpp__mpi_task_rec {
    uint64_t ticket;
    int64_t id;          /* the task manager's id, for messages */
    uint32_t fn;
    uint32_t timeout_ms; /* the task's own; 0: the executor's */
    uint64_t len;        /* argument bytes: inline after the record (padded to 8), or in bulk */
    uint32_t flags;      /* FPP__REC_* */
    uint32_t pad;
} fpp__mpi_task_rec;

typedef struct fpp__mpi_result_rec {
    uint64_t ticket;
    uint64_t len;   /* result bytes (DONE) or message bytes, inline (padded) or in bulk */
    int32_t status; /* fpp_status */
    int32_t signo;
    uint32_t flags; /* FPP__REC_BULK */
    uint32_t pad;
} fpp__mpi_result_rec;

/* The longest message a rank may send with a failed task. */
#define FPP__MPI_MSG_MAX 2048u

/* A crash or timeout message from a rank's local pool, as rank 0 reports it: "rank 2: " in
 * front, and the local task id ("task 17", as a word) replaced by rank 0's id for the task,
 * the one its user knows. Writes at most cap bytes with the NUL; returns the length. */
FPP__HIDDEN size_t fpp__mpi_rank_message(char *out, size_t cap, int rank, const char *msg, int64_t lid, int64_t gid);
/* msg (len bytes, or up to a NUL) with every word "task <id>" replaced by name (rank 0 names
 * a labelled task `task 17 "in/0042.bin"`, as on one machine). Returns the length written. */
FPP__HIDDEN size_t fpp__mpi_rename_task(char *out, size_t cap, const char *msg, size_t len, int64_t id, const char *name);

/* ---------------------------------------------------------------- buffers */

typedef struct fpp__mpi_buf {
    unsigned char *p;
    size_t len, cap;
} fpp__mpi_buf;

FPP__HIDDEN int fpp__mpi_buf_reserve(fpp__mpi_buf *b, size_t extra);
FPP__HIDDEN void fpp__mpi_buf_free(fpp__mpi_buf *b);

/* A batch: a header, then records. begin resets b; the add functions return 0 or FPP_ENOMEM,
 * and the task one gives the record's offset (for a later cancel flag). Inline bytes are
 * copied; with FPP__REC_BULK only the length is written. */
FPP__HIDDEN int fpp__mpi_batch_begin(fpp__mpi_buf *b, uint16_t type);
static inline fpp__mpi_hdr *fpp__mpi_batch_hdr(fpp__mpi_buf *b) { return (fpp__mpi_hdr *)b->p; }
FPP__HIDDEN int fpp__mpi_batch_add_task(fpp__mpi_buf *b, const fpp__mpi_task_rec *r, const void *arg,
                                        size_t *rec_off);
FPP__HIDDEN int fpp__mpi_batch_add_result(fpp__mpi_buf *b, const fpp__mpi_result_rec *r, const void *data);

/* Reading a message. open checks the header (magic, a known type, records that fit);
 * next_* return 1 with the record and its inline bytes (NULL when bulk), 0 at the end, or
 * FPP_EINVAL when a record does not fit the message. */
typedef struct fpp__mpi_rd {
    const unsigned char *p;
    size_t len, off;
    uint32_t left;
} fpp__mpi_rd;
FPP__HIDDEN int fpp__mpi_msg_open(fpp__mpi_rd *rd, const void *msg, size_t len, fpp__mpi_hdr *h);
FPP__HIDDEN int fpp__mpi_next_task(fpp__mpi_rd *rd, fpp__mpi_task_rec *r, const unsigned char **bytes);
FPP__HIDDEN int fpp__mpi_next_result(fpp__mpi_rd *rd, fpp__mpi_result_rec *r, const unsigned char **bytes);
FPP__HIDDEN int fpp__mpi_next_ticket(fpp__mpi_rd *rd, uint64_t *ticket);

/* ------------------------------------------------------- requests in flight */

/* Every nonblocking operation either side has started: sends (whose buffer the link owns and
 * frees when they complete) and bulk receives (chunks of one transfer share a counter; the
 * link calls done(owner, cookie) when the last chunk arrived). Only the thread driving the
 * executor or the serve loop touches a link. */
typedef struct fpp__mpi_bulk {
    void *dst;
    size_t len;
    int left;       /* chunks not yet arrived */
    uint64_t cookie;
} fpp__mpi_bulk;

typedef struct fpp__mpi_link {
    MPI_Comm comm;
    int rank;                 /* this process's rank in comm */
    size_t chunk;
    MPI_Request *reqs;
    void **what;              /* per request: a send buffer, or the fpp__mpi_bulk it feeds */
    unsigned char *kind;      /* what[i] is: 0 a send buffer, 1 a receive bulk, 2 a send bulk */
    int *peer;                /* per request: the rank at the other end */
    int64_t last_send_ns;     /* when a message (or chunk) was last sent */
    int n, cap;
    int *done_idx;            /* scratch for MPI_Testsome */
    fpp__mpi_buf spare[8];    /* send buffers kept for reuse */
    unsigned char *scratch;   /* where bulk bytes nobody has memory for are dropped */
    size_t scratch_cap;
    void *big[FPP__MPI_BIG_CLASSES][FPP__MPI_BIG_PER_CLASS]; /* large buffers kept for reuse */
    int nbig[FPP__MPI_BIG_CLASSES];
    size_t big_held;
    int nspare;
    void (*done)(void *owner, fpp__mpi_bulk *b);
    void *owner;
} fpp__mpi_link;

FPP__HIDDEN void fpp__mpi_link_init(fpp__mpi_link *l, MPI_Comm comm, size_t chunk,
                                    void (*done)(void *owner, fpp__mpi_bulk *b), void *owner);
/* Buffers for bulk bytes: from 64 KiB up, by power-of-two class, a few of each kept (at most
 * BIG_HELD bytes): a stream of 1 MiB results otherwise faults in 256 fresh pages apiece,
 * which cost rank 0 more than copying them. Smaller ones are plain malloc. put takes the
 * size given to get. */
FPP__HIDDEN void *fpp__mpi_big_get(fpp__mpi_link *l, size_t n);
FPP__HIDDEN void fpp__mpi_big_put(fpp__mpi_link *l, void *p, size_t n);
/* Leaves every request toward or from peer to MPI, never to be waited for: receives are
 * cancelled, every request is freed (MPI_Request_free), and the memory they read or write is
 * kept until the process ends (a lost rank's requests may never complete, and MPI may touch
 * that memory until then). A bulk receive's done() is never called: dropped(owner, b) is,
 * once per transfer, with b->dst already taken (NULL), for the owner to forget it. Returns how
 * many requests were left. */
FPP__HIDDEN int fpp__mpi_link_abandon(fpp__mpi_link *l, int peer, void (*dropped)(void *owner, fpp__mpi_bulk *b));
/* Frees what the link holds; requests still in flight are left to MPI (only after an error). */
FPP__HIDDEN void fpp__mpi_link_fini(fpp__mpi_link *l);
/* A buffer for a message (reused when one is spare); give it to fpp__mpi_send or back. */
FPP__HIDDEN fpp__mpi_buf fpp__mpi_buf_get(fpp__mpi_link *l);
FPP__HIDDEN void fpp__mpi_buf_put(fpp__mpi_link *l, fpp__mpi_buf *b);
/* Sends b's bytes on TAG_CTL; the link owns b from here (b is reset). 0 or FPP_ESYS. */
FPP__HIDDEN int fpp__mpi_send(fpp__mpi_link *l, int dest, fpp__mpi_buf *b);
/* A small control message at once (header only, or with tickets). */
FPP__HIDDEN int fpp__mpi_send_ctl(fpp__mpi_link *l, int dest, uint16_t type, uint32_t credit, uint64_t aux,
                                  const uint64_t *tickets, uint32_t nt);
/* Sends len bytes at data on TAG_BULK in chunks. The link owns data (from fpp__mpi_big_get,
 * put back when sent). */
FPP__HIDDEN int fpp__mpi_send_bulk(fpp__mpi_link *l, int dest, void *data, size_t len);
/* Posts the receives of a bulk transfer of b->len bytes into b->dst from src (dst NULL: the
 * bytes are dropped, for a receiver that had no memory for them). */
FPP__HIDDEN int fpp__mpi_recv_bulk(fpp__mpi_link *l, int src, fpp__mpi_bulk *b);
/* Completes what has completed (frees send buffers, calls done for finished bulks). Returns
 * the number of requests completed, or FPP_ESYS. */
FPP__HIDDEN int fpp__mpi_link_progress(fpp__mpi_link *l);
static inline bool fpp__mpi_link_idle(const fpp__mpi_link *l) { return l->n == 0; }
/* The next message on TAG_CTL from src (MPI_ANY_SOURCE: anyone), received into rx: 1 and
 * *from set, 0 none waiting, FPP_ESYS. */
FPP__HIDDEN int fpp__mpi_recv_ctl(fpp__mpi_link *l, int src, fpp__mpi_buf *rx, int *from);

/* Logs a failed MPI call ("MPI_Isend(rank 2): message") and returns FPP_ESYS; 0 on success. */
FPP__HIDDEN int fpp__mpi_check(int err, const char *call, int peer);

/* ------------------------------------------------------------------ naps */

/* The one way the MPI side sleeps: spin SPIN_NS, then naps of NAP_MIN_NS until SHORT_IDLE_NS,
 * then growing to NAP_MAX_NS, on the futex word `wake` when there is one (so a signal handler's post cuts a nap
 * short) or plain nanosleep. reset after anything happened. */
typedef struct fpp__mpi_nap {
    int64_t idle_since_ns; /* 0: not idle */
    int64_t nap_ns;        /* the last nap (0: still spinning) */
    int64_t spin_ns;       /* this side's spin, adapted (0: SPIN_NS) */
} fpp__mpi_nap;
/* Something happened: the wait (if any) ends, and the spin learns how long it was. */
FPP__HIDDEN void fpp__mpi_nap_reset(fpp__mpi_nap *n);
/* A wait starts afresh (no lesson drawn: the last one ended for another reason). */
static inline void fpp__mpi_nap_begin(fpp__mpi_nap *n) { n->idle_since_ns = 0; n->nap_ns = 0; }
/* One step of waiting, never past deadline_ns (INT64_MAX: none). */
FPP__HIDDEN void fpp__mpi_nap_step(fpp__mpi_nap *n, fpp__ec *wake, int64_t deadline_ns);
/* Waits for one request, napping between tests. 0 or FPP_ESYS. */
FPP__HIDDEN int fpp__mpi_wait(MPI_Request *r, const char *call, int peer);

/* ------------------------------------------------------------- the meeting */

typedef struct fpp__mpi_config {
    uint32_t magic, version, endian;
    int32_t workers;            /* rank 0's raw option: 0 means each rank's own CPU count */
    uint64_t queue_capacity;    /* raw */
    uint64_t max_arg_size, max_result_size; /* resolved on rank 0: the job's limits */
    uint32_t task_timeout_ms, max_tasks_per_worker;
    uint64_t max_worker_rss_kib;
    int32_t keep_fds;
    uint32_t nfns;
    uint64_t fns_hash;
    uint64_t chunk;
    uint32_t init_name_len;     /* with its NUL; 0: no worker_init */
    int32_t refused;            /* magic 0: rank 0 gives up, with this error */
    uint64_t init_arg_len;
    uint32_t beat_ms;           /* 0: no heartbeats; else send something at least this often */
    uint32_t rank_timeout_ms;   /* rank 0's: a rank that sent nothing for this long stops */
    /* then the name, then the argument bytes */
} fpp__mpi_config;

typedef struct fpp__mpi_hello {
    int32_t rc;       /* 0, or why this rank cannot serve */
    int32_t workers;  /* its local pool */
    int32_t pid;
    uint32_t endian;
    uint32_t nfns;
    uint32_t pad;
    uint64_t fns_hash;
    char host[64];
} fpp__mpi_hello;

/* The registry as a count and a hash of the names in order. */
FPP__HIDDEN void fpp__mpi_fns_digest(uint32_t *n, uint64_t *hash);

/* Rank 0: duplicates comm, sends the configuration, gathers every rank's hello (hellos[r] for
 * r >= 1, hellos[0] unused), checks them and tells every rank the verdict. On success *dup is
 * the new communicator; on failure it is freed and every rank was told. */
FPP__HIDDEN int fpp__mpi_join_root(MPI_Comm comm, const fpp_executor_opts *raw, const fpp_executor_opts *res,
                                   size_t chunk, uint32_t rank_timeout_ms, MPI_Comm *dup, fpp__mpi_hello **hellos,
                                   int *size);
/* Rank 0, when it cannot build its executor: takes part in the meeting only to tell every
 * rank to give up (their fpp_mpi_serve returns rc too). */
FPP__HIDDEN int fpp__mpi_join_refuse(MPI_Comm comm, int rc);
/* The other ranks: duplicates comm and receives the configuration (*var: heap, the
 * worker_init name and argument, or NULL). 0: start the local pool, then call
 * fpp__mpi_join_rank_end with this rank's hello; it returns rank 0's verdict (0: serve) and
 * frees *dup on failure. An error with *dup still set (a configuration this rank cannot use)
 * also owes its hello (with rc set); with *dup MPI_COMM_NULL the meeting is over. */
FPP__HIDDEN int fpp__mpi_join_rank_begin(MPI_Comm comm, MPI_Comm *dup, fpp__mpi_config *cfg, unsigned char **var);
FPP__HIDDEN int fpp__mpi_join_rank_end(MPI_Comm *dup, const fpp__mpi_hello *mine);

/* Whether MPI can be called now, from this thread; logs why not. 0 or FPP_ESTATE. */
FPP__HIDDEN int fpp__mpi_usable(const char *who);

/* ------------------------------------------------------------- the guard */

/* Every MPI function but the local queries is defined by libfpp_mpi (generated from <mpi.h>):
 * in a pool process (a worker running a task, core/owner.c) it fails with this error, else it
 * is MPI's own (PMPI_). */
#define FPP__MPI_GUARD(call)                                                                       \
    do {                                                                                           \
        if (__builtin_expect(fpp__in_pool_process(), 0))                                           \
            return fpp__mpi_refuse(call);                                                          \
    } while (0)
/* Logs the refusal (once per process) and returns the error code of class MPI_ERR_OTHER. */
FPP__HIDDEN int fpp__mpi_refuse(const char *call);
/* In the MPI process, before any pool exists (fpp_mpi_executor, fpp_mpi_serve): makes the
 * error code whose MPI_Error_string says why, and warns when the application's MPI calls do
 * not reach the guard (libmpi linked before libfpp_mpi). Once per process. */
FPP__HIDDEN void fpp__mpi_guard_setup(void);
/* How many MPI functions the generated wrappers guard. */
FPP__HIDDEN extern const unsigned fpp__mpi_guarded_count;

#endif /* FPP_MPI_MPI_INT_H */
