#include "stats/stats.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAXED memory_order_relaxed
#define MAX_CONNS 32        /* the master serves a few operators, not a crowd */
#define REQ_MAX 4096        /* a request head larger than this is not for us */
#define BARE_MS 1000        /* nothing sent by then: a uwsgitop-style client */
#define IO_MS 5000          /* the longest a client may take to send or read */
#define RETRY_MS 100        /* accept() failed (no descriptors, ...): poll again after */

const char *const gw_respawn_names[GW_RESPAWN_REASONS] = {
    "crash", "max-requests", "max-worker-lifetime", "reload-on-rss", "harakiri", "load-failed",
};

/* ---- text ---- */

static void put(gw_text_t *t, const char *s, size_t n)
{
    if (t->is_failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->is_failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(gw_text_t *t, const char *s)
{
    put(t, s, strlen(s));
}

static void printf_(gw_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(gw_text_t *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    put(t, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* A JSON string: quotes, backslashes and control bytes escaped; bytes that
 * are not UTF-8 (a torn `current` string) become U+FFFD. */
static void json_str(gw_text_t *t, const char *s)
{
    put(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            put(t, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            printf_(t, "\\u%04x", *p);
        } else if (*p < 0x80) {
            put(t, (const char *)p, 1);
        } else {
            /* Copy a well-formed multi-byte sequence, replace anything else. */
            size_t n = gw_utf8_seq(p, strlen((const char *)p));
            if (n) {
                put(t, (const char *)p, n);
                p += n - 1;
            } else {
                puts_(t, "\\ufffd");
            }
        }
    }
    put(t, "\"", 1);
}

/* ---- numbers from the scoreboard ---- */

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

static void proc_mem(pid_t pid, uint64_t *rss, uint64_t *vsz)
{
    char path[64], buf[128];
    unsigned long long size = 0, resident = 0;
    int fd;
    ssize_t n;

    *rss = *vsz = 0;
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) == 2) {
        long page = sysconf(_SC_PAGESIZE);
        *rss = resident * (uint64_t)page;
        *vsz = size * (uint64_t)page;
    }
}

/* A snapshot of slot i; false when no worker holds it. */
static bool view(const gw_stats_source_t *src, size_t i, uint64_t now_ms, wview_t *v)
{
    const gw_slot_t *s = &src->slots[i];
    uint32_t st = atomic_load_explicit(&s->state, RELAXED);
    uint64_t since;

    memset(v, 0, sizeof(*v));
    v->pid = atomic_load_explicit(&s->pid, RELAXED);
    if (st == GW_SLOT_EMPTY || v->pid <= 0)
        return false;
    v->slot = i;
    since = atomic_load_explicit(&s->busy_since_ms, memory_order_acquire);
    v->busy_ms = since && now_ms > since ? now_ms - since : since ? 1 : 0;
    v->state = st == GW_SLOT_STARTING ? "starting"
               : st == GW_SLOT_STOPPING ? "stopping"
               : since                 ? "busy"
                                       : "idle";
    if (since) {
        memcpy(v->current, s->current, sizeof(s->current));
        v->current[sizeof(s->current)] = '\0';
    }
    gw_totals_add(&v->c, s);
    v->conns = atomic_load_explicit(&s->conns, RELAXED);
    v->started_ms = atomic_load_explicit(&s->started_ms, RELAXED);
    proc_mem(v->pid, &v->rss, &v->vsz);
    return true;
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

/* The accept queue of a TCP listener (Linux reports it in TCP_INFO). */
static bool listen_queue(const gw_listener_t *l, uint32_t *queue, uint32_t *max)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (l->fd < 0 || l->is_unix || l->is_reuse_port ||
        getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return false;
    *queue = ti.tcpi_unacked;
    *max = ti.tcpi_sacked;
    return true;
}

static void all_totals(const gw_stats_source_t *src, gw_totals_t *t)
{
    *t = *src->retired;
    for (size_t i = 0; i < src->nslots; i++)
        if (atomic_load_explicit(&src->slots[i].pid, RELAXED) > 0 ||
            atomic_load_explicit(&src->slots[i].state, RELAXED) != GW_SLOT_EMPTY)
            gw_totals_add(t, &src->slots[i]);
}

/* ---- JSON ---- */

static void json_counts(gw_text_t *t, const gw_totals_t *c)
{
    static const char *cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    uint64_t avg = c->requests ? c->lat_sum_us / c->requests : 0;

    printf_(t, "\"requests\":%" PRIu64 ",\"rx\":%" PRIu64 ",\"tx\":%" PRIu64
               ",\"harakiri_count\":%" PRIu64 ",\"status_classes\":{",
            c->requests, c->bytes_in, c->bytes_out, c->harakiri);
    for (int i = 0; i < 6; i++)
        printf_(t, "%s\"%s\":%" PRIu64, i ? "," : "", cls[i], c->status[i]);
    puts_(t, "},\"methods\":{");
    for (int i = 0; i < GW_METHODS; i++)
        printf_(t, "%s\"%s\":%" PRIu64, i ? "," : "", gw_method_names[i], c->methods[i]);
    printf_(t, "},\"avg_rt\":%" PRIu64 ",\"latency_us\":{\"avg\":%" PRIu64 ",\"p50\":%" PRIu64
               ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"buckets\":[",
            avg, avg, quantile(c->lat, 0.5), quantile(c->lat, 0.9), quantile(c->lat, 0.99));
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        if (b < GW_LAT_BUCKETS - 1)
            printf_(t, "%s{\"le\":%" PRIu64 ",\"count\":%" PRIu64 "}", b ? "," : "",
                    gw_lat_bounds_us[b], c->lat[b]);
        else
            printf_(t, ",{\"le\":null,\"count\":%" PRIu64 "}", c->lat[b]);
    }
    puts_(t, "]}");
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

    all_totals(src, &all);
    if (!getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    puts_(t, "{\"version\":");
    json_str(t, src->version);
    printf_(t, ",\"pid\":%d,\"uid\":%u,\"gid\":%u,\"cwd\":", (int)src->pid, (unsigned)getuid(),
            (unsigned)getgid());
    json_str(t, cwd);
    printf_(t, ",\"uptime\":%" PRIu64 ",\"started\":%lld,\"time\":%lld,\"generation\":%u",
            (now - src->started_ms) / 1000, (long long)src->started_unix, (long long)wall,
            *src->generation);
    puts_(t, ",\"sockets\":[");
    for (size_t i = 0; i < src->nl; i++) {
        const gw_listener_t *l = &src->ls[i];
        bool has_q = listen_queue(l, &q, &qmax);
        printf_(t, "%s{\"name\":", i ? "," : "");
        json_str(t, l->url);
        printf_(t, ",\"proto\":\"%s\"", l->proto == GW_PROTO_UWSGI ? "uwsgi" : "http");
        if (has_q) {
            printf_(t, ",\"queue\":%u,\"max_queue\":%u", q, qmax);
            total_q += q;
        } else {
            puts_(t, ",\"queue\":null,\"max_queue\":null");
        }
        puts_(t, "}");
    }
    printf_(t, "],\"listen_queue\":%u,\"config\":{\"workers\":%u,\"harakiri\":%" PRIu64
               ",\"max_requests\":%" PRIu64 ",\"max_requests_jitter\":%" PRIu64
               ",\"max_worker_lifetime\":%" PRIu64 ",\"reload_on_rss\":%" PRIu64
               ",\"preload\":%s,\"max_connections\":%" PRIu64 ",\"limit_body\":%" PRIu64 "}",
            total_q, *src->target, cfg->harakiri, cfg->max_requests, cfg->max_requests_jitter,
            cfg->max_worker_lifetime, cfg->reload_on_rss, cfg->preload ? "true" : "false",
            cfg->max_connections, cfg->limit_body);
    puts_(t, ",\"totals\":{");
    json_counts(t, &all);
    puts_(t, "},\"respawns\":{");
    for (int r = 0; r < GW_RESPAWN_REASONS; r++)
        printf_(t, "%s\"%s\":%" PRIu64, r ? "," : "", gw_respawn_names[r], src->respawns[r]);
    puts_(t, "},\"workers\":[");
    for (size_t i = 0; i < src->nslots; i++) {
        wview_t v;
        if (!view(src, i, now, &v))
            continue;
        printf_(t, "%s{\"id\":%zu,\"pid\":%d,\"status\":\"%s\",\"accepting\":%d,", first ? "" : ",",
                i + 1, (int)v.pid, v.state, strcmp(v.state, "stopping") != 0);
        first = false;
        json_counts(t, &v.c);
        printf_(t, ",\"connections\":%" PRIu64 ",\"rss\":%" PRIu64 ",\"vsz\":%" PRIu64
                   ",\"running_time\":%" PRIu64 ",\"last_spawn\":%lld,\"respawn_count\":%u"
                   ",\"generation\":%u,\"current\":",
                v.conns, v.rss, v.vsz, v.started_ms && now > v.started_ms ? now - v.started_ms : 0,
                (long long)src->slot_spawned_unix[i], src->slot_respawns[i],
                atomic_load_explicit(&src->slots[i].generation, RELAXED));
        if (v.busy_ms) {
            json_str(t, v.current);
            printf_(t, ",\"current_ms\":%" PRIu64 "}", v.busy_ms);
        } else {
            puts_(t, "null,\"current_ms\":null}");
        }
    }
    puts_(t, "]}\n");
}

/* ---- Prometheus ---- */

static void metric(gw_text_t *t, const char *name, const char *type, const char *help)
{
    printf_(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, quote and newline escaped, as the format says. */
static void label(gw_text_t *t, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            put(t, "\\", 1), put(t, v, 1);
        else if (*v == '\n')
            puts_(t, "\\n");
        else
            put(t, v, 1);
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
    all_totals(src, &all);
    for (size_t i = 0; i < src->nslots; i++) {
        if (!view(src, i, now, &v[nv]))
            continue;
        const char *s = v[nv].state;
        states[s[0] == 's' ? (s[2] == 'a' ? 0 : 3) : s[0] == 'i' ? 1 : 2]++;
        conns += v[nv].conns;
        in_flight += v[nv].busy_ms != 0;
        nv++;
    }

    metric(t, "gangway_info", "gauge", "The server's version.");
    puts_(t, "gangway_info{version=\"");
    label(t, src->version);
    puts_(t, "\"} 1\n");
    metric(t, "gangway_uptime_seconds", "gauge", "Seconds since the master started.");
    printf_(t, "gangway_uptime_seconds %" PRIu64 "\n", (now - src->started_ms) / 1000);

    metric(t, "gangway_requests_total", "counter",
           "Requests answered by all workers, past ones included, by status class.");
    for (int i = 0; i < 6; i++)
        printf_(t, "gangway_requests_total{status=\"%s\"} %" PRIu64 "\n", cls[i], all.status[i]);
    metric(t, "gangway_requests_by_method_total", "counter", "Requests answered, by method.");
    for (int i = 0; i < GW_METHODS; i++)
        printf_(t, "gangway_requests_by_method_total{method=\"%s\"} %" PRIu64 "\n",
                gw_method_names[i], all.methods[i]);

    metric(t, "gangway_request_duration_seconds", "histogram",
           "Time from a request's first byte to its last response byte queued.");
    for (int b = 0; b < GW_LAT_BUCKETS; b++) {
        cum += all.lat[b];
        if (b < GW_LAT_BUCKETS - 1)
            printf_(t, "gangway_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                    (double)gw_lat_bounds_us[b] / 1e6, cum);
        else
            printf_(t, "gangway_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    }
    printf_(t, "gangway_request_duration_seconds_sum %.6f\n", (double)all.lat_sum_us / 1e6);
    printf_(t, "gangway_request_duration_seconds_count %" PRIu64 "\n", cum);

    metric(t, "gangway_requests_in_flight", "gauge", "Requests the app is running now.");
    printf_(t, "gangway_requests_in_flight %u\n", in_flight);
    metric(t, "gangway_workers", "gauge", "Workers by state.");
    printf_(t, "gangway_workers{state=\"starting\"} %u\ngangway_workers{state=\"idle\"} %u\n"
               "gangway_workers{state=\"busy\"} %u\ngangway_workers{state=\"stopping\"} %u\n",
            states[0], states[1], states[2], states[3]);
    metric(t, "gangway_connections", "gauge", "Open client connections.");
    printf_(t, "gangway_connections %" PRIu64 "\n", conns);
    metric(t, "gangway_worker_respawns_total", "counter", "Workers replaced, by reason.");
    for (int r = 0; r < GW_RESPAWN_REASONS; r++)
        printf_(t, "gangway_worker_respawns_total{reason=\"%s\"} %" PRIu64 "\n",
                gw_respawn_names[r], src->respawns[r]);
    metric(t, "gangway_harakiri_total", "counter",
           "Requests interrupted for running past --harakiri.");
    printf_(t, "gangway_harakiri_total %" PRIu64 "\n", all.harakiri);
    metric(t, "gangway_received_bytes_total", "counter", "Request heads and bodies.");
    printf_(t, "gangway_received_bytes_total %" PRIu64 "\n", all.bytes_in);
    metric(t, "gangway_sent_bytes_total", "counter", "Response bodies.");
    printf_(t, "gangway_sent_bytes_total %" PRIu64 "\n", all.bytes_out);

    metric(t, "gangway_listen_queue", "gauge",
           "Connections waiting to be accepted (TCP listeners shared by the workers).");
    for (size_t i = 0; i < src->nl; i++) {
        uint32_t q, qmax;
        if (!listen_queue(&src->ls[i], &q, &qmax))
            continue;
        puts_(t, "gangway_listen_queue{listener=\"");
        label(t, src->ls[i].url);
        printf_(t, "\"} %u\n", q);
    }
    metric(t, "gangway_listen_queue_max", "gauge", "The listen backlog.");
    for (size_t i = 0; i < src->nl; i++) {
        uint32_t q, qmax;
        if (!listen_queue(&src->ls[i], &q, &qmax))
            continue;
        puts_(t, "gangway_listen_queue_max{listener=\"");
        label(t, src->ls[i].url);
        printf_(t, "\"} %u\n", qmax);
    }

    metric(t, "gangway_worker_requests_total", "counter", "Requests answered by each worker.");
    for (size_t i = 0; i < nv; i++)
        printf_(t, "gangway_worker_requests_total{worker=\"%zu\"} %" PRIu64 "\n", v[i].slot + 1,
                v[i].c.requests);
    metric(t, "gangway_worker_busy", "gauge", "1 while the worker's app runs a request.");
    for (size_t i = 0; i < nv; i++)
        printf_(t, "gangway_worker_busy{worker=\"%zu\"} %d\n", v[i].slot + 1,
                v[i].busy_ms ? 1 : 0);
    metric(t, "gangway_worker_connections", "gauge", "Open connections of each worker.");
    for (size_t i = 0; i < nv; i++)
        printf_(t, "gangway_worker_connections{worker=\"%zu\"} %" PRIu64 "\n", v[i].slot + 1,
                v[i].conns);
    metric(t, "gangway_worker_resident_memory_bytes", "gauge", "Each worker's RSS.");
    for (size_t i = 0; i < nv; i++)
        printf_(t, "gangway_worker_resident_memory_bytes{worker=\"%zu\"} %" PRIu64 "\n",
                v[i].slot + 1, v[i].rss);
    free(v);
}

/* ---- the socket ---- */

typedef struct sconn {
    gw_watch_t watch;
    gw_timer_t timer;
    struct gw_stats *server;
    char in[REQ_MAX];
    size_t in_len;
    gw_text_t out;
    size_t out_off;
    bool is_writing;
} sconn_t;

struct gw_stats {
    gw_loop_t *loop;
    const gw_stats_source_t *src;
    gw_listener_t l;
    gw_watch_t watch;
    gw_timerq_t bare_q, io_q, retry_q;
    gw_timer_t retry;
    uint64_t error_logged_ms;
    sconn_t *conns[MAX_CONNS];
};

static void sconn_close(sconn_t *c)
{
    gw_stats_t *s = c->server;

    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i] == c)
            s->conns[i] = NULL;
    gw_timer_stop(&c->timer);
    gw_loop_del(s->loop, &c->watch);
    close(c->watch.fd);
    free(c->out.p);
    free(c);
}

static void on_conn(gw_loop_t *loop, gw_watch_t *w, uint32_t events);

static void send_out(sconn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->watch.fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!c->is_writing) {
                c->is_writing = true;
                gw_loop_mod(c->server->loop, &c->watch, EPOLLOUT);
            }
            return;
        }
        if (n <= 0) {
            sconn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    sconn_close(c);
}

static void answer(sconn_t *c, int status, const char *type, const char *body, size_t len,
                   bool is_head)
{
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed" : status == 400 ? "Bad Request"
                                                                               : "Internal Server Error";
    gw_text_t head = {0};

    printf_(&head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
            status, reason, type, len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    free(c->out.p);
    c->out = head;
    if (!is_head)
        put(&c->out, body, len);
    c->out_off = 0;
    if (c->out.is_failed) {
        sconn_close(c);
        return;
    }
    gw_timer_start(&c->server->io_q, &c->timer);
    send_out(c);
}

static void respond(sconn_t *c)
{
    const gw_stats_source_t *src = c->server->src;
    char *sp = memchr(c->in, ' ', c->in_len), *path, *end;
    bool is_head;
    gw_text_t body = {0};

    gw_clock_update();
    if (!sp) {
        answer(c, 400, "text/plain", "bad request\n", 12, false);
        return;
    }
    is_head = sp - c->in == 4 && memcmp(c->in, "HEAD", 4) == 0;
    if (!is_head && !(sp - c->in == 3 && memcmp(c->in, "GET", 3) == 0)) {
        answer(c, 405, "text/plain", "GET or HEAD\n", 12, false);
        return;
    }
    path = sp + 1;
    end = path + strcspn(path, " ?\r\n");
    *end = '\0';
    if (strcmp(path, "/") == 0 || strcmp(path, "/json") == 0) {
        gw_stats_json(src, &body);
        if (body.is_failed)
            answer(c, 500, "text/plain", "out of memory\n", 14, is_head);
        else
            answer(c, 200, "application/json", body.p, body.len, is_head);
    } else if (strcmp(path, "/metrics") == 0) {
        gw_stats_prometheus(src, &body);
        if (body.is_failed)
            answer(c, 500, "text/plain", "out of memory\n", 14, is_head);
        else
            answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", body.p, body.len, is_head);
    } else if (strcmp(path, "/status") == 0) {
        answer(c, 200, "text/html; charset=utf-8", gw_stats_status_page,
               strlen(gw_stats_status_page), is_head);
    } else {
        answer(c, 404, "text/plain", "try /, /metrics or /status\n", 27, is_head);
    }
    free(body.p);
}

/* Nothing came within BARE_MS: a uwsgitop-style client; the JSON goes out
 * without an HTTP head. After that, the I/O deadline passed: give up. */
static void on_timer(gw_loop_t *loop, gw_timer_t *t)
{
    sconn_t *c = (sconn_t *)((char *)t - offsetof(sconn_t, timer));
    (void)loop;

    if (c->in_len || c->is_writing || c->out.len) {
        sconn_close(c);
        return;
    }
    gw_clock_update();
    gw_stats_json(c->server->src, &c->out);
    if (c->out.is_failed) {
        sconn_close(c);
        return;
    }
    gw_timer_start(&c->server->io_q, &c->timer);
    send_out(c);
}

static void on_conn(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    sconn_t *c = (sconn_t *)((char *)w - offsetof(sconn_t, watch));
    (void)loop;

    if (c->is_writing) {
        send_out(c);
        return;
    }
    if (c->out.len) /* answering already; a client still talking is ignored */
        return;
    for (;;) {
        ssize_t n = read(w->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0 || (events & (EPOLLERR | EPOLLHUP) && n == 0)) {
            sconn_close(c);
            return;
        }
        if (!c->in_len)
            gw_timer_start(&c->server->io_q, &c->timer);
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
        if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n")) {
            respond(c);
            return;
        }
        if (c->in_len >= sizeof(c->in) - 1) {
            answer(c, 400, "text/plain", "request too large\n", 18, false);
            return;
        }
    }
}

static void on_accept(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    gw_stats_t *s = (gw_stats_t *)((char *)w - offsetof(gw_stats_t, watch));
    (void)events;

    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        size_t slot = MAX_CONNS;
        sconn_t *c;

        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EINTR || err == ECONNABORTED)
                return;
            /* Out of descriptors, or the socket broken: the listener is
             * level-triggered and would wake the master again at once.
             * Left out for a moment; one line a second at most. */
            if (!s->error_logged_ms || gw_clock_ms() - s->error_logged_ms >= 1000) {
                gw_log_error("--stats: accept: %s; retrying every %d ms", strerror(err),
                             RETRY_MS);
                s->error_logged_ms = gw_clock_ms() ? gw_clock_ms() : 1;
            }
            gw_loop_del(loop, &s->watch);
            gw_timer_start(&s->retry_q, &s->retry);
            return;
        }
        for (size_t i = 0; i < MAX_CONNS && slot == MAX_CONNS; i++)
            if (!s->conns[i])
                slot = i;
        if (slot == MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
            close(fd); /* busy: the master protects itself first */
            continue;
        }
        c->server = s;
        c->watch.fd = fd;
        c->watch.cb = on_conn;
        gw_timer_init(&c->timer, on_timer);
        if (gw_loop_add(loop, &c->watch, EPOLLIN) < 0) {
            close(fd);
            free(c);
            continue;
        }
        s->conns[slot] = c;
        gw_timer_start(&s->bare_q, &c->timer);
    }
}

static void on_retry(gw_loop_t *loop, gw_timer_t *t)
{
    gw_stats_t *s = (gw_stats_t *)((char *)t - offsetof(gw_stats_t, retry));
    gw_loop_add(loop, &s->watch, EPOLLIN);
}

gw_stats_t *gw_stats_new(gw_loop_t *loop, const char *addr, const gw_stats_source_t *src,
                         int handed_fd, char *err, size_t errlen)
{
    gw_stats_t *s = calloc(1, sizeof(*s));
    char local[300];
    bool is_adopted = false;
    int rc;

    if (!s) {
        snprintf(err, errlen, "--stats: out of memory");
        if (handed_fd >= 0)
            close(handed_fd);
        return NULL;
    }
    /* A bare port, or ":port", stays on loopback: statistics say a lot about
     * a site, so reaching them from elsewhere takes a host spelt out. */
    if (!addr)
        local[0] = '\0';
    else if (strspn(addr, "0123456789") == strlen(addr) && *addr)
        snprintf(local, sizeof(local), "127.0.0.1:%s", addr);
    else if (addr[0] == ':')
        snprintf(local, sizeof(local), "127.0.0.1%s", addr);
    else
        snprintf(local, sizeof(local), "%s", addr);
    /* A reload: the previous image's socket, when it is still the address
     * asked for (no refused connection, and port 0 stays the same port). */
    if (handed_fd >= 0) {
        gw_listener_t l;
        if (gw_listen_adopt(&l, handed_fd, 64) == 0 && !l.is_reuse_port &&
            (!addr || gw_listen_matches(&l, local))) {
            s->l = l;
            is_adopted = true;
        } else {
            close(handed_fd);
        }
    }
    if (!is_adopted && !addr) {
        snprintf(err, errlen, "--stats: the socket handed over does not serve");
        free(s);
        return NULL;
    }
    if (!is_adopted && (rc = gw_listen_open(&s->l, local, 64, err, errlen)) < 0) {
        free(s);
        return NULL;
    }
    s->loop = loop;
    s->src = src;
    s->watch.fd = s->l.fd;
    s->watch.cb = on_accept;
    gw_timerq_init(loop, &s->bare_q, BARE_MS);
    gw_timerq_init(loop, &s->io_q, IO_MS);
    gw_timerq_init(loop, &s->retry_q, RETRY_MS);
    gw_timer_init(&s->retry, on_retry);
    if (gw_loop_add(loop, &s->watch, EPOLLIN) < 0) {
        snprintf(err, errlen, "--stats: %s", strerror(errno));
        gw_listen_close(&s->l);
        free(s);
        return NULL;
    }
    return s;
}

const char *gw_stats_url(const gw_stats_t *s)
{
    return s->l.url;
}

int gw_stats_fd(const gw_stats_t *s)
{
    return s ? s->l.fd : -1;
}

void gw_stats_free(gw_stats_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i])
            sconn_close(s->conns[i]);
    gw_timer_stop(&s->retry);
    gw_loop_del(s->loop, &s->watch);
    if (s->l.is_unix && s->l.path[0])
        unlink(s->l.path);
    gw_listen_close(&s->l);
    free(s);
}

void gw_stats_close_fds(gw_stats_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (s->conns[i])
            close(s->conns[i]->watch.fd);
    close(s->l.fd);
}
