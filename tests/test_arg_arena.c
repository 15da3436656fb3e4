/* test_arena.c: the argument arena's buddy allocator (lib/arena.c). */
#include "common.h"
#include "pool/pool_int.h"

Test(arena, allocates_disjoint_aligned_blocks_until_full)
{
    fpp__buddy b;
    cr_assert_eq(fpp__buddy_init(&b, 4096), 0);
    int64_t a = fpp__buddy_alloc(&b, 300); /* 512-byte block */
    int64_t c = fpp__buddy_alloc(&b, 256);
    int64_t d = fpp__buddy_alloc(&b, 2048);
    cr_assert(a >= 0 && c >= 0 && d >= 0);
    cr_expect_eq(a % 512, 0);
    cr_expect_eq(d % 2048, 0);
    cr_expect(a + 512 <= c || c + 256 <= a);
    cr_expect(d + 2048 <= a || a + 512 <= d);
    cr_expect_eq(fpp__buddy_alloc(&b, 4096), -1, "no room for the whole arena");
    fpp__buddy_free(&b, (uint64_t)a, 300);
    fpp__buddy_free(&b, (uint64_t)c, 256);
    fpp__buddy_free(&b, (uint64_t)d, 2048);
    cr_expect_eq(fpp__buddy_alloc(&b, 4096), 0, "everything merged back");
    fpp__buddy_fini(&b);
}

Test(arena, survives_random_alloc_free_without_overlap)
{
    fpp__buddy b;
    cr_assert_eq(fpp__buddy_init(&b, 1 << 16), 0);
    unsigned char owner[1 << 16];
    memset(owner, 0, sizeof owner);
    int64_t off[64];
    size_t len[64];
    for (int i = 0; i < 64; i++)
        off[i] = -1;
    srand(7);
    for (int round = 0; round < 5000; round++) {
        int i = rand() % 64;
        if (off[i] >= 0) {
            memset(owner + off[i], 0, len[i]);
            fpp__buddy_free(&b, (uint64_t)off[i], len[i]);
            off[i] = -1;
        } else {
            len[i] = 1 + (size_t)(rand() % 3000);
            off[i] = fpp__buddy_alloc(&b, len[i]);
            if (off[i] >= 0) {
                size_t clash = 0;
                for (size_t j = 0; j < len[i]; j++)
                    clash += owner[off[i] + j] != 0;
                cr_assert_eq(clash, 0, "block at %lld overlaps a live one", (long long)off[i]);
                memset(owner + off[i], i + 1, len[i]);
            }
        }
    }
    for (int i = 0; i < 64; i++)
        if (off[i] >= 0)
            fpp__buddy_free(&b, (uint64_t)off[i], len[i]);
    cr_expect_eq(fpp__buddy_alloc(&b, 1 << 16), 0);
    fpp__buddy_fini(&b);
}
