/* Running as --uid / --gid: what they name, checked before anything starts,
 * and the switch after binding (the groups, the gid, then the uid), verified
 * afterwards: a process that still holds other ids does not start. */
#ifndef GW_PRIVILEGES_H
#define GW_PRIVILEGES_H

#include "config/config.h"

/* Resolves --uid and --gid as gw_privileges_drop() will: 0, or the exit status
 * 2 after one line (no such user or group, or a uid without a passwd entry
 * and no --gid). */
int gw_privileges_check(const gw_config_t *cfg);

/* Switches to --uid / --gid (nothing to do without them; as another user
 * than root, only to the ids it has already). 0, or -1 after logging. */
int gw_privileges_drop(const gw_config_t *cfg);

#endif
