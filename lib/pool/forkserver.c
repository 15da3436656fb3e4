/* pool/forkserver.c: the fork server, the one process every worker of a process executor is forked
 * from. It is forked once, when the executor is created, in the thread that creates it (so a
 * language runtime's fork hooks run in a sane state), and from then on it only forks, hands
 * out and reaps workers. So every worker sees the program as it was when the executor was
 * created, the first ones and every replacement alike; a parent with many threads is forked
 * once, never again; and respawning costs the same whatever the parent allocates afterwards.
 *
 * What it does, single-threaded, in a poll loop on its channel to the parent (a SOCK_SEQPACKET
 * socketpair), a signalfd for SIGCHLD, and a pidfd of the parent:
 *   SPAWN slot gen + the slot's memfd   hand the pre-forked spare its slot, over the spare's
 *                                       own socketpair (a channel no worker can write), or
 *                                       fork a worker directly; answer SPAWNED with its pid
 *                                       and a pidfd (so the parent can kill it without a round
 *                                       trip), or FAILED naming the call; fork the next spare
 *   SIGCHLD                             reap; answer DIED slot gen pid status max-RSS
 *   QUIT, EOF, or the parent's death    kill everything it started, and everything they left
 * After each message it posts the mailbox, a shared page the parent checks with one load per
 * poll and sleeps on (an event count, ec.c).
 *
 * Nothing outlives the pool: the server is a child subreaper (PR_SET_CHILD_SUBREAPER), so a
 * process a task leaves behind (a fork, a daemon()) is re-parented to it when its own parent
 * dies, and it kills and reaps every child it has, repeatedly, until none is left. It watches
 * the parent's pidfd, which no task can switch off (PR_SET_PDEATHSIG is cleared by a change
 * of credentials, and would fire when the creating thread ends). Workers get
 * PR_SET_PDEATHSIG against the server, so a killed server takes its workers along; the parent
 * then starts a new server.
 *
 * Process groups: the server makes a group of its own, so a terminal's Ctrl-C (sent to the
 * foreground group) never reaches it or the workers: the parent decides about SIGINT.
 *
 * Workers: a worker maps its own slot memory (read-write) and the argument arena (read-only),
 * both MADV_DONTFORK, and holds no other descriptor than stdio (and, with keep_fds, the
 * application's descriptors open at creation). fpp's own descriptors, other executors'
 * included, are closed in the server even with keep_fds (owner.c keeps the list). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/timing.h"
#include "pool/layout.h"

typedef struct spawn_req { uint32_t slot, gen; } spawn_req;

typedef struct fs_state {
    fpp__fs_config cfg;
    int sock, sigfd, ppidfd;
    pid_t parent, self;
    fpp__ec *mailbox;
    fpp__fork_hooks hooks;
    struct { pid_t pid; uint32_t gen; } *workers;
    pid_t spare;
    int spare_sock;
} fs_state;

/* ------------------------------------------------------------------ helpers */

static int send_fd(int sock, const void *buf, size_t len, int fd)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.b;
        mh.msg_controllen = sizeof u.b;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? 0 : -1;
}

/* Receives one message of exactly len bytes and at most one descriptor (else -1, EBADMSG).
 * Returns 1, 0 on end of channel, -1 on error (EAGAIN: none now). */
static int recv_fd(int sock, void *buf, size_t len, int *fd, int flags)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 4)]; } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
    *fd = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
            if (*fd < 0)
                *fd = got;
            else
                close(got); /* more than we asked for */
        }
    }
    if ((size_t)n != len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        errno = EBADMSG;
        return -1;
    }
    return 1;
}

static void tell_parent(fs_state *S, const fpp__fs_msg *m, int fd)
{
    send_fd(S->sock, m, sizeof *m, fd);
    fpp__ec_bump(S->mailbox);
}

static void failed(fs_state *S, uint32_t slot, uint32_t gen, const char *call, int err)
{
    fpp__fs_msg m = {.op = FPP__FS_FAILED, .slot = slot, .gen = gen, .err = err};
    snprintf(m.call, sizeof m.call, "%s", call);
    tell_parent(S, &m, -1);
}

/* Closes every descriptor from `from` on except those in keep (sorted, ascending). */
static void close_except(const int *keep, int nkeep, int from)
{
    int lo = from;
    for (int i = 0; i < nkeep; i++) {
        if (keep[i] < lo)
            continue;
        if (keep[i] > lo && syscall(SYS_close_range, (unsigned)lo, (unsigned)keep[i] - 1, 0u) != 0)
            for (int fd = lo; fd < keep[i]; fd++)
                close(fd);
        lo = keep[i] + 1;
    }
    if (syscall(SYS_close_range, (unsigned)lo, ~0u, 0u) != 0)
        for (int fd = lo; fd < 65536; fd++)
            close(fd);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* ------------------------------------------------------------------ a worker */

static void worker_child(fs_state *S, int hsock, uint32_t slot, int memfd) __attribute__((noreturn));
static void worker_child(fs_state *S, int hsock, uint32_t slot, int memfd)
{
    /* Die with the server (which runs no task code, so nothing clears this in it). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != S->self)
        _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    close(S->sock);
    close(S->sigfd);
    if (S->ppidfd >= 0)
        close(S->ppidfd);
    if (S->spare_sock >= 0 && S->spare_sock != hsock)
        close(S->spare_sock);
    const fpp__layout *l = &S->cfg.lay;
    const unsigned char *args = mmap(NULL, l->args_size, PROT_READ, MAP_SHARED, S->cfg.args_fd, 0);
    if (args == MAP_FAILED)
        _exit(FPP__EXIT_SETUP);
    madvise((void *)args, l->args_size, MADV_DONTFORK);
    close(S->cfg.args_fd);
    if (hsock >= 0) {
        /* A spare: wait for the slot the server hands us, holding nothing but the channel. */
        spawn_req r;
        if (recv_fd(hsock, &r, sizeof r, &memfd, 0) != 1 || memfd < 0)
            _exit(0);
        close(hsock);
        slot = r.slot;
    }
    if (slot >= l->nworkers)
        _exit(FPP__EXIT_SETUP);
    unsigned char *mem = mmap(NULL, l->slot_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (mem == MAP_FAILED)
        _exit(FPP__EXIT_SETUP);
    /* A copy made by a task's fork() gets neither mapping. */
    madvise(mem, l->slot_size, MADV_DONTFORK);
    close(memfd);

    atomic_store(&fpp__slot_block(mem)->pid, (uint32_t)getpid());
    fpp__wctx w = {
        .slot = mem,
        .args = args,
        .lay = *l,
        .slot_id = slot,
        .process = true,
        .max_tasks = S->cfg.max_tasks,
        .max_rss_kib = S->cfg.max_rss_kib,
        .token = fpp__proc_token(),
    };
    _exit(fpp__worker_run(&w, S->cfg.init_fn, S->cfg.init_arg, S->cfg.init_len));
}

/* Forks a worker (hsock >= 0: a spare waiting on it; else straight into slot with memfd). */
static pid_t fork_worker(fs_state *S, int hsock, uint32_t slot, int memfd)
{
    if (S->hooks.prepare)
        S->hooks.prepare();
    pid_t pid = fork();
    if (pid == 0) {
        if (S->hooks.child)
            S->hooks.child();
        worker_child(S, hsock, slot, memfd);
    }
    int e = errno;
    if (S->hooks.parent)
        S->hooks.parent();
    errno = e;
    return pid;
}

static void refill_spare(fs_state *S)
{
    if (S->spare > 0)
        return;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return;
    S->spare_sock = sv[0];
    pid_t pid = fork_worker(S, sv[1], 0, -1);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        S->spare_sock = -1;
        return;
    }
    S->spare = pid;
}

static void drop_spare(fs_state *S)
{
    if (S->spare_sock >= 0)
        close(S->spare_sock);
    S->spare_sock = -1;
    S->spare = 0;
}

static void spawn(fs_state *S, uint32_t slot, uint32_t gen, int memfd)
{
    if (slot >= S->cfg.lay.nworkers || memfd < 0) {
        failed(S, slot, gen, "spawn request", EINVAL);
        goto out;
    }
    pid_t pid = -1;
    if (S->spare > 0) {
        spawn_req r = {slot, gen};
        if (send_fd(S->spare_sock, &r, sizeof r, memfd) == 0)
            pid = S->spare;
        else
            kill(S->spare, SIGKILL); /* reaped as an unknown child */
        drop_spare(S);
    }
    if (pid < 0) {
        pid = fork_worker(S, -1, slot, memfd);
        if (pid < 0) {
            failed(S, slot, gen, "fork", errno);
            goto out;
        }
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0 && errno != ENOSYS) {
        int e = errno;
        kill(pid, SIGKILL);
        failed(S, slot, gen, "pidfd_open", e);
        goto out;
    }
    S->workers[slot].pid = pid;
    S->workers[slot].gen = gen;
    fpp__fs_msg m = {.op = FPP__FS_SPAWNED, .slot = slot, .gen = gen, .pid = pid};
    tell_parent(S, &m, pidfd);
    if (pidfd >= 0)
        close(pidfd);
out:
    if (memfd >= 0)
        close(memfd);
}

static void reap(fs_state *S)
{
    int status;
    struct rusage ru;
    pid_t pid;
    while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
        if (pid == S->spare) {
            drop_spare(S);
            continue;
        }
        for (uint32_t i = 0; i < S->cfg.lay.nworkers; i++) {
            if (S->workers[i].pid != pid)
                continue;
            fpp__fs_msg m = {.op = FPP__FS_DIED, .slot = i, .gen = S->workers[i].gen, .pid = pid,
                             .status = status, .maxrss_kib = ru.ru_maxrss};
            S->workers[i].pid = 0;
            tell_parent(S, &m, -1);
            break;
        }
        /* Anything else is a process a task left behind, re-parented to us: reaped. */
    }
}

/* Kills every child, and the children they leave, until none is left (or the grace ends). */
static void kill_all(fs_state *S)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)S->self);
    int64_t until = fpp__now_ns() + FPP__KILL_ALL_GRACE_NS;
    for (;;) {
        for (uint32_t i = 0; i < S->cfg.lay.nworkers; i++)
            if (S->workers[i].pid > 0)
                kill(S->workers[i].pid, SIGKILL);
        if (S->spare > 0)
            kill(S->spare, SIGKILL);
        FILE *f = fopen(path, "r");
        if (f) {
            long pid;
            while (fscanf(f, "%ld", &pid) == 1)
                kill((pid_t)pid, SIGKILL);
            fclose(f);
        }
        pid_t r;
        while ((r = waitpid(-1, NULL, WNOHANG)) > 0) {
            for (uint32_t i = 0; i < S->cfg.lay.nworkers; i++)
                if (S->workers[i].pid == r)
                    S->workers[i].pid = 0;
            if (r == S->spare)
                S->spare = 0;
        }
        if (r < 0 && errno == ECHILD)
            return;
        if (fpp__now_ns() > until)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void fs_main(fs_state *S) __attribute__((noreturn));
static void fs_main(fs_state *S)
{
    S->self = getpid();
    /* The parent's unwritten stdio buffers are not ours to write (a task's exit() would write
     * them again). __fpurge takes no lock. */
    __fpurge(stdout);
    __fpurge(stderr);
    setpgid(0, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "fpp-forkserver");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGINT, &sa, NULL); /* the parent decides about Ctrl-C, for the whole pool */
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_SETMASK, &chld, NULL);
    S->sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    S->ppidfd = (int)syscall(SYS_pidfd_open, S->parent, 0);
    if (getppid() != S->parent || S->sigfd < 0)
        _exit(0); /* the parent is already gone */
    madvise(S->mailbox, FPP__PAGE, MADV_DONTFORK);

    /* Descriptors: keep stdio and our own; with keep_fds, every descriptor the application
     * had, but never fpp's (other executors' memory and channels). */
    int keep[8] = {S->sock, S->cfg.args_fd, S->sigfd, S->ppidfd};
    int nkeep = S->ppidfd >= 0 ? 4 : 3;
    if (S->cfg.keep_fds) {
        for (int fd = 3; fd < 65536; fd++) {
            bool mine = false;
            for (int i = 0; i < nkeep; i++)
                mine = mine || keep[i] == fd;
            if (!mine && fpp__fd_is_ours(fd))
                close(fd);
        }
    } else {
        qsort(keep, (size_t)nkeep, sizeof keep[0], cmp_int);
        close_except(keep, nkeep, 3);
    }
    fpp__fd_forget_all(); /* what fpp opened in the parent is closed here, or not ours to close */
    /* Many workers mean many descriptors in flight: take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    for (;;) {
        refill_spare(S);
        struct pollfd pf[3] = {
            {.fd = S->sock, .events = POLLIN},
            {.fd = S->sigfd, .events = POLLIN},
            {.fd = S->ppidfd, .events = POLLIN},
        };
        int r = poll(pf, 3, S->ppidfd >= 0 ? -1 : FPP__FS_PARENT_CHECK_MS);
        if (r < 0 && errno != EINTR)
            break;
        if ((S->ppidfd >= 0 && (pf[2].revents & (POLLIN | POLLHUP))) ||
            (S->ppidfd < 0 && getppid() != S->parent))
            break; /* the parent died */
        if (pf[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(S->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
            reap(S);
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool quit = false;
            for (;;) {
                fpp__fs_msg m;
                int fd;
                int got = recv_fd(S->sock, &m, sizeof m, &fd, MSG_DONTWAIT);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EBADMSG)) {
                    quit = true; /* the parent closed its end */
                    break;
                }
                if (got < 0 && errno == EAGAIN)
                    break;
                if (got < 0)
                    continue;
                if (m.op == FPP__FS_QUIT) {
                    if (fd >= 0)
                        close(fd);
                    quit = true;
                    break;
                }
                if (m.op == FPP__FS_SPAWN)
                    spawn(S, m.slot, m.gen, fd);
                else if (fd >= 0)
                    close(fd);
            }
            if (quit)
                break;
        }
    }
    kill_all(S);
    _exit(0);
}

/* ------------------------------------------------------------ parent side */

int fpp__fs_start(fpp__fs *fs, const fpp__fs_config *cfg)
{
    memset(fs, 0, sizeof *fs);
    fs->pid = -1;
    fs->pidfd = fs->sock = -1;
    fs_state S;
    memset(&S, 0, sizeof S);
    S.cfg = *cfg;
    S.parent = getpid();
    S.spare_sock = -1;
    S.hooks = fpp__fork_hooks_get();
    S.workers = fpp__calloc(cfg->lay.nworkers, sizeof *S.workers);
    fpp__ec *mb = mmap(NULL, FPP__PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int sv[2] = {-1, -1};
    int rc = 0;
    if (!S.workers) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    if (mb == MAP_FAILED) {
        mb = NULL;
        rc = fpp__sys_error("mmap", "fork server mailbox");
        goto fail;
    }
    S.mailbox = mb;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = fpp__sys_error("socketpair", "fork server");
        goto fail;
    }
    S.sock = sv[1];
    if (S.hooks.prepare)
        S.hooks.prepare();
    pid_t pid = fork();
    if (pid == 0) {
        if (S.hooks.child)
            S.hooks.child();
        close(sv[0]);
        fs_main(&S);
    }
    int e = errno;
    if (S.hooks.parent)
        S.hooks.parent();
    close(sv[1]);
    sv[1] = -1;
    if (pid < 0) {
        errno = e;
        rc = fpp__sys_error("fork", "fork server");
        goto fail;
    }
    fpp__free(S.workers);
    madvise(mb, FPP__PAGE, MADV_DONTFORK);
    fs->pid = pid;
    fs->mailbox = mb;
    fs->sock = sv[0];
    fpp__fd_own(fs->sock);
    fcntl(fs->sock, F_SETFL, fcntl(fs->sock, F_GETFL) | O_NONBLOCK);
    fs->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fs->pidfd >= 0)
        fpp__fd_own(fs->pidfd);
    else if (errno != ENOSYS)
        fpp__sys_error("pidfd_open", "fork server"); /* then watched with waitpid */
    return 0;
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (mb)
        munmap(mb, FPP__PAGE);
    fpp__free(S.workers);
    return rc;
}

int fpp__fs_spawn(fpp__fs *fs, uint32_t slot, uint32_t gen, int memfd)
{
    fpp__fs_msg m = {.op = FPP__FS_SPAWN, .slot = slot, .gen = gen};
    if (send_fd(fs->sock, &m, sizeof m, memfd) != 0)
        return fpp__sys_error("sendmsg", "to the fork server");
    return 0;
}

int fpp__fs_recv(fpp__fs *fs, fpp__fs_msg *m, int *pidfd)
{
    *pidfd = -1;
    if (fs->sock < 0)
        return -1;
    int got = recv_fd(fs->sock, m, sizeof *m, pidfd, MSG_DONTWAIT);
    if (got == 1) {
        if (*pidfd >= 0)
            fpp__fd_own(*pidfd);
        return 1;
    }
    if (got < 0 && (errno == EAGAIN || errno == EBADMSG))
        return 0;
    return -1;
}

bool fpp__fs_alive(fpp__fs *fs)
{
    if (fs->pid <= 0)
        return false;
    if (fs->pidfd >= 0) {
        struct pollfd pf = {.fd = fs->pidfd, .events = POLLIN};
        return poll(&pf, 1, 0) == 0;
    }
    return waitpid(fs->pid, NULL, WNOHANG) == 0;
}

void fpp__fs_kill(fpp__fs *fs)
{
    if (fs->pid <= 0)
        return;
    int e = fpp__kill_child(fs->pidfd, fs->pid);
    if (e)
        fpp__log(FPP_LOG_ERROR, "process executor: cannot kill the fork server (pid %ld): %s", (long)fs->pid,
                 strerror(e));
}

void fpp__fs_stop(fpp__fs *fs, int64_t grace_ns, bool owner)
{
    if (fs->pid > 0 && owner) {
        fpp__fs_msg m = {.op = FPP__FS_QUIT};
        send_fd(fs->sock, &m, sizeof m, -1);
        int64_t until = fpp__now_ns() + grace_ns;
        bool killed = false;
        for (;;) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            int r = waitid(P_PID, (id_t)fs->pid, &si, WEXITED | WNOHANG);
            if (r < 0 || si.si_pid == fs->pid)
                break; /* reaped (or reaped by someone else: ECHILD) */
            if (!killed && fpp__now_ns() > until) {
                /* Stopped or stuck: its workers die with it (their death signal). */
                fpp__fs_kill(fs);
                killed = true;
            }
            if (fs->pidfd >= 0) {
                struct pollfd pf = {.fd = fs->pidfd, .events = POLLIN};
                poll(&pf, 1, 10);
            } else {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
        }
    }
    if (fs->sock >= 0)
        fpp__fd_close(fs->sock);
    if (fs->pidfd >= 0)
        fpp__fd_close(fs->pidfd);
    if (fs->mailbox)
        munmap(fs->mailbox, FPP__PAGE);
    memset(fs, 0, sizeof *fs);
    fs->pid = -1;
    fs->sock = fs->pidfd = -1;
}
