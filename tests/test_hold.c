/* test_hold.c: the task manager's side of zero-copy results (fpp__exec_ops.unpin). A fake
 * backend finishes each task at the next poll with its result "held" (t->hold set, as an
 * executor that leaves results in a worker's arena would) and records every unpin. The task
 * manager must unpin(false) a held task when it recycles it, and unpin(true) (move the bytes
 * into the task) when the task is kept, retained, waited for, raised, or outlives the executor.
 * Internal interface: this is the contract the lead's zero-copy executor relies on. */
#include "common.h"
#include "exec/exec.h"

typedef struct fake {
    fpp__job *queue[256];
    int n;
    int holds, drops, moves; /* holds set; unpin(false); unpin(true) */
    bool bad;                /* an unpin on a task without a hold */
} fake;

static fake *F;
static char HOLD; /* the marker hold pointer */

static int f_dispatch(fpp_executor *ex, fpp__job *t)
{
    fake *f = ex->impl;
    if (f->n == 256)
        return 1;
    f->queue[f->n++] = t;
    return 0;
}
static void f_flush(fpp_executor *ex) { (void)ex; }
static int f_poll(fpp_executor *ex, int64_t deadline)
{
    (void)deadline;
    fake *f = ex->impl;
    int n = f->n;
    f->n = 0;
    fpp__job *q[256];
    memcpy(q, f->queue, (size_t)n * sizeof *q);
    for (int i = 0; i < n; i++) {
        uint64_t x = u64_of(q[i]->arg);
        if (x == 666) {
            fpp__job_fail(q[i], FPP_FAILED, 0, "six six six");
        } else {
            x *= x;
            fpp__job_set_result(q[i], &x, 8);
            q[i]->hold = &HOLD; /* pretend the bytes are still the worker's */
            f->holds++;
        }
        fpp__exec_finished(ex, q[i]);
    }
    return n;
}
static void f_cancel(fpp_executor *ex, bool wait)
{
    (void)wait;
    fake *f = ex->impl;
    for (int i = 0; i < f->n; i++) {
        fpp__job_fail(f->queue[i], FPP_CANCELLED, 0, "cancelled");
        fpp__exec_finished(ex, f->queue[i]);
    }
    f->n = 0;
}
static void f_wake(fpp_executor *ex) { (void)ex; }
static void f_destroy(fpp_executor *ex, bool owner)
{
    (void)owner;
    ex->impl = NULL; /* F stays readable after the executor is gone; the test process ends */
}
static void f_unpin(fpp_executor *ex, fpp__job *t, bool keep)
{
    fake *f = ex->impl;
    if (t->hold != &HOLD)
        f->bad = true;
    t->hold = NULL;
    if (keep)
        f->moves++;
    else
        f->drops++;
}

static const fpp__exec_ops fake_ops = {
    .kind = "fake", .dispatch = f_dispatch, .flush = f_flush, .poll = f_poll, .cancel = f_cancel,
    .wake = f_wake, .destroy = f_destroy, .unpin = f_unpin,
};

static int fake_start(fpp_executor *ex)
{
    static fake one;
    memset(&one, 0, sizeof one);
    F = &one;
    ex->impl = F;
    ex->ops = &fake_ops;
    return 0;
}

static fpp_tm *fake_tm(fpp_executor **ex, fpp_policy p, int retain)
{
    fpp_executor_opts eo = {.workers = 1};
    cr_assert_eq(fpp__executor_create(ex, &eo, fake_start), 0);
    return mk_tm(*ex, p, retain);
}

static void submit_n(fpp_tm *tm, uint64_t from, uint64_t n)
{
    for (uint64_t i = from; i < from + n; i++)
        cr_assert_geq(fpp_submit(tm, F_SQUARE, &i, 8), 0);
}

Test(hold, a_recycled_task_is_unpinned_and_dropped_a_kept_one_moved)
{
    fpp_executor *ex;
    fpp_tm *tm = fake_tm(&ex, FPP_RAISE, 0);
    submit_n(tm, 1, 3);
    fpp_task *a, *b;
    cr_assert_eq(fpp_as_completed(tm, &a), 1);
    cr_expect_eq(F->drops + F->moves, 0, "handed out: still held");
    cr_assert_eq(fpp_as_completed(tm, &b), 1);
    cr_expect_eq(F->drops, 1, "the previous one was recycled: dropped");
    cr_expect_eq(fpp_task_keep(b), b);
    cr_expect_eq(F->moves, 1, "kept: moved into the task");
    fpp_task_keep(b);
    cr_expect_eq(F->moves, 1, "no hold left to move");
    cr_assert_eq(fpp_as_completed(tm, &a), 1);
    cr_expect_eq(F->drops, 1, "b was kept: not dropped");
    cr_expect_eq(u64_of(fpp_task_result(b, NULL)), u64_of(fpp_task_arg(b, NULL)) * u64_of(fpp_task_arg(b, NULL)));
    fpp_task_release(b);
    fpp_task_release(b); /* recycled now, its hold gone already: no unpin */
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(F->drops, 2, "a, the current one, dropped by fpp_run's start");
    /* fpp_run drops what it finishes. */
    submit_n(tm, 10, 5);
    cr_expect_eq(fpp_run(tm), 0);
    cr_expect_eq(F->drops, 7);
    cr_expect_not(F->bad);
    cr_expect_eq(F->holds, F->drops + F->moves, "every hold ended exactly once");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

Test(hold, retained_waited_and_raised_tasks_are_moved_at_once)
{
    fpp_executor *ex;
    fpp_tm *tm = fake_tm(&ex, FPP_RAISE, 1);
    submit_n(tm, 1, 4);
    fpp_task *t;
    cr_assert_eq(fpp_wait(tm, 2, &t), 1);
    cr_expect_eq(F->moves, 4, "retained as they finish: every hold moved");
    fpp_task_release(t);
    fpp_tm_free(tm);
    fpp_executor_free(ex);

    tm = fake_tm(&ex, FPP_RAISE, 0);
    submit_n(tm, 1, 4);
    cr_assert_eq(fpp_wait(tm, 2, &t), 1);
    cr_expect_eq(F->moves, 1, "the waited task is kept: moved");
    fpp_submit(tm, F_SQUARE, &(uint64_t){666}, 8);
    cr_expect_eq(fpp_run(tm), FPP_ETASK);
    fpp_task_release(t);
    fpp_tm_free(tm); /* what is left is dropped before the executor goes */
    cr_expect_not(F->bad);
    cr_expect_eq(F->holds, 4, "the failed task had no result to hold");
    cr_expect_eq(F->moves, 1);
    cr_expect_eq(F->drops, 3, "every other hold dropped by the raise or by fpp_tm_free");
    fpp_executor_free(ex);
}

Test(hold, the_executor_freed_first_moves_what_the_caller_still_holds)
{
    fpp_executor *ex;
    fpp_tm *tm = fake_tm(&ex, FPP_IGNORE, 0);
    submit_n(tm, 1, 3);
    fpp_task *kept, *cur;
    cr_assert_eq(fpp_as_completed(tm, &kept), 1);
    fpp_task_keep(kept);
    cr_assert_eq(fpp_as_completed(tm, &cur), 1);
    cr_assert_eq(F->moves, 1);
    cr_assert_eq(F->drops, 0);
    /* The third task is finished and unreturned: dropped. The current one lives until the
     * next call, which may come after the executor is gone: moved. */
    fpp_executor_free(ex);
    cr_expect_eq(F->moves, 2);
    cr_expect_eq(F->drops, 1);
    cr_expect_eq(F->holds, 3);
    cr_expect_not(F->bad);
    uint64_t x = u64_of(fpp_task_arg(cur, NULL));
    cr_expect_eq(u64_of(fpp_task_result(cur, NULL)), x * x, "the current task is readable");
    x = u64_of(fpp_task_arg(kept, NULL));
    cr_expect_eq(u64_of(fpp_task_result(kept, NULL)), x * x, "the kept task is readable");
    fpp_task_release(kept);
    fpp_tm_free(tm);
}
