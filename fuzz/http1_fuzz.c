/* libFuzzer target for the HTTP/1.1 request parser: bytes go straight into
 * gw_http1_feed(), driven the way conn.c's process_input() and
 * enter_keepalive() drive it (append, feed from the parsed offset, drop body
 * bytes after AGAIN in the body, reset and compact between pipelined
 * requests). No sockets, no Python.
 *
 * Input: two control bytes, then the bytes "read" from the client.
 *   byte 0, bits 0-3: largest read, 0 = everything in one read, k = 2^(k-1)
 *   byte 0, bit 4:    limits, 0 = tight (every limit path), 1 = roomier
 *   byte 1:           seed for the read sizes, each in 1 .. largest
 * Each read gets a fresh exact-size buffer, so that ASan catches a read past
 * the fed bytes or a pointer kept across feeds.
 *
 * Besides the sanitizers, it aborts when
 *   - a parsed request breaks an invariant (spans inside the head, header
 *     names are tokens without '_', values hold no CR/LF/NUL, limits hold,
 *     the body matches its framing, HEAD comes exactly when a body follows);
 *   - an error status is not one the module documents;
 *   - a request body's temp file outlives the input;
 *   - a request parsed both in one read and in the chosen reads comes out
 *     different (method, target, headers, flags, body).
 * Build with -DGW_HTTP1_FUZZ_STRICT to also check what src/proto/http1.c gets wrong
 * today (see test_known_bugs() in http1_test.c): no empty header name, the
 * "name: value" layout around every header span, head size bounded by the
 * limits, and the same requests accepted and rejected, with the same
 * statuses, whatever the read boundaries. */
#include "proto/http1.c"
#include "proto/request.c"

#include <stdio.h>
#include <stdlib.h>

#include "feed_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_REQS = 32 };

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "http1_fuzz: " __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

typedef struct outcome {
    int st;        /* GW_PARSE_DONE, GW_PARSE_ERROR, or GW_PARSE_AGAIN: input ended */
    int status;    /* with ERROR */
    uint64_t hash; /* every parsed field and the body, with DONE */
} outcome_t;

typedef struct run {
    int n;
    outcome_t o[MAX_REQS];
} run_t;

static const gw_proto_limits_t tight = {
    .request_line = 64,
    .field_size = 48,
    .fields = 6,
    .headers = 160,
    .body = 96,
};

static const gw_proto_limits_t roomy = {
    .request_line = 1024,
    .field_size = 512,
    .fields = 32,
    .headers = 4096,
    .body = 4096,
};

static gw_bufpool_t body_pool;
static gw_arena_pool_t arena_pool;
/* A small memory limit sends most bodies to a temp file. */
static gw_body_env_t body_env = {&body_pool, 16, "/tmp"};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_span(uint64_t h, const char *base, gw_span_t s)
{
    h = fnv(h, &s.len, sizeof(s.len));
    return fnv(h, base + s.off, s.len);
}

static uint32_t next_rand(uint32_t *x)
{
    /* xorshift32; a zero state would stay zero */
    uint32_t v = *x ? *x : 0x9e3779b9u;
    v ^= v << 13;
    v ^= v >> 17;
    v ^= v << 5;
    return *x = v;
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_span(gw_span_t s, size_t head_len, const char *what)
{
    if ((uint64_t)s.off + s.len > head_len)
        FAIL("%s span %u+%u outside the %zu-byte head", what, s.off, s.len, head_len);
}

/* Checks a request that came back DONE and hashes what it holds. */
static uint64_t check_done(const gw_req_t *r, const char *base, size_t head_len, int heads,
                           const gw_proto_limits_t *lim)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    bool has_body = r->is_chunked || r->content_length > 0;
    char chunk[512];

    check_span(r->method, head_len, "method");
    check_span(r->target, head_len, "target");
    if (r->method.len == 0 || r->target.len == 0)
        FAIL("empty method or target");
    /* An absolute-form target without a path has "/" (RFC 9112 3.2.2): the
     * '/' of the request line's " HTTP/", right after the target. */
    if (r->authority.len && r->path.len == 1 && r->path.off == r->target.off + r->target.len + 5) {
        if (base[r->path.off] != '/')
            FAIL("the empty path's \"/\" is 0x%02x", (unsigned char)base[r->path.off]);
    } else if (r->path.len && (r->path.off < r->target.off ||
                               r->path.off + r->path.len > r->target.off + r->target.len)) {
        FAIL("path outside the target");
    }
    if (r->authority.len && (r->path.len == 0 || base[r->path.off] != '/'))
        FAIL("absolute-form target without a path");
    if (r->query.len && (r->query.off < r->target.off ||
                         r->query.off + r->query.len > r->target.off + r->target.len))
        FAIL("query outside the target");
    if (r->http_major != 1 || r->http_minor > 1)
        FAIL("HTTP/%u.%u accepted", r->http_major, r->http_minor);
    if (r->nheaders > lim->fields)
        FAIL("%u header fields, limit %llu", r->nheaders, (unsigned long long)lim->fields);
    if (r->host >= (int32_t)r->nheaders || (r->host < 0 && r->http_minor == 1))
        FAIL("host index %d with %u headers, HTTP/1.%u", r->host, r->nheaders, r->http_minor);
    if (r->host >= 0 && (r->headers[r->host].name.len != 4 ||
                         strncasecmp(base + r->headers[r->host].name.off, "host", 4) != 0))
        FAIL("host index points at another field");
    for (uint32_t i = 0; i < r->nheaders; i++) {
        gw_span_t n = r->headers[i].name, v = r->headers[i].value;
        check_span(n, head_len, "header name");
        check_span(v, head_len, "header value");
#ifdef GW_HTTP1_FUZZ_STRICT
        if (n.len == 0)
            FAIL("empty header name");
#endif
        for (uint32_t k = 0; k < n.len; k++)
            if (!is_tchar((unsigned char)base[n.off + k]) || base[n.off + k] == '_')
                FAIL("header name byte 0x%02x", (unsigned char)base[n.off + k]);
        for (uint32_t k = 0; k < v.len; k++) {
            char c = base[v.off + k];
            if (c == '\r' || c == '\n' || c == '\0')
                FAIL("header value byte 0x%02x", (unsigned char)c);
        }
        if (v.len && (base[v.off] == ' ' || base[v.off] == '\t' || base[v.off + v.len - 1] == ' ' ||
                      base[v.off + v.len - 1] == '\t'))
            FAIL("header value not trimmed");
#ifdef GW_HTTP1_FUZZ_STRICT
        /* The bytes between the spans must be ":" OWS, and OWS CRLF after.
         * (An empty value's offset may point anywhere near; skip it.) */
        if (base[n.off + n.len] != ':')
            FAIL("no ':' after header name %u", i);
        if (v.len) {
            uint32_t k = v.off + v.len;
            while (k < head_len && (base[k] == ' ' || base[k] == '\t'))
                k++;
            if (k + 1 >= head_len || base[k] != '\r' || base[k + 1] != '\n')
                FAIL("header value not followed by CRLF");
            for (k = n.off + n.len + 1; k < v.off; k++)
                if (base[k] != ' ' && base[k] != '\t')
                    FAIL("byte 0x%02x between header name and value", (unsigned char)base[k]);
        }
#endif
        h = fnv_span(h, base, n);
        h = fnv_span(h, base, v);
    }
#ifdef GW_HTTP1_FUZZ_STRICT
    if (head_len > lim->request_line + lim->headers + 2)
        FAIL("a %zu-byte head passed limits %llu + %llu", head_len,
             (unsigned long long)lim->request_line, (unsigned long long)lim->headers);
#endif
    if (r->body.len > lim->body)
        FAIL("body of %llu bytes, limit %llu", (unsigned long long)r->body.len,
             (unsigned long long)lim->body);
    if (r->is_chunked && r->content_length != -1)
        FAIL("chunked with a Content-Length");
    if (!r->is_chunked && r->content_length >= 0 && r->body.len != (uint64_t)r->content_length)
        FAIL("body of %llu bytes, Content-Length %lld", (unsigned long long)r->body.len,
             (long long)r->content_length);
    if (!r->is_chunked && r->content_length < 0 && r->body.len)
        FAIL("body without framing");
    if ((r->body.fd >= 0) != (r->body.len > body_env.mem_limit))
        FAIL("body of %llu bytes, fd %d", (unsigned long long)r->body.len, r->body.fd);
    if (r->expect_continue && !has_body)
        FAIL("100-continue without a body");
    if (heads != (has_body ? 1 : 0))
        FAIL("HEAD returned %d times, body %d", heads, has_body);

    h = fnv_span(h, base, r->method);
    h = fnv_span(h, base, r->target);
    h = fnv_span(h, base, r->path);
    h = fnv_span(h, base, r->query);
    {
        uint64_t flags[] = {r->http_major,
                            r->http_minor,
                            r->is_head,
                            r->is_chunked,
                            r->keep_alive,
                            r->expect_continue,
                            (uint64_t)r->content_length,
                            (uint64_t)(int64_t)r->host,
                            r->nheaders,
                            r->body.len};
        h = fnv(h, flags, sizeof(flags));
    }
    for (uint64_t off = 0; off < r->body.len;) {
        ssize_t got = gw_body_read(&r->body, off, chunk, sizeof(chunk));
        if (got <= 0)
            FAIL("gw_body_read at %llu of %llu: %zd", (unsigned long long)off,
                 (unsigned long long)r->body.len, got);
        h = fnv(h, chunk, (size_t)got);
        off += (uint64_t)got;
    }
    return h;
}

/* Delivers in[0..n) in reads of 1..maxread bytes (all at once when maxread
 * is 0) and parses every request, as conn.c would. */
static void run(const uint8_t *in, size_t n, size_t maxread, uint32_t seed,
                const gw_proto_limits_t *lim, run_t *out)
{
    gw_http1_t h;
    gw_req_t req;
    char *buf = NULL;
    size_t len = 0, parsed = 0, head_end = 0, pos = 0;
    bool in_body = false, closed = false;
    int heads = 0;

    out->n = 0;
    gw_http1_init(&h, lim, &body_env);
    gw_req_init(&req, &arena_pool);
    while (pos < n && !closed) {
        size_t add = maxread ? 1 + next_rand(&seed) % maxread : n;
        char *nb;

        if (add > n - pos)
            add = n - pos;
        if (!(nb = malloc(len + add)))
            FAIL("out of memory");
        if (len)
            memcpy(nb, buf, len);
        memcpy(nb + len, in + pos, add);
        free(buf);
        buf = nb;
        len += add;
        pos += add;
        for (;;) {
            size_t used = 0;
            gw_parse_t st = gw_http1_feed(&h, &req, buf, parsed, len - parsed, &used);

            if (used > len - parsed)
                FAIL("used %zu of %zu", used, len - parsed);
            parsed += used;
            if (st == GW_PARSE_AGAIN) {
                if (parsed != len)
                    FAIL("AGAIN with %zu bytes unused", len - parsed);
                if (in_body)
                    len = parsed = head_end; /* the body store has them */
                break;
            }
            if (st == GW_PARSE_HEAD) {
                if (in_body)
                    FAIL("HEAD twice for one request");
                heads++;
                head_end = parsed;
                in_body = true;
                continue;
            }
            if (st == GW_PARSE_ERROR) {
                switch (h.status) {
                case 400:
                case 413:
                case 414:
                case 417:
                case 431:
                case 505:
                    break;
                default:
                    FAIL("error status %d (%s)", h.status, h.reason ? h.reason : "");
                }
                if (!h.reason)
                    FAIL("error %d without a reason", h.status);
                out->o[out->n++] = (outcome_t){GW_PARSE_ERROR, h.status, 0};
                closed = true;
                break;
            }
            if (st != GW_PARSE_DONE)
                FAIL("feed returned %d", (int)st);
            out->o[out->n++] = (outcome_t){
                GW_PARSE_DONE, 0, check_done(&req, buf, in_body ? head_end : parsed, heads, lim)};
            if (!req.keep_alive || out->n == MAX_REQS) {
                closed = true; /* gw_conn_finish() closes */
                break;
            }
            /* enter_keepalive() */
            gw_req_reset(&req, &body_env);
            gw_http1_reset(&h);
            memmove(buf, buf + parsed, len - parsed);
            len -= parsed;
            parsed = head_end = 0;
            in_body = false;
            heads = 0;
            if (len == 0)
                break;
        }
    }
    if (!closed && (len > 0 || in_body))
        out->o[out->n++] = (outcome_t){GW_PARSE_AGAIN, 0, 0};
    gw_req_reset(&req, &body_env);
    free(buf);
}

/* One read against the chosen reads. Requests both parsed must be equal.
 * Strict: also the same number of requests, accepted and rejected alike,
 * with the same statuses. */
static void compare(const run_t *whole, const run_t *pieces)
{
#ifdef GW_HTTP1_FUZZ_STRICT
    if (whole->n != pieces->n)
        FAIL("%d requests in one read, %d in pieces", whole->n, pieces->n);
#endif
    for (int i = 0; i < whole->n && i < pieces->n; i++) {
        const outcome_t *a = &whole->o[i], *b = &pieces->o[i];
#ifdef GW_HTTP1_FUZZ_STRICT
        if (a->st != b->st || a->status != b->status)
            FAIL("request %d: one read gives %d/%d, pieces give %d/%d", i, a->st, a->status, b->st,
                 b->status);
#else
        if (a->st != b->st)
            return; /* a known bug (see test_known_bugs()); later requests may shift */
#endif
        if (a->st == GW_PARSE_DONE && a->hash != b->hash)
            FAIL("request %d: parsed differently in one read and in pieces", i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int base_fd = -1;
    static run_t whole, pieces;
    const gw_proto_limits_t *lim;
    size_t maxread;
    int fd;
    char leak[HARNESS_FD_WHAT_MAX];

    if (size < 2)
        return 0;
    if (base_fd < 0) {
        gw_bufpool_init(&body_pool, 4096, 4);
        base_fd = harness_lowest_free_fd();
    }
    maxread = (data[0] & 0x0f) ? (size_t)1 << ((data[0] & 0x0f) - 1) : 0;
    lim = (data[0] & 0x10) ? &roomy : &tight;

    run(data + 2, size - 2, maxread, data[1], lim, &pieces);
    if (maxread) {
        run(data + 2, size - 2, 0, 0, lim, &whole);
        compare(&whole, &pieces);
    }

    /* Hand everything back, so leaks show per input. */
    gw_bufpool_dispose(&body_pool);
    gw_arena_pool_dispose(&arena_pool);
    /* A leaked body file takes the lowest free descriptor. Something else
     * may too (libFuzzer's symbolizer pipe): look closer, then move on. */
    if ((fd = harness_lowest_free_fd()) != base_fd) {
        if (harness_find_deleted_file(body_env.tmpdir, leak, sizeof(leak)))
            FAIL("file descriptor leak: %s", leak);
        base_fd = fd;
    }
    return 0;
}
