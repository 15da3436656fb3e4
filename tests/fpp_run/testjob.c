/* testjob.c: the job library of fpp-run's function-mode tests (fpp-run --lib libfpprun_testjob.so
 * --fn NAME). Its constructor registers:
 *   echo   the line, then a newline
 *   noop   nothing
 *   act    what the line says: "segv..." segfaults, "exit..." calls exit(3), "hang..." sleeps for
 *          ever, "fail..." fails with a message, "leak N..." leaks N MiB (touched) and echoes,
 *          "big N..." returns N MiB of 'x'; anything else is echoed */
#define _GNU_SOURCE
#include <fpp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int echo(const void *arg, size_t len, fpp_out *out)
{
    char *p = fpp_out_alloc(out, len + 1);
    if (!p)
        return 1;
    if (len)
        memcpy(p, arg, len);
    p[len] = '\n';
    return 0;
}

/* What "leak" leaks stays reachable from here: resident memory that nothing frees, which
 * LeakSanitizer does not report when a later task's exit() ends the worker. */
static void *leaked[4096];
static size_t nleaked;

static int noop(const void *arg, size_t len, fpp_out *out)
{
    (void)arg;
    (void)len;
    (void)out;
    return 0;
}

static int starts(const void *arg, size_t len, const char *w)
{
    size_t n = strlen(w);
    return len >= n && memcmp(arg, w, n) == 0;
}

static int act(const void *arg, size_t len, fpp_out *out)
{
    if (starts(arg, len, "segv"))
        raise(SIGSEGV);
    if (starts(arg, len, "exit"))
        exit(3);
    if (starts(arg, len, "hang"))
        for (;;)
            pause();
    if (starts(arg, len, "fail"))
        return fpp_out_fail(out, "this line says fail"), 1;
    if (starts(arg, len, "leak ") || starts(arg, len, "big ")) {
        char num[32] = {0};
        size_t skip = starts(arg, len, "big ") ? 4 : 5;
        memcpy(num, (const char *)arg + skip, len - skip < 31 ? len - skip : 31);
        size_t mib = (size_t)atol(num);
        if (skip == 4) {
            char *p = fpp_out_alloc(out, mib << 20);
            if (!p)
                return 1;
            memset(p, 'x', mib << 20);
            return 0;
        }
        char *leak = malloc(mib << 20);
        if (!leak)
            return fpp_out_fail(out, "malloc of %zu MiB failed", mib), 1;
        memset(leak, 1, mib << 20);
        leaked[nleaked++ % 4096] = leak;
    }
    return echo(arg, len, out);
}

__attribute__((constructor)) static void register_jobs(void)
{
    fpp_register("echo", echo);
    fpp_register("noop", noop);
    fpp_register("act", act);
}
