/* mpi/executor.c: rank 0's side, an executor backend (fpp__exec_ops) whose workers are the
 * other ranks. The task manager drives it like any executor: dispatch puts a task into the
 * open batch of a rank that has credit, flush and poll send batches, poll receives results
 * and hands finished tasks back through fpp__exec_finished.
 *
 * Entries: every task handed to a rank has an entry; its ticket (generation << 32 | index)
 * names it on the wire. States: OPEN (in a batch not sent yet), SENT (the rank holds it),
 * BULK (its result is arriving in chunks), ORPHAN (no rank is left to take it: the next poll
 * fails it). An entry whose task was cancelled for the task
 * manager (cancel, raise, Ctrl-C, free) keeps its state with task NULL: abandoned, it waits
 * for the rank's one reply (or the acknowledgement of a cancel-all) before it is reused, so a
 * late reply never meets another task (see mpi/mpi_int.h). t->tag is the entry's index while
 * the executor holds t.
 *
 * When a batch goes: when full; at flush, if its rank holds fewer than two tasks per worker
 * (it may run dry); at poll, if it waited FLUSH_AGE_NS (a user who submits one task and then
 * does something else still sees it run) or the caller is about to wait.
 * A task argument over INLINE_MAX goes at once, its batch first, then its bytes in bulk
 * (copied: the task manager may free the task before MPI is done with the bytes).
 *
 * Lost ranks (fpp_mpi_opts.rank_timeout_ms, mpi/mpi_int.h): progress notes when each rank was
 * last heard and declares lost one silent for the timeout (counted from `watch_from` when rank
 * 0 was away). A lost peer is like one that said BYE (gets nothing, is picked for nothing,
 * is not waited for at a cancel-all or a stop) but its entries are failed and freed at once,
 * its requests abandoned, and every later message from it dropped before it is read: so no
 * late reply can meet an entry, whatever its ticket says. No loop of this file waits on a peer
 * that is lost or gone, and with a timeout every such loop runs progress, so it ends.
 *
 * Threads: everything runs on the thread calling into the task manager (one at a time),
 * except wake, which only posts `wake` (async-signal-safe). MPI is called on that thread
 * only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "mpi/mpi_int.h"

/* A rank that does not answer a stop within this long is named in the log (then waited for:
 * MPI gives no safe way to leave it behind). */
#define STOP_WARN_NS 10000000000LL

enum { E_FREE = 0, E_OPEN, E_SENT, E_BULK, E_ORPHAN };

typedef struct entry {
    fpp__job *task;   /* NULL: free or abandoned */
    uint32_t gen;
    uint8_t state;
    int peer;         /* index into peers */
    uint32_t epoch;   /* the peer's cancel-all epoch when sent */
    size_t rec_off;   /* OPEN: its record in the open batch */
    uint32_t next_free;
} entry;

typedef struct peer {
    int rank;
    int workers;
    int pid;
    char host[64];
    int64_t credit;          /* tasks we may still send there */
    fpp__mpi_buf open;       /* the batch being built */
    uint32_t open_n;
    uint32_t *open_idx;      /* its entries */
    int64_t open_since;
    uint64_t unanswered;     /* SENT or BULK entries, abandoned ones included */
    uint32_t epoch, acked;   /* cancel-alls sent, acknowledged */
    uint64_t restarts;       /* the rank's worker restarts, as last reported */
    int64_t heard;           /* when a message from it was last taken */
    bool bye;
    bool lost;               /* silent for the rank timeout: never waited for again */
    bool late_said;          /* a message after the loss was logged */
} peer;

typedef struct rbulk {       /* a result arriving in chunks */
    fpp__mpi_bulk b;         /* cookie: the entry's index */
    int peer;
} rbulk;

typedef struct mpx {
    fpp_executor *ex;
    MPI_Comm comm;
    fpp__mpi_link link;
    peer *peers;
    int npeers;
    int cur;                 /* the peer batches are filled for, while it has credit */
    entry *ent;
    uint32_t nent, free_ent;
    fpp__mpi_buf rx;
    fpp__mpi_nap nap;
    bool broken;             /* an MPI call failed or a rank broke the protocol */
    int64_t timeout_ns;      /* the rank timeout; 0: none */
    int64_t watch_from;      /* silence counts from here at the earliest (rank 0 was away) */
    int alive;               /* peers neither lost nor stopped on their own */
    uint32_t norphans;       /* ORPHAN entries */
    bool stopping;           /* STOP sent: BYEs are expected */
    int finished;            /* tasks finished during the current progress */
    bool heard;              /* a message arrived during the current progress */
    int64_t last_look;       /* when progress last ran */
    uint64_t n_sent, n_batches, n_msgs, n_results, n_late; /* for the DEBUG line at the end */
} mpx;

#define NO_ENTRY UINT32_MAX

/* -------------------------------------------------------------- entries */

static int ent_alloc(mpx *m, uint32_t *out)
{
    if (m->free_ent == NO_ENTRY) {
        uint32_t n = m->nent ? 2 * m->nent : 1024;
        entry *e = realloc(m->ent, (size_t)n * sizeof *e);
        if (!e)
            return FPP_ENOMEM;
        memset(e + m->nent, 0, (size_t)(n - m->nent) * sizeof *e);
        for (uint32_t i = n; i-- > m->nent;) {
            e[i].next_free = m->free_ent;
            m->free_ent = i;
        }
        m->ent = e;
        m->nent = n;
    }
    uint32_t i = m->free_ent;
    m->free_ent = m->ent[i].next_free;
    m->ent[i].gen++;
    *out = i;
    return 0;
}

static void ent_free(mpx *m, uint32_t i)
{
    entry *e = &m->ent[i];
    e->task = NULL;
    e->state = E_FREE;
    e->next_free = m->free_ent;
    m->free_ent = i;
}

static uint64_t ticket_of(const mpx *m, uint32_t i) { return ((uint64_t)m->ent[i].gen << 32) | i; }

/* ------------------------------------------------------------- finishing */

static void finish_task(mpx *m, fpp__job *t, fpp_status st, int signo, const unsigned char *bytes, size_t len)
{
    if (st == FPP_DONE) {
        if (fpp__job_set_result(t, bytes, len))
            fpp__job_fail(t, FPP_FAILED, 0, "out of memory for a result of %zu bytes", len);
    } else if (t->label && (st == FPP_CRASHED || st == FPP_TIMEOUT)) {
        /* The pool's message names the task by its id only (the ranks never see labels). */
        char name[FPP__NAME_MAX], msg[FPP__MPI_MSG_MAX + FPP__NAME_MAX];
        fpp__job_name(t, name, sizeof name);
        size_t n = fpp__mpi_rename_task(msg, sizeof msg, (const char *)bytes, len, t->id, name);
        fpp__job_fail(t, st, signo, "%.*s", (int)n, msg);
    } else {
        fpp__job_fail(t, st, signo, "%.*s", (int)len, (const char *)bytes);
    }
    t->tag = UINT32_MAX;
    m->finished++;
    if (m->ex->sink)
        fpp__exec_finished(m->ex, t);
}

static void cancel_one(mpx *m, fpp__job *t)
{
    fpp__job_fail(t, FPP_CANCELLED, 0, "cancelled");
    t->tag = UINT32_MAX;
    if (m->ex->sink)
        fpp__exec_finished(m->ex, t);
}

/* An entry's one reply arrived (and its bytes, if any): finish its task unless abandoned. */
static void answered(mpx *m, uint32_t i, fpp_status st, int signo, const unsigned char *bytes, size_t len)
{
    entry *e = &m->ent[i];
    if (e->task)
        finish_task(m, e->task, st, signo, bytes, len);
    m->peers[e->peer].unanswered--;
    ent_free(m, i);
}

static void bulk_done(void *owner, fpp__mpi_bulk *b)
{
    mpx *m = owner;
    rbulk *rb = (rbulk *)b; /* b is rbulk's first member */
    uint32_t i = (uint32_t)b->cookie;
    if (b->dst)
        answered(m, i, FPP_DONE, 0, b->dst, b->len);
    else
        answered(m, i, FPP_FAILED, 0, (const unsigned char *)"out of memory for the result", 28);
    fpp__mpi_big_put(&m->link, b->dst, b->len);
    free(rb);
}

/* -------------------------------------------------------------- sending */

static int send_open(mpx *m, int p)
{
    peer *pe = &m->peers[p];
    if (pe->open_n == 0)
        return 0;
    for (uint32_t k = 0; k < pe->open_n; k++) {
        entry *e = &m->ent[pe->open_idx[k]];
        e->state = E_SENT;
        e->epoch = pe->epoch;
    }
    pe->unanswered += pe->open_n;
    m->n_sent += pe->open_n;
    m->n_batches++;
    pe->open_n = 0;
    int rc = fpp__mpi_send(&m->link, pe->rank, &pe->open);
    if (rc)
        m->broken = true;
    return rc;
}

static void send_all_open(mpx *m)
{
    for (int p = 0; p < m->npeers; p++)
        send_open(m, p);
}

/* A peer that takes nothing more and is waited for no more. */
static bool gone(const peer *pe) { return pe->bye || pe->lost; }

/* The peer to send t to: the current one while it has credit, else the one with the most
 * credit (the rank that drained most), avoiding t->avoid_slot when another can take it. */
static int pick(mpx *m, const fpp__job *t)
{
    peer *cur = &m->peers[m->cur];
    if (cur->credit > 0 && !gone(cur) && cur->rank != t->avoid_slot)
        return m->cur;
    int best = -1, avoided = -1;
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        if (pe->credit <= 0 || gone(pe))
            continue;
        if (pe->rank == t->avoid_slot) {
            avoided = p;
            continue;
        }
        if (best < 0 || pe->credit > m->peers[best].credit)
            best = p;
    }
    if (best < 0)
        best = avoided;
    if (best >= 0)
        m->cur = best;
    return best;
}

/* No rank is left to run t, and none will come: taken as an ORPHAN entry, which the next poll
 * fails (FPP_CRASHED, so retries apply, each ending the same way) rather than hold it for
 * ever. */
static int orphan(mpx *m, fpp__job *t)
{
    uint32_t i;
    if (ent_alloc(m, &i))
        return FPP_ENOMEM;
    m->ent[i] = (entry){.task = t, .gen = m->ent[i].gen, .state = E_ORPHAN, .peer = -1};
    t->tag = i;
    t->slot = -1;
    m->norphans++;
    return 0;
}

static void fail_orphans(mpx *m)
{
    static const char why[] = "no rank left to run it: every serving rank was lost or stopped serving";
    for (uint32_t i = 0; i < m->nent && m->norphans > 0; i++) {
        entry *e = &m->ent[i];
        if (e->state != E_ORPHAN)
            continue;
        m->norphans--;
        fpp__job *t = e->task;
        ent_free(m, i);
        if (t)
            finish_task(m, t, FPP_CRASHED, 0, (const unsigned char *)why, sizeof why - 1);
    }
}

static int m_dispatch(fpp_executor *ex, fpp__job *t)
{
    mpx *m = ex->impl;
    if (m->broken)
        return FPP_ESYS;
    int p = pick(m, t);
    if (p < 0 && m->alive == 0)
        return orphan(m, t);
    if (p < 0)
        return 1;
    peer *pe = &m->peers[p];
    bool bulk = t->arg_len > FPP__MPI_INLINE_MAX;
    void *copy = NULL;
    if (bulk) {
        copy = fpp__mpi_big_get(&m->link, t->arg_len);
        if (!copy)
            return FPP_ENOMEM;
        memcpy(copy, t->arg, t->arg_len);
    }
    uint32_t i;
    if (ent_alloc(m, &i)) {
        fpp__mpi_big_put(&m->link, copy, t->arg_len);
        return FPP_ENOMEM;
    }
    if (pe->open_n == 0) {
        pe->open = fpp__mpi_buf_get(&m->link);
        if (fpp__mpi_batch_begin(&pe->open, FPP__MT_TASKS)) {
            ent_free(m, i);
            fpp__mpi_big_put(&m->link, copy, t->arg_len);
            return FPP_ENOMEM;
        }
        pe->open_since = fpp__now_ns();
    }
    fpp__mpi_task_rec rec = {
        .ticket = ticket_of(m, i),
        .id = t->id,
        .fn = (uint32_t)t->fn,
        .timeout_ms = t->timeout_ms,
        .len = t->arg_len,
        .flags = bulk ? FPP__REC_BULK : 0,
    };
    size_t off;
    if (fpp__mpi_batch_add_task(&pe->open, &rec, t->arg, &off)) {
        ent_free(m, i);
        fpp__mpi_big_put(&m->link, copy, t->arg_len);
        return FPP_ENOMEM;
    }
    m->ent[i] = (entry){.task = t, .gen = m->ent[i].gen, .state = E_OPEN, .peer = p, .rec_off = off};
    pe->open_idx[pe->open_n++] = i;
    pe->credit--;
    t->tag = i;
    t->slot = pe->rank;
    if (bulk) {
        int rc = send_open(m, p);
        if (rc == 0)
            rc = fpp__mpi_send_bulk(&m->link, pe->rank, copy, t->arg_len);
        else
            fpp__mpi_big_put(&m->link, copy, t->arg_len);
        if (rc)
            m->broken = true;
    } else if (pe->open_n >= FPP__MPI_BATCH_TASKS || pe->open.len >= FPP__MPI_BATCH_BYTES) {
        send_open(m, p);
    }
    return 0;
}

static void m_flush(fpp_executor *ex)
{
    mpx *m = ex->impl;
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        if (pe->open_n && pe->unanswered < 2 * (uint64_t)pe->workers)
            send_open(m, p);
    }
}

/* ------------------------------------------------------------- receiving */

static int broken(mpx *m, int from, const char *what)
{
    fpp__log(FPP_LOG_ERROR, "fpp_mpi: rank %d %s; the executor stops", from, what);
    m->broken = true;
    return FPP_ESYS;
}

static int on_result(mpx *m, int p, const fpp__mpi_result_rec *r, const unsigned char *bytes)
{
    int from = m->peers[p].rank;
    uint32_t i = (uint32_t)r->ticket;
    if (i >= m->nent || m->ent[i].gen != (uint32_t)(r->ticket >> 32) || m->ent[i].state != E_SENT ||
        m->ent[i].peer != p)
        return broken(m, from, "answered a task it does not hold");
    bool bulk = r->flags & FPP__REC_BULK;
    if (r->status < FPP_DONE || r->status > FPP_CANCELLED || (bulk && r->status != FPP_DONE) ||
        r->len > (r->status == FPP_DONE ? m->ex->opts.max_result_size : FPP__MPI_MSG_MAX))
        return broken(m, from, "sent a malformed result");
    m->n_results++;
    if (!bulk) {
        answered(m, i, (fpp_status)r->status, r->signo, bytes, (size_t)r->len);
        return 0;
    }
    rbulk *rb = malloc(sizeof *rb);
    if (!rb)
        return broken(m, from, "sent a result this process has no memory to receive");
    *rb = (rbulk){.b = {.dst = fpp__mpi_big_get(&m->link, (size_t)r->len), .len = (size_t)r->len, .cookie = i},
                  .peer = p};
    m->ent[i].state = E_BULK;
    /* With dst NULL the link receives into scratch and the task fails for want of memory. */
    int rc = fpp__mpi_recv_bulk(&m->link, from, &rb->b);
    if (rc)
        m->broken = true;
    return rc;
}

/* Every SENT entry of peer p sent before epoch is answered by this acknowledgement. */
static void on_cancel_done(mpx *m, int p, uint32_t epoch)
{
    peer *pe = &m->peers[p];
    for (uint32_t i = 0; i < m->nent; i++) {
        entry *e = &m->ent[i];
        if (e->state == E_SENT && e->peer == p && (int32_t)(e->epoch - epoch) < 0) {
            if (e->task) /* never: a cancel-all abandons everything it covers */
                cancel_one(m, e->task);
            pe->unanswered--;
            ent_free(m, i);
        }
    }
    pe->acked = epoch;
}

/* Peer p stopped serving on its own (it ran out of memory, or rank 0 sent it something it
 * could not read): its tasks fail, and it gets no more. The rest go on. */
static void stopped_serving(mpx *m, int p, int why)
{
    peer *pe = &m->peers[p];
    m->alive--;
    fpp__log(FPP_LOG_ERROR, "fpp_mpi: rank %d (%s) stopped serving: %s; its tasks fail, the other ranks go on",
             pe->rank, pe->host, fpp_strerror(why));
    for (uint32_t i = 0; i < m->nent; i++) {
        entry *e = &m->ent[i];
        if (e->state == E_FREE || e->state == E_BULK || e->peer != p)
            continue;
        if (e->task) {
            fpp__job *t = e->task;
            e->task = NULL;
            char msg[160 + FPP__NAME_MAX], name[FPP__NAME_MAX];
            fpp__job_name(t, name, sizeof name);
            int n = snprintf(msg, sizeof msg, "rank %d stopped serving (%s) while it held %s", pe->rank,
                             fpp_strerror(why), name);
            finish_task(m, t, FPP_CRASHED, 0, (const unsigned char *)msg, n > 0 ? (size_t)n : 0);
        }
        if (e->state == E_SENT)
            pe->unanswered--;
        ent_free(m, i);
    }
    pe->open_n = 0;
    fpp__mpi_buf_put(&m->link, &pe->open);
    pe->credit = 0;
}

static void set_restarts(mpx *m, int p, uint64_t restarts)
{
    m->peers[p].restarts = restarts;
    uint64_t sum = 0;
    for (int q = 0; q < m->npeers; q++)
        sum += m->peers[q].restarts;
    atomic_store_explicit(&m->ex->restarts, sum, memory_order_relaxed);
}

/* A bulk receive from a lost rank was abandoned: its entry is failed by lose_rank
 * (or was freed at the loss already). */
static void bulk_dropped(void *owner, fpp__mpi_bulk *b)
{
    (void)owner;
    free((rbulk *)b);
}

/* A message from a rank declared lost: dropped unread (its entries are gone). The first one
 * proves it alive: it is told, once, to stop serving (a send nobody waits for), so that it does
 * not serve no one for ever. */
static void late(mpx *m, int p)
{
    peer *pe = &m->peers[p];
    m->n_late++;
    if (pe->late_said)
        return;
    pe->late_said = true;
    fpp__log(FPP_LOG_WARN, "fpp_mpi: rank %d (%s, pid %d), declared lost, is alive after all: what it sends is "
                           "dropped (its tasks ran elsewhere), and it is told to stop serving",
             pe->rank, pe->host, pe->pid);
    if (fpp__mpi_send_ctl(&m->link, pe->rank, FPP__MT_LOST, 0, 0, NULL, 0) == 0)
        fpp__mpi_link_abandon(&m->link, pe->rank, bulk_dropped);
}

static int handle(mpx *m, int from)
{
    int p = from - 1;
    fpp__mpi_hdr h;
    fpp__mpi_rd rd;
    if (p >= 0 && p < m->npeers && m->peers[p].lost) {
        late(m, p);
        return 0;
    }
    if (p < 0 || p >= m->npeers || fpp__mpi_msg_open(&rd, m->rx.p, m->rx.len, &h))
        return broken(m, from, "sent a malformed message");
    peer *pe = &m->peers[p];
    pe->heard = m->last_look;
    if (h.credit > FPP__MPI_WINDOW_MAX)
        return broken(m, from, "granted more credit than a window holds");
    pe->credit += h.credit;
    switch (h.type) {
    case FPP__MT_RESULTS: {
        set_restarts(m, p, h.aux);
        fpp__mpi_result_rec r;
        const unsigned char *bytes;
        int rc;
        while ((rc = fpp__mpi_next_result(&rd, &r, &bytes)) == 1)
            if (on_result(m, p, &r, bytes))
                return FPP_ESYS;
        return rc == 0 ? 0 : broken(m, from, "sent a malformed batch of results");
    }
    case FPP__MT_CREDIT:
        set_restarts(m, p, h.aux);
        return 0;
    case FPP__MT_CANCEL_DONE:
        on_cancel_done(m, p, (uint32_t)h.aux);
        return 0;
    case FPP__MT_BYE:
        pe->bye = true;
        if (!m->stopping)
            stopped_serving(m, p, (int)h.aux);
        return 0;
    case FPP__MT_BEAT:
        set_restarts(m, p, h.aux);
        return 0;
    default:
        return broken(m, from, "sent a message only rank 0 sends");
    }
}

/* Peer p was silent for the rank timeout: lost (mpi/mpi_int.h). Its requests are abandoned
 * first (a result arriving in bulk included), then every entry it held is failed and freed.
 * Nothing is sent to it (it may be dead: over TCP, Open MPI would try to connect to it). */
static void lose_rank(mpx *m, int p, int64_t silent_ns)
{
    peer *pe = &m->peers[p];
    pe->lost = true;
    m->alive--;
    atomic_fetch_add_explicit(&m->ex->ranks_lost, 1, memory_order_relaxed);
    int abandoned = fpp__mpi_link_abandon(&m->link, pe->rank, bulk_dropped);
    uint64_t held = 0;
    char msg[192 + FPP__NAME_MAX];
    for (uint32_t i = 0; i < m->nent; i++) {
        entry *e = &m->ent[i];
        if (e->state == E_FREE || e->state == E_ORPHAN || e->peer != p)
            continue;
        held++;
        fpp__job *t = e->task;
        ent_free(m, i);
        if (t) {
            char name[FPP__NAME_MAX];
            fpp__job_name(t, name, sizeof name);
            int n = snprintf(msg, sizeof msg, "rank %d (%s, pid %d) lost: silent for %lld ms while it held %s",
                             pe->rank, pe->host, pe->pid, (long long)(silent_ns / 1000000), name);
            finish_task(m, t, FPP_CRASHED, 0, (const unsigned char *)msg, n > 0 ? (size_t)n : 0);
        }
    }
    pe->open_n = 0;
    fpp__mpi_buf_put(&m->link, &pe->open);
    pe->credit = 0;
    pe->unanswered = 0;
    fpp__log(FPP_LOG_ERROR, "fpp_mpi: rank %d (%s, pid %d) lost: nothing heard from it for %lld ms (rank timeout "
                            "%lld ms); its %llu task(s) in flight end FPP_CRASHED and run on other ranks while "
                            "retries allow; %d request(s) toward it abandoned; %d rank(s) left",
             pe->rank, pe->host, pe->pid, (long long)(silent_ns / 1000000), (long long)(m->timeout_ns / 1000000),
             (unsigned long long)held, abandoned, m->alive);
}

static void check_silence(mpx *m)
{
    int64_t now = fpp__now_ns();
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        if (gone(pe))
            continue;
        int64_t since = pe->heard > m->watch_from ? pe->heard : m->watch_from;
        if (now - since >= m->timeout_ns)
            lose_rank(m, p, now - pe->heard);
    }
}

/* Completes requests and takes every waiting message; then, with a rank timeout, looks for
 * ranks silent too long. */
static int progress(mpx *m)
{
    m->heard = false;
    if (m->broken)
        return FPP_ESYS;
    int64_t now = fpp__now_ns();
    if (now - m->last_look >= FPP__MPI_BEAT_NS)
        m->watch_from = now; /* back from elsewhere: what was sent meanwhile may be unread yet */
    m->last_look = now;
    if (fpp__mpi_link_progress(&m->link) < 0) {
        m->broken = true;
        return FPP_ESYS;
    }
    for (;;) {
        int from = -1;
        int rc = fpp__mpi_recv_ctl(&m->link, MPI_ANY_SOURCE, &m->rx, &from);
        if (rc < 0) {
            m->broken = true;
            return rc;
        }
        if (rc == 0)
            break;
        m->heard = true;
        m->n_msgs++;
        if (handle(m, from))
            return FPP_ESYS;
    }
    if (m->timeout_ns)
        check_silence(m);
    return m->broken ? FPP_ESYS : 0;
}

static int m_poll(fpp_executor *ex, int64_t deadline)
{
    mpx *m = ex->impl;
    if (atomic_exchange(&ex->poked, 0))
        deadline = 0;
    m->finished = 0;
    if (m->norphans) {
        fail_orphans(m);
        deadline = 0;
    }
    int64_t now = fpp__now_ns();
    int rc = 0;
    if (deadline != 0 || now - m->last_look >= FPP__MPI_PROGRESS_GAP_NS)
        rc = progress(m);
    else
        m->heard = false;
    if (rc)
        return rc;
    for (int p = 0; p < m->npeers; p++)
        if (m->peers[p].open_n && now - m->peers[p].open_since >= FPP__MPI_FLUSH_AGE_NS)
            send_open(m, p);
    if (m->finished == 0 && !m->heard && deadline != 0) {
        send_all_open(m); /* about to wait: nobody else would send them */
        fpp__mpi_nap_begin(&m->nap);
        for (;;) {
            fpp__mpi_nap_step(&m->nap, &ex->poke, deadline);
            if (atomic_exchange(&ex->poked, 0))
                break;
            if ((rc = progress(m)) != 0)
                return rc;
            if (m->finished || m->heard) {
                fpp__mpi_nap_reset(&m->nap); /* the spin learns how long this took */
                break;
            }
            if (deadline != INT64_MAX && fpp__now_ns() >= deadline)
                break;
        }
    }
    return m->finished;
}

/* ------------------------------------------------------------- stopping */

/* Drops every open batch: its rank never sees those tasks, so their entries are free and the
 * credit spent on them comes back. */
static void drop_open(mpx *m)
{
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        for (uint32_t k = 0; k < pe->open_n; k++)
            ent_free(m, pe->open_idx[k]);
        pe->credit += pe->open_n;
        pe->open_n = 0;
        fpp__mpi_buf_put(&m->link, &pe->open);
    }
}

/* ORPHAN entries whose task was taken away (cancelled, or the task manager is gone). */
static void drop_orphans(mpx *m)
{
    for (uint32_t i = 0; i < m->nent && m->norphans > 0; i++)
        if (m->ent[i].state == E_ORPHAN && !m->ent[i].task) {
            m->norphans--;
            ent_free(m, i);
        }
}

static void m_cancel(fpp_executor *ex, bool wait)
{
    mpx *m = ex->impl;
    for (uint32_t i = 0; i < m->nent; i++) {
        entry *e = &m->ent[i];
        if (e->state != E_FREE && e->task) {
            fpp__job *t = e->task;
            e->task = NULL;
            cancel_one(m, t);
        }
    }
    drop_orphans(m);
    drop_open(m);
    if (m->broken)
        return;
    bool any = false;
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        if (pe->unanswered == 0 || gone(pe))
            continue;
        pe->epoch++;
        if (fpp__mpi_send_ctl(&m->link, pe->rank, FPP__MT_CANCEL_ALL, 0, pe->epoch, NULL, 0)) {
            m->broken = true;
            return;
        }
        any = true;
    }
    /* Ctrl-C: return once every rank has stopped what it ran for us. */
    fpp__mpi_nap_begin(&m->nap);
    while (wait && any && !m->broken) {
        any = false;
        for (int p = 0; p < m->npeers; p++)
            any = any || (!gone(&m->peers[p]) && m->peers[p].acked != m->peers[p].epoch);
        if (!any || progress(m))
            break;
        if (!m->heard)
            fpp__mpi_nap_step(&m->nap, &m->ex->poke, INT64_MAX);
    }
}

static int m_cancel_task(fpp_executor *ex, fpp__job *t)
{
    mpx *m = ex->impl;
    uint32_t i = t->tag;
    if (i >= m->nent || m->ent[i].task != t)
        return 0;
    entry *e = &m->ent[i];
    if (e->state == E_OPEN) {
        /* Still in an unsent batch: the rank will see the flag, skip it and say so. */
        fpp__mpi_task_rec *rec = (fpp__mpi_task_rec *)(m->peers[e->peer].open.p + e->rec_off);
        rec->flags |= FPP__REC_CANCELLED;
    } else if (e->state == E_ORPHAN) {
        m->norphans--;
        ent_free(m, i);
    } else if (e->state == E_SENT && !m->broken) {
        uint64_t tk = ticket_of(m, i);
        if (fpp__mpi_send_ctl(&m->link, m->peers[e->peer].rank, FPP__MT_CANCEL, 0, 0, &tk, 1))
            m->broken = true;
    }
    e->task = NULL;
    cancel_one(m, t);
    return 1;
}

static void m_wake(fpp_executor *ex) { fpp__exec_poke(ex); }

static void free_mpx(mpx *m)
{
    for (int p = 0; m->peers && p < m->npeers; p++) {
        fpp__mpi_buf_free(&m->peers[p].open);
        free(m->peers[p].open_idx);
    }
    fpp__mpi_link_fini(&m->link);
    fpp__mpi_buf_free(&m->rx);
    free(m->peers);
    free(m->ent);
    free(m);
}

static void m_destroy(fpp_executor *ex, bool owner)
{
    mpx *m = ex->impl;
    if (!m)
        return;
    ex->impl = NULL;
    fpp__log(FPP_LOG_DEBUG, "fpp_mpi: %llu task(s) sent in %llu batch(es); %llu result(s) in %llu message(s); "
                            "%llu late message(s) from lost ranks dropped",
             (unsigned long long)m->n_sent, (unsigned long long)m->n_batches, (unsigned long long)m->n_results,
             (unsigned long long)m->n_msgs, (unsigned long long)m->n_late);
    int fin = 0;
    MPI_Finalized(&fin);
    if (owner && fin) {
        fpp__log(FPP_LOG_ERROR, "fpp_executor_free: MPI was finalised already, so the other ranks cannot be told "
                                "to stop; free the executor before MPI_Finalize");
    } else if (owner && m->comm != MPI_COMM_NULL) {
        for (uint32_t i = 0; i < m->nent; i++)
            m->ent[i].task = NULL; /* the task manager is gone; nothing is reported any more */
        drop_orphans(m);
        drop_open(m);
        m->stopping = true;
        for (int p = 0; p < m->npeers && !m->broken; p++)
            if (!gone(&m->peers[p]) &&
                fpp__mpi_send_ctl(&m->link, m->peers[p].rank, FPP__MT_STOP, 0, 0, NULL, 0))
                m->broken = true;
        int64_t warn_at = fpp__now_ns() + STOP_WARN_NS;
        fpp__mpi_nap_begin(&m->nap);
        while (!m->broken) {
            int waiting = -1;
            for (int p = 0; p < m->npeers && waiting < 0; p++)
                if (!gone(&m->peers[p]))
                    waiting = p;
            if (waiting < 0 && fpp__mpi_link_idle(&m->link))
                break;
            if (progress(m))
                break;
            if (waiting >= 0 && fpp__now_ns() > warn_at) {
                fpp__log(FPP_LOG_WARN, "fpp_executor_free: waiting for rank %d (%s, pid %d) to stop",
                         m->peers[waiting].rank, m->peers[waiting].host, m->peers[waiting].pid);
                warn_at = INT64_MAX;
            }
            if (!m->heard)
                fpp__mpi_nap_step(&m->nap, NULL, INT64_MAX);
        }
        if (!m->broken)
            MPI_Comm_free(&m->comm);
    }
    free_mpx(m);
}

static const fpp__exec_ops mpi_ops = {
    .kind = "mpi",
    .dispatch = m_dispatch,
    .flush = m_flush,
    .poll = m_poll,
    .cancel = m_cancel,
    .wake = m_wake,
    .destroy = m_destroy,
    .cancel_task = m_cancel_task,
    .unpin = NULL,
};

/* ----------------------------------------------------------------- start */

/* fpp__executor_create gives start() only the executor: the communicator and the caller's own
 * options (before defaults: workers 0 means each rank's own count) travel here. */
static _Thread_local struct {
    MPI_Comm comm;
    const fpp_executor_opts *raw;
    unsigned rank_timeout_ms;
    bool started;
} pending;

static size_t chunk_size(void)
{
    const char *s = FPP__TEST_ENV("FPP_MPI_CHUNK");
    if (s && *s) {
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end == '\0' && v >= 4096 && v <= FPP__MPI_CHUNK_MAX)
            return (size_t)v;
        fpp__log(FPP_LOG_WARN, "fpp_mpi_executor: FPP_MPI_CHUNK=%s ignored (4096..%zu)", s, FPP__MPI_CHUNK_MAX);
    }
    return FPP__MPI_CHUNK;
}

static int mpi_start(fpp_executor *ex)
{
    pending.started = true;
    static const fpp_executor_opts zero;
    const fpp_executor_opts *raw = pending.raw ? pending.raw : &zero;
    int size = 0;
    MPI_Comm_size(pending.comm, &size);
    /* Everything that can fail for want of memory is had before the meeting: after it, the
     * ranks serve and could only be stopped by the executor we failed to build. */
    mpx *m = calloc(1, sizeof *m);
    peer *peers = calloc((size_t)size, sizeof *peers);
    bool ok = m && peers;
    for (int p = 0; ok && p < size - 1; p++)
        ok = (peers[p].open_idx = malloc(FPP__MPI_BATCH_TASKS * sizeof *peers[p].open_idx)) != NULL;
    if (!ok) {
        for (int p = 0; peers && p < size - 1; p++)
            free(peers[p].open_idx);
        free(peers);
        free(m);
        fpp__mpi_join_refuse(pending.comm, FPP_ENOMEM);
        return FPP_ENOMEM;
    }
    m->ex = ex;
    m->free_ent = NO_ENTRY;
    m->npeers = size - 1;
    m->peers = peers;
    m->comm = MPI_COMM_NULL;
    size_t chunk = chunk_size();
    fpp__mpi_hello *hellos = NULL;
    int rc = fpp__mpi_join_root(pending.comm, raw, &ex->opts, chunk, pending.rank_timeout_ms, &m->comm, &hellos,
                                &size);
    if (rc) {
        m->comm = MPI_COMM_NULL;
        free_mpx(m);
        return rc;
    }
    fpp__mpi_link_init(&m->link, m->comm, chunk, bulk_done, m);
    long total = 0;
    for (int p = 0; p < m->npeers; p++) {
        peer *pe = &m->peers[p];
        const fpp__mpi_hello *h = &hellos[p + 1];
        pe->rank = p + 1;
        pe->workers = h->workers;
        pe->pid = h->pid;
        memcpy(pe->host, h->host, sizeof pe->host);
        total += h->workers;
    }
    free(hellos);
    m->alive = m->npeers;
    m->timeout_ns = (int64_t)pending.rank_timeout_ms * 1000000;
    m->last_look = m->watch_from = fpp__now_ns();
    for (int p = 0; p < m->npeers; p++)
        m->peers[p].heard = m->last_look;
    ex->impl = m;
    ex->ops = &mpi_ops;
    /* What the task manager sizes its defaults by: all workers, and every rank's window. */
    ex->opts.workers = total > INT32_MAX ? INT32_MAX : (int)total;
    ex->opts.queue_capacity = (size_t)m->npeers * FPP__MPI_WINDOW_MAX;
    fpp__log(FPP_LOG_DEBUG, "fpp_mpi_executor: %d rank(s) serving, %ld worker(s) in all", m->npeers, total);
    return 0;
}

/* Open MPI passes mpirun's MCA options to the ranks in the environment: say when they and the
 * rank timeout do not go together (README, "Across machines"). Silent under other MPIs. */
static bool mca_on(const char *name)
{
    const char *v = getenv(name);
    return v && (v[0] == '1' || v[0] == 't' || v[0] == 'T' || v[0] == 'y' || v[0] == 'Y');
}

static void check_launch(unsigned rank_timeout_ms)
{
    if (!getenv("OMPI_COMM_WORLD_SIZE"))
        return;
    bool recovery = mca_on("OMPI_MCA_orte_enable_recovery");
    if (recovery && !rank_timeout_ms)
        fpp__log(FPP_LOG_WARN, "fpp_mpi_executor: mpirun --enable-recovery keeps the job going when a rank dies, "
                               "but no rank timeout is set (fpp_mpi_executor_ex, rank_timeout_ms): rank 0 would wait "
                               "for a dead rank's tasks for ever");
    else if (recovery && !mca_on("OMPI_MCA_async_mpi_finalize"))
        fpp__log(FPP_LOG_WARN, "fpp_mpi_executor: after a lost rank, MPI_Finalize may hang on the others without "
                               "mpirun --mca async_mpi_finalize 1");
    else if (!recovery && rank_timeout_ms)
        fpp__log(FPP_LOG_INFO, "fpp_mpi_executor: a rank timeout, but mpirun was not given --enable-recovery: a rank "
                               "that dies still ends the job (a stopped one is survived)");
}

int fpp_mpi_executor(fpp_executor **out, MPI_Comm comm, const fpp_executor_opts *opts)
{
    return fpp_mpi_executor_ex(out, comm, opts, NULL);
}

int fpp_mpi_executor_ex(fpp_executor **out, MPI_Comm comm, const fpp_executor_opts *opts, const fpp_mpi_opts *mopts)
{
    if (!out) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: NULL out pointer");
        return FPP_EINVAL;
    }
    *out = NULL;
    int rc = fpp__mpi_usable("fpp_mpi_executor");
    if (rc)
        return rc;
    if (comm == MPI_COMM_NULL) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: MPI_COMM_NULL");
        return FPP_EINVAL;
    }
    int rank = -1, size = 0, inter = 0;
    MPI_Comm_test_inter(comm, &inter);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (inter || rank != 0 || size < 2) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor: %s",
                 inter      ? "an inter-communicator; give an intra-communicator"
                 : rank != 0 ? "call it on rank 0 only; the other ranks call fpp_mpi_serve"
                             : "the communicator has no rank but this one to run tasks");
        return FPP_EINVAL;
    }
    fpp__mpi_guard_setup();
    unsigned rt = mopts ? mopts->rank_timeout_ms : 0;
    if (rt > 0 && rt < FPP__MPI_RANK_TIMEOUT_MIN_MS) {
        fpp__log(FPP_LOG_ERROR, "fpp_mpi_executor_ex: rank_timeout_ms %u is too short: 0 (none) or at least %u "
                                "(heartbeats go every %d ms)",
                 rt, FPP__MPI_RANK_TIMEOUT_MIN_MS, (int)(FPP__MPI_BEAT_NS / 1000000));
        fpp__mpi_join_refuse(comm, FPP_EINVAL); /* the ranks wait in the meeting */
        return FPP_EINVAL;
    }
    check_launch(rt);
    pending.comm = comm;
    pending.raw = opts;
    pending.rank_timeout_ms = rt;
    pending.started = false;
    rc = fpp__executor_create(out, opts, mpi_start);
    if (rc && !pending.started)
        fpp__mpi_join_refuse(comm, rc); /* bad options: the ranks wait in the meeting all the same */
    pending.raw = NULL;
    return rc;
}
