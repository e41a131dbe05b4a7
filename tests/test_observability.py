"""Observability against the real binary: --stats (JSON, bare uwsgitop-style
JSON, Prometheus /metrics, the /status page), exact counters that survive
respawns, the latency histogram against measured times, --log-json and
--log-format, X-Request-Id, and the status page in headless Chromium.

App: tests/apps/obs_app.py. Every wait is a bounded poll on a condition or a
socket timeout. Requests that must stay "in the app" block on a socket this
test holds (the app connects to it and waits for a byte), so the test decides
when they end and knows (by the accept) that the app is running.
"""
import base64
import calendar
import fcntl
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import RawReader, recv_all, request, wait_for

SANITIZED = os.environ.get("GW_TEST_SANITIZED") == "1"
SLOW = 3 if SANITIZED else 1  # the sanitizer build is slower: wider bounds, never narrower
APP = "obs_app:application"

# src/proc/scoreboard.c gw_lat_bounds_us (the last bucket is +Inf)
BOUNDS_US = [100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
             1000000, 5000000]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"]
CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
REASONS = ["crash", "max-requests", "max-worker-lifetime", "reload-on-rss", "harakiri",
           "load-failed"]
# --log-json with no --log-format: every field, in this order (src/core/log.c)
ALL_LOG_FIELDS = ["client", "method", "uri", "protocol", "status", "bytes", "duration_us",
                  "duration_ms", "duration", "referer", "user_agent", "request_id", "worker",
                  "time", "time_local", "time_iso", "pid", "host", "aborted", "peer"]
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


# ---------------------------------------------------------------------------
# starting gangway, talking to its app
# ---------------------------------------------------------------------------

def start(gangway, *args, workers=1, stats="0", env=None, listen=True):
    argv = ["--stats", stats, "-p", str(workers)] + list(args) + [APP]
    return gangway(*argv, env=env, listen=listen)


STATS_RE = re.compile(r"statistics on http://(?:unix:(\S+)|([0-9.]+):(\d+)) ")


def stats_addr(srv):
    m = STATS_RE.search(srv.read_log())
    assert m, "no 'statistics on' line in the log:\n" + srv.read_log()
    return m.group(1) if m.group(1) else (m.group(2), int(m.group(3)))


def raw_request(method, target, headers=(), body=b"", host=True):
    """Bytes of one HTTP/1.1 request that closes its connection."""
    t = target if isinstance(target, bytes) else target.encode("latin-1")
    out = method.encode() + b" " + t + b" HTTP/1.1\r\n"
    if host:
        out += b"Host: obs.test\r\n"
    for k, v in headers:
        out += k.encode() + b": " + (v if isinstance(v, bytes) else v.encode("latin-1")) + b"\r\n"
    if body or method in ("POST", "PUT"):
        out += b"Content-Length: %d\r\n" % len(body)
    return out + b"Connection: close\r\n\r\n" + body


def call(srv, method, target, headers=(), body=b""):
    """(raw request, response) of one request on a new connection."""
    raw = raw_request(method, target, headers, body)
    return raw, request(srv, raw, head=(method == "HEAD"))


def headers_named(resp, name):
    return [v for k, v in resp.headers if k == name.lower()]


class Holder:
    """Requests parked inside the app: /block?port=P connects here and waits.

    hold(fn) runs fn (which sends a request) in a thread; accept() returns the
    pid of the worker whose app is now waiting; release() lets them all end
    and returns what each fn returned."""

    def __init__(self):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(15 * SLOW)
        self.port = self.ls.getsockname()[1]
        self.conns, self.threads, self.results = [], [], {}

    def hold(self, fn):
        i = len(self.threads)

        def run():
            try:
                self.results[i] = fn()
            except Exception as e:  # reported by release()
                self.results[i] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def accept(self):
        c, _ = self.ls.accept()
        c.settimeout(10 * SLOW)
        line = b""
        while not line.endswith(b"\n"):
            b = c.recv(64)
            assert b, "the app closed before saying its pid"
            line += b
        self.conns.append(c)
        return int(line)

    def release(self):
        for c in self.conns:
            c.sendall(b"go")
        for t in self.threads:
            t.join(20 * SLOW)
            assert not t.is_alive(), "a held request did not finish after release"
        for c in self.conns:
            c.close()
        self.conns = []
        out = [self.results[i] for i in range(len(self.threads))]
        for r in out:
            if isinstance(r, Exception):
                raise r
        return out

    def close(self):
        for c in self.conns:
            c.close()
        self.ls.close()


@pytest.fixture
def holder():
    h = Holder()
    yield h
    h.close()


# ---------------------------------------------------------------------------
# the stats server
# ---------------------------------------------------------------------------

def sconnect(addr, timeout=5 * SLOW):
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    return socket.create_connection(addr, timeout=timeout)


def stats_exchange(addr, data):
    s = sconnect(addr)
    try:
        if data:
            s.sendall(data)
        return recv_all(s, timeout=5 * SLOW)
    finally:
        s.close()


def stats_http(addr, path="/", method="GET"):
    """(status, {lower header: value}, body) of one request to the stats server."""
    raw = stats_exchange(addr, ("%s %s HTTP/1.1\r\nHost: stats\r\n\r\n" % (method, path)).encode())
    assert b"\r\n\r\n" in raw, "no HTTP head from the stats server: %r" % raw[:200]
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert re.fullmatch(r"HTTP/1\.1 \d{3} .+", lines[0]), lines[0]
    hdrs = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        assert k.lower() not in hdrs, "header %s twice" % k
        hdrs[k.lower()] = v.strip()
    if method == "HEAD":
        assert body == b"", "HEAD answered with a body: %r" % body[:100]
    else:
        assert int(hdrs["content-length"]) == len(body), (hdrs, len(body))
    return int(lines[0].split()[1]), hdrs, body


def strict_json(data):
    """json.loads that refuses invalid UTF-8, NaN/Infinity and repeated keys."""
    text = data.decode("utf-8")  # strict: raises on bytes that are not UTF-8

    def pairs(kv):
        keys = [k for k, _ in kv]
        assert len(keys) == len(set(keys)), "repeated key in %r" % keys
        return dict(kv)

    def no_constants(c):
        raise AssertionError("JSON constant %s is not JSON" % c)

    return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)


def stats_json(addr):
    status, hdrs, body = stats_http(addr, "/")
    assert status == 200 and hdrs["content-type"] == "application/json", (status, hdrs)
    return strict_json(body)


def stats_metrics(addr):
    status, hdrs, body = stats_http(addr, "/metrics")
    assert status == 200, status
    assert hdrs["content-type"] == "text/plain; version=0.0.4; charset=utf-8", hdrs
    return parse_prometheus(body.decode("utf-8"))


def workers_by_pid(js):
    return {w["pid"]: w for w in js["workers"]}


def eventually(check, timeout=5 * SLOW):
    """gangway counts a request when it finishes, just after the answer went
    out: a client can read the stats before its last request is counted.
    Poll until check() passes (bounded); its last AssertionError is the
    failure. Counters only grow, so a wrong value cannot pass by luck."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ---------------------------------------------------------------------------
# a strict Prometheus text-format (0.0.4) parser
# ---------------------------------------------------------------------------

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NUMBER_RE = re.compile(r"[+-]?(?:Inf|NaN|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


class PromError(AssertionError):
    pass


def _prom_unescape(s, allow_quote, where):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                raise PromError("dangling backslash: " + where)
            e = s[i + 1]
            if e == "\\":
                out.append("\\")
            elif e == "n":
                out.append("\n")
            elif e == '"' and allow_quote:
                out.append('"')
            else:
                raise PromError("bad escape \\%s: %s" % (e, where))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _prom_sample(line, where):
    m = NAME_RE.match(line)
    if not m:
        raise PromError("no metric name: " + where)
    name, i, labels = m.group(0), m.end(), {}
    try:
        if line[i] == "{":
            i += 1
            while line[i] != "}":
                m = LABEL_NAME_RE.match(line, i)
                if not m:
                    raise PromError("bad label name: " + where)
                lname, i = m.group(0), m.end()
                if lname.startswith("__"):
                    raise PromError("reserved label name %s: %s" % (lname, where))
                if line[i:i + 2] != '="':
                    raise PromError("label without =\"value\": " + where)
                i += 2
                start = i
                while line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
                value = _prom_unescape(line[start:i], True, where)
                i += 1
                if lname in labels:
                    raise PromError("label %s twice: %s" % (lname, where))
                labels[lname] = value
                if line[i] == ",":
                    i += 1
                    if line[i] == "}":
                        raise PromError("trailing comma: " + where)
                elif line[i] != "}":
                    raise PromError("junk after a label: " + where)
            i += 1
        if line[i] != " ":
            raise PromError("no single space before the value: " + where)
    except IndexError:
        raise PromError("truncated sample: " + where)
    value = line[i + 1:]
    if not NUMBER_RE.fullmatch(value):  # (no timestamps: gangway writes none)
        raise PromError("bad value %r: %s" % (value, where))
    return name, labels, float(value)


def parse_prometheus(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}; raises
    PromError on anything the 0.0.4 text format does not allow (and on what
    it allows but gangway has no reason to write: other comments, blank
    lines, timestamps)."""
    if not text.endswith("\n"):
        raise PromError("no final newline")
    fams, series, done, current = {}, set(), set(), None

    def enter(name, where):
        nonlocal current
        if name != current:
            if name in done:
                raise PromError("lines of %s are not together: %s" % (name, where))
            if current is not None:
                done.add(current)
            current = name

    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d: %r" % (n, line)
        if not line:
            raise PromError("blank " + where)
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.*)", line)
            if not m or not NAME_RE.fullmatch(m.group(2)):
                raise PromError("not a HELP or TYPE line: " + where)
            kind, name, rest = m.groups()
            enter(name, where)
            fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise PromError("%s after the samples: %s" % (kind, where))
            if kind == "HELP":
                if fam["help"] is not None:
                    raise PromError("second HELP: " + where)
                fam["help"] = _prom_unescape(rest, False, where)
            else:
                if fam["type"] is not None:
                    raise PromError("second TYPE: " + where)
                if rest not in ("counter", "gauge", "histogram"):
                    raise PromError("bad type: " + where)
                fam["type"] = rest
            continue
        name, labels, value = _prom_sample(line, where)
        fam_name = None
        if name in fams and fams[name]["type"] in ("counter", "gauge"):
            fam_name = name
        else:
            for suf in HIST_SUFFIXES:
                base = name[:-len(suf)]
                if name.endswith(suf) and base in fams and fams[base]["type"] == "histogram":
                    fam_name = base
        if fam_name is None:
            raise PromError("sample without a TYPE before it: " + where)
        enter(fam_name, where)
        key = (name, frozenset(labels.items()))
        if key in series:
            raise PromError("duplicate series: " + where)
        series.add(key)
        if math.isnan(value):
            raise PromError("NaN: " + where)
        if fams[fam_name]["type"] == "counter" and value < 0:
            raise PromError("negative counter: " + where)
        if name.endswith("_bucket") and fams[fam_name]["type"] == "histogram":
            if "le" not in labels or not NUMBER_RE.fullmatch(labels["le"]):
                raise PromError("bucket without a numeric le: " + where)
        elif "le" in labels and fams[fam_name]["type"] == "histogram":
            raise PromError("le on a non-bucket sample: " + where)
        fams[fam_name]["samples"].append((name, labels, value))
    for name, fam in fams.items():
        if fam["type"] is None:
            raise PromError("%s has no TYPE" % name)
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return fams


def _check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = frozenset((k, v) for k, v in labels.items() if k != "le")
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            g["buckets"].append((float(labels["le"]), value))
        elif sname == name + "_sum":
            g["sum"] = value
        else:
            g["count"] = value
    if not groups:
        raise PromError("histogram %s has no samples" % name)
    for rest, g in groups.items():
        les = [le for le, _ in g["buckets"]]
        counts = [c for _, c in g["buckets"]]
        if g["sum"] is None or g["count"] is None:
            raise PromError("histogram %s%s lacks _sum or _count" % (name, dict(rest)))
        if not les or les[-1] != math.inf:
            raise PromError("histogram %s has no le=\"+Inf\" bucket (last)" % name)
        if les != sorted(set(les)):
            raise PromError("histogram %s: le not strictly increasing: %r" % (name, les))
        if counts != sorted(counts):
            raise PromError("histogram %s: cumulative counts go down: %r" % (name, counts))
        if counts[-1] != g["count"]:
            raise PromError("histogram %s: +Inf bucket %s != _count %s"
                            % (name, counts[-1], g["count"]))


def sample(fams, name, **labels):
    """The value of the one series name{labels}."""
    for fam in fams.values():
        for sname, slabels, value in fam["samples"]:
            if sname == name and slabels == labels:
                return value
    raise AssertionError("no series %s%s" % (name, labels))


def series_of(fams, name):
    return [(labels, value) for fam in fams.values() for sname, labels, value in fam["samples"]
            if sname == name]


# ---------------------------------------------------------------------------
# 1. the stats server: addresses, endpoints, answers while workers are stuck
# ---------------------------------------------------------------------------

def listening_tcp_addresses(port):
    """Local addresses of LISTEN sockets on port (from /proc/net/tcp and tcp6)."""
    found = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(f) as fh:
            for line in list(fh)[1:]:
                parts = line.split()
                addr, p = parts[1].split(":")
                if int(p, 16) == port and parts[3] == "0A":
                    found.append(addr)
    return found


def test_stats_endpoints_on_a_bare_port(gangway):
    srv = start(gangway, workers=2, stats="0")
    addr = stats_addr(srv)
    assert addr[0] == "127.0.0.1"
    # a bare port binds loopback only: 127.0.0.1 as /proc/net/tcp writes it
    assert listening_tcp_addresses(addr[1]) == ["0100007F"]

    status, hdrs, body = stats_http(addr, "/")
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert hdrs["cache-control"] == "no-store" and hdrs["connection"] == "close"
    js = strict_json(body)
    assert js["pid"] == srv.pid and len(js["workers"]) == 2
    assert strict_json(stats_http(addr, "/?pretty=1")[2])["pid"] == srv.pid

    # uwsgitop style: connect, send nothing, get the same JSON and EOF
    t0 = time.monotonic()
    bare = stats_exchange(addr, b"")
    assert not bare.startswith(b"HTTP/"), bare[:100]
    bj = strict_json(bare)
    assert time.monotonic() - t0 < 4 * SLOW
    assert bj.keys() == js.keys() and bj["pid"] == srv.pid
    assert [(w["id"], w["pid"]) for w in bj["workers"]] == [
        (w["id"], w["pid"]) for w in js["workers"]]

    status, hdrs, body = stats_http(addr, "/metrics")
    assert status == 200 and hdrs["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse_prometheus(body.decode("utf-8"))
    assert sample(fams, "gangway_workers", state="idle") == 2

    status, hdrs, page = stats_http(addr, "/status")
    assert status == 200 and hdrs["content-type"] == "text/html; charset=utf-8"
    assert page.startswith(b"<!doctype html>") and b'<canvas id="chart"' in page

    for path in ("/nope", "/metrics/", "/statusx", "/favicon.ico"):
        status, hdrs, body = stats_http(addr, path)
        assert status == 404, path
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, hdrs, body = stats_http(addr, "/", method)
        assert status == 405 and hdrs["allow"] == "GET, HEAD", (method, status, hdrs)

    # HEAD: the GET head, no body
    status, hdrs, _ = stats_http(addr, "/status", "HEAD")
    assert status == 200 and int(hdrs["content-length"]) == len(page)
    for path in ("/", "/metrics"):
        status, hdrs, _ = stats_http(addr, path, "HEAD")
        assert status == 200 and int(hdrs["content-length"]) > 100, (path, hdrs)
    assert stats_http(addr, "/nope", "HEAD")[0] == 404


def test_stats_on_colon_port_and_unix_socket(gangway, tmp_path):
    srv = start(gangway, stats=":0")
    addr = stats_addr(srv)
    assert addr[0] == "127.0.0.1" and listening_tcp_addresses(addr[1]) == ["0100007F"]
    assert stats_json(addr)["pid"] == srv.pid

    path = str(tmp_path / "stats.sock")
    srv2 = start(gangway, stats=path)
    assert stats_addr(srv2) == path
    js = stats_json(path)
    assert js["pid"] == srv2.pid and len(js["workers"]) == 1
    assert strict_json(stats_exchange(path, b""))["pid"] == srv2.pid  # bare, on unix
    parse_prometheus(stats_http(path, "/metrics")[2].decode())
    assert srv2.stop() == 0
    assert not os.path.exists(path), "the stats socket was left behind"


def test_stats_answer_while_every_worker_is_stuck(gangway, holder):
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    pids = set(workers_by_pid(stats_json(addr)))
    target = "/block?port=%d" % holder.port
    # One after the other: a worker stuck in the app accepts nothing, so the
    # second request can only go to the other worker. (Sent together, both
    # may be accepted by the first worker before its app runs: the kernel
    # offers a connection already queued only to the worker it woke, which
    # takes it after its step back when the other took nothing.)
    t_sent = time.monotonic()
    holder.hold(lambda: call(srv, "GET", target)[1])
    held = {holder.accept()}
    holder.hold(lambda: call(srv, "GET", target)[1])
    held.add(holder.accept())
    t_inside = time.monotonic()
    assert held == pids, "both workers should be inside the app"

    # Both apps are stuck until we say so. Wait (bounded) until the stats
    # show them busy for a while, then check the age against our own clock.
    def both_busy_long():
        js = stats_json(addr)
        ws = js["workers"]
        return all(w["status"] == "busy" and w["current_ms"] >= 300 for w in ws) and js
    wait_for(both_busy_long, timeout=10 * SLOW, interval=0.02, what="workers busy >= 300 ms")
    ta = time.monotonic()
    js = stats_json(addr)
    tb = time.monotonic()
    for w in js["workers"]:
        assert w["status"] == "busy" and w["accepting"] == 1
        assert w["current"] == "GET " + target
        # The scoreboard's clock is CLOCK_MONOTONIC_COARSE, cached per loop
        # turn: allow 20 ms (two ticks at HZ=100) either way.
        lo, hi = (ta - t_inside) * 1000 - 20, (tb - t_sent) * 1000 + 20
        assert lo <= w["current_ms"] <= hi, (w["current_ms"], lo, hi)
    # A third request waits in the listen queue: nobody can accept it.
    waiting = srv.connect()
    waiting.sendall(raw_request("GET", "/ok?n=4"))
    js = wait_for(lambda: (lambda j: j["listen_queue"] == 1 and j)(stats_json(addr)),
                  timeout=5 * SLOW, what="one connection in the listen queue")
    assert js["sockets"][0]["queue"] == 1 and js["sockets"][0]["max_queue"] == 1024
    fams = stats_metrics(addr)
    assert sample(fams, "gangway_requests_in_flight") == 2
    assert sample(fams, "gangway_workers", state="busy") == 2
    assert sample(fams, "gangway_workers", state="idle") == 0
    assert [v for _, v in series_of(fams, "gangway_worker_busy")] == [1, 1]
    assert sample(fams, "gangway_connections") == 2
    assert sample(fams, "gangway_listen_queue", listener=js["sockets"][0]["name"]) == 1
    bare = strict_json(stats_exchange(addr, b""))
    assert [w["status"] for w in bare["workers"]] == ["busy", "busy"]
    assert stats_http(addr, "/status")[0] == 200
    assert srv.proc.poll() is None

    for r in holder.release():
        assert r.status == 200 and r.body == b"released\n"
    r = RawReader(waiting).read_response()
    waiting.close()
    assert r.status == 200 and r.body == b"oooo"

    def idle_again():
        js = stats_json(addr)
        for w in js["workers"]:
            assert w["status"] == "idle" and w["current"] is None and w["current_ms"] is None
        assert sorted(w["requests"] for w in js["workers"]) == [1, 2]
        assert js["totals"]["requests"] == 3 and js["listen_queue"] == 0
        assert sample(stats_metrics(addr), "gangway_requests_in_flight") == 0
    eventually(idle_again)


def test_worker_state_starting(gangway, tmp_path):
    """A worker still importing the app is "starting" (SIGTTIN adds one; its
    import waits at a gate the test holds)."""
    gate = tmp_path / "import-gate"
    srv = start(gangway, env={"OBS_IMPORT_GATE": str(gate)})
    addr = stats_addr(srv)
    gate.write_text("closed")
    srv.signal(signal.SIGTTIN)
    js = wait_for(lambda: (lambda j: len(j["workers"]) == 2 and j)(stats_json(addr)),
                  timeout=10 * SLOW, what="a second worker")
    assert [(w["id"], w["status"]) for w in js["workers"]] == [(1, "idle"), (2, "starting")]
    assert js["config"]["workers"] == 2
    fams = stats_metrics(addr)
    for state, n in (("starting", 1), ("idle", 1), ("busy", 0), ("stopping", 0)):
        assert sample(fams, "gangway_workers", state=state) == n, state
    gate.unlink()
    wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["idle", "idle"],
             timeout=20 * SLOW, what="worker 2 ready")
    assert stats_json(addr)["respawns"] == {r: 0 for r in REASONS}  # scaling is no respawn


def test_connections_waiting_on_their_request(gangway):
    """A connection whose request is still arriving (a partial head, or a
    body the client is still sending) is counted in connections_waiting
    until its request is whole or it closes: the accept step-back balances
    on connections less these."""
    srv = start(gangway)
    addr = stats_addr(srv)

    def counts():
        w = stats_json(addr)["workers"][0]
        return w["connections"], w["connections_waiting"]

    idle = srv.connect()  # no byte yet: a connection, not one waiting
    head = srv.connect()
    head.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n")
    body = srv.connect()
    body.sendall(b"POST /ok HTTP/1.1\r\nHost: obs.test\r\nContent-Length: 10\r\n\r\n12345")
    wait_for(lambda: counts() == (3, 2), timeout=5 * SLOW, what="two connections waiting")
    fams = stats_metrics(addr)
    assert sample(fams, "gangway_worker_connections_waiting", worker="1") == 2
    body.sendall(b"67890")  # whole: answered, kept alive
    r = RawReader(body).read_response()
    assert r.status == 200
    head.close()
    wait_for(lambda: counts() == (2, 0), timeout=5 * SLOW, what="none waiting")
    # a keep-alive connection's next request, partly sent, waits again
    body.sendall(b"GET /ok HTTP/1.1\r\n")
    wait_for(lambda: counts() == (2, 1), timeout=5 * SLOW, what="the second request waiting")
    body.sendall(b"Host: obs.test\r\n\r\n")
    assert RawReader(body).read_response().status == 200
    wait_for(lambda: counts() == (2, 0), timeout=5 * SLOW, what="none waiting")
    idle.close()
    body.close()


def test_connections_waiting_ends_on_every_way_out(gangway):
    """connections_waiting never outlives the request it counts (a count
    left up would skew the accept step-back for the worker's life): a
    client that leaves mid-head or mid-body, a head and a body timeout (408,
    then the lingering close), a bad chunk (400), a 100-continue upload, a
    pipelined request that arrives in part, and the uwsgi protocol's."""
    srv = start(gangway, "--header-timeout", "1", "--body-timeout", "1",
                "--uwsgi-socket", "127.0.0.1:0")
    addr = stats_addr(srv)
    uport = int(re.search(r"listening on uwsgi://127\.0\.0\.1:(\d+)", srv.read_log()).group(1))

    def counts():
        w = stats_json(addr)["workers"][0]
        return w["connections"], w["connections_waiting"]

    post = b"POST /items HTTP/1.1\r\nHost: obs.test\r\n"
    left_head, left_body, head_timeout, body_timeout, bad_chunk = (srv.connect()
                                                                  for _ in range(5))
    left_head.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n")
    left_body.sendall(post + b"Content-Length: 10\r\n\r\n123")
    head_timeout.sendall(b"GET /ok HTTP/1.1\r\n")
    body_timeout.sendall(post + b"Content-Length: 10\r\n\r\n1")
    bad_chunk.sendall(post + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    uw = socket.create_connection(("127.0.0.1", uport), timeout=10)
    env = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                   for k, v in ((b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/items"),
                                (b"CONTENT_LENGTH", b"4")))
    uw.sendall(b"\x00" + struct.pack("<H", len(env)) + b"\x00" + env + b"ab")
    wait_for(lambda: counts() == (6, 6), timeout=5 * SLOW, what="six requests waiting")
    left_head.close()
    left_body.close()
    bad_chunk.sendall(b"zz\r\n")
    assert RawReader(bad_chunk).read_response().status == 400
    uw.sendall(b"cd")
    assert recv_all(uw).startswith(b"HTTP/1.1 201 ")
    for c in (head_timeout, body_timeout):
        assert RawReader(c, timeout=5 * SLOW).read_response().status == 408
    for c in (bad_chunk, head_timeout, body_timeout, uw):
        c.close()
    wait_for(lambda: counts() == (0, 0), timeout=10 * SLOW, what="none open, none waiting")

    cont = srv.connect()
    rd = RawReader(cont)
    cont.sendall(post + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert rd.read_response().status == 100
    assert counts() == (1, 1)
    cont.sendall(b"abcd")
    assert rd.read_response().status == 201
    cont.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n\r\nGET /ok HTTP/1.1\r\nHo")
    assert rd.read_response().status == 200
    wait_for(lambda: counts() == (1, 1), timeout=5 * SLOW, what="the pipelined one waiting")
    cont.sendall(b"st: obs.test\r\nConnection: close\r\n\r\n")
    assert rd.read_response().status == 200
    cont.close()
    wait_for(lambda: counts() == (0, 0), timeout=5 * SLOW, what="none open, none waiting")


def pid_of(sock):
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n\r\n")
    r = RawReader(sock).read_response()
    assert r.status == 200
    return int(r.header("X-Pid"))


def test_new_connections_balance_past_slow_uploads(gangway):
    """Two workers; one holds 12 connections sending a body slowly, the
    other none. 12 keep-alive clients connecting together spread over both
    (the slow uploads are no load: the loop buffers them). Counting them,
    the worker with the uploads stepped back for nearly every new client,
    piling the busy ones on the other worker."""
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["idle", "idle"],
             timeout=10 * SLOW, what="both workers ready")
    # The other worker's connections stay open (idle keep-alive: load) while
    # the uploads pile up: closed at once, the two workers would tie, and a
    # tie goes to whichever worker the kernel wakes first, every time.
    held, others, target = [], [], None
    try:
        for _ in range(400):  # bounded: each connection lands on one of two workers
            if len(held) == 12:
                break
            c = srv.connect()
            pid = pid_of(c)
            target = target or pid
            if pid == target:
                c.sendall(b"POST /ok HTTP/1.1\r\nHost: obs.test\r\nContent-Length: 1000\r\n\r\nx")
                held.append(c)
            else:
                others.append(c)
    finally:
        for c in others:
            c.close()
    assert len(held) == 12, ("only %d uploads on worker %d (%d connections on the other): new "
                             "connections kept going to the other worker, as if the uploads "
                             "were load" % (len(held), target, len(others)))
    wait_for(lambda: {w["pid"]: (w["connections"], w["connections_waiting"])
                      for w in stats_json(addr)["workers"]}[target] == (12, 12),
             timeout=5 * SLOW, what="12 uploads waiting on worker %d" % target)
    # the other worker's closed connections gone too
    wait_for(lambda: sum(w["connections"] for w in stats_json(addr)["workers"]) == 12,
             timeout=5 * SLOW, what="only the uploads open")

    pids, errors, lock = [], [], threading.Lock()
    go = threading.Barrier(12)
    socks = []

    def client():
        try:
            go.wait(10)
            c = srv.connect()
            with lock:
                socks.append(c)
            p = pid_of(c)
            with lock:
                pids.append(p)
        except (OSError, EOFError, threading.BrokenBarrierError) as e:
            with lock:
                errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert not errors, errors
        on_target = pids.count(target)
        assert len(pids) == 12 and 4 <= on_target <= 8, \
            "new clients on the worker with the uploads: %d of %d" % (on_target, len(pids))
    finally:
        for c in socks + held:
            c.close()


def test_requests_still_arriving_spread_over_the_workers(gangway):
    """16 clients sending their heads in two parts, connecting together, on
    two workers of 2 threads: the requests spread over both. A connection
    still sending its request is no load, and with nothing else to tell
    the workers apart they all went where the kernel's wake-ups favour (16
    and 0, 13 and 3): once the heads were whole, one worker's threads
    queued every request while the other's were idle."""
    srv = start(gangway, "--threads", "2", workers=2)
    addr = stats_addr(srv)
    wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["idle", "idle"],
             timeout=10 * SLOW, what="both workers ready")
    socks = []
    try:
        for _ in range(16):
            c = srv.connect()
            c.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n")
            socks.append(c)
        per_worker = wait_for(
            lambda: (lambda ws: sum(w["connections_waiting"] for w in ws) == 16 and
                     sorted(w["connections_waiting"] for w in ws))(stats_json(addr)["workers"]),
            timeout=5 * SLOW, what="16 requests waiting")
        assert per_worker[0] >= 4, "waiting requests per worker: %s" % per_worker
        pids = []
        for c in socks:
            c.sendall(b"Connection: close\r\n\r\n")
        for c in socks:
            r = RawReader(c, timeout=5 * SLOW).read_response()
            assert r.status == 200
            pids.append(int(r.header("X-Pid")))
        assert min(pids.count(p) for p in set(pids)) >= 4 and len(set(pids)) == 2, \
            "answers per worker: %s" % sorted(pids.count(p) for p in set(pids))
    finally:
        for c in socks:
            c.close()


def test_accept_at_max_connections_leaves_the_next_connection_to_another_worker(gangway):
    """--max-connections 1 on two workers: the worker that took the first
    client's (kept alive) leaves epoll at once, and each next client is
    answered by the other. It left only at its next wake-up, which
    EPOLLEXCLUSIVE gives one worker: it paused without accepting, and the
    second client waited, the other worker idle, until a third came."""
    srv = start(gangway, "--max-connections", "1", workers=2)
    addr = stats_addr(srv)
    wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["idle", "idle"],
             timeout=10 * SLOW, what="both workers ready")
    first = srv.connect()
    held = pid_of(first)
    try:
        for i in range(3):
            c = srv.connect()
            c.sendall(raw_request("GET", "/ok"))
            try:
                r = RawReader(c, timeout=5 * SLOW).read_response()
            except socket.timeout:
                pytest.fail("client %d: no answer in %d s while worker %d holds its one "
                            "connection and the other is idle" % (i + 2, 5 * SLOW, held))
            finally:
                c.close()
            assert r.status == 200 and int(r.header("X-Pid")) != held
    finally:
        first.close()


def stopping_worker(srv, addr, partial_head):
    """-p 1 --max-requests 1: a connection holding a partial head keeps the
    worker, which recycles after one request, in "stopping"."""
    c = srv.connect()
    c.sendall(partial_head)
    wait_for(lambda: stats_json(addr)["workers"][0]["connections"] == 1, timeout=5 * SLOW,
             what="the partial request accepted")
    assert call(srv, "GET", "/ok")[1].status == 200  # the one request: recycling starts
    # (the answered connection may still be counted for a moment)
    js = wait_for(lambda: (lambda j: j["workers"][0]["status"] == "stopping" and
                           j["workers"][0]["connections"] == 1 and j)(stats_json(addr)),
                  timeout=5 * SLOW, what="worker 1 stopping, holding the partial request")
    return c, js


def test_worker_state_stopping(gangway):
    srv = start(gangway, "--max-requests", "1")
    addr = stats_addr(srv)
    pid = stats_json(addr)["workers"][0]["pid"]
    c, js = stopping_worker(srv, addr, b"GET /ok?n=3 HTTP/1.1\r\nHost: obs.test\r\n")
    w = js["workers"][0]
    assert (w["pid"], w["accepting"], w["connections"], w["current"]) == (pid, 0, 1, None)
    fams = stats_metrics(addr)
    assert sample(fams, "gangway_workers", state="stopping") == 1
    # (it was told to stop once its replacement served, in a slot of its own)
    assert sample(fams, "gangway_workers", state="idle") == 1
    c.sendall(b"\r\n")  # the rest of the head: served, then the worker goes
    r = RawReader(c).read_response()
    c.close()
    assert r.status == 200 and r.body == b"ooo" and r.header("connection") == "close"
    js = wait_for(lambda: (lambda j: j["respawns"]["max-requests"] == 1 and
                           j["workers"][0]["pid"] != pid and j)(stats_json(addr)),
                  timeout=10 * SLOW, what="worker 1 replaced")
    assert js["totals"]["requests"] == 2 and js["workers"][0]["respawn_count"] == 1


def test_requests_in_flight_counts_a_stopping_workers_request(gangway, holder):
    """A recycling worker that runs the app for a request it still had is
    "stopping" and busy: gangway_requests_in_flight should count it, as
    gangway_worker_busy does."""
    srv = start(gangway, "--max-requests", "1")
    addr = stats_addr(srv)
    c, _ = stopping_worker(srv, addr, b"GET /block?port=%d HTTP/1.1\r\nHost: obs.test\r\n"
                           % holder.port)
    c.sendall(b"\r\n")
    holder.accept()  # the app runs, in a stopping worker
    try:
        js = stats_json(addr)
        w = js["workers"][0]
        assert w["status"] == "stopping" and w["current"].startswith("GET /block?")
        fams = stats_metrics(addr)
    finally:
        holder.release()
        c.close()
    assert sample(fams, "gangway_worker_busy", worker="1") == 1
    assert sample(fams, "gangway_requests_in_flight") == 1


def test_busy_uwsgi_request_with_bytes_that_are_not_utf8_keeps_the_json_valid(gangway, holder):
    """The scoreboard's `current` holds the request target as it came; over
    the uwsgi protocol (nginx passes REQUEST_URI raw) that can be any bytes.
    The JSON must stay UTF-8, each stray byte as U+FFFD."""
    srv = start(gangway, "--uwsgi", "127.0.0.1:0")
    addr = stats_addr(srv)
    from test_uwsgi import exchange, parse, request_packet
    junk = (b"\xed\xa0\x80"          # a UTF-16 surrogate, UTF-8-encoded
            b"\xe0\x80\xaf"          # an overlong '/'
            b"\xff\x80\x80"          # 0xff is never UTF-8
            b"\xf4\x90\x80\x80"      # above U+10FFFF
            b"-\xc3\xa9")            # and a valid e-acute
    uri = b"/block?port=%d&x=" % holder.port + junk
    holder.hold(lambda: parse(exchange(srv, request_packet(uri=uri.decode("latin-1")))))
    holder.accept()
    status, _, body = stats_http(addr, "/")
    holder.release()
    assert status == 200
    js = strict_json(body)  # raises UnicodeDecodeError on raw invalid bytes
    assert js["workers"][0]["current"] == ("GET " + uri.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------
# 2. exact counters, across workers and respawns
# ---------------------------------------------------------------------------

def check_workers_sum_to_totals(js):
    t = js["totals"]
    for key in ("requests", "rx", "tx", "harakiri_count"):
        assert sum(w[key] for w in js["workers"]) == t[key], key
    for group in ("status_classes", "methods"):
        for k in t[group]:
            assert sum(w[group][k] for w in js["workers"]) == t[group][k], (group, k)
    for i, b in enumerate(t["latency_us"]["buckets"]):
        assert sum(w["latency_us"]["buckets"][i]["count"] for w in js["workers"]) == b["count"]


def check_metrics_match_json(fams, js):
    t = js["totals"]
    for c in CLASSES:
        assert sample(fams, "gangway_requests_total", status=c) == t["status_classes"][c], c
    for m in METHODS:
        assert sample(fams, "gangway_requests_by_method_total", method=m) == t["methods"][m], m
    assert sample(fams, "gangway_request_duration_seconds_count") == t["requests"]
    assert sample(fams, "gangway_request_duration_seconds_bucket", le="+Inf") == t["requests"]
    assert sample(fams, "gangway_sent_bytes_total") == t["tx"]
    assert sample(fams, "gangway_received_bytes_total") == t["rx"]
    for r in REASONS:
        assert sample(fams, "gangway_worker_respawns_total", reason=r) == js["respawns"][r], r
    per_worker = {l["worker"]: v for l, v in series_of(fams, "gangway_worker_requests_total")}
    assert per_worker == {str(w["id"]): w["requests"] for w in js["workers"]}


def expect_counts(js, requests, classes, methods):
    t = js["totals"]
    assert t["requests"] == requests
    assert t["status_classes"] == {c: classes.get(c, 0) for c in CLASSES}
    assert t["methods"] == {m: methods.get(m, 0) for m in METHODS}
    assert sum(b["count"] for b in t["latency_us"]["buckets"]) == requests
    assert t["harakiri_count"] == 0


def test_exact_counters_survive_a_crash_and_a_recycle(gangway, holder):
    M = 60  # --max-requests: above what one worker serves before phase 3
    srv = start(gangway, "--max-requests", str(M), "--limit-body", "4096",
                "--limit-request-headers", "4096", workers=2)
    addr = stats_addr(srv)
    rx = tx = 0
    count_of = {}  # pid -> the app's own request count (X-Count), latest seen

    def do(method, target, status, body=b"", headers=()):
        nonlocal rx, tx
        raw, r = call(srv, method, target, headers, body)
        assert r.status == status, (method, target, r.status, r.body[:200])
        rx += len(raw)
        tx += len(r.body)
        if r.header("x-pid"):
            count_of[int(r.header("x-pid"))] = int(r.header("x-count"))
        return r

    # Phase 1: what the app answers. Worker X is held in the app while 20
    # GETs go to worker Y (the only one accepting), so both serve.
    raw_block = raw_request("GET", "/block?port=%d" % holder.port)
    holder.hold(lambda: request(srv, raw_block))
    pid_x = holder.accept()
    for i in range(20):
        r = do("GET", "/ok?n=%d" % i, 200)
        assert r.body == b"o" * i and int(r.header("x-pid")) != pid_x
    (r,) = holder.release()
    assert r.status == 200 and r.body == b"released\n"
    rx, tx = rx + len(raw_block), tx + len(r.body)
    count_of[pid_x] = int(r.header("x-count"))
    for i in range(16):
        do("GET", "/ok?n=%d" % (100 + i), 200)
    for size in (1, 10, 100, 1000, 3000):
        r = do("POST", "/items", 201, body=bytes(range(256)) * (size // 256) + b"b" * (size % 256))
        assert r.body == b"stored %d bytes" % size
    for _ in range(4):
        do("GET", "/missing", 404)
    for _ in range(2):
        r = do("HEAD", "/ok?n=50", 200)
        assert r.header("content-length") == "50" and r.body == b""
    def phase1():
        js = stats_json(addr)
        expect_counts(js, 48, {"2xx": 44, "4xx": 4}, {"GET": 41, "POST": 5, "HEAD": 2})
        assert js["totals"]["rx"] == rx, "rx: request heads and bodies"
        assert js["totals"]["tx"] == tx, "tx: response bodies (HEAD: none)"
        check_workers_sum_to_totals(js)
        assert all(w["requests"] > 0 for w in js["workers"]), "both workers served"
        check_metrics_match_json(stats_metrics(addr), js)
        return js
    js1 = eventually(phase1)

    # Phase 2: 500s from app exceptions and requests gangway refuses itself.
    boom_raw = err_bodies = 0
    for _ in range(3):
        raw, r = call(srv, "GET", "/boom")
        assert r.status == 500
        boom_raw, err_bodies = boom_raw + len(raw), err_bodies + len(r.body)
    bad = [(raw_request("GET", "/", host=False), 400),                   # no Host
           (b"GARBAGE\r\n\r\n", 400),                                     # no method
           (b"POST /items HTTP/1.1\r\nHost: obs.test\r\nContent-Length: 100000\r\n\r\n", 413),
           (raw_request("GET", "/ok", [("X-Big", "b" * 5000)]), 431)]
    for raw, status in bad:
        r = request(srv, raw)
        assert r.status == status, raw[:60]
        err_bodies += len(r.body)
    def phase2():
        js = stats_json(addr)
        expect_counts(js, 55, {"2xx": 44, "4xx": 8, "5xx": 3},
                      {"GET": 41 + 3 + 2, "POST": 5 + 1, "HEAD": 2, "other": 1})
        # What bytes refused requests count is pinned by the tests below
        # (test_tx_counts_..., test_rx_counts_...); here only that the app's
        # requests are in and nothing is invented.
        assert js1["totals"]["rx"] + boom_raw <= js["totals"]["rx"] <= (
            js1["totals"]["rx"] + boom_raw + sum(len(r) for r, _ in bad))
        assert js1["totals"]["tx"] <= js["totals"]["tx"] <= js1["totals"]["tx"] + err_bodies
        check_workers_sum_to_totals(js)
        check_metrics_match_json(stats_metrics(addr), js)
        return js
    js2 = eventually(phase2)

    # Phase 3: SIGKILL one worker, then make the other recycle itself.
    seen, stop = [], threading.Event()

    def watch_totals():  # the totals must never go down, whatever happens
        while not stop.is_set():
            j = stats_json(addr)
            seen.append((j["totals"]["requests"], j["totals"]["tx"],
                         sum(b["count"] for b in j["totals"]["latency_us"]["buckets"])))
            stop.wait(0.005)
    watcher = threading.Thread(target=watch_totals, daemon=True)
    watcher.start()
    try:
        victim = js2["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)

        def respawned():
            j = stats_json(addr)
            w = j["workers"][0]
            return (j["respawns"]["crash"] == 1 and w["pid"] != victim["pid"]
                    and w["status"] == "idle" and j)
        js3 = wait_for(respawned, timeout=15 * SLOW, what="worker 1 respawned")
        expect_counts(js3, 55, {"2xx": 44, "4xx": 8, "5xx": 3},
                      {"GET": 46, "POST": 6, "HEAD": 2, "other": 1})
        assert js3["totals"]["rx"] == js2["totals"]["rx"]
        assert js3["totals"]["tx"] == js2["totals"]["tx"]
        assert js3["workers"][0]["requests"] == 0 and js3["workers"][0]["respawn_count"] == 1
        count_of.pop(victim["pid"], None)

        # Every app answer says its worker's count: stop at the request
        # that makes one worker reach M (the other is below M then).
        loop_rx, loop_n, recycled = 0, 0, None
        for _ in range(2 * M + 10):
            raw, r = call(srv, "GET", "/ok?n=5")
            assert r.status == 200
            loop_rx, loop_n = loop_rx + len(raw), loop_n + 1
            pid, n = int(r.header("x-pid")), int(r.header("x-count"))
            count_of[pid] = n
            if n == M:
                recycled = pid
                break
        assert recycled, count_of
        print("recycled pid %d after %d more requests; counts %r" % (recycled, loop_n, count_of))
        assert all(n < M for p, n in count_of.items() if p != recycled), count_of

        def recycled_done():
            j = stats_json(addr)
            return (j["respawns"]["max-requests"] == 1 and recycled not in workers_by_pid(j)
                    and len(j["workers"]) == 2 and all(w["status"] == "idle" for w in j["workers"])
                    and j)
        wait_for(recycled_done, timeout=15 * SLOW, what="the recycled worker replaced")
    finally:
        stop.set()
        watcher.join(10)
    # The recycled worker served until its replacement did, which took a
    # free slot of its own: the survivor keeps its count, the replacement's
    # slot counts the respawn.
    expected_respawns = {w["id"]: w["respawn_count"] for w in js3["workers"]
                         if w["pid"] != recycled}
    new_ids = {w["id"] for w in stats_json(addr)["workers"]} - set(expected_respawns)
    assert len(new_ids) == 1 and not new_ids & {w["id"] for w in js3["workers"]}, new_ids
    expected_respawns[new_ids.pop()] = 1

    def phase3():
        js = stats_json(addr)
        expect_counts(js, 55 + loop_n, {"2xx": 44 + loop_n, "4xx": 8, "5xx": 3},
                      {"GET": 46 + loop_n, "POST": 6, "HEAD": 2, "other": 1})
        assert js["totals"]["rx"] == js2["totals"]["rx"] + loop_rx
        assert js["totals"]["tx"] == js2["totals"]["tx"] + 5 * loop_n
        assert js["respawns"] == dict({r: 0 for r in REASONS}, crash=1, **{"max-requests": 1})
        assert {w["id"]: w["respawn_count"] for w in js["workers"]} == expected_respawns
        fams = stats_metrics(addr)
        check_metrics_match_json(fams, js)
        assert sample(fams, "gangway_worker_respawns_total", reason="crash") == 1
        assert sample(fams, "gangway_worker_respawns_total", reason="max-requests") == 1
    eventually(phase3)
    assert len(seen) > 3
    for a, b in zip(seen, seen[1:]):
        assert all(y >= x for x, y in zip(a, b)), "totals went down: %r -> %r" % (a, b)


def test_totals_survive_a_graceful_reload(gangway):
    """SIGHUP: a new generation replaces every worker; the old ones' counts
    stay in the totals and a reload is not a respawn."""
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    tx = 0
    for i in range(12):
        r = call(srv, "GET", "/ok?n=%d" % i)[1]
        tx += len(r.body)
    old = set(workers_by_pid(stats_json(addr)))
    srv.signal(signal.SIGHUP)

    def reloaded():
        js = stats_json(addr)
        ws = js["workers"]
        assert js["generation"] == 2 and len(ws) == 2
        assert all(w["generation"] == 2 and w["status"] == "idle" for w in ws), ws
        assert not old & set(workers_by_pid(js))
        return js
    js = eventually(reloaded, timeout=20 * SLOW)
    expect_counts(js, 12, {"2xx": 12}, {"GET": 12})
    assert js["totals"]["tx"] == tx and all(w["requests"] == 0 for w in js["workers"])
    assert js["respawns"] == {r: 0 for r in REASONS}
    assert {w["respawn_count"] for w in js["workers"]} == {0}
    check_metrics_match_json(stats_metrics(addr), js)


def test_tx_counts_the_bodies_gangway_sends_for_errors(gangway):
    """tx (sent bytes) is response body bytes: the "Internal Server Error\\n"
    gangway writes after an app exception and the bodies of its own 400/413
    answers are response bodies too (the access log's bytes field shows 0
    for them as well)."""
    srv = start(gangway, "--limit-body", "10")
    addr = stats_addr(srv)
    sent = 0
    for raw in (raw_request("GET", "/boom"), raw_request("GET", "/", host=False),
                b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n"):
        r = request(srv, raw)
        assert r.status in (500, 400, 413) and len(r.body) > 0
        sent += len(r.body)
    def counted():  # (the histogram is bumped after the bytes)
        js = stats_json(addr)
        assert sum(b["count"] for b in js["totals"]["latency_us"]["buckets"]) == 3
        return js
    tx = eventually(counted)["totals"]["tx"]
    assert tx == sent, "tx %d, but %d body bytes were sent" % (tx, sent)


def test_rx_counts_the_head_of_a_request_refused_for_its_body(gangway):
    """A 413 answers a complete, parsed head (the body was never read): its
    bytes were received like any other head."""
    srv = start(gangway, "--limit-body", "10")
    addr = stats_addr(srv)
    head = b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n"
    assert request(srv, head).status == 413
    assert stats_json(addr)["totals"]["rx"] == len(head)


# ---------------------------------------------------------------------------
# 3. the latency histogram against measured durations
# ---------------------------------------------------------------------------

def bucket_of(us):
    """Index of the bucket a duration falls in (le is inclusive, as in gangway)."""
    for i, b in enumerate(BOUNDS_US):
        if us <= b:
            return i
    return len(BOUNDS_US)


def test_histogram_matches_measured_latencies(gangway):
    srv = start(gangway)
    addr = stats_addr(srv)
    # Sleeps just above a bucket's lower bound, so that what the client adds
    # (connect, read, Python) stays far below the upper one: 25..50 ms,
    # 100..250 ms, 0.25..1 s.
    plan = [0, 0, 0, 0, 0.027, 0.027, 0.027, 0.12, 0.12, 0.12, 0.3, 0.3]
    lo, hi = [], []  # bounds of each request's duration as gangway measures it
    for s in plan:
        raw = raw_request("GET", "/sleep?s=%s" % s)
        t0 = time.monotonic_ns()
        r = request(srv, raw)
        client_us = (time.monotonic_ns() - t0) / 1000
        assert r.status == 200
        app_us = json.loads(r.body)["app_us"]
        assert app_us >= s * 1e6
        # gangway's clock starts after our send and stops before our read
        # completes, and includes the whole app call; +-2 us covers its
        # truncation to whole microseconds at both ends.
        lo.append(app_us - 2)
        hi.append(client_us + 2)
    n = len(plan)

    def settled():
        js, fams = stats_json(addr), stats_metrics(addr)
        assert js["totals"]["requests"] == n
        assert sample(fams, "gangway_request_duration_seconds_count") == n
        # (_sum is the last counter a finishing request bumps)
        assert round(sample(fams, "gangway_request_duration_seconds_sum") * 1e6) >= sum(lo)
        return js, fams
    js, fams = eventually(settled)
    t = js["totals"]

    # Each bucket's cumulative count is bracketed by the requests certainly
    # below its bound and those possibly below it.
    buckets = series_of(fams, "gangway_request_duration_seconds_bucket")
    assert [l["le"] for l, _ in buckets][:-1] == ["%g" % (b / 1e6) for b in BOUNDS_US]
    assert [float(l["le"]) * 1e6 for l, _ in buckets][:-1] == pytest.approx(BOUNDS_US)
    cum = [v for _, v in buckets]
    for i, bound in enumerate(BOUNDS_US):
        surely = sum(1 for h in hi if h <= bound)
        maybe = sum(1 for l in lo if l <= bound)
        assert surely <= cum[i] <= maybe, (bound, surely, cum[i], maybe)
    assert cum[-1] == n and sample(fams, "gangway_request_duration_seconds_count") == n
    # JSON: the same histogram, per bucket
    jb = t["latency_us"]["buckets"]
    assert [b["le"] for b in jb] == BOUNDS_US + [None]
    assert [sum(b["count"] for b in jb[:i + 1]) for i in range(len(jb))] == cum
    # Per bucket: at least the requests that can only be in it, at most
    # those that can be in it.
    for b in range(len(jb)):
        only = sum(1 for l, h in zip(lo, hi) if bucket_of(l) == bucket_of(h) == b)
        can = sum(1 for l, h in zip(lo, hi) if bucket_of(l) <= b <= bucket_of(h))
        assert only <= jb[b]["count"] <= can, (b, only, jb[b]["count"], can)
    # The sleeping requests' buckets are known outright, so they are exact.
    for s, want in ((0.027, 8), (0.12, 10), (0.3, 11)):
        mine = [(l, h) for p, l, h in zip(plan, lo, hi) if p == s]
        assert all(bucket_of(l) == bucket_of(h) == want for l, h in mine), (s, mine)
        others = [(l, h) for p, l, h in zip(plan, lo, hi) if p != s]
        assert not any(bucket_of(l) <= want <= bucket_of(h) for l, h in others)
        assert jb[want]["count"] == len(mine), (s, jb[want])

    # _sum is the sum of the durations: between the sums of the bounds
    sum_us = round(sample(fams, "gangway_request_duration_seconds_sum") * 1e6)
    assert sum(lo) <= sum_us <= sum(hi), (sum(lo), sum_us, sum(hi))
    assert t["latency_us"]["avg"] == t["avg_rt"] == sum_us // n

    # p50/p90/p99 lie in the bucket that holds the true quantile: the k-th
    # smallest duration, k = ceil(p*n), is between the k-th smallest bounds.
    edges = [0] + BOUNDS_US
    for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        k = math.ceil(p * n)
        b_lo, b_hi = bucket_of(sorted(lo)[k - 1]), bucket_of(sorted(hi)[k - 1])
        v = t["latency_us"][name]
        assert isinstance(v, int)
        top = BOUNDS_US[b_hi] if b_hi < len(BOUNDS_US) else BOUNDS_US[-1]
        assert edges[b_lo] <= v <= top, (name, v, edges[b_lo], top)
    # with these sleeps the quantile buckets are known outright
    assert 25000 <= t["latency_us"]["p50"] <= 50000
    assert 250000 <= t["latency_us"]["p90"] <= 1000000
    assert 250000 <= t["latency_us"]["p99"] <= 1000000


# ---------------------------------------------------------------------------
# 4. formats: strict Prometheus, JSON fields
# ---------------------------------------------------------------------------

def test_prometheus_parser_is_strict():
    """The parser used above refuses what the format refuses (so a pass means
    something)."""
    ok = ('# HELP a_total Things with \\\\ and \\n.\n# TYPE a_total counter\n'
          'a_total{x="q\\"\\\\\\n",y="2"} 3\n'
          '# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.7\n'
          'h_count 2\n')
    fams = parse_prometheus(ok)
    assert sample(fams, "a_total", x='q"\\\n', y="2") == 3
    bad = [
        "a 1\n",                                            # no TYPE
        "# TYPE a counter\na 1",                            # no final newline
        "# TYPE a counter\na{x=\"1\"} 1\na{x=\"1\"} 2\n",   # duplicate series
        "# TYPE a counter\na{x=\"\\t\"} 1\n",               # bad escape
        "# TYPE a counter\na{x=\"1\",} 1\n",                # trailing comma
        "# TYPE a counter\na{x=\"1\" } 1\n",                # junk after a label
        "# TYPE a counter\na  1\n",                         # two spaces
        "# TYPE a counter\na 1 123\n",                      # a timestamp
        "# TYPE a counter\na one\n",                        # not a number
        "# TYPE a counter\na -1\n",                         # negative counter
        "# TYPE a counter\n\na 1\n",                        # blank line
        "# TYPE a counter\n# just a comment\na 1\n",        # other comment
        "# TYPE a summary\na 1\n",                          # a type gangway has no use for
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n",  # not together
        "# TYPE a counter\na 1\n# HELP a late\n",           # HELP after samples
        "# TYPE 1a counter\n1a 1\n",                        # bad name
        "# TYPE a counter\na{1x=\"1\"} 1\n",                # bad label name
        "# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n",         # label twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",      # no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",  # +Inf != count
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",          # no _sum
        "# TYPE h histogram\nh 1\n",                                          # bare name
    ]
    for text in bad:
        with pytest.raises(PromError):
            parse_prometheus(text)


def test_metrics_and_json_are_well_formed(gangway):
    srv = start(gangway, "--uwsgi", "127.0.0.1:0", workers=2)
    addr = stats_addr(srv)
    call(srv, "GET", "/ok")
    call(srv, "POST", "/items", body=b"abc")
    call(srv, "GET", "/boom")
    call(srv, "OPTIONS", "/ok")
    request(srv, b"PROPFIND /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    def five_counted():
        f = stats_metrics(addr)
        assert sample(f, "gangway_request_duration_seconds_count") == 5
        return f
    fams = eventually(five_counted)
    types = {name: f["type"] for name, f in fams.items()}
    assert types == {
        "gangway_info": "gauge", "gangway_uptime_seconds": "gauge",
        "gangway_requests_total": "counter", "gangway_requests_by_method_total": "counter",
        "gangway_request_duration_seconds": "histogram", "gangway_requests_in_flight": "gauge",
        "gangway_workers": "gauge", "gangway_connections": "gauge",
        "gangway_worker_respawns_total": "counter", "gangway_harakiri_total": "counter",
        "gangway_received_bytes_total": "counter", "gangway_sent_bytes_total": "counter",
        "gangway_listen_queue": "gauge", "gangway_listen_queue_max": "gauge",
        "gangway_worker_requests_total": "counter", "gangway_worker_busy": "gauge",
        "gangway_worker_connections": "gauge", "gangway_worker_connections_waiting": "gauge",
        "gangway_worker_resident_memory_bytes": "gauge",
        "gangway_queue_wait_seconds": "histogram", "gangway_queue_timeouts_total": "counter",
        "gangway_worker_threads": "gauge", "gangway_worker_threads_busy": "gauge",
        "gangway_worker_requests_queued": "gauge"}
    assert all(f["help"] for f in fams.values())
    # counters end in _total (Prometheus naming)
    assert all(n.endswith("_total") for n, t in types.items() if t == "counter")
    assert sample(fams, "gangway_requests_by_method_total", method="OPTIONS") == 1
    assert sample(fams, "gangway_requests_by_method_total", method="other") == 1
    listeners = sorted(l["listener"] for l, _ in series_of(fams, "gangway_listen_queue_max"))
    assert len(listeners) == 2 and all(l.startswith(("http://127.0.0.1:", "uwsgi://127.0.0.1:"))
                                       for l in listeners)
    assert all(v == 1024 for _, v in series_of(fams, "gangway_listen_queue_max"))

    js = stats_json(addr)
    top = {"version": str, "pid": int, "uid": int, "gid": int, "cwd": str, "uptime": int,
           "started": int, "time": int, "generation": int, "sockets": list,
           "listen_queue": int, "config": dict, "totals": dict, "respawns": dict,
           "workers": list}
    assert set(js) == set(top)
    for k, ty in top.items():
        assert type(js[k]) is ty, k
    assert js["version"] == sample_label(fams, "gangway_info", "version")
    assert abs(js["time"] - time.time()) < 5 and js["started"] <= js["time"]
    assert [(s["proto"], s["name"]) for s in js["sockets"]] == [
        ("http", listeners[0]), ("uwsgi", listeners[1])]
    for s in js["sockets"]:
        assert set(s) == {"name", "proto", "queue", "max_queue"}
        assert s["max_queue"] == 1024 and s["queue"] == 0
    assert set(js["config"]) == {"workers", "harakiri", "max_requests", "max_requests_jitter",
                                 "max_worker_lifetime", "reload_on_rss", "preload",
                                 "max_connections", "limit_body"}
    assert js["config"]["workers"] == 2 and js["config"]["preload"] is False
    assert js["respawns"] == {r: 0 for r in REASONS}
    check_counts_shape(js["totals"])
    assert js["totals"]["requests"] == 5
    assert [w["id"] for w in js["workers"]] == [1, 2]
    wkeys = {"id", "pid", "status", "accepting", "requests", "rx", "tx", "harakiri_count",
             "status_classes", "methods", "avg_rt", "latency_us", "connections", "rss", "vsz",
             "running_time", "last_spawn", "respawn_count", "generation", "current",
             "current_ms", "threads", "threads_busy", "queued", "queue_timeouts",
             "queue_wait_us", "connections_waiting"}
    for w in js["workers"]:
        assert set(w) == wkeys
        check_counts_shape(w)
        assert w["status"] in ("idle", "busy", "starting", "stopping")
        assert w["status"] == "idle" and w["current"] is None and w["current_ms"] is None
        for k in ("pid", "accepting", "connections", "connections_waiting", "rss", "vsz",
                  "running_time", "last_spawn", "respawn_count", "generation"):
            assert type(w[k]) is int and w[k] >= 0, k
        assert w["rss"] > 1 << 20 and w["vsz"] >= w["rss"]
        assert abs(w["last_spawn"] - js["time"]) < 60
        with open("/proc/%d/stat" % w["pid"]) as f:
            assert int(f.read().split(")")[1].split()[1]) == srv.pid  # the master's child
        rss = sample(fams, "gangway_worker_resident_memory_bytes", worker=str(w["id"]))
        assert rss > 1 << 20


def test_threads_busy_queued_and_queue_wait(gangway, holder):
    """--threads (issue 16): busy and idle threads, requests waiting for a
    thread, the wait's histogram and --queue-timeout's 503s, in the JSON and
    the metrics (the status page reads the JSON)."""
    srv = start(gangway, "--threads", "2", "--queue-timeout", "1")
    addr = stats_addr(srv)
    fams = stats_metrics(addr)
    assert sample(fams, "gangway_worker_threads", worker="1") == 2
    assert sample(fams, "gangway_worker_threads_busy", worker="1") == 0
    # two held requests take both threads; two more wait for one
    for _ in range(2):
        holder.hold(lambda: call(srv, "GET", "/block?port=%d" % holder.port)[1])
    holder.accept()
    holder.accept()
    late = []
    waiting = [threading.Thread(target=lambda: late.append(call(srv, "GET", "/ok")))
               for _ in range(2)]
    for t in waiting:
        t.start()

    def both_busy_two_queued():
        js = stats_json(addr)
        w = js["workers"][0]
        f = stats_metrics(addr)
        return (w["threads"] == 2 and w["threads_busy"] == 2 and w["queued"] == 2 and
                w["status"] == "busy" and
                sample(f, "gangway_worker_threads_busy", worker="1") == 2 and
                sample(f, "gangway_worker_requests_queued", worker="1") == 2 and
                sample(f, "gangway_requests_in_flight") == 2 and (js, f))
    js, f = wait_for(both_busy_two_queued, 10 * SLOW, what="two busy threads, two queued")
    # past --queue-timeout the two waiting ones are answered 503
    for t in waiting:
        t.join(10)
        assert not t.is_alive()
    holder.release()

    def settled():
        js = stats_json(addr)
        f = stats_metrics(addr)
        return (js["totals"]["queue_timeouts"] == 2 and
                sample(f, "gangway_queue_timeouts_total") == 2 and
                js["workers"][0]["threads_busy"] == 0 and
                sum(b["count"] for b in js["totals"]["queue_wait_us"]["buckets"]) >= 2 and
                sample(f, "gangway_queue_wait_seconds_count") >= 2 and (js, f))
    js, f = wait_for(settled, 10 * SLOW, what="two queue timeouts counted")
    assert js["totals"]["status_classes"]["5xx"] == 2
    assert sorted(r[1].status for r in late) == [503, 503], late


def sample_label(fams, name, label):
    (labels, _), = series_of(fams, name)
    return labels[label]


def check_counts_shape(c):
    for k in ("requests", "rx", "tx", "harakiri_count", "avg_rt"):
        assert type(c[k]) is int and c[k] >= 0, k
    assert list(c["status_classes"]) == CLASSES
    assert list(c["methods"]) == METHODS
    assert sum(c["status_classes"].values()) == c["requests"] == sum(c["methods"].values())
    lat = c["latency_us"]
    assert list(lat) == ["avg", "p50", "p90", "p99", "buckets"]
    assert all(type(lat[k]) is int for k in ("avg", "p50", "p90", "p99"))
    assert lat["p50"] <= lat["p90"] <= lat["p99"]
    assert [b["le"] for b in lat["buckets"]] == BOUNDS_US + [None]
    assert sum(b["count"] for b in lat["buckets"]) == c["requests"]
    assert type(c["queue_timeouts"]) is int and c["queue_timeouts"] >= 0
    qw = c["queue_wait_us"]
    assert list(qw) == ["sum", "p99", "buckets"]
    assert [b["le"] for b in qw["buckets"]] == BOUNDS_US + [None]


# ---------------------------------------------------------------------------
# 5. access logs
# ---------------------------------------------------------------------------

def expected_json_text(b):
    """What a JSON log value should decode to: well-formed UTF-8 as itself,
    any other byte as the Latin-1 character of that byte."""
    out, i = [], 0
    while i < len(b):
        c = b[i]
        n = 2 if 0xc2 <= c < 0xe0 else 3 if 0xe0 <= c < 0xf0 else 4 if 0xf0 <= c < 0xf5 else 0
        if n:
            try:
                out.append(b[i:i + n].decode("utf-8"))
                i += n
                continue
            except UnicodeDecodeError:
                pass
        out.append(chr(c))
        i += 1
    return "".join(out)


def escaped_text(b):
    """A text-format log value: quotes, backslashes, control and non-ASCII
    bytes as \\xHH (src/core/log.c put_escaped)."""
    return "".join("\\x%02x" % c if c < 0x20 or c >= 0x7f or c in b'"\\' else chr(c) for c in b)


def read_lines(path, n, timeout=10 * SLOW):
    """The access log's lines once it has n of them (it is flushed once per
    loop turn, after the answer went out)."""
    def have():
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            data = f.read()
        return data.count(b"\n") >= n and data
    data = wait_for(have, timeout=timeout, what="%d access log lines" % n)
    assert data.endswith(b"\n")
    lines = data[:-1].split(b"\n")
    assert len(lines) == n, lines
    for line in lines:
        assert not any(c < 0x20 or c == 0x7f for c in line), "control byte in %r" % line
    return lines


HOSTILE_UA = (b'UA "quoted" back\\slash \\" tab\there ' + bytes(range(0x80, 0x100))
              + " é 😀 ".encode() + b"\xc3(" + b" end")
HOSTILE_REFERER = b'http://ref.example/"q"\\ \xff\xfe ' + "ü€".encode() + b" \xe2\x82"
HOSTILE_TARGET = "/p%20a%22th/%E2%9C%93?q=\"x\"&r=%ff&s='&t=\\"


def test_log_json_hostile_values_round_trip(gangway, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--log-json", "--access-log", log)
    t0 = time.time()
    raw, r = call(srv, "GET", HOSTILE_TARGET, [("User-Agent", HOSTILE_UA),
                                               ("Referer", HOSTILE_REFERER),
                                               ("X-Request-Id", 'id"with\\quote')])
    assert r.status == 200, r.body
    raw2, r2 = call(srv, "POST", "/items", body=b"12345")
    assert r2.status == 201
    t1 = time.time()
    lines = read_lines(log, 2)
    a, b = (strict_json(line) for line in lines)
    assert list(a) == ALL_LOG_FIELDS and list(b) == ALL_LOG_FIELDS
    assert a["uri"] == HOSTILE_TARGET
    assert a["user_agent"] == expected_json_text(HOSTILE_UA)
    assert a["referer"] == expected_json_text(HOSTILE_REFERER)
    assert "é 😀" in a["user_agent"] and "\xff\xfe ü€ \xe2\x82" in a["referer"]
    assert a["request_id"] == 'id"with\\quote'
    assert (a["client"], a["method"], a["protocol"], a["status"], a["bytes"]) == (
        "127.0.0.1", "GET", "HTTP/1.1", 200, len(r.body))
    assert (b["method"], b["uri"], b["status"], b["bytes"]) == ("POST", "/items", 201, len(r2.body))
    assert b["referer"] is None and b["user_agent"] is None and HEX32.match(b["request_id"])
    for e, resp in ((a, r), (b, r2)):
        assert e["worker"] == 1 and e["pid"] == int(resp.header("x-pid"))
        assert type(e["duration_us"]) is int
        assert e["duration_ms"] == pytest.approx(e["duration_us"] / 1000, abs=0.0005)
        assert e["duration"] == pytest.approx(e["duration_us"] / 1e6, abs=5e-7)
        assert int(t0) - 1 <= e["time"] <= t1 + 1
        iso = calendar.timegm(time.strptime(e["time_iso"], "%Y-%m-%dT%H:%M:%SZ"))
        assert int(t0) - 1 <= iso <= t1 + 1
        loc = calendar.timegm(time.strptime(e["time_local"], "%d/%b/%Y:%H:%M:%S +0000"))
        assert loc == iso


def uwsgi_packet(pairs, body=b""):
    blk = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                   for k, v in pairs)
    return struct.pack("<BHB", 0, len(blk), 0) + blk + body


def uwsgi_call(srv, pairs):
    from test_uwsgi import exchange, parse
    return parse(exchange(srv, uwsgi_packet(pairs)))


FORGED = b'x\r\n127.0.0.1 - - [01/Jan/2030:00:00:00 +0000] "GET /forged HTTP/1.1" 200 0\n'
CONTROL_URI = b"/ctl?a=\n\r\x00\x1b[31m\x7f\"\\"


def hostile_uwsgi_vars():
    return [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", CONTROL_URI),
            (b"PATH_INFO", b"/ctl"), (b"QUERY_STRING", CONTROL_URI.split(b"?", 1)[1]),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"203.0.113.7"),
            (b"REMOTE_PORT", b"5555"), (b"SERVER_NAME", b"obs.test"), (b"SERVER_PORT", b"80"),
            (b"HTTP_HOST", b"obs.test"), (b"HTTP_USER_AGENT", FORGED),
            (b"HTTP_REFERER", b"\x01\x1f\x7f\x80\xc3\xa9\n"),
            (b"HTTP_X_REQUEST_ID", b"forged\nid")]


@pytest.mark.parametrize("fmt", ["json", "text", "combined"])
def test_log_control_characters_cannot_forge_lines(gangway, tmp_path, fmt):
    log = str(tmp_path / "access.log")
    args = {"json": ["--log-json"],
            "text": ["--log-format", "T %(client) %(uri) %(user_agent) %(referer) %(request_id)"],
            "combined": []}[fmt]
    srv = start(gangway, "--uwsgi", "127.0.0.1:0", "--access-log", log, *args)
    r = uwsgi_call(srv, hostile_uwsgi_vars())
    assert r.status == 200
    ua_tab = b"tab\there"  # HTAB is allowed in an HTTP field value
    r2 = call(srv, "GET", "/ok", [("User-Agent", ua_tab)])[1]
    assert r2.status == 200
    lines = read_lines(log, 2)  # exactly two lines, no control byte in them
    if fmt == "json":
        a, b = (strict_json(line) for line in lines)
        assert a["uri"] == expected_json_text(CONTROL_URI)
        assert a["user_agent"] == expected_json_text(FORGED)
        assert a["referer"] == expected_json_text(b"\x01\x1f\x7f\x80\xc3\xa9\n")
        assert a["client"] == "203.0.113.7"
        assert HEX32.match(a["request_id"]), "an id with a newline is not an id"
        assert b["user_agent"] == ua_tab.decode()
    elif fmt == "text":
        a, b = (line.decode("ascii") for line in lines)
        rid = a.rsplit(" ", 1)[1]
        assert HEX32.match(rid)
        assert a == "T 203.0.113.7 %s %s %s %s" % (escaped_text(CONTROL_URI), escaped_text(FORGED),
                                                   escaped_text(b"\x01\x1f\x7f\x80\xc3\xa9\n"), rid)
        assert b.startswith("T 127.0.0.1 /ok %s - " % escaped_text(ua_tab))
    else:
        a, b = (line.decode("ascii") for line in lines)
        m = re.fullmatch(r'203\.0\.113\.7 - - \[[^\]]+\] "GET (.*) HTTP/1\.1" 200 \d+ '
                         r'"(.*)" "(.*)" \d+\.\d{6}', a)
        assert m, a
        assert m.groups() == (escaped_text(CONTROL_URI),
                              escaped_text(b"\x01\x1f\x7f\x80\xc3\xa9\n"), escaped_text(FORGED))
        assert '"%s"' % escaped_text(ua_tab) in b


NAMED_FORMAT = ("ACC %(client)|%(method)|%(uri)|%(status)|%(bytes)|%(duration_us)|"
                "%(duration_ms)|%(referer)|%(user_agent)|%(request_id)|%(worker)|%(time)|"
                "%(time_iso)|%(pid)|%(addr)|%(size)|%(msecs)|%(uagent)|%(wid)|%(user) 100% [end]")


def test_log_format_named_fields_give_exactly_the_line(gangway, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--log-format", NAMED_FORMAT, "--access-log", log)
    t0 = time.time()
    body = b"z" * 123
    raw, r = call(srv, "POST", "/items?x=1&y=%41", [("Referer", "http://from.example/page"),
                                                    ("User-Agent", "curl/8.0 (obs)"),
                                                    ("X-Request-Id", "req-42")], body)
    assert r.status == 201 and r.body == b"stored 123 bytes"
    raw2, r2 = call(srv, "GET", "/ok?n=7")
    t1 = time.time()
    lines = [line.decode("ascii") for line in read_lines(log, 2)]
    pid = int(r.header("x-pid"))
    for line, resp, fixed in (
            (lines[0], r, ["127.0.0.1", "POST", "/items?x=1&y=%41", "201", "16"]),
            (lines[1], r2, ["127.0.0.1", "GET", "/ok?n=7", "200", "7"])):
        assert line.startswith("ACC ") and line.endswith(" 100% [end]"), line
        f = line[4:-len(" 100% [end]")].split("|")
        assert len(f) == 20, f
        assert f[:5] == fixed
        us = int(f[5])
        assert f[6] == "%d.%03d" % (us // 1000, us % 1000)
        assert 0 <= us <= (t1 - t0) * 1e6 + 1000
        assert int(t0) - 1 <= int(f[11]) <= t1 + 1
        iso = calendar.timegm(time.strptime(f[12], "%Y-%m-%dT%H:%M:%SZ"))
        assert int(t0) - 1 <= iso <= t1 + 1
        assert int(f[13]) == pid == int(resp.header("x-pid"))
        # the line, exactly, given the values that vary from run to run
        rid = f[9]
        ref, ua = ("http://from.example/page", "curl/8.0 (obs)") if resp is r else ("-", "-")
        want = ("ACC {c}|{m}|{u}|{s}|{b}|{us}|{ms}|{ref}|{ua}|{rid}|1|{t}|{iso}|{pid}|"
                "{c}|{b}|{ms}|{ua}|1|- 100% [end]").format(
                    c=fixed[0], m=fixed[1], u=fixed[2], s=fixed[3], b=fixed[4], us=us, ms=f[6],
                    ref=ref, ua=ua, rid=rid, t=f[11], iso=f[12], pid=pid)
        assert line == want
    assert lines[0].split("|")[9] == "req-42"
    assert HEX32.match(lines[1].split("|")[9]), "the log makes an id when the format asks"


def test_log_format_unknown_field_is_a_startup_error(gangway):
    srv = gangway("--log-format", "%(status) %(no_such_field) %(uri)", APP, wait=False)
    rc = srv.proc.wait(15 * SLOW)
    log = srv.read_log()
    assert rc != 0 and "ready" not in log
    assert "unknown field 'no_such_field'" in log, log
    srv2 = gangway("--log-format", "%(status", APP, wait=False)
    assert srv2.proc.wait(15 * SLOW) != 0 and "no closing ')'" in srv2.read_log()


def test_log_json_with_format_has_just_the_named_fields(gangway, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--log-json", "--log-format",
                "[%(status)] uri=%(uri) %(request_id) %(uagent)", "--access-log", log)
    call(srv, "GET", "/missing?q=1", [("X-Request-Id", "abc"), ("User-Agent", "é")])
    (line,) = read_lines(log, 1)
    e = strict_json(line)
    assert list(e.items()) == [("status", 404), ("uri", "/missing?q=1"), ("request_id", "abc"),
                               ("user_agent", "é")]


def test_log_json_with_a_uwsgi_only_field_starts(gangway, tmp_path):
    """uWSGI fields gangway lacks (%(user), %(rss) ...) are accepted as "-"
    in text formats; with --log-json they have no key. gangway should start
    and log the other fields."""
    log = str(tmp_path / "access.log")
    srv = gangway("--log-json", "--log-format", "%(status) %(user) %(uri)", "--access-log", log,
                  APP, wait=False)
    try:
        srv.wait_ready(timeout=5 * (1 + SANITIZED))
    except TimeoutError:
        pytest.fail("gangway did not start within %ds (log: %r)" % (5 * (1 + SANITIZED),
                                                                   srv.read_log()))
    call(srv, "GET", "/ok")
    (line,) = read_lines(log, 1)
    assert strict_json(line) == {"status": 200, "uri": "/ok"}


# ---------------------------------------------------------------------------
# 6. X-Request-Id
# ---------------------------------------------------------------------------

RID_FORMAT = "RID %(request_id) %(pid) %(uri)"


def rid_log(path, n):
    """{uri: (request_id, pid)} from the RID lines."""
    out = {}
    for line in read_lines(path, n):
        tag, rid, pid, uri = line.decode("ascii").split(" ", 3)
        assert tag == "RID" and uri not in out
        out[uri] = (rid, int(pid))
    return out


def test_request_id_generated_seen_answered_logged(gangway, holder, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--request-id", "--log-format", RID_FORMAT, "--access-log", log,
                workers=2)
    seen = {}  # uri -> (id the app saw, X-Request-Id headers of the answer, pid)

    def rid_call(uri, headers=()):
        r = call(srv, "GET", uri, headers)[1]
        assert r.status == 200
        seen[uri] = (json.loads(r.body)["rid"], headers_named(r, "x-request-id"),
                     int(r.header("x-pid")))

    # The held request is worker X's first; the next ones are worker Y's.
    block_uri = "/block?port=%d" % holder.port
    holder.hold(lambda: call(srv, "GET", block_uri)[1])
    pid_x = holder.accept()
    for i in range(5):
        rid_call("/rid?i=%d" % i)
    (rb,) = holder.release()
    for i in range(5, 10):
        rid_call("/rid?i=%d" % i)
    valid_128 = "".join(chr(0x21 + i % 94) for i in range(128))
    cases = {"/rid?c=plain": "client-id-42", "/rid?c=one": "z", "/rid?c=max": valid_128}
    for uri, rid in cases.items():
        rid_call(uri, [("X-Request-Id", rid)])
    invalid = {"/rid?c=long": "a" * 129, "/rid?c=space": "has space", "/rid?c=tab": "t\tab"}
    for uri, rid in invalid.items():
        rid_call(uri, [("X-Request-Id", rid)])
    r_own = call(srv, "GET", "/own-rid")[1]
    logged = rid_log(log, 1 + len(seen) + 1)

    generated = []
    for uri, (app_rid, answer, pid) in seen.items():
        assert len(answer) == 1, (uri, answer)
        assert app_rid == answer[0], (uri, app_rid, answer)
        # (the text log writes '"' and '\\' as \x22 and \x5c)
        assert logged[uri][0] == escaped_text(app_rid.encode()), (uri, app_rid, logged[uri])
        assert logged[uri][1] == pid
        if uri in cases:
            assert app_rid == cases[uri]
        else:
            assert HEX32.match(app_rid), (uri, app_rid)
            assert uri not in invalid or app_rid != invalid[uri]
            generated.append((pid, app_rid))
    block_rid = headers_named(rb, "x-request-id")
    assert len(block_rid) == 1 and HEX32.match(block_rid[0])
    assert logged[block_uri] == (block_rid[0], pid_x)
    generated.append((pid_x, block_rid[0]))
    ids = [i for _, i in generated]
    assert len(set(ids)) == len(ids), "generated ids repeat"
    first = {}
    for pid, i in [(pid_x, block_rid[0])] + [(seen[u][2], seen[u][0]) for u in seen
                                            if u.startswith("/rid?i=")]:
        first.setdefault(pid, i)
    assert len(first) == 2, "both workers made ids"
    a, b = first.values()
    assert a != b, "each worker's first id is the same: not seeded per worker"
    # the app's own X-Request-Id stays, alone
    assert headers_named(r_own, "x-request-id") == ["app-own-id-7"]


def test_request_id_without_the_option(gangway, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--log-format", RID_FORMAT, "--access-log", log)
    r1 = call(srv, "GET", "/rid?a")[1]
    r2 = call(srv, "GET", "/rid?b", [("X-Request-Id", "cid-1")])[1]
    r3 = call(srv, "GET", "/rid?c", [("X-Request-Id", "bad id")])[1]
    r4 = call(srv, "GET", "/own-rid")[1]
    logged = rid_log(log, 4)
    assert json.loads(r1.body)["rid"] is None and headers_named(r1, "x-request-id") == []
    assert HEX32.match(logged["/rid?a"][0]), "the log still shows an id"
    assert json.loads(r2.body)["rid"] == "cid-1" and headers_named(r2, "x-request-id") == []
    assert logged["/rid?b"][0] == "cid-1"
    assert json.loads(r3.body)["rid"] == "bad id" and headers_named(r3, "x-request-id") == []
    assert HEX32.match(logged["/rid?c"][0])
    assert headers_named(r4, "x-request-id") == ["app-own-id-7"]


def test_request_id_over_uwsgi(gangway, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--uwsgi", "127.0.0.1:0", "--request-id", "--log-format", RID_FORMAT,
                "--access-log", log)

    def uw(uri, rid=None):
        pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", uri.encode()),
                 (b"PATH_INFO", b"/rid"), (b"QUERY_STRING", uri.split("?")[1].encode()),
                 (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"203.0.113.7"),
                 (b"SERVER_NAME", b"obs.test"), (b"SERVER_PORT", b"80"),
                 (b"HTTP_HOST", b"obs.test")]
        if rid is not None:
            pairs.append((b"HTTP_X_REQUEST_ID", rid.encode()))
        r = uwsgi_call(srv, pairs)
        assert r.status == 200
        return json.loads(r.body)["rid"], headers_named(r, "x-request-id")

    got = {"/rid?u=given": uw("/rid?u=given", "nginx-req-9"), "/rid?u=none": uw("/rid?u=none"),
           "/rid?u=bad": uw("/rid?u=bad", "bad id")}
    logged = rid_log(log, 3)
    for uri, (app_rid, answer) in got.items():
        assert answer == [app_rid] and logged[uri][0] == app_rid, (uri, app_rid, answer)
    assert got["/rid?u=given"][0] == "nginx-req-9"
    assert HEX32.match(got["/rid?u=none"][0]) and HEX32.match(got["/rid?u=bad"][0])
    assert got["/rid?u=none"][0] != got["/rid?u=bad"][0]


def test_request_id_on_the_500_after_an_app_exception(gangway, tmp_path):
    """With --request-id the answer carries the request's id; the 500 gangway
    writes after an app exception is the answer an operator most wants to
    find in the logs by that id."""
    log = str(tmp_path / "access.log")
    srv = start(gangway, "--request-id", "--log-format", RID_FORMAT, "--access-log", log)
    r = call(srv, "GET", "/boom")[1]
    assert r.status == 500
    logged = rid_log(log, 1)
    assert headers_named(r, "x-request-id") == [logged["/boom"][0]]


# ---------------------------------------------------------------------------
# 7. the status page in headless Chromium
# ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")


def chromium_args(profile, stats_port):
    return [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--disable-crash-reporter",
            "--mute-audio", "--window-size=1100,720",
            # nothing but the loopback stats address is reachable
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1:%d" % stats_port]


class Load:
    """Keep-alive GETs from two threads until stopped (at most 60 s)."""

    def __init__(self, srv):
        self.srv, self.stop, self.n, self.errors = srv, threading.Event(), 0, []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(2)]

    def run(self):
        deadline = time.monotonic() + 60
        try:
            s = self.srv.connect()
            rd = RawReader(s)
            while not self.stop.is_set() and time.monotonic() < deadline:
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: obs.test\r\n\r\n")
                assert rd.read_response().status == 200
                self.n += 1
            s.close()
        except Exception as e:
            self.errors.append(e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_for(lambda: self.n > 10 or self.errors, timeout=10 * SLOW, what="load running")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        assert not self.errors, self.errors


def parse_status_dom(dom):
    body = re.search(r"<body[^>]*>", dom).group(0)
    canvas = re.search(r'<canvas id="chart"[^>]*>', dom).group(0)

    def attr(tag, name):
        m = re.search(r'\b%s="([^"]*)"' % name, tag)
        return m.group(1) if m else None
    rows = []
    for cls, wid, cells in re.findall(r'<tr class="(\w+)" data-worker="(\d+)">(.*?)</tr>', dom):
        tds = re.findall(r"<td[^>]*>(.*?)</td>", cells)
        assert tds[0] == wid and tds[2] == cls
        rows.append((int(wid), int(tds[1]), cls))
    summary = re.search(r'<p id="summary">(.*?)</p>', dom).group(1)
    error = re.search(r'<p id="error">(.*?)</p>', dom).group(1)
    return {"samples": attr(body, "data-samples"), "points": attr(canvas, "data-points"),
            "rps": attr(canvas, "data-last-rps"), "rows": rows, "summary": summary,
            "error": error}


def save_artifact(tmp_path_factory, src, name):
    dst_dir = tmp_path_factory.getbasetemp() / "artifacts"
    dst_dir.mkdir(exist_ok=True)
    dst = dst_dir / name
    shutil.copyfile(src, dst)
    print("artifact:", dst)
    return dst


def check_png(path, w, h):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert struct.unpack(">II", data[16:24]) == (w, h)


def test_status_page_is_self_contained(gangway):
    srv = start(gangway)
    page = stats_http(stats_addr(srv), "/status")[2].decode("utf-8")
    assert not re.search(r"https?://", page), "the page refers to another host"
    assert not re.search(r"""(?:src|href|action)\s*=|@import|url\(|//[a-z0-9.-]+\.[a-z]""", page,
                         re.I), "the page loads something from elsewhere"
    assert re.search(r'fetch\("/"', page)


@needs_chromium
def test_status_page_in_headless_chromium_virtual_time(gangway, tmp_path, tmp_path_factory):
    """--virtual-time-budget runs a few one-second poll cycles at once;
    --dump-dom gives the DOM after the script ran; --screenshot the picture."""
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    pids = sorted((w["id"], w["pid"]) for w in stats_json(addr)["workers"])
    shot = str(tmp_path / "status.png")
    args = chromium_args(str(tmp_path / "profile"), addr[1]) + [
        "--virtual-time-budget=3500", "--dump-dom", "--screenshot=" + shot,
        "http://127.0.0.1:%d/status" % addr[1]]
    with Load(srv) as load:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                cwd=str(tmp_path))
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode == 0, proc.returncode
    d = parse_status_dom(out.decode("utf-8"))
    print("virtual time:", d, "load requests:", load.n)
    assert sorted((wid, pid) for wid, pid, _ in d["rows"]) == pids
    assert all(cls in ("idle", "busy") for _, _, cls in d["rows"])
    assert int(d["samples"]) >= 2 and int(d["points"]) >= 1
    # Under virtual time two polls can be microseconds apart in real time,
    # so the last interval may hold no request: rps > 0 is checked in real
    # time below; here only that it is a number.
    assert float(d["rps"]) >= 0
    assert "master pid %d," % srv.pid in d["summary"] and d["error"] == ""
    check_png(shot, 1100, 720)
    save_artifact(tmp_path_factory, shot, "status.png")


class CDP:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3: commands
    in, fd 4: answers and events out, NUL-terminated JSON)."""

    def __init__(self, args, cwd):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # high, distinct numbers so that "3<&A 4>&B" cannot clash (bash: dash
        # takes one-digit descriptors only)
        a = fcntl.fcntl(to_r, fcntl.F_DUPFD, 100)
        b = fcntl.fcntl(from_w, fcntl.F_DUPFD, 100)
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", 'exec "$@" 3<&%d 4>&%d %d<&- %d>&-' % (a, b, a, b), "bash"] + args,
            pass_fds=(a, b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        for fd in (to_r, from_w, a, b):
            os.close(fd)
        self.w = os.fdopen(to_w, "wb", buffering=0)
        self.r = os.fdopen(from_r, "rb", buffering=0)
        self.q, self.events, self.next_id = queue.Queue(), [], 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            b = self.r.read(65536)
            if not b:
                self.q.put(None)
                return
            buf += b
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self.q.put(json.loads(msg))

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            assert m is not None, "chromium closed the pipe"
            if m.get("id") == self.next_id:
                assert "error" not in m, m
                return m["result"]
            self.events.append(m)

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.w.close()


@needs_chromium
def test_status_page_in_headless_chromium_real_time(gangway, tmp_path, tmp_path_factory):
    """The same page in real time, driven over the DevTools pipe: wait (on a
    condition, bounded) until two one-second samples were drawn and the last
    one shows the load; every request the page made went to the stats
    address."""
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    pids = sorted((w["id"], w["pid"]) for w in stats_json(addr)["workers"])
    url = "http://127.0.0.1:%d/status" % addr[1]
    cdp = CDP(chromium_args(str(tmp_path / "profile"), addr[1])
              + ["--remote-debugging-pipe", "about:blank"], str(tmp_path))
    try:
        pages = wait_for(lambda: [t for t in cdp.call("Target.getTargets")["targetInfos"]
                                  if t["type"] == "page"], timeout=20, what="a page target")
        page = pages[0]
        sid = cdp.call("Target.attachToTarget", {"targetId": page["targetId"],
                                                 "flatten": True})["sessionId"]
        cdp.call("Network.enable", session=sid)
        cdp.call("Page.enable", session=sid)
        cdp.call("Emulation.setDeviceMetricsOverride", {"width": 1100, "height": 720,
                                                        "deviceScaleFactor": 1, "mobile": False},
                 session=sid)
        with Load(srv) as load:
            cdp.call("Page.navigate", {"url": url}, session=sid)
            probe = ("JSON.stringify({s: document.body.dataset.samples || '0',"
                     " r: document.getElementById('chart').dataset.lastRps || '0',"
                     " e: document.getElementById('error').textContent})")

            def drawn():
                v = cdp.call("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                             session=sid)["result"].get("value")
                st = json.loads(v) if v else {}
                states.append(st)
                return st and int(st["s"]) >= 2 and float(st["r"]) > 0
            states = []
            try:
                wait_for(drawn, timeout=20 * SLOW, interval=0.1, what="two samples with load")
            except TimeoutError:
                raise AssertionError("the page did not draw two samples with load: first %r, "
                                     "last %r, load %d requests (errors %r), events %r, "
                                     "failed loads %r" % (
                                         states[:3], states[-3:], load.n, load.errors,
                                         [e.get("method") for e in cdp.events][-30:],
                                         [(e["params"].get("type"), e["params"].get("errorText"))
                                          for e in cdp.events
                                          if e.get("method") == "Network.loadingFailed"]))
            dom = cdp.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                                "returnByValue": True}, session=sid)
            shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=sid)
        html = dom["result"]["value"]
        (tmp_path / "status-live.html").write_text(html)
        (tmp_path / "status-live.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        cdp.close()
    d = parse_status_dom(html)
    print("real time:", d, "load requests:", load.n)
    assert sorted((wid, pid) for wid, pid, _ in d["rows"]) == pids
    assert int(d["samples"]) >= 2 and int(d["points"]) >= 1 and float(d["rps"]) > 0
    assert "master pid %d," % srv.pid in d["summary"] and d["error"] == ""
    urls = [e["params"]["request"]["url"] for e in cdp.events
            if e.get("method") == "Network.requestWillBeSent"]
    assert urls and url in urls
    assert all(u.startswith("http://127.0.0.1:%d/" % addr[1]) for u in urls), urls
    check_png(str(tmp_path / "status-live.png"), 1100, 720)
    save_artifact(tmp_path_factory, str(tmp_path / "status-live.png"), "status-live.png")


def test_a_worker_told_to_stop_while_stuck_in_the_app_shows_stopping(gangway, holder):
    """SIGTTOU retires a worker whose app is stuck: it only sees the signal
    when the app returns, but the statistics say "stopping" (and not
    accepting) as soon as the master has told it."""
    srv = start(gangway, workers=2)
    addr = stats_addr(srv)
    target = "/block?port=%d" % holder.port
    # one held request in each worker (one after the other, as above)
    holder.hold(lambda: call(srv, "GET", target)[1])
    held = [holder.accept()]
    holder.hold(lambda: call(srv, "GET", target)[1])
    held.append(holder.accept())
    assert len(set(held)) == 2
    try:
        wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["busy", "busy"],
                 timeout=5 * SLOW, what="both workers busy")
        srv.signal(signal.SIGTTOU)  # the master retires worker 2
        js = wait_for(lambda: (lambda j: [w["status"] for w in j["workers"]]
                               == ["busy", "stopping"] and j)(stats_json(addr)),
                      timeout=5 * SLOW, what="worker 2 stopping while its app is stuck")
        w2 = js["workers"][1]
        assert w2["accepting"] == 0 and w2["current"] == "GET " + target
        fams = stats_metrics(addr)
        assert sample(fams, "gangway_workers", state="stopping") == 1
        assert sample(fams, "gangway_requests_in_flight") == 2
    finally:
        results = holder.release()
    assert all(r.status == 200 for r in results)
    # worker 2 finishes its request and goes; it is not replaced
    wait_for(lambda: [w["status"] for w in stats_json(addr)["workers"]] == ["idle"],
             timeout=10 * SLOW, what="worker 2 gone, worker 1 idle")
