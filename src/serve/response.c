#include "serve/response.h"

#include "core/clock.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_BATCH 64 /* <= IOV_MAX; the ring never holds more */

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
    o->is_head_started = false;
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
    s->base = base;
    s->len = len;
    s->owner = owner;
    s->fd = -1;
    s->owns_fd = false;
    o->count++;
    return 0;
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
    s->base = s->inl;
    s->len = len;
    s->owner = NULL;
    s->fd = -1;
    s->owns_fd = false;
    o->count++;
    return 0;
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
    o->is_head_started = false;
    drop(o, s);
}

/* Sends the memory segments at the head, up to the next file segment. */
static int flush_mem(gw_out_t *o, int sock)
{
    struct iovec iov[IOV_BATCH];
    struct msghdr msg = {.msg_iov = iov};
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
    msg.msg_iovlen = n;
    /* Headers before a file: MSG_MORE lets them share a packet with its start. */
    do {
        w = sendmsg(sock, &msg, MSG_NOSIGNAL | (file_next ? MSG_MORE : 0));
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        return -errno;
    o->sent += (uint64_t)w;
    while (w > 0) {
        gw_seg_t *s = &o->seg[o->head];
        if ((size_t)w >= s->len) {
            w -= (ssize_t)s->len;
            s->len = 0;
            pop(o);
        } else {
            s->base += w;
            s->len -= (size_t)w;
            o->is_head_started = true;
            return -EAGAIN; /* short write: the socket is full */
        }
    }
    return 0;
}

static int flush_file(gw_out_t *o, int sock)
{
    gw_seg_t *s = &o->seg[o->head];
    bool is_retry = false;

    while (s->len > 0) {
        /* Linux caps one sendfile() at ~2 GiB; loop instead of trusting count. */
        size_t chunk = s->len > (size_t)1 << 30 ? (size_t)1 << 30 : s->len;
        ssize_t w = sendfile(sock, s->fd, &s->off, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EPIPE; /* the file shrank under us: the length we promised is gone */
        o->sent += (uint64_t)w;
        s->len -= (size_t)w;
        o->is_head_started = true;
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

int gw_out_flush(gw_out_t *o, int sock)
{
    while (o->count) {
        int rc = o->seg[o->head].base ? flush_mem(o, sock) : flush_file(o, sock);
        if (rc < 0)
            return rc == -EWOULDBLOCK ? -EAGAIN : rc;
    }
    return 0;
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
    unsigned keep = o->count && o->is_head_started;

    while (o->count > keep) {
        o->count--;
        drop(o, &o->seg[(o->head + o->count) % GW_OUT_SEGS]);
    }
}

const char *gw_status_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";   /* RFC 6585 */
    case 429: return "Too Many Requests";       /* RFC 6585 */
    case 431: return "Request Header Fields Too Large"; /* RFC 6585 */
    case 451: return "Unavailable For Legal Reasons";   /* RFC 7725 */
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 511: return "Network Authentication Required"; /* RFC 6585 */
    default: return NULL;
    }
}

const char *gw_status_reason(int status)
{
    const char *p = gw_status_phrase(status);
    return p ? p : "Unknown";
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

size_t gw_head_format(const gw_head_t *h, gw_arena_t *a, char **out)
{
    size_t need = 128 + h->status_len + GW_HTTP_DATE_LEN + h->request_id_len;
    char *buf, *p;

    for (size_t i = 0; i < h->nhdrs; i++)
        need += h->hdrs[i].name_len + h->hdrs[i].value_len + 4;
    if (!(buf = gw_arena_alloc(a, need)))
        return 0;
    p = h->http_minor ? PUT_LIT(buf, "HTTP/1.1 ") : PUT_LIT(buf, "HTTP/1.0 ");
    p = put(p, h->status, h->status_len);
    p = PUT_LIT(p, "\r\n");
    if (h->add_server)
        p = PUT_LIT(p, "Server: gangway\r\n");
    if (h->add_date) {
        p = PUT_LIT(p, "Date: ");
        p = put(p, gw_clock_http_date(), GW_HTTP_DATE_LEN);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->request_id) {
        p = PUT_LIT(p, "X-Request-Id: ");
        p = put(p, h->request_id, h->request_id_len);
        p = PUT_LIT(p, "\r\n");
    }
    for (size_t i = 0; i < h->nhdrs; i++) {
        if (h->hdrs[i].name_len == 0)
            continue; /* removed by the caller */
        p = put(p, h->hdrs[i].name, h->hdrs[i].name_len);
        p = PUT_LIT(p, ": ");
        p = put(p, h->hdrs[i].value, h->hdrs[i].value_len);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->framing == GW_FRAME_CHUNKED)
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    else if (h->add_length)
        p += sprintf(p, "Content-Length: %llu\r\n", (unsigned long long)h->content_length);
    if (!h->keep_alive)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (h->http_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    *out = buf;
    return (size_t)(p - buf);
}

size_t gw_head_simple(int status, bool keep_alive, bool is_head, const char *request_id,
                      size_t request_id_len, gw_arena_t *a, char **out)
{
    const char *reason = gw_status_reason(status);
    size_t rl = strlen(reason);
    char *buf = gw_arena_alloc(a, 220 + 2 * rl + request_id_len);
    int n;

    if (!buf)
        return 0;
    n = sprintf(buf,
                "HTTP/1.1 %d %s\r\nServer: gangway\r\nDate: %.*s\r\n%s%.*s%s"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s\r\n",
                status, reason, GW_HTTP_DATE_LEN, gw_clock_http_date(),
                request_id ? "X-Request-Id: " : "", request_id ? (int)request_id_len : 0,
                request_id ? request_id : "", request_id ? "\r\n" : "", rl + 1,
                keep_alive ? "" : "Connection: close\r\n");
    if (!is_head)
        n += sprintf(buf + n, "%s\n", reason);
    *out = buf;
    return (size_t)n;
}
