/* The --stats server (stats.h): the master's small HTTP server, in its own
 * loop: a few connections at a time, each with a deadline, routed to the
 * renderers (render.h); a client that sends nothing gets the bare JSON. */
#include "stats/stats.h"

#include "stats/render.h"
#include "stats/text.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 32        /* the master serves a few operators, not a crowd */
#define REQ_MAX 4096        /* a request head larger than this is not for us */
#define BARE_MS 1000        /* nothing sent by then: a uwsgitop-style client */
#define IO_MS 5000          /* the longest a client may take to send or read */
#define RETRY_MS 100        /* accept() failed (no descriptors, ...): poll again after */

typedef struct sconn {
    gw_watch_t watch;
    gw_timer_t timer;
    struct gw_stats *server;
    char in[REQ_MAX];
    size_t in_len;
    gw_text_t out;
    size_t out_off;
    bool is_writing;
} sconn_t;

struct gw_stats {
    gw_loop_t *loop;
    const gw_stats_source_t *src;
    gw_listener_t l;
    gw_watch_t watch;
    gw_timerq_t bare_q, io_q, retry_q;
    gw_timer_t retry;
    uint64_t error_logged_ms;
    sconn_t *conns[MAX_CONNS];
};

static void sconn_close(sconn_t *c)
{
    gw_stats_t *s = c->server;

    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i] == c)
            s->conns[i] = NULL;
    gw_timer_stop(&c->timer);
    gw_loop_del(s->loop, &c->watch);
    close(c->watch.fd);
    free(c->out.p);
    free(c);
}

static void on_conn(gw_loop_t *loop, gw_watch_t *w, uint32_t events);

static void send_out(sconn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->watch.fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!c->is_writing) {
                c->is_writing = true;
                gw_loop_mod(c->server->loop, &c->watch, EPOLLOUT);
            }
            return;
        }
        if (n <= 0) {
            sconn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    sconn_close(c);
}

static void answer(sconn_t *c, int status, const char *type, const char *body, size_t len,
                   bool is_head)
{
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed" : status == 400 ? "Bad Request"
                                                                               : "Internal Server Error";
    gw_text_t head = {0};

    gw_text_printf(&head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                   status, reason, type, len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    free(c->out.p);
    c->out = head;
    if (!is_head)
        gw_text_put(&c->out, body, len);
    c->out_off = 0;
    if (c->out.is_failed) {
        sconn_close(c);
        return;
    }
    gw_timer_start(&c->server->io_q, &c->timer);
    send_out(c);
}

static void respond(sconn_t *c)
{
    const gw_stats_source_t *src = c->server->src;
    char *sp = memchr(c->in, ' ', c->in_len), *path, *end;
    bool is_head;
    gw_text_t body = {0};

    gw_clock_update();
    if (!sp) {
        answer(c, 400, "text/plain", "bad request\n", 12, false);
        return;
    }
    is_head = sp - c->in == 4 && memcmp(c->in, "HEAD", 4) == 0;
    if (!is_head && !(sp - c->in == 3 && memcmp(c->in, "GET", 3) == 0)) {
        answer(c, 405, "text/plain", "GET or HEAD\n", 12, false);
        return;
    }
    path = sp + 1;
    end = path + strcspn(path, " ?\r\n");
    *end = '\0';
    if (strcmp(path, "/") == 0 || strcmp(path, "/json") == 0) {
        gw_stats_json(src, &body);
        if (body.is_failed)
            answer(c, 500, "text/plain", "out of memory\n", 14, is_head);
        else
            answer(c, 200, "application/json", body.p, body.len, is_head);
    } else if (strcmp(path, "/metrics") == 0) {
        gw_stats_prometheus(src, &body);
        if (body.is_failed)
            answer(c, 500, "text/plain", "out of memory\n", 14, is_head);
        else
            answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", body.p, body.len, is_head);
    } else if (strcmp(path, "/status") == 0) {
        answer(c, 200, "text/html; charset=utf-8", gw_stats_status_page,
               strlen(gw_stats_status_page), is_head);
    } else {
        answer(c, 404, "text/plain", "try /, /metrics or /status\n", 27, is_head);
    }
    free(body.p);
}

/* Nothing came within BARE_MS: a uwsgitop-style client; the JSON goes out
 * without an HTTP head. After that, the I/O deadline passed: give up. */
static void on_timer(gw_loop_t *loop, gw_timer_t *t)
{
    sconn_t *c = (sconn_t *)((char *)t - offsetof(sconn_t, timer));
    (void)loop;

    if (c->in_len || c->is_writing || c->out.len) {
        sconn_close(c);
        return;
    }
    gw_clock_update();
    gw_stats_json(c->server->src, &c->out);
    if (c->out.is_failed) {
        sconn_close(c);
        return;
    }
    gw_timer_start(&c->server->io_q, &c->timer);
    send_out(c);
}

static void on_conn(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    sconn_t *c = (sconn_t *)((char *)w - offsetof(sconn_t, watch));
    (void)loop;

    if (c->is_writing) {
        send_out(c);
        return;
    }
    if (c->out.len) /* answering already; a client still talking is ignored */
        return;
    for (;;) {
        ssize_t n = read(w->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0 || (events & (EPOLLERR | EPOLLHUP) && n == 0)) {
            sconn_close(c);
            return;
        }
        if (!c->in_len)
            gw_timer_start(&c->server->io_q, &c->timer);
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
        if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n")) {
            respond(c);
            return;
        }
        if (c->in_len >= sizeof(c->in) - 1) {
            answer(c, 400, "text/plain", "request too large\n", 18, false);
            return;
        }
    }
}

static void on_accept(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    gw_stats_t *s = (gw_stats_t *)((char *)w - offsetof(gw_stats_t, watch));
    (void)events;

    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        size_t slot = MAX_CONNS;
        sconn_t *c;

        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EINTR || err == ECONNABORTED)
                return;
            /* Out of descriptors, or the socket broken: the listener is
             * level-triggered and would wake the master again at once.
             * Left out for a moment; one line a second at most. */
            if (!s->error_logged_ms || gw_clock_ms() - s->error_logged_ms >= 1000) {
                gw_log_error("--stats: accept: %s; retrying every %d ms", strerror(err),
                             RETRY_MS);
                s->error_logged_ms = gw_clock_ms() ? gw_clock_ms() : 1;
            }
            gw_loop_del(loop, &s->watch);
            gw_timer_start(&s->retry_q, &s->retry);
            return;
        }
        for (size_t i = 0; i < MAX_CONNS && slot == MAX_CONNS; i++)
            if (!s->conns[i])
                slot = i;
        if (slot == MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
            close(fd); /* busy: the master protects itself first */
            continue;
        }
        c->server = s;
        c->watch.fd = fd;
        c->watch.cb = on_conn;
        gw_timer_init(&c->timer, on_timer);
        if (gw_loop_add(loop, &c->watch, EPOLLIN) < 0) {
            close(fd);
            free(c);
            continue;
        }
        s->conns[slot] = c;
        gw_timer_start(&s->bare_q, &c->timer);
    }
}

static void on_retry(gw_loop_t *loop, gw_timer_t *t)
{
    gw_stats_t *s = (gw_stats_t *)((char *)t - offsetof(gw_stats_t, retry));
    gw_loop_add(loop, &s->watch, EPOLLIN);
}

gw_stats_t *gw_stats_new(gw_loop_t *loop, const char *addr, const gw_stats_source_t *src,
                         int handed_fd, char *err, size_t errlen)
{
    gw_stats_t *s = calloc(1, sizeof(*s));
    char local[300];
    bool is_adopted = false;
    int rc;

    if (!s) {
        snprintf(err, errlen, "--stats: out of memory");
        if (handed_fd >= 0)
            close(handed_fd);
        return NULL;
    }
    /* A bare port, or ":port", stays on loopback: statistics say a lot about
     * a site, so reaching them from elsewhere takes a host spelt out. */
    if (!addr)
        local[0] = '\0';
    else if (strspn(addr, "0123456789") == strlen(addr) && *addr)
        snprintf(local, sizeof(local), "127.0.0.1:%s", addr);
    else if (addr[0] == ':')
        snprintf(local, sizeof(local), "127.0.0.1%s", addr);
    else
        snprintf(local, sizeof(local), "%s", addr);
    /* A reload: the previous image's socket, when it is still the address
     * asked for (no refused connection, and port 0 stays the same port). */
    if (handed_fd >= 0) {
        gw_listener_t l;
        if (gw_listen_adopt(&l, handed_fd, 64) == 0 && !l.is_reuse_port &&
            (!addr || gw_listen_matches(&l, local))) {
            s->l = l;
            is_adopted = true;
        } else {
            close(handed_fd);
        }
    }
    if (!is_adopted && !addr) {
        snprintf(err, errlen, "--stats: the socket handed over does not serve");
        free(s);
        return NULL;
    }
    if (!is_adopted && (rc = gw_listen_open(&s->l, local, 64, err, errlen)) < 0) {
        free(s);
        return NULL;
    }
    s->loop = loop;
    s->src = src;
    s->watch.fd = s->l.fd;
    s->watch.cb = on_accept;
    gw_timerq_init(loop, &s->bare_q, BARE_MS);
    gw_timerq_init(loop, &s->io_q, IO_MS);
    gw_timerq_init(loop, &s->retry_q, RETRY_MS);
    gw_timer_init(&s->retry, on_retry);
    if (gw_loop_add(loop, &s->watch, EPOLLIN) < 0) {
        snprintf(err, errlen, "--stats: %s", strerror(errno));
        gw_listen_close(&s->l);
        free(s);
        return NULL;
    }
    return s;
}

const char *gw_stats_url(const gw_stats_t *s)
{
    return s->l.url;
}

int gw_stats_fd(const gw_stats_t *s)
{
    return s ? s->l.fd : -1;
}

void gw_stats_free(gw_stats_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i])
            sconn_close(s->conns[i]);
    gw_timer_stop(&s->retry);
    gw_loop_del(s->loop, &s->watch);
    if (s->l.is_unix && s->l.path[0])
        unlink(s->l.path);
    gw_listen_close(&s->l);
    free(s);
}

void gw_stats_close_fds(gw_stats_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i])
            close(s->conns[i]->watch.fd);
    close(s->l.fd);
}
