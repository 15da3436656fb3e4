/* fpp-demo: the README's first command runs this. It registers a few functions, runs a few
 * thousand tasks on the process executor (one of which segfaults and one of which calls
 * exit()), shows that the pool carries on, and prints what happened. --threads runs the same
 * on the thread executor (without the crashing tasks: a crash there takes the process down).
 * When stderr is a terminal a progress line shows the run (FPP_TM_PROGRESS); --progress makes
 * each task take half a millisecond so that there is time to watch it. Uses only <fpp.h>. */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int slow; /* --progress: each task takes 0.5 ms */

static int square(const void *arg, size_t len, fpp_out *out)
{
    uint64_t x;
    if (len != sizeof x)
        return fpp_out_fail(out, "want 8 bytes, got %zu", len), 1;
    memcpy(&x, arg, sizeof x);
    x *= x;
    if (slow) {
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    return fpp_out_set(out, &x, sizeof x);
}

static int segfault(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    raise(SIGSEGV);
    return 0;
}

static int quit(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    exit(3);
}

int main(int argc, char **argv)
{
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = 1;
        else if (strcmp(argv[i], "--progress") == 0)
            slow = 1; /* set before the executor exists: its workers see it */
        else {
            fprintf(stderr, "usage: fpp-demo [--threads] [--progress]\n");
            return 2;
        }
    }
    long n = 5000;
    int f_square = fpp_register("square", square);
    int f_segv = fpp_register("segfault", segfault);
    int f_exit = fpp_register("exit", quit);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    if (rc) {
        fprintf(stderr, "executor: %s\n", fpp_strerror(rc));
        return 1;
    }
    fpp_tm *tm;
    /* On a terminal the progress line replaces the monitor lines; elsewhere they show. */
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = 250, .flags = FPP_TM_PROGRESS,
                      .expected_total = (uint64_t)n};
    fpp_tm_create(&tm, ex, &to);
    printf("fpp %s demo: %ld tasks on the %s executor with 2 workers%s\n", FPP_VERSION_STRING, n,
           threads ? "thread" : "process", threads ? "" : "; task 1000 segfaults, task 3000 calls exit(3)");
    for (uint64_t i = 0; i < (uint64_t)n; i++) {
        int fn = f_square;
        if (!threads && i == 1000)
            fn = f_segv;
        if (!threads && i == 3000)
            fn = f_exit;
        if (fpp_submit(tm, fn, &i, sizeof i) < 0) {
            fprintf(stderr, "submit failed\n");
            return 1;
        }
    }
    fpp_task *t, *failed[8];
    long ok = 0, bad = 0, wrong = 0;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        size_t len;
        const void *r = fpp_task_result(t, &len);
        if (r) {
            uint64_t x, y;
            memcpy(&x, fpp_task_arg(t, NULL), sizeof x);
            memcpy(&y, r, sizeof y);
            ok++;
            wrong += y != x * x;
        } else if (bad < 8) {
            failed[bad++] = fpp_task_keep(t); /* printed after the run, off the progress line */
        } else {
            bad++;
        }
    }
    for (long i = 0; i < bad && i < 8; i++) {
        printf("task %" PRId64 ": %s (%s)\n", fpp_task_id(failed[i]), fpp_status_name(fpp_task_status(failed[i])),
               fpp_task_error(failed[i]));
        fpp_task_release(failed[i]);
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    /* fpp_stats' words: done, failed, crashed, timed out, cancelled. */
    printf("%ld tasks done (%ld wrong results), %" PRIu64 " failed, %" PRIu64 " crashed, %" PRIu64
           " timed out; %" PRIu64 " worker restart(s)\n",
           ok, wrong, st.failed, st.crashed, st.timed_out, st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return rc == 0 && wrong == 0 ? 0 : 1;
}
