/* How a connection ends when it does not simply close: gangway's own error
 * answers (400, 408, 413, 500, 503...), the lingering close (FIN, drain at
 * most LINGER_MS and a bounded number of bytes), a graceful stop's idle
 * connections and a quick stop's (gw_conn_close_all). Part of the connection module (serve/conn_priv.h). */
#include "serve/conn_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "serve/response.h"

#include <errno.h>

#define LINGER_BYTES (8u << 20) /* ...and this much more than a body it still owes us */
#define LINGER_TURN (16u * 65536) /* drained per loop turn: the loop (and the timer) go on */
/* A graceful stop keeps an idle keep-alive connection whose last answer is
 * this recent for as long again (the linger queue), see gw__conn_stop_idle(). */
#define STOP_GRACE_MS LINGER_MS

/* ---- error answers and the lingering close ---- */

/* Reads and drops what the client still sends, until it closes, the byte
 * budget is spent (then c closes anyway), or the socket is empty (c waits
 * for the next edge or the linger timer). Big reads: no CPU per byte. At
 * most LINGER_TURN bytes a call: a client that sends as fast as we read
 * never empties the socket, and a loop until EAGAIN would hold the worker
 * in this handler, with the linger timer unable to fire; the rest is read
 * on a later turn (the ready queue: no edge comes for bytes already
 * there), after other connections and the timers had theirs. */
void gw__conn_drain_linger(gw_conn_t *c)
{
    size_t turn = 0;

    while (c->linger_left > 0) {
        size_t want = c->linger_left < sizeof(gw__conn_scratch) ? c->linger_left
                                                                : sizeof(gw__conn_scratch);
        ssize_t n;

        if (turn >= LINGER_TURN) {
            c->want_read = true;
            gw__conn_ready_push(c);
            return;
        }
        n = gw_transport_read(&c->tp, gw__conn_scratch, want);
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
    gw__conn_close(c);
}

/* The answer is out and the connection ends. Closing a socket whose receive
 * queue holds unread bytes (or that gets bytes afterwards) makes the kernel
 * send a RST, and a RST can make the client's kernel drop the answer it has
 * not read yet. So: shut down our side (the client reads the answer, then
 * EOF), read and drop what comes, and close when the client does, after
 * LINGER_MS, or past LINGER_BYTES beyond the body still owed: nothing here
 * lasts longer than that, and it costs one big read per 64 KiB. The
 * request's memory goes back at once; the connection keeps only its slot. */
void gw__conn_linger(gw_conn_t *c, size_t drained)
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
    gw__conn_ready_remove(c);
    gw__conn_release_out(c);
    gw_req_reset(&c->req, &ctx->body_env);
    gw_buf_release(&c->rbuf, &ctx->rbuf_pool);
    c->parsed = c->head_end = 0;
    gw_transport_shutdown(&c->tp);
    gw_timer_start(&ctx->linger_q, &c->timer);
    if (!gw__conn_watch(c))
        return;
    if (c->can_read)
        gw__conn_drain_linger(c);
}

/* Closes c after a complete answer: lingering when the client may have sent
 * more (bytes already read and not parsed, a socket not known to be empty,
 * or bytes one read finds now), at once otherwise (the common case costs
 * one read() or nothing). A gateway (nginx over uwsgi) sends nothing after
 * its one request: no probe there. */
void gw__conn_end(gw_conn_t *c)
{
    ssize_t n;

    if (c->rbuf.len > c->parsed || c->can_read) {
        gw__conn_linger(c, 0);
        return;
    }
    if (!c->req.is_gateway) {
        n = gw_transport_read(&c->tp, gw__conn_scratch, sizeof(gw__conn_scratch));
        if (n > 0) {
            /* maybe more, with no edge to come */
            c->can_read = (size_t)n == sizeof(gw__conn_scratch) || gw_transport_has_pending(&c->tp);
            gw__conn_linger(c, (size_t)n);
            return;
        }
    }
    gw__conn_close(c);
}

/* Answers an error the server found itself, then closes after a linger. */
void gw__conn_error(gw_conn_t *c, int status, const char *reason)
{
    out_node_t *o = gw__conn_get_out(c);
    gw_resp_t rs;
    int rc;

    if (reason && status != 408)
        gw_log_error("%s: %d (%s)", c->peer.addr[0] ? c->peer.addr : "unix", status, reason);
    c->state = C_LINGER;
    gw__conn_ready_remove(c);
    if (!o) {
        gw__conn_close(c);
        return;
    }
    /* What was queued is dropped, except the rest of a 100 Continue the
     * socket took only part of: this answer must follow it whole. */
    gw_out_discard_unstarted(&o->out);
    if (gw_resp_text(&rs, &c->req, status, NULL, 0, false, NULL, 0, &o->out) < 0) {
        gw__conn_close(c);
        return;
    }
    {
        uint64_t us = c->req.start_us ? gw_clock_us_now() - c->req.start_us : 0;
        gw__conn_log_request(c, status, rs.body_sent, us, false);
        if (c->ctx->slot)
            gw__conn_count(c, status, rs.body_sent, us);
    }
    rc = gw_out_flush(&o->out, &c->tp);
    if (rc == -EAGAIN) {
        c->can_write = false;
        gw_timer_start(&c->ctx->write_q, &c->timer);
        gw__conn_watch(c);
        return; /* gw__conn_linger() once the answer is out */
    }
    if (rc < 0) {
        gw__conn_close(c);
        return;
    }
    gw__conn_linger(c, 0);
}

/* ---- a graceful stop ---- */

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
void gw__conn_stop_idle(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (c->in_grace) { /* an edge with nothing to read: wait on */
        gw__conn_watch(c);
        return;
    }
    if (gw_clock_ms() - c->idle_ms < STOP_GRACE_MS) {
        c->in_grace = true;
        gw_buf_release(&c->rbuf, &ctx->rbuf_pool); /* idle: hold no buffer */
        gw_timer_start(&ctx->linger_q, &c->timer);
        gw__conn_watch(c);
        return;
    }
    gw__conn_linger(c, 0);
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
             * was busy a moment ago, then closes cleanly (gw__conn_stop_idle). */
            c->can_read = true;
            gw__conn_read(c);
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

void gw_conn_close_all(gw_conn_ctx_t *ctx)
{
    gw_conn_t *c, *next;

    for (c = ctx->_all; c; c = next) {
        next = c->all_next; /* c may close below: closed ones are freed later */
        if (c->is_dispatched) {
            if (!gw_jobq_cancel(&ctx->jobq, &c->job)) {
                /* On a thread: it learns the client is gone, and c is taken
                 * back (closed) once it hands the answer back; now if it has. */
                gw__conn_thread_dead(c);
                continue;
            }
            c->is_dispatched = false; /* it never reached a thread */
        }
        if (c->state == C_APP)
            gw__conn_abandon(c); /* logged, as cut short */
        gw__conn_close(c);
    }
    gw_log_flush(); /* the loop that would have written them is over */
}
