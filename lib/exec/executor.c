/* exec/executor.c: the public executor calls: options and their defaults, construction through a
 * backend (exec/process_executor.c, exec/thread_executor.c, libfpp_mpi's), freeing, and the
 * sink finished jobs go up through. An executor freezes the function registry while it exists,
 * because its workers hold a copy of it. */
#include <string.h>
#include <unistd.h>

#include "exec/exec.h"
#include "pool/pool.h"

#define GIB ((size_t)1 << 30)

int fpp__opts_resolve(fpp_executor_opts *o, const fpp_executor_opts *in)
{
    static const fpp_executor_opts zero;
    *o = in ? *in : zero;
    if (o->workers < 0 || o->workers > FPP__MAX_WORKERS) {
        fpp__log(FPP_LOG_ERROR, "executor: workers = %d is out of range (0..%d)", o->workers, FPP__MAX_WORKERS);
        return FPP_EINVAL;
    }
    if (o->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = n < 1 ? 1 : n > FPP__MAX_WORKERS ? FPP__MAX_WORKERS : (int)n;
    }
    if (o->queue_capacity > ((size_t)1 << 20)) {
        fpp__log(FPP_LOG_ERROR, "executor: queue_capacity = %zu is over 1048576", o->queue_capacity);
        return FPP_EINVAL;
    }
    size_t q = o->queue_capacity ? o->queue_capacity : FPP__MAX((size_t)128, (size_t)64 * (size_t)o->workers);
    size_t p2 = 2;
    while (p2 < q)
        p2 <<= 1;
    o->queue_capacity = p2;
    if (o->max_arg_size > GIB || o->max_result_size > GIB) {
        fpp__log(FPP_LOG_ERROR, "executor: max_arg_size (%zu) and max_result_size (%zu) must be at most 1 GiB",
                 o->max_arg_size, o->max_result_size);
        return FPP_EINVAL;
    }
    if (!o->max_arg_size)
        o->max_arg_size = 64 * 1024;
    if (!o->max_result_size)
        o->max_result_size = 1024 * 1024;
    if (!o->worker_init && o->worker_init_arg_len) {
        fpp__log(FPP_LOG_ERROR, "executor: worker_init_arg_len = %zu without a worker_init", o->worker_init_arg_len);
        return FPP_EINVAL;
    }
    if (o->worker_init_arg_len && !o->worker_init_arg) {
        fpp__log(FPP_LOG_ERROR, "executor: worker_init_arg is NULL with a length of %zu", o->worker_init_arg_len);
        return FPP_EINVAL;
    }
    if (o->worker_init_arg_len > o->max_arg_size) {
        fpp__log(FPP_LOG_ERROR, "executor: worker_init_arg of %zu bytes exceeds max_arg_size (%zu bytes)",
                 o->worker_init_arg_len, o->max_arg_size);
        return FPP_ETOOBIG;
    }
    return 0;
}

/* Resolves the initializer's name and copies its bytes into the executor. */
static int init_resolve(fpp_executor *ex)
{
    ex->init_fn = -1;
    fpp_executor_opts *o = &ex->opts;
    const void *arg = o->worker_init_arg; /* the caller's bytes: copied below, never freed */
    o->worker_init_arg = NULL;
    if (!o->worker_init) {
        o->worker_init_arg_len = 0;
        return 0;
    }
    int id = fpp_lookup(o->worker_init);
    if (id < 0) {
        fpp__log(FPP_LOG_ERROR, "executor: worker_init names no registered function (\"%.64s\")", o->worker_init);
        return FPP_ENOFN;
    }
    ex->init_fn = id;
    o->worker_init = fpp_fn_name(id); /* lives as long as the process */
    if (o->worker_init_arg_len) {
        void *copy = fpp__malloc(o->worker_init_arg_len);
        if (!copy)
            return FPP_ENOMEM;
        memcpy(copy, arg, o->worker_init_arg_len);
        o->worker_init_arg = copy;
    }
    return 0;
}

/* ---------------------------------------------------------------- the sink */

void fpp__exec_finished(fpp_executor *ex, fpp__job *j) { ex->sink_ops->finished(ex->sink, j); }

bool fpp__exec_halted(const fpp_executor *ex) { return ex->sink && ex->sink_ops->halted(ex->sink); }

void fpp__exec_attach(fpp_executor *ex, void *sink, const fpp__sink_ops *ops)
{
    ex->sink = sink;
    ex->sink_ops = sink ? ops : NULL;
}

/* ---------------------------------------------------------------- creation */

int fpp__executor_create(fpp_executor **out, const fpp_executor_opts *opts, int (*start)(fpp_executor *))
{
    if (!out) {
        fpp__log(FPP_LOG_ERROR, "executor: NULL out pointer");
        return FPP_EINVAL;
    }
    *out = NULL;
    fpp_executor *ex = fpp__calloc(1, sizeof *ex);
    if (!ex)
        return FPP_ENOMEM;
    int rc = fpp__opts_resolve(&ex->opts, opts);
    if (rc == 0)
        rc = init_resolve(ex);
    else
        ex->opts.worker_init_arg = NULL;
    if (rc) {
        fpp__free((void *)ex->opts.worker_init_arg);
        fpp__free(ex);
        return rc;
    }
    ex->owner = fpp__proc_token();
    ex->owner_pid = (long)getpid();
    fpp__registry_freeze(+1);
    rc = start(ex);
    if (rc) {
        fpp__registry_freeze(-1);
        fpp__free((void *)ex->opts.worker_init_arg);
        fpp__free(ex);
        return rc;
    }
    *out = ex;
    return 0;
}

int fpp_process_executor(fpp_executor **out, const fpp_executor_opts *opts)
{
    return fpp__executor_create(out, opts, fpp__process_start);
}

int fpp_thread_executor(fpp_executor **out, const fpp_executor_opts *opts)
{
    return fpp__executor_create(out, opts, fpp__thread_start);
}

/* Only the creating process may use an executor; never from inside the log sink. */
static int check_caller(const fpp_executor *ex, const char *call)
{
    if (ex->owner != fpp__proc_token()) {
        fpp__log(FPP_LOG_ERROR, "%s: this executor belongs to process %ld (this is process %ld)", call,
                 ex->owner_pid, (long)getpid());
        return FPP_ESTATE;
    }
    if (fpp__log_in_sink()) {
        fpp__log(FPP_LOG_ERROR, "%s: called from inside the log sink", call);
        return FPP_ESTATE;
    }
    return 0;
}

void fpp_executor_free(fpp_executor *ex)
{
    if (!ex)
        return;
    if (ex->owner != fpp__proc_token()) {
        /* A fork of the creator, a worker, an atexit handler run by a task's exit(): release
         * this process's copy of the memory; signal, wait for and write to nothing shared. */
        fpp__log(FPP_LOG_WARN, "fpp_executor_free: this executor belongs to process %ld (this is process %ld); "
                 "releasing only this process's memory", ex->owner_pid, (long)getpid());
        if (ex->sink)
            ex->sink_ops->forget(ex->sink);
        ex->ops->destroy(ex, false);
        fpp__registry_freeze(-1);
        fpp__free(ex);
        return;
    }
    if (check_caller(ex, "fpp_executor_free") != 0)
        return;
    if (ex->sink && ex->sink_ops->detach(ex->sink) != 0)
        return; /* a map iterator freeing the executor under its own task manager */
    ex->ops->destroy(ex, true);
    fpp__registry_freeze(-1);
    fpp__free((void *)ex->opts.worker_init_arg);
    fpp__free(ex);
}

int fpp_executor_workers(const fpp_executor *ex)
{
    if (!ex) {
        fpp__log(FPP_LOG_ERROR, "fpp_executor_workers: NULL executor");
        return FPP_EINVAL;
    }
    int rc = check_caller(ex, "fpp_executor_workers");
    return rc ? rc : ex->opts.workers;
}
