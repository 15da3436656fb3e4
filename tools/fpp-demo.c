/* fpp-demo: the README's first command runs this. It registers a few functions, runs a few
 * thousand tasks on the process executor (one of which segfaults and one of which calls
 * exit()), shows that the pool carries on, and prints what happened. --threads runs the same
 * on the thread executor (without the crashing tasks: a crash there takes the process down).
 * Uses only <fpp.h>. */
#include <fpp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int square(const void *arg, size_t len, fpp_out *out)
{
    uint64_t x;
    if (len != sizeof x)
        return fpp_out_fail(out, "want 8 bytes, got %zu", len), 1;
    memcpy(&x, arg, sizeof x);
    x *= x;
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
    int threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
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
    fpp_tm_opts to = {.error_policy = FPP_LOG, .monitor_interval_ms = 250};
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
    fpp_task *t;
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
        } else {
            bad++;
            printf("task %" PRId64 ": %s (%s)\n", fpp_task_id(t), fpp_status_name(fpp_task_status(t)),
                   fpp_task_error(t));
        }
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    printf("%ld tasks done (%ld wrong results), %ld failed; %" PRIu64 " worker restart(s)\n", ok, wrong,
           bad, st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return rc == 0 && wrong == 0 ? 0 : 1;
}
