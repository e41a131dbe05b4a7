"""Template for the reload tests (tests/test_process.py): the tests copy it into
tmp_path and rewrite VERSION (or break the import) between generations.

    /slow   creates the file named by ?marker=PATH, then takes ~1 s
"""
import os
import time
from urllib.parse import parse_qs

VERSION = "one"


def application(environ, start_response):
    slow = ""
    if environ["PATH_INFO"] == "/slow":
        with open(parse_qs(environ.get("QUERY_STRING", ""))["marker"][0], "w") as f:
            f.write("started\n")
        time.sleep(1.0)
        slow = "slow done "
    body = ("%sversion=%s pid=%d" % (slow, VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
