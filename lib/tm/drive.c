/* tm/drive.c: the blocking loop and the calls that wait on it: fpp_submit (waiting for room),
 * fpp_as_completed(_for), fpp_run, fpp_wait. drive() feeds the executor (pending tasks, map
 * items while there is room), polls it, and stops at its goal, at a raise (FPP_ETASK), at
 * Ctrl-C or fpp_tm_interrupt (FPP_EINTR), or at a deadline.
 *
 * The journal (journal.c) is looked at once per pass (tm->jflags: its flusher asks for a write,
 * or reports a failure, which stops the run like a raise: FPP_EJOURNAL), made durable when a
 * raise stops the run, and written (not fdatasync'ed: its flusher does that within a period)
 * when a blocking call finds nothing left. tm->jnow, the journal's
 * clock, is made stale at each pass and before each poll, so that it is read once per poll.
 *
 * Backpressure: the map pulls an item only while unfinished + |DONEQ| < max_in_flight;
 * fpp_submit blocks while unfinished (plus, with FPP_TM_ORDERED, the finished tasks held back
 * behind an unfinished one) >= max_in_flight. So an unread backlog and the reorder window
 * both count toward max_in_flight. */
#include <stdio.h>
#include <string.h>

#include "tm/tm.h"

/* Pulls map items while there is room, hands pending tasks to the executor. */
void fpp__tm_feed(fpp_tm *tm)
{
    tm->jnow = 0;
    fpp__tm_journal_check(tm);
    if (fpp__tm_stopped(tm))
        return;
    for (unsigned pulls = 1; tm->maps && tm->unfinished + tm->doneq.n < tm->max_in_flight && !fpp__tm_stopped(tm);
         pulls++) {
        fpp__map_pull(tm);
        fpp__tm_journal_check(tm); /* an iterator may take its time */
        /* Items a resumed map skips take no room: a long run of them must still see Ctrl-C
         * (the drive loop acts on it; the signal woke the executor, so its poll is short). */
        if (!(pulls & 4095) && (atomic_load_explicit(&tm->intr, memory_order_relaxed) ||
                                atomic_load_explicit(&tm->sig.hit, memory_order_relaxed)))
            break;
    }
    /* A dispatch that finds no room for its task may still have placed others (tasks taken
     * back from a worker go out first): after any dispatch, flush. */
    bool tried = false;
    bool polled = false;
    while (tm->pending.head && !tm->raised) {
        /* Off the list before the executor sees it: dispatch and poll may finish other tasks,
         * and a retry goes to the front of this list. */
        fpp_task *t = fpp__task_at(fpp__list_pop_front(&tm->pending));
        if (tm->jr && !t->jstart)
            t->jstart = fpp__tm_jnow(tm);
        int rc = tm->ex->ops->dispatch(tm->ex, &t->job);
        tried = true;
        if (rc == 1) {
            fpp__list_push_front(&tm->pending, &t->job.link);
            if (polled)
                break;
            /* Full: harvest what is ready (no wait) and try once more, so that a caller who
             * submits everything first still keeps the workers busy. */
            polled = true;
            tm->ex->ops->flush(tm->ex);
            tried = false;
            tm->jnow = 0;
            tm->ex->ops->poll(tm->ex, 0);
            continue;
        }
        if (rc < 0) {
            fpp__job_fail(&t->job, FPP_FAILED, 0, "could not hand the task to the executor: %s", fpp_strerror(rc));
            fpp__tm_finished(tm, t); /* it never reached the executor */
            continue;
        }
        t->where = FPP__AT_EXEC;
    }
    if (tried)
        tm->ex->ops->flush(tm->ex);
}

/* ------------------------------------------------------ the blocking loop */

enum goal { ROOM, NEXT, ALL, ONE };

static bool nothing_left(fpp_tm *tm) { return tm->unfinished == 0 && !tm->maps; }

static bool room(fpp_tm *tm)
{
    return tm->unfinished + (tm->ordered ? tm->held : 0) < tm->max_in_flight;
}

/* Drives the executor until the goal is met: ROOM for a submit, NEXT for the next task to hand
 * out, ALL for everything, ONE for `want` to finish. deadline_ns: INT64_MAX for none, else
 * FPP_ETIMEDOUT once it passes (after one poll at least). */
static int drive(fpp_tm *tm, enum goal g, fpp_task *want, int64_t deadline_ns)
{
    bool sig = tm->sig.slot >= 0;
    if (sig)
        fpp__sigint_enter(&tm->sig);
    int rc;
    bool polled = false;
    for (;;) {
        tm->jnow = 0;
        fpp__tm_journal_check(tm);
        if (tm->jfailed) {
            fpp__tm_cancel_all(tm, false);
            rc = FPP_EJOURNAL;
            break;
        }
        if (tm->raised) {
            fpp__tm_cancel_all(tm, false);
            rc = fpp__tm_state_error(tm); /* FPP_ETASK, the journal made durable first */
            break;
        }
        if (sig && atomic_exchange(&tm->sig.hit, 0)) {
            rc = fpp__tm_interrupt(tm, true);
            break;
        }
        if (atomic_exchange(&tm->intr, 0)) {
            rc = fpp__tm_interrupt(tm, false);
            break;
        }
        fpp__tm_feed(tm);
        if (tm->raised)
            continue;
        if (g == ALL && tm->doneq.head) {
            /* Dropping them makes room for the map: feed again before polling, or a poll that
             * finished every task in flight would leave nothing to wake the next one. */
            fpp__tm_drop_done(tm);
            continue;
        }
        if (g == ROOM && room(tm)) {
            rc = 0;
            break;
        }
        if (g == NEXT && fpp__order_peek(tm)) {
            rc = 1;
            break;
        }
        if (g == ONE && want->where == FPP__AT_DONEQ) {
            rc = 1;
            break;
        }
        if ((g == NEXT || g == ALL) && nothing_left(tm)) {
            rc = tm->map_error;
            tm->map_error = 0;
            if (tm->jr && fpp__journal_write(tm) != 0) {
                tm->map_error = rc; /* still to be returned once */
                fpp__tm_cancel_all(tm, false);
                rc = FPP_EJOURNAL;
            }
            break;
        }
        if (polled && deadline_ns != INT64_MAX && fpp__now_ns() >= deadline_ns) {
            rc = FPP_ETIMEDOUT;
            break;
        }
        tm->jnow = 0;
        int n = tm->ex->ops->poll(tm->ex, deadline_ns);
        polled = true;
        if (n < 0) {
            rc = n;
            break;
        }
    }
    if (sig)
        fpp__sigint_leave(&tm->sig);
    fpp__tm_monitor_check(tm);
    return rc;
}

int fpp__tm_state_error(fpp_tm *tm)
{
    if (tm->jfailed)
        return FPP_EJOURNAL;
    if (tm->raised) {
        if (tm->jr && fpp__journal_sync(tm) != 0) /* a raise stops the run: make it durable */
            return FPP_EJOURNAL;
        return FPP_ETASK;
    }
    if (tm->interrupted)
        return FPP_EINTR;
    return 0;
}

/* The task handed out by the last fpp_as_completed lives until the next call. */
static void finish_current(fpp_tm *tm)
{
    fpp_task *t = tm->current;
    tm->current = NULL;
    if (t && t->where == FPP__AT_CURRENT) {
        fpp__task_pin(tm, t, false);
        fpp__task_let_go(tm, t);
    }
}

static int64_t submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
    if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit: no function with id %d", fn);
        return FPP_ENOFN;
    }
    if (!arg && arg_len) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit: NULL argument with length %zu", arg_len);
        return FPP_EINVAL;
    }
    if (arg_len > tm->ex->opts.max_arg_size) {
        fpp__log(FPP_LOG_ERROR, "fpp_submit(%s): argument of %zu bytes exceeds max_arg_size (%zu bytes)",
                 fpp__tm_fn_name(fn), arg_len, tm->ex->opts.max_arg_size);
        return FPP_ETOOBIG;
    }
    fpp__tm_journal_check(tm);
    int rc = fpp__tm_state_error(tm);
    if (rc)
        return rc;
    if (atomic_exchange(&tm->intr, 0))
        return fpp__tm_interrupt(tm, false);
    bool rerun = false;
    if (tm->resuming && fpp__journal_skip(tm, tm->next_id, &rerun)) {
        /* An earlier run finished it: its id, and nothing to run. */
        int64_t id = tm->next_id++;
        fpp__tm_bump(&tm->c.skipped);
        fpp__order_skipped(tm, id);
        return id;
    }
    if (!room(tm)) {
        rc = drive(tm, ROOM, NULL, INT64_MAX);
        if (rc < 0)
            return rc;
    }
    char *label = NULL;
    if (o && o->label && o->label[0] && !(label = fpp__label_make(o->label, strlen(o->label))))
        return FPP_ENOMEM;
    fpp_task *t = fpp__task_make(tm, fn, arg, arg_len, false);
    if (!t) {
        fpp__free(label);
        return FPP_ENOMEM;
    }
    t->jrerun = rerun;
    if (o) {
        t->user = o->user;
        t->job.timeout_ms = o->timeout_ms;
        t->job.label = label;
    }
    fpp__list_push_back(&tm->pending, &t->job.link);
    int64_t id = t->job.id;
    fpp__tm_feed(tm);
    if (!tm->mon_running)
        fpp__tm_monitor_check(tm);
    return id;
}

int64_t fpp_submit_ex(fpp_tm *tm, int fn, const void *arg, size_t arg_len, const fpp_task_opts *o)
{
    int rc = fpp__tm_enter(tm, "fpp_submit", 0);
    if (rc)
        return rc;
    int64_t id = submit(tm, fn, arg, arg_len, o);
    fpp__tm_leave(tm);
    return id;
}

int64_t fpp_submit(fpp_tm *tm, int fn, const void *arg, size_t arg_len)
{
    return fpp_submit_ex(tm, fn, arg, arg_len, NULL);
}

static int next_task(fpp_tm *tm, fpp_task **task, int64_t deadline_ns, const char *call)
{
    int rc = fpp__tm_enter(tm, call, 0);
    if (rc) {
        if (task)
            *task = NULL;
        return rc;
    }
    if (!task) {
        fpp__log(FPP_LOG_ERROR, "%s: NULL task pointer", call);
        fpp__tm_leave(tm);
        return FPP_EINVAL;
    }
    *task = NULL;
    finish_current(tm);
    rc = fpp__tm_state_error(tm);
    if (rc == 0)
        rc = drive(tm, NEXT, NULL, deadline_ns);
    if (rc == 1) {
        fpp_task *t = fpp__order_peek(tm);
        fpp__list_unlink(&tm->doneq, &t->job.link);
        if (tm->ordered)
            tm->next_out = t->job.id + 1;
        fpp__task_unlist(tm, t);
        t->where = FPP__AT_CURRENT;
        fpp__task_pin(tm, t, true); /* the caller may read its result in place until the next call */
        tm->current = t;
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    fpp__tm_leave(tm);
    return rc;
}

int fpp_as_completed(fpp_tm *tm, fpp_task **task)
{
    return next_task(tm, task, INT64_MAX, "fpp_as_completed");
}

int fpp_as_completed_for(fpp_tm *tm, fpp_task **task, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : fpp__now_ns() + (int64_t)timeout_ms * 1000000;
    return next_task(tm, task, deadline, "fpp_as_completed_for");
}

int fpp_run(fpp_tm *tm)
{
    int rc = fpp__tm_enter(tm, "fpp_run", 0);
    if (rc)
        return rc;
    finish_current(tm);
    rc = fpp__tm_state_error(tm);
    if (rc == 0)
        rc = drive(tm, ALL, NULL, INT64_MAX);
    fpp__tm_leave(tm);
    return rc;
}

int fpp__tm_check_id(fpp_tm *tm, int64_t id, const char *call)
{
    if (id < 0 || id >= tm->next_id) {
        fpp__log(FPP_LOG_ERROR, "%s: no task with id %lld (ids issued so far: 0..%lld)", call, (long long)id,
                 (long long)tm->next_id - 1);
        return FPP_EINVAL;
    }
    return 0;
}

int fpp_wait(fpp_tm *tm, int64_t id, fpp_task **task)
{
    int rc = fpp__tm_enter(tm, "fpp_wait", 0);
    if (rc) {
        if (task)
            *task = NULL;
        return rc;
    }
    if (!task) {
        fpp__log(FPP_LOG_ERROR, "fpp_wait: NULL task pointer");
        fpp__tm_leave(tm);
        return FPP_EINVAL;
    }
    *task = NULL;
    rc = fpp__tm_check_id(tm, id, "fpp_wait");
    if (!rc)
        rc = fpp__tm_state_error(tm);
    if (!rc)
        rc = fpp__tm_ids_needed(tm);
    fpp_task *t = NULL;
    if (!rc && !(t = fpp__idmap_get(&tm->ids, id))) {
        if (fpp__journal_finished_before(tm, id))
            fpp__log(FPP_LOG_ERROR, "fpp_wait: task %lld was finished by an earlier run (the journal says so) and "
                     "is not run again; fpp_journal_find reads its outcome", (long long)id);
        else
            fpp__log(FPP_LOG_ERROR, "fpp_wait: task %lld was handed out already (by fpp_as_completed or fpp_wait) "
                     "or dropped by fpp_run", (long long)id);
        rc = FPP_ESTATE;
    }
    if (!rc)
        rc = drive(tm, ONE, t, INT64_MAX); /* at once if t is finished; an interrupt first */
    if (rc == 1) {
        /* Only now is t known to be alive: any other outcome may have recycled it. */
        fpp__list_unlink(&tm->doneq, &t->job.link);
        fpp__order_gone(tm, t);
        fpp__task_unlist(tm, t);
        t->where = FPP__AT_KEPT;
        t->keeps++;
        fpp__task_unpin(tm, t, true);
        *task = t;
    } else if (rc == FPP_ETASK) {
        *task = tm->failure;
    }
    fpp__tm_leave(tm);
    return rc;
}
