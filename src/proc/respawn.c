/* The worker table: forking workers into its slots, bringing the current
 * generation to the target (retiring the surplus, recycling workers'
 * successors) and what a worker's exit means (the respawn policy: back-off
 * after failed starts and quick crashes, giving up when the app never
 * served). Part of the master (proc/master_priv.h). */
#include "proc/master_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "proc/scoreboard.h"
#include "proc/signals.h"
#include "proc/worker.h"
#include "py/wsgi.h"
#include "stats/stats.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

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

unsigned gw__respawn_count_live(master_t *m, uint32_t gen, bool ready_only)
{
    unsigned n = 0;
    for (size_t i = 0; i < NSLOTS; i++)
        if (m->w[i].pid && m->w[i].generation == gen && !m->w[i].is_retiring &&
            (!ready_only || m->w[i].is_ready))
            n++;
    return n;
}

bool gw__respawn_any_live(master_t *m)
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
int gw__respawn_spawn(master_t *m, size_t i)
{
    wproc_t *w = &m->w[i];
    wproc_t *donor = gw__notes_donor(m, i);
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
        gw__reload_close_fds(m);
        /* Another worker's sockets held for its successor would keep them
         * listening, with nobody accepting, for as long as this one lives. */
        for (size_t j = 0; j < NSLOTS; j++)
            if (&m->w[j] != donor)
                gw__notes_drop_handoff(m, &m->w[j]);
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
        gw__notes_drop_handoff(m, donor);
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
long gw__respawn_free_slot(master_t *m)
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
    gw__notes_drop_handoff(m, &m->w[i]);
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
    case GW_EXIT_HARAKIRI:
        return GW_RESPAWN_HARAKIRI;
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
void gw__respawn_reconcile(master_t *m)
{
    unsigned have, want;

    if (m->is_stopping)
        return;
    have = count_members(m);
    while (have > m->target && shrink_one(m))
        have--;
    want = m->is_ready || gw__respawn_count_live(m, m->generation, true) ? m->target : 1;
    while (have < want) {
        long i = gw__respawn_free_slot(m);
        if (i < 0)
            return; /* every slot taken: a recycling worker serves on meanwhile */
        succeed(m, (size_t)i);
        if (gw__respawn_spawn(m, (size_t)i) < 0)
            return; /* a failed fork is retried after its back-off */
        have++;
    }
}

/* Workers that asked to be replaced serve until their replacements do: one
 * is told to stop for each member serving beyond the target, the first to
 * ask first. The current generation's only: a reload stops the old one. */
void gw__respawn_release_recycled(master_t *m)
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

void gw__respawn_signal_all(master_t *m, int sig, bool old_only)
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

void gw__respawn_describe(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "ended (status 0x%x)", st);
}

void gw__respawn_on_exit(master_t *m, size_t i, int st)
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
    gw__notes_drop_handoff(m, &m->w[i]);
    w.handoff = NULL;
    /* Its counters join the totals of past workers before the slot is
     * reused: the sums that --stats reports never go down. */
    gw_totals_add(&m->retired, slot);
    atomic_store_explicit(&slot->state, GW_SLOT_EMPTY, RELAXED);
    atomic_store_explicit(&slot->pid, 0, RELAXED);
    memset(&m->w[i], 0, sizeof(m->w[i]));
    gw__respawn_describe(st, how, sizeof(how));
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
         * a crash): the replacement is under way, or gw__respawn_reconcile() goes on
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
        gw__master_tell_systemd(m, "READY=1", "serving (reload failed: the old workers go on)");
        gw__reload_next(m);
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
            gw__master_stop(m, false, NULL);
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
    gw__respawn_spawn(m, i);
}
