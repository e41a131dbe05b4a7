/* The open-file cache of static files (--static-cache): resolved files
 * stay open, direct-mapped by map, name, coding and index, the entries an
 * answer is built from pinned until the next answer. Part of the
 * static-file module (serve/static_priv.h). */
#include "serve/static_priv.h"

#include "core/clock.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* rel resolved beneath m, from the cache while its entry is younger than
 * --static-cache, else resolved now. NULL when there is nothing to serve.
 * *owned: the file is tmp and its descriptor the caller's to close. A file
 * from the cache is pinned: it stays as it is, whatever later lookups of the
 * same answer do, until the next gw_static_answer(). */
const sfile_t *get_file(gw_static_t *s, const smap_t *m, char *rel, size_t relcap, bool with_index,
                        const char *coding, sfile_t *tmp, bool *owned)
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
        int rc = resolve(s, m, e->rel, sizeof(e->rel), with_index, coding, &e->f);
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
    if (resolve(s, m, rel, relcap, with_index, coding, tmp) < 0)
        return NULL;
    *owned = true;
    return tmp;
}
