/* --harakiri inside the worker: a watchdog thread that logs a request
 * whose Python call runs too long, with every thread's traceback, then
 * raises gangway.RequestTimeout in it; and write()'s pause of the clock
 * while it waits for the socket. Part of the WSGI bridge (py/wsgi_priv.h). */
#include "py/wsgi_priv.h" /* Python.h first */

#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

/* The clock of the thread that runs a request: the slot's on the loop's
 * thread, each request thread its own (--threads). An app's own thread has
 * none: its write() waiting is not what a clock counts, and two threads
 * moving one clock at once would leave it wrong. */
static _Thread_local _Atomic uint64_t *my_clock;
static _Thread_local bool *my_raised; /* under the GIL: see gw__wsgi_harakiri_forget() */

/* The watchdog dumps every thread's Python traceback without the GIL (the
 * stuck code holds it), as faulthandler does. The C function for that is
 * internal up to 3.14 (_Py_DumpTracebackThreads, unexported since 3.13;
 * PyUnstable_DumpTracebackThreads comes with 3.15), so the dump goes through
 * faulthandler's public register(): a signal handler that walks the frames
 * without the GIL and writes them to the error log. The watchdog raises that
 * signal on its own thread. A real-time signal nothing else in gangway uses;
 * an app that registers its own faulthandler on it replaces the dump. */
static int dump_signal(void)
{
    return SIGRTMIN + 6;
}

/* With the GIL, once per worker. 0, or -1 (logged: the watchdog then
 * interrupts without a traceback). */
static int setup_dump(gw_wsgi_t *w)
{
    int sig = dump_signal();
    PyObject *fh, *r = NULL;

    /* register(signum, file, all_threads=True, chain=False) */
    if ((fh = PyImport_ImportModule("faulthandler"))) {
        r = PyObject_CallMethod(fh, "register", "iiii", sig, gw_log_error_fd(), 1, 0);
        Py_DECREF(fh);
    }
    if (!r) {
        gw__wsgi_log_exception("harakiri: cannot set up the traceback dump", NULL);
        return -1;
    }
    Py_DECREF(r);
    w->dump_sig = sig;
    return 0;
}

/* On the watchdog's thread, which keeps every signal blocked: the signal
 * goes to this thread only, and its handler (the dump) has run when the
 * unblock returns. */
static void dump_tracebacks(gw_wsgi_t *w)
{
    sigset_t one;

    if (!w->dump_sig) {
        gw_log_error("harakiri: (no traceback: faulthandler is not available)");
        return;
    }
    sigemptyset(&one);
    sigaddset(&one, w->dump_sig);
    pthread_kill(pthread_self(), w->dump_sig);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sleeps ms, or until gw__wsgi_stop_watchdog() says stop. */
static void wd_sleep(gw_wsgi_t *w, uint64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->wd_mu);
    while (!atomic_load(&w->wd_stop) &&
           pthread_cond_timedwait(&w->wd_cv, &w->wd_mu, &ts) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&w->wd_mu);
}

/* A request thread whose RequestTimeout has not ended its request this long
 * after it was raised is stuck where no exception lands (C code, a blocking
 * call without the GIL): the worker stops taking requests, lets the other
 * threads finish theirs and is replaced (mod_wsgi's way; uWSGI 2.0 kills
 * every sibling). */
#define STUCK_MS 1000

/* --threads: one clock per request thread. Only this thread writes the
 * slot's busy_since_ms then: the since of the request it is about to
 * interrupt (taking the GIL may never return if the request holds it in C:
 * the master then kills the worker after --harakiri-grace, as with one
 * thread), cleared once that request is over. */
static void watch_threads(gw_wsgi_t *w)
{
    gw_slot_t *slot = w->wd_slot;
    uint64_t limit = w->cfg->harakiri * 1000;
    uint64_t slot_since = 0; /* what we put in the slot */
    gw_pthread_t *slot_thr = NULL;

    while (!atomic_load(&w->wd_stop)) {
        uint64_t now = mono_ms(), nap = limit < 1000 ? limit : 1000;

        if (slot_thr &&
            atomic_load_explicit(&slot_thr->busy_since_ms, memory_order_acquire) != slot_since) {
            /* that request is over: nothing for the master to kill */
            atomic_store_explicit(&slot->busy_since_ms, 0, memory_order_release);
            slot_thr = NULL;
            slot_since = 0;
        }
        for (unsigned i = 0; i < w->nthreads && !atomic_load(&w->wd_stop); i++) {
            gw_pthread_t *t = &w->thr[i];
            uint64_t since = atomic_load_explicit(&t->busy_since_ms, memory_order_acquire), ran;
            char what[sizeof(t->what)];

            if (!since)
                continue;
            if (since == t->fired_for) {
                if (!atomic_load_explicit(&t->run.is_stuck, memory_order_relaxed) &&
                    now - t->fired_at >= STUCK_MS) {
                    memcpy(what, t->what, sizeof(what)); /* may be torn: only logged */
                    what[sizeof(what) - 1] = '\0';
                    atomic_store_explicit(&t->run.is_stuck, true, memory_order_relaxed);
                    gw_log_error("harakiri: worker %u: \"%s\" still runs %llus after "
                                 "RequestTimeout was raised (stuck outside Python code); the "
                                 "worker takes no more requests, lets the others finish and "
                                 "is replaced", w->wd_id, what,
                                 (unsigned long long)(STUCK_MS / 1000));
                    atomic_store_explicit(&slot->exit_reason, GW_EXIT_HARAKIRI,
                                          memory_order_relaxed);
                    gw_conn_ctx_stuck(w->pctx);
                }
                continue;
            }
            ran = now > since ? now - since : 0;
            if (ran < limit) {
                if (limit - ran < nap)
                    nap = limit - ran;
                continue;
            }
            t->fired_for = since;
            t->fired_at = now;
            memcpy(what, t->what, sizeof(what)); /* may be torn: only logged */
            what[sizeof(what) - 1] = '\0';
            gw_log_error("harakiri: worker %u: \"%s\" has run %llus on a request thread "
                         "(limit %llus); where it is:", w->wd_id, what,
                         (unsigned long long)(ran / 1000), (unsigned long long)w->cfg->harakiri);
            dump_tracebacks(w);
            memcpy(slot->current, what, sizeof(slot->current) < sizeof(what)
                                            ? sizeof(slot->current) : sizeof(what));
            slot->current[sizeof(slot->current) - 1] = '\0';
            if (!slot_thr) {
                slot_thr = t;
                slot_since = since;
                atomic_store_explicit(&slot->busy_since_ms, since, memory_order_release);
            }
            {
                PyGILState_STATE g = PyGILState_Ensure();
                if (!atomic_load(&w->wd_stop) &&
                    atomic_load_explicit(&t->busy_since_ms, memory_order_acquire) == since) {
                    PyThreadState_SetAsyncExc(t->ident, w->timeout_exc);
                    t->hk_raised = true;
                    atomic_fetch_add_explicit(&slot->harakiri, 1, memory_order_relaxed);
                    gw_log_error("harakiri: worker %u: raised gangway.RequestTimeout in \"%s\"",
                                 w->wd_id, what);
                }
                PyGILState_Release(g);
            }
            now = mono_ms();
        }
        wd_sleep(w, nap ? nap : 1);
    }
}

static void *watchdog_main(void *arg)
{
    gw_wsgi_t *w = arg;
    gw_slot_t *slot = w->wd_slot;
    uint64_t limit = w->cfg->harakiri * 1000, fired_for = 0;

    if (w->nthreads) {
        watch_threads(w);
        return NULL;
    }
    while (!atomic_load(&w->wd_stop)) {
        uint64_t since = atomic_load_explicit(&slot->busy_since_ms, memory_order_acquire);
        uint64_t now = mono_ms(), ran;
        char what[sizeof(slot->current)];

        if (!since || since == fired_for) {
            wd_sleep(w, limit < 1000 ? limit : 1000);
            continue;
        }
        ran = now > since ? now - since : 0;
        if (ran < limit) {
            uint64_t left = limit - ran;
            wd_sleep(w, left < 1000 ? left : 1000);
            continue;
        }
        fired_for = since;
        memcpy(what, slot->current, sizeof(what));
        what[sizeof(what) - 1] = '\0';
        gw_log_error("harakiri: worker %u: \"%s\" has run %llus (limit %llus); where it is:",
                     w->wd_id, what, (unsigned long long)(ran / 1000),
                     (unsigned long long)w->cfg->harakiri);
        dump_tracebacks(w);
        /* Then interrupt it. Waits for the GIL: pure-Python code hands it
         * over within the switch interval; code stuck in C never does, and
         * the master kills the worker after --harakiri-grace. */
        if (atomic_load(&w->wd_stop))
            break;
        PyGILState_STATE g = PyGILState_Ensure();
        if (!atomic_load(&w->wd_stop) &&
            atomic_load_explicit(&slot->busy_since_ms, memory_order_acquire) == since) {
            PyThreadState_SetAsyncExc(w->main_thread, w->timeout_exc);
            w->hk_raised = true;
            atomic_fetch_add_explicit(&slot->harakiri, 1, memory_order_relaxed);
            gw_log_error("harakiri: worker %u: raised gangway.RequestTimeout in \"%s\"",
                         w->wd_id, what);
        }
        PyGILState_Release(g);
    }
    return NULL;
}

int gw_wsgi_start_watchdog(gw_wsgi_t *w, gw_slot_t *slot, unsigned worker_id)
{
    sigset_t all, old;
    int rc;

    w->wd_slot = slot;
    w->wd_id = worker_id;
    w->main_thread = PyThread_get_thread_ident();
    if (!w->nthreads) { /* the app runs on this (the loop's) thread */
        my_clock = &slot->busy_since_ms;
        my_raised = &w->hk_raised;
    }
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w->wd_cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&w->wd_mu, NULL);
    }
    setup_dump(w); /* without it, harakiri still interrupts (and says so) */
    /* The watchdog takes no signals: they belong to the loop's thread (it
     * unblocks the dump signal only while it raises it on itself). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->wd_thread, NULL, watchdog_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        pthread_cond_destroy(&w->wd_cv);
        pthread_mutex_destroy(&w->wd_mu);
        return -1;
    }
    w->has_watchdog = true; /* joined by gw__wsgi_stop_watchdog() */
    return 0;
}

/* It reads w and may be about to take the GIL (which it then gives back at
 * once, seeing the flag), so the GIL is let go while waiting. */
void gw__wsgi_stop_watchdog(gw_wsgi_t *w)
{
    PyThreadState *ts;

    if (!w->has_watchdog)
        return;
    pthread_mutex_lock(&w->wd_mu);
    atomic_store(&w->wd_stop, true);
    pthread_cond_signal(&w->wd_cv);
    pthread_mutex_unlock(&w->wd_mu);
    ts = PyEval_SaveThread();
    pthread_join(w->wd_thread, NULL);
    PyEval_RestoreThread(ts);
    pthread_cond_destroy(&w->wd_cv);
    pthread_mutex_destroy(&w->wd_mu);
    w->has_watchdog = false;
}


void gw__wsgi_harakiri_clock(_Atomic uint64_t *since, bool *raised)
{
    my_clock = since;
    my_raised = raised;
}

void gw__wsgi_harakiri_forget(void)
{
    /* Only after a harakiri: the call walks the interpreter's threads. The
     * watchdog raises only with the GIL and while this request's clock
     * runs, which its end stops before the GIL next goes. */
    if (my_raised && *my_raised) {
        *my_raised = false;
        PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
    }
}

hk_pause_t gw__wsgi_harakiri_pause(gw_wsgi_t *w)
{
    hk_pause_t p = {0, 0};
    uint64_t ahead;

    if (!w->wd_slot || !my_clock)
        return p;
    p.since = atomic_load_explicit(my_clock, memory_order_relaxed);
    if (!p.since)
        return p;
    p.t0 = mono_ms();
    /* The slot's clock is the master's too: it must not stop counting for
     * longer than the wait can last (the write timeout). A request thread's
     * is only the watchdog's, and its waits for the client's window last
     * as long as the client keeps reading. */
    ahead = my_clock != &w->wd_slot->busy_since_ms ? (1ull << 40)
            : w->cfg->write_timeout < (1ull << 30) ? w->cfg->write_timeout * 1000 + 1000
                                                    : (1ull << 40);
    atomic_store_explicit(my_clock, p.since + ahead, memory_order_release);
    return p;
}

void gw__wsgi_harakiri_resume(gw_wsgi_t *w, hk_pause_t p)
{
    uint64_t t1;

    (void)w;
    if (!p.since)
        return;
    t1 = mono_ms();
    atomic_store_explicit(my_clock, p.since + (t1 > p.t0 ? t1 - p.t0 : 0),
                          memory_order_release);
}
