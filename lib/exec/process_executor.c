/* exec/process_executor.c: the crash-isolated executor, the parent's side. Workers are processes
 * forked by the fork server (pool/forkserver.c); this file asks for them, attaches each to its
 * slot of the pool, kills them when a task must stop, and turns their deaths into recovery.
 *
 * Everything here runs on the thread calling into the task manager: there is no supervisor
 * thread. The fork server's messages arrive on a socket, announced by its mailbox event count
 * (one load per poll; the parent sleeps on it with the workers' bells and the poke,
 * pool/pool.c). Kills go straight to the worker through its pidfd (no round trip, no pid reuse
 * race); deaths come back from the fork server, which reaps (so workers are never the
 * application's children: a waitpid(-1) or SIGCHLD set to SIG_IGN in the application cannot
 * steal them).
 *
 * A slot is EMPTY, SPAWNING (asked for, with new slot memory ready) or ALIVE (attached to the
 * pool). A dead worker's slot is recovered (fpp__pool_recover) before a new worker is asked
 * for, and every worker gets new slot memory.
 *
 * When workers cannot start (fork failing, or an initializer failing), the start breaker
 * (exec/breaker.c) backs off and, after five failures in a row, fails what waits while no
 * worker is alive. A fork server that dies is replaced (forked again by the keeper, from the
 * program as it was at creation: pool/keeper.c), its workers with it; one that is stopped is
 * continued; one that does not answer a spawn or the parent's ping, or does not report a worker
 * its pidfd shows dead, for FPP__FS_STALL_NS is killed and replaced; and one whose new workers
 * cannot start (a task lowered its limits past what a worker can put back) is replaced once per
 * trip of the breaker, its live workers with it. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/timing.h"
#include "exec/exec.h"
#include "pool/pool.h"

enum { SL_EMPTY = 0, SL_SPAWNING, SL_ALIVE };

typedef struct pslot {
    int state;
    pid_t pid;
    int pidfd;
    uint32_t gen;
    bool killed;            /* we asked for its death (cancel, timeout, corrupt, stop) */
    bool fresh;             /* ALIVE, and not yet seen up (its initializer done) */
    fpp__slotmem *pending;  /* SPAWNING: its memory, attached when it is SPAWNED */
    int64_t since_ns;       /* SPAWNING: when it was asked for */
    int64_t dead_ns;        /* ALIVE: when its pidfd was first seen dead with no word from the
                               fork server (which reaps and reports at once); 0: not seen */
} pslot;

typedef struct proc {
    fpp__pool *pool;           /* first: the tests reach it through ex->impl */
    fpp_executor *ex;
    fpp__fs fs;
    fpp__fs_config cfg;
    pslot *ps;
    uint32_t nworkers;
    int alive;
    int start_rc;              /* during creation: why the first workers could not start */
    fpp__breaker br;           /* empty slots are filled once it is due */
    int fresh;                 /* slots with fresh set */
    int64_t last_progress_ns;
    int64_t next_watch_ns;     /* the fork server is checked on from then on */
    uint32_t ping_seq;         /* the last ping sent to the fork server */
    int64_t ping_ns;           /* when it was sent, unanswered; 0: none out */
    bool replaced_for_starts;  /* the server was replaced for this run of start failures */
    bool replace_due;          /* ...and is to be, at the next poll */
    bool starting;             /* creation: a failure fails it, nothing is replaced */
    bool paused;               /* after Ctrl-C: no worker until the next dispatch */
    bool stopping;
} proc;

static void spawn(proc *pr, uint32_t w);
static void fs_died(proc *pr, const char *why);

/* ------------------------------------------------------------------ helpers */

static void describe(char *buf, size_t n, pid_t pid, int status, bool *signaled, int *signo)
{
    *signaled = false;
    *signo = 0;
    if (status == -1)
        snprintf(buf, n, "worker %ld died (status unknown)", (long)pid);
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

/* Kills slot w's worker (no more tasks for it first). Returns 0, or the errno of a kill that
 * failed (only pidfd_send_signal, or kill() where pidfds are missing: a pid is never signalled
 * after the process may have been reaped). */
static int kill_slot(proc *pr, uint32_t w)
{
    pslot *s = &pr->ps[w];
    fpp__pool_close_slot(pr->pool, w); /* no more tasks for it */
    if (s->state != SL_ALIVE || s->killed)
        return 0;
    s->killed = true;
    int e = fpp__kill_child(s->pidfd, s->pid);
    if (e)
        fpp__log(FPP_LOG_ERROR, "process executor: cannot kill worker %ld (slot %u): %s", (long)s->pid, w, strerror(e));
    return e;
}

static void slot_gone(proc *pr, uint32_t w);

/* A worker that cannot be killed (its task changed credentials, a security module) is left
 * behind: its slot is recovered now, its task ends as it was to (timed out, cancelled, or
 * crashed for a corrupted worker), and a new worker takes the slot. Whatever the old process
 * still writes goes to memory nobody reads; the fork server reaps it when it ends, and its late
 * death is ignored (another generation). */
static void kill_or_abandon(proc *pr, uint32_t w)
{
    int e = kill_slot(pr, w);
    if (!e)
        return;
    pslot *s = &pr->ps[w];
    char why[160];
    snprintf(why, sizeof why, "worker %ld could not be killed (%s); left behind", (long)s->pid, strerror(e));
    fpp_status st = fpp__pool_timed_out(pr->pool, w) ? FPP_TIMEOUT : FPP_CRASHED;
    fpp__pool_recover(pr->pool, w, st, 0, why);
    slot_gone(pr, w);
}

/* Pool hooks: a worker to stop (timeout, cancel) or that wrote nonsense: it is killed; its
 * recovery comes with its death. A job leaving the pool goes up to the task manager. */
static void stop_worker(void *owner, uint32_t w) { kill_or_abandon(owner, w); }

static void job_finished(void *owner, fpp__job *j)
{
    proc *pr = owner;
    fpp__exec_finished(pr->ex, j);
}

/* A worker could not start: the breaker backs off and says so; creation keeps the first code.
 * server: the failure may be the server's own state (a worker that could not map its memory, a
 * fork that failed: a task may have lowered the server's limits): once the breaker trips, the
 * server is replaced (once per run of failures). */
static void start_failure(proc *pr, int rc, bool server, const char *fmt, ...) FPP_PRINTF(4, 5);
static void start_failure(proc *pr, int rc, bool server, const char *fmt, ...)
{
    char cause[sizeof pr->br.cause];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof cause, fmt, ap);
    va_end(ap);
    if (!pr->start_rc)
        pr->start_rc = rc;
    fpp__breaker_fail(&pr->br, "%s", cause);
    if (server && !pr->starting && pr->br.broken && !pr->replaced_for_starts) {
        pr->replaced_for_starts = true;
        pr->replace_due = true;
    }
}

/* A new worker that is up (its initializer done) is a start: the first one after failures
 * closes the breaker. Workers that were up all along do not count: the failures are "in a row"
 * of attempts. */
static void check_started(proc *pr)
{
    for (uint32_t w = 0; pr->fresh && w < pr->nworkers; w++) {
        pslot *s = &pr->ps[w];
        if (!s->fresh)
            continue;
        uint32_t ws = s->state == SL_ALIVE ? fpp__pool_worker_state(pr->pool, w, NULL, 0) : FPP__WS_INIT_FAILED;
        if (ws == FPP__WS_STARTING)
            continue;
        s->fresh = false;
        pr->fresh--;
        if (ws == FPP__WS_READY && pr->br.failures) {
            fpp__breaker_ok(&pr->br);
            pr->replaced_for_starts = false;
        }
    }
}

/* ------------------------------------------------------------ worker deaths */

static int died(proc *pr, uint32_t w, pid_t pid, int status, int64_t maxrss_kib)
{
    pslot *s = &pr->ps[w];
    char why[FPP__ERR_MAX + 160];
    bool signaled;
    int signo;
    describe(why, sizeof why, pid, status, &signaled, &signo);
    char msg[FPP__ERR_MAX];
    uint32_t ws = fpp__pool_worker_state(pr->pool, w, msg, sizeof msg);
    bool ran = fpp__pool_worker_ran(pr->pool, w);
    bool exited = status != -1 && WIFEXITED(status);
    size_t cap = pr->ex->opts.max_worker_rss_kib;
    if (cap && signaled && maxrss_kib > 0) {
        /* Killed near its cap: the likely cause is memory (malloc failing at RLIMIT_AS and the
         * task not checking, or the OOM killer). Only then does the message name the cap.
         * maxrss is the peak of all it had resident, its slot memory and the argument arena
         * (shared memory, written by results and read by arguments: not its growth) included:
         * take off the most of those it can have had, so that the estimate errs towards not
         * blaming the cap. What the worker says it started with is clamped to that peak. */
        const fpp__layout *l = fpp__pool_layout(pr->pool);
        int64_t start = (int64_t)fpp__pool_worker_rss_start(pr->pool, w, (uint64_t)maxrss_kib);
        int64_t shared_kib = (int64_t)((l->slot_size + l->args_size) / 1024);
        int64_t grown = maxrss_kib - start - shared_kib;
        if (grown * 10 >= (int64_t)cap * 9) {
            size_t len = strlen(why);
            snprintf(why + len, sizeof why - len,
                     " at its memory cap (grew %lld KiB or more; max_worker_rss_kib %zu KiB: out of memory)",
                     (long long)grown, cap);
        }
    }
    if (exited && WEXITSTATUS(status) == FPP__EXIT_INIT && ws == FPP__WS_INIT_FAILED) {
        start_failure(pr, FPP_EINIT, false, "worker_init %s failed: %s", pr->ex->opts.worker_init, msg);
    } else if (exited && WEXITSTATUS(status) == FPP__EXIT_SETUP) {
        start_failure(pr, FPP_ESYS, true, "a new worker could not map its memory");
    } else if (!ran && !s->killed && pr->ex->init_fn >= 0) {
        start_failure(pr, FPP_EINIT, false, "worker_init %s crashed: %s", pr->ex->opts.worker_init, why);
    } else if (ran) {
        fpp__breaker_ok(&pr->br);
        pr->replaced_for_starts = false;
    }
    bool retired = ws == FPP__WS_RETIRED && exited && WEXITSTATUS(status) == 0;
    fpp_status st = fpp__pool_timed_out(pr->pool, w) ? FPP_TIMEOUT : FPP_CRASHED;
    int n = fpp__pool_recover(pr->pool, w, st, signaled ? signo : 0, why);
    if (!retired && !s->killed && ran)
        fpp__log(FPP_LOG_DEBUG, "%s; replacing it", why);
    slot_gone(pr, w);
    return n;
}

/* Slot w's worker is gone (recovered already): the slot is empty, and filled again when the
 * breaker allows. */
static void slot_gone(proc *pr, uint32_t w)
{
    pslot *s = &pr->ps[w];
    if (s->pidfd >= 0)
        fpp__fd_close(s->pidfd);
    s->pidfd = -1;
    s->pid = 0;
    s->state = SL_EMPTY;
    s->killed = false;
    pr->alive--;
    atomic_fetch_add(&pr->ex->restarts, 1);
    if (!pr->stopping && !pr->paused && fpp__breaker_due(&pr->br, fpp__now_ns()))
        spawn(pr, w);
}

/* ---------------------------------------------------- the fork server's side */

static void spawn(proc *pr, uint32_t w)
{
    pslot *s = &pr->ps[w];
    if (s->state != SL_EMPTY || pr->stopping)
        return;
    fpp__slotmem *mem = fpp__slotmem_new(fpp__pool_layout(pr->pool), true);
    if (!mem) {
        start_failure(pr, FPP_ESYS, false, "no memory for a worker (memfd_create, ftruncate or mmap failed)");
        return;
    }
    s->gen++;
    s->dead_ns = 0;
    int rc = fpp__fs_spawn(&pr->fs, w, s->gen, fpp__slotmem_fd(mem));
    if (rc != 0) {
        fpp__slotmem_unref(mem);
        if (rc > 0) { /* the server has not read the requests before: this slot waits for */
            s->gen--; /* the next look (spawn_due), after its answers to them */
            return;
        }
        fs_died(pr, "its channel failed");
        return;
    }
    s->state = SL_SPAWNING;
    s->pending = mem;
    s->since_ns = fpp__now_ns();
}

static void spawn_due(proc *pr)
{
    if (pr->stopping || pr->paused || !fpp__breaker_due(&pr->br, fpp__now_ns()))
        return;
    for (uint32_t w = 0; w < pr->nworkers; w++)
        if (pr->ps[w].state == SL_EMPTY)
            spawn(pr, w);
}

static int handle_msg(proc *pr, const fpp__fs_msg *m, int pidfd)
{
    if (m->op == FPP__FS_PONG) {
        if (pidfd >= 0)
            fpp__fd_close(pidfd);
        if (m->gen == pr->ping_seq)
            pr->ping_ns = 0;
        return 0;
    }
    if (m->slot >= pr->nworkers) {
        if (pidfd >= 0)
            fpp__fd_close(pidfd);
        return 0;
    }
    pslot *s = &pr->ps[m->slot];
    if (m->gen != s->gen) {
        if (pidfd >= 0)
            fpp__fd_close(pidfd);
        return 0;
    }
    switch (m->op) {
    case FPP__FS_SPAWNED:
        if (s->state != SL_SPAWNING)
            break;
        s->pid = m->pid;
        s->pidfd = pidfd;
        pidfd = -1;
        s->state = SL_ALIVE;
        s->killed = false;
        s->dead_ns = 0;
        fpp__slotmem_close_fd(s->pending); /* the worker has it now */
        fpp__pool_attach(pr->pool, m->slot, s->pending);
        s->pending = NULL;
        pr->alive++;
        if (!s->fresh) {
            s->fresh = true;
            pr->fresh++;
        }
        break;
    case FPP__FS_FAILED:
        if (s->state != SL_SPAWNING)
            break;
        fpp__slotmem_unref(s->pending);
        s->pending = NULL;
        s->state = SL_EMPTY;
        errno = m->err;
        start_failure(pr, FPP_ESYS, true, "%s(worker): %s", m->call[0] ? m->call : "fork", strerror(m->err));
        break;
    case FPP__FS_DIED:
        if (s->state != SL_ALIVE)
            break;
        if (pidfd >= 0)
            fpp__fd_close(pidfd);
        return died(pr, m->slot, m->pid, m->status, m->maxrss_kib);
    }
    if (pidfd >= 0)
        fpp__fd_close(pidfd);
    return 0;
}

/* Reads what the fork server said since the last look (no system call when it said nothing). */
static int handle_fs(proc *pr)
{
    uint32_t c = fpp__ec_count(pr->fs.mailbox);
    if (c == pr->fs.seen)
        return 0;
    int n = 0;
    for (;;) {
        fpp__fs_msg m;
        int fd;
        int got = fpp__fs_recv(&pr->fs, &m, &fd);
        if (got == 0)
            break;
        if (got < 0) {
            fs_died(pr, "its channel closed");
            return n;
        }
        n += handle_msg(pr, &m, fd);
    }
    pr->fs.seen = c;
    return n;
}

static int start_fs(proc *pr)
{
    int rc = fpp__fs_start(&pr->fs, &pr->cfg);
    if (rc)
        return rc;
    fpp__pool_set_word(pr->pool, 0, pr->fs.mailbox);
    return 0;
}

/* The fork server is gone (or stuck): its workers went with it. Recover every slot, start a
 * new server, fill the slots again. */
static void fs_died(proc *pr, const char *why)
{
    if (pr->stopping)
        return;
    if (pr->fs.pid > 0) /* else: none since a replacement failed (the breaker says so) */
        fpp__log(FPP_LOG_WARN, "process executor: the fork server (pid %ld) %s; starting a new one",
                 (long)pr->fs.pid, why);
    /* Read what it said before it went: deaths with their status come first. */
    for (;;) {
        fpp__fs_msg m;
        int fd;
        if (fpp__fs_recv(&pr->fs, &m, &fd) != 1)
            break;
        handle_msg(pr, &m, fd);
    }
    for (uint32_t w = 0; w < pr->nworkers; w++) {
        pslot *s = &pr->ps[w];
        if (s->state == SL_ALIVE) {
            kill_slot(pr, w); /* in case a task switched off its death signal */
            char msg[128];
            if (s->dead_ns) /* it died before, and the server never said how */
                snprintf(msg, sizeof msg, "worker %ld died while the fork server did not answer (how is not known)",
                         (long)s->pid);
            else
                snprintf(msg, sizeof msg, "worker %ld died with the fork server", (long)s->pid);
            /* A worker we killed for its timeout: the task still timed out. */
            fpp_status st = fpp__pool_timed_out(pr->pool, w) ? FPP_TIMEOUT : FPP_CRASHED;
            fpp__pool_recover(pr->pool, w, st, s->dead_ns ? 0 : SIGKILL, msg);
            if (s->pidfd >= 0)
                fpp__fd_close(s->pidfd);
            s->pidfd = -1;
            pr->alive--;
            atomic_fetch_add(&pr->ex->restarts, 1);
        } else if (s->state == SL_SPAWNING) {
            fpp__slotmem_unref(s->pending);
            s->pending = NULL;
        }
        s->state = SL_EMPTY;
        s->killed = false;
    }
    pr->ping_ns = 0;
    int rc = fpp__fs_replace(&pr->fs);
    if (rc) {
        start_failure(pr, rc, false, "the fork server could not be started again: %s", strerror(errno));
        return;
    }
    if (!pr->paused)
        spawn_due(pr);
}

/* --------------------------------------------------------------- the ops */

/* While the breaker is tripped and no worker runs, what waits fails with the cause. */
static int breaker_fail(proc *pr)
{
    if (!pr->br.broken || pr->alive > 0 || !fpp__pool_has_waiting(pr->pool))
        return 0;
    char msg[sizeof pr->br.cause + 32];
    fpp__breaker_message(&pr->br, msg, sizeof msg);
    return fpp__pool_fail_waiting(pr->pool, FPP_CRASHED, msg);
}

static int p_dispatch(fpp_executor *ex, fpp__job *j)
{
    proc *pr = ex->impl;
    if (pr->paused) { /* stopped by Ctrl-C: bring the workers back (spares make it quick) */
        pr->paused = false;
        spawn_due(pr);
    }
    if (pr->br.broken && pr->alive == 0) {
        /* Taken, to fail in the next poll with the breaker's cause. */
        fpp__pool_defer(pr->pool, j);
        return 0;
    }
    return fpp__pool_dispatch(pr->pool, j);
}

static void p_flush(fpp_executor *ex)
{
    proc *pr = ex->impl;
    fpp__pool_flush(pr->pool);
}

/* The fork server, checked on every FPP__FS_WATCH_NS while tasks are in flight, whether the
 * other workers make progress or not: dead; asked for a worker and silent for FPP__FS_STALL_NS;
 * or silent for FPP__FS_STALL_NS about a worker whose pidfd says it has exited. The last one is
 * a server stopped or stuck (SIGSTOP, a debugger, a freezer): it reaps and reports deaths, so
 * without this the dead worker's task, and its slot, would wait for it for ever. One poll()
 * over the workers' pidfds. Returns true if the server was replaced. */
static bool watch_fs(proc *pr, int64_t now)
{
    if (!fpp__fs_alive(&pr->fs)) {
        fs_died(pr, "died");
        return true;
    }
    /* The heartbeat: a ping each look, answered by the next one. Unanswered since the last
     * look: a stopped server (or keeper) is continued; unanswered for FPP__FS_STALL_NS (stuck,
     * a debugger holding it): replaced. */
    if (!pr->ping_ns) {
        if (fpp__fs_ping(&pr->fs, ++pr->ping_seq) == 0)
            pr->ping_ns = now;
        else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            fpp__fs_continue_if_stopped(&pr->fs); /* its requests pile up: it may be stopped */
    } else if (now - pr->ping_ns > FPP__FS_STALL_NS) {
        fs_died(pr, "does not answer");
        return true;
    } else {
        fpp__fs_continue_if_stopped(&pr->fs);
    }
    uint32_t W = pr->nworkers;
    for (uint32_t w = 0; w < W; w++) {
        if (pr->ps[w].state == SL_SPAWNING && now - pr->ps[w].since_ns > FPP__FS_STALL_NS) {
            fs_died(pr, "does not answer");
            return true;
        }
    }
    for (uint32_t from = 0; from < W; from += 64) {
        struct pollfd pf[64];
        uint32_t of[64], k = 0;
        for (uint32_t w = from; w < W && w < from + 64; w++) {
            if (pr->ps[w].state == SL_ALIVE && pr->ps[w].pidfd >= 0) {
                pf[k] = (struct pollfd){.fd = pr->ps[w].pidfd, .events = POLLIN};
                of[k++] = w;
            }
        }
        if (k == 0 || poll(pf, k, 0) < 0)
            continue;
        for (uint32_t i = 0; i < k; i++) {
            pslot *s = &pr->ps[of[i]];
            if (!(pf[i].revents & POLLIN)) {
                s->dead_ns = 0;
            } else if (!s->dead_ns) {
                s->dead_ns = now;
            } else if (now - s->dead_ns > FPP__FS_STALL_NS) {
                fs_died(pr, "does not report its workers' deaths");
                return true;
            }
        }
    }
    return false;
}

/* The watchdog, after FPP__AUDIT_NS without progress while tasks are in flight. */
static int audit(proc *pr, int n)
{
    int64_t now = fpp__now_ns();
    if (now >= pr->next_watch_ns && fpp__pool_in_flight(pr->pool) > 0) {
        pr->next_watch_ns = now + FPP__FS_WATCH_NS;
        if (watch_fs(pr, now)) {
            pr->last_progress_ns = now;
            return 0;
        }
    }
    if (n > 0 || fpp__pool_in_flight(pr->pool) == 0) {
        pr->last_progress_ns = now;
        return 0;
    }
    if (now - pr->last_progress_ns < FPP__AUDIT_NS)
        return 0;
    pr->last_progress_ns = now;
    return fpp__pool_audit(pr->pool);
}

static int p_poll(fpp_executor *ex, int64_t deadline)
{
    proc *pr = ex->impl;
    fpp__pool *p = pr->pool;
    fpp__pool_mark(p); /* before looking: a later post ends the wait */
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    uint64_t finished = fpp__pool_finished(p);
    int n = handle_fs(pr) + fpp__pool_collect(p);
    if (pr->replace_due) {
        pr->replace_due = false;
        fs_died(pr, "cannot start workers (its limits or state changed by a task?)");
    }
    check_started(pr);
    spawn_due(pr);
    n += breaker_fail(pr);
    int64_t tdl = fpp__pool_timeouts(p); /* may finish jobs: it collects before it kills */
    fpp__pool_steal(p);
    n = FPP__MAX(n, (int)(fpp__pool_finished(p) - finished));
    if (n == 0 && deadline > 0) {
        int64_t now = fpp__now_ns();
        int64_t d = FPP__MIN(deadline, tdl);
        if (pr->br.next_ns && !pr->paused)
            d = FPP__MIN(d, FPP__MAX(pr->br.next_ns, now + FPP__POLL_MIN_NS));
        if (fpp__pool_in_flight(p) > 0)
            d = FPP__MIN(d, FPP__MAX(pr->last_progress_ns + FPP__AUDIT_NS, now + FPP__POLL_MIN_NS));
        /* While tasks run under a timeout, look often enough to see their claims in time. */
        int64_t tick = fpp__pool_tick_ns(p);
        if (tick != INT64_MAX)
            d = FPP__MIN(d, now + tick);
        fpp__pool_wait(p, d);
        n += handle_fs(pr) + fpp__pool_collect(p);
        fpp__pool_timeouts(p);
    }
    n = FPP__MAX(n, (int)(fpp__pool_finished(p) - finished));
    n += audit(pr, n);
    /* Tasks taken back from a worker go out again now, whether or not the task manager has
     * anything new to dispatch. */
    if (fpp__pool_has_waiting(p) && !pr->paused && !fpp__exec_halted(ex)) {
        fpp__pool_dispatch(p, NULL);
        fpp__pool_flush(p); /* also when some found no room: the others were placed */
    }
    return n;
}

static void p_cancel(fpp_executor *ex, bool wait)
{
    proc *pr = ex->impl;
    uint32_t n = pr->nworkers;
    bool *kill = fpp__calloc(n, sizeof *kill);
    fpp__pool_cancel(pr->pool, kill);
    if (wait) /* Ctrl-C: nothing is forked until the next dispatch */
        pr->paused = true;
    for (uint32_t w = 0; w < n; w++)
        if ((kill && kill[w]) || wait) /* Ctrl-C stops every worker, busy or not */
            kill_or_abandon(pr, w);
    fpp__free(kill);
    /* The workers are told to die and are reaped by the fork server, off the caller's path. */
}

static int p_cancel_task(fpp_executor *ex, fpp__job *j)
{
    proc *pr = ex->impl;
    return fpp__pool_cancel_task(pr->pool, j);
}

static void p_wake(fpp_executor *ex) { fpp__exec_poke(ex); }

static void p_unpin(fpp_executor *ex, fpp__job *j, bool keep)
{
    proc *pr = ex->impl;
    fpp__pool_unpin(pr->pool, j, keep);
}

static void p_pin(fpp_executor *ex, fpp__job *j, bool on)
{
    proc *pr = ex->impl;
    fpp__pool_pin(pr->pool, j, on);
}

static void p_destroy(fpp_executor *ex, bool owner)
{
    proc *pr = ex->impl;
    if (!pr)
        return;
    pr->stopping = true;
    for (uint32_t w = 0; pr->ps && w < pr->nworkers; w++) {
        pslot *s = &pr->ps[w];
        if (owner && s->state == SL_ALIVE)
            kill_slot(pr, w);
        if (s->pidfd >= 0)
            fpp__fd_close(s->pidfd);
        if (s->pending)
            fpp__slotmem_unref(s->pending);
    }
    /* The fork server kills and reaps every worker and whatever they left behind. */
    if (pr->fs.sock >= 0 || pr->fs.pid > 0)
        fpp__fs_stop(&pr->fs, FPP__FREE_GRACE_NS, owner);
    fpp__pool_destroy(pr->pool, owner);
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
    .cancel_task = p_cancel_task,
    .unpin = p_unpin,
    .pin = p_pin,
};

int fpp__process_start(fpp_executor *ex)
{
    proc *pr = fpp__calloc(1, sizeof *pr);
    if (!pr)
        return FPP_ENOMEM;
    ex->impl = pr;
    ex->ops = &process_ops;
    pr->ex = ex;
    pr->br.kind = "process executor";
    pr->starting = true;
    pr->fs.pid = -1;
    pr->fs.sock = pr->fs.pidfd = -1;
    fpp__pool_hooks hooks = {
        .owner = pr,
        .finished = job_finished,
        .bad = stop_worker,
        .stop = stop_worker,
        .poked = &ex->poked,
        .task_timeout_ms = ex->opts.task_timeout_ms,
    };
    int rc = fpp__pool_create(&pr->pool, &ex->opts, true, &hooks);
    if (rc)
        goto fail;
    fpp__pool *p = pr->pool;
    uint32_t n = pr->nworkers = fpp__pool_layout(p)->nworkers;
    pr->ps = fpp__calloc(n, sizeof *pr->ps);
    if (!pr->ps) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++)
        pr->ps[i].pidfd = -1;
    pr->cfg = (fpp__fs_config){
        .lay = *fpp__pool_layout(p),
        .args_fd = fpp__pool_args_fd(p),
        .max_tasks = ex->opts.max_tasks_per_worker,
        .max_rss_kib = ex->opts.max_worker_rss_kib,
        .init_fn = ex->init_fn,
        .init_arg = ex->opts.worker_init_arg,
        .init_len = ex->opts.worker_init_arg_len,
        .keep_fds = ex->opts.keep_fds != 0,
    };
    rc = start_fs(pr);
    if (rc)
        goto fail;
    fpp__pool_set_word(p, 1, &ex->poke);
    pr->last_progress_ns = fpp__now_ns();

    for (uint32_t w = 0; w < n; w++)
        spawn(pr, w);
    /* Wait until every first worker is up and its initializer done, or one failed. */
    int64_t until = fpp__now_ns() + FPP__START_WAIT_NS;
    for (;;) {
        fpp__pool_mark(p);
        handle_fs(pr);
        spawn_due(pr); /* the slots whose request found the server's channel full */
        if (pr->start_rc) {
            fpp__log(FPP_LOG_ERROR, "process executor: could not start %u workers: %s", n, pr->br.cause);
            rc = pr->start_rc;
            goto fail;
        }
        uint32_t ready = 0;
        for (uint32_t w = 0; w < n; w++)
            ready += pr->ps[w].state == SL_ALIVE && fpp__pool_worker_state(p, w, NULL, 0) == FPP__WS_READY;
        if (ready == n)
            break;
        if (!fpp__fs_alive(&pr->fs)) {
            fpp__log(FPP_LOG_ERROR, "process executor: the fork server died while starting");
            rc = FPP_ESYS;
            goto fail;
        }
        if (fpp__now_ns() > until) {
            fpp__log(FPP_LOG_ERROR, "process executor: workers did not start within %lld s",
                     FPP__START_WAIT_NS / 1000000000);
            rc = FPP_ESYS;
            goto fail;
        }
        fpp__pool_wait(p, fpp__now_ns() + 10000000);
    }
    pr->br.failures = 0;
    pr->starting = false;
    return 0;
fail:
    p_destroy(ex, true);
    return rc;
}
