/* tm/maps.c: the maps that need no iterator, for the commonest inputs: a range of integers, an
 * array of fixed-size elements, the lines of a stream. Each is an ordinary lazy map (map.c)
 * over a state this file allocates and its fini frees, so they run in constant memory like
 * any map, end like any map (fini exactly once, whether the map runs out, fails or is
 * stopped), and never touch the caller's array or FILE after the map has ended. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tm/tm.h"

/* Starts a map over state (heap, freed by fini) or frees it when the map cannot start. */
static int start(fpp_tm *tm, const char *call, int fn, fpp_next next, void *state, void (*fini)(void *),
                 unsigned flags)
{
    if (!state) {
        fpp__log(FPP_LOG_ERROR, "%s: out of memory", call);
        return FPP_ENOMEM;
    }
    fpp_map_opts o = {.flags = flags, .fini = fini};
    int rc = fpp__map_start(tm, call, fn, next, state, &o);
    if (rc)
        fini(state);
    return rc;
}

/* ------------------------------------------------------------- range */

typedef struct range {
    int64_t next, stop, step;
    int64_t item; /* the value handed out: stays put until the next call */
    bool done;
} range;

static int range_next(void *state, const void **arg, size_t *len)
{
    range *r = state;
    if (r->done || (r->step > 0 ? r->next >= r->stop : r->next <= r->stop))
        return 0;
    r->item = r->next;
    /* The step past the last value may overflow int64_t: stop instead of wrapping. */
    if (__builtin_add_overflow(r->next, r->step, &r->next))
        r->done = true;
    *arg = &r->item;
    *len = sizeof r->item;
    return 1;
}

int fpp_map_range(fpp_tm *tm, int fn, int64_t start_at, int64_t stop, int64_t step)
{
    if (step == 0) {
        fpp__log(FPP_LOG_ERROR, "fpp_map_range: step 0");
        return FPP_EINVAL;
    }
    range *r = fpp__calloc(1, sizeof *r);
    if (r) {
        r->next = start_at;
        r->stop = stop;
        r->step = step;
    }
    return start(tm, "fpp_map_range", fn, range_next, r, fpp__free, 0);
}

/* ------------------------------------------------------------- array */

typedef struct array {
    const unsigned char *base;
    size_t count, size, i;
} array;

static int array_next(void *state, const void **arg, size_t *len)
{
    array *a = state;
    if (a->i == a->count)
        return 0;
    *arg = a->base + a->i++ * a->size;
    *len = a->size;
    return 1;
}

int fpp_map_array(fpp_tm *tm, int fn, const void *base, size_t count, size_t size)
{
    if (size == 0 || (!base && count)) {
        fpp__log(FPP_LOG_ERROR, "fpp_map_array: %s", size == 0 ? "element size 0" : "NULL array");
        return FPP_EINVAL;
    }
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        fpp__log(FPP_LOG_ERROR, "fpp_map_array: %zu elements of %zu bytes overflow the address space", count, size);
        return FPP_EINVAL;
    }
    array *a = fpp__calloc(1, sizeof *a);
    if (a) {
        a->base = base;
        a->count = count;
        a->size = size;
    }
    return start(tm, "fpp_map_array", fn, array_next, a, fpp__free, 0);
}

/* ------------------------------------------------------------- lines */

typedef struct lines {
    FILE *in;
    char *buf;
    size_t cap;
    uint64_t line;
} lines;

static int lines_next(void *state, const void **arg, size_t *len)
{
    lines *l = state;
    errno = 0;
    ssize_t n = getline(&l->buf, &l->cap, l->in);
    if (n < 0) {
        if (!ferror(l->in))
            return 0;
        int e = errno;
        fpp__log(FPP_LOG_ERROR, "fpp_map_lines: reading line %llu: %s", (unsigned long long)l->line + 1,
                 e ? strerror(e) : "read error");
        return FPP_ESYS;
    }
    l->line++;
    size_t k = (size_t)n;
    if (k && l->buf[k - 1] == '\n')
        k--;
    if (k && l->buf[k - 1] == '\r')
        k--;
    l->buf[k] = '\0'; /* getline's buffer always has room for the NUL it wrote after the line */
    *arg = l->buf;
    *len = k + 1;
    return 1;
}

static void lines_fini(void *state)
{
    lines *l = state;
    free(l->buf); /* getline's, from malloc */
    fpp__free(l);
}

int fpp_map_lines(fpp_tm *tm, int fn, FILE *in)
{
    if (!in) {
        fpp__log(FPP_LOG_ERROR, "fpp_map_lines: NULL stream");
        return FPP_EINVAL;
    }
    lines *l = fpp__calloc(1, sizeof *l);
    if (l)
        l->in = in;
    return start(tm, "fpp_map_lines", fn, lines_next, l, lines_fini, FPP_MAP_LABEL_TEXT);
}
