/* test_mpi_guard.c: lib/mpi/guard.c without an MPI run. MPI is never initialised here, so a
 * call that got past the guard would reach Open MPI before MPI_Init, which aborts the process:
 * the task would crash instead of reporting the codes. (The guard within a real job, tasks
 * sending to rank 0, is mpi_scenarios' task_mpi.) */
#include <criterion/criterion.h>
#include <string.h>

#include "mpi/mpi_int.h"

enum { NCALLS = 12 };

/* Calls of every kind a task might make; the result is each call's return code, then what the
 * local queries said. */
static int calls(const void *a, size_t n, fpp_out *o)
{
    int rc[NCALLS + 2];
    char buf[64] = {0};
    int flag = 0, init = -1;
    MPI_Request req;
    MPI_Comm dup;
    MPI_Win win;
    MPI_Status st;
    int k = 0;
    rc[k++] = MPI_Send(buf, 8, MPI_BYTE, 0, 1, MPI_COMM_WORLD);                 /* point-to-point */
    rc[k++] = MPI_Isend(buf, 8, MPI_BYTE, 0, 1, MPI_COMM_WORLD, &req);
    rc[k++] = MPI_Recv(buf, 8, MPI_BYTE, 0, 1, MPI_COMM_WORLD, &st);
    rc[k++] = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st); /* probes */
    rc[k++] = MPI_Barrier(MPI_COMM_WORLD);                                         /* collectives */
    rc[k++] = MPI_Bcast(buf, 8, MPI_BYTE, 0, MPI_COMM_WORLD);
    rc[k++] = MPI_Win_create(buf, 64, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);     /* one-sided */
    rc[k++] = MPI_Put(buf, 8, MPI_BYTE, 0, 0, 8, MPI_BYTE, MPI_WIN_NULL);
    rc[k++] = MPI_Comm_dup(MPI_COMM_WORLD, &dup);                                   /* communicators */
    rc[k++] = MPI_Init(NULL, NULL);                                                 /* the process */
    rc[k++] = MPI_Finalize();
    rc[k++] = MPI_Abort(MPI_COMM_WORLD, 3);
    rc[k++] = MPI_Initialized(&init) == MPI_SUCCESS && init == 0; /* a local query: MPI's own answer */
    rc[k++] = fpp__in_pool_process();
    return fpp_out_set(o, rc, sizeof rc);
}

Test(mpi_guard, every_kind_of_mpi_call_fails_in_a_worker_and_only_there)
{
    cr_assert_geq(fpp__mpi_guarded_count, 200u, "%u functions guarded", fpp__mpi_guarded_count);
    cr_assert(!fpp__in_pool_process(), "the program is no pool process");
    int f = fpp_register("calls", calls);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 1};
    cr_assert_eq(fpp_process_executor(&ex, &eo), 0);
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
    cr_assert_eq(fpp_tm_create(&tm, ex, &to), 0);
    fpp_submit(tm, f, NULL, 0);
    fpp_task *t;
    cr_assert_eq(fpp_as_completed(tm, &t), 1);
    cr_assert_eq(fpp_task_status(t), FPP_DONE, "the task %s: %s", fpp_status_name(fpp_task_status(t)),
                 fpp_task_error(t) ? fpp_task_error(t) : "");
    size_t len;
    const int *rc = fpp_task_result(t, &len);
    cr_assert_eq(len, sizeof(int) * (NCALLS + 2));
    for (int k = 0; k < NCALLS; k++)
        cr_expect_eq(rc[k], MPI_ERR_OTHER, "call %d returned %d", k, rc[k]);
    cr_expect_eq(rc[NCALLS], 1, "MPI_Initialized was refused, or said MPI is initialised");
    cr_expect_eq(rc[NCALLS + 1], 1, "the worker knows it is a pool process");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}
