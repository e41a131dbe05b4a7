/* The app's status and headers, as start_response() takes them: checked
 * (a final status, token names, no control character in a value, one
 * Content-Length) and copied into the request arena, the hop-by-hop fields
 * left to the server. Part of the WSGI bridge (py/wsgi_priv.h). */
#include "py/wsgi_priv.h" /* Python.h first */

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
int gw__wsgi_take_headers(wreq_t *wr, PyObject *status, PyObject *headers)
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
