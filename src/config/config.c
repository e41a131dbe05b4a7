/* Loading a configuration: every source (argv, GANGWAY_* variables, ini
 * files) into assignments, each value parsed and applied with its origin,
 * weakest source first; the table is in options.c, the saved form in
 * saved.c, the printers in print.c. */
#include "config/config.h"
#include "config/config_priv.h"

#include "config/ini.h"
#include "config/options.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A load's private part, with an origin for every option. NULL when out
 * of memory. */
struct gw_config_priv *gw__config_priv_new(void)
{
    struct gw_config_priv *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->origin = calloc(gw__options_n, sizeof(*p->origin));
    p->list_origin = calloc(gw__options_n, sizeof(*p->list_origin));
    if (!p->origin || !p->list_origin) {
        free(p->origin);
        free(p->list_origin);
        free(p);
        return NULL;
    }
    return p;
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *nv = realloc(*v, ncap * size);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    *cap = ncap;
    return 0;
}

static char *keep(struct gw_config_priv *p, char *s)
{
    if (!s || grow((void **)&p->strs, &p->capstrs, p->nstrs, sizeof(char *)) < 0) {
        free(s);
        return NULL;
    }
    return p->strs[p->nstrs++] = s;
}

/* A warning that --strict turns into an error; printed once all sources are
 * read, since `strict` may come from any of them. */
static void defer(struct gw_config_priv *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void defer(struct gw_config_priv *p, const char *fmt, ...)
{
    char *msg;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!keep(p, msg) ||
        grow((void **)&p->warnings, &p->capwarnings, p->nwarnings, sizeof(char *)) < 0)
        return;
    p->warnings[p->nwarnings++] = msg;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on", ""}; /* "": a bare ini key */
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 5; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (i < 4 && strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* "64k", "1m", "1g" (powers of 1024); seconds accept "30s", "2m", "1h", "1d".
 * -EINVAL for what is no number, -ERANGE past max (the suffix applied). */
static int parse_num(const char *v, enum opt_type t, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long n;
    uint64_t mul = 1;
    bool is_huge;

    if (*v < '0' || *v > '9')
        return -EINVAL;
    errno = 0;
    n = strtoull(v, &end, 10);
    is_huge = errno == ERANGE; /* judged once the unit is known to be valid */
    if (errno && !is_huge)
        return -EINVAL;
    if (*end) {
        char u = (char)(*end | 0x20);
        if (end[1] && !(t == T_SIZE && (end[1] | 0x20) == 'b' && !end[2]))
            return -EINVAL;
        if (t == T_SIZE)
            mul = u == 'k' ? 1ULL << 10 : u == 'm' ? 1ULL << 20 : u == 'g' ? 1ULL << 30 : 0;
        else
            mul = u == 's' ? 1 : u == 'm' ? 60 : u == 'h' ? 3600 : u == 'd' ? 86400 : 0;
        if (!mul)
            return -EINVAL;
    }
    if (is_huge || n > max / mul)
        return -ERANGE;
    *out = n * mul;
    return 0;
}

static int set_value(gw_config_t *c, const opt_t *o, const char *v)
{
    char *field = (char *)c + o->off;

    switch (o->type) {
    case T_BOOL:
        return parse_bool(v, (bool *)field);
    case T_SIZE:
    case T_SECONDS: {
        uint64_t n;
        int rc = parse_num(v, o->type, gw__options_max(o), &n);
        if (rc < 0)
            return rc;
        if (n < gw__options_min(o))
            return -EDOM;
        *(uint64_t *)field = n;
        return 0;
    }
    case T_STR:
        *(const char **)field = v;
        return 0;
    case T_WORKERS:
        if (strcmp(v, "auto") == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            *(uint64_t *)field = n > 0 ? (uint64_t)n : 1;
            return 0;
        }
        if (parse_num(v, T_SIZE, UINT64_MAX, (uint64_t *)field) < 0 || *(uint64_t *)field < 1 ||
            *(uint64_t *)field > GW_MAX_WORKERS)
            return -EINVAL;
        return 0;
    case T_LIST: {
        gw_strlist_t *l = (gw_strlist_t *)field;
        const char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        nv[l->n++] = v;
        l->v = nv;
        return 0;
    }
    }
    return -EINVAL;
}

void gw__config_print_origin(FILE *out, const origin_t *at)
{
    switch (at->src) {
    case SRC_INI:
        fprintf(out, "%s:%u", at->where, at->line);
        break;
    case SRC_ENV:
        fprintf(out, "%s", at->where);
        break;
    case SRC_CLI:
        fprintf(out, "command line");
        break;
    default:
        fprintf(out, "default");
    }
}

static void print_bad(const opt_t *o, const origin_t *at, const char *val, const char *why)
{
    fprintf(stderr, "gangway: ");
    if (at->src == SRC_CLI) {
        fprintf(stderr, "invalid value '%s' for --%s", val, o->name);
    } else {
        gw__config_print_origin(stderr, at);
        fprintf(stderr, ": invalid value '%s' for %s", val, o->name);
    }
    if (why)
        fprintf(stderr, " (%s)", why);
    fputc('\n', stderr);
}

/* Applies one value. A list given by a source replaces what a weaker source
 * gave (the command line's --http replaces the ini's http-socket lines);
 * repeated in one source, it accumulates. */
static int apply(gw_config_t *c, const assign_t *a)
{
    size_t idx = (size_t)(a->o - gw__options);
    origin_t *at = &c->_priv->origin[idx];
    int rc;

    if (a->o->type == T_LIST && at->src != a->at.src)
        ((gw_strlist_t *)((char *)c + a->o->off))->n = 0;
    if (a->o->type == T_LIST) {
        size_t n = ((gw_strlist_t *)((char *)c + a->o->off))->n;
        origin_t *v = realloc(c->_priv->list_origin[idx], (n + 1) * sizeof(*v));
        if (!v)
            return -ENOMEM;
        v[n] = a->at;
        c->_priv->list_origin[idx] = v;
    }
    if ((rc = set_value(c, a->o, a->val)) < 0) {
        char why[64];
        uint64_t lim = rc == -ERANGE ? gw__options_max(a->o) : gw__options_min(a->o);
        const char *unit = a->o->type != T_SECONDS ? "" : lim == 1 ? " second" : " seconds";
        snprintf(why, sizeof(why), "at %s %llu%s", rc == -ERANGE ? "most" : "least",
                 (unsigned long long)lim, unit);
        print_bad(a->o, &a->at, a->val, rc == -ERANGE || rc == -EDOM ? why : NULL);
        return rc == -ERANGE || rc == -EDOM ? -EINVAL : rc;
    }
    *at = a->at;
    return 0;
}

static int push(assigns_t *as, const opt_t *o, const char *val, origin_t at)
{
    if (grow((void **)&as->v, &as->cap, as->n, sizeof(assign_t)) < 0)
        return -ENOMEM;
    as->v[as->n++] = (assign_t){o, val, at};
    return 0;
}

void gw_config_init(gw_config_t *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < gw__options_n; i++)
        if (gw__options[i].def && gw__options[i].type != T_STR && gw__options[i].type != T_LIST)
            set_value(c, &gw__options[i], gw__options[i].def);
}

static size_t suffix_is(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* "site.ini" or "site.ini:section": an ini file, not a module. */
static bool is_ini_arg(const char *s)
{
    const char *colon = strrchr(s, ':');
    char head[4096];

    if (suffix_is(s, ".ini"))
        return true;
    if (!colon || strchr(colon, '/') || (size_t)(colon - s) >= sizeof(head))
        return false;
    snprintf(head, sizeof(head), "%.*s", (int)(colon - s), s);
    return suffix_is(head, ".ini");
}

/* argv into assignments, without applying them: the ini files it names are
 * read first, and its values win over theirs. */
static int from_argv(assigns_t *as, int argc, char **argv)
{
    static const origin_t cli = {SRC_CLI, NULL, 0};
    bool only_positional = false;
    const char *module = NULL;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL, *eq = NULL;
        const opt_t *o;

        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (is_ini_arg(arg)) {
                if (push(as, gw__options_find_name("ini"), arg, cli) < 0)
                    return -ENOMEM;
                continue;
            }
            if (module) {
                fprintf(stderr, "gangway: unexpected argument '%s' (the app is already '%s')\n",
                        arg, module);
                return -EINVAL;
            }
            module = arg;
            if (push(as, gw__options_find_name("module"), arg, cli) < 0)
                return -ENOMEM;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (arg[1] == '-') {
            eq = strchr(arg + 2, '=');
            o = gw__options_find(arg + 2, eq ? (size_t)(eq - arg - 2) : strlen(arg + 2));
            if (eq)
                val = eq + 1;
        } else {
            o = arg[2] ? NULL : gw__options_find_short(arg[1]);
        }
        if (!o) {
            char name[64], best[64];
            snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - arg - 2) : 63, arg + 2);
            if (arg[1] == '-' && gw__options_closest(name, best, sizeof(best)))
                fprintf(stderr, "gangway: unknown option '%s' (did you mean --%s?)\n", arg, best);
            else
                fprintf(stderr, "gangway: unknown option '%s' (see --help)\n", arg);
            return -EINVAL;
        }
        if (o->type == T_BOOL && !val) {
            val = "true";
        } else if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "gangway: option --%s needs a value\n", o->name);
                return -EINVAL;
            }
            val = argv[++i];
        }
        if (push(as, o, val, cli) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* GANGWAY_MAX_REQUESTS=100 is --max-requests 100. GANGWAY__* names are
 * gangway's own hand-over between processes, not options. */
static int from_env(gw_config_t *c, assigns_t *as, char **envp)
{
    for (char **e = envp; e && *e; e++) {
        const char *kv = *e, *eq = strchr(kv, '=');
        char name[64], best[64];
        const opt_t *o;
        size_t n;

        if (strncmp(kv, "GANGWAY_", 8) != 0 || !eq || kv[8] == '_')
            continue;
        n = (size_t)(eq - kv - 8);
        if (n >= sizeof(name))
            n = sizeof(name) - 1;
        for (size_t i = 0; i < n; i++)
            name[i] = kv[8 + i] == '_' ? '-' : (char)(kv[8 + i] | 0x20);
        name[n] = '\0';
        char *var = keep(c->_priv, strndup(kv, (size_t)(eq - kv)));
        char *val = keep(c->_priv, strdup(eq + 1));
        if (!var || !val)
            return -ENOMEM;
        if (!(o = gw__options_find_name(name))) {
            if (gw__options_closest(name, best, sizeof(best))) {
                for (char *p = best; *p; p++)
                    *p = *p == '-' ? '_' : (char)(*p & ~0x20);
                defer(c->_priv, "%s is not an option (did you mean GANGWAY_%s?)", var, best);
            } else {
                defer(c->_priv, "%s is not an option (see --help)", var);
            }
            continue;
        }
        if (push(as, o, val, (origin_t){SRC_ENV, var, 0}) < 0)
            return -ENOMEM;
    }
    return 0;
}

static void on_ini_warning(void *user, const char *file, unsigned line, const char *msg)
{
    defer(user, "%s:%u: %s", file, line, msg);
}

/* The files named by the strongest source that names any. */
static int read_ini_files(gw_config_t *c, const assigns_t *cli, const assigns_t *env)
{
    const opt_t *ini = gw__options_find_name("ini");
    char err[512];

    for (int pass = 0; pass < 2; pass++) {
        const assigns_t *as = pass == 0 ? cli : env;
        bool any = false;
        for (size_t i = 0; i < as->n; i++) {
            if (as->v[i].o != ini)
                continue;
            any = true;
            if (gw_ini_load(&c->_priv->ini, as->v[i].val, err, sizeof(err)) < 0) {
                fprintf(stderr, "gangway: %s\n", err);
                return -EINVAL;
            }
        }
        if (any)
            return 0;
    }
    return 0;
}

/* ini entries become assignments; keys that are no option are warned about
 * unless a placeholder used them (`project = mysite`, then %(project)). */
static bool is_variable(const gw_ini_t *ini, const char *key)
{
    for (size_t i = 0; i < ini->n; i++)
        if (ini->v[i].is_referenced && strcmp(ini->v[i].key, key) == 0)
            return true;
    return false;
}

static int from_ini(gw_config_t *c, assigns_t *as, const gw_ini_entry_t **http_key)
{
    const gw_ini_t *ini = &c->_priv->ini;

    for (size_t i = 0; i < ini->n; i++) {
        const gw_ini_entry_t *e = &ini->v[i];
        const opt_t *o = gw__options_find_name(e->key);
        char best[64];

        if (o) {
            if (push(as, o, e->value, (origin_t){SRC_INI, e->file, e->line}) < 0)
                return -ENOMEM;
            if (strcmp(e->key, "http") == 0 && !*http_key)
                *http_key = e;
        } else if (is_variable(ini, e->key)) {
            continue;
        } else if (gw__options_known_to_uwsgi(e->key)) {
            defer(c->_priv, "%s:%u: '%s' is a uWSGI option that gangway does not implement",
                  e->file, e->line, e->key);
        } else if (gw__options_closest(e->key, best, sizeof(best))) {
            defer(c->_priv, "%s:%u: unknown option '%s' (did you mean %s?)", e->file, e->line,
                  e->key, best);
        } else {
            defer(c->_priv, "%s:%u: unknown option '%s'", e->file, e->line, e->key);
        }
    }
    return 0;
}

/* What every load does once the values are in: the options that depend on
 * each other, and the notes. */
int gw__config_finish_load(gw_config_t *c, const gw_ini_entry_t *http_key)
{
    {
        /* lazy-apps is uWSGI's inverted --preload: the stronger source of
         * the two decides; one source saying both ways is an error. */
        const origin_t *lz = &c->_priv->origin[gw__options_find_name("lazy-apps") - gw__options];
        const origin_t *pl = &c->_priv->origin[gw__options_find_name("preload") - gw__options];
        if (lz->src != SRC_DEFAULT && lz->src > pl->src) {
            c->preload = !c->lazy_apps;
        } else if (lz->src != SRC_DEFAULT && lz->src == pl->src && c->preload == c->lazy_apps) {
            fprintf(stderr, "gangway: preload and lazy-apps = %s contradict each other\n",
                    c->lazy_apps ? "true" : "false");
            return -EINVAL;
        }
    }
    {
        /* uWSGI's no-defer-accept turns it off unless a stronger source set a time. */
        const origin_t *nd =
            &c->_priv->origin[gw__options_find_name("no-defer-accept") - gw__options];
        const origin_t *da = &c->_priv->origin[gw__options_find_name("defer-accept") - gw__options];
        if (c->no_defer_accept && nd->src >= da->src)
            c->defer_accept = 0;
    }
    if (http_key && c->_priv->origin[gw__options_find_name("http") - gw__options].src == SRC_INI)
        fprintf(stderr, "gangway: note: %s:%u: uWSGI's 'http' starts a router process in front "
                "of the workers; gangway's workers serve HTTP on %s themselves\n",
                http_key->file, http_key->line, http_key->value);
    if (c->plugins.n)
        fprintf(stderr, "gangway: note: plugins are ignored: gangway has Python built in\n");
    return 0;
}

/* Applies a, and keeps it for gw_config_save(). */
int gw__config_apply_kept(gw_config_t *c, const assign_t *a)
{
    int rc = apply(c, a);

    if (rc < 0)
        return rc;
    return push(&c->_priv->applied, a->o, a->val, a->at);
}

int gw_config_load(gw_config_t *c, int argc, char **argv, char **envp)
{
    assigns_t cli = {0}, env = {0}, ini = {0};
    const gw_ini_entry_t *http_key = NULL;
    int rc = -ENOMEM;

    gw_config_init(c);
    if (!(c->_priv = gw__config_priv_new()))
        goto out;
    static const char *const literal_keys[] = {"log-format", "logformat", NULL};
    gw_ini_init(&c->_priv->ini, on_ini_warning, c->_priv);
    c->_priv->ini.literal_keys = literal_keys;
    if ((rc = from_argv(&cli, argc, argv)) < 0 || (rc = from_env(c, &env, envp)) < 0 ||
        (rc = read_ini_files(c, &cli, &env)) < 0 ||
        (rc = from_ini(c, &ini, &http_key)) < 0)
        goto out;
    /* Weakest first: each source overrides the one before. */
    for (int pass = 0; pass < 3; pass++) {
        const assigns_t *as = pass == 0 ? &ini : pass == 1 ? &env : &cli;
        for (size_t i = 0; i < as->n; i++)
            if ((rc = gw__config_apply_kept(c, &as->v[i])) < 0)
                goto out;
    }
    for (size_t i = 0; i < c->_priv->nwarnings; i++)
        fprintf(stderr, "gangway: %s: %s\n", c->strict ? "error" : "warning",
                c->_priv->warnings[i]);
    if (c->strict && c->_priv->nwarnings) {
        fprintf(stderr, "gangway: stopping: --strict is on\n");
        rc = -EINVAL;
        goto out;
    }
    rc = gw__config_finish_load(c, http_key);
out:
    free(cli.v);
    free(env.v);
    free(ini.v);
    return rc;
}

void gw_config_dispose(gw_config_t *c)
{
    for (size_t i = 0; i < gw__options_n; i++) {
        if (gw__options[i].type == T_LIST) {
            gw_strlist_t *l = (gw_strlist_t *)((char *)c + gw__options[i].off);
            free((void *)l->v);
            l->v = NULL;
            l->n = 0;
        }
    }
    if (c->_priv) {
        gw_ini_dispose(&c->_priv->ini);
        free(c->_priv->applied.v);
        free(c->_priv->saved);
        for (size_t i = 0; i < c->_priv->nstrs; i++)
            free(c->_priv->strs[i]);
        free(c->_priv->strs);
        free((void *)c->_priv->warnings);
        for (size_t i = 0; i < gw__options_n; i++)
            free(c->_priv->list_origin[i]);
        free(c->_priv->list_origin);
        free(c->_priv->origin);
        free(c->_priv);
        c->_priv = NULL;
    }
}

void gw_config_bad_value(const gw_config_t *c, const char *name, size_t i, const char *value,
                         const char *why)
{
    const opt_t *o = gw__options_find_name(name);
    const origin_t *at;

    if (!o)
        return;
    at = &c->_priv->origin[o - gw__options];
    if (o->type == T_LIST && c->_priv->list_origin[o - gw__options] &&
        i < ((const gw_strlist_t *)((const char *)c + o->off))->n)
        at = &c->_priv->list_origin[o - gw__options][i];
    print_bad(o, at, value, why);
}

const char *gw_config_origin(const gw_config_t *c, const char *name, size_t i, char *buf,
                             size_t n)
{
    const opt_t *o = gw__options_find_name(name);
    const origin_t *at;

    if (!o || !c->_priv)
        return "default";
    at = &c->_priv->origin[o - gw__options];
    if (o->type == T_LIST && c->_priv->list_origin[o - gw__options] &&
        i < ((const gw_strlist_t *)((const char *)c + o->off))->n)
        at = &c->_priv->list_origin[o - gw__options][i];
    switch (at->src) {
    case SRC_INI:
        snprintf(buf, n, "%s:%u", at->where, at->line);
        return buf;
    case SRC_ENV:
        return at->where;
    case SRC_CLI:
        return "command line";
    }
    return "default";
}
