/* Numeric IP addresses and lists of addresses and CIDR blocks that say who
 * is trusted: --uwsgi-allow-from (who may speak the uwsgi protocol),
 * --proxy-allow-from (who may send a PROXY protocol header) and
 * --forwarded-allow-ips (whose X-Forwarded-* and Forwarded headers count,
 * and which hops of them are skipped). One matcher for all three. */
#ifndef GW_ALLOW_H
#define GW_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* An address: AF_INET (4 bytes of a), AF_INET6 (16), AF_UNIX (a unix
 * socket's peer: no address) or 0 (none known). */
typedef struct gw_ip {
    uint8_t family;
    uint8_t a[16];
} gw_ip_t;

/* The longest address gw_allow_ip_format() writes, with its NUL. */
#define GW_IP_TEXT 46

typedef struct gw_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned bits;
} gw_cidr_t;

typedef struct gw_allow {
    gw_cidr_t *v;
    size_t n;
    bool is_any; /* "*" was given: every address */
} gw_allow_t;

/* Adds one entry to a: "127.0.0.0/8", "::1", "10.1.2.3", "2001:db8::/32"
 * or "*" (every address). 0, -EINVAL (not one of those) or -ENOMEM. */
int gw_allow_add(gw_allow_t *a, const char *cidr);

/* Adds each comma-separated entry of list ("10.0.0.0/8, ::1"; spaces
 * around entries are allowed); on -EINVAL *bad points at the first bad
 * entry (not NUL-terminated: *badlen bytes). 0, -EINVAL or -ENOMEM. */
int gw_allow_add_list(gw_allow_t *a, const char *list, const char **bad, size_t *badlen);

void gw_allow_dispose(gw_allow_t *a);

/* True when ip is in a. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, an
 * IPv4 peer on a dual-stack socket) matches as the IPv4 address it is.
 * AF_UNIX and 0 match only "*": callers decide what a unix peer is. */
bool gw_allow_has(const gw_allow_t *a, const gw_ip_t *ip);

/* Parses exactly s[0..n) as a numeric IPv4 (dotted quad, no leading zeros)
 * or IPv6 address, as inet_pton() reads them (no zone, no brackets).
 * 0 or -EINVAL. Never allocates. */
int gw_allow_ip_parse(gw_ip_t *ip, const char *s, size_t n);

/* The address of a socket address (AF_INET, AF_INET6; AF_UNIX or anything
 * else gives family AF_UNIX with no address). */
void gw_allow_ip_from_sockaddr(gw_ip_t *ip, const struct sockaddr *sa);

/* Writes ip as text ("192.0.2.1", "2001:db8::1"; "" for AF_UNIX and 0)
 * into buf of GW_IP_TEXT bytes at least. */
void gw_allow_ip_format(const gw_ip_t *ip, char buf[GW_IP_TEXT]);

#endif
