/* thread_executor.c: the baseline executor. Workers are threads of this process running the
 * same worker loop over the same per-worker queues as the process executor, in private memory.
 *
 * What it cannot do, by nature: stop a running function, or survive a crash in one. A task
 * that runs over its timeout, or is cancelled while running, is abandoned: its thread is left
 * to finish on its own (its result is dropped) and a new thread takes its slot at once, so the
 * pool keeps its size. fpp_executor_free never waits for an abandoned thread, and an abandoned
 * thread that returns later touches only memory it owns (its context, its copy of its task's
 * argument (worker.c), and its slot memory, by reference), never the executor. Worker threads start with every signal blocked, so SIGINT
 * always reaches the application's threads.
 *
 * Workers that cannot start (an initializer failing in a new thread) follow the process
 * executor's rules: the slot stays empty and is tried again after a back-off (10 ms doubling
 * to 1 s); after five failures in a row the breaker trips: while no thread is alive, every
 * waiting and later task ends FPP_CRASHED "workers cannot start: <cause>"; the first thread
 * that starts closes it.
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

#include "fpp_internal.h"

enum { RUNNING = 0, ABANDONED = 1, FINISHED = 2 };

typedef struct tctx {
    fpp__wctx w;
    fpp__slotmem *mem;   /* the thread's own reference */
    _Atomic int fate;
    int init_fn;
    const void *init_arg;
    size_t init_len;
    unsigned char init_copy[]; /* the initializer's bytes, owned by the thread */
} tctx;

#define BACKOFF_MIN_NS 10000000
#define BACKOFF_MAX_NS 1000000000
#define BREAKER_FAILURES 5

typedef struct thr {
    fpp__pool pool;
    fpp_executor *ex;
    pthread_t *th;
    tctx **ctx;          /* per slot: the live thread's context, or NULL */
    int64_t last_progress_ns;
    int empty;           /* slots without a thread (their start failed; tried again later) */
    int failures;        /* threads in a row that could not start */
    bool broken;         /* the breaker tripped */
    int64_t next_start_ns;
    int64_t last_fail_log_ns;
    char cause[FPP__ERR_MAX + 64];
} thr;

static void *thread_main(void *arg)
{
    tctx *c = arg;
    fpp__wblock *b = fpp__slot_block(c->w.slot);
    char msg[FPP__ERR_MAX];
    if (c->init_fn >= 0 && fpp__worker_init(c->init_fn, c->init_arg, c->init_len, &c->w, msg, sizeof msg) != 0) {
        memcpy(b->msg, msg, sizeof msg);
        atomic_store(&b->wstate, FPP__WS_INIT_FAILED);
    } else {
        atomic_store(&b->wstate, FPP__WS_READY);
        fpp__ec_post(&b->bell);
        fpp__worker_main(&c->w);
    }
    int expect = RUNNING;
    if (atomic_compare_exchange_strong(&c->fate, &expect, FINISHED)) {
        /* After the CAS, so that the parent woken by it sees FINISHED (our slot memory lives
         * until the parent has joined us). */
        fpp__ec_post(&b->bell);
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
    fpp__slotmem *mem = c ? fpp__slotmem_new(&t->pool.lay, false) : NULL;
    if (!mem) {
        fpp__free(c);
        return FPP_ENOMEM;
    }
    c->mem = mem;
    c->init_fn = ex->init_fn;
    if (ilen)
        memcpy(c->init_copy, ex->opts.worker_init_arg, ilen);
    c->init_arg = c->init_copy;
    c->init_len = ilen;
    c->w = (fpp__wctx){
        .slot = mem->r.base,
        .args = t->pool.args.base,
        .lay = t->pool.lay,
        .slot_id = w,
        .process = false,
        .max_tasks = ex->opts.max_tasks_per_worker,
        .max_rss_kib = 0, /* one address space: a per-thread cap means nothing */
        .token = fpp__proc_token(),
    };
    fpp__slotmem_ref(mem); /* one reference for the pool, one for the thread */
    fpp__pool_attach(&t->pool, w, mem);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&t->th[w], NULL, thread_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        fpp__pool_recover(&t->pool, w, FPP_CRASHED, 0, "worker thread could not start");
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
     * itself. Told first, the thread starts no new claim (worker.c looks after raising
     * `claiming`; both seq_cst)... */
    atomic_store(&c->w.abandoned, 1);
    fpp__ec_post(&fpp__slot_block(c->w.slot)->wake);
    /* ...and one in progress is let finish copying its argument (a few instructions, never the
     * function): the pool frees the argument's block once the thread is abandoned. */
    while (atomic_load(&c->w.claiming) && atomic_load(&c->fate) == RUNNING)
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
static void replace(fpp__pool *p, uint32_t w, fpp_status st, const char *why)
{
    thr *t = p->owner;
    end_thread(t, w);
    fpp__pool_recover(p, w, st, 0, why);
    atomic_fetch_add(&t->ex->restarts, 1);
    if (start_thread(t, w) != 0) {
        fpp__log(FPP_LOG_ERROR, "thread executor: could not replace worker thread %u", w);
        t->empty++; /* tried again by the next poll */
    }
}

static void stop_worker(fpp__pool *p, uint32_t w)
{
    char why[160];
    snprintf(why, sizeof why, "its thread is left to finish");
    replace(p, w, p->wp[w].timeout_ticket ? FPP_TIMEOUT : FPP_CRASHED, why);
}

static void bad_worker(fpp__pool *p, uint32_t w)
{
    replace(p, w, FPP_CRASHED, "worker thread abandoned: its memory was written over");
}

/* A thread could not start: back off, say so (once a second at most), trip the breaker. */
static void start_failure(thr *t, const char *msg)
{
    snprintf(t->cause, sizeof t->cause, "worker_init %s failed: %s", t->ex->opts.worker_init, msg);
    t->failures++;
    int64_t now = fpp__now_ns();
    int64_t backoff = BACKOFF_MIN_NS << FPP__MIN(t->failures - 1, 7);
    t->next_start_ns = now + FPP__MIN(backoff, (int64_t)BACKOFF_MAX_NS);
    if (t->failures >= BREAKER_FAILURES && !t->broken) {
        t->broken = true;
        fpp__log(FPP_LOG_ERROR, "thread executor: workers cannot start: %s (%d times in a row); "
                 "tasks fail while no worker runs", t->cause, t->failures);
        t->last_fail_log_ns = now;
    } else if (now - t->last_fail_log_ns >= 1000000000) {
        fpp__log(FPP_LOG_WARN, "thread executor: a worker could not start: %s; trying again", t->cause);
        t->last_fail_log_ns = now;
    }
}

/* Ends the threads that finished (retired after max_tasks_per_worker tasks, or whose
 * initializer failed) and starts threads in empty slots once the back-off allows. */
static int reap_threads(thr *t)
{
    int n = 0;
    for (uint32_t w = 0; w < t->pool.lay.nworkers; w++) {
        tctx *c = t->ctx[w];
        if (!c || atomic_load(&c->fate) != FINISHED)
            continue;
        fpp__wblock *b = fpp__slot_block(c->w.slot);
        bool init_failed = atomic_load(&b->wstate) == FPP__WS_INIT_FAILED;
        char msg[FPP__ERR_MAX];
        memcpy(msg, b->msg, sizeof msg);
        msg[sizeof msg - 1] = 0;
        end_thread(t, w);
        n += fpp__pool_recover(&t->pool, w, FPP_CRASHED, 0, "worker thread ended");
        atomic_fetch_add(&t->ex->restarts, 1);
        if (init_failed) {
            start_failure(t, msg);
            t->empty++;
            continue;
        }
        if (t->broken)
            fpp__log(FPP_LOG_INFO, "thread executor: workers start again");
        t->failures = 0;
        t->broken = false;
        if (start_thread(t, w) != 0)
            t->empty++;
    }
    if (t->empty && fpp__now_ns() >= t->next_start_ns) {
        for (uint32_t w = 0; w < t->pool.lay.nworkers; w++) {
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
    if (!t->broken || t->empty < (int)t->pool.lay.nworkers || !t->pool.retry.head)
        return 0;
    int n = 0;
    while (t->pool.retry.head) {
        fpp_task *task = fpp__tq_pop(&t->pool.retry);
        fpp__task_fail(task, FPP_CRASHED, 0, "workers cannot start: %s", t->cause);
        fpp__pool_finish(&t->pool, task, -1);
        n++;
    }
    return n;
}

static int t_dispatch(fpp_executor *ex, fpp_task *task)
{
    thr *t = ex->impl;
    if (t->broken && t->empty == (int)t->pool.lay.nworkers) {
        /* Taken, to fail in the next poll with the breaker's cause. */
        task->tag = FPP__NIL;
        fpp__tq_push(&t->pool.retry, task);
        return 0;
    }
    return fpp__pool_dispatch(&t->pool, task);
}

static void t_flush(fpp_executor *ex)
{
    thr *t = ex->impl;
    fpp__pool_flush(&t->pool);
}

#define AUDIT_NS 250000000

static int t_poll(fpp_executor *ex, int64_t deadline)
{
    thr *t = ex->impl;
    fpp__pool *p = &t->pool;
    fpp__pool_mark(p);
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    uint64_t finished = p->finished;
    int n = fpp__pool_collect(p);
    if (ex->opts.max_tasks_per_worker || ex->init_fn >= 0 || t->empty)
        n += reap_threads(t);
    n += breaker_fail(t);
    int64_t tdl = fpp__pool_timeouts(p); /* may finish tasks: abandons their threads */
    fpp__pool_steal(p);
    n = FPP__MAX(n, (int)(p->finished - finished));
    if (n == 0 && deadline > 0) {
        int64_t d = FPP__MIN(deadline, tdl);
        int64_t now = fpp__now_ns();
        int64_t tick = fpp__pool_tick_ns(p);
        if (tick != INT64_MAX)
            d = FPP__MIN(d, now + tick);
        if (ex->opts.max_tasks_per_worker)
            d = FPP__MIN(d, now + 2000000);
        if (t->empty)
            d = FPP__MIN(d, FPP__MAX(t->next_start_ns, now + 1000000));
        if (fpp__pool_in_flight(p) > 0)
            d = FPP__MIN(d, FPP__MAX(t->last_progress_ns + AUDIT_NS, now + 1000000));
        fpp__pool_wait(p, d);
        n += fpp__pool_collect(p);
        fpp__pool_timeouts(p);
    }
    n = FPP__MAX(n, (int)(p->finished - finished));
    int64_t now = fpp__now_ns();
    if (n > 0 || fpp__pool_in_flight(p) == 0)
        t->last_progress_ns = now;
    else if (now - t->last_progress_ns >= AUDIT_NS) {
        t->last_progress_ns = now;
        n += fpp__pool_audit(p);
    }
    if (p->retry.head && !(ex->tm && fpp__tm_halted(ex->tm)) && fpp__pool_dispatch(p, NULL) == 0)
        fpp__pool_flush(p);
    return n;
}

static void t_cancel(fpp_executor *ex, bool wait)
{
    thr *t = ex->impl;
    bool *kill = fpp__calloc(t->pool.lay.nworkers, sizeof *kill);
    fpp__pool_cancel(&t->pool, kill);
    /* Running functions cannot be stopped. Ctrl-C (wait) waits for them, as documented;
     * otherwise their entries are freed as they report. */
    int64_t until = fpp__now_ns() + (int64_t)3600 * 1000000000;
    while (wait && fpp__pool_in_flight(&t->pool) > 0 && fpp__now_ns() < until) {
        fpp__pool_mark(&t->pool);
        fpp__pool_collect(&t->pool);
        if (fpp__pool_in_flight(&t->pool) > 0)
            fpp__pool_wait(&t->pool, fpp__now_ns() + 10000000);
    }
    fpp__free(kill);
}

static int t_cancel_task(fpp_executor *ex, fpp_task *task)
{
    thr *t = ex->impl;
    return fpp__pool_cancel_task(&t->pool, task);
}

static void t_wake(fpp_executor *ex) { fpp__exec_poke(ex); }

static void t_unpin(fpp_executor *ex, fpp_task *t, bool keep)
{
    thr *th = ex->impl;
    fpp__pool_unpin(&th->pool, t, keep);
}

static void t_destroy(fpp_executor *ex, bool owner)
{
    thr *t = ex->impl;
    if (!t)
        return;
    for (uint32_t w = 0; owner && t->ctx && w < t->pool.lay.nworkers; w++) {
        tctx *c = t->ctx[w];
        if (!c)
            continue;
        atomic_store(&c->w.stop, 1);
        fpp__ec_post(&fpp__slot_block(c->w.slot)->wake);
    }
    for (uint32_t w = 0; owner && t->ctx && w < t->pool.lay.nworkers; w++) {
        tctx *c = t->ctx[w];
        if (!c)
            continue;
        /* A thread still inside a function is abandoned, not waited for. */
        end_thread(t, w);
    }
    /* In another process (a fork of the parent) the threads do not exist: only free memory. */
    fpp__pool_destroy(&t->pool, owner);
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
};

int fpp__thread_start(fpp_executor *ex)
{
    thr *t = fpp__calloc(1, sizeof *t);
    if (!t)
        return FPP_ENOMEM;
    ex->impl = t;
    ex->ops = &thread_ops;
    t->ex = ex;
    int rc = fpp__pool_create(&t->pool, &ex->opts, false);
    if (rc)
        goto fail;
    t->pool.ex = ex;
    t->pool.owner = t;
    t->pool.bad = bad_worker;
    t->pool.stop = stop_worker;
    t->pool.extra[0] = &ex->poke;
    t->pool.nextra = 1;
    t->last_progress_ns = fpp__now_ns();
    uint32_t n = t->pool.lay.nworkers;
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
    /* The first workers' initializer must succeed: wait for each to say so. */
    for (uint32_t w = 0; w < n; w++) {
        fpp__wblock *b = t->pool.wp[w].b;
        for (;;) {
            uint32_t v = fpp__ec_arm(&b->bell);
            uint32_t s = atomic_load(&b->wstate);
            if (s == FPP__WS_READY)
                break;
            if (s == FPP__WS_INIT_FAILED) {
                char msg[FPP__ERR_MAX];
                memcpy(msg, b->msg, sizeof msg);
                msg[sizeof msg - 1] = 0;
                fpp__log(FPP_LOG_ERROR, "thread executor: worker_init %s failed: %s",
                         ex->opts.worker_init, msg);
                rc = FPP_EINIT;
                goto fail;
            }
            fpp__ec_wait(&b->bell, v, fpp__now_ns() + 100000000);
        }
    }
    return 0;
fail:
    t_destroy(ex, true);
    return rc;
}
