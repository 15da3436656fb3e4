/* joblog.c: the joblog in GNU parallel's format, and resume_load.
 *
 * Format (GNU parallel's, byte for byte): a header line, then one line per finished job, in
 * the order the jobs' output is written:
 *   Seq TAB Host TAB Starttime TAB JobRuntime TAB Send TAB Receive TAB Exitval TAB Signal TAB
 *   Command
 * Host ":" (local), Starttime "%.3f" seconds since the epoch, JobRuntime "%10.3f" (truncated to
 * the millisecond), Send 0, Receive the bytes of stdout, Exitval the exit status (-1: timed
 * out), Signal the signal that ended the job, Command the command line with each newline
 * written as a NUL. "+FILE" appends; --resume and --resume-failed append too.
 *
 * Durability: lines are buffered and written (write(2), no fsync) at most 10 ms after the job
 * finished, before every wait, and at the end or on Ctrl-C, so a SIGKILL of fpp-run loses at
 * most the last 10 ms of finished jobs, which --resume then runs again. A line cut by a kill is
 * ignored by resume_load, and cut off before appending.
 *
 * resume_load answers "which sequence numbers did a previous run's joblog record": run.c resumes
 * from it alone when the joblog has no fpp journal beside it (FILE.fppj, e.g. a joblog GNU
 * parallel wrote), and otherwise uses it next to the journal, to find the jobs one of the two
 * has and the other lacks (a run killed between writing them). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpp-run.h"

#define FLUSH_NS 10000000 /* 10 ms */

struct joblog {
    int fd;
    bool own;
    strbuf buf;
    int64_t oldest_ns; /* when the oldest unwritten line was added; 0: none */
};

/* The length of the file's part made of whole lines (cut by a kill: the rest). */
static off_t whole_lines(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0)
        return 0;
    off_t end = st.st_size;
    char buf[4096];
    while (end > 0) {
        off_t from = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        ssize_t k = pread(fd, buf, (size_t)(end - from), from);
        if (k <= 0)
            return st.st_size;
        for (ssize_t i = k - 1; i >= 0; i--)
            if (buf[i] == '\n')
                return from + i + 1;
        end = from;
    }
    return 0;
}

joblog *joblog_open(const char *path, bool append)
{
    joblog *j = xcalloc(1, sizeof *j);
    if (strcmp(path, "-") == 0) {
        j->fd = 1;
        sb_adds(&j->buf, "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
        return j;
    }
    j->fd = open(path, (append ? O_RDWR : O_WRONLY | O_TRUNC) | O_CREAT | O_CLOEXEC, 0644);
    if (j->fd < 0)
        die("cannot %s --joblog %s: %s", append ? "append to" : "write to", path, strerror(errno));
    j->own = true;
    off_t keep = append ? whole_lines(j->fd) : 0;
    if (append) {
        off_t size = lseek(j->fd, 0, SEEK_END);
        if (size > keep && ftruncate(j->fd, keep) != 0)
            die("cannot cut the unfinished last line of --joblog %s: %s", path, strerror(errno));
        lseek(j->fd, 0, SEEK_END);
    }
    if (keep == 0)
        sb_adds(&j->buf, "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
    joblog_flush(j, true);
    return j;
}

void joblog_add(joblog *j, uint64_t seq, int64_t start_ns, int64_t runtime_ns, uint64_t received, int exitval,
                int signal, const char *cmd, size_t cmd_len)
{
    if (!j)
        return;
    if (runtime_ns < 0)
        runtime_ns = 0;
    int64_t ms = runtime_ns / 1000000; /* GNU parallel truncates to the millisecond */
    char rt[32];
    snprintf(rt, sizeof rt, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
    sb_printf(&j->buf, "%llu\t:\t%lld.%03lld\t%10s\t0\t%llu\t%d\t%d\t", (unsigned long long)seq,
              (long long)(start_ns / 1000000000), (long long)(start_ns / 1000000 % 1000), rt,
              (unsigned long long)received, exitval, signal);
    size_t at = j->buf.len;
    sb_add(&j->buf, cmd, cmd_len);
    for (size_t i = at; i < j->buf.len; i++)
        if (j->buf.p[i] == '\n')
            j->buf.p[i] = 0;
    sb_addc(&j->buf, '\n');
    if (!j->oldest_ns)
        j->oldest_ns = now_mono_ns();
}

void joblog_flush(joblog *j, bool force)
{
    if (!j || j->buf.len == 0)
        return;
    if (!force && now_mono_ns() - j->oldest_ns < FLUSH_NS && j->buf.len < (1 << 16))
        return;
    if (j->fd == 1)
        fflush(stdout); /* --joblog -: after the output written before it */
    if (write_all(j->fd, j->buf.p, j->buf.len) != 0)
        die("writing the joblog: %s", strerror(errno));
    j->buf.len = 0;
    j->oldest_ns = 0;
}

void joblog_close(joblog *j)
{
    if (!j)
        return;
    joblog_flush(j, true);
    if (j->own)
        close(j->fd);
    sb_free(&j->buf);
    free(j);
}

/* ------------------------------------------------------------ resume */

struct seqset {
    uint64_t *bits;
    uint64_t nwords;
};

bool seqset_has(const seqset *s, uint64_t seq)
{
    return s && seq / 64 < s->nwords && (s->bits[seq / 64] >> (seq % 64) & 1);
}

static void seqset_add(seqset *s, uint64_t seq)
{
    if (seq / 64 >= s->nwords) {
        uint64_t n = s->nwords ? s->nwords : 16;
        while (n <= seq / 64)
            n *= 2;
        s->bits = xrealloc(s->bits, n * sizeof *s->bits);
        memset(s->bits + s->nwords, 0, (n - s->nwords) * sizeof *s->bits);
        s->nwords = n;
    }
    s->bits[seq / 64] |= (uint64_t)1 << (seq % 64);
}

void seqset_free(seqset *s)
{
    if (s)
        free(s->bits);
    free(s);
}

/* Parses "Seq Host Start Runtime Send Receive Exitval Signal Command": 1 ok, 0 malformed. */
static int parse_line(char *line, uint64_t *seq, long *exitval, long *sig)
{
    char *f[9];
    char *p = line;
    for (int n = 0; n < 8; n++) {
        f[n] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            return 0;
        *tab = 0;
        p = tab + 1;
    }
    f[8] = p;
    char *end;
    errno = 0;
    unsigned long long s = strtoull(f[0], &end, 10);
    if (errno || end == f[0] || *end)
        return 0;
    long e = strtol(f[6], &end, 10);
    if (end == f[6] || *end)
        return 0;
    long g = strtol(f[7], &end, 10);
    if (end == f[7] || *end)
        return 0;
    *seq = s;
    *exitval = e;
    *sig = g;
    return 1;
}

seqset *resume_load(const char *path, bool failed_too)
{
    seqset *s = xcalloc(1, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return s;
        die("cannot read --joblog %s: %s", path, strerror(errno));
    }
    strbuf b = {0};
    char chunk[1 << 16];
    size_t start = 0, lineno = 0;
    for (;;) {
        ssize_t k = read(fd, chunk, sizeof chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("reading --joblog %s: %s", path, strerror(errno));
        if (k == 0)
            break;
        sb_add(&b, chunk, (size_t)k);
        char *nl;
        while ((nl = memchr(b.p + start, '\n', b.len - start)) != NULL) {
            *nl = 0;
            char *line = b.p + start;
            start = (size_t)(nl - b.p) + 1;
            if (lineno++ == 0 && strncmp(line, "Seq\t", 4) == 0)
                continue;
            uint64_t seq;
            long ev, sig;
            if (!parse_line(line, &seq, &ev, &sig))
                die("--joblog %s, line %zu: not a joblog line (Seq, Host, Starttime, JobRuntime, Send, Receive, "
                    "Exitval, Signal, Command separated by tabs)",
                    path, lineno);
            if (!failed_too || (ev == 0 && sig == 0))
                seqset_add(s, seq);
        }
        if (start > (1 << 20)) {
            memmove(b.p, b.p + start, b.len - start);
            b.len -= start;
            start = 0;
        }
    }
    /* An unfinished last line (the run was killed while writing it) does not count. */
    close(fd);
    sb_free(&b);
    return s;
}
