/* common.h: what the test files share: the registered task functions (registered by a
 * constructor, before any executor exists), executor helpers for running one scenario on both
 * executors, and the leak check every test ends with (no child process, no /dev/shm entry). */
#ifndef FPP_TEST_COMMON_H
#define FPP_TEST_COMMON_H

#include <criterion/criterion.h>
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
    F_ABORT, F_SPIN, F_SCRIBBLE, F_HOG, F_BARRIER, F_PID;

typedef enum { PROC = 0, THR = 1 } kind;

/* A new executor of that kind with these options; fails the test if it cannot. */
fpp_executor *mk_exec(kind k, const fpp_executor_opts *o);
/* A task manager with the given policy and no monitor. */
fpp_tm *mk_tm(fpp_executor *ex, fpp_policy policy, int retain);
/* Counts /dev/shm entries named by this process (fpp-<pid>-...). */
int shm_entries(void);
/* Counts this process's children that still exist (zombies included). */
int live_children(void);
/* The pool's wholeness: W tasks that each wait (up to 10 s) until all W have started, so they
 * all succeed only if W different workers run them at once. Fails the test otherwise. Every
 * slot of a W-worker executor must then serve. */
void every_slot_serves(fpp_tm *tm, int W);
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
/* The pids of this process's live children (fork servers), up to max. */
int child_pids(pid_t *out, int max);
/* The pids of the children of pid, up to max. */
int children_of(pid_t pid, pid_t *out, int max);
/* Every process of this process's pools: fork servers and their children (workers and the
 * spare), up to max; *nfs gets how many of them (the first) are fork servers. */
int pool_pids(pid_t *out, int max, int *nfs);
/* The pids of the workers and spares (the fork servers' children) only. */
int worker_pids(pid_t *out, int max);
