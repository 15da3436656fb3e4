/* untrusted_files: thousands of files through a parser you do not trust, the job fpp is for.
 *
 *     untrusted_files                        # 2,000 demo files, some of them poisoned
 *     find DIR -type f | untrusted_files -   # the files named on stdin
 *
 * The parser (a stand-in for a real one: it counts lines, words and bytes) segfaults, hangs,
 * leaks or eats memory on some inputs; the demo files poison it on purpose ("SEGV", "HANG",
 * "LEAK", "BOMB", and one "FLAKY" that crashes once only). What keeps the run going:
 *  - every file is parsed in a worker process: a crash ends that file, not the run;
 *  - a time limit (task_timeout_ms): a hang costs one second;
 *  - retries of crashes only (retry_on): a crash may be bad luck and is tried again elsewhere;
 *    a hang is not, so it costs one timeout, not one per attempt;
 *  - a memory cap (max_worker_rss_kib): a worker that leaked past it is replaced after its
 *    task, and a task that eats memory without end gets NULL from malloc;
 *  - labels: fpp_map_lines labels each task with its line, so every line about a failure names
 *    the file, not a task number;
 *  - the progress line on a terminal (FPP_TM_PROGRESS), the monitor's lines elsewhere;
 *  - a summary in fpp_stats' words, and the files that need a look.
 * In demo mode the program checks that each poisoned file ended as it should (exit status 1
 * if not), so it doubles as a test. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fpp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct counts { uint64_t lines, words, bytes; } counts;

/* ------------------------------------------------------------ the parser */

static void poison(const char *path, const char *text)
{
    if (strstr(text, "SEGV")) {
        volatile int *p = NULL;
        *p = 1; /* a null pointer, as parsers do */
    }
    if (strstr(text, "HANG"))
        for (volatile unsigned long spin = 0;; spin++) /* an endless loop on a malformed header */
            ;
    if (strstr(text, "LEAK")) {
        /* 24 MiB lost on every such file: a few of them take a worker past the cap. */
        char *lost = malloc(24u << 20);
        if (lost)
            memset(lost, 1, 24u << 20);
    }
    if (strstr(text, "FLAKY")) {
        /* Crashes the first time only (a marker beside the file says it did). */
        char mark[4096];
        snprintf(mark, sizeof mark, "%s.crashed-once", path);
        int fd = open(mark, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd >= 0) {
            close(fd);
            volatile int *p = NULL;
            *p = 1;
        }
    }
}

/* The argument is the file's path as a C string (fpp_map_lines adds the NUL). */
static int parse(const void *arg, size_t len, fpp_out *out)
{
    (void)len;
    const char *path = arg;
    FILE *f = fopen(path, "r");
    if (!f)
        return fpp_out_fail(out, "cannot open: %s", strerror(errno)), 1;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    poison(path, buf);
    if (strstr(buf, "BOMB")) {
        /* Memory without end, but checked: malloc fails at the cap, the parser says so. */
        size_t total = 0;
        for (;;) {
            char *p = malloc(16u << 20);
            if (!p)
                return fpp_out_fail(out, "out of memory after %zu MiB", total >> 20), 1;
            memset(p, 1, 16u << 20);
            total += 16u << 20;
        }
    }
    counts c = {.bytes = n};
    for (size_t i = 0; i < n; i++) {
        c.lines += buf[i] == '\n';
        c.words += buf[i] != ' ' && buf[i] != '\n' && (i == 0 || buf[i - 1] == ' ' || buf[i - 1] == '\n');
    }
    return fpp_out_set(out, &c, sizeof c);
}

/* ------------------------------------------------------------ demo files */

#define DEMO_FILES 2000
/* The BOMB file fails when malloc returns NULL at the worker's address-space limit. Under
 * AddressSanitizer the pool sets no such limit (the sanitizer reserves terabytes of address
 * space), so there the bomb runs until its time limit instead. */
#if defined(__SANITIZE_ADDRESS__)
#define DEMO_BOMB_ENDS FPP_TIMEOUT
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEMO_BOMB_ENDS FPP_TIMEOUT
#endif
#endif
#ifndef DEMO_BOMB_ENDS
#define DEMO_BOMB_ENDS FPP_FAILED
#endif
static const struct { int index; const char *word; fpp_status ends; } demo_poison[] = {
    {137, "SEGV", FPP_CRASHED}, {1404, "SEGV", FPP_CRASHED}, {555, "HANG", FPP_TIMEOUT},
    {1777, "HANG", FPP_TIMEOUT}, {900, "BOMB", DEMO_BOMB_ENDS},   {321, "FLAKY", FPP_DONE},
};

static const char *demo_word(int i)
{
    for (size_t k = 0; k < sizeof demo_poison / sizeof demo_poison[0]; k++)
        if (demo_poison[k].index == i)
            return demo_poison[k].word;
    return i % 50 == 25 ? "LEAK" : NULL; /* 40 leaky files: workers get replaced on the way */
}

/* Writes the demo files into a new directory and their paths to list. */
static int make_demo(char *dir, FILE *list)
{
    if (!mkdtemp(dir))
        return perror("mkdtemp"), -1;
    for (int i = 0; i < DEMO_FILES; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/input-%04d.txt", dir, i);
        FILE *f = fopen(path, "w");
        if (!f)
            return perror(path), -1;
        for (int l = 0; l < 1 + i % 7; l++)
            fprintf(f, "record %d line %d of a perfectly ordinary file\n", i, l);
        const char *w = demo_word(i);
        if (w)
            fprintf(f, "%s\n", w);
        fclose(f);
        fprintf(list, "%s\n", path);
    }
    rewind(list);
    return 0;
}

static void remove_demo(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* ------------------------------------------------------------ the run */

int main(int argc, char **argv)
{
    int demo = !(argc > 1 && strcmp(argv[1], "-") == 0);
    if (argc > 2 || (argc == 2 && demo)) {
        fprintf(stderr, "usage: %s [-]   (no argument: a demo on 2,000 generated files; -: the files named on stdin)\n",
                argv[0]);
        return 2;
    }
    int fn = fpp_register("parse", parse);

    char dir[] = "/tmp/fpp-untrusted-XXXXXX";
    FILE *list = stdin;
    uint64_t expected = 0;
    if (demo) {
        list = tmpfile();
        if (!list || make_demo(dir, list) != 0)
            return 1;
        expected = DEMO_FILES;
    }

    /* Create the executor early: workers are forked from the program as it is now. */
    fpp_executor *ex;
    fpp_executor_opts eo = {
        .task_timeout_ms = 1000,           /* a hang costs one second */
        .max_worker_rss_kib = 64 * 1024,   /* a worker that grew past 64 MiB is replaced */
    };
    if (fpp_process_executor(&ex, &eo) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {
        .error_policy = FPP_LOG,           /* each failure logged (by file name) as it happens */
        .retries = 2,
        .retry_on = FPP_RETRY_CRASHED,     /* crashes again, elsewhere; hangs not */
        .flags = FPP_TM_PROGRESS,
        .expected_total = expected,
    };
    if (fpp_tm_create(&tm, ex, &to) != 0 || fpp_map_lines(tm, fn, list) != 0)
        return 1;

    counts sum = {0};
    enum { SHOWN = 12 };
    char *need_look[SHOWN];
    int nlook = 0, wrong = 0;
    uint64_t more = 0;
    fpp_task *t;
    int rc;
    while ((rc = fpp_as_completed(tm, &t)) == 1) {
        fpp_status st = fpp_task_status(t);
        if (st == FPP_DONE) {
            counts c;
            memcpy(&c, fpp_task_result(t, NULL), sizeof c);
            sum.lines += c.lines;
            sum.words += c.words;
            sum.bytes += c.bytes;
        } else if (nlook < SHOWN) {
            char line[1024];
            snprintf(line, sizeof line, "  %-10s %s: %s", fpp_status_name(st), fpp_task_label(t), fpp_task_error(t));
            need_look[nlook++] = strdup(line);
        } else {
            more++;
        }
        if (demo) {
            /* Check the demo: each poisoned file ends as it should, the rest are parsed. */
            int i = -1;
            const char *l = fpp_task_label(t), *p = l ? strstr(l, "input-") : NULL;
            if (p)
                i = atoi(p + 6);
            const char *w = demo_word(i);
            fpp_status want = FPP_DONE;
            for (size_t k = 0; k < sizeof demo_poison / sizeof demo_poison[0]; k++)
                if (demo_poison[k].index == i)
                    want = demo_poison[k].ends;
            unsigned attempts = fpp_task_attempts(t);
            unsigned want_attempts = want == FPP_CRASHED ? 3 : w && strcmp(w, "FLAKY") == 0 ? 2 : 1;
            if (i < 0 || st != want || attempts != want_attempts) {
                fprintf(stderr, "demo check: %s ended %s after %u attempt(s); expected %s after %u\n", l ? l : "?",
                        fpp_status_name(st), attempts, fpp_status_name(want), want_attempts);
                wrong++;
            }
        }
    }

    fpp_stats s;
    fpp_tm_stats(tm, &s);
    printf("%" PRIu64 " files: %" PRIu64 " done, %" PRIu64 " failed, %" PRIu64 " crashed, %" PRIu64
           " timed out; %" PRIu64 " retried, %" PRIu64 " worker(s) replaced\n",
           s.submitted, s.done, s.failed, s.crashed, s.timed_out, s.retried, s.worker_restarts);
    printf("parsed: %" PRIu64 " lines, %" PRIu64 " words, %" PRIu64 " bytes\n", sum.lines, sum.words, sum.bytes);
    if (nlook) {
        printf("files that need a look:\n");
        for (int i = 0; i < nlook; i++) {
            printf("%s\n", need_look[i]);
            free(need_look[i]);
        }
        if (more)
            printf("  ... and %" PRIu64 " more\n", more);
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    if (demo) {
        fclose(list);
        remove_demo(dir);
        if (s.submitted != DEMO_FILES)
            wrong++;
        printf("demo check: %s\n", wrong ? "FAILED" : "every file ended as it should");
    }
    if (rc < 0)
        fprintf(stderr, "stopped: %s\n", fpp_err_name(rc));
    return rc < 0 || wrong ? 1 : 0;
}
