/* A configuration as a reload's check hands it to the new image
 * (gw_config_save(), gw_config_load_saved()). */
#include "config/config.h"
#include "config/config_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The saved form: a header line, then one record per assignment, each field
 * ended by a NUL (no value can hold one: they were C strings):
 *
 *     SRC '\0' WHERE '\0' LINE '\0' NAME '\0' VALUE '\0'
 *
 * SRC is the source's digit (enum src), WHERE the ini file or the variable
 * ("" for the command line), LINE the ini line in decimal. */
#define SAVED_MAGIC "gangway-config 1\n"
#define SAVED_MAX (64u << 20) /* far above any real configuration */

/* Options that do something else than configure a server: a saved
 * configuration is one the new image serves with. */
static bool is_not_saved(const opt_t *o)
{
    return gw__options_is_meta(o) || o->off == OFF(check_config);
}

static int write_all_fd(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gw_config_save(const gw_config_t *c, int fd)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;

    if (!f)
        return -ENOMEM;
    fputs(SAVED_MAGIC, f);
    for (size_t i = 0; i < c->_priv->applied.n; i++) {
        const assign_t *a = &c->_priv->applied.v[i];
        if (is_not_saved(a->o))
            continue;
        fprintf(f, "%u%c%s%c%u%c%s%c%s%c", (unsigned)a->at.src, 0,
                a->at.where ? a->at.where : "", 0, a->at.line, 0, a->o->name, 0, a->val, 0);
    }
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    rc = len > SAVED_MAX ? -EFBIG : lseek(fd, 0, SEEK_SET) < 0 ? -errno : write_all_fd(fd, buf, len);
    free(buf);
    return rc;
}

/* The next NUL-ended field at *p (before end), or NULL. */
static const char *next_field(const char **p, const char *end)
{
    const char *f = *p, *nul = memchr(f, '\0', (size_t)(end - f));

    if (!nul)
        return NULL;
    *p = nul + 1;
    return f;
}

/* The whole of fd, from its start, NUL-terminated, into *out. */
static int read_saved(int fd, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);

    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t r;
        if (n + 1 >= cap) {
            char *nb = cap >= SAVED_MAX ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return cap >= SAVED_MAX ? -EFBIG : -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        r = pread(fd, buf + n, cap - n - 1, (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int gw_config_load_saved(gw_config_t *c, int fd)
{
    const char *p, *end;
    size_t len = 0;
    int rc;

    gw_config_init(c);
    if (!(c->_priv = gw__config_priv_new()))
        return -ENOMEM;
    gw_ini_init(&c->_priv->ini, NULL, NULL);
    if ((rc = read_saved(fd, &c->_priv->saved, &len)) < 0)
        return rc;
    p = c->_priv->saved;
    end = p + len;
    if (len < strlen(SAVED_MAGIC) || memcmp(p, SAVED_MAGIC, strlen(SAVED_MAGIC)) != 0)
        goto bad;
    p += strlen(SAVED_MAGIC);
    while (p < end) {
        const char *src = next_field(&p, end), *where = src ? next_field(&p, end) : NULL;
        const char *line = where ? next_field(&p, end) : NULL;
        const char *name = line ? next_field(&p, end) : NULL;
        const char *val = name ? next_field(&p, end) : NULL;
        const opt_t *o = name ? gw__options_find_name(name) : NULL;
        char *e;
        unsigned long ln;
        assign_t a;

        if (!val || !o || strlen(src) != 1 || src[0] < '0' + SRC_INI || src[0] > '0' + SRC_CLI)
            goto bad;
        errno = 0;
        ln = strtoul(line, &e, 10);
        if (errno || *e || ln > UINT_MAX)
            goto bad;
        a = (assign_t){o, val, {(uint8_t)(src[0] - '0'), *where ? where : NULL, (unsigned)ln}};
        if ((rc = gw__config_apply_kept(c, &a)) < 0)
            return rc;
    }
    return gw__config_finish_load(c, NULL);
bad:
    fprintf(stderr, "gangway: the configuration handed over by the reload is damaged\n");
    return -EINVAL;
}
