"""Template for the reload tests (tests/test_process.py): the tests copy it into
tmp_path and rewrite VERSION (or break the import) between generations."""
import os

VERSION = "one"


def application(environ, start_response):
    body = ("version=%s pid=%d" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
