/* Forwarded headers: what the proxies in front of gangway say of the
 * client (X-Forwarded-For, -Proto, -Ssl, -Host, -Port, and RFC 7239's
 * Forwarded). Read only from a trusted peer (the caller checks the
 * connection's peer against conf->trusted); the hops are walked from the
 * right, skipping the trusted ones, and the first untrusted one is the
 * client (or the leftmost, when every hop is trusted). A pure parser over
 * the request's header spans: no sockets, no allocation, bounded work. */
#ifndef GW_FORWARDED_H
#define GW_FORWARDED_H

#include "core/allow.h"
#include "proto/request.h"

#include <stdbool.h>

/* Which header family counts (--forwarded-headers). */
enum gw_fwd_family {
    GW_FWD_X_FORWARDED, /* X-Forwarded-For / -Proto / -Ssl / -Host / -Port (the default) */
    GW_FWD_FORWARDED,   /* RFC 7239 Forwarded */
    GW_FWD_BOTH,        /* both; when they disagree, neither */
};

/* Hops walked at most; a chain with more trusted ones is ignored. */
#define GW_FWD_MAX_HOPS 32

typedef struct gw_fwd_conf {
    const gw_allow_t *trusted; /* --forwarded-allow-ips (unix peers are always trusted) */
    enum gw_fwd_family family;
    bool use_host;             /* --forwarded-host: X-Forwarded-Host/-Port, Forwarded host= */
    bool log;                  /* --log-forwarded: say why a value was ignored */
} gw_fwd_conf_t;

/* True when the connection's peer may speak for its clients: a unix
 * socket's peer, or an address in conf->trusted. */
bool gw_fwd_trusts(const gw_fwd_conf_t *conf, const gw_ip_t *peer);

/* Reads r's forwarded headers (HTTP fields; a request of CGI variables is
 * left alone: its gateway says REMOTE_ADDR itself) and sets r->client from
 * what they say. rb is the read buffer the spans point into; r->client.host
 * is a slice of it. Returns NULL, or why a header was ignored (static text,
 * for --log-forwarded); an ignored header changes nothing. Call only for a
 * trusted peer. Never runs Python. */
const char *gw_fwd_resolve(const gw_fwd_conf_t *conf, gw_req_t *r, const char *rb);

#endif
