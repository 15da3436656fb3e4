/* core/ec.h: event counts, the one way anything in fpp sleeps and is woken, in shared memory or
 * not, and the one wait loop built on them (fpp__ec_await), whose spin/yield/sleep budget is a
 * parameter (fpp__wait_policy), as Concurrency Kit's ck_ec makes it one.
 *
 * A 32-bit futex word: bit 0 says "someone is about to sleep or sleeps here", the other bits
 * count posts. Not glibc semaphores: glibc trusts the fields of a sem_t and aborts the process
 * when a futex call on a scribbled one fails; a word here can only be wrong, never fatal. The
 * protocol (its proof is at the top of ec.c):
 *   waiter:  v = fpp__ec_arm(e);  if (condition) done;  else fpp__ec_wait(e, v, deadline);
 *   poster:  make the condition true (stores);  fpp__ec_post(e);
 * Every wait has a deadline; a scribbled word costs a spurious wake-up or a wait until the
 * deadline, never a spin and never a crash. */
#ifndef FPP_CORE_EC_H
#define FPP_CORE_EC_H

#include "core/core.h"

typedef struct fpp__ec { _Atomic uint32_t w; } fpp__ec;

FPP__BACKEND uint32_t fpp__ec_arm(fpp__ec *e);
/* Returns true when the post woke a sleeper (FUTEX_WAKE reported one). */
FPP__BACKEND bool fpp__ec_post(fpp__ec *e);
/* A post that always counts (fpp__ec_count moves): for rare events polled by count. */
FPP__HIDDEN void fpp__ec_bump(fpp__ec *e);
/* Sleeps while the word still holds armed, until deadline_ns (CLOCK_MONOTONIC). */
FPP__BACKEND void fpp__ec_wait(fpp__ec *e, uint32_t armed, int64_t deadline_ns);
/* Sleeps on several words at once (futex_waitv; at most FPP__WAITV_MAX); armed[i] from
 * fpp__ec_arm. Returns 0, or -1 when futex_waitv is unavailable or n is over the limit. *woke
 * (may be NULL): the index of the word whose post woke it, else -1 (deadline, a word that had
 * changed already, a signal). */
#define FPP__WAITV_MAX 128
FPP__HIDDEN int fpp__ec_waitv(fpp__ec *const *e, const uint32_t *armed, int n, int64_t deadline_ns, int *woke);
/* The count part of a word, for "has anything been posted since I looked". */
static inline uint32_t fpp__ec_count(fpp__ec *e) { return atomic_load(&e->w) >> 1; }

/* ------------------------------------------------------------ waiting */

/* How long a waiter looks before it sleeps: pure spinning for spin_ns (`relax` pause
 * instructions between looks), then a sched_yield between looks until yield_ns from the start
 * of the wait or yield_max yields, whichever comes first; then one sleep of at most sleep_ns.
 * The constants each caller uses are in core/timing.h, with their reasons. */
typedef struct fpp__wait_policy {
    int64_t spin_ns;
    unsigned relax;
    int64_t yield_ns;
    unsigned yield_max;
    int64_t sleep_ns;
} fpp__wait_policy;

/* What a wait waits for. ready(arg, armed) says whether to stop waiting; it is asked with
 * armed false while spinning and yielding, and once with armed true after every word is armed:
 * that look decides whether to sleep, so it must test the very condition the posters of these
 * words make true (else a wake-up is lost), and it is the place for what must happen just
 * before a sleep (telling a peer what we wait for). words: the words slept on (1 or more; more
 * than one needs futex_waitv, and where it is missing or there are more than FPP__WAITV_MAX,
 * the waiter sleeps on words[0] alone, in slices of FPP__WAIT_SLICE_NS). */
typedef struct fpp__waiter {
    bool (*ready)(void *arg, bool armed);
    void *arg;
    fpp__ec *const *words;
    int nwords;
    int woke;              /* out: after a sleep on several words, the one whose post ended it; -1 */
} fpp__waiter;

enum {
    FPP__AWAIT_SPUN = 1,  /* ready while spinning or yielding */
    FPP__AWAIT_READY,     /* ready at the look after arming: no sleep */
    FPP__AWAIT_SLEPT,     /* slept once (woken, spuriously or not, or at its limit): look again */
    FPP__AWAIT_DEADLINE,  /* deadline_ns passed before anything was ready */
};
/* Waits until ready, the deadline (INT64_MAX: none), or the end of one sleep. */
FPP__HIDDEN int fpp__ec_await(fpp__waiter *w, const fpp__wait_policy *pol, int64_t deadline_ns);

#endif /* FPP_CORE_EC_H */
