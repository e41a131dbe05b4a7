/* Listening sockets: address parsing and binding. */
#ifndef GW_LISTEN_H
#define GW_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_listener {
    int fd;
    bool is_unix;
    char host[64];  /* numeric address as bound, or "localhost" for unix */
    char port[8];   /* as bound (port 0 resolves to the real one) */
    char path[108]; /* unix socket path */
    char url[160];  /* for logs: http://127.0.0.1:8000, http://unix:/run/x.sock */
} gw_listener_t;

/* Binds and listens on addr ("host:port", ":port", "[v6]:port", "unix:/path"
 * or "/path"). Returns 0, or a negative errno with a one-line reason in err. */
int gw_listen_open(gw_listener_t *l, const char *addr, int backlog, char *err, size_t errlen);

void gw_listen_close(gw_listener_t *l);

#endif
