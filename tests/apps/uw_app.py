"""The app behind the uwsgi tests (tests/test_uwsgi.py, tests/test_nginx.py).

/env     JSON: every str environ value, wsgi.url_scheme, the body read from
         wsgi.input, and the serving pid and its parent (the master)
/pid     "PID PPID" (which instance and worker served; ?sleep=S waits first)
/spin    loops in pure Python for ?s= seconds (harakiri interrupts it), then /pid
/stream  a generator of ?n= lines (no Content-Length: the server frames it)
/sha256  "LENGTH SHA256" of the request body, read in 1 MiB pieces
/big     ?size= bytes of a fixed pattern in 64 KiB yields, no Content-Length

If GW_TEST_MARK names a file, every call appends PATH_INFO and a newline to
it, so a test can prove that a refused packet never reached the app.
"""
import hashlib
import json
import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    mark = os.environ.get("GW_TEST_MARK")
    if mark:
        with open(mark, "a", encoding="latin-1") as f:
            f.write(environ.get("PATH_INFO", "") + "\n")
    path = environ.get("PATH_INFO", "")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    text = [("Content-Type", "text/plain")]
    if path in ("/pid", "/spin"):
        if "sleep" in q:
            time.sleep(float(q["sleep"]))
        if path == "/spin":
            end = time.monotonic() + min(float(q.get("s", "1")), 30.0)
            while time.monotonic() < end:
                pass
        body = b"%d %d" % (os.getpid(), os.getppid())
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/sha256":
        h, n, inp = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            b = inp.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        body = b"%d %s" % (n, h.hexdigest().encode())
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        n = int(q.get("n", "5"))
        start_response("200 OK", text)
        return (b"line %d\n" % i for i in range(n))
    if path == "/big":
        size = int(q["size"])
        block = bytes(range(256)) * 256
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            left = size
            while left > 0:
                b = block[:left]
                left -= len(b)
                yield b
        return gen()
    # /env and everything else
    inp = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    body = inp.read(int(length)) if length else inp.read()
    out = {k: v for k, v in environ.items() if isinstance(v, str)}
    out["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    out["body"] = body.decode("latin-1")
    out["pid"], out["ppid"] = os.getpid(), os.getppid()
    data = json.dumps(out, sort_keys=True).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
