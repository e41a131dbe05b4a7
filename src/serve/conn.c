/* A client connection's state machine: opened from an accepted socket with
 * its listener's transport and protocol, read (the head into the read
 * buffer, the body through a gw__conn_scratch buffer into the body store), parsed
 * through the protocol's operations, a complete request queued for the top
 * of the loop, keep-alive and pipelined requests, the header, body and
 * keep-alive timeouts, and the close (who the client is, and a PROXY
 * listener's header, are conn_peer.c's). Part of the connection module
 * (serve/conn_priv.h). */
#include "serve/conn_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "proto/protocols.h"
#include "serve/response.h"
#include "serve/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 16384     /* the read buffer's standard size */
#define FREE_CONNS_MAX 1024
#define FREE_OUTS_MAX 256

static void on_io(gw_loop_t *loop, gw_watch_t *w, uint32_t events);
static void on_timer(gw_loop_t *loop, gw_timer_t *t);
static void process_input(gw_conn_t *c);

void gw_conn_ctx_init(gw_conn_ctx_t *ctx, gw_loop_t *loop, const gw_handler_t *handler,
                      const gw_proto_limits_t *limits, uint64_t body_buffer,
                      const char *tmpdir, uint64_t header_s, uint64_t body_s,
                      uint64_t keepalive_s, uint64_t write_s)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->loop = loop;
    ctx->handler = *handler;
    ctx->limits = *limits;
    gw_bufpool_init(&ctx->rbuf_pool, READ_CHUNK, 1024);
    gw_bufpool_init(&ctx->body_pool, READ_CHUNK, 64);
    ctx->arena_pool.max_free = 1024;
    ctx->body_env.pool = &ctx->body_pool;
    ctx->body_env.mem_limit = body_buffer;
    ctx->body_env.tmpdir = tmpdir;
    gw_timerq_init(loop, &ctx->header_q, header_s * 1000);
    gw_timerq_init(loop, &ctx->body_q, body_s * 1000);
    gw_timerq_init(loop, &ctx->keepalive_q, keepalive_s * 1000);
    gw_timerq_init(loop, &ctx->write_q, write_s * 1000);
    gw_timerq_init(loop, &ctx->linger_q, LINGER_MS);
    ctx->write_timeout_ms = write_s * 1000;
}

static void free_conn(gw_conn_ctx_t *ctx, gw_conn_t *c)
{
    if (ctx->nthreads)
        gw__conn_thread_destroy(c);
    free(c);
}

void gw_conn_ctx_dispose(gw_conn_ctx_t *ctx)
{
    /* Whatever is still open after a graceful stop ran out of time: the app
     * still gets its close() call. */
    gw_conn_close_all(ctx);
    ctx->on_conn_freed = NULL;
    gw__conn_free_dead(ctx);
    for (gw_conn_t *c = ctx->_free, *n; c; c = n) {
        n = c->dead_next;
        free_conn(ctx, c);
    }
    ctx->_free = NULL;
    for (out_node_t *o = ctx->_outs, *n; o; o = n) {
        n = o->next;
        free(o);
    }
    ctx->_outs = NULL;
    gw_bufpool_dispose(&ctx->rbuf_pool);
    gw_bufpool_dispose(&ctx->body_pool);
    gw_arena_pool_dispose(&ctx->arena_pool);
    gw__conn_threads_dispose(ctx);
}

/* ---- open / close ---- */

/* The protocol each kind of listener speaks (proc/listen.h names the kinds). */
static const gw_proto_ops_t *const protocols[] = {
    [GW_PROTO_HTTP] = &gw_proto_http1,
    [GW_PROTO_UWSGI] = &gw_proto_uwsgi,
};

int gw_conn_open(gw_conn_ctx_t *ctx, int fd, const gw_listener_t *l, const struct sockaddr *sa)
{
    gw_conn_t *c = ctx->_free;
    int one = 1;

    if (c) {
        ctx->_free = c->dead_next;
    } else if (!(c = malloc(sizeof(*c)))) {
        close(fd);
        return -ENOMEM;
    } else if (ctx->nthreads) {
        gw__conn_thread_init(c);
    }
    memset(c, 0, offsetof(gw_conn_t, p));
    c->is_dispatched = false;
    c->job.arg = c;
    c->job.is_queued = false;
    c->news.is_queued = false;
    atomic_init(&c->runner, NULL);
    c->ctx = ctx;
    c->watch.fd = fd;
    c->watch.cb = on_io;
    if (!l->tls) {
        gw_transport_open_plain(&c->tp, fd);
    } else if (gw_tls_open(&c->tp, fd, l->tls) < 0) {
        c->dead_next = ctx->_free;
        ctx->_free = c;
        close(fd);
        return -ENOMEM;
    }
    c->rbuf = (gw_buf_t){0};
    c->parsed = c->head_end = 0;
    c->out = NULL;
    c->app_state = NULL;
    c->handler_data = NULL;
    c->proto = protocols[l->proto];
    c->proto->init(&c->p, &ctx->limits, &ctx->body_env);
    gw_req_init(&c->req, &ctx->arena_pool);
    gw_timer_init(&c->timer, on_timer);
    gw__conn_peer_open(c, l, sa);
    if (!l->is_unix && !l->is_nodelay) /* see gw_listen_tune() */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->all_next = ctx->_all;
    if (ctx->_all)
        ctx->_all->all_prev = c;
    ctx->_all = c;
    ctx->nconns++;
    if (ctx->slot)
        atomic_store_explicit(&ctx->slot->conns, ctx->nconns, memory_order_relaxed);
    c->state = C_HEAD;
    if (l->is_proxy_protocol) { /* read under the header timeout, below */
        c->state = C_PROXY;
        gw_proxy_init(&c->px);
    }
    c->can_write = true;
    /* The request often arrives with the connection: try at once. */
    c->can_read = true;
    /* TLS: the handshake, then the first request's first byte, within
     * --tls-handshake-timeout (gw__conn_read moves to the header timeout then) */
    gw_timer_start(l->tls ? &ctx->handshake_q : &ctx->header_q, &c->timer);
    gw__conn_read(c);
    return 0;
}

/* Registers c with epoll the first time it has to wait for the socket: a
 * request that arrives with its connection and is answered at once (a
 * uwsgi request from nginx, a Connection: close client) costs no epoll_ctl
 * at all. An fd added while already readable reports at once, so nothing
 * is missed. Returns false (c closed) when epoll refuses. */
bool gw__conn_try_watch(gw_conn_t *c)
{
    if (!c->is_watched &&
        gw_loop_add(c->ctx->loop, &c->watch, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) == 0)
        c->is_watched = true;
    return c->is_watched;
}

bool gw__conn_watch(gw_conn_t *c)
{
    if (gw__conn_try_watch(c))
        return true;
    gw__conn_close(c);
    return false;
}

/* Whether c has begun a request whose rest is still with the client (a
 * partial head, or a body still arriving). Such a connection costs the
 * worker nothing until its request is whole (the loop buffers it; no
 * thread or app waits on it), so the accept step-back does not count it
 * as load (serve/accept.c): 500 clients trickling uploads otherwise tilt
 * where the busy keep-alive clients land, and one worker queues requests
 * for its threads while the other has threads idle. Changes at most twice
 * per request that had to wait, and never for one that came whole. */
static void set_waiting(gw_conn_t *c, bool on)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->is_waiting == on)
        return;
    c->is_waiting = on;
    if (on)
        ctx->nwaiting++;
    else
        ctx->nwaiting--;
    if (ctx->slot)
        atomic_store_explicit(&ctx->slot->conns_waiting, ctx->nwaiting, memory_order_relaxed);
}

void gw__conn_close(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->state == C_DEAD)
        return;
    c->state = C_DEAD;
    set_waiting(c, false);
    gw_timer_stop(&c->timer);
    gw__conn_ready_remove(c);
    if (c->is_watched)
        gw_loop_del(ctx->loop, &c->watch);
    gw_transport_close(&c->tp);
    if (c->handler_data && ctx->handler.on_close)
        ctx->handler.on_close(ctx->handler.ctx, c);
    c->handler_data = NULL;
    gw__conn_release_out(c);
    gw_req_reset(&c->req, &ctx->body_env);
    gw_buf_release(&c->rbuf, &ctx->rbuf_pool);
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        ctx->_all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    /* Freed after the current event batch: a later event may still name it. */
    c->dead_next = ctx->_dead;
    ctx->_dead = c;
}

void gw__conn_free_dead(gw_conn_ctx_t *ctx)
{
    size_t nfree = 0;
    for (gw_conn_t *c = ctx->_free; c && nfree < FREE_CONNS_MAX; c = c->dead_next)
        nfree++;
    while (ctx->_dead) {
        gw_conn_t *c = ctx->_dead;
        ctx->_dead = c->dead_next;
        ctx->nconns--;
        if (ctx->slot)
            atomic_store_explicit(&ctx->slot->conns, ctx->nconns, memory_order_relaxed);
        if (nfree < FREE_CONNS_MAX) {
            c->dead_next = ctx->_free;
            ctx->_free = c;
            nfree++;
        } else {
            free_conn(ctx, c);
        }
        if (ctx->on_conn_freed)
            ctx->on_conn_freed(ctx->server);
    }
}

/* Body bytes are read here, not into the read buffer behind the head: the
 * room there is what the head left (one byte after a 16,383-byte head, which
 * made a 256 KiB body cost 262,144 read() calls; issue 14). The parser copies
 * them into the body store; bytes past the body (a pipelined request) join
 * the read buffer. Lingering closes drain into it too. One per process: the
 * worker's loop is its only user, and no byte stays in it between calls. */
char gw__conn_scratch[65536];

/* ---- reading ---- */

/* How many of p's n bytes are line ends before a request (the protocol's
 * skips_blank_lines): RFC 9112 2.2 has a server ignore them. Dropped, they
 * start no request (no header timeout, no 408 on a kept-alive connection
 * whose client ended a POST with an extra CRLF); sent without end they
 * only read on until the connection's own timer (header or keep-alive),
 * which they do not restart, closes it. */
static size_t blank_prefix(const gw_conn_t *c, const char *p, size_t n)
{
    size_t i = 0;

    if (!c->proto->skips_blank_lines || c->state != C_HEAD)
        return 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n'))
        i++;
    return i;
}

static ssize_t read_some(gw_conn_t *c, char *p, size_t n);
static void feed_body(gw_conn_t *c, size_t n);

void gw__conn_read(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    while (c->can_read && (c->state == C_PROXY || c->state == C_HEAD || c->state == C_BODY)) {
        size_t space;
        ssize_t n;

        if (c->state == C_PROXY && c->peer.listener->tls) {
            gw__conn_proxy_peek(c); /* closed, it is C_DEAD: the loop ends */
            continue;
        }

        if (c->state == C_BODY) {
            if ((n = read_some(c, gw__conn_scratch, sizeof(gw__conn_scratch))) <= 0)
                return;
            gw_timer_start(&ctx->body_q, &c->timer);
            feed_body(c, (size_t)n);
            continue;
        }
        if (gw_buf_reserve(&c->rbuf, &ctx->rbuf_pool, 1024) < 0) {
            gw__conn_error(c, 500, "out of memory");
            return;
        }
        space = c->rbuf.cap - c->rbuf.len;
        if ((n = read_some(c, c->rbuf.data + c->rbuf.len, space)) <= 0)
            return;
        if (c->rbuf.len == 0 && c->parsed == 0) {
            size_t skip = blank_prefix(c, c->rbuf.data, (size_t)n);
            if (skip == (size_t)n) {
                gw_buf_release(&c->rbuf, &ctx->rbuf_pool); /* still idle */
                continue;
            }
            if (skip) {
                memmove(c->rbuf.data, c->rbuf.data + skip, (size_t)n - skip);
                n -= (ssize_t)skip;
            }
            c->req.start_us = gw_clock_us_now();
            if (c->timer.q != &ctx->header_q)
                gw_timer_start(&ctx->header_q, &c->timer);
        }
        c->rbuf.len += (size_t)n;
        process_input(c);
    }
    if ((c->state == C_PROXY || c->state == C_HEAD || c->state == C_BODY) && !c->can_read)
        gw__conn_watch(c); /* drained by a short read: wait for the next bytes */
}

/* One read for gw__conn_read(). Returns the byte count (a short read clears
 * can_read: the socket is drained, the next edge will tell, unless the
 * transport still holds bytes), or 0 when reading ends here: the socket is
 * empty (c waits) or c is closed. */
static ssize_t read_some(gw_conn_t *c, char *p, size_t n)
{
    gw_conn_ctx_t *ctx = c->ctx;
    ssize_t got = gw_transport_read(&c->tp, p, n);

    if (got > 0) {
        if ((size_t)got < n && !gw_transport_has_pending(&c->tp))
            c->can_read = false;
        return got;
    }
    if (got == -EAGAIN) {
        c->can_read = false;
        if (ctx->is_stopping && c->state == C_HEAD && c->rbuf.len == 0 && c->parsed == 0 &&
            c->nreq > 0) {
            gw__conn_stop_idle(c); /* idle between requests while stopping */
            return 0;
        }
        if (c->rbuf.len == 0)
            gw_buf_release(&c->rbuf, &ctx->rbuf_pool); /* idle: hold no buffer */
        gw__conn_watch(c);
        return 0;
    }
    /* EOF or an error: a partial request is simply dropped. */
    gw__conn_close(c);
    return 0;
}

static void send_continue(gw_conn_t *c)
{
    out_node_t *o = gw__conn_get_out(c);

    c->continue_sent = true;
    if (!o)
        return;
    gw_resp_continue(&o->out);
    if (gw_out_flush(&o->out, &c->tp) == -EAGAIN) {
        c->can_write = false; /* the rest leaves before the response */
        gw__conn_watch(c);
    }
}

/* The request is read whole: it waits for the top of the loop. */
static void request_ready(gw_conn_t *c)
{
    int rc = gw_body_flush(&c->req.body, &c->ctx->body_env);

    if (rc == -ENOSPC || rc == -EDQUOT) {
        gw__conn_error(c, 503, "no space left to store the request body");
        return;
    }
    if (rc < 0) {
        gw__conn_error(c, 500, "cannot store the request body");
        return;
    }
    gw__conn_peer_resolve(c); /* what trusted proxies say of the client */
    c->state = C_READY;
    set_waiting(c, false);
    c->want_read = false; /* read whole: a queued read must not stand in for it */
    gw_timer_stop(&c->timer);
    gw__conn_ready_push(c);
}

static void parse_error(gw_conn_t *c)
{
    const char *reason;
    int status = c->proto->error(&c->p, &reason);

    if (status) {
        gw__conn_error(c, status, reason);
        return;
    }
    /* Not the protocol (HTTP sent to a uwsgi socket, say): nothing the peer
     * would understand as an answer. */
    gw_log_error("%s: %s: %s; closing", c->proto->name, c->peer.addr[0] ? c->peer.addr : "unix",
                 reason);
    gw__conn_close(c);
}

static gw_parse_t feed(gw_conn_t *c, const char *base, size_t off, size_t len, size_t *used)
{
    *used = 0;
    return c->proto->feed(&c->p, &c->req, base, off, len, used);
}

/* Parses what the read buffer holds past c->parsed (a head, maybe the start
 * of its body, maybe a pipelined request). */
static void process_input(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->state == C_PROXY && !gw__conn_proxy_input(c))
        return;
    for (;;) {
        size_t used;
        gw_parse_t st = feed(c, c->rbuf.data, c->parsed, c->rbuf.len - c->parsed, &used);

        c->parsed += used;
        switch (st) {
        case GW_PARSE_AGAIN:
            if (c->state == C_BODY || (c->state == C_HEAD && c->rbuf.len > 0))
                set_waiting(c, true);
            if (c->state == C_BODY) {
                /* Body bytes are in the body store now; keep only the head
                 * (the body's own reads go to the gw__conn_scratch buffer). */
                c->rbuf.len = c->parsed = c->head_end;
                if (c->req.expect_continue && !c->continue_sent)
                    send_continue(c);
            }
            return;
        case GW_PARSE_HEAD:
            c->head_end = c->parsed;
            c->state = C_BODY;
            gw_timer_start(&ctx->body_q, &c->timer);
            continue;
        case GW_PARSE_DONE:
            if (c->state == C_HEAD)
                c->head_end = c->parsed;
            request_ready(c);
            return;
        case GW_PARSE_ERROR:
            parse_error(c);
            return;
        }
    }
}

/* Feeds n body bytes read into the gw__conn_scratch buffer (c is in C_BODY: the read
 * buffer holds the head alone). */
static void feed_body(gw_conn_t *c, size_t n)
{
    size_t used, left;
    gw_parse_t st = feed(c, gw__conn_scratch, 0, n, &used);

    switch (st) {
    case GW_PARSE_AGAIN:
        return;
    case GW_PARSE_DONE:
        /* What follows the body is the next request's: it goes where
         * keep-alive looks for it, after this request's head. */
        left = n - used;
        if (left) {
            if (gw_buf_reserve(&c->rbuf, &c->ctx->rbuf_pool, left) < 0) {
                gw__conn_error(c, 500, "out of memory");
                return;
            }
            memcpy(c->rbuf.data + c->rbuf.len, gw__conn_scratch + used, left);
            c->rbuf.len += left;
        }
        request_ready(c);
        return;
    case GW_PARSE_HEAD: /* only ever once, before the body */
        gw__conn_close(c);
        return;
    case GW_PARSE_ERROR:
        parse_error(c);
        return;
    }
}

/* ---- events ---- */

static void on_io(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    gw_conn_t *c = (gw_conn_t *)w;
    int rc;

    (void)loop;
    if (c->state == C_DEAD)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->can_read = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->can_write = true;
    /* A transport whose last -EAGAIN waits for the other direction (TLS:
     * a handshake's or a read's write found the socket full) retries on
     * that edge too (transport.h). The plain socket's wants never cross. */
    if ((events & EPOLLOUT) && c->tp.read_wants == POLLOUT)
        c->can_read = true;
    if ((events & EPOLLIN) && c->tp.write_wants == POLLIN)
        c->can_write = true;

    switch (c->state) {
    case C_PROXY:
    case C_HEAD:
    case C_BODY:
        if (c->out && !gw_out_is_empty(&c->out->out) && c->can_write)
            gw_out_flush(&c->out->out, &c->tp); /* a pending 100 Continue */
        gw__conn_read(c);
        break;
    case C_APP:
        if (c->is_dispatched) { /* a thread's answer: sent from here */
            if (c->can_write)
                gw__conn_thread_flush(c);
            break;
        }
        if (c->waiting_write && c->can_write) {
            uint64_t before = c->out->out.sent;
            rc = gw_out_flush(&c->out->out, &c->tp);
            if (rc == 0) {
                c->waiting_write = false;
                gw_timer_stop(&c->timer);
                c->want_resume = true;
                gw__conn_ready_push(c);
            } else if (rc == -EAGAIN) {
                c->can_write = false;
                if (c->out->out.sent != before)
                    gw_timer_start(&c->ctx->write_q, &c->timer);
            } else {
                gw__conn_set_aborted(c);
                c->waiting_write = false;
                gw_timer_stop(&c->timer);
                c->want_abort = true;
                gw__conn_ready_push(c);
            }
        }
        break;
    case C_LINGER:
        if (c->out && !gw_out_is_empty(&c->out->out)) {
            if (!c->can_write)
                break;
            rc = gw_out_flush(&c->out->out, &c->tp);
            if (rc == -EAGAIN) {
                c->can_write = false;
                break;
            }
            if (rc < 0) {
                gw__conn_close(c);
                break;
            }
            gw__conn_linger(c, 0);
            break;
        }
        if (c->can_read)
            gw__conn_drain_linger(c);
        break;
    default:
        break;
    }
}

static void on_timer(gw_loop_t *loop, gw_timer_t *t)
{
    gw_conn_t *c = (gw_conn_t *)((char *)t - offsetof(gw_conn_t, timer));

    (void)loop;
    switch (c->state) {
    case C_PROXY: /* no header in time (slowloris, or not a balancer): nothing to answer */
        gw__conn_close(c);
        break;
    case C_HEAD:
        if (c->rbuf.len > 0 || c->parsed > 0)
            gw__conn_error(c, 408, "request head timeout");
        else if (c->ctx->is_stopping)
            gw__conn_linger(c, 0); /* a stop's grace is over (stop_idle, gw_conn_stop_all) */
        else
            gw__conn_close(c); /* idle: nothing to answer */
        break;
    case C_BODY:
        gw__conn_error(c, 408, "request body timeout");
        break;
    case C_APP:
        /* The client stopped reading: give up on this response. */
        if (c->is_dispatched) {
            gw__conn_thread_dead(c);
            break;
        }
        gw__conn_set_aborted(c);
        c->waiting_write = false;
        c->want_abort = true;
        gw__conn_ready_push(c);
        break;
    default:
        gw__conn_close(c);
        break;
    }
}

void gw__conn_keepalive(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    size_t left = c->rbuf.len - c->parsed;

    gw_req_reset(&c->req, &ctx->body_env);
    c->state = C_HEAD;
    if (left) { /* a CRLF after a POST's body, say */
        size_t skip = blank_prefix(c, c->rbuf.data + c->parsed, left);
        c->parsed += skip;
        left -= skip;
    }
    c->proto->reset(&c->p);
    if (left) {
        memmove(c->rbuf.data, c->rbuf.data + c->parsed, left);
        c->rbuf.len = left;
    } else {
        gw_buf_release(&c->rbuf, &ctx->rbuf_pool);
    }
    c->parsed = c->head_end = 0;
    if (left) {
        /* A pipelined request is already here, maybe only its start: the
         * rest may already wait in the kernel (the last read filled the
         * buffer), with no edge to come, or the socket may never have been
         * registered. Read on next turn, as below. */
        c->req.start_us = gw_clock_us_now();
        gw_timer_start(&ctx->header_q, &c->timer);
        process_input(c);
        if (c->state != C_HEAD && c->state != C_BODY)
            return;
        if (!gw__conn_watch(c))
            return;
        if (c->can_read) {
            c->want_read = true;
            gw__conn_ready_push(c);
        }
        return;
    }
    c->idle_ms = gw_clock_ms();
    c->in_grace = false;
    gw_timer_start(&ctx->keepalive_q, &c->timer);
    if (!gw__conn_watch(c))
        return;
    /* While stopping, a last look: a request the client sent after this
     * answer's keep-alive promise is answered (Connection: close), an empty
     * socket waits a grace, then closes (gw__conn_stop_idle). */
    if (ctx->is_stopping)
        c->can_read = true;
    if (c->can_read) {
        /* Bytes may wait in the kernel with no edge to come: read next turn. */
        c->want_read = true;
        gw__conn_ready_push(c);
    }
}
