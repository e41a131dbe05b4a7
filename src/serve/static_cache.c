/* The open-file cache of static files. Part of the static-file module
 * (serve/static_priv.h). */
#include "serve/static_priv.h"

#include "core/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --static-cache: resolved files stay open for a while, so that a hot file
 * costs no open, fstat and close per request. Direct-mapped: a collision
 * replaces the older entry, unless that entry is pinned. Names longer than
 * FC_NAME are never cached. The static fuzzer builds with a tiny FC_SLOTS
 * so that every lookup collides. */
#ifndef FC_SLOTS
#define FC_SLOTS 256
#endif
#define FC_NAME 192

struct fentry {
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
};

fentry_t *gw__static_cache_new(void)
{
    return calloc(FC_SLOTS, sizeof(fentry_t));
}

void gw__static_cache_free(fentry_t *cache)
{
    for (size_t i = 0; cache && i < FC_SLOTS; i++)
        if (cache[i].used && cache[i].f.fd >= 0)
            close(cache[i].f.fd);
    free(cache);
}

/* rel resolved beneath m, from the cache while its entry is younger than
 * --static-cache, else resolved now. NULL when there is nothing to serve.
 * *owned: the file is tmp and its descriptor the caller's to close. A file
 * from the cache is pinned: it stays as it is, whatever later lookups of the
 * same answer do, until the next gw_static_answer(). */
const sfile_t *gw__static_get_file(gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                                   bool with_index, const char *coding, sfile_t *tmp,
                                   bool *owned)
{
    size_t kl = strlen(rel), mi = (size_t)(m - s->maps);
    uint64_t now = gw_clock_ms(), h = 1469598103934665603ULL ^ mi;
    fentry_t *e;

    *owned = false;
    if (s->cache && kl < FC_NAME) {
        for (size_t i = 0; i < kl; i++)
            h = (h ^ (unsigned char)rel[i]) * 1099511628211ULL;
        e = &s->cache[(h ^ (h >> 32)) & (FC_SLOTS - 1)];
        if (e->used && e->map == mi && e->coding == coding && e->with_index == with_index &&
            now - e->checked_ms < s->cache_ms && strcmp(e->key, rel) == 0) {
            if (e->f.fd < 0)
                return NULL;
            e->pin = s->answer_id;
            return &e->f;
        }
        if (e->pin == s->answer_id)
            goto uncached; /* this answer serves from it: leave it be */
        if (e->used && e->f.fd >= 0)
            close(e->f.fd);
        e->used = false;
        memcpy(e->rel, rel, kl + 1);
        int rc = gw__static_resolve(s, m, e->rel, sizeof(e->rel), with_index, coding, &e->f);
        if (rc != -ENAMETOOLONG) {
            if (rc < 0)
                e->f.fd = -1;
            memcpy(e->key, rel, kl + 1);
            e->map = mi;
            e->coding = coding;
            e->with_index = with_index;
            e->checked_ms = now;
            e->used = true;
            if (e->f.fd < 0)
                return NULL;
            e->pin = s->answer_id;
            return &e->f;
        }
    }
uncached:
    if (gw__static_resolve(s, m, rel, relcap, with_index, coding, tmp) < 0)
        return NULL;
    *owned = true;
    return tmp;
}
