/* common.c: see common.h. */
#include "common.h"

#include <sys/mman.h>
#include <sys/syscall.h>

int F_ECHO, F_SQUARE, F_FAIL, F_SEGV, F_EXIT, F_SLEEP, F_BYTES, F_RETURN7, F_TOOBIG, F_ABORT, F_SPIN, F_SCRIBBLE, F_HOG,
    F_BLOCK, F_BARRIER, F_FLAKY, F_JITTER, F_SLOTS, F_PID, F_STAMP;
_Atomic long *T_SHARED;

void shared_reset(void)
{
    for (int i = 0; i < SHARED_WORDS; i++)
        atomic_store(&T_SHARED[i], 0);
}

int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool wait_shared(int i, long v, int max_ms)
{
    int64_t until = mono_ns() + (int64_t)max_ms * 1000000;
    while (atomic_load(&T_SHARED[i]) < v) {
        if (mono_ns() > until)
            return false;
        sleep_ms(1);
    }
    return true;
}

static int block(const void *arg, size_t len, fpp_out *out)
{
    block_arg a;
    if (len != sizeof a)
        return 1;
    memcpy(&a, arg, sizeof a);
    long n = atomic_fetch_add(&T_SHARED[a.started], 1);
    atomic_store(&T_SHARED[a.pid_at + n], (long)getpid());
    int released = wait_shared(a.release, 1, a.max_ms);
    return fpp_out_set(out, &released, sizeof released);
}

static int barrier(const void *arg, size_t len, fpp_out *out)
{
    barrier_arg a;
    if (len != sizeof a)
        return 1;
    memcpy(&a, arg, sizeof a);
    atomic_fetch_add(&T_SHARED[a.counter], 1);
    wait_shared(a.counter, a.n, a.max_ms);
    long seen = atomic_load(&T_SHARED[a.counter]);
    return fpp_out_set(out, &seen, sizeof seen);
}

__attribute__((no_sanitize("undefined", "address"))) static void segv_now(void)
{
    volatile int *p = NULL;
    *p = 42;
}

static int flaky(const void *arg, size_t len, fpp_out *out)
{
    flaky_arg a;
    if (len != sizeof a)
        return 1;
    memcpy(&a, arg, sizeof a);
    long k = atomic_fetch_add(&T_SHARED[a.counter], 1) + 1;
    atomic_store(&T_SHARED[a.pid_at + k], (long)getpid());
    if (k <= a.bad) {
        if (a.how == 0)
            segv_now();
        if (a.how == 1)
            return fpp_out_fail(out, "flaky: attempt %ld fails", k), 1;
        sleep_ms(5000);
    }
    return fpp_out_set(out, &k, sizeof k);
}

static int jitter(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    uint64_t i = u64_of(arg), h = i * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    if (h % 1000 == 0)
        sleep_ms(1);
    else if (h % 50 == 0) {
        int64_t until = mono_ns() + 20000;
        while (mono_ns() < until)
            ;
    }
    return fpp_out_set(out, &i, 8);
}

/* every_slot_serves: arg {generation, W}; arrives at barrier `generation` (words from
 * SLOTS_AT of T_SHARED), waits until W arrived (10 s at most). Result: {tid, 1 if all arrived}. */
#define SLOTS_AT 3968
static int slots(const void *arg, size_t len, fpp_out *out)
{
    uint32_t a[2];
    if (len != sizeof a)
        return 1;
    memcpy(a, arg, sizeof a);
    int i = SLOTS_AT + (int)(a[0] % 128);
    atomic_fetch_add(&T_SHARED[i], 1);
    /* The worker's thread id: a worker process's pid, a worker thread's own id. */
    int32_t r[2] = {(int32_t)syscall(SYS_gettid), wait_shared(i, (long)a[1], 10000)};
    return fpp_out_set(out, r, sizeof r);
}

static int pid_of(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    int32_t p = (int32_t)getpid();
    return fpp_out_set(out, &p, sizeof p);
}

void every_slot_serves(fpp_tm *tm, int W)
{
    static uint32_t gen;
    uint32_t g = ++gen;
    atomic_store(&T_SHARED[SLOTS_AT + (int)(g % 128)], 0);
    int64_t ids[64];
    cr_assert_leq(W, 64);
    fpp_task_opts to = {.timeout_ms = 20000};
    for (int i = 0; i < W; i++) {
        uint32_t a[2] = {g, (uint32_t)W};
        ids[i] = fpp_submit_ex(tm, F_SLOTS, a, sizeof a, &to);
        cr_assert_geq(ids[i], 0, "submit: %s", fpp_strerror((int)ids[i]));
    }
    int32_t pids[64];
    int got = 0;
    for (int i = 0; i < W; i++) {
        fpp_task *t;
        int rc = fpp_wait(tm, ids[i], &t);
        cr_assert_eq(rc, 1, "fpp_wait: %s", fpp_strerror(rc));
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "barrier task: %s", fpp_task_error(t));
        int32_t r[2];
        memcpy(r, fpp_task_result(t, NULL), sizeof r);
        fpp_task_release(t);
        cr_assert_eq(r[1], 1, "a barrier of %d workers did not fill: a slot does not serve", W);
        for (int k = 0; k < got; k++)
            cr_assert_neq(pids[k], r[0], "two barrier tasks in one worker");
        pids[got++] = r[0];
    }
}

static int echo(const void *arg, size_t len, fpp_out *out) { return fpp_out_set(out, arg, len); }

static int square(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return fpp_out_fail(out, "square wants 8 bytes, got %zu", len), 1;
    uint64_t x;
    memcpy(&x, arg, 8);
    x *= x;
    return fpp_out_set(out, &x, 8);
}

static int fail(const void *arg, size_t len, fpp_out *out)
{
    return fpp_out_fail(out, "failing on purpose (%.*s)", (int)len, (const char *)arg), 0;
}

/* A real invalid store, not an UBSan report: the worker must die of SIGSEGV. */
__attribute__((no_sanitize("undefined", "address"))) static int segv(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    volatile int *p = NULL;
    *p = 42;
    return 0;
}

static int do_exit(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    _exit(3); /* exit() would run Criterion's own at-exit hooks in the worker */
}

static int do_sleep(const void *arg, size_t len, fpp_out *out)
{
    int ms = 0;
    if (len == sizeof ms)
        memcpy(&ms, arg, sizeof ms);
    sleep_ms(ms);
    return fpp_out_set(out, &ms, sizeof ms);
}

/* Returns N bytes (N given as a uint64_t), byte i = (i * 31 + 7) & 0xff, written in place. */
static int bytes(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    uint64_t n;
    memcpy(&n, arg, 8);
    unsigned char *p = fpp_out_alloc(out, n);
    if (!p)
        return n ? 2 : 0;
    for (uint64_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + 7) & 0xff);
    return 0;
}

/* F_STAMP: a stamp_arg; result: len bytes, byte i = stamp_byte(id, i), so that a result
 * written over by another task's is told from its own. */
static int stamp(const void *arg, size_t len, fpp_out *out)
{
    if (len != sizeof(stamp_arg))
        return 1;
    stamp_arg a;
    memcpy(&a, arg, sizeof a);
    unsigned char *p = fpp_out_alloc(out, a.len);
    if (!p)
        return a.len ? 2 : 0;
    for (uint64_t i = 0; i < a.len; i++)
        p[i] = stamp_byte(a.id, i);
    return 0;
}

static int return7(const void *arg, size_t len, fpp_out *out) { (void)arg; (void)len; (void)out; return 7; }

static int toobig(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    static char big[2 << 20];
    return fpp_out_set(out, big, sizeof big) == FPP_ETOOBIG ? 0 : 1;
}

static int do_abort(const void *arg, size_t len, fpp_out *out) { (void)arg; (void)len; (void)out; abort(); }

static int spin(const void *arg, size_t len, fpp_out *out)
{
    uint64_t us = 0;
    if (len == 8)
        memcpy(&us, arg, 8);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((uint64_t)((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000) < us);
    return fpp_out_set(out, arg, len);
}

/* Hostile: writes random bytes over every part of fpp's shared segment this worker can write
 * (found in /proc/self/maps), then returns as if nothing happened. */
static int scribble(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 1;
    char line[512];
    uint64_t x = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (!strstr(line, "memfd:fpp-") || sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[1] != 'w')
            continue;
        for (uint64_t *p = (uint64_t *)lo; p < (uint64_t *)hi; p++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            *p = x;
        }
    }
    fclose(f);
    return 0;
}

/* Allocates and touches 1 MiB blocks, arg (uint64_t) of them; on malloc failure writes through
 * the NULL it got, as careless code does. */
static int hog(const void *arg, size_t len, fpp_out *out)
{
    uint64_t n = 0;
    if (len == 8)
        memcpy(&n, arg, 8);
    for (uint64_t i = 0; i < n; i++) {
        volatile char *p = malloc(1 << 20);
        for (size_t k = 0; k < (1 << 20); k += 4096)
            p[k] = 1; /* NULL once the cap is hit: SIGSEGV */
    }
    return fpp_out_set(out, &n, 8);
}

__attribute__((constructor)) static void register_all(void)
{
    F_ECHO = fpp_register("echo", echo);
    F_SQUARE = fpp_register("square", square);
    F_FAIL = fpp_register("fail", fail);
    F_SEGV = fpp_register("segv", segv);
    F_EXIT = fpp_register("exit", do_exit);
    F_SLEEP = fpp_register("sleep", do_sleep);
    F_BYTES = fpp_register("bytes", bytes);
    F_RETURN7 = fpp_register("return7", return7);
    F_TOOBIG = fpp_register("toobig", toobig);
    F_ABORT = fpp_register("abort", do_abort);
    F_SPIN = fpp_register("spin", spin);
    F_SCRIBBLE = fpp_register("scribble", scribble);
    F_HOG = fpp_register("hog", hog);
    F_BLOCK = fpp_register("block", block);
    F_BARRIER = fpp_register("barrier", barrier);
    F_FLAKY = fpp_register("flaky", flaky);
    F_JITTER = fpp_register("jitter", jitter);
    F_SLOTS = fpp_register("slots", slots);
    F_PID = fpp_register("pid", pid_of);
    F_STAMP = fpp_register("stamp", stamp);
    void *m = mmap(NULL, SHARED_WORDS * sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T_SHARED = m == MAP_FAILED ? NULL : m;
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
}

fpp_executor *mk_exec(kind k, const fpp_executor_opts *o)
{
    fpp_executor *ex = NULL;
    int rc = k == PROC ? fpp_process_executor(&ex, o) : fpp_thread_executor(&ex, o);
    cr_assert_eq(rc, 0, "executor: %s", fpp_strerror(rc));
    cr_assert_not_null(ex);
    return ex;
}

fpp_tm *mk_tm(fpp_executor *ex, fpp_policy policy, int retain)
{
    fpp_tm *tm = NULL;
    fpp_tm_opts o = {.error_policy = policy, .monitor_interval_ms = -1, .retain_completed = retain};
    int rc = fpp_tm_create(&tm, ex, &o);
    cr_assert_eq(rc, 0, "tm: %s", fpp_strerror(rc));
    return tm;
}

int shm_entries(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "fpp-%ld-", (long)getpid());
    DIR *d = opendir("/dev/shm");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

int live_children(void)
{
    pid_t pids[256];
    return children_of(getpid(), pids, 256);
}

void assert_clean(void)
{
    cr_expect_eq(live_children(), 0, "child processes left behind");
    cr_expect_eq(shm_entries(), 0, "/dev/shm entries left behind");
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

uint64_t u64_of(const void *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

#include <linux/filter.h>
#include <sched.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[1 << 16];
static size_t log_len;

static void sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level; (void)user;
    pthread_mutex_lock(&log_mu);
    int n = snprintf(log_buf + log_len, sizeof log_buf - log_len, "%s\n", msg);
    if (n > 0 && log_len + (size_t)n < sizeof log_buf)
        log_len += (size_t)n;
    pthread_mutex_unlock(&log_mu);
}

void capture_logs(void) { fpp_log_set(sink, NULL, FPP_LOG_DEBUG); }

const char *captured_logs(void)
{
    pthread_mutex_lock(&log_mu);
    pthread_mutex_unlock(&log_mu);
    return log_buf;
}

void fail_syscall(long nr, int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = f};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "seccomp: %s", strerror(errno));
}

void fail_fork(int err)
{
    /* clone() without CLONE_VM is a fork; threads (and LeakSanitizer's tracer) keep working. */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_VM, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 6, .filter = f};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "seccomp: %s", strerror(errno));
}

int keeper_pids(pid_t *out, int max) { return children_of(getpid(), out, max); }

int child_pids(pid_t *out, int max)
{
    pid_t k[64];
    int nk = keeper_pids(k, 64), n = 0;
    for (int i = 0; i < nk && n < max; i++)
        n += children_of(k[i], out + n, max - n);
    return n;
}

int pool_pids(pid_t *out, int max, int *nfs)
{
    int n = child_pids(out, max), fs = n;
    for (int i = 0; i < fs && n < max; i++)
        n += children_of(out[i], out + n, max - n);
    if (nfs)
        *nfs = fs;
    return n;
}

int worker_pids(pid_t *out, int max)
{
    pid_t all[256];
    int fs = 0, n = pool_pids(all, 256, &fs), k = 0;
    for (int i = fs; i < n && k < max; i++)
        out[k++] = all[i];
    return k;
}

int children_of(pid_t pid, pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char f[400];
        snprintf(f, sizeof f, "%s/%s/children", path, e->d_name);
        FILE *fp = fopen(f, "r");
        if (!fp)
            continue;
        long child;
        while (n < max && fscanf(fp, "%ld", &child) == 1)
            out[n++] = (pid_t)child;
        fclose(fp);
    }
    closedir(d);
    return n;
}

bool gone(pid_t pid)
{
    char path[64], st = 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    bool dead = fscanf(f, "%*d %*s %c", &st) == 1 && (st == 'Z' || st == 'X');
    fclose(f);
    return dead;
}

/* Waits until every pid is gone or the deadline passes; returns the first one still there. */
pid_t all_gone_by(const pid_t *pids, int n, int64_t deadline)
{
    for (;;) {
        pid_t left = 0;
        for (int i = 0; i < n && !left; i++)
            if (!gone(pids[i]))
                left = pids[i];
        if (!left || mono_ns() > deadline)
            return left;
        sleep_ms(5);
    }
}

pid_t the_fork_server(void)
{
    pid_t fs[8];
    int n = child_pids(fs, 8);
    cr_assert_eq(n, 1, "one fork server (%d)", n);
    return fs[0];
}
