/* libFuzzer target for the PROXY protocol parser: bytes go straight into
 * gw_proxy_feed(), in reads of random sizes the way conn.c feeds what each
 * read() brought, and once whole. No sockets.
 *
 * Input: two control bytes, then the bytes "read" from the balancer.
 *   byte 0, bits 0-3: largest read, 0 = everything in one read, k = 2^(k-1)
 *   byte 1:           seed for the read sizes, each in 1 .. largest
 * Each read gets a fresh exact-size buffer, so that ASan catches a read past
 * the fed bytes or a pointer kept across feeds.
 *
 * Besides the sanitizers, it aborts when
 *   - a feed takes more than it was given, or AGAIN takes less than all;
 *   - a header is accepted that an independent look at its frame refuses:
 *     v1 must start "PROXY ", end at its first CRLF and be at most 107
 *     bytes; v2 must start with the 12-byte signature, version 2, and take
 *     exactly 16 + its length field bytes;
 *   - what it says is inconsistent (addresses of the family the header
 *     names, none for LOCAL);
 *   - an error comes without a reason, or after AGAIN took bytes it could
 *     have refused at once (a header prefix of the signature is fine);
 *   - one read and the chosen reads come out different. */
#include "core/allow.c"
#include "proto/proxy.c"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "proxy_fuzz: " __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

typedef struct outcome {
    gw_proxy_st_t st;
    size_t used;
    gw_proxy_info_t info;
    const char *reason;
} outcome_t;

static uint32_t next_rand(uint32_t *x)
{
    uint32_t v = *x ? *x : 0x9e3779b9u;
    v ^= v << 13;
    v ^= v >> 17;
    v ^= v << 5;
    return *x = v;
}

static void run(const uint8_t *in, size_t n, size_t maxread, uint32_t seed, outcome_t *o)
{
    gw_proxy_t p;
    size_t pos = 0;

    gw_proxy_init(&p);
    memset(o, 0, sizeof(*o));
    o->st = GW_PROXY_AGAIN;
    while (pos < n) {
        size_t add = maxread ? 1 + next_rand(&seed) % maxread : n - pos, used = 0;
        char *piece;

        if (add > n - pos)
            add = n - pos;
        if (!(piece = malloc(add)))
            FAIL("out of memory");
        memcpy(piece, in + pos, add);
        o->st = gw_proxy_feed(&p, piece, add, &used);
        free(piece);
        if (used > add)
            FAIL("took %zu of %zu", used, add);
        o->used += used;
        if (o->st == GW_PROXY_AGAIN && used != add)
            FAIL("AGAIN after taking %zu of %zu", used, add);
        if (o->st != GW_PROXY_AGAIN)
            break;
        pos += add;
    }
    o->info = p.info;
    o->reason = p.reason;
    if (o->st == GW_PROXY_ERROR && !o->reason)
        FAIL("an error without a reason");
}

static void check_done(const uint8_t *in, const outcome_t *o)
{
    const gw_proxy_info_t *i = &o->info;

    if (i->version == 1) {
        if (o->used < 8 || o->used > GW_PROXY_V1_MAX || memcmp(in, "PROXY ", 6) != 0 ||
            in[o->used - 2] != '\r' || in[o->used - 1] != '\n')
            FAIL("v1 header of %zu bytes accepted", o->used);
        for (size_t k = 0; k + 2 < o->used; k++)
            if (in[k] == '\r' || in[k] == '\n')
                FAIL("v1 header with a CR or LF inside accepted");
        if (i->is_ssl)
            FAIL("v1 says TLS");
    } else if (i->version == 2) {
        size_t len = 16 + ((size_t)in[14] << 8 | in[15]);
        if (o->used != len || memcmp(in, v2_sig, 12) != 0 || in[12] >> 4 != 2)
            FAIL("v2 header of %zu bytes accepted (length says %zu)", o->used, len);
        if ((in[12] & 0x0f) == 0 && !i->is_local)
            FAIL("LOCAL not local");
    } else {
        FAIL("DONE with version %u", i->version);
    }
    if (i->is_local) {
        if (i->src.family || i->dst.family || i->src_port || i->dst_port)
            FAIL("a local header with addresses");
    } else if (i->src.family != i->dst.family ||
               (i->src.family != AF_INET && i->src.family != AF_INET6 &&
                i->src.family != AF_UNIX)) {
        FAIL("families %u and %u", i->src.family, i->dst.family);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outcome_t whole, pieces;
    size_t maxread;

    if (size < 2)
        return 0;
    maxread = (data[0] & 0x0f) ? (size_t)1 << ((data[0] & 0x0f) - 1) : 0;
    run(data + 2, size - 2, 0, 0, &whole);
    if (whole.st == GW_PROXY_DONE)
        check_done(data + 2, &whole);
    if (whole.st == GW_PROXY_ERROR && whole.used)
        FAIL("an error that took bytes");
    if (maxread) {
        run(data + 2, size - 2, maxread, data[1], &pieces);
        /* (after an error, what earlier reads took differs: only DONE's count) */
        if (pieces.st != whole.st || (whole.st == GW_PROXY_DONE && pieces.used != whole.used) ||
            (whole.st == GW_PROXY_ERROR && pieces.reason != whole.reason) ||
            (whole.st == GW_PROXY_DONE && memcmp(&pieces.info, &whole.info, sizeof(whole.info))))
            FAIL("one read gives %d/%zu (%s), pieces give %d/%zu (%s)", whole.st, whole.used,
                 whole.reason ? whole.reason : "-", pieces.st, pieces.used,
                 pieces.reason ? pieces.reason : "-");
    }
    return 0;
}
