/* mpi/wire.c: what crosses between ranks and how: the batch layout (a header, then records,
 * each followed by its inline bytes padded to 8), reading a message back with every record
 * checked against the message's length, bulk transfers cut into chunks MPI's int counts can
 * carry, the set of nonblocking requests in flight, and naps.
 *
 * Invariant of a link: reqs[0..n) are the requests started and not yet seen complete, each
 * with its peer; what[i] owns the send buffer of a send, or points to the fpp__mpi_bulk a
 * receive chunk fills (that bulk lives until its `left` reaches 0 and done() was called). A
 * request leaves the link either complete, or abandoned (fpp__mpi_link_abandon, a lost peer;
 * a send when memory ran out): freed with MPI_Request_free, never waited for, the memory MPI
 * may still touch kept in the graveyard until the process ends. No send is ever waited for (a
 * peer may be dead). A link is used by one thread, the one driving its executor or serve
 * loop; the graveyard is shared, under its lock. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/mpi_int.h"

#define PAD8(n) (((n) + 7u) & ~(size_t)7u)

/* -------------------------------------------------------------- buffers */

int fpp__mpi_buf_reserve(fpp__mpi_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return FPP_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void fpp__mpi_buf_free(fpp__mpi_buf *b)
{
    free(b->p);
    *b = (fpp__mpi_buf){0};
}

int fpp__mpi_batch_begin(fpp__mpi_buf *b, uint16_t type)
{
    b->len = 0;
    if (fpp__mpi_buf_reserve(b, sizeof(fpp__mpi_hdr)))
        return FPP_ENOMEM;
    fpp__mpi_hdr h = {.magic = FPP__MPI_MAGIC, .type = type};
    memcpy(b->p, &h, sizeof h);
    b->len = sizeof h;
    return 0;
}

static int add(fpp__mpi_buf *b, const void *rec, size_t rec_size, const void *bytes, size_t n)
{
    size_t padded = PAD8(n);
    if (fpp__mpi_buf_reserve(b, rec_size + padded))
        return FPP_ENOMEM;
    memcpy(b->p + b->len, rec, rec_size);
    b->len += rec_size;
    if (n)
        memcpy(b->p + b->len, bytes, n);
    memset(b->p + b->len + n, 0, padded - n);
    b->len += padded;
    fpp__mpi_batch_hdr(b)->count++;
    return 0;
}

int fpp__mpi_batch_add_task(fpp__mpi_buf *b, const fpp__mpi_task_rec *r, const void *arg, size_t *rec_off)
{
    size_t off = b->len;
    int rc = add(b, r, sizeof *r, arg, (r->flags & FPP__REC_BULK) ? 0 : (size_t)r->len);
    if (rc == 0 && rec_off)
        *rec_off = off;
    return rc;
}

int fpp__mpi_batch_add_result(fpp__mpi_buf *b, const fpp__mpi_result_rec *r, const void *data)
{
    return add(b, r, sizeof *r, data, (r->flags & FPP__REC_BULK) ? 0 : (size_t)r->len);
}

/* -------------------------------------------------------------- reading */

int fpp__mpi_msg_open(fpp__mpi_rd *rd, const void *msg, size_t len, fpp__mpi_hdr *h)
{
    if (len < sizeof *h)
        return FPP_EINVAL;
    memcpy(h, msg, sizeof *h);
    if (h->magic != FPP__MPI_MAGIC || h->type < FPP__MT_TASKS || h->type > FPP__MT_LAST)
        return FPP_EINVAL;
    /* Every record is at least 8 bytes: a count the message cannot hold is a lie. */
    if (h->count > (len - sizeof *h) / 8)
        return FPP_EINVAL;
    *rd = (fpp__mpi_rd){.p = msg, .len = len, .off = sizeof *h, .left = h->count};
    return 0;
}

/* Takes a record of rec_size bytes and, unless bulk, its n inline bytes. */
static int take(fpp__mpi_rd *rd, void *rec, size_t rec_size, const unsigned char **bytes)
{
    if (rd->left == 0)
        return 0;
    if (rd->len - rd->off < rec_size)
        return FPP_EINVAL;
    memcpy(rec, rd->p + rd->off, rec_size);
    rd->off += rec_size;
    rd->left--;
    *bytes = rd->p + rd->off;
    return 1;
}

static int skip_bytes(fpp__mpi_rd *rd, uint64_t n, bool bulk, const unsigned char **bytes)
{
    if (bulk) {
        *bytes = NULL;
        return 1;
    }
    if (n > rd->len - rd->off || PAD8(n) > rd->len - rd->off)
        return FPP_EINVAL;
    rd->off += PAD8(n);
    return 1;
}

int fpp__mpi_next_task(fpp__mpi_rd *rd, fpp__mpi_task_rec *r, const unsigned char **bytes)
{
    int rc = take(rd, r, sizeof *r, bytes);
    if (rc <= 0)
        return rc;
    return skip_bytes(rd, r->len, r->flags & FPP__REC_BULK, bytes);
}

int fpp__mpi_next_result(fpp__mpi_rd *rd, fpp__mpi_result_rec *r, const unsigned char **bytes)
{
    int rc = take(rd, r, sizeof *r, bytes);
    if (rc <= 0)
        return rc;
    return skip_bytes(rd, r->len, r->flags & FPP__REC_BULK, bytes);
}

int fpp__mpi_next_ticket(fpp__mpi_rd *rd, uint64_t *ticket)
{
    const unsigned char *unused;
    return take(rd, ticket, sizeof *ticket, &unused);
}

/* --------------------------------------------------------------- messages */

size_t fpp__mpi_rename_task(char *out, size_t cap, const char *msg, size_t len, int64_t id, const char *name)
{
    char want[32];
    int wn = snprintf(want, sizeof want, "task %lld", (long long)id);
    size_t o = 0, nl = strlen(name);
    for (size_t i = 0; i < len && msg[i] && o < cap - 1;) {
        const char *c = msg + i;
        bool at_word = i == 0 || c[-1] == ' ' || c[-1] == '(';
        if (at_word && len - i >= (size_t)wn && strncmp(c, want, (size_t)wn) == 0 &&
            !(i + (size_t)wn < len && c[wn] >= '0' && c[wn] <= '9')) {
            size_t k = FPP__MIN(nl, cap - 1 - o);
            memcpy(out + o, name, k);
            o += k;
            i += (size_t)wn;
        } else {
            out[o++] = *c;
            i++;
        }
    }
    out[o] = '\0';
    return o;
}

size_t fpp__mpi_rank_message(char *out, size_t cap, int rank, const char *msg, int64_t lid, int64_t gid)
{
    char gname[32];
    snprintf(gname, sizeof gname, "task %lld", (long long)gid);
    int n0 = snprintf(out, cap, "rank %d: ", rank);
    size_t o = n0 < 0 ? 0 : FPP__MIN((size_t)n0, cap - 1);
    return o + fpp__mpi_rename_task(out + o, cap - o, msg, strlen(msg), lid, gname);
}

/* ------------------------------------------------------------- requests */

int fpp__mpi_check(int err, const char *call, int peer)
{
    if (err == MPI_SUCCESS)
        return 0;
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(err, s, &n) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error %d", err);
    fpp__log(FPP_LOG_ERROR, "%s(rank %d): %s", call, peer, s);
    return FPP_ESYS;
}

void fpp__mpi_link_init(fpp__mpi_link *l, MPI_Comm comm, size_t chunk,
                        void (*done)(void *owner, fpp__mpi_bulk *b), void *owner)
{
    memset(l, 0, sizeof *l);
    l->comm = comm;
    MPI_Comm_rank(comm, &l->rank);
    l->chunk = chunk;
    l->done = done;
    l->owner = owner;
}

void fpp__mpi_link_fini(fpp__mpi_link *l)
{
    for (int i = 0; i < l->n; i++) /* only after an error: MPI may still read them; leak */
        l->what[i] = NULL;
    for (int i = 0; i < l->nspare; i++)
        fpp__mpi_buf_free(&l->spare[i]);
    free(l->reqs);
    free(l->what);
    free(l->kind);
    free(l->peer);
    free(l->done_idx);
    free(l->scratch);
    for (int c = 0; c < FPP__MPI_BIG_CLASSES; c++)
        for (int k = 0; k < l->nbig[c]; k++)
            free(l->big[c][k]);
    memset(l, 0, sizeof *l);
}

static int big_class(size_t n)
{
    if (n < ((size_t)1 << FPP__MPI_BIG_MIN_SHIFT))
        return -1;
    int c = 0;
    while (c < FPP__MPI_BIG_CLASSES && ((size_t)1 << (FPP__MPI_BIG_MIN_SHIFT + c)) < n)
        c++;
    return c < FPP__MPI_BIG_CLASSES ? c : -1;
}

void *fpp__mpi_big_get(fpp__mpi_link *l, size_t n)
{
    int c = big_class(n);
    if (c < 0)
        return malloc(n ? n : 1);
    if (l->nbig[c] > 0) {
        l->big_held -= (size_t)1 << (FPP__MPI_BIG_MIN_SHIFT + c);
        return l->big[c][--l->nbig[c]];
    }
    return malloc((size_t)1 << (FPP__MPI_BIG_MIN_SHIFT + c));
}

void fpp__mpi_big_put(fpp__mpi_link *l, void *p, size_t n)
{
    int c = big_class(n);
    size_t cap = c < 0 ? 0 : (size_t)1 << (FPP__MPI_BIG_MIN_SHIFT + c);
    if (p && c >= 0 && l->nbig[c] < FPP__MPI_BIG_PER_CLASS && l->big_held + cap <= FPP__MPI_BIG_HELD) {
        l->big[c][l->nbig[c]++] = p;
        l->big_held += cap;
        return;
    }
    free(p);
}

fpp__mpi_buf fpp__mpi_buf_get(fpp__mpi_link *l)
{
    if (l->nspare > 0)
        return l->spare[--l->nspare];
    return (fpp__mpi_buf){0};
}

void fpp__mpi_buf_put(fpp__mpi_link *l, fpp__mpi_buf *b)
{
    if (b->p && l->nspare < (int)(sizeof l->spare / sizeof l->spare[0]) && b->cap <= 4 * FPP__MPI_BATCH_BYTES) {
        b->len = 0;
        l->spare[l->nspare++] = *b;
    } else {
        fpp__mpi_buf_free(b);
    }
    *b = (fpp__mpi_buf){0};
}

/* What a request's `what` is. */
enum { W_SEND_BUF = 0, W_RECV_BULK = 1, W_SEND_BULK = 2 };

static void completed(fpp__mpi_link *l, void *what, int kind)
{
    if (kind == W_RECV_BULK) {
        fpp__mpi_bulk *b = what;
        if (--b->left == 0)
            l->done(l->owner, b);
    } else if (kind == W_SEND_BULK) {
        fpp__mpi_bulk *b = what;
        if (--b->left == 0) {
            fpp__mpi_big_put(l, b->dst, b->len);
            free(b);
        }
    } else if (what) {
        fpp__mpi_buf *held = what;
        fpp__mpi_buf_put(l, held);
        free(held);
    }
}

/* The graveyard: memory of abandoned requests, kept (and reachable, for leak checkers) until
 * the process ends, since MPI may read or write it until then. Bounded by what was in flight
 * toward the ranks lost. Any thread (a process may drive several links). */
static pthread_mutex_t grave_lock = PTHREAD_MUTEX_INITIALIZER;
static void **grave;
static size_t ngrave, grave_cap;

static void bury(void *p)
{
    pthread_mutex_lock(&grave_lock);
    for (size_t i = ngrave; i-- > 0 && i + 8 >= ngrave;)
        if (grave[i] == p) { /* chunks of one transfer share their bulk */
            pthread_mutex_unlock(&grave_lock);
            return;
        }
    if (ngrave == grave_cap) {
        size_t cap = grave_cap ? 2 * grave_cap : 64;
        void **g = realloc(grave, cap * sizeof *g);
        if (!g) { /* unreachable then, never freed: the same for MPI */
            pthread_mutex_unlock(&grave_lock);
            return;
        }
        grave = g;
        grave_cap = cap;
    }
    grave[ngrave++] = p;
    pthread_mutex_unlock(&grave_lock);
}

static int track(fpp__mpi_link *l, MPI_Request r, void *what, int kind, int peer)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        MPI_Request *reqs = realloc(l->reqs, (size_t)cap * sizeof *reqs);
        if (reqs)
            l->reqs = reqs;
        void **w = realloc(l->what, (size_t)cap * sizeof *w);
        if (w)
            l->what = w;
        unsigned char *ir = realloc(l->kind, (size_t)cap);
        if (ir)
            l->kind = ir;
        int *di = realloc(l->done_idx, (size_t)cap * sizeof *di);
        if (di)
            l->done_idx = di;
        int *pe = realloc(l->peer, (size_t)cap * sizeof *pe);
        if (pe)
            l->peer = pe;
        if (!reqs || !w || !ir || !di || !pe) {
            /* Out of memory, the request started. A send is left to MPI (its peer may be
             * dead: never wait on it), its memory kept; a receive must be seen complete, so
             * it is waited for here. */
            if (kind != W_RECV_BULK) {
                MPI_Request_free(&r);
                bury(what);
                return 0;
            }
            MPI_Wait(&r, MPI_STATUS_IGNORE);
            completed(l, what, kind);
            return 0;
        }
        l->cap = cap;
    }
    l->reqs[l->n] = r;
    l->what[l->n] = what;
    l->kind[l->n] = (unsigned char)kind;
    l->peer[l->n] = peer;
    l->n++;
    return 0;
}

int fpp__mpi_send(fpp__mpi_link *l, int dest, fpp__mpi_buf *b)
{
    MPI_Request r;
    if (b->len > (size_t)INT32_MAX) { /* never: batches stay far below */
        fpp__log(FPP_LOG_ERROR, "fpp_mpi: a batch of %zu bytes", b->len);
        fpp__mpi_buf_free(b);
        return FPP_ESYS;
    }
    int rc = fpp__mpi_check(MPI_Isend(b->p, (int)b->len, MPI_BYTE, dest, FPP__MPI_TAG_CTL, l->comm, &r),
                            "MPI_Isend", dest);
    if (rc) {
        fpp__mpi_buf_free(b);
        return rc;
    }
    l->last_send_ns = fpp__now_ns();
    /* The request owns the buffer (its capacity too, for reuse) until it completes. */
    fpp__mpi_buf *held = malloc(sizeof *held);
    if (!held) { /* left to MPI, never waited for (its peer may be dead), its bytes kept */
        MPI_Request_free(&r);
        bury(b->p);
        *b = (fpp__mpi_buf){0};
        return 0;
    }
    *held = *b;
    *b = (fpp__mpi_buf){0};
    return track(l, r, held, W_SEND_BUF, dest);
}

int fpp__mpi_send_ctl(fpp__mpi_link *l, int dest, uint16_t type, uint32_t credit, uint64_t aux,
                      const uint64_t *tickets, uint32_t nt)
{
    fpp__mpi_buf b = fpp__mpi_buf_get(l);
    if (fpp__mpi_batch_begin(&b, type) || fpp__mpi_buf_reserve(&b, (size_t)nt * sizeof *tickets)) {
        fpp__mpi_buf_free(&b);
        return FPP_ENOMEM;
    }
    fpp__mpi_hdr *h = fpp__mpi_batch_hdr(&b);
    h->credit = credit;
    h->aux = aux;
    h->count = nt;
    if (nt)
        memcpy(b.p + b.len, tickets, (size_t)nt * sizeof *tickets);
    b.len += (size_t)nt * sizeof *tickets;
    return fpp__mpi_send(l, dest, &b);
}

/* A bulk send owns its heap block through an fpp__mpi_bulk shared by its chunks (they may
 * complete in any order); the block and the bulk are freed when the last one completes. */
int fpp__mpi_send_bulk(fpp__mpi_link *l, int dest, void *data, size_t len)
{
    size_t nchunks = len == 0 ? 0 : (len + l->chunk - 1) / l->chunk;
    fpp__mpi_bulk *b = nchunks ? malloc(sizeof *b) : NULL;
    if (!b) {
        fpp__mpi_big_put(l, data, len);
        return nchunks ? FPP_ENOMEM : 0;
    }
    *b = (fpp__mpi_bulk){.dst = data, .len = len, .left = 0};
    int rc = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * l->chunk, n = FPP__MIN(l->chunk, len - off);
        MPI_Request r;
        rc = fpp__mpi_check(MPI_Isend((unsigned char *)data + off, (int)n, MPI_BYTE, dest, FPP__MPI_TAG_BULK,
                                      l->comm, &r),
                            "MPI_Isend", dest);
        if (rc)
            break;
        l->last_send_ns = fpp__now_ns();
        b->left++;
        track(l, r, b, W_SEND_BULK, dest);
    }
    if (b->left == 0) {
        fpp__mpi_big_put(l, data, len);
        free(b);
    }
    return rc;
}

int fpp__mpi_recv_bulk(fpp__mpi_link *l, int src, fpp__mpi_bulk *b)
{
    size_t nchunks = b->len == 0 ? 0 : (b->len + l->chunk - 1) / l->chunk;
    b->left = (int)nchunks;
    if (nchunks == 0) {
        l->done(l->owner, b);
        return 0;
    }
    unsigned char *scratch = NULL;
    if (!b->dst) {
        /* No memory for the bytes: they must still be taken off the wire (they would match
         * the next bulk receive otherwise), into one chunk of scratch reused by every chunk. */
        size_t need = FPP__MIN(l->chunk, b->len);
        if (l->scratch_cap < need) {
            free(l->scratch);
            l->scratch = malloc(need);
            l->scratch_cap = l->scratch ? need : 0;
        }
        if (!l->scratch) {
            fpp__log(FPP_LOG_ERROR, "fpp_mpi: no memory to receive %zu bytes from rank %d, not even to drop them; "
                                    "the job cannot go on", b->len, src);
            MPI_Abort(l->comm, 1);
        }
        scratch = l->scratch;
    }
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * l->chunk, n = FPP__MIN(l->chunk, b->len - off);
        unsigned char *to = scratch ? scratch : (unsigned char *)b->dst + off;
        MPI_Request r;
        int rc = fpp__mpi_check(MPI_Irecv(to, (int)n, MPI_BYTE, src, FPP__MPI_TAG_BULK, l->comm, &r), "MPI_Irecv", src);
        if (rc)
            return rc;
        track(l, r, b, W_RECV_BULK, src);
    }
    return 0;
}

int fpp__mpi_link_abandon(fpp__mpi_link *l, int peer, void (*dropped)(void *owner, fpp__mpi_bulk *b))
{
    int j = 0, left = 0;
    for (int i = 0; i < l->n; i++) {
        if (l->peer[i] != peer) {
            l->reqs[j] = l->reqs[i];
            l->what[j] = l->what[i];
            l->kind[j] = l->kind[i];
            l->peer[j] = l->peer[i];
            j++;
            continue;
        }
        if (l->kind[i] == W_RECV_BULK)
            MPI_Cancel(&l->reqs[i]); /* local: the receive is taken back, or completes some day */
        MPI_Request_free(&l->reqs[i]);
        left++;
        if (l->kind[i] == W_RECV_BULK) {
            /* MPI may still write into dst: buried. The bulk is its owner's, told once (its
             * chunks share it; left < 0 marks it told). */
            fpp__mpi_bulk *b = l->what[i];
            if (b->left < 0)
                continue;
            b->left = -1;
            if (b->dst)
                bury(b->dst);
            b->dst = NULL;
            if (dropped)
                dropped(l->owner, b);
        } else if (l->what[i]) {
            bury(l->what[i]); /* a send buffer's holder, or a send bulk: each owns its bytes */
        }
    }
    l->n = j;
    return left;
}

int fpp__mpi_link_progress(fpp__mpi_link *l)
{
    if (l->n == 0)
        return 0;
    int outcount = 0;
    int rc = fpp__mpi_check(MPI_Testsome(l->n, l->reqs, &outcount, l->done_idx, MPI_STATUSES_IGNORE),
                            "MPI_Testsome", -1);
    if (rc)
        return rc;
    if (outcount == MPI_UNDEFINED || outcount == 0)
        return 0;
    for (int k = 0; k < outcount; k++) {
        int i = l->done_idx[k];
        completed(l, l->what[i], l->kind[i]);
        l->what[i] = NULL;
    }
    /* Compact: completed requests are MPI_REQUEST_NULL now. */
    int j = 0;
    for (int i = 0; i < l->n; i++) {
        if (l->reqs[i] == MPI_REQUEST_NULL)
            continue;
        l->reqs[j] = l->reqs[i];
        l->what[j] = l->what[i];
        l->kind[j] = l->kind[i];
        l->peer[j] = l->peer[i];
        j++;
    }
    l->n = j;
    return outcount;
}

int fpp__mpi_recv_ctl(fpp__mpi_link *l, int src, fpp__mpi_buf *rx, int *from)
{
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    int rc = fpp__mpi_check(MPI_Improbe(src, FPP__MPI_TAG_CTL, l->comm, &flag, &msg, &st), "MPI_Improbe", src);
    if (rc || !flag)
        return rc ? rc : 0;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    rx->len = 0;
    if (fpp__mpi_buf_reserve(rx, (size_t)(count > 0 ? count : 1))) {
        /* The message is matched and must be received: take it into a scratch byte and fail. */
        fpp__log(FPP_LOG_ERROR, "fpp_mpi: out of memory for a message of %d bytes from rank %d", count,
                 st.MPI_SOURCE);
        return FPP_ENOMEM;
    }
    rc = fpp__mpi_check(MPI_Mrecv(rx->p, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE), "MPI_Mrecv", st.MPI_SOURCE);
    if (rc)
        return rc;
    rx->len = (size_t)count;
    *from = st.MPI_SOURCE;
    return 1;
}

/* ------------------------------------------------------------------ naps */

void fpp__mpi_nap_reset(fpp__mpi_nap *n)
{
    if (n->spin_ns == 0)
        n->spin_ns = FPP__MPI_SPIN_NS;
    if (n->idle_since_ns != 0) {
        /* A wait short enough to spin through is aimed at with half again its length (moving
         * halfway there each time); a longer one halves the spin. */
        int64_t waited = fpp__now_ns() - n->idle_since_ns;
        if (waited <= FPP__MPI_SPIN_MAX_NS) {
            int64_t aim = FPP__MIN(waited + waited / 2, (int64_t)FPP__MPI_SPIN_MAX_NS);
            n->spin_ns = FPP__MAX((n->spin_ns + aim) / 2, (int64_t)FPP__MPI_SPIN_MIN_NS);
        } else {
            n->spin_ns = FPP__MAX(n->spin_ns / 2, (int64_t)FPP__MPI_SPIN_MIN_NS);
        }
    }
    n->idle_since_ns = 0;
    n->nap_ns = 0;
}

void fpp__mpi_nap_step(fpp__mpi_nap *n, fpp__ec *wake, int64_t deadline_ns)
{
    int64_t now = fpp__now_ns();
    if (n->spin_ns == 0)
        n->spin_ns = FPP__MPI_SPIN_NS;
    if (n->idle_since_ns == 0) {
        n->idle_since_ns = now;
        n->nap_ns = 0;
    }
    if (now - n->idle_since_ns < n->spin_ns) {
        fpp__cpu_relax();
        return;
    }
    if (now - n->idle_since_ns < FPP__MPI_SHORT_IDLE_NS || n->nap_ns == 0)
        n->nap_ns = FPP__MPI_NAP_MIN_NS;
    else
        n->nap_ns = FPP__MIN(2 * n->nap_ns, (int64_t)FPP__MPI_NAP_MAX_NS);
    int64_t until = now + n->nap_ns;
    if (deadline_ns < until)
        until = deadline_ns;
    if (until <= now)
        return;
    if (wake) {
        fpp__ec_wait(wake, fpp__ec_arm(wake), until);
    } else {
        struct timespec ts = {.tv_sec = (until - now) / 1000000000, .tv_nsec = (until - now) % 1000000000};
        nanosleep(&ts, NULL);
    }
}

int fpp__mpi_wait(MPI_Request *r, const char *call, int peer)
{
    fpp__mpi_nap nap = {0};
    for (;;) {
        int flag = 0;
        int rc = fpp__mpi_check(MPI_Test(r, &flag, MPI_STATUS_IGNORE), call, peer);
        if (rc || flag)
            return rc;
        fpp__mpi_nap_step(&nap, NULL, INT64_MAX);
    }
}

int fpp__mpi_usable(const char *who)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) {
        fpp__log(FPP_LOG_ERROR, "%s: MPI is %s", who, fin ? "finalised already" : "not initialised (call MPI_Init first)");
        return FPP_ESTATE;
    }
    int level = MPI_THREAD_SINGLE, main_thread = 0;
    MPI_Query_thread(&level);
    MPI_Is_thread_main(&main_thread);
    if (level < MPI_THREAD_SERIALIZED && !main_thread) {
        fpp__log(FPP_LOG_ERROR, "%s: MPI was initialised for calls from its main thread only (thread level %d); "
                                "call from that thread, or initialise with MPI_THREAD_SERIALIZED",
                 who, level);
        return FPP_ESTATE;
    }
    return 0;
}
