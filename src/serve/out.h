/* The output queue: memory and file segments sent through the connection's
 * transport with one writev (sendmsg) per flush and sendfile for files (or a
 * bounded read-and-write where the transport has no sendfile), resuming
 * after partial writes. What the bytes say is the response writer's
 * business (response.h).
 *
 * The queue sends bytes long after they were queued (a slow client, while
 * other requests run Python), so it accepts only memory whose lifetime it
 * can rely on, one push function per kind, and no "borrowed pointer" push:
 *
 *   gw_out_push_lit    a string literal (static storage; enforced at compile time)
 *   gw_out_push_arena  the request's arena, which outlives the queue (below)
 *   gw_out_push_ref    memory kept alive by an owner reference the queue takes
 *                      over and hands to the release callback once sent/dropped
 *   gw_out_push_copy   a small copy held inside the segment
 *
 * and files: gw_out_push_file_own (the queue owns and closes the fd) or
 * gw_out_push_file (the caller pins the fd for the queue's lifetime).
 * Issue 14: a list answer queued straight from the app's list items sent
 * another request's bytes once the app changed the list. */
#ifndef GW_OUT_H
#define GW_OUT_H

#include "core/arena.h"
#include "serve/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_OUT_SEGS 64
#define GW_OUT_INLINE 24 /* bytes gw_out_push_copy() holds */

/* Drops an owner given to gw_out_push_ref() or gw_out_push_file(). Runs from
 * the loop's I/O handler (a flush on EPOLLOUT, a close): it must not run
 * application code (the WSGI bridge only ever hands over exact bytes, whose
 * release frees memory and nothing else). */
typedef void (*gw_release_cb)(void *owner);

typedef struct gw_seg {
    const char *base; /* memory segment; NULL for a file segment */
    size_t len;       /* bytes left to send */
    void *owner;      /* handed to release() when sent or discarded */
    int fd;           /* file segment: send len bytes from off */
    bool owns_fd;     /* closed when sent or discarded */
    off_t off;
    char inl[GW_OUT_INLINE]; /* gw_out_push_copy() bytes */
} gw_seg_t;

typedef struct gw_out {
    gw_seg_t seg[GW_OUT_SEGS];
    unsigned head, count;  /* ring of queued segments */
    gw_release_cb release; /* NULL when no owner is ever pushed */
    uint64_t sent;         /* bytes written since the last reset */
    /* Segments at the head that must go out whole before any other bytes:
     * the head when partly written, and through a transport that may hold
     * what it was given (transport.h: TLS's record made, the socket full),
     * every segment the last short write was given. */
    unsigned started;
} gw_out_t;

void gw_out_init(gw_out_t *o, gw_release_cb release);

static inline unsigned gw_out_room(const gw_out_t *o) { return GW_OUT_SEGS - o->count; }
static inline bool gw_out_is_empty(const gw_out_t *o) { return o->count == 0; }

/* Bytes queued and not yet sent (for the log line of an aborted answer). */
uint64_t gw_out_pending(const gw_out_t *o);

/* Every push returns 0, or -ENOBUFS when the ring is full (flush first); a
 * zero-length segment is not queued. Whatever the result, what the push was
 * given to own (owner, fd) is the queue's from the call on: released or
 * closed at once when not queued. */

/* A string literal: gw_out_push_lit(o, "0\r\n\r\n"). The macro does not
 * compile with anything but a literal ("" lit ""), so no pointer to a stack
 * buffer or freed memory can pass as static. */
#define gw_out_push_lit(o, lit) gw__out_push_static((o), "" lit "", sizeof(lit) - 1)
int gw__out_push_static(gw_out_t *o, const char *lit, size_t len);

/* len bytes at base inside arena a, the arena of the request whose answer
 * this queue carries. Safe because the connection returns the queue (sent or
 * discarded) before it resets the request's arena on every path
 * (gw_conn_finish, the close of a connection); sanitizer builds check that
 * base lies in a. */
int gw_out_push_arena(gw_out_t *o, const gw_arena_t *a, const void *base, size_t len);

/* len bytes at base, kept alive by owner (not NULL): the caller hands over
 * one reference, which the queue passes to release() once the bytes are out
 * or dropped. */
int gw_out_push_ref(gw_out_t *o, const void *base, size_t len, void *owner);

/* A copy of up to GW_OUT_INLINE bytes (a chunk-size line); -EINVAL beyond. */
int gw_out_push_copy(gw_out_t *o, const void *base, size_t len);

/* len bytes of fd from off, sent with sendfile. The queue owns fd (the caller
 * dup()ed it) and closes it once sent or discarded: nothing the application
 * does with its own descriptor afterwards changes what is sent. */
int gw_out_push_file_own(gw_out_t *o, int fd, off_t off, size_t len);

/* The same for a descriptor the queue does not own: owner (released through
 * the callback) keeps fd open on the same file, or, with owner NULL, the
 * caller pins it until the queue is returned (static.c's open-file cache
 * keeps the entry it serves for the whole answer). */
int gw_out_push_file(gw_out_t *o, int fd, off_t off, size_t len, void *owner);

/* Writes as much as the transport takes. Returns 0 when the queue is empty,
 * -EAGAIN when the transport is full (t->write_wants says what to wait for),
 * another negative errno when the peer is gone. Never blocks. Releases the
 * owners of what was sent. */
int gw_out_flush(gw_out_t *o, gw_transport_t *t);

/* Moves as many segments as dst has room for from the head of src to the
 * tail of dst, in order, with what they own (owners, descriptors): a
 * request thread fills a staging queue of its own and hands its segments
 * to the connection's queue under the connection's lock (--threads). src
 * counts moved bytes as sent; it must never have been flushed. Returns the
 * number moved. */
unsigned gw_out_move(gw_out_t *dst, gw_out_t *src);

/* Releases every queued segment unsent. */
void gw_out_discard(gw_out_t *o);

/* The same, except a head segment already partly written (an interim
 * "HTTP/1.1 100 Continue" the socket took only some of, or whose TLS
 * record OpenSSL made and holds): its rest stays queued, so that an answer queued next follows whole bytes, not
 * "HTTP/1.1 100 Cont" + "HTTP/1.1 408 ...". For a server's own answer
 * replacing whatever was queued before it. */
void gw_out_discard_unstarted(gw_out_t *o);

#endif
