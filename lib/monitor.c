/* monitor.c: the executor monitor, a thread of the parent (never a worker). From a task
 * manager's first submit or map until nothing is left or it is freed, it logs "Starting
 * executor monitor", then each interval "N task(s) completed in the last X second(s)", then
 * "Shutting down monitor...". It reads one counter the task manager bumps (relaxed atomic).
 * It sleeps on a condition variable (CLOCK_MONOTONIC), so stopping it is immediate and never
 * delays the caller: fpp__monitor_stop only signals; fpp__monitor_join waits for a thread
 * that is already on its way out. */
#include <errno.h>
#include <pthread.h>

#include "fpp_internal.h"

struct fpp__monitor {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    _Atomic uint64_t *finished;
    int interval_ms;
};

static void *run(void *arg)
{
    fpp__monitor *m = arg;
    fpp__log(FPP_LOG_INFO, "Starting executor monitor");
    uint64_t last = atomic_load_explicit(m->finished, memory_order_relaxed);
    int64_t t0 = fpp__now_ns();
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        int64_t due = t0 + (int64_t)m->interval_ms * 1000000;
        struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &ts) == 0)
            ;
        if (m->stop)
            break;
        pthread_mutex_unlock(&m->mu);
        uint64_t now_n = atomic_load_explicit(m->finished, memory_order_relaxed);
        int64_t t1 = fpp__now_ns();
        fpp__log(FPP_LOG_INFO, "%llu task(s) completed in the last %.2f second(s)",
                 (unsigned long long)(now_n - last), (double)(t1 - t0) / 1e9);
        last = now_n;
        t0 = t1;
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    fpp__log(FPP_LOG_INFO, "Shutting down monitor...");
    return NULL;
}

int fpp__monitor_start(fpp__monitor **out, _Atomic uint64_t *finished, int interval_ms)
{
    fpp__monitor *m = fpp__calloc(1, sizeof *m);
    if (!m)
        return FPP_ENOMEM;
    m->finished = finished;
    m->interval_ms = interval_ms;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&m->th, NULL, run, m);
    if (e) {
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        fpp__free(m);
        errno = e;
        return fpp__sys_error("pthread_create", "monitor");
    }
    *out = m;
    return 0;
}

void fpp__monitor_stop(fpp__monitor *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void fpp__monitor_join(fpp__monitor *m)
{
    if (!m)
        return;
    fpp__monitor_stop(m);
    pthread_join(m->th, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    fpp__free(m);
}
