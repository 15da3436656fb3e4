/* main.c: fpp-run's command line and set-up. Options have GNU parallel's names and meanings;
 * anything else (an option GNU parallel has that fpp-run does not, or a misspelt one) is
 * refused with a message naming it, never ignored. Then the mode: exec mode registers
 * exec.c's function and parses the command template; function mode (--lib, --fn) dlopens the
 * library, whose constructor registers its functions with fpp_register. Everything the workers
 * need is set before the executor exists (they see the program as it was then). With --mpi
 * (under mpirun) rank 0 reads the inputs and drives the run on fpp_mpi_executor; every other
 * rank serves with fpp_mpi_serve. Exit statuses: run.c's, or 255 for a usage error. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpp-run.h"
#ifdef FPP_RUN_WITH_MPI
#include <fpp_mpi.h>
#endif

config g_cfg;

static const char usage_text[] =
    "Usage: fpp-run [options] command [args with {} ...] [::: values ... | :::: files ...]\n"
    "       fpp-run [options] --lib ./libjob.so --fn NAME [::: values | :::: files]\n"
    "\n"
    "Runs a command (exec mode) or a function of a library (function mode) once per input,\n"
    "in fpp's pool of crash-isolated worker processes, with GNU parallel's options.\n"
    "A job that segfaults, hangs, calls exit() or leaks fails alone; the run goes on.\n"
    "\n"
    "Inputs (one job per value; several sources: every combination):\n"
    "  (none)                lines of stdin\n"
    "  -a, --arg-file FILE   lines of FILE (repeatable; - is stdin)\n"
    "  ::: a b c             these values;   :::: FILE...   lines of each FILE\n"
    "  -0, --null            values end with NUL instead of newline\n"
    "  -d, --delimiter C     values end with C (\\n, \\t, \\0 understood)\n"
    "\n"
    "Replacement strings in the command ({N...}: input source N only):\n"
    "  {}  the value       {.}  without extension     {/}  basename     {//}  dirname\n"
    "  {/.} basename without extension   {#} sequence number   {%} job slot (1..-j)\n"
    "  Without any, the values are appended. The line runs without a shell when it needs\n"
    "  none, else with $PARALLEL_SHELL, $SHELL or /bin/sh. Jobs see $PARALLEL_SEQ,\n"
    "  $PARALLEL_JOBSLOT and $PARALLEL_PID; stdin is /dev/null.\n"
    "\n"
    "Options:\n"
    "  -j, --jobs N          jobs at once: N, +N, -N (CPUs plus/minus N), N% of CPUs\n"
    "                        (default: the number of CPUs)\n"
    "  -k, --keep-order      output in input order (default: as jobs finish)\n"
    "  --tag                 prefix each output line with the values and a tab\n"
    "  --timeout SECS        kill a job past SECS (suffix s, m, h, d): TERM, then KILL\n"
    "  --retries N           run a failing job up to N times in all (0: until it succeeds)\n"
    "  --halt WHEN,WHY=N     stop early: WHEN now|soon, WHY fail|success|done, N a count\n"
    "                        or a percentage (N%); also never, 0, 1, 2, -1, -2, N%\n"
    "  --joblog FILE         GNU parallel's joblog (+FILE appends; - is stdout), and fpp's\n"
    "                        task journal beside it in FILE.fppj\n"
    "  --resume              with --joblog: skip the jobs the journal (else the joblog)\n"
    "                        has; another command than the journal's is refused\n"
    "  --resume-failed       with --joblog: also run again the jobs that failed\n"
    "  --results DIR         each job's stdout, stderr and seq under DIR/1/<value>/...\n"
    "  --bar, --eta          a progress line with the ETA (when stderr is a terminal)\n"
    "  --dry-run             print the commands, run nothing\n"
    "  --lib FILE --fn NAME  function mode: NAME(line bytes) -> output bytes, per input\n"
    "  --max-rss SIZE        function mode: replace a worker grown past SIZE (K, M, G)\n"
    "  --mpi                 under mpirun: rank 0 reads inputs, all other ranks run jobs\n"
    "  --will-cite, --group  accepted, no effect (GNU parallel's defaults)\n"
    "  --help, --version\n"
    "\n"
    "Each failed job gets one line on stderr: its number, its input, its exit status or\n"
    "signal, and its attempts. Exit status: 0 when every job succeeded, else the number of\n"
    "failed jobs up to 101 (or as --halt says); 255 for an error of fpp-run's own.\n"
    "One Ctrl-C kills every running job's process group and ends the run; the joblog and\n"
    "the journal are written, so --resume carries on from there.\n"
    "\n"
    "Examples:\n"
    "  find . -name '*.gz' | fpp-run -k gzip -t      # one job per line of stdin\n"
    "  fpp-run --joblog log --timeout 60 ./parse {} ::: data/*.json\n"
    "  fpp-run -j 2 --lib ./libparse.so --fn parse < lines.txt > results.txt\n";

static _Noreturn void refuse(const char *opt)
{
    die("%s: option not supported (it is GNU parallel's, or unknown); fpp-run --help lists what is", opt);
}

static void need(const char *opt, const char *val)
{
    if (!val)
        die("%s needs a value", opt);
}

static int parse_jobs(const char *s)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno)
        die("-j %s: not a number of jobs (N, +N, -N or N%%)", s);
    double n;
    if (*end == '%' && end[1] == 0)
        n = floor(ncpu * v / 100);
    else if (*end)
        die("-j %s: not a number of jobs (N, +N, -N or N%%)", s);
    else if (s[0] == '+' || s[0] == '-')
        n = (double)ncpu + v;
    else
        n = v;
    if (n < 1 && (s[0] == '-' || *end == '%'))
        n = 1;
    if (n == 0 && s[0] != '+')
        die("-j 0 (as many as possible) is not supported: give a number of jobs (1..1024)");
    if (n < 1 || n > 1024 || n != floor(n))
        die("-j %s: %g jobs is out of range (1..1024)", s, n);
    return (int)n;
}

static unsigned parse_timeout(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno)
        die("--timeout %s: not a duration (seconds, or with s, m, h, d)", s);
    if (v == 0 && *end == 0)
        return 0; /* GNU parallel's --timeout 0: none */
    if (*end == '%')
        die("--timeout %s: a timeout relative to the median run time is not supported", s);
    double mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end)
        die("--timeout %s: not a duration (seconds, or with s, m, h, d)", s);
    double ms = ceil(v * mul * 1000);
    if (ms < 1 || ms > 4000000000.0)
        die("--timeout %s: out of range (1 ms to 46 days)", s);
    return (unsigned)ms;
}

static void parse_halt(const char *s, halt_spec *h)
{
    static const char *const expand[][2] = {{"0", "never"}, {"1", "soon,fail=1"}, {"2", "now,fail=1"},
                                            {"-1", "soon,success=1"}, {"-2", "now,success=1"}};
    if (strlen(s) > 100)
        die("--halt %.100s...: not a --halt value", s);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (size_t i = 0; i < sizeof expand / sizeof expand[0]; i++)
        if (strcmp(s, expand[i][0]) == 0)
            snprintf(buf, sizeof buf, "%s", expand[i][1]);
    size_t n = strlen(buf);
    if (n > 1 && buf[n - 1] == '%' && strspn(buf, "0123456789") == n - 1) {
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%s", buf);
        snprintf(buf, sizeof buf, "soon,fail=%.100s", tmp);
    }
    memset(h, 0, sizeof *h);
    char *why = strchr(buf, ',');
    if (why)
        *why++ = 0;
    if (strcmp(buf, "never") == 0)
        return;
    if (strcmp(buf, "soon") == 0)
        h->when = HALT_SOON;
    else if (strcmp(buf, "now") == 0)
        h->when = HALT_NOW;
    else
        die("--halt %s: must have 'never', 'soon', or 'now'", s);
    char *val = why ? strchr(why, '=') : NULL;
    if (val)
        *val++ = 0;
    if (why && strcmp(why, "fail") == 0)
        h->why = HALT_FAIL;
    else if (why && strcmp(why, "success") == 0)
        h->why = HALT_SUCCESS;
    else if (why && strcmp(why, "done") == 0)
        h->why = HALT_DONE;
    else
        die("--halt %s: %s must be followed by ,fail=N, ,success=N or ,done=N", s, buf);
    size_t d = val ? strspn(val, "0123456789") : 0;
    if (!val || d == 0 || d > 9 || (val[d] && strcmp(val + d, "%") != 0))
        die("--halt %s: %s,%s must be followed by =number or =percent%%", s, buf, why);
    h->pct = val[d] == '%';
    h->value = atof(val);
    if (h->pct)
        h->value /= 100;
}

static char parse_delim(const char *s)
{
    if (strcmp(s, "\\n") == 0)
        return '\n';
    if (strcmp(s, "\\t") == 0)
        return '\t';
    if (strcmp(s, "\\0") == 0)
        return 0;
    if (strcmp(s, "\\r") == 0)
        return '\r';
    if (strcmp(s, "\\\\") == 0)
        return '\\';
    if (strlen(s) != 1)
        die("-d %s: a delimiter of one character is supported (or \\n, \\t, \\0, \\r)", s);
    return s[0];
}

static void add_source(config *c, source s)
{
    c->sources = xrealloc(c->sources, (size_t)(c->nsources + 1) * sizeof *c->sources);
    c->sources[c->nsources++] = s;
}

enum { O_JOBS = 1, O_KEEP, O_TAG, O_TIMEOUT, O_RETRIES, O_HALT, O_JOBLOG, O_RESUME, O_RESUME_FAILED, O_RESULTS,
       O_BAR, O_ETA, O_DRYRUN, O_ARGFILE, O_NULL, O_DELIM, O_LIB, O_FN, O_MAXRSS, O_MPI, O_HELP, O_VERSION,
       O_NOOP };

typedef struct optdef {
    const char *name; /* "-j" or "--jobs" */
    int id;
    bool arg;
} optdef;

static const optdef opts[] = {
    {"-j", O_JOBS, true}, {"--jobs", O_JOBS, true}, {"-P", O_JOBS, true}, {"--max-procs", O_JOBS, true},
    {"-k", O_KEEP, false}, {"--keep-order", O_KEEP, false}, {"--tag", O_TAG, false},
    {"--timeout", O_TIMEOUT, true}, {"--retries", O_RETRIES, true}, {"--halt", O_HALT, true},
    {"--halt-on-error", O_HALT, true}, {"--joblog", O_JOBLOG, true}, {"--jl", O_JOBLOG, true},
    {"--resume", O_RESUME, false}, {"--resume-failed", O_RESUME_FAILED, false}, {"--results", O_RESULTS, true},
    {"--res", O_RESULTS, true}, {"--bar", O_BAR, false}, {"--eta", O_ETA, false}, {"--dry-run", O_DRYRUN, false},
    {"-a", O_ARGFILE, true}, {"--arg-file", O_ARGFILE, true}, {"-0", O_NULL, false}, {"--null", O_NULL, false},
    {"-d", O_DELIM, true}, {"--delimiter", O_DELIM, true}, {"--lib", O_LIB, true}, {"--fn", O_FN, true},
    {"--max-rss", O_MAXRSS, true}, {"--mpi", O_MPI, false}, {"--help", O_HELP, false}, {"-h", O_HELP, false},
    {"--version", O_VERSION, false}, {"--will-cite", O_NOOP, false}, {"--group", O_NOOP, false},
    {NULL, 0, false}};

static const optdef *find_opt(const char *name, size_t n)
{
    for (const optdef *o = opts; o->name; o++)
        if (strlen(o->name) == n && strncmp(o->name, name, n) == 0)
            return o;
    return NULL;
}

static void apply(config *c, int id, const char *opt, const char *val)
{
    uint64_t u;
    char *end;
    switch (id) {
    case O_JOBS: c->jobs = parse_jobs(val); break;
    case O_KEEP: c->keep_order = true; break;
    case O_TAG: c->tag = true; break;
    case O_TIMEOUT: c->timeout_ms = parse_timeout(val); break;
    case O_RETRIES:
        errno = 0;
        u = strtoull(val, &end, 10);
        if (end == val || *end || errno || u > 1000000 || val[0] == '-')
            die("%s %s: not a number of attempts (0: no limit)", opt, val);
        c->attempts = (unsigned)u;
        break;
    case O_HALT: parse_halt(val, &c->halt); break;
    case O_JOBLOG:
        if (val[0] == '+') {
            c->joblog_append = true;
            val++;
        }
        if (!*val)
            die("%s: needs a file name", opt);
        c->joblog = val;
        break;
    case O_RESUME: c->resume = RESUME_ANY; break;
    case O_RESUME_FAILED: c->resume = RESUME_FAILED; break;
    case O_RESULTS: {
        size_t n = strlen(val);
        if (strchr(val, '{') || (n >= 4 && (strcmp(val + n - 4, ".csv") == 0 || strcmp(val + n - 4, ".tsv") == 0)) ||
            (n >= 5 && strcmp(val + n - 5, ".json") == 0))
            die("%s %s: only a directory is supported (not replacement strings, .csv, .tsv or .json)", opt, val);
        c->results = val;
        break;
    }
    case O_BAR: c->bar = true; break;
    case O_ETA: c->eta = true; break;
    case O_DRYRUN: c->dry_run = true; break;
    case O_ARGFILE: add_source(c, (source){.kind = strcmp(val, "-") == 0 ? SRC_STDIN : SRC_FILE, .path = val}); break;
    case O_NULL: c->delim = 0; break;
    case O_DELIM: c->delim = parse_delim(val); break;
    case O_LIB: c->lib = val; break;
    case O_FN: c->fn = val; break;
    case O_MAXRSS:
        if (parse_size(val, &c->max_rss) != 0 || c->max_rss < 1024 * 1024)
            die("%s %s: not a size of 1M or more (K, M, G, T: powers of 1024)", opt, val);
        break;
    case O_MPI: c->mpi = true; break;
    case O_HELP: fputs(usage_text, stdout); exit(0);
    case O_VERSION:
        printf("fpp-run %s (fpp %s)\nGNU parallel's interface on fpp's crash-isolated process pool. MIT licence.\n",
               FPP_VERSION_STRING, FPP_VERSION_STRING);
        exit(0);
    default: break;
    }
}

static void parse_args(config *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->jobs = 0;
    c->attempts = 1;
    c->delim = '\n';
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == 0 || strcmp(a, ":::") == 0 || strcmp(a, "::::") == 0)
            break;
        if (a[1] == '-') {
            const char *eq = strchr(a, '=');
            size_t n = eq ? (size_t)(eq - a) : strlen(a);
            const optdef *o = find_opt(a, n);
            if (!o) {
                char name[128];
                snprintf(name, sizeof name, "%.*s", (int)(n < 100 ? n : 100), a);
                refuse(name);
            }
            const char *val = NULL;
            if (o->arg) {
                val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
                need(o->name, val);
            } else if (eq) {
                die("%s takes no value", o->name);
            }
            apply(c, o->id, o->name, val);
            continue;
        }
        /* Short options, bundled: -k0, -j4, -j 4. */
        for (const char *p = a + 1; *p; p++) {
            const optdef *o = find_opt((char[]){'-', *p, 0}, 2);
            if (!o) {
                char name[3] = {'-', *p, 0};
                refuse(name);
            }
            if (o->arg) {
                const char *val = p[1] ? p + 1 : (i + 1 < argc ? argv[++i] : NULL);
                need(o->name, val);
                apply(c, o->id, o->name, val);
                break;
            }
            apply(c, o->id, o->name, NULL);
        }
    }
    /* The command: up to the first ::: or ::::. */
    c->cmd = argv + i;
    while (i < argc && strcmp(argv[i], ":::") && strcmp(argv[i], "::::")) {
        if (strcmp(argv[i], ":::+") == 0 || strcmp(argv[i], "::::+") == 0)
            refuse(argv[i]);
        i++;
    }
    c->ncmd = (int)(argv + i - c->cmd);
    while (i < argc) {
        bool files = strcmp(argv[i], "::::") == 0;
        i++;
        int start = i;
        while (i < argc && strcmp(argv[i], ":::") && strcmp(argv[i], "::::")) {
            if (strcmp(argv[i], ":::+") == 0 || strcmp(argv[i], "::::+") == 0)
                refuse(argv[i]);
            i++;
        }
        if (files) {
            if (i == start)
                die(":::: needs at least one file");
            for (int k = start; k < i; k++)
                add_source(c, (source){.kind = strcmp(argv[k], "-") == 0 ? SRC_STDIN : SRC_FILE, .path = argv[k]});
        } else {
            /* GNU parallel splits these values at the delimiter too (::: "a<delim>b" is two). */
            source src = {.kind = SRC_LIST};
            size_t cap = 0;
            for (int k = start; k < i; k++) {
                const char *v = argv[k];
                for (;;) {
                    const char *d = c->delim ? strchr(v, c->delim) : NULL;
                    size_t n = d ? (size_t)(d - v) : strlen(v);
                    if (src.nvals == cap) {
                        cap = cap ? cap * 2 : 16;
                        src.vals = xrealloc(src.vals, cap * sizeof *src.vals);
                    }
                    src.vals[src.nvals++] = d ? strndup(v, n) : (char *)v;
                    if (!d)
                        break;
                    v = d + 1;
                }
            }
            add_source(c, src);
        }
    }
    if (c->nsources == 0)
        add_source(c, (source){.kind = SRC_STDIN});
    int nstdin = 0;
    for (int k = 0; k < c->nsources; k++)
        nstdin += c->sources[k].kind == SRC_STDIN;
    if (nstdin > 1)
        die("stdin is given as an input source %d times", nstdin);

    c->mode = c->lib || c->fn ? MODE_FN : MODE_EXEC;
    if (c->mode == MODE_FN) {
        if (!c->lib || !c->fn)
            die("function mode needs both --lib FILE and --fn NAME");
        if (c->ncmd)
            die("function mode (--lib, --fn) takes no command; got '%s'", c->cmd[0]);
        if (c->nsources != 1)
            die("function mode takes one input source (got %d)", c->nsources);
    } else if (c->max_rss) {
        die("--max-rss applies to function mode (--lib, --fn) only: in exec mode every job is a new process");
    }
    if (c->resume != RESUME_NONE && !c->joblog)
        die("--resume and --resume-failed require --joblog");
    if (c->mpi && c->dry_run)
        die("--dry-run runs nothing: leave out --mpi");
#ifndef FPP_RUN_WITH_MPI
    if (c->mpi)
        die("--mpi: this fpp-run was built without MPI (libfpp_mpi); build fpp with Open MPI installed "
            "(apt-get install libopenmpi-dev)");
#endif
}

/* ------------------------------------------------------------ set-up */

static void log_sink(fpp_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)user;
    warnx_("%s", msg);
}

static int setup_fn_mode(void)
{
    void *h = dlopen(g_cfg.lib, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        die("--lib %s: %s", g_cfg.lib, dlerror());
    int id = fpp_lookup(g_cfg.fn);
    if (id < 0) {
        strbuf names = {0};
        for (int i = 0; fpp_fn_name(i); i++)
            sb_printf(&names, "%s%s", i ? ", " : "", fpp_fn_name(i));
        die("--fn %s: %s registered no function of that name (registered: %s); a job library calls "
            "fpp_register in a constructor and links with libfpp.so",
            g_cfg.fn, g_cfg.lib, names.len ? names.p : "none");
    }
    return id;
}

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

int main(int argc, char **argv)
{
    parse_args(&g_cfg, argc, argv);
#ifdef FPP_RUN_WITH_MPI
    int rank = 0;
    if (g_cfg.mpi) {
        int provided, size;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size < 2) {
            warnx_("--mpi needs at least 2 ranks (mpirun -np N, N >= 2): rank 0 reads, the others run jobs");
            MPI_Finalize();
            return FPPR_EXIT_ERROR;
        }
    }
#endif
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    bool jobs_given = g_cfg.jobs > 0;
    if (!jobs_given)
        g_cfg.jobs = ncpu;
    fpp_log_set(log_sink, NULL, FPP_LOG_WARN);

    static tmpl t;
    int fn;
    if (g_cfg.mode == MODE_EXEC) {
        char err[256] = "";
        if (tmpl_parse(&t, g_cfg.cmd, g_cfg.ncmd, err, sizeof err) != 0)
            die("%s", err);
        if (g_cfg.dry_run)
            return run_dry(&t);
        fn = fpp_register("fpp-run:exec", exec_job);
        if (fn < 0)
            die("cannot register the exec function: %s", fpp_strerror(fn));
    } else {
        fn = setup_fn_mode();
        if (g_cfg.dry_run)
            return run_dry(&t);
    }
    if (g_cfg.results && results_check(g_cfg.results) != 0)
        die("--results %s: %s", g_cfg.results, strerror(errno));

    /* The no-op task (run.c: a job the joblog has and the journal lacks keeps its id). */
    g_noop_fn = fpp_register("fpp-run:logged", noop_job);
    if (g_noop_fn < 0)
        die("cannot register the no-op function: %s", fpp_strerror(g_noop_fn));

    /* What the workers need, before the executor exists. */
    static char spill_dir[4096];
    snprintf(spill_dir, sizeof spill_dir, "%s/fpp-run.%ld.%lx", tmpdir(), (long)getpid(),
             (unsigned long)now_mono_ns() & 0xffffffUL);
    g_exec = (exec_setup){.t = &t,
                          .timeout_ms = g_cfg.timeout_ms,
                          .attempts = g_cfg.attempts,
                          .want_cmd = g_cfg.joblog != NULL,
                          .spill = !g_cfg.mpi,
                          .inline_max = g_cfg.mpi ? FPPR_MPI_MAX_RESULT - FPPR_MAX_CMD - (64 << 10) : FPPR_INLINE_MAX,
                          .tmpdir = tmpdir(),
                          .spill_dir = spill_dir,
                          .run_pid = getpid(),
                          .journal = g_cfg.joblog && strcmp(g_cfg.joblog, "-") != 0 && !g_cfg.mpi};
    slots_create(g_cfg.jobs);

    fpp_executor_opts eo = {.workers = g_cfg.mpi && !jobs_given ? 0 : g_cfg.jobs, .max_arg_size = FPPR_MAX_ARG};
    if (g_cfg.mode == MODE_EXEC) {
        eo.max_result_size = g_cfg.mpi ? FPPR_MPI_MAX_RESULT : (size_t)4 << 20;
    } else {
        eo.max_result_size = (size_t)16 << 20;
        eo.task_timeout_ms = g_cfg.timeout_ms;
        eo.max_worker_rss_kib = (size_t)(g_cfg.max_rss / 1024);
    }
    fpp_executor *ex = NULL;
    int rc;
#ifdef FPP_RUN_WITH_MPI
    if (g_cfg.mpi) {
        if (rank != 0) {
            rc = fpp_mpi_serve(MPI_COMM_WORLD, &eo);
            MPI_Finalize();
            return rc ? FPPR_EXIT_ERROR : 0;
        }
        rc = fpp_mpi_executor(&ex, MPI_COMM_WORLD, &eo);
    } else
#endif
    {
        rc = fpp_process_executor(&ex, &eo);
    }
    if (rc)
        die("cannot start the worker pool: %s", fpp_strerror(rc));
    int status = run_jobs(ex, fn, &t);
    fpp_executor_free(ex);
#ifdef FPP_RUN_WITH_MPI
    if (g_cfg.mpi)
        MPI_Finalize();
#endif
    if (status < 0) {
        /* Ended by a signal (Ctrl-C): end the same way, so that a calling shell sees it. */
        signal(-status, SIG_DFL);
        raise(-status);
        return 128 - status;
    }
    return status;
}
