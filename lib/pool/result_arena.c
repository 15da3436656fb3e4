/* pool/result_arena.c: a worker's result arena, both halves of its protocol: the worker writes
 * results too large for a completion record there (reserve, write, then publish the record:
 * the worker's half, at the bottom), and the parent takes them, hands the large ones out
 * without a copy (a hold), moves held ones to the heap when the worker needs their room, and
 * releases them (the parent's half).
 *
 * The arena: A bytes at the end of the worker's slot memory, A >= 4 * max_result_size + 128
 * (pool/layout.c). Results are written at free-running 64-bit positions (never wrapping), at
 * offset `pos % A`, 64-byte aligned; a result never crosses the end of the arena: it starts the
 * next lap instead. The control words (pool/layout.h):
 *   worker writes  need    the position its next result must reach (0: none), while it waits
 *   parent writes  apin    the one result the caller may be reading in place (the task the last
 *                          fpp_as_completed handed out): its offset and length; 0: none
 *                  atail   the oldest position of any other result the parent holds, else the
 *                          end of the last result it took (apos); stored after apin (release)
 * Invariants:
 *   I1  the worker writes [pos, pos + len) only if pos + len - atail <= A and no position of it
 *       falls at an offset of the pinned result: it never writes over a byte the parent holds;
 *   I2  every held result other than the pinned one lies at or after atail; the pinned one lies
 *       before the worker's position, at the offsets apin names;
 *   I3  the parent checks every record's position against its own apos and A before reading (a
 *       record may name only [apos, apos + A), within one lap): a worker can make its own
 *       results' bytes wrong, nothing else; the parent never reads them for its own use.
 * I1 holds against stale words because apin is stored before atail and read after it: a worker
 * that sees an atail past a result that became pinned sees that pin (or a later one, which
 * means this one was released). A result stops being pinned only when it is released or moved
 * to the heap: the caller's next call ends the life of the task it was reading (or keeps it,
 * which moves it).
 *
 * Holds: a result of hold_min bytes or more (16 KiB) is not copied: the job points at it, and a
 * hold keeps that space, and the slot memory (a reference), until the executor's unpin (the
 * task is recycled: dropped; kept, retained, waited for: moved to the heap).
 *
 * Why no side waits for ever. The parent never waits on the arena. The worker waits only when
 * its next result does not fit: it publishes `need` and rings the parent's bell. Every harvest
 * (every poll of every call that waits: fpp_wait, fpp_submit waiting for room,
 * fpp_as_completed(_for), a map's pull, fpp_run) moves held results other than the pinned one
 * to the heap, oldest first, until atail + A reaches need, and publishes apin and atail. Once
 * they are all moved, atail is apos, and apos is the worker's position (it waits only after
 * publishing every record it wrote, all harvested by then). From there the positions the
 * worker may use, [apos, apos + A), are the whole arena once around, less the pinned result:
 * at most three free runs (the arena's end and the pinned result each cut one), of together at
 * least A - (max_result + 63) >= 3 * max_result + 64 bytes, so one of them holds any result of
 * max_result bytes or fewer. The worker takes the first run that fits, skipping the pinned
 * offsets and the arena's end (place()), so need - atail <= A: it writes. Nothing the caller
 * holds can stop it: kept, retained and waited-for results are moved when kept, and the pinned
 * one is written around. A worker whose parent is away (not in a call) waits, with a deadline,
 * until the next call.
 *
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

/* apin: the pinned result's offset and length in the arena, in units of FPP__ARENA_ALIGN. */
static uint64_t pin_word(const fpp__hold *h, uint64_t A)
{
    if (!h)
        return 0;
    uint64_t off = (h->start % A) / FPP__ARENA_ALIGN;
    uint64_t len = (h->end - h->start + FPP__ARENA_ALIGN - 1) / FPP__ARENA_ALIGN;
    return off << 32 | len;
}

/* --------------------------------------------------------- the parent's half */

/* atail for worker w (I2): the oldest live hold of its current memory that is not pinned,
 * else the end of the last result taken. Released holds are trimmed from the front, and from
 * right after a pinned front, so this looks at two holds at most. */
static uint64_t arena_tail(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    if (!wp->mem)
        return wp->apos;
    fpp__hold *h = wp->mem->first;
    if (h && h == wp->pin)
        h = h->next;
    return h ? h->start : wp->apos;
}

static void publish_tail(fpp__pool *p, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    atomic_store_explicit(&wp->b->apin, pin_word(wp->pin, p->lay.arena_size), memory_order_relaxed);
    atomic_store_explicit(&wp->b->atail, arena_tail(p, w), memory_order_release);
}

/* Drops released holds from the front of mem's list (and from right after its pinned front);
 * publishes the new words to its worker if mem is still that slot's memory. */
static void trim_holds(fpp__pool *p, fpp__slotmem *mem, uint32_t w)
{
    fpp__wpriv *wp = &p->wp[w];
    fpp__hold *pin = wp->mem == mem ? wp->pin : NULL;
    unsigned dropped = 0;
    fpp__hold **at = &mem->first, *prev = NULL;
    while (*at) {
        fpp__hold *h = *at;
        if (h->job) {
            if (h != pin || prev != NULL)
                break;
            prev = h; /* a pinned front: look behind it */
            at = &h->next;
            continue;
        }
        *at = h->next;
        fpp__free(h);
        dropped++;
    }
    if (!*at)
        mem->last = prev;
    if (dropped && wp->mem == mem && !wp->corrupt) {
        publish_tail(p, w);
        fpp__ec_post(&wp->b->wake);
    }
    while (dropped--)
        fpp__slotmem_unref(mem); /* the last one may free mem */
}

static void release(fpp__pool *p, fpp__hold *h, fpp__job *j)
{
    fpp__wpriv *wp = &p->wp[h->w];
    if (wp->pin == h)
        wp->pin = NULL;
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

void fpp__pool_pin(fpp__pool *p, fpp__job *j, bool on)
{
    fpp__hold *h = j->hold;
    if (!h)
        return;
    fpp__wpriv *wp = &p->wp[h->w];
    if (wp->mem != h->mem)
        return; /* an old worker's memory: no worker writes there any more */
    if (on)
        wp->pin = h; /* published at the next harvest or release (I1 holds meanwhile: atail <= h) */
    else if (wp->pin == h)
        wp->pin = NULL;
}

void fpp__rarena_make_room(fpp__pool *p, uint32_t w)
{
    /* Its memory is the slot's current one, so the pool's reference keeps it alive throughout. */
    fpp__wpriv *wp = &p->wp[w];
    uint64_t need = atomic_load_explicit(&wp->b->need, memory_order_relaxed);
    if (!need)
        return;
    bool moved = false;
    while (need - arena_tail(p, w) > p->lay.arena_size) {
        fpp__hold *h = wp->mem->first;
        while (h && (!h->job || h == wp->pin))
            h = h->next;
        if (!h)
            break; /* only the pinned one is left: the worker writes around it */
        move_out(p, h->job); /* may free holds: look from the front again */
        moved = true;
    }
    if (!moved && wp->pin && !wp->corrupt) {
        publish_tail(p, w); /* a pin set since the last publish */
        fpp__ec_post(&wp->b->wake);
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
    if (skip >= A || (off % A) + len > A) { /* I3 */
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

/* Where a result of len bytes goes, from the worker's position apos: aligned, not across the
 * arena's end, not over the pinned offsets (pin: apin). Each step moves forward; three at
 * most (the end of the arena and the pinned run are each passed once). */
static uint64_t place(uint64_t apos, uint64_t len, uint64_t A, uint64_t pin)
{
    uint64_t pos = FPP__ALIGN_UP(apos, FPP__ARENA_ALIGN);
    uint64_t p0 = (pin >> 32) * FPP__ARENA_ALIGN, p1 = p0 + (pin & UINT32_MAX) * FPP__ARENA_ALIGN;
    for (int i = 0; i < 4; i++) {
        uint64_t off = pos % A;
        if (off + len > A) {
            pos += A - off; /* the next lap */
            continue;
        }
        if (p1 > p0 && off < p1 && off + len > p0) {
            pos += p1 - off; /* past the pinned result */
            continue;
        }
        break;
    }
    if (pos % A + len > A) /* only a scribbled apin gets here: never write past the arena */
        pos += A - pos % A;
    return pos;
}

typedef struct room_wait {
    fpp__rarena_writer *a;
    uint64_t len;
    uint64_t pos;               /* where it goes, as of the last look */
    bool (*stop)(void *arg);
    void *arg;
} room_wait;

/* One look (I1): atail first (acquire), then apin; where the result goes, and whether it may
 * be written there now. */
static bool has_room(room_wait *r)
{
    fpp__rarena_writer *a = r->a;
    uint64_t tail = atomic_load_explicit(&a->b->atail, memory_order_acquire);
    uint64_t pin = atomic_load_explicit(&a->b->apin, memory_order_relaxed);
    r->pos = place(a->apos, r->len, a->size, pin);
    return r->pos + r->len - tail <= a->size;
}

/* Before a sleep: say what we wait for (need) and ring the parent, who may be asleep with the
 * room we need; then look (after arming: the parent's post after making room wakes us). */
static bool room_ready(void *arg, bool armed)
{
    room_wait *r = arg;
    if (r->stop(r->arg))
        return true;
    if (armed) {
        atomic_store_explicit(&r->a->b->need, r->pos + r->len, memory_order_relaxed);
        fpp__ec_post(&r->a->b->bell);
    }
    return has_room(r);
}

unsigned char *fpp__rarena_reserve(fpp__rarena_writer *a, size_t len, uint64_t *off, bool (*stop)(void *arg),
                                   void *arg)
{
    static const fpp__wait_policy room = {
        .spin_ns = FPP__ROOM_SPIN_NS, .relax = 1, .yield_ns = FPP__WORKER_SLEEP_MAX_NS,
        .yield_max = FPP__ROOM_YIELDS, .sleep_ns = FPP__WORKER_SLEEP_MAX_NS,
    };
    room_wait r = {.a = a, .len = len, .stop = stop, .arg = arg};
    if (!has_room(&r)) {
        fpp__ec *wake = &a->b->wake;
        fpp__waiter wt = {.ready = room_ready, .arg = &r, .words = &wake, .nwords = 1};
        do {
            if (stop(arg))
                return NULL;
            fpp__ec_await(&wt, &room, INT64_MAX);
            atomic_store_explicit(&a->b->need, 0, memory_order_relaxed);
        } while (!has_room(&r));
    }
    *off = r.pos;
    return a->arena + (r.pos % a->size);
}
