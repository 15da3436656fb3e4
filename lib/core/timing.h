/* core/timing.h: every timing constant of libfpp, in one place, each with its reason; the
 * relations between them are checked at build time below. Nanoseconds unless named otherwise.
 * Nothing here is a promise to users: fpp.h states what they may rely on. */
#ifndef FPP_CORE_TIMING_H
#define FPP_CORE_TIMING_H

#include <stdint.h>

/* ---------------------------------------------------------------- waiting */

/* A worker looking for its next task: spin 20 us (a no-op task comes back in well under a
 * microsecond, so a busy parent publishes the next one within this), then 64 yields, then
 * sleep. 16 pauses between looks keep it off the cache line the parent writes. */
#define FPP__CLAIM_SPIN_NS 20000
#define FPP__CLAIM_RELAX 16
#define FPP__CLAIM_YIELDS 64
/* A worker waiting for room (its completion ring or its result arena): the parent makes room
 * as soon as it harvests, so a short spin and a few yields, then ring its bell and sleep. */
#define FPP__ROOM_SPIN_NS 2000
#define FPP__ROOM_YIELDS 64
/* The longest a worker sleeps in one go: a post it misses (a scribbled word) costs at most
 * this, and a stopped parent's worker checks on itself this often. */
#define FPP__WORKER_SLEEP_MAX_NS 1000000000
/* The parent waiting for results: spin up to FPP__PARENT_SPIN_MAX_NS, adapting (doubling when
 * the spin catches a result, halving when it ends in sleep anyway), pure for the first
 * FPP__PARENT_SPIN_PURE_NS and yielding after, so that with long tasks it takes no CPU the
 * workers need. */
#define FPP__PARENT_SPIN_MAX_NS 30000
#define FPP__PARENT_SPIN_PURE_NS 5000
/* Where futex_waitv is missing (kernels before 5.16, valgrind) or more than 128 words are
 * waited on, the parent sleeps in slices of this on one word (the poke). */
#define FPP__WAIT_SLICE_NS 1000000
/* A worker whose bell ends the parent's sleep for nothing this many times in a row (a task
 * posting its own bell in a loop) is not slept on for a while: 10 ms, doubling to 1 s; the
 * parent looks at it every FPP__BELL_MUTED_LOOK_NS meanwhile (its results come that much
 * later: only its own tasks'; at every slice the parent spent 0.1-0.5 s of CPU in 2 s under
 * AddressSanitizer). An honest worker rings for nothing only on its way to sleep, once per
 * sleep. */
#define FPP__BELL_NOISE_MAX 64
#define FPP__BELL_MUTE_MIN_NS 10000000
#define FPP__BELL_MUTE_MAX_NS 1000000000
#define FPP__BELL_MUTED_LOOK_NS 10000000
/* The parent never sleeps without a deadline: an hour stands for "none". */
#define FPP__WAIT_FOREVER_NS ((int64_t)3600 * 1000000000)

/* --------------------------------------------------------- the pool's clocks */

/* A worker silent this long gives its unclaimed tasks to idle workers (a worker merely waking
 * up takes longer than a task of microseconds, not longer than this)... */
#define FPP__STEAL_AFTER_NS 100000
/* ...and its only unclaimed task, once silent this long (stopped, or starved of CPU). */
#define FPP__STEAL_HEAD_AFTER_NS 10000000
#define FPP__STEAL_MAX 16 /* tasks moved per poll, at most */
/* Queue about this much work on each worker: enough that it never runs dry while the parent is
 * busy, little enough that not much waits behind a long task. */
#define FPP__DEPTH_TARGET_NS 200000
/* A worker that leaves a revoked cell unacknowledged this long, with nothing older to finish,
 * takes no task (stopped, or it wrote that state itself): twice its longest sleep. */
#define FPP__UNACKED_NS (2 * (int64_t)FPP__WORKER_SLEEP_MAX_NS)
/* Timeouts are seen when the parent looks (a claim is seen only then): a sleeping parent looks
 * every quarter of the shortest timeout in flight, and at least every millisecond. */
#define FPP__TIMEOUT_TICK_DIVISOR 4
#define FPP__TIMEOUT_TICK_MIN_NS 1000000
/* A worker's memory cap is checked at most this often, or after this many tasks, and on the
 * way to sleep: one pread of /proc/self/statm, never a system call per task. */
#define FPP__RSS_CHECK_NS 10000000
#define FPP__RSS_CHECK_TASKS 1024

/* ------------------------------------------------------------ executors */

/* The audit runs after this long without progress while tasks are in flight. */
#define FPP__AUDIT_NS 250000000
/* The shortest wait a poll makes when it has to come back for a clock of its own (audit,
 * respawn, recycling): sleeping for less would only spin. */
#define FPP__POLL_MIN_NS 1000000
/* Workers that cannot start: back off from 10 ms, doubling to 1 s; after five failures in a
 * row the breaker trips; one log line a second at most. */
#define FPP__BACKOFF_MIN_NS 10000000
#define FPP__BACKOFF_MAX_NS 1000000000
#define FPP__BREAKER_FAILURES 5
#define FPP__FAIL_LOG_NS 1000000000
/* The fork server: checked on this often while tasks run; silent this long about a spawn or
 * a death it must report, it is stuck (stopped, a debugger) and replaced. */
#define FPP__FS_WATCH_NS 250000000
#define FPP__FS_STALL_NS 2000000000
/* Creation gives up on its first workers after this. */
#define FPP__START_WAIT_NS 10000000000LL
/* Freeing an executor: the fork server gets this long to kill and reap everything. */
#define FPP__FREE_GRACE_NS 2000000000
/* The fork server gives up reaping what tasks left behind after this. */
#define FPP__KILL_ALL_GRACE_NS 2000000000
/* Without a pidfd of the parent, the fork server checks its parent this often. */
#define FPP__FS_PARENT_CHECK_MS 200
/* Thread executor with max_tasks_per_worker: retired threads are replaced this often. */
#define FPP__THREAD_REAP_NS 2000000

/* ----------------------------------------------------------- task manager */

/* The progress line is redrawn at most 10 times a second. */
#define FPP__PROGRESS_TICK_MS 100
/* The task journal (tm/journal.c): finished outcomes are written and made durable this often
 * by default (fpp_tm_opts.journal_flush_ms): what a SIGKILL can cost is at most this much
 * finished work, run again. */
#define FPP__JOURNAL_FLUSH_MS 10
/* A success on its first attempt that surely took less than this from hand-over to outcome is
 * stored as part of a range of ids (no run time of its own; the range keeps their mean): a
 * no-op map then costs the journal a bit per task, not a record. Longer tasks get a record
 * each, with their run time. Measured on CLOCK_MONOTONIC_COARSE (5 ns a read here, against 20
 * for CLOCK_MONOTONIC: a fine read per task cost a no-op map 15% of its rate), whose tick (4 ms
 * here) is why this is 10 ms and not 1. */
#define FPP__JOURNAL_PLAIN_NS 10000000

/* ---------------------------------------------------------------- checks */

_Static_assert(FPP__UNACKED_NS >= 2 * (int64_t)FPP__WORKER_SLEEP_MAX_NS,
               "a worker that takes tasks acknowledges a revoke within one sleep");
_Static_assert(FPP__STEAL_AFTER_NS < FPP__STEAL_HEAD_AFTER_NS, "a worker's last task is taken last");
_Static_assert(FPP__PARENT_SPIN_PURE_NS <= FPP__PARENT_SPIN_MAX_NS, "the pure spin is part of the spin");
_Static_assert(FPP__BACKOFF_MIN_NS <= FPP__BACKOFF_MAX_NS, "the back-off grows");
_Static_assert(FPP__FS_WATCH_NS < FPP__FS_STALL_NS, "a stalled server is seen before it counts as stuck");
_Static_assert(FPP__AUDIT_NS < FPP__UNACKED_NS, "the audit looks several times before a worker counts as stuck");
_Static_assert(FPP__WAIT_SLICE_NS <= FPP__TIMEOUT_TICK_MIN_NS, "slices never delay a timeout");
_Static_assert(FPP__BELL_MUTED_LOOK_NS <= FPP__BELL_MUTE_MIN_NS, "a muted worker is looked at while muted");

#endif /* FPP_CORE_TIMING_H */
