/* The response writer: the one place that knows HTTP/1 answers. The status
 * line, the framing (Content-Length, chunked, or the connection's close),
 * keep-alive and the Connection header, and the rules of HEAD, 204, 304
 * and HTTP/1.0 live here. Static files, the WSGI bridge and gangway's own
 * error answers only supply a status, headers and a body source: memory the
 * output queue owns, a file, or a stream of unknown length.
 *
 *   gw_resp_head()    decides (gw_resp_plan()) and queues the head
 *   gw_resp_push_*()  queue body blocks, framed and held to the promise
 *   gw_resp_end()     ends the body (the last chunk)
 *   gw_resp_text()    a whole short answer with a text body (errors)
 *
 * The decisions are made from the answer and from the request's
 * protocol-neutral facts (request.h), never from which protocol it came by.
 * Nothing here runs Python. */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H

#include "proto/request.h"
#include "serve/out.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One response header, borrowed until the head is formatted. */
typedef struct gw_hdr {
    const char *name;  size_t name_len; /* name_len 0: left out */
    const char *value; size_t value_len;
} gw_hdr_t;

/* What the source of an answer supplies. */
typedef struct gw_answer {
    int status;              /* 200 */
    const char *status_line; /* "200 OK" as the app gave it, or NULL: the status and its
                              * standard reason */
    size_t status_line_len;
    gw_hdr_t *hdrs;          /* validated, without hop-by-hop fields (the writer's) */
    size_t nhdrs;
    int length_hdr;          /* index of a Content-Length among hdrs (the app's), or -1 */
    int64_t length;          /* the body's length when known (that field's value, a list's
                              * total, a file's range); -1: a stream of unknown length */
    bool wants_close;        /* the source asks for the close (the app's Connection: close) */
    bool has_server;         /* hdrs carry their own Server ... */
    bool has_date;           /* ... and Date (else the writer adds them) */
    const char *request_id;  /* X-Request-Id to add, or NULL */
    size_t request_id_len;
} gw_answer_t;

typedef enum gw_framing {
    GW_FRAME_LENGTH,  /* Content-Length: length */
    GW_FRAME_CHUNKED, /* Transfer-Encoding: chunked */
    GW_FRAME_CLOSE,   /* the body ends when the connection closes */
    GW_FRAME_NONE,    /* no body by definition (HEAD, 204, 304) */
} gw_framing_t;

/* One answer's framing, decided by the writer, and its progress. The
 * source reads it (no_body: stop producing; keep_alive: how to end the
 * connection) and never decides it. Members starting with _ are the
 * writer's own. */
typedef struct gw_resp {
    uint64_t length;     /* GW_FRAME_LENGTH: the body bytes the head promised */
    uint64_t body_sent;  /* body bytes queued */
    uint8_t framing;     /* gw_framing_t */
    bool no_body;        /* HEAD, 204, 304: the head is the whole answer */
    bool keep_alive;     /* the head says so, until a broken promise of length */
    bool _add_length;    /* the head carries the Content-Length the source did not */
    uint8_t _minor;      /* of the status line: HTTP/1._minor */
} gw_resp_t;

/* Decides the framing of answer a to r: no body for HEAD, 204 and 304 (a
 * HEAD is told the length GET would have; a 204 loses the source's
 * Content-Length, RFC 9110 8.6); a known length as Content-Length; else
 * chunked where the request allows it, else the body ends with the
 * connection. Keep-alive when may_keep_alive (gw_conn_may_keep_alive()),
 * the source does not ask to close and the framing allows. The status line
 * answers in the request's version (gw_req_answer_minor()). Only edits a's
 * headers for a 204. Pure: the unit tests call it. */
void gw_resp_plan(gw_resp_t *rs, gw_answer_t *a, const gw_req_t *r, bool may_keep_alive);

/* Plans rs (above) and queues the head, formatted in r's arena (with Date,
 * Server, X-Request-Id, the framing and Connection). 0, -ENOMEM, or
 * -ENOBUFS when the queue has no room (nothing queued either way). */
int gw_resp_head(gw_resp_t *rs, gw_answer_t *a, gw_req_t *r, bool may_keep_alive,
                 gw_out_t *o);

/* A whole answer of status with a short text body (gw_status_reason() and a
 * newline; none for HEAD) and Content-Type text/plain, after nhdrs (at most
 * GW_RESP_TEXT_HDRS) headers of the caller's: gangway's own answers (400,
 * 404, 408, 413, 500, ...). Same results as gw_resp_head(). */
#define GW_RESP_TEXT_HDRS 4
int gw_resp_text(gw_resp_t *rs, gw_req_t *r, int status, const gw_hdr_t *hdrs, size_t nhdrs,
                 bool may_keep_alive, const char *request_id, size_t request_id_len,
                 gw_out_t *o);

/* Output segments one body block takes (a chunk's size line, data, CRLF). */
static inline unsigned gw_resp_block_segs(const gw_resp_t *rs)
{
    return rs->framing == GW_FRAME_CHUNKED ? 3 : 1;
}

/* Queues n bytes at p, kept alive by owner (gw_out_push_ref()), as body:
 * framed, cut to the length the head promised, dropped for an answer
 * without a body. 0 (owner the queue's), 1 when bytes past the promised
 * length were dropped (owner the queue's), or -ENOBUFS when the queue has
 * no room for the block: nothing queued, owner still the caller's, who
 * makes room (flushes) and calls again. */
int gw_resp_push_ref(gw_resp_t *rs, gw_out_t *o, const void *p, size_t n, void *owner);

/* The same for len bytes of the file fd from off, sent with sendfile: the
 * queue owns fd when owns_fd (then closed once sent or dropped), else the
 * caller pins it until the queue is returned (gw_out_push_file()). 0, 1
 * when bytes past the promised length were dropped, or -ENOBUFS (fd still
 * the caller's). */
int gw_resp_push_file(gw_resp_t *rs, gw_out_t *o, int fd, bool owns_fd, off_t off, uint64_t len);

/* Ends the body: the last chunk when chunked. 0, 1 when the body fell
 * short of the length the head promised (the answer can only close now:
 * keep_alive is cleared), or -ENOBUFS when the last chunk has no room
 * (nothing changed: flush, then call again). */
int gw_resp_end(gw_resp_t *rs, gw_out_t *o);

/* The interim answer to Expect: 100-continue (RFC 9110 10.1.1). */
int gw_resp_continue(gw_out_t *o);

/* "Bad Request" for 400 and so on; "Unknown" otherwise. */
const char *gw_status_reason(int status);

/* The standard reason phrase of a status code (RFC 9110 15), or NULL. */
const char *gw_status_phrase(int status);

#endif
