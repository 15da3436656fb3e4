/* fpp-run-parser.c: the crash-prone parser of fpp-run-bench.sh's 20,000-file row, built two
 * ways from this one file: a program ("fpp-run-parser FILE", for GNU parallel and fpp-run's exec
 * mode) and, with -DJOB_LIBRARY, a job library whose function "parse" takes the file's name as
 * its input line (fpp-run's function mode). It reads the file, sums its numbers and hashes its
 * bytes; a file whose first line is "crash" makes it segfault, "hang" makes it sleep for ever;
 * every file leaks what it read plus 64 KiB (touched). Output: "NAME SUM HASH\n". */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef JOB_LIBRARY
#include <fpp.h>
#endif

static int parse(const char *path, char *out, size_t outsz)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *buf = malloc(1 << 16); /* leaked */
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (!buf)
        return -1;
    buf[n] = 0;
    if (strncmp(buf, "crash", 5) == 0)
        *(volatile int *)0 = 1;
    if (strncmp(buf, "hang", 4) == 0)
        for (;;)
            pause();
    char *leak = malloc(64 << 10);
    if (leak)
        memset(leak, 1, 64 << 10);
    long long sum = 0;
    for (char *p = buf; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            p++;
        else
            sum += v, p = end;
    }
    uint64_t h = 1469598103934665603ULL;
    for (int round = 0; round < 8; round++)
        for (size_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
    return snprintf(out, outsz, "%s %lld %016llx\n", path, sum, (unsigned long long)h);
}

#ifdef JOB_LIBRARY
static int parse_fn(const void *arg, size_t len, fpp_out *out)
{
    char path[4096], line[4352];
    if (len >= sizeof path)
        return fpp_out_fail(out, "file name too long"), 1;
    memcpy(path, arg, len);
    path[len] = 0;
    int k = parse(path, line, sizeof line);
    if (k < 0)
        return fpp_out_fail(out, "cannot read %s", path), 1;
    return fpp_out_set(out, line, (size_t)k);
}

__attribute__((constructor)) static void register_parse(void) { fpp_register("parse", parse_fn); }
#else
int main(int argc, char **argv)
{
    char line[4352];
    if (argc != 2) {
        fprintf(stderr, "usage: fpp-run-parser FILE\n");
        return 2;
    }
    int k = parse(argv[1], line, sizeof line);
    if (k < 0) {
        perror(argv[1]);
        return 1;
    }
    fwrite(line, 1, (size_t)k, stdout);
    return 0;
}
#endif
