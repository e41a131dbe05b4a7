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

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#define MIME_SLOTS 4096 /* a power of two, over twice the types Debian lists */

typedef struct smap {
    char *prefix; /* "/static", no trailing slash */
    size_t plen;
    const char *dir; /* as configured (absolute, see main.c), for static-expires */
    int dirfd;    /* O_PATH directory every open is resolved beneath */
} smap_t;

/* --static-expires / --static-expires-uri: how long a client may cache. */
typedef struct expire {
    bool is_uri;     /* matched against the request path, else the file path */
    bool has_re;     /* false: every file */
    regex_t re;
    uint64_t seconds;
} expire_t;

typedef struct mime {
    char ext[16];
    char type[80];
} mime_t;

/* A file resolved beneath a map, ready to answer from. */
typedef struct sfile {
    int fd;          /* reads the file */
    struct stat st;
    const char *rel; /* the name it resolved to (an index appended) */
    char type[112];  /* Content-Type, from that name */
    char etag[96];   /* strong: inode, size, mtime, and a variant's coding */
    char lm[40];     /* Last-Modified */
} sfile_t;

/* --static-cache: resolved files stay open for a while, so that a hot file
 * costs no open, fstat and close per request. Direct-mapped: a collision
 * replaces the older entry, unless that entry is pinned. Names longer than
 * FC_NAME are never cached. The static fuzzer builds with a tiny FC_SLOTS
 * so that every lookup collides. */
#ifndef FC_SLOTS
#define FC_SLOTS 256
#endif
#define FC_NAME 192

typedef struct fentry {
    sfile_t f;          /* f.fd -1: nothing servable under this name (cached too) */
    uint64_t checked_ms;
    /* Pinned while pin == gw_static.answer_id: an answer holds pointers
     * into this entry (its fd, name, type, validators) across the lookups
     * of the variants, and a probe that collided with it used to close the
     * fd and rename the entry under the answer (issue 14: 503s, a wrong
     * Content-Type). A pinned slot is never replaced; a colliding lookup
     * resolves uncached instead. A new answer unpins everything at once. */
    uint64_t pin;
    size_t map;
    const char *coding; /* "", "br" or "gzip": part of the key */
    bool with_index;    /* part of the key */
    bool used;
    char key[FC_NAME];
    char rel[FC_NAME];
} fentry_t;

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

/* static_http.c */
void mime_load(mime_t *t);
const char *mime_get(const mime_t *t, const char *ext, size_t n);
int compile_expires(gw_static_t *s, char *err, size_t errlen);
uint64_t expires_for(const gw_static_t *s, const smap_t *m, const char *path, size_t pn,
                     const sfile_t *f);
bool accepts(const char *v, size_t vn, const char *coding);
bool etag_matches(const char *v, size_t vn, const char *etag);
time_t parse_http_date(const char *v, size_t vn);
void http_date(time_t t, char *out, size_t n);
int parse_range(const char *v, size_t vn, uint64_t size, uint64_t *start, uint64_t *end);

/* static_path.c */
int clean_path(const char *p, size_t n, bool is_decoded, bool dotfiles, char *out, size_t outlen);
int resolve(const gw_static_t *s, const smap_t *m, char *rel, size_t relcap, bool with_index,
            const char *coding, sfile_t *f);

/* static_cache.c */
const sfile_t *get_file(gw_static_t *s, const smap_t *m, char *rel, size_t relcap, bool with_index,
                        const char *coding, sfile_t *tmp, bool *owned);

#endif
