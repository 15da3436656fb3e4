/* worker.c: the worker loop, the same for a forked worker process and a worker thread, and the
 * fpp_out calls a task's function uses to hand back its result.
 *
 * A worker owns its block (fpp__wblock) and its result arena in the pool; it claims tasks
 * from the shared ring, marks itself RUNNING with the task's ticket *before* releasing the
 * ring cell (the order the parent's recovery relies on, see ring.c), runs the function,
 * writes the result (inline in the completion record, or in its arena), publishes the
 * record, and only then goes back to IDLE. It never logs, never allocates on the hot path,
 * and never waits without a timeout. It trusts what the parent wrote before it started
 * (fpp__wctx) and checks every offset it reads from the ring before using it.
 *
 * Arena protocol: results are written at free-running position apos in a circular arena of A
 * bytes (A >= 2 * max_result_size, so any allowed result fits once the parent has caught up);
 * a result never wraps: it starts a new lap instead. The parent copies each result out when
 * it harvests the record and publishes atail, the end of what it has taken. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fpp_internal.h"

struct fpp_out {
    fpp__wctx *w;
    fpp__wblock *b;
    unsigned char *arena;
    size_t asize;
    uint64_t apos;   /* where the next result starts (before lap alignment) */
    /* The current task's result. */
    bool set, failed, toobig;
    size_t len;
    uint64_t off;    /* arena position when len > FPP__INLINE_RES */
    unsigned char inl[FPP__INLINE_RES];
    size_t msglen;
    char msg[FPP__ERR_MAX];
};

/* Tells a sleeping parent that something was published. */
static void notify_parent(fpp__hdr *h)
{
    /* Dekker pair with the parent's store of parent_sleeping then check of our ctail: one of
     * the two sides sees the other's write. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&h->parent_sleeping, memory_order_relaxed)) {
        uint32_t one = 1;
        if (atomic_compare_exchange_strong(&h->parent_sleeping, &one, 0))
            fpp__event_post(&h->parent_wake);
    }
}

/* One round of waiting for the parent: spin, then yield, then sleep on our semaphore with a
 * short timeout (so a lost post or a scribbled semaphore costs time, never a hang). */
static void wait_parent(fpp_out *o, int round, uint64_t need)
{
    if (round < 64) {
        fpp__cpu_relax();
        return;
    }
    if (round < 128) {
        sched_yield();
        return;
    }
    uint32_t seen = atomic_load(&o->b->wake);
    atomic_store_explicit(&o->b->need, need, memory_order_relaxed);
    notify_parent(fpp__hdr_of(o->w->base));
    fpp__event_wait(&o->b->wake, seen, fpp__now_ns() + 2000000);
    atomic_store_explicit(&o->b->need, 0, memory_order_relaxed);
}

/* Space for len result bytes in the arena, waiting for the parent to take older results. */
static unsigned char *reserve(fpp_out *o, size_t len)
{
    uint64_t A = o->asize;
    uint64_t pos = o->apos;
    if ((pos % A) + len > A)
        pos += A - (pos % A);
    for (int round = 0;; round++) {
        uint64_t tail = atomic_load_explicit(&o->b->atail, memory_order_acquire);
        if (pos + len - tail <= A)
            break;
        if (o->w->stop && atomic_load(o->w->stop))
            return NULL;
        wait_parent(o, round, len);
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
    if (!o || !o->w)
        return NULL;
    if (o->toobig || too_big(o, len))
        return NULL;
    o->set = true;
    o->len = len;
    if (len <= FPP__INLINE_RES)
        return o->inl;
    return reserve(o, len);
}

int fpp_out_set(fpp_out *o, const void *data, size_t len)
{
    if (!o || !o->w || (!data && len))
        return FPP_EINVAL;
    unsigned char *dst = fpp_out_alloc(o, len);
    if (!dst)
        return len ? FPP_ETOOBIG : 0;
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

/* Publishes one completion record, waiting while the parent has not consumed the ring. */
static void publish(fpp_out *o, uint64_t *ctail, const fpp__crec *r)
{
    fpp__wblock *b = o->b;
    for (int round = 0;; round++) {
        uint64_t head = atomic_load_explicit(&b->chead, memory_order_acquire);
        if (*ctail - head < FPP__CRING)
            break;
        if (o->w->stop && atomic_load(o->w->stop))
            return;
        wait_parent(o, round, 1);
    }
    b->ring[*ctail & (FPP__CRING - 1)] = *r;
    (*ctail)++;
    /* R3: release; pairs with A3 in the parent's harvest, publishes the record and the arena
     * bytes it points to. */
    atomic_store_explicit(&b->ctail, *ctail, memory_order_release);
    notify_parent(fpp__hdr_of(o->w->base));
}

static bool over_rss(size_t cap_kib)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    unsigned long size, resident;
    if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
        return false;
    return resident * (unsigned long)(sysconf(_SC_PAGESIZE) / 1024) > cap_kib;
}

/* Crash injection for the tests: FPP_TEST_CRASH=PHASE:N in the environment makes a worker
 * SIGKILL itself at that phase of every Nth task (1: just claimed; 2: marked RUNNING, cell
 * not yet released; 3: cell released, function not yet called; 4: result written, record
 * not yet published; 5: record published, not yet IDLE). Read once per worker; when unset
 * it costs one predictable branch per phase. */
static int crash_phase;
static unsigned crash_every, crash_count;

static void crash_point_init(void)
{
    const char *s = getenv("FPP_TEST_CRASH");
    unsigned ph = 0, n = 0;
    if (s && sscanf(s, "%u:%u", &ph, &n) == 2 && n > 0) {
        crash_phase = (int)ph;
        crash_every = n;
    }
}

static inline void crash_point(int phase)
{
    if (__builtin_expect(crash_phase == phase, 0) && ++crash_count % crash_every == 0)
        raise(SIGKILL);
}

/* With a memory cap, a worker's address space may grow by at most the cap past what it has
 * when it starts (RLIMIT_AS): a task that allocates past it gets NULL from malloc, or dies
 * trying, instead of taking the machine's memory. */
static void cap_address_space(size_t cap_kib)
{
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer reserves terabytes of address space for its shadow: an address-space
     * limit would only break it. The RSS check after each task still applies. */
    (void)cap_kib;
    return;
#endif
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
    rlim_t lim = (rlim_t)size * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)cap_kib * 1024;
    struct rlimit rl = {lim, lim};
    setrlimit(RLIMIT_AS, &rl);
}

/* Waits for the SIGKILL the parent has sent or is sending (a thread worker just returns). */
static int pause_until_killed(void)
{
    for (int i = 0; i < 50; i++)
        usleep(100000);
    return 0;
}

static bool stopping(const fpp__wctx *w)
{
    return w->stop && atomic_load_explicit(w->stop, memory_order_acquire);
}

/* Claims the next task: spin briefly, then yield, then sleep until the parent posts. */
static int claim(fpp__wctx *w, fpp__hdr *h, fpp__cell *cells, fpp__wblock *b, uint64_t *pos)
{
    int64_t spin_until = 0;
    for (int round = 0;; round++) {
        if (stopping(w))
            return 0;
        if (fpp__ring_claim_worker(h, cells, w->lay.ncells, w->slot, pos))
            return 1;
        if (round < 256) {
            if (round == 0)
                spin_until = fpp__now_ns() + 20000;
            for (int i = 0; i < 16; i++)
                fpp__cpu_relax();
            if ((round & 15) == 15 && fpp__now_ns() > spin_until)
                round = 255;
            continue;
        }
        if (round < 320) {
            sched_yield();
            continue;
        }
        uint32_t seen = atomic_load(&b->wake);
        atomic_store_explicit(&b->sleeping, 1, memory_order_relaxed);
        /* Dekker pair with the parent's publish then check of `sleeping` (fpp__pool_flush). */
        atomic_thread_fence(memory_order_seq_cst);
        if (fpp__ring_claim_worker(h, cells, w->lay.ncells, w->slot, pos)) {
            atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
            return 1;
        }
        if (!stopping(w))
            fpp__event_wait(&b->wake, seen, fpp__now_ns() + 200000000);
        atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
        round = 0;
    }
}

int fpp__worker_main(fpp__wctx *w)
{
    unsigned char *base = w->base;
    const fpp__layout *l = &w->lay;
    fpp__hdr *h = fpp__hdr_of(base);
    fpp__cell *cells = fpp__cells_of(base, l);
    fpp__wblock *b = fpp__wblock_of(base, l, w->slot);
    fpp_out o = {
        .w = w,
        .b = b,
        .arena = fpp__warena_of(base, l, w->slot),
        .asize = l->warena_size,
        .apos = atomic_load(&b->apos),
    };
    uint64_t ctail = atomic_load(&b->ctail);
    unsigned done = 0;
    if (w->process)
        crash_point_init();
    if (w->process && w->max_rss_kib)
        cap_address_space(w->max_rss_kib);
    unsigned char argbuf[FPP__INLINE_ARG];

    for (;;) {
        uint64_t pos;
        /* drain: the parent is about to kill us (timeout, cancel). Take nothing new. */
        if (atomic_load_explicit(&b->drain, memory_order_acquire))
            return pause_until_killed();
        if (!claim(w, h, cells, b, &pos))
            return 0;
        crash_point(1);
        fpp__cell *c = &cells[pos & (l->ncells - 1)];
        uint64_t ticket = c->ticket;
        uint32_t fnid = c->fn, arg_len = c->arg_len;
        uint64_t arg_off = c->arg_off;
        memcpy(argbuf, c->arg, sizeof argbuf);
        atomic_store_explicit(&b->ticket, ticket, memory_order_relaxed);
        atomic_store_explicit(&b->started_ns, fpp__now_ns(), memory_order_relaxed);
        atomic_store_explicit(&b->phase, FPP__PH_RUNNING, memory_order_release);
        /* Dekker pair with kill_slot's store of drain then check of our phase and ticket: if
         * the parent decided to kill us for an earlier task, this one must not start. Its cell
         * still names us, so the parent publishes it again once we are gone. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&b->drain, memory_order_relaxed))
            return pause_until_killed();
        crash_point(2);
        fpp__ring_release_worker(cells, l->ncells, pos, w->slot);
        crash_point(3);

        o.set = o.failed = o.toobig = false;
        o.len = 0;
        o.msglen = 0;
        const void *arg = argbuf;
        fpp_fn fn = fpp__registry_fn((int)fnid);
        if (arg_len > FPP__INLINE_ARG) {
            if (arg_len > l->max_arg || arg_off > l->args_size || arg_len > l->args_size - arg_off)
                fpp_out_fail(&o, "task descriptor corrupted (argument of %u bytes at %llu)",
                             arg_len, (unsigned long long)arg_off);
            arg = base + l->args_off + arg_off;
        }
        if (!fn)
            fpp_out_fail(&o, "no function with id %u", fnid);
        if (!o.failed) {
            int rc = fn(arg_len ? arg : NULL, arg_len, &o);
            if (rc != 0 && !o.failed)
                fpp_out_fail(&o, "function returned %d", rc);
        }

        fpp__crec r = {.ticket = ticket};
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
            o.apos = FPP__ALIGN_UP(o.off + r.len, FPP__ARENA_ALIGN);
        crash_point(4);
        publish(&o, &ctail, &r);
        crash_point(5);
        atomic_store_explicit(&b->tasks, ++done, memory_order_relaxed);
        atomic_store_explicit(&b->phase, FPP__PH_IDLE, memory_order_release);

        if ((w->max_tasks && done >= w->max_tasks) || (w->max_rss_kib && over_rss(w->max_rss_kib))) {
            atomic_store_explicit(&b->phase, FPP__PH_RETIRED, memory_order_release);
            notify_parent(h);
            return 0;
        }
    }
}
