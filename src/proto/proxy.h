/* The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 (a text
 * line) and 2 (binary, with TLVs): the header a load balancer sends first
 * on a connection to say whose connection it forwards. A pure parser:
 * bytes in, the addresses out; no sockets, no allocation. Incremental over
 * reads split anywhere: the caller feeds what it read and gets back how
 * many bytes the header took, the rest being the first request's. It takes
 * the header's bytes and never a byte past it, and refuses as soon as the
 * bytes seen cannot begin a header (garbage, a client speaking HTTP
 * straight away), without waiting for more. */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include "core/allow.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum gw_proxy_st {
    GW_PROXY_AGAIN, /* everything given was taken; the header goes on */
    GW_PROXY_DONE,  /* the header is complete: *used bytes of this feed were its end */
    GW_PROXY_ERROR, /* not a valid header: close the connection (reason says why) */
} gw_proxy_st_t;

/* What the header says. */
typedef struct gw_proxy_info {
    uint8_t version;  /* 1 or 2 */
    bool is_local;    /* v2 LOCAL (a health check of the balancer's own), v1 UNKNOWN,
                       * or v2 PROXY with an unspecified family: the connection's own
                       * endpoints stand; src and dst are not set */
    bool is_unnamed;  /* v1 UNKNOWN or v2 PROXY with an unspecified family: unlike
                       * LOCAL, a relayed connection whose source the balancer could
                       * not name (2.1: "only when it is not possible to correctly
                       * fill the PROXY line"), so not the balancer's own requests */
    gw_ip_t src, dst; /* AF_INET, AF_INET6, or AF_UNIX (the client came over a unix
                       * socket: no address) */
    uint16_t src_port, dst_port;
    bool is_ssl;      /* v2: a PP2_TYPE_SSL TLV says the client spoke TLS to the balancer */
} gw_proxy_info_t;

/* v1's longest line (proxy-protocol.txt 2.1: 107 bytes with its CRLF). */
#define GW_PROXY_V1_MAX 107
/* v2: the fixed 16 bytes plus the largest address block kept (IPv6's 36;
 * a unix socket's 216 bytes of paths are skipped like TLVs). */
#define GW_PROXY_KEEP (GW_PROXY_V1_MAX + 1)

typedef struct gw_proxy {
    uint8_t buf[GW_PROXY_KEEP]; /* v1: the line so far; v2: header and addresses */
    uint16_t have;              /* bytes in buf */
    uint8_t version;            /* 0 while the signature is undecided */
    /* v2: the block after the fixed 16 bytes, read as it streams past */
    uint32_t blen;              /* its announced length */
    uint32_t pos;               /* bytes of it read */
    uint32_t keep;              /* its first bytes kept in buf: the addresses */
    uint32_t raw_end;           /* up to here it is skipped unread (unix paths; all of a
                                 * LOCAL's); TLVs follow */
    bool has_tlvs;
    uint8_t tlv_hdr[3];
    uint8_t tlv_have;           /* bytes of tlv_hdr read */
    uint16_t tlv_left;          /* bytes of the current TLV's value still to skip */
    bool tlv_is_ssl;            /* the current TLV is PP2_TYPE_SSL... */
    bool tlv_first;             /* ...and its first value byte (the client flags) is next */
    gw_proxy_info_t info;
    const char *reason;         /* after GW_PROXY_ERROR: why (static) */
} gw_proxy_t;

/* Prepares p for a connection's header. */
void gw_proxy_init(gw_proxy_t *p);

/* Takes bytes of the header from data[0..n). *used: bytes taken (n after
 * AGAIN; after DONE, the header's last bytes, the rest being the request's;
 * 0 after ERROR). After DONE, p->info holds what the header says. Never
 * reads past data + n or keeps data. */
gw_proxy_st_t gw_proxy_feed(gw_proxy_t *p, const char *data, size_t n, size_t *used);

#endif
