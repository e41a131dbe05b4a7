/* --stats: the master's statistics server. It answers from the scoreboard
 * in shared memory, so it answers while every worker is busy or stuck.
 *
 *   GET /           JSON: the server and each worker (close to uWSGI's stats
 *                   layout where a field means the same); a connection that
 *                   sends nothing gets the same JSON without an HTTP head,
 *                   as uWSGI's stats socket does (uwsgitop)
 *   GET /metrics    Prometheus text format, summed over all workers, past
 *                   ones included
 *   GET /status     a self-contained HTML page drawing the JSON live
 *
 * The server is server.c; the renderers are separate from the socket, so
 * that tests can call them (stats/render.h). */
#ifndef GW_STATS_H
#define GW_STATS_H

#include "config/config.h"
#include "proc/listen.h"
#include "core/loop.h"
#include "proc/scoreboard.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Why the master replaced a worker. */
enum gw_respawn {
    GW_RESPAWN_CRASH,        /* killed by a signal or exited non-zero */
    GW_RESPAWN_MAX_REQUESTS,
    GW_RESPAWN_LIFETIME,
    GW_RESPAWN_RSS,
    GW_RESPAWN_HARAKIRI,     /* killed by the master after harakiri-grace */
    GW_RESPAWN_LOAD_FAILED,  /* could not load the app (retried with back-off) */
    GW_RESPAWN_REASONS
};
extern const char *const gw_respawn_names[GW_RESPAWN_REASONS];

/* What the statistics are made of: the master owns all of it and keeps it
 * current; the stats server only reads it, when asked. */
typedef struct gw_stats_source {
    const gw_config_t *cfg;
    const char *version;
    pid_t pid;
    uint64_t started_ms;  /* monotonic */
    time_t started_unix;
    const gw_listener_t *ls; /* fd -1 once a stop began */
    size_t nl;
    const gw_slot_t *slots;
    size_t nslots;
    const gw_totals_t *retired;       /* counters of workers that are gone */
    const uint64_t *respawns;         /* [GW_RESPAWN_REASONS] */
    const uint32_t *slot_respawns;    /* [nslots]: times this slot's worker was replaced */
    const time_t *slot_spawned_unix;  /* [nslots] */
    const unsigned *target;           /* the worker count asked for */
    const uint32_t *generation;
} gw_stats_source_t;

typedef struct gw_stats gw_stats_t;

/* Binds addr (":9191" and "9191" mean 127.0.0.1:9191; give a host to listen
 * elsewhere; unix paths too) and serves it on loop. handed_fd (-1: none) is
 * the socket a re-executed master's previous image served statistics on: it
 * is taken (owned from here on) when bound to addr, or whatever its address
 * with addr NULL (a reload whose new address cannot be bound), else closed.
 * src is borrowed for the server's life. NULL with a reason in err. */
gw_stats_t *gw_stats_new(gw_loop_t *loop, const char *addr, const gw_stats_source_t *src,
                         int handed_fd, char *err, size_t errlen);

/* "http://127.0.0.1:9191" or "http://unix:/path", for the log. */
const char *gw_stats_url(const gw_stats_t *s);

/* The listening socket (for the hand-over of a reload); -1 for NULL. */
int gw_stats_fd(const gw_stats_t *s);

/* Closes the socket and every connection. */
void gw_stats_free(gw_stats_t *s);

/* In a child forked from the master: closes the descriptors without
 * touching the loop (which the child does not run). */
void gw_stats_close_fds(gw_stats_t *s);

#endif
