#include "proc/scoreboard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The mapping: a cache line for nused and the layout, the slots, then the
 * master's extra area. A re-executed master may be another version of
 * gangway: it maps the old scoreboard only when the layout matches. */
#define HEAD 64
#define MAGIC 0x67777362u /* "gwsb" */
#define LAYOUT 4          /* bump when a field of gw_slot_t changes meaning */

typedef struct head {
    _Atomic uint32_t nused; /* first: workers read it on every accept */
    uint32_t magic;
    uint32_t layout;
    uint32_t slot_size;
    uint64_t nslots;
    uint64_t extra_size;
} head_t;

_Static_assert(sizeof(head_t) <= HEAD, "the head fits its cache line");

static size_t map_size(size_t nslots, size_t extra)
{
    return HEAD + nslots * sizeof(gw_slot_t) + extra;
}

static int map(gw_scoreboard_t *sb, int fd, size_t nslots, size_t extra)
{
    size_t size = map_size(nslots, extra);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    if (p == MAP_FAILED)
        return -errno;
    sb->nused = p;
    sb->slots = (gw_slot_t *)((char *)p + HEAD);
    sb->nslots = nslots;
    sb->extra = (char *)p + HEAD + nslots * sizeof(gw_slot_t);
    sb->extra_size = extra;
    sb->size = size;
    sb->fd = fd;
    return 0;
}

int gw_scoreboard_open(gw_scoreboard_t *sb, size_t nslots, size_t extra)
{
    int fd = memfd_create("gangway-scoreboard", MFD_CLOEXEC), rc;
    head_t *h;

    sb->fd = -1;
    if (fd < 0)
        return -errno;
    /* ftruncate zeroes it: every slot starts empty, the extra area unused */
    if (ftruncate(fd, (off_t)map_size(nslots, extra)) < 0) {
        rc = -errno;
        goto close_fd;
    }
    if ((rc = map(sb, fd, nslots, extra)) < 0)
        goto close_fd;
    h = (head_t *)(void *)sb->nused;
    h->magic = MAGIC;
    h->layout = LAYOUT;
    h->slot_size = sizeof(gw_slot_t);
    h->nslots = nslots;
    h->extra_size = extra;
    return 0;
close_fd:
    close(fd);
    return rc;
}

int gw_scoreboard_adopt(gw_scoreboard_t *sb, int fd, size_t nslots, size_t extra)
{
    struct stat st;
    head_t h;
    int rc;

    sb->fd = -1;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != map_size(nslots, extra))
        return -EPROTO;
    /* read the head first: a mapping of the wrong size would be no use */
    if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
        return -EPROTO;
    if (h.magic != MAGIC || h.layout != LAYOUT || h.slot_size != sizeof(gw_slot_t) ||
        h.nslots != nslots || h.extra_size != extra)
        return -EPROTO;
    if ((rc = map(sb, fd, nslots, extra)) < 0)
        return rc;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

void gw_scoreboard_close(gw_scoreboard_t *sb)
{
    if (sb->nused)
        munmap((void *)sb->nused, sb->size);
    gw_scoreboard_close_fd(sb);
    sb->nused = NULL;
    sb->slots = NULL;
    sb->extra = NULL;
    sb->nslots = 0;
}

void gw_scoreboard_close_fd(gw_scoreboard_t *sb)
{
    if (sb->fd >= 0)
        close(sb->fd);
    sb->fd = -1;
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

void gw_slot_queue_wait(gw_slot_t *s, uint64_t waited_us)
{
    int b = 0;

    while (b < GW_LAT_BUCKETS - 1 && waited_us > gw_lat_bounds_us[b])
        b++;
    /* Several request threads write these: read-modify-write. */
    atomic_fetch_add_explicit(&s->queue_wait[b], 1, RELAXED);
    atomic_fetch_add_explicit(&s->queue_wait_sum_us, waited_us, RELAXED);
}

void gw_totals_add(gw_totals_t *t, const gw_slot_t *s)
{
#define GET(f) atomic_load_explicit(&s->f, RELAXED)
    t->requests += GET(requests);
    t->bytes_in += GET(bytes_in);
    t->bytes_out += GET(bytes_out);
    t->lat_sum_us += GET(lat_sum_us);
    t->harakiri += GET(harakiri);
    t->queue_wait_sum_us += GET(queue_wait_sum_us);
    t->queue_timeouts += GET(queue_timeouts);
    for (int i = 0; i < GW_LAT_BUCKETS; i++)
        t->queue_wait[i] += GET(queue_wait[i]);
    for (int i = 0; i < 6; i++)
        t->status[i] += GET(status[i]);
    for (int i = 0; i < GW_METHODS; i++)
        t->methods[i] += GET(methods[i]);
    for (int i = 0; i < GW_LAT_BUCKETS; i++)
        t->lat[i] += GET(lat[i]);
#undef GET
}
