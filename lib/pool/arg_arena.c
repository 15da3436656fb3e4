/* pool/arg_arena.c: the argument arena, the one region every worker of a pool maps (read-only:
 * sealed against writes once the parent mapped it, pool/region.c), where arguments too large for
 * a queue cell are placed; and its allocator, a binary buddy allocator over the power-of-two
 * region, in blocks of FPP__BUDDY_MIN bytes and up.
 *
 * Only the parent allocates and frees, and all metadata (free lists, orders) lives in the
 * parent's own memory: a worker can scribble over argument bytes, never over the allocator.
 * Invariants: a block of order k starts at a multiple of (FPP__BUDDY_MIN << k); a free block is
 * on exactly one list, its head's order[] entry is k + 1, and its buddy is not also free at
 * order k (they would have merged). An arena of 2 * max_arg_size always fits one argument
 * once everything is free, so an argument of any allowed size is eventually placed. */
#include <string.h>
#include <sys/mman.h>

#include "pool/pool_int.h"

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

/* ------------------------------------------------------------ the arena */

/* The first 64 MiB of the arena get their pages at creation (no room is an FPP_ESYS there, not
 * a fault later); past that, each argument's pages as it is written. */
#define ARGS_PREFAULT_MAX ((size_t)64 << 20)

int fpp__args_create(fpp__pool *p)
{
    p->args.fd = -1;
    int rc = fpp__region_create(&p->args, "fpp-args", p->lay.args_size,
                                FPP__MIN(p->lay.args_size, ARGS_PREFAULT_MAX), p->shared);
    if (rc)
        return rc;
    /* The parent's mapping stays writable; every other is read-only for good. */
    rc = fpp__region_seal(&p->args, true);
    if (rc == 0)
        rc = fpp__buddy_init(&p->argbuddy, p->lay.args_size);
    return rc;
}

void fpp__args_destroy(fpp__pool *p, bool unmap)
{
    fpp__buddy_fini(&p->argbuddy);
    if (unmap)
        fpp__region_destroy(&p->args);
    else
        fpp__region_forget(&p->args);
}

int fpp__args_place(fpp__pool *p, fpp__flight *e, const fpp__job *j, fpp__cell *d)
{
    d->arg_len = (uint32_t)j->arg_len;
    d->arg_off = 0;
    e->arg_off = UINT64_MAX;
    e->arg_len = (uint32_t)j->arg_len;
    if (j->arg_len <= FPP__INLINE_ARG) {
        memset(d->arg, 0, sizeof d->arg);
        if (j->arg_len)
            memcpy(d->arg, j->arg, j->arg_len);
        return 0;
    }
    int64_t o = fpp__buddy_alloc(&p->argbuddy, j->arg_len);
    if (o < 0)
        return 1; /* full until tasks finish */
    unsigned char *dst = p->args.base + o;
    e->arg_off = (uint64_t)o;
#ifdef MADV_POPULATE_WRITE
    if (p->shared && (uint64_t)o + j->arg_len > ARGS_PREFAULT_MAX &&
        madvise((void *)((uintptr_t)dst & ~(uintptr_t)(FPP__PAGE - 1)),
                FPP__ALIGN_UP(j->arg_len + ((uintptr_t)dst & (FPP__PAGE - 1)), FPP__PAGE),
                MADV_POPULATE_WRITE) != 0) {
        fpp__args_release(p, e);
        return fpp__sys_error("madvise", "MADV_POPULATE_WRITE of an argument");
    }
#endif
    memcpy(dst, j->arg, j->arg_len);
    d->arg_off = (uint64_t)o;
    return 0;
}

void fpp__args_release(fpp__pool *p, fpp__flight *e)
{
    if (e->arg_off != UINT64_MAX)
        fpp__buddy_free(&p->argbuddy, e->arg_off, e->arg_len);
    e->arg_off = UINT64_MAX;
}
