/* gangway: a WSGI application server. */
#include "config/config.h"
#include "proc/handover.h"
#include "proc/listen.h"
#include "core/log.h"
#include "proc/master.h"
#include "proc/signals.h"
#include "serve/static.h"
#include "py/wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <llhttp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

extern char **environ;

/* GW_VERSION and GW_BUILD_OPTIONS ("libpython=static tls=no") come from the
 * Makefile, which owns the version and the build's choices. */

static int apply_env(const gw_config_t *cfg)
{
    for (size_t i = 0; i < cfg->env.n; i++) {
        const char *kv = cfg->env.v[i], *eq = strchr(kv, '=');
        char key[256];
        if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
            gw_config_bad_value(cfg, "env", i, kv, "KEY=VALUE");
            return -1;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        setenv(key, eq + 1, 1);
    }
    return 0;
}

static int parse_mode(const char *s, mode_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 8);
    if (errno || *end || end == s || v > 07777)
        return -1;
    *out = (mode_t)v;
    return 0;
}

/* One line naming the value and where it came from; exit status 2. */
static int bad(const gw_config_t *cfg, const char *name, size_t i, const char *what,
               const char *value)
{
    gw_config_bad_value(cfg, name, i, value, what);
    return 2;
}

/* What --uid and --gid come to, resolved the same way by check_config()
 * and drop_privileges(). */
typedef struct ids {
    bool has_uid;
    uid_t uid;
    gid_t gid;      /* the primary group; valid when has_uid or cfg->gid */
    char user[256]; /* the uid's passwd name, "" when it has none */
    bool no_initgroups;
} ids_t;

/* A user or group id written as a number: decimal digits only, and never
 * -1, which set*id() read as "leave unchanged". */
static bool id_number(const char *s, unsigned long *v)
{
    char *end;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    *v = strtoul(s, &end, 10);
    return !errno && !*end && *v < UINT32_MAX;
}

/* Resolves --uid (a name, or a number with or without a passwd entry) and
 * --gid (a name or a number). The groups always follow the user: its
 * primary group unless --gid names another; a uid without a passwd entry
 * has no group to take, so it needs --gid, or the process would keep root's
 * group 0 (issue 14). 0, or the exit status 2 after one line. */
static int resolve_ids(const gw_config_t *cfg, ids_t *ids)
{
    unsigned long v;

    memset(ids, 0, sizeof(*ids));
    ids->no_initgroups = cfg->no_initgroups;
    if (cfg->gid) {
        struct group *gr;
        if (id_number(cfg->gid, &v))
            ids->gid = (gid_t)v;
        else if ((gr = getgrnam(cfg->gid)))
            ids->gid = gr->gr_gid;
        else
            return bad(cfg, "gid", 0, "no such group", cfg->gid);
    }
    if (cfg->uid) {
        struct passwd *pw;
        if (id_number(cfg->uid, &v))
            pw = getpwuid((uid_t)v);
        else if (!(pw = getpwnam(cfg->uid)))
            return bad(cfg, "uid", 0, "no such user", cfg->uid);
        ids->has_uid = true;
        ids->uid = pw ? pw->pw_uid : (uid_t)v;
        if (pw && strlen(pw->pw_name) < sizeof(ids->user))
            snprintf(ids->user, sizeof(ids->user), "%s", pw->pw_name);
        if (!cfg->gid) {
            if (!pw)
                return bad(cfg, "uid", 0,
                           "no passwd entry, so no group to run as: add --gid (gangway will "
                           "not keep root's group 0)",
                           cfg->uid);
            ids->gid = pw->pw_gid;
        }
    }
    return 0;
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
    for (int l = 0; l < 3; l++) {
        const gw_strlist_t one = {&cfg->stats, cfg->stats ? 1 : 0};
        const gw_strlist_t *list = l == 0 ? &cfg->http : l == 1 ? &cfg->uwsgi : &one;
        const char *name = l == 0 ? "http" : l == 1 ? "uwsgi" : "stats";
        for (size_t i = 0; i < list->n; i++) {
            char a[300];
            const char *addr = list->v[i];
            if (l == 2 && strspn(addr, "0123456789") == strlen(addr)) /* a bare port */
                snprintf(a, sizeof(a), "127.0.0.1:%s", addr), addr = a;
            if (gw_listen_check(addr, err, sizeof(err)) < 0)
                return bad(cfg, name, i, err, list->v[i]);
        }
    }
    if (apply_env(cfg) < 0)
        return 2;
    if (cfg->umask) {
        if (parse_mode(cfg->umask, &mode) < 0)
            return bad(cfg, "umask", 0, "an octal mode", cfg->umask);
        umask(mode);
    }
    if (cfg->chmod_socket && *cfg->chmod_socket && parse_mode(cfg->chmod_socket, &mode) < 0)
        return bad(cfg, "chmod-socket", 0, "an octal mode, or nothing for 666",
                   cfg->chmod_socket);
    if (!is_reexec) {
        ids_t ids;
        int rc = resolve_ids(cfg, &ids);
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
    /* as stats.c reads it: a bare port or ":port" stays on loopback */
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

/* "user[:group]" (names or numbers) into ids; -1 stays unchanged. */
static int parse_owner(const char *s, uid_t *uid, gid_t *gid)
{
    char user[256], *colon, *end;

    snprintf(user, sizeof(user), "%s", s);
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if ((colon = strchr(user, ':'))) {
        *colon++ = '\0';
        struct group *gr = getgrnam(colon);
        unsigned long v = strtoul(colon, &end, 10);
        if (gr)
            *gid = gr->gr_gid;
        else if (*colon && !*end)
            *gid = (gid_t)v;
        else
            return -1;
    }
    if (*user) {
        struct passwd *pw = getpwnam(user);
        unsigned long v = strtoul(user, &end, 10);
        if (pw)
            *uid = pw->pw_uid;
        else if (!*end)
            *uid = (uid_t)v;
        else
            return -1;
    }
    return 0;
}

/* Unix sockets get --chmod-socket and --chown-socket; TCP ones are
 * unaffected. */
static int own_sockets(const gw_config_t *cfg, gw_listener_t *ls, size_t nl)
{
    mode_t mode = 0666;
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;

    if (cfg->chmod_socket && *cfg->chmod_socket)
        parse_mode(cfg->chmod_socket, &mode); /* checked by check_config() */
    if (cfg->chown_socket && parse_owner(cfg->chown_socket, &uid, &gid) < 0) {
        gw_log_error("--chown-socket: unknown user or group in '%s'", cfg->chown_socket);
        return -1;
    }
    for (size_t i = 0; i < nl; i++) {
        if (!ls[i].is_unix)
            continue;
        if (cfg->chmod_socket && chmod(ls[i].path, mode) < 0) {
            gw_log_error("cannot chmod %s: %s", ls[i].path, strerror(errno));
            return -1;
        }
        if (cfg->chown_socket && chown(ls[i].path, uid, gid) < 0) {
            gw_log_error("cannot chown %s to %s: %s", ls[i].path, cfg->chown_socket,
                         strerror(errno));
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

/* The supplementary groups the user gets: those /etc/group gives it, and
 * gid (initgroups' list, as uWSGI, nginx and systemd give a named user even
 * beside an explicit group); none for a uid without a passwd entry or with
 * --no-initgroups. Returns a malloc'd list (n 0: NULL), or -1 with errno. */
static int user_groups(const ids_t *ids, gid_t **out, int *n)
{
    int cap = 32;

    *out = NULL;
    *n = 0;
    if (!ids->user[0] || ids->no_initgroups)
        return 0;
    for (;;) {
        gid_t *g = realloc(*out, (size_t)cap * sizeof(gid_t));
        int got = cap;
        if (!g)
            return -1;
        *out = g;
        if (getgrouplist(ids->user, ids->gid, g, &got) >= 0) {
            *n = got;
            return 0;
        }
        if (got <= cap || cap > 65536) { /* it says how many it needs */
            errno = E2BIG;
            return -1;
        }
        cap = got;
    }
}

/* What the process now runs as is exactly what was asked: real, effective
 * and saved ids, and the group list, so that a set*id() that half worked
 * never leaves root's group 0 (or root) behind. */
static bool ids_are(const ids_t *ids, bool set_uid, const gid_t *want, int nwant)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg, *have;
    int n = getgroups(0, NULL);
    bool is_same;

    if (getresgid(&rg, &eg, &sg) < 0 || rg != ids->gid || eg != ids->gid || sg != ids->gid)
        return false;
    if (n != nwant)
        return false;
    if (!(have = malloc((size_t)(n ? n : 1) * sizeof(gid_t))) || getgroups(n, have) != n) {
        free(have);
        return false;
    }
    is_same = true;
    for (int i = 0; i < n && is_same; i++) {
        bool found = false;
        for (int k = 0; k < nwant && !found; k++)
            found = have[i] == want[k];
        is_same = found;
    }
    free(have);
    if (!is_same)
        return false;
    if (!set_uid)
        return true;
    if (getresuid(&ru, &eu, &su) < 0 || ru != ids->uid || eu != ids->uid || su != ids->uid)
        return false;
    /* root given up for good: it cannot be taken back */
    return ids->uid == 0 || (setuid(0) < 0 && seteuid(0) < 0);
}

/* After binding (ports below 1024 need root), before the app is imported.
 * --uid sets the groups too: the user's primary group (or --gid) and its
 * supplementary groups (unless --no-initgroups), whether --uid names the
 * user or gives its number; --gid alone sets the group and clears the
 * supplementary ones. */
static int drop_privileges(const gw_config_t *cfg)
{
    ids_t ids;
    gid_t *groups = NULL;
    int ngroups = 0, rc = -1;
    const char *who = cfg->uid ? cfg->uid : cfg->gid;

    if (!cfg->uid && !cfg->gid)
        return 0;
    if (resolve_ids(cfg, &ids)) /* checked by check_config(): only a changed passwd file */
        return -1;
    if (geteuid() != 0) {
        /* Nothing to give up: fine when already the user and group asked
         * for, refused otherwise rather than run as someone else. */
        if ((!ids.has_uid || ids.uid == geteuid()) && ids.gid == getegid())
            return 0;
        gw_log_error("cannot switch to %s '%s': not running as root", cfg->uid ? "user" : "group",
                     who);
        return -1;
    }
    if (user_groups(&ids, &groups, &ngroups) < 0) {
        gw_log_error("cannot read the groups of '%s': %s", ids.user, strerror(errno));
        return -1;
    }
    /* Groups first, then the gid, then the uid: each needs root. */
    if (setgroups((size_t)ngroups, groups) < 0 || setgid(ids.gid) < 0) {
        gw_log_error("cannot switch to the groups of '%s': %s", who, strerror(errno));
        goto out;
    }
    if (ids.has_uid && setuid(ids.uid) < 0) {
        gw_log_error("cannot switch to user '%s': %s", cfg->uid, strerror(errno));
        goto out;
    }
    if (!ids_are(&ids, ids.has_uid, groups, ngroups)) {
        gw_log_error("after switching to %s '%s' the process still holds other ids; not starting",
                     cfg->uid ? "user" : "group", who);
        goto out;
    }
    rc = 0;
out:
    free(groups);
    return rc;
}

/* systemd socket activation: with no --http / --uwsgi, every socket handed
 * in serves (HTTP, or uwsgi when its FileDescriptorName= is "uwsgi"); with
 * addresses given, each takes the handed-in socket bound to it and binds
 * itself when there is none. Returns the number of sockets taken, 0 when
 * there is no activation, -1 after logging. */
static int adopt_activated(const char *const *addrs, const bool *is_uwsgi, size_t naddrs,
                           int backlog, gw_listener_t **out, size_t *nout)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names), rc = -1;
    bool *used = NULL;

    if (n <= 0) {
        if (n < 0)
            gw_log_error("LISTEN_FDS: %s", strerror(-n));
        return n < 0 ? -1 : 0;
    }
    *nout = naddrs ? naddrs : (size_t)n;
    if (!(*out = calloc(*nout, sizeof(**out))) || !(used = calloc((size_t)n, sizeof(*used))))
        goto out;
    for (size_t i = 0; i < *nout; i++)
        (*out)[i].fd = -1;
    for (size_t i = 0; i < *nout; i++) {
        int fd = -1;
        bool uw;
        if (naddrs) {
            for (int j = 0; j < n && fd < 0; j++)
                if (!used[j] && gw_listen_is_bound_to(SD_LISTEN_FDS_START + j, addrs[i]))
                    fd = j;
            if (fd < 0)
                continue; /* bound by the caller */
            uw = is_uwsgi[i];
        } else {
            fd = (int)i;
            uw = names && names[i] && strcmp(names[i], "uwsgi") == 0;
        }
        used[fd] = true;
        if (gw_listen_adopt(&(*out)[i], SD_LISTEN_FDS_START + fd, backlog) < 0) {
            gw_log_error("LISTEN_FDS: socket %d is not a listening socket", SD_LISTEN_FDS_START + fd);
            goto out;
        }
        if (uw)
            gw_listen_set_proto(&(*out)[i], GW_PROTO_UWSGI);
        (*out)[i].is_activated = true;
    }
    for (int j = 0; j < n; j++) {
        if (!used[j]) {
            gw_log_error("LISTEN_FDS: socket %d matches no --http or --uwsgi address: closed",
                         SD_LISTEN_FDS_START + j);
            close(SD_LISTEN_FDS_START + j);
        }
    }
    rc = n;
out:
    for (int j = 0; names && j < n; j++)
        free(names[j]);
    free(names);
    free(used);
    return rc;
}

/* True for "host:0" / ":0": any port will do (the kernel picks one). */
static bool is_any_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');

    if (strncmp(addr, "unix:", 5) == 0 || addr[0] == '/' || addr[0] == '.' || !colon)
        return false;
    return colon[1] && strspn(colon + 1, "0") == strlen(colon + 1);
}

static int bind_one(const gw_config_t *cfg, gw_listener_t *l, const char *addr, bool is_uwsgi)
{
    char err[256];
    int (*open_fn)(gw_listener_t *, const char *, int, char *, size_t) =
        cfg->reuse_port ? gw_listen_open_reuse : gw_listen_open;

    if (open_fn(l, addr, (int)cfg->listen_backlog, err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        return -1;
    }
    if (is_uwsgi)
        gw_listen_set_proto(l, GW_PROTO_UWSGI);
    return 0;
}

/* A master re-executed by a reload takes the previous image's sockets
 * instead of binding again: the address is never unbound, so no connection
 * is refused. The new configuration decides what serves: each address takes
 * the handed-over socket bound to it (port 0: the next one on that host, in
 * order); an address none is bound to is bound now; a socket no address wants
 * is closed. A new address that cannot be bound is logged and left out, and
 * if nothing at all could be opened the previous sockets go on: a reload
 * never takes the service down. With no --http / --uwsgi, the sockets
 * systemd handed in serve, as at start. */
static int adopt_handed_over(const gw_config_t *cfg, const gw_handover_t *h,
                             const char *const *addrs, const bool *is_uwsgi, size_t naddrs,
                             gw_listener_t **out, size_t *nout)
{
    gw_listener_t *old = calloc(h->nsocks ? h->nsocks : 1, sizeof(*old));
    bool *used = calloc(h->nsocks ? h->nsocks : 1, sizeof(*used));
    long *match = calloc(naddrs ? naddrs : 1, sizeof(*match));
    size_t n = 0, activated = 0;
    int rc = -1;

    if (!old || !used || !match || !(*out = calloc(naddrs + h->nsocks, sizeof(**out))))
        goto out;
    for (size_t j = 0; j < h->nsocks; j++) {
        old[j].fd = -1;
        if ((rc = gw_listen_adopt(&old[j], h->socks[j].fd, (int)cfg->listen_backlog)) < 0) {
            gw_log_error("reload: handed-over socket %d %s: closed", h->socks[j].fd,
                         rc == -EINVAL ? "no longer listens" : "is not a stream socket");
            close(h->socks[j].fd);
            used[j] = true;
            continue;
        }
        gw_listen_set_proto(&old[j], h->socks[j].proto);
        old[j].is_activated = h->socks[j].is_activated;
        activated += old[j].is_activated;
    }
    rc = -1;
    if (!cfg->http.n && !cfg->uwsgi.n && activated) {
        for (size_t j = 0; j < h->nsocks; j++)
            if (!used[j] && old[j].is_activated)
                (*out)[n++] = old[j], used[j] = true;
    } else {
        /* Exact addresses first, so that a "host:0" takes no socket that an
         * address with its port spelt out is bound to. */
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < naddrs; i++) {
                if (pass != is_any_port(addrs[i]))
                    continue;
                match[i] = -1;
                for (size_t j = 0; j < h->nsocks && match[i] < 0; j++)
                    if (!used[j] && gw_listen_matches(&old[j], addrs[i]))
                        match[i] = (long)j, used[j] = true;
            }
        }
        for (size_t i = 0; i < naddrs; i++) {
            gw_listener_t *l = &(*out)[n];
            if (match[i] >= 0) {
                *l = old[match[i]];
                gw_listen_set_proto(l, is_uwsgi[i] ? GW_PROTO_UWSGI : GW_PROTO_HTTP);
            } else if (bind_one(cfg, l, addrs[i], is_uwsgi[i]) < 0 ||
                       own_sockets(cfg, l, 1) < 0) {
                gw_log_error("reload: serving without %s until a restart", addrs[i]);
                gw_listen_close(l);
                continue;
            }
            n++;
        }
    }
    if (!n) {
        gw_log_error("reload: none of the configured addresses could be opened; the previous "
                     "sockets go on serving");
        for (size_t j = 0; j < h->nsocks; j++)
            if (old[j].fd >= 0)
                (*out)[n++] = old[j], used[j] = true;
    }
    for (size_t j = 0; j < h->nsocks; j++) {
        if (used[j])
            continue;
        gw_log_error("reload: %s is no longer configured: closed", old[j].url);
        /* --vacuum removes the files of our unix sockets when they close
         * for good, as at a stop (the old workers' copies go with them) */
        if (cfg->vacuum && old[j].is_unix && !old[j].is_activated && old[j].path[0] &&
            unlink(old[j].path) < 0 && errno != ENOENT)
            gw_log_error("vacuum: cannot remove %s: %s", old[j].path, strerror(errno));
        gw_listen_close(&old[j]);
    }
    /* A socket's reuse-port role comes from the socket: turning the option
     * off is done here (the placeholder starts listening, shared), turning
     * it on needs sockets bound with it from the start. */
    for (size_t i = 0; i < n; i++) {
        gw_listener_t *l = &(*out)[i];
        int e;
        if (l->is_reuse_port && !cfg->reuse_port && (e = gw_listen_share(l)) < 0)
            gw_log_error("reload: %s keeps --reuse-port: %s", l->url, strerror(-e));
        else if (!l->is_reuse_port && cfg->reuse_port && !l->is_unix)
            gw_log_error("reload: --reuse-port takes effect on %s at a restart; its socket "
                         "stays shared until then", l->url);
    }
    *nout = n;
    rc = 0;
out:
    if (rc < 0) {
        gw_log_error("reload: cannot take the listening sockets over: %s", strerror(ENOMEM));
        free(*out);
        *out = NULL;
    }
    free(old);
    free(used);
    free(match);
    return rc;
}

/* The listening sockets, from the strongest source: a re-executed master's
 * hand-over, systemd's, or --http / --uwsgi bound here (127.0.0.1:8000 when
 * nothing is given). */
static int open_listeners(const gw_config_t *cfg, const gw_handover_t *h, gw_listener_t **ls,
                          size_t *nl)
{
    static const char *default_http = "127.0.0.1:8000";
    size_t naddrs = cfg->http.n + cfg->uwsgi.n;
    const char **addrs;
    bool *is_uwsgi;
    int rc = -1, act = 0;

    if (!(addrs = calloc(naddrs + 1, sizeof(*addrs))) ||
        !(is_uwsgi = calloc(naddrs + 1, sizeof(*is_uwsgi)))) {
        free(addrs);
        return -1;
    }
    for (size_t i = 0; i < naddrs; i++) {
        is_uwsgi[i] = i >= cfg->http.n;
        addrs[i] = is_uwsgi[i] ? cfg->uwsgi.v[i - cfg->http.n] : cfg->http.v[i];
    }
    if (h->is_present) {
        if (!naddrs)
            addrs[naddrs++] = default_http;
        rc = adopt_handed_over(cfg, h, addrs, is_uwsgi, naddrs, ls, nl);
        goto out;
    }
    if (!cfg->check_config &&
        (act = adopt_activated(addrs, is_uwsgi, naddrs, (int)cfg->listen_backlog, ls, nl)) < 0)
        goto out;
    if (!act) {
        if (!naddrs)
            addrs[naddrs++] = default_http;
        if (!(*ls = calloc(naddrs, sizeof(**ls))))
            goto out;
        *nl = naddrs;
        for (size_t i = 0; i < naddrs; i++)
            (*ls)[i].fd = -1;
    }
    for (size_t i = 0; i < *nl && !cfg->check_config; i++) {
        if ((*ls)[i].fd >= 0)
            continue; /* handed in by systemd */
        if (bind_one(cfg, &(*ls)[i], addrs[i], is_uwsgi[i]) < 0)
            goto out;
    }
    rc = 0;
out:
    free(addrs);
    free(is_uwsgi);
    return rc;
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

static int serve(gw_config_t *cfg, const gw_master_exec_t *ex, gw_handover_t *h)
{
    static const char *default_allow[] = {"127.0.0.0/8", "::1"};
    gw_listener_t *ls = NULL;
    size_t nl = 0;
    gw_allow_t allow = {0};
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
    if (open_listeners(cfg, h, &ls, &nl) < 0)
        goto out;
    /* A re-executed master's pidfile, sockets and privileges are as its
     * first image left them. */
    if (!h->is_present && !cfg->check_config) {
        if (own_sockets(cfg, ls, nl) < 0)
            goto out;
        if (cfg->pidfile && write_pidfile(cfg->pidfile) < 0)
            goto out;
        if (drop_privileges(cfg) < 0)
            goto out;
    }
    for (size_t i = 0; i < nl; i++) {
        gw_listen_tune(&ls[i], cfg->defer_accept);
        if (ls[i].proto == GW_PROTO_UWSGI)
            ls[i].allow = &allow;
    }
    /* Directories on the command line mean where the command was run, not
     * where --chdir goes: make them absolute first. A re-executed master
     * that finds a directory gone since its check goes on: its new workers
     * fail to start, and the old ones keep serving (on_worker_exit()). */
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
    snprintf(banner, sizeof(banner), "gangway %s (Python %s)", GW_VERSION,
             gw_wsgi_python_version());
    rc = gw_master_run(cfg, ls, nl, banner, ex, h);
out:
    for (size_t i = 0; ls && i < nl; i++)
        gw_listen_close(&ls[i]);
    free(ls);
    gw_allow_dispose(&allow);
    for (size_t i = 0; static_abs && i < cfg->static_map.n; i++)
        free(static_abs[i]);
    free(static_abs);
    return rc;
}

/* The binary a reload runs: the path gangway was started from (argv[0], or
 * found on PATH as the shell found it) when that is the file running now,
 * else what /proc/self/exe names now. Read at start, not at the reload: once
 * a package upgrade has replaced the file, /proc/self/exe is the old,
 * deleted inode. A symlink stays a symlink, so a new target is followed. */
static char *find_binary(const char *argv0, char *const *envp)
{
    struct stat self, st;
    char buf[PATH_MAX], *deleted;
    const char *path = NULL;
    ssize_t n;

    if (stat("/proc/self/exe", &self) == 0 && argv0 && *argv0) {
        if (strchr(argv0, '/')) {
            if (stat(argv0, &st) == 0 && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
                return strdup(argv0);
        } else {
            for (size_t i = 0; envp[i] && !path; i++)
                if (strncmp(envp[i], "PATH=", 5) == 0)
                    path = envp[i] + 5;
            for (const char *p = path; p && *p;) {
                size_t dl = strcspn(p, ":");
                if (dl && dl < sizeof(buf) &&
                    snprintf(buf, sizeof(buf), "%.*s/%s", (int)dl, p, argv0) < (int)sizeof(buf) &&
                    stat(buf, &st) == 0 && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
                    return strdup(buf);
                p += dl + (p[dl] == ':');
            }
        }
    }
    if ((n = readlink("/proc/self/exe", buf, sizeof(buf) - 1)) < 0)
        return strdup("/proc/self/exe");
    buf[n] = '\0';
    if ((deleted = strstr(buf, " (deleted)")) && !deleted[10])
        *deleted = '\0';
    return strdup(buf);
}

/* A copy of the environment gangway starts with, for the reload's exec:
 * systemd's LISTEN_* variables were for this image only. */
static char **copy_environ(void)
{
    static const char *const skip[] = {"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="};
    size_t n = 0, k = 0;
    char **v;

    while (environ[n])
        n++;
    if (!(v = calloc(n + 1, sizeof(*v))))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool is_skipped = false;
        for (size_t j = 0; j < sizeof(skip) / sizeof(skip[0]); j++)
            is_skipped |= strncmp(environ[i], skip[j], strlen(skip[j])) == 0;
        if (!is_skipped && !(v[k++] = strdup(environ[i]))) {
            for (size_t j = 0; j < k; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void free_environ(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* The configuration: the one a reload's check validated when the previous
 * image handed it over (files edited since then change nothing), else read
 * from the ini files, the environment and the command line. */
static int load_config(gw_config_t *cfg, int argc, char **argv, gw_handover_t *h)
{
    int rc;

    if (h->config_fd < 0)
        return gw_config_load(cfg, argc, argv, environ);
    rc = gw_config_load_saved(cfg, h->config_fd);
    close(h->config_fd);
    h->config_fd = -1;
    if (rc == 0)
        return 0;
    /* Only a damaged hand-over gets here: the files are the next best. */
    gw_log_error("reload: the configuration handed over cannot be read (%s): reading it again",
                 strerror(-rc));
    gw_config_dispose(cfg);
    return gw_config_load(cfg, argc, argv, environ);
}

/* The mask gangway started with, before hold_signals() changed it. */
static sigset_t start_mask;

/* Before anything of ours runs: a signal the master acts on, sent right
 * after the start (`kill -HUP` right after `gangway ... &`), waits for the
 * master's handlers instead of killing (SIGHUP, SIGUSR1) or stopping
 * (SIGTTIN, SIGTTOU) the process. A .preinit_array entry runs before every
 * constructor, the libraries' included, once the dynamic linker has loaded
 * them: only the exec itself and the linker's work come before it. What
 * does not run a master puts the mask back as it came. */
static void hold_signals(void)
{
    gw_master_hold_signals(&start_mask);
}
__attribute__((section(".preinit_array"), used)) static void (*const hold_signals_early)(void) =
    hold_signals;

int main(int argc, char **argv)
{
    gw_config_t cfg;
    gw_handover_t h;
    gw_master_exec_t ex = {.argv = argv, .cwd_fd = -1};
    char err[256];
    int rc;

    /* First of all: a previous image's hand-over (a reload) is checked and taken out
     * of the environment before anything reads it. */
    if (gw_handover_take(&h, err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        return 1;
    }
    ex.umask = umask(022);
    umask(ex.umask);
    if (!(ex.envp = copy_environ()) || !(ex.path = find_binary(argv[0], ex.envp))) {
        gw_log_error("cannot start: %s", strerror(ENOMEM));
        rc = 1;
        goto out;
    }
    ex.cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    rc = load_config(&cfg, argc, argv, &h);
    if (rc < 0 || cfg.show_help || cfg.print_man || cfg.print_config || cfg.show_version ||
        cfg.check_config)
        gw_signals_restore(&start_mask);
    if (rc < 0) {
        rc = 2;
    } else if (cfg.show_help) {
        gw_config_print_help(stdout);
        rc = 0;
    } else if (cfg.print_man) {
        gw_config_print_man(stdout, GW_VERSION);
        rc = 0;
    } else if (cfg.print_config) {
        gw_config_print(&cfg, stdout);
        rc = 0;
    } else if (cfg.show_version) {
        printf("gangway %s\nPython %s, llhttp %d.%d.%d\nbuild: %s\n", GW_VERSION,
               gw_wsgi_python_version(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
               LLHTTP_VERSION_PATCH, GW_BUILD_OPTIONS);
        rc = 0;
    } else if (!(rc = check_config(&cfg, h.is_present)) &&
               !(rc = cfg.check_config ? check_more(&cfg, &h) : 0)) {
        if (cfg.show_config)
            gw_config_print(&cfg, stderr);
        rc = serve(&cfg, &ex, &h);
        /* a reload's checker tells the master which hand-over it takes */
        if (cfg.check_config && rc == 0)
            gw_handover_answer_check(&h);
    }
    gw_config_dispose(&cfg);
out:
    gw_handover_dispose(&h);
    if (ex.cwd_fd >= 0)
        close(ex.cwd_fd);
    free((char *)ex.path);
    free_environ(ex.envp);
    return rc;
}
