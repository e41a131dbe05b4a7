/* What the renderers (json.c, prometheus.c) read, private to src/stats/: a
 * worker's numbers from its scoreboard slot and /proc, the sums over every
 * worker, past ones included, and a listener's accept queue. */
#ifndef GW_VIEW_H
#define GW_VIEW_H

#include "stats/stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct wview {
    size_t slot;
    pid_t pid;
    const char *state;
    uint64_t busy_ms; /* how long the current request has run, 0: idle */
    char current[128];
    gw_totals_t c;
    uint64_t conns;
    uint64_t conns_waiting;
    unsigned threads, threads_busy, queued; /* --threads: the pool (threads 0: none) */
    uint64_t rss, vsz; /* bytes */
    uint64_t started_ms;
} wview_t;

/* A snapshot of slot i into v (now_ms: the clock, for how long the current
 * request has run), its memory read from /proc/<pid>/statm (0 when that
 * cannot be read); false when no worker holds the slot. */
bool gw__view_worker(const gw_stats_source_t *src, size_t i, uint64_t now_ms, wview_t *v);

/* The accept queue of a TCP listener (Linux reports it in TCP_INFO); false
 * for a closed, unix or --reuse-port listener, or when that fails. */
bool gw__view_listen_queue(const gw_listener_t *l, uint32_t *queue, uint32_t *max);

/* The retired workers' totals plus those of every slot in use: sums that
 * never go down. */
void gw__view_totals(const gw_stats_source_t *src, gw_totals_t *t);

#endif
