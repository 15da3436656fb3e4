/* pool.c: the parent's side of a pool of per-worker task queues: creating it, giving a new
 * worker its slot, choosing which worker gets each task and publishing it there, waking
 * workers, moving queued tasks away from a worker that makes no progress, and the parent's
 * sleep. Harvesting is in harvest.c, recovery, cancel, timeouts and the audit in watchdog.c,
 * the in-flight table in flight.c. Only the thread calling into the task manager runs this.
 *
 * Choosing a worker: round robin over the live workers with room, where room is a queue
 * depth that adapts to the tasks: deep (the whole queue) for tasks of microseconds, so that a
 * worker never runs dry while the parent is busy; two for tasks of a millisecond or more
 * (one running, one ready), so that little waits behind a long task. A task retried after a
 * crash or a timeout avoids the worker it last ran on while another is alive. What still ends
 * up behind a long or stopped task is moved to an idle worker (fpp__pool_steal): revoking a
 * task that its worker has not claimed is one CAS. So is the only task of a worker stopped
 * before it claimed it: a stopped worker holds back at most the one task it claimed. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fpp_internal.h"

#define ARGS_PREFAULT_MAX ((size_t)64 << 20)
#define STEAL_AFTER_NS 100000      /* a worker silent this long gives up what it has not claimed */
#define STEAL_HEAD_AFTER_NS 10000000 /* ...and its only task too, if silent this long (stopped?) */
#define STEAL_MAX 16               /* tasks moved per poll, at most */
#define SPIN_MAX_NS 30000          /* the parent's spin before sleeping, at most */
#define SLICE_NS 1000000           /* the sleep slice where futex_waitv is missing */

int fpp__pool_create(fpp__pool *p, const fpp_executor_opts *o, bool shared)
{
    memset(p, 0, sizeof *p);
    fpp__layout_compute(&p->lay, o);
    p->shared = shared;
    p->args.fd = -1;
    int rc = fpp__region_create(&p->args, "fpp-args", p->lay.args_size,
                                FPP__MIN(p->lay.args_size, ARGS_PREFAULT_MAX), shared);
    if (rc)
        return rc;
    /* The parent's mapping stays writable; every other is read-only for good. */
    rc = fpp__region_seal(&p->args, true);
    if (rc)
        goto fail;
    rc = fpp__buddy_init(&p->argbuddy, p->lay.args_size);
    if (rc)
        goto fail;
    uint32_t W = p->lay.nworkers, Q = p->lay.qcells;
    rc = fpp__flight_init(p, W * Q + 2 * W + 16);
    if (rc)
        goto fail;
    p->wp = fpp__calloc(W, sizeof *p->wp);
    if (!p->wp) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t w = 0; w < W; w++) {
        fpp__wpriv *wp = &p->wp[w];
        wp->first = wp->last = FPP__NIL;
        wp->depth = Q;
        wp->cell_entry = fpp__malloc(Q * sizeof *wp->cell_entry);
        if (!wp->cell_entry) {
            rc = FPP_ENOMEM;
            goto fail;
        }
    }
    p->spin_ns = SPIN_MAX_NS;
    /* FPP_COPY_RESULTS=1 (for benchmarks): copy every result out, as 0.1 did. */
    const char *copy = getenv("FPP_COPY_RESULTS");
    p->hold_min = copy && *copy == '1' ? SIZE_MAX : FPP__HOLD_MIN;
    return 0;
fail:
    fpp__pool_destroy(p, true);
    return rc;
}

void fpp__pool_destroy(fpp__pool *p, bool owner)
{
    bool unmap = owner || !p->shared;
    for (uint32_t w = 0; p->wp && w < p->lay.nworkers; w++) {
        fpp__slotmem *m = p->wp[w].mem;
        if (m && !unmap) {
            fpp__region_forget(&m->r); /* another process's mapping: not ours to touch */
            fpp__free(m);
        } else {
            fpp__slotmem_unref(m);
        }
        fpp__free(p->wp[w].cell_entry);
    }
    fpp__free(p->wp);
    fpp__free(p->fl);
    fpp__buddy_fini(&p->argbuddy);
    if (unmap)
        fpp__region_destroy(&p->args);
    else
        fpp__region_forget(&p->args);
    memset(p, 0, sizeof *p);
}

void fpp__pool_attach(fpp__pool *p, uint32_t w, fpp__slotmem *mem)
{
    fpp__wpriv *wp = &p->wp[w];
    wp->mem = mem;
    wp->b = fpp__slot_block(mem->r.base);
    wp->cells = fpp__slot_cells(mem->r.base, &p->lay);
    wp->arena = fpp__slot_arena(mem->r.base, &p->lay);
    wp->tail = p->lay.qcells; /* positions start one lap in (ring.c) */
    wp->chead = wp->apos = 0;
    wp->first = wp->last = FPP__NIL;
    wp->n = wp->unflushed = 0;
    wp->depth = p->lay.qcells;
    wp->svc_ns = 0;
    wp->last_done_ns = 0;
    wp->corrupt = false;
    wp->timeout_ticket = 0;
    wp->unacked_since_ns = 0;
    for (uint32_t i = 0; i < p->lay.qcells; i++)
        wp->cell_entry[i] = FPP__NIL;
    wp->alive = true;
}

/* ---------------------------------------------------------------- publishing */

/* Publishes t in worker w's queue. 0 done, 1 no room there (queue or argument arena). */
static int publish_on(fpp__pool *p, uint32_t w, fpp_task *t)
{
    fpp__wpriv *wp = &p->wp[w];
    uint32_t Q = p->lay.qcells;
    uint32_t idx = (uint32_t)(wp->tail & (Q - 1));
    if (atomic_load_explicit(&wp->cells[idx].state, memory_order_relaxed) != FPP__Q(wp->tail - Q, FPP__Q_CLAIMED))
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
    d.fn = (uint32_t)t->fn;
    d.arg_len = (uint32_t)t->arg_len;
    d.arg_off = 0;
    e->arg_off = UINT64_MAX;
    e->arg_len = (uint32_t)t->arg_len;
    if (t->arg_len <= FPP__INLINE_ARG) {
        memset(d.arg, 0, sizeof d.arg);
        if (t->arg_len)
            memcpy(d.arg, t->arg, t->arg_len);
    } else {
        int64_t o = fpp__buddy_alloc(&p->argbuddy, t->arg_len);
        if (o < 0) {
            fpp__flight_put(p, tag);
            return 1; /* the argument arena is full until tasks finish */
        }
        unsigned char *dst = p->args.base + o;
        e->arg_off = (uint64_t)o;
#ifdef MADV_POPULATE_WRITE
        if (p->shared && (uint64_t)o + t->arg_len > ARGS_PREFAULT_MAX &&
            madvise((void *)((uintptr_t)dst & ~(uintptr_t)(FPP__PAGE - 1)),
                    FPP__ALIGN_UP(t->arg_len + ((uintptr_t)dst & (FPP__PAGE - 1)), FPP__PAGE),
                    MADV_POPULATE_WRITE) != 0) {
            fpp__flight_put(p, tag);
            return fpp__sys_error("madvise", "MADV_POPULATE_WRITE of an argument");
        }
#endif
        memcpy(dst, t->arg, t->arg_len);
        d.arg_off = (uint64_t)o;
    }
    if (fpp__ring_publish(wp->cells, Q, wp->tail, &d) != 0) {
        fpp__flight_put(p, tag);
        return 1;
    }
    wp->cell_entry[idx] = tag;
    e->task = t;
    e->pos = wp->tail;
    e->timeout_ms = t->timeout_ms ? t->timeout_ms : p->ex->opts.task_timeout_ms;
    if (e->timeout_ms) {
        p->ntimed++;
        if (!p->min_timeout_ms || e->timeout_ms < p->min_timeout_ms)
            p->min_timeout_ms = e->timeout_ms;
    }
    if (wp->n == 0)
        wp->last_done_ns = fpp__now_ns(); /* busy from now: the steal clock starts */
    fpp__flight_link(p, w, tag);
    t->tag = tag;
    t->slot = (int)w;
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

static int place(fpp__pool *p, fpp_task *t)
{
    uint32_t W = p->lay.nworkers;
    int avoid = t->avoid_slot;
    if (avoid >= 0 && ((uint32_t)avoid >= W || !other_alive(p, (uint32_t)avoid)))
        avoid = -1;
    for (uint32_t k = 0; k < W; k++) {
        uint32_t w = p->cursor + k < W ? p->cursor + k : p->cursor + k - W;
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->alive || wp->n >= wp->depth || (int)w == avoid)
            continue;
        int rc = publish_on(p, w, t);
        if (rc == 0) {
            p->cursor = w + 1 < W ? w + 1 : 0;
            return 0;
        }
        if (rc < 0)
            return rc;
    }
    return 1;
}

int fpp__pool_dispatch(fpp__pool *p, fpp_task *t)
{
    /* Tasks taken back from a worker go first, in their order. */
    while (p->retry.head) {
        int rc = place(p, p->retry.head);
        if (rc == 1)
            return 1;
        fpp_task *r = fpp__tq_pop(&p->retry);
        if (rc < 0) { /* this one cannot go out again: it fails, the others go on */
            fpp__task_fail(r, FPP_FAILED, 0, "could not hand the task to a worker again: %s", fpp_strerror(rc));
            fpp__pool_finish(p, r, -1);
        }
    }
    if (!t)
        return 0;
    return place(p, t);
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

/* ------------------------------------------------------------------- steal */

/* Can worker v give a task to an idle one now? Its newest unclaimed task, once it has been silent
 * STEAL_AFTER_NS with more than one; its only task, once silent STEAL_HEAD_AFTER_NS: a worker
 * stopped (or starved of CPU) before claiming the one task it was given must not hold it back
 * for ever, timeout or not (the timeout clock starts at the claim). Not sooner: a worker that is
 * merely waking up would see its task move away for nothing. */
static bool can_give(fpp__pool *p, const fpp__wpriv *wv, int64_t now)
{
    if (!wv->mem || wv->n == 0 || now - wv->last_done_ns < STEAL_AFTER_NS)
        return false;
    const fpp__flight *head = &p->fl[wv->first];
    return wv->n >= 2 || (head->state == FPP__FL_QUEUED && !head->claimed &&
                          now - wv->last_done_ns >= STEAL_HEAD_AFTER_NS);
}

/* Revokes the newest task worker v has not claimed. Returns it, or NULL. */
static fpp_task *take_back(fpp__pool *p, uint32_t v)
{
    fpp__wpriv *wp = &p->wp[v];
    uint32_t tag = wp->last;
    if (tag == FPP__NIL)
        return NULL;
    fpp__flight *e = &p->fl[tag];
    if (e->state != FPP__FL_QUEUED || e->claimed)
        return NULL;
    if (!fpp__ring_revoke(wp->cells, p->lay.qcells, e->pos)) {
        /* Claimed after all (it may be running it): known now, so not tried again. */
        if (fpp__ring_claimed(wp->cells, p->lay.qcells, e->pos) == 1)
            e->claimed = true;
        return NULL;
    }
    fpp_task *t = e->task;
    fpp__flight_unlink(p, tag);
    fpp__flight_put(p, tag);
    t->tag = FPP__NIL;
    return t;
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
    for (uint32_t i = 0; i < W && moved < STEAL_MAX; i++) {
        fpp__wpriv *idle = &p->wp[i];
        if (!idle->alive || idle->n != 0 || idle->corrupt)
            continue;
        if (!now) { /* an idle worker: someone silent may have work for it */
            now = fpp__now_ns();
            victim = steal_victim(p, now);
        }
        if (victim == FPP__NIL)
            break;
        fpp_task *t = take_back(p, victim);
        if (!t) {
            victim = steal_victim(p, now); /* that one had nothing left to give: the next */
            continue;
        }
        if (publish_on(p, i, t) != 0)
            fpp__tq_push(&p->retry, t);
        else
            moved++;
        if (!can_give(p, &p->wp[victim], now))
            victim = steal_victim(p, now);
    }
    /* An idle worker is likely asleep: wake it now, not at the end of its sleep. */
    if (moved)
        fpp__pool_flush(p);
}

/* ----------------------------------------------------------------- sleeping */

void fpp__pool_mark(fpp__pool *p)
{
    for (int i = 0; i < p->nextra; i++)
        p->extra_seen[i] = fpp__ec_count(p->extra[i]);
}

static bool anything_ready(fpp__pool *p)
{
    if (atomic_load_explicit(&p->ex->poked, memory_order_relaxed))
        return true;
    for (int i = 0; i < p->nextra; i++)
        if (fpp__ec_count(p->extra[i]) != p->extra_seen[i])
            return true;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (wp->mem && !wp->corrupt &&
            atomic_load_explicit(&wp->b->ctail, memory_order_relaxed) != wp->chead)
            return true;
    }
    return false;
}

void fpp__pool_wait(fpp__pool *p, int64_t deadline_ns)
{
    if (deadline_ns <= 0)
        return;
    /* Spin a few microseconds, then yield: a short task comes back in well under that, and a
     * bounded spin leaves the core to the workers when it does not. Right after waking a
     * sleeping worker, do not spin: the scheduler often wakes it on this very core, where it
     * would wait for our spin to end. The spin adapts: it doubles (up to SPIN_MAX_NS) when it
     * catches a result, and halves when it ends in sleep anyway, so that with long tasks the
     * parent does not take CPU time from workers that need both cores. A worker can only make
     * the spin end early (by posting), never last longer: it is bounded by time. */
    int64_t t0 = fpp__now_ns();
    bool spin = !p->woke_worker;
    p->woke_worker = false;
    for (int i = 0; spin; i++) {
        if (anything_ready(p)) {
            p->spin_ns = FPP__MIN(p->spin_ns * 2 + 1000, (int64_t)SPIN_MAX_NS);
            return;
        }
        if ((i & 7) == 7) {
            int64_t now = fpp__now_ns();
            if (now >= deadline_ns)
                return;
            if (now - t0 > p->spin_ns) {
                p->spin_ns /= 2;
                break;
            }
            if (now - t0 > 5000)
                sched_yield();
        }
        fpp__cpu_relax();
    }
    /* Sleep on every live worker's bell and on the extra words (event counts: arm, check,
     * wait; ec.c has the argument). */
    fpp__ec *e[128];
    uint32_t armed[128];
    int n = 0;
    for (int i = 0; i < p->nextra; i++) {
        e[n] = p->extra[i];
        armed[n] = fpp__ec_arm(p->extra[i]);
        if ((armed[n] >> 1) != p->extra_seen[i])
            return;
        n++;
    }
    bool fits = true;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->mem || wp->corrupt)
            continue;
        if (n == 128) {
            fits = false;
            break;
        }
        e[n] = &wp->b->bell;
        armed[n++] = fpp__ec_arm(&wp->b->bell);
    }
    if (anything_ready(p))
        return;
    int64_t d = deadline_ns == INT64_MAX ? fpp__now_ns() + (int64_t)3600 * 1000000000 : deadline_ns;
    if (!fits || n == 0 || fpp__ec_waitv(e, armed, n, d) != 0) {
        /* Too many workers for one futex_waitv, or no futex_waitv: sleep in slices on the
         * last extra word (the poke: it still ends the sleep at once). */
        d = FPP__MIN(d, fpp__now_ns() + SLICE_NS);
        if (p->nextra) {
            fpp__ec_wait(e[p->nextra - 1], armed[p->nextra - 1], d);
        } else {
            struct timespec ts = {0, SLICE_NS};
            nanosleep(&ts, NULL);
        }
    }
}
