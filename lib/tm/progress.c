/* tm/progress.c: the text of FPP_TM_PROGRESS's line, from a snapshot of the counters:
 *
 *   [#######.......] 41% 41,200/100,000 finished, 3 failed, 2 crashed, 12.3k/s, ETA 0:05,
 *   last: task 17 "in/0042.bin" crashed
 *
 * One vocabulary with fpp_stats: "finished" counts every outcome; then, where not zero, the
 * outcomes that are not "done", in fpp_stats' words (failed, crashed, timed out, cancelled);
 * then the rate, the ETA, and the last task that did not end done, by its name (label).
 * Without expected_total there is no bar, percentage or ETA ("41,200 finished, 3 failed,
 * 12.3k/s"). With FPP_TM_ORDERED, while later results wait behind an unfinished task,
 * ", waiting on task 123 for 40 s" comes before the last failure. The line is cut to the
 * terminal's width so that redrawing it in place never wraps. Pure formatting: the monitor
 * thread draws it (monitor.c), log.c keeps it off the log lines. */
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

size_t fpp__progress_format(char *buf, size_t cap, const fpp__progress_snap *s, int width)
{
    char done[32], all[32], num[32], rt[32], eta[32];
    uint64_t ended = s->finished, total = s->total;
    double rate = s->rate;
    grouped(done, sizeof done, ended);
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
        PUT("[%s] %d%% %s/%s finished", bar, pct, done, all);
    } else {
        PUT("%s finished", done);
    }
    const uint64_t counts[] = {s->failed, s->crashed, s->timed_out, s->cancelled};
    const fpp_status words[] = {FPP_FAILED, FPP_CRASHED, FPP_TIMEOUT, FPP_CANCELLED};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i]) {
            grouped(num, sizeof num, counts[i]);
            PUT(", %s %s", num, fpp_status_name(words[i]));
        }
    PUT(", %s/s", rt);
    if (total)
        PUT(", ETA %s", eta);
    if (s->waiting) {
        if (s->wait_s >= 10)
            PUT(", waiting on %s for %.0f s", s->waiting, s->wait_s);
        else
            PUT(", waiting on %s for %.1f s", s->waiting, s->wait_s);
    }
    if (s->last_failure && s->last_failure[0])
        PUT(", last: %s", s->last_failure);
#undef PUT
    if (width > 1) {
        /* At most width - 1 columns: a label's UTF-8 character is one column and is never
         * cut in two (a label holds no other multi-byte text: core/label.c). */
        size_t cols = 0;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)buf[i] & 0xC0) != 0x80 && ++cols == (size_t)width) {
                n = i;
                buf[n] = 0;
                break;
            }
    }
    return n;
}
