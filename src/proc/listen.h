/* Listening sockets: address parsing and binding. */
#ifndef GW_LISTEN_H
#define GW_LISTEN_H

#include "core/allow.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum gw_proto { GW_PROTO_HTTP, GW_PROTO_UWSGI };

struct gw_fwd_conf; /* proto/forwarded.h */

typedef struct gw_listener {
    int fd;
    bool is_unix;
    char host[64];  /* numeric address as bound, or "localhost" for unix */
    char port[8];   /* as bound (port 0 resolves to the real one) */
    char path[108]; /* unix socket path */
    char url[160];  /* for logs: http://127.0.0.1:8000, http://unix:/run/x.sock */
    bool is_reuse_port;          /* each worker listens on a socket of its own */
    bool is_activated;           /* handed in by systemd: its file is not ours to remove */
    enum gw_proto proto;
    const gw_allow_t *allow;     /* who may connect (unix sockets always may): uwsgi
                                  * (--uwsgi-allow-from), a PROXY protocol listener
                                  * (--proxy-allow-from); NULL: everyone */
    bool is_proxy_protocol;      /* HTTP: each connection starts with a PROXY header */
    const struct gw_fwd_conf *fwd; /* HTTP: whose forwarded headers count; NULL: nobody's */
    int backlog;
    unsigned defer_accept;       /* TCP_DEFER_ACCEPT seconds (0: off), see gw_listen_tune() */
    bool is_nodelay;             /* TCP_NODELAY is on the listener: accepted sockets inherit it */
    unsigned https;              /* 1 + the index of the --https option it serves; 0: plain */
    const struct gw_tls_ctx *tls; /* its TLS context (serve/tls.h; the master's, inherited),
                                   * or NULL: plain */
    struct sockaddr_storage addr; /* as bound, for gw_listen_reuse_port() */
    socklen_t addrlen;
} gw_listener_t;

/* Binds and listens on addr ("host:port", ":port", "[v6]:port", "unix:/path"
 * or "/path"). Returns 0, or a negative errno with a one-line reason in err. */
int gw_listen_open(gw_listener_t *l, const char *addr, int backlog, char *err, size_t errlen);

/* With SO_REUSEPORT (TCP only): gw_listen_open() then only binds, holding the
 * address without taking connections, and each worker calls this to listen
 * on a socket of its own in the same group. 0 or -errno. */
int gw_listen_open_reuse(gw_listener_t *l, const char *addr, int backlog, char *err,
                         size_t errlen);
int gw_listen_reuse_port(gw_listener_t *l);

/* Socket options for a TCP listener, kept across gw_listen_reuse_port():
 * TCP_NODELAY (whole responses go out at once; Nagle would only delay them),
 * set once here because accepted sockets inherit it, and TCP_DEFER_ACCEPT,
 * so that a worker wakes for a connection only once its first bytes are in
 * (the accept, the read and the parse happen in one go, with no epoll round
 * for a connection that has nothing to say yet). A socket systemd handed in
 * keeps its own DeferAcceptSec=. Unix sockets have neither: a no-op. */
void gw_listen_tune(gw_listener_t *l, uint64_t defer_accept_s);

/* Makes l speak proto (its url says so in the logs). */
void gw_listen_set_proto(gw_listener_t *l, enum gw_proto proto);

/* True when sa may use l (l->allow: --uwsgi-allow-from, --proxy-allow-from;
 * always for a listener without one and for unix sockets). */
bool gw_listen_allows(const gw_listener_t *l, const struct sockaddr *sa);

/* Takes a socket handed in (systemd, or the previous image of a re-executed
 * master) and describes it. Its role comes from the socket itself: one that
 * listens is shared by the workers; a TCP one that only holds its address
 * with SO_REUSEPORT is a --reuse-port placeholder (each worker listens on a
 * socket of its own, with backlog). 0, -ENOTSOCK (not a stream socket), or
 * -EINVAL (it neither listens nor holds a reuse-port address). l->fd is the
 * socket only on success; the caller keeps it otherwise. */
int gw_listen_adopt(gw_listener_t *l, int fd, int backlog);

/* A --reuse-port placeholder starts listening itself, shared by the workers
 * (a reload that turned --reuse-port off). 0 or -errno; no-op for others. */
int gw_listen_share(gw_listener_t *l);

/* True when gw_listen_open(addr) would bind the address l is bound to; port
 * 0 in addr matches any port (the port the kernel picked for it). Host names
 * are resolved as gw_listen_open() resolves them. */
bool gw_listen_matches(const gw_listener_t *l, const char *addr);

/* Checks that addr is an address gw_listen_open() would take (resolving a
 * host name, binding nothing). 0, or -EINVAL with the reason in err. */
int gw_listen_check(const char *addr, char *err, size_t errlen);

/* True when the listening socket fd is bound to addr (numeric addresses and
 * unix paths; systemd socket activation matches its sockets to --http and
 * --uwsgi this way). */
bool gw_listen_is_bound_to(int fd, const char *addr);

void gw_listen_close(gw_listener_t *l);

#endif
