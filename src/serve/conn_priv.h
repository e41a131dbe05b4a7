/* The connection module's private parts, shared by the files that make it
 * and by nothing else: conn.c (the state machine: open, read, parse, a
 * complete request queued, keep-alive and pipelining, timeouts, close),
 * conn_peer.c (who the client is: the socket's address and trust, a PROXY
 * listener's header, what trusted proxies say), conn_close.c (how a
 * connection ends: gangway's own error answers, the lingering close, a
 * graceful or quick stop's connections), conn_dispatch.c (the ready queue
 * run from the top of the loop, the handler's side, the output queue's
 * lifetime, and the accounting of each answer: its access log line and
 * counters) and conn_thread.c (--threads). The public interface is
 * serve/conn.h. */
#ifndef GW_CONN_PRIV_H
#define GW_CONN_PRIV_H

#include "serve/conn.h"

#include "proto/protocols.h"
#include "proto/proxy.h"
#include "serve/transport.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LINGER_MS 2000       /* a lingering close drains what the client still sends... */

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
    bool in_grace;     /* stopping: idle, watched a while before its close (gw__conn_stop_idle) */
    bool is_waiting;   /* a request begun, the rest still with the client (conn.c) */
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
    /* --threads (conn_thread.c): while a request thread runs the app for it.
     * Set by gw_conn_open(), not cleared by its memset: mu and cv are made
     * once per struct (gw__conn_thread_init()). */
    bool is_dispatched;   /* loop: handed to the pool, not yet taken back */
    bool may_keep;        /* gw_conn_may_keep_alive() when it was handed over */
    gw_job_t job;         /* in the pool's queue while no thread is free */
    gw_news_node_t news;  /* queued for the loop: answer bytes, or its end */
    _Atomic(gw_conn_runner_t *) runner; /* the thread running it (NULL: none yet) */
    pthread_mutex_t mu;   /* the output queue and what follows, while dispatched */
    pthread_cond_t cv;    /* waiting threads: room in the window, the end, the client gone */
    unsigned nwaiters;    /* threads in a wait on cv */
    bool tx_dead;         /* the client is gone, or took nothing for --write-timeout */
    bool resume_asked;    /* gw_conn_resume() */
    bool is_handing_back; /* the runner ends the answer: waits (GIL held) for the waiters */
    bool fin_posted;      /* the answer is handed back ... */
    bool fin_keep;        /* ... with what gw_conn_finish() was told */
    int fin_status;
    uint64_t fin_bytes;
};

/* The ready queue: connections with work for the top of the loop
 * (gw_conn_run_ready()). */

static inline void gw__conn_ready_push(gw_conn_t *c)
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

static inline void gw__conn_ready_remove(gw_conn_t *c)
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


/* ---- conn.c ---- */

/* Where body bytes and a lingering close's drain are read (see conn.c). */
extern char gw__conn_scratch[65536];
/* Reads and parses while c is reading a request and the socket has bytes. */
void gw__conn_read(gw_conn_t *c);
/* Closes c at once (the handler's on_close runs); freed after the current
 * batch of events (gw__conn_free_dead()). Accepts a closed c. */
void gw__conn_close(gw_conn_t *c);
void gw__conn_free_dead(gw_conn_ctx_t *ctx);
/* Registers c with epoll the first time it has to wait: true, or false
 * when epoll refuses (gw__conn_watch() then closes c). */
bool gw__conn_try_watch(gw_conn_t *c);
bool gw__conn_watch(gw_conn_t *c);
/* An answer promised keep-alive is done: the next request (maybe already
 * buffered: pipelining) or the keep-alive wait. */
void gw__conn_keepalive(gw_conn_t *c);

/* ---- conn_peer.c ---- */

/* c's peer from the accepted socket's address sa (may be NULL) and
 * whether its listener l trusts it. */
void gw__conn_peer_open(gw_conn_t *c, const gw_listener_t *l, const struct sockaddr *sa);
/* C_PROXY: feeds what the read buffer holds to the PROXY header's parser;
 * a complete header names the peer, leaves its bytes out of the buffer and
 * moves c to C_HEAD. True when what follows it is to be parsed as the first
 * request; false when more is needed or c is closed (a bad header). */
bool gw__conn_proxy_input(gw_conn_t *c);
/* C_PROXY on a TLS listener (--tls-proxy-protocol): reads the header from
 * the socket itself, taking none of the handshake's bytes. Then c is in
 * C_HEAD (the header is whole: the handshake may be read at once), or
 * waits for more (can_read cleared), or is closed (C_DEAD). */
void gw__conn_proxy_peek(gw_conn_t *c);
/* A complete request: what trusted proxies say of its client (--forwarded-
 * allow-ips, a PROXY header's SSL TLV) goes into c->req.client. */
void gw__conn_peer_resolve(gw_conn_t *c);

/* ---- conn_close.c ---- */

/* The lingering close: c shuts its side down, drains what still comes
 * (drained bytes already counted), and closes. */
void gw__conn_linger(gw_conn_t *c, size_t drained);
void gw__conn_drain_linger(gw_conn_t *c);
/* Closes c after a complete answer: lingering when the client may have
 * sent more, at once otherwise. */
void gw__conn_end(gw_conn_t *c);
/* Answers an error gangway found itself (logged with reason), then lingers. */
void gw__conn_error(gw_conn_t *c, int status, const char *reason);
/* A graceful stop meets c idle between requests: a grace, then a linger. */
void gw__conn_stop_idle(gw_conn_t *c);

/* ---- conn_dispatch.c ---- */

/* c's output queue, taken from the pool on first use (NULL: no memory);
 * handed back, emptied, by gw__conn_release_out(). */
out_node_t *gw__conn_get_out(gw_conn_t *c);
void gw__conn_release_out(gw_conn_t *c);
/* One answer's scoreboard counters and access-log line. */
void gw__conn_count(gw_conn_t *c, int status, uint64_t bytes_out, uint64_t duration_us);
void gw__conn_log_request(gw_conn_t *c, int status, uint64_t bytes, uint64_t duration_us,
                          bool is_aborted);
/* The answer is given up: what was left unsent is kept for its log line. */
void gw__conn_set_aborted(gw_conn_t *c);
/* Ends an answer that cannot be completed (runs Python: close()). */
void gw__conn_abandon(gw_conn_t *c);
/* gw_conn_finish() on the loop's thread: log, count, keep-alive or close. */
void gw__conn_finish_now(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes);

/* ---- conn_thread.c (--threads) ---- */

/* The connection's lock and condition, once per struct (and undone when it
 * is freed), when the worker has request threads. */
void gw__conn_thread_init(gw_conn_t *c);
void gw__conn_thread_destroy(gw_conn_t *c);
void gw__conn_threads_dispose(gw_conn_ctx_t *ctx);
/* Loop: the complete request of c (C_APP) goes to the pool. */
void gw__conn_dispatch(gw_conn_t *c);
/* Loop: sends what the thread queued; takes c back once handed back and sent. */
void gw__conn_thread_flush(gw_conn_t *c);
/* Loop: the client is gone (or --write-timeout): the thread learns it. */
void gw__conn_thread_dead(gw_conn_t *c);
/* The handler's calls (conn.h) on a request thread. */
gw_out_t *gw__conn_thread_out(gw_conn_t *c);
int gw__conn_thread_send(gw_conn_t *c, bool is_last);
void gw__conn_thread_finish(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes);
void gw__conn_thread_resume(gw_conn_t *c);
void gw__conn_thread_give_up(gw_conn_t *c);
gw_conn_wait_t gw__conn_thread_wait_for(gw_conn_t *c);
int gw__conn_thread_wait(gw_conn_wait_t wt);

#endif
