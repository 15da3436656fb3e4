/* completed_tasks: no as_completed loop at all. With retain_completed, fpp_run finishes
 * everything (the monitor speaks meanwhile) and fpp_completed lists the tasks in completion
 * order, results and errors on each. futureproof's `tm.completed_tasks`.
 * Usage: completed_tasks [--threads] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int slow_len(const void *arg, size_t len, fpp_out *out)
{
    struct timespec ts = {0, 30000000L * (long)(len % 5 + 1)};
    nanosleep(&ts, NULL);
    if (len == 0)
        return fpp_out_fail(out, "empty word"), 1;
    (void)arg;
    return fpp_out_set(out, &len, sizeof len);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
    const char *words[] = {"futureproof", "", "process", "pool", "crash", "isolation", "monitor"};
    int fn = fpp_register("slow_len", slow_len);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 3};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .retain_completed = 1, .monitor_interval_ms = 100};
    fpp_tm_create(&tm, ex, &to);
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        fpp_submit(tm, fn, words[i], strlen(words[i]));
    fpp_run(tm);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    for (size_t i = 0; i < n; i++) {
        size_t alen;
        const char *w = fpp_task_arg(all[i], &alen);
        if (fpp_task_status(all[i]) == FPP_DONE) {
            size_t r;
            memcpy(&r, fpp_task_result(all[i], NULL), sizeof r);
            printf("'%.*s' has %zu letters\n", (int)alen, w, r);
        } else {
            printf("'%.*s' generated an error: %s\n", (int)alen, w, fpp_task_error(all[i]));
        }
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return 0;
}
