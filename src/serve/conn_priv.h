/* The connection module's private parts, shared by the files that make it
 * and by nothing else: conn.c (the state machine: open, read, parse, a
 * complete request queued, keep-alive and pipelining, timeouts, close),
 * conn_close.c (how a connection ends: gangway's own error answers, the
 * lingering close, a graceful stop's idle connections) and conn_dispatch.c
 * (the ready queue run from the top of the loop, the handler's side, the
 * output queue's lifetime, and the accounting of each answer: its access
 * log line and counters). The public interface is serve/conn.h. */
#ifndef GW_CONN_PRIV_H
#define GW_CONN_PRIV_H

#include "serve/conn.h"

#include "proto/protocols.h"
#include "serve/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LINGER_MS 2000       /* a lingering close drains what the client still sends... */

enum state { C_HEAD, C_BODY, C_READY, C_APP, C_LINGER, C_DEAD };

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
};

/* The ready queue: connections with work for the top of the loop
 * (gw_conn_run_ready()). */

static inline void ready_push(gw_conn_t *c)
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

static inline void ready_remove(gw_conn_t *c)
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


/* conn.c */
/* Where body bytes and a lingering close's drain are read (see conn.c). */
extern char scratch[65536];
void do_read(gw_conn_t *c);
void close_conn(gw_conn_t *c);
void free_dead(gw_conn_ctx_t *ctx);
bool try_watch(gw_conn_t *c);
bool watch(gw_conn_t *c);
void enter_keepalive(gw_conn_t *c);

/* conn_close.c */
void drain_linger(gw_conn_t *c);
void linger(gw_conn_t *c, size_t drained);
void end_conn(gw_conn_t *c);
void respond_error(gw_conn_t *c, int status, const char *reason);
void stop_idle(gw_conn_t *c);

/* conn_dispatch.c */
out_node_t *get_out(gw_conn_t *c);
void release_out(gw_conn_t *c);
void count(gw_conn_t *c, int status, uint64_t bytes_out, uint64_t duration_us);
void log_request(gw_conn_t *c, int status, uint64_t bytes, uint64_t duration_us,
                 bool is_aborted);
void give_up(gw_conn_t *c);
void abandon(gw_conn_t *c);

#endif
