#include "py/wsgi_types.h"

#include "core/log.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- wsgi.input ---- */

typedef struct {
    PyObject_HEAD
    const gw_body_t *body; /* borrowed; NULL once the request ended */
    uint64_t pos;
} input_t;

static uint64_t input_left(input_t *in)
{
    return in->body && in->pos < in->body->len ? in->body->len - in->pos : 0;
}

/* Reads n bytes at the current position into a new bytes object. */
static PyObject *input_take(input_t *in, uint64_t n)
{
    PyObject *b;
    ssize_t got;

    if (n > input_left(in))
        n = input_left(in);
    if (n == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (in->body->fd < 0) {
        b = PyBytes_FromStringAndSize(in->body->mem.data + in->pos, (Py_ssize_t)n);
        if (b)
            in->pos += n;
        return b;
    }
    if (n > PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b)
        return NULL;
    got = gw_body_read(in->body, in->pos, PyBytes_AS_STRING(b), n);
    if (got < 0 || (uint64_t)got != n) {
        Py_DECREF(b);
        errno = got < 0 ? (int)-got : EIO;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    in->pos += n;
    return b;
}

static int size_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument");
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        *size = PyLong_AsSsize_t(args[0]);
        if (*size == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *input_read(input_t *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(args, nargs, &size) < 0)
        return NULL;
    return input_take(in, size < 0 ? input_left(in) : (uint64_t)size);
}

/* Length of the next line (through '\n'), at most limit bytes. */
static int line_length(input_t *in, uint64_t limit, uint64_t *out)
{
    char buf[8192];
    uint64_t scanned = 0;

    if (limit > input_left(in))
        limit = input_left(in);
    if (in->body && in->body->fd < 0) {
        const char *p = in->body->mem.data + in->pos;
        const char *nl = memchr(p, '\n', (size_t)limit);
        *out = nl ? (uint64_t)(nl - p) + 1 : limit;
        return 0;
    }
    while (scanned < limit) {
        size_t want = limit - scanned < sizeof(buf) ? (size_t)(limit - scanned) : sizeof(buf);
        ssize_t got = gw_body_read(in->body, in->pos + scanned, buf, want);
        char *nl;
        if (got <= 0) {
            errno = got < 0 ? (int)-got : EIO;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if ((nl = memchr(buf, '\n', (size_t)got))) {
            *out = scanned + (uint64_t)(nl - buf) + 1;
            return 0;
        }
        scanned += (uint64_t)got;
    }
    *out = limit;
    return 0;
}

static PyObject *input_readline(input_t *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    uint64_t n;
    if (size_arg(args, nargs, &size) < 0)
        return NULL;
    if (line_length(in, size < 0 ? UINT64_MAX : (uint64_t)size, &n) < 0)
        return NULL;
    return input_take(in, n);
}

static PyObject *input_readlines(input_t *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint;
    uint64_t total = 0, n;
    PyObject *list;

    if (size_arg(args, nargs, &hint) < 0)
        return NULL;
    if (!(list = PyList_New(0)))
        return NULL;
    while (input_left(in) > 0 && (hint <= 0 || total < (uint64_t)hint)) {
        PyObject *line;
        if (line_length(in, UINT64_MAX, &n) < 0 || !(line = input_take(in, n)))
            goto fail;
        total += n;
        if (PyList_Append(list, line) < 0) {
            Py_DECREF(line);
            goto fail;
        }
        Py_DECREF(line);
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *input_iternext(input_t *in)
{
    uint64_t n;
    if (input_left(in) == 0)
        return NULL; /* StopIteration */
    if (line_length(in, UINT64_MAX, &n) < 0)
        return NULL;
    return input_take(in, n);
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read([size]) -> bytes"},
    {"readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL,
     "readline([size]) -> bytes"},
    {"readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL,
     "readlines([hint]) -> list of bytes"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject input_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gangway.Input",
    .tp_basicsize = sizeof(input_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body, buffered before the app runs",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_iternext,
    .tp_methods = input_methods,
};

PyObject *gw_input_new(const gw_body_t *body)
{
    input_t *in = PyObject_New(input_t, &input_type);
    if (!in)
        return NULL;
    in->body = body;
    in->pos = 0;
    return (PyObject *)in;
}

void gw_input_detach(PyObject *input)
{
    if (input && Py_IS_TYPE(input, &input_type))
        ((input_t *)input)->body = NULL;
}

/* ---- wsgi.errors ---- */

static PyObject *errors_write(PyObject *self, PyObject *arg)
{
    Py_ssize_t n;
    const char *s;

    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (!(s = PyUnicode_AsUTF8AndSize(arg, &n)))
        return NULL;
    gw_log_error_write(s, (size_t)n);
    return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(arg));
}

static PyObject *errors_writelines(PyObject *self, PyObject *seq)
{
    PyObject *it = PyObject_GetIter(seq), *line;
    if (!it)
        return NULL;
    while ((line = PyIter_Next(it))) {
        PyObject *r = errors_write(self, line);
        Py_DECREF(line);
        if (!r) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *errors_flush(PyObject *self, PyObject *unused)
{
    Py_RETURN_NONE; /* every write goes out at once */
}

static PyMethodDef errors_methods[] = {
    {"write", errors_write, METH_O, "write(str)"},
    {"writelines", errors_writelines, METH_O, "writelines(iterable of str)"},
    {"flush", errors_flush, METH_NOARGS, "flush()"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject errors_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gangway.ErrorLog",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.errors: writes to gangway's error log",
    .tp_methods = errors_methods,
};

PyObject *gw_errors_new(void)
{
    return PyObject_New(PyObject, &errors_type);
}

/* ---- wsgi.file_wrapper ---- */

typedef struct {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t blksize;
} filewrap_t;

static PyObject *filewrap_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"filelike", "block_size", NULL};
    PyObject *filelike;
    Py_ssize_t blksize = 8192;
    filewrap_t *fw;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:file_wrapper", kwlist, &filelike, &blksize))
        return NULL;
    if (!(fw = (filewrap_t *)type->tp_alloc(type, 0)))
        return NULL;
    Py_INCREF(filelike);
    fw->filelike = filelike;
    fw->blksize = blksize > 0 ? blksize : 8192;
    return (PyObject *)fw;
}

static void filewrap_dealloc(filewrap_t *fw)
{
    PyObject_GC_UnTrack(fw);
    Py_CLEAR(fw->filelike);
    Py_TYPE(fw)->tp_free((PyObject *)fw);
}

static int filewrap_traverse(filewrap_t *fw, visitproc visit, void *arg)
{
    Py_VISIT(fw->filelike);
    return 0;
}

static PyObject *filewrap_iternext(filewrap_t *fw)
{
    PyObject *data = PyObject_CallMethod(fw->filelike, "read", "n", fw->blksize);
    if (!data)
        return NULL;
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *filewrap_close(filewrap_t *fw, PyObject *unused)
{
    PyObject *r;
    if (!PyObject_HasAttrString(fw->filelike, "close"))
        Py_RETURN_NONE;
    r = PyObject_CallMethod(fw->filelike, "close", NULL);
    return r;
}

static PyMethodDef filewrap_methods[] = {
    {"close", (PyCFunction)filewrap_close, METH_NOARGS, "close the wrapped file"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef filewrap_members[] = {
    {"filelike", T_OBJECT, offsetof(filewrap_t, filelike), READONLY, NULL},
    {"blksize", T_PYSSIZET, offsetof(filewrap_t, blksize), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject filewrap_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gangway.FileWrapper",
    .tp_basicsize = sizeof(filewrap_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "wsgi.file_wrapper: real files go out with sendfile",
    .tp_new = filewrap_new,
    .tp_dealloc = (destructor)filewrap_dealloc,
    .tp_traverse = (traverseproc)filewrap_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)filewrap_iternext,
    .tp_methods = filewrap_methods,
    .tp_members = filewrap_members,
};

PyObject *gw_file_wrapper_type(void)
{
    return (PyObject *)&filewrap_type;
}

int gw_file_wrapper_fd(PyObject *obj, int *fd, long long *pos)
{
    filewrap_t *fw = (filewrap_t *)obj;
    PyObject *r;
    struct stat st;
    long long p;
    long f;

    if (!Py_IS_TYPE(obj, &filewrap_type))
        return 0;
    if (!PyObject_HasAttrString(fw->filelike, "fileno"))
        return 0;
    if (!(r = PyObject_CallMethod(fw->filelike, "fileno", NULL))) {
        /* io.BytesIO and friends raise here: iterate them instead. */
        PyErr_Clear();
        return 0;
    }
    f = PyLong_Check(r) ? PyLong_AsLong(r) : -1;
    Py_DECREF(r);
    /* Not an int, or out of range (a long cut to int could name another of
     * gangway's own descriptors): iterate it instead. */
    if (f < 0 || f > INT_MAX || fstat((int)f, &st) < 0 || !S_ISREG(st.st_mode)) {
        PyErr_Clear();
        return 0;
    }
    /* The logical position: a buffered reader may be ahead of the fd's. */
    if (PyObject_HasAttrString(fw->filelike, "tell")) {
        if (!(r = PyObject_CallMethod(fw->filelike, "tell", NULL)))
            return -1;
        p = PyLong_Check(r) ? PyLong_AsLongLong(r) : -1;
        Py_DECREF(r);
        if (p == -1 && PyErr_Occurred())
            return -1;
        if (p < 0) {
            PyErr_SetString(PyExc_ValueError, "file_wrapper: tell() must return an int >= 0");
            return -1;
        }
    } else {
        p = lseek((int)f, 0, SEEK_CUR);
        if (p < 0)
            p = 0;
    }
    *fd = (int)f;
    *pos = p;
    return 1;
}

int gw_wsgi_types_init(void)
{
    if (PyType_Ready(&input_type) < 0 || PyType_Ready(&errors_type) < 0 ||
        PyType_Ready(&filewrap_type) < 0)
        return -1;
    return 0;
}
