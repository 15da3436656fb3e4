/* exec/breaker.c: the start breaker and back-off of both executors (exec/exec.h has the rules).
 * A failure is "in a row" of attempts: a worker that was up all along does not close the
 * breaker, only a new one that starts. One log line a second at most, whatever fails how
 * often: the breaker's own line waits its turn too (the next attempt is at most a second
 * away), and takes the place of a warning. */
#include <stdio.h>

#include "core/timing.h"
#include "exec/exec.h"

void fpp__breaker_fail(fpp__breaker *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->cause, sizeof b->cause, fmt, ap);
    va_end(ap);
    b->failures++;
    int64_t now = fpp__now_ns();
    int64_t backoff = (int64_t)FPP__BACKOFF_MIN_NS << FPP__MIN(b->failures - 1, 7);
    b->next_ns = now + FPP__MIN(backoff, (int64_t)FPP__BACKOFF_MAX_NS);
    if (b->failures >= FPP__BREAKER_FAILURES && !b->broken) {
        b->broken = true;
        b->trip_unsaid = true;
    }
    if (b->last_log_ns && now - b->last_log_ns < FPP__FAIL_LOG_NS)
        return;
    if (b->trip_unsaid)
        fpp__log(FPP_LOG_ERROR, "%s: workers cannot start: %s (%d times in a row); tasks fail while no worker runs",
                 b->kind, b->cause, b->failures);
    else
        fpp__log(FPP_LOG_WARN, "%s: a worker could not start: %s; trying again", b->kind, b->cause);
    b->trip_unsaid = false;
    b->last_log_ns = now;
}

void fpp__breaker_ok(fpp__breaker *b)
{
    if (b->broken)
        fpp__log(FPP_LOG_INFO, "%s: workers start again", b->kind);
    b->failures = 0;
    b->broken = false;
    b->trip_unsaid = false;
    b->next_ns = 0;
}

bool fpp__breaker_due(const fpp__breaker *b, int64_t now) { return !b->next_ns || now >= b->next_ns; }

void fpp__breaker_message(const fpp__breaker *b, char *buf, size_t cap)
{
    snprintf(buf, cap, "workers cannot start: %s", b->cause);
}
