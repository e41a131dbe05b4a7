#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct gw_arena_block {
    gw_arena_block_t *next;
    size_t size; /* usable bytes after the header */
    alignas(max_align_t) char data[];
};

#define ALIGN(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

void gw_arena_init(gw_arena_t *a, gw_arena_pool_t *pool)
{
    a->pool = pool;
    a->head = NULL;
    a->ptr = a->end = NULL;
}

static gw_arena_block_t *block_get(gw_arena_pool_t *pool, size_t need)
{
    gw_arena_block_t *b = NULL;
    size_t std = GW_ARENA_BLOCK - sizeof(gw_arena_block_t);

    if (need <= std) {
        if (pool->is_shared)
            pthread_mutex_lock(&pool->mu);
        if ((b = pool->free)) {
            pool->free = b->next;
            pool->nfree--;
        }
        if (pool->is_shared)
            pthread_mutex_unlock(&pool->mu);
        if (b)
            return b;
    }
    if (need <= std)
        need = std;
    b = malloc(sizeof(*b) + need);
    if (b)
        b->size = need;
    return b;
}

void *gw_arena_alloc(gw_arena_t *a, size_t n)
{
    gw_arena_block_t *b;
    char *p;

    n = ALIGN(n ? n : 1);
    if ((size_t)(a->end - a->ptr) >= n) {
        p = a->ptr;
        a->ptr += n;
        return p;
    }
    b = block_get(a->pool, n);
    if (!b)
        return NULL;
    b->next = a->head;
    a->head = b;
    a->ptr = b->data + n;
    a->end = b->data + b->size;
    return b->data;
}

char *gw_arena_dup(gw_arena_t *a, const void *p, size_t n)
{
    char *d = gw_arena_alloc(a, n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

bool gw_arena_contains(const gw_arena_t *a, const void *p, size_t n)
{
    uintptr_t lo = (uintptr_t)p;

    for (const gw_arena_block_t *b = a->head; b; b = b->next) {
        uintptr_t start = (uintptr_t)b->data, end = start + b->size;
        if (lo >= start && lo <= end && n <= end - lo)
            return true;
    }
    return false;
}

void gw_arena_reset(gw_arena_t *a)
{
    gw_arena_pool_t *pool = a->pool;
    gw_arena_block_t *b = a->head, *next, *spill = NULL;
    size_t std = GW_ARENA_BLOCK - sizeof(gw_arena_block_t);

    if (!b)
        return;
    if (pool->is_shared)
        pthread_mutex_lock(&pool->mu);
    for (; b; b = next) {
        next = b->next;
        if (b->size == std && pool->nfree < pool->max_free) {
            b->next = pool->free;
            pool->free = b;
            pool->nfree++;
        } else {
            b->next = spill; /* freed after the unlock */
            spill = b;
        }
    }
    if (pool->is_shared)
        pthread_mutex_unlock(&pool->mu);
    for (; spill; spill = next) {
        next = spill->next;
        free(spill);
    }
    a->head = NULL;
    a->ptr = a->end = NULL;
}

int gw_arena_pool_share(gw_arena_pool_t *pool)
{
    int e;

    if (pool->is_shared)
        return 0;
    if ((e = pthread_mutex_init(&pool->mu, NULL)))
        return -e;
    pool->is_shared = true;
    return 0;
}

void gw_arena_pool_dispose(gw_arena_pool_t *pool)
{
    gw_arena_block_t *b = pool->free, *next;
    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    pool->free = NULL;
    pool->nfree = 0;
    if (pool->is_shared) {
        pthread_mutex_destroy(&pool->mu);
        pool->is_shared = false;
    }
}
