"""Edges of start_response, write() and the status line (tests/test_wsgi_edges.py).

    /pid                 "pid=<pid>"
    /excinfo?kind=K      sends its headers (write), then calls start_response
                         again with exc_info variant K; the body says what
                         that call raised
    /nonecheck           whether NoneType is still itself
    /write-in-close      an answer whose close() calls write() and start_response()
    /close-result        what those two calls raised
    /conn?v=V            an answer with the header "Connection: V"
    /status?s=S          an answer with status S
    /ctl?c=HEX           tries a header value holding that byte; "refused" or "accepted"
    /ctl-matrix          every byte at every position of values of 1..20 bytes,
                         in the status and in a header value: the mismatches
    /write-big?mb=N      write()s N MiB in one call (Content-Length set)
    /spin                loops in pure Python (harakiri interrupts it)
"""
import os
import sys
import time
from urllib.parse import parse_qs

TEXT = [("Content-Type", "text/plain")]
CLOSE_RESULT = []


class Boom(Exception):
    pass


def real_exc_info():
    try:
        raise Boom("the original error")
    except Boom:
        return sys.exc_info()


def exc_info_variant(kind):
    real = real_exc_info()
    return {
        "none": (None, None, None),
        "strs": ("x", "y", None),
        "valid": real,
        "class": (ValueError, None, None),
        "class-tb": (Boom, None, real[2]),
        "mismatch": (KeyError, ValueError("v"), None),
        "list": list(real),
        "short": real[:2],
        "tbframe": (Boom, real[1], real[2].tb_frame),
        "notype": (real[1], real[1], None),
        "object": (object, object(), None),
    }[kind]


def _answer(start_response, body, status="200 OK", headers=()):
    start_response(status, TEXT + list(headers) + [("Content-Length", str(len(body)))])
    return [body]


def excinfo(environ, start_response, kind):
    write = start_response("200 OK", TEXT)
    write(b"head-sent;")
    try:
        start_response("500 Oops", TEXT, exc_info_variant(kind))
        what = "nothing raised"
    except TypeError as e:
        what = "TypeError: %s" % e
    except Boom as e:
        what = "reraised Boom %s tb=%s" % (e, e.__traceback__ is not None)
    except ValueError as e:
        what = "reraised ValueError %r" % (e,)
    return [what.encode(), b";", nonecheck().encode()]


def nonecheck():
    return "NoneType ok=%s" % (type(None).__name__ == "NoneType" and type(type(None)) is type)


class CloseWrites:
    def __init__(self, write, start_response):
        self.write, self.start_response = write, start_response

    def __iter__(self):
        return iter([b"body"])

    def close(self):
        CLOSE_RESULT.clear()
        for name, f in (("write", lambda: self.write(b"stray")),
                        ("start_response", lambda: self.start_response("200 OK", TEXT))):
            try:
                f()
                CLOSE_RESULT.append("%s: sent" % name)
            except Exception as e:
                CLOSE_RESULT.append("%s: %s" % (name, type(e).__name__))


def ctl_matrix(start_response):
    real = real_exc_info()
    bad = set(range(0x20)) - {0x09} | {0x7f}
    mismatches = []
    for n in range(1, 21):
        for pos in range(n):
            for c in range(256):
                value = "v" * pos + chr(c) + "w" * (n - pos - 1)
                for where in ("header", "status"):
                    try:
                        if where == "header":
                            start_response("200 OK", [("X-Probe", value)], real)
                        else:
                            start_response("200 " + value, TEXT, real)
                        accepted = True
                    except ValueError:
                        accepted = False
                    if accepted == (c in bad):
                        mismatches.append((where, n, pos, c))
    start_response("200 OK", TEXT, real)
    return [repr(mismatches[:20]).encode()]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
    if path == "/excinfo":
        return excinfo(environ, start_response, q["kind"])
    if path == "/nonecheck":
        return _answer(start_response, nonecheck().encode())
    if path == "/write-in-close":
        write = start_response("200 OK", TEXT)
        return CloseWrites(write, start_response)
    if path == "/close-result":
        return _answer(start_response, ";".join(CLOSE_RESULT).encode())
    if path == "/conn":
        return _answer(start_response, b"x", headers=[("Connection", q["v"])])
    if path == "/status":
        return _answer(start_response, b"x", status=q["s"])
    if path == "/ctl":
        try:
            start_response("200 OK", TEXT + [("X-Probe", "a" + chr(int(q["c"], 16)) + "b")])
        except ValueError:
            return _answer(start_response, b"refused")
        return [b"accepted"]
    if path == "/ctl-matrix":
        return ctl_matrix(start_response)
    if path == "/write-big":
        n = int(q["mb"]) << 20
        write = start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(n))])
        write(b"w" * n)
        return []
    if path == "/spin":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pass
        return _answer(start_response, b"spin not interrupted")
    return _answer(start_response, b"pid=%d" % os.getpid())
