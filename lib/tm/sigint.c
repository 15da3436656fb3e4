/* tm/sigint.c: one Ctrl-C stops the task manager's blocking calls.
 *
 * Task managers register here (unless FPP_TM_NO_SIGINT). Our handler is installed the first
 * time a registered task manager blocks, and stays installed until the last one unregisters
 * or is interrupted, so that a blocking call costs no system call for it. When SIGINT arrives:
 *   - inside a blocking call: mark that task manager hit and wake its executor (an atomic add
 *     and a futex wake: async-signal-safe); the call cancels everything and returns FPP_EINTR;
 *   - outside any call: do what the previous disposition would have done (ignore, call the
 *     application's handler, or restore the default and re-raise to end the process), so that
 *     keeping our handler installed between calls changes nothing the application can see;
 *   - during the cleanup that follows a first SIGINT: end the process at once (default action).
 * The table is written under a mutex by the caller's threads and read by the handler through
 * atomics only. If the application installs its own SIGINT handler after ours, it owns SIGINT
 * from then on and we do not put ours back nor clobber theirs. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "tm/tm.h"

#define MAX_REGS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(fpp__sigint_reg *) regs[MAX_REGS];
static int nregs;
static struct sigaction previous;
static _Atomic int installed;
static _Atomic int cleaning;

static void handler(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    if (atomic_load(&cleaning)) {
        /* A second Ctrl-C while we clean up: the user means it. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGINT, &dfl, NULL);
        kill(getpid(), SIGINT); /* delivered, with the default action, when we return */
        errno = saved;
        return;
    }
    bool any = false;
    for (int i = 0; i < MAX_REGS; i++) {
        fpp__sigint_reg *r = atomic_load(&regs[i]);
        /* A registration copied into another process (a fork of the parent) is not ours to
         * act on: its executor belongs to the parent. */
        if (r && atomic_load(&r->in_call) && r->ex->owner == fpp__proc_token()) {
            atomic_store(&r->hit, 1);
            r->ex->ops->wake(r->ex);
            any = true;
        }
    }
    if (!any) {
        if (previous.sa_flags & SA_SIGINFO) {
            if (previous.sa_sigaction)
                previous.sa_sigaction(sig, info, uctx);
        } else if (previous.sa_handler == SIG_DFL) {
            sigaction(SIGINT, &previous, NULL);
            atomic_store(&installed, 0);
            kill(getpid(), SIGINT);
        } else if (previous.sa_handler != SIG_IGN) {
            previous.sa_handler(sig);
        }
    }
    errno = saved;
}

static void install_locked(void)
{
    if (atomic_load(&installed))
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, &previous) == 0)
        atomic_store(&installed, 1);
}

static void uninstall_locked(void)
{
    if (!atomic_load(&installed))
        return;
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == handler)
        sigaction(SIGINT, &previous, NULL);
    atomic_store(&installed, 0);
}

int fpp__sigint_register(fpp__sigint_reg *r)
{
    r->slot = -1;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_REGS; i++) {
        if (!atomic_load(&regs[i])) {
            r->slot = i;
            atomic_store(&regs[i], r);
            nregs++;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    if (r->slot < 0) {
        fpp__log(FPP_LOG_WARN, "more than %d task managers: this one ignores SIGINT", MAX_REGS);
        return FPP_ESTATE;
    }
    return 0;
}

/* Called when a registered task manager enters a blocking call. */
void fpp__sigint_enter(fpp__sigint_reg *r)
{
    atomic_store(&r->in_call, 1);
    if (!atomic_load_explicit(&installed, memory_order_relaxed)) {
        pthread_mutex_lock(&lock);
        install_locked();
        pthread_mutex_unlock(&lock);
    }
}

void fpp__sigint_leave(fpp__sigint_reg *r) { atomic_store(&r->in_call, 0); }

/* After an interrupted call: give SIGINT back to the application. */
void fpp__sigint_restore(void)
{
    pthread_mutex_lock(&lock);
    uninstall_locked();
    pthread_mutex_unlock(&lock);
}

void fpp__sigint_unregister(fpp__sigint_reg *r)
{
    if (r->slot < 0)
        return;
    pthread_mutex_lock(&lock);
    atomic_store(&regs[r->slot], NULL);
    r->slot = -1;
    if (--nregs == 0)
        uninstall_locked();
    pthread_mutex_unlock(&lock);
}

void fpp__sigint_forget(fpp__sigint_reg *r)
{
    /* In a process other than the creator: the mutex may be a copy held by a thread of the
     * parent, so drop the entry with one atomic store and leave the disposition alone. */
    if (r->slot >= 0)
        atomic_store(&regs[r->slot], NULL);
    r->slot = -1;
}

void fpp__sigint_cleanup_begin(void) { atomic_store(&cleaning, 1); }
void fpp__sigint_cleanup_end(void) { atomic_store(&cleaning, 0); }
