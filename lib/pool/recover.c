/* pool/recover.c: what the parent does when a worker is gone (dead, killed, or a thread
 * abandoned): its finished records are harvested, what it had not claimed goes out again, and
 * what it had claimed fails. The argument that this loses no task and runs none twice is at the
 * top of pool/task_queue.c.
 *
 * Invariant kept: every job dispatched leaves the pool exactly once (fpp__pool_finish), and a
 * job is published again only if its cell still said READY when the parent revoked it, that
 * is, only if no worker ever claimed it. */
#include "pool/pool_int.h"

/* Revokes every task worker w has not claimed yet; they go out again (to other workers, or
 * to w's successor). */
void fpp__pool_revoke_unclaimed(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    fpp__list again = {0};
    for (uint32_t tag = wp->first, next; tag != FPP__NIL; tag = next) {
        fpp__flight *e = &p->fl[tag];
        next = e->next;
        if (e->claimed || !fpp__queue_revoke(wp->cells, p->lay.qcells, e->pos))
            continue;
        fpp__job *j = e->job;
        bool queued = e->state == FPP__FL_QUEUED;
        fpp__flight_unlink(p, tag);
        fpp__flight_put(p, tag);
        if (queued && j) {
            j->tag = FPP__JOB_NONE;
            fpp__jobq_push(&again, j);
        }
    }
    /* In their order, ahead of anything already waiting: they were dispatched first. */
    fpp__list_splice_front(&p->retry, &again);
}

int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo, const char *why)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->mem)
        return 0;
    int n = fpp__pool_collect_worker(p, w); /* what it finished comes first */
    fpp__pool_revoke_unclaimed(p, w);
    /* What is left was claimed: the first one is the task it held; any other means its queue
     * was written over. */
    bool first = true;
    for (uint32_t tag = wp->first, next; tag != FPP__NIL; tag = next) {
        fpp__flight *e = &p->fl[tag];
        next = e->next;
        fpp__job *j = e->job;
        bool queued = e->state == FPP__FL_QUEUED;
        uint64_t ticket = e->ticket;
        fpp__flight_unlink(p, tag);
        fpp__flight_put(p, tag);
        if (!queued || !j) {
            first = false;
            continue;
        }
        char name[FPP__NAME_MAX];
        fpp__job_name(j, name, sizeof name);
        if (!first)
            fpp__job_fail(j, FPP_CRASHED, 0, "%s was lost: worker slot %u wrote over its task queue", name, w);
        else if (st == FPP_TIMEOUT && wp->timeout_ticket == ticket)
            fpp__job_fail(j, FPP_TIMEOUT, 0, "%s exceeded its timeout of %u ms; %s", name, wp->timeout_ms, why);
        else
            fpp__job_fail(j, st == FPP_TIMEOUT ? FPP_CRASHED : st, signo, "%s while running %s", why, name);
        first = false;
        fpp__pool_finish(p, j, (int)w);
        n++;
    }
    /* The slot is empty now; its memory goes with its last reference. */
    fpp__slotmem_unref(wp->mem);
    wp->mem = NULL;
    wp->b = NULL;
    wp->cells = NULL;
    wp->arena = NULL;
    wp->pin = NULL;
    wp->alive = false;
    wp->corrupt = false;
    wp->n = 0;
    wp->first = wp->last = FPP__NIL;
    wp->unflushed = 0;
    wp->timeout_ticket = 0;
    return n;
}
