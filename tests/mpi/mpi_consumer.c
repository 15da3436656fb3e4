/* mpi_consumer.c: a program outside the tree, built against the *installed* fpp_mpi.h and
 * libfpp_mpi (pkg-config fpp-mpi, or CMake's find_package(fpp) and fpp::fpp_mpi), run under
 * mpiexec -n 3: 10,000 tasks with every result right, a crash that names its rank, and a task
 * whose MPI_Send is refused (the installed library's guard comes first in both link orders). */
#include <fpp_mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static int my_rank;

static int square(const void *a, size_t n, fpp_out *o)
{
    long long x;
    if (n != sizeof x)
        return 1;
    memcpy(&x, a, sizeof x);
    if (x < 0)
        raise(SIGSEGV);
    x *= x;
    return fpp_out_set(o, &x, sizeof x);
}

/* Sends one int to rank 0; returns MPI's error class (MPI_ERR_OTHER: refused by the guard). */
static int sender(const void *a, size_t n, fpp_out *o)
{
    (void)a;
    (void)n;
    int x = 1, cls = MPI_SUCCESS;
    int rc = MPI_Send(&x, 1, MPI_INT, 0, 5, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        MPI_Error_class(rc, &cls);
    return fpp_out_set(o, &cls, sizeof cls);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    int f = fpp_register("square", square);
    int g = fpp_register("sender", sender);
    if (my_rank != 0) {
        int rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL);
        MPI_Finalize();
        return rc != 0;
    }
    int failures = 0;
    fpp_executor *ex;
    if (fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL) != 0) {
        printf("mpi consumer: no executor\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    fpp_tm *tm;
    fpp_tm_opts o = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &o);
    for (long long i = -1; i < 10000; i++)
        fpp_submit(tm, f, &i, sizeof i);
    fpp_submit(tm, g, NULL, 0);
    fpp_task *t;
    int done = 0, crashed = 0, refused = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_fn(t) == g) {
            const int *cls = fpp_task_result(t, NULL);
            refused = cls && *cls == MPI_ERR_OTHER;
            continue;
        }
        long long x, r;
        memcpy(&x, fpp_task_arg(t, NULL), sizeof x);
        if (x < 0) {
            crashed += fpp_task_status(t) == FPP_CRASHED && strncmp(fpp_task_error(t), "rank ", 5) == 0;
            continue;
        }
        memcpy(&r, fpp_task_result(t, NULL), sizeof r);
        done += r == x * x;
    }
    failures += done != 10000 || crashed != 1 || !refused;
    printf("mpi consumer: %d right, %d crash named its rank, a task's MPI_Send %s: %s\n", done, crashed,
           refused ? "refused" : "NOT refused", failures ? "FAILED" : "all checks passed");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    MPI_Finalize();
    return failures != 0;
}
