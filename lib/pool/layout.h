/* pool/layout.h: the shared-memory layout, the one contract between the parent and a worker:
 * the task queue cell, the completion record, the worker block (with the result arena's
 * control words), and where each lies in a worker's slot memory. Everything a worker can write
 * is defined here and nowhere else; every size, alignment, offset and power-of-two capacity the
 * protocols rely on is checked at build time at the bottom (as DPDK keeps rte_ring_core.h).
 *
 * Private to the pool layer (lib/LAYERS): nothing above pool/ may include this file, so no code
 * outside pool/ can read or write worker-writable memory. The protocols over these words are in
 * pool/task_queue.c (the cells) and pool/result_arena.c (the arena); the completion ring's
 * reading and its validation in pool/completion_ring.c.
 *
 * One slot memory per worker: [block | task queue cells | result arena], page-aligned parts;
 * the argument arena is one region for the whole pool, written by the parent only. */
#ifndef FPP_POOL_LAYOUT_H
#define FPP_POOL_LAYOUT_H

#include <stdalign.h>

#include "pool/pool.h"

/* Task queue cell states: (position << 2) | tag, positions free-running per worker queue.
 * READY(p): the parent published position p; CLAIMED(p): the worker took p (or acknowledged
 * its revocation); REVOKED(p): the parent took p back before the worker claimed it. See
 * pool/task_queue.c for the protocol and the recovery argument. */
#define FPP__Q_READY 1u
#define FPP__Q_CLAIMED 2u
#define FPP__Q_REVOKED 3u
#define FPP__Q(pos, tag) (((uint64_t)(pos) << 2) | (uint64_t)(tag))
#define FPP__Q_POS(s) ((s) >> 2)
#define FPP__Q_TAG(s) ((uint32_t)((s) & 3u))

/* One task in a worker's queue: 64 bytes, one cache line. */
typedef struct fpp__cell {
    _Atomic uint64_t state;
    uint64_t ticket;   /* 64 bits, never reused: the parent's publish sequence */
    uint32_t fn;
    uint32_t arg_len;
    uint64_t arg_off;  /* in the argument arena when arg_len > FPP__INLINE_ARG */
    unsigned char arg[FPP__INLINE_ARG];
} fpp__cell;

/* Completion record, worker -> parent: 64 bytes. */
enum { FPP__R_DONE = 1, FPP__R_FAILED = 2 };
typedef struct fpp__crec {
    uint64_t ticket;
    uint32_t status;
    uint32_t len;  /* result bytes (DONE) or message bytes (FAILED) */
    uint64_t off;  /* result arena position when len > FPP__INLINE_RES */
    unsigned char data[FPP__INLINE_RES];
} fpp__crec;

#define FPP__CRING 64          /* completion records per worker (a power of two) */
#define FPP__ARENA_ALIGN 64u   /* results start at multiples of this in the result arena */

typedef struct fpp__wblock {
    /* Written by the worker (untrusted: validated or clamped wherever the parent uses it). */
    alignas(FPP__LINE) _Atomic uint64_t running; /* ticket it is claiming or running; 0: none yet */
    _Atomic uint64_t ctail;      /* completion records published */
    _Atomic uint64_t need;       /* result arena: the position it waits to reach; 0: none */
    _Atomic uint64_t tasks;      /* tasks finished by this worker */
    _Atomic uint32_t wstate;     /* FPP__WS_* */
    _Atomic uint32_t pid;        /* for tests and debuggers: the parent never reads it */
    _Atomic uint64_t rss_start_kib; /* resident memory when it started */
    char msg[FPP__ERR_MAX];      /* FPP__WS_INIT_FAILED: why */
    /* Written by the parent. */
    alignas(FPP__LINE) _Atomic uint64_t chead; /* completion records consumed */
    /* The result arena's control words (pool/result_arena.c): atail, the oldest position the
     * parent still holds but may move (the worker writes below atail + size); apin, the one
     * result the caller may be reading (never moved): its offset in the arena / 64 in the high
     * half, its length / 64 in the low half; 0: none. apin is stored before atail (release). */
    _Atomic uint64_t atail;
    _Atomic uint64_t apin;
    /* The worker sleeps on wake (the parent posts: tasks published, room made); the parent
     * sleeps on bell (the worker posts: a record published, start-up done). */
    alignas(FPP__LINE) fpp__ec wake;
    alignas(FPP__LINE) fpp__ec bell;
    alignas(FPP__LINE) fpp__crec ring[FPP__CRING];
} fpp__wblock;

static inline fpp__wblock *fpp__slot_block(unsigned char *slot) { return (fpp__wblock *)(void *)slot; }
static inline fpp__cell *fpp__slot_cells(unsigned char *slot, const fpp__layout *l)
{
    return (fpp__cell *)(void *)(slot + l->cells_off);
}
static inline unsigned char *fpp__slot_arena(unsigned char *slot, const fpp__layout *l)
{
    return slot + l->arena_off;
}

/* ---------------------------------------------------------- build-time checks */

/* Shared between processes, atomics must be lock-free (a lock would live in one process only). */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2, "shared atomics must be lock-free");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4, "atomic words keep their size");
_Static_assert(sizeof(fpp__ec) == 4, "an event count is one 32-bit futex word");

/* The cell: one cache line, the state word first (the only word a worker writes). */
_Static_assert(sizeof(fpp__cell) == FPP__LINE, "a queue cell is one cache line");
_Static_assert(offsetof(fpp__cell, state) == 0, "the state word leads the cell");
_Static_assert(offsetof(fpp__cell, arg) + FPP__INLINE_ARG == sizeof(fpp__cell), "inline argument bytes fill the cell");
_Static_assert(FPP__Q_READY < 4 && FPP__Q_CLAIMED < 4 && FPP__Q_REVOKED < 4, "cell tags fit in two bits");

/* The completion record: one cache line, a power-of-two ring of them. */
_Static_assert(sizeof(fpp__crec) == FPP__LINE, "a completion record is one cache line");
_Static_assert(offsetof(fpp__crec, data) + FPP__INLINE_RES == sizeof(fpp__crec), "inline result bytes fill the record");
_Static_assert(FPP__IS_POW2(FPP__CRING), "the completion ring's capacity is a power of two");
_Static_assert(FPP__CRING >= 2, "the completion ring holds at least two records");

/* The block: what the worker writes and what the parent writes on separate cache lines; each
 * event count on a line of its own; the ring line-aligned. */
_Static_assert(offsetof(fpp__wblock, running) == 0, "the worker's words start the block");
_Static_assert(offsetof(fpp__wblock, chead) % FPP__LINE == 0, "the parent's words start a cache line");
_Static_assert(offsetof(fpp__wblock, chead) >= offsetof(fpp__wblock, msg) + FPP__ERR_MAX,
               "the parent's words come after every worker-written byte");
_Static_assert(offsetof(fpp__wblock, wake) % FPP__LINE == 0 && offsetof(fpp__wblock, bell) % FPP__LINE == 0,
               "each event count has a cache line of its own");
_Static_assert(offsetof(fpp__wblock, bell) - offsetof(fpp__wblock, wake) >= FPP__LINE, "wake and bell share no line");
_Static_assert(offsetof(fpp__wblock, wake) >= offsetof(fpp__wblock, apin) + sizeof(uint64_t),
               "the event counts come after the parent's words");
_Static_assert(offsetof(fpp__wblock, apin) < offsetof(fpp__wblock, chead) + FPP__LINE,
               "the arena's control words share the parent's line");
_Static_assert(offsetof(fpp__wblock, ring) % FPP__LINE == 0, "the completion ring is line-aligned");
_Static_assert(sizeof(fpp__wblock) % FPP__LINE == 0, "the block is whole cache lines");
_Static_assert(sizeof(fpp__wblock) <= 2 * FPP__PAGE, "the block fits the pages reserved for it");
_Static_assert(sizeof(((fpp__wblock *)0)->msg) == FPP__ERR_MAX, "an initializer's message fits its field");

/* The result arena: results start at aligned positions; the arena is whole pages; a pinned
 * result's offset and length, in alignment units, each fit half of apin (an arena of up to
 * 4 x 1 GiB results plus slack, a result of up to 1 GiB). */
_Static_assert(FPP__IS_POW2(FPP__ARENA_ALIGN) && FPP__ARENA_ALIGN >= FPP__LINE, "result alignment");
_Static_assert(FPP__PAGE % FPP__ARENA_ALIGN == 0, "pages hold whole alignment units");
_Static_assert(((UINT64_C(5) << 30) / FPP__ARENA_ALIGN) < (UINT64_C(1) << 32), "a pinned offset fits 32 bits");

#endif /* FPP_POOL_LAYOUT_H */
