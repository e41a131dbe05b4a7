/* UTF-8 validation for the writers of JSON (the access log, --stats): a
 * value that is not UTF-8 must not make a document that is not JSON. */
#ifndef GW_UTF8_H
#define GW_UTF8_H

#include <stddef.h>

/* The length (2 to 4) of the well-formed multi-byte UTF-8 sequence at p,
 * which holds n bytes; 0 when there is none there (an ASCII byte, a stray
 * continuation byte, an overlong form, a surrogate, past U+10FFFF, cut
 * short). */
static inline size_t gw_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len = c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xf0 && c < 0xf5 ? 4 : 0;

    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) || /* overlong, surrogate */
        (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))   /* overlong, > U+10FFFF */
        return 0;
    return len;
}

#endif
