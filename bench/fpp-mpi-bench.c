/* fpp-mpi-bench: the MPI executor next to the process executor, on noop, spin and bytes.
 *
 *     mpirun -np 3 ./build/bench/fpp-mpi-bench [--workloads noop,spin:1000,bytes:1048576]
 *            [--workers 1] [--tasks N] [--label shm] [--no-process] [--latency] [--csv FILE]
 *            [--debug]
 *     mpirun -np 4 --enable-recovery --mca async_mpi_finalize 1 ./build/bench/fpp-mpi-bench
 *            --lose kill|none [--rank-timeout 1000] [--tasks 3000] [--task-ms 2] [--workers 1]
 *            [--label shm] [--csv FILE]
 *
 * Rank 0 measures; the other ranks serve with --workers local workers each. For each
 * workload rank 0 first runs the process executor with as many workers as all serving ranks
 * together (the other ranks wait meanwhile, napping), then the MPI executor. Both are driven
 * the way users write it: a lazy fpp_map consumed with fpp_as_completed, every option at its
 * default but the workers (and max_result_size for bytes). Not a test: timings only.
 *
 * --lose (issue 17 B; bench/mpi-lost-bench.sh): one MPI executor with a rank timeout runs
 * --tasks tasks that each sleep --task-ms; with "kill", the first task rank 2 runs past a
 * quarter of them SIGKILLs rank 2. Rank 0 prints the run time (first submit to last result)
 * and, with a kill, how long after it rank 2 was declared lost. */
#include <fcntl.h>
#include <fpp_mpi.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static int noop(const void *a, size_t n, fpp_out *o) { return fpp_out_set(o, a, n); }

static void spin_us(uint32_t us)
{
    double until = now_s() + us / 1e6;
    while (now_s() < until) {
    }
}

static int spin(const void *a, size_t n, fpp_out *o)
{
    uint32_t us = 0;
    if (n >= sizeof us)
        memcpy(&us, a, sizeof us);
    spin_us(us);
    return fpp_out_set(o, &us, sizeof us);
}

static int bytes(const void *a, size_t n, fpp_out *o)
{
    uint64_t len = 0;
    if (n >= sizeof len)
        memcpy(&len, a, sizeof len);
    unsigned char *p = fpp_out_alloc(o, (size_t)len);
    if (!p && len)
        return 1;
    memset(p, 0x5a, (size_t)len);
    return 0;
}

static int F_NOOP, F_SPIN, F_BYTES, F_SLEEPY;

/* --lose: {ms, index, trigger}: sleeps ms; the first of these rank 2 runs with index >= trigger
 * (0: none) writes the time to stamp_path and SIGKILLs rank 2. */
static int my_rank;
static pid_t rank_pid;
static char stamp_path[96];

static int sleepy(const void *a, size_t n, fpp_out *o)
{
    int32_t v[3];
    if (n != sizeof v)
        return 1;
    memcpy(v, a, sizeof v);
    if (my_rank == 2 && v[2] > 0 && v[1] >= v[2]) {
        int fd = open(stamp_path, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd >= 0) {
            dprintf(fd, "%.9f\n", now_s());
            close(fd);
            kill(rank_pid, SIGKILL);
        }
    }
    struct timespec ts = {v[0] / 1000, (long)(v[0] % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return fpp_out_set(o, &my_rank, sizeof my_rank);
}

static double t_lost;
static void loss_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)user;
    if (strstr(msg, " lost: nothing heard from it") && t_lost == 0)
        t_lost = now_s();
    fprintf(stderr, "%s\n", msg);
}

/* Rank 0 of --lose: returns 0, or 1 if a task came back wrong. */
static int run_loss(bool kill_one, unsigned timeout_ms, uint64_t tasks, int task_ms, int workers, int size,
                    const char *label, const char *csv)
{
    fpp_log_set(loss_sink, NULL, FPP_LOG_WARN);
    fpp_executor_opts eo = {.workers = workers};
    fpp_mpi_opts mo = {.rank_timeout_ms = timeout_ms};
    fpp_executor *ex;
    if (fpp_mpi_executor_ex(&ex, MPI_COMM_WORLD, &eo, &mo) != 0)
        MPI_Abort(MPI_COMM_WORLD, 1);
    fpp_tm *tm;
    fpp_tm_opts o = {.error_policy = FPP_LOG, .monitor_interval_ms = -1, .retries = 1};
    fpp_tm_create(&tm, ex, &o);
    double t0 = now_s();
    for (uint64_t i = 0; i < tasks; i++) {
        int32_t v[3] = {task_ms, (int32_t)i, kill_one ? (int32_t)(tasks / 4) : 0};
        fpp_submit(tm, F_SLEEPY, v, sizeof v);
    }
    fpp_task *t;
    uint64_t ok = 0;
    while (fpp_as_completed(tm, &t) == 1)
        ok += fpp_task_status(t) == FPP_DONE;
    double run = now_s() - t0;
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    double killed = 0, detect_ms = 0;
    FILE *f = kill_one ? fopen(stamp_path, "r") : NULL;
    if (f) {
        if (fscanf(f, "%lf", &killed) != 1)
            killed = 0;
        fclose(f);
    }
    unlink(stamp_path);
    if (killed > 0 && t_lost > 0)
        detect_ms = (t_lost - killed) * 1e3;
    printf("loss: %s %s: %llu tasks of %d ms, %d serving rank(s) x %d worker(s), rank timeout %u ms: run %.3f s",
           label, kill_one ? "kill" : "none", (unsigned long long)tasks, task_ms, size - 1, workers, timeout_ms, run);
    if (kill_one)
        printf(", rank 2 lost %.1f ms after the kill (%llu lost)", detect_ms, (unsigned long long)st.ranks_lost);
    printf("%s\n", ok == tasks ? "" : "  (tasks failed!)");
    if (csv) {
        FILE *out = fopen(csv, "a");
        if (out) {
            fprintf(out, "%s,%s,%.4f,%.2f,%d,%u\n", label, kill_one ? "kill" : "none", run, detect_ms, size - 1,
                    timeout_ms);
            fclose(out);
        }
    }
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    return ok == tasks && (!kill_one || (st.ranks_lost == 1 && detect_ms > 0)) ? 0 : 1;
}

typedef struct gen {
    uint64_t i, n;
    unsigned char arg[8];
    size_t len;
} gen;

static int next(void *state, const void **arg, size_t *len)
{
    gen *g = state;
    if (g->i >= g->n)
        return 0;
    g->i++;
    *arg = g->arg;
    *len = g->len;
    return 1;
}

typedef struct wl {
    char name[32];
    int fn;
    uint32_t spin_us;
    uint64_t bytes;
} wl;

typedef struct row {
    double secs, cpu;
    uint64_t ok;
} row;

static row run(fpp_executor *ex, const wl *w, uint64_t tasks)
{
    fpp_tm *tm;
    fpp_tm_opts o = {.error_policy = FPP_LOG, .monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &o);
    gen g = {.n = tasks, .len = 8};
    if (w->fn == F_SPIN)
        memcpy(g.arg, &w->spin_us, sizeof w->spin_us);
    else if (w->fn == F_BYTES)
        memcpy(g.arg, &w->bytes, sizeof w->bytes);
    double c0 = cpu_s(), t0 = now_s();
    fpp_map(tm, w->fn, next, &g);
    fpp_task *t;
    row r = {0};
    volatile unsigned char sink = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        size_t len;
        const unsigned char *p = fpp_task_result(t, &len);
        if (p) {
            r.ok++;
            if (len)
                sink ^= p[len - 1]; /* touch the result, as a user would */
        }
    }
    (void)sink;
    r.secs = now_s() - t0;
    r.cpu = cpu_s() - c0;
    fpp_tm_free(tm);
    return r;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One noop task at a time, into idle workers: submit to result, in microseconds. */
static void latency(fpp_executor *ex, int n, double *p50, double *p99)
{
    fpp_tm *tm;
    fpp_tm_opts o = {.error_policy = FPP_LOG, .monitor_interval_ms = -1};
    fpp_tm_create(&tm, ex, &o);
    double *us = malloc((size_t)n * sizeof *us);
    uint64_t x = 1;
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        fpp_submit(tm, F_NOOP, &x, sizeof x);
        fpp_task *t;
        fpp_as_completed(tm, &t);
        us[i] = (now_s() - t0) * 1e6;
        if (i % 16 == 15)
            usleep(2000); /* now and then, let everything go idle (naps grow) */
    }
    qsort(us, (size_t)n, sizeof *us, cmp_d);
    *p50 = us[n / 2];
    *p99 = us[n * 99 / 100];
    free(us);
    fpp_tm_free(tm);
}

static double memcpy_gbs(void)
{
    size_t n = 1u << 20;
    unsigned char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double t0 = now_s();
    int reps = 2000;
    for (int i = 0; i < reps; i++) {
        a[i % n] = (unsigned char)i;
        memcpy(b, a, n);
    }
    double dt = now_s() - t0;
    volatile unsigned char s = b[7];
    (void)s;
    free(a);
    free(b);
    return (double)n * reps / dt / 1e9;
}

static uint64_t default_tasks(const wl *w)
{
    if (w->fn == F_NOOP)
        return 2000000;
    if (w->fn == F_SPIN)
        return w->spin_us >= 2000 ? 2000 : 4000000 / (w->spin_us ? w->spin_us : 1);
    return w->bytes >= (1u << 20) ? 4000 : 100000;
}

/* Pass 0: a local process executor with as many workers as the serving ranks have in all, the
 * reference; pass 1: the MPI executor. Aborts the job if it cannot be made. */
static fpp_executor *make_executor(int pass, const fpp_executor_opts *eo, int local_workers)
{
    fpp_executor *ex = NULL;
    fpp_executor_opts po = *eo;
    po.workers = local_workers;
    int rc = pass == 0 ? fpp_process_executor(&ex, &po) : fpp_mpi_executor(&ex, MPI_COMM_WORLD, eo);
    if (rc) {
        fprintf(stderr, "executor: %s\n", fpp_strerror(rc));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return ex;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    F_NOOP = fpp_register("noop", noop);
    F_SPIN = fpp_register("spin", spin);
    F_BYTES = fpp_register("bytes", bytes);
    F_SLEEPY = fpp_register("sleepy", sleepy);
    my_rank = rank;
    rank_pid = getpid();

    const char *workloads = "noop,spin:1000,bytes:1048576", *label = "shm", *csv = NULL;
    const char *lose = NULL;
    int workers = 1, process = 1, lat = 0, debug = 0, task_ms = 2;
    unsigned rank_timeout = 1000;
    uint64_t tasks = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--workloads") && i + 1 < argc)
            workloads = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            tasks = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            csv = argv[++i];
        else if (!strcmp(argv[i], "--no-process"))
            process = 0;
        else if (!strcmp(argv[i], "--latency"))
            lat = 1;
        else if (!strcmp(argv[i], "--debug"))
            debug = 1;
        else if (!strcmp(argv[i], "--lose") && i + 1 < argc)
            lose = argv[++i];
        else if (!strcmp(argv[i], "--rank-timeout") && i + 1 < argc)
            rank_timeout = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--task-ms") && i + 1 < argc)
            task_ms = atoi(argv[++i]);
    }
    if (lose) {
        if (size < 3) {
            fprintf(stderr, "--lose: at least 3 ranks (rank 2 is the one lost)\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        long p0 = (long)getpid();
        MPI_Bcast(&p0, 1, MPI_LONG, 0, MPI_COMM_WORLD);
        snprintf(stamp_path, sizeof stamp_path, "/tmp/fpp-mpi-bench-lost-%ld", p0);
        if (rank == 0)
            unlink(stamp_path);
        MPI_Barrier(MPI_COMM_WORLD);
        int rc = 0;
        if (rank == 0)
            rc = run_loss(!strcmp(lose, "kill"), rank_timeout, tasks ? tasks : 3000, task_ms, workers, size, label,
                          csv);
        else
            rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL) != 0;
        MPI_Finalize();
        return rc;
    }
    if (debug)
        fpp_log_set(NULL, NULL, FPP_LOG_DEBUG);
    wl wls[16];
    int nw = 0;
    char *spec = strdup(workloads);
    for (char *tok = strtok(spec, ","); tok && nw < 16; tok = strtok(NULL, ",")) {
        wl *w = &wls[nw++];
        memset(w, 0, sizeof *w);
        snprintf(w->name, sizeof w->name, "%s", tok);
        if (!strncmp(tok, "spin:", 5)) {
            w->fn = F_SPIN;
            w->spin_us = (uint32_t)atoi(tok + 5);
        } else if (!strncmp(tok, "bytes:", 6)) {
            w->fn = F_BYTES;
            w->bytes = strtoull(tok + 6, NULL, 10);
        } else {
            w->fn = F_NOOP;
        }
    }
    free(spec);

    fpp_executor_opts eo = {.workers = workers};
    size_t max_result = 1u << 20;
    for (int i = 0; i < nw; i++)
        if (wls[i].bytes > max_result)
            max_result = wls[i].bytes;
    eo.max_result_size = max_result;

    if (rank != 0) {
        /* Rank 0 makes one MPI executor per workload (and one for --latency); serving ends
         * with each. */
        int rc = 0;
        for (int i = 0; i < nw + lat && rc == 0; i++) {
            double c0 = cpu_s(), t0 = now_s();
            rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL);
            if (debug)
                fprintf(stderr, "rank %d: serving %.2f s used %.3f s of this rank's CPU (its workers not counted)\n",
                        rank, now_s() - t0, cpu_s() - c0);
        }
        MPI_Finalize();
        return rc ? 1 : 0;
    }

    char host[64] = "";
    gethostname(host, sizeof host - 1);
    double gbs = memcpy_gbs();
    FILE *out = csv ? fopen(csv, "a") : NULL;
    printf("fpp-mpi-bench %s on %s, %ld cores; %d serving rank(s) x %d worker(s); memcpy of 1 MiB: %.1f GB/s\n",
           FPP_VERSION_STRING, host, sysconf(_SC_NPROCESSORS_ONLN), size - 1, workers, gbs);
    printf("%-12s %-6s %-14s %7s %9s %11s %8s %7s %9s %7s\n", "executor", "link", "workload", "workers", "tasks",
           "tasks/s", "us/task", "speedup", "MB/s", "cpu0_s");
    if (lat) {
        for (int pass = process ? 0 : 1; pass < 2; pass++) {
            fpp_executor *ex = make_executor(pass, &eo, workers * (size - 1));
            double p50, p99;
            latency(ex, 2000, &p50, &p99);
            printf("%-12s %-6s latency: one noop task at a time, submit to result: p50 %.1f us, p99 %.1f us\n",
                   pass == 0 ? "fpp-process" : "fpp-mpi", pass == 0 ? "-" : label, p50, p99);
            fpp_executor_free(ex);
        }
    }
    for (int i = 0; i < nw; i++) {
        wl *w = &wls[i];
        uint64_t n = tasks ? tasks : default_tasks(w);
        double serial = 0;
        if (w->fn == F_SPIN) {
            double t0 = now_s();
            int k = 200;
            for (int j = 0; j < k; j++)
                spin_us(w->spin_us);
            serial = (now_s() - t0) / k * (double)n;
        }
        for (int pass = process ? 0 : 1; pass < 2; pass++) {
            fpp_executor *ex = make_executor(pass, &eo, workers * (size - 1));
            row r = run(ex, w, n);
            int nwk = fpp_executor_workers(ex);
            fpp_executor_free(ex);
            double tps = (double)r.ok / r.secs;
            char sp[16] = "", mbs[16] = "";
            if (serial > 0)
                snprintf(sp, sizeof sp, "%.2f", serial / r.secs);
            if (w->fn == F_BYTES)
                snprintf(mbs, sizeof mbs, "%.0f", (double)r.ok * (double)w->bytes / r.secs / 1e6);
            const char *exn = pass == 0 ? "fpp-process" : "fpp-mpi";
            const char *ln = pass == 0 ? "-" : label;
            printf("%-12s %-6s %-14s %7d %9llu %11.0f %8.2f %7s %9s %7.2f%s\n", exn, ln, w->name, nwk,
                   (unsigned long long)r.ok, tps, 1e6 / tps, sp, mbs, r.cpu, r.ok == n ? "" : "  (tasks lost!)");
            if (out)
                fprintf(out, "%s,%s,%s,%d,%llu,%.0f,%.3f,%s,%s,%.2f\n", exn, ln, w->name, nwk, (unsigned long long)r.ok,
                        tps, 1e6 / tps, sp, mbs, r.cpu);
            fflush(stdout);
        }
    }
    if (out)
        fclose(out);
    MPI_Finalize();
    return 0;
}
