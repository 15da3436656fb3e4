/* consumer.c: a program outside the tree, built against the *installed* header and library
 * (`cc consumer.c $(pkg-config --cflags --libs fpp)`), doing what issue 2 asks of a user on
 * both executors. Exits 0 only if every check holds; prints what failed otherwise. */
#include <dirent.h>
#include <fpp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static int square(const void *a, size_t n, fpp_out *o)
{
    unsigned long long x;
    if (n != sizeof x) return 1;
    memcpy(&x, a, sizeof x);
    x *= x;
    return fpp_out_set(o, &x, sizeof x);
}
static int echo(const void *a, size_t n, fpp_out *o) { return fpp_out_set(o, a, n); }
static int big(const void *a, size_t n, fpp_out *o)
{
    (void)a; (void)n;
    unsigned char *p = fpp_out_alloc(o, 8u << 20);
    if (!p) return 1;
    for (size_t i = 0; i < (8u << 20); i++) p[i] = (unsigned char)(i * 13 + 1);
    return 0;
}
static int fails(const void *a, size_t n, fpp_out *o) { (void)a; (void)n; fpp_out_fail(o, "no luck: %d", 42); return 0; }
static int segv(const void *a, size_t n, fpp_out *o) { (void)a; (void)n; (void)o; raise(SIGSEGV); return 0; }
static int quits(const void *a, size_t n, fpp_out *o) { (void)a; (void)n; (void)o; exit(5); }

static int shm_entries(void)
{
    DIR *d = opendir("/dev/shm");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strncmp(e->d_name, "fpp-", 4) == 0;
    if (d) closedir(d);
    return n;
}

static int children(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", getpid(), getpid());
    FILE *f = fopen(path, "r");
    int n = 0;
    long p;
    while (f && fscanf(f, "%ld", &p) == 1) n++;
    if (f) fclose(f);
    return n;
}

static void scenario(int threads, int f_sq, int f_echo, int f_big, int f_fail, int f_segv, int f_exit)
{
    const char *k = threads ? "thread" : "process";
    int shm_before = shm_entries();
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 2, .max_result_size = 8u << 20};
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    CHECK(rc == 0, "%s executor: %s", k, fpp_strerror(rc));
    if (rc) return;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &to);

    /* 20,000 tasks, every result right, every id seen once. */
    static unsigned char seen[20000];
    memset(seen, 0, sizeof seen);
    for (unsigned long long i = 0; i < 20000; i++)
        CHECK(fpp_submit(tm, f_sq, &i, sizeof i) == (int64_t)i, "%s: submit %llu", k, i);
    fpp_task *t;
    int n = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        unsigned long long r;
        memcpy(&r, fpp_task_result(t, NULL), sizeof r);
        CHECK(id >= 0 && id < 20000 && !seen[id], "%s: id %lld", k, (long long)id);
        if (id >= 0 && id < 20000) seen[id] = 1;
        CHECK(r == (unsigned long long)id * (unsigned long long)id, "%s: result of %lld", k, (long long)id);
        n++;
    }
    CHECK(n == 20000, "%s: %d tasks came back", k, n);

    /* 8 MiB result and 60 KB argument byte for byte; a task's own failure message. */
    static unsigned char arg[60000];
    for (size_t i = 0; i < sizeof arg; i++) arg[i] = (unsigned char)(i * 7);
    int64_t id_big = fpp_submit(tm, f_big, NULL, 0);
    int64_t id_echo = fpp_submit(tm, f_echo, arg, sizeof arg);
    int64_t id_fail = fpp_submit(tm, f_fail, NULL, 0);
    int64_t id_segv = -1, id_exit = -1;
    if (!threads) {
        id_segv = fpp_submit(tm, f_segv, NULL, 0);
        id_exit = fpp_submit(tm, f_exit, NULL, 0);
        for (unsigned long long i = 0; i < 1000; i++) fpp_submit(tm, f_sq, &i, sizeof i);
    }
    int more = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        size_t len;
        const unsigned char *r = fpp_task_result(t, &len);
        if (id == id_big) {
            int ok = r && len == (8u << 20);
            for (size_t i = 0; ok && i < len; i++) ok = r[i] == (unsigned char)(i * 13 + 1);
            CHECK(ok, "%s: 8 MiB result", k);
        } else if (id == id_echo) {
            CHECK(r && len == sizeof arg && memcmp(r, arg, len) == 0, "%s: 60 KB argument", k);
        } else if (id == id_fail) {
            CHECK(fpp_task_status(t) == FPP_FAILED && strcmp(fpp_task_error(t), "no luck: 42") == 0,
                  "%s: failure message '%s'", k, fpp_task_error(t));
        } else if (id == id_segv) {
            CHECK(fpp_task_status(t) == FPP_CRASHED && fpp_task_signal(t) == SIGSEGV &&
                  strstr(fpp_task_error(t), "killed by SIGSEGV while running task"), "%s: segv '%s'", k, fpp_task_error(t));
        } else if (id == id_exit) {
            CHECK(fpp_task_status(t) == FPP_CRASHED && strstr(fpp_task_error(t), "exited with status 5 while running task"),
                  "%s: exit '%s'", k, fpp_task_error(t));
        } else {
            CHECK(fpp_task_status(t) == FPP_DONE, "%s: task %lld %s", k, (long long)id, fpp_task_error(t));
            more++;
        }
    }
    if (!threads) CHECK(more == 1000, "%s: %d of the 1000 more tasks done", k, more);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    CHECK(children() == 0, "%s: %d child processes left", k, children());
    CHECK(shm_entries() == shm_before, "%s: /dev/shm entries left", k);
    printf("%s executor: checked\n", k);
}

int main(void)
{
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    int f_sq = fpp_register("square", square), f_echo = fpp_register("echo", echo);
    int f_big = fpp_register("big", big), f_fail = fpp_register("fails", fails);
    int f_segv = fpp_register("segv", segv), f_exit = fpp_register("quits", quits);
    scenario(0, f_sq, f_echo, f_big, f_fail, f_segv, f_exit);
    scenario(1, f_sq, f_echo, f_big, f_fail, f_segv, f_exit);
    printf("%s\n", failures ? "consumer: FAILED" : "consumer: all checks passed");
    return failures != 0;
}
