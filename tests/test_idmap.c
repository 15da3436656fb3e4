/* test_idmap.c: the task id table (lib/idmap.c) against a plain array: a sliding window of
 * consecutive ids with stragglers that stay for a long time, random deletions, growth. */
#include "tm/tm.h"
#include <criterion/criterion.h>

Test(idmap, matches_a_plain_array_through_windows_stragglers_and_growth)
{
    enum { N = 200000 };
    static fpp_task tasks[N];
    static bool in[N];
    fpp__idmap m = {0};
    uint64_t x = 12345;
    int64_t lo = 0, next = 0;
    size_t live = 0;
    for (int round = 0; round < N; round++) {
        tasks[next].job.id = next;
        cr_assert_eq(fpp__idmap_put(&m, &tasks[next]), 0);
        in[next++] = true;
        live++;
        /* Retire mostly from the old end of the window, sometimes at random; one id in 997
         * stays for ever (a straggler: a long task, or one kept by fpp_wait never called). */
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int64_t victim = (x % 4) ? lo : lo + (int64_t)(x % (uint64_t)(next - lo));
        if (next - lo > 300 && in[victim] && victim % 997 != 0) {
            fpp__idmap_del(&m, victim);
            in[victim] = false;
            live--;
        }
        while (lo < next && !in[lo])
            lo++;
        if (lo < next && lo % 997 == 0 && next - lo > 300)
            lo++; /* walk past a straggler; it stays in the table */
        if (round % 1000 == 0) {
            cr_assert_eq(m.n, live);
            for (int64_t i = 0; i < next; i++)
                cr_assert_eq(fpp__idmap_get(&m, i), in[i] ? &tasks[i] : NULL, "id %lld", (long long)i);
            cr_assert_null(fpp__idmap_get(&m, next));
            cr_assert_null(fpp__idmap_get(&m, -1));
        }
    }
    for (int64_t i = 0; i < next; i++)
        if (in[i])
            fpp__idmap_del(&m, i);
    cr_assert_eq(m.n, 0);
    fpp__idmap_del(&m, 5); /* absent: nothing */
    fpp__idmap_fini(&m);
}
