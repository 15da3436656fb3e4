/* backpressure: a lazy map over 1,000,000,000 items of a 0.1 ms task. Items are pulled only as
 * room frees (max_in_flight), so the monitor speaks at once, memory stays flat however long it
 * runs, and one Ctrl-C stops everything at once. futureproof's backpressure example; compare
 * concurrent.futures, which queues all 10^9 up front.
 * Usage: backpressure [--threads] [--items N] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int custom_sum(const void *arg, size_t len, fpp_out *out)
{
    unsigned long long a;
    (void)len;
    memcpy(&a, arg, sizeof a);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do /* 0.1 ms of CPU */
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000LL + (t.tv_nsec - t0.tv_nsec) < 100000);
    a += 1;
    return fpp_out_set(out, &a, sizeof a);
}

typedef struct range { unsigned long long next, end, cur; } range;

static int next_item(void *state, const void **arg, size_t *len)
{
    range *r = state;
    if (r->next == r->end)
        return 0;
    r->cur = r->next++;
    *arg = &r->cur;
    *len = sizeof r->cur;
    return 1;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * 4;
}

int main(int argc, char **argv)
{
    int threads = 0;
    unsigned long long items = 1000000000ULL;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--threads") == 0) threads = 1;
        else if (strcmp(argv[a], "--items") == 0 && a + 1 < argc) items = strtoull(argv[++a], NULL, 10);
    }
    int fn = fpp_register("custom_sum", custom_sum);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.max_in_flight = 64, .monitor_interval_ms = 1000};
    fpp_tm_create(&tm, ex, &to);
    printf("Starting backpressure test with %llu tasks (resident memory %ld KiB)\n", items, rss_kib());
    printf("You may Ctrl-C at any point and the executor will stop at once\n");
    fflush(stdout);
    range r = {0, items, 0};
    fpp_map(tm, fn, next_item, &r);
    fpp_task *t;
    unsigned long long n = 0;
    int rc;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        if (++n % 20000 == 0) {
            printf("%llu results, resident memory %ld KiB\n", n, rss_kib());
            fflush(stdout);
        }
    }
    printf("stopped: %s after %llu results (resident memory %ld KiB)\n", rc == 0 ? "finished" : fpp_err_name(rc), n, rss_kib());
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return rc == 0 || rc == FPP_EINTR ? 0 : 1;
}
