/* idmap.c: a task manager's id -> task table, for fpp_wait, fpp_cancel and ordered results.
 *
 * It holds the tasks not yet handed out (queued, running, or finished and waiting to be
 * returned). Ids are dense and mostly consecutive (a sliding window of live ids, plus a few
 * stragglers), so the slot of id is simply id & mask: a window narrower than the table lands
 * in distinct slots and never probes. Collisions (stragglers a table-width apart) probe
 * linearly; deletion shifts the following run back (no tombstones), so a lookup stops at the
 * first empty slot. The table doubles when half full and never shrinks (its size is the peak
 * number of unreturned tasks). Only the thread driving the task manager uses it. */
#include <string.h>

#include "fpp_internal.h"

#define MIN_SLOTS 64

static size_t home(const fpp__idmap *m, int64_t id) { return (size_t)id & m->mask; }

static int grow(fpp__idmap *m)
{
    size_t cap = m->slot ? (m->mask + 1) * 2 : MIN_SLOTS;
    fpp_task **s = fpp__calloc(cap, sizeof *s);
    if (!s)
        return FPP_ENOMEM;
    fpp__idmap old = *m;
    m->slot = s;
    m->mask = cap - 1;
    m->n = 0;
    for (size_t i = 0; old.slot && i <= old.mask; i++)
        if (old.slot[i]) {
            size_t j = home(m, old.slot[i]->id);
            while (m->slot[j])
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
    size_t j = home(m, t->id);
    while (m->slot[j])
        j = (j + 1) & m->mask;
    m->slot[j] = t;
    m->n++;
    return 0;
}

fpp_task *fpp__idmap_get(const fpp__idmap *m, int64_t id)
{
    if (!m->slot)
        return NULL;
    for (size_t j = home(m, id);; j = (j + 1) & m->mask) {
        fpp_task *t = m->slot[j];
        if (!t || t->id == id)
            return t;
    }
}

void fpp__idmap_del(fpp__idmap *m, int64_t id)
{
    if (!m->slot)
        return;
    size_t j = home(m, id);
    while (m->slot[j] && m->slot[j]->id != id)
        j = (j + 1) & m->mask;
    if (!m->slot[j])
        return;
    m->slot[j] = NULL;
    m->n--;
    /* Backward shift: move each later entry of the run into the hole when its home slot does
     * not lie (cyclically) between the hole and where it sits. */
    for (size_t k = (j + 1) & m->mask; m->slot[k]; k = (k + 1) & m->mask) {
        size_t h = home(m, m->slot[k]->id);
        bool stays = j <= k ? (j < h && h <= k) : (j < h || h <= k);
        if (!stays) {
            m->slot[j] = m->slot[k];
            m->slot[k] = NULL;
            j = k;
        }
    }
}

void fpp__idmap_fini(fpp__idmap *m)
{
    fpp__free(m->slot);
    memset(m, 0, sizeof *m);
}
