/* Listening sockets: address parsing and binding. */
#ifndef GW_LISTEN_H
#define GW_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct gw_listener {
    int fd;
    bool is_unix;
    char host[64];  /* numeric address as bound, or "localhost" for unix */
    char port[8];   /* as bound (port 0 resolves to the real one) */
    char path[108]; /* unix socket path */
    char url[160];  /* for logs: http://127.0.0.1:8000, http://unix:/run/x.sock */
    bool is_reuse_port;          /* each worker listens on a socket of its own */
    int backlog;
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

/* Describes an already listening socket handed in (re-exec): 0 or -errno. */
int gw_listen_adopt(gw_listener_t *l, int fd);

void gw_listen_close(gw_listener_t *l);

#endif
