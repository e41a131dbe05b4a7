#include "response.h"

#include "clock.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define IOV_BATCH 64 /* <= IOV_MAX; the ring never holds more */

void gw_out_init(gw_out_t *o, gw_release_cb release)
{
    o->head = o->count = 0;
    o->release = release;
    o->sent = 0;
}

static gw_seg_t *tail_slot(gw_out_t *o)
{
    return &o->seg[(o->head + o->count) % GW_OUT_SEGS];
}

int gw_out_push(gw_out_t *o, const void *base, size_t len, void *owner)
{
    gw_seg_t *s;

    if (len == 0) {
        if (owner && o->release)
            o->release(owner);
        return 0;
    }
    if (o->count == GW_OUT_SEGS)
        return -ENOBUFS;
    s = tail_slot(o);
    s->base = base;
    s->len = len;
    s->owner = owner;
    s->fd = -1;
    o->count++;
    return 0;
}

int gw_out_push_copy(gw_out_t *o, const void *base, size_t len)
{
    gw_seg_t *s;

    if (o->count == GW_OUT_SEGS)
        return -ENOBUFS;
    if (len > sizeof(s->inl))
        return -EINVAL;
    s = tail_slot(o);
    memcpy(s->inl, base, len);
    s->base = s->inl;
    s->len = len;
    s->owner = NULL;
    s->fd = -1;
    o->count++;
    return 0;
}

int gw_out_push_file(gw_out_t *o, int fd, off_t off, size_t len, void *owner)
{
    gw_seg_t *s;

    if (o->count == GW_OUT_SEGS)
        return -ENOBUFS;
    s = tail_slot(o);
    s->base = NULL;
    s->len = len;
    s->owner = owner;
    s->fd = fd;
    s->off = off;
    o->count++;
    if (len == 0) {
        /* Keep the order of releases: a zero-length file is simply done. */
        o->count--;
        if (owner && o->release)
            o->release(owner);
    }
    return 0;
}

static void pop(gw_out_t *o)
{
    gw_seg_t *s = &o->seg[o->head];
    void *owner = s->owner;

    o->head = (o->head + 1) % GW_OUT_SEGS;
    o->count--;
    if (owner && o->release)
        o->release(owner);
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
            return -EAGAIN; /* short write: the socket is full */
        }
    }
    return 0;
}

static int flush_file(gw_out_t *o, int sock)
{
    gw_seg_t *s = &o->seg[o->head];

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
        if ((size_t)w < chunk)
            return s->len ? -EAGAIN : (pop(o), 0);
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

void gw_out_discard(gw_out_t *o)
{
    while (o->count)
        pop(o);
}

const char *gw_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 403: return "Forbidden";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
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
