"""The app of tests/test_hardening.py (slow clients, faults, soak).

    /                 "ok pid=<pid>" (200, Content-Length)
    /post             reads the whole body; "len=<n> crc=<crc32>" (200)
    /stream?size=N    N bytes from a generator of 256 KiB blocks, with Content-Length
    /exit             creates the file named by ?marker=PATH, waits (at most 30 s) until
                      the file named by ?go=PATH exists, then os._exit(1)
    /segv             the same, then reads address 0 through ctypes (SIGSEGV)
    /busy             creates the file named by ?marker=PATH, then sleeps ?ms=N ms (the
                      worker accepts nothing meanwhile)
    anything else     404 from the app: "no such page"
"""
import ctypes
import os
import resource
import time
import zlib
from urllib.parse import parse_qs

BLOCK = bytes(range(256)) * 1024  # 256 KiB, one object yielded again and again
NOT_FOUND = b"no such page"


def _answer(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _wait_for_go(environ):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    with open(q["marker"][0], "w") as f:
        f.write("%d\n" % os.getpid())
    deadline = time.monotonic() + 30
    while not os.path.exists(q["go"][0]):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    # A deliberate crash leaves no core file behind (in tests/apps, the cwd).
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    return True


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        return _answer(start_response, b"ok pid=%d" % os.getpid())
    if path == "/post":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(n) if n else b""
        return _answer(start_response, b"len=%d crc=%d" % (len(data), zlib.crc32(data)))
    if path == "/stream":
        size = int(parse_qs(environ.get("QUERY_STRING", ""))["size"][0])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])

        def gen():
            left = size
            while left >= len(BLOCK):
                left -= len(BLOCK)
                yield BLOCK
            if left:
                yield BLOCK[:left]
        return gen()
    if path == "/busy":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        with open(q["marker"][0], "w") as f:
            f.write("busy\n")
        time.sleep(int(q["ms"][0]) / 1000)
        return _answer(start_response, b"slept pid=%d" % os.getpid())
    if path == "/exit":
        if _wait_for_go(environ):
            os._exit(1)
        return _answer(start_response, b"never told to exit", "500 Internal Server Error")
    if path == "/segv":
        if _wait_for_go(environ):
            ctypes.string_at(0)
        return _answer(start_response, b"never told to crash", "500 Internal Server Error")
    return _answer(start_response, NOT_FOUND, "404 Not Found")
