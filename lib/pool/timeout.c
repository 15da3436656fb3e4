/* pool/timeout.c: task timeouts. A task's clock starts when the parent first sees it claimed
 * (its cell says so, or its worker's `running` word names it: a hint only); a task over its
 * limit has its worker stopped (the executor's stop hook: kill, or abandon the thread), after
 * what it had not claimed is taken back, so that only the timed-out task goes down with it; its
 * job then fails FPP_TIMEOUT when the worker's death is recovered (pool/recover.c). */
#include "core/timing.h"
#include "pool/pool_int.h"

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
        if (e->state != FPP__FL_QUEUED || !e->job)
            continue;
        unsigned ms = e->timeout_ms;
        if (!ms || wp->timeout_ticket == e->ticket)
            continue;
        if (!e->claimed_ns) {
            /* The clock starts when the parent first sees the task claimed (the worker's own
             * word for it is only a hint: a claim it hides is seen in its cell). */
            bool claimed = e->claimed || fpp__queue_claimed(wp->cells, p->lay.qcells, e->pos) == 1 ||
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
        fpp__pool_revoke_unclaimed(p, w);
        /* It may have finished the task and claimed the next one between the look above and
         * the revokes (which then left that one alone): look again. Once the revokes are done,
         * a record that is still not there means the next claim cannot come: the worker claims
         * only after publishing, and everything after this task was revoked. */
        if (!still_holds(p, w, ticket))
            continue;
        wp->timeout_ticket = ticket;
        wp->timeout_ms = ms;
        if (p->h.stop)
            p->h.stop(p->h.owner, w);
    }
    return earliest;
}

int64_t fpp__pool_tick_ns(const fpp__pool *p)
{
    if (!p->ntimed)
        return INT64_MAX;
    return FPP__MAX((int64_t)p->min_timeout_ms * (1000000 / FPP__TIMEOUT_TICK_DIVISOR),
                    (int64_t)FPP__TIMEOUT_TICK_MIN_NS);
}
