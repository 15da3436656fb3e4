/* core/registry.c: the table of registered functions, name -> id -> fn.
 *
 * Invariant: entries are only appended, and only while no executor exists (frozen > 0 refuses
 * fpp_register). No log line is written while the lock is held (a log sink may look names up). Workers forked or started later read the table without a lock: it cannot
 * change under them, and a forked worker has its own copy anyway. The mutex orders
 * registrations and lookups by name among the caller's threads. */
#include <pthread.h>
#include <string.h>

#include "core/core.h"

typedef struct entry { char *name; fpp_fn fn; } entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *table;
static _Atomic int count;
static int cap;
static int frozen;

int fpp_register(const char *name, fpp_fn fn)
{
    if (!name || !*name || !fn) {
        fpp__log(FPP_LOG_ERROR, "fpp_register: %s", !fn ? "NULL function" : "NULL or empty name");
        return FPP_EINVAL;
    }
    /* No log line under the lock: a log sink may call fpp_lookup, which takes it. */
    int rc, dup = -1;
    pthread_mutex_lock(&lock);
    if (frozen > 0) {
        rc = FPP_ESTATE;
        goto out;
    }
    for (int i = 0; i < count; i++) {
        if (strcmp(table[i].name, name) == 0) {
            dup = i;
            rc = FPP_EINVAL;
            goto out;
        }
    }
    if (count == cap) {
        int ncap = cap ? cap * 2 : 16;
        entry *t = fpp__realloc(table, (size_t)ncap * sizeof *t);
        if (!t) {
            rc = FPP_ENOMEM;
            goto out;
        }
        table = t;
        cap = ncap;
    }
    char *copy = fpp__strdup(name);
    if (!copy) {
        rc = FPP_ENOMEM;
        goto out;
    }
    table[count].name = copy;
    table[count].fn = fn;
    rc = count;
    atomic_store_explicit(&count, count + 1, memory_order_release);
out:
    pthread_mutex_unlock(&lock);
    if (rc == FPP_ESTATE)
        fpp__log(FPP_LOG_ERROR, "fpp_register(%s): an executor exists; register every function before creating one", name);
    else if (dup >= 0)
        fpp__log(FPP_LOG_ERROR, "fpp_register(%s): that name is registered already (id %d)", name, dup);
    else if (rc == FPP_ENOMEM)
        fpp__log(FPP_LOG_ERROR, "fpp_register(%s): out of memory", name);
    return rc;
}

int fpp_lookup(const char *name)
{
    if (!name)
        return FPP_EINVAL;
    int rc = FPP_ENOFN;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0) {
            rc = i;
            break;
        }
    pthread_mutex_unlock(&lock);
    return rc;
}

const char *fpp_fn_name(int id)
{
    if (id < 0 || id >= atomic_load_explicit(&count, memory_order_acquire))
        return NULL;
    return table[id].name;
}

fpp_fn fpp__registry_fn(int id)
{
    if (id < 0 || id >= atomic_load_explicit(&count, memory_order_acquire))
        return NULL;
    return table[id].fn;
}

void fpp__registry_freeze(int delta)
{
    pthread_mutex_lock(&lock);
    frozen += delta;
    pthread_mutex_unlock(&lock);
}
