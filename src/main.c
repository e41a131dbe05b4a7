/* gangway: a WSGI application server. */
#include "config.h"
#include "listen.h"
#include "log.h"
#include "master.h"
#include "static.h"
#include "wsgi.h"

#include <errno.h>
#include <grp.h>
#include <llhttp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GW_VERSION "0.2.0"

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

static int parse_mode(const char *s, const char *what, mode_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 8);
    if (errno || *end || end == s || v > 07777) {
        fprintf(stderr, "gangway: --%s wants an octal mode, got '%s'\n", what, s);
        return -1;
    }
    *out = (mode_t)v;
    return 0;
}

/* Checks what needs no Python; returns 0, or the exit status. */
static int check_config(gw_config_t *cfg)
{
    mode_t mode;

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
    if (cfg->umask) {
        if (parse_mode(cfg->umask, "umask", &mode) < 0)
            return 2;
        umask(mode);
    }
    if (cfg->chmod_socket && *cfg->chmod_socket && parse_mode(cfg->chmod_socket, "chmod-socket", &mode) < 0)
        return 2;
    if (cfg->virtualenv && access(cfg->virtualenv, X_OK) != 0) {
        gw_log_error("cannot use --virtualenv '%s': %s", cfg->virtualenv, strerror(errno));
        return 1;
    }
    return 0;
}

/* Unix sockets get --chmod-socket; TCP ones are unaffected. */
static int chmod_sockets(const gw_config_t *cfg, gw_listener_t *ls, size_t nl)
{
    mode_t mode = 0666;

    if (!cfg->chmod_socket)
        return 0;
    if (*cfg->chmod_socket)
        parse_mode(cfg->chmod_socket, "chmod-socket", &mode);
    for (size_t i = 0; i < nl; i++) {
        if (ls[i].is_unix && chmod(ls[i].path, mode) < 0) {
            gw_log_error("cannot chmod %s: %s", ls[i].path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
        gw_log_error("cannot write the pidfile '%s': %s", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    return 0;
}

/* After binding (ports below 1024 need root), before the app is imported. */
static int drop_privileges(const gw_config_t *cfg)
{
    struct passwd *pw = NULL;
    struct group *gr = NULL;
    char *end;

    if (cfg->gid) {
        gid_t gid = (gid_t)strtoul(cfg->gid, &end, 10);
        if (*end || end == cfg->gid) {
            if (!(gr = getgrnam(cfg->gid))) {
                gw_log_error("unknown group '%s'", cfg->gid);
                return -1;
            }
            gid = gr->gr_gid;
        }
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0) {
            gw_log_error("cannot switch to group '%s': %s", cfg->gid, strerror(errno));
            return -1;
        }
    }
    if (cfg->uid) {
        uid_t uid = (uid_t)strtoul(cfg->uid, &end, 10);
        if (*end || end == cfg->uid) {
            if (!(pw = getpwnam(cfg->uid))) {
                gw_log_error("unknown user '%s'", cfg->uid);
                return -1;
            }
            uid = pw->pw_uid;
            if (!cfg->gid && (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0)) {
                gw_log_error("cannot switch to the groups of '%s': %s", cfg->uid, strerror(errno));
                return -1;
            }
        }
        if (setuid(uid) < 0) {
            gw_log_error("cannot switch to user '%s': %s", cfg->uid, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* A master re-executed by a --preload reload takes its listening sockets
 * from the environment instead of binding them again. */
static int adopt_listeners(gw_listener_t *ls, size_t nl, const char *fds)
{
    const char *p = fds;

    for (size_t i = 0; i < nl; i++) {
        char *end;
        long fd = strtol(p, &end, 10);
        if (end == p || fd < 0 || gw_listen_adopt(&ls[i], (int)fd) < 0) {
            gw_log_error("cannot adopt listening socket %zu from %s", i, GW_ENV_FDS);
            return -1;
        }
        p = *end == ',' ? end + 1 : end;
    }
    unsetenv(GW_ENV_FDS);
    return 0;
}

/* Rewrites each --static-map "/prefix=DIR" with DIR absolute; the strings
 * are stored in *owned (freed by the caller). 0, or -1 after logging. */
static int absolute_static_dirs(gw_config_t *cfg, char ***owned)
{
    char cwd[4096];

    if (!cfg->static_map.n)
        return 0;
    if (!getcwd(cwd, sizeof(cwd)) || !(*owned = calloc(cfg->static_map.n, sizeof(char *)))) {
        gw_log_error("cannot resolve --static-map directories: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < cfg->static_map.n; i++) {
        const char *m = cfg->static_map.v[i], *eq = strchr(m, '=');
        size_t n;
        if (!eq || eq[1] == '/' || !eq[1])
            continue; /* absolute already, or malformed (gw_static_new says so) */
        n = strlen(m) + strlen(cwd) + 2;
        if (!((*owned)[i] = malloc(n)))
            return -1;
        snprintf((*owned)[i], n, "%.*s=%s/%s", (int)(eq - m), m, cwd, eq + 1);
        cfg->static_map.v[i] = (*owned)[i];
    }
    return 0;
}

static int check_app(const gw_config_t *cfg, gw_listener_t *ls, size_t nl)
{
    gw_wsgi_t *w = gw_wsgi_new(cfg, ls, nl);
    if (!w)
        return 1;
    gw_wsgi_free(w);
    return 0;
}

static int serve(gw_config_t *cfg, char **argv)
{
    static const char *default_http[] = {"127.0.0.1:8000"};
    static const char *default_allow[] = {"127.0.0.0/8", "::1"};
    gw_listener_t *ls;
    /* HTTP listeners first, then uwsgi ones; with none given, 127.0.0.1:8000. */
    size_t nhttp = cfg->http.n || cfg->uwsgi.n ? cfg->http.n : 1;
    size_t nl = nhttp + cfg->uwsgi.n;
    const char **http_addrs = cfg->http.n ? cfg->http.v : default_http;
    gw_allow_t allow = {0};
    char err[256], banner[128];
    const char *inherited = getenv(GW_ENV_FDS);
    char **static_abs = NULL;
    int rc = 1;

    if (cfg->disable_logging) {
        gw_log_disable_access();
    } else if ((rc = gw_log_open_access(cfg->access_log)) < 0) {
        gw_log_error("cannot open the access log '%s': %s", cfg->access_log, strerror(-rc));
        return 1;
    }
    rc = 1;
    if (cfg->buffer_size < 4 || cfg->buffer_size > 65535) {
        gw_log_error("--buffer-size must be between 4 and 65535 (the uwsgi protocol's limit)");
        return 1;
    }
    for (size_t i = 0; i < (cfg->uwsgi_allow_from.n ? cfg->uwsgi_allow_from.n : 2); i++) {
        const char *c = cfg->uwsgi_allow_from.n ? cfg->uwsgi_allow_from.v[i] : default_allow[i];
        if (gw_allow_add(&allow, c) < 0) {
            gw_log_error("--uwsgi-allow-from: bad address or CIDR '%s'", c);
            gw_allow_dispose(&allow);
            return 1;
        }
    }
    if (!(ls = calloc(nl, sizeof(*ls)))) {
        gw_allow_dispose(&allow);
        return 1;
    }
    for (size_t i = 0; i < nl; i++)
        ls[i].fd = -1;
    if (inherited) {
        /* Re-executed by a reload: sockets, pidfile and privileges are as
         * the previous image left them. */
        if (adopt_listeners(ls, nl, inherited) < 0)
            goto out;
    } else if (!cfg->check_config) {
        for (size_t i = 0; i < nl; i++) {
            int (*open_fn)(gw_listener_t *, const char *, int, char *, size_t) =
                cfg->reuse_port ? gw_listen_open_reuse : gw_listen_open;
            const char *a = i < nhttp ? http_addrs[i] : cfg->uwsgi.v[i - nhttp];
            if (open_fn(&ls[i], a, (int)cfg->listen_backlog, err, sizeof(err)) < 0) {
                gw_log_error("%s", err);
                goto out;
            }
        }
        if (chmod_sockets(cfg, ls, nl) < 0)
            goto out;
        if (cfg->pidfile && write_pidfile(cfg->pidfile) < 0)
            goto out;
        if (drop_privileges(cfg) < 0)
            goto out;
    }
    for (size_t i = nhttp; i < nl; i++) {
        gw_listen_set_proto(&ls[i], GW_PROTO_UWSGI);
        ls[i].allow = &allow;
    }
    /* Directories on the command line mean where the command was run, not
     * where --chdir goes: make them absolute first. */
    if (absolute_static_dirs(cfg, &static_abs) < 0)
        goto out;
    if (cfg->chdir && chdir(cfg->chdir) < 0) {
        gw_log_error("cannot chdir to '%s': %s", cfg->chdir, strerror(errno));
        goto out;
    }
    {
        /* Bad --static-map directories stop the start here, in one line. */
        gw_static_t *st = gw_static_new(cfg, err, sizeof(err));
        gw_static_free(st);
        if (!st && err[0]) {
            gw_log_error("%s", err);
            goto out;
        }
    }
    if (cfg->check_config) {
        rc = check_app(cfg, ls, nl);
        goto out;
    }
    snprintf(banner, sizeof(banner), "gangway %s (Python %s)", GW_VERSION,
             gw_wsgi_python_version());
    rc = gw_master_run(cfg, ls, nl, banner, argv);
out:
    for (size_t i = 0; i < nl; i++)
        gw_listen_close(&ls[i]);
    free(ls);
    gw_allow_dispose(&allow);
    for (size_t i = 0; static_abs && i < cfg->static_map.n; i++)
        free(static_abs[i]);
    free(static_abs);
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
        rc = serve(&cfg, argv);
    }
    gw_config_dispose(&cfg);
    return rc;
}
