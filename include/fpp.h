/* fpp.h: the one public header of fpp, a crash-isolated process pool for C functions.
 *
 * If it is not in this file, it is not API. Every call that can fail returns an int: 0 (or a
 * documented non-negative value) on success, a negative FPP_E* code on failure, plus one log
 * line saying why. Nothing in the library aborts or asserts on a caller's mistake.
 *
 * Threads: the registry, logging and executors may be used from any thread. One task manager
 * (fpp_tm) must be used from one thread at a time. Registered functions run in worker
 * processes (process executor) or worker threads (thread executor), never in the caller.
 *
 * Licence: see LICENSE. */
#ifndef FPP_H
#define FPP_H

#include <stddef.h>
#include <stdint.h>

#include "fpp_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FPP_API __attribute__((visibility("default")))
#define FPP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FPP_API
#define FPP_PRINTF(f, a)
#endif

/* ---------------------------------------------------------------- errors */

/* Each code once, with its message. Values are never renumbered or reused. */
#define FPP_ERRNO_MAP(XX)                                                   \
    XX(EINVAL, -1, "invalid argument")                                      \
    XX(ENOMEM, -2, "out of memory")                                         \
    XX(ENOFN, -3, "no function with that id")                               \
    XX(ETOOBIG, -4, "argument or result over its size limit")               \
    XX(ESYS, -5, "a system call failed")                                    \
    XX(ESTATE, -6, "call not allowed in this state")                        \
    XX(ETASK, -7, "a task failed under the raise policy")                   \
    XX(EINTR, -8, "stopped by SIGINT")                                      \
    XX(EINIT, -9, "a worker could not start: its initializer failed")       \
    XX(ETIMEDOUT, -10, "timed out waiting")

typedef enum fpp_errno {
#define FPP__ERR_ENUM(name, val, msg) FPP_##name = (val),
    FPP_ERRNO_MAP(FPP__ERR_ENUM)
#undef FPP__ERR_ENUM
} fpp_errno;

/* A constant string for every int: "success" for 0, "unknown error" for what is no code. */
FPP_API const char *fpp_strerror(int code);
/* The code's name ("FPP_EINVAL"), "FPP_OK" for 0, "FPP_UNKNOWN" otherwise. */
FPP_API const char *fpp_err_name(int code);

/* ---------------------------------------------------- registered functions */

typedef struct fpp_out fpp_out;

/* A task body. It runs in a worker with the argument bytes the caller gave; it sets its
 * result with fpp_out_set (or fpp_out_alloc) and returns 0. Non-zero, or a call of
 * fpp_out_fail, fails the task; its error is the message given, else "function returned N". */
typedef int (*fpp_fn)(const void *arg, size_t arg_len, fpp_out *out);

/* Registers fn under name (copied). Returns the id (>= 0, counting from 0), FPP_EINVAL for a
 * NULL or empty name, a NULL fn or a name already taken, FPP_ENOMEM, and FPP_ESTATE while an
 * executor exists: workers take a copy of the table when they start, so it is frozen then. */
FPP_API int fpp_register(const char *name, fpp_fn fn);
/* The id registered under name, or FPP_ENOFN (FPP_EINVAL for NULL). */
FPP_API int fpp_lookup(const char *name);
/* The name registered under id, or NULL. The string lives as long as the process. */
FPP_API const char *fpp_fn_name(int id);

/* Sets the task's result to a copy of len bytes at data (a later call replaces an earlier
 * one). Returns 0, FPP_EINVAL for a NULL out or NULL data with len > 0, FPP_ETOOBIG when len
 * is over max_result_size: the task then fails with a message naming both sizes. Callable
 * only from inside the task's function, on the out it was given. */
FPP_API int fpp_out_set(fpp_out *out, const void *data, size_t len);
/* Like fpp_out_set, but returns len bytes of result space for the function to fill in place
 * (no copy), or NULL (FPP_ETOOBIG: the task then fails as above). Valid until the function
 * returns or calls fpp_out_set/fpp_out_alloc again. */
FPP_API void *fpp_out_alloc(fpp_out *out, size_t len);
/* Fails the task with a printf-style message (cut at 511 bytes). Returns 0 or FPP_EINVAL. */
FPP_API int fpp_out_fail(fpp_out *out, const char *fmt, ...) FPP_PRINTF(2, 3);

/* ------------------------------------------------------------- executors */

typedef struct fpp_executor fpp_executor;

/* A zeroed struct means every default. New fields are only ever added at the end. */
typedef struct fpp_executor_opts {
    int workers;                   /* 0: number of online CPUs; 1..1024 */
    size_t queue_capacity;         /* slots in the task ring (rounded up to a power of two);
                                      0: 64 per worker, at least 128 */
    size_t max_arg_size;           /* 0: 64 KiB; at most 1 GiB */
    size_t max_result_size;        /* 0: 1 MiB; at most 1 GiB */
    unsigned task_timeout_ms;      /* 0: none. Process executor: the worker is killed; thread
                                      executor: the task is reported FPP_TIMEOUT and its thread
                                      is left to finish (its result is dropped) */
    unsigned max_tasks_per_worker; /* 0: never. Else a worker is replaced after N tasks */
    size_t max_worker_rss_kib;     /* 0: none. Else a worker grown past it is replaced */
    /* 0.2 */
    const char *worker_init;       /* NULL: none. A registered function's name, run once in
                                      every worker (process or thread) before its first task,
                                      with the bytes below; its result is ignored */
    const void *worker_init_arg;   /* copied at creation */
    size_t worker_init_arg_len;
    int keep_fds;                  /* non-zero: workers keep every fd open at creation (else
                                      only 0, 1 and 2) */
} fpp_executor_opts;

/* Creates an executor whose workers are processes forked from this one: a task that
 * crashes, exits or hangs takes down only its worker, which is replaced. Shared memory is
 * created with mode 0600 under an unguessable name and unlinked at once, so nothing is left
 * in /dev/shm whatever ends the process. Workers ignore SIGINT, die with the parent and are
 * always reaped. opts NULL: defaults. On success *out is the executor; on failure *out is NULL
 * and there is nothing to free. Returns 0, FPP_EINVAL (bad option, NULL out), FPP_ENOMEM,
 * FPP_ESYS (shm_open, ftruncate, mmap, fork... failed: the call and errno are logged). */
FPP_API int fpp_process_executor(fpp_executor **out, const fpp_executor_opts *opts);
/* Creates an executor whose workers are threads of this process, with the same interface.
 * This is the baseline, not the isolation: a crashing task takes the whole process down. */
FPP_API int fpp_thread_executor(fpp_executor **out, const fpp_executor_opts *opts);
/* Stops and reaps every worker and frees the memory. A task manager still attached is
 * freed first. NULL does nothing. Thread executor: waits for running functions to return. */
FPP_API void fpp_executor_free(fpp_executor *ex);
/* The number of workers (>= 1), or FPP_EINVAL. */
FPP_API int fpp_executor_workers(const fpp_executor *ex);

/* For language bindings: functions called around every fork() fpp makes (the fork server, in
 * the thread calling fpp_process_executor or, after the fork server died, in the thread
 * calling into the task manager; workers, inside the fork server): prepare before, parent in
 * the forking process after, child in the new process. Any may be NULL. Process-wide; set it
 * before creating executors. Returns 0. */
FPP_API int fpp_set_fork_hooks(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/* ---------------------------------------------------------- task manager */

typedef enum { FPP_RAISE = 0, FPP_LOG, FPP_IGNORE } fpp_policy;
enum {
    FPP_TM_NO_SIGINT = 1 << 0,    /* leave SIGINT to the application */
    FPP_TM_ORDERED = 1 << 1,      /* results in submission order, not completion order */
    FPP_TM_RETRY_FAILED = 1 << 2, /* retries apply to FPP_FAILED too */
    FPP_TM_PROGRESS = 1 << 3,     /* a live progress line on stderr when it is a terminal */
};

typedef struct fpp_tm_opts {
    fpp_policy error_policy; /* default FPP_RAISE */
    int monitor_interval_ms; /* 0: 1000; < 0: no monitor */
    size_t max_in_flight;    /* backpressure bound; 0: the ring's capacity plus 2 per worker;
                                at most 1 << 28 */
    int retain_completed;    /* non-zero: keep finished tasks for fpp_completed() */
    unsigned flags;          /* FPP_TM_* */
    /* 0.2 */
    unsigned retries;        /* a task that crashed or timed out runs again, up to this many
                                more times (with FPP_TM_RETRY_FAILED, failed tasks too);
                                at most 1000 */
    uint64_t expected_total; /* for the progress line's percentage and ETA; 0: unknown */
} fpp_tm_opts;

typedef struct fpp_tm fpp_tm;
typedef struct fpp_task fpp_task;

/* Creates a task manager in front of ex (one at a time per executor). On failure *out is NULL.
 * Returns 0, FPP_EINVAL, FPP_ENOMEM, FPP_ESTATE (ex already has a task manager). */
FPP_API int fpp_tm_create(fpp_tm **out, fpp_executor *ex, const fpp_tm_opts *opts);
/* Cancels what is unfinished, promptly (process executor: busy workers are killed and
 * replaced; thread executor: running functions are left to finish, their results dropped),
 * and frees every task. NULL does nothing. */
FPP_API void fpp_tm_free(fpp_tm *tm);

/* Submits a task: fn with a copy of arg_len bytes at arg. Returns its id (>= 0, counting from 0
 * in submission order, map items included). Blocks, collecting results meanwhile, while
 * max_in_flight tasks are unfinished. FPP_ENOFN, FPP_ETOOBIG (over max_arg_size), FPP_EINVAL
 * at once; FPP_ETASK (a task raised) or FPP_EINTR (SIGINT) if that happens while it waits. */
FPP_API int64_t fpp_submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len);

/* A map's input: sets *arg and *arg_len to the next item and returns 1, returns 0 at the end,
 * or a negative value for an error. The bytes need to stay valid only until the next call. */
typedef int (*fpp_next)(void *state, const void **arg, size_t *arg_len);

/* Maps fn over the items next yields. Lazy: returns at once; items are pulled, on the caller's
 * thread and inside the task manager's calls, only while unfinished tasks plus finished ones
 * not yet returned number fewer than max_in_flight, so a map over 10^9 items runs in constant
 * memory. An item over max_arg_size becomes a task failed with FPP_ETOOBIG's message. If next
 * returns an error, the map stops there (logged at ERROR), what it produced still completes,
 * and fpp_as_completed/fpp_run return that error once, when nothing else is left. Returns 0,
 * FPP_EINVAL, FPP_ENOFN, FPP_ETASK, FPP_EINTR. */
FPP_API int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state);

/* Waits for the next finished task, in completion order. Returns 1 with *task set; 0 when
 * nothing is left; FPP_ETASK under the raise policy (*task is the failed task); FPP_EINTR.
 * Without retain_completed, *task lives until the next fpp_as_completed or fpp_run. */
FPP_API int fpp_as_completed(fpp_tm *tm, fpp_task **task);
/* Finishes everything (results not retained are dropped): 0, FPP_ETASK or FPP_EINTR (or a
 * map iterator's error, see fpp_map). */
FPP_API int fpp_run(fpp_tm *tm);
/* With retain_completed: sets *tasks to the finished tasks in completion order and returns
 * their number. The array lives until the next call on tm. 0 (and *tasks NULL) otherwise. */
FPP_API size_t fpp_completed(fpp_tm *tm, fpp_task *const **tasks);
/* The task that raised, or NULL. Valid until fpp_tm_free. */
FPP_API const fpp_task *fpp_tm_failure(const fpp_tm *tm);

typedef struct fpp_stats {
    uint64_t submitted, done, failed, crashed, timed_out, cancelled, worker_restarts;
    size_t in_flight;
    uint64_t retried; /* 0.2: attempts run beyond each task's first */
} fpp_stats;
/* Counters since fpp_tm_create (worker_restarts: the executor's, since its creation). */
FPP_API void fpp_tm_stats(const fpp_tm *tm, fpp_stats *out);

/* ------------------------------------------------- tasks you can hold (0.2) */

typedef struct fpp_task_opts {
    void *user;          /* any pointer, returned by fpp_task_user */
    unsigned timeout_ms; /* 0: the executor's task_timeout_ms */
} fpp_task_opts;

/* fpp_submit with options; o NULL: none. */
FPP_API int64_t fpp_submit_ex(fpp_tm *tm, int fn, const void *arg, size_t arg_len,
                              const fpp_task_opts *o);
/* Waits for task id: 1 and *task (kept: release it); that task is then never returned by
 * fpp_as_completed. FPP_EINVAL: no such id; FPP_ESTATE: already returned by fpp_as_completed or
 * fpp_wait; FPP_ETASK, FPP_EINTR as fpp_as_completed. */
FPP_API int fpp_wait(fpp_tm *tm, int64_t id, fpp_task **task);
/* 1: cancelled (queued: never runs; running: its worker is killed and replaced on the process
 * executor, abandoned on the thread executor); 0: already finished; FPP_EINVAL: no such id.
 * The task comes back FPP_CANCELLED as usual. */
FPP_API int fpp_cancel(fpp_tm *tm, int64_t id);
/* fpp_as_completed that gives up after timeout_ms (< 0: waits for ever): FPP_ETIMEDOUT with
 * *task NULL. */
FPP_API int fpp_as_completed_for(fpp_tm *tm, fpp_task **task, int timeout_ms);
/* From any thread or a signal handler (async-signal-safe): the blocking call in progress
 * (fpp_submit waiting for room, fpp_wait, fpp_as_completed[_for], fpp_run), or the next such
 * call, returns FPP_EINTR as for Ctrl-C. Returns 0, or FPP_EINVAL for NULL. */
FPP_API int fpp_tm_interrupt(fpp_tm *tm);

/* ----------------------------------------------------------------- tasks */

typedef enum { FPP_DONE, FPP_FAILED, FPP_CRASHED, FPP_TIMEOUT, FPP_CANCELLED } fpp_status;

FPP_API int64_t fpp_task_id(const fpp_task *t);
FPP_API int fpp_task_fn(const fpp_task *t);
/* The argument bytes (NULL for an item over max_arg_size, whose *len still says its size). */
FPP_API const void *fpp_task_arg(const fpp_task *t, size_t *len);
FPP_API fpp_status fpp_task_status(const fpp_task *t);
/* The result bytes; NULL (and *len 0) unless FPP_DONE. */
FPP_API const void *fpp_task_result(const fpp_task *t, size_t *len);
/* The error message; NULL when FPP_DONE. */
FPP_API const char *fpp_task_error(const fpp_task *t);
/* For FPP_CRASHED by a signal: its number; else 0. */
FPP_API int fpp_task_signal(const fpp_task *t);
/* "done", "failed", "crashed", "timeout", "cancelled". */
FPP_API const char *fpp_status_name(fpp_status s);
/* 0.2: the user pointer given to fpp_submit_ex (NULL otherwise). */
FPP_API void *fpp_task_user(const fpp_task *t);
/* 0.2: 1 + the retries it took. */
FPP_API unsigned fpp_task_attempts(const fpp_task *t);
/* 0.2: t stays valid until fpp_task_release or fpp_tm_free; returns t. */
FPP_API fpp_task *fpp_task_keep(fpp_task *t);
/* 0.2: ends a kept task's life. NULL does nothing. */
FPP_API void fpp_task_release(fpp_task *t);

/* --------------------------------------------------------------- logging */

typedef enum { FPP_LOG_DEBUG, FPP_LOG_INFO, FPP_LOG_WARN, FPP_LOG_ERROR, FPP_LOG_OFF } fpp_log_level;
typedef void (*fpp_log_fn)(fpp_log_level level, const char *msg, void *user);

/* Sends log lines at min_level and above to fn (NULL: stderr, as "[HH:MM:SS tid] message").
 * The sink is never called from two threads at once, nor from a worker. */
FPP_API void fpp_log_set(fpp_log_fn fn, void *user, fpp_log_level min_level);

#ifdef __cplusplus
}
#endif
#endif /* FPP_H */
