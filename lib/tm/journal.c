/* tm/journal.c: the task journal: each finished task's outcome appended to a file, so that a run
 * killed, interrupted or stopped can be run again and do only what is left (fpp.h, "The task
 * journal"). This file owns the file format, the reading of a journal (resume, and the public
 * read API fpp_journal_*), the writer (on the thread driving the task manager) and the flusher
 * thread that makes it durable.
 *
 * The file: the 8 bytes "FPPJRNL1", then records, each framed as
 *     u32 payload length | u8 type | payload | u32 CRC-32C of the length, type and payload
 * (little-endian, as the machines fpp runs on; a byte-order mark in the header refuses others).
 *   HEADER  u32 version, u32 byte-order mark, i64 created (wall ns), u64 fingerprint,
 *           u32 key length, key, u32 nfn, nfn x (u32 length, name): the run's fingerprint,
 *           always the first record.
 *   MARK    i64 from, i64 to, i64 wall ns, i32 fn, u64 nplain, i64 run sum ns, u64 nruns,
 *           nruns x (i64 start, i64 length): every id in [from, to) is finished, but those in
 *           the runs ("open": not finished when the mark was written, usually in flight).
 *           `from` is the previous mark's `to` (0 for the first): marks tile the ids, and `to`
 *           of the last one is the watermark. fn: the function of the nplain ids it covers that
 *           have no record of their own (-1: none); run sum: their run times added up, on the
 *           coarse clock (each is 0 or a tick for short tasks; the mean is unbiased).
 *   DONE    i64 id, i64 start (wall ns), i32 fn: a plain success that cannot be part of a
 *           range: an open id, or one whose function is not its mark's.
 *   TASK    i64 id, u8 status, u8 signal, u16 flags (1: result stored), u32 attempts, i32 fn,
 *           u32 error length, i64 start (wall ns), i64 run time ns, u64 argument length,
 *           u64 result length, u64 stored length, error bytes, stored result bytes: any outcome
 *           that is not plain (a failure, a retry, a rerun, a result to store, 10 ms or more:
 *           FPP__JOURNAL_PLAIN_NS, on the coarse clock).
 * An id is finished iff it has a DONE or TASK record, or lies below the watermark and is not
 * open. Its outcome is its last record's, else a plain success. Appending only; a crash can
 * leave only a torn last record, which fails its CRC (or is short) and is cut on resume.
 *
 * The writer (struct fpp__journal), invariants: ids below S are sealed (covered by a mark
 * written to the buffer or the file); a ring of WINDOW bits holds, for ids in [S, S + WINDOW),
 * "finished, and its record (if any) is in the buffer already"; hi is 1 + the highest such id
 * (S if none). A plain success costs setting its bit (the first one since the last mark names
 * the mark's function; one of another function gets a DONE record too); every other outcome
 * also appends a TASK record; an id below S (declared open by an earlier mark) gets a DONE or
 * TASK record.
 * Publishing appends MARK(S -> hi) listing the unset bits as open runs, writes the buffer
 * (write, appending) and moves S to hi. So a record for an id always precedes the mark that
 * covers it, and a mark never declares open an id whose record is already written.
 *
 * Threads. The writer's state is used only by whoever holds the task manager's `busy` word:
 * the thread driving it (inside its calls: tasks finish there), or the flusher thread, which
 * takes `busy` by CAS (0 -> FPP__BUSY_JOURNAL) when no call is in progress. Every flush period
 * the flusher: if outcomes wait to be written, writes them itself (no call in progress) or sets
 * FPP__JF_DUE and wakes the executor, so the driving thread writes them at its next pass (even
 * one asleep in a poll); then fdatasyncs if anything was written since the last one. The
 * driving thread never calls fdatasync but at the stop points (a raise, Ctrl-C, the end of a
 * run, freeing), and writes once per period (a few KB), never per task. A write failure on
 * either thread, or an fdatasync failure, sets `err` and FPP__JF_ERR: the driving thread then
 * stops the run (tm->jfailed, FPP_EJOURNAL).
 *
 * Fork: the descriptor is O_CLOEXEC and one of fpp's own (fork servers close it); only the
 * creating process (tm->owner) writes, locks, syncs or joins the flusher; another process
 * (fpp__journal_forget) closes its copy of the descriptor and frees memory.
 *
 * Resume: the file is read once (a `jview`: the watermark, the open ids, the ids recorded at
 * or above it, the ids whose latest outcome is a failure) and a torn tail is cut (ftruncate);
 * the writer then starts at S = the watermark. Memory: the open, late and failed ids only,
 * never one entry per finished id. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/timing.h"
#include "tm/tm.h"

#define MAGIC "FPPJRNL1"
#define MAGIC_LEN 8
#define VERSION 1u
#define BYTE_ORDER_MARK 0x01020304u
enum { R_HEADER = 1, R_MARK = 2, R_DONE = 3, R_TASK = 4 };
#define HEAD 5u                        /* u32 length, u8 type */
#define TAIL 4u                        /* u32 CRC */
#define MAX_PAYLOAD (UINT32_C(1) << 31) /* a 1 GiB result and its record, with room to spare */
#define MAX_KEY 4096u
#define WINDOW (UINT64_C(1) << 20)     /* ids of the writer's bit ring (128 KiB) */
#define PUBLISH_BYTES ((size_t)1 << 20) /* the buffer is written when it holds this much */
#define FLUSH_MS_MAX 60000
#define RESULT_MAX_LIMIT ((size_t)1 << 30)
#define READ_CHUNK ((size_t)1 << 20)

/* ---------------------------------------------------------------- CRC-32C */

/* Slicing-by-8 over the reflected Castagnoli polynomial 0x82F63B78. tab[k][b]: the CRC of byte b
 * followed by k zero bytes, so eight table lookups advance the CRC by eight bytes. */
static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (uint32_t i = 0; i < 256; i++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

uint32_t fpp__crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8); /* little-endian: the first byte is the lowest */
        w ^= crc;
        crc = crc_tab[7][w & 0xff] ^ crc_tab[6][(w >> 8) & 0xff] ^ crc_tab[5][(w >> 16) & 0xff] ^
              crc_tab[4][(w >> 24) & 0xff] ^ crc_tab[3][(w >> 32) & 0xff] ^ crc_tab[2][(w >> 40) & 0xff] ^
              crc_tab[1][(w >> 48) & 0xff] ^ crc_tab[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------- id -> value table */

/* Open addressing, linear probing, backward-shift deletion (as idmap.c); key -1 is empty (ids
 * are >= 0). Doubles when half full. */
typedef struct jmap {
    int64_t *k;
    uint64_t *v;
    size_t mask, n;
    unsigned shift;
} jmap;

static size_t jm_home(const jmap *m, int64_t id)
{
    return (size_t)(((uint64_t)id * UINT64_C(0x9E3779B97F4A7C15)) >> m->shift);
}

static int jm_grow(jmap *m)
{
    unsigned bits = m->k ? 64 - m->shift + 1 : 6;
    size_t cap = (size_t)1 << bits;
    int64_t *k = fpp__malloc(cap * sizeof *k);
    uint64_t *v = fpp__malloc(cap * sizeof *v);
    if (!k || !v) {
        fpp__free(k);
        fpp__free(v);
        return FPP_ENOMEM;
    }
    memset(k, 0xff, cap * sizeof *k);
    jmap old = *m;
    m->k = k;
    m->v = v;
    m->mask = cap - 1;
    m->shift = 64 - bits;
    m->n = 0;
    for (size_t i = 0; old.k && i <= old.mask; i++)
        if (old.k[i] >= 0) {
            size_t j = jm_home(m, old.k[i]);
            while (m->k[j] >= 0)
                j = (j + 1) & m->mask;
            m->k[j] = old.k[i];
            m->v[j] = old.v[i];
            m->n++;
        }
    fpp__free(old.k);
    fpp__free(old.v);
    return 0;
}

static uint64_t *jm_find(const jmap *m, int64_t id)
{
    if (!m->n)
        return NULL;
    for (size_t j = jm_home(m, id);; j = (j + 1) & m->mask) {
        if (m->k[j] == id)
            return &m->v[j];
        if (m->k[j] < 0)
            return NULL;
    }
}

static bool jm_has(const jmap *m, int64_t id) { return jm_find(m, id) != NULL; }

static int jm_put(jmap *m, int64_t id, uint64_t v)
{
    uint64_t *have = jm_find(m, id);
    if (have) {
        *have = v;
        return 0;
    }
    if ((!m->k || (m->n + 1) * 2 > m->mask + 1) && jm_grow(m) != 0)
        return FPP_ENOMEM;
    size_t j = jm_home(m, id);
    while (m->k[j] >= 0)
        j = (j + 1) & m->mask;
    m->k[j] = id;
    m->v[j] = v;
    m->n++;
    return 0;
}

static bool jm_del(jmap *m, int64_t id)
{
    if (!m->n)
        return false;
    size_t j = jm_home(m, id);
    while (m->k[j] >= 0 && m->k[j] != id)
        j = (j + 1) & m->mask;
    if (m->k[j] < 0)
        return false;
    m->k[j] = -1;
    m->n--;
    for (size_t k = (j + 1) & m->mask; m->k[k] >= 0; k = (k + 1) & m->mask) {
        size_t h = jm_home(m, m->k[k]);
        bool stays = j <= k ? (j < h && h <= k) : (j < h || h <= k);
        if (!stays) {
            m->k[j] = m->k[k];
            m->v[j] = m->v[k];
            m->k[k] = -1;
            j = k;
        }
    }
    return true;
}

static void jm_free(jmap *m)
{
    fpp__free(m->k);
    fpp__free(m->v);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ byte buffers */

typedef struct jbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} jbuf;

static bool jb_room(jbuf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *p = fpp__realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void jb_put(jbuf *b, const void *d, size_t n)
{
    if (n && jb_room(b, n)) {
        memcpy(b->p + b->len, d, n);
        b->len += n;
    }
}

static void jb_u8(jbuf *b, uint8_t v) { jb_put(b, &v, 1); }
static void jb_u16(jbuf *b, uint16_t v) { jb_put(b, &v, 2); }
static void jb_u32(jbuf *b, uint32_t v) { jb_put(b, &v, 4); }
static void jb_u64(jbuf *b, uint64_t v) { jb_put(b, &v, 8); }
static void jb_i64(jbuf *b, int64_t v) { jb_put(b, &v, 8); }

/* A record: begin reserves its length and writes its type; end patches the length and appends
 * the CRC. */
static size_t frame_begin(jbuf *b, int type)
{
    size_t at = b->len;
    jb_u32(b, 0);
    jb_u8(b, (uint8_t)type);
    return at;
}

static void frame_end(jbuf *b, size_t at)
{
    if (b->oom)
        return;
    uint32_t len = (uint32_t)(b->len - at - HEAD);
    memcpy(b->p + at, &len, 4);
    jb_u32(b, fpp__crc32c(0, b->p + at, b->len - at));
}

/* Reading a payload: every read is bounds-checked; `bad` once anything was out of bounds. */
typedef struct jpl {
    const unsigned char *p;
    size_t n;
    bool bad;
} jpl;

static const unsigned char *jp_take(jpl *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

#define JP_GET(name, type)                              \
    static type name(jpl *r)                            \
    {                                                   \
        type v = 0;                                     \
        const unsigned char *p = jp_take(r, sizeof v);  \
        if (p)                                          \
            memcpy(&v, p, sizeof v);                    \
        return v;                                       \
    }
JP_GET(jp_u8, uint8_t)
JP_GET(jp_u16, uint16_t)
JP_GET(jp_u32, uint32_t)
JP_GET(jp_i32, int32_t)
JP_GET(jp_u64, uint64_t)
JP_GET(jp_i64, int64_t)

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------- the header */

typedef struct jhead {
    uint32_t version;
    int64_t created;
    uint64_t fingerprint;
    char *key;
    int nfn;
    char **names;
} jhead;

static void jhead_free(jhead *h)
{
    fpp__free(h->key);
    for (int i = 0; i < h->nfn; i++)
        fpp__free(h->names[i]);
    fpp__free(h->names);
    memset(h, 0, sizeof *h);
}

/* FNV-1a over the key and every name, each followed by a 0 byte. */
static uint64_t fingerprint(const char *key, char *const *names, int nfn)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (int i = -1; i < nfn; i++) {
        const unsigned char *s = (const unsigned char *)(i < 0 ? key : names[i]);
        do {
            h ^= *s;
            h *= UINT64_C(0x100000001b3);
        } while (*s++);
    }
    return h;
}

/* This process's run: the registered names (registry order) and the key. */
static int jhead_of_run(jhead *h, const char *key)
{
    memset(h, 0, sizeof *h);
    int n = 0;
    while (fpp_fn_name(n))
        n++;
    h->version = VERSION;
    h->created = wall_ns();
    h->key = fpp__strdup(key ? key : "");
    h->names = fpp__calloc((size_t)n + 1, sizeof *h->names);
    if (!h->key || !h->names) {
        jhead_free(h);
        return FPP_ENOMEM;
    }
    for (h->nfn = 0; h->nfn < n; h->nfn++)
        if (!(h->names[h->nfn] = fpp__strdup(fpp_fn_name(h->nfn)))) {
            jhead_free(h);
            return FPP_ENOMEM;
        }
    h->fingerprint = fingerprint(h->key, h->names, h->nfn);
    return 0;
}

static void jhead_encode(jbuf *b, const jhead *h)
{
    size_t at = frame_begin(b, R_HEADER);
    jb_u32(b, h->version);
    jb_u32(b, BYTE_ORDER_MARK);
    jb_i64(b, h->created);
    jb_u64(b, h->fingerprint);
    uint32_t kl = (uint32_t)strlen(h->key);
    jb_u32(b, kl);
    jb_put(b, h->key, kl);
    jb_u32(b, (uint32_t)h->nfn);
    for (int i = 0; i < h->nfn; i++) {
        uint32_t l = (uint32_t)strlen(h->names[i]);
        jb_u32(b, l);
        jb_put(b, h->names[i], l);
    }
    frame_end(b, at);
}

static char *jp_string(jpl *r, uint32_t max)
{
    uint32_t l = jp_u32(r);
    if (l > max)
        r->bad = true;
    const unsigned char *p = jp_take(r, l);
    if (!p)
        return NULL;
    char *s = fpp__malloc((size_t)l + 1);
    if (s) {
        memcpy(s, p, l);
        s[l] = 0;
    }
    return s;
}

/* 0, FPP_ENOMEM, or 1: malformed (*why says how). */
static int jhead_decode(jhead *h, const unsigned char *p, size_t n, const char **why)
{
    memset(h, 0, sizeof *h);
    jpl r = {p, n, false};
    h->version = jp_u32(&r);
    uint32_t bom = jp_u32(&r);
    if (!r.bad && bom != BYTE_ORDER_MARK) {
        *why = "written on a machine of another byte order";
        return 1;
    }
    if (!r.bad && h->version != VERSION) {
        *why = "of another format version";
        return 1;
    }
    h->created = jp_i64(&r);
    h->fingerprint = jp_u64(&r);
    h->key = jp_string(&r, MAX_KEY);
    uint32_t nfn = jp_u32(&r);
    if (nfn > (1u << 20))
        r.bad = true;
    if (!r.bad && !h->key)
        goto oom;
    if (!r.bad) {
        h->names = fpp__calloc((size_t)nfn + 1, sizeof *h->names);
        if (!h->names)
            goto oom;
        for (; h->nfn < (int)nfn && !r.bad; h->nfn++)
            if (!(h->names[h->nfn] = jp_string(&r, 1u << 16)) && !r.bad)
                goto oom;
    }
    if (r.bad || r.n) {
        jhead_free(h);
        *why = "a malformed header";
        return 1;
    }
    return 0;
oom:
    jhead_free(h);
    return FPP_ENOMEM;
}

/* ------------------------------------------------------------ reading */

/* A sequential reader of a file's records, through a buffer of READ_CHUNK bytes (grown for a
 * longer record). */
typedef struct jreader {
    int fd;
    uint64_t size;   /* the file's size when opened: nothing after it is read */
    uint64_t base;   /* the file offset of buf[0] */
    size_t off, have, cap;
    unsigned char *buf;
    int err;         /* errno of a failed read, or -1 out of memory */
} jreader;

/* The next n bytes, or NULL: fewer than n left in the file (err 0), or err set. */
static const unsigned char *rd_need(jreader *r, uint64_t n)
{
    uint64_t pos = r->base + r->off;
    if (n > r->size - pos)
        return NULL;
    if (r->have - r->off >= n)
        return r->buf + r->off;
    if (r->off && r->have > r->off)
        memmove(r->buf, r->buf + r->off, r->have - r->off);
    r->have -= r->off;
    r->base += r->off;
    r->off = 0;
    if (n > r->cap) {
        size_t cap = r->cap ? r->cap : READ_CHUNK;
        while (cap < n)
            cap *= 2;
        unsigned char *b = fpp__realloc(r->buf, cap);
        if (!b) {
            r->err = -1;
            return NULL;
        }
        r->buf = b;
        r->cap = cap;
    }
    while (r->have < n) {
        size_t want = (size_t)FPP__MIN((uint64_t)(r->cap - r->have), r->size - (r->base + r->have));
        ssize_t k = pread(r->fd, r->buf + r->have, want, (off_t)(r->base + r->have));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r->err = k < 0 ? errno : EIO; /* the file shrank under us */
            return NULL;
        }
        r->have += (size_t)k;
    }
    return r->buf + r->off;
}

static uint64_t rd_pos(const jreader *r) { return r->base + r->off; }

static void rd_seek(jreader *r, uint64_t pos)
{
    r->base = pos;
    r->off = r->have = 0;
}

enum { RD_END = 0, RD_OK = 1, RD_TORN = 2, RD_ERR = 3 };

/* The next record: RD_OK (*type, *pl, *plen; *at its offset), RD_END (clean end), RD_TORN (no
 * whole record with a good CRC here: what is left is a torn tail), RD_ERR (r->err). */
static int rd_record(jreader *r, int *type, const unsigned char **pl, uint32_t *plen, uint64_t *at)
{
    *at = rd_pos(r);
    if (*at == r->size)
        return RD_END;
    const unsigned char *h = rd_need(r, HEAD);
    if (!h)
        return r->err ? RD_ERR : RD_TORN;
    uint32_t len;
    memcpy(&len, h, 4);
    if (len > MAX_PAYLOAD)
        return RD_TORN;
    h = rd_need(r, (uint64_t)HEAD + len + TAIL);
    if (!h)
        return r->err ? RD_ERR : RD_TORN;
    uint32_t crc;
    memcpy(&crc, h + HEAD + len, 4);
    if (fpp__crc32c(0, h, HEAD + len) != crc)
        return RD_TORN;
    *type = h[4];
    *pl = h + HEAD;
    *plen = len;
    r->off += HEAD + len + TAIL;
    return RD_OK;
}

static void rd_free(jreader *r)
{
    fpp__free(r->buf);
    r->buf = NULL;
    r->cap = r->have = r->off = 0;
}

/* ------------------------------------------------------- what a journal says */

/* The state a journal's records build, record by record. */
typedef struct jview {
    int64_t W;       /* the watermark: the last mark's `to` */
    jmap open;       /* ids below W declared open, without a record since */
    jmap late;       /* ids at or above W with a record (value: status) */
    jmap failed;     /* ids whose latest record is a failure (value: status) */
    jmap index;      /* with_index: id -> offset of its latest record */
    bool with_index;
    uint64_t records, superseded, duplicates, marks;
} jview;

static void view_free(jview *v)
{
    jm_free(&v->open);
    jm_free(&v->late);
    jm_free(&v->failed);
    jm_free(&v->index);
}

static bool view_finished(const jview *v, int64_t id)
{
    if (id < v->W)
        return !jm_has(&v->open, id);
    return jm_has(&v->late, id);
}

static uint64_t view_count(const jview *v) { return (uint64_t)v->W - v->open.n + v->late.n; }

/* A DONE or TASK record of id. 0 or FPP_ENOMEM. */
static int view_record(jview *v, int64_t id, fpp_status st, uint64_t at)
{
    bool was_failed = jm_has(&v->failed, id);
    int rc = 0;
    if (id < v->W) {
        if (!jm_del(&v->open, id)) {
            if (was_failed)
                v->superseded++;
            else
                v->duplicates++;
        }
    } else if (jm_has(&v->late, id)) {
        if (was_failed)
            v->superseded++;
        else
            v->duplicates++;
        rc = jm_put(&v->late, id, (uint64_t)st);
    } else {
        rc = jm_put(&v->late, id, (uint64_t)st);
    }
    if (st != FPP_DONE)
        rc = rc ? rc : jm_put(&v->failed, id, (uint64_t)st);
    else if (was_failed)
        jm_del(&v->failed, id);
    if (v->with_index && !rc)
        rc = jm_put(&v->index, id, at);
    v->records++;
    return rc;
}

typedef struct jrun { int64_t start, len; } jrun;

/* A parsed mark (its runs point into the payload). */
typedef struct jmark {
    int64_t from, to, wall;
    int fn;
    uint64_t nplain;
    int64_t sum;
    uint64_t nruns;
    const unsigned char *runs;
} jmark;

static jrun mark_run(const jmark *m, uint64_t i)
{
    jrun r;
    memcpy(&r.start, m->runs + i * 16, 8);
    memcpy(&r.len, m->runs + i * 16 + 8, 8);
    return r;
}

/* 1 if the payload is not a sound mark for a view at watermark W. */
static int mark_parse(jmark *m, const unsigned char *p, uint32_t n, int64_t W)
{
    jpl r = {p, n, false};
    m->from = jp_i64(&r);
    m->to = jp_i64(&r);
    m->wall = jp_i64(&r);
    m->fn = jp_i32(&r);
    m->nplain = jp_u64(&r);
    m->sum = jp_i64(&r);
    m->nruns = jp_u64(&r);
    if (r.bad || m->sum < 0 || m->from != W || m->to < m->from || m->nplain > (uint64_t)(m->to - m->from) ||
        m->nruns > r.n / 16 || r.n != m->nruns * 16)
        return 1;
    m->runs = r.p;
    int64_t last = m->from;
    for (uint64_t i = 0; i < m->nruns; i++) {
        jrun x = mark_run(m, i);
        if (x.start < last || x.len <= 0 || x.len > m->to - x.start)
            return 1;
        last = x.start + x.len;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Applies a mark. With `late_out`, the ids recorded before it that it covers come out sorted
 * (*nlate of them; the caller frees the array). 0 or FPP_ENOMEM. */
static int view_mark(jview *v, const jmark *m, int64_t **late_out, size_t *nlate)
{
    /* Open runs first: an id with a record stays finished even where a mark calls it open. */
    for (uint64_t i = 0; i < m->nruns; i++) {
        jrun x = mark_run(m, i);
        for (int64_t id = x.start; id < x.start + x.len; id++)
            if (!jm_has(&v->late, id) && jm_put(&v->open, id, 0) != 0)
                return FPP_ENOMEM;
    }
    int64_t *out = NULL;
    size_t n = 0;
    if (v->late.n) {
        if (late_out && !(out = fpp__malloc(v->late.n * sizeof *out)))
            return FPP_ENOMEM;
        for (size_t j = 0; j <= v->late.mask;) {
            int64_t id = v->late.k[j];
            if (id >= 0 && id < m->to) {
                if (out)
                    out[n++] = id;
                jm_del(&v->late, id); /* shifts a later entry here: look at j again */
                continue;
            }
            j++;
        }
        if (out)
            qsort(out, n, sizeof *out, cmp_i64);
    }
    if (late_out) {
        *late_out = out;
        *nlate = n;
    }
    v->W = m->to;
    v->marks++;
    return 0;
}

/* A parsed task record (its strings point into the payload). */
typedef struct jtask {
    int64_t id;
    fpp_status status;
    int signo;
    unsigned flags, attempts;
    int fn;
    int64_t start, runtime;
    uint64_t arg_len, result_len, stored;
    const char *err;
    uint32_t errlen;
    const unsigned char *result;
} jtask;

static int task_parse(jtask *t, int type, const unsigned char *p, uint32_t n)
{
    jpl r = {p, n, false};
    memset(t, 0, sizeof *t);
    t->id = jp_i64(&r);
    if (type == R_DONE) {
        t->status = FPP_DONE;
        t->attempts = 1;
        t->start = jp_i64(&r);
        t->fn = jp_i32(&r);
        return r.bad || r.n || t->id < 0;
    }
    uint8_t st = jp_u8(&r);
    t->status = (fpp_status)st;
    t->signo = jp_u8(&r);
    t->flags = jp_u16(&r);
    t->attempts = jp_u32(&r);
    t->fn = jp_i32(&r);
    t->errlen = jp_u32(&r);
    t->start = jp_i64(&r);
    t->runtime = jp_i64(&r);
    t->arg_len = jp_u64(&r);
    t->result_len = jp_u64(&r);
    t->stored = jp_u64(&r);
    t->err = (const char *)jp_take(&r, t->errlen);
    t->result = jp_take(&r, (size_t)t->stored);
    bool ok = !r.bad && !r.n && t->id >= 0 && (st == FPP_DONE || st == FPP_FAILED || st == FPP_CRASHED || st == FPP_TIMEOUT) &&
              t->stored <= t->result_len;
    return !ok;
}

/* Applies one record to v. 0; FPP_ENOMEM; 1: malformed. */
static int view_apply(jview *v, int type, const unsigned char *p, uint32_t n, uint64_t at)
{
    if (type == R_MARK) {
        jmark m;
        if (mark_parse(&m, p, n, v->W))
            return 1;
        return view_mark(v, &m, NULL, NULL);
    }
    if (type == R_DONE || type == R_TASK) {
        jtask t;
        if (task_parse(&t, type, p, n))
            return 1;
        return view_record(v, t.id, t.status, at);
    }
    return 1; /* a second header, or a type this version does not know */
}

/* Logs "call(path): strerror(errno)" and returns FPP_EJOURNAL. */
static int sys_fail(const char *call, const char *path)
{
    fpp__sys_error(call, path);
    return FPP_EJOURNAL;
}

/* A reader's failure: FPP_EJOURNAL (a read failed: logged) or FPP_ENOMEM. */
static int rd_fail(const jreader *r, const char *path)
{
    if (r->err < 0)
        return FPP_ENOMEM;
    errno = r->err;
    return sys_fail("read", path);
}

/* Reads a journal's header and every record after it into v. *torn: bytes of a torn tail, cut
 * at *good (the end of the last whole record). Returns 0; FPP_EJOURNAL (logged); FPP_ENOMEM;
 * 2: no header at all (an empty file, or a header cut short by a crash while the journal was
 * being created: records are appended only once the header is durable, so nothing is lost). */
static int scan(int fd, const char *path, jhead *h, jview *v, uint64_t *good, uint64_t *torn)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return sys_fail("fstat", path);
    jreader r = {.fd = fd, .size = (uint64_t)st.st_size};
    *good = 0;
    *torn = 0;
    memset(h, 0, sizeof *h);
    if (r.size == 0)
        return 2;
    int rc = 0, type = 0;
    const unsigned char *p;
    uint32_t n;
    uint64_t at;
    const unsigned char *m = rd_need(&r, FPP__MIN((uint64_t)MAGIC_LEN, r.size));
    if (!m) {
        rc = rd_fail(&r, path);
        goto out;
    }
    if (memcmp(m, MAGIC, (size_t)FPP__MIN((uint64_t)MAGIC_LEN, r.size)) != 0) {
        fpp__log(FPP_LOG_ERROR, "journal %s: not an fpp journal (it does not start with \"%s\"); refusing to touch "
                 "it", path, MAGIC);
        rc = FPP_EJOURNAL;
        goto out;
    }
    if (r.size <= MAGIC_LEN) {
        rc = 2;
        goto out;
    }
    r.off = MAGIC_LEN;
    int k = rd_record(&r, &type, &p, &n, &at);
    if (k == RD_ERR) {
        rc = rd_fail(&r, path);
        goto out;
    }
    if (k == RD_TORN) {
        /* Cut short (the record runs past the end): a crash during creation. A whole record
         * with a bad checksum is damage. */
        uint32_t len = 0;
        const unsigned char *hd = r.size - MAGIC_LEN >= HEAD ? rd_need(&r, HEAD) : NULL;
        if (hd)
            memcpy(&len, hd, 4);
        if (!hd || ((uint64_t)HEAD + len + TAIL > r.size - MAGIC_LEN && len <= MAX_PAYLOAD)) {
            rc = 2;
        } else {
            fpp__log(FPP_LOG_ERROR, "journal %s: its header is damaged (bad checksum)", path);
            rc = FPP_EJOURNAL;
        }
        goto out;
    }
    const char *why = "its first record is no header";
    int hr = type == R_HEADER ? jhead_decode(h, p, n, &why) : 1;
    if (hr) {
        if (hr == 1)
            fpp__log(FPP_LOG_ERROR, "journal %s: cannot be used: %s", path, why);
        rc = hr == 1 ? FPP_EJOURNAL : hr;
        goto out;
    }
    *good = rd_pos(&r);
    for (;;) {
        k = rd_record(&r, &type, &p, &n, &at);
        if (k == RD_END)
            break;
        if (k == RD_TORN) {
            *torn = r.size - at;
            break;
        }
        if (k == RD_ERR) {
            rc = rd_fail(&r, path);
            break;
        }
        int a = view_apply(v, type, p, n, at);
        if (a == 1) {
            fpp__log(FPP_LOG_ERROR, "journal %s: the record at offset %llu (type %d, %u bytes) has a good "
                     "checksum but makes no sense there; the journal is damaged", path, (unsigned long long)at,
                     type, n);
            rc = FPP_EJOURNAL;
            break;
        }
        if (a) {
            rc = a;
            break;
        }
        *good = rd_pos(&r);
    }
    if (rc)
        jhead_free(h);
out:
    rd_free(&r);
    return rc;
}

/* ----------------------------------------------------------- the writer */

struct fpp__journal {
    /* The writer: whoever holds tm->busy (see the top). What a plain success touches first,
     * on one cache line. */
    int64_t S, hi;
    uint64_t *bits;        /* WINDOW bits: id's bit is bit id % 64 of word (id % WINDOW) / 64 */
    int64_t plain_max;     /* a coarse run time up to this is plain (FPP__JOURNAL_PLAIN_NS - tick;
                              -1: nothing is, results being stored) */
    int mfn;               /* the function of the plain successes in [S, hi) (-1: none yet), */
    bool dirty_local;
    uint64_t mplain;       /* how many of them, */
    int64_t msum;          /* and their coarse run times added up */
    jbuf buf;
    uint64_t off;          /* the file's size: whole records only */
    int64_t wall_off;      /* CLOCK_REALTIME - CLOCK_MONOTONIC at open */
    size_t result_max;
    char *path;
    int fd;
    jview prev;            /* what earlier runs recorded */
    bool rerun_failed;
    /* Shared with the flusher thread. */
    _Atomic int *flags;    /* &tm->jflags */
    _Atomic int *busy;     /* &tm->busy */
    fpp_executor *ex;      /* to wake a poll; valid while the flusher runs */
    _Atomic int dirty;     /* outcomes wait in the writer to be written */
    _Atomic int err;       /* the journal failed */
    _Atomic uint64_t written, synced; /* bytes written; bytes made durable */
    int flush_ms;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, running;
    pthread_mutex_t fail_mu; /* orders jr_fail's line before its `err` (a leaf) */
};

/* The journal failed (either thread): the line is logged before `err` is seen, so that a
 * caller that returns FPP_EJOURNAL has its reason in the log already. */
static void jr_fail(fpp__journal *jr, const char *call, int e)
{
    pthread_mutex_lock(&jr->fail_mu);
    if (!atomic_load(&jr->err)) {
        char b[128];
        fpp__log(FPP_LOG_ERROR, "journal %s: %s: %s; the run stops (FPP_EJOURNAL): what finished since the last "
                 "write is not recorded and will run again on resume", jr->path, call,
                 e > 0 ? strerror_r(e, b, sizeof b) : "out of memory");
        atomic_store(&jr->err, 1);
    }
    pthread_mutex_unlock(&jr->fail_mu);
    atomic_fetch_or(jr->flags, FPP__JF_ERR);
}

static inline uint64_t *bit_word(fpp__journal *jr, int64_t id)
{
    return &jr->bits[((uint64_t)id & (WINDOW - 1)) >> 6];
}

/* Appends MARK(S -> T): ids in [S, T) without their bit are open (beyond the ring: all). */
static void mark_to(fpp__journal *jr, int64_t T)
{
    jbuf *b = &jr->buf;
    size_t at = frame_begin(b, R_MARK);
    jb_i64(b, jr->S);
    jb_i64(b, T);
    jb_i64(b, wall_ns());
    jb_u32(b, (uint32_t)jr->mfn);
    jb_u64(b, jr->mplain);
    jb_i64(b, jr->msum);
    size_t nat = b->len;
    jb_u64(b, 0);
    uint64_t nruns = 0;
    int64_t lim = (uint64_t)(T - jr->S) > WINDOW ? jr->S + (int64_t)WINDOW : T;
    int64_t run = -1; /* start of the open run in progress */
    for (int64_t id = jr->S; id < lim;) {
        unsigned b0 = (unsigned)(id & 63);
        int64_t end = FPP__MIN(id + (64 - b0), lim);
        unsigned nb = (unsigned)(end - id);
        uint64_t mask = nb == 64 ? ~UINT64_C(0) : (UINT64_C(1) << nb) - 1;
        uint64_t *w = bit_word(jr, id);
        uint64_t got = (*w >> b0) & mask;
        if (got == mask) {
            if (run >= 0) {
                jb_i64(b, run);
                jb_i64(b, id - run);
                nruns++;
                run = -1;
            }
        } else if (got == 0) {
            if (run < 0)
                run = id;
        } else {
            for (unsigned k = 0; k < nb; k++) {
                bool set = (got >> k) & 1;
                if (!set && run < 0) {
                    run = id + k;
                } else if (set && run >= 0) {
                    jb_i64(b, run);
                    jb_i64(b, id + k - run);
                    nruns++;
                    run = -1;
                }
            }
        }
        *w &= ~(mask << b0);
        id = end;
    }
    if (T > lim && run < 0)
        run = lim;
    if (run >= 0) {
        jb_i64(b, run);
        jb_i64(b, T - run);
        nruns++;
    }
    if (!b->oom)
        memcpy(b->p + nat, &nruns, 8);
    frame_end(b, at);
    jr->S = T;
    jr->mfn = -1;
    jr->mplain = 0;
    jr->msum = 0;
    if (jr->hi < T)
        jr->hi = T;
}

static void write_out(fpp__journal *jr)
{
    const unsigned char *p = jr->buf.p;
    size_t n = jr->buf.len;
    while (n) {
        ssize_t w = write(jr->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            /* Cut what got written of this batch: the file keeps whole records only. */
            if (ftruncate(jr->fd, (off_t)jr->off) != 0)
                fpp__log(FPP_LOG_WARN, "journal %s: could not cut a partial write back to %llu bytes; it will be cut "
                         "on resume", jr->path, (unsigned long long)jr->off);
            jr_fail(jr, "write", e);
            jr->buf.len = 0;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
    jr->off += jr->buf.len;
    jr->buf.len = 0;
    atomic_store_explicit(&jr->written, jr->off, memory_order_release);
}

/* Seals what finished into a mark and writes the buffer. The writer's holder only. */
static void publish(fpp__journal *jr)
{
    if (!atomic_load_explicit(&jr->err, memory_order_relaxed)) {
        if (jr->hi > jr->S)
            mark_to(jr, jr->hi);
        if (jr->buf.oom)
            jr_fail(jr, "buffering a record", 0);
        else if (jr->buf.len)
            write_out(jr);
    }
    jr->buf.len = 0;
    jr->buf.oom = false;
    jr->dirty_local = false;
    atomic_store_explicit(&jr->dirty, 0, memory_order_relaxed);
}

/* fdatasync if anything was written since the last one. Any thread. 0 or FPP_EJOURNAL. */
static int sync_now(fpp__journal *jr)
{
    if (atomic_load(&jr->err))
        return FPP_EJOURNAL;
    uint64_t w = atomic_load_explicit(&jr->written, memory_order_acquire);
    if (w == atomic_load(&jr->synced))
        return 0;
    if (fdatasync(jr->fd) != 0) {
        jr_fail(jr, "fdatasync", errno);
        return FPP_EJOURNAL;
    }
    uint64_t s = atomic_load(&jr->synced);
    while (s < w && !atomic_compare_exchange_weak(&jr->synced, &s, w))
        ;
    return 0;
}

static void set_dirty(fpp__journal *jr)
{
    if (!jr->dirty_local) {
        jr->dirty_local = true;
        atomic_store_explicit(&jr->dirty, 1, memory_order_relaxed);
    }
}

/* id >= S: room in the ring for it (sealing what lies too far behind). */
static void make_room(fpp__journal *jr, int64_t id)
{
    if ((uint64_t)(id - jr->S) >= WINDOW)
        mark_to(jr, FPP__MAX(jr->hi, id - (int64_t)WINDOW + 1));
}

/* id in [S, S + WINDOW): finished, its record (if any) in the buffer already. */
static void set_bit(fpp__journal *jr, int64_t id)
{
    *bit_word(jr, id) |= UINT64_C(1) << (id & 63);
    if (id >= jr->hi)
        jr->hi = id + 1;
}

static void put_task(fpp__journal *jr, const fpp_task *t, int64_t start_wall, int64_t run)
{
    jbuf *b = &jr->buf;
    const fpp__job *j = &t->job;
    const char *err = j->status == FPP_DONE ? NULL : fpp_task_error(t);
    uint32_t errlen = err ? (uint32_t)strnlen(err, 65536) : 0;
    bool store = j->status == FPP_DONE && jr->result_max && j->result_len <= jr->result_max;
    const void *res = j->result ? j->result : j->res_inline;
    size_t at = frame_begin(b, R_TASK);
    jb_i64(b, j->id);
    jb_u8(b, (uint8_t)j->status);
    jb_u8(b, (uint8_t)(j->status == FPP_CRASHED ? j->signo : 0));
    jb_u16(b, store ? 1 : 0);
    jb_u32(b, t->attempts);
    jb_u32(b, (uint32_t)j->fn);
    jb_u32(b, errlen);
    jb_i64(b, start_wall);
    jb_i64(b, run);
    jb_u64(b, j->arg_len);
    jb_u64(b, j->status == FPP_DONE ? j->result_len : 0);
    jb_u64(b, store ? j->result_len : 0);
    jb_put(b, err, errlen);
    if (store)
        jb_put(b, res, j->result_len);
    frame_end(b, at);
}

void fpp__journal_finished(fpp_tm *tm, fpp_task *t)
{
    fpp__journal *jr = tm->jr;
    int64_t id = t->job.id;
    /* Coarse: 0 or a few ticks; the true run time is less than run + tick. */
    int64_t run = fpp__tm_jnow(tm) - t->jstart;
    bool plain = t->job.status == FPP_DONE && t->attempts == 1 && !t->jrerun && t->jstart && run <= jr->plain_max;
    if (plain && (uint64_t)(id - jr->S) < WINDOW && (jr->mfn == t->job.fn || jr->mfn < 0)) {
        /* The common case, a bit in the ring (after a failure, publish drops it). */
        jr->mfn = t->job.fn;
        jr->mplain++;
        jr->msum += run;
        set_bit(jr, id);
        set_dirty(jr);
        return;
    }
    if (atomic_load_explicit(&jr->err, memory_order_relaxed))
        return;
    int64_t start_wall = (t->jstart ? t->jstart : fpp__tm_jnow(tm)) + jr->wall_off;
    if (!plain) /* rare: worth a fine reading (the start stays to the coarse tick) */
        put_task(jr, t, start_wall, t->jstart ? FPP__MAX(fpp__now_ns() - t->jstart, 0) : 0);
    bool own = plain; /* a plain success needs a record of its own unless its range takes it */
    if (id >= jr->S) {
        make_room(jr, id);
        if (plain && (jr->mfn < 0 || jr->mfn == t->job.fn)) {
            jr->mfn = t->job.fn;
            jr->mplain++;
            jr->msum += run;
            own = false;
        }
        set_bit(jr, id);
    }
    if (own) { /* declared open by a mark already, or of another function than its range */
        size_t at = frame_begin(&jr->buf, R_DONE);
        jb_i64(&jr->buf, id);
        jb_i64(&jr->buf, start_wall);
        jb_u32(&jr->buf, (uint32_t)t->job.fn);
        frame_end(&jr->buf, at);
    }
    set_dirty(jr);
    if (jr->buf.len >= PUBLISH_BYTES)
        publish(jr);
}

bool fpp__journal_skip(fpp_tm *tm, int64_t id, bool *rerun)
{
    fpp__journal *jr = tm->jr;
    *rerun = false;
    if (!view_finished(&jr->prev, id))
        return false;
    if (jr->rerun_failed && jm_has(&jr->prev.failed, id)) {
        *rerun = true;
        return false;
    }
    if (id >= jr->S) { /* recorded at or above the watermark: the next mark covers it */
        make_room(jr, id);
        set_bit(jr, id);
        set_dirty(jr);
    }
    return true;
}

bool fpp__journal_finished_before(fpp_tm *tm, int64_t id)
{
    return tm->jr && view_finished(&tm->jr->prev, id) && !(tm->jr->rerun_failed && jm_has(&tm->jr->prev.failed, id));
}

int fpp__journal_service(fpp_tm *tm)
{
    fpp__journal *jr = tm->jr;
    if (!jr)
        return 0;
    int f = atomic_load_explicit(&tm->jflags, memory_order_relaxed);
    if (f & FPP__JF_DUE) {
        atomic_fetch_and_explicit(&tm->jflags, ~FPP__JF_DUE, memory_order_relaxed);
        publish(jr);
    }
    if (atomic_load(&jr->err)) {
        tm->jfailed = true;
        return FPP_EJOURNAL;
    }
    return 0;
}

int fpp__journal_write(fpp_tm *tm)
{
    fpp__journal *jr = tm->jr;
    if (!jr)
        return 0;
    if (jr->dirty_local || jr->hi > jr->S || jr->buf.len)
        publish(jr);
    if (atomic_load(&jr->err)) {
        tm->jfailed = true;
        return FPP_EJOURNAL;
    }
    return 0;
}

int fpp__journal_sync(fpp_tm *tm)
{
    fpp__journal *jr = tm->jr;
    if (!jr)
        return 0;
    publish(jr);
    int rc = sync_now(jr);
    if (rc)
        tm->jfailed = true;
    return rc;
}

/* ------------------------------------------------------------ the flusher */

static void tick(fpp__journal *jr)
{
    if (atomic_load_explicit(&jr->dirty, memory_order_relaxed) && !atomic_load(&jr->err)) {
        int idle = 0;
        if (atomic_compare_exchange_strong_explicit(jr->busy, &idle, FPP__BUSY_JOURNAL, memory_order_acquire,
                                                    memory_order_relaxed)) {
            /* No call in progress: write what finished ourselves. */
            publish(jr);
            atomic_store_explicit(jr->busy, 0, memory_order_release);
        } else {
            /* The driving thread writes at its next pass; wake it if it sleeps in a poll. */
            atomic_fetch_or_explicit(jr->flags, FPP__JF_DUE, memory_order_relaxed);
            jr->ex->ops->wake(jr->ex);
        }
    }
    if (sync_now(jr) != 0)
        jr->ex->ops->wake(jr->ex);
}

static void *flusher(void *arg)
{
    fpp__journal *jr = arg;
    int64_t period = (int64_t)jr->flush_ms * 1000000;
    pthread_mutex_lock(&jr->mu);
    int64_t due = fpp__now_ns() + period;
    while (!jr->stop) {
        struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        pthread_cond_timedwait(&jr->cv, &jr->mu, &ts);
        if (jr->stop)
            break;
        if (fpp__now_ns() < due)
            continue;
        pthread_mutex_unlock(&jr->mu);
        tick(jr);
        pthread_mutex_lock(&jr->mu);
        int64_t now = fpp__now_ns();
        due += period;
        if (due <= now)
            due = now + period;
    }
    pthread_mutex_unlock(&jr->mu);
    return NULL;
}

static int flusher_start(fpp__journal *jr)
{
    pthread_mutex_init(&jr->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&jr->cv, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&jr->th, NULL, flusher, jr);
    if (e) {
        pthread_cond_destroy(&jr->cv);
        pthread_mutex_destroy(&jr->mu);
        errno = e;
        return fpp__sys_error("pthread_create", "journal flusher");
    }
    jr->running = true;
    return 0;
}

static void flusher_stop(fpp__journal *jr)
{
    if (!jr->running)
        return;
    pthread_mutex_lock(&jr->mu);
    jr->stop = true;
    pthread_cond_signal(&jr->cv);
    pthread_mutex_unlock(&jr->mu);
    pthread_join(jr->th, NULL);
    pthread_cond_destroy(&jr->cv);
    pthread_mutex_destroy(&jr->mu);
    jr->running = false;
}

/* ------------------------------------------------------ opening, closing */

static void jr_free(fpp__journal *jr, bool owner)
{
    if (owner) /* elsewhere it may be a copy taken while held */
        pthread_mutex_destroy(&jr->fail_mu);
    view_free(&jr->prev);
    fpp__free(jr->bits);
    fpp__free(jr->buf.p);
    fpp__free(jr->path);
    fpp__free(jr);
}

/* fsync of the directory holding path, so that a new file's name survives a crash. */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? fpp__malloc((size_t)(slash - path) + 2) : NULL;
    if (slash && !dir)
        return;
    if (dir) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int d = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
        if (fsync(d) != 0)
            fpp__log(FPP_LOG_WARN, "journal %s: fsync of its directory failed: %s", path, strerror(errno));
        close(d);
    }
    fpp__free(dir);
}

/* Says how two runs' fingerprints differ (or that they do not: 0). */
static int compare_runs(const char *path, const jhead *file, const jhead *run)
{
    if (strcmp(file->key, run->key) != 0) {
        fpp__log(FPP_LOG_ERROR, "journal %s belongs to another run: its key is \"%.64s\", this run's is \"%.64s\" "
                 "(FPP_EMISMATCH); use another file, or the same key", path, file->key, run->key);
        return FPP_EMISMATCH;
    }
    for (int i = 0; i < FPP__MAX(file->nfn, run->nfn); i++) {
        const char *a = i < file->nfn ? file->names[i] : NULL, *b = i < run->nfn ? run->names[i] : NULL;
        if (!a || !b || strcmp(a, b) != 0) {
            fpp__log(FPP_LOG_ERROR, "journal %s belongs to another run: its function %d is %s%.64s%s, this run's is "
                     "%s%.64s%s (%d and %d registered; FPP_EMISMATCH)", path, i, a ? "\"" : "", a ? a : "none",
                     a ? "\"" : "", b ? "\"" : "", b ? b : "none", b ? "\"" : "", file->nfn, run->nfn);
            return FPP_EMISMATCH;
        }
    }
    return 0;
}

static int create_header(fpp__journal *jr, const jhead *run, bool fresh)
{
    jbuf b = {0};
    jb_put(&b, MAGIC, MAGIC_LEN);
    jhead_encode(&b, run);
    int rc = 0;
    if (b.oom) {
        rc = FPP_ENOMEM;
    } else if (ftruncate(jr->fd, 0) != 0) {
        rc = sys_fail("ftruncate", jr->path);
    } else if (write(jr->fd, b.p, b.len) != (ssize_t)b.len) {
        if (errno == 0)
            errno = ENOSPC;
        rc = sys_fail("write", jr->path);
    } else if (fdatasync(jr->fd) != 0) {
        rc = sys_fail("fdatasync", jr->path);
    } else {
        jr->off = b.len;
        if (fresh)
            sync_dir(jr->path);
    }
    fpp__free(b.p);
    return rc;
}

static int journal_open(fpp__journal *jr, const jhead *run)
{
    bool fresh = false;
    jr->fd = open(jr->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (jr->fd >= 0)
        fresh = true;
    else if (errno == EEXIST)
        jr->fd = open(jr->path, O_RDWR | O_APPEND | O_CLOEXEC);
    if (jr->fd < 0)
        return sys_fail("open", jr->path);
    fpp__fd_own(jr->fd);
    if (flock(jr->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            fpp__log(FPP_LOG_ERROR, "journal %s: in use by another task manager (of this process or another: it "
                     "holds the file's lock)", jr->path);
            return FPP_ESTATE;
        }
        return sys_fail("flock", jr->path);
    }
    jhead file;
    uint64_t good, torn;
    int rc = scan(jr->fd, jr->path, &file, &jr->prev, &good, &torn);
    if (rc == 2) {
        if (!fresh)
            fpp__log(FPP_LOG_WARN, "journal %s: it holds no whole header (cut short by a crash while it was created); "
                     "starting it again", jr->path);
        return create_header(jr, run, fresh);
    }
    if (rc)
        return rc;
    rc = compare_runs(jr->path, &file, run);
    jhead_free(&file);
    if (rc)
        return rc;
    if (torn) {
        fpp__log(FPP_LOG_WARN, "journal %s: cut a torn tail of %llu byte(s) at offset %llu (a record cut short by a "
                 "crash or a full disk)", jr->path, (unsigned long long)torn, (unsigned long long)good);
        if (ftruncate(jr->fd, (off_t)good) != 0)
            return sys_fail("ftruncate", jr->path);
    }
    jr->off = good;
    return 0;
}

int fpp__journal_open(fpp_tm *tm, const fpp_tm_opts *o)
{
    if (o->journal_flush_ms < 0 || o->journal_flush_ms > FLUSH_MS_MAX) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: journal_flush_ms = %d is out of 0..%d", o->journal_flush_ms, FLUSH_MS_MAX);
        return FPP_EINVAL;
    }
    if (o->journal_result_max > RESULT_MAX_LIMIT) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: journal_result_max = %zu is over %zu", o->journal_result_max,
                 RESULT_MAX_LIMIT);
        return FPP_EINVAL;
    }
    if (!*o->journal || (o->journal_key && strlen(o->journal_key) > MAX_KEY)) {
        fpp__log(FPP_LOG_ERROR, "fpp_tm_create: %s", !*o->journal ? "empty journal path" : "journal_key over 4096 bytes");
        return FPP_EINVAL;
    }
    fpp__journal *jr = fpp__calloc(1, sizeof *jr);
    if (!jr)
        return FPP_ENOMEM;
    pthread_mutex_init(&jr->fail_mu, NULL);
    jr->fd = -1;
    jr->path = fpp__strdup(o->journal);
    jr->bits = fpp__calloc(WINDOW / 64, sizeof *jr->bits);
    jhead run;
    int rc = jr->path && jr->bits ? jhead_of_run(&run, o->journal_key) : FPP_ENOMEM;
    if (rc) {
        jr_free(jr, true);
        return rc;
    }
    rc = journal_open(jr, &run);
    jhead_free(&run);
    if (!rc) {
        struct timespec m, w;
        clock_gettime(CLOCK_MONOTONIC, &m);
        clock_gettime(CLOCK_REALTIME, &w);
        jr->wall_off = ((int64_t)w.tv_sec - m.tv_sec) * 1000000000 + (w.tv_nsec - m.tv_nsec);
        jr->rerun_failed = tm->opts.flags & FPP_TM_RERUN_FAILED;
        jr->result_max = o->journal_result_max;
        jr->flush_ms = o->journal_flush_ms ? o->journal_flush_ms : FPP__JOURNAL_FLUSH_MS;
        jr->S = jr->hi = jr->prev.W;
        jr->mfn = -1;
        struct timespec res;
        int64_t tick = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 ? (int64_t)res.tv_sec * 1000000000 + res.tv_nsec
                                                                       : FPP__JOURNAL_PLAIN_NS;
        jr->plain_max = jr->result_max ? -1 : FPP__JOURNAL_PLAIN_NS - tick;
        atomic_init(&jr->written, jr->off);
        atomic_init(&jr->synced, jr->off);
        jr->flags = &tm->jflags;
        jr->busy = &tm->busy;
        jr->ex = tm->ex;
        rc = flusher_start(jr);
    }
    if (rc) {
        if (jr->fd >= 0)
            fpp__fd_close(jr->fd);
        jr_free(jr, true);
        return rc;
    }
    uint64_t fin = view_count(&jr->prev);
    if (fin)
        fpp__log(FPP_LOG_INFO, "journal %s: resuming: %llu task(s) finished in earlier runs (%zu of them failed%s) "
                 "are skipped", jr->path, (unsigned long long)fin, jr->prev.failed.n,
                 jr->rerun_failed && jr->prev.failed.n ? ": those run again" : "");
    tm->jr = jr;
    tm->resuming = fin > 0;
    return 0;
}

void fpp__journal_close(fpp_tm *tm)
{
    fpp__journal *jr = tm->jr;
    if (!jr)
        return;
    flusher_stop(jr);
    fpp__journal_sync(tm); /* a failure is logged */
    fpp__fd_close(jr->fd); /* also drops the lock */
    jr_free(jr, true);
    tm->jr = NULL;
}

void fpp__journal_forget(fpp_tm *tm)
{
    fpp__journal *jr = tm->jr;
    if (!jr)
        return;
    /* Another process: the flusher thread does not exist here and its mutex may be a copy
     * taken while held. Our copy of the descriptor goes; the parent's lock stays (it is the
     * open file's, which the parent still holds). */
    fpp__fd_close(jr->fd);
    jr_free(jr, false);
    tm->jr = NULL;
}

/* --------------------------------------------------------- the read API */

struct fpp_journal {
    char *path;
    int fd;
    jhead head;
    jview final;           /* the whole file, with its index of single-task records */
    uint64_t bytes, torn;
    int64_t *mark_to;      /* every mark's `to`, wall time, function and mean run time, for a */
    int64_t *mark_wall;    /* range's id */
    int64_t *mark_run;
    int *mark_fn;
    size_t nmarks, capmarks;
    /* Iteration: a second pass with a view of its own. */
    jreader it;
    jview itv;
    bool it_started, it_done;
    int64_t x_next, x_to, x_wall; /* the mark being expanded: next id, its end, its time, */
    int64_t x_mean;               /* its ids' mean run time */
    int x_fn;                     /* and their function */
    unsigned char *x_runs;        /* its open runs (a copy) */
    uint64_t x_nruns, x_run;
    int64_t *x_late;              /* ids with a record that it covers, sorted */
    size_t x_nlate, x_at;
    jreader one;                  /* fpp_journal_find's reads */
    char *errbuf;
    size_t errcap;
};

static const char *fn_name_of(const fpp_journal *j, int fn)
{
    return fn >= 0 && fn < j->head.nfn ? j->head.names[fn] : "?";
}

static int copy_error(fpp_journal *j, const char *s, uint32_t n, const char **out)
{
    if (n + 1 > j->errcap) {
        char *b = fpp__realloc(j->errbuf, (size_t)n + 1);
        if (!b)
            return FPP_ENOMEM;
        j->errbuf = b;
        j->errcap = (size_t)n + 1;
    }
    memcpy(j->errbuf, s, n);
    j->errbuf[n] = 0;
    *out = j->errbuf;
    return 0;
}

static int rec_of_task(fpp_journal *j, const jtask *t, fpp_journal_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->id = t->id;
    rec->status = t->status;
    rec->signo = t->signo;
    rec->attempts = t->attempts;
    rec->fn = t->fn;
    rec->fn_name = fn_name_of(j, t->fn);
    rec->start_ns = t->start;
    rec->runtime_ns = t->runtime;
    rec->arg_len = t->arg_len;
    rec->result_len = t->result_len;
    rec->result = (t->flags & 1) ? (t->result ? (const void *)t->result : (const void *)"") : NULL;
    rec->detail = 1;
    if (t->status == FPP_DONE)
        return 0;
    const char *e = t->errlen ? t->err : fpp_status_name(t->status);
    return copy_error(j, e, t->errlen ? t->errlen : (uint32_t)strlen(e), &rec->error);
}

static void rec_of_range(fpp_journal *j, int64_t id, int64_t wall, int64_t run, int fn, fpp_journal_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->id = id;
    rec->status = FPP_DONE;
    rec->attempts = 1;
    rec->fn = fn;
    rec->fn_name = fn_name_of(j, fn);
    rec->start_ns = wall;
    rec->runtime_ns = run;
}

static int64_t mark_mean(const jmark *m) { return m->nplain ? m->sum / (int64_t)m->nplain : 0; }

static void journal_free(fpp_journal *j)
{
    if (j->fd >= 0)
        close(j->fd);
    jhead_free(&j->head);
    view_free(&j->final);
    view_free(&j->itv);
    rd_free(&j->it);
    rd_free(&j->one);
    fpp__free(j->mark_to);
    fpp__free(j->mark_wall);
    fpp__free(j->mark_fn);
    fpp__free(j->mark_run);
    fpp__free(j->x_runs);
    fpp__free(j->x_late);
    fpp__free(j->errbuf);
    fpp__free(j->path);
    fpp__free(j);
}

static int keep_mark_time(fpp_journal *j, const unsigned char *p, uint32_t n)
{
    jmark m;
    jpl r = {p, n, false};
    m.from = jp_i64(&r);
    m.to = jp_i64(&r);
    m.wall = jp_i64(&r);
    m.fn = jp_i32(&r);
    m.nplain = jp_u64(&r);
    m.sum = jp_i64(&r);
    if (j->nmarks == j->capmarks) {
        size_t cap = j->capmarks ? j->capmarks * 2 : 256;
        int64_t *a = fpp__realloc(j->mark_to, cap * sizeof *a);
        if (!a)
            return FPP_ENOMEM;
        j->mark_to = a;
        int64_t *b = fpp__realloc(j->mark_wall, cap * sizeof *b);
        if (!b)
            return FPP_ENOMEM;
        j->mark_wall = b;
        int *c = fpp__realloc(j->mark_fn, cap * sizeof *c);
        if (!c)
            return FPP_ENOMEM;
        j->mark_fn = c;
        int64_t *d = fpp__realloc(j->mark_run, cap * sizeof *d);
        if (!d)
            return FPP_ENOMEM;
        j->mark_run = d;
        j->capmarks = cap;
    }
    j->mark_to[j->nmarks] = m.to;
    j->mark_run[j->nmarks] = mark_mean(&m);
    j->mark_fn[j->nmarks] = m.fn;
    j->mark_wall[j->nmarks++] = m.wall;
    return 0;
}

int fpp_journal_open(fpp_journal **out, const char *path)
{
    if (out)
        *out = NULL;
    if (!out || !path) {
        fpp__log(FPP_LOG_ERROR, "fpp_journal_open: NULL %s", !out ? "out pointer" : "path");
        return FPP_EINVAL;
    }
    fpp_journal *j = fpp__calloc(1, sizeof *j);
    if (!j)
        return FPP_ENOMEM;
    j->fd = -1;
    if (!(j->path = fpp__strdup(path))) {
        journal_free(j);
        return FPP_ENOMEM;
    }
    j->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (j->fd < 0) {
        int rc = sys_fail("open", path);
        journal_free(j);
        return rc;
    }
    j->final.with_index = true;
    uint64_t good, torn;
    int rc = scan(j->fd, path, &j->head, &j->final, &good, &torn);
    if (rc == 2) {
        fpp__log(FPP_LOG_ERROR, "fpp_journal_open(%s): no journal there (empty, or its header was cut short)", path);
        rc = FPP_EJOURNAL;
    }
    /* The marks' times, for fpp_journal_find: a second, cheap pass over the marks only. */
    jreader r = {.fd = j->fd, .size = good, .base = 0};
    if (!rc && rd_need(&r, MAGIC_LEN)) {
        r.off = MAGIC_LEN;
        int type;
        const unsigned char *p;
        uint32_t n;
        uint64_t at;
        while (!rc && rd_record(&r, &type, &p, &n, &at) == RD_OK)
            if (type == R_MARK)
                rc = keep_mark_time(j, p, n);
    }
    rd_free(&r);
    if (rc) {
        journal_free(j);
        return rc;
    }
    j->bytes = good;
    j->torn = torn;
    j->it = (jreader){.fd = j->fd, .size = good};
    j->one = (jreader){.fd = j->fd, .size = good};
    *out = j;
    return 0;
}

int fpp_journal_stat(const fpp_journal *j, fpp_journal_info *out)
{
    if (!j || !out) {
        fpp__log(FPP_LOG_ERROR, "fpp_journal_stat: NULL %s", j ? "info" : "journal");
        return FPP_EINVAL;
    }
    memset(out, 0, sizeof *out);
    out->key = j->head.key;
    out->nfn = j->head.nfn;
    out->fn_names = (const char *const *)j->head.names;
    out->fingerprint = j->head.fingerprint;
    out->created_ns = j->head.created;
    out->watermark = j->final.W;
    out->open = j->final.open.n;
    out->finished = view_count(&j->final);
    out->failed = j->final.failed.n;
    out->records = j->final.records;
    out->superseded = j->final.superseded;
    out->duplicates = j->final.duplicates;
    out->bytes = j->bytes;
    out->torn_bytes = j->torn;
    return 0;
}

int fpp_journal_rewind(fpp_journal *j)
{
    if (!j)
        return FPP_EINVAL;
    view_free(&j->itv);
    rd_seek(&j->it, 0);
    j->it_started = j->it_done = false;
    j->x_next = j->x_to = 0;
    fpp__free(j->x_late);
    j->x_late = NULL;
    j->x_nlate = j->x_at = 0;
    return 0;
}

/* The next id of the mark being expanded, if any: 1 and *id. */
static int expand_next(fpp_journal *j, int64_t *id)
{
    while (j->x_next < j->x_to) {
        int64_t x = j->x_next;
        while (j->x_run < j->x_nruns) {
            jrun r;
            memcpy(&r.start, j->x_runs + j->x_run * 16, 8);
            memcpy(&r.len, j->x_runs + j->x_run * 16 + 8, 8);
            if (x < r.start)
                break;
            if (x < r.start + r.len)
                x = r.start + r.len; /* open: skip the run */
            j->x_run++;
        }
        while (j->x_at < j->x_nlate && j->x_late[j->x_at] < x)
            j->x_at++;
        if (x >= j->x_to) {
            j->x_next = x;
            break;
        }
        if (j->x_at < j->x_nlate && j->x_late[j->x_at] == x) {
            j->x_next = x + 1; /* it has a record of its own, already handed out */
            continue;
        }
        j->x_next = x + 1;
        *id = x;
        return 1;
    }
    return 0;
}

int fpp_journal_next(fpp_journal *j, fpp_journal_rec *rec)
{
    if (!j || !rec) {
        fpp__log(FPP_LOG_ERROR, "fpp_journal_next: NULL %s", j ? "record" : "journal");
        return FPP_EINVAL;
    }
    int64_t id;
    for (;;) {
        if (expand_next(j, &id)) {
            rec_of_range(j, id, j->x_wall, j->x_mean, j->x_fn, rec);
            return 1;
        }
        if (j->it_done)
            return 0;
        if (!j->it_started) {
            if (!rd_need(&j->it, MAGIC_LEN))
                return FPP_EJOURNAL;
            j->it.off = MAGIC_LEN;
            j->it_started = true;
        }
        int type;
        const unsigned char *p;
        uint32_t n;
        uint64_t at;
        int k = rd_record(&j->it, &type, &p, &n, &at);
        if (k == RD_END || k == RD_TORN) {
            j->it_done = true;
            return 0;
        }
        if (k == RD_ERR)
            return rd_fail(&j->it, j->path);
        if (type == R_HEADER)
            continue;
        if (type == R_MARK) {
            jmark m;
            if (mark_parse(&m, p, n, j->itv.W))
                return FPP_EJOURNAL; /* the first pass read it fine: the file changed */
            unsigned char *runs = fpp__malloc(m.nruns * 16 + 1);
            if (!runs)
                return FPP_ENOMEM;
            memcpy(runs, m.runs, m.nruns * 16);
            fpp__free(j->x_late);
            j->x_late = NULL;
            int rc = view_mark(&j->itv, &m, &j->x_late, &j->x_nlate);
            if (rc) {
                fpp__free(runs);
                return rc;
            }
            fpp__free(j->x_runs);
            j->x_runs = runs;
            j->x_nruns = m.nruns;
            j->x_run = 0;
            j->x_at = 0;
            j->x_next = m.from;
            j->x_to = m.to;
            j->x_wall = m.wall;
            j->x_mean = mark_mean(&m);
            j->x_fn = m.fn;
            continue;
        }
        jtask t;
        if (task_parse(&t, type, p, n))
            return FPP_EJOURNAL;
        int rc = view_record(&j->itv, t.id, t.status, at);
        if (!rc)
            rc = rec_of_task(j, &t, rec);
        return rc ? rc : 1;
    }
}

int fpp_journal_find(fpp_journal *j, int64_t id, fpp_journal_rec *rec)
{
    if (!j || id < 0) {
        fpp__log(FPP_LOG_ERROR, j ? "fpp_journal_find: negative id %lld" : "fpp_journal_find: NULL journal",
                 (long long)id);
        return FPP_EINVAL;
    }
    if (!view_finished(&j->final, id))
        return 0;
    if (!rec)
        return 1;
    uint64_t *at = jm_find(&j->final.index, id);
    if (!at) {
        /* A range's id: the time of the first mark that covers it. */
        size_t lo = 0, hi = j->nmarks;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (j->mark_to[mid] > id)
                hi = mid;
            else
                lo = mid + 1;
        }
        bool in = lo < j->nmarks;
        rec_of_range(j, id, in ? j->mark_wall[lo] : 0, in ? j->mark_run[lo] : 0, in ? j->mark_fn[lo] : -1, rec);
        return 1;
    }
    rd_seek(&j->one, *at);
    int type;
    const unsigned char *p;
    uint32_t n;
    uint64_t off;
    int k = rd_record(&j->one, &type, &p, &n, &off);
    jtask t;
    if (k == RD_ERR)
        return rd_fail(&j->one, j->path);
    if (k != RD_OK || task_parse(&t, type, p, n) || t.id != id) {
        fpp__log(FPP_LOG_ERROR, "fpp_journal_find(%s): the record of task %lld changed since the journal was opened",
                 j->path, (long long)id);
        return FPP_EJOURNAL;
    }
    int rc = rec_of_task(j, &t, rec);
    return rc ? rc : 1;
}

void fpp_journal_close(fpp_journal *j)
{
    if (j)
        journal_free(j);
}
