/* The request handler: the app called with its environ, its answer taken
 * (a list or tuple item by item, a wsgi.file_wrapper file, an iterator)
 * and pumped into the response writer until all is queued or the socket is
 * full; 500 or a cut connection when the app fails; close() on every path.
 * Part of the WSGI bridge (py/wsgi_priv.h). */
#include "py/wsgi_priv.h" /* Python.h first */

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the app returned: a list or tuple, taken item by item when it
 * returned (take_sequence), an iterable, or a wsgi.file_wrapper file. */
enum { M_SEQ, M_ITER, M_FILE };

/* A reference to a body block the output queue may hold: the object itself
 * when it is exactly bytes, a plain bytes copy of a bytes subclass. The
 * queue drops its reference from the loop's I/O handler, where a subclass's
 * __del__ must not run; an exact bytes object is freed and nothing else. New
 * ref, or NULL with TypeError (not bytes) or MemoryError set. Runs no Python. */
PyObject *gw__wsgi_take_block(PyObject *item, const char *what)
{
    if (PyBytes_CheckExact(item))
        return Py_NewRef(item);
    if (PyBytes_Check(item))
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
    PyErr_Format(PyExc_TypeError, "%s %.100s, not bytes", what, Py_TYPE(item)->tp_name);
    return NULL;
}

void gw__wsgi_release_owner(void *owner)
{
    Py_DECREF((PyObject *)owner);
}

/* Queues the head: status, headers and what is known of the length; the
 * response writer decides the framing and keep-alive into wr->rs. */
int gw__wsgi_send_head(wreq_t *wr)
{
    gw_req_t *r = gw_conn_req(wr->conn);
    gw_answer_t a = {
        .status = wr->code,
        .status_line = wr->status,
        .status_line_len = wr->status_len,
        .hdrs = wr->hdrs,
        .nhdrs = wr->nhdrs,
        .length_hdr = wr->cl_index,
        .length = wr->app_length >= 0 ? wr->app_length : wr->known_length,
        .wants_close = wr->app_close,
        .has_server = wr->has_server,
        .has_date = wr->has_date,
    };

    if (wr->w->cfg->request_id && !wr->has_request_id)
        a.request_id = gw_req_id(r, gw_conn_rbuf(wr->conn), true, &a.request_id_len);
    if (gw_resp_head(&wr->rs, &a, r, gw_conn_may_keep_alive(wr->conn), gw_conn_out(wr->conn)) <
        0) {
        PyErr_NoMemory();
        return -1;
    }
    wr->headers_sent = true;
    return 0;
}

/* Queues a body block (a reference from gw__wsgi_take_block(), handed to the
 * output queue, which drops it once the bytes are out), all of its
 * segments or none: 0. Or 1 when the ring has no room for them: nothing is
 * queued and item is still the caller's, who makes room (write_block()
 * waits for the socket, pump() for on_resume). The app's threads fill the
 * ring while their write()s wait for the socket; a push into a full ring
 * once failed silently (and the chunk framing with it). Runs no Python. */
int gw__wsgi_queue_body(wreq_t *wr, PyObject *item)
{
    int rc = gw_resp_push_ref(&wr->rs, gw_conn_out(wr->conn), PyBytes_AS_STRING(item),
                              (size_t)PyBytes_GET_SIZE(item), item);

    if (rc == -ENOBUFS)
        return 1;
    if (rc > 0 && !wr->has_truncated) {
        gw_log_error("the app sent more than its Content-Length; the rest is dropped");
        wr->has_truncated = true;
    }
    return 0;
}

/* obj.name into *out (new ref): 1, 0 when there is none (*out NULL), or -1
 * with an exception set; without building an AttributeError when there is
 * none (that cost ~5,000 instructions per request for an iterable without
 * close()). PyObject_GetOptionalAttr is public from 3.13. Before, the only
 * function that does it is private (_PyObject_LookupAttr, its old name), so
 * the fallback uses public calls only: PyObject_HasAttr (which builds no
 * exception either, but swallows one a custom __getattr__ raises: such an
 * iterable is treated as having no close()), then the lookup itself. */
static int lookup_optional_attr(PyObject *obj, PyObject *name, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, out);
#else
    *out = NULL;
    if (!PyObject_HasAttr(obj, name))
        return 0;
    *out = PyObject_GetAttr(obj, name);
    return *out ? 1 : -1;
#endif
}

/* Calls close() on the app's iterable once, drops every reference. */
static void cleanup(wreq_t *wr)
{
    gw_wsgi_t *w = wr->w;

    wr->is_complete = true; /* write() from close() or a finalizer sends nothing */
    /* Lists and tuples have no close(); for the rest, a lookup that does not
     * build an AttributeError when there is none (that cost ~5,000
     * instructions per request). */
    if (wr->result && !PyList_CheckExact(wr->result) && !PyTuple_CheckExact(wr->result)) {
        PyObject *close = NULL;
        int found = lookup_optional_attr(wr->result, w->s_close, &close);
        if (found > 0) {
            PyObject *r = PyObject_CallNoArgs(close);
            CHECK_FORK();
            Py_DECREF(close);
            if (r)
                Py_DECREF(r);
            else
                gw__wsgi_log_exception("exception in close()", wr);
        } else if (found < 0) {
            gw__wsgi_log_exception("exception looking up close()", wr);
        }
    }
    while (wr->seq_i < wr->seq_n)
        Py_CLEAR(wr->items[wr->seq_i++]);
    if (wr->fd >= 0 && wr->mode == M_FILE) {
        close(wr->fd); /* our dup, never queued */
        wr->fd = -1;
    }
    Py_CLEAR(wr->pending);
    Py_CLEAR(wr->iter);
    Py_CLEAR(wr->result);
    gw_input_detach(wr->input);
    Py_CLEAR(wr->input);
    CHECK_FORK(); /* finalizers ran */
    /* After the answer's references are gone (a generator's frame holds
     * start_response), so that the pair is free for the next request. */
    gw__wsgi_unbind(w, wr);
    *gw_conn_app_slot(wr->conn) = NULL;
    gw__wsgi_harakiri_forget();
    assert(!PyErr_Occurred());
}

static void finish(wreq_t *wr, bool keep_alive, int status)
{
    gw_conn_t *c = wr->conn;
    uint64_t sent = wr->rs.body_sent;

    cleanup(wr);
    gw_conn_finish(c, keep_alive, status, sent);
}

/* Everything is queued: send it, then finish (now or on resume). */
static void complete(wreq_t *wr)
{
    /* On a request thread: once all of it is in the connection's queue the
     * loop sends the rest and the thread is free, however slow the client. */
    int rc = gw_conn_send_last(wr->conn);
    if (rc == -EAGAIN) {
        wr->is_finishing = true;
        wr->awaits_resume = true;
        return;
    }
    finish(wr, rc == 0 && wr->rs.keep_alive, wr->code);
}

static void respond_500(wreq_t *wr)
{
    gw_req_t *r = gw_conn_req(wr->conn);
    gw_out_t *o = gw_conn_out(wr->conn);
    const char *id = NULL;
    size_t idn = 0;

    /* A 100 Continue may be half out: its rest goes first (a head already
     * begun must end before another starts). */
    gw_out_discard_unstarted(o);
    wr->code = 500;
    if (wr->w->cfg->request_id)
        id = gw_req_id(r, gw_conn_rbuf(wr->conn), true, &idn);
    if (gw_resp_text(&wr->rs, r, 500, NULL, 0, gw_conn_may_keep_alive(wr->conn), id, idn, o) <
        0) {
        finish(wr, false, 500);
        return;
    }
    complete(wr);
}

/* The app failed: 500 when nothing was sent yet, else cut the connection. */
static void app_error(wreq_t *wr, const char *what)
{
    wr->is_complete = true;
    gw__wsgi_log_exception(what, wr);
    if (wr->headers_sent) {
        gw_out_discard(gw_conn_out(wr->conn));
        finish(wr, false, wr->code);
    } else {
        respond_500(wr);
    }
}

static void end_body(wreq_t *wr)
{
    gw_out_t *o = gw_conn_out(wr->conn);
    int rc;

    wr->is_complete = true;
    if (!wr->headers_set) {
        PyErr_SetString(PyExc_RuntimeError, "the app returned without calling start_response()");
        app_error(wr, "error");
        return;
    }
    if (!wr->headers_sent) {
        if (wr->known_length < 0 && wr->app_length < 0)
            wr->known_length = 0; /* nothing came: an empty body */
        if (gw__wsgi_send_head(wr) < 0) {
            app_error(wr, "error");
            return;
        }
    }
    if ((rc = gw_resp_end(&wr->rs, o)) == -ENOBUFS) {
        /* The app's threads' write()s filled the ring while they waited
         * for the socket: the last chunk waits its turn (on_resume). */
        int sent = gw_conn_send(wr->conn);
        if (sent < 0 && sent != -EAGAIN) {
            finish(wr, false, wr->code);
            return;
        }
        if ((rc = gw_resp_end(&wr->rs, o)) == -ENOBUFS) {
            wr->is_ending = true;
            wr->awaits_resume = true;
            return;
        }
    }
    if (rc > 0)
        gw_log_error("the app sent %llu of the %llu bytes its Content-Length promised; closing",
                     (unsigned long long)wr->rs.body_sent, (unsigned long long)wr->rs.length);
    complete(wr);
}

static void send_file(wreq_t *wr)
{
    struct stat st;
    uint64_t len;

    if (!wr->headers_set) {
        end_body(wr); /* reports the missing start_response */
        return;
    }
    if (fstat(wr->fd, &st) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        app_error(wr, "cannot send file");
        return;
    }
    if (st.st_size < wr->fpos) {
        /* (errno says nothing here: it once raised OSError(0, 'Success')) */
        PyErr_Format(PyExc_ValueError,
                     "wsgi.file_wrapper: the file's position (%lld) is past its end (%lld bytes)",
                     wr->fpos, (long long)st.st_size);
        app_error(wr, "cannot send file");
        return;
    }
    len = (uint64_t)(st.st_size - wr->fpos);
    if (wr->app_length >= 0 && (uint64_t)wr->app_length < len)
        len = (uint64_t)wr->app_length;
    wr->known_length = (int64_t)len;
    if (gw__wsgi_send_head(wr) < 0) {
        app_error(wr, "error");
        return;
    }
    /* The queue owns our dup: the app closing its file (or another request
     * closing a shared one) cannot change what is sent. */
    if (gw_resp_push_file(&wr->rs, gw_conn_out(wr->conn), wr->fd, true, (off_t)wr->fpos, len) <
        0) { /* the head is the only segment before it: never */
        PyErr_SetString(PyExc_RuntimeError, "gangway: the output queue is full");
        app_error(wr, "cannot send file"); /* cleanup() closes wr->fd */
        return;
    }
    wr->fd = -1; /* the queue's now, queued or (HEAD) closed */
    end_body(wr);
}

/* Moves the response forward until it is all queued, the socket is full
 * (resumed by on_resume), or something fails. */
static void pump(wreq_t *wr)
{
    gw_conn_t *c = wr->conn;
    gw_out_t *o = gw_conn_out(c);
    int rc;

    if (wr->mode == M_FILE) {
        send_file(wr);
        return;
    }
    for (;;) {
        PyObject *item; /* owned, exact bytes */

        if (wr->mode == M_SEQ) {
            /* Taken when the app returned (take_sequence): what the app does
             * to its list meanwhile changes nothing here. */
            if (wr->seq_i >= wr->seq_n)
                break;
            item = wr->items[wr->seq_i];
            wr->items[wr->seq_i++] = NULL;
        } else if (wr->pending) {
            item = wr->pending;
            wr->pending = NULL;
        } else {
            PyObject *got = PyIter_Next(wr->iter); /* new ref; runs the app */
            CHECK_FORK();
            if (!got) {
                if (PyErr_Occurred()) {
                    app_error(wr, "exception");
                    return;
                }
                break;
            }
            item = gw__wsgi_take_block(got, "the app yielded");
            Py_DECREF(got); /* a subclass's __del__ runs here, not in an I/O handler */
            CHECK_FORK();
            if (!item) {
                app_error(wr, "error");
                return;
            }
            if (wr->is_dead) { /* write() inside the iteration found the client gone */
                Py_DECREF(item);
                finish(wr, false, wr->code);
                return;
            }
        }
        if (PyBytes_GET_SIZE(item) == 0) {
            Py_DECREF(item);
            continue; /* headers wait for the first non-empty block */
        }
        if (!wr->headers_set) {
            Py_DECREF(item);
            end_body(wr); /* reports the missing start_response */
            return;
        }
        if (!wr->headers_sent && gw__wsgi_send_head(wr) < 0) {
            Py_DECREF(item);
            app_error(wr, "error");
            return;
        }
        if (wr->rs.no_body) {
            Py_DECREF(item);
            break; /* HEAD, 204, 304: the status and headers were all we needed */
        }
        while (gw__wsgi_queue_body(wr, item) > 0) {
            /* The app's threads' write()s filled the ring meanwhile. */
            rc = gw_conn_send(c);
            if (rc < 0 && rc != -EAGAIN) {
                Py_DECREF(item);
                finish(wr, false, wr->code);
                return;
            }
            if (gw_out_room(o) < gw_resp_block_segs(&wr->rs)) { /* the item waits for on_resume */
                if (wr->mode == M_SEQ)
                    wr->items[--wr->seq_i] = item;
                else
                    wr->pending = item;
                wr->awaits_resume = true;
                return;
            }
        }
        /* A generator's block goes out before the next is asked for (PEP
         * 3333: no delay); a list is batched into as few writes as fit. */
        if (wr->mode == M_ITER || gw_out_room(o) < 4) {
            rc = gw_conn_send(c);
            if (rc == -EAGAIN) {
                wr->awaits_resume = true;
                return;
            }
            if (rc < 0) {
                finish(wr, false, wr->code);
                return;
            }
        }
    }
    end_body(wr);
}

/* Takes a list or tuple answer as it is now: a reference to each item (a
 * plain bytes copy of a bytes subclass) in the arena, and the total length.
 * The answer may wait for a slow client while other requests run Python,
 * and an app may change the list it returned (a module-level RESP = [...]
 * updated later): reading the list again then sent freed memory (issue 14).
 * No Python code runs in here, so the list cannot change under the loop.
 * 0, or -1 with an exception set. */
static int take_sequence(wreq_t *wr, PyObject *seq)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    PyObject **items = &wr->one;
    uint64_t total = 0;

    if (n > 1) {
        if ((size_t)n > SIZE_MAX / sizeof(*items) ||
            !(items = gw_arena_alloc(&gw_conn_req(wr->conn)->arena, (size_t)n * sizeof(*items)))) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        if (!(items[i] = gw__wsgi_take_block(PySequence_Fast_GET_ITEM(seq, i), "the app returned")))
            goto fail;
        total += (uint64_t)PyBytes_GET_SIZE(items[i]);
    }
    wr->items = items;
    wr->seq_i = 0;
    wr->seq_n = n;
    if (!wr->headers_sent)
        wr->known_length = (int64_t)total;
    return 0;
fail:
    while (i-- > 0)
        Py_DECREF(items[i]);
    return -1;
}

void gw__wsgi_on_request(void *ctx, gw_conn_t *c)
{
    gw_wsgi_t *w = ctx;
    gw_req_t *r = gw_conn_req(c);
    wreq_t *wr = gw_arena_alloc(&r->arena, sizeof(*wr));
    PyObject *env, *res, *args[2];
    PyObject *sr;
    int rc;

    if (!wr) {
        gw_conn_finish(c, false, 500, 0);
        return;
    }
    memset(wr, 0, sizeof(*wr));
    wr->w = w;
    wr->conn = c;
    wr->app_length = wr->known_length = -1;
    wr->cl_index = -1;
    wr->fd = -1;
    *gw_conn_app_slot(c) = wr;

    env = r->has_cgi_fields ? gw__wsgi_environ_cgi(w, wr) : gw__wsgi_environ(w, wr);
    if (!env || !(sr = gw__wsgi_bind(w, wr))) {
        Py_XDECREF(env);
        app_error(wr, "cannot build the environ");
        return;
    }
    args[0] = env;
    args[1] = sr;
    res = PyObject_Vectorcall(w->app, args, 2, NULL);
    Py_DECREF(env); /* (finalizers of what the app left in it) */
    CHECK_FORK();
    if (!res) {
        app_error(wr, "exception");
        return;
    }
    wr->result = res;
    if (wr->is_dead) { /* write() found the client gone */
        finish(wr, false, wr->code);
        return;
    }
    if (PyList_CheckExact(res) || PyTuple_CheckExact(res)) {
        wr->mode = M_SEQ;
        if (take_sequence(wr, res) < 0) {
            app_error(wr, "error");
            return;
        }
    } else if ((rc = gw_file_wrapper_fd(res, &wr->fd, &wr->fpos)) != 0) {
        CHECK_FORK(); /* fileno() and tell() are Python */
        if (rc < 0) {
            app_error(wr, "error");
            return;
        }
        wr->mode = wr->headers_sent ? M_ITER : M_FILE;
        if (wr->mode == M_FILE) {
            /* Our own descriptor, for the queue to own (gw_out_push_file_own). */
            if ((wr->fd = fcntl(wr->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                app_error(wr, "cannot send file");
                return;
            }
        } else {
            wr->fd = -1;
            if (!(wr->iter = PyObject_GetIter(res))) {
                app_error(wr, "error");
                return;
            }
        }
    } else {
        wr->mode = M_ITER;
        if (!(wr->iter = PyObject_GetIter(res))) {
            app_error(wr, "the app's answer is not iterable");
            return;
        }
    }
    pump(wr);
}

void gw__wsgi_on_resume(void *ctx, gw_conn_t *c)
{
    wreq_t *wr = *gw_conn_app_slot(c);
    (void)ctx;

    if (!wr)
        return;
    wr->awaits_resume = false;
    if (wr->is_dead) {
        finish(wr, false, wr->code); /* an app thread's write() found the client gone */
    } else if (wr->is_finishing) {
        complete(wr); /* all sent (the loop's thread), or room for the rest (a request thread) */
    } else if (wr->is_ending) {
        wr->is_ending = false;
        end_body(wr);
    } else {
        pump(wr);
    }
}

void gw__wsgi_on_abort(void *ctx, gw_conn_t *c)
{
    wreq_t *wr = *gw_conn_app_slot(c);
    (void)ctx;
    if (wr)
        finish(wr, false, wr->code); /* its log line says aborted */
}
