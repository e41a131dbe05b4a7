/* --threads N > 1 (issue 16): a connection whose request runs on one of the
 * worker's request threads. The loop's thread keeps the socket: it reads
 * the whole request, hands it over (gw__conn_dispatch), sends what the
 * thread queues, and takes the connection back once the answer is handed
 * back and sent. The thread never touches the socket, the timers or the
 * connection's lists: it fills a staging queue of its own (gw_conn_out()),
 * moves its segments into the connection's queue under the connection's
 * lock (gw_conn_send()), and tells the loop through the news eventfd.
 *
 * Backpressure: the connection's queue holds at most WINDOW bytes the
 * client has not taken; past it the thread waits, without the GIL, until
 * the loop has sent it down to half (or the client is gone: the loop's
 * --write-timeout). A slow client costs a thread nothing once its answer
 * is all queued: the thread hands the end back and takes the next request. */
#include "serve/conn_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "serve/response.h"
#include "serve/tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

/* Bytes of an answer queued ahead of the client: a generator's blocks go
 * on being asked for while the client reads the window. */
#define WINDOW (256u * 1024)
#define TICK_MS 100

enum { NEWS_STUCK = 1 };

static void on_news(gw_loop_t *loop, gw_watch_t *w, uint32_t events);
static void on_tick(gw_loop_t *loop, gw_timer_t *t);

int gw_conn_ctx_threads(gw_conn_ctx_t *ctx, unsigned n, uint64_t queue_timeout_s)
{
    int rc;

    /* A request thread grows its request's arena (the environ, the
     * headers, the answer's head) while the loop parses and resets others. */
    if ((rc = gw_arena_pool_share(&ctx->arena_pool)) < 0)
        return rc;
    if ((rc = gw_jobq_init(&ctx->jobq)) < 0)
        return rc;
    if ((rc = gw_news_open(&ctx->news)) < 0) {
        gw_jobq_dispose(&ctx->jobq);
        return rc;
    }
    ctx->news_watch.fd = ctx->news.fd;
    ctx->news_watch.cb = on_news;
    if ((rc = gw_loop_add(ctx->loop, &ctx->news_watch, EPOLLIN)) < 0) {
        gw_news_close(&ctx->news);
        gw_jobq_dispose(&ctx->jobq);
        return rc;
    }
    ctx->nthreads = n;
    ctx->queue_timeout_us = queue_timeout_s * 1000000;
    ctx->drain_job.arg = NULL;
    gw_timerq_init(ctx->loop, &ctx->tick_q, TICK_MS);
    gw_timer_init(&ctx->tick, on_tick);
    gw_timer_start(&ctx->tick_q, &ctx->tick);
    return 0;
}

void gw__conn_threads_dispose(gw_conn_ctx_t *ctx)
{
    if (!ctx->nthreads)
        return;
    gw_timer_stop(&ctx->tick);
    gw_loop_del(ctx->loop, &ctx->news_watch);
    gw_news_close(&ctx->news);
    gw_jobq_dispose(&ctx->jobq);
    ctx->nthreads = 0;
}

void gw__conn_thread_init(gw_conn_t *c)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void gw__conn_thread_destroy(gw_conn_t *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* ---- the loop's side ---- */

/* More than gw_tls_each_var() gives (four, the verdict, nine of the
 * certificate's). */
#define TLS_VARS_MAX 24

typedef struct {
    gw_req_t *r;
    gw_req_var_t v[TLS_VARS_MAX];
    uint32_t n;
} tls_copy_t;

static int copy_tls_var(void *arg, const char *key, const char *val, size_t vlen)
{
    tls_copy_t *tc = arg;
    char *p;

    if (tc->n == TLS_VARS_MAX || !(p = gw_arena_alloc(&tc->r->arena, vlen + 1)))
        return -1;
    memcpy(p, val, vlen);
    p[vlen] = '\0';
    tc->v[tc->n++] = (gw_req_var_t){.key = key, .val = p, .len = vlen};
    return 0;
}

/* The SSL_* variables, read here on the loop's thread: the request thread
 * would read the SSL object while the loop writes on it (a 100 Continue
 * still going out, the answer's first bytes), and OpenSSL's connection
 * objects are not safe to share. 0 or -1 (no memory). */
static int copy_tls_vars(gw_conn_t *c)
{
    tls_copy_t tc = {.r = &c->req};

    if (!c->peer.listener->tls)
        return 0;
    if (gw_tls_each_var(&c->tp, copy_tls_var, &tc) < 0)
        return -1;
    if (tc.n && !(c->req.tls_vars = gw_arena_alloc(&c->req.arena, tc.n * sizeof(tc.v[0]))))
        return -1;
    memcpy(c->req.tls_vars, tc.v, tc.n * sizeof(tc.v[0]));
    c->req.ntls_vars = tc.n;
    c->req.has_tls_vars = true;
    return 0;
}

void gw__conn_dispatch(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;

    if (!gw__conn_get_out(c) || copy_tls_vars(c) < 0) {
        gw_conn_finish(c, false, 500, 0);
        return;
    }
    /* Decided now, read by the thread: a stop that begins meanwhile leaves
     * this answer's promise as it was (gw_conn_finish goes on with it). */
    c->may_keep = gw_conn_may_keep_alive(c);
    c->tx_dead = c->resume_asked = c->is_handing_back = c->fin_posted = false;
    c->nwaiters = 0;
    atomic_store_explicit(&c->runner, NULL, memory_order_relaxed);
    c->is_dispatched = true;
    gw_jobq_submit(&ctx->jobq, &c->job, gw_clock_us_now());
    if (ctx->slot)
        atomic_store_explicit(&ctx->slot->queued, gw_jobq_queued(&ctx->jobq),
                              memory_order_relaxed);
}

/* Under c->mu: the thread may queue more (hysteresis: half the window). */
static bool has_room(const gw_conn_t *c)
{
    const gw_out_t *q = &c->out->out;
    return q->count <= GW_OUT_SEGS / 2 && gw_out_pending(q) <= WINDOW / 2;
}

/* The thread handed the answer back and the loop is done with it. */
static void take_back(gw_conn_t *c)
{
    /* Its news may still wait in the list (the answer went out on
     * EPOLLOUT first): the connection may close and its struct be reused. The
     * thread posts nothing after the hand-back, which c->mu ordered before
     * this read. */
    if (c->news.is_queued)
        gw_news_cancel(&c->ctx->news, &c->news);
    c->is_dispatched = false;
    atomic_store_explicit(&c->runner, NULL, memory_order_relaxed);
    gw__conn_finish_now(c, c->fin_keep, c->fin_status, c->fin_bytes);
}

/* The client is gone or took nothing for --write-timeout: the thread learns
 * it at its next send or wait, and what was queued is dropped (its owners
 * to the garbage). */
void gw__conn_thread_dead(gw_conn_t *c)
{
    bool fin;

    pthread_mutex_lock(&c->mu);
    if (!c->tx_dead) {
        gw__conn_set_aborted(c);
        c->tx_dead = true;
        gw_out_discard(&c->out->out);
        pthread_cond_broadcast(&c->cv);
    }
    fin = c->fin_posted;
    pthread_mutex_unlock(&c->mu);
    c->waiting_write = false;
    gw_timer_stop(&c->timer);
    if (fin)
        take_back(c);
}

/* Sends what the thread queued, wakes it when there is room again, and
 * takes the connection back once the answer is handed back and out. */
void gw__conn_thread_flush(gw_conn_t *c)
{
    gw_out_t *q = &c->out->out;
    bool fin, empty, dead, failed = false;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    uint64_t sent0 = q->sent;
    if (!c->tx_dead && c->can_write && !gw_out_is_empty(q)) {
        uint64_t before = q->sent;
        rc = gw_out_flush(q, &c->tp);
        if (rc == 0) {
            if (c->waiting_write) {
                c->waiting_write = false;
                gw_timer_stop(&c->timer);
            }
        } else if (rc == -EAGAIN) {
            c->can_write = false;
            if (!c->waiting_write) {
                c->waiting_write = true;
                gw_timer_start(&c->ctx->write_q, &c->timer);
            } else if (q->sent != before) {
                gw_timer_start(&c->ctx->write_q, &c->timer); /* it reads: more time */
            }
            gw__conn_try_watch(c);
        } else {
            failed = true;
        }
    }
    /* Each waiter has its own condition: room (the runner), its bytes
     * sent (a write()). */
    if (c->nwaiters && (failed || rc == 0 || q->sent != sent0))
        pthread_cond_broadcast(&c->cv);
    fin = c->fin_posted;
    empty = gw_out_is_empty(q);
    dead = c->tx_dead;
    pthread_mutex_unlock(&c->mu);
    if (failed)
        gw__conn_thread_dead(c); /* takes it back if the answer was handed back */
    else if (fin && (empty || dead))
        take_back(c);
}

/* The --queue-timeout answer, from the loop: the request waited too long
 * for a thread and never reached the app. Sent like a static file's. */
static void answer_late(gw_conn_t *c)
{
    gw_conn_ctx_t *ctx = c->ctx;
    char secs[24];
    gw_hdr_t h = {.name = "Retry-After", .name_len = 11, .value = secs};
    gw_resp_t rs;
    int rc;

    c->is_dispatched = false;
    h.value_len = (size_t)snprintf(secs, sizeof(secs), "%llu",
                                   (unsigned long long)(ctx->queue_timeout_us / 1000000));
    if (ctx->slot)
        atomic_fetch_add_explicit(&ctx->slot->queue_timeouts, 1, memory_order_relaxed);
    gw_out_discard_unstarted(&c->out->out);
    if (gw_resp_text(&rs, &c->req, 503, &h, 1, false, NULL, 0, &c->out->out) < 0) {
        gw__conn_finish_now(c, false, 503, 0);
        return;
    }
    c->is_static = true; /* the drained queue ends it, as a static answer */
    c->static_keep = false;
    c->static_status = 503;
    c->static_bytes = rs.body_sent;
    rc = gw_conn_send(c);
    if (rc == -EAGAIN)
        return;
    gw__conn_finish_now(c, false, 503, rs.body_sent);
}

static void on_tick(gw_loop_t *loop, gw_timer_t *t)
{
    gw_conn_ctx_t *ctx = (gw_conn_ctx_t *)((char *)t - offsetof(gw_conn_ctx_t, tick));
    gw_job_t *job;

    (void)loop;
    if (ctx->queue_timeout_us) {
        uint64_t now = gw_clock_us_now();
        while (now > ctx->queue_timeout_us &&
               (job = gw_jobq_expired(&ctx->jobq, now - ctx->queue_timeout_us)))
            answer_late(job->arg);
    }
    if (ctx->slot)
        atomic_store_explicit(&ctx->slot->queued, gw_jobq_queued(&ctx->jobq),
                              memory_order_relaxed);
    if (ctx->on_tick)
        ctx->on_tick(ctx->tick_ctx, ctx);
    gw_timer_start(&ctx->tick_q, &ctx->tick);
}

void gw_conn_ctx_wake_drain(gw_conn_ctx_t *ctx)
{
    /* Only with every thread idle (the caller checks): then nothing is
     * queued and the submit wakes one, which is not idle again before it
     * took the job: it is never queued twice. */
    gw_jobq_submit(&ctx->jobq, &ctx->drain_job, gw_clock_us_now());
}

static void on_news(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    gw_conn_ctx_t *ctx = (gw_conn_ctx_t *)((char *)w - offsetof(gw_conn_ctx_t, news_watch));
    uint32_t flags = gw_news_begin(&ctx->news);
    gw_news_node_t *n;
    /* As many as there are now: a thread that keeps posting (its client
     * reads as fast as it writes) does not hold the loop here. */
    uint64_t budget = ctx->nconns + 1;

    (void)loop;
    (void)events;
    for (;;) {
        gw_conn_t *c;
        if (!budget--) {
            gw_news_wake(&ctx->news); /* the rest on the next turn */
            break;
        }
        if (!(n = gw_news_pop(&ctx->news)))
            break;
        c = (gw_conn_t *)((char *)n - offsetof(gw_conn_t, news));
        if (c->is_dispatched)
            gw__conn_thread_flush(c);
    }
    if ((flags & NEWS_STUCK) && ctx->on_stuck)
        ctx->on_stuck(ctx->server);
}

void gw_conn_ctx_stuck(gw_conn_ctx_t *ctx)
{
    gw_news_flag(&ctx->news, NEWS_STUCK);
}

unsigned gw_conn_ctx_stuck_count(gw_conn_ctx_t *ctx)
{
    unsigned n = 0;

    for (gw_conn_t *c = ctx->_all; c; c = c->all_next) {
        gw_conn_runner_t *r;
        if (c->is_dispatched && (r = atomic_load_explicit(&c->runner, memory_order_acquire)) &&
            atomic_load_explicit(&r->is_stuck, memory_order_relaxed))
            n++;
    }
    return n;
}

/* ---- the request thread's side ---- */

void gw_conn_runner_init(gw_conn_runner_t *r, gw_release_cb release)
{
    gw_out_init(&r->stage, release);
    r->conn = NULL;
    atomic_init(&r->is_stuck, false);
}

gw_conn_t *gw_conn_runner_begin(gw_conn_runner_t *r, gw_job_t *job)
{
    gw_conn_t *c = job->arg;

    gw_out_init(&r->stage, r->stage.release);
    r->conn = c;
    atomic_store_explicit(&c->runner, r, memory_order_release);
    return c;
}

int gw_conn_runner_wait(gw_conn_t *c)
{
    int rc;

    pthread_mutex_lock(&c->mu);
    c->nwaiters++;
    while (!c->tx_dead && !c->resume_asked && !has_room(c))
        pthread_cond_wait(&c->cv, &c->mu);
    c->nwaiters--;
    c->resume_asked = false;
    rc = c->tx_dead ? -EPIPE : 0;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

size_t gw_conn_describe(const gw_conn_t *c, char *buf, size_t n)
{
    const gw_req_t *r = &c->req;
    int k;

    if (!c->rbuf.data || !r->target.len || n == 0)
        return 0;
    k = snprintf(buf, n, "%.*s %.*s", (int)r->method.len, c->rbuf.data + r->method.off,
                 (int)r->target.len, c->rbuf.data + r->target.off);
    return k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
}

static gw_conn_runner_t *runner_of(gw_conn_t *c)
{
    return atomic_load_explicit(&c->runner, memory_order_relaxed);
}

gw_out_t *gw__conn_thread_out(gw_conn_t *c)
{
    return &runner_of(c)->stage;
}

/* gw_conn_send() on a thread: the staging queue's segments into the
 * connection's queue, as many as fit, and news for the loop. 0 when all
 * went and the window has room (is_last: whatever the window), -EAGAIN
 * (wait: gw_conn_runner_wait() or gw_conn_wait()), -EPIPE when the client
 * is gone. */
int gw__conn_thread_send(gw_conn_t *c, bool is_last)
{
    gw_out_t *st = &runner_of(c)->stage, *q = &c->out->out;
    uint64_t pend = 0;
    bool dead;

    pthread_mutex_lock(&c->mu);
    dead = c->tx_dead;
    if (!dead) {
        if (gw_out_move(q, st))
            gw_news_post(&c->ctx->news, &c->news);
        pend = gw_out_pending(q);
    }
    pthread_mutex_unlock(&c->mu);
    if (dead)
        return -EPIPE;
    if (st->count)
        return -EAGAIN;
    return is_last || pend < WINDOW ? 0 : -EAGAIN;
}

/* gw_conn_finish() on a thread: the answer is handed back (what is left of
 * it in the staging queue is moved, or dropped when it does not fit: the
 * answer is then cut), after every app thread waiting in write() for this
 * request has left the wait (they hold no GIL there: the runner, holding
 * it, waits for them briefly). The thread must not touch c afterwards. */
void gw__conn_thread_finish(gw_conn_t *c, bool keep_alive, int status, uint64_t body_bytes)
{
    gw_conn_runner_t *r = runner_of(c);
    bool cut = false;

    pthread_mutex_lock(&c->mu);
    if (!c->tx_dead && r->stage.count)
        gw_out_move(&c->out->out, &r->stage);
    if (r->stage.count) {
        cut = true;
        if (!c->tx_dead) {
            gw__conn_set_aborted(c);
            c->tx_dead = true;
            gw_out_discard(&c->out->out);
        }
    }
    c->is_handing_back = true;
    pthread_cond_broadcast(&c->cv);
    while (c->nwaiters)
        pthread_cond_wait(&c->cv, &c->mu);
    c->fin_keep = keep_alive && !cut;
    c->fin_status = status;
    c->fin_bytes = body_bytes;
    c->fin_posted = true;
    r->conn = NULL;
    gw_news_post(&c->ctx->news, &c->news);
    pthread_mutex_unlock(&c->mu);
    gw_out_discard(&r->stage); /* the GIL is held: owners dropped at once */
}

void gw__conn_thread_resume(gw_conn_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->resume_asked = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void gw__conn_thread_give_up(gw_conn_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->tx_dead) {
        gw__conn_set_aborted(c);
        c->tx_dead = true;
        gw_out_discard(&c->out->out);
        gw_news_post(&c->ctx->news, &c->news); /* the loop stops its timer */
    }
    pthread_mutex_unlock(&c->mu);
}

/* For write(): it waits until what is queued now (its own block among
 * it) has been sent. No timeout of its own: the loop gives the client up
 * after --write-timeout without progress, which wakes it. */
gw_conn_wait_t gw__conn_thread_wait_for(gw_conn_t *c)
{
    gw_out_t *q = &c->out->out;
    gw_conn_wait_t wt = {.fd = -1, .c = c};

    pthread_mutex_lock(&c->mu);
    c->nwaiters++; /* before the GIL goes: the answer cannot be handed back under us */
    wt.mark = q->sent + gw_out_pending(q);
    pthread_mutex_unlock(&c->mu);
    return wt;
}

int gw__conn_thread_wait(gw_conn_wait_t wt)
{
    gw_conn_t *c = wt.c;
    gw_out_t *q = &c->out->out;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    while (!c->tx_dead && !c->is_handing_back && q->sent < wt.mark)
        pthread_cond_wait(&c->cv, &c->mu);
    if (c->tx_dead)
        rc = -EPIPE;
    if (--c->nwaiters == 0 && c->is_handing_back)
        pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
