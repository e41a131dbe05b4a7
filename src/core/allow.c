/* Addresses and the lists of trusted ones (allow.h). */
#include "core/allow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ::ffff:0:0/96, byte by byte (gw_ip_t's bytes need not be aligned for
 * IN6_IS_ADDR_V4MAPPED's 32-bit reads). */
static bool is_v4_mapped(const unsigned char *a)
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, prefix, sizeof(prefix)) == 0;
}

int gw_allow_ip_parse(gw_ip_t *ip, const char *s, size_t n)
{
    char text[GW_IP_TEXT];

    /* inet_pton() wants a C string; an address never needs more room. */
    if (n == 0 || n >= sizeof(text) || memchr(s, '\0', n))
        return -EINVAL;
    memcpy(text, s, n);
    text[n] = '\0';
    memset(ip, 0, sizeof(*ip));
    /* AF_INET first: inet_pton(AF_INET6) takes no bare dotted quad anyway,
     * and glibc's AF_INET refuses leading zeros ("010.0.0.1" is octal to
     * inet_aton: a classic way to make two parsers disagree). */
    if (memchr(text, ':', n) == NULL) {
        if (inet_pton(AF_INET, text, ip->a) != 1)
            return -EINVAL;
        ip->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, ip->a) != 1)
        return -EINVAL;
    ip->family = AF_INET6;
    return 0;
}

void gw_allow_ip_from_sockaddr(gw_ip_t *ip, const struct sockaddr *sa)
{
    memset(ip, 0, sizeof(*ip));
    if (sa && sa->sa_family == AF_INET) {
        ip->family = AF_INET;
        memcpy(ip->a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        ip->family = AF_INET6;
        memcpy(ip->a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        ip->family = AF_UNIX;
    }
}

void gw_allow_ip_format(const gw_ip_t *ip, char buf[GW_IP_TEXT])
{
    buf[0] = '\0';
    if (ip->family == AF_INET || ip->family == AF_INET6)
        inet_ntop(ip->family, ip->a, buf, GW_IP_TEXT);
}

int gw_allow_add(gw_allow_t *a, const char *cidr)
{
    const char *slash = strchr(cidr, '/');
    size_t hl = slash ? (size_t)(slash - cidr) : strlen(cidr);
    gw_cidr_t c = {0};
    gw_cidr_t *nv;
    gw_ip_t ip;
    unsigned max;

    if (strcmp(cidr, "*") == 0) {
        a->is_any = true;
        return 0;
    }
    if (gw_allow_ip_parse(&ip, cidr, hl) < 0)
        return -EINVAL;
    c.family = ip.family;
    memcpy(c.addr, ip.a, sizeof(c.addr));
    max = ip.family == AF_INET ? 32 : 128;
    c.bits = max;
    if (slash) {
        char *end;
        unsigned long b;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        b = strtoul(slash + 1, &end, 10);
        if (*end || b > max)
            return -EINVAL;
        c.bits = (unsigned)b;
    }
    /* Addresses match as IPv4 when they are IPv4-mapped (gw_allow_has), so
     * an entry written that way is kept as the IPv4 block it names. */
    if (c.family == AF_INET6 && c.bits >= 96 && is_v4_mapped(c.addr)) {
        c.family = AF_INET;
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.bits -= 96;
    }
    if (!(nv = realloc(a->v, (a->n + 1) * sizeof(*nv))))
        return -ENOMEM;
    nv[a->n++] = c;
    a->v = nv;
    return 0;
}

int gw_allow_add_list(gw_allow_t *a, const char *list, const char **bad, size_t *badlen)
{
    const char *p = list;

    for (;;) {
        const char *end = strchr(p, ','), *s = p, *e;
        char one[64];
        int rc;

        e = end ? end : p + strlen(p);
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == s || (size_t)(e - s) >= sizeof(one)) {
            rc = -EINVAL;
        } else {
            memcpy(one, s, (size_t)(e - s));
            one[e - s] = '\0';
            rc = gw_allow_add(a, one);
        }
        if (rc < 0) {
            if (rc == -EINVAL && bad) {
                *bad = s;
                *badlen = (size_t)(e - s);
            }
            return rc;
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

void gw_allow_dispose(gw_allow_t *a)
{
    free(a->v);
    a->v = NULL;
    a->n = 0;
    a->is_any = false;
}

static bool prefix_eq(const unsigned char *x, const unsigned char *y, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(x, y, bytes) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (x[bytes] & mask) == (y[bytes] & mask);
}

bool gw_allow_has(const gw_allow_t *a, const gw_ip_t *ip)
{
    const unsigned char *addr = ip->a;
    int family = ip->family;

    if (a->is_any)
        return true;
    if (family == AF_INET6 && is_v4_mapped(addr)) {
        /* ::ffff:a.b.c.d is an IPv4 peer on a dual-stack socket */
        addr += 12;
        family = AF_INET;
    } else if (family != AF_INET && family != AF_INET6) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const gw_cidr_t *c = &a->v[i];
        if (c->family == family && prefix_eq(addr, c->addr, c->bits))
            return true;
    }
    return false;
}
