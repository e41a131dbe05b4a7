/* A reload: the check (`gangway ARGS --check-config`, with its deadline),
 * the re-exec of the master with what it hands over, and in the new image
 * the take-over of the previous image's scoreboard, workers and the
 * statistics it carried. Part of the master (proc/master_priv.h). */
#include "proc/master_priv.h"

#include "core/log.h"
#include "proc/handover.h"
#include "proc/scoreboard.h"
#include "proc/signals.h"
#include "stats/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* What a reload holds from its check to the re-exec: closed when it ends,
 * and in every child but the checker. */
void gw__reload_close_fds(master_t *m)
{
    if (m->checker_rd >= 0)
        close(m->checker_rd);
    if (m->exe_fd >= 0)
        close(m->exe_fd);
    if (m->config_fd >= 0)
        close(m->config_fd);
    m->checker_rd = m->exe_fd = m->config_fd = -1;
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
 * started); its exit is taken in reap() (master.c). */
void gw__reload_kill_check(master_t *m, enum check_end why)
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
    gw__reload_kill_check(m, CHECK_TIMED_OUT);
}

void gw__reload_init(master_t *m)
{
    gw_timerq_init(m->loop, &m->check_q, m->cfg->reload_check_timeout * 1000);
    gw_timer_init(&m->check_deadline, on_check_deadline);
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
    gw__master_tell_systemd(m, "RELOADING=1", "reloading: checking the configuration and the app");
    goto out;
failed:
    gw_log_error("%s: cannot reload: %s%s%s", why, what, *what ? ": " : "", strerror(e));
    gw__reload_close_fds(m);
    /* A reload that follows another one said RELOADING=1 already. */
    gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
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
bool gw__reload_restore_carried(master_t *m)
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
        h.socks[h.nsocks].needs_context = m->ls[i].https || m->ls[i].is_proxy_protocol;
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
    gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
}

/* A reload asked for while another was under way runs once that one is
 * over, and reads the configuration as it is then: the newest wins. */
void gw__reload_next(master_t *m)
{
    if (!m->is_reload_pending || m->is_stopping || m->is_delaying)
        return;
    m->is_reload_pending = false;
    gw__reload_begin(m, "the reload asked for meanwhile");
}

void gw__reload_begin(master_t *m, const char *why)
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
        gw__reload_kill_check(m, CHECK_SUPERSEDED);
        return;
    }
    start_checker(m, why);
}

/* The checker ended: re-execute when it passed, else say why the reload
 * failed (a check stopped for a newer reload says nothing: that one starts
 * now). */
void gw__reload_on_check_exit(master_t *m, int st)
{
    enum check_end end = m->check_end;
    int version = checker_answer(m);
    char how[96];

    m->checker = 0;
    m->check_end = CHECK_RUNNING;
    gw_timer_stop(&m->check_deadline);
    if (m->is_stopping) {
        gw__reload_close_fds(m);
        return;
    }
    if (end == CHECK_RUNNING && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        reexec(m, version);
    } else if (end == CHECK_TIMED_OUT) {
        gw_log_error("reload failed: the check did not finish within %llus "
                     "(--reload-check-timeout); the old workers keep serving",
                     (unsigned long long)m->cfg->reload_check_timeout);
        gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
    } else if (end == CHECK_RUNNING) {
        gw__respawn_describe(st, how, sizeof(how));
        gw_log_error("reload failed: the new configuration or app does not load "
                     "(%s --check-config %s); the old workers keep serving",
                     m->ex->path, how);
        gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
    }
    gw__reload_close_fds(m);
    gw__reload_next(m);
}

/* The scoreboard a previous image handed over (the old workers' slots, and
 * what the master carried in its extra area; *is_adopted true), or a new
 * one. */
int gw__reload_open_scoreboard(master_t *m, gw_handover_t *h, bool *is_adopted)
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
size_t gw__reload_take_old_workers(master_t *m, const gw_handover_t *h, bool has_slots,
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
                m->w[j].pid = pid; /* taken: gw__respawn_free_slot() passes it by */
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
            if ((i = gw__respawn_free_slot(m)) < 0)
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
