/* tm/idmap.c: a task manager's id -> task table, for fpp_wait, fpp_cancel and ordered results.
 *
 * It holds the tasks not yet handed out (queued, running, or finished and waiting to be
 * returned): a sliding window of mostly consecutive ids plus a few stragglers. Open addressing
 * with linear probing; the id is stored beside the pointer, so a probe never touches the task.
 * The slot is a Fibonacci hash of the id, not the id itself: consecutive ids in consecutive
 * slots would make the whole live window one cluster, and backward-shift deletion walks the
 * cluster after the hole (measured: 48% of the parent's time at 4,096 live tasks). Scattered,
 * clusters stay short at the load kept here (at most one half). Deletion shifts the following
 * entries back (no tombstones), so a lookup stops at the first empty slot. The table doubles
 * when half full and never shrinks (its size follows the peak number of unreturned tasks).
 * Only the thread driving the task manager uses it. */
#include <string.h>

#include "tm/tm.h"

#define MIN_BITS 6

static size_t home(const fpp__idmap *m, int64_t id)
{
    return (size_t)(((uint64_t)id * UINT64_C(0x9E3779B97F4A7C15)) >> m->shift);
}

static int grow(fpp__idmap *m)
{
    unsigned bits = m->slot ? 64 - m->shift + 1 : MIN_BITS;
    size_t cap = (size_t)1 << bits;
    fpp__idmap_slot *s = fpp__calloc(cap, sizeof *s);
    if (!s)
        return FPP_ENOMEM;
    fpp__idmap old = *m;
    m->slot = s;
    m->mask = cap - 1;
    m->shift = 64 - bits;
    m->n = 0;
    for (size_t i = 0; old.slot && i <= old.mask; i++)
        if (old.slot[i].t) {
            size_t j = home(m, old.slot[i].id);
            while (m->slot[j].t)
                j = (j + 1) & m->mask;
            m->slot[j] = old.slot[i];
            m->n++;
        }
    fpp__free(old.slot);
    return 0;
}

int fpp__idmap_put(fpp__idmap *m, fpp_task *t)
{
    if ((!m->slot || (m->n + 1) * 2 > m->mask + 1) && grow(m) != 0)
        return FPP_ENOMEM;
    size_t j = home(m, t->job.id);
    while (m->slot[j].t)
        j = (j + 1) & m->mask;
    m->slot[j] = (fpp__idmap_slot){t->job.id, t};
    m->n++;
    return 0;
}

fpp_task *fpp__idmap_get(const fpp__idmap *m, int64_t id)
{
    if (!m->slot)
        return NULL;
    for (size_t j = home(m, id);; j = (j + 1) & m->mask) {
        if (!m->slot[j].t || m->slot[j].id == id)
            return m->slot[j].t;
    }
}

void fpp__idmap_del(fpp__idmap *m, int64_t id)
{
    if (!m->slot)
        return;
    size_t j = home(m, id);
    while (m->slot[j].t && m->slot[j].id != id)
        j = (j + 1) & m->mask;
    if (!m->slot[j].t)
        return;
    m->slot[j].t = NULL;
    m->n--;
    /* Backward shift: move each later entry of the cluster into the hole unless its home slot
     * lies cyclically in (hole, where it sits]. */
    for (size_t k = (j + 1) & m->mask; m->slot[k].t; k = (k + 1) & m->mask) {
        size_t h = home(m, m->slot[k].id);
        bool stays = j <= k ? (j < h && h <= k) : (j < h || h <= k);
        if (!stays) {
            m->slot[j] = m->slot[k];
            m->slot[k].t = NULL;
            j = k;
        }
    }
}

void fpp__idmap_fini(fpp__idmap *m)
{
    fpp__free(m->slot);
    memset(m, 0, sizeof *m);
}
