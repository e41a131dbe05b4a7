#!/usr/bin/python3
"""gangway side by side with uWSGI, Gunicorn, waitress and nginx.

Each row starts its server itself on 127.0.0.1 (pinned to CPU 0, one worker),
checks that it answers correctly (status + body), warms it up, drives it with
wrk (-t1, pinned to CPU 1) several times, takes the median of each figure and
stops the server by PID. Writes bench/results/<date>-<name>.md and .svg and
copies them to latest.md / latest.svg. See bench/README.md.

    bench/run.py            # full run (make bench), < 20 minutes
    bench/run.py --quick    # hello keep-alive + Flask, 3 x 3 s (make bench-quick)
"""
import argparse
import errno
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
from benchlib import Skip  # noqa: E402

POST_BODY = b"0123456789abcdef" * 640          # what bench/wrk/post-10k.lua sends
ALL = ["gangway", "uwsgi", "gunicorn", "waitress", "nginx"]
WSGI = ["gangway", "uwsgi", "gunicorn", "waitress"]
STATIC = ["gangway", "uwsgi", "nginx"]
# Each with its own threads per process: gangway --threads, uWSGI --threads,
# Gunicorn's gthread worker (issue 16)
THREADED = ["gangway", "uwsgi", "gunicorn"]

SCENARIOS = [
    dict(key="hello-keepalive", title="Hello world, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/", servers=ALL,
         about="GET / on 64 keep-alive connections; the bare request/response path."),
    dict(key="hello-close", title="Hello world, new connection per request (64 connections)",
         kind="wrk", app="hello", path="/", servers=ALL, headers=["Connection: close"],
         about="wrk -H 'Connection: close': every request pays accept + close."),
    dict(key="hello-threads4", title="Hello world, 1 process × 4 threads, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/", servers=THREADED, procs=1, threads=4,
         baseline="hello-keepalive",
         about="The hello app on 4 threads per process (gangway `--threads 4`, uWSGI `--threads 4`, "
               "Gunicorn `-k gthread --threads 4`): what handing a request to a thread costs. "
               "`÷ own hello-keepalive`: this row's req/s over the same server's one-thread row "
               "(for Gunicorn that is its sync worker, without keep-alive: its ratio mostly "
               "shows gthread's keep-alive)."),
    dict(key="flask", title="Flask hello world, keep-alive, 64 connections",
         kind="wrk", app="flask", path="/", servers=WSGI,
         about="The same answer through Flask: server overhead next to a real framework."),
    dict(key="post-10k", title="10 KiB POST echoed back, keep-alive, 64 connections",
         kind="wrk", app="echo", path="/", servers=WSGI, script="post-10k.lua",
         about="Request body reading (wsgi.input) and a 10 KiB response."),
    dict(key="static-4k", title="Static file, 4 KiB, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/static/4k.bin", servers=STATIC, static="4k.bin",
         about="A small file through the server's static map (nginx: alias + sendfile)."),
    dict(key="static-1m", title="Static file, 1 MiB, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/static/1m.bin", servers=STATIC, static="1m.bin",
         about="A large file: sendfile and write-buffer handling."),
    dict(key="nginx-uwsgi", title="nginx in front over the uwsgi protocol, 64 connections",
         kind="front", app="hello", path="/", servers=["gangway", "uwsgi"],
         about="nginx uwsgi_pass to the server's uwsgi-protocol socket; both on CPU 0, "
               "CPU time is nginx + server."),
    dict(key="io-20ms", title="An app that waits 20 ms, {procs} processes × {threads} threads, "
         "{conns} connections",
         kind="wrk", app="io20", path="/", servers=THREADED, pool=True, limit=True,
         about="bench/apps/io20.py sleeps 20 ms per request, as an app waiting on its database "
               "does: no server can pass {limit:,.0f} req/s ({procs} × {threads} / 20 ms, the "
               "`÷ limit` column). {conns} connections: every thread busy, none queued, so p99 "
               "above 20 ms is the server's own delay."),
    dict(key="io-20ms-trickle", title="io-20ms while {trickle} clients trickle request bodies",
         kind="wrk", app="io20", path="/", servers=THREADED, pool=True, limit=True,
         trickle=True, baseline="io-20ms",
         about="io-20ms again, while bench/trickle.py keeps {trickle} more connections sending "
               "a POST body a byte a second (it never completes; a connection the server "
               "closes is opened again). `÷ own io-20ms`: what each server falls to."),
    dict(key="django-pg", title="Django + PostgreSQL page, {procs} processes × {threads} threads, "
         "{conns} connections",
         kind="wrk", app="pgsite", path="/", servers=THREADED, pool=True, pg=True,
         about="The index page of tests/apps/pgsite (Django ORM through psycopg2: the latest 10 "
               "of 100 notes and their count) on a PostgreSQL started for the run (unix "
               "socket, pinned to CPU 0 with the servers; its CPU is not in CPU/req, a note "
               "gives it)."),
    dict(key="tls-hello-keepalive", title="Hello world over TLS 1.3, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/", servers=["gangway", "nginx"], tls=True,
         about="hello-keepalive through --https (nginx: `listen ssl`, `return 200`), the same "
               "ECDSA P-256 certificate, versions and ciphers; target: gangway >= 0.9x nginx."),
    dict(key="tls-hello-close", title="Hello world over TLS, a handshake per request "
         "(64 connections)",
         kind="wrk", app="hello", path="/", servers=["gangway", "nginx"], tls=True,
         headers=["Connection: close"],
         about="Every request a new connection and a TLS 1.3 handshake: handshakes per second. "
               "wrk keeps its session across SSL_clear() and resumes with the newest ticket, "
               "each once: after each connection's first, full handshake, every handshake "
               "resumes (99% for both servers, each resumption giving a new ticket); "
               "target: gangway >= 0.9x nginx."),
    dict(key="tls-hello-full", title="Hello world over TLS, a full handshake per request "
         "(64 connections)",
         kind="wrk", app="hello", path="/", servers=["gangway", "nginx"], tls=True,
         no_tickets=True, headers=["Connection: close"],
         about="tls-hello-close with session tickets off on both servers (gangway "
               "`--tls-tickets=false`, nginx `ssl_session_tickets off`, no session cache): "
               "every handshake a full TLS 1.3 one (ECDHE and an ECDSA signature); target: "
               "gangway >= 0.9x nginx."),
    dict(key="tls-static-4k", title="Static file over TLS, 4 KiB, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/static/4k.bin", servers=["gangway", "nginx"],
         static="4k.bin", tls=True,
         about="A small file over TLS: both encrypt in user space unless the kernel offers kTLS."),
    dict(key="tls-static-1m", title="Static file over TLS, 1 MiB, keep-alive, 64 connections",
         kind="wrk", app="hello", path="/static/1m.bin", servers=["gangway", "nginx"],
         static="1m.bin", tls=True,
         about="A large file over TLS: kTLS + sendfile where the kernel has it, else read and "
               "encrypt in 16 KiB records; target: CPU/req within 1.2x nginx's."),
    dict(key="idle-2000", title="2,000 idle keep-alive connections + a fresh client",
         kind="idle", app="hello", path="/", servers=ALL,
         about="2,000 connections each make one request and stay open; then a new "
               "client connects and asks: time until its answer."),
]
QUICK = ["hello-keepalive", "flask"]
IO_WAIT = 0.020   # what bench/apps/io20.py waits per request

NOTES = [
    "Every server runs the same app file from bench/apps with one worker process, "
    "pinned with `taskset -c 0`; wrk runs `-t1` pinned with `taskset -c 1`. "
    "A scenario's servers are all started at once and their runs interleaved "
    "round-robin, so load from elsewhere on the machine hits them alike.",
    "uWSGI uses `--http-socket` in the wrk scenarios: with one sync process, "
    "`--http11-socket` (keep-alive) serves only the first connection and starves "
    "the other 63 of 64, so its figures would not be comparable. uWSGI therefore "
    "closes the connection after each response (wrk reports these as read errors "
    "and reconnects). `bench/instructions.py` does use `--http11-socket` (one connection).",
    "Gunicorn's sync worker does not do keep-alive: it answers `Connection: close` "
    "and every request pays a new connection.",
    "waitress runs with its defaults: 1 process, 4 threads, connection_limit 100.",
    "nginx is the upper bound (`return 200` / sendfile), not a WSGI server; "
    "it keeps its default keepalive_requests (1000).",
    "CPU µs/request is utime+stime of all the server's processes (master and "
    "workers, plus reaped children) over the measured runs divided by the requests: "
    "the figure that still compares when wrk, not the server, is the bottleneck.",
    "RSS is VmRSS of the serving worker (the process that used the most CPU) right "
    "after the last run (for idle-2000: while the 2,000 connections are open). In "
    "the threaded scenarios (processes × threads) it is the largest worker's, the "
    "master not counted, and a note lists every worker's.",
    "The threaded scenarios (hello-threads4, io-20ms, io-20ms-trickle, django-pg) run "
    "each server with the same processes × threads: gangway `--workers P --threads T`, "
    "uWSGI `--processes P --threads T` (still `--http-socket`), Gunicorn "
    "`--workers P -k gthread --threads T`. gangway's rows there are skipped for a "
    "gangway without --threads (before issue 16).",
]


# ------------------------------------------------------------------- wrk

def conns_for(scn, args):
    """wrk's connections: the scenario's own (io-20ms: one per thread), else --connections."""
    return scn.get("conns") or args.connections


def wrk_argv(port, scn, conns, duration):
    script = os.path.join("bench/wrk", scn.get("script", "report.lua"))
    argv = ["taskset", "-c", B.CLIENT_CPU, "wrk", "-t1", "-c%d" % conns,
            "-d%ds" % duration, "--timeout", "5s", "-s", script]
    for h in scn.get("headers", []):
        argv += ["-H", h]
    return argv + ["%s://127.0.0.1:%d%s" % ("https" if scn.get("tls") else "http", port,
                                             scn["path"])]


def run_wrk(argv, duration, stall_ok=False):
    """wrk's figures. stall_ok (io-20ms-trickle): a wrk that has not finished
    10 s after its duration is a run in which no request was answered, not
    a broken row. wrk connects once, blocking, before it starts: that
    connect cannot finish while the server's listen queue is full (5 s covers
    the SYN's first two retries)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    limit = duration + (5 if stall_ok else 30)
    try:
        p = subprocess.run(argv, cwd=B.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=limit)
    except subprocess.TimeoutExpired:   # subprocess has killed and reaped it
        if stall_ok:
            return dict(requests=0, duration_us=duration * 1e6, bytes=0, connect=0, read=0,
                        write=0, status=0, timeout=0, rps=0.0, wrk_cpu=0.0, stalled=True)
        raise Skip("wrk did not finish within %d s" % limit)
    out = p.stdout.decode("utf-8", "replace")
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0
            if not r["requests"]:   # no latency to speak of
                for k in ("lat_mean", "lat_p50", "lat_p90", "lat_p99", "lat_max"):
                    r[k] = None
            # wrk is the only child reaped meanwhile: this is its CPU time
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            r["wrk_cpu"] = cpu / (r["duration_us"] / 1e6) if r["duration_us"] else 0
            return r
    raise Skip("wrk failed (rc %s): %s" % (p.returncode, out.strip()[-300:]))


# ------------------------------------------------------------- launching

def launch_for(server, scn, port, uwsgi_port=None):
    static = "static" in scn
    if "threads" in scn:
        return B.threaded_launch(server, scn["app"], port, scn["procs"], scn["threads"],
                                 extra=GANGWAY_EXTRA if server == "gangway" else (),
                                 env=scn.get("env"))
    if server == "gangway":
        extra = GANGWAY_EXTRA + (["--tls-tickets=false"] if scn.get("no_tickets") else [])
        return B.gangway_launch(scn["app"], port, static=static, uwsgi_port=uwsgi_port,
                                extra=extra, tls=scn.get("tls", False))
    if server == "uwsgi":
        return B.uwsgi_launch(scn["app"], port, static=static, uwsgi_port=uwsgi_port)
    if server == "gunicorn":
        return B.gunicorn_launch(scn["app"], port)
    if server == "waitress":
        return B.waitress_launch(scn["app"], port)
    if server == "nginx":
        return B.nginx_launch(port, tls=scn.get("tls", False),
                              tls_tickets=not scn.get("no_tickets"))
    raise ValueError(server)


GANGWAY_EXTRA = []
CONFIGS = {}   # title -> one generated nginx.conf, for the report


def expected(scn, static_files):
    """(method, body to send, headers, expected response body)."""
    headers = {}
    for h in scn.get("headers", []):
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    if "static" in scn:
        return "GET", None, headers, static_files[scn["static"]]
    if scn["app"] == "echo":
        return "POST", POST_BODY, dict(headers, **{"Content-Type": "application/octet-stream"}), POST_BODY
    if scn["app"] == "pgsite":
        return "GET", None, headers, check_pgsite_index
    return "GET", None, headers, B.HELLO


PG_NOTES = 100   # notes seeded into the django-pg database


def check_pgsite_index(body):
    """None when body is the pgsite index page over the seeded notes."""
    if b'<p id="total">%d notes</p>' % PG_NOTES not in body:
        return "not the index page of %d notes (%d bytes)" % (PG_NOTES, len(body))
    if body.count(b'<li><a href="/notes/') != 10 or b'data-shown="10"' not in body:
        return "the index page does not list 10 notes"
    return None


_THREADS = []   # the probe's answer, once per run


def gangway_threads_missing():
    """None when ./gangway runs several requests of one worker at a time on
    --threads, else why its threaded rows are skipped. Asked once per run: a
    gangway with --threads 2 and bench/apps/io20.py says wsgi.multithread."""
    if not _THREADS:
        _THREADS.append(_probe_threads())
    return _THREADS[0]


def _probe_threads():
    helptext = B.sh([B.GANGWAY, "--help"])
    if not re.search(r"^\s*--threads\b", helptext, re.M):
        return "threads not built yet (issue 16): ./gangway has no --threads option"
    port = B.free_port()
    srv = B.Server(B.threaded_launch("gangway", "io20", port, 1, 2, extra=GANGWAY_EXTRA),
                   "threads-probe-gangway.log")
    try:
        srv.wait_ready(lambda: B.check_get(port, "/multithread", lambda b: None), timeout=20)
        st, _, body = B.http_request(port, "/multithread")
    except (Skip, OSError, ConnectionError, TimeoutError, ValueError) as ex:
        return "gangway --threads 2 did not answer: %s" % ex
    finally:
        srv.stop()
    if st != 200 or body != b"True":
        return ("threads not built yet (issue 16): gangway accepts --threads but runs one "
                "request at a time per worker (wsgi.multithread: %s)"
                % body.decode("latin-1")[:40])
    return None


def start_servers(server, scn, static_files, tag):
    """Start the row's server(s); returns (servers, http port, app server, commands)."""
    method, body, headers, want = expected(scn, static_files)
    if server == "gangway" and "threads" in scn:
        why = gangway_threads_missing()
        if why:
            raise Skip(why)
    port = B.free_port()
    started = []
    try:
        return _start_servers(server, scn, port, method, body, headers, want, started, tag)
    except Skip as ex:
        for s in reversed(started):
            s.stop()
        if server == "gangway" and "static" in scn:
            raise Skip("gangway --static-map not working yet (%s)" % ex)
        if server == "gangway" and scn["kind"] == "front":
            raise Skip("gangway --uwsgi not working yet (%s)" % ex)
        raise
    except BaseException:
        for s in reversed(started):
            s.stop()
        raise


def _start_servers(server, scn, port, method, body, headers, want, started, tag):
    if scn["kind"] == "front":
        up = B.free_port()
        back = B.Server(launch_for(server, scn, port, uwsgi_port=up), "%s-%s.log" % (tag, server))
        started.append(back)

        def tcp_ok():
            socket.create_connection(("127.0.0.1", up), timeout=2).close()
        back.wait_ready(tcp_ok, timeout=20)
        front = B.Server(B.nginx_launch(port, uwsgi_port=up, tag="nginx-front"),
                         "%s-nginx-front.log" % tag)
        started.append(front)
        front.wait_ready(lambda: B.check_get(port, scn["path"], want, method, body, headers),
                         timeout=20)
        if not back.alive():
            raise Skip("%s exited: %s" % (server, back.tail()))
        CONFIGS.setdefault("nginx in front (nginx-uwsgi)", front.launch.config)
        return started, port, back, [back.launch.display(), front.launch.display()]
    srv = B.Server(launch_for(server, scn, port), "%s-%s.log" % (tag, server))
    started.append(srv)
    srv.wait_ready(lambda: B.check_get(port, scn["path"], want, method, body, headers,
                                       tls=scn.get("tls", False)),
                   timeout=20)
    if srv.launch.config:
        CONFIGS.setdefault("nginx alone" + (" over TLS" if scn.get("tls") else ""),
                           srv.launch.config)
    return started, port, srv, [srv.launch.display()]


def stop_all(servers):
    for s in reversed(servers):
        s.stop()


def label(server, scn):
    name = B.SERVER_LABELS[server]
    return "nginx → " + name if scn["kind"] == "front" else name


# ------------------------------------------------------------------- rows

class WrkRow:
    """One server of a wrk scenario, started and kept up for the whole scenario."""

    def __init__(self, server, scn, static_files):
        self.row = dict(scenario=scn["key"], server=server, label=label(server, scn))
        self.server, self.scn, self.static_files = server, scn, static_files
        self.servers, self.runs, self.busy = [], [], {}
        self.pg_pid = None   # the scenario's PostgreSQL, whose CPU a note gives

    def start(self):
        self.servers, self.port, self.app_srv, cmds = start_servers(
            self.server, self.scn, self.static_files, self.scn["key"])
        self.row["commands"] = cmds
        self.roots = [s.pid for s in self.servers]

    def fail(self, msg):
        self.row["skipped"] = msg
        self.stop()

    def stop(self):
        stop_all(self.servers)
        self.servers = []

    def alive_or_skip(self):
        for s in self.servers:
            if not s.alive():
                raise Skip("%s died during the run: %s" % (s.launch.name, s.tail()))

    def warm(self, args):
        run_wrk(wrk_argv(self.port, self.scn, conns_for(self.scn, args), args.warmup),
                args.warmup)
        self.alive_or_skip()

    def measure(self, args):
        argv = wrk_argv(self.port, self.scn, conns_for(self.scn, args), args.duration)
        self.row["wrk"] = " ".join(shlex.quote(a) for a in argv)
        front = self.scn["kind"] == "front"
        trickle = None
        if self.scn.get("trickle"):
            trickle = Trickle(self.port, args.trickle, args.duration)
            self.row["trickle_cmd"] = trickle.display()
        try:
            if trickle:
                r_trickle = trickle.wait_ready()
            before = B.process_tree(self.roots)
            back0 = B.process_tree([self.app_srv.pid]) if front else None
            pg0 = B.process_tree([self.pg_pid]) if self.pg_pid else None
            r = run_wrk(argv, args.duration, stall_ok=bool(trickle))
            after = B.process_tree(self.roots)
            back1 = B.process_tree([self.app_srv.pid]) if front else None
            pg1 = B.process_tree([self.pg_pid]) if self.pg_pid else None
        finally:
            if trickle:
                done = trickle.stop()
        if trickle:
            r["trickle"] = dict(done, connected=r_trickle.get("connected", 0))
        for s in self.servers:
            s.tree()
        self.alive_or_skip()
        cpu_s, busiest = B.cpu_delta(before, after)
        if r["requests"] <= 0 and not trickle:
            raise Skip("wrk completed no requests")
        n = r["requests"]
        if front:  # the app server's share of nginx + server
            r["backend_cpu_us"] = B.cpu_delta(back0, back1)[0] * 1e6 / n
        if pg0 is not None and n:
            r["pg_cpu_us"] = B.cpu_delta(pg0, pg1)[0] * 1e6 / n
        r["cpu_s"] = cpu_s
        # None when no request completed (a server that slow uploads stalled)
        r["cpu_us"] = cpu_s * 1e6 / n if n else None
        r["server_cpu"] = cpu_s / (r["duration_us"] / 1e6)
        self.runs.append(r)
        if busiest is not None:
            self.busy[busiest] = self.busy.get(busiest, 0) + 1

    def finish(self, args):
        """RSS of the serving worker, a last check, stop, medians and notes."""
        row, runs, scn = self.row, self.runs, self.scn
        app_tree = B.process_tree([self.app_srv.pid])
        busy = self.busy
        worker = max((p for p in busy if p in app_tree), key=lambda p: busy[p], default=None)
        if worker is None:
            worker = max(app_tree, key=lambda p: app_tree[p][2]) if app_tree else self.app_srv.pid
        row["rss_kib"] = B.rss_kib(worker)
        notes = row.setdefault("notes", [])
        if "procs" in scn:
            # every worker's (the master's children), the largest in the column
            per = sorted(B.worker_rss_kib(self.app_srv.pid).values())
            if per:
                row["rss_kib"], row["rss_workers_kib"] = per[-1], per
                if len(per) > 1:
                    notes.append("RSS per worker: %s MiB" % " / ".join(
                        "%.1f" % (k / 1024) for k in per))
        method, body, headers, want = expected(scn, self.static_files)
        try:
            msg = B.check_get(self.port, scn["path"], want, method, body, headers,
                              tls=scn.get("tls", False))
        except (OSError, ConnectionError, TimeoutError, ValueError) as ex:
            msg = "%s: %s" % (type(ex).__name__, ex)
        if msg:
            notes.append("after the runs: " + msg)
        self.stop()
        row["runs"] = runs

        def med(k):
            v = [r[k] for r in runs if r.get(k) is not None]
            return statistics.median(v) if v else None
        row.update(rps=med("rps"), p50_us=med("lat_p50"), p99_us=med("lat_p99"),
                   cpu_us=med("cpu_us"), mean_us=med("lat_mean"))
        if scn.get("trickle"):
            tr = [r["trickle"] for r in runs if "trickle" in r]
            stalled = sum(1 for r in runs if not r["requests"])
            hung = sum(1 for r in runs if r.get("stalled"))
            if stalled:
                notes.append("no request answered in %d of %d runs%s" % (
                    stalled, len(runs), " (in %d wrk could not even connect: the listen queue "
                    "was full)" % hung if hung else ""))
            if tr:
                notes.append("trickle: %d of %d connected; server closed %d, answered %d "
                             "(all runs)" % (
                                 statistics.median(t["connected"] for t in tr), args.trickle,
                                 sum(t["closed_by_server"] for t in tr),
                                 sum(t["answered"] for t in tr)))
        if med("pg_cpu_us") is not None:
            row["pg_cpu_us"] = med("pg_cpu_us")
            notes.append("PostgreSQL: %.0f µs/req more CPU" % row["pg_cpu_us"])
        errs = {k: sum(r[k] for r in runs) for k in ("connect", "read", "write", "status", "timeout")}
        total = sum(r["requests"] for r in runs)
        if errs["read"] > 0.5 * total:
            notes.append("closes the connection after each response (wrk: %d read errors)" % errs["read"])
        elif errs["read"]:
            notes.append("wrk read errors: %d" % errs["read"])
        for k in ("connect", "write", "status", "timeout"):
            if errs[k]:
                notes.append("wrk %s errors: %d" % ("non-2xx/3xx" if k == "status" else k, errs[k]))
        conc = row["rps"] * (row["mean_us"] or 0) / 1e6
        keepalive = errs["read"] <= 0.5 * total and "Connection: close" not in scn.get("headers", [])
        conns = conns_for(scn, args)
        if keepalive and conc < 0.5 * conns and row["rps"]:
            notes.append("only ≈%.0f of %d connections in flight (Little's law)" % (conc, conns))
        if all("backend_cpu_us" in r for r in runs):
            row["backend_cpu_us"] = med("backend_cpu_us")
            notes.append("of the CPU/req: %.1f µs %s, %.1f µs nginx" % (
                row["backend_cpu_us"], B.SERVER_LABELS[self.server],
                row["cpu_us"] - row["backend_cpu_us"]))
        if scn.get("limit") and row["rps"]:
            notes.append("≈%.1f of %d threads busy (req/s × %.0f ms)" % (
                row["rps"] * IO_WAIT, scn["procs"] * scn["threads"], IO_WAIT * 1000))
        row["wrk_cpu"], row["server_cpu"] = med("wrk_cpu"), med("server_cpu")
        if row["wrk_cpu"] >= 0.9 and row["server_cpu"] < 0.9:
            notes.append("wrk-bound (wrk %.0f%% of its CPU, server %.0f%%): compare CPU/req" % (
                row["wrk_cpu"] * 100, row["server_cpu"] * 100))
        spread = (max(r["rps"] for r in runs) - min(r["rps"] for r in runs)) / (row["rps"] or 1)
        if spread > 0.25:
            notes.append("noisy: req/s spread %.0f%% across runs" % (spread * 100))


def run_wrk_scenario(scn, servers, args, static_files, floors):
    """All the scenario's servers up at once (idle ones cost nothing); the runs
    are interleaved round-robin, so load from elsewhere on a shared machine
    hits every server alike and the ratios stay fair. The app alone runs in
    the same rounds; floors[scenario] gets the median of its figures."""
    rows = [WrkRow(srv, scn, static_files) for srv in servers]
    live, alone, alone_mt = [], [], []
    cluster = None
    if scn.get("pg"):
        try:
            cluster = start_pg(scn)
        except Skip as ex:
            for w in rows:
                w.row["skipped"] = str(ex)
            return [w.row for w in rows]
        for w in rows:
            w.pg_pid = cluster.proc.pid
    try:
        for w in rows:
            try:
                w.start()
                live.append(w)
            except Skip as ex:
                w.fail(str(ex))
        for w in list(live):
            try:
                w.warm(args)
            except Skip as ex:
                w.fail(str(ex))
                live.remove(w)
        for i in range(args.runs):
            order = live[i % len(live):] + live[:i % len(live)] if live else []
            for w in order:
                if w.row.get("skipped"):
                    continue
                try:
                    w.measure(args)
                except Skip as ex:
                    w.fail(str(ex))
            if has_floor(scn) and live:
                us = app_alone(scn["app"], len(POST_BODY) if scn["app"] == "echo" else 0,
                               seconds=args.floor_seconds, env=scn.get("env"))
                if us is not None:
                    alone.append(us)
                if scn.get("threads", 1) > 1:
                    us = app_alone(scn["app"], seconds=args.floor_seconds, env=scn.get("env"),
                                   threads=scn["threads"], processes=scn["procs"])
                    if us is not None:
                        alone_mt.append(us)
        if alone:
            floors[scn["key"]] = statistics.median(alone)
        if alone_mt:
            floors[scn["key"] + "@threads"] = statistics.median(alone_mt)
        for w in live:
            if not w.row.get("skipped"):
                w.finish(args)
    finally:
        for w in rows:
            w.stop()
        if cluster:
            cluster.stop()
    return [w.row for w in rows]


def start_pg(scn):
    """PostgreSQL for the django-pg scenario, as tests/pg.py starts it for the
    tests (initdb as an unprivileged user, unix socket only, stopped by PID),
    pinned to the server CPU; the site's database migrated and seeded. Sets
    scn["env"], the PG* variables every server gets."""
    sys.path.insert(0, os.path.join(B.ROOT, "tests"))
    try:
        import pg
    except ImportError as ex:
        raise Skip("cannot import tests/pg.py: %s" % ex)
    why = pg.missing()
    if why:
        raise Skip(why)
    cluster = pg.PostgreSQL(prefix=["taskset", "-c", B.SERVER_CPU])
    try:
        cluster.start()
        env = cluster.env(cluster.create_database("pgsite_bench"))
        who = "as %s: " % cluster.user[0] if cluster.user else ""
        scn["setup_cmds"] = [who + " ".join(shlex.quote(a) for a in argv)
                             for argv in cluster.commands]
        scn["setup_cmds"] += ["cd %s && %s %s manage.py %s" % (
            B.app_dir("pgsite"), " ".join("%s=%s" % kv for kv in sorted(env.items())),
            B.PYTHON, " ".join(c)) for c in (["migrate", "--noinput"],
                                           ["seed_notes", str(PG_NOTES)])]
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("DJANGO_", "GANGWAY_", "PG"))}
        for cmd in (["migrate", "--noinput"], ["seed_notes", str(PG_NOTES)]):
            p = subprocess.run([B.PYTHON, "manage.py"] + cmd, cwd=os.path.join(B.ROOT, B.app_dir("pgsite")),
                               env=dict(base, **env), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=300)
            if p.returncode:
                raise RuntimeError("manage.py %s: %s" % (
                    cmd[0], p.stdout.decode("utf-8", "replace").strip()[-300:]))
    except Exception as ex:  # noqa: BLE001 -- the rows say why
        cluster.stop()
        raise Skip("PostgreSQL set-up failed: %s: %s" % (type(ex).__name__, ex))
    scn["env"] = env
    return cluster


class Trickle:
    """bench/trickle.py (pinned to the client CPU) for one measured run:
    started before wrk, waited for until its clients connected, stopped by
    PID after wrk."""

    def __init__(self, port, clients, duration):
        self.argv = ["taskset", "-c", B.CLIENT_CPU, B.PYTHON, "bench/trickle.py",
                     "--port", str(port), "--clients", str(clients), "--connect-timeout", "2",
                     "--max-seconds", str(duration + 60)]
        self.proc = subprocess.Popen(self.argv, cwd=B.ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.buf = b""

    def display(self):
        return " ".join(shlex.quote(a) for a in self.argv[:-2])

    def _line(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        for _ in range(100000):
            for line in self.buf.split(b"\n")[:-1]:
                if line.startswith(prefix):
                    return json.loads(line[len(prefix):])
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if r:
                data = os.read(fd, 65536)
                if not data:
                    break
                self.buf += data
        raise Skip("bench/trickle.py: no %s line: %s" % (
            prefix.decode().strip(), self.buf.decode("utf-8", "replace")[-300:]))

    def wait_ready(self):
        return self._line(b"READY ", 30)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self._line(b"DONE ", 15)
        finally:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            self.proc.stdin.close()
            self.proc.stdout.close()


def idle_probe(port, n_idle, phase_timeout, fresh_timeout, fresh_count, at_end):
    """Open n_idle keep-alive connections (one request each), then time fresh
    clients. Returns a dict; calls at_end() while the idle sockets are open."""
    req = B.build_request("/")
    ep = select.epoll()
    socks, state, bufs = {}, {}, {}
    res = dict(idle=n_idle)
    try:
        for _ in range(n_idle):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            fd = s.fileno()
            socks[fd] = s
            if err not in (0, errno.EINPROGRESS):
                state[fd] = "failed"
                continue
            state[fd] = "connecting"
            bufs[fd] = b""
            ep.register(fd, select.EPOLLOUT)
        deadline = time.monotonic() + phase_timeout
        for _ in range(1000000):
            pending = sum(1 for v in state.values() if v in ("connecting", "sent"))
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            for fd, ev in ep.poll(min(0.2, left), 4096):
                s, st = socks[fd], state[fd]
                if st == "connecting":
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        state[fd] = "failed"
                        ep.unregister(fd)
                        continue
                    try:
                        s.send(req)
                    except OSError:
                        state[fd] = "closed"
                        ep.unregister(fd)
                        continue
                    state[fd] = "sent"
                    ep.modify(fd, select.EPOLLIN)
                elif st in ("sent", "open"):
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        state[fd] = "closed" if st == "open" else "closed-unanswered"
                        ep.unregister(fd)
                        continue
                    bufs[fd] += data
                    if st == "sent" and _complete(bufs[fd]):
                        state[fd] = "open"
        res["answered"] = sum(1 for v in state.values() if v in ("open", "closed"))
        res["unanswered"] = sum(1 for v in state.values() if v in ("connecting", "sent"))
        # the fresh clients
        times = []
        for _ in range(fresh_count):
            t0 = time.monotonic()
            try:
                st, _, body = B.http_request(port, "/", timeout=fresh_timeout)
            except (OSError, TimeoutError, ConnectionError) as ex:
                res["fresh_error"] = "%s after %.1f s" % (type(ex).__name__, time.monotonic() - t0)
                break
            times.append((time.monotonic() - t0) * 1000)
            if st != 200 or body != B.HELLO:
                res["fresh_error"] = "wrong answer (status %d)" % st
                break
        res["fresh_ms"] = statistics.median(times) if times else None
        res["fresh_max_ms"] = max(times) if times else None
        res["fresh_n"] = len(times)
        # which idle connections did the server keep open?
        for fd, ev in ep.poll(0, 4096):
            if state.get(fd) == "open":
                try:
                    if socks[fd].recv(65536) == b"":
                        state[fd] = "closed"
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    state[fd] = "closed"
        res["open"] = sum(1 for v in state.values() if v == "open")
        at_end(res)
    finally:
        for s in socks.values():
            s.close()
        ep.close()
    return res


def _complete(buf):
    if b"\r\n\r\n" not in buf:
        return False
    head, body = buf.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip())
    return True


def run_idle_row(server, scn, args, static_files):
    row = dict(scenario=scn["key"], server=server, label=label(server, scn))
    servers, port, app_srv, cmds = start_servers(server, scn, static_files, scn["key"])
    row["commands"] = cmds
    try:
        before = B.process_tree([app_srv.pid])

        def at_end(res):
            after = B.process_tree([app_srv.pid])
            app_srv.tree()
            _, busiest = B.cpu_delta(before, after)
            res["rss_kib"] = B.rss_kib(busiest or app_srv.pid)
        res = idle_probe(port, args.idle, args.idle_phase, args.fresh_timeout, 5, at_end)
    finally:
        stop_all(servers)
    row.update(res)
    notes = row.setdefault("notes", [])
    if res.get("fresh_error"):
        notes.append("fresh client: " + res["fresh_error"])
    if res["unanswered"]:
        notes.append("%d idle connections unanswered after %.0f s" % (res["unanswered"], args.idle_phase))
    if res["open"] < res["idle"] and not res["unanswered"]:
        notes.append("server closed %d idle connections" % (res["idle"] - res["open"]))
    return row


# ----------------------------------------------------------------- bounds

def app_alone(app, post=0, seconds=2.0, env=None, threads=1, processes=1):
    """bench/alone.py for app, pinned to the server CPU: its µs per call, or
    None. env: what the servers get on top of ours (django-pg: the PG* of its
    database). processes x threads: called from that many threads of that
    many processes at once, as a server so configured would call it."""
    mod, call = B.APPS[app]
    argv = ["taskset", "-c", B.SERVER_CPU, B.PYTHON, os.path.join(B.ROOT, "bench", "alone.py"),
            mod, call, "--seconds", str(seconds), "--dir", B.app_dir(app)]
    argv += ["--post", str(post)] if post else []
    argv += ["--threads", str(threads), "--processes", str(processes)] if threads > 1 else []
    try:
        p = subprocess.run(argv, cwd=B.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=seconds + 60, env=dict(os.environ, **(env or {})))
        return json.loads(p.stdout.decode().strip().splitlines()[-1])["us_per_call"]
    except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as ex:
        print("warning: bench/alone.py %s: %s" % (app, ex), file=sys.stderr)
        return None


def has_floor(scn):
    """The app alone means something for an app that computes: not for
    io20 (it sleeps) nor the hand-off row; django-pg's CPU-bound page is
    what no threaded server can beat (the database's CPU aside)."""
    if scn["kind"] != "wrk" or "static" in scn:
        return False
    if scn.get("pool"):
        return bool(scn.get("pg"))
    return "threads" not in scn


def bounds_md(rows, scenarios, floors):
    """What no server could beat in this run: the app alone, nginx alone."""
    by = {(r["scenario"], r["server"]): r for r in rows if not r.get("skipped")}
    peers = [p for p in ("uwsgi", "gunicorn", "waitress")
             if any((s["key"], p) in by for s in scenarios)]
    L = ["## What bounds the ratios", "",
         "The app alone (`bench/alone.py`: the same app called in a loop in one process, no "
         "server, pinned to the server CPU) is the floor of any server's CPU per request. A "
         "peer's CPU/req divided by it is the best CPU ratio that a server costing nothing "
         "could reach against that peer. Each cell: gangway now / at best.", "",
         "| scenario | app alone µs/call | gangway µs/req | of which gangway's own | %s |"
         % " | ".join("÷ %s CPU/req" % B.SERVER_LABELS[p] for p in peers),
         "|---|---:|---:|---:|" + "---:|" * len(peers)]
    for scn in scenarios:
        g, f = by.get((scn["key"], "gangway")), floors.get(scn["key"])
        if not has_floor(scn) or not g or not f:
            continue
        cells = []
        for p in peers:
            r = by.get((scn["key"], p))
            cells.append("%.2f× / %.2f×" % (r["cpu_us"] / g["cpu_us"], r["cpu_us"] / f)
                         if r else "–")
        L.append("| %s | %.1f | %.1f | %.1f | %s |" % (
            scn["key"], f, g["cpu_us"], g["cpu_us"] - f, " | ".join(cells)))
    L.append("")
    for scn in scenarios:
        g, f = by.get((scn["key"], "gangway")), floors.get(scn["key"] + "@threads")
        if not g or not f:
            continue
        cells = ["%s %.2f×" % (B.SERVER_LABELS[p], by[(scn["key"], p)]["cpu_us"] / f)
                 for p in peers if (scn["key"], p) in by]
        L.append("- %s: the app alone in %d processes × %d threads at once, as the servers "
                 "run it (`bench/alone.py --processes %d --threads %d`), costs %.1f µs/call, "
                 "%.2f× its cost on one thread: what the app itself pays for sharing the CPU "
                 "and each interpreter, before any server. Against it gangway's own share is "
                 "%.1f µs/req, and a server costing nothing could be at best %s (CPU/req)." % (
                     scn["key"], scn["procs"], scn["threads"], scn["procs"], scn["threads"], f,
                     f / floors[scn["key"]] if floors.get(scn["key"]) else 0,
                     g["cpu_us"] - f, ", ".join(cells) or "–"))
    if any(k.endswith("@threads") for k in floors):
        L.append("")
    hk = [by.get(("hello-keepalive", s)) for s in ("nginx", "uwsgi")]
    if all(hk):
        L.append("- hello-keepalive: nginx's `return 200`, which runs no app at all, serves "
                 "%.2f× uWSGI's req/s at %.2f× less CPU/req: no HTTP server here can go "
                 "much past that." % (hk[0]["rps"] / hk[1]["rps"], hk[1]["cpu_us"] / hk[0]["cpu_us"]))
    fr = [by.get(("nginx-uwsgi", s)) for s in ("gangway", "uwsgi")]
    if all(fr) and all("backend_cpu_us" in r for r in fr):
        ng = fr[1]["cpu_us"] - fr[1]["backend_cpu_us"]
        L.append("- nginx-uwsgi: nginx itself spends %.1f µs/req in front of uWSGI (%.1f µs in "
                 "front of gangway); uWSGI %.1f µs, gangway %.1f µs. With a backend that cost "
                 "nothing, nginx → it would be at most %.2f× nginx → uWSGI." % (
                     ng, fr[0]["cpu_us"] - fr[0]["backend_cpu_us"], fr[1]["backend_cpu_us"],
                     fr[0]["backend_cpu_us"], fr[1]["cpu_us"] / ng))
    L.append("")
    return L


# ----------------------------------------------------------------- report

def fmt_lat(us):
    if us is None:
        return "–"
    if us < 1000:
        return "%.0f µs" % us
    return "%.2f ms" % (us / 1000)


def fmt_num(x, nd=0):
    if x is None:
        return "–"
    return "{:,.{nd}f}".format(x, nd=nd)


def fmt_ratio(r):
    return "–" if r is None else "%.2f×" % r


def ratio(a, b):
    return a / b if a and b else None


def gangway_row(rows, key):
    for r in rows:
        if r["scenario"] == key and r["server"] == "gangway" and not r.get("skipped"):
            return r
    return None


def report_md(rows, meta, scenarios, chart_name, floors):
    L = []
    L.append("# gangway benchmark, %s (%s)" % (meta["date"], meta["name"]))
    L.append("")
    m = meta["machine"]
    L.append("- Machine: %s, %s CPUs%s, %s RAM, kernel %s, Debian %s" % (
        m["cpu"], m["cpus"], " (%s guest)" % m["hypervisor"] if m["hypervisor"] else "",
        m["memory"], m["kernel"], m["debian"]))
    L.append("- Run: `%s`: each figure is the median of %d runs of %d s after a %d s warm-up; "
             "wrk `-t1 -c%d` on CPU %s, the server on CPU %s; took %.0f s; load average "
             "%.2f before, %.2f after." % (
                 meta["cmdline"], meta["runs"], meta["duration"], meta["warmup"],
                 meta["connections"], B.CLIENT_CPU, B.SERVER_CPU, meta["elapsed"],
                 meta["load_before"], meta["load_after"]))
    L.append("- The machine is shared and noisy: only ratios within this file are meaningful. "
             "`gangway ÷ peer` for req/s: above 1 means gangway serves more; for CPU/req: "
             "below 1 means gangway spends less CPU per request.")
    L.append("")
    L.append("![chart](%s)" % chart_name)
    L.append("")
    for scn in scenarios:
        srows = [r for r in rows if r["scenario"] == scn["key"]]
        if not srows:
            continue
        L.append("## %s" % scn["title"])
        L.append("")
        L.append(scn["about"])
        L.append("")
        g = gangway_row(rows, scn["key"])
        if scn["kind"] == "idle":
            L.append("| server | fresh client (median of 5) | slowest | idle conns open | RSS | gangway ÷ peer (time) | notes |")
            L.append("|---|---:|---:|---:|---:|---:|---|")
            for r in srows:
                if r.get("skipped"):
                    L.append("| %s | – | – | – | – | – | skipped: %s |" % (r["label"], r["skipped"]))
                    continue
                rat = None if r is g or not g else ratio(g.get("fresh_ms"), r.get("fresh_ms"))
                L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                    r["label"],
                    "%.2f ms" % r["fresh_ms"] if r.get("fresh_ms") is not None else "no answer",
                    "%.2f ms" % r["fresh_max_ms"] if r.get("fresh_max_ms") is not None else "–",
                    "%d / %d" % (r["open"], r["idle"]),
                    "%.1f MiB" % (r["rss_kib"] / 1024) if r.get("rss_kib") else "–",
                    fmt_ratio(rat), "; ".join(r.get("notes", []))))
            L.append("")
            continue
        cols = ratio_columns(scn)
        if scn.get("limit"):
            L.append("Limit: %s req/s (%d processes × %d threads / %.0f ms)." % (
                fmt_num(scn["limit_rps"]), scn["procs"], scn["threads"], IO_WAIT * 1000))
            L.append("")
        L.append("| server | req/s | %sp50 | p99 | CPU µs/req | %s | gangway ÷ peer req/s | "
                 "gangway ÷ peer CPU/req | notes |" % (
                     "".join(h + " | " for _, h in cols),
                     "RSS/worker" if "procs" in scn else "RSS"))
        L.append("|---|---:|%s---:|---:|---:|---:|---:|---:|---|" % ("---:|" * len(cols)))
        for r in srows:
            if r.get("skipped"):
                L.append("| %s | – | %s– | – | – | – | – | – | skipped: %s |" % (
                    r["label"], "– | " * len(cols), r["skipped"]))
                continue
            if g and r is not g:
                rr, rc = ratio(g["rps"], r["rps"]), ratio(g["cpu_us"], r["cpu_us"])
            else:
                rr = rc = None
            L.append("| %s | %s | %s%s | %s | %s | %s | %s | %s | %s |" % (
                r["label"], fmt_num(r["rps"]),
                "".join(fmt_ratio(r.get(k)) + " | " for k, _ in cols),
                fmt_lat(r["p50_us"]), fmt_lat(r["p99_us"]),
                fmt_num(r["cpu_us"], 1),
                "%.1f MiB" % (r["rss_kib"] / 1024) if r.get("rss_kib") else "–",
                fmt_ratio(rr), fmt_ratio(rc), "; ".join(r.get("notes", []))))
        L.append("")
    L.extend(bounds_md(rows, scenarios, floors))
    L.append("## Notes")
    L.append("")
    for n in NOTES:
        L.append("- " + n)
    L.append("")
    L.append("## Versions")
    L.append("")
    for k, v in meta["versions"].items():
        L.append("- %s: %s" % (k, v))
    L.append("")
    L.append("## Commands")
    L.append("")
    L.append("Run from the repository root (`%s`); ports are picked free per row." % B.ROOT)
    L.append("")
    for scn in scenarios:
        srows = [r for r in rows if r["scenario"] == scn["key"] and r.get("commands")]
        if not srows:
            continue
        L.append("### %s" % scn["key"])
        L.append("")
        L.append("```")
        for c in scn.get("setup_cmds", []):
            L.append(c)
        for r in srows:
            for c in r["commands"]:
                L.append(c)
            if r.get("trickle_cmd"):
                L.append(r["trickle_cmd"] + "   # during each run, pinned like wrk")
            if r.get("wrk"):
                L.append(r["wrk"])
        L.append("```")
        L.append("")
    for title, conf in CONFIGS.items():
        L.append("### Generated nginx.conf, %s (one of the rows; only ports and paths differ)" % title)
        L.append("")
        L.append("```nginx")
        L.append(conf.rstrip())
        L.append("```")
        L.append("")
    L.append("The idle-2000 client is Python in bench/run.py (`idle_probe`): %d connections, "
             "one `GET /` each, then 5 fresh `GET /` on new connections, one after another." % meta["idle"])
    L.append("")
    return "\n".join(L) + "\n"


COLORS = {"gangway": "#d62728", "uwsgi": "#1f77b4", "gunicorn": "#2ca02c",
          "waitress": "#9467bd", "nginx": "#7f7f7f"}


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def report_svg(rows, meta, scenarios):
    """Hand-written SVG: one row of panels per scenario, one panel per metric,
    horizontal bars per server."""
    metrics = [("rps", "req/s (higher is better)", lambda v: fmt_num(v)),
               ("p99_us", "p99 latency (lower is better)", fmt_lat),
               ("cpu_us", "CPU µs/request (lower is better)", lambda v: fmt_num(v, 1)),
               ("rss_mib", "worker RSS MiB", lambda v: "%.1f" % v)]
    idle_metrics = [("fresh_ms", "fresh client ms (lower is better)", lambda v: "%.2f" % v),
                    None, None, ("rss_mib", "worker RSS MiB", lambda v: "%.1f" % v)]
    pw, bar, gap, label_w, top = 300, 16, 4, 120, 50
    shown = [s for s in scenarios if any(r["scenario"] == s["key"] for r in rows)]
    blocks = []
    y = top
    for scn in shown:
        srows = [r for r in rows if r["scenario"] == scn["key"]]
        h = 26 + len(srows) * (bar + gap) + 16
        blocks.append((scn, srows, y, h))
        y += h
    W = 20 + 4 * (label_w + pw + 20)
    H = y + 30
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
         'font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="20" y="22" font-size="16" font-weight="bold">gangway benchmark %s (%s)</text>'
         % (_esc(meta["date"]), _esc(meta["name"])),
         '<text x="20" y="40" fill="#555">%s; medians of %d × %d s; only ratios within one run mean anything</text>'
         % (_esc(meta["machine"]["cpu"]), meta["runs"], meta["duration"])]
    for scn, srows, y0, h in blocks:
        o.append('<text x="20" y="%d" font-size="13" font-weight="bold">%s</text>'
                 % (y0 + 14, _esc(scn["title"])))
        ms = idle_metrics if scn["kind"] == "idle" else metrics
        for i, m in enumerate(ms):
            if m is None:
                continue
            key, title, fmt = m
            x0 = 20 + i * (label_w + pw + 20)
            vals = []
            for r in srows:
                v = r.get(key)
                if key == "rss_mib" and r.get("rss_kib"):
                    v = r["rss_kib"] / 1024
                vals.append(v if (v is not None and not r.get("skipped")) else None)
            vmax = max([v for v in vals if v] or [1])
            o.append('<text x="%d" y="%d" fill="#333">%s</text>' % (x0 + label_w, y0 + 28, _esc(title)))
            for j, (r, v) in enumerate(zip(srows, vals)):
                yy = y0 + 34 + j * (bar + gap)
                o.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                         % (x0 + label_w - 6, yy + bar - 4, _esc(r["label"])))
                if v is None:
                    o.append('<text x="%d" y="%d" fill="#999">%s</text>'
                             % (x0 + label_w + 4, yy + bar - 4,
                                "skipped" if r.get("skipped") else "no answer"))
                    continue
                w = max(1.0, (pw - 70) * v / vmax)
                o.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                         % (x0 + label_w, yy, w, bar, COLORS.get(r["server"], "#333")))
                o.append('<text x="%.1f" y="%d">%s</text>'
                         % (x0 + label_w + w + 4, yy + bar - 4, _esc(fmt(v))))
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ------------------------------------------------------- threaded scenarios

def pool_scenario(scn, args):
    """The scenario with its processes x threads (and the wrk connections of
    io-20ms) filled in from the command line; titles name them."""
    scn = dict(scn)
    if scn.get("pool"):
        scn["procs"], scn["threads"] = args.processes, args.threads
        if scn["app"] == "io20":
            scn["conns"] = args.io_connections or args.processes * args.threads
        scn["limit_rps"] = args.processes * args.threads / IO_WAIT
    vals = dict(procs=scn.get("procs"), threads=scn.get("threads"),
                conns=conns_for(scn, args), trickle=args.trickle,
                limit=scn.get("limit_rps") or 0)
    scn["title"] = scn["title"].format(**vals)
    scn["about"] = scn["about"].format(**vals)
    return scn


def ratio_columns(scn):
    """(row key, column title) of the extra columns of a scenario's table."""
    cols = []
    if scn.get("limit"):
        cols.append(("of_limit", "÷ limit"))
    if scn.get("baseline"):
        cols.append(("of_baseline", "÷ own " + scn["baseline"]))
    return cols


def add_ratios(row, scn, rows):
    """io-20ms: req/s over the limit; hello-threads4 and io-20ms-trickle:
    over the same server's row in their baseline scenario, from this run."""
    if row.get("skipped") or row.get("rps") is None:
        return
    if scn.get("limit"):
        row["limit_rps"] = scn["limit_rps"]
        row["of_limit"] = row["rps"] / scn["limit_rps"]
    base = next((r for r in rows if r["scenario"] == scn.get("baseline") and
                 r["server"] == row["server"] and not r.get("skipped")), None)
    if base and base.get("rps"):
        row["of_baseline"] = row["rps"] / base["rps"]


# ------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="hello keep-alive + Flask, 3 runs x 3 s, 1 s warm-up (make bench-quick)")
    ap.add_argument("--scenarios", help="comma-separated subset of: " + ",".join(s["key"] for s in SCENARIOS))
    ap.add_argument("--servers", help="comma-separated subset of: " + ",".join(ALL))
    ap.add_argument("--runs", type=int, help="runs per row (default 5, quick 3)")
    ap.add_argument("--duration", type=int, help="seconds per run (default 3)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds (default 2, quick 1)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--idle", type=int, default=2000, help="idle connections (default 2000)")
    ap.add_argument("--idle-phase", type=float, default=8.0,
                    help="seconds allowed to open the idle connections (default 8)")
    ap.add_argument("--fresh-timeout", type=float, default=8.0,
                    help="seconds the fresh client waits (default 8)")
    ap.add_argument("--processes", type=int, default=2,
                    help="processes of io-20ms, io-20ms-trickle and django-pg (default 2)")
    ap.add_argument("--threads", type=int, default=8,
                    help="threads per process there (default 8)")
    ap.add_argument("--io-connections", type=int,
                    help="wrk connections of io-20ms(-trickle) (default processes x threads)")
    ap.add_argument("--trickle", type=int, default=500,
                    help="slow-upload clients of io-20ms-trickle (default 500)")
    ap.add_argument("--budget", type=float,
                    help="seconds; rows that would end later are skipped (default 1200, quick 115)")
    ap.add_argument("--name", help="result name (default <commit>[-quick])")
    ap.add_argument("--out-dir", default=B.RESULTS, help="where to write (default bench/results)")
    ap.add_argument("--no-latest", action="store_true", help="do not update latest.md/latest.svg")
    ap.add_argument("--gangway-arg", action="append", default=[],
                    help="extra argument for ./gangway (repeatable)")
    args = ap.parse_args()
    q = args.quick
    args.runs = args.runs or (3 if q else 5)
    args.duration = args.duration or 3
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.budget = args.budget or (115.0 if q else 1200.0)
    args.floor_seconds = 1 if q else args.duration  # bench/alone.py per round
    GANGWAY_EXTRA.extend(args.gangway_arg)
    for n in ("runs", "duration", "warmup"):
        if not 1 <= getattr(args, n) <= 600:
            ap.error("--%s out of range" % n)
    if not 1 <= args.idle <= 20000:
        ap.error("--idle out of range")
    if not (1 <= args.processes <= 64 and 1 <= args.threads <= 256 and 1 <= args.trickle <= 10000
            and 1 <= (args.io_connections or 1) <= 10000):
        ap.error("--processes, --threads, --io-connections or --trickle out of range")

    keys = [s["key"] for s in SCENARIOS]
    want = args.scenarios.split(",") if args.scenarios else (QUICK if q else keys)
    bad = [k for k in want if k not in keys]
    if bad:
        ap.error("unknown scenario(s): " + ",".join(bad))
    scenarios = [pool_scenario(s, args) for s in SCENARIOS if s["key"] in want]
    servers = args.servers.split(",") if args.servers else ALL
    bad = [k for k in servers if k not in ALL]
    if bad:
        ap.error("unknown server(s): " + ",".join(bad))

    for tool in ("wrk", "taskset", "nginx", "uwsgi", "gunicorn", "waitress-serve"):
        if not shutil.which(tool):
            print("warning: %s not found (scripts/install-deps --bench)" % tool, file=sys.stderr)

    B.pin_self()
    nofile = B.raise_nofile(65536)
    if nofile < args.idle + 100:
        print("warning: RLIMIT_NOFILE %d < %d" % (nofile, args.idle + 100), file=sys.stderr)
    os.makedirs(B.WORK, exist_ok=True)
    B.clean_work(["nginx-[0-9]*", "nginx-front-[0-9]*"])
    static_files = B.ensure_static_files()
    have_gangway = os.access(B.GANGWAY, os.X_OK)

    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    est_wrk = 1.5 + args.warmup + args.runs * (args.duration + 0.3)
    est_idle = 3 + args.idle_phase + args.fresh_timeout
    n_rows = sum(1 for scn in scenarios for srv in scn["servers"] if srv in servers)
    rows, floors = [], {}
    for scn in scenarios:
        plan, todo = [], []
        for srv in scn["servers"]:
            if srv not in servers:
                continue
            row = dict(scenario=scn["key"], server=srv, label=label(srv, scn))
            plan.append(row)
            if srv == "gangway" and not have_gangway:
                row["skipped"] = "./gangway not built (make gangway)"
            else:
                todo.append(row)
        # rows that would end after the budget are skipped
        left = args.budget - (time.monotonic() - t_start)
        est = est_idle if scn["kind"] == "idle" else est_wrk
        if scn.get("trickle"):
            est += args.runs * 4          # its clients connect before each run; stalled wrk
        if scn.get("pg"):
            left -= 20                    # initdb, start, migrate and seed, once
        if has_floor(scn):
            left -= args.runs * (args.floor_seconds + 0.7)  # the app alone, in the same rounds
            if scn.get("threads", 1) > 1:  # and on its threads: a second start, their warm-up
                left -= args.runs * (args.floor_seconds + 2.5)
        fit = max(0, min(len(todo), int(left // est)))
        for row in todo[fit:]:
            row["skipped"] = "time budget (%.0f s) would be exceeded" % args.budget
        todo = todo[:fit]
        done = {}
        try:
            if scn["kind"] == "idle":
                for row in todo:
                    try:
                        done[row["server"]] = run_idle_row(row["server"], scn, args, static_files)
                    except Skip as ex:
                        row["skipped"] = str(ex)
            elif todo:
                for r in run_wrk_scenario(scn, [r["server"] for r in todo], args, static_files,
                                          floors):
                    done[r["server"]] = r
        except Exception as ex:   # one broken scenario must not lose the others
            for row in todo:
                if row["server"] not in done:
                    row["skipped"] = "harness error: %s: %s" % (type(ex).__name__, ex)
        for row in plan:
            row = done.get(row["server"], row)
            add_ratios(row, scn, rows)
            rows.append(row)
            prefix = "[%2d/%d] %-16s %-18s" % (len(rows), n_rows, scn["key"], row["label"])
            if row.get("skipped"):
                print("%s skipped: %s" % (prefix, row["skipped"]), flush=True)
            elif scn["kind"] == "idle":
                print("%s fresh %s ms, %d/%d idle open, RSS %s KiB %s" % (
                    prefix, "%.2f" % row["fresh_ms"] if row.get("fresh_ms") is not None else "-",
                    row["open"], row["idle"], row.get("rss_kib"), "; ".join(row.get("notes", []))),
                    flush=True)
            else:
                extra = "".join("  %s %s" % (h, fmt_ratio(row.get(k))) for k, h in ratio_columns(scn))
                print("%s %9.0f req/s  p50 %-9s p99 %-9s %6s µs/req  RSS %s KiB%s %s" % (
                    prefix, row["rps"], fmt_lat(row["p50_us"]), fmt_lat(row["p99_us"]),
                    fmt_num(row["cpu_us"], 1), row.get("rss_kib"), extra,
                    "; ".join(row.get("notes", []))), flush=True)

    commit = B.git_commit()
    name = args.name or (commit.split("-")[0][:7] + ("-quick" if q else ""))
    meta = dict(date=B.today(), name=name, machine=B.machine_info(), versions=B.versions(),
                runs=args.runs, duration=args.duration, warmup=args.warmup,
                connections=args.connections, elapsed=time.monotonic() - t_start,
                idle=args.idle, load_before=load_before, load_after=os.getloadavg()[0],
                cmdline=" ".join(["bench/run.py"] + [shlex.quote(a) for a in sys.argv[1:]]))
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, "%s-%s" % (meta["date"], name))
    with open(base + ".svg", "w") as f:
        f.write(report_svg(rows, meta, scenarios))
    with open(base + ".md", "w") as f:
        f.write(report_md(rows, meta, scenarios, os.path.basename(base) + ".svg", floors))
    with open(os.path.join(B.WORK, "last-run.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows, floors=floors), f, indent=1, default=str)
    if not args.no_latest:
        shutil.copyfile(base + ".svg", os.path.join(args.out_dir, "latest.svg"))
        md = report_md(rows, meta, scenarios, "latest.svg", floors)
        with open(os.path.join(args.out_dir, "latest.md"), "w") as f:
            f.write(md)
    print("wrote %s.md and %s.svg%s (%.0f s)" % (
        os.path.relpath(base, B.ROOT), os.path.relpath(base, B.ROOT),
        "" if args.no_latest else " (+ latest.md/latest.svg)", time.monotonic() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
