/* mpi/guard.c: no MPI in a task. A worker is a fork of its rank (through the keeper and the
 * fork server, pool/keeper.c): it inherits the rank's MPI state, shared-memory segments and
 * sockets included, so a task that calls MPI_Send writes into the rank's own transport (Open
 * MPI's shared memory: rank 0 then crashed in 3 of 4 runs or hung, issue 16 item 6) while its
 * call seems to succeed. So libfpp_mpi defines the MPI functions itself, through MPI's
 * profiling interface: in a pool process (core/owner.c's mark, set in the keeper right after
 * its fork and inherited by everything below it) each fails at once, in the calling task only,
 * with an error code of class MPI_ERR_OTHER; everywhere else it is MPI's own PMPI_ function.
 *
 * The wrappers are generated at build time from the <mpi.h> the library is compiled against
 * (cmake/mpi-guard-gen.sh): every "int MPI_*" function (point-to-point, collectives,
 * one-sided, probes, communicators, groups, windows, files, attributes, MPI_Init,
 * MPI_Finalize, MPI_Abort...) but a short list of local queries that read the process's own
 * memory (MPI_Comm_rank, MPI_Comm_size, MPI_Initialized, MPI_Error_string...), which tasks may
 * call. MPI_Wtime and the handle conversions return no error code and are not wrapped.
 *
 * Invariants: the check costs one load of a global (the mark) per MPI call in the MPI process;
 * nothing here runs MPI in a pool process; the error code is made once, in the MPI process,
 * before any pool is created (fpp__mpi_guard_setup), so every worker has it (MPI_ERR_OTHER
 * itself where no fpp_mpi call made it). What it does not stop: a task calling PMPI_* or
 * MPI's internals directly, or an application linked with libmpi before libfpp_mpi, where
 * MPI_* bind to libmpi (fpp__mpi_guard_setup logs a warning then). */
#include <dlfcn.h>
#include <unistd.h>

#include "mpi/mpi_int.h"

static int refused_code = MPI_ERR_OTHER;
static _Atomic bool said;

#define REFUSED_TEXT                                                                                                   \
    "fpp: MPI cannot be called by a task: tasks run in worker processes forked from their rank, which must not use "  \
    "the rank's MPI connections"

int fpp__mpi_refuse(const char *call)
{
    if (!atomic_exchange(&said, true))
        fpp__log(FPP_LOG_ERROR, "fpp_mpi: %s called by a task in worker process %ld: refused (tasks run in worker "
                                "processes forked from their rank, which must not use its MPI connections); every "
                                "MPI call but local queries fails there with MPI_ERR_OTHER (said once per worker)",
                 call, (long)getpid());
    return refused_code;
}

void fpp__mpi_guard_setup(void)
{
    static bool done; /* the MPI thread only, as every caller is */
    if (done || fpp__in_pool_process())
        return;
    done = true;
    int code;
    if (PMPI_Add_error_code(MPI_ERR_OTHER, &code) == MPI_SUCCESS &&
        PMPI_Add_error_string(code, REFUSED_TEXT) == MPI_SUCCESS)
        refused_code = code;
    /* Where do the application's MPI calls go? The same place as this library's own (the
     * global lookup scope): to these wrappers unless libmpi came first in the link. */
    Dl_info mine, bound;
    if (dladdr((void *)fpp__mpi_guard_setup, &mine) && dladdr((void *)MPI_Send, &bound) &&
        mine.dli_fbase != bound.dli_fbase)
        fpp__log(FPP_LOG_WARN, "fpp_mpi: MPI calls bind to %s, not to libfpp_mpi, so a task's MPI call is not "
                               "refused (and may crash this rank's MPI); link libfpp_mpi before the MPI library",
                 bound.dli_fname ? bound.dli_fname : "another library");
}
