/* tm/order.c: FPP_TM_ORDERED, results in id order. `frontier` is the oldest unfinished task's id
 * (next_id when none); every id below it is finished or handed out. `held` counts finished,
 * unreturned tasks above it (the reorder window, which counts toward max_in_flight so that a
 * map over 10^9 items runs in constant memory). fpp_as_completed hands out `next_out` once it
 * is below the frontier, skipping ids taken by fpp_wait or skipped by the journal (no task
 * there: fpp__order_skipped moves the frontier past them). Each id is passed once by the
 * frontier: O(1) amortised. The monitor names the task holding the window (wait_id; a labelled
 * task by its label, handed to the monitor once when it starts holding the window). */
#include "tm/tm.h"

static void publish_wait(fpp_tm *tm)
{
    int64_t id = tm->held ? tm->frontier : -1;
    if (id >= 0 && id != tm->wait_named) {
        /* A labelled task's name goes to the monitor once, when it starts holding the window. */
        tm->wait_named = id;
        fpp_task *t = fpp__idmap_get(&tm->ids, id);
        if (t && t->job.label)
            fpp__monitor_name_wait(&tm->c, &t->job);
    }
    atomic_store_explicit(&tm->c.held, tm->held, memory_order_relaxed);
    atomic_store_explicit(&tm->c.wait_id, id, memory_order_relaxed);
}

/* The frontier's task finished: move on to the next unfinished one. */
static void advance(fpp_tm *tm)
{
    int64_t f = tm->frontier + 1;
    while (f < tm->next_id) {
        fpp_task *t = fpp__idmap_get(&tm->ids, f);
        if (t && t->where != FPP__AT_DONEQ)
            break;
        if (t)
            tm->held--; /* finished above the old frontier: it was held back */
        f++;
    }
    tm->frontier = f;
    atomic_store_explicit(&tm->c.wait_since_ns, tm->held ? fpp__now_ns() : 0, memory_order_relaxed);
    publish_wait(tm);
}

void fpp__order_done(fpp_tm *tm, fpp_task *t)
{
    if (t->job.id > tm->frontier) {
        if (tm->held++ == 0)
            atomic_store_explicit(&tm->c.wait_since_ns, fpp__now_ns(), memory_order_relaxed);
        publish_wait(tm);
    } else if (t->job.id == tm->frontier) {
        advance(tm);
    }
}

/* The newest id was skipped (an earlier run finished it: journal): it has no task, so if the
 * frontier waits on it, move on. */
void fpp__order_skipped(fpp_tm *tm, int64_t id)
{
    if (tm->ordered && id == tm->frontier)
        advance(tm);
}

/* A finished task left the table other than in order (fpp_wait, dropped). */
void fpp__order_gone(fpp_tm *tm, fpp_task *t)
{
    if (tm->ordered && t->job.id > tm->frontier) {
        tm->held--;
        publish_wait(tm);
    }
}

fpp_task *fpp__order_peek(fpp_tm *tm)
{
    if (!tm->ordered)
        return fpp__task_at(tm->doneq.head);
    while (tm->next_out < tm->frontier) {
        fpp_task *t = fpp__idmap_get(&tm->ids, tm->next_out);
        if (t)
            return t; /* below the frontier: finished */
        tm->next_out++; /* taken by fpp_wait or dropped */
    }
    return NULL;
}
