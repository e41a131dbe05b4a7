/* The Python objects a WSGI app receives from gangway: wsgi.input over the
 * buffered body, wsgi.errors into the error log, and wsgi.file_wrapper.
 * Included by wsgi*.c only (it pulls in Python.h). */
#ifndef GW_WSGI_TYPES_H
#define GW_WSGI_TYPES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "proto/request.h"

/* Readies the types; 0, or -1 with a Python exception set. */
int gw_wsgi_types_init(void);

/* wsgi.input reading body (borrowed until gw_input_detach()). New ref or NULL. */
PyObject *gw_input_new(const gw_body_t *body);

/* Cuts an input object off its body when the request ends: an app that kept
 * it reads EOF from then on instead of the next request's bytes. */
void gw_input_detach(PyObject *input);

/* The wsgi.errors object (new ref), writing to the error log. */
PyObject *gw_errors_new(void);

/* The wsgi.file_wrapper type (borrowed). */
PyObject *gw_file_wrapper_type(void);

/* For a FileWrapper around a real, regular file: its fd and the position to
 * send from. Returns 1 when it applies, 0 when the object must be iterated,
 * -1 with an exception set. Runs Python (fileno(), tell()). The fd belongs
 * to the app's file object, which the app may close at any time: dup() it
 * before keeping it past the next Python code. */
int gw_file_wrapper_fd(PyObject *obj, int *fd, long long *pos);

#endif
