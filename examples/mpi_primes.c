/* mpi_primes: counts the primes below N on every rank of an MPI job, with one task made to
 * crash on the rank that runs it.
 *
 *     mpirun -np 3 ./build/examples/mpi_primes [N] [range]
 *
 * Rank 0 runs the task manager on fpp_mpi_executor; every other rank serves. The numbers
 * below N (default 10^8) are cut into ranges (default 10^6 numbers); one task counts one
 * range with a small sieve. The task for range 42 dereferences NULL on its first attempt:
 * its worker process dies on whichever rank ran it, that rank goes on, and the task comes
 * back FPP_CRASHED with the rank in its message. The program sends that range again and
 * checks the total against the known count. */
#include <fpp_mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int my_rank;

typedef struct range {
    uint64_t lo, hi;
    int32_t crash; /* non-zero: crash instead of counting */
    int32_t pad;
} range;

typedef struct count {
    uint64_t primes;
    int32_t rank;
    int32_t pad;
} count;

/* Primes in [lo, hi): a sieve of the range by the primes up to sqrt(hi). */
static int count_primes(const void *arg, size_t len, fpp_out *out)
{
    range r;
    if (len != sizeof r)
        return fpp_out_fail(out, "want a range, got %zu bytes", len), 1;
    memcpy(&r, arg, sizeof r);
    if (r.crash) {
        volatile int *nowhere = NULL;
        *nowhere = 42; /* the injected crash: SIGSEGV in this worker process only */
    }
    uint64_t root = 1;
    while (root * root < r.hi)
        root++;
    unsigned char *small = calloc(root + 1, 1), *seg = calloc(r.hi - r.lo + 1, 1);
    if (!small || !seg) {
        free(small);
        free(seg);
        return fpp_out_fail(out, "out of memory"), 1;
    }
    for (uint64_t p = 2; p <= root; p++) {
        if (small[p])
            continue;
        for (uint64_t q = p * p; q <= root; q += p)
            small[q] = 1;
        uint64_t start = (r.lo + p - 1) / p * p;
        if (start < p * p)
            start = p * p;
        for (uint64_t q = start; q < r.hi; q += p)
            seg[q - r.lo] = 1;
    }
    count c = {0, my_rank, 0};
    for (uint64_t n = r.lo < 2 ? 2 : r.lo; n < r.hi; n++)
        c.primes += !seg[n - r.lo];
    free(small);
    free(seg);
    return fpp_out_set(out, &c, sizeof c);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    /* Every rank registers the same functions, in the same order, before anything else. */
    int f = fpp_register("count_primes", count_primes);

    if (my_rank != 0) {
        int rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL); /* until rank 0 frees its executor */
        MPI_Finalize();
        return rc == 0 ? 0 : 1;
    }
    if (nranks < 2) {
        fprintf(stderr, "mpi_primes: run it on 2 ranks or more: mpirun -np 3 %s\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000;
    uint64_t step = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
    if (n < 2 || step < 1000) {
        fprintf(stderr, "usage: mpi_primes [N >= 2] [range >= 1000]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    fpp_executor *ex;
    int rc = fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL); /* NULL: each rank one worker per CPU */
    if (rc) {
        fprintf(stderr, "fpp_mpi_executor: %s\n", fpp_strerror(rc));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    fpp_tm *tm;
    fpp_tm_opts o = {.error_policy = FPP_LOG}; /* a crash is logged, the rest goes on */
    fpp_tm_create(&tm, ex, &o);
    printf("counting primes below %llu in ranges of %llu on %d rank(s), %d worker(s) in all\n", (unsigned long long)n,
           (unsigned long long)step, nranks - 1, fpp_executor_workers(ex));

    double t0 = now_s();
    uint64_t tasks = 0;
    for (uint64_t lo = 0; lo < n; lo += step, tasks++) {
        range r = {lo, lo + step < n ? lo + step : n, tasks == 42, 0};
        fpp_submit(tm, f, &r, sizeof r);
    }
    uint64_t primes = 0, *per_rank = calloc((size_t)nranks, sizeof *per_rank);
    int crashes = 0;
    fpp_task *t;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        if (fpp_task_status(t) == FPP_DONE) {
            count c;
            memcpy(&c, fpp_task_result(t, NULL), sizeof c);
            primes += c.primes;
            if (c.rank > 0 && c.rank < nranks)
                per_rank[c.rank]++;
            continue;
        }
        /* The injected crash: the same range again, without the crash. */
        printf("task %lld: %s: %s\n", (long long)fpp_task_id(t), fpp_status_name(fpp_task_status(t)), fpp_task_error(t));
        crashes++;
        range r;
        memcpy(&r, fpp_task_arg(t, NULL), sizeof r);
        r.crash = 0;
        fpp_submit(tm, f, &r, sizeof r);
    }
    double dt = now_s() - t0;
    printf("%llu primes below %llu (%llu tasks, %d crashed and ran again, %.2f s)\n", (unsigned long long)primes,
           (unsigned long long)n, (unsigned long long)tasks, crashes, dt);
    for (int r = 1; r < nranks; r++)
        printf("  rank %d ran %llu task(s)\n", r, (unsigned long long)per_rank[r]);
    /* Known counts: pi(10^7) and pi(10^8). */
    uint64_t known = n == 10000000 ? 664579 : n == 100000000 ? 5761455 : 0;
    int ok = rc == 0 && (known == 0 || primes == known);
    if (!ok)
        printf("wrong: there are %llu\n", (unsigned long long)known);
    free(per_rank);
    fpp_tm_free(tm);
    fpp_executor_free(ex); /* every rank's fpp_mpi_serve returns 0 */
    MPI_Finalize();
    return ok ? 0 : 1;
}
