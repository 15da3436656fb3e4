/* tm/task.c: task objects: their memory (slabs of SLAB tasks and a FIFO of free ones, so that a
 * recycled task is reused as late as possible, which gives AddressSanitizer the longest time to
 * catch a stale pointer: a recycled task is poisoned whole under ASan), a task's life (made,
 * handed out, kept, retained, recycled), the id table's upkeep, and the public accessors.
 * What a task points to is its job's (core/job.h); a large result may be the executor's (hold:
 * unpinned before the task is recycled or kept). */
#include <stdio.h>
#include <string.h>

#include "tm/tm.h"

#ifdef FPP__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
/* A recycled task is poisoned as a whole: ask ASan rather than read it. */
static bool task_dead(const fpp_task *t) { return __asan_address_is_poisoned(t); }
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
static bool task_dead(const fpp_task *t) { return t->where == FPP__AT_FREE; }
#endif

#define SLAB 256

static int add_slab(fpp_tm *tm)
{
    if (tm->nslabs == tm->capslabs) {
        size_t cap = tm->capslabs ? tm->capslabs * 2 : 16;
        void **s = fpp__realloc(tm->slabs, cap * sizeof *s);
        if (!s)
            return FPP_ENOMEM;
        tm->slabs = s;
        tm->capslabs = cap;
    }
    size_t qcap = (tm->nslabs + 1) * SLAB;
    fpp_task **q = fpp__malloc(qcap * sizeof *q);
    fpp_task *slab = fpp__calloc(SLAB, sizeof *slab);
    if (!q || !slab) {
        fpp__free(q);
        fpp__free(slab);
        return FPP_ENOMEM;
    }
    for (size_t i = 0; i < tm->fq_n; i++)
        q[i] = tm->freeq[(tm->fq_head + i) % tm->fq_cap];
    fpp__free(tm->freeq);
    tm->freeq = q;
    tm->fq_cap = qcap;
    tm->fq_head = 0;
    tm->slabs[tm->nslabs++] = slab;
    for (int i = 0; i < SLAB; i++) {
        slab[i].where = FPP__AT_FREE;
        POISON(&slab[i], sizeof slab[i]);
        tm->freeq[tm->fq_n++] = &slab[i];
    }
    return 0;
}

fpp_task *fpp__task_new(fpp_tm *tm)
{
    if (!tm->fq_n && add_slab(tm) != 0)
        return NULL;
    fpp_task *t = tm->freeq[tm->fq_head];
    tm->fq_head = (tm->fq_head + 1) % tm->fq_cap;
    tm->fq_n--;
    UNPOISON(t, sizeof *t);
    /* Everything but the inline buffers (no need: they are written before they are read). */
    memset(&t->job, 0, offsetof(fpp__job, arg_inline));
    memset((char *)t + sizeof t->job, 0, sizeof *t - sizeof t->job);
    t->tm = tm;
    t->job.slot = -1;
    t->job.avoid_slot = -1;
    t->job.tag = FPP__JOB_NONE;
    t->attempts = 1;
    return t;
}

void fpp__task_unpin(fpp_tm *tm, fpp_task *t, bool keep)
{
    if (t->job.hold && tm->ex && tm->ex->ops->unpin)
        tm->ex->ops->unpin(tm->ex, &t->job, keep);
}

void fpp__task_pin(fpp_tm *tm, fpp_task *t, bool on)
{
    if (t->job.hold && tm->ex && tm->ex->ops->pin)
        tm->ex->ops->pin(tm->ex, &t->job, on);
}

void fpp__task_recycle(fpp_tm *tm, fpp_task *t)
{
    fpp__task_unpin(tm, t, false);
    fpp__job_clear(&t->job);
    t->where = FPP__AT_FREE;
    POISON(t, sizeof *t);
    tm->freeq[(tm->fq_head + tm->fq_n) % tm->fq_cap] = t;
    tm->fq_n++;
}

/* Calls fn on every task that is not free (AddressSanitizer: not poisoned). */
void fpp__task_for_each_live(fpp_tm *tm, void (*fn)(fpp_tm *tm, fpp_task *t, bool arg), bool arg)
{
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        for (int j = 0; j < SLAB; j++)
            if (!task_dead(&slab[j]))
                fn(tm, &slab[j], arg);
    }
}

void fpp__task_unlist(fpp_tm *tm, fpp_task *t)
{
    if (t->listed) {
        if (tm->ids_on)
            fpp__idmap_del(&tm->ids, t->job.id);
        t->listed = false;
    }
}

static void put_listed(fpp_tm *tm, fpp_task *t, bool arg)
{
    FPP__UNUSED(arg);
    if (t->listed && fpp__idmap_put(&tm->ids, t) != 0)
        tm->ids_on = false; /* reported by the caller */
}

/* The id table costs a hash insert and delete per task (about 5% of the parent's time with
 * no-op tasks), so it is built only when first needed, from the tasks not yet handed out. */
int fpp__tm_ids_needed(fpp_tm *tm)
{
    if (tm->ids_on)
        return 0;
    tm->ids_on = true;
    fpp__task_for_each_live(tm, put_listed, false);
    if (!tm->ids_on) {
        fpp__idmap_fini(&tm->ids);
        fpp__log(FPP_LOG_ERROR, "out of memory for the task id table");
        return FPP_ENOMEM;
    }
    return 0;
}

/* t leaves the task manager's hands (handed out and done with, or dropped): it stays alive
 * while kept, retained or the failure; otherwise it is recycled. */
void fpp__task_let_go(fpp_tm *tm, fpp_task *t)
{
    fpp__task_unlist(tm, t);
    if (t->keeps || t->retained || t == tm->failure) {
        t->where = FPP__AT_KEPT;
        return;
    }
    fpp__task_recycle(tm, t);
}

void fpp__task_retain(fpp_tm *tm, fpp_task *t)
{
    if (tm->nretained == tm->capretained) {
        size_t cap = tm->capretained ? tm->capretained * 2 : 64;
        fpp_task **k = fpp__realloc(tm->retained, cap * sizeof *k);
        if (!k) {
            char name[FPP__NAME_MAX];
            fpp__job_name(&t->job, name, sizeof name);
            fpp__log(FPP_LOG_ERROR, "retain_completed: out of memory; %s is not retained", name);
            return;
        }
        tm->retained = k;
        tm->capretained = cap;
    }
    tm->retained[tm->nretained++] = t;
    t->retained = true;
    fpp__task_unpin(tm, t, true); /* it lives until fpp_tm_free: it must not hold a worker's arena */
}

fpp_task *fpp__task_make(fpp_tm *tm, int fn, const void *arg, size_t len, bool oversize)
{
    fpp_task *t = fpp__task_new(tm);
    if (!t)
        return NULL;
    t->job.fn = fn;
    t->job.arg_len = len;
    t->job.id = tm->next_id;
    if (!oversize) {
        t->job.arg = t->job.arg_inline;
        if (len > sizeof t->job.arg_inline) {
            t->job.arg = fpp__malloc(len);
            if (!t->job.arg) {
                fpp__task_recycle(tm, t);
                return NULL;
            }
        }
        if (len)
            memcpy(t->job.arg, arg, len);
    }
    if (tm->ids_on && fpp__idmap_put(&tm->ids, t) != 0) {
        fpp__task_recycle(tm, t);
        return NULL;
    }
    t->listed = true;
    tm->next_id++;
    t->where = FPP__AT_PENDING;
    fpp__tm_set_unfinished(tm, tm->unfinished + 1);
    fpp__tm_bump(&tm->c.submitted);
    return t;
}

static void clear_one(fpp_tm *tm, fpp_task *t, bool owner)
{
    FPP__UNUSED(tm);
    if (!owner)
        t->job.hold = NULL; /* another process: the executor's memory is not ours to touch */
    fpp__job_clear(&t->job);
}

void fpp__task_free_all(fpp_tm *tm, bool owner)
{
    for (size_t i = 0; i < tm->nslabs; i++) {
        fpp_task *slab = tm->slabs[i];
        UNPOISON(slab, SLAB * sizeof *slab);
        for (int j = 0; j < SLAB; j++)
            clear_one(tm, &slab[j], owner);
        fpp__free(slab);
    }
    fpp__free(tm->slabs);
    fpp__free(tm->freeq);
    tm->slabs = NULL;
    tm->freeq = NULL;
    tm->nslabs = tm->fq_n = 0;
}

/* ------------------------------------------------------ keeping tasks */

fpp_task *fpp_task_keep(fpp_task *t)
{
    if (!t) {
        fpp__log(FPP_LOG_ERROR, "fpp_task_keep: NULL task");
        return NULL;
    }
    if (task_dead(t)) {
        fpp__log(FPP_LOG_ERROR, "fpp_task_keep: this task's life has ended (recycled after the next "
                 "fpp_as_completed, or released)");
        return NULL;
    }
    fpp_tm *tm = t->tm;
    if (fpp__tm_enter(tm, "fpp_task_keep", FPP__ALLOW_DETACHED) != 0)
        return NULL;
    if (t->keeps < UINT32_MAX)
        t->keeps++;
    fpp__task_unpin(tm, t, true);
    fpp__tm_leave(tm);
    return t;
}

void fpp_task_release(fpp_task *t)
{
    if (!t)
        return;
    if (task_dead(t)) {
        fpp__log(FPP_LOG_ERROR, "fpp_task_release: this task's life has ended already (released twice?)");
        return;
    }
    fpp_tm *tm = t->tm;
    if (fpp__tm_enter(tm, "fpp_task_release", FPP__ALLOW_DETACHED) != 0)
        return;
    if (!t->keeps) {
        char name[FPP__NAME_MAX];
        fpp__job_name(&t->job, name, sizeof name);
        fpp__log(FPP_LOG_ERROR, "fpp_task_release: %s is not kept (released twice, or never kept)", name);
    } else if (--t->keeps == 0 && t->where == FPP__AT_KEPT)
        fpp__task_let_go(tm, t);
    fpp__tm_leave(tm);
}

/* ------------------------------------------------------- accessors */

int64_t fpp_task_id(const fpp_task *t) { return t ? t->job.id : FPP_EINVAL; }
int fpp_task_fn(const fpp_task *t) { return t ? t->job.fn : FPP_EINVAL; }

const void *fpp_task_arg(const fpp_task *t, size_t *len)
{
    if (len)
        *len = t ? t->job.arg_len : 0;
    return t ? t->job.arg : NULL;
}

fpp_status fpp_task_status(const fpp_task *t) { return t ? t->job.status : FPP_FAILED; }

const void *fpp_task_result(const fpp_task *t, size_t *len)
{
    bool ok = t && t->job.status == FPP_DONE;
    if (ok && t->job.hold && t->tm->owner != fpp__proc_token()) {
        /* In the pool's memory, which no other process maps (MADV_DONTFORK): a forked child
         * would fault on it. */
        char name[FPP__NAME_MAX];
        fpp__job_name(&t->job, name, sizeof name);
        fpp__log(FPP_LOG_ERROR, "fpp_task_result: the result of %s (%zu bytes) lies in the pool's memory, "
                 "which only process %ld has; fpp_task_keep it before fork() to read it in a child",
                 name, t->job.result_len, t->tm->owner_pid);
        ok = false;
    }
    if (len)
        *len = ok ? t->job.result_len : 0;
    if (!ok)
        return NULL;
    /* An empty result is still a result: never NULL for a done task. */
    return t->job.result ? t->job.result : t->job.res_inline;
}

const char *fpp_task_error(const fpp_task *t)
{
    if (!t)
        return "invalid task";
    if (t->job.status == FPP_DONE)
        return NULL;
    return t->job.error ? t->job.error : fpp_status_name(t->job.status);
}

int fpp_task_signal(const fpp_task *t) { return t && t->job.status == FPP_CRASHED ? t->job.signo : 0; }

const char *fpp_status_name(fpp_status s)
{
    switch (s) {
    case FPP_DONE: return "done";
    case FPP_FAILED: return "failed";
    case FPP_CRASHED: return "crashed";
    case FPP_TIMEOUT: return "timed out"; /* one vocabulary: fpp_stats.timed_out, the lines */
    case FPP_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void *fpp_task_user(const fpp_task *t) { return t ? t->user : NULL; }

const char *fpp_task_label(const fpp_task *t) { return t ? t->job.label : NULL; }

unsigned fpp_task_attempts(const fpp_task *t) { return t ? t->attempts : 0; }
