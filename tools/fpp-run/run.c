/* run.c: the parent's side of a run. The jobs go to fpp as a lazy map (fpp_map): inputs are
 * read only as room frees, so memory stays constant over any number of inputs; with -k the
 * task manager returns the jobs in input order (FPP_TM_ORDERED: the reorder window counts
 * toward max_in_flight, so -k is bounded too). Reading input never blocks collecting results:
 * when the input has nothing ready the map ends, and a new map starts when it has (task ids,
 * and so the order, carry on from one map to the next).
 *
 * For each finished job, in the order they come: its stdout, then its stderr, written whole
 * (GNU parallel's grouping; with --tag every line prefixed by the values and a tab), or its
 * --results files; a failure line on stderr ("fpp-run: job 7 "in put": killed by SIGSEGV
 * (signal 11); 1 attempt"); its joblog line; then --halt's rules (GNU parallel's, exit
 * statuses included). Exit status: 0 when every job succeeded, else the number of failed jobs
 * up to 101, or what --halt says.
 *
 * Ctrl-C (and SIGTERM, SIGHUP): the handler tells the workers to start no more jobs, sends
 * SIGTERM to every running job's process group and interrupts the task manager
 * (fpp_tm_interrupt, FPP_TM_NO_SIGINT: fpp-run keeps SIGINT for itself); the loop then gives
 * the jobs 50 ms, sends SIGKILL to what is left, frees the pool (whose fork server kills
 * anything jobs left behind), flushes the output and the joblog, and ends by the same signal.
 * A second signal ends fpp-run at once (the fork server still kills every job).
 *
 * The journal (--joblog FILE: fpp's task journal in FILE.fppj, fpp_tm_opts.journal): every
 * input is a map item, so a task's id is its job's seq - 1. --resume / --resume-failed with a
 * journal: the task manager skips what it recorded (FPP_TM_RERUN_FAILED for --resume-failed);
 * a journal of another run (another key: journal_key) is refused. The journal and the joblog
 * are written apart, so a SIGKILL can leave a job in one only: one the joblog has takes its id
 * as a no-op task (fpp-run:logged) that the journal then records, and does not run again; one
 * the journal has (finished, its output never written: with -k, jobs wait for their turn) is
 * skipped by the task manager and runs again after the others, on a second task manager
 * without the journal (lost_job, rerun_lost), so that no output is lost. fpp's library
 * syncs the journal on Ctrl-C (fpp_tm_interrupt) and in fpp_tm_free. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fpp-run.h"

typedef struct side {
    int64_t id;
    uint64_t seq;
    bool noop;
    int64_t start_ns, t0_ns;
} side;

typedef struct run_state {
    fpp_tm *tm;
    int fn;
    const tmpl *t;
    inputs *in;
    seqset *done_before;   /* resume from a joblog (no journal) */
    fpp_journal *rj;       /* resume from the journal: what the earlier run recorded */
    seqset *logged;        /* with rj: the seqs the joblog has a line for */
    seqset *logged_ok;     /* ... a line of success for */
    int noop_pending;      /* 0, or 'O' / 'F': a no-op task to submit before the next map */
    strbuf lost;           /* jobs journaled but not in the joblog: (u64 seq, u64 len, item)... */
    size_t lost_at;
    uint64_t nlost;
    fpp_next iter;         /* the map's iterator: next_item, then next_lost */
    joblog *jl;
    progress *prog;
    strbuf arg, cmd, tmp, vbuf, fres;
    bool map_active, input_pending, input_eof;
    int halted;            /* HALT_SOON or HALT_NOW once --halt's condition is met */
    int out_errno;         /* the output (stdout, --results) could not be written: why */
    bool have_exit;
    int exit_status;
    side *ring;
    size_t ring_cap;
    int64_t next_id;
    uint64_t started, completed, failed, total;
    const char **vals;
    size_t *lens;
    int nvals_cap;
    fpp_task **held;       /* -k with --halt: finished jobs waiting for their turn (kept) */
    int64_t next_emit;
    size_t held_max;
} run_state;

static volatile sig_atomic_t g_stop;
static fpp_tm *volatile g_tm;

static void on_signal(int sig)
{
    if (g_stop) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop = sig;
    slots_stop_starting();
    slots_signal_jobs(SIGTERM);
    if (g_tm)
        fpp_tm_interrupt(g_tm);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void block_signals(bool block)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGHUP);
    sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &s, NULL);
}

/* ------------------------------------------------------------ the journal */

/* With a journal, a task's id is its job's seq - 1: every input is a map item, those the
 * journal has are skipped by the task manager. */

/* Whether the task manager skips id (resuming from the journal): the journal has its outcome,
 * a success, or a failure without --resume-failed. fill: the record. */
static bool journal_skips(run_state *R, int64_t id, fpp_journal_rec *rec)
{
    fpp_journal_rec r_;
    if (!rec)
        rec = &r_;
    if (!R->rj || fpp_journal_find(R->rj, id, rec) != 1)
        return false;
    return rec->status == FPP_DONE || g_cfg.resume != RESUME_FAILED;
}

/* A job the journal has but the joblog does not (the earlier run was killed after fpp
 * recorded it, before fpp-run wrote it out: with -k, jobs wait for their turn): the task
 * manager skips it, but its output was never written. Such jobs run again after the others,
 * without the journal (next_lost). R->logged is NULL when there is no joblog file. */
static bool lost_job(run_state *R, int64_t id, uint64_t seq)
{
    /* No joblog at all (removed by hand): the journal alone decides. */
    return R->logged && journal_skips(R, id, NULL) && !seqset_has(R->logged, seq);
}

/* -k with --halt: the ids the task manager skips never come back; step over them. */
static void skip_emitted(run_state *R)
{
    while (R->rj && R->next_emit < R->next_id && journal_skips(R, R->next_emit, NULL))
        R->next_emit++;
}

/* The run's fingerprint for the journal: what makes a job what it is (the mode, the command
 * or the function, the input sources' kinds and files and how they are split), not how it is
 * run (-j, --timeout, --retries, -k, --halt...), nor the inputs themselves: as with GNU
 * parallel, inputs added at the end of a source are run by --resume. Readable, shortened, with
 * a hash of the whole. */
static void journal_key(strbuf *k)
{
    strbuf d = {0};
    if (g_cfg.mode == MODE_FN) {
        sb_adds(&d, "--lib ");
        shell_quote(&d, g_cfg.lib, strlen(g_cfg.lib));
        sb_adds(&d, " --fn ");
        shell_quote(&d, g_cfg.fn, strlen(g_cfg.fn));
    } else {
        for (int i = 0; i < g_cfg.ncmd; i++) {
            if (i)
                sb_addc(&d, ' ');
            shell_quote(&d, g_cfg.cmd[i], strlen(g_cfg.cmd[i]));
        }
    }
    if (g_cfg.delim != '\n')
        sb_printf(&d, " -d 0x%02x", (unsigned char)g_cfg.delim);
    for (int i = 0; i < g_cfg.nsources; i++) {
        const source *src = &g_cfg.sources[i];
        if (src->kind == SRC_STDIN) {
            sb_adds(&d, " < stdin");
        } else if (src->kind == SRC_FILE) {
            sb_adds(&d, " :::: ");
            shell_quote(&d, src->path, strlen(src->path));
        } else {
            sb_adds(&d, " ::: ..."); /* not the values: inputs added at the end resume */
        }
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < d.len; i++)
        h = (h ^ (unsigned char)d.p[i]) * 1099511628211ull;
    k->len = 0;
    sb_adds(k, "fpp-run 1: ");
    sb_add_short(k, d.p ? d.p : "", d.len, 1024);
    sb_printf(k, " [%016llx]", (unsigned long long)h);
    sb_free(&d);
}

/* The journal's file beside the joblog: none for --joblog -, nor for a joblog that is not a
 * regular file (/dev/stdout, /dev/null, a pipe from the shell's >(...)): no run resumes from
 * those, and FILE.fppj beside them would be /dev/fd/63.fppj (no such directory) or a file
 * left in /dev. */
static char *journal_path(void)
{
    if (!g_cfg.joblog || strcmp(g_cfg.joblog, "-") == 0)
        return NULL;
    struct stat st;
    if (stat(g_cfg.joblog, &st) == 0 && !S_ISREG(st.st_mode))
        return NULL;
    size_t n = strlen(g_cfg.joblog);
    char *p = xmalloc(n + sizeof JOURNAL_SUFFIX);
    memcpy(p, g_cfg.joblog, n);
    memcpy(p + n, JOURNAL_SUFFIX, sizeof JOURNAL_SUFFIX);
    return p;
}

/* fpp's log lines, as main's sink; user: a text whose lines are left out (fpp-run says it). */
static void log_sink_run(fpp_log_level level, const char *msg, void *user)
{
    (void)level;
    if (user && strstr(msg, (const char *)user))
        return;
    warnx_("%s", msg);
}

static _Noreturn void mismatch(const char *path, const char *key)
{
    fpp_journal *j = NULL;
    fpp_journal_info info;
    strbuf m = {0};
    if (fpp_journal_open(&j, path) == 0 && fpp_journal_stat(j, &info) == 0) {
        sb_adds(&m, "; it holds: ");
        sb_add_short(&m, info.key, strlen(info.key), 300);
    }
    fpp_journal_close(j);
    die("%s: the journal %s beside --joblog %s is another run's (another command, input or mode); "
        "this run is: %s%s. Resume with the same command and inputs, or give a new --joblog "
        "(or remove %s and %s to start again)",
        g_cfg.resume == RESUME_FAILED ? "--resume-failed" : "--resume", path, g_cfg.joblog, key, m.p ? m.p : "",
        g_cfg.joblog, path);
}

int g_noop_fn = -1;

int noop_job(const void *arg, size_t len, fpp_out *out)
{
    if (len == 1 && *(const char *)arg == 'F')
        return fpp_out_fail(out, "finished by an earlier run: failed (by the joblog)"), 1;
    return 0;
}

/* ------------------------------------------------------------ the map's iterator */

static void save_lost(run_state *R, uint64_t seq, const void *arg, size_t len)
{
    uint64_t n = len;
    sb_add(&R->lost, &seq, sizeof seq);
    sb_add(&R->lost, &n, sizeof n);
    sb_add(&R->lost, arg, len);
    R->nlost++;
}

static side *side_of(run_state *R, int64_t id)
{
    side *s = &R->ring[(uint64_t)id % R->ring_cap];
    return s->id == id ? s : NULL;
}

static int next_item(void *state, const void **arg, size_t *len)
{
    run_state *R = state;
    if (R->halted || g_stop) {
        R->map_active = false;
        return 0;
    }
    if (R->held && (size_t)(R->next_id - R->next_emit) >= R->held_max) {
        R->map_active = false; /* the order window is full: a new map when it drains */
        return 0;
    }
    for (;;) {
        job_vals jv;
        int k = inputs_next(R->in, &jv);
        if (k == -2) {
            R->map_active = false;
            R->input_pending = true;
            return 0;
        }
        if (k <= 0) {
            R->map_active = false;
            R->input_eof = true;
            return 0;
        }
        if (seqset_has(R->done_before, jv.seq))
            continue;
        bool noop = false, lost = false;
        if (R->rj) {
            lost = lost_job(R, R->next_id, jv.seq);
            /* The joblog has it, the journal not (the earlier run was killed between the two):
             * not run again; a no-op task takes its id (the map ends for it). */
            noop = seqset_has(R->logged, jv.seq) && !journal_skips(R, R->next_id, NULL) &&
                   (g_cfg.resume == RESUME_ANY || seqset_has(R->logged_ok, jv.seq));
        }
        side *s = &R->ring[(uint64_t)R->next_id % R->ring_cap];
        s->id = R->next_id++;
        s->seq = jv.seq;
        s->noop = noop;
        if (noop) {
            R->noop_pending = seqset_has(R->logged_ok, jv.seq) ? 'O' : 'F';
            R->map_active = false;
            return 0;
        }
        s->start_ns = now_real_ns();
        s->t0_ns = now_mono_ns();
        R->started++;
        if (g_cfg.mode == MODE_FN) {
            *arg = jv.v[0];
            *len = jv.len[0];
            if (lost)
                save_lost(R, jv.seq, *arg, *len);
            return 1;
        }
        exec_arg_hdr h = {.seq = jv.seq, .nvals = (uint32_t)jv.n, .flags = 0};
        R->arg.len = 0;
        sb_add(&R->arg, &h, sizeof h);
        for (int i = 0; i < jv.n; i++) {
            uint32_t n = jv.len[i] > UINT32_MAX ? UINT32_MAX : (uint32_t)jv.len[i];
            sb_add(&R->arg, &n, sizeof n);
            sb_add(&R->arg, jv.v[i], n);
        }
        *arg = R->arg.p;
        *len = R->arg.len;
        if (lost)
            save_lost(R, jv.seq, *arg, *len);
        return 1;
    }
}

/* The map's iterator of the second pass: the lost jobs, in input order. */
static int next_lost(void *state, const void **arg, size_t *len)
{
    run_state *R = state;
    if (R->halted || g_stop || R->lost_at >= R->lost.len) {
        R->map_active = false;
        R->input_eof = true;
        return 0;
    }
    uint64_t seq, n;
    memcpy(&seq, R->lost.p + R->lost_at, sizeof seq);
    memcpy(&n, R->lost.p + R->lost_at + 8, sizeof n);
    *arg = R->lost.p + R->lost_at + 16;
    *len = (size_t)n;
    R->lost_at += 16 + (size_t)n;
    side *s = &R->ring[(uint64_t)R->next_id % R->ring_cap];
    s->id = R->next_id++;
    s->seq = seq;
    s->noop = false;
    s->start_ns = now_real_ns();
    s->t0_ns = now_mono_ns();
    R->started++;
    return 1;
}

/* The values of a finished task, decoded from its argument (NULL: it was too big to keep). */
static bool task_vals(run_state *R, const fpp_task *t, uint64_t seq, job_vals *jv)
{
    size_t len;
    const unsigned char *a = fpp_task_arg(t, &len);
    memset(jv, 0, sizeof *jv);
    jv->seq = seq;
    if (!a)
        return false;
    if (g_cfg.mode == MODE_FN) {
        if (R->nvals_cap < 1) {
            R->nvals_cap = 1;
            R->vals = xrealloc(R->vals, sizeof *R->vals);
            R->lens = xrealloc(R->lens, sizeof *R->lens);
        }
        R->vals[0] = (const char *)a;
        R->lens[0] = len;
        jv->n = 1;
        jv->v = R->vals;
        jv->len = R->lens;
        return true;
    }
    exec_arg_hdr h;
    if (len < sizeof h)
        return false;
    memcpy(&h, a, sizeof h);
    const unsigned char *p = a + sizeof h, *end = a + len;
    if ((int)h.nvals > R->nvals_cap) {
        R->nvals_cap = (int)h.nvals;
        R->vals = xrealloc(R->vals, (size_t)R->nvals_cap * sizeof *R->vals);
        R->lens = xrealloc(R->lens, (size_t)R->nvals_cap * sizeof *R->lens);
    }
    for (uint32_t i = 0; i < h.nvals; i++) {
        uint32_t n;
        if ((size_t)(end - p) < sizeof n)
            return false;
        memcpy(&n, p, sizeof n);
        p += sizeof n;
        if ((size_t)(end - p) < n)
            return false;
        R->vals[i] = (const char *)p;
        R->lens[i] = n;
        p += n;
    }
    jv->seq = h.seq;
    jv->n = (int)h.nvals;
    jv->v = R->vals;
    jv->len = R->lens;
    return true;
}

/* ------------------------------------------------------------ output */

typedef struct tagger {
    bool pretag;
} tagger;

/* Writes data to f, every line prefixed by the tag (GNU parallel: after each \n or \r that
 * more output follows, and at the start). */
static void put(FILE *f, const char *data, size_t n, const strbuf *tag, tagger *tg)
{
    if (!tag) {
        fwrite(data, 1, n, f);
        return;
    }
    size_t i = 0;
    while (i < n) {
        if (tg->pretag) {
            fwrite(tag->p, 1, tag->len, f);
            tg->pretag = false;
        }
        size_t j = i;
        while (j < n && data[j] != '\n' && data[j] != '\r')
            j++;
        if (j < n) {
            j++;
            tg->pretag = true;
        }
        fwrite(data + i, 1, j - i, f);
        i = j;
    }
}

static void put_file(FILE *f, const char *path, const strbuf *tag)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        warnx_("cannot read a job's spilled output %s: %s", path, strerror(errno));
        return;
    }
    char *buf = xmalloc(1 << 16);
    tagger tg = {true};
    for (;;) {
        ssize_t k = read(fd, buf, 1 << 16);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        put(f, buf, (size_t)k, tag, &tg);
    }
    free(buf);
    close(fd);
}

/* ------------------------------------------------------------ one finished job */

typedef struct job_end {
    int exitval, signal;
    unsigned attempts;
    bool timed_out;
    int64_t start_ns, runtime_ns;
    const char *out, *err;
    size_t out_len, err_len;
    const char *out_file, *err_file; /* spilled */
    uint64_t received;
    const char *cmd;
    size_t cmd_len;
    const char *detail; /* fpp's error, for the failure line */
} job_end;

static const char *signame(int sig, char *buf, size_t n)
{
    const char *a = sigabbrev_np(sig);
    if (a)
        snprintf(buf, n, "SIG%s", a);
    else
        snprintf(buf, n, "signal %d", sig);
    return buf;
}

static void failure_line(run_state *R, const job_vals *jv, bool have_vals, const job_end *e)
{
    strbuf m = {0};
    sb_printf(&m, FPPR_NAME ": job %llu ", (unsigned long long)jv->seq);
    if (have_vals) {
        R->tmp.len = 0;
        for (int i = 0; i < jv->n; i++) {
            if (i)
                sb_addc(&R->tmp, ' ');
            sb_add(&R->tmp, jv->v[i], jv->len[i]);
        }
        sb_reserve(&R->tmp, 0);
        sb_add_short(&m, R->tmp.p, R->tmp.len, 60);
    } else {
        sb_adds(&m, "(input too big to show)");
    }
    char sn[32];
    if (e->timed_out) {
        sb_printf(&m, ": timed out after %.3g s", g_cfg.timeout_ms / 1000.0);
        if (e->signal && g_cfg.mode == MODE_EXEC)
            sb_printf(&m, " (ended by %s)", signame(e->signal, sn, sizeof sn));
    } else if (e->signal) {
        sb_printf(&m, ": killed by %s (signal %d)", signame(e->signal, sn, sizeof sn), e->signal);
    } else {
        sb_printf(&m, ": exit status %d", e->exitval);
    }
    sb_printf(&m, "; %u attempt%s", e->attempts, e->attempts == 1 ? "" : "s");
    if (e->detail)
        sb_printf(&m, " (%s)", e->detail);
    sb_addc(&m, '\n');
    fflush(stdout);
    fwrite(m.p, 1, m.len, stderr);
    fflush(stderr);
    sb_free(&m);
}

/* GNU parallel's should_we_halt, after each finished job. */
static void check_halt(run_state *R, const job_end *e, bool failed)
{
    const halt_spec *h = &g_cfg.halt;
    if (h->when == HALT_NEVER || R->halted)
        return;
    double limit = -1;
    if (failed && h->why == HALT_FAIL)
        limit = (double)R->failed;
    else if (!failed && h->why == HALT_SUCCESS)
        limit = (double)(R->completed - R->failed);
    if (h->why == HALT_DONE)
        limit = (double)R->completed;
    if (limit < 0)
        return;
    double count = h->pct ? (double)R->total * h->value : h->value;
    if (limit < count)
        return;
    if (h->why == HALT_FAIL || h->why == HALT_DONE) {
        if (!R->have_exit) {
            if (h->pct)
                R->exit_status = (int)ceil((double)R->failed / (double)(R->total ? R->total : 1) * 100);
            else
                R->exit_status = (int)(R->failed < 101 ? R->failed : 101);
            if (count == 1)
                R->exit_status = e->exitval ? e->exitval : e->signal ? e->signal + 128 : 0;
            R->have_exit = true;
        }
    } else {
        R->exit_status = 0;
        R->have_exit = true;
    }
    R->halted = h->when;
    static const char *const why[] = {"fail", "success", "done"};
    warnx_("--halt %s,%s=%g%s reached: %s", h->when == HALT_NOW ? "now" : "soon", why[h->why],
           h->pct ? h->value * 100 : h->value, h->pct ? "%" : "",
           h->when == HALT_NOW ? "killing the running jobs" : "starting no more jobs, waiting for the running ones");
    /* soon: every job handed to the pool has a slot of its own (the window is -j), so it is
     * running, as far as GNU parallel's model goes, and runs to its end. */
    if (h->when == HALT_NOW)
        slots_stop_starting();
}

/* The jobs' output cannot be written (stdout: a full disk, a reader gone with SIGPIPE
 * ignored; --results: its files): the run stops as --halt now would (no output has anywhere
 * to go), and fpp-run ends with an error (141 for a broken pipe, as if SIGPIPE had killed
 * it; 255 otherwise). */
static void output_failed(run_state *R, int err, const char *what)
{
    if (R->out_errno)
        return;
    R->out_errno = err ? err : EIO;
    warnx_("%s: %s: the run stops (the jobs' output has nowhere to go)", what, strerror(R->out_errno));
    if (R->halted != HALT_NOW) {
        R->halted = HALT_NOW;
        slots_stop_starting();
    }
}

/* Writes a finished job out: its output (or --results files), its failure line, its joblog
 * line. */
static void emit(run_state *R, const job_vals *jv, bool have_vals, const job_end *e)
{
    bool failed = e->exitval != 0 || e->signal != 0;
    progress_clear(R->prog);
    if (g_cfg.results) {
        if (have_vals &&
            results_write(g_cfg.results, jv, e->out, e->out_len, e->out_file, e->err, e->err_len, e->err_file) != 0)
            output_failed(R, errno, "--results");
    } else {
        strbuf *tag = NULL;
        if (g_cfg.tag && have_vals) {
            R->vbuf.len = 0;
            for (int i = 0; i < jv->n; i++) {
                if (i)
                    sb_addc(&R->vbuf, ' ');
                sb_add(&R->vbuf, jv->v[i], jv->len[i]);
            }
            sb_addc(&R->vbuf, '\t');
            tag = &R->vbuf;
        }
        tagger tg = {true};
        if (e->out_file)
            put_file(stdout, e->out_file, tag);
        else if (e->out_len)
            put(stdout, e->out, e->out_len, tag, &tg);
        if (e->err_file || e->err_len) {
            fflush(stdout);
            tg.pretag = true;
            if (e->err_file)
                put_file(stderr, e->err_file, tag);
            else
                put(stderr, e->err, e->err_len, tag, &tg);
            fflush(stderr);
        }
    }
    if (!g_cfg.results && ferror(stdout))
        output_failed(R, errno, "writing the output");
    if (e->out_file)
        unlink(e->out_file);
    if (e->err_file)
        unlink(e->err_file);
    if (failed)
        failure_line(R, jv, have_vals, e);
    joblog_add(R->jl, jv->seq, e->start_ns, e->runtime_ns, e->received, e->exitval, e->signal, e->cmd, e->cmd_len);
}

/* Counts a finished job and applies --halt (at completion, as GNU parallel does, also with -k). */
static void account(run_state *R, const job_end *e)
{
    bool failed = e->exitval != 0 || e->signal != 0;
    R->completed++;
    if (failed)
        R->failed++;
    check_halt(R, e, failed);
    progress_update(R->prog, R->completed, R->failed, false);
}

/* The command line of a job for the joblog when the worker did not send it. */
static void command_of(run_state *R, const job_vals *jv, bool have_vals)
{
    R->cmd.len = 0;
    sb_reserve(&R->cmd, 0);
    if (!have_vals)
        return;
    if (g_cfg.mode == MODE_FN) {
        sb_adds(&R->cmd, g_cfg.fn);
        sb_addc(&R->cmd, ' ');
        shell_quote(&R->cmd, jv->v[0], jv->len[0]);
    } else {
        tmpl_command(R->t, jv, &R->cmd);
    }
}

/* "worker 4312 exited with status 3 ...": the status, or -1. */
static int exit_status_in(const char *msg)
{
    const char *p = msg ? strstr(msg, "exited with status ") : NULL;
    return p ? atoi(p + 19) : -1;
}

/* A decoded finished task: what emit and account need. Pointers into the task (and into
 * names, freed by done_free). */
typedef struct job_done {
    job_vals jv;
    bool have_vals;
    job_end e;
    char *oname, *ename;
} job_done;

static void done_free(job_done *d)
{
    free(d->oname);
    free(d->ename);
    d->oname = d->ename = NULL;
}

/* Decodes task t: 1, or 0 for a task that is no job (cancelled, or never started because the
 * run was halting). */
static int decode(run_state *R, fpp_task *t, job_done *d)
{
    memset(d, 0, sizeof *d);
    fpp_status st = fpp_task_status(t);
    if (st == FPP_CANCELLED)
        return 0;
    side *sd = side_of(R, fpp_task_id(t));
    if (sd && sd->noop)
        return 0;
    uint64_t seq = sd ? sd->seq : 0;
    job_vals *jv = &d->jv;
    job_end *e = &d->e;
    d->have_vals = task_vals(R, t, seq, jv);
    bool have_vals = d->have_vals;
    e->attempts = fpp_task_attempts(t);
    e->start_ns = sd ? sd->start_ns : now_real_ns();
    e->runtime_ns = sd ? now_mono_ns() - sd->t0_ns : 0;
    bool as_failure = g_cfg.mode == MODE_EXEC && st == FPP_FAILED && exec_fail_decode(fpp_task_error(t), &R->fres);
    if (g_cfg.mode == MODE_EXEC && (st == FPP_DONE || as_failure)) {
        size_t len;
        const unsigned char *r = as_failure ? (const unsigned char *)R->fres.p : fpp_task_result(t, &len);
        if (as_failure)
            len = R->fres.len;
        exec_res_hdr h;
        if (!r || len < sizeof h)
            goto bad;
        memcpy(&h, r, sizeof h);
        if (h.magic != EXEC_MAGIC)
            goto bad;
        if (h.flags & RES_SKIPPED)
            return 0;
        size_t inl = (h.flags & (RES_OUT_SPILLED | RES_ERR_SPILLED | RES_TOO_BIG)) ? 0 : h.out_len + h.err_len;
        if (sizeof h + (size_t)h.cmd_len + inl + h.out_name_len + h.err_name_len != len)
            goto bad;
        const char *p = (const char *)r + sizeof h;
        e->exitval = h.exitval;
        e->signal = h.signal;
        e->attempts = h.attempts;
        e->timed_out = h.flags & RES_TIMED_OUT;
        e->start_ns = h.start_ns;
        e->runtime_ns = h.runtime_ns;
        e->received = h.out_len;
        if (g_cfg.joblog) {
            if (h.cmd_len) {
                e->cmd = p;
                e->cmd_len = h.cmd_len;
            } else {
                command_of(R, jv, have_vals);
                e->cmd = R->cmd.p;
                e->cmd_len = R->cmd.len;
            }
        }
        p += h.cmd_len;
        if (inl) {
            e->out = p;
            e->out_len = h.out_len;
            e->err = p + h.out_len;
            e->err_len = h.err_len;
            p += inl;
        }
        if (h.out_name_len)
            e->out_file = d->oname = strndup(p, h.out_name_len);
        p += h.out_name_len;
        if (h.err_name_len)
            e->err_file = d->ename = strndup(p, h.err_name_len);
        if (h.flags & RES_TOO_BIG) {
            e->exitval = e->exitval ? e->exitval : 255;
            e->detail = g_cfg.mpi ? "its output is over the limit of --mpi (64 MiB): dropped"
                                  : "its output could not be kept: dropped";
        }
        return 1;
    bad:
        st = FPP_FAILED;
        e->detail = "the worker returned a malformed result";
    }
    if (g_cfg.mode == MODE_FN && st == FPP_DONE) {
        size_t len;
        const char *r = fpp_task_result(t, &len);
        e->out = r;
        e->out_len = r ? len : 0;
        e->received = e->out_len;
    } else {
        /* A task that fpp itself failed: the function failed (function mode), or crashed,
         * timed out, or never reached a worker. */
        if (!e->detail)
            e->detail = fpp_task_error(t);
        switch (st) {
        case FPP_TIMEOUT:
            e->exitval = -1;
            e->signal = SIGTERM; /* GNU parallel's record of a timed-out job */
            e->timed_out = true;
            e->detail = NULL;
            break;
        case FPP_CRASHED:
            e->signal = fpp_task_signal(t);
            e->exitval = e->signal ? 0 : exit_status_in(e->detail);
            if (!e->signal && e->exitval <= 0)
                e->exitval = 255;
            break;
        default:
            e->exitval = g_cfg.mode == MODE_FN ? 1 : 255;
            break;
        }
    }
    if (g_cfg.joblog) {
        command_of(R, jv, have_vals);
        e->cmd = R->cmd.p;
        e->cmd_len = R->cmd.len;
    }
    return 1;
}

/* Writes out the jobs held for -k with --halt, in order, as far as they are finished. */
static void emit_held(run_state *R)
{
    for (;;) {
        skip_emitted(R);
        fpp_task **slot = &R->held[(uint64_t)R->next_emit % R->ring_cap];
        if (!*slot || fpp_task_id(*slot) != R->next_emit)
            return;
        fpp_task *t = *slot;
        *slot = NULL;
        R->next_emit++;
        job_done d;
        if (decode(R, t, &d)) {
            emit(R, &d.jv, d.have_vals, &d.e);
            done_free(&d);
        }
        fpp_task_release(t);
    }
}

static void handle(run_state *R, fpp_task *t)
{
    job_done d;
    side *sd = side_of(R, fpp_task_id(t));
    bool noop = sd && sd->noop;
    if (R->held) {
        /* -k with --halt: jobs come in completion order, so that --halt sees each at once; they
         * are written in order. */
        int is_job = noop ? 0 : decode(R, t, &d);
        if (noop)
            memset(&d, 0, sizeof d);
        job_end e = d.e;
        done_free(&d);
        fpp_task *k = fpp_task_keep(t);
        if (k)
            R->held[(uint64_t)fpp_task_id(k) % R->ring_cap] = k;
        emit_held(R);
        if (is_job)
            account(R, &e);
        else if (fpp_task_status(t) != FPP_CANCELLED && !noop)
            R->started--; /* never started: halting */
        return;
    }
    if (noop)
        return;
    if (!decode(R, t, &d)) {
        if (fpp_task_status(t) != FPP_CANCELLED)
            R->started--;
        return;
    }
    emit(R, &d.jv, d.have_vals, &d.e);
    account(R, &d.e);
    done_free(&d);
}

/* ------------------------------------------------------------ the loop */

static void remove_spill_dir(void)
{
    if (!g_exec.spill_dir)
        return;
    DIR *d = opendir(g_exec.spill_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(g_exec.spill_dir);
}

static void flush_all(run_state *R)
{
    if (fflush(stdout) != 0 && !g_cfg.results)
        output_failed(R, errno, "writing the output");
    fflush(stderr);
    joblog_flush(R->jl, true);
}

static int final_status(run_state *R)
{
    if (g_cfg.halt.when != HALT_NEVER) {
        if (!R->have_exit) {
            if (g_cfg.halt.pct)
                R->exit_status = (int)ceil((double)R->failed / (double)(R->started ? R->started : 1) * 100);
            else
                R->exit_status = (int)(R->failed < 101 ? R->failed : 101);
        }
        return R->exit_status & 255;
    }
    return (int)(R->failed < 101 ? R->failed : 101);
}

/* Runs the maps of R->iter on R->tm until the input ends, --halt or a signal stops it, then
 * kills what is left as --halt now or Ctrl-C want and frees the task manager. Returns 0, or
 * the error that stopped the run. */
static int drive(run_state *R)
{
    int stop_rc = 0, rc;
    for (;;) {
        if (g_stop)
            break;
        if (R->noop_pending) {
            char a = (char)R->noop_pending;
            R->noop_pending = 0;
            int64_t id = fpp_submit(R->tm, g_noop_fn, &a, 1);
            if (id == FPP_EINTR)
                break;
            if (id < 0)
                die("cannot start the jobs: %s", fpp_strerror((int)id));
            if (id != R->next_id - 1)
                die("internal error: task id %lld for job %lld", (long long)id, (long long)R->next_id);
        }
        if (!R->map_active && !R->input_eof && !R->halted &&
            (!R->held || (size_t)(R->next_id - R->next_emit) < R->held_max)) {
            R->map_active = true;
            R->input_pending = false;
            rc = fpp_map(R->tm, R->fn, R->iter, R);
            if (rc == FPP_EINTR)
                break;
            if (rc < 0)
                die("cannot start the jobs: %s", fpp_strerror(rc));
        }
        fpp_task *task;
        rc = fpp_as_completed_for(R->tm, &task, 0);
        if (rc == FPP_ETIMEDOUT) {
            flush_all(R);
            progress_update(R->prog, R->completed, R->failed, false);
            int wait_ms = R->prog ? 100 : -1;
            if (R->input_pending && !R->input_eof && !R->halted)
                wait_ms = 10; /* look at the input again soon */
            rc = fpp_as_completed_for(R->tm, &task, wait_ms);
        }
        if (rc == 1) {
            handle(R, task);
            if (R->halted == HALT_NOW)
                break;
            joblog_flush(R->jl, false);
            continue;
        }
        if (rc == FPP_ETIMEDOUT)
            continue;
        if (rc == 0) {
            if (R->input_eof || R->halted)
                break;
            /* Nothing running: wait for input. */
            flush_all(R);
            inputs_wait(R->in, R->prog ? 100 : -1);
            continue;
        }
        if (rc == FPP_EINTR)
            break;
        stop_rc = rc;
        warnx_("the run stopped: %s", fpp_strerror(rc));
        break;
    }
    if (R->halted == HALT_NOW)
        slots_kill_jobs(false);
    if (g_stop) {
        /* Ctrl-C: the jobs had SIGTERM from the handler; 50 ms, then SIGKILL. */
        for (int waited = 0; waited < 50 && slots_jobs_alive(); waited += 5) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        slots_signal_jobs(SIGKILL);
    }
    fpp_stats fs;
    fpp_tm_stats(R->tm, &fs);
    R->started -= fs.skipped < R->started ? fs.skipped : R->started;
    block_signals(true);
    g_tm = NULL;
    fpp_tm_free(R->tm);
    R->tm = NULL;
    block_signals(false);
    return stop_rc;
}

/* The second pass: the lost jobs (lost_job) run again, on a task manager of their own without
 * the journal (which has them already). Killed meanwhile, they are still missing from the
 * joblog, so the next --resume runs them again. */
static int rerun_lost(run_state *R, fpp_executor *ex, const fpp_tm_opts *to)
{
    warnx_("%llu job(s) of the earlier run finished but were never written out (it was killed): running "
           "them again, after the others",
           (unsigned long long)R->nlost);
    fpp_tm_opts o = *to;
    o.journal = NULL;
    o.journal_key = NULL;
    o.flags &= ~(unsigned)FPP_TM_RERUN_FAILED;
    if (g_cfg.keep_order)
        o.flags |= FPP_TM_ORDERED;
    free(R->held);
    R->held = NULL;
    for (size_t i = 0; i < R->ring_cap; i++)
        R->ring[i].id = -1;
    fpp_journal_close(R->rj);
    R->rj = NULL;
    R->next_id = R->next_emit = 0;
    R->map_active = R->input_pending = R->input_eof = false;
    R->noop_pending = 0;
    int rc = fpp_tm_create(&R->tm, ex, &o);
    if (rc)
        die("cannot create the task manager: %s", fpp_strerror(rc));
    R->iter = next_lost;
    g_tm = R->tm;
    return drive(R);
}

int run_jobs(fpp_executor *ex, int fn, const tmpl *t)
{
    run_state R_, *R = &R_;
    memset(R, 0, sizeof *R);
    R->fn = fn;
    R->t = t;
    bool need_total = g_cfg.bar || g_cfg.eta || (g_cfg.halt.when != HALT_NEVER && g_cfg.halt.pct);
    R->in = inputs_open(&g_cfg, need_total);
    R->total = inputs_total(R->in);
    /* The journal: resumed when --resume finds one, else made anew. A joblog with no journal
     * beside it (GNU parallel's) is resumed from its lines, without a journal. */
    char *jpath = g_cfg.mpi ? NULL : journal_path();
    bool jexists = jpath && access(jpath, F_OK) == 0;
    if (g_cfg.resume != RESUME_NONE && !jexists) {
        R->done_before = resume_load(g_cfg.joblog, g_cfg.resume == RESUME_FAILED);
        struct stat st;
        if (stat(g_cfg.joblog, &st) == 0 && st.st_size > 0) {
            free(jpath); /* ids would not be seqs: no journal for this run */
            jpath = NULL;
        }
    }
    if (jpath && g_cfg.resume == RESUME_NONE && jexists && unlink(jpath) != 0)
        die("cannot remove the old journal %s: %s", jpath, strerror(errno));
    if (jpath && g_cfg.resume != RESUME_NONE && jexists) {
        int jrc = fpp_journal_open(&R->rj, jpath);
        if (jrc)
            die("%s: cannot read the journal %s: %s", g_cfg.resume == RESUME_FAILED ? "--resume-failed" : "--resume",
                jpath, fpp_strerror(jrc));
        if (access(g_cfg.joblog, F_OK) == 0) {
            R->logged = resume_load(g_cfg.joblog, false);
            R->logged_ok = resume_load(g_cfg.joblog, true);
        }
    }
    strbuf key = {0};
    journal_key(&key);
    if (g_cfg.bar || g_cfg.eta)
        R->prog = progress_new(R->total, g_cfg.bar);
    static char outbuf[1 << 16], errbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    setvbuf(stderr, errbuf, _IOFBF, sizeof errbuf);

    int workers = fpp_executor_workers(ex);
    if (workers < 1)
        workers = g_cfg.jobs;
    /* With --halt, a job starts only when a slot's last job has been looked at (as GNU
     * parallel does), so no job starts after the condition is met. */
    size_t window = g_cfg.halt.when != HALT_NEVER ? (size_t)workers
                                                  : (size_t)(workers * 64 < 128 ? 128 : workers * 64) + 2 * (size_t)workers;
    /* -k with --halt: fpp-run orders the output itself, so that --halt sees every job as it
     * finishes (GNU parallel halts on completion, not in output order); the jobs held back
     * are bounded like FPP_TM_ORDERED's window. */
    bool own_order = g_cfg.keep_order && g_cfg.halt.when != HALT_NEVER;
    R->held_max = own_order ? (size_t)workers * 64 + 16 : 0;
    R->ring_cap = 4 * (window + R->held_max) + 16;
    R->ring = xcalloc(R->ring_cap, sizeof *R->ring);
    for (size_t i = 0; i < R->ring_cap; i++)
        R->ring[i].id = -1;
    if (own_order)
        R->held = xcalloc(R->ring_cap, sizeof *R->held);
    fpp_tm_opts to = {.error_policy = FPP_IGNORE, .monitor_interval_ms = -1, .max_in_flight = window,
                      .flags = FPP_TM_NO_SIGINT | (g_cfg.keep_order && !own_order ? FPP_TM_ORDERED : 0)};
    if (g_cfg.mode == MODE_FN && g_cfg.attempts != 1) {
        to.retries = g_cfg.attempts == 0 ? 1000 : g_cfg.attempts - 1;
        to.flags |= FPP_TM_RETRY_FAILED;
    }
    if (jpath) {
        to.journal = jpath;
        to.journal_key = key.p;
        if (g_cfg.resume == RESUME_FAILED)
            to.flags |= FPP_TM_RERUN_FAILED;
    }
    if (R->rj)
        fpp_log_set(log_sink_run, (void *)"belongs to another run", FPP_LOG_WARN); /* said below */
    int rc = fpp_tm_create(&R->tm, ex, &to);
    fpp_log_set(log_sink_run, NULL, FPP_LOG_WARN);
    if (rc == FPP_EMISMATCH)
        mismatch(jpath, key.p);
    if (rc)
        die("cannot create the task manager%s%s: %s", jpath ? " with the journal " : "", jpath ? jpath : "",
            fpp_strerror(rc));
    if (g_cfg.joblog)
        R->jl = joblog_open(g_cfg.joblog, g_cfg.joblog_append || g_cfg.resume != RESUME_NONE);
    g_tm = R->tm;
    install_signals();
    R->iter = next_item;
    int stop_rc = drive(R);
    if (!stop_rc && !g_stop && !R->halted && R->lost.len)
        stop_rc = rerun_lost(R, ex, &to);
    progress_free(R->prog);
    flush_all(R);
    joblog_close(R->jl);
    remove_spill_dir();
    int status = final_status(R);
    if (stop_rc)
        status = FPPR_EXIT_ERROR;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = errno;
        if (!R->out_errno)
            warnx_("writing the output: %s", strerror(e ? e : EIO));
        R->out_errno = R->out_errno ? R->out_errno : e ? e : EIO;
    }
    if (R->out_errno)
        status = R->out_errno == EPIPE ? 141 : FPPR_EXIT_ERROR;
    inputs_close(R->in);
    seqset_free(R->done_before);
    seqset_free(R->logged);
    seqset_free(R->logged_ok);
    fpp_journal_close(R->rj);
    free(jpath);
    sb_free(&key);
    sb_free(&R->fres);
    sb_free(&R->lost);
    free(R->ring);
    free(R->held);
    free(R->vals);
    free(R->lens);
    sb_free(&R->arg);
    sb_free(&R->cmd);
    sb_free(&R->tmp);
    sb_free(&R->vbuf);
    if (g_stop)
        return -(int)g_stop; /* main frees the executor, then ends by this signal */
    return status;
}

int run_dry(const tmpl *t)
{
    inputs *in = inputs_open(&g_cfg, false);
    seqset *done = NULL;
    run_state R_, *R = &R_;
    memset(R, 0, sizeof *R);
    char *jpath = journal_path();
    strbuf key = {0};
    if (g_cfg.resume != RESUME_NONE && jpath && access(jpath, F_OK) == 0) {
        /* As the task manager would: the same run's journal, or a refusal. */
        journal_key(&key);
        fpp_journal_info info;
        int jrc = fpp_journal_open(&R->rj, jpath);
        if (jrc || fpp_journal_stat(R->rj, &info) != 0)
            die("%s: cannot read the journal %s: %s", g_cfg.resume == RESUME_FAILED ? "--resume-failed" : "--resume",
                jpath, fpp_strerror(jrc ? jrc : FPP_EJOURNAL));
        if (strcmp(info.key, key.p) != 0)
            mismatch(jpath, key.p);
        /* The joblog's lines count too (a run killed between the two): as run_jobs does. */
        done = resume_load(g_cfg.joblog, g_cfg.resume == RESUME_FAILED);
        if (access(g_cfg.joblog, F_OK) == 0)
            R->logged = resume_load(g_cfg.joblog, false);
    } else if (g_cfg.resume != RESUME_NONE) {
        done = resume_load(g_cfg.joblog, g_cfg.resume == RESUME_FAILED);
    }
    strbuf cmd = {0};
    job_vals jv;
    int k;
    while ((k = inputs_next(in, &jv)) != 0) {
        if (k == -2) {
            inputs_wait(in, -1);
            continue;
        }
        if (k < 0)
            break;
        /* As run_jobs: a job the journal skips runs only if the joblog lacks it (lost_job); one
         * the journal does not skip, only if the joblog does not count it as done. */
        if (R->rj && journal_skips(R, (int64_t)jv.seq - 1, NULL) ? !R->logged || seqset_has(R->logged, jv.seq)
                                                                 : seqset_has(done, jv.seq))
            continue;
        /* What GNU parallel's --dry-run prints for {%}: its jobs "end" at once, so one slot
         * (-j1) or two alternate, whatever -j is. */
        jv.slot = g_cfg.jobs == 1 ? 1 : (unsigned)((jv.seq - 1) % 2) + 1;
        if (g_cfg.mode == MODE_FN) {
            cmd.len = 0;
            sb_adds(&cmd, g_cfg.fn);
            sb_addc(&cmd, ' ');
            shell_quote(&cmd, jv.v[0], jv.len[0]);
        } else {
            tmpl_command(t, &jv, &cmd);
        }
        fwrite(cmd.p, 1, cmd.len, stdout);
        fputc('\n', stdout);
    }
    sb_free(&cmd);
    seqset_free(done);
    seqset_free(R->logged);
    fpp_journal_close(R->rj);
    free(jpath);
    sb_free(&key);
    inputs_close(in);
    if (fflush(stdout) != 0) {
        warnx_("writing the output: %s", strerror(errno));
        return FPPR_EXIT_ERROR;
    }
    return k < 0 ? FPPR_EXIT_ERROR : 0;
}
