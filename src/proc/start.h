/* From a loaded configuration to a running master: the checks of what the
 * option parsers cannot judge alone (and what --check-config tries beyond
 * them), then the logs, the listeners, the process's set-up, the
 * directories and the master (or, for --check-config, the app's import). */
#ifndef GW_START_H
#define GW_START_H

#include "config/config.h"
#include "proc/handover.h"
#include "proc/master.h"

/* Checks what needs no Python, every value an option's parser cannot judge
 * alone, and applies --env and --umask; with --check-config, also what the
 * master would do first with them (the log file, a reload checker's --stats
 * address) and hands the configuration to the master that runs the check
 * (h's check descriptors, closed here). A master re-executed by a reload
 * (h->is_present) runs with what its check validated. Returns 0, or the
 * exit status (2: the configuration is wrong). */
int gw_start_check(gw_config_t *cfg, gw_handover_t *h);

/* Serves: opens the logs and the listeners, sets the process up and runs
 * the master until it stops (version: for the banner); with --check-config,
 * imports the app instead. Returns the exit status. Runs Python. */
int gw_start_serve(gw_config_t *cfg, const gw_master_exec_t *ex, gw_handover_t *h,
                   const char *version);

#endif
