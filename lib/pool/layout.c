/* pool/layout.c: where everything of a pool lies, computed once from the executor's options
 * (pool/layout.h has the shared structures and their build-time checks).
 *
 * One slot memory per worker: [block | task queue cells | result arena], page-aligned parts.
 * The queue holds the worker's share of queue_capacity, a power of two, 8 at least. The result
 * arena holds four of the largest results and two alignment units, which is what a worker needs
 * to always find room beside the one result the caller reads in place (pool/result_arena.c);
 * it is sparse: only pages written are backed. The argument arena, one for the pool, holds two of the largest
 * arguments (1 MiB at least), a power of two for its buddy allocator. */
#include <string.h>

#include "pool/layout.h"

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
    size_t per = (o->queue_capacity + (size_t)o->workers - 1) / (size_t)o->workers;
    l->qcells = (uint32_t)FPP__MAX(pow2_at_least(per), (size_t)8);
    l->max_arg = o->max_arg_size;
    l->max_result = o->max_result_size;
    l->cells_off = FPP__ALIGN_UP(sizeof(fpp__wblock), FPP__PAGE);
    l->arena_off = l->cells_off + FPP__ALIGN_UP((size_t)l->qcells * sizeof(fpp__cell), FPP__PAGE);
    l->arena_size = FPP__ALIGN_UP(4 * l->max_result + 2 * FPP__ARENA_ALIGN, FPP__PAGE);
    l->slot_size = l->arena_off + l->arena_size;
    l->args_size = FPP__MAX(pow2_at_least(2 * l->max_arg), (size_t)1 << 20);
    return 0;
}
