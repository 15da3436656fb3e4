/* shm.c: the memory a pool lives in.
 *
 * Process executor: one POSIX shared-memory object, opened with O_CREAT|O_EXCL and mode 0600
 * under "/fpp-<pid>-<128 random bits>", sized, mapped MAP_SHARED, then unlinked and its fd
 * closed at once: from then on only the mapping (inherited by forked workers) keeps it alive,
 * so no ending of any process can leave it behind in /dev/shm. The first `prefault` bytes
 * (header, ring, argument arena: what the parent itself writes) get their pages allocated now,
 * so that a full /dev/shm is an FPP_ESYS here and never a SIGBUS in the parent later; worker
 * arenas stay sparse and are backed as workers write them.
 * Thread executor: the same layout in private anonymous memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpp_internal.h"

static int random_name(char *buf, size_t len)
{
    uint64_t r[2];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom((char *)r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fpp__sys_error("getrandom", "16 bytes");
        }
        got += (size_t)n;
    }
    snprintf(buf, len, "/fpp-%ld-%016llx%016llx", (long)getpid(), (unsigned long long)r[0],
             (unsigned long long)r[1]);
    return 0;
}

int fpp__shm_create(size_t size, size_t prefault, unsigned char **base)
{
    char name[64];
    int rc = random_name(name, sizeof name);
    if (rc)
        return rc;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return fpp__sys_error("shm_open", name);
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) != 0) {
        rc = fpp__sys_error("ftruncate", name);
        goto fail;
    }
    if (prefault) {
        int e = posix_fallocate(fd, 0, (off_t)prefault);
        if (e) {
            errno = e;
            rc = fpp__sys_error("posix_fallocate", name);
            goto fail;
        }
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = fpp__sys_error("mmap", name);
        goto fail;
    }
    shm_unlink(name);
    close(fd);
    *base = p;
    return 0;
fail:;
    int saved = errno;
    shm_unlink(name);
    close(fd);
    errno = saved;
    return rc;
}

int fpp__mem_create(size_t size, unsigned char **base)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return fpp__sys_error("mmap", "anonymous");
    *base = p;
    return 0;
}

void fpp__mem_destroy(unsigned char *base, size_t size)
{
    if (base)
        munmap(base, size);
}
