/* error_policy: the same run under raise, log or ignore. raise stops at the first failure
 * (queued tasks cancelled, running ones abandoned) and hands you the failed task; log logs
 * each failure at ERROR and goes on; ignore goes on silently, the error stays on the task.
 * Usage: error_policy [raise|log|ignore] [--threads] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int flaky(const void *arg, size_t len, fpp_out *out)
{
    int i;
    memcpy(&i, arg, sizeof i);
    (void)len;
    struct timespec ts = {0, 10000000L};
    nanosleep(&ts, NULL);
    if (i % 7 == 3)
        return fpp_out_fail(out, "item %d is unlucky", i), 1;
    int sq = i * i;
    return fpp_out_set(out, &sq, sizeof sq);
}

int main(int argc, char **argv)
{
    fpp_policy policy = FPP_RAISE;
    int threads = 0;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "log") == 0) policy = FPP_LOG;
        else if (strcmp(argv[a], "ignore") == 0) policy = FPP_IGNORE;
        else if (strcmp(argv[a], "raise") == 0) policy = FPP_RAISE;
        else if (strcmp(argv[a], "--threads") == 0) threads = 1;
        else { fprintf(stderr, "usage: %s [raise|log|ignore] [--threads]\n", argv[0]); return 2; }
    }
    int fn = fpp_register("flaky", flaky);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = policy, .retain_completed = 1};
    fpp_tm_create(&tm, ex, &to);
    for (int i = 0; i < 20; i++)
        fpp_submit(tm, fn, &i, sizeof i);
    int rc = fpp_run(tm);
    if (rc == FPP_ETASK) {
        const fpp_task *f = fpp_tm_failure(tm);
        printf("raised: task %lld failed: %s\n", (long long)fpp_task_id(f), fpp_task_error(f));
    }
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    int ok = 0, failed = 0, crashed = 0, cancelled = 0;
    for (size_t i = 0; i < n; i++) {
        fpp_status s = fpp_task_status(all[i]);
        ok += s == FPP_DONE;
        cancelled += s == FPP_CANCELLED;
        crashed += s == FPP_CRASHED;
        failed += s == FPP_FAILED;
        if (s == FPP_FAILED || s == FPP_CRASHED) {
            if (policy == FPP_IGNORE)
                printf("task %lld kept its error: %s\n", (long long)fpp_task_id(all[i]), fpp_task_error(all[i]));
        }
    }
    /* The words of fpp_stats: done, failed, crashed, timed out, cancelled. */
    printf("%s: %d done, %d failed, %d crashed, %d cancelled (fpp_run: %s)\n",
           policy == FPP_RAISE ? "raise" : policy == FPP_LOG ? "log" : "ignore", ok, failed, crashed, cancelled,
           fpp_err_name(rc));
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return 0;
}
