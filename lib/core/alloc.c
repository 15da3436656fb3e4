/* core/alloc.c: the one route to the heap for the library, so that the test build can make the
 * Nth allocation fail (FPP_FAIL_ALLOC=N in its environment, read once; core/testing.h) and
 * prove that every FPP_ENOMEM path cleans up. The shipped library has no such switch.
 *
 * Also a small cache of large buffers (64 KiB and up, by power-of-two class, at most 64 MiB
 * held), for result copies: a fresh large malloc is fresh pages, and faulting 256 pages per
 * MiB costs more than copying the MiB. Guarded by a mutex (callers are task managers, which
 * may live in several threads); the lock is a leaf. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/testing.h"

static _Atomic long fail_at = -1; /* -1: not read yet; 0: never fail */

static bool should_fail(void)
{
    if (!FPP__TESTING)
        return false;
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at < 0) {
        const char *s = FPP__TEST_ENV("FPP_FAIL_ALLOC");
        at = s ? strtol(s, NULL, 10) : 0;
        if (at < 0)
            at = 0;
        atomic_store_explicit(&fail_at, at, memory_order_relaxed);
    }
    if (at == 0)
        return false;
    return atomic_fetch_sub_explicit(&fail_at, 1, memory_order_relaxed) == 1;
}

void *fpp__malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }
void *fpp__calloc(size_t n, size_t size) { return should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1); }
void *fpp__realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }
void fpp__free(void *p) { free(p); }

char *fpp__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = fpp__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

#define BUF_MIN_SHIFT 16
#define BUF_CLASSES 16
#define BUF_CACHE_MAX ((size_t)64 << 20)

static pthread_mutex_t buf_lock = PTHREAD_MUTEX_INITIALIZER;
static void *buf_free[BUF_CLASSES][8];
static int buf_n[BUF_CLASSES];
static size_t buf_held;

static int buf_class(size_t n)
{
    int c = 0;
    while (((size_t)1 << (BUF_MIN_SHIFT + c)) < n)
        c++;
    return c;
}

void *fpp__buf_get(size_t n, size_t *cap)
{
    if (n < ((size_t)1 << BUF_MIN_SHIFT) || buf_class(n) >= BUF_CLASSES) {
        *cap = n;
        return fpp__malloc(n);
    }
    int c = buf_class(n);
    void *p = NULL;
    pthread_mutex_lock(&buf_lock);
    if (buf_n[c] > 0) {
        p = buf_free[c][--buf_n[c]];
        buf_held -= (size_t)1 << (BUF_MIN_SHIFT + c);
    }
    pthread_mutex_unlock(&buf_lock);
    *cap = (size_t)1 << (BUF_MIN_SHIFT + c);
    return p ? p : fpp__malloc(*cap);
}

void fpp__buf_put(void *p, size_t cap)
{
    if (!p)
        return;
    if (cap >= ((size_t)1 << BUF_MIN_SHIFT) && (cap & (cap - 1)) == 0) {
        int c = buf_class(cap);
        pthread_mutex_lock(&buf_lock);
        if (c < BUF_CLASSES && buf_n[c] < 8 && buf_held + cap <= BUF_CACHE_MAX) {
            buf_free[c][buf_n[c]++] = p;
            buf_held += cap;
            p = NULL;
        }
        pthread_mutex_unlock(&buf_lock);
    }
    fpp__free(p);
}
