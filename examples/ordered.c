/* ordered: a lazy map whose results come back in input order (FPP_TM_ORDERED) although the
 * tasks take random times, with a live progress line when stderr is a terminal
 * (FPP_TM_PROGRESS; expected_total gives it a percentage and an ETA). The reorder window
 * counts toward max_in_flight, so this runs in constant memory however many items there are.
 * Usage: ordered [--threads] [--items N] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Squares a number after a pseudo-random pause: mostly 0.1 ms, one item in 100 takes 20 ms. */
static int slow_square(const void *arg, size_t len, fpp_out *out)
{
    uint64_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    uint64_t h = x * 0x9E3779B97F4A7C15ULL;
    struct timespec ts = {0, (h >> 32) % 100 == 0 ? 20000000L : 100000L};
    nanosleep(&ts, NULL);
    x *= x;
    return fpp_out_set(out, &x, sizeof x);
}

typedef struct counter { uint64_t next, end, cur; } counter;

static int next_number(void *state, const void **arg, size_t *len)
{
    counter *c = state;
    if (c->next == c->end)
        return 0;
    c->cur = c->next++;
    *arg = &c->cur;
    *len = sizeof c->cur;
    return 1;
}

int main(int argc, char **argv)
{
    int threads = 0;
    uint64_t items = 20000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = 1;
        else if (strcmp(argv[i], "--items") == 0 && i + 1 < argc)
            items = strtoull(argv[++i], NULL, 10);
    }
    int fn = fpp_register("slow_square", slow_square);
    fpp_executor *ex;
    if ((threads ? fpp_thread_executor(&ex, NULL) : fpp_process_executor(&ex, NULL)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_LOG,
                      .max_in_flight = 256,          /* the reorder window included */
                      .flags = FPP_TM_ORDERED | FPP_TM_PROGRESS,
                      .expected_total = items};      /* the progress line's 100% */
    if (fpp_tm_create(&tm, ex, &to) != 0)
        return 1;
    counter c = {.end = items};
    fpp_map(tm, fn, next_number, &c);
    fpp_task *t;
    uint64_t expect = 0, sum = 0;
    int rc, in_order = 1;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        uint64_t x, y;
        memcpy(&x, fpp_task_arg(t, NULL), sizeof x);
        memcpy(&y, fpp_task_result(t, NULL), sizeof y);
        in_order = in_order && x == expect && (uint64_t)fpp_task_id(t) == expect;
        expect++;
        sum += y;
    }
    /* Printed after the run: the progress line is gone by now. */
    printf("%llu results, %s; sum of squares %llu\n", (unsigned long long)expect,
           in_order ? "all in input order" : "OUT OF ORDER", (unsigned long long)sum);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return rc == 0 && in_order && expect == items ? 0 : 1;
}
