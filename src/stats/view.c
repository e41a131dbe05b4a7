#include "stats/view.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAXED memory_order_relaxed

const char *const gw_respawn_names[GW_RESPAWN_REASONS] = {
    "crash", "max-requests", "max-worker-lifetime", "reload-on-rss", "harakiri", "load-failed",
};

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
bool gw__view_worker(const gw_stats_source_t *src, size_t i, uint64_t now_ms, wview_t *v)
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
    v->threads = atomic_load_explicit(&s->threads, RELAXED);
    v->threads_busy = atomic_load_explicit(&s->threads_busy, RELAXED);
    v->queued = atomic_load_explicit(&s->queued, RELAXED);
    /* With request threads the slot's clock only runs for a request past
     * --harakiri: busy is any thread running one. */
    v->state = st == GW_SLOT_STARTING               ? "starting"
               : st == GW_SLOT_STOPPING             ? "stopping"
               : since || v->threads_busy ? "busy"
                                                    : "idle";
    if (since) {
        memcpy(v->current, s->current, sizeof(s->current));
        v->current[sizeof(s->current)] = '\0';
    }
    gw_totals_add(&v->c, s);
    v->conns = atomic_load_explicit(&s->conns, RELAXED);
    v->conns_waiting = atomic_load_explicit(&s->conns_waiting, RELAXED);
    v->started_ms = atomic_load_explicit(&s->started_ms, RELAXED);
    proc_mem(v->pid, &v->rss, &v->vsz);
    return true;
}

/* The accept queue of a TCP listener (Linux reports it in TCP_INFO). */
bool gw__view_listen_queue(const gw_listener_t *l, uint32_t *queue, uint32_t *max)
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

void gw__view_totals(const gw_stats_source_t *src, gw_totals_t *t)
{
    *t = *src->retired;
    for (size_t i = 0; i < src->nslots; i++)
        if (atomic_load_explicit(&src->slots[i].pid, RELAXED) > 0 ||
            atomic_load_explicit(&src->slots[i].state, RELAXED) != GW_SLOT_EMPTY)
            gw_totals_add(t, &src->slots[i]);
}
