/* log.c: the library's log. One sink (default: stderr as "[HH:MM:SS tid] message"), one
 * minimum level, and one mutex so that the sink is never called from two threads at once.
 * Workers never log: a forked child may hold a copy of this mutex taken by another thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fpp_internal.h"

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static fpp_log_fn sink_fn;
static void *sink_user;
static _Atomic int min_level = FPP_LOG_INFO;

void fpp_log_set(fpp_log_fn fn, void *user, fpp_log_level level)
{
    if ((int)level < FPP_LOG_DEBUG || level > FPP_LOG_OFF)
        level = FPP_LOG_INFO;
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn;
    sink_user = user;
    atomic_store(&min_level, (int)level);
    pthread_mutex_unlock(&sink_lock);
}

bool fpp__log_enabled(fpp_log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed) &&
           level < FPP_LOG_OFF;
}

static void to_stderr(const char *msg)
{
    char line[1200];
    struct tm tm;
    time_t now = time(NULL);
    localtime_r(&now, &tm);
    int n = snprintf(line, sizeof line, "[%02d:%02d:%02d %ld] %s\n", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)gettid(), msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    /* One write per line, so lines from several processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
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
    pthread_mutex_lock(&sink_lock);
    if (sink_fn)
        sink_fn(level, msg, sink_user);
    else
        to_stderr(msg);
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
