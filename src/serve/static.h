/* Static files, answered by the worker loop without Python: --static-map
 * prefixes, safe path resolution (nothing outside the mapped directory is
 * ever opened), sendfile, ETag / Last-Modified / 304, single byte ranges,
 * precompressed .br / .gz variants, Cache-Control / Expires. */
#ifndef GW_STATIC_H
#define GW_STATIC_H

#include "config/config.h"
#include "proto/request.h"
#include "serve/out.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_static gw_static_t;

/* Opens every mapped directory. NULL with err empty when no map is given;
 * NULL with err set on a bad map. */
gw_static_t *gw_static_new(const gw_config_t *cfg, char *err, size_t errlen);
void gw_static_free(gw_static_t *s);

typedef struct gw_static_result {
    int status;         /* for the log */
    uint64_t bytes;     /* body bytes queued */
} gw_static_result_t;

/* Answers r when its path falls under a map: queues the head (in r's arena)
 * and the file (sendfile; the fd is r->static_fd, closed with the request)
 * on out. Returns true when it answered, false when the app should (no map
 * matched, or a missing file with --static-fallthrough). Never runs Python. */
bool gw_static_answer(gw_static_t *s, gw_req_t *r, const char *rb, gw_out_t *out,
                      bool keep_alive, gw_static_result_t *res);

#endif
