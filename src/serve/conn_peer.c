/* Who the client is (part of the connection module, serve/conn_priv.h):
 * the accepted socket's address and whether --forwarded-allow-ips trusts
 * it, a PROXY protocol listener's header (C_PROXY) that names the client
 * instead (and the trust that follows from it), and what trusted proxies'
 * forwarded headers say of it, request by request. */
#include "serve/conn_priv.h"

#include "core/log.h"
#include "proto/forwarded.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void gw__conn_peer_open(gw_conn_t *c, const gw_listener_t *l, const struct sockaddr *sa)
{
    c->peer.listener = l;
    c->peer.addr[0] = c->peer.port[0] = c->peer.via[0] = '\0';
    c->peer.is_ssl = false;
    gw_allow_ip_from_sockaddr(&c->peer.ip, sa);
    c->peer.is_trusted = l->fwd && gw_fwd_trusts(l->fwd, &c->peer.ip);
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->peer.addr, sizeof(c->peer.addr));
        snprintf(c->peer.port, sizeof(c->peer.port), "%u", ntohs(in->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer.addr, sizeof(c->peer.addr));
        snprintf(c->peer.port, sizeof(c->peer.port), "%u", ntohs(in6->sin6_port));
    }
}

static void proxy_refused(gw_conn_t *c);
static void proxy_done(gw_conn_t *c);

/* A PROXY protocol listener's connection starts with the header (HAProxy's
 * proxy-protocol.txt), read under the header timeout like a request head:
 * its source becomes the peer, for REMOTE_ADDR, the logs and the trust in
 * forwarded headers; the balancer's own address stays in peer.via. LOCAL
 * (the balancer's health check) keeps the real peer; a source it cannot
 * name keeps the real peer's address, not its trust. Without a valid
 * header the connection closes: nothing after it can be told apart from a
 * forged one. True when what the read buffer holds past the header is to
 * be parsed as the first request. */
bool gw__conn_proxy_input(gw_conn_t *c)
{
    size_t used;
    gw_proxy_st_t st = gw_proxy_feed(&c->px, c->rbuf.data, c->rbuf.len, &used);

    if (st == GW_PROXY_AGAIN) {
        c->rbuf.len = 0; /* the parser keeps what it needs */
        return false;
    }
    if (st == GW_PROXY_ERROR) {
        proxy_refused(c);
        return false;
    }
    c->rbuf.len -= used;
    memmove(c->rbuf.data, c->rbuf.data + used, c->rbuf.len);
    proxy_done(c);
    return c->rbuf.len > 0;
}

/* --tls-proxy-protocol: the header comes in the clear before the TLS
 * handshake, so it is read from the socket itself, not through the
 * transport (whose first read is the handshake). Peeked, fed to the
 * parser, and then only the header's bytes are taken from the socket:
 * what follows (the ClientHello) stays there for the handshake, with no
 * edge to come for it, so a whole header leaves can_read set. Each byte
 * is peeked once and taken once. */
void gw__conn_proxy_peek(gw_conn_t *c)
{
    char buf[512];
    size_t used;
    ssize_t n, took;
    gw_proxy_st_t st;

    do
        n = recv(c->watch.fd, buf, sizeof(buf), MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->can_read = false;
        return;
    }
    if (n <= 0) { /* gone before its header was whole: nothing to answer */
        gw__conn_close(c);
        return;
    }
    st = gw_proxy_feed(&c->px, buf, (size_t)n, &used);
    if (st == GW_PROXY_ERROR) {
        proxy_refused(c);
        return;
    }
    /* The bytes peeked are still there: this takes exactly the header's. */
    do
        took = recv(c->watch.fd, buf, used, 0);
    while (took < 0 && errno == EINTR);
    if (took != (ssize_t)used) {
        gw__conn_close(c);
        return;
    }
    if (st == GW_PROXY_DONE)
        proxy_done(c);
    else if ((size_t)n < sizeof(buf))
        c->can_read = false; /* it had no more: the next bytes bring an edge */
}

static void proxy_refused(gw_conn_t *c)
{
    gw_log_error("proxy protocol: %s: %s; closing", c->peer.addr[0] ? c->peer.addr : "unix",
                 c->px.reason);
    gw__conn_close(c);
}

/* The header is whole: who it names becomes the peer. */
static void proxy_done(gw_conn_t *c)
{
    gw_peer_t *pe = &c->peer;

    c->state = C_HEAD;
    if (c->px.info.is_unnamed) {
        /* A client the balancer could not name (v1 UNKNOWN, v2 PROXY with an
         * unspecified family): the balancer's address stands for REMOTE_ADDR,
         * but its trust does not pass to whoever it relays, whose forwarded
         * headers are then its own say. */
        pe->is_trusted = false;
    } else if (!c->px.info.is_local) {
        const gw_proxy_info_t *in = &c->px.info;
        /* pe->addr is "" on a unix listener: copy strings, not sizeof(via) bytes */
        snprintf(pe->via, sizeof(pe->via), "%s", pe->addr[0] ? pe->addr : "unix");
        pe->ip = in->src;
        gw_allow_ip_format(&in->src, pe->addr);
        if (in->src.family == AF_UNIX)
            pe->port[0] = '\0';
        else
            snprintf(pe->port, sizeof(pe->port), "%u", (unsigned)in->src_port);
        pe->is_ssl = in->is_ssl;
        /* Not gw_fwd_trusts(): its "unix peers are trusted" means gangway's
         * own socket, whose permissions say who connects. A unix client of
         * the balancer's is anyone its socket let in (a TLS terminator
         * relaying the internet, say): in no list, so never trusted. */
        pe->is_trusted = pe->listener->fwd && in->src.family != AF_UNIX &&
                         gw_fwd_trusts(pe->listener->fwd, &pe->ip);
    }
}

/* What trusted proxies say of the client, for the environ and the log. */
void gw__conn_peer_resolve(gw_conn_t *c)
{
    if (c->peer.is_trusted) {
        const gw_fwd_conf_t *fwd = c->peer.listener->fwd;
        const char *why = gw_fwd_resolve(fwd, &c->req, c->rbuf.data);
        if (why && fwd->log)
            gw_log_error("forwarded: %s: %s; ignored", c->peer.addr[0] ? c->peer.addr : "unix",
                         why);
    }
    if (c->peer.is_ssl && !c->req.client.scheme)
        c->req.client.scheme = GW_SCHEME_HTTPS;
}
