/* pool/region.c: the memory pools live in: a region is a sealed memfd or private memory.
 *
 * Process executor: every region is a memfd (memfd_create: no name in any file system, so
 * nothing can be left behind in /dev/shm at any instant, whatever ends the process and when),
 * sized, sealed against shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), and
 * mapped shared. The seals are what keep a worker from killing the parent with SIGBUS: no one,
 * whatever file descriptor it gets hold of (/proc/self/map_files included), can truncate the
 * object under the parent's mapping. A punched hole (MADV_REMOVE, fallocate) only zeroes
 * memory, which the parent validates like any other worker write; memfds are not charged to
 * /dev/shm's size, so refilling a hole cannot fail for want of room there (it is ordinary
 * memory, subject to the memory limits of the process). The argument arena is further sealed
 * with F_SEAL_FUTURE_WRITE once the parent has mapped it: workers can map it only read-only
 * and cannot get write access back (mprotect, reopening /proc/self/fd or map_files).
 * The parent's mappings are MADV_DONTFORK, so no later fork of the parent (the application's
 * own, another executor's fork server) inherits any of them.
 *
 * The first `prefault` bytes of a region get their pages now (fallocate), so that a machine
 * without the memory is an FPP_ESYS naming the call here, not a fault later.
 *
 * Thread executor: the same layouts in private anonymous memory.
 *
 * Why not POSIX shm_open: a named object exists in /dev/shm between shm_open and shm_unlink,
 * and a parent killed in that window leaves it behind (seen: 61 of 300 kills during creation);
 * /dev/shm is also small in containers (64 MB in Docker), where punched holes then fault. A
 * memfd keeps every other property of a POSIX shared-memory object that fpp uses: shared
 * mappings inherited across fork, mode 0600 semantics (it is reachable only through a file
 * descriptor or a mapping the process hands out). Linux only, as is the rest of fpp. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pool/pool.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

int fpp__region_create(fpp__region *r, const char *name, size_t size, size_t prefault, bool shared)
{
    r->base = NULL;
    r->size = size;
    r->fd = -1;
    if (!shared) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return fpp__sys_error("mmap", name);
        r->base = p;
        return 0;
    }
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return fpp__sys_error("memfd_create", name);
    int rc;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) != 0) {
        rc = fpp__sys_error("ftruncate", name);
        goto fail;
    }
    if (prefault) {
        int e = posix_fallocate(fd, 0, (off_t)FPP__MIN(prefault, size));
        if (e) {
            errno = e;
            rc = fpp__sys_error("posix_fallocate", name);
            goto fail;
        }
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        rc = fpp__sys_error("fcntl(F_ADD_SEALS)", name);
        goto fail;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = fpp__sys_error("mmap", name);
        goto fail;
    }
    if (madvise(p, size, MADV_DONTFORK) != 0) {
        rc = fpp__sys_error("madvise(MADV_DONTFORK)", name);
        goto fail;
    }
    r->base = p;
    r->fd = fd;
    fpp__fd_own(fd);
    return 0;
fail:;
    int saved = errno;
    if (p != MAP_FAILED)
        munmap(p, size);
    close(fd);
    errno = saved;
    return rc;
}

int fpp__region_seal(fpp__region *r, bool no_writes)
{
    if (r->fd < 0)
        return 0;
    if (fcntl(r->fd, F_ADD_SEALS, (no_writes ? F_SEAL_FUTURE_WRITE : 0) | F_SEAL_SEAL) != 0)
        return fpp__sys_error("fcntl(F_ADD_SEALS)", no_writes ? "F_SEAL_FUTURE_WRITE" : "F_SEAL_SEAL");
    return 0;
}

void fpp__region_close_fd(fpp__region *r)
{
    if (r->fd >= 0)
        fpp__fd_close(r->fd);
    r->fd = -1;
}

void fpp__region_forget(fpp__region *r)
{
    if (r->fd < 0 && r->base) /* private memory is this process's own copy */
        munmap(r->base, r->size);
    fpp__region_close_fd(r);
    r->base = NULL;
}

void fpp__region_destroy(fpp__region *r)
{
    if (r->base)
        munmap(r->base, r->size);
    fpp__region_close_fd(r);
    r->base = NULL;
}
