/* fpp_run_job.c: a job library for fpp-run's function mode, the way to write one.
 *
 *     cc -shared -fPIC -o libjob.so fpp_run_job.c $(pkg-config --cflags --libs fpp)
 *     fpp-run --lib ./libjob.so --fn wc < lines.txt
 *
 * fpp-run dlopens the library before it starts its workers, so the constructor below runs
 * first and registers the functions by name with fpp_register; --fn NAME picks one. Each input
 * (a line, without its newline; with -0 a NUL-terminated value) is one task: the function gets
 * its bytes as the argument and writes what fpp-run should print with fpp_out_set (or
 * fpp_out_alloc), verbatim: end it with a newline to print lines. Returning non-zero, or
 * fpp_out_fail, fails that input (exit status 1 in the joblog). The function runs in a worker
 * process: a segfault, an exit(), a hang (with --timeout) or a leak (with --max-rss) fails only
 * the input it was working on; fpp-run prints a line naming it and goes on. Link with libfpp.so
 * (not libfpp.a): the library must register in fpp-run's own registry. */
#include <ctype.h>
#include <fpp.h>
#include <stdio.h>
#include <string.h>

/* "wc": the line's words and bytes, then the line: "3\t17\tthe line itself\n". */
static int wc(const void *arg, size_t len, fpp_out *out)
{
    const unsigned char *s = arg;
    size_t words = 0;
    for (size_t i = 0; i < len; i++)
        if (!isspace(s[i]) && (i == 0 || isspace(s[i - 1])))
            words++;
    char head[48];
    int n = snprintf(head, sizeof head, "%zu\t%zu\t", words, len);
    char *p = fpp_out_alloc(out, (size_t)n + len + 1); /* the result, written in place */
    if (!p)
        return 1;
    memcpy(p, head, (size_t)n);
    if (len) /* an empty line's argument may be NULL */
        memcpy(p + n, arg, len);
    p[(size_t)n + len] = '\n';
    return 0;
}

/* "upper": the line in capitals; an empty line fails (to show what a failure looks like). */
static int upper(const void *arg, size_t len, fpp_out *out)
{
    if (len == 0)
        return fpp_out_fail(out, "an empty line"), 1;
    char *p = fpp_out_alloc(out, len + 1);
    if (!p)
        return 1;
    for (size_t i = 0; i < len; i++)
        p[i] = (char)toupper(((const unsigned char *)arg)[i]);
    p[len] = '\n';
    return 0;
}

__attribute__((constructor)) static void register_functions(void)
{
    fpp_register("wc", wc);
    fpp_register("upper", upper);
}
