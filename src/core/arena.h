/* Request-lifetime memory: bump allocation from 4 KiB blocks that come from a
 * per-worker free list, all released at once by gw_arena_reset(). Nothing
 * inside a request is freed piecemeal. */
#ifndef GW_ARENA_H
#define GW_ARENA_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define GW_ARENA_BLOCK 4096

typedef struct gw_arena_block gw_arena_block_t;

/* Free blocks shared by every arena of one worker. */
typedef struct gw_arena_pool {
    gw_arena_block_t *free;
    size_t nfree;
    size_t max_free; /* blocks kept beyond this go back to malloc */
    bool is_shared;  /* gw_arena_pool_share(): taken and given back under mu */
    pthread_mutex_t mu;
} gw_arena_pool_t;

typedef struct gw_arena {
    gw_arena_pool_t *pool; /* borrowed; outlives the arena */
    gw_arena_block_t *head;
    char *ptr, *end;
} gw_arena_t;

void gw_arena_init(gw_arena_t *a, gw_arena_pool_t *pool);

/* Returns n bytes aligned for any object, or NULL when out of memory.
 * A request larger than a block gets a block of its own. */
void *gw_arena_alloc(gw_arena_t *a, size_t n);

/* Copies n bytes into the arena; NULL when out of memory. */
char *gw_arena_dup(gw_arena_t *a, const void *p, size_t n);

/* True when the n bytes at p lie inside one of a's blocks: for the checks
 * of sanitizer builds (the output queue takes arena memory only from the
 * request's own arena). Walks the blocks. */
bool gw_arena_contains(const gw_arena_t *a, const void *p, size_t n);

/* Releases every block: standard ones to the pool, outliers to malloc. */
void gw_arena_reset(gw_arena_t *a);

/* From now on the pool's blocks are taken and given back under a lock:
 * arenas of several threads draw from it (--threads: a request thread
 * grows its request's arena while the loop's thread parses or resets
 * others). Call before any other thread uses it. 0 or -errno. */
int gw_arena_pool_share(gw_arena_pool_t *pool);

/* Frees the pool's blocks (worker exit). */
void gw_arena_pool_dispose(gw_arena_pool_t *pool);

#endif
