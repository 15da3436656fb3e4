/* pool/dispatch.c: choosing which worker gets each task, publishing it in that worker's queue
 * (pool/task_queue.c), and waking the workers that got some.
 *
 * Choosing a worker: round robin over the live workers with room (with nothing in flight,
 * starting at the worker whose task ended last: it is the one awake), where room is a queue depth
 * that adapts to the tasks (pool/completion_ring.c measures them): deep (the whole queue) for
 * tasks of microseconds, so that a worker never runs dry while the parent is busy; two for
 * tasks of a millisecond or more (one running, one ready), so that little waits behind a long
 * task. A task retried after a crash or a timeout avoids the worker it last ran on while
 * another is alive. What still ends up behind a long or stopped task is moved to an idle worker
 * (pool/steal.c). Tasks taken back from a worker (the retry queue) go out first, in order. */
#include <string.h>

#include "pool/pool_int.h"

int fpp__pool_publish_on(fpp__pool *p, uint32_t w, fpp__job *j)
{
    fpp__wpriv *wp = &p->wp[w];
    uint32_t Q = p->lay.qcells;
    uint32_t idx = (uint32_t)(wp->tail & (Q - 1));
    if (!fpp__queue_free(wp->cells, Q, wp->tail))
        return 1; /* the worker has not passed that cell yet */
    /* Whatever was published in this cell a lap ago was claimed (the cell says so), even once
     * the cell holds the next task. */
    uint32_t old = wp->cell_entry[idx];
    if (old != FPP__NIL && p->fl[old].state != FPP__FL_FREE && p->fl[old].w == w && p->fl[old].pos == wp->tail - Q)
        p->fl[old].claimed = true;
    wp->cell_entry[idx] = FPP__NIL;
    uint32_t tag = fpp__flight_get(p);
    if (tag == FPP__NIL)
        return 1;
    fpp__flight *e = &p->fl[tag];
    fpp__cell d;
    d.ticket = e->ticket;
    d.fn = (uint32_t)j->fn;
    int rc = fpp__args_place(p, e, j, &d);
    if (rc == 0 && fpp__queue_publish(wp->cells, Q, wp->tail, &d) != 0)
        rc = 1;
    if (rc != 0) {
        fpp__flight_put(p, tag);
        return rc;
    }
    wp->cell_entry[idx] = tag;
    e->job = j;
    e->pos = wp->tail;
    e->timeout_ms = j->timeout_ms ? j->timeout_ms : p->h.task_timeout_ms;
    if (e->timeout_ms) {
        p->ntimed++;
        if (!p->min_timeout_ms || e->timeout_ms < p->min_timeout_ms)
            p->min_timeout_ms = e->timeout_ms;
    }
    if (wp->n == 0)
        wp->last_done_ns = fpp__now_ns(); /* busy from now: the steal clock starts */
    fpp__flight_link(p, w, tag);
    j->tag = tag;
    j->slot = (int)w;
    wp->tail++;
    wp->unflushed++;
    return 0;
}

/* Another live worker than w exists. */
static bool other_alive(fpp__pool *p, uint32_t w)
{
    for (uint32_t i = 0; i < p->lay.nworkers; i++)
        if (i != w && p->wp[i].alive)
            return true;
    return false;
}

static int place(fpp__pool *p, fpp__job *j)
{
    uint32_t W = p->lay.nworkers;
    int avoid = j->avoid_slot;
    if (avoid >= 0 && ((uint32_t)avoid >= W || !other_alive(p, (uint32_t)avoid)))
        avoid = -1;
    /* Nothing in flight: start at the worker whose task ended last. It is the one spinning for
     * its next task (for FPP__CLAIM_SPIN_NS), the others may sleep; a task at a time, submitted
     * as each result comes back, then runs on one warm worker instead of waking the next in
     * turn while the last one spins on a core the parent needs. */
    uint32_t start = p->linked == 0 && p->last_w < W ? p->last_w : p->cursor;
    for (uint32_t k = 0; k < W; k++) {
        uint32_t w = start + k < W ? start + k : start + k - W;
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->alive || wp->n >= wp->depth || (int)w == avoid)
            continue;
        int rc = fpp__pool_publish_on(p, w, j);
        if (rc == 0) {
            p->cursor = w + 1 < W ? w + 1 : 0;
            return 0;
        }
        if (rc < 0)
            return rc;
    }
    return 1;
}

int fpp__pool_dispatch(fpp__pool *p, fpp__job *j)
{
    /* Tasks taken back from a worker go first, in their order. */
    fpp__job *r;
    while ((r = fpp__jobq_head(&p->retry))) {
        int rc = place(p, r);
        if (rc == 1)
            return 1;
        fpp__list_unlink(&p->retry, &r->link);
        if (rc < 0) { /* this one cannot go out again: it fails, the others go on */
            fpp__job_fail(r, FPP_FAILED, 0, "could not hand the task to a worker again: %s", fpp_strerror(rc));
            fpp__pool_finish(p, r, -1);
        }
    }
    if (!j)
        return 0;
    return place(p, j);
}

void fpp__pool_flush(fpp__pool *p)
{
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->unflushed || !wp->mem)
            continue;
        wp->unflushed = 0;
        uint32_t before = atomic_load_explicit(&wp->b->wake.w, memory_order_relaxed);
        fpp__ec_post(&wp->b->wake);
        if (before & 1u)
            p->woke_worker = true;
    }
}
