"""The app alone: CPU time of one WSGI call with no server at all.

    python3 bench/alone.py MODULE CALLABLE [--post BYTES] [--seconds S] [--dir DIR]
                           [--threads T] [--processes P]

Calls the app from bench/apps in a loop with a fresh, minimal environ, reads
the whole answer and closes it, as a server would, and prints one JSON line:
{"us_per_call": ..., "calls": ...}. This is the floor of any server's CPU per
request for that app (bench/run.py runs it pinned to the server CPU): what a
server that cost nothing would spend, so peer CPU/request divided by it is the
best ratio any server could reach against that peer.

--threads T calls it from T threads of the one process at once, each in its
own loop: what the app itself costs when T requests share the interpreter
(the GIL changes hands at every wait, T threads' caches share the CPU), the
floor of a server running T threads per process. --processes P runs P
such processes at once on the same CPU, each importing and warming the app
itself, all counting over the same seconds: the floor of a server with P
workers of T threads, as bench/run.py's django-pg row runs them.
"""
import argparse
import importlib
import io
import json
import os
import select
import signal
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def threaded(one, n, seconds, sync):
    """(calls, CPU seconds) of n threads calling one() at once for about
    seconds, counted once they all loop (each warms itself first: a
    thread's first request opens its own database connection)."""
    counts, stop = [0] * n, []
    ready = threading.Barrier(n + 1, timeout=120)  # broken if one of them fails

    def loop(i):
        for _ in range(50):
            one()
        ready.wait()
        while not stop:
            one()
            counts[i] += 1  # this thread's own slot: no lock

    ts = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    ready.wait()
    sync()
    time.sleep(min(1.0, seconds / 2))  # all of them in their loops
    c0, t0 = sum(counts), time.process_time()
    time.sleep(seconds)
    c1, t1 = sum(counts), time.process_time()
    stop.append(True)
    for t in ts:
        t.join(60)
    return c1 - c0, t1 - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("callable")
    ap.add_argument("--post", type=int, default=0, help="POST a body of this many bytes")
    ap.add_argument("--seconds", type=float, default=2.0, help="measure for about this long")
    ap.add_argument("--threads", type=int, default=1,
                    help="call it from this many threads at once (default 1)")
    ap.add_argument("--processes", type=int, default=1,
                    help="run it in this many processes at once, each with --threads "
                         "(default 1); the figure is theirs together")
    ap.add_argument("--dir", help="the app's directory (default bench/apps); the site's "
                                  "settings come from the environment (django-pg: PG*)")
    args = ap.parse_args()
    if not (1 <= args.threads <= 256 and 1 <= args.processes <= 64):
        sys.exit("--threads or --processes out of range")
    if args.processes == 1:
        calls, cpu = measure(args, lambda: None)
    else:
        calls, cpu = in_processes(args)
    print(json.dumps({"us_per_call": cpu * 1e6 / calls, "calls": calls}))


def in_processes(args):
    """(calls, CPU seconds) of args.processes processes measuring at once:
    each imports and warms the app itself (as a server's workers do, each
    with its own database connections), then all start counting together."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    kids = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r), os.close(go_w), os.close(res_r)

                def sync():
                    os.write(ready_w, b"r")
                    if os.read(go_r, 1) != b"g":
                        raise SystemExit("no go")
                calls, cpu = measure(args, sync)
                os.write(res_w, (json.dumps([calls, cpu]) + "\n").encode())
                code = 0
            except SystemExit as ex:
                print("bench/alone.py: %s" % ex, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - said, then this process ends
                traceback.print_exc()
            finally:
                os._exit(code)
        kids.append(pid)
    os.close(ready_w), os.close(go_r), os.close(res_w)
    got, deadline = b"", time.monotonic() + 120
    while len(got) < args.processes:
        # one that failed (the app answered an error) never says ready
        if any(os.waitpid(pid, os.WNOHANG)[0] for pid in kids) or time.monotonic() > deadline:
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            sys.exit("a process ended, or took 120 s, before it was warm")
        if select.select([ready_r], [], [], 1.0)[0]:
            got += os.read(ready_r, 64)
    os.write(go_w, b"g" * args.processes)
    out = b""
    while True:
        b = os.read(res_r, 4096)
        if not b:
            break
        out += b
    for pid in kids:
        os.waitpid(pid, 0)
    each = [json.loads(line) for line in out.decode().splitlines()]
    if len(each) != args.processes:
        sys.exit("%d of %d processes answered" % (len(each), args.processes))
    return sum(c for c, _ in each), sum(t for _, t in each)


def measure(args, sync):
    """(calls, CPU seconds) of this process; sync() is called once warm,
    right before counting."""

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
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": args.threads > 1,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    if args.post:
        base.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/octet-stream")
    status = []

    def start_response(st, headers, exc_info=None):
        status[:] = [st]  # the last one
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

    for _ in range(1000 if args.threads == 1 else 0):  # warm: imports, caches, first requests
        one()
    if args.threads > 1:
        calls, cpu = threaded(one, args.threads, args.seconds, sync)
    if not status or not status[-1].startswith("200"):
        sys.exit("the app answered %r" % (status[-1:] or None))
    if args.threads > 1:
        return calls, cpu
    sync()
    calls, t0 = 0, time.process_time()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            one()
        calls += 200
    return calls, time.process_time() - t0


if __name__ == "__main__":
    main()
