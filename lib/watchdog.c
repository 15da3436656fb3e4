/* watchdog.c: what the parent does when a worker dies, hangs, runs over its timeout, is
 * cancelled, or writes nonsense: recovery (the argument is at the top of ring.c), cancelling
 * all or one task, timeouts, and the audit run when the pool makes no progress.
 *
 * Invariant kept: every task dispatched leaves the pool exactly once (fpp__pool_finish), and a
 * task is published again only if its cell still said READY when the parent revoked it, that
 * is, only if no worker ever claimed it. */
#include <stdio.h>
#include <string.h>

#include "fpp_internal.h"

#define UNACKED_NS 2000000000 /* twice the longest worker sleep (worker.c SLEEP_MAX_NS) */

/* Revokes every task worker w has not claimed yet; they go out again (to other workers, or
 * to w's successor). */
static void revoke_unclaimed(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    fpp__tq again = {0};
    for (uint32_t tag = wp->first, next; tag != FPP__NIL; tag = next) {
        fpp__flight *e = &p->fl[tag];
        next = e->next;
        if (e->claimed || !fpp__ring_revoke(wp->cells, p->lay.qcells, e->pos))
            continue;
        fpp_task *t = e->task;
        bool queued = e->state == FPP__FL_QUEUED;
        fpp__flight_unlink(p, tag);
        fpp__flight_put(p, tag);
        if (queued && t) {
            t->tag = FPP__NIL;
            fpp__tq_push(&again, t);
        }
    }
    /* In their order, ahead of anything already waiting: they were dispatched first. */
    if (again.head) {
        again.tail->next = p->retry.head;
        if (!p->retry.head)
            p->retry.tail = again.tail;
        p->retry.head = again.head;
        p->retry.n += again.n;
    }
}

int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo, const char *why)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->mem)
        return 0;
    int n = fpp__pool_collect_worker(p, w); /* what it finished comes first */
    revoke_unclaimed(p, w);
    /* What is left was claimed: the first one is the task it held; any other means its queue
     * was written over. */
    bool first = true;
    for (uint32_t tag = wp->first, next; tag != FPP__NIL; tag = next) {
        fpp__flight *e = &p->fl[tag];
        next = e->next;
        fpp_task *t = e->task;
        bool queued = e->state == FPP__FL_QUEUED;
        uint64_t ticket = e->ticket;
        fpp__flight_unlink(p, tag);
        fpp__flight_put(p, tag);
        if (!queued || !t) {
            first = false;
            continue;
        }
        if (!first)
            fpp__task_fail(t, FPP_CRASHED, 0, "task %lld was lost: worker slot %u wrote over its task queue",
                           (long long)t->id, w);
        else if (st == FPP_TIMEOUT && wp->timeout_ticket == ticket)
            fpp__task_fail(t, FPP_TIMEOUT, 0, "task %lld exceeded its timeout of %u ms; %s", (long long)t->id,
                           wp->timeout_ms, why);
        else
            fpp__task_fail(t, st == FPP_TIMEOUT ? FPP_CRASHED : st, signo, "%s while running task %lld", why,
                           (long long)t->id);
        first = false;
        fpp__pool_finish(p, t, (int)w);
        n++;
    }
    /* The slot is empty now; its memory goes with its last reference. */
    fpp__slotmem_unref(wp->mem);
    wp->mem = NULL;
    wp->b = NULL;
    wp->cells = NULL;
    wp->arena = NULL;
    wp->alive = false;
    wp->corrupt = false;
    wp->n = 0;
    wp->first = wp->last = FPP__NIL;
    wp->unflushed = 0;
    wp->timeout_ticket = 0;
    return n;
}

/* ---------------------------------------------------------------- cancelling */

static int cancel_retry(fpp__pool *p, fpp_task *only)
{
    fpp__tq keep = {0};
    int n = 0;
    while (p->retry.head) {
        fpp_task *t = fpp__tq_pop(&p->retry);
        if (only && t != only) {
            fpp__tq_push(&keep, t);
            continue;
        }
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__pool_finish(p, t, -1);
        n++;
    }
    p->retry = keep;
    return n;
}

int fpp__pool_cancel(fpp__pool *p, bool *kill)
{
    int busy = 0;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        for (uint32_t tag = wp->first, next; tag != FPP__NIL; tag = next) {
            fpp__flight *e = &p->fl[tag];
            next = e->next;
            if (e->state != FPP__FL_QUEUED)
                continue;
            fpp_task *t = e->task;
            if (!e->claimed && fpp__ring_revoke(wp->cells, p->lay.qcells, e->pos)) {
                fpp__flight_unlink(p, tag);
                fpp__flight_put(p, tag);
            } else {
                /* Claimed: it runs or ran; its worker reports it or dies. */
                e->state = FPP__FL_ABANDONED;
                e->task = NULL;
                if (kill && !kill[w]) {
                    kill[w] = true;
                    busy++;
                }
            }
            fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
            fpp__pool_finish(p, t, (int)w);
        }
    }
    cancel_retry(p, NULL);
    return busy;
}

int fpp__pool_cancel_task(fpp__pool *p, fpp_task *t)
{
    if (t->tag == FPP__NIL)
        return cancel_retry(p, t) > 0;
    fpp__flight *e = &p->fl[t->tag];
    uint32_t w = e->w;
    fpp__wpriv *wp = &p->wp[w];
    if (!e->claimed && fpp__ring_revoke(wp->cells, p->lay.qcells, e->pos)) {
        fpp__flight_unlink(p, t->tag);
        fpp__flight_put(p, t->tag);
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        fpp__pool_finish(p, t, (int)w);
        return 1;
    }
    /* Claimed. It may have finished already: take what the worker published first. */
    fpp__pool_collect_worker(p, w);
    if (t->tag == FPP__NIL)
        return 0;
    /* Still held: stop the worker, but first take back what it has not claimed, so that only
     * this task goes down with it; then look again, as for a timeout (it may have finished t
     * and claimed the next task in between: that one must not go down with it). */
    revoke_unclaimed(p, w);
    fpp__pool_collect_worker(p, w);
    if (t->tag == FPP__NIL)
        return 0;
    e = &p->fl[t->tag];
    e->state = FPP__FL_ABANDONED;
    e->task = NULL;
    fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
    fpp__pool_finish(p, t, (int)w);
    if (p->stop)
        p->stop(p, w);
    return 1;
}

/* ---------------------------------------------------------------- timeouts */

/* Harvests worker w and says whether the task with this ticket is still its oldest unreported. */
static bool still_holds(fpp__pool *p, uint32_t w, uint64_t ticket)
{
    fpp__pool_collect_worker(p, w);
    uint32_t first = p->wp[w].first;
    return first != FPP__NIL && p->fl[first].ticket == ticket;
}

int64_t fpp__pool_timeouts(fpp__pool *p)
{
    int64_t earliest = INT64_MAX, now = 0;
    if (!p->ntimed)
        return earliest;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->alive || wp->first == FPP__NIL)
            continue;
        fpp__flight *e = &p->fl[wp->first];
        if (e->state != FPP__FL_QUEUED || !e->task)
            continue;
        unsigned ms = e->timeout_ms;
        if (!ms || wp->timeout_ticket == e->ticket)
            continue;
        if (!e->claimed_ns) {
            /* The clock starts when the parent first sees the task claimed (the worker's own
             * word for it is only a hint: a claim it hides is seen in its cell). */
            bool claimed = e->claimed || fpp__ring_claimed(wp->cells, p->lay.qcells, e->pos) == 1 ||
                           atomic_load_explicit(&wp->b->running, memory_order_relaxed) == e->ticket;
            if (!claimed)
                continue;
            if (!now)
                now = fpp__now_ns();
            e->claimed_ns = now;
        }
        int64_t deadline = e->claimed_ns + (int64_t)ms * 1000000;
        if (!now)
            now = fpp__now_ns();
        if (now < deadline) {
            earliest = FPP__MIN(earliest, deadline);
            continue;
        }
        /* Over: take back what it has not claimed, then stop it (unless it reported the task
         * meanwhile: then only its queue moved, and the next look finds the next task). */
        uint64_t ticket = e->ticket;
        if (!still_holds(p, w, ticket))
            continue;
        revoke_unclaimed(p, w);
        /* It may have finished the task and claimed the next one between the look above and
         * the revokes (which then left that one alone): look again. Once the revokes are done,
         * a record that is still not there means the next claim cannot come: the worker claims
         * only after publishing, and everything after this task was revoked. */
        if (!still_holds(p, w, ticket))
            continue;
        wp->timeout_ticket = ticket;
        wp->timeout_ms = ms;
        if (p->stop)
            p->stop(p, w);
    }
    return earliest;
}

/* ------------------------------------------------------------------ audit */

/* Every cell of the last lap of worker w's queue (positions tail - Q to tail - 1) must say what
 * the parent's own records allow: a position it published that the worker has not reported,
 * READY or CLAIMED; any other, CLAIMED (passed) or REVOKED (taken back, not yet acknowledged).
 * Anything else is a queue the worker wrote over. And a revoke in the cell the parent must
 * publish in next, with nothing older for the worker to finish, is acknowledged within a sleep
 * (worker.c: SLEEP_MAX_NS, 1 s) by a worker that takes tasks: one that leaves it there for
 * UNACKED_NS can be given nothing more (stopped, or it wrote that state itself), and holds no
 * task: its slot would serve no one. Returns why the worker is to be replaced, or NULL. */
static const char *check_lap(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    uint32_t Q = p->lay.qcells;
    for (uint32_t k = 0; k < Q; k++) {
        uint64_t pos = wp->tail - Q + k;
        uint32_t idx = (uint32_t)(pos & (Q - 1)), tag = wp->cell_entry[idx];
        uint64_t s = atomic_load_explicit(&wp->cells[idx].state, memory_order_acquire);
        bool listed = tag != FPP__NIL && p->fl[tag].state != FPP__FL_FREE && p->fl[tag].w == w && p->fl[tag].pos == pos;
        if (s != FPP__Q(pos, FPP__Q_CLAIMED) && s != FPP__Q(pos, listed ? FPP__Q_READY : FPP__Q_REVOKED))
            return "its task queue is corrupted";
    }
    uint64_t s = atomic_load_explicit(&wp->cells[wp->tail & (Q - 1)].state, memory_order_acquire);
    bool waits = s == FPP__Q(wp->tail - Q, FPP__Q_REVOKED) &&
                 (wp->first == FPP__NIL || p->fl[wp->first].pos > wp->tail - Q);
    int64_t now = fpp__now_ns();
    if (!waits)
        wp->unacked_since_ns = 0;
    else if (!wp->unacked_since_ns)
        wp->unacked_since_ns = now;
    else if (now - wp->unacked_since_ns > UNACKED_NS)
        return "it does not acknowledge a task taken back from it, and can be given no other";
    return NULL;
}

int fpp__pool_audit(fpp__pool *p)
{
    int n = fpp__pool_collect(p);
    uint32_t Q = p->lay.qcells;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->mem || wp->corrupt)
            continue;
        const char *bad = NULL;
        int claimed = 0;
        for (uint32_t tag = wp->first; tag != FPP__NIL && !bad; tag = p->fl[tag].next) {
            fpp__flight *e = &p->fl[tag];
            int c = e->claimed ? 1 : fpp__ring_claimed(wp->cells, Q, e->pos);
            if (c < 0)
                bad = "a task in its queue was overwritten";
            claimed += c == 1;
        }
        if (!bad && claimed > 1)
            bad = "it holds more than one claimed task";
        if (!bad)
            bad = check_lap(p, w);
        if (bad) {
            wp->corrupt = true;
            wp->alive = false;
            p->bogus++;
            fpp__log(FPP_LOG_ERROR, "worker slot %u: %s; replacing the worker", w, bad);
            if (p->bad)
                p->bad(p, w);
        }
    }
    fpp__pool_steal(p);
    return n;
}
