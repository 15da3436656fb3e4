/* pool/task_queue.c: a worker's task queue, both halves of its protocol: a bounded
 * single-producer single-consumer ring of 64-byte cells (pool/layout.h) in that worker's own
 * slot memory. The producer is the parent; the consumer is the one
 * worker the queue belongs to, which may stop or die at any instruction, or scribble over the
 * whole queue. The parent chooses which worker gets each task (pool/dispatch.c); no memory is written
 * by two workers, so nothing one worker does can hold up or corrupt another worker's tasks.
 *
 * Each cell has one 64-bit state word, (position << 2) | tag, and it is the only word of the
 * queue a worker writes:
 *   READY(p)     the parent published the task at position p in this cell
 *   CLAIMED(p)   the worker took position p: it claimed the task, or acknowledged a revoke
 *   REVOKED(p)   the parent took position p back before the worker claimed it
 * Transitions, each one atomic operation:
 *   parent  CLAIMED(p - N) -> READY(p)      publish, store  (R1: release, pairs with A1)
 *   worker  READY(p)       -> CLAIMED(p)    claim, CAS      (A1: acquire on the load before it)
 *   parent  READY(p)       -> REVOKED(p)    revoke, CAS     (cancel, timeout, steal, recovery)
 *   worker  REVOKED(p)     -> CLAIMED(p)    acknowledge, CAS (the position is passed)
 * Positions are free-running 62-bit numbers starting at N; cell i starts as CLAIMED(i), the
 * lap before consumed. The claim and the revoke race on the same word: the CAS decides, so a
 * task is either the worker's or the parent's, never both and never neither.
 *
 * Claiming in one step (as ck_ring_dequeue_spmc does): the worker copies the descriptor first,
 * then CASes READY(p) -> CLAIMED(p). A successful CAS proves the copy good: the parent writes a
 * cell's descriptor only while the cell says CLAIMED(p - N), before publishing p. So there is
 * never a "claimed but not yet released" cell: a worker stopped at any instruction holds at
 * most the one task it claimed, and the parent never waits on a cell.
 *
 * Synchronization table:
 *   publish      parent only; the cell must say CLAIMED(p - N), else "no room in this queue"
 *   claim        the queue's worker only; races with revoke, the CAS decides
 *   revoke       parent only
 *   acknowledge  the queue's worker only
 * Before its claim CAS the worker stores the ticket in its block's `running` word (relaxed; the
 * CAS is acq_rel, so a parent that sees CLAIMED(p) with an acquire load also sees the ticket).
 * `running` drives the timeout clock and the crash message; it is never trusted for recovery.
 *
 * Recovery argument. The parent keeps, per worker, the list of its in-flight entries in queue
 * order, and knows each entry's position. An honest worker claims one task, runs it, publishes
 * its completion record, then claims the next: so its records come back in list order, and at
 * most one entry of its list is claimed and not yet reported. When a worker dies (or is
 * abandoned):
 *   - its published records are harvested first (validated: each must name the oldest entry of
 *     its list, whose cell is no longer READY);
 *   - an entry whose cell still says READY(p) is revoked by CAS, which cannot fail now that no
 *     one can claim it, and published again: it never started, so it is not lost and will not
 *     run twice;
 *   - an entry whose cell says CLAIMED(p), or whose cell the parent reused (which needed
 *     CLAIMED(p) first), was claimed: it fails as crashed (the worker may have started it,
 *     and a task is never run twice by the pool). The window between the claim CAS and the
 *     function call is a few instructions; a kill that lands exactly there fails a task that
 *     had not started yet, the price of never trusting the worker's word for it;
 *   - a second claimed-and-unreported entry is impossible for an honest worker: it is reported
 *     as lost to a corrupted queue.
 * The worker's slot memory is then dropped (a new worker gets new memory), so nothing the old
 * worker wrote, or a process it left behind could write, reaches the next one.
 *
 * What a deliberately hostile worker can still do, and cannot (README, "A hostile task"): it
 * can fail or forge the results of the tasks given to it (it runs them), hold them until their
 * timeout (for ever without one: one forged claim looks like a task running long; two or more
 * are caught by the audit), make the parent wake up for nothing; and it can have a task given
 * to it run again, its own or one it ran before, by making it look never claimed (its cell
 * back to READY) and never reported (its record hidden before the parent read it) and dying:
 * nothing the parent can see tells this from a worker that died before claiming. (That task
 * ran in the hostile worker's process, which could run any code anyway; fpp_cancel stops a
 * task that keeps doing it to itself.) It cannot write another worker's queue, block, arena or
 * results, the argument arena, or the parent's memory through fpp's mappings; it cannot make
 * the pool run again a task whose record the parent has read (a record whose cell no longer
 * says claimed is still taken, and the cell revoked), or a task given to another worker; it
 * cannot hand one task to two workers, or wedge the other workers (the parent never waits on
 * a cell, moves unclaimed tasks away from a worker that makes no progress, and replaces a
 * worker whose queue says what its own records do not allow, or that leaves the next cell
 * blocked by a revoke it never acknowledges). */
#include "pool/pool_int.h"

void fpp__queue_init(fpp__cell *cells, uint32_t n)
{
    /* Position i of lap 0 goes in cell i; before it, the cell holds the consumed position
     * i - n. Positions start at n, so nothing is negative: publishing starts at position n. */
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&cells[i].state, FPP__Q(i, FPP__Q_CLAIMED));
}

int fpp__queue_publish(fpp__cell *cells, uint32_t n, uint64_t pos, const fpp__cell *src)
{
    fpp__cell *c = &cells[pos & (n - 1)];
    /* Acquire: the worker's reads of the old descriptor (before its claim CAS) happen before
     * we overwrite it. */
    if (atomic_load_explicit(&c->state, memory_order_acquire) != FPP__Q(pos - n, FPP__Q_CLAIMED))
        return 1;
    c->ticket = src->ticket;
    c->fn = src->fn;
    c->arg_len = src->arg_len;
    c->arg_off = src->arg_off;
    __builtin_memcpy(c->arg, src->arg, FPP__INLINE_ARG);
    /* R1: release; pairs with the worker's acquire load in fpp__queue_claim. */
    atomic_store_explicit(&c->state, FPP__Q(pos, FPP__Q_READY), memory_order_release);
    return 0;
}

int fpp__queue_revoke(fpp__cell *cells, uint32_t n, uint64_t pos)
{
    uint64_t expect = FPP__Q(pos, FPP__Q_READY);
    return atomic_compare_exchange_strong_explicit(&cells[pos & (n - 1)].state, &expect,
                                                   FPP__Q(pos, FPP__Q_REVOKED), memory_order_acq_rel,
                                                   memory_order_acquire);
}

int fpp__queue_claimed(fpp__cell *cells, uint32_t n, uint64_t pos)
{
    uint64_t s = atomic_load_explicit(&cells[pos & (n - 1)].state, memory_order_acquire);
    uint64_t spos = FPP__Q_POS(s);
    uint32_t tag = FPP__Q_TAG(s);
    if (spos == pos)
        return tag == FPP__Q_READY ? 0 : tag == FPP__Q_CLAIMED ? 1 : tag == FPP__Q_REVOKED ? -1 : -2;
    /* The parent reuses a cell for pos + n, + 2n... only after seeing CLAIMED(pos). */
    uint64_t ahead = (spos - pos) & (UINT64_MAX >> 2);
    if (ahead != 0 && ahead % n == 0 && ahead / n < (UINT64_C(1) << 40))
        return 1;
    return -2;
}

int fpp__queue_claim(fpp__cell *cells, uint32_t n, uint64_t *head, fpp__cell *out,
                    _Atomic uint64_t *ticket_word)
{
    for (;;) {
        uint64_t h = *head;
        fpp__cell *c = &cells[h & (n - 1)];
        /* A1: acquire; pairs with R1, makes the descriptor visible. */
        uint64_t s = atomic_load_explicit(&c->state, memory_order_acquire);
        if (s == FPP__Q(h, FPP__Q_READY)) {
            out->ticket = c->ticket;
            out->fn = c->fn;
            out->arg_len = c->arg_len;
            out->arg_off = c->arg_off;
            __builtin_memcpy(out->arg, c->arg, FPP__INLINE_ARG);
            atomic_store_explicit(ticket_word, out->ticket, memory_order_relaxed);
            if (atomic_compare_exchange_strong_explicit(&c->state, &s, FPP__Q(h, FPP__Q_CLAIMED),
                                                        memory_order_acq_rel, memory_order_acquire)) {
                *head = h + 1;
                return 1;
            }
            /* Revoked under us: s now holds what the cell says; acknowledge below. */
        }
        if (s == FPP__Q(h, FPP__Q_REVOKED)) {
            atomic_compare_exchange_strong_explicit(&c->state, &s, FPP__Q(h, FPP__Q_CLAIMED),
                                                    memory_order_acq_rel, memory_order_relaxed);
            *head = h + 1;
            continue;
        }
        return 0; /* nothing published at h yet (or nonsense: the parent will notice) */
    }
}

bool fpp__queue_free(fpp__cell *cells, uint32_t n, uint64_t pos)
{
    return atomic_load_explicit(&cells[pos & (n - 1)].state, memory_order_relaxed) == FPP__Q(pos - n, FPP__Q_CLAIMED);
}
