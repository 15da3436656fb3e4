/* pool/pool.c: a pool's life and the parent's sleep: creating it (the argument arena, the
 * in-flight table, one private view per worker slot), giving a new worker its slot, what the
 * executor may ask of a slot (validated reports of what its worker wrote), handing finished
 * jobs up, and the parent's wait for its workers.
 *
 * The rest of the parent's side is by concept: pool/dispatch.c (choosing a worker and publishing),
 * pool/steal.c (moving queued tasks off a silent worker), pool/completion_ring.c (harvest),
 * pool/result_arena.c, pool/recover.c, pool/cancel.c, pool/timeout.c, pool/audit.c. Only the
 * thread calling into the task manager runs any of it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/testing.h"
#include "core/timing.h"
#include "pool/pool_int.h"

/* Results from this size on are handed out where the worker wrote them (zero-copy): below it,
 * the copy costs less than the hold. */
#define HOLD_MIN ((size_t)16 << 10)

int fpp__pool_create(fpp__pool **out, const fpp_executor_opts *o, bool shared, const fpp__pool_hooks *hooks)
{
    *out = NULL;
    fpp__pool *p = fpp__calloc(1, sizeof *p);
    if (!p)
        return FPP_ENOMEM;
    fpp__layout_compute(&p->lay, o);
    p->shared = shared;
    p->h = *hooks;
    int rc = fpp__args_create(p);
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
    p->spin_ns = FPP__PARENT_SPIN_MAX_NS;
    /* The test build's FPP_COPY_RESULTS=1: copy every result out, as 0.1 did. */
    const char *copy = FPP__TEST_ENV("FPP_COPY_RESULTS");
    p->hold_min = copy && *copy == '1' ? SIZE_MAX : HOLD_MIN;
    *out = p;
    return 0;
fail:
    fpp__pool_destroy(p, true);
    return rc;
}

void fpp__pool_destroy(fpp__pool *p, bool owner)
{
    if (!p)
        return;
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
    fpp__args_destroy(p, unmap);
    fpp__free(p);
}

const fpp__layout *fpp__pool_layout(const fpp__pool *p) { return &p->lay; }
int fpp__pool_args_fd(const fpp__pool *p) { return p->args.fd; }
const unsigned char *fpp__pool_args(const fpp__pool *p) { return p->args.base; }

void fpp__pool_set_word(fpp__pool *p, int i, fpp__ec *e)
{
    p->extra[i] = e;
    if (i >= p->nextra)
        p->nextra = i + 1;
}

void fpp__pool_attach(fpp__pool *p, uint32_t w, fpp__slotmem *mem)
{
    fpp__wpriv *wp = &p->wp[w];
    wp->mem = mem;
    wp->b = fpp__slot_block(mem->r.base);
    wp->cells = fpp__slot_cells(mem->r.base, &p->lay);
    wp->arena = fpp__slot_arena(mem->r.base, &p->lay);
    wp->tail = p->lay.qcells; /* positions start one lap in (pool/task_queue.c) */
    wp->chead = wp->apos = 0;
    wp->pin = NULL;
    wp->first = wp->last = FPP__NIL;
    wp->n = wp->unflushed = 0;
    wp->depth = p->lay.qcells;
    wp->svc_ns = 0;
    wp->last_done_ns = 0;
    wp->corrupt = false;
    wp->timeout_ticket = 0;
    wp->unacked_since_ns = 0;
    wp->noise = 0;
    wp->muted_until = wp->mute_ns = 0;
    for (uint32_t i = 0; i < p->lay.qcells; i++)
        wp->cell_entry[i] = FPP__NIL;
    wp->alive = true;
}

void fpp__pool_close_slot(fpp__pool *p, uint32_t w) { p->wp[w].alive = false; }

bool fpp__pool_timed_out(const fpp__pool *p, uint32_t w) { return p->wp[w].timeout_ticket != 0; }

/* ------------------------------------------------- what a worker says of itself */

uint32_t fpp__pool_worker_state(fpp__pool *p, uint32_t w, char *msg, size_t cap)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->b)
        return FPP__WS_STARTING;
    uint32_t s = atomic_load(&wp->b->wstate);
    if (s > FPP__WS_RETIRED)
        s = FPP__WS_STARTING; /* nonsense: the worker says nothing we can use */
    if (msg && cap) {
        msg[0] = 0;
        if (s == FPP__WS_INIT_FAILED) {
            /* Copied once, then only printable characters kept, within both bounds. */
            char raw[FPP__ERR_MAX];
            memcpy(raw, wp->b->msg, sizeof raw);
            size_t i = 0;
            for (; i < sizeof raw && i + 1 < cap && raw[i]; i++)
                msg[i] = raw[i] >= 0x20 && raw[i] < 0x7f ? raw[i] : '?';
            msg[i] = 0;
        }
    }
    return s;
}

typedef struct state_wait { fpp__pool *p; uint32_t w; } state_wait;

static bool started(void *arg, bool armed)
{
    FPP__UNUSED(armed);
    state_wait *s = arg;
    return fpp__pool_worker_state(s->p, s->w, NULL, 0) != FPP__WS_STARTING;
}

uint32_t fpp__pool_await_state(fpp__pool *p, uint32_t w, int64_t deadline_ns, char *msg, size_t cap)
{
    static const fpp__wait_policy sleep_at_once = {.sleep_ns = FPP__WAIT_FOREVER_NS};
    fpp__wpriv *wp = &p->wp[w];
    if (wp->b) {
        state_wait s = {p, w};
        fpp__ec *bell = &wp->b->bell;
        fpp__waiter wt = {.ready = started, .arg = &s, .words = &bell, .nwords = 1};
        while (fpp__ec_await(&wt, &sleep_at_once, deadline_ns) == FPP__AWAIT_SLEPT)
            ;
    }
    return fpp__pool_worker_state(p, w, msg, cap);
}

bool fpp__pool_worker_ran(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->b)
        return false;
    uint32_t s = atomic_load(&wp->b->wstate);
    return s == FPP__WS_READY || s == FPP__WS_RETIRED || atomic_load(&wp->b->tasks) > 0;
}

uint64_t fpp__pool_worker_rss_start(fpp__pool *p, uint32_t w, uint64_t limit_kib)
{
    fpp__wpriv *wp = &p->wp[w];
    uint64_t v = wp->b ? atomic_load_explicit(&wp->b->rss_start_kib, memory_order_relaxed) : 0;
    return FPP__MIN(v, limit_kib);
}

/* ----------------------------------------------------------- jobs leaving */

void fpp__pool_finish(fpp__pool *p, fpp__job *j, int slot)
{
    j->tag = FPP__JOB_NONE;
    j->slot = slot;
    p->finished++;
    p->h.finished(p->h.owner, j);
}

void fpp__pool_bad(fpp__pool *p, uint32_t w, const char *why)
{
    fpp__wpriv *wp = &p->wp[w];
    if (wp->corrupt)
        return;
    wp->corrupt = true;
    wp->alive = false; /* no more tasks for it */
    p->bogus++;
    fpp__log(FPP_LOG_ERROR, "worker slot %u: %s; replacing the worker", w, why);
    if (p->h.bad)
        p->h.bad(p->h.owner, w);
}

size_t fpp__pool_in_flight(const fpp__pool *p) { return p->used_fl + p->retry.n; }

uint64_t fpp__pool_finished(const fpp__pool *p) { return p->finished; }

void fpp__pool_defer(fpp__pool *p, fpp__job *j)
{
    j->tag = FPP__JOB_NONE;
    fpp__jobq_push(&p->retry, j);
}

bool fpp__pool_has_waiting(const fpp__pool *p) { return p->retry.head != NULL; }

int fpp__pool_fail_waiting(fpp__pool *p, fpp_status st, const char *msg)
{
    int n = 0;
    fpp__job *j;
    while ((j = fpp__jobq_pop(&p->retry))) {
        fpp__job_fail(j, st, 0, "%s", msg);
        fpp__pool_finish(p, j, -1);
        n++;
    }
    return n;
}

/* ----------------------------------------------------------------- sleeping */

void fpp__pool_mark(fpp__pool *p)
{
    for (int i = 0; i < p->nextra; i++)
        p->extra_seen[i] = fpp__ec_count(p->extra[i]);
}

static bool anything_ready(fpp__pool *p)
{
    if (p->h.poked && atomic_load_explicit(p->h.poked, memory_order_relaxed))
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

/* Worker w's bell ended the parent's sleep and there was nothing to take: a task that rings
 * its own worker's bell in a loop would keep the parent at full CPU. After a run of these its
 * bell is muted for a while (doubling): the parent looks at it every FPP__BELL_MUTED_LOOK_NS
 * instead. */
static void bell_noise(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    if (++wp->noise < FPP__BELL_NOISE_MAX)
        return;
    wp->mute_ns = wp->mute_ns ? FPP__MIN(wp->mute_ns * 2, (int64_t)FPP__BELL_MUTE_MAX_NS) : FPP__BELL_MUTE_MIN_NS;
    wp->muted_until = fpp__now_ns() + wp->mute_ns;
    wp->noise = 0;
    fpp__log(FPP_LOG_DEBUG, "worker slot %u rings the parent for nothing; not slept on for %lld ms", w,
             (long long)(wp->mute_ns / 1000000));
}

static bool ready(void *arg, bool armed)
{
    FPP__UNUSED(armed);
    return anything_ready(arg);
}

void fpp__pool_wait(fpp__pool *p, int64_t deadline_ns)
{
    if (deadline_ns <= 0)
        return;
    /* Spin a few microseconds, then yield: a short task comes back in well under that, and a
     * bounded spin leaves the core to the workers when it does not. Right after waking a
     * sleeping worker, yield only: the scheduler often wakes it on this very core, where it
     * would wait for a spin to end, while a yield hands it the core at once; the worker, with
     * nothing queued after that task, yields back before its own spin (worker.c, next_task),
     * so a lone task costs one wake-up and two yields instead of two futex sleeps (p50 7.7 us
     * -> 5.5 us on a quiet 2-core machine, 1.3-1.5x a semaphore round trip). The spin adapts:
     * it doubles (up to its maximum) when it catches a result, and halves when it ends in
     * sleep anyway, so that with long tasks the parent does not take CPU time from workers
     * that need both cores. A worker can only make the spin end early (by posting), never last
     * longer: it is bounded by time. */
    bool spin = !p->woke_worker;
    p->woke_worker = false;
    fpp__wait_policy pol = {
        .spin_ns = spin ? FPP__MIN(p->spin_ns, (int64_t)FPP__PARENT_SPIN_PURE_NS) : 0,
        .relax = 1,
        .yield_ns = p->spin_ns,
        .yield_max = UINT32_MAX,
        .sleep_ns = FPP__WAIT_FOREVER_NS,
    };
    /* Sleep on the extra words and on every live worker's bell (event counts: arm, look, sleep;
     * core/ec.c has the argument). The last extra word (the poke) goes first: where futex_waitv
     * is missing the sleep is on words[0] alone, in slices, and a poke must still end it. A
     * muted bell (bell_noise) is left out, and looked at every FPP__BELL_MUTED_LOOK_NS instead. */
    fpp__ec *words[2 + FPP__MAX_WORKERS];
    uint32_t who[2 + FPP__MAX_WORKERS];
    int n = 0;
    for (int i = p->nextra - 1; i >= 0; i--)
        words[n++] = p->extra[i];
    int first_bell = n;
    int64_t now = 0;
    for (uint32_t w = 0; w < p->lay.nworkers; w++) {
        fpp__wpriv *wp = &p->wp[w];
        if (!wp->mem || wp->corrupt)
            continue;
        if (wp->muted_until) {
            if (!now)
                now = fpp__now_ns();
            if (now < wp->muted_until) {
                deadline_ns = FPP__MIN(deadline_ns, now + FPP__BELL_MUTED_LOOK_NS);
                continue;
            }
            wp->muted_until = 0;
            wp->noise = 0;
        }
        who[n] = w;
        words[n++] = &wp->b->bell;
    }
    if (n == 0) { /* nothing to wake on: one slice */
        int64_t d = FPP__MIN(deadline_ns, fpp__now_ns() + FPP__WAIT_SLICE_NS) - fpp__now_ns();
        struct timespec ts = {0, d > 0 ? (long)d : 0};
        nanosleep(&ts, NULL);
        return;
    }
    fpp__waiter wt = {.ready = ready, .arg = p, .words = words, .nwords = n};
    int r = fpp__ec_await(&wt, &pol, deadline_ns);
    if (r == FPP__AWAIT_SPUN)
        p->spin_ns = FPP__MIN(p->spin_ns * 2 + 1000, (int64_t)FPP__PARENT_SPIN_MAX_NS);
    else if (r != FPP__AWAIT_DEADLINE)
        p->spin_ns /= 2;
    if (r == FPP__AWAIT_SLEPT && wt.woke >= first_bell && !anything_ready(p))
        bell_noise(p, who[wt.woke]);
}
