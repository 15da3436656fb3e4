/* arena.c: the allocator of the argument arena, a binary buddy allocator over a power-of-two
 * region of the shared segment, in blocks of FPP__BUDDY_MIN bytes and up.
 *
 * Only the parent allocates and frees, and all metadata (free lists, orders) lives in the
 * parent's own memory: a worker can scribble over argument bytes, never over the allocator.
 * Invariants: a block of order k starts at a multiple of (FPP__BUDDY_MIN << k); a free block is
 * on exactly one list, its head's order[] entry is k + 1, and its buddy is not also free at
 * order k (they would have merged). An arena of 2 * max_arg_size always fits one argument
 * once everything is free, so an argument of any allowed size is eventually placed. */
#include <string.h>

#include "fpp_internal.h"

#define NIL UINT32_MAX

static void list_push(fpp__buddy *b, uint32_t k, uint32_t i)
{
    b->prev[i] = NIL;
    b->next[i] = b->head[k];
    if (b->head[k] != NIL)
        b->prev[b->head[k]] = i;
    b->head[k] = i;
    b->order[i] = (uint8_t)(k + 1);
}

static void list_remove(fpp__buddy *b, uint32_t k, uint32_t i)
{
    if (b->prev[i] != NIL)
        b->next[b->prev[i]] = b->next[i];
    else
        b->head[k] = b->next[i];
    if (b->next[i] != NIL)
        b->prev[b->next[i]] = b->prev[i];
    b->order[i] = 0;
}

int fpp__buddy_init(fpp__buddy *b, size_t size)
{
    memset(b, 0, sizeof *b);
    if (size < FPP__BUDDY_MIN || (size & (size - 1)) || size / FPP__BUDDY_MIN > UINT32_MAX / 2)
        return FPP_EINVAL;
    b->nblocks = (uint32_t)(size / FPP__BUDDY_MIN);
    b->max_order = (uint32_t)__builtin_ctz(b->nblocks);
    b->next = fpp__malloc(b->nblocks * sizeof *b->next);
    b->prev = fpp__malloc(b->nblocks * sizeof *b->prev);
    b->order = fpp__calloc(b->nblocks, 1);
    b->head = fpp__malloc((b->max_order + 1) * sizeof *b->head);
    if (!b->next || !b->prev || !b->order || !b->head) {
        fpp__buddy_fini(b);
        return FPP_ENOMEM;
    }
    for (uint32_t k = 0; k <= b->max_order; k++)
        b->head[k] = NIL;
    list_push(b, b->max_order, 0);
    return 0;
}

void fpp__buddy_fini(fpp__buddy *b)
{
    fpp__free(b->next);
    fpp__free(b->prev);
    fpp__free(b->order);
    fpp__free(b->head);
    memset(b, 0, sizeof *b);
}

static uint32_t order_for(size_t n)
{
    uint32_t k = 0;
    while (((size_t)FPP__BUDDY_MIN << k) < n)
        k++;
    return k;
}

int64_t fpp__buddy_alloc(fpp__buddy *b, size_t n)
{
    uint32_t want = order_for(n);
    if (want > b->max_order)
        return -1;
    uint32_t k = want;
    while (k <= b->max_order && b->head[k] == NIL)
        k++;
    if (k > b->max_order)
        return -1;
    uint32_t i = b->head[k];
    list_remove(b, k, i);
    while (k > want) { /* split, keeping the lower half */
        k--;
        list_push(b, k, i + (1u << k));
    }
    return (int64_t)i * FPP__BUDDY_MIN;
}

void fpp__buddy_free(fpp__buddy *b, uint64_t off, size_t n)
{
    uint32_t k = order_for(n);
    uint32_t i = (uint32_t)(off / FPP__BUDDY_MIN);
    while (k < b->max_order) {
        uint32_t buddy = i ^ (1u << k);
        if (b->order[buddy] != k + 1)
            break;
        list_remove(b, k, buddy);
        i &= ~(1u << k);
        k++;
    }
    list_push(b, k, i);
}
