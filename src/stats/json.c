/* GET /: the JSON renderer (render.h), laid out close to uWSGI's stats
 * where a field means the same. */
#include "stats/render.h"
#include "stats/text.h"
#include "stats/view.h"

#include "core/clock.h"
#include "core/utf8.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define RELAXED memory_order_relaxed

/* A JSON string: quotes, backslashes and control bytes escaped; bytes that
 * are not UTF-8 (a torn `current` string) become U+FFFD. */
static void json_str(gw_text_t *t, const char *s)
{
    gw_text_put(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            gw_text_put(t, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            gw_text_printf(t, "\\u%04x", *p);
        } else if (*p < 0x80) {
            gw_text_put(t, (const char *)p, 1);
        } else {
            /* Copy a well-formed multi-byte sequence, replace anything else. */
            size_t n = gw_utf8_seq(p, strlen((const char *)p));
            if (n) {
                gw_text_put(t, (const char *)p, n);
                p += n - 1;
            } else {
                gw_text_puts(t, "\\ufffd");
            }
        }
    }
    gw_text_put(t, "\"", 1);
}

/* The p-quantile of a histogram in microseconds, interpolated inside its
 * bucket (the +Inf bucket reports its lower bound). 0 with no requests. */
static uint64_t quantile(const uint64_t *lat, double p)
{
    uint64_t total = 0, cum = 0;

    for (int b = 0; b < GW_LAT_BUCKETS; b++)
        total += lat[b];
    if (!total)
        return 0;
    double rank = p * (double)total;
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        if (lat[b] && (double)(cum + lat[b]) >= rank) {
            uint64_t lo = b ? gw_lat_bounds_us[b - 1] : 0;
            if (b == GW_LAT_BUCKETS - 1)
                return lo;
            uint64_t hi = gw_lat_bounds_us[b];
            double f = (rank - (double)cum) / (double)lat[b];
            return lo + (uint64_t)((double)(hi - lo) * (f < 0 ? 0 : f));
        }
        cum += lat[b];
    }
    return gw_lat_bounds_us[GW_LAT_BUCKETS - 2];
}

/* A histogram's buckets, then the closing "]}". */
static void buckets(gw_text_t *t, const uint64_t *h)
{
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        if (b < GW_LAT_BUCKETS - 1)
            gw_text_printf(t, "%s{\"le\":%" PRIu64 ",\"count\":%" PRIu64 "}", b ? "," : "",
                           gw_lat_bounds_us[b], h[b]);
        else
            gw_text_printf(t, ",{\"le\":null,\"count\":%" PRIu64 "}", h[b]);
    }
    gw_text_puts(t, "]}");
}

static void json_counts(gw_text_t *t, const gw_totals_t *c)
{
    static const char *cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    uint64_t avg = c->requests ? c->lat_sum_us / c->requests : 0;

    gw_text_printf(t,
                   "\"requests\":%" PRIu64 ",\"rx\":%" PRIu64 ",\"tx\":%" PRIu64
                   ",\"harakiri_count\":%" PRIu64 ",\"status_classes\":{",
                   c->requests, c->bytes_in, c->bytes_out, c->harakiri);
    for (int i = 0; i < 6; i++)
        gw_text_printf(t, "%s\"%s\":%" PRIu64, i ? "," : "", cls[i], c->status[i]);
    gw_text_puts(t, "},\"methods\":{");
    for (int i = 0; i < GW_METHODS; i++)
        gw_text_printf(t, "%s\"%s\":%" PRIu64, i ? "," : "", gw_method_names[i], c->methods[i]);
    gw_text_printf(t,
                   "},\"avg_rt\":%" PRIu64 ",\"latency_us\":{\"avg\":%" PRIu64 ",\"p50\":%" PRIu64
                   ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"buckets\":[",
                   avg, avg, quantile(c->lat, 0.5), quantile(c->lat, 0.9), quantile(c->lat, 0.99));
    buckets(t, c->lat);
    /* --threads: how long requests waited for a free thread */
    gw_text_printf(t, ",\"queue_timeouts\":%" PRIu64 ",\"queue_wait_us\":{\"sum\":%" PRIu64
                   ",\"p99\":%" PRIu64 ",\"buckets\":[",
                   c->queue_timeouts, c->queue_wait_sum_us, quantile(c->queue_wait, 0.99));
    buckets(t, c->queue_wait);
}

void gw_stats_json(const gw_stats_source_t *src, gw_text_t *t)
{
    const gw_config_t *cfg = src->cfg;
    uint64_t now = gw_clock_ms();
    time_t wall = time(NULL);
    gw_totals_t all;
    uint32_t q, qmax, total_q = 0;
    char cwd[1024];
    bool first = true;

    gw__view_totals(src, &all);
    if (!getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    gw_text_puts(t, "{\"version\":");
    json_str(t, src->version);
    gw_text_printf(t, ",\"pid\":%d,\"uid\":%u,\"gid\":%u,\"cwd\":", (int)src->pid,
                   (unsigned)getuid(), (unsigned)getgid());
    json_str(t, cwd);
    gw_text_printf(t, ",\"uptime\":%" PRIu64 ",\"started\":%lld,\"time\":%lld,\"generation\":%u",
                   (now - src->started_ms) / 1000, (long long)src->started_unix, (long long)wall,
                   *src->generation);
    gw_text_puts(t, ",\"sockets\":[");
    for (size_t i = 0; i < src->nl; i++) {
        const gw_listener_t *l = &src->ls[i];
        bool has_q = gw__view_listen_queue(l, &q, &qmax);
        gw_text_printf(t, "%s{\"name\":", i ? "," : "");
        json_str(t, l->url);
        gw_text_printf(t, ",\"proto\":\"%s\"", l->proto == GW_PROTO_UWSGI ? "uwsgi" : "http");
        if (has_q) {
            gw_text_printf(t, ",\"queue\":%u,\"max_queue\":%u", q, qmax);
            total_q += q;
        } else {
            gw_text_puts(t, ",\"queue\":null,\"max_queue\":null");
        }
        gw_text_puts(t, "}");
    }
    gw_text_printf(t,
                   "],\"listen_queue\":%u,\"config\":{\"workers\":%u,\"harakiri\":%" PRIu64
                   ",\"max_requests\":%" PRIu64 ",\"max_requests_jitter\":%" PRIu64
                   ",\"max_worker_lifetime\":%" PRIu64 ",\"reload_on_rss\":%" PRIu64
                   ",\"preload\":%s,\"max_connections\":%" PRIu64 ",\"limit_body\":%" PRIu64 "}",
                   total_q, *src->target, cfg->harakiri, cfg->max_requests,
                   cfg->max_requests_jitter, cfg->max_worker_lifetime, cfg->reload_on_rss,
                   cfg->preload ? "true" : "false", cfg->max_connections, cfg->limit_body);
    gw_text_puts(t, ",\"totals\":{");
    json_counts(t, &all);
    gw_text_puts(t, "},\"respawns\":{");
    for (int r = 0; r < GW_RESPAWN_REASONS; r++)
        gw_text_printf(t, "%s\"%s\":%" PRIu64, r ? "," : "", gw_respawn_names[r], src->respawns[r]);
    gw_text_puts(t, "},\"workers\":[");
    for (size_t i = 0; i < src->nslots; i++) {
        wview_t v;
        if (!gw__view_worker(src, i, now, &v))
            continue;
        gw_text_printf(t, "%s{\"id\":%zu,\"pid\":%d,\"status\":\"%s\",\"accepting\":%d,",
                       first ? "" : ",", i + 1, (int)v.pid, v.state,
                       strcmp(v.state, "stopping") != 0);
        first = false;
        json_counts(t, &v.c);
        gw_text_printf(t,
                       ",\"connections\":%" PRIu64 ",\"connections_waiting\":%" PRIu64
                       ",\"rss\":%" PRIu64 ",\"vsz\":%" PRIu64
                       ",\"running_time\":%" PRIu64 ",\"last_spawn\":%lld,\"respawn_count\":%u"
                       ",\"generation\":%u,\"threads\":%u,\"threads_busy\":%u,\"queued\":%u"
                       ",\"current\":",
                       v.conns, v.conns_waiting, v.rss, v.vsz,
                       v.started_ms && now > v.started_ms ? now - v.started_ms : 0,
                       (long long)src->slot_spawned_unix[i], src->slot_respawns[i],
                       atomic_load_explicit(&src->slots[i].generation, RELAXED),
                       v.threads ? v.threads : 1, v.threads ? v.threads_busy : v.busy_ms != 0,
                       v.queued);
        if (v.busy_ms) {
            json_str(t, v.current);
            gw_text_printf(t, ",\"current_ms\":%" PRIu64 "}", v.busy_ms);
        } else {
            gw_text_puts(t, "null,\"current_ms\":null}");
        }
    }
    gw_text_puts(t, "]}\n");
}
