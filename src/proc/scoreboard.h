/* The scoreboard: one shared-memory slot per worker, written by that worker
 * (state, what Python is running and since when, counters, a latency
 * histogram) and read by the master for harakiri and statistics. The master
 * only resets a slot before it forks the slot's worker, and sets its state to
 * stopping when it tells the worker to stop. No locks: each field
 * is a relaxed atomic, and a reader may see a torn `current` string, which
 * is only ever logged. */
#ifndef GW_SCOREBOARD_H
#define GW_SCOREBOARD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum gw_slot_state {
    GW_SLOT_EMPTY,
    GW_SLOT_STARTING, /* forked, loading the app */
    GW_SLOT_READY,    /* serving */
    GW_SLOT_STOPPING, /* finishing what it holds */
};

/* Latency histogram bounds in microseconds; the last bucket is +Inf. */
#define GW_LAT_BUCKETS 14
extern const uint64_t gw_lat_bounds_us[GW_LAT_BUCKETS - 1];

/* Requests are counted by method: these seven, then everything else. */
#define GW_METHODS 8
extern const char *const gw_method_names[GW_METHODS];

/* Listeners whose accepts a slot counts apart (more share the counters). */
#define GW_SLOT_ACCEPTS 8

/* Why a worker stopped by itself (the master counts respawns by reason). */
enum gw_exit_reason {
    GW_EXIT_NONE,
    GW_EXIT_MAX_REQUESTS,
    GW_EXIT_LIFETIME,
    GW_EXIT_RSS,
    GW_EXIT_HARAKIRI, /* a request thread stuck in C past --harakiri-grace */
};

typedef struct gw_slot {
    _Atomic int32_t pid;
    _Atomic uint32_t state;
    _Atomic uint32_t generation;
    _Atomic uint64_t busy_since_ms; /* Python running for a request since (monotonic), 0: not */
    _Atomic uint64_t started_ms;    /* when the worker became ready */
    _Atomic uint64_t requests;
    _Atomic uint64_t bytes_in;      /* request heads and bodies */
    _Atomic uint64_t bytes_out;     /* response bodies */
    _Atomic uint64_t status[6];     /* 1xx..5xx, other */
    _Atomic uint64_t methods[GW_METHODS];
    _Atomic uint64_t lat[GW_LAT_BUCKETS];
    _Atomic uint64_t lat_sum_us;
    _Atomic uint64_t harakiri;
    _Atomic uint64_t conns;         /* open connections */
    _Atomic uint64_t conns_waiting; /* of those, a request begun and waiting on the client */
    /* connections accepted from listener i in accepts[i % GW_SLOT_ACCEPTS] (serve/accept.c's
     * step-back: "the worker I stepped back for took nothing from this listener since") */
    _Atomic uint64_t accepts[GW_SLOT_ACCEPTS];
    _Atomic uint32_t exit_reason;   /* enum gw_exit_reason, set before a recycling stop */
    /* --threads: the pool, written by the worker's threads (read-modify-write) */
    _Atomic uint32_t threads;       /* request threads (0: requests run on the loop's thread) */
    _Atomic uint32_t threads_busy;  /* running a request */
    _Atomic uint32_t queued;        /* complete requests waiting for a free thread */
    _Atomic uint64_t queue_wait[GW_LAT_BUCKETS]; /* how long each request waited, µs bounds */
    _Atomic uint64_t queue_wait_sum_us;
    _Atomic uint64_t queue_timeouts; /* answered 503 after --queue-timeout */
    char current[120];              /* "GET /path from 1.2.3.4" while busy */
} gw_slot_t;

typedef struct gw_scoreboard {
    size_t nslots;
    gw_slot_t *slots;        /* shared mapping */
    _Atomic uint32_t *nused; /* shared too: 1 + the highest slot ever given a worker */
    void *extra;             /* the master's own area after the slots (see below) */
    size_t extra_size;
    size_t size;             /* of the mapping */
    int fd;                  /* the memfd behind it; -1 once closed (workers) */
} gw_scoreboard_t;

/* Maps nslots shared slots (inherited across fork) and an extra area of
 * extra bytes for the master's own use, zeroed, in a memfd (close-on-exec).
 * The memfd is what lets a re-executed master (a reload) map the same
 * scoreboard again: the old workers go on counting in their slots and the
 * master's totals survive in the extra area. 0 or -errno. */
int gw_scoreboard_open(gw_scoreboard_t *sb, size_t nslots, size_t extra);

/* The same scoreboard, from the memfd a previous image handed over (the
 * caller owns fd until this succeeds). 0, or -EPROTO when it was made by a
 * gangway whose layout differs (another slot size, slot count or extra
 * size), or -errno. */
int gw_scoreboard_adopt(gw_scoreboard_t *sb, int fd, size_t nslots, size_t extra);

/* Unmaps and closes the memfd. Accepts a closed scoreboard. */
void gw_scoreboard_close(gw_scoreboard_t *sb);

/* A worker keeps the mapping only: the memfd is the master's. */
void gw_scoreboard_close_fd(gw_scoreboard_t *sb);

/* Master: slot i is about to get a worker. The master fills slots lowest
 * first, so the used ones sit at the start and a worker comparing loads
 * (on every accept) reads a few slots, not all of them. */
void gw_scoreboard_use(gw_scoreboard_t *sb, size_t i);

/* How many slots from the start may ever have held a worker. */
size_t gw_scoreboard_used(const gw_scoreboard_t *sb);

/* Master: clears a slot before forking its worker. */
void gw_slot_reset(gw_slot_t *s, uint32_t generation);

/* Worker: Python starts or stops running for a request (what: for logs). */
void gw_slot_busy(gw_slot_t *s, uint64_t now_ms, const char *what, size_t what_len);
void gw_slot_idle(gw_slot_t *s);

/* Worker, any thread: a request waited waited_us for a free thread. */
void gw_slot_queue_wait(gw_slot_t *s, uint64_t waited_us);

/* The index of a method in gw_method_names (the last one: any other). */
int gw_method_index(const char *m, size_t n);

/* Worker: a request finished. */
void gw_slot_count(gw_slot_t *s, int status, int method, uint64_t bytes_in, uint64_t bytes_out,
                   uint64_t duration_us);

/* The counters of a slot, added up: the master keeps the sum over workers
 * that are gone so that totals never go down when a worker is replaced. */
typedef struct gw_totals {
    uint64_t requests, bytes_in, bytes_out, lat_sum_us, harakiri;
    uint64_t queue_wait_sum_us, queue_timeouts;
    uint64_t queue_wait[GW_LAT_BUCKETS];
    uint64_t status[6];
    uint64_t methods[GW_METHODS];
    uint64_t lat[GW_LAT_BUCKETS];
} gw_totals_t;

void gw_totals_add(gw_totals_t *t, const gw_slot_t *s);

#endif
