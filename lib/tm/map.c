/* tm/map.c: lazy maps. fpp_map[_ex] queues an iterator; items are pulled only while there is
 * room (unfinished + unreturned < max_in_flight: drive.c feeds), so a map over 10^9 items runs
 * in constant memory. An iterator's error ends its map and is returned once everything it
 * produced has finished; an item over max_arg_size fails alone (FPP_ETOOBIG in its error).
 * A map labels its tasks (its label function, or the item's text) as it pulls them, and its
 * fini runs exactly once, whenever the map ends (fpp__map_end: its end, its error, or a stop).
 * Resuming from a journal, an item whose id an earlier run finished takes its id and makes no
 * task (it takes no room either: the pull goes on to the next item). The maps that need no
 * iterator (range, array, lines) are in maps.c. */
#include <string.h>

#include "tm/tm.h"

struct fpp__map {
    int fn;
    fpp_next next;
    void *state;
    fpp_map_opts o;
    uint64_t items;
    struct fpp__map *link;
};

void fpp__map_end(fpp_tm *tm)
{
    fpp__map *m = tm->maps;
    tm->maps = m->link;
    if (!tm->maps)
        tm->maps_tail = NULL;
    if (m->o.fini)
        m->o.fini(m->state);
    fpp__free(m);
}

/* The item's label, from the map's label function or its text; false: out of memory. */
static bool make_label(fpp__map *m, const void *arg, size_t len, char **label)
{
    *label = NULL;
    if (m->o.flags & FPP_MAP_LABEL_TEXT) {
        const char *s = arg;
        if (len && s[len - 1] == '\0')
            len--;
        if (len && s[len - 1] == '\n')
            len--;
        if (len && s[len - 1] == '\r')
            len--;
        if (!len)
            return true;
        *label = fpp__label_make(s, len);
    } else if (m->o.label) {
        const char *s = m->o.label(m->state, arg, len);
        if (!s || !s[0])
            return true;
        *label = fpp__label_make(s, strlen(s));
    } else {
        return true;
    }
    return *label != NULL;
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
    char *label;
    fpp_task *t = NULL;
    if (make_label(m, arg, len, &label) && !(t = fpp__task_make(tm, m->fn, arg, len, oversize)))
        fpp__free(label);
    if (!t) {
        fpp__log(FPP_LOG_ERROR, "map: out of memory for item %llu; the map stops there", (unsigned long long)m->items);
        if (!tm->map_error)
            tm->map_error = FPP_ENOMEM;
        fpp__map_end(tm);
        return 0;
    }
    m->items++;
    t->job.label = label;
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

int fpp__map_start(fpp_tm *tm, const char *call, int fn, fpp_next next, void *state, const fpp_map_opts *o)
{
    static const fpp_map_opts none;
    int rc = fpp__tm_enter(tm, call, 0);
    if (rc)
        return rc;
    if (!o)
        o = &none;
    if (!next) {
        fpp__log(FPP_LOG_ERROR, "%s: NULL iterator", call);
        rc = FPP_EINVAL;
    } else if (o->flags & ~(unsigned)FPP_MAP_LABEL_TEXT) {
        fpp__log(FPP_LOG_ERROR, "%s: unknown flags %#x", call, o->flags & ~(unsigned)FPP_MAP_LABEL_TEXT);
        rc = FPP_EINVAL;
    } else if ((o->flags & FPP_MAP_LABEL_TEXT) && o->label) {
        fpp__log(FPP_LOG_ERROR, "%s: a label function and FPP_MAP_LABEL_TEXT: choose one", call);
        rc = FPP_EINVAL;
    } else if (!fpp__registry_fn(fn)) {
        fpp__log(FPP_LOG_ERROR, "%s: no function with id %d", call, fn);
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
        m->o = *o;
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

int fpp_map_ex(fpp_tm *tm, int fn, fpp_next next, void *state, const fpp_map_opts *o)
{
    return fpp__map_start(tm, "fpp_map_ex", fn, next, state, o);
}

int fpp_map(fpp_tm *tm, int fn, fpp_next next, void *state)
{
    return fpp__map_start(tm, "fpp_map", fn, next, state, NULL);
}
