#include "proc/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* host, port and url of a bound TCP socket, for the environ and the logs. */
static void describe_tcp(gw_listener_t *l, const struct sockaddr_storage *ss, socklen_t sl)
{
    getnameinfo((const struct sockaddr *)ss, sl, l->host, sizeof(l->host), l->port,
                sizeof(l->port), NI_NUMERICHOST | NI_NUMERICSERV);
    if (ss->ss_family == AF_INET6)
        snprintf(l->url, sizeof(l->url), "http://[%s]:%s", l->host, l->port);
    else
        snprintf(l->url, sizeof(l->url), "http://%s:%s", l->host, l->port);
}

/* The same for a unix socket at path. */
static void describe_unix(gw_listener_t *l, const char *path)
{
    l->is_unix = true;
    snprintf(l->path, sizeof(l->path), "%.107s", path);
    snprintf(l->host, sizeof(l->host), "localhost");
    snprintf(l->port, sizeof(l->port), "0");
    snprintf(l->url, sizeof(l->url), "http://unix:%s", l->path);
}

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
    describe_unix(l, path);
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

/* Applies l's TCP options to fd; failures only cost speed, so they are ignored. */
static void apply_tcp_options(const gw_listener_t *l, int fd)
{
    int one = 1, defer = (int)l->defer_accept;

    if (l->is_nodelay)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!l->is_activated)
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
}

void gw_listen_tune(gw_listener_t *l, uint64_t defer_accept_s)
{
    if (l->is_unix || l->fd < 0)
        return;
    l->is_nodelay = true;
    /* the kernel takes an int and caps it at its retransmission limit anyway */
    l->defer_accept = defer_accept_s > INT_MAX ? INT_MAX : (unsigned)defer_accept_s;
    apply_tcp_options(l, l->fd);
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
    apply_tcp_options(l, fd);
    if (bind(fd, (struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, l->backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    close(l->fd); /* the master's placeholder: bound, never listening */
    l->fd = fd;
    return 0;
}

/* "host:port", ":port" or "[v6]:port": the host into host (empty for all
 * interfaces), the port returned; NULL when addr is none of these. */
static const char *split_host_port(const char *addr, char *host, size_t hostlen)
{
    const char *port, *colon;

    if (addr[0] == '[') {
        const char *close_br = strchr(addr, ']');
        if (!close_br || close_br[1] != ':' || (size_t)(close_br - addr) > hostlen)
            return NULL;
        snprintf(host, hostlen, "%.*s", (int)(close_br - addr - 1), addr + 1);
        port = close_br + 2;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hostlen)
            return NULL;
        snprintf(host, hostlen, "%.*s", (int)(colon - addr), addr);
        port = colon + 1;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
        return NULL;
    return port;
}

static int open_addr(gw_listener_t *l, const char *addr, int backlog, bool reuse, char *err,
                     size_t errlen)
{
    char host[256];
    const char *port;
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

    if (!(port = split_host_port(addr, host, sizeof(host))))
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
    describe_tcp(l, &ss, sl);
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

int gw_listen_adopt(gw_listener_t *l, int fd, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int type = 0, listening = 0, reuse = 0;
    socklen_t il = sizeof(int);

    memset(l, 0, sizeof(*l));
    l->fd = -1;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il) < 0 || type != SOCK_STREAM)
        return -ENOTSOCK;
    /* The socket says what it is for. A --reuse-port placeholder holds the
     * address without listening (each worker listens on a socket of its own
     * in its SO_REUSEPORT group): taking it for a shared listener would have
     * every worker accept() on a socket that does not listen (EINVAL). */
    il = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &il) < 0)
        return -errno;
    il = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &il) < 0)
        reuse = 0;
    if (!listening && !(reuse && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)))
        return -EINVAL;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    l->fd = fd;
    l->addr = ss;
    l->addrlen = sl;
    l->backlog = backlog;
    l->is_reuse_port = !listening;
    if (ss.ss_family == AF_UNIX) {
        describe_unix(l, ((const struct sockaddr_un *)(const void *)&ss)->sun_path);
        return 0;
    }
    describe_tcp(l, &ss, sl);
    return 0;
}

int gw_listen_share(gw_listener_t *l)
{
    if (!l->is_reuse_port)
        return 0;
    if (listen(l->fd, l->backlog) < 0)
        return -errno;
    l->is_reuse_port = false;
    return 0;
}

void gw_listen_set_proto(gw_listener_t *l, enum gw_proto proto)
{
    const char *from = proto == GW_PROTO_UWSGI ? "http://" : "uwsgi://";
    const char *to = proto == GW_PROTO_UWSGI ? "uwsgi://" : "http://";
    char url[sizeof(l->url)];

    l->proto = proto;
    if (strncmp(l->url, from, strlen(from)) == 0) {
        snprintf(url, sizeof(url), "%s%s", to, l->url + strlen(from));
        memcpy(l->url, url, sizeof(url));
    }
}

bool gw_listen_allows(const gw_listener_t *l, const struct sockaddr *sa)
{
    gw_ip_t ip;

    if (l->is_unix || !l->allow)
        return true;
    gw_allow_ip_from_sockaddr(&ip, sa);
    return gw_allow_has(l->allow, &ip);
}

int gw_listen_check(const char *addr, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char host[256];
    const char *port;
    int rc;

    if (strncmp(addr, "unix:", 5) == 0 || addr[0] == '/' || addr[0] == '.') {
        const char *path = strncmp(addr, "unix:", 5) == 0 ? addr + 5 : addr;
        if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, errlen, "a unix socket path of 1 to 107 bytes");
            return -EINVAL;
        }
        return 0;
    }
    if (!(port = split_host_port(addr, host, sizeof(host))) || atoi(port) > 65535) {
        snprintf(err, errlen, "want host:port, :port, [v6]:port or unix:/path");
        return -EINVAL;
    }
    if ((rc = getaddrinfo(*host ? host : NULL, port, &hints, &res)) != 0) {
        snprintf(err, errlen, "cannot resolve it: %s", gai_strerror(rc));
        return -EINVAL;
    }
    freeaddrinfo(res);
    return 0;
}

bool gw_listen_is_bound_to(int fd, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
    struct addrinfo *res = NULL, *ai;
    char host[256];
    const char *port;
    bool same = false;

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    if (ss.ss_family == AF_UNIX) {
        const char *path = strncmp(addr, "unix:", 5) == 0 ? addr + 5 : addr;
        return strcmp(((const struct sockaddr_un *)(const void *)&ss)->sun_path, path) == 0;
    }
    if (!(port = split_host_port(addr, host, sizeof(host))) ||
        getaddrinfo(*host ? host : NULL, port, &hints, &res) != 0)
        return false;
    for (ai = res; ai && !same; ai = ai->ai_next)
        same = ai->ai_family == ss.ss_family && ai->ai_addrlen == sl &&
               (ss.ss_family == AF_INET
                    ? memcmp(&((struct sockaddr_in *)ai->ai_addr)->sin_addr,
                             &((struct sockaddr_in *)(void *)&ss)->sin_addr, 4) == 0 &&
                          ((struct sockaddr_in *)ai->ai_addr)->sin_port ==
                              ((struct sockaddr_in *)(void *)&ss)->sin_port
                    : memcmp(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
                             &((struct sockaddr_in6 *)(void *)&ss)->sin6_addr, 16) == 0 &&
                          ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port ==
                              ((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    freeaddrinfo(res);
    return same;
}

bool gw_listen_matches(const gw_listener_t *l, const char *addr)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char host[256];
    const char *port;
    bool same;

    if (strncmp(addr, "unix:", 5) == 0 || addr[0] == '/' || addr[0] == '.') {
        const char *path = strncmp(addr, "unix:", 5) == 0 ? addr + 5 : addr;
        return l->is_unix && strcmp(l->path, path) == 0;
    }
    if (l->is_unix || !(port = split_host_port(addr, host, sizeof(host))) ||
        getaddrinfo(*host ? host : NULL, port, &hints, &res) != 0)
        return false;
    /* The first answer is the one gw_listen_open() binds. */
    if (res->ai_family == AF_INET && l->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)res->ai_addr;
        const struct sockaddr_in *b = (const struct sockaddr_in *)(const void *)&l->addr;
        same = a->sin_addr.s_addr == b->sin_addr.s_addr &&
               (a->sin_port == 0 || a->sin_port == b->sin_port);
    } else if (res->ai_family == AF_INET6 && l->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)res->ai_addr;
        const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)(const void *)&l->addr;
        same = memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0 &&
               (a->sin6_port == 0 || a->sin6_port == b->sin6_port);
    } else {
        same = false;
    }
    freeaddrinfo(res);
    return same;
}

void gw_listen_close(gw_listener_t *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
}
