/* A growing text buffer: what the statistics server answers and its
 * renderers write into. Out of memory, it stops growing and says so once,
 * for the caller to answer 500, instead of every append checking. */
#ifndef GW_TEXT_H
#define GW_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_text {
    char *p;
    size_t len, cap;
    bool is_failed; /* out of memory: the caller answers 500 */
} gw_text_t;

/* Append n bytes (or a C string, or printf-formatted text: 511 bytes at
 * most per call) and keep p NUL-terminated; the caller frees p. Nothing
 * happens once is_failed is set. */
void gw_text_put(gw_text_t *t, const char *s, size_t n);
void gw_text_puts(gw_text_t *t, const char *s);
void gw_text_printf(gw_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
