/* The response writer: the formatting of an HTTP/1 response head. */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H

#include "core/arena.h"
#include "serve/out.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One response header, borrowed. */
typedef struct gw_hdr {
    const char *name;  size_t name_len;
    const char *value; size_t value_len;
} gw_hdr_t;

typedef enum gw_framing {
    GW_FRAME_LENGTH,  /* Content-Length: content_length */
    GW_FRAME_CHUNKED, /* Transfer-Encoding: chunked */
    GW_FRAME_CLOSE,   /* body ends when the connection closes */
    GW_FRAME_NONE,    /* no body by definition (HEAD, 204, 304); keep what the app said */
} gw_framing_t;

typedef struct gw_head {
    int http_minor;          /* 0 or 1: the request's version */
    const char *status;      /* "200 OK", borrowed */
    size_t status_len;
    const gw_hdr_t *hdrs;    /* the app's headers, already validated */
    size_t nhdrs;
    gw_framing_t framing;
    uint64_t content_length; /* with GW_FRAME_LENGTH when the app gave none */
    bool add_length;         /* write Content-Length: content_length */
    const char *request_id;  /* X-Request-Id to add, or NULL */
    size_t request_id_len;
    bool add_server;         /* unless the app gave its own */
    bool add_date;
    bool keep_alive;
} gw_head_t;

/* Formats the status line and headers (with Date, Server, framing and
 * Connection) into the arena. Returns the length, 0 when out of memory. */
size_t gw_head_format(const gw_head_t *h, gw_arena_t *a, char **out);

/* A complete short response with a text body ("Bad Request\n"), for errors
 * the server answers itself (400, 408, 413, 500, ...), with X-Request-Id
 * when request_id is not NULL. Returns its length (0: out of memory); the
 * body is gw_status_reason(status) plus a newline, unless is_head. */
size_t gw_head_simple(int status, bool keep_alive, bool is_head, const char *request_id,
                      size_t request_id_len, gw_arena_t *a, char **out);

/* "Bad Request" for 400 and so on; "Unknown" otherwise. */
const char *gw_status_reason(int status);

/* The standard reason phrase of a status code (RFC 9110 15), or NULL. */
const char *gw_status_phrase(int status);

#endif
