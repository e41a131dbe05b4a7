/* HTTP/1.1 requests (RFC 9112) on top of llhttp in strict mode, plus the
 * checks that llhttp 8.1 (Debian 12) lacks: obs-fold, bare CR, chunk data not
 * followed by CRLF, versions other than 1.0 and 1.1, request-target forms,
 * Host rules and every size limit. No Python, no sockets: bytes in, a filled
 * gw_req_t or an error status out. */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include "proto/proto.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_http1 {
    llhttp_t parser;
    const gw_proto_limits_t *lim; /* borrowed, worker lifetime */
    const gw_body_env_t *body_env;/* borrowed, worker lifetime */
    gw_req_t *req;                /* borrowed while parsing */
    const char *base;             /* read buffer start during a feed */
    const char *feed_end;
    uint64_t head_bytes;          /* header block bytes seen (fields and trailers) */
    uint32_t field_bytes;         /* bytes of the current header line */
    uint8_t last_cb;              /* 0 none, 1 field, 2 value */
    uint8_t crlf_need;            /* bytes of a chunk's trailing CRLF unchecked */
    uint8_t nte;                  /* Transfer-Encoding headers seen */
    uint8_t in_body;
    uint64_t chunk_left;
    uint64_t size_line;           /* bytes of the chunk-size line being read */
    bool in_size_line;            /* its LF not seen yet */
    int status;                   /* with GW_PARSE_ERROR: 400, 413, 414, 431, 505, 500 */
    const char *reason;           /* short text for the error log */
    gw_span_t cur_name, cur_value;
    bool drop_header;
    bool last_was_cr;             /* line scan: the previous byte was CR */
    bool after_lf;                /* line scan: the previous byte was LF */
    bool value_done;              /* a header value completed, no field since */
    bool in_trailer;              /* past the last chunk: trailer lines follow */
    bool trailer_started;
    uint64_t raw_bytes;           /* head (and trailer) bytes, whitespace included */
} gw_http1_t;

/* The protocol's operations (proto.h) over a gw_http1_t. */
extern const gw_proto_ops_t gw_proto_http1;

/* Prepares h for a new connection. */
void gw_http1_init(gw_http1_t *h, const gw_proto_limits_t *lim, const gw_body_env_t *env);

/* Starts a new request on the same connection (keep-alive). */
void gw_http1_reset(gw_http1_t *h);

/* Parses base[off .. off+len) into req. Spans are offsets from base, which must
 * hold the whole request head (the caller appends, never compacts, while the
 * head is incomplete). *used tells how many bytes were consumed; after HEAD or
 * DONE the caller feeds the rest later. Body bytes go to req->body (this can
 * write to a temp file). Never runs Python. */
gw_parse_t gw_http1_feed(gw_http1_t *h, gw_req_t *req, const char *base, size_t off, size_t len,
                         size_t *used);

#endif
