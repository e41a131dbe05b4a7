"""systemd integration: Type=notify and socket activation.

Type=notify: the test binds an AF_UNIX SOCK_DGRAM socket in its tmp_path,
starts gangway with NOTIFY_SOCKET naming it, and reads the datagrams with
their sender's credentials (SO_PASSCRED), so it knows which process sent
each one: only the master may speak, as under NotifyAccess=main.

Socket activation: Debian's `systemd-socket-activate` binds the address,
then execs gangway with the socket as fd 3 and LISTEN_FDS / LISTEN_PID (and
LISTEN_FDNAMES with --fdname). In Debian 12 (systemd 252) it waits for the
first connection before it execs the program, so every test connects first
(the connection waits in the backlog and is the first one gangway serves).
The activator's pid becomes gangway's master pid; the test stops it by that
pid. Ports are found by binding port 0 and closing; when the activator then
cannot bind (someone took the port meanwhile) the start is retried.
Every wait is a bounded poll or a socket timeout.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import APPS, BIN, RawReader, children, live_children, stop_process, wait_for

ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
SO_PASSCRED = getattr(socket, "SO_PASSCRED", 16)
SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", 2)


# ---------------------------------------------------------------------------
# the sanitizer build (GW_TEST_BIN=.../gangway-asan GW_TEST_SANITIZED=1)
# ---------------------------------------------------------------------------

SANITIZED = os.environ.get("GW_TEST_SANITIZED") == "1"


pytestmark = pytest.mark.usefixtures("sanitizer_reports")  # (conftest.py)


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_")}
    e.pop("NOTIFY_SOCKET", None)
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        e.pop(k, None)
    e.update(extra or {})
    return e


def get(host, port, target="/", timeout=10):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % target).encode())
        return RawReader(s, timeout).read_response()
    finally:
        s.close()


def uwsgi_packet(path):
    pairs = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", path), ("PATH_INFO", path),
             ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "test"),
             ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "5000"),
             ("HTTP_HOST", "test")]
    blk = b""
    for k, v in pairs:
        k, v = k.encode(), v.encode()
        blk += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return struct.pack("<BHB", 0, len(blk), 0) + blk


def exchange(sock, data, timeout=10):
    """Send data, read the HTTP answer; the socket is closed afterwards."""
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
        return RawReader(sock, timeout).read_response()
    finally:
        sock.close()


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Type=notify
# ---------------------------------------------------------------------------

class Notify:
    """The NOTIFY_SOCKET end: datagrams with the sender's pid."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.got = []  # (sender pid, {field: value}, raw text)

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, typ, blob in anc:
            if level == socket.SOL_SOCKET and typ == SCM_CREDENTIALS:
                pid = struct.unpack("3i", blob[:12])[0]
        text = data.decode()
        fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
        item = (pid, fields, text)
        self.got.append(item)
        return item

    def wait(self, key, timeout=15, on_receive=None):
        """The next datagram that has key (e.g. READY); earlier ones are kept
        in self.got. on_receive(item) runs as each datagram arrives."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s datagram within %ss; got %r"
                                   % (key, timeout, [g[2] for g in self.got]))
            item = self._recv(left)
            if item is None:
                continue
            if on_receive:
                on_receive(item)
            if key in item[1]:
                return item

    def drain(self, timeout=0.3):
        """Whatever else arrives within timeout (to check nothing unexpected came)."""
        out = []
        while True:
            item = self._recv(timeout)
            if item is None:
                return out
            out.append(item)

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.close()


def start_notified(gangway, notify, *args, **kw):
    env = dict(kw.pop("env", {}) or {})
    env["NOTIFY_SOCKET"] = notify.path
    return gangway(*args, env=env, **kw)


def assert_ready(s, notify, workers, timeout=15):
    """The READY=1 after the log says ready: from the master, with MAINPID
    and the worker count in STATUS."""
    logs = []
    pid, f, text = notify.wait("READY", timeout,
                               on_receive=lambda item: logs.append(s.read_log()))
    assert f["READY"] == "1", text
    assert pid == s.pid, "READY=1 came from pid %s, not the master %d" % (pid, s.pid)
    assert f.get("MAINPID") == str(s.pid), text
    assert re.search(r"\b%d worker\(s\)" % workers, f.get("STATUS", "")), text
    # sent once the log says ready (the log line is written first)
    assert "gangway: ready" in logs[-1]
    return f


def test_notify_ready_reload_stop(gangway, notify):
    s = start_notified(gangway, notify, "--workers", "2", "cfg_app")
    assert_ready(s, notify, 2)
    assert get(s.host, s.port, "/pid").status == 200

    s.signal(signal.SIGHUP)
    pid, f, text = notify.wait("RELOADING", 10)
    assert f["RELOADING"] == "1" and pid == s.pid, text
    assert "READY" not in f
    log_at_ready = []
    pid, f, text = notify.wait("READY", 15, on_receive=lambda i: log_at_ready.append(
        s.read_log()))
    assert f["READY"] == "1" and pid == s.pid, text
    assert "new worker(s) serving" in log_at_ready[-1], log_at_ready[-1]
    assert "2 worker(s)" in f.get("STATUS", ""), text
    assert get(s.host, s.port, "/pid").status == 200

    s.signal(signal.SIGTERM)
    pid, f, text = notify.wait("STOPPING", 10)
    assert f["STOPPING"] == "1" and pid == s.pid, text
    assert s.proc.wait(15) == 0
    # nobody but the master spoke
    assert {g[0] for g in notify.got} == {s.pid}, [(g[0], g[2]) for g in notify.got]


def fill_queue(path):
    """Queues datagrams on the notify socket at path until it takes no more:
    the master's next sd_notify() then blocks in sendmsg() until the test
    reads. Returns how many were queued."""
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    n = 0
    try:
        while n < 100000:
            filler.sendto(b"FILLER=1", path)
            n += 1
    except BlockingIOError:
        pass
    finally:
        filler.close()
    assert n > 0
    return n


def test_reload_is_logged_before_systemd_hears_ready(gangway, notify):
    """What READY=1 announces is in the log when it comes: with the notify
    socket full, the master blocks in the READY=1 send, and the log must
    already say the new workers serve (issue 14: READY=1 was sent first, and
    test_notify_ready_reload_stop failed one run in three)."""
    s = start_notified(gangway, notify, "--workers", "2", "cfg_app")
    assert_ready(s, notify, 2)
    s.signal(signal.SIGHUP)
    notify.wait("RELOADING", 10)
    fill_queue(notify.path)
    try:
        wait_for(lambda: "new worker(s) serving" in s.read_log(), 15,
                 what='"new worker(s) serving" while READY=1 waits to be sent')
    finally:
        pid, f, text = notify.wait("READY", 15)  # reads the queue empty
    assert pid == s.pid and f["READY"] == "1", text
    assert get(s.host, s.port, "/pid").status == 200


def test_notify_status_follows_sigttin(gangway, notify):
    s = start_notified(gangway, notify, "cfg_app")
    assert_ready(s, notify, 1)
    s.signal(signal.SIGTTIN)
    pid, f, text = notify.wait("STATUS", 10)
    assert pid == s.pid and "2 worker(s)" in f["STATUS"], text
    assert "READY" not in f and "RELOADING" not in f and "STOPPING" not in f
    # the new worker comes up (after the STATUS line, not before it)
    wait_for(lambda: "worker 2 ready" in s.read_log(), 15, what="worker 2")


def test_notify_failed_reload_is_ready_again(gangway, notify, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(open(os.path.join(APPS, "cfg_app.py")).read())
    s = start_notified(gangway, notify, "--wsgi-file", str(app),
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert_ready(s, notify, 1)
    app.write_text("raise RuntimeError('broken on purpose')\n")
    s.signal(signal.SIGHUP)
    notify.wait("RELOADING", 10)
    pid, f, text = notify.wait("READY", 15)
    assert pid == s.pid and f["READY"] == "1", text
    assert "reload failed" in s.read_log()
    assert get(s.host, s.port, "/pid").status == 200  # the old worker still serves


def test_notify_ready_again_when_the_check_times_out(gangway, notify, tmp_path):
    """A reload whose check hangs (an import that waits for ever) does not
    leave systemd in RELOADING=1: at --reload-check-timeout the check is
    killed and READY=1 follows, after the log line that says why."""
    app = tmp_path / "app.py"
    app.write_text("import os, time\n"
                   "if b'--check-config' in open('/proc/self/cmdline', 'rb').read():\n"
                   "    time.sleep(3600)\n" + open(os.path.join(APPS, "cfg_app.py")).read())
    s = start_notified(gangway, notify, "--wsgi-file", str(app), "--reload-check-timeout", "1",
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert_ready(s, notify, 1)
    s.signal(signal.SIGHUP)
    notify.wait("RELOADING", 10)
    logs = []
    pid, f, text = notify.wait("READY", 15, on_receive=lambda item: logs.append(s.read_log()))
    assert pid == s.pid and f["READY"] == "1", text
    assert "reload failed: the check did not finish within 1s" in logs[-1]
    assert get(s.host, s.port, "/pid").status == 200  # the old worker still serves


def test_notify_stopping_at_sigterm_with_shutdown_delay(gangway, notify):
    s = start_notified(gangway, notify, "--shutdown-delay", "1", "cfg_app")
    assert_ready(s, notify, 1)
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    pid, f, text = notify.wait("STOPPING", 5)
    assert pid == s.pid
    assert time.monotonic() - t0 < 0.9, "STOPPING=1 came only after the delay"
    assert s.proc.poll() is None  # still serving through the delay
    assert s.proc.wait(15) == 0


def test_notify_with_preload_reload_reexecutes_same_pid(gangway, notify):
    s = start_notified(gangway, notify, "--workers", "2", "--preload", "cfg_app")
    assert_ready(s, notify, 2)
    old = children(s.pid)
    s.signal(signal.SIGHUP)
    pid, f, text = notify.wait("RELOADING", 10)
    assert pid == s.pid, text
    logs = []
    pid, f, text = notify.wait("READY", 20, on_receive=lambda i: logs.append(s.read_log()))
    # the re-executed image is the same process: same pid, MAINPID unchanged
    assert pid == s.pid, "READY=1 after the reload came from %s, not %d" % (pid, s.pid)
    assert f.get("MAINPID", str(s.pid)) == str(s.pid), text
    assert "re-executing the master (pid %d)" % s.pid in logs[-1]
    assert logs[-1].count("gangway: ready") >= 2
    wait_for(lambda: not (children(s.pid) & old), 15, what="the old workers to go")
    assert get(s.host, s.port, "/pid").status == 200
    s.signal(signal.SIGTERM)
    notify.wait("STOPPING", 10)
    assert s.proc.wait(15) == 0
    assert {g[0] for g in notify.got} == {s.pid}, [(g[0], g[2]) for g in notify.got]


def test_sighup_during_start_up_completes(gangway, notify, tmp_path):
    gate = tmp_path / "gate"
    s = start_notified(gangway, notify, "--workers", "2", "cfg_gate_app",
                       env={"CFG_TEST_GATE": str(gate)}, wait=False)
    # the master forks worker 1 once its signal handlers are in place
    wait_for(lambda: children(s.pid), 15, what="the master to fork worker 1")
    s.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP" in s.read_log(), 5, what="the master to take the SIGHUP")
    gate.write_text("open")
    s.wait_ready()
    assert get(s.host, s.port, "/").status == 200
    wait_for(lambda: "new worker(s) serving" in s.read_log(), 10,
             what="the reload asked for during start-up to finish")
    wait_for(lambda: len(live_children(s.pid)) == 2, 10, what="two workers")
    # and the next reload is a reload
    before = live_children(s.pid)
    s.signal(signal.SIGHUP)
    wait_for(lambda: s.read_log().count("new worker(s) serving") == 2, 10,
             what="the second reload")
    wait_for(lambda: not (live_children(s.pid) & before), 10, what="the old workers to go")
    assert "already under way" not in s.read_log()


# ---------------------------------------------------------------------------
# socket activation
# ---------------------------------------------------------------------------

class Activated:
    """systemd-socket-activate LISTEN... -- gangway ARGS, logging to a file."""

    def __init__(self, tmp_path, listen, args, fdnames=None, env=None, cwd=APPS):
        self.log_path = tmp_path / ("activate-%d.log" % id(self))
        argv = [ACTIVATE]
        for addr in listen:
            argv += ["-l", addr]
        if fdnames:
            argv.append("--fdname=" + ":".join(fdnames))
        argv += ["--", BIN] + list(args)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=cwd, env=clean_env(env))
        self.pid = self.proc.pid

    def read_log(self):
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, n):
        """True once the activator listens on its n sockets; False if it exited."""
        def ok():
            if self.proc.poll() is not None:
                return "exited"
            return len(re.findall(r"^Listening on .* as \d+\.$", self.read_log(), re.M)) >= n
        return wait_for(ok, 10, what="systemd-socket-activate to listen") is True

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("exited %s:\n%s" % (self.proc.returncode, self.read_log()))
            return "gangway: ready" in self.read_log()
        wait_for(ready, timeout, what="gangway ready")
        return self.read_log()

    def stop(self, timeout=15):
        rc = stop_process(self.proc, timeout)
        self.log.close()
        return rc


@pytest.fixture
def activate(tmp_path):
    """activate(make_listen, make_args, fdnames) -> (Activated, ports): make_listen(ports)
    gives the -l addresses, make_args(ports) gangway's arguments; nports free ports are
    chosen (retried when the activator cannot bind one)."""
    started = []

    def start(make_listen, make_args, nports=1, fdnames=None, env=None):
        for attempt in range(3):
            ports = [free_port() for _ in range(nports)]
            a = Activated(tmp_path, make_listen(ports), make_args(ports), fdnames, env)
            started.append(a)
            if a.wait_listening(len(make_listen(ports))):
                return a, ports
            log = a.read_log()
            a.stop()
            if "in use" not in log:
                raise RuntimeError("systemd-socket-activate failed:\n" + log)
        raise RuntimeError("no free port after 3 attempts")

    yield start
    for a in started:
        a.stop()


def test_activation_serves_http_without_binding(activate):
    a, (port,) = activate(lambda p: ["127.0.0.1:%d" % p[0]],
                          lambda p: ["--workers", "2", "cfg_app"])
    # the first connection starts gangway (Debian 12's activator waits for it)
    r = get("127.0.0.1", port, "/env/LISTEN_FDS", timeout=20)
    log = a.wait_ready()
    assert r.status == 404, r.body  # the app does not see LISTEN_FDS: consumed
    assert re.findall(r"listening on (\S+)", log) == ["http://127.0.0.1:%d" % port], log
    assert "in use" not in log
    assert re.search(r"master pid %d, 2 worker\(s\)" % a.pid, log), log  # exec'd in place
    r = get("127.0.0.1", port, "/env/LISTEN_PID")
    assert r.status == 404
    assert get("127.0.0.1", port, "/pid").status == 200
    assert a.stop() == 0


def test_activation_fdname_uwsgi(activate):
    a, (port,) = activate(lambda p: ["127.0.0.1:%d" % p[0]], lambda p: ["cfg_app"],
                          fdnames=["uwsgi"])
    r = exchange(socket.create_connection(("127.0.0.1", port), timeout=20),
                 uwsgi_packet("/pid"), timeout=20)
    assert r.status == 200 and r.body.startswith(b"pid="), r.body
    log = a.wait_ready()
    assert re.findall(r"listening on (\S+)", log) == ["uwsgi://127.0.0.1:%d" % port], log
    assert a.stop() == 0


def test_activation_two_sockets_by_name(activate):
    a, (hp, up) = activate(lambda p: ["127.0.0.1:%d" % p[0], "127.0.0.1:%d" % p[1]],
                           lambda p: ["cfg_app"], nports=2, fdnames=["web", "uwsgi"])
    r = get("127.0.0.1", hp, "/pid", timeout=20)
    assert r.status == 200
    log = a.wait_ready()
    assert sorted(re.findall(r"listening on (\S+)", log)) == sorted(
        ["http://127.0.0.1:%d" % hp, "uwsgi://127.0.0.1:%d" % up]), log
    r = exchange(socket.create_connection(("127.0.0.1", up), timeout=10), uwsgi_packet("/pid"))
    assert r.status == 200 and r.body.startswith(b"pid=")


@pytest.mark.parametrize("how", ["cli", "ini"])
def test_activation_socket_taken_by_its_address(activate, tmp_path, how):
    ini = tmp_path / "act.ini"

    def args(p):
        if how == "cli":
            return ["--uwsgi", "127.0.0.1:%d" % p[0], "cfg_app"]
        ini.write_text("[uwsgi]\nmodule = cfg_app\nsocket = 127.0.0.1:%d\nvacuum = true\n"
                       % p[0])
        return [str(ini)]
    a, (port,) = activate(lambda p: ["127.0.0.1:%d" % p[0]], args)
    r = exchange(socket.create_connection(("127.0.0.1", port), timeout=20),
                 uwsgi_packet("/pid"), timeout=20)
    assert r.status == 200 and r.body.startswith(b"pid="), r.body
    log = a.wait_ready()
    assert "in use" not in log and "cannot" not in log, log
    assert re.findall(r"listening on (\S+)", log) == ["uwsgi://127.0.0.1:%d" % port], log
    assert a.stop() == 0


def test_activation_unmatched_socket_is_closed_and_address_bound(activate):
    a, (act_port, own_port) = activate(
        lambda p: ["127.0.0.1:%d" % p[0]],
        lambda p: ["--http", "127.0.0.1:%d" % p[1], "cfg_app"], nports=2)
    trigger = socket.create_connection(("127.0.0.1", act_port), timeout=20)
    try:
        log = a.wait_ready()
        assert "LISTEN_FDS: socket 3 matches no --http or --uwsgi address: closed" in log, log
        assert re.findall(r"listening on (\S+)", log) == ["http://127.0.0.1:%d" % own_port]
        assert get("127.0.0.1", own_port, "/pid").status == 200
        # the handed-in socket is gone: its queued connection ends, new ones are refused
        trigger.settimeout(10)
        try:
            assert trigger.recv(1) == b""
        except ConnectionResetError:
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", act_port), timeout=5).close()
    finally:
        trigger.close()


def test_activation_vacuum_leaves_the_handed_in_unix_socket(activate, tmp_path):
    path = tmp_path / "act.sock"
    a, _ = activate(lambda p: [str(path)], lambda p: ["--vacuum", "cfg_app"], nports=0,
                    fdnames=["uwsgi"])
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(path))
    r = exchange(c, uwsgi_packet("/pid"), timeout=20)
    assert r.status == 200
    log = a.wait_ready()
    assert "listening on uwsgi://unix:%s" % path in log, log
    assert a.stop() == 0
    assert os.path.exists(path), "the service manager's socket was unlinked"
