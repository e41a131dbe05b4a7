#include "proc/setup.h"

#include "core/log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gw_setup_env(const gw_config_t *cfg)
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

int gw_setup_parse_mode(const char *s, mode_t *out)
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

int gw_setup_umask(const gw_config_t *cfg)
{
    mode_t mode;

    if (!cfg->umask)
        return 0;
    if (gw_setup_parse_mode(cfg->umask, &mode) < 0) {
        gw_config_bad_value(cfg, "umask", 0, cfg->umask, "an octal mode");
        return -1;
    }
    umask(mode);
    return 0;
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
int gw_setup_own_sockets(const gw_config_t *cfg, gw_listener_t *ls, size_t nl)
{
    mode_t mode = 0666;
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;

    if (cfg->chmod_socket && *cfg->chmod_socket)
        gw_setup_parse_mode(cfg->chmod_socket, &mode); /* checked by gw_start_check() */
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

int gw_setup_write_pidfile(const char *path)
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
