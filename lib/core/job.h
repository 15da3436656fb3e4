/* core/job.h: the job, the part of a task that travels down the layers: what to run (function,
 * argument bytes, its own timeout, where not to run it) and what came of it (status, signal,
 * result bytes, error text), and what the user calls it (label). The task manager's fpp_task embeds one (tm/tm.h) and adds what
 * only it knows (where the task is, keeps, retries); executors and the pool see jobs only, and
 * hand finished ones back up through the executor's sink (exec/exec.h).
 *
 * Ownership: what a job points to (argument copy, result copy, error text, label) is the job's, inline
 * when small, on the heap otherwise, and freed by fpp__job_clear; except a large result handed
 * out where a worker wrote it (hold set: the executor's, see pool/result_arena.c). `link` is
 * used by whoever holds the job right now (the task manager's lists, the pool's retry queue):
 * a job is on one list at a time. */
#ifndef FPP_CORE_JOB_H
#define FPP_CORE_JOB_H

#include "core/core.h"
#include "core/list.h"

#define FPP__INLINE_ARG 32     /* argument bytes carried in a task queue cell */
#define FPP__INLINE_RES 40     /* result or message bytes carried in a completion record */
#define FPP__ERR_MAX 512       /* longest error message a worker may return */

typedef struct fpp__job {
    int64_t id;            /* the task's id, for messages */
    int fn;                /* registered function id */
    unsigned timeout_ms;   /* its own timeout; 0: the executor's */
    int avoid_slot;        /* a retry: run elsewhere than this worker slot if possible; -1: any */
    int slot;              /* set by the executor: the worker slot it last ran on, or -1 */
    uint32_t tag;          /* the executor's own mark while it holds the job (its in-flight entry) */
    fpp_status status;
    int signo;
    void *hold;            /* the executor's hold on the result bytes (zero-copy), or NULL */
    size_t arg_len, result_len, result_cap;
    unsigned char *arg;    /* arg_inline, heap, or NULL */
    unsigned char *result; /* res_inline, heap, the executor's (hold), or NULL */
    char *error;           /* heap, or NULL */
    char *label;           /* heap, or NULL: the task's label (core/label.c), kept across retries */
    fpp__link link;
    unsigned char arg_inline[FPP__INLINE_ARG];
    unsigned char res_inline[FPP__INLINE_RES];
} fpp__job;

#define FPP__JOB_NONE UINT32_MAX /* tag: the executor holds no entry for it */

static inline fpp__job *fpp__job_of(fpp__link *l) { return l ? FPP__CONTAINER(l, fpp__job, link) : NULL; }

/* Sets the job's outcome. The message is copied (printf-style); result bytes are copied. */
FPP__BACKEND void fpp__job_fail(fpp__job *j, fpp_status st, int signo, const char *fmt, ...)
    FPP_PRINTF(4, 5);
FPP__BACKEND int fpp__job_set_result(fpp__job *j, const void *data, size_t len);
FPP__HIDDEN void fpp__job_clear(fpp__job *j); /* frees what the job owns */

/* label.c: a label from any bytes (escaped and shortened: see there); NULL for none (len 0)
 * or out of memory. */
FPP__BACKEND char *fpp__label_make(const void *bytes, size_t len);
/* The job's name in messages: "task 17" or "task 17 \"inputs/0042.bin\""; returns its length. */
#define FPP__NAME_MAX (32 + FPP_LABEL_MAX)
FPP__BACKEND size_t fpp__job_name(const fpp__job *j, char *buf, size_t cap);

/* A queue of jobs (FIFO by their link). */
static inline void fpp__jobq_push(fpp__list *q, fpp__job *j) { fpp__list_push_back(q, &j->link); }
static inline fpp__job *fpp__jobq_pop(fpp__list *q) { return fpp__job_of(fpp__list_pop_front(q)); }
static inline fpp__job *fpp__jobq_head(const fpp__list *q) { return fpp__job_of(q->head); }

#endif /* FPP_CORE_JOB_H */
