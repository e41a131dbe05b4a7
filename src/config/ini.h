/* uWSGI-flavoured ini files: sections, `key = value` lines, `ini = other.ini`
 * includes and uWSGI's placeholders (%(key), $(ENV), %d %p %n %c %x %k %h
 * %u %U %g %G %%, and integer arithmetic such as %(%k + 1)).
 *
 * The lines are read the way uWSGI reads them, which is not the way general
 * ini libraries do: no inline comments (`;` and `#` only start a comment at
 * the start of a line), `=` is the only separator, a bare key means an empty
 * value (true for a flag), no continuation lines, no line length limit (a
 * value may take 64 KiB after expansion, a file 1 MiB). This module only
 * reads; which keys are options is config.c's business. */
#ifndef GW_INI_H
#define GW_INI_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_ini_entry {
    const char *key;
    const char *value; /* placeholders expanded */
    const char *file;  /* the file as named (include paths as resolved) */
    unsigned line;
    bool is_referenced; /* some %(key) used it: a variable, not a typo */
} gw_ini_entry_t;

/* Called for what is worth a warning but not an error (a placeholder that
 * names nothing defined). */
typedef void gw_ini_warn_cb(void *user, const char *file, unsigned line, const char *msg);

typedef struct gw_ini {
    gw_ini_entry_t *v;
    size_t n;
    gw_ini_warn_cb *warn;
    void *user;
    /* Keys whose values hold %(...) of their own (log-format's fields): an
     * undefined placeholder there is left as written without a warning.
     * NULL-terminated; NULL for none. */
    const char *const *literal_keys;
    size_t _cap;
    char **_strs; /* every string above is owned here */
    size_t _nstrs, _capstrs;
    unsigned _depth;
    bool _is_quiet; /* expanding a literal_keys value */
} gw_ini_t;

void gw_ini_init(gw_ini_t *ini, gw_ini_warn_cb *warn, void *user);

/* Reads spec, "PATH" or "PATH:SECTION", appending its entries (and those of
 * its includes) to ini. Without a section, [uwsgi] and [gangway] are read.
 * Returns 0, or -1 with "FILE:LINE: reason" (or "FILE: reason") in err. */
int gw_ini_load(gw_ini_t *ini, const char *spec, char *err, size_t errlen);

/* The same for bytes already in memory (path names them and anchors %d, %p
 * and relative includes); section NULL means [uwsgi] and [gangway]. */
int gw_ini_feed(gw_ini_t *ini, const char *path, const char *data, size_t len,
                const char *section, char *err, size_t errlen);

/* Frees every entry and string. */
void gw_ini_dispose(gw_ini_t *ini);

#endif
