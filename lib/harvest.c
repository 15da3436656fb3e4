/* harvest.c: taking finished tasks back from the workers: reading each worker's completion
 * records, validating them, and handing the results to the task manager.
 *
 * Trust: a worker can write anything in its own slot memory, so nothing read from it is used
 * before it is checked, and each shared field is read once into a local (no double fetch).
 * A record must name the oldest task on that worker's list (an honest worker runs its queue in
 * order, one task at a time), whose cell it claimed (if the cell says otherwise, the record is
 * still that task's, and the worker is replaced); a length must fit its limit; an arena
 * offset must lie in the part of that worker's arena past what the parent already took. A
 * worker whose record names another task, or whose indices are impossible, is reported to
 * bad() (it is replaced) and nothing more is read from it; a record that is merely malformed
 * fails its own task with a clear message. The parent keeps its own copy of every index and
 * only writes the shared ones for the worker's benefit.
 *
 * Zero-copy results: a result of FPP__HOLD_MIN bytes or more is not copied: the task points
 * at it in the worker's arena, and a hold (below) keeps that space, and the slot memory, until
 * the task manager unpins the task (it recycles it, or keeps it and the bytes move to the
 * heap). The worker may only reuse arena space before `atail`, which the parent publishes as
 * the start of the oldest result still held. When a worker waits for room (`need`) that held
 * results block, results the caller has not seen yet (still in the task manager's queue) are
 * moved to the heap, oldest first; the one result the caller may be reading (the current
 * task) is never moved, and an arena of three largest results always has room beside it.
 * A hostile worker can change its own results' bytes after it reported them; it can change
 * nothing else, and the parent never reads those bytes. */
#include <string.h>

#include "fpp_internal.h"

#define DEPTH_TARGET_NS 200000 /* queue about this much work on each worker */

typedef struct fpp__hold {
    fpp__slotmem *mem;      /* a reference to the memory the result lies in */
    fpp_task *task;         /* NULL once released */
    uint64_t start;         /* the result's arena positions */
    uint64_t end;
    uint32_t w;
    struct fpp__hold *next; /* the memory's holds, oldest first */
} fpp__hold;

/* Where worker w may write up to (plus the arena size): the oldest result still held in its
 * current memory, else the end of the last one taken. */
static uint64_t arena_tail(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    return wp->mem && wp->mem->first ? wp->mem->first->start : wp->apos;
}

/* Drops released holds from the front of mem's list; publishes the new tail to its worker if
 * mem is still that slot's memory. */
static void trim_holds(fpp__pool *p, fpp__slotmem *mem, uint32_t w)
{
    unsigned dropped = 0;
    while (mem->first && !mem->first->task) {
        fpp__hold *h = mem->first;
        mem->first = h->next;
        if (!mem->first)
            mem->last = NULL;
        fpp__free(h);
        dropped++;
    }
    fpp__wpriv *wp = &p->wp[w];
    if (dropped && wp->mem == mem && !wp->corrupt) {
        atomic_store_explicit(&wp->b->atail, arena_tail(p, w), memory_order_release);
        fpp__ec_post(&wp->b->wake);
    }
    while (dropped--)
        fpp__slotmem_unref(mem); /* the last one may free mem */
}

static void release(fpp__pool *p, fpp__hold *h, fpp_task *t)
{
    h->task = NULL;
    t->hold = NULL;
    trim_holds(p, h->mem, h->w);
}

/* Moves a held result into memory the task owns. */
static void move_out(fpp__pool *p, fpp_task *t)
{
    fpp__hold *h = t->hold;
    const unsigned char *src = t->result;
    size_t len = t->result_len;
    t->hold = NULL;
    t->result = NULL;
    if (fpp__task_set_result(t, src, len) != 0)
        fpp__task_fail(t, FPP_FAILED, 0, "out of memory for a result of %zu bytes", len);
    t->hold = h;
    release(p, h, t);
}

void fpp__pool_unpin(fpp__pool *p, fpp_task *t, bool keep)
{
    if (!t->hold)
        return;
    if (keep) {
        move_out(p, t);
    } else {
        t->result = NULL;
        t->result_len = 0;
        release(p, t->hold, t);
    }
}

/* Worker w waits for arena room that held results block: move out what the caller has not
 * seen, oldest first, until it has the room (or only results the caller holds are left).
 * Its memory is the slot's current one, so the pool's reference keeps it alive throughout. */
static void make_room(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    uint64_t need = atomic_load_explicit(&wp->b->need, memory_order_relaxed);
    if (!need)
        return;
    while (need - arena_tail(p, w) > p->lay.arena_size) {
        fpp__hold *h = wp->mem->first;
        while (h && !(h->task && h->task->where == FPP__AT_DONEQ))
            h = h->next;
        if (!h)
            return; /* only what the caller holds is left */
        move_out(p, h->task); /* may free holds: look from the front again */
    }
}

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

static void corrupt(fpp__pool *p, uint32_t w, const char *why)
{
    fpp__wpriv *wp = &p->wp[w];
    if (wp->corrupt)
        return;
    wp->corrupt = true;
    wp->alive = false; /* no more tasks for it */
    p->bogus++;
    fpp__log(FPP_LOG_ERROR, "worker slot %u: %s; replacing the worker", w, why);
    if (p->bad)
        p->bad(p, w);
}

/* One record from worker w. Returns 1 if a task finished, 0 otherwise, -1 if the worker is to
 * be replaced (stop reading it). */
static int handle(fpp__pool *p, uint32_t w, const fpp__crec *r)
{
    fpp__wpriv *wp = &p->wp[w];
    uint32_t tag = wp->first;
    if (tag == FPP__NIL || p->fl[tag].ticket != r->ticket) {
        corrupt(p, w, "it returned a record for a task it was not running");
        return -1;
    }
    fpp__flight *e = &p->fl[tag];
    /* Its queue should say it claimed the task (an honest worker claims, then runs). If not, the
     * queue was written over after the fact (a task that rewrites a finished task's cell to
     * READY): the record still names the oldest task given to this worker, which is all any
     * result is, so it is taken; the cell is revoked if it still says READY, so the task cannot
     * be claimed again; and the worker is replaced. Refusing the record would leave the task
     * listed with a READY cell, and recovery would publish it again as never started: run twice. */
    bool unclaimed = !e->claimed && fpp__ring_claimed(wp->cells, p->lay.qcells, e->pos) != 1;
    if (unclaimed) {
        fpp__ring_revoke(wp->cells, p->lay.qcells, e->pos);
        e->claimed = true;
    }
    uint64_t A = p->lay.arena_size;
    const unsigned char *data = r->data;
    const char *bad = NULL;
    size_t limit = r->status == FPP__R_DONE ? p->lay.max_result : FPP__ERR_MAX;
    if (r->status != FPP__R_DONE && r->status != FPP__R_FAILED)
        bad = "unknown status";
    else if (r->len > limit)
        bad = "length over its limit";
    else if (r->len > FPP__INLINE_RES) {
        uint64_t skip = r->off - wp->apos;
        if (skip >= A || (r->off % A) + r->len > A)
            bad = "arena offset out of range";
        else {
            data = wp->arena + (r->off % A);
            wp->apos = r->off + r->len;
        }
    }
    fpp_task *t = e->task;
    fpp__hold *h = NULL;
    bool abandoned = e->state == FPP__FL_ABANDONED;
    fpp__flight_unlink(p, tag);
    fpp__flight_put(p, tag);
    if (abandoned || !t) {
        if (unclaimed)
            corrupt(p, w, "its queue says it never claimed a task it returned");
        return 0;
    }
    if (bad) {
        p->bogus++;
        fpp__task_fail(t, FPP_FAILED, 0, "worker returned a corrupted completion record (%s)", bad);
    } else if (r->status == FPP__R_DONE && r->len >= p->hold_min && (h = fpp__malloc(sizeof *h))) {
        /* Handed out where it lies. */
        *h = (fpp__hold){.mem = wp->mem, .task = t, .start = r->off, .end = r->off + r->len, .w = w};
        fpp__slotmem_ref(wp->mem);
        if (wp->mem->last)
            wp->mem->last->next = h;
        else
            wp->mem->first = h;
        wp->mem->last = h;
        t->result = (unsigned char *)data;
        t->result_len = r->len;
        t->result_cap = 0;
        t->hold = h;
        t->status = FPP_DONE;
        t->signo = 0;
    } else if (r->status == FPP__R_DONE) {
        if (fpp__task_set_result(t, data, r->len) != 0)
            fpp__task_fail(t, FPP_FAILED, 0, "out of memory for a result of %u bytes", r->len);
    } else {
        char msg[FPP__ERR_MAX];
        copy_message(msg, sizeof msg, data, r->len);
        fpp__task_fail(t, FPP_FAILED, 0, "%s", msg);
    }
    fpp__pool_finish(p, t, (int)w);
    if (unclaimed)
        corrupt(p, w, "its queue says it never claimed a task it returned");
    return 1;
}

/* Learns how long w's tasks take (from records arriving while it had work queued) and sets
 * how deep its queue may be. */
static void pace(fpp__wpriv *wp, uint32_t got, uint32_t qcells, uint32_t busy_before)
{
    int64_t now = fpp__now_ns();
    if (busy_before && wp->last_done_ns) {
        int64_t sample = (now - wp->last_done_ns) / got;
        wp->svc_ns = wp->svc_ns ? wp->svc_ns + (sample - wp->svc_ns) / 8 : sample;
        int64_t d = wp->svc_ns > 0 ? DEPTH_TARGET_NS / wp->svc_ns + 1 : qcells;
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
        make_room(p, w);
        return 0;
    }
    if (avail > FPP__CRING) {
        corrupt(p, w, "its block is corrupted (completion index out of range)");
        return 0;
    }
    uint32_t busy_before = wp->n;
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
        if (wp->corrupt)
            return n; /* replaced: nothing more is read from it */
    }
    atomic_store_explicit(&b->chead, wp->chead, memory_order_release);
    make_room(p, w);
    atomic_store_explicit(&b->atail, arena_tail(p, w), memory_order_release);
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
