#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void gw_bufpool_init(gw_bufpool_t *p, size_t size, size_t max_free)
{
    p->free = NULL;
    p->nfree = 0;
    p->max_free = max_free;
    p->size = size;
}

void gw_bufpool_dispose(gw_bufpool_t *p)
{
    void *b = p->free, *next;
    for (; b; b = next) {
        memcpy(&next, b, sizeof(next));
        free(b);
    }
    p->free = NULL;
    p->nfree = 0;
}

static void pool_put(gw_bufpool_t *p, char *d)
{
    if (p->nfree >= p->max_free) {
        free(d);
        return;
    }
    memcpy(d, &p->free, sizeof(void *));
    p->free = d;
    p->nfree++;
}

int gw_buf_reserve(gw_buf_t *b, gw_bufpool_t *p, size_t extra)
{
    size_t need, cap;
    char *d;

    if (b->cap - b->len >= extra && b->data)
        return 0;
    need = b->len + extra;
    if (!b->data && need <= p->size) {
        if (p->free) {
            d = p->free;
            memcpy(&p->free, d, sizeof(void *));
            p->nfree--;
        } else if (!(d = malloc(p->size))) {
            return -ENOMEM;
        }
        b->data = d;
        b->cap = p->size;
        return 0;
    }
    cap = b->cap ? b->cap : p->size;
    while (cap < need)
        cap *= 2;
    if (b->data && b->cap == p->size) {
        /* Leaving the pool's size: move to a private block. */
        if (!(d = malloc(cap)))
            return -ENOMEM;
        memcpy(d, b->data, b->len);
        pool_put(p, b->data);
    } else if (!(d = realloc(b->data, cap))) {
        return -ENOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void gw_buf_consume(gw_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void gw_buf_release(gw_buf_t *b, gw_bufpool_t *p)
{
    if (!b->data)
        return;
    if (b->cap == p->size)
        pool_put(p, b->data);
    else
        free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
