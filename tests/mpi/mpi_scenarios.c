/* mpi_scenarios.c: the MPI executor end to end, one scenario per run:
 *
 *     mpiexec -n 3 mpi_scenarios <scenario>
 *
 * Rank 0 drives a task manager on fpp_mpi_executor and checks every outcome; the other
 * ranks serve. Every rank ends by checking that it leaves no child process and no /dev/shm
 * entry of its own, and exits 0 only if every check held; mpiexec's status is the verdict.
 * Criterion does not fit here (it forks each test, and an MPI process cannot be forked into
 * another rank); the wire format has its Criterion tests in test_mpi_wire.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fpp_mpi.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int my_rank, nranks, failures;
static const char *scenario;

#define CHECK(c, ...)                                                                  \
    do {                                                                               \
        if (!(c)) {                                                                    \
            failures++;                                                                \
            fprintf(stderr, "FAIL rank %d %s:%d (%s): ", my_rank, __FILE__, __LINE__, scenario); \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
        }                                                                              \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ task bodies */

typedef struct sq { uint64_t x2; int32_t rank, pad; } sq;

static int square(const void *a, size_t n, fpp_out *o)
{
    uint64_t x;
    if (n != sizeof x)
        return fpp_out_fail(o, "want 8 bytes, got %zu", n), 1;
    memcpy(&x, a, sizeof x);
    sq r = {x * x, my_rank, 0};
    return fpp_out_set(o, &r, sizeof r);
}

/* {x, rank}: segfaults when it runs on that rank, else returns x. */
static int crash_on(const void *a, size_t n, fpp_out *o)
{
    int64_t v[2];
    if (n != sizeof v)
        return 1;
    memcpy(v, a, sizeof v);
    if (v[1] == my_rank)
        raise(SIGSEGV);
    return fpp_out_set(o, &v[0], sizeof v[0]);
}

/* Fails (its own message) when x == 5000. */
static int fail_at(const void *a, size_t n, fpp_out *o)
{
    uint64_t x;
    if (n != sizeof x)
        return 1;
    memcpy(&x, a, sizeof x);
    if (x == 5000)
        return fpp_out_fail(o, "no luck with %llu", (unsigned long long)x), 0;
    return fpp_out_set(o, &x, sizeof x);
}

/* Sleeps arg ms; then, if a path follows, creates that file. */
static int nap(const void *a, size_t n, fpp_out *o)
{
    uint32_t ms;
    if (n < sizeof ms)
        return 1;
    memcpy(&ms, a, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    if (n > sizeof ms) {
        char path[256];
        size_t pl = n - sizeof ms < sizeof path - 1 ? n - sizeof ms : sizeof path - 1;
        memcpy(path, (const char *)a + sizeof ms, pl);
        path[pl] = '\0';
        int fd = open(path, O_CREAT | O_WRONLY, 0600);
        if (fd >= 0)
            close(fd);
    }
    return fpp_out_set(o, &my_rank, sizeof my_rank);
}

static unsigned char pattern(uint64_t seed, size_t i) { return (unsigned char)(i * 131 + seed * 7 + (i >> 13)); }

/* {n, seed}: n bytes of a pattern, written in place. */
static int bytes(const void *a, size_t n, fpp_out *o)
{
    uint64_t v[2];
    if (n != sizeof v)
        return 1;
    memcpy(v, a, sizeof v);
    unsigned char *p = fpp_out_alloc(o, (size_t)v[0]);
    if (!p && v[0])
        return 1;
    for (size_t i = 0; i < v[0]; i++)
        p[i] = pattern(v[1], i);
    return 0;
}

static int echo(const void *a, size_t n, fpp_out *o) { return fpp_out_set(o, a, n); }

/* Issue 16 item 6: a task that MPI_Sends 4 KiB to rank 0 on MPI_COMM_WORLD, arg times (which
 * crashed rank 0 inside Open MPI's shared-memory transport, or hung it, before the guard).
 * Every send must be refused; then a probe, a collective, a communicator, MPI_Finalize and
 * MPI_Abort, which would end the job if they got through. MPI_Comm_rank, a local query, still
 * answers. Fails with what it saw. */
static int mpi_sender(const void *a, size_t n, fpp_out *o)
{
    uint32_t count;
    if (n != sizeof count)
        return 1;
    memcpy(&count, a, sizeof count);
    static char buf[4096];
    int refused = 0, first = MPI_SUCCESS;
    for (uint32_t i = 0; i < count; i++) {
        int rc = MPI_Send(buf, sizeof buf, MPI_BYTE, 0, 77, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) {
            refused++;
            first = first == MPI_SUCCESS ? rc : first;
        }
    }
    int flag = 0, others = 0, r = -1;
    MPI_Comm dup;
    others += MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS;
    others += MPI_Barrier(MPI_COMM_WORLD) != MPI_SUCCESS;
    others += MPI_Comm_dup(MPI_COMM_WORLD, &dup) != MPI_SUCCESS;
    if (others == 3) { /* only if the guard holds: these would end the job */
        others += MPI_Finalize() != MPI_SUCCESS;
        others += MPI_Abort(MPI_COMM_WORLD, 9) != MPI_SUCCESS;
    }
    int rank_rc = MPI_Comm_rank(MPI_COMM_WORLD, &r);
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0, cls = -1;
    if (first != MPI_SUCCESS) {
        MPI_Error_string(first, text, &len);
        MPI_Error_class(first, &cls);
    }
    return fpp_out_fail(o, "%d of %u MPI_Send refused (class %s), %d of 5 other calls; MPI_Comm_rank %d %d: %s", refused,
                        count, cls == MPI_ERR_OTHER ? "MPI_ERR_OTHER" : "other", others, rank_rc, r, text),
           0;
}

/* Lost ranks: the task `work` naps arg.ms; the first one that runs on rank VICTIM with an index
 * of at least arg.trigger SIGKILLs its rank (ACT_KILL) or stops it for arg.stop_ms
 * (ACT_STOP), having written to stamp_path when (CLOCK_MONOTONIC ns) and the pids of that
 * rank's pool: its worker, fork server and keeper (which must die with the rank). */
enum { VICTIM = 2, ACT_NONE = 0, ACT_KILL, ACT_STOP, ACT_KILL_ANY };
typedef struct work_arg { uint32_t ms; int32_t index, trigger, action; uint32_t stop_ms, pad; } work_arg;
static pid_t rank_pid;          /* this rank's pid, as its workers inherit it */
static char stamp_path[96];     /* named after rank 0's pid, the same on every rank */

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long ppid_of(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    long pp = -1;
    if (f && fgets(buf, sizeof buf, f)) {
        const char *c = strrchr(buf, ')');
        if (c)
            sscanf(c + 1, " %*c %ld", &pp);
    }
    if (f)
        fclose(f);
    return pp;
}

static void strike(const work_arg *w)
{
    int fd = open(stamp_path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0)
        return; /* another worker of the rank did */
    long server = (long)getppid(), keeper = ppid_of(server);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    dprintf(fd, "%lld %ld %ld %ld %ld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (long)rank_pid,
            (long)getpid(), server, keeper);
    close(fd);
    if (w->action == ACT_KILL) {
        kill(rank_pid, SIGKILL);
    } else {
        kill(rank_pid, SIGSTOP);
        sleep_ms(w->stop_ms);
        kill(rank_pid, SIGCONT);
    }
}

static int work(const void *a, size_t n, fpp_out *o)
{
    work_arg w;
    if (n != sizeof w)
        return 1;
    memcpy(&w, a, sizeof w);
    if (w.action == ACT_KILL_ANY && w.index >= w.trigger)
        kill(rank_pid, SIGKILL); /* lost_all: every serving rank dies */
    else if (w.action != ACT_NONE && my_rank == VICTIM && w.index >= w.trigger)
        strike(&w);
    sleep_ms(w.ms);
    int32_t r[2] = {my_rank, w.index};
    return fpp_out_set(o, r, sizeof r);
}

static int F_SQUARE, F_CRASH_ON, F_FAIL_AT, F_NAP, F_BYTES, F_ECHO, F_MPI_SENDER, F_WORK;

static void register_all(void)
{
    F_SQUARE = fpp_register("square", square);
    F_CRASH_ON = fpp_register("crash_on", crash_on);
    F_FAIL_AT = fpp_register("fail_at", fail_at);
    F_NAP = fpp_register("nap", nap);
    F_BYTES = fpp_register("bytes", bytes);
    F_ECHO = fpp_register("echo", echo);
    F_MPI_SENDER = fpp_register("mpi_sender", mpi_sender);
    F_WORK = fpp_register("work", work);
}

/* ------------------------------------------------------------- helpers */

static fpp_executor *mk_exec(const fpp_executor_opts *o)
{
    fpp_executor *ex = NULL;
    int rc = fpp_mpi_executor(&ex, MPI_COMM_WORLD, o);
    CHECK(rc == 0 && ex, "fpp_mpi_executor: %s", fpp_strerror(rc));
    if (!ex) {
        fprintf(stderr, "rank 0: no executor, giving up\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return ex;
}

static fpp_tm *mk_tm(fpp_executor *ex, fpp_policy p)
{
    fpp_tm *tm = NULL;
    fpp_tm_opts o = {.error_policy = p, .monitor_interval_ms = -1};
    int rc = fpp_tm_create(&tm, ex, &o);
    CHECK(rc == 0, "fpp_tm_create: %s", fpp_strerror(rc));
    return tm;
}

typedef struct counter { uint64_t i, n; uint64_t buf; } counter;
static int next_u64(void *state, const void **arg, size_t *len)
{
    counter *c = state;
    if (c->i >= c->n)
        return 0;
    c->buf = c->i++;
    *arg = &c->buf;
    *len = sizeof c->buf;
    return 1;
}

static int children(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", getpid(), getpid());
    int n = 0;
    for (int tries = 0; tries < 200; tries++) { /* reaped children may take a moment */
        FILE *f = fopen(path, "r");
        n = 0;
        long p;
        while (f && fscanf(f, "%ld", &p) == 1)
            n++;
        if (f)
            fclose(f);
        if (n == 0)
            break;
        usleep(10000);
    }
    return n;
}

static int my_shm_entries(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "fpp-%d-", getpid());
    DIR *d = opendir("/dev/shm");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return n;
}

/* ------------------------------------------------------------ scenarios */

/* 10^6 tasks (a lazy map): every result right, every id once, both worker ranks used. */
static void many(void)
{
    const uint64_t N = getenv("MPI_MANY") ? strtoull(getenv("MPI_MANY"), NULL, 10) : 1000000;
    fpp_executor *ex = mk_exec(NULL);
    fpp_tm *tm = mk_tm(ex, FPP_LOG);
    unsigned char *seen = calloc(N, 1);
    uint64_t *per_rank = calloc((size_t)nranks, sizeof *per_rank);
    counter c = {0, N, 0};
    double t0 = now_s();
    CHECK(fpp_map(tm, F_SQUARE, next_u64, &c) == 0, "map");
    fpp_task *t;
    uint64_t n = 0, bad = 0;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        size_t len;
        const sq *r = fpp_task_result(t, &len);
        if (id < 0 || (uint64_t)id >= N || seen[id] || !r || len != sizeof *r ||
            r->x2 != (uint64_t)id * (uint64_t)id || r->rank < 1 || r->rank >= nranks) {
            if (bad++ < 5)
                CHECK(0, "task %lld: %s", (long long)id, fpp_task_error(t) ? fpp_task_error(t) : "wrong result");
            continue;
        }
        seen[id] = 1;
        per_rank[r->rank]++;
        n++;
    }
    double dt = now_s() - t0;
    CHECK(n == N && bad == 0, "%llu of %llu tasks right", (unsigned long long)n, (unsigned long long)N);
    for (int r = 1; r < nranks; r++)
        CHECK(per_rank[r] > 0, "rank %d ran no task", r);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(st.done == N && st.submitted == N, "stats: %llu done", (unsigned long long)st.done);
    printf("many: %llu tasks in %.2f s (%.0f/s);", (unsigned long long)N, dt, (double)N / dt);
    for (int r = 1; r < nranks; r++)
        printf(" rank %d ran %llu;", r, (unsigned long long)per_rank[r]);
    printf(" %d worker(s) in all\n", fpp_executor_workers(ex));
    free(seen);
    free(per_rank);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A crash on each worker rank: that task comes back CRASHED by SIGSEGV, naming the rank and
 * its own id (and its label, for the half submitted with one: rank 0 names it as on one
 * machine); everything else runs, and the pools carry on. */
static void crash(void)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    for (int target = 1; target < nranks; target++) {
        int crashed = 0, done = 0;
        for (int round = 0; round < 50 && !crashed; round++) {
            for (int64_t k = 0; k < 64; k++) {
                int64_t v[2] = {k, target};
                char label[32];
                snprintf(label, sizeof label, "input-%lld.bin", (long long)k);
                fpp_task_opts o = {.label = k % 2 ? label : NULL};
                fpp_submit_ex(tm, F_CRASH_ON, v, sizeof v, &o);
            }
            fpp_task *t;
            while (fpp_as_completed(tm, &t) == 1) {
                if (fpp_task_status(t) == FPP_DONE) {
                    done++;
                    continue;
                }
                const char *e = fpp_task_error(t);
                char want[64], idw[128];
                int64_t v[2];
                memcpy(v, fpp_task_arg(t, NULL), sizeof v);
                snprintf(want, sizeof want, "rank %d: worker ", target);
                if (v[0] % 2)
                    snprintf(idw, sizeof idw, "killed by SIGSEGV while running task %lld \"input-%lld.bin\"",
                             (long long)fpp_task_id(t), (long long)v[0]);
                else
                    snprintf(idw, sizeof idw, "killed by SIGSEGV while running task %lld", (long long)fpp_task_id(t));
                CHECK(fpp_task_status(t) == FPP_CRASHED && fpp_task_signal(t) == SIGSEGV && e &&
                          strncmp(e, want, strlen(want)) == 0 && strstr(e, idw) &&
                          strlen(strstr(e, idw)) == strlen(idw),
                      "crash on rank %d: %s '%s'", target, fpp_status_name(fpp_task_status(t)), e ? e : "");
                if (crashed++ == 0)
                    printf("crash: %s\n", e);
            }
        }
        CHECK(crashed > 0 && done > 0, "rank %d: %d crashed, %d done", target, crashed, done);
    }
    /* The pools carry on. */
    for (uint64_t x = 0; x < 2000; x++)
        fpp_submit(tm, F_SQUARE, &x, sizeof x);
    int ok = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1)
        ok += fpp_task_status(t) == FPP_DONE;
    CHECK(ok == 2000, "%d of 2000 after the crashes", ok);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(st.worker_restarts >= (uint64_t)(nranks - 1), "worker_restarts %llu", (unsigned long long)st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Raise: a map over 10^8 items stops at the first failure; the rest is cancelled. */
static void raise_(void)
{
    fpp_executor *ex = mk_exec(NULL);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE);
    counter c = {0, 100000000, 0};
    double t0 = now_s();
    fpp_map(tm, F_FAIL_AT, next_u64, &c);
    int rc = fpp_run(tm);
    double dt = now_s() - t0;
    const fpp_task *f = fpp_tm_failure(tm);
    CHECK(rc == FPP_ETASK, "fpp_run: %s", fpp_strerror(rc));
    CHECK(f && fpp_task_id(f) == 5000 && fpp_task_status(f) == FPP_FAILED &&
              strcmp(fpp_task_error(f), "no luck with 5000") == 0,
          "the failure: %s", f ? fpp_task_error(f) : "none");
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(st.submitted < 1000000, "%llu items pulled: the map did not stop", (unsigned long long)st.submitted);
    CHECK(st.in_flight == 0 && st.done + st.failed + st.cancelled == st.submitted,
          "stats: submitted %llu done %llu failed %llu cancelled %llu in flight %zu", (unsigned long long)st.submitted,
          (unsigned long long)st.done, (unsigned long long)st.failed, (unsigned long long)st.cancelled, st.in_flight);
    CHECK(fpp_submit(tm, F_SQUARE, &c.buf, sizeof c.buf) == FPP_ETASK, "submit after raise");
    printf("raise: stopped after %.3f s: %llu pulled of 10^8, %llu done, %llu cancelled\n", dt,
           (unsigned long long)st.submitted, (unsigned long long)st.done, (unsigned long long)st.cancelled);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The executor's timeout, enforced on the rank that runs the task. */
static void timeout(void)
{
    fpp_executor_opts eo = {.workers = 2, .task_timeout_ms = 300};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    double t0 = now_s();
    uint32_t long_ms = 30000, short_ms = 1;
    int64_t a = fpp_submit(tm, F_NAP, &long_ms, sizeof long_ms);
    int64_t b = fpp_submit(tm, F_NAP, &long_ms, sizeof long_ms);
    for (int i = 0; i < 50; i++)
        fpp_submit(tm, F_NAP, &short_ms, sizeof short_ms);
    int timed = 0, done = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        if (id == a || id == b) {
            const char *e = fpp_task_error(t);
            CHECK(fpp_task_status(t) == FPP_TIMEOUT && e && strncmp(e, "rank ", 5) == 0 && strstr(e, "300 ms"),
                  "task %lld: %s '%s'", (long long)id, fpp_status_name(fpp_task_status(t)), e ? e : "");
            timed += fpp_task_status(t) == FPP_TIMEOUT;
            printf("timeout: %s\n", e ? e : "");
        } else {
            done += fpp_task_status(t) == FPP_DONE;
        }
    }
    double dt = now_s() - t0;
    CHECK(timed == 2 && done == 50, "%d timed out, %d done", timed, done);
    CHECK(dt < 20, "took %.1f s: the 30 s tasks were not stopped", dt);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* 8 MiB results and 1 MiB arguments cross whole (FPP_MPI_CHUNK may cut them in chunks). */
static void big(void)
{
    fpp_executor_opts eo = {.workers = 2, .max_result_size = 8u << 20, .max_arg_size = 1u << 20};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_LOG);
    enum { NB = 12, NE = 12 };
    static unsigned char arg[1u << 20];
    for (size_t i = 0; i < sizeof arg; i++)
        arg[i] = pattern(99, i);
    int64_t ids[NB + NE];
    for (int k = 0; k < NB; k++) {
        uint64_t v[2] = {8u << 20, (uint64_t)k};
        if (k == 3)
            v[0] = (8u << 20) - 13; /* not a multiple of anything */
        ids[k] = fpp_submit(tm, F_BYTES, v, sizeof v);
    }
    for (int k = 0; k < NE; k++)
        ids[NB + k] = fpp_submit(tm, F_ECHO, arg, sizeof arg - (size_t)k);
    for (uint64_t x = 0; x < 500; x++)
        fpp_submit(tm, F_SQUARE, &x, sizeof x);
    int good = 0, small = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        size_t len;
        const unsigned char *r = fpp_task_result(t, &len);
        int k = -1;
        for (int j = 0; j < NB + NE; j++)
            if (ids[j] == id)
                k = j;
        if (k < 0) {
            small += fpp_task_status(t) == FPP_DONE;
            continue;
        }
        int ok = r != NULL;
        if (k < NB) {
            size_t want = k == 3 ? (8u << 20) - 13 : 8u << 20;
            ok = ok && len == want;
            for (size_t i = 0; ok && i < len; i++)
                ok = r[i] == pattern((uint64_t)k, i);
        } else {
            ok = ok && len == sizeof arg - (size_t)(k - NB) && memcmp(r, arg, len) == 0;
        }
        CHECK(ok, "task %lld (%s): %zu bytes, %s", (long long)id, k < NB ? "result" : "echo", len,
              fpp_task_error(t) ? fpp_task_error(t) : "wrong bytes");
        good += ok;
    }
    CHECK(good == NB + NE && small == 500, "%d big right, %d small", good, small);
    printf("big: %d results of 8 MiB and %d echoes of 1 MiB byte for byte\n", NB, NE);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Freeing on rank 0 ends every rank at once, even with tasks running for 30 s. */
static void free_(void)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    uint32_t long_ms = 30000, short_ms = 1;
    fpp_submit(tm, F_NAP, &short_ms, sizeof short_ms);
    fpp_task *t;
    CHECK(fpp_as_completed(tm, &t) == 1 && fpp_task_status(t) == FPP_DONE, "the short task");
    for (int i = 0; i < 6; i++)
        fpp_submit(tm, F_NAP, &long_ms, sizeof long_ms);
    usleep(300000);
    double t0 = now_s();
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    double dt = now_s() - t0;
    CHECK(dt < 10, "fpp_tm_free + fpp_executor_free took %.1f s", dt);
    printf("free: fpp_tm_free + fpp_executor_free with 6 tasks of 30 s running took %.3f s\n", dt);
}

/* fpp_cancel: a task still queued on rank 0, and one running on a rank. */
static void cancel(void)
{
    fpp_executor_opts eo = {.workers = 1};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    uint32_t long_ms = 5000;
    int64_t ids[12];
    for (int i = 0; i < 12; i++)
        ids[i] = fpp_submit(tm, F_NAP, &long_ms, sizeof long_ms);
    usleep(300000);
    CHECK(fpp_cancel(tm, ids[0]) == 1, "cancel the first (running)");
    CHECK(fpp_cancel(tm, ids[11]) == 1, "cancel the last (queued)");
    CHECK(fpp_cancel(tm, 999) == FPP_EINVAL, "cancel of an id never issued");
    int cancelled = 0;
    fpp_task *t;
    double t0 = now_s();
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        if (id == ids[0] || id == ids[11])
            CHECK(fpp_task_status(t) == FPP_CANCELLED, "task %lld: %s", (long long)id, fpp_status_name(fpp_task_status(t)));
        cancelled += fpp_task_status(t) == FPP_CANCELLED;
        if (cancelled == 2)
            break;
    }
    CHECK(cancelled == 2 && now_s() - t0 < 1.0, "the cancelled tasks came back at once (%d)", cancelled);
    CHECK(fpp_cancel(tm, ids[0]) == 0, "a second cancel: finished already");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Workers recycled after 5 tasks on every rank; the restarts add up on rank 0. */
static void recycle(void)
{
    fpp_executor_opts eo = {.workers = 1, .max_tasks_per_worker = 5};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    for (uint64_t x = 0; x < 2000; x++)
        fpp_submit(tm, F_SQUARE, &x, sizeof x);
    int ok = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1)
        ok += fpp_task_status(t) == FPP_DONE;
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(ok == 2000, "%d of 2000 done", ok);
    CHECK(st.worker_restarts >= 2000 / 5 / 2, "worker_restarts %llu", (unsigned long long)st.worker_restarts);
    printf("recycle: 2000 tasks, %llu worker restarts reported by the ranks\n", (unsigned long long)st.worker_restarts);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Ctrl-C delivered to rank 0: fpp_run returns FPP_EINTR once every rank stopped its workers
 * (the tasks, which would leave a file after 3 s, never do). */
static char marker_dir[128];
static void interrupt(void)
{
    snprintf(marker_dir, sizeof marker_dir, "/tmp/fpp-mpi-markers-%d", getpid());
    mkdir(marker_dir, 0700);
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    for (int i = 0; i < 8; i++) {
        unsigned char a[200];
        uint32_t ms = 3000;
        memcpy(a, &ms, sizeof ms);
        int n = snprintf((char *)a + sizeof ms, sizeof a - sizeof ms, "%s/%d", marker_dir, i);
        fpp_submit(tm, F_NAP, a, sizeof ms + (size_t)n);
    }
    /* A timer thread would do; alarm-free: a child process sends the SIGINT. */
    pid_t me = getpid(), kid = fork();
    if (kid == 0) {
        usleep(700000);
        kill(me, SIGINT);
        _exit(0);
    }
    double t0 = now_s();
    int rc = fpp_run(tm);
    double dt = now_s() - t0;
    waitpid(kid, NULL, 0);
    CHECK(rc == FPP_EINTR, "fpp_run: %s", fpp_strerror(rc));
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(st.cancelled == 8, "%llu cancelled", (unsigned long long)st.cancelled);
    CHECK(dt < 2.5, "fpp_run returned after %.2f s", dt);
    sleep(4); /* past the tasks' 3 s: a task not stopped would have left its file */
    int left = 0;
    for (int i = 0; i < 8; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%d", marker_dir, i);
        left += access(p, F_OK) == 0;
        unlink(p);
    }
    rmdir(marker_dir);
    CHECK(left == 0, "%d task(s) ran on after Ctrl-C", left);
    printf("interrupt: FPP_EINTR %.3f s after the start, %.3f s after the SIGINT; no task ran on\n", dt, dt - 0.7);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* For the scripts that end the job from outside: tasks of a minute on every worker, then
 * "ready" (the ranks have printed their pids at start), then fpp_run, which never returns. */
static void hang(void)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    uint32_t ms = 60000;
    for (int i = 0; i < 4 * (nranks - 1); i++)
        fpp_submit(tm, F_NAP, &ms, sizeof ms);
    usleep(1500000);
    printf("ready\n");
    fflush(stdout);
    fpp_run(tm);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Issue 16 item 6: tasks calling MPI (2,000 sends of 4 KiB to rank 0 each, between 4,000
 * ordinary tasks) fail in those tasks alone, with the guard's error; rank 0 receives none of
 * those sends and completes everything else. */
static void task_mpi(void)
{
    fpp_executor_opts eo = {.workers = 2};
    fpp_executor *ex = mk_exec(&eo);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE);
    enum { SENDERS = 8, SQUARES = 4000 };
    uint32_t count = 2000;
    int senders = 0, squares = 0;
    for (uint64_t x = 0; x < SQUARES; x++) {
        fpp_submit(tm, F_SQUARE, &x, sizeof x);
        if (x % (SQUARES / SENDERS) == 0)
            fpp_submit(tm, F_MPI_SENDER, &count, sizeof count);
    }
    fpp_task *t;
    char want[64];
    while (fpp_as_completed(tm, &t) == 1) {
        if (fpp_task_fn(t) == F_SQUARE) {
            uint64_t x;
            memcpy(&x, fpp_task_arg(t, NULL), sizeof x);
            const sq *r = fpp_task_result(t, NULL);
            squares += fpp_task_status(t) == FPP_DONE && r && r->x2 == x * x;
            continue;
        }
        const char *e = fpp_task_error(t);
        int r = -1;
        const char *rk = e ? strstr(e, "MPI_Comm_rank 0 ") : NULL;
        if (rk)
            sscanf(rk, "MPI_Comm_rank 0 %d", &r);
        snprintf(want, sizeof want, "MPI_Comm_rank 0 %d: ", r);
        CHECK(fpp_task_status(t) == FPP_FAILED && e &&
                  strstr(e, "2000 of 2000 MPI_Send refused (class MPI_ERR_OTHER), 5 of 5 other calls") &&
                  r >= 1 && r < nranks && strstr(e, want) && strstr(e, "MPI cannot be called by a task"),
              "the sender: %s '%s'", fpp_status_name(fpp_task_status(t)), e ? e : "");
        if (senders++ == 0)
            printf("task_mpi: %s\n", e ? e : "");
    }
    CHECK(senders == SENDERS && squares == SQUARES, "%d senders, %d of %d squares", senders, squares, SQUARES);
    int flag = 1;
    MPI_Iprobe(MPI_ANY_SOURCE, 77, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    CHECK(!flag, "a task's MPI_Send reached rank 0");
    printf("task_mpi: %d tasks' MPI calls refused, %d other tasks done\n", senders, squares);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* Issue 17 B: a serving rank lost mid-run, with a rank timeout. lost (4 ranks, mpirun
 * --enable-recovery --mca async_mpi_finalize 1; tests/mpi/lost_rank.sh): rank 2 is SIGKILLed
 * a quarter into 800 tasks of 5 ms. stalled (3 ranks, plain mpirun): rank 2 is stopped for
 * 2.5 timeouts, then continues, sees it sent nothing for the timeout and stops by itself.
 * stalled_notice: the same, but rank 2 serves on regardless (FPP_MPI_KEEP_SERVING, test build):
 * its first message after the loss is dropped and gets it rank 0's notice. Each way: every task
 * comes back exactly once, done, or (no retries) FPP_CRASHED naming rank 2 and its loss; one
 * loss, rank 2's, logged once and counted; the loss declared after the strike (the time
 * between is printed: bench/ measures it); the killed rank's pool gone with it; a stopped rank
 * ends its fpp_mpi_serve with FPP_ETIMEDOUT (rank_side). The ranks left print "finalized"
 * after MPI_Finalize (checked by the script). */
enum { KILLED, STALLED, STALLED_NOTICE };
enum { LOST_TIMEOUT_MS = 1000 };
static int lost_retries;
static double t_lost;
static int n_lost_lines, n_alive_lines;
static char lost_line[512];

static void lost_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)user;
    if (strstr(msg, " lost: nothing heard from it") && n_lost_lines++ == 0) {
        t_lost = now_s();
        snprintf(lost_line, sizeof lost_line, "%s", msg);
    }
    if (strstr(msg, "is alive after all"))
        n_alive_lines++;
    fprintf(stderr, "rank 0: %s\n", msg);
}

static bool alive_proc(long pid)
{
    char path[64], cmd[256] = "";
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(cmd, 1, sizeof cmd - 1, f) : 0;
    if (f)
        fclose(f);
    cmd[n] = '\0';
    return n > 0 && strstr(cmd, "mpi_scenarios") != NULL; /* a zombie's is empty; a reused pid is another's */
}

static void lost(int how)
{
    bool stall = how != KILLED;
    const int N = stall ? 1200 : 800;
    fpp_log_set(lost_sink, NULL, FPP_LOG_WARN);
    fpp_executor_opts eo = {.workers = 1};
    fpp_mpi_opts mo = {.rank_timeout_ms = LOST_TIMEOUT_MS};
    fpp_executor *ex = NULL;
    int rc = fpp_mpi_executor_ex(&ex, MPI_COMM_WORLD, &eo, &mo);
    CHECK(rc == 0 && ex, "fpp_mpi_executor_ex: %s", fpp_strerror(rc));
    if (!ex)
        MPI_Abort(MPI_COMM_WORLD, 2);
    fpp_tm *tm = NULL;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .retries = (unsigned)lost_retries};
    CHECK(fpp_tm_create(&tm, ex, &to) == 0, "fpp_tm_create");
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        work_arg w = {.ms = stall ? 3 : 5, .index = i, .trigger = stall ? N / 8 : N / 4,
                      .action = stall ? ACT_STOP : ACT_KILL, .stop_ms = 5 * LOST_TIMEOUT_MS / 2};
        fpp_submit(tm, F_WORK, &w, sizeof w);
    }
    unsigned char *seen = calloc((size_t)N, 1);
    int per_rank[16] = {0}, named = 0, bad = 0, after = 0, total = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        work_arg w;
        memcpy(&w, fpp_task_arg(t, NULL), sizeof w);
        total++;
        if (w.index < 0 || w.index >= N || seen[w.index]++) {
            CHECK(0, "task %d came back twice", w.index);
            continue;
        }
        after += t_lost > 0;
        const char *e = fpp_task_error(t);
        if (fpp_task_status(t) == FPP_DONE) {
            const int32_t *r = fpp_task_result(t, NULL);
            if (r && r[1] == w.index && r[0] >= 1 && r[0] < nranks && r[0] < 16)
                per_rank[r[0]]++;
            else if (bad++ < 5)
                CHECK(0, "task %d: a wrong result", w.index);
        } else if (fpp_task_status(t) == FPP_CRASHED && e && strstr(e, "rank 2 (") &&
                   strstr(e, " lost: silent for ")) {
            named++;
        } else if (bad++ < 5) {
            CHECK(0, "task %d: %s '%s'", w.index, fpp_status_name(fpp_task_status(t)), e ? e : "");
        }
    }
    double run = now_s() - t0;
    free(seen);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(total == N && bad == 0, "%d of %d tasks came back, %d wrong", total, N, bad);
    CHECK(st.ranks_lost == 1 && n_lost_lines == 1 && strstr(lost_line, "rank 2 ("),
          "ranks_lost %llu, %d loss line(s): %s", (unsigned long long)st.ranks_lost, n_lost_lines, lost_line);
    if (lost_retries > 0)
        CHECK(named == 0 && st.done == (uint64_t)N && st.retried >= 1,
              "retries %d: %d crashed naming rank 2, %llu done, %llu retried", lost_retries, named,
              (unsigned long long)st.done, (unsigned long long)st.retried);
    else
        CHECK(named >= 1 && st.crashed == (uint64_t)named && st.done + (uint64_t)named == (uint64_t)N,
              "no retries: %d crashed naming rank 2 (stats: %llu crashed, %llu done)", named,
              (unsigned long long)st.crashed, (unsigned long long)st.done);
    for (int r = 1; r < nranks; r++)
        CHECK(r == VICTIM || per_rank[r] > 0, "rank %d ran no task", r);
    CHECK(after > 0, "nothing came back after the loss");
    /* When it struck, from the task's stamp. */
    long long strike_ns = 0;
    long pids[4] = {0};
    FILE *f = fopen(stamp_path, "r");
    CHECK(f && fscanf(f, "%lld %ld %ld %ld %ld", &strike_ns, &pids[0], &pids[1], &pids[2], &pids[3]) == 5,
          "no stamp at %s: rank 2 never struck", stamp_path);
    if (f)
        fclose(f);
    double detect_ms = (t_lost * 1e9 - (double)strike_ns) / 1e6;
    CHECK(strike_ns > 0 && detect_ms > 0, "the loss was declared %.1f ms after the strike", detect_ms);
    if (how == STALLED_NOTICE) {
        /* Rank 2 comes back 2.5 timeouts after the stop: keep rank 0 looking until it spoke. */
        double until = now_s() + 20;
        while (n_alive_lines == 0 && now_s() < until) {
            work_arg w = {.ms = 20, .index = -1};
            fpp_submit(tm, F_WORK, &w, sizeof w);
            while (fpp_as_completed(tm, &t) == 1) {
            }
        }
        CHECK(n_alive_lines == 1, "rank 2, stopped then continued, was heard from %d time(s) after its loss",
              n_alive_lines);
    }
    printf("%s: retries %d: %d tasks, %d done (%d by rank 2), %d crashed naming rank 2; rank 2 lost %.1f ms after "
           "the %s (timeout %d ms); run %.2f s\n",
           scenario, lost_retries, N, N - named, per_rank[VICTIM], named, detect_ms,
           stall ? "stop" : "kill", LOST_TIMEOUT_MS, run);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    if (!stall) {
        /* The killed rank's pool went with it (its keeper watches the rank). */
        int left = 0;
        for (int tries = 0; tries < 500; tries++) {
            left = 0;
            for (int k = 0; k < 4; k++)
                left += pids[k] > 0 && alive_proc(pids[k]);
            if (left == 0)
                break;
            usleep(10000);
        }
        CHECK(left == 0, "%d of rank 2's processes (rank %ld, worker %ld, server %ld, keeper %ld) outlived it", left,
              pids[0], pids[1], pids[2], pids[3]);
    }
    unlink(stamp_path);
}

/* Every serving rank lost (3 ranks, mpirun --enable-recovery --mca async_mpi_finalize 1): the
 * tasks they held fail naming their rank, and every later one fails at once, "no rank left",
 * instead of waiting for ever; the run ends. */
static void lost_all(void)
{
    fpp_log_set(NULL, NULL, FPP_LOG_OFF);
    fpp_executor_opts eo = {.workers = 1};
    fpp_mpi_opts mo = {.rank_timeout_ms = 500};
    fpp_executor *ex = NULL;
    CHECK(fpp_mpi_executor_ex(&ex, MPI_COMM_WORLD, &eo, &mo) == 0 && ex, "fpp_mpi_executor_ex");
    if (!ex)
        MPI_Abort(MPI_COMM_WORLD, 2);
    fpp_tm *tm = NULL;
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .retries = 2};
    CHECK(fpp_tm_create(&tm, ex, &to) == 0, "fpp_tm_create");
    enum { N = 400 };
    for (int i = 0; i < N; i++) {
        work_arg w = {.ms = 2, .index = i, .trigger = 100, .action = ACT_KILL_ANY};
        fpp_submit(tm, F_WORK, &w, sizeof w);
    }
    int done = 0, held = 0, orphans = 0, other = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        const char *e = fpp_task_error(t);
        if (fpp_task_status(t) == FPP_DONE)
            done++;
        else if (fpp_task_status(t) == FPP_CRASHED && e && strstr(e, "no rank left to run it"))
            orphans++;
        else if (fpp_task_status(t) == FPP_CRASHED && e && strstr(e, " lost: silent for "))
            held++;
        else if (other++ < 3)
            CHECK(0, "%s '%s'", fpp_status_name(fpp_task_status(t)), e ? e : "");
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    CHECK(done + held + orphans == N && other == 0 && orphans > 0 && done > 0 && st.ranks_lost == 2,
          "%d done, %d crashed on a lost rank, %d with no rank left, %d other; %llu ranks lost", done, held, orphans,
          other, (unsigned long long)st.ranks_lost);
    printf("lost_all: %d done, %d crashed on a lost rank, %d failed with no rank left; %llu ranks lost\n", done, held,
           orphans, (unsigned long long)st.ranks_lost);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
}

/* Misuse: errors, never a hang; the ranks hear about a refused executor too. */
static void bad(void)
{
    CHECK(fpp_mpi_executor(NULL, MPI_COMM_WORLD, NULL) == FPP_EINVAL, "NULL out");
    fpp_executor *ex = (fpp_executor *)1;
    CHECK(fpp_mpi_executor(&ex, MPI_COMM_NULL, NULL) == FPP_EINVAL && ex == NULL, "MPI_COMM_NULL");
    CHECK(fpp_mpi_executor(&ex, MPI_COMM_SELF, NULL) == FPP_EINVAL, "a communicator of one");
    CHECK(fpp_mpi_serve(MPI_COMM_WORLD, NULL) == FPP_EINVAL, "serve on rank 0");
    fpp_executor_opts eo = {.workers = -1};
    CHECK(fpp_mpi_executor(&ex, MPI_COMM_WORLD, &eo) == FPP_EINVAL && ex == NULL, "workers -1");
    /* ... and the ranks, refused once, serve the next one. */
    ex = mk_exec(NULL);
    fpp_tm *tm = mk_tm(ex, FPP_LOG);
    uint64_t x = 7;
    fpp_submit(tm, F_SQUARE, &x, sizeof x);
    fpp_task *t;
    CHECK(fpp_as_completed(tm, &t) == 1 && fpp_task_status(t) == FPP_DONE, "a task after the refusal");
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------------ main */

static int rank_side(void)
{
    if (strcmp(scenario, "bad") == 0) {
        fpp_executor *ex = (fpp_executor *)1;
        CHECK(fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL) == FPP_EINVAL && ex == NULL, "executor on rank %d", my_rank);
        CHECK(fpp_mpi_serve(MPI_COMM_WORLD, NULL) == FPP_EINVAL, "the refused executor");
    }
    if (strcmp(scenario, "mismatch") == 0 && my_rank == nranks - 1) {
        fpp_log_set(NULL, NULL, FPP_LOG_OFF);
        return fpp_mpi_serve(MPI_COMM_WORLD, NULL) == FPP_EINVAL ? 0 : 1;
    }
    if (strcmp(scenario, "badlocal") == 0) {
        /* This rank's own options are wrong: rank 0 hears it, every rank fails, and the next
         * executor (good options everywhere) serves. */
        fpp_executor_opts bad = {.workers = my_rank == 1 ? -1 : 1};
        if (my_rank == 1)
            fpp_log_set(NULL, NULL, FPP_LOG_OFF);
        int rc = fpp_mpi_serve(MPI_COMM_WORLD, &bad);
        CHECK(rc == FPP_EINVAL, "serve with workers %d: %s", bad.workers, fpp_strerror(rc));
        fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    }
    int rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL);
    if (strcmp(scenario, "mismatch") == 0)
        CHECK(rc == FPP_EINVAL, "serve: %s", fpp_strerror(rc));
    else if (strncmp(scenario, "stalled", 7) == 0 && my_rank == VICTIM)
        CHECK(rc == FPP_ETIMEDOUT, "fpp_mpi_serve on the rank declared lost: %s", fpp_strerror(rc));
    else
        CHECK(rc == 0, "fpp_mpi_serve: %s", fpp_strerror(rc));
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    scenario = argc > 1 ? argv[1] : "many";
    rank_pid = getpid();
    bool losing = strcmp(scenario, "lost") == 0 || strcmp(scenario, "stalled") == 0 ||
                  strcmp(scenario, "stalled_notice") == 0 || strcmp(scenario, "lost_all") == 0;
    if (strcmp(scenario, "stalled_notice") == 0 && my_rank == VICTIM)
        setenv("FPP_MPI_KEEP_SERVING", "1", 1);
    if (losing) {
        lost_retries = argc > 2 ? atoi(argv[2]) : 1;
        long p0 = (long)getpid();
        MPI_Bcast(&p0, 1, MPI_LONG, 0, MPI_COMM_WORLD);
        snprintf(stamp_path, sizeof stamp_path, "/tmp/fpp-mpi-lost-%ld", p0);
        if (my_rank == 0)
            unlink(stamp_path);
        MPI_Barrier(MPI_COMM_WORLD); /* no rank strikes before the old stamp is gone */
    }
    if (strcmp(scenario, "hang") == 0 || losing) {
        printf("rank %d pid %d\n", my_rank, (int)getpid());
        fflush(stdout);
    }
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    register_all();
    if (strcmp(scenario, "mismatch") == 0 && my_rank == nranks - 1)
        fpp_register("extra", echo);
    if (my_rank != 0) {
        rank_side();
    } else if (strcmp(scenario, "many") == 0) {
        many();
    } else if (strcmp(scenario, "crash") == 0) {
        crash();
    } else if (strcmp(scenario, "raise") == 0) {
        raise_();
    } else if (strcmp(scenario, "timeout") == 0) {
        timeout();
    } else if (strcmp(scenario, "big") == 0) {
        big();
    } else if (strcmp(scenario, "free") == 0) {
        free_();
    } else if (strcmp(scenario, "cancel") == 0) {
        cancel();
    } else if (strcmp(scenario, "recycle") == 0) {
        recycle();
    } else if (strcmp(scenario, "interrupt") == 0) {
        interrupt();
    } else if (strcmp(scenario, "bad") == 0) {
        bad();
    } else if (strcmp(scenario, "task_mpi") == 0) {
        task_mpi();
    } else if (strcmp(scenario, "lost_all") == 0) {
        lost_all();
    } else if (losing) {
        lost(strcmp(scenario, "lost") == 0 ? KILLED : strcmp(scenario, "stalled") == 0 ? STALLED : STALLED_NOTICE);
    } else if (strcmp(scenario, "hang") == 0) {
        hang();
    } else if (strcmp(scenario, "badlocal") == 0) {
        fpp_executor *ex = NULL;
        fpp_log_set(NULL, NULL, FPP_LOG_OFF);
        CHECK(fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL) == FPP_EINVAL && !ex, "rank 1 could not start its pool");
        fpp_log_set(NULL, NULL, FPP_LOG_WARN);
        ex = mk_exec(NULL);
        fpp_tm *tm = mk_tm(ex, FPP_LOG);
        uint64_t x = 9;
        fpp_submit(tm, F_SQUARE, &x, sizeof x);
        fpp_task *t;
        CHECK(fpp_as_completed(tm, &t) == 1 && fpp_task_status(t) == FPP_DONE, "a task after the failed start");
        fpp_tm_free(tm);
        fpp_executor_free(ex);
    } else if (strcmp(scenario, "mismatch") == 0) {
        fpp_log_set(NULL, NULL, FPP_LOG_OFF);
        fpp_executor *ex = NULL;
        CHECK(fpp_mpi_executor(&ex, MPI_COMM_WORLD, NULL) == FPP_EINVAL && !ex, "a rank with other functions");
    } else {
        fprintf(stderr, "unknown scenario %s\n", scenario);
        failures++;
    }
    CHECK(children() == 0, "%d child process(es) left", children());
    CHECK(my_shm_entries() == 0, "/dev/shm entries left");
    MPI_Finalize();
    if (losing) {
        printf("rank %d: finalized, %d failure(s)\n", my_rank, failures);
        fflush(stdout);
    }
    if (my_rank == 0 && failures == 0)
        printf("%s: PASS\n", scenario);
    return failures ? 1 : 0;
}
