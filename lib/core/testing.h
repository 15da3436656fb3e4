/* core/testing.h: the test hooks, compiled into the test build only (FPP_TESTING, the static
 * library fpp_testing that the test suite links; SQLite's SQLITE_TEST style). The shipped
 * libraries read nothing from the environment and carry no hook: in them every macro below is
 * a constant the compiler folds away.
 *
 *   FPP_TEST_CRASH=PHASE:N[:SIG]  a worker process raises SIG (default SIGKILL) at PHASE of
 *                                 every Nth task (1: about to look for a task; 2: task claimed,
 *                                 function not yet called; 3: result written, record not yet
 *                                 published; 4: record published). pool/worker.c.
 *   FPP_FAIL_ALLOC=N              the Nth allocation through fpp__malloc and friends fails.
 *                                 core/alloc.c.
 *   FPP_COPY_RESULTS=1            every result is copied out of the worker's arena (0.1's
 *                                 path), none handed out zero-copy. pool/pool.c.
 *   FPP_MPI_CHUNK=BYTES           libfpp_mpi cuts large messages in chunks of this size.
 *                                 mpi/executor.c.
 *   FPP_AUDIT_PAUSE_MS=N          the audit waits N ms between its harvest and its look at each
 *                                 worker's claims. pool/audit.c.
 *   FPP_TEST_WORKER_SLEEP_MS=N    a worker process sleeps for its next task up to N ms, not 1 s
 *                                 (a lost wake-up hangs the test). pool/worker.c. */
#ifndef FPP_CORE_TESTING_H
#define FPP_CORE_TESTING_H

#ifdef FPP_TESTING
#include <stdlib.h>
/* The value of a test switch, or NULL. */
#define FPP__TEST_ENV(name) getenv(name)
#define FPP__TESTING 1
#else
#define FPP__TEST_ENV(name) ((const char *)0)
#define FPP__TESTING 0
#endif

#endif /* FPP_CORE_TESTING_H */
