/* A serving process (server.h): the loop's hooks, signals, the graceful
 * and the quick stop, recycling by --max-requests, --max-worker-lifetime
 * and --reload-on-rss with its replacement asked for first; accepting is
 * accept.c's. */
#include "serve/server_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "proc/signals.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RSS_CHECK_MS 1000

/* A stop is over when no connection is left, or only those of request
 * threads stuck where nothing reaches them (harakiri): the worker exits
 * without them (worker.c) and the master replaces it. */
static bool is_drained(gw_server_t *s)
{
    return s->conns.nconns == 0 ||
           (s->has_stuck && s->conns.nconns <= gw_conn_ctx_stuck_count(&s->conns));
}

static void on_conn_freed(void *server)
{
    gw_server_t *s = server;
    if (s->is_stopping && is_drained(s))
        gw_loop_stop(s->loop);
    else
        gw__accept_resume(s);
}

static void begin_stop(gw_server_t *s, const char *why)
{
    if (s->is_stopping)
        return;
    s->is_stopping = true;
    if (s->who.slot)
        atomic_store_explicit(&s->who.slot->state, GW_SLOT_STOPPING, memory_order_relaxed);
    gw_timer_stop(&s->lifetime);
    gw_timer_stop(&s->rss);
    gw_timer_stop(&s->replace_wait);
    gw__accept_set(s, false);
    /* What is queued on our own sockets is ours to serve (gw__accept_drain()): taken
     * before the stop, so that gw_conn_stop_all() treats it like any
     * connection accepted before (a request that is there is answered). */
    for (size_t i = 0; i < s->nl; i++) {
        gw_timer_stop(&s->lw[i].retry);
        gw__accept_drain(s, &s->lw[i]);
        gw_listen_close(s->lw[i].l);
    }
    gw_log_error("worker %u: %s: stopping; %llu connection(s) to finish (up to %llus)",
                 s->who.id, why, (unsigned long long)s->conns.nconns,
                 (unsigned long long)s->cfg->graceful_timeout);
    gw_conn_stop_all(&s->conns);
    if (is_drained(s))
        gw_loop_stop(s->loop);
    else
        gw_timer_start(&s->graceful_q, &s->graceful);
}

static void on_graceful(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, graceful));
    gw_log_error("graceful timeout: closing %llu connection(s)",
                 (unsigned long long)s->conns.nconns);
    gw_loop_stop(loop);
}

static void on_signal(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    gw_server_t *s = (gw_server_t *)((char *)w - offsetof(gw_server_t, sigwatch));
    int sig;

    (void)events;
    while ((sig = gw_signals_next(w->fd)) > 0) {
        switch (sig) {
        case SIGQUIT:
        case SIGINT:
            /* Quick stop: what is in flight is dropped (the app still gets
             * close() on its iterables). */
            gw_conn_close_all(&s->conns);
            gw_loop_stop(loop);
            return;
        case SIGUSR1:
            gw_log_reopen();
            break;
        case SIGTERM:
            begin_stop(s, "SIGTERM");
            break;
        default:
            break;
        }
    }
}

/* "Replace me", with this worker's own --reuse-port sockets: its successor
 * serves on them, so that they never close while connections wait on them
 * (gw__accept_drain()). -1 (errno set) when the note did not go. */
static int ask_replacement(gw_server_t *s)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(GW_NOTE_FDS_MAX * sizeof(int))];
    } ctl;
    uint16_t note = (uint16_t)(s->who.id | GW_NOTE_REPLACE);
    struct iovec iov = {.iov_base = &note, .iov_len = sizeof(note)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    int fds[GW_NOTE_FDS_MAX];
    size_t n = 0;
    bool fits = true;

    for (size_t i = 0; i < s->nl && fits; i++) {
        if (!s->lw[i].l->is_reuse_port)
            continue;
        /* more than one note carries: the successor makes sockets of its own */
        fits = n < GW_NOTE_FDS_MAX && s->lw[i].l->fd >= 0;
        if (fits)
            fds[n++] = s->lw[i].l->fd;
    }
    if (n && fits) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    while (sendmsg(s->who.notify_fd, &mh, MSG_NOSIGNAL) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

/* Recycling, replacement first: the worker asks the master for its
 * replacement and serves on, accepting too, until the master, once the
 * replacement serves, tells it to stop (SIGTERM). A worker that stopped
 * accepting first would leave its share of new connections refused (with
 * --reuse-port, its socket closed while no other listens: the master's only
 * holds the address) or waiting behind the replacement's import (one
 * worker). Meanwhile every answer says Connection: close: a keep-alive
 * promise made now would be broken at the stop, by closing an idle
 * connection the client may be sending its next request on. The slot says
 * why, for the master's respawn counters. */
static void recycle(gw_server_t *s, enum gw_exit_reason why, const char *what)
{
    if (s->is_recycling || s->is_stopping)
        return;
    s->is_recycling = true;
    s->conns.is_recycling = true;
    gw_timer_stop(&s->lifetime);
    gw_timer_stop(&s->rss);
    if (s->who.slot)
        atomic_store_explicit(&s->who.slot->exit_reason, why, memory_order_relaxed);
    if (s->who.notify_fd < 0) {
        begin_stop(s, what); /* no master to ask */
        return;
    }
    /* A failed send (EPIPE: a reload re-executed the master, whose socket
     * is new) changes nothing: the master also finds the reason in the slot
     * on its tick, and a reload stops this worker anyway. */
    if (ask_replacement(s) < 0)
        gw_log_error("worker %u: cannot ask the master for a replacement: %s", s->who.id,
                     strerror(errno));
    if (why == GW_EXIT_RSS) {
        /* Memory is what this limit protects: it waits --graceful-timeout
         * at most. The other limits are hygiene: a worker past them serves
         * as well as before, so it waits as long as its replacement takes
         * (a broken deploy must not take the serving workers down). */
        gw_log_error("worker %u: %s: serving until a replacement serves (up to %llus)",
                     s->who.id, what, (unsigned long long)s->cfg->graceful_timeout);
        gw_timer_start(&s->graceful_q, &s->replace_wait);
    } else {
        gw_log_error("worker %u: %s: serving until a replacement serves", s->who.id, what);
    }
}

/* A request thread is stuck outside Python code past harakiri (the watchdog
 * set the slot's reason): mod_wsgi's way, not uWSGI 2.0's, which kills
 * every sibling. The worker asks for its replacement, stops taking
 * requests, lets the other threads finish theirs and exits without the
 * stuck one; the master's kill after --harakiri-grace is the backstop. */
static void on_stuck(void *server)
{
    gw_server_t *s = server;

    s->has_stuck = true;
    if (s->is_stopping) {
        if (is_drained(s))
            gw_loop_stop(s->loop);
        return;
    }
    if (s->who.notify_fd >= 0 && !s->is_recycling && ask_replacement(s) < 0)
        gw_log_error("worker %u: cannot ask the master for a replacement: %s", s->who.id,
                     strerror(errno));
    s->is_recycling = true;
    begin_stop(s, "harakiri: a request thread is stuck");
}

static void on_replace_wait(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, replace_wait));
    (void)loop;
    begin_stop(s, "reload-on-rss: no replacement serves yet");
}

/* Counted as each request starts, so that the one reaching --max-requests
 * is answered with Connection: close (recycling begins before its answer):
 * a keep-alive client never sees a connection close after a keep-alive
 * promise, and what was already read is answered (issue 20). */
static void on_request_start(void *server)
{
    gw_server_t *s = server;
    /* With --min-worker-lifetime, a young worker past its count goes on
     * until it is old enough (checked as each later request starts). */
    if (++s->requests >= s->max_requests && s->max_requests && !s->is_recycling &&
        !s->is_stopping && gw_clock_ms() - s->started_ms >= s->cfg->min_worker_lifetime * 1000)
        recycle(s, GW_EXIT_MAX_REQUESTS, "max-requests reached");
}

static void on_lifetime(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, lifetime));
    (void)loop;
    recycle(s, GW_EXIT_LIFETIME, "max-worker-lifetime reached");
}

/* Resident memory in MB, from /proc/self/statm (its second field, in pages). */
static uint64_t rss_mb(void)
{
    char buf[128];
    unsigned long long size, resident;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return resident * (uint64_t)sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

static void on_rss_check(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, rss));
    uint64_t mb = rss_mb();

    (void)loop;
    if (mb > s->cfg->reload_on_rss) {
        gw_log_error("worker %u uses %llu MB (reload-on-rss %llu)", s->who.id,
                     (unsigned long long)mb, (unsigned long long)s->cfg->reload_on_rss);
        recycle(s, GW_EXIT_RSS, "reload-on-rss reached");
        return;
    }
    gw_timer_start(&s->rss_q, &s->rss);
}

static void before_wait(void *ctx)
{
    gw_server_t *s = ctx;
    gw_conn_run_ready(&s->conns);
    gw_log_flush();
}

static bool has_pending(void *ctx)
{
    gw_server_t *s = ctx;
    return gw_conn_has_ready(&s->conns);
}

static void block_begin(void *ctx)
{
    gw_server_t *s = ctx;
    if (s->hooks.begin)
        s->hooks.begin(s->hooks.ctx);
}

static void block_end(void *ctx)
{
    gw_server_t *s = ctx;
    if (s->hooks.end)
        s->hooks.end(s->hooks.ctx);
}

gw_server_t *gw_server_new(const gw_config_t *cfg, gw_listener_t *listeners, size_t n,
                           const gw_handler_t *handler, const gw_block_hooks_t *hooks,
                           const gw_worker_info_t *who)
{
    gw_server_t *s = calloc(1, sizeof(*s));
    gw_loop_hooks_t lh = {.before_wait = before_wait,
                          .block_begin = block_begin,
                          .block_end = block_end,
                          .has_pending = has_pending};
    gw_proto_limits_t lim = {
        .request_line = cfg->limit_request_line,
        .field_size = cfg->limit_request_field_size,
        .fields = cfg->limit_request_fields,
        .headers = cfg->limit_request_headers,
        .buffer_size = cfg->buffer_size,
        .body = cfg->limit_body,
    };
    const char *tmpdir = cfg->body_tmpdir ? cfg->body_tmpdir : getenv("TMPDIR");
    static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    static const int master_sigs[] = {SIGHUP, SIGTTIN, SIGTTOU};

    if (!s)
        return NULL;
    s->cfg = cfg;
    if (hooks)
        s->hooks = *hooks;
    lh.ctx = s;
    if (!(s->loop = gw_loop_new(&lh))) {
        gw_log_error("cannot create the event loop: %s", strerror(errno));
        goto fail;
    }
    gw_conn_ctx_init(&s->conns, s->loop, handler, &lim, cfg->body_buffer_size,
                     tmpdir && *tmpdir ? tmpdir : "/tmp", cfg->header_timeout, cfg->body_timeout,
                     cfg->keepalive_timeout, cfg->write_timeout);
    gw_timerq_init(s->loop, &s->conns.handshake_q, cfg->tls_handshake_timeout * 1000);
    {
        char err[256];
        s->statics = gw_static_new(cfg, err, sizeof(err));
        if (!s->statics && err[0]) {
            gw_log_error("%s", err);
            goto fail;
        }
        s->conns.statics = s->statics;
    }
    s->who.notify_fd = -1;
    if (who)
        s->who = *who;
    s->conns.on_conn_freed = on_conn_freed;
    if (cfg->threads > 1) {
        int rc = gw_conn_ctx_threads(&s->conns, (unsigned)cfg->threads, cfg->queue_timeout);
        if (rc < 0) {
            gw_log_error("cannot set up %llu request threads: %s",
                         (unsigned long long)cfg->threads, strerror(-rc));
            goto fail;
        }
        s->conns.on_stuck = on_stuck;
    }
    s->conns.server = s;
    s->conns.slot = s->who.slot;
    gw_timerq_init(s->loop, &s->backoff_q, ACCEPT_BACKOFF_MS);
    gw_timerq_init(s->loop, &s->yield_q, ACCEPT_YIELD_MS);
    gw_timerq_init(s->loop, &s->graceful_q, cfg->graceful_timeout * 1000);
    gw_timerq_init(s->loop, &s->lifetime_q, cfg->max_worker_lifetime * 1000);
    gw_timerq_init(s->loop, &s->rss_q, RSS_CHECK_MS);
    gw_timer_init(&s->graceful, on_graceful);
    gw_timer_init(&s->lifetime, on_lifetime);
    gw_timer_init(&s->rss, on_rss_check);
    gw_timer_init(&s->replace_wait, on_replace_wait);
    gw_clock_update();
    s->started_ms = gw_clock_ms();
    if (cfg->max_requests) {
        /* uWSGI's max-requests-delta: worker i waits (i-1)*jitter more. */
        s->max_requests = cfg->max_requests + (s->who.id ? s->who.id - 1 : 0) * cfg->max_requests_jitter;
        s->conns.on_request_start = on_request_start;
    }
    if (cfg->max_worker_lifetime)
        gw_timer_start(&s->lifetime_q, &s->lifetime);
    if (cfg->reload_on_rss)
        gw_timer_start(&s->rss_q, &s->rss);

    if (gw__accept_init(s, listeners, n) < 0)
        goto fail;

    /* Reload and scaling signals are the master's business: a `pkill -HUP
     * gangway` or a terminal hangup reaches every worker too, and must be
     * one graceful reload, not the death of every worker mid-request. Taken
     * out of the set inherited from the master before gw_signals_open(),
     * which resets that set's other signals to their defaults. */
    gw_signals_ignore(master_sigs, sizeof(master_sigs) / sizeof(master_sigs[0]));
    s->sigwatch.fd = gw_signals_open(sigs, sizeof(sigs) / sizeof(sigs[0]));
    s->sigwatch.cb = on_signal;
    if (s->sigwatch.fd < 0 || gw_loop_add(s->loop, &s->sigwatch, EPOLLIN) < 0) {
        gw_log_error("cannot watch signals: %s", strerror(errno));
        goto fail;
    }
    return s;
fail:
    gw_server_free(s);
    return NULL;
}

gw_conn_ctx_t *gw_server_conns(gw_server_t *s)
{
    return &s->conns;
}

int gw_server_run(gw_server_t *s)
{
    return gw_loop_run(s->loop);
}

void gw_server_free(gw_server_t *s)
{
    if (!s)
        return;
    if (s->sigwatch.fd > 0)
        gw_signals_close(s->sigwatch.fd);
    if (s->loop)
        gw_conn_ctx_dispose(&s->conns);
    gw_static_free(s->statics);
    gw_loop_free(s->loop);
    free(s->lw);
    free(s);
}
