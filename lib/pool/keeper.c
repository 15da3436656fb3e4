/* pool/keeper.c: the keeper, the process that holds the program as it was when the executor was
 * created, and forks the fork server (pool/forkserver.c) from that image: the first one, and
 * every replacement after a server dies, is stopped for good or is replaced because its workers
 * cannot start. So a replaced server's workers see the same program as the first ones (the
 * same snapshot, no lock an application thread held at a later moment, nothing a killed
 * server's leftovers changed). And the parent's side of the keeper: starting it (with the first
 * server), asking it for a new server, and stopping both.
 *
 * The keeper is forked once, from the thread creating the executor (fork hooks around it); it
 * is single-threaded and runs no task code. In a poll loop on its channel to the parent, a
 * signalfd for SIGCHLD and a pidfd of the parent:
 *   NEW                               kill the current server if it lives; fork a new one (fork
 *                                     hooks around it); answer SERVER with its pid, the
 *                                     parent's end of the new server's channel and its pidfd,
 *                                     or FAILED with the errno of the fork
 *   SIGCHLD                           reap; a child that is not the current server is what a
 *                                     dead server's tasks left behind (re-parented to us, a
 *                                     child subreaper): killed
 *   QUIT, EOF, or the parent's death  kill everything, until nothing is left, and exit
 * Its parent-death signal is SIGCONT (SIGKILL would fire when the creating thread ends): a
 * keeper a task stopped is continued when the program ends, and then sees the parent's pidfd.
 * The server dies with the keeper (its death signal is SIGKILL, even a stopped server), and
 * the workers with the server.
 *
 * The keeper closes what the program had open (all but stdio; with keep_fds, fpp's own only),
 * raises its descriptor limit to the hard one, and then saves its state (pool/proc.c: limits,
 * priority, CPUs), which every server and every worker is given back when it starts.
 *
 * A task can find and kill the keeper (same user): the next replacement then forks a new
 * keeper from the program as it is at that moment, with a log line saying so. */
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
#include "pool/pool_int.h"

enum { K_NEW = 1, K_QUIT, K_SERVER, K_FAILED };
typedef struct keeper_msg { uint32_t op; int32_t pid, err; } keeper_msg;

typedef struct keeper {
    fpp__fs_config cfg;
    int sock, sigfd, ppidfd;
    pid_t parent, self, server;
    fpp__ec *mailbox;
    fpp__fork_hooks hooks;
    fpp__proc_state state;
} keeper;

/* ------------------------------------------------------------ the keeper */

static void answer(keeper *K, uint32_t op, pid_t pid, int err, const int *fds, int nfds)
{
    keeper_msg m = {.op = op, .pid = pid, .err = err};
    fpp__chan_send(K->sock, &m, sizeof m, fds, nfds);
}

static void new_server(keeper *K)
{
    if (K->server > 0)
        kill(K->server, SIGKILL); /* our child, not reaped yet: its pid is its own */
    K->server = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        answer(K, K_FAILED, 0, errno, NULL, 0);
        return;
    }
    if (K->hooks.prepare)
        K->hooks.prepare();
    pid_t pid = fork();
    if (pid == 0) {
        if (K->hooks.child)
            K->hooks.child();
        fpp__server_args a = {
            .cfg = &K->cfg, .sock = sv[1], .parent = K->parent, .keeper = K->self, .mailbox = K->mailbox,
            .hooks = K->hooks, .state = &K->state,
            .close = {K->sock, K->sigfd, K->ppidfd, sv[0]}, .nclose = 4,
        };
        fpp__server_main(&a);
    }
    int e = errno;
    if (K->hooks.parent)
        K->hooks.parent();
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        answer(K, K_FAILED, 0, e, NULL, 0);
        return;
    }
    K->server = pid;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* before any reap: the pid is its own */
    int fds[2] = {sv[0], pidfd};
    answer(K, K_SERVER, pid, 0, fds, pidfd >= 0 ? 2 : 1);
    close(sv[0]);
    if (pidfd >= 0)
        close(pidfd);
}

/* Reaps; kills every child that is not the current server (a dead server's leftovers). */
static void reap(keeper *K)
{
    pid_t pid;
    while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
        if (pid == K->server)
            K->server = 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)K->self);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    long child;
    while (fscanf(f, "%ld", &child) == 1)
        if ((pid_t)child != K->server)
            kill((pid_t)child, SIGKILL);
    fclose(f);
}

static void keeper_main(keeper *K) __attribute__((noreturn));
static void keeper_main(keeper *K)
{
    K->self = getpid();
    /* The parent's unwritten stdio buffers are not ours to write (a task's exit() would write
     * them again). __fpurge takes no lock. */
    __fpurge(stdout);
    __fpurge(stderr);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGCONT);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "fpp-keeper");
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
    K->sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    K->ppidfd = (int)syscall(SYS_pidfd_open, K->parent, 0);
    if (getppid() != K->parent || K->sigfd < 0)
        _exit(0); /* the parent is already gone */

    /* Descriptors: keep stdio and our own; with keep_fds, every descriptor the application
     * had, but never fpp's (other executors' memory and channels). */
    int keep[4] = {K->sock, K->cfg.args_fd, K->sigfd, K->ppidfd};
    int nkeep = K->ppidfd >= 0 ? 4 : 3;
    if (K->cfg.keep_fds)
        fpp__close_fpp_fds(keep, nkeep);
    else
        fpp__close_except(keep, nkeep, 3);
    fpp__fd_forget_all(); /* what fpp opened in the parent is closed here, or not ours to close */
    /* Many workers mean many descriptors in flight: take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    fpp__proc_state_save(&K->state);

    for (;;) {
        struct pollfd pf[3] = {
            {.fd = K->sock, .events = POLLIN},
            {.fd = K->sigfd, .events = POLLIN},
            {.fd = K->ppidfd, .events = POLLIN},
        };
        int r = poll(pf, 3, K->ppidfd >= 0 ? -1 : FPP__FS_PARENT_CHECK_MS);
        if (r < 0 && errno != EINTR)
            break;
        if ((K->ppidfd >= 0 && (pf[2].revents & (POLLIN | POLLHUP))) ||
            (K->ppidfd < 0 && getppid() != K->parent))
            break; /* the parent died */
        if (pf[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(K->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
            reap(K);
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            keeper_msg m;
            int fd;
            int got = fpp__chan_recv(K->sock, &m, sizeof m, &fd, 1, MSG_DONTWAIT);
            if (fd >= 0)
                close(fd);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EBADMSG) || (got == 1 && m.op == K_QUIT))
                break;
            if (got == 1 && m.op == K_NEW)
                new_server(K);
        }
    }
    fpp__kill_all_children(K->self, FPP__KILL_ALL_GRACE_NS, NULL, NULL);
    _exit(0);
}

/* ------------------------------------------------------------ parent side */

/* Forks a keeper from the calling thread (fork hooks around it). 0 or FPP_ESYS. */
static int fork_keeper(fpp__fs *fs)
{
    keeper K;
    memset(&K, 0, sizeof K);
    K.cfg = fs->cfg;
    K.parent = getpid();
    K.mailbox = fs->mailbox;
    K.hooks = fpp__fork_hooks_get();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return fpp__sys_error("socketpair", "keeper");
    K.sock = sv[1];
    if (K.hooks.prepare)
        K.hooks.prepare();
    pid_t pid = fork();
    if (pid == 0) {
        fpp__pool_process_mark(); /* before any hook: no MPI call from here down (core/owner.c) */
        if (K.hooks.child)
            K.hooks.child();
        close(sv[0]);
        keeper_main(&K);
    }
    int e = errno;
    if (K.hooks.parent)
        K.hooks.parent();
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        errno = e;
        return fpp__sys_error("fork", "keeper");
    }
    fs->kpid = pid;
    fs->ksock = sv[0];
    fpp__fd_own(fs->ksock);
    fs->kpidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fs->kpidfd >= 0)
        fpp__fd_own(fs->kpidfd);
    return 0;
}

/* Asks the keeper for a new server and waits for it (at most timeout_ns). 0: fs has it;
 * FPP_ESYS: the keeper could not fork (errno says why; the caller logs it); -1: the keeper is
 * gone or does not answer. */
static int ask_keeper(fpp__fs *fs, int64_t timeout_ns)
{
    keeper_msg m = {.op = K_NEW};
    if (fpp__chan_send(fs->ksock, &m, sizeof m, NULL, 0) != 0)
        return -1;
    int64_t until = fpp__now_ns() + timeout_ns;
    for (;;) {
        int64_t left = until - fpp__now_ns();
        if (left <= 0)
            return -1;
        struct pollfd pf = {.fd = fs->ksock, .events = POLLIN};
        int r = poll(&pf, 1, (int)FPP__MIN(left / 1000000 + 1, (int64_t)1000));
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        int fds[2];
        int got = fpp__chan_recv(fs->ksock, &m, sizeof m, fds, 2, MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EBADMSG))
            return -1;
        if (got != 1)
            continue;
        if (m.op == K_FAILED) {
            for (int i = 0; i < 2; i++)
                if (fds[i] >= 0)
                    close(fds[i]);
            errno = m.err;
            return FPP_ESYS;
        }
        if (m.op != K_SERVER || fds[0] < 0) {
            for (int i = 0; i < 2; i++)
                if (fds[i] >= 0)
                    close(fds[i]);
            continue;
        }
        fs->pid = m.pid;
        fs->sock = fds[0];
        fs->pidfd = fds[1];
        fpp__fd_own(fs->sock);
        if (fs->pidfd >= 0)
            fpp__fd_own(fs->pidfd);
        fcntl(fs->sock, F_SETFL, fcntl(fs->sock, F_GETFL) | O_NONBLOCK);
        fs->seen = fpp__ec_count(fs->mailbox);
        return 0;
    }
}

/* Kills the keeper (and so the server and every worker) and reaps it. */
static void end_keeper(fpp__fs *fs)
{
    if (fs->kpid > 0) {
        int e = fpp__kill_child(fs->kpidfd, fs->kpid);
        if (e)
            fpp__log(FPP_LOG_ERROR, "process executor: cannot kill the keeper (pid %ld): %s", (long)fs->kpid,
                     strerror(e));
        waitpid(fs->kpid, NULL, 0);
    }
    if (fs->ksock >= 0)
        fpp__fd_close(fs->ksock);
    if (fs->kpidfd >= 0)
        fpp__fd_close(fs->kpidfd);
    fs->kpid = -1;
    fs->ksock = fs->kpidfd = -1;
}

/* Forgets the current server (killed first: it may be stuck or stopped). */
static void drop_server(fpp__fs *fs)
{
    fpp__fs_kill(fs);
    if (fs->sock >= 0)
        fpp__fd_close(fs->sock);
    if (fs->pidfd >= 0)
        fpp__fd_close(fs->pidfd);
    fs->pid = -1;
    fs->sock = fs->pidfd = -1;
}

int fpp__fs_start(fpp__fs *fs, const fpp__fs_config *cfg)
{
    memset(fs, 0, sizeof *fs);
    fs->pid = fs->kpid = -1;
    fs->pidfd = fs->sock = fs->kpidfd = fs->ksock = -1;
    fs->cfg = *cfg;
    fpp__ec *mb = mmap(NULL, FPP__PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mb == MAP_FAILED)
        return fpp__sys_error("mmap", "fork server mailbox");
    fs->mailbox = mb;
    int rc = fork_keeper(fs);
    if (rc == 0) {
        /* Only the keeper and the servers it forks share the mailbox: no later fork of ours. */
        madvise(mb, FPP__PAGE, MADV_DONTFORK);
        rc = ask_keeper(fs, FPP__START_WAIT_NS);
        if (rc == FPP_ESYS)
            fpp__sys_error("fork", "fork server");
        else if (rc == -1)
            rc = fpp__sys_error("start", "the keeper did not answer");
    }
    if (rc) {
        fpp__fs_stop(fs, 0, true);
        return rc;
    }
    return 0;
}

/* 0, or FPP_ESYS with errno saying why (not logged: the caller's start breaker says it, at most
 * once a second). */
int fpp__fs_replace(fpp__fs *fs)
{
    drop_server(fs);
    int rc = fs->kpid > 0 ? ask_keeper(fs, FPP__FS_STALL_NS) : -1;
    if (rc != -1)
        return rc;
    fpp__log(FPP_LOG_WARN, "process executor: the keeper (pid %ld) is gone or does not answer; a new one is forked "
             "from the program as it is now (its workers see this later state)", (long)fs->kpid);
    end_keeper(fs);
    rc = fork_keeper(fs);
    if (rc == 0) {
        rc = ask_keeper(fs, FPP__START_WAIT_NS);
        if (rc == -1) {
            errno = ETIMEDOUT;
            rc = FPP_ESYS;
        }
    }
    return rc;
}

void fpp__fs_stop(fpp__fs *fs, int64_t grace_ns, bool owner)
{
    if (owner) {
        /* Both are told, then both are waited for: the server kills and reaps its workers and
         * what they left; the keeper what its servers left. */
        fpp__fs_msg q = {.op = FPP__FS_QUIT};
        if (fs->sock >= 0)
            fpp__chan_send(fs->sock, &q, sizeof q, NULL, 0);
        keeper_msg k = {.op = K_QUIT};
        if (fs->ksock >= 0)
            fpp__chan_send(fs->ksock, &k, sizeof k, NULL, 0);
        int64_t until = fpp__now_ns() + grace_ns;
        bool killed = false;
        while (fs->kpid > 0) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            int r = waitid(P_PID, (id_t)fs->kpid, &si, WEXITED | WNOHANG);
            if (r < 0 || si.si_pid == fs->kpid) {
                fs->kpid = -1; /* reaped (or reaped by someone else: ECHILD) */
                break;
            }
            if (!killed && fpp__now_ns() > until) {
                /* Stopped or stuck: the server and the workers die with it (death signals). */
                fpp__kill_child(fs->kpidfd, fs->kpid);
                killed = true;
            }
            if (fs->kpidfd >= 0) {
                struct pollfd pf = {.fd = fs->kpidfd, .events = POLLIN};
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
    if (fs->ksock >= 0)
        fpp__fd_close(fs->ksock);
    if (fs->kpidfd >= 0)
        fpp__fd_close(fs->kpidfd);
    if (fs->mailbox)
        munmap(fs->mailbox, FPP__PAGE);
    memset(fs, 0, sizeof *fs);
    fs->pid = fs->kpid = -1;
    fs->sock = fs->pidfd = fs->ksock = fs->kpidfd = -1;
}
