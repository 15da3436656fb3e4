/* fppmodule.c: fpp._fpp, the C half of the Python package fpp.
 *
 * Owns: the two registered functions that run Python callables (in forked workers: payload
 * bytes made by fpp/_codec.py; in worker threads: a sequence number into fpp/_codec.py's
 * tables), the fork hooks that keep the interpreter consistent across fpp's forks, the log
 * sink, and the Manager type (one fpp executor and, while a run is going on, its task manager).
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
 * a call is in progress), except stats(), which any thread may call: it reads the task
 * manager's atomic counters, and the task manager pointer is only cleared and freed by a
 * thread holding the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <fpp.h>

/* How long one wait lasts before Python gets to run its signal handlers. Ctrl-C and an
 * alarm are seen within this, plus the time to stop. */
#define SLICE_MS 10
/* Finished tasks taken in one collect() call at most (one list, one trip through Python). */
#define COLLECT_MAX_DEFAULT 256

/* What collect() returns per task: (id, code, value). */
enum {
    CODE_OK = 0,      /* value: the result */
    CODE_EXC = 1,     /* value: the exception the callable raised */
    CODE_PARTIAL = 2, /* value: (results before the exception, the exception): a map chunk */
    CODE_FPP = 10,    /* + fpp_status: value (message, signal) */
};

enum { KIND_PROCESS = 0, KIND_THREAD = 1 };

/* Callbacks into fpp/_codec.py and fpp/errors.py, set once by fpp/__init__.py. */
static PyObject *cb_worker_run;     /* (memoryview) -> (tag, bytes) in a worker process */
static PyObject *cb_decode;         /* (memoryview) -> (code, value) for tags other than 'R' */
static PyObject *cb_thread_run;     /* (seq) -> None in a worker thread */
static PyObject *cb_thread_outcome; /* (seq, status) -> (code, value) in the parent */
static PyObject *cb_log;            /* (level, message) -> None */
static PyObject *cb_error;          /* (code, message) -> exception instance */
static PyObject *pickle_loads;

static int fn_process = -1, fn_thread = -1;

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
static struct { int level; char msg[LOGMSG]; } logq[LOGQ];
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
        snprintf(logq[i].msg, LOGMSG, "%s", msg);
    }
    pthread_mutex_unlock(&logq_mu);
    atomic_store(&logq_pending, 1);
}

/* Hands queued log lines to Python's logging. GIL held; keeps any exception already set. */
static void deliver_logs(void)
{
    if (!atomic_load_explicit(&logq_pending, memory_order_relaxed) || !cb_log)
        return;
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    for (;;) {
        int level;
        char msg[LOGMSG + 64];
        unsigned dropped = 0;
        pthread_mutex_lock(&logq_mu);
        if (logq_n == 0) {
            atomic_store(&logq_pending, 0);
            pthread_mutex_unlock(&logq_mu);
            break;
        }
        level = logq[logq_head].level;
        snprintf(msg, sizeof msg, "%s", logq[logq_head].msg);
        logq_head = (logq_head + 1) % LOGQ;
        logq_n--;
        if (logq_n == 0) {
            dropped = logq_dropped;
            logq_dropped = 0;
        }
        pthread_mutex_unlock(&logq_mu);
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

/* Sets a Python exception for an fpp error code. Returns NULL. */
static PyObject *raise_fpp(int code, const char *what)
{
    deliver_logs();
    if (cb_error) {
        PyObject *e = PyObject_CallFunction(cb_error, "is", code, what);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return NULL;
    }
    PyErr_Format(PyExc_RuntimeError, "%s: %s (%s)", what, fpp_strerror(code), fpp_err_name(code));
    return NULL;
}

/* ------------------------------------------------------- functions run by fpp */

/* A task in a worker process: hand the payload to fpp._codec.worker_run and put the
 * (tag, bytes) it returns into the result as tag byte + bytes. */
static int task_process(const void *arg, size_t len, fpp_out *out)
{
    if (!worker_ts || !cb_worker_run) {
        fpp_out_fail(out, "fpp: this process has no Python thread state to run the task with "
                          "(was fpp._fpp's fork hook replaced with fpp_set_fork_hooks?)");
        return 1;
    }
    PyEval_RestoreThread(worker_ts);
    worker_ts = NULL;
    int rc = 0;
    PyObject *mv = PyMemoryView_FromMemory((char *)(arg ? arg : ""), (Py_ssize_t)len, PyBUF_READ);
    PyObject *r = mv ? PyObject_CallFunctionObjArgs(cb_worker_run, mv, NULL) : NULL;
    if (mv) {
        /* Nothing may keep pointing into the argument arena after the task. */
        PyObject *rel = PyObject_CallMethod(mv, "release", NULL);
        if (!rel)
            PyErr_Clear();
        Py_XDECREF(rel);
        Py_DECREF(mv);
    }
    int tag;
    const char *data;
    Py_ssize_t n;
    if (r && PyArg_ParseTuple(r, "iy#", &tag, &data, &n) && tag >= 0 && tag < 256) {
        unsigned char *dst = fpp_out_alloc(out, (size_t)n + 1);
        if (dst) {
            dst[0] = (unsigned char)tag;
            memcpy(dst + 1, data, (size_t)n);
        } /* else: over max_result_size; fpp fails the task with both sizes */
    } else {
        /* worker_run itself failed (it catches everything a callable does): say what. */
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        PyObject *s = ev ? PyObject_Str(ev) : NULL;
        const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
        fpp_out_fail(out, "fpp: internal error in the worker: %s: %s",
                     et ? ((PyTypeObject *)et)->tp_name : "?", msg ? msg : "?");
        PyErr_Clear();
        Py_XDECREF(s);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(etb);
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
} Manager;

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
                            "keep_fds", NULL};
    const char *kind;
    int workers = 0, keep_fds = 1;
    Py_ssize_t qcap = 0, max_arg = 0, max_res = 0, rss = 0;
    unsigned int timeout_ms = 0, max_tasks = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|innnIInp", names, &kind, &workers, &qcap,
                                     &max_arg, &max_res, &timeout_ms, &max_tasks, &rss, &keep_fds))
        return -1;
    if (m->ex) {
        PyErr_SetString(PyExc_RuntimeError, "Manager already initialised");
        return -1;
    }
    if (strcmp(kind, "process") == 0)
        m->kind = KIND_PROCESS;
    else if (strcmp(kind, "thread") == 0)
        m->kind = KIND_THREAD;
    else {
        PyErr_Format(PyExc_ValueError, "kind must be 'process' or 'thread', not '%s'", kind);
        return -1;
    }
    if (qcap < 0 || max_arg < 0 || max_res < 0 || rss < 0) {
        PyErr_SetString(PyExc_ValueError, "sizes must be >= 0");
        return -1;
    }
    m->fn = m->kind == KIND_PROCESS ? fn_process : fn_thread;
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
    fpp_executor *ex = NULL;
    int rc;
    m->busy = 1;
    /* Released: the hooks take the GIL in whichever thread forks (see the top of the file). */
    Py_BEGIN_ALLOW_THREADS
    rc = m->kind == KIND_PROCESS ? fpp_process_executor(&ex, &o) : fpp_thread_executor(&ex, &o);
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (rc) {
        raise_fpp(rc, m->kind == KIND_PROCESS ? "creating the process pool" : "creating the thread pool");
        return -1;
    }
    m->ex = ex;
    m->pid = getpid();
    m->workers = fpp_executor_workers(ex);
    deliver_logs();
    return 0;
}

static void free_tm(Manager *m)
{
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
        m->tm = NULL;
        m->ex = NULL;
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

PyDoc_STRVAR(open_doc, "open(max_in_flight): start a run (create the task manager).");
static PyObject *Manager_open(Manager *m, PyObject *args)
{
    Py_ssize_t mif;
    if (!PyArg_ParseTuple(args, "n", &mif))
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
    fpp_tm_opts o;
    memset(&o, 0, sizeof o);
    /* Policies, the monitor and Ctrl-C are the Python layer's: a Python exception is a
     * successful C task whose result says so. */
    o.error_policy = FPP_IGNORE;
    o.monitor_interval_ms = -1;
    o.max_in_flight = (size_t)mif;
    o.flags = FPP_TM_NO_SIGINT;
    fpp_tm *tm = NULL;
    int rc;
    m->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = fpp_tm_create(&tm, m->ex, &o);
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (rc)
        return raise_fpp(rc, "starting a run");
    m->tm = tm;
    Py_RETURN_NONE;
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

PyDoc_STRVAR(submit_doc, "submit(payload) -> task id. payload: bytes (process pools) or a "
                         "sequence number (thread pools). Never waits if the caller keeps "
                         "fewer than max_in_flight tasks uncollected.");
static PyObject *Manager_submit(Manager *m, PyObject *arg)
{
    if (enter(m, 1))
        return NULL;
    Py_buffer view;
    unsigned long long seq = 0;
    const void *data;
    size_t len;
    int have_view = 0;
    if (m->kind == KIND_THREAD) {
        seq = PyLong_AsUnsignedLongLong(arg);
        if (seq == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        data = &seq;
        len = sizeof seq;
    } else {
        if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        have_view = 1;
        data = view.buf;
        len = (size_t)view.len;
    }
    int64_t id;
    m->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    id = fpp_submit(m->tm, m->fn, data, len);
    Py_END_ALLOW_THREADS
    m->busy = 0;
    if (have_view)
        PyBuffer_Release(&view);
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
    if (st == FPP_DONE && m->kind == KIND_PROCESS) {
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
             "collect(timeout=None, max_n=256) -> list of (id, code, value), or None when "
             "nothing is left. Waits up to timeout seconds (None: for ever) for the first "
             "finished task, in slices with Python's signal handlers run in between, then "
             "takes what else has finished, up to max_n. An empty list: the timeout passed.");
static PyObject *Manager_collect(Manager *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout", "max_n", NULL};
    PyObject *timeout = Py_None;
    Py_ssize_t max_n = COLLECT_MAX_DEFAULT;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|On", names, &timeout, &max_n))
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
        int slice = SLICE_MS;
        if (!first) {
            slice = 0; /* after the first: only what is ready now */
        } else if (limit >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double left = limit - ((double)ts.tv_sec + ts.tv_nsec / 1e9 - start);
            if (left < SLICE_MS / 1000.0)
                slice = left > 0 ? (int)(left * 1000) : 0;
        }
        fpp_task *t = NULL;
        int rc;
        m->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = fpp_as_completed_for(m->tm, &t, slice);
        Py_END_ALLOW_THREADS
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
            if (!first)
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

static PyObject *Manager_get_workers(Manager *m, void *c)
{
    (void)c;
    return PyLong_FromLong(m->workers);
}

static PyObject *Manager_get_kind(Manager *m, void *c)
{
    (void)c;
    return PyUnicode_FromString(m->kind == KIND_PROCESS ? "process" : "thread");
}

static PyObject *Manager_get_closed(Manager *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->ex == NULL);
}

static PyObject *Manager_get_running(Manager *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->tm != NULL);
}

static PyMethodDef Manager_methods[] = {
    {"open", (PyCFunction)Manager_open, METH_VARARGS, open_doc},
    {"reset", (PyCFunction)Manager_reset, METH_NOARGS, reset_doc},
    {"close", (PyCFunction)Manager_close, METH_NOARGS, close_doc},
    {"submit", (PyCFunction)Manager_submit, METH_O, submit_doc},
    {"collect", (PyCFunction)(void (*)(void))Manager_collect, METH_VARARGS | METH_KEYWORDS, collect_doc},
    {"stats", (PyCFunction)Manager_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Manager_getset[] = {
    {"workers", (getter)Manager_get_workers, NULL, "number of workers", NULL},
    {"kind", (getter)Manager_get_kind, NULL, "'process' or 'thread'", NULL},
    {"closed", (getter)Manager_get_closed, NULL, "True once close() ran", NULL},
    {"running", (getter)Manager_get_running, NULL, "True while a run is open", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ManagerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fpp._fpp.Manager",
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

/* ------------------------------------------------------------------ module */

PyDoc_STRVAR(set_callbacks_doc,
             "set_callbacks(worker_run, decode, thread_run, thread_outcome, log, error): the "
             "Python halves (fpp/__init__.py calls this once).");
static PyObject *set_callbacks(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *a[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]))
        return NULL;
    for (int i = 0; i < 6; i++)
        if (!PyCallable_Check(a[i])) {
            PyErr_Format(PyExc_TypeError, "callback %d is not callable", i);
            return NULL;
        }
    PyObject **slots[6] = {&cb_worker_run, &cb_decode, &cb_thread_run, &cb_thread_outcome, &cb_log, &cb_error};
    for (int i = 0; i < 6; i++) {
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fpp._fpp",
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

PyMODINIT_FUNC PyInit__fpp(void); /* the module's one exported symbol */
PyMODINIT_FUNC PyInit__fpp(void)
{
    if (PyType_Ready(&ManagerType) < 0)
        return NULL;
    if (pthread_key_create(&thread_ts_key, thread_ts_end) != 0) {
        PyErr_SetString(PyExc_ImportError, "fpp: pthread_key_create failed");
        return NULL;
    }
    if ((fn_process = register_fn("fpp.python.process", task_process)) < 0)
        return NULL;
    if ((fn_thread = register_fn("fpp.python.thread", task_thread)) < 0)
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
        PyModule_AddStringConstant(mod, "FPP_VERSION", FPP_VERSION_STRING) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
