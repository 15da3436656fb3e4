/* futures: tasks you can hold, the way concurrent.futures users expect. Each task carries a
 * user pointer (fpp_submit_ex) and may have a timeout of its own; one task is waited for by its
 * id (fpp_wait) while the others keep running; a slow one is cancelled (fpp_cancel); a few
 * results are kept past the next call (fpp_task_keep) and read at the end.
 * Usage: futures [--threads] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Sleeps the given milliseconds, then returns twice the number. */
static int work(const void *arg, size_t len, fpp_out *out)
{
    int ms;
    if (len != sizeof ms)
        return fpp_out_fail(out, "want an int"), 1;
    memcpy(&ms, arg, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    ms *= 2;
    return fpp_out_set(out, &ms, sizeof ms);
}

typedef struct job { const char *name; int ms; unsigned timeout_ms; int64_t id; } job;

int main(int argc, char **argv)
{
    int threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
    int fn = fpp_register("work", work);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
    if (fpp_tm_create(&tm, ex, &to) != 0)
        return 1;
    job jobs[] = {
        {"alpha", 50, 0, 0},   {"beta", 120, 0, 0},  {"gamma", 300, 0, 0},
        {"slow", 1000, 0, 0},  /* cancelled below */
        {"stuck", 800, 100, 0}, /* its own timeout: 100 ms */
        {"delta", 30, 0, 0},   {"epsilon", 60, 0, 0},
    };
    size_t n = sizeof jobs / sizeof *jobs;
    for (size_t i = 0; i < n; i++) {
        fpp_task_opts o = {.user = &jobs[i], .timeout_ms = jobs[i].timeout_ms};
        jobs[i].id = fpp_submit_ex(tm, fn, &jobs[i].ms, sizeof jobs[i].ms, &o);
    }

    /* One result, by id, while the rest go on. The waited task is kept: release it. */
    fpp_task *t;
    if (fpp_wait(tm, jobs[2].id, &t) == 1) {
        int r;
        memcpy(&r, fpp_task_result(t, NULL), sizeof r);
        printf("waited for %s: %d\n", ((job *)fpp_task_user(t))->name, r);
        fpp_task_release(t);
    }
    printf("cancel slow: %s\n", fpp_cancel(tm, jobs[3].id) == 1 ? "cancelled" : "already finished");

    /* Everything else in completion order; keep the first two that succeed. */
    fpp_task *kept[2] = {NULL, NULL};
    int nkept = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        job *j = fpp_task_user(t);
        printf("%-8s %-9s (attempts %u)%s%s\n", j->name, fpp_status_name(fpp_task_status(t)),
               fpp_task_attempts(t), fpp_task_error(t) ? ": " : "", fpp_task_error(t) ? fpp_task_error(t) : "");
        if (fpp_task_status(t) == FPP_DONE && nkept < 2)
            kept[nkept++] = fpp_task_keep(t); /* read the result after keeping: it may move */
    }
    /* Kept tasks outlive as_completed's "until the next call". */
    for (int i = 0; i < nkept; i++) {
        int r;
        memcpy(&r, fpp_task_result(kept[i], NULL), sizeof r);
        printf("kept: %s -> %d\n", ((job *)fpp_task_user(kept[i]))->name, r);
        fpp_task_release(kept[i]);
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    printf("%llu done, %llu timed out, %llu cancelled\n", (unsigned long long)st.done,
           (unsigned long long)st.timed_out, (unsigned long long)st.cancelled);
    int ok = st.done == 5 && st.timed_out == 1 && st.cancelled == 1 && nkept == 2;
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return ok ? 0 : 1;
}
