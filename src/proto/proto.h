/* The protocol seam: every protocol gangway speaks parses bytes into the
 * same gw_req_t behind this table of operations. conn.c drives the protocol
 * of a connection's listener through it and never asks which one it is;
 * the rest of the server asks the request for protocol-neutral facts
 * (request.h). proto/protocols.h lists the protocols and holds room for any
 * one's parser state. No Python, no sockets. */
#ifndef GW_PROTO_H
#define GW_PROTO_H

#include "proto/request.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a protocol parser's feed returns. */
typedef enum gw_parse {
    GW_PARSE_AGAIN, /* everything usable consumed; feed more */
    GW_PARSE_HEAD,  /* the head is complete and valid; a body follows */
    GW_PARSE_DONE,  /* the whole request is in; the parser waits */
    GW_PARSE_ERROR, /* answer the parser's error (or just close) */
} gw_parse_t;

/* The limits requests are held to, from the configuration; one set per
 * worker, read by every protocol for what applies to it. */
typedef struct gw_proto_limits {
    uint64_t request_line; /* HTTP/1: the request line (--limit-request-line) */
    uint64_t field_size;   /* HTTP/1: one header field, one chunk-size line */
    uint64_t fields;       /* HTTP/1: header fields */
    uint64_t headers;      /* HTTP/1: the header block */
    uint64_t buffer_size;  /* uwsgi: the variables block (--buffer-size; the protocol caps it at 65535) */
    uint64_t body;         /* every protocol: the request body (--limit-body) */
} gw_proto_limits_t;

/* One protocol. Its state is a member of gw_proto_state_t (protocols.h),
 * passed as void * so that this seam names no protocol. */
typedef struct gw_proto_ops {
    const char *name; /* "http", "uwsgi": for logs */
    /* Prepares st for a new connection; lim and env are borrowed for the
     * worker's lifetime. */
    void (*init)(void *st, const gw_proto_limits_t *lim, const gw_body_env_t *env);
    /* Starts the next request on the same connection (keep-alive). */
    void (*reset)(void *st);
    /* Parses base[off .. off+len) into r. Spans are offsets from base, which
     * must hold the whole head (the caller appends, never compacts, while
     * the head is incomplete). *used: bytes consumed; after HEAD or DONE the
     * caller feeds the rest later. Body bytes go to r->body (this can write
     * to a temp file). Never runs Python. */
    gw_parse_t (*feed)(void *st, gw_req_t *r, const char *base, size_t off, size_t len,
                       size_t *used);
    /* After GW_PARSE_ERROR: the status to answer (400, 413, 431, ...), or 0
     * when the peer does not speak the protocol and the connection just
     * closes; *reason (static or in st) says why, for the error log. */
    int (*error)(const void *st, const char **reason);
    /* Line ends before a request are no request (HTTP/1, RFC 9112 2.2: a
     * client may send a CRLF after a POST's body): the connection layer
     * drops them, and a connection that sent only those stays idle. */
    bool skips_blank_lines;
} gw_proto_ops_t;

/* Defines name, the operations of a protocol whose parser state is a type
 * driven by prefix_init(), prefix_reset() and prefix_feed(), with members
 * status and reason saying how a parse error is answered, and blank its
 * skips_blank_lines. The functions it
 * makes only convert the state pointer, so that this seam names no
 * protocol and each protocol keeps a typed API (its tests call it). */
#define GW_PROTO_DEFINE(name, label, type, prefix, blank)                                               \
    static void prefix##_op_init(void *st, const gw_proto_limits_t *lim, const gw_body_env_t *env) \
    {                                                                                              \
        prefix##_init((type *)st, lim, env);                                                       \
    }                                                                                              \
    static void prefix##_op_reset(void *st)                                                        \
    {                                                                                              \
        prefix##_reset((type *)st);                                                                \
    }                                                                                              \
    static gw_parse_t prefix##_op_feed(void *st, gw_req_t *r, const char *base, size_t off,        \
                                       size_t len, size_t *used)                                   \
    {                                                                                              \
        return prefix##_feed((type *)st, r, base, off, len, used);                                 \
    }                                                                                              \
    static int prefix##_op_error(const void *st, const char **reason)                              \
    {                                                                                              \
        *reason = ((const type *)st)->reason;                                                      \
        return ((const type *)st)->status;                                                         \
    }                                                                                              \
    const gw_proto_ops_t name = {label, prefix##_op_init, prefix##_op_reset, prefix##_op_feed,    \
                                 prefix##_op_error, blank}

#endif
