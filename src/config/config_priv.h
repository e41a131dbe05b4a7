/* A configuration's load, private to src/config/ (config.c loads, saved.c
 * saves and loads again, print.c prints): where each value came from, the
 * assignments applied, what the load owns. */
#ifndef GW_CONFIG_PRIV_H
#define GW_CONFIG_PRIV_H

#include "config/config.h"
#include "config/ini.h"
#include "config/options.h"

#include <stdint.h>
#include <stdio.h>

enum src { SRC_DEFAULT, SRC_INI, SRC_ENV, SRC_CLI };

typedef struct origin {
    uint8_t src;
    const char *where; /* the ini file or the variable's name */
    unsigned line;
} origin_t;

/* One value from one source, before it is applied. */
typedef struct assign {
    const opt_t *o;
    const char *val;
    origin_t at;
} assign_t;

typedef struct assigns {
    assign_t *v;
    size_t n, cap;
} assigns_t;

struct gw_config_priv {
    assigns_t applied;        /* every assignment, in the order applied (gw_config_save) */
    char *saved;              /* gw_config_load_saved(): the bytes the strings point into */
    origin_t *origin;         /* by option (table order); a list's: its last value's */
    origin_t **list_origin;   /* by option: a list's, value by value */
    gw_ini_t ini;
    char **strs; /* owned strings: environment copies, deferred warnings */
    size_t nstrs, capstrs;
    const char **warnings; /* held until --strict is known (some in strs) */
    size_t nwarnings, capwarnings;
};

/* A load's private part, with an origin for every option. NULL when out
 * of memory. */
struct gw_config_priv *gw__config_priv_new(void);

/* Applies a, and keeps it for gw_config_save(). 0, or -EINVAL after the
 * line a bad value gets, or -ENOMEM. */
int gw__config_apply_kept(gw_config_t *c, const assign_t *a);

/* What every load does once the values are in: the options that depend on
 * each other, and the notes. http_key: the ini's `http` line, or NULL. */
int gw__config_finish_load(gw_config_t *c, const gw_ini_entry_t *http_key);

/* "uwsgi.ini:12", "GANGWAY_WORKERS", "command line" or "default". */
void gw__config_print_origin(FILE *out, const origin_t *at);

#endif
