/* The protocol-neutral request: what every protocol's parser fills (proto.h)
 * and static files, the response writer, the access log and the WSGI bridge
 * read. Strings are spans into the connection's read buffer, valid until the
 * request is reset. The body is buffered whole before the app runs: in
 * memory up to a threshold, then in a temp file. Where protocols differ,
 * the request says so as facts (has_cgi_fields, is_path_decoded,
 * is_gateway) that the rest of the server asks instead of "which protocol
 * was this?", so that a new protocol sets facts instead of adding cases. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include "core/allow.h"
#include "core/arena.h"
#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
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

/* The scheme a client used, as its trusted proxies report it. */
enum { GW_SCHEME_UNSAID, GW_SCHEME_HTTP, GW_SCHEME_HTTPS };

/* The client as the connection's trusted proxies describe it in forwarded
 * headers (proto/forwarded.c: X-Forwarded-*, RFC 7239 Forwarded). All zero
 * when they said nothing usable: the connection's peer and the listener's
 * scheme stand. */
typedef struct gw_req_client {
    char addr[GW_IP_TEXT]; /* the client's address; "": the peer's stands */
    char port[6];          /* its port, when a Forwarded for= said it ("" otherwise) */
    uint8_t scheme;        /* GW_SCHEME_*: what the client spoke to the first proxy */
    gw_span_t host;        /* --forwarded-host: the host[:port] the client asked for (a
                            * slice of the read buffer); len 0: none said */
    uint16_t server_port;  /* --forwarded-host: the port it asked on; 0: none said */
} gw_req_client_t;

/* A variable of the connection copied for the request (see tls_vars). */
typedef struct gw_req_var {
    const char *key; /* static */
    const char *val; /* in the arena */
    size_t len;
} gw_req_var_t;

typedef struct gw_req {
    gw_span_t method, target, path, query; /* path: raw unless is_path_decoded */
    gw_span_t authority;    /* host[:port] of an absolute-form target, else empty */
    uint8_t http_major, http_minor; /* 0.0 until known (HTTP/1: a version it accepted) */
    bool is_head;
    bool is_chunked;
    bool keep_alive;
    bool expect_continue;
    /* Facts of the protocol, set by its parser with the head; false for
     * HTTP/1.x, true for uwsgi (and later FastCGI, for the first two). */
    bool has_cgi_fields;    /* headers are CGI variables (HTTP_ACCEPT_ENCODING, REMOTE_ADDR,
                             * SERVER_PROTOCOL), not HTTP header fields */
    bool is_path_decoded;   /* path is percent-decoded already (a gateway's PATH_INFO) */
    bool is_gateway;        /* from a gateway (nginx): one request per connection, its
                             * whole announced body sent before it reads the answer,
                             * which it reads to the connection's end (so no chunking);
                             * the version is what it spoke to its client, as reported */
    int64_t content_length; /* -1: none given */
    gw_req_client_t client; /* what trusted proxies say of the client (gw_fwd_resolve) */
    gw_header_t *headers;   /* in the arena */
    uint32_t nheaders, cap_headers;
    int32_t host;           /* index in headers, -1 when absent */
    int32_t request_id;     /* index of X-Request-Id (HTTP_X_REQUEST_ID), -1 when absent */
    uint8_t gen_id_len;     /* a generated id in gen_id, 0: none yet */
    char gen_id[33];
    gw_body_t body;
    int static_fd;          /* a static file being sent, closed with the request */
    uint64_t start_us;      /* first byte of the request */
    /* --threads: the TLS connection's SSL_* variables, copied by the loop's
     * thread before the hand-off (gw_tls_each_var() reads the SSL object,
     * which the loop may be writing on meanwhile). has_tls_vars false: read
     * them from the transport (one thread, or not handed over). */
    gw_req_var_t *tls_vars; /* in the arena */
    uint32_t ntls_vars;
    bool has_tls_vars;
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

/* The value of the request header name (lower case, "accept-encoding"),
 * the first one given, whatever the protocol calls it: the field itself, or
 * its CGI variable (HTTP_ACCEPT_ENCODING) when has_cgi_fields. rb is the
 * read buffer the spans point into; *v is a slice of it. false: none. */
bool gw_req_header(const gw_req_t *r, const char *rb, const char *name, const char **v,
                   size_t *vn);

/* The value of the CGI variable name ("REMOTE_ADDR": what a gateway says
 * of its client); false when there is none or the fields are HTTP ones. */
bool gw_req_var(const gw_req_t *r, const char *rb, const char *name, const char **v,
                size_t *vn);

/* The protocol as the access log and the environ name it ("HTTP/1.1"), in
 * static storage or buf; NULL while the request has no version (refused
 * before it was read). A gateway's is logged as it reported it. */
#define GW_REQ_PROTOCOL_LEN 16
const char *gw_req_protocol(const gw_req_t *r, char buf[GW_REQ_PROTOCOL_LEN]);

/* The minor version of the HTTP/1 status line an answer to r carries: 0 to a
 * request whose version is known and minor 0 (HTTP/1.0, answered in kind as
 * RFC 9110 2.5 allows; a gateway's HTTP/2.0 or 3.0, whose status line nginx
 * reads no version from), 1 otherwise (a version not read yet included). */
static inline int gw_req_answer_minor(const gw_req_t *r)
{
    return r->http_major && !r->http_minor ? 0 : 1;
}

/* Whether an answer to r may be chunked (RFC 9112 7.1: HTTP/1.1 only; a
 * gateway reads the answer to the connection's end instead). */
static inline bool gw_req_may_chunk(const gw_req_t *r)
{
    return r->http_major == 1 && r->http_minor == 1 && !r->is_gateway;
}

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
