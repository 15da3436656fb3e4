/* slot.c: a worker slot's memory and the layout of a pool.
 *
 * One slot memory per worker: [block | task queue cells | result arena], page-aligned parts.
 * The block holds the worker's indices, its two event counts and its completion ring; the
 * queue holds the tasks the parent gave it (ring.c); the arena holds results too large for a
 * completion record (worker.c writes them, the parent takes them, harvest.c). A new worker
 * always gets new slot memory: nothing a dead worker wrote, nor any process it left behind
 * holding a descriptor, can reach its successor. The old memory lives on while results handed
 * out from its arena still point into it (references). The argument arena is one region for
 * the whole pool, written by the parent only.
 *
 * Sizes: the arena holds at least three of the largest results (so that one result held by
 * the caller never leaves a worker without room for its next), four when they are 16 MiB or
 * less; it is sparse: only pages written are backed. */
#include <stdio.h>
#include <string.h>

#include "fpp_internal.h"

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
    l->nworkers = (uint32_t)o->workers;
    /* queue_capacity is the whole pool's; each worker's queue gets its share, 8 at least. */
    size_t per = (o->queue_capacity + (size_t)o->workers - 1) / (size_t)o->workers;
    l->qcells = (uint32_t)FPP__MAX(pow2_at_least(per), (size_t)8);
    l->max_arg = o->max_arg_size;
    l->max_result = o->max_result_size;
    l->cells_off = FPP__ALIGN_UP(sizeof(fpp__wblock), FPP__PAGE);
    l->arena_off = l->cells_off + FPP__ALIGN_UP((size_t)l->qcells * sizeof(fpp__cell), FPP__PAGE);
    size_t lanes = l->max_result <= ((size_t)16 << 20) ? 4 : 3;
    l->arena_size = FPP__ALIGN_UP(lanes * l->max_result + 2 * FPP__ARENA_ALIGN, FPP__PAGE);
    l->slot_size = l->arena_off + l->arena_size;
    l->args_size = FPP__MAX(pow2_at_least(2 * l->max_arg), (size_t)1 << 20);
    return 0;
}

fpp__slotmem *fpp__slotmem_new(const fpp__layout *l, bool shared)
{
    fpp__slotmem *m = fpp__calloc(1, sizeof *m);
    if (!m)
        return NULL;
    /* Back the block and the queue now; the arena as results are written. */
    if (fpp__region_create(&m->r, "fpp-worker", l->slot_size, l->arena_off, shared) != 0 ||
        fpp__region_seal(&m->r, false) != 0) {
        fpp__region_destroy(&m->r);
        fpp__free(m);
        return NULL;
    }
    fpp__ring_init(fpp__slot_cells(m->r.base, l), l->qcells);
    atomic_init(&m->refs, 1);
    return m;
}

void fpp__slotmem_ref(fpp__slotmem *m) { atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed); }

void fpp__slotmem_unref(fpp__slotmem *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        fpp__region_destroy(&m->r);
        fpp__free(m);
    }
}
