/* The static-file module's private parts, shared by the files that make it
 * and by nothing else: static.c (set-up, the maps, the answer's assembly),
 * static_path.c (safe resolution beneath a mapped directory),
 * static_cache.c (the open-file cache) and static_http.c (the HTTP rules:
 * MIME types, validators and dates, Range, Accept-Encoding, expires). The
 * public interface is serve/static.h. */
#ifndef GW_STATIC_PRIV_H
#define GW_STATIC_PRIV_H

#include "config/config.h"
#include "serve/static.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

typedef struct smap {
    char *prefix; /* "/static", no trailing slash */
    size_t plen;
    const char *dir; /* as configured (absolute, see main.c), for static-expires */
    int dirfd;    /* O_PATH directory every open is resolved beneath */
} smap_t;

/* A file resolved beneath a map, ready to answer from. */
typedef struct sfile {
    int fd;          /* reads the file */
    struct stat st;
    const char *rel; /* the name it resolved to (an index appended) */
    char type[112];  /* Content-Type, from that name */
    char etag[96];   /* strong: inode, size, mtime, and a variant's coding */
    char lm[40];     /* Last-Modified */
} sfile_t;

typedef struct mime mime_t;     /* static_http.c */
typedef struct expire expire_t; /* static_http.c */
typedef struct fentry fentry_t; /* static_cache.c */

struct gw_static {
    smap_t *maps;
    size_t n;
    const gw_config_t *cfg;
    mime_t *mime; /* open addressing by extension */
    bool has_openat2;
    fentry_t *cache; /* FC_SLOTS, or NULL with --static-cache 0 */
    uint64_t cache_ms;
    uint64_t answer_id; /* counts answers; entries with this pin are in use */
    expire_t *expires; /* uri rules first, then file rules, in the order given */
    size_t nexpires;
    bool has_file_rules;
};

/* ---- static_path.c ---- */

/* Whether openat2() resolves beneath dirfd (Linux 5.6); without it, every
 * open walks the path and refuses every symlink. */
bool gw__static_probe_openat2(int dirfd);
/* The request path after the prefix, decoded once and checked, as a
 * relative path in out: 0, or -1 for a path never served. */
int gw__static_clean_path(const char *p, size_t n, bool is_decoded, bool dotfiles, char *out,
                          size_t outlen);
/* rel beneath m (with_index: a directory's index) as a regular file open
 * for reading, in f: 0, -1 (nothing servable) or -ENAMETOOLONG. */
int gw__static_resolve(const gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                       bool with_index, const char *coding, sfile_t *f);

/* ---- static_cache.c ---- */

/* FC_SLOTS empty entries, or NULL when out of memory. */
fentry_t *gw__static_cache_new(void);
/* Closes the entries' descriptors and frees them; accepts NULL. */
void gw__static_cache_free(fentry_t *cache);
/* rel resolved beneath m, through the cache when there is one (pinned for
 * the answer), else into tmp (*owned: the caller closes its fd); NULL when
 * there is nothing to serve. */
const sfile_t *gw__static_get_file(gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                                   bool with_index, const char *coding, sfile_t *tmp,
                                   bool *owned);

/* ---- static_http.c ---- */

/* An empty MIME table, or NULL when out of memory; then filled once. */
mime_t *gw__static_mime_new(void);
void gw__static_mime_load(mime_t *t);
/* --static-expires and --static-expires-uri compiled into s->expires: 0,
 * or -1 with err set; gw__static_expires_free() frees them. */
int gw__static_expires_compile(gw_static_t *s, char *err, size_t errlen);
void gw__static_expires_free(gw_static_t *s);
/* How long a client may cache f, asked for as path: seconds, 0 for none. */
uint64_t gw__static_expires_for(const gw_static_t *s, const smap_t *m, const char *path,
                                size_t pn, const sfile_t *f);
/* f's Content-Type, ETag (coding: a variant's, "" for none) and
 * Last-Modified, formatted once when it is resolved. */
void gw__static_describe(const gw_static_t *s, sfile_t *f, const char *coding);
/* Whether an Accept-Encoding value takes coding. */
bool gw__static_accepts(const char *v, size_t vn, const char *coding);
/* Whether an If-None-Match value matches etag. */
bool gw__static_etag_matches(const char *v, size_t vn, const char *etag);
/* An HTTP-date, in any of its three forms, as a time; -1 when it is none. */
time_t gw__static_parse_http_date(const char *v, size_t vn);
/* t as an IMF-fixdate. */
void gw__static_http_date(time_t t, char *out, size_t n);
/* A Range value against size: 1 with the range, 0 to ignore it, -1 when it
 * cannot be satisfied (416). */
int gw__static_parse_range(const char *v, size_t vn, uint64_t size, uint64_t *start,
                           uint64_t *end);

#endif
