/* tm/cancel.c: stopping tasks: fpp_cancel (one task), cancelling everything (a raise, the task
 * manager freed, the executor freed), dropping finished tasks nobody will be handed, and Ctrl-C
 * or fpp_tm_interrupt (cancel everything, stop the workers, hand out nothing: FPP_EINTR). */
#include <string.h>

#include "tm/tm.h"

static void cancel_pending(fpp_tm *tm)
{
    while (tm->pending.head) {
        fpp_task *t = fpp__task_at(fpp__list_pop_front(&tm->pending));
        fpp__job_fail(&t->job, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t); /* it never reached the executor */
    }
    while (tm->maps)
        fpp__map_end(tm);
}

void fpp__tm_cancel_all(fpp_tm *tm, bool wait)
{
    if (tm->cancelled)
        return;
    tm->cancelled = true;
    cancel_pending(tm);
    if (tm->ex)
        tm->ex->ops->cancel(tm->ex, wait);
}

/* Finished tasks not handed out are dropped (recycled unless kept or retained). */
void fpp__tm_drop_done(fpp_tm *tm)
{
    while (tm->doneq.head) {
        fpp_task *t = fpp__task_at(fpp__list_pop_front(&tm->doneq));
        fpp__order_gone(tm, t);
        fpp__task_let_go(tm, t);
    }
}

/* Ctrl-C (sigint) or fpp_tm_interrupt: cancel everything, stop the workers, hand out nothing. */
int fpp__tm_interrupt(fpp_tm *tm, bool sigint)
{
    if (sigint)
        fpp__sigint_cleanup_begin();
    tm->interrupted = true;
    fpp__log(FPP_LOG_WARN, "%s: cancelling %zu unfinished task(s)", sigint ? "SIGINT" : "interrupted",
             tm->unfinished);
    fpp__tm_drop_done(tm);
    fpp__tm_cancel_all(tm, true);
    fpp__journal_sync(tm); /* what finished, made durable (a failure is logged) */
    fpp__tm_monitor_stop(tm);
    if (sigint) {
        fpp__sigint_restore();
        fpp__sigint_cleanup_end();
    }
    return FPP_EINTR;
}

int fpp_cancel(fpp_tm *tm, int64_t id)
{
    int rc = fpp__tm_enter(tm, "fpp_cancel", 0);
    if (rc)
        return rc;
    rc = fpp__tm_check_id(tm, id, "fpp_cancel");
    if (!rc)
        rc = fpp__tm_ids_needed(tm);
    fpp_task *t = rc || fpp__tm_stopped(tm) ? NULL : fpp__idmap_get(&tm->ids, id);
    if (t && t->where == FPP__AT_EXEC) {
        if (!tm->ex->ops->cancel_task) {
            fpp__log(FPP_LOG_ERROR, "fpp_cancel: the %s executor cannot cancel one task", tm->ex->ops->kind);
            rc = FPP_ESTATE;
            t = NULL;
        } else if (tm->ex->ops->cancel_task(tm->ex, &t->job) == 1) {
            rc = 1;
            t = NULL;
        } else if (fpp__tm_stopped(tm)) {
            t = NULL; /* finishing what was ready raised: t may be gone, everything is cancelled */
        }
        /* Else the executor had finished it (DONEQ now) or, with FPP_TM_RETRY_FAILED, handed
         * it back to run again (PENDING now): alive either way, settled below. */
    }
    if (t && t->where == FPP__AT_PENDING) {
        fpp__list_unlink(&tm->pending, &t->job.link);
        fpp__job_fail(&t->job, FPP_CANCELLED, 0, "cancelled");
        fpp__tm_finished(tm, t); /* it never reached the executor (this time) */
        rc = 1;
    }
    /* Otherwise: handed out, dropped, finished, or everything was cancelled already: 0. */
    fpp__tm_monitor_check(tm);
    fpp__tm_leave(tm);
    return rc;
}

int fpp_tm_interrupt(fpp_tm *tm)
{
    /* Async-signal-safe: atomics and a futex wake only; never logs. */
    if (!tm)
        return FPP_EINVAL;
    if (tm->owner != fpp__proc_token())
        return FPP_ESTATE;
    fpp_executor *ex = tm->ex;
    if (!ex)
        return FPP_ESTATE; /* its executor was freed: nothing runs any more */
    atomic_store(&tm->intr, 1);
    ex->ops->wake(ex);
    return 0;
}
