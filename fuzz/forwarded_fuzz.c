/* libFuzzer target for the forwarded headers: header fields built from the
 * input go straight into gw_fwd_resolve(). No sockets, no Python.
 *
 * Input: one control byte, then header lines separated by '\n'; each
 * line's first byte picks its name (below), the rest is its value.
 *   byte 0, bits 0-1: the family (X-Forwarded-*, Forwarded, both)
 *   byte 0, bit 2:    --forwarded-host
 *   byte 0, bit 3:    "*" trusted (every hop), else 10.0.0.0/8 and ::1
 *
 * Besides the sanitizers, it aborts when
 *   - the client's address is not one an address parser reads back, its
 *     port not 1 to 65535, its scheme out of range;
 *   - the host is not a slice of one of the fields' values, or comes (or a
 *     server port does) without --forwarded-host;
 *   - the result depends on what lies left of the client: with X-Forwarded-For
 *     (or Forwarded) read alone, a result whose address is untrusted (the
 *     walk stopped there) must not change when a field of garbage comes
 *     before every other field of that name (the client's own say), even
 *     when that makes more fields than are kept;
 *   - resolving twice differs. */
#include "core/allow.c"
#include "proto/forwarded.c"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "forwarded_fuzz: " __VA_ARGS__);                                           \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

static const char *const names[] = {
    "X-Forwarded-For", "x-forwarded-proto", "X-Forwarded-Ssl", "X-Forwarded-Host",
    "X-FORWARDED-PORT", "Forwarded", "Host", "X-Forwarded-Forx",
};
#define NNAMES (sizeof(names) / sizeof(names[0]))
#define MAX_LINES 64

static char rb[1 << 17];
static gw_header_t hdrs[MAX_LINES + 1];

/* The garbage fields put first by build(): name, then value. */
static const char g_xff[] = "X-Forwarded-For" "1.1.1.1, \"[::,junk";
static const char g_fwd[] = "Forwarded" "for=1.1.1.1, for=\"[::,;==\\";

/* Lays the lines out in rb as "name" + value spans (the garbage field g of
 * name length gn first, when g); returns the number of XFF fields. */
static unsigned build(gw_req_t *r, const uint8_t *in, size_t n, const char *g, size_t gn)
{
    size_t off = 0;
    unsigned xff = 0;
    bool prefix = g != NULL;

    memset(r, 0, sizeof(*r));
    r->headers = hdrs;
    if (prefix) {
        memcpy(rb, g, strlen(g));
        hdrs[0].name = (gw_span_t){0, (uint32_t)gn};
        hdrs[0].value = (gw_span_t){(uint32_t)gn, (uint32_t)(strlen(g) - gn)};
        off = strlen(g);
        r->nheaders = 1;
    }
    for (size_t i = 0; i < n && r->nheaders < MAX_LINES + (prefix ? 1 : 0);) {
        const uint8_t *nl = memchr(in + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - in) : n;
        const char *name = names[in[i] % NNAMES];
        size_t nn = strlen(name), vn = end - i - 1;

        if (end == i) { /* an empty line: no name byte */
            i = end + 1;
            continue;
        }
        if (in[i] % NNAMES == 0)
            xff++;
        memcpy(rb + off, name, nn);
        memcpy(rb + off + nn, in + i + 1, vn);
        hdrs[r->nheaders].name = (gw_span_t){(uint32_t)off, (uint32_t)nn};
        hdrs[r->nheaders].value = (gw_span_t){(uint32_t)(off + nn), (uint32_t)vn};
        r->nheaders++;
        off += nn + vn;
        i = end + 1;
    }
    return xff;
}

static void check(const gw_fwd_conf_t *conf, const gw_req_t *r)
{
    const gw_req_client_t *c = &r->client;
    gw_ip_t ip;
    bool in_value = false;

    if (c->addr[0] && gw_allow_ip_parse(&ip, c->addr, strlen(c->addr)) < 0)
        FAIL("client address '%s'", c->addr);
    if (c->port[0] && (!c->addr[0] || atoi(c->port) < 1 || atoi(c->port) > 65535))
        FAIL("client port '%s'", c->port);
    if (c->scheme > GW_SCHEME_HTTPS)
        FAIL("scheme %u", c->scheme);
    if ((c->host.len || c->server_port) && !conf->use_host)
        FAIL("a host without --forwarded-host");
    for (uint32_t i = 0; i < r->nheaders && c->host.len; i++)
        in_value |= c->host.off >= r->headers[i].value.off &&
                    c->host.off + c->host.len <= r->headers[i].value.off + r->headers[i].value.len;
    if (c->host.len && !in_value)
        FAIL("host %u+%u is in no value", c->host.off, c->host.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gw_allow_t local, any;
    static gw_req_t r;
    gw_fwd_conf_t conf;
    gw_req_client_t first, again;
    const char *why;
    unsigned xff;

    if (size < 1 || size > 60000)
        return 0;
    if (!local.n) {
        gw_allow_add(&local, "10.0.0.0/8");
        gw_allow_add(&local, "::1");
        gw_allow_add(&any, "*");
    }
    conf.family = (enum gw_fwd_family)((data[0] & 3) % 3);
    conf.use_host = data[0] & 4;
    conf.trusted = data[0] & 8 ? &any : &local;
    conf.log = false;

    xff = build(&r, data + 1, size - 1, NULL, 0);
    why = gw_fwd_resolve(&conf, &r, rb);
    check(&conf, &r);
    first = r.client;
    build(&r, data + 1, size - 1, NULL, 0);
    if (gw_fwd_resolve(&conf, &r, rb) != why || memcmp(&r.client, &first, sizeof(first)))
        FAIL("two runs differ");

    /* What the client wrote left of its own address never counts. */
    if (conf.family != GW_FWD_BOTH && !why && first.addr[0] &&
        (xff || conf.family == GW_FWD_FORWARDED)) {
        const char *g = conf.family == GW_FWD_X_FORWARDED ? g_xff : g_fwd;
        size_t gn = conf.family == GW_FWD_X_FORWARDED ? 15 : 9;
        gw_ip_t ip;
        gw_allow_ip_parse(&ip, first.addr, strlen(first.addr));
        if (!gw_allow_has(conf.trusted, &ip)) {
            uint32_t shift = (uint32_t)strlen(g);
            build(&r, data + 1, size - 1, g, gn);
            gw_fwd_resolve(&conf, &r, rb);
            again = r.client;
            if (again.host.len)
                again.host.off -= shift;
            if (memcmp(&again, &first, sizeof(first)) != 0)
                FAIL("a field before the client's changed the result: '%s' became '%s'",
                     first.addr, again.addr);
        }
    }
    return 0;
}
