/* pool/slot.c: a worker slot's memory, [block | task queue | result arena] (pool/layout.c) in one
 * region, and its references. A new worker always gets new slot memory: nothing a dead worker
 * wrote, nor any process it left behind holding a descriptor, can reach its successor. The old
 * memory lives on while results handed out from its arena still point into it (each hold is a
 * reference, pool/result_arena.c); the slot's current worker is one more. */
#include <stdio.h>
#include <string.h>

#include "pool/pool_int.h"

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
    fpp__queue_init(fpp__slot_cells(m->r.base, l), l->qcells);
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

int fpp__slotmem_fd(const fpp__slotmem *m) { return m->r.fd; }

void fpp__slotmem_close_fd(fpp__slotmem *m) { fpp__region_close_fd(&m->r); }
