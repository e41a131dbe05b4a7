/* The statistics' three renderers, which the server (server.c) routes to
 * and which tests can call without a socket: the JSON (json.c), the
 * Prometheus text (prometheus.c) and the status page, a self-contained
 * HTML page drawing the JSON live (status_page.html, which the Makefile
 * compiles in as a string). Each reads src, which the master keeps
 * current, and the workers' /proc/<pid>/statm; out of memory, out says
 * so with is_failed. */
#ifndef GW_RENDER_H
#define GW_RENDER_H

#include "stats/stats.h"
#include "stats/text.h"

void gw_stats_json(const gw_stats_source_t *src, gw_text_t *out);
void gw_stats_prometheus(const gw_stats_source_t *src, gw_text_t *out);
extern const char gw_stats_status_page[];

#endif
