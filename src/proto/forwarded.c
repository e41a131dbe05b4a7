/* Forwarded headers (forwarded.h). Each proxy appends the address it got
 * the connection from to X-Forwarded-For (or a for= element to Forwarded),
 * so the list reads client, proxy 1, proxy 2 ... and only its right end,
 * written by the peer gangway trusts, is known to be true: everything left
 * of the first untrusted hop is whatever that hop sent. So the walk starts
 * at the right and reads nothing past the client it finds; garbage further
 * left (a client's own X-Forwarded-For) is never even parsed.
 *
 * The scheme, host and port lists are read at the client's position too:
 * a proxy that appends to X-Forwarded-Proto makes it as long as the hop
 * list, and the client's entry is the one its first proxy wrote; a single
 * value is one the last proxy set for the whole chain. Anything else is
 * ambiguous and ignored. Those lists are read from the end only as far as
 * that position too, and a bad scheme or host is ignored alone: whatever
 * the client adds on the left (more entries, more fields, junk) cannot
 * make the address the walk found fall back to the proxy's own, which an
 * app may trust (127.0.0.1). Forwarded is read from the right, element by
 * element, for the same reason. Work is linear in the headers' size. */
#include "proto/forwarded.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* Fields of one name kept (each is a header line of its own): the last
 * ones, which the proxies wrote (HAProxy adds a line of its own after the
 * client's). */
#define MAX_FIELDS 16
#define MAX_HOST 255

typedef struct list {
    const char *v[MAX_FIELDS];
    size_t n[MAX_FIELDS];
    unsigned nf;
    bool is_over; /* more fields than MAX_FIELDS: the first ones were let go */
} list_t;

/* A reverse iterator over a list's comma-separated entries, last field
 * first; empty entries are skipped (RFC 9110 5.6.1). */
typedef struct rit {
    const list_t *l;
    int f;       /* the field being read, -1 when done */
    size_t end;  /* entries of field f end before here */
} rit_t;

static void rit_init(rit_t *it, const list_t *l)
{
    it->l = l;
    it->f = (int)l->nf - 1;
    it->end = it->f >= 0 ? l->n[it->f] : 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool rit_next(rit_t *it, const char **s, size_t *n)
{
    while (it->f >= 0) {
        const char *v = it->l->v[it->f];
        size_t e = it->end, b = e;
        bool last_in_field;

        while (b > 0 && v[b - 1] != ',')
            b--;
        last_in_field = b == 0;
        *s = v + b;
        *n = e - b;
        if (last_in_field) {
            if (--it->f >= 0)
                it->end = it->l->n[it->f];
        } else {
            it->end = b - 1;
        }
        while (*n && is_ows(**s))
            (*s)++, (*n)--;
        while (*n && is_ows((*s)[*n - 1]))
            (*n)--;
        if (*n)
            return true;
    }
    return false;
}

/* What one header family says of the client. */
typedef struct said {
    bool has_addr;
    gw_ip_t ip;
    bool has_port;
    uint16_t port;
    uint8_t scheme;
    const char *host;
    size_t host_len;
    uint16_t server_port;
} said_t;

bool gw_fwd_trusts(const gw_fwd_conf_t *conf, const gw_ip_t *peer)
{
    return peer->family == AF_UNIX || (conf->trusted && gw_allow_has(conf->trusted, peer));
}

/* A port: 1 to 5 digits, at most 65535 (0 is no port a client came from). */
static bool parse_port(const char *s, size_t n, uint16_t *port)
{
    uint32_t v = 0;

    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* A node: "192.0.2.1", "192.0.2.1:4711", "2001:db8::1" (X-Forwarded-For
 * only: RFC 7239 brackets IPv6), "[2001:db8::1]" or "[2001:db8::1]:4711".
 * A port may be obfuscated ("_abc", RFC 7239 6.3): no port then. */
static bool parse_node(const char *s, size_t n, bool bare_v6, gw_ip_t *ip, bool *has_port,
                       uint16_t *port)
{
    const char *colon;

    *has_port = false;
    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        size_t after;
        if (!rb || gw_allow_ip_parse(ip, s + 1, (size_t)(rb - s - 1)) < 0 ||
            ip->family != AF_INET6)
            return false;
        after = n - (size_t)(rb - s) - 1;
        if (after == 0)
            return true;
        if (rb[1] != ':')
            return false;
        if (after >= 2 && rb[2] == '_')
            return true;
        return (*has_port = parse_port(rb + 2, after - 1, port));
    }
    colon = memchr(s, ':', n);
    if (colon && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1)) /* two colons: IPv6 */
        return bare_v6 && gw_allow_ip_parse(ip, s, n) == 0;
    if (!colon)
        return gw_allow_ip_parse(ip, s, n) == 0 && ip->family == AF_INET;
    if (gw_allow_ip_parse(ip, s, (size_t)(colon - s)) < 0 || ip->family != AF_INET)
        return false;
    if (colon + 1 < s + n && colon[1] == '_')
        return true;
    return (*has_port = parse_port(colon + 1, n - (size_t)(colon - s) - 1, port));
}

static bool parse_scheme(const char *s, size_t n, uint8_t *scheme)
{
    if (n == 5 && strncasecmp(s, "https", 5) == 0)
        *scheme = GW_SCHEME_HTTPS;
    else if (n == 4 && strncasecmp(s, "http", 4) == 0)
        *scheme = GW_SCHEME_HTTP;
    else
        return false;
    return true;
}

/* A host as the Host header carries it: a name or IPv4 address, or an
 * IPv6 one in brackets, with an optional port; the port, if any, goes to
 * *port. Conservative on purpose: it becomes HTTP_HOST, which apps put in
 * links and redirects. */
static bool parse_host(const char *s, size_t n, uint16_t *port)
{
    size_t name_end = n;

    *port = 0;
    if (n == 0 || n > MAX_HOST)
        return false;
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        gw_ip_t ip;
        if (!rb || gw_allow_ip_parse(&ip, s + 1, (size_t)(rb - s - 1)) < 0)
            return false;
        name_end = (size_t)(rb - s) + 1;
    } else {
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            if (c == ':') {
                name_end = i;
                break;
            }
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_'))
                return false;
        }
        if (name_end == 0)
            return false;
    }
    if (name_end == n)
        return true;
    if (s[name_end] != ':')
        return false;
    return parse_port(s + name_end + 1, n - name_end - 1, port);
}

/* ---- X-Forwarded-* ---- */

/* The entry of l at the client's position (pos from the right; a single
 * entry stands for the whole chain). 1: found, 0: l is empty, -1: l is
 * ambiguous there. Reads pos + 1 entries at most (pos < GW_FWD_MAX_HOPS):
 * what lies further left is the client's, never read nor counted. */
static int entry_at(const list_t *l, unsigned pos, const char **s, size_t *n)
{
    rit_t it;
    unsigned count = 0;
    const char *es;
    size_t en;

    rit_init(&it, l);
    while (rit_next(&it, &es, &en)) {
        if (count == 0 || count == pos) { /* the last entry, or the client's */
            *s = es;
            *n = en;
        }
        if (count++ == pos)
            return 1;
    }
    if (count == 1 && !l->is_over)
        return 1; /* *s is the single entry */
    return count == 0 && !l->is_over ? 0 : -1;
}

typedef struct found {
    list_t xff, proto, ssl, host, port, fwd;
} found_t;

/* The scheme at the client's position. NULL or why it is ignored (*scheme
 * then unset). */
static const char *x_scheme(const found_t *f, unsigned pos, uint8_t *scheme)
{
    const char *s;
    size_t n;
    int rc;

    if ((rc = entry_at(&f->proto, pos, &s, &n)) < 0)
        return "X-Forwarded-Proto: a list that does not match the hops";
    if (rc)
        return parse_scheme(s, n, scheme) ? NULL : "X-Forwarded-Proto: neither http nor https";
    if ((rc = entry_at(&f->ssl, pos, &s, &n)) < 0)
        return "X-Forwarded-Ssl: a list that does not match the hops";
    if (rc == 1 && n == 2 && strncasecmp(s, "on", 2) == 0)
        *scheme = GW_SCHEME_HTTPS;
    else if (rc == 1 && n == 3 && strncasecmp(s, "off", 3) == 0)
        *scheme = GW_SCHEME_HTTP;
    else if (rc == 1)
        return "X-Forwarded-Ssl: neither on nor off";
    return NULL;
}

/* The host and port at the client's position: both or neither (they say
 * one thing, the authority asked for). NULL or why they are ignored. */
static const char *x_host(const found_t *f, unsigned pos, said_t *out)
{
    const char *s, *host = NULL;
    size_t n, host_len = 0;
    uint16_t port = 0;
    int rc;

    if ((rc = entry_at(&f->host, pos, &s, &n)) < 0)
        return "X-Forwarded-Host: a list that does not match the hops";
    if (rc) {
        if (!parse_host(s, n, &port))
            return "X-Forwarded-Host: not a host";
        host = s;
        host_len = n;
    }
    if ((rc = entry_at(&f->port, pos, &s, &n)) < 0)
        return "X-Forwarded-Port: a list that does not match the hops";
    if (rc && !parse_port(s, n, &port))
        return "X-Forwarded-Port: not a port";
    out->host = host;
    out->host_len = host_len;
    out->server_port = port;
    return NULL;
}

/* What X-Forwarded-* says (out is all zero on entry). NULL or why a part
 * was ignored: a bad address list leaves out empty (the client's position
 * is unknown, so is everything read there); a bad scheme or host leaves
 * the rest. */
static const char *x_forwarded(const gw_fwd_conf_t *conf, const found_t *f, said_t *out)
{
    unsigned pos = 0;
    const char *why, *why_host = NULL;

    if (f->xff.nf) {
        rit_t it;
        gw_ip_t ip;
        bool has_port, any = false, is_client = false;
        uint16_t port;
        const char *s;
        size_t n;

        rit_init(&it, &f->xff);
        for (unsigned hop = 0; rit_next(&it, &s, &n); hop++) {
            if (hop >= GW_FWD_MAX_HOPS) {
                memset(out, 0, sizeof(*out));
                return "X-Forwarded-For: too many trusted hops";
            }
            if (!parse_node(s, n, true, &ip, &has_port, &port)) {
                memset(out, 0, sizeof(*out));
                return "X-Forwarded-For: not an address";
            }
            out->ip = ip;
            out->has_port = has_port;
            out->port = port;
            any = true;
            pos = hop;
            if (!gw_allow_has(conf->trusted, &ip)) {
                is_client = true;
                break; /* the client: what is left of it is its own say */
            }
        }
        /* Every hop trusted: the leftmost is the client, unless fields
         * were let go, whose hops are unknown. */
        if (!is_client && f->xff.is_over) {
            memset(out, 0, sizeof(*out));
            return "X-Forwarded-For: too many fields";
        }
        out->has_addr = any;
    }
    why = x_scheme(f, pos, &out->scheme);
    if (conf->use_host)
        why_host = x_host(f, pos, out);
    return why ? why : why_host;
}

/* ---- RFC 7239 Forwarded ---- */

typedef struct elem {
    const char *v[3]; /* for, proto, host: the value (a quoted one without its quotes) */
    size_t n[3];
    bool has[3];
} elem_t;

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Reads the element of s that ends at *end, right to left (a field is read
 * from its end, where the proxies appended, only as far as the walk needs:
 * what the client wrote further left is never parsed, so its junk cannot
 * make the whole field ignored). On success *end is where the element
 * starts (at its ',' or 0). NULL or why it is not RFC 7239. A quoted-pair
 * is refused: read backwards, "\"" cannot be told from a closing quote, and
 * no proxy escapes an address, scheme or host. */
static const char *prev_element(const char *s, size_t *end, elem_t *e)
{
    static const char *const names[3] = {"for", "proto", "host"};
    size_t i = *end;
    bool any = false;

    memset(e, 0, sizeof(*e));
    for (;;) { /* pairs separated by ';', last first */
        size_t ve, vs, ne;
        int which = -1;

        while (i > 0 && is_ows(s[i - 1]))
            i--;
        if (i == 0 || s[i - 1] == ',')
            break;
        if (s[i - 1] == ';') { /* an empty pair (4: forwarded-element) */
            i--;
            continue;
        }
        if (s[i - 1] == '"') {
            const char *q;
            ve = i - 1;
            if (!(q = ve ? memrchr(s, '"', ve) : NULL))
                return "Forwarded: an unterminated quoted string";
            vs = (size_t)(q - s) + 1;
            if (memchr(s + vs, '\\', ve - vs))
                return "Forwarded: an escaped character in a value";
            i = vs - 1;
        } else {
            ve = i;
            while (i > 0 && is_tchar((unsigned char)s[i - 1]))
                i--;
            vs = i;
            if (vs == ve)
                return "Forwarded: junk after an element";
        }
        if (i == 0 || s[i - 1] != '=')
            return "Forwarded: a parameter without a value";
        ne = --i;
        while (i > 0 && is_tchar((unsigned char)s[i - 1]))
            i--;
        if (i == ne)
            return "Forwarded: a parameter without a name";
        for (int k = 0; k < 3; k++)
            if (ne - i == strlen(names[k]) && strncasecmp(s + i, names[k], ne - i) == 0)
                which = k;
        if (which >= 0) {
            if (e->has[which]) /* 4: at most once per element */
                return "Forwarded: a parameter given twice in an element";
            e->has[which] = true;
            e->v[which] = s + vs;
            e->n[which] = ve - vs;
        }
        any = true;
        while (i > 0 && is_ows(s[i - 1]))
            i--;
        if (i == 0 || s[i - 1] == ',')
            break;
        if (s[i - 1] != ';')
            return "Forwarded: junk before a parameter";
        i--;
    }
    if (!any)
        return "Forwarded: an element without a parameter";
    *end = i;
    return NULL;
}

/* What Forwarded says (out is all zero on entry). NULL or why a part was
 * ignored: a bad element on the walk leaves out empty; a bad proto= or
 * host= of the client's element leaves the rest. */
static const char *forwarded(const gw_fwd_conf_t *conf, const found_t *f, said_t *out)
{
    elem_t el;
    const char *why = NULL;
    unsigned hops = 0;
    bool done = false, any = false;

    for (int fi = (int)f->fwd.nf - 1; fi >= 0 && !done; fi--) {
        const char *v = f->fwd.v[fi];
        size_t end = f->fwd.n[fi];

        for (;;) {
            while (end > 0 && (is_ows(v[end - 1]) || v[end - 1] == ',')) /* empty elements */
                end--;
            if (end == 0)
                break;
            if (hops++ >= GW_FWD_MAX_HOPS) {
                why = "Forwarded: too many trusted hops";
                goto ignore;
            }
            if ((why = prev_element(v, &end, &el)))
                goto ignore;
            any = true;
            out->has_addr = false;
            /* for=unknown or an obfuscated node (6.2, 6.3): the client's
             * address is not said; its scheme and host still are. */
            if (!el.has[0] || (el.n[0] && el.v[0][0] == '_') ||
                (el.n[0] == 7 && strncasecmp(el.v[0], "unknown", 7) == 0)) {
                done = true;
                break;
            }
            if (!parse_node(el.v[0], el.n[0], false, &out->ip, &out->has_port, &out->port)) {
                why = "Forwarded: for= is not a node";
                goto ignore;
            }
            out->has_addr = true;
            if ((done = !gw_allow_has(conf->trusted, &out->ip)))
                break; /* else: a trusted hop, walk on */
        }
    }
    if (!any)
        return NULL;
    if (!done && f->fwd.is_over) { /* every hop trusted, and some were let go */
        why = "Forwarded: too many fields";
        goto ignore;
    }
    if (el.has[1] && !parse_scheme(el.v[1], el.n[1], &out->scheme))
        why = "Forwarded: proto= is neither http nor https";
    if (conf->use_host && el.has[2]) {
        if (parse_host(el.v[2], el.n[2], &out->server_port)) {
            out->host = el.v[2];
            out->host_len = el.n[2];
        } else if (!why) {
            why = "Forwarded: host= is not a host";
        }
    }
    return why;
ignore:
    memset(out, 0, sizeof(*out));
    return why;
}

/* ---- the request ---- */

/* Keeps the last MAX_FIELDS fields: the proxies' own come last. */
static void take(list_t *l, const char *v, size_t n)
{
    if (l->nf == MAX_FIELDS) {
        memmove(l->v, l->v + 1, (MAX_FIELDS - 1) * sizeof(l->v[0]));
        memmove(l->n, l->n + 1, (MAX_FIELDS - 1) * sizeof(l->n[0]));
        l->nf--;
        l->is_over = true;
    }
    l->v[l->nf] = v;
    l->n[l->nf++] = n;
}

/* Sorts r's fields into f; false when there is none of them. */
static bool gather(const gw_req_t *r, const char *rb, found_t *f)
{
    bool any = false;

    for (uint32_t i = 0; i < r->nheaders; i++) {
        const gw_header_t *h = &r->headers[i];
        const char *k = rb + h->name.off, *v = rb + h->value.off;
        size_t kn = h->name.len, vn = h->value.len;
        list_t *l = NULL;

        if (kn == 9 && strncasecmp(k, "forwarded", 9) == 0) {
            l = &f->fwd;
        } else if (kn >= 15 && kn <= 17 && strncasecmp(k, "x-forwarded-", 12) == 0) {
            if (kn == 15 && strncasecmp(k + 12, "for", 3) == 0)
                l = &f->xff;
            else if (kn == 17 && strncasecmp(k + 12, "proto", 5) == 0)
                l = &f->proto;
            else if (kn == 15 && strncasecmp(k + 12, "ssl", 3) == 0)
                l = &f->ssl;
            else if (kn == 16 && strncasecmp(k + 12, "host", 4) == 0)
                l = &f->host;
            else if (kn == 16 && strncasecmp(k + 12, "port", 4) == 0)
                l = &f->port;
        }
        if (l) {
            take(l, v, vn);
            any = true;
        }
    }
    return any;
}

static bool said_anything(const said_t *s)
{
    return s->has_addr || s->scheme || s->host_len || s->server_port;
}

static bool same(const said_t *a, const said_t *b)
{
    return a->has_addr == b->has_addr &&
           (!a->has_addr || (a->ip.family == b->ip.family && memcmp(a->ip.a, b->ip.a, 16) == 0)) &&
           a->scheme == b->scheme && a->host_len == b->host_len &&
           (!a->host_len || strncasecmp(a->host, b->host, a->host_len) == 0) &&
           a->server_port == b->server_port;
}

const char *gw_fwd_resolve(const gw_fwd_conf_t *conf, gw_req_t *r, const char *rb)
{
    found_t f;
    said_t x = {0}, fw = {0}, *use;
    const char *why = NULL, *why_x = NULL, *why_f = NULL;
    gw_req_client_t *c = &r->client;

    if (r->has_cgi_fields || !r->nheaders)
        return NULL;
    /* Only the counts: the arrays fill as fields are found (this runs for
     * every request from a trusted peer; most have no forwarded header). */
    f.xff.nf = f.proto.nf = f.ssl.nf = f.host.nf = f.port.nf = f.fwd.nf = 0;
    f.xff.is_over = f.proto.is_over = f.ssl.is_over = f.host.is_over = f.port.is_over =
        f.fwd.is_over = false;
    if (!gather(r, rb, &f))
        return NULL;
    if (conf->family != GW_FWD_FORWARDED)
        why_x = x_forwarded(conf, &f, &x);
    if (conf->family != GW_FWD_X_FORWARDED && f.fwd.nf)
        why_f = forwarded(conf, &f, &fw);
    why = why_x ? why_x : why_f;
    /* Both families from one request: a proxy writes one and may pass the
     * other on from the client untouched, so only agreement is believed. */
    if (conf->family == GW_FWD_BOTH && f.fwd.nf &&
        (f.xff.nf || f.proto.nf || f.ssl.nf || f.host.nf || f.port.nf) && !same(&x, &fw))
        return why ? why : "Forwarded and X-Forwarded-* disagree: neither is used";
    use = said_anything(&x) ? &x : &fw;
    if (use->has_addr) {
        gw_allow_ip_format(&use->ip, c->addr);
        if (use->has_port)
            snprintf(c->port, sizeof(c->port), "%u", (unsigned)use->port);
    }
    c->scheme = use->scheme;
    if (use->host_len) {
        c->host.off = (uint32_t)(use->host - rb);
        c->host.len = (uint32_t)use->host_len;
    }
    c->server_port = use->server_port;
    return why;
}
