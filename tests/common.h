/* common.h: what the test files share: the registered task functions (registered by a
 * constructor, before any executor exists), executor helpers for running one scenario on both
 * executors, and the leak check every test ends with (no child process, no /dev/shm entry). */
#ifndef FPP_TEST_COMMON_H
#define FPP_TEST_COMMON_H

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <dirent.h>
#include <errno.h>
#include <fpp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern int F_ECHO, F_SQUARE, F_FAIL, F_SEGV, F_EXIT, F_SLEEP, F_BYTES, F_RETURN7, F_TOOBIG,
    F_ABORT, F_SPIN, F_SCRIBBLE, F_HOG, F_BLOCK, F_BARRIER, F_FLAKY, F_JITTER, F_SLOTS, F_PID, F_STAMP;

/* Words shared by the test process and every worker (MAP_SHARED, mapped by a constructor
 * before any executor exists), for tasks that coordinate with the test: counters, flags,
 * pids. The tests index it by the constants below. */
#define SHARED_WORDS 4096
extern _Atomic long *T_SHARED;
void shared_reset(void);

/* Arguments of the coordinating tasks. */
typedef struct block_arg { int started, release, pid_at, max_ms; } block_arg;
    /* F_BLOCK: bumps T_SHARED[started], stores its pid at T_SHARED[pid_at + n] (n: its rank among
     * the starters), waits until T_SHARED[release] != 0 (or max_ms); result: int 1 if released */
typedef struct barrier_arg { int counter, n, max_ms; } barrier_arg;
    /* F_BARRIER: bumps T_SHARED[counter], waits until it reaches n (or max_ms); result: the
     * long it saw last, so n or more means n tasks ran at the same time */
typedef struct flaky_arg { int counter, pid_at, bad, how; } flaky_arg;
    /* F_FLAKY: attempt k = ++T_SHARED[counter], pid stored at T_SHARED[pid_at + k]; the first
     * `bad` attempts go wrong (how: 0 SIGSEGV, 1 fpp_out_fail, 2 sleep 5 s); then result: long k */
typedef struct stamp_arg { uint64_t id, len; } stamp_arg;
    /* F_STAMP: len bytes, byte i = stamp_byte(id, i) */
static inline unsigned char stamp_byte(uint64_t id, uint64_t i) { return (unsigned char)((i * 31 + id * 101 + 7) & 0xff); }
/* F_JITTER: a uint64_t i; runs for a pseudo-random time drawn from i (mostly nothing, 1 in 50
 * spins 20 us, 1 in 1000 sleeps 1 ms); result: i */

typedef enum { PROC = 0, THR = 1 } kind;

/* A new executor of that kind with these options; fails the test if it cannot. */
fpp_executor *mk_exec(kind k, const fpp_executor_opts *o);
/* A task manager with the given policy and no monitor. */
fpp_tm *mk_tm(fpp_executor *ex, fpp_policy policy, int retain);
/* Counts /dev/shm entries named by this process (fpp-<pid>-...). */
int shm_entries(void);
/* Counts this process's children that still exist (zombies included). */
int live_children(void);
/* The end-of-test check: nothing left behind. */
void assert_clean(void);
void sleep_ms(int ms);
uint64_t u64_of(const void *p);

/* Defines the same test body for the process and the thread executor. */
#define BOTH_EXECUTORS(suite, name, ...)                                   \
    static void suite##_##name##_body(kind k);                           \
    Test(suite, name##_process, .fini = assert_clean, ##__VA_ARGS__) { suite##_##name##_body(PROC); } \
    Test(suite, name##_thread, .fini = assert_clean, ##__VA_ARGS__) { suite##_##name##_body(THR); } \
    static void suite##_##name##_body(kind k)

#endif

/* Log capture: every line the library logs from now on, joined by '\n'. */
void capture_logs(void);
const char *captured_logs(void);
/* Makes syscall nr fail with err in this process from now on (seccomp). */
void fail_syscall(long nr, int err);
/* Makes fork() fail with err in this process from now on (seccomp on clone without CLONE_VM). */
void fail_fork(int err);
/* The pools' fork servers (the children of this process's children, the keepers), up to max. */
int child_pids(pid_t *out, int max);
/* This process's children: the pools' keepers (pool/keeper.c), each the parent of a server. */
int keeper_pids(pid_t *out, int max);
/* The pids of the children of pid, up to max. */
int children_of(pid_t pid, pid_t *out, int max);
/* Every process of this process's pools: fork servers and their children (workers and the
 * spare), up to max; *nfs gets how many of them (the first) are fork servers. */
int pool_pids(pid_t *out, int max, int *nfs);
/* The pids of the workers and spares (the fork servers' children) only. */
int worker_pids(pid_t *out, int max);
/* pid has exited (gone, or a zombie). */
bool gone(pid_t pid);
/* Waits until every pid is gone or the deadline passes; returns the first one still there. */
pid_t all_gone_by(const pid_t *pids, int n, int64_t deadline);
/* The one fork server of this process's one pool (fails the test if there is not exactly one). */
pid_t the_fork_server(void);
/* The pool's wholeness: W tasks (F_SLOTS) that each wait (up to 10 s) until all W have
 * started, so they all succeed only if W different workers (processes or threads: told apart
 * by thread id) run them at once. Fails the test
 * otherwise. After any storm, every slot of a W-worker executor must pass this. The tasks
 * are given a 20 s timeout of their own, so it works under any executor timeout. */
void every_slot_serves(fpp_tm *tm, int W);
/* Waits until T_SHARED[i] >= v (up to max_ms); true if it got there. */
bool wait_shared(int i, long v, int max_ms);
int64_t mono_ns(void);
