#include "proto/http1.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

enum { CB_NONE, CB_FIELD, CB_VALUE };

static gw_http1_t *H(llhttp_t *p)
{
    return p->data;
}

static int fail(gw_http1_t *h, int status, const char *reason)
{
    h->status = status;
    h->reason = reason;
    return HPE_USER;
}

static uint32_t off_of(gw_http1_t *h, const char *at)
{
    return (uint32_t)(at - h->base);
}

/* llhttp hands a span in pieces when it crosses feeds; pieces are contiguous
 * in the read buffer, so extending the span is enough. */
static void span_add(gw_http1_t *h, gw_span_t *s, const char *at, size_t len)
{
    if (s->len == 0)
        s->off = off_of(h, at);
    s->len += (uint32_t)len;
}

/* Header (and trailer) bytes: the block limit counts each field as the
 * "name: value\r\n" line it came in. */
static int head_grow(gw_http1_t *h, size_t len)
{
    h->head_bytes += len;
    if (h->head_bytes > h->lim->headers)
        return fail(h, 431, "header block too large");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    (void)p;
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    gw_http1_t *h = H(p);
    span_add(h, &h->req->method, at, len);
    if (h->req->method.len > 32)
        return fail(h, 400, "method too long");
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    gw_http1_t *h = H(p);
    span_add(h, &h->req->target, at, len);
    if (h->req->target.len + h->req->method.len + 10 > h->lim->request_line)
        return fail(h, 414, "request line too long");
    return 0;
}

static int finish_header(gw_http1_t *h);

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    gw_http1_t *h = H(p);
    int rc;

    h->value_done = false;
    if (h->in_body)
        return head_grow(h, len); /* trailer fields */
    if (h->last_cb != CB_FIELD) {
        if (h->last_cb == CB_VALUE && (rc = finish_header(h)))
            return rc;
        h->cur_name.len = h->cur_value.len = 0;
        h->field_bytes = 2; /* ": " */
        if ((rc = head_grow(h, 4))) /* ": " and CRLF */
            return rc;
        h->drop_header = false;
        if (h->req->nheaders >= h->lim->fields)
            return fail(h, 431, "too many header fields");
    }
    h->last_cb = CB_FIELD;
    span_add(h, &h->cur_name, at, len);
    h->field_bytes += (uint32_t)len;
    if (h->field_bytes > h->lim->field_size)
        return fail(h, 431, "header field too large");
    return head_grow(h, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    gw_http1_t *h = H(p);

    /* A CR, LF or NUL inside a value is a bare CR, a folded line or an
     * attack, whatever llhttp 8.1 lets through: RFC 9112 5.2 and 2.2. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)at[i];
        if (c < 0x20 && (c == '\r' || c == '\n' || c == '\0'))
            return fail(h, 400, "bad character or obs-fold in header value");
    }
    /* A value after a completed one, with no field between: llhttp 8.1 takes
     * ": v" (an empty name) that way. Folded lines are refused by the line
     * scan in gw_http1_feed(). */
    if (h->value_done)
        return fail(h, 400, "empty header name");
    if (h->in_body)
        return head_grow(h, len); /* trailer fields: checked and counted, not kept */
    h->last_cb = CB_VALUE;
    span_add(h, &h->cur_value, at, len);
    h->field_bytes += (uint32_t)len;
    if (h->field_bytes > h->lim->field_size)
        return fail(h, 431, "header field too large");
    return head_grow(h, len);
}

/* Length first: most spans differ in length, so strncasecmp rarely runs. */
#define span_ieq(h, s, lit)                                                                        \
    ((s).len == sizeof(lit) - 1 && strncasecmp((h)->base + (s).off, (lit), sizeof(lit) - 1) == 0)

/* Trims optional whitespace around a value span. */
static gw_span_t trim(gw_http1_t *h, gw_span_t s)
{
    while (s.len && (h->base[s.off] == ' ' || h->base[s.off] == '\t')) {
        s.off++;
        s.len--;
    }
    while (s.len && (h->base[s.off + s.len - 1] == ' ' || h->base[s.off + s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* ---- Host and authority syntax (RFC 3986 3.2.2, 3.2.3) ---- */

static bool is_hexdig(unsigned char c)
{
    return (unsigned)(c - '0') < 10 || (unsigned)((c | 0x20) - 'a') < 6;
}

static unsigned hexval(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/* unreserved / sub-delims: the bytes a reg-name holds besides %XX (ALPHA,
 * DIGIT and "-._~!$&'()*+,;="; none from 0x80), one byte each so the scan
 * is a load and a test per byte: the Host check runs on every request. */
static const uint8_t regname[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
};

static inline bool is_regname_char(unsigned char c)
{
    return regname[c];
}

/* IP-literal without its brackets: IPv6address (as inet_pton reads it: the
 * RFC 4291 forms RFC 3986 spells out, no zone id) or IPvFuture,
 * "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ). */
static bool is_ip_literal(const char *s, size_t n)
{
    char v6[INET6_ADDRSTRLEN];
    unsigned char addr[16];
    size_t i = 1;

    if (n && (s[0] == 'v' || s[0] == 'V')) {
        while (i < n && is_hexdig((unsigned char)s[i]))
            i++;
        if (i == 1 || i >= n - 1 || s[i] != '.')
            return false;
        for (i++; i < n; i++)
            if (!is_regname_char((unsigned char)s[i]) && s[i] != ':')
                return false;
        return true;
    }
    if (n == 0 || n >= sizeof(v6))
        return false;
    memcpy(v6, s, n);
    v6[n] = '\0';
    return inet_pton(AF_INET6, v6, addr) == 1;
}

/* uri-host [ ":" port ] (RFC 9112 3.2, 3.2.2), the Host header's value and
 * an absolute-form target's authority: an IP-literal, or a reg-name (which
 * IPv4 addresses are too, textually) of unreserved, sub-delims and %XX,
 * then digits for a port, maybe none. The host may not be empty: an http
 * URI with an empty host is invalid (RFC 9110 4.2.1). Beyond the grammar,
 * %XX may not encode a control character: percent-encoding in a host is
 * for UTF-8 names only (RFC 3986 3.2.2), and a %00 only an attack. */
static bool is_host_port(const char *s, size_t n)
{
    size_t i = 0;

    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb || !is_ip_literal(s + 1, (size_t)(rb - s) - 1))
            return false;
        i = (size_t)(rb - s) + 1;
    } else {
        for (;;) {
            unsigned v;
            /* the common bytes in a tight loop; ':' and '%' are not in it */
            while (i < n && is_regname_char((unsigned char)s[i]))
                i++;
            if (i == n || s[i] != '%')
                break;
            if (n - i < 3 || !is_hexdig((unsigned char)s[i + 1]) ||
                !is_hexdig((unsigned char)s[i + 2]))
                return false;
            v = hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2]);
            if (v < 0x20 || v == 0x7f)
                return false;
            i += 3;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (s[i] != ':')
        return false;
    for (i++; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int finish_header(gw_http1_t *h)
{
    gw_req_t *r = h->req;
    gw_span_t name = h->cur_name, value = trim(h, h->cur_value);

    if (value.len == 0)
        value.off = h->cur_value.off;
    if (name.len == 0) /* RFC 9110 5.1: a token; llhttp 8.1 takes ": v" */
        return fail(h, 400, "empty header name");
    /* Names with '_' would turn into the same CGI variable as their '-'
     * spelling (X_Forwarded_For vs X-Forwarded-For): drop them, as nginx does. */
    if (memchr(h->base + name.off, '_', name.len))
        return 0;
    if (span_ieq(h, name, "host")) {
        if (r->host >= 0)
            return fail(h, 400, "repeated Host header");
        /* RFC 9112 3.2: 400 for an invalid Host, in any request. An empty
         * one is valid (reg-name may be empty): the target's authority is
         * then the server's default name (3.3), SERVER_NAME. */
        if (value.len && !is_host_port(h->base + value.off, value.len))
            return fail(h, 400, "invalid Host header");
        r->host = (int32_t)r->nheaders;
    } else if (span_ieq(h, name, "x-request-id")) {
        if (r->request_id < 0)
            r->request_id = (int32_t)r->nheaders;
    } else if (span_ieq(h, name, "transfer-encoding")) {
        if (++h->nte > 1 || !span_ieq(h, value, "chunked"))
            return fail(h, 400, "unsupported Transfer-Encoding");
    } else if (span_ieq(h, name, "expect") && h->parser.http_minor == 1) {
        if (!span_ieq(h, value, "100-continue"))
            return fail(h, 417, "unsupported Expect");
        r->expect_continue = true;
    }
    if (gw_req_add_header(r, name, value))
        return fail(h, 500, "out of memory");
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    H(p)->value_done = true;
    return 0;
}

static bool p_method_is(gw_http1_t *h, int m)
{
    return h->parser.method == m;
}

/* Splits the target into path and query; absolute-form gives its path. */
static int split_target(gw_http1_t *h)
{
    gw_req_t *r = h->req;
    const char *t = h->base + r->target.off;
    uint32_t n = r->target.len, i = 0, start;

    if (n == 1 && t[0] == '*') {
        if (p_method_is(h, HTTP_OPTIONS))
            return 0;
        return fail(h, 400, "'*' target outside OPTIONS");
    }
    if (n && t[0] == '/') {
        start = 0;
    } else if ((n > 7 && strncasecmp(t, "http://", 7) == 0) ||
               (n > 8 && strncasecmp(t, "https://", 8) == 0)) {
        uint32_t host = t[4] == ':' ? 7 : 8;
        for (i = host; i < n && t[i] != '/' && t[i] != '?' && t[i] != '#'; i++)
            if (t[i] == '@') /* RFC 9110 4.2.4: userinfo in an http URI is an error */
                return fail(h, 400, "absolute-form target with userinfo");
        if (i == host)
            return fail(h, 400, "absolute-form target without host");
        if (!is_host_port(t + host, i - host))
            return fail(h, 400, "absolute-form target with an invalid host");
        /* RFC 9112 3.2.2: the target's authority names the host, not Host. */
        r->authority.off = r->target.off + host;
        r->authority.len = i - host;
        start = i;
    } else {
        return fail(h, 400, "bad request target");
    }
    r->path.off = r->target.off + start;
    for (i = start; i < n && t[i] != '?' && t[i] != '#'; i++)
        ;
    r->path.len = i - start;
    if (r->path.len == 0 && r->authority.len) {
        /* "http://h" and "http://h?q" are for "/" (RFC 9112 3.2.2, RFC 3986
         * 6.2.3). A span must lie in the read buffer: the request line's
         * " HTTP/", checked before this, holds a '/' right after the target. */
        r->path.off = r->target.off + r->target.len + 5;
        r->path.len = 1;
    }
    if (i < n && t[i] == '?') {
        uint32_t q = ++i;
        while (i < n && t[i] != '#')
            i++;
        r->query.off = r->target.off + q;
        r->query.len = i - q;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    gw_http1_t *h = H(p);
    gw_req_t *r = h->req;
    int rc;

    if (h->last_cb == CB_VALUE && (rc = finish_header(h)))
        return rc;
    h->last_cb = CB_NONE;
    /* llhttp 8.1 takes any digit pair; we speak 1.0 and 1.1 only. The
     * request gets a version it accepted or none (0.0), so that the answer
     * to a refused one is HTTP/1.1 (gw_req_answer_minor()). */
    if (p->http_major != 1 || p->http_minor > 1)
        return fail(h, 505, "HTTP version not supported");
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    /* ... and RTSP/1.0 as well as HTTP/1.0: the protocol name follows the
     * target and its one space. */
    if (memcmp(h->base + r->target.off + r->target.len, " HTTP/", 6) != 0)
        return fail(h, 400, "not an HTTP request line");
    if (p->method == HTTP_CONNECT)
        return fail(h, 400, "CONNECT is not served");
    if ((rc = split_target(h)))
        return rc;
    if (r->host < 0 && p->http_minor == 1)
        return fail(h, 400, "missing Host header");
    if (h->nte) {
        if (p->http_minor == 0)
            return fail(h, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (p->flags & F_CONTENT_LENGTH)
            return fail(h, 400, "both Content-Length and Transfer-Encoding");
        r->is_chunked = true;
        h->in_size_line = true; /* the first size line: scanned from the next feed on */
    } else if (p->flags & F_CONTENT_LENGTH) {
        r->content_length = (int64_t)p->content_length;
        if (p->content_length > h->lim->body)
            return fail(h, 413, "request body too large");
    }
    if (r->expect_continue && !r->is_chunked && r->content_length <= 0)
        r->expect_continue = false; /* nothing to continue to */
    if (p->http_minor == 0)
        r->expect_continue = false; /* RFC 9110 10.1.1: ignored from HTTP/1.0 clients */
    r->is_head = p->method == HTTP_HEAD;
    h->in_body = 1;
    /* Pause only when a body follows, so the caller can answer 100-continue
     * and time the body; without one, llhttp completes the message in this
     * same call (a paused parser would need bytes that never come). */
    return r->is_chunked || r->content_length > 0 ? HPE_PAUSED : 0;
}

/* llhttp 8.1 does not check that chunk data ends with CRLF
 * ("5\r\nhelloXX0\r\n\r\n" parses); check the bytes that follow each chunk's
 * data, now or, when they are not here yet, at the start of the next feed.
 * *p moves past the bytes checked. */
static int check_chunk_crlf(gw_http1_t *h, const char **p)
{
    while (h->crlf_need && *p < h->feed_end) {
        if (**p != (h->crlf_need == 2 ? '\r' : '\n'))
            return fail(h, 400, "chunk data not followed by CRLF");
        (*p)++;
        h->crlf_need--;
    }
    return 0;
}

/* llhttp 8.1 puts no bound on a chunk-size line: leading zeros and chunk
 * extensions (RFC 9112 7.1.1) go on for as long as the client sends them
 * (a 64 MiB "1;x=aaa..." was read whole). Count each line's bytes from its
 * start, p (this feed's bytes), to its LF, now or over later feeds, and
 * refuse one longer than a header field may be. A memchr over bytes llhttp
 * reads anyway. */
static int scan_size_line(gw_http1_t *h, const char *p)
{
    const char *lf = memchr(p, '\n', (size_t)(h->feed_end - p));

    h->size_line += (uint64_t)((lf ? lf : h->feed_end) - p);
    if (h->size_line > h->lim->field_size)
        return fail(h, 400, "chunk-size line too long");
    if (lf)
        h->in_size_line = false;
    return 0;
}

/* A chunk-size line begins: after the head, or after a chunk's CRLF. */
static void start_size_line(gw_http1_t *h)
{
    h->in_size_line = true;
    h->size_line = 0;
}

static int on_chunk_header(llhttp_t *p)
{
    gw_http1_t *h = H(p);
    h->chunk_left = p->content_length;
    /* Refuse a chunk that cannot fit before its bytes arrive. */
    if (p->content_length > h->lim->body - h->req->body.len)
        return fail(h, 413, "request body too large");
    if (p->content_length == 0) {
        /* The last chunk: its trailer section is lines again, checked like
         * the head. Pause so the feed knows where that section begins. */
        h->in_trailer = true;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    gw_http1_t *h = H(p);
    gw_req_t *r = h->req;
    int rc;

    if (r->body.len + len > h->lim->body)
        return fail(h, 413, "request body too large");
    if ((rc = gw_body_append(&r->body, h->body_env, at, len)) < 0)
        return rc == -ENOSPC || rc == -EDQUOT
                   ? fail(h, 503, "no space left to store the request body")
                   : fail(h, 500, "cannot store request body");
    if (r->is_chunked) {
        h->chunk_left -= len;
        if (h->chunk_left == 0) {
            const char *q = at + len;
            h->crlf_need = 2;
            start_size_line(h);
            if ((rc = check_chunk_crlf(h, &q)))
                return rc;
            if (!h->crlf_need) /* else the next feed scans it, after the CRLF */
                return scan_size_line(h, q);
        }
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_http1_t *h = H(p);
    h->req->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    h->in_body = 2;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_chunk_header = on_chunk_header,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void gw_http1_init(gw_http1_t *h, const gw_proto_limits_t *lim, const gw_body_env_t *env)
{
    memset(h, 0, sizeof(*h));
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    h->parser.data = h;
    h->lim = lim;
    h->body_env = env;
}

void gw_http1_reset(gw_http1_t *h)
{
    const gw_proto_limits_t *lim = h->lim;
    const gw_body_env_t *env = h->body_env;
    llhttp_t parser = h->parser;

    memset(h, 0, sizeof(*h));
    h->parser = parser;
    h->lim = lim;
    h->body_env = env;
    llhttp_resume(&h->parser);
}

static int map_error(gw_http1_t *h, llhttp_errno_t e)
{
    if (h->status)
        return h->status; /* set by fail(), whatever code llhttp reports */
    h->reason = llhttp_get_error_reason(&h->parser);
    if (!h->reason)
        h->reason = llhttp_errno_name(e);
    return 400;
}

/* The line discipline llhttp 8.1 does not enforce, checked on the raw
 * bytes of the head and of a chunked body's trailer section: every LF ends
 * a CRLF (RFC 9112 2.2; a bare LF may end a line differently for a proxy in
 * front), and no line begins with SP or HTAB (obs-fold, 5.2; whitespace
 * before the first field, 2.2). State carries across feeds, so where the
 * client's packets end changes nothing. */
static int check_lines(gw_http1_t *h, const char *p, size_t n)
{
    const char *start = p, *end = p + n, *lf;

    if (n == 0)
        return 0;
    if (h->after_lf && (*p == ' ' || *p == '\t'))
        return fail(h, 400, "obs-fold or whitespace at a line start");
    for (; (lf = memchr(p, '\n', (size_t)(end - p))); p = lf + 1) {
        bool cr = lf > start ? lf[-1] == '\r' : h->last_was_cr;
        if (!cr)
            return fail(h, 400, "bare LF in request head");
        if (lf + 1 < end && (lf[1] == ' ' || lf[1] == '\t'))
            return fail(h, 400, "obs-fold or whitespace at a line start");
    }
    h->last_was_cr = end[-1] == '\r';
    h->after_lf = end[-1] == '\n';
    /* Every byte of a head counts against its limits, blank lines and
     * whitespace included, so no connection grows its buffer unbounded. */
    h->raw_bytes += n;
    if (h->raw_bytes > h->lim->request_line + h->lim->headers)
        return fail(h, 431, "request head too large");
    return 0;
}

gw_parse_t gw_http1_feed(gw_http1_t *h, gw_req_t *req, const char *base, size_t off, size_t len,
                         size_t *used)
{
    const char *data = base + off, *p = data, *end = data + len;

    h->req = req;
    h->base = base;
    h->feed_end = end;
    *used = 0;
    if (len == 0)
        return GW_PARSE_AGAIN;
    if (h->crlf_need || h->in_size_line) {
        const char *q = p; /* llhttp still gets them all, from p */
        if (h->crlf_need && check_chunk_crlf(h, &q))
            return GW_PARSE_ERROR;
        if (h->in_size_line && !h->crlf_need && scan_size_line(h, q))
            return GW_PARSE_ERROR;
    }
    for (;;) {
        bool lines = !h->in_body || h->in_trailer; /* head or trailer bytes */
        llhttp_errno_t e;
        size_t n;

        if (llhttp_get_errno(&h->parser) == HPE_PAUSED)
            llhttp_resume(&h->parser);
        e = llhttp_execute(&h->parser, p, (size_t)(end - p));
        if (e == HPE_OK) {
            n = (size_t)(end - p);
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            n = (size_t)(llhttp_get_error_pos(&h->parser) - p);
        } else {
            h->status = map_error(h, e);
            return GW_PARSE_ERROR;
        }
        if (lines && check_lines(h, p, n))
            return GW_PARSE_ERROR;
        p += n;
        *used = (size_t)(p - data);
        if (e == HPE_OK)
            return GW_PARSE_AGAIN;
        if (h->in_body == 2) {
            if (e == HPE_PAUSED_UPGRADE)
                req->keep_alive = false;
            return GW_PARSE_DONE;
        }
        if (h->in_trailer && !h->trailer_started) {
            /* Paused at the last chunk's size line (which ended in CRLF):
             * scan the trailer section from here. */
            h->trailer_started = true;
            h->last_was_cr = false;
            h->after_lf = true;
            continue;
        }
        return GW_PARSE_HEAD;
    }
}

/* The protocol seam (proto.h). status is never 0: an HTTP client always
 * gets its answer. */
GW_PROTO_DEFINE(gw_proto_http1, "http", gw_http1_t, gw_http1, true);
