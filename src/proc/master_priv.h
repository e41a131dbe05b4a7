/* The master's private parts, shared by the files that make the master
 * (master.c, respawn.c, reload.c, notes.c) and by nothing else: the table
 * of worker processes and the master's state, and the functions one of
 * those files calls in another. The public interface is proc/master.h. */
#ifndef GW_MASTER_PRIV_H
#define GW_MASTER_PRIV_H

#include "core/loop.h"
#include "proc/master.h"
#include "proc/scoreboard.h"
#include "py/wsgi.h"
#include "stats/stats.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Room for a whole new generation during a reload, or for a replacement of
 * every worker recycling at once. */
#define NSLOTS (2 * GW_MAX_WORKERS)

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

/* One per master process. gw_master_run() (master.c) creates and frees it,
 * with the loop, the descriptors, the timers and the statistics server;
 * reload.c owns the checker and what goes with it (checker to
 * check_deadline, the descriptors gw__reload_close_fds() closes) and fills
 * w[] with a previous image's workers before the loop runs; respawn.c forks
 * workers into w[] and frees their slots when they exit; notes.c holds a
 * recycling worker's sockets (w[].handoff) until its successor starts. */
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

#define RELAXED memory_order_relaxed

/* master.c */
/* Begins a stop: graceful (SIGTERM to the workers, then the kill after
 * --graceful-timeout) or quick; why: the log line's first words, or NULL
 * for none. The listeners close at once. */
void gw__master_stop(master_t *m, bool graceful, const char *why);
/* systemd's state ("READY=1", "RELOADING=1", "STOPPING=1", "": a status
 * update) with the STATUS= line what. */
void gw__master_tell_systemd(master_t *m, const char *state, const char *what);

/* respawn.c */
/* Workers of generation gen alive and not told to stop (ready_only: that
 * said they serve). */
unsigned gw__respawn_count_live(master_t *m, uint32_t gen, bool ready_only);
bool gw__respawn_any_live(master_t *m);
/* Forks a worker of the current generation into slot i; -errno when the
 * fork failed (the slot is reserved for a retry after a back-off). */
int gw__respawn_spawn(master_t *m, size_t i);
/* The first free slot, or -1. */
long gw__respawn_free_slot(master_t *m);
/* Brings the current generation to m->target workers. */
void gw__respawn_reconcile(master_t *m);
/* Tells recycling workers to stop, as their replacements serve. */
void gw__respawn_release_recycled(master_t *m);
/* sig to every worker (old_only: those of older generations); SIGTERM and
 * SIGQUIT retire them. */
void gw__respawn_signal_all(master_t *m, int sig, bool old_only);
/* "exited with status 1", "was killed by signal 9 (Killed)": a wait status
 * for the log. */
void gw__respawn_describe(int st, char *buf, size_t n);
/* Worker i ended with wait status st: its slot is freed and it is replaced,
 * now or after a back-off, or not at all. */
void gw__respawn_on_exit(master_t *m, size_t i, int st);

/* reload.c */
/* Closes what a reload holds from its check to the re-exec. */
void gw__reload_close_fds(master_t *m);
/* Kills the checker and its process group, for the reason why. */
void gw__reload_kill_check(master_t *m, enum check_end why);
/* The check's deadline, once m->loop exists. */
void gw__reload_init(master_t *m);
/* A reload asked for (why: by what, for the log): the check starts now, or
 * once the start-up or the reload under way is over. */
void gw__reload_begin(master_t *m, const char *why);
/* Runs the reload asked for meanwhile, if any. */
void gw__reload_next(master_t *m);
/* The checker ended with wait status st: re-execute, or say why not. */
void gw__reload_on_check_exit(master_t *m, int st);
/* The scoreboard a previous image handed over (*is_adopted), or a new one;
 * 0 or -errno. */
int gw__reload_open_scoreboard(master_t *m, gw_handover_t *h, bool *is_adopted);
/* What the previous image carried over; false when it left nothing. */
bool gw__reload_restore_carried(master_t *m);
/* Takes the previous image's workers into w[]; returns how many. */
size_t gw__reload_take_old_workers(master_t *m, const gw_handover_t *h, bool has_slots,
                                   bool has_carried);

/* notes.c */
/* Closes the sockets w sent for its successor. */
void gw__notes_drop_handoff(master_t *m, wproc_t *w);
/* The recycling worker whose sockets slot i's new worker takes, or NULL. */
wproc_t *gw__notes_donor(master_t *m, size_t i);
/* Worker i recycles itself; handoff: its --reuse-port sockets (taken over)
 * or NULL. */
void gw__notes_recycle(master_t *m, size_t i, int *handoff);
/* Reads every note waiting on the notes socket. */
void gw__notes_read(master_t *m);

#endif
