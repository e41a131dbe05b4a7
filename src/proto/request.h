/* The protocol-neutral request: what the HTTP/1.1 (and later uwsgi) parser
 * fills and the WSGI bridge reads. Strings are spans into the connection's
 * read buffer, valid until the request is reset. The body is buffered whole
 * before the app runs: in memory up to a threshold, then in a temp file. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include "core/arena.h"
#include "core/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A slice of the read buffer, by offset so that the buffer may move. */
typedef struct gw_span {
    uint32_t off, len;
} gw_span_t;

typedef struct gw_header {
    gw_span_t name, value;
} gw_header_t;

/* Where and how bodies are stored; one per worker, borrowed by each body. */
typedef struct gw_body_env {
    gw_bufpool_t *pool;
    uint64_t mem_limit; /* beyond this the body moves to a temp file */
    const char *tmpdir;
} gw_body_env_t;

typedef struct gw_body {
    gw_buf_t mem; /* the whole body while fd < 0; after that, its last
                   * mem.len bytes, not yet written to the file (a batch) */
    int fd;       /* -1 while the body is in memory */
    uint64_t len; /* bytes stored (file and batch) */
} gw_body_t;

/* What a protocol parser's feed returns. */
typedef enum gw_parse {
    GW_PARSE_AGAIN, /* everything usable consumed; feed more */
    GW_PARSE_HEAD,  /* the head is complete and valid; a body follows */
    GW_PARSE_DONE,  /* the whole request is in; the parser waits */
    GW_PARSE_ERROR, /* answer the parser's status (or just close) */
} gw_parse_t;

typedef struct gw_req {
    gw_span_t method, target, path, query; /* path: decoded later, raw here */
    gw_span_t authority;    /* host[:port] of an absolute-form target, else empty */
    uint8_t http_major, http_minor;
    bool is_head;
    bool is_chunked;
    bool keep_alive;
    bool expect_continue;
    bool is_uwsgi;          /* headers are CGI variables from a uwsgi packet */
    int64_t content_length; /* -1: none given */
    gw_header_t *headers;   /* in the arena */
    uint32_t nheaders, cap_headers;
    int32_t host;           /* index in headers, -1 when absent */
    int32_t request_id;     /* index of X-Request-Id (HTTP_X_REQUEST_ID), -1 when absent */
    uint8_t gen_id_len;     /* a generated id in gen_id, 0: none yet */
    char gen_id[33];
    gw_body_t body;
    int static_fd;          /* a static file being sent, closed with the request */
    uint64_t start_us;      /* first byte of the request */
    gw_arena_t arena;
} gw_req_t;

/* Prepares a request whose arena draws from pool. */
void gw_req_init(gw_req_t *r, gw_arena_pool_t *pool);

/* Forgets the request: arena, body (memory back to the pool, temp file
 * closed). r is ready for the next one. */
void gw_req_reset(gw_req_t *r, const gw_body_env_t *env);

/* Seeds this process's request-id generator; call once in each worker. */
void gw_req_seed_ids(void);

/* The request's id: the X-Request-Id it came with (when 1 to 128 visible
 * ASCII bytes), else with generate a random one made on first use and kept
 * in r. NULL (and *len 0) when it has none and generate is false. rb is the
 * read buffer the header spans point into. */
const char *gw_req_id(gw_req_t *r, const char *rb, bool generate, size_t *len);

/* The host the request is for, as a span of the read buffer: an
 * absolute-form target's authority (RFC 9112 3.2.2: the Host header is
 * then ignored), else the Host header's value (HTTP_HOST behind uwsgi);
 * empty when there is none. */
gw_span_t gw_req_host(const gw_req_t *r);

/* Appends a header by spans; 0 or -ENOMEM. */
int gw_req_add_header(gw_req_t *r, gw_span_t name, gw_span_t value);

/* Appends body bytes, moving to a temp file past env->mem_limit. In the
 * file, small appends are batched in b->mem: one write() per buffer's worth.
 * Returns 0 or a negative errno (-ENOSPC when the disk is full). */
int gw_body_append(gw_body_t *b, const gw_body_env_t *env, const char *p, size_t n);

/* Once the body is complete: writes out what a spooled body still holds in
 * memory and gives that memory back, so that the app reads one whole file.
 * 0 or a negative errno (-ENOSPC when the disk is full). */
int gw_body_flush(gw_body_t *b, const gw_body_env_t *env);

/* Copies n bytes at off into dst (fewer only past the end: from the file,
 * then from the unwritten batch); returns the count, or -errno. */
ssize_t gw_body_read(const gw_body_t *b, uint64_t off, char *dst, size_t n);

#endif
