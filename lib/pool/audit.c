/* pool/audit.c: the audit, run when the pool made no progress for a while: every worker's queue
 * and records are checked against what the parent's own records allow, and a worker whose
 * memory says impossible things (or that can take no task) is replaced; then queued tasks are
 * moved off silent workers (pool/steal.c). */
#include <stdlib.h>
#include <time.h>

#include "core/testing.h"
#include "core/timing.h"
#include "pool/pool_int.h"

/* Every cell of the last lap of worker w's queue (positions tail - Q to tail - 1) must say what
 * the parent's own records allow: a position it published that the worker has not reported,
 * READY or CLAIMED; any other, CLAIMED (passed) or REVOKED (taken back, not yet acknowledged).
 * Anything else is a queue the worker wrote over. And a revoke in the cell the parent must
 * publish in next, with nothing older for the worker to finish, is acknowledged within a sleep
 * (pool/worker.c: FPP__WORKER_SLEEP_MAX_NS, 1 s) by a worker that takes tasks: one that leaves it there for
 * FPP__UNACKED_NS can be given nothing more (stopped, or it wrote that state itself), and holds no
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
    else if (now - wp->unacked_since_ns > FPP__UNACKED_NS)
        return "it does not acknowledge a task taken back from it, and can be given no other";
    return NULL;
}

/* Test build: FPP_AUDIT_PAUSE_MS holds the audit between its first harvest and its look at
 * the claims, the window in which a healthy worker finishes one task and claims the next. */
static void test_pause(void)
{
    const char *v = FPP__TEST_ENV("FPP_AUDIT_PAUSE_MS");
    if (FPP__TESTING && v) {
        long ms = atol(v);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* How many tasks worker w holds claimed at once. A worker publishes a task's record before it
 * claims the next (pool/worker.c), so a claim seen here (acquire) makes the record of the task
 * before it visible to the harvest that follows: the claims are read first, then the worker's
 * records are harvested, then the tasks seen claimed and still unfinished are counted. Counting
 * against the earlier harvest alone would count a task finished since and the next one: a
 * healthy worker replaced. -1: a cell of its queue was overwritten. */
static int held_claims(fpp__pool *p, uint32_t w, int *n)
{
    fpp__wpriv *wp = &p->wp[w];
    for (uint32_t tag = wp->first; tag != FPP__NIL; tag = p->fl[tag].next) {
        fpp__flight *e = &p->fl[tag];
        if (!e->claimed) {
            int c = fpp__queue_claimed(wp->cells, p->lay.qcells, e->pos);
            if (c < 0)
                return -1;
            e->claimed = c == 1; /* claims are for good: known now */
        }
    }
    *n += fpp__pool_collect_worker(p, w);
    if (!p->wp[w].mem || p->wp[w].corrupt)
        return 0; /* the harvest found it broken: handled there */
    int held = 0;
    for (uint32_t tag = wp->first; tag != FPP__NIL; tag = p->fl[tag].next)
        held += p->fl[tag].claimed;
    return held;
}

int fpp__pool_audit(fpp__pool *p)
{
    int n = fpp__pool_collect(p);
    if (FPP__TESTING)
        test_pause();
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->mem || wp->corrupt)
            continue;
        const char *bad = NULL;
        int claimed = held_claims(p, w, &n);
        if (!wp->mem || wp->corrupt)
            continue;
        if (claimed < 0)
            bad = "a task in its queue was overwritten";
        else if (claimed > 1)
            bad = "it holds more than one claimed task";
        if (!bad)
            bad = check_lap(p, w);
        if (bad)
            fpp__pool_bad(p, w, bad);
    }
    fpp__pool_steal(p);
    return n;
}
