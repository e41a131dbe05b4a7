/* start_response and write(), bound to one request, and the worker's
 * spare pairs; write() queues its block whole and waits for the socket
 * without the GIL, from any thread. Part of the WSGI bridge
 * (py/wsgi_priv.h). */
#include "py/wsgi_priv.h" /* Python.h first */

#include <errno.h>
#include <pthread.h>
#include <time.h>

/* start_response and write(), bound to one request. They were one pair
 * per worker that acted on whichever request ran then: a thread the app
 * started for one request, or a reference it kept, wrote into the answer of
 * the next one, or called start_response for it. Now each request gets its
 * own pair, builtin functions bound (their __self__) to a binding_t that
 * points to the request; when the request ends the binding lets go of it,
 * and a later call raises RuntimeError and sends nothing. No allocation per
 * request: when nobody else holds them after the request, the pair serves
 * the next one (gw__wsgi_unbind); a pair the app kept is left to it and a
 * fresh one is made. They stay builtin functions (METH_FASTCALL, METH_O)
 * rather than objects of a type with its own vectorcall, because the
 * interpreter specializes calls to builtins only: an object with
 * tp_vectorcall cost the hello app 64 instructions more per request
 * (callgrind, Python 3.11: its CALL takes the generic path). */
typedef struct binding {
    PyObject_HEAD
    wreq_t *wr;       /* the request; NULL once it ended */
    PyObject *write;  /* owned: the write() start_response returns, bound to this object;
                       * cleared when the pair is dropped (it holds us: no cycle left) */
    /* The threads whose write() waits for the socket, without the GIL: one
     * polls it, the others wait for it to say it woke (wait_socket()). */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    uint64_t wakeups;  /* under mu: the poller's returns */
    bool has_poller;   /* under mu */
} binding_t;

static const char over_msg[] = "the request is over: start_response and write() belong to the "
                               "request they were given to";

/* Raises the exception of an exc_info tuple, as `raise
 * exc_info[1].with_traceback(exc_info[2])` does (PEP 3333), once it is known
 * to be one: (type, instance of type, traceback or None), or (exception
 * class, None, traceback or None), whose instance is then made by calling
 * the class. Anything else is a TypeError: handing unchecked objects to the
 * interpreter's error state once set a traceback into NoneType and crashed
 * the worker on a later request (issue 20). Always returns NULL. */
static PyObject *reraise(PyObject *exc_info)
{
    PyObject *t, *v, *tb, *exc;

    if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3)
        goto bad;
    t = PyTuple_GET_ITEM(exc_info, 0);
    v = PyTuple_GET_ITEM(exc_info, 1);
    tb = PyTuple_GET_ITEM(exc_info, 2);
    if (tb != Py_None && !PyTraceBack_Check(tb))
        goto bad;
    if (!PyExceptionClass_Check(t))
        goto bad;
    if (PyExceptionInstance_Check(v)) {
        /* A type check that runs no __instancecheck__. */
        if (!PyType_IsSubtype(Py_TYPE(v), (PyTypeObject *)t))
            goto bad;
        exc = Py_NewRef(v);
    } else if (v == Py_None) {
        if (!(exc = PyObject_CallNoArgs(t)))
            return NULL; /* the class's own error */
        if (!PyExceptionInstance_Check(exc)) {
            Py_DECREF(exc);
            goto bad;
        }
    } else {
        goto bad;
    }
    if (tb != Py_None && PyException_SetTraceback(exc, tb) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
bad:
    PyErr_SetString(PyExc_TypeError,
                    "exc_info must be (exception type, exception or None, traceback or None)");
    return NULL;
}

/* Each error path below returns at once after any Python code ran (repr()
 * in a message, the exception class called by reraise()): that code may let
 * other threads run, which may end the request and free wr. */
static PyObject *start_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    binding_t *b = (binding_t *)self;
    wreq_t *wr = b->wr;
    PyObject *exc_info = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs + nkw < 2 || nargs + nkw > 3 || nargs < 2 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "exc_info") != 0)) {
        PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    if (nargs + nkw == 3)
        exc_info = args[2];
    if (!wr) {
        PyErr_SetString(PyExc_RuntimeError, over_msg);
        return NULL;
    }
    if (wr->is_complete) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() called after the response ended");
        return NULL;
    }
    if (exc_info && exc_info != Py_None) {
        /* Too late to change the answer: re-raise (PEP 3333). Before that,
         * exc_info only says "replace the headers", as in wsgiref. */
        if (wr->headers_sent)
            return reraise(exc_info);
    } else if (wr->headers_set) {
        PyErr_SetString(PyExc_AssertionError,
                        "start_response() called again without exc_info");
        return NULL;
    }
    wr->headers_set = false;
    if (gw__wsgi_take_headers(wr, args[0], args[1]) < 0)
        return NULL;
    wr->headers_set = true;
    return Py_NewRef(b->write); /* set while wr is */
}

/* gw_conn_send() for write(): when the queue drains while the pump waits in
 * the loop for it to drain (another thread's write() sent the pump's bytes
 * too), the pump would wait for a wake-up that never comes; it is resumed
 * instead. */
static int send_from_write(wreq_t *wr)
{
    int rc = gw_conn_send(wr->conn);
    if (rc == 0 && wr->awaits_resume)
        gw_conn_resume(wr->conn);
    return rc;
}

/* The client is gone (or took nothing for --write-timeout): write() raises,
 * the rest of the answer is dropped. Always NULL. */
static wreq_t *write_failed(wreq_t *wr)
{
    wr->is_dead = true;
    gw_out_discard(gw_conn_out(wr->conn));
    if (wr->awaits_resume)
        gw_conn_resume(wr->conn); /* the pump ends the answer */
    PyErr_SetString(PyExc_OSError, "client disconnected");
    return NULL;
}

/* Without the GIL: waits until the socket takes more (0), or for
 * --write-timeout (-ETIMEDOUT). One waiting thread polls the socket; the
 * others sleep until it returns. Several threads in poll() at once starved:
 * a write-space wake-up wakes them all, the first to run refills the
 * socket, and the rest, finding it full again, sleep on inside poll(); a
 * thread could miss every wake-up until --write-timeout cut a client that
 * was reading all along. The poller is alone in poll(), so it sees each
 * one. A sleeper returns 0 when the poller returns (or after the timeout
 * and a second, which the poller's own timeout comes before): the caller
 * looks at the queue again and, if its bytes are not out, waits again. */
static int wait_socket(binding_t *b, gw_conn_wait_t wt)
{
    struct timespec until;
    uint64_t seen;
    int rc = 0;

    pthread_mutex_lock(&b->mu);
    if (!b->has_poller) {
        b->has_poller = true;
        pthread_mutex_unlock(&b->mu);
        rc = gw_conn_wait(wt);
        pthread_mutex_lock(&b->mu);
        b->has_poller = false;
        b->wakeups++;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wt.timeout_ms / 1000 + 1;
    until.tv_nsec += (long)(wt.timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    seen = b->wakeups;
    while (b->wakeups == seen && pthread_cond_timedwait(&b->cv, &b->mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* Waits without the GIL until the socket takes more, or --write-timeout
 * passes. Other threads run meanwhile: they may write too, and the request
 * may end (the caller holds b, so it is not bound to another request
 * meanwhile). Returns the request, still bound and alive, or NULL with an
 * exception set. */
static wreq_t *wait_writable(binding_t *b, wreq_t *wr)
{
    gw_wsgi_t *w = wr->w; /* worker lifetime */
    gw_conn_wait_t wt = gw_conn_wait_for(wr->conn);
    hk_pause_t p = gw__wsgi_harakiri_pause(w);
    int rc;

    Py_BEGIN_ALLOW_THREADS
    /* On a request thread the wait is for room in the connection's queue
     * (every waiter is woken: no poller needed) and it always returns
     * through gw_conn_wait(), which gw_conn_wait_for() paired it with. */
    rc = wt.c ? gw_conn_wait(wt) : wait_socket(b, wt);
    Py_END_ALLOW_THREADS
    gw__wsgi_harakiri_resume(w, p);
    if (!(wr = b->wr)) {
        PyErr_SetString(PyExc_RuntimeError, over_msg);
        return NULL;
    }
    if (wr->is_dead) {
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return NULL;
    }
    if (rc < 0) {
        gw_conn_give_up(wr->conn);
        return write_failed(wr);
    }
    return wr;
}

/* Queues block (from gw__wsgi_take_block(); NULL: a body-less answer) and returns
 * once it is out (PEP 3333). Several threads may be in here at once, each
 * waiting for the socket without the GIL with its block queued: the ring
 * (GW_OUT_SEGS) is made room in before a block goes in whole, and each
 * returns when the bytes up to its own are sent, not when the queue is
 * empty, which other threads could keep from ever happening. 0, or -1 with
 * an exception set. */
static int write_block(binding_t *b, wreq_t *wr, PyObject *block)
{
    uint64_t target;
    int rc;

    while (block && gw__wsgi_queue_body(wr, block) > 0) {
        if ((rc = send_from_write(wr)) == 0)
            continue; /* all sent: the ring is empty */
        if (rc != -EAGAIN)
            write_failed(wr);
        else if ((wr = wait_writable(b, wr)) && !wr->is_complete)
            continue;
        else if (wr) /* the last chunk went in meanwhile: nothing may follow it */
            PyErr_SetString(PyExc_RuntimeError, "write() after the response ended");
        Py_DECREF(block);
        return -1;
    }
    {
        gw_out_t *o = gw_conn_out(wr->conn);
        target = o->sent + gw_out_pending(o);
    }
    for (;;) {
        rc = send_from_write(wr);
        /* On a request thread the block is out of the staging queue once
         * moved, not yet sent: it returns once the connection's queue holds
         * less than a window ahead of the client (rc 0). */
        if (rc == 0 || (rc == -EAGAIN && !wr->w->nthreads &&
                        gw_conn_out(wr->conn)->sent >= target))
            return 0;
        if (rc != -EAGAIN) {
            write_failed(wr);
            return -1;
        }
        if (!(wr = wait_writable(b, wr)))
            return -1;
    }
}

static PyObject *write_cb(PyObject *self, PyObject *data)
{
    binding_t *b = (binding_t *)self;
    wreq_t *wr = b->wr;
    PyObject *block;
    int rc;

    CHECK_FORK();
    if (!wr) {
        PyErr_SetString(PyExc_RuntimeError, over_msg);
        return NULL;
    }
    if (!wr->headers_set) {
        PyErr_SetString(PyExc_RuntimeError, "write() before start_response()");
        return NULL;
    }
    if (wr->is_complete) {
        /* From the iterable's close(), say: a byte more would follow the
         * end of the answer (a stray chunk after 0\r\n\r\n, issue 20). */
        PyErr_SetString(PyExc_RuntimeError, "write() after the response ended");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (wr->is_dead) {
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return NULL;
    }
    if (PyBytes_GET_SIZE(data) == 0)
        Py_RETURN_NONE;
    if (!(block = gw__wsgi_take_block(data, "write() takes")))
        return NULL;
    if (!wr->headers_sent && gw__wsgi_send_head(wr) < 0) {
        Py_DECREF(block);
        return NULL;
    }
    if (wr->rs.no_body)
        Py_CLEAR(block); /* HEAD, 204, 304: only the head is sent */
    /* Held while it may wait: never bound to another request meanwhile. */
    Py_INCREF(self);
    rc = write_block(b, wr, block);
    Py_DECREF(self);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef start_response_def = {"start_response", (PyCFunction)(void (*)(void))start_response,
                                         METH_FASTCALL | METH_KEYWORDS,
                                         "start_response(status, headers, exc_info=None)"};
static PyMethodDef write_def = {"write", write_cb, METH_O, "write(bytes)"};

static void binding_dealloc(PyObject *self)
{
    binding_t *b = (binding_t *)self;
    Py_XDECREF(b->write); /* NULL by now: write holds us */
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject binding_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gangway.RequestBinding",
    .tp_basicsize = sizeof(binding_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the request a start_response and its write() belong to",
    .tp_dealloc = binding_dealloc,
};

/* A new start_response bound to a new binding, with its write(). New ref,
 * or NULL with an exception set. */
static PyObject *pair_new(void)
{
    binding_t *b = PyObject_New(binding_t, &binding_type);
    pthread_condattr_t ca;
    PyObject *sr;

    if (!b)
        return NULL;
    b->wr = NULL;
    b->wakeups = 0;
    b->has_poller = false;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(b->write = PyCFunction_New(&write_def, (PyObject *)b)) ||
        !(sr = PyCFunction_New(&start_response_def, (PyObject *)b))) {
        Py_CLEAR(b->write);
        Py_DECREF(b);
        return NULL;
    }
    Py_DECREF(b); /* the two functions hold it */
    return sr;
}

/* Drops a pair: write's reference to the binding is its last way back. */
static void pair_drop(PyObject *sr)
{
    binding_t *b = (binding_t *)PyCFunction_GET_SELF(sr);
    b->wr = NULL;
    Py_CLEAR(b->write);
    Py_DECREF(sr);
}

/* The worker's spare pair, or a new one, bound to wr: its start_response
 * (borrowed: wr owns it), or NULL with an exception set. Runs no Python. */
PyObject *gw__wsgi_bind(gw_wsgi_t *w, wreq_t *wr)
{
    PyObject *sr;

    if (w->nspare)
        sr = w->spare_sr[--w->nspare];
    else if (!(sr = pair_new()))
        return NULL;
    ((binding_t *)PyCFunction_GET_SELF(sr))->wr = wr;
    wr->sr = sr;
    return sr;
}

/* The request is over: its start_response and write let go of it. When
 * nobody else holds them (the app kept neither, nor their __self__, and no
 * thread is in a call: a call holds its function, and write() its binding,
 * while it waits) the pair waits for the next request; otherwise the app
 * keeps a pair that raises, and ours is dropped. Runs no Python. */
void gw__wsgi_unbind(gw_wsgi_t *w, wreq_t *wr)
{
    PyObject *sr = wr->sr;
    binding_t *b;

    if (!sr)
        return;
    wr->sr = NULL;
    b = (binding_t *)PyCFunction_GET_SELF(sr);
    b->wr = NULL;
    if (Py_REFCNT(sr) == 1 && Py_REFCNT(b) == 2 && Py_REFCNT(b->write) == 1 &&
        w->nspare < sizeof(w->spare_sr) / sizeof(w->spare_sr[0]))
        w->spare_sr[w->nspare++] = sr;
    else
        pair_drop(sr);
}

int gw__wsgi_callables_init(void)
{
    return PyType_Ready(&binding_type);
}

void gw__wsgi_spares_free(gw_wsgi_t *w)
{
    while (w->nspare)
        pair_drop(w->spare_sr[--w->nspare]);
}
