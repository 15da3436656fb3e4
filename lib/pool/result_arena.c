/* pool/result_arena.c: a worker's result arena, both halves of its protocol: the worker writes
 * results too large for a completion record there (reserve, write, publish the record: the
 * worker's half, at the bottom), and the parent takes them, hands the large ones out without a
 * copy (a hold), moves held ones to the heap when the worker needs the room, and releases them
 * (the parent's half).
 *
 * The arena: A bytes (pool/layout.c: four of the largest results, three past 16 MiB) at the end
 * of the worker's slot memory. Results are written at free-running positions (64-bit, never
 * wrapping), `pos % A` in the arena; a result never wraps: it starts a new lap instead.
 *   worker writes  need    the position it waits to reach (0: none), for the parent's sake
 *   parent writes  atail   the position the worker may write up to, minus A
 * Invariants:
 *   I1  the worker writes [pos, pos + len) only while pos + len - atail <= A: it never
 *       overwrites bytes the parent has not released;
 *   I2  the parent publishes atail = the start of the oldest result it still holds in this
 *       memory, else the end of the last result it took (apos): what it released is exactly
 *       what lies before atail;
 *   I3  the parent checks every record's position against its own apos and A before reading
 *       (a record may name only [apos, apos + A), within one lap): a worker can make its own
 *       results' bytes wrong, nothing else; the parent never reads them for its own use.
 * Holds: a result of hold_min bytes or more (16 KiB) is not copied: the job points at it, and a
 * hold keeps that arena space, and the slot memory (a reference), until the executor's unpin
 * (the task is recycled: dropped; kept: moved to the heap). A worker that waits for room sets
 * `need` and rings the parent's bell; the parent (fpp__rarena_make_room, at every harvest)
 * moves held results the caller is not reading (job->in_hand false) to the heap, oldest first,
 * until the worker has its room.
 * Progress: the worker waits with a deadline and looks again (core/ec.h); the parent never
 * waits on the arena. Known hole (issue 16): a result the caller is reading (in_hand) is never
 * moved, and the worker's window starts at the oldest hold, so once the worker has written A
 * bytes past it, it waits until the caller ends that task's life; a call that waits for that
 * worker meanwhile waits for ever.
 * A hostile worker can change its own results' bytes after it reported them; it can change
 * nothing else, and the parent never reads those bytes. */
#include <string.h>

#include "core/timing.h"
#include "pool/pool_int.h"

typedef struct fpp__hold {
    fpp__slotmem *mem;      /* a reference to the memory the result lies in */
    fpp__job *job;          /* NULL once released */
    uint64_t start;         /* the result's arena positions */
    uint64_t end;
    uint32_t w;
    struct fpp__hold *next; /* the memory's holds, oldest first */
} fpp__hold;

/* --------------------------------------------------------- the parent's half */

/* Where worker w may write up to (plus the arena size): the oldest result still held in its
 * current memory, else the end of the last one taken (I2). */
static uint64_t arena_tail(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    return wp->mem && wp->mem->first ? wp->mem->first->start : wp->apos;
}

static void publish_tail(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    atomic_store_explicit(&wp->b->atail, arena_tail(p, w), memory_order_release);
}

/* Drops released holds from the front of mem's list; publishes the new tail to its worker if
 * mem is still that slot's memory. */
static void trim_holds(fpp__pool *p, fpp__slotmem *mem, uint32_t w)
{
    unsigned dropped = 0;
    while (mem->first && !mem->first->job) {
        fpp__hold *h = mem->first;
        mem->first = h->next;
        if (!mem->first)
            mem->last = NULL;
        fpp__free(h);
        dropped++;
    }
    fpp__wpriv *wp = &p->wp[w];
    if (dropped && wp->mem == mem && !wp->corrupt) {
        publish_tail(p, w);
        fpp__ec_post(&wp->b->wake);
    }
    while (dropped--)
        fpp__slotmem_unref(mem); /* the last one may free mem */
}

static void release(fpp__pool *p, fpp__hold *h, fpp__job *j)
{
    h->job = NULL;
    j->hold = NULL;
    trim_holds(p, h->mem, h->w);
}

/* Moves a held result into memory the job owns. */
static void move_out(fpp__pool *p, fpp__job *j)
{
    fpp__hold *h = j->hold;
    const unsigned char *src = j->result;
    size_t len = j->result_len;
    j->hold = NULL;
    j->result = NULL;
    if (fpp__job_set_result(j, src, len) != 0)
        fpp__job_fail(j, FPP_FAILED, 0, "out of memory for a result of %zu bytes", len);
    j->hold = h;
    release(p, h, j);
}

void fpp__pool_unpin(fpp__pool *p, fpp__job *j, bool keep)
{
    if (!j->hold)
        return;
    if (keep) {
        move_out(p, j);
    } else {
        j->result = NULL;
        j->result_len = 0;
        release(p, j->hold, j);
    }
}

void fpp__rarena_make_room(fpp__pool *p, uint32_t w)
{
    /* Its memory is the slot's current one, so the pool's reference keeps it alive throughout. */
    fpp__wpriv *wp = &p->wp[w];
    uint64_t need = atomic_load_explicit(&wp->b->need, memory_order_relaxed);
    if (!need)
        return;
    while (need - arena_tail(p, w) > p->lay.arena_size) {
        fpp__hold *h = wp->mem->first;
        while (h && !(h->job && !h->job->in_hand))
            h = h->next;
        if (!h)
            return; /* only what the caller holds is left */
        move_out(p, h->job); /* may free holds: look from the front again */
    }
}

void fpp__rarena_release(fpp__pool *p, uint32_t w)
{
    fpp__rarena_make_room(p, w);
    publish_tail(p, w);
}

const unsigned char *fpp__rarena_take(fpp__pool *p, uint32_t w, uint64_t off, uint64_t len, const char **bad)
{
    fpp__wpriv *wp = &p->wp[w];
    uint64_t A = p->lay.arena_size;
    uint64_t skip = off - wp->apos;
    if (skip >= A || (off % A) + len > A) {
        *bad = "arena offset out of range";
        return NULL;
    }
    wp->apos = off + len;
    return wp->arena + (off % A);
}

bool fpp__rarena_hold(fpp__pool *p, uint32_t w, fpp__job *j, const unsigned char *data, uint64_t off, uint64_t len)
{
    fpp__wpriv *wp = &p->wp[w];
    fpp__hold *h = fpp__malloc(sizeof *h);
    if (!h)
        return false;
    *h = (fpp__hold){.mem = wp->mem, .job = j, .start = off, .end = off + len, .w = w};
    fpp__slotmem_ref(wp->mem);
    if (wp->mem->last)
        wp->mem->last->next = h;
    else
        wp->mem->first = h;
    wp->mem->last = h;
    j->result = (unsigned char *)data;
    j->result_len = len;
    j->result_cap = 0;
    j->hold = h;
    j->status = FPP_DONE;
    j->signo = 0;
    return true;
}

/* --------------------------------------------------------- the worker's half */

typedef struct room_wait {
    fpp__rarena_writer *a;
    uint64_t end;               /* the position to reach */
    bool (*stop)(void *arg);
    void *arg;
} room_wait;

static bool has_room(fpp__rarena_writer *a, uint64_t end)
{
    return end - atomic_load_explicit(&a->b->atail, memory_order_acquire) <= a->size; /* I1 */
}

/* Before a sleep: say what we wait for (need) and ring the parent, who may be asleep with the
 * room we need; then look (after arming: the parent's post after making room wakes us). */
static bool room_ready(void *arg, bool armed)
{
    room_wait *r = arg;
    if (r->stop(r->arg))
        return true;
    if (armed) {
        atomic_store_explicit(&r->a->b->need, r->end, memory_order_relaxed);
        fpp__ec_post(&r->a->b->bell);
    }
    return has_room(r->a, r->end);
}

unsigned char *fpp__rarena_reserve(fpp__rarena_writer *a, size_t len, uint64_t *off, bool (*stop)(void *arg),
                                   void *arg)
{
    uint64_t A = a->size;
    uint64_t pos = FPP__ALIGN_UP(a->apos, FPP__ARENA_ALIGN);
    if ((pos % A) + len > A)
        pos += A - (pos % A);
    static const fpp__wait_policy room = {
        .spin_ns = FPP__ROOM_SPIN_NS, .relax = 1, .yield_ns = FPP__WORKER_SLEEP_MAX_NS,
        .yield_max = FPP__ROOM_YIELDS, .sleep_ns = FPP__WORKER_SLEEP_MAX_NS,
    };
    room_wait r = {.a = a, .end = pos + len, .stop = stop, .arg = arg};
    fpp__ec *wake = &a->b->wake;
    fpp__waiter wt = {.ready = room_ready, .arg = &r, .words = &wake, .nwords = 1};
    while (!has_room(a, pos + len)) {
        if (stop(arg))
            return NULL;
        fpp__ec_await(&wt, &room, INT64_MAX);
        atomic_store_explicit(&a->b->need, 0, memory_order_relaxed);
    }
    *off = pos;
    return a->arena + (pos % A);
}
