/* progress.c: --bar and --eta, one line on stderr when it is a terminal, redrawn in place at
 * most 10 times a second and erased before other output reaches the terminal:
 *   [#######.......] 41% 41,200/100,000 finished, 3 failed, 12.3k/s, ETA 0:05
 * (fpp's own progress line, FPP_TM_PROGRESS, has this form and its words; fpp-run draws its own
 * because in exec mode a job that exits non-zero is a task that succeeded, as far as fpp can
 * tell, and the failed count must be the jobs': a job that exited non-zero, crashed or ran out
 * of time, as in the joblog.) Elsewhere (stderr not a terminal) nothing is drawn. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpp-run.h"

struct progress {
    uint64_t total;
    bool bar, shown;
    int64_t start_ns, last_ns;
};

progress *progress_new(uint64_t total, bool bar)
{
    if (!isatty(2))
        return NULL;
    progress *p = xcalloc(1, sizeof *p);
    p->total = total;
    p->bar = bar;
    p->start_ns = now_mono_ns();
    return p;
}

static void add_count(strbuf *b, uint64_t n)
{
    char d[32];
    int k = snprintf(d, sizeof d, "%llu", (unsigned long long)n);
    for (int i = 0; i < k; i++) {
        if (i && (k - i) % 3 == 0)
            sb_addc(b, ',');
        sb_addc(b, d[i]);
    }
}

void progress_update(progress *p, uint64_t done, uint64_t failed, bool force)
{
    if (!p)
        return;
    int64_t now = now_mono_ns();
    if (!force && now - p->last_ns < 100000000)
        return;
    p->last_ns = now;
    strbuf b = {0};
    sb_adds(&b, "\r");
    double frac = p->total ? (double)done / (double)p->total : 0;
    if (frac > 1)
        frac = 1;
    if (p->bar && p->total) {
        int w = 14, filled = (int)(frac * w);
        sb_addc(&b, '[');
        for (int i = 0; i < w; i++)
            sb_addc(&b, i < filled ? '#' : '.');
        sb_adds(&b, "] ");
    }
    if (p->total)
        sb_printf(&b, "%d%% ", (int)(frac * 100));
    add_count(&b, done);
    if (p->total) {
        sb_addc(&b, '/');
        add_count(&b, p->total);
    }
    sb_adds(&b, " finished, ");
    add_count(&b, failed);
    sb_adds(&b, " failed");
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;
    if (rate >= 1000)
        sb_printf(&b, ", %.1fk/s", rate / 1000);
    else
        sb_printf(&b, ", %.1f/s", rate);
    if (p->total && rate > 0 && done < p->total) {
        long eta = (long)((double)(p->total - done) / rate + 0.5);
        if (eta >= 3600)
            sb_printf(&b, ", ETA %ld:%02ld:%02ld", eta / 3600, eta / 60 % 60, eta % 60);
        else
            sb_printf(&b, ", ETA %ld:%02ld", eta / 60, eta % 60);
    }
    sb_adds(&b, "\033[K");
    write_all(2, b.p, b.len);
    sb_free(&b);
    p->shown = true;
}

void progress_clear(progress *p)
{
    if (!p || !p->shown)
        return;
    write_all(2, "\r\033[K", 4);
    p->shown = false;
}

void progress_free(progress *p)
{
    progress_clear(p);
    free(p);
}
