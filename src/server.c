#include "server.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
#define ACCEPT_BACKOFF_MS 100

typedef struct lwatch {
    gw_watch_t watch;
    gw_server_t *server;
    gw_listener_t *l;
    bool is_active;
} lwatch_t;

struct gw_server {
    const gw_config_t *cfg;
    gw_loop_t *loop;
    gw_conn_ctx_t conns;
    lwatch_t *lw;
    size_t nl;
    gw_watch_t sigwatch;
    gw_block_hooks_t hooks;
    gw_timerq_t backoff_q, graceful_q;
    gw_timer_t backoff, graceful;
    bool is_paused;   /* accept paused: too many connections or no fds */
    bool is_stopping;
    bool has_logged_emfile;
};

void gw_server_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void set_accepting(gw_server_t *s, bool on)
{
    for (size_t i = 0; i < s->nl; i++) {
        lwatch_t *lw = &s->lw[i];
        if (lw->is_active == on || lw->l->fd < 0)
            continue;
        if (on)
            gw_loop_add(s->loop, &lw->watch, EPOLLIN);
        else
            gw_loop_del(s->loop, &lw->watch);
        lw->is_active = on;
    }
}

static void pause_accept(gw_server_t *s)
{
    s->is_paused = true;
    set_accepting(s, false);
}

static void maybe_resume_accept(gw_server_t *s)
{
    if (!s->is_paused || s->is_stopping || gw_timer_is_active(&s->backoff))
        return;
    if (s->conns.nconns >= s->cfg->max_connections)
        return;
    s->is_paused = false;
    set_accepting(s, true);
}

static void on_backoff(gw_loop_t *loop, gw_timer_t *t)
{
    gw_server_t *s = (gw_server_t *)((char *)t - offsetof(gw_server_t, backoff));
    (void)loop;
    maybe_resume_accept(s);
}

static void on_accept(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    lwatch_t *lw = (lwatch_t *)w;
    gw_server_t *s = lw->server;

    (void)loop;
    (void)events;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd;

        if (s->conns.nconns >= s->cfg->max_connections) {
            pause_accept(s);
            return;
        }
        fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                /* Out of descriptors or memory: stop polling the listener for a
                 * moment instead of spinning on a readiness we cannot serve. */
                if (!s->has_logged_emfile) {
                    gw_log_error("accept: %s; pausing new connections (logged once)",
                                 strerror(errno));
                    s->has_logged_emfile = true;
                }
                pause_accept(s);
                gw_timer_start(&s->backoff_q, &s->backoff);
                return;
            default:
                gw_log_error("accept: %s", strerror(errno));
                return;
            }
        }
        if (lw->l->is_unix)
            ss.ss_family = AF_UNIX;
        gw_conn_open(&s->conns, fd, lw->l, (struct sockaddr *)&ss);
    }
}

static void on_conn_freed(void *server)
{
    gw_server_t *s = server;
    if (s->is_stopping && s->conns.nconns == 0)
        gw_loop_stop(s->loop);
    else
        maybe_resume_accept(s);
}

static void begin_stop(gw_server_t *s, const char *why)
{
    if (s->is_stopping)
        return;
    s->is_stopping = true;
    gw_log_error("%s: stopping; %llu connection(s) to finish (up to %llus)", why,
                 (unsigned long long)s->conns.nconns,
                 (unsigned long long)s->cfg->graceful_timeout);
    set_accepting(s, false);
    for (size_t i = 0; i < s->nl; i++)
        gw_listen_close(s->lw[i].l);
    gw_conn_stop_all(&s->conns);
    if (s->conns.nconns == 0)
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
    struct signalfd_siginfo si;

    (void)events;
    while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGQUIT) {
            gw_log_error("SIGQUIT: quick stop");
            gw_loop_stop(loop);
            return;
        }
        begin_stop(s, si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
    }
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
                           const gw_handler_t *handler, const gw_block_hooks_t *hooks)
{
    gw_server_t *s = calloc(1, sizeof(*s));
    gw_loop_hooks_t lh = {.before_wait = before_wait,
                          .block_begin = block_begin,
                          .block_end = block_end,
                          .has_pending = has_pending};
    gw_http1_limits_t lim = {
        .request_line = cfg->limit_request_line,
        .field_size = cfg->limit_request_field_size,
        .fields = cfg->limit_request_fields,
        .headers = cfg->limit_request_headers,
        .body = cfg->limit_body,
    };
    const char *tmpdir = cfg->body_tmpdir ? cfg->body_tmpdir : getenv("TMPDIR");
    sigset_t set;

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
    s->conns.on_conn_freed = on_conn_freed;
    s->conns.server = s;
    gw_timerq_init(s->loop, &s->backoff_q, ACCEPT_BACKOFF_MS);
    gw_timerq_init(s->loop, &s->graceful_q, cfg->graceful_timeout * 1000);
    gw_timer_init(&s->backoff, on_backoff);
    gw_timer_init(&s->graceful, on_graceful);

    s->lw = calloc(n, sizeof(*s->lw));
    if (!s->lw)
        goto fail;
    s->nl = n;
    for (size_t i = 0; i < n; i++) {
        s->lw[i].watch.fd = listeners[i].fd;
        s->lw[i].watch.cb = on_accept;
        s->lw[i].server = s;
        s->lw[i].l = &listeners[i];
    }
    set_accepting(s, true);

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    s->sigwatch.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
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

int gw_server_run(gw_server_t *s)
{
    return gw_loop_run(s->loop);
}

void gw_server_free(gw_server_t *s)
{
    if (!s)
        return;
    if (s->sigwatch.fd > 0)
        close(s->sigwatch.fd);
    if (s->loop)
        gw_conn_ctx_dispose(&s->conns);
    gw_loop_free(s->loop);
    free(s->lw);
    free(s);
}
