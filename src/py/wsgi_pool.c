/* --threads N > 1 (issue 16): the worker's request threads. The loop's
 * thread keeps every socket and never holds the GIL; it hands each complete
 * request to one of these threads (serve/conn.h, core/handoff.h), which
 * runs the app and queues the answer for the loop to send. Each thread has
 * its own Python thread state, made once when it starts (after the fork:
 * the master never starts threads). Part of the WSGI bridge (py/wsgi_priv.h).
 *
 * Who holds the GIL: a thread takes it when it is handed a request and
 * gives it back when the answer is queued (or when the answer must wait
 * for the client: backpressure, without the GIL). While it holds it, it
 * also releases the references the loop could not drop (the bytes of sent
 * answers, a closed connection's address): the garbage list. */
#include "py/wsgi_priv.h" /* Python.h first */

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The garbage is released when a thread next takes the GIL, which under
 * load is the next request; with every thread idle the loop's tick wakes
 * one when this much waits (and at most every tick otherwise). */
#define GARBAGE_BYTES_MAX (1u << 20)

static gw_garbage_t garbage;          /* one pool per process */
static _Atomic uint64_t garbage_bytes; /* what the kept bytes objects hold */
static _Atomic bool is_direct;         /* the pool is gone: release at once (GIL held) */

/* The release callback of the connections' output queues, on the loop's
 * thread, which does not hold the GIL: the owner (an exact bytes object,
 * or the address tuple of on_close_deferred) waits for a thread. Reading
 * the size of a bytes object we hold a reference to needs no GIL: nothing
 * changes it. */
static void release_deferred(void *owner)
{
    PyObject *o = owner;

    if (atomic_load_explicit(&is_direct, memory_order_relaxed)) {
        Py_DECREF(o);
        return;
    }
    if (PyBytes_CheckExact(o))
        atomic_fetch_add_explicit(&garbage_bytes, (uint64_t)PyBytes_GET_SIZE(o),
                                  memory_order_relaxed);
    gw_garbage_push(&garbage, o);
}

/* on_close for the loop's thread: the address tuple goes to the garbage. */
static void on_close_deferred(void *ctx, gw_conn_t *c)
{
    PyObject **slot = (PyObject **)gw_conn_handler_data(c);
    (void)ctx;
    if (*slot)
        release_deferred(*slot);
    *slot = NULL;
}

/* With the GIL: drops every reference kept for us. Exact bytes and tuples
 * of str: no Python code runs. */
static void drain(void)
{
    size_t n;
    void **v = gw_garbage_take(&garbage, &n);

    if (!v)
        return;
    atomic_store_explicit(&garbage_bytes, 0, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        Py_DECREF((PyObject *)v[i]);
    gw_garbage_done(&garbage, v);
}

/* The loop's tick (every 100 ms, on its thread): with every thread idle and
 * something kept, one thread is woken to release it, so that a large
 * answer is not kept alive long after it was sent. */
static void on_tick(void *ctx, gw_conn_ctx_t *cc)
{
    gw_wsgi_t *w = ctx;

    if (!gw_garbage_count(&garbage) || gw_jobq_idle(&cc->jobq) < w->nthreads)
        return;
    if (gw_garbage_count(&garbage) < 64 &&
        atomic_load_explicit(&garbage_bytes, memory_order_relaxed) < GARBAGE_BYTES_MAX &&
        !w->tick_seen_garbage) {
        w->tick_seen_garbage = true; /* one tick more: the next request may take it */
        return;
    }
    w->tick_seen_garbage = false;
    gw_conn_ctx_wake_drain(cc);
}

/* Runs the request of job on t, the GIL held, until its answer is handed
 * back to the loop (all queued, or given up). */
static void run(gw_wsgi_t *w, gw_pthread_t *t, gw_job_t *job)
{
    gw_handler_t *h = &w->pctx->handler;
    gw_conn_t *c = gw_conn_runner_begin(&t->run, job);

    h->on_request(h->ctx, c);
    while (gw_conn_runner_is_busy(&t->run)) {
        /* The answer waits for the client (the loop's queue holds its
         * window), or for an app thread's write(): without the GIL, and
         * without the harakiri clock running. */
        hk_pause_t p = gw__wsgi_harakiri_pause(w);
        int rc;

        Py_BEGIN_ALLOW_THREADS
        rc = gw_conn_runner_wait(c);
        Py_END_ALLOW_THREADS
        gw__wsgi_harakiri_resume(w, p);
        drain();
        if (rc < 0) {
            h->on_abort(h->ctx, c);
            if (gw_conn_runner_is_busy(&t->run)) /* nothing of it was the app's */
                gw_conn_finish(c, false, 499, 0);
        } else {
            h->on_resume(h->ctx, c);
        }
    }
}

static void *thread_main(void *arg)
{
    gw_pthread_t *t = arg;
    gw_wsgi_t *w = t->w;
    gw_conn_ctx_t *cc = w->pctx;
    gw_slot_t *slot = cc->slot;
    PyGILState_STATE g;
    gw_job_t *job;

    struct sched_param sp = {0};

    /* SCHED_BATCH: a request thread the loop wakes does not preempt the
     * loop (the kernel's wake-up preemption skips batch tasks), so on a
     * busy CPU the loop reads and hands over every ready request of its
     * turn before a thread runs, instead of two context switches per
     * request (hello, --threads 4, one CPU: 1.8 switches per request
     * before, 0.3 after). The loop keeps its normal policy: woken by a
     * client or a thread's news it still runs promptly. Threads the app
     * starts from a request thread inherit it. Failure is harmless. */
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    g = PyGILState_Ensure(); /* this thread's state, for good */

    t->ident = PyThread_get_thread_ident();
    gw_req_seed_ids(); /* its own request ids (proto/request.h) */
    gw__wsgi_harakiri_clock(&t->busy_since_ms, &t->hk_raised);
    gw_conn_runner_init(&t->run, gw__wsgi_release_owner);
    t->ts = PyEval_SaveThread();
    while (gw_jobq_wait(&cc->jobq, &t->waiter)) {
        PyEval_RestoreThread(t->ts);
        /* The job is taken with the GIL held: a thread woken while another
         * runs the app waits here, and finds the queue emptied by it if the
         * app is CPU-bound (no GIL passed per request), or takes the job at
         * once if the app let the GIL go (I/O). */
        if (!(job = gw_jobq_begin(&cc->jobq))) {
            t->ts = PyEval_SaveThread();
            continue;
        }
        /* Requests that wait for a thread are taken one after the other
         * without letting the GIL go between them: under load, a release
         * and a re-take per request only hand the GIL to another request
         * thread and back (two context switches on a busy CPU). The
         * interpreter's switch interval still lets the others run. */
        do {
            /* The job lives in the connection, which the loop reuses once
             * the answer is handed back: read before, never after. */
            bool is_request = job->arg != NULL;

            if (is_request) {
                uint64_t now = gw_clock_us_now();
                char what[sizeof(t->what)];
                size_t n = gw_conn_describe(job->arg, what, sizeof(what));

                memcpy(t->what, what, n);
                t->what[n] = '\0';
                atomic_store_explicit(&t->busy_since_ms, now / 1000 ? now / 1000 : 1,
                                      memory_order_release);
                if (slot) {
                    atomic_fetch_add_explicit(&slot->threads_busy, 1, memory_order_relaxed);
                    gw_slot_queue_wait(slot, now > job->queued_us ? now - job->queued_us : 0);
                }
            }
            drain();
            if (is_request)
                run(w, t, job);
            CHECK_FORK();
            if (is_request) {
                atomic_store_explicit(&t->busy_since_ms, 0, memory_order_release);
                if (slot)
                    atomic_fetch_sub_explicit(&slot->threads_busy, 1, memory_order_relaxed);
            }
        } while ((job = gw_jobq_try_take(&cc->jobq)));
        t->ts = PyEval_SaveThread();
    }
    PyEval_RestoreThread(t->ts);
    drain();
    PyGILState_Release(g);
    return NULL;
}

int gw_wsgi_start_threads(gw_wsgi_t *w, gw_conn_ctx_t *cc)
{
    unsigned n = (unsigned)w->cfg->threads;
    pthread_attr_t attr;
    int e;

    if (gw_garbage_init(&garbage) < 0)
        return -ENOMEM;
    if (!(w->thr = calloc(n, sizeof(*w->thr))))
        return -ENOMEM;
    w->pctx = cc;
    cc->handler.release = release_deferred;
    cc->handler.on_close = on_close_deferred;
    cc->on_tick = on_tick;
    cc->tick_ctx = w;
    pthread_attr_init(&attr);
    if (w->cfg->thread_stacksize &&
        (e = pthread_attr_setstacksize(&attr, (size_t)w->cfg->thread_stacksize * 1024))) {
        gw_log_error("--thread-stacksize %llu: %s", (unsigned long long)w->cfg->thread_stacksize,
                     strerror(e));
        pthread_attr_destroy(&attr);
        return -e;
    }
    for (unsigned i = 0; i < n; i++) {
        gw_pthread_t *t = &w->thr[i];
        t->w = w;
        /* The threads start without the GIL, which this thread holds until
         * it gives it up for good (gw_wsgi_detach()). */
        if ((e = pthread_create(&t->tid, &attr, thread_main, t))) {
            gw_log_error("cannot start request thread %u of %u: %s", i + 1, n, strerror(e));
            pthread_attr_destroy(&attr);
            return -e;
        }
        w->nthreads++;
    }
    pthread_attr_destroy(&attr);
    if (cc->slot)
        atomic_store_explicit(&cc->slot->threads, n, memory_order_relaxed);
    return 0;
}

bool gw_wsgi_stop_threads(gw_wsgi_t *w, uint64_t wait_ms)
{
    struct timespec until;
    bool all = true;

    if (!w->nthreads || w->are_threads_joined)
        return true;
    w->are_threads_joined = true;
    /* What is still in flight (a quick stop, --graceful-timeout) is given up:
     * a thread waiting for its client's window wakes, one running the app
     * finds the client gone at its next block. */
    gw_conn_close_all(w->pctx);
    gw_jobq_stop(&w->pctx->jobq);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(wait_ms / 1000);
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    for (unsigned i = 0; i < w->nthreads; i++)
        if (pthread_timedjoin_np(w->thr[i].tid, NULL, &until) != 0)
            all = false;
    if (!all)
        return false; /* a thread still runs the app: no teardown under it */
    /* (nthreads stays: the watchdog reads it until gw_wsgi_free() stops it) */
    gw_wsgi_attach(w); /* the GIL is this thread's again, for the teardown */
    atomic_store_explicit(&is_direct, true, memory_order_relaxed);
    drain();
    return true;
}

void gw__wsgi_threads_free(gw_wsgi_t *w)
{
    free(w->thr);
    w->thr = NULL;
    if (garbage.v) {
        drain();
        gw_garbage_dispose(&garbage);
    }
}
