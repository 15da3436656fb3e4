/* fuzz_pool.c: libFuzzer target over everything the parent decodes from memory a worker can
 * write: its completion records (ticket, status, lengths, arena offsets), its completion
 * index, its task queue's cell states, its `running` word, and what recovery, cancel,
 * timeouts and the audit make of them. The input is a little program of such writes and of
 * honest worker steps (a real claim, a real record), run against a real pool (lib/pool/: the
 * whole parent side, built alone with lib/core/) in private memory with no worker running.
 * Checks: no sanitizer report, and every task handed to the pool leaves it exactly once
 * (the pool's finished hook, defined here), with a result only from the worker it was given to; a task
 * whose record from an honest worker the parent has read is never handed out again, whatever
 * is written over the queue afterwards; at the end no in-flight entry and no timed entry is
 * left behind.
 *
 * Issue 8 added steps for the new protocol's hostile cases: plausible states written over a
 * cell (READY, CLAIMED or REVOKED at a position near the real one: forged claims, a finished
 * task's cell back to READY, a revoke that is never acknowledged), an honest worker completing
 * the task it claimed, and the parent's clocks aged so that the steal of a silent worker's only
 * task, a timeout's kill and the audit's unacknowledged-revoke rule all run.
 *
 * Issue 16 added the result arena (zero-copy holds from 64 bytes on, so that every result over
 * a record's inline bytes is held): honest workers reserve and write results in their arena
 * (fpp__rarena_reserve, giving up instead of waiting), the harness pins one held result (as the
 * task manager pins the task it hands out), unpins others keeping or dropping them, and checks
 * after every step that no held result an honest worker wrote was written over (I1); and it
 * scribbles the block's own words (state, counts, need, the start-up memory, the message, and
 * the parent's atail, apin and chead) before what reads them runs.
 *
 * Build: cmake -DFPP_BUILD_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: fuzz_pool tests/fuzz/corpus */
#include <stdlib.h>
#include <string.h>

#include "pool/pool_int.h"

#define NT 40
#define W 2
static fpp__job tasks[NT];
static int finished[NT];
static bool stopped[W];
static uint64_t claimed_ticket[W]; /* what an honest step claimed last and has not completed */
static uint64_t completed[NT];     /* the ticket of an honest worker's record for it, once the
                                    * parent has read that record */
/* Honest records the parent has not read yet: which task, its ticket, where in the worker's
 * completion ring, and which worker (gen: harness-side generation of the slot). */
typedef struct unread { int task; uint64_t ticket, idx; unsigned gen; } unread;
static unread pending[W][FPP__CRING];
static int npending[W];
static unsigned gen[W];

/* A record is read once the parent's own count of records consumed passes it (accepted or
 * refused), in the same worker's life. A record the parent never read (the worker died first,
 * or hid it by rewinding its completion index) proves nothing to it: the task may look never
 * started, and be handed out again. */
static void note_reads(const fpp__pool *p)
{
    for (uint32_t w = 0; w < W; w++) {
        int k = 0;
        for (int i = 0; i < npending[w]; i++) {
            unread u = pending[w][i];
            if (u.gen != gen[w])
                continue; /* another worker's now: never read */
            if (p->wp[w].chead > u.idx)
                completed[u.task] = u.ticket;
            else
                pending[w][k++] = u;
        }
        npending[w] = k;
    }
}
static bool dishonest[W];          /* the worker wrote over its queue or block, or claimed a second
                                    * task before completing the first: its claims prove nothing */

/* The task a live in-flight entry with this ticket holds, or NULL. */
static fpp__job *task_of(const fpp__pool *p, uint64_t ticket)
{
    for (uint32_t i = 0; i < p->nfl; i++)
        if (p->fl[i].state != FPP__FL_FREE && p->fl[i].ticket == ticket)
            return p->fl[i].job;
    return NULL;
}

/* Results held in place: which job, the byte its honest writer filled it with (0: not honest,
 * not checked). */
static fpp__job *held[NT];
static unsigned char held_fill[NT];
static bool pinned_now[NT];
static int held_w[NT];          /* the slot whose arena the result lies in */
static unsigned held_gen[NT];   /* and the worker in it then (gen[w]) */
static int nheld;
static unsigned char fill_of[NT]; /* per task: the fill its honest result was written with */
static fpp__pool *the_pool;

/* Whether held result i is still one an honest worker guards: a worker that turned dishonest
 * since (wrote its arena's words, claimed twice) may write anywhere in its own arena, results
 * it handed out in place included; that is its own tasks' loss, and I1 is not about it. */
static bool held_guarded(int i)
{
    int w = held_w[i];
    return held_fill[i] && !(w >= 0 && w < W && gen[w] == held_gen[i] && dishonest[w]);
}

/* A worker that turned dishonest spoils, for good, the results it handed out in place: it may
 * have written over them before it was replaced, and a new worker in its slot (another gen)
 * does not make them guarded again (the crash CI's fuzz run found: a held result of a worker
 * that scribbled its queue, checked once that worker was gone). */
static void spoil_held(int w)
{
    for (int i = 0; i < nheld; i++)
        if (held_w[i] == w && held_gen[i] == gen[w] && dishonest[w])
            held_fill[i] = 0;
}

static void check_held(void)
{
    for (int w = 0; w < W; w++)
        spoil_held(w);
    for (int i = 0; i < nheld; i++) {
        fpp__job *j = held[i];
        if (!j->hold || !held_guarded(i))
            continue;
        for (size_t k = 0; k < j->result_len; k += 7)
            if (j->result[k] != held_fill[i])
                abort(); /* a held result an honest worker wrote was written over (I1) */
    }
}

static void forget_held(int i)
{
    held[i] = held[nheld - 1];
    held_fill[i] = held_fill[nheld - 1];
    pinned_now[i] = pinned_now[nheld - 1];
    held_w[i] = held_w[nheld - 1];
    held_gen[i] = held_gen[nheld - 1];
    nheld--;
}

static void finished_hook(void *owner, fpp__job *t)
{
    (void)owner;
    int i = (int)t->id;
    if (i < 0 || i >= NT || ++finished[i] > 1)
        abort(); /* a task left the pool twice, or a task that is not ours */
    t->arg = NULL; /* points at the harness's static buffer */
    if (t->hold && nheld < NT) { /* handed out in place: the harness holds it until it unpins */
        held[nheld] = t;
        held_fill[nheld] = t->status == FPP_DONE ? fill_of[i] : 0;
        pinned_now[nheld] = false;
        held_w[nheld] = t->slot;
        held_gen[nheld] = t->slot >= 0 && t->slot < W ? gen[t->slot] : 0;
        nheld++;
        return;
    }
    if (t->hold) /* the task manager drops what it cannot hold */
        fpp__pool_unpin(the_pool, t, false);
    fpp__job_clear(t);
}

static bool give_up(void *arg) { (void)arg; return true; }

static void stop(void *owner, uint32_t w) { (void)owner; stopped[w] = true; }


typedef struct reader { const uint8_t *p; size_t n; } reader;
static uint64_t take(reader *r, size_t k)
{
    uint64_t v = 0;
    for (size_t i = 0; i < k && r->n; i++, r->p++, r->n--)
        v |= (uint64_t)*r->p << (8 * i);
    return v;
}

static void fresh_worker(fpp__pool *p, uint32_t w)
{
    fpp__slotmem *m = fpp__slotmem_new(&p->lay, false);
    if (!m)
        abort();
    fpp__pool_attach(p, w, m);
    stopped[w] = false;
    claimed_ticket[w] = 0;
    spoil_held((int)w);
    dishonest[w] = false;
    gen[w]++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char argbuf[2048];
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    fpp_executor_opts opts = {.workers = W, .queue_capacity = 16, .max_arg_size = 1024, .max_result_size = 4096};
    fpp__pool_hooks hooks = {.finished = finished_hook, .stop = stop, .bad = stop};
    fpp__pool *pool;
    if (fpp__pool_create(&pool, &opts, false, &hooks) != 0)
        return 0;
    the_pool = pool;
    pool->hold_min = 64; /* every result past a record's inline bytes is held */
    nheld = 0;
    memset(fill_of, 0, sizeof fill_of);
    fpp__rarena_writer wr[W];
    for (uint32_t w = 0; w < W; w++)
        fresh_worker(pool, w);
    reader r = {data, size};
    memset(finished, 0, sizeof finished);
    memset(completed, 0, sizeof completed);
    memset(npending, 0, sizeof npending);
    int dispatched = 0;
    uint64_t head[W], ctail[W];
    for (uint32_t w = 0; w < W; w++) {
        head[w] = pool->lay.qcells;
        ctail[w] = 0;
        wr[w] = (fpp__rarena_writer){pool->wp[w].b, pool->wp[w].arena, pool->lay.arena_size, 0};
    }
    for (int i = 0; i < NT; i++) {
        memset(&tasks[i], 0, sizeof tasks[i]);
        tasks[i].id = i;
        tasks[i].avoid_slot = -1;
        tasks[i].timeout_ms = (unsigned)(take(&r, 1) % 3);
        tasks[i].arg_len = (size_t)(take(&r, 1) * 5) % 1025;
        tasks[i].arg = argbuf;
        if (fpp__pool_dispatch(pool, &tasks[i]) == 0)
            dispatched++;
        else
            break;
    }
    while (r.n) {
        uint32_t w = (uint32_t)take(&r, 1) % W;
        fpp__wpriv *wp = &pool->wp[w];
        if (!wp->mem) { /* the slot is empty: a new worker comes */
            fresh_worker(pool, w);
            head[w] = pool->lay.qcells;
            ctail[w] = 0;
            wr[w] = (fpp__rarena_writer){pool->wp[w].b, pool->wp[w].arena, pool->lay.arena_size, 0};
            continue;
        }
        fpp__wblock *b = wp->b;
        fpp__cell *cells = wp->cells;
        uint32_t Q = pool->lay.qcells;
        switch (take(&r, 1) % 17) {
        case 0: { /* a completion record, then publish it */
            fpp__crec c;
            memset(&c, 0, sizeof c);
            c.ticket = take(&r, 8);
            if ((take(&r, 1) & 1) && wp->first != FPP__NIL) /* often the right ticket, to reach deeper checks */
                c.ticket = pool->fl[wp->first].ticket;
            c.status = (uint32_t)take(&r, 1) % 4;
            c.len = (uint32_t)take(&r, 4);
            if (take(&r, 1) & 1)
                c.len %= 200;
            c.off = take(&r, 8);
            for (size_t k = 0; k < sizeof c.data; k++)
                c.data[k] = (unsigned char)take(&r, 1);
            b->ring[ctail[w] & (FPP__CRING - 1)] = c;
            atomic_store(&b->ctail, ++ctail[w]);
            dishonest[w] = true;
            break;
        }
        case 1: fpp__pool_collect(pool); break;
        case 2: atomic_store(&b->ctail, take(&r, 8)); dishonest[w] = true; break;
        case 3: atomic_store(&cells[take(&r, 1) % Q].state, take(&r, 8)); dishonest[w] = true; break;
        case 4: /* the worker dies */
            fpp__pool_recover(pool, w, (take(&r, 1) & 1) ? FPP_TIMEOUT : FPP_CRASHED, 9, "worker killed by SIGKILL");
            break;
        case 5: fpp__pool_audit(pool); break;
        case 6: { /* an honest claim of the next task */
            fpp__cell d;
            if (fpp__queue_claim(cells, Q, &head[w], &d, &b->running)) {
                if (claimed_ticket[w])
                    dishonest[w] = true; /* a second claim before completing the first */
                claimed_ticket[w] = d.ticket;
                /* The parent publishes a task again only under a new ticket. (The same ticket is the
                 * worker re-reading an old descriptor that scribbles made look READY at its head:
                 * its own doing, as if a task called another's function.) */
                fpp__job *t = task_of(pool, d.ticket);
                if (t && completed[t->id] && completed[t->id] != d.ticket)
                    abort(); /* the pool handed out again a task an honest worker had completed */
            }
            break;
        }
        case 7: atomic_store(&b->running, (take(&r, 1) & 1) ? take(&r, 8) : (wp->first != FPP__NIL ? pool->fl[wp->first].ticket : 0)); break;
        case 8: pool->h.task_timeout_ms = (unsigned)(take(&r, 1) % 2); fpp__pool_timeouts(pool); break;
        case 9: { /* cancel one task, or steal */
            int i = (int)(take(&r, 1) % (uint64_t)(dispatched ? dispatched : 1));
            if (take(&r, 1) & 1)
                fpp__pool_steal(pool);
            else if (!finished[i])
                fpp__pool_cancel_task(pool, &tasks[i]);
            break;
        }
        case 10: { /* a plausible state over a cell: its position moved by -2..+2, any tag */
            fpp__cell *c = &cells[take(&r, 1) % Q];
            uint64_t v = take(&r, 1);
            uint64_t pos = FPP__Q_POS(atomic_load(&c->state)) + v % 5 - 2;
            atomic_store(&c->state, FPP__Q(pos, 1 + (v >> 3) % 3));
            dishonest[w] = true;
            break;
        }
        case 11: /* the honest worker completes what it claimed: a record with its ticket */
            if (claimed_ticket[w]) {
                fpp__job *t = task_of(pool, claimed_ticket[w]);
                if (t && !dishonest[w] && npending[w] < FPP__CRING)
                    pending[w][npending[w]++] = (unread){(int)t->id, claimed_ticket[w], ctail[w], gen[w]};
                fpp__crec c;
                memset(&c, 0, sizeof c);
                c.ticket = claimed_ticket[w];
                c.status = FPP__R_DONE;
                c.len = 8;
                memcpy(c.data, &c.ticket, 8);
                b->ring[ctail[w] & (FPP__CRING - 1)] = c;
                atomic_store(&b->ctail, ++ctail[w]);
                claimed_ticket[w] = 0;
            }
            break;
        case 12: { /* time passes for the parent: a silent worker, a claim seen long ago, a revoke
                    * unacknowledged for long; then what looks at those clocks */
            wp->last_done_ns = 1;
            if (wp->unacked_since_ns)
                wp->unacked_since_ns = 1;
            if (wp->first != FPP__NIL && pool->fl[wp->first].claimed_ns)
                pool->fl[wp->first].claimed_ns = 1;
            uint64_t v = take(&r, 1) % 3;
            if (v == 0)
                fpp__pool_steal(pool);
            else if (v == 1)
                fpp__pool_audit(pool);
            else
                fpp__pool_timeouts(pool);
            break;
        }
        case 14: /* the honest worker completes what it claimed with a result in its arena, if
                  * it has the room now (else it says what it needs, as it would before a sleep) */
            if (claimed_ticket[w]) {
                fpp__job *t = task_of(pool, claimed_ticket[w]);
                uint64_t len = 41 + take(&r, 2) % (pool->lay.max_result - 40);
                uint64_t off;
                unsigned char *dst = fpp__rarena_reserve(&wr[w], len, &off, give_up, NULL);
                if (!dst) {
                    atomic_store(&b->need, wr[w].apos + len + take(&r, 1) * 64);
                    break;
                }
                unsigned char fill = (unsigned char)(1 + take(&r, 1) % 255);
                memset(dst, fill, len);
                fpp__rarena_wrote(&wr[w], off, len);
                if (t && !dishonest[w]) {
                    fill_of[t->id] = fill;
                    if (npending[w] < FPP__CRING)
                        pending[w][npending[w]++] = (unread){(int)t->id, claimed_ticket[w], ctail[w], gen[w]};
                } else if (t) {
                    fill_of[t->id] = 0;
                }
                fpp__crec c;
                memset(&c, 0, sizeof c);
                c.ticket = claimed_ticket[w];
                c.status = FPP__R_DONE;
                c.len = (uint32_t)len;
                c.off = off;
                b->ring[ctail[w] & (FPP__CRING - 1)] = c;
                atomic_store(&b->ctail, ++ctail[w]);
                atomic_store(&b->need, 0);
                claimed_ticket[w] = 0;
            }
            break;
        case 15: /* the caller with its held results: pin one (the task it reads), unpin one
                  * keeping it (kept, retained, waited for) or dropping it (recycled) */
            if (nheld) {
                int i = (int)(take(&r, 1) % (uint64_t)nheld);
                uint64_t how = take(&r, 1) % 4;
                if (how == 0) {
                    for (int k = 0; k < nheld; k++) /* one pinned at a time, as the task manager */
                        if (pinned_now[k]) {
                            fpp__pool_pin(pool, held[k], false);
                            pinned_now[k] = false;
                        }
                    fpp__pool_pin(pool, held[i], true);
                    pinned_now[i] = true;
                } else {
                    fpp__job *j = held[i];
                    bool keep = how == 1;
                    fpp__pool_unpin(pool, j, keep);
                    if (keep && held_guarded(i) && j->status == FPP_DONE)
                        for (size_t k = 0; k < j->result_len; k++)
                            if (j->result[k] != held_fill[i])
                                abort(); /* moved out wrong */
                    fpp__job_clear(j);
                    forget_held(i);
                }
            }
            break;
        case 16: { /* the worker scribbles its block's words, then the parent reads them */
            uint64_t what = take(&r, 1) % 8, v = take(&r, 8);
            switch (what) {
            case 0: atomic_store(&b->wstate, (uint32_t)v); break;
            case 1: atomic_store(&b->tasks, v); break;
            case 2: atomic_store(&b->rss_start_kib, v); break;
            case 3: atomic_store(&b->need, v); break;
            case 4: memset(b->msg, (int)(v & 0xff), sizeof b->msg); break;
            case 5: atomic_store(&b->atail, v); break;
            case 6: atomic_store(&b->apin, v); break;
            case 7: atomic_store(&b->chead, v); break;
            }
            if (what >= 5 || what == 3)
                dishonest[w] = true; /* the words it writes by are its own to break */
            char msg[FPP__ERR_MAX];
            uint32_t ws = fpp__pool_worker_state(pool, w, msg, sizeof msg);
            if (ws > FPP__WS_RETIRED || strlen(msg) >= sizeof msg)
                abort();
            for (size_t k = 0; msg[k]; k++)
                if (msg[k] < 0x20 || msg[k] >= 0x7f)
                    abort(); /* the message reaches the log as printable text only */
            (void)fpp__pool_worker_ran(pool, w);
            uint64_t limit = take(&r, 4);
            if (fpp__pool_worker_rss_start(pool, w, limit) > limit)
                abort();
            fpp__pool_collect(pool); /* need: make room for it */
            break;
        }
        case 13: { /* a passed cell written back to READY (its old descriptor is still there) */
            uint64_t pos = wp->tail - 1 - take(&r, 1) % Q;
            fpp__cell *c = &cells[pos & (Q - 1)];
            if (atomic_load(&c->state) == FPP__Q(pos, FPP__Q_CLAIMED))
                atomic_store(&c->state, FPP__Q(pos, FPP__Q_READY));
            dishonest[w] = true; /* from now on: what it completed before still counts */
            break;
        }
        }
        note_reads(pool);
        for (uint32_t k = 0; k < W; k++) /* what was stopped dies */
            if (stopped[k] && pool->wp[k].mem)
                fpp__pool_recover(pool, k, FPP_CRASHED, 9, "stopped");
        note_reads(pool);
        fpp__pool_dispatch(pool, NULL);
        check_held();
    }
    check_held();
    /* The caller lets go of what it holds; then everything still in the pool leaves it, once. */
    while (nheld) {
        fpp__pool_unpin(pool, held[0], take(&r, 1) & 1);
        fpp__job_clear(held[0]);
        forget_held(0);
    }
    bool kill[W] = {false};
    fpp__pool_cancel(pool, kill);
    for (uint32_t w = 0; w < W; w++)
        fpp__pool_recover(pool, w, FPP_CRASHED, 9, "end");
    for (int i = 0; i < dispatched; i++)
        if (finished[i] != 1)
            abort(); /* lost: never left the pool */
    if (pool->used_fl != 0 || pool->ntimed != 0 || pool->retry.head)
        abort(); /* bookkeeping left behind */
    fpp__pool_destroy(pool, true);
    return 0;
}
