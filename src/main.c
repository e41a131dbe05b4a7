/* gangway: a WSGI application server. */
#include "config.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "wsgi.h"

#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_VERSION "0.1.0"

static int apply_env(const gw_config_t *cfg)
{
    for (size_t i = 0; i < cfg->env.n; i++) {
        const char *kv = cfg->env.v[i], *eq = strchr(kv, '=');
        char key[256];
        if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
            fprintf(stderr, "gangway: --env wants KEY=VALUE, got '%s'\n", kv);
            return -1;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        setenv(key, eq + 1, 1);
    }
    return 0;
}

/* Checks what needs no Python; returns 0, or the exit status. */
static int check_config(gw_config_t *cfg)
{
    if (!cfg->module && !cfg->wsgi_file) {
        fprintf(stderr, "gangway: no application given (try: gangway mymodule:app; see --help)\n");
        return 2;
    }
    if (cfg->module && cfg->wsgi_file) {
        fprintf(stderr, "gangway: give either a module or --wsgi-file, not both\n");
        return 2;
    }
    if (apply_env(cfg) < 0)
        return 2;
    if (cfg->virtualenv && access(cfg->virtualenv, X_OK) != 0) {
        gw_log_error("cannot use --virtualenv '%s': %s", cfg->virtualenv, strerror(errno));
        return 1;
    }
    return 0;
}

static int serve(gw_config_t *cfg)
{
    static const char *default_http[] = {"127.0.0.1:8000"};
    gw_listener_t *ls;
    size_t nl = cfg->http.n ? cfg->http.n : 1;
    const char **addrs = cfg->http.n ? cfg->http.v : default_http;
    gw_wsgi_t *w = NULL;
    gw_server_t *s = NULL;
    gw_handler_t handler;
    gw_block_hooks_t hooks;
    char err[256];
    int rc = 1;

    if (cfg->disable_logging) {
        gw_log_disable_access();
    } else if ((rc = gw_log_open_access(cfg->access_log)) < 0) {
        gw_log_error("cannot open the access log '%s': %s", cfg->access_log, strerror(-rc));
        return 1;
    }
    rc = 1;
    if (!(ls = calloc(nl, sizeof(*ls))))
        return 1;
    for (size_t i = 0; i < nl; i++)
        ls[i].fd = -1;
    for (size_t i = 0; i < nl; i++) {
        if (gw_listen_open(&ls[i], addrs[i], (int)cfg->listen_backlog, err, sizeof(err)) < 0) {
            gw_log_error("%s", err);
            goto out;
        }
    }
    if (cfg->chdir && chdir(cfg->chdir) < 0) {
        gw_log_error("cannot chdir to '%s': %s", cfg->chdir, strerror(errno));
        goto out;
    }
    if (!(w = gw_wsgi_new(cfg, ls, nl)))
        goto out;
    gw_wsgi_handler(w, &handler, &hooks);
    if (!(s = gw_server_new(cfg, ls, nl, &handler, &hooks)))
        goto out;
    gw_log_error("gangway %s (Python %s), pid %d", GW_VERSION, gw_wsgi_python_version(),
                 (int)getpid());
    for (size_t i = 0; i < nl; i++)
        gw_log_error("listening on %s", ls[i].url);
    gw_log_error("ready");
    rc = gw_server_run(s);
    gw_log_flush();
    if (rc < 0) {
        gw_log_error("event loop failed: %s", strerror(-rc));
        rc = 1;
    } else {
        gw_log_error("stopped");
    }
out:
    gw_server_free(s);
    gw_wsgi_free(w);
    for (size_t i = 0; i < nl; i++)
        gw_listen_close(&ls[i]);
    free(ls);
    return rc;
}

int main(int argc, char **argv)
{
    gw_config_t cfg;
    int rc;

    gw_config_init(&cfg);
    if (gw_config_parse_argv(&cfg, argc, argv) < 0) {
        rc = 2;
    } else if (cfg.show_help) {
        gw_config_print_help(stdout);
        rc = 0;
    } else if (cfg.show_version) {
        printf("gangway %s (Python %s, llhttp %d.%d.%d)\n", GW_VERSION, gw_wsgi_python_version(),
               LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
        rc = 0;
    } else if (!(rc = check_config(&cfg))) {
        /* Before any thread exists (the app may start some): every thread
         * inherits the mask, and the signals reach the loop's signalfd only. */
        gw_server_block_signals();
        rc = serve(&cfg);
    }
    gw_config_dispose(&cfg);
    return rc;
}
