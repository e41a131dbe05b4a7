"""The process model: master and pre-forked workers, respawn, reload, stop,
recycling, harakiri, scaling, log reopening, pidfile, sockets and privileges.

Apps: tests/apps/proc_app.py (every answer names the serving pid) and
tests/apps/proc_reload.py (a template the reload tests copy into tmp_path and
rewrite). Worker pids come from the log's "worker I ready (pid X)" lines and
from /proc/<master>/task/*/children; every process stopped here is one the
fixture started, signalled by pid. Every wait is a bounded poll.
"""
import http.client
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import (APPS, BIN, SANITIZED, RawReader, children, live_children, request,
                      wait_for)

READY_RE = re.compile(r"worker (\d+) ready \(pid (\d+)\)")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def get(server, target="/", timeout=10, close=True):
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % target
    if close:
        head += "Connection: close\r\n"
    raw = (head + "\r\n").encode("latin-1")
    if server.port is None and server.unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(server.unix)
            s.sendall(raw)
            return RawReader(s, timeout).read_response()
        finally:
            s.close()
    return request(server, raw, timeout=timeout)


def pid_in(body):
    m = re.search(rb"pid=(\d+)", body)
    assert m, body[:300]
    return int(m.group(1))


def served_pid(server, target="/"):
    r = get(server, target)
    assert r.status == 200, (r.status, r.body[:300])
    return pid_in(r.body)


def busy_pids(server, tmp_path, n):
    """n slow requests, each sent once the previous one is inside the app (its
    worker busy, so it accepts nothing): with n idle workers they land on n
    different workers. Returns the pids that answered. (Sequential quick
    requests may all land on the same idle worker: that is not a spread test.)"""
    socks = []
    try:
        for k in range(n):
            marker = tmp_path / ("slow-%d-%d" % (time.monotonic_ns(), k))
            c = server.connect(timeout=15)
            socks.append(c)
            c.sendall(b"GET /slow?marker=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n" % str(marker).encode())
            wait_for(marker.exists, 10, what="slow request %d to start" % k)
        out = []
        for c in socks:
            r = RawReader(c, timeout=15).read_response()
            assert r.status == 200, (r.status, r.body[:200])
            out.append(pid_in(r.body))
        return out
    finally:
        for c in socks:
            c.close()


def ready_lines(log):
    """[(worker id, pid)] in log order."""
    return [(int(i), int(p)) for i, p in READY_RE.findall(log)]


def current_workers(log):
    """{worker id: pid of its latest "ready" line}."""
    out = {}
    for i, p in ready_lines(log):
        out[i] = p
    return out


def reaped(pid, parent):
    """True once pid is gone (reaped by parent), or the pid now belongs to someone else."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return True
    return int(st[st.rindex(")") + 2:].split()[1]) != parent


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].split()
    return None


def exit_code(server, timeout):
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("gangway (pid %d) still running %ss later; log:\n%s"
                    % (server.pid, timeout, server.read_log()[-3000:]))


def kill_leftovers(server, pids):
    """After a failed test: SIGKILL the workers of ours that might outlive the master's stop."""
    for p in pids:
        if not reaped(p, server.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


class Load:
    """A bounded load: `threads` threads each issue GET `target` on a fresh
    connection, one after another, until stop(), max_requests in all, or max_seconds."""

    def __init__(self, server, target="/", threads=4, max_requests=200000, max_seconds=30,
                 timeout=10):
        self.server, self.target, self.timeout = server, target, timeout
        self.results = []  # (t_start, t_end, ok, detail)
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.issued = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.issued >= self.max_requests:
                    return
                self.issued += 1
            t0 = time.monotonic()
            try:
                r = get(self.server, self.target, timeout=self.timeout)
                ok = r.status == 200
                detail = r.body if ok else "status %d: %r" % (r.status, r.body[:200])
            except (OSError, EOFError, ValueError) as e:
                ok, detail = False, "%s: %s" % (type(e).__name__, e)
            self.results.append((t0, time.monotonic(), ok, detail))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self.threads), "load threads did not finish"
        return self.results

    def wait_successes(self, n, timeout=10):
        wait_for(lambda: sum(1 for r in self.results if r[2]) >= n, timeout,
                 what="%d successful requests under load" % n)

    def failures(self):
        return [r for r in self.results if not r[2]]

    def summary(self):
        f = self.failures()
        return "%d requests, %d failed; first failures: %s" % (
            len(self.results), len(f), [x[3] for x in f[:5]])


# ---------------------------------------------------------------------------
# start-up: master, workers, log lines
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("opt", ["--workers", "--processes", "-p"])
def test_master_forks_workers_and_logs_them(gangway, tmp_path, opt):
    s = gangway(opt, "3", "proc_app:application")
    lines = s.read_log().splitlines()

    def index(pred, what):
        for i, line in enumerate(lines):
            if pred(line):
                return i
        pytest.fail("no %s line in the log:\n%s" % (what, "\n".join(lines)))

    banner = index(lambda l: re.search(r"gangway .*master pid %d, 3 worker\(s\)" % s.pid, l),
                   "banner")
    listening = index(lambda l: "listening on http://127.0.0.1:%d" % s.port in l, "listening")
    ready = index(lambda l: re.search(r"(^|: )ready$", l), "ready")
    workers = [(i, READY_RE.search(l)) for i, l in enumerate(lines) if READY_RE.search(l)]
    assert banner < listening < ready
    assert [int(m.group(1)) for _, m in workers] == [1, 2, 3], lines
    assert all(listening < i < ready for i, _ in workers), lines
    pids = {int(m.group(2)) for _, m in workers}
    assert len(pids) == 3 and s.pid not in pids
    assert live_children(s.pid) == pids
    assert set(busy_pids(s, tmp_path, 3)) == pids  # each of them serves


def test_workers_auto_is_cpu_count(gangway):
    n = os.sysconf("SC_NPROCESSORS_ONLN")
    s = gangway("--workers", "auto", "proc_app:application")
    assert re.search(r"master pid %d, %d worker\(s\)" % (s.pid, n), s.read_log())
    assert len(ready_lines(s.read_log())) == n
    assert len(live_children(s.pid)) == n


@pytest.mark.parametrize("workers,expected", [("1", "False"), ("2", "True")])
def test_wsgi_multiprocess(gangway, workers, expected):
    s = gangway("--workers", workers, "proc_app:application")
    r = get(s, "/mp")
    assert r.status == 200
    assert r.body.decode().startswith("multiprocess=%s " % expected)


# ---------------------------------------------------------------------------
# a worker that dies is replaced
# ---------------------------------------------------------------------------

def test_killed_worker_is_respawned_under_load(gangway):
    s = gangway("--workers", "2", "proc_app:application")
    before = current_workers(s.read_log())
    victim = before[1]
    with Load(s, threads=4, max_seconds=20) as load:
        load.wait_successes(50)
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        pat = re.compile(r"worker 1 \(pid %d\) was killed by signal 9\b.*; respawning" % victim)

        def respawned():
            log = s.read_log()
            m = pat.search(log)
            if not m:
                return None
            new = READY_RE.findall(log[m.end():])
            return [int(p) for i, p in new if i == "1"]
        new_pids = wait_for(respawned, 5, what="worker 1 respawned")
        t_respawn = time.monotonic()
        new = new_pids[0]
        assert new != victim and new != before[2]
        assert t_respawn - t_kill < 1.0, "respawn took %.2fs" % (t_respawn - t_kill)
        assert live_children(s.pid) == {new, before[2]}
        # Keep the load on for a while with both workers.
        wait_for(lambda: sum(1 for r in load.results if r[0] > t_respawn and r[2]) >= 100, 10,
                 what="requests after the respawn")
    by_victim = sum(1 for r in load.results if r[2] and pid_in(r[3]) == victim)
    assert by_victim > 0, "the killed worker served nothing: the test proves nothing"
    bad = load.failures()
    assert len(bad) <= 5, load.summary()
    late = [r for r in bad if r[0] > t_respawn]
    assert not late, "requests started after the respawn failed: " + load.summary()
    pids = {pid_in(r[3]) for r in load.results if r[2] and r[0] > t_respawn}
    assert pids <= {new, before[2]}


# ---------------------------------------------------------------------------
# graceful reload: SIGHUP and --touch-reload
# ---------------------------------------------------------------------------

def reload_app(tmp_path, version=None, broken=False):
    """Writes tmp_path/reload_app/app.py from tests/apps/proc_reload.py."""
    d = tmp_path / "reload_app"
    d.mkdir(exist_ok=True)
    path = d / "app.py"
    text = open(os.path.join(APPS, "proc_reload.py")).read()
    if version is not None:
        text = text.replace('VERSION = "one"', "VERSION = %r" % version)
    if broken:
        text += "\nraise RuntimeError('proc_reload broken on purpose')\n"
    old = path.stat().st_mtime if path.exists() else None
    path.write_text(text)
    if old is not None:  # never let a same-second rewrite look unchanged
        os.utime(path, (old + 2, old + 2))
    return path


RELOAD_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("trigger", ["SIGHUP", "touch-reload"])
def test_graceful_reload_under_load(gangway, tmp_path, trigger):
    app = reload_app(tmp_path)
    touch = tmp_path / "touch-me"
    touch.write_text("x")
    args = ["--workers", "2", "--wsgi-file", str(app)]
    if trigger == "touch-reload":
        args += ["--touch-reload", str(touch)]
    s = gangway(*args, env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    assert get(s).body.startswith(b"version=one ")
    try:
        with Load(s, threads=4, max_seconds=30) as load:
            load.wait_successes(50)
            reload_app(tmp_path, version="two-after-reload")
            if trigger == "SIGHUP":
                s.signal(signal.SIGHUP)
            else:
                st = touch.stat()
                os.utime(touch, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10 ** 9))
            wait_for(lambda: re.search(r"%s: graceful reload" % trigger, s.read_log()), 5,
                     what="the %s reload to start" % trigger)
            wait_for(lambda: "new worker(s) serving" in s.read_log(), 10,
                     what="the new workers to serve")
            wait_for(lambda: all(reaped(p, s.pid) for p in old), 10,
                     what="the old workers to exit")
            t_done = time.monotonic()
            wait_for(lambda: sum(1 for r in load.results if r[0] > t_done and r[2]) >= 100, 10,
                     what="requests after the reload")
    finally:
        kill_leftovers(s, old)
    new = live_children(s.pid)
    assert len(new) == 2 and not (new & old)
    ok = [r for r in load.results if r[2]]
    after = [r for r in ok if r[0] > t_done]
    assert all(r[3].startswith(b"version=two-after-reload ") for r in after), \
        {r[3][:40] for r in after}
    assert {pid_in(r[3]) for r in after} <= new
    assert b"version=one " in {r[3][:12] for r in ok}
    assert not load.failures(), load.summary()


def test_failed_reload_keeps_old_workers(gangway, tmp_path):
    app = reload_app(tmp_path)
    s = gangway("--workers", "2", "--wsgi-file", str(app), env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    with Load(s, threads=2, max_seconds=30) as load:
        load.wait_successes(20)
        reload_app(tmp_path, version="broken-version", broken=True)
        s.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in s.read_log(), 10, what='"reload failed"')
        t_failed = time.monotonic()
        wait_for(lambda: sum(1 for r in load.results if r[0] > t_failed and r[2]) >= 50, 10,
                 what="requests after the failed reload")
        # The failed generation is gone; the old workers are the only ones.
        wait_for(lambda: live_children(s.pid) == old, 10, what="only the old workers left")
    ok = [r for r in load.results if r[2]]
    assert all(r[3].startswith(b"version=one ") for r in ok)
    assert {pid_in(r[3]) for r in ok} <= old
    assert "proc_reload broken on purpose" in s.read_log()
    assert not load.failures(), load.summary()
    # The master is not stuck in the failed reload: a fixed app reloads.
    reload_app(tmp_path, version="three-fixed")
    s.signal(signal.SIGHUP)
    wait_for(lambda: get(s).body.startswith(b"version=three-fixed "), 10,
             what="the fixed app to answer")
    wait_for(lambda: all(reaped(p, s.pid) for p in old), 10, what="the old workers to exit")


def accept_queue_len(port):
    """The accept queue of our listening socket on 127.0.0.1:port (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return int(parts[4].split(":")[1], 16)
    return None


def test_reload_serves_connection_accepted_before_its_request(gangway, tmp_path):
    """The deterministic form of the race the load tests hit: the old worker
    has accepted a connection whose request has not arrived yet when it is told
    to stop. The request arrives a moment later and must be answered.
    (--defer-accept 0: with it, the kernel would hold the silent connection.)"""
    app = reload_app(tmp_path)
    s = gangway("--defer-accept", "0", "--wsgi-file", str(app), env=RELOAD_ENV)
    old = current_workers(s.read_log())[1]
    c = s.connect(timeout=10)
    try:
        wait_for(lambda: accept_queue_len(s.port) == 0, 5, what="the worker to accept")
        reload_app(tmp_path, version="two-after-reload")
        s.signal(signal.SIGHUP)
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 10, what="the new worker")
        wait_for(lambda: "worker 1: SIGTERM: stopping" in s.read_log(), 5,
                 what="the old worker to begin its stop")
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            r = RawReader(c, timeout=10).read_response()
        except (OSError, EOFError) as e:
            pytest.fail("the accepted connection was dropped by the stopping worker: %s: %s; "
                        "log:\n%s" % (type(e).__name__, e, s.read_log()[-1500:]))
        assert r.status == 200
        assert pid_in(r.body) == old  # the worker that accepted it answers it
    finally:
        c.close()
        kill_leftovers(s, [old])


# ---------------------------------------------------------------------------
# stopping
# ---------------------------------------------------------------------------

def test_sigterm_finishes_slow_request_then_exits_0(gangway, tmp_path):
    marker = tmp_path / "slow-started"
    s = gangway("--workers", "2", "proc_app:application")
    sock = s.connect(timeout=15)
    try:
        sock.sendall(b"GET /slow?marker=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     % str(marker).encode())
        wait_for(marker.exists, 10, what="the slow request to start")
        s.signal(signal.SIGTERM)
        r = RawReader(sock, timeout=15).read_response()
        assert r.status == 200 and r.body.startswith(b"slow done ")
    finally:
        sock.close()
    assert exit_code(s, 10) == 0


def test_shutdown_delay_keeps_serving_then_stops(gangway):
    s = gangway("--workers", "2", "--shutdown-delay", "2", "proc_app:application")
    assert get(s).status == 200
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    wait_for(lambda: time.monotonic() - t0 >= 0.5, 2, what="0.5 s")
    r = get(s, timeout=5)
    assert r.status == 200
    assert time.monotonic() - t0 < 1.8  # answered inside the delay
    assert s.proc.poll() is None
    assert exit_code(s, 10) == 0
    took = time.monotonic() - t0
    assert 1.8 <= took < 6, "stopped %.2fs after SIGTERM" % took
    log = s.read_log()
    assert "shutdown-delay" in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_quick_stop(gangway, sig):
    s = gangway("--workers", "2", "proc_app:application")
    workers = set(current_workers(s.read_log()).values())
    assert get(s).status == 200
    t0 = time.monotonic()
    s.signal(sig)
    assert exit_code(s, 5) == 0
    assert time.monotonic() - t0 < 2.0
    assert all(reaped(p, s.pid) for p in workers)
    assert "quick stop" in s.read_log()


# ---------------------------------------------------------------------------
# harakiri
# ---------------------------------------------------------------------------

def test_harakiri_interrupts_pure_python_loop(gangway):
    s = gangway("--harakiri", "2", "proc_app:application")
    pid = served_pid(s)
    t0 = time.monotonic()
    r = get(s, "/spin", timeout=15)
    took = time.monotonic() - t0
    assert r.status == 500, (r.status, r.body[:200])
    assert took < 3.5, "the 500 came after %.2fs" % took
    assert served_pid(s) == pid  # same worker, still serving
    log = s.read_log()
    assert re.search(r"harakiri.*/spin", log), log[-2000:]
    assert re.search(r'File "[^"]*proc_app\.py", line \d+', log), log[-2000:]
    assert "still stuck" not in log


def test_harakiri_kills_worker_stuck_in_c(gangway):
    s = gangway("--harakiri", "1", "--harakiri-grace", "1", "proc_app:application")
    pid = served_pid(s)
    try:
        t0 = time.monotonic()
        sock = s.connect(timeout=15)
        try:
            sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            rd = RawReader(sock, timeout=15)
            try:
                r = rd.read_response()
                pytest.fail("got an answer from the stuck request: %d %r"
                            % (r.status, r.body[:200]))
            except (EOFError, ConnectionResetError):
                pass
        finally:
            sock.close()
        took = time.monotonic() - t0
        assert took < 5, "the connection closed %.2fs later" % took
        wait_for(lambda: re.search(r"still stuck .*killing it", s.read_log()), 5,
                 what='"still stuck ... killing it"')
        log = s.read_log()
        assert re.search(r"harakiri: worker 1 \(pid %d\) still stuck.*/stuck.*killing it" % pid,
                         log), log[-2000:]
        assert re.search(r'File "[^"]*proc_app\.py", line \d+', log), log[-2000:]
        new = served_pid(s)
        assert new != pid
        assert reaped(pid, s.pid)
    finally:
        kill_leftovers(s, [pid])


# ---------------------------------------------------------------------------
# recycling
# ---------------------------------------------------------------------------

def sequential(server, n, target="/", seconds=60):
    """n requests one after another on fresh connections: [(ok, body or error)]."""
    out = []
    deadline = time.monotonic() + seconds
    for _ in range(n):
        assert time.monotonic() < deadline, "sequential load ran out of time"
        try:
            r = get(server, target)
            out.append((r.status == 200, r.body if r.status == 200 else r.status))
        except (OSError, EOFError, ValueError) as e:
            out.append((False, "%s: %s" % (type(e).__name__, e)))
    return out


def answers_until(server, workers, limit=3000, seconds=60):
    """Requests one after another on fresh connections, not asking to close
    (so an answer says Connection: close only when its worker does), until
    `workers` different workers answered: [(pid, says close)]. Any failure
    fails the test."""
    out, seen = [], set()
    deadline = time.monotonic() + seconds
    while len(seen) < workers:
        assert len(out) < limit and time.monotonic() < deadline, (len(out), seen)
        r = get(server, close=False)
        assert r.status == 200, (r.status, r.body[:200])
        seen.add(pid_in(r.body))
        out.append((pid_in(r.body), (r.header("connection") or "").lower() == "close"))
    return out


def check_recycled(server, answers, limit_of):
    """Every worker that answered kept the connection up to its limit; the
    answer reaching it and every later one (a recycling worker serves on
    until its replacement serves) said Connection: close; every one that
    is gone had reached it. Returns the workers in the order they first
    answered."""
    closes = {}
    for p, close in answers:
        closes.setdefault(p, []).append(close)
    order = list(dict.fromkeys(p for p, _ in answers))
    for p in order:
        n = limit_of(p)
        assert closes[p][:n - 1] == [False] * min(n - 1, len(closes[p])), (p, n, closes[p])
        assert all(closes[p][n - 1:]), (p, n, closes[p])
    live = live_children(server.pid)
    for p in order:
        if p not in live:
            assert len(closes[p]) >= limit_of(p), (p, limit_of(p), closes[p])
    return order


def test_max_requests_recycles(gangway):
    s = gangway("--max-requests", "50", "proc_app:application")
    order = check_recycled(s, answers_until(s, 4), lambda p: 50)
    # A worker serves as soon as it told the master; the master's line about
    # it may come a moment later.
    log = wait_for(lambda: len(ready_lines(s.read_log())) >= 4 and s.read_log(), 5,
                   what="the four workers' ready lines")
    assert log.count("max-requests reached") >= 3
    assert [p for i, p in ready_lines(log)][:4] == order


def test_max_requests_loses_nothing_on_a_keepalive_connection(gangway):
    """README: a worker recycles "without losing a request". One client on
    one reused keep-alive connection (http.client, which reconnects only
    when an answer says Connection: close), --max-requests 3 and one worker,
    until four workers answered: the answer that reaches the limit says
    Connection: close (recycling is decided as that request starts), and so
    does every later one of that worker, which serves on until its
    replacement serves, so no request ever goes out on a connection the
    worker is about to drop. (Before: the third answer promised keep-alive
    and the connection was closed after it; the next request failed.)"""
    s = gangway("--workers", "1", "--max-requests", "3", "proc_app:application")
    conn = http.client.HTTPConnection(s.host, s.port, timeout=15)
    failures, answers = [], []
    deadline = time.monotonic() + 60
    try:
        while len({p for p, _ in answers}) < 4 and len(answers) < 3000:
            assert time.monotonic() < deadline, "too slow"
            try:
                conn.request("GET", "/?i=%d" % len(answers))
                r = conn.getresponse()
                body = r.read()
                assert r.status == 200, (r.status, body[:200])
                answers.append((pid_in(body), (r.getheader("Connection") or "").lower() == "close"))
            except (OSError, http.client.HTTPException) as e:
                failures.append((len(answers), "%s: %s" % (type(e).__name__, e)))
                conn.close()  # the next request reconnects
    finally:
        conn.close()
    assert failures == [], failures
    assert len(check_recycled(s, answers, lambda p: 3)) == 4


def test_max_requests_answers_pipelined_requests_or_closes_cleanly(gangway):
    """Five pipelined requests (padded, so that they are more than one read
    of the worker's 16 KiB buffer) on one connection, --max-requests 3: the
    first two answers keep the connection, the third says Connection: close
    and is the last; then the connection ends with a FIN, never a RST, even
    though the client reads nothing until the worker has exited (a RST would
    drop the answers still unread in the client's receive queue: a lingering
    close drains the requests the worker will not answer)."""
    s = gangway("--workers", "1", "--max-requests", "3", "proc_app:application")
    wpid = current_workers(s.read_log())[1]
    pad = "X-Pad: %s\r\n" % ("p" * 7000)
    one = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % pad).encode()
    c = s.connect(timeout=15)
    try:
        c.sendall(one * 5)
        wait_for(lambda: reaped(wpid, s.pid), 15, what="the recycled worker to exit")
        c.settimeout(15)
        data = b""
        while True:
            b = c.recv(65536)  # a RST raises ConnectionResetError here
            if not b:
                break
            data += b
    finally:
        c.close()
    heads = re.findall(rb"HTTP/1\.1 (\d+) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n", data)
    assert [h[0] for h in heads] == [b"200"] * 3, data[:2000]
    assert [b"connection: close" in h[1].lower() for h in heads] == [False, False, True]
    assert data.count(b"pid=%d" % wpid) == 3


def test_max_requests_recycles_lose_no_request_of_busy_keepalive_clients(gangway):
    """Two clients POST back to back, each on its keep-alive connection, to
    one worker with --max-requests 20 (attacks/maxreq_other_conns.py): when
    the worker recycles on one client's request, the other is idle between
    two of its own for an instant. Its next POST must be answered (with
    Connection: close), not crossed by the close of its connection: a POST
    cannot be retried blindly. 2 x 500 POSTs, several recycles, no
    failure. (Before: the idle connection was closed as the stop began,
    about one POST in three recycles lost, some with a reset.)"""
    s = gangway("--workers", "1", "--max-requests", "20", "proc_app:application")
    # 500 POSTs each at least, and on until the worker has recycled three
    # times: on a loaded machine a replacement takes longer to come, and the
    # recycling worker serves on meanwhile (at most 4 x 500 each).
    per_client, most_per_client, want_recycles = 500, 2000, 3
    outcomes = {}
    lock = threading.Lock()

    def client():
        c = rd = None
        for i in range(most_per_client):
            if i >= per_client and i % 50 == 0 and \
                    s.read_log().count("max-requests reached") >= want_recycles:
                break
            if c is None:
                c = s.connect(timeout=15)
                rd = RawReader(c, 15)
            try:
                c.sendall(b"POST /?i=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Length: 5\r\n\r\nhello" % i)
                r = rd.read_response()
                what = "200" if r.status == 200 else "status %d" % r.status
                if (r.header("connection") or "").lower() == "close":
                    c.close()
                    c = None
            except EOFError:
                what = "closed before the answer"
            except OSError as e:
                what = type(e).__name__
            if what != "200" and c is not None:
                c.close()
                c = None
            with lock:
                outcomes[what] = outcomes.get(what, 0) + 1
        if c is not None:
            c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"
    log = s.read_log()
    assert list(outcomes) == ["200"] and outcomes["200"] >= 2 * per_client, \
        (outcomes, log.count("max-requests reached"))
    # A recycling worker serves on until its replacement serves (replacement
    # first), so 1,000 requests make fewer recycles than 1,000 / 20.
    assert log.count("max-requests reached") >= want_recycles


def test_graceful_stop_answers_a_busy_keepalive_client_and_closes_idle_ones_cleanly(gangway):
    """A graceful stop (SIGTERM) meets two idle keep-alive connections: A was
    answered a moment ago, B over 2 s ago. A is a client in the middle of a
    burst: its next request, sent after the stop began, is answered (with
    Connection: close). B is closed at once with a FIN, and a request it
    sends across that FIN is drained rather than answered with a RST, so
    the client sees a clean close. The worker and the master exit 0 within
    a few seconds though B never closes its end. (Before: both were closed
    as the stop began, A's request lost, B's request met by a RST.)"""
    s = gangway("--workers", "1", "--shutdown-delay", "0", "proc_app:application")
    wpid = current_workers(s.read_log())[1]
    a, b = s.connect(timeout=10), s.connect(timeout=10)
    try:
        ra, rb = RawReader(a, 10), RawReader(b, 10)
        one = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b.sendall(one)
        assert rb.read_response().status == 200
        t_b = time.monotonic()
        # B idle for longer than the grace: the quantity under test
        wait_for(lambda: time.monotonic() - t_b > 2.3, 5, interval=0.05, what="B idle 2.3 s")
        a.sendall(one)
        assert ra.read_response().status == 200
        t_a = time.monotonic()
        s.signal(signal.SIGTERM)
        wait_for(lambda: "worker 1: SIGTERM: stopping" in s.read_log(), 5,
                 what="the worker's stop to begin")
        t_stop = time.monotonic()
        assert t_stop - t_a < 1.5, "too slow to test the grace (%.2f s)" % (t_stop - t_a)
        # B: a FIN, soon
        assert rb.at_eof(3), "B not closed at the stop"
        # ... and a request crossing it is drained: no RST comes back
        b.sendall(one)
        a.sendall(one)  # A: answered, the last one
        r = ra.read_response()
        assert r.status == 200 and r.header("connection") == "close", (r.status, r.headers)
        assert ra.at_eof(5)
        t0 = time.monotonic()
        assert exit_code(s, 10) == 0
        print("\nstopped %.2f s after the stop began" % (time.monotonic() - t_stop))
        assert time.monotonic() - t0 < 6  # a linger, a grace: bounded
        assert reaped(wpid, s.pid)
        # Loopback answers at once: a RST for B's request would be here by now.
        b.settimeout(5)
        try:
            assert b.recv(100) == b""
        except ConnectionResetError:
            pytest.fail("B's request after the stop's FIN was answered with a RST")
    finally:
        a.close()
        b.close()


def test_min_worker_lifetime_holds_max_requests_back(gangway):
    """uWSGI's min-worker-lifetime: past max-requests, a worker younger than
    it goes on serving; the first request that ends after it is old enough
    recycles it."""
    s = gangway("--max-requests", "3", "--min-worker-lifetime", "2", "proc_app:application")
    first = served_pid(s)
    start = time.monotonic()
    assert {served_pid(s) for _ in range(8)} == {first}  # 9 requests, still young
    assert time.monotonic() - start < 1.5, "too slow to prove anything"
    assert "max-requests reached" not in s.read_log()
    # Once 2 s old, the next request's end recycles it.
    wait_for(lambda: served_pid(s) != first, 10, interval=0.1, what="the worker recycled")
    assert time.monotonic() - start >= 1.5
    assert "max-requests reached" in s.read_log()


@pytest.mark.parametrize("opt", ["--max-requests-jitter", "--max-requests-delta"])
def test_max_requests_jitter(gangway, opt):
    """Worker i (its slot) recycles after max-requests + (i-1) * jitter:
    its answer reaching that count is the first to say Connection: close."""
    s = gangway("--workers", "2", "--max-requests", "20", opt, "10", "proc_app:application")
    answers = answers_until(s, 5)
    # (the newest worker may have answered before the master logged it)
    log = wait_for(lambda: (lambda l: {p for p, _ in answers} <= {p for _, p in ready_lines(l)}
                            and l)(s.read_log()), 5,
                   what="a ready line for every worker that answered")
    worker_of = {p: i for i, p in ready_lines(log)}
    seen = {p for p, _ in answers}
    wait_for(lambda: len(seen - live_children(s.pid)) >= 2, 15,
             what="two recycled workers to exit")  # (their counts are final then)
    check_recycled(s, answers, lambda p: 20 + (worker_of[p] - 1) * 10)
    assert re.search(r"worker 1: max-requests reached", log)
    assert re.search(r"worker 2: max-requests reached", log)


def test_max_worker_lifetime(gangway):
    s = gangway("--max-worker-lifetime", "2", "proc_app:application")
    first = current_workers(s.read_log())[1]
    try:
        with Load(s, threads=4, max_seconds=20) as load:
            wait_for(lambda: "max-worker-lifetime reached" in s.read_log(), 4,
                     what="max-worker-lifetime")
            # (its replacement takes another slot: it serves until that one does)
            wait_for(lambda: any(p != first for _, p in ready_lines(s.read_log())), 5,
                     what="a replacement")
            t_new = time.monotonic()
            wait_for(lambda: sum(1 for r in load.results if r[0] > t_new and r[2]) >= 50, 10,
                     what="requests after the recycle")
    finally:
        kill_leftovers(s, [first])
    pids = {pid_in(r[3]) for r in load.results if r[2]}
    assert first in pids and len(pids) >= 2
    assert not load.failures(), load.summary()


def test_reload_on_rss(gangway):
    s = gangway("--reload-on-rss", "60", "proc_app:application")
    first = served_pid(s)
    for _ in range(4):
        r = get(s, "/grow", timeout=15)
        assert r.status == 200, r.status
        if pid_in(r.body) != first:
            break
        try:
            wait_for(lambda: "reload-on-rss" in s.read_log(), 1.5, what="reload-on-rss")
            break
        except TimeoutError:
            pass
    wait_for(lambda: "reload-on-rss" in s.read_log(), 3, what='"reload-on-rss" in the log')
    res = sequential(s, 30)
    assert all(ok for ok, _ in res), res[:5]
    wait_for(lambda: served_pid(s) != first, 5, what="a new worker after reload-on-rss")


@pytest.mark.parametrize("mode", ["reuse-port", "shared"])
def test_recycling_under_load_refuses_and_resets_nothing(gangway, mode):
    """Replacement first: a worker past --max-requests asks the master for
    its replacement and serves on (accepting) until the replacement serves;
    with --reuse-port its successor serves on its socket, so that socket
    never closes with connections on it. Eight clients opening a connection
    per request, two workers recycling every 50 requests: every request is
    answered. (Before: each recycle closed the worker's own SO_REUSEPORT
    socket while no replacement listened yet, the master's socket only
    holding the address: thousands refused, hundreds reset. Without
    --reuse-port the shared socket's queue always held them.)"""
    extra = ["--reuse-port"] if mode == "reuse-port" else []
    s = gangway("--workers", "2", "--max-requests", "50", "--disable-logging", *extra,
                "proc_app:application")
    with Load(s, threads=8, max_requests=3000, max_seconds=60) as load:
        wait_for(lambda: len(load.results) >= 3000, 60, interval=0.1,
                 what="3000 requests")
    assert len(load.results) == 3000
    assert not load.failures(), load.summary()
    log = s.read_log()
    # (a worker past its limit serves on until its replacement serves: under
    # this load it answers a few hundred more, each with Connection: close)
    assert log.count("max-requests reached") >= 4, log[-2000:]
    assert log.count("starts in its place") >= 4, log[-2000:]


def test_reload_with_reuse_port_serves_what_waits_on_the_old_socket(gangway, tmp_path):
    """--reuse-port: each old worker's own socket closes at the end of a
    reload; the connections the kernel queued on it meanwhile are taken and
    answered first. Deterministic form: the old worker, at its connection
    cap (one), is held in the app while the new one starts and the master
    tells the old one to stop; then connections arrive, spread by the kernel
    over both sockets, those on the old one queued as it does not accept.
    (Before: the old worker closed its socket first thing and the kernel
    reset them.)"""
    app = reload_app(tmp_path)
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    gate.write_text("closed")
    s = gangway("--reuse-port", "--max-connections", "1", "--wsgi-file", str(app),
                env=RELOAD_ENV)
    old = current_workers(s.read_log())[1]
    held = s.connect(timeout=30)
    socks = []
    try:
        held.sendall(("GET /gate?gate=%s&marker=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Connection: close\r\n\r\n" % (gate, marker)).encode())
        wait_for(marker.exists, 10, what="the old worker held in the app")
        reload_app(tmp_path, version="two-after-reload")
        s.signal(signal.SIGHUP)
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 20, what="the new worker")
        for _ in range(16):
            c = s.connect(timeout=15)
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            socks.append(c)
        gate.unlink()
        answers = []
        for c in socks:
            try:
                r = RawReader(c, timeout=15).read_response()
                answers.append((r.status, pid_in(r.body)))
            except (OSError, EOFError) as e:
                answers.append(("%s: %s" % (type(e).__name__, e), None))
        r = RawReader(held, timeout=15).read_response()
        assert r.status == 200 and pid_in(r.body) == old
    finally:
        gate.unlink(missing_ok=True)
        held.close()
        for c in socks:
            c.close()
        kill_leftovers(s, [old])
    assert all(st == 200 for st, _ in answers), (answers, s.read_log()[-2000:])
    # (each of the 16 went to either socket: none to the old one is 2**-16)
    assert old in {p for _, p in answers}, answers
    wait_for(lambda: reaped(old, s.pid), 10, what="the old worker to exit")


REPLACE_FAILED_RE = re.compile(r"worker \d+ \(pid \d+\) cannot load the app; retrying in (\d+)s")


def new_pid(server, old):
    """The pid that answers a request if it is not old; None while old
    answers or nothing does."""
    try:
        r = get(server, timeout=5)
    except (OSError, EOFError, ValueError):
        return None
    p = pid_in(r.body) if r.status == 200 else None
    return p if p != old else None


@pytest.mark.parametrize("mode", ["reuse-port", "shared"])
def test_recycling_worker_serves_while_its_replacement_cannot_start(gangway, tmp_path, mode):
    """A worker past --max-requests whose replacement cannot start (a broken
    deploy on disk, a database down at import) serves on, for as long as it
    takes: the master retries the replacement with its back-off, and once
    one serves the old worker stops. (Before: it stopped at once and,
    with one worker, nothing served until a replacement could start.)"""
    flag = tmp_path / "flaky"
    extra = ["--reuse-port"] if mode == "reuse-port" else []
    s = gangway("--workers", "1", "--max-requests", "3", *extra, "proc_flaky:application",
                env=flaky_env(flag))
    old = current_workers(s.read_log())[1]
    try:
        flag.write_text("raise")
        answers = [get(s, timeout=5) for _ in range(3)]  # the third reaches the limit
        assert [(r.status, pid_in(r.body)) for r in answers] == [(200, old)] * 3
        wait_for(lambda: len(REPLACE_FAILED_RE.findall(s.read_log())) >= 2, 20,
                 what="two failed starts of the replacement")
        for _ in range(5):
            r = get(s, timeout=5)
            assert (r.status, pid_in(r.body)) == (200, old), s.read_log()[-2000:]
            assert r.header("connection") == "close"
        assert not reaped(old, s.pid)
        flag.unlink()
        new = wait_for(lambda: new_pid(s, old), 40, interval=0.2,
                       what="the replacement to serve")
        wait_for(lambda: reaped(old, s.pid), 10, what="the old worker to stop")
    finally:
        kill_leftovers(s, [old])
    assert live_children(s.pid) == {new}
    assert "giving up" not in s.read_log()


def test_recycling_worker_is_replaced_after_a_failed_reload(gangway, tmp_path):
    """A worker waiting for a replacement that cannot start, then a reload
    whose new workers cannot start either: the re-executed master never got
    the worker's note (it went to the previous image) but finds the reason
    in its slot, so once the app loads again the worker is replaced, not
    left serving past its limit for good."""
    flag, passes = tmp_path / "flaky", tmp_path / "passes"
    s = gangway("--workers", "1", "--max-requests", "3", "proc_flaky:application",
                env=dict(flaky_env(flag), IMPORT_PASSES=str(passes)))
    old = current_workers(s.read_log())[1]
    try:
        flag.write_text("raise")
        assert [pid_in(get(s, timeout=5).body) for _ in range(3)] == [old] * 3
        wait_for(lambda: REPLACE_FAILED_RE.search(s.read_log()), 10,
                 what="a failed start of the replacement")
        passes.write_text("1")  # the reload's check imports fine; its new worker does not
        s.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in s.read_log(), 20, what='"reload failed"')
        assert served_pid(s) == old
        flag.unlink()
        wait_for(lambda: new_pid(s, old), 40, interval=0.2, what="the replacement to serve")
        wait_for(lambda: reaped(old, s.pid), 10, what="the old worker to stop")
    finally:
        kill_leftovers(s, [old])


def test_reload_on_rss_waits_for_a_replacement_at_most_graceful_timeout(gangway, tmp_path):
    """Past --reload-on-rss a worker also serves on until its replacement
    serves, but memory is what that limit protects: when no replacement can
    start, it stops after --graceful-timeout anyway."""
    flag = tmp_path / "flaky"
    s = gangway("--workers", "1", "--reload-on-rss", "60", "--graceful-timeout", "3",
                "proc_flaky:application", env=flaky_env(flag))
    old = served_pid(s)
    try:
        flag.write_text("raise")
        for _ in range(4):
            r = get(s, "/grow", timeout=15)
            assert r.status == 200, r.status
            try:
                wait_for(lambda: "reload-on-rss reached" in s.read_log(), 1.5,
                         what="reload-on-rss")
                break
            except TimeoutError:
                pass
        wait_for(lambda: "reload-on-rss reached" in s.read_log(), 3,
                 what='"reload-on-rss reached" in the log')
        t0 = time.monotonic()
        assert served_pid(s) == old  # it serves on meanwhile
        wait_for(lambda: reaped(old, s.pid), 15, what="the old worker to stop")
        took = time.monotonic() - t0
        log = s.read_log()
        assert "reload-on-rss: no replacement serves yet: stopping" in log, log[-2000:]
        assert 1.5 <= took, "stopped %.1fs after the limit" % took
        flag.unlink()
        wait_for(lambda: new_pid(s, old), 40, interval=0.2, what="a replacement to serve")
    finally:
        kill_leftovers(s, [old])


# ---------------------------------------------------------------------------
# SIGTTIN / SIGTTOU
# ---------------------------------------------------------------------------

def test_sigttin_adds_and_sigttou_removes_a_worker(gangway, tmp_path):
    s = gangway("proc_app:application")
    first = current_workers(s.read_log())[1]
    s.signal(signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN: 2 worker(s)" in s.read_log(), 5, what="SIGTTIN line")
    added = wait_for(lambda: current_workers(s.read_log()).get(2), 5, what="worker 2 ready")
    assert added != first
    assert live_children(s.pid) == {first, added}
    assert set(busy_pids(s, tmp_path, 2)) == {first, added}

    s.signal(signal.SIGTTOU)
    wait_for(lambda: "SIGTTOU: 1 worker(s)" in s.read_log(), 5, what="SIGTTOU line")
    gone = wait_for(lambda: [p for p in (first, added) if reaped(p, s.pid)], 10,
                    what="one worker to exit")
    assert len(gone) == 1
    left = ({first, added} - set(gone)).pop()
    # No replacement: the only child is the remaining worker, now and shortly after.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert live_children(s.pid) == {left}, s.read_log()[-1500:]
        time.sleep(0.05)
    assert "respawning" not in s.read_log()
    assert {served_pid(s) for _ in range(10)} == {left}


def test_sigterm_right_after_a_fork_is_not_lost(gangway):
    """SIGTTIN then SIGTERM at once: the master's SIGTERM reaches a worker that
    is still starting (between fork and its own handlers). It must be kept and
    acted on, not lost: every stop is graceful and prompt, never the kill
    after the stop timeout. A race, so it is tried a number of times."""
    for i in range(30):
        s = gangway("--graceful-timeout", "1", "proc_app:application")
        s.signal(signal.SIGTTIN)
        if i % 2:
            # a moment later: the child is between fork and its handlers
            wait_for(lambda: "SIGTTIN: 2 worker(s)" in s.read_log(), 5, what="SIGTTIN line")
        s.signal(signal.SIGTERM)
        start = time.monotonic()
        rc = s.proc.wait(timeout=15)
        took = time.monotonic() - start
        log = s.read_log()
        assert rc == 0, log[-1500:]
        assert "still running after the stop timeout" not in log, log[-1500:]
        assert took < 4.0, (took, log[-1500:])


# ---------------------------------------------------------------------------
# supervision: scaling at any moment, start failures, failed forks, a dead
# master, and signals that only the master acts on
# ---------------------------------------------------------------------------

SIGNUM = {"HUP": signal.SIGHUP, "TTIN": signal.SIGTTIN, "TTOU": signal.SIGTTOU,
          "TERM": signal.SIGTERM}


def send_and_wait_taken(server, name):
    """Sends SIG<name> to the master and waits for its log line, so that
    signals sent one after another are taken in that order (the kernel would
    deliver pending ones lowest number first)."""
    pat = {"HUP": r"SIGHUP: ", "TTIN": r"SIGTTIN: ", "TTOU": r"SIGTTOU: "}[name]
    before = len(re.findall(pat, server.read_log()))
    server.signal(SIGNUM[name])
    wait_for(lambda: len(re.findall(pat, server.read_log())) > before, 10,
             what="the master to take SIG%s" % name)


@pytest.mark.parametrize("sigs,expect", [
    (["TTOU"], 1),
    (["TTIN"], 3),
    (["TTIN", "TTOU"], 2),
    (["TTOU", "TTIN"], 2),
    (["TTOU", "TTOU"], 1),
    (["TTIN", "TTIN", "TTOU"], 3),
    (["HUP", "TTOU"], 1),
    (["TTIN", "HUP"], 3),
    (["TTOU", "HUP", "TTIN"], 2),
], ids=lambda v: "-".join(v) if isinstance(v, list) else str(v))
def test_scaling_during_start_up(gangway, tmp_path, sigs, expect):
    """SIGTTIN / SIGTTOU (and SIGHUP) while the first worker is still importing
    the app: the server becomes ready with the target as it is then, and
    never with fewer than one worker (issue 20: SIGTTOU then left 0 workers
    forever, SIGTTIN a server that never said ready)."""
    gate = tmp_path / "gate"
    s = gangway("--workers", "2", "cfg_gate_app", env={"CFG_TEST_GATE": str(gate)}, wait=False)
    wait_for(lambda: children(s.pid), 15, what="the master to fork worker 1")
    for name in sigs:
        send_and_wait_taken(s, name)
    gate.write_text("open")
    try:
        s.wait_ready(20)
    except TimeoutError:
        pytest.fail("never ready; log:\n" + s.read_log()[-2000:])
    log = s.read_log()
    assert re.search(r"master pid %d, %d worker\(s\)" % (s.pid, expect), log), log[-2000:]
    if "HUP" in sigs:
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 15,
                 what="the reload asked for during start-up")
    wait_for(lambda: len(live_children(s.pid)) == expect, 15,
             what="%d workers (log:\n%s)" % (expect, s.read_log()[-1500:]))
    # and it stays so: nothing retired is replaced, nothing missing is left out
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert len(live_children(s.pid)) == expect, s.read_log()[-1500:]
        time.sleep(0.05)
    assert "respawning" not in s.read_log()
    r = get(s)
    assert r.status == 200


def test_sigterm_during_start_up_after_scaling(gangway, tmp_path):
    gate = tmp_path / "gate"
    s = gangway("--workers", "2", "--graceful-timeout", "5", "cfg_gate_app",
                env={"CFG_TEST_GATE": str(gate)}, wait=False)
    wait_for(lambda: children(s.pid), 15, what="the master to fork worker 1")
    send_and_wait_taken(s, "TTIN")
    send_and_wait_taken(s, "TTOU")
    s.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM: graceful stop" in s.read_log(), 10, what="the stop to begin")
    forked = children(s.pid)
    gate.write_text("open")
    assert exit_code(s, 15) == 0, s.read_log()[-1500:]
    log = s.read_log()
    assert len(forked) == 1, log[-1500:]  # one worker at a time until one serves
    assert "still running after the stop timeout" not in log
    assert not re.search(r"(^|: )ready$", log, re.M), log[-1500:]


@pytest.mark.parametrize("phase", ["check", "start"])
@pytest.mark.parametrize("name,expect", [("TTIN", 3), ("TTOU", 1)])
def test_scaling_during_a_reload(gangway, tmp_path, name, expect, phase):
    """SIGTTIN / SIGTTOU while a reload's check still imports the app (the
    old master takes it and hands the count over), or while the re-executed
    master's new workers still import it: the reload ends with the new
    target, the old workers go."""
    gate = tmp_path / "gate"
    gate.write_text("open")
    passes = tmp_path / "passes"
    s = gangway("--workers", "2", "cfg_gate_app",
                env={"CFG_TEST_GATE": str(gate), "IMPORT_PASSES": str(passes)})
    old = set(current_workers(s.read_log()).values())
    gate.unlink()  # the imports of the reload wait...
    passes.write_text("1" if phase == "start" else "0")  # ...after the check's, at "start"
    try:
        s.signal(signal.SIGHUP)
        if phase == "check":
            wait_for(lambda: "graceful reload: checking the configuration" in s.read_log(), 10,
                     what="the check to start")
            wait_for(lambda: len(children(s.pid) - old) == 1, 10, what="the checker forked")
        else:
            wait_for(lambda: "starting 2 new worker(s)" in s.read_log(), 10,
                     what="the new master to start its workers")
            wait_for(lambda: len(live_children(s.pid)) == 4, 10, what="the new workers forked")
        send_and_wait_taken(s, name)
        gate.write_text("open")
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 15, what="the new workers")
        wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to go")
        wait_for(lambda: len(live_children(s.pid)) == expect, 10,
                 what="%d workers (log:\n%s)" % (expect, s.read_log()[-1500:]))
    finally:
        kill_leftovers(s, old)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert len(live_children(s.pid)) == expect, s.read_log()[-1500:]
        time.sleep(0.05)
    assert not (live_children(s.pid) & old)
    assert get(s).status == 200


def flaky_env(flag):
    env = {"PROC_FLAKY": str(flag), "PYTHONDONTWRITEBYTECODE": "1"}
    if SANITIZED:
        # ASan would catch the deliberate SIGSEGV and write a report (which
        # make test-asan counts as a failure): let the signal kill the worker.
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0"
    return env


RETRY_RE = re.compile(r"worker 1 \(pid (\d+)\) (cannot load the app|.* before it served); "
                      r"retrying in (\d+)s")


def test_worker_crashing_at_start_backs_off_then_gives_up(gangway, tmp_path):
    """An app whose import segfaults (a broken native extension): every try
    waits longer than the one before, and with no worker ever serving the
    master gives up with one clear line and exit status 1 (issue 20: 120
    respawns in 4 s, forever)."""
    flag = tmp_path / "flaky"
    flag.write_text("segv")
    s = gangway("proc_flaky:application", env=flaky_env(flag), wait=False)
    t0 = time.monotonic()

    def over():
        return s.proc.poll() is not None or s.read_log().count("Segmentation fault") > 6
    wait_for(over, 60, interval=0.1, what="gangway to give up")
    took = time.monotonic() - t0
    log = s.read_log()
    assert log.count("Segmentation fault") <= 6, "crash loop:\n" + log[-2000:]
    assert exit_code(s, 5) == 1, log[-2000:]
    delays = [int(d) for _, _, d in RETRY_RE.findall(log)]
    assert delays == [1, 2, 4, 8], log[-2000:]
    assert took >= 14, "gave up after %.1fs: no back-off" % took
    assert re.search(r"was killed by signal 11 \(Segmentation fault\) before it served, 5 times "
                     r"in a row, and no worker ever served: giving up", log), log[-2000:]
    assert not re.search(r"(^|: )ready$", log, re.M), log[-2000:]


def test_reload_whose_new_workers_crash_at_start_keeps_the_old_ones(gangway, tmp_path):
    """A reload to code that segfaults at import fails like one whose import
    raises: the old workers keep serving, nothing is respawned in a loop, and
    the next reload works."""
    flag = tmp_path / "flaky"
    passes = tmp_path / "passes"
    s = gangway("--workers", "2", "proc_flaky:application",
                env=dict(flaky_env(flag), IMPORT_PASSES=str(passes)))
    old = set(current_workers(s.read_log()).values())
    flag.write_text("segv")
    passes.write_text("1")  # the reload's check imports fine; its new workers crash
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in s.read_log(), 15, what='"reload failed"')
    log = s.read_log()
    assert re.search(r"reload failed: new worker \d+ \(pid \d+\) was killed by signal 11 "
                     r"\(Segmentation fault\) before it served; the old ones keep serving", log), \
        log[-2000:]
    wait_for(lambda: live_children(s.pid) == old, 10, what="only the old workers left")
    assert served_pid(s) in old
    assert s.read_log().count("Segmentation fault") <= 2, s.read_log()[-2000:]
    flag.unlink()
    s.signal(signal.SIGHUP)
    wait_for(lambda: "new worker(s) serving" in s.read_log(), 15, what="the next reload")
    wait_for(lambda: not (live_children(s.pid) & old), 15, what="the old workers to go")


def process_age(pid):
    """Seconds since pid started (from /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    start = int(st[st.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - start


def test_start_failures_after_serving_back_off_and_reset(gangway, tmp_path):
    """After the app served once, a worker that cannot start again (its import
    raises, segfaults, or exits) is retried with a growing delay while the
    other worker serves; a good start resets the count and the delay, so
    separate failures over the server's life never add up (issue 20: five of
    them, each followed by a good start, stopped the healthy workers and
    exited 1)."""
    flag = tmp_path / "flaky"
    s = gangway("--workers", "2", "proc_flaky:application", env=flaky_env(flag))
    other = current_workers(s.read_log())[2]
    firsts = []
    # six import failures in all (five made the master give up), a crash and
    # an exit at start among them
    for k, (how, fails) in enumerate([("raise", 2), ("raise", 1), ("segv", 1), ("raise", 1),
                                      ("exit0", 1), ("raise", 1), ("raise", 1)]):
        victim = current_workers(s.read_log())[1]
        seen = len(RETRY_RE.findall(s.read_log()))
        flag.write_text(how)
        # (a worker killed within 1 s of its start, again and again, would be
        # a crash loop of its own: test_worker_crashing_right_after_it_serves)
        wait_for(lambda: process_age(victim) >= 1.1, 5, interval=0.05,
                 what="worker 1 to be 1 s old")
        os.kill(victim, signal.SIGKILL)
        lines = wait_for(lambda: (lambda r: r[seen:] if len(r) >= seen + fails else None)(
            RETRY_RE.findall(s.read_log())), 20, what="round %d: %d failed start(s)" % (k, fails))
        flag.unlink()
        firsts.append(int(lines[0][2]))
        if fails == 2:
            assert int(lines[1][2]) == 2 * int(lines[0][2]), lines
        # meanwhile the other worker serves
        assert served_pid(s) == other
        wait_for(lambda: current_workers(s.read_log())[1] != victim and reaped(victim, s.pid),
                 20, what="round %d: worker 1 back" % k)
        assert s.proc.poll() is None, s.read_log()[-2000:]
    assert firsts == [firsts[0]] * len(firsts), firsts  # the delay started over each time
    log = s.read_log()
    assert "giving up" not in log
    workers = set(current_workers(log).values())
    assert live_children(s.pid) == workers and len(workers) == 2
    assert set(busy_pids(s, tmp_path, 2)) == workers


def test_worker_crashing_right_after_it_serves_backs_off(gangway, tmp_path):
    """Workers that say they serve and crash at once (a thread the app starts
    at import segfaults), one after another: each replacement waits longer
    than the one before instead of a fork loop; the other worker serves."""
    flag = tmp_path / "flaky"
    s = gangway("--workers", "2", "proc_flaky:application", env=flaky_env(flag))
    workers = current_workers(s.read_log())
    flag.write_text("later")
    t0 = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)

    def crashes():
        return s.read_log().count("Segmentation fault")
    wait_for(lambda: crashes() >= 4, 30, interval=0.05, what="four crashes")
    took = time.monotonic() - t0
    flag.unlink()
    log = s.read_log()
    assert crashes() <= 5, log[-2000:]
    # at least 1 s + 2 s of back-off between the four (0.3 s each to crash)
    assert took >= 3, "4 crashes in %.1fs:\n%s" % (took, log[-2000:])
    assert served_pid(s) == workers[2]
    assert s.proc.poll() is None


def signal_pending(pid, sig):
    """Whether sig is still pending for pid (process-wide or on its main
    thread); False once pid is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            st = f.read()
    except OSError:
        return False
    bit = 1 << (sig - 1)
    return any(int(v, 16) & bit for v in re.findall(r"^(?:ShdPnd|SigPnd):\s*([0-9a-f]+)$",
                                                       st, re.M))


def test_workers_ignore_reload_and_scaling_signals(gangway, tmp_path):
    """SIGHUP, SIGTTIN, SIGTTOU sent to a worker (a terminal hangup, `kill -HUP`
    of the wrong pid) do nothing to it: only the master acts on them (issue
    20: the worker died of SIGHUP)."""
    s = gangway("--workers", "2", "proc_app:application")
    workers = set(current_workers(s.read_log()).values())
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        for p in workers:
            os.kill(p, sig)
        for p in workers:
            # once delivered, a fatal default action has run: the worker is dying
            wait_for(lambda: not signal_pending(p, sig), 5, what="signal %d delivered" % sig)
        assert set(busy_pids(s, tmp_path, 2)) == workers, s.read_log()[-1500:]
    log = s.read_log()
    assert "killed by signal" not in log and "respawning" not in log, log[-1500:]
    assert live_children(s.pid) == workers
    assert "SIGHUP" not in log and "SIGTTIN" not in log  # the master got none of them


def test_app_child_processes_start_with_default_signals(gangway):
    """The worker's own dispositions are not handed on: a process the app
    starts has nothing ignored and nothing blocked (SIG_IGN would survive
    exec; a handler does not)."""
    s = gangway("proc_app:application")
    r = get(s, "/sigs")
    assert r.status == 200, r.body
    fields = dict(re.findall(r"^(Sig\w+):\s*([0-9a-f]+)$", r.body.decode(), re.M))
    assert int(fields["SigBlk"], 16) == 0, r.body
    ign = int(fields["SigIgn"], 16)
    # What gangway itself inherited stays as it was (make, say, starts the
    # suite with signals 32 and 33 ignored); Popen's restore_signals gave
    # gangway SIGPIPE and SIGXFSZ at their defaults.
    with open("/proc/self/status") as f:
        mine = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", f.read(), re.M).group(1), 16)
    inherited = mine & ~(1 << (signal.SIGPIPE - 1)) & ~(1 << (signal.SIGXFSZ - 1))
    added = ign & ~inherited
    names = [sg.name for sg in signal.Signals if added & (1 << (sg.value - 1))]
    assert added == 0, "ignored in the app's child: %s" % names


def test_sighup_to_every_process_is_one_graceful_reload(gangway, tmp_path):
    """`pkill -HUP gangway` (or a terminal hangup) reaches the master and every
    worker: one graceful reload, the request in flight finishes on its old
    worker."""
    app = reload_app(tmp_path)
    s = gangway("--workers", "2", "--wsgi-file", str(app), env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    marker = tmp_path / "slow-started"
    c = s.connect(timeout=15)
    try:
        with Load(s, threads=2, max_seconds=30) as load:
            load.wait_successes(20)
            c.sendall(b"GET /slow?marker=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n" % str(marker).encode())
            wait_for(marker.exists, 10, what="the slow request to start")
            reload_app(tmp_path, version="two-after-hup")
            for p in [s.pid] + sorted(old):
                os.kill(p, signal.SIGHUP)
            r = RawReader(c, timeout=15).read_response()
            assert r.status == 200 and r.body.startswith(b"slow done "), r.body
            assert pid_in(r.body) in old
            wait_for(lambda: "new worker(s) serving" in s.read_log(), 15, what="the new workers")
            wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to go")
            t_done = time.monotonic()
            wait_for(lambda: sum(1 for x in load.results if x[0] > t_done and x[2]) >= 20, 10,
                     what="requests after the reload")
    finally:
        c.close()
        kill_leftovers(s, old)
    log = s.read_log()
    assert "killed by signal" not in log, log[-2000:]
    assert log.count("graceful reload") == 1, log[-2000:]
    assert not load.failures(), load.summary()
    assert get(s).body.startswith(b"version=two-after-hup ")


def gone(pid):
    """pid has exited (it may stay a zombie of whoever inherited it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return True
    return st[st.rindex(")") + 2] in "ZX"


def kill_if_ours(pids):
    for p in pids:
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                ours = f.read().split(b"\0")[0] == BIN.encode()
            if ours and not gone(p):
                os.kill(p, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_workers_stop_when_the_master_dies(gangway, tmp_path, preload):
    """A master killed with SIGKILL leaves no worker serving unsupervised:
    each stops (gracefully) on its own (issue 14). With --preload, after a
    reload that re-executed the master in place too."""
    args = ["--workers", "2", "proc_app:application"]
    if preload:
        args.insert(0, "--preload")
    s = gangway(*args)
    if preload:
        s.signal(signal.SIGHUP)
        wait_for(lambda: s.read_log().count("gangway: ready") >= 2, 20,
                 what="the re-executed master's workers")
        wait_for(lambda: len(live_children(s.pid)) == 2, 15, what="the old workers to go")
    workers = live_children(s.pid)
    assert len(workers) == 2
    os.kill(s.pid, signal.SIGKILL)
    s.proc.wait(5)
    try:
        wait_for(lambda: all(gone(p) for p in workers), 10, what="the workers to stop")
    finally:
        kill_if_ours(workers)


def fresh_uid():
    """A uid with no passwd entry and no process: RLIMIT_NPROC counts only ours."""
    import pwd
    used = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                used.add(int(proc_status(int(d), "Uid")[0]))
            except (OSError, TypeError):
                pass
    for uid in range(47000 + os.getpid() % 1000, 60000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in used:
                return uid
    pytest.skip("no free uid")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users and set limits")
def test_failed_fork_is_retried_with_back_off(gangway, tmp_path):
    """A respawn whose fork() fails (EAGAIN under RLIMIT_NPROC) is retried with
    a growing delay, one line per attempt, until it succeeds (issue 14: the
    slot stayed empty forever)."""
    assert world_readable_path(os.path.join(APPS, "proc_app.py"))
    assert world_readable_path(BIN)
    uid = str(fresh_uid())
    as_uid = ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]
    # (prlimit on another user's process needs CAP_SYS_RESOURCE, which a
    # container's root may lack: the soft limit is moved as that user, under
    # a hard limit with room for LeakSanitizer's tracer at exit)
    prefix = ["prlimit", "--nproc=5:5"] + as_uid
    s = gangway("--workers", "2", "proc_app:application", prefix=prefix,
                env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert proc_status(s.pid, "Uid")[0] == uid
    workers = current_workers(s.read_log())
    try:
        # the master and worker 2 are all the processes the limit allows now
        subprocess.run(as_uid + ["prlimit", "--pid", str(s.pid), "--nproc=2:5"], check=True)
        os.kill(workers[1], signal.SIGKILL)
        pat = re.compile(r"cannot fork worker 1: Resource temporarily unavailable; "
                         r"retrying in (\d+)s")
        wait_for(lambda: len(pat.findall(s.read_log())) >= 2, 10, what="two failed forks")
        delays = [int(d) for d in pat.findall(s.read_log())]
        assert delays[:2] == [1, 2], delays
        assert served_pid(s) == workers[2]  # the other worker serves meanwhile
        subprocess.run(as_uid + ["prlimit", "--pid", str(s.pid), "--nproc=5:5"], check=True)
        wait_for(lambda: current_workers(s.read_log())[1] != workers[1], 15,
                 what="worker 1 back once fork() works again")
        wait_for(lambda: len(live_children(s.pid)) == 2, 10, what="two workers")
        assert len(pat.findall(s.read_log())) <= 4, s.read_log()[-2000:]
        new = set(current_workers(s.read_log()).values())
        assert live_children(s.pid) == new
        assert served_pid(s) in new
    finally:
        kill_leftovers(s, workers.values())


# ---------------------------------------------------------------------------
# SIGUSR1: reopen the access log
# ---------------------------------------------------------------------------

def test_sigusr1_reopens_access_log(gangway, tmp_path):
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    s = gangway("--workers", "2", "--access-log", str(path), "proc_app:application")
    assert get(s, "/before-rotate").status == 200
    wait_for(lambda: path.exists() and "/before-rotate" in path.read_text(), 5,
             what="the first access line")
    os.rename(path, rotated)
    s.signal(signal.SIGUSR1)
    wait_for(path.exists, 5, what="the reopened access log")
    # Workers reopen when the master passes the signal on: the first request
    # after it may land before that; poll with fresh requests (bounded).
    found = None
    for k in range(50):
        assert get(s, "/after-rotate-%d" % k).status == 200
        try:
            found = wait_for(lambda: re.search(r"/after-rotate-\d+", path.read_text()), 0.2,
                             what="an access line in the new file")
            break
        except TimeoutError:
            pass
    assert found, "no request logged in the reopened file; old file:\n" + rotated.read_text()
    # Once both workers reopened, every later request goes to the new file.
    tags = ["/after-all-%d" % k for k in range(10)]
    for t in tags:
        assert get(s, t).status == 200
    try:
        wait_for(lambda: all(t in path.read_text() for t in tags), 5,
                 what="the later access lines")
    except TimeoutError:
        pass  # reported below with where they went
    text = path.read_text()
    missing = [t for t in tags if t not in text]
    assert not missing, "went elsewhere: %s; old file has %s" % (
        missing, [t for t in missing if t in rotated.read_text()])
    assert "/before-rotate" in rotated.read_text()
    assert "/before-rotate" not in text


# ---------------------------------------------------------------------------
# pidfile, vacuum, unix sockets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("vacuum", [True, False], ids=["vacuum", "no-vacuum"])
def test_pidfile_and_unix_socket(gangway, tmp_path, vacuum):
    pidfile = tmp_path / "gangway.pid"
    sock = tmp_path / "gw.sock"
    args = ["--http", "unix:%s" % sock, "--pidfile", str(pidfile)]
    if vacuum:
        args.append("--vacuum")
    s = gangway(*(args + ["proc_app:application"]))
    assert s.unix == str(sock)
    assert pidfile.read_text().strip() == str(s.pid)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert get(s).status == 200
    assert s.stop() == 0
    assert pidfile.exists() != vacuum
    assert os.path.exists(sock) != vacuum


def test_chmod_socket(gangway, tmp_path):
    sock = tmp_path / "gw.sock"
    s = gangway("--http", "unix:%s" % sock, "--chmod-socket", "660", "proc_app:application")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert get(s).status == 200


# ---------------------------------------------------------------------------
# privileges
# ---------------------------------------------------------------------------

def world_readable_path(path):
    """Every directory on the way is o+x and the file is o+r."""
    p = os.path.abspath(path)
    if not os.stat(p).st_mode & stat.S_IROTH:
        return False
    d = os.path.dirname(p)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_uid_gid_drop(gangway, tmp_path):
    import grp
    import pwd
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup")
    app = os.path.join(APPS, "proc_app.py")
    assert world_readable_path(app), "tests/apps/proc_app.py is not readable by nobody"
    pidfile = tmp_path / "gangway.pid"  # in a root-only directory: written before the drop
    assert not os.stat(tmp_path).st_mode & stat.S_IWOTH
    s = gangway("--workers", "2", "--uid", "nobody", "--gid", "nogroup", "--pidfile",
                str(pidfile), "proc_app:application")
    assert pidfile.read_text().strip() == str(s.pid)
    assert os.stat(pidfile).st_uid == 0
    workers = set(current_workers(s.read_log()).values())
    assert len(workers) == 2
    for p in workers:
        assert proc_status(p, "Uid") == [str(nobody.pw_uid)] * 4
        assert proc_status(p, "Gid") == [str(nogroup.gr_gid)] * 4
    assert served_pid(s) in workers
    assert s.stop() == 0


# ---------------------------------------------------------------------------
# load balance between workers
# ---------------------------------------------------------------------------

def keepalive_client(server, n, counts, conns, errors, lock, deadline):
    try:
        sock = server.connect(timeout=10)
    except OSError as e:
        with lock:
            errors.append("connect: %s" % e)
        return
    try:
        rd = RawReader(sock, timeout=10)
        local = {}
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            r = rd.read_response()
            if r.status != 200:
                with lock:
                    errors.append("status %d" % r.status)
                return
            p = pid_in(r.body)
            local[p] = local.get(p, 0) + 1
        with lock:
            for p, c in local.items():
                counts[p] = counts.get(p, 0) + c
                conns[p] = conns.get(p, 0) + 1
    except (OSError, EOFError) as e:
        with lock:
            errors.append("%s: %s" % (type(e).__name__, e))
    finally:
        sock.close()


def test_keepalive_load_spreads_over_workers(gangway):
    s = gangway("--workers", "2", "--disable-logging", "proc_app:application")
    workers = set(current_workers(s.read_log()).values())
    counts, conns, errors, lock = {}, {}, [], threading.Lock()
    per_conn = 250
    deadline = time.monotonic() + 20
    threads = [threading.Thread(target=keepalive_client,
                                args=(s, per_conn, counts, conns, errors, lock, deadline),
                                daemon=True)
               for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    total = sum(counts.values())
    assert total == 64 * per_conn
    assert set(counts) <= workers
    shares = {p: counts.get(p, 0) / total for p in workers}
    assert all(0.35 <= v <= 0.65 for v in shares.values()), \
        "requests per worker: %s of %d (connections per worker: %s)" % (counts, total, conns)


# ---------------------------------------------------------------------------
# --preload: the app imported once in the master; a reload re-executes it
# ---------------------------------------------------------------------------

def test_preload_imports_in_master_and_reload_reexecutes(gangway, tmp_path):
    app = reload_app(tmp_path)
    s = gangway("--workers", "2", "--preload", "--wsgi-file", str(app), env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    assert get(s).body.startswith(b"version=one ")
    try:
        with Load(s, threads=4, max_seconds=30) as load:
            load.wait_successes(50)
            reload_app(tmp_path, version="two-preloaded")
            s.signal(signal.SIGHUP)
            wait_for(lambda: "re-executing the master (pid %d)" % s.pid in s.read_log(), 10,
                     what="the master to re-execute itself")
            wait_for(lambda: s.read_log().count("gangway: ready") >= 2, 10,
                     what="the re-executed master's workers to serve")
            wait_for(lambda: all(reaped(p, s.pid) for p in old), 10,
                     what="the old workers to exit")
            t_done = time.monotonic()
            wait_for(lambda: sum(1 for r in load.results if r[0] > t_done and r[2]) >= 100, 10,
                     what="requests after the reload")
    finally:
        kill_leftovers(s, old)
    after = [r for r in load.results if r[2] and r[0] > t_done]
    assert all(r[3].startswith(b"version=two-preloaded ") for r in after)
    assert not load.failures(), load.summary()
    # Same process, same sockets: the pid did not change and SIGTERM still ends it.
    assert s.proc.poll() is None
    s.signal(signal.SIGTERM)
    assert exit_code(s, 15) == 0


def test_preload_reuse_port_reload_keeps_serving(gangway, tmp_path):
    """--preload --reuse-port: the re-executed master's sockets keep their
    reuse-port role (issue 14: they lost it, the new workers accept()ed on a
    socket that does not listen, connections were refused and a worker spun
    writing 100k log lines a second). After the reload every request is
    answered by the new code and the log stays small."""
    app = reload_app(tmp_path)
    s = gangway("--workers", "2", "--preload", "--reuse-port", "--disable-logging",
                "--wsgi-file", str(app), env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    reload_app(tmp_path, version="two-reuse-port")
    s.signal(signal.SIGHUP)
    try:
        wait_for(lambda: s.read_log().count("gangway: ready") >= 2, 15,
                 what="the re-executed master's workers to serve")
        wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to exit")
    finally:
        kill_leftovers(s, old)
    for i in range(200):
        try:
            r = get(s, timeout=5)
        except OSError as e:
            pytest.fail("request %d after the reload: %s: %s; log tail:\n%s"
                        % (i, type(e).__name__, e, s.read_log()[-1500:]))
        assert r.status == 200 and r.body.startswith(b"version=two-reuse-port "), r.body[:100]
    lines = s.read_log().count("\n")
    assert lines < 60, "%d log lines; tail:\n%s" % (lines, s.read_log()[-1500:])


def test_preload_failed_reload_keeps_serving(gangway, tmp_path):
    app = reload_app(tmp_path)
    s = gangway("--workers", "2", "--preload", "--wsgi-file", str(app), env=RELOAD_ENV)
    old = set(current_workers(s.read_log()).values())
    reload_app(tmp_path, version="broken", broken=True)
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: the new configuration or app does not load"
             in s.read_log(), 15, what='"reload failed"')
    assert get(s).body.startswith(b"version=one ")
    assert live_children(s.pid) == old
    assert "proc_reload broken on purpose" in s.read_log()


def test_preload_import_error_exits_1(tmp_path):
    import subprocess
    app = reload_app(tmp_path, broken=True)
    p = subprocess.run([BIN, "--http", "127.0.0.1:0", "--preload", "--wsgi-file", str(app)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 1
    assert b"proc_reload broken on purpose" in p.stderr


def test_check_config(tmp_path):
    import subprocess
    good = subprocess.run([BIN, "--check-config", "hello:application"], cwd=APPS,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([BIN, "--check-config", "gangway_no_such_module_xyz"], cwd=APPS,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert bad.returncode == 1 and b"gangway_no_such_module_xyz" in bad.stderr


def test_reuse_port_spreads_over_workers(gangway):
    s = gangway("--workers", "2", "--reuse-port", "--disable-logging", "proc_app:application")
    workers = set(current_workers(s.read_log()).values())
    counts, conns, errors, lock = {}, {}, [], threading.Lock()
    deadline = time.monotonic() + 20
    threads = [threading.Thread(target=keepalive_client,
                                args=(s, 50, counts, conns, errors, lock, deadline), daemon=True)
               for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not errors, errors[:5]
    assert set(counts) == workers, (counts, workers)


# ---------------------------------------------------------------------------
# every reload re-executes the master: the configuration and the binary are
# read again, the sockets, workers and statistics are handed over
# ---------------------------------------------------------------------------

MODES = {"lazy": [], "preload": ["--preload"]}


def reload_and_wait(s, timeout=20):
    """SIGHUP, then wait until every worker of before is gone and as many new
    ones are live; returns the new workers' pids."""
    old = live_children(s.pid)
    s.signal(signal.SIGHUP)
    try:
        wait_for(lambda: all(reaped(p, s.pid) for p in old), timeout,
                 what="the old workers to exit after the reload")
        return wait_for(lambda: (lambda now: now if len(now) == len(old) else None)(
            live_children(s.pid)), timeout, what="the new workers")
    except TimeoutError:
        kill_leftovers(s, old)
        pytest.fail("the reload did not complete; log tail:\n" + s.read_log()[-3000:])


def listening_ports(log):
    return [int(p) for p in re.findall(r"listening on http://127\.0\.0\.1:(\d+)", log)]


@pytest.mark.parametrize("mode", MODES)
def test_reload_with_200_listeners(gangway, mode):
    """The hand-over of a reload names every listener (issue 14: the list
    was written into 512 bytes on the stack without a bound check)."""
    args = []
    for _ in range(200):
        args += ["--http", "127.0.0.1:0"]
    s = gangway(*args, "--disable-logging", *MODES[mode], "proc_app:application", listen=False)
    ports = listening_ports(s.read_log())
    assert len(set(ports)) == 200, ports
    new = reload_and_wait(s)
    for port in ports:  # every socket went on, on its port
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = RawReader(c).read_response()
        finally:
            c.close()
        assert r.status == 200 and pid_in(r.body) in new, (port, r.body)
    assert set(listening_ports(s.read_log())[200:]) == set(ports)


def write_ini(path, mode, extra):
    path.write_text("[uwsgi]\nchdir = %s\nmodule = cfg_app\nworkers = 2\n%s%s"
                    % (APPS, "preload = true\n" if mode == "preload" else "", extra))


def env_of(s, name):
    r = get(s, "/env/" + name)
    return r.body.decode() if r.status == 200 else None


@pytest.mark.parametrize("mode", MODES)
def test_reload_reads_the_edited_configuration(gangway, tmp_path, mode):
    """A reload reads the ini again, from where gangway was started (the ini
    path is relative, the ini itself changes directory): a changed `env =`
    reaches the app, a removed one is gone, and nothing of the hand-over
    shows in the app's environment."""
    ini = tmp_path / "app.ini"
    write_ini(ini, mode, "env = RELOAD_KEY=one\n")
    s = gangway("app.ini", cwd=str(tmp_path))
    assert env_of(s, "RELOAD_KEY") == "one"
    write_ini(ini, mode, "env = RELOAD_OTHER=two\n")
    reload_and_wait(s)
    assert env_of(s, "RELOAD_OTHER") == "two"
    assert env_of(s, "RELOAD_KEY") is None, "an `env =` removed from the ini stays set"
    for name in ("GANGWAY__LISTEN_FDS", "GANGWAY__OLD_WORKERS", "GANGWAY__SCOREBOARD_FD",
                 "GANGWAY__STATS_FD"):
        assert env_of(s, name) is None, name


@pytest.mark.parametrize("mode", MODES)
def test_reload_with_a_broken_configuration_keeps_the_old_workers(gangway, tmp_path, mode):
    """The new configuration is checked before anything changes: a bad value
    leaves the old workers serving, and the log says why (the check's own
    line, then one summary)."""
    ini = tmp_path / "app.ini"
    write_ini(ini, mode, "")
    s = gangway(str(ini))
    old = live_children(s.pid)
    write_ini(ini, mode, "max-requests = lots\n")
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in s.read_log(), 20, what='"reload failed"')
    log = s.read_log()
    assert re.search(r"app.ini:\d+: invalid value 'lots' for max-requests", log), log[-2000:]
    assert re.search(r"reload failed: .*the old workers keep serving", log), log[-2000:]
    assert log.index("invalid value 'lots'") < log.index("reload failed")
    wait_for(lambda: live_children(s.pid) == old, 10, what="only the old workers")
    assert pid_in(get(s, "/pid").body) in old
    # fixed, the next reload goes through
    write_ini(ini, mode, "env = RELOAD_KEY=fixed\n")
    reload_and_wait(s)
    assert env_of(s, "RELOAD_KEY") == "fixed"


@pytest.mark.parametrize("mode", MODES)
def test_reload_runs_the_binary_now_at_its_path(gangway, tmp_path, monkeypatch, mode):
    """A package upgrade replaces the binary (a new file renamed over the
    old one); the reload runs the new file, not the old deleted inode that
    /proc/self/exe points to."""
    import conftest
    import shutil
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "gangway"
    shutil.copy2(BIN, exe)
    monkeypatch.setattr(conftest, "BIN", str(exe))
    s = gangway("--workers", "2", *MODES[mode], "proc_app:application")
    assert os.stat("/proc/%d/exe" % s.pid).st_ino == os.stat(exe).st_ino
    shutil.copy2(BIN, d / "gangway.new")
    os.rename(d / "gangway.new", exe)
    upgraded = os.stat(exe).st_ino
    assert os.readlink("/proc/%d/exe" % s.pid).endswith(" (deleted)")
    new = reload_and_wait(s)
    assert os.stat("/proc/%d/exe" % s.pid).st_ino == upgraded, os.readlink(
        "/proc/%d/exe" % s.pid)
    for p in new:
        assert os.stat("/proc/%d/exe" % p).st_ino == upgraded
    assert pid_in(get(s).body) in new
    assert "re-executing the master (pid %d) from %s" % (s.pid, exe) in s.read_log()


def stats_get(s, path="/"):
    """The --stats JSON, from the last address the log names."""
    m = re.findall(r"statistics on http://([0-9.]+):(\d+) ", s.read_log())
    assert m, s.read_log()
    host, port = m[-1]
    c = socket.create_connection((host, int(port)), timeout=10)
    try:
        c.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        r = RawReader(c).read_response()
    finally:
        c.close()
    assert r.status == 200, r.status
    import json
    return json.loads(r.body)


@pytest.mark.parametrize("mode", MODES)
def test_statistics_go_on_across_reloads(gangway, tmp_path, mode):
    """Counters never go down and the uptime goes on (docs/observability.md):
    a reload carries the totals, the start and the generation across the
    re-exec, on the same --stats socket; while the old generation finishes a
    request, its worker and its counters are still shown."""
    s = gangway("--stats", "127.0.0.1:0", "--workers", "2", *MODES[mode],
                "proc_app:application")
    for _ in range(10):
        assert get(s).status == 200
    js0 = wait_for(lambda: (lambda js: js if js["totals"]["requests"] == 10 else None)(
        stats_get(s)), 10, what="10 requests counted")
    # a slow request keeps one old worker busy across the reload
    marker = tmp_path / "slow"
    c = s.connect(timeout=15)
    c.sendall(b"GET /slow?marker=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
              % str(marker).encode())
    wait_for(marker.exists, 10, what="the slow request to start")
    old = live_children(s.pid)
    s.signal(signal.SIGHUP)
    try:
        def reloaded():
            try:
                js = stats_get(s)
            except (OSError, EOFError):
                return None  # a statistics request in flight at the exec is cut
            return js if js["generation"] == js0["generation"] + 1 and sum(
                1 for w in js["workers"] if w["status"] != "stopping") == 2 else None
        js1 = wait_for(reloaded, 20, what="the new generation in the statistics")
        assert js1["started"] == js0["started"] and js1["uptime"] >= js0["uptime"]
        assert js1["totals"]["requests"] >= 10
        busy = [w for w in js1["workers"] if w["pid"] in old]
        assert busy and busy[0]["status"] == "stopping", js1["workers"]
        r = RawReader(c, timeout=15).read_response()
        assert r.status == 200 and pid_in(r.body) in old
        wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to exit")
    except BaseException:
        kill_leftovers(s, old)
        raise
    finally:
        c.close()
    for _ in range(5):
        assert get(s).status == 200
    wait_for(lambda: stats_get(s)["totals"]["requests"] == 16, 10,
             what="16 requests counted (10, the slow one, 5)")
    reload_and_wait(s)
    js2 = stats_get(s)
    assert js2["totals"]["requests"] == 16 and js2["started"] == js0["started"]
    assert js2["generation"] == js0["generation"] + 2
    assert js2["totals"]["status_classes"]["2xx"] == 16


def test_a_reload_leaks_no_descriptor_into_the_new_image(gangway):
    """What the previous image left open without close-on-exec (here a
    --preload app's inheritable /dev/null) is closed by the new one: reloads
    do not pile descriptors up in the master or its workers."""
    s = gangway("--preload", "--workers", "1", "reload_leak:application")

    def leaked():
        return int(re.search(rb"leaked=(\d+)", get(s).body).group(1))
    before = leaked()  # the import's own, inherited by the worker (and maybe stdin)
    nfds = len(os.listdir("/proc/%d/fd" % s.pid))
    for _ in range(3):
        reload_and_wait(s)
    assert leaked() == before
    assert len(os.listdir("/proc/%d/fd" % s.pid)) == nfds, os.listdir("/proc/%d/fd" % s.pid)


def run_with_handover(tmp_path, env, args=(), pass_fds=()):
    """gangway started with hand-over variables of our making (as a reloading
    master would set them); returns (proc, log path)."""
    log = tmp_path / "handover.log"
    e = {k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_")}
    e.update(env)
    with open(log, "wb") as f:
        p = subprocess.Popen([BIN, *args, "proc_app:application"], stdout=f,
                             stderr=subprocess.STDOUT, cwd=APPS, env=e, pass_fds=pass_fds)
    return p, log


@pytest.mark.parametrize("env,says", [
    ({"GANGWAY__LISTEN_FDS": "3,x"}, "GANGWAY__LISTEN_FDS='3,x': want descriptors"),
    ({"GANGWAY__LISTEN_FDS": ""}, "GANGWAY__LISTEN_FDS='': want descriptors"),
    ({"GANGWAY__LISTEN_FDS": "99999999999"}, "want descriptors"),
    ({"GANGWAY__LISTEN_FDS": "1"}, "descriptor 1 is standard input, output or error"),
    ({"GANGWAY__LISTEN_FDS": "900"}, "GANGWAY__LISTEN_FDS: descriptor 900: Bad file descriptor"),
    ({"GANGWAY__OLD_WORKERS": "123"}, "GANGWAY__OLD_WORKERS is set without GANGWAY__LISTEN_FDS"),
    ({"GANGWAY__LISTEN_FDS": "@", "GANGWAY__OLD_WORKERS": "1,1"}, "GANGWAY__LISTEN_FDS='@'"),
])
def test_a_bad_handover_is_one_clear_error(tmp_path, env, says):
    p, log = run_with_handover(tmp_path, env)
    try:
        rc = p.wait(15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = log.read_text()
    assert rc == 1, (rc, text)
    assert says in text and "(set only by a reloading gangway master)" in text, text


def test_a_handover_pid_that_is_not_our_worker_is_left_alone(tmp_path):
    """A hand-over naming a process that is not this master's child (wrong
    or forged) never gets it signalled: the new workers serve, it lives."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    bystander = subprocess.Popen(["sleep", "60"])
    p = None
    try:
        p, log = run_with_handover(tmp_path, {
            "GANGWAY__LISTEN_FDS": str(ls.fileno()),
            "GANGWAY__OLD_WORKERS": str(bystander.pid)},
            args=("--http", "127.0.0.1:%d" % ls.getsockname()[1]), pass_fds=(ls.fileno(),))
        wait_for(lambda: p.poll() is not None or "ready" in log.read_text(), 15,
                 what="gangway to serve")
        assert p.poll() is None, log.read_text()
        c = socket.create_connection(ls.getsockname(), timeout=10)
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert RawReader(c).read_response().status == 200
        finally:
            c.close()
        assert bystander.poll() is None, "a process named in GANGWAY__OLD_WORKERS was killed"
        assert "process %d named in GANGWAY__OLD_WORKERS is not a worker of this master" \
            % bystander.pid in log.read_text()
    finally:
        bystander.kill()
        bystander.wait()
        if p is not None:
            from conftest import stop_process
            stop_process(p)
        ls.close()


def test_reload_follows_listener_changes(gangway, tmp_path):
    """Addresses are read again too: a socket whose address stays is handed
    over (same port, never unbound), a new address is bound, a removed one
    closed."""
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    ini = tmp_path / "app.ini"

    def write(unix):
        ini.write_text("[uwsgi]\nchdir = %s\nmodule = proc_app\nhttp = 127.0.0.1:0\n"
                       "http = unix:%s\n" % (APPS, unix))
    write(a)
    s = gangway(str(ini), listen=False)
    port = s.port

    def unix_get(path):
        u = socket.socket(socket.AF_UNIX)
        u.settimeout(10)
        try:
            u.connect(path)
            u.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return RawReader(u).read_response()
        finally:
            u.close()
    assert unix_get(a).status == 200
    write(b)
    new = reload_and_wait(s)
    assert pid_in(unix_get(b).body) in new
    assert pid_in(get(s).body) in new and s.port == port
    with pytest.raises(OSError):
        unix_get(a)
    log = s.read_log()
    assert "reload: http://unix:%s is no longer configured: closed" % a in log


FLAKY_APP = '''
import os
BROKEN = os.environ["GW_TEST_BROKEN"]
if os.path.exists(BROKEN) and b"--check-config" not in open("/proc/self/cmdline", "rb").read():
    raise RuntimeError("broken outside the check")


def application(environ, start_response):
    body = ("pid=%d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def test_reload_whose_new_workers_cannot_load_keeps_the_old_ones(gangway, tmp_path):
    """The check passes but the re-executed master's new workers cannot load
    the app: they are stopped and the old workers, handed over, keep
    serving as the current generation; a later reload goes through."""
    app = tmp_path / "flaky.py"
    app.write_text(FLAKY_APP)
    broken = tmp_path / "broken"
    s = gangway("--workers", "2", "--wsgi-file", str(app),
                env={"GW_TEST_BROKEN": str(broken), **RELOAD_ENV})
    old = live_children(s.pid)
    broken.write_text("x")
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: the new workers cannot load the app" in s.read_log(), 20,
             what="the new workers to fail")
    assert "broken outside the check" in s.read_log()
    assert "re-executing the master" in s.read_log()
    wait_for(lambda: live_children(s.pid) == old, 10, what="only the old workers")
    for _ in range(10):
        assert pid_in(get(s).body) in old
    broken.unlink()
    new = reload_and_wait(s)
    assert not new & old and pid_in(get(s).body) in new


def test_reload_into_a_binary_that_does_not_answer_the_check(gangway, tmp_path, monkeypatch):
    """The binary at the path is replaced by one that predates the hand-over
    check (simulated: a script that hides GANGWAY__CHECK_FD from the real
    binary). It gets the sockets and the workers only, and keeps serving;
    --stats, which such a binary binds again, is free for it to bind."""
    import conftest
    import shutil
    d = tmp_path / "bin"
    d.mkdir()
    exe, real = d / "gangway", d / "gangway-real"
    shutil.copy2(BIN, exe)
    shutil.copy2(BIN, real)
    monkeypatch.setattr(conftest, "BIN", str(exe))
    s = gangway("--workers", "2", "--stats", "127.0.0.1:0", "proc_app:application")
    for _ in range(3):
        assert get(s).status == 200
    script = d / "gangway.new"
    script.write_text("#!/bin/sh\nunset GANGWAY__CHECK_FD\nexec %s \"$@\"\n" % real)
    script.chmod(0o755)
    os.rename(script, exe)
    new = reload_and_wait(s)
    log = s.read_log()
    assert "takes only the sockets and the workers over (an older gangway)" in log, log[-2000:]
    assert os.stat("/proc/%d/exe" % s.pid).st_ino == os.stat(real).st_ino
    assert pid_in(get(s).body) in new
    js = stats_get(s)  # bound again by the new image, answering
    assert js["totals"]["requests"] <= 1  # started again from zero


# ---------------------------------------------------------------------------
# a reload's new image runs what its check validated, survives what it can;
# the check has a deadline and never outlives the master
# ---------------------------------------------------------------------------

# tmp_path/app/step_app.py. In a reload's check (`--check-config` in its
# command line), the import runs in_check.py once when the test left one (to
# change the world between the check and the re-exec, or to hang); workers
# wait while hold_workers exists.
STEP_APP = r'''
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))
if b"--check-config" in open("/proc/self/cmdline", "rb").read():
    step = os.path.join(HERE, "in_check.py")
    if os.path.exists(step):
        code = open(step).read()
        os.unlink(step)
        exec(code)
else:
    while os.path.exists(os.path.join(HERE, "hold_workers")):
        time.sleep(0.01)


def application(environ, start_response):
    body = ("pid=%d key=%s" % (os.getpid(), os.environ.get("RELOAD_KEY"))).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def step_app(tmp_path):
    d = tmp_path / "app"
    d.mkdir(exist_ok=True)
    (d / "step_app.py").write_text(STEP_APP)
    return d


def step_ini(path, appdir, extra=""):
    path.write_text("[gangway]\nchdir = %s\nmodule = step_app\nworkers = 2\n"
                    "http-socket = 127.0.0.1:0\n%s" % (appdir, extra))


def start_step(gangway, tmp_path, extra="", args=()):
    appdir = step_app(tmp_path)
    ini = tmp_path / "app.ini"
    step_ini(ini, appdir, extra)
    s = gangway(str(ini), *args, listen=False, env=RELOAD_ENV)
    return s, ini, appdir


def key_of(s):
    r = get(s)
    assert r.status == 200, r.body
    return re.search(rb"key=(\S+)", r.body).group(1).decode()


def assert_old_workers_serve(s, old):
    wait_for(lambda: live_children(s.pid) == old, 10, what="only the old workers")
    for _ in range(5):
        assert pid_in(get(s).body) in old


def checker_of(s, workers, timeout=10):
    """The reload's checker: the master's child that is none of its workers."""
    return wait_for(lambda: (lambda c: c.pop() if len(c) == 1 else None)(
        live_children(s.pid) - workers), timeout, what="the reload's check to start")


def kill_stray(pids, argv0):
    """After a failed test: SIGKILL the processes a test's app started, by
    pid, if they still run argv0."""
    for p in pids:
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                if f.read().split(b"\0")[0] == argv0.encode() and not gone(p):
                    os.kill(p, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("what", ["log-file", "stats"])
def test_reload_checks_what_the_new_master_opens(gangway, tmp_path, what):
    """A log file that cannot be opened for appending, a --stats address
    someone else holds: the check says so and the reload fails, instead of
    the re-executed master exiting and taking the old workers with it."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        s, ini, appdir = start_step(gangway, tmp_path, "env = RELOAD_KEY=one\n")
        old = live_children(s.pid)
        extra = ("log-file = %s/no-such-dir/gw.log\n" % tmp_path if what == "log-file"
                 else "stats = 127.0.0.1:%d\n" % busy.getsockname()[1])
        step_ini(ini, appdir, "env = RELOAD_KEY=two\n" + extra)
        s.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in s.read_log() or s.proc.poll() is not None, 20,
                 what='"reload failed"')
        log = s.read_log()
        assert s.proc.poll() is None, log[-3000:]
        says = ("cannot open the log file '%s/no-such-dir/gw.log'" % tmp_path
                if what == "log-file" else "--stats 127.0.0.1:%d" % busy.getsockname()[1])
        assert says in log, log[-3000:]
        assert "re-executing" not in log
        assert_old_workers_serve(s, old)
        assert key_of(s) == "one"
    finally:
        busy.close()


def test_plain_check_config_opens_no_log_file(tmp_path):
    """--check-config tells a log file that cannot be created, and creates
    none that can."""
    log = tmp_path / "gw.log"
    ok = subprocess.run([BIN, "--check-config", "--log-file", str(log), "hello:application"],
                        cwd=APPS, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert not log.exists()
    bad = subprocess.run([BIN, "--check-config", "--log-file", str(tmp_path / "nope" / "gw.log"),
                          "hello:application"], cwd=APPS, capture_output=True, timeout=30)
    assert bad.returncode == 1 and b"cannot open the log file" in bad.stderr, bad.stderr


def test_reload_runs_the_configuration_its_check_read(gangway, tmp_path):
    """The ini edited again between the check and the re-exec (here by the
    check's own import, the worst moment): the new master runs what was
    checked, not what is in the file now; the next reload reads the file."""
    s, ini, appdir = start_step(gangway, tmp_path, "env = RELOAD_KEY=one\n")
    step_ini(ini, appdir, "env = RELOAD_KEY=two\n")
    (appdir / "in_check.py").write_text(
        "open(%r, 'a').write('max-requests = lots\\nlog-file = /nonexistent/gw.log\\n')\n"
        % str(ini))
    new = reload_and_wait(s)
    assert key_of(s) == "two" and pid_in(get(s).body) in new
    assert "reload: " in s.read_log() and "invalid value 'lots'" not in s.read_log()
    # the file as it is now does not load: that reload fails, the workers stay
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in s.read_log(), 20, what='"reload failed"')
    assert "invalid value 'lots' for max-requests" in s.read_log()
    assert_old_workers_serve(s, new)


def test_reload_executes_the_binary_its_check_ran(gangway, tmp_path, monkeypatch):
    """A broken binary renamed over the path between the check and the
    re-exec is not what runs: the re-exec executes the file the check ran."""
    import conftest
    import shutil
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "gangway"
    shutil.copy2(BIN, exe)
    monkeypatch.setattr(conftest, "BIN", str(exe))
    s, ini, appdir = start_step(gangway, tmp_path)
    shutil.copy2(BIN, d / "gangway.checked")
    os.rename(d / "gangway.checked", exe)
    checked = os.stat(exe).st_ino
    broken = d / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    (appdir / "in_check.py").write_text("os.rename(%r, %r)\n" % (str(broken), str(exe)))
    new = reload_and_wait(s)
    assert os.stat("/proc/%d/exe" % s.pid).st_ino == checked
    assert pid_in(get(s).body) in new
    # the next check runs the broken file: that reload fails, the workers stay
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in s.read_log(), 20, what='"reload failed"')
    assert_old_workers_serve(s, new)


@pytest.mark.parametrize("vanishes", ["log-dir", "chdir"])
def test_reload_whose_new_master_cannot_open_what_the_check_could(gangway, tmp_path, vanishes):
    """What the check opened is gone when the new master starts (renamed by
    the check's import): the new master, holding the old workers, does not
    exit. A log file it cannot open leaves the log where it was; a --chdir
    that fails leaves the new workers unable to load the app, and the old
    ones keep serving."""
    s, ini, appdir = start_step(gangway, tmp_path)
    old = live_children(s.pid)
    logs = tmp_path / "logs"
    logs.mkdir()
    if vanishes == "log-dir":
        step_ini(ini, appdir, "log-file = %s/gw.log\nenv = RELOAD_KEY=two\n" % logs)
        moved = (logs, tmp_path / "logs-gone")
    else:
        step_ini(ini, appdir, "env = RELOAD_KEY=two\n")
        moved = (appdir, tmp_path / "app-gone")
    (appdir / "in_check.py").write_text("os.rename(%r, %r)\n" % tuple(map(str, moved)))
    s.signal(signal.SIGHUP)
    if vanishes == "log-dir":
        wait_for(lambda: "new worker(s) serving" in s.read_log() or s.proc.poll() is not None,
                 20, what="the reload to complete")
        assert s.proc.poll() is None, s.read_log()[-3000:]
        assert "reload: cannot open the log file '%s/gw.log'" % logs in s.read_log()
        wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to go")
        assert key_of(s) == "two"
    else:
        wait_for(lambda: "reload failed" in s.read_log() or s.proc.poll() is not None, 20,
                 what='"reload failed"')
        assert s.proc.poll() is None, s.read_log()[-3000:]
        assert "reload: cannot chdir to '%s'" % appdir in s.read_log()
        assert_old_workers_serve(s, old)
        os.rename(tmp_path / "app-gone", appdir)
        reload_and_wait(s)
        assert key_of(s) == "two"


@pytest.mark.parametrize("before", ["none", "tcp"])
def test_reload_to_a_stats_address_that_cannot_bind(gangway, tmp_path, before):
    """A new --stats address the new master cannot bind (a unix path, which
    the check leaves to it): the statistics stay on the socket handed over,
    or there are none, and the reload completes."""
    s, ini, appdir = start_step(gangway, tmp_path,
                                "stats = 127.0.0.1:0\n" if before == "tcp" else "")
    if before == "tcp":
        js0 = stats_get(s)
    step_ini(ini, appdir, "stats = unix:%s/no-such-dir/stats.sock\nenv = RELOAD_KEY=two\n"
             % tmp_path)
    old = live_children(s.pid)
    s.signal(signal.SIGHUP)
    wait_for(lambda: "new worker(s) serving" in s.read_log() or s.proc.poll() is not None, 20,
             what="the reload to complete")
    # an old worker told to stop may still take a request it had accepted
    wait_for(lambda: all(reaped(p, s.pid) for p in old), 15, what="the old workers to go")
    log = s.read_log()
    assert s.proc.poll() is None, log[-3000:]
    if before == "tcp":
        assert re.search(r"reload: --stats unix:\S+: .*; statistics stay on http://127\.0\.0\.1:"
                         r"\d+ until the next reload", log), log[-2000:]
        js = stats_get(s)
        assert js["started"] == js0["started"] and js["generation"] == js0["generation"] + 1
    else:
        assert "; no statistics until the next reload" in log, log[-2000:]
    assert key_of(s) == "two"


HANG_CHECK = '''
import subprocess
child = subprocess.Popen(["sleep", "300"])
open(%r, "w").write(str(child.pid))
time.sleep(3600)
'''


def hang_next_check(appdir, tmp_path):
    """The next check hangs in the app's import, after starting a process
    of its own; returns the file that gets that process's pid."""
    pidfile = tmp_path / "grandchild.pid"
    (appdir / "in_check.py").write_text(HANG_CHECK % str(pidfile))
    return pidfile


def test_reload_check_that_hangs_is_killed_at_its_deadline(gangway, tmp_path):
    """A check that never finishes (an import waiting for a database) is
    killed with what it started after --reload-check-timeout; the reload
    fails, the old workers serve, and the next reload is a reload."""
    s, ini, appdir = start_step(gangway, tmp_path, "reload-check-timeout = 2\n")
    old = live_children(s.pid)
    pidfile = hang_next_check(appdir, tmp_path)
    s.signal(signal.SIGHUP)
    checker = checker_of(s, old)
    wait_for(pidfile.exists, 10, what="the check to start its own process")
    grandchild = int(wait_for(pidfile.read_text, 5, what="its pid"))
    try:
        wait_for(lambda: "reload failed: the check did not finish within 2s" in s.read_log(),
                 20, what="the deadline")
        wait_for(lambda: gone(checker) and gone(grandchild), 5, what="the check to be killed")
        log = s.read_log()
        assert "still runs after 2s (--reload-check-timeout): killing it" in log
        assert_old_workers_serve(s, old)
        new = reload_and_wait(s)
        assert pid_in(get(s).body) in new
    finally:
        kill_stray([grandchild], "sleep")
        kill_stray([checker], BIN)


def test_sighup_during_a_check_starts_it_again(gangway, tmp_path):
    """A SIGHUP while a check runs (hung here): the files may have changed
    since it read them, so it is stopped and a new one runs, which reloads.
    No SIGHUP is dropped as 'already under way'."""
    s, ini, appdir = start_step(gangway, tmp_path, "env = RELOAD_KEY=one\n")
    old = live_children(s.pid)
    pidfile = hang_next_check(appdir, tmp_path)
    s.signal(signal.SIGHUP)
    checker = checker_of(s, old)
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 10,
                              what="the check to hang"))
    try:
        step_ini(ini, appdir, "env = RELOAD_KEY=two\n")
        s.signal(signal.SIGHUP)
        wait_for(lambda: all(reaped(p, s.pid) for p in old), 20, what="the reload")
        assert gone(checker) and gone(grandchild)
        assert key_of(s) == "two"
        assert "stopping it; a new one follows" in s.read_log()
    finally:
        kill_stray([grandchild], "sleep")
        kill_stray([checker], BIN)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_check_never_outlives_the_master(gangway, tmp_path, how):
    """A stop during a reload's check kills the check and what it started,
    and the master waits for it; a master killed outright takes its checker
    along (PR_SET_PDEATHSIG)."""
    s, ini, appdir = start_step(gangway, tmp_path)
    old = live_children(s.pid)
    pidfile = hang_next_check(appdir, tmp_path)
    s.signal(signal.SIGHUP)
    checker = checker_of(s, old)
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 10,
                              what="the check to hang"))
    try:
        if how == "SIGTERM":
            s.signal(signal.SIGTERM)
            assert exit_code(s, 20) == 0
            assert gone(checker) and gone(grandchild)
            assert "stopping the reload's check (pid %d)" % checker in s.read_log()
        else:
            os.kill(s.pid, signal.SIGKILL)
            s.proc.wait(10)
            wait_for(lambda: gone(checker), 10, what="the checker to die with the master")
    finally:
        kill_stray([grandchild], "sleep")
        kill_stray([checker], BIN)
        kill_if_ours(old)


def test_sighup_while_the_new_workers_start_reloads_after(gangway, tmp_path):
    """A SIGHUP while a reload's new generation is starting is not dropped:
    another reload follows once that one is done, reading the configuration
    as it is then."""
    s, ini, appdir = start_step(gangway, tmp_path, "env = RELOAD_KEY=one\n")
    old = live_children(s.pid)
    hold = appdir / "hold_workers"
    hold.write_text("x")
    try:
        step_ini(ini, appdir, "env = RELOAD_KEY=two\n")
        s.signal(signal.SIGHUP)
        wait_for(lambda: "starting 2 new worker(s)" in s.read_log(), 20,
                 what="the new generation")
        step_ini(ini, appdir, "env = RELOAD_KEY=three\n")
        s.signal(signal.SIGHUP)
        wait_for(lambda: "another reload follows once this one is done" in s.read_log(), 10,
                 what="the second SIGHUP to be taken")
    finally:
        hold.unlink()
    wait_for(lambda: s.read_log().count("new worker(s) serving") == 2, 30,
             what="both reloads")
    wait_for(lambda: key_of(s) == "three", 10, what="the newest configuration")
    wait_for(lambda: not (live_children(s.pid) & old), 15, what="the first workers to go")


SLOT_WRAPPER = r'''
import mmap, os, signal, struct, sys
binary, board, sock = sys.argv[1], sys.argv[2], sys.argv[3]
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
        while True:
            signal.pause()
    kids.append(pid)
open(board + ".kids", "w").write("%d %d" % tuple(kids))
with open(board, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    slot_size = struct.unpack_from("<I", m, 12)[0]
    struct.pack_into("<I", m, 0, 2)  # slots in use
    for i, (pid, requests) in enumerate(zip(kids, (5, 7))):
        off = 64 + i * slot_size
        struct.pack_into("<iII", m, off, pid, 2, 1)  # pid, ready, generation 1
        struct.pack_into("<Q", m, off + 32, requests)
    m.close()
fd = os.open(board, os.O_RDWR)
os.set_inheritable(fd, True)
env = dict(os.environ, GANGWAY__LISTEN_FDS=sock, GANGWAY__SCOREBOARD_FD=str(fd),
           GANGWAY__OLD_WORKERS="%d,%d" % (kids[1], kids[0]))
os.execve(binary, [binary] + sys.argv[4:], env)
'''


def test_old_workers_keep_their_slots_when_nothing_was_carried(gangway, tmp_path):
    """A scoreboard handed over whose carried area is not this version's
    (here a running master's, copied: nothing was carried into it yet): each
    old worker is still found in its own slot by its pid, whatever the order
    the hand-over names them in; none gets another's slot, reset."""
    donor = gangway("--workers", "1", "proc_app:application")
    fd = next(f for f in os.listdir("/proc/%d/fd" % donor.pid)
              if os.readlink("/proc/%d/fd/%s" % (donor.pid, f)).startswith(
                  "/memfd:gangway-scoreboard"))
    board = tmp_path / "board"
    with open("/proc/%d/fd/%s" % (donor.pid, fd), "rb") as f:
        board.write_bytes(f.read())
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(SLOT_WRAPPER)
    log = tmp_path / "slots.log"
    e = {k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_")}
    with open(log, "wb") as out:
        p = subprocess.Popen(["/usr/bin/python3", str(wrapper), BIN, str(board),
                              str(ls.fileno()), "--http", "127.0.0.1:%d" % port, "--stats",
                              "127.0.0.1:0", "--workers", "1", "proc_app:application"],
                             stdout=out, stderr=subprocess.STDOUT, cwd=APPS, env=e,
                             pass_fds=(ls.fileno(),))
    ls.close()
    kids = []
    try:
        wait_for(lambda: p.poll() is not None or "ready" in log.read_text(), 20,
                 what="gangway to serve")
        kids = [int(x) for x in open(str(board) + ".kids").read().split()]
        assert p.poll() is None, log.read_text()
        import types
        s = types.SimpleNamespace(read_log=log.read_text)
        wait_for(lambda: stats_get(s)["totals"]["requests"] == 12, 10,
                 what="the old workers' 5 and 7 requests in the totals")
        assert "is not a worker of this master" not in log.read_text()
    finally:
        from conftest import stop_process
        stop_process(p)
        kill_stray(kids, "/usr/bin/python3")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU],
                         ids=lambda s: s.name)
def test_a_signal_before_the_master_runs_waits_for_it(gangway, tmp_path, sig):
    """A signal the master acts on, sent after the process started but
    before its handlers are in place (here: while it reads an ini that is a
    FIFO nobody writes yet), waits for them: SIGHUP and SIGUSR1 do not kill
    it, SIGTTIN and SIGTTOU do not stop it; each is then acted on."""
    fifo = tmp_path / "held.ini"
    os.mkfifo(fifo)
    s = gangway(str(fifo), wait=False)

    def in_open():
        try:
            with open("/proc/%d/wchan" % s.pid) as f:
                if f.read() == "wait_for_partner":
                    return True
            with open("/proc/%d/syscall" % s.pid) as f:
                return f.read().split()[0] == "257"  # openat
        except (OSError, IndexError):
            return False
    wait_for(in_open, 10, what="gangway to wait for the FIFO")
    s.signal(sig)
    text = "[gangway]\nmodule = proc_app:application\nworkers = 2\n"
    real = tmp_path / "real.ini"
    real.write_text(text)
    # non-blocking: a gangway killed by the signal is no reader to wait for
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(real, fifo)  # what a reload's check reads
    s.wait_ready()
    assert s.proc.poll() is None
    assert proc_status(s.pid, "State")[0] != "T"
    if sig == signal.SIGHUP:
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 20, what="the reload")
    elif sig == signal.SIGTTIN:
        wait_for(lambda: len(live_children(s.pid)) == 3, 10, what="a third worker")
    elif sig == signal.SIGTTOU:
        wait_for(lambda: len(live_children(s.pid)) == 1, 10, what="one worker")
    assert get(s).status == 200


def test_check_config_runs_with_the_signal_mask_it_was_given(tmp_path):
    """The master's signals are blocked from the first instruction, but a run
    that starts no master gives the mask back: the app a check imports sees
    nothing blocked."""
    app = tmp_path / "mask_app.py"
    app.write_text("blk = [l for l in open('/proc/self/status') if l.startswith('SigBlk')]\n"
                   "assert int(blk[0].split()[1], 16) == 0, blk\n"
                   "def application(e, sr):\n    return []\n")
    r = subprocess.run([BIN, "--check-config", "--wsgi-file", str(app)], cwd=str(tmp_path),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
