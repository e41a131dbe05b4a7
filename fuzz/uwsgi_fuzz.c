/* libFuzzer target for the uwsgi packet parser: bytes go straight into
 * gw_uwsgi_feed(), driven the way conn.c's process_input() and do_read()
 * drive it (append, feed from the parsed offset, keep the packet header and
 * variables in place, drop body bytes after AGAIN in the body; one request
 * per connection, as nginx sends them). No sockets, no Python.
 *
 * Input: two control bytes, then the bytes "read" from nginx.
 *   byte 0, bits 0-3: largest read, 0 = everything in one read, k = 2^(k-1)
 *   byte 0, bit 4:    limits, 0 = tight (--buffer-size 256, body 96),
 *                     1 = roomy (the protocol's 65535, body 4096)
 *   byte 1:           seed for the read sizes, each in 1 .. largest
 * Each read gets a fresh exact-size buffer, so that ASan catches a read past
 * the fed bytes or a pointer kept across feeds. The body memory limit is 16
 * bytes, so most bodies go through a temp file.
 *
 * Besides the sanitizers, it aborts when
 *   - the outcome (DONE, ERROR with its status, or waiting for more) is not
 *     what an independent reading of the packet layout below expects;
 *   - a parsed request breaks an invariant: the variables tile the block
 *     exactly and all land in req->headers in order, method / target / path
 *     / query / version / is_head / content_length come from the last of
 *     their variables, the body is the CONTENT_LENGTH bytes right after the
 *     block and nothing past them is consumed, HEAD comes exactly when a
 *     body follows, the body is in a file exactly when past the memory limit;
 *   - an error status is not 0, 413, 500 or 503, or comes without a reason;
 *   - a request body's temp file outlives the input;
 *   - one read and the chosen reads come out different. The second run
 *     reuses the parser and request after gw_uwsgi_reset() and
 *     gw_req_reset(), so a reset that forgets state shows up here too. */
#include "proto/uwsgi.c"
#include "proto/request.c"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "feed_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "uwsgi_fuzz: " __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

static const gw_proto_limits_t tight = {.buffer_size = 256, .body = 96};
static const gw_proto_limits_t roomy = {.buffer_size = 65535, .body = 4096};

static gw_bufpool_t body_pool;
static gw_arena_pool_t arena_pool;
/* A small memory limit sends most bodies to a temp file. */
static gw_body_env_t body_env = {&body_pool, 16, "/tmp"};

/* What the protocol makes of the input, read here without uwsgi.c. */
typedef struct expect {
    gw_parse_t st; /* GW_PARSE_DONE, GW_PARSE_ERROR, or GW_PARSE_AGAIN: more bytes needed */
    int status;    /* with ERROR: 0 (not the protocol) or 413 */
    size_t head;   /* 4 + the block size, once the block is in and valid; else 0 */
    int64_t clen;  /* CONTENT_LENGTH, -1 when none */
} expect_t;

typedef struct outcome {
    gw_parse_t st;   /* GW_PARSE_DONE, GW_PARSE_ERROR, or GW_PARSE_AGAIN: input ended */
    int status;      /* with ERROR */
    int heads;       /* how many times HEAD came back */
    size_t consumed; /* the sum of *used */
    char reason[sizeof(((gw_uwsgi_t *)0)->reason)];
} outcome_t;

static uint32_t u16_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static bool name_is(const uint8_t *in, gw_span_t k, const char *lit)
{
    size_t n = strlen(lit);
    return k.len == n && memcmp(in + k.off, lit, n) == 0;
}

/* The packet: modifier1 (0), uint16 LE block size (1 .. --buffer-size),
 * modifier2; then variables (uint16 LE key length, key (not empty), uint16
 * LE value length, value) filling exactly the block, REQUEST_METHOD among
 * them and not empty; then CONTENT_LENGTH (empty, or at most 18 digits, at
 * most the body limit) body bytes. */
static void reference(const uint8_t *in, size_t n, const gw_proto_limits_t *lim, expect_t *e)
{
    size_t size, end, pos;
    bool has_method = false;

    e->st = GW_PARSE_AGAIN;
    e->status = 0;
    e->head = 0;
    e->clen = -1;
    if (n < 4)
        return;
    size = u16_at(in + 1);
    if (in[0] != 0 || size == 0 || size > lim->buffer_size)
        goto not_uwsgi;
    end = 4 + size;
    if (n < end)
        return;
    for (pos = 4; pos < end;) {
        gw_span_t k, v;

        if (end - pos < 2)
            goto not_uwsgi;
        k.off = (uint32_t)pos + 2;
        k.len = u16_at(in + pos);
        if (k.len == 0 || end - k.off < (size_t)k.len + 2)
            goto not_uwsgi;
        v.off = k.off + k.len + 2;
        v.len = u16_at(in + k.off + k.len);
        if (end - v.off < v.len)
            goto not_uwsgi;
        pos = v.off + v.len;
        if (name_is(in, k, "REQUEST_METHOD"))
            has_method = v.len > 0;
        if (name_is(in, k, "CONTENT_LENGTH") && v.len) {
            if (v.len > 18)
                goto not_uwsgi;
            e->clen = 0;
            for (uint32_t i = 0; i < v.len; i++) {
                if (in[v.off + i] < '0' || in[v.off + i] > '9')
                    goto not_uwsgi;
                e->clen = e->clen * 10 + (in[v.off + i] - '0');
            }
        }
    }
    if (!has_method)
        goto not_uwsgi;
    if (e->clen > 0 && (uint64_t)e->clen > lim->body) {
        e->st = GW_PARSE_ERROR;
        e->status = 413;
        return;
    }
    e->head = end;
    if (e->clen > 0 && n - end < (uint64_t)e->clen)
        return; /* AGAIN, in the body */
    e->st = GW_PARSE_DONE;
    return;
not_uwsgi:
    e->st = GW_PARSE_ERROR;
    e->status = 0;
}

static void check_span(gw_span_t got, gw_span_t want, const char *what, uint32_t i)
{
    if (got.off != want.off || got.len != want.len)
        FAIL("%s %u is %u+%u, want %u+%u", what, i, got.off, got.len, want.off, want.len);
}

/* A request that came back DONE, its head at buf[0 .. e->head). */
static void check_done(const gw_req_t *r, const char *buf, const uint8_t *in, const expect_t *e,
                       int heads, size_t consumed)
{
    gw_span_t method = {0, 0}, uri = {0, 0}, path = {0, 0}, query = {0, 0};
    uint8_t major = 0, minor = 0;
    uint64_t blen = e->clen > 0 ? (uint64_t)e->clen : 0;
    uint32_t i = 0;
    char chunk[512];

    if (memcmp(buf, in, e->head) != 0)
        FAIL("the head changed in the read buffer");
    for (size_t pos = 4; pos < e->head; i++) {
        gw_span_t k, v;

        k.off = (uint32_t)pos + 2;
        k.len = u16_at(in + pos);
        v.off = k.off + k.len + 2;
        v.len = u16_at(in + k.off + k.len);
        pos = v.off + v.len;
        if (i >= r->nheaders)
            FAIL("variable %u of the block is not in req->headers (%u)", i, r->nheaders);
        check_span(r->headers[i].name, k, "variable name", i);
        check_span(r->headers[i].value, v, "variable value", i);
        if (name_is(in, k, "REQUEST_METHOD")) {
            method = v;
        } else if (name_is(in, k, "REQUEST_URI")) {
            uri = v;
        } else if (name_is(in, k, "PATH_INFO")) {
            path = v;
        } else if (name_is(in, k, "QUERY_STRING")) {
            query = v;
        } else if (name_is(in, k, "SERVER_PROTOCOL") && v.len == 8 &&
                   memcmp(in + v.off, "HTTP/", 5) == 0 && isdigit(in[v.off + 5]) &&
                   in[v.off + 6] == '.' && isdigit(in[v.off + 7])) {
            /* HTTP/1.0 and 1.1, and 2.0 or 3.0 when nginx speaks those */
            major = (uint8_t)(in[v.off + 5] - '0');
            minor = (uint8_t)(in[v.off + 7] - '0');
        }
    }
    if (i != r->nheaders)
        FAIL("%u variables in the block, %u in req->headers", i, r->nheaders);
    check_span(r->method, method, "method", 0);
    check_span(r->target, uri.len ? uri : path, "target", 0);
    check_span(r->path, path, "path", 0);
    check_span(r->query, query, "query", 0);
    if (r->is_head != (method.len == 4 && memcmp(in + method.off, "HEAD", 4) == 0))
        FAIL("is_head %d", r->is_head);
    if (r->http_major != major || r->http_minor != minor)
        FAIL("version %u.%u, want %u.%u", r->http_major, r->http_minor, major, minor);
    if (r->content_length != e->clen)
        FAIL("content_length %lld, want %lld", (long long)r->content_length, (long long)e->clen);
    if (!r->has_cgi_fields || !r->is_path_decoded || !r->is_gateway || r->keep_alive ||
        r->is_chunked || r->expect_continue)
        FAIL("flags: has_cgi_fields %d is_path_decoded %d is_gateway %d keep_alive %d "
             "is_chunked %d expect_continue %d", r->has_cgi_fields, r->is_path_decoded,
             r->is_gateway, r->keep_alive, r->is_chunked, r->expect_continue);
    if (heads != (blen > 0))
        FAIL("HEAD returned %d times, body %llu", heads, (unsigned long long)blen);
    if (consumed != e->head + blen)
        FAIL("consumed %zu, head %zu + body %llu", consumed, e->head, (unsigned long long)blen);
    if (r->body.len != blen)
        FAIL("body of %llu bytes, want %llu", (unsigned long long)r->body.len,
             (unsigned long long)blen);
    if ((r->body.fd >= 0) != (r->body.len > body_env.mem_limit))
        FAIL("body of %llu bytes, fd %d", (unsigned long long)r->body.len, r->body.fd);
    for (uint64_t off = 0; off < r->body.len;) {
        ssize_t got = gw_body_read(&r->body, off, chunk, sizeof(chunk));
        if (got <= 0)
            FAIL("gw_body_read at %llu of %llu: %zd", (unsigned long long)off,
                 (unsigned long long)r->body.len, got);
        if (memcmp(chunk, in + e->head + off, (size_t)got) != 0)
            FAIL("body bytes at %llu differ from the input", (unsigned long long)off);
        off += (uint64_t)got;
    }
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

/* Delivers in[0..n) in reads of 1..maxread bytes (all at once when maxread
 * is 0) and parses the request, as conn.c would; checks it against e. */
static void run(gw_uwsgi_t *u, gw_req_t *req, const uint8_t *in, size_t n, size_t maxread,
                uint32_t seed, const expect_t *e, outcome_t *out)
{
    char *buf = NULL;
    size_t len = 0, parsed = 0, head_end = 0, pos = 0;
    bool in_body = false, done = false;
    gw_parse_t st = GW_PARSE_AGAIN;

    memset(out, 0, sizeof(*out));
    while (pos < n && !done) {
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

            st = gw_uwsgi_feed(u, req, buf, parsed, len - parsed, &used);
            if (used > len - parsed)
                FAIL("used %zu of %zu", used, len - parsed);
            parsed += used;
            out->consumed += used;
            if (st == GW_PARSE_AGAIN) {
                if (in_body) {
                    if (parsed != len)
                        FAIL("AGAIN in the body with %zu bytes unused", len - parsed);
                    len = parsed = head_end; /* the body store has them */
                } else if (used) {
                    FAIL("AGAIN in the head after consuming %zu bytes", used);
                }
                break;
            }
            if (st == GW_PARSE_HEAD) {
                if (in_body)
                    FAIL("HEAD twice for one request");
                out->heads++;
                head_end = parsed;
                in_body = true;
                continue;
            }
            if (st != GW_PARSE_DONE && st != GW_PARSE_ERROR)
                FAIL("feed returned %d", (int)st);
            done = true; /* answered, then the connection closes */
            break;
        }
    }

    out->st = st;
    if (st == GW_PARSE_ERROR) {
        out->status = u->status;
        memcpy(out->reason, u->reason, sizeof(out->reason));
        if (u->status != 0 && u->status != 413 && u->status != 500 && u->status != 503)
            FAIL("error status %d (%s)", u->status, u->reason);
        if (!u->reason[0] || !memchr(u->reason, '\0', sizeof(u->reason)))
            FAIL("error %d without a reason", u->status);
    }
    if (st == GW_PARSE_ERROR && u->status == 500) {
        /* The body store failed (a full /tmp): only possible with a body
         * past the memory limit, after HEAD. */
        if (e->head == 0 || e->clen <= (int64_t)body_env.mem_limit || out->heads != 1)
            FAIL("500 (%s) without a body to store", u->reason);
    } else if (st != e->st || (st == GW_PARSE_ERROR && u->status != e->status)) {
        FAIL("outcome %d/%d (%s), the packet layout says %d/%d", st, out->status, out->reason,
             e->st, e->status);
    } else if (st == GW_PARSE_DONE) {
        check_done(req, buf, in, e, out->heads, out->consumed);
    } else if (st == GW_PARSE_AGAIN) {
        /* Waiting: for the block (nothing consumed), or for more body. */
        int heads = e->head ? 1 : 0;
        if (out->heads != heads || out->consumed != (e->head ? n : 0))
            FAIL("waiting with %d HEAD, %zu of %zu bytes consumed", out->heads, out->consumed, n);
    } else if (out->heads != 0) {
        FAIL("error %d after HEAD", out->status);
    }

    /* What the connection does between requests (gw_conn_finish,
     * gw__conn_keepalive). */
    gw_req_reset(req, &body_env);
    gw_uwsgi_reset(u);
    free(buf);
}

static void compare(const outcome_t *whole, const outcome_t *pieces)
{
    if (whole->st == GW_PARSE_ERROR && whole->status == 500)
        return; /* how far the body got before the store failed depends on the reads */
    if (pieces->st == GW_PARSE_ERROR && pieces->status == 500)
        return;
    if (whole->st != pieces->st || whole->status != pieces->status ||
        whole->heads != pieces->heads || whole->consumed != pieces->consumed ||
        strcmp(whole->reason, pieces->reason) != 0)
        FAIL("one read gives %d/%d heads %d consumed %zu (%s), pieces give %d/%d heads %d "
             "consumed %zu (%s)",
             whole->st, whole->status, whole->heads, whole->consumed, whole->reason, pieces->st,
             pieces->status, pieces->heads, pieces->consumed, pieces->reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int base_fd = -1;
    static gw_uwsgi_t u;
    static gw_req_t req;
    const gw_proto_limits_t *lim;
    outcome_t whole, pieces;
    expect_t e;
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

    reference(data + 2, size - 2, lim, &e);
    gw_uwsgi_init(&u, lim, &body_env);
    gw_req_init(&req, &arena_pool);
    run(&u, &req, data + 2, size - 2, maxread, data[1], &e, &pieces);
    if (maxread) {
        run(&u, &req, data + 2, size - 2, 0, 0, &e, &whole);
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
