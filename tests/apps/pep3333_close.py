"""Records every close() of the response iterable (tests/test_wsgi.py).

The record file comes from GANGWAY_CLOSE_LOG (passed with --env); each
close() appends "close <tag> <blocks yielded>".
"""
import os

LOG = os.environ["GANGWAY_CLOSE_LOG"]
TEXT = [("Content-Type", "text/plain")]


def record(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Body:
    def __init__(self, tag, blocks, block=b"x", fail_at=None, close_raises=False):
        self.tag, self.blocks, self.block = tag, blocks, block
        self.fail_at, self.close_raises = fail_at, close_raises
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.fail_at:
            raise RuntimeError("gangway-close-test-failure")
        if self.i >= self.blocks:
            raise StopIteration
        self.i += 1
        return self.block

    def close(self):
        record("close %s %d" % (self.tag, self.i))
        if self.close_raises:
            raise RuntimeError("gangway-close-raised")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    tag = environ.get("QUERY_STRING", "")
    if path == "/normal":
        start_response("200 OK", TEXT)
        return Body(tag, 3, b"abc;")
    if path == "/fail-midway":
        start_response("200 OK", TEXT)
        return Body(tag, 10, b"abc;", fail_at=2)
    if path == "/fail-first":
        start_response("200 OK", TEXT)
        return Body(tag, 10, b"abc;", fail_at=0)
    if path == "/endless":
        start_response("200 OK", TEXT)
        return Body(tag, 100000, b"z" * 65536)
    if path == "/close-raises":
        start_response("200 OK", TEXT + [("Content-Length", "4")])
        return Body(tag, 1, b"abc;", close_raises=True)
    start_response("404 Not Found", TEXT)
    return [b"not found"]
