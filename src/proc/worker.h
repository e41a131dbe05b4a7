/* A worker process: starts Python, loads the app and runs one server loop
 * on the listeners it inherited from the master. */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include "config/config.h"
#include "proc/listen.h"
#include "proc/scoreboard.h"

/* The worker could not load the application (the reason is logged). */
#define GW_EXIT_APP_FAILED 3

struct gw_wsgi;

/* Runs in the child after fork; returns its exit status. Tells the master it
 * serves by writing its id (uint16) to notify_fd, and when it recycles
 * itself, that it wants a replacement (GW_NOTE_REPLACE, server.h).
 * inherit: by listener, a --reuse-port socket of the worker this one
 * replaces, to serve on instead of a socket of its own (-1: none; the child
 * owns them), or NULL. app: the app the master
 * preloaded (the child owns it now), or NULL to load it here. Runs Python. */
int gw_worker_run(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, unsigned id,
                  gw_scoreboard_t *sb, int notify_fd, const int *inherit,
                  struct gw_wsgi *app);

#endif
