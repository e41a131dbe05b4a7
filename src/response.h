/* The response writer: an output queue of memory and file segments sent with
 * one writev (sendmsg) per flush and sendfile for files, resuming after
 * partial writes; and the formatting of an HTTP/1.1 response head. Memory
 * segments are borrowed: each may name an owner, handed to the queue's
 * release callback once its bytes are out (the WSGI bridge drops its
 * reference to a bytes object there). */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H

#include "arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_OUT_SEGS 64

typedef void (*gw_release_cb)(void *owner);

typedef struct gw_seg {
    const char *base; /* memory segment; NULL for a file segment */
    size_t len;       /* bytes left to send */
    void *owner;      /* handed to release() when sent or discarded */
    int fd;           /* file segment: send len bytes from off */
    off_t off;
    char inl[24];     /* small copies live here (chunk-size lines) */
} gw_seg_t;

typedef struct gw_out {
    gw_seg_t seg[GW_OUT_SEGS];
    unsigned head, count;  /* ring of queued segments */
    gw_release_cb release; /* may be NULL when no segment has an owner */
    uint64_t sent;         /* bytes written since the last reset */
} gw_out_t;

void gw_out_init(gw_out_t *o, gw_release_cb release);

static inline unsigned gw_out_room(const gw_out_t *o) { return GW_OUT_SEGS - o->count; }
static inline bool gw_out_is_empty(const gw_out_t *o) { return o->count == 0; }

/* Queues len bytes at base (borrowed until sent). Returns 0 or -ENOBUFS when
 * the ring is full (flush first). A zero-length segment is not queued, and its
 * owner is released at once. */
int gw_out_push(gw_out_t *o, const void *base, size_t len, void *owner);

/* Queues a copy of up to 24 bytes. 0 or -ENOBUFS. */
int gw_out_push_copy(gw_out_t *o, const void *base, size_t len);

/* Queues len bytes of fd from off, sent with sendfile. 0 or -ENOBUFS. */
int gw_out_push_file(gw_out_t *o, int fd, off_t off, size_t len, void *owner);

/* Writes as much as the socket takes. Returns 0 when the queue is empty,
 * -EAGAIN when the socket is full, another negative errno when the peer is
 * gone. Never blocks. */
int gw_out_flush(gw_out_t *o, int sock);

/* Releases every queued segment unsent. */
void gw_out_discard(gw_out_t *o);

/* One response header, borrowed. */
typedef struct gw_hdr {
    const char *name;  size_t name_len;
    const char *value; size_t value_len;
} gw_hdr_t;

typedef enum gw_framing {
    GW_FRAME_LENGTH,  /* Content-Length: content_length */
    GW_FRAME_CHUNKED, /* Transfer-Encoding: chunked */
    GW_FRAME_CLOSE,   /* body ends when the connection closes */
    GW_FRAME_NONE,    /* no body by definition (HEAD, 204, 304); keep what the app said */
} gw_framing_t;

typedef struct gw_head {
    int http_minor;          /* 0 or 1: the request's version */
    const char *status;      /* "200 OK", borrowed */
    size_t status_len;
    const gw_hdr_t *hdrs;    /* the app's headers, already validated */
    size_t nhdrs;
    gw_framing_t framing;
    uint64_t content_length; /* with GW_FRAME_LENGTH when the app gave none */
    bool add_length;         /* write Content-Length: content_length */
    const char *request_id;  /* X-Request-Id to add, or NULL */
    size_t request_id_len;
    bool add_server;         /* unless the app gave its own */
    bool add_date;
    bool keep_alive;
} gw_head_t;

/* Formats the status line and headers (with Date, Server, framing and
 * Connection) into the arena. Returns the length, 0 when out of memory. */
size_t gw_head_format(const gw_head_t *h, gw_arena_t *a, char **out);

/* A complete short response with a text body ("Bad Request\n"), for errors
 * the server answers itself (400, 408, 413, 500, ...), with X-Request-Id
 * when request_id is not NULL. Returns its length (0: out of memory); the
 * body is gw_status_reason(status) plus a newline, unless is_head. */
size_t gw_head_simple(int status, bool keep_alive, bool is_head, const char *request_id,
                      size_t request_id_len, gw_arena_t *a, char **out);

/* "Bad Request" for 400 and so on; "Unknown" otherwise. */
const char *gw_status_reason(int status);

#endif
