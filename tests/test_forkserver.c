/* test_forkserver.c: the worker's world as the fork server makes it (lib/forkserver.c, and
 * its parent's side in lib/process_executor.c): one snapshot for every worker, no libc lock
 * inherited from a busy parent, no other executor's memory or descriptors, nothing that
 * outlives the parent or the pool, keep_fds, an application that reaps children itself, the
 * fork server killed or stopped, the fork hooks (issue 9, items 1, 2, 4, 5, 6, 8 and 14).
 * Each test says how 0.1, which forked every worker from the parent as it was at that moment,
 * failed it. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "common.h"

#include <sys/ptrace.h>

/* T_SHARED words used here (common.c's barrier words start at 3968). */
enum {
    S_COPIES = 0,       /* forked copies of workers, their pids from S_COPY_LIST */
    S_COPY_LIST = 1,
    S_LEFT = 200,       /* processes tasks left behind, their pids from S_LEFT_LIST */
    S_LEFT_LIST = 201,
    S_PDEATH = 220,     /* the death signal a worker had after seteuid there and back */
    S_SEUID_PID = 221,
    S_EXEC = 1000,      /* per task id: runs */
    S_RUNPID = 1500,    /* per task id: the pid that ran it */
    S_HOOK_PREP = 2000, /* fork hook calls */
    S_HOOK_PARENT = 2001,
    S_HOOK_CHILD = 2002,
    S_HOOK_PREP_TID = 2003, /* the thread that forked the fork server */
    S_HOOK_PARENT_LIST = 2100,
    S_HOOK_CHILD_LIST = 2500,
    S_HOOK_MAX = 300,
};

static long gettid_long(void) { return (long)syscall(SYS_gettid); }

static int F_WORLD, F_FD_SAME, F_LIBC, F_SEUID, F_FORK_RETURN, F_SLEEPER, F_DAEMON, F_COUNT;

/* ------------------------------------------------------------ task functions */

static long g_world = 1; /* 2 after the executor is created */
static char *g_ptr;      /* set after the executor is created */

/* Result: {the global, 1 if the pointer is set (2 if it reads "x" through it), pid}. */
static int world(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    long r[3] = {g_world, g_ptr ? 1 + (g_ptr[0] == 'x') : 0, (long)getpid()};
    return fpp_out_set(out, r, sizeof r);
}

/* arg {fd, dev, ino}: 1 if fd is open here on that very file. */
static int fd_same(const void *arg, size_t len, fpp_out *out)
{
    uint64_t a[3];
    if (len != sizeof a)
        return 1;
    memcpy(a, arg, sizeof a);
    struct stat st;
    int same = fstat((int)a[0], &st) == 0 && (uint64_t)st.st_dev == a[1] && (uint64_t)st.st_ino == a[2];
    return fpp_out_set(out, &same, sizeof same);
}

__attribute__((no_sanitize("undefined", "address"))) static void segv_now(void)
{
    volatile int *p = NULL;
    *p = 1;
}

/* libc's own locks: the environment and the time zone. Every 20th crashes. */
static int libc_task(const void *arg, size_t len, fpp_out *out)
{
    if (len != 8)
        return 1;
    uint64_t i = u64_of(arg);
    if (i % 20 == 19)
        segv_now();
    const char *v = getenv("FPP_HAMMER");
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)i);
    setenv("FPP_TASK", buf, 1);
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    long r = v ? (long)strlen(v) : -1;
    return fpp_out_set(out, &r, sizeof r);
}

/* Changes credentials there and back (which clears PR_SET_PDEATHSIG) and stays a worker. */
static int seuid(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    if (seteuid(65534) != 0 || seteuid(0) != 0)
        return fpp_out_fail(out, "seteuid: %s", strerror(errno)), 1;
    int sig = -1;
    prctl(PR_GET_PDEATHSIG, &sig);
    atomic_store(&T_SHARED[S_PDEATH], sig);
    atomic_store(&T_SHARED[S_SEUID_PID], (long)getpid());
    return fpp_out_set(out, &sig, sizeof sig);
}

static void left_behind(void)
{
    long n = atomic_fetch_add(&T_SHARED[S_LEFT], 1);
    if (n < 16)
        atomic_store(&T_SHARED[S_LEFT_LIST + n], (long)getpid());
}

/* Forks; both processes return from the task. */
static int fork_return(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    pid_t c = fork();
    if (c == 0) {
        long n = atomic_fetch_add(&T_SHARED[S_COPIES], 1);
        if (n < 190)
            atomic_store(&T_SHARED[S_COPY_LIST + n], (long)getpid());
    }
    int32_t r = (int32_t)c;
    return fpp_out_set(out, &r, sizeof r);
}

/* Leaves a child in a session of its own, sleeping 60 s. */
static int sleeper(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len;
    pid_t c = fork();
    if (c == 0) {
        setsid();
        left_behind();
        sleep_ms(60000);
        _exit(0);
    }
    int32_t r = (int32_t)c;
    return fpp_out_set(out, &r, sizeof r);
}

/* daemon(): the worker itself exits inside it (the task crashes, "exited with status 0");
 * the daemon sleeps 60 s. */
static int do_daemon(const void *arg, size_t len, fpp_out *out)
{
    (void)arg; (void)len; (void)out;
    if (daemon(1, 1) != 0)
        return 1;
    left_behind();
    sleep_ms(60000);
    _exit(0);
}

/* arg {id, fork?}: counts its runs and its runner; with fork, forks and returns in both. */
static int count_task(const void *arg, size_t len, fpp_out *out)
{
    uint64_t a[2];
    if (len != sizeof a)
        return 1;
    memcpy(a, arg, sizeof a);
    if (a[0] >= 500)
        return 1;
    atomic_fetch_add(&T_SHARED[S_EXEC + (int)a[0]], 1);
    atomic_store(&T_SHARED[S_RUNPID + (int)a[0]], (long)getpid());
    if (a[1] && fork() == 0) {
        long n = atomic_fetch_add(&T_SHARED[S_COPIES], 1);
        if (n < 190)
            atomic_store(&T_SHARED[S_COPY_LIST + n], (long)getpid());
    }
    return fpp_out_set(out, &a[0], 8);
}

__attribute__((constructor)) static void register_here(void)
{
    F_WORLD = fpp_register("world", world);
    F_FD_SAME = fpp_register("fd_same", fd_same);
    F_LIBC = fpp_register("libc", libc_task);
    F_SEUID = fpp_register("seuid", seuid);
    F_FORK_RETURN = fpp_register("fork_return", fork_return);
    F_SLEEPER = fpp_register("sleeper", sleeper);
    F_DAEMON = fpp_register("daemon", do_daemon);
    F_COUNT = fpp_register("count", count_task);
}

/* ------------------------------------------------------------------ helpers */

typedef struct fdent {
    int fd;
    uint64_t dev, ino;
    char link[160];
} fdent;

/* The descriptors >= 3 of pid (not the directory listing them). */
static int fds_of(pid_t pid, fdent *out, int max)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd < 3 || (pid == getpid() && fd == self))
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            continue;
        ssize_t k = readlink(p, out[n].link, sizeof out[n].link - 1);
        out[n].link[k > 0 ? k : 0] = 0;
        out[n].fd = fd;
        out[n].dev = st.st_dev;
        out[n].ino = st.st_ino;
        n++;
    }
    closedir(d);
    return n;
}

static bool fd_in(const fdent *e, const fdent *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i].dev == e->dev && set[i].ino == e->ino)
            return true;
    return false;
}

typedef struct mapent {
    unsigned long ino;
    char name[96];
} mapent;

/* pid's shared mappings (memfds, shared anonymous memory), one entry per object. */
static int shared_maps_of(pid_t pid, mapent *out, int max)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%ld/maps", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        char perms[8] = "", name[256] = "";
        unsigned long ino = 0;
        if (sscanf(line, "%*x-%*x %7s %*x %*s %lu %255[^\n]", perms, &ino, name) < 2 || perms[3] != 's' || !ino)
            continue;
        bool dup = false;
        for (int i = 0; i < n && !dup; i++)
            dup = out[i].ino == ino;
        if (dup)
            continue;
        out[n].ino = ino;
        snprintf(out[n].name, sizeof out[n].name, "%.95s", name);
        n++;
    }
    fclose(f);
    return n;
}

static bool map_in(unsigned long ino, const mapent *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i].ino == ino)
            return true;
    return false;
}

/* ------------------------------------------------------------ one snapshot */

/* A global and a heap pointer set after fpp_process_executor, with every 10th task crashing so
 * replacements are forked all along: every task sees the creation-time world, in the first
 * workers and the replacements alike. And a file opened after creation is not open in any
 * worker, even with keep_fds. 0.1: replacements were forked from the parent as it was then
 * (61 right, 3 segfaults hashing through such a pointer). */
Test(snapshot, every_worker_sees_the_program_as_it_was_at_creation, .fini = assert_clean, .timeout = 120)
{
    g_world = 1;
    g_ptr = NULL;
    fpp_executor_opts o = {.workers = 2, .keep_fds = 1};
    fpp_executor *ex = mk_exec(PROC, &o);
    pid_t first[8];
    int nfirst = worker_pids(first, 8);
    g_world = 2;
    g_ptr = malloc(64);
    strcpy(g_ptr, "x");
    int late = open("/dev/null", O_RDONLY);
    cr_assert_geq(late, 0);
    struct stat st;
    fstat(late, &st);
    uint64_t fa[3] = {(uint64_t)late, (uint64_t)st.st_dev, (uint64_t)st.st_ino};
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    for (int i = 0; i < 300; i++) {
        if (i % 10 == 9)
            fpp_submit(tm, F_SEGV, NULL, 0);
        else if (i % 10 == 4)
            fpp_submit(tm, F_FD_SAME, fa, sizeof fa);
        else
            fpp_submit(tm, F_WORLD, NULL, 0);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 300);
    int crashed = 0, in_replacements = 0, worlds = 0;
    for (size_t i = 0; i < n; i++) {
        const fpp_task *t = all[i];
        if (fpp_task_fn(t) == F_SEGV) {
            crashed += fpp_task_status(t) == FPP_CRASHED;
            continue;
        }
        cr_assert_eq(fpp_task_status(t), FPP_DONE, "task %lld: %s", (long long)fpp_task_id(t), fpp_task_error(t));
        if (fpp_task_fn(t) == F_FD_SAME) {
            int same;
            memcpy(&same, fpp_task_result(t, NULL), sizeof same);
            cr_expect_eq(same, 0, "task %lld: a file opened after creation is open in its worker", (long long)fpp_task_id(t));
            continue;
        }
        long r[3];
        memcpy(r, fpp_task_result(t, NULL), sizeof r);
        cr_expect_eq(r[0], 1, "task %lld (pid %ld) sees the global set after creation", (long long)fpp_task_id(t), r[2]);
        cr_expect_eq(r[1], 0, "task %lld (pid %ld) sees the pointer set after creation", (long long)fpp_task_id(t), r[2]);
        bool first_worker = false;
        for (int k = 0; k < nfirst; k++)
            first_worker = first_worker || first[k] == (pid_t)r[2];
        in_replacements += !first_worker;
        worlds++;
    }
    cr_expect_eq(crashed, 30);
    cr_expect_eq(worlds, 240);
    cr_expect_gt(in_replacements, 100, "replacements ran tasks (%d)", in_replacements);
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    close(late);
    free(g_ptr);
    g_ptr = NULL;
    g_world = 1;
}

/* ------------------------------------------------------- no libc deadlock */

static _Atomic int hammer_stop;
static _Atomic long hammer_rounds;

static void *hammer(void *arg)
{
    (void)arg;
    char buf[32];
    struct tm tmv;
    for (long i = 0; !atomic_load(&hammer_stop); i++) {
        snprintf(buf, sizeof buf, "%ld", i);
        setenv("FPP_HAMMER", buf, 1);
        time_t t = (time_t)i * 3600;
        localtime_r(&t, &tmv);
        atomic_store(&hammer_rounds, i);
    }
    return NULL;
}

/* An application thread holds libc's environment and time-zone locks most of the time while
 * workers crash and are replaced: no replacement inherits a held lock. 0.1 forked
 * replacements from this busy parent: 169 of 200 tasks timed out with setenv, 23 with
 * localtime_r, though the executor was created single-threaded. */
Test(libc, respawned_workers_never_inherit_a_held_libc_lock, .fini = assert_clean, .timeout = 180)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 2000};
    fpp_executor *ex = mk_exec(PROC, &o); /* created single-threaded, as the README advises */
    atomic_store(&hammer_stop, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, hammer, NULL), 0);
    while (atomic_load(&hammer_rounds) < 1000)
        sleep_ms(1);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    for (uint64_t i = 0; i < 200; i++)
        fpp_submit(tm, F_LIBC, &i, 8);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    atomic_store(&hammer_stop, 1);
    pthread_join(th, NULL);
    cr_expect_eq(st.timed_out, 0, "%llu tasks timed out: a worker deadlocked in libc", (unsigned long long)st.timed_out);
    cr_expect_eq(st.crashed, 10);
    cr_expect_eq(st.done, 190);
    cr_expect_geq(st.worker_restarts, 10);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ---------------------------------------------- another executor's memory */

/* Executor A (64 MiB results: big slot memory), then B, then A freed: B's fork server maps
 * no fpp memory at all, B's workers only their own slot memory and B's argument arena, and no
 * process of B holds a descriptor or a mapping of A's. With and without keep_fds. 0.1: a
 * freed executor's 264 MiB stayed mapped in the second executor's workers. */
static void another_executors_memory(int keep_fds)
{
    static fdent f0[512], f1[512], fw[512];
    static mapent m0[256], m1[256], m2[256], mw[256];
    int nf0 = fds_of(getpid(), f0, 512), nm0 = shared_maps_of(getpid(), m0, 256);
    fpp_executor_opts oa = {.workers = 2, .max_result_size = (size_t)64 << 20};
    fpp_executor *a = mk_exec(PROC, &oa);
    pid_t fs_a = the_fork_server();
    int nf1 = fds_of(getpid(), f1, 512), nm1 = shared_maps_of(getpid(), m1, 256);
    /* A's: what its creation added to the parent. */
    fdent a_fds[64];
    int na = 0;
    for (int i = 0; i < nf1 && na < 64; i++)
        if (!fd_in(&f1[i], f0, nf0))
            a_fds[na++] = f1[i];
    mapent a_maps[64];
    int nam = 0;
    for (int i = 0; i < nm1 && nam < 64; i++)
        if (!map_in(m1[i].ino, m0, nm0))
            a_maps[nam++] = m1[i];
    cr_assert_geq(na, 3, "A's socket, pidfd and memfds (%d)", na);
    cr_assert_geq(nam, 3, "A's mailbox, argument arena and slot memory (%d)", nam);

    fpp_executor_opts ob = {.workers = 2, .keep_fds = keep_fds};
    fpp_executor *b = mk_exec(PROC, &ob);
    int nm2 = shared_maps_of(getpid(), m2, 256);
    fpp_executor_free(a);
    cr_assert(all_gone_by(&fs_a, 1, mono_ns() + 2000000000LL) == 0, "A's fork server is gone");
    fpp_tm *tm = mk_tm(b, FPP_RAISE, 0);
    every_slot_serves(tm, 2);
    sleep_ms(100); /* the spare */
    pid_t pids[16];
    int nfs = 0, n = pool_pids(pids, 16, &nfs);
    cr_assert_eq(nfs, 1);
    cr_assert_geq(n, 3);
    int workers = 0;
    for (int i = 0; i < n; i++) {
        bool server = i < nfs;
        int nmw = shared_maps_of(pids[i], mw, 256);
        int slot = 0, args = 0;
        for (int k = 0; k < nmw; k++) {
            cr_expect(!map_in(mw[k].ino, a_maps, nam), "%s %ld maps A's %s", server ? "B's server" : "B's worker",
                      (long)pids[i], mw[k].name);
            if (!strstr(mw[k].name, "memfd:fpp"))
                continue;
            cr_expect(!server, "B's fork server maps %s", mw[k].name);
            cr_expect(map_in(mw[k].ino, m2, nm2), "worker %ld maps %s, not B's", (long)pids[i], mw[k].name);
            slot += strstr(mw[k].name, "memfd:fpp-worker") != NULL;
            args += strstr(mw[k].name, "memfd:fpp-args") != NULL;
        }
        if (!server) {
            cr_expect_leq(slot, 1, "worker %ld maps %d slot memories", (long)pids[i], slot);
            cr_expect_eq(args, 1, "worker %ld maps %d argument arenas", (long)pids[i], args);
            workers += slot == 1;
        }
        int nfw = fds_of(pids[i], fw, 512);
        for (int k = 0; k < nfw; k++) {
            cr_expect(!fd_in(&fw[k], a_fds, na), "%s %ld holds A's fd %d (%s)", server ? "B's server" : "B's worker",
                      (long)pids[i], fw[k].fd, fw[k].link);
            cr_expect(server || !strstr(fw[k].link, "memfd:"), "worker %ld holds %s", (long)pids[i], fw[k].link);
        }
    }
    cr_expect_eq(workers, 2, "two workers with their slot memory");
    fpp_tm_free(tm);
    fpp_executor_free(b);
}

Test(memory_of_others, a_freed_executors_memory_is_in_no_process_of_another, .fini = assert_clean, .timeout = 60)
{
    another_executors_memory(0);
}

Test(memory_of_others, nor_with_keep_fds, .fini = assert_clean, .timeout = 60)
{
    another_executors_memory(1);
}

/* ----------------------------------------------------------------- keep_fds */

/* keep_fds: a pipe opened before creation is open in every worker (same file, same number);
 * without it, closed. Either way no worker holds one of fpp's own descriptors (another
 * executor's memfds, sockets, pidfds). 0.1 had no keep_fds. */
Test(fds, keep_fds_keeps_the_applications_descriptors_and_never_fpps, .fini = assert_clean, .timeout = 60)
{
    static fdent f0[512], f1[512], fw[512];
    int nf0 = fds_of(getpid(), f0, 512);
    fpp_executor_opts oa = {.workers = 1};
    fpp_executor *a = mk_exec(PROC, &oa); /* fpp's own descriptors, open in the parent */
    pid_t fs_a = the_fork_server();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int nf1 = fds_of(getpid(), f1, 512);
    fdent a_fds[64];
    int na = 0;
    for (int i = 0; i < nf1 && na < 64; i++)
        if (!fd_in(&f1[i], f0, nf0) && f1[i].fd != p[0] && f1[i].fd != p[1])
            a_fds[na++] = f1[i];
    cr_assert_geq(na, 2);
    struct stat sp;
    fstat(p[1], &sp);
    uint64_t want[3] = {(uint64_t)p[1], (uint64_t)sp.st_dev, (uint64_t)sp.st_ino};

    for (int keep = 1; keep >= 0; keep--) {
        fpp_executor_opts ob = {.workers = 2, .keep_fds = keep};
        fpp_executor *b = mk_exec(PROC, &ob);
        fpp_tm *tm = mk_tm(b, FPP_RAISE, 0);
        /* Through tasks: every worker, a replacement included. */
        fpp_submit(tm, F_SEGV, NULL, 0);
        cr_expect_eq(fpp_run(tm), FPP_ETASK);
        fpp_tm_free(tm);
        tm = mk_tm(b, FPP_RAISE, 1);
        for (int i = 0; i < 20; i++)
            fpp_submit(tm, F_FD_SAME, want, sizeof want);
        cr_assert_eq(fpp_run(tm), 0);
        fpp_task *const *all;
        size_t n = fpp_completed(tm, &all);
        for (size_t i = 0; i < n; i++) {
            int same;
            memcpy(&same, fpp_task_result(all[i], NULL), sizeof same);
            cr_expect_eq(same, keep, "keep_fds = %d: the pipe is %s in a worker", keep, same ? "open" : "closed");
        }
        /* From outside: every descriptor of every worker of B. */
        sleep_ms(100); /* the spare */
        pid_t fss[4];
        int nfs = child_pids(fss, 4);
        pid_t fs_b = fss[0] == fs_a ? fss[1] : fss[0];
        cr_assert_eq(nfs, 2);
        pid_t ws[16];
        int nw = children_of(fs_b, ws, 16);
        cr_assert_geq(nw, 2);
        for (int w = 0; w < nw; w++) {
            int nfw = fds_of(ws[w], fw, 512), pipe_ends = 0, foreign = 0;
            for (int k = 0; k < nfw; k++) {
                cr_expect(!fd_in(&fw[k], a_fds, na), "worker %ld holds A's fd %d (%s)", (long)ws[w], fw[k].fd, fw[k].link);
                cr_expect(!strstr(fw[k].link, "memfd:") && !strstr(fw[k].link, "pidfd"), "worker %ld holds fd %d (%s)",
                          (long)ws[w], fw[k].fd, fw[k].link);
                if ((fw[k].fd == p[0] || fw[k].fd == p[1]) && fd_in(&fw[k], f1, nf1))
                    pipe_ends++;
                if (!fd_in(&fw[k], f1, nf1))
                    foreign++; /* not the application's: only the spare's own channel */
            }
            cr_expect_eq(pipe_ends, keep ? 2 : 0, "worker %ld: %d ends of the pipe", (long)ws[w], pipe_ends);
            cr_expect_leq(foreign, 1, "worker %ld holds %d descriptors the application did not have", (long)ws[w], foreign);
            if (!keep)
                cr_expect_leq(nfw, 1, "worker %ld holds %d descriptors above 2", (long)ws[w], nfw);
        }
        fpp_tm_free(tm);
        fpp_executor_free(b);
    }
    fpp_executor_free(a);
    close(p[0]);
    close(p[1]);
}

/* -------------------------------------------------- nothing outlives the parent */

static int leftover_pids(pid_t *out, int max)
{
    int n = 0;
    long left = atomic_load(&T_SHARED[S_LEFT]);
    for (long i = 0; i < left && i < 16 && n < max; i++)
        out[n++] = (pid_t)atomic_load(&T_SHARED[S_LEFT_LIST + i]);
    return n;
}

/* Runs the tasks that try to outlive the pool: seteuid there and back (clearing the death
 * signal) and staying a worker, fork and return in both, a setsid'ed child sleeping 60 s, a
 * daemon() sleeping 60 s; waits until the two sleepers are there. */
static void run_escapers(fpp_tm *tm)
{
    fpp_submit(tm, F_DAEMON, NULL, 0); /* first: its worker exits inside daemon() */
    fpp_run(tm);
    if (geteuid() == 0)
        fpp_submit(tm, F_SEUID, NULL, 0);
    fpp_submit(tm, F_FORK_RETURN, NULL, 0);
    fpp_submit(tm, F_SLEEPER, NULL, 0);
    fpp_run(tm);
    wait_shared(S_LEFT, 2, 10000);
}

/* The parent (a forked child of the test owning the executor) is SIGKILLed: its fork server,
 * its workers (one with its death signal cleared by a change of credentials), its spare, and
 * the processes tasks left behind are all gone within a second. 0.1: 3/3 workers survived a
 * seteuid, 11/11 forked copies and 8/8 daemons survived the parent. */
Test(outlive, nothing_outlives_the_parent_killed, .fini = assert_clean, .timeout = 60)
{
    shared_reset();
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t parent = fork();
    cr_assert_geq(parent, 0);
    if (parent == 0) {
        close(p[0]);
        alarm(50);
        fpp_executor *ex;
        fpp_executor_opts o = {.workers = 2};
        if (fpp_process_executor(&ex, &o) != 0)
            _exit(1);
        fpp_tm *tm;
        fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1};
        if (fpp_tm_create(&tm, ex, &to) != 0)
            _exit(2);
        run_escapers(tm);
        sleep_ms(100); /* the spare */
        pid_t pids[64];
        int n = pool_pids(pids, 48, NULL);
        n += leftover_pids(pids + n, 16);
        ssize_t w = write(p[1], pids, (size_t)n * sizeof *pids);
        (void)w;
        close(p[1]);
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t pids[64];
    ssize_t got = read(p[0], pids, sizeof pids);
    close(p[0]);
    int n = got > 0 ? (int)(got / (ssize_t)sizeof(pid_t)) : 0;
    cr_assert_geq(n, 5, "server, 2 workers (and the spare) and 2 left behind (%d)", n);
    cr_assert_geq(atomic_load(&T_SHARED[S_LEFT]), 2, "the sleeper and the daemon were left behind");
    if (geteuid() == 0)
        cr_expect_eq(atomic_load(&T_SHARED[S_PDEATH]), 0, "seteuid there and back cleared the worker's death signal");
    kill(parent, SIGKILL);
    waitpid(parent, NULL, 0);
    pid_t left = all_gone_by(pids, n, mono_ns() + 1000000000LL);
    cr_expect_eq(left, 0, "process %ld outlived the parent by a second", (long)left);
    for (int i = 0; i < n; i++) /* whatever failed above: leave nothing to the next test */
        if (!gone(pids[i]))
            kill(pids[i], SIGKILL);
    if (geteuid() != 0)
        cr_log_warn("not root: the seteuid task was not run");
}

/* The same tasks, then fpp_executor_free: everything is gone when it returns (within a
 * second at most). 0.1 left the forked copies and the daemons running. */
Test(outlive, nothing_outlives_the_pool_freed, .fini = assert_clean, .timeout = 60)
{
    shared_reset();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    run_escapers(tm);
    cr_assert_geq(atomic_load(&T_SHARED[S_LEFT]), 2);
    sleep_ms(100);
    pid_t pids[64];
    int n = pool_pids(pids, 48, NULL);
    n += leftover_pids(pids + n, 16);
    if (geteuid() == 0) {
        pid_t seuid = (pid_t)atomic_load(&T_SHARED[S_SEUID_PID]);
        bool listed = false;
        for (int i = 0; i < n; i++)
            listed = listed || pids[i] == seuid;
        cr_expect(listed, "the worker that changed credentials is still a worker");
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    pid_t left = all_gone_by(pids, n, mono_ns() + 1000000000LL);
    cr_expect_eq(left, 0, "process %ld outlived fpp_executor_free by a second", (long)left);
    for (int i = 0; i < n; i++)
        if (!gone(pids[i]))
            kill(pids[i], SIGKILL);
}

/* Every 10th of 500 tasks forks and returns in both processes: the copy never runs another
 * task (each task runs once, in a real worker) and no unrelated task crashes. 0.1: the copy
 * ran the worker loop on the same ring (up to 67 unrelated tasks CRASHED). */
Test(outlive, a_forked_copy_of_a_worker_never_runs_another_task, .fini = assert_clean, .timeout = 120)
{
    shared_reset();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    for (uint64_t i = 0; i < 500; i++) {
        uint64_t a[2] = {i, i % 10 == 3};
        fpp_submit(tm, F_COUNT, a, sizeof a);
    }
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 500);
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(fpp_task_status(all[i]), FPP_DONE, "task %lld: %s", (long long)fpp_task_id(all[i]),
                     fpp_task_error(all[i]));
    cr_expect(wait_shared(S_COPIES, 50, 10000), "every forking task made its copy");
    long copies = atomic_load(&T_SHARED[S_COPIES]);
    cr_expect_eq(copies, 50);
    for (int i = 0; i < 500; i++) {
        cr_expect_eq(atomic_load(&T_SHARED[S_EXEC + i]), 1, "task %d ran %ld times", i, atomic_load(&T_SHARED[S_EXEC + i]));
        long runner = atomic_load(&T_SHARED[S_RUNPID + i]);
        for (long c = 0; c < copies && c < 190; c++)
            cr_expect_neq(runner, atomic_load(&T_SHARED[S_COPY_LIST + c]), "task %d ran in a forked copy", i);
    }
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.crashed, 0);
    cr_expect_eq(st.worker_restarts, 0, "the workers themselves went on");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------------------------ wrong process */

/* A forked child of the parent (daemonising: its own child does it) frees its copies of the
 * task manager and the executor while tasks are in flight: the parent's pool is untouched,
 * its workers the same processes, every slot serves. test_owner.c covers the calls' codes;
 * this is the parent's side, on both executors. 0.1: the child's free stopped the parent's
 * workers or took its results; a daemonising program hung. */
BOTH_EXECUTORS(wrong_process, a_forked_child_freeing_its_copies_leaves_the_parents_pool_whole, .timeout = 60)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(k, &o);
    fpp_tm *tm = mk_tm(ex, FPP_RAISE, 0);
    every_slot_serves(tm, 2);
    sleep_ms(100); /* the spare */
    pid_t before[16], after[16];
    int nb = k == PROC ? pool_pids(before, 16, NULL) : 0;
    int ms = 30;
    for (int i = 0; i < 20; i++)
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms); /* in flight across the fork */
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        close(p[0]);
        alarm(20);
        if (fork() == 0) { /* the daemon's half */
            setsid();
            fpp_tm_free(tm);
            fpp_executor_free(ex);
            ssize_t w = write(p[1], "k", 1);
            _exit(w == 1 ? 0 : 1);
        }
        _exit(0);
    }
    close(p[1]);
    waitpid(child, NULL, 0);
    char c = 0;
    ssize_t r = read(p[0], &c, 1); /* the grandchild freed everything (or died: EOF) */
    close(p[0]);
    cr_expect_eq(r, 1, "the daemonised child finished freeing its copies");
    cr_expect_eq(fpp_run(tm), 0);
    every_slot_serves(tm, 2);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.submitted, 24);
    cr_expect_eq(st.done, 24, "%llu done", (unsigned long long)st.done);
    cr_expect_eq(st.worker_restarts, 0);
    if (k == PROC) {
        int na = pool_pids(after, 16, NULL);
        cr_expect_eq(na, nb);
        for (int i = 0; i < nb; i++) {
            bool still = false;
            for (int j = 0; j < na; j++)
                still = still || after[j] == before[i];
            cr_expect(still, "process %ld of the parent's pool is gone", (long)before[i]);
        }
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ------------------------------------------- an application that reaps */

static void reap_everything(int sig)
{
    (void)sig;
    int e = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = e;
}

static void crashes_keep_their_signal(void)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    for (int i = 0; i < 200; i++)
        fpp_submit(tm, F_SEGV, NULL, 0);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 200);
    int unknown = 0;
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(fpp_task_status(all[i]), FPP_CRASHED);
        const char *e = fpp_task_error(all[i]);
        unknown += strstr(e, "status unknown") != NULL;
        cr_expect(strstr(e, "killed by SIGSEGV") != NULL, "task %lld: %s", (long long)fpp_task_id(all[i]), e);
        cr_expect_eq(fpp_task_signal(all[i]), SIGSEGV);
    }
    cr_expect_eq(unknown, 0);
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* The application reaps every child in its SIGCHLD handler: crashes still come back "killed
 * by SIGSEGV" (workers are the fork server's children, not the application's). 0.1: "status
 * unknown" in 87 of 200. */
Test(reaping, a_sigchld_handler_reaping_every_child_takes_no_crash_status, .fini = assert_clean, .timeout = 120)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = reap_everything;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, &old);
    crashes_keep_their_signal();
    sigaction(SIGCHLD, &old, NULL);
}

/* SIGCHLD ignored (children reaped by the kernel): the same. 0.1: 200 of 200 lost their
 * signal (checked against /work/scratch/v01's library). */
Test(reaping, sigchld_ignored_takes_no_crash_status, .fini = assert_clean, .timeout = 120)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGCHLD, &sa, &old);
    crashes_keep_their_signal();
    sigaction(SIGCHLD, &old, NULL);
}

/* -------------------------------------------------- the fork server's death */

/* The fork server SIGKILLed while tasks run: a new one is started, every task comes back
 * exactly once (those running then CRASHED "died with the fork server"), every slot serves.
 * (0.1 had no fork server; the lead's 0.2 must survive its death like a worker's.) */
Test(server, killed_during_a_run_is_replaced_and_no_task_is_lost, .fini = assert_clean, .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    pid_t fs0 = the_fork_server();
    int ms = 10;
    for (int i = 0; i < 200; i++)
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    static int seen[200];
    memset(seen, 0, sizeof seen);
    int got = 0, crashed = 0;
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        int64_t id = fpp_task_id(t);
        cr_assert(id >= 0 && id < 200);
        seen[id]++;
        if (fpp_task_status(t) != FPP_DONE) {
            cr_expect_eq(fpp_task_status(t), FPP_CRASHED);
            cr_expect(strstr(fpp_task_error(t), "died with the fork server") != NULL, "task %lld: %s", (long long)id,
                      fpp_task_error(t));
            crashed++;
        }
        if (++got == 40)
            kill(fs0, SIGKILL);
    }
    cr_expect_eq(got, 200);
    for (int i = 0; i < 200; i++)
        cr_expect_eq(seen[i], 1, "task %d came back %d times", i, seen[i]);
    cr_expect_geq(crashed, 1, "tasks were running when the server died");
    cr_expect_leq(crashed, 2, "only the tasks running then");
    pid_t fs1 = the_fork_server();
    cr_expect_neq(fs1, fs0, "a new fork server");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A task cleared its worker's death signal (seteuid there and back), then the fork server is
 * SIGKILLed: that worker does not die with the server by itself; the pool kills it when it
 * replaces the server. (0.1 had no fork server; its workers' death signal was the parent's,
 * cleared the same way: 3/3 survived the parent.) */
Test(server, killed_takes_along_a_worker_whose_death_signal_a_task_cleared, .fini = assert_clean, .timeout = 60)
{
    if (geteuid() != 0)
        cr_skip_test("seteuid(65534) needs root (CAP_SETUID)");
    shared_reset();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    fpp_task *t;
    int64_t id = fpp_submit(tm, F_SEUID, NULL, 0);
    cr_assert_eq(fpp_wait(tm, id, &t), 1);
    cr_assert_eq(fpp_task_status(t), FPP_DONE, "%s", fpp_task_error(t));
    fpp_task_release(t);
    cr_expect_eq(atomic_load(&T_SHARED[S_PDEATH]), 0, "the task cleared its worker's death signal");
    pid_t w = (pid_t)atomic_load(&T_SHARED[S_SEUID_PID]);
    pid_t fs0 = the_fork_server();
    kill(fs0, SIGKILL);
    int ms = 300;
    for (int i = 0; i < 4; i++) /* tasks in flight: the pool notices and replaces the server */
        fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    cr_assert_eq(fpp_run(tm), 0);
    cr_expect_neq(the_fork_server(), fs0);
    every_slot_serves(tm, 2);
    pid_t left = all_gone_by(&w, 1, mono_ns() + 1000000000LL);
    cr_expect_eq(left, 0, "worker %ld outlived its fork server and its replacement", (long)w);
    if (left)
        kill(left, SIGKILL);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

typedef struct resumer {
    int pidfd;
    int after_ms;
    _Atomic int done, sent;
} resumer;

static void *resume_later(void *arg)
{
    resumer *r = arg;
    for (int ms = 0; ms < r->after_ms && !atomic_load(&r->done); ms += 10)
        sleep_ms(10);
    if (syscall(SYS_pidfd_send_signal, r->pidfd, SIGCONT, NULL, 0) == 0)
        atomic_store(&r->sent, 1);
    return NULL;
}

/* The fork server stopped (SIGSTOP: a task's, a user's) while a worker crashes: the server
 * cannot report the death. The parent's heartbeat (a ping each look while tasks run) finds it
 * silent and stopped, and continues it (SIGCONT): nothing hangs, nothing else is lost, the
 * same server serves on. (0.2 replaced a server silent 2 s about a death, killing every worker
 * with it; the lead's first 0.2 waited for SIGCONT: 5.1 s.) The test's own SIGCONT, 5 s later,
 * is a safety net the run must not need. */
Test(server, stopped_while_a_worker_crashes_is_continued_and_nothing_hangs, .fini = assert_clean, .timeout = 120)
{
    capture_logs();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    every_slot_serves(tm, 2);
    pid_t fs0 = the_fork_server();
    resumer r = {.pidfd = (int)syscall(SYS_pidfd_open, fs0, 0), .after_ms = 5000};
    cr_assert_geq(r.pidfd, 0);
    cr_assert_eq(kill(fs0, SIGSTOP), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, resume_later, &r), 0);
    int64_t t0 = mono_ns();
    int64_t segv = fpp_submit(tm, F_SEGV, NULL, 0);
    for (uint64_t i = 0; i < 20; i++)
        fpp_submit(tm, F_SQUARE, &i, 8);
    cr_assert_eq(fpp_run(tm), 0);
    double secs = (double)(mono_ns() - t0) / 1e9;
    bool before_cont = !atomic_load(&r.sent);
    atomic_store(&r.done, 1);
    pthread_join(th, NULL);
    close(r.pidfd);
    cr_log_info("a crash under a stopped fork server came back after %.2f s", secs);
    cr_expect(before_cont, "the run waited for the test's SIGCONT (%.2f s)", secs);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    cr_assert_eq(n, 23, "the barrier's 2 and these 21");
    for (size_t i = 0; i < n; i++) {
        if (fpp_task_id(all[i]) < segv)
            continue;
        if (fpp_task_id(all[i]) == segv)
            cr_expect_eq(fpp_task_status(all[i]), FPP_CRASHED);
        else
            cr_expect_eq(fpp_task_status(all[i]), FPP_DONE, "%s", fpp_task_error(all[i]));
    }
    cr_expect_eq(the_fork_server(), fs0, "continued, not replaced");
    cr_expect(strstr(captured_logs(), "was stopped") != NULL, "%s", captured_logs());
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A fork server a debugger holds (ptrace: traced, not stopped: no SIGCONT moves it) while the
 * parent kills a worker for its timeout: the server answers neither the death nor the pings;
 * after 2 s it is replaced (forked again by the keeper), and the task still comes back
 * FPP_TIMEOUT, not CRASHED. */
Test(server, held_by_a_debugger_while_a_task_times_out_is_replaced_and_keeps_the_timeout, .fini = assert_clean,
     .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 200};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t fs0 = the_fork_server();
    cr_assert_eq(ptrace(PTRACE_SEIZE, fs0, NULL, NULL), 0, "ptrace: %s", strerror(errno));
    cr_assert_eq(ptrace(PTRACE_INTERRUPT, fs0, NULL, NULL), 0);
    int ms = 30000;
    fpp_task *t = NULL;
    int64_t t0 = mono_ns();
    int64_t id = fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    cr_assert_eq(fpp_wait(tm, id, &t), 1);
    double secs = (double)(mono_ns() - t0) / 1e9;
    cr_log_info("a timeout under a traced fork server came back after %.2f s", secs);
    cr_expect_eq(fpp_task_status(t), FPP_TIMEOUT, "%s: %s", fpp_status_name(fpp_task_status(t)), fpp_task_error(t));
    fpp_task_release(t);
    /* Killed when replaced; as its tracer, the test reaps it first (then its keeper can). */
    int st;
    cr_expect_eq(waitpid(fs0, &st, __WALL), fs0);
    pid_t fss[4];
    for (int i = 0; i < 200 && child_pids(fss, 4) > 1; i++)
        sleep_ms(10); /* its keeper reaps it in a moment */
    cr_expect_neq(the_fork_server(), fs0, "replaced");
    every_slot_serves(tm, 2);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* ---------------------------------------------------------------- fork hooks */

static pid_t hooks_test_pid;

static void hook_prepare(void)
{
    atomic_fetch_add(&T_SHARED[S_HOOK_PREP], 1);
    if (getpid() == hooks_test_pid)
        atomic_store(&T_SHARED[S_HOOK_PREP_TID], gettid_long());
}

static void hook_parent(void)
{
    long n = atomic_fetch_add(&T_SHARED[S_HOOK_PARENT], 1);
    if (n < S_HOOK_MAX)
        atomic_store(&T_SHARED[S_HOOK_PARENT_LIST + n], (long)getpid());
}

static void hook_child(void)
{
    long n = atomic_fetch_add(&T_SHARED[S_HOOK_CHILD], 1);
    if (n < S_HOOK_MAX)
        atomic_store(&T_SHARED[S_HOOK_CHILD_LIST + n], (long)getpid());
}

static bool in_list(int at, long n, long pid)
{
    for (long i = 0; i < n && i < S_HOOK_MAX; i++)
        if (atomic_load(&T_SHARED[at + i]) == pid)
            return true;
    return false;
}

typedef struct creator {
    fpp_executor *ex;
    long tid;
    int rc;
} creator;

static void *create_here(void *arg)
{
    creator *c = arg;
    c->tid = gettid_long();
    fpp_executor_opts o = {.workers = 2};
    c->rc = fpp_process_executor(&c->ex, &o);
    return NULL;
}

/* Waits until every fork has run its three hooks (counts in shared memory settle). */
static void hooks_settle(long forks_at_least)
{
    int64_t until = mono_ns() + 5000000000LL;
    while (mono_ns() < until) {
        long p = atomic_load(&T_SHARED[S_HOOK_PREP]), a = atomic_load(&T_SHARED[S_HOOK_PARENT]),
             c = atomic_load(&T_SHARED[S_HOOK_CHILD]);
        if (p == a && a == c && c >= forks_at_least)
            return;
        sleep_ms(5);
    }
}

/* fpp_set_fork_hooks: prepare and parent run in the forking process (the creating thread for
 * the fork server, the server for workers), child in every new process: the server and each
 * worker. The executor is created on a thread that then ends: the server and the workers live
 * on (a death signal tied to the creating thread would kill them then). 0.1 had no fork hooks,
 * and forked every worker from a supervisor thread of the parent, never in the creating
 * thread (what a language runtime's fork handlers need). */
Test(hooks, run_around_every_fork_and_the_child_hook_in_the_server_and_each_worker, .fini = assert_clean, .timeout = 60)
{
    shared_reset();
    hooks_test_pid = getpid();
    fpp_set_fork_hooks(hook_prepare, hook_parent, hook_child);
    creator c = {0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, create_here, &c), 0);
    pthread_join(th, NULL); /* the creating thread is gone */
    cr_assert_eq(c.rc, 0, "%s", fpp_strerror(c.rc));
    hooks_settle(4);
    sleep_ms(200);
    hooks_settle(4);
    cr_expect_eq(atomic_load(&T_SHARED[S_HOOK_PREP_TID]), c.tid, "the fork server was forked in the creating thread");
    pid_t fs = the_fork_server(), keeper = 0;
    cr_assert_eq(keeper_pids(&keeper, 1), 1);
    pid_t pids[16];
    int n = pool_pids(pids, 15, NULL);
    cr_assert_geq(n, 4, "server, two workers, the spare (%d)", n);
    pids[n++] = keeper;
    long nc = atomic_load(&T_SHARED[S_HOOK_CHILD]), np = atomic_load(&T_SHARED[S_HOOK_PARENT]);
    cr_expect_eq(nc, n, "one child hook per process of the pool, the keeper's included (%ld for %d)", nc, n);
    for (int i = 0; i < n; i++)
        cr_expect(in_list(S_HOOK_CHILD_LIST, nc, pids[i]), "no child hook ran in %s %ld",
                  pids[i] == fs ? "the server" : pids[i] == keeper ? "the keeper" : "worker", (long)pids[i]);
    long parent_in_app = 0;
    for (long i = 0; i < np && i < S_HOOK_MAX; i++) {
        long who = atomic_load(&T_SHARED[S_HOOK_PARENT_LIST + i]);
        parent_in_app += who == (long)getpid();
        cr_expect(who == (long)getpid() || who == (long)fs || who == (long)keeper, "a parent hook ran in %ld", who);
    }
    cr_expect_eq(parent_in_app, 1, "the application forked once (the keeper)");

    /* The creating thread ended: nobody died of it. A crash forks a replacement: hooks again. */
    fpp_tm *tm = mk_tm(c.ex, FPP_IGNORE, 0);
    every_slot_serves(tm, 2);
    pid_t now[16];
    int nn = pool_pids(now, 16, NULL);
    n--; /* the keeper, last */
    cr_expect_eq(nn, n);
    for (int i = 0; i < n && i < nn; i++)
        cr_expect_eq(now[i], pids[i], "process %ld of the pool died with the thread that created it", (long)pids[i]);
    fpp_submit(tm, F_SEGV, NULL, 0);
    fpp_run(tm);
    every_slot_serves(tm, 2);
    hooks_settle(nc + 1);
    nc = atomic_load(&T_SHARED[S_HOOK_CHILD]);
    cr_expect_gt(nc, n, "the replacement's fork ran the hooks");
    pid_t ws[16];
    int nw = worker_pids(ws, 16);
    for (int i = 0; i < nw; i++)
        cr_expect(in_list(S_HOOK_CHILD_LIST, nc, ws[i]), "no child hook ran in worker %ld", (long)ws[i]);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    cr_expect_eq(st.worker_restarts, 1);
    fpp_tm_free(tm);
    fpp_executor_free(c.ex);
    fpp_set_fork_hooks(NULL, NULL, NULL);
}

/* ------------------------------------------- a replaced fork server (issue 16 item 7) */

/* These three failed on 0.2, where a fork server that died was replaced by forking the parent
 * as it was then, which undid for the new server's workers what the fork server is for. A
 * replacement is now forked by the keeper, from the program as it was at creation, and the
 * keeper (a child subreaper) kills what a dead server's tasks left behind. */

/* The snapshot after a replacement: 0 of 20 tasks see the creation-time world today. */
Test(replaced, a_replaced_fork_server_keeps_the_snapshot, .fini = assert_clean, .timeout = 60)
{
    g_world = 1;
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    g_world = 2;
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 1);
    kill(the_fork_server(), SIGKILL);
    int ms = 300;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms); /* in flight: the pool notices */
    cr_assert_eq(fpp_run(tm), 0);
    for (int i = 0; i < 20; i++)
        fpp_submit(tm, F_WORLD, NULL, 0);
    cr_assert_eq(fpp_run(tm), 0);
    fpp_task *const *all;
    size_t n = fpp_completed(tm, &all);
    for (size_t i = 0; i < n; i++) {
        if (fpp_task_fn(all[i]) != F_WORLD)
            continue;
        long r[3];
        memcpy(r, fpp_task_result(all[i], NULL), sizeof r);
        cr_expect_eq(r[0], 1, "a worker of the new server sees the world after creation");
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    g_world = 1;
}

/* libc locks after a replacement: with a thread in setenv/localtime_r, every worker of the new
 * server deadlocks (here 40 of 40 tasks time out; 200 of 200 over 10 replacements). */
Test(replaced, a_fork_server_replaced_while_a_thread_holds_libc_locks_does_not_deadlock, .fini = assert_clean,
     .timeout = 120)
{
    fpp_executor_opts o = {.workers = 2, .task_timeout_ms = 2000};
    fpp_executor *ex = mk_exec(PROC, &o);
    atomic_store(&hammer_stop, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, hammer, NULL), 0);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    kill(the_fork_server(), SIGKILL);
    int ms = 300;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    fpp_run(tm);
    for (uint64_t i = 0; i < 40; i++) {
        uint64_t k = i * 20; /* never i % 20 == 19: no crash */
        fpp_submit(tm, F_LIBC, &k, 8);
    }
    fpp_run(tm);
    fpp_stats st;
    fpp_tm_stats(tm, &st);
    atomic_store(&hammer_stop, 1);
    pthread_join(th, NULL);
    cr_expect_eq(st.timed_out, 0, "%llu tasks timed out", (unsigned long long)st.timed_out);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
}

/* A process a task left behind survives its fork server's death, and then the pool's free:
 * it was re-parented to init when the server (its subreaper) died, and nobody knows it. */
Test(replaced, a_leftover_does_not_outlive_a_killed_fork_server_and_the_pool, .fini = assert_clean, .timeout = 60)
{
    shared_reset();
    fpp_executor_opts o = {.workers = 2};
    fpp_executor *ex = mk_exec(PROC, &o);
    fpp_tm *tm = mk_tm(ex, FPP_IGNORE, 0);
    fpp_submit(tm, F_SLEEPER, NULL, 0);
    fpp_run(tm);
    cr_assert(wait_shared(S_LEFT, 1, 5000));
    pid_t left = (pid_t)atomic_load(&T_SHARED[S_LEFT_LIST]);
    kill(the_fork_server(), SIGKILL);
    int ms = 300;
    fpp_submit(tm, F_SLEEP, &ms, sizeof ms);
    fpp_run(tm);
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    pid_t still = all_gone_by(&left, 1, mono_ns() + 1000000000LL);
    cr_expect_eq(still, 0, "process %ld a task left behind outlived the pool", (long)left);
    if (still)
        kill(still, SIGKILL);
}
