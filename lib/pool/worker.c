/* pool/worker.c: the worker loop, the same for a forked worker process and a worker thread, and
 * the fpp_out calls a task's function uses to hand back its result.
 *
 * A worker owns its slot memory (block, task queue, result arena; pool/slot.c) and writes
 * nothing else. It claims the next task of its own queue in one CAS (pool/task_queue.c), runs
 * the function, writes the result (inline in the completion record, or in its result arena:
 * pool/result_arena.c), publishes the record and rings the parent's bell
 * (pool/completion_ring.c), then claims the next. It never logs, never allocates on the hot
 * path, and never waits without a deadline. It trusts what the parent wrote before it started
 * (fpp__wctx) and checks every offset it reads from its queue before using it.
 *
 * After every task it checks that it is still itself: a task that forked (and returned in
 * both processes, or called daemon()) leaves a copy that must never touch the pool; the copy
 * sees another process token (owner.c) and leaves at once, before any access to the slot
 * memory (which it does not even have: the mappings are MADV_DONTFORK).
 *
 * Every wait is fpp__ec_await's (core/ec.h) with a policy from core/timing.h: looking for the
 * next task spins, yields, then sleeps on its wake count at most FPP__WORKER_SLEEP_MAX_NS at a
 * time (checking its memory cap on the way to sleep). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/testing.h"
#include "core/timing.h"
#include "pool/pool_int.h"

struct fpp_out {
    fpp__wctx *w;
    fpp__wblock *b;
    fpp__rarena_writer arena;
    bool init;       /* the initializer's out: results go to scratch memory and are dropped */
    void *scratch;
    /* The current task's result. */
    bool set, failed, toobig;
    size_t len;
    uint64_t off;    /* arena position when len > FPP__INLINE_RES */
    unsigned char inl[FPP__INLINE_RES];
    size_t msglen;
    char msg[FPP__ERR_MAX];
};

static bool stopping(fpp__wctx *w)
{
    return atomic_load_explicit(&w->stop, memory_order_acquire) ||
           atomic_load_explicit(&w->abandoned, memory_order_acquire);
}

/* A forked copy of this worker (a task's fork()) must not touch the pool. */
static bool not_me(const fpp__wctx *w)
{
    return w->process && w->token != fpp__proc_token();
}

static bool stop_cb(void *arg) { return stopping(arg); }

/* Space for len result bytes in the arena, waiting for the parent to release older results. */
static unsigned char *reserve(fpp_out *o, size_t len)
{
    return fpp__rarena_reserve(&o->arena, len, &o->off, stop_cb, o->w);
}

static bool too_big(fpp_out *o, size_t len)
{
    if (len <= o->w->lay.max_result)
        return false;
    o->toobig = true;
    o->failed = true;
    o->set = false;
    int n = snprintf(o->msg, sizeof o->msg, "result of %zu bytes exceeds max_result_size (%zu bytes)",
                     len, o->w->lay.max_result);
    o->msglen = n < 0 ? 0 : FPP__MIN((size_t)n, sizeof o->msg - 1);
    return true;
}

void *fpp_out_alloc(fpp_out *o, size_t len)
{
    if (!o || !o->w) {
        fpp__log(FPP_LOG_ERROR, "fpp_out_alloc: NULL out");
        return NULL;
    }
    if (not_me(o->w))
        return NULL;
    if (o->toobig || too_big(o, len))
        return NULL;
    o->set = true;
    o->len = len;
    if (len <= FPP__INLINE_RES)
        return o->inl;
    if (o->init) { /* the initializer's result is ignored */
        fpp__free(o->scratch);
        o->scratch = fpp__malloc(len);
        return o->scratch;
    }
    return reserve(o, len);
}

int fpp_out_set(fpp_out *o, const void *data, size_t len)
{
    if (!o || !o->w || (!data && len)) {
        fpp__log(FPP_LOG_ERROR, "fpp_out_set: %s", !o || !o->w ? "NULL out" : "NULL data with a length");
        return FPP_EINVAL;
    }
    if (not_me(o->w))
        return FPP_ESTATE;
    unsigned char *dst = fpp_out_alloc(o, len);
    if (!dst)
        return len ? (o->toobig ? FPP_ETOOBIG : FPP_ENOMEM) : 0;
    if (len)
        memcpy(dst, data, len);
    return 0;
}

int fpp_out_fail(fpp_out *o, const char *fmt, ...)
{
    if (!o || !o->w || !fmt) {
        fpp__log(FPP_LOG_ERROR, "fpp_out_fail: NULL %s", !o || !o->w ? "out" : "format");
        return FPP_EINVAL;
    }
    if (o->toobig)
        return 0; /* the size error stays the task's error */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->msg, sizeof o->msg, fmt, ap);
    va_end(ap);
    o->msglen = n < 0 ? 0 : FPP__MIN((size_t)n, sizeof o->msg - 1);
    o->failed = true;
    return 0;
}

/* --------------------------------------------------------------- memory cap */

typedef struct rss_watch {
    int fd;                 /* /proc/self/statm, opened once */
    uint64_t start_kib;     /* anonymous resident memory when the worker started */
    size_t cap_kib;
    unsigned since;         /* tasks since the last check */
    int64_t last_ns;
} rss_watch;

/* Anonymous resident memory (statm's resident minus its shared: file and shmem pages, such as
 * the worker's own arena, are not the task's growth). One pread. */
static uint64_t anon_kib(int fd, uint64_t *total_kib)
{
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long size, resident, shared;
    if (sscanf(buf, "%lu %lu %lu", &size, &resident, &shared) != 3)
        return 0;
    unsigned long kpp = (unsigned long)sysconf(_SC_PAGESIZE) / 1024;
    if (total_kib)
        *total_kib = (uint64_t)resident * kpp;
    return (uint64_t)(resident > shared ? resident - shared : 0) * kpp;
}

static int64_t coarse_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* True once the worker has grown past its cap. Costs a pread at most every FPP__RSS_CHECK_NS or
 * FPP__RSS_CHECK_TASKS tasks (force: always, on the way to sleep). */
static bool over_cap(rss_watch *r, bool force)
{
    if (r->fd < 0)
        return false;
    if (!force && ++r->since < FPP__RSS_CHECK_TASKS) {
        int64_t now = coarse_now_ns();
        if (now - r->last_ns < FPP__RSS_CHECK_NS)
            return false;
        r->last_ns = now;
    }
    r->since = 0;
    uint64_t a = anon_kib(r->fd, NULL);
    return a > r->start_kib && a - r->start_kib > r->cap_kib;
}

/* With a memory cap, the worker's address space may grow by at most twice the cap past what it
 * has when it starts (RLIMIT_AS): a task that allocates without bound gets NULL from malloc
 * (or dies on it) instead of taking the machine's memory. Twice, not once: the cap is on
 * resident growth, checked after each task, so the task that crosses it must be able to
 * finish and keep its result (SPEC: "replaced after the task that crossed it"); with the
 * limit at the cap itself no allocating task could ever cross it, and address space that is
 * reserved but never resident (a thread's stack, a malloc arena) would count in full. */
static void cap_address_space(size_t cap_kib)
{
#ifdef FPP__ASAN
    /* AddressSanitizer reserves terabytes of address space for its shadow: an address-space
     * limit would only break it. The resident-memory check still applies. */
    (void)cap_kib;
    return;
#else
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unsigned long size = 0;
    if (n <= 0)
        return;
    buf[n] = 0;
    if (sscanf(buf, "%lu", &size) != 1)
        return;
    rlim_t lim = (rlim_t)size * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)cap_kib * 2 * 1024;
    struct rlimit rl = {lim, lim};
    setrlimit(RLIMIT_AS, &rl);
#endif
}

/* ------------------------------------------------------------ fault injection */

/* The test build's FPP_TEST_CRASH=PHASE:N[:SIG] (core/testing.h): a worker process raises SIG
 * at that phase of every Nth task. Read once per worker; in the shipped library crash_point is
 * empty. */
#if FPP__TESTING
static int crash_phase, crash_sig = SIGKILL;
static unsigned crash_every, crash_count;

static void crash_point_init(void)
{
    const char *s = FPP__TEST_ENV("FPP_TEST_CRASH");
    unsigned ph = 0, n = 0;
    int sig = SIGKILL;
    if (s && sscanf(s, "%u:%u:%d", &ph, &n, &sig) >= 2 && n > 0) {
        crash_phase = (int)ph;
        crash_every = n;
        crash_sig = sig;
    }
}

static inline void crash_point(int phase)
{
    if (__builtin_expect(crash_phase == phase, 0) && ++crash_count % crash_every == 0)
        raise(crash_sig);
}
/* FPP_TEST_WORKER_SLEEP_MS=N: a worker process's sleep for its next task lasts up to N ms
 * instead of FPP__WORKER_SLEEP_MAX_NS, so that a lost wake-up shows as a hang, not a 1 s
 * stall. */
static int64_t sleep_max_ns = FPP__WORKER_SLEEP_MAX_NS;
#define SLEEP_MAX_NS sleep_max_ns

static void sleep_max_init(void)
{
    const char *s = FPP__TEST_ENV("FPP_TEST_WORKER_SLEEP_MS");
    long ms = s ? atol(s) : 0;
    if (ms > 0)
        sleep_max_ns = (int64_t)ms * 1000000;
}
#else
static inline void crash_point_init(void) {}
static inline void crash_point(int phase) { FPP__UNUSED(phase); }
#define SLEEP_MAX_NS FPP__WORKER_SLEEP_MAX_NS
static inline void sleep_max_init(void) {}
#endif

/* -------------------------------------------------------------- the loop */

typedef struct claim_wait {
    fpp__wctx *w;
    fpp__wblock *b;
    fpp__cell *cells;
    uint64_t *head;
    fpp__cell *d;
    rss_watch *rss;
    int got;            /* 1 claimed, 0 told to stop, -1 nothing yet */
    bool retire;
} claim_wait;

/* One look for the next task of our queue (claiming it if there is one). Before a sleep, a
 * moment to check the memory cap, so that a worker that crossed it and then went idle is
 * replaced within a sleep, not never. */
static bool claim_ready(void *arg, bool armed)
{
    claim_wait *c = arg;
    fpp__wctx *w = c->w;
    if (stopping(w)) {
        c->got = 0;
        return true;
    }
    if (armed && c->rss && over_cap(c->rss, true)) {
        c->retire = true;
        c->got = 0;
        return true;
    }
    if (!w->process) {
        /* Raised before the claim, and `abandoned` looked at after it (both seq_cst, as in
         * the thread executor's end_thread): the parent either sees us claiming and waits for
         * the copy of the argument, or we see it gave up on us and claim nothing. */
        atomic_store(&w->claiming, 1);
        if (atomic_load(&w->abandoned) || atomic_load(&w->stop)) {
            atomic_store_explicit(&w->claiming, 0, memory_order_release);
            c->got = 0;
            return true;
        }
    }
    if (fpp__queue_claim(c->cells, w->lay.qcells, c->head, c->d, &c->b->running)) {
        c->got = 1;
        return true;
    }
    if (!w->process)
        atomic_store_explicit(&w->claiming, 0, memory_order_release);
    return false;
}

/* Claims the next task of our queue: spin briefly, then yield, then sleep until the parent
 * posts (or FPP__WORKER_SLEEP_MAX_NS), and again. Returns 0 when told to stop or to retire.
 * yield_first: our last result woke the parent from its sleep, or our last task woke us from
 * ours (the parent hands out lone tasks, and waits for this one yielding, pool.c). Either way
 * the parent is most likely runnable behind us on this very core (the scheduler wakes a
 * sleeper where its waker runs): with no next task to run, our spin would make it wait the
 * spin out. A lone task paid that 20 us on top of its two wake-ups (29 us against 4 us for a
 * semaphore round trip, fpp-bench's noop row). So, when the queue is empty, the core goes to
 * the parent first: one system call, never in a stream (where neither side sleeps) nor when
 * the next task is queued (yielding after every result that woke the parent cost 20 us
 * tasks 15% of their rate). *slept: set when this call slept. */
static int next_task(fpp__wctx *w, fpp__wblock *b, fpp__cell *cells, uint64_t *head, fpp__cell *d,
                     rss_watch *rss, bool *retire, bool yield_first, bool *slept)
{
    const fpp__wait_policy claim = {
        .spin_ns = FPP__CLAIM_SPIN_NS, .relax = FPP__CLAIM_RELAX, .yield_ns = SLEEP_MAX_NS,
        .yield_max = FPP__CLAIM_YIELDS, .sleep_ns = SLEEP_MAX_NS,
    };
    claim_wait c = {.w = w, .b = b, .cells = cells, .head = head, .d = d, .rss = rss, .got = -1};
    fpp__ec *wake = &b->wake;
    fpp__waiter wt = {.ready = claim_ready, .arg = &c, .words = &wake, .nwords = 1};
    if (yield_first && !claim_ready(&c, false))
        sched_yield();
    *slept = false;
    while (c.got < 0)
        if (fpp__ec_await(&wt, &claim, INT64_MAX) == FPP__AWAIT_SLEPT)
            *slept = true;
    *retire = c.retire;
    return c.got;
}

static void flush_stdio(void)
{
    /* A task's printf must reach a pipe or a file as it does a terminal: flush what it left
     * buffered (a load each when there is nothing to flush). */
    if (__fpending(stdout))
        fflush(stdout);
    if (__fpending(stderr))
        fflush(stderr);
}

/* Runs the worker loop until told to stop, retired or abandoned. */
static void worker_loop(fpp__wctx *w)
{
    const fpp__layout *l = &w->lay;
    fpp__wblock *b = fpp__slot_block(w->slot);
    fpp__cell *cells = fpp__slot_cells(w->slot, l);
    fpp_out o = {
        .w = w,
        .b = b,
        .arena = {.b = b, .arena = fpp__slot_arena(w->slot, l), .size = l->arena_size, .apos = 0},
    };
    uint64_t ctail = 0, head = l->qcells;
    uint64_t done = 0;
    unsigned char *argcopy = NULL; /* worker threads: the current task's argument, copied */
    size_t argcap = 0;
    rss_watch rss = {.fd = -1};
    if (w->process) {
        crash_point_init();
        sleep_max_init();
        if (w->max_rss_kib) {
            rss.fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
            uint64_t total = 0;
            rss.start_kib = rss.fd >= 0 ? anon_kib(rss.fd, &total) : 0;
            rss.cap_kib = w->max_rss_kib;
            rss.last_ns = coarse_now_ns();
            atomic_store_explicit(&b->rss_start_kib, total, memory_order_relaxed);
            cap_address_space(w->max_rss_kib);
        }
    }
    bool retire = false, woke = false, slept = false;

    for (;;) {
        fpp__cell d;
        crash_point(1);
        if (!next_task(w, b, cells, &head, &d, rss.fd >= 0 ? &rss : NULL, &retire, woke || slept, &slept))
            break;
        crash_point(2);

        o.set = o.failed = o.toobig = false;
        o.len = 0;
        o.msglen = 0;
        const void *arg = d.arg;
        fpp_fn fn = fpp__registry_fn((int)d.fn);
        if (d.arg_len > FPP__INLINE_ARG) {
            if (d.arg_len > l->max_arg || d.arg_off > l->args_size || d.arg_len > l->args_size - d.arg_off)
                fpp_out_fail(&o, "task descriptor corrupted (argument of %u bytes at %llu)", d.arg_len,
                             (unsigned long long)d.arg_off);
            arg = w->args + d.arg_off;
            if (!w->process && !o.failed) {
                /* A worker thread may be abandoned while its function runs (timeout, cancel,
                 * executor freed): the parent then frees the argument's block, hands it to
                 * the next tasks, and at last unmaps the arena. So a thread's function runs on
                 * a copy the thread owns (a buffer kept for the thread's life). The parent
                 * abandons a thread only once `claiming` says the copy is made
                 * (exec/thread_executor.c, end_thread). */
                if (argcap < d.arg_len) {
                    unsigned char *nb = fpp__realloc(argcopy, d.arg_len);
                    if (nb) {
                        argcopy = nb;
                        argcap = d.arg_len;
                    }
                }
                if (argcap >= d.arg_len) {
                    memcpy(argcopy, arg, d.arg_len);
                    arg = argcopy;
                } else {
                    fpp_out_fail(&o, "out of memory for a copy of the argument (%u bytes)", d.arg_len);
                }
            }
        }
        if (!w->process) /* the argument is ours now (release: the copy's reads come first) */
            atomic_store_explicit(&w->claiming, 0, memory_order_release);
        if (!fn)
            fpp_out_fail(&o, "no function with id %u", d.fn);
        if (!o.failed) {
            int rc = fn(d.arg_len ? arg : NULL, d.arg_len, &o);
            if (rc != 0 && !o.failed)
                fpp_out_fail(&o, "function returned %d", rc);
        }
        if (not_me(w))
            _exit(0); /* a copy made by a fork in the task: leave the pool to its worker */
        if (stopping(w))
            break; /* abandoned (thread executor): the parent has given up on this task */
        if (w->process)
            flush_stdio();

        fpp__crec r = {.ticket = d.ticket};
        if (o.failed) {
            r.status = FPP__R_FAILED;
            r.len = (uint32_t)o.msglen;
            if (o.msglen <= FPP__INLINE_RES) {
                memcpy(r.data, o.msg, o.msglen);
            } else {
                unsigned char *dst = reserve(&o, o.msglen);
                if (dst)
                    memcpy(dst, o.msg, o.msglen);
                r.off = o.off;
            }
        } else {
            r.status = FPP__R_DONE;
            r.len = (uint32_t)(o.set ? o.len : 0);
            if (r.len <= FPP__INLINE_RES)
                memcpy(r.data, o.inl, r.len);
            else
                r.off = o.off;
        }
        if (r.len > FPP__INLINE_RES)
            fpp__rarena_wrote(&o.arena, o.off, r.len);
        crash_point(3);
        woke = fpp__completion_publish(b, &ctail, &r, stop_cb, w);
        crash_point(4);
        atomic_store_explicit(&b->tasks, ++done, memory_order_relaxed);

        if ((w->max_tasks && done >= w->max_tasks) || (rss.fd >= 0 && over_cap(&rss, false))) {
            retire = true;
            break;
        }
    }
    if (rss.fd >= 0)
        close(rss.fd);
    fpp__free(argcopy);
    if (retire) {
        atomic_store_explicit(&b->wstate, FPP__WS_RETIRED, memory_order_release);
        fpp__ec_post(&b->bell);
    }
    if (w->process)
        flush_stdio();
}

/* Runs an initializer (registered function fn on the given bytes) in a starting worker w: 0,
 * or -1 with its message in msg. */
static int worker_init(int fn, const void *arg, size_t len, fpp__wctx *w, char *msg, size_t cap)
{
    fpp_fn f = fpp__registry_fn(fn);
    if (!f) {
        snprintf(msg, cap, "no function with id %d", fn);
        return -1;
    }
    fpp_out o = {.w = w, .init = true};
    int rc = f(len ? arg : NULL, len, &o);
    fpp__free(o.scratch);
    if (rc != 0 || o.failed) {
        if (o.failed)
            snprintf(msg, cap, "%s", o.msg);
        else
            snprintf(msg, cap, "function returned %d", rc);
        return -1;
    }
    return 0;
}

int fpp__worker_run(fpp__wctx *w, int init_fn, const void *init_arg, size_t init_len)
{
    fpp__wblock *b = fpp__slot_block(w->slot);
    if (init_fn >= 0) {
        char msg[FPP__ERR_MAX];
        if (worker_init(init_fn, init_arg, init_len, w, msg, sizeof msg) != 0) {
            memcpy(b->msg, msg, sizeof msg);
            atomic_store(&b->wstate, FPP__WS_INIT_FAILED);
            fpp__ec_post(&b->bell);
            if (w->process)
                flush_stdio();
            return FPP__EXIT_INIT;
        }
    }
    atomic_store(&b->wstate, FPP__WS_READY);
    fpp__ec_post(&b->bell);
    worker_loop(w);
    return 0;
}

void fpp__worker_stop(fpp__wctx *w)
{
    atomic_store(&w->stop, 1);
    fpp__ec_post(&fpp__slot_block(w->slot)->wake);
}

void fpp__worker_abandon(fpp__wctx *w)
{
    /* Told first, the thread starts no new claim (claim_ready looks after raising `claiming`;
     * both seq_cst). */
    atomic_store(&w->abandoned, 1);
    fpp__ec_post(&fpp__slot_block(w->slot)->wake);
}

bool fpp__worker_claiming(fpp__wctx *w) { return atomic_load(&w->claiming) != 0; }

void fpp__worker_ring(fpp__wctx *w) { fpp__ec_post(&fpp__slot_block(w->slot)->bell); }

void fpp__wctx_thread(fpp__wctx *w, const fpp__pool *p, fpp__slotmem *mem, uint32_t slot, unsigned max_tasks)
{
    *w = (fpp__wctx){
        .slot = mem->r.base,
        .args = p->args.base,
        .lay = p->lay,
        .slot_id = slot,
        .process = false,
        .max_tasks = max_tasks,
        .max_rss_kib = 0, /* one address space: a per-thread cap means nothing */
        .token = fpp__proc_token(),
    };
}
