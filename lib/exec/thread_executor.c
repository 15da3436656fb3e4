/* exec/thread_executor.c: the baseline executor. Workers are threads of this process running the
 * same worker loop over the same per-worker queues as the process executor, in private memory.
 *
 * What it cannot do, by nature: stop a running function, or survive a crash in one. A task
 * that runs over its timeout, or is cancelled while running, is abandoned: its thread is left
 * to finish on its own (its result is dropped) and a new thread takes its slot at once, so the
 * pool keeps its size. fpp_executor_free never waits for an abandoned thread, and an abandoned
 * thread that returns later touches only memory it owns (its context, its copy of its task's
 * argument (pool/worker.c), and its slot memory, by reference), never the executor. Worker
 * threads start with every signal blocked, so SIGINT always reaches the application's threads.
 *
 * Workers that cannot start (an initializer failing in a new thread) follow the process
 * executor's rules, through the same start breaker (exec/breaker.c): the slot stays empty and
 * is tried again after a back-off; after five failures in a row, while no thread is alive,
 * every waiting and later task ends FPP_CRASHED "workers cannot start: <cause>"; the first
 * thread that starts closes it.
 *
 * Ownership of a thread's context: `fate` decides, by CAS, who frees it. The executor either
 * joins the thread (fate FINISHED, or still RUNNING at destroy, after stop) or abandons it (CAS
 * RUNNING -> ABANDONED, then detach): from then on the thread frees its own context and drops
 * its reference to its slot memory when its function returns. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/timing.h"
#include "exec/exec.h"
#include "pool/pool.h"

enum { RUNNING = 0, ABANDONED = 1, FINISHED = 2 };

typedef struct tctx {
    fpp__wctx w;
    fpp__slotmem *mem;   /* the thread's own reference */
    _Atomic int fate;
    int init_fn;
    size_t init_len;
    unsigned char init_copy[]; /* the initializer's bytes, owned by the thread */
} tctx;

typedef struct thr {
    fpp__pool *pool;     /* first: the tests reach it through ex->impl */
    fpp_executor *ex;
    uint32_t nworkers;
    pthread_t *th;
    tctx **ctx;          /* per slot: the live thread's context, or NULL */
    int64_t last_progress_ns;
    int empty;           /* slots without a thread (their start failed; tried again later) */
    fpp__breaker br;
} thr;

static void *thread_main(void *arg)
{
    tctx *c = arg;
    fpp__worker_run(&c->w, c->init_fn, c->init_copy, c->init_len);
    int expect = RUNNING;
    if (atomic_compare_exchange_strong(&c->fate, &expect, FINISHED)) {
        /* After the CAS, so that the parent woken by it sees FINISHED (our slot memory lives
         * until the parent has joined us). */
        fpp__worker_ring(&c->w);
    } else {
        /* Abandoned: nobody will join us; what we hold is ours to free. */
        fpp__slotmem_unref(c->mem);
        fpp__free(c);
    }
    return NULL;
}

static int start_thread(thr *t, uint32_t w)
{
    fpp_executor *ex = t->ex;
    size_t ilen = ex->opts.worker_init_arg_len;
    tctx *c = fpp__calloc(1, sizeof *c + ilen);
    fpp__slotmem *mem = c ? fpp__slotmem_new(fpp__pool_layout(t->pool), false) : NULL;
    if (!mem) {
        fpp__free(c);
        return FPP_ENOMEM;
    }
    c->mem = mem;
    c->init_fn = ex->init_fn;
    if (ilen)
        memcpy(c->init_copy, ex->opts.worker_init_arg, ilen);
    c->init_len = ilen;
    fpp__wctx_thread(&c->w, t->pool, mem, w, ex->opts.max_tasks_per_worker);
    fpp__slotmem_ref(mem); /* one reference for the pool, one for the thread */
    fpp__pool_attach(t->pool, w, mem);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&t->th[w], NULL, thread_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        fpp__pool_recover(t->pool, w, FPP_CRASHED, 0, "worker thread could not start");
        fpp__slotmem_unref(mem);
        fpp__free(c);
        errno = e;
        return fpp__sys_error("pthread_create", "worker");
    }
    t->ctx[w] = c;
    return 0;
}

/* Ends slot w's thread: joined if it finished, abandoned if it is still in a task. */
static void end_thread(thr *t, uint32_t w)
{
    tctx *c = t->ctx[w];
    if (!c)
        return;
    t->ctx[w] = NULL;
    /* Whatever touches c comes before the CAS: once the thread sees ABANDONED it frees c
     * itself. Told first, the thread starts no new claim... */
    fpp__worker_abandon(&c->w);
    /* ...and one in progress is let finish copying its argument (never the function): the pool
     * frees the argument's block once the thread is abandoned. */
    while (fpp__worker_claiming(&c->w) && atomic_load(&c->fate) == RUNNING)
        sched_yield();
    int expect = RUNNING;
    if (atomic_compare_exchange_strong(&c->fate, &expect, ABANDONED)) {
        pthread_detach(t->th[w]);
        return;
    }
    /* It finished (retired, its initializer failed, or it saw `abandoned` while idle): join. */
    pthread_join(t->th[w], NULL);
    fpp__slotmem_unref(c->mem);
    fpp__free(c);
}

/* A task of slot w ran over its timeout, was cancelled while running, or the worker wrote
 * nonsense: give up on the thread and put a new one in its place. */
static void replace(thr *t, uint32_t w, fpp_status st, const char *why)
{
    end_thread(t, w);
    fpp__pool_recover(t->pool, w, st, 0, why);
    atomic_fetch_add(&t->ex->restarts, 1);
    if (start_thread(t, w) != 0) {
        fpp__log(FPP_LOG_ERROR, "thread executor: could not replace worker thread %u", w);
        t->empty++; /* tried again by the next poll */
    }
}

/* Pool hooks. */
static void stop_worker(void *owner, uint32_t w)
{
    thr *t = owner;
    replace(t, w, fpp__pool_timed_out(t->pool, w) ? FPP_TIMEOUT : FPP_CRASHED, "its thread is left to finish");
}

static void bad_worker(void *owner, uint32_t w)
{
    replace(owner, w, FPP_CRASHED, "worker thread abandoned: its memory was written over");
}

static void job_finished(void *owner, fpp__job *j)
{
    thr *t = owner;
    fpp__exec_finished(t->ex, j);
}

/* Ends the threads that finished (retired after max_tasks_per_worker tasks, or whose
 * initializer failed) and starts threads in empty slots once the back-off allows. */
static int reap_threads(thr *t)
{
    int n = 0;
    for (uint32_t w = 0; w < t->nworkers; w++) {
        tctx *c = t->ctx[w];
        if (!c || atomic_load(&c->fate) != FINISHED)
            continue;
        char msg[FPP__ERR_MAX];
        bool init_failed = fpp__pool_worker_state(t->pool, w, msg, sizeof msg) == FPP__WS_INIT_FAILED;
        end_thread(t, w);
        n += fpp__pool_recover(t->pool, w, FPP_CRASHED, 0, "worker thread ended");
        atomic_fetch_add(&t->ex->restarts, 1);
        if (init_failed) {
            fpp__breaker_fail(&t->br, "worker_init %s failed: %s", t->ex->opts.worker_init, msg);
            t->empty++;
            continue;
        }
        fpp__breaker_ok(&t->br);
        if (start_thread(t, w) != 0)
            t->empty++;
    }
    if (t->empty && fpp__breaker_due(&t->br, fpp__now_ns())) {
        for (uint32_t w = 0; w < t->nworkers; w++) {
            if (t->ctx[w])
                continue;
            if (start_thread(t, w) == 0)
                t->empty--;
        }
    }
    return n;
}

/* While the breaker is tripped and no thread runs, what waits fails with the cause. */
static int breaker_fail(thr *t)
{
    if (!t->br.broken || t->empty < (int)t->nworkers || !fpp__pool_has_waiting(t->pool))
        return 0;
    char msg[sizeof t->br.cause + 32];
    fpp__breaker_message(&t->br, msg, sizeof msg);
    return fpp__pool_fail_waiting(t->pool, FPP_CRASHED, msg);
}

static int t_dispatch(fpp_executor *ex, fpp__job *j)
{
    thr *t = ex->impl;
    if (t->br.broken && t->empty == (int)t->nworkers) {
        /* Taken, to fail in the next poll with the breaker's cause. */
        fpp__pool_defer(t->pool, j);
        return 0;
    }
    return fpp__pool_dispatch(t->pool, j);
}

static void t_flush(fpp_executor *ex)
{
    thr *t = ex->impl;
    fpp__pool_flush(t->pool);
}

static int t_poll(fpp_executor *ex, int64_t deadline)
{
    thr *t = ex->impl;
    fpp__pool *p = t->pool;
    fpp__pool_mark(p);
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    uint64_t finished = fpp__pool_finished(p);
    int n = fpp__pool_collect(p);
    if (ex->opts.max_tasks_per_worker || ex->init_fn >= 0 || t->empty)
        n += reap_threads(t);
    n += breaker_fail(t);
    int64_t tdl = fpp__pool_timeouts(p); /* may finish jobs: abandons their threads */
    fpp__pool_steal(p);
    n = FPP__MAX(n, (int)(fpp__pool_finished(p) - finished));
    if (n == 0 && deadline > 0) {
        int64_t d = FPP__MIN(deadline, tdl);
        int64_t now = fpp__now_ns();
        int64_t tick = fpp__pool_tick_ns(p);
        if (tick != INT64_MAX)
            d = FPP__MIN(d, now + tick);
        if (ex->opts.max_tasks_per_worker)
            d = FPP__MIN(d, now + FPP__THREAD_REAP_NS);
        if (t->empty)
            d = FPP__MIN(d, FPP__MAX(t->br.next_ns, now + FPP__POLL_MIN_NS));
        if (fpp__pool_in_flight(p) > 0)
            d = FPP__MIN(d, FPP__MAX(t->last_progress_ns + FPP__AUDIT_NS, now + FPP__POLL_MIN_NS));
        fpp__pool_wait(p, d);
        n += fpp__pool_collect(p);
        fpp__pool_timeouts(p);
    }
    n = FPP__MAX(n, (int)(fpp__pool_finished(p) - finished));
    int64_t now = fpp__now_ns();
    if (n > 0 || fpp__pool_in_flight(p) == 0)
        t->last_progress_ns = now;
    else if (now - t->last_progress_ns >= FPP__AUDIT_NS) {
        t->last_progress_ns = now;
        n += fpp__pool_audit(p);
    }
    if (fpp__pool_has_waiting(p) && !fpp__exec_halted(ex)) {
        fpp__pool_dispatch(p, NULL);
        fpp__pool_flush(p); /* also when some found no room: the others were placed */
    }
    return n;
}

static void t_cancel(fpp_executor *ex, bool wait)
{
    thr *t = ex->impl;
    bool *kill = fpp__calloc(t->nworkers, sizeof *kill);
    fpp__pool_cancel(t->pool, kill);
    /* Running functions cannot be stopped. Ctrl-C (wait) waits for them, as documented;
     * otherwise their entries are freed as they report. */
    int64_t until = fpp__now_ns() + FPP__WAIT_FOREVER_NS;
    while (wait && fpp__pool_in_flight(t->pool) > 0 && fpp__now_ns() < until) {
        fpp__pool_mark(t->pool);
        fpp__pool_collect(t->pool);
        if (fpp__pool_in_flight(t->pool) > 0)
            fpp__pool_wait(t->pool, fpp__now_ns() + 10000000);
    }
    fpp__free(kill);
}

static int t_cancel_task(fpp_executor *ex, fpp__job *j)
{
    thr *t = ex->impl;
    return fpp__pool_cancel_task(t->pool, j);
}

static void t_wake(fpp_executor *ex) { fpp__exec_poke(ex); }

static void t_unpin(fpp_executor *ex, fpp__job *j, bool keep)
{
    thr *t = ex->impl;
    fpp__pool_unpin(t->pool, j, keep);
}

static void t_pin(fpp_executor *ex, fpp__job *j, bool on)
{
    thr *t = ex->impl;
    fpp__pool_pin(t->pool, j, on);
}

static void t_destroy(fpp_executor *ex, bool owner)
{
    thr *t = ex->impl;
    if (!t)
        return;
    for (uint32_t w = 0; owner && t->ctx && w < t->nworkers; w++)
        if (t->ctx[w])
            fpp__worker_stop(&t->ctx[w]->w);
    /* A thread still inside a function is abandoned, not waited for. */
    for (uint32_t w = 0; owner && t->ctx && w < t->nworkers; w++)
        end_thread(t, w);
    /* In another process (a fork of the parent) the threads do not exist: only free memory. */
    fpp__pool_destroy(t->pool, owner);
    fpp__free(t->th);
    fpp__free(t->ctx);
    fpp__free(t);
    ex->impl = NULL;
}

static const fpp__exec_ops thread_ops = {
    .kind = "thread",
    .dispatch = t_dispatch,
    .flush = t_flush,
    .poll = t_poll,
    .cancel = t_cancel,
    .wake = t_wake,
    .destroy = t_destroy,
    .cancel_task = t_cancel_task,
    .unpin = t_unpin,
    .pin = t_pin,
};

int fpp__thread_start(fpp_executor *ex)
{
    thr *t = fpp__calloc(1, sizeof *t);
    if (!t)
        return FPP_ENOMEM;
    ex->impl = t;
    ex->ops = &thread_ops;
    t->ex = ex;
    t->br.kind = "thread executor";
    fpp__pool_hooks hooks = {
        .owner = t,
        .finished = job_finished,
        .bad = bad_worker,
        .stop = stop_worker,
        .poked = &ex->poked,
        .task_timeout_ms = ex->opts.task_timeout_ms,
    };
    int rc = fpp__pool_create(&t->pool, &ex->opts, false, &hooks);
    if (rc)
        goto fail;
    fpp__pool_set_word(t->pool, 0, &ex->poke);
    t->last_progress_ns = fpp__now_ns();
    uint32_t n = t->nworkers = fpp__pool_layout(t->pool)->nworkers;
    t->th = fpp__calloc(n, sizeof *t->th);
    t->ctx = fpp__calloc(n, sizeof *t->ctx);
    if (!t->th || !t->ctx) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t w = 0; w < n; w++) {
        rc = start_thread(t, w);
        if (rc)
            goto fail;
    }
    /* The first workers' initializer must succeed: wait for each to say so (as long as it
     * takes: it runs in this process, so it cannot be stuck where a process could not be). */
    for (uint32_t w = 0; w < n; w++) {
        char msg[FPP__ERR_MAX];
        uint32_t s = fpp__pool_await_state(t->pool, w, INT64_MAX, msg, sizeof msg);
        if (s == FPP__WS_INIT_FAILED) {
            fpp__log(FPP_LOG_ERROR, "thread executor: worker_init %s failed: %s", ex->opts.worker_init, msg);
            rc = FPP_EINIT;
            goto fail;
        }
    }
    return 0;
fail:
    t_destroy(ex, true);
    return rc;
}
