/* pool/completion_ring.c: a worker's completion ring, both halves: the worker publishes one
 * record per task it finished (the worker's half, at the bottom), the parent harvests them,
 * validates them, and hands each job up finished (the parent's half).
 *
 * The ring: FPP__CRING records of 64 bytes in the worker's block (pool/layout.h).
 *   worker writes  ring[ctail % N], then ctail (R3: release)   then posts the parent's bell
 *   parent writes  chead after copying the records (release)   then posts the worker's wake
 * The worker writes a record only while ctail - chead < N (acquire on chead: the parent's copy
 * of that slot comes before the overwrite); it waits, with a deadline, when the ring is full.
 *
 * Trust: a worker can write anything in its own slot memory, so nothing read from it is used
 * before it is checked, and each shared field is read once into a local (no double fetch):
 * ctail - chead at most N, else the worker is corrupt; each record copied once. A record must
 * name the oldest task on that worker's list (an honest worker runs its queue in order, one
 * task at a time), whose cell it claimed (if the cell says otherwise, the record is still that
 * task's, and the worker is replaced); a length must fit its limit; an arena position must pass
 * pool/result_arena.c's check. A worker whose record names another task, or whose indices are
 * impossible, is reported (fpp__pool_bad: replaced) and nothing more is read from it; a record
 * that is merely malformed fails its own task with a clear message. */
#include <string.h>

#include "core/timing.h"
#include "pool/pool_int.h"

/* --------------------------------------------------------- the parent's half */

static void copy_message(char *dst, size_t cap, const unsigned char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = src[i];
        dst[i] = (ch >= 0x20 && ch < 0x7f) || ch == '\t' ? (char)ch : '?';
    }
    dst[len] = 0;
}

/* One record from worker w. Returns 1 if a job finished, 0 otherwise, -1 if the worker is to
 * be replaced (stop reading it). */
static int handle(fpp__pool *p, uint32_t w, const fpp__crec *r)
{
    fpp__wpriv *wp = &p->wp[w];
    uint32_t tag = wp->first;
    if (tag == FPP__NIL || p->fl[tag].ticket != r->ticket) {
        fpp__pool_bad(p, w, "it returned a record for a task it was not running");
        return -1;
    }
    fpp__flight *e = &p->fl[tag];
    /* Its queue should say it claimed the task (an honest worker claims, then runs). If not, the
     * queue was written over after the fact (a task that rewrites a finished task's cell to
     * READY): the record still names the oldest task given to this worker, which is all any
     * result is, so it is taken; the cell is revoked if it still says READY, so the task cannot
     * be claimed again; and the worker is replaced. Refusing the record would leave the task
     * listed with a READY cell, and recovery would publish it again as never started: run twice. */
    bool unclaimed = !e->claimed && fpp__queue_claimed(wp->cells, p->lay.qcells, e->pos) != 1;
    if (unclaimed) {
        fpp__queue_revoke(wp->cells, p->lay.qcells, e->pos);
        e->claimed = true;
    }
    const unsigned char *data = r->data;
    const char *bad = NULL;
    size_t limit = r->status == FPP__R_DONE ? p->lay.max_result : FPP__ERR_MAX;
    if (r->status != FPP__R_DONE && r->status != FPP__R_FAILED)
        bad = "unknown status";
    else if (r->len > limit)
        bad = "length over its limit";
    else if (r->len > FPP__INLINE_RES)
        data = fpp__rarena_take(p, w, r->off, r->len, &bad);
    fpp__job *j = e->job;
    bool abandoned = e->state == FPP__FL_ABANDONED;
    fpp__flight_unlink(p, tag);
    fpp__flight_put(p, tag);
    if (abandoned || !j) {
        if (unclaimed)
            fpp__pool_bad(p, w, "its queue says it never claimed a task it returned");
        return 0;
    }
    if (bad) {
        p->bogus++;
        fpp__job_fail(j, FPP_FAILED, 0, "worker returned a corrupted completion record (%s)", bad);
    } else if (r->status == FPP__R_DONE && r->len >= p->hold_min && fpp__rarena_hold(p, w, j, data, r->off, r->len)) {
        /* handed out where it lies */
    } else if (r->status == FPP__R_DONE) {
        if (fpp__job_set_result(j, data, r->len) != 0)
            fpp__job_fail(j, FPP_FAILED, 0, "out of memory for a result of %u bytes", r->len);
    } else {
        char msg[FPP__ERR_MAX];
        copy_message(msg, sizeof msg, data, r->len);
        fpp__job_fail(j, FPP_FAILED, 0, "%s", msg);
    }
    fpp__pool_finish(p, j, (int)w);
    if (unclaimed)
        fpp__pool_bad(p, w, "its queue says it never claimed a task it returned");
    return 1;
}

/* Learns how long w's tasks take (from records arriving while it had work queued) and sets
 * how deep its queue may be (pool/dispatch.c). */
static void pace(fpp__wpriv *wp, uint32_t got, uint32_t qcells, uint32_t busy_before)
{
    int64_t now = fpp__now_ns();
    if (busy_before && wp->last_done_ns) {
        int64_t sample = (now - wp->last_done_ns) / got;
        wp->svc_ns = wp->svc_ns ? wp->svc_ns + (sample - wp->svc_ns) / 8 : sample;
        int64_t d = wp->svc_ns > 0 ? FPP__DEPTH_TARGET_NS / wp->svc_ns + 1 : qcells;
        wp->depth = (uint32_t)FPP__MAX(FPP__MIN(d, (int64_t)qcells), (int64_t)2);
    }
    wp->last_done_ns = now;
}

int fpp__pool_collect_worker(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->mem || wp->corrupt)
        return 0;
    fpp__wblock *b = wp->b;
    /* A3: acquire; pairs with R3 in the worker's publish. */
    uint64_t tail = atomic_load_explicit(&b->ctail, memory_order_acquire);
    uint64_t avail = tail - wp->chead;
    if (avail == 0) {
        fpp__rarena_make_room(p, w);
        return 0;
    }
    if (avail > FPP__CRING) {
        fpp__pool_bad(p, w, "its block is corrupted (completion index out of range)");
        return 0;
    }
    uint32_t busy_before = wp->n;
    fpp__slotmem *mem = wp->mem;
    wp->noise = 0; /* its bell said something after all */
    wp->mute_ns = 0;
    int n = 0;
    uint32_t got = 0;
    for (uint64_t i = 0; i < avail; i++) {
        fpp__crec r;
        memcpy(&r, &b->ring[wp->chead & (FPP__CRING - 1)], sizeof r);
        wp->chead++;
        got++;
        int rc = handle(p, w, &r);
        if (rc < 0)
            return n;
        n += rc;
        /* Reported bad: nothing more is read from it; and the executor may have replaced it
         * already, inside the report (its memory may be gone: b is not read again). */
        if (wp->corrupt || wp->mem != mem)
            return n;
    }
    atomic_store_explicit(&b->chead, wp->chead, memory_order_release);
    fpp__rarena_release(p, w);
    /* A worker waiting for ring or arena room sleeps on wake: post it (a fence and a load
     * unless it sleeps). */
    fpp__ec_post(&b->wake);
    pace(wp, got, p->lay.qcells, busy_before);
    return n;
}

int fpp__pool_collect(fpp__pool *p)
{
    int n = 0;
    for (uint32_t w = 0; w < p->lay.nworkers; w++)
        n += fpp__pool_collect_worker(p, w);
    return n;
}

/* --------------------------------------------------------- the worker's half */

typedef struct ring_wait {
    fpp__wblock *b;
    uint64_t ctail;
    bool (*stop)(void *arg);
    void *arg;
} ring_wait;

static bool ring_room(fpp__wblock *b, uint64_t ctail)
{
    return ctail - atomic_load_explicit(&b->chead, memory_order_acquire) < FPP__CRING;
}

/* Before a sleep, ring the parent (it may be asleep with records to take); then look. */
static bool ring_ready(void *arg, bool armed)
{
    ring_wait *r = arg;
    if (r->stop(r->arg))
        return true;
    if (armed)
        fpp__ec_post(&r->b->bell);
    return ring_room(r->b, r->ctail);
}

bool fpp__completion_publish(fpp__wblock *b, uint64_t *ctail, const fpp__crec *r, bool (*stop)(void *arg),
                             void *arg)
{
    static const fpp__wait_policy room = {
        .spin_ns = FPP__ROOM_SPIN_NS, .relax = 1, .yield_ns = FPP__WORKER_SLEEP_MAX_NS,
        .yield_max = FPP__ROOM_YIELDS, .sleep_ns = FPP__WORKER_SLEEP_MAX_NS,
    };
    ring_wait rw = {.b = b, .ctail = *ctail, .stop = stop, .arg = arg};
    fpp__ec *wake = &b->wake;
    fpp__waiter wt = {.ready = ring_ready, .arg = &rw, .words = &wake, .nwords = 1};
    while (!ring_room(b, *ctail)) {
        if (stop(arg))
            return false;
        fpp__ec_await(&wt, &room, INT64_MAX);
    }
    b->ring[*ctail & (FPP__CRING - 1)] = *r;
    (*ctail)++;
    /* R3: release; pairs with A3 above, publishes the record and the arena bytes it points to. */
    atomic_store_explicit(&b->ctail, *ctail, memory_order_release);
    return fpp__ec_post(&b->bell);
}
