#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int open_unix(gw_listener_t *l, const char *path, int backlog, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    /* A stale socket file from a previous run would make bind fail; remove
     * it only when it is a socket nobody listens on. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == ECONNREFUSED)
                unlink(path);
            close(probe);
        }
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0)
        goto fail;
    l->fd = fd;
    l->is_unix = true;
    snprintf(l->path, sizeof(l->path), "%s", path);
    snprintf(l->host, sizeof(l->host), "localhost");
    snprintf(l->port, sizeof(l->port), "0");
    snprintf(l->url, sizeof(l->url), "http://unix:%s", path);
    return 0;
fail:
    rc = -errno;
    snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

static int open_addr(gw_listener_t *l, const char *addr, int backlog, bool reuse, char *err,
                     size_t errlen);

int gw_listen_open(gw_listener_t *l, const char *addr, int backlog, char *err, size_t errlen)
{
    return open_addr(l, addr, backlog, false, err, errlen);
}

int gw_listen_open_reuse(gw_listener_t *l, const char *addr, int backlog, char *err,
                         size_t errlen)
{
    return open_addr(l, addr, backlog, true, err, errlen);
}

int gw_listen_reuse_port(gw_listener_t *l)
{
    int one = 1, fd, rc;

    if (!l->is_reuse_port)
        return 0;
    fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, l->backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    close(l->fd); /* the master's placeholder: bound, never listening */
    l->fd = fd;
    return 0;
}

static int open_addr(gw_listener_t *l, const char *addr, int backlog, bool reuse, char *err,
                     size_t errlen)
{
    char host[256];
    const char *port, *colon;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = -1, one = 1, rc;

    memset(l, 0, sizeof(*l));
    l->fd = -1;
    l->backlog = backlog;
    if (strncmp(addr, "unix:", 5) == 0)
        return open_unix(l, addr + 5, backlog, err, errlen);
    if (addr[0] == '/' || addr[0] == '.')
        return open_unix(l, addr, backlog, err, errlen);

    if (addr[0] == '[') {
        const char *close_br = strchr(addr, ']');
        if (!close_br || close_br[1] != ':')
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(close_br - addr - 1), addr + 1);
        port = close_br + 2;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof(host))
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        port = colon + 1;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
        goto bad;
    rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve '%s': %s", addr, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuse)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* With reuse-port the master's socket holds the address but never
     * listens: the kernel spreads connections over listening members only. */
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || (!reuse && listen(fd, backlog) < 0))
        goto fail;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        goto fail;
    l->is_reuse_port = reuse;
    l->addr = ss;
    l->addrlen = sl;
    getnameinfo((struct sockaddr *)&ss, sl, l->host, sizeof(l->host), l->port, sizeof(l->port),
                NI_NUMERICHOST | NI_NUMERICSERV);
    if (ss.ss_family == AF_INET6)
        snprintf(l->url, sizeof(l->url), "http://[%s]:%s", l->host, l->port);
    else
        snprintf(l->url, sizeof(l->url), "http://%s:%s", l->host, l->port);
    freeaddrinfo(res);
    l->fd = fd;
    return 0;

fail:
    rc = -errno;
    snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return rc;
bad:
    snprintf(err, errlen, "bad address '%s' (want host:port, :port, [v6]:port or unix:/path)",
             addr);
    return -EINVAL;
}

int gw_listen_adopt(gw_listener_t *l, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    memset(l, 0, sizeof(*l));
    l->fd = -1;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    l->fd = fd;
    l->addr = ss;
    l->addrlen = sl;
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)&ss;
        l->is_unix = true;
        snprintf(l->path, sizeof(l->path), "%.107s", un->sun_path);
        snprintf(l->host, sizeof(l->host), "localhost");
        snprintf(l->port, sizeof(l->port), "0");
        snprintf(l->url, sizeof(l->url), "http://unix:%s", l->path);
        return 0;
    }
    getnameinfo((struct sockaddr *)&ss, sl, l->host, sizeof(l->host), l->port, sizeof(l->port),
                NI_NUMERICHOST | NI_NUMERICSERV);
    if (ss.ss_family == AF_INET6)
        snprintf(l->url, sizeof(l->url), "http://[%s]:%s", l->host, l->port);
    else
        snprintf(l->url, sizeof(l->url), "http://%s:%s", l->host, l->port);
    return 0;
}

void gw_listen_close(gw_listener_t *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
}
