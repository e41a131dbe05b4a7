/* The WSGI bridge (PEP 3333): embeds CPython, loads the application, builds
 * each request's environ, runs the app and streams its answer through the
 * connection's output queue. The only module besides wsgi_types that sees
 * Python.h. */
#ifndef GW_WSGI_H
#define GW_WSGI_H

#include "config/config.h"
#include "serve/conn.h"
#include "proc/listen.h"
#include "proc/scoreboard.h"
#include "serve/server.h"

typedef struct gw_wsgi gw_wsgi_t;

/* Starts the interpreter for cfg (chdir, env, virtualenv, pythonpath) and
 * loads the application. Returns NULL after logging one clear line (and the
 * traceback of an import error). Runs Python: the app's import. */
gw_wsgi_t *gw_wsgi_new(const gw_config_t *cfg, const gw_listener_t *listeners, size_t n);

/* The handler and GIL hooks to give the server. */
void gw_wsgi_handler(gw_wsgi_t *w, gw_handler_t *h, gw_block_hooks_t *hooks);

/* Starts the harakiri watchdog thread: when one Python call for a request
 * runs past --harakiri, it logs the request and the Python traceback, then
 * raises gangway.RequestTimeout inside that code so the app (or gangway)
 * answers 500 and the worker lives on. 0 or -1. */
int gw_wsgi_start_watchdog(gw_wsgi_t *w, gw_slot_t *slot, unsigned worker_id);

/* --threads N > 1: starts the N request threads on the server's
 * connections cc (the handler's release and on_close become deferred: the
 * loop's thread holds no GIL). The caller, holding the GIL, then gives it
 * up for good with gw_wsgi_detach(). 0 or -errno (logged). */
int gw_wsgi_start_threads(gw_wsgi_t *w, gw_conn_ctx_t *cc);

/* After the loop: gives up what is in flight, stops the threads and waits
 * up to wait_ms for them, then takes the GIL back (true). false: a thread
 * still runs the app (stuck): nothing may be torn down under it; the
 * caller exits at once. */
bool gw_wsgi_stop_threads(gw_wsgi_t *w, uint64_t wait_ms);

/* --preload: the master holds the interpreter without the GIL between
 * forks (the app's own threads may run), and hands it to each child. */
void gw_wsgi_detach(gw_wsgi_t *w);
void gw_wsgi_attach(gw_wsgi_t *w);
void gw_wsgi_fork_prepare(gw_wsgi_t *w);
void gw_wsgi_fork_parent(gw_wsgi_t *w);
void gw_wsgi_fork_child(gw_wsgi_t *w);

/* Drops the app and finalizes the interpreter (runs atexit handlers). */
void gw_wsgi_free(gw_wsgi_t *w);

/* "3.11.2" */
const char *gw_wsgi_python_version(void);

#endif
