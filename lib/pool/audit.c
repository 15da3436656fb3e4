/* pool/audit.c: the audit, run when the pool made no progress for a while: every worker's queue
 * and records are checked against what the parent's own records allow, and a worker whose
 * memory says impossible things (or that can take no task) is replaced; then queued tasks are
 * moved off silent workers (pool/steal.c). */
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
            int c = e->claimed ? 1 : fpp__queue_claimed(wp->cells, Q, e->pos);
            if (c < 0)
                bad = "a task in its queue was overwritten";
            claimed += c == 1;
        }
        if (!bad && claimed > 1)
            bad = "it holds more than one claimed task";
        if (!bad)
            bad = check_lap(p, w);
        if (bad)
            fpp__pool_bad(p, w, bad);
    }
    fpp__pool_steal(p);
    return n;
}
