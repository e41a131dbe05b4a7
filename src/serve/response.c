#include "serve/response.h"

#include "core/clock.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* gw_resp_plan(), inlined where a head is queued (every answer). */
static inline void plan(gw_resp_t *rs, gw_answer_t *a, const gw_req_t *r, bool may_keep_alive)
{
    *rs = (gw_resp_t){
        .no_body = r->is_head || a->status == 204 || a->status == 304,
        .keep_alive = may_keep_alive && !a->wants_close,
        ._minor = (uint8_t)gw_req_answer_minor(r),
    };
    if (a->status == 204 && a->length_hdr >= 0) {
        a->hdrs[a->length_hdr].name_len = 0; /* RFC 9110 8.6: never in a 204 */
        a->length_hdr = -1;
    }
    if (rs->no_body) {
        rs->framing = GW_FRAME_NONE;
        /* HEAD tells the length GET would have (RFC 9110 9.3.2); a 304 keeps
         * whatever length the source gave, nothing is added. */
        rs->_add_length =
            a->length_hdr < 0 && a->length >= 0 && a->status != 204 && a->status != 304;
        rs->length = a->length >= 0 ? (uint64_t)a->length : 0;
    } else if (a->length >= 0) {
        rs->framing = GW_FRAME_LENGTH;
        rs->length = (uint64_t)a->length;
        rs->_add_length = a->length_hdr < 0;
    } else if (gw_req_may_chunk(r)) {
        rs->framing = GW_FRAME_CHUNKED;
    } else {
        /* HTTP/1.0, or a gateway reading to the end: the close ends the body */
        rs->framing = GW_FRAME_CLOSE;
        rs->keep_alive = false;
    }
}

void gw_resp_plan(gw_resp_t *rs, gw_answer_t *a, const gw_req_t *r, bool may_keep_alive)
{
    plan(rs, a, r, may_keep_alive);
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

/* v in decimal (a Content-Length; printf costs ~150 instructions more). */
static char *put_u64(char *p, uint64_t v)
{
    char d[20];
    int n = 0;

    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = d[--n];
    return p;
}

/* Formats the head rs was planned for (and extra bytes after it: a text
 * body) into the arena. The length of the head, 0 when out of memory. */
static size_t format_head(const gw_resp_t *rs, const gw_answer_t *a, gw_arena_t *ar,
                          size_t extra, char **out)
{
    const char *reason = a->status_line ? NULL : gw_status_reason(a->status);
    size_t rl = reason ? strlen(reason) : 0;
    size_t need = 128 + a->status_line_len + rl + GW_HTTP_DATE_LEN + a->request_id_len + extra;
    char *buf, *p;

    for (size_t i = 0; i < a->nhdrs; i++)
        need += a->hdrs[i].name_len + a->hdrs[i].value_len + 4;
    if (!(buf = gw_arena_alloc(ar, need)))
        return 0;
    p = rs->_minor ? PUT_LIT(buf, "HTTP/1.1 ") : PUT_LIT(buf, "HTTP/1.0 ");
    if (reason) {
        int st = a->status; /* three digits: the sources only make 100..999 */
        *p++ = (char)('0' + st / 100 % 10);
        *p++ = (char)('0' + st / 10 % 10);
        *p++ = (char)('0' + st % 10);
        *p++ = ' ';
        p = put(p, reason, rl);
    } else {
        p = put(p, a->status_line, a->status_line_len);
    }
    p = PUT_LIT(p, "\r\n");
    if (!a->has_server)
        p = PUT_LIT(p, "Server: gangway\r\n");
    if (!a->has_date) {
        p = PUT_LIT(p, "Date: ");
        p = put(p, gw_clock_http_date(), GW_HTTP_DATE_LEN);
        p = PUT_LIT(p, "\r\n");
    }
    if (a->request_id) {
        p = PUT_LIT(p, "X-Request-Id: ");
        p = put(p, a->request_id, a->request_id_len);
        p = PUT_LIT(p, "\r\n");
    }
    for (size_t i = 0; i < a->nhdrs; i++) {
        if (a->hdrs[i].name_len == 0)
            continue; /* removed */
        p = put(p, a->hdrs[i].name, a->hdrs[i].name_len);
        p = PUT_LIT(p, ": ");
        p = put(p, a->hdrs[i].value, a->hdrs[i].value_len);
        p = PUT_LIT(p, "\r\n");
    }
    if (rs->framing == GW_FRAME_CHUNKED) {
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (rs->_add_length) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_u64(p, rs->length);
        p = PUT_LIT(p, "\r\n");
    }
    /* HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes unless told
     * (RFC 9112 9.3). */
    if (!rs->keep_alive)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (rs->_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    *out = buf;
    return (size_t)(p - buf);
}

int gw_resp_head(gw_resp_t *rs, gw_answer_t *a, gw_req_t *r, bool may_keep_alive, gw_out_t *o)
{
    char *buf;
    size_t n;

    plan(rs, a, r, may_keep_alive);
    if (!(n = format_head(rs, a, &r->arena, 0, &buf)))
        return -ENOMEM;
    return gw_out_push_arena(o, &r->arena, buf, n);
}

int gw_resp_text(gw_resp_t *rs, gw_req_t *r, int status, const gw_hdr_t *hdrs, size_t nhdrs,
                 bool may_keep_alive, const char *request_id, size_t request_id_len,
                 gw_out_t *o)
{
    static const char ctype[] = "text/plain; charset=utf-8";
    const char *reason = gw_status_reason(status);
    size_t rl = strlen(reason), n;
    gw_hdr_t h[GW_RESP_TEXT_HDRS + 1];
    gw_answer_t a = {
        .status = status,
        .hdrs = h,
        .nhdrs = nhdrs + 1,
        .length_hdr = -1,
        .length = (int64_t)rl + 1,
        .request_id = request_id,
        .request_id_len = request_id_len,
    };
    char *buf;

    assert(nhdrs <= GW_RESP_TEXT_HDRS);
    if (nhdrs)
        memcpy(h, hdrs, nhdrs * sizeof(*h));
    h[nhdrs] = (gw_hdr_t){"Content-Type", 12, ctype, sizeof(ctype) - 1};
    plan(rs, &a, r, may_keep_alive);
    /* The body goes in the same arena block, right after the head. */
    if (!(n = format_head(rs, &a, &r->arena, rl + 1, &buf)))
        return -ENOMEM;
    if (gw_out_room(o) < 2)
        return -ENOBUFS;
    gw_out_push_arena(o, &r->arena, buf, n);
    if (!rs->no_body) {
        memcpy(buf + n, reason, rl);
        buf[n + rl] = '\n';
        gw_out_push_arena(o, &r->arena, buf + n, rl + 1);
        rs->body_sent = rl + 1;
    }
    return 0;
}

/* A chunk's size line, before its data (RFC 9112 7.1). */
static int chunk_line(gw_out_t *o, uint64_t n)
{
    char line[GW_OUT_INLINE];
    return gw_out_push_copy(o, line,
                            (size_t)snprintf(line, sizeof(line), "%llx\r\n", (unsigned long long)n));
}

int gw_resp_push_ref(gw_resp_t *rs, gw_out_t *o, const void *p, size_t n, void *owner)
{
    int cut = 0, rc = 0;

    if (rs->no_body) {
        n = 0;
    } else if (rs->framing == GW_FRAME_LENGTH && n > rs->length - rs->body_sent) {
        n = (size_t)(rs->length - rs->body_sent);
        cut = 1;
    }
    if (n == 0) {
        gw_out_push_ref(o, p, 0, owner); /* queues nothing, releases owner */
        return cut;
    }
    if (gw_out_room(o) < gw_resp_block_segs(rs))
        return -ENOBUFS;
    if (rs->framing == GW_FRAME_CHUNKED)
        rc |= chunk_line(o, n);
    rc |= gw_out_push_ref(o, p, n, owner);
    if (rs->framing == GW_FRAME_CHUNKED)
        rc |= gw_out_push_lit(o, "\r\n");
    assert(rc == 0); /* the room was there, and a size line fits inline */
    (void)rc;
    rs->body_sent += n;
    return cut;
}

int gw_resp_push_file(gw_resp_t *rs, gw_out_t *o, int fd, bool owns_fd, off_t off, uint64_t len)
{
    int cut = 0, rc = 0;

    if (rs->no_body) {
        len = 0;
    } else if (rs->framing == GW_FRAME_LENGTH && len > rs->length - rs->body_sent) {
        len = rs->length - rs->body_sent;
        cut = 1; /* as gw_resp_push_ref(): the caller learns bytes were dropped */
    }
    if (len == 0) {
        if (owns_fd)
            close(fd);
        return cut;
    }
    if (gw_out_room(o) < gw_resp_block_segs(rs))
        return -ENOBUFS;
    if (rs->framing == GW_FRAME_CHUNKED)
        rc |= chunk_line(o, len);
    rc |= owns_fd ? gw_out_push_file_own(o, fd, off, (size_t)len)
                  : gw_out_push_file(o, fd, off, (size_t)len, NULL);
    if (rs->framing == GW_FRAME_CHUNKED)
        rc |= gw_out_push_lit(o, "\r\n");
    assert(rc == 0);
    (void)rc;
    rs->body_sent += len;
    return cut;
}

int gw_resp_end(gw_resp_t *rs, gw_out_t *o)
{
    if (rs->framing == GW_FRAME_CHUNKED) {
        if (!gw_out_room(o))
            return -ENOBUFS;
        gw_out_push_lit(o, "0\r\n\r\n");
    }
    if (rs->framing == GW_FRAME_LENGTH && rs->body_sent < rs->length) {
        rs->keep_alive = false; /* the client would wait for bytes that never come */
        return 1;
    }
    return 0;
}

int gw_resp_continue(gw_out_t *o)
{
    return gw_out_push_lit(o, "HTTP/1.1 100 Continue\r\n\r\n");
}
