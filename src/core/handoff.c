#include "core/handoff.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GARBAGE_START 256

/* A private futex: the waiter is woken by its own word, not a condition
 * every idle thread sleeps on (a broadcast, or a signal that wakes one that
 * then finds the job taken). */
static void futex_wait(_Atomic uint32_t *word, uint32_t val)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- jobs ---- */

int gw_jobq_init(gw_jobq_t *q)
{
    int e = pthread_mutex_init(&q->mu, NULL);
    if (e)
        return -e;
    q->idle = NULL;
    q->head = q->tail = NULL;
    atomic_init(&q->nidle, 0);
    atomic_init(&q->nqueued, 0);
    q->nwaking = 0;
    q->is_stopping = false;
    return 0;
}

void gw_jobq_dispose(gw_jobq_t *q)
{
    pthread_mutex_destroy(&q->mu);
}

static void wake(gw_waiter_t *w)
{
    atomic_store_explicit(&w->word, 1, memory_order_release);
    futex_wake(&w->word);
}

/* Under the lock: the idle thread to wake for queued jobs, or NULL (one is
 * already on its way, or none is idle). */
static gw_waiter_t *pick_idle(gw_jobq_t *q)
{
    gw_waiter_t *w;

    if (q->nwaking || !(w = q->idle))
        return NULL;
    q->idle = w->next;
    atomic_store_explicit(&q->nidle, atomic_load_explicit(&q->nidle, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    q->nwaking++;
    return w;
}

bool gw_jobq_submit(gw_jobq_t *q, gw_job_t *job, uint64_t now_us)
{
    gw_waiter_t *w;

    job->queued_us = now_us;
    job->next = NULL;
    pthread_mutex_lock(&q->mu);
    job->is_queued = true;
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    atomic_store_explicit(&q->nqueued, atomic_load_explicit(&q->nqueued, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    w = pick_idle(q);
    pthread_mutex_unlock(&q->mu);
    if (w)
        wake(w); /* after the unlock: it takes the lock at once */
    return w != NULL;
}

/* Under the lock: the first queued job, taken out. */
static gw_job_t *pop(gw_jobq_t *q)
{
    gw_job_t *job = q->head;

    if (!job)
        return NULL;
    q->head = job->next;
    if (!q->head)
        q->tail = NULL;
    job->next = NULL;
    job->is_queued = false;
    atomic_store_explicit(&q->nqueued, atomic_load_explicit(&q->nqueued, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    return job;
}

bool gw_jobq_wait(gw_jobq_t *q, gw_waiter_t *self)
{
    pthread_mutex_lock(&q->mu);
    if (q->is_stopping) {
        pthread_mutex_unlock(&q->mu);
        return false;
    }
    /* Queued after this thread found none (it was busy then, so nobody was
     * woken for them) and nobody is on the way: it goes itself. */
    if (q->head && !q->nwaking) {
        q->nwaking++;
        pthread_mutex_unlock(&q->mu);
        return true;
    }
    atomic_store_explicit(&self->word, 0, memory_order_relaxed);
    self->next = q->idle;
    q->idle = self;
    atomic_store_explicit(&q->nidle, atomic_load_explicit(&q->nidle, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&q->mu);
    while (atomic_load_explicit(&self->word, memory_order_acquire) == 0)
        futex_wait(&self->word, 0);
    /* Woken by a submit (counted in nwaking) or by the stop (then begin()
     * finds it stopping and the next wait says so). */
    return true;
}

gw_job_t *gw_jobq_begin(gw_jobq_t *q)
{
    gw_waiter_t *w = NULL;
    gw_job_t *job = NULL;

    pthread_mutex_lock(&q->mu);
    q->nwaking--;
    if (!q->is_stopping && (job = pop(q)) && q->head)
        w = pick_idle(q); /* more wait: the next thread comes to the queue */
    pthread_mutex_unlock(&q->mu);
    if (w)
        wake(w);
    return job;
}

gw_job_t *gw_jobq_take(gw_jobq_t *q, gw_waiter_t *self)
{
    gw_job_t *job;

    while (gw_jobq_wait(q, self))
        if ((job = gw_jobq_begin(q)))
            return job;
    return NULL;
}

gw_job_t *gw_jobq_try_take(gw_jobq_t *q)
{
    gw_job_t *job = NULL;

    if (!gw_jobq_queued(q))
        return NULL; /* the common case costs no lock */
    pthread_mutex_lock(&q->mu);
    if (!q->is_stopping)
        job = pop(q);
    pthread_mutex_unlock(&q->mu);
    return job;
}

bool gw_jobq_cancel(gw_jobq_t *q, gw_job_t *job)
{
    gw_job_t *p, *prev = NULL;
    bool found = false;

    pthread_mutex_lock(&q->mu);
    if (job->is_queued) {
        for (p = q->head; p && p != job; p = p->next)
            prev = p;
        if (p) {
            if (prev)
                prev->next = job->next;
            else
                q->head = job->next;
            if (q->tail == job)
                q->tail = prev;
            job->next = NULL;
            job->is_queued = false;
            atomic_store_explicit(&q->nqueued,
                                  atomic_load_explicit(&q->nqueued, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
            found = true;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return found;
}

gw_job_t *gw_jobq_expired(gw_jobq_t *q, uint64_t before_us)
{
    gw_job_t *job = NULL;

    if (!gw_jobq_queued(q))
        return NULL; /* the common case costs no lock */
    pthread_mutex_lock(&q->mu);
    if (q->head && q->head->queued_us < before_us)
        job = pop(q);
    pthread_mutex_unlock(&q->mu);
    return job;
}

void gw_jobq_stop(gw_jobq_t *q)
{
    gw_waiter_t *w, *next;

    pthread_mutex_lock(&q->mu);
    q->is_stopping = true;
    w = q->idle;
    q->idle = NULL;
    /* Each one woken calls gw_jobq_begin(), which counts it out again. */
    q->nwaking += atomic_load_explicit(&q->nidle, memory_order_relaxed);
    atomic_store_explicit(&q->nidle, 0, memory_order_relaxed);
    pthread_mutex_unlock(&q->mu);
    for (; w; w = next) {
        next = w->next; /* read before the wake: the thread may leave at once */
        wake(w);
    }
}

/* ---- news ---- */

int gw_news_open(gw_news_t *n)
{
    int e;

    n->head = n->tail = NULL;
    n->flags = 0;
    if ((n->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return -errno;
    if ((e = pthread_mutex_init(&n->mu, NULL))) {
        close(n->fd);
        n->fd = -1;
        return -e;
    }
    return 0;
}

void gw_news_close(gw_news_t *n)
{
    if (n->fd < 0)
        return;
    close(n->fd);
    n->fd = -1;
    pthread_mutex_destroy(&n->mu);
}

static void ring(gw_news_t *n)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is near 2^64: it is readable anyway. */
    while (write(n->fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void gw_news_post(gw_news_t *n, gw_news_node_t *node)
{
    bool was_empty;

    pthread_mutex_lock(&n->mu);
    if (node->is_queued) {
        pthread_mutex_unlock(&n->mu);
        return;
    }
    /* Flags do not count: one raised without a ring (none ever is now)
     * would otherwise silence every post after it. */
    was_empty = !n->head;
    node->is_queued = true;
    node->next = NULL;
    if (n->tail)
        n->tail->next = node;
    else
        n->head = node;
    n->tail = node;
    pthread_mutex_unlock(&n->mu);
    /* After the unlock: the loop, woken, takes the lock at once. Only the
     * first post of a batch rings; the loop reads the eventfd before it
     * takes the list, so a post after its take rings again. */
    if (was_empty)
        ring(n);
}

void gw_news_wake(gw_news_t *n)
{
    ring(n);
}

void gw_news_flag(gw_news_t *n, uint32_t flag)
{
    bool was_empty;

    pthread_mutex_lock(&n->mu);
    /* The loop reads the flags only in gw_news_begin(), before its pops: a
     * flag raised while it pops (the list not empty) must ring too. */
    was_empty = !n->flags;
    n->flags |= flag;
    pthread_mutex_unlock(&n->mu);
    if (was_empty)
        ring(n);
}

void gw_news_cancel(gw_news_t *n, gw_news_node_t *node)
{
    gw_news_node_t *p, *prev = NULL;

    pthread_mutex_lock(&n->mu);
    if (node->is_queued) {
        for (p = n->head; p && p != node; p = p->next)
            prev = p;
        if (p) {
            if (prev)
                prev->next = node->next;
            else
                n->head = node->next;
            if (n->tail == node)
                n->tail = prev;
        }
        node->next = NULL;
        node->is_queued = false;
    }
    pthread_mutex_unlock(&n->mu);
}

uint32_t gw_news_begin(gw_news_t *n)
{
    uint64_t v;
    uint32_t flags;

    /* Read before the pops: a post after the last pop rings again. */
    while (read(n->fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&n->mu);
    flags = n->flags;
    n->flags = 0;
    pthread_mutex_unlock(&n->mu);
    return flags;
}

gw_news_node_t *gw_news_pop(gw_news_t *n)
{
    gw_news_node_t *node;

    pthread_mutex_lock(&n->mu);
    if ((node = n->head)) {
        n->head = node->next;
        if (!n->head)
            n->tail = NULL;
        node->next = NULL;
        node->is_queued = false;
    }
    pthread_mutex_unlock(&n->mu);
    return node;
}

/* ---- garbage ---- */

int gw_garbage_init(gw_garbage_t *g)
{
    int e = pthread_mutex_init(&g->mu, NULL);
    if (e)
        return -e;
    g->n = 0;
    g->lost = 0;
    atomic_init(&g->count, 0);
    g->v = malloc(GARBAGE_START * sizeof(void *));
    g->spare = malloc(GARBAGE_START * sizeof(void *));
    g->cap = g->spare_cap = GARBAGE_START;
    if (!g->v || !g->spare) {
        free(g->v);
        free(g->spare);
        pthread_mutex_destroy(&g->mu);
        return -ENOMEM;
    }
    return 0;
}

void gw_garbage_dispose(gw_garbage_t *g)
{
    free(g->v);
    free(g->spare);
    g->v = g->spare = NULL;
    pthread_mutex_destroy(&g->mu);
}

void gw_garbage_push(gw_garbage_t *g, void *p)
{
    pthread_mutex_lock(&g->mu);
    if (g->n == g->cap) {
        /* Grows to the largest batch between two drains, then stays. */
        void **nv = g->cap < SIZE_MAX / (2 * sizeof(void *))
                        ? realloc(g->v, 2 * g->cap * sizeof(void *))
                        : NULL;
        if (!nv) {
            g->lost++;
            pthread_mutex_unlock(&g->mu);
            return;
        }
        g->v = nv;
        g->cap *= 2;
    }
    g->v[g->n++] = p;
    atomic_store_explicit(&g->count, g->n, memory_order_relaxed);
    pthread_mutex_unlock(&g->mu);
}

void **gw_garbage_take(gw_garbage_t *g, size_t *n)
{
    void **v;
    size_t cap;

    *n = 0;
    if (!gw_garbage_count(g))
        return NULL;
    pthread_mutex_lock(&g->mu);
    if (!g->n || !g->spare) {
        pthread_mutex_unlock(&g->mu);
        return NULL;
    }
    v = g->v;
    cap = g->cap;
    *n = g->n;
    g->v = g->spare;
    g->cap = g->spare_cap;
    g->spare = NULL;
    g->spare_cap = cap;
    g->n = 0;
    atomic_store_explicit(&g->count, 0, memory_order_relaxed);
    pthread_mutex_unlock(&g->mu);
    return v;
}

void gw_garbage_done(gw_garbage_t *g, void **v)
{
    pthread_mutex_lock(&g->mu);
    g->spare = v; /* spare_cap was set by the take */
    pthread_mutex_unlock(&g->mu);
}
