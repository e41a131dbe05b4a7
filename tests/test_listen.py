"""Listeners: TCP on IPv4 and IPv6, unix sockets, several at once."""
import json
import os
import socket

import pytest

from conftest import RawReader


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
