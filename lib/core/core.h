/* core/core.h: the process-wide services every layer of libfpp stands on, and nothing that
 * knows of pools, executors or task managers: small tools and the clock, allocation, the
 * process token and fpp's own descriptors (owner.c), the log and the status line (log.c), the
 * function registry (registry.c), the fork hooks (fork_hooks.c). Event counts are in
 * core/ec.h, the job every layer passes in core/job.h, timing constants in core/timing.h, the
 * intrusive list in core/list.h, test hooks in core/testing.h.
 *
 * Layering (lib/LAYERS, checked by .ci/check-layers): core includes nothing of the other
 * layers; every other layer may include core. Symbols here are fpp__* and hidden from the
 * shared library (FPP__BACKEND ones excepted: libfpp_mpi calls them). */
#ifndef FPP_CORE_H
#define FPP_CORE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fpp.h"

/* AddressSanitizer builds: gcc says so with __SANITIZE_ADDRESS__, clang with __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define FPP__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FPP__ASAN 1
#endif
#endif

#define FPP__HIDDEN __attribute__((visibility("hidden")))
/* Internal, but exported from libfpp for fpp's own out-of-library backends (libfpp_mpi): no
 * API promise, never declared in fpp.h. Keep this set small. Today: fpp__executor_create,
 * fpp__exec_finished, fpp__job_fail, fpp__job_set_result, fpp__log, and the event count's
 * arm/wait/post (the MPI rank-0 backend). */
#define FPP__BACKEND __attribute__((visibility("default")))

/* ------------------------------------------------------------- small tools */

#define FPP__LINE 64
#define FPP__PAGE 4096u
#define FPP__ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((size_t)(a) - 1))
#define FPP__MIN(a, b) ((a) < (b) ? (a) : (b))
#define FPP__MAX(a, b) ((a) > (b) ? (a) : (b))
#define FPP__UNUSED(x) ((void)(x))
#define FPP__IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
#define FPP__CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline int64_t fpp__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void fpp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ------------------------------------------------------------ allocation */

/* All allocation goes through these, so that a test build can fail the Nth call. */
FPP__HIDDEN void *fpp__malloc(size_t n);
FPP__HIDDEN void *fpp__calloc(size_t n, size_t size);
FPP__HIDDEN void *fpp__realloc(void *p, size_t n);
FPP__HIDDEN void fpp__free(void *p);
FPP__HIDDEN char *fpp__strdup(const char *s);
/* A buffer of at least n bytes (its real size in *cap), from the large-buffer cache when it can. */
FPP__HIDDEN void *fpp__buf_get(size_t n, size_t *cap);
FPP__HIDDEN void fpp__buf_put(void *p, size_t cap);

/* ------------------------------------------------------------------ owner */

/* A token unique to this process, different in the child of any fork (one load). */
FPP__HIDDEN uint64_t fpp__proc_token(void);
/* Pool processes: the keeper of a process executor marks itself right after it is forked
 * from the program, so the mark holds in it, its fork server, every worker and whatever a
 * task forks (a copy of memory, inherited by every fork below). True there, false in the
 * program. libfpp_mpi refuses MPI calls where it is true (mpi/guard.c). */
FPP__HIDDEN void fpp__pool_process_mark(void);
FPP__BACKEND bool fpp__in_pool_process(void);
/* The descriptors fpp opened (closed in fork servers even with keep_fds). */
FPP__HIDDEN void fpp__fd_own(int fd);
FPP__HIDDEN void fpp__fd_close(int fd);  /* forgets it and closes it, if it is ours */
FPP__HIDDEN void fpp__fd_forget_all(void); /* in a fork server: the parent's are not ours */
FPP__HIDDEN bool fpp__fd_is_ours(int fd);
/* Sends SIGKILL to a child process through its pidfd; by pid only where there never was a
 * pidfd (pidfd < 0: kernels without pidfd_open), since a pid may have been reused once the
 * process is reaped. Returns 0 when sent or when the process is dead already (ESRCH: reaped,
 * its death on its way), else the errno of the failure (EPERM: not ours to kill any more). */
FPP__HIDDEN int fpp__kill_child(int pidfd, int pid);

/* ----------------------------------------------------------------- logging */

FPP__BACKEND void fpp__log(fpp_log_level level, const char *fmt, ...) FPP_PRINTF(2, 3);
FPP__HIDDEN bool fpp__log_enabled(fpp_log_level level);
/* True on a thread that is inside the log sink right now (a sink calling back into fpp). */
FPP__HIDDEN bool fpp__log_in_sink(void);
/* The status line (the progress line of FPP_TM_PROGRESS): one line on stderr, redrawn in place,
 * cleared before every log line. One owner at a time: claim returns false if another holds it.
 * draw is a no-op unless `owner` holds it; release clears the line and gives it up. All three
 * take the log lock (a leaf), so a line is never drawn half over a log line. */
FPP__HIDDEN bool fpp__status_claim(const void *owner);
FPP__HIDDEN void fpp__status_draw(const void *owner, const char *line);
FPP__HIDDEN void fpp__status_release(const void *owner);
/* Logs "call(what): strerror(errno)" at ERROR, keeps errno, returns FPP_ESYS. */
FPP__HIDDEN int fpp__sys_error(const char *call, const char *what);

/* ---------------------------------------------------------------- registry */

FPP__HIDDEN fpp_fn fpp__registry_fn(int id); /* NULL for an unknown id; lock-free read */
FPP__HIDDEN void fpp__registry_freeze(int delta); /* +1 an executor exists, -1 freed */

/* -------------------------------------------------------------- fork hooks */

/* The hooks of fpp_set_fork_hooks (each may be NULL), run around every fork fpp makes. */
typedef struct fpp__fork_hooks { void (*prepare)(void), (*parent)(void), (*child)(void); } fpp__fork_hooks;
FPP__HIDDEN fpp__fork_hooks fpp__fork_hooks_get(void);

#endif /* FPP_CORE_H */
