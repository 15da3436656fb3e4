/* tm/progress.c: the text of FPP_TM_PROGRESS's line, from a snapshot of the counters:
 *
 *   [#######.......] 41% 41,200/100,000 done, 3 failed, 12.3k/s, ETA 0:05
 *
 * Without expected_total there is no bar, percentage or ETA ("41,200 done, 3 failed,
 * 12.3k/s"). With FPP_TM_ORDERED, while later results wait behind an unfinished task, the line
 * ends with ", waiting on task 123 for 40 s". The line is cut to the terminal's width so that
 * redrawing it in place never wraps. Pure formatting: the monitor thread draws it
 * (monitor.c), log.c keeps it off the log lines. */
#include <stdio.h>
#include <string.h>

#include "tm/tm.h"

#define BAR 14

/* 41200 -> "41,200" */
static void grouped(char *out, size_t cap, uint64_t v)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
}

/* 12345.6 -> "12.3k" */
static void rate_text(char *out, size_t cap, double r)
{
    if (r < 0)
        snprintf(out, cap, "-");
    else if (r >= 9.95e5)
        snprintf(out, cap, "%.1fM", r / 1e6);
    else if (r >= 9995)
        snprintf(out, cap, "%.1fk", r / 1e3);
    else if (r >= 100)
        snprintf(out, cap, "%.0f", r);
    else
        snprintf(out, cap, "%.1f", r);
}

/* seconds -> "0:05", "12:34", "3:02:01" */
static void clock_text(char *out, size_t cap, double s)
{
    if (s < 0 || s > 359999)
        snprintf(out, cap, "-:--");
    else {
        unsigned long t = (unsigned long)(s + 0.5);
        if (t >= 3600)
            snprintf(out, cap, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
        else
            snprintf(out, cap, "%lu:%02lu", t / 60, t % 60);
    }
}

size_t fpp__progress_format(char *buf, size_t cap, uint64_t ended, uint64_t failed, uint64_t total,
                            double rate, int64_t wait_id, double wait_s, int width)
{
    char done[32], all[32], fail[32], rt[32], eta[32];
    grouped(done, sizeof done, ended);
    grouped(fail, sizeof fail, failed);
    rate_text(rt, sizeof rt, rate);
    size_t n = 0;
#define PUT(...)                                                             \
    do {                                                                     \
        int k_ = snprintf(buf + n, cap > n ? cap - n : 0, __VA_ARGS__);      \
        if (k_ > 0)                                                          \
            n = FPP__MIN(n + (size_t)k_, cap ? cap - 1 : 0);                 \
    } while (0)
    if (total) {
        uint64_t shown = ended > total ? total : ended;
        int pct = (int)(shown * 100 / total);
        int full = (int)(shown * BAR / total);
        char bar[BAR + 1];
        for (int i = 0; i < BAR; i++)
            bar[i] = i < full ? '#' : '.';
        bar[BAR] = 0;
        grouped(all, sizeof all, total);
        double left = rate > 0 ? (double)(total - shown) / rate : -1;
        clock_text(eta, sizeof eta, left);
        PUT("[%s] %d%% %s/%s done, %s failed, %s/s, ETA %s", bar, pct, done, all, fail, rt, eta);
    } else {
        PUT("%s done, %s failed, %s/s", done, fail, rt);
    }
    if (wait_id >= 0) {
        if (wait_s >= 10)
            PUT(", waiting on task %lld for %.0f s", (long long)wait_id, wait_s);
        else
            PUT(", waiting on task %lld for %.1f s", (long long)wait_id, wait_s);
    }
#undef PUT
    if (width > 1 && n >= (size_t)width) {
        n = (size_t)width - 1;
        buf[n] = 0;
    }
    return n;
}
