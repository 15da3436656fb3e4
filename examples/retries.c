/* retries: a flaky function that crashes the first time it meets an item, and succeeds when
 * it runs again. With retries = 2 each such task runs again in another worker, the pool
 * replaces the crashed worker, and the caller sees only the final outcome:
 * fpp_task_attempts says how many runs it took, fpp_stats.retried how many runs were extra.
 * With --threads a crash would take the whole process down, so the flaky function fails with
 * fpp_out_fail instead, and FPP_TM_RETRY_FAILED makes failures retried too.
 * Usage: retries [--threads] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <fpp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64]; /* marker files: "this item was seen before" survives the crash */
static int threads;

static int flaky_square(const void *arg, size_t len, fpp_out *out)
{
    uint64_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    if (x % 3 == 0) { /* every third item is flaky */
        char path[128];
        snprintf(path, sizeof path, "%s/%llu", dir, (unsigned long long)x);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd >= 0) { /* first time: go wrong */
            close(fd);
            if (threads)
                return fpp_out_fail(out, "item %llu: flaky failure", (unsigned long long)x), 1;
            raise(SIGSEGV);
        }
    }
    x *= x;
    return fpp_out_set(out, &x, sizeof x);
}

int main(int argc, char **argv)
{
    threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
    snprintf(dir, sizeof dir, "/tmp/fpp-retries-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    int fn = fpp_register("flaky_square", flaky_square);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_RAISE, /* a crash that is retried never raises */
                      .monitor_interval_ms = -1,
                      .retries = 2,
                      .flags = threads ? FPP_TM_RETRY_FAILED : 0};
    if (fpp_tm_create(&tm, ex, &to) != 0)
        return 1;
    for (uint64_t i = 0; i < 10; i++)
        fpp_submit(tm, fn, &i, sizeof i);
    fpp_task *t;
    int rc, wrong = 0;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        uint64_t x, y;
        memcpy(&x, fpp_task_arg(t, NULL), sizeof x);
        memcpy(&y, fpp_task_result(t, NULL), sizeof y);
        wrong += y != x * x;
        printf("item %llu: %llu after %u attempt(s)\n", (unsigned long long)x, (unsigned long long)y,
               fpp_task_attempts(t));
    }
    if (rc == FPP_ETASK)
        printf("raised: %s\n", fpp_task_error(t));
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    printf("%llu done, %llu extra attempt(s), %llu worker restart(s)\n", (unsigned long long)st.done,
           (unsigned long long)st.retried, (unsigned long long)st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    for (uint64_t i = 0; i < 10; i += 3) {
        char path[128];
        snprintf(path, sizeof path, "%s/%llu", dir, (unsigned long long)i);
        unlink(path);
    }
    rmdir(dir);
    return rc == 0 && wrong == 0 && st.done == 10 && st.retried == 4 ? 0 : 1;
}
