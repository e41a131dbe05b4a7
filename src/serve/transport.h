/* The transport seam: how a connection's bytes travel. Every read, write,
 * sendfile, shutdown and close of a client connection (conn.c, the output
 * queue in out.c, the WSGI write()'s wait) goes through a table of
 * operations and the socket, so that TLS can be added as a second transport
 * beside the plain socket without touching the protocols, static files or
 * the WSGI bridge. transport.c holds the plain socket's.
 *
 * The contract, written for what TLS needs of its callers:
 *
 * - read() may return fewer bytes than asked while more are already
 *   decoded inside the transport (a TLS record holds more than one read
 *   takes), with the socket no longer readable: no edge will come for them.
 *   A short read drains the connection only when gw_transport_has_pending()
 *   says so; conn.c reads on while it is true.
 * - Any call may answer -EAGAIN waiting for the other direction: a TLS
 *   write during a key update needs the socket readable, a read during a
 *   renegotiation writable. read_wants / write_wants say which readiness
 *   (POLLIN or POLLOUT) the last -EAGAIN of that direction waits for; the
 *   plain socket's never change (POLLIN, POLLOUT). The WSGI write() polls
 *   for write_wants (gw_conn_wait_for()). conn.c's edge-triggered
 *   loop retries a flush on EPOLLOUT and a read on EPOLLIN only; a
 *   transport whose wants can cross must have conn.c retry on either
 *   edge (see docs/ARCHITECTURE.md, "Where to add a protocol or a
 *   transport").
 * - A write that answered -EAGAIN is called again with the same bytes
 *   first (the output queue keeps them: OpenSSL's SSL_write demands it,
 *   or SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER for a buffer that moved).
 *   A transport that may hold bytes it has not counted (may_hold: TLS
 *   makes a record, then finds the socket full) has them sent by that
 *   call whatever it is given: so none of them may be dropped for other
 *   bytes (out.c keeps them as begun).
 * - sendfile may be NULL (TLS without kernel TLS): the output queue then
 *   reads the file into a bounded buffer and writes that (out.c).
 * - shutdown() ends our direction (TLS: close_notify, then the FIN); the
 *   lingering close still reads and drops what the peer sends after it.
 * - close() closes the socket and frees the transport's state, once.
 *
 * Every call returns a count or a negative errno (EINTR is retried inside)
 * and never blocks: sockets are non-blocking. None runs Python. */
#ifndef GW_TRANSPORT_H
#define GW_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct gw_transport gw_transport_t;

typedef struct gw_transport_ops {
    const char *name; /* "plain": for logs */
    /* Up to n bytes into buf: > 0, 0 at the end of the stream, -EAGAIN, or
     * another negative errno (the connection is lost). */
    ssize_t (*read)(gw_transport_t *t, void *buf, size_t n);
    /* iov (at most IOV_MAX entries) as one write: the count taken (> 0;
     * fewer means the socket is full), -EAGAIN, or a negative errno. more:
     * a file follows at once (MSG_MORE: the head shares its packets). */
    ssize_t (*writev)(gw_transport_t *t, const struct iovec *iov, int iovcnt, bool more);
    /* Up to n bytes of fd from *off (advanced): the count (fewer: the socket
     * is full or the file ended), 0 when the file ended, -EAGAIN, or a
     * negative errno. NULL when the transport cannot send from a file. */
    ssize_t (*sendfile)(gw_transport_t *t, int fd, off_t *off, size_t n);
    /* True while read() has bytes without the socket being readable. NULL:
     * never (the plain socket holds nothing). */
    bool (*has_pending)(const gw_transport_t *t);
    /* Ends our direction; 0 or a negative errno. */
    int (*shutdown)(gw_transport_t *t);
    /* Closes the socket, frees the transport's state. */
    void (*close)(gw_transport_t *t);
    /* A write that answers -EAGAIN or a short count may hold the start of
     * what it was given beyond the count (TLS: the record it made). */
    bool may_hold;
} gw_transport_ops_t;

/* Embedded in the connection (no allocation per connection). */
struct gw_transport {
    const gw_transport_ops_t *ops;
    int fd;            /* the socket: owned, closed by close() */
    short read_wants;  /* POLLIN or POLLOUT: what the last read's -EAGAIN waits for */
    short write_wants; /* the same for writev() and sendfile() */
    void *impl;        /* the transport's own state per connection (TLS: its session);
                        * NULL for the plain socket */
};

/* The plain socket: read(), sendmsg(), sendfile(), shutdown(), close(). */
extern const gw_transport_ops_t gw_transport_plain;

/* Makes t the plain transport of the connected socket fd, which it owns
 * from now on. */
void gw_transport_open_plain(gw_transport_t *t, int fd);

static inline ssize_t gw_transport_read(gw_transport_t *t, void *buf, size_t n)
{
    return t->ops->read(t, buf, n);
}

static inline bool gw_transport_has_pending(const gw_transport_t *t)
{
    return t->ops->has_pending && t->ops->has_pending(t);
}

static inline int gw_transport_shutdown(gw_transport_t *t)
{
    return t->ops->shutdown(t);
}

static inline void gw_transport_close(gw_transport_t *t)
{
    t->ops->close(t);
}

#endif
