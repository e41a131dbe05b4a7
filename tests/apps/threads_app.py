"""An app for tests/test_threads.py (--threads, issue 16): requests that
wait, get stuck in Python or in C, stream, write() from several threads,
start threads of their own, raise in close(), and fork."""
import json
import multiprocessing
import os
import threading
import time
from urllib.parse import parse_qs


def _square(x):
    return x * x


class CloseRaises:
    def __init__(self):
        self.items = [b"body-before-close"]

    def __iter__(self):
        return iter(self.items)

    def close(self):
        raise RuntimeError("close() raises on purpose")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    text = [("Content-Type", "text/plain")]

    if path == "/sleep":
        time.sleep(float(q.get("s", "0.4")))
        start_response("200 OK", text)
        return [b"slept %d" % threading.get_ident()]
    if path == "/info":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"multithread": environ["wsgi.multithread"],
                            "multiprocess": environ["wsgi.multiprocess"],
                            "thread": threading.get_ident(),
                            "main": threading.current_thread() is threading.main_thread(),
                            "pid": os.getpid()}).encode()]
    if path == "/py-stuck":
        # Pure Python: gangway.RequestTimeout lands here (--harakiri).
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            pass
        start_response("200 OK", text)
        return [b"never"]
    if path == "/c-stuck":
        # In C without the GIL: an exception can land only when it returns.
        time.sleep(float(q.get("s", "60")))
        start_response("200 OK", text)
        return [b"woke"]
    if path == "/big-list":
        n = int(q.get("mb", "8"))
        start_response("200 OK", text)
        return [b"x" * (1 << 20) for _ in range(n)]
    if path == "/big-gen":
        n = int(q.get("mb", "64"))
        start_response("200 OK", text)

        def gen():
            block = b"y" * 65536
            for _ in range(n * 16):
                yield block
        return gen()
    if path == "/stream":
        start_response("200 OK", text)

        def gen():
            for i in range(int(q.get("n", "50"))):
                yield b"chunk %d\n" % i
        return gen()
    if path == "/upload":
        body = environ["wsgi.input"].read()
        start_response("200 OK", text)
        return [b"got %d" % len(body)]
    if path == "/writers":
        # write() from several threads of the app, each its own lines
        write = start_response("200 OK", text)

        def writer(k):
            for i in range(20):
                write(b"w%d-%d\n" % (k, i))
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return []
    if path == "/own-thread":
        out = []
        t = threading.Thread(target=lambda: out.append(sum(range(1000))))
        t.start()
        t.join()
        start_response("200 OK", text)
        return [b"own %d" % out[0]]
    if path == "/close-raises":
        start_response("200 OK", text)
        return CloseRaises()
    if path == "/fork":
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            r = pool.map(_square, range(5))
        start_response("200 OK", text)
        return [json.dumps(r).encode()]
    if path == "/big-head":
        # an answer whose head outgrows the request's first arena block: the
        # request thread takes blocks from the worker's pool
        n = q.get("n", "0")
        v = (n + "-") * (300 // (len(n) + 1))
        start_response("200 OK", [("X-H%d" % i, v) for i in range(20)] +
                       [("Content-Length", str(len(n)))])
        return [n.encode()]
    if path == "/pipe-body":
        # the body is a file on a pipe its writer fills after s seconds: the
        # thread waits in read() (C, without the GIL), and no bytecode of
        # this request runs after it
        r, w = os.pipe()

        def writer():
            time.sleep(float(q.get("s", "1.6")))
            os.write(w, b"late\n")
            os.close(w)
        threading.Thread(target=writer, daemon=True).start()
        start_response("200 OK", text)
        return os.fdopen(r, "rb")
    if path == "/raise":
        raise ValueError("on purpose")
    start_response("404 Not Found", text)
    return [b"no such path"]
