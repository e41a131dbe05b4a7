/* The master: pure C (no Python), forks the workers on the listeners it
 * bound, and supervises them: respawn, graceful reload (SIGHUP,
 * --touch-reload), graceful and quick stop, more or fewer workers
 * (SIGTTIN/SIGTTOU), log reopen (SIGUSR1) and the harakiri kill. */
#ifndef GW_MASTER_H
#define GW_MASTER_H

#include "config/config.h"
#include "proc/handover.h"
#include "proc/listen.h"

#include <signal.h>
#include <sys/types.h>

/* How a reload re-executes the master (and runs the checker before it):
 * the binary at the path gangway was started from, so that a package upgrade
 * that replaced the file takes effect; the same arguments; the environment
 * and the directory gangway was started in, and its umask (the configuration
 * is read again as at start: ini files, GANGWAY_* variables, the command
 * line; what `env =` or an imported app changed in this image does not
 * carry over). */
typedef struct gw_master_exec {
    const char *path;
    char **argv;
    char **envp;   /* the starting environment, hand-over variables left out */
    int cwd_fd;    /* O_PATH descriptor of the starting directory; -1: stay */
    mode_t umask;
} gw_master_exec_t;

/* Runs until the workers are stopped; returns the process exit status. The
 * listeners are borrowed (and closed when a stop begins). h is what a
 * previous image handed over (is_present false at a first start): the master
 * takes its scoreboard, --stats socket and workers, and the descriptors it
 * names become the master's. */
int gw_master_run(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, const char *banner,
                  const gw_master_exec_t *ex, gw_handover_t *h);

/* First thing in main(): blocks the signals the master acts on, so that one
 * sent before its handlers are in place waits for them (old: the mask to
 * restore for a run that starts no master: --check-config, --help ...). */
void gw_master_hold_signals(sigset_t *old);

#endif
