/* Unit tests of the output queue's ownership rules (response.c): every owner
 * handed over is released exactly once, and every descriptor the queue owns
 * is closed exactly once, whether its bytes were sent, dropped, or never
 * queued; partial writes resume where they stopped. Includes response.c. */
#include "serve/out.c"
#include "serve/response.c"
#include "serve/transport.c"
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
    printf("response: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
