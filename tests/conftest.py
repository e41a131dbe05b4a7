"""Shared fixtures: start the real gangway binary on 127.0.0.1 and stop it by PID.

The server is started on port 0; the test reads the bound address from the
"listening on" line of its log, so no port is ever guessed. Every wait is a
bounded poll on a condition, never a bare sleep.
"""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "apps")
BIN = os.environ.get("GW_TEST_BIN", os.path.join(ROOT, "gangway"))
PYTHON = "/usr/bin/python3"
THREADS = os.environ.get("GW_TEST_THREADS")


def trickle_until_closed(sock, chunk, limit=6.0):
    """Sends chunk every 0.2 s while waiting for the server to close sock
    (a slowloris that keeps a header or a body going): (closed, what the
    server sent, seconds until the close). Bounded by limit seconds."""
    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < limit:
        sock.settimeout(0.2)  # paces the trickle while waiting for the close
        try:
            b = sock.recv(100)
            if not b:
                return True, got, time.monotonic() - t0
            got += b
        except socket.timeout:
            try:
                sock.sendall(chunk)
            except OSError:
                return True, got, time.monotonic() - t0
        except ConnectionResetError:
            return True, got, time.monotonic() - t0
    return False, got, time.monotonic() - t0


def wait_for(cond, timeout=10.0, interval=0.01, what="condition"):
    """Poll cond() until it returns a truthy value or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(interval)


def children(pid):
    """The child pids of pid (all its threads' children), from /proc."""
    out = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def live_children(pid):
    """Children that are not zombies."""
    out = set()
    for c in children(pid):
        try:
            with open("/proc/%d/stat" % c) as f:
                st = f.read()
        except OSError:
            continue
        if st[st.rindex(")") + 2] != "Z":
            out.add(c)
    return out


def stop_process(proc, timeout=15):
    """SIGTERM to a process we started (by its PID), SIGKILL after timeout
    seconds; its exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


class Server:
    """One gangway process. Its log (stdout+stderr) goes to a file."""

    def __init__(self, tmp_path, args, cwd=None, env=None, prefix=()):
        self.log_path = os.path.join(str(tmp_path), "gangway-%d.log" % id(self))
        # prefix: programs that exec gangway in place (prlimit, setpriv), so
        # that self.pid is still gangway's master
        self.args = list(prefix) + [BIN] + list(args)
        # gangway reads GANGWAY_* variables as options: none of the caller's
        # leak into a test (the harness's own are GW_TEST_*).
        e = {k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_")}
        e.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=cwd or APPS, env=e)
        self.pid = self.proc.pid
        self.host = self.port = self.unix = None

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=15):
        # The master's own "ready" line, the last of its start-up lines: any
        # "ready" (a "worker 1 ready" line) could come while the next lines
        # are still being written.
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("gangway exited %s:\n%s" % (self.proc.returncode, self.read_log()))
            log = self.read_log()
            return re.search(r"^gangway: ready$", log, re.M) and log
        log = wait_for(ready, timeout, what="gangway ready")
        m = re.search(r"listening on http://(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d+)", log)
        if m:
            self.host, self.port = m.group(1) or m.group(2), int(m.group(3))
        m = re.search(r"listening on http://unix:(\S+)", log)
        if m:
            self.unix = m.group(1)
        return self

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def connect(self, timeout=10):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout=15):
        rc = stop_process(self.proc, timeout)
        self.log.close()
        return rc

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


@pytest.fixture
def gangway(tmp_path):
    """gangway(app_spec, *extra_args) -> a ready Server on 127.0.0.1, port 0.
    wait=False: started, not waited for; prefix: see Server."""
    servers = []

    def start(*args, listen=True, cwd=None, env=None, wait=True, prefix=()):
        argv = list(args)
        # GW_TEST_THREADS=4: every start also gets --threads 4 (a run of the
        # suite that looks for threading bugs; not part of make test)
        if THREADS and "--threads" not in argv and listen:
            argv = ["--threads", THREADS] + argv
        if listen and "--http" not in argv:
            argv = ["--http", "127.0.0.1:0"] + argv
        s = Server(tmp_path, argv, cwd=cwd, env=env, prefix=prefix)
        servers.append(s)
        if wait:
            s.wait_ready()
        return s

    yield start
    for s in servers:
        s.stop()


def recv_all(sock, timeout=10):
    """Read until the peer closes; returns bytes."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        b = sock.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


class Response:
    def __init__(self, status, reason, version, headers, body):
        self.status, self.reason, self.version = status, reason, version
        self.headers, self.body = headers, body  # headers: list of (lower name, value)

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default


class RawReader:
    """Reads HTTP/1.1 responses from a socket, one at a time (pipelining-safe)."""

    def __init__(self, sock, timeout=10):
        self.sock = sock
        self.buf = b""
        sock.settimeout(timeout)

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError("connection closed")
        self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False):
        line = self._line()
        version, status, reason = (line.decode("latin-1").split(" ", 2) + [""])[:3]
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
        r = Response(int(status), reason, version, headers, b"")
        code = int(status)
        if head or code in (204, 304) or 100 <= code < 200:
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te and "chunked" in te.lower():
            body = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body.append(self._exact(size))
                assert self._exact(2) == b"\r\n"
            r.body = b"".join(body)
        elif cl is not None:
            r.body = self._exact(int(cl))
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            r.body, self.buf = self.buf, b""
        return r

    def at_eof(self, timeout=5):
        """True when the peer has closed (after any buffered bytes)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def request(server, raw, head=False, timeout=10):
    """Send raw bytes on a new connection, read one response."""
    s = server.connect(timeout)
    try:
        s.sendall(raw)
        return RawReader(s, timeout).read_response(head=head)
    finally:
        s.close()


SANITIZED = os.environ.get("GW_TEST_SANITIZED") == "1"
LSAN_SUPP = os.path.join(ROOT, "tests", "lsan.supp")


@pytest.fixture
def sanitizer_reports(tmp_path):
    """For test files that start gangway themselves (use it with
    pytest.mark.usefixtures): under the sanitizer build, CPython's own allocations are suppressed as
    `make test-asan` does (tests/lsan.supp; without that, LeakSanitizer changes
    the exit status of every process that ran Python), reports go to files, and
    a report from any gangway process this test started fails the test."""
    if not SANITIZED:
        yield
        return
    d = tmp_path / "sanitizer-reports"
    d.mkdir()
    names = ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS")
    saved = {k: os.environ.get(k) for k in names}
    lsan = os.environ.get("LSAN_OPTIONS", "")
    if "suppressions=" not in lsan:
        lsan = "suppressions=%s:print_suppressions=0" % LSAN_SUPP + (":" + lsan if lsan else "")
    os.environ["LSAN_OPTIONS"] = lsan
    os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [
        os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=1", "log_path=%s/asan" % d]))
    os.environ["UBSAN_OPTIONS"] = ":".join(filter(None, [
        os.environ.get("UBSAN_OPTIONS", ""), "print_stacktrace=1", "log_path=%s/ubsan" % d]))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    reports = sorted(d.iterdir())
    if reports:
        pytest.fail("sanitizer reports:\n" + "\n".join(
            "%s:\n%s" % (p.name, p.read_text(errors="replace")[:4000]) for p in reports))


# One real PostgreSQL for the whole session, shared by every test module that
# asks for it (a fixture imported into a test module would be one per module).
from pg import postgres  # noqa: E402,F401
