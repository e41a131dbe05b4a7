/* Unit tests for the HTTP/1.1 request parser. Includes the module (and
 * request.c, which the generic unit rule does not link) so that the harness
 * drives gw_http1_feed() exactly as conn.c's process_input() and
 * enter_keepalive() do: append to a read buffer, feed from the parsed offset,
 * drop body bytes after each AGAIN in the body, reset and compact between
 * keep-alive requests. */
#include "proto/http1.c"
#include "proto/request.c"

#include <assert.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "feed_harness.h"

static int n_known;

/* Behaviour src/proto/http1.c gets wrong today: reported to its owner, not fixed
 * here. Not counted as a failure, so `make unit` stays usable; printed while
 * it still fails, and flagged once it passes so that it moves to a CHECK. */
/* A check with a name: the gaps of llhttp 8.1 that http1.c closes. */
#define CHECK_THAT(cond, what) CHECK(cond)

#define KNOWN_BUG(cond, what)                                                                      \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_pass++;                                                                              \
            fprintf(stderr, "%s:%d: known bug now passes, make it a CHECK: %s\n", __FILE__,        \
                    __LINE__, what);                                                               \
        } else {                                                                                   \
            n_known++;                                                                             \
            fprintf(stderr, "%s:%d: known bug: %s\n", __FILE__, __LINE__, what);                   \
        }                                                                                          \
    } while (0)

/* ---- harness ---- */

enum { MAX_REQS = 8, STR_MAX = 512, BODY_MAX = 4096 };

/* One parsed request, copied out of the read buffer before the reset. */
typedef struct result {
    int st;     /* GW_PARSE_DONE, GW_PARSE_ERROR, or GW_PARSE_AGAIN: input ended mid-request */
    int status; /* h.status with ERROR */
    int nhead;  /* how many times HEAD was returned */
    char method[STR_MAX], target[STR_MAX], path[STR_MAX], query[STR_MAX];
    char authority[STR_MAX];
    char headers[BODY_MAX]; /* "name=value\n" for each kept header */
    uint32_t nheaders;
    int32_t host;
    int major, minor;
    bool is_head, is_chunked, keep_alive, expect_continue, body_in_file;
    bool any_gateway_fact; /* has_cgi_fields, is_path_decoded or is_gateway: never for HTTP */
    int64_t content_length;
    char body[BODY_MAX];
    uint64_t body_len;
} result_t;

typedef struct run {
    int n;
    result_t r[MAX_REQS];
} run_t;

static const gw_proto_limits_t default_limits = {
    .request_line = 256,
    .field_size = 128,
    .fields = 16,
    .headers = 1024,
    .body = 1000,
};

static gw_bufpool_t body_pool;
static gw_arena_pool_t arena_pool;
static gw_body_env_t body_env = {&body_pool, 64, "/tmp"};

static void copy_span(char *dst, const char *base, gw_span_t s)
{
    size_t n = s.len < STR_MAX - 1 ? s.len : STR_MAX - 1;
    memcpy(dst, base + s.off, n);
    dst[n] = '\0';
}

static void record(result_t *out, const gw_http1_t *h, const gw_req_t *r, const char *base, int st)
{
    size_t hl = 0;

    memset(out, 0, sizeof(*out));
    out->st = st;
    out->status = st == GW_PARSE_ERROR ? h->status : 0;
    if (st != GW_PARSE_DONE)
        return; /* spans of a failed or partial request mean nothing */
    copy_span(out->method, base, r->method);
    copy_span(out->target, base, r->target);
    copy_span(out->path, base, r->path);
    copy_span(out->query, base, r->query);
    copy_span(out->authority, base, r->authority);
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const gw_header_t *x = &r->headers[i];
        int n =
            snprintf(out->headers + hl, sizeof(out->headers) - hl, "%.*s=%.*s\n", (int)x->name.len,
                     base + x->name.off, (int)x->value.len, base + x->value.off);
        if (n > 0 && (size_t)n < sizeof(out->headers) - hl)
            hl += (size_t)n;
    }
    out->nheaders = r->nheaders;
    out->host = r->host;
    out->major = r->http_major;
    out->minor = r->http_minor;
    out->is_head = r->is_head;
    out->is_chunked = r->is_chunked;
    out->keep_alive = r->keep_alive;
    out->expect_continue = r->expect_continue;
    out->any_gateway_fact = r->has_cgi_fields || r->is_path_decoded || r->is_gateway;
    out->content_length = r->content_length;
    out->body_in_file = r->body.fd >= 0;
    out->body_len = r->body.len;
    ssize_t got = gw_body_read(&r->body, 0, out->body, sizeof(out->body) - 1);
    out->body[got > 0 ? got : 0] = '\0';
}

/* Delivers in[0..n) in pieces ending at cuts[] (ascending, each in 1..n-1),
 * the way reads would fill conn.c's buffer, and parses every request in it.
 * Each arrival gets a fresh exact-size buffer, so that under ASan a span or
 * pointer kept from an earlier feed, or a read past the fed bytes, is caught.
 * A harness_run_cb: lim is a const gw_proto_limits_t *, result a run_t *. */
static void run_cuts(const char *in, size_t n, const size_t *cuts, size_t ncuts, const void *lim,
                     void *result)
{
    run_t *out = result;
    gw_http1_t h;
    gw_req_t req;
    char *buf = NULL;
    size_t len = 0, parsed = 0, head_end = 0, pos = 0;
    bool in_body = false, done = false;
    int nhead = 0;

    memset(out, 0, sizeof(*out));
    gw_http1_init(&h, lim, &body_env);
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
            size_t used = 0;
            gw_parse_t st = gw_http1_feed(&h, &req, buf, parsed, len - parsed, &used);

            assert(used <= len - parsed);
            parsed += used;
            if (st == GW_PARSE_AGAIN) {
                assert(parsed == len);
                if (in_body)
                    len = parsed = head_end; /* body bytes are stored; keep the head */
                break;
            }
            if (st == GW_PARSE_HEAD) {
                assert(!in_body);
                nhead++;
                head_end = parsed;
                in_body = true;
                continue;
            }
            if (out->n < MAX_REQS) {
                record(&out->r[out->n], &h, &req, buf, st);
                out->r[out->n].nhead = nhead;
                out->n++;
            }
            if (st == GW_PARSE_ERROR || !req.keep_alive || out->n == MAX_REQS) {
                done = true;
                break;
            }
            /* enter_keepalive() */
            gw_req_reset(&req, &body_env);
            gw_http1_reset(&h);
            memmove(buf, buf + parsed, len - parsed);
            len -= parsed;
            parsed = head_end = 0;
            in_body = false;
            nhead = 0;
            if (len == 0)
                break;
        }
    }
    if (!done && (len > 0 || in_body) && out->n < MAX_REQS) {
        record(&out->r[out->n], &h, &req, buf, GW_PARSE_AGAIN);
        out->r[out->n].nhead = nhead;
        out->n++;
    }
    gw_req_reset(&req, &body_env);
    free(buf);
}

static void run_str(const char *in, const gw_proto_limits_t *lim, run_t *out)
{
    run_cuts(in, strlen(in), NULL, 0, lim, out);
}

/* The first result of a one-shot parse. */
static result_t *parse1(const char *in)
{
    static run_t run;
    run_str(in, &default_limits, &run);
    assert(run.n >= 1);
    return &run.r[0];
}

static int status_of(const char *in, const gw_proto_limits_t *lim)
{
    run_t run;
    run_str(in, lim ? lim : &default_limits, &run);
    if (run.n == 0)
        return -1;
    if (run.r[run.n - 1].st == GW_PARSE_ERROR)
        return run.r[run.n - 1].status;
    return run.r[run.n - 1].st == GW_PARSE_DONE ? 200 : 0;
}

static bool result_eq(const result_t *a, const result_t *b)
{
    if (a->st != b->st || a->status != b->status)
        return false;
    if (a->st != GW_PARSE_DONE)
        return true;
    return !strcmp(a->method, b->method) && !strcmp(a->target, b->target) &&
           !strcmp(a->path, b->path) && !strcmp(a->query, b->query) &&
           !strcmp(a->authority, b->authority) &&
           !strcmp(a->headers, b->headers) && a->nheaders == b->nheaders && a->host == b->host &&
           a->major == b->major && a->minor == b->minor && a->is_head == b->is_head &&
           a->is_chunked == b->is_chunked && a->keep_alive == b->keep_alive &&
           a->expect_continue == b->expect_continue && a->content_length == b->content_length &&
           a->body_len == b->body_len && !memcmp(a->body, b->body, sizeof(a->body)) &&
           a->nhead == b->nhead;
}

static bool run_eq(const void *va, const void *vb)
{
    const run_t *a = va, *b = vb;

    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (!result_eq(&a->r[i], &b->r[i]))
            return false;
    return true;
}

static void describe(const char *what, const void *vr)
{
    const run_t *r = vr;

    fprintf(stderr, "    %s: %d result(s)", what, r->n);
    for (int i = 0; i < r->n; i++)
        fprintf(stderr, " [st=%d status=%d heads=%d body=%llu]", r->r[i].st, r->r[i].status,
                r->r[i].nhead, (unsigned long long)r->r[i].body_len);
    fprintf(stderr, "\n");
}

static const harness_parser_t http1_parser = {run_cuts, run_eq, describe, sizeof(run_t)};

/* Parses in one shot, one byte at a time, and split in two at every point;
 * every way must give the same results. Returns the one-shot run in *whole.
 * Differences are printed with the splits that caused them. */
static bool splits_agree_n(const char *in, size_t n, const gw_proto_limits_t *lim, run_t *whole)
{
    return harness_splits_agree(&http1_parser, in, n, lim, whole);
}

static bool splits_agree(const char *in, const gw_proto_limits_t *lim, run_t *whole)
{
    return splits_agree_n(in, strlen(in), lim, whole);
}

/* ---- well-formed requests ---- */

static void test_simple_get(void)
{
    result_t *r = parse1("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->method, "GET");
    CHECK_STR(r->target, "/index.html");
    CHECK_STR(r->path, "/index.html");
    CHECK_STR(r->query, "");
    CHECK_INT(r->major, 1);
    CHECK_INT(r->minor, 1);
    CHECK_INT(r->nheaders, 1);
    CHECK_INT(r->host, 0);
    CHECK_STR(r->headers, "Host=example.com\n");
    CHECK(r->keep_alive);
    CHECK(!r->is_head);
    CHECK(!r->is_chunked);
    CHECK_INT(r->content_length, -1);
    CHECK_INT(r->body_len, 0);
    CHECK_INT(r->nhead, 0); /* no body: DONE straight away, no HEAD */
    CHECK(!r->any_gateway_fact);
}

static void test_http10_no_host(void)
{
    result_t *r = parse1("GET / HTTP/1.0\r\n\r\n");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_INT(r->minor, 0);
    CHECK_INT(r->host, -1);
    CHECK(!r->keep_alive);
    r = parse1("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(r->keep_alive);
    r = parse1("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    CHECK(!r->keep_alive);
    r = parse1("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK(r->is_head);
}

static void test_headers_as_spans(void)
{
    const char *in = "GET /a?b=c HTTP/1.1\r\n"
                     "Host: h\r\n"
                     "X-Plain: value\r\n"
                     "X-Ows:   padded value \t \r\n"
                     "X-Empty:\r\n"
                     "X-Empty-Ws:   \r\n"
                     "Accept: */*\r\n"
                     "\r\n";
    gw_http1_t h;
    gw_req_t req;
    size_t used;
    char *buf = strdup(in);

    assert(buf);
    gw_http1_init(&h, &default_limits, &body_env);
    gw_req_init(&req, &arena_pool);
    CHECK_INT(gw_http1_feed(&h, &req, buf, 0, strlen(buf), &used), GW_PARSE_DONE);
    CHECK_INT(used, strlen(buf));
    CHECK_INT(req.nheaders, 6);
    /* Spans are offsets into the buffer handed to feed: check them directly. */
    CHECK_INT(req.method.off, 0);
    CHECK_INT(req.method.len, 3);
    CHECK_INT(req.target.off, 4);
    CHECK_INT(req.target.len, 6);
    CHECK_INT(req.headers[0].name.off, (uint32_t)(strstr(in, "Host") - in));
    CHECK_INT(req.headers[0].name.len, 4);
    CHECK_INT(req.headers[0].value.off, (uint32_t)(strstr(in, "h\r\n") - in));
    CHECK_INT(req.headers[0].value.len, 1);
    CHECK_INT(req.headers[2].value.off, (uint32_t)(strstr(in, "padded") - in));
    CHECK_INT(req.headers[2].value.len, strlen("padded value"));
    CHECK_INT(req.headers[3].value.len, 0);
    CHECK_INT(req.headers[4].value.len, 0);
    gw_req_reset(&req, &body_env);
    free(buf);

    result_t *r = parse1(in);
    CHECK_STR(r->headers, "Host=h\nX-Plain=value\nX-Ows=padded value\nX-Empty=\nX-Empty-Ws=\n"
                          "Accept=*/*\n");
}

static void test_pipelined(void)
{
    run_t run;
    const char *in = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                     "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                     "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n0\r\n\r\n"
                     "GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                     "GET /never HTTP/1.1\r\nHost: a\r\n\r\n";

    CHECK(splits_agree(in, &default_limits, &run));
    CHECK_INT(run.n, 4); /* the connection closes after /4 */
    CHECK_STR(run.r[0].target, "/1");
    CHECK_STR(run.r[1].target, "/2");
    CHECK_STR(run.r[1].body, "hello");
    CHECK_STR(run.r[2].target, "/3");
    CHECK_STR(run.r[2].body, "abc");
    CHECK_STR(run.r[3].target, "/4");
    CHECK(!run.r[3].keep_alive);
    for (int i = 0; i < 4; i++)
        CHECK_INT(run.r[i].st, GW_PARSE_DONE);

    /* A pipelined request after an error is never parsed. */
    run_str(
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &default_limits, &run);
    CHECK_INT(run.n, 2);
    CHECK_INT(run.r[0].st, GW_PARSE_DONE);
    CHECK_INT(run.r[1].st, GW_PARSE_ERROR);
    CHECK_INT(run.r[1].status, 400);
}

static void test_post_content_length(void)
{
    run_t run;
    const char *in = "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";

    CHECK(splits_agree(in, &default_limits, &run));
    CHECK_INT(run.n, 1);
    CHECK_INT(run.r[0].st, GW_PARSE_DONE);
    CHECK_INT(run.r[0].nhead, 1);
    CHECK_INT(run.r[0].content_length, 11);
    CHECK_INT(run.r[0].body_len, 11);
    CHECK_STR(run.r[0].body, "hello world");
    CHECK(!run.r[0].body_in_file);

    /* Content-Length: 0 is a message without a body. */
    result_t *r = parse1("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_INT(r->nhead, 0);
    CHECK_INT(r->content_length, 0);
}

static void test_post_body_to_file(void)
{
    char in[1024], body[301];
    run_t run;

    for (int i = 0; i < 300; i++)
        body[i] = (char)('a' + i % 26);
    body[300] = '\0';
    snprintf(in, sizeof(in), "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n%s", body);
    CHECK(splits_agree(in, &default_limits, &run));
    CHECK_INT(run.r[0].st, GW_PARSE_DONE);
    CHECK_INT(run.r[0].body_len, 300);
    CHECK(run.r[0].body_in_file); /* past body_env.mem_limit (64) */
    CHECK_STR(run.r[0].body, body);
}

/* Past the memory limit, small appends are batched in memory and written a
 * buffer's worth at a time (issue 14: one write() per chunk before); reads
 * see the file and the unwritten batch as one body, at every offset. */
static void test_body_file_batches(void)
{
    static char want[32768];
    gw_body_t b = {.fd = -1};
    size_t sizes[] = {1, 3, 60, 1, 4095, 4096, 4097, 1, 9000, 2};
    size_t len = 0, k = 0;
    struct stat st;
    char got[5000];

    for (size_t i = 0; i < sizeof(want); i++)
        want[i] = (char)(i * 7 + i / 251);
    while (len + sizes[k % 10] <= 20000) {
        size_t n = sizes[k++ % 10];
        CHECK_INT(gw_body_append(&b, &body_env, want + len, n), 0);
        len += n;
    }
    CHECK_INT(b.len, len);
    CHECK(b.fd >= 0);
    CHECK(fstat(b.fd, &st) == 0);
    CHECK_INT((uint64_t)st.st_size + b.mem.len, len);
    CHECK(b.mem.len > 0); /* the last small pieces wait in the batch */
    /* 1,000 one-byte pieces: no write until a buffer's worth is in. */
    off_t before = st.st_size;
    size_t mem_before = b.mem.len;
    for (int i = 0; i < 1000 && b.mem.len + 1 < b.mem.cap; i++) {
        CHECK_INT(gw_body_append(&b, &body_env, "x", 1), 0);
        want[len++] = 'x'; /* the batch is one pool block (4096): len stays below 32768 */
    }
    CHECK(fstat(b.fd, &st) == 0);
    CHECK_INT(st.st_size, before);
    CHECK(b.mem.len > mem_before);
    CHECK_INT(b.len, len);
    for (size_t off = 0; off < len; off += 997) {
        for (size_t n = 1; n <= sizeof(got); n = n * 3 + 1) {
            size_t exp = off + n <= len ? n : len - off;
            ssize_t r = gw_body_read(&b, off, got, n);
            CHECK_INT(r, (ssize_t)exp);
            CHECK(r > 0 && !memcmp(got, want + off, (size_t)r));
        }
    }
    gw_buf_release(&b.mem, &body_pool);
    close(b.fd);
}

static void test_post_chunked(void)
{
    run_t run;
    const char *in = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n"
                     "1;name=value\r\n \r\n"
                     "A\r\n0123456789\r\n"
                     "0\r\nX-Trailer: t\r\n\r\n";

    CHECK(splits_agree(in, &default_limits, &run));
    CHECK_INT(run.n, 1);
    CHECK_INT(run.r[0].st, GW_PARSE_DONE);
    CHECK(run.r[0].is_chunked);
    CHECK_INT(run.r[0].content_length, -1);
    CHECK_STR(run.r[0].body, "hello 0123456789");
    CHECK_INT(run.r[0].body_len, 16);
    CHECK_STR(run.r[0].headers, "Host=a\nTransfer-Encoding=chunked\n"); /* no trailers */

    /* Case-insensitive coding name (RFC 9112 7: transfer-coding names are). */
    CHECK_INT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
                        NULL),
              200);
    CHECK_INT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n"
                        "0\r\n\r\n",
                        NULL),
              200);
}

static void test_every_split(void)
{
#define R(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *in;
        size_t len;
    } reqs[] = {
        R("GET /p/q?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"),
        R("GET http://example.com/a/b?c HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        R("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        R("GET / HTTP/1.0\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\r\nX_Dropped: 1\r\nX-Kept: 2\r\nX-Empty:\r\n\r\n"),
        R("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"),
        R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
          "4;ext=\"q\"\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: 1\r\n\r\n"),
        R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
          "0123456789012345678901234567890123456789012345678901234567890123456789"
          "012345678901234567890123456789"),
        R("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
          "\r\nhiGET /3 HTTP/1.1\r\nHost: a\r\n\r\n"),
        /* errors must not depend on where reads end either */
        R("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"),
        R("GET / HTTP/1.1\nHost: a\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\r\nX: b\nY: c\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
        R("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        R("GET / HTTP/1.1\r\nX: y\r\n\r\n"),
        R("GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n"),
        R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n"),
        R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n"),
    };
#undef R
    for (size_t i = 0; i < sizeof(reqs) / sizeof(*reqs); i++) {
        run_t run;
        bool ok = splits_agree_n(reqs[i].in, reqs[i].len, &default_limits, &run);
        if (!ok)
            fprintf(stderr, "  ^ request #%zu\n", i);
        CHECK(ok);
    }
}

/* ---- errors ---- */

static void test_error_statuses(void)
{
#define C(s, st)                                                                                   \
    {                                                                                              \
        s, sizeof(s) - 1, st                                                                       \
    }
    static const struct {
        const char *in;
        size_t len; /* literals with a NUL inside */
        int status;
    } cases[] = {
        /* obs-fold, RFC 9112 5.2 */
        C("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", 400),
        /* bare LF, RFC 9112 2.2 */
        C("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\n\n", 400),
        /* bare CR */
        C("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        C("GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
        /* NUL */
        C("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
        /* Content-Length and Transfer-Encoding, RFC 9112 6.1 */
        C("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
          "0\r\n\r\n",
          400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
          "0\r\n\r\n",
          400),
        C("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
        /* Transfer-Encoding other than exactly "chunked" */
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
          400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
          400),
        C("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        /* chunk framing */
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
          400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\nX0\r\n\r\n",
          400),
        C("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\nhello\r\n0\r\n\r\n",
          400),
        /* versions */
        C("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        C("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        C("GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        C("GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
        C("GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400),
        C("GET / FTP/1.1\r\nHost: a\r\n\r\n", 400),
        /* Host, RFC 9112 3.2 */
        C("GET / HTTP/1.1\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        C("GET / HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n", 400),
        /* Expect */
        C("GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n", 417),
        C("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\nx",
          417),
        /* request-target forms, RFC 9112 3.2 */
        C("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        C("POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400),
        C("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        C("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        C("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400),
        /* other garbage */
        C("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        C("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),
        C("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        C("\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    };
#undef C
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        run_t run;
        int got;

        run_cuts(cases[i].in, cases[i].len, NULL, 0, &default_limits, &run);
        got = run.n == 0                              ? -1
              : run.r[run.n - 1].st == GW_PARSE_ERROR ? run.r[run.n - 1].status
              : run.r[run.n - 1].st == GW_PARSE_DONE  ? 200
                                                      : 0;
        if (got != cases[i].status)
            fprintf(stderr, "  case #%zu: \"%s\"\n", i, cases[i].in);
        CHECK_INT(got, cases[i].status);
    }
}

/* "5\r\nhelloXX0\r\n\r\n": llhttp 8.1 skips the two bytes after chunk data
 * unchecked; the module checks them, now or at the start of the next feed. */
static void test_chunk_crlf_every_split(void)
{
    static const char *const bad[] = {
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\n0\r\n\r\n",
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "2\r\nhi\r\n5\r\nhello\n\n0\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        run_t run;
        CHECK(splits_agree(bad[i], &default_limits, &run));
        CHECK_INT(run.n, 1);
        CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
        CHECK_INT(run.r[0].status, 400);
    }
}

/* ---- limits ---- */

static char *repeat(const char *pre, char c, size_t n, const char *post)
{
    size_t a = strlen(pre), b = strlen(post);
    char *s = malloc(a + n + b + 1);

    assert(s);
    memcpy(s, pre, a);
    memset(s + a, c, n);
    memcpy(s + a + n, post, b + 1);
    return s;
}

static void test_limits(void)
{
    gw_proto_limits_t lim = default_limits;
    run_t run;
    char *s;

    /* request line: 256 */
    s = repeat("GET /", 'a', 300, " HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(status_of(s, NULL), 414);
    CHECK(splits_agree(s, &lim, &run));
    free(s);
    s = repeat("GET /", 'a', 200, " HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(status_of(s, NULL), 200);
    free(s);

    /* one field: 128 bytes counted as "name: value" */
    s = repeat("GET / HTTP/1.1\r\nHost: a\r\nX-Big: ", 'v', 200, "\r\n\r\n");
    CHECK_INT(status_of(s, NULL), 431);
    CHECK(splits_agree(s, &lim, &run));
    free(s);
    s = repeat("GET / HTTP/1.1\r\nHost: a\r\nX-", 'n', 200, ": v\r\n\r\n");
    CHECK_INT(status_of(s, NULL), 431);
    free(s);
    s = repeat("GET / HTTP/1.1\r\nHost: a\r\nX-Big: ", 'v', 100, "\r\n\r\n");
    CHECK_INT(status_of(s, NULL), 200);
    free(s);

    /* field count: 16 */
    {
        char in[2048];
        size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 0; i < 15; i++)
            n += (size_t)snprintf(in + n, sizeof(in) - n, "X-%d: v\r\n", i);
        snprintf(in + n, sizeof(in) - n, "\r\n");
        CHECK_INT(status_of(in, NULL), 200);
        snprintf(in + n, sizeof(in) - n, "X-16: v\r\n\r\n");
        CHECK_INT(status_of(in, NULL), 431);
        CHECK(splits_agree(in, &lim, &run));
    }

    /* header block: 1024, with each field under the field limit */
    {
        char in[4096];
        size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
        lim.fields = 100;
        for (int i = 0; i < 12; i++)
            n += (size_t)snprintf(in + n, sizeof(in) - n,
                                  "X-%02d: 0123456789012345678901234567890123456789"
                                  "0123456789012345678901234567890123456789\r\n",
                                  i);
        snprintf(in + n, sizeof(in) - n, "\r\n");
        CHECK_INT(status_of(in, &lim), 431);
        CHECK(splits_agree(in, &lim, &run));
        lim.headers = 4096;
        CHECK_INT(status_of(in, &lim), 200);
        lim = default_limits;
    }

    /* body: 1000 */
    s = repeat("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 'b', 1001, "");
    CHECK_INT(status_of(s, NULL), 413);
    free(s);
    s = repeat("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n", 'b', 1000, "");
    CHECK_INT(status_of(s, NULL), 200);
    free(s);
    CHECK_INT(
        status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999\r\n\r\n", NULL),
        413);
    {
        char in[4096];
        size_t n = (size_t)snprintf(
            in, sizeof(in), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (int i = 0; i < 10; i++) {
            n += (size_t)snprintf(in + n, sizeof(in) - n, "64\r\n");
            memset(in + n, 'c', 100);
            n += 100;
            n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
        }
        snprintf(in + n, sizeof(in) - n, "0\r\n\r\n");
        CHECK_INT(status_of(in, NULL), 200); /* exactly 1000 */
        snprintf(in + n, sizeof(in) - n, "1\r\nc\r\n0\r\n\r\n");
        CHECK_INT(status_of(in, NULL), 413);
        CHECK(splits_agree(in, &lim, &run));
    }
    s = repeat("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n", 'c',
               1001, "");
    CHECK_INT(status_of(s, NULL), 413);
    free(s);
    /* A chunk that cannot fit is refused at its size line, before its data. */
    run_str("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3E9\r\n",
            &default_limits, &run);
    CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
    CHECK_INT(run.r[0].status, 413);
    CHECK_INT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3E8\r\n",
                        NULL),
              0); /* 1000 fits: waits for the data */

    /* A chunk-size line (size, extensions, CR) is a field's size at most
     * (128 here), whatever makes it long, ended or not; at every split. */
    {
        static const char *const pre =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        char in[1024];
        int n;

        n = snprintf(in, sizeof(in), "%s1;x=%0123d\r\nx\r\n0\r\n\r\n", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].st, GW_PARSE_DONE);
        CHECK_STR(run.r[0].body, "x");
        n = snprintf(in, sizeof(in), "%s1;x=%0124d\r\nx\r\n0\r\n\r\n", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
        CHECK_INT(run.r[0].status, 400);
        /* leading zeros, in the second chunk's line, and in the last one's */
        n = snprintf(in, sizeof(in), "%s2\r\nab\r\n%0126d1\r\nx\r\n0\r\n\r\n", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].st, GW_PARSE_DONE);
        CHECK_STR(run.r[0].body, "abx");
        n = snprintf(in, sizeof(in), "%s2\r\nab\r\n%0127d1\r\nx\r\n0\r\n\r\n", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].status, 400);
        n = snprintf(in, sizeof(in), "%s2\r\nab\r\n0;e=%0200d\r\n\r\n", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].status, 400);
        /* a line that never ends is refused as it grows, not at its end */
        n = snprintf(in, sizeof(in), "%s1;x=%0500d", pre, 0);
        CHECK(splits_agree_n(in, (size_t)n, &lim, &run));
        CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
        CHECK_INT(run.r[0].status, 400);
    }
}

/* ---- semantics ---- */

static void test_underscore_headers_dropped(void)
{
    result_t *r = parse1("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n"
                         "X-Forwarded-For: 5.6.7.8\r\n\r\n");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_INT(r->nheaders, 2);
    CHECK_STR(r->headers, "Host=a\nX-Forwarded-For=5.6.7.8\n");
    /* A Host spelt with '_' is not a Host. */
    CHECK_INT(status_of("GET / HTTP/1.1\r\nHo_st: a\r\n\r\n", NULL), 400);
    /* Nor does a Transfer_Encoding make a body. */
    r = parse1("GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: gzip\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK(!r->is_chunked);
}

static void test_asterisk_target(void)
{
    result_t *r = parse1("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->method, "OPTIONS");
    CHECK_STR(r->target, "*");
    CHECK_STR(r->path, "");
    CHECK_INT(status_of("GET * HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 400);
    CHECK_INT(status_of("HEAD * HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 400);
    CHECK_INT(status_of("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 400);
    CHECK_INT(status_of("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 200);
}

static void test_target_split(void)
{
    result_t *r = parse1("GET /a/b?x=1&y=%20#frag HTTP/1.1\r\nHost: h\r\n\r\n");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->authority, ""); /* origin-form: Host names the host */
    CHECK_STR(r->path, "/a/b");
    CHECK_STR(r->query, "x=1&y=%20");

    r = parse1("GET http://example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->target, "http://example.com:8080/a/b?x=1");
    CHECK_STR(r->path, "/a/b");
    CHECK_STR(r->query, "x=1");
    CHECK_STR(r->authority, "example.com:8080"); /* RFC 9112 3.2.2: it names the host */

    r = parse1("GET http://[::1]:81?q HTTP/1.1\r\nHost: other\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->authority, "[::1]:81");
    CHECK_STR(r->path, "/"); /* RFC 9112 3.2.2: an empty path is "/" */
    CHECK_STR(r->query, "q");

    r = parse1("GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_ERROR);
    CHECK_INT(r->status, 400); /* RFC 9110 4.2.4: userinfo */

    r = parse1("GET HTTPS://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->path, "/");
    CHECK_STR(r->query, "q");

    r = parse1("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->target, "http://example.com");
    CHECK_STR(r->path, "/");
    CHECK_STR(r->query, "");

    r = parse1("GET /? HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_STR(r->path, "/");
    CHECK_STR(r->query, "");
}

/* RFC 9112 3.2: 400 for an invalid Host (uri-host [":" port], RFC 3986
 * 3.2.2) and for an absolute-form target whose authority is not one; an
 * empty Host is valid (SERVER_NAME then names the server, 3.3). At every
 * split, HTTP/1.1 and 1.0 alike. */
static void test_host_syntax(void)
{
    static const char *const good[] = {
        "a", "example.com", "example.com:8080", "example.com:", "1.2.3.4", "1.2.3.4:80",
        "999.1.1.1", "[::1]", "[::1]:81", "[2001:db8::1]:", "[::ffff:1.2.3.4]", "[v1.x:y]",
        "[V1f.a]", "a-b_c~d", "a,b", "a;b=c", "!$&'()*+", "%41.example", "%c3%a9t%C3%A9.fr",
        "",
    };
    static const char *const bad[] = {
        "a b", "a/b", "evil.com/../", "a@b", "%00", "%1f", "%7f", "a%0", "a%zz", "a\\b",
        "a\"b", "a{b}", "a<b", "x:y:z", "a:b", "a:80:", ":80", ":", "[::1", "]", "[", "[]",
        "[::1]x", "[::1]:x", "[::1]]", "[1.2.3.4]", "[::1%eth0]", "[v.x]", "[v1.]", "[vx.y]",
        "[v1x]", "a\tb", "\x80",
    };
    char in[512];
    run_t run;
    int n;

    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        for (int minor = 0; minor <= 1; minor++) {
            n = snprintf(in, sizeof(in), "GET /p HTTP/1.%d\r\nHost: %s\r\n\r\n", minor, good[i]);
            if (!splits_agree_n(in, (size_t)n, &default_limits, &run) ||
                run.r[0].st != GW_PARSE_DONE)
                fprintf(stderr, "  Host: \"%s\" HTTP/1.%d\n", good[i], minor);
            CHECK_INT(run.r[0].st, GW_PARSE_DONE);
        }
        if (!good[i][0])
            continue;
        n = snprintf(in, sizeof(in), "GET http://%s/p?q HTTP/1.1\r\nHost: x\r\n\r\n", good[i]);
        if (!splits_agree_n(in, (size_t)n, &default_limits, &run) || run.r[0].st != GW_PARSE_DONE)
            fprintf(stderr, "  authority \"%s\"\n", good[i]);
        CHECK_INT(run.r[0].st, GW_PARSE_DONE);
        CHECK_STR(run.r[0].authority, good[i]);
        CHECK_STR(run.r[0].path, "/p");
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        for (int minor = 0; minor <= 1; minor++) {
            n = snprintf(in, sizeof(in), "GET /p HTTP/1.%d\r\nHost: %s\r\n\r\n", minor, bad[i]);
            if (!splits_agree_n(in, (size_t)n, &default_limits, &run) ||
                run.r[0].status != 400)
                fprintf(stderr, "  Host: \"%s\" HTTP/1.%d\n", bad[i], minor);
            CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
            CHECK_INT(run.r[0].status, 400);
        }
        if (strchr(bad[i], '/'))
            continue; /* in a URL, the authority ends there: "http://a/b/p" is fine */
        n = snprintf(in, sizeof(in), "GET http://%s/p HTTP/1.1\r\nHost: x\r\n\r\n", bad[i]);
        if (!splits_agree_n(in, (size_t)n, &default_limits, &run) || run.r[0].status != 400)
            fprintf(stderr, "  authority \"%s\"\n", bad[i]);
        CHECK_INT(run.r[0].st, GW_PARSE_ERROR);
        CHECK_INT(run.r[0].status, 400);
    }
    /* the authority is checked, and the Host it replaces is still one */
    CHECK_INT(status_of("GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n", NULL), 400);
    CHECK_INT(status_of("GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n", NULL), 200);
    CHECK_INT(status_of("GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 400);
    /* an empty Host is one Host: a second is still refused */
    CHECK_INT(status_of("GET / HTTP/1.1\r\nHost:\r\nHost: a\r\n\r\n", NULL), 400);
    result_t *r = parse1("GET / HTTP/1.1\r\nHost: \r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK_INT(r->host, 0);
    CHECK_STR(r->headers, "Host=\n");
}

static void test_expect(void)
{
    run_t run;
    result_t *r = parse1("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                         "Content-Length: 3\r\n\r\nabc");

    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK(r->expect_continue);
    CHECK_STR(r->body, "abc");
    r = parse1("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-CONTINUE\r\n"
               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK(r->expect_continue);
    /* Nothing to continue to without a body. */
    r = parse1("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
    CHECK_INT(r->st, GW_PARSE_DONE);
    CHECK(!r->expect_continue);
    r = parse1("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
    CHECK(!r->expect_continue);

    /* The caller answers 100 Continue after HEAD, before any body byte. */
    run_str("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            &default_limits, &run);
    CHECK_INT(run.n, 1);
    CHECK_INT(run.r[0].st, GW_PARSE_AGAIN);
    CHECK_INT(run.r[0].nhead, 1);

    CHECK_INT(status_of("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", NULL), 417);
    CHECK_INT(status_of("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\n"
                        "Content-Length: 1\r\n\r\nx",
                        NULL),
              417);
}

static void test_head_then_body_feeds(void)
{
    /* HEAD comes back with *used at the end of the head; the body follows
     * from there, in the same feed's leftovers or in later ones. */
    const char *in = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd";
    gw_http1_t h;
    gw_req_t req;
    size_t used, head = strlen(in) - 4;
    char *buf = strdup(in);

    assert(buf);
    gw_http1_init(&h, &default_limits, &body_env);
    gw_req_init(&req, &arena_pool);
    CHECK_INT(gw_http1_feed(&h, &req, buf, 0, strlen(buf), &used), GW_PARSE_HEAD);
    CHECK_INT(used, head);
    CHECK_INT(req.content_length, 4);
    CHECK_INT(req.body.len, 0);
    CHECK_INT(gw_http1_feed(&h, &req, buf, head, 2, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 2);
    CHECK_INT(gw_http1_feed(&h, &req, buf, head + 2, 0, &used), GW_PARSE_AGAIN);
    CHECK_INT(used, 0);
    CHECK_INT(gw_http1_feed(&h, &req, buf, head + 2, 2, &used), GW_PARSE_DONE);
    CHECK_INT(used, 2);
    CHECK_INT(req.body.len, 4);
    CHECK(!memcmp(req.body.mem.data, "abcd", 4));
    gw_req_reset(&req, &body_env);
    free(buf);
}

/* ---- known bugs (see KNOWN_BUG) ---- */

static void test_known_bugs(void)
{
    run_t run;
    char *s;

    /* An obs-fold after an empty or all-blank first line of a value is
     * accepted and joined: the contiguity check in on_header_value() skips
     * a value whose first piece was empty. With Transfer-Encoding or
     * Content-Length this frames the body from a folded header, which a
     * front end that rejects or keeps obs-fold reads differently. */
    CHECK_THAT(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n 2\r\n\r\n", NULL) == 400,
              "obs-fold after an empty value is accepted");
    CHECK_THAT(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: \r\n 2\r\n\r\n", NULL) == 400,
              "obs-fold after an all-blank value is accepted");
    CHECK_THAT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
                        "0\r\n\r\n",
                        NULL) == 400,
              "folded Transfer-Encoding frames a chunked body");
    CHECK_THAT(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 3\r\n\r\nabc", NULL) ==
                  400,
              "folded Content-Length frames a body");

    /* RFC 9110 5.1: a field name is a token, one or more tchar. llhttp 8.1
     * takes a line starting with ':' and the module keeps a header with an
     * empty name (the WSGI environ then gets "HTTP_"). */
    CHECK_THAT(status_of("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", NULL) == 400,
              "empty header name is accepted");

    /* Head bytes that llhttp skips without a callback are counted by no
     * limit: OWS before a field value, blank lines before the request line,
     * extra spaces in the request line. conn.c keeps the whole head in the
     * read buffer, so one connection grows it without bound until the header
     * timeout. */
    s = repeat("GET / HTTP/1.1\r\nHost: a\r\nX:", ' ', 100000, "v\r\n\r\n");
    CHECK_THAT(status_of(s, NULL) == 431, "OWS before a field value escapes the header limits");
    free(s);
    s = repeat("GET", ' ', 100000, "/ HTTP/1.1\r\nHost: a\r\n\r\n");
    run_str(s, &default_limits, &run);
    CHECK_THAT(run.r[0].st == GW_PARSE_ERROR, "spaces in the request line escape the 414 limit");
    free(s);
    s = malloc(200001);
    for (int i = 0; i < 100000; i++)
        memcpy(s + 2 * i, "\r\n", 2);
    s[200000] = '\0';
    run_str(s, &default_limits, &run);
    CHECK_THAT(run.n == 1 && run.r[0].st == GW_PARSE_ERROR,
              "blank lines before the request line are buffered without limit");
    free(s);

    /* RFC 9112 7.1: the last chunk and the trailer section end in CRLF. The
     * bare-LF check covers the head only and llhttp 8.1 takes "0\r\n\n", so
     * the message ends one byte early and the rest is the next request. */
    run_str("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"
            "GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
            &default_limits, &run);
    CHECK_THAT(run.r[0].st == GW_PARSE_ERROR && run.r[0].status == 400,
              "bare LF ends a chunked body");
    CHECK_THAT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "0\r\nX: a\r\n\n",
                        NULL) == 400,
              "bare LF ends a trailer section");
    CHECK_THAT(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "0\r\nX: a\r\n b\r\n\r\n",
                        NULL) == 400,
              "obs-fold in a trailer is accepted");

    /* check_bare_lf() takes an LF at the start of its scan window as
     * following the previous feed's last byte, also for the second LF of
     * "\n\n": when the previous read ended in CR, a bare LF right after an
     * LF passes. Here the head ends "\r\n\n": rejected in one read,
     * accepted when the read ends after "Host: a\r". */
    {
        const char *in = "GET / HTTP/1.1\r\nHost: a\r\n\n";
        size_t cut = strlen("GET / HTTP/1.1\r\nHost: a\r");
        CHECK_INT(status_of(in, NULL), 400);
        run_cuts(in, strlen(in), &cut, 1, &default_limits, &run);
        CHECK_THAT(run.r[0].st == GW_PARSE_ERROR && run.r[0].status == 400,
                  "bare LF after LF passes when the previous read ended in CR");
    }

    /* RFC 9110 10.1.1: a server MUST ignore 100-continue from HTTP/1.0. */
    run_str("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            &default_limits, &run);
    CHECK_THAT(run.r[0].st == GW_PARSE_DONE && !run.r[0].expect_continue,
              "Expect: 100-continue honoured for HTTP/1.0");

    /* The bare-LF check runs after llhttp_execute(), so an error that a
     * callback raises later in the same feed wins: the status depends on
     * where reads end (one-shot 417, split after the request line 400). */
    KNOWN_BUG(splits_agree("GET / HTTP/1.1\nHost: a\r\nExpect: x\r\n\r\n", &default_limits, &run),
              "error status depends on read boundaries after a bare LF");

    /* llhttp takes RTSP/1.0 as a protocol; the module reports it as 1.0. */
    CHECK_THAT(status_of("GET / RTSP/1.0\r\n\r\n", NULL) >= 400, "RTSP/1.0 accepted as HTTP/1.0");
}

int main(void)
{
    gw_bufpool_init(&body_pool, 4096, 4);

    test_simple_get();
    test_http10_no_host();
    test_headers_as_spans();
    test_pipelined();
    test_post_content_length();
    test_post_body_to_file();
    test_body_file_batches();
    test_post_chunked();
    test_every_split();
    test_error_statuses();
    test_chunk_crlf_every_split();
    test_limits();
    test_underscore_headers_dropped();
    test_asterisk_target();
    test_target_split();
    test_host_syntax();
    test_expect();
    test_head_then_body_feeds();
    test_known_bugs();

    gw_bufpool_dispose(&body_pool);
    gw_arena_pool_dispose(&arena_pool);
    if (n_known)
        printf("%d known bug(s) reported above, not counted\n", n_known);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
