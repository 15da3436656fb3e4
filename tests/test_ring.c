/* test_ring.c: the task ring's protocol, driven directly (lib/ring.c). */
#include "common.h"
#include "../lib/fpp_internal.h"

#define N 8
static fpp__cell cells[N];
static fpp__hdr hdr;

static void setup(void)
{
    fpp__ring_init(cells, N);
    atomic_store(&hdr.head, 0);
}

static fpp__cell desc(uint64_t ticket)
{
    fpp__cell c;
    memset(&c, 0, sizeof c);
    c.ticket = ticket;
    c.arg_len = 4;
    memcpy(c.arg, "abcd", 4);
    return c;
}

Test(ring, claims_in_publication_order, .init = setup)
{
    for (uint64_t p = 0; p < 3; p++) {
        fpp__cell d = desc(100 + p);
        cr_assert_eq(fpp__ring_push_parent(cells, N, p, &d), 0);
    }
    uint64_t pos;
    for (uint64_t p = 0; p < 3; p++) {
        cr_assert_eq(fpp__ring_claim_worker(&hdr, cells, N, 1, &pos), 1);
        cr_expect_eq(pos, p);
        cr_expect_eq(cells[pos % N].ticket, 100 + p);
        fpp__ring_release_worker(cells, N, pos, 1);
    }
    cr_expect_eq(fpp__ring_claim_worker(&hdr, cells, N, 1, &pos), 0, "empty now");
}

Test(ring, refuses_push_when_full, .init = setup)
{
    for (uint64_t p = 0; p < N; p++) {
        fpp__cell d = desc(p);
        cr_assert_eq(fpp__ring_push_parent(cells, N, p, &d), 0);
    }
    fpp__cell d = desc(99);
    cr_expect_eq(fpp__ring_push_parent(cells, N, N, &d), 1, "position N waits for position 0");
    uint64_t pos;
    cr_assert_eq(fpp__ring_claim_worker(&hdr, cells, N, 0, &pos), 1);
    cr_expect_eq(fpp__ring_push_parent(cells, N, N, &d), 1, "claimed but not released: still busy");
    fpp__ring_release_worker(cells, N, pos, 0);
    cr_expect_eq(fpp__ring_push_parent(cells, N, N, &d), 0);
}

Test(ring, revoke_wins_only_before_a_claim, .init = setup)
{
    fpp__cell d = desc(1);
    fpp__ring_push_parent(cells, N, 0, &d);
    fpp__ring_push_parent(cells, N, 1, &d);
    cr_expect_eq(fpp__ring_revoke_parent(cells, N, 0), 1);
    uint64_t pos;
    cr_assert_eq(fpp__ring_claim_worker(&hdr, cells, N, 0, &pos), 1);
    cr_expect_eq(pos, 1, "the revoked position is skipped");
    cr_expect_eq(fpp__ring_revoke_parent(cells, N, 1), 0, "already claimed");
}

Test(ring, reclaims_a_cell_whose_claimer_died, .init = setup)
{
    fpp__cell d = desc(1);
    fpp__ring_push_parent(cells, N, 0, &d);
    uint64_t pos;
    cr_assert_eq(fpp__ring_claim_worker(&hdr, cells, N, 3, &pos), 1);
    cr_expect_eq(fpp__ring_reclaim_parent(cells, N, 0, 2), 0, "not worker 2's");
    cr_expect_eq(fpp__ring_reclaim_parent(cells, N, 0, 3), 1);
    cr_expect_eq(fpp__ring_push_parent(cells, N, N, &d), 0, "the cell is free for the next lap");
}

Test(ring, scribbled_state_is_reported_not_trusted, .init = setup)
{
    atomic_store(&cells[0].state, 0xdeadbeefcafef00dULL);
    fpp__cell d = desc(1);
    cr_expect_eq(fpp__ring_push_parent(cells, N, 0, &d), FPP_ESTATE);
    uint64_t pos;
    cr_expect_eq(fpp__ring_claim_worker(&hdr, cells, N, 0, &pos), 0, "a worker takes nothing from garbage");
    atomic_store(&hdr.head, 123456789);
    cr_expect_eq(fpp__ring_claim_worker(&hdr, cells, N, 0, &pos), 0, "a scribbled head idles, never loops");
}
