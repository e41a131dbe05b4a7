/* The WSGI bridge's private parts, shared by the files that make it and by
 * nothing else: wsgi.c (the interpreter: start-up, the app's import, fork
 * and GIL hooks, teardown), wsgi_environ.c (the environ and its per-listener
 * templates), wsgi_headers.c (the app's status and headers, checked and
 * copied), wsgi_callables.c (start_response and write() bound to their
 * request), wsgi_response.c (the request handler and the response pump) and
 * wsgi_harakiri.c (the watchdog). The public interface is py/wsgi.h.
 * Includes Python.h: for src/py/ only. */
#ifndef GW_WSGI_PRIV_H
#define GW_WSGI_PRIV_H

#include "py/wsgi_types.h" /* Python.h first */

#include "py/wsgi.h"

#include "serve/response.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum { M_SEQ, M_ITER, M_FILE };

/* One request's application state, in the request arena. */
typedef struct wreq {
    gw_wsgi_t *w;
    gw_conn_t *conn;
    PyObject *sr;     /* owned: this request's start_response, unbound at the end */
    PyObject *input;  /* owned; detached at the end */
    PyObject *result; /* owned: what the app returned */
    PyObject *iter;   /* owned, M_ITER */
    /* M_SEQ: the answer's items as they were when the app returned them, one
     * reference each (items[seq_i..seq_n) not yet handed to the output queue);
     * never the app's list itself, which the app may change at any time. */
    PyObject **items; /* in the arena, or &one */
    PyObject *one;
    Py_ssize_t seq_i, seq_n;
    PyObject *pending; /* owned: a body block taken but not queued, the ring being full */
    gw_hdr_t *hdrs;   /* validated copies in the arena */
    size_t nhdrs;
    char *status;
    size_t status_len;
    int code;
    int cl_index;     /* the app's Content-Length among hdrs, or -1 */
    int64_t app_length;   /* its value, or -1 */
    int64_t known_length; /* computed by us (list, file), or -1 */
    gw_resp_t rs;         /* the answer's framing, decided by the writer, and its progress */
    int fd;               /* M_FILE: our dup() of the file's descriptor, owned until queued */
    long long fpos;
    uint8_t mode;
    bool headers_set, headers_sent, app_close;
    bool has_server, has_date, has_request_id, is_finishing, is_dead, has_truncated;
    bool is_complete; /* the answer is all queued (or abandoned): write() refuses */
    bool awaits_resume; /* the pump is back in the loop until on_resume */
    bool is_ending;     /* end_body() waits for room for the last chunk */
} wreq_t;

typedef struct known_header {
    const char *name;
    const char *key;
    PyObject *k; /* interned */
} known_header_t;

struct gw_wsgi {
    const gw_config_t *cfg;
    PyObject *app;
    /* Pairs of start_response and write nobody holds, for the next requests:
     * no allocation per request. A few, not one: a request whose answer
     * waits for a slow client keeps its pair while the next ones run. With
     * threads per worker (issue 16), per thread. */
    PyObject *spare_sr[8];
    unsigned nspare;
    PyObject *errors;
    PyObject **templates;     /* one environ template per listener */
    const gw_listener_t *listeners;
    size_t nlisteners;
    PyThreadState *tstate;
    PyObject *k_method, *k_path, *k_query, *k_uri, *k_proto, *k_raddr, *k_rport, *k_sname,
        *k_ctype, *k_clen, *k_input, *k_reqid, *s_close;
    PyObject *v_http10, *v_http11, *v_empty, *v_https;
    PyObject *methods[8];
    known_header_t known[24];
    PyObject *timeout_exc;    /* gangway.RequestTimeout */
    unsigned long main_thread;
    gw_slot_t *wd_slot;       /* watchdog: the slot it watches */
    unsigned wd_id;
    pthread_t wd_thread;
    pthread_mutex_t wd_mu;    /* with wd_cv: the watchdog's sleep, cut short to stop */
    pthread_cond_t wd_cv;
    bool has_watchdog;
    int dump_sig;             /* faulthandler's dump signal, 0: no traceback dumps */
    _Atomic bool wd_stop;     /* set before the interpreter goes away */
};

/* wsgi.c */
extern bool is_app_fork_child;
void leave_fork_child(void);
#define CHECK_FORK()                                                                               \
    do {                                                                                           \
        if (is_app_fork_child)                                                                     \
            leave_fork_child();                                                                    \
    } while (0)

void log_exception(const char *what, wreq_t *wr);

/* wsgi_environ.c */
void on_close(void *ctx, gw_conn_t *c);
PyObject *build_environ_cgi(gw_wsgi_t *w, wreq_t *wr);
PyObject *build_environ(gw_wsgi_t *w, wreq_t *wr);
PyObject *make_template(gw_wsgi_t *w, const gw_listener_t *l);
int intern_all(gw_wsgi_t *w);

/* wsgi_headers.c */
int take_headers(wreq_t *wr, PyObject *status, PyObject *headers);

/* wsgi_callables.c */
extern PyTypeObject binding_type;
void pair_drop(PyObject *sr);
PyObject *bind_request(gw_wsgi_t *w, wreq_t *wr);
void unbind_request(gw_wsgi_t *w, wreq_t *wr);

/* wsgi_response.c */
PyObject *take_block(PyObject *item, const char *what);
int send_head(wreq_t *wr);
int queue_body(wreq_t *wr, PyObject *item);
void release_owner(void *owner);
void on_request(void *ctx, gw_conn_t *c);
void on_resume(void *ctx, gw_conn_t *c);
void on_abort(void *ctx, gw_conn_t *c);

/* wsgi_harakiri.c */
/* The harakiri clock counts Python time only (--harakiri): while write()
 * waits for a slow client, the slot's busy_since_ms is moved past anything
 * the watchdog or the master could count (the wait ends within the write
 * timeout), then set back shifted by the time waited. */
typedef struct hk_pause {
    uint64_t since; /* 0: nothing to pause */
    uint64_t t0;
} hk_pause_t;
hk_pause_t harakiri_pause(gw_wsgi_t *w);
void harakiri_resume(gw_wsgi_t *w, hk_pause_t p);

#endif
