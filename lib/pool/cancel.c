/* pool/cancel.c: cancelling every job of a pool (Ctrl-C, a raise, the executor freed) or one
 * (fpp_cancel). A job its worker has not claimed is revoked (one CAS: it never runs); one that
 * was claimed is abandoned (its entry waits for the worker's record or death) and its worker is
 * stopped through the executor's hook. Either way the job leaves the pool CANCELLED at once. */
#include "pool/pool_int.h"

static int cancel_retry(fpp__pool *p, fpp__job *only)
{
    fpp__list keep = {0};
    int n = 0;
    fpp__job *j;
    while ((j = fpp__jobq_pop(&p->retry))) {
        if (only && j != only) {
            fpp__jobq_push(&keep, j);
            continue;
        }
        fpp__job_fail(j, FPP_CANCELLED, 0, "cancelled");
        fpp__pool_finish(p, j, -1);
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
            fpp__job *j = e->job;
            if (!e->claimed && fpp__queue_revoke(wp->cells, p->lay.qcells, e->pos)) {
                fpp__flight_unlink(p, tag);
                fpp__flight_put(p, tag);
            } else {
                /* Claimed: it runs or ran; its worker reports it or dies. */
                e->state = FPP__FL_ABANDONED;
                e->job = NULL;
                if (kill && !kill[w]) {
                    kill[w] = true;
                    busy++;
                }
            }
            fpp__job_fail(j, FPP_CANCELLED, 0, "cancelled");
            fpp__pool_finish(p, j, (int)w);
        }
    }
    cancel_retry(p, NULL);
    return busy;
}

int fpp__pool_cancel_task(fpp__pool *p, fpp__job *j)
{
    if (j->tag == FPP__JOB_NONE)
        return cancel_retry(p, j) > 0;
    fpp__flight *e = &p->fl[j->tag];
    uint32_t w = e->w;
    fpp__wpriv *wp = &p->wp[w];
    if (!e->claimed && fpp__queue_revoke(wp->cells, p->lay.qcells, e->pos)) {
        fpp__flight_unlink(p, j->tag);
        fpp__flight_put(p, j->tag);
        fpp__job_fail(j, FPP_CANCELLED, 0, "cancelled");
        fpp__pool_finish(p, j, (int)w);
        return 1;
    }
    /* Claimed. It may have finished already: take what the worker published first. */
    fpp__pool_collect_worker(p, w);
    if (j->tag == FPP__JOB_NONE)
        return 0;
    /* Still held: stop the worker, but first take back what it has not claimed, so that only
     * this task goes down with it; then look again, as for a timeout (it may have finished it
     * and claimed the next task in between: that one must not go down with it). */
    fpp__pool_revoke_unclaimed(p, w);
    fpp__pool_collect_worker(p, w);
    if (j->tag == FPP__JOB_NONE)
        return 0;
    e = &p->fl[j->tag];
    e->state = FPP__FL_ABANDONED;
    e->job = NULL;
    fpp__job_fail(j, FPP_CANCELLED, 0, "cancelled");
    fpp__pool_finish(p, j, (int)w);
    if (p->h.stop)
        p->h.stop(p->h.owner, w);
    return 1;
}
