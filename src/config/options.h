/* The option table (options.c) and what is looked up in it, private to
 * src/config/: every option once, with its names, type, default, help and
 * group, the ranges of the numbers narrower than their type, and which
 * names are uWSGI's (src/config/uwsgi-options.txt). */
#ifndef GW_OPTIONS_H
#define GW_OPTIONS_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum opt_type { T_BOOL, T_SIZE, T_SECONDS, T_STR, T_LIST, T_WORKERS };

typedef struct opt {
    const char *name;       /* also the ini key and GANGWAY_<NAME> */
    const char *aliases; /* space separated long names */
    char short_name;
    enum opt_type type;
    size_t off;
    const char *def;
    const char *metavar;
    const char *help;
    const char *group;
} opt_t;

#define OFF(f) offsetof(gw_config_t, f)

/* Every option, group by group as --help lists them; an option's index in
 * the table is its index in a load's origins (config_priv.h). */
extern const opt_t gw__options[];
extern const size_t gw__options_n;

/* The smallest and largest value a number option takes. */
uint64_t gw__options_min(const opt_t *o);
uint64_t gw__options_max(const opt_t *o);

/* The option named name (len bytes; a name or an alias), by its short
 * name, or by its whole name; NULL when there is none. */
const opt_t *gw__options_find(const char *name, size_t len);
const opt_t *gw__options_find_short(char s);
const opt_t *gw__options_find_name(const char *name);

/* The option name or alias closest to name, copied into buf; false when
 * nothing is close enough to be what was meant. */
bool gw__options_closest(const char *name, char *buf, size_t n);

/* A name uWSGI has an option for. */
bool gw__options_known_to_uwsgi(const char *name);

/* An option that acts (--help, --version, --print-config, --print-man)
 * instead of configuring. */
bool gw__options_is_meta(const opt_t *o);

#endif
