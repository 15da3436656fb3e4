/* tm/map.c: lazy maps. fpp_map queues an iterator; items are pulled only while there is room
 * (unfinished + unreturned < max_in_flight: drive.c feeds), so a map over 10^9 items runs in
 * constant memory. An iterator's error ends its map and is returned once everything it
 * produced has finished; an item over max_arg_size fails alone (FPP_ETOOBIG in its error).
 * Resuming from a journal, an item whose id an earlier run finished takes its id and makes no
 * task (it takes no room either: the pull goes on to the next item). */
#include <string.h>

#include "tm/tm.h"

struct fpp__map {
    int fn;
    fpp_next next;
    void *state;
    uint64_t items;
    struct fpp__map *link;
};

void fpp__map_end(fpp_tm *tm)
{
    fpp__map *m = tm->maps;
    tm->maps = m->link;
    if (!tm->maps)
        tm->maps_tail = NULL;
    fpp__free(m);
}

/* Pulls one item of the first map. Returns 1 if an item was taken (a task made, or skipped),
 * 0 if the map ended. */
int fpp__map_pull(fpp_tm *tm)
{
    fpp__map *m = tm->maps;
    const void *arg = NULL;
    size_t len = 0;
    int rc = m->next(m->state, &arg, &len);
    if (rc > 0 && !arg && len) {
        fpp__log(FPP_LOG_ERROR, "map: the iterator gave NULL with %zu bytes", len);
        rc = FPP_EINVAL;
    }
    if (rc <= 0) {
        if (rc < 0) {
            fpp__log(FPP_LOG_ERROR, "map over %s: the iterator returned %d after %llu item(s); the map stops there",
                     fpp__tm_fn_name(m->fn), rc, (unsigned long long)m->items);
            if (!tm->map_error)
                tm->map_error = rc;
        }
        fpp__map_end(tm);
        return 0;
    }
    bool rerun = false;
    if (tm->resuming && fpp__journal_skip(tm, tm->next_id, &rerun)) {
        int64_t id = tm->next_id++;
        m->items++;
        fpp__tm_bump(&tm->c.skipped);
        fpp__order_skipped(tm, id);
        return 1;
    }
    bool oversize = len > tm->ex->opts.max_arg_size;
    fpp_task *t = fpp__task_make(tm, m->fn, arg, len, oversize);
    if (!t) {
        fpp__log(FPP_LOG_ERROR, "map: out of memory for item %llu; the map stops there", (unsigned long long)m->items);
        if (!tm->map_error)
            tm->map_error = FPP_ENOMEM;
        fpp__map_end(tm);
        return 0;
    }
    m->items++;
    t->jrerun = rerun;
    if (oversize) {
        fpp__job_fail(&t->job, FPP_FAILED, 0, "FPP_ETOOBIG: argument of %zu bytes exceeds max_arg_size (%zu bytes)",
                       len, tm->ex->opts.max_arg_size);
        fpp__tm_finished(tm, t); /* it never reached the executor */
    } else {
        fpp__list_push_back(&tm->pending, &t->job.link);
    }
    return 1;
}

int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state)
{
    int rc = fpp__tm_enter(tm, "fpp_map", 0);
    if (rc)
        return rc;
    if (!next) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: NULL iterator");
        rc = FPP_EINVAL;
    } else if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "fpp_map: no function with id %d", fn);
        rc = FPP_ENOFN;
    } else {
        rc = fpp__tm_state_error(tm);
    }
    fpp__map *m = NULL;
    if (!rc && !(m = fpp__calloc(1, sizeof *m)))
        rc = FPP_ENOMEM;
    if (!rc) {
        m->fn = fn;
        m->next = next;
        m->state = state;
        if (tm->maps_tail)
            tm->maps_tail->link = m;
        else
            tm->maps = m;
        tm->maps_tail = m;
        fpp__tm_monitor_check(tm);
        fpp__tm_feed(tm);
    }
    fpp__tm_leave(tm);
    return rc;
}
