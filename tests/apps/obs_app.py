"""The observability app (tests/test_observability.py).

Every answer the app makes carries X-Pid (the worker's pid) and X-Count (how
many requests this worker's app has been called for, this one included), so
a test knows which worker served what and when --max-requests will recycle it.

    /ok?n=N        200, N bytes of "o" (default 10)
    /items         POST: 201, body "stored <len> bytes"
    /missing       404, body "no such thing\\n"
    /boom          raises (gangway answers 500)
    /sleep?s=F     sleeps F seconds; body: JSON {"app_us": the app's own
                   measured time in microseconds (monotonic clock)}
    /block?port=P  connects to 127.0.0.1:P, sends "<pid>\\n" and waits (at
                   most 20 s) for the test to send a byte: the test decides
                   when the request ends. Body "released\\n"
    /rid           JSON {"rid": HTTP_X_REQUEST_ID or null, "pid": pid}
    /own-rid       200 with the app's own X-Request-Id: app-own-id-7
    anything else  200 "hi\\n"

OBS_IMPORT_GATE=PATH in the environment: while PATH exists, importing this
module waits (at most 20 s), so a test can hold a new worker in "starting".
"""
import json
import os
import socket
import time
from urllib.parse import parse_qs

_GATE = os.environ.get("OBS_IMPORT_GATE")
if _GATE:
    _deadline = time.monotonic() + 20
    while os.path.exists(_GATE) and time.monotonic() < _deadline:
        time.sleep(0.005)

_count = 0


def _answer(start_response, status, body, extra=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))),
                            ("X-Pid", str(os.getpid())),
                            ("X-Count", str(_count))] + list(extra))
    return [body]


def application(environ, start_response):
    global _count
    t0 = time.monotonic_ns()
    _count += 1
    path = environ["PATH_INFO"]
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/ok":
        return _answer(start_response, "200 OK", b"o" * int(q.get("n", ["10"])[0]))
    if path == "/items":
        body = environ["wsgi.input"].read()
        return _answer(start_response, "201 Created", b"stored %d bytes" % len(body))
    if path == "/missing":
        return _answer(start_response, "404 Not Found", b"no such thing\n")
    if path == "/boom":
        raise RuntimeError("boom, as asked")
    if path == "/sleep":
        time.sleep(float(q["s"][0]))
        body = json.dumps({"app_us": (time.monotonic_ns() - t0) // 1000}).encode()
        return _answer(start_response, "200 OK", body)
    if path.startswith("/block"):
        s = socket.create_connection(("127.0.0.1", int(q["port"][0])), timeout=20)
        try:
            s.sendall(b"%d\n" % os.getpid())
            if not s.recv(16):
                raise RuntimeError("the test went away")
        finally:
            s.close()
        return _answer(start_response, "200 OK", b"released\n")
    if path == "/rid":
        body = json.dumps({"rid": environ.get("HTTP_X_REQUEST_ID"),
                           "pid": os.getpid()}).encode()
        return _answer(start_response, "200 OK", body)
    if path == "/own-rid":
        return _answer(start_response, "200 OK", b"own\n", [("X-Request-Id", "app-own-id-7")])
    return _answer(start_response, "200 OK", b"hi\n")
