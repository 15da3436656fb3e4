/* basic: several tasks, one of which fails; results are printed as they complete, and the
 * failure is logged (FPP_LOG) instead of stopping the run. futureproof's first example.
 * Usage: basic [--threads] */
#define _POSIX_C_SOURCE 200809L
#include <fpp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* "Fetches" a URL: sleeps a little, fails for the made-up domain. */
static int load_url(const void *arg, size_t len, fpp_out *out)
{
    if (len >= 9 && memcmp(arg, "http://no", 9) == 0)
        return fpp_out_fail(out, "name or service not known: %.*s", (int)len, (const char *)arg), 1;
    struct timespec ts = {0, 20000000L + (long)(len % 7) * 10000000L};
    nanosleep(&ts, NULL);
    size_t bytes = len * 1000;
    return fpp_out_set(out, &bytes, sizeof bytes);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 && strcmp(argv[1], "--threads") == 0;
    const char *urls[] = {"http://www.foxnews.com/", "http://www.cnn.com/", "http://europe.wsj.com/",
                          "http://www.bbc.co.uk/", "http://nosuchdomain.example/"};
    int fn = fpp_register("load_url", load_url);
    fpp_executor *ex;
    fpp_executor_opts eo = {.workers = 5};
    if ((threads ? fpp_thread_executor(&ex, &eo) : fpp_process_executor(&ex, &eo)) != 0)
        return 1;
    fpp_tm *tm;
    fpp_tm_opts to = {.error_policy = FPP_LOG};
    fpp_tm_create(&tm, ex, &to);
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++)
        fpp_submit(tm, fn, urls[i], strlen(urls[i]));
    fpp_task *t;
    while (fpp_as_completed(tm, &t) == 1) {
        size_t len;
        const char *url = fpp_task_arg(t, &len);
        if (fpp_task_status(t) == FPP_DONE) {
            size_t bytes;
            memcpy(&bytes, fpp_task_result(t, NULL), sizeof bytes);
            printf("'%.*s' page is %zu bytes\n", (int)len, url, bytes);
        }
    }
    fpp_tm_free(tm);
    fpp_executor_free(ex);
    return 0;
}
