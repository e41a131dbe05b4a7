/* The uwsgi binary protocol, as nginx's uwsgi_pass speaks it: a 4-byte
 * header (modifier1, a 16-bit little-endian block size, modifier2), a block
 * of variables (16-bit length, key, 16-bit length, value), then a body of
 * CONTENT_LENGTH bytes. The variables are CGI variables already; they land in
 * gw_req_t's header array as (key, value) spans. No Python, no sockets. */
#ifndef GW_UWSGI_H
#define GW_UWSGI_H

#include "proto/proto.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gw_uwsgi {
    const gw_proto_limits_t *lim; /* borrowed, worker lifetime: buffer_size, body */
    const gw_body_env_t *body_env;
    uint8_t state;
    uint64_t body_left;
    int status;                   /* with GW_PARSE_ERROR: 413 to answer, 0 to just close */
    char reason[96];              /* for the error log */
} gw_uwsgi_t;

/* The protocol's operations (proto.h) over a gw_uwsgi_t. */
extern const gw_proto_ops_t gw_proto_uwsgi;

void gw_uwsgi_init(gw_uwsgi_t *u, const gw_proto_limits_t *lim, const gw_body_env_t *env);
void gw_uwsgi_reset(gw_uwsgi_t *u);

/* Parses base[off .. off+len) into req; the packet header and variables must
 * stay in place from base+off until the head is parsed (the caller appends).
 * *used: bytes consumed. Body bytes go to req->body. */
gw_parse_t gw_uwsgi_feed(gw_uwsgi_t *u, gw_req_t *req, const char *base, size_t off, size_t len,
                         size_t *used);

#endif
