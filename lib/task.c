/* task.c: the task object's accessors and outcome setters. A task is owned by its task
 * manager; what it points to (argument copy, result copy, error text) is owned by the task,
 * inline when small, on the heap otherwise, and freed by fpp__task_clear; except a large
 * result handed out where a worker wrote it (t->hold: the executor's, see harvest.c). */
#include <stdio.h>
#include <string.h>

#include "fpp_internal.h"

void fpp__task_fail(fpp_task *t, fpp_status st, int signo, const char *fmt, ...)
{
    char buf[FPP__ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (t->result && t->result != t->res_inline && !t->hold)
        fpp__buf_put(t->result, t->result_cap);
    t->result = NULL;
    t->result_len = 0;
    fpp__free(t->error);
    t->error = fpp__strdup(buf);
    t->status = st;
    t->signo = signo;
}

int fpp__task_set_result(fpp_task *t, const void *data, size_t len)
{
    unsigned char *dst = t->res_inline;
    if (len > sizeof t->res_inline) {
        dst = fpp__buf_get(len, &t->result_cap);
        if (!dst)
            return FPP_ENOMEM;
    }
    if (len)
        memcpy(dst, data, len);
    t->result = dst;
    t->result_len = len;
    t->status = FPP_DONE;
    t->signo = 0;
    return 0;
}

void fpp__task_clear(fpp_task *t)
{
    if (t->arg && t->arg != t->arg_inline)
        fpp__free(t->arg);
    /* A result still held in a worker's arena (t->hold) is the executor's: the task manager
     * unpins before it clears. */
    if (t->result && t->result != t->res_inline && !t->hold)
        fpp__buf_put(t->result, t->result_cap);
    fpp__free(t->error);
    t->arg = t->result = NULL;
    t->error = NULL;
}

int64_t fpp_task_id(const fpp_task *t) { return t ? t->id : FPP_EINVAL; }
int fpp_task_fn(const fpp_task *t) { return t ? t->fn : FPP_EINVAL; }

const void *fpp_task_arg(const fpp_task *t, size_t *len)
{
    if (len)
        *len = t ? t->arg_len : 0;
    return t ? t->arg : NULL;
}

fpp_status fpp_task_status(const fpp_task *t) { return t ? t->status : FPP_FAILED; }

const void *fpp_task_result(const fpp_task *t, size_t *len)
{
    bool ok = t && t->status == FPP_DONE;
    if (len)
        *len = ok ? t->result_len : 0;
    if (!ok)
        return NULL;
    /* An empty result is still a result: never NULL for a done task. */
    return t->result ? t->result : t->res_inline;
}

const char *fpp_task_error(const fpp_task *t)
{
    if (!t)
        return "invalid task";
    if (t->status == FPP_DONE)
        return NULL;
    return t->error ? t->error : fpp_status_name(t->status);
}

int fpp_task_signal(const fpp_task *t) { return t && t->status == FPP_CRASHED ? t->signo : 0; }

const char *fpp_status_name(fpp_status s)
{
    switch (s) {
    case FPP_DONE: return "done";
    case FPP_FAILED: return "failed";
    case FPP_CRASHED: return "crashed";
    case FPP_TIMEOUT: return "timeout";
    case FPP_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void *fpp_task_user(const fpp_task *t) { return t ? t->user : NULL; }

unsigned fpp_task_attempts(const fpp_task *t) { return t ? t->attempts : 0; }
