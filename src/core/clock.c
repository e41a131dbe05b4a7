#include "core/clock.h"

#include <stdio.h>
#include <time.h>

static uint64_t mono_ms;
static time_t last_sec = -1;
static char http_date[64];
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
    snprintf(http_date, sizeof(http_date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
             days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
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
    return http_date;
}

const char *gw_clock_log_date(void)
{
    return log_date;
}

const char *gw_clock_iso_date(void)
{
    return iso_date;
}
