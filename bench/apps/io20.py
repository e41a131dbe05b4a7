"""An app that waits 20 ms per request, as one waiting on a database or another
service does (time.sleep releases the GIL, like a socket read). With P
processes x T threads a server can answer at most P x T / 20 ms requests per
second.

A POST's body is read first, as a form view does: the io-20ms-trickle
scenario's slow uploads reach the app only if the server hands it requests
whose body has not fully arrived. GET /multithread answers wsgi.multithread
(True or False) at once: bench/run.py asks it to tell whether a server really
runs several requests of one process at a time.
"""
import time

WAIT = 0.020
HELLO = b"Hello, World!"


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/multithread":
        body = str(bool(environ.get("wsgi.multithread"))).encode()
    else:
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                n = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                n = 0
            environ["wsgi.input"].read(n) if n > 0 else None
        time.sleep(WAIT)
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
