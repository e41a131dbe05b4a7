/* The WSGI bridge's interpreter: CPython started for the configuration
 * (chdir, virtualenv, pythonpath), the app loaded, the handler and GIL hooks
 * given to the server, --preload's hand-over across fork(), a child the
 * app forked that comes back into gangway, and the teardown. Part of the
 * WSGI bridge (py/wsgi_priv.h). */
#include "py/wsgi_priv.h" /* Python.h first */

#include "core/log.h"
#include "proc/signals.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#ifndef GW_PYTHON_EXE
#define GW_PYTHON_EXE "/usr/bin/python3"
#endif

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
bool gw__wsgi_is_app_fork_child;
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
    gw__wsgi_is_app_fork_child = true;
    gw_signals_close(-1); /* signal() and close() only: async-signal-safe */
    gw_signals_restore(&fork_mask);
}

void gw__wsgi_leave_fork_child(void)
{
    gw_log_error("pid %d: a child process the app forked returned into gangway; it exits "
                 "now (a child must exec, or end with os._exit())", (int)getpid());
    _exit(1);
}

/* Logs the pending exception with its traceback, after a line of context. */
void gw__wsgi_log_exception(const char *what, wreq_t *wr)
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

/* ---- the handler and the GIL ---- */

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
    h->on_request = gw__wsgi_on_request;
    h->on_resume = gw__wsgi_on_resume;
    h->on_abort = gw__wsgi_on_abort;
    h->release = gw__wsgi_release_owner;
    h->on_close = gw__wsgi_on_close;
    hooks->ctx = w;
    /* With request threads the loop's thread holds no GIL at all. */
    hooks->begin = w->cfg->threads > 1 ? NULL : gil_release;
    hooks->end = w->cfg->threads > 1 ? NULL : gil_acquire;
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
        gw__wsgi_log_exception("start-up failed", NULL);
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
    gw__wsgi_log_exception("cannot import the app: its import raised", NULL);
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
            gw__wsgi_log_exception("start-up failed", NULL);
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
    if (gw_wsgi_types_init() < 0 || gw__wsgi_callables_init() < 0 || gw__wsgi_intern(w) < 0 ||
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
        if (!(w->templates[i] = gw__wsgi_template(w, &listeners[i])))
            goto py_fail;
    w->nlisteners = n;
    return w;

py_fail:
    gw__wsgi_log_exception("start-up failed", NULL);
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
    gw__wsgi_stop_watchdog(w); /* first: it reads w (and the threads' clocks) */
    atomic_store(&w->wd_stop, true);
    gw__wsgi_threads_free(w);
    if (w->templates)
        for (size_t i = 0; i < w->nlisteners; i++)
            Py_XDECREF(w->templates[i]);
    free(w->templates);
    Py_XDECREF(w->app);
    gw__wsgi_spares_free(w);
    Py_XDECREF(w->errors);
    Py_XDECREF(w->timeout_exc);
    /* Interned keys live as long as the interpreter. */
    if (Py_FinalizeEx() < 0)
        gw_log_error("Python finalization reported an error");
    free(w);
}
