/* From a loaded configuration to a running master: the checks of what the
 * option parsers cannot judge alone (and what --check-config tries beyond
 * them), then the logs, the listeners, the process's set-up, the
 * directories and the master (or, for --check-config, the app's import). */
#ifndef GW_START_H
#define GW_START_H

#include "config/config.h"
#include "proc/handover.h"
#include "proc/master.h"

#include <stdbool.h>

/* Checks what needs no Python, every value an option's parser cannot judge
 * alone, and applies --env and --umask; returns 0, or the exit status (2:
 * the configuration is wrong). is_reexec: a master re-executed by a reload,
 * which runs with what its check validated. */
int check_config(gw_config_t *cfg, bool is_reexec);

/* --check-config, beyond the options: the log file, a reload checker's
 * --stats address, and the configuration handed to the running master
 * (h's check descriptors, closed here). 0, or the exit status. */
int check_more(const gw_config_t *cfg, gw_handover_t *h);

/* Serves: opens the logs and the listeners, sets the process up and runs
 * the master until it stops (version: for the banner); with --check-config,
 * imports the app instead. Returns the exit status. Runs Python. */
int serve(gw_config_t *cfg, const gw_master_exec_t *ex, gw_handover_t *h, const char *version);

#endif
