#include "proc/worker.h"

#include "core/clock.h"
#include "core/log.h"
#include "proto/request.h"
#include "serve/server.h"
#include "py/wsgi.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* How long a stopping worker waits for request threads still in the app. */
#define STOP_THREADS_MS 2000

int gw_worker_run(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, unsigned id,
                  gw_scoreboard_t *sb, int notify_fd, const int *inherit, gw_wsgi_t *app)
{
    gw_slot_t *slot = &sb->slots[id - 1];
    gw_handler_t handler;
    gw_block_hooks_t hooks;
    gw_worker_info_t who = {
        .id = id, .slot = &sb->slots[id - 1], .sb = sb, .notify_fd = notify_fd};
    gw_server_t *s;
    gw_wsgi_t *w = app;
    uint16_t msg = (uint16_t)id;
    int rc;

    gw_log_set_worker(id);
    gw_req_seed_ids();
    if (!w && !(w = gw_wsgi_new(cfg, ls, nl)))
        return GW_EXIT_APP_FAILED;
    /* --reuse-port: this worker's own socket, only once the app is loaded.
     * The kernel hands a listening member of the group its share of new
     * connections at once; a worker whose import then fails (a broken
     * deploy, retried with back-off while the others serve) would reset
     * every one queued on its socket, and a slow import would keep them
     * waiting while the other workers could serve them. A recycled
     * worker's successor serves on that worker's socket instead (inherit):
     * the socket, its queue and its half-open connections outlive the
     * recycled worker, which a socket of its own cannot promise (closing
     * a listener resets what is queued on it). */
    for (size_t i = 0; i < nl; i++) {
        if (inherit && inherit[i] >= 0 && ls[i].is_reuse_port) {
            close(ls[i].fd); /* the master's placeholder */
            ls[i].fd = inherit[i];
            continue;
        }
        if ((rc = gw_listen_reuse_port(&ls[i])) < 0) {
            gw_log_error("worker %u: cannot listen on %s: %s", id, ls[i].url, strerror(-rc));
            gw_wsgi_free(w);
            return 1;
        }
    }
    gw_wsgi_handler(w, &handler, &hooks);
    if (!(s = gw_server_new(cfg, ls, nl, &handler, &hooks, &who))) {
        gw_wsgi_free(w);
        return 1;
    }
    /* The request threads first (they wait for the GIL), then the watchdog
     * that reads their clocks; then this thread lets the GIL go for good. */
    if (cfg->threads > 1 && gw_wsgi_start_threads(w, gw_server_conns(s)) < 0) {
        /* Those that started wait for the GIL: let them start and stop. */
        gw_wsgi_detach(w);
        if (!gw_wsgi_stop_threads(w, STOP_THREADS_MS))
            _exit(1);
        gw_server_free(s);
        gw_wsgi_free(w);
        return 1;
    }
    if (cfg->harakiri && gw_wsgi_start_watchdog(w, slot, id) < 0)
        gw_log_error("worker %u: cannot start the harakiri watchdog; only the master's kill "
                     "remains", id);
    if (cfg->threads > 1)
        gw_wsgi_detach(w);
    gw_clock_update();
    atomic_store(&slot->pid, (int32_t)getpid());
    atomic_store(&slot->started_ms, gw_clock_ms());
    /* From starting only: the master may have marked it stopping meanwhile. */
    uint32_t starting = GW_SLOT_STARTING;
    atomic_compare_exchange_strong(&slot->state, &starting, GW_SLOT_READY);
    if (write(notify_fd, &msg, sizeof(msg)) != sizeof(msg))
        gw_log_error("worker %u: cannot tell the master it is ready: %s", id, strerror(errno));
    /* The socket stays open: a recycling worker asks for its replacement on it. */
    rc = gw_server_run(s);
    /* A request thread still in the app (stuck past harakiri, or past
     * --graceful-timeout) could touch what the teardown frees: the worker
     * leaves as it is, its master replaces it. */
    if (!gw_wsgi_stop_threads(w, STOP_THREADS_MS)) {
        gw_log_error("worker %u: a request thread is still in the app; exiting without it", id);
        gw_log_flush();
        _exit(rc < 0 ? 1 : 0);
    }
    gw_log_flush();
    gw_server_free(s);
    gw_wsgi_free(w);
    close(notify_fd);
    return rc < 0 ? 1 : 0;
}
