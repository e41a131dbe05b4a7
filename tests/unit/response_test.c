/* Unit tests of the output queue's ownership rules (out.c): every owner
 * handed over is released exactly once, and every descriptor the queue owns
 * is closed exactly once, whether its bytes were sent, dropped, or never
 * queued; partial writes resume where they stopped, through any transport.
 * And of the response writer's decisions (response.c): framing, keep-alive,
 * the status line's version, HEAD / 204 / 304, bodies held to their length,
 * as bytes. Includes the modules' .c files. */
#include "serve/out.c"
#include "serve/response.c"
#include "serve/transport.c"
#include "proto/request.c"
#include "core/clock.c"

#include "check.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>

static int released[8];

static void on_release(void *owner)
{
    released[(int *)owner - released]++;
}

static void *owner(int i)
{
    return &released[i];
}

static void reset(void)
{
    memset(released, 0, sizeof(released));
}

static int sockpair(int sv[2], int sndbuf)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    if (sndbuf)
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    return 0;
}

static size_t drain(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = recv(fd, buf + got, cap - got, MSG_DONTWAIT)) > 0)
        got += (size_t)n;
    return got;
}

/* The plain transport over fd (one at a time: the tests use one socket). */
static gw_transport_t *plain(int fd)
{
    static gw_transport_t t;
    gw_transport_open_plain(&t, fd);
    return &t;
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static void test_ref_released_once_when_sent(void)
{
    gw_out_t o;
    int sv[2];
    char buf[64];

    reset();
    CHECK(sockpair(sv, 0) == 0);
    gw_out_init(&o, on_release);
    CHECK(gw_out_push_lit(&o, "HTTP/1.1 200 OK\r\n\r\n") == 0);
    CHECK(gw_out_push_ref(&o, "hello", 5, owner(0)) == 0);
    CHECK(gw_out_push_copy(&o, "ab", 2) == 0);
    CHECK_INT(released[0], 0);
    CHECK_INT(gw_out_flush(&o, plain(sv[0])), 0);
    CHECK_INT(released[0], 1);
    CHECK_INT(drain(sv[1], buf, sizeof(buf)), 26);
    CHECK(memcmp(buf, "HTTP/1.1 200 OK\r\n\r\nhelloab", 26) == 0);
    gw_out_discard(&o);
    CHECK_INT(released[0], 1);
    close(sv[0]);
    close(sv[1]);
}

static void test_ref_released_once_when_dropped_or_refused(void)
{
    gw_out_t o;

    reset();
    gw_out_init(&o, on_release);
    CHECK(gw_out_push_ref(&o, "x", 1, owner(0)) == 0);
    CHECK(gw_out_push_ref(&o, "", 0, owner(1)) == 0); /* empty: released at once */
    CHECK_INT(released[1], 1);
    CHECK_INT(o.count, 1);
    while (gw_out_room(&o))
        CHECK(gw_out_push_lit(&o, "y") == 0);
    CHECK_INT(gw_out_push_ref(&o, "z", 1, owner(2)), -ENOBUFS); /* refused: released */
    CHECK_INT(released[2], 1);
    CHECK_INT(gw_out_push_copy(&o, "z", 1), -ENOBUFS);
    CHECK_INT(gw_out_push_copy(&o, "0123456789012345678901234", 25), -EINVAL);
    gw_out_discard(&o);
    CHECK_INT(released[0], 1);
    CHECK_INT(released[1], 1);
    CHECK_INT(released[2], 1);
    CHECK_INT(o.count, 0);
}

static void test_owned_fd_closed_once(void)
{
    gw_out_t o;
    int sv[2], fd;
    char path[] = "/tmp/gw-response-test-XXXXXX", buf[64];

    CHECK((fd = mkstemp(path)) >= 0);
    unlink(path);
    CHECK(write(fd, "0123456789", 10) == 10);
    CHECK(sockpair(sv, 0) == 0);
    gw_out_init(&o, on_release);

    /* sent */
    int a = dup(fd);
    CHECK(gw_out_push_file_own(&o, a, 2, 5) == 0);
    CHECK(fd_open(a));
    CHECK_INT(gw_out_flush(&o, plain(sv[0])), 0);
    CHECK(!fd_open(a));
    CHECK_INT(drain(sv[1], buf, sizeof(buf)), 5);
    CHECK(memcmp(buf, "23456", 5) == 0);

    /* dropped */
    int b = dup(fd);
    CHECK(gw_out_push_file_own(&o, b, 0, 10) == 0);
    gw_out_discard(&o);
    CHECK(!fd_open(b));

    /* empty, and refused */
    int c = dup(fd);
    CHECK(gw_out_push_file_own(&o, c, 0, 0) == 0);
    CHECK(!fd_open(c));
    while (gw_out_room(&o))
        CHECK(gw_out_push_lit(&o, "y") == 0);
    int d = dup(fd);
    CHECK_INT(gw_out_push_file_own(&o, d, 0, 1), -ENOBUFS);
    CHECK(!fd_open(d));
    gw_out_discard(&o);

    /* a borrowed fd stays open */
    CHECK(gw_out_push_file(&o, fd, 0, 3, NULL) == 0);
    CHECK_INT(gw_out_flush(&o, plain(sv[0])), 0);
    CHECK(fd_open(fd));
    close(fd);
    close(sv[0]);
    close(sv[1]);
}

/* A socket that takes a little at a time: the bytes arrive whole and in
 * order, each owner is released once its last byte is out, not before. */
static void test_partial_writes_resume(void)
{
    enum { N = 40, SZ = 3000 };
    static char blocks[N][SZ];
    static char got[N * SZ + 64];
    gw_out_t o;
    int sv[2], rc;
    size_t have = 0;

    CHECK(sockpair(sv, 4096) == 0);
    gw_out_init(&o, on_release);
    for (int i = 0; i < N; i++)
        memset(blocks[i], 'a' + i % 26, SZ);
    reset();
    for (int i = 0; i < N; i++) {
        /* the owner slot doubles as "released" counter 0 for every block */
        CHECK(gw_out_push_ref(&o, blocks[i], SZ, owner(0)) == 0);
    }
    while ((rc = gw_out_flush(&o, plain(sv[0]))) == -EAGAIN) {
        CHECK(released[0] < N);
        have += drain(sv[1], got + have, sizeof(got) - have);
    }
    CHECK_INT(rc, 0);
    have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(released[0], N);
    CHECK_INT(have, (size_t)N * SZ);
    for (int i = 0; i < N; i++)
        CHECK(memcmp(got + (size_t)i * SZ, blocks[i], SZ) == 0);
    CHECK_INT(o.sent, (uint64_t)N * SZ);
    close(sv[0]);
    close(sv[1]);
}

/* A file that shrank after its length was promised: sendfile() comes back
 * short with the socket far from full. The flush must say so (-EPIPE) at
 * once, not -EAGAIN: an EPOLLOUT edge never comes for a socket with room,
 * and the answer would hang until --write-timeout. A socket that is really
 * full still says -EAGAIN, and the file then resumes where it stopped. */
static void test_file_short_send(void)
{
    enum { SZ = 200000 };
    static char data[SZ], got[SZ + 64];
    gw_out_t o;
    int sv[2], fd, rc;
    char path[] = "/tmp/gw-response-test-XXXXXX";
    size_t have = 0;

    for (size_t i = 0; i < SZ; i++)
        data[i] = (char)('a' + i % 23);
    CHECK((fd = mkstemp(path)) >= 0);
    unlink(path);
    CHECK(write(fd, data, SZ) == SZ);

    /* shrank: 50 bytes promised past the end */
    CHECK(sockpair(sv, 0) == 0);
    gw_out_init(&o, on_release);
    CHECK(gw_out_push_file(&o, fd, SZ - 100, 150, NULL) == 0);
    CHECK_INT(gw_out_flush(&o, plain(sv[0])), -EPIPE);
    CHECK_INT(o.sent, 100);
    CHECK_INT(drain(sv[1], got, sizeof(got)), 100);
    gw_out_discard(&o);
    close(sv[0]);
    close(sv[1]);

    /* a full socket: -EAGAIN, then the rest */
    CHECK(sockpair(sv, 4096) == 0);
    CHECK(gw_out_push_file(&o, fd, 0, SZ, NULL) == 0);
    while ((rc = gw_out_flush(&o, plain(sv[0]))) == -EAGAIN)
        have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(rc, 0);
    have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(have, (size_t)SZ);
    CHECK(memcmp(got, data, SZ) == 0);
    close(sv[0]);
    close(sv[1]);
    close(fd);
}

/* A transport without sendfile (TLS without kernel TLS) gets files through
 * a bounded buffer: whole and in order through a socket that takes a
 * little at a time (each short write sends the same bytes again), the same
 * -EPIPE at once for a file that shrank, the same byte count, and the head
 * before it. */
static void test_file_without_sendfile(void)
{
    enum { SZ = 200000 };
    static char data[SZ], got[SZ + 64];
    gw_transport_ops_t ops = gw_transport_plain;
    gw_transport_t t;
    gw_out_t o;
    int sv[2], fd, rc;
    char path[] = "/tmp/gw-response-test-XXXXXX";
    size_t have = 0;

    ops.sendfile = NULL;
    for (size_t i = 0; i < SZ; i++)
        data[i] = (char)('a' + i % 23);
    CHECK((fd = mkstemp(path)) >= 0);
    unlink(path);
    CHECK(write(fd, data, SZ) == SZ);

    CHECK(sockpair(sv, 0) == 0);
    gw_transport_open_plain(&t, sv[0]);
    t.ops = &ops;
    gw_out_init(&o, on_release);
    CHECK(gw_out_push_file(&o, fd, SZ - 100, 150, NULL) == 0);
    CHECK_INT(gw_out_flush(&o, &t), -EPIPE);
    CHECK_INT(o.sent, 100);
    CHECK_INT(drain(sv[1], got, sizeof(got)), 100);
    CHECK(memcmp(got, data + SZ - 100, 100) == 0);
    gw_out_discard(&o);
    close(sv[0]);
    close(sv[1]);

    CHECK(sockpair(sv, 4096) == 0);
    gw_transport_open_plain(&t, sv[0]);
    t.ops = &ops;
    gw_out_init(&o, on_release);
    CHECK(gw_out_push_lit(&o, "HEAD") == 0);
    CHECK(gw_out_push_file(&o, fd, 0, SZ, NULL) == 0);
    while ((rc = gw_out_flush(&o, &t)) == -EAGAIN)
        have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(rc, 0);
    have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(have, (size_t)SZ + 4);
    CHECK(memcmp(got, "HEAD", 4) == 0 && memcmp(got + 4, data, SZ) == 0);
    CHECK_INT(o.sent, (uint64_t)SZ + 4);
    close(sv[0]);
    close(sv[1]);
    close(fd);
}

/* An answer replacing what was queued (a 408 after a 100 Continue the
 * client did not read): a head segment the socket took part of keeps its
 * rest, so the peer gets whole messages; everything else is dropped, owners
 * released and descriptors closed. Nothing started: everything goes. */
static void test_discard_unstarted_keeps_a_started_head(void)
{
    enum { SZ = 300000 };
    static char big[SZ], got[SZ + 64];
    gw_out_t o;
    int sv[2], fd, rc;
    char path[] = "/tmp/gw-response-test-XXXXXX";
    size_t have;

    memset(big, 'c', SZ);
    CHECK((fd = mkstemp(path)) >= 0);
    unlink(path);
    CHECK(write(fd, "0123456789", 10) == 10);
    reset();
    CHECK(sockpair(sv, 4096) == 0);
    gw_out_init(&o, on_release);

    /* nothing sent yet: all dropped */
    CHECK(gw_out_push_ref(&o, big, 10, owner(0)) == 0);
    gw_out_discard_unstarted(&o);
    CHECK_INT(o.count, 0);
    CHECK_INT(released[0], 1);

    /* the head partly written */
    CHECK(gw_out_push_ref(&o, big, SZ, owner(1)) == 0);
    CHECK(gw_out_push_ref(&o, "body", 4, owner(2)) == 0);
    int a = dup(fd);
    CHECK(gw_out_push_file_own(&o, a, 0, 10) == 0);
    CHECK_INT(gw_out_flush(&o, plain(sv[0])), -EAGAIN);
    CHECK(o.sent > 0 && o.sent < SZ);
    have = drain(sv[1], got, sizeof(got));
    gw_out_discard_unstarted(&o);
    CHECK_INT(o.count, 1);
    CHECK_INT(released[1], 0);
    CHECK_INT(released[2], 1);
    CHECK(!fd_open(a));
    CHECK(gw_out_push_lit(&o, "HTTP/1.1 408 Request Timeout\r\n\r\n") == 0);
    while ((rc = gw_out_flush(&o, plain(sv[0]))) == -EAGAIN)
        have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(rc, 0);
    have += drain(sv[1], got + have, sizeof(got) - have);
    CHECK_INT(released[1], 1);
    CHECK_INT(have, (size_t)SZ + 32);
    CHECK(memcmp(got, big, SZ) == 0);
    CHECK(memcmp(got + SZ, "HTTP/1.1 408 Request Timeout\r\n\r\n", 32) == 0);

    /* sent whole: nothing is started any more */
    CHECK(gw_out_push_ref(&o, "x", 1, owner(3)) == 0);
    gw_out_discard_unstarted(&o);
    CHECK_INT(o.count, 0);
    CHECK_INT(released[3], 1);
    close(sv[0]);
    close(sv[1]);
    close(fd);
}

static void test_arena_contains(void)
{
    gw_arena_pool_t pool = {.max_free = 4};
    gw_arena_t a, b;
    char *p, *q, stack[8];

    gw_arena_init(&a, &pool);
    gw_arena_init(&b, &pool);
    p = gw_arena_alloc(&a, 100);
    q = gw_arena_alloc(&b, 100);
    CHECK(gw_arena_contains(&a, p, 100));
    CHECK(gw_arena_contains(&a, p + 10, 20));
    CHECK(!gw_arena_contains(&a, q, 1));
    CHECK(!gw_arena_contains(&a, stack, sizeof(stack)));
    CHECK(!gw_arena_contains(&a, p, GW_ARENA_BLOCK * 2));
    gw_arena_reset(&a);
    CHECK(!gw_arena_contains(&a, p, 1));
    gw_arena_reset(&b);
    gw_arena_pool_dispose(&pool);
}

static void test_status_phrases(void)
{
    CHECK_STR(gw_status_phrase(200), "OK");
    CHECK_STR(gw_status_phrase(404), "Not Found");
    CHECK_STR(gw_status_phrase(429), "Too Many Requests");
    CHECK(gw_status_phrase(299) == NULL);
    CHECK_STR(gw_status_reason(299), "Unknown");
}


/* ---- the response writer ---- */

static gw_arena_pool_t wpool = {.max_free = 4};

/* A request as a protocol parser leaves it: version, HEAD, keep-alive. */
static void req_init(gw_req_t *r, int major, int minor, bool is_head, bool is_gateway)
{
    gw_req_init(r, &wpool);
    r->http_major = (uint8_t)major;
    r->http_minor = (uint8_t)minor;
    r->is_head = is_head;
    r->is_gateway = r->has_cgi_fields = r->is_path_decoded = is_gateway;
    r->keep_alive = !is_gateway;
}

static void req_dispose(gw_req_t *r)
{
    gw_body_env_t env = {0};
    gw_req_reset(r, &env);
}

/* The queue's memory segments as one string (the head, maybe a body). */
static const char *queued(const gw_out_t *o)
{
    static char buf[2048];
    size_t n = 0;
    for (unsigned i = 0; i < o->count; i++) {
        const gw_seg_t *sg = &o->seg[(o->head + i) % GW_OUT_SEGS];
        if (sg->base && n + sg->len < sizeof(buf)) {
            memcpy(buf + n, sg->base, sg->len);
            n += sg->len;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* The head queued for a, with "DATE" for the Date header's value. */
static const char *head_of(gw_resp_t *rs, gw_answer_t *a, gw_req_t *r, bool may_keep)
{
    static char buf[2048];
    const char *h, *d;
    gw_out_t o;

    gw_out_init(&o, NULL);
    if (gw_resp_head(rs, a, r, may_keep, &o) < 0)
        return "(failed)";
    h = queued(&o);
    d = strstr(h, gw_clock_http_date());
    if (d)
        snprintf(buf, sizeof(buf), "%.*sDATE%s", (int)(d - h), h, d + GW_HTTP_DATE_LEN);
    else
        snprintf(buf, sizeof(buf), "%s", h);
    gw_out_discard(&o);
    return buf;
}

#define STREAM (-1)

static gw_answer_t answer(int status, int64_t length)
{
    return (gw_answer_t){.status = status, .length_hdr = -1, .length = length,
                         .has_server = true, .has_date = true};
}

static void test_framing_decisions(void)
{
    gw_req_t r;
    gw_resp_t rs;
    gw_answer_t a;

    /* HTTP/1.1: a known length is Content-Length; a stream is chunked */
    req_init(&r, 1, 1, false, false);
    a = answer(200, 13);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.framing == GW_FRAME_LENGTH && rs.length == 13 && rs._add_length);
    CHECK(rs.keep_alive && !rs.no_body && rs._minor == 1);
    a = answer(200, STREAM);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.framing == GW_FRAME_CHUNKED && rs.keep_alive);
    CHECK_INT(gw_resp_block_segs(&rs), 3);
    /* the source asks to close, or the server may not keep it */
    a = answer(200, 13);
    a.wants_close = true;
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(!rs.keep_alive);
    a = answer(200, STREAM);
    gw_resp_plan(&rs, &a, &r, false);
    CHECK(rs.framing == GW_FRAME_CHUNKED && !rs.keep_alive);
    req_dispose(&r);

    /* HTTP/1.0 and a gateway: no chunking, the close ends a stream */
    req_init(&r, 1, 0, false, false);
    a = answer(200, STREAM);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.framing == GW_FRAME_CLOSE && !rs.keep_alive && rs._minor == 0);
    a = answer(200, 5);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.framing == GW_FRAME_LENGTH && rs.keep_alive);
    req_dispose(&r);
    req_init(&r, 1, 1, false, true);
    a = answer(200, STREAM);
    gw_resp_plan(&rs, &a, &r, r.keep_alive);
    CHECK(rs.framing == GW_FRAME_CLOSE && !rs.keep_alive && rs._minor == 1);
    req_dispose(&r);
    /* nginx's HTTP/2 client: answered HTTP/1.0 as before, read to the end */
    req_init(&r, 2, 0, false, true);
    a = answer(200, STREAM);
    gw_resp_plan(&rs, &a, &r, false);
    CHECK(rs.framing == GW_FRAME_CLOSE && rs._minor == 0);
    req_dispose(&r);
    /* no version read (a request refused early): HTTP/1.1 */
    req_init(&r, 0, 0, false, false);
    a = answer(400, 12);
    gw_resp_plan(&rs, &a, &r, false);
    CHECK(rs._minor == 1 && rs.framing == GW_FRAME_LENGTH && !rs.keep_alive);
    req_dispose(&r);
}

static void test_bodyless_answers(void)
{
    gw_hdr_t h[2] = {{"Content-Type", 12, "text/plain", 10}, {"Content-Length", 14, "13", 2}};
    gw_req_t r;
    gw_resp_t rs;
    gw_answer_t a;

    /* HEAD is told the length GET would have, unless the source said it */
    req_init(&r, 1, 1, true, false);
    a = answer(200, 13);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && rs.framing == GW_FRAME_NONE && rs._add_length && rs.length == 13);
    CHECK(rs.keep_alive);
    a = answer(200, 13);
    a.hdrs = h;
    a.nhdrs = 2;
    a.length_hdr = 1;
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && !rs._add_length);
    a = answer(200, STREAM); /* a generator's HEAD: nothing known, nothing said */
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && !rs._add_length && rs.keep_alive);
    req_dispose(&r);

    req_init(&r, 1, 1, false, false);
    /* 204: never a Content-Length (RFC 9110 8.6), the source's is dropped */
    a = answer(204, 13);
    a.hdrs = h;
    a.nhdrs = 2;
    a.length_hdr = 1;
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && !rs._add_length && h[1].name_len == 0 && a.length_hdr == -1);
    h[1].name_len = 14;
    /* 304: none added; one the source gave stays */
    a = answer(304, 13);
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && !rs._add_length);
    a.hdrs = h;
    a.nhdrs = 2;
    a.length_hdr = 1;
    gw_resp_plan(&rs, &a, &r, true);
    CHECK(rs.no_body && !rs._add_length && h[1].name_len == 14);
    req_dispose(&r);
}

static void test_heads_as_bytes(void)
{
    gw_hdr_t h[1] = {{"Content-Type", 12, "text/plain", 10}};
    gw_req_t r;
    gw_resp_t rs;
    gw_answer_t a;

    req_init(&r, 1, 1, false, false);
    a = (gw_answer_t){.status = 200, .status_line = "200 OK", .status_line_len = 6,
                      .hdrs = h, .nhdrs = 1, .length_hdr = -1, .length = 1234567890123};
    CHECK_STR(head_of(&rs, &a, &r, true),
              "HTTP/1.1 200 OK\r\nServer: gangway\r\nDate: DATE\r\nContent-Type: text/plain\r\n"
              "Content-Length: 1234567890123\r\n\r\n");
    a = (gw_answer_t){.status = 299, .length_hdr = -1, .length = STREAM, .has_server = true,
                      .has_date = true, .request_id = "abc", .request_id_len = 3};
    CHECK_STR(head_of(&rs, &a, &r, false), "HTTP/1.1 299 Unknown\r\nX-Request-Id: abc\r\n"
                                           "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    a = answer(200, 0);
    CHECK_STR(head_of(&rs, &a, &r, true), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    req_dispose(&r);

    /* HTTP/1.0 in kind: keep-alive said, a stream closes */
    req_init(&r, 1, 0, false, false);
    a = answer(200, 3);
    CHECK_STR(head_of(&rs, &a, &r, true),
              "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n");
    a = answer(200, STREAM);
    CHECK_STR(head_of(&rs, &a, &r, true), "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
    req_dispose(&r);
}

static void test_bodies_held_to_the_head(void)
{
    static char data[] = "0123456789";
    gw_req_t r;
    gw_resp_t rs;
    gw_answer_t a;
    gw_out_t o;

    reset();
    /* a length: cut to it, the rest dropped (1), the end says it is whole */
    req_init(&r, 1, 1, false, false);
    a = answer(200, 12);
    gw_out_init(&o, on_release);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(0)), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(1)), 1);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(2)), 1);
    CHECK_INT(released[2], 1); /* nothing of it fit: released at once */
    CHECK_INT(rs.body_sent, 12);
    CHECK_INT(gw_resp_end(&rs, &o), 0);
    CHECK(rs.keep_alive);
    CHECK(strstr(queued(&o), "\r\n\r\n0123456789" "01") != NULL);
    gw_out_discard(&o);
    CHECK_INT(released[0] + released[1], 2);
    /* short of it: the end says so and the connection cannot be kept */
    a = answer(200, 12);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(3)), 0);
    CHECK_INT(gw_resp_end(&rs, &o), 1);
    CHECK(!rs.keep_alive);
    gw_out_discard(&o);
    /* chunked: size line, data, CRLF; the last chunk */
    a = answer(200, STREAM);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(4)), 0);
    CHECK_INT(gw_resp_end(&rs, &o), 0);
    CHECK(strstr(queued(&o), "\r\n\r\na\r\n0123456789\r\n0\r\n\r\n") != NULL);
    gw_out_discard(&o);
    /* no room: nothing queued, the owner still the caller's */
    a = answer(200, STREAM);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    while (gw_out_room(&o) > 2)
        CHECK(gw_out_push_lit(&o, "x") == 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(5)), -ENOBUFS);
    CHECK_INT(released[5], 0);
    CHECK(gw_out_push_lit(&o, "x") == 0 && gw_out_push_lit(&o, "x") == 0);
    CHECK_INT(gw_resp_end(&rs, &o), -ENOBUFS);
    gw_out_discard(&o);
    req_dispose(&r);

    /* HEAD: bodies are dropped, an owned file closed */
    req_init(&r, 1, 1, true, false);
    a = answer(200, 10);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(6)), 0);
    CHECK_INT(released[6], 1);
    int fd = dup(0);
    CHECK_INT(gw_resp_push_file(&rs, &o, fd, true, 0, 10), 0);
    CHECK(!fd_open(fd));
    CHECK_INT(o.count, 1);
    CHECK_INT(rs.body_sent, 0);
    CHECK_INT(gw_resp_end(&rs, &o), 0);
    gw_out_discard(&o);
    req_dispose(&r);
}

/* A file past the length the head promised is cut to it and says so (1),
 * as a memory block is: the caller learns that bytes were dropped, and the
 * queue sends no byte past the promise. An owned descriptor is the queue's
 * either way. */
static void test_file_held_to_the_head(void)
{
    static char data[] = "0123456789";
    gw_req_t r;
    gw_resp_t rs;
    gw_answer_t a;
    gw_out_t o;
    int fd;

    req_init(&r, 1, 1, false, false);
    gw_out_init(&o, on_release);
    a = answer(200, 12);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK_INT(gw_resp_push_ref(&rs, &o, data, 10, owner(0)), 0);
    CHECK((fd = dup(0)) >= 0);
    CHECK_INT(gw_resp_push_file(&rs, &o, fd, true, 0, 10), 1); /* 2 of its 10 bytes fit */
    CHECK_INT(o.seg[(o.head + o.count - 1) % GW_OUT_SEGS].len, 2);
    CHECK_INT(rs.body_sent, 12);
    CHECK((fd = dup(0)) >= 0);
    CHECK_INT(gw_resp_push_file(&rs, &o, fd, true, 0, 10), 1); /* none fits: closed */
    CHECK(!fd_open(fd));
    CHECK_INT(rs.body_sent, 12);
    CHECK_INT(gw_resp_end(&rs, &o), 0);
    CHECK(rs.keep_alive);
    /* within the promise: 0, as before */
    a = answer(200, 20);
    gw_out_discard(&o);
    CHECK_INT(gw_resp_head(&rs, &a, &r, true, &o), 0);
    CHECK((fd = dup(0)) >= 0);
    CHECK_INT(gw_resp_push_file(&rs, &o, fd, true, 0, 20), 0);
    CHECK_INT(rs.body_sent, 20);
    gw_out_discard(&o);
    req_dispose(&r);
}

static void test_text_answers(void)
{
    gw_hdr_t allow = {"Allow", 5, "GET, HEAD", 9};
    gw_req_t r;
    gw_resp_t rs;
    gw_out_t o;
    char want[512];

    req_init(&r, 1, 1, false, false);
    gw_out_init(&o, NULL);
    CHECK_INT(gw_resp_text(&rs, &r, 405, &allow, 1, true, "id", 2, &o), 0);
    snprintf(want, sizeof(want),
             "HTTP/1.1 405 Method Not Allowed\r\nServer: gangway\r\nDate: %.*s\r\n"
             "X-Request-Id: id\r\nAllow: GET, HEAD\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 19\r\n\r\nMethod Not Allowed\n",
             GW_HTTP_DATE_LEN, gw_clock_http_date());
    CHECK_STR(queued(&o), want);
    CHECK_INT(o.count, 2); /* the head, then the body */
    CHECK_INT(rs.body_sent, 19);
    CHECK(rs.keep_alive);
    gw_out_discard(&o);
    req_dispose(&r);

    /* HEAD: the length, no body */
    req_init(&r, 1, 1, true, false);
    CHECK_INT(gw_resp_text(&rs, &r, 404, NULL, 0, false, NULL, 0, &o), 0);
    snprintf(want, sizeof(want),
             "HTTP/1.1 404 Not Found\r\nServer: gangway\r\nDate: %.*s\r\n"
             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n"
             "Connection: close\r\n\r\n",
             GW_HTTP_DATE_LEN, gw_clock_http_date());
    CHECK_STR(queued(&o), want);
    CHECK_INT(o.count, 1);
    CHECK_INT(rs.body_sent, 0);
    gw_out_discard(&o);
    req_dispose(&r);
    gw_arena_pool_dispose(&wpool);
}

int main(void)
{
    test_ref_released_once_when_sent();
    test_ref_released_once_when_dropped_or_refused();
    test_owned_fd_closed_once();
    test_partial_writes_resume();
    test_file_short_send();
    test_file_without_sendfile();
    test_discard_unstarted_keeps_a_started_head();
    test_arena_contains();
    test_status_phrases();
    gw_clock_update(); /* the Date the heads carry */
    test_framing_decisions();
    test_bodyless_answers();
    test_heads_as_bytes();
    test_bodies_held_to_the_head();
    test_file_held_to_the_head();
    test_text_answers();
    printf("response: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
