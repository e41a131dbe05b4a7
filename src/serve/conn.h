/* One client connection: socket, read buffer, the protocol's parser (driven
 * through proto.h, whichever the listener speaks), body buffering,
 * timeouts, keep-alive, and the output queue the response leaves through. The application side (wsgi) sees a connection through the
 * accessors below and is called back from the top of the loop only, never
 * from an I/O handler. */
#ifndef GW_CONN_H
#define GW_CONN_H

#include "core/buf.h"
#include "core/handoff.h"
#include "core/loop.h"
#include "proc/listen.h"
#include "proc/scoreboard.h"
#include "proto/proto.h"
#include "proto/request.h"
#include "serve/out.h"
#include "serve/static.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct gw_conn gw_conn_t;

/* What the application side provides. Each callback runs at the top of the
 * loop with no I/O handler on the stack, and may run Python. */
typedef struct gw_handler {
    void *ctx;
    /* A complete request is in; start its response. */
    void (*on_request)(void *ctx, gw_conn_t *c);
    /* The output queue drained after gw_conn_send() said -EAGAIN. */
    void (*on_resume)(void *ctx, gw_conn_t *c);
    /* The connection died with a response in progress (or the server stops
     * at once): drop the app state and end the answer with
     * gw_conn_finish(c, false, status, body bytes queued), which logs it as
     * aborted. The connection is closed right after. */
    void (*on_abort)(void *ctx, gw_conn_t *c);
    /* Drops an output segment's owner once its bytes are out (GIL held). */
    gw_release_cb release;
    /* The connection closes: drop what the handler kept for it in
     * gw_conn_handler_data() (GIL held; must not run Python code). */
    void (*on_close)(void *ctx, gw_conn_t *c);
} gw_handler_t;

/* Per-worker context shared by all connections; owned by the server. */
typedef struct gw_conn_ctx {
    gw_loop_t *loop;
    gw_handler_t handler;
    gw_proto_limits_t limits;  /* for every protocol */
    gw_body_env_t body_env;
    gw_bufpool_t rbuf_pool;
    gw_bufpool_t body_pool;
    gw_arena_pool_t arena_pool;
    gw_timerq_t header_q, body_q, keepalive_q, write_q, linger_q;
    gw_timerq_t handshake_q; /* TLS connections until their first request byte (server.c) */
    uint64_t write_timeout_ms;
    /* lists, private to the conn*.c files (conn_priv.h) */
    gw_conn_t *_all, *_ready_head, *_ready_tail, *_dead, *_free;
    void *_outs;          /* free output queues */
    uint64_t _nready;
    uint64_t nconns;
    uint64_t nwaiting;    /* of them, waiting on the client mid-request (conn.c) */
    bool is_stopping;     /* graceful stop: no keep-alive, close idle ones */
    bool is_recycling;    /* waiting for a replacement: no keep-alive, still accepting */
    gw_slot_t *slot;      /* this worker's scoreboard slot, or NULL */
    gw_static_t *statics; /* --static-map, or NULL (its file cache changes) */
    void (*on_conn_freed)(void *server); /* accept may resume; stop may finish */
    /* A request starts (app or static): --max-requests counts here, so that
     * the answer reaching the limit already says Connection: close (the
     * hook begins the stop; gw_conn_may_keep_alive() is false from then). */
    void (*on_request_start)(void *server);
    void *server;
    /* --threads N > 1 (gw_conn_ctx_threads(), conn_thread.c): complete
     * requests go to the pool's threads through jobq; their answers come
     * back through news. 0 threads: the app runs on the loop's thread. */
    unsigned nthreads;
    gw_jobq_t jobq;
    gw_news_t news;
    gw_watch_t news_watch;
    gw_job_t drain_job;  /* wakes an idle thread for the handler's own work (arg NULL) */
    gw_timerq_t tick_q;
    gw_timer_t tick;     /* every 100 ms: --queue-timeout, then on_tick */
    uint64_t queue_timeout_us;
    void (*on_tick)(void *tick_ctx, struct gw_conn_ctx *ctx); /* the loop's thread */
    void *tick_ctx;
    /* A request thread is stuck where no exception reaches it (harakiri):
     * the server stops taking requests (from the loop's thread). */
    void (*on_stuck)(void *server);
} gw_conn_ctx_t;

typedef struct gw_peer {
    const gw_listener_t *listener; /* borrowed, worker lifetime */
    char addr[48];                 /* numeric client address; "" for unix (after a PROXY
                                    * protocol header: the address it names) */
    char port[8];
    gw_ip_t ip;                    /* addr as bytes (AF_UNIX: a unix socket's peer) */
    bool is_trusted;               /* in --forwarded-allow-ips: its forwarded headers count */
    bool is_ssl;                   /* a PROXY v2 header says the client spoke TLS */
    char via[48];                  /* the socket's own peer when a PROXY header named
                                    * another (the balancer); "" otherwise */
} gw_peer_t;

/* Prepares ctx (timer queues from the timeouts, in seconds). */
void gw_conn_ctx_init(gw_conn_ctx_t *ctx, gw_loop_t *loop, const gw_handler_t *handler,
                      const gw_proto_limits_t *limits, uint64_t body_buffer,
                      const char *tmpdir, uint64_t header_s, uint64_t body_s,
                      uint64_t keepalive_s, uint64_t write_s);

/* Frees every pooled object (worker exit; all connections closed). */
void gw_conn_ctx_dispose(gw_conn_ctx_t *ctx);

/* Takes ownership of an accepted, non-blocking socket whose peer is sa.
 * 0 or -errno (the fd is closed then). */
struct sockaddr;
int gw_conn_open(gw_conn_ctx_t *ctx, int fd, const gw_listener_t *l, const struct sockaddr *sa);

/* Serves the ready queue (new requests, resumes, aborts) and frees closed
 * connections. Called once per loop iteration; runs Python via the handler. */
void gw_conn_run_ready(gw_conn_ctx_t *ctx);
bool gw_conn_has_ready(const gw_conn_ctx_t *ctx);

/* Graceful stop: idle connections close (a request already sent is still
 * answered), others after their response, always with a lingering close.
 * An idle keep-alive connection answered within the last 2 s, and one whose
 * first request has not come, are watched 2 s first: a request arriving
 * then is answered, with Connection: close. */
void gw_conn_stop_all(gw_conn_ctx_t *ctx);

/* Quick stop: every connection closes now; the app's iterables get close(). */
void gw_conn_close_all(gw_conn_ctx_t *ctx);

/* --- for the handler, while it owns the response --- */

gw_req_t *gw_conn_req(gw_conn_t *c);
const char *gw_conn_rbuf(const gw_conn_t *c);
const gw_peer_t *gw_conn_peer(const gw_conn_t *c);
/* The connection's transport (serve/tls.h reads the TLS session's facts
 * for the environ from it). */
struct gw_transport *gw_conn_transport(gw_conn_t *c);
/* The output queue of this response (taken from a pool; never NULL while the
 * handler owns the connection). */
gw_out_t *gw_conn_out(gw_conn_t *c);
/* The handler's per-request state. */
void **gw_conn_app_slot(gw_conn_t *c);
/* The handler's per-connection data (kept across keep-alive requests;
 * on_close drops it). */
void **gw_conn_handler_data(gw_conn_t *c);
/* False when the server is stopping or recycling: the response must close. */
bool gw_conn_may_keep_alive(const gw_conn_t *c);

/* Flushes the output queue. 0: all sent. -EAGAIN: the rest goes out when the
 * socket is writable, then on_resume runs. Other negative errno: the peer is
 * gone; the handler drops its state and calls gw_conn_finish(c, false, ...). */
int gw_conn_send(gw_conn_t *c);

/* For the WSGI write() callable, which must not return before its bytes are
 * out: it waits for the socket without the GIL, while the app's other
 * threads may write to c, or end its response, and the loop may run. So
 * the wait reads nothing of c: gw_conn_wait_for() takes the socket, what
 * the transport's last write waits for (writable; TLS may need readable)
 * and the write timeout while the handler owns c, after gw_conn_send()
 * said -EAGAIN; gw_conn_wait() blocks until that readiness or the timeout
 * (0, -ETIMEDOUT or -errno) and touches no connection; after a failure the
 * handler, owning c again, ends the answer with gw_conn_give_up() (its log
 * line then says aborted). */
typedef struct gw_conn_wait {
    int fd;
    short events; /* POLLOUT, or POLLIN (transport.h: write_wants) */
    int timeout_ms;
    gw_conn_t *c;  /* --threads: the wait is on c's queue (fd -1), see below ... */
    uint64_t mark; /* ... until its byte count reaches this */
} gw_conn_wait_t;
gw_conn_wait_t gw_conn_wait_for(gw_conn_t *c);
int gw_conn_wait(gw_conn_wait_t wt);
void gw_conn_give_up(gw_conn_t *c);

/* The handler emptied the output queue itself with gw_conn_send() (an app
 * thread's write()) while its response waited for on_resume: run on_resume
 * from the top of the loop, as the queue draining there would have. Within
 * one loop turn (the loop may be waiting, up to a second). */
void gw_conn_resume(gw_conn_t *c);

/* The response is complete (or abandoned): log it, and go back to reading
 * when keep_alive (the answer said so and is all sent; requests already
 * read are answered even if a stop began meanwhile), else close: at once
 * when the answer was given up (gw_conn_send() failed, or
 * gw_conn_give_up(); the log line then says aborted, with status 499 if no byte of it
 * left), with a lingering close when the client may have sent more.
 * status and body_bytes (queued) are for the log. The handler must not
 * touch c afterwards. */
void gw_conn_finish(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes);

/* ---- --threads N > 1: requests on the pool's threads (conn_thread.c) ----
 *
 * The loop's thread keeps the socket: it reads the whole request, hands it
 * to a thread, sends what the thread queues and takes the connection back
 * when the answer is handed back. On the thread the handler calls the
 * functions above as it does on the loop's thread, with these meanings:
 * gw_conn_out() is the thread's own staging queue; gw_conn_send() moves its
 * segments into the connection's queue for the loop to send: 0 while the
 * client has less than a window (256 KiB) to take, -EAGAIN past it (the
 * thread waits in gw_conn_runner_wait(), without the GIL, then calls
 * on_resume), -EPIPE once the client is gone; gw_conn_finish() hands the
 * answer back (what is left of it goes out from the loop) and the thread
 * must not touch c afterwards; gw_conn_wait_for()/gw_conn_wait() wait
 * until what the connection's queue holds now is sent (the loop's
 * --write-timeout gives up a client that takes nothing), not for the
 * socket. */

/* Sets ctx up for n request threads; 0 or -errno. */
int gw_conn_ctx_threads(gw_conn_ctx_t *ctx, unsigned n, uint64_t queue_timeout_s);

/* Loop's thread: wakes an idle thread with ctx->drain_job. Only when every
 * thread is idle (gw_jobq_idle() == nthreads). */
void gw_conn_ctx_wake_drain(gw_conn_ctx_t *ctx);

/* Any thread: a request thread is stuck; ctx->on_stuck runs on the loop's. */
void gw_conn_ctx_stuck(gw_conn_ctx_t *ctx);

/* Loop's thread: open connections whose request thread is stuck. */
unsigned gw_conn_ctx_stuck_count(gw_conn_ctx_t *ctx);

/* What a request thread keeps: the staging queue of the answer it makes,
 * the connection it runs a request for (NULL once handed back) and whether
 * the watchdog found it stuck. Embedded in the thread's own state. */
typedef struct gw_conn_runner {
    gw_out_t stage;
    gw_conn_t *conn;
    _Atomic bool is_stuck;
} gw_conn_runner_t;

/* The thread's set-up, once: release drops its staging queue's owners
 * (the thread holds the GIL whenever it does). */
void gw_conn_runner_init(gw_conn_runner_t *r, gw_release_cb release);

/* A job from ctx->jobq with a connection: its request starts on r. */
gw_conn_t *gw_conn_runner_begin(gw_conn_runner_t *r, gw_job_t *job);

static inline bool gw_conn_runner_is_busy(const gw_conn_runner_t *r) { return r->conn != 0; }

/* Without the GIL: the answer paused (gw_conn_send() said -EAGAIN): waits
 * until the client has taken half the window, gw_conn_resume() is called,
 * or the client is gone (-EPIPE; else 0). */
int gw_conn_runner_wait(gw_conn_t *c);

/* "METHOD target" of c's request into buf (NUL-terminated); its length. */
size_t gw_conn_describe(const gw_conn_t *c, char *buf, size_t n);

/* gw_conn_send() for the answer's last block: 0 once every segment is in
 * the connection's queue, whatever the window (the loop sends the rest and
 * the thread is free). The same as gw_conn_send() without threads. */
int gw_conn_send_last(gw_conn_t *c);

#endif
