/* results.c: --results DIR, GNU parallel's directory layout: for each job the directory
 * DIR/1/<value of source 1>/2/<value of source 2>/... holds "seq" (the sequence number, no
 * newline), "stdout" and "stderr". In a value "/" is written "\_" and "\" is written "\\"
 * (GNU parallel's escaping). Output goes only there, as with GNU parallel. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpp-run.h"

static int mkdirs(strbuf *path)
{
    for (size_t i = 1; i <= path->len; i++) {
        if (i < path->len && path->p[i] != '/')
            continue;
        char c = path->p[i];
        path->p[i] = 0;
        int rc = mkdir(path->p, 0777);
        int e = errno;
        path->p[i] = c;
        if (rc != 0 && e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    return 0;
}

static int put_file(const char *path, const void *data, size_t len, const char *from)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = 0;
    if (from) {
        int in = open(from, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            rc = -1;
        } else {
            for (;;) {
                ssize_t k = sendfile(fd, in, NULL, 1 << 30);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k <= 0) {
                    rc = k < 0 ? -1 : 0;
                    break;
                }
            }
            close(in);
        }
    } else if (len) {
        rc = write_all(fd, data, len);
    }
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

int results_check(const char *dir)
{
    strbuf path = {0};
    sb_adds(&path, dir);
    while (path.len > 1 && path.p[path.len - 1] == '/')
        path.p[--path.len] = 0;
    int rc = mkdirs(&path);
    struct stat st;
    if (rc == 0 && stat(path.p, &st) != 0)
        rc = -1;
    if (rc == 0 && !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        rc = -1;
    }
    if (rc == 0 && access(path.p, W_OK | X_OK) != 0)
        rc = -1;
    sb_free(&path);
    return rc;
}

int results_write(const char *dir, const job_vals *v, const void *out, size_t out_len, const char *out_file,
                  const void *err, size_t err_len, const char *err_file)
{
    strbuf path = {0};
    sb_adds(&path, dir);
    for (int i = 0; i < v->n; i++) {
        sb_printf(&path, "/%d/", i + 1);
        for (size_t k = 0; k < v->len[i]; k++) {
            char c = v->v[i][k];
            if (c == '/')
                sb_adds(&path, "\\_");
            else if (c == '\\')
                sb_adds(&path, "\\\\");
            else
                sb_addc(&path, c);
        }
    }
    int rc = mkdirs(&path);
    size_t base = path.len;
    if (rc == 0) {
        char seq[32];
        int n = snprintf(seq, sizeof seq, "%llu", (unsigned long long)v->seq);
        sb_adds(&path, "/seq");
        rc = put_file(path.p, seq, (size_t)n, NULL);
        path.len = base;
        sb_adds(&path, "/stdout");
        if (rc == 0)
            rc = put_file(path.p, out, out_len, out_file);
        path.len = base;
        sb_adds(&path, "/stderr");
        if (rc == 0)
            rc = put_file(path.p, err, err_len, err_file);
    }
    if (rc != 0) {
        path.len = base;
        path.p[base] = 0;
        warnx_("--results: job %llu: cannot write %s: %s", (unsigned long long)v->seq, path.p, strerror(errno));
    }
    sb_free(&path);
    return rc;
}
