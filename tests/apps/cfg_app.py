"""The configuration tests' app (tests/test_config.py, tests/test_systemd.py).

    /              JSON: pid, import_pid, cwd, sys_path, prefix, callable
    /env/NAME      os.environ[NAME] as UTF-8 text (404 when unset)
    /pid           "pid=<pid>"

IMPORT_PID is the pid that imported this module: the worker's own pid
normally, the master's with --preload (lazy-apps = false).
"""
import json
import os
import sys

IMPORT_PID = os.getpid()


def _answer(start_response, body, status="200 OK", ctype="text/plain; charset=utf-8"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def _make(name):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/env/"):
            value = os.environ.get(path[5:])
            if value is None:
                return _answer(start_response, "unset", "404 Not Found")
            return _answer(start_response, value)
        if path == "/pid":
            return _answer(start_response, "pid=%d" % os.getpid())
        return _answer(start_response, json.dumps({
            "pid": os.getpid(),
            "import_pid": IMPORT_PID,
            "cwd": os.getcwd(),
            "sys_path": sys.path,
            "prefix": sys.prefix,
            "callable": name,
        }), ctype="application/json")
    return app


application = _make("application")
other_callable = _make("other_callable")
