/* Unit tests for the forwarded headers: the trusted-hop walk of
 * X-Forwarded-For and Forwarded, the scheme / host / port lists read at the
 * client's position, what is refused, and the choice of header family. */
#include "core/allow.c"
#include "proto/forwarded.c"

#include <stdio.h>
#include <stdlib.h>

#include "check.h"

static gw_allow_t trusted;
static gw_fwd_conf_t conf;
static char rb[65536];
static gw_header_t hdrs[128];
static gw_req_t req;
static const char *why;
static bool cgi; /* the request's fields are a gateway's CGI variables */

/* Builds req from "Name: value" lines (separated by \n) and resolves it. */
static gw_req_client_t *resolve(const char *lines)
{
    size_t len = strlen(lines);
    const char *p = rb, *end = rb + len;

    memset(&req, 0, sizeof(req));
    memcpy(rb, lines, len);
    req.headers = hdrs;
    req.has_cgi_fields = cgi;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *colon;
        if (!nl)
            nl = end;
        colon = memchr(p, ':', (size_t)(nl - p));
        gw_header_t *h = &hdrs[req.nheaders++];
        h->name.off = (uint32_t)(p - rb);
        h->name.len = (uint32_t)(colon - p);
        colon++;
        while (*colon == ' ')
            colon++;
        h->value.off = (uint32_t)(colon - rb);
        h->value.len = (uint32_t)(nl - colon);
        p = nl + 1;
    }
    why = gw_fwd_resolve(&conf, &req, rb);
    return &req.client;
}

static const char *host_of(const gw_req_client_t *c)
{
    static char buf[300];
    snprintf(buf, sizeof(buf), "%.*s", (int)c->host.len, rb + c->host.off);
    return buf;
}

static void test_trusts(void)
{
    gw_ip_t ip;

    gw_allow_ip_parse(&ip, "10.1.2.3", 8);
    CHECK(gw_fwd_trusts(&conf, &ip));
    gw_allow_ip_parse(&ip, "192.0.2.1", 9);
    CHECK(!gw_fwd_trusts(&conf, &ip));
    ip.family = AF_UNIX;
    CHECK(gw_fwd_trusts(&conf, &ip)); /* a unix socket's peer is on this host */
}

static void test_xff_walk(void)
{
    gw_req_client_t *c;

    c = resolve("X-Forwarded-For: 203.0.113.7");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK(why == NULL);
    /* a chain: the trusted hops on the right are skipped; what the client
     * wrote itself, left of its own address, is never believed */
    c = resolve("X-Forwarded-For: 1.1.1.1, 203.0.113.7, 10.0.0.2");
    CHECK_STR(c->addr, "203.0.113.7");
    c = resolve("x-forwarded-for: garbage!!, ,[nonsense, 203.0.113.7,10.0.0.2 ,10.9.9.9");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK(why == NULL);
    /* every hop trusted: the leftmost is the client */
    c = resolve("X-Forwarded-For: 10.0.0.5, 10.0.0.2");
    CHECK_STR(c->addr, "10.0.0.5");
    /* repeated fields are one list, in order */
    c = resolve("X-Forwarded-For: 198.51.100.1, 203.0.113.9\nX-Forwarded-For: 10.0.0.1");
    CHECK_STR(c->addr, "203.0.113.9");
    /* IPv6, bare or bracketed, and ports */
    c = resolve("X-Forwarded-For: 2001:db8::1");
    CHECK_STR(c->addr, "2001:db8::1");
    CHECK_STR(c->port, "");
    c = resolve("X-Forwarded-For: [2001:db8::2]:4711, 10.0.0.1");
    CHECK_STR(c->addr, "2001:db8::2");
    CHECK_STR(c->port, "4711");
    c = resolve("X-Forwarded-For: 203.0.113.7:5555");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_STR(c->port, "5555");
    /* a trusted IPv6 hop (::1 is trusted) */
    c = resolve("X-Forwarded-For: 2001:db8::3, ::1");
    CHECK_STR(c->addr, "2001:db8::3");
}

static void test_xff_refused(void)
{
    static char many[4096];
    gw_req_client_t *c;
    size_t n;

    /* the client's own entry is not an address: nothing is taken */
    c = resolve("X-Forwarded-For: 203.0.113.7, junk, 10.0.0.1");
    CHECK_STR(c->addr, "");
    CHECK(why != NULL);
    c = resolve("X-Forwarded-For: 010.0.0.1");
    CHECK_STR(c->addr, "");
    c = resolve("X-Forwarded-For: 203.0.113.7:0");
    CHECK_STR(c->addr, "");
    c = resolve("X-Forwarded-For: [2001:db8::1");
    CHECK_STR(c->addr, "");
    c = resolve("X-Forwarded-For: 1.2.3.4:99999");
    CHECK_STR(c->addr, "");
    /* too many trusted hops (a loop between proxies, or a forgery) */
    n = (size_t)snprintf(many, sizeof(many), "X-Forwarded-For: 203.0.113.7");
    for (int i = 0; i < GW_FWD_MAX_HOPS; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, ", 10.0.0.%d", i);
    c = resolve(many);
    CHECK_STR(c->addr, "");
    CHECK(why && strstr(why, "too many"));
    /* just under the limit */
    n = (size_t)snprintf(many, sizeof(many), "X-Forwarded-For: 203.0.113.7");
    for (int i = 0; i < GW_FWD_MAX_HOPS - 1; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, ", 10.0.0.%d", i);
    c = resolve(many);
    CHECK_STR(c->addr, "203.0.113.7");
    /* a huge list of untrusted addresses costs one hop */
    n = (size_t)snprintf(many, sizeof(many), "X-Forwarded-For: ");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "198.51.100.%d, ", i % 250);
    snprintf(many + n, sizeof(many) - n, "203.0.113.8");
    c = resolve(many);
    CHECK_STR(c->addr, "203.0.113.8");
}

static void test_scheme(void)
{
    gw_req_client_t *c;

    c = resolve("X-Forwarded-Proto: https");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    CHECK_STR(c->addr, "");
    c = resolve("X-Forwarded-Proto: HTTP");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
    c = resolve("X-Forwarded-Proto: gopher");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    CHECK(why != NULL);
    /* an appending proxy: the client sent "https" itself, the proxy added
     * what it really spoke; the client's position is 0 (no hop skipped) */
    c = resolve("X-Forwarded-Proto: https, http\nX-Forwarded-For: 203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
    /* two appending proxies: the client's entry is the first proxy's */
    c = resolve("X-Forwarded-Proto: https, http\nX-Forwarded-For: 203.0.113.7, 10.0.0.2");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    CHECK_STR(c->addr, "203.0.113.7");
    /* one value set by the last proxy for the whole chain */
    c = resolve("X-Forwarded-Proto: https\nX-Forwarded-For: 203.0.113.7, 10.0.0.2");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    /* a list shorter than the client's position: ambiguous */
    c = resolve("X-Forwarded-Proto: https, http\n"
                "X-Forwarded-For: 203.0.113.7, 10.0.0.3, 10.0.0.2");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    CHECK(why != NULL);
    c = resolve("X-Forwarded-Ssl: on");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    c = resolve("X-Forwarded-Ssl: off");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
    /* X-Forwarded-Proto wins */
    c = resolve("X-Forwarded-Ssl: on\nX-Forwarded-Proto: http");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
}

static void test_host(void)
{
    gw_req_client_t *c;

    c = resolve("X-Forwarded-Host: example.com");
    CHECK_INT(c->host.len, 0); /* off unless --forwarded-host */
    conf.use_host = true;
    c = resolve("X-Forwarded-Host: example.com:8443");
    CHECK_STR(host_of(c), "example.com:8443");
    CHECK_INT(c->server_port, 8443);
    c = resolve("X-Forwarded-Host: example.com\nX-Forwarded-Port: 443");
    CHECK_STR(host_of(c), "example.com");
    CHECK_INT(c->server_port, 443);
    c = resolve("X-Forwarded-Host: [2001:db8::1]:8080");
    CHECK_STR(host_of(c), "[2001:db8::1]:8080");
    CHECK_INT(c->server_port, 8080);
    c = resolve("X-Forwarded-Host: evil.com/path");
    CHECK_INT(c->host.len, 0);
    CHECK(why != NULL);
    c = resolve("X-Forwarded-Host: a b");
    CHECK_INT(c->host.len, 0);
    c = resolve("X-Forwarded-Port: 0");
    CHECK_INT(c->server_port, 0);
    c = resolve("Forwarded: host=example.org;proto=https");
    CHECK_INT(c->host.len, 0); /* Forwarded is not read by default */
    conf.use_host = false;
}

static void test_forwarded(void)
{
    gw_req_client_t *c;

    conf.family = GW_FWD_FORWARDED;
    c = resolve("Forwarded: for=192.0.2.60;proto=https;by=203.0.113.43");
    CHECK_STR(c->addr, "192.0.2.60");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    c = resolve("Forwarded: For=\"[2001:db8:cafe::17]:4711\"");
    CHECK_STR(c->addr, "2001:db8:cafe::17");
    CHECK_STR(c->port, "4711");
    c = resolve("Forwarded: for=1.1.1.1, for=203.0.113.7;proto=https, for=10.0.0.2;proto=http");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    c = resolve("Forwarded: for=1.1.1.1\nForwarded: for=203.0.113.7 ; proto=https\n"
                "Forwarded: for=10.0.0.2");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    /* unknown and obfuscated nodes: no address, the rest of the element counts */
    c = resolve("Forwarded: for=unknown;proto=https");
    CHECK_STR(c->addr, "");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    c = resolve("Forwarded: for=_hidden, for=10.0.0.1");
    CHECK_STR(c->addr, "");
    c = resolve("Forwarded: for=\"_gazonk\";proto=http");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
    /* what RFC 7239 refuses */
    static const char *bad[] = {
        "Forwarded: for=\"203.0.113.7",              /* unterminated */
        "Forwarded: for=203.0.113.7;for=1.1.1.1",     /* twice in one element */
        "Forwarded: for=2001:db8::1",                 /* IPv6 must be quoted and bracketed */
        "Forwarded: for=\"2001:db8::1\"",
        "Forwarded: =x",
        "Forwarded: for",
        "Forwarded: for=",
        "Forwarded: for=203.0.113.7 junk",
        "Forwarded: for=\"203.0.\\113.7\"",
        "Forwarded: for=203.0.113.7\"",
        "Forwarded: ;",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = resolve(bad[i]);
        CHECK_STR(c->addr, "");
        CHECK(why != NULL);
        CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    }
    /* a bad proto= is ignored alone */
    c = resolve("Forwarded: for=203.0.113.7;proto=ftp");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    CHECK(why != NULL);
    /* an element the client made up, left of its own, does not matter: the
     * field is read from its end, as far as the walk goes */
    c = resolve("Forwarded: for=\"garbage, for=203.0.113.7");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK(why == NULL);
    c = resolve("Forwarded: x=\"a\\\"b\", for=203.0.113.7;proto=https");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    c = resolve("Forwarded: for=\"garbage\nForwarded: for=203.0.113.7");
    CHECK_STR(c->addr, "203.0.113.7");
    /* empty elements and pairs (RFC 7239 4) */
    c = resolve("Forwarded: , ;for=203.0.113.7;;proto=https; ,,");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    conf.family = GW_FWD_X_FORWARDED;
}

/* A client behind a trusted proxy adds what it likes left of the proxy's
 * entries (more entries, more fields, junk): the address the walk finds
 * stays, instead of falling back to the proxy's own (127.0.0.1, which an
 * app may trust). */
static void test_client_junk_keeps_the_address(void)
{
    static char many[8192];
    gw_req_client_t *c;
    size_t n = 0;

    /* HAProxy adds a field of its own after the client's 16 */
    for (int i = 0; i < 16; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "X-Forwarded-For: 1.1.1.%d\n", i);
    snprintf(many + n, sizeof(many) - n, "X-Forwarded-For: 203.0.113.7");
    c = resolve(many);
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK(why == NULL);
    /* ...but when every kept hop is trusted, the let-go ones are unknown */
    n = 0;
    for (int i = 0; i < 17; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "X-Forwarded-For: 10.0.0.%d\n", i);
    c = resolve(many);
    CHECK_STR(c->addr, "");
    CHECK(why && strstr(why, "too many fields"));
    /* an appending proxy, the client's 40 entries of X-Forwarded-Proto */
    n = (size_t)snprintf(many, sizeof(many), "X-Forwarded-For: 203.0.113.7\nX-Forwarded-Proto: ");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "https, ");
    snprintf(many + n, sizeof(many) - n, "http");
    c = resolve(many);
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTP);
    /* headers the proxy does not set are the client's: a bad one is ignored alone */
    c = resolve("X-Forwarded-For: 203.0.113.7\nX-Forwarded-Proto: gopher");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    CHECK(why != NULL);
    c = resolve("X-Forwarded-For: 203.0.113.7\nX-Forwarded-Ssl: bogus");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    conf.use_host = true;
    c = resolve("X-Forwarded-For: 203.0.113.7\nX-Forwarded-Proto: https\n"
                "X-Forwarded-Host: ok.example\nX-Forwarded-Port: x");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    CHECK_INT(c->host.len, 0); /* host and port go together */
    CHECK_INT(c->server_port, 0);
    conf.use_host = false;
    /* Forwarded: 17 fields, the proxy's last */
    conf.family = GW_FWD_FORWARDED;
    n = 0;
    for (int i = 0; i < 16; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "Forwarded: for=1.1.1.%d\n", i);
    snprintf(many + n, sizeof(many) - n, "Forwarded: for=203.0.113.7");
    c = resolve(many);
    CHECK_STR(c->addr, "203.0.113.7");
    /* junk left of the proxy's element, in the same field */
    c = resolve("Forwarded: for=\"[::1, ;;;===, for=203.0.113.7;proto=https");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    /* a trusted hop walks into what the client wrote: that is read, and refused */
    c = resolve("Forwarded: for=\"[::1, for=10.0.0.9");
    CHECK_STR(c->addr, "");
    CHECK(why != NULL);
    conf.family = GW_FWD_X_FORWARDED;
}

static void test_families(void)
{
    gw_req_client_t *c;

    /* the default reads X-Forwarded-* only: a client's Forwarded is passed on */
    c = resolve("Forwarded: for=1.1.1.1;proto=https\nX-Forwarded-For: 203.0.113.7");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    conf.family = GW_FWD_BOTH;
    c = resolve("Forwarded: for=203.0.113.7;proto=https\n"
                "X-Forwarded-For: 203.0.113.7\nX-Forwarded-Proto: https");
    CHECK_STR(c->addr, "203.0.113.7");
    CHECK_INT(c->scheme, GW_SCHEME_HTTPS);
    /* they disagree (a proxy writes one and passes the client's other on) */
    c = resolve("Forwarded: for=1.1.1.1;proto=https\nX-Forwarded-For: 203.0.113.7");
    CHECK_STR(c->addr, "");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    CHECK(why != NULL);
    c = resolve("Forwarded: for=203.0.113.7");
    CHECK_STR(c->addr, "203.0.113.7");
    conf.family = GW_FWD_X_FORWARDED;
    /* a gateway's CGI variables are its own business */
    cgi = true;
    c = resolve("X-Forwarded-For: 203.0.113.7\nX-Forwarded-Proto: https");
    CHECK_STR(c->addr, "");
    CHECK_INT(c->scheme, GW_SCHEME_UNSAID);
    cgi = false;
}

static void test_no_headers(void)
{
    gw_req_client_t *c = resolve("Host: x\nAccept: */*");
    gw_req_client_t zero = {0};
    CHECK(memcmp(c, &zero, sizeof(zero)) == 0);
    CHECK(why == NULL);
}

int main(void)
{
    gw_allow_add(&trusted, "10.0.0.0/8");
    gw_allow_add(&trusted, "::1");
    conf.trusted = &trusted;
    test_trusts();
    test_xff_walk();
    test_xff_refused();
    test_scheme();
    test_host();
    test_forwarded();
    test_client_junk_keeps_the_address();
    test_families();
    test_no_headers();
    gw_allow_dispose(&trusted);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
