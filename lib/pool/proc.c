/* pool/proc.c: what the pool's own processes (the keeper, the fork server, the workers) share:
 * passing descriptors over their SOCK_SEQPACKET channels, closing the descriptors that are not
 * theirs, the creation-time process state each hands on to the processes it forks (resource
 * limits, priority, CPU affinity: a task may change them in its neighbours with prlimit,
 * setpriority or sched_setaffinity, never in the processes forked after), and killing every
 * child they have, until none is left. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool/pool_int.h"

/* ------------------------------------------------------------ channels */

int fpp__chan_send(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 4)]; } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? 0 : -1;
}

int fpp__chan_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int flags)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 8)]; } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
    for (int i = 0; i < maxfds; i++)
        fds[i] = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < maxfds)
                fds[got++] = fd;
            else
                close(fd); /* more than we asked for */
        }
    }
    if ((size_t)n != len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < got; i++) {
            close(fds[i]);
            fds[i] = -1;
        }
        errno = EBADMSG;
        return -1;
    }
    return 1;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

void fpp__close_except(int *keep, int nkeep, int from)
{
    qsort(keep, (size_t)nkeep, sizeof keep[0], cmp_int);
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

void fpp__close_fpp_fds(const int *keep, int nkeep)
{
    for (int fd = 3; fd < 65536; fd++) {
        bool mine = false;
        for (int i = 0; i < nkeep; i++)
            mine = mine || keep[i] == fd;
        if (!mine && fpp__fd_is_ours(fd))
            close(fd);
    }
}

/* ------------------------------------------------------- the state handed on */

void fpp__proc_state_save(fpp__proc_state *s)
{
    memset(s, 0, sizeof *s);
    for (int r = 0; r < FPP__RLIMITS; r++)
        s->have[r] = getrlimit((__rlimit_resource_t)r, &s->lim[r]) == 0;
    errno = 0;
    s->nice = getpriority(PRIO_PROCESS, 0);
    s->have_nice = errno == 0;
    s->have_cpus = sched_getaffinity(0, sizeof s->cpus, &s->cpus) == 0;
}

int fpp__proc_state_apply(const fpp__proc_state *s)
{
    int failed = 0;
    for (int r = 0; r < FPP__RLIMITS; r++) {
        if (!s->have[r])
            continue;
        struct rlimit now;
        if (getrlimit((__rlimit_resource_t)r, &now) == 0 && now.rlim_cur == s->lim[r].rlim_cur &&
            now.rlim_max == s->lim[r].rlim_max)
            continue;
        /* Raising a hard limit back needs CAP_SYS_RESOURCE: without it, the soft one is put
         * back as far as the hard one allows. */
        if (setrlimit((__rlimit_resource_t)r, &s->lim[r]) != 0) {
            struct rlimit cap = {FPP__MIN(s->lim[r].rlim_cur, now.rlim_max), now.rlim_max};
            setrlimit((__rlimit_resource_t)r, &cap);
            failed++;
        }
    }
    if (s->have_nice && getpriority(PRIO_PROCESS, 0) != s->nice && setpriority(PRIO_PROCESS, 0, s->nice) != 0)
        failed++;
    if (s->have_cpus && sched_setaffinity(0, sizeof s->cpus, &s->cpus) != 0)
        failed++;
    return failed;
}

/* ------------------------------------------------------------- killing */

void fpp__kill_all_children(pid_t self, int64_t grace_ns, void (*reaped)(void *arg, pid_t pid), void *arg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)self);
    int64_t until = fpp__now_ns() + grace_ns;
    for (;;) {
        FILE *f = fopen(path, "r");
        if (f) {
            long pid;
            while (fscanf(f, "%ld", &pid) == 1)
                kill((pid_t)pid, SIGKILL); /* our own children: not reaped yet, so not reused */
            fclose(f);
        }
        pid_t r;
        while ((r = waitpid(-1, NULL, WNOHANG)) > 0)
            if (reaped)
                reaped(arg, r);
        if (r < 0 && errno == ECHILD)
            return;
        if (fpp__now_ns() > until)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}
