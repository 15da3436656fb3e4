/* pool/steal.c: moving queued tasks away from a worker that makes no progress (a long task, a
 * stopped worker, one starved of CPU) to an idle one. Revoking a task its worker has not claimed
 * is one CAS (pool/task_queue.c); so is the only task of a worker stopped before it claimed it:
 * a stopped worker holds back at most the one task it claimed. */
#include "core/timing.h"
#include "pool/pool_int.h"

/* Can worker v give a task to an idle one now? Its newest unclaimed task, once it has been silent
 * FPP__STEAL_AFTER_NS with more than one; its only task, once silent FPP__STEAL_HEAD_AFTER_NS: a worker
 * stopped (or starved of CPU) before claiming the one task it was given must not hold it back
 * for ever, timeout or not (the timeout clock starts at the claim). Not sooner: a worker that is
 * merely waking up would see its task move away for nothing. */
static bool can_give(fpp__pool *p, const fpp__wpriv *wv, int64_t now)
{
    if (!wv->mem || wv->n == 0 || now - wv->last_done_ns < FPP__STEAL_AFTER_NS)
        return false;
    const fpp__flight *head = &p->fl[wv->first];
    return wv->n >= 2 || (head->state == FPP__FL_QUEUED && !head->claimed &&
                          now - wv->last_done_ns >= FPP__STEAL_HEAD_AFTER_NS);
}

/* Revokes the newest task worker v has not claimed. Returns it, or NULL. */
static fpp__job *take_back(fpp__pool *p, uint32_t v)
{
    fpp__wpriv *wp = &p->wp[v];
    uint32_t tag = wp->last;
    if (tag == FPP__NIL)
        return NULL;
    fpp__flight *e = &p->fl[tag];
    if (e->state != FPP__FL_QUEUED || e->claimed)
        return NULL;
    if (!fpp__queue_revoke(wp->cells, p->lay.qcells, e->pos)) {
        /* Claimed after all (it may be running it): known now, so not tried again. */
        if (fpp__queue_claimed(wp->cells, p->lay.qcells, e->pos) == 1)
            e->claimed = true;
        return NULL;
    }
    fpp__job *j = e->job;
    fpp__flight_unlink(p, tag);
    fpp__flight_put(p, tag);
    j->tag = FPP__JOB_NONE;
    return j;
}

/* The worker silent longest that can give a task now (can_give); FPP__NIL if none. */
static uint32_t steal_victim(fpp__pool *p, int64_t now)
{
    uint32_t best = FPP__NIL;
    for (uint32_t v = 0; v < p->lay.nworkers; v++) {
        fpp__wpriv *wv = &p->wp[v];
        if (!can_give(p, wv, now))
            continue;
        if (best == FPP__NIL || wv->last_done_ns < p->wp[best].last_done_ns)
            best = v;
    }
    return best;
}

void fpp__pool_steal(fpp__pool *p)
{
    uint32_t W = p->lay.nworkers;
    if (W < 2)
        return;
    uint32_t victim = FPP__NIL;
    int64_t now = 0;
    uint32_t moved = 0;
    for (uint32_t i = 0; i < W && moved < FPP__STEAL_MAX; i++) {
        fpp__wpriv *idle = &p->wp[i];
        if (!idle->alive || idle->n != 0 || idle->corrupt)
            continue;
        if (!now) { /* an idle worker: someone silent may have work for it */
            now = fpp__now_ns();
            victim = steal_victim(p, now);
        }
        if (victim == FPP__NIL)
            break;
        fpp__job *j = take_back(p, victim);
        if (!j) {
            victim = steal_victim(p, now); /* that one had nothing left to give: the next */
            continue;
        }
        if (fpp__pool_publish_on(p, i, j) != 0)
            fpp__jobq_push(&p->retry, j);
        else
            moved++;
        if (!can_give(p, &p->wp[victim], now))
            victim = steal_victim(p, now);
    }
    /* An idle worker is likely asleep: wake it now, not at the end of its sleep. */
    if (moved)
        fpp__pool_flush(p);
}
