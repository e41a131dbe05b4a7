"""Imports C extension modules from lib-dynload and dist-packages: they find
the interpreter's symbols in the gangway executable (libpython linked in)."""
import json

NAMES = ["_ctypes", "_decimal", "_hashlib", "_json", "_sqlite3", "_ssl", "_uuid",
         "markupsafe._speedups"]


def application(environ, start_response):
    import importlib
    out = {}
    for name in NAMES:
        try:
            m = importlib.import_module(name)
            out[name] = getattr(m, "__file__", "built-in")
        except Exception as e:  # the test shows which one failed and why
            out[name] = "ERROR %s: %s" % (type(e).__name__, e)
    import ctypes
    import decimal
    import hashlib
    import sqlite3
    out["work"] = [ctypes.sizeof(ctypes.c_int), str(decimal.Decimal("1.1") + decimal.Decimal("2.2")),
                   hashlib.sha256(b"gangway").hexdigest()[:8],
                   sqlite3.connect(":memory:").execute("select 6*7").fetchone()[0]]
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
