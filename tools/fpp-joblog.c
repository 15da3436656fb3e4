/* fpp-joblog: prints a task journal (fpp_tm_opts.journal) as GNU parallel's --joblog, so that
 * the tools that read joblogs read fpp's runs. Uses only <fpp.h> (the journal's read API).
 *
 *   fpp-joblog JOURNAL            the joblog on stdout: a header line, then one line per
 *                                 recorded outcome in the order recorded (a failure run again
 *                                 with FPP_TM_RERUN_FAILED: both lines, as parallel appends one
 *                                 per run)
 *   fpp-joblog --summary JOURNAL  the run's key and functions, and counts
 *
 * Columns, tab-separated: Seq (the task id + 1), Host (":", this machine), Starttime (seconds
 * since the epoch, 3 decimals: when the task was first handed to a worker), JobRuntime
 * (seconds, 3 decimals, all attempts), Send (argument bytes), Receive (result bytes), Exitval,
 * Signal, Command (the registered function's name). Exitval and Signal: done 0 0; failed 1 0;
 * crashed -1 and the signal that killed the worker (0 for an exit() in the task); timed out -1
 * 0. A success stored in a range (under 10 ms, first attempt, no result kept) has no times of its
 * own: Starttime is when its range was recorded (within one flush period after it finished),
 * JobRuntime the mean of its range's, Send and Receive 0.
 *
 * Exit status: 0; 1 the journal cannot be read (the reason on stderr); 2 usage. */
#include <fpp.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: fpp-joblog [--summary] JOURNAL\n"
               "Prints an fpp task journal as GNU parallel's joblog (tab-separated: Seq Host Starttime JobRuntime\n"
               "Send Receive Exitval Signal Command), or with --summary its run's key, functions and counts.\n");
}

static void exit_signal(const fpp_journal_rec *r, int *exitval, int *sig)
{
    switch (r->status) {
    case FPP_DONE: *exitval = 0; *sig = 0; break;
    case FPP_FAILED: *exitval = 1; *sig = 0; break;
    case FPP_CRASHED: *exitval = -1; *sig = r->signo; break;
    default: *exitval = -1; *sig = 0; break;
    }
}

static int summary(fpp_journal *j, const char *path)
{
    fpp_journal_info in;
    fpp_journal_stat(j, &in);
    printf("journal %s\nkey \"%s\"\nfingerprint %016" PRIx64 "\nfunctions", path, in.key, in.fingerprint);
    for (int i = 0; i < in.nfn; i++)
        printf(" %s", in.fn_names[i]);
    printf("\nfinished %" PRIu64 " (%" PRIu64 " failed)\nwatermark %" PRId64 " (%" PRIu64 " open below it)\n"
           "records %" PRIu64 ", superseded %" PRIu64 ", duplicates %" PRIu64 "\nbytes %" PRIu64 ", torn %" PRIu64 "\n",
           in.finished, in.failed, in.watermark, in.open, in.records, in.superseded, in.duplicates, in.bytes,
           in.torn_bytes);
    return 0;
}

int main(int argc, char **argv)
{
    int sum = 0, a = 1;
    if (a < argc && !strcmp(argv[a], "--summary")) {
        sum = 1;
        a++;
    }
    if (a < argc && (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (a != argc - 1) {
        usage(stderr);
        return 2;
    }
    fpp_log_set(NULL, NULL, FPP_LOG_WARN);
    fpp_journal *j;
    int rc = fpp_journal_open(&j, argv[a]);
    if (rc) {
        fprintf(stderr, "fpp-joblog: %s: %s\n", argv[a], fpp_strerror(rc));
        return 1;
    }
    if (sum) {
        summary(j, argv[a]);
        fpp_journal_close(j);
        return 0;
    }
    printf("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
    fpp_journal_rec r;
    while ((rc = fpp_journal_next(j, &r)) == 1) {
        int ev, sig;
        exit_signal(&r, &ev, &sig);
        printf("%" PRId64 "\t:\t%" PRId64 ".%03d\t%" PRId64 ".%03d\t%" PRIu64 "\t%" PRIu64 "\t%d\t%d\t%s\n", r.id + 1,
               r.start_ns / 1000000000, (int)(r.start_ns / 1000000 % 1000), r.runtime_ns / 1000000000,
               (int)(r.runtime_ns / 1000000 % 1000), r.arg_len, r.result_len, ev, sig, r.fn_name);
    }
    fpp_journal_close(j);
    if (rc < 0 || fflush(stdout) != 0) {
        fprintf(stderr, "fpp-joblog: %s: %s\n", argv[a], rc < 0 ? fpp_strerror(rc) : "cannot write the output");
        return 1;
    }
    return 0;
}
