/* fpp-run.h: what the parts of fpp-run share (internal, not installed): the configuration the
 * command line makes, the small helpers (buffers, errors, sizes), and one declaration block per
 * part, each part being one file of tools/fpp-run/:
 *   main.c      the command line: options, refusals, --help, --version; the modes; --mpi
 *   input.c     input sources (stdin, -a, :::, ::::, -0, -d), their combinations, counting
 *   template.c  the command template: replacement strings, GNU parallel's quoting, shell or
 *               direct exec
 *   exec.c      exec mode's worker side: one command per task, output captured, timeouts
 *               and retries in the worker, the job slots ({%}) and process groups
 *   run.c       the parent's loop: the lazy map, ordered output, --tag, failure lines,
 *               --halt, Ctrl-C, the exit status
 *   joblog.c    the joblog (GNU parallel's format, flushed every 10 ms) and resume_load
 *               (run.c keeps fpp's task journal beside it, FILE.fppj, and resumes from that)
 *   results.c   --results DIR
 *   progress.c  --bar / --eta: the progress line
 *   util.c      buffers, messages, clocks, sizes
 * Uses only the public API (fpp.h, fpp_mpi.h). */
#ifndef FPP_RUN_H
#define FPP_RUN_H

#include <fpp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FPPR_NAME "fpp-run"
#define FPPR_EXIT_ERROR 255         /* GNU parallel's "other error" */
#define FPPR_MAX_ARG ((size_t)1 << 20) /* an input (all its values) up to 1 MiB */
#define FPPR_INLINE_MAX ((size_t)128 << 10) /* job output carried in the result; more is spilled
                                             (so -k holds at most window x 128 KiB) */
#define FPPR_MAX_CMD ((size_t)2 << 20)    /* the command line returned for the joblog */
#define FPPR_MPI_MAX_RESULT ((size_t)64 << 20)
#define JOURNAL_SUFFIX ".fppj" /* --joblog FILE: fpp's task journal is FILE.fppj */

/* ------------------------------------------------------------------ helpers */

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

void sb_reserve(strbuf *b, size_t extra);
void sb_add(strbuf *b, const void *data, size_t n);
void sb_adds(strbuf *b, const char *s);
void sb_addc(strbuf *b, char c);
void sb_printf(strbuf *b, const char *fmt, ...) FPP_PRINTF(2, 3);
void sb_free(strbuf *b);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Prints "fpp-run: message" on stderr. */
void warnx_(const char *fmt, ...) FPP_PRINTF(1, 2);
/* Prints "fpp-run: message" and exits with status 255. */
_Noreturn void die(const char *fmt, ...) FPP_PRINTF(1, 2);
int64_t now_mono_ns(void);
int64_t now_real_ns(void);
/* "12", "1.5K", "256M", "2GiB" (powers of 1024): bytes in *out; 0 or -1 (bad). */
int parse_size(const char *s, uint64_t *out);
/* Writes all of n bytes to fd (retries EINTR and short writes): 0 or -1. */
int write_all(int fd, const void *p, size_t n);
/* An input shortened for a message: C-escaped, at most about max bytes, "..." in the middle. */
void sb_add_short(strbuf *b, const char *s, size_t n, size_t max);

/* ------------------------------------------------------------------ config */

enum { MODE_EXEC, MODE_FN };
enum { RESUME_NONE, RESUME_ANY, RESUME_FAILED };
enum { HALT_NEVER, HALT_SOON, HALT_NOW };
enum { HALT_FAIL, HALT_SUCCESS, HALT_DONE };
enum { SRC_STDIN, SRC_FILE, SRC_LIST };

typedef struct halt_spec {
    int when, why;
    bool pct;
    double value; /* a count, or a fraction (pct) */
} halt_spec;

typedef struct source {
    int kind;
    const char *path; /* SRC_FILE */
    char **vals;      /* SRC_LIST: values from the command line */
    size_t nvals;
} source;

typedef struct config {
    int mode;
    int jobs;             /* workers (per rank with --mpi) */
    unsigned timeout_ms;  /* 0: none */
    unsigned attempts;    /* --retries N: N attempts in all (GNU parallel); 0: no bound; 1 default */
    halt_spec halt;
    const char *joblog;
    bool joblog_append;   /* "+FILE" */
    int resume;
    bool keep_order, tag, bar, eta, dry_run, mpi;
    const char *results;
    uint64_t max_rss;     /* bytes; 0: none */
    const char *lib, *fn;
    char delim;
    source *sources;
    int nsources;
    char **cmd;
    int ncmd;
} config;

extern config g_cfg;

/* ------------------------------------------------------------------ input.c */

typedef struct inputs inputs;
/* One job's values (one per source), valid until the next inputs_next. */
typedef struct job_vals {
    uint64_t seq; /* from 1 */
    unsigned slot;
    int n;
    const char **v;
    const size_t *len;
} job_vals;

/* Opens every source (the first one is streamed; the others are read whole, as their
 * combinations need them again and again). need_total: count the jobs first (stdin is spooled
 * to an unnamed temporary file for that). Exits with a message on error. */
inputs *inputs_open(const config *c, bool need_total);
/* 1: *jv is the next job; 0: no more; -2: the input has nothing ready now (a pipe or terminal
 * that would block; inputs_wait waits for it); -1: a read error (reported). An input longer
 * than FPPR_MAX_ARG is cut to FPPR_MAX_ARG + 1 bytes (so that it fails as too big). */
int inputs_next(inputs *in, job_vals *jv);
/* Waits until the streamed input has something or ends (timeout_ms < 0: for ever): 1 ready,
 * 0 timed out, -1 interrupted. */
int inputs_wait(inputs *in, int timeout_ms);
/* The number of jobs, when counted (need_total), else 0. */
uint64_t inputs_total(const inputs *in);
void inputs_close(inputs *in);

/* ------------------------------------------------------------------ template.c */

enum { MOD_NONE, MOD_DOT, MOD_BASE, MOD_DIR, MOD_BASEDOT, MOD_SEQ, MOD_SLOT };

typedef struct tseg {
    bool rpl;
    char *text; /* literal */
    size_t len;
    int src;    /* replacement: 0 all sources, else 1-based */
    int mod;
} tseg;

typedef struct tword {
    tseg *segs;
    int nsegs;
} tword;

typedef struct tmpl {
    tseg *segs;        /* the command line GNU parallel builds: words joined with spaces */
    int nsegs;
    bool has_rpl;      /* else the values are appended */
    bool direct;       /* run without a shell: the line needs none */
    char *exe;         /* direct: the resolved program */
    tword *words;      /* direct: argv, word by word */
    int nwords;
    const char *shell; /* otherwise: $PARALLEL_SHELL, $SHELL or /bin/sh, with -c */
    const char *why_shell;
} tmpl;

/* Parses the command words. Returns 0, or -1 with a message in err. */
int tmpl_parse(tmpl *t, char **words, int n, char *err, size_t errlen);
/* The command line as GNU parallel writes it (values quoted): for the shell, --dry-run and
 * the joblog. */
void tmpl_command(const tmpl *t, const job_vals *v, strbuf *out);
/* Direct mode: argv for the job, its strings in *store (NUL-separated); returns argc. */
int tmpl_argv(const tmpl *t, const job_vals *v, strbuf *store, char ***argv, size_t *argv_cap);
/* GNU parallel's shell quoting of one value. */
void shell_quote(strbuf *out, const char *s, size_t n);
/* A replacement string's value (one source's value with a modifier). */
void apply_mod(int mod, const char *s, size_t n, const job_vals *v, strbuf *out);

/* ------------------------------------------------------------------ exec.c */

/* An exec task's argument: header, then each value (u32 length, bytes). */
typedef struct exec_arg_hdr {
    uint64_t seq;
    uint32_t nvals;
    uint32_t flags; /* none yet: 0 */
} exec_arg_hdr;

/* An exec task's result: header, command line, then stdout and stderr (inline) or their
 * spill file names. */
#define EXEC_MAGIC 0x66707072u
enum { RES_OUT_SPILLED = 1, RES_ERR_SPILLED = 2, RES_TIMED_OUT = 4, RES_SPAWN_FAILED = 8, RES_SKIPPED = 16,
       RES_TOO_BIG = 32 };
typedef struct exec_res_hdr {
    uint32_t magic;
    uint32_t flags;
    int32_t exitval, signal;
    uint32_t attempts, slot;
    int64_t start_ns, runtime_ns; /* of the last attempt: realtime start, duration */
    uint64_t out_len, err_len;    /* the streams' sizes */
    uint32_t cmd_len;             /* bytes of command line following */
    uint32_t out_name_len, err_name_len; /* spill file names following the inline bytes */
    uint32_t pad;
} exec_res_hdr;

/* The run's settings the workers need, set before the executor exists (workers see the program
 * as it was then). */
typedef struct exec_setup {
    const tmpl *t;
    unsigned timeout_ms;
    unsigned attempts;
    bool want_cmd;           /* return the command line (joblog) */
    bool spill;              /* may spill large output to files (not with --mpi) */
    size_t inline_max;
    const char *tmpdir;      /* for the capture files */
    const char *spill_dir;   /* made on first use */
    pid_t run_pid;           /* fpp-run itself: $PARALLEL_PID */
    bool journal;            /* the run keeps a task journal: a failed job fails its task
                                (error text: EXEC_FAIL_TAG, the header in hex, the spill file
                                names), a job never started is never a finished task */
} exec_setup;
#define EXEC_FAIL_TAG "fpp-run job failed: "
/* Decodes a failed task's error text written with EXEC_FAIL_TAG into a result as exec_job
 * returns it (header, then the spill file names) in *res: true, or false (another error). */
bool exec_fail_decode(const char *err, strbuf *res);

extern exec_setup g_exec;

int exec_job(const void *arg, size_t len, fpp_out *out);
/* The table of job slots (shared memory): made before the executor, for `n` workers. */
void slots_create(int n);
/* Asks every worker to start no more jobs (halting, Ctrl-C). Async-signal-safe. */
void slots_stop_starting(void);
/* Sends sig to the process group of every running job. Async-signal-safe. */
void slots_signal_jobs(int sig);
/* Whether a running job's process group still has a process. */
bool slots_jobs_alive(void);
/* GNU parallel's --term-seq on every running job: TERM,200,TERM,100,TERM,50,KILL,25 (short:
 * TERM, 50 ms, KILL). */
void slots_kill_jobs(bool short_seq);

/* ------------------------------------------------------------------ joblog.c */

typedef struct joblog joblog;
/* Opens the joblog (appending with --resume or "+FILE", else truncating and writing the
 * header). Exits with a message on error. */
joblog *joblog_open(const char *path, bool append);
void joblog_add(joblog *j, uint64_t seq, int64_t start_ns, int64_t runtime_ns, uint64_t received, int exitval,
                int signal, const char *cmd, size_t cmd_len);
/* Writes what is buffered when the flush period (10 ms) passed, or always with force. */
void joblog_flush(joblog *j, bool force);
void joblog_close(joblog *j);

/* Resume from a joblog: the set of sequence numbers it records, from its Seq, Exitval and
 * Signal columns (a joblog written by GNU parallel works too). With fpp's journal beside the
 * joblog, the journal decides (run.c); this set then only finds the jobs the joblog has and
 * the journal lacks. */
typedef struct seqset seqset;
/* failed_too: --resume-failed (only jobs with Exitval 0 and Signal 0 count as finished).
 * A missing file is an empty set. Exits with a message on a malformed line. */
seqset *resume_load(const char *path, bool failed_too);
bool seqset_has(const seqset *s, uint64_t seq);
void seqset_free(seqset *s);

/* ------------------------------------------------------------------ results.c */

/* --results DIR: DIR/1/<value>/2/<value>/{seq,stdout,stderr} as GNU parallel. */
/* --results DIR: made if missing; 0, or -1 (errno) if it is no directory this run can write
 * in (GNU parallel refuses to start then too). */
int results_check(const char *dir);
int results_write(const char *dir, const job_vals *v, const void *out, size_t out_len, const char *out_file,
                  const void *err, size_t err_len, const char *err_file);

/* ------------------------------------------------------------------ progress.c */

typedef struct progress progress;
progress *progress_new(uint64_t total, bool bar);
void progress_update(progress *p, uint64_t done, uint64_t failed, bool force);
/* Erases the line before other output goes to the terminal. */
void progress_clear(progress *p);
void progress_free(progress *p);

/* ------------------------------------------------------------------ run.c */

/* A task that runs nothing: a job an earlier run finished by its joblog but not by its journal
 * (killed between the two) takes its id, so that the journal records it; argument "F": it
 * failed (the task fails), else it succeeded. */
int noop_job(const void *arg, size_t len, fpp_out *out);
extern int g_noop_fn;

/* Runs the jobs on ex (made by main: a process executor, or MPI's) and returns the exit status.
 * fn: the registered function (exec_job's id in exec mode). */
int run_jobs(fpp_executor *ex, int fn, const tmpl *t);
/* --dry-run: prints the commands; returns the exit status. */
int run_dry(const tmpl *t);

#endif
