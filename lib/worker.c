/* worker.c: the worker loop, the same for a forked worker process and a worker thread, and the
 * fpp_out calls a task's function uses to hand back its result.
 *
 * A worker owns its slot memory (block, task queue, result arena; slot.c) and writes nothing
 * else. It claims the next task of its own queue in one CAS (ring.c), runs the function,
 * writes the result (inline in the completion record, or in its arena), publishes the record
 * and rings the parent's bell, then claims the next. It never logs, never allocates on the hot
 * path, and never waits without a deadline. It trusts what the parent wrote before it started
 * (fpp__wctx) and checks every offset it reads from its queue before using it.
 *
 * After every task it checks that it is still itself: a task that forked (and returned in
 * both processes, or called daemon()) leaves a copy that must never touch the pool; the copy
 * sees another process token (owner.c) and leaves at once, before any access to the slot
 * memory (which it does not even have: the mappings are MADV_DONTFORK).
 *
 * Arena protocol: results are written at free-running position apos in a circular arena of A
 * bytes (A >= 3 * max_result_size); a result never wraps: it starts a new lap instead. The
 * parent publishes atail, the end of what it has released; the worker waits (need + its wake
 * event count, after ringing the parent's bell) while a result would overrun it. */
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

#include "fpp_internal.h"

/* Timing of the waits (in one place, named). */
#define CLAIM_SPIN_NS 20000          /* spin on an empty queue before yielding */
#define CLAIM_SPIN_ROUNDS 256
#define CLAIM_YIELD_ROUNDS 64
#define ROOM_SPIN_ROUNDS 64
#define ROOM_YIELD_ROUNDS 64
#define SLEEP_MAX_NS 1000000000      /* longest sleep: a lost post costs at most this */
#define RSS_CHECK_NS 10000000        /* the memory cap is checked at most this often... */
#define RSS_CHECK_TASKS 1024         /* ...or after this many tasks */

struct fpp_out {
    fpp__wctx *w;
    fpp__wblock *b;
    unsigned char *arena;
    size_t asize;
    uint64_t apos;   /* where the next result starts (before lap alignment) */
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

/* Waits, for at most one sleep, until ready(o, arg) holds: spin, yield, then ring the parent
 * (it may be asleep with the room we need) and sleep on our wake count. `arg` is what ready is
 * asked about (the arena end wanted, or the ring tail): the check after arming must be the
 * caller's own condition, or a wake is lost. arena: arg is the arena position we must reach,
 * published as `need` so the parent can move held results out of the way. */
static void wait_room(fpp_out *o, int round, uint64_t arg, bool arena, bool (*ready)(fpp_out *o, uint64_t arg))
{
    if (round < ROOM_SPIN_ROUNDS) {
        fpp__cpu_relax();
        return;
    }
    if (round < ROOM_SPIN_ROUNDS + ROOM_YIELD_ROUNDS) {
        sched_yield();
        return;
    }
    if (arena)
        atomic_store_explicit(&o->b->need, arg, memory_order_relaxed);
    fpp__ec_post(&o->b->bell);
    uint32_t v = fpp__ec_arm(&o->b->wake);
    if (!ready(o, arg) && !stopping(o->w))
        fpp__ec_wait(&o->b->wake, v, fpp__now_ns() + SLEEP_MAX_NS);
    atomic_store_explicit(&o->b->need, 0, memory_order_relaxed);
}

static bool arena_room(fpp_out *o, uint64_t end)
{
    return end - atomic_load_explicit(&o->b->atail, memory_order_acquire) <= o->asize;
}

/* Space for len result bytes in the arena, waiting for the parent to release older results. */
static unsigned char *reserve(fpp_out *o, size_t len)
{
    uint64_t A = o->asize;
    uint64_t pos = FPP__ALIGN_UP(o->apos, FPP__ARENA_ALIGN);
    if ((pos % A) + len > A)
        pos += A - (pos % A);
    for (int round = 0; !arena_room(o, pos + len); round++) {
        if (stopping(o->w))
            return NULL;
        wait_room(o, round, pos + len, true, arena_room);
    }
    o->off = pos;
    return o->arena + (pos % A);
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
    if (!o || !o->w || not_me(o->w))
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
    if (!o || !o->w || (!data && len))
        return FPP_EINVAL;
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
    if (!o || !o->w || !fmt)
        return FPP_EINVAL;
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

static bool ring_room(fpp_out *o, uint64_t ctail)
{
    return ctail - atomic_load_explicit(&o->b->chead, memory_order_acquire) < FPP__CRING;
}

/* Publishes one completion record, waiting while the parent has not consumed the ring, and
 * rings the parent's bell (a system call only when the parent sleeps). */
static void publish(fpp_out *o, uint64_t *ctail, const fpp__crec *r)
{
    fpp__wblock *b = o->b;
    for (int round = 0; !ring_room(o, *ctail); round++) {
        if (stopping(o->w))
            return;
        wait_room(o, round, *ctail, false, ring_room);
    }
    b->ring[*ctail & (FPP__CRING - 1)] = *r;
    (*ctail)++;
    /* R3: release; pairs with A3 in the parent's harvest, publishes the record and the arena
     * bytes it points to. */
    atomic_store_explicit(&b->ctail, *ctail, memory_order_release);
    fpp__ec_post(&b->bell);
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

/* True once the worker has grown past its cap. Costs a pread at most every RSS_CHECK_NS or
 * RSS_CHECK_TASKS tasks (force: always, on the way to sleep). */
static bool over_cap(rss_watch *r, bool force)
{
    if (r->fd < 0)
        return false;
    if (!force && ++r->since < RSS_CHECK_TASKS) {
        int64_t now = coarse_now_ns();
        if (now - r->last_ns < RSS_CHECK_NS)
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
#if defined(__SANITIZE_ADDRESS__)
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

/* Crash injection for the tests: FPP_TEST_CRASH=PHASE:N[:SIG] in the environment makes a
 * worker process raise SIG (default SIGKILL) at that phase of every Nth task (1: about to look
 * for a task, none held; 2: task claimed, function not yet called; 3: result written, record
 * not yet published; 4: record published). Read once per worker; when unset it costs one
 * predictable branch per phase. */
static int crash_phase, crash_sig = SIGKILL;
static unsigned crash_every, crash_count;

static void crash_point_init(void)
{
    const char *s = getenv("FPP_TEST_CRASH");
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

/* -------------------------------------------------------------- the loop */

/* Claims the next task of our queue: spin briefly, then yield, then sleep until the parent
 * posts (or SLEEP_MAX_NS). Returns 0 when told to stop. */
static int next_task(fpp__wctx *w, fpp__wblock *b, fpp__cell *cells, uint64_t *head, fpp__cell *d,
                     rss_watch *rss, bool *retire)
{
    uint32_t n = w->lay.qcells;
    int64_t spin_until = 0;
    for (int round = 0;; round++) {
        if (stopping(w))
            return 0;
        if (!w->process) {
            /* Raised before the claim, and `abandoned` looked at after it (both seq_cst, as
             * in the parent's end_thread): the parent either sees us claiming and waits for
             * the copy below, or we see it gave up on us and claim nothing. */
            atomic_store(&w->claiming, 1);
            if (atomic_load(&w->abandoned) || atomic_load(&w->stop)) {
                atomic_store_explicit(&w->claiming, 0, memory_order_release);
                return 0;
            }
        }
        if (fpp__ring_claim(cells, n, head, d, &b->running))
            return 1;
        if (!w->process)
            atomic_store_explicit(&w->claiming, 0, memory_order_release);
        if (round < CLAIM_SPIN_ROUNDS) {
            if (round == 0)
                spin_until = fpp__now_ns() + CLAIM_SPIN_NS;
            for (int i = 0; i < 16; i++)
                fpp__cpu_relax();
            if ((round & 15) == 15 && fpp__now_ns() > spin_until)
                round = CLAIM_SPIN_ROUNDS - 1;
            continue;
        }
        if (round < CLAIM_SPIN_ROUNDS + CLAIM_YIELD_ROUNDS) {
            sched_yield();
            continue;
        }
        /* Going to sleep: a moment to check the memory cap (so a worker that crossed it and
         * then went idle is replaced within a sleep, not never). */
        if (rss && over_cap(rss, true)) {
            *retire = true;
            return 0;
        }
        uint32_t v = fpp__ec_arm(&b->wake);
        if (!fpp__ring_pending(cells, n, *head) && !stopping(w))
            fpp__ec_wait(&b->wake, v, fpp__now_ns() + SLEEP_MAX_NS);
        round = 0;
    }
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

int fpp__worker_main(fpp__wctx *w)
{
    const fpp__layout *l = &w->lay;
    fpp__wblock *b = fpp__slot_block(w->slot);
    fpp__cell *cells = fpp__slot_cells(w->slot, l);
    fpp_out o = {
        .w = w,
        .b = b,
        .arena = fpp__slot_arena(w->slot, l),
        .asize = l->arena_size,
        .apos = 0,
    };
    uint64_t ctail = 0, head = l->qcells;
    uint64_t done = 0;
    unsigned char *argcopy = NULL; /* worker threads: the current task's argument, copied */
    size_t argcap = 0;
    rss_watch rss = {.fd = -1};
    if (w->process) {
        crash_point_init();
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
    bool retire = false;

    for (;;) {
        fpp__cell d;
        crash_point(1);
        if (!next_task(w, b, cells, &head, &d, rss.fd >= 0 ? &rss : NULL, &retire))
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
                 * (thread_executor.c, end_thread). */
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
            o.apos = o.off + r.len;
        crash_point(3);
        publish(&o, &ctail, &r);
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
    return 0;
}

int fpp__worker_init(int fn, const void *arg, size_t len, fpp__wctx *w, char *msg, size_t cap)
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
