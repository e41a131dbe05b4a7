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
    uint64_t rss, vsz; /* bytes */
    uint64_t started_ms;
} wview_t;

/* A snapshot of slot i; false when no worker holds it. */
bool view(const gw_stats_source_t *src, size_t i, uint64_t now_ms, wview_t *v);

/* The accept queue of a TCP listener (Linux reports it in TCP_INFO). */
bool listen_queue(const gw_listener_t *l, uint32_t *queue, uint32_t *max);

void all_totals(const gw_stats_source_t *src, gw_totals_t *t);

#endif
