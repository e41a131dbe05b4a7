/* Unit tests for the uwsgi packet parser. Includes the module (and
 * request.c, which the generic unit rule does not link) so that the harness
 * drives gw_uwsgi_feed() exactly as conn.c's process_input() and do_read()
 * do: append to a read buffer, feed from the parsed offset, keep the packet
 * header and variables in place, drop body bytes after each AGAIN in the
 * body. A uwsgi connection carries one request (nginx opens one per
 * request), so a run ends at DONE or ERROR. */
#include "proto/uwsgi.c"
#include "proto/request.c"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "feed_harness.h"

/* ---- packets ---- */

typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes_t;

static void put(bytes_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_u16(bytes_t *b, unsigned v)
{
    char c[2] = {(char)(v & 0xff), (char)(v >> 8 & 0xff)};
    put(b, c, 2);
}

static void put_var_n(bytes_t *b, const char *k, size_t kn, const char *v, size_t vn)
{
    put_u16(b, (unsigned)kn);
    put(b, k, kn);
    put_u16(b, (unsigned)vn);
    put(b, v, vn);
}

static void put_var(bytes_t *b, const char *k, const char *v)
{
    put_var_n(b, k, strlen(k), v, strlen(v));
}

static void bytes_free(bytes_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* modifier1, the block size (the variables' length when size < 0),
 * modifier2, the variables, then tail: the body and whatever follows it. */
static bytes_t packet_ex(int mod1, long size, int mod2, const bytes_t *vars, const char *tail,
                         size_t tail_len)
{
    bytes_t b = {0};
    char m1 = (char)mod1, m2 = (char)mod2;

    put(&b, &m1, 1);
    put_u16(&b, size < 0 ? (unsigned)vars->n : (unsigned)size);
    put(&b, &m2, 1);
    put(&b, vars->p, vars->n);
    put(&b, tail, tail_len);
    return b;
}

static bytes_t packet(const bytes_t *vars, const char *tail)
{
    return packet_ex(0, -1, 0, vars, tail, strlen(tail));
}

/* The variables nginx 1.22 sends with `include /etc/nginx/uwsgi_params`, in
 * its order, for a curl request. An empty clen is what nginx sends for a
 * request without a body. */
static void nginx_vars(bytes_t *v, const char *method, const char *uri, const char *path,
                       const char *query, const char *clen, const char *proto)
{
    put_var(v, "QUERY_STRING", query);
    put_var(v, "REQUEST_METHOD", method);
    put_var(v, "CONTENT_TYPE", *clen ? "application/x-www-form-urlencoded" : "");
    put_var(v, "CONTENT_LENGTH", clen);
    put_var(v, "REQUEST_URI", uri);
    put_var(v, "PATH_INFO", path);
    put_var(v, "DOCUMENT_ROOT", "/usr/share/nginx/html");
    put_var(v, "SERVER_PROTOCOL", proto);
    put_var(v, "REQUEST_SCHEME", "http");
    put_var(v, "REMOTE_ADDR", "192.0.2.7");
    put_var(v, "REMOTE_PORT", "49142");
    put_var(v, "SERVER_PORT", "80");
    put_var(v, "SERVER_NAME", "example.com");
    put_var(v, "HTTP_HOST", "example.com");
    put_var(v, "HTTP_USER_AGENT", "curl/7.88.1");
    put_var(v, "HTTP_ACCEPT", "*/*");
}

/* ---- harness ---- */

enum { STR_MAX = 512, VARS_MAX = 4096, BODY_MAX = 4096 };

/* The outcome of one connection, copied out of the read buffer. */
typedef struct result {
    int st;          /* GW_PARSE_DONE, GW_PARSE_ERROR, or GW_PARSE_AGAIN: input ended */
    int status;      /* u.status with ERROR */
    char reason[96]; /* u.reason with ERROR */
    int nhead;       /* how many times HEAD was returned */
    size_t consumed; /* the sum of *used over every feed: head and body */
    char method[STR_MAX], target[STR_MAX], path[STR_MAX], query[STR_MAX];
    char host[STR_MAX];  /* gw_req_host(): HTTP_HOST, for the log */
    char vars[VARS_MAX]; /* "name=value\n" for each variable */
    uint32_t nheaders;
    int major, minor;
    bool is_head, keep_alive, body_in_file;
    bool has_cgi_fields, is_path_decoded, is_gateway; /* the protocol's facts */
    int64_t content_length;
    char body[BODY_MAX];
    uint64_t body_len;
} result_t;

static const gw_proto_limits_t default_limits = {.buffer_size = 1024, .body = 1000};
static const gw_proto_limits_t max_limits = {.buffer_size = 65535, .body = 1000};

static gw_bufpool_t body_pool;
static gw_arena_pool_t arena_pool;
static gw_body_env_t body_env = {&body_pool, 64, "/tmp"};
/* The body store the harness hands the parser (test_body_store_fails swaps it). */
static const gw_body_env_t *env = &body_env;

static void copy_span(char *dst, const char *base, gw_span_t s)
{
    size_t n = s.len < STR_MAX - 1 ? s.len : STR_MAX - 1;
    memcpy(dst, base + s.off, n);
    dst[n] = '\0';
}

static void record(result_t *out, const gw_uwsgi_t *u, const gw_req_t *r, const char *base, int st)
{
    size_t hl = 0;
    ssize_t got;

    out->st = st;
    if (st == GW_PARSE_ERROR) {
        out->status = u->status;
        memcpy(out->reason, u->reason, sizeof(out->reason));
    }
    if (st != GW_PARSE_DONE)
        return; /* spans of a failed or partial request mean nothing */
    copy_span(out->method, base, r->method);
    copy_span(out->target, base, r->target);
    copy_span(out->path, base, r->path);
    copy_span(out->query, base, r->query);
    copy_span(out->host, base, gw_req_host(r));
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const gw_header_t *x = &r->headers[i];
        int n = snprintf(out->vars + hl, sizeof(out->vars) - hl, "%.*s=%.*s\n", (int)x->name.len,
                         base + x->name.off, (int)x->value.len, base + x->value.off);
        if (n > 0 && (size_t)n < sizeof(out->vars) - hl)
            hl += (size_t)n;
    }
    out->nheaders = r->nheaders;
    out->major = r->http_major;
    out->minor = r->http_minor;
    out->is_head = r->is_head;
    out->has_cgi_fields = r->has_cgi_fields;
    out->is_path_decoded = r->is_path_decoded;
    out->is_gateway = r->is_gateway;
    out->keep_alive = r->keep_alive;
    out->content_length = r->content_length;
    out->body_in_file = r->body.fd >= 0;
    out->body_len = r->body.len;
    got = gw_body_read(&r->body, 0, out->body, sizeof(out->body) - 1);
    out->body[got > 0 ? got : 0] = '\0';
}

/* Delivers in[0..n) in pieces ending at cuts[] (ascending, each in 1..n-1),
 * the way reads would fill conn.c's buffer, and parses the request in it.
 * Each arrival gets a fresh exact-size buffer, so that under ASan a span or
 * pointer kept from an earlier feed, or a read past the fed bytes, is caught.
 * A harness_run_cb: lim is a const gw_proto_limits_t *, result a result_t *. */
static void run_cuts(const char *in, size_t n, const size_t *cuts, size_t ncuts, const void *lim,
                     void *result)
{
    result_t *out = result;
    gw_uwsgi_t u;
    gw_req_t req;
    char *buf = NULL;
    size_t len = 0, parsed = 0, head_end = 0, pos = 0;
    bool in_body = false, done = false;
    gw_parse_t st = GW_PARSE_AGAIN;

    memset(out, 0, sizeof(*out));
    gw_uwsgi_init(&u, lim, env);
    gw_req_init(&req, &arena_pool);
    for (size_t k = 0; k <= ncuts && !done; k++) {
        size_t end = k < ncuts ? cuts[k] : n, add = end - pos;
        char *nb = malloc(len + add ? len + add : 1);

        assert(nb);
        if (len)
            memcpy(nb, buf, len);
        memcpy(nb + len, in + pos, add);
        free(buf);
        buf = nb;
        len += add;
        pos = end;
        for (;;) {
            size_t used = 12345;

            st = gw_uwsgi_feed(&u, &req, buf, parsed, len - parsed, &used);
            assert(used <= len - parsed);
            parsed += used;
            out->consumed += used;
            if (st == GW_PARSE_AGAIN) {
                if (in_body) {
                    assert(parsed == len);
                    len = parsed = head_end; /* body bytes are stored; keep the head */
                } else {
                    assert(used == 0); /* the block is parsed whole or not at all */
                }
                break;
            }
            if (st == GW_PARSE_HEAD) {
                assert(!in_body);
                out->nhead++;
                head_end = parsed;
                in_body = true;
                continue;
            }
            done = true; /* DONE or ERROR: answered, then the connection closes */
            break;
        }
    }
    record(out, &u, &req, buf, st);
    gw_req_reset(&req, env);
    free(buf);
}

static void run_bytes(const bytes_t *b, const gw_proto_limits_t *lim, result_t *out)
{
    run_cuts(b->p, b->n, NULL, 0, lim, out);
}

static bool result_eq(const void *va, const void *vb)
{
    const result_t *a = va, *b = vb;

    if (a->st != b->st || a->status != b->status || strcmp(a->reason, b->reason) ||
        a->nhead != b->nhead || a->consumed != b->consumed)
        return false;
    if (a->st != GW_PARSE_DONE)
        return true;
    return !strcmp(a->method, b->method) && !strcmp(a->target, b->target) &&
           !strcmp(a->path, b->path) && !strcmp(a->query, b->query) && !strcmp(a->vars, b->vars) &&
           !strcmp(a->host, b->host) &&
           a->nheaders == b->nheaders && a->major == b->major && a->minor == b->minor &&
           a->is_head == b->is_head && a->has_cgi_fields == b->has_cgi_fields &&
           a->is_path_decoded == b->is_path_decoded && a->is_gateway == b->is_gateway &&
           a->keep_alive == b->keep_alive && a->content_length == b->content_length &&
           a->body_in_file == b->body_in_file && a->body_len == b->body_len &&
           !memcmp(a->body, b->body, sizeof(a->body));
}

static void describe(const char *what, const void *vr)
{
    const result_t *r = vr;

    fprintf(stderr, "    %s: st=%d status=%d reason=\"%s\" heads=%d consumed=%zu body=%llu\n", what,
            r->st, r->status, r->reason, r->nhead, r->consumed, (unsigned long long)r->body_len);
}

static const harness_parser_t uwsgi_parser = {run_cuts, result_eq, describe, sizeof(result_t)};

/* Parses in one shot, one byte at a time, and split in two at every point;
 * every way must give the same result (errors included: the block is only
 * looked at once it is all in). Returns the one-shot result in *whole. */
static bool splits_agree_n(const char *in, size_t n, const gw_proto_limits_t *lim, result_t *whole)
{
    return harness_splits_agree(&uwsgi_parser, in, n, lim, whole);
}

static bool splits_agree(const bytes_t *b, const gw_proto_limits_t *lim, result_t *whole)
{
    return splits_agree_n(b->p, b->n, lim, whole);
}

static bool reason_starts(const result_t *r, const char *prefix)
{
    if (strncmp(r->reason, prefix, strlen(prefix)) == 0)
        return true;
    fprintf(stderr, "    reason \"%s\", want \"%s...\"\n", r->reason, prefix);
    return false;
}

/* ---- well-formed packets ---- */

/* A POST exactly as nginx 1.22.1 sent it for
 * `curl -d 'a=1&b=2' http://127.0.0.1:18080/form` (captured on the wire). */
static const char nginx_post[] = "\x00\xd0\x01\x00"
                                 "\x0c\x00QUERY_STRING\x00\x00"
                                 "\x0e\x00REQUEST_METHOD\x04\x00POST"
                                 "\x0c\x00"
                                 "CONTENT_TYPE!\x00"
                                 "application/x-www-form-urlencoded"
                                 "\x0e\x00"
                                 "CONTENT_LENGTH\x01\x00"
                                 "7"
                                 "\x0b\x00REQUEST_URI\x05\x00/form"
                                 "\x09\x00PATH_INFO\x05\x00/form"
                                 "\x0d\x00"
                                 "DOCUMENT_ROOT\x0f\x00/tmp/uwcap/html"
                                 "\x0f\x00SERVER_PROTOCOL\x08\x00HTTP/1.1"
                                 "\x0e\x00REQUEST_SCHEME\x04\x00http"
                                 "\x0b\x00REMOTE_ADDR\x09\x00"
                                 "127.0.0.1"
                                 "\x0b\x00REMOTE_PORT\x05\x00"
                                 "49160"
                                 "\x0b\x00SERVER_PORT\x05\x00"
                                 "18080"
                                 "\x0b\x00SERVER_NAME\x0c\x00"
                                 "example.test"
                                 "\x09\x00HTTP_HOST\x09\x00"
                                 "127.0.0.1"
                                 "\x0f\x00HTTP_USER_AGENT\x0b\x00"
                                 "curl/7.88.1"
                                 "\x0b\x00HTTP_ACCEPT\x03\x00*/*"
                                 "\x13\x00HTTP_CONTENT_LENGTH\x01\x00"
                                 "7"
                                 "\x11\x00HTTP_CONTENT_TYPE!\x00"
                                 "application/x-www-form-urlencoded"
                                 "a=1&b=2";

static void test_nginx_post_captured(void)
{
    result_t r;
    size_t n = sizeof(nginx_post) - 1;

    CHECK_INT(n, 4 + 0x1d0 + 7);
    CHECK(splits_agree_n(nginx_post, n, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nhead, 1);
    CHECK_STR(r.method, "POST");
    CHECK_STR(r.target, "/form");
    CHECK_STR(r.path, "/form");
    CHECK_STR(r.query, "");
    CHECK_INT(r.major, 1);
    CHECK_INT(r.minor, 1);
    CHECK_INT(r.content_length, 7);
    CHECK_INT(r.body_len, 7);
    CHECK_STR(r.body, "a=1&b=2");
    CHECK(!r.body_in_file);
    CHECK_INT(r.nheaders, 18);
    CHECK_INT(r.consumed, n);
    CHECK(r.has_cgi_fields && r.is_path_decoded && r.is_gateway);
    CHECK(!r.keep_alive);
    CHECK(!r.is_head);
}

static void test_nginx_get(void)
{
    bytes_t v = {0}, p;
    result_t r;

    nginx_vars(&v, "GET", "/a/b?x=1&y=%20", "/a/b", "x=1&y=%20", "", "HTTP/1.1");
    p = packet(&v, "");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nhead, 0); /* no body: DONE straight away, no HEAD */
    CHECK_STR(r.method, "GET");
    CHECK_STR(r.target, "/a/b?x=1&y=%20");
    CHECK_STR(r.path, "/a/b");
    CHECK_STR(r.query, "x=1&y=%20");
    CHECK_STR(r.host, "example.com");
    CHECK_INT(r.major, 1);
    CHECK_INT(r.minor, 1);
    CHECK_INT(r.content_length, -1); /* nginx's empty CONTENT_LENGTH: none given */
    CHECK_INT(r.body_len, 0);
    CHECK(r.has_cgi_fields && r.is_path_decoded && r.is_gateway);
    CHECK(!r.keep_alive); /* one request per connection, as nginx expects */
    CHECK(!r.is_head);
    CHECK_INT(r.consumed, p.n);
    /* Every variable is kept, empty ones included, in packet order. */
    CHECK_INT(r.nheaders, 16);
    CHECK_STR(r.vars, "QUERY_STRING=x=1&y=%20\nREQUEST_METHOD=GET\nCONTENT_TYPE=\n"
                      "CONTENT_LENGTH=\nREQUEST_URI=/a/b?x=1&y=%20\nPATH_INFO=/a/b\n"
                      "DOCUMENT_ROOT=/usr/share/nginx/html\nSERVER_PROTOCOL=HTTP/1.1\n"
                      "REQUEST_SCHEME=http\nREMOTE_ADDR=192.0.2.7\nREMOTE_PORT=49142\n"
                      "SERVER_PORT=80\nSERVER_NAME=example.com\nHTTP_HOST=example.com\n"
                      "HTTP_USER_AGENT=curl/7.88.1\nHTTP_ACCEPT=*/*\n");
    bytes_free(&p);
    bytes_free(&v);
}

static void test_head_and_protocols(void)
{
    bytes_t v = {0}, p;
    result_t r;

    nginx_vars(&v, "HEAD", "/h", "/h", "", "", "HTTP/1.0");
    p = packet(&v, "");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK(r.is_head);
    CHECK_STR(r.method, "HEAD");
    CHECK_INT(r.major, 1);
    CHECK_INT(r.minor, 0);
    bytes_free(&p);
    bytes_free(&v);

    /* Only the exact method is HEAD. */
    static const char *const not_head[] = {"HEADX", "head", "HEA", "GET"};
    for (size_t i = 0; i < sizeof(not_head) / sizeof(*not_head); i++) {
        put_var(&v, "REQUEST_METHOD", not_head[i]);
        p = packet(&v, "");
        run_bytes(&p, &default_limits, &r);
        CHECK_INT(r.st, GW_PARSE_DONE);
        CHECK(!r.is_head);
        CHECK_STR(r.method, not_head[i]);
        bytes_free(&p);
        bytes_free(&v);
    }

    /* No SERVER_PROTOCOL, or a malformed one: the version stays unknown
     * (0.0). nginx's "HTTP/2.0" and "HTTP/3.0" (clients on h2 / h3) are left
     * out on purpose: they also come out 0.0 today, and the access log
     * (conn_dispatch.c) then drops the request line, REMOTE_ADDR, referer
     * and agent; whether the fix belongs here or in gw__conn_log_request()
     * is open. */
    static const char *const other[] = {NULL, "HTTP/1", "HTTP/1.10", "http/1.1", ""};
    for (size_t i = 0; i < sizeof(other) / sizeof(*other); i++) {
        put_var(&v, "REQUEST_METHOD", "GET");
        if (other[i])
            put_var(&v, "SERVER_PROTOCOL", other[i]);
        p = packet(&v, "");
        run_bytes(&p, &default_limits, &r);
        CHECK_INT(r.st, GW_PARSE_DONE);
        CHECK_INT(r.major, 0);
        CHECK_INT(r.minor, 0);
        bytes_free(&p);
        bytes_free(&v);
    }
}

static void test_minimal_and_fallbacks(void)
{
    bytes_t v = {0}, p;
    result_t r;

    /* REQUEST_METHOD alone is enough. */
    put_var(&v, "REQUEST_METHOD", "GET");
    p = packet(&v, "");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nheaders, 1);
    CHECK_STR(r.target, "");
    CHECK_STR(r.path, "");
    CHECK_INT(r.content_length, -1);
    CHECK_INT(r.consumed, 4 + 2 + 14 + 2 + 3);
    bytes_free(&p);

    /* Without REQUEST_URI the target (for the access log) is PATH_INFO. */
    put_var(&v, "PATH_INFO", "/only/path");
    put_var(&v, "QUERY_STRING", "q=1");
    p = packet(&v, "");
    run_bytes(&p, &default_limits, &r);
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_STR(r.target, "/only/path");
    CHECK_STR(r.path, "/only/path");
    CHECK_STR(r.query, "q=1");
    bytes_free(&p);
    bytes_free(&v);

    /* Unknown variables, odd bytes in values and an empty value are kept as
     * they are; a later REQUEST_METHOD replaces an earlier one. */
    put_var(&v, "REQUEST_METHOD", "HEAD");
    put_var_n(&v, "X_BIN", 5, "a\0\r\nb", 5);
    put_var(&v, "UWSGI_SCRIPT", "");
    put_var(&v, "REQUEST_METHOD", "GET");
    p = packet(&v, "");
    run_bytes(&p, &default_limits, &r);
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nheaders, 4);
    CHECK_STR(r.method, "GET");
    CHECK(!r.is_head);
    bytes_free(&p);
    bytes_free(&v);

    /* modifier2 is not looked at. */
    put_var(&v, "REQUEST_METHOD", "GET");
    p = packet_ex(0, -1, 0x7f, &v, "", 0);
    run_bytes(&p, &default_limits, &r);
    CHECK_INT(r.st, GW_PARSE_DONE);
    bytes_free(&p);
    bytes_free(&v);
}

static void test_content_length(void)
{
    static const struct {
        const char *clen;
        int64_t want;
    } cases[] = {
        {"", -1}, {"0", 0}, {"00", 0}, {"000000000000000001", 1}, {"1000", 1000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        bytes_t v = {0}, p;
        result_t r;
        char body[1001];

        memset(body, 'b', sizeof(body) - 1);
        body[cases[i].want > 0 ? cases[i].want : 0] = '\0';
        nginx_vars(&v, "POST", "/", "/", "", cases[i].clen, "HTTP/1.1");
        p = packet(&v, body);
        run_bytes(&p, &default_limits, &r);
        CHECK_INT(r.st, GW_PARSE_DONE);
        CHECK_INT(r.content_length, cases[i].want);
        CHECK_INT(r.nhead, cases[i].want > 0);
        CHECK_INT(r.body_len, cases[i].want > 0 ? cases[i].want : 0);
        bytes_free(&p);
        bytes_free(&v);
    }
}

static void test_body_in_memory(void)
{
    bytes_t v = {0}, p;
    result_t r;

    nginx_vars(&v, "POST", "/form", "/form", "", "11", "HTTP/1.1");
    p = packet(&v, "hello world");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nhead, 1);
    CHECK_INT(r.content_length, 11);
    CHECK_INT(r.body_len, 11);
    CHECK_STR(r.body, "hello world");
    CHECK(!r.body_in_file);
    CHECK_INT(r.consumed, p.n);
    bytes_free(&p);
    bytes_free(&v);

    /* Exactly body_env.mem_limit (64) stays in memory. */
    char body[65];
    memset(body, 'm', 64);
    body[64] = '\0';
    nginx_vars(&v, "PUT", "/", "/", "", "64", "HTTP/1.1");
    p = packet(&v, body);
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.body_len, 64);
    CHECK(!r.body_in_file);
    CHECK_STR(r.body, body);
    bytes_free(&p);
    bytes_free(&v);
}

static void test_body_to_file(void)
{
    bytes_t v = {0}, p;
    result_t r;
    char body[301];

    for (int i = 0; i < 300; i++)
        body[i] = (char)('a' + i % 26);
    body[300] = '\0';
    nginx_vars(&v, "PUT", "/up", "/up", "", "300", "HTTP/1.1");
    p = packet(&v, body);
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.body_len, 300);
    CHECK(r.body_in_file); /* past body_env.mem_limit (64) */
    CHECK_STR(r.body, body);
    CHECK_INT(r.consumed, p.n);
    bytes_free(&p);

    /* The body limit itself (1000) is accepted. */
    char big[1001];
    memset(big, 'z', 1000);
    big[1000] = '\0';
    bytes_free(&v);
    nginx_vars(&v, "POST", "/", "/", "", "1000", "HTTP/1.1");
    p = packet(&v, big);
    run_bytes(&p, &default_limits, &r);
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.body_len, 1000);
    CHECK(r.body_in_file);
    CHECK_STR(r.body, big);
    bytes_free(&p);
    bytes_free(&v);
}

static void test_trailing_bytes_not_body(void)
{
    bytes_t v = {0}, p;
    result_t r;
    size_t head;

    /* nginx never sends more than CONTENT_LENGTH bytes; if something did,
     * the extra bytes are not the body and are not consumed. */
    nginx_vars(&v, "POST", "/", "/", "", "5", "HTTP/1.1");
    p = packet(&v, "helloEXTRA\x00\x01\x02 more");
    head = 4 + v.n;
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.body_len, 5);
    CHECK_STR(r.body, "hello");
    CHECK_INT(r.consumed, head + 5);
    bytes_free(&p);
    bytes_free(&v);

    /* Without a body, the packet ends with the block. */
    nginx_vars(&v, "GET", "/", "/", "", "", "HTTP/1.1");
    p = packet(&v, "\x00\x10\x00\x00GET / HTTP/1.1\r\n");
    head = 4 + v.n;
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.body_len, 0);
    CHECK_INT(r.consumed, head);
    bytes_free(&p);
    bytes_free(&v);
}

/* A block of exactly 65535 bytes: the most the 16-bit size can say. */
static void test_max_block(void)
{
    bytes_t v = {0}, p;
    result_t r;
    gw_proto_limits_t lim = max_limits;
    size_t fill, cuts[] = {1, 3, 4, 5, 4 + 65535 - 1, 4 + 65535, 4 + 65535 + 1};
    char *val;

    put_var(&v, "REQUEST_METHOD", "POST");
    put_var(&v, "CONTENT_LENGTH", "2");
    fill = 65535 - v.n - 2 - 1 - 2; /* one more variable, "X", fills the block */
    val = malloc(fill);
    assert(val);
    memset(val, 'v', fill);
    put_var_n(&v, "X", 1, val, fill);
    CHECK_INT(v.n, 65535);
    p = packet(&v, "ok");
    CHECK_INT((unsigned char)p.p[1] | (unsigned char)p.p[2] << 8, 65535);

    run_bytes(&p, &lim, &r);
    CHECK_INT(r.st, GW_PARSE_DONE);
    CHECK_INT(r.nheaders, 3);
    CHECK_STR(r.method, "POST");
    CHECK_STR(r.body, "ok");
    CHECK_INT(r.consumed, 4 + 65535 + 2);
    {
        result_t *got = malloc(sizeof(*got));
        assert(got);
        for (size_t i = 0; i < sizeof(cuts) / sizeof(*cuts); i++) {
            run_cuts(p.p, p.n, &cuts[i], 1, &lim, got);
            CHECK(result_eq(&r, got));
        }
        run_cuts(p.p, p.n, cuts, sizeof(cuts) / sizeof(*cuts), &lim, got);
        CHECK(result_eq(&r, got));
        free(got);
    }
    /* The value's span reaches the block's last byte and no further. */
    {
        gw_uwsgi_t u;
        gw_req_t req;
        size_t used;

        gw_uwsgi_init(&u, &lim, &body_env);
        gw_req_init(&req, &arena_pool);
        CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, 0, 4 + 65535, &used), GW_PARSE_HEAD);
        CHECK_INT(used, 4 + 65535);
        CHECK_INT(req.headers[2].value.off + req.headers[2].value.len, 4 + 65535);
        CHECK_INT(req.headers[2].value.len, fill);
        gw_req_reset(&req, &body_env);
    }

    /* One byte over --buffer-size is refused. */
    lim.buffer_size = 65534;
    run_bytes(&p, &lim, &r);
    CHECK_INT(r.st, GW_PARSE_ERROR);
    CHECK_INT(r.status, 0);
    CHECK(reason_starts(&r, "--buffer-size is smaller than this request block size: 65535"));
    bytes_free(&p);
    bytes_free(&v);
    free(val);
}

static void test_buffer_size_limit(void)
{
    bytes_t v = {0}, p;
    result_t r;
    char pad[1024];

    memset(pad, 'p', sizeof(pad));
    put_var(&v, "REQUEST_METHOD", "GET");
    put_var_n(&v, "PAD", 3, pad, 1024 - v.n - 2 - 3 - 2);
    CHECK_INT(v.n, 1024);
    p = packet(&v, "");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_DONE);
    bytes_free(&p);
    bytes_free(&v);

    put_var(&v, "REQUEST_METHOD", "GET");
    put_var_n(&v, "PAD", 3, pad, 1025 - v.n - 2 - 3 - 2);
    CHECK_INT(v.n, 1025);
    p = packet(&v, "");
    CHECK(splits_agree(&p, &default_limits, &r));
    CHECK_INT(r.st, GW_PARSE_ERROR);
    CHECK_INT(r.status, 0);
    CHECK(reason_starts(&r, "--buffer-size is smaller than this request block size: 1025"));
    /* Refused from the 4-byte header, without waiting for the block. */
    run_cuts(p.p, 4, NULL, 0, &default_limits, &r);
    CHECK_INT(r.st, GW_PARSE_ERROR);
    bytes_free(&p);
    bytes_free(&v);
}

/* ---- errors ---- */

static void test_errors(void)
{
    static const char body5[] = "abcde";
    enum { MAX_CASES = 40 };
    struct {
        bytes_t p;
        int status;
        const char *reason;
    } c[MAX_CASES];
    size_t nc = 0;
    bytes_t v = {0};

#define ADD(pkt, st, why)                                                                          \
    do {                                                                                           \
        assert(nc < MAX_CASES);                                                                    \
        c[nc].p = (pkt);                                                                           \
        c[nc].status = (st);                                                                       \
        c[nc].reason = (why);                                                                      \
        nc++;                                                                                      \
    } while (0)

    /* Not the protocol at all: close without an answer. */
    put_var(&v, "REQUEST_METHOD", "GET");
    ADD(packet_ex(1, -1, 0, &v, "", 0), 0, "unknown modifier1 (0 is WSGI): 1");
    ADD(packet_ex(0xff, -1, 0, &v, "", 0), 0, "unknown modifier1 (0 is WSGI): 255");
    {
        bytes_t http = {0};
        put(&http, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27);
        ADD(http, 0, "unknown modifier1 (0 is WSGI): 71");
    }
    ADD(packet_ex(0, 0, 0, &v, "", 0), 0, "empty variables block");
    {
        bytes_t none = {0};
        ADD(packet_ex(0, 0, 0, &none, "", 0), 0, "empty variables block");
    }
    bytes_free(&v);

    /* A key length cut by the end of the block: one byte left for it. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put(&v, "\x05", 1);
    ADD(packet(&v, ""), 0, "truncated variable at byte 25");
    bytes_free(&v);
    /* ...the size says one byte more than the variables hold, and the byte
     * after the block (the body's first) is not read as a key length. */
    put_var(&v, "REQUEST_METHOD", "GET");
    ADD(packet_ex(0, (long)v.n + 1, 0, &v, "\x01\x00", 2), 0, "truncated variable at byte 25");
    bytes_free(&v);

    /* A key running past the block. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put_u16(&v, 100);
    put(&v, "KEY", 3);
    ADD(packet(&v, ""), 0, "variable name past the block at byte 127");
    bytes_free(&v);
    /* A key that ends the block, with no room for a value length. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put_u16(&v, 3);
    put(&v, "KEY", 3);
    ADD(packet(&v, ""), 0, "variable name past the block at byte 30");
    bytes_free(&v);
    /* ...or room for one byte of it. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put_u16(&v, 3);
    put(&v, "KEY\x01", 4);
    ADD(packet(&v, ""), 0, "variable name past the block at byte 30");
    bytes_free(&v);

    /* A value running past the block, by one byte or by many. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put_u16(&v, 3);
    put(&v, "KEY", 3);
    put_u16(&v, 4);
    put(&v, "VAL", 3);
    ADD(packet_ex(0, -1, 0, &v, "L", 1), 0, "variable value past the block at byte 36");
    bytes_free(&v);
    put_var(&v, "REQUEST_METHOD", "GET");
    put_u16(&v, 3);
    put(&v, "KEY", 3);
    put_u16(&v, 0xffff);
    ADD(packet(&v, ""), 0, "variable value past the block at byte 65567");
    bytes_free(&v);

    /* An empty key. */
    put_var(&v, "REQUEST_METHOD", "GET");
    put_var(&v, "", "value");
    ADD(packet(&v, ""), 0, "empty variable name");
    bytes_free(&v);
    put_var(&v, "", "");
    put_var(&v, "REQUEST_METHOD", "GET");
    ADD(packet(&v, ""), 0, "empty variable name");
    bytes_free(&v);

    /* No REQUEST_METHOD, or an empty one. */
    nginx_vars(&v, "", "/", "/", "", "", "HTTP/1.1");
    ADD(packet(&v, ""), 0, "no REQUEST_METHOD");
    bytes_free(&v);
    put_var(&v, "PATH_INFO", "/");
    put_var(&v, "REQUEST_METHODS", "GET");
    put_var(&v, "request_method", "GET");
    ADD(packet(&v, ""), 0, "no REQUEST_METHOD");
    bytes_free(&v);

    /* CONTENT_LENGTH: digits only, at most 18 of them. */
    static const char *const bad_clen[] = {"abc", "-1",   "+5",  " 5",  "5 ",
                                           "1.0", "0x10", "5,5", "1e3", "5\r\n"};
    for (size_t i = 0; i < sizeof(bad_clen) / sizeof(*bad_clen); i++) {
        nginx_vars(&v, "POST", "/", "/", "", bad_clen[i], "HTTP/1.1");
        ADD(packet(&v, body5), 0, "CONTENT_LENGTH is not a number");
        bytes_free(&v);
    }
    nginx_vars(&v, "POST", "/", "/", "", "1234567890123456789", "HTTP/1.1");
    ADD(packet(&v, body5), 0, "CONTENT_LENGTH too long");
    bytes_free(&v);
    nginx_vars(&v, "POST", "/", "/", "", "0000000000000000005", "HTTP/1.1");
    ADD(packet(&v, body5), 0, "CONTENT_LENGTH too long");
    bytes_free(&v);

    /* A body over --limit-body is answered 413, before any body byte. */
    nginx_vars(&v, "POST", "/", "/", "", "1001", "HTTP/1.1");
    ADD(packet(&v, body5), 413, "request body too large");
    bytes_free(&v);
    nginx_vars(&v, "POST", "/", "/", "", "999999999999999999", "HTTP/1.1");
    ADD(packet(&v, ""), 413, "request body too large");
    bytes_free(&v);
#undef ADD

    for (size_t i = 0; i < nc; i++) {
        result_t r;
        bool ok = splits_agree(&c[i].p, &default_limits, &r);

        if (!ok || r.st != GW_PARSE_ERROR || r.status != c[i].status ||
            strcmp(r.reason, c[i].reason) != 0)
            fprintf(stderr, "  error case #%zu: st=%d status=%d reason=\"%s\"\n", i, r.st, r.status,
                    r.reason);
        CHECK(ok);
        CHECK_INT(r.st, GW_PARSE_ERROR);
        CHECK_INT(r.status, c[i].status);
        CHECK_STR(r.reason, c[i].reason);
        CHECK_INT(r.nhead, 0);
        /* Until the whole block is in, nothing is judged (except the header). */
        if (c[i].p.n > 4 && strncmp(c[i].reason, "unknown modifier1", 17) != 0 &&
            strcmp(c[i].reason, "empty variables block") != 0) {
            size_t block = 4 + ((unsigned char)c[i].p.p[1] | (unsigned char)c[i].p.p[2] << 8);
            if (block <= c[i].p.n) {
                run_cuts(c[i].p.p, block - 1, NULL, 0, &default_limits, &r);
                CHECK_INT(r.st, GW_PARSE_AGAIN);
                CHECK_INT(r.consumed, 0);
            }
        }
        bytes_free(&c[i].p);
    }
}

/* A body the store cannot take (here: no tmpdir) is answered 500. */
static void test_body_store_fails(void)
{
    static const gw_body_env_t no_tmp = {&body_pool, 4, "/nonexistent/gangway-uwsgi-test"};
    bytes_t v = {0}, p;
    result_t r;
    bool all = true;

    nginx_vars(&v, "POST", "/", "/", "", "10", "HTTP/1.1");
    p = packet(&v, "0123456789");
    env = &no_tmp;
    /* At every split (how much was consumed before the failure depends on
     * where the reads end: the first 4 bytes fit in memory). */
    for (size_t i = 0; i < p.n; i++) {
        run_cuts(p.p, p.n, &i, i ? 1 : 0, &default_limits, &r);
        if (r.st != GW_PARSE_ERROR || r.status != 500 || r.nhead != 1 ||
            strcmp(r.reason, "cannot store the request body") != 0) {
            fprintf(stderr, "  split at %zu:\n", i);
            describe("got", &r);
            all = false;
        }
    }
    env = &body_env;
    CHECK(all);
    bytes_free(&p);
    bytes_free(&v);
}

/* ---- the feed contract, driven by hand ---- */

static void test_spans_relative_to_base(void)
{
    bytes_t v = {0}, p, b = {0};
    gw_uwsgi_t u;
    gw_req_t req;
    size_t used, off = 9;

    put_var(&v, "REQUEST_METHOD", "GET");
    put_var(&v, "PATH_INFO", "/p");
    p = packet(&v, "");
    put(&b, "JUNKJUNK!", off); /* an earlier, already parsed part of the buffer */
    put(&b, p.p, p.n);
    gw_uwsgi_init(&u, &default_limits, &body_env);
    gw_req_init(&req, &arena_pool);
    CHECK_INT(gw_uwsgi_feed(&u, &req, b.p, off, p.n, &used), GW_PARSE_DONE);
    CHECK_INT(used, p.n);
    CHECK_INT(req.nheaders, 2);
    CHECK_INT(req.headers[0].name.off, off + 4 + 2);
    CHECK_INT(req.headers[0].name.len, 14);
    CHECK_INT(req.headers[0].value.off, off + 4 + 2 + 14 + 2);
    CHECK_INT(req.headers[0].value.len, 3);
    CHECK_INT(req.method.off, req.headers[0].value.off);
    CHECK_INT(req.headers[1].value.off, off + 4 + 21 + 2 + 9 + 2);
    CHECK_INT(req.path.off, req.headers[1].value.off);
    CHECK_INT(req.path.len, 2);
    CHECK(!memcmp(b.p + req.path.off, "/p", 2));
    gw_req_reset(&req, &body_env);
    bytes_free(&b);
    bytes_free(&p);
    bytes_free(&v);
}

static void test_head_then_body_feeds(void)
{
    bytes_t v = {0}, p;
    gw_uwsgi_t u;
    gw_req_t req;
    size_t used, head;

    put_var(&v, "REQUEST_METHOD", "POST");
    put_var(&v, "CONTENT_LENGTH", "4");
    p = packet(&v, "abcdNEXT");
    head = 4 + v.n;
    gw_uwsgi_init(&u, &default_limits, &body_env);
    gw_req_init(&req, &arena_pool);
    /* Short of the 4-byte header, then of the block: nothing consumed. */
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, 0, 3, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 0);
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, 0, head - 1, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 0);
    CHECK_INT(req.nheaders, 0);
    /* HEAD comes back with *used at the end of the block, even when body
     * bytes follow in the same feed. */
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, 0, p.n, &used), GW_PARSE_HEAD);
    CHECK_INT(used, head);
    CHECK_INT(req.content_length, 4);
    CHECK_INT(req.body.len, 0);
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, head, 0, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 0);
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, head, 2, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 2);
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, head + 2, p.n - head - 2, &used), GW_PARSE_DONE);
    CHECK_INT(used, 2);
    CHECK_INT(req.body.len, 4);
    CHECK(!memcmp(req.body.mem.data, "abcd", 4));
    /* After DONE the parser waits: the rest is ignored, nothing consumed. */
    CHECK_INT(gw_uwsgi_feed(&u, &req, p.p, head + 4, 4, &used), GW_PARSE_DONE);
    CHECK_INT(used, 0);
    CHECK_INT(req.body.len, 4);
    gw_req_reset(&req, &body_env);
    bytes_free(&p);
    bytes_free(&v);
}

static void test_reset(void)
{
    bytes_t v = {0}, bad, good;
    gw_uwsgi_t u;
    gw_req_t req;
    size_t used;

    put_var(&v, "REQUEST_METHOD", "POST");
    put_var(&v, "CONTENT_LENGTH", "2000");
    bad = packet(&v, "");
    bytes_free(&v);
    put_var(&v, "REQUEST_METHOD", "POST");
    put_var(&v, "CONTENT_LENGTH", "2");
    good = packet(&v, "hi");

    gw_uwsgi_init(&u, &default_limits, &body_env);
    gw_req_init(&req, &arena_pool);
    CHECK_INT(gw_uwsgi_feed(&u, &req, bad.p, 0, bad.n, &used), GW_PARSE_ERROR);
    CHECK_INT(u.status, 413);
    gw_req_reset(&req, &body_env);
    gw_uwsgi_reset(&u);
    CHECK_INT(u.status, 0);
    CHECK_STR(u.reason, "");
    CHECK(u.lim == &default_limits);
    CHECK(u.body_env == &body_env);

    /* Reset mid-body too: the next packet starts from its header. */
    CHECK_INT(gw_uwsgi_feed(&u, &req, good.p, 0, good.n - 1, &used), GW_PARSE_HEAD);
    gw_req_reset(&req, &body_env);
    gw_uwsgi_reset(&u);
    CHECK_INT(u.state, U_HEAD);
    CHECK_INT(u.body_left, 0);
    CHECK_INT(gw_uwsgi_feed(&u, &req, good.p, 0, good.n, &used), GW_PARSE_HEAD);
    CHECK_INT(used, good.n - 2);
    CHECK_INT(gw_uwsgi_feed(&u, &req, good.p, used, 2, &used), GW_PARSE_DONE);
    CHECK_INT(req.body.len, 2);
    gw_req_reset(&req, &body_env);
    bytes_free(&good);
    bytes_free(&bad);
    bytes_free(&v);
}

int main(void)
{
    gw_bufpool_init(&body_pool, 4096, 4);

    test_nginx_post_captured();
    test_nginx_get();
    test_head_and_protocols();
    test_minimal_and_fallbacks();
    test_content_length();
    test_body_in_memory();
    test_body_to_file();
    test_trailing_bytes_not_body();
    test_max_block();
    test_buffer_size_limit();
    test_errors();
    test_body_store_fails();
    test_spans_relative_to_base();
    test_head_then_body_feeds();
    test_reset();

    gw_bufpool_dispose(&body_pool);
    gw_arena_pool_dispose(&arena_pool);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
