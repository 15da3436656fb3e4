/* process_executor.c: the crash-isolated executor. Workers are processes forked from this one
 * by a supervisor thread, which also reaps them and kills them on request.
 *
 * Why a thread does the forking: PR_SET_PDEATHSIG fires when the *thread* that forked a child
 * ends, so workers forked by the supervisor (which lives exactly as long as the executor) die
 * with the executor or the process, and not when some caller thread ends. The supervisor
 * holds a pidfd per worker and sleeps in poll() on them and on an eventfd for commands; a
 * pidfd lets it signal a worker without racing pid reuse, since it reaps the worker itself.
 * Where pidfd_open does not exist (kernels before 5.3, valgrind), it polls wait4(WNOHANG)
 * every 2 ms instead; kill() is just as safe there, since only the supervisor reaps.
 *
 * Threads and what they own:
 *   supervisor   forks, pidfds, kill, wait4; never touches the pool or tasks
 *   caller       everything else (the pool, tasks, slots' parent-side state)
 * They talk through two small queues under `mu` (a leaf lock) plus the eventfd (caller ->
 * supervisor) and the pool's parent_wake event count (supervisor -> caller).
 *
 * Invariant: a slot is EMPTY, SPAWNING or ALIVE; a dead worker's slot is recovered
 * (fpp__pool_recover) before a new worker is forked into it, so the new worker starts from a
 * block and arena position the parent vouches for.
 *
 * Respawn is a hand-off, not a fork: the supervisor keeps one spare worker forked in advance,
 * sleeping on the header's spare_pid futex. A replacement is that spare told its slot
 * (about the cost of a wake-up), and the next spare is forked afterwards, off the critical
 * path. Forking a parent that holds a lot of memory costs milliseconds; handing off does not. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpp_internal.h"

enum { CMD_SPAWN = 1, CMD_KILL, CMD_QUIT };
enum { EV_SPAWNED = 1, EV_SPAWN_FAILED, EV_DIED };
enum { SL_EMPTY = 0, SL_SPAWNING, SL_ALIVE };

typedef struct cmd { int op; uint32_t slot, gen; } cmd;
typedef struct event { int op; uint32_t slot, gen; pid_t pid; int status, err; long maxrss_kib; } event;
typedef struct queue { void *items; size_t size, cap, head, n; } queue;

typedef struct sup_slot { pid_t pid; int pidfd; uint32_t gen; } sup_slot;
#define NO_SLOT UINT32_MAX
typedef struct par_slot {
    pid_t pid;
    uint32_t gen;
    int state;
    bool killed;       /* we asked for its death (cancel or timeout) */
    bool timed_out;
} par_slot;

typedef struct proc {
    fpp__pool pool;
    fpp_executor *ex;
    pthread_t sup;
    bool sup_started;
    int evfd;
    pthread_mutex_t mu;
    queue cmds, events;   /* under mu */
    _Atomic int pending;  /* events pushed and not yet taken: lets a poll skip the lock */
    sup_slot *ss;         /* the supervisor's */
    sup_slot spare;       /* the supervisor's: a forked worker waiting for a slot, or pid 0 */
    par_slot *ps;         /* the caller's */
    int alive, killing;
    int64_t next_spawn_ns;
    int64_t last_progress_ns; /* for the watchdog */
    pid_t parent_pid;
    _Atomic bool stopping; /* read by the supervisor */
    bool paused;           /* after Ctrl-C: no worker until the next dispatch */
} proc;

/* ------------------------------------------------------------------ queues */

static int q_init(queue *q, size_t size, size_t cap)
{
    q->items = fpp__calloc(cap, size);
    q->size = size;
    q->cap = cap;
    q->head = q->n = 0;
    return q->items ? 0 : FPP_ENOMEM;
}

static bool q_push(queue *q, const void *item)
{
    if (q->n == q->cap)
        return false;
    memcpy((char *)q->items + ((q->head + q->n) % q->cap) * q->size, item, q->size);
    q->n++;
    return true;
}

static bool q_pop(queue *q, void *item)
{
    if (!q->n)
        return false;
    memcpy(item, (char *)q->items + q->head * q->size, q->size);
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return true;
}

static void send_cmd(proc *pr, int op, uint32_t slot, uint32_t gen)
{
    cmd c = {op, slot, gen};
    pthread_mutex_lock(&pr->mu);
    bool ok = q_push(&pr->cmds, &c);
    pthread_mutex_unlock(&pr->mu);
    if (!ok)
        fpp__log(FPP_LOG_ERROR, "process executor: supervisor command queue full (command %d dropped)", op);
    uint64_t one = 1;
    ssize_t n = write(pr->evfd, &one, sizeof one);
    (void)n;
}

/* ------------------------------------------------------------ the supervisor */

static void post_event(proc *pr, const event *e)
{
    pthread_mutex_lock(&pr->mu);
    bool ok = q_push(&pr->events, e);
    pthread_mutex_unlock(&pr->mu);
    atomic_fetch_add(&pr->pending, 1);
    (void)ok; /* sized for two events per slot, which is all a slot can have pending */
}

/* The child's side of fork: only async-signal-safe calls until the worker loop starts.
 * slot NO_SLOT: a spare, which waits until the supervisor gives it a slot. */
static void child(proc *pr, uint32_t slot)
{
    /* Handlers are the parent's: put every signal back to its default, SIGINT to ignored
     * (the parent decides about Ctrl-C for the whole pool). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGINT, &sa, NULL);
    /* Die with the supervisor thread, which lives as long as the executor; if the parent is
     * already gone, the death signal was missed: leave now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != pr->parent_pid)
        _exit(127);
    /* Hold no descriptor the parent does not need us to hold: keep only stdio (all of them
     * with keep_fds). */
    if (!pr->ex->opts.keep_fds && syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    /* Drop the parent's unwritten stdio buffers: a task that calls exit() would otherwise
     * write them a second time. __fpurge takes no lock, which matters in a forked child. */
    __fpurge(stdout);
    __fpurge(stderr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    const fpp__layout *l = &pr->pool.lay;
    fpp__hdr *h = pr->pool.hdr;
    uint32_t me = (uint32_t)getpid();
    while (slot == NO_SLOT) {
        /* A spare: sleep on the spare_pid futex until the supervisor names us, then take the
         * slot (the CAS makes the hand-off happen once). */
        uint32_t who = atomic_load(&h->spare_pid);
        if (who == me && atomic_compare_exchange_strong(&h->spare_pid, &who, 0)) {
            slot = atomic_load(&h->spare_slot);
            if (slot >= l->nworkers)
                _exit(126);
            break;
        }
        syscall(SYS_futex, &h->spare_pid, FUTEX_WAIT, who, NULL, NULL, 0);
    }
    /* Give up the other workers' arenas, so that a task scribbling through memory cannot
     * reach results that are not its own; the argument arena is read-only to us. */
    for (uint32_t w = 0; w < l->nworkers; w++)
        if (w != slot)
            munmap(fpp__warena_of(pr->pool.base, l, w), l->warena_size);
    mprotect(pr->pool.base + l->args_off, l->args_size, PROT_READ);

    fpp__wctx w = {
        .base = pr->pool.base,
        .lay = *l,
        .slot = slot,
        .process = true,
        .max_tasks = pr->ex->opts.max_tasks_per_worker,
        .max_rss_kib = pr->ex->opts.max_worker_rss_kib,
        .stop = NULL,
    };
    _exit(fpp__worker_main(&w));
}

/* Forks a process (a worker for slot, or a spare with NO_SLOT) and opens its pidfd. */
static int fork_one(proc *pr, uint32_t slot, sup_slot *out)
{
    fpp__fork_hooks hk = fpp__fork_hooks_get();
    if (hk.prepare)
        hk.prepare();
    pid_t pid = fork();
    if (pid == 0) {
        if (hk.child)
            hk.child();
        child(pr, slot);
    }
    int fork_errno = errno;
    if (hk.parent)
        hk.parent();
    errno = fork_errno;
    if (pid < 0)
        return errno;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ENOSYS) {
        fd = -1; /* watched by polling wait4 */
    } else if (fd < 0) {
        /* Without a pidfd we cannot watch it: take it back at once. */
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return e;
    }
    out->pid = pid;
    out->pidfd = fd;
    return 0;
}

static void sup_spawn(proc *pr, uint32_t slot, uint32_t gen)
{
    event e = {.op = EV_SPAWN_FAILED, .slot = slot, .gen = gen};
    if (pr->spare.pid) {
        /* Hand the spare its slot: it is running within a wake-up. */
        pr->ss[slot] = pr->spare;
        pr->ss[slot].gen = gen;
        pr->spare.pid = 0;
        pr->spare.pidfd = -1;
        atomic_store(&pr->pool.hdr->spare_slot, slot);
        atomic_store(&pr->pool.hdr->spare_pid, (uint32_t)pr->ss[slot].pid);
        syscall(SYS_futex, &pr->pool.hdr->spare_pid, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
        e.op = EV_SPAWNED;
        e.pid = pr->ss[slot].pid;
        post_event(pr, &e);
        return;
    }
    int err = fork_one(pr, slot, &pr->ss[slot]);
    if (err) {
        e.err = err;
        post_event(pr, &e);
        return;
    }
    pr->ss[slot].gen = gen;
    e.op = EV_SPAWNED;
    e.pid = pr->ss[slot].pid;
    post_event(pr, &e);
}

/* Keeps one spare forked (after the urgent work of a loop round is done). */
static void sup_refill_spare(proc *pr)
{
    if (pr->spare.pid || pr->stopping)
        return;
    if (fork_one(pr, NO_SLOT, &pr->spare) != 0) {
        pr->spare.pid = 0;
        pr->spare.pidfd = -1;
    }
}

static void sup_reap(proc *pr, uint32_t slot, bool block)
{
    sup_slot *s = &pr->ss[slot];
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    pid_t r;
    do
        r = wait4(s->pid, &status, block ? 0 : WNOHANG, &ru);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return; /* not dead yet */
    /* r < 0 (ECHILD): someone else reaped it (waitpid(-1) in the application, or SIGCHLD
     * ignored); the pidfd said it ended, which is all we need. */
    event e = {.op = EV_DIED, .slot = slot, .gen = s->gen, .pid = s->pid,
               .status = r < 0 ? -1 : status, .maxrss_kib = ru.ru_maxrss};
    if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
    s->pid = 0;
    post_event(pr, &e);
}

static void sup_kill(proc *pr, uint32_t slot)
{
    sup_slot *s = &pr->ss[slot];
    if (s->pid && (s->pidfd < 0 || syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0) != 0))
        kill(s->pid, SIGKILL);
}

static void *supervisor(void *arg)
{
    proc *pr = arg;
    uint32_t n = pr->pool.lay.nworkers;
    struct pollfd *fds = fpp__calloc(n + 2, sizeof *fds);
    bool quit = false;
    while (!quit) {
        fds[0] = (struct pollfd){.fd = pr->evfd, .events = POLLIN};
        for (uint32_t i = 0; fds && i < n; i++)
            fds[i + 1] = (struct pollfd){.fd = pr->ss[i].pidfd, .events = POLLIN};
        if (fds)
            fds[n + 1] = (struct pollfd){.fd = pr->spare.pid ? pr->spare.pidfd : -1, .events = POLLIN};
        bool polled = pr->spare.pid && pr->spare.pidfd < 0;
        for (uint32_t i = 0; i < n; i++)
            polled = polled || (pr->ss[i].pid && pr->ss[i].pidfd < 0);
        if (fds)
            poll(fds, n + 2, polled ? 2 : -1);
        else
            poll(&(struct pollfd){.fd = pr->evfd, .events = POLLIN}, 1, 10);
        if (pr->spare.pid && (polled || (fds && (fds[n + 1].revents & (POLLIN | POLLHUP | POLLERR))))) {
            /* The spare died before it had a slot (killed from outside): just forget it. */
            if (wait4(pr->spare.pid, NULL, WNOHANG, NULL) != 0) {
                if (pr->spare.pidfd >= 0)
                    close(pr->spare.pidfd);
                pr->spare.pid = 0;
                pr->spare.pidfd = -1;
            }
        }
        bool posted = false;
        uint64_t v;
        ssize_t rd = read(pr->evfd, &v, sizeof v);
        (void)rd;
        for (;;) {
            cmd c;
            pthread_mutex_lock(&pr->mu);
            bool got = q_pop(&pr->cmds, &c);
            pthread_mutex_unlock(&pr->mu);
            if (!got)
                break;
            if (c.op == CMD_SPAWN) {
                sup_spawn(pr, c.slot, c.gen);
                posted = true;
            } else if (c.op == CMD_KILL) {
                if (pr->ss[c.slot].gen == c.gen && pr->ss[c.slot].pid)
                    sup_kill(pr, c.slot);
            } else if (c.op == CMD_QUIT) {
                quit = true;
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            if (!pr->ss[i].pid)
                continue;
            if (quit) {
                sup_kill(pr, i);
                sup_reap(pr, i, true);
                posted = true;
            } else if (!fds || pr->ss[i].pidfd < 0 || (fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) {
                sup_reap(pr, i, false);
                posted = posted || !pr->ss[i].pid;
            }
        }
        if (posted)
            fpp__event_post(&pr->pool.hdr->parent_wake);
        if (!quit)
            sup_refill_spare(pr);
    }
    if (pr->spare.pid) {
        kill(pr->spare.pid, SIGKILL);
        waitpid(pr->spare.pid, NULL, 0);
        if (pr->spare.pidfd >= 0)
            close(pr->spare.pidfd);
        pr->spare.pid = 0;
    }
    fpp__free(fds);
    return NULL;
}

/* ------------------------------------------------------ the caller's side */

static void describe(char *buf, size_t n, pid_t pid, int status, bool *signaled, int *signo)
{
    *signaled = false;
    *signo = 0;
    if (status == -1)
        snprintf(buf, n, "worker %ld died (reaped elsewhere, status unknown)", (long)pid);
    else if (WIFSIGNALED(status)) {
        *signaled = true;
        *signo = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(*signo);
        if (abbrev)
            snprintf(buf, n, "worker %ld killed by SIG%s", (long)pid, abbrev);
        else
            snprintf(buf, n, "worker %ld killed by signal %d", (long)pid, *signo);
    } else
        snprintf(buf, n, "worker %ld exited with status %d", (long)pid, WEXITSTATUS(status));
}

static void spawn(proc *pr, uint32_t slot)
{
    par_slot *s = &pr->ps[slot];
    s->gen++;
    s->state = SL_SPAWNING;
    s->killed = s->timed_out = false;
    send_cmd(pr, CMD_SPAWN, slot, s->gen);
}

static int handle_events(proc *pr)
{
    int finished = 0;
    /* Called on every poll: most have nothing to take, and then take no lock. */
    while (atomic_load_explicit(&pr->pending, memory_order_acquire) > 0) {
        event e;
        pthread_mutex_lock(&pr->mu);
        bool got = q_pop(&pr->events, &e);
        pthread_mutex_unlock(&pr->mu);
        if (!got)
            break;
        atomic_fetch_sub(&pr->pending, 1);
        par_slot *s = &pr->ps[e.slot];
        if (e.gen != s->gen)
            continue;
        if (e.op == EV_SPAWNED) {
            s->pid = e.pid;
            s->state = SL_ALIVE;
            pr->pool.wp[e.slot].alive = true;
            pr->alive++;
        } else if (e.op == EV_SPAWN_FAILED) {
            errno = e.err;
            fpp__sys_error("fork", "worker");
            s->state = SL_EMPTY;
            pr->next_spawn_ns = fpp__now_ns() + 100000000; /* try again in 100 ms */
        } else if (e.op == EV_DIED) {
            char why[160];
            bool signaled;
            int signo;
            describe(why, sizeof why, e.pid, e.status, &signaled, &signo);
            fpp__wblock *b = fpp__wblock_of(pr->pool.base, &pr->pool.lay, e.slot);
            bool retired = atomic_load(&b->phase) == FPP__PH_RETIRED && !signaled &&
                           e.status != -1 && WEXITSTATUS(e.status) == 0;
            if (pr->ex->opts.max_worker_rss_kib && signaled &&
                (size_t)e.maxrss_kib * 2 >= pr->ex->opts.max_worker_rss_kib) {
                /* Killed with half its cap or more in use: the likely cause is memory (malloc
                 * failing at RLIMIT_AS and the task not checking, or the OOM killer). */
                size_t len = strlen(why);
                snprintf(why + len, sizeof why - len,
                         " at its memory cap (peak %ld KiB of max_worker_rss_kib %zu KiB: out of memory)",
                         e.maxrss_kib, pr->ex->opts.max_worker_rss_kib);
            }
            fpp_status st = s->timed_out ? FPP_TIMEOUT : FPP_CRASHED;
            finished += fpp__pool_recover(&pr->pool, e.slot, st, signaled ? signo : 0, why);
            if (!retired && !s->killed)
                fpp__log(FPP_LOG_DEBUG, "%s; replacing it", why);
            if (s->killed && pr->killing > 0)
                pr->killing--;
            s->state = SL_EMPTY;
            s->pid = 0;
            pr->pool.wp[e.slot].alive = false;
            pr->alive--;
            atomic_fetch_add(&pr->ex->restarts, 1);
            if (!pr->stopping && !pr->paused)
                spawn(pr, e.slot);
        }
    }
    if (!pr->stopping && !pr->paused && pr->next_spawn_ns && fpp__now_ns() >= pr->next_spawn_ns) {
        pr->next_spawn_ns = 0;
        for (uint32_t w = 0; w < pr->pool.lay.nworkers; w++)
            if (pr->ps[w].state == SL_EMPTY)
                spawn(pr, w);
    }
    return finished;
}

static void kill_slot(proc *pr, uint32_t w)
{
    par_slot *s = &pr->ps[w];
    if (s->state != SL_ALIVE || s->killed)
        return;
    s->killed = true;
    pr->killing++;
    atomic_store(&fpp__wblock_of(pr->pool.base, &pr->pool.lay, w)->drain, 1);
    send_cmd(pr, CMD_KILL, w, s->gen);
}

static void over_timeout(fpp__pool *p, uint32_t w, uint64_t ticket)
{
    proc *pr = (proc *)p; /* the pool is the first member */
    par_slot *s = &pr->ps[w];
    if (s->state != SL_ALIVE || s->killed)
        return;
    fpp__wblock *b = fpp__wblock_of(pr->pool.base, &pr->pool.lay, w);
    /* Dekker pair with the worker's RUNNING mark then check of drain: after this, either we
     * see it has moved past the timed-out task (and spare it), or it sees drain and starts
     * nothing new before the kill lands. */
    atomic_store(&b->drain, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&b->phase) != FPP__PH_RUNNING || atomic_load(&b->ticket) != ticket) {
        atomic_store(&b->drain, 0);
        pr->pool.wp[w].timeout_ticket = 0; /* it finished after all: look again next time */
        return;
    }
    s->timed_out = true;
    kill_slot(pr, w);
}

static int p_dispatch(fpp_executor *ex, fpp_task *t)
{
    proc *pr = ex->impl;
    if (pr->paused) { /* stopped by Ctrl-C: bring the workers back (spares make it quick) */
        pr->paused = false;
        for (uint32_t w = 0; w < pr->pool.lay.nworkers; w++)
            if (pr->ps[w].state == SL_EMPTY)
                spawn(pr, w);
        return 1;
    }
    if (pr->killing > 0)
        return 1; /* workers being killed could still take new work: wait for them */
    return fpp__pool_dispatch(&pr->pool, t);
}

static void p_flush(fpp_executor *ex)
{
    proc *pr = ex->impl;
    fpp__pool_flush(&pr->pool);
}

static void bad_worker(fpp__pool *p, uint32_t w)
{
    kill_slot((proc *)p, w);
}

/* The watchdog: after AUDIT_NS without progress while tasks are in flight. */
#define AUDIT_NS 250000000
static int audit(proc *pr, int n)
{
    int64_t now = fpp__now_ns();
    if (n > 0 || fpp__pool_in_flight(&pr->pool) == 0) {
        pr->last_progress_ns = now;
        return 0;
    }
    if (now - pr->last_progress_ns < AUDIT_NS)
        return 0;
    pr->last_progress_ns = now;
    return fpp__pool_audit(&pr->pool);
}

static int p_poll(fpp_executor *ex, int64_t deadline)
{
    proc *pr = ex->impl;
    uint32_t seen = fpp__pool_seq(&pr->pool); /* before looking: a later post ends the wait */
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    int n = fpp__pool_collect(&pr->pool) + handle_events(pr);
    int64_t tdl = fpp__pool_timeouts(&pr->pool, ex->opts.task_timeout_ms, over_timeout);
    if (n == 0 && deadline > 0) {
        int64_t d = deadline;
        if (tdl < d)
            d = tdl;
        if (pr->next_spawn_ns && pr->next_spawn_ns < d)
            d = pr->next_spawn_ns;
        if (fpp__pool_in_flight(&pr->pool) > 0 && pr->last_progress_ns + AUDIT_NS < d)
            d = FPP__MAX(pr->last_progress_ns + AUDIT_NS, fpp__now_ns() + 1000000);
        /* While tasks run under a timeout, look at them at least every quarter of it. */
        if (ex->opts.task_timeout_ms) {
            int64_t cap = fpp__now_ns() + FPP__MAX((int64_t)ex->opts.task_timeout_ms * 250000, 1000000);
            if (cap < d)
                d = cap;
        }
        fpp__pool_wait(&pr->pool, seen, d);
        n += fpp__pool_collect(&pr->pool) + handle_events(pr);
        fpp__pool_timeouts(&pr->pool, ex->opts.task_timeout_ms, over_timeout);
    }
    n += audit(pr, n);
    /* Tasks whose worker died before starting them go out again now, whether or not the
     * task manager has anything new to dispatch. */
    if (pr->pool.retry.head && pr->killing == 0 && !pr->paused && !(ex->tm && fpp__tm_halted(ex->tm)) &&
        fpp__pool_dispatch(&pr->pool, NULL) == 0)
        fpp__pool_flush(&pr->pool);
    return n;
}

static void p_cancel(fpp_executor *ex, bool wait)
{
    proc *pr = ex->impl;
    uint32_t n = pr->pool.lay.nworkers;
    bool *kill = fpp__calloc(n, sizeof *kill);
    fpp__pool_cancel(&pr->pool, kill);
    for (uint32_t w = 0; kill && w < n; w++)
        if (kill[w] || wait) /* Ctrl-C stops every worker, busy or not */
            kill_slot(pr, w);
    if (wait)
        pr->paused = true;
    fpp__free(kill);
    if (!wait)
        return;
    int64_t until = fpp__now_ns() + 2000000000;
    while (pr->killing > 0 && fpp__now_ns() < until) {
        fpp__pool_collect(&pr->pool);
        handle_events(pr);
        if (pr->killing > 0)
            fpp__pool_wait(&pr->pool, fpp__pool_seq(&pr->pool), fpp__now_ns() + 5000000);
    }
}

static void p_wake(fpp_executor *ex)
{
    proc *pr = ex->impl;
    fpp__exec_poke(ex, &pr->pool.hdr->parent_wake);
}

static void p_destroy(fpp_executor *ex, bool owner)
{
    FPP__UNUSED(owner);
    proc *pr = ex->impl;
    if (!pr)
        return;
    pr->stopping = true;
    if (pr->sup_started) {
        send_cmd(pr, CMD_QUIT, 0, 0);
        pthread_join(pr->sup, NULL);
    }
    if (pr->evfd >= 0)
        close(pr->evfd);
    fpp__pool_destroy(&pr->pool);
    pthread_mutex_destroy(&pr->mu);
    fpp__free(pr->cmds.items);
    fpp__free(pr->events.items);
    fpp__free(pr->ss);
    fpp__free(pr->ps);
    fpp__free(pr);
    ex->impl = NULL;
}

static const fpp__exec_ops process_ops = {
    .kind = "process",
    .dispatch = p_dispatch,
    .flush = p_flush,
    .poll = p_poll,
    .cancel = p_cancel,
    .wake = p_wake,
    .destroy = p_destroy,
};

int fpp__process_start(fpp_executor *ex)
{
    proc *pr = fpp__calloc(1, sizeof *pr);
    if (!pr)
        return FPP_ENOMEM;
    ex->impl = pr;
    ex->ops = &process_ops;
    pr->ex = ex;
    pr->evfd = -1;
    pthread_mutex_init(&pr->mu, NULL);
    int rc = fpp__pool_create(&pr->pool, &ex->opts, true);
    if (rc)
        goto fail;
    pr->pool.ex = ex;
    pr->pool.bad = bad_worker;
    uint32_t n = pr->pool.lay.nworkers;
    pr->ss = fpp__calloc(n, sizeof *pr->ss);
    pr->ps = fpp__calloc(n, sizeof *pr->ps);
    if (!pr->ss || !pr->ps || q_init(&pr->cmds, sizeof(cmd), 4 * n + 16) ||
        q_init(&pr->events, sizeof(event), 4 * n + 16)) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++)
        pr->ss[i].pidfd = -1;
    pr->spare.pidfd = -1;
    atomic_store(&pr->pool.hdr->spare_slot, NO_SLOT);
    atomic_store(&pr->pool.hdr->spare_pid, 0);
    pr->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pr->evfd < 0) {
        rc = fpp__sys_error("eventfd", "supervisor");
        goto fail;
    }
    pr->parent_pid = getpid();
    pr->last_progress_ns = fpp__now_ns();

    /* The supervisor never runs a signal handler: it starts with every signal blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&pr->sup, NULL, supervisor, pr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        errno = e;
        rc = fpp__sys_error("pthread_create", "supervisor");
        goto fail;
    }
    pr->sup_started = true;

    for (uint32_t w = 0; w < n; w++)
        spawn(pr, w);
    /* Wait until every first worker is up, or one could not be forked. */
    int64_t until = fpp__now_ns() + 10000000000LL;
    while (pr->alive < (int)n) {
        handle_events(pr);
        bool failed = false;
        for (uint32_t w = 0; w < n; w++)
            failed = failed || pr->ps[w].state == SL_EMPTY;
        if (failed) {
            fpp__log(FPP_LOG_ERROR, "process executor: could not start %u workers", n);
            rc = FPP_ESYS;
            goto fail;
        }
        if (fpp__now_ns() > until) {
            fpp__log(FPP_LOG_ERROR, "process executor: workers did not start within 10 s");
            rc = FPP_ESYS;
            goto fail;
        }
        if (pr->alive < (int)n)
            fpp__pool_wait(&pr->pool, fpp__pool_seq(&pr->pool), fpp__now_ns() + 10000000);
    }
    return 0;
fail:;
    int saved = errno;
    p_destroy(ex, true);
    errno = saved;
    return rc;
}
