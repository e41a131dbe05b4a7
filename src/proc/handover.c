#include "proc/handover.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SET_BY " (set only by a reloading gangway master)"

/* Decimal digits, at most INT_MAX: the end, or NULL. */
static const char *parse_int(const char *p, int *out)
{
    long long v = 0;
    const char *q = p;

    for (; *q >= '0' && *q <= '9'; q++)
        if ((v = v * 10 + (*q - '0')) > INT_MAX)
            return NULL;
    if (q == p)
        return NULL;
    *out = (int)v;
    return q;
}

static size_t count_items(const char *v)
{
    size_t n = 1;
    for (; *v; v++)
        n += *v == ',';
    return n;
}

/* An open descriptor above 2 of the given type (S_IFSOCK, S_IFREG). */
static int check_fd(const char *name, int fd, mode_t type, char *err, size_t errlen)
{
    struct stat st;

    if (fd <= 2) {
        snprintf(err, errlen, "%s: descriptor %d is standard input, output or error" SET_BY, name,
                 fd);
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: descriptor %d: %s" SET_BY, name, fd, strerror(errno));
        return -EINVAL;
    }
    if ((st.st_mode & S_IFMT) != type) {
        snprintf(err, errlen, "%s: descriptor %d is not a %s" SET_BY, name, fd,
                 type == S_IFSOCK  ? "socket"
                 : type == S_IFIFO ? "pipe"
                                   : "regular file");
        return -EINVAL;
    }
    return 0;
}

static int parse_socks(gw_handover_t *h, const char *v, char *err, size_t errlen)
{
    size_t n = count_items(v);
    const char *p = v;
    int rc;

    if (!*v)
        goto bad;
    if (!(h->socks = calloc(n, sizeof(*h->socks))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        gw_handover_sock_t *s = &h->socks[i];
        if (!(p = parse_int(p, &s->fd)))
            goto bad;
        if (*p == 'u')
            s->proto = GW_PROTO_UWSGI, p++;
        if (*p == 's')
            s->is_activated = true, p++;
        if (*p == 'c')
            s->needs_context = true, p++;
        if (*p != (i + 1 < n ? ',' : '\0'))
            goto bad;
        p++;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = check_fd(GW_ENV_FDS, h->socks[i].fd, S_IFSOCK, err, errlen)) < 0)
            return rc;
    h->nsocks = n;
    return 0;
bad:
    snprintf(err, errlen, "%s='%.64s': want descriptors such as 3,4u,5s" SET_BY, GW_ENV_FDS, v);
    return -EINVAL;
}

static int parse_pids(gw_handover_t *h, const char *v, char *err, size_t errlen)
{
    size_t n = count_items(v);
    const char *p = v;

    if (!*v)
        return 0; /* a master whose workers were all gone */
    if (!(h->old = calloc(n, sizeof(*h->old))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int pid;
        if (!(p = parse_int(p, &pid)) || pid <= 0 || *p != (i + 1 < n ? ',' : '\0'))
            goto bad;
        p++;
        for (size_t j = 0; j < h->nold; j++)
            if (h->old[j] == pid)
                goto bad;
        h->old[h->nold++] = pid;
    }
    return 0;
bad:
    snprintf(err, errlen, "%s='%.64s': want distinct process ids such as 101,102" SET_BY,
             GW_ENV_OLD_WORKERS, v);
    return -EINVAL;
}

static int parse_one_fd(const char *name, const char *v, mode_t type, int *out, char *err,
                        size_t errlen)
{
    const char *end;
    int fd;

    if (!v)
        return 0;
    if (!(end = parse_int(v, &fd)) || *end) {
        snprintf(err, errlen, "%s='%.64s': want a descriptor" SET_BY, name, v);
        return -EINVAL;
    }
    if (check_fd(name, fd, type, err, errlen) < 0)
        return -EINVAL;
    *out = fd;
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Closes every descriptor above 2 but the sorted named ones. */
static void close_unnamed(const int *fds, size_t n)
{
    unsigned lo = 3;

    for (size_t i = 0; i < n; i++) {
        if ((unsigned)fds[i] > lo)
            close_range(lo, (unsigned)fds[i] - 1, 0);
        lo = (unsigned)fds[i] + 1;
    }
    close_range(lo, ~0U, 0);
}

/* A reload's checker: the pipe it answers on, the memfd it writes the
 * configuration to, the running master's --stats socket. Everything else
 * above 2 goes: the master leaves it the binary it executed, open. */
static int take_check(gw_handover_t *h, const char *chk, char *err, size_t errlen)
{
    const char *cfv = getenv(GW_ENV_CHECK_CONFIG), *stv = getenv(GW_ENV_CHECK_STATS);
    int named[3], rc;
    size_t nn = 0;

    if ((rc = parse_one_fd(GW_ENV_CHECK, chk, S_IFIFO, &h->check_fd, err, errlen)) < 0 ||
        (rc = parse_one_fd(GW_ENV_CHECK_CONFIG, cfv, S_IFREG, &h->check_config_fd, err,
                           errlen)) < 0 ||
        (rc = parse_one_fd(GW_ENV_CHECK_STATS, stv, S_IFSOCK, &h->check_stats_fd, err,
                           errlen)) < 0)
        goto fail;
    named[nn++] = h->check_fd;
    if (h->check_config_fd >= 0)
        named[nn++] = h->check_config_fd;
    if (h->check_stats_fd >= 0)
        named[nn++] = h->check_stats_fd;
    qsort(named, nn, sizeof(*named), cmp_int);
    for (size_t i = 1; i < nn; i++) {
        if (named[i] == named[i - 1]) {
            snprintf(err, errlen, "descriptor %d is named twice in the check" SET_BY, named[i]);
            rc = -EINVAL;
            goto fail;
        }
    }
    unsetenv(GW_ENV_CHECK);
    unsetenv(GW_ENV_CHECK_CONFIG);
    unsetenv(GW_ENV_CHECK_STATS);
    close_unnamed(named, nn);
    return 0;
fail:
    h->check_fd = h->check_config_fd = h->check_stats_fd = -1;
    return rc;
}

int gw_handover_take(gw_handover_t *h, char *err, size_t errlen)
{
    const char *fds = getenv(GW_ENV_FDS), *old = getenv(GW_ENV_OLD_WORKERS);
    const char *sbv = getenv(GW_ENV_SCOREBOARD), *stv = getenv(GW_ENV_STATS);
    const char *cfv = getenv(GW_ENV_CONFIG), *chk = getenv(GW_ENV_CHECK);
    int *named = NULL, rc;
    size_t nn = 0;

    memset(h, 0, sizeof(*h));
    h->scoreboard_fd = h->stats_fd = h->config_fd = -1;
    h->check_fd = h->check_config_fd = h->check_stats_fd = -1;
    if (!fds) {
        const char *stray = old   ? GW_ENV_OLD_WORKERS
                            : sbv ? GW_ENV_SCOREBOARD
                            : stv ? GW_ENV_STATS
                                  : GW_ENV_CONFIG;
        if (old || sbv || stv || cfv) {
            snprintf(err, errlen, "%s is set without %s" SET_BY, stray, GW_ENV_FDS);
            return -EINVAL;
        }
        /* a reload's checker: it answers once the check passes */
        if (chk)
            return take_check(h, chk, err, errlen);
        /* Without the answer's pipe the rest means nothing: a wrapper that
         * hides it makes this an ordinary check. */
        unsetenv(GW_ENV_CHECK_CONFIG);
        unsetenv(GW_ENV_CHECK_STATS);
        return 0;
    }
    if (chk) {
        snprintf(err, errlen, "%s is set with %s" SET_BY, GW_ENV_CHECK, GW_ENV_FDS);
        return -EINVAL;
    }
    if ((rc = parse_socks(h, fds, err, errlen)) < 0 ||
        (old && (rc = parse_pids(h, old, err, errlen)) < 0) ||
        (rc = parse_one_fd(GW_ENV_SCOREBOARD, sbv, S_IFREG, &h->scoreboard_fd, err, errlen)) < 0 ||
        (rc = parse_one_fd(GW_ENV_STATS, stv, S_IFSOCK, &h->stats_fd, err, errlen)) < 0 ||
        (rc = parse_one_fd(GW_ENV_CONFIG, cfv, S_IFREG, &h->config_fd, err, errlen)) < 0)
        goto fail;
    if (!(named = calloc(h->nsocks + 3, sizeof(*named)))) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < h->nsocks; i++)
        named[nn++] = h->socks[i].fd;
    if (h->scoreboard_fd >= 0)
        named[nn++] = h->scoreboard_fd;
    if (h->stats_fd >= 0)
        named[nn++] = h->stats_fd;
    if (h->config_fd >= 0)
        named[nn++] = h->config_fd;
    qsort(named, nn, sizeof(*named), cmp_int);
    for (size_t i = 1; i < nn; i++) {
        if (named[i] == named[i - 1]) {
            snprintf(err, errlen, "descriptor %d is named twice in the hand-over" SET_BY, named[i]);
            rc = -EINVAL;
            goto fail;
        }
    }
    unsetenv(GW_ENV_FDS);
    unsetenv(GW_ENV_OLD_WORKERS);
    unsetenv(GW_ENV_SCOREBOARD);
    unsetenv(GW_ENV_STATS);
    unsetenv(GW_ENV_CONFIG);
    close_unnamed(named, nn);
    free(named);
    h->is_present = true;
    return 0;
fail:
    free(named);
    gw_handover_dispose(h);
    h->scoreboard_fd = h->stats_fd = h->config_fd = -1;
    if (rc == -ENOMEM)
        snprintf(err, errlen, "reading the hand-over: %s", strerror(ENOMEM));
    return rc;
}

void gw_handover_answer_check(gw_handover_t *h)
{
    char v[16];
    int n = snprintf(v, sizeof(v), "%d\n", GW_HANDOVER_VERSION);

    if (h->check_fd < 0)
        return;
    /* A few bytes into an empty pipe: they fit. Lost, they only make the
     * master hand over less. */
    if (write(h->check_fd, v, (size_t)n) < 0)
        n = 0;
    close(h->check_fd);
    h->check_fd = -1;
}

void gw_handover_dispose(gw_handover_t *h)
{
    free(h->socks);
    free(h->old);
    h->socks = NULL;
    h->old = NULL;
    h->nsocks = h->nold = 0;
}

/* "NAME=" and room for n items of at most width bytes each. */
static char *start_var(const char *name, size_t n, size_t width, char **p, char **end)
{
    size_t cap = strlen(name) + 1 + n * width + 1;
    char *v = malloc(cap);

    if (!v)
        return NULL;
    *p = v + sprintf(v, "%s=", name);
    **p = '\0';
    *end = v + cap;
    return v;
}

/* An int is at most 10 digits; a socket adds "usc," and a pid ",". */
#define INT_CHARS 10

int gw_handover_vars(const gw_handover_t *h, char *vars[GW_HANDOVER_VARS + 1])
{
    size_t nv = 0;
    char *p, *end;

    memset(vars, 0, (GW_HANDOVER_VARS + 1) * sizeof(*vars));
    if (!(vars[nv] = start_var(GW_ENV_FDS, h->nsocks, INT_CHARS + 4, &p, &end)))
        goto nomem;
    for (size_t i = 0; i < h->nsocks; i++)
        p += snprintf(p, (size_t)(end - p), "%s%d%s%s%s", i ? "," : "", h->socks[i].fd,
                      h->socks[i].proto == GW_PROTO_UWSGI ? "u" : "",
                      h->socks[i].is_activated ? "s" : "",
                      h->socks[i].needs_context ? "c" : "");
    nv++;
    if (!(vars[nv] = start_var(GW_ENV_OLD_WORKERS, h->nold, INT_CHARS + 1, &p, &end)))
        goto nomem;
    for (size_t i = 0; i < h->nold; i++)
        p += snprintf(p, (size_t)(end - p), "%s%d", i ? "," : "", (int)h->old[i]);
    nv++;
    if (h->scoreboard_fd >= 0) {
        if (!(vars[nv] = start_var(GW_ENV_SCOREBOARD, 1, INT_CHARS, &p, &end)))
            goto nomem;
        snprintf(p, (size_t)(end - p), "%d", h->scoreboard_fd);
        nv++;
    }
    if (h->stats_fd >= 0) {
        if (!(vars[nv] = start_var(GW_ENV_STATS, 1, INT_CHARS, &p, &end)))
            goto nomem;
        snprintf(p, (size_t)(end - p), "%d", h->stats_fd);
        nv++;
    }
    if (h->config_fd >= 0) {
        if (!(vars[nv] = start_var(GW_ENV_CONFIG, 1, INT_CHARS, &p, &end)))
            goto nomem;
        snprintf(p, (size_t)(end - p), "%d", h->config_fd);
        nv++;
    }
    return 0;
nomem:
    gw_handover_free_vars(vars);
    return -ENOMEM;
}

void gw_handover_free_vars(char *vars[GW_HANDOVER_VARS + 1])
{
    for (size_t i = 0; i < GW_HANDOVER_VARS + 1; i++) {
        free(vars[i]);
        vars[i] = NULL;
    }
}
