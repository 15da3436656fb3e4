/* alloc.c: the one route to the heap for the library, so that a test build can make the Nth
 * allocation fail (FPP_FAIL_ALLOC=N in the environment, read once) and prove that every
 * FPP_ENOMEM path cleans up. In normal builds the counter is never armed. */
#include <stdlib.h>
#include <string.h>

#include "fpp_internal.h"

static _Atomic long fail_at = -1; /* -1: not read yet; 0: never fail */

static bool should_fail(void)
{
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at < 0) {
        const char *s = getenv("FPP_FAIL_ALLOC");
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
