/* fpp-bench: throughput, speedup, latency, memory and CPU of fpp's executors against the
 * baselines and peers, side by side in one run.
 *
 * Every (executor, workload, workers) configuration runs in a fresh child process of this
 * program, so that its peak resident memory and CPU times are its own; the child reports a
 * row through a pipe. Executors: fpp-process, fpp-thread, fork (a fork per task, written
 * here), and Python's concurrent.futures process and thread pools and
 * multiprocessing.Pool.imap_unordered (bench/peers/peers.py). Workloads: noop, spin:US,
 * bytes:N, mixed, crashy:P. Timing lives only here, never in the tests.
 *
 * Usage: fpp-bench [--quick] [--csv FILE] [--plot FILE.png] [--workers 1,2,4]
 *                  [--executors a,b] [--workloads w1,w2] [--tasks N] [--peers DIR]
 *                  [--repeat N]     (each configuration N times, interleaved; the median row
 *                                    by tasks/s is printed, with the spread of the N)
 *                  [--journal-dir D] (where +journal rows write their journal; default
 *                                    $TMPDIR or /tmp)
 *                  [--hold-mib N]   (each run's parent first fills N MiB, e.g. 1024, to show
 *                                    what a large parent does to fork and respawn)
 *                  [--grow-mib N]   (each run's parent fills N MiB right after creating its
 *                                    executor: the fork server makes respawns independent of it)
 * Executors: fpp-process, fpp-thread, and variants of either: +keep (each result kept with
 * fpp_task_keep, which copies it out of the worker's arena into the task's own memory, as 0.1
 * copied every result, then released), +ordered (FPP_TM_ORDERED), +journal (a task journal,
 * fpp_tm_opts.journal, in a fresh file, every other option at its default). Every fpp row
 * runs a lazy fpp_map consumed with fpp_as_completed, with the default options.
 * Uses only <fpp.h>. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <fpp.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- workloads */

static double spin_per_us = 0; /* loop iterations per microsecond, calibrated once */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Pure CPU for `us` microseconds, on the clock (vDSO, no system call): the same in every
 * executor and in the serial baseline. */
static void spin_us(double us)
{
    uint64_t end = now_ns() + (uint64_t)(us * 1000.0);
    while (now_ns() < end)
        ;
}

static void calibrate(void)
{
    /* How many clock reads fit in a microsecond: only reported, spin_us is on the clock. */
    uint64_t t0 = now_ns(), n = 0;
    while (now_ns() - t0 < 20000000)
        n++;
    spin_per_us = (double)n / 20000.0;
}

typedef struct workload {
    char name[32];
    int kind; /* 0 noop, 1 spin, 2 bytes, 3 mixed, 4 crashy */
    double param;
} workload;

/* Task durations of `mixed`: long-tailed, the same for every executor. */
static double mixed_us(uint64_t i)
{
    uint64_t h = i * 0x9E3779B97F4A7C15ULL;
    unsigned r = (unsigned)(h >> 54) % 1000;
    return r < 900 ? 20 : r < 990 ? 200 : 5000;
}

static int crashy_hit(uint64_t i, double p)
{
    uint64_t h = (i + 1) * 0xD1B54A32D192ED03ULL;
    return (double)(h >> 11) / 9007199254740992.0 < p;
}

/* The body of every workload; `seq` is the task's sequence number. */
static unsigned char *big;
static size_t big_len;

static int task_body(const workload *w, uint64_t seq, fpp_out *out)
{
    switch (w->kind) {
    case 0: break;
    case 1: spin_us(w->param); break;
    case 2: {
        size_t n = (size_t)w->param;
        unsigned char *p = fpp_out_alloc(out, n);
        if (!p)
            return 1;
        memcpy(p, big, n);
        return 0;
    }
    case 3: spin_us(mixed_us(seq)); break;
    case 4:
        if (crashy_hit(seq, w->param))
            raise(SIGSEGV);
        break;
    }
    return fpp_out_set(out, &seq, sizeof seq);
}

static workload current; /* set before any executor exists; workers inherit it */

static int bench_fn(const void *arg, size_t len, fpp_out *out)
{
    uint64_t seq = 0;
    if (len == sizeof seq)
        memcpy(&seq, arg, sizeof seq);
    return task_body(&current, seq, out);
}

static int parse_workload(const char *s, workload *w)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", s);
    if (strcmp(s, "noop") == 0) w->kind = 0;
    else if (strncmp(s, "spin:", 5) == 0) { w->kind = 1; w->param = atof(s + 5); }
    else if (strncmp(s, "bytes:", 6) == 0) { w->kind = 2; w->param = atof(s + 6); }
    else if (strcmp(s, "mixed") == 0) w->kind = 3;
    else if (strncmp(s, "crashy:", 7) == 0) { w->kind = 4; w->param = atof(s + 7); }
    else return -1;
    return 0;
}

/* ----------------------------------------------------------------- rows */

typedef struct row {
    char executor[24], workload[32];
    int workers;
    long tasks;
    double secs, tasks_per_s, us_per_task, speedup, p50_us, p99_us, rss_mib, cpu_parent, cpu_workers;
    long failed;
    double extra; /* bytes/s for bytes:N; respawn ms for crashy; noop: p50 into a sleeping pool */
    double wake_us; /* noop: p50 of a semaphore round trip between two sleeping processes */
    double floor_us; /* noop: p50 of the least a pool can do (floor_round) */
    double extra2; /* +journal: the journal's bytes */
    double lo_tps, hi_tps; /* --repeat: the lowest and highest tasks/s of the repeats */
    int ok;
    int broken;   /* the pool itself broke (a peer's BrokenProcessPool): no rate */
} row;

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double serial_secs(const workload *w, long n)
{
    /* The same bodies, called in this process one after the other. Results go through a
     * plain buffer (copying bytes as the tasks do); crashes are not run. */
    uint64_t t0 = now_ns();
    static unsigned char *sink;
    if (w->kind == 2) {
        t0 = 0;
        free(sink);
        free(big);
        sink = malloc((size_t)w->param);
        big = malloc((size_t)w->param);
        memset(big, 0x5a, (size_t)w->param);
        memset(sink, 0, (size_t)w->param);
        t0 = now_ns();
    }
    for (long i = 0; i < n; i++) {
        if (w->kind == 1) spin_us(w->param);
        else if (w->kind == 2) memcpy(sink, big, (size_t)w->param);
        else if (w->kind == 3) spin_us(mixed_us((uint64_t)i));
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    if (w->kind == 2) {
        free(big);
        big = NULL;
    }
    return secs;
}

/* ---------------------------------------------------------------- fpp */

static size_t hold_mib = 0; /* --hold-mib: memory the parent holds before it creates the pool */
static const char *journal_dir; /* --journal-dir */
static size_t grow_mib = 0; /* --grow-mib: memory the parent takes after it created the pool */

/* The map's input: the task sequence numbers 0..n-1 (one 8-byte item each). */
typedef struct seq_iter { long i, n; uint64_t cur; } seq_iter;

static int next_seq(void *state, const void **arg, size_t *len)
{
    seq_iter *it = state;
    if (it->i >= it->n)
        return 0;
    it->cur = (uint64_t)it->i++;
    *arg = &it->cur;
    *len = sizeof it->cur;
    return 1;
}

/* A round trip between two processes through process-shared semaphores (sem_t in shared
 * memory): this process posts `ping` and waits on `pong`; the other, asleep in sem_wait on
 * `ping` (3 ms at least, as the caller sleeps before each round), posts `pong`. */
typedef struct pingpong { sem_t ping, pong; _Atomic int stop; pid_t pid; } pingpong;

static pingpong *pingpong_start(void)
{
    pingpong *p = mmap(NULL, sizeof *p, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    sem_init(&p->ping, 1, 0);
    sem_init(&p->pong, 1, 0);
    p->stop = 0;
    p->pid = fork();
    if (p->pid == 0) {
        for (;;) {
            while (sem_wait(&p->ping) != 0)
                ;
            if (p->stop)
                _exit(0);
            sem_post(&p->pong);
        }
    }
    if (p->pid < 0) {
        munmap(p, sizeof *p);
        return NULL;
    }
    return p;
}

static uint64_t pingpong_round(pingpong *p)
{
    uint64_t t0 = now_ns();
    sem_post(&p->ping);
    while (sem_wait(&p->pong) != 0)
        ;
    return now_ns() - t0;
}

static void pingpong_stop(pingpong *p)
{
    p->stop = 1;
    sem_post(&p->ping);
    waitpid(p->pid, NULL, 0);
    sem_destroy(&p->ping);
    sem_destroy(&p->pong);
    munmap(p, sizeof *p);
}

/* The least any pool can do for a lone task when its worker sleeps, on this machine: one
 * process wakes another asleep in futex_wait on a shared word (3 ms at least), then yields
 * until the other has stored its answer and yielded back: a wake-up and a hand-over of the
 * core both ways, no queue, no bookkeeping. (The scheduler wakes the sleeper on the waker's
 * core, where it runs when the waker yields; woken on an idle core instead, the sleeper would
 * cost that core's wake-up: tens of microseconds in a virtual machine.) fpp's lone task does
 * exactly this, plus the task manager's and the pool's bookkeeping on both sides. */
typedef struct wakefloor { _Atomic uint32_t go, ans; pid_t pid; } wakefloor;

static wakefloor *floor_start(void)
{
    wakefloor *f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED)
        return NULL;
    f->go = f->ans = 0;
    f->pid = fork();
    if (f->pid == 0) {
        uint32_t seen = 0;
        for (;;) {
            while (atomic_load(&f->go) == seen)
                syscall(SYS_futex, (uint32_t *)&f->go, FUTEX_WAIT, seen, NULL, NULL, 0);
            seen = atomic_load(&f->go);
            if (seen == UINT32_MAX)
                _exit(0);
            atomic_store(&f->ans, seen);
            sched_yield();
        }
    }
    if (f->pid < 0) {
        munmap(f, sizeof *f);
        return NULL;
    }
    return f;
}

static uint64_t floor_round(wakefloor *f)
{
    uint64_t t0 = now_ns();
    uint32_t v = atomic_fetch_add(&f->go, 1) + 1;
    syscall(SYS_futex, (uint32_t *)&f->go, FUTEX_WAKE, 1, NULL, NULL, 0);
    while (atomic_load(&f->ans) != v)
        sched_yield();
    return now_ns() - t0;
}

static void floor_stop(wakefloor *f)
{
    atomic_store(&f->go, UINT32_MAX);
    syscall(SYS_futex, (uint32_t *)&f->go, FUTEX_WAKE, 1, NULL, NULL, 0);
    waitpid(f->pid, NULL, 0);
    munmap(f, sizeof *f);
}

/* variant: "" the defaults; "keep" each result kept (copied out of the worker's arena into the
 * task's memory) and released, the documented way to hold on to a result; "ordered"
 * FPP_TM_ORDERED; "journal" a task journal in a new file of journal_dir (removed after). */
static int run_fpp(int threads, const char *variant, const workload *w, int workers, long n, row *r)
{
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    int fn = fpp_lookup("bench");
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = workers};
    if (w->kind == 2)
        eo.max_result_size = (size_t)w->param;
    int rc = threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo);
    if (rc)
        return rc;
    if (grow_mib) {
        /* A parent that grows after creating the pool: respawns must not pay for it. */
        size_t grow = grow_mib << 20;
        unsigned char *g = malloc(grow);
        if (g)
            memset(g, 1, grow);
    }
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
    if (!strcmp(variant, "ordered"))
        to.flags |= FPP_TM_ORDERED;
    char jpath[512];
    snprintf(jpath, sizeof jpath, "%s/fpp-bench-journal-%ld", journal_dir, (long)getpid());
    if (!strcmp(variant, "journal")) {
        unlink(jpath);
        to.journal = jpath;
    }
    if (fpp_tm_create(&tm, ex, &to) != 0)
        return 1;

    /* Latency: one task at a time into an idle pool. */
    int lat_n = w->kind == 1 || w->kind == 3 ? 200 : w->kind == 2 ? 100 : 2000;
    uint64_t *lat = calloc((size_t)lat_n, sizeof *lat);
    fpp_task *t;
    for (int i = 0; i < lat_n; i++) {
        uint64_t seq = (uint64_t)i + 1000000000ULL, t0 = now_ns();
        fpp_submit(tm, fn, &seq, sizeof seq);
        while (fpp_as_completed(tm, &t) == 1)
            ;
        lat[i] = now_ns() - t0;
    }
    qsort(lat, (size_t)lat_n, sizeof *lat, cmp_u64);
    r->p50_us = (double)lat[lat_n / 2] / 1e3;
    r->p99_us = (double)lat[(lat_n * 99) / 100] / 1e3;
    if (w->kind == 0) {
        /* The same into a pool asleep: 3 ms idle before each task, long past the workers' and
         * the parent's spin, so both wake through the futex. Its baseline, measured in turn
         * with it under the same conditions: two processes that wake each other through
         * process-shared semaphores after both slept 3 ms, one round trip (two wake-ups, all
         * that is physically needed when both sides sleep). */
        int m = 200;
        uint64_t *rt = calloc((size_t)m, sizeof *rt), *fl = calloc((size_t)m, sizeof *fl);
        pingpong *pp = pingpong_start();
        wakefloor *wf = floor_start();
        for (int i = 0; i < m; i++) {
            struct timespec idle = {0, 3000000};
            nanosleep(&idle, NULL);
            uint64_t seq = (uint64_t)i, t0 = now_ns();
            fpp_submit(tm, fn, &seq, sizeof seq);
            while (fpp_as_completed(tm, &t) == 1)
                ;
            lat[i] = now_ns() - t0;
            if (pp) {
                nanosleep(&idle, NULL);
                rt[i] = pingpong_round(pp);
            }
            if (wf) {
                nanosleep(&idle, NULL);
                fl[i] = floor_round(wf);
            }
        }
        qsort(lat, (size_t)m, sizeof *lat, cmp_u64);
        r->extra = (double)lat[m / 2] / 1e3;
        if (pp) {
            qsort(rt, (size_t)m, sizeof *rt, cmp_u64);
            r->wake_us = (double)rt[m / 2] / 1e3;
            pingpong_stop(pp);
        }
        if (wf) {
            qsort(fl, (size_t)m, sizeof *fl, cmp_u64);
            r->floor_us = (double)fl[m / 2] / 1e3;
            floor_stop(wf);
        }
        free(rt);
        free(fl);
    }
    free(lat);

    /* Throughput, the way users write it: a lazy map over the tasks, consumed with
     * fpp_as_completed, every option at its default (but max_result_size for bytes:N). */
    uint64_t t0 = now_ns();
    long got = 0, failed = 0;
    seq_iter it = {0, n, 0};
    if (fpp_map(tm, fn, next_seq, &it) != 0)
        return 1;
    int keep = !strcmp(variant, "keep");
    while (fpp_as_completed(tm, &t) == 1) {
        got++;
        failed += fpp_task_status(t) != FPP_DONE;
        if (keep)
            fpp_task_release(fpp_task_keep(t));
    }
    r->secs = (double)(now_ns() - t0) / 1e9;
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    r->failed = failed;

    if (w->kind == 4 && !threads) {
        /* Respawn: a crash, then the time until a replacement has run the next task. */
        fpp_tm_free(tm);
        fpp_executor_free(ex);
        eo.workers = 1;
        fpp_process_executor(&ex, &eo);
        fpp_tm_create(&tm, ex, &to);
        int crash_fn = fpp_lookup("bench_crash");
        uint64_t worst = 0, sum = 0, each[20];
        int reps = 20;
        for (int k = 0; k < reps; k++) {
            uint64_t seq = 0;
            /* Crashes spaced out, as in life: the spare worker is forked again meanwhile. */
            struct timespec gap = {0, 30000000};
            nanosleep(&gap, NULL);
            fpp_submit(tm, crash_fn, &seq, sizeof seq);
            while (fpp_as_completed(tm, &t) == 1)
                ;
            uint64_t a = now_ns();
            fpp_submit(tm, fn, &seq, sizeof seq);
            while (fpp_as_completed(tm, &t) == 1)
                ;
            uint64_t d = now_ns() - a;
            sum += d;
            each[k] = d;
            worst = d > worst ? d : worst;
        }
        qsort(each, (size_t)reps, sizeof *each, cmp_u64);
        r->extra = (double)each[reps / 2] / 1e6; /* median: crash seen -> replacement ran a task */
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    if (to.journal) {
        struct stat jst;
        if (stat(jpath, &jst) == 0 && w->kind != 4)
            r->extra2 = (double)jst.st_size; /* the journal's size, for the note */
        unlink(jpath);
    }
    return got == n ? 0 : 1;
}

static int crash_fn(const void *a, size_t l, fpp_out *o)
{
    (void)a; (void)l; (void)o;
    raise(SIGSEGV);
    return 0;
}

/* ---------------------------------------------------- fork per task */

typedef struct fslot { pid_t pid; int fd; } fslot;

static void fork_child(const workload *w, uint64_t seq, int fd)
{
    if (w->kind == 4 && crashy_hit(seq, w->param))
        raise(SIGSEGV);
    if (w->kind == 1) spin_us(w->param);
    if (w->kind == 3) spin_us(mixed_us(seq));
    const unsigned char *src = w->kind == 2 ? big : (const unsigned char *)&seq;
    size_t left = w->kind == 2 ? (size_t)w->param : sizeof seq;
    while (left) {
        ssize_t k = write(fd, src, left);
        if (k <= 0)
            _exit(1);
        src += k;
        left -= (size_t)k;
    }
    _exit(0);
}

static int run_fork(const workload *w, int workers, long n, row *r)
{
    uint64_t t0 = now_ns();
    long started = 0, done = 0;
    fslot *sl = calloc((size_t)workers, sizeof *sl);
    struct pollfd *pf = calloc((size_t)workers, sizeof *pf);
    static unsigned char buf[1 << 16];
    for (int i = 0; i < workers; i++)
        sl[i].pid = 0;
    while (done < n) {
        for (int i = 0; i < workers && started < n; i++) {
            if (sl[i].pid)
                continue;
            int p[2];
            if (pipe(p) != 0)
                return 1;
            uint64_t seq = (uint64_t)started++;
            pid_t pid = fork();
            if (pid == 0) {
                close(p[0]);
                fork_child(w, seq, p[1]);
            }
            close(p[1]);
            sl[i].pid = pid;
            sl[i].fd = p[0];
        }
        int m = 0;
        for (int i = 0; i < workers; i++)
            pf[i] = (struct pollfd){.fd = sl[i].pid ? sl[i].fd : -1, .events = POLLIN};
        poll(pf, (nfds_t)workers, -1);
        for (int i = 0; i < workers; i++) {
            if (!sl[i].pid || !(pf[i].revents & (POLLIN | POLLHUP)))
                continue;
            ssize_t k = read(sl[i].fd, buf, sizeof buf); /* the result, a piece at a time */
            if (k > 0)
                continue;
            close(sl[i].fd);
            int status;
            waitpid(sl[i].pid, &status, 0);
            r->failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            sl[i].pid = 0;
            done++;
            m++;
        }
    }
    r->secs = (double)(now_ns() - t0) / 1e9;
    free(sl);
    free(pf);
    /* One at a time, for latency. */
    int lat_n = 200;
    uint64_t lat[200];
    for (int i = 0; i < lat_n; i++) {
        uint64_t a = now_ns();
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        waitpid(pid, NULL, 0);
        lat[i] = now_ns() - a;
    }
    qsort(lat, (size_t)lat_n, sizeof *lat, cmp_u64);
    r->p50_us = (double)lat[lat_n / 2] / 1e3;
    r->p99_us = (double)lat[(lat_n * 99) / 100] / 1e3;
    return 0;
}

/* ---------------------------------------------------------- Python peers */

static const char *peers_dir = NULL;

static int run_python(const char *executor, const workload *w, int workers, long n, row *r)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout 300 python3 %s/peers.py %s %s %d %ld %.3f", peers_dir, executor, w->name, workers, n,
             spin_per_us);
    FILE *f = popen(cmd, "r");
    if (!f)
        return 1;
    double secs = 0, p50 = 0, p99 = 0, rss = 0, cpu_p = 0, cpu_w = 0;
    long failed = 0;
    int broken = 0;
    int k = fscanf(f, "%lf %lf %lf %lf %lf %lf %ld %d", &secs, &p50, &p99, &rss, &cpu_p, &cpu_w, &failed, &broken);
    int st = pclose(f);
    if (k != 8 || st != 0)
        return 1;
    r->broken = broken;
    r->secs = secs;
    r->p50_us = p50;
    r->p99_us = p99;
    r->rss_mib = rss;
    r->cpu_parent = cpu_p;
    r->cpu_workers = cpu_w;
    r->failed = failed;
    return 0;
}

/* ----------------------------------------------------------- one config */

static int run_config(const char *executor, const workload *w, int workers, long n, double serial, row *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->executor, sizeof r->executor, "%s", executor);
    snprintf(r->workload, sizeof r->workload, "%s", w->name);
    r->workers = workers;
    r->tasks = n;
    int p[2];
    if (pipe(p) != 0)
        return 1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        current = *w;
        if (hold_mib) {
            size_t hold = hold_mib << 20;
            unsigned char *h = malloc(hold);
            if (h)
                memset(h, 1, hold); /* resident, as a large application's heap would be */
        }
        if (w->kind == 2) { /* the bytes a bytes:N task returns, made only where needed */
            big_len = (size_t)w->param;
            big = malloc(big_len);
            memset(big, 0x5a, big_len);
        }
        int rc;
        if (strncmp(executor, "fpp-process", 11) == 0)
            rc = run_fpp(0, executor[11] == '+' ? executor + 12 : "", w, workers, n, r);
        else if (strncmp(executor, "fpp-thread", 10) == 0)
            rc = run_fpp(1, executor[10] == '+' ? executor + 11 : "", w, workers, n, r);
        else if (strcmp(executor, "fork") == 0) rc = run_fork(w, workers, n, r);
        else rc = run_python(executor, w, workers, n, r);
        if (strncmp(executor, "fpp", 3) == 0 || strcmp(executor, "fork") == 0) {
            struct rusage self, kids;
            getrusage(RUSAGE_SELF, &self);
            getrusage(RUSAGE_CHILDREN, &kids);
            r->cpu_parent = tv(self.ru_utime) + tv(self.ru_stime);
            r->cpu_workers = tv(kids.ru_utime) + tv(kids.ru_stime);
            r->rss_mib = (double)self.ru_maxrss / 1024.0;
        }
        r->ok = rc == 0;
        ssize_t k = write(p[1], r, sizeof *r);
        (void)k;
        _exit(0);
    }
    close(p[1]);
    ssize_t got = read(p[0], r, sizeof *r);
    close(p[0]);
    waitpid(pid, NULL, 0);
    if (got != (ssize_t)sizeof *r || !r->ok)
        return 1;
    r->tasks_per_s = (double)n / r->secs;
    r->us_per_task = r->secs * 1e6 / (double)n;
    r->speedup = serial > 0 ? serial / r->secs : 0;
    if (w->kind == 2)
        r->extra = (double)n * w->param / r->secs;
    return 0;
}

/* ---------------------------------------------------------------- main */

#define MAX_REPEAT 15

static int cmp_row_tps(const void *a, const void *b)
{
    double x = ((const row *)a)->tasks_per_s, y = ((const row *)b)->tasks_per_s;
    return x < y ? -1 : x > y;
}

static double memcpy_gbs(size_t n)
{
    unsigned char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int r = 0; r < 7; r++) {
        int reps = (int)(256 * 1048576 / n) + 1;
        uint64_t t0 = now_ns();
        for (int i = 0; i < reps; i++) {
            memcpy(b, a, n);
            __asm__ __volatile__("" ::"r"(b) : "memory");
        }
        double gbs = (double)n * reps / ((double)(now_ns() - t0));
        if (gbs > best)
            best = gbs;
    }
    free(a);
    free(b);
    return best;
}

static int split(char *s, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
        out[n++] = tok;
    return n;
}

int main(int argc, char **argv)
{
    int quick = 0, workers_given = 0, repeat = 1;
    const char *csv = NULL, *plot = NULL;
    char workers_s[64] = "1,2",
         execs_s[256] = "fpp-process,fpp-process+keep,fpp-process+ordered,fpp-process+journal,fpp-thread,fork,cf-process,"
                        "cf-thread,mp-imap";
    char loads_s[256] = "noop,spin:1000,bytes:1048576,mixed,crashy:0.01";
    long tasks_override = 0;
    static char peers_buf[512];
    snprintf(peers_buf, sizeof peers_buf, "%s", BENCH_PEERS_DIR);
    peers_dir = peers_buf;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--quick")) quick = 1;
        else if (!strcmp(argv[a], "--csv") && a + 1 < argc) csv = argv[++a];
        else if (!strcmp(argv[a], "--plot") && a + 1 < argc) plot = argv[++a];
        else if (!strcmp(argv[a], "--workers") && a + 1 < argc) { snprintf(workers_s, sizeof workers_s, "%s", argv[++a]); workers_given = 1; }
        else if (!strcmp(argv[a], "--executors") && a + 1 < argc) snprintf(execs_s, sizeof execs_s, "%s", argv[++a]);
        else if (!strcmp(argv[a], "--workloads") && a + 1 < argc) snprintf(loads_s, sizeof loads_s, "%s", argv[++a]);
        else if (!strcmp(argv[a], "--tasks") && a + 1 < argc) tasks_override = atol(argv[++a]);
        else if (!strcmp(argv[a], "--peers") && a + 1 < argc) peers_dir = argv[++a];
        else if (!strcmp(argv[a], "--hold-mib") && a + 1 < argc) hold_mib = (size_t)atol(argv[++a]);
        else if (!strcmp(argv[a], "--grow-mib") && a + 1 < argc) grow_mib = (size_t)atol(argv[++a]);
        else if (!strcmp(argv[a], "--repeat") && a + 1 < argc) repeat = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--journal-dir") && a + 1 < argc) journal_dir = argv[++a];
        else {
            fprintf(stderr, "usage: %s [--quick] [--csv FILE] [--plot FILE.png] [--workers 1,2] [--executors LIST] "
                            "[--workloads LIST] [--tasks N] [--peers DIR] [--hold-mib N] [--grow-mib N] [--repeat N] "
                            "[--journal-dir DIR]\n", argv[0]);
            return 2;
        }
    }
    if (quick && !workers_given)
        snprintf(workers_s, sizeof workers_s, "2"); /* --quick: one worker count, CI's smoke run */
    if (repeat < 1 || repeat > MAX_REPEAT) {
        fprintf(stderr, "--repeat: 1..%d\n", MAX_REPEAT);
        return 2;
    }
    if (!journal_dir)
        journal_dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (fpp_register("bench", bench_fn) < 0 || fpp_register("bench_crash", crash_fn) < 0)
        return 1;
    calibrate();

    char *execs[16], *loads[16], *ws[16];
    int ne = split(execs_s, execs, 16), nl = split(loads_s, loads, 16), nw = split(workers_s, ws, 16);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char cpu[128] = "unknown CPU";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[256];
        while (fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) snprintf(cpu, sizeof cpu, "%s", c + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(ci);
    }
    double mc = memcpy_gbs(1 << 20);
    printf("fpp-bench %s on %ld cores (%s); memcpy of 1 MiB: %.1f GB/s; %.0f clock reads/us\n",
           FPP_VERSION_STRING, ncpu, cpu, mc, spin_per_us);
    printf("%-20s %-14s %3s %8s %11s %9s %7s %9s %9s %7s %7s %7s %s\n", "executor", "workload", "w", "tasks", "tasks/s",
           "us/task", "speedup", "p50_us", "p99_us", "rss_MiB", "cpu_par", "cpu_wrk", "note");
    FILE *out = csv ? fopen(csv, "w") : NULL;
    if (out)
        fprintf(out, "executor,workload,workers,tasks,tasks_per_s,us_per_task,speedup,p50_us,p99_us,rss_mib,cpu_parent_s,cpu_workers_s,failed,extra\n");
    int tty = isatty(STDERR_FILENO);
    row rows[512];
    int nrows = 0;
    for (int li = 0; li < nl; li++) {
        workload w;
        if (parse_workload(loads[li], &w)) {
            fprintf(stderr, "unknown workload %s\n", loads[li]);
            return 2;
        }
        for (int wi = 0; wi < nw; wi++) {
            int workers = atoi(ws[wi]);
            /* The executors of this (workload, workers), each run `repeat` times, interleaved
             * (A B C A B C ...) so that a change in the machine's load touches them alike. */
            const char *todo[16];
            long ns[16];
            int nt = 0;
            for (int ei = 0; ei < ne; ei++) {
                const char *e = execs[ei];
                int fast = !strncmp(e, "fpp-", 4);
                int py_proc = !strcmp(e, "cf-process");
                double per_task_us = w.kind == 1 ? w.param : w.kind == 3 ? 0.9 * 20 + 0.09 * 200 + 0.01 * 5000
                                   : w.kind == 2 ? w.param / 4000.0 : 1;
                double budget_s = quick ? 0.1 : 2.0;
                long n = (long)(budget_s * 1e6 * workers / per_task_us);
                if (w.kind == 0 || w.kind == 4)
                    n = fast ? (quick ? 100000 : 2000000) : py_proc ? (quick ? 1000 : 20000) : !strcmp(e, "fork") ? (quick ? 300 : 3000) : (quick ? 2000 : 50000);
                if (!fast && w.kind != 0 && w.kind != 4 && n > 20000)
                    n = 20000;
                if (!strcmp(e, "fork") && n > 3000)
                    n = quick ? 300 : 3000;
                if (w.kind == 2 && n > 20000)
                    n = 20000;
                if (w.kind == 2 && !fast && n > 2000)
                    n = 2000; /* the peers hold every result: 1 MiB each */
                if (n < 20)
                    n = 20;
                if (tasks_override)
                    n = tasks_override;
                if (w.kind == 4 && !strncmp(e, "fpp-thread", 10))
                    continue; /* a crash takes the thread executor's process down */
                if ((strstr(e, "+keep") && w.kind != 2) || (strstr(e, "+ordered") && w.kind != 0 && w.kind != 3) ||
                    (strstr(e, "+journal") && w.kind != 0 && w.kind != 3))
                    continue; /* variants only where they change something: copies, reordering, records */
                if (w.kind == 4 && !strcmp(e, "cf-thread"))
                    continue;
                todo[nt] = e;
                ns[nt++] = n;
            }
            row reps[16][MAX_REPEAT];
            int got[16] = {0};
            for (int rep = 0; rep < repeat; rep++)
                for (int t = 0; t < nt; t++) {
                    if (tty)
                        fprintf(stderr, "\r[%s %s w=%d n=%ld, %d/%d] ...            ", todo[t], w.name, workers, ns[t],
                                rep + 1, repeat);
                    double serial = w.kind == 0 || w.kind == 4 ? 0 : serial_secs(&w, ns[t]);
                    if (run_config(todo[t], &w, workers, ns[t], serial, &reps[t][got[t]]) == 0)
                        got[t]++;
                    if (tty)
                        fprintf(stderr, "\r%*s\r", 70, "");
                }
            for (int t = 0; t < nt; t++) {
                const char *e = todo[t];
                int fast = !strncmp(e, "fpp-", 4);
                if (got[t] == 0) {
                    printf("%-20s %-14s %3d  (failed or unavailable)\n", e, w.name, workers);
                    continue;
                }
                qsort(reps[t], (size_t)got[t], sizeof reps[t][0], cmp_row_tps);
                row *r = &rows[nrows];
                *r = reps[t][got[t] / 2]; /* the median by tasks/s */
                r->lo_tps = reps[t][0].tasks_per_s;
                r->hi_tps = reps[t][got[t] - 1].tasks_per_s;
                char note[192] = "";
                if (w.kind == 2)
                    snprintf(note, sizeof note, "%.2f GB/s = %.2f x memcpy", r->extra / 1e9, r->extra / 1e9 / mc);
                else if (w.kind == 0 && fast && r->wake_us > 0 && r->floor_us > 0)
                    snprintf(note, sizeof note,
                             "asleep: p50 %.1f us = %.2f x a wake-up round trip (%.1f us); least possible %.1f us = %.2f x",
                             r->extra, r->extra / r->wake_us, r->wake_us, r->floor_us, r->floor_us / r->wake_us);
                else if (w.kind == 0 && fast && r->wake_us > 0)
                    snprintf(note, sizeof note, "asleep: p50 %.1f us = %.2f x a wake-up round trip (%.1f us)", r->extra,
                             r->extra / r->wake_us, r->wake_us);
                else if (w.kind == 0 && fast)
                    snprintf(note, sizeof note, "p50 into a sleeping pool %.1f us", r->extra);
                else if (w.kind == 4 && !strncmp(e, "fpp-process", 11))
                    snprintf(note, sizeof note, "%ld crashed; respawn p50 %.2f ms", r->failed, r->extra);
                else if (w.kind == 4)
                    snprintf(note, sizeof note, "%ld crashed", r->failed);
                size_t nl0 = strlen(note);
                if (strstr(e, "+journal"))
                    snprintf(note + nl0, sizeof note - nl0, "%sjournal %.0f KB", nl0 ? "; " : "", r->extra2 / 1e3);
                nl0 = strlen(note);
                if (got[t] > 1)
                    snprintf(note + nl0, sizeof note - nl0, "%smedian of %d (%.0f..%.0f)", nl0 ? "; " : "", got[t],
                             r->lo_tps, r->hi_tps);
                if (r->broken) {
                    /* A pool that broke (one crash and every later task fails) has no rate to
                     * compare: its "tasks per second" would be failures per second. */
                    printf("%-20s %-14s %3d %8ld  BROKE: the pool broke (BrokenProcessPool), %ld of %ld tasks "
                           "failed; no rate\n", r->executor, r->workload, r->workers, r->tasks, r->failed, r->tasks);
                    fflush(stdout);
                    if (out)
                        fprintf(out, "%s,%s,%d,%ld,,,,,,%.2f,%.3f,%.3f,%ld,broken\n", r->executor, r->workload,
                                r->workers, r->tasks, r->rss_mib, r->cpu_parent, r->cpu_workers, r->failed);
                    continue;
                }
                printf("%-20s %-14s %3d %8ld %11.0f %9.2f %7.2f %9.1f %9.1f %7.1f %7.2f %7.2f %s\n", r->executor,
                       r->workload, r->workers, r->tasks, r->tasks_per_s, r->us_per_task, r->speedup, r->p50_us,
                       r->p99_us, r->rss_mib, r->cpu_parent, r->cpu_workers, note);
                fflush(stdout);
                if (out)
                    fprintf(out, "%s,%s,%d,%ld,%.1f,%.3f,%.3f,%.2f,%.2f,%.2f,%.3f,%.3f,%ld,%.3f\n", r->executor,
                            r->workload, r->workers, r->tasks, r->tasks_per_s, r->us_per_task, r->speedup, r->p50_us,
                            r->p99_us, r->rss_mib, r->cpu_parent, r->cpu_workers, r->failed, r->extra);
                nrows++;
            }
        }
    }
    /* Ratios: fpp-process over each other executor, same workload and workers. */
    printf("\nfpp-process throughput / peer (same workload, same workers, this run):\n");
    for (int i = 0; i < nrows; i++) {
        if (strcmp(rows[i].executor, "fpp-process"))
            continue;
        printf("  %-14s w=%d:", rows[i].workload, rows[i].workers);
        for (int j = 0; j < nrows; j++)
            if (j != i && !strcmp(rows[j].workload, rows[i].workload) && rows[j].workers == rows[i].workers)
                printf("  /%s %.2fx", rows[j].executor, rows[i].tasks_per_s / rows[j].tasks_per_s);
        printf("\n");
    }
    if (out)
        fclose(out);
    if (plot && csv) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "gnuplot -e \"csv='%s'; out='%s'\" %s/plot.gp", csv, plot, BENCH_SOURCE_DIR);
        if (system(cmd) != 0)
            fprintf(stderr, "gnuplot failed (is gnuplot-nox installed?)\n");
        else
            printf("plot written to %s\n", plot);
    } else if (plot) {
        fprintf(stderr, "--plot needs --csv\n");
    }
    return 0;
}
