#include "proto/uwsgi.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum { U_HEAD, U_BODY, U_DONE };

void gw_uwsgi_init(gw_uwsgi_t *u, const gw_proto_limits_t *lim, const gw_body_env_t *env)
{
    memset(u, 0, sizeof(*u));
    u->lim = lim;
    u->body_env = env;
}

void gw_uwsgi_reset(gw_uwsgi_t *u)
{
    gw_uwsgi_init(u, u->lim, u->body_env);
}

/* Refuses the packet: status 0 means close without an answer (the peer is
 * not speaking the protocol), 413 or 500 are answered. */
static gw_parse_t fail(gw_uwsgi_t *u, int status, const char *why, long at)
{
    u->status = status;
    if (at >= 0)
        snprintf(u->reason, sizeof(u->reason), "%s %ld", why, at);
    else
        snprintf(u->reason, sizeof(u->reason), "%s", why);
    return GW_PARSE_ERROR;
}

static uint16_t le16(const char *p)
{
    return (uint16_t)((unsigned char)p[0] | (unsigned char)p[1] << 8);
}

static bool key_is(const char *base, gw_span_t k, const char *lit)
{
    size_t n = strlen(lit);
    return k.len == n && memcmp(base + k.off, lit, n) == 0;
}

/* Reads the variables the server itself needs; all of them go to req. */
static gw_parse_t take_var(gw_uwsgi_t *u, gw_req_t *r, const char *base, gw_span_t k,
                           gw_span_t v)
{
    if (k.len == 0)
        return fail(u, 0, "empty variable name", -1);
    if (key_is(base, k, "REQUEST_METHOD")) {
        r->method = v;
        r->is_head = v.len == 4 && memcmp(base + v.off, "HEAD", 4) == 0;
    } else if (key_is(base, k, "REQUEST_URI")) {
        r->target = v;
    } else if (key_is(base, k, "PATH_INFO")) {
        r->path = v;
    } else if (key_is(base, k, "HTTP_HOST")) {
        if (r->host < 0)
            r->host = (int32_t)r->nheaders; /* for the log's %(host) */
    } else if (key_is(base, k, "HTTP_X_REQUEST_ID")) {
        if (r->request_id < 0)
            r->request_id = (int32_t)r->nheaders;
    } else if (key_is(base, k, "QUERY_STRING")) {
        r->query = v;
    } else if (key_is(base, k, "SERVER_PROTOCOL")) {
        /* HTTP/1.0, 1.1, and 2.0 or 3.0 when nginx speaks those to the client */
        const char *p = base + v.off;
        if (v.len == 8 && memcmp(p, "HTTP/", 5) == 0 && p[5] >= '0' && p[5] <= '9' &&
            p[6] == '.' && p[7] >= '0' && p[7] <= '9') {
            r->http_major = (uint8_t)(p[5] - '0');
            r->http_minor = (uint8_t)(p[7] - '0');
        }
    } else if (key_is(base, k, "CONTENT_LENGTH") && v.len) {
        uint64_t n = 0;
        if (v.len > 18)
            return fail(u, 0, "CONTENT_LENGTH too long", -1);
        for (uint32_t i = 0; i < v.len; i++) {
            char c = base[v.off + i];
            if (c < '0' || c > '9')
                return fail(u, 0, "CONTENT_LENGTH is not a number", -1);
            n = n * 10 + (uint64_t)(c - '0');
        }
        r->content_length = (int64_t)n;
    }
    if (gw_req_add_header(r, k, v))
        return fail(u, 500, "out of memory", -1);
    return GW_PARSE_AGAIN;
}

static gw_parse_t parse_head(gw_uwsgi_t *u, gw_req_t *r, const char *base, size_t off,
                             size_t len, size_t *used)
{
    const char *p = base + off;
    uint32_t size, pos;
    gw_parse_t st;

    if (len < 4)
        return GW_PARSE_AGAIN;
    if (p[0] != 0)
        return fail(u, 0, "unknown modifier1 (0 is WSGI):", (unsigned char)p[0]);
    size = le16(p + 1);
    if (size == 0)
        return fail(u, 0, "empty variables block", -1);
    if (size > u->lim->buffer_size)
        return fail(u, 0, "--buffer-size is smaller than this request block size:", size);
    if (len < 4 + (size_t)size)
        return GW_PARSE_AGAIN; /* keep the whole block contiguous, then parse */
    /* nginx sends CGI variables, PATH_INFO decoded, one request per
     * connection (it reads the answer to the end, so it cannot be kept) */
    r->has_cgi_fields = r->is_path_decoded = r->is_gateway = true;
    r->keep_alive = false;
    for (pos = 4; pos < 4 + size;) {
        gw_span_t k, v;
        if (pos + 2 > 4 + size)
            return fail(u, 0, "truncated variable at byte", pos);
        k.len = le16(p + pos);
        k.off = (uint32_t)off + pos + 2;
        pos += 2 + k.len;
        if (pos + 2 > 4 + size)
            return fail(u, 0, "variable name past the block at byte", pos);
        v.len = le16(p + pos);
        v.off = (uint32_t)off + pos + 2;
        pos += 2 + v.len;
        if (pos > 4 + size)
            return fail(u, 0, "variable value past the block at byte", pos);
        if ((st = take_var(u, r, base, k, v)) == GW_PARSE_ERROR)
            return st;
    }
    if (!r->method.len)
        return fail(u, 0, "no REQUEST_METHOD", -1);
    if (!r->target.len)
        r->target = r->path; /* for the access log */
    *used = 4 + size;
    if (r->content_length > 0) {
        if ((uint64_t)r->content_length > u->lim->body)
            return fail(u, 413, "request body too large", -1);
        u->body_left = (uint64_t)r->content_length;
        u->state = U_BODY;
        return GW_PARSE_HEAD;
    }
    u->state = U_DONE;
    return GW_PARSE_DONE;
}

gw_parse_t gw_uwsgi_feed(gw_uwsgi_t *u, gw_req_t *req, const char *base, size_t off, size_t len,
                         size_t *used)
{
    size_t n;

    *used = 0;
    switch (u->state) {
    case U_HEAD:
        return parse_head(u, req, base, off, len, used);
    case U_BODY: {
        int rc = 0;
        n = len < u->body_left ? len : (size_t)u->body_left;
        if (n && (rc = gw_body_append(&req->body, u->body_env, base + off, n)) < 0)
            return rc == -ENOSPC || rc == -EDQUOT
                       ? fail(u, 503, "no space left to store the request body", -1)
                       : fail(u, 500, "cannot store the request body", -1);
        u->body_left -= n;
        *used = n;
        if (u->body_left)
            return GW_PARSE_AGAIN;
        u->state = U_DONE;
        return GW_PARSE_DONE;
    }
    default:
        return GW_PARSE_DONE; /* one request per connection: the rest is ignored */
    }
}

/* The protocol seam (proto.h). status 0: not the uwsgi protocol (HTTP sent
 * to a uwsgi socket, say), closed without an answer. */
GW_PROTO_DEFINE(gw_proto_uwsgi, "uwsgi", gw_uwsgi_t, gw_uwsgi, false);
