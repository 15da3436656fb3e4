/* core/log.c: the library's log. One sink (default: stderr as "[HH:MM:SS tid] message"), one
 * minimum level, one lock so that the sink is never called from two threads at once, and the
 * status line (FPP_TM_PROGRESS's progress line), which lives on stderr and is cleared before
 * every log line so that the two never share a line.
 *
 * Three ways around the lock, each so that logging can never hang:
 *   - a thread already inside the sink (a sink that calls fpp, which logs) writes the nested
 *     line to stderr directly: the sink is never re-entered and the lock never taken twice;
 *   - a process other than the one that last set the sink (a forked child, a worker, an atexit
 *     handler run by a task's exit()) writes to stderr directly: the lock there is a copy that
 *     another thread of the parent may have held at fork time, and the sink is the parent's
 *     (the sink is never called from a worker);
 *   - writing to stderr needs no lock of its own: one write(2) per line, so lines from several
 *     processes do not interleave.
 * Lock order: the log lock is a leaf, except that the sink runs under it; a sink that calls
 * back into fpp gets FPP_ESTATE from every task manager and executor call (fpp__log_in_sink). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static fpp_log_fn sink_fn;
static void *sink_user;
static _Atomic int min_level = FPP_LOG_INFO;
static _Atomic uint64_t sink_owner;     /* fpp__proc_token() of the process that owns the sink */
static _Thread_local bool in_sink;
/* The local time's offset from UTC, as last seen by localtime_r in the owning process. */
static _Atomic long utc_offset_s;

/* The status line, under sink_lock. */
static const void *status_owner;
static bool status_shown;

static uint64_t owner_token(void)
{
    uint64_t o = atomic_load_explicit(&sink_owner, memory_order_relaxed);
    if (o)
        return o;
    uint64_t me = fpp__proc_token(), expect = 0;
    atomic_compare_exchange_strong(&sink_owner, &expect, me);
    return atomic_load(&sink_owner);
}

void fpp_log_set(fpp_log_fn fn, void *user, fpp_log_level level)
{
    if ((int)level < FPP_LOG_DEBUG || level > FPP_LOG_OFF)
        level = FPP_LOG_INFO;
    if (in_sink) {
        /* Swapping the sink from inside the sink: the lock is ours already. */
        sink_fn = fn;
        sink_user = user;
        atomic_store(&min_level, (int)level);
        return;
    }
    struct tm tm;
    time_t now = time(NULL);
    localtime_r(&now, &tm); /* the offset a forked child will use (see to_stderr) */
    atomic_store_explicit(&utc_offset_s, tm.tm_gmtoff, memory_order_relaxed);
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn;
    sink_user = user;
    atomic_store(&min_level, (int)level);
    atomic_store(&sink_owner, fpp__proc_token());
    pthread_mutex_unlock(&sink_lock);
}

bool fpp__log_enabled(fpp_log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed) &&
           level < FPP_LOG_OFF;
}

bool fpp__log_in_sink(void) { return in_sink; }

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* foreign: in a process other than the sink's owner, possibly forked while another thread of
 * the parent held one of libc's locks. localtime_r takes tzset_lock (a worker forked at that
 * moment hung there for ever): use the offset seen before the fork and plain arithmetic. */
static void to_stderr(const char *msg, bool foreign)
{
    char line[1200];
    time_t now = time(NULL);
    int h, m, sec;
    if (foreign) {
        long t = ((long)now + atomic_load_explicit(&utc_offset_s, memory_order_relaxed)) % 86400;
        if (t < 0)
            t += 86400;
        h = (int)(t / 3600);
        m = (int)(t / 60 % 60);
        sec = (int)(t % 60);
    } else {
        struct tm tm;
        localtime_r(&now, &tm);
        atomic_store_explicit(&utc_offset_s, tm.tm_gmtoff, memory_order_relaxed);
        h = tm.tm_hour;
        m = tm.tm_min;
        sec = tm.tm_sec;
    }
    int n = snprintf(line, sizeof line, "[%02d:%02d:%02d %ld] %s\n", h, m, sec, (long)gettid(), msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    write_all(line, (size_t)n);
}

/* "\r" then erase to the end of the line: the cursor is back where the status line began. */
#define CLEAR_LINE "\r\033[K"

static void status_clear_locked(void)
{
    if (status_shown) {
        write_all(CLEAR_LINE, sizeof CLEAR_LINE - 1);
        status_shown = false;
    }
}

void fpp__log(fpp_log_level level, const char *fmt, ...)
{
    if (!fpp__log_enabled(level))
        return;
    int saved = errno;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool foreign = owner_token() != fpp__proc_token();
    if (in_sink || foreign) {
        to_stderr(msg, foreign);
        errno = saved;
        return;
    }
    pthread_mutex_lock(&sink_lock);
    status_clear_locked(); /* redrawn at the progress line's next tick */
    if (sink_fn) {
        in_sink = true;
        sink_fn(level, msg, sink_user);
        in_sink = false;
    } else {
        to_stderr(msg, false);
    }
    pthread_mutex_unlock(&sink_lock);
    errno = saved;
}

int fpp__sys_error(const char *call, const char *what)
{
    int saved = errno;
    char buf[128];
    fpp__log(FPP_LOG_ERROR, "%s(%s): %s", call, what ? what : "", strerror_r(saved, buf, sizeof buf));
    errno = saved;
    return FPP_ESYS;
}

/* ------------------------------------------------------------ status line */

bool fpp__status_claim(const void *owner)
{
    if (in_sink)
        return false;
    pthread_mutex_lock(&sink_lock);
    bool ok = !status_owner || status_owner == owner;
    if (ok)
        status_owner = owner;
    pthread_mutex_unlock(&sink_lock);
    return ok;
}

void fpp__status_draw(const void *owner, const char *line)
{
    if (in_sink)
        return;
    pthread_mutex_lock(&sink_lock);
    if (status_owner == owner) {
        char buf[600];
        int n = snprintf(buf, sizeof buf, "\r%s\033[K", line);
        if (n > 0)
            write_all(buf, FPP__MIN((size_t)n, sizeof buf - 1));
        status_shown = true;
    }
    pthread_mutex_unlock(&sink_lock);
}

void fpp__status_release(const void *owner)
{
    if (in_sink)
        return;
    pthread_mutex_lock(&sink_lock);
    if (status_owner == owner) {
        status_clear_locked();
        status_owner = NULL;
    }
    pthread_mutex_unlock(&sink_lock);
}
