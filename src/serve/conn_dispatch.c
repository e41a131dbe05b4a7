/* What happens around a complete request: the ready queue served from the
 * top of the loop (a request to a static file or the handler, a resume, an
 * abort), the handler's side of a connection (its output queue, sending,
 * the wait of write()), and the end of each answer: its access-log line,
 * the scoreboard's counters, then keep-alive or close. Part of the
 * connection module (serve/conn_priv.h). */
#include "serve/conn_priv.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

/* ---- the output queue ---- */

void gw__conn_release_out(gw_conn_t *c)
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

out_node_t *gw__conn_get_out(gw_conn_t *c)
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

/* ---- the accounting of an answer ---- */

/* The scoreboard's counters for one finished request. */
void gw__conn_count(gw_conn_t *c, int status, uint64_t bytes_out, uint64_t duration_us)
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

void gw__conn_log_request(gw_conn_t *c, int status, uint64_t bytes, uint64_t duration_us,
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
void gw__conn_set_aborted(gw_conn_t *c)
{
    if (c->is_aborted)
        return;
    c->is_aborted = true;
    c->unsent = c->out ? gw_out_pending(&c->out->out) : 0;
}

/* ---- the ready queue ---- */

bool gw_conn_has_ready(const gw_conn_ctx_t *ctx)
{
    return ctx->_ready_head != NULL;
}

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
void gw__conn_abandon(gw_conn_t *c)
{
    gw_handler_t *h = &c->ctx->handler;

    gw__conn_set_aborted(c);
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

        gw__conn_ready_remove(c);
        if (c->want_abort) {
            c->want_abort = c->want_resume = false;
            if (c->state == C_APP) {
                mark_busy(c);
                gw__conn_abandon(c);
                mark_idle(ctx);
            }
            gw__conn_close(c);
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
                gw__conn_read(c);
            else if (c->state == C_LINGER && c->can_read)
                gw__conn_drain_linger(c);
        } else if (c->state == C_READY) {
            start_request(c);
            if (ctx->statics && serve_static(c))
                continue;
            if (ctx->nthreads) {
                gw__conn_dispatch(c); /* to a request thread (conn_thread.c) */
                continue;
            }
            mark_busy(c);
            h->on_request(h->ctx, c);
            mark_idle(ctx);
        }
    }
    gw__conn_free_dead(ctx);
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

struct gw_transport *gw_conn_transport(gw_conn_t *c)
{
    return &c->tp;
}

gw_out_t *gw_conn_out(gw_conn_t *c)
{
    out_node_t *o;

    if (c->is_dispatched)
        return gw__conn_thread_out(c);
    o = gw__conn_get_out(c);
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
    if (c->is_dispatched)
        return c->may_keep; /* the thread reads no field the loop's thread writes */
    return !c->ctx->is_stopping && !c->ctx->is_recycling && c->req.keep_alive;
}

int gw_conn_send(gw_conn_t *c)
{
    int rc;

    if (c->is_dispatched)
        return gw__conn_thread_send(c, false);
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
        gw__conn_try_watch(c);
    } else {
        gw__conn_set_aborted(c);
    }
    return rc;
}

int gw_conn_send_last(gw_conn_t *c)
{
    if (c->is_dispatched)
        return gw__conn_thread_send(c, true);
    return gw_conn_send(c);
}

gw_conn_wait_t gw_conn_wait_for(gw_conn_t *c)
{
    uint64_t ms = c->ctx->write_timeout_ms;

    if (c->is_dispatched)
        return gw__conn_thread_wait_for(c);
    return (gw_conn_wait_t){.fd = c->tp.fd,
                            .events = c->tp.write_wants,
                            .timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms};
}

int gw_conn_wait(gw_conn_wait_t wt)
{
    struct pollfd pfd = {.fd = wt.fd, .events = wt.events};
    int n;

    if (wt.c)
        return gw__conn_thread_wait(wt);
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
    if (c->is_dispatched) {
        gw__conn_thread_give_up(c);
        return;
    }
    gw__conn_set_aborted(c); /* the caller drops the queue: count what it held now */
}

void gw_conn_resume(gw_conn_t *c)
{
    if (c->is_dispatched) {
        gw__conn_thread_resume(c);
        return;
    }
    if (c->state != C_APP || c->want_resume)
        return;
    c->want_resume = true;
    gw__conn_ready_push(c);
}

void gw_conn_finish(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes)
{
    if (c->is_dispatched) {
        gw__conn_thread_finish(c, keep_alive, status, body_bytes);
        return;
    }
    gw__conn_finish_now(c, keep_alive, status, body_bytes);
}

void gw__conn_finish_now(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes)
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
    gw__conn_log_request(c, status, body_bytes, us, aborted);
    c->nreq++;
    c->is_static = false;
    if (ctx->slot)
        gw__conn_count(c, status, body_bytes, us);
    c->app_state = NULL;
    c->waiting_write = false;
    gw_timer_stop(&c->timer);
    if (aborted) {
        gw__conn_close(c); /* the peer is gone or stopped reading: nothing to wait for */
        return;
    }
    gw__conn_release_out(c);
    if (!keep_alive) {
        gw__conn_end(c); /* after Connection: close or a close-delimited body */
        return;
    }
    /* The answer promised keep-alive: go on, even if a stop began meanwhile
     * (gw__conn_keepalive answers what already came, then closes). */
    gw__conn_keepalive(c);
}
