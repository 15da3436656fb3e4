/* fppmodule.c: fpp._fpp, the C half of the Python package fpp.
 *
 * Owns: the registered functions that run Python callables (in forked workers: payload bytes
 * made by fpp/_codec.py, after a 16-byte ticket prefix; in worker threads: a sequence number
 * into fpp/_codec.py's tables) and the worker initializer, the cancel table (a task cancelled
 * before a worker starts it never runs: see task_process), the laying out of payloads and
 * results given in parts (pickle protocol 5 out-of-band buffers copied once, straight to
 * where fpp takes them), the Buffer type (big result buffers copied out of fpp's memory into
 * a cache of mappings), the fork hooks that keep the interpreter consistent across fpp's
 * forks, the log sink, and the Manager type (one fpp executor and, while a run is going on,
 * its task manager). Built twice: fpp._fpp, and with FPP_PYMPI fpp._fpp_mpi (see below).
 *
 * The GIL rules (the first three are what a prototype deadlocked or hung on without):
 *   - Every libfpp call that can wait (or can log) runs with the GIL released. Workers are
 *     forked by threads that take the GIL in the fork hooks, so holding it while libfpp waits
 *     for a worker would deadlock.
 *   - The fork hooks take the GIL (PyGILState_Ensure, which works whether the forking thread
 *     holds it, has released it, or is a thread Python never saw) and run PyOS_BeforeFork /
 *     PyOS_AfterFork_Parent / PyOS_AfterFork_Child around the fork. A forked child (a fork
 *     server or a worker) keeps the one thread state it inherited and releases the GIL while it
 *     is in C; a task takes it back (worker_ts).
 *   - The log sink never calls Python: fpp may log from threads that hold its own locks while
 *     another thread holds the GIL. Lines are queued here and handed to Python's logging by the
 *     thread that called into fpp, after the call returns.
 *   - Waiting is done in slices (fpp_as_completed_for, SLICE_MS) with PyErr_CheckSignals in
 *     between, so that Python signal handlers (KeyboardInterrupt, signal.alarm, pytest-timeout)
 *     run on time while tasks run. SIGINT is left to Python (FPP_TM_NO_SIGINT): a
 *     KeyboardInterrupt raised between slices is the Ctrl-C, and fpp/futureproof frees the task
 *     manager on its way out, which kills the busy workers.
 *
 * Threads: a Manager is used by one thread at a time (a second thread gets RuntimeError while
 * a call is in progress), except stats(), wake(), arm(), cancel_ticket() and ticket_state(),
 * which any thread may call: stats() reads the task manager's atomic counters (the task
 * manager pointer is only cleared and freed by a thread holding the GIL), the others one
 * atomic word each. fpp.ProcessPool's collector thread waits with collect(wake=True): without
 * the GIL, in WAKE_SLICE_MS slices, until a task finishes or another thread calls wake(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <fpp.h>

/* Built a second time with FPP_PYMPI as fpp._fpp_mpi (where MPI is found): the same Manager,
 * with kind "mpi" (fpp_mpi_executor: the workers are the other ranks' local pools), and the
 * functions python3 -m fpp.mpi runs on every rank (init, serve, finish). It carries its own
 * copy of libfpp (static, not exported), as fpp._fpp does: the two never share an executor. */
#ifdef FPP_PYMPI
#include <dlfcn.h>
#include <fpp_mpi.h>
#define MODNAME "fpp._fpp_mpi"
#else
#define MODNAME "fpp._fpp"
#endif

/* How long one wait lasts before Python gets to run its signal handlers. Ctrl-C and an
 * alarm are seen within this, plus the time to stop. */
#define SLICE_MS 10
/* Finished tasks taken in one collect() call at most (one list, one trip through Python). */
#define COLLECT_MAX_DEFAULT 256
/* collect(wake=True) checks for wake() this often while it waits (without the GIL). */
#define WAKE_SLICE_MS 2

/* What collect() returns per task: (id, code, value). */
enum {
    CODE_OK = 0,      /* value: the result */
    CODE_EXC = 1,     /* value: the exception the callable raised */
    CODE_PARTIAL = 2, /* value: (results before the exception, the exception): a map chunk */
    CODE_FPP = 10,    /* + fpp_status: value (message, signal) */
};

enum { KIND_PROCESS = 0, KIND_THREAD = 1, KIND_MPI = 2 };

/* Callbacks into fpp/_codec.py and fpp/errors.py, set once by fpp/__init__.py. */
static PyObject *cb_worker_run;     /* (memoryview) -> (tag, bytes) in a worker process */
static PyObject *cb_decode;         /* (memoryview) -> (code, value) for tags other than 'R' */
static PyObject *cb_thread_run;     /* (seq) -> None in a worker thread */
static PyObject *cb_thread_outcome; /* (seq, status) -> (code, value) in the parent */
static PyObject *cb_log;            /* (level, message) -> None */
static PyObject *cb_error;          /* (code, message) -> exception instance */
static PyObject *pickle_loads;

static int fn_process = -1, fn_thread = -1, fn_init = -1;

/* ---------------------------------------------------------------- fork hooks */

static _Thread_local PyGILState_STATE fork_gil;
/* In a forked child: this process's only thread state while it is in C (GIL released). */
static PyThreadState *worker_ts;

/* What Python holds in sys.stdout/sys.stderr buffers now would be written again by the child
 * the first time it flushes (a worker flushes after every task): write it out first. */
static void flush_std(void)
{
    static const char *names[] = {"stdout", "stderr"};
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]); /* borrowed */
        if (!f || f == Py_None)
            continue;
        PyObject *r = PyObject_CallMethod(f, "flush", NULL);
        if (!r)
            PyErr_Clear();
        Py_XDECREF(r);
    }
    PyErr_Restore(et, ev, etb);
}

static void hook_prepare(void)
{
    fork_gil = PyGILState_Ensure();
    flush_std();
    PyOS_BeforeFork();
}

static void hook_parent(void)
{
    PyOS_AfterFork_Parent();
    PyGILState_Release(fork_gil);
}

static void hook_child(void)
{
    /* The forking thread is the only one here and holds the GIL: make the interpreter agree
     * (threads, locks, at-fork callbacks), then release it until a task needs it. */
    PyOS_AfterFork_Child();
    worker_ts = PyEval_SaveThread();
}

/* ------------------------------------------------------------------- log sink */

#define LOGQ 128
#define LOGMSG 512
static pthread_mutex_t logq_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { int level; pthread_t thread; char msg[LOGMSG]; } logq[LOGQ];
static unsigned logq_head, logq_n, logq_dropped;
static _Atomic int logq_pending;

static void log_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)user;
    pthread_mutex_lock(&logq_mu);
    if (logq_n == LOGQ) {
        logq_dropped++;
    } else {
        unsigned i = (logq_head + logq_n++) % LOGQ;
        logq[i].level = (int)level;
        logq[i].thread = pthread_self();
        snprintf(logq[i].msg, LOGMSG, "%s", msg);
    }
    pthread_mutex_unlock(&logq_mu);
    atomic_store(&logq_pending, 1);
}

/* Hands queued log lines to Python's logging. GIL held; keeps any exception already set.
 * mine: if not NULL, the lines this thread logged (those of the call that failed, since every
 * call hands its lines over when it returns) are appended to it, "; "-separated, instead of
 * being logged: the exception raised for the failure carries them (an error is raised once,
 * not also logged). */
static void deliver_logs_but(char *mine, size_t mine_size)
{
    if (!atomic_load_explicit(&logq_pending, memory_order_relaxed) || !cb_log)
        return;
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    pthread_t me = pthread_self();
    for (;;) {
        int level;
        char msg[LOGMSG + 64];
        unsigned dropped = 0;
        int own;
        pthread_mutex_lock(&logq_mu);
        if (logq_n == 0) {
            atomic_store(&logq_pending, 0);
            pthread_mutex_unlock(&logq_mu);
            break;
        }
        level = logq[logq_head].level;
        own = mine && pthread_equal(logq[logq_head].thread, me);
        snprintf(msg, sizeof msg, "%s", logq[logq_head].msg);
        logq_head = (logq_head + 1) % LOGQ;
        logq_n--;
        if (logq_n == 0) {
            dropped = logq_dropped;
            logq_dropped = 0;
        }
        pthread_mutex_unlock(&logq_mu);
        if (own && level >= FPP_LOG_WARN) {
            size_t used = strlen(mine);
            snprintf(mine + used, mine_size - used, "%s%s", used ? "; " : "", msg);
            continue;
        }
        PyObject *r = PyObject_CallFunction(cb_log, "is", level, msg);
        if (!r)
            PyErr_WriteUnraisable(cb_log);
        Py_XDECREF(r);
        if (dropped) {
            snprintf(msg, sizeof msg, "(%u fpp log line(s) dropped: the queue was full)", dropped);
            r = PyObject_CallFunction(cb_log, "is", (int)FPP_LOG_WARN, msg);
            if (!r)
                PyErr_WriteUnraisable(cb_log);
            Py_XDECREF(r);
        }
    }
    PyErr_Restore(et, ev, etb);
}

static void deliver_logs(void) { deliver_logs_but(NULL, 0); }

/* Sets a Python exception for an fpp error code: "what: fpp's own log line(s) for it: the
 * code's message (FPP_E...)". The log lines this thread queued during the failed call go into
 * the exception only. Returns NULL. */
static PyObject *raise_fpp(int code, const char *what)
{
    char detail[2048] = "";
    deliver_logs_but(detail, sizeof detail);
    char text[2300];
    if (detail[0])
        snprintf(text, sizeof text, "%s: %s", what, detail);
    else
        snprintf(text, sizeof text, "%s", what);
    if (cb_error) {
        PyObject *e = PyObject_CallFunction(cb_error, "is", code, text);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return NULL;
    }
    PyErr_Format(PyExc_RuntimeError, "%s: %s (%s)", text, fpp_strerror(code), fpp_err_name(code));
    return NULL;
}

/* ---------------------------------------------------------------- payloads */

/* Every process task's argument starts with this prefix, written by Manager.submit: the task's
 * ticket in the cancel table (slot + 1, 0 for none, and its generation). The rest is what
 * fpp/_codec.py encoded. */
#define PREFIX 16

/* The cancel table: one word per slot, gen << 2 | state, in shared memory mapped by the
 * parent before the executor (so its fork server and workers inherit it). The parent arms a
 * slot (QUEUED) before the task can reach a worker; the worker moves it to STARTED when the
 * task starts, the parent's cancel to CANCELLED: one compare-and-swap each, so exactly one
 * wins. A worker that finds CANCELLED does not run the task. A word that is neither (a stale
 * ticket, or a task that scribbled the table) means "run it": the table can cost a task its
 * cancellation, never its run. */
enum { T_QUEUED = 0, T_STARTED = 1, T_CANCELLED = 2 };
static _Atomic uint64_t *ctab; /* in a worker: its pool's table (set by task_init) */
static uint64_t ctab_n;

/* A payload or a result given as one bytes-like object or a tuple or list of them (pickle
 * protocol 5 out-of-band buffers among them), to be laid end to end. */
typedef struct {
    Py_buffer *v;
    Py_ssize_t n;
    size_t total;
    Py_buffer one;
} parts_t;

static void parts_release(parts_t *p)
{
    for (Py_ssize_t i = 0; i < p->n; i++)
        PyBuffer_Release(&p->v[i]);
    if (p->v && p->v != &p->one)
        PyMem_Free(p->v);
    p->v = NULL;
    p->n = 0;
}

/* 0, or -1 with an exception set (and nothing held). */
static int parts_get(PyObject *o, parts_t *p)
{
    memset(p, 0, sizeof *p);
    if (!PyTuple_Check(o) && !PyList_Check(o)) {
        if (PyObject_GetBuffer(o, &p->one, PyBUF_SIMPLE) < 0)
            return -1;
        p->v = &p->one;
        p->n = 1;
        p->total = (size_t)p->one.len;
        return 0;
    }
    PyObject *seq = PySequence_Fast(o, "parts");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    p->v = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (!p->v) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &p->v[i], PyBUF_SIMPLE) < 0) {
            parts_release(p);
            Py_DECREF(seq);
            return -1;
        }
        p->n = i + 1;
        p->total += (size_t)p->v[i].len;
    }
    Py_DECREF(seq);
    return 0;
}

static void parts_copy(const parts_t *p, unsigned char *dst)
{
    for (Py_ssize_t i = 0; i < p->n; i++) {
        if (p->v[i].len)
            memcpy(dst, p->v[i].buf, (size_t)p->v[i].len);
        dst += p->v[i].len;
    }
}

/* Releases a memoryview over memory that is about to be reused; nothing may point into it. */
static void release_view(PyObject *mv)
{
    if (!mv)
        return;
    PyObject *rel = PyObject_CallMethod(mv, "release", NULL);
    if (!rel)
        PyErr_Clear();
    Py_XDECREF(rel);
    Py_DECREF(mv);
}

/* The current exception as "Type: message" into buf; clears it. */
static void exception_text(char *buf, size_t size)
{
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *s = ev ? PyObject_Str(ev) : NULL;
    const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(buf, size, "%s: %s", et ? ((PyTypeObject *)et)->tp_name : "?", msg ? msg : "?");
    PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(etb);
}

/* ------------------------------------------------------- functions run by fpp */

/* A task in a worker process: check its ticket, hand the payload to fpp._codec.worker_run, and
 * write the (tag, data) it returns into the result, tag byte first, data's parts end to end
 * (out-of-band buffers are copied once, from the object to the result arena). */
static int task_process(const void *arg, size_t len, fpp_out *out)
{
    if (!worker_ts || !cb_worker_run) {
        fpp_out_fail(out, "fpp: this process has no Python thread state to run the task with "
                          "(was fpp._fpp's fork hook replaced with fpp_set_fork_hooks?)");
        return 1;
    }
    if (len < PREFIX) {
        fpp_out_fail(out, "fpp: a %zu-byte task payload, shorter than its prefix", len);
        return 1;
    }
    uint32_t slot1;
    uint64_t gen;
    memcpy(&slot1, arg, sizeof slot1);
    memcpy(&gen, (const char *)arg + 8, sizeof gen);
    if (slot1 && ctab && slot1 <= ctab_n) {
        uint64_t want = gen << 2 | T_QUEUED;
        if (!atomic_compare_exchange_strong(&ctab[slot1 - 1], &want, gen << 2 | T_STARTED) &&
            want == (gen << 2 | T_CANCELLED))
            return fpp_out_set(out, "K", 1) == 0 ? 0 : 1; /* cancelled before it started */
    }
    PyEval_RestoreThread(worker_ts);
    worker_ts = NULL;
    int rc = 0;
    PyObject *mv = PyMemoryView_FromMemory((char *)arg + PREFIX, (Py_ssize_t)(len - PREFIX), PyBUF_READ);
    PyObject *r = mv ? PyObject_CallFunctionObjArgs(cb_worker_run, mv, NULL) : NULL;
    release_view(mv); /* nothing may keep pointing into the argument arena after the task */
    int tag;
    PyObject *data;
    parts_t parts;
    if (r && PyArg_ParseTuple(r, "iO", &tag, &data) && tag >= 0 && tag < 256 && parts_get(data, &parts) == 0) {
        unsigned char *dst = fpp_out_alloc(out, parts.total + 1);
        if (dst) {
            dst[0] = (unsigned char)tag;
            parts_copy(&parts, dst + 1);
        } /* else: over max_result_size; fpp fails the task with both sizes */
        parts_release(&parts);
    } else {
        /* worker_run itself failed (it catches everything a callable does): say what. */
        char msg[400];
        exception_text(msg, sizeof msg);
        fpp_out_fail(out, "fpp: internal error in the worker: %s", msg);
        rc = 1;
    }
    Py_XDECREF(r);
    worker_ts = PyEval_SaveThread();
    return rc;
}

/* Run once in every worker before its first task (fpp's worker_init): the argument is the
 * cancel table's address and size, then, if there is one, the pickled (initializer, initargs)
 * for fpp._codec.worker_init, whose failure (a message) makes this worker unusable. */
static PyObject *cb_worker_init; /* (memoryview) -> None, or the error message */

static int task_init(const void *arg, size_t len, fpp_out *out)
{
    if (len < 16) {
        fpp_out_fail(out, "fpp: a %zu-byte worker_init argument", len);
        return 1;
    }
    uint64_t addr, n;
    memcpy(&addr, arg, sizeof addr);
    memcpy(&n, (const char *)arg + 8, sizeof n);
    ctab = (_Atomic uint64_t *)(uintptr_t)addr;
    ctab_n = n;
    if (len == 16)
        return 0;
    if (!worker_ts || !cb_worker_init) {
        fpp_out_fail(out, "fpp: no Python thread state to run the initializer with");
        return 1;
    }
    PyEval_RestoreThread(worker_ts);
    worker_ts = NULL;
    int rc = 0;
    PyObject *mv = PyMemoryView_FromMemory((char *)arg + 16, (Py_ssize_t)(len - 16), PyBUF_READ);
    PyObject *r = mv ? PyObject_CallFunctionObjArgs(cb_worker_init, mv, NULL) : NULL;
    release_view(mv);
    if (!r) {
        char msg[400];
        exception_text(msg, sizeof msg);
        fpp_out_fail(out, "fpp: internal error running the initializer: %s", msg);
        rc = 1;
    } else if (r != Py_None) {
        const char *msg = PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : NULL;
        fpp_out_fail(out, "%s", msg ? msg : "the initializer failed");
        PyErr_Clear();
        rc = 1;
    }
    Py_XDECREF(r);
    worker_ts = PyEval_SaveThread();
    return rc;
}

/* A worker thread's thread state lives as long as the thread: made at its first task, kept
 * (GIL released) between tasks, deleted by this key's destructor when the thread ends (the
 * executor is freed with the GIL released, so the destructor can take it). */
static pthread_key_t thread_ts_key;

static int interpreter_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

static void thread_ts_end(void *p)
{
    PyThreadState *ts = p;
    if (!ts || interpreter_finalizing())
        return; /* the interpreter clears it itself */
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

/* A task in a worker thread of this process: the argument is a sequence number; everything
 * else happens in fpp._codec.thread_run under the GIL. */
static int task_thread(const void *arg, size_t len, fpp_out *out)
{
    static _Thread_local PyThreadState *ts;
    unsigned long long seq;
    if (len != sizeof seq || !cb_thread_run) {
        fpp_out_fail(out, "fpp: bad thread task (%zu-byte argument)", len);
        return 1;
    }
    memcpy(&seq, arg, sizeof seq);
    if (ts)
        PyEval_RestoreThread(ts);
    else
        PyGILState_Ensure(); /* first task of this thread: a thread state that stays */
    ts = NULL;
    PyObject *r = PyObject_CallFunction(cb_thread_run, "K", seq);
    if (!r)
        PyErr_WriteUnraisable(cb_thread_run);
    Py_XDECREF(r);
    ts = PyEval_SaveThread();
    pthread_setspecific(thread_ts_key, ts);
    return 0;
}

/* ------------------------------------------------------------------ Manager */

#ifdef FPP_PYMPI
static int mpi_announce(int32_t flag);
#endif

typedef struct {
    PyObject_HEAD
    fpp_executor *ex;
    fpp_tm *tm;
    int kind;
    int fn;
    int busy;     /* a call with the GIL released is in progress */
    pid_t pid;    /* the creating process: nothing is freed through fpp anywhere else */
    int workers;
    PyObject *weakreflist;
    _Atomic int wake;       /* wake(): a collect(wake=True) in progress returns */
    _Atomic uint64_t *ctab; /* process kind: the cancel table (see task_process) */
    uint64_t ctab_n;
    unsigned char *stage;   /* submit()'s payload is laid out here, then copied by fpp */
    size_t stage_cap;
    char *jpath;            /* the run's journal (open(journal=...)), or NULL */
    fpp_journal *jr;        /* it, opened read-only by journal_find() (what earlier runs wrote) */
} Manager;

/* A staging buffer larger than this is freed after the task that needed it. */
#define STAGE_KEEP ((size_t)64 << 20)

static int enter(Manager *m, int need_tm)
{
    if (m->pid != getpid()) {
        PyErr_SetString(PyExc_RuntimeError, "this fpp pool belongs to another process (it was "
                                            "created before a fork); create a new one here");
        return -1;
    }
    if (m->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this fpp pool is in use by another thread (one thread at a time)");
        return -1;
    }
    if (!m->ex) {
        PyErr_SetString(PyExc_RuntimeError, "this fpp pool is closed");
        return -1;
    }
    if (need_tm && !m->tm) {
        PyErr_SetString(PyExc_RuntimeError, "no run is open on this fpp pool");
        return -1;
    }
    return 0;
}

static int Manager_init(Manager *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"kind", "workers", "queue_capacity", "max_arg_size", "max_result_size",
                            "task_timeout_ms", "max_tasks_per_worker", "max_worker_rss_kib",
                            "keep_fds", "init", NULL};
    const char *kind;
    int workers = 0, keep_fds = 1;
    Py_ssize_t qcap = 0, max_arg = 0, max_res = 0, rss = 0;
    unsigned int timeout_ms = 0, max_tasks = 0;
    Py_buffer init = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|innnIInpz*", names, &kind, &workers, &qcap,
                                     &max_arg, &max_res, &timeout_ms, &max_tasks, &rss, &keep_fds,
                                     &init))
        return -1;
    int ret = -1;
    unsigned char *init_arg = NULL;
    if (m->ex) {
        PyErr_SetString(PyExc_RuntimeError, "Manager already initialised");
        goto out;
    }
    if (strcmp(kind, "process") == 0)
        m->kind = KIND_PROCESS;
    else if (strcmp(kind, "thread") == 0)
        m->kind = KIND_THREAD;
#ifdef FPP_PYMPI
    else if (strcmp(kind, "mpi") == 0)
        m->kind = KIND_MPI;
#endif
    else {
        PyErr_Format(PyExc_ValueError, "kind must be 'process' or 'thread'%s, not '%s'",
#ifdef FPP_PYMPI
                     " or 'mpi'",
#else
                     "",
#endif
                     kind);
        goto out;
    }
    if (qcap < 0 || max_arg < 0 || max_res < 0 || rss < 0) {
        PyErr_SetString(PyExc_ValueError, "sizes must be >= 0");
        goto out;
    }
    if (init.buf && m->kind == KIND_THREAD) {
        PyErr_SetString(PyExc_ValueError, "init is for process pools only");
        goto out;
    }
    m->fn = m->kind == KIND_THREAD ? fn_thread : fn_process;
    fpp_executor_opts o;
    memset(&o, 0, sizeof o);
    o.workers = workers;
    o.queue_capacity = (size_t)qcap;
    o.max_arg_size = (size_t)max_arg;
    o.max_result_size = (size_t)max_res;
    o.task_timeout_ms = timeout_ms;
    o.max_tasks_per_worker = max_tasks;
    o.max_worker_rss_kib = (size_t)rss;
    o.keep_fds = keep_fds;
    if (m->kind != KIND_THREAD) {
        /* The cancel table, before the fork server exists: it and its workers inherit it.
         * Not for MPI: the workers are other ranks' (their worker_init gets address 0). */
        void *t = NULL;
        uint64_t n = 0;
        if (m->kind == KIND_PROCESS) {
            n = 64;
            while (n < (uint64_t)qcap && n < ((uint64_t)1 << 24))
                n <<= 1;
            t = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
            if (t == MAP_FAILED) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto out;
            }
            for (uint64_t i = 0; i < n; i++)
                atomic_init(&((_Atomic uint64_t *)t)[i], UINT64_MAX);
            m->ctab = t;
            m->ctab_n = n;
        }
        size_t alen = 16 + (init.buf ? (size_t)init.len : 0);
        init_arg = PyMem_Malloc(alen);
        if (!init_arg) {
            PyErr_NoMemory();
            goto out;
        }
        uint64_t addr = (uint64_t)(uintptr_t)t;
        memcpy(init_arg, &addr, 8);
        memcpy(init_arg + 8, &n, 8);
        if (init.buf && init.len)
            memcpy(init_arg + 16, init.buf, (size_t)init.len);
        o.worker_init = "fpp.python.init";
        o.worker_init_arg = init_arg;
        o.worker_init_arg_len = alen;
    }
    fpp_executor *ex = NULL;
    int rc;
#ifdef FPP_PYMPI
    if (m->kind == KIND_MPI && mpi_announce(1) < 0)
        goto out;
#endif
    m->busy = 1;
    /* Released: the hooks take the GIL in whichever thread forks (see the top of the file). */
    Py_BEGIN_ALLOW_THREADS
    if (m->kind == KIND_PROCESS)
        rc = fpp_process_executor(&ex, &o);
    else if (m->kind == KIND_THREAD)
        rc = fpp_thread_executor(&ex, &o);
    else
#ifdef FPP_PYMPI
        rc = fpp_mpi_executor(&ex, MPI_COMM_WORLD, &o);
#else
        rc = FPP_EINVAL;
#endif
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (rc) {
        raise_fpp(rc, m->kind == KIND_PROCESS ? "creating the process pool"
                      : m->kind == KIND_THREAD ? "creating the thread pool"
                                               : "creating the MPI executor (every other rank serving)");
        goto out;
    }
    m->ex = ex;
    m->pid = getpid();
    m->workers = fpp_executor_workers(ex);
    deliver_logs();
    ret = 0;
out:
    if (ret && m->ctab && !m->ex) {
        munmap((void *)m->ctab, m->ctab_n * sizeof(uint64_t));
        m->ctab = NULL;
        m->ctab_n = 0;
    }
    PyMem_Free(init_arg);
    if (init.buf)
        PyBuffer_Release(&init);
    return ret;
}

static void free_journal(Manager *m)
{
    fpp_journal_close(m->jr);
    m->jr = NULL;
    PyMem_Free(m->jpath);
    m->jpath = NULL;
}

static void free_tm(Manager *m)
{
    free_journal(m);
    fpp_tm *tm = m->tm;
    m->tm = NULL; /* before the GIL goes: stats() in another thread sees NULL from now on */
    if (!tm)
        return;
    m->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    fpp_tm_free(tm);
    Py_END_ALLOW_THREADS
    m->busy = 0;
}

static void free_all(Manager *m)
{
    if (m->pid != getpid()) { /* a forked copy: the executor is the parent's */
        free_journal(m);
        m->tm = NULL;
        m->ex = NULL;
        free(m->stage);
        m->stage = NULL;
        m->stage_cap = 0;
        return;
    }
    free_tm(m);
    fpp_executor *ex = m->ex;
    m->ex = NULL;
    if (ex) {
        m->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        fpp_executor_free(ex);
        Py_END_ALLOW_THREADS
        m->busy = 0;
    }
    if (m->ctab) { /* the workers that mapped it are gone */
        munmap((void *)m->ctab, m->ctab_n * sizeof(uint64_t));
        m->ctab = NULL;
        m->ctab_n = 0;
    }
    free(m->stage);
    m->stage = NULL;
    m->stage_cap = 0;
    deliver_logs();
}

static void Manager_dealloc(Manager *m)
{
    if (m->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)m);
    if (!m->busy)
        free_all(m);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

PyDoc_STRVAR(open_doc, "open(max_in_flight, journal=None, journal_key='', rerun_failed=False, "
                       "journal_result_max=0, journal_flush_ms=0): start a run (create the task "
                       "manager), with fpp's task journal if journal is a path.");
static PyObject *Manager_open(Manager *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"max_in_flight", "journal", "journal_key", "rerun_failed",
                            "journal_result_max", "journal_flush_ms", NULL};
    Py_ssize_t mif;
    PyObject *jpath_o = Py_None;
    const char *jkey = NULL;
    int rerun_failed = 0, flush_ms = 0;
    Py_ssize_t rmax = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n|Ozpni", names, &mif, &jpath_o, &jkey,
                                     &rerun_failed, &rmax, &flush_ms))
        return NULL;
    if (enter(m, 0))
        return NULL;
    if (m->tm) {
        PyErr_SetString(PyExc_RuntimeError, "a run is already open on this fpp pool");
        return NULL;
    }
    if (mif < 1) {
        PyErr_SetString(PyExc_ValueError, "max_in_flight must be >= 1");
        return NULL;
    }
    if (rmax < 0) {
        PyErr_SetString(PyExc_ValueError, "journal_result_max must be >= 0");
        return NULL;
    }
    PyObject *jbytes = NULL;
    if (jpath_o != Py_None && !PyUnicode_FSConverter(jpath_o, &jbytes))
        return NULL;
    fpp_tm_opts o;
    memset(&o, 0, sizeof o);
    /* Policies, the monitor and Ctrl-C are the Python layer's: a Python exception is a
     * successful C task whose result says so. */
    o.error_policy = FPP_IGNORE;
    o.monitor_interval_ms = -1;
    o.max_in_flight = (size_t)mif;
    o.flags = FPP_TM_NO_SIGINT;
    char *jpath = NULL;
    if (jbytes) {
        const char *p = PyBytes_AS_STRING(jbytes);
        size_t n = strlen(p) + 1;
        jpath = PyMem_Malloc(n);
        if (!jpath) {
            Py_DECREF(jbytes);
            return PyErr_NoMemory();
        }
        memcpy(jpath, p, n);
        Py_DECREF(jbytes);
        o.journal = jpath;
        o.journal_key = jkey;
        o.journal_result_max = (size_t)rmax;
        o.journal_flush_ms = flush_ms;
        if (rerun_failed)
            o.flags |= FPP_TM_RERUN_FAILED;
    }
    fpp_tm *tm = NULL;
    int rc;
    m->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = fpp_tm_create(&tm, m->ex, &o);
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (rc) {
        int journal = jpath != NULL;
        PyMem_Free(jpath);
        return raise_fpp(rc, journal ? "starting a run on the task journal" : "starting a run");
    }
    m->tm = tm;
    m->jpath = jpath;
    deliver_logs();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(journal_find_doc,
             "journal_find(id) -> None if the run's journal holds no outcome for task id (as "
             "it was when the run began), else (status, signal, attempts, result bytes or None, "
             "result_len, error or None).");
static PyObject *Manager_journal_find(Manager *m, PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (enter(m, 1))
        return NULL;
    if (!m->jpath) {
        PyErr_SetString(PyExc_RuntimeError, "this run has no journal");
        return NULL;
    }
    int rc;
    if (!m->jr) {
        fpp_journal *j = NULL;
        Py_BEGIN_ALLOW_THREADS
        rc = fpp_journal_open(&j, m->jpath);
        Py_END_ALLOW_THREADS
        if (rc)
            return raise_fpp(rc, "reading the task journal");
        m->jr = j;
    }
    fpp_journal_rec r;
    memset(&r, 0, sizeof r);
    Py_BEGIN_ALLOW_THREADS
    rc = fpp_journal_find(m->jr, (int64_t)id, &r);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_fpp(rc, "reading the task journal");
    deliver_logs();
    if (rc == 0)
        Py_RETURN_NONE;
    PyObject *res;
    if (r.result && r.result_len)
        res = PyBytes_FromStringAndSize(r.result, (Py_ssize_t)r.result_len);
    else {
        res = Py_None;
        Py_INCREF(res);
    }
    if (!res)
        return NULL;
    return Py_BuildValue("(iiINKz)", (int)r.status, r.signo, r.attempts, res,
                         (unsigned long long)r.result_len, r.error);
}

PyDoc_STRVAR(reset_doc, "reset(): end the run: unfinished tasks are cancelled (busy process "
                        "workers are killed and replaced). No-op without a run.");
static PyObject *Manager_reset(Manager *m, PyObject *unused)
{
    (void)unused;
    if (m->pid != getpid()) {
        m->tm = NULL;
        Py_RETURN_NONE;
    }
    if (m->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this fpp pool is in use by another thread");
        return NULL;
    }
    free_tm(m);
    deliver_logs();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_doc, "close(): end the run and stop every worker.");
static PyObject *Manager_close(Manager *m, PyObject *unused)
{
    (void)unused;
    if (m->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this fpp pool is in use by another thread");
        return NULL;
    }
    free_all(m);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(submit_doc,
             "submit(payload, slot=0, gen=0) -> task id. Process pools: payload is a bytes-like "
             "object or a tuple or list of them (laid end to end after the ticket prefix: slot "
             "is a cancel-table slot + 1 armed with arm(), 0 for none); thread pools: a sequence "
             "number. Never waits if the caller keeps fewer than max_in_flight tasks uncollected.");
static PyObject *Manager_submit(Manager *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"payload", "slot", "gen", NULL};
    PyObject *payload;
    unsigned int slot1 = 0;
    unsigned long long gen = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|IK", names, &payload, &slot1, &gen))
        return NULL;
    if (enter(m, 1))
        return NULL;
    unsigned long long seq = 0;
    const void *data;
    size_t len;
    if (m->kind == KIND_THREAD) {
        seq = PyLong_AsUnsignedLongLong(payload);
        if (seq == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        data = &seq;
        len = sizeof seq;
    } else {
        if (slot1 > m->ctab_n) {
            PyErr_SetString(PyExc_ValueError, "no such cancel-table slot");
            return NULL;
        }
        parts_t parts;
        if (parts_get(payload, &parts) < 0)
            return NULL;
        len = PREFIX + parts.total;
        if (len > m->stage_cap) {
            free(m->stage);
            m->stage_cap = 0;
            m->stage = malloc(len);
            if (!m->stage) {
                parts_release(&parts);
                return PyErr_NoMemory();
            }
            m->stage_cap = len;
        }
        memset(m->stage, 0, PREFIX);
        memcpy(m->stage, &slot1, sizeof slot1);
        memcpy(m->stage + 8, &gen, sizeof gen);
        parts_copy(&parts, m->stage + PREFIX);
        parts_release(&parts);
        data = m->stage;
    }
    int64_t id;
    m->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    id = fpp_submit(m->tm, m->fn, data, len);
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (m->stage_cap > STAGE_KEEP) {
        free(m->stage);
        m->stage = NULL;
        m->stage_cap = 0;
    }
    if (id < 0) {
        if (id == FPP_ETOOBIG) {
            char what[160];
            snprintf(what, sizeof what, "a task's pickled arguments are %zu bytes, over max_arg_size", len);
            return raise_fpp((int)id, what);
        }
        return raise_fpp((int)id, "submitting a task");
    }
    deliver_logs();
    return PyLong_FromLongLong(id);
}

PyDoc_STRVAR(arm_doc, "arm(slot, gen): cancel-table slot (slot + 1, as given to submit) now "
                      "holds a queued task of generation gen. Any thread.");
static PyObject *Manager_arm(Manager *m, PyObject *args)
{
    unsigned int slot1;
    unsigned long long gen;
    if (!PyArg_ParseTuple(args, "IK", &slot1, &gen))
        return NULL;
    if (!m->ctab || slot1 == 0 || slot1 > m->ctab_n || gen >= ((unsigned long long)1 << 62)) {
        PyErr_SetString(PyExc_ValueError, "no such cancel-table slot or generation");
        return NULL;
    }
    atomic_store(&m->ctab[slot1 - 1], (uint64_t)gen << 2 | T_QUEUED);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cancel_doc, "cancel_ticket(slot, gen) -> True if the task was still queued (it "
                         "will not run), False if it started or is gone. Any thread.");
static PyObject *Manager_cancel_ticket(Manager *m, PyObject *args)
{
    unsigned int slot1;
    unsigned long long gen;
    if (!PyArg_ParseTuple(args, "IK", &slot1, &gen))
        return NULL;
    if (!m->ctab || slot1 == 0 || slot1 > m->ctab_n)
        Py_RETURN_FALSE;
    uint64_t want = (uint64_t)gen << 2 | T_QUEUED;
    return PyBool_FromLong(atomic_compare_exchange_strong(&m->ctab[slot1 - 1], &want, (uint64_t)gen << 2 | T_CANCELLED));
}

PyDoc_STRVAR(ticket_state_doc, "ticket_state(slot, gen) -> 0 queued, 1 started, 2 cancelled, "
                               "-1 not this ticket. Any thread.");
static PyObject *Manager_ticket_state(Manager *m, PyObject *args)
{
    unsigned int slot1;
    unsigned long long gen;
    if (!PyArg_ParseTuple(args, "IK", &slot1, &gen))
        return NULL;
    if (!m->ctab || slot1 == 0 || slot1 > m->ctab_n)
        return PyLong_FromLong(-1);
    uint64_t w = atomic_load(&m->ctab[slot1 - 1]);
    return PyLong_FromLong((w >> 2) == (uint64_t)gen ? (long)(w & 3) : -1);
}

PyDoc_STRVAR(wake_doc, "wake(): a collect(wake=True) in progress in another thread returns "
                       "(an empty list if nothing finished) within a slice. Any thread.");
static PyObject *Manager_wake(Manager *m, PyObject *unused)
{
    (void)unused;
    atomic_store(&m->wake, 1);
    Py_RETURN_NONE;
}

/* One finished task as (id, code, value). GIL held; t valid until the next fpp call. */
static PyObject *outcome(Manager *m, fpp_task *t)
{
    fpp_status st = fpp_task_status(t);
    long long id = (long long)fpp_task_id(t);
    PyObject *res = NULL;
    if (m->kind == KIND_THREAD) {
        size_t alen;
        const void *a = fpp_task_arg(t, &alen);
        unsigned long long seq = 0;
        if (a && alen == sizeof seq)
            memcpy(&seq, a, sizeof seq);
        PyObject *cv = PyObject_CallFunction(cb_thread_outcome, "Ki", seq, (int)st);
        if (!cv)
            return NULL;
        PyObject *code = PyTuple_Check(cv) && PyTuple_GET_SIZE(cv) == 2 ? PyTuple_GET_ITEM(cv, 0) : NULL;
        if (!code) {
            Py_DECREF(cv);
            PyErr_SetString(PyExc_SystemError, "thread_outcome returned a bad value");
            return NULL;
        }
        if (PyLong_AsLong(code) < CODE_FPP) {
            res = Py_BuildValue("(LOO)", id, code, PyTuple_GET_ITEM(cv, 1));
            Py_DECREF(cv);
            return res;
        }
        Py_DECREF(cv);
    }
    if (st == FPP_DONE && m->kind != KIND_THREAD) {
        size_t n;
        const unsigned char *r = fpp_task_result(t, &n);
        if (!r || n == 0)
            return Py_BuildValue("(Li(si))", id, CODE_FPP + FPP_FAILED, "fpp: the worker returned no result", 0);
        PyObject *mv = PyMemoryView_FromMemory((char *)r + 1, (Py_ssize_t)(n - 1), PyBUF_READ);
        if (!mv)
            return NULL;
        PyObject *cv = NULL;
        if (r[0] == 'R') {
            PyObject *v = PyObject_CallFunctionObjArgs(pickle_loads, mv, NULL);
            if (v) {
                cv = Py_BuildValue("(iN)", CODE_OK, v);
            } else {
                /* The result came back but cannot be rebuilt here: that is the task's error. */
                PyObject *et, *ev, *etb;
                PyErr_Fetch(&et, &ev, &etb);
                PyErr_NormalizeException(&et, &ev, &etb);
                if (ev && etb)
                    PyException_SetTraceback(ev, etb);
                cv = ev ? Py_BuildValue("(iO)", CODE_EXC, ev) : NULL;
                Py_XDECREF(et);
                Py_XDECREF(ev);
                Py_XDECREF(etb);
            }
        } else {
            PyObject *full = PyMemoryView_FromMemory((char *)r, (Py_ssize_t)n, PyBUF_READ);
            cv = full ? PyObject_CallFunctionObjArgs(cb_decode, full, NULL) : NULL;
            if (full) {
                PyObject *rel = PyObject_CallMethod(full, "release", NULL);
                if (!rel)
                    PyErr_Clear();
                Py_XDECREF(rel);
                Py_DECREF(full);
            }
        }
        PyObject *rel = PyObject_CallMethod(mv, "release", NULL);
        if (!rel)
            PyErr_Clear();
        Py_XDECREF(rel);
        Py_DECREF(mv);
        if (!cv)
            return NULL;
        if (!PyTuple_Check(cv) || PyTuple_GET_SIZE(cv) != 2) {
            Py_DECREF(cv);
            PyErr_SetString(PyExc_SystemError, "decode returned a bad value");
            return NULL;
        }
        res = Py_BuildValue("(LOO)", id, PyTuple_GET_ITEM(cv, 0), PyTuple_GET_ITEM(cv, 1));
        Py_DECREF(cv);
        return res;
    }
    const char *err = fpp_task_error(t);
    if (st == FPP_DONE) /* a thread task that reported nothing: cannot happen */
        return Py_BuildValue("(Li(si))", id, CODE_FPP + FPP_FAILED, "fpp: no outcome recorded", 0);
    return Py_BuildValue("(Li(si))", id, CODE_FPP + (int)st, err ? err : fpp_status_name(st),
                         fpp_task_signal(t));
}

PyDoc_STRVAR(collect_doc,
             "collect(timeout=None, max_n=256, wake=False) -> list of (id, code, value), or None "
             "when nothing is left. Waits up to timeout seconds (None: for ever) for the first "
             "finished task, then takes what else has finished, up to max_n. An empty list: the "
             "timeout passed (or, with wake, wake() was called). Without wake the wait is cut "
             "in slices with Python's signal handlers run in between; with wake (a thread that "
             "is not the main one) it waits without the GIL, checking for wake() every "
             "WAKE_SLICE_MS.");
static PyObject *Manager_collect(Manager *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout", "max_n", "wake", NULL};
    PyObject *timeout = Py_None;
    Py_ssize_t max_n = COLLECT_MAX_DEFAULT;
    int wake = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Onp", names, &timeout, &max_n, &wake))
        return NULL;
    if (enter(m, 1))
        return NULL;
    double limit = -1;
    if (timeout != Py_None) {
        limit = PyFloat_AsDouble(timeout);
        if (limit == -1 && PyErr_Occurred())
            return NULL;
        if (limit < 0)
            limit = 0;
    }
    if (max_n < 1)
        max_n = 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double start = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    int first = 1;
    for (;;) {
        int slice = wake ? WAKE_SLICE_MS : SLICE_MS;
        if (!first) {
            slice = 0; /* after the first: only what is ready now */
        } else if (limit >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double left = limit - ((double)ts.tv_sec + ts.tv_nsec / 1e9 - start);
            if (left < slice / 1000.0)
                slice = left > 0 ? (int)(left * 1000) : 0;
        }
        fpp_task *t = NULL;
        int rc;
        int woken = 0;
        m->busy = 1;
        if (wake && first) {
            /* A wake() that came before this call counts: look once, without waiting. */
            if (atomic_exchange(&m->wake, 0))
                slice = 0, woken = 1;
            Py_BEGIN_ALLOW_THREADS
            for (;;) {
                rc = fpp_as_completed_for(m->tm, &t, slice);
                if (rc != FPP_ETIMEDOUT || woken || slice == 0)
                    break;
                if (atomic_exchange(&m->wake, 0)) {
                    woken = 1;
                    slice = 0; /* one last look */
                    continue;
                }
                if (limit >= 0) {
                    clock_gettime(CLOCK_MONOTONIC, &ts);
                    double left = limit - ((double)ts.tv_sec + ts.tv_nsec / 1e9 - start);
                    if (left <= 0)
                        break;
                    if (left < slice / 1000.0)
                        slice = (int)(left * 1000);
                }
            }
            Py_END_ALLOW_THREADS
        } else {
            Py_BEGIN_ALLOW_THREADS
            rc = fpp_as_completed_for(m->tm, &t, slice);
            Py_END_ALLOW_THREADS
        }
        m->busy = 0;
        deliver_logs();
        if (rc == 1) {
            PyObject *o = outcome(m, t);
            if (!o || PyList_Append(list, o) < 0) {
                Py_XDECREF(o);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(o);
            first = 0;
            if (PyList_GET_SIZE(list) >= max_n)
                break;
            continue;
        }
        if (rc == 0) { /* nothing left */
            if (PyList_GET_SIZE(list) > 0)
                break;
            Py_DECREF(list);
            Py_RETURN_NONE;
        }
        if (rc == FPP_ETIMEDOUT) {
            if (!first || wake)
                break;
            /* Python's signal handlers run here: KeyboardInterrupt, alarms, pytest-timeout. */
            if (PyErr_CheckSignals() < 0) {
                Py_DECREF(list);
                return NULL;
            }
            if (!m->tm) { /* a handler ended the run or closed the pool */
                Py_DECREF(list);
                PyErr_SetString(PyExc_RuntimeError, "the run was ended while waiting for it");
                return NULL;
            }
            if (slice < SLICE_MS && limit >= 0)
                break; /* the caller's timeout passed */
            continue;
        }
        Py_DECREF(list);
        return raise_fpp(rc, "waiting for tasks");
    }
    return list;
}

PyDoc_STRVAR(stats_doc, "stats() -> (submitted, done, failed, crashed, timed_out, cancelled, "
                        "worker_restarts, in_flight), or None without a run. Any thread.");
static PyObject *Manager_stats(Manager *m, PyObject *unused)
{
    (void)unused;
    if (!m->tm || m->pid != getpid())
        Py_RETURN_NONE;
    fpp_stats s;
    fpp_tm_stats(m->tm, &s);
    return Py_BuildValue("(KKKKKKKn)", (unsigned long long)s.submitted, (unsigned long long)s.done,
                         (unsigned long long)s.failed, (unsigned long long)s.crashed,
                         (unsigned long long)s.timed_out, (unsigned long long)s.cancelled,
                         (unsigned long long)s.worker_restarts, (Py_ssize_t)s.in_flight);
}

static PyObject *Manager_get_skipped(Manager *m, void *c)
{
    (void)c;
    if (!m->tm || m->pid != getpid())
        return PyLong_FromLong(0);
    fpp_stats s;
    fpp_tm_stats(m->tm, &s);
    return PyLong_FromUnsignedLongLong(s.skipped);
}

static PyObject *Manager_get_workers(Manager *m, void *c)
{
    (void)c;
    return PyLong_FromLong(m->workers);
}

static PyObject *Manager_get_kind(Manager *m, void *c)
{
    (void)c;
    return PyUnicode_FromString(m->kind == KIND_PROCESS ? "process" : m->kind == KIND_THREAD ? "thread" : "mpi");
}

static PyObject *Manager_get_closed(Manager *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->ex == NULL);
}

static PyObject *Manager_get_tickets(Manager *m, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(m->ctab_n);
}

static PyObject *Manager_get_running(Manager *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->tm != NULL);
}

static PyMethodDef Manager_methods[] = {
    {"open", (PyCFunction)(void (*)(void))Manager_open, METH_VARARGS | METH_KEYWORDS, open_doc},
    {"journal_find", (PyCFunction)Manager_journal_find, METH_O, journal_find_doc},
    {"reset", (PyCFunction)Manager_reset, METH_NOARGS, reset_doc},
    {"close", (PyCFunction)Manager_close, METH_NOARGS, close_doc},
    {"submit", (PyCFunction)(void (*)(void))Manager_submit, METH_VARARGS | METH_KEYWORDS, submit_doc},
    {"arm", (PyCFunction)Manager_arm, METH_VARARGS, arm_doc},
    {"cancel_ticket", (PyCFunction)Manager_cancel_ticket, METH_VARARGS, cancel_doc},
    {"ticket_state", (PyCFunction)Manager_ticket_state, METH_VARARGS, ticket_state_doc},
    {"wake", (PyCFunction)Manager_wake, METH_NOARGS, wake_doc},
    {"collect", (PyCFunction)(void (*)(void))Manager_collect, METH_VARARGS | METH_KEYWORDS, collect_doc},
    {"stats", (PyCFunction)Manager_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Manager_getset[] = {
    {"workers", (getter)Manager_get_workers, NULL, "number of workers", NULL},
    {"skipped", (getter)Manager_get_skipped, NULL, "ids of this run the journal says an earlier run finished (fpp_stats.skipped)", NULL},
    {"kind", (getter)Manager_get_kind, NULL, "'process' or 'thread'", NULL},
    {"closed", (getter)Manager_get_closed, NULL, "True once close() ran", NULL},
    {"running", (getter)Manager_get_running, NULL, "True while a run is open", NULL},
    {"tickets", (getter)Manager_get_tickets, NULL, "slots in the cancel table (0: none)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ManagerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = MODNAME ".Manager",
    .tp_basicsize = sizeof(Manager),
    .tp_dealloc = (destructor)Manager_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Manager(kind, workers=0, queue_capacity=0, max_arg_size=0, max_result_size=0, "
              "task_timeout_ms=0, max_tasks_per_worker=0, max_worker_rss_kib=0, keep_fds=True): "
              "one fpp executor ('process' or 'thread') and the task manager of the run in "
              "progress. The low-level object under fpp.ProcessPool and fpp.futureproof.",
    .tp_weaklistoffset = offsetof(Manager, weakreflist),
    .tp_methods = Manager_methods,
    .tp_getset = Manager_getset,
    .tp_init = (initproc)Manager_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ Buffer */

/* Where a big out-of-band buffer of a result goes in the parent: copy_out() copies it out of
 * fpp's result memory (which is reused) into a Buffer, a writable bytes-like object that numpy
 * (or memoryview) wraps without another copy. Buffers come from a cache of mappings, so the
 * memory a program let go of serves the next results without page faults: malloc cannot do
 * that here, because results are made by the collector thread and freed by another one
 * (glibc's per-thread arenas then give the memory back and fault it in again: a 1 MiB copy
 * took 88 us so, 34 us hot). The copy runs without the GIL. The cache keeps at most
 * BUF_CACHE_MAX bytes of buffers let go of, and is emptied when a pool stops. */

#define BUF_MIN_CLASS 16 /* 64 KiB: smaller buffers are bytearrays */
#define BUF_CLASSES 15   /* up to 1 GiB */
#define BUF_CACHE_MAX ((size_t)256 << 20)
#define BUF_PER_CLASS 256

static pthread_mutex_t buf_mu = PTHREAD_MUTEX_INITIALIZER;
static void *buf_free[BUF_CLASSES][BUF_PER_CLASS];
static int buf_nfree[BUF_CLASSES];
static size_t buf_cached;

static int buf_class(size_t len)
{
    int c = 0;
    while (((size_t)1 << (BUF_MIN_CLASS + c)) < len)
        c++;
    return c;
}

static void *buf_get(size_t len, size_t *cap)
{
    int c = buf_class(len);
    *cap = (size_t)1 << (BUF_MIN_CLASS + c);
    void *p = NULL;
    if (c < BUF_CLASSES) {
        pthread_mutex_lock(&buf_mu);
        if (buf_nfree[c] > 0) {
            p = buf_free[c][--buf_nfree[c]];
            buf_cached -= *cap;
        }
        pthread_mutex_unlock(&buf_mu);
    }
    if (!p) {
        p = mmap(NULL, *cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            p = NULL;
    }
    return p;
}

static void buf_put(void *p, size_t cap)
{
    int c = buf_class(cap);
    pthread_mutex_lock(&buf_mu);
    if (c < BUF_CLASSES && buf_nfree[c] < BUF_PER_CLASS && buf_cached + cap <= BUF_CACHE_MAX) {
        buf_free[c][buf_nfree[c]++] = p;
        buf_cached += cap;
        p = NULL;
    }
    pthread_mutex_unlock(&buf_mu);
    if (p)
        munmap(p, cap);
}

/* In a child of a fork (a worker, or the program's own fork): the cache is the parent's
 * (copy-on-write copies: dropped) and its mutex may have been held by another thread. */
static void buf_atfork_child(void)
{
    pthread_mutex_init(&buf_mu, NULL);
    for (int c = 0; c < BUF_CLASSES; c++) {
        for (int i = 0; i < buf_nfree[c]; i++)
            munmap(buf_free[c][i], (size_t)1 << (BUF_MIN_CLASS + c));
        buf_nfree[c] = 0;
    }
    buf_cached = 0;
}

typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t len;
    size_t cap;
    Py_ssize_t exports;
} Buffer;

static int Buffer_getbuffer(Buffer *b, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)b, b->p, b->len, 0, flags) < 0)
        return -1;
    b->exports++;
    return 0;
}

static void Buffer_releasebuffer(Buffer *b, Py_buffer *view)
{
    (void)view;
    b->exports--;
}

static void Buffer_dealloc(Buffer *b)
{
    if (b->p)
        buf_put(b->p, b->cap);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static Py_ssize_t Buffer_length(Buffer *b) { return b->len; }

static PyBufferProcs Buffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)Buffer_getbuffer,
    .bf_releasebuffer = (releasebufferproc)Buffer_releasebuffer,
};

static PySequenceMethods Buffer_as_sequence = {
    .sq_length = (lenfunc)Buffer_length,
};

static PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = MODNAME ".Buffer",
    .tp_basicsize = sizeof(Buffer),
    .tp_dealloc = (destructor)Buffer_dealloc,
    .tp_as_buffer = &Buffer_as_buffer,
    .tp_as_sequence = &Buffer_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Buffer: writable memory a big out-of-band buffer of a result was copied into "
              "(numpy arrays and memoryviews wrap it). Made by copy_out().",
};

PyDoc_STRVAR(trim_doc, "trim_buffers() -> bytes given back: the Buffer cache is emptied "
                      "(a pool does it when it stops).");
static PyObject *py_trim_buffers(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    size_t freed = 0;
    for (;;) {
        void *p = NULL;
        size_t cap = 0;
        pthread_mutex_lock(&buf_mu);
        for (int c = 0; c < BUF_CLASSES && !p; c++)
            if (buf_nfree[c] > 0) {
                p = buf_free[c][--buf_nfree[c]];
                cap = (size_t)1 << (BUF_MIN_CLASS + c);
                buf_cached -= cap;
            }
        pthread_mutex_unlock(&buf_mu);
        if (!p)
            break;
        munmap(p, cap);
        freed += cap;
    }
    return PyLong_FromSize_t(freed);
}

PyDoc_STRVAR(copy_out_doc, "copy_out(view, offset, length) -> Buffer: a copy of view[offset:"
                           "offset+length] (view: a bytes-like object), made without the GIL.");
static PyObject *py_copy_out(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer v;
    Py_ssize_t off, len;
    if (!PyArg_ParseTuple(args, "y*nn", &v, &off, &len))
        return NULL;
    if (off < 0 || len < 0 || off > v.len || len > v.len - off) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "copy_out: offset and length outside the view");
        return NULL;
    }
    Buffer *b = PyObject_New(Buffer, &BufferType);
    if (!b) {
        PyBuffer_Release(&v);
        return NULL;
    }
    b->len = len;
    b->exports = 0;
    b->p = buf_get(len ? (size_t)len : 1, &b->cap);
    if (!b->p) {
        b->cap = 0;
        Py_DECREF(b);
        PyBuffer_Release(&v);
        return PyErr_NoMemory();
    }
    const char *src = (const char *)v.buf + off;
    Py_BEGIN_ALLOW_THREADS
    memcpy(b->p, src, (size_t)len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    return (PyObject *)b;
}

#ifdef FPP_PYMPI
/* ------------------------------------------------------------------ MPI */

/* python3 -m fpp.mpi: every rank calls init(); rank 0 runs the program, whose executors each
 * begin with announce(1) on a communicator of our own (so that the serving ranks know another
 * executor comes) and end when rank 0 frees them; finish() is announce(0). The other ranks
 * serve() until then: announce, fpp_mpi_serve, again. Every wait is nonblocking MPI with naps
 * (Open MPI's blocking collectives spin), with the GIL released. */
static MPI_Comm ctl = MPI_COMM_NULL;

static int mpi_wait(MPI_Request *r)
{
    for (;;) {
        int done = 0;
        int rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return rc;
        if (done)
            return MPI_SUCCESS;
        struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
    }
}

static int mpi_bcast_flag(int32_t *flag)
{
    MPI_Request r;
    int rc = MPI_Ibcast(flag, 1, MPI_INT32_T, 0, ctl, &r);
    return rc == MPI_SUCCESS ? mpi_wait(&r) : rc;
}

static int mpi_announce(int32_t flag)
{
    if (ctl == MPI_COMM_NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fpp.mpi: MPI is not set up here: run the program "
                                            "as mpirun -np N python3 -m fpp.mpi program.py");
        return -1;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mpi_bcast_flag(&flag);
    Py_END_ALLOW_THREADS
    if (rc != MPI_SUCCESS) {
        PyErr_Format(PyExc_RuntimeError, "fpp.mpi: MPI_Ibcast failed (%d)", rc);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(mpi_init_doc, "init() -> (rank, size, thread level): MPI_Init_thread (MULTIPLE "
                           "asked, SERIALIZED needed) unless MPI is up, and fpp.mpi's communicator.");
static PyObject *py_mpi_init(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int up = 0, provided = 0, rc = MPI_SUCCESS;
    MPI_Initialized(&up);
    if (!up) {
        /* Loaded by Python without RTLD_GLOBAL, libmpi's plugins would not find its symbols. */
        Dl_info info;
        if (dladdr((void *)&MPI_Init_thread, &info) && info.dli_fname)
            dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        Py_BEGIN_ALLOW_THREADS
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        Py_END_ALLOW_THREADS
        if (rc != MPI_SUCCESS) {
            PyErr_Format(PyExc_RuntimeError, "fpp.mpi: MPI_Init_thread failed (%d)", rc);
            return NULL;
        }
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        PyErr_Format(PyExc_RuntimeError, "fpp.mpi: MPI gives thread level %d, it needs "
                                         "MPI_THREAD_SERIALIZED or MULTIPLE", provided);
        return NULL;
    }
    if (ctl == MPI_COMM_NULL && MPI_Comm_dup(MPI_COMM_WORLD, &ctl) != MPI_SUCCESS) {
        PyErr_SetString(PyExc_RuntimeError, "fpp.mpi: MPI_Comm_dup failed");
        return NULL;
    }
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return Py_BuildValue("(iii)", rank, size, provided);
}

PyDoc_STRVAR(mpi_serve_doc, "serve(): on a rank other than 0, serves rank 0's executors, one "
                            "after the other, until finish(). fpp's lines go to stderr.");
static PyObject *py_mpi_serve(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (ctl == MPI_COMM_NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fpp.mpi: call init() first");
        return NULL;
    }
    fpp_log_set(NULL, NULL, FPP_LOG_WARN); /* "[HH:MM:SS tid] rank 2: ..." on stderr */
    for (;;) {
        int32_t flag = 0;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = mpi_bcast_flag(&flag);
        if (rc == MPI_SUCCESS && flag == 1)
            rc = fpp_mpi_serve(MPI_COMM_WORLD, NULL); /* an error is logged; serve on */
        Py_END_ALLOW_THREADS
        if (flag != 1)
            break;
        (void)rc;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mpi_finish_doc, "finish(): on rank 0, once its executors are freed: the serving "
                             "ranks' serve() returns.");
static PyObject *py_mpi_finish(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (mpi_announce(0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mpi_finalize_doc, "finalize(): MPI_Finalize.");
static PyObject *py_mpi_finalize(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) {
        if (ctl != MPI_COMM_NULL)
            MPI_Comm_free(&ctl);
        Py_BEGIN_ALLOW_THREADS
        MPI_Finalize();
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}
#endif

/* ------------------------------------------------------------------ module */

PyDoc_STRVAR(set_callbacks_doc,
             "set_callbacks(worker_run, decode, thread_run, thread_outcome, log, error, "
             "worker_init): the Python halves (fpp/__init__.py calls this once).");
static PyObject *set_callbacks(PyObject *self, PyObject *args)
{
    (void)self;
    enum { N = 7 };
    PyObject *a[N];
    if (!PyArg_ParseTuple(args, "OOOOOOO", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6]))
        return NULL;
    for (int i = 0; i < N; i++)
        if (!PyCallable_Check(a[i])) {
            PyErr_Format(PyExc_TypeError, "callback %d is not callable", i);
            return NULL;
        }
    PyObject **slots[N] = {&cb_worker_run, &cb_decode, &cb_thread_run, &cb_thread_outcome,
                           &cb_log, &cb_error, &cb_worker_init};
    for (int i = 0; i < N; i++) {
        Py_INCREF(a[i]);
        Py_XSETREF(*slots[i], a[i]);
    }
    Py_RETURN_NONE;
}

static PyObject *py_strerror(PyObject *self, PyObject *arg)
{
    (void)self;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(ss)", fpp_err_name((int)c), fpp_strerror((int)c));
}

static PyObject *py_set_log_level(PyObject *self, PyObject *arg)
{
    (void)self;
    long lv = PyLong_AsLong(arg);
    if (lv == -1 && PyErr_Occurred())
        return NULL;
    if (lv < FPP_LOG_DEBUG || lv > FPP_LOG_OFF) {
        PyErr_SetString(PyExc_ValueError, "level must be 0 (debug) .. 4 (off)");
        return NULL;
    }
    fpp_log_set(log_sink, NULL, (fpp_log_level)lv);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_callbacks", set_callbacks, METH_VARARGS, set_callbacks_doc},
    {"strerror", py_strerror, METH_O, "strerror(code) -> (name, message) of an FPP_E* code."},
    {"set_log_level", py_set_log_level, METH_O, "set_log_level(n): fpp's own minimum level (0 debug .. 4 off)."},
    {"copy_out", py_copy_out, METH_VARARGS, copy_out_doc},
    {"trim_buffers", py_trim_buffers, METH_NOARGS, trim_doc},
#ifdef FPP_PYMPI
    {"init", py_mpi_init, METH_NOARGS, mpi_init_doc},
    {"serve", py_mpi_serve, METH_NOARGS, mpi_serve_doc},
    {"finish", py_mpi_finish, METH_NOARGS, mpi_finish_doc},
    {"finalize", py_mpi_finalize, METH_NOARGS, mpi_finalize_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = MODNAME,
    .m_doc = "The C half of fpp: runs Python callables in fpp's crash-isolated worker processes.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int register_fn(const char *name, fpp_fn fn)
{
    int id = fpp_register(name, fn);
    if (id == FPP_EINVAL) /* taken: this library was loaded before (a second interpreter) */
        id = fpp_lookup(name);
    if (id < 0) {
        PyErr_Format(PyExc_ImportError,
                     "fpp: cannot register %s (%s): an fpp executor already exists in this "
                     "process; import fpp before creating any",
                     name, fpp_strerror(id));
        return -1;
    }
    return id;
}

#ifdef FPP_PYMPI
PyMODINIT_FUNC PyInit__fpp_mpi(void); /* the module's one exported symbol */
PyMODINIT_FUNC PyInit__fpp_mpi(void)
#else
PyMODINIT_FUNC PyInit__fpp(void); /* the module's one exported symbol */
PyMODINIT_FUNC PyInit__fpp(void)
#endif
{
    if (PyType_Ready(&ManagerType) < 0 || PyType_Ready(&BufferType) < 0)
        return NULL;
    static int atfork_done;
    if (!atfork_done && pthread_atfork(NULL, NULL, buf_atfork_child) == 0)
        atfork_done = 1;
    if (pthread_key_create(&thread_ts_key, thread_ts_end) != 0) {
        PyErr_SetString(PyExc_ImportError, "fpp: pthread_key_create failed");
        return NULL;
    }
    if ((fn_process = register_fn("fpp.python.process", task_process)) < 0)
        return NULL;
    if ((fn_thread = register_fn("fpp.python.thread", task_thread)) < 0)
        return NULL;
    if ((fn_init = register_fn("fpp.python.init", task_init)) < 0)
        return NULL;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return NULL;
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    if (!pickle_loads)
        return NULL;
    fpp_set_fork_hooks(hook_prepare, hook_parent, hook_child);
    fpp_log_set(log_sink, NULL, FPP_LOG_INFO);
    PyObject *mod = PyModule_Create(&module_def);
    if (!mod)
        return NULL;
    Py_INCREF(&ManagerType);
    Py_INCREF(&BufferType);
    if (PyModule_AddObject(mod, "Buffer", (PyObject *)&BufferType) < 0) {
        Py_DECREF(&BufferType);
        Py_DECREF(mod);
        return NULL;
    }
    if (PyModule_AddObject(mod, "Manager", (PyObject *)&ManagerType) < 0 ||
        PyModule_AddIntConstant(mod, "CODE_OK", CODE_OK) < 0 ||
        PyModule_AddIntConstant(mod, "CODE_EXC", CODE_EXC) < 0 ||
        PyModule_AddIntConstant(mod, "CODE_PARTIAL", CODE_PARTIAL) < 0 ||
        PyModule_AddIntConstant(mod, "CODE_FPP", CODE_FPP) < 0 ||
        PyModule_AddIntConstant(mod, "FAILED", FPP_FAILED) < 0 ||
        PyModule_AddIntConstant(mod, "CRASHED", FPP_CRASHED) < 0 ||
        PyModule_AddIntConstant(mod, "TIMEOUT", FPP_TIMEOUT) < 0 ||
        PyModule_AddIntConstant(mod, "CANCELLED", FPP_CANCELLED) < 0 ||
        PyModule_AddIntConstant(mod, "DONE", FPP_DONE) < 0 ||
        PyModule_AddIntConstant(mod, "SLICE_MS", SLICE_MS) < 0 ||
        PyModule_AddIntConstant(mod, "WAKE_SLICE_MS", WAKE_SLICE_MS) < 0 ||
        PyModule_AddIntConstant(mod, "PREFIX", PREFIX) < 0 ||
        PyModule_AddStringConstant(mod, "FPP_VERSION", FPP_VERSION_STRING) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
