/* The PROXY protocol header, v1 and v2 (proxy.h). Read as it streams in:
 * the signature byte by byte (so garbage is refused at its first byte that
 * cannot belong to a header), then v1's line up to its CRLF (107 bytes at
 * most), or v2's 16 fixed bytes and its block: the addresses are kept, a
 * unix socket's paths and every TLV are skipped as they pass, up to the
 * block's announced length (65535 bytes at most), so nothing here grows
 * with the input. */
#include "proto/proxy.h"

#include <string.h>
#include <sys/socket.h>

static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
/* proxy-protocol.txt 2.2: \r\n\r\n\0\r\nQUIT\n, chosen to be invalid in HTTP. */
static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define V2_FIXED 16
#define PP2_TYPE_SSL 0x20
#define PP2_CLIENT_SSL 0x01

/* v2's address block layouts by family byte (transport STREAM only: this is
 * a TCP server; DGRAM describes no connection it could be serving). */
#define FAM_UNSPEC 0x00
#define FAM_TCP4 0x11
#define FAM_TCP6 0x21
#define FAM_UNIX 0x31
#define LEN_TCP4 12
#define LEN_TCP6 36
#define LEN_UNIX 216

void gw_proxy_init(gw_proxy_t *p)
{
    memset(p, 0, sizeof(*p));
}

static gw_proxy_st_t fail(gw_proxy_t *p, const char *reason, size_t *used)
{
    p->reason = reason;
    *used = 0;
    return GW_PROXY_ERROR;
}

/* A v1 port: decimal 0..65535, no sign, no leading zero (the spec's
 * "unsigned integer"; one spelling per number). */
static bool v1_port(const uint8_t *s, size_t n, uint16_t *port)
{
    uint32_t v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* "PROXY " then line[6..n) (the CRLF excluded): "UNKNOWN[ anything]" or
 * "TCP4|TCP6 src dst sport dport", single spaces. */
static const char *parse_v1(gw_proxy_t *p, const uint8_t *line, size_t n)
{
    const uint8_t *f[5];
    size_t fl[5], nf = 0, i = 6, start = 6;
    gw_proxy_info_t *in = &p->info;
    int family;

    in->version = 1;
    if (n - 6 >= 7 && memcmp(line + 6, "UNKNOWN", 7) == 0 && (n == 13 || line[13] == ' ')) {
        /* 2.1: the receiver ignores the rest and uses the real endpoints */
        in->is_local = in->is_unnamed = true;
        return NULL;
    }
    for (; i <= n; i++) {
        if (i < n && line[i] != ' ')
            continue;
        if (nf == 5)
            return "v1: too many fields";
        f[nf] = line + start;
        fl[nf++] = i - start;
        start = i + 1;
    }
    if (nf != 5)
        return "v1: expected 'TCP4|TCP6 src dst sport dport'";
    if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return "v1: unknown protocol";
    if (gw_allow_ip_parse(&in->src, (const char *)f[1], fl[1]) < 0 ||
        gw_allow_ip_parse(&in->dst, (const char *)f[2], fl[2]) < 0 ||
        in->src.family != family || in->dst.family != family)
        return "v1: bad address";
    if (!v1_port(f[3], fl[3], &in->src_port) || !v1_port(f[4], fl[4], &in->dst_port))
        return "v1: bad port";
    return NULL;
}

/* Reads v1 bytes into the line until its LF. */
static gw_proxy_st_t feed_v1(gw_proxy_t *p, const uint8_t *d, size_t n, size_t *used)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t b = d[i];
        const char *why;

        if (p->have >= GW_PROXY_V1_MAX)
            return fail(p, "v1: no CRLF within 107 bytes", used);
        p->buf[p->have++] = b;
        if (b != '\n') {
            /* The line is printable ASCII; a CR only right before the LF. */
            if ((b < 0x20 && b != '\r') || b > 0x7e ||
                (p->have >= 2 && p->buf[p->have - 2] == '\r'))
                return fail(p, "v1: not a header line", used);
            continue;
        }
        if (p->have < 2 || p->buf[p->have - 2] != '\r')
            return fail(p, "v1: LF without CR", used);
        if ((why = parse_v1(p, p->buf, p->have - 2)))
            return fail(p, why, used);
        *used = i + 1;
        return GW_PROXY_DONE;
    }
    *used = n;
    return GW_PROXY_AGAIN;
}

/* The fixed 16 bytes are in: what the block holds and how to read it. */
static const char *start_v2(gw_proxy_t *p)
{
    uint8_t vc = p->buf[12], fam = p->buf[13];
    gw_proxy_info_t *in = &p->info;

    in->version = 2;
    p->blen = (uint32_t)p->buf[14] << 8 | p->buf[15];
    if (vc >> 4 != 2)
        return "v2: unknown version";
    if ((vc & 0x0f) == 0x00) { /* LOCAL: the block, family included, is ignored (2.2) */
        in->is_local = true;
        p->raw_end = p->blen;
        return NULL;
    }
    if ((vc & 0x0f) != 0x01)
        return "v2: unknown command";
    switch (fam) {
    case FAM_UNSPEC: /* 2.2: forwarded for an unknown protocol: real endpoints */
        in->is_local = in->is_unnamed = true;
        p->raw_end = p->blen;
        return NULL;
    case FAM_TCP4:
        p->keep = LEN_TCP4;
        break;
    case FAM_TCP6:
        p->keep = LEN_TCP6;
        break;
    case FAM_UNIX:
        p->raw_end = LEN_UNIX; /* the paths: nothing a REMOTE_ADDR can say */
        break;
    default:
        return (fam & 0x0f) == 0x02 ? "v2: a datagram family" : "v2: unknown family";
    }
    if (p->keep > p->raw_end)
        p->raw_end = p->keep;
    if (p->blen < p->raw_end)
        return "v2: block shorter than its addresses";
    p->has_tlvs = true;
    return NULL;
}

/* Walks TLV bytes d[0..n): each is a type byte, a 16-bit length and that
 * many value bytes, which must end with the block. */
static const char *walk_tlvs(gw_proxy_t *p, const uint8_t *d, size_t n)
{
    size_t i = 0;

    while (i < n) {
        if (p->tlv_left) {
            size_t k = n - i < p->tlv_left ? n - i : p->tlv_left;
            if (p->tlv_is_ssl && p->tlv_first) {
                /* PP2_TYPE_SSL: client flags, a 32-bit verify result, then
                 * sub-TLVs; bit 0 of the flags: the client spoke TLS. */
                p->info.is_ssl = (d[i] & PP2_CLIENT_SSL) != 0;
                p->tlv_first = false;
            }
            p->tlv_left = (uint16_t)(p->tlv_left - k);
            i += k;
            continue;
        }
        p->tlv_hdr[p->tlv_have++] = d[i++];
        if (p->tlv_have < 3)
            continue;
        p->tlv_have = 0;
        p->tlv_left = (uint16_t)(p->tlv_hdr[1] << 8 | p->tlv_hdr[2]);
        if (p->tlv_left > p->blen - (p->pos + (uint32_t)i))
            return "v2: a TLV runs past the block";
        p->tlv_is_ssl = p->tlv_hdr[0] == PP2_TYPE_SSL && p->tlv_left >= 5;
        p->tlv_first = p->tlv_is_ssl;
    }
    return NULL;
}

static gw_proxy_st_t feed_v2(gw_proxy_t *p, const uint8_t *d, size_t n, size_t *used)
{
    size_t i = 0;
    const char *why;

    while (p->have < V2_FIXED) {
        if (i == n) {
            *used = n;
            return GW_PROXY_AGAIN;
        }
        p->buf[p->have++] = d[i++];
        if (p->have == V2_FIXED && (why = start_v2(p)))
            return fail(p, why, used);
    }
    while (p->pos < p->blen) {
        size_t k;
        if (i == n) {
            *used = n;
            return GW_PROXY_AGAIN;
        }
        k = n - i < p->blen - p->pos ? n - i : p->blen - p->pos;
        if (p->pos < p->keep) { /* the addresses, kept */
            if (k > p->keep - p->pos)
                k = p->keep - p->pos;
            memcpy(p->buf + V2_FIXED + p->pos, d + i, k);
        } else if (p->pos < p->raw_end) { /* skipped as they are */
            if (k > p->raw_end - p->pos)
                k = p->raw_end - p->pos;
        } else if ((why = walk_tlvs(p, d + i, k))) {
            return fail(p, why, used);
        }
        p->pos += (uint32_t)k;
        i += k;
    }
    if (p->has_tlvs && (p->tlv_have || p->tlv_left))
        return fail(p, "v2: a TLV cut short by the block's end", used);
    if (!p->info.is_local) {
        const uint8_t *a = p->buf + V2_FIXED;
        gw_proxy_info_t *in = &p->info;
        if (p->buf[13] == FAM_TCP4) {
            in->src.family = in->dst.family = AF_INET;
            memcpy(in->src.a, a, 4);
            memcpy(in->dst.a, a + 4, 4);
            in->src_port = (uint16_t)(a[8] << 8 | a[9]);
            in->dst_port = (uint16_t)(a[10] << 8 | a[11]);
        } else if (p->buf[13] == FAM_TCP6) {
            in->src.family = in->dst.family = AF_INET6;
            memcpy(in->src.a, a, 16);
            memcpy(in->dst.a, a + 16, 16);
            in->src_port = (uint16_t)(a[32] << 8 | a[33]);
            in->dst_port = (uint16_t)(a[34] << 8 | a[35]);
        } else {
            in->src.family = in->dst.family = AF_UNIX;
        }
    }
    *used = i;
    return GW_PROXY_DONE;
}

gw_proxy_st_t gw_proxy_feed(gw_proxy_t *p, const char *data, size_t n, size_t *used)
{
    const uint8_t *d = (const uint8_t *)data;
    size_t i = 0;

    if (p->reason)
        return fail(p, p->reason, used); /* an error stays one */
    /* The signature, one byte at a time: refused at the first byte neither
     * signature has there (2.1, 2.2: a receiver must not wait for more). */
    while (p->version == 0) {
        bool v1, v2;
        if (i == n) {
            *used = n;
            return GW_PROXY_AGAIN;
        }
        p->buf[p->have] = d[i++];
        v1 = p->have < sizeof(v1_sig) && p->buf[p->have] == v1_sig[p->have] &&
             memcmp(p->buf, v1_sig, p->have) == 0;
        v2 = p->have < sizeof(v2_sig) && p->buf[p->have] == v2_sig[p->have] &&
             memcmp(p->buf, v2_sig, p->have) == 0;
        p->have++;
        if (!v1 && !v2)
            return fail(p, "not a PROXY protocol header", used);
        if (v1 && p->have == sizeof(v1_sig))
            p->version = 1;
        else if (v2 && p->have == sizeof(v2_sig))
            p->version = 2;
    }
    {
        size_t more;
        gw_proxy_st_t st = p->version == 1 ? feed_v1(p, d + i, n - i, &more)
                                           : feed_v2(p, d + i, n - i, &more);
        *used = st == GW_PROXY_ERROR ? 0 : i + more;
        return st;
    }
}
