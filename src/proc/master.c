#include "proc/master.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "proc/scoreboard.h"
#include "serve/server.h"
#include "proc/signals.h"
#include "stats/stats.h"
#include "proc/worker.h"
#include "py/wsgi.h"


#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

/* Room for a whole new generation during a reload, or for a replacement of
 * every worker recycling at once. */
#define NSLOTS (2 * GW_MAX_WORKERS)
/* A worker that fails to start (cannot load the app, crashes or exits before
 * it says it serves) is retried after 1 s, 2 s, 4 s ... up to BACKOFF_MAX_MS,
 * and so is a fork() that fails. Before any worker has ever served, the
 * master gives up after MAX_START_FAILURES such failures in a row. */
#define MAX_START_FAILURES 5
#define BACKOFF_MAX_MS 30000
/* A worker that served but crashed sooner than this after its start, twice
 * in a row in its slot (failed starts as quick count too), is replaced after
 * a back-off too: never a fork loop. */
#define MIN_LIFE_MS 1000
#define QUICK_KILL_MS 5000
#define TICK_MS 1000

typedef struct wproc {
    pid_t pid;           /* 0: the slot is free */
    uint32_t generation;
    bool is_ready;
    bool is_retiring;    /* told to stop: do not replace it */
    bool is_killed;      /* harakiri SIGKILL sent */
    /* It asked to be replaced (max-requests, lifetime, RSS) and serves until
     * enough others do: no longer counted toward the target. */
    bool is_recycling;
    unsigned successor;  /* 1 + the slot a worker was started (or is due) in, in its place */
    uint64_t recycle_ms; /* when it asked: the first to ask goes first */
    /* --reuse-port: its own sockets, by listener (-1: none), which it sent
     * with its note, for its successor to share (owned until handed over). */
    int *handoff;
    /* >0 with pid 0: a worker of this generation is due to start then (the
     * back-off after a failed start or fork); it counts toward the target. */
    uint64_t respawn_at;
    uint64_t spawned_ms;
} wproc_t;

/* Why a reload's checker was killed before it ended by itself. */
enum check_end { CHECK_RUNNING, CHECK_TIMED_OUT, CHECK_SUPERSEDED, CHECK_STOPPED };

typedef struct master {
    const gw_config_t *cfg;
    const gw_master_exec_t *ex;
    gw_wsgi_t *app;      /* --preload: the app, imported here */
    /* A reload's `gangway ARGS --check-config`, running (the leader of its
     * own process group), and what goes with it until the re-exec. */
    pid_t checker;
    int checker_rd;      /* its answer: the hand-over version it takes (-1: none) */
    enum check_end check_end;
    int exe_fd;          /* O_PATH: the binary it runs, which the re-exec executes too */
    int config_fd;       /* memfd: the configuration it validated, for the new image */
    gw_timerq_t check_q; /* --reload-check-timeout */
    gw_timer_t check_deadline;
    gw_listener_t *ls;
    size_t nl;
    const char *banner;
    gw_loop_t *loop;
    gw_scoreboard_t sb;
    wproc_t w[NSLOTS];
    gw_watch_t sigwatch, notify;
    int notify_wr;
    unsigned target;
    uint32_t generation;
    bool is_ready;       /* the first generation is serving */
    bool is_reloading;
    /* Asked for while the first workers were starting or while a reload
     * was under way: runs as soon as that is over. */
    bool is_reload_pending;
    bool is_stopping;
    bool is_delaying;    /* SIGTERM received, shutdown-delay running */
    int exit_code;
    bool has_served;     /* a worker has said it serves, ever */
    unsigned failures;   /* consecutive workers that failed to start; 0 once one serves */
    unsigned fork_failures; /* consecutive fork() failures */
    struct timespec *touch_mtime;
    gw_timerq_t tick_q, delay_q, kill_graceful_q, kill_quick_q;
    gw_timer_t tick, delay, kill;
    /* --stats: what the master's statistics server reads */
    gw_stats_t *stats;
    gw_stats_source_t stats_src;
    gw_totals_t retired;                  /* counters of workers that are gone */
    uint64_t respawns[GW_RESPAWN_REASONS];
    uint32_t slot_respawns[NSLOTS];
    unsigned fast_crashes[NSLOTS];        /* in a row, each < MIN_LIFE_MS after its start */
    time_t slot_spawned[NSLOTS];
    uint64_t started_ms;  /* the first image's start: uptime goes on across reloads */
    time_t started_unix;
} master_t;

/* What a re-executed master keeps from its previous image, in the
 * scoreboard's extra area (written just before the exec, read at start):
 * with the slots of the old workers, which go on counting there, the
 * statistics never go down across a reload. */
#define CARRIED_VERSION 2
typedef struct carried {
    uint32_t version; /* CARRIED_VERSION once written; 0 in a new scoreboard */
    uint32_t generation;
    uint64_t started_ms; /* CLOCK_MONOTONIC, the same clock across exec */
    int64_t started_unix;
    gw_totals_t retired;
    uint64_t respawns[GW_RESPAWN_REASONS];
    uint32_t slot_respawns[NSLOTS];
    int64_t slot_spawned[NSLOTS];
    uint32_t target;      /* the worker count, as SIGTTIN/SIGTTOU left it */
    uint32_t cfg_workers; /* --workers as that image read it */
} carried_t;

#define RELAXED memory_order_relaxed

/* The signals the master acts on. */
static const int master_sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT,
                                  SIGHUP,  SIGUSR1, SIGTTIN, SIGTTOU};

void gw_master_hold_signals(sigset_t *old)
{
    gw_signals_hold(master_sigs, sizeof(master_sigs) / sizeof(master_sigs[0]), old);
}

static void kill_checker(master_t *m, enum check_end why);
static void reload(master_t *m, const char *why);

/* What a reload holds from its check to the re-exec: closed when it ends,
 * and in every child but the checker. */
static void close_reload_fds(master_t *m)
{
    if (m->checker_rd >= 0)
        close(m->checker_rd);
    if (m->exe_fd >= 0)
        close(m->exe_fd);
    if (m->config_fd >= 0)
        close(m->config_fd);
    m->checker_rd = m->exe_fd = m->config_fd = -1;
}

static unsigned count_live(master_t *m, uint32_t gen, bool ready_only)
{
    unsigned n = 0;
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid && m->w[i].generation == gen && !m->w[i].is_retiring &&
            (!ready_only || m->w[i].is_ready))
            n++;
    return n;
}

static bool any_live(master_t *m)
{
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid)
            return true;
    return false;
}

/* Workers of the current generation that count toward the target: alive,
 * not told to stop and not recycling, or due to start again after a
 * back-off. */
static unsigned count_members(master_t *m)
{
    unsigned n = 0;
    for (size_t i = 0; i < NSLOTS; i++) {
        wproc_t *w = &m->w[i];
        if (w->generation == m->generation &&
            (w->pid ? !w->is_retiring && !w->is_recycling : w->respawn_at != 0))
            n++;
    }
    return n;
}

/* The n-th failure in a row waits 1 s, 2 s, 4 s ... at most BACKOFF_MAX_MS. */
static uint64_t backoff_ms(unsigned n)
{
    uint64_t ms = 1000ULL << (n > 1 ? (n - 1 < 16 ? n - 1 : 16) : 0);
    return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

/* Slot i (free) will get a worker of the current generation in delay_ms;
 * until then it counts toward the target, so nothing else fills the gap. */
static void reserve(master_t *m, size_t i, uint64_t delay_ms)
{
    memset(&m->w[i], 0, sizeof(m->w[i]));
    m->w[i].generation = m->generation;
    m->w[i].respawn_at = gw_clock_ms() + delay_ms;
}

/* Closes sockets a recycling worker sent (by listener, -1: none); NULL
 * passes. */
static void free_sockets(master_t *m, int *fds)
{
    if (!fds)
        return;
    for (size_t k = 0; k < m->nl; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    free(fds);
}

/* Closes the sockets a recycling worker sent for its successor. */
static void drop_handoff(master_t *m, wproc_t *w)
{
    free_sockets(m, w->handoff);
    w->handoff = NULL;
}

/* The recycling worker whose successor slot i gets, when it sent its
 * sockets along. */
static wproc_t *donor_of(master_t *m, size_t i)
{
    for (size_t j = 0; j < NSLOTS; j++)
        if (m->w[j].pid && m->w[j].successor == i + 1 && m->w[j].handoff)
            return &m->w[j];
    return NULL;
}

static int spawn(master_t *m, size_t i)
{
    wproc_t *w = &m->w[i];
    wproc_t *donor = donor_of(m, i);
    gw_slot_t *slot = &m->sb.slots[i];
    pid_t parent = getpid();
    sigset_t mask;
    pid_t pid;

    gw_slot_reset(slot, m->generation);
    gw_scoreboard_use(&m->sb, i);
    gw_log_flush();
    fflush(NULL);
    if (m->app)
        gw_wsgi_fork_prepare(m->app);
    gw_signals_block(&mask);
    pid = fork();
    if (pid < 0) {
        int e = errno;
        uint64_t delay;
        gw_signals_restore(&mask);
        if (m->app)
            gw_wsgi_fork_parent(m->app);
        /* EAGAIN (RLIMIT_NPROC, pid_max, cgroup pids.max) and ENOMEM pass:
         * the slot is kept and tried again later, one line per attempt. */
        atomic_store_explicit(&slot->state, GW_SLOT_EMPTY, RELAXED);
        delay = backoff_ms(++m->fork_failures);
        reserve(m, i, delay);
        gw_log_error("cannot fork worker %zu: %s; retrying in %llus", i + 1, strerror(e),
                     (unsigned long long)(delay / 1000));
        return -e;
    }
    if (pid == 0) {
        /* The child. It must not serve unsupervised: when the master dies
         * (SIGKILL, a crash) the kernel sends it SIGTERM, a graceful stop.
         * The signal follows the thread that forked, the master's loop
         * thread, which lives as long as the process, and a --preload
         * re-exec keeps it (same process). A master that died before the
         * prctl() is seen in getppid(). */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent) {
            gw_log_error("worker %zu: the master (pid %d) is gone; not starting", i + 1,
                         (int)parent);
            _exit(1);
        }
        /* Drop the master's loop and signal pipe, then serve. A signal
         * for it that comes before its own handlers is kept. */
        gw_signals_forked(m->sigwatch.fd, &mask);
        if (m->app)
            gw_wsgi_fork_child(m->app);
        close(m->notify.fd);
        gw_stats_close_fds(m->stats);
        gw_scoreboard_close_fd(&m->sb);
        close_reload_fds(m);
        /* Another worker's sockets held for its successor would keep them
         * listening, with nobody accepting, for as long as this one lives. */
        for (size_t j = 0; j < NSLOTS; j++)
            if (&m->w[j] != donor)
                drop_handoff(m, &m->w[j]);
        gw_loop_free(m->loop);
        exit(gw_worker_run(m->cfg, m->ls, m->nl, (unsigned)i + 1, &m->sb, m->notify_wr,
                           donor ? donor->handoff : NULL, m->app));
    }
    gw_signals_restore(&mask);
    if (m->app)
        gw_wsgi_fork_parent(m->app);
    /* The successor holds them now (and the recycling worker, until it
     * stops): the master's copies go, so that the sockets close with the
     * last worker that serves on them. */
    if (donor)
        drop_handoff(m, donor);
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    w->generation = m->generation;
    w->spawned_ms = gw_clock_ms();
    m->fork_failures = 0;
    atomic_store_explicit(&slot->pid, (int32_t)pid, RELAXED);
    m->slot_spawned[i] = time(NULL);
    return 0;
}

/* The first free slot for a worker of the current generation. */
static long free_slot(master_t *m)
{
    for (size_t i = 0; i < NSLOTS; i++)
        if (!m->w[i].pid && !m->w[i].respawn_at)
            return (long)i;
    return -1;
}

/* Tells worker i to stop (SIGTERM: gracefully, SIGQUIT: now). Its slot
 * says "stopping" at once: a worker stuck in the app notices the signal only
 * when the app returns, and the statistics should not call it merely busy. */
static void retire(master_t *m, size_t i, int sig)
{
    /* Sockets it sent for a successor that has not started: once it stops
     * accepting, the master's copy would keep them listening for nobody. */
    drop_handoff(m, &m->w[i]);
    m->w[i].is_retiring = true;
    atomic_store_explicit(&m->sb.slots[i].state, GW_SLOT_STOPPING, RELAXED);
    kill(m->w[i].pid, sig);
}

/* One worker of the current generation fewer: a restart still due is
 * cancelled first, then a worker that does not serve yet, then the one in the
 * highest slot. false: there is none. */
static bool shrink_one(master_t *m)
{
    long pick = -1;
    int best = 0;

    for (size_t i = NSLOTS; i-- > 0;) {
        wproc_t *w = &m->w[i];
        int rank = w->generation != m->generation     ? 0
                   : !w->pid                          ? (w->respawn_at ? 3 : 0)
                   : w->is_retiring || w->is_recycling ? 0
                   : w->is_ready                      ? 1
                                                      : 2;
        if (rank > best) {
            best = rank;
            pick = (long)i;
        }
    }
    if (pick < 0)
        return false;
    if (m->w[pick].pid)
        retire(m, (size_t)pick, SIGTERM);
    else
        m->w[pick].respawn_at = 0;
    return true;
}

static enum gw_respawn exit_reason_to_respawn(uint32_t reason)
{
    switch (reason) {
    case GW_EXIT_MAX_REQUESTS:
        return GW_RESPAWN_MAX_REQUESTS;
    case GW_EXIT_LIFETIME:
        return GW_RESPAWN_LIFETIME;
    case GW_EXIT_RSS:
        return GW_RESPAWN_RSS;
    }
    return GW_RESPAWN_CRASH; /* exit 0 unasked: not what a healthy worker does */
}

/* Slot i is about to get a worker of the current generation: if one that
 * recycles waits for a replacement, this is it. The respawn is counted now,
 * once, by the reason the recycling worker left in its slot, and on the
 * slot of the worker that replaces it (the recycling one still holds its
 * own). */
static void succeed(master_t *m, size_t i)
{
    long pick = -1;

    for (size_t j = 0; j < NSLOTS; j++) {
        wproc_t *w = &m->w[j];
        if (w->pid && w->generation == m->generation && w->is_recycling && !w->is_retiring &&
            !w->successor && (pick < 0 || w->recycle_ms < m->w[pick].recycle_ms))
            pick = (long)j;
    }
    if (pick < 0)
        return;
    m->w[pick].successor = (unsigned)i + 1;
    m->respawns[exit_reason_to_respawn(
        atomic_load_explicit(&m->sb.slots[pick].exit_reason, RELAXED))]++;
    m->slot_respawns[i]++;
    gw_log_error("worker %ld (pid %d) recycles: worker %zu starts in its place", pick + 1,
                 (int)m->w[pick].pid, i + 1);
}

/* Brings the current generation to m->target workers, whatever changed the
 * target or the workers (SIGTTIN/SIGTTOU at any moment, deaths, failed forks,
 * back-offs). Until one of the generation's first workers serves, only one
 * starts: it proves that the app loads, so a broken app fails once, not N
 * times. Workers in back-off count: nothing forks around a back-off. */
static void reconcile(master_t *m)
{
    unsigned have, want;

    if (m->is_stopping)
        return;
    have = count_members(m);
    while (have > m->target && shrink_one(m))
        have--;
    want = m->is_ready || count_live(m, m->generation, true) ? m->target : 1;
    while (have < want) {
        long i = free_slot(m);
        if (i < 0)
            return; /* every slot taken: a recycling worker serves on meanwhile */
        succeed(m, (size_t)i);
        if (spawn(m, (size_t)i) < 0)
            return; /* a failed fork is retried after its back-off */
        have++;
    }
}

/* Workers that asked to be replaced serve until their replacements do: one
 * is told to stop for each member serving beyond the target, the first to
 * ask first. The current generation's only: a reload stops the old one. */
static void release_recycled(master_t *m)
{
    unsigned ready = 0, recycling = 0;

    for (size_t i = 0; i < NSLOTS; i++) {
        wproc_t *w = &m->w[i];
        if (!w->pid || w->generation != m->generation || w->is_retiring)
            continue;
        if (w->is_recycling)
            recycling++;
        else if (w->is_ready)
            ready++;
    }
    while (recycling && ready + recycling > m->target) {
        long pick = -1;
        for (size_t i = 0; i < NSLOTS; i++) {
            wproc_t *w = &m->w[i];
            if (w->pid && w->generation == m->generation && w->is_recycling &&
                !w->is_retiring && (pick < 0 || w->recycle_ms < m->w[pick].recycle_ms))
                pick = (long)i;
        }
        retire(m, (size_t)pick, SIGTERM);
        recycling--;
    }
}

static void signal_all(master_t *m, int sig, bool old_only)
{
    for (size_t i = 0; i < NSLOTS; i++) {
        wproc_t *w = &m->w[i];
        if (!w->pid || (old_only && w->generation == m->generation))
            continue;
        if (sig == SIGTERM || sig == SIGQUIT)
            retire(m, i, sig);
        else
            kill(w->pid, sig);
    }
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
static void tell_systemd(master_t *m, const char *state, const char *what)
{
    sd_notifyf(0, "%s%sSTATUS=%s, %u worker(s)", state, *state ? "\n" : "", what, m->target);
}

static void begin_stop(master_t *m, bool graceful, const char *why)
{
    if (m->is_stopping && graceful)
        return;
    /* The log line first, then systemd: whoever sees the state change can
     * read why in the log. */
    if (!m->is_stopping && why)
        gw_log_error("%s: %s stop of %u worker(s)", why, graceful ? "graceful" : "quick",
                     count_live(m, m->generation, false));
    tell_systemd(m, "STOPPING=1", graceful ? "stopping gracefully" : "stopping");
    m->is_stopping = true;
    m->is_delaying = false;
    gw_timer_stop(&m->delay);
    /* A reload's check under way has nothing left to do; the master waits
     * for it to be gone, so that nothing it started outlives the stop. */
    if (m->checker && m->check_end == CHECK_RUNNING) {
        gw_log_error("stopping the reload's check (pid %d)", (int)m->checker);
        kill_checker(m, CHECK_STOPPED);
    }
    /* New connections are refused from now on rather than queued for
     * workers that will not take them. */
    for (size_t i = 0; i < m->nl; i++)
        gw_listen_close(&m->ls[i]);
    for (size_t i = 0; i < NSLOTS; i++)
        drop_handoff(m, &m->w[i]);
    signal_all(m, graceful ? SIGTERM : SIGQUIT, false);
    gw_timer_start(graceful ? &m->kill_graceful_q : &m->kill_quick_q, &m->kill);
    if (!any_live(m) && !m->checker)
        gw_loop_stop(m->loop);
}

static void on_kill_timer(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, kill));
    (void)loop;
    gw_log_error("workers still running after the stop timeout: killing them");
    signal_all(m, SIGKILL, false);
}

static void on_delay_timer(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, delay));
    (void)loop;
    begin_stop(m, true, "shutdown-delay over");
}

/* The checker's descriptors, from 3 on: its answer, the memfd it writes
 * the configuration into, the binary it runs, and the --stats socket when
 * there is one. */
enum { CHK_ANSWER = 3, CHK_CONFIG, CHK_EXE, CHK_STATS, CHK_END };

/* Between fork() and exec only async-signal-safe calls: with --preload the
 * app's threads may hold stdio's or malloc's locks in the master. */
static void checker_fail(const char *msg)
{
    (void)!write(STDERR_FILENO, msg, strlen(msg));
    _exit(127);
}

/* Kills the checker and every process in its group (what the app's import
 * started); its exit is taken in reap(). */
static void kill_checker(master_t *m, enum check_end why)
{
    if (!m->checker || m->check_end != CHECK_RUNNING)
        return;
    m->check_end = why;
    gw_timer_stop(&m->check_deadline);
    if (kill(-m->checker, SIGKILL) < 0)
        kill(m->checker, SIGKILL);
}

static void on_check_deadline(gw_loop_t *loop, gw_timer_t *t)
{
    master_t *m = (master_t *)((char *)t - offsetof(master_t, check_deadline));

    (void)loop;
    gw_log_error("reload: the check (pid %d) still runs after %llus (--reload-check-timeout): "
                 "killing it and what it started", (int)m->checker,
                 (unsigned long long)m->cfg->reload_check_timeout);
    kill_checker(m, CHECK_TIMED_OUT);
}

/* A reload, step 1: `<binary> ARGS --check-config`, run as the new master
 * would run (the binary at its path, the starting environment and
 * directory), reads the new configuration and imports the app without
 * binding anything. Only if it passes does this master give up its image;
 * if it fails, it has said why on the log (its stderr is ours). The binary
 * is opened here, once: the check runs that file and the re-exec executes
 * the same one, whatever is renamed over the path in between. The checker
 * writes the configuration it validated into a memfd, which the new image
 * loads instead of reading the files again. It runs in a process group of
 * its own, for --reload-check-timeout at most, and dies with the master. */
static void start_checker(master_t *m, const char *why)
{
    const gw_master_exec_t *ex = m->ex;
    char vars[3][sizeof(GW_ENV_CHECK_CONFIG) + 8], **args = NULL, **envp = NULL;
    const char *what = "";
    size_t n = 0, ne = 0;
    int p[2] = {-1, -1}, stats_fd = gw_stats_fd(m->stats), nfd = stats_fd >= 0 ? 4 : 3, e;
    pid_t parent = getpid(), pid;
    sigset_t mask;

    while (ex->argv[n])
        n++;
    while (ex->envp[ne])
        ne++;
    snprintf(vars[0], sizeof(vars[0]), "%s=%d", GW_ENV_CHECK, CHK_ANSWER);
    snprintf(vars[1], sizeof(vars[1]), "%s=%d", GW_ENV_CHECK_CONFIG, CHK_CONFIG);
    snprintf(vars[2], sizeof(vars[2]), "%s=%d", GW_ENV_CHECK_STATS, CHK_STATS);
    if (!(args = calloc(n + 2, sizeof(*args))) || !(envp = calloc(ne + 4, sizeof(*envp))) ||
        pipe2(p, O_CLOEXEC) < 0 ||
        (m->config_fd = memfd_create("gangway-config", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0) {
        e = errno;
        goto failed;
    }
    if ((m->exe_fd = open(ex->path, O_PATH | O_CLOEXEC)) < 0) {
        e = errno;
        what = ex->path;
        goto failed;
    }
    memcpy(args, ex->argv, n * sizeof(*args));
    args[n] = "--check-config";
    memcpy(envp, ex->envp, ne * sizeof(*envp));
    envp[ne] = vars[0];
    envp[ne + 1] = vars[1];
    envp[ne + 2] = stats_fd >= 0 ? vars[2] : NULL;
    gw_log_flush();
    fflush(NULL);
    gw_signals_block(&mask);
    pid = fork();
    e = errno;
    if (pid == 0) {
        const int from[CHK_END - CHK_ANSWER] = {p[1], m->config_fd, m->exe_fd, stats_fd};
        int tmp[CHK_END - CHK_ANSWER];

        setpgid(0, 0);
        /* It must not outlive the master: a master that died before the
         * prctl() is seen in getppid(). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        gw_signals_close(-1); /* default handlers, then the mask back */
        gw_signals_restore(&mask);
        umask(ex->umask);
        if (ex->cwd_fd >= 0 && fchdir(ex->cwd_fd) < 0)
            checker_fail("gangway: reload: the check cannot return to the starting directory\n");
        /* Copies above the targets first, so that moving one never
         * overwrites another; dup2 clears close-on-exec. Nothing else of the
         * master's beyond stdio: not the listeners, not what a preloaded
         * app left inheritable. */
        for (int i = 0; i < nfd; i++)
            if ((tmp[i] = fcntl(from[i], F_DUPFD_CLOEXEC, CHK_END)) < 0)
                checker_fail("gangway: reload: cannot set up the check's descriptors\n");
        for (int i = 0; i < nfd; i++)
            if (dup2(tmp[i], CHK_ANSWER + i) < 0)
                checker_fail("gangway: reload: cannot set up the check's descriptors\n");
        close_range(CHK_ANSWER + (unsigned)nfd, ~0U, 0);
        /* The descriptor stays open across the exec: a script runs as
         * /dev/fd/N. The checker closes it first thing. */
        fexecve(CHK_EXE, args, envp);
        checker_fail("gangway: reload: cannot run the binary for the check\n");
    }
    gw_signals_restore(&mask);
    if (pid < 0) {
        what = "cannot start the check";
        goto failed;
    }
    setpgid(pid, pid); /* as the child does: whichever comes first */
    m->checker = pid;
    m->check_end = CHECK_RUNNING;
    m->checker_rd = p[0];
    p[0] = -1;
    fcntl(m->checker_rd, F_SETFL, O_NONBLOCK);
    gw_timer_start(&m->check_q, &m->check_deadline);
    gw_log_error("%s: graceful reload: checking the configuration and the app (%s "
                 "--check-config)", why, ex->path);
    tell_systemd(m, "RELOADING=1", "reloading: checking the configuration and the app");
    goto out;
failed:
    gw_log_error("%s: cannot reload: %s%s%s", why, what, *what ? ": " : "", strerror(e));
    close_reload_fds(m);
    /* A reload that follows another one said RELOADING=1 already. */
    tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
out:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    free(args);
    free(envp);
}

/* The hand-over version the checker said it takes; 0 when it said nothing
 * (a gangway from before GANGWAY__CHECK_FD). */
static int checker_answer(master_t *m)
{
    char buf[16];
    ssize_t n = m->checker_rd >= 0 ? read(m->checker_rd, buf, sizeof(buf) - 1) : -1;

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return atoi(buf);
}

static void save_carried(master_t *m)
{
    carried_t *c = m->sb.extra;

    c->generation = m->generation;
    c->started_ms = m->started_ms;
    c->started_unix = (int64_t)m->started_unix;
    c->retired = m->retired;
    memcpy(c->respawns, m->respawns, sizeof(c->respawns));
    memcpy(c->slot_respawns, m->slot_respawns, sizeof(c->slot_respawns));
    for (size_t i = 0; i < NSLOTS; i++)
        c->slot_spawned[i] = (int64_t)m->slot_spawned[i];
    c->target = m->target;
    c->cfg_workers = (uint32_t)m->cfg->workers;
    c->version = CARRIED_VERSION;
}

/* A re-executed master: false when the previous image left nothing. */
static bool restore_carried(master_t *m)
{
    carried_t *c = m->sb.extra;

    if (c->version != CARRIED_VERSION)
        return false;
    m->generation = c->generation;
    m->started_ms = c->started_ms;
    m->started_unix = (time_t)c->started_unix;
    m->retired = c->retired;
    memcpy(m->respawns, c->respawns, sizeof(m->respawns));
    memcpy(m->slot_respawns, c->slot_respawns, sizeof(m->slot_respawns));
    for (size_t i = 0; i < NSLOTS; i++)
        m->slot_spawned[i] = (time_t)c->slot_spawned[i];
    /* A count scaled by SIGTTIN/SIGTTOU survives the reload, unless the
     * new configuration names another --workers: the newer word wins. */
    if (c->cfg_workers == (uint32_t)m->cfg->workers && c->target >= 1 &&
        c->target <= GW_MAX_WORKERS)
        m->target = c->target;
    c->version = 0;
    return true;
}

/* Clears or sets close-on-exec on every descriptor the hand-over names
 * (with is_full false: the sockets only; has_config: the configuration) and
 * on the binary executed (a script runs as /dev/fd/N; the new image closes
 * it, named nowhere). */
static void set_cloexec(master_t *m, bool on, bool is_full, bool has_config)
{
    int flag = on ? FD_CLOEXEC : 0;

    for (size_t i = 0; i < m->nl; i++)
        if (m->ls[i].fd >= 0)
            fcntl(m->ls[i].fd, F_SETFD, flag);
    fcntl(m->exe_fd, F_SETFD, flag);
    if (has_config)
        fcntl(m->config_fd, F_SETFD, flag);
    if (!is_full)
        return;
    fcntl(m->sb.fd, F_SETFD, flag);
    if (gw_stats_fd(m->stats) >= 0)
        fcntl(gw_stats_fd(m->stats), F_SETFD, flag);
}

/* The environment of the next image: the starting one, then the hand-over
 * (every list built to its exact size; is_full false: sockets and workers
 * only; has_config: the checked configuration too). NULL when out of
 * memory. */
static char **exec_environ(master_t *m, bool is_full, bool has_config,
                           char *vars[GW_HANDOVER_VARS + 1])
{
    gw_handover_t h = {.scoreboard_fd = is_full ? m->sb.fd : -1,
                       .stats_fd = is_full ? gw_stats_fd(m->stats) : -1,
                       .config_fd = has_config ? m->config_fd : -1};
    size_t n = 0, nv = 0;
    char **envp = NULL;

    if (!(h.socks = calloc(m->nl ? m->nl : 1, sizeof(*h.socks))) ||
        !(h.old = calloc(NSLOTS, sizeof(*h.old))))
        goto out;
    for (size_t i = 0; i < m->nl; i++) {
        if (m->ls[i].fd < 0)
            continue;
        h.socks[h.nsocks].fd = m->ls[i].fd;
        h.socks[h.nsocks].proto = m->ls[i].proto;
        h.socks[h.nsocks++].is_activated = m->ls[i].is_activated;
    }
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid)
            h.old[h.nold++] = m->w[i].pid;
    if (gw_handover_vars(&h, vars) < 0)
        goto out;
    while (m->ex->envp[n])
        n++;
    while (vars[nv])
        nv++;
    if (!(envp = calloc(n + nv + 1, sizeof(*envp)))) {
        gw_handover_free_vars(vars);
        goto out;
    }
    memcpy(envp, m->ex->envp, n * sizeof(*envp));
    memcpy(envp + n, vars, nv * sizeof(*envp));
out:
    gw_handover_dispose(&h);
    return envp;
}

/* Step 2: re-execute the master, from the binary the check ran, with its
 * listening sockets, its workers, its scoreboard and the configuration the
 * check validated. The new image starts its own workers and stops these
 * once its own serve. Returns only when the exec failed. */
static void reexec(master_t *m, int version)
{
    const gw_master_exec_t *ex = m->ex;
    char *vars[GW_HANDOVER_VARS + 1] = {NULL};
    bool is_full = version >= 1, has_config = version >= 2;
    char **envp = exec_environ(m, is_full, has_config, vars);
    int here = -1, e, sig;
    mode_t um;
    sigset_t mask;

    if (!envp) {
        e = ENOMEM;
        goto failed;
    }
    /* What the new image loads is exactly what was checked: nothing writes
     * to it from here on. */
    if (has_config)
        fcntl(m->config_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    save_carried(m);
    set_cloexec(m, false, is_full, has_config);
    if (!is_full)
        gw_log_error("reload: %s takes only the sockets and the workers over (an older "
                     "gangway): its statistics start from zero", ex->path);
    gw_log_error("reload: re-executing the master (pid %d) from %s", (int)getpid(), ex->path);
    gw_log_flush();
    fflush(NULL);
    /* Signals that come meanwhile stay pending across the exec (the mask
     * is kept) until the new image's handlers are in place; those already
     * in the pipe, not acted on yet, are raised again to join them. */
    gw_signals_block(&mask);
    while ((sig = gw_signals_next(m->sigwatch.fd)) > 0)
        raise(sig);
    if (ex->cwd_fd >= 0)
        here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    um = umask(ex->umask);
    if (ex->cwd_fd >= 0 && fchdir(ex->cwd_fd) < 0) {
        e = errno;
    } else {
        fexecve(m->exe_fd, ex->argv, envp);
        e = errno;
    }
    /* Still here: the exec failed; this image goes on as it was. */
    if (here >= 0 && fchdir(here) < 0)
        gw_log_error("reload: cannot return to the working directory: %s", strerror(errno));
    if (here >= 0)
        close(here);
    umask(um);
    set_cloexec(m, true, is_full, has_config);
    ((carried_t *)m->sb.extra)->version = 0;
    gw_signals_restore(&mask);
failed:
    free(envp);
    gw_handover_free_vars(vars);
    gw_log_error("reload: cannot re-execute %s: %s; going on as before", ex->path, strerror(e));
    tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
}

/* A reload asked for while another was under way runs once that one is
 * over, and reads the configuration as it is then: the newest wins. */
static void reload_next(master_t *m)
{
    if (!m->is_reload_pending || m->is_stopping || m->is_delaying)
        return;
    m->is_reload_pending = false;
    reload(m, "the reload asked for meanwhile");
}

static void reload(master_t *m, const char *why)
{
    if (m->is_stopping || m->is_delaying)
        return;
    if (!m->is_ready || m->is_reloading || m->checker) {
        /* The first workers are still starting, or a new generation is:
         * reloading them now would race them; it is done as soon as they
         * serve (or fail). A check under way may have read the files before
         * they changed again: it is stopped, and a new one follows at once.
         * Any number of requests meanwhile make one reload. */
        if (!m->is_reload_pending)
            gw_log_error("%s: %s", why,
                         !m->is_ready ? "reloading once the workers serve"
                         : m->checker ? "the check under way may have read an older "
                                        "configuration: stopping it; a new one follows"
                                      : "another reload follows once this one is done");
        m->is_reload_pending = true;
        kill_checker(m, CHECK_SUPERSEDED);
        return;
    }
    start_checker(m, why);
}

/* The new generation serves: the old one finishes what it holds and goes.
 * The log says so before systemd hears READY=1 (whoever waits for it reads
 * the log next). */
static void finish_reload(master_t *m, unsigned ready)
{
    m->is_reloading = false;
    m->failures = 0;
    signal_all(m, SIGTERM, true);
    gw_log_error("reload: %u new worker(s) serving; the old ones finish what they hold", ready);
    gw_log_error("%s, master pid %d, %u worker(s)", m->banner, (int)getpid(), m->target);
    for (size_t i = 0; i < m->nl; i++)
        gw_log_error("listening on %s", m->ls[i].url);
    gw_log_error("ready");
    tell_systemd(m, "READY=1", "serving (reloaded)");
    reload_next(m);
}

static void announce_ready(master_t *m)
{
    m->is_ready = true;
    gw_log_error("%s, master pid %d, %u worker(s)", m->banner, (int)getpid(), m->target);
    for (size_t i = 0; i < m->nl; i++)
        gw_log_error("listening on %s", m->ls[i].url);
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid && m->w[i].is_ready)
            gw_log_error("worker %zu ready (pid %d)", i + 1, (int)m->w[i].pid);
    gw_log_error("ready");
    sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving, %u worker(s)", (int)getpid(),
               m->target);
    if (m->is_reload_pending) {
        m->is_reload_pending = false;
        reload(m, "reload asked during start-up");
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
    reconcile(m);
    release_recycled(m);
    ready = count_live(m, m->generation, true);
    if (!m->is_ready) {
        if (ready >= m->target)
            announce_ready(m);
        return;
    }
    if (m->is_reloading && ready >= m->target)
        finish_reload(m, ready);
}

/* Worker i recycles itself (its slot says why) and serves until a
 * replacement does: progress() starts one and then tells it to stop.
 * handoff: its --reuse-port sockets by listener (taken over), or NULL. */
static void recycling(master_t *m, size_t i, int *handoff)
{
    wproc_t *w = &m->w[i];

    if (w->is_retiring || m->is_stopping) {
        free_sockets(m, handoff);
        return;
    }
    if (!w->is_recycling) {
        w->is_recycling = true;
        w->recycle_ms = gw_clock_ms();
    }
    /* The tick may have seen the reason in the slot before the note came:
     * the sockets still go to a successor that has not started yet. An old
     * generation's worker gets none: the new one replaces it. */
    if (w->handoff || w->generation != m->generation ||
        (w->successor && m->w[w->successor - 1].pid))
        free_sockets(m, handoff);
    else
        w->handoff = handoff;
}

/* The sockets a note carried (SCM_RIGHTS), by --reuse-port listener: a
 * recycling worker's own, in the order of the listeners; NULL when there
 * are none or they do not match (closed then). */
static int *note_sockets(master_t *m, struct msghdr *mh)
{
    int fds[GW_NOTE_FDS_MAX], *out = NULL;
    size_t n = 0, want = 0;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        size_t k;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (k > GW_NOTE_FDS_MAX - n)
            k = GW_NOTE_FDS_MAX - n; /* cannot be: the buffer holds no more */
        memcpy(fds + n, CMSG_DATA(c), k * sizeof(int));
        n += k;
    }
    if (!n)
        return NULL;
    for (size_t k = 0; k < m->nl; k++)
        want += m->ls[k].is_reuse_port;
    if (n == want && !(mh->msg_flags & MSG_CTRUNC) && (out = malloc(m->nl * sizeof(*out)))) {
        for (size_t k = 0, j = 0; k < m->nl; k++)
            out[k] = m->ls[k].is_reuse_port ? fds[j++] : -1;
        return out;
    }
    for (size_t k = 0; k < n; k++)
        close(fds[k]);
    return NULL;
}

/* Takes the workers' notes: "I serve", and "replace me" (GW_NOTE_REPLACE,
 * with --reuse-port carrying the worker's sockets). A good start ends a run
 * of failed ones: the count and the back-off start over. Read before exits
 * are handled too, so that a worker that said it serves and died at once is
 * not taken for one that never started. */
static void read_notes(master_t *m)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(GW_NOTE_FDS_MAX * sizeof(int))];
    } ctl;
    uint16_t id;

    for (;;) {
        struct iovec iov = {.iov_base = &id, .iov_len = sizeof(id)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl.buf)};
        ssize_t n;
        int *handoff;
        bool is_replace;

        id = 0;
        n = recvmsg(m->notify.fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        handoff = note_sockets(m, &mh);
        is_replace = id & GW_NOTE_REPLACE;
        id &= (uint16_t)~GW_NOTE_REPLACE;
        if (n != sizeof(id) || id < 1 || id > NSLOTS || !m->w[id - 1].pid || !is_replace)
            free_sockets(m, handoff); /* only a "replace me" carries sockets */
        if (n != sizeof(id) || id < 1 || id > NSLOTS || !m->w[id - 1].pid)
            continue;
        if (is_replace) {
            recycling(m, id - 1u, handoff);
            continue;
        }
        m->w[id - 1].is_ready = true;
        m->has_served = true;
        m->failures = 0;
        if (m->is_ready)
            gw_log_error("worker %u ready (pid %d)", id, (int)m->w[id - 1].pid);
    }
}

static void on_notify(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    master_t *m = (master_t *)((char *)w - offsetof(master_t, notify));

    (void)loop;
    (void)events;
    read_notes(m);
    progress(m);
}

static void describe(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "ended (status 0x%x)", st);
}

static void on_worker_exit(master_t *m, size_t i, int st)
{
    wproc_t w = m->w[i];
    char how[96];
    bool load_failed = WIFEXITED(st) && WEXITSTATUS(st) == GW_EXIT_APP_FAILED;
    bool crashed = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    /* It ended before it said it serves, unasked: its start failed (the app
     * does not import, a native module crashes at import, os._exit() in
     * the app...). Such a worker is never replaced at once: an app that
     * always fails would make the master fork as fast as it can. */
    bool start_failed = !w.is_ready;
    uint64_t delay;

    gw_slot_t *slot = &m->sb.slots[i];
    enum gw_respawn why = w.is_killed ? GW_RESPAWN_HARAKIRI
                          : load_failed ? GW_RESPAWN_LOAD_FAILED
                          : crashed ? GW_RESPAWN_CRASH
                          : exit_reason_to_respawn(atomic_load_explicit(&slot->exit_reason, RELAXED));

    /* A successor still to start makes sockets of its own. */
    drop_handoff(m, &m->w[i]);
    w.handoff = NULL;
    /* Its counters join the totals of past workers before the slot is
     * reused: the sums that --stats reports never go down. */
    gw_totals_add(&m->retired, slot);
    atomic_store_explicit(&slot->state, GW_SLOT_EMPTY, RELAXED);
    atomic_store_explicit(&slot->pid, 0, RELAXED);
    memset(&m->w[i], 0, sizeof(m->w[i]));
    describe(st, how, sizeof(how));
    if (m->is_stopping || w.is_retiring) {
        if (!m->is_stopping && crashed)
            gw_log_error("worker %zu (pid %d) %s while stopping", i + 1, (int)w.pid, how);
        return;
    }
    if (w.generation != m->generation) {
        /* An old generation's worker, which the new one replaces. */
        if (crashed)
            gw_log_error("worker %zu (pid %d) %s", i + 1, (int)w.pid, how);
        return;
    }
    if (w.is_recycling) {
        /* It went before its replacement served (past --reload-on-rss, or
         * a crash): the replacement is under way, or reconcile() goes on
         * trying to start one; if none had started, this is when it counts. */
        if (crashed)
            gw_log_error("worker %zu (pid %d) %s while waiting for its replacement", i + 1,
                         (int)w.pid, how);
        if (!w.successor) {
            m->respawns[why]++;
            m->slot_respawns[i]++;
        }
        return;
    }
    if (start_failed && m->is_reloading && !m->checker) {
        if (load_failed)
            gw_log_error("reload failed: the new workers cannot load the app; the old ones "
                         "keep serving");
        else
            gw_log_error("reload failed: new worker %zu (pid %d) %s before it served; the old "
                         "ones keep serving", i + 1, (int)w.pid, how);
        for (size_t j = 0; j < NSLOTS; j++) {
            if (m->w[j].pid && m->w[j].generation == m->generation)
                retire(m, j, SIGQUIT);
            else if (!m->w[j].pid && m->w[j].generation == m->generation)
                m->w[j].respawn_at = 0;
        }
        m->generation--;
        m->is_reloading = false;
        tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
        reload_next(m);
        return;
    }
    if (start_failed) {
        m->failures++;
        if (!m->has_served && (load_failed || m->failures >= MAX_START_FAILURES)) {
            /* No worker ever served: the app cannot start here. A load
             * failure said why in its own line; a crash gets one. */
            if (!load_failed)
                gw_log_error("worker %zu (pid %d) %s before it served, %u times in a row, and "
                             "no worker ever served: giving up", i + 1, (int)w.pid, how,
                             m->failures);
            m->exit_code = 1;
            begin_stop(m, false, NULL);
            return;
        }
        /* Once the app has served, a failure to start again (a bad deploy
         * without a reload, a database down at import) leaves the other
         * workers serving and is retried for as long as it takes. A quick
         * one counts as a fast crash of the slot too: workers that die
         * now before, now right after they said they serve, still wait
         * longer each time. */
        if (gw_clock_ms() - w.spawned_ms < MIN_LIFE_MS)
            m->fast_crashes[i]++;
        delay = backoff_ms(m->failures);
        reserve(m, i, delay);
        m->respawns[why]++;
        m->slot_respawns[i]++;
        if (load_failed)
            gw_log_error("worker %zu (pid %d) cannot load the app; retrying in %llus", i + 1,
                         (int)w.pid, (unsigned long long)(delay / 1000));
        else
            gw_log_error("worker %zu (pid %d) %s before it served; retrying in %llus", i + 1,
                         (int)w.pid, how, (unsigned long long)(delay / 1000));
        return;
    }
    if (count_members(m) >= m->target)
        return;
    m->respawns[why]++;
    m->slot_respawns[i]++;
    /* It served, but died right after its start (a thread the app starts at
     * import that crashes at once, say). Once is replaced at once (a kill,
     * the OOM killer); again in a row, after a back-off. */
    if (crashed && gw_clock_ms() - w.spawned_ms < MIN_LIFE_MS)
        m->fast_crashes[i]++;
    else
        m->fast_crashes[i] = 0;
    if (m->fast_crashes[i] >= 2) {
        delay = backoff_ms(m->fast_crashes[i] - 1);
        reserve(m, i, delay);
        gw_log_error("worker %zu (pid %d) %s, again less than %us after its start; respawning "
                     "in %llus", i + 1, (int)w.pid, how, MIN_LIFE_MS / 1000,
                     (unsigned long long)(delay / 1000));
        return;
    }
    gw_log_error("worker %zu (pid %d) %s; respawning", i + 1, (int)w.pid, how);
    spawn(m, i);
}

/* The checker ended: re-execute when it passed, else say why the reload
 * failed (a check stopped for a newer reload says nothing: that one starts
 * now). */
static void checker_done(master_t *m, int st)
{
    enum check_end end = m->check_end;
    int version = checker_answer(m);
    char how[96];

    m->checker = 0;
    m->check_end = CHECK_RUNNING;
    gw_timer_stop(&m->check_deadline);
    if (m->is_stopping) {
        close_reload_fds(m);
        return;
    }
    if (end == CHECK_RUNNING && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        reexec(m, version);
    } else if (end == CHECK_TIMED_OUT) {
        gw_log_error("reload failed: the check did not finish within %llus "
                     "(--reload-check-timeout); the old workers keep serving",
                     (unsigned long long)m->cfg->reload_check_timeout);
        tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
    } else if (end == CHECK_RUNNING) {
        describe(st, how, sizeof(how));
        gw_log_error("reload failed: the new configuration or app does not load "
                     "(%s --check-config %s); the old workers keep serving",
                     m->ex->path, how);
        tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
    }
    close_reload_fds(m);
    reload_next(m);
}

static void reap(master_t *m)
{
    int st;
    pid_t pid;

    read_notes(m);
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid == m->checker) {
            checker_done(m, st);
            continue;
        }
        for (size_t i = 0; i < NSLOTS; i++) {
            if (m->w[i].pid == pid) {
                on_worker_exit(m, i, st);
                break;
            }
        }
    }
    progress(m);
    if (m->is_stopping && !any_live(m) && !m->checker)
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
                tell_systemd(m, "STOPPING=1", "stopping after shutdown-delay");
                gw_timer_start(&m->delay_q, &m->delay);
            } else {
                begin_stop(m, true, "SIGTERM");
            }
            break;
        case SIGINT:
            begin_stop(m, false, "SIGINT");
            break;
        case SIGQUIT:
            begin_stop(m, false, "SIGQUIT");
            break;
        case SIGHUP:
            reload(m, "SIGHUP");
            break;
        case SIGUSR1:
            gw_log_reopen();
            signal_all(m, SIGUSR1, false);
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
            tell_systemd(m, "", "serving");
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
            recycling(m, i, NULL);
        /* One that stopped by itself before its successor could start
         * (past --reload-on-rss, forks failing): the master's copy of its
         * sockets would keep them listening for nobody. */
        if (w->handoff &&
            atomic_load_explicit(&m->sb.slots[i].state, RELAXED) == GW_SLOT_STOPPING)
            drop_handoff(m, w);
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
                spawn(m, i);
            }
        }
    }
    /* Whatever left the generation short (a failed fork among others) is
     * made up here, at most once a second. */
    progress(m);
    if (m->cfg->touch_reload.n && touched(m))
        reload(m, "touch-reload");
    gw_timer_start(&m->tick_q, &m->tick);
}

/* The scoreboard a previous image handed over (the old workers' slots, and
 * what the master carried in its extra area; *is_adopted true), or a new
 * one. */
static int open_scoreboard(master_t *m, gw_handover_t *h, bool *is_adopted)
{
    int rc;

    *is_adopted = false;
    if (h->scoreboard_fd >= 0) {
        rc = gw_scoreboard_adopt(&m->sb, h->scoreboard_fd, NSLOTS, sizeof(carried_t));
        if (rc == 0) {
            h->scoreboard_fd = -1; /* the scoreboard's now */
            *is_adopted = true;
            return 0;
        }
        gw_log_error("reload: the scoreboard handed over %s: the statistics start from zero",
                     rc == -EPROTO ? "is another gangway version's" : strerror(-rc));
        close(h->scoreboard_fd);
        h->scoreboard_fd = -1;
    } else if (h->is_present) {
        gw_log_error("reload: no scoreboard handed over: the statistics start from zero");
    }
    return gw_scoreboard_open(&m->sb, NSLOTS, sizeof(carried_t));
}

/* True when pid is a child of this process, running or not yet reaped. */
static bool is_child(pid_t pid)
{
    siginfo_t si;
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* A re-executed master: the previous image's workers serve until the new
 * ones do. They keep their slots, so their counters (and their requests
 * in flight) stay in the statistics, and they are an older generation:
 * stopped once the new one serves, never replaced. A pid that is not our
 * child is never signalled. has_slots: the scoreboard is the previous
 * image's, so each worker's slot is found by its pid, all of them before
 * any worker whose slot is missing gets a free one (which must not be
 * another old worker's, still counting). has_carried: the generation came
 * along too; else the old workers are simply the one before. Returns how
 * many were taken. */
static size_t take_old_workers(master_t *m, const gw_handover_t *h, bool has_slots,
                               bool has_carried)
{
    size_t n = 0;
    long *at = calloc(h->nold ? h->nold : 1, sizeof(*at));

    if (!at)
        return 0;
    for (size_t k = 0; k < h->nold; k++) {
        pid_t pid = h->old[k];
        at[k] = -1;
        if (!is_child(pid)) {
            gw_log_error("reload: process %d named in %s is not a worker of this master: left "
                         "alone", (int)pid, GW_ENV_OLD_WORKERS);
            at[k] = -2;
            continue;
        }
        for (size_t j = 0; has_slots && j < NSLOTS && at[k] < 0; j++) {
            if (!m->w[j].pid && atomic_load_explicit(&m->sb.slots[j].pid, RELAXED) == pid) {
                at[k] = (long)j;
                m->w[j].pid = pid; /* taken: free_slot() passes it by */
            }
        }
    }
    for (size_t k = 0; k < h->nold; k++) {
        pid_t pid = h->old[k];
        long i = at[k];
        gw_slot_t *slot;
        uint32_t st, gen;

        if (i == -2)
            continue;
        if (i < 0) {
            /* its slot did not come along: a fresh one shows it */
            if ((i = free_slot(m)) < 0)
                continue;
            gw_slot_reset(&m->sb.slots[i], m->generation - 1);
            gw_scoreboard_use(&m->sb, (size_t)i);
            atomic_store_explicit(&m->sb.slots[i].pid, (int32_t)pid, RELAXED);
            atomic_store_explicit(&m->sb.slots[i].state, GW_SLOT_READY, RELAXED);
        }
        slot = &m->sb.slots[i];
        st = atomic_load_explicit(&slot->state, RELAXED);
        gen = atomic_load_explicit(&slot->generation, RELAXED);
        m->w[i].pid = pid;
        m->w[i].generation = has_carried && gen < m->generation ? gen : m->generation - 1;
        m->w[i].is_ready = st != GW_SLOT_STARTING;
        m->w[i].is_retiring = st == GW_SLOT_STOPPING;
        n++;
    }
    free(at);
    return n;
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
    if (open_scoreboard(m, h, &is_adopted) < 0 || !(m->loop = gw_loop_new(NULL)) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0) {
        gw_log_error("cannot start the master: %s", strerror(errno));
        goto out;
    }
    m->started_ms = gw_clock_ms();
    m->started_unix = time(NULL);
    if (h->is_present) {
        /* A reload: the counters, the start time and the generation go on
         * from the previous image; its workers are the generation before. */
        bool has_carried = restore_carried(m);
        m->generation++;
        nold = take_old_workers(m, h, is_adopted, has_carried);
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
    gw_timerq_init(m->loop, &m->check_q, cfg->reload_check_timeout * 1000);
    gw_timer_init(&m->check_deadline, on_check_deadline);
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
         * (on_worker_exit()), as does an app this image cannot import. */
        m->is_ready = true;
        m->is_reloading = true;
        gw_log_error("reload: %s, master pid %d: starting %u new worker(s); %zu old one(s) "
                     "serve meanwhile", banner, (int)getpid(), m->target, nold);
        if (cfg->preload && preload(m) < 0) {
            gw_log_error("reload failed: the re-executed master cannot import the app; the "
                         "old workers keep serving");
            m->generation--;
            m->is_reloading = false;
            tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
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
        kill_checker(m, CHECK_STOPPED);
        waitpid(m->checker, NULL, 0);
    }
    close_reload_fds(m);
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
