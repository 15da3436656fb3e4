/* core/ec.c: event counts, the one way anything in fpp sleeps and is woken: a worker waiting for
 * tasks or for room, the parent waiting for results, the fork server's messages, a poke from a
 * signal handler; and fpp__ec_await, the one wait loop (spin, yield, then arm, look, sleep)
 * every one of them uses, with its budget as a parameter. The type and the protocol are
 * described in core/ec.h; the proof that no wake-up is lost is here, once.
 *
 * The word: bit 0 = ARMED (a waiter announced itself), bits 1..31 = a count of posts.
 *
 *   waiter                                   poster
 *   W1  v = fetch_or(w, ARMED)   (seq_cst)   P1  stores that make the condition true
 *   W1' fence (seq_cst)                      P2  fence (seq_cst)
 *   W2  check the condition                  P3  x = load(w); if x & ARMED:
 *   W3  futex_wait(w, v, deadline)                   CAS(w, x -> (x & ~ARMED) + 2); FUTEX_WAKE
 *
 * The two fences are in the single total order S of seq_cst operations (C11 7.17.4; C++
 * [atomics.order] p6, the store-buffering case). If W1' precedes P2 in S, then P3, sequenced
 * after P2, observes W1 (W1 is sequenced before W1'): it sees ARMED and wakes (the CAS changes
 * the word, so W3, if it has not slept yet, returns at once with EAGAIN: futex_wait compares
 * atomically with going to sleep). If P2 precedes W1' in S, then W2, sequenced after W1',
 * observes P1 (sequenced before P2), and does not sleep. Either way no wake-up is lost, with
 * relaxed or acquire loads in W2, on any C11 machine; without W1' (0.2) only x86's locked
 * instruction, a full barrier, made W2 wait for W1 (ARMv8.0's LDAXR/STLXR does not).
 * A post that finds no waiter costs a fence and a load, no system call and no write to the
 * shared line.
 * fpp__ec_bump is the variant for rare events whose count the parent reads as "something is
 * pending" (the fork server's mailbox): every bump changes the count (one RMW, ordered like
 * the fence), and wakes an armed waiter.
 *
 * A worker can scribble over the words in its own slot memory: that can only make its own
 * waits end early (a spurious wake-up: the waiter loops, checks, arms again) or last until
 * the deadline (a lost post); both are bounded, and no futex call can fail in a way that
 * matters (unlike glibc's sem_t, which aborts the process). Nothing here spins. */
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/ec.h"
#include "core/timing.h"

#define ARMED 1u

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif
struct waitv { uint64_t val, uaddr; uint32_t flags, reserved; };

uint32_t fpp__ec_arm(fpp__ec *e)
{
    uint32_t v = atomic_fetch_or_explicit(&e->w, ARMED, memory_order_seq_cst) | ARMED;
    atomic_thread_fence(memory_order_seq_cst); /* W1': paid only on the way to sleep */
    return v;
}

bool fpp__ec_post(fpp__ec *e)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t x = atomic_load_explicit(&e->w, memory_order_relaxed);
    while (x & ARMED) {
        if (atomic_compare_exchange_weak_explicit(&e->w, &x, (x & ~ARMED) + 2, memory_order_seq_cst,
                                                  memory_order_relaxed))
            return syscall(SYS_futex, (uint32_t *)&e->w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0) > 0;
    }
    return false;
}

void fpp__ec_bump(fpp__ec *e)
{
    uint32_t old = atomic_fetch_add_explicit(&e->w, 2, memory_order_seq_cst);
    if (old & ARMED) {
        atomic_fetch_and_explicit(&e->w, ~ARMED, memory_order_relaxed);
        syscall(SYS_futex, (uint32_t *)&e->w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    }
}

static struct timespec abs_ts(int64_t ns)
{
    return (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
}

void fpp__ec_wait(fpp__ec *e, uint32_t armed, int64_t deadline_ns)
{
    struct timespec ts = abs_ts(deadline_ns);
    syscall(SYS_futex, (uint32_t *)&e->w, FUTEX_WAIT_BITSET, armed, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

static _Atomic int waitv_missing;

int fpp__ec_waitv(fpp__ec *const *e, const uint32_t *armed, int n, int64_t deadline_ns, int *woke)
{
    if (woke)
        *woke = -1;
    if (n > FPP__WAITV_MAX || atomic_load_explicit(&waitv_missing, memory_order_relaxed))
        return -1;
    struct waitv v[FPP__WAITV_MAX];
    for (int i = 0; i < n; i++)
        v[i] = (struct waitv){.val = armed[i], .uaddr = (uint64_t)(uintptr_t)&e[i]->w, .flags = FUTEX_32};
    struct timespec ts = abs_ts(deadline_ns);
    long rc = syscall(SYS_futex_waitv, v, (unsigned)n, 0u, &ts, (long)CLOCK_MONOTONIC);
    if (rc < 0 && errno == ENOSYS) {
        /* Older kernels (before 5.16) and valgrind: say so once, then sleep in slices. */
        if (!atomic_exchange(&waitv_missing, 1))
            fpp__log(FPP_LOG_DEBUG, "futex_waitv unavailable: the parent sleeps in 1 ms slices");
        return -1;
    }
    if (rc >= 0 && rc < n && woke)
        *woke = (int)rc; /* woken by a FUTEX_WAKE on that word */
    return 0;
}

/* ------------------------------------------------------------ waiting */

/* The arm / look / sleep step of every wait, the protocol above applied to n words: each word
 * is armed before the look, so a post that comes after the look finds its word armed and wakes
 * us (or changes it, and the sleep returns at once). */
static int sleep_once(fpp__waiter *w, int64_t until)
{
    uint32_t armed[FPP__WAITV_MAX];
    int n = w->nwords;
    for (int i = 0; i < n; i++) {
        uint32_t v = fpp__ec_arm(w->words[i]);
        if (i < FPP__WAITV_MAX)
            armed[i] = v;
    }
    if (w->ready(w->arg, true))
        return FPP__AWAIT_READY;
    if (n == 1) {
        fpp__ec_wait(w->words[0], armed[0], until);
    } else if (fpp__ec_waitv(w->words, armed, n, until, &w->woke) != 0) {
        /* No futex_waitv, or too many words for one: a slice on the first word (a post to it
         * still ends the sleep at once; the others are seen at the next look). */
        fpp__ec_wait(w->words[0], armed[0], FPP__MIN(until, fpp__now_ns() + FPP__WAIT_SLICE_NS));
    }
    return FPP__AWAIT_SLEPT;
}

int fpp__ec_await(fpp__waiter *w, const fpp__wait_policy *pol, int64_t deadline_ns)
{
    w->woke = -1;
    /* The first look costs no clock read: on the hot path (a worker whose next task is there)
     * it is all there is. */
    if (w->ready(w->arg, false))
        return FPP__AWAIT_SPUN;
    int64_t t0 = fpp__now_ns(), now = t0;
    if (now >= deadline_ns)
        return FPP__AWAIT_DEADLINE;
    /* Spin: pause, look; the clock is read every 8 looks. */
    for (unsigned i = 1; now - t0 < pol->spin_ns; i++) {
        for (unsigned k = 0; k < pol->relax; k++)
            fpp__cpu_relax();
        if (w->ready(w->arg, false))
            return FPP__AWAIT_SPUN;
        if ((i & 7) == 0) {
            now = fpp__now_ns();
            if (now >= deadline_ns)
                return FPP__AWAIT_DEADLINE;
        }
    }
    /* Yield: leave the core to whoever needs it between looks. */
    for (unsigned y = 0; y < pol->yield_max && now - t0 < pol->yield_ns; y++) {
        sched_yield();
        if (w->ready(w->arg, false))
            return FPP__AWAIT_SPUN;
        now = fpp__now_ns();
        if (now >= deadline_ns)
            return FPP__AWAIT_DEADLINE;
    }
    int64_t until = pol->sleep_ns < deadline_ns - now ? now + pol->sleep_ns : deadline_ns;
    return sleep_once(w, until);
}
