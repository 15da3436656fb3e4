/* helper_atexit: a program whose atexit handler frees its task manager and executor, and one
 * of whose tasks calls exit(). The handler then also runs inside that worker, on the worker's
 * copy of the parent's objects: it must get "this executor belongs to process N", release only
 * the worker's memory, and leave the parent's pool alone (0.1: the worker hung in the monitor's
 * join, or cancelled other tasks through the shared ring). Run by test_owner; prints
 * "done=D crashed=C wrong=W" and exits 0 when every other task came back right. Not Criterion:
 * exit() in a Criterion test process would run Criterion's own exit hooks in the worker. */
#define _GNU_SOURCE
#include <fpp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fpp_executor *g_ex;
static fpp_tm *g_tm;

static void cleanup(void)
{
    fpp_tm_free(g_tm);
    fpp_executor_free(g_ex);
    g_tm = NULL;
    g_ex = NULL;
}

static int square(const void *arg, size_t len, fpp_out *out)
{
    uint64_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    x *= x;
    return fpp_out_set(out, &x, sizeof x);
}

static int quit(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    exit(0); /* runs cleanup() in the worker */
}

static int segv(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    raise(SIGSEGV);
    return 0;
}

int main(int argc, char **argv)
{
    int monitor_ms = argc > 1 ? atoi(argv[1]) : 50;
    int f_square = fpp_register("square", square), f_quit = fpp_register("quit", quit),
        f_segv = fpp_register("segv", segv);
    atexit(cleanup);
    fpp_executor_opts eo = {.workers = 1};
    if (fpp_process_executor(&g_ex, &eo) != 0)
        return 2;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = monitor_ms, .retain_completed = 1};
    if (fpp_tm_create(&g_tm, g_ex, &to) != 0)
        return 3;
    /* Tasks 0 and 1 kill the worker twice. A replacement forked from the parent as it is now
     * (0.1's spare, forked after the first hand-off) sees g_ex and g_tm set; one forked from a
     * snapshot taken at creation sees them NULL, and the handler has nothing to free. Either
     * way nothing may break. */
    fpp_submit(g_tm, f_segv, NULL, 0);
    fpp_submit(g_tm, f_segv, NULL, 0);
    for (uint64_t i = 2; i <= 202; i++)
        fpp_submit(g_tm, i == 102 ? f_quit : f_square, &i, sizeof i);
    int rc = fpp_run(g_tm);
    fpp_task *const *all;
    size_t n = fpp_completed(g_tm, &all);
    int done = 0, crashed = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (fpp_task_status(all[i]) == FPP_CRASHED) {
            crashed++;
            continue;
        }
        uint64_t x, y;
        if (fpp_task_status(all[i]) != FPP_DONE) {
            wrong++;
            continue;
        }
        memcpy(&x, fpp_task_arg(all[i], NULL), sizeof x);
        memcpy(&y, fpp_task_result(all[i], NULL), sizeof y);
        done++;
        wrong += y != x * x;
    }
    printf("rc=%d done=%d crashed=%d wrong=%d\n", rc, done, crashed, wrong);
    fflush(stdout);
    cleanup();
    return rc == 0 && done == 200 && crashed == 3 && wrong == 0 ? 0 : 1;
}
