#include "proc/privileges.h"

#include "core/log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One line naming the value and where it came from; exit status 2. */
static int bad(const gw_config_t *cfg, const char *name, size_t i, const char *what,
               const char *value)
{
    gw_config_bad_value(cfg, name, i, value, what);
    return 2;
}

/* What --uid and --gid come to, resolved the same way by
 * gw_privileges_check() and gw_privileges_drop(). */
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

int gw_privileges_check(const gw_config_t *cfg)
{
    ids_t ids;

    return resolve_ids(cfg, &ids);
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
int gw_privileges_drop(const gw_config_t *cfg)
{
    ids_t ids;
    gid_t *groups = NULL;
    int ngroups = 0, rc = -1;
    const char *who = cfg->uid ? cfg->uid : cfg->gid;

    if (!cfg->uid && !cfg->gid)
        return 0;
    if (resolve_ids(cfg, &ids)) /* checked before: only a changed passwd file */
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
