/* The worker's reactor: epoll (edge-triggered for connections), timer queues
 * and hooks around the blocking wait. Knows nothing about HTTP or Python. */
#ifndef GW_LOOP_H
#define GW_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct gw_loop gw_loop_t;
typedef struct gw_watch gw_watch_t;

typedef void (*gw_watch_cb)(gw_loop_t *loop, gw_watch_t *w, uint32_t events);

/* Embedded by whoever owns the fd. */
struct gw_watch {
    int fd;
    gw_watch_cb cb;
};

/* Timers live in queues of one fixed duration: a timer started later always
 * expires later, so each queue is a FIFO and start/stop/expire are O(1). */
typedef struct gw_timer gw_timer_t;
typedef void (*gw_timer_cb)(gw_loop_t *loop, gw_timer_t *t);

struct gw_timer {
    gw_timer_t *prev, *next; /* NULL when not queued */
    struct gw_timerq *q;
    uint64_t deadline_ms;
    gw_timer_cb cb;
};

typedef struct gw_timerq {
    gw_timer_t head; /* sentinel of a circular list */
    uint64_t ms;
    struct gw_timerq *next_q;
} gw_timerq_t;

/* Hooks the owner gives: run before each wait (serve the ready queue, flush
 * logs) and around the blocking wait itself (release and re-take the GIL). */
typedef struct gw_loop_hooks {
    void *ctx;
    void (*before_wait)(void *ctx);
    void (*block_begin)(void *ctx);
    void (*block_end)(void *ctx);
    bool (*has_pending)(void *ctx); /* true: poll without sleeping */
} gw_loop_hooks_t;

/* Returns NULL on failure with errno set. */
gw_loop_t *gw_loop_new(const gw_loop_hooks_t *hooks);
void gw_loop_free(gw_loop_t *loop);

/* Registers w->fd for events (EPOLLIN, EPOLLOUT, EPOLLET, ...); 0 or -errno. */
int gw_loop_add(gw_loop_t *loop, gw_watch_t *w, uint32_t events);
int gw_loop_mod(gw_loop_t *loop, gw_watch_t *w, uint32_t events);
void gw_loop_del(gw_loop_t *loop, gw_watch_t *w);

/* A queue whose timers fire ms after they start. */
void gw_timerq_init(gw_loop_t *loop, gw_timerq_t *q, uint64_t ms);

void gw_timer_init(gw_timer_t *t, gw_timer_cb cb);
/* (Re)starts t in q, from the loop's cached now. */
void gw_timer_start(gw_timerq_t *q, gw_timer_t *t);
void gw_timer_stop(gw_timer_t *t);
static inline bool gw_timer_is_active(const gw_timer_t *t) { return t->next != 0; }

/* Runs until gw_loop_stop(); returns 0 or -errno of a failed epoll_wait. */
int gw_loop_run(gw_loop_t *loop);
void gw_loop_stop(gw_loop_t *loop);

#endif
