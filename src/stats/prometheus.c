/* GET /metrics: the Prometheus text renderer (render.h), text format 0.0.4. */
#include "stats/render.h"
#include "stats/text.h"
#include "stats/view.h"

#include "core/clock.h"

#include <inttypes.h>
#include <stdlib.h>

static void metric(gw_text_t *t, const char *name, const char *type, const char *help)
{
    gw_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, quote and newline escaped, as the format says. */
static void label(gw_text_t *t, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            gw_text_put(t, "\\", 1), gw_text_put(t, v, 1);
        else if (*v == '\n')
            gw_text_puts(t, "\\n");
        else
            gw_text_put(t, v, 1);
    }
}

void gw_stats_prometheus(const gw_stats_source_t *src, gw_text_t *t)
{
    static const char *cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    uint64_t now = gw_clock_ms(), cum = 0;
    gw_totals_t all;
    wview_t *v = calloc(src->nslots, sizeof(*v));
    size_t nv = 0;
    unsigned states[4] = {0}; /* starting, idle, busy, stopping */
    unsigned in_flight = 0;   /* the app running, whatever the state */
    uint64_t conns = 0;

    if (!v) {
        t->is_failed = true;
        return;
    }
    gw__view_totals(src, &all);
    for (size_t i = 0; i < src->nslots; i++) {
        if (!gw__view_worker(src, i, now, &v[nv]))
            continue;
        const char *s = v[nv].state;
        states[s[0] == 's' ? (s[2] == 'a' ? 0 : 3) : s[0] == 'i' ? 1 : 2]++;
        conns += v[nv].conns;
        in_flight += v[nv].threads ? v[nv].threads_busy : v[nv].busy_ms != 0;
        nv++;
    }

    metric(t, "gangway_info", "gauge", "The server's version.");
    gw_text_puts(t, "gangway_info{version=\"");
    label(t, src->version);
    gw_text_puts(t, "\"} 1\n");
    metric(t, "gangway_uptime_seconds", "gauge", "Seconds since the master started.");
    gw_text_printf(t, "gangway_uptime_seconds %" PRIu64 "\n", (now - src->started_ms) / 1000);

    metric(t, "gangway_requests_total", "counter",
           "Requests answered by all workers, past ones included, by status class.");
    for (int i = 0; i < 6; i++)
        gw_text_printf(t, "gangway_requests_total{status=\"%s\"} %" PRIu64 "\n", cls[i],
                       all.status[i]);
    metric(t, "gangway_requests_by_method_total", "counter", "Requests answered, by method.");
    for (int i = 0; i < GW_METHODS; i++)
        gw_text_printf(t, "gangway_requests_by_method_total{method=\"%s\"} %" PRIu64 "\n",
                       gw_method_names[i], all.methods[i]);

    metric(t, "gangway_request_duration_seconds", "histogram",
           "Time from a request's first byte to its last response byte queued.");
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        cum += all.lat[b];
        if (b < GW_LAT_BUCKETS - 1)
            gw_text_printf(t, "gangway_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                           (double)gw_lat_bounds_us[b] / 1e6, cum);
        else
            gw_text_printf(t, "gangway_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                           cum);
    }
    gw_text_printf(t, "gangway_request_duration_seconds_sum %.6f\n", (double)all.lat_sum_us / 1e6);
    gw_text_printf(t, "gangway_request_duration_seconds_count %" PRIu64 "\n", cum);

    metric(t, "gangway_requests_in_flight", "gauge", "Requests the app is running now.");
    gw_text_printf(t, "gangway_requests_in_flight %u\n", in_flight);
    metric(t, "gangway_workers", "gauge", "Workers by state.");
    gw_text_printf(t,
                   "gangway_workers{state=\"starting\"} %u\ngangway_workers{state=\"idle\"} %u\n"
                   "gangway_workers{state=\"busy\"} %u\ngangway_workers{state=\"stopping\"} %u\n",
                   states[0], states[1], states[2], states[3]);
    metric(t, "gangway_connections", "gauge", "Open client connections.");
    gw_text_printf(t, "gangway_connections %" PRIu64 "\n", conns);
    metric(t, "gangway_worker_respawns_total", "counter", "Workers replaced, by reason.");
    for (int r = 0; r < GW_RESPAWN_REASONS; r++)
        gw_text_printf(t, "gangway_worker_respawns_total{reason=\"%s\"} %" PRIu64 "\n",
                       gw_respawn_names[r], src->respawns[r]);
    metric(t, "gangway_harakiri_total", "counter",
           "Requests interrupted for running past --harakiri.");
    gw_text_printf(t, "gangway_harakiri_total %" PRIu64 "\n", all.harakiri);
    metric(t, "gangway_queue_wait_seconds", "histogram",
           "--threads: how long complete requests waited for a free thread.");
    cum = 0;
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        cum += all.queue_wait[b];
        if (b < GW_LAT_BUCKETS - 1)
            gw_text_printf(t, "gangway_queue_wait_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                           (double)gw_lat_bounds_us[b] / 1e6, cum);
        else
            gw_text_printf(t, "gangway_queue_wait_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                           cum);
    }
    gw_text_printf(t, "gangway_queue_wait_seconds_sum %.6f\n",
                   (double)all.queue_wait_sum_us / 1e6);
    gw_text_printf(t, "gangway_queue_wait_seconds_count %" PRIu64 "\n", cum);
    metric(t, "gangway_queue_timeouts_total", "counter",
           "Requests answered 503 after waiting past --queue-timeout for a thread.");
    gw_text_printf(t, "gangway_queue_timeouts_total %" PRIu64 "\n", all.queue_timeouts);
    metric(t, "gangway_received_bytes_total", "counter", "Request heads and bodies.");
    gw_text_printf(t, "gangway_received_bytes_total %" PRIu64 "\n", all.bytes_in);
    metric(t, "gangway_sent_bytes_total", "counter", "Response bodies.");
    gw_text_printf(t, "gangway_sent_bytes_total %" PRIu64 "\n", all.bytes_out);

    metric(t, "gangway_listen_queue", "gauge",
           "Connections waiting to be accepted (TCP listeners shared by the workers).");
    for (size_t i = 0; i < src->nl; i++) {
        uint32_t q, qmax;
        if (!gw__view_listen_queue(&src->ls[i], &q, &qmax))
            continue;
        gw_text_puts(t, "gangway_listen_queue{listener=\"");
        label(t, src->ls[i].url);
        gw_text_printf(t, "\"} %u\n", q);
    }
    metric(t, "gangway_listen_queue_max", "gauge", "The listen backlog.");
    for (size_t i = 0; i < src->nl; i++) {
        uint32_t q, qmax;
        if (!gw__view_listen_queue(&src->ls[i], &q, &qmax))
            continue;
        gw_text_puts(t, "gangway_listen_queue_max{listener=\"");
        label(t, src->ls[i].url);
        gw_text_printf(t, "\"} %u\n", qmax);
    }

    metric(t, "gangway_worker_requests_total", "counter", "Requests answered by each worker.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_requests_total{worker=\"%zu\"} %" PRIu64 "\n",
                       v[i].slot + 1, v[i].c.requests);
    metric(t, "gangway_worker_busy", "gauge", "1 while the worker's app runs a request.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_busy{worker=\"%zu\"} %d\n", v[i].slot + 1,
                       v[i].busy_ms || v[i].threads_busy ? 1 : 0);
    metric(t, "gangway_worker_threads", "gauge",
           "Request threads of each worker (1: requests run on its loop's thread).");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_threads{worker=\"%zu\"} %u\n", v[i].slot + 1,
                       v[i].threads ? v[i].threads : 1);
    metric(t, "gangway_worker_threads_busy", "gauge", "Threads of each worker running a request.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_threads_busy{worker=\"%zu\"} %u\n", v[i].slot + 1,
                       v[i].threads ? v[i].threads_busy : v[i].busy_ms != 0);
    metric(t, "gangway_worker_requests_queued", "gauge",
           "Complete requests of each worker waiting for a free thread.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_requests_queued{worker=\"%zu\"} %u\n", v[i].slot + 1,
                       v[i].queued);
    metric(t, "gangway_worker_connections", "gauge", "Open connections of each worker.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_connections{worker=\"%zu\"} %" PRIu64 "\n", v[i].slot + 1,
                       v[i].conns);
    metric(t, "gangway_worker_connections_waiting", "gauge",
           "Of them, connections whose request is still arriving (a partial head or body).");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_connections_waiting{worker=\"%zu\"} %" PRIu64 "\n",
                       v[i].slot + 1, v[i].conns_waiting);
    metric(t, "gangway_worker_resident_memory_bytes", "gauge", "Each worker's RSS.");
    for (size_t i = 0; i < nv; i++)
        gw_text_printf(t, "gangway_worker_resident_memory_bytes{worker=\"%zu\"} %" PRIu64 "\n",
                       v[i].slot + 1, v[i].rss);
    free(v);
}
