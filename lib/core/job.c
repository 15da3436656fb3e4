/* core/job.c: setting a job's outcome and freeing what it owns (core/job.h). A failure drops any
 * result; a result replaces any error; neither touches bytes the executor holds (hold). */
#include <stdio.h>
#include <string.h>

#include "core/job.h"

void fpp__job_fail(fpp__job *j, fpp_status st, int signo, const char *fmt, ...)
{
    char buf[FPP__ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (j->result && j->result != j->res_inline && !j->hold)
        fpp__buf_put(j->result, j->result_cap);
    j->result = NULL;
    j->result_len = 0;
    fpp__free(j->error);
    j->error = fpp__strdup(buf);
    j->status = st;
    j->signo = signo;
}

int fpp__job_set_result(fpp__job *j, const void *data, size_t len)
{
    unsigned char *dst = j->res_inline;
    if (len > sizeof j->res_inline) {
        dst = fpp__buf_get(len, &j->result_cap);
        if (!dst)
            return FPP_ENOMEM;
    }
    if (len)
        memcpy(dst, data, len);
    j->result = dst;
    j->result_len = len;
    j->status = FPP_DONE;
    j->signo = 0;
    return 0;
}

void fpp__job_clear(fpp__job *j)
{
    if (j->arg && j->arg != j->arg_inline)
        fpp__free(j->arg);
    /* A result still held in a worker's arena (hold) is the executor's: the task manager
     * unpins before it clears. */
    if (j->result && j->result != j->res_inline && !j->hold)
        fpp__buf_put(j->result, j->result_cap);
    fpp__free(j->error);
    fpp__free(j->label);
    j->arg = j->result = NULL;
    j->error = j->label = NULL;
}
