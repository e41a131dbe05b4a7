/* The master: pure C (no Python), forks the workers on the listeners it
 * bound, and supervises them: respawn, graceful reload (SIGHUP,
 * --touch-reload), graceful and quick stop, more or fewer workers
 * (SIGTTIN/SIGTTOU), log reopen (SIGUSR1) and the harakiri kill. */
#ifndef GW_MASTER_H
#define GW_MASTER_H

#include "config.h"
#include "listen.h"

/* Runs until the workers are stopped; returns the process exit status. The
 * listeners are borrowed (and closed when a stop begins). argv is what the
 * master re-executes itself with on a --preload reload. */
int gw_master_run(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, const char *banner,
                  char **argv);

/* The environment a re-executed master finds: its listening sockets ("3,4us":
 * descriptors in order, "u" marking the uwsgi ones, "s" those systemd
 * handed in) and the previous workers, to stop once its own serve. */
#define GW_ENV_FDS "GANGWAY__LISTEN_FDS"
#define GW_ENV_OLD_WORKERS "GANGWAY__OLD_WORKERS"

#endif
