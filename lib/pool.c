/* pool.c: the parent's side of a ring-and-arena pool: the layout of the segment, publishing
 * tasks, harvesting completion records, recovering from a dead worker, cancelling. Both the
 * process and the thread executor are built on it; only the thread calling into the task
 * manager runs this code.
 *
 * Trust: nothing a worker wrote is used before it is checked, and each shared field is read
 * once into a local (no double fetch). A ticket must name a live entry of the in-flight table
 * with the same generation; a length must fit its limit; an arena offset must lie in the free
 * part of that worker's arena, past what the parent already took. A record that fails a check
 * is dropped (its task, if it names one, fails with a clear message). The parent keeps its own
 * copy of every index (fpp__wpriv) and only writes the shared ones for the workers' benefit.
 *
 * Invariants: an in-flight entry is FREE, QUEUED (its task is in the ring or running) or
 * ABANDONED (its task was finished by the parent but a worker may still run it: the entry and
 * its argument block are kept until the worker reports or dies). Every task dispatched
 * leaves the pool exactly once through fpp__tm_finished. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sched.h>

#include "fpp_internal.h"

#define NIL UINT32_MAX
#define ARGS_PREFAULT_MAX ((size_t)64 << 20)

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

int fpp__layout_compute(fpp__layout *l, const fpp_executor_opts *o)
{
    memset(l, 0, sizeof *l);
    l->ncells = (uint32_t)o->queue_capacity;
    l->nworkers = (uint32_t)o->workers;
    l->max_arg = o->max_arg_size;
    l->max_result = o->max_result_size;
    l->cells_off = FPP__PAGE;
    l->wblock_size = FPP__ALIGN_UP(sizeof(fpp__wblock), FPP__PAGE);
    size_t blocks_off = l->cells_off + FPP__ALIGN_UP((size_t)l->ncells * sizeof(fpp__cell), FPP__PAGE);
    /* Worker blocks come right after the ring so that everything the parent writes (header,
     * ring, blocks, argument arena) is one prefix of the segment that can be backed at once. */
    l->worker_off = blocks_off;
    l->worker_stride = l->wblock_size;
    l->args_off = blocks_off + (size_t)l->nworkers * l->wblock_size;
    l->args_size = FPP__MAX(pow2_at_least(2 * l->max_arg), (size_t)1 << 20);
    /* At least two of the largest results, and room to keep several results of up to 16 MiB
     * in flight while the parent copies the previous ones out (sparse: only what is written is
     * backed). */
    size_t lanes = l->max_result <= ((size_t)16 << 20) ? 4 : 2;
    l->warena_size = FPP__ALIGN_UP(lanes * l->max_result + 2 * FPP__ARENA_ALIGN, FPP__PAGE);
    l->arenas_off = l->args_off + l->args_size;
    l->total = l->arenas_off + (size_t)l->nworkers * l->warena_size;
    return 0;
}

static unsigned char *arena(fpp__pool *p, uint32_t w)
{
    return fpp__warena_of(p->base, &p->lay, w);
}

int fpp__pool_create(fpp__pool *p, const fpp_executor_opts *o, bool shared)
{
    memset(p, 0, sizeof *p);
    fpp__layout_compute(&p->lay, o);
    p->shared = shared;
    int rc;
    if (shared)
        rc = fpp__shm_create(p->lay.total, p->lay.args_off + FPP__MIN(p->lay.args_size, ARGS_PREFAULT_MAX), &p->base);
    else
        rc = fpp__mem_create(p->lay.total, &p->base);
    if (rc)
        return rc;
    p->hdr = fpp__hdr_of(p->base);
    p->cells = fpp__cells_of(p->base, &p->lay);
    p->hdr->magic = FPP__MAGIC;
    p->hdr->version = 1;
    p->hdr->ncells = p->lay.ncells;
    p->hdr->nworkers = p->lay.nworkers;
    atomic_init(&p->hdr->head, 0);
    atomic_init(&p->hdr->parent_sleeping, 0);
    atomic_init(&p->hdr->parent_wake, 0);
    fpp__ring_init(p->cells, p->lay.ncells);
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        atomic_init(&b->wake, 0);
    }
    rc = fpp__buddy_init(&p->args, p->lay.args_size);
    if (rc)
        goto fail;
    p->nfl = p->lay.ncells + 2 * p->lay.nworkers + 16;
    p->fl = fpp__calloc(p->nfl, sizeof *p->fl);
    p->wp = fpp__calloc(p->lay.nworkers, sizeof *p->wp);
    p->cell_tag = fpp__malloc(p->lay.ncells * sizeof *p->cell_tag);
    if (!p->fl || !p->wp || !p->cell_tag) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < p->nfl; i++) {
        p->fl[i].next_free = i + 1 < p->nfl ? i + 1 : NIL;
        p->fl[i].arg_off = UINT64_MAX;
    }
    p->free_fl = 0;
    p->spin_ns = 30000;
    for (uint32_t i = 0; i < p->lay.ncells; i++)
        p->cell_tag[i] = NIL;
    return 0;
fail:
    fpp__pool_destroy(p);
    return rc;
}

void fpp__pool_destroy(fpp__pool *p)
{
    fpp__buddy_fini(&p->args);
    fpp__free(p->fl);
    fpp__free(p->wp);
    fpp__free(p->cell_tag);
    if (p->base) {
        if (p->shared)
            munmap(p->base, p->lay.total);
        else
            fpp__mem_destroy(p->base, p->lay.total);
    }
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ in-flight table */

static void entry_free(fpp__pool *p, uint32_t tag)
{
    fpp__flight *e = &p->fl[tag];
    if (p->cell_tag[e->pos & (p->lay.ncells - 1)] == tag)
        p->cell_tag[e->pos & (p->lay.ncells - 1)] = NIL;
    if (e->arg_off != UINT64_MAX)
        fpp__buddy_free(&p->args, e->arg_off, e->arg_len);
    e->arg_off = UINT64_MAX;
    if (e->timeout_ms) {
        p->ntimed--;
        e->timeout_ms = 0;
    }
    e->task = NULL;
    e->state = FPP__FL_FREE;
    e->gen++; /* a record naming the old generation is refused from now on */
    e->next_free = p->free_fl;
    p->free_fl = tag;
    p->used_fl--;
}

static void finish(fpp__pool *p, fpp_task *t)
{
    t->tag = NIL;
    fpp__tm_finished(p->ex->tm, t);
}

size_t fpp__pool_in_flight(const fpp__pool *p) { return p->used_fl; }

/* ---------------------------------------------------------------- publishing */

static int publish(fpp__pool *p, fpp_task *t)
{
    if (p->free_fl == NIL)
        return 1;
    fpp__cell *c = &p->cells[p->tail & (p->lay.ncells - 1)];
    uint64_t s = atomic_load_explicit(&c->state, memory_order_acquire);
    if (s != FPP__ST(p->tail, FPP__ST_FREE)) {
        /* "Still held for position tail - N" is believed only if the parent itself has a live
         * task there; otherwise a worker wrote it, and the cell is taken back. */
        uint64_t prev = (p->tail - p->lay.ncells) & FPP__POS_MASK;
        uint32_t owner = p->cell_tag[p->tail & (p->lay.ncells - 1)];
        if (FPP__ST_POS(s) == prev && FPP__ST_TAG(s) != FPP__ST_FREE && owner != NIL &&
            p->fl[owner].state != FPP__FL_FREE && p->fl[owner].pos == prev)
            return 1; /* full */
        fpp__log(FPP_LOG_ERROR, "task ring cell %llu corrupted (state %#llx, tail %llu): repairing it",
                 (unsigned long long)(p->tail & (p->lay.ncells - 1)), (unsigned long long)s, (unsigned long long)p->tail);
        atomic_store(&c->state, FPP__ST(p->tail, FPP__ST_FREE));
    }
    fpp__cell d;
    d.arg_len = (uint32_t)t->arg_len;
    d.fn = (uint32_t)t->fn;
    d.arg_off = 0;
    uint64_t off = UINT64_MAX;
    if (t->arg_len <= FPP__INLINE_ARG) {
        memset(d.arg, 0, sizeof d.arg);
        if (t->arg_len)
            memcpy(d.arg, t->arg, t->arg_len);
    } else {
        int64_t o = fpp__buddy_alloc(&p->args, t->arg_len);
        if (o < 0)
            return 1; /* the argument arena is full until tasks finish */
        off = (uint64_t)o;
        unsigned char *dst = p->base + p->lay.args_off + off;
#ifdef MADV_POPULATE_WRITE
        if (p->shared && off + t->arg_len > ARGS_PREFAULT_MAX &&
            madvise((void *)((uintptr_t)dst & ~(uintptr_t)(FPP__PAGE - 1)),
                    FPP__ALIGN_UP(t->arg_len + ((uintptr_t)dst & (FPP__PAGE - 1)), FPP__PAGE),
                    MADV_POPULATE_WRITE) != 0) {
            fpp__buddy_free(&p->args, off, t->arg_len);
            return fpp__sys_error("madvise", "MADV_POPULATE_WRITE of an argument");
        }
#endif
        memcpy(dst, t->arg, t->arg_len);
        d.arg_off = off;
    }
    uint32_t tag = p->free_fl;
    fpp__flight *e = &p->fl[tag];
    if (++e->gen == 0)
        e->gen = 1;
    d.ticket = ((uint64_t)e->gen << 32) | tag;
    int rc = fpp__ring_push_parent(p->cells, p->lay.ncells, p->tail, &d);
    if (rc != 0) {
        if (off != UINT64_MAX)
            fpp__buddy_free(&p->args, off, t->arg_len);
        return rc == 1 ? 1 : rc;
    }
    p->free_fl = e->next_free;
    p->used_fl++;
    e->task = t;
    e->pos = p->tail;
    e->arg_off = off;
    e->arg_len = (uint32_t)t->arg_len;
    e->state = FPP__FL_QUEUED;
    e->strikes = 0;
    e->timeout_ms = t->timeout_ms;
    if (t->timeout_ms && (p->ntimed++ == 0 || t->timeout_ms < p->min_task_timeout_ms))
        p->min_task_timeout_ms = t->timeout_ms;
    p->cell_tag[p->tail & (p->lay.ncells - 1)] = tag;
    t->tag = tag;
    p->tail = (p->tail + 1) & FPP__POS_MASK;
    p->unflushed++;
    return 0;
}

int fpp__pool_dispatch(fpp__pool *p, fpp_task *t)
{
    /* Tasks whose worker died before starting them go first, in their order. */
    while (p->retry.head) {
        int rc = publish(p, p->retry.head);
        if (rc == 1)
            return 1;
        fpp_task *r = fpp__tq_pop(&p->retry);
        if (rc < 0) { /* this one cannot go out again: it fails, the others go on */
            fpp__task_fail(r, FPP_FAILED, 0, "could not hand the task to a worker again: %s", fpp_strerror(rc));
            finish(p, r);
        }
    }
    if (!t)
        return 0;
    return publish(p, t);
}

void fpp__pool_flush(fpp__pool *p)
{
    /* Wake one sleeper per task published: a task needs one worker, and every extra one woken
     * competes for the cores with the one that works. Spinning workers need no wake-up. */
    uint32_t want = p->unflushed ? p->unflushed : 1;
    p->unflushed = 0;
    /* Dekker pair with the worker's store of `sleeping` then claim (worker.c, claim). */
    atomic_thread_fence(memory_order_seq_cst);
    for (uint32_t w = 0; w < p->lay.nworkers && want > 0; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        if (atomic_load_explicit(&b->sleeping, memory_order_relaxed)) {
            uint32_t one = 1;
            if (atomic_compare_exchange_strong(&b->sleeping, &one, 0)) {
                fpp__event_post(&b->wake);
                p->woke_sleeper = true;
                want--;
            }
        }
    }
}

/* ---------------------------------------------------------------- harvesting */

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

static int handle(fpp__pool *p, uint32_t w, const fpp__crec *r)
{
    fpp__wpriv *wp = &p->wp[w];
    uint64_t A = p->lay.warena_size;
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
            data = arena(p, w) + (r->off % A);
            wp->apos = FPP__ALIGN_UP(r->off + r->len, FPP__ARENA_ALIGN);
        }
    }

    uint32_t tag = (uint32_t)r->ticket, gen = (uint32_t)(r->ticket >> 32);
    if (tag >= p->nfl || p->fl[tag].gen != gen || p->fl[tag].state == FPP__FL_FREE) {
        p->bogus++;
        fpp__log(FPP_LOG_WARN, "worker slot %u returned a record for no task in flight (ticket %#llx): dropped",
                 w, (unsigned long long)r->ticket);
        return 0;
    }
    fpp__flight *e = &p->fl[tag];
    uint64_t cs = atomic_load_explicit(&p->cells[e->pos & (p->lay.ncells - 1)].state, memory_order_acquire);
    if (FPP__ST_POS(cs) == e->pos && FPP__ST_TAG(cs) != FPP__ST_FREE) {
        /* Its cell is still READY or being claimed: no worker can have run it. A forged record;
         * the task stays where it is. */
        p->bogus++;
        fpp__log(FPP_LOG_WARN, "worker slot %u returned a record for task %lld, which no worker has started: dropped",
                 w, e->task ? (long long)e->task->id : -1LL);
        return 0;
    }
    fpp_task *t = e->task;
    bool abandoned = e->state == FPP__FL_ABANDONED;
    entry_free(p, tag);
    if (abandoned || !t)
        return 0;
    t->slot = (int)w;
    if (bad) {
        p->bogus++;
        fpp__task_fail(t, FPP_FAILED, 0, "worker returned a corrupted completion record (%s)", bad);
    } else if (r->status == FPP__R_DONE) {
        if (fpp__task_set_result(t, data, r->len) != 0)
            fpp__task_fail(t, FPP_FAILED, 0, "out of memory for a result of %u bytes", r->len);
    } else {
        char msg[FPP__ERR_MAX];
        copy_message(msg, sizeof msg, data, r->len);
        fpp__task_fail(t, FPP_FAILED, 0, "%s", msg);
    }
    finish(p, t);
    return 1;
}

int fpp__pool_collect_worker(fpp__pool *p, uint32_t w)
{
    fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
    fpp__wpriv *wp = &p->wp[w];
    /* A3: acquire; pairs with R3 in the worker's publish. */
    uint64_t tail = atomic_load_explicit(&b->ctail, memory_order_acquire);
    uint64_t avail = tail - wp->chead;
    if (avail == 0)
        return 0;
    if (avail > FPP__CRING) {
        if (!wp->corrupt) {
            wp->corrupt = true;
            p->bogus++;
            fpp__log(FPP_LOG_ERROR, "worker slot %u: its block is corrupted (completion index %llu ahead); replacing the worker",
                     w, (unsigned long long)avail);
            if (p->bad)
                p->bad(p, w);
        }
        return 0;
    }
    int n = 0;
    for (uint64_t i = 0; i < avail; i++) {
        fpp__crec r;
        memcpy(&r, &b->ring[wp->chead & (FPP__CRING - 1)], sizeof r);
        wp->chead++;
        n += handle(p, w, &r);
    }
    atomic_store_explicit(&b->chead, wp->chead, memory_order_release);
    atomic_store_explicit(&b->atail, wp->apos, memory_order_release);
    if (atomic_load_explicit(&b->need, memory_order_relaxed))
        fpp__event_post(&b->wake);
    return n;
}

int fpp__pool_collect(fpp__pool *p)
{
    int n = 0;
    for (uint32_t w = 0; w < p->lay.nworkers; w++)
        n += fpp__pool_collect_worker(p, w);
    return n;
}

static bool anything_ready(fpp__pool *p)
{
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        if (atomic_load_explicit(&b->ctail, memory_order_relaxed) != p->wp[w].chead ||
            atomic_load_explicit(&b->need, memory_order_relaxed))
            return true;
    }
    return false;
}

void fpp__pool_wait(fpp__pool *p, uint32_t seen, int64_t deadline_ns)
{
    if (deadline_ns <= 0)
        return;
    fpp_executor *ex = p->ex;
    /* Spin a few microseconds, then yield: a noop task comes back in well under that, and a
     * bounded spin leaves the core to the workers when it does not. But right after waking a
     * sleeping worker, do not spin: the scheduler often wakes it on this very core, where it
     * would wait for our spin to end (measured: 29 us round trip spinning, 7 us sleeping). */
    /* The spin adapts: it doubles (up to 30 us) when it catches a result, and halves when it
     * ends in sleep anyway, so that with long tasks the parent does not take CPU time from
     * workers that need both cores. */
    int64_t t0 = fpp__now_ns();
    bool spin = !p->woke_sleeper;
    p->woke_sleeper = false;
    for (int i = 0; spin; i++) {
        if (anything_ready(p) || fpp__pool_seq(p) != seen || atomic_load_explicit(&ex->poked, memory_order_relaxed)) {
            p->spin_ns = FPP__MIN(p->spin_ns * 2 + 1000, (int64_t)30000);
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
    atomic_store_explicit(&p->hdr->parent_sleeping, 1, memory_order_relaxed);
    /* Dekker pair with notify_parent in worker.c. */
    atomic_thread_fence(memory_order_seq_cst);
    if (!anything_ready(p) && !atomic_load(&ex->poked)) {
        /* A hostile worker can make this return early (it only costs a loop), never late:
         * the deadline bounds it. */
        int64_t d = deadline_ns == INT64_MAX ? fpp__now_ns() + (int64_t)3600 * 1000000000 : deadline_ns;
        fpp__event_wait(&p->hdr->parent_wake, seen, d);
    }
    atomic_store_explicit(&p->hdr->parent_sleeping, 0, memory_order_relaxed);
}

/* ---------------------------------------------------------------- recovery */

int fpp__pool_recover(fpp__pool *p, uint32_t w, fpp_status st, int signo, const char *why)
{
    int n = fpp__pool_collect_worker(p, w);
    fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
    fpp__wpriv *wp = &p->wp[w];

    /* Claimed but never started: publish again, in their order. */
    fpp__tq again = {0};
    for (uint32_t i = 0; i < p->nfl; i++) {
        fpp__flight *e = &p->fl[i];
        if (e->state == FPP__FL_FREE || !fpp__ring_reclaim_parent(p->cells, p->lay.ncells, e->pos, w))
            continue;
        fpp_task *t = e->task;
        bool queued = e->state == FPP__FL_QUEUED;
        entry_free(p, i);
        if (queued && t)
            fpp__tq_push(&again, t);
    }
    while (again.head) {
        fpp_task *t = fpp__tq_pop(&again);
        fpp__tq_push(&p->retry, t);
    }

    /* The task it was running, if it had not reported it. The phase is not trusted: any live
     * entry the block names whose cell is no longer READY was taken by this worker. */
    uint64_t ticket = atomic_load(&b->ticket);
    uint32_t tag = (uint32_t)ticket, gen = (uint32_t)(ticket >> 32);
    if (tag < p->nfl && p->fl[tag].gen == gen && p->fl[tag].state != FPP__FL_FREE &&
        atomic_load(&p->cells[p->fl[tag].pos & (p->lay.ncells - 1)].state) !=
            FPP__ST(p->fl[tag].pos, FPP__ST_READY)) {
        fpp_task *t = p->fl[tag].task;
        bool queued = p->fl[tag].state == FPP__FL_QUEUED;
        entry_free(p, tag);
        if (queued && t) {
            t->slot = (int)w;
            if (st == FPP_TIMEOUT && wp->timeout_ticket == ticket)
                fpp__task_fail(t, FPP_TIMEOUT, 0, "task %lld exceeded its timeout of %lld ms; %s",
                               (long long)t->id, (long long)wp->timeout_ms, why);
            else
                fpp__task_fail(t, st == FPP_TIMEOUT ? FPP_CRASHED : st, signo,
                               "%s while running task %lld", why, (long long)t->id);
            finish(p, t);
            n++;
        }
    }

    /* Ready the block for the next worker in this slot. */
    atomic_store(&b->phase, FPP__PH_IDLE);
    atomic_store(&b->ticket, 0);
    atomic_store(&b->sleeping, 0);
    atomic_store(&b->need, 0);
    atomic_store(&b->drain, 0);
    atomic_store(&b->ctail, wp->chead);
    atomic_store(&b->chead, wp->chead);
    atomic_store(&b->apos, wp->apos);
    atomic_store(&b->atail, wp->apos);
    atomic_store(&b->wake, 0);
    wp->seen_ticket = 0;
    wp->timeout_ticket = 0;
    wp->corrupt = false;
    wp->stuck = 0;
    return n;
}

/* ---------------------------------------------------------------- cancelling */

static int worker_of(fpp__pool *p, const fpp__flight *e, uint32_t tag)
{
    fpp__cell *c = &p->cells[e->pos & (p->lay.ncells - 1)];
    uint64_t s = atomic_load_explicit(&c->state, memory_order_acquire);
    if (FPP__ST_POS(s) == e->pos && FPP__ST_TAG(s) >= FPP__ST_TAKEN &&
        FPP__ST_TAG(s) - FPP__ST_TAKEN < p->lay.nworkers)
        return (int)(FPP__ST_TAG(s) - FPP__ST_TAKEN);
    uint64_t ticket = ((uint64_t)e->gen << 32) | tag;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        if (atomic_load_explicit(&b->phase, memory_order_acquire) == FPP__PH_RUNNING &&
            atomic_load_explicit(&b->ticket, memory_order_relaxed) == ticket)
            return (int)w;
    }
    return -1;
}

int fpp__pool_cancel(fpp__pool *p, bool *kill)
{
    int busy = 0;
    for (uint32_t i = 0; i < p->nfl; i++) {
        fpp__flight *e = &p->fl[i];
        if (e->state != FPP__FL_QUEUED)
            continue;
        fpp_task *t = e->task;
        if (fpp__ring_revoke_parent(p->cells, p->lay.ncells, e->pos)) {
            entry_free(p, i);
        } else {
            int w = worker_of(p, e, i);
            if (w >= 0 && kill && !kill[w]) {
                kill[w] = true;
                busy++;
            }
            e->state = FPP__FL_ABANDONED;
            e->task = NULL;
        }
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        finish(p, t);
    }
    while (p->retry.head) {
        fpp_task *t = fpp__tq_pop(&p->retry);
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        finish(p, t);
    }
    return busy;
}

int fpp__pool_cancel_one(fpp__pool *p, fpp_task *t, bool stop_worker, int *kill_w)
{
    *kill_w = -1;
    /* Waiting to go out again after its worker died: never started. */
    for (fpp_task *prev = NULL, *r = p->retry.head; r; prev = r, r = r->next) {
        if (r != t)
            continue;
        if (prev)
            prev->next = r->next;
        else
            p->retry.head = r->next;
        if (p->retry.tail == r)
            p->retry.tail = prev;
        p->retry.n--;
        r->next = NULL;
        fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
        finish(p, t);
        return 1;
    }
    /* Harvest first: a task that has finished is not cancelled. Afterwards t is looked at only
     * through its entry (finishing other tasks may have ended t's life). */
    uint32_t tag = t->tag;
    fpp__pool_collect(p);
    if (tag >= p->nfl || p->fl[tag].state != FPP__FL_QUEUED || p->fl[tag].task != t)
        return 0;
    fpp__flight *e = &p->fl[tag];
    if (fpp__ring_revoke_parent(p->cells, p->lay.ncells, e->pos)) {
        entry_free(p, tag);
    } else {
        int w = worker_of(p, e, tag);
        if (w >= 0 && stop_worker) {
            /* Dekker pair with the worker's RUNNING mark then check of drain (as for a
             * timeout): after the fence, either it sees drain and starts nothing, or we see
             * it running this task, or its cell still names it (claimed, not yet started). */
            fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, (uint32_t)w);
            uint64_t ticket = ((uint64_t)e->gen << 32) | tag;
            atomic_store(&b->drain, 1);
            atomic_thread_fence(memory_order_seq_cst);
            uint64_t cs = atomic_load(&p->cells[e->pos & (p->lay.ncells - 1)].state);
            bool ours = (atomic_load(&b->phase) == FPP__PH_RUNNING && atomic_load(&b->ticket) == ticket) ||
                        cs == FPP__ST(e->pos, FPP__ST_TAKEN + (uint32_t)w);
            if (ours)
                *kill_w = w;
            else
                atomic_store(&b->drain, 0); /* it finished it meanwhile: spare it */
        }
        if (w >= 0)
            t->slot = w;
        e->state = FPP__FL_ABANDONED; /* freed when the worker reports or dies */
        e->task = NULL;
    }
    fpp__task_fail(t, FPP_CANCELLED, 0, "cancelled");
    finish(p, t);
    return 1;
}

void fpp__pool_abandon(fpp__pool *p, uint64_t ticket, fpp_status st, const char *why)
{
    uint32_t tag = (uint32_t)ticket, gen = (uint32_t)(ticket >> 32);
    if (tag >= p->nfl || p->fl[tag].gen != gen || p->fl[tag].state != FPP__FL_QUEUED)
        return;
    fpp_task *t = p->fl[tag].task;
    p->fl[tag].state = FPP__FL_ABANDONED;
    p->fl[tag].task = NULL;
    fpp__task_fail(t, st, 0, "%s", why);
    finish(p, t);
}

int64_t fpp__pool_timeouts(fpp__pool *p, unsigned timeout_ms,
                           void (*over)(fpp__pool *p, uint32_t w, uint64_t ticket))
{
    if (!timeout_ms && !p->ntimed)
        return INT64_MAX;
    int64_t now = fpp__now_ns(), earliest = INT64_MAX;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->alive || atomic_load_explicit(&b->phase, memory_order_acquire) != FPP__PH_RUNNING)
            continue;
        uint64_t ticket = atomic_load_explicit(&b->ticket, memory_order_relaxed);
        /* A task's own timeout, if the ticket names a live entry that has one. */
        uint32_t tag = (uint32_t)ticket;
        fpp__flight *e = tag < p->nfl && p->fl[tag].gen == (uint32_t)(ticket >> 32) &&
                                 p->fl[tag].state != FPP__FL_FREE ? &p->fl[tag] : NULL;
        unsigned ms = e && e->timeout_ms ? e->timeout_ms : timeout_ms;
        if (!ms)
            continue;
        int64_t limit = (int64_t)ms * 1000000;
        if (ticket != wp->seen_ticket) {
            int64_t started = atomic_load_explicit(&b->started_ns, memory_order_relaxed);
            /* A worker's own clock reading is believed only if it is plausible. */
            if (started > now || started < now - limit - 1000000000)
                started = now;
            wp->seen_ticket = ticket;
            wp->seen_ns = started;
        }
        if (wp->timeout_ticket == ticket)
            continue; /* already dealt with */
        int64_t deadline = wp->seen_ns + limit;
        if (now >= deadline) {
            wp->timeout_ticket = ticket;
            wp->timeout_ms = ms;
            if (e && e->task)
                e->task->slot = (int)w;
            over(p, w, ticket);
        } else if (deadline < earliest) {
            earliest = deadline;
        }
    }
    return earliest;
}

unsigned fpp__pool_timeout_tick_ms(const fpp__pool *p, unsigned timeout_ms)
{
    if (p->ntimed && (!timeout_ms || p->min_task_timeout_ms < timeout_ms))
        return p->min_task_timeout_ms;
    return timeout_ms;
}

/* ------------------------------------------------------------------ audit */

int fpp__pool_audit(fpp__pool *p)
{
    int n = fpp__pool_collect(p);
    uint32_t N = p->lay.ncells;
    fpp__hdr *h = p->hdr;
    if (h->magic != FPP__MAGIC || h->version != 1 || h->ncells != N || h->nworkers != p->lay.nworkers) {
        /* Someone wrote over the header: put back what the parent knows. */
        fpp__log(FPP_LOG_ERROR, "shared header corrupted (magic %#x): repairing it", h->magic);
        h->magic = FPP__MAGIC;
        h->version = 1;
        h->ncells = N;
        h->nworkers = p->lay.nworkers;
        atomic_store(&h->parent_sleeping, 0);
    }
    uint64_t oldest = 0, oldest_age = 0;
    bool waiting = false;
    for (uint32_t i = 0; i < p->nfl; i++) {
        fpp__flight *e = &p->fl[i];
        if (e->state != FPP__FL_QUEUED)
            continue;
        uint64_t s = atomic_load_explicit(&p->cells[e->pos & (N - 1)].state, memory_order_acquire);
        bool held = false;
        if (s == FPP__ST(e->pos, FPP__ST_READY)) {
            uint64_t age = (p->tail - e->pos) & FPP__POS_MASK;
            if (!waiting || age > oldest_age) {
                oldest = e->pos;
                oldest_age = age;
            }
            waiting = held = true;
        } else if (FPP__ST_POS(s) == e->pos && FPP__ST_TAG(s) >= FPP__ST_TAKEN &&
                   FPP__ST_TAG(s) - FPP__ST_TAKEN < p->lay.nworkers &&
                   p->wp[FPP__ST_TAG(s) - FPP__ST_TAKEN].alive) {
            held = true;
        } else {
            uint64_t ticket = ((uint64_t)e->gen << 32) | i;
            for (uint32_t w = 0; w < p->lay.nworkers && !held; w++) {
                fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
                held = p->wp[w].alive && atomic_load(&b->ticket) == ticket &&
                       atomic_load(&b->phase) == FPP__PH_RUNNING;
            }
        }
        if (held) {
            e->strikes = 0;
            continue;
        }
        if (++e->strikes < 2)
            continue; /* it may have completed between our harvest and now: look again later */
        fpp_task *t = e->task;
        entry_free(p, i);
        if (t) {
            fpp__task_fail(t, FPP_CRASHED, 0,
                           "task %lld was lost: a worker scribbled over the shared memory that tracked it",
                           (long long)t->id);
            finish(p, t);
            n++;
        }
    }
    /* A worker that runs nothing the parent knows of, has returned nothing since the last
     * audit, and leaves ready tasks waiting is stuck (hung after writing its block, or its
     * wake-ups scribbled): replace it. */
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(p->base, &p->lay, w);
        fpp__wpriv *wp = &p->wp[w];
        uint64_t ticket = atomic_load(&b->ticket);
        uint32_t tag = (uint32_t)ticket;
        bool running = atomic_load(&b->phase) == FPP__PH_RUNNING && tag < p->nfl &&
                       p->fl[tag].gen == (uint32_t)(ticket >> 32) && p->fl[tag].state != FPP__FL_FREE;
        /* Three audits in a row (most of a second) rule out a worker that is merely slow to
         * be scheduled; a false positive costs an idle worker, never a task. */
        if (waiting && wp->alive && !running && wp->chead == wp->audit_chead)
            wp->stuck++;
        else
            wp->stuck = 0;
        if (wp->stuck >= 3 && p->bad) {
            fpp__log(FPP_LOG_ERROR, "worker slot %u: no progress while tasks wait, and it runs no task: replacing it", w);
            wp->stuck = 0;
            p->bad(p, w);
        }
        wp->audit_chead = wp->chead;
    }
    if (waiting) {
        uint64_t head = atomic_load(&p->hdr->head) & FPP__POS_MASK;
        if (((p->tail - head) & FPP__POS_MASK) < oldest_age) /* head is past the oldest waiting task */
            atomic_store(&p->hdr->head, oldest);
        else if (((p->tail - head) & FPP__POS_MASK) > N)  /* or nowhere near the ring at all */
            atomic_store(&p->hdr->head, oldest);
        fpp__pool_flush(p);
    }
    return n;
}
