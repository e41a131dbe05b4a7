#include "serve/transport.h"

#include <errno.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t plain_read(gw_transport_t *t, void *buf, size_t n)
{
    ssize_t got;

    do {
        got = read(t->fd, buf, n);
    } while (got < 0 && errno == EINTR);
    return got < 0 ? -errno : got;
}

static ssize_t plain_writev(gw_transport_t *t, const struct iovec *iov, int iovcnt, bool more)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t w;

    /* sendmsg rather than writev: MSG_NOSIGNAL (a peer gone is an error,
     * not a SIGPIPE) and MSG_MORE in one call. */
    do {
        w = sendmsg(t->fd, &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -errno : w;
}

static ssize_t plain_sendfile(gw_transport_t *t, int fd, off_t *off, size_t n)
{
    ssize_t w;

    do {
        w = sendfile(t->fd, fd, off, n);
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -errno : w;
}

static int plain_shutdown(gw_transport_t *t)
{
    return shutdown(t->fd, SHUT_WR) < 0 ? -errno : 0;
}

static void plain_close(gw_transport_t *t)
{
    close(t->fd);
    t->fd = -1;
}

const gw_transport_ops_t gw_transport_plain = {
    .name = "plain",
    .read = plain_read,
    .writev = plain_writev,
    .sendfile = plain_sendfile,
    .has_pending = NULL,
    .shutdown = plain_shutdown,
    .close = plain_close,
};

void gw_transport_open_plain(gw_transport_t *t, int fd)
{
    t->ops = &gw_transport_plain;
    t->fd = fd;
    t->read_wants = POLLIN;
    t->write_wants = POLLOUT;
    t->impl = NULL;
}
