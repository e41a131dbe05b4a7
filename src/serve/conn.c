#include "serve/conn.h"

#include "core/clock.h"
#include "core/log.h"
#include "proto/forwarded.h"
#include "proto/protocols.h"
#include "proto/proxy.h"
#include "serve/response.h"
#include "serve/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 16384     /* the read buffer's standard size */
#define LINGER_MS 2000       /* a lingering close drains what the client still sends... */
#define LINGER_BYTES (8u << 20) /* ...and this much more than a body it still owes us */
#define LINGER_TURN (16u * 65536) /* drained per loop turn: the loop (and the timer) go on */
/* A graceful stop keeps an idle keep-alive connection whose last answer is
 * this recent for as long again (the linger queue), see stop_idle(). */
#define STOP_GRACE_MS LINGER_MS
#define FREE_CONNS_MAX 1024
#define FREE_OUTS_MAX 256

/* C_PROXY: a PROXY protocol listener's connection before its header is in */
enum state { C_PROXY, C_HEAD, C_BODY, C_READY, C_APP, C_LINGER, C_DEAD };

typedef struct out_node {
    gw_out_t out;
    struct out_node *next;
} out_node_t;

struct gw_conn {
    gw_watch_t watch; /* first: the loop hands us &watch */
    gw_conn_ctx_t *ctx;
    gw_conn_t *all_prev, *all_next;
    gw_conn_t *ready_prev, *ready_next;
    gw_conn_t *dead_next;
    uint8_t state;
    bool is_watched;   /* registered with epoll (only once it has to wait) */
    bool can_read;     /* edge-triggered: the kernel may hold unread bytes */
    bool can_write;
    bool in_ready;
    bool want_read;    /* queued to read bytes that arrived while busy */
    bool want_resume;  /* queued: output drained, the app continues */
    bool want_abort;   /* queued: died with a response in progress */
    bool waiting_write;
    bool continue_sent;
    bool is_static;    /* the answer is a static file: no handler involved */
    bool static_keep;  /* ... and it said keep-alive */
    bool is_aborted;   /* the answer was given up: the peer went away or stopped reading */
    bool in_grace;     /* stopping: idle, watched a while before its close (stop_idle) */
    int static_status;
    uint64_t static_bytes;
    uint64_t sent_mark; /* the output queue's byte count when this answer began */
    uint64_t unsent;   /* bytes still queued when the answer was given up */
    uint64_t linger_left; /* bytes a lingering close may still drain */
    uint32_t nreq;     /* requests answered on this connection */
    uint64_t idle_ms;  /* when the last answer ended and keep-alive began */
    gw_buf_t rbuf;
    size_t parsed;     /* rbuf bytes the parser has consumed */
    size_t head_end;   /* rbuf bytes of the current request's head */
    const gw_proto_ops_t *proto; /* the listener's protocol, driven through proto.h */
    gw_proto_state_t p; /* its parser; open clears what comes before p, not p on */
    gw_req_t req;
    out_node_t *out;
    void *app_state;
    void *handler_data;
    gw_timer_t timer;
    gw_peer_t peer;
    gw_transport_t tp; /* every byte of the connection goes through it (transport.h) */
    gw_proxy_t px;     /* C_PROXY: the header so far (set up by open only then) */
};

static void on_io(gw_loop_t *loop, gw_watch_t *w, uint32_t events);
static void on_timer(gw_loop_t *loop, gw_timer_t *t);
static void do_read(gw_conn_t *c);
static void process_input(gw_conn_t *c);
static void close_conn(gw_conn_t *c);

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

static void free_dead(gw_conn_ctx_t *ctx);

static void abandon(gw_conn_t *c);

void gw_conn_close_all(gw_conn_ctx_t *ctx)
{
    while (ctx->_all) {
        gw_conn_t *c = ctx->_all;
        if (c->state == C_APP)
            abandon(c); /* logged, as cut short */
        close_conn(c);
    }
    gw_log_flush(); /* the loop that would have written them is over */
}

void gw_conn_ctx_dispose(gw_conn_ctx_t *ctx)
{
    /* Whatever is still open after a graceful stop ran out of time: the app
     * still gets its close() call. */
    gw_conn_close_all(ctx);
    ctx->on_conn_freed = NULL;
    free_dead(ctx);
    for (gw_conn_t *c = ctx->_free, *n; c; c = n) {
        n = c->dead_next;
        free(c);
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
}

/* ---- lists ---- */

static void ready_push(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    if (c->in_ready)
        return;
    c->in_ready = true;
    c->ready_next = NULL;
    c->ready_prev = ctx->_ready_tail;
    if (ctx->_ready_tail)
        ctx->_ready_tail->ready_next = c;
    else
        ctx->_ready_head = c;
    ctx->_ready_tail = c;
    ctx->_nready++;
}

static void ready_remove(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    if (!c->in_ready)
        return;
    if (c->ready_prev)
        c->ready_prev->ready_next = c->ready_next;
    else
        ctx->_ready_head = c->ready_next;
    if (c->ready_next)
        c->ready_next->ready_prev = c->ready_prev;
    else
        ctx->_ready_tail = c->ready_prev;
    c->in_ready = false;
    c->ready_prev = c->ready_next = NULL;
    ctx->_nready--;
}

bool gw_conn_has_ready(const gw_conn_ctx_t *ctx)
{
    return ctx->_ready_head != NULL;
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
    }
    memset(c, 0, offsetof(gw_conn_t, p));
    c->ctx = ctx;
    c->watch.fd = fd;
    c->watch.cb = on_io;
    gw_transport_open_plain(&c->tp, fd);
    c->rbuf = (gw_buf_t){0};
    c->parsed = c->head_end = 0;
    c->out = NULL;
    c->app_state = NULL;
    c->handler_data = NULL;
    c->proto = protocols[l->proto];
    c->proto->init(&c->p, &ctx->limits, &ctx->body_env);
    gw_req_init(&c->req, &ctx->arena_pool);
    gw_timer_init(&c->timer, on_timer);
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
    gw_timer_start(&ctx->header_q, &c->timer);
    do_read(c);
    return 0;
}

static void release_out(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    out_node_t *o = c->out;
    if (!o)
        return;
    gw_out_discard(&o->out);
    c->out = NULL;
    o->next = ctx->_outs;
    ctx->_outs = o;
}

/* Registers c with epoll the first time it has to wait for the socket: a
 * request that arrives with its connection and is answered at once (a
 * uwsgi request from nginx, a Connection: close client) costs no epoll_ctl
 * at all. An fd added while already readable reports at once, so nothing
 * is missed. Returns false (c closed) when epoll refuses. */
static bool try_watch(gw_conn_t *c)
{
    if (!c->is_watched &&
        gw_loop_add(c->ctx->loop, &c->watch, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) == 0)
        c->is_watched = true;
    return c->is_watched;
}

static bool watch(gw_conn_t *c)
{
    if (try_watch(c))
        return true;
    close_conn(c);
    return false;
}

static void close_conn(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->state == C_DEAD)
        return;
    c->state = C_DEAD;
    gw_timer_stop(&c->timer);
    ready_remove(c);
    if (c->is_watched)
        gw_loop_del(ctx->loop, &c->watch);
    gw_transport_close(&c->tp);
    if (c->handler_data && ctx->handler.on_close)
        ctx->handler.on_close(ctx->handler.ctx, c);
    c->handler_data = NULL;
    release_out(c);
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

static void free_dead(gw_conn_ctx_t *ctx)
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
            free(c);
        }
        if (ctx->on_conn_freed)
            ctx->on_conn_freed(ctx->server);
    }
}

/* ---- errors and lingering close ---- */

static out_node_t *get_out(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    out_node_t *o = c->out;

    if (o)
        return o;
    if ((o = ctx->_outs)) {
        ctx->_outs = o->next;
    } else if (!(o = malloc(sizeof(*o)))) {
        return NULL;
    }
    gw_out_init(&o->out, ctx->handler.release);
    c->out = o;
    return o;
}

/* The scoreboard's counters for one finished request. */
static void count(gw_conn_t *c, int status, uint64_t bytes_out, uint64_t duration_us)
{
    const gw_req_t *r = &c->req;
    int method = c->rbuf.data && r->method.len
                     ? gw_method_index(c->rbuf.data + r->method.off, r->method.len)
                     : GW_METHODS - 1;
    /* A refused request: what was read of it (the connection closes). */
    uint64_t in = c->head_end ? c->head_end + r->body.len
                              : (c->parsed > c->rbuf.len ? c->parsed : c->rbuf.len);

    gw_slot_count(c->ctx->slot, status, method, in, bytes_out, duration_us);
}

static void log_request(gw_conn_t *c, int status, uint64_t bytes, uint64_t duration_us,
                        bool is_aborted)
{
    const char *rb = c->rbuf.data;
    gw_req_t *r = &c->req;
    gw_access_t a = {.remote = r->client.addr[0] ? r->client.addr : c->peer.addr,
                     .peer = c->peer.via[0] ? c->peer.via : c->peer.addr,
                     .status = status, .bytes = bytes, .is_aborted = is_aborted};
    char remote[48], proto[GW_REQ_PROTOCOL_LEN];
    const char *v;
    size_t vn;

    if (!gw_log_access_enabled())
        return;
    if (rb && r->method.len && r->target.len && (a.protocol = gw_req_protocol(r, proto))) {
        a.method = rb + r->method.off;
        a.method_len = r->method.len;
        a.target = rb + r->target.off;
        a.target_len = r->target.len;
        /* The first of each, as nginx's $http_referer and $http_user_agent. */
        gw_req_header(r, rb, "referer", &a.referer, &a.referer_len);
        gw_req_header(r, rb, "user-agent", &a.agent, &a.agent_len);
        /* Behind a gateway: the client is who the gateway says it is. */
        if (gw_req_var(r, rb, "REMOTE_ADDR", &v, &vn) && vn < sizeof(remote)) {
            memcpy(remote, v, vn);
            remote[vn] = '\0';
            a.remote = remote;
        }
    }
    /* An id the log shows is made here if the request has none yet (the
     * app's answer may already carry one made by --request-id). */
    if (rb && gw_req_host(r).len) {
        a.host = rb + gw_req_host(r).off;
        a.host_len = gw_req_host(r).len;
    }
    if (gw_log_wants_request_id())
        a.request_id = gw_req_id(r, rb, true, &a.request_id_len);
    a.duration_us = duration_us;
    gw_log_access(&a);
}

/* ---- aborted answers ---- */

/* The answer cannot be completed (the peer is gone, or stopped reading past
 * the write timeout): remember what was left unsent, for its log line. */
static void give_up(gw_conn_t *c)
{
    if (c->is_aborted)
        return;
    c->is_aborted = true;
    c->unsent = c->out ? gw_out_pending(&c->out->out) : 0;
}

/* ---- lingering close ---- */

/* Body bytes are read here, not into the read buffer behind the head: the
 * room there is what the head left (one byte after a 16,383-byte head, which
 * made a 256 KiB body cost 262,144 read() calls; issue 14). The parser copies
 * them into the body store; bytes past the body (a pipelined request) join
 * the read buffer. Lingering closes drain into it too. One per process: the
 * worker's loop is its only user, and no byte stays in it between calls. */
static char scratch[65536];

/* Reads and drops what the client still sends, until it closes, the byte
 * budget is spent (then c closes anyway), or the socket is empty (c waits
 * for the next edge or the linger timer). Big reads: no CPU per byte. At
 * most LINGER_TURN bytes a call: a client that sends as fast as we read
 * never empties the socket, and a loop until EAGAIN would hold the worker
 * in this handler, with the linger timer unable to fire; the rest is read
 * on a later turn (the ready queue: no edge comes for bytes already
 * there), after other connections and the timers had theirs. */
static void drain_linger(gw_conn_t *c)
{
    size_t turn = 0;

    while (c->linger_left > 0) {
        size_t want = c->linger_left < sizeof(scratch) ? c->linger_left : sizeof(scratch);
        ssize_t n;

        if (turn >= LINGER_TURN) {
            c->want_read = true;
            ready_push(c);
            return;
        }
        n = gw_transport_read(&c->tp, scratch, want);
        if (n > 0) {
            c->linger_left -= (uint64_t)n;
            turn += (size_t)n;
            continue;
        }
        if (n == -EAGAIN) {
            c->can_read = false;
            return;
        }
        break; /* EOF or an error: the client has our answer */
    }
    close_conn(c);
}

/* The answer is out and the connection ends. Closing a socket whose receive
 * queue holds unread bytes (or that gets bytes afterwards) makes the kernel
 * send a RST, and a RST can make the client's kernel drop the answer it has
 * not read yet. So: shut down our side (the client reads the answer, then
 * EOF), read and drop what comes, and close when the client does, after
 * LINGER_MS, or past LINGER_BYTES beyond the body still owed: nothing here
 * lasts longer than that, and it costs one big read per 64 KiB. The
 * request's memory goes back at once; the connection keeps only its slot. */
static void linger(gw_conn_t *c, size_t drained)
{
    gw_conn_ctx_t *ctx = c->ctx;
    const gw_req_t *r = &c->req;
    /* A body the request announced and did not send yet still comes: a
     * refused upload (413) keeps arriving, and a gateway (nginx over
     * uwsgi) sends the body whole before it reads the answer. Draining it
     * is what reading it would have cost, and LINGER_MS bounds it anyway.
     * A client's announced length is its word only: it counts up to
     * --limit-body, which the client could make us read anyway
     * ("Content-Length: 9000000000000000000" and a 413 is no budget of
     * 2^63 bytes). A gateway holds the body it announces (nginx's
     * client_max_body_size bounds it) and sends all of it before it reads:
     * the whole of it is drained, or nginx reports 502 instead of
     * gangway's 413. */
    uint64_t owed = r->content_length > 0 && (uint64_t)r->content_length > r->body.len
                        ? (uint64_t)r->content_length - r->body.len
                        : 0;

    if (!r->is_gateway && owed > ctx->limits.body)
        owed = ctx->limits.body;
    c->state = C_LINGER;
    c->linger_left = LINGER_BYTES + owed > drained ? LINGER_BYTES + owed - drained : 0;
    ready_remove(c);
    release_out(c);
    gw_req_reset(&c->req, &ctx->body_env);
    gw_buf_release(&c->rbuf, &ctx->rbuf_pool);
    c->parsed = c->head_end = 0;
    gw_transport_shutdown(&c->tp);
    gw_timer_start(&ctx->linger_q, &c->timer);
    if (!watch(c))
        return;
    if (c->can_read)
        drain_linger(c);
}

/* Closes c after a complete answer: lingering when the client may have sent
 * more (bytes already read and not parsed, a socket not known to be empty,
 * or bytes one read finds now), at once otherwise (the common case costs
 * one read() or nothing). A gateway (nginx over uwsgi) sends nothing after
 * its one request: no probe there. */
static void end_conn(gw_conn_t *c)
{
    ssize_t n;

    if (c->rbuf.len > c->parsed || c->can_read) {
        linger(c, 0);
        return;
    }
    if (!c->req.is_gateway) {
        n = gw_transport_read(&c->tp, scratch, sizeof(scratch));
        if (n > 0) {
            /* maybe more, with no edge to come */
            c->can_read = (size_t)n == sizeof(scratch) || gw_transport_has_pending(&c->tp);
            linger(c, (size_t)n);
            return;
        }
    }
    close_conn(c);
}

/* Answers an error the server found itself, then closes after a linger. */
static void respond_error(gw_conn_t *c, int status, const char *reason)
{
    out_node_t *o = get_out(c);
    gw_resp_t rs;
    int rc;

    if (reason && status != 408)
        gw_log_error("%s: %d (%s)", c->peer.addr[0] ? c->peer.addr : "unix", status, reason);
    c->state = C_LINGER;
    ready_remove(c);
    if (!o) {
        close_conn(c);
        return;
    }
    /* What was queued is dropped, except the rest of a 100 Continue the
     * socket took only part of: this answer must follow it whole. */
    gw_out_discard_unstarted(&o->out);
    if (gw_resp_text(&rs, &c->req, status, NULL, 0, false, NULL, 0, &o->out) < 0) {
        close_conn(c);
        return;
    }
    {
        uint64_t us = c->req.start_us ? gw_clock_us_now() - c->req.start_us : 0;
        log_request(c, status, rs.body_sent, us, false);
        if (c->ctx->slot)
            count(c, status, rs.body_sent, us);
    }
    rc = gw_out_flush(&o->out, &c->tp);
    if (rc == -EAGAIN) {
        c->can_write = false;
        gw_timer_start(&c->ctx->write_q, &c->timer);
        watch(c);
        return; /* linger() once the answer is out */
    }
    if (rc < 0) {
        close_conn(c);
        return;
    }
    linger(c, 0);
}

/* ---- reading ---- */

static void enter_keepalive(gw_conn_t *c);

static ssize_t read_some(gw_conn_t *c, char *p, size_t n);
static void stop_idle(gw_conn_t *c);
static void feed_body(gw_conn_t *c, size_t n);

static void do_read(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    while (c->can_read && (c->state == C_PROXY || c->state == C_HEAD || c->state == C_BODY)) {
        size_t space;
        ssize_t n;

        if (c->state == C_BODY) {
            if ((n = read_some(c, scratch, sizeof(scratch))) <= 0)
                return;
            gw_timer_start(&ctx->body_q, &c->timer);
            feed_body(c, (size_t)n);
            continue;
        }
        if (gw_buf_reserve(&c->rbuf, &ctx->rbuf_pool, 1024) < 0) {
            respond_error(c, 500, "out of memory");
            return;
        }
        space = c->rbuf.cap - c->rbuf.len;
        if ((n = read_some(c, c->rbuf.data + c->rbuf.len, space)) <= 0)
            return;
        if (c->rbuf.len == 0 && c->parsed == 0) {
            c->req.start_us = gw_clock_us_now();
            if (c->timer.q != &ctx->header_q)
                gw_timer_start(&ctx->header_q, &c->timer);
        }
        c->rbuf.len += (size_t)n;
        process_input(c);
    }
    if ((c->state == C_PROXY || c->state == C_HEAD || c->state == C_BODY) && !c->can_read)
        watch(c); /* drained by a short read: wait for the next bytes */
}

/* One read for do_read. Returns the byte count (a short read clears
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
            stop_idle(c); /* idle between requests while stopping */
            return 0;
        }
        if (c->rbuf.len == 0)
            gw_buf_release(&c->rbuf, &ctx->rbuf_pool); /* idle: hold no buffer */
        watch(c);
        return 0;
    }
    /* EOF or an error: a partial request is simply dropped. */
    close_conn(c);
    return 0;
}

/* A graceful stop meets c idle between requests, nothing unread. Closing
 * it now would cross a request a busy client is sending this instant (its
 * last answer promised keep-alive): lost, and a POST cannot be retried. So
 * a connection answered within the last STOP_GRACE_MS, a client in the
 * middle of a burst whose next request follows within a round trip and its
 * own work, stays watched for STOP_GRACE_MS more; a request that comes is
 * answered, with Connection: close. Then, and at once for one idle longer
 * (parked in a pool: its next request as likely at any instant), a
 * lingering close: FIN, and a request that crosses it is drained, not
 * answered with a RST, so the client sees a clean close and retries. The
 * stop lasts at most STOP_GRACE_MS + LINGER_MS longer than its answers,
 * and --graceful-timeout bounds it all. */
static void stop_idle(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->in_grace) { /* an edge with nothing to read: wait on */
        watch(c);
        return;
    }
    if (gw_clock_ms() - c->idle_ms < STOP_GRACE_MS) {
        c->in_grace = true;
        gw_buf_release(&c->rbuf, &ctx->rbuf_pool); /* idle: hold no buffer */
        gw_timer_start(&ctx->linger_q, &c->timer);
        watch(c);
        return;
    }
    linger(c, 0);
}

static void send_continue(gw_conn_t *c)
{
    out_node_t *o = get_out(c);

    c->continue_sent = true;
    if (!o)
        return;
    gw_resp_continue(&o->out);
    if (gw_out_flush(&o->out, &c->tp) == -EAGAIN) {
        c->can_write = false; /* the rest leaves before the response */
        watch(c);
    }
}

/* The request is read whole: it waits for the top of the loop. */
static void request_ready(gw_conn_t *c)
{
    int rc = gw_body_flush(&c->req.body, &c->ctx->body_env);

    if (rc == -ENOSPC || rc == -EDQUOT) {
        respond_error(c, 503, "no space left to store the request body");
        return;
    }
    if (rc < 0) {
        respond_error(c, 500, "cannot store the request body");
        return;
    }
    /* What trusted proxies say of the client, for the environ and the log. */
    if (c->peer.is_trusted) {
        const gw_fwd_conf_t *fwd = c->peer.listener->fwd;
        const char *why = gw_fwd_resolve(fwd, &c->req, c->rbuf.data);
        if (why && fwd->log)
            gw_log_error("forwarded: %s: %s; ignored", c->peer.addr[0] ? c->peer.addr : "unix",
                         why);
    }
    if (c->peer.is_ssl && !c->req.client.scheme)
        c->req.client.scheme = GW_SCHEME_HTTPS;
    c->state = C_READY;
    c->want_read = false; /* read whole: a queued read must not stand in for it */
    gw_timer_stop(&c->timer);
    ready_push(c);
}

static void parse_error(gw_conn_t *c)
{
    const char *reason;
    int status = c->proto->error(&c->p, &reason);

    if (status) {
        respond_error(c, status, reason);
        return;
    }
    /* Not the protocol (HTTP sent to a uwsgi socket, say): nothing the peer
     * would understand as an answer. */
    gw_log_error("%s: %s: %s; closing", c->proto->name, c->peer.addr[0] ? c->peer.addr : "unix",
                 reason);
    close_conn(c);
}

static gw_parse_t feed(gw_conn_t *c, const char *base, size_t off, size_t len, size_t *used)
{
    *used = 0;
    return c->proto->feed(&c->p, &c->req, base, off, len, used);
}

/* Parses what the read buffer holds past c->parsed (a head, maybe the start
 * of its body, maybe a pipelined request). */
static bool proxy_input(gw_conn_t *c);

static void process_input(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->state == C_PROXY && !proxy_input(c))
        return;
    for (;;) {
        size_t used;
        gw_parse_t st = feed(c, c->rbuf.data, c->parsed, c->rbuf.len - c->parsed, &used);

        c->parsed += used;
        switch (st) {
        case GW_PARSE_AGAIN:
            if (c->state == C_BODY) {
                /* Body bytes are in the body store now; keep only the head
                 * (the body's own reads go to the scratch buffer). */
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

/* A PROXY protocol listener's connection starts with the header (HAProxy's
 * proxy-protocol.txt), read under the header timeout like a request head:
 * its source becomes the peer, for REMOTE_ADDR, the logs and the trust in
 * forwarded headers; the balancer's own address stays in peer.via. LOCAL
 * (the balancer's health check) keeps the real peer. Without a valid
 * header the connection closes: nothing after it can be told apart from a
 * forged one. True when what the read buffer holds past the header is to
 * be parsed as the first request. */
static bool proxy_input(gw_conn_t *c)
{
    gw_peer_t *pe = &c->peer;
    size_t used;
    gw_proxy_st_t st = gw_proxy_feed(&c->px, c->rbuf.data, c->rbuf.len, &used);

    if (st == GW_PROXY_AGAIN) {
        c->rbuf.len = 0; /* the parser keeps what it needs */
        return false;
    }
    if (st == GW_PROXY_ERROR) {
        gw_log_error("proxy protocol: %s: %s; closing", pe->addr[0] ? pe->addr : "unix",
                     c->px.reason);
        close_conn(c);
        return false;
    }
    c->rbuf.len -= used;
    memmove(c->rbuf.data, c->rbuf.data + used, c->rbuf.len);
    c->state = C_HEAD;
    if (!c->px.info.is_local) {
        const gw_proxy_info_t *in = &c->px.info;
        memcpy(pe->via, pe->addr[0] ? pe->addr : "unix", sizeof(pe->via));
        pe->ip = in->src;
        gw_allow_ip_format(&in->src, pe->addr);
        if (in->src.family == AF_UNIX)
            pe->port[0] = '\0';
        else
            snprintf(pe->port, sizeof(pe->port), "%u", (unsigned)in->src_port);
        pe->is_ssl = in->is_ssl;
        pe->is_trusted = pe->listener->fwd && gw_fwd_trusts(pe->listener->fwd, &pe->ip);
    }
    return c->rbuf.len > 0;
}

/* Feeds n body bytes read into the scratch buffer (c is in C_BODY: the read
 * buffer holds the head alone). */
static void feed_body(gw_conn_t *c, size_t n)
{
    size_t used, left;
    gw_parse_t st = feed(c, scratch, 0, n, &used);

    switch (st) {
    case GW_PARSE_AGAIN:
        return;
    case GW_PARSE_DONE:
        /* What follows the body is the next request's: it goes where
         * keep-alive looks for it, after this request's head. */
        left = n - used;
        if (left) {
            if (gw_buf_reserve(&c->rbuf, &c->ctx->rbuf_pool, left) < 0) {
                respond_error(c, 500, "out of memory");
                return;
            }
            memcpy(c->rbuf.data + c->rbuf.len, scratch + used, left);
            c->rbuf.len += left;
        }
        request_ready(c);
        return;
    case GW_PARSE_HEAD: /* only ever once, before the body */
        close_conn(c);
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

    switch (c->state) {
    case C_PROXY:
    case C_HEAD:
    case C_BODY:
        if (c->out && !gw_out_is_empty(&c->out->out) && c->can_write)
            gw_out_flush(&c->out->out, &c->tp); /* a pending 100 Continue */
        do_read(c);
        break;
    case C_APP:
        if (c->waiting_write && c->can_write) {
            uint64_t before = c->out->out.sent;
            rc = gw_out_flush(&c->out->out, &c->tp);
            if (rc == 0) {
                c->waiting_write = false;
                gw_timer_stop(&c->timer);
                c->want_resume = true;
                ready_push(c);
            } else if (rc == -EAGAIN) {
                c->can_write = false;
                if (c->out->out.sent != before)
                    gw_timer_start(&c->ctx->write_q, &c->timer);
            } else {
                give_up(c);
                c->waiting_write = false;
                gw_timer_stop(&c->timer);
                c->want_abort = true;
                ready_push(c);
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
                close_conn(c);
                break;
            }
            linger(c, 0);
            break;
        }
        if (c->can_read)
            drain_linger(c);
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
        close_conn(c);
        break;
    case C_HEAD:
        if (c->rbuf.len > 0 || c->parsed > 0)
            respond_error(c, 408, "request head timeout");
        else if (c->ctx->is_stopping)
            linger(c, 0); /* a stop's grace is over (stop_idle, gw_conn_stop_all) */
        else
            close_conn(c); /* idle: nothing to answer */
        break;
    case C_BODY:
        respond_error(c, 408, "request body timeout");
        break;
    case C_APP:
        /* The client stopped reading: give up on this response. */
        give_up(c);
        c->waiting_write = false;
        c->want_abort = true;
        ready_push(c);
        break;
    default:
        close_conn(c);
        break;
    }
}

/* ---- the ready queue ---- */

/* Tells the scoreboard that Python runs for c's request (harakiri watches). */
static void mark_busy(gw_conn_t *c)
{
    gw_slot_t *slot = c->ctx->slot;
    const gw_req_t *r = &c->req;

    if (!slot)
        return;
    if (c->rbuf.data && r->target.len && r->target.off == r->method.off + r->method.len + 1 &&
        c->rbuf.data[r->target.off - 1] == ' ') {
        /* "METHOD target" as it came (an HTTP/1 request line): no copy. */
        gw_slot_busy(slot, gw_clock_ms(), c->rbuf.data + r->method.off,
                     r->target.off + r->target.len - r->method.off);
    } else if (c->rbuf.data && r->target.len) {
        char what[sizeof(slot->current)];
        int n = snprintf(what, sizeof(what), "%.*s %.*s", (int)r->method.len,
                         c->rbuf.data + r->method.off, (int)r->target.len,
                         c->rbuf.data + r->target.off);
        gw_slot_busy(slot, gw_clock_ms(), what,
                     n < 0 ? 0 : (size_t)n < sizeof(what) ? (size_t)n : sizeof(what) - 1);
    } else {
        gw_slot_busy(slot, gw_clock_ms(), "-", 1);
    }
}

static void mark_idle(gw_conn_ctx_t *ctx)
{
    if (ctx->slot)
        gw_slot_idle(ctx->slot);
}

/* Answers from --static-map without the handler; false: the app answers. */
static bool serve_static(gw_conn_t *c)
{
    gw_static_result_t res;
    gw_out_t *o = gw_conn_out(c);
    bool keep = gw_conn_may_keep_alive(c);
    int rc;

    if (!o || !gw_static_answer(c->ctx->statics, &c->req, c->rbuf.data, o, keep, &res))
        return false;
    c->is_static = true;
    c->static_keep = keep;
    c->static_status = res.status;
    c->static_bytes = res.bytes;
    rc = gw_conn_send(c);
    if (rc == -EAGAIN)
        return true; /* on_resume-less: the drained queue finishes it */
    gw_conn_finish(c, rc == 0 && keep, res.status, res.bytes);
    return true;
}

/* Ends an answer that cannot be completed: the handler drops its state and
 * ends it with gw_conn_finish(), which logs it as aborted (a static answer
 * is ended here). Runs Python (the iterable's close()). */
static void abandon(gw_conn_t *c)
{
    gw_handler_t *h = &c->ctx->handler;

    give_up(c);
    c->want_abort = c->want_resume = false;
    if (c->is_static) {
        gw_conn_finish(c, false, c->static_status, c->static_bytes);
        return;
    }
    if (c->app_state && h->on_abort)
        h->on_abort(h->ctx, c);
    if (c->state == C_APP) /* the handler kept no state: nothing was sent */
        gw_conn_finish(c, false, 499, 0);
}

/* A request starts: its answer's keep-alive is decided from here on. The
 * server's hook may begin a stop (--max-requests): this very answer then
 * says Connection: close, instead of being cut after a keep-alive promise. */
static void start_request(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    c->state = C_APP;
    c->continue_sent = false;
    c->is_aborted = false;
    c->unsent = 0;
    c->sent_mark = c->out ? c->out->out.sent : 0; /* after a 100 Continue */
    if (ctx->on_request_start && !ctx->is_stopping)
        ctx->on_request_start(ctx->server);
}

void gw_conn_run_ready(gw_conn_ctx_t *ctx)
{
    uint64_t n = ctx->_nready;
    gw_handler_t *h = &ctx->handler;

    /* At most as many as were queued when we started: requests that become
     * ready meanwhile (pipelining) wait for the next turn, so I/O is not
     * starved. */
    while (n-- > 0 && ctx->_ready_head) {
        gw_conn_t *c = ctx->_ready_head;

        ready_remove(c);
        if (c->want_abort) {
            c->want_abort = c->want_resume = false;
            if (c->state == C_APP) {
                mark_busy(c);
                abandon(c);
                mark_idle(ctx);
            }
            close_conn(c);
        } else if (c->want_resume) {
            c->want_resume = false;
            if (c->state == C_APP && c->is_static) {
                gw_conn_finish(c, c->static_keep, c->static_status, c->static_bytes);
            } else if (c->state == C_APP) {
                mark_busy(c);
                h->on_resume(h->ctx, c);
                mark_idle(ctx);
            }
        } else if (c->want_read) {
            c->want_read = false;
            if (c->state == C_HEAD || c->state == C_BODY)
                do_read(c);
            else if (c->state == C_LINGER && c->can_read)
                drain_linger(c);
        } else if (c->state == C_READY) {
            start_request(c);
            if (ctx->statics && serve_static(c))
                continue;
            mark_busy(c);
            h->on_request(h->ctx, c);
            mark_idle(ctx);
        }
    }
    free_dead(ctx);
}

void gw_conn_stop_all(gw_conn_ctx_t *ctx)
{
    gw_conn_t *c = ctx->_all, *next;

    ctx->is_stopping = true;
    for (; c; c = next) {
        next = c->all_next;
        if (c->state == C_PROXY) { /* the same short grace as below, for its header */
            gw_timer_start(&ctx->linger_q, &c->timer);
            continue;
        }
        if (c->state != C_HEAD || c->rbuf.len != 0 || c->parsed != 0)
            continue; /* a request is under way: it finishes, then the conn closes */
        if (c->nreq > 0) {
            /* Idle keep-alive: a last look at the socket (a request may be
             * there, its event not seen yet: it is answered, with
             * Connection: close); an empty one waits a grace if its client
             * was busy a moment ago, then closes cleanly (stop_idle). */
            c->can_read = true;
            do_read(c);
        } else {
            /* Accepted, its first request not here yet (it may be in flight):
             * a short grace to arrive, served with Connection: close; then
             * a lingering close (on_timer). */
            gw_timer_start(&ctx->linger_q, &c->timer);
        }
    }
    /* What closed here is freed at the top of the next turn, not now: this
     * runs from a signal's event, and a later event of the same batch may
     * still name a closed connection (whose struct an accept in that batch
     * would otherwise take from the free list). */
}

/* ---- the handler's side ---- */

gw_req_t *gw_conn_req(gw_conn_t *c)
{
    return &c->req;
}

const char *gw_conn_rbuf(const gw_conn_t *c)
{
    return c->rbuf.data;
}

const gw_peer_t *gw_conn_peer(const gw_conn_t *c)
{
    return &c->peer;
}

gw_out_t *gw_conn_out(gw_conn_t *c)
{
    out_node_t *o = get_out(c);
    return o ? &o->out : NULL;
}

void **gw_conn_app_slot(gw_conn_t *c)
{
    return &c->app_state;
}

void **gw_conn_handler_data(gw_conn_t *c)
{
    return &c->handler_data;
}

bool gw_conn_may_keep_alive(const gw_conn_t *c)
{
    return !c->ctx->is_stopping && !c->ctx->is_recycling && c->req.keep_alive;
}

int gw_conn_send(gw_conn_t *c)
{
    int rc;

    if (!c->out)
        return 0;
    rc = gw_out_flush(&c->out->out, &c->tp);
    if (rc == 0) {
        if (c->waiting_write) {
            c->waiting_write = false;
            gw_timer_stop(&c->timer);
        }
        return 0;
    }
    if (rc == -EAGAIN) {
        c->can_write = false;
        if (!c->waiting_write) {
            c->waiting_write = true;
            gw_timer_start(&c->ctx->write_q, &c->timer);
        }
        /* The handler still owns c here: if epoll refuses, the write
         * timeout ends the connection rather than closing it under it. */
        try_watch(c);
    } else {
        give_up(c);
    }
    return rc;
}

gw_conn_wait_t gw_conn_wait_for(const gw_conn_t *c)
{
    uint64_t ms = c->ctx->write_timeout_ms;
    return (gw_conn_wait_t){.fd = c->tp.fd,
                            .events = c->tp.write_wants,
                            .timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms};
}

int gw_conn_wait(gw_conn_wait_t wt)
{
    struct pollfd pfd = {.fd = wt.fd, .events = wt.events};
    int n;

    do {
        n = poll(&pfd, 1, wt.timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ETIMEDOUT;
    if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
        return -EPIPE;
    return 0;
}

void gw_conn_give_up(gw_conn_t *c)
{
    give_up(c); /* the caller drops the queue: count what it held now */
}

void gw_conn_resume(gw_conn_t *c)
{
    if (c->state != C_APP || c->want_resume)
        return;
    c->want_resume = true;
    ready_push(c);
}

static void enter_keepalive(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    size_t left = c->rbuf.len - c->parsed;

    gw_req_reset(&c->req, &ctx->body_env);
    c->proto->reset(&c->p);
    if (left) {
        memmove(c->rbuf.data, c->rbuf.data + c->parsed, left);
        c->rbuf.len = left;
    } else {
        gw_buf_release(&c->rbuf, &ctx->rbuf_pool);
    }
    c->parsed = c->head_end = 0;
    c->state = C_HEAD;
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
        if (!watch(c))
            return;
        if (c->can_read) {
            c->want_read = true;
            ready_push(c);
        }
        return;
    }
    c->idle_ms = gw_clock_ms();
    c->in_grace = false;
    gw_timer_start(&ctx->keepalive_q, &c->timer);
    if (!watch(c))
        return;
    /* While stopping, a last look: a request the client sent after this
     * answer's keep-alive promise is answered (Connection: close), an empty
     * socket waits a grace, then closes (stop_idle). */
    if (ctx->is_stopping)
        c->can_read = true;
    if (c->can_read) {
        /* Bytes may wait in the kernel with no edge to come: read next turn. */
        c->want_read = true;
        ready_push(c);
    }
}

void gw_conn_finish(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes)
{
    gw_conn_ctx_t *ctx = c->ctx;
    uint64_t us = c->req.start_us ? gw_clock_us_now() - c->req.start_us : 0;
    bool aborted = c->is_aborted || (c->out && !gw_out_is_empty(&c->out->out));

    if (aborted) {
        /* Logged as nginx does: 499 when no byte of the answer was written,
         * else its status with the body bytes that did leave (what was
         * queued, less what was still queued when it was given up). */
        uint64_t sent = c->out ? c->out->out.sent - c->sent_mark : 0;
        uint64_t unsent = c->is_aborted ? c->unsent : gw_out_pending(&c->out->out);
        if (sent == 0)
            status = 499;
        body_bytes = sent == 0 || unsent >= body_bytes ? 0 : body_bytes - unsent;
    }
    log_request(c, status, body_bytes, us, aborted);
    c->nreq++;
    c->is_static = false;
    if (ctx->slot)
        count(c, status, body_bytes, us);
    c->app_state = NULL;
    c->waiting_write = false;
    gw_timer_stop(&c->timer);
    if (aborted) {
        close_conn(c); /* the peer is gone or stopped reading: nothing to wait for */
        return;
    }
    release_out(c);
    if (!keep_alive) {
        end_conn(c); /* after Connection: close or a close-delimited body */
        return;
    }
    /* The answer promised keep-alive: go on, even if a stop began meanwhile
     * (enter_keepalive answers what already came, then closes). */
    enter_keepalive(c);
}
