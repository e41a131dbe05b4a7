#include "core/clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static uint64_t mono_ms;
static time_t last_sec = -1;
/* Request threads (--threads) copy the Date while the loop's thread
 * refreshes it: two buffers, the one not published is written, then
 * published; a copy takes nanoseconds and a buffer is rewritten two seconds
 * after it was published, so no reader sees half of two dates. */
static char http_dates[2][64];
static _Atomic(const char *) http_date = http_dates[0];
static char log_date[40];
static char iso_date[40];

void gw_clock_update(void)
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    mono_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == last_sec)
        return;
    last_sec = ts.tv_sec;
    gmtime_r(&ts.tv_sec, &tm);
    {
        char *d = atomic_load_explicit(&http_date, memory_order_relaxed) == http_dates[0]
                      ? http_dates[1]
                      : http_dates[0];
        snprintf(d, sizeof(http_dates[0]), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
        atomic_store_explicit(&http_date, d, memory_order_release);
    }
    snprintf(log_date, sizeof(log_date), "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    snprintf(iso_date, sizeof(iso_date), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

uint64_t gw_clock_ms(void)
{
    return mono_ms;
}

uint64_t gw_clock_us_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

const char *gw_clock_http_date(void)
{
    return atomic_load_explicit(&http_date, memory_order_acquire);
}

const char *gw_clock_log_date(void)
{
    return log_date;
}

const char *gw_clock_iso_date(void)
{
    return iso_date;
}
