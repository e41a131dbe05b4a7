"""A --preload app for tests/test_process.py that leaves a descriptor
inheritable at import, as some libraries do: a reload's re-exec must not
carry it (or anything else the hand-over does not name) into the new image.

    /   "pid=<pid> leaked=<descriptors open on /dev/null here>"
"""
import os

LEAKED = os.open("/dev/null", os.O_RDONLY)
os.set_inheritable(LEAKED, True)


def application(environ, start_response):
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink("/proc/self/fd/" + fd) == "/dev/null"
        except OSError:
            pass
    body = ("pid=%d leaked=%d" % (os.getpid(), n)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
