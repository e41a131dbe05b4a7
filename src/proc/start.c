#include "proc/start.h"

#include "core/log.h"
#include "proc/listen.h"
#include "proc/privileges.h"
#include "proc/setup.h"
#include "proc/sockets.h"
#include "proto/forwarded.h"
#include "py/wsgi.h"
#include "serve/static.h"
#include "serve/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One line naming the value and where it came from; exit status 2. */
static int bad(const gw_config_t *cfg, const char *name, size_t i, const char *what,
               const char *value)
{
    gw_config_bad_value(cfg, name, i, value, what);
    return 2;
}

/* Adds list's entries (each one or more comma-separated addresses or
 * CIDRs, or "*") to a, or the defaults when list is empty. 0, or -EINVAL
 * with the entry's index in *bad_i. */
static const char *const loopback[] = {"127.0.0.0/8", "::1"};

static int add_cidrs(gw_allow_t *a, const gw_strlist_t *list, size_t *bad_i)
{
    for (size_t i = 0; i < (list->n ? list->n : 2); i++) {
        const char *bad;
        size_t badlen;
        int rc = gw_allow_add_list(a, list->n ? list->v[i] : loopback[i], &bad, &badlen);
        if (rc < 0) {
            *bad_i = i;
            return rc;
        }
    }
    return 0;
}

/* --forwarded-headers: the header family; -1 for a value it does not name. */
static int forwarded_family(const char *v)
{
    if (!v || strcmp(v, "x-forwarded") == 0)
        return GW_FWD_X_FORWARDED;
    if (strcmp(v, "forwarded") == 0)
        return GW_FWD_FORWARDED;
    if (strcmp(v, "both") == 0)
        return GW_FWD_BOTH;
    return -1;
}

/* Checks what needs no Python, every value an option's parser cannot judge
 * alone; returns 0, or the exit status (2: the configuration is wrong). A
 * master re-executed by a reload (is_reexec) runs with what its check
 * validated: what depends on the system rather than on the configuration
 * (the users and groups it would switch to, which it does not, its
 * --virtualenv) is no reason to leave the old workers without a master. */
static int check_config(gw_config_t *cfg, bool is_reexec)
{
    char err[256], num[32];
    mode_t mode;
    gw_allow_t allow = {0};

    if (!cfg->module && !cfg->wsgi_file) {
        fprintf(stderr, "gangway: no application given (try: gangway mymodule:app; see --help)\n");
        return 2;
    }
    if (cfg->module && cfg->wsgi_file) {
        fprintf(stderr, "gangway: give either a module or --wsgi-file, not both\n");
        return 2;
    }
    /* A request thread runs the app's Python and whatever C it calls: a
     * stack pthread_create() would take but the interpreter overflows is
     * a crash at the first deep call, not a start-up error. */
    if (cfg->thread_stacksize && cfg->thread_stacksize < 128) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cfg->thread_stacksize);
        return bad(cfg, "thread-stacksize", 0, "0 (the system's default) or at least 128 KiB",
                   num);
    }
    if (cfg->buffer_size < 4 || cfg->buffer_size > 65535) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cfg->buffer_size);
        return bad(cfg, "buffer-size", 0, "from 4 to 65535, the uwsgi protocol's limit", num);
    }
    for (size_t i = 0; i < cfg->uwsgi_allow_from.n; i++) {
        int rc = gw_allow_add(&allow, cfg->uwsgi_allow_from.v[i]);
        gw_allow_dispose(&allow);
        if (rc < 0)
            return bad(cfg, "uwsgi-allow-from", i, "an address or CIDR",
                       cfg->uwsgi_allow_from.v[i]);
    }
    for (int l = 0; l < 2; l++) {
        const gw_strlist_t *list = l ? &cfg->proxy_allow_from : &cfg->forwarded_allow_ips;
        size_t bi = 0;
        int rc = list->n ? add_cidrs(&allow, list, &bi) : 0;
        gw_allow_dispose(&allow);
        if (rc < 0)
            return bad(cfg, l ? "proxy-allow-from" : "forwarded-allow-ips", bi,
                       "addresses or CIDRs, separated by commas, or '*'", list->v[bi]);
    }
    if (forwarded_family(cfg->forwarded_headers) < 0)
        return bad(cfg, "forwarded-headers", 0, "x-forwarded, forwarded or both",
                   cfg->forwarded_headers);
    for (int l = 0; l < 4; l++) {
        const gw_strlist_t one = {&cfg->stats, cfg->stats ? 1 : 0};
        const gw_strlist_t *list = l == 0   ? &cfg->http
                                   : l == 1 ? &cfg->uwsgi
                                   : l == 2 ? &cfg->http_proxy_protocol
                                            : &one;
        const char *name = l == 0 ? "http" : l == 1 ? "uwsgi" : l == 2 ? "http-proxy-protocol"
                                                                        : "stats";
        for (size_t i = 0; i < list->n; i++) {
            char a[300];
            const char *addr = list->v[i];
            if (l == 3 && strspn(addr, "0123456789") == strlen(addr)) /* a bare port */
                snprintf(a, sizeof(a), "127.0.0.1:%s", addr), addr = a;
            if (gw_listen_check(addr, err, sizeof(err)) < 0)
                return bad(cfg, name, i, err, list->v[i]);
        }
    }
    if (gw_setup_env(cfg) < 0 || gw_setup_umask(cfg) < 0)
        return 2;
    if (cfg->chmod_socket && *cfg->chmod_socket &&
        gw_setup_parse_mode(cfg->chmod_socket, &mode) < 0)
        return bad(cfg, "chmod-socket", 0, "an octal mode, or nothing for 666",
                   cfg->chmod_socket);
    if (!is_reexec) {
        int rc = gw_privileges_check(cfg);
        if (rc)
            return rc;
    }
    if (cfg->virtualenv && access(cfg->virtualenv, X_OK) != 0) {
        gw_log_error("cannot use --virtualenv '%s': %s", cfg->virtualenv, strerror(errno));
        if (!is_reexec)
            return 1;
    }
    return 0;
}

/* --check-config: the log file opens for appending as the master will open
 * it, without creating it (a check leaves nothing behind): an existing file
 * opens for writing, a new one needs a directory it can be created in.
 * 0 or -errno. */
static int check_log_file(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd = open(path, O_WRONLY | O_APPEND | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);

    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno == ENXIO) /* a FIFO nobody reads yet: the master would wait for one */
        return 0;
    if (errno != ENOENT)
        return -errno;
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return -ENAMETOOLONG;
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return access(dir, W_OK | X_OK) < 0 ? -errno : 0;
}

/* A reload's checker: the --stats address is the one the running master
 * serves (running_fd, its socket, is bound to it; port 0 is any port), or
 * a TCP address this process can bind now. A unix path is left to the new
 * master, which binds it or runs without statistics. 0, or 1 after a line. */
static int check_stats(const gw_config_t *cfg, int running_fd)
{
    const char *addr = cfg->stats;
    char local[300], err[256];
    gw_listener_t l;

    if (!addr || strncmp(addr, "unix:", 5) == 0 || addr[0] == '/' || addr[0] == '.')
        return 0;
    /* as stats/server.c reads it: a bare port or ":port" stays on loopback */
    if (*addr && strspn(addr, "0123456789") == strlen(addr))
        snprintf(local, sizeof(local), "127.0.0.1:%s", addr);
    else if (addr[0] == ':')
        snprintf(local, sizeof(local), "127.0.0.1%s", addr);
    else
        snprintf(local, sizeof(local), "%s", addr);
    if (running_fd >= 0 && gw_listen_adopt(&l, running_fd, 64) == 0 && gw_listen_matches(&l, local))
        return 0;
    if (gw_listen_open(&l, local, 1, err, sizeof(err)) < 0) {
        gw_log_error("--stats %s: %s", addr, err);
        return 1;
    }
    gw_listen_close(&l);
    return 0;
}

/* --check-config, beyond the options: what the master would do first with
 * them and can be tried without disturbing a running one. A reload's
 * checker also hands the configuration it validated to the master, which
 * passes it to its new image. 0, or the exit status. */
static int check_more(const gw_config_t *cfg, gw_handover_t *h)
{
    int rc = 0, e;

    if (cfg->log_file && (e = check_log_file(cfg->log_file)) < 0) {
        gw_log_error("cannot open the log file '%s': %s", cfg->log_file, strerror(-e));
        rc = 1;
    }
    if (!rc && h->check_fd >= 0)
        rc = check_stats(cfg, h->check_stats_fd);
    if (h->check_stats_fd >= 0)
        close(h->check_stats_fd);
    h->check_stats_fd = -1;
    if (!rc && h->check_config_fd >= 0 && (e = gw_config_save(cfg, h->check_config_fd)) < 0) {
        gw_log_error("cannot hand the configuration over: %s", strerror(-e));
        rc = 1;
    }
    /* before the app is imported: it has no business with either */
    if (h->check_config_fd >= 0)
        close(h->check_config_fd);
    h->check_config_fd = -1;
    return rc;
}

int gw_start_check(gw_config_t *cfg, gw_handover_t *h)
{
    int rc = check_config(cfg, h->is_present);

    if (rc || !cfg->check_config)
        return rc;
    return check_more(cfg, h);
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

int gw_start_serve(gw_config_t *cfg, const gw_master_exec_t *ex, gw_handover_t *h,
                   const char *version)
{
    static const char *default_allow[] = {"127.0.0.0/8", "::1"};
    gw_listener_t *ls = NULL;
    size_t nl = 0;
    gw_allow_t allow = {0}, fwd_allow = {0}, proxy_allow = {0};
    gw_fwd_conf_t fwd = {0};
    size_t bad_i;
    gw_tls_t *tls = NULL;
    bool tls_failed = false;
    char err[256], banner[128];
    char **static_abs = NULL;
    int rc = 1;

    /* --check-config answers on stderr, whatever the log file. A master
     * re-executed by a reload holds the old workers: a log it cannot open
     * (its check could, a moment ago) is not worth leaving them without a
     * master for, so it logs where the previous image logged. */
    if (cfg->log_file && !cfg->check_config && (rc = gw_log_open_error(cfg->log_file)) < 0) {
        gw_log_error("%scannot open the log file '%s': %s%s", h->is_present ? "reload: " : "",
                     cfg->log_file, strerror(-rc),
                     h->is_present ? "; the log goes on here until the next reload" : "");
        if (!h->is_present)
            return 1;
    }
    if (cfg->disable_logging) {
        gw_log_disable_access();
    } else if ((rc = gw_log_open_access(cfg->access_log)) < 0) {
        gw_log_error("%scannot open the access log '%s': %s%s", h->is_present ? "reload: " : "",
                     cfg->access_log, strerror(-rc),
                     h->is_present ? "; access lines go to the error log until the next reload"
                                   : "");
        if (!h->is_present)
            return 1;
    }
    if (gw_log_set_format(cfg->log_format, cfg->log_json, err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        return 1;
    }
    rc = 1;
    for (size_t i = 0; i < (cfg->uwsgi_allow_from.n ? cfg->uwsgi_allow_from.n : 2); i++) {
        const char *c = cfg->uwsgi_allow_from.n ? cfg->uwsgi_allow_from.v[i] : default_allow[i];
        if (gw_allow_add(&allow, c) < 0) {
            gw_log_error("--uwsgi-allow-from: bad address or CIDR '%s'", c);
            gw_allow_dispose(&allow);
            return 1;
        }
    }
    /* Trusted proxies: checked by check_config(), so only memory can fail. */
    if (add_cidrs(&fwd_allow, &cfg->forwarded_allow_ips, &bad_i) < 0 ||
        add_cidrs(&proxy_allow,
                  cfg->proxy_allow_from.n ? &cfg->proxy_allow_from : &cfg->forwarded_allow_ips,
                  &bad_i) < 0) {
        gw_log_error("--forwarded-allow-ips, --proxy-allow-from: %s", strerror(ENOMEM));
        goto out;
    }
    if (fwd_allow.is_any)
        gw_log_error("warning: --forwarded-allow-ips '*': any client can set REMOTE_ADDR and "
                     "the scheme with X-Forwarded-* headers; only right when nothing but the "
                     "proxy can reach gangway");
    if (proxy_allow.is_any &&
        (cfg->enable_proxy_protocol || cfg->http_proxy_protocol.n || cfg->tls_proxy_protocol))
        gw_log_error("warning: --proxy-allow-from '*': any client can name its own address "
                     "in a PROXY protocol header");
    fwd.trusted = &fwd_allow;
    fwd.family = (enum gw_fwd_family)forwarded_family(cfg->forwarded_headers);
    fwd.use_host = cfg->forwarded_host;
    fwd.log = cfg->log_forwarded;
    if (gw_sockets_open(cfg, h, &ls, &nl) < 0)
        goto out;
    /* Certificates and keys are read here, before --uid: key files may
     * stay readable by root alone (nginx does the same). The workers
     * inherit the contexts. A reload's checker gets here too, so a new
     * certificate that does not load fails the reload, not the service. */
    tls = gw_tls_new(cfg, ls, nl, &tls_failed);
    if (tls_failed)
        goto out;
    if (tls && cfg->enable_proxy_protocol && !cfg->tls_proxy_protocol && !cfg->check_config)
        gw_log_error("note: --enable-proxy-protocol leaves the --https sockets out "
                     "(--tls-proxy-protocol makes them read a PROXY header before the TLS "
                     "handshake)");
    if (!tls && cfg->tls_proxy_protocol && !cfg->check_config)
        gw_log_error("note: --tls-proxy-protocol without an --https socket does nothing");
    /* A re-executed master's pidfile, sockets and privileges are as its
     * first image left them. */
    if (!h->is_present && !cfg->check_config) {
        if (gw_setup_own_sockets(cfg, ls, nl) < 0)
            goto out;
        if (cfg->pidfile && gw_setup_write_pidfile(cfg->pidfile) < 0)
            goto out;
        if (gw_privileges_drop(cfg) < 0)
            goto out;
    }
    for (size_t i = 0; i < nl; i++) {
        gw_listen_tune(&ls[i], cfg->defer_accept);
        if (ls[i].proto == GW_PROTO_UWSGI) {
            ls[i].allow = &allow;
            continue; /* its gateway says REMOTE_ADDR and the scheme itself */
        }
        ls[i].fwd = &fwd;
        /* --https has its own switch: a balancer that passes TLS through
         * (TCP mode) is not the one that relays plain HTTP. Its header is
         * read from the socket before the handshake (conn.c). */
        if (ls[i].https ? cfg->tls_proxy_protocol : cfg->enable_proxy_protocol)
            ls[i].is_proxy_protocol = true;
        if (ls[i].is_proxy_protocol)
            ls[i].allow = &proxy_allow;
    }
    /* Directories on the command line mean where the command was run, not
     * where --chdir goes: make them absolute first. A re-executed master
     * that finds a directory gone since its check goes on: its new workers
     * fail to start, and the old ones keep serving (proc/respawn.c). */
    if (absolute_static_dirs(cfg, &static_abs) < 0 && !h->is_present)
        goto out;
    if (cfg->chdir && chdir(cfg->chdir) < 0) {
        gw_log_error("%scannot chdir to '%s': %s", h->is_present ? "reload: " : "", cfg->chdir,
                     strerror(errno));
        if (!h->is_present)
            goto out;
    }
    {
        /* Bad --static-map directories stop the start here, in one line. */
        gw_static_t *st = gw_static_new(cfg, err, sizeof(err));
        gw_static_free(st);
        if (!st && err[0]) {
            gw_log_error("%s%s", h->is_present ? "reload: " : "", err);
            if (!h->is_present)
                goto out;
        }
    }
    if (cfg->check_config) {
        rc = check_app(cfg, ls, nl);
        goto out;
    }
    snprintf(banner, sizeof(banner), "gangway %s (Python %s)", version,
             gw_wsgi_python_version());
    rc = gw_master_run(cfg, ls, nl, banner, ex, h);
out:
    for (size_t i = 0; ls && i < nl; i++)
        gw_listen_close(&ls[i]);
    free(ls);
    gw_tls_free(tls);
    gw_allow_dispose(&allow);
    gw_allow_dispose(&fwd_allow);
    gw_allow_dispose(&proxy_allow);
    for (size_t i = 0; static_abs && i < cfg->static_map.n; i++)
        free(static_abs[i]);
    free(static_abs);
    return rc;
}
