/* fpp.h: the one public header of fpp, a crash-isolated process pool for C functions.
 *
 * If it is not in this file, it is not API. Every call that can fail returns an int: 0 (or a
 * documented non-negative value) on success, a negative FPP_E* code on failure, plus one log
 * line saying why. Nothing in the library aborts or asserts on a caller's mistake.
 *
 * Threads: the registry, logging and executors may be used from any thread. One task manager
 * (fpp_tm) must be used from one thread at a time, except fpp_tm_stats (any thread, any time)
 * and fpp_tm_interrupt (any thread, or a signal handler). Registered functions run in worker
 * processes (process executor) or worker threads (thread executor), never in the caller.
 *
 * Processes and re-entry: only the process that created an executor may use it and its task
 * manager. From any other process (the child of a fork() of the parent, a task running in a
 * worker, an atexit handler run by a task's exit()) every call on them returns FPP_ESTATE ("this
 * executor belongs to process N") and touches nothing shared; fpp_executor_free and fpp_tm_free
 * there release only that process's copy of the memory. A call on a task manager made while
 * another call on it is in progress (a map iterator calling back) and any task manager or
 * executor call made from inside the log sink return FPP_ESTATE too (free calls: refused, with
 * a log line). The pure functions (fpp_strerror, fpp_err_name, fpp_lookup, fpp_fn_name,
 * fpp_status_name, the fpp_task_* accessors) may be called from anywhere.
 *
 * Licence: MIT, see LICENSE. */
#ifndef FPP_H
#define FPP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
    XX(ETIMEDOUT, -10, "timed out waiting")                                \
    XX(EJOURNAL, -11, "the task journal cannot be written or read")        \
    XX(EMISMATCH, -12, "the journal belongs to another run")

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
 * returns or calls fpp_out_set/fpp_out_alloc again. A result of 16 KiB or more is then handed
 * to the caller where it lies, never copied (see fpp_task_result). */
FPP_API void *fpp_out_alloc(fpp_out *out, size_t len);
/* Fails the task with a printf-style message (cut at 511 bytes). Returns 0 or FPP_EINVAL. */
FPP_API int fpp_out_fail(fpp_out *out, const char *fmt, ...) FPP_PRINTF(2, 3);

/* ------------------------------------------------------------- executors */

typedef struct fpp_executor fpp_executor;

/* A zeroed struct means every default. New fields are only ever added at the end. */
typedef struct fpp_executor_opts {
    int workers;                   /* 0: number of online CPUs; 1..1024 */
    size_t queue_capacity;         /* task queue slots of the whole pool, shared out among the
                                      workers (each gets a power of two, at least 8);
                                      0: 64 per worker, at least 128 */
    size_t max_arg_size;           /* 0: 64 KiB; at most 1 GiB */
    size_t max_result_size;        /* 0: 1 MiB; at most 1 GiB */
    unsigned task_timeout_ms;      /* 0: none. Counted from when a worker claims the task.
                                      Process executor: the worker is killed and replaced;
                                      thread executor: the task is reported FPP_TIMEOUT, its
                                      thread is abandoned (left to finish, its result dropped)
                                      and a new thread takes its place */
    unsigned max_tasks_per_worker; /* 0: never. Else a worker is replaced after N tasks */
    size_t max_worker_rss_kib;     /* 0: none. Else the worker's own growth (resident memory
                                      above what it had when it started; memory shared with
                                      the parent does not count, accurate to 10% + 1 MiB): a
                                      worker past it is replaced after the task that crossed it
                                      (which keeps its result), or within a second if idle.
                                      Process executor only. Its address space may grow by at
                                      most twice the cap: past that, a task's malloc returns
                                      NULL, and the task ends FPP_CRASHED (a message naming
                                      the cap) or FPP_FAILED if it handled the NULL itself */
    /* 0.2 */
    const char *worker_init;       /* NULL: none. A registered function's name, run once in
                                      every worker (process or thread) before its first task,
                                      with the bytes below; its result is ignored, its failure
                                      (non-zero, fpp_out_fail, or a crash) means that worker is
                                      not used. See fpp_process_executor for what follows. */
    const void *worker_init_arg;   /* copied at creation */
    size_t worker_init_arg_len;    /* at most max_arg_size */
    int keep_fds;                  /* non-zero: workers keep every descriptor the program had
                                      open when the executor was created (else only 0, 1, 2);
                                      fpp's own descriptors are never inherited */
} fpp_executor_opts;

/* Creates an executor whose workers are processes: a task that crashes, exits or hangs takes
 * down only its worker, which is replaced. What a worker sees:
 *  - the program as it was when this call ran: a fork server is forked once, here, in this
 *    thread, and every worker (the first ones, replacements, recycled ones) is forked from
 *    it. Memory, globals and files created later do not exist in any worker. A program that
 *    has threads now is forked once, never again; respawning costs the same whatever the
 *    program allocates later. Create executors early.
 *  - descriptors 0, 1, 2 only (every one open now with keep_fds), never fpp's own;
 *  - stdout and stderr flushed after every task, so a task's output reaches a pipe or a file;
 *  - every signal at its default disposition and unblocked, but SIGINT ignored (the parent
 *    decides about Ctrl-C); workers are in a process group of their own;
 *  - no memory of any other executor, and no memory of this one but its own slot (its task
 *    queue, its results) and, read-only, the arguments.
 * Nothing outlives the pool: no worker, no fork server, no process a task left behind (a
 * forked helper, a daemon()) survives fpp_executor_free or the death of this process, however
 * it dies and whatever the task did to its credentials or signals. A worker that is a copy
 * made by a task's fork() never runs another task. Workers are not this process's children
 * (they are the fork server's), so an application that reaps children itself cannot take
 * their exit status. The pool's memory has no name in any file system (sealed memfds): nothing
 * is ever left in /dev/shm, at any instant. opts NULL: defaults. On success *out is the
 * executor; on failure *out is NULL and there is nothing to free. Returns 0, FPP_EINVAL (bad
 * option, NULL out), FPP_ENOFN (worker_init names no registered function), FPP_ETOOBIG
 * (worker_init_arg over max_arg_size), FPP_ENOMEM, FPP_EINIT (the first workers' initializer
 * failed or crashed: its message is logged), FPP_ESYS (memfd_create, fallocate, mmap, fork...
 * failed: the call and errno are logged). Later, a worker whose initializer fails is not used;
 * after 5 workers in a row cannot start (initializer, or fork failing), every queued and
 * later task ends FPP_CRASHED "workers cannot start: <cause>" while no worker runs (no
 * thrashing: attempts back off to one a second; the first worker that starts ends this). */
FPP_API int fpp_process_executor(fpp_executor **out, const fpp_executor_opts *opts);
/* Creates an executor whose workers are threads of this process, with the same interface.
 * This is the baseline, not the isolation: a crashing task takes the whole process down. A
 * running function cannot be stopped: a task that times out or is cancelled while it runs is
 * abandoned, its thread left to finish on its own (touching no memory of the executor's) and
 * replaced at once. worker_init runs in each thread before its first task (FPP_EINIT as above). */
FPP_API int fpp_thread_executor(fpp_executor **out, const fpp_executor_opts *opts);
/* Stops and reaps every worker and frees the memory. A task manager still attached is detached
 * first: its unfinished tasks are cancelled (and the number logged), finished ones not yet
 * handed out are dropped, and it stays valid until fpp_tm_free, which the caller still calls;
 * meanwhile its calls return FPP_ESTATE, except fpp_completed, fpp_tm_stats, fpp_tm_failure,
 * and the kept, retained and current tasks, which stay readable. So both orders of freeing
 * work. NULL does nothing. Process executor: returns once the fork server has killed and
 * reaped every worker and everything they left. Thread executor: never waits for a running
 * function; its thread is abandoned and finishes on its own. */
FPP_API void fpp_executor_free(fpp_executor *ex);
/* The number of workers (>= 1), FPP_EINVAL for NULL, FPP_ESTATE from another process. */
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
    FPP_TM_NO_SIGINT = 1 << 0,    /* leave SIGINT to the application (fpp_tm_interrupt still
                                     works: call it from your own handler) */
    FPP_TM_ORDERED = 1 << 1,      /* fpp_as_completed returns tasks in id order, not completion
                                     order. Finished tasks held back behind an unfinished one
                                     (the reorder window) count toward max_in_flight, in
                                     fpp_map's pulling and in fpp_submit's blocking, so memory
                                     stays bounded; while later results wait behind a task for a
                                     whole interval, the monitor says so ("waiting on task 123
                                     for 40 s (57 finished task(s) held back)"). Tasks taken by
                                     fpp_wait are skipped. */
    FPP_TM_RETRY_FAILED = 1 << 2, /* retries apply to FPP_FAILED too (as FPP_RETRY_FAILED in
                                     retry_on) */
    FPP_TM_PROGRESS = 1 << 3,     /* when stderr is a terminal: one line on it, redrawn in place
                                     at most 10 times a second, e.g.
                                     "[#######.......] 41% 41,200/100,000 finished, 3 failed,
                                     2 crashed, 12.3k/s, ETA 0:05, last: task 17 "in/0042.bin"
                                     crashed": the tasks finished in any way, then, where not
                                     zero, fpp_stats' other outcomes in its words, the rate,
                                     the time left, and the last task that did not end done
                                     (bar, percentage and ETA need expected_total). It replaces the monitor lines (and shows
                                     even with the monitor off), is cleared before every log line
                                     and when the call that drove the tasks returns. Elsewhere:
                                     the monitor lines as before. Output you write to the
                                     terminal yourself meanwhile may be drawn over: print after
                                     the run, or log through fpp. */
    FPP_TM_RERUN_FAILED = 1 << 4, /* 0.3, with a journal: ids whose recorded outcome is a failure
                                     (FPP_FAILED, FPP_CRASHED, FPP_TIMEOUT) run again (GNU
                                     parallel's --resume-failed); without it they are skipped
                                     like successes */
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
                                more times (with FPP_TM_RETRY_FAILED, failed tasks too); at
                                most 1000. A retry keeps the task's id and runs in another
                                worker than the attempt before (process executor: the crashed
                                or killed one is gone anyway). Policies, counters, the monitor
                                and the caller see only the final outcome; a final failure's
                                error names the attempts: "crashed on 3 attempts; last: worker
                                4312 killed by SIGSEGV while running task 17". A task that never
                                reached a worker (over max_arg_size, cancelled) is not retried. */
    uint64_t expected_total; /* for the progress line's percentage and ETA; 0: unknown */
    /* 0.3 */
    unsigned retry_on;       /* the outcomes retries apply to: FPP_RETRY_* bits; 0: crashed and
                                timed out (plus failed with FPP_TM_RETRY_FAILED). An input that
                                always hangs costs one timeout, not one per attempt, with
                                FPP_RETRY_CRASHED alone. */
    /* 0.3: the task journal (see "The task journal" below) */
    const char *journal;     /* NULL: none. A file: created if missing; if it holds this run's
                                journal, the run resumes from it (copied at creation) */
    const char *journal_key; /* the caller's part of the run's fingerprint (NULL: ""), e.g. the
                                input's name and size; at most 4096 bytes (copied) */
    int journal_flush_ms;    /* finished outcomes are written and made durable this often;
                                0: 10; 1..60000 */
    size_t journal_result_max; /* 0: no result bytes are stored. Else a result of at most this
                                many bytes is stored with its task's record (larger ones: their
                                size only); at most 1 GiB */
} fpp_tm_opts;

/* 0.3: fpp_tm_opts.retry_on. */
enum {
    FPP_RETRY_FAILED = 1 << 1,  /* the function failed (returned non-zero, fpp_out_fail) */
    FPP_RETRY_CRASHED = 1 << 2, /* the worker died (a signal, exit(), a memory cap) */
    FPP_RETRY_TIMEOUT = 1 << 3, /* it ran over its timeout */
};

typedef struct fpp_tm fpp_tm;
typedef struct fpp_task fpp_task;

/* Creates a task manager in front of ex (one at a time per executor). On failure *out is NULL.
 * Returns 0, FPP_EINVAL (unknown policy, flags or retry_on bits, max_in_flight over 1 << 28, retries over
 * 1000, a journal option out of range or given without a journal), FPP_ENOMEM, FPP_ESTATE (ex
 * already has a task manager; another process; the journal is in use by another task manager,
 * of this process or another). With a journal: FPP_EMISMATCH (the file holds the journal of
 * another run: other function names or another key; the log line says which), FPP_EJOURNAL
 * (the file cannot be opened, created, read or locked, is no fpp journal, or is damaged before
 * its end: the log line names the call and errno, or the offset). */
FPP_API int fpp_tm_create(fpp_tm **out, fpp_executor *ex, const fpp_tm_opts *opts);
/* Cancels what is unfinished, promptly (process executor: busy workers are killed and
 * replaced; thread executor: running functions are left to finish, their results dropped),
 * logs how many tasks it cancelled (INFO), and frees every task, kept ones included: no task
 * pointer survives it. With a journal: what finished is written and made durable (fdatasync)
 * before it returns, and the file is closed (a failure is logged). Works before or after
 * fpp_executor_free. NULL does nothing. */
FPP_API void fpp_tm_free(fpp_tm *tm);

/* Submits a task: fn with a copy of arg_len bytes at arg. Returns its id (>= 0, counting from 0
 * in submission order, map items included). Blocks, collecting results meanwhile, while
 * max_in_flight tasks are unfinished. FPP_ENOFN, FPP_ETOOBIG (over max_arg_size), FPP_EINVAL
 * at once; FPP_ETASK (a task raised) or FPP_EINTR (SIGINT) if that happens while it waits. */
FPP_API int64_t fpp_submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len);

/* A map's input: sets *arg and *arg_len to the next item and returns 1, returns 0 at the end,
 * or a negative value for an error. The bytes are copied before the next call, so they need to
 * stay valid only until then; they must not change before it either. A counter done right
 * (the item is the value *before* the step, kept in the state, not a local):
 *
 *     struct count { int64_t next, end, item; };
 *     static int count_next(void *state, const void **arg, size_t *len)
 *     {
 *         struct count *c = state;
 *         if (c->next >= c->end)
 *             return 0;
 *         c->item = c->next++;  // not `*arg = &c->next; c->next++`: that hands out next + 1
 *         *arg = &c->item;
 *         *len = sizeof c->item;
 *         return 1;
 *     }
 *
 * The commonest maps need no iterator at all: fpp_map_range, fpp_map_array, fpp_map_lines. */
typedef int (*fpp_next)(void *state, const void **arg, size_t *arg_len);

/* Maps fn over the items next yields. Lazy: returns at once; items are pulled, on the caller's
 * thread and inside the task manager's calls, only while unfinished tasks plus finished ones
 * not yet returned number fewer than max_in_flight, so a map over 10^9 items runs in constant
 * memory. An item over max_arg_size becomes a task failed with FPP_ETOOBIG's message. If next
 * returns an error, the map stops there (logged at ERROR), what it produced still completes,
 * and fpp_as_completed/fpp_run return that error once, when nothing else is left. Returns 0,
 * FPP_EINVAL, FPP_ENOFN, FPP_ETASK, FPP_EINTR. */
FPP_API int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state);

/* 0.3: a map's options. */
enum {
    FPP_MAP_LABEL_TEXT = 1 << 0, /* each task's label is its argument read as text (a trailing
                                    newline or NUL left out; escaped and shortened as any
                                    label, see fpp_task_opts) */
};
typedef struct fpp_map_opts {
    unsigned flags; /* FPP_MAP_* */
    /* Each task's label: called right after next gave the item, with the same bytes; the text
     * it returns is copied (NULL or "": no label). Not with FPP_MAP_LABEL_TEXT. */
    const char *(*label)(void *state, const void *arg, size_t arg_len);
    /* Called once, on the caller's thread, when the map is done with state: after next
     * returned 0 or an error, or when the map is stopped (a raise, Ctrl-C, fpp_tm_free,
     * fpp_executor_free). Not called when fpp_map_ex fails: the state is still yours then. */
    void (*fini)(void *state);
} fpp_map_opts;
/* fpp_map with options (o NULL: none; read during the call only). Returns as fpp_map, and
 * FPP_EINVAL for unknown flags or a label function with FPP_MAP_LABEL_TEXT. */
FPP_API int fpp_map_ex(fpp_tm *tm, int fn, fpp_next next, void *state, const fpp_map_opts *o);

/* 0.3: maps with no iterator to write; lazy as fpp_map (constant memory), errors as fpp_map.
 * fpp_map_range: the int64_t values start, start + step, ... up to stop (not included; step
 * < 0 counts down), each the 8-byte argument of a task (read it with memcpy). FPP_EINVAL for
 * step 0. */
FPP_API int fpp_map_range(fpp_tm *tm, int fn, int64_t start, int64_t stop, int64_t step);
/* fpp_map_array: count elements of size bytes each from base, each a task's argument. The
 * array is read as the map pulls, so it must stay as it is until the map has ended (fpp_run or
 * fpp_as_completed returned 0, or fpp_tm_free). FPP_EINVAL for base NULL with count > 0 or
 * size 0. */
FPP_API int fpp_map_array(fpp_tm *tm, int fn, const void *base, size_t count, size_t size);
/* fpp_map_lines: each line of in (up to "\n", which is left out, as is a "\r" before it) is
 * a task's argument, followed by a NUL byte counted in its length, so the function may use it
 * as a C string; each task is labelled with its line. in is read as the map pulls and is not
 * closed: close it after the map has ended (as fpp_map_array). A read error ends the map with
 * FPP_ESYS (logged with errno). FPP_EINVAL for in NULL. */
FPP_API int fpp_map_lines(fpp_tm *tm, int fn, FILE *in);

/* Waits for the next finished task, in completion order (FPP_TM_ORDERED: in id order). Blocks,
 * driving the executor, until one is ready. Returns 1 with *task set; 0 when nothing is left;
 * FPP_ETASK under the raise policy (*task is the failed task); FPP_EINTR (Ctrl-C or
 * fpp_tm_interrupt). *task lives until the next fpp_as_completed, fpp_as_completed_for or
 * fpp_run on tm, unless kept (fpp_task_keep) or retained (retain_completed: until fpp_tm_free).
 * In AddressSanitizer builds, a task used after its life ended is reported. */
FPP_API int fpp_as_completed(fpp_tm *tm, fpp_task **task);
/* Finishes everything (results not retained or kept are dropped): 0, FPP_ETASK or FPP_EINTR
 * (or a map iterator's error, see fpp_map). Blocks until nothing is left. */
FPP_API int fpp_run(fpp_tm *tm);
/* With retain_completed: sets *tasks to the finished tasks in completion order and returns
 * their number. The array lives until the next call on tm. 0 (and *tasks NULL) otherwise.
 * Still works after fpp_executor_free detached tm. */
FPP_API size_t fpp_completed(fpp_tm *tm, fpp_task *const **tasks);
/* The task that raised, or NULL. Valid until fpp_tm_free. */
FPP_API const fpp_task *fpp_tm_failure(const fpp_tm *tm);

/* The words for a task's outcome, here, in the progress line and in log lines: done (its
 * function returned a result), failed (it returned non-zero or called fpp_out_fail, or never
 * ran: its argument too large), crashed (its worker died), timed out, cancelled; "finished"
 * is any of them. */
typedef struct fpp_stats {
    uint64_t submitted, done, failed, crashed, timed_out, cancelled, worker_restarts;
    size_t in_flight;
    uint64_t retried; /* 0.2: attempts run beyond each task's first */
    uint64_t ranks_lost; /* 0.3: MPI executor (fpp_mpi.h): serving ranks declared lost, since
                            its creation; 0 for other executors */
    uint64_t skipped; /* 0.3: ids the journal says an earlier run finished, not run again and
                         counted nowhere else (submitted + skipped = ids issued) */
} fpp_stats;
/* Counters since fpp_tm_create (worker_restarts, ranks_lost: the executor's, since its
 * creation; done, failed, crashed, timed_out, cancelled: final outcomes only). May be called
 * from any thread while another drives tm (never blocks; a snapshot never shows more tasks
 * finished than submitted). */
FPP_API void fpp_tm_stats(const fpp_tm *tm, fpp_stats *out);

/* ------------------------------------------------- tasks you can hold (0.2) */

typedef struct fpp_task_opts {
    void *user;          /* any pointer, returned by fpp_task_user */
    unsigned timeout_ms; /* 0: the executor's task_timeout_ms */
    /* 0.3: what you know the task by (a file name, a key), copied. Every line that names the
     * task uses it: `task 17 "in/0042.bin"` in its error (fpp_task_error), the log policy's
     * line, the monitor's and the progress line. Stored escaped (a quote, a backslash, control
     * bytes and bytes that are not UTF-8 as \", \\, \n, \xNN...) and, past FPP_LABEL_MAX
     * bytes, shortened in the middle ("in/very/long/...0042.bin"). NULL or "": none. */
    const char *label;
} fpp_task_opts;
#define FPP_LABEL_MAX 80 /* a stored label's longest text, in bytes */

/* fpp_submit with options; o NULL: none (o is read during the call only). Returns and blocks
 * as fpp_submit. The user pointer is never dereferenced by fpp. */
FPP_API int64_t fpp_submit_ex(fpp_tm *tm, int fn, const void *arg, size_t arg_len,
                              const fpp_task_opts *o);
/* Waits for task id, driving the executor meanwhile; other tasks go on finishing and still come
 * out of fpp_as_completed, once each. Returns 1 and *task, which is kept (it lives until
 * fpp_task_release or fpp_tm_free) and is never returned by fpp_as_completed. FPP_EINVAL: an id
 * never issued (or task NULL); FPP_ESTATE: already handed out (by fpp_as_completed or
 * fpp_wait) or dropped by fpp_run; FPP_ETASK (*task is the failed task), FPP_EINTR as
 * fpp_as_completed. With FPP_TM_ORDERED the waited task is skipped in the order. */
FPP_API int fpp_wait(fpp_tm *tm, int64_t id, fpp_task **task);
/* Cancels task id. 1: cancelled (queued: it never runs; running: its worker is killed and
 * replaced on the process executor, abandoned on the thread executor, whose thread finishes the
 * function and drops the result); it comes back FPP_CANCELLED through fpp_as_completed as usual
 * and counts in fpp_stats.cancelled, not as a failure. 0: already finished (or handed out, or
 * everything was cancelled by a raise or an interrupt); FPP_EINVAL: an id never issued. Does
 * not block beyond harvesting what is ready. */
FPP_API int fpp_cancel(fpp_tm *tm, int64_t id);
/* fpp_as_completed that gives up after timeout_ms: FPP_ETIMEDOUT with *task NULL. 0: looks
 * once without waiting; < 0: waits for ever. Otherwise as fpp_as_completed (0 when nothing is
 * left, never FPP_ETIMEDOUT then). */
FPP_API int fpp_as_completed_for(fpp_tm *tm, fpp_task **task, int timeout_ms);
/* From any thread or a signal handler (async-signal-safe: atomics and one futex wake; it never
 * logs or blocks): the blocking call in progress (fpp_submit waiting for room, fpp_wait,
 * fpp_as_completed[_for], fpp_run), or else the next call of those or fpp_submit, returns
 * FPP_EINTR as for Ctrl-C (process executor: within 100 ms, workers stopped; thread executor:
 * once the functions running then have returned, as threads cannot be stopped, so a function
 * that never returns keeps it waiting (a second Ctrl-C ends the program); unfinished tasks
 * cancelled; every later call returns FPP_EINTR until fpp_tm_free). Unlike Ctrl-C it leaves the
 * SIGINT disposition alone. Returns 0, FPP_EINVAL for NULL, FPP_ESTATE from another process or
 * after fpp_executor_free. Must not race with fpp_tm_free or fpp_executor_free. */
FPP_API int fpp_tm_interrupt(fpp_tm *tm);

/* ----------------------------------------------------------------- tasks */

typedef enum { FPP_DONE, FPP_FAILED, FPP_CRASHED, FPP_TIMEOUT, FPP_CANCELLED } fpp_status;

FPP_API int64_t fpp_task_id(const fpp_task *t);
FPP_API int fpp_task_fn(const fpp_task *t);
/* The argument bytes (NULL for an item over max_arg_size, whose *len still says its size). */
FPP_API const void *fpp_task_arg(const fpp_task *t, size_t *len);
FPP_API fpp_status fpp_task_status(const fpp_task *t);
/* The result bytes; NULL (and *len 0) unless FPP_DONE. Valid as long as the task lives. A
 * result of 16 KiB or more points where the worker wrote it (no copy): the space stays the
 * task's while it lives; results not yet handed out are moved to the heap if a worker needs
 * the room, and fpp_task_keep moves a kept task's. So submitting thousands of large-result
 * tasks before reading any holds them all in memory (as copies): read as you submit, or map.
 * 0.3: a result handed out in place lies in the pool's memory, which only the process that
 * created the pool has: in any other process (the child of a fork()) it is NULL (*len 0), with
 * a log line; fpp_task_keep it before forking to read it in a child. Smaller results, and kept
 * ones, are the task's own memory and readable in a child. */
FPP_API const void *fpp_task_result(const fpp_task *t, size_t *len);
/* The error message; NULL when FPP_DONE. */
FPP_API const char *fpp_task_error(const fpp_task *t);
/* For FPP_CRASHED by a signal: its number; else 0. */
FPP_API int fpp_task_signal(const fpp_task *t);
/* "done", "failed", "crashed", "timed out" (0.2: "timeout"), "cancelled": the words of fpp_stats
 * and of every line fpp writes. */
FPP_API const char *fpp_status_name(fpp_status s);
/* 0.2: the user pointer given to fpp_submit_ex (NULL otherwise, and for NULL). */
FPP_API void *fpp_task_user(const fpp_task *t);
/* 0.3: the task's label as stored (escaped, shortened: see fpp_task_opts), or NULL. */
FPP_API const char *fpp_task_label(const fpp_task *t);
/* 0.2: 1 + the retries it took (0 for NULL). */
FPP_API unsigned fpp_task_attempts(const fpp_task *t);
/* 0.2: keeps a task you hold (from fpp_as_completed, fpp_completed or fpp_tm_failure) alive
 * past the call that would end its life: it stays valid until as many fpp_task_release calls
 * as fpp_task_keep calls, or fpp_tm_free. It survives fpp_as_completed, fpp_run and
 * fpp_executor_free. Keeping may move the result bytes out of the worker's memory into the
 * task's own: read fpp_task_result after keeping, not before. A call on t's task manager: same
 * thread and process rules. Returns t, or NULL (with a log line) for NULL, a task whose life has
 * ended, or when the call is refused (another process, inside the log sink, during another
 * call on its task manager). */
FPP_API fpp_task *fpp_task_keep(fpp_task *t);
/* 0.2: undoes one fpp_task_keep; the last one ends the task's life (unless it is retained or
 * the task that raised). NULL does nothing. A task not kept, or released once too often: a log
 * line and nothing else (in AddressSanitizer builds too: the release checks before touching a
 * recycled task). A released task's memory is reused: using it afterwards reads another task. */
FPP_API void fpp_task_release(fpp_task *t);

/* ------------------------------------------------------ the task journal (0.3) */

/* With fpp_tm_opts.journal set, a task manager appends each task's final outcome to that file
 * when the task finishes, keyed by its id: status, attempts, signal, run time, error text and,
 * up to journal_result_max bytes, the result. Ids count from 0 in submission order, map items
 * included, so a rerun of the same program gives each input the same id (a map's ids are its
 * input positions). Cancelled tasks (fpp_cancel, a raise, Ctrl-C, fpp_tm_free) are not
 * recorded: they did not finish.
 *
 * Resume. A task manager created on a journal of the same run (the same registered function
 * names, in the same order, and the same journal_key) skips every id recorded as finished:
 * successes always, failures unless FPP_TM_RERUN_FAILED. fpp_submit of a skipped id returns
 * its id at once and runs nothing; a map calls its iterator for every input, from the first,
 * and runs only the inputs not finished. Skipped tasks are not handed out again: no
 * fpp_as_completed, fpp_completed, policy or retry sees them; fpp_stats.skipped counts them
 * (not submitted, done or failed); fpp_wait on one returns FPP_ESTATE with a log line saying an
 * earlier run finished it; their recorded outcome and result are read with fpp_journal_find.
 * A journal of another run is refused (FPP_EMISMATCH), never applied; one task manager at a
 * time may write a journal (an exclusive lock).
 *
 * Writing. Outcomes are buffered in memory and written (write) and made durable (fdatasync)
 * every journal_flush_ms (10 ms by default) by a thread of the task manager, which never stalls
 * the thread driving it; and at once when a raise stops the run, on Ctrl-C or
 * fpp_tm_interrupt, when the executor is freed, and in fpp_tm_free. When a blocking call finds
 * nothing left (fpp_run returns 0, fpp_as_completed 0), every outcome is written (it survives
 * the death of the process; fdatasync follows within a period). A success on its first attempt
 * that took under 10 ms, with no result to store, costs a bit in memory, and a run of them is
 * stored as one range per flush (a single record remains for each task still in flight when a
 * range was written, and for every other outcome): a no-op map leaves about 70 bytes per
 * thousand tasks (fpp-bench), tens of megabytes for 10^9, not the 16 GB of a record per task.
 * Run times are taken with CLOCK_MONOTONIC_COARSE (a quarter of CLOCK_MONOTONIC's cost; it
 * advances by the kernel's tick, 4 ms on a 250 Hz kernel): a record's start is precise to a
 * tick, its run time to a tick at worst. A journal that cannot be written
 * (disk full, I/O error, a failed fdatasync) stops the run: the blocking call in progress, or
 * the next call, returns FPP_EJOURNAL (as FPP_ETASK for a raise: unfinished tasks cancelled,
 * every later call FPP_EJOURNAL until fpp_tm_free), with one ERROR line naming the file, the
 * call and errno. Outcomes not yet written then are not recorded: they run again on resume.
 *
 * Guarantees:
 *  - each task runs at least once: an id is skipped only if its outcome is in the journal;
 *  - each is recorded exactly once: one outcome per id (a failure run again under
 *    FPP_TM_RERUN_FAILED gets a second record, which supersedes the first);
 *  - after the parent is SIGKILLed at any moment, at most one flush period of finished work
 *    runs again (outcomes written to the file survive the death of the process; what has been
 *    fdatasync'ed survives a crash of the machine): a task finished longer than one
 *    journal_flush_ms ago is in the file. Scheduling delays of the task manager's threads add
 *    to the period; so does time the caller's thread spends inside one call of a map iterator;
 *  - a record torn by a crash (the end of the file cut in the middle of a record) is detected
 *    by its CRC-32C and cut off when the journal is resumed (a WARN line says how many bytes).
 * Fork: only the process that created the task manager writes its journal (a forked child's
 * fpp_tm_free closes its copy of the descriptor and writes nothing); workers never hold it. */

typedef struct fpp_journal fpp_journal;

/* One task's recorded outcome. Its pointers live until the next call on the journal. */
typedef struct fpp_journal_rec {
    int64_t id;
    fpp_status status;    /* FPP_DONE, FPP_FAILED, FPP_CRASHED or FPP_TIMEOUT */
    int signo;            /* FPP_CRASHED by a signal: its number; else 0 */
    unsigned attempts;    /* 1 + the retries it took */
    int fn;               /* the function's id in the run that recorded it (-1: unknown) */
    const char *fn_name;  /* its name, from the journal's header ("?" if unknown) */
    int64_t start_ns;     /* wall clock (ns since the epoch) when it was first handed to the
                             executor (to a coarse tick); for a range (detail 0): when the
                             range was recorded, within one flush period after it finished */
    int64_t runtime_ns;   /* from then until its outcome was known, all attempts (queueing in
                             the executor included); for a range: the mean of its ids' (each
                             under 10 ms), their own are not kept */
    uint64_t arg_len;     /* argument bytes (0 for a range) */
    uint64_t result_len;  /* result bytes (0 for a range) */
    const void *result;   /* the stored result bytes (result_len of them), or NULL */
    const char *error;    /* the error text; NULL for FPP_DONE */
    int detail;           /* 1: a record of its own; 0: a success stored in a range */
} fpp_journal_rec;

typedef struct fpp_journal_info {
    const char *key;               /* the run's journal_key */
    int nfn;                       /* its registered functions, by id */
    const char *const *fn_names;
    uint64_t fingerprint;          /* a 64-bit hash of the names and the key */
    int64_t created_ns;            /* wall clock when the journal was created */
    int64_t watermark;             /* every id below it is finished but the `open` ones */
    uint64_t open;                 /* ids below the watermark not finished (in flight at a
                                      crash, cancelled) */
    uint64_t finished;             /* ids whose outcome is recorded */
    uint64_t failed;               /* of which the latest outcome is a failure */
    uint64_t records;              /* records of single tasks (not ranges) */
    uint64_t superseded;           /* failures recorded again by a rerun */
    uint64_t duplicates;           /* ids recorded twice otherwise: 0 in a sound journal */
    uint64_t bytes;                /* the bytes of whole records read */
    uint64_t torn_bytes;           /* bytes after them that are no whole record (a write cut
                                      short by a crash or a full disk): ignored */
} fpp_journal_info;

/* Opens a journal read-only (no lock: a run may be appending to it; what it appends later is
 * not seen; a handle is used by one thread at a time) and reads it through once, which indexes the records of single tasks (about 32
 * bytes of memory each; ranges cost nothing). On success *out is the journal, to be closed with
 * fpp_journal_close; on failure *out is NULL. Returns 0, FPP_EINVAL (NULL argument),
 * FPP_ENOMEM, FPP_EJOURNAL (cannot be opened or read, no fpp journal, damaged before its end:
 * logged). A torn end is not an error: info.torn_bytes. */
FPP_API int fpp_journal_open(fpp_journal **out, const char *path);
/* Fills *out (its strings live until fpp_journal_close). Returns 0 or FPP_EINVAL. */
FPP_API int fpp_journal_stat(const fpp_journal *j, fpp_journal_info *out);
/* Iterates the outcomes in the order they were recorded, each range expanded to one rec per id
 * (a rerun failure's old and new records both come out). Returns 1 with *rec set, 0 at the
 * end, FPP_EINVAL, FPP_ENOMEM, FPP_EJOURNAL (a read failed: logged). fpp_journal_rewind starts
 * again from the first. */
FPP_API int fpp_journal_next(fpp_journal *j, fpp_journal_rec *rec);
FPP_API int fpp_journal_rewind(fpp_journal *j);
/* Is id finished, and how: 1 with *rec (rec may be NULL) its latest outcome; 0 if the journal
 * has no outcome for it (never run, in flight at a crash, cancelled); FPP_EINVAL, FPP_EJOURNAL
 * (a read failed: logged). */
FPP_API int fpp_journal_find(fpp_journal *j, int64_t id, fpp_journal_rec *rec);
/* Closes it and frees everything it returned. NULL does nothing. */
FPP_API void fpp_journal_close(fpp_journal *j);

/* --------------------------------------------------------------- logging */

typedef enum { FPP_LOG_DEBUG, FPP_LOG_INFO, FPP_LOG_WARN, FPP_LOG_ERROR, FPP_LOG_OFF } fpp_log_level;
typedef void (*fpp_log_fn)(fpp_log_level level, const char *msg, void *user);

/* Sends log lines at min_level and above to fn (NULL: stderr, as "[HH:MM:SS tid] message").
 * The sink is never called from two threads at once, nor from a worker or any process other
 * than the one that set it (there, lines go to stderr). The sink may call the pure functions
 * (fpp_strerror, fpp_lookup, ...); task manager and executor calls made from inside it return
 * FPP_ESTATE, and a line fpp logs while the sink runs goes to stderr instead of re-entering
 * it, so nothing deadlocks. */
FPP_API void fpp_log_set(fpp_log_fn fn, void *user, fpp_log_level min_level);

#ifdef __cplusplus
}
#endif
#endif /* FPP_H */
