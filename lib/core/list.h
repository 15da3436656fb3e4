/* core/list.h: the one list type of libfpp, intrusive and doubly linked (O(1) push at either
 * end, pop and unlink), with a count. The element embeds an fpp__link and is found from it
 * with FPP__CONTAINER. An element is on at most one list at a time through one link; nothing
 * here allocates or locks. */
#ifndef FPP_CORE_LIST_H
#define FPP_CORE_LIST_H

#include <stddef.h>

typedef struct fpp__link { struct fpp__link *prev, *next; } fpp__link;
typedef struct fpp__list { fpp__link *head, *tail; size_t n; } fpp__list;

static inline void fpp__list_push_back(fpp__list *l, fpp__link *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->n++;
}

static inline void fpp__list_push_front(fpp__list *l, fpp__link *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
    l->n++;
}

static inline void fpp__list_unlink(fpp__list *l, fpp__link *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->next = e->prev = NULL;
    l->n--;
}

static inline fpp__link *fpp__list_pop_front(fpp__list *l)
{
    fpp__link *e = l->head;
    if (e)
        fpp__list_unlink(l, e);
    return e;
}

/* Moves every element of `from` to the front of `to`, in their order; `from` ends empty. */
static inline void fpp__list_splice_front(fpp__list *to, fpp__list *from)
{
    if (!from->head)
        return;
    from->tail->next = to->head;
    if (to->head)
        to->head->prev = from->tail;
    else
        to->tail = from->tail;
    to->head = from->head;
    to->n += from->n;
    from->head = from->tail = NULL;
    from->n = 0;
}

#endif /* FPP_CORE_LIST_H */
