/* pool/flight.c: the in-flight table, the parent's private record of every task it handed to a
 * worker: its 64-bit ticket, its worker and queue position, its argument block. Entries are
 * linked into their worker's list in queue order (pool/completion_ring.c checks records against its head)
 * or into the free list. Tickets are a 64-bit publish sequence, never reused: a ticket an old
 * or hostile worker names can only match the one task it was issued for.
 *
 * Nothing here is shared with workers; nothing a worker writes is read here. */
#include "pool/pool_int.h"

int fpp__flight_init(fpp__pool *p, uint32_t n)
{
    p->fl = fpp__calloc(n, sizeof *p->fl);
    if (!p->fl)
        return FPP_ENOMEM;
    p->nfl = n;
    for (uint32_t i = 0; i < n; i++) {
        p->fl[i].next = i + 1 < n ? i + 1 : FPP__NIL;
        p->fl[i].arg_off = UINT64_MAX;
    }
    p->free_fl = 0;
    p->used_fl = 0;
    p->next_ticket = 1;
    return 0;
}

uint32_t fpp__flight_get(fpp__pool *p)
{
    uint32_t tag = p->free_fl;
    if (tag == FPP__NIL)
        return tag;
    fpp__flight *e = &p->fl[tag];
    p->free_fl = e->next;
    p->used_fl++;
    e->ticket = p->next_ticket++;
    e->prev = e->next = FPP__NIL;
    e->claimed = false;
    e->claimed_ns = 0;
    e->state = FPP__FL_QUEUED;
    return tag;
}

void fpp__flight_put(fpp__pool *p, uint32_t tag)
{
    fpp__flight *e = &p->fl[tag];
    fpp__args_release(p, e);
    if (e->timeout_ms && --p->ntimed == 0)
        p->min_timeout_ms = 0;
    e->timeout_ms = 0;
    e->job = NULL;
    e->ticket = 0;
    e->state = FPP__FL_FREE;
    e->next = p->free_fl;
    e->prev = FPP__NIL;
    p->free_fl = tag;
    p->used_fl--;
}

void fpp__flight_link(fpp__pool *p, uint32_t w, uint32_t tag)
{
    fpp__wpriv *wp = &p->wp[w];
    fpp__flight *e = &p->fl[tag];
    e->w = w;
    e->next = FPP__NIL;
    e->prev = wp->last;
    if (wp->last != FPP__NIL)
        p->fl[wp->last].next = tag;
    else
        wp->first = tag;
    wp->last = tag;
    wp->n++;
    p->linked++;
}

void fpp__flight_unlink(fpp__pool *p, uint32_t tag)
{
    fpp__flight *e = &p->fl[tag];
    fpp__wpriv *wp = &p->wp[e->w];
    if (e->prev != FPP__NIL)
        p->fl[e->prev].next = e->next;
    else
        wp->first = e->next;
    if (e->next != FPP__NIL)
        p->fl[e->next].prev = e->prev;
    else
        wp->last = e->prev;
    e->prev = e->next = FPP__NIL;
    wp->n--;
    p->linked--;
    p->last_w = e->w;
}
