/* thread_executor.c: the baseline executor. Workers are threads of this process running the
 * same worker loop over the same pool layout as the process executor, in private memory.
 *
 * What it cannot do, by nature: stop a running function. A timed-out task is reported
 * FPP_TIMEOUT and its thread is left to finish (the result is dropped); cancelling abandons
 * running tasks the same way; a crash in a task takes the whole process down. Worker threads
 * start with every signal blocked, so SIGINT always reaches the application's threads.
 *
 * Threads and what they own: each worker thread its block and arena; the caller everything
 * else. A worker that retires (max_tasks_per_worker) is joined and restarted by the caller. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "fpp_internal.h"

typedef struct thr {
    fpp__pool pool;
    fpp_executor *ex;
    pthread_t *th;
    bool *running;
    fpp__wctx *ctx;
    _Atomic int stop;
    int64_t last_progress_ns;
} thr;

static void *thread_main(void *arg)
{
    fpp__wctx *w = arg;
    fpp__worker_main(w);
    return NULL;
}

static int start_thread(thr *t, uint32_t w)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&t->th[w], NULL, thread_main, &t->ctx[w]);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        errno = e;
        return fpp__sys_error("pthread_create", "worker");
    }
    t->running[w] = true;
    t->pool.wp[w].alive = true;
    return 0;
}

static void over_timeout(fpp__pool *p, uint32_t w, uint64_t ticket)
{
    char why[128];
    snprintf(why, sizeof why, "task exceeded its timeout of %lld ms (its thread is left to finish)",
             (long long)p->wp[w].timeout_ms);
    fpp__pool_abandon(p, ticket, FPP_TIMEOUT, why);
}

/* Restarts workers that retired after max_tasks_per_worker tasks. */
static int restart_retired(thr *t)
{
    int n = 0;
    for (uint32_t w = 0; w < t->pool.lay.nworkers; w++) {
        fpp__wblock *b = fpp__wblock_of(t->pool.base, &t->pool.lay, w);
        if (!t->running[w] || atomic_load(&b->phase) != FPP__PH_RETIRED)
            continue;
        pthread_join(t->th[w], NULL);
        t->running[w] = false;
        n += fpp__pool_recover(&t->pool, w, FPP_CRASHED, 0, "worker thread ended");
        atomic_fetch_add(&t->ex->restarts, 1);
        start_thread(t, w);
    }
    return n;
}

static void bad_worker(fpp__pool *p, uint32_t w)
{
    FPP__UNUSED(p);
    FPP__UNUSED(w); /* a thread cannot be replaced; the error was logged */
}

static int t_dispatch(fpp_executor *ex, fpp_task *task)
{
    thr *t = ex->impl;
    return fpp__pool_dispatch(&t->pool, task);
}

static void t_flush(fpp_executor *ex)
{
    thr *t = ex->impl;
    fpp__pool_flush(&t->pool);
}

static int t_poll(fpp_executor *ex, int64_t deadline)
{
    thr *t = ex->impl;
    uint32_t seen = fpp__pool_seq(&t->pool);
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    int n = fpp__pool_collect(&t->pool);
    if (ex->opts.max_tasks_per_worker)
        n += restart_retired(t);
    int64_t tdl = fpp__pool_timeouts(&t->pool, ex->opts.task_timeout_ms, over_timeout);
    if (n == 0 && deadline > 0) {
        int64_t d = FPP__MIN(deadline, tdl);
        unsigned tick = fpp__pool_timeout_tick_ms(&t->pool, ex->opts.task_timeout_ms);
        if (tick)
            d = FPP__MIN(d, fpp__now_ns() + FPP__MAX((int64_t)tick * 250000, 1000000));
        if (ex->opts.max_tasks_per_worker)
            d = FPP__MIN(d, fpp__now_ns() + 2000000);
        if (fpp__pool_in_flight(&t->pool) > 0)
            d = FPP__MIN(d, FPP__MAX(t->last_progress_ns + 250000000, fpp__now_ns() + 1000000));
        fpp__pool_wait(&t->pool, seen, d);
        n += fpp__pool_collect(&t->pool);
    }
    if (t->pool.retry.head && !(ex->tm && fpp__tm_halted(ex->tm)) && fpp__pool_dispatch(&t->pool, NULL) == 0)
        fpp__pool_flush(&t->pool);
    int64_t now = fpp__now_ns();
    if (n > 0 || fpp__pool_in_flight(&t->pool) == 0)
        t->last_progress_ns = now;
    else if (now - t->last_progress_ns >= 250000000) {
        t->last_progress_ns = now;
        n += fpp__pool_audit(&t->pool);
    }
    return n;
}

static void t_cancel(fpp_executor *ex, bool wait)
{
    thr *t = ex->impl;
    fpp__pool_cancel(&t->pool, NULL);
    /* Abandoned entries are freed as their functions return and report. */
    while (wait && fpp__pool_in_flight(&t->pool) > 0) {
        fpp__pool_collect(&t->pool);
        if (fpp__pool_in_flight(&t->pool) > 0)
            fpp__pool_wait(&t->pool, fpp__pool_seq(&t->pool), fpp__now_ns() + 10000000);
    }
}

static int t_cancel_task(fpp_executor *ex, fpp_task *task)
{
    thr *t = ex->impl;
    int w;
    /* A running function cannot be stopped: its thread is left to finish (result dropped). */
    return fpp__pool_cancel_one(&t->pool, task, false, &w);
}

static void t_wake(fpp_executor *ex)
{
    thr *t = ex->impl;
    fpp__exec_poke(ex, &t->pool.hdr->parent_wake);
}

static void t_destroy(fpp_executor *ex, bool owner)
{
    thr *t = ex->impl;
    if (!t)
        return;
    if (!owner) {
        /* A fork of the creator: the worker threads do not exist here. Free the memory only. */
        fpp__pool_destroy(&t->pool);
        fpp__free(t->th);
        fpp__free(t->running);
        fpp__free(t->ctx);
        fpp__free(t);
        ex->impl = NULL;
        return;
    }
    atomic_store(&t->stop, 1);
    for (uint32_t w = 0; t->running && w < t->pool.lay.nworkers; w++) {
        if (!t->running[w])
            continue;
        fpp__event_post(&fpp__wblock_of(t->pool.base, &t->pool.lay, w)->wake);
        pthread_join(t->th[w], NULL);
    }
    fpp__pool_destroy(&t->pool);
    fpp__free(t->th);
    fpp__free(t->running);
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
    t->last_progress_ns = fpp__now_ns();
    t->pool.bad = bad_worker;
    uint32_t n = t->pool.lay.nworkers;
    t->th = fpp__calloc(n, sizeof *t->th);
    t->running = fpp__calloc(n, sizeof *t->running);
    t->ctx = fpp__calloc(n, sizeof *t->ctx);
    if (!t->th || !t->running || !t->ctx) {
        rc = FPP_ENOMEM;
        goto fail;
    }
    for (uint32_t w = 0; w < n; w++) {
        t->ctx[w] = (fpp__wctx){
            .base = t->pool.base,
            .lay = t->pool.lay,
            .slot = w,
            .process = false,
            .max_tasks = ex->opts.max_tasks_per_worker,
            .max_rss_kib = 0, /* one address space: a per-thread cap means nothing */
            .stop = &t->stop,
        };
        rc = start_thread(t, w);
        if (rc)
            goto fail;
    }
    return 0;
fail:
    t_destroy(ex, true);
    return rc;
}
