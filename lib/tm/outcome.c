/* tm/outcome.c: what happens to a task that finished, whether the executor ran it or it never
 * got there (cancelled, or its argument too large): retries, counters, its record in the journal
 * (journal.c; cancelled tasks are not recorded), error policies, and the done queue. This is also
 * the sink every executor hands finished jobs to (fpp__tm_sink).
 *
 * Retries: a task that comes back from the executor with an outcome retries apply to
 * (tm->retry_on: bit 1 << status; by default CRASHED and TIMEOUT) and has attempts left goes back to the front of the pending list with
 * avoid_slot set to the worker it ran on; policies, counters and the caller see only the final
 * outcome, whose error names the attempts. Policies: RAISE stops the run at the first failure
 * (the calls return FPP_ETASK; the task lives until fpp_tm_free); LOG logs it; IGNORE keeps it
 * on the task. */
#include <stdio.h>
#include <string.h>

#include "tm/tm.h"

/* "crashed on 3 attempts; last: worker 4312 killed by SIGSEGV while running task 17" */
static void name_attempts(fpp_task *t)
{
    char last[FPP__ERR_MAX + 64], earlier[64] = "";
    snprintf(last, sizeof last, "%s", fpp_task_error(t));
    unsigned others = t->past & ~(1u << t->job.status);
    if (others) {
        size_t n = 0;
        for (int s = FPP_FAILED; s <= FPP_TIMEOUT; s++)
            if (others & (1u << s)) {
                int k = snprintf(earlier + n, sizeof earlier - n, "%s%s", n ? ", " : " (earlier attempts also ", fpp_status_name((fpp_status)s));
                if (k > 0)
                    n = FPP__MIN(n + (size_t)k, sizeof earlier - 2);
            }
        snprintf(earlier + n, sizeof earlier - n, ")");
    }
    fpp__job_fail(&t->job, t->job.status, t->job.signo, "%s on %u attempts%s; last: %s", fpp_status_name(t->job.status), t->attempts,
                   earlier, last);
}

void fpp__tm_finished(fpp_tm *tm, fpp_task *t)
{
    fpp_status st = t->job.status;
    bool bad = st == FPP_FAILED || st == FPP_CRASHED || st == FPP_TIMEOUT;
    bool from_exec = t->where == FPP__AT_EXEC;
    char name[FPP__NAME_MAX];
    if (bad && from_exec && !fpp__tm_stopped(tm) && t->attempts <= tm->opts.retries && (tm->retry_on & (1u << st))) {
        /* Run it again, elsewhere; nobody sees this outcome. */
        fpp__job_name(&t->job, name, sizeof name);
        fpp__log(FPP_LOG_DEBUG, "%s (%s) %s on attempt %u: %s; running it again", name, fpp__tm_fn_name(t->job.fn),
                 fpp_status_name(st), t->attempts, fpp_task_error(t));
        t->past |= (uint8_t)(1u << st);
        t->job.avoid_slot = t->job.slot;
        t->attempts++;
        fpp__tm_bump(&tm->c.retried);
        fpp__task_unpin(tm, t, false);
        t->where = FPP__AT_PENDING;
        fpp__list_push_front(&tm->pending, &t->job.link);
        return;
    }
    fpp__tm_set_unfinished(tm, tm->unfinished - 1);
    if (bad && t->attempts > 1)
        name_attempts(t);
    if (tm->jr && st != FPP_CANCELLED)
        fpp__journal_finished(tm, t); /* cancelled tasks did not finish: not recorded */
    switch (st) {
    case FPP_DONE: fpp__tm_bump(&tm->c.done); break;
    case FPP_FAILED: fpp__tm_bump(&tm->c.failed); break;
    case FPP_CRASHED: fpp__tm_bump(&tm->c.crashed); break;
    case FPP_TIMEOUT: fpp__tm_bump(&tm->c.timed_out); break;
    case FPP_CANCELLED: fpp__tm_bump(&tm->c.cancelled); break;
    }
    if (st != FPP_CANCELLED)
        fpp__tm_bump(&tm->c.finished);
    if (tm->opts.retain_completed)
        fpp__task_retain(tm, t);

    if (bad && tm->progress)
        fpp__monitor_name_failure(&tm->c, &t->job);
    if (bad && !fpp__tm_stopped(tm)) {
        fpp__job_name(&t->job, name, sizeof name);
        if (tm->opts.error_policy == FPP_RAISE) {
            tm->raised = true;
            tm->failure = t;
            fpp__task_unpin(tm, t, true); /* it lives until fpp_tm_free */
            fpp__log(FPP_LOG_ERROR, "%s (%s, %zu-byte argument) %s: %s; raising", name, fpp__tm_fn_name(t->job.fn),
                     t->job.arg_len, fpp_status_name(st), fpp_task_error(t));
            fpp__task_let_go(tm, t);
            return;
        }
        if (tm->opts.error_policy == FPP_LOG)
            fpp__log(FPP_LOG_ERROR, "%s (%s, %zu-byte argument) %s: %s", name, fpp__tm_fn_name(t->job.fn),
                     t->job.arg_len, fpp_status_name(st), fpp_task_error(t));
    }
    if (fpp__tm_stopped(tm)) {
        /* Never handed out: the call in progress returns FPP_ETASK, FPP_EINTR, or the tm is
         * going away. */
        fpp__task_let_go(tm, t);
        return;
    }
    t->where = FPP__AT_DONEQ;
    fpp__list_push_back(&tm->doneq, &t->job.link);
    if (tm->ordered)
        fpp__order_done(tm, t);
}

/* ------------------------------------------------------------- the sink */

static void sink_finished(void *tm, fpp__job *j) { fpp__tm_finished(tm, fpp__task_of(j)); }

static bool sink_halted(void *arg)
{
    const fpp_tm *tm = arg;
    return tm->raised || tm->interrupted || tm->jfailed;
}

const fpp__sink_ops fpp__tm_sink = {
    .finished = sink_finished,
    .halted = sink_halted,
    .detach = fpp__tm_detach,
    .forget = fpp__tm_forget_executor,
};
