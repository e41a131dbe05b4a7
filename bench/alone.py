"""The app alone: CPU time of one WSGI call with no server at all.

    python3 bench/alone.py MODULE CALLABLE [--post BYTES] [--seconds S] [--dir DIR]

Calls the app from bench/apps in a loop with a fresh, minimal environ, reads
the whole answer and closes it, as a server would, and prints one JSON line:
{"us_per_call": ..., "calls": ...}. This is the floor of any server's CPU per
request for that app (bench/run.py runs it pinned to the server CPU): what a
server that cost nothing would spend, so peer CPU/request divided by it is the
best ratio any server could reach against that peer.
"""
import argparse
import importlib
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("callable")
    ap.add_argument("--post", type=int, default=0, help="POST a body of this many bytes")
    ap.add_argument("--seconds", type=float, default=2.0, help="measure for about this long")
    ap.add_argument("--dir", help="the app's directory (default bench/apps); the site's "
                                  "settings come from the environment (django-pg: PG*)")
    args = ap.parse_args()

    where = os.path.abspath(args.dir) if args.dir else os.path.join(HERE, "apps")
    os.chdir(where)
    sys.path.insert(0, where)
    app = getattr(importlib.import_module(args.module), args.callable)
    body = b"x" * args.post
    base = {
        "REQUEST_METHOD": "POST" if args.post else "GET", "SCRIPT_NAME": "", "PATH_INFO": "/",
        "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "wrk", "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    if args.post:
        base.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/octet-stream")
    status = []

    def start_response(st, headers, exc_info=None):
        status.append(st)
        return None

    def one():
        env = dict(base)
        env["wsgi.input"] = io.BytesIO(body)
        it = app(env, start_response)
        try:
            for _ in it:
                pass
        finally:
            if hasattr(it, "close"):
                it.close()

    for _ in range(1000):  # warm: imports, caches, the app's first-request work
        one()
    if not status or not status[-1].startswith("200"):
        sys.exit("the app answered %r" % (status[-1:] or None))
    calls, t0 = 0, time.process_time()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            one()
        calls += 200
    cpu = time.process_time() - t0
    print(json.dumps({"us_per_call": cpu * 1e6 / calls, "calls": calls}))


if __name__ == "__main__":
    main()
