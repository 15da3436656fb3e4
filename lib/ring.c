/* ring.c: the task ring, a bounded single-producer multi-consumer ring of 64-byte cells in
 * the shared segment. The producer is the parent; consumers are workers, any of which may die
 * at any instruction or scribble over the ring.
 *
 * Each cell has one 64-bit state word, (position << 16) | tag, and is the only thing a worker
 * changes in the ring besides the `head` hint:
 *   FREE(p)      the cell waits for the producer to publish position p in it
 *   READY(p)     it holds the task published at position p
 *   TAKEN(p, w)  worker w has claimed position p and is copying the descriptor out
 * Transitions, each by one atomic operation:
 *   parent  FREE(p)     -> READY(p)       publish       (R1: release, pairs with A1)
 *   worker  READY(p)    -> TAKEN(p, w)    claim, CAS    (A1: acquire, pairs with R1)
 *   worker  TAKEN(p, w) -> FREE(p + N)    release       (R2: release, pairs with A2)
 *   parent  READY(p)    -> FREE(p + N)    revoke, CAS   (cancellation)
 *   parent  TAKEN(p, w) -> FREE(p + N)    reclaim, only once w is known dead
 * Positions are free-running and compared modulo 2^48 for equality only.
 *
 * Synchronization table:
 *   publish      parent thread only; never concurrent with itself
 *   claim        any number of workers at once; the CAS decides
 *   release      only the worker that claimed, after copying the descriptor
 *   revoke       parent; races with claim, the CAS decides
 *   reclaim      parent; no race: the claimer is dead and reaped
 *
 * Recovery argument. A worker marks its own block RUNNING with the task's ticket *before* it
 * releases the cell (R2), and calls the function only after that. So when a worker dies:
 *   - a cell still TAKEN by it holds a task whose function never started: the parent reclaims
 *     the cell and publishes the task again (not lost, not run twice);
 *   - otherwise its block's ticket, if RUNNING and not completed, is the one task it held:
 *     that task fails as crashed; every completion record it published is harvested first.
 * A claim cannot half-happen (it is one CAS), so no task is ever held by nobody. The parent
 * never waits on a cell: a publish that finds the cell not FREE(p) reports "busy" (still READY
 * or TAKEN for p - N) or "corrupt" (anything else), and never spins.
 *
 * Worker-side robustness: a worker treats any state it does not expect as "not for me" and
 * moves the head hint on or stops; a scribbled head can only make workers idle, and the parent
 * notices a stall and puts head back on the oldest waiting task (fpp__pool_audit). */
#include "fpp_internal.h"

void fpp__ring_init(fpp__cell *cells, uint32_t ncells)
{
    for (uint32_t i = 0; i < ncells; i++)
        atomic_init(&cells[i].state, FPP__ST(i, FPP__ST_FREE));
}

int fpp__ring_push_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos, const fpp__cell *src)
{
    fpp__cell *c = &cells[pos & (ncells - 1)];
    uint64_t s = atomic_load_explicit(&c->state, memory_order_acquire);
    if (s != FPP__ST(pos, FPP__ST_FREE)) {
        uint64_t prev = (pos - ncells) & FPP__POS_MASK;
        if (FPP__ST_POS(s) == prev && FPP__ST_TAG(s) != FPP__ST_FREE)
            return 1; /* position pos - N not consumed yet: the ring is full */
        return FPP_ESTATE;
    }
    c->ticket = src->ticket;
    c->fn = src->fn;
    c->arg_len = src->arg_len;
    c->arg_off = src->arg_off;
    if (src->arg_len <= FPP__INLINE_ARG)
        __builtin_memcpy(c->arg, src->arg, FPP__INLINE_ARG);
    /* R1: release; pairs with A1 in fpp__ring_claim_worker, publishes the descriptor. */
    atomic_store_explicit(&c->state, FPP__ST(pos, FPP__ST_READY), memory_order_release);
    return 0;
}

int fpp__ring_claim_worker(fpp__hdr *h, fpp__cell *cells, uint32_t ncells, uint32_t w,
                           uint64_t *out)
{
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed) & FPP__POS_MASK;
    for (int guard = 0; guard < 4 * (int)ncells + 64; guard++) {
        fpp__cell *c = &cells[pos & (ncells - 1)];
        uint64_t s = atomic_load_explicit(&c->state, memory_order_acquire);
        uint64_t spos = FPP__ST_POS(s);
        uint32_t tag = FPP__ST_TAG(s);
        if (spos == pos && tag == FPP__ST_READY) {
            /* A1: acquire on success; pairs with R1, makes the descriptor visible. */
            if (atomic_compare_exchange_strong_explicit(&c->state, &s,
                                                        FPP__ST(pos, FPP__ST_TAKEN + w),
                                                        memory_order_acquire,
                                                        memory_order_relaxed)) {
                uint64_t expect = pos;
                atomic_compare_exchange_strong_explicit(&h->head, &expect,
                                                        (pos + 1) & FPP__POS_MASK,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed);
                *out = pos;
                return 1;
            }
            continue; /* lost the race: look at the cell again */
        }
        if (spos == pos && tag == FPP__ST_FREE)
            return 0; /* nothing published at pos yet */
        uint64_t ahead = (spos - pos) & FPP__POS_MASK;
        if ((spos == pos && tag >= FPP__ST_TAKEN) || ahead == ncells) {
            /* pos is claimed or consumed: help the hint on and try the next position. */
            uint64_t expect = pos;
            atomic_compare_exchange_strong_explicit(&h->head, &expect, (pos + 1) & FPP__POS_MASK,
                                                    memory_order_relaxed, memory_order_relaxed);
            pos = (pos + 1) & FPP__POS_MASK;
            continue;
        }
        /* The cell is for an older position (the hint ran ahead of the producer) or its
         * state is garbage: nothing for us. The parent repairs the hint if work stalls. */
        return 0;
    }
    return 0;
}

void fpp__ring_release_worker(fpp__cell *cells, uint32_t ncells, uint64_t pos, uint32_t w)
{
    fpp__cell *c = &cells[pos & (ncells - 1)];
    uint64_t expect = FPP__ST(pos, FPP__ST_TAKEN + w);
    /* R2: release; pairs with A2 (the parent's acquire loads of the state), orders the
     * worker's RUNNING mark before the cell is seen free. */
    atomic_compare_exchange_strong_explicit(&c->state, &expect,
                                            FPP__ST((pos + ncells) & FPP__POS_MASK, FPP__ST_FREE),
                                            memory_order_release, memory_order_relaxed);
}

int fpp__ring_revoke_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos)
{
    fpp__cell *c = &cells[pos & (ncells - 1)];
    uint64_t expect = FPP__ST(pos, FPP__ST_READY);
    return atomic_compare_exchange_strong_explicit(&c->state, &expect,
                                                   FPP__ST((pos + ncells) & FPP__POS_MASK, FPP__ST_FREE),
                                                   memory_order_acq_rel, memory_order_acquire);
}

int fpp__ring_reclaim_parent(fpp__cell *cells, uint32_t ncells, uint64_t pos, uint32_t w)
{
    fpp__cell *c = &cells[pos & (ncells - 1)];
    uint64_t expect = FPP__ST(pos, FPP__ST_TAKEN + w);
    /* A2: acquire; pairs with R2. */
    return atomic_compare_exchange_strong_explicit(&c->state, &expect,
                                                   FPP__ST((pos + ncells) & FPP__POS_MASK, FPP__ST_FREE),
                                                   memory_order_acq_rel, memory_order_acquire);
}
