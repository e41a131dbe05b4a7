/* The worker's cached clock: read once per loop iteration, so that timers,
 * Date headers and log lines cost no syscall per request. Process-wide by
 * nature (like the kernel's clock it caches). */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <stdint.h>

#define GW_HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define GW_LOG_DATE_LEN 26  /* "[06/Nov/1994:08:49:37 +0000]" without brackets */

/* Re-reads the clocks; cheap when the second has not changed. */
void gw_clock_update(void);

/* Monotonic milliseconds as of the last update. */
uint64_t gw_clock_ms(void);

/* Monotonic microseconds, read now (for request durations). */
uint64_t gw_clock_us_now(void);

/* IMF-fixdate of the current second, GW_HTTP_DATE_LEN bytes, not terminated. */
const char *gw_clock_http_date(void);

/* Common-log-format date of the current second, NUL-terminated. */
const char *gw_clock_log_date(void);

/* ISO 8601 UTC of the current second ("2026-11-28T18:40:00Z"), NUL-terminated. */
const char *gw_clock_iso_date(void);

#endif
