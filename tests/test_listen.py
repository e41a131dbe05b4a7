"""Listeners: TCP on IPv4 and IPv6, unix sockets, several at once."""
import json
import os
import re
import socket
import time

import pytest

from conftest import RawReader, wait_for


def get(sock, path="/", host="x"):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    return RawReader(sock).read_response()


def has_ipv6():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_unix_socket_listener(gangway, tmp_path):
    path = str(tmp_path / "g.sock")
    srv = gangway("--http", "unix:" + path, "echo:application", listen=False)
    assert srv.unix == path
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        r = get(s, "/via-unix")
        e = json.loads(r.body)
        assert r.status == 200 and e["PATH_INFO"] == "/via-unix"
    finally:
        s.close()


def test_stale_unix_socket_file_is_replaced(gangway, tmp_path):
    path = str(tmp_path / "stale.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()  # the file stays, nobody listens
    assert os.path.exists(path)
    srv = gangway("--http", "unix:" + path, "hello:application", listen=False)
    s = socket.socket(socket.AF_UNIX)
    s.connect(srv.unix)
    try:
        assert get(s).body == b"Hello, World!"
    finally:
        s.close()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
def test_ipv6_listener(gangway):
    srv = gangway("--http", "[::1]:0", "echo:application", listen=False)
    assert srv.host == "::1"
    s = socket.create_connection(("::1", srv.port), timeout=10)
    try:
        r = get(s, "/six", host="[::1]:%d" % srv.port)
        e = json.loads(r.body)
        assert e["PATH_INFO"] == "/six"
    finally:
        s.close()


def test_several_listeners_serve_the_same_app(gangway, tmp_path):
    path = str(tmp_path / "both.sock")
    srv = gangway("--http", "127.0.0.1:0", "--http", "unix:" + path, "hello:application",
                  listen=False)
    s = srv.connect()
    u = socket.socket(socket.AF_UNIX)
    u.connect(path)
    try:
        assert get(s).body == b"Hello, World!"
        assert get(u).body == b"Hello, World!"
    finally:
        s.close()
        u.close()


def test_bad_address_is_a_usage_error(tmp_path):
    import subprocess
    from conftest import BIN, APPS
    p = subprocess.run([BIN, "--http", "nonsense", "hello:application"], cwd=APPS,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=15)
    assert p.returncode == 2
    assert b"invalid value 'nonsense' for --http (want host:port" in p.stderr


# ------------------------------------------------------------ socket options
#
# The checks read the kernel's own state: /proc/net/tcp for the server side of
# a connection, and the worker's sockets themselves, borrowed with
# pidfd_getfd(2) (root, or ptrace rights over the worker).

SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438
TCP_STATES = {"01": "ESTABLISHED", "03": "SYN_RECV", "0A": "LISTEN"}


def tcp_entries(port):
    """[(local port, remote port, state, inode)] on 127.0.0.1 touching port."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            lp, rp = int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16)
            if port in (lp, rp):
                out.append((lp, rp, TCP_STATES.get(p[3], p[3]), int(p[9])))
    return out


def server_side(port, client_port):
    """State of the server's end of the connection from client_port, or None."""
    for lp, rp, state, _ in tcp_entries(port):
        if lp == port and rp == client_port:
            return state
    return None


def socket_fd(pid, inode):
    """pid's descriptor number for the socket with this inode, or None."""
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%d]" % inode:
                return int(fd)
        except OSError:
            pass
    return None


def borrow_fd(pid, inode):
    """A duplicate of pid's socket with this inode (pidfd_getfd), or None."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    target = socket_fd(pid, inode)
    if target is None:
        return None
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        pytest.skip("pidfd_open: %s" % os.strerror(ctypes.get_errno()))
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
        if fd < 0:
            pytest.skip("pidfd_getfd: %s" % os.strerror(ctypes.get_errno()))
        return socket.socket(fileno=fd)
    finally:
        os.close(pidfd)


def worker_pid(srv):
    from conftest import children, wait_for
    return min(wait_for(lambda: children(srv.pid), 10, what="a worker"))


def test_defer_accept_keeps_a_silent_connection_in_the_kernel(gangway):
    """By default a worker is not woken for a connection that has sent
    nothing: the kernel holds it half-open (SYN_RECV on the server side) until
    its first bytes, which then arrive with the accept."""
    srv = gangway("hello:application")
    s = srv.connect()
    try:
        assert server_side(srv.port, s.getsockname()[1]) == "SYN_RECV"
        assert get(s).body == b"Hello, World!"
        assert server_side(srv.port, s.getsockname()[1]) == "ESTABLISHED"
    finally:
        s.close()


def test_defer_accept_0_takes_connections_at_once(gangway):
    from conftest import wait_for
    srv = gangway("--defer-accept", "0", "hello:application")
    w = worker_pid(srv)
    s = srv.connect()
    try:
        port = s.getsockname()[1]
        conn = [e for e in tcp_entries(srv.port) if e[0] == srv.port and e[1] == port]
        assert conn and conn[0][2] == "ESTABLISHED", conn

        def accepted():
            # read afresh each time: a connection still in the accept queue
            # has no inode yet (0 in /proc/net/tcp), accept() gives it one
            ours = [e for e in tcp_entries(srv.port) if e[0] == srv.port and e[1] == port]
            return bool(ours) and ours[0][3] != 0 and socket_fd(w, ours[0][3]) is not None

        wait_for(accepted, 10, what="the worker to accept")
        assert get(s).body == b"Hello, World!"
    finally:
        s.close()


def test_a_silent_client_is_still_timed_out(gangway):
    """Deferring does not hide a silent client from --header-timeout: the
    kernel hands it over after --defer-accept seconds, then the timeout runs."""
    srv = gangway("--defer-accept", "1", "--header-timeout", "1", "hello:application")
    s = srv.connect()
    try:
        import time
        t0 = time.monotonic()
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - t0
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
        # the kernel holds it for at least the defer time, the worker for the timeout
        assert 1.8 <= waited < 8, waited
    finally:
        s.close()


def test_listener_options_on_the_worker_sockets(gangway):
    """TCP_NODELAY is set once on the listener and inherited by every accepted
    socket; TCP_DEFER_ACCEPT is on the listener (and off with 0)."""
    for defer, want in (("1", 1), ("0", 0)):
        srv = gangway("--defer-accept", defer, "hello:application")
        w = worker_pid(srv)
        s = srv.connect()
        try:
            assert get(s).body == b"Hello, World!"
            port = s.getsockname()[1]
            ents = tcp_entries(srv.port)
            listener = [e for e in ents if e[2] == "LISTEN" and e[0] == srv.port]
            conn = [e for e in ents if e[0] == srv.port and e[1] == port]
            assert listener and conn, ents
            ls, cs = borrow_fd(w, listener[0][3]), borrow_fd(w, conn[0][3])
            assert ls is not None and cs is not None, "the worker holds neither socket"
            try:
                assert ls.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == want
                assert cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            finally:
                ls.close()
                cs.close()
        finally:
            s.close()
        srv.stop()


def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_listener_that_stops_listening_costs_no_cpu_and_little_log(gangway):
    """accept() failing for good (here EINVAL: the socket was shut down under
    the worker, so it no longer listens) must not spin the level-triggered
    listener: the worker backs off that listener (~0 CPU, at most one log
    line a second) and goes on serving its other one."""
    srv = gangway("--http", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers", "1",
                  "hello:application", listen=False)
    ports = [int(p) for p in re.findall(r"listening on http://127\.0\.0\.1:(\d+)",
                                                          srv.read_log())]
    assert len(ports) == 2, srv.read_log()
    w = worker_pid(srv)
    listener = [e for e in tcp_entries(ports[0]) if e[2] == "LISTEN" and e[0] == ports[0]]
    assert listener, tcp_entries(ports[0])
    ls = borrow_fd(w, listener[0][3])
    assert ls is not None, "the worker holds no such socket"
    # On Linux, shutting down the read side of a listening TCP socket
    # disconnects it: it stops listening, for every process sharing it.
    ls.shutdown(socket.SHUT_RD)
    ls.close()
    wait_for(lambda: "Invalid argument" in srv.read_log(), 5,
             what="the worker to notice the failing listener")
    lines0, cpu0, t0 = srv.read_log().count("accept"), cpu_seconds(w), time.monotonic()
    # the other listener serves meanwhile
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", ports[1]), timeout=10)
        try:
            assert get(s).body == b"Hello, World!"
        finally:
            s.close()
    wait_for(lambda: time.monotonic() - t0 >= 3, 5, interval=0.1,
             what="3 seconds")
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(w) - cpu0) / elapsed
    lines = srv.read_log().count("accept") - lines0
    assert cpu < 0.1, "the worker used %.0f%% of a CPU on a failing listener" % (cpu * 100)
    assert lines <= elapsed + 1, "%d accept lines in %.1f s:\n%s" % (
        lines, elapsed, srv.read_log()[-2000:])
    assert "accept on http://127.0.0.1:%d: Invalid argument" % ports[0] in srv.read_log()


def test_a_stats_socket_that_stops_listening_costs_the_master_no_cpu(gangway):
    """The master's --stats listener backs off a failing accept() too: the
    master keeps supervising at ~0 CPU, with one log line a second at most."""
    srv = gangway("--stats", "127.0.0.1:0", "--workers", "1", "hello:application")
    port = int(re.search(r"statistics on http://127\.0\.0\.1:(\d+)", srv.read_log()).group(1))
    listener = [e for e in tcp_entries(port) if e[2] == "LISTEN" and e[0] == port]
    assert listener, tcp_entries(port)
    ls = borrow_fd(srv.pid, listener[0][3])
    assert ls is not None, "the master holds no such socket"
    ls.shutdown(socket.SHUT_RD)
    ls.close()
    # nothing to wait on in the baseline's log: it fails silently
    t0, cpu0 = time.monotonic(), cpu_seconds(srv.pid)
    lines0 = srv.read_log().count("--stats: accept")
    wait_for(lambda: time.monotonic() - t0 >= 2, 5, interval=0.1, what="2 seconds")
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(srv.pid) - cpu0) / elapsed
    lines = srv.read_log().count("--stats: accept") - lines0
    assert cpu < 0.1, "the master used %.0f%% of a CPU on a failing --stats socket" % (cpu * 100)
    assert 1 <= lines + lines0 and lines <= elapsed + 1, srv.read_log()[-2000:]
    s = srv.connect()
    try:
        assert get(s).body == b"Hello, World!"
    finally:
        s.close()
