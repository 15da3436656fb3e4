/* exec.c: exec mode's worker side, the function "fpp-run:exec" that fpp runs in its worker
 * processes, one task per job. A task's argument is the job's sequence number and values; the
 * worker builds the command (template.c), starts it with posix_spawn in a process group of its
 * own (so the caller's size never matters: the worker is small), with stdin from /dev/null (as
 * GNU parallel's jobs: a job reading stdin never eats a `while read` loop's input), stdout and stderr in two unnamed temporary files (a job that leaves a
 * process behind holding them never stalls the run, unlike pipes), $PARALLEL_SEQ,
 * $PARALLEL_JOBSLOT and $PARALLEL_PID set, and waits for it. --timeout and --retries live
 * here, per job: a job past its time gets GNU parallel's --term-seq on its whole process group
 * (TERM, 200 ms, TERM, 100 ms, TERM, 50 ms, KILL) and is recorded as Exitval -1 with the signal
 * that ended it; a failed job runs again, up to the number of attempts, and only the last
 * attempt's output is kept. The result is a header (exit value, signal, attempts, times), the
 * command line when the joblog wants it, and the output: inline up to FPPR_INLINE_MAX, else in
 * files of the spill directory that the parent copies out and removes (GNU parallel buffers
 * every job's output in files too).
 *
 * The job slots: a small table in shared memory made before the executor (so every worker sees
 * it), one entry per worker, each held by a robust process-shared mutex: a worker takes a free
 * entry at its first job and keeps it until it dies (the kernel frees it then). The entry's
 * number is {%} and $PARALLEL_JOBSLOT (unique among running jobs, 1..-j); the entry also holds
 * the process group of the job running there, so the parent can signal every running job at
 * once (Ctrl-C, --halt now), and a flag that tells workers to start no more jobs. A group is
 * published from its start until just before its leader is reaped, so its number cannot be
 * reused meanwhile. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fpp-run.h"

extern char **environ;

exec_setup g_exec;

/* ------------------------------------------------------------ the slot table */

typedef struct slot_ent {
    pthread_mutex_t lock;
    _Atomic int owner;
    _Atomic int pgid;
} slot_ent;

typedef struct slot_table {
    _Atomic int stop;
    int n;
    slot_ent s[];
} slot_table;

static slot_table *g_slots;

void slots_create(int n)
{
    size_t size = sizeof(slot_table) + (size_t)n * sizeof(slot_ent);
    slot_table *t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED)
        die("mmap of the job slot table: %s", strerror(errno));
    t->n = n;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < n; i++)
        pthread_mutex_init(&t->s[i].lock, &a);
    pthread_mutexattr_destroy(&a);
    g_slots = t;
}

void slots_stop_starting(void)
{
    if (g_slots)
        atomic_store(&g_slots->stop, 1);
}

void slots_signal_jobs(int sig)
{
    if (!g_slots)
        return;
    for (int i = 0; i < g_slots->n; i++) {
        int pg = atomic_load(&g_slots->s[i].pgid);
        if (pg > 1)
            kill(-pg, sig);
    }
}

bool slots_jobs_alive(void)
{
    if (!g_slots)
        return false;
    for (int i = 0; i < g_slots->n; i++) {
        int pg = atomic_load(&g_slots->s[i].pgid);
        if (pg > 1 && kill(-pg, 0) == 0)
            return true;
    }
    return false;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void slots_kill_jobs(bool short_seq)
{
    static const int full[][2] = {{SIGTERM, 200}, {SIGTERM, 100}, {SIGTERM, 50}, {SIGKILL, 25}};
    static const int brief[][2] = {{SIGTERM, 50}, {SIGKILL, 25}};
    const int(*seq)[2] = short_seq ? brief : full;
    int steps = short_seq ? 2 : 4;
    for (int i = 0; i < steps && slots_jobs_alive(); i++) {
        slots_signal_jobs(seq[i][0]);
        for (int waited = 0; waited < seq[i][1] && slots_jobs_alive(); waited += 5)
            sleep_ms(5);
    }
}

static unsigned my_slot;
static slot_ent *my_ent;

static unsigned claim_slot(void)
{
    if (my_slot || !g_slots)
        return my_slot ? my_slot : 1;
    for (int tries = 0; tries < 2000; tries++) {
        for (int i = 0; i < g_slots->n; i++) {
            int rc = pthread_mutex_trylock(&g_slots->s[i].lock);
            if (rc == EOWNERDEAD) {
                pthread_mutex_consistent(&g_slots->s[i].lock);
                rc = 0;
            }
            if (rc == 0) {
                my_ent = &g_slots->s[i];
                atomic_store(&my_ent->owner, (int)getpid());
                atomic_store(&my_ent->pgid, 0);
                my_slot = (unsigned)i + 1;
                return my_slot;
            }
        }
        sleep_ms(1); /* a dead worker's entry is freed as it dies */
    }
    return (unsigned)g_slots->n + 1;
}

/* ------------------------------------------------------------ one attempt */

typedef struct attempt {
    int exitval, signal;
    bool timed_out, spawn_failed;
    int64_t start_ns, runtime_ns;
    int outfd, errfd;
} attempt;

static int devnull = -1;
static char **envp;
static size_t envn;
static char env_seq[48], env_slot[48], env_pid[48];
static unsigned spill_count;

static void make_env(void)
{
    size_t n = 0;
    while (environ[n])
        n++;
    envp = xmalloc((n + 4) * sizeof *envp);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "PARALLEL_SEQ=", 13) && strncmp(environ[i], "PARALLEL_JOBSLOT=", 17) &&
            strncmp(environ[i], "PARALLEL_PID=", 13))
            envp[envn++] = environ[i];
    envp[envn] = env_seq;
    envp[envn + 1] = env_slot;
    envp[envn + 2] = env_pid;
    envp[envn + 3] = NULL;
}

static int capture_file(void)
{
    int fd = open(g_exec.tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        fd = memfd_create("fpp-run-output", MFD_CLOEXEC);
    return fd;
}

/* Waits until pid exits (not reaped) or deadline_ns (monotonic; 0: none) passes: 1 or 0. */
static int wait_exit(pid_t pid, int pidfd, int64_t deadline_ns)
{
    for (;;) {
        if (deadline_ns == 0) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == 0 || errno != EINTR)
                return 1;
            continue;
        }
        int64_t left = deadline_ns - now_mono_ns();
        if (left <= 0)
            left = 0;
        if (pidfd >= 0) {
            struct pollfd pf = {.fd = pidfd, .events = POLLIN};
            int k = poll(&pf, 1, (int)((left + 999999) / 1000000));
            if (k > 0)
                return 1;
            if (k < 0 && errno != EINTR)
                return 1;
        } else {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT | WNOHANG) == 0 && si.si_pid == pid)
                return 1;
            sleep_ms(1);
        }
        if (left == 0 && now_mono_ns() >= deadline_ns)
            return 0;
    }
}

static void run_attempt(char *const *argv, const char *exe, bool use_path, attempt *a)
{
    memset(a, 0, sizeof *a);
    a->outfd = capture_file();
    a->errfd = capture_file();
    a->start_ns = now_real_ns();
    int64_t t0 = now_mono_ns();
    if (a->outfd < 0 || a->errfd < 0) {
        a->spawn_failed = true;
        a->exitval = 126;
        a->runtime_ns = 0;
        if (a->errfd < 0)
            a->errfd = devnull >= 0 ? dup(devnull) : -1;
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (devnull >= 0)
        posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, a->outfd, 1);
    posix_spawn_file_actions_adddup2(&fa, a->errfd, 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t all, none;
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &all); /* SIGINT is ignored in workers; not in jobs */
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    int rc = use_path ? posix_spawnp(&pid, exe, &fa, &at, argv, envp) : posix_spawn(&pid, exe, &fa, &at, argv, envp);
    if (rc == ENOEXEC) {
        /* A script without a #! line: a shell runs it, as execvp, xargs and GNU parallel do
         * (posix_spawn does not). The shell finds it as the command was found. */
        size_t n = 0;
        while (argv[n])
            n++;
        char **sh = calloc(n + 4, sizeof *sh);
        if (sh) {
            sh[0] = (char *)"/bin/sh";
            sh[1] = (char *)"-c";
            sh[2] = (char *)"\"$0\" \"$@\"";
            sh[3] = (char *)exe;
            for (size_t i = 1; i < n; i++)
                sh[3 + i] = argv[i];
            rc = posix_spawn(&pid, "/bin/sh", &fa, &at, sh, envp);
            free(sh);
        }
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        a->spawn_failed = true;
        a->exitval = rc == ENOENT ? 127 : 126;
        strbuf m = {0};
        sb_printf(&m, FPPR_NAME ": cannot run %s: %s\n", argv[0], strerror(rc));
        write_all(a->errfd, m.p, m.len);
        sb_free(&m);
        a->runtime_ns = now_mono_ns() - t0;
        return;
    }
    if (my_ent)
        atomic_store(&my_ent->pgid, (int)pid);
    int pidfd = -1;
    int64_t deadline = 0;
    if (g_exec.timeout_ms) {
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        deadline = t0 + (int64_t)g_exec.timeout_ms * 1000000;
    }
    if (!wait_exit(pid, pidfd, deadline)) {
        /* GNU parallel's --term-seq on the job's process group. */
        static const int seq[][2] = {{SIGTERM, 200}, {SIGTERM, 100}, {SIGTERM, 50}, {SIGKILL, 25}};
        a->timed_out = true;
        for (int i = 0; i < 4; i++) {
            kill(-pid, seq[i][0]);
            if (wait_exit(pid, pidfd, now_mono_ns() + (int64_t)seq[i][1] * 1000000))
                break;
        }
        if (!wait_exit(pid, pidfd, now_mono_ns() + 1000000000LL)) {
            kill(pid, SIGKILL);
            wait_exit(pid, pidfd, 0);
        }
    }
    a->runtime_ns = now_mono_ns() - t0;
    if (a->timed_out)
        kill(-pid, SIGKILL); /* what the job left in its group goes with it */
    if (my_ent)
        atomic_store(&my_ent->pgid, 0); /* before the reap: the number stays ours until then */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (pidfd >= 0)
        close(pidfd);
    if (WIFSIGNALED(status)) {
        a->exitval = 0;
        a->signal = WTERMSIG(status);
    } else {
        a->exitval = WEXITSTATUS(status);
        a->signal = 0;
    }
    if (a->timed_out)
        a->exitval = -1;
}

static void close_attempt(attempt *a)
{
    if (a->outfd >= 0)
        close(a->outfd);
    if (a->errfd >= 0)
        close(a->errfd);
    a->outfd = a->errfd = -1;
}

static bool failed(const attempt *a) { return a->exitval != 0 || a->signal != 0; }

/* Reads all of fd (from 0) into b. */
static void slurp(int fd, size_t size, strbuf *b)
{
    b->len = 0;
    sb_reserve(b, size);
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(fd, b->p + got, size - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    b->len = got;
}

/* Gives fd a name in the spill directory (a link to it, or a copy): 0, or -1. */
static int spill(int fd, size_t size, const char *ext, strbuf *name)
{
    if (mkdir(g_exec.spill_dir, 0700) != 0 && errno != EEXIST)
        return -1;
    name->len = 0;
    sb_printf(name, "%s/%ld.%u.%s", g_exec.spill_dir, (long)getpid(), ++spill_count, ext);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, name->p, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    int out = open(name->p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        return -1;
    off_t off = 0;
    size_t left = size;
    while (left) {
        ssize_t k = sendfile(out, fd, &off, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        left -= (size_t)k;
    }
    close(out);
    return left ? -1 : 0;
}

static size_t file_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size : 0;
}

int exec_job(const void *arg, size_t len, fpp_out *out)
{
    static strbuf cmd, store, outb, errb, oname, ename;
    static char **argv;
    static size_t argv_cap;
    static const char **vals;
    static size_t *lens;
    static int nvals_cap;

    exec_arg_hdr h;
    if (len < sizeof h)
        return fpp_out_fail(out, "bad job argument (%zu bytes)", len), 1;
    memcpy(&h, arg, sizeof h);
    const unsigned char *p = (const unsigned char *)arg + sizeof h, *end = (const unsigned char *)arg + len;
    if (h.nvals > 1000000)
        return fpp_out_fail(out, "bad job argument (%u values)", h.nvals), 1;
    if ((int)h.nvals > nvals_cap) {
        nvals_cap = (int)h.nvals;
        vals = xrealloc(vals, (size_t)nvals_cap * sizeof *vals);
        lens = xrealloc(lens, (size_t)nvals_cap * sizeof *lens);
    }
    for (uint32_t i = 0; i < h.nvals; i++) {
        uint32_t n;
        if ((size_t)(end - p) < sizeof n)
            return fpp_out_fail(out, "bad job argument"), 1;
        memcpy(&n, p, sizeof n);
        p += sizeof n;
        if ((size_t)(end - p) < n)
            return fpp_out_fail(out, "bad job argument"), 1;
        vals[i] = (const char *)p;
        lens[i] = n;
        p += n;
    }
    exec_res_hdr r;
    memset(&r, 0, sizeof r);
    r.magic = EXEC_MAGIC;
    if (g_slots && atomic_load(&g_slots->stop)) {
        if (g_exec.journal) {
            /* The run is stopping (Ctrl-C, --halt now): this job never started, and must not
             * be journaled as finished. The parent cancels it (killing this worker) within
             * moments; a task that is cancelled is not recorded. Should that not happen, it
             * ends as a failure (which --resume-failed runs again). */
            for (int i = 0; i < 2000; i++)
                sleep_ms(5);
            return fpp_out_fail(out, "not started: the run was stopping"), 1;
        }
        r.flags = RES_SKIPPED;
        return fpp_out_set(out, &r, sizeof r) ? 1 : 0;
    }
    if (devnull < 0)
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (!envp)
        make_env();
    job_vals jv = {.seq = h.seq, .slot = claim_slot(), .n = (int)h.nvals, .v = vals, .len = lens};
    r.slot = jv.slot;
    snprintf(env_seq, sizeof env_seq, "PARALLEL_SEQ=%llu", (unsigned long long)h.seq);
    snprintf(env_slot, sizeof env_slot, "PARALLEL_JOBSLOT=%u", jv.slot);
    snprintf(env_pid, sizeof env_pid, "PARALLEL_PID=%ld", (long)g_exec.run_pid);

    const tmpl *t = g_exec.t;
    cmd.len = 0;
    if (!t->direct || g_exec.want_cmd)
        tmpl_command(t, &jv, &cmd);
    const char *exe;
    bool use_path = false;
    if (t->direct) {
        tmpl_argv(t, &jv, &store, &argv, &argv_cap);
        exe = t->exe;
    } else {
        if (argv_cap < 4) {
            argv_cap = 4;
            argv = xrealloc(argv, argv_cap * sizeof *argv);
        }
        argv[0] = (char *)t->shell;
        argv[1] = "-c";
        argv[2] = cmd.p;
        argv[3] = NULL;
        exe = t->shell;
        use_path = strchr(exe, '/') == NULL;
    }
    attempt a;
    unsigned n = 0;
    for (;;) {
        n++;
        run_attempt(argv, exe, use_path, &a);
        if (!failed(&a) || (g_exec.attempts && n >= g_exec.attempts) || (g_slots && atomic_load(&g_slots->stop)))
            break;
        close_attempt(&a);
    }
    r.exitval = a.exitval;
    r.signal = a.signal;
    r.attempts = n;
    r.start_ns = a.start_ns;
    r.runtime_ns = a.runtime_ns;
    if (a.timed_out)
        r.flags |= RES_TIMED_OUT;
    if (a.spawn_failed)
        r.flags |= RES_SPAWN_FAILED;
    size_t osz = a.outfd >= 0 ? file_size(a.outfd) : 0, esz = a.errfd >= 0 ? file_size(a.errfd) : 0;
    r.out_len = osz;
    r.err_len = esz;
    oname.len = ename.len = 0;
    outb.len = errb.len = 0;
    /* With a journal, a failed job is a failed task (so that the journal knows it, and
     * --resume-failed runs it again): its output goes to spill files, its header in the
     * task's error text (fpp keeps no result for a failed task). */
    bool as_failure = g_exec.journal && g_exec.spill && failed(&a);
    if (osz + esz <= g_exec.inline_max && !as_failure) {
        if (osz)
            slurp(a.outfd, osz, &outb);
        if (esz)
            slurp(a.errfd, esz, &errb);
        r.out_len = outb.len;
        r.err_len = errb.len;
    } else if (g_exec.spill) {
        if (osz && spill(a.outfd, osz, "out", &oname) == 0)
            r.flags |= RES_OUT_SPILLED;
        else if (osz)
            r.flags |= RES_TOO_BIG;
        if (esz && spill(a.errfd, esz, "err", &ename) == 0)
            r.flags |= RES_ERR_SPILLED;
        else if (esz)
            r.flags |= RES_TOO_BIG;
    } else {
        r.flags |= RES_TOO_BIG;
    }
    close_attempt(&a);
    if (as_failure && !(r.flags & RES_TOO_BIG)) {
        r.out_name_len = (uint32_t)oname.len;
        r.err_name_len = (uint32_t)ename.len;
        char msg[512];
        size_t at = (size_t)snprintf(msg, sizeof msg, "%s", EXEC_FAIL_TAG);
        const unsigned char *hp = (const unsigned char *)&r;
        if (at + 2 * sizeof r + oname.len + ename.len < sizeof msg - 1) {
            for (size_t i = 0; i < sizeof r; i++)
                at += (size_t)snprintf(msg + at, sizeof msg - at, "%02x", hp[i]);
            memcpy(msg + at, oname.p ? oname.p : "", oname.len);
            at += oname.len;
            memcpy(msg + at, ename.p ? ename.p : "", ename.len);
            at += ename.len;
            msg[at] = 0;
            fpp_out_fail(out, "%s", msg);
            return 1;
        }
        /* Too long for an error text (a $TMPDIR of hundreds of bytes): an ordinary result
         * after all (the journal then counts the job as done). */
    }
    size_t clen = g_exec.want_cmd ? (cmd.len < FPPR_MAX_CMD ? cmd.len : FPPR_MAX_CMD) : 0;
    r.cmd_len = (uint32_t)clen;
    r.out_name_len = (uint32_t)oname.len;
    r.err_name_len = (uint32_t)ename.len;
    size_t inl = (r.flags & (RES_OUT_SPILLED | RES_ERR_SPILLED | RES_TOO_BIG)) ? 0 : outb.len + errb.len;
    size_t total = sizeof r + clen + inl + oname.len + ename.len;
    unsigned char *o = fpp_out_alloc(out, total);
    if (!o)
        return 1;
    memcpy(o, &r, sizeof r);
    o += sizeof r;
    if (clen)
        memcpy(o, cmd.p, clen);
    o += clen;
    if (inl) {
        if (outb.len)
            memcpy(o, outb.p, outb.len);
        o += outb.len;
        if (errb.len)
            memcpy(o, errb.p, errb.len);
        o += errb.len;
    }
    if (oname.len)
        memcpy(o, oname.p, oname.len);
    o += oname.len;
    if (ename.len)
        memcpy(o, ename.p, ename.len);
    /* Large buffers are not kept for the next job. */
    if (outb.cap > ((size_t)4 << 20))
        sb_free(&outb);
    if (errb.cap > ((size_t)4 << 20))
        sb_free(&errb);
    return 0;
}

bool exec_fail_decode(const char *err, strbuf *res)
{
    const char *p = err ? strstr(err, EXEC_FAIL_TAG) : NULL;
    if (!p)
        return false;
    p += strlen(EXEC_FAIL_TAG);
    exec_res_hdr h;
    unsigned char *hp = (unsigned char *)&h;
    for (size_t i = 0; i < sizeof h; i++) {
        unsigned v;
        if (!p[0] || !p[1] || sscanf(p, "%2x", &v) != 1)
            return false;
        hp[i] = (unsigned char)v;
        p += 2;
    }
    if (h.magic != EXEC_MAGIC || h.cmd_len || strlen(p) != (size_t)h.out_name_len + h.err_name_len)
        return false;
    res->len = 0;
    sb_add(res, &h, sizeof h);
    sb_adds(res, p);
    return true;
}
