#include "scoreboard.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define RELAXED memory_order_relaxed

const uint64_t gw_lat_bounds_us[GW_LAT_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000,
};

const char *const gw_method_names[GW_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
};

int gw_method_index(const char *m, size_t n)
{
    for (int i = 0; i < GW_METHODS - 1; i++)
        if (strlen(gw_method_names[i]) == n && memcmp(gw_method_names[i], m, n) == 0)
            return i;
    return GW_METHODS - 1;
}

/* The mapping: a cache line for nused, then the slots. */
#define HEAD 64

int gw_scoreboard_open(gw_scoreboard_t *sb, size_t nslots)
{
    void *p = mmap(NULL, HEAD + nslots * sizeof(gw_slot_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    sb->nused = p;
    sb->slots = (gw_slot_t *)((char *)p + HEAD);
    sb->nslots = nslots;
    return 0;
}

void gw_scoreboard_close(gw_scoreboard_t *sb)
{
    if (sb->nused)
        munmap((void *)sb->nused, HEAD + sb->nslots * sizeof(gw_slot_t));
    sb->nused = NULL;
    sb->slots = NULL;
    sb->nslots = 0;
}

void gw_scoreboard_use(gw_scoreboard_t *sb, size_t i)
{
    if (i < sb->nslots && atomic_load_explicit(sb->nused, RELAXED) < i + 1)
        atomic_store_explicit(sb->nused, (uint32_t)(i + 1), RELAXED);
}

size_t gw_scoreboard_used(const gw_scoreboard_t *sb)
{
    size_t n = atomic_load_explicit(sb->nused, RELAXED);
    return n < sb->nslots ? n : sb->nslots;
}

void gw_slot_reset(gw_slot_t *s, uint32_t generation)
{
    memset((void *)s, 0, sizeof(*s));
    atomic_store_explicit(&s->generation, generation, RELAXED);
    atomic_store_explicit(&s->state, GW_SLOT_STARTING, RELAXED);
}

void gw_slot_busy(gw_slot_t *s, uint64_t now_ms, const char *what, size_t what_len)
{
    if (what_len >= sizeof(s->current))
        what_len = sizeof(s->current) - 1;
    memcpy(s->current, what, what_len);
    s->current[what_len] = '\0';
    atomic_store_explicit(&s->busy_since_ms, now_ms ? now_ms : 1, memory_order_release);
}

void gw_slot_idle(gw_slot_t *s)
{
    atomic_store_explicit(&s->busy_since_ms, 0, memory_order_release);
}

/* One writer per slot: a load and a store, no read-modify-write needed. */
static void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, RELAXED) + by, RELAXED);
}

void gw_slot_count(gw_slot_t *s, int status, int method, uint64_t bytes_in, uint64_t bytes_out,
                   uint64_t duration_us)
{
    int cls = status >= 100 && status < 600 ? status / 100 - 1 : 5;
    int b = 0;

    while (b < GW_LAT_BUCKETS - 1 && duration_us > gw_lat_bounds_us[b])
        b++;
    bump(&s->requests, 1);
    bump(&s->bytes_in, bytes_in);
    bump(&s->bytes_out, bytes_out);
    bump(&s->status[cls], 1);
    bump(&s->methods[method >= 0 && method < GW_METHODS ? method : GW_METHODS - 1], 1);
    bump(&s->lat[b], 1);
    bump(&s->lat_sum_us, duration_us);
}

void gw_totals_add(gw_totals_t *t, const gw_slot_t *s)
{
#define GET(f) atomic_load_explicit(&s->f, RELAXED)
    t->requests += GET(requests);
    t->bytes_in += GET(bytes_in);
    t->bytes_out += GET(bytes_out);
    t->lat_sum_us += GET(lat_sum_us);
    t->harakiri += GET(harakiri);
    for (int i = 0; i < 6; i++)
        t->status[i] += GET(status[i]);
    for (int i = 0; i < GW_METHODS; i++)
        t->methods[i] += GET(methods[i]);
    for (int i = 0; i < GW_LAT_BUCKETS; i++)
        t->lat[i] += GET(lat[i]);
#undef GET
}
