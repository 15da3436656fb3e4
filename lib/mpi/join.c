/* mpi/join.c: the meeting of rank 0 and the serving ranks, once, when rank 0 creates its
 * executor. Every step is a collective on a duplicate of the user's communicator, started
 * nonblocking and waited for with naps (a rank may reach fpp_mpi_serve long before rank 0
 * reaches fpp_mpi_executor, and Open MPI's blocking collectives would spin all that time):
 *
 *   1. MPI_Comm_idup                         everyone
 *   2. Ibcast of the configuration's length, then of the configuration (rank 0's options,
 *      limits, the chunk size, the heartbeat period, a digest of its registered functions)
 *   3. each rank checks it and starts its local pool; Igather of one hello per rank (its
 *      verdict on itself, workers, pid, host, byte order, its own registry digest)
 *   4. rank 0 checks every hello; Ibcast of the verdict: 0 serve, else every side frees the
 *      duplicate and fails with that code.
 *
 * After step 4 succeeds, only point-to-point traffic flows (mpi_wire.c). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpi/mpi_int.h"

void fpp__mpi_fns_digest(uint32_t *n, uint64_t *hash)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a over the names, each followed by a NUL */
    uint32_t i = 0;
    for (const char *name; (name = fpp_fn_name((int)i)) != NULL; i++) {
        for (const char *c = name;; c++) {
            h = (h ^ (unsigned char)*c) * 0x100000001b3u;
            if (!*c)
                break;
        }
    }
    *n = i;
    *hash = h;
}

static int bcast(void *p, size_t n, MPI_Comm c, int me)
{
    MPI_Request r;
    int rc = fpp__mpi_check(MPI_Ibcast(p, (int)n, MPI_BYTE, 0, c, &r), "MPI_Ibcast", me);
    return rc ? rc : fpp__mpi_wait(&r, "MPI_Ibcast", me);
}

static int dup_comm(MPI_Comm comm, MPI_Comm *dup, int me)
{
    MPI_Request r;
    int rc = fpp__mpi_check(MPI_Comm_idup(comm, dup, &r), "MPI_Comm_idup", me);
    if (rc == 0)
        rc = fpp__mpi_wait(&r, "MPI_Comm_idup", me);
    if (rc == 0)
        rc = fpp__mpi_check(MPI_Comm_set_errhandler(*dup, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", me);
    return rc;
}

static int verdict(MPI_Comm *dup, int32_t v, int me)
{
    int rc = bcast(&v, sizeof v, *dup, me);
    if (rc == 0)
        rc = v;
    if (rc)
        MPI_Comm_free(dup);
    return rc;
}

int fpp__mpi_join_root(MPI_Comm comm, const fpp_executor_opts *raw, const fpp_executor_opts *res, size_t chunk,
                       uint32_t rank_timeout_ms, MPI_Comm *dup, fpp__mpi_hello **hellos, int *size)
{
    *hellos = NULL;
    int rc = dup_comm(comm, dup, 0);
    if (rc)
        return rc;
    MPI_Comm_size(*dup, size);

    size_t nlen = raw->worker_init ? strlen(raw->worker_init) + 1 : 0;
    size_t alen = raw->worker_init ? raw->worker_init_arg_len : 0;
    fpp__mpi_config cfg = {
        .magic = FPP__MPI_MAGIC,
        .version = FPP__MPI_VERSION,
        .endian = FPP__MPI_ENDIAN,
        .workers = raw->workers,
        .queue_capacity = raw->queue_capacity,
        .max_arg_size = res->max_arg_size,
        .max_result_size = res->max_result_size,
        .task_timeout_ms = res->task_timeout_ms,
        .max_tasks_per_worker = res->max_tasks_per_worker,
        .max_worker_rss_kib = res->max_worker_rss_kib,
        .keep_fds = res->keep_fds,
        .chunk = chunk,
        .init_name_len = (uint32_t)nlen,
        .init_arg_len = alen,
        .beat_ms = rank_timeout_ms ? (uint32_t)(FPP__MPI_BEAT_NS / 1000000) : 0,
        .rank_timeout_ms = rank_timeout_ms,
    };
    fpp__mpi_fns_digest(&cfg.nfns, &cfg.fns_hash);
    unsigned char *var = nlen ? malloc(nlen + alen) : NULL;
    fpp__mpi_hello *h = calloc((size_t)*size, sizeof *h);
    if ((nlen && !var) || !h) {
        /* The others wait in step 2: a configuration without magic tells them to give up. */
        cfg.magic = 0;
        cfg.refused = rc = FPP_ENOMEM;
    }
    if (var) {
        memcpy(var, raw->worker_init, nlen);
        if (alen)
            memcpy(var + nlen, raw->worker_init_arg, alen);
    }
    int brc = bcast(&cfg, sizeof cfg, *dup, 0);
    if (brc == 0 && rc == 0 && nlen)
        brc = bcast(var, nlen + alen, *dup, 0);
    free(var);
    rc = rc ? rc : brc;
    MPI_Request r;
    fpp__mpi_hello none = {0};
    if (rc == 0)
        rc = fpp__mpi_check(MPI_Igather(&none, sizeof none, MPI_BYTE, h, sizeof none, MPI_BYTE, 0, *dup, &r),
                            "MPI_Igather", 0);
    if (rc == 0)
        rc = fpp__mpi_wait(&r, "MPI_Igather", 0);
    if (rc) {
        free(h);
        MPI_Comm_free(dup);
        return rc;
    }

    int32_t v = 0;
    for (int i = 1; i < *size; i++) {
        fpp__mpi_hello *x = &h[i];
        x->host[sizeof x->host - 1] = '\0';
        if (x->endian != FPP__MPI_ENDIAN) {
            fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: rank %d runs on a machine of another byte order", i);
            v = v ? v : FPP_EINVAL;
        } else if (x->nfns != cfg.nfns || x->fns_hash != cfg.fns_hash) {
            fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: rank %d (%s) registered other functions (%u, rank 0: %u); "
                                    "every rank must register the same functions in the same order",
                     i, x->host, x->nfns, cfg.nfns);
            v = v ? v : FPP_EINVAL;
        } else if (x->rc) {
            fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: rank %d (%s, pid %d) could not start its pool: %s", i, x->host,
                     (int)x->pid, fpp_strerror(x->rc));
            v = v ? v : x->rc;
        }
    }
    rc = verdict(dup, v, 0);
    if (rc) {
        free(h);
        return rc;
    }
    *hellos = h;
    return 0;
}

int fpp__mpi_join_refuse(MPI_Comm comm, int why)
{
    MPI_Comm dup;
    int rc = dup_comm(comm, &dup, 0);
    if (rc)
        return rc;
    fpp__mpi_config cfg = {.refused = why}; /* no magic: "give up" */
    bcast(&cfg, sizeof cfg, dup, 0);
    MPI_Comm_free(&dup);
    return 0;
}

int fpp__mpi_join_rank_begin(MPI_Comm comm, MPI_Comm *dup, fpp__mpi_config *cfg, unsigned char **var)
{
    *var = NULL;
    *dup = MPI_COMM_NULL;
    int me = -1;
    MPI_Comm_rank(comm, &me);
    int rc = dup_comm(comm, dup, me);
    if (rc) {
        *dup = MPI_COMM_NULL;
        return rc;
    }
    rc = bcast(cfg, sizeof *cfg, *dup, me);
    if (rc == 0 && cfg->magic != FPP__MPI_MAGIC) {
        rc = cfg->refused < 0 ? cfg->refused : FPP_ESYS;
        fpp__log(FPP_LOG_ERROR, "rank %d: fpp_mpi_serve: rank 0 could not start its executor (%s)", me,
                 fpp_err_name(rc));
    }
    if (rc) {
        MPI_Comm_free(dup);
        return rc;
    }
    size_t vlen = cfg->init_name_len ? cfg->init_name_len + cfg->init_arg_len : 0;
    if (vlen) {
        *var = malloc(vlen);
        if (!*var) {
            /* A collective cannot be left half-way, nor received into less memory; and a rank
             * that cannot find a few bytes cannot serve either. */
            fpp__log(FPP_LOG_ERROR, "rank %d: fpp_mpi_serve: out of memory for rank 0's configuration", me);
            MPI_Abort(*dup, 1);
        }
        rc = bcast(*var, vlen, *dup, me);
        if (rc) {
            free(*var);
            *var = NULL;
            MPI_Comm_free(dup);
            return rc;
        }
        (*var)[cfg->init_name_len - 1] = '\0';
    }
    if (cfg->version != FPP__MPI_VERSION)
        return FPP_EINVAL; /* still owes its hello */
    return 0;
}

int fpp__mpi_join_rank_end(MPI_Comm *dup, const fpp__mpi_hello *mine)
{
    int me = -1;
    MPI_Comm_rank(*dup, &me);
    MPI_Request r;
    int rc = fpp__mpi_check(MPI_Igather(mine, sizeof *mine, MPI_BYTE, NULL, 0, MPI_BYTE, 0, *dup, &r),
                            "MPI_Igather", me);
    if (rc == 0)
        rc = fpp__mpi_wait(&r, "MPI_Igather", me);
    if (rc) {
        MPI_Comm_free(dup);
        return rc;
    }
    return verdict(dup, 0, me);
}
