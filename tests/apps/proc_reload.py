"""Template for the reload tests (tests/test_process.py): the tests copy it into
tmp_path and rewrite VERSION (or break the import) between generations.

    /slow   creates the file named by ?marker=PATH, then takes ~1 s
    /gate   creates the file named by ?marker=PATH, then waits while the file
            named by ?gate=PATH exists (30 s at most)
"""
import os
import time
from urllib.parse import parse_qs

VERSION = "one"


def application(environ, start_response):
    slow = ""
    if environ["PATH_INFO"] == "/gate":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        with open(q["marker"][0], "w") as f:
            f.write("started\n")
        deadline = time.monotonic() + 30
        while os.path.exists(q["gate"][0]) and time.monotonic() < deadline:
            time.sleep(0.01)
    if environ["PATH_INFO"] == "/slow":
        with open(parse_qs(environ.get("QUERY_STRING", ""))["marker"][0], "w") as f:
            f.write("started\n")
        time.sleep(1.0)
        slow = "slow done "
    body = ("%sversion=%s pid=%d" % (slow, VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
