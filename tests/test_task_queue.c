/* test_ring.c: a worker's task queue protocol, driven directly (lib/ring.c): publish, the
 * one-step claim, revoke racing claim, acknowledgement, and what scribbled states do. */
#include <pthread.h>

#include "common.h"
#include "pool/pool_int.h"

#define N 8
static fpp__cell cells[N];
static _Atomic uint64_t running;

static void setup(void)
{
    fpp__queue_init(cells, N);
    atomic_store(&running, 0);
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

Test(ring, claims_in_publication_order_and_copies_the_descriptor, .init = setup)
{
    for (uint64_t p = N; p < N + 3; p++) {
        fpp__cell d = desc(100 + p);
        cr_assert_eq(fpp__queue_publish(cells, N, p, &d), 0);
    }
    uint64_t head = N;
    for (uint64_t p = N; p < N + 3; p++) {
        fpp__cell got;
        cr_assert_eq(fpp__queue_claim(cells, N, &head, &got, &running), 1);
        cr_expect_eq(got.ticket, 100 + p);
        cr_expect_eq(memcmp(got.arg, "abcd", 4), 0);
        cr_expect_eq(atomic_load(&running), 100 + p, "the ticket is announced before the claim");
        cr_expect_eq(fpp__queue_claimed(cells, N, p), 1);
    }
    cr_expect_eq(head, N + 3);
    fpp__cell got;
    cr_expect_eq(fpp__queue_claim(cells, N, &head, &got, &running), 0, "empty now");
}

Test(ring, a_claim_frees_the_cell_in_the_same_step, .init = setup)
{
    for (uint64_t p = N; p < 2 * N; p++) {
        fpp__cell d = desc(p);
        cr_assert_eq(fpp__queue_publish(cells, N, p, &d), 0);
    }
    fpp__cell d = desc(99);
    cr_expect_eq(fpp__queue_publish(cells, N, 2 * N, &d), 1, "position 2N waits for position N");
    uint64_t head = N;
    fpp__cell got;
    cr_assert_eq(fpp__queue_claim(cells, N, &head, &got, &running), 1);
    /* No release step: a worker stopped right after its claim holds nothing the parent needs. */
    cr_expect_eq(fpp__queue_publish(cells, N, 2 * N, &d), 0, "claimed is free for the next lap");
    cr_expect_eq(fpp__queue_claimed(cells, N, N), 1, "a reused cell still tells that position N was claimed");
}

Test(ring, revoke_wins_only_before_a_claim_and_is_acknowledged, .init = setup)
{
    fpp__cell d = desc(1);
    fpp__queue_publish(cells, N, N, &d);
    fpp__queue_publish(cells, N, N + 1, &d);
    cr_expect_eq(fpp__queue_revoke(cells, N, N), 1);
    cr_expect_eq(fpp__queue_claimed(cells, N, N), -1);
    d = desc(9);
    cr_expect_eq(fpp__queue_publish(cells, N, 2 * N, &d), 1, "a revoked cell waits for the worker to pass it");
    uint64_t head = N;
    fpp__cell got;
    cr_assert_eq(fpp__queue_claim(cells, N, &head, &got, &running), 1);
    cr_expect_eq(head, N + 2, "the revoked position was acknowledged and skipped");
    cr_expect_eq(fpp__queue_revoke(cells, N, N + 1), 0, "already claimed");
    cr_expect_eq(fpp__queue_publish(cells, N, 2 * N, &d), 0, "acknowledged: free again");
}

static fpp__cell rcells[N];
static _Atomic int go, done_publishing;
static _Atomic long claimed_by_worker;

static void *racer(void *arg)
{
    (void)arg;
    uint64_t head = N;
    _Atomic uint64_t run;
    while (!atomic_load(&go))
        ;
    fpp__cell got;
    for (;;) {
        bool last = atomic_load(&done_publishing);
        while (fpp__queue_claim(rcells, N, &head, &got, &run))
            atomic_fetch_add(&claimed_by_worker, 1);
        if (last)
            break;
    }
    return NULL;
}

/* A claim and a revoke racing on the same cells: each task is the worker's or the parent's,
 * never both, never neither. */
Test(ring, claim_and_revoke_race_hands_each_task_to_exactly_one_side)
{
    fpp__queue_init(rcells, N);
    pthread_t th;
    pthread_create(&th, NULL, racer, NULL);
    atomic_store(&go, 1);
    long revoked = 0, published = 0;
    uint64_t pos = N;
    int64_t until = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    until = ts.tv_sec + 1;
    while (published < 100000) {
        fpp__cell d = desc(pos);
        if (fpp__queue_publish(rcells, N, pos, &d) == 0) {
            published++;
            if (fpp__queue_revoke(rcells, N, pos))
                revoked++;
            pos++;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ts.tv_sec > until + 20)
            break;
    }
    atomic_store(&done_publishing, 1);
    pthread_join(th, NULL);
    cr_expect_eq(published, 100000);
    cr_expect_eq(atomic_load(&claimed_by_worker) + revoked, published, "claimed %ld + revoked %ld != published %ld",
                 atomic_load(&claimed_by_worker), revoked, published);
    cr_expect_gt(revoked, 0, "the race was run");
}

Test(ring, scribbled_states_are_never_trusted, .init = setup)
{
    atomic_store(&cells[0].state, 0xdeadbeefcafef00dULL);
    fpp__cell d = desc(1);
    cr_expect_eq(fpp__queue_publish(cells, N, N, &d), 1, "the parent does not write over garbage");
    cr_expect_eq(fpp__queue_claimed(cells, N, N), -2);
    uint64_t head = N;
    fpp__cell got;
    cr_expect_eq(fpp__queue_claim(cells, N, &head, &got, &running), 0, "a worker takes nothing from garbage");
    cr_expect_eq(head, N, "and does not move on");
    cr_expect(!fpp__queue_free(cells, N, N), "nor does the parent see a free cell there");
}
