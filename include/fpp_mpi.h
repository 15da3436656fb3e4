/* fpp_mpi.h: fpp across machines. Rank 0 of an MPI communicator runs the task manager on an
 * executor whose workers are the other ranks; every other rank serves, running the tasks in
 * a local fpp process executor. Link with libfpp_mpi (pkg-config fpp-mpi, CMake fpp::fpp_mpi);
 * libfpp itself never links MPI.
 *
 * The program is the same on every rank, and every rank registers the same functions in the
 * same order before creating its executor or serving (checked when they meet: a rank whose
 * table differs makes fpp_mpi_executor fail). Typical use:
 *
 *     MPI_Init(&argc, &argv);
 *     int f = fpp_register("work", work);            // every rank, same order
 *     int rank;
 *     MPI_Comm_rank(MPI_COMM_WORLD, &rank);
 *     if (rank == 0) {
 *         fpp_executor *ex;
 *         fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL);
 *         ... fpp_tm_create(&tm, ex, ...), fpp_submit / fpp_map, fpp_as_completed ...
 *         fpp_executor_free(ex);                     // every fpp_mpi_serve returns 0
 *     } else {
 *         fpp_mpi_serve(MPI_COMM_WORLD, NULL);
 *     }
 *     MPI_Finalize();
 *
 * Threads: MPI is called only from inside these calls and the task manager's calls on rank 0
 * (never from fpp's monitor or signal handler). With MPI_THREAD_SINGLE or FUNNELED, make them
 * from the thread that initialised MPI; with SERIALIZED, from one thread at a time; MULTIPLE
 * lets the application use MPI from other threads meanwhile. Traffic runs on a duplicate of
 * comm, so it never mixes with the application's own messages.
 *
 * Failure model: a task that crashes, exits or times out kills a worker process on its rank,
 * never the rank; it comes back FPP_CRASHED or FPP_TIMEOUT with the rank in its message
 * ("rank 2: worker 4312 killed by SIGSEGV while running task 17"). A serving rank that dies
 * (killed from outside, out of memory):
 *  - by default ends the whole job: MPI without fault tolerance (Open MPI 4, MPICH without
 *    ULFM) aborts every rank; mpirun then ends in about a second, every local worker dies with
 *    its rank and no shared memory is left behind;
 *  - is survived with a rank timeout (fpp_mpi_opts.rank_timeout_ms, fpp_mpi_executor_ex) when
 *    mpirun lets the other ranks live on: Open MPI 4's
 *        mpirun --enable-recovery --mca async_mpi_finalize 1 ...
 *    (--enable-recovery keeps the job running when a rank dies; without async_mpi_finalize 1,
 *    MPI_Finalize hung on a survivor in 5 of 23 runs here). No MPI call reports the death, and
 *    mpirun exits 0 all the same: rank 0 sees it as silence (below), logs it and counts it in
 *    fpp_stats.ranks_lost. After a loss the communicator has a dead rank, so a collective on
 *    it (MPI_Barrier, another fpp_mpi_executor on it) would wait for ever; serve once per job.
 *    A rank lost during fpp_mpi_executor itself (a collective meeting) is not survived.
 *    Open MPI 4.1.4's mpirun does not exit when the rank died on a host other than mpirun's
 *    where other ranks live on, though every rank has finished (README); under Open MPI,
 *    fpp_mpi_executor warns when mpirun's options and the rank timeout do not go together.
 * Rank 0 itself, or mpirun, dying ends the job whatever the options: that is what the task
 * journal is for (rerun the job with the same journal and only unfinished tasks run).
 * Ctrl-C on mpirun is such an end too: mpirun sends SIGTERM to every rank. Ctrl-C (SIGINT)
 * delivered to rank 0 itself is fpp's Ctrl-C: the task manager's call returns FPP_EINTR after
 * every rank stopped its workers.
 *
 * Tasks cannot call MPI. A worker is a fork of its rank and would share the rank's MPI
 * connections and shared memory (a task sending to rank 0 on MPI_COMM_WORLD crashed rank 0
 * inside Open MPI, or hung it, while its own call seemed to succeed). So libfpp_mpi defines
 * every MPI function through MPI's profiling interface (generated at build time from mpi.h):
 * in a worker process of any fpp process executor (and in whatever a task forks) each fails at
 * once with an error code of class MPI_ERR_OTHER whose MPI_Error_string says why, in the
 * calling task only, and is logged once per worker; elsewhere it is MPI's own (PMPI_*). This
 * covers point-to-point, collectives, one-sided, probes, communicator/group/window/file
 * management, attributes, MPI_Init, MPI_Finalize and MPI_Abort; local queries still answer in a
 * task: MPI_Comm_rank, MPI_Comm_size, MPI_Comm_remote_size, MPI_Comm_test_inter,
 * MPI_Initialized, MPI_Finalized, MPI_Get_processor_name, MPI_Get_version,
 * MPI_Get_library_version, MPI_Error_string, MPI_Error_class, MPI_Query_thread,
 * MPI_Is_thread_main (and MPI_Wtime, MPI_Wtick). Link libfpp_mpi before the MPI library
 * (pkg-config fpp-mpi and fpp::fpp_mpi do): where MPI's own functions come first,
 * fpp_mpi_executor and fpp_mpi_serve log a warning that tasks' calls are not refused. A task
 * that calls PMPI_* directly is not stopped.
 *
 * Licence: see LICENSE. */
#ifndef FPP_MPI_H
#define FPP_MPI_H

#include <mpi.h>

#include "fpp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* On rank 0 of comm (size >= 2): creates an executor whose workers are the other ranks' local
 * pools, for fpp_tm_create and fpp_executor_free like any other. Collective: every other rank
 * of comm must be calling fpp_mpi_serve meanwhile; this returns once they all answered.
 *
 * opts (NULL: defaults) apply to each rank's local process executor, except where that rank's
 * fpp_mpi_serve gives its own non-zero value; workers 0 means each rank's own CPU count.
 * max_arg_size and max_result_size are rank 0's for every rank; task_timeout_ms (and a task's
 * own timeout_ms) is enforced on the rank that runs the task. Tasks travel in batches and are
 * balanced by credits: each rank asks for more as its pool drains, holding about 10 ms of
 * work, so a slow rank keeps no backlog another could run. fpp_executor_workers() gives the
 * workers of all ranks together; the task manager's default max_in_flight covers every
 * rank's window.
 *
 * On failure *out is NULL, every rank's fpp_mpi_serve returns an error too, and there is
 * nothing to free. Returns 0, FPP_EINVAL (NULL out, MPI_COMM_NULL, a communicator of one
 * rank, called on a rank other than 0, bad options, a rank registered other functions),
 * FPP_ESTATE (MPI not initialised or finalised, or called from a thread MPI does not allow),
 * FPP_ENOMEM, FPP_ESYS (an MPI call failed, or a rank could not start its pool: logged). */
FPP_API int fpp_mpi_executor(fpp_executor **out, MPI_Comm comm, const fpp_executor_opts *opts);

/* Options of the MPI executor itself (fpp_mpi_executor_ex); zero: the defaults. */
typedef struct fpp_mpi_opts {
    unsigned rank_timeout_ms; /* 0 (default): no heartbeats; a rank that dies ends the job (MPI
                                 aborts it), or, where mpirun lets the others live on, leaves
                                 rank 0 waiting for it. Else at least 200: every serving rank
                                 sends a heartbeat at least every 100 ms, and a rank rank 0
                                 has heard nothing from for this long (while it was looking:
                                 see fpp_mpi_executor_ex) is lost. 1000 or more is wise on
                                 loaded machines and slow networks (a 64 MiB chunk must cross
                                 well within it) */
} fpp_mpi_opts;

/* fpp_mpi_executor with options of its own (mopts NULL: the defaults, as fpp_mpi_executor).
 * With rank_timeout_ms, a lost rank (silent for the timeout: killed, its machine gone, or only
 * stopped) is never waited for again:
 *  - the tasks it held end FPP_CRASHED ("rank 2 (host, pid 4312) lost: silent for 1000 ms
 *    while it held task 17"), an attempt like any crash: the task manager runs them on the
 *    other ranks while fpp_tm_opts.retries allow, else they fail with that message;
 *  - every request toward it is abandoned (its memory kept until the process ends), nothing is
 *    sent to it, and anything it still sends is dropped; the first such message proves it
 *    alive and gets it one notice nobody waits for (logged once). A rank that was only stopped
 *    or stalled finds, when it runs again, that it sent nothing for the timeout, and stops
 *    serving by itself (or on that notice): its fpp_mpi_serve returns FPP_ETIMEDOUT;
 *  - the loss is logged (FPP_LOG_ERROR) and counted in fpp_stats.ranks_lost; fpp_executor_free
 *    stops the other ranks as usual; with no rank left, tasks fail FPP_CRASHED.
 * No call of rank 0 blocks on a serving rank. Rank 0 counts silence only while it drives the
 * task manager: after it spent 100 ms or more elsewhere, a rank has the full timeout again
 * from then (messages may be waiting unread), so a loss is seen at most rank_timeout_ms after
 * the rank's last message once rank 0 waits for results. Returns as fpp_mpi_executor;
 * FPP_EINVAL also for a rank_timeout_ms from 1 to 199. */
FPP_API int fpp_mpi_executor_ex(fpp_executor **out, MPI_Comm comm, const fpp_executor_opts *opts,
                                const fpp_mpi_opts *mopts);

/* On every rank of comm but 0: serves rank 0's executor until rank 0 frees it, then returns 0
 * (call MPI_Finalize afterwards as usual). Tasks run in a local fpp process executor built
 * from local (NULL: rank 0's options; non-zero fields of local win, see fpp_mpi_executor), so
 * a crashing task kills a worker process here, never this rank. Blocks; sleeps when idle
 * (short naps, no busy wait). Its own log lines name the rank ("rank 2: ...").
 *
 * Returns 0 once rank 0 freed its executor; FPP_EINVAL (MPI_COMM_NULL, called on rank 0, bad
 * options, this rank's registered functions differ from rank 0's), FPP_ESTATE (MPI not
 * initialised), FPP_ENOMEM, FPP_ESYS (the local pool could not start, an MPI call failed),
 * FPP_ETIMEDOUT (rank 0 declared this rank lost, fpp_mpi_executor_ex: it was silent too long,
 * stopped for instance; its tasks ran elsewhere), or the error rank 0's fpp_mpi_executor
 * failed with. */
FPP_API int fpp_mpi_serve(MPI_Comm comm, const fpp_executor_opts *local);

#ifdef __cplusplus
}
#endif
#endif /* FPP_MPI_H */
