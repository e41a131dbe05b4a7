/* Byte buffers whose standard-size storage comes from a per-worker free list,
 * so that steady-state connections never call malloc. An outlier (a 60 KiB
 * header block) grows past the standard size and is freed on release. */
#ifndef GW_BUF_H
#define GW_BUF_H

#include <stddef.h>

typedef struct gw_buf {
    char *data; /* NULL until the first reserve */
    size_t len; /* bytes in use from data[0] */
    size_t cap;
} gw_buf_t;

typedef struct gw_bufpool {
    void *free;      /* singly linked through the first word of each block */
    size_t nfree;
    size_t max_free; /* blocks kept beyond this are freed */
    size_t size;     /* the standard block size */
} gw_bufpool_t;

void gw_bufpool_init(gw_bufpool_t *p, size_t size, size_t max_free);
void gw_bufpool_dispose(gw_bufpool_t *p);

/* Ensures cap - len >= extra, taking a pool block first and growing beyond it
 * when needed. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int gw_buf_reserve(gw_buf_t *b, gw_bufpool_t *p, size_t extra);

/* Drops the first n bytes, moving the rest to the front. */
void gw_buf_consume(gw_buf_t *b, size_t n);

/* Returns the storage (to the pool when standard-size) and empties b. */
void gw_buf_release(gw_buf_t *b, gw_bufpool_t *p);

#endif
