/* Accepting (server_priv.h): EPOLLEXCLUSIVE on the shared listeners, one
 * connection per wake-up there and a step back for a less loaded worker, a
 * back-off when out of descriptors, a failing listener left out for a
 * while, --uwsgi-allow-from, and at a stop what waits on this worker's own
 * --reuse-port sockets. */
#include "serve/server_priv.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
/* A TLS connection's first turn is its handshake (hundreds of µs of
 * public-key work), not a cheap read: 64 of them in one go hold up every
 * request of the connections already served (p99 4x nginx's at a
 * handshake per request). A few per turn, and the loop's other work comes
 * between them. */
#define ACCEPT_BATCH_TLS 4
#define ACCEPT_ERROR_LOG_MS 1000 /* a listener that keeps failing: one line a second at most */

void gw__accept_set(gw_server_t *s, bool on)
{
    for (size_t i = 0; i < s->nl; i++) {
        lwatch_t *lw = &s->lw[i];
        bool want = on && !lw->is_failing;
        if (lw->is_active == want || lw->l->fd < 0)
            continue;
        /* EPOLLEXCLUSIVE: a new connection wakes one of the workers sharing
         * this socket, not all of them. */
        if (want)
            gw_loop_add(s->loop, &lw->watch, EPOLLIN | EPOLLEXCLUSIVE);
        else
            gw_loop_del(s->loop, &lw->watch);
        lw->is_active = want;
    }
}

static void pause_accept(gw_server_t *s)
{
    s->is_paused = true;
    gw__accept_set(s, false);
}

void gw__accept_resume(gw_server_t *s)
{
    if (!s->is_paused || s->is_stopping || gw_timer_is_active(&s->backoff))
        return;
    if (s->conns.nconns >= s->cfg->max_connections)
        return;
    s->is_paused = false;
    gw__accept_set(s, true);
}

static void on_backoff(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, backoff));
    (void)loop;
    gw__accept_resume(s);
}

/* A listener whose accept() keeps failing (EINVAL: the socket no longer
 * listens; EBADF, ENOTSOCK: it is not what it was) is level-triggered: left
 * in epoll, it would wake the worker again at once, forever (issue 14: a
 * worker at 100% CPU writing 300k lines in 3 s). It is left out for
 * ACCEPT_BACKOFF_MS, then tried again; the other listeners go on. */
static void listener_failed(gw_server_t *s, lwatch_t *lw, int err)
{
    uint64_t now = gw_clock_ms();

    lw->is_failing = true;
    lw->conn_errors = 0;
    if (lw->is_active) {
        gw_loop_del(s->loop, &lw->watch);
        lw->is_active = false;
    }
    gw_timer_start(&s->backoff_q, &lw->retry);
    if (s->error_logged_ms && now - s->error_logged_ms < ACCEPT_ERROR_LOG_MS) {
        s->errors_unlogged++;
        return;
    }
    gw_log_error("accept on %s: %s; retrying every %d ms (%llu more failure(s) since the "
                 "last such line; one a second at most)",
                 lw->l->url, strerror(err), ACCEPT_BACKOFF_MS,
                 (unsigned long long)s->errors_unlogged);
    s->error_logged_ms = now ? now : 1;
    s->errors_unlogged = 0;
}

static void on_listener_retry(gw_loop_t *loop, gw_timer_t *t)
{
    lwatch_t *lw = (lwatch_t *)((char *)t - offsetof(lwatch_t, retry));
    gw_server_t *s = lw->server;

    (void)loop;
    lw->is_failing = false;
    if (!s->is_paused && !s->is_stopping)
        gw__accept_set(s, true);
}

/* Workers sharing a socket: EPOLLEXCLUSIVE wakes whichever worker waits,
 * and a worker that loops back to epoll_wait quickest would take nearly every
 * connection (keep-alive clients then stick to it). One more loaded than
 * the least loaded ready worker steps back for a moment (its listeners
 * leave epoll, so the kernel wakes the others). Even a lead of one steps
 * back: 16 keep-alive clients on 2 workers x 8 threads split 9/7 leave one
 * client queueing for a thread on one worker while the other has a thread
 * idle (an eighth of the rate at the io-20ms benchmark).
 *
 * The load is the open connections less those whose request is still
 * arriving (conn.c's set_waiting()): those cost nothing until whole, and
 * counted, hundreds of slow uploads would decide where the busy clients go.
 *
 * Between workers equally loaded so, the one with more connections
 * waiting steps back: each of those becomes work once whole, and counted
 * as nothing they all went where the kernel's wake-ups favour (16
 * requests sending their heads in two parts: 16 and 0, or 13 and 3, on
 * two workers of 2 threads, the other worker's threads idle once the
 * heads were whole; 4.0 s to answer them all, 2.5 s spread).
 *
 * A worker at --max-connections is left out: it takes nothing until one of
 * its connections goes (its listeners are out of epoll), and its
 * connections still arriving would make it look idle; stepping back for it
 * made every other connection wait a step-back.
 *
 * The kernel offers a connection only to a worker it wakes, and it wakes
 * the one stepped back for only when a connection arrives: one that was
 * already queued may never be offered to it. So a worker that stepped back
 * takes the connection at its next turn when the other took nothing from
 * that listener meanwhile. When it did, it took the oldest, the queued one,
 * and a listener it was woken for stays ready to it (level-triggered) while
 * more wait: this one judges afresh (no extra one taken on a tie, which
 * would undo the balance at the end of a burst). Counted by listener: with
 * one listener busy and one quiet, the other's accepts on the busy one held
 * a connection on the quiet one, never offered to it, until the stream left
 * a step-back without one (0.2 to 1.2 s under three connecting threads).
 * Each listener keeps its own step-back, so a later event of the same
 * wake-up, on another listener, is judged for that one. */
static uint64_t load(uint64_t conns, uint64_t waiting)
{
    return conns > waiting ? conns - waiting : 0;
}

/* slot's count of connections taken from lw (listeners past
 * GW_SLOT_ACCEPTS share counters): every worker's listeners are the
 * master's, in the same order. */
static _Atomic uint64_t *accepts_of(gw_slot_t *slot, const gw_server_t *s, const lwatch_t *lw)
{
    return &slot->accepts[(size_t)(lw - s->lw) % GW_SLOT_ACCEPTS];
}

static bool should_yield(gw_server_t *s, lwatch_t *lw)
{
    uint64_t mine = load(s->conns.nconns, s->conns.nwaiting), least = UINT64_MAX;
    uint64_t least_all = UINT64_MAX, now = gw_clock_ms();
    gw_slot_t *to = NULL;

    if (lw->yielded_to) {
        gw_slot_t *o = lw->yielded_to;
        lw->yielded_to = NULL;
        if (atomic_load_explicit(accepts_of(o, s, lw), memory_order_relaxed) ==
            lw->yielded_accepts)
            return false;
    }
    for (size_t i = 0, used = gw_scoreboard_used(s->who.sb); i < used; i++) {
        gw_slot_t *o = &s->who.sb->slots[i];
        uint64_t busy, n, all;
        if (o == s->who.slot ||
            atomic_load_explicit(&o->state, memory_order_relaxed) != GW_SLOT_READY)
            continue;
        /* A worker deep in a long request is not accepting: leave it out. */
        busy = atomic_load_explicit(&o->busy_since_ms, memory_order_relaxed);
        if (busy && now > busy + 100)
            continue;
        all = atomic_load_explicit(&o->conns, memory_order_relaxed);
        if (all >= s->cfg->max_connections)
            continue;
        n = load(all, atomic_load_explicit(&o->conns_waiting, memory_order_relaxed));
        if (n < least || (n == least && all < least_all)) {
            least = n;
            least_all = all;
            to = o;
        }
    }
    if (!to || mine < least || (mine == least && s->conns.nconns <= least_all))
        return false;
    lw->yielded_to = to;
    lw->yielded_accepts = atomic_load_explicit(accepts_of(to, s, lw), memory_order_relaxed);
    return true;
}

/* A peer not in --uwsgi-allow-from (--proxy-allow-from): anyone who can
 * connect can make these, as fast as it connects, so one line a second at
 * most, the next saying how many went unsaid. */
static void log_refused(gw_server_t *s, lwatch_t *lw, struct sockaddr_storage *ss,
                        socklen_t sl)
{
    uint64_t now = gw_clock_ms();
    char who[64] = "?", more[64] = "";

    if (s->refused_logged_ms && now - s->refused_logged_ms < ACCEPT_ERROR_LOG_MS) {
        s->refused_unlogged++;
        return;
    }
    getnameinfo((struct sockaddr *)ss, sl, who, sizeof(who), NULL, 0, NI_NUMERICHOST);
    if (s->refused_unlogged)
        snprintf(more, sizeof(more), "; %llu more refused since the last such line",
                 (unsigned long long)s->refused_unlogged);
    if (lw->l->is_proxy_protocol)
        gw_log_error("proxy protocol: refused a connection from %s (not in "
                     "--proxy-allow-from)%s", who, more);
    else
        gw_log_error("uwsgi: refused a connection from %s (not in --uwsgi-allow-from)%s", who,
                     more);
    s->refused_logged_ms = now ? now : 1;
    s->refused_unlogged = 0;
}

/* An accepted connection: --uwsgi-allow-from (--proxy-allow-from on a
 * PROXY protocol listener), then the connection's. */
static void take(gw_server_t *s, lwatch_t *lw, int fd, struct sockaddr_storage *ss,
                 socklen_t sl)
{
    if (lw->l->is_unix)
        ss->ss_family = AF_UNIX;
    if (!gw_listen_allows(lw->l, (struct sockaddr *)ss)) {
        log_refused(s, lw, ss, sl);
        close(fd);
        return;
    }
    gw_conn_open(&s->conns, fd, lw->l, (struct sockaddr *)ss);
    if (s->who.slot) { /* this worker is its only writer */
        _Atomic uint64_t *n = accepts_of(s->who.slot, s, lw);
        atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
}

static void on_accept(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    lwatch_t *lw = (lwatch_t *)w;
    gw_server_t *s = lw->server;

    (void)loop;
    (void)events;
    /* A stop closed the listeners after this event was read (its number
     * may name an accepted connection by now). Paused: the listeners left
     * epoll after this event was read, earlier in this wake-up (a step-back,
     * the connection cap, no descriptors); what waits on this one is
     * reported again when they are back. Taking one now would undo a
     * step-back, and judging one would start the step-back's 2 ms timer
     * over an out-of-descriptors back-off's 100. */
    if (s->is_stopping || s->is_paused)
        return;
    /* With several workers on one socket, taking one connection per wake-up
     * lets the kernel's EPOLLEXCLUSIVE hand the next to another worker:
     * connections spread evenly instead of to whoever woke first. */
    bool shared = s->cfg->workers > 1 && !lw->l->is_reuse_port && s->who.sb;
    int batch = shared ? 1 : lw->l->tls ? ACCEPT_BATCH_TLS : ACCEPT_BATCH;

    if (shared && should_yield(s, lw)) {
        pause_accept(s);
        gw_timer_start(&s->yield_q, &s->backoff);
        return;
    }

    for (int i = 0; i < batch; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd;

        fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            switch (err) {
            case EAGAIN:
                lw->conn_errors = 0;
                return;
            case EINTR:
                continue;
            case ECONNABORTED:
            case EPROTO:
            /* Linux passes a pending network error of the new connection on
             * as accept()'s error (accept(2)): that connection is gone, the
             * next one may be fine. In a row without end they are not. */
            case EPERM:
            case ENETDOWN:
            case ENETUNREACH:
            case EHOSTDOWN:
            case EHOSTUNREACH:
            case ENONET:
            case ENOPROTOOPT:
            case EOPNOTSUPP:
            case ETIMEDOUT:
                if (++lw->conn_errors < ACCEPT_BATCH)
                    continue;
                listener_failed(s, lw, err);
                return;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                /* Out of descriptors or memory: stop polling the listener for a
                 * moment instead of spinning on a readiness we cannot serve. */
                /* Once a minute at most: near the limit it may come and go
                 * many times a second. */
                if (!s->emfile_logged_ms || gw_clock_ms() - s->emfile_logged_ms >= 60000) {
                    gw_log_error("accept: %s; pausing new connections (logged at most once "
                                 "a minute)", strerror(err));
                    s->emfile_logged_ms = gw_clock_ms() ? gw_clock_ms() : 1;
                }
                pause_accept(s);
                gw_timer_start(&s->backoff_q, &s->backoff);
                return;
            default:
                listener_failed(s, lw, err);
                return;
            }
        }
        lw->conn_errors = 0;
        take(s, lw, fd, &ss, sl);
        /* At --max-connections: out of epoll now, not at the next wake-up.
         * EPOLLEXCLUSIVE gives a wake-up to one worker: this one would
         * then leave without accepting, and the connection that came with
         * it would wait, the other workers idle, for the next one to come
         * (for ever with no more: with --max-connections 1 on 2 workers, a
         * second client waited while the first held its connection). */
        if (s->conns.nconns >= s->cfg->max_connections) {
            pause_accept(s);
            return;
        }
    }
}

/* --reuse-port: closing this worker's own socket resets the connections
 * still in its accept queue (the kernel moves them to another socket of
 * the group only with net.ipv4.tcp_migrate_req=1, Linux 5.14+, off by
 * default). So what is queued is taken first and served like any other
 * connection (with Connection: close: the worker is stopping). A shared
 * socket is left alone: the master and the other workers keep it open, and
 * its queue with it. Past the connection cap too: each one taken here would
 * otherwise be reset, and the queue is bounded by the backlog. */
void gw__accept_drain(gw_server_t *s, lwatch_t *lw)
{
    unsigned errors = 0;

    if (!lw->l->is_reuse_port || lw->l->fd < 0)
        return;
    while (errors < ACCEPT_BATCH) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lw->l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EMFILE || err == ENFILE || err == ENOBUFS ||
                err == ENOMEM || err == EINVAL || err == EBADF || err == ENOTSOCK)
                return; /* empty, or nothing more can be taken */
            errors++;   /* EINTR, or that one connection's error */
            continue;
        }
        take(s, lw, fd, &ss, sl);
    }
}

int gw__accept_init(gw_server_t *s, gw_listener_t *listeners, size_t n)
{
    gw_timer_init(&s->backoff, on_backoff);
    s->lw = calloc(n, sizeof(*s->lw));
    if (!s->lw)
        return -ENOMEM;
    s->nl = n;
    for (size_t i = 0; i < n; i++) {
        s->lw[i].watch.fd = listeners[i].fd;
        s->lw[i].watch.cb = on_accept;
        s->lw[i].server = s;
        s->lw[i].l = &listeners[i];
        gw_timer_init(&s->lw[i].retry, on_listener_retry);
    }
    gw__accept_set(s, true);
    return 0;
}
