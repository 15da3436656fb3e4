/* core/owner.c: what belongs to this process: a token that says which process this is, the set
 * of file descriptors fpp itself opened, and killing a child of ours without a pid reuse race.
 *
 * The token: different in every process, that is different in every process, cheap to read
 * (one load), and that changes in the child of any fork, however it was made (fork(), a raw
 * clone, daemon()), without any handler running.
 *
 * The token lives in a page mapped with MADV_WIPEONFORK: the kernel hands a child a zeroed
 * copy, so a child sees 0 and draws a token of its own on first use. Executors and task
 * managers record the token of the process that created them (fpp__proc_token) and refuse
 * calls from any other process (the child of a fork of the parent, a task running in a
 * worker, an atexit handler run by a task's exit()). Workers use it to notice that a task
 * forked and that they are the copy (which must never touch the pool).
 *
 * Pool processes: the keeper (pool/keeper.c) marks itself right after its fork, so that the
 * keeper, its fork servers, their workers and whatever a task forks know they are not the
 * program (fpp__in_pool_process: one load), for libfpp_mpi, which refuses MPI calls there.
 *
 * Threads: the first call of fpp__proc_token may race between threads of one process; both draw a non-zero
 * value and one CAS wins, so every thread sees the same token afterwards. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/core.h"

static _Atomic(_Atomic uint64_t *) page;
static _Atomic uint64_t fallback; /* if the page cannot be had: pid-based, still per process */

static _Atomic uint64_t *token_word(void)
{
    _Atomic uint64_t *p = atomic_load_explicit(&page, memory_order_acquire);
    if (p)
        return p;
    void *m = mmap(NULL, FPP__PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (madvise(m, FPP__PAGE, MADV_WIPEONFORK) != 0) {
        munmap(m, FPP__PAGE);
        return NULL;
    }
    _Atomic uint64_t *expect = NULL;
    if (!atomic_compare_exchange_strong(&page, &expect, (_Atomic uint64_t *)m)) {
        munmap(m, FPP__PAGE);
        return expect;
    }
    return (_Atomic uint64_t *)m;
}

uint64_t fpp__proc_token(void)
{
    _Atomic uint64_t *w = token_word();
    if (!w) {
        /* No WIPEONFORK (kernels before 4.14): fall back to the pid, a system call per use. */
        uint64_t pid = (uint64_t)getpid();
        atomic_store_explicit(&fallback, pid, memory_order_relaxed);
        return pid | (UINT64_C(1) << 63);
    }
    uint64_t t = atomic_load_explicit(w, memory_order_relaxed);
    if (__builtin_expect(t != 0, 1))
        return t;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint64_t)fpp__now_ns() * UINT64_C(0x9E3779B97F4A7C15);
    r ^= (uint64_t)getpid() << 32;
    r &= ~(UINT64_C(1) << 63); /* never equal to a fallback token */
    if (r == 0)
        r = 1;
    uint64_t expect = 0;
    if (!atomic_compare_exchange_strong(w, &expect, r))
        return expect;
    return r;
}

/* ------------------------------------------------------- pool processes */

/* Written once, in the keeper just after its fork (one thread there); every process below it
 * is a fork and reads its own copy. */
static _Atomic bool pool_process;

void fpp__pool_process_mark(void) { atomic_store_explicit(&pool_process, true, memory_order_relaxed); }

bool fpp__in_pool_process(void) { return atomic_load_explicit(&pool_process, memory_order_relaxed); }

/* --------------------------------------------------------------- our fds */

/* The file descriptors fpp itself opened (memfds, sockets, pidfds): a fork server started with
 * keep_fds keeps the application's descriptors for its workers but closes these, so that no
 * worker holds another executor's memory or channels. A bitmap, written under a mutex, read
 * without it only in a fork child (a copy nobody else writes). */
#define FD_BITS 65536
static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t fd_map[FD_BITS / 64];

void fpp__fd_own(int fd)
{
    if (fd < 0 || fd >= FD_BITS)
        return;
    pthread_mutex_lock(&fd_lock);
    fd_map[fd / 64] |= UINT64_C(1) << (fd % 64);
    pthread_mutex_unlock(&fd_lock);
}

void fpp__fd_close(int fd)
{
    if (fd < 0 || fd >= FD_BITS)
        return;
    /* Only a descriptor we opened and still own: in a process that inherited our records but
     * not our descriptors (a fork server's worker), the number may be someone else's now. */
    pthread_mutex_lock(&fd_lock);
    bool ours = (fd_map[fd / 64] >> (fd % 64)) & 1;
    fd_map[fd / 64] &= ~(UINT64_C(1) << (fd % 64));
    pthread_mutex_unlock(&fd_lock);
    if (ours)
        close(fd);
}

void fpp__fd_forget_all(void)
{
    memset(fd_map, 0, sizeof fd_map);
}

bool fpp__fd_is_ours(int fd)
{
    return fd >= 0 && fd < FD_BITS && (fd_map[fd / 64] >> (fd % 64)) & 1;
}

/* ------------------------------------------------------------- killing */

int fpp__kill_child(int pidfd, int pid)
{
    long rc = pidfd >= 0 ? syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) : kill((pid_t)pid, SIGKILL);
    return rc == 0 || errno == ESRCH ? 0 : errno;
}
