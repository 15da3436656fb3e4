/* pool/forkserver.c: the fork server, the one process every worker of a process executor is
 * forked from, and the parent's side of its channel. The server is forked by the keeper
 * (pool/keeper.c), which is forked from the program once, when the executor is created, in the
 * thread that creates it: so every worker sees the program as it was then, the first ones and
 * every replacement alike (a replaced server is forked again from the keeper); a parent with
 * many threads is forked once, never again; and respawning costs the same whatever the parent
 * allocates afterwards.
 *
 * What it does, single-threaded, in a poll loop on its channel to the parent (a SOCK_SEQPACKET
 * socketpair), a signalfd for SIGCHLD, and a pidfd of the parent:
 *   SPAWN slot gen + the slot's memfd   hand the pre-forked spare its slot, over the spare's
 *                                       own socketpair (a channel no worker can write), or
 *                                       fork a worker directly; answer SPAWNED with its pid
 *                                       and a pidfd (so the parent can kill it without a round
 *                                       trip), or FAILED naming the call; fork the next spare
 *   PING                                answer PONG: the parent's heartbeat, so that a server
 *                                       stopped or stuck is seen even when nothing is asked
 *   SIGCHLD                             reap; answer DIED slot gen pid status max-RSS
 *   QUIT, EOF, or the parent's death    kill everything it started, and everything they left
 * After each message it posts the mailbox, a shared page the parent checks with one load per
 * poll and sleeps on (an event count, core/ec.h).
 *
 * Nothing outlives the pool: the server is a child subreaper (PR_SET_CHILD_SUBREAPER), so a
 * process a task leaves behind (a fork, a daemon()) is re-parented to it when its own parent
 * dies, and it kills and reaps every child it has, repeatedly, until none is left. It watches
 * the parent's pidfd, which no task can switch off. It dies with its keeper (PR_SET_PDEATHSIG:
 * SIGKILL, which ends even a stopped process), and workers die with it the same way; the
 * keeper ends when the parent does (pool/keeper.c). So a server a task stopped still goes with
 * the program, and the parent, which pings it while tasks run, continues a stopped server
 * (SIGCONT) and replaces one that stays silent.
 *
 * Process groups: the server, the keeper and every worker each make a group of their own. A
 * terminal's Ctrl-C (sent to the foreground group) reaches none of them: the parent decides
 * about SIGINT. And a task's kill(0, sig) or killpg(getpgrp(), sig) reaches its own worker (and
 * what it started) alone, never the server or the other workers.
 *
 * Workers: a worker maps its own slot memory (read-write) and the argument arena (read-only),
 * both MADV_DONTFORK, and holds no other descriptor than stdio (and, with keep_fds, the
 * application's descriptors open at creation). fpp's own descriptors, other executors'
 * included, are closed in the keeper even with keep_fds (core/owner.c keeps the list). Each
 * worker starts with the resource limits, priority and CPU affinity the program had when the
 * executor was created (pool/proc.c), whatever a task did to the server's since. */
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
#include "pool/pool_int.h"

typedef struct spawn_req { uint32_t slot, gen; } spawn_req;

typedef struct fs_state {
    fpp__fs_config cfg;
    int sock, sigfd, ppidfd;
    pid_t parent, self;
    fpp__ec *mailbox;
    fpp__fork_hooks hooks;
    const fpp__proc_state *state; /* what every worker starts with */
    struct { pid_t pid; uint32_t gen; } *workers;
    pid_t spare;
    int spare_sock;
} fs_state;

/* ------------------------------------------------------------------ helpers */

static int send_fd(int sock, const void *buf, size_t len, int fd)
{
    return fpp__chan_send(sock, buf, len, &fd, fd >= 0 ? 1 : 0);
}

/* One message of exactly len bytes and at most one descriptor: 1, 0 end of channel, -1 error
 * (EAGAIN: none now; EBADMSG: malformed, dropped). */
static int recv_fd(int sock, void *buf, size_t len, int *fd, int flags)
{
    return fpp__chan_recv(sock, buf, len, fd, 1, flags);
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
    setpgid(0, 0); /* a group of its own: a task's kill(0, sig) reaches its own worker alone */
    fpp__proc_state_apply(S->state); /* the program's limits, priority and CPUs at creation */
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

static void reaped(void *arg, pid_t pid)
{
    fs_state *S = arg;
    for (uint32_t i = 0; i < S->cfg.lay.nworkers; i++)
        if (S->workers[i].pid == pid)
            S->workers[i].pid = 0;
    if (pid == S->spare)
        S->spare = 0;
}

void fpp__server_main(const fpp__server_args *a)
{
    /* Die with the keeper (which runs no task code, so nothing clears this in it). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != a->keeper)
        _exit(0);
    fs_state S;
    memset(&S, 0, sizeof S);
    S.cfg = *a->cfg;
    S.sock = a->sock;
    S.parent = a->parent;
    S.self = getpid();
    S.mailbox = a->mailbox;
    S.hooks = a->hooks;
    S.state = a->state;
    S.spare_sock = -1;
    S.workers = calloc(S.cfg.lay.nworkers, sizeof *S.workers);
    /* The keeper's descriptors are not ours; its state is (a task may have changed the
     * keeper's limits: the creation-time ones are put back). */
    for (int i = 0; i < a->nclose; i++)
        close(a->close[i]);
    setpgid(0, 0);
    fpp__proc_state_apply(S.state);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "fpp-forkserver");
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_SETMASK, &chld, NULL);
    S.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    S.ppidfd = (int)syscall(SYS_pidfd_open, S.parent, 0);
    if (!S.workers || S.sigfd < 0 || (S.ppidfd < 0 && kill(S.parent, 0) != 0))
        _exit(0); /* the parent is already gone, or nothing works */
    madvise(S.mailbox, FPP__PAGE, MADV_DONTFORK); /* not the workers' */

    for (;;) {
        refill_spare(&S);
        struct pollfd pf[3] = {
            {.fd = S.sock, .events = POLLIN},
            {.fd = S.sigfd, .events = POLLIN},
            {.fd = S.ppidfd, .events = POLLIN},
        };
        int r = poll(pf, 3, S.ppidfd >= 0 ? -1 : FPP__FS_PARENT_CHECK_MS);
        if (r < 0 && errno != EINTR)
            break;
        if ((S.ppidfd >= 0 && (pf[2].revents & (POLLIN | POLLHUP))) || (S.ppidfd < 0 && kill(S.parent, 0) != 0))
            break; /* the parent died */
        if (pf[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(S.sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
            reap(&S);
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool quit = false;
            for (;;) {
                fpp__fs_msg m;
                int fd;
                int got = recv_fd(S.sock, &m, sizeof m, &fd, MSG_DONTWAIT);
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
                if (m.op == FPP__FS_SPAWN) {
                    spawn(&S, m.slot, m.gen, fd);
                } else {
                    if (fd >= 0)
                        close(fd);
                    if (m.op == FPP__FS_PING) {
                        fpp__fs_msg pong = {.op = FPP__FS_PONG, .gen = m.gen};
                        tell_parent(&S, &pong, -1);
                    }
                }
            }
            if (quit)
                break;
        }
    }
    fpp__kill_all_children(S.self, FPP__KILL_ALL_GRACE_NS, reaped, &S);
    _exit(0);
}

/* ------------------------------------------------------------ parent side */

int fpp__fs_spawn(fpp__fs *fs, uint32_t slot, uint32_t gen, int memfd)
{
    fpp__fs_msg m = {.op = FPP__FS_SPAWN, .slot = slot, .gen = gen};
    if (fs->sock < 0)
        return FPP_ESYS; /* no server since a replacement failed (logged then): not a sendmsg error */
    if (send_fd(fs->sock, &m, sizeof m, memfd) != 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return 1; /* the channel is full (hundreds of requests the server has not read yet) */
        return fpp__sys_error("sendmsg", "to the fork server");
    }
    return 0;
}

int fpp__fs_ping(fpp__fs *fs, uint32_t seq)
{
    fpp__fs_msg m = {.op = FPP__FS_PING, .gen = seq};
    return send_fd(fs->sock, &m, sizeof m, -1) == 0 ? 0 : -1;
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
    return kill(fs->pid, 0) == 0;
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

/* The state letter of pid in /proc (R, S, D, T stopped, t traced, Z...), or 0. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold anything: the state follows the last ')' */
    return p && p[1] == ' ' ? p[2] : 0;
}

bool fpp__fs_continue_if_stopped(fpp__fs *fs)
{
    bool any = false;
    pid_t pids[2] = {fs->pid, fs->kpid};
    int pidfds[2] = {fs->pidfd, fs->kpidfd};
    for (int i = 0; i < 2; i++) {
        if (pids[i] <= 0 || proc_state(pids[i]) != 'T')
            continue;
        if (pidfds[i] >= 0 ? syscall(SYS_pidfd_send_signal, pidfds[i], SIGCONT, NULL, 0) == 0
                           : kill(pids[i], SIGCONT) == 0) {
            fpp__log(FPP_LOG_WARN, "process executor: the %s (pid %ld) was stopped (a task's SIGSTOP?); continued",
                     i ? "keeper" : "fork server", (long)pids[i]);
            any = true;
        }
    }
    return any;
}
