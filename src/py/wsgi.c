#include "py/wsgi_types.h" /* Python.h first */

#include "py/wsgi.h"

#include "core/log.h"
#include "proc/signals.h"
#include "serve/response.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_PYTHON_EXE
#define GW_PYTHON_EXE "/usr/bin/python3"
#endif

enum { M_SEQ, M_ITER, M_FILE };

typedef struct binding binding_t;

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
    int dump_sig;             /* faulthandler's dump signal, 0: no traceback dumps */
    _Atomic bool wd_stop;     /* set before the interpreter goes away */
};

static const char *method_names[8] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH",
                                      NULL};

static const char *known_names[][2] = {
    {"host", "HTTP_HOST"},
    {"user-agent", "HTTP_USER_AGENT"},
    {"accept", "HTTP_ACCEPT"},
    {"accept-encoding", "HTTP_ACCEPT_ENCODING"},
    {"accept-language", "HTTP_ACCEPT_LANGUAGE"},
    {"connection", "HTTP_CONNECTION"},
    {"cookie", "HTTP_COOKIE"},
    {"referer", "HTTP_REFERER"},
    {"cache-control", "HTTP_CACHE_CONTROL"},
    {"origin", "HTTP_ORIGIN"},
    {"authorization", "HTTP_AUTHORIZATION"},
    {"x-forwarded-for", "HTTP_X_FORWARDED_FOR"},
    {"x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"},
    {"x-real-ip", "HTTP_X_REAL_IP"},
    {"x-requested-with", "HTTP_X_REQUESTED_WITH"},
    {"if-none-match", "HTTP_IF_NONE_MATCH"},
    {"if-modified-since", "HTTP_IF_MODIFIED_SINCE"},
    {"upgrade-insecure-requests", "HTTP_UPGRADE_INSECURE_REQUESTS"},
    {"pragma", "HTTP_PRAGMA"},
    {"expect", "HTTP_EXPECT"},
    {"x-csrftoken", "HTTP_X_CSRFTOKEN"},
    {"sec-fetch-mode", "HTTP_SEC_FETCH_MODE"},
    {"range", "HTTP_RANGE"},
};
#define NKNOWN (sizeof(known_names) / sizeof(known_names[0]))

const char *gw_wsgi_python_version(void)
{
    return PY_VERSION;
}

/* ---- a fork() by the app ---- */

/* The child of a fork() gangway did not make (the app's os.fork(), a C
 * library's fork()) is a copy of this worker: it shares the client's
 * socket, the listeners and the epoll set, and holds a copy of the output
 * queue and of the access-log buffer. Should it come back into gangway (an
 * app that lets the child return) it would send a second answer on the
 * connection, log the parent's lines again, and go on serving the port
 * unsupervised, after the master is gone. So the pthread_atfork() child
 * handler marks it, and wherever control comes back from Python (the app
 * call, each step of its iterator, close(), write(), finalizers, the loop
 * before it waits) the mark is read (one load) and such a child leaves at
 * once with _exit(): no Python finalization, no flush of any buffer it
 * shares with its parent. A child that execs (subprocess) or ends itself
 * (multiprocessing's processes end with os._exit()) never comes back. */
static bool is_app_fork_child;
static bool is_own_fork; /* gangway forks a --preload worker: not the app's */
/* The forking thread's signal mask, restored after the fork. */
static _Thread_local sigset_t fork_mask;

/* The child's signals are its own: gangway's handlers would write into the
 * worker's signal pipe, so a SIGTERM meant for the child (multiprocessing
 * ends its processes so, `with Pool()` among them) stopped the worker and
 * left the child running. The child goes back to the default handlers; the
 * handled signals stay blocked across the fork, so that one sent at once
 * (before the child's handler runs) waits for those defaults. */
static void on_fork_prepare(void)
{
    if (!is_own_fork)
        gw_signals_block(&fork_mask);
}

static void on_fork_parent(void)
{
    if (!is_own_fork)
        gw_signals_restore(&fork_mask);
}

static void on_fork_child(void)
{
    if (is_own_fork)
        return;
    is_app_fork_child = true;
    gw_signals_close(-1); /* signal() and close() only: async-signal-safe */
    gw_signals_restore(&fork_mask);
}

static void leave_fork_child(void)
{
    gw_log_error("pid %d: a child process the app forked returned into gangway; it exits "
                 "now (a child must exec, or end with os._exit())", (int)getpid());
    _exit(1);
}

#define CHECK_FORK()                                                                               \
    do {                                                                                           \
        if (is_app_fork_child)                                                                     \
            leave_fork_child();                                                                    \
    } while (0)

/* Logs the pending exception with its traceback, after a line of context. */
static void log_exception(const char *what, wreq_t *wr)
{
    PyObject *t, *v, *tb;
    const char *rb;
    gw_req_t *r;

    if (wr) {
        r = gw_conn_req(wr->conn);
        rb = gw_conn_rbuf(wr->conn);
        gw_log_error("%s in the app for %.*s %.*s:", what, (int)r->method.len, rb + r->method.off,
                     (int)(r->target.len > 200 ? 200 : r->target.len), rb + r->target.off);
    } else {
        gw_log_error("%s:", what);
    }
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    PyErr_Display(t, v, tb);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    assert(!PyErr_Occurred());
}

/* ---- environ ---- */

static int set_item(PyObject *env, PyObject *key, PyObject *val)
{
    int rc;
    if (!val)
        return -1;
    rc = PyDict_SetItem(env, key, val);
    Py_DECREF(val);
    return rc;
}

static PyObject *latin1(const char *s, size_t n)
{
    return PyUnicode_DecodeLatin1(s, (Py_ssize_t)n, NULL);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* PATH_INFO: percent-decoded, carried as latin-1 (PEP 3333). */
static PyObject *decode_path(const char *s, size_t n, gw_arena_t *a)
{
    char *d, *o;

    if (!memchr(s, '%', n))
        return latin1(s, n);
    if (!(d = gw_arena_alloc(a, n ? n : 1)))
        return PyErr_NoMemory();
    o = d;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 && (lo = hexval((unsigned char)s[i + 2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    return latin1(d, (size_t)(o - d));
}

static PyObject *header_key(gw_wsgi_t *w, const char *name, size_t n, gw_arena_t *a, bool *owned)
{
    char *k;

    for (size_t i = 0; i < NKNOWN; i++) {
        const known_header_t *kh = &w->known[i];
        if (strlen(kh->name) == n && strncasecmp(kh->name, name, n) == 0) {
            *owned = false;
            return kh->k;
        }
    }
    if (!(k = gw_arena_alloc(a, n + 5)))
        return PyErr_NoMemory();
    memcpy(k, "HTTP_", 5);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        k[5 + i] = c == '-' ? '_' : (char)toupper(c);
    }
    *owned = true;
    return PyUnicode_FromStringAndSize(k, (Py_ssize_t)n + 5);
}

/* "old, more" (or "old; more" for cookies); steals more. New ref or NULL. */
static PyObject *join_values(PyObject *old, PyObject *more, const char *sep)
{
    PyObject *joined;
    if (!more)
        return NULL;
    joined = PyUnicode_FromFormat("%U%s%U", old, sep, more);
    Py_DECREF(more);
    return joined;
}

static int add_header(gw_wsgi_t *w, PyObject *env, const char *rb, const gw_header_t *h,
                      gw_arena_t *a)
{
    const char *name = rb + h->name.off, *val = rb + h->value.off;
    size_t nl = h->name.len;
    PyObject *key, *v, *old;
    bool owned = false;
    int rc;

    if (nl == 14 && strncasecmp(name, "content-length", 14) == 0)
        return 0; /* CONTENT_LENGTH comes from the buffered body */
    if (nl == 17 && strncasecmp(name, "transfer-encoding", 17) == 0)
        return 0; /* the body is de-chunked before the app sees it */
    if (nl == 5 && strncasecmp(name, "proxy", 5) == 0)
        return 0; /* HTTP_PROXY would pose as a proxy setting (httpoxy) */
    if (nl == 12 && strncasecmp(name, "content-type", 12) == 0)
        return set_item(env, w->k_ctype, latin1(val, h->value.len));
    if (!(key = header_key(w, name, nl, a, &owned)))
        return -1;
    old = PyDict_GetItemWithError(env, key); /* borrowed */
    if (old) {
        /* Repeated fields join with ", " (RFC 9110 5.3); cookies with "; ". */
        bool is_cookie = nl == 6 && strncasecmp(name, "cookie", 6) == 0;
        v = join_values(old, latin1(val, h->value.len), is_cookie ? "; " : ", ");
    } else if (PyErr_Occurred()) {
        v = NULL;
    } else {
        v = latin1(val, h->value.len);
    }
    rc = set_item(env, key, v);
    if (owned)
        Py_DECREF(key);
    return rc;
}

/* REMOTE_ADDR and REMOTE_PORT are made once per connection and kept for
 * its keep-alive requests (a tuple in the connection's handler data). */
static int set_remote(PyObject *env, gw_wsgi_t *w, gw_conn_t *c, const gw_peer_t *peer)
{
    PyObject **slot = (PyObject **)gw_conn_handler_data(c);

    if (!*slot) {
        PyObject *a = latin1(peer->addr, strlen(peer->addr));
        PyObject *p = latin1(peer->port, strlen(peer->port));
        if (!a || !p || !(*slot = PyTuple_Pack(2, a, p))) {
            Py_XDECREF(a);
            Py_XDECREF(p);
            return -1;
        }
        Py_DECREF(a);
        Py_DECREF(p);
    }
    if (PyDict_SetItem(env, w->k_raddr, PyTuple_GET_ITEM(*slot, 0)) < 0 ||
        PyDict_SetItem(env, w->k_rport, PyTuple_GET_ITEM(*slot, 1)) < 0)
        return -1;
    return 0;
}

static void on_close(void *ctx, gw_conn_t *c)
{
    PyObject **slot = (PyObject **)gw_conn_handler_data(c);
    (void)ctx;
    Py_CLEAR(*slot); /* a tuple of two str: no Python code runs */
}

static bool var_is(const char *k, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(k, lit, n) == 0;
}

/* --request-id: a request without a usable X-Request-Id gets a new one,
 * which the app sees like the header it would have sent. */
static int set_request_id(gw_wsgi_t *w, PyObject *env, gw_req_t *r, const char *rb)
{
    size_t n;
    const char *id;

    if (!w->cfg->request_id)
        return 0;
    id = gw_req_id(r, rb, true, &n);
    if (id != r->gen_id)
        return 0; /* the client's, already in the environ as it came */
    return set_item(env, w->k_reqid, latin1(id, n));
}

/* A copy of the environ template of the listener c came through (new ref). */
static PyObject *environ_from_template(gw_wsgi_t *w, gw_conn_t *c)
{
    const gw_peer_t *peer = gw_conn_peer(c);
    size_t li = (size_t)(peer->listener - w->listeners);
    return PyDict_Copy(w->templates[li < w->nlisteners ? li : 0]);
}

/* CONTENT_LENGTH from the stored body (whatever framing brought it) and
 * wsgi.input over it. 0 or -1. */
static int set_body(gw_wsgi_t *w, wreq_t *wr, PyObject *env, gw_req_t *r)
{
    char clen[24];

    if (r->content_length >= 0 || r->is_chunked) {
        snprintf(clen, sizeof(clen), "%llu", (unsigned long long)r->body.len);
        if (set_item(env, w->k_clen, PyUnicode_FromString(clen)) < 0)
            return -1;
    }
    if (!(wr->input = gw_input_new(&r->body)) || PyDict_SetItem(env, w->k_input, wr->input) < 0)
        return -1;
    return 0;
}

/* A request of CGI variables (uwsgi from nginx): they become the environ as
 * they are, with the scheme taken from HTTPS / REQUEST_SCHEME. */
static PyObject *build_environ_cgi(gw_wsgi_t *w, wreq_t *wr)
{
    gw_conn_t *c = wr->conn;
    gw_req_t *r = gw_conn_req(c);
    const char *rb = gw_conn_rbuf(c);
    PyObject *env = environ_from_template(w, c);

    if (!env)
        return NULL;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const char *k = rb + r->headers[i].name.off, *v = rb + r->headers[i].value.off;
        size_t kn = r->headers[i].name.len, vn = r->headers[i].value.len;
        PyObject *key, *old;
        int rc;

        if (var_is(k, kn, "CONTENT_LENGTH") || var_is(k, kn, "HTTP_CONTENT_LENGTH") ||
            var_is(k, kn, "HTTP_CONTENT_TYPE") || var_is(k, kn, "HTTP_PROXY") ||
            var_is(k, kn, "HTTP_TRANSFER_ENCODING"))
            continue; /* the length comes from the stored body, below; the rest as in HTTP
                       * (nginx de-chunks an upload but forwards the client's header) */
        /* Values compare case-insensitively, as uWSGI does (HTTPS=OFF is off). */
        if ((var_is(k, kn, "HTTPS") && vn && !(vn == 3 && strncasecmp(v, "off", 3) == 0)) ||
            ((var_is(k, kn, "REQUEST_SCHEME") || var_is(k, kn, "UWSGI_SCHEME")) && vn == 5 &&
             strncasecmp(v, "https", 5) == 0)) {
            if (PyDict_SetItemString(env, "wsgi.url_scheme", w->v_https) < 0)
                goto fail;
        }
        if (!(key = latin1(k, kn)))
            goto fail;
        PyUnicode_InternInPlace(&key);
        if (kn > 5 && memcmp(k, "HTTP_", 5) == 0 && (old = PyDict_GetItemWithError(env, key))) {
            /* nginx repeats a header the client repeated: join as HTTP does */
            rc = set_item(env, key, join_values(old, latin1(v, vn),
                                                var_is(k, kn, "HTTP_COOKIE") ? "; " : ", "));
        } else if (PyErr_Occurred()) {
            rc = -1;
        } else {
            rc = set_item(env, key, latin1(v, vn));
        }
        Py_DECREF(key);
        if (rc < 0)
            goto fail;
    }
    if (set_request_id(w, env, r, rb) < 0 || set_body(w, wr, env, r) < 0)
        goto fail;
    return env;
fail:
    Py_DECREF(env);
    return NULL;
}

/* SERVER_NAME from a host[:port] or [v6][:port] (the Host header, an
 * absolute-form target's authority, a trusted proxy's forwarded host). */
static int set_server_name(gw_wsgi_t *w, PyObject *env, const char *hv, size_t n)
{
    size_t start = 0, end;

    if (n && hv[0] == '[') {
        const char *rbr = memchr(hv, ']', n);
        start = 1;
        end = rbr ? (size_t)(rbr - hv) : n;
    } else {
        const char *colon = memchr(hv, ':', n);
        end = colon ? (size_t)(colon - hv) : n;
    }
    if (end > start && set_item(env, w->k_sname, latin1(hv + start, end - start)) < 0)
        return -1;
    return 0;
}

/* What a PROXY protocol header or trusted proxies say of the client
 * (serve/conn.c, proto/forwarded.c): REMOTE_ADDR and REMOTE_PORT, the
 * scheme (wsgi.url_scheme, HTTPS=on), with --forwarded-host the host and
 * port asked for (HTTP_HOST, SERVER_NAME, SERVER_PORT); the connection's
 * own peer (the balancer) stays in gangway.peer_addr. 0 or -1. */
static int set_client(gw_wsgi_t *w, PyObject *env, const gw_peer_t *peer, const gw_req_t *r,
                      const char *rb)
{
    const gw_req_client_t *cl = &r->client;
    char port[8];

    if (peer->via[0] || cl->addr[0]) {
        const char *own = peer->via[0] ? peer->via : peer->addr;
        if (set_item(env, w->k_peer, latin1(own, strlen(own))) < 0)
            return -1;
    }
    if (cl->addr[0] && (set_item(env, w->k_raddr, latin1(cl->addr, strlen(cl->addr))) < 0 ||
                        set_item(env, w->k_rport, latin1(cl->port, strlen(cl->port))) < 0))
        return -1;
    if (cl->scheme == GW_SCHEME_HTTPS && (PyDict_SetItem(env, w->k_scheme, w->v_https) < 0 ||
                                          PyDict_SetItem(env, w->k_https, w->v_on) < 0))
        return -1;
    if (cl->host.len) {
        snprintf(port, sizeof(port), "%u",
                 cl->server_port ? cl->server_port : cl->scheme == GW_SCHEME_HTTPS ? 443 : 80);
        if (set_item(env, w->known[0].k, latin1(rb + cl->host.off, cl->host.len)) < 0 ||
            set_server_name(w, env, rb + cl->host.off, cl->host.len) < 0 ||
            set_item(env, w->k_sport, latin1(port, strlen(port))) < 0)
            return -1;
    } else if (cl->server_port) {
        snprintf(port, sizeof(port), "%u", cl->server_port);
        if (set_item(env, w->k_sport, latin1(port, strlen(port))) < 0)
            return -1;
    }
    return 0;
}

static PyObject *build_environ(gw_wsgi_t *w, wreq_t *wr)
{
    gw_conn_t *c = wr->conn;
    gw_req_t *r = gw_conn_req(c);
    const char *rb = gw_conn_rbuf(c);
    const gw_peer_t *peer = gw_conn_peer(c);
    gw_span_t host = gw_req_host(r);
    PyObject *env = environ_from_template(w, c); /* new ref */
    PyObject *method = NULL;

    if (!env)
        return NULL;
    for (int i = 0; method_names[i]; i++) {
        if (r->method.len == strlen(method_names[i]) &&
            memcmp(rb + r->method.off, method_names[i], r->method.len) == 0) {
            method = w->methods[i];
            Py_INCREF(method);
            break;
        }
    }
    if (!method)
        method = latin1(rb + r->method.off, r->method.len);
    if (set_item(env, w->k_method, method) < 0 ||
        set_item(env, w->k_path, decode_path(rb + r->path.off, r->path.len, &r->arena)) < 0 ||
        (r->query.len && /* the template holds "" */
         set_item(env, w->k_query, latin1(rb + r->query.off, r->query.len)) < 0) ||
        set_item(env, w->k_uri, latin1(rb + r->target.off, r->target.len)) < 0 ||
        PyDict_SetItem(env, w->k_proto, r->http_minor ? w->v_http11 : w->v_http10) < 0 ||
        set_remote(env, w, c, peer) < 0)
        goto fail;
    if (host.len && /* an absolute-form target's authority, else Host */
        set_server_name(w, env, rb + host.off, host.len) < 0)
        goto fail;
    for (uint32_t i = 0; i < r->nheaders; i++)
        if (add_header(w, env, rb, &r->headers[i], &r->arena) < 0)
            goto fail;
    if (r->authority.len && /* RFC 9112 3.2.2: it replaces Host; known[0] is HTTP_HOST */
        set_item(env, w->known[0].k, latin1(rb + r->authority.off, r->authority.len)) < 0)
        goto fail;
    if ((peer->via[0] || r->client.addr[0] || r->client.scheme || r->client.host.len) &&
        set_client(w, env, peer, r, rb) < 0)
        goto fail;
    if (set_request_id(w, env, r, rb) < 0 || set_body(w, wr, env, r) < 0)
        goto fail;
    return env;
fail:
    Py_DECREF(env);
    return NULL;
}

/* ---- start_response and write ---- */

static const char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
};

/* A latin-1 view of a str, or NULL with ValueError/TypeError set. A str
 * subclass is read as the str it is (its data, not its methods): no Python
 * code runs. */
static const char *latin1_view(PyObject *s, const char *what, size_t *n)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(s)->tp_name);
        return NULL;
    }
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        PyErr_Format(PyExc_ValueError, "%s must be latin-1: %R", what, s);
        return NULL;
    }
    *n = (size_t)PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

/* n is checked first: most names differ in length, so strncasecmp rarely runs. */
#define name_is(s, n, lit) ((n) == sizeof(lit) - 1 && strncasecmp((s), (lit), (n)) == 0)

/* Whether a comma-separated list of tokens (a Connection value, RFC 9110
 * 5.6.1: OWS around the commas, empty elements allowed) holds tok,
 * compared case-insensitively as every token is. */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;

    while (i < n) {
        size_t start, end;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        start = i;
        while (i < n && v[i] != ',')
            i++;
        end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, tok, tl) == 0)
            return true;
    }
    return false;
}

/* A field value may hold HTAB, SP, VCHAR and obs-text (RFC 9110 5.5): any
 * other control character (CR, LF, NUL, and also VT, FF, DEL...) could end
 * or bend the line in some recipient. Every status and header value of
 * every answer goes through here, so values of 8 bytes and more are read a
 * word at a time (the last word overlapping the one before): a word with no
 * byte below 0x20 and none equal to 0x7f costs a few instructions, one that
 * has some is looked at byte by byte (HTAB is fine). */
static const bool ctl_byte[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, /* 0x09 HTAB */ [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, [0x7f] = 1,
};

static bool has_ctl_bytes(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ctl_byte[(unsigned char)v[i]])
            return true;
    return false;
}

static bool is_field_value(const char *v, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;

    if (n < 8)
        return !has_ctl_bytes(v, n);
    for (size_t i = 0; i < n; i += 8) {
        const char *p = i + 8 <= n ? v + i : v + n - 8;
        uint64_t x, y;
        memcpy(&x, p, 8);
        y = x ^ (ones * 0x7f);
        /* Nonzero iff some byte is below 0x20 or is 0x7f (the classic "has
         * a byte less than n" and "has a zero byte" tests). */
        if ((((x - ones * 0x20) & ~x) | ((y - ones) & ~y)) & highs && has_ctl_bytes(p, 8))
            return false;
    }
    return true;
}

/* Validates status and headers and copies them into the arena. Returns 0, or
 * -1 with an exception set (nothing of them is ever sent then). headers may
 * be a list or tuple (or a subclass: read as stored, its methods are not
 * called); each item a (name, value) tuple of str. No Python code runs here
 * except repr() in an error message, after which nothing is read. */
static int take_headers(wreq_t *wr, PyObject *status, PyObject *headers)
{
    gw_arena_t *a = &gw_conn_req(wr->conn)->arena;
    const char *s, *phrase;
    size_t n;
    Py_ssize_t nh;
    gw_hdr_t *hdrs;
    size_t k = 0;
    int code;

    if (!(s = latin1_view(status, "status", &n)))
        return -1;
    if (n < 3 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
        !isdigit((unsigned char)s[2]) || (n > 3 && s[3] != ' ') || s[0] == '0') {
        PyErr_Format(PyExc_ValueError, "status must look like '200 OK': %R", status);
        return -1;
    }
    if (!is_field_value(s, n)) {
        PyErr_Format(PyExc_ValueError, "control character in status %R", status);
        return -1;
    }
    code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (code < 200) {
        PyErr_Format(PyExc_ValueError, "%R is not a final status", status);
        return -1;
    }
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "headers must be a list, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return -1;
    }
    nh = PySequence_Fast_GET_SIZE(headers);
    if ((size_t)nh > SIZE_MAX / sizeof(*hdrs) ||
        !(hdrs = gw_arena_alloc(a, (size_t)(nh ? nh : 1) * sizeof(*hdrs)))) {
        PyErr_NoMemory();
        return -1;
    }
    if (n == 3) {
        /* status-line = HTTP-version SP status-code SP [ reason-phrase ]
         * (RFC 9112 4): a bare "200" gets its standard phrase, or none. */
        phrase = gw_status_phrase(code);
        wr->status_len = 4 + (phrase ? strlen(phrase) : 0);
        if ((wr->status = gw_arena_alloc(a, wr->status_len + 1)))
            snprintf(wr->status, wr->status_len + 1, "%.3s %s", s, phrase ? phrase : "");
    } else {
        wr->status = gw_arena_dup(a, s, n);
        wr->status_len = n;
    }
    if (!wr->status) {
        PyErr_NoMemory();
        return -1;
    }
    wr->code = code;
    wr->app_length = -1;
    wr->cl_index = -1;
    wr->app_close = wr->has_server = wr->has_date = wr->has_request_id = false;
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(headers, i);
        const char *name, *val;
        size_t nl, vl;

        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
            PyErr_Format(PyExc_TypeError, "each header must be a (name, value) tuple, not %.100s",
                         Py_TYPE(t)->tp_name);
            return -1;
        }
        if (!(name = latin1_view(PyTuple_GET_ITEM(t, 0), "header name", &nl)) ||
            !(val = latin1_view(PyTuple_GET_ITEM(t, 1), "header value", &vl)))
            return -1;
        if (nl == 0) {
            PyErr_SetString(PyExc_ValueError, "empty header name");
            return -1;
        }
        for (size_t j = 0; j < nl; j++) {
            if (!tchar[(unsigned char)name[j]]) {
                PyErr_Format(PyExc_ValueError, "header name is not a token: %R",
                             PyTuple_GET_ITEM(t, 0));
                return -1;
            }
        }
        if (!is_field_value(val, vl)) {
            PyErr_Format(PyExc_ValueError, "control character in the value of header %R",
                         PyTuple_GET_ITEM(t, 0));
            return -1;
        }
        /* Hop-by-hop fields are the server's business (PEP 3333). */
        if (name_is(name, nl, "connection")) {
            if (has_token(val, vl, "close"))
                wr->app_close = true;
            continue;
        }
        if (name_is(name, nl, "transfer-encoding") || name_is(name, nl, "keep-alive"))
            continue;
        if (name_is(name, nl, "content-length")) {
            unsigned long long v = 0;
            size_t j = 0;
            while (j < vl && isdigit((unsigned char)val[j]))
                v = v * 10 + (unsigned)(val[j++] - '0');
            if (vl == 0 || vl > 18 || j < vl) {
                PyErr_Format(PyExc_ValueError, "bad Content-Length %R", PyTuple_GET_ITEM(t, 1));
                return -1;
            }
            if (wr->app_length >= 0 && (unsigned long long)wr->app_length != v) {
                PyErr_SetString(PyExc_ValueError, "conflicting Content-Length headers");
                return -1;
            }
            if (wr->app_length >= 0)
                continue;
            wr->app_length = (int64_t)v;
            wr->cl_index = (int)k;
        }
        if (name_is(name, nl, "server"))
            wr->has_server = true;
        if (name_is(name, nl, "date"))
            wr->has_date = true;
        if (name_is(name, nl, "x-request-id"))
            wr->has_request_id = true;
        if (!(hdrs[k].name = gw_arena_dup(a, name, nl)) ||
            !(hdrs[k].value = gw_arena_dup(a, val, vl))) {
            PyErr_NoMemory();
            return -1;
        }
        hdrs[k].name_len = nl;
        hdrs[k].value_len = vl;
        k++;
    }
    wr->hdrs = hdrs;
    wr->nhdrs = k;
    return 0;
}

/* start_response and write(), bound to one request. They were one pair
 * per worker that acted on whichever request ran then: a thread the app
 * started for one request, or a reference it kept, wrote into the answer of
 * the next one, or called start_response for it. Now each request gets its
 * own pair, builtin functions bound (their __self__) to a binding_t that
 * points to the request; when the request ends the binding lets go of it,
 * and a later call raises RuntimeError and sends nothing. No allocation per
 * request: when nobody else holds them after the request, the pair serves
 * the next one (unbind_request); a pair the app kept is left to it and a
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
    if (take_headers(wr, args[0], args[1]) < 0)
        return NULL;
    wr->headers_set = true;
    return Py_NewRef(b->write); /* set while wr is */
}

static int send_head(wreq_t *wr);
static int queue_body(wreq_t *wr, PyObject *item);

/* A reference to a body block the output queue may hold: the object itself
 * when it is exactly bytes, a plain bytes copy of a bytes subclass. The
 * queue drops its reference from the loop's I/O handler, where a subclass's
 * __del__ must not run; an exact bytes object is freed and nothing else. New
 * ref, or NULL with TypeError (not bytes) or MemoryError set. Runs no Python. */
static PyObject *take_block(PyObject *item, const char *what)
{
    if (PyBytes_CheckExact(item))
        return Py_NewRef(item);
    if (PyBytes_Check(item))
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
    PyErr_Format(PyExc_TypeError, "%s %.100s, not bytes", what, Py_TYPE(item)->tp_name);
    return NULL;
}

/* The harakiri clock counts Python time only (--harakiri): while write()
 * waits for a slow client, the slot's busy_since_ms is moved past anything
 * the watchdog or the master could count (the wait ends within the write
 * timeout), then set back shifted by the time waited. */
typedef struct hk_pause {
    uint64_t since; /* 0: nothing to pause */
    uint64_t t0;
} hk_pause_t;

static uint64_t mono_ms(void);

static hk_pause_t harakiri_pause(gw_wsgi_t *w)
{
    hk_pause_t p = {0, 0};
    uint64_t ahead;

    /* The clock times the loop's thread; another thread's write() waiting
     * (an app's threads) is not what it counts, and two threads moving it
     * at once would leave it wrong. */
    if (!w->wd_slot || PyThread_get_thread_ident() != w->main_thread)
        return p;
    p.since = atomic_load_explicit(&w->wd_slot->busy_since_ms, memory_order_relaxed);
    if (!p.since)
        return p;
    p.t0 = mono_ms();
    ahead = w->cfg->write_timeout < (1ull << 30) ? w->cfg->write_timeout * 1000 + 1000
                                                 : (1ull << 40);
    atomic_store_explicit(&w->wd_slot->busy_since_ms, p.since + ahead, memory_order_release);
    return p;
}

static void harakiri_resume(gw_wsgi_t *w, hk_pause_t p)
{
    uint64_t t1;

    if (!p.since)
        return;
    t1 = mono_ms();
    atomic_store_explicit(&w->wd_slot->busy_since_ms, p.since + (t1 > p.t0 ? t1 - p.t0 : 0),
                          memory_order_release);
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
    hk_pause_t p = harakiri_pause(w);
    int rc;

    Py_BEGIN_ALLOW_THREADS
    rc = wait_socket(b, wt);
    Py_END_ALLOW_THREADS
    harakiri_resume(w, p);
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

/* Queues block (from take_block(); NULL: a body-less answer) and returns
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

    while (block && queue_body(wr, block) > 0) {
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
        if (rc == 0 || (rc == -EAGAIN && gw_conn_out(wr->conn)->sent >= target))
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
    if (!(block = take_block(data, "write() takes")))
        return NULL;
    if (!wr->headers_sent && send_head(wr) < 0) {
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
static PyObject *bind_request(gw_wsgi_t *w, wreq_t *wr)
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
static void unbind_request(gw_wsgi_t *w, wreq_t *wr)
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

/* ---- the response ---- */

static void release_owner(void *owner)
{
    Py_DECREF((PyObject *)owner);
}

/* Queues the head: status, headers and what is known of the length; the
 * response writer decides the framing and keep-alive into wr->rs. */
static int send_head(wreq_t *wr)
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

/* Queues a body block (a reference from take_block(), handed to the
 * output queue, which drops it once the bytes are out), all of its
 * segments or none: 0. Or 1 when the ring has no room for them: nothing is
 * queued and item is still the caller's, who makes room (write_block()
 * waits for the socket, pump() for on_resume). The app's threads fill the
 * ring while their write()s wait for the socket; a push into a full ring
 * once failed silently (and the chunk framing with it). Runs no Python. */
static int queue_body(wreq_t *wr, PyObject *item)
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
                log_exception("exception in close()", wr);
        } else if (found < 0) {
            log_exception("exception looking up close()", wr);
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
    unbind_request(w, wr);
    *gw_conn_app_slot(wr->conn) = NULL;
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
    int rc = gw_conn_send(wr->conn);
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
    log_exception(what, wr);
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
        if (send_head(wr) < 0) {
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
    if (send_head(wr) < 0) {
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
            item = take_block(got, "the app yielded");
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
        if (!wr->headers_sent && send_head(wr) < 0) {
            Py_DECREF(item);
            app_error(wr, "error");
            return;
        }
        if (wr->rs.no_body) {
            Py_DECREF(item);
            break; /* HEAD, 204, 304: the status and headers were all we needed */
        }
        while (queue_body(wr, item) > 0) {
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
        if (!(items[i] = take_block(PySequence_Fast_GET_ITEM(seq, i), "the app returned")))
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

static void on_request(void *ctx, gw_conn_t *c)
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

    env = r->has_cgi_fields ? build_environ_cgi(w, wr) : build_environ(w, wr);
    if (!env || !(sr = bind_request(w, wr))) {
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

static void on_resume(void *ctx, gw_conn_t *c)
{
    wreq_t *wr = *gw_conn_app_slot(c);
    (void)ctx;

    if (!wr)
        return;
    wr->awaits_resume = false;
    if (wr->is_dead) {
        finish(wr, false, wr->code); /* an app thread's write() found the client gone */
    } else if (wr->is_finishing) {
        finish(wr, wr->rs.keep_alive, wr->code);
    } else if (wr->is_ending) {
        wr->is_ending = false;
        end_body(wr);
    } else {
        pump(wr);
    }
}

static void on_abort(void *ctx, gw_conn_t *c)
{
    wreq_t *wr = *gw_conn_app_slot(c);
    (void)ctx;
    if (wr)
        finish(wr, false, wr->code); /* its log line says aborted */
}

/* The GIL is released around the blocking wait only when another thread
 * state exists: threading.Thread registers its state before the new thread
 * runs, so with none there is nobody to hand the GIL to, and the release and
 * re-take (~600 instructions) are skipped. A foreign C thread that calls
 * PyGILState_Ensure meanwhile waits at most one loop turn (1 s). */
static void gil_release(void *ctx)
{
    gw_wsgi_t *w = ctx;
    PyThreadState *ts = PyThreadState_Get();

    CHECK_FORK(); /* before a forked child could wait for the parent's events */
    if (PyInterpreterState_ThreadHead(ts->interp) == ts && !PyThreadState_Next(ts)) {
        w->tstate = NULL;
        return;
    }
    w->tstate = PyEval_SaveThread();
}

static void gil_acquire(void *ctx)
{
    gw_wsgi_t *w = ctx;
    if (w->tstate)
        PyEval_RestoreThread(w->tstate);
}

void gw_wsgi_handler(gw_wsgi_t *w, gw_handler_t *h, gw_block_hooks_t *hooks)
{
    h->ctx = w;
    h->on_request = on_request;
    h->on_resume = on_resume;
    h->on_abort = on_abort;
    h->release = release_owner;
    h->on_close = on_close;
    hooks->ctx = w;
    hooks->begin = gil_release;
    hooks->end = gil_acquire;
}

/* ---- harakiri ---- */

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
        log_exception("harakiri: cannot set up the traceback dump", NULL);
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

/* Sleeps ms, or until gw_wsgi_free() says stop. */
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

static void *watchdog_main(void *arg)
{
    gw_wsgi_t *w = arg;
    gw_slot_t *slot = w->wd_slot;
    uint64_t limit = w->cfg->harakiri * 1000, fired_for = 0;

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
    w->has_watchdog = true; /* joined by gw_wsgi_free() */
    return 0;
}

/* ---- start-up ---- */

static int start_interpreter(const gw_config_t *cfg)
{
    PyConfig pc;
    PyStatus st;
    char exe[4096];
    char *argv[] = {"gangway"};

    PyConfig_InitPythonConfig(&pc);
    pc.install_signal_handlers = 0; /* signals belong to the server's loop */
    pc.parse_argv = 0;
    st = PyConfig_SetBytesArgv(&pc, 1, argv);
    if (PyStatus_Exception(st))
        goto fail;
    /* Naming the virtualenv's python lets CPython find its pyvenv.cfg and set
     * sys.prefix and site-packages the way the venv's own python would. */
    if (cfg->virtualenv)
        snprintf(exe, sizeof(exe), "%s/bin/python3", cfg->virtualenv);
    if (!cfg->virtualenv || access(exe, X_OK) != 0)
        snprintf(exe, sizeof(exe), "%s", GW_PYTHON_EXE);
    st = PyConfig_SetBytesString(&pc, &pc.program_name, exe);
    if (PyStatus_Exception(st))
        goto fail;
    st = Py_InitializeFromConfig(&pc);
    if (PyStatus_Exception(st))
        goto fail;
    PyConfig_Clear(&pc);
    return 0;
fail:
    PyConfig_Clear(&pc);
    gw_log_error("cannot start Python: %s", st.err_msg ? st.err_msg : "unknown error");
    return -1;
}

/* Runs a few lines of glue Python with the given globals; 0 or -1 (logged). */
static int run_glue(const char *code, PyObject *globals)
{
    PyObject *r = PyRun_String(code, Py_file_input, globals, globals);
    if (!r) {
        log_exception("start-up failed", NULL);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* sys.path: --pythonpath entries first, then the working directory (as
 * `python -m` would); the virtualenv's site-packages when it has no
 * pyvenv.cfg to announce them. */
static const char path_glue[] =
    "import os, site, sys\n"
    "for _p in reversed([os.getcwd()] + _paths):\n"
    "    _p = os.path.abspath(_p)\n"
    "    if _p in sys.path: sys.path.remove(_p)\n"
    "    sys.path.insert(0, _p)\n"
    "if _venv:\n"
    "    _sp = os.path.join(os.path.abspath(_venv), 'lib',\n"
    "        'python%d.%d' % sys.version_info[:2], 'site-packages')\n"
    "    if os.path.isdir(_sp): site.addsitedir(_sp)\n";

/* Loads a .py/.wsgi file as a module named after it. */
static const char file_glue[] =
    "import importlib.machinery, importlib.util, os, sys\n"
    "_name = os.path.splitext(os.path.basename(_file))[0].replace('.', '_').replace('-', '_')\n"
    "_loader = importlib.machinery.SourceFileLoader(_name, _file)\n"
    "_spec = importlib.util.spec_from_loader(_name, _loader)\n"
    "_mod = importlib.util.module_from_spec(_spec)\n"
    "sys.modules[_name] = _mod\n"
    "_loader.exec_module(_mod)\n";

static PyObject *import_module(const char *name)
{
    PyObject *mod = PyImport_ImportModule(name);
    if (mod)
        return mod;
    /* A missing module is one clear line; any other failure gets its traceback. */
    if (PyErr_ExceptionMatches(PyExc_ModuleNotFoundError)) {
        PyObject *t, *v, *tb, *missing;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        missing = v ? PyObject_GetAttrString(v, "name") : NULL;
        if (missing && PyUnicode_Check(missing) &&
            PyUnicode_CompareWithASCIIString(missing, name) == 0) {
            gw_log_error("cannot import module '%s': no module named '%s' (sys.path has the "
                         "working directory; see --chdir and --pythonpath)", name, name);
            Py_XDECREF(missing);
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
            return NULL;
        }
        PyErr_Clear();
        Py_XDECREF(missing);
        PyErr_Restore(t, v, tb);
    }
    log_exception("cannot import the app: its import raised", NULL);
    gw_log_error("cannot import module '%s' (traceback above)", name);
    return NULL;
}

static PyObject *load_app(const gw_config_t *cfg)
{
    PyObject *mod = NULL, *app = NULL;
    char modname[512];
    const char *callable = cfg->callable, *colon;
    const char *tries[3] = {NULL, NULL, NULL};

    if (cfg->wsgi_file) {
        PyObject *g = PyDict_New();
        PyObject *f = PyUnicode_FromString(cfg->wsgi_file);
        if (!g || !f || PyDict_SetItemString(g, "_file", f) < 0 ||
            PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) < 0) {
            Py_XDECREF(g);
            Py_XDECREF(f);
            log_exception("start-up failed", NULL);
            return NULL;
        }
        Py_DECREF(f);
        if (access(cfg->wsgi_file, R_OK) != 0) {
            gw_log_error("cannot read --wsgi-file '%s': %s", cfg->wsgi_file, strerror(errno));
            Py_DECREF(g);
            return NULL;
        }
        if (run_glue(file_glue, g) < 0) {
            gw_log_error("cannot load --wsgi-file '%s' (traceback above)", cfg->wsgi_file);
            Py_DECREF(g);
            return NULL;
        }
        mod = PyDict_GetItemString(g, "_mod");
        Py_XINCREF(mod);
        Py_DECREF(g);
        snprintf(modname, sizeof(modname), "%s", cfg->wsgi_file);
    } else {
        colon = strchr(cfg->module, ':');
        snprintf(modname, sizeof(modname), "%.*s",
                 (int)(colon ? (size_t)(colon - cfg->module) : strlen(cfg->module)), cfg->module);
        if (colon && colon[1])
            callable = colon + 1;
        if (!(mod = import_module(modname)))
            return NULL;
    }
    if (callable) {
        tries[0] = callable;
    } else {
        tries[0] = "application";
        tries[1] = "app";
    }
    for (int i = 0; tries[i] && !app; i++) {
        app = PyObject_GetAttrString(mod, tries[i]);
        if (!app)
            PyErr_Clear();
    }
    Py_DECREF(mod);
    if (!app) {
        if (callable)
            gw_log_error("'%s' has no callable named '%s'", modname, callable);
        else
            gw_log_error("'%s' has no callable named 'application' or 'app' (see --callable)",
                         modname);
        return NULL;
    }
    if (!PyCallable_Check(app)) {
        gw_log_error("'%s:%s' is not callable", modname, tries[1] && !callable ? "app" : tries[0]);
        Py_DECREF(app);
        return NULL;
    }
    return app;
}

/* Room for a whole request's environ. PyDict_Copy clones the template's key
 * table as it is, so a template whose table has room gives every request's
 * environ room for its own items, and it never resizes (a malloc and a
 * rehash per request). CPython has no public way to presize a dict
 * (_PyDict_NewPresized is private, and its general-keys table is slower for
 * str keys than the table a dict of str keys gets), so the table grows the
 * public way: a placeholder key is added and removed until the table has
 * grown once (__sizeof__ tells). That leaves a single deleted entry, so
 * PyDict_Copy still clones the table. With the 12 template items: a 64-slot
 * table, room for 42 items. callgrind (bench/instructions.py, the three
 * side by side): hello 10,808 instructions per request against 11,253 with
 * _PyDict_NewPresized(48) and 10,963 unsized; with 13 browser headers
 * 34,493 against 34,549 and 35,709.
 * Only speed depends on this: an interpreter that grows its dicts another
 * way still gets a correct environ. 0, or -1 with an exception set. */
static int grow_table(PyObject *t)
{
    PyObject *size0 = PyObject_CallMethod(t, "__sizeof__", NULL), *size, *k;
    int rc = -1, grown = 0;

    for (int i = 0; size0 && i < 64 && !grown; i++) {
        if (!(k = PyUnicode_FromFormat("gangway.placeholder.%d", i)))
            goto out;
        if (PyDict_SetItem(t, k, Py_None) < 0 || PyDict_DelItem(t, k) < 0) {
            Py_DECREF(k);
            goto out;
        }
        Py_DECREF(k);
        if (!(size = PyObject_CallMethod(t, "__sizeof__", NULL)))
            goto out;
        grown = PyObject_RichCompareBool(size, size0, Py_GT);
        Py_DECREF(size);
        if (grown < 0)
            goto out;
    }
    rc = size0 ? 0 : -1;
out:
    Py_XDECREF(size0);
    return rc;
}

static PyObject *make_template(gw_wsgi_t *w, const gw_listener_t *l)
{
    PyObject *t = PyDict_New(), *v;

#define SET(key, val)                                                                              \
    do {                                                                                           \
        v = (val);                                                                                 \
        if (!v || PyDict_SetItemString(t, key, v) < 0) {                                           \
            Py_XDECREF(v);                                                                         \
            goto fail;                                                                             \
        }                                                                                          \
        Py_DECREF(v);                                                                              \
    } while (0)

    if (!t)
        return NULL;
    SET("SCRIPT_NAME", PyUnicode_FromString(""));
    SET("SERVER_NAME", PyUnicode_FromString(l->host));
    SET("SERVER_PORT", PyUnicode_FromString(l->port));
    SET("QUERY_STRING", PyUnicode_FromString(""));
    SET("wsgi.version", Py_BuildValue("(ii)", 1, 0));
    SET("wsgi.url_scheme", PyUnicode_FromString("http"));
    SET("wsgi.multithread", Py_NewRef(Py_False));
    SET("wsgi.multiprocess", Py_NewRef(w->cfg->workers > 1 ? Py_True : Py_False));
    SET("wsgi.run_once", Py_NewRef(Py_False));
    SET("wsgi.input_terminated", Py_NewRef(Py_True));
    SET("wsgi.errors", Py_NewRef(w->errors));
    SET("wsgi.file_wrapper", Py_NewRef(gw_file_wrapper_type()));
#undef SET
    if (grow_table(t) < 0)
        goto fail;
    return t;
fail:
    Py_DECREF(t);
    return NULL;
}

static int intern_all(gw_wsgi_t *w)
{
    struct { PyObject **slot; const char *s; } keys[] = {
        {&w->k_method, "REQUEST_METHOD"}, {&w->k_path, "PATH_INFO"},
        {&w->k_query, "QUERY_STRING"},    {&w->k_uri, "REQUEST_URI"},
        {&w->k_proto, "SERVER_PROTOCOL"}, {&w->k_raddr, "REMOTE_ADDR"},
        {&w->k_rport, "REMOTE_PORT"},     {&w->k_sname, "SERVER_NAME"},
        {&w->k_ctype, "CONTENT_TYPE"},    {&w->k_clen, "CONTENT_LENGTH"},
        {&w->k_input, "wsgi.input"},      {&w->v_http10, "HTTP/1.0"},
        {&w->k_reqid, "HTTP_X_REQUEST_ID"},
        {&w->k_scheme, "wsgi.url_scheme"}, {&w->k_sport, "SERVER_PORT"},
        {&w->k_https, "HTTPS"},           {&w->k_peer, "gangway.peer_addr"},
        {&w->v_on, "on"},
        {&w->s_close, "close"},
        {&w->v_http11, "HTTP/1.1"},       {&w->v_empty, ""},
        {&w->v_https, "https"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!(*keys[i].slot = PyUnicode_InternFromString(keys[i].s)))
            return -1;
    for (int i = 0; method_names[i]; i++)
        if (!(w->methods[i] = PyUnicode_InternFromString(method_names[i])))
            return -1;
    for (size_t i = 0; i < NKNOWN; i++) {
        w->known[i].name = known_names[i][0];
        w->known[i].key = known_names[i][1];
        if (!(w->known[i].k = PyUnicode_InternFromString(known_names[i][1])))
            return -1;
    }
    return 0;
}

gw_wsgi_t *gw_wsgi_new(const gw_config_t *cfg, const gw_listener_t *listeners, size_t n)
{
    static bool has_atfork; /* handlers outlive gw_wsgi_free(): once per process image */
    gw_wsgi_t *w = calloc(1, sizeof(*w));
    PyObject *g = NULL, *paths = NULL;

    if (!w)
        return NULL;
    w->cfg = cfg;
    w->listeners = listeners;
    w->nlisteners = n;
    if (start_interpreter(cfg) < 0) {
        free(w);
        return NULL;
    }
    if (!has_atfork) {
        int e = pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
        if (e) {
            gw_log_error("pthread_atfork: %s", strerror(e));
            goto fail;
        }
        has_atfork = true;
    }
    if (gw_wsgi_types_init() < 0 || PyType_Ready(&binding_type) < 0 || intern_all(w) < 0 ||
        !(w->errors = gw_errors_new()) ||
        !(w->timeout_exc = PyErr_NewExceptionWithDoc(
              "gangway.RequestTimeout",
              "Raised inside a request that ran past --harakiri.", PyExc_Exception, NULL)))
        goto py_fail;

    if (!(g = PyDict_New()) || !(paths = PyList_New(0)) ||
        PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) < 0)
        goto py_fail;
    for (size_t i = 0; i < cfg->pythonpath.n; i++) {
        PyObject *p = PyUnicode_DecodeFSDefault(cfg->pythonpath.v[i]);
        if (!p || PyList_Append(paths, p) < 0) {
            Py_XDECREF(p);
            goto py_fail;
        }
        Py_DECREF(p);
    }
    if (PyDict_SetItemString(g, "_paths", paths) < 0)
        goto py_fail;
    {
        PyObject *venv = cfg->virtualenv ? PyUnicode_DecodeFSDefault(cfg->virtualenv)
                                         : Py_NewRef(Py_None);
        if (!venv || PyDict_SetItemString(g, "_venv", venv) < 0) {
            Py_XDECREF(venv);
            goto py_fail;
        }
        Py_DECREF(venv);
    }
    if (run_glue(path_glue, g) < 0)
        goto fail;
    Py_CLEAR(g);
    Py_CLEAR(paths);

    w->app = load_app(cfg);
    CHECK_FORK(); /* a child the import forked */
    if (!w->app)
        goto fail;
    if (!(w->templates = calloc(n ? n : 1, sizeof(PyObject *))))
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!(w->templates[i] = make_template(w, &listeners[i])))
            goto py_fail;
    w->nlisteners = n;
    return w;

py_fail:
    log_exception("start-up failed", NULL);
fail:
    Py_XDECREF(g);
    Py_XDECREF(paths);
    gw_wsgi_free(w);
    return NULL;
}

void gw_wsgi_detach(gw_wsgi_t *w)
{
    w->tstate = PyEval_SaveThread();
}

void gw_wsgi_attach(gw_wsgi_t *w)
{
    PyEval_RestoreThread(w->tstate);
    w->tstate = NULL;
}

void gw_wsgi_fork_prepare(gw_wsgi_t *w)
{
    PyEval_RestoreThread(w->tstate);
    PyOS_BeforeFork();
    is_own_fork = true;
}

void gw_wsgi_fork_parent(gw_wsgi_t *w)
{
    is_own_fork = false;
    PyOS_AfterFork_Parent();
    w->tstate = PyEval_SaveThread();
}

void gw_wsgi_fork_child(gw_wsgi_t *w)
{
    is_own_fork = false;
    PyOS_AfterFork_Child(); /* this thread holds the GIL from here on */
    w->tstate = NULL;
}

void gw_wsgi_free(gw_wsgi_t *w)
{
    if (!w)
        return;
    /* Stop the watchdog and wait for it: it reads w and may be about to take
     * the GIL (which it then gives back at once, seeing the flag), so the
     * GIL is let go while waiting. */
    if (w->has_watchdog) {
        PyThreadState *ts;
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
    atomic_store(&w->wd_stop, true);
    if (w->templates)
        for (size_t i = 0; i < w->nlisteners; i++)
            Py_XDECREF(w->templates[i]);
    free(w->templates);
    Py_XDECREF(w->app);
    while (w->nspare)
        pair_drop(w->spare_sr[--w->nspare]);
    Py_XDECREF(w->errors);
    Py_XDECREF(w->timeout_exc);
    /* Interned keys live as long as the interpreter. */
    if (Py_FinalizeEx() < 0)
        gw_log_error("Python finalization reported an error");
    free(w);
}
