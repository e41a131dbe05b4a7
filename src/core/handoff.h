/* The hand-off between a worker's loop thread and its request threads
 * (--threads N > 1, issue 16): the loop keeps every socket and hands
 * complete requests to the threads; the threads hand answers back. Three
 * pieces, none of which knows HTTP or Python:
 *
 *   gw_jobq_t     jobs for the threads: a FIFO threaded through the jobs
 *                 themselves and an idle-thread stack (LIFO: the thread
 *                 that ran last has the warmest caches). A job is queued,
 *                 and one idle thread is woken (one futex wake of that
 *                 thread only: no shared condition every thread sleeps
 *                 on) unless one is already on its way to the queue. The
 *                 thread takes its job only once it holds the GIL, and
 *                 then wakes the next one if jobs are left: with a
 *                 CPU-bound app the thread running the app takes the jobs
 *                 one after the other while the others sleep (no GIL
 *                 passed per request); an app that lets the GIL go (I/O)
 *                 lets the woken one take the next job at once.
 *   gw_news_t     the threads' news for the loop: an eventfd and a list of
 *                 nodes (connections) that have news, each queued once; the
 *                 eventfd is written only when the list was empty, so one
 *                 wake-up carries any number of them.
 *   gw_garbage_t  pointers the loop may not release itself (Python objects
 *                 whose bytes were sent: Py_DECREF needs the GIL), kept for a
 *                 thread holding it to release in one go.
 *
 * Nothing here allocates per job: jobs and news nodes live in the
 * connections, waiters in the threads; the garbage array grows to the
 * largest batch and stays. */
#ifndef GW_HANDOFF_H
#define GW_HANDOFF_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_job {
    struct gw_job *next; /* in the FIFO; private to the queue */
    void *arg;           /* the submitter's (a connection); NULL: "release the garbage" */
    uint64_t queued_us;  /* monotonic, set by gw_jobq_submit() */
    bool is_queued;      /* in the FIFO (under the queue's lock) */
} gw_job_t;

/* One per thread, embedded in whatever the thread owns. */
typedef struct gw_waiter {
    _Atomic uint32_t word;  /* futex: 0 asleep, 1 woken */
    struct gw_waiter *next; /* idle stack */
} gw_waiter_t;

typedef struct gw_jobq {
    pthread_mutex_t mu;
    gw_waiter_t *idle;     /* LIFO */
    gw_job_t *head, *tail; /* FIFO of jobs no thread was free for */
    _Atomic uint32_t nidle;
    _Atomic uint32_t nqueued;
    unsigned nwaking; /* threads woken (or let go) that have not taken a job yet */
    bool is_stopping;
} gw_jobq_t;

int gw_jobq_init(gw_jobq_t *q);
void gw_jobq_dispose(gw_jobq_t *q);

/* Loop: queues job and wakes the idle thread that went idle last, unless
 * a thread is already on its way to the queue (woken, waiting for the
 * GIL): true when it woke one. now_us stamps it for --queue-timeout and
 * the statistics. */
bool gw_jobq_submit(gw_jobq_t *q, gw_job_t *job, uint64_t now_us);

/* Thread, holding no lock (no GIL): true at once when jobs are queued and
 * no other thread is on its way to them, else waits (idle) until woken;
 * false once gw_jobq_stop() ran. Then gw_jobq_begin(). */
bool gw_jobq_wait(gw_jobq_t *q, gw_waiter_t *self);

/* Thread, after gw_jobq_wait() returned true, holding what serialises the
 * jobs (the GIL): the next queued job, or NULL (another thread took it, or
 * the queue stops: wait again). Wakes the next idle thread when more jobs
 * wait. */
gw_job_t *gw_jobq_begin(gw_jobq_t *q);

/* Thread: gw_jobq_wait() and gw_jobq_begin() until a job (for a thread
 * that has nothing to take in between). NULL once gw_jobq_stop() ran. */
gw_job_t *gw_jobq_take(gw_jobq_t *q, gw_waiter_t *self);

/* Thread: the next queued job, or NULL at once when there is none (a thread
 * that ends a request takes the next one without letting the GIL go). */
gw_job_t *gw_jobq_try_take(gw_jobq_t *q);

/* Loop: takes job out of the FIFO if it is still queued (its client went
 * away, or it waited too long); true when it was. */
bool gw_jobq_cancel(gw_jobq_t *q, gw_job_t *job);

/* Loop: the first queued job if it was submitted before before_us, taken
 * out of the FIFO; NULL otherwise (the FIFO is in submission order, so the
 * caller loops until NULL). */
gw_job_t *gw_jobq_expired(gw_jobq_t *q, uint64_t before_us);

/* Every idle thread, and every thread that asks later, gets NULL. */
void gw_jobq_stop(gw_jobq_t *q);

static inline unsigned gw_jobq_idle(gw_jobq_t *q)
{
    return atomic_load_explicit(&q->nidle, memory_order_relaxed);
}

static inline unsigned gw_jobq_queued(gw_jobq_t *q)
{
    return atomic_load_explicit(&q->nqueued, memory_order_relaxed);
}

typedef struct gw_news_node {
    struct gw_news_node *next;
    bool is_queued; /* under the list's lock */
} gw_news_node_t;

typedef struct gw_news {
    int fd; /* eventfd, for the loop to watch (readable: gw_news_take()) */
    pthread_mutex_t mu;
    gw_news_node_t *head, *tail;
    uint32_t flags;
} gw_news_t;

/* 0 or -errno. */
int gw_news_open(gw_news_t *n);
void gw_news_close(gw_news_t *n);

/* Any thread: node has news for the loop (queued once however often this
 * is called before the loop takes it). */
void gw_news_post(gw_news_t *n, gw_news_node_t *node);

/* Any thread: a flag for the loop (ORed into what gw_news_take() returns). */
void gw_news_flag(gw_news_t *n, uint32_t flag);

/* Loop: takes node out of the list if it is queued (its owner goes away
 * before the loop took its news). Walks the list: for the rare case. */
void gw_news_cancel(gw_news_t *n, gw_news_node_t *node);

/* Rings the eventfd whatever the list holds (the loop left nodes in it). */
void gw_news_wake(gw_news_t *n);

/* Loop, on the eventfd: clears it and returns the flags raised since. */
uint32_t gw_news_begin(gw_news_t *n);

/* Loop: the first queued node, taken out (a post from now on queues it
 * again, at the tail), or NULL. One at a time under the lock: a taken list
 * walked without it would follow links a thread rewrites when it posts a
 * node again. */
gw_news_node_t *gw_news_pop(gw_news_t *n);

typedef struct gw_garbage {
    pthread_mutex_t mu;
    void **v;
    size_t n, cap;
    void **spare; /* the drainer's array, swapped in (NULL while one drains) */
    size_t spare_cap;
    _Atomic size_t count; /* n, for a look without the lock */
    uint64_t lost;        /* pushes that found no memory (leaked, counted) */
} gw_garbage_t;

int gw_garbage_init(gw_garbage_t *g);
void gw_garbage_dispose(gw_garbage_t *g);

/* Any thread: p is to be released by a drainer. Never fails: without
 * memory to keep it, p is leaked and counted. */
void gw_garbage_push(gw_garbage_t *g, void *p);

/* A drainer: takes what is kept (*n pointers at the result), or NULL when
 * there is nothing or another drainer is at it; hand the array back with
 * gw_garbage_done() once released. */
void **gw_garbage_take(gw_garbage_t *g, size_t *n);
void gw_garbage_done(gw_garbage_t *g, void **v);

static inline size_t gw_garbage_count(gw_garbage_t *g)
{
    return atomic_load_explicit(&g->count, memory_order_relaxed);
}

#endif
