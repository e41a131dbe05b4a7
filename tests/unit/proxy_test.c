/* Unit tests for the PROXY protocol parser: v1 and v2 headers of every
 * family, LOCAL, TLVs, refusals, and every split of each input into reads
 * (one cut anywhere, and one byte at a time) giving the same outcome as one
 * read, never taking a byte past the header. */
#include "core/allow.c"
#include "proto/proxy.c"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

typedef struct outcome {
    gw_proxy_st_t st;
    size_t used; /* bytes of the input taken in all (DONE: the header's length) */
    gw_proxy_info_t info;
    const char *reason;
} outcome_t;

/* Feeds in[0..n) in reads ending at each of cuts[] (then the rest), until
 * DONE or ERROR. */
static void run(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts, outcome_t *o)
{
    gw_proxy_t p;
    size_t pos = 0, k = 0;

    gw_proxy_init(&p);
    memset(o, 0, sizeof(*o));
    o->st = GW_PROXY_AGAIN;
    while (pos < n) {
        size_t end = k < ncuts ? cuts[k++] : n, used = 0;
        /* each read in a buffer of its own, so that ASan sees a read past it */
        char *piece = malloc(end - pos ? end - pos : 1);
        memcpy(piece, in + pos, end - pos);
        o->st = gw_proxy_feed(&p, piece, end - pos, &used);
        free(piece);
        CHECK(used <= end - pos);
        o->used += used;
        if (o->st != GW_PROXY_AGAIN)
            break;
        CHECK(used == end - pos);
        pos = end;
    }
    o->info = p.info;
    o->reason = p.reason;
}

static bool same(const outcome_t *a, const outcome_t *b)
{
    if (a->st != b->st)
        return false;
    if (a->st == GW_PROXY_ERROR)
        return a->reason == b->reason;
    return a->used == b->used && memcmp(&a->info, &b->info, sizeof(a->info)) == 0;
}

/* The outcome of one read, checked against every split. */
static outcome_t parse(const void *data, size_t n)
{
    const uint8_t *in = data;
    outcome_t whole, split;
    size_t cuts[1];

    run(in, n, NULL, 0, &whole);
    for (size_t c = 1; c < n; c++) {
        cuts[0] = c;
        run(in, n, cuts, 1, &split);
        if (!same(&whole, &split)) {
            n_fail++;
            fprintf(stderr, "proxy_test: a cut at %zu of %zu changes the outcome (%d vs %d)\n", c,
                    n, split.st, whole.st);
            return whole;
        }
    }
    {
        size_t *all = malloc(n * sizeof(*all) + 1);
        for (size_t c = 1; c < n; c++)
            all[c - 1] = c;
        run(in, n, all, n ? n - 1 : 0, &split);
        free(all);
        CHECK(same(&whole, &split));
    }
    return whole;
}

static outcome_t parse_str(const char *s)
{
    return parse(s, strlen(s));
}

static void check_ip(const gw_ip_t *ip, const char *want)
{
    char buf[GW_IP_TEXT];
    gw_allow_ip_format(ip, buf);
    CHECK_STR(buf, want);
}

/* ---- v1 ---- */

static void test_v1_tcp4(void)
{
    const char *hdr = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    char in[256];
    outcome_t o;

    snprintf(in, sizeof(in), "%sGET / HTTP/1.1\r\nHost: x\r\n\r\n", hdr);
    o = parse_str(in);
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK_INT(o.used, strlen(hdr)); /* not a byte of the request */
    CHECK_INT(o.info.version, 1);
    CHECK(!o.info.is_local);
    check_ip(&o.info.src, "192.0.2.1");
    check_ip(&o.info.dst, "198.51.100.7");
    CHECK_INT(o.info.src_port, 56324);
    CHECK_INT(o.info.dst_port, 443);
}

static void test_v1_tcp6(void)
{
    outcome_t o = parse_str("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    CHECK_INT(o.st, GW_PROXY_DONE);
    check_ip(&o.info.src, "2001:db8::1");
    check_ip(&o.info.dst, "::1");
    CHECK_INT(o.info.src_port, 65535);
    CHECK_INT(o.info.dst_port, 0);
}

static void test_v1_unknown(void)
{
    outcome_t o = parse_str("PROXY UNKNOWN\r\n");
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(o.info.is_local);
    CHECK(o.info.is_unnamed); /* relayed, not the balancer's own: no trust */
    CHECK_INT(o.used, 15);
    o = parse_str("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET");
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(o.info.is_local);
    CHECK_INT(o.used, 35);
    CHECK_INT(o.info.src.family, 0);
}

static void test_v1_refused(void)
{
    static const char *bad[] = {
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n",        /* a field missing */
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443 1\r\n",  /* one too many */
        "PROXY TCP4 192.0.2.1  198.51.100.7 56324 443\r\n",   /* two spaces */
        "PROXY TCP4 192.0.2.1 198.51.100.7 056324 443\r\n",   /* a leading zero */
        "PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",    /* past 65535 */
        "PROXY TCP4 192.0.2.1 198.51.100.7 -1 443\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.7 1 443\r\n",
        "PROXY TCP4 010.0.2.1 198.51.100.7 1 443\r\n",        /* octal to some parsers */
        "PROXY TCP4 2001:db8::1 ::1 1 2\r\n",                 /* IPv6 under TCP4 */
        "PROXY TCP6 192.0.2.1 198.51.100.7 1 2\r\n",          /* IPv4 under TCP6 */
        "PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n",            /* LF alone */
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\r\n",
        "PROXY TCP4 192.0.2.1\r198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\x01\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outcome_t o = parse_str(bad[i]);
        if (o.st != GW_PROXY_ERROR)
            fprintf(stderr, "proxy_test: accepted %s", bad[i]);
        CHECK_INT(o.st, GW_PROXY_ERROR);
        CHECK(o.reason != NULL);
        CHECK_INT(o.used, 0);
    }
}

static void test_v1_too_long(void)
{
    char in[300];
    outcome_t o;

    /* 107 bytes with the CRLF is the most (UNKNOWN with padding) */
    memset(in, 'a', sizeof(in));
    memcpy(in, "PROXY UNKNOWN ", 14);
    memcpy(in + 105, "\r\n", 2);
    o = parse(in, 107);
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK_INT(o.used, 107);
    memcpy(in + 105, "a\r\n", 3);
    o = parse(in, 108);
    CHECK_INT(o.st, GW_PROXY_ERROR);
    /* and a line that never ends is refused at byte 108, not read on */
    o = parse(in, sizeof(in));
    CHECK_INT(o.st, GW_PROXY_ERROR);
}

/* ---- garbage instead of a header ---- */

static void test_garbage(void)
{
    gw_proxy_t p;
    size_t used = 99;

    /* an HTTP request: refused at its first byte */
    gw_proxy_init(&p);
    CHECK_INT(gw_proxy_feed(&p, "G", 1, &used), GW_PROXY_ERROR);
    CHECK_INT(used, 0);
    /* "PROX" then something else: refused at once, without waiting */
    gw_proxy_init(&p);
    CHECK_INT(gw_proxy_feed(&p, "PROX", 4, &used), GW_PROXY_AGAIN);
    CHECK_INT(gw_proxy_feed(&p, "I", 1, &used), GW_PROXY_ERROR);
    /* the error stays */
    CHECK_INT(gw_proxy_feed(&p, "Y ", 2, &used), GW_PROXY_ERROR);
    /* half the v2 signature, then a byte it does not have */
    gw_proxy_init(&p);
    CHECK_INT(gw_proxy_feed(&p, "\r\n\r\n\0\r\nQU", 9, &used), GW_PROXY_AGAIN);
    CHECK_INT(gw_proxy_feed(&p, "x", 1, &used), GW_PROXY_ERROR);
    CHECK_INT(parse("\r\n\r\nGET", 7).st, GW_PROXY_ERROR);
    CHECK_INT(parse("\0\0\0", 3).st, GW_PROXY_ERROR);
    CHECK_INT(parse("proxy TCP4", 10).st, GW_PROXY_ERROR);
    /* nothing yet is no verdict */
    CHECK_INT(parse("PROXY TCP4 1.2", 14).st, GW_PROXY_AGAIN);
}

/* ---- v2 ---- */

typedef struct v2 {
    uint8_t b[70000];
    size_t n;
} v2_t;

static v2_t pkt;

static void v2_start(uint8_t ver_cmd, uint8_t fam)
{
    memcpy(pkt.b, v2_sig, 12);
    pkt.b[12] = ver_cmd;
    pkt.b[13] = fam;
    pkt.n = 16;
}

static void v2_put(const void *p, size_t n)
{
    memcpy(pkt.b + pkt.n, p, n);
    pkt.n += n;
}

static void v2_put16(unsigned v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    v2_put(b, 2);
}

static void v2_tlv(uint8_t type, const void *v, size_t n)
{
    v2_put(&type, 1);
    v2_put16((unsigned)n);
    if (n)
        v2_put(v, n);
}

/* Sets the block length from what was put, returns the header's size. */
static size_t v2_end(void)
{
    size_t blen = pkt.n - 16;
    pkt.b[14] = (uint8_t)(blen >> 8);
    pkt.b[15] = (uint8_t)blen;
    return pkt.n;
}

static void test_v2_tcp4(void)
{
    uint8_t a[8];
    size_t len;
    outcome_t o;

    v2_start(0x21, 0x11);
    inet_pton(AF_INET, "203.0.113.9", a);
    inet_pton(AF_INET, "10.0.0.1", a + 4);
    v2_put(a, 8);
    v2_put16(40000);
    v2_put16(8080);
    len = v2_end();
    v2_put("GET / HTTP/1.1\r\n", 16); /* the request follows at once */
    o = parse(pkt.b, pkt.n);
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK_INT(o.used, len);
    CHECK_INT(o.info.version, 2);
    check_ip(&o.info.src, "203.0.113.9");
    check_ip(&o.info.dst, "10.0.0.1");
    CHECK_INT(o.info.src_port, 40000);
    CHECK_INT(o.info.dst_port, 8080);
    CHECK(!o.info.is_ssl);
}

static void test_v2_tcp6_tlvs(void)
{
    uint8_t a[32], ssl[5 + 3 + 7] = {PP2_CLIENT_SSL, 0, 0, 0, 0, 0x21, 0, 7};
    size_t len;
    outcome_t o;

    memcpy(ssl + 8, "TLSv1.3", 7);
    v2_start(0x21, 0x21);
    inet_pton(AF_INET6, "2001:db8::42", a);
    inet_pton(AF_INET6, "2001:db8::1", a + 16);
    v2_put(a, 32);
    v2_put16(1);
    v2_put16(443);
    v2_tlv(0x04, "\0\0\0\0\0", 5);      /* NOOP */
    v2_tlv(0x02, "example.com", 11);   /* AUTHORITY */
    v2_tlv(PP2_TYPE_SSL, ssl, sizeof(ssl));
    v2_tlv(0xe0, NULL, 0);             /* a custom one, empty */
    len = v2_end();
    o = parse(pkt.b, len);
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK_INT(o.used, len);
    check_ip(&o.info.src, "2001:db8::42");
    CHECK_INT(o.info.dst_port, 443);
    CHECK(o.info.is_ssl);
    /* the SSL TLV without the client bit: not TLS */
    ssl[0] = 0;
    v2_start(0x21, 0x21);
    v2_put(a, 32);
    v2_put16(1);
    v2_put16(443);
    v2_tlv(PP2_TYPE_SSL, ssl, sizeof(ssl));
    o = parse(pkt.b, v2_end());
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(!o.info.is_ssl);
}

static void test_v2_unix_local_unspec(void)
{
    uint8_t paths[216] = {0};
    outcome_t o;

    memcpy(paths, "/run/haproxy.sock", 17);
    v2_start(0x21, 0x31);
    v2_put(paths, sizeof(paths));
    v2_tlv(0x05, "id", 2);
    o = parse(pkt.b, v2_end());
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(!o.info.is_local);
    CHECK_INT(o.info.src.family, AF_UNIX);

    /* LOCAL: a health check of the balancer itself; the block, whatever
     * it holds (even a family it could not describe), is ignored */
    v2_start(0x20, 0x00);
    o = parse(pkt.b, v2_end());
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(o.info.is_local);
    CHECK(!o.info.is_unnamed);
    CHECK_INT(o.used, 16);
    v2_start(0x20, 0x99);
    v2_put("\xff\xff\xff", 3); /* not even TLVs */
    o = parse(pkt.b, v2_end());
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(o.info.is_local);
    CHECK_INT(o.used, 19);

    /* PROXY with an unspecified family: the real endpoints stand */
    v2_start(0x21, 0x00);
    v2_put("abcd", 4);
    o = parse(pkt.b, v2_end());
    CHECK_INT(o.st, GW_PROXY_DONE);
    CHECK(o.info.is_local);
    CHECK(o.info.is_unnamed);
}

static void test_v2_refused(void)
{
    uint8_t a[12] = {0};

    v2_start(0x11, 0x11); /* version 1 in a v2 header */
    v2_put(a, 12);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x22, 0x11); /* command 2 */
    v2_put(a, 12);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x21, 0x12); /* UDP */
    v2_put(a, 12);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x21, 0x41); /* no such family */
    v2_put(a, 12);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x21, 0x21); /* TCP6 with a TCP4 block's length */
    v2_put(a, 12);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x21, 0x11); /* a TLV longer than what is left of the block */
    v2_put(a, 12);
    v2_put("\x04\x00\x09" "abc", 6);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
    v2_start(0x21, 0x11); /* a TLV header cut by the block's end */
    v2_put(a, 12);
    v2_put("\x04\x00", 2);
    CHECK_INT(parse(pkt.b, v2_end()).st, GW_PROXY_ERROR);
}

static void test_v2_largest_block(void)
{
    static uint8_t pad[65535];
    uint8_t a[12] = {192, 0, 2, 1, 192, 0, 2, 2, 0, 80, 0, 81};
    gw_proxy_t p;
    size_t used, len;

    /* 65535 bytes of block: the addresses and one NOOP TLV filling it */
    v2_start(0x21, 0x11);
    v2_put(a, 12);
    v2_tlv(0x04, pad, 65535 - 12 - 3);
    len = v2_end();
    CHECK_INT(len, 16 + 65535);
    gw_proxy_init(&p);
    CHECK_INT(gw_proxy_feed(&p, (const char *)pkt.b, len - 1, &used), GW_PROXY_AGAIN);
    CHECK_INT(gw_proxy_feed(&p, (const char *)pkt.b + len - 1, 1, &used), GW_PROXY_DONE);
    CHECK_INT(used, 1);
    CHECK_INT(p.info.src_port, 80);
    /* and it costs the parser no memory: its state is fixed */
    CHECK(sizeof(gw_proxy_t) < 256);
}

/* ---- the matcher the PROXY source and forwarded hops go through ---- */

static void test_allow(void)
{
    gw_allow_t a = {0};
    gw_ip_t ip;
    const char *bad = NULL;
    size_t badlen = 0;

    CHECK_INT(gw_allow_add_list(&a, "10.0.0.0/8, 2001:db8::/32,::ffff:192.0.2.0/120", &bad,
                                &badlen), 0);
    gw_allow_ip_parse(&ip, "10.9.8.7", 8);
    CHECK(gw_allow_has(&a, &ip));
    gw_allow_ip_parse(&ip, "11.0.0.1", 8);
    CHECK(!gw_allow_has(&a, &ip));
    gw_allow_ip_parse(&ip, "::ffff:10.1.1.1", 15); /* dual-stack socket's IPv4 peer */
    CHECK(gw_allow_has(&a, &ip));
    gw_allow_ip_parse(&ip, "192.0.2.77", 10);      /* a v4-mapped entry is IPv4 */
    CHECK(gw_allow_has(&a, &ip));
    gw_allow_ip_parse(&ip, "2001:db8:ffff::1", 16);
    CHECK(gw_allow_has(&a, &ip));
    ip.family = AF_UNIX;
    CHECK(!gw_allow_has(&a, &ip));
    CHECK_INT(gw_allow_add_list(&a, "10.0.0.1, nonsense", &bad, &badlen), -EINVAL);
    CHECK(badlen == 8 && memcmp(bad, "nonsense", 8) == 0);
    CHECK_INT(gw_allow_add(&a, "10.0.0.0/33"), -EINVAL);
    CHECK_INT(gw_allow_add(&a, "10.0.0.0/"), -EINVAL);
    CHECK_INT(gw_allow_add(&a, "10.0.0.0/+8"), -EINVAL);
    CHECK_INT(gw_allow_add_list(&a, "", &bad, &badlen), -EINVAL);
    CHECK_INT(gw_allow_add(&a, "*"), 0);
    CHECK(gw_allow_has(&a, &ip));
    gw_allow_dispose(&a);
    CHECK_INT(gw_allow_ip_parse(&ip, "1.2.3.4\0", 8), -EINVAL);
    CHECK_INT(gw_allow_ip_parse(&ip, "[::1]", 5), -EINVAL);
    CHECK_INT(gw_allow_ip_parse(&ip, "fe80::1%eth0", 12), -EINVAL);
}

int main(void)
{
    test_v1_tcp4();
    test_v1_tcp6();
    test_v1_unknown();
    test_v1_refused();
    test_v1_too_long();
    test_garbage();
    test_v2_tcp4();
    test_v2_tcp6_tlvs();
    test_v2_unix_local_unspec();
    test_v2_refused();
    test_v2_largest_block();
    test_allow();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
