#include "serve/out.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_BATCH 64 /* <= IOV_MAX; the ring never holds more */
#define COPY_BUF 16384 /* a file through a transport without sendfile: bytes per write */

/* Sanitizer builds check what gw_out_push_arena() is given. */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_OWNERSHIP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_OWNERSHIP 1
#endif
#endif

void gw_out_init(gw_out_t *o, gw_release_cb release)
{
    o->head = o->count = 0;
    o->release = release;
    o->sent = 0;
    o->started = 0;
}

static void release(gw_out_t *o, void *owner)
{
    if (owner) {
        assert(o->release); /* an owner with nobody to drop it is a leak */
        o->release(owner);
    }
}

/* The next free slot, or NULL when the ring is full. */
static gw_seg_t *tail_slot(gw_out_t *o)
{
    if (o->count == GW_OUT_SEGS)
        return NULL;
    return &o->seg[(o->head + o->count) % GW_OUT_SEGS];
}

/* Makes the free slot s a memory segment and queues it. */
static int queue_mem(gw_out_t *o, gw_seg_t *s, const char *base, size_t len, void *owner)
{
    s->base = base;
    s->len = len;
    s->owner = owner;
    s->fd = -1;
    s->owns_fd = false;
    o->count++;
    return 0;
}

static int push_mem(gw_out_t *o, const char *base, size_t len, void *owner)
{
    gw_seg_t *s;

    if (len == 0) {
        release(o, owner);
        return 0;
    }
    if (!(s = tail_slot(o))) {
        release(o, owner);
        return -ENOBUFS;
    }
    return queue_mem(o, s, base, len, owner);
}

int gw__out_push_static(gw_out_t *o, const char *lit, size_t len)
{
    return push_mem(o, lit, len, NULL);
}

int gw_out_push_arena(gw_out_t *o, const gw_arena_t *a, const void *base, size_t len)
{
#ifdef CHECK_OWNERSHIP
    assert(len == 0 || gw_arena_contains(a, base, len));
#else
    (void)a;
#endif
    return push_mem(o, base, len, NULL);
}

int gw_out_push_ref(gw_out_t *o, const void *base, size_t len, void *owner)
{
    assert(owner);
    return push_mem(o, base, len, owner);
}

int gw_out_push_copy(gw_out_t *o, const void *base, size_t len)
{
    gw_seg_t *s;

    if (len > sizeof(s->inl))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (!(s = tail_slot(o)))
        return -ENOBUFS;
    memcpy(s->inl, base, len);
    return queue_mem(o, s, s->inl, len, NULL);
}

static int push_file(gw_out_t *o, int fd, bool owns_fd, off_t off, size_t len, void *owner)
{
    gw_seg_t *s;

    if (len == 0 || !(s = tail_slot(o))) {
        if (owns_fd)
            close(fd);
        release(o, owner);
        return len == 0 ? 0 : -ENOBUFS;
    }
    s->base = NULL;
    s->len = len;
    s->owner = owner;
    s->fd = fd;
    s->owns_fd = owns_fd;
    s->off = off;
    o->count++;
    return 0;
}

int gw_out_push_file_own(gw_out_t *o, int fd, off_t off, size_t len)
{
    return push_file(o, fd, true, off, len, NULL);
}

int gw_out_push_file(gw_out_t *o, int fd, off_t off, size_t len, void *owner)
{
    return push_file(o, fd, false, off, len, owner);
}

/* Drops what segment s holds (its fd, its owner); s is out of the ring. */
static void drop(gw_out_t *o, gw_seg_t *s)
{
    if (s->owns_fd)
        close(s->fd);
    release(o, s->owner);
}

static void pop(gw_out_t *o)
{
    gw_seg_t *s = &o->seg[o->head];

    o->head = (o->head + 1) % GW_OUT_SEGS;
    o->count--;
    if (o->started)
        o->started--;
    drop(o, s);
}

/* Sends the memory segments at the head, up to the next file segment. */
static int flush_mem(gw_out_t *o, gw_transport_t *t)
{
    struct iovec iov[IOV_BATCH];
    unsigned n = 0, i;
    bool file_next = false;
    ssize_t w;

    for (i = 0; i < o->count && n < IOV_BATCH; i++) {
        gw_seg_t *s = &o->seg[(o->head + i) % GW_OUT_SEGS];
        if (!s->base) {
            file_next = true;
            break;
        }
        iov[n].iov_base = (void *)s->base;
        iov[n].iov_len = s->len;
        n++;
    }
    /* Headers before a file: MSG_MORE lets them share a packet with its start. */
    w = t->ops->writev(t, iov, (int)n, file_next);
    if (w < 0) {
        /* TLS may hold a record of what it was given: it goes out first,
         * whatever the next call gives, so none of it may be dropped */
        if (w == -EAGAIN && t->ops->may_hold)
            o->started = n;
        return (int)w;
    }
    o->sent += (uint64_t)w;
    while (w > 0) {
        gw_seg_t *s = &o->seg[o->head];
        if ((size_t)w >= s->len) {
            w -= (ssize_t)s->len;
            s->len = 0;
            pop(o);
            n--;
        } else {
            s->base += w;
            s->len -= (size_t)w;
            o->started = t->ops->may_hold ? n : 1;
            return -EAGAIN; /* short write: the socket is full */
        }
    }
    return 0;
}

/* For a transport without sendfile (TLS without kernel TLS): up to n
 * (<= COPY_BUF) bytes of the file segment s through a bounded buffer, one
 * read and one write. A short write leaves the rest in the file: the next
 * call reads those bytes again, the same ones (the transport's contract
 * asks for them again, transport.h). The count, 0 when the file ended, or
 * a negative errno. */
static ssize_t copy_file(gw_transport_t *t, gw_seg_t *s, size_t n)
{
    char buf[COPY_BUF];
    struct iovec iov = {.iov_base = buf};
    ssize_t got, w;

    do {
        got = pread(s->fd, buf, n, s->off);
    } while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got < 0 ? -errno : 0;
    iov.iov_len = (size_t)got;
    w = t->ops->writev(t, &iov, 1, false);
    if (w > 0)
        s->off += w;
    return w;
}

static int flush_file(gw_out_t *o, gw_transport_t *t)
{
    gw_seg_t *s = &o->seg[o->head];
    bool is_retry = false;
    /* Linux caps one sendfile() at ~2 GiB; loop instead of trusting count.
     * Without sendfile, the bounded buffer sets the step. */
    size_t step = t->ops->sendfile ? (size_t)1 << 30 : COPY_BUF;

    while (s->len > 0) {
        size_t chunk = s->len > step ? step : s->len;
        ssize_t w = t->ops->sendfile ? t->ops->sendfile(t, s->fd, &s->off, chunk)
                                     : copy_file(t, s, chunk);
        if (w < 0) {
            if (w == -EAGAIN && t->ops->may_hold && !o->started)
                o->started = 1; /* a record of its bytes may be held (above) */
            return (int)w;
        }
        if (w == 0)
            return -EPIPE; /* the file shrank under us: the length we promised is gone */
        o->sent += (uint64_t)w;
        s->len -= (size_t)w;
        if (!o->started)
            o->started = 1;
        /* A short count does not tell a full socket from a file that
         * shrank (EOF): one more call does. EAGAIN waits for EPOLLOUT; 0
         * fails the answer at once, where waiting for an edge that never
         * comes would last until --write-timeout. Progress again means the
         * client took bytes meanwhile (the socket was full, so an EPOLLOUT
         * edge is due): wait for it rather than stream on in this call. */
        if ((size_t)w < chunk) {
            if (is_retry)
                return -EAGAIN;
            is_retry = true;
        }
    }
    pop(o);
    return 0;
}

int gw_out_flush(gw_out_t *o, gw_transport_t *t)
{
    while (o->count) {
        int rc = o->seg[o->head].base ? flush_mem(o, t) : flush_file(o, t);
        if (rc < 0)
            return rc == -EWOULDBLOCK ? -EAGAIN : rc;
    }
    return 0;
}

unsigned gw_out_move(gw_out_t *dst, gw_out_t *src)
{
    unsigned moved = 0;

    assert(!src->started); /* a staging queue is never flushed */
    while (src->count && dst->count < GW_OUT_SEGS) {
        gw_seg_t *from = &src->seg[src->head];
        gw_seg_t *to = &dst->seg[(dst->head + dst->count) % GW_OUT_SEGS];

        *to = *from;
        if (from->base == from->inl)
            to->base = to->inl; /* a gw_out_push_copy() segment holds its bytes */
        src->sent += from->len;
        src->head = (src->head + 1) % GW_OUT_SEGS;
        src->count--;
        dst->count++;
        moved++;
    }
    return moved;
}

uint64_t gw_out_pending(const gw_out_t *o)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < o->count; i++)
        n += o->seg[(o->head + i) % GW_OUT_SEGS].len;
    return n;
}

void gw_out_discard(gw_out_t *o)
{
    while (o->count)
        pop(o);
}

void gw_out_discard_unstarted(gw_out_t *o)
{
    unsigned keep = o->started < o->count ? o->started : o->count;

    while (o->count > keep) {
        o->count--;
        drop(o, &o->seg[(o->head + o->count) % GW_OUT_SEGS]);
    }
}
