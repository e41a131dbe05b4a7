/* The master's loop: signals, the tick (harakiri kill, due respawns,
 * touch-reload), readiness, the stop, the statistics server, --preload. The
 * rest of the master is in respawn.c, reload.c and notes.c; what they share
 * is in proc/master_priv.h. */
#include "proc/master.h"
#include "proc/master_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "proc/scoreboard.h"
#include "proc/signals.h"
#include "serve/tls.h"
#include "stats/stats.h"
#include "py/wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define QUICK_KILL_MS 5000
#define TICK_MS 1000

/* The signals the master acts on. */
static const int master_sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT,
                                  SIGHUP,  SIGUSR1, SIGTTIN, SIGTTOU};

void gw_master_hold_signals(sigset_t *old)
{
    gw_signals_hold(master_sigs, sizeof(master_sigs) / sizeof(master_sigs[0]), old);
}

static void vacuum(master_t *m)
{
    if (!m->cfg->vacuum)
        return;
    for (size_t i = 0; i < m->nl; i++)
        if (m->ls[i].is_unix && m->ls[i].path[0] && !m->ls[i].is_activated &&
            unlink(m->ls[i].path) < 0 && errno != ENOENT)
            gw_log_error("vacuum: cannot remove %s: %s", m->ls[i].path, strerror(errno));
    if (m->cfg->pidfile && unlink(m->cfg->pidfile) < 0 && errno != ENOENT)
        gw_log_error("vacuum: cannot remove %s: %s", m->cfg->pidfile, strerror(errno));
}

/* systemd (Type=notify): state is "READY=1", "RELOADING=1", "STOPPING=1" or
 * "" for a status update; STATUS says what an operator sees in `systemctl
 * status`. Without NOTIFY_SOCKET this costs nothing. */
void gw__master_tell_systemd(master_t *m, const char *state, const char *what)
{
    sd_notifyf(0, "%s%sSTATUS=%s, %u worker(s)", state, *state ? "\n" : "", what, m->target);
}

void gw__master_stop(master_t *m, bool graceful, const char *why)
{
    if (m->is_stopping && graceful)
        return;
    /* The log line first, then systemd: whoever sees the state change can
     * read why in the log. */
    if (!m->is_stopping && why)
        gw_log_error("%s: %s stop of %u worker(s)", why, graceful ? "graceful" : "quick",
                     gw__respawn_count_live(m, m->generation, false));
    gw__master_tell_systemd(m, "STOPPING=1", graceful ? "stopping gracefully" : "stopping");
    m->is_stopping = true;
    m->is_delaying = false;
    gw_timer_stop(&m->delay);
    /* A reload's check under way has nothing left to do; the master waits
     * for it to be gone, so that nothing it started outlives the stop. */
    if (m->checker && m->check_end == CHECK_RUNNING) {
        gw_log_error("stopping the reload's check (pid %d)", (int)m->checker);
        gw__reload_kill_check(m, CHECK_STOPPED);
    }
    /* New connections are refused from now on rather than queued for
     * workers that will not take them. */
    for (size_t i = 0; i < m->nl; i++)
        gw_listen_close(&m->ls[i]);
    for (size_t i = 0; i < NSLOTS; i++)
        gw__notes_drop_handoff(m, &m->w[i]);
    gw__respawn_signal_all(m, graceful ? SIGTERM : SIGQUIT, false);
    gw_timer_start(graceful ? &m->kill_graceful_q : &m->kill_quick_q, &m->kill);
    if (!gw__respawn_any_live(m) && !m->checker)
        gw_loop_stop(m->loop);
}

static void on_kill_timer(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, kill));
    (void)loop;
    gw_log_error("workers still running after the stop timeout: killing them");
    gw__respawn_signal_all(m, SIGKILL, false);
}

static void on_delay_timer(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, delay));
    (void)loop;
    gw__master_stop(m, true, "shutdown-delay over");
}

/* The new generation serves: the old one finishes what it holds and goes.
 * The log says so before systemd hears READY=1 (whoever waits for it reads
 * the log next). */
static void finish_reload(master_t *m, unsigned ready)
{
    m->is_reloading = false;
    m->failures = 0;
    gw__respawn_signal_all(m, SIGTERM, true);
    gw_log_error("reload: %u new worker(s) serving; the old ones finish what they hold", ready);
    gw_log_error("%s, master pid %d, %u worker(s)", m->banner, (int)getpid(), m->target);
    for (size_t i = 0; i < m->nl; i++)
        gw_log_error("listening on %s%s", m->ls[i].url,
                     m->ls[i].is_proxy_protocol ? " (PROXY protocol)" : "");
    gw_log_error("ready");
    gw__master_tell_systemd(m, "READY=1", "serving (reloaded)");
    gw__reload_next(m);
}

static void announce_ready(master_t *m)
{
    m->is_ready = true;
    gw_log_error("%s, master pid %d, %u worker(s)", m->banner, (int)getpid(), m->target);
    for (size_t i = 0; i < m->nl; i++)
        gw_log_error("listening on %s%s", m->ls[i].url,
                     m->ls[i].is_proxy_protocol ? " (PROXY protocol)" : "");
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid && m->w[i].is_ready)
            gw_log_error("worker %zu ready (pid %d)", i + 1, (int)m->w[i].pid);
    gw_log_error("ready");
    sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving, %u worker(s)", (int)getpid(),
               m->target);
    if (m->is_reload_pending) {
        m->is_reload_pending = false;
        gw__reload_begin(m, "reload asked during start-up");
    }
}

/* Moves start-up, scaling and reloads forward; called whenever workers,
 * their readiness or the target changed. Ready means "the target number of
 * workers serve", whatever changed the target meanwhile. */
static void progress(master_t *m)
{
    unsigned ready;

    if (m->is_stopping)
        return;
    gw__respawn_reconcile(m);
    gw__respawn_release_recycled(m);
    ready = gw__respawn_count_live(m, m->generation, true);
    if (!m->is_ready) {
        if (ready >= m->target)
            announce_ready(m);
        return;
    }
    if (m->is_reloading && ready >= m->target)
        finish_reload(m, ready);
}

static void on_notify(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    master_t *m = (master_t *)((char *)w - offsetof(master_t, notify));

    (void)loop;
    (void)events;
    gw__notes_read(m);
    progress(m);
}

static void reap(master_t *m)
{
    int st;
    pid_t pid;

    gw__notes_read(m);
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid == m->checker) {
            gw__reload_on_check_exit(m, st);
            continue;
        }
        for (size_t i = 0; i < NSLOTS; i++) {
            if (m->w[i].pid == pid) {
                gw__respawn_on_exit(m, i, st);
                break;
            }
        }
    }
    progress(m);
    if (m->is_stopping && !gw__respawn_any_live(m) && !m->checker)
        gw_loop_stop(m->loop);
}

static void on_signal(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    master_t *m = (master_t *)((char *)w - offsetof(master_t, sigwatch));
    int sig;

    (void)loop;
    (void)events;
    while ((sig = gw_signals_next(w->fd)) > 0) {
        switch (sig) {
        case SIGCHLD:
            reap(m);
            break;
        case SIGTERM:
            if (m->cfg->shutdown_delay && !m->is_stopping && !m->is_delaying) {
                m->is_delaying = true;
                gw_log_error("SIGTERM: serving %llus more (shutdown-delay), then stopping",
                             (unsigned long long)m->cfg->shutdown_delay);
                gw__master_tell_systemd(m, "STOPPING=1", "stopping after shutdown-delay");
                gw_timer_start(&m->delay_q, &m->delay);
            } else {
                gw__master_stop(m, true, "SIGTERM");
            }
            break;
        case SIGINT:
            gw__master_stop(m, false, "SIGINT");
            break;
        case SIGQUIT:
            gw__master_stop(m, false, "SIGQUIT");
            break;
        case SIGHUP:
            gw__reload_begin(m, "SIGHUP");
            break;
        case SIGUSR1:
            gw_log_reopen();
            gw__respawn_signal_all(m, SIGUSR1, false);
            break;
        case SIGTTIN:
        case SIGTTOU: {
            /* Only the target changes here; progress() forks or retires
             * (never the last worker: the target stays >= 1) and decides
             * readiness against it, at start-up and during reloads alike. */
            bool more = sig == SIGTTIN;
            const char *name = more ? "SIGTTIN" : "SIGTTOU";
            if (m->is_stopping)
                break;
            if (more ? m->target >= GW_MAX_WORKERS : m->target <= 1) {
                gw_log_error("%s: %u worker(s) is the %s", name, m->target,
                             more ? "maximum" : "minimum");
                break;
            }
            m->target += more ? 1 : -1;
            gw_log_error("%s: %u worker(s)", name, m->target);
            gw__master_tell_systemd(m, "", "serving");
            progress(m);
            break;
        }
        default:
            break;
        }
    }
}

static bool touched(master_t *m)
{
    bool changed = false;
    for (size_t i = 0; i < m->cfg->touch_reload.n; i++) {
        struct stat st;
        if (stat(m->cfg->touch_reload.v[i], &st) < 0)
            continue;
        if (st.st_mtim.tv_sec != m->touch_mtime[i].tv_sec ||
            st.st_mtim.tv_nsec != m->touch_mtime[i].tv_nsec) {
            m->touch_mtime[i] = st.st_mtim;
            changed = true;
        }
    }
    return changed;
}

/* Once a second: harakiri kills, due respawns, recycling workers whose
 * note did not come, touch-reload. */
static void on_tick(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, tick));
    uint64_t now = gw_clock_ms();
    uint64_t limit = (m->cfg->harakiri + m->cfg->harakiri_grace) * 1000;

    (void)loop;
    gw_tls_tick(); /* the session ticket keys' hour (forgetting old ones) */
    for (size_t i = 0; i < NSLOTS; i++) {
        wproc_t *w = &m->w[i];
        /* A worker says it serves, or recycles itself, with a note; its
         * slot says so too, which is what a re-executed master (a reload)
         * sees of a worker whose note went to the previous image (a second
         * after: a note sent to this one has come by then). */
        if (w->pid && !w->is_ready &&
            atomic_load_explicit(&m->sb.slots[i].state, RELAXED) == GW_SLOT_READY &&
            now > atomic_load_explicit(&m->sb.slots[i].started_ms, RELAXED) + TICK_MS)
            w->is_ready = true;
        if (w->pid && w->is_ready && !w->is_recycling && !w->is_retiring &&
            atomic_load_explicit(&m->sb.slots[i].exit_reason, RELAXED) != GW_EXIT_NONE)
            gw__notes_recycle(m, i, NULL);
        /* One that stopped by itself before its successor could start
         * (past --reload-on-rss, forks failing): the master's copy of its
         * sockets would keep them listening for nobody. */
        if (w->handoff &&
            atomic_load_explicit(&m->sb.slots[i].state, RELAXED) == GW_SLOT_STOPPING)
            gw__notes_drop_handoff(m, w);
        if (w->pid && m->cfg->harakiri && !w->is_killed) {
            gw_slot_t *s = &m->sb.slots[i];
            uint64_t since = atomic_load_explicit(&s->busy_since_ms, memory_order_acquire);
            if (since && now > since && now - since > limit) {
                char what[sizeof(s->current)];
                memcpy(what, s->current, sizeof(what));
                what[sizeof(what) - 1] = '\0';
                gw_log_error("harakiri: worker %zu (pid %d) still stuck after %llus on \"%s\"; "
                             "killing it", i + 1, (int)w->pid,
                             (unsigned long long)((now - since) / 1000), what);
                kill(w->pid, SIGKILL);
                w->is_killed = true;
            }
        }
        if (!w->pid && w->respawn_at) {
            /* A stop, or a reload (its new generation starts afresh), makes
             * a due restart moot. */
            if (m->is_stopping || w->generation != m->generation) {
                w->respawn_at = 0;
            } else if (now >= w->respawn_at) {
                w->respawn_at = 0;
                gw__respawn_spawn(m, i);
            }
        }
    }
    /* Whatever left the generation short (a failed fork among others) is
     * made up here, at most once a second. */
    progress(m);
    if (m->cfg->touch_reload.n && touched(m))
        gw__reload_begin(m, "touch-reload");
    gw_timer_start(&m->tick_q, &m->tick);
}

/* --stats: the server reads the scoreboard and the master's own counters
 * through stats_src, which points into m. */
static int start_stats(master_t *m, const char *banner, gw_handover_t *h)
{
    char err[256], err2[256];
    static char version[64];
    int fd = h->stats_fd, keep = -1;

    h->stats_fd = -1; /* gw_stats_new() takes it or closes it */
    /* A re-executed master keeps a copy of the previous image's socket:
     * should the address asked for not bind, statistics go on there. */
    if (fd >= 0)
        keep = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    /* "gangway 0.2.0 (Python 3.11.2)": the version is the second word. */
    snprintf(version, sizeof(version), "%s", banner + (strncmp(banner, "gangway ", 8) ? 0 : 8));
    version[strcspn(version, " ")] = '\0';
    m->stats_src = (gw_stats_source_t){
        .cfg = m->cfg, .version = version, .pid = getpid(), .started_ms = m->started_ms,
        .started_unix = m->started_unix, .ls = m->ls, .nl = m->nl, .slots = m->sb.slots,
        .nslots = NSLOTS, .retired = &m->retired, .respawns = m->respawns,
        .slot_respawns = m->slot_respawns, .slot_spawned_unix = m->slot_spawned,
        .target = &m->target, .generation = &m->generation,
    };
    m->stats = gw_stats_new(m->loop, m->cfg->stats, &m->stats_src, fd, err, sizeof(err));
    if (m->stats) {
        if (keep >= 0)
            close(keep);
        gw_log_error("statistics on %s (/, /metrics, /status)", gw_stats_url(m->stats));
        return 0;
    }
    if (!h->is_present) {
        gw_log_error("--stats: %s", err);
        return -1;
    }
    /* The old workers are not left without a master for the statistics. */
    if (keep >= 0 &&
        (m->stats = gw_stats_new(m->loop, NULL, &m->stats_src, keep, err2, sizeof(err2)))) {
        gw_log_error("reload: --stats %s: %s; statistics stay on %s until the next reload",
                     m->cfg->stats, err, gw_stats_url(m->stats));
        return 0;
    }
    gw_log_error("reload: --stats %s: %s; no statistics until the next reload", m->cfg->stats,
                 err);
    return 0;
}

/* --preload: imported once here; every worker starts with it in
 * copy-on-write memory. A failure is the same one clear line as in a
 * worker. 0 or -1. */
static int preload(master_t *m)
{
    gw_log_error("preload: the master imports the app once, before forking");
    if (!(m->app = gw_wsgi_new(m->cfg, m->ls, m->nl)))
        return -1;
    gw_wsgi_detach(m->app);
    return 0;
}

int gw_master_run(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, const char *banner,
                  const gw_master_exec_t *ex, gw_handover_t *h)
{
    master_t *m = calloc(1, sizeof(*m));
    int p[2] = {-1, -1}, rc = 1;
    size_t nold = 0;
    bool is_adopted = false;

    if (!m)
        return 1;
    m->cfg = cfg;
    m->ex = ex;
    m->ls = ls;
    m->nl = nl;
    m->banner = banner;
    m->target = (unsigned)cfg->workers;
    m->generation = 1;
    m->sb.fd = -1;
    m->checker_rd = m->exe_fd = m->config_fd = -1;
    m->sigwatch.fd = m->notify.fd = -1;
    /* The workers' notes: a socket pair, not a pipe, so that a recycling
     * worker's note can carry its --reuse-port sockets to its successor. */
    if (gw__reload_open_scoreboard(m, h, &is_adopted) < 0 || !(m->loop = gw_loop_new(NULL)) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0) {
        gw_log_error("cannot start the master: %s", strerror(errno));
        goto out;
    }
    m->started_ms = gw_clock_ms();
    m->started_unix = time(NULL);
    if (h->is_present) {
        /* A reload: the counters, the start time and the generation go on
         * from the previous image; its workers are the generation before. */
        bool has_carried = gw__reload_restore_carried(m);
        m->generation++;
        nold = gw__reload_take_old_workers(m, h, is_adopted, has_carried);
    }
    /* Workers write their ready notes; the master reads without blocking. */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    m->notify.fd = p[0];
    m->notify.cb = on_notify;
    m->notify_wr = p[1];
    /* Signals held since main() began are delivered from here on. */
    m->sigwatch.fd = gw_signals_open(master_sigs, sizeof(master_sigs) / sizeof(master_sigs[0]));
    m->sigwatch.cb = on_signal;
    if (m->sigwatch.fd < 0 || gw_loop_add(m->loop, &m->sigwatch, EPOLLIN) < 0 ||
        gw_loop_add(m->loop, &m->notify, EPOLLIN) < 0) {
        gw_log_error("cannot start the master: %s", strerror(errno));
        goto out;
    }
    if (cfg->touch_reload.n) {
        m->touch_mtime = calloc(cfg->touch_reload.n, sizeof(*m->touch_mtime));
        if (m->touch_mtime)
            (void)touched(m); /* remember the mtimes we start with */
    }
    gw_timerq_init(m->loop, &m->tick_q, TICK_MS);
    gw_timerq_init(m->loop, &m->delay_q, cfg->shutdown_delay * 1000);
    /* The workers have graceful-timeout themselves; the kill is a backstop. */
    gw_timerq_init(m->loop, &m->kill_graceful_q, cfg->graceful_timeout * 1000 + QUICK_KILL_MS);
    gw_timerq_init(m->loop, &m->kill_quick_q, QUICK_KILL_MS);
    gw_timer_init(&m->tick, on_tick);
    gw_timer_init(&m->delay, on_delay_timer);
    gw_timer_init(&m->kill, on_kill_timer);
    gw__reload_init(m);
    gw_timer_start(&m->tick_q, &m->tick);
    /* A re-executed master's previous workers serve until its own do: a
     * failed start is retried then, not a reason to take them down. */
    m->has_served = nold > 0;
    if (cfg->stats && start_stats(m, banner, h) < 0)
        goto out;
    if (h->stats_fd >= 0) { /* --stats is gone from the configuration */
        close(h->stats_fd);
        h->stats_fd = -1;
    }

    if (nold) {
        /* The old workers serve meanwhile: a reload under way. A new
         * generation that cannot load the app leaves them serving
         * (gw__respawn_on_exit()), as does an app this image cannot import. */
        m->is_ready = true;
        m->is_reloading = true;
        gw_log_error("reload: %s, master pid %d: starting %u new worker(s); %zu old one(s) "
                     "serve meanwhile", banner, (int)getpid(), m->target, nold);
        if (cfg->preload && preload(m) < 0) {
            gw_log_error("reload failed: the re-executed master cannot import the app; the "
                         "old workers keep serving");
            m->generation--;
            m->is_reloading = false;
            gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
        } else {
            progress(m);
        }
    } else {
        if (cfg->preload && preload(m) < 0)
            goto out;
        /* Worker 1; a failed fork is retried with back-off like any other. */
        progress(m);
    }
    if (gw_loop_run(m->loop) < 0)
        gw_log_error("master loop failed: %s", strerror(errno));
    rc = m->exit_code;
    if (rc == 0)
        gw_log_error("stopped");
out:
    if (m->app) {
        gw_wsgi_attach(m->app);
        gw_wsgi_free(m->app);
    }
    gw_stats_free(m->stats);
    if (m->checker) { /* the loop failed under it */
        gw__reload_kill_check(m, CHECK_STOPPED);
        waitpid(m->checker, NULL, 0);
    }
    gw__reload_close_fds(m);
    if (h->stats_fd >= 0)
        close(h->stats_fd);
    h->stats_fd = -1;
    vacuum(m);
    if (m->sigwatch.fd >= 0)
        gw_signals_close(m->sigwatch.fd);
    if (m->notify.fd >= 0)
        close(m->notify.fd);
    if (p[1] >= 0)
        close(p[1]);
    gw_loop_free(m->loop);
    gw_scoreboard_close(&m->sb);
    free(m->touch_mtime);
    free(m);
    return rc;
}
