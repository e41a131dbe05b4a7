/* A serving process: its listeners, its event loop, accepting, signals and
 * graceful stop. Python stays behind the handler and the GIL hooks. */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include "config/config.h"
#include "serve/conn.h"
#include "proc/listen.h"
#include "proc/scoreboard.h"

typedef struct gw_server gw_server_t;

/* Called around the blocking wait: the WSGI side releases and re-takes the
 * GIL there so that the application's threads run meanwhile. */
typedef struct gw_block_hooks {
    void *ctx;
    void (*begin)(void *ctx);
    void (*end)(void *ctx);
} gw_block_hooks_t;

/* A worker's notes to the master on its socket: its id (uint16), and with
 * this bit a recycling worker's "replace me" (the reason is in its slot),
 * which carries the worker's --reuse-port sockets (SCM_RIGHTS, in the order
 * of the listeners; none when there are more than GW_NOTE_FDS_MAX) for its
 * successor to serve on. */
#define GW_NOTE_REPLACE 0x8000u
#define GW_NOTE_FDS_MAX 253 /* SCM_MAX_FD: what one message may carry */

/* Who this server is among the master's workers. */
typedef struct gw_worker_info {
    unsigned id;      /* 1-based; jitters max-requests */
    gw_slot_t *slot;  /* its scoreboard slot, or NULL */
    const gw_scoreboard_t *sb; /* every slot, to compare loads with the other workers */
    int notify_fd;    /* the master's note socket (borrowed); -1: no master to ask */
} gw_worker_info_t;

/* Borrows cfg, the listeners, the handler and the slot for the server's
 * lifetime. Returns NULL (with a logged reason) on failure. */
gw_server_t *gw_server_new(const gw_config_t *cfg, gw_listener_t *listeners, size_t n,
                           const gw_handler_t *handler, const gw_block_hooks_t *hooks,
                           const gw_worker_info_t *who);

/* Serves until SIGTERM/SIGINT and the graceful stop complete. A worker that
 * recycles itself (--max-requests, --max-worker-lifetime, --reload-on-rss)
 * asks the master for its replacement through who->notify_fd and serves on
 * until the master's SIGTERM (past --reload-on-rss, --graceful-timeout at
 * most). Returns 0, or a negative errno when the loop itself failed. Runs
 * Python via the handler. */
int gw_server_run(gw_server_t *s);

/* The connections' context, for the request threads (--threads). */
gw_conn_ctx_t *gw_server_conns(gw_server_t *s);

void gw_server_free(gw_server_t *s);

#endif
