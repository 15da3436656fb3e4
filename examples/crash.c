/* crash: a task that segfaults among ordinary ones. On the process executor only its worker
 * dies: the task comes back FPP_CRASHED naming the signal, the worker is replaced, and every
 * other task completes. With --threads the same segfault takes the whole process down, which
 * is the point of the comparison (run it and see).
 * Usage: crash [--threads] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static int maybe_crash(const void *arg, size_t len, fpp_out *out)
{
    int i;
    memcpy(&i, arg, sizeof i);
    (void)len;
    if (i == 13) {
        volatile int *p = NULL;
        *p = i; /* segfault */
    }
    return fpp_out_set(out, &i, sizeof i);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
    int fn = fpp_register("maybe_crash", maybe_crash);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &to);
    for (int i = 0; i < 30; i++)
        fpp_submit(tm, fn, &i, sizeof i);
    fpp_task *t;
    int done = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_status(t) == FPP_DONE)
            done++;
        else
            printf("task %lld: %s (signal %d)\n", (long long)fpp_task_id(t), fpp_task_error(t), fpp_task_signal(t));
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    printf("%d of 30 tasks done, %llu crashed, %llu worker restart(s)\n", done, (unsigned long long)st.crashed,
           (unsigned long long)st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return done == 29 ? 0 : 1;
}
