/* input.c: where the jobs' values come from. Input sources are stdin (the default), files
 * (-a FILE, :::: FILE, "-" for stdin) and lists on the command line (::: a b c); each gives one
 * value per line (or per NUL with -0, per byte given with -d). Several sources give every
 * combination, the first source varying slowest (GNU parallel's order); the first is streamed,
 * the others are read whole, as every line of the first needs them again. So memory stays
 * constant over any number of lines of the first source.
 *
 * Reading never blocks the run: a pipe or terminal with nothing ready makes inputs_next return
 * -2 (the caller waits on it with inputs_wait while it collects results). An input longer than
 * FPPR_MAX_ARG is cut to FPPR_MAX_ARG + 1 bytes and the rest of it skipped, so that its job
 * fails as too big instead of the run holding the whole line.
 *
 * Counting (for --bar, --eta and --halt with a percentage): files are read once to count their
 * values; stdin (or any input that cannot be read twice) is first copied into an unnamed
 * temporary file ($TMPDIR), so memory stays constant there too. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpp-run.h"

typedef struct reader {
    int fd;
    bool own_fd, is_reg, eof, skipping;
    char delim;
    char *buf;
    size_t cap, start, end;
    const char *name;
} reader;

typedef struct value_list {
    char **v;
    size_t *len;
    size_t n;
    bool owned; /* read from a file (else the command line's) */
} value_list;

struct inputs {
    int nsrc;
    reader r0;         /* source 0 when it is read */
    bool r0_used;
    value_list l0;     /* source 0 when it is a list */
    size_t l0_next;
    value_list *rest;  /* sources 1.. */
    size_t *idx;       /* their odometer */
    bool have0;        /* a value of source 0 is current (several sources) */
    strbuf cur0;
    uint64_t seq, total;
    bool empty;        /* some other source has no value: no job at all */
    const char **vals;
    size_t *lens;
};

static int open_input(const char *path, const char **name)
{
    if (strcmp(path, "-") == 0) {
        *name = "stdin";
        return 0;
    }
    *name = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("cannot open input file %s: %s", path, strerror(errno));
    return fd;
}

static void reader_init(reader *r, int fd, bool own, char delim, const char *name)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->own_fd = own;
    r->delim = delim;
    r->name = name;
    struct stat st;
    r->is_reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    r->cap = 64 * 1024;
    r->buf = xmalloc(r->cap);
}

static void reader_close(reader *r)
{
    if (r->own_fd && r->fd > 2)
        close(r->fd);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* 1: a value at *p (n bytes), valid until the next call; 0: end; -2: nothing ready; -1: error. */
static int reader_next(reader *r, const char **p, size_t *n)
{
    for (;;) {
        char *d = r->start < r->end ? memchr(r->buf + r->start, r->delim, r->end - r->start) : NULL;
        if (d) {
            size_t len = (size_t)(d - (r->buf + r->start));
            const char *line = r->buf + r->start;
            r->start += len + 1;
            if (r->skipping) {
                r->skipping = false;
                continue;
            }
            *p = line;
            *n = len;
            return 1;
        }
        size_t have = r->end - r->start;
        if (r->skipping) {
            r->start = r->end = 0;
            have = 0;
        } else if (have > FPPR_MAX_ARG) {
            /* Too long: the job gets FPPR_MAX_ARG + 1 bytes (and fails as too big). */
            *p = r->buf + r->start;
            *n = FPPR_MAX_ARG + 1;
            r->start = r->end;
            r->skipping = true;
            return 1;
        }
        if (r->eof) {
            if (have && !r->skipping) {
                *p = r->buf + r->start;
                *n = have;
                r->start = r->end;
                return 1;
            }
            return 0;
        }
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, have);
            r->start = 0;
            r->end = have;
        }
        if (r->cap - r->end < 16 * 1024) {
            r->cap *= 2;
            r->buf = xrealloc(r->buf, r->cap);
        }
        if (!r->is_reg) {
            struct pollfd pf = {.fd = r->fd, .events = POLLIN};
            int k = poll(&pf, 1, 0);
            if (k == 0)
                return -2;
            if (k < 0 && errno == EINTR)
                return -2;
        }
        ssize_t k = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (k > 0) {
            r->end += (size_t)k;
        } else if (k == 0) {
            r->eof = true;
        } else if (errno == EAGAIN || errno == EINTR) {
            return -2;
        } else {
            warnx_("reading %s: %s", r->name, strerror(errno));
            return -1;
        }
    }
}

/* Reads a whole source into a list. */
static void read_all(const char *path, char delim, value_list *l)
{
    const char *name;
    int fd = open_input(path, &name);
    reader r;
    reader_init(&r, fd, fd != 0, delim, name);
    r.is_reg = true; /* block: the whole of it is needed before the first job */
    size_t cap = 0;
    const char *p;
    size_t n;
    int k;
    while ((k = reader_next(&r, &p, &n)) == 1) {
        if (l->n == cap) {
            cap = cap ? cap * 2 : 64;
            l->v = xrealloc(l->v, cap * sizeof *l->v);
            l->len = xrealloc(l->len, cap * sizeof *l->len);
        }
        l->v[l->n] = xmalloc(n + 1);
        memcpy(l->v[l->n], p, n);
        l->v[l->n][n] = 0;
        l->len[l->n++] = n;
    }
    if (k < 0)
        die("cannot read input %s", name);
    reader_close(&r);
}

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* Counts the values of fd (read to its end); a file that cannot be read twice is copied into
 * an unnamed temporary file first, whose descriptor replaces *fd. */
static uint64_t count_values(int *fd, char delim, const char *name)
{
    struct stat st;
    int src = *fd;
    bool seekable = fstat(src, &st) == 0 && S_ISREG(st.st_mode) && lseek(src, 0, SEEK_CUR) >= 0;
    int spool = -1;
    if (!seekable) {
        spool = open(tmpdir(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (spool < 0)
            spool = memfd_create("fpp-run-input", MFD_CLOEXEC);
        if (spool < 0)
            die("cannot make a temporary file in %s to count the inputs: %s", tmpdir(), strerror(errno));
    }
    off_t start = seekable ? lseek(src, 0, SEEK_CUR) : 0;
    char *buf = xmalloc(1 << 16);
    uint64_t count = 0;
    char last = delim;
    bool any = false;
    for (;;) {
        ssize_t k = read(src, buf, 1 << 16);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("reading %s: %s", name, strerror(errno));
        if (k == 0)
            break;
        any = true;
        for (char *p = buf, *e = buf + k; (p = memchr(p, delim, (size_t)(e - p))) != NULL; p++)
            count++;
        last = buf[k - 1];
        if (spool >= 0 && write_all(spool, buf, (size_t)k) != 0)
            die("writing a temporary copy of %s: %s", name, strerror(errno));
    }
    free(buf);
    if (any && last != delim)
        count++;
    if (spool >= 0) {
        if (src > 2)
            close(src);
        lseek(spool, 0, SEEK_SET);
        *fd = spool;
    } else {
        lseek(src, start, SEEK_SET);
    }
    return count;
}

inputs *inputs_open(const config *c, bool need_total)
{
    inputs *in = xcalloc(1, sizeof *in);
    in->nsrc = c->nsources;
    const source *s0 = &c->sources[0];
    uint64_t total = 1;
    if (s0->kind == SRC_LIST) {
        in->l0.v = s0->vals;
        in->l0.n = s0->nvals;
        in->l0.len = xmalloc((s0->nvals + 1) * sizeof *in->l0.len);
        for (size_t i = 0; i < s0->nvals; i++)
            in->l0.len[i] = strlen(s0->vals[i]);
        total = s0->nvals;
    } else {
        const char *name;
        int fd = open_input(s0->kind == SRC_STDIN ? "-" : s0->path, &name);
        if (need_total)
            total = count_values(&fd, c->delim, name);
        reader_init(&in->r0, fd, fd != 0, c->delim, name);
        in->r0_used = true;
    }
    if (c->nsources > 1) {
        in->rest = xcalloc((size_t)c->nsources - 1, sizeof *in->rest);
        in->idx = xcalloc((size_t)c->nsources - 1, sizeof *in->idx);
        for (int i = 1; i < c->nsources; i++) {
            const source *s = &c->sources[i];
            value_list *l = &in->rest[i - 1];
            if (s->kind == SRC_LIST) {
                l->v = s->vals;
                l->n = s->nvals;
                l->len = xmalloc((s->nvals + 1) * sizeof *l->len);
                for (size_t k = 0; k < s->nvals; k++)
                    l->len[k] = strlen(s->vals[k]);
            } else {
                read_all(s->kind == SRC_STDIN ? "-" : s->path, c->delim, l);
                l->owned = true;
            }
            if (l->n == 0)
                in->empty = true;
            total *= l->n;
        }
    }
    in->total = need_total ? total : 0;
    in->vals = xcalloc((size_t)c->nsources, sizeof *in->vals);
    in->lens = xcalloc((size_t)c->nsources, sizeof *in->lens);
    return in;
}

/* The next value of source 0. */
static int next0(inputs *in, const char **p, size_t *n)
{
    if (!in->r0_used) {
        if (in->l0_next >= in->l0.n)
            return 0;
        *p = in->l0.v[in->l0_next];
        *n = in->l0.len[in->l0_next++];
        return 1;
    }
    return reader_next(&in->r0, p, n);
}

int inputs_next(inputs *in, job_vals *jv)
{
    if (in->empty)
        return 0;
    if (in->nsrc == 1) {
        int k = next0(in, &in->vals[0], &in->lens[0]);
        if (k != 1)
            return k;
    } else {
        if (!in->have0) {
            const char *p;
            size_t n;
            int k = next0(in, &p, &n);
            if (k != 1)
                return k;
            in->cur0.len = 0;
            sb_add(&in->cur0, p, n);
            in->have0 = true;
            memset(in->idx, 0, (size_t)(in->nsrc - 1) * sizeof *in->idx);
        }
        in->vals[0] = in->cur0.p;
        in->lens[0] = in->cur0.len;
        for (int i = 1; i < in->nsrc; i++) {
            in->vals[i] = in->rest[i - 1].v[in->idx[i - 1]];
            in->lens[i] = in->rest[i - 1].len[in->idx[i - 1]];
        }
        /* Advance the odometer, the last source fastest. */
        int i = in->nsrc - 2;
        for (; i >= 0; i--) {
            if (++in->idx[i] < in->rest[i].n)
                break;
            in->idx[i] = 0;
        }
        if (i < 0)
            in->have0 = false;
    }
    jv->seq = ++in->seq;
    jv->n = in->nsrc;
    jv->v = in->vals;
    jv->len = in->lens;
    jv->slot = 0;
    return 1;
}

int inputs_wait(inputs *in, int timeout_ms)
{
    if (!in->r0_used || in->r0.is_reg || in->r0.eof)
        return 1;
    struct pollfd pf = {.fd = in->r0.fd, .events = POLLIN};
    int k = poll(&pf, 1, timeout_ms);
    if (k < 0)
        return errno == EINTR ? -1 : 1;
    return k > 0;
}

uint64_t inputs_total(const inputs *in) { return in->total; }


void inputs_close(inputs *in)
{
    if (!in)
        return;
    if (in->r0_used)
        reader_close(&in->r0);
    free(in->l0.len);
    for (int i = 1; i < in->nsrc; i++) {
        value_list *l = &in->rest[i - 1];
        if (l->owned) {
            for (size_t k = 0; k < l->n; k++)
                free(l->v[k]);
            free(l->v);
        }
        free(l->len);
    }
    free(in->rest);
    free(in->idx);
    sb_free(&in->cur0);
    free(in->vals);
    free(in->lens);
    free(in);
}
