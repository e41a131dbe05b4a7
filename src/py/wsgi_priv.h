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
    uint8_t mode;         /* M_SEQ, M_ITER or M_FILE (wsgi_response.c) */
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

/* One request thread (--threads N > 1, wsgi_pool.c). */
typedef struct gw_pthread {
    gw_waiter_t waiter;      /* in the job queue's idle stack */
    gw_conn_runner_t run;    /* its staging queue and the connection it serves */
    struct gw_wsgi *w;
    pthread_t tid;
    PyThreadState *ts;       /* made once, when it starts */
    unsigned long ident;     /* Python's, for PyThreadState_SetAsyncExc */
    _Atomic uint64_t busy_since_ms; /* its harakiri clock: the app runs since (0: idle) */
    uint64_t fired_for;      /* watchdog's: the since it raised RequestTimeout for ... */
    uint64_t fired_at;       /* ... and when */
    bool hk_raised;          /* RequestTimeout was raised in it for this request (GIL) */
    char what[120];          /* "METHOD target" while busy (for logs; may be torn) */
} gw_pthread_t;

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
    PyObject *k_scheme, *k_sport, *k_https, *k_peer; /* forwarded: set_client() */
    PyObject *v_http10, *v_http11, *v_empty, *v_https, *v_on;
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
    bool hk_raised;           /* RequestTimeout raised in the loop's thread (GIL) */
    int dump_sig;             /* faulthandler's dump signal, 0: no traceback dumps */
    _Atomic bool wd_stop;     /* set before the interpreter goes away */
    /* --threads N > 1 (wsgi_pool.c) */
    gw_pthread_t *thr;
    unsigned nthreads;        /* started and not yet joined */
    gw_conn_ctx_t *pctx;      /* the server's connections: the job queue */
    bool tick_seen_garbage;   /* the loop's tick found garbage with every thread idle */
    bool are_threads_joined;  /* gw_wsgi_stop_threads() ran */
};

/* ---- wsgi.c ---- */

/* Set in a child of a fork() gangway did not make (the app's); read
 * wherever control comes back from Python, see wsgi.c. */
extern bool gw__wsgi_is_app_fork_child;
/* Such a child logs one line and _exit()s. Never returns. */
void gw__wsgi_leave_fork_child(void);
#define CHECK_FORK()                                                                               \
    do {                                                                                           \
        if (gw__wsgi_is_app_fork_child)                                                            \
            gw__wsgi_leave_fork_child();                                                           \
    } while (0)

/* Logs the pending exception with its traceback, after a line naming the
 * request (wr) or nothing but what (wr NULL); clears it. */
void gw__wsgi_log_exception(const char *what, wreq_t *wr);

/* ---- wsgi_environ.c ---- */

/* Interns the environ keys and values once per worker. 0, or -1 with an
 * exception set. */
int gw__wsgi_intern(gw_wsgi_t *w);
/* The environ template of listener l (new ref), or NULL with an exception
 * set. */
PyObject *gw__wsgi_template(gw_wsgi_t *w, const gw_listener_t *l);
/* wr's environ (new ref) from HTTP fields, or from CGI variables (a uwsgi
 * request); wr->input is set. NULL with an exception set. Runs no app
 * code. */
PyObject *gw__wsgi_environ(gw_wsgi_t *w, wreq_t *wr);
PyObject *gw__wsgi_environ_cgi(gw_wsgi_t *w, wreq_t *wr);
/* The handler's on_close: drops the connection's REMOTE_ADDR/PORT tuple. */
void gw__wsgi_on_close(void *ctx, gw_conn_t *c);

/* ---- wsgi_headers.c ---- */

/* Checks start_response()'s status and headers and copies them into wr (the
 * arena). 0, or -1 with an exception set (nothing of them is sent then). */
int gw__wsgi_take_headers(wreq_t *wr, PyObject *status, PyObject *headers);

/* ---- wsgi_callables.c ---- */

/* Readies the binding type, once per interpreter. 0, or -1 with an
 * exception set. */
int gw__wsgi_callables_init(void);
/* wr's start_response, a spare pair or a new one bound to wr (borrowed: wr
 * owns it), or NULL with an exception set. Runs no Python. */
PyObject *gw__wsgi_bind(gw_wsgi_t *w, wreq_t *wr);
/* The request is over: its pair lets go of it and, when nobody else holds
 * it, waits in w's spares for the next request. Runs no Python. */
void gw__wsgi_unbind(gw_wsgi_t *w, wreq_t *wr);
/* Drops w's spare pairs (teardown). */
void gw__wsgi_spares_free(gw_wsgi_t *w);

/* ---- wsgi_response.c ---- */

/* A body block the output queue may own (new ref), or NULL with an
 * exception set. Runs no Python. */
PyObject *gw__wsgi_take_block(PyObject *item, const char *what);
/* Queues the head; 0, or -1 with MemoryError set. */
int gw__wsgi_send_head(wreq_t *wr);
/* Queues a block whole (0; the queue owns item), or 1 when the ring has no
 * room (item is still the caller's). Runs no Python. */
int gw__wsgi_queue_body(wreq_t *wr, PyObject *item);
/* The handler's callbacks (serve/conn.h, gw_handler_t). */
void gw__wsgi_on_request(void *ctx, gw_conn_t *c);
void gw__wsgi_on_resume(void *ctx, gw_conn_t *c);
void gw__wsgi_on_abort(void *ctx, gw_conn_t *c);
void gw__wsgi_release_owner(void *owner);

/* ---- wsgi_harakiri.c ---- */

/* The harakiri clock counts Python time only (--harakiri): while write()
 * waits for a slow client, the slot's busy_since_ms is moved past anything
 * the watchdog or the master could count (the wait ends within the write
 * timeout), then set back shifted by the time waited. */
typedef struct hk_pause {
    uint64_t since; /* 0: nothing to pause */
    uint64_t t0;
} hk_pause_t;
hk_pause_t gw__wsgi_harakiri_pause(gw_wsgi_t *w);
void gw__wsgi_harakiri_resume(gw_wsgi_t *w, hk_pause_t p);
/* Stops the watchdog and waits for it (GIL held; let go meanwhile). */
void gw__wsgi_stop_watchdog(gw_wsgi_t *w);
/* The calling thread's harakiri clock (the slot's on the loop's thread, its
 * own on a request thread; none on the app's threads): what
 * gw__wsgi_harakiri_pause() moves; raised: where the watchdog says it
 * raised RequestTimeout in this thread. */
void gw__wsgi_harakiri_clock(_Atomic uint64_t *since, bool *raised);
/* GIL held, the request's Python part over (cleanup()): a RequestTimeout
 * raised in this thread that never landed (it came while the thread was in
 * C code no bytecode followed, a read() from a pipe) is withdrawn, or the
 * next request on this thread would raise it. */
void gw__wsgi_harakiri_forget(void);

/* ---- wsgi_pool.c ---- */

/* Frees what the request threads left (they are joined; GIL held). */
void gw__wsgi_threads_free(gw_wsgi_t *w);

#endif
