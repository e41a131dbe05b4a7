/* The process's set-up before the master runs, as the configuration asks:
 * its environment (--env) and umask, the mode and owner of the unix sockets
 * it bound (--chmod-socket, --chown-socket), the pidfile. */
#ifndef GW_SETUP_H
#define GW_SETUP_H

#include "config/config.h"
#include "proc/listen.h"

#include <stddef.h>
#include <sys/types.h>

/* Sets every --env KEY=VALUE in this process's environment. 0, or -1 after
 * the one line a bad value gets. */
int gw_setup_env(const gw_config_t *cfg);

/* --umask, when given, is the process's umask from now on. 0, or -1 after
 * the one line a bad value gets. */
int gw_setup_umask(const gw_config_t *cfg);

/* An octal mode (--umask, --chmod-socket) into *out: 0, or -1. */
int gw_setup_parse_mode(const char *s, mode_t *out);

/* Unix sockets get --chmod-socket and --chown-socket; TCP ones are
 * unaffected. 0, or -1 after logging. */
int gw_setup_own_sockets(const gw_config_t *cfg, gw_listener_t *ls, size_t nl);

/* Writes the pid of this process to path. 0, or -1 after logging. */
int gw_setup_write_pidfile(const char *path);

#endif
