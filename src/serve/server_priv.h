/* The serving process's private parts, shared by server.c (the loop's
 * hooks, signals, stop and recycling) and accept.c (accepting) and by
 * nothing else. The public interface is serve/server.h. */
#ifndef GW_SERVER_PRIV_H
#define GW_SERVER_PRIV_H

#include "core/loop.h"
#include "serve/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACCEPT_BACKOFF_MS 100
#define ACCEPT_YIELD_MS 2

typedef struct lwatch {
    gw_watch_t watch;
    gw_server_t *server;
    gw_listener_t *l;
    bool is_active;
    bool is_failing;     /* accept() failed on it: left out until its retry timer */
    unsigned conn_errors; /* per-connection accept errors in a row */
    gw_timer_t retry;
    /* The accept step-back (accept.c), for this listener: the worker last
     * stepped back for, and how many connections it had taken from this
     * listener then (its slot's accepts counter for it). */
    gw_slot_t *yielded_to;
    uint64_t yielded_accepts;
} lwatch_t;

struct gw_server {
    const gw_config_t *cfg;
    gw_loop_t *loop;
    gw_conn_ctx_t conns;
    lwatch_t *lw;
    size_t nl;
    gw_watch_t sigwatch;
    gw_block_hooks_t hooks;
    gw_timerq_t backoff_q, yield_q, graceful_q, lifetime_q, rss_q;
    gw_static_t *statics;
    gw_timer_t backoff, graceful, lifetime, rss;
    gw_timer_t replace_wait; /* past --reload-on-rss: how long to wait for a replacement */
    gw_worker_info_t who;
    uint64_t requests;
    uint64_t max_requests; /* with this worker's jitter; 0: no limit */
    uint64_t started_ms;
    bool is_paused;   /* accept paused: too many connections or no fds */
    bool is_recycling; /* asked the master for a replacement; serves until SIGTERM */
    bool is_stopping;
    bool has_stuck;    /* a request thread is stuck (harakiri): exit without it */
    uint64_t emfile_logged_ms; /* when accept last said it had no descriptors */
    uint64_t error_logged_ms;  /* when a failing listener was last logged */
    uint64_t errors_unlogged;  /* listener failures since that line */
    uint64_t refused_logged_ms; /* when a refused peer (--*-allow-from) was last logged */
    uint64_t refused_unlogged;  /* peers refused since that line */
};

/* accept.c: sets up the listeners' watches (n of them, borrowed) and
 * starts accepting; -ENOMEM. */
int gw__accept_init(gw_server_t *s, gw_listener_t *listeners, size_t n);

/* Watches the listeners (on) or leaves them out (a listener whose accept()
 * keeps failing stays out until its retry). */
void gw__accept_set(gw_server_t *s, bool on);

/* Accepting again after a pause, unless stopping, in a back-off or still at
 * --max-connections (called as a connection goes). */
void gw__accept_resume(gw_server_t *s);

/* At a stop: takes what waits on this worker's own --reuse-port socket lw,
 * to serve it (shared sockets are left alone). */
void gw__accept_drain(gw_server_t *s, lwatch_t *lw);

#endif
