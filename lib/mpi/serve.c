/* mpi/serve.c: every rank but 0. Receives batches of tasks, runs them in a local fpp process
 * executor through the public API (a task manager with the ignore policy, fpp_submit_ex,
 * fpp_as_completed_for, fpp_cancel), and sends results back in batches with credits for more.
 * A task that crashes kills a worker process of the local pool, never this rank.
 *
 * Items: one per task received, until its one reply is sent. States: BULK (its argument is
 * arriving in chunks), QUEUED (in the inbox: received, not handed to the local pool yet),
 * LOCAL (in the local task manager; fpp_task_user points back at the item). `cancelled`: rank
 * 0 cancelled it, so its reply says CANCELLED whatever it became; `dropped`: a cancel-all
 * answered it already, so it gets no reply and its bytes are thrown away when they land.
 *
 * The loop, on one thread (MPI is called only here): take every message waiting; hand inbox
 * items to the local pool while it holds fewer than its share (LOCAL_NS of work at the
 * measured rate, at least two per worker: the rest stays in the inbox, where a cancel is
 * free); take every finished local task without waiting; send the results with a credit
 * grant. With nothing to do it waits on the local pool for up to a millisecond when tasks run
 * there, else naps (mpi_wire.c).
 *
 * Heartbeats (rank 0 has a rank timeout: cfg.beat_ms): the loop sends a BEAT whenever nothing
 * went to rank 0 for beat_ms, first thing in each turn; nothing in the loop waits longer than a
 * millisecond. Before that, a rank that sent nothing for the rank timeout (it was stopped or
 * stalled) knows rank 0 may count it lost, and stops (mpi/mpi_int.h); so does a LOST notice
 * from rank 0. Either way everything in flight is abandoned, no BYE, FPP_ETIMEDOUT.
 *
 * Credits: `granted` counts credits ever given, `received` tasks ever received; rank 0 holds
 * granted - received unspent. The rank grants up to its window (WINDOW_NS of work at its
 * rate) minus what it holds and what rank 0 may still send. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/testing.h"
#include "mpi/mpi_int.h"

enum { I_FREE = 0, I_BULK, I_QUEUED, I_LOCAL };

#define SLAB_ITEMS 1024u
#define NO_ITEM UINT32_MAX

typedef struct item {
    fpp__mpi_bulk bulk;   /* first: the link hands it back (cookie: the item's index) */
    uint64_t ticket;
    int64_t gid;          /* rank 0's task id */
    int64_t lid;          /* the local task manager's id, LOCAL only */
    uint32_t fn, timeout_ms;
    unsigned char *arg;   /* heap: a bulk argument or a queued copy */
    size_t len;
    uint8_t state;
    bool cancelled, dropped;
    uint32_t next;        /* inbox or free list */
} item;

typedef struct srv {
    int me;
    MPI_Comm comm;
    fpp__mpi_link link;
    fpp__mpi_config cfg;
    fpp_executor *ex;
    fpp_tm *tm;
    int workers;
    item **slabs;
    uint32_t nslabs, free_item;
    uint32_t in_head, in_tail;
    size_t held;          /* items not free */
    size_t local;         /* items LOCAL */
    uint64_t granted, received;
    fpp__mpi_buf out;     /* the results batch being built */
    uint32_t out_n;
    int64_t out_since;    /* when its first result came */
    fpp__mpi_buf rx;
    uint64_t completed;   /* local tasks finished, for the rate */
    uint64_t rate_c0;
    int64_t rate_t0;
    double rate;          /* tasks per second */
    fpp__mpi_nap nap;
    int64_t beat_ns;      /* heartbeats: something goes to rank 0 at least this often; 0 none */
    int64_t timeout_ns;   /* rank 0's rank timeout: sent nothing this long, stop */
    bool keep_serving;    /* test build: FPP_MPI_KEEP_SERVING, never stop on the above */
    bool stop;
    bool lost;            /* rank 0 declared this rank lost: stop, answer nothing */
    int err;              /* an MPI call failed: give up */
    int64_t last_look;    /* when MPI was last looked at */
} srv;

/* ----------------------------------------------------------------- items */

static item *it_at(srv *s, uint32_t i) { return &s->slabs[i / SLAB_ITEMS][i % SLAB_ITEMS]; }

static uint32_t it_alloc(srv *s)
{
    if (s->free_item == NO_ITEM) {
        item **sl = realloc(s->slabs, (s->nslabs + 1) * sizeof *sl);
        if (!sl)
            return NO_ITEM;
        s->slabs = sl;
        item *slab = calloc(SLAB_ITEMS, sizeof *slab);
        if (!slab)
            return NO_ITEM;
        s->slabs[s->nslabs] = slab;
        for (uint32_t k = SLAB_ITEMS; k-- > 0;) {
            slab[k].next = s->free_item;
            s->free_item = s->nslabs * SLAB_ITEMS + k;
        }
        s->nslabs++;
    }
    uint32_t i = s->free_item;
    item *it = it_at(s, i);
    s->free_item = it->next;
    *it = (item){.lid = -1, .next = NO_ITEM};
    it->bulk.cookie = i;
    s->held++;
    return i;
}

static void it_free(srv *s, uint32_t i)
{
    item *it = it_at(s, i);
    fpp__mpi_big_put(&s->link, it->arg, it->len);
    it->arg = NULL;
    it->state = I_FREE;
    it->next = s->free_item;
    s->free_item = i;
    s->held--;
}

static void inbox_push(srv *s, uint32_t i)
{
    item *it = it_at(s, i);
    it->state = I_QUEUED;
    it->next = NO_ITEM;
    if (s->in_tail != NO_ITEM)
        it_at(s, s->in_tail)->next = i;
    else
        s->in_head = i;
    s->in_tail = i;
}

static uint32_t inbox_pop(srv *s)
{
    uint32_t i = s->in_head;
    if (i != NO_ITEM) {
        s->in_head = it_at(s, i)->next;
        if (s->in_head == NO_ITEM)
            s->in_tail = NO_ITEM;
    }
    return i;
}

static void inbox_remove(srv *s, uint32_t i)
{
    uint32_t prev = NO_ITEM;
    for (uint32_t k = s->in_head; k != NO_ITEM; prev = k, k = it_at(s, k)->next) {
        if (k != i)
            continue;
        uint32_t next = it_at(s, k)->next;
        if (prev == NO_ITEM)
            s->in_head = next;
        else
            it_at(s, prev)->next = next;
        if (s->in_tail == k)
            s->in_tail = prev;
        return;
    }
}

/* ---------------------------------------------------------------- credits */

static void measure(srv *s)
{
    int64_t now = fpp__now_ns();
    if (s->rate_t0 == 0) {
        s->rate_t0 = now;
        s->rate_c0 = s->completed;
        return;
    }
    if (now - s->rate_t0 < FPP__MPI_RATE_NS)
        return;
    double r = (double)(s->completed - s->rate_c0) * 1e9 / (double)(now - s->rate_t0);
    s->rate = s->rate == 0 ? r : 0.5 * s->rate + 0.5 * r;
    s->rate_t0 = now;
    s->rate_c0 = s->completed;
}

/* Tasks worth horizon_ns at the measured rate, plus one per worker; at least two per worker. */
static size_t share(const srv *s, int64_t horizon_ns)
{
    double w = (double)s->workers + s->rate * (double)horizon_ns / 1e9;
    double lo = 2.0 * s->workers, hi = FPP__MPI_WINDOW_MAX;
    if (lo > hi)
        lo = hi;
    w = w < lo ? lo : w > hi ? hi : w;
    return (size_t)w;
}

/* The credit to grant now (and count as granted). */
static uint32_t grant(srv *s)
{
    size_t want = share(s, FPP__MPI_WINDOW_NS);
    uint64_t have = s->held + (s->granted - s->received);
    if (have >= want)
        return 0;
    uint32_t g = (uint32_t)(want - have);
    s->granted += g;
    return g;
}

static uint64_t restarts(const srv *s)
{
    fpp_stats st;
    fpp_tm_stats(s->tm, &st);
    return st.worker_restarts;
}

/* ---------------------------------------------------------------- replies */

static void fail_mpi(srv *s, int rc)
{
    if (rc && !s->err)
        s->err = rc;
}

static void send_results(srv *s)
{
    if (s->out_n == 0)
        return;
    fpp__mpi_hdr *h = fpp__mpi_batch_hdr(&s->out);
    h->credit = grant(s);
    h->aux = restarts(s);
    s->out_n = 0;
    fail_mpi(s, fpp__mpi_send(&s->link, 0, &s->out));
}

static void reply(srv *s, item *it, fpp_status st, int signo, const void *data, size_t len)
{
    if (s->out_n == 0) {
        s->out = fpp__mpi_buf_get(&s->link);
        s->out_since = fpp__now_ns();
        if (fpp__mpi_batch_begin(&s->out, FPP__MT_RESULTS)) {
            fpp__log(FPP_LOG_ERROR, "rank %d: out of memory for a batch of results", s->me);
            fail_mpi(s, FPP_ENOMEM);
            return;
        }
    }
    void *copy = NULL;
    char oom[96];
    bool bulk = st == FPP_DONE && len > FPP__MPI_INLINE_MAX;
    if (bulk) {
        /* The result lives until the next fpp_as_completed_for; MPI needs it longer. */
        copy = fpp__mpi_big_get(&s->link, len);
        if (copy) {
            memcpy(copy, data, len);
        } else {
            bulk = false;
            st = FPP_FAILED;
            len = (size_t)snprintf(oom, sizeof oom, "rank %d: out of memory for a result of %zu bytes", s->me, len);
            data = oom;
        }
    }
    if (st != FPP_DONE && len > FPP__MPI_MSG_MAX)
        len = FPP__MPI_MSG_MAX;
    fpp__mpi_result_rec r = {
        .ticket = it->ticket,
        .len = len,
        .status = (int32_t)st,
        .signo = signo,
        .flags = bulk ? FPP__REC_BULK : 0,
    };
    if (fpp__mpi_batch_add_result(&s->out, &r, data)) {
        fpp__mpi_big_put(&s->link, copy, len);
        fpp__log(FPP_LOG_ERROR, "rank %d: out of memory for a batch of results", s->me);
        fail_mpi(s, FPP_ENOMEM);
        return;
    }
    s->out_n++;
    if (bulk) {
        send_results(s); /* the record first, so that rank 0 posts receives for the bytes */
        fail_mpi(s, fpp__mpi_send_bulk(&s->link, 0, copy, len));
    } else if (s->out_n >= FPP__MPI_BATCH_TASKS || s->out.len >= FPP__MPI_BATCH_BYTES) {
        send_results(s);
    }
}

static void reply_msg(srv *s, item *it, fpp_status st, int signo, const char *fmt, ...) FPP_PRINTF(5, 6);
static void reply_msg(srv *s, item *it, fpp_status st, int signo, const char *fmt, ...)
{
    char msg[FPP__MPI_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    reply(s, it, st, signo, msg, FPP__MIN((size_t)n, sizeof msg - 1));
}

static void reply_crash(srv *s, item *it, fpp_status st, int signo, const char *msg)
{
    char out[FPP__MPI_MSG_MAX];
    size_t n = fpp__mpi_rank_message(out, sizeof out, s->me, msg, it->lid, it->gid);
    reply(s, it, st, signo, out, n);
}

/* ------------------------------------------------------------- local pool */

static int new_tm(srv *s)
{
    fpp_tm_opts o = {
        .error_policy = FPP_IGNORE,        /* every outcome is data for rank 0 */
        .monitor_interval_ms = -1,         /* rank 0 has the monitor */
        .max_in_flight = 2 * (size_t)FPP__MPI_WINDOW_MAX, /* never reached: submit never blocks */
        .flags = FPP_TM_NO_SIGINT,         /* rank 0 decides */
    };
    return fpp_tm_create(&s->tm, s->ex, &o);
}

/* Hands item i to the local pool (arg: its bytes, wherever they are). */
static void submit(srv *s, uint32_t i, const void *arg)
{
    item *it = it_at(s, i);
    if (it->cancelled) {
        reply_msg(s, it, FPP_CANCELLED, 0, "cancelled");
        it_free(s, i);
        return;
    }
    fpp_task_opts o = {.user = (void *)(uintptr_t)(i + 1), .timeout_ms = it->timeout_ms};
    int64_t lid = fpp_submit_ex(s->tm, (int)it->fn, arg, it->len, &o);
    if (lid < 0) {
        reply_msg(s, it, FPP_FAILED, 0, "rank %d: could not hand the task to the local pool: %s", s->me,
                  fpp_strerror((int)lid));
        it_free(s, i);
        return;
    }
    fpp__mpi_big_put(&s->link, it->arg, it->len);
    it->arg = NULL;
    it->lid = lid;
    it->state = I_LOCAL;
    s->local++;
}

static bool submit_some(srv *s)
{
    size_t limit = share(s, FPP__MPI_LOCAL_NS);
    bool any = false;
    while (s->in_head != NO_ITEM && s->local < limit) {
        uint32_t i = inbox_pop(s);
        submit(s, i, it_at(s, i)->arg);
        any = true;
    }
    return any;
}

static void local_done(srv *s, fpp_task *t)
{
    uintptr_t u = (uintptr_t)fpp_task_user(t);
    if (u == 0 || u > (uintptr_t)s->nslabs * SLAB_ITEMS) {
        fpp__log(FPP_LOG_ERROR, "rank %d: a local task that is not ours (id %lld)", s->me, (long long)fpp_task_id(t));
        return;
    }
    uint32_t i = (uint32_t)(u - 1);
    item *it = it_at(s, i);
    s->local--;
    s->completed++;
    fpp_status st = fpp_task_status(t);
    size_t len = 0;
    if (it->cancelled || st == FPP_CANCELLED) {
        reply_msg(s, it, FPP_CANCELLED, 0, "cancelled");
    } else if (st == FPP_DONE) {
        const void *r = fpp_task_result(t, &len);
        reply(s, it, FPP_DONE, 0, r, len);
    } else if (st == FPP_FAILED) {
        const char *e = fpp_task_error(t);
        reply(s, it, FPP_FAILED, 0, e, strlen(e)); /* the function's own words */
    } else {
        reply_crash(s, it, st, fpp_task_signal(t), fpp_task_error(t));
    }
    it_free(s, i);
}

/* Takes finished local tasks; waits up to wait_ms for the first. True if any. */
static bool harvest(srv *s, int wait_ms)
{
    bool any = false;
    fpp_task *t;
    int rc;
    while (s->local > 0 && (rc = fpp_as_completed_for(s->tm, &t, any ? 0 : wait_ms)) == 1) {
        local_done(s, t);
        any = true;
    }
    return any;
}

/* Cancel-all: every item is answered by the acknowledgement; the local pool is replaced by a
 * fresh task manager (freeing the old one kills the workers running our tasks). */
static void drop_all(srv *s)
{
    for (uint32_t i; (i = inbox_pop(s)) != NO_ITEM;)
        it_free(s, i);
    if (s->local > 0) {
        fpp_tm_free(s->tm);
        s->tm = NULL;
        s->local = 0;
    }
    for (uint32_t n = 0; n < s->nslabs * SLAB_ITEMS; n++) {
        item *it = it_at(s, n);
        if (it->state == I_LOCAL)
            it_free(s, n);
        else if (it->state == I_BULK)
            it->dropped = true;
    }
    if (s->out_n) {
        s->out_n = 0;
        fpp__mpi_buf_put(&s->link, &s->out);
    }
    if (!s->tm && !s->stop) {
        int rc = new_tm(s);
        if (rc) {
            fpp__log(FPP_LOG_ERROR, "rank %d: could not make a new task manager: %s", s->me, fpp_strerror(rc));
            fail_mpi(s, rc);
        }
    }
}

/* ------------------------------------------------------------- messages */

static void bulk_done(void *owner, fpp__mpi_bulk *b)
{
    srv *s = owner;
    uint32_t i = (uint32_t)b->cookie;
    item *it = it_at(s, i);
    if (it->dropped) {
        it_free(s, i);
    } else if (!it->arg && it->len) {
        reply_msg(s, it, FPP_FAILED, 0, "rank %d: out of memory for an argument of %zu bytes", s->me, it->len);
        it_free(s, i);
    } else {
        inbox_push(s, i);
    }
}

static void on_tasks(srv *s, fpp__mpi_rd *rd)
{
    fpp__mpi_task_rec r;
    const unsigned char *bytes;
    int rc;
    while ((rc = fpp__mpi_next_task(rd, &r, &bytes)) == 1) {
        s->received++;
        uint32_t i = it_alloc(s);
        if (i == NO_ITEM) {
            fpp__log(FPP_LOG_ERROR, "rank %d: out of memory for a task; stopping", s->me);
            fail_mpi(s, FPP_ENOMEM);
            return;
        }
        item *it = it_at(s, i);
        it->ticket = r.ticket;
        it->gid = r.id;
        it->fn = r.fn;
        it->timeout_ms = r.timeout_ms;
        it->len = (size_t)r.len;
        it->cancelled = r.flags & FPP__REC_CANCELLED;
        if (r.len > s->cfg.max_arg_size) {
            fpp__log(FPP_LOG_ERROR, "rank %d: rank 0 sent an argument of %llu bytes, over max_arg_size", s->me,
                     (unsigned long long)r.len);
            fail_mpi(s, FPP_EINVAL);
            return;
        }
        if (r.flags & FPP__REC_BULK) {
            it->state = I_BULK;
            it->arg = fpp__mpi_big_get(&s->link, it->len);
            it->bulk.dst = it->arg;
            it->bulk.len = it->len;
            fail_mpi(s, fpp__mpi_recv_bulk(&s->link, 0, &it->bulk));
        } else if (s->in_head == NO_ITEM && s->local < share(s, FPP__MPI_LOCAL_NS)) {
            submit(s, i, bytes); /* straight from the batch: no copy */
        } else {
            it->arg = fpp__mpi_big_get(&s->link, it->len);
            if (!it->arg) {
                reply_msg(s, it, FPP_FAILED, 0, "rank %d: out of memory for an argument of %zu bytes", s->me, it->len);
                it_free(s, i);
                continue;
            }
            memcpy(it->arg, bytes, it->len);
            inbox_push(s, i);
        }
    }
    if (rc < 0) {
        fpp__log(FPP_LOG_ERROR, "rank %d: a malformed batch from rank 0", s->me);
        fail_mpi(s, FPP_EINVAL);
    }
}

static void on_cancel(srv *s, fpp__mpi_rd *rd)
{
    uint64_t tk;
    while (fpp__mpi_next_ticket(rd, &tk) == 1) {
        for (uint32_t n = 0; n < s->nslabs * SLAB_ITEMS; n++) {
            item *it = it_at(s, n);
            if (it->state == I_FREE || it->ticket != tk || it->dropped)
                continue;
            it->cancelled = true;
            if (it->state == I_QUEUED) {
                inbox_remove(s, n);
                reply_msg(s, it, FPP_CANCELLED, 0, "cancelled");
                it_free(s, n);
            } else if (it->state == I_LOCAL) {
                /* 1: it comes back CANCELLED (running: its worker is killed and replaced);
                 * 0: it finished and its result is on its way. Either way its one reply
                 * comes from local_done. */
                fpp_cancel(s->tm, it->lid);
            }
            break; /* BULK: answered when its bytes are in */
        }
    }
}

static void handle(srv *s)
{
    fpp__mpi_hdr h;
    fpp__mpi_rd rd;
    if (fpp__mpi_msg_open(&rd, s->rx.p, s->rx.len, &h)) {
        fpp__log(FPP_LOG_ERROR, "rank %d: a malformed message from rank 0", s->me);
        fail_mpi(s, FPP_EINVAL);
        return;
    }
    switch (h.type) {
    case FPP__MT_TASKS:
        on_tasks(s, &rd);
        break;
    case FPP__MT_CANCEL:
        on_cancel(s, &rd);
        break;
    case FPP__MT_CANCEL_ALL:
        drop_all(s);
        fail_mpi(s, fpp__mpi_send_ctl(&s->link, 0, FPP__MT_CANCEL_DONE, grant(s), h.aux, NULL, 0));
        break;
    case FPP__MT_STOP:
        s->stop = true;
        drop_all(s);
        break;
    case FPP__MT_LOST:
        fpp__log(FPP_LOG_ERROR, "rank %d: rank 0 declared this rank lost (it heard nothing from it for its rank "
                                "timeout: this rank was stopped or too slow); the tasks it held ran elsewhere; it "
                                "stops serving",
                 s->me);
        s->lost = true;
        s->stop = true;
        drop_all(s);
        break;
    default:
        fpp__log(FPP_LOG_ERROR, "rank %d: rank 0 sent a message only other ranks send", s->me);
        fail_mpi(s, FPP_EINVAL);
    }
}

static bool take_messages(srv *s)
{
    bool any = false;
    s->last_look = fpp__now_ns();
    fail_mpi(s, fpp__mpi_link_progress(&s->link) < 0 ? FPP_ESYS : 0);
    while (!s->stop && !s->err) {
        int from;
        int rc = fpp__mpi_recv_ctl(&s->link, 0, &s->rx, &from);
        if (rc <= 0) {
            fail_mpi(s, rc);
            break;
        }
        handle(s);
        any = true;
    }
    return any;
}

/* --------------------------------------------------------------- serving */

static void serve(srv *s)
{
    fpp__mpi_nap_begin(&s->nap);
    /* The first credit: rank 0 sends nothing before it. */
    fail_mpi(s, fpp__mpi_send_ctl(&s->link, 0, FPP__MT_CREDIT, grant(s), 0, NULL, 0));
    bool busy = true;
    while (!s->stop && !s->err) {
        if (s->beat_ns) {
            /* First: nothing sent for the rank timeout, and rank 0 may count this rank lost
             * (mpi/mpi_int.h); else a heartbeat when due. */
            int64_t quiet = fpp__now_ns() - s->link.last_send_ns;
            if (quiet >= s->timeout_ns && !s->keep_serving) {
                fpp__log(FPP_LOG_ERROR, "rank %d: nothing went to rank 0 for %lld ms (this rank was stopped or "
                                        "stalled), the rank timeout being %lld ms: rank 0 counts it lost; it stops "
                                        "serving (its tasks run on other ranks)",
                         s->me, (long long)(quiet / 1000000), (long long)(s->timeout_ns / 1000000));
                s->lost = true;
                s->stop = true;
                drop_all(s);
                break;
            }
            if (quiet >= s->beat_ns)
                fail_mpi(s, fpp__mpi_send_ctl(&s->link, 0, FPP__MT_BEAT, 0, restarts(s), NULL, 0));
        }
        /* A busy loop looks at MPI once per PROGRESS_GAP_NS; one about to wait, always. */
        if (!busy || fpp__now_ns() - s->last_look >= FPP__MPI_PROGRESS_GAP_NS)
            busy = take_messages(s);
        else
            busy = false;
        if (s->stop || s->err)
            break;
        busy |= submit_some(s);
        busy |= harvest(s, 0);
        measure(s);
        /* Results wait for company (RESULTS_MIN), but never past FLUSH_AGE_NS, nor when credit
         * is due, nor when this rank has nothing left to run. */
        size_t want = share(s, FPP__MPI_WINDOW_NS);
        uint64_t have = s->held + (s->granted - s->received);
        bool credit_due = have + want / 4 < want || (have == 0 && want > 0);
        bool dry = s->local == 0 && s->in_head == NO_ITEM;
        if (s->out_n && (dry || credit_due || s->out_n >= FPP__MPI_RESULTS_MIN ||
                         fpp__now_ns() - s->out_since >= FPP__MPI_FLUSH_AGE_NS))
            send_results(s); /* with the credit grant */
        else if (credit_due)
            fail_mpi(s, fpp__mpi_send_ctl(&s->link, 0, FPP__MT_CREDIT, grant(s), restarts(s), NULL, 0));
        if (busy) {
            fpp__mpi_nap_reset(&s->nap);
        } else if (s->out_n) {
            fpp__mpi_nap_step(&s->nap, NULL, s->out_since + FPP__MPI_FLUSH_AGE_NS); /* short naps */
        } else if (s->local > 0) {
            if (harvest(s, 1)) /* sleeps on the local pool, so MPI waits at most 1 ms */
                fpp__mpi_nap_reset(&s->nap);
        } else {
            fpp__mpi_nap_step(&s->nap, NULL, INT64_MAX);
        }
    }
}

/* A bulk argument abandoned when this rank was declared lost: its bytes (buried by the link)
 * are no longer the item's. */
static void bulk_dropped(void *owner, fpp__mpi_bulk *b)
{
    srv *s = owner;
    it_at(s, (uint32_t)b->cookie)->arg = NULL;
}

/* Ends serving: the pool goes first (its workers are killed and reaped), then every request
 * in flight completes, then rank 0 hears BYE: 0 when it asked, else why this rank stops on its
 * own (rank 0 then fails what this rank held and goes on with the others). After an MPI
 * failure the BYE is tried all the same; MPI without fault tolerance has ended the job by
 * then anyway. A rank lost (told, or stopped by itself) sends nothing more: what is in flight
 * is abandoned, and it returns FPP_ETIMEDOUT. */
static int finish(srv *s)
{
    fpp_tm_free(s->tm);
    s->tm = NULL;
    fpp_executor_free(s->ex);
    s->ex = NULL;
    int rc = s->err;
    if (rc)
        fpp__log(FPP_LOG_ERROR, "rank %d: fpp_mpi_serve stops: %s", s->me, fpp_strerror(rc));
    if (s->lost && !rc) {
        /* Rank 0 wants nothing more: what is in flight is left to MPI (a result in bulk would
         * wait for ever for a receive rank 0 never posts), and no BYE. */
        fpp__mpi_link_abandon(&s->link, 0, bulk_dropped);
        rc = FPP_ETIMEDOUT;
    }
    fpp__mpi_nap_begin(&s->nap);
    int lrc = 0;
    while (!s->lost && !fpp__mpi_link_idle(&s->link) && lrc == 0) {
        lrc = fpp__mpi_link_progress(&s->link) < 0 ? FPP_ESYS : 0;
        fpp__mpi_nap_step(&s->nap, NULL, INT64_MAX);
    }
    fpp__mpi_hdr bye = {.magic = FPP__MPI_MAGIC, .type = FPP__MT_BYE, .aux = (uint64_t)(int64_t)rc};
    if (lrc == 0 && !s->lost)
        lrc = fpp__mpi_check(MPI_Send(&bye, sizeof bye, MPI_BYTE, 0, FPP__MPI_TAG_CTL, s->comm), "MPI_Send", 0);
    if (lrc == 0)
        MPI_Comm_free(&s->comm);
    for (uint32_t k = 0; k < s->nslabs; k++) {
        for (uint32_t j = 0; j < SLAB_ITEMS; j++)
            fpp__mpi_big_put(&s->link, s->slabs[k][j].arg, s->slabs[k][j].len);
        free(s->slabs[k]);
    }
    fpp__mpi_link_fini(&s->link);
    free(s->slabs);
    fpp__mpi_buf_free(&s->out);
    fpp__mpi_buf_free(&s->rx);
    return rc ? rc : lrc;
}

static void opts_for_rank(fpp_executor_opts *o, const fpp_executor_opts *local, const fpp__mpi_config *c,
                          const unsigned char *var)
{
    static const fpp_executor_opts zero;
    *o = local ? *local : zero;
    if (!o->workers)
        o->workers = c->workers;
    if (!o->queue_capacity)
        o->queue_capacity = (size_t)c->queue_capacity;
    o->max_arg_size = (size_t)c->max_arg_size;       /* the job's limits are rank 0's */
    o->max_result_size = (size_t)c->max_result_size;
    if (!o->task_timeout_ms)
        o->task_timeout_ms = c->task_timeout_ms;
    if (!o->max_tasks_per_worker)
        o->max_tasks_per_worker = c->max_tasks_per_worker;
    if (!o->max_worker_rss_kib)
        o->max_worker_rss_kib = (size_t)c->max_worker_rss_kib;
    if (!o->keep_fds)
        o->keep_fds = c->keep_fds;
    if (!o->worker_init && var) {
        o->worker_init = (const char *)var;
        o->worker_init_arg = var + c->init_name_len;
        o->worker_init_arg_len = (size_t)c->init_arg_len;
    }
}

int fpp_mpi_serve(MPI_Comm comm, const fpp_executor_opts *local)
{
    int rc = fpp__mpi_usable("fpp_mpi_serve");
    if (rc)
        return rc;
    if (comm == MPI_COMM_NULL) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_serve: MPI_COMM_NULL");
        return FPP_EINVAL;
    }
    int me = -1, inter = 0;
    MPI_Comm_test_inter(comm, &inter);
    MPI_Comm_rank(comm, &me);
    if (inter || me == 0) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_serve: %s",
                 inter ? "an inter-communicator; give an intra-communicator"
                       : "rank 0 runs the task manager on fpp_mpi_executor; the other ranks serve");
        return FPP_EINVAL;
    }
    fpp__mpi_guard_setup(); /* before the local pool: its workers inherit the error code */
    srv s = {.me = me, .free_item = NO_ITEM, .in_head = NO_ITEM, .in_tail = NO_ITEM};
    unsigned char *var = NULL;
    rc = fpp__mpi_join_rank_begin(comm, &s.comm, &s.cfg, &var);
    if (rc && s.comm == MPI_COMM_NULL)
        return rc;

    fpp__mpi_hello hello = {.endian = FPP__MPI_ENDIAN, .pid = (int32_t)getpid()};
    gethostname(hello.host, sizeof hello.host - 1);
    fpp__mpi_fns_digest(&hello.nfns, &hello.fns_hash);
    if (rc == 0 && (hello.nfns != s.cfg.nfns || hello.fns_hash != s.cfg.fns_hash)) {
        fpp__log(FPP_LOG_ERROR, "rank %d: fpp_mpi_serve: %u function(s) registered here, rank 0 has %u (or other "
                                "names); register the same functions in the same order on every rank",
                 me, hello.nfns, s.cfg.nfns);
        rc = FPP_EINVAL;
    }
    if (rc == 0) {
        fpp_executor_opts o;
        opts_for_rank(&o, local, &s.cfg, var);
        rc = fpp_process_executor(&s.ex, &o);
        if (rc == 0)
            rc = new_tm(&s);
        if (rc == 0)
            s.workers = fpp_executor_workers(s.ex);
    }
    hello.rc = rc;
    hello.workers = s.workers;
    int v = fpp__mpi_join_rank_end(&s.comm, &hello);
    free(var); /* the pool copied what it needs */
    if (v) {
        fpp_tm_free(s.tm);
        fpp_executor_free(s.ex);
        return rc ? rc : v;
    }
    fpp__mpi_link_init(&s.link, s.comm, (size_t)s.cfg.chunk, bulk_done, &s);
    s.beat_ns = (int64_t)s.cfg.beat_ms * 1000000;
    s.timeout_ns = (int64_t)s.cfg.rank_timeout_ms * 1000000;
    s.keep_serving = FPP__TEST_ENV("FPP_MPI_KEEP_SERVING") != NULL;
    /* Rank 0 decides about Ctrl-C, as a pool's parent does for its workers: a launcher that
     * passes SIGINT to every rank (MPICH's Hydra) then gets rank 0's FPP_EINTR, with tasks
     * stopped everywhere, instead of ranks dying under it. Open MPI's mpirun sends SIGTERM,
     * which still ends the rank at once. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &old);
    serve(&s);
    rc = finish(&s);
    sigaction(SIGINT, &old, NULL);
    return rc;
}
