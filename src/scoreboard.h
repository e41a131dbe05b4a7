/* The scoreboard: one shared-memory slot per worker, written by that worker
 * (state, what Python is running and since when, counters, a latency
 * histogram) and read by the master for harakiri and statistics. The master
 * only resets a slot before it forks the slot's worker. No locks: each field
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

typedef struct gw_slot {
    _Atomic int32_t pid;
    _Atomic uint32_t state;
    _Atomic uint32_t generation;
    _Atomic uint64_t busy_since_ms; /* Python running for a request since (monotonic), 0: not */
    _Atomic uint64_t started_ms;    /* when the worker became ready */
    _Atomic uint64_t requests;
    _Atomic uint64_t bytes_out;
    _Atomic uint64_t status[6];     /* 1xx..5xx, other */
    _Atomic uint64_t lat[GW_LAT_BUCKETS];
    _Atomic uint64_t harakiri;
    _Atomic uint64_t conns;         /* open connections */
    char current[120];              /* "GET /path from 1.2.3.4" while busy */
} gw_slot_t;

typedef struct gw_scoreboard {
    size_t nslots;
    gw_slot_t *slots; /* shared mapping */
} gw_scoreboard_t;

/* Maps nslots shared slots (inherited across fork). 0 or -errno. */
int gw_scoreboard_open(gw_scoreboard_t *sb, size_t nslots);
void gw_scoreboard_close(gw_scoreboard_t *sb);

/* Master: clears a slot before forking its worker. */
void gw_slot_reset(gw_slot_t *s, uint32_t generation);

/* Worker: Python starts or stops running for a request (what: for logs). */
void gw_slot_busy(gw_slot_t *s, uint64_t now_ms, const char *what, size_t what_len);
void gw_slot_idle(gw_slot_t *s);

/* Worker: a request finished. */
void gw_slot_count(gw_slot_t *s, int status, uint64_t bytes, uint64_t duration_us);

#endif
