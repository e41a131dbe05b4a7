"""The uwsgi protocol on gangway's --uwsgi sockets, spoken raw from Python.

A packet is a 4-byte header (modifier1 = 0, the 16-bit little-endian size of
the variables block, modifier2), the block of variables (16-bit length, name,
16-bit length, value) and then CONTENT_LENGTH body bytes: what nginx's
uwsgi_pass sends. gangway answers with a plain HTTP/1.x response and closes.

Apps: tests/apps/uw_app.py (/env: the environ as JSON, /pid, /stream, /sha256)
and tests/apps/echo.py. GW_TEST_MARK files prove a refused packet never
reached the app. Every wait is a bounded poll or a socket timeout.
"""
import hashlib
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import time

import pytest

from conftest import APPS, BIN, Response, wait_for
from nginx import uwsgi_tcp

# ---------------------------------------------------------------------------
# packets
# ---------------------------------------------------------------------------


def _b(x):
    return x if isinstance(x, bytes) else x.encode("latin-1")


def block(pairs):
    """The variables block for [(name, value), ...] (duplicates allowed)."""
    out = b""
    for k, v in pairs:
        k, v = _b(k), _b(v)
        out += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return out


def packet(pairs=None, body=b"", modifier1=0, raw_block=None):
    blk = raw_block if raw_block is not None else block(pairs)
    return struct.pack("<BHB", modifier1, len(blk), 0) + blk + body


def nginx_vars(method="GET", uri="/env", body=b"", content_type="", extra=()):
    """The variables nginx sends with /etc/nginx/uwsgi_params, in its order."""
    path, _, query = uri.partition("?")
    return [("QUERY_STRING", query), ("REQUEST_METHOD", method),
            ("CONTENT_TYPE", content_type),
            ("CONTENT_LENGTH", str(len(body)) if body else ""),
            ("REQUEST_URI", uri), ("PATH_INFO", path),
            ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", "203.0.113.7"),
            ("REMOTE_PORT", "51234"), ("SERVER_PORT", "80"), ("SERVER_NAME", "example.com"),
            ("HTTP_HOST", "example.com")] + list(extra)


def request_packet(method="GET", uri="/env", body=b"", content_type="", extra=()):
    return packet(nginx_vars(method, uri, body, content_type, extra), body)


# ---------------------------------------------------------------------------
# client side
# ---------------------------------------------------------------------------

def start(gangway, *args, unix=None, app="uw_app:application", env=None):
    argv = ["--uwsgi", "127.0.0.1:0"]
    if unix:
        argv += ["--uwsgi", unix]
    return gangway(*(argv + list(args) + [app]), listen=False, env=env)


def connect(srv, timeout=10):
    host, port = uwsgi_tcp(srv)
    return socket.create_connection((host, port), timeout=timeout)


def connect_unix(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_to_close(sock, timeout=10):
    """Everything the server sends until it closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    out = []
    while True:
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError("the server kept the connection open %ss after: %r"
                                 % (timeout, b"".join(out)[:200]))
        if not b:
            break
        out.append(b)
    return b"".join(out)


def exchange(srv, data, sock=None, timeout=10):
    s = sock or connect(srv, timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed early: what it answered (if anything) is still readable
        return read_to_close(s, timeout)
    finally:
        s.close()


def parse(raw, head=False):
    """A close-delimited HTTP/1.x response (what a uwsgi answer is)."""
    assert b"\r\n\r\n" in raw, "no complete response head in %r" % raw[:300]
    head_b, body = raw.split(b"\r\n\r\n", 1)
    lines = head_b.decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = []
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers.append((k.strip().lower(), v.strip()))
    return Response(int(status), reason, version, headers, body)


def call(srv, data, sock=None):
    return parse(exchange(srv, data, sock))


def environ_of(srv, data, sock=None):
    r = call(srv, data, sock)
    assert r.status == 200, r.body[:500]
    return json.loads(r.body)


def no_answer_yet(sock, wait=0.1):
    """True when nothing (not even a close) arrives within `wait` seconds."""
    r, _, _ = select.select([sock], [], [], wait)
    return not r


def marks(path):
    try:
        with open(path, encoding="latin-1") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------
# good requests
# ---------------------------------------------------------------------------

def test_get_becomes_the_environ(gangway):
    srv = start(gangway)
    r = call(srv, request_packet("GET", "/env?a=1&b=two",
                                 extra=[("HTTP_X_CUSTOM", "yes"),
                                        ("HTTP_USER_AGENT", "raw-test")]))
    assert (r.status, r.version) == (200, "HTTP/1.1")
    assert r.header("content-length") == str(len(r.body))  # then the server closed
    assert r.header("transfer-encoding") is None
    e = json.loads(r.body)
    assert e["REQUEST_METHOD"] == "GET"
    assert e["PATH_INFO"] == "/env"
    assert e["QUERY_STRING"] == "a=1&b=two"
    assert e["REQUEST_URI"] == "/env?a=1&b=two"
    assert e["SCRIPT_NAME"] == ""
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    # nginx's view of the client and of itself, not the uwsgi socket's peer
    assert e["REMOTE_ADDR"] == "203.0.113.7" and e["REMOTE_PORT"] == "51234"
    assert e["SERVER_NAME"] == "example.com" and e["SERVER_PORT"] == "80"
    assert e["HTTP_HOST"] == "example.com"
    assert e["HTTP_X_CUSTOM"] == "yes" and e["HTTP_USER_AGENT"] == "raw-test"
    assert e["REQUEST_SCHEME"] == "http" and e["wsgi.url_scheme"] == "http"
    assert e["body"] == ""
    assert e.get("CONTENT_LENGTH", "") in ("", "0")


def test_get_and_post_with_the_echo_app(gangway):
    srv = start(gangway, app="echo:application")
    r = call(srv, request_packet("GET", "/a/b?x=1", extra=[("HTTP_ACCEPT", "*/*")]))
    e = json.loads(r.body)
    assert (r.status, e["REQUEST_METHOD"], e["PATH_INFO"], e["QUERY_STRING"],
            e["REQUEST_URI"]) == (200, "GET", "/a/b", "x=1", "/a/b?x=1")
    assert e["headers"]["HTTP_ACCEPT"] == "*/*"

    body = b"name=gangway&proto=uwsgi"
    r = call(srv, request_packet("POST", "/form?y=2", body,
                                 "application/x-www-form-urlencoded"))
    e = json.loads(r.body)
    assert r.status == 200
    assert (e["REQUEST_METHOD"], e["PATH_INFO"], e["QUERY_STRING"]) == ("POST", "/form", "y=2")
    assert e["CONTENT_LENGTH"] == str(len(body))
    assert e["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert e["body"] == body.decode()
    assert e["headers"] == {"HTTP_HOST": "example.com"}


def test_content_length_comes_from_the_stored_body(gangway):
    srv = start(gangway)
    e = environ_of(srv, request_packet("PUT", "/env", b"hello", "text/plain",
                                       extra=[("HTTP_CONTENT_LENGTH", "999"),
                                              ("HTTP_CONTENT_TYPE", "x/y")]))
    assert e["CONTENT_LENGTH"] == "5" and e["body"] == "hello"
    assert e["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_LENGTH" not in e and "HTTP_CONTENT_TYPE" not in e


@pytest.mark.parametrize("var,value,scheme", [
    ("HTTPS", "on", "https"),
    ("HTTPS", "1", "https"),
    ("HTTPS", "off", "http"),
    ("HTTPS", "", "http"),
    ("REQUEST_SCHEME", "https", "https"),
    ("UWSGI_SCHEME", "https", "https"),
])
def test_https_sets_the_url_scheme(gangway, var, value, scheme):
    srv = start(gangway)
    pairs = [(k, v) for k, v in nginx_vars() if k != "REQUEST_SCHEME" or var != k]
    e = environ_of(srv, packet(pairs + [(var, value)]))
    assert e["wsgi.url_scheme"] == scheme
    assert e[var] == value


def test_head_has_the_length_and_no_body(gangway):
    srv = start(gangway)
    raw = exchange(srv, request_packet("HEAD", "/pid"))
    r = parse(raw)
    assert r.status == 200
    assert r.header("content-length") == str(len(call(srv, request_packet("GET", "/pid")).body))
    assert r.body == b""


def test_streaming_answer_is_close_delimited_never_chunked(gangway):
    srv = start(gangway)
    r = call(srv, request_packet("GET", "/stream?n=300"))
    assert r.status == 200
    assert r.header("content-length") is None
    assert r.header("transfer-encoding") is None
    assert r.body == b"".join(b"line %d\n" % i for i in range(300))


def test_http10_request_gets_an_http10_answer(gangway):
    srv = start(gangway)
    pairs = [(k, "HTTP/1.0" if k == "SERVER_PROTOCOL" else v) for k, v in nginx_vars()]
    r = call(srv, packet(pairs))
    assert (r.status, r.version) == (200, "HTTP/1.0")
    assert json.loads(r.body)["SERVER_PROTOCOL"] == "HTTP/1.0"


@pytest.mark.parametrize("proto", ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"])
def test_access_log_uses_nginx_s_variables(gangway, proto):
    # nginx sends SERVER_PROTOCOL=HTTP/2.0 for its HTTP/2 clients (browsers).
    srv = start(gangway)
    pairs = [(k, proto if k == "SERVER_PROTOCOL" else v)
             for k, v in nginx_vars("GET", "/env?x=1", extra=[
                 ("HTTP_REFERER", "http://ref.example/"), ("HTTP_USER_AGENT", "agent/2")])]
    r = call(srv, packet(pairs))
    assert r.status == 200 and r.version in ("HTTP/1.0", "HTTP/1.1")
    assert json.loads(r.body)["SERVER_PROTOCOL"] == proto
    want = (r'^203\.0\.113\.7 - - \[[^]]+\] "GET /env\?x=1 %s" 200 %d '
            r'"http://ref\.example/" "agent/2"' % (re.escape(proto), len(r.body)))
    try:
        wait_for(lambda: re.search(want, srv.read_log(), re.M), 5, what="the access log line")
    except TimeoutError:
        raise AssertionError("no access log line %s in:\n%s" % (want, srv.read_log()))


def test_packet_and_body_arriving_in_several_sends(gangway):
    srv = start(gangway)
    body = random.Random(3).randbytes(300 * 1024)
    data = request_packet("POST", "/sha256", body, "application/octet-stream")
    head_len = len(data) - len(body)
    cuts = [2, 4, 4 + 9, head_len - 3, head_len, head_len + 1,
            head_len + 100 * 1024, len(data) - 1, len(data)]
    s = connect(srv)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        prev = 0
        for cut in cuts:
            s.sendall(data[prev:cut])
            prev = cut
            if cut < len(data):
                assert no_answer_yet(s), "answered before the whole packet (at %d)" % cut
        r = parse(read_to_close(s))
    finally:
        s.close()
    assert r.status == 200
    assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def test_large_body_is_spooled_and_complete(gangway):
    srv = start(gangway, "--body-buffer-size", "64k")
    body = random.Random(4).randbytes(3 * 1024 * 1024 + 7)
    r = call(srv, request_packet("POST", "/sha256", body))
    assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def test_one_request_per_connection(gangway, tmp_path):
    mark = str(tmp_path / "mark")
    srv = start(gangway, env={"GW_TEST_MARK": mark})
    raw = exchange(srv, request_packet("GET", "/first") + request_packet("GET", "/second"))
    assert raw.count(b"HTTP/1.1 ") == 1
    assert json.loads(parse(raw).body)["PATH_INFO"] == "/first"
    assert marks(mark) == ["/first"]


def test_repeated_http_variables_are_joined(gangway):
    # nginx (before 1.23) sends a header the client repeated as repeated
    # variables; as on --http sockets, they join with ", " (cookies "; ").
    srv = start(gangway)
    e = environ_of(srv, request_packet("GET", "/env", extra=[
        ("HTTP_X_MULTI", "a"), ("HTTP_X_MULTI", "b"),
        ("HTTP_COOKIE", "c1=1"), ("HTTP_COOKIE", "c2=2")]))
    assert e["HTTP_X_MULTI"] == "a, b"
    assert e["HTTP_COOKIE"] == "c1=1; c2=2"


def test_largest_block_and_many_variables(gangway):
    srv = start(gangway)
    pairs = nginx_vars("GET", "/env")
    pad = 65535 - len(block(pairs)) - 4 - len("HTTP_X_PAD")
    e = environ_of(srv, packet(pairs + [("HTTP_X_PAD", "p" * pad)]))
    assert len(e["HTTP_X_PAD"]) == pad
    many = [("HTTP_X_V%d" % i, "v%d" % i) for i in range(300)]
    e = environ_of(srv, packet(nginx_vars("GET", "/env") + many))
    assert all(e[k] == v for k, v in many)


def test_expect_100_continue_is_not_answered_on_a_uwsgi_socket(gangway):
    # nginx answers Expect itself; an interim "100 Continue" in the uwsgi
    # stream would be read by nginx as the response.
    srv = start(gangway)
    s = connect(srv)
    try:
        s.sendall(request_packet("POST", "/env", b"hello", extra=[("HTTP_EXPECT", "100-continue")])
                  [:-5])
        assert no_answer_yet(s, 0.3)
        s.sendall(b"hello")
        r = parse(read_to_close(s))
    finally:
        s.close()
    assert r.status == 200 and json.loads(r.body)["body"] == "hello"


def test_silent_and_stalled_peers_are_timed_out(gangway):
    srv = start(gangway, "--header-timeout", "1", "--body-timeout", "1")
    s = connect(srv)
    try:
        t0 = time.monotonic()
        read_to_close(s, timeout=10)  # nothing sent: closed
        assert time.monotonic() - t0 < 5
    finally:
        s.close()
    s = connect(srv)
    try:
        s.sendall(request_packet("POST", "/env", b"x" * 100)[:-50])
        t0 = time.monotonic()
        out = read_to_close(s, timeout=10)  # body stalls: closed (a 408 at most)
        assert time.monotonic() - t0 < 5
        assert out == b"" or parse(out).status == 408
    finally:
        s.close()
    assert call(srv, request_packet("GET", "/pid")).status == 200


def test_unix_socket_listener_both_spellings(gangway, tmp_path):
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    srv = gangway("--uwsgi", "unix:" + a, "--socket", b, "uw_app", listen=False)
    log = srv.read_log()
    assert "listening on uwsgi://unix:%s" % a in log
    assert "listening on uwsgi://unix:%s" % b in log
    for path in (a, b):
        e = environ_of(srv, request_packet("GET", "/env"), connect_unix(path))
        assert e["REMOTE_ADDR"] == "203.0.113.7"  # what nginx said, not the socket


def test_listener_forms_chmod_and_vacuum(gangway, tmp_path):
    path = str(tmp_path / "v.sock")
    srv = gangway("--uwsgi-socket", ":0", "-s", "unix:" + path, "--chmod-socket", "660",
                  "--vacuum", "uw_app", listen=False)
    host, port = uwsgi_tcp(srv)
    assert host == "0.0.0.0"  # ":port" is every IPv4 interface
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert call(srv, request_packet("GET", "/pid"), s).status == 200
    assert os.stat(path).st_mode & 0o777 == 0o660
    assert call(srv, request_packet("GET", "/pid"), connect_unix(path)).status == 200
    srv.stop()
    assert not os.path.exists(path)


def test_uwsgi_and_http_listeners_side_by_side(gangway):
    srv = gangway("--http", "127.0.0.1:0", "-s", "127.0.0.1:0", "uw_app")
    e = environ_of(srv, request_packet("GET", "/env"))
    assert e["REMOTE_ADDR"] == "203.0.113.7"
    s = srv.connect()
    try:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        r = parse(read_to_close(s))
    finally:
        s.close()
    assert r.status == 200 and json.loads(r.body)["REMOTE_ADDR"] == "127.0.0.1"


def test_static_map_on_a_uwsgi_socket(gangway, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_bytes(b"static bytes\n")
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    srv = start(gangway, "--static-map", "/static=%s" % static)
    r = call(srv, request_packet("GET", "/static/a.txt"))
    assert (r.status, r.body) == (200, b"static bytes\n")
    assert r.header("content-length") == "13"
    r = call(srv, request_packet("HEAD", "/static/a.txt"))
    assert (r.status, r.body, r.header("content-length")) == (200, b"", "13")
    # PATH_INFO as a peer other than nginx might send it: never outside the map
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static//../secret.txt"):
        pairs = [(k, path if k in ("PATH_INFO", "REQUEST_URI") else v)
                 for k, v in nginx_vars("GET", "/x")]
        r = call(srv, packet(pairs))
        assert r.status in (400, 404) and b"secret" not in r.body, (path, r.status)


# ---------------------------------------------------------------------------
# malformed packets: closed without an answer, logged, the worker serves on
# ---------------------------------------------------------------------------

GOOD = nginx_vars("GET", "/bad")
NO_METHOD = [(k, v) for k, v in GOOD if k != "REQUEST_METHOD"]


def with_var(name, value):
    return [(k, v) for k, v in GOOD if k != name] + [(name, value)]


MALFORMED = {
    "modifier1": (packet(GOOD, modifier1=1), r"unknown modifier1 \(0 is WSGI\): 1\b"),
    "modifier1-psgi": (packet(GOOD, modifier1=5), r"unknown modifier1 \(0 is WSGI\): 5\b"),
    "empty-block": (b"\x00\x00\x00\x00", r"empty variables block"),
    "name-past-block": (packet(raw_block=block(GOOD) + struct.pack("<H", 50) + b"HTTP_X"),
                        r"variable name past the block"),
    "value-past-block": (packet(raw_block=block(GOOD) + struct.pack("<H", 6) + b"HTTP_X"
                                + struct.pack("<H", 100) + b"abc"),
                         r"variable value past the block"),
    "truncated-variable": (packet(raw_block=block(GOOD) + b"\x05"), r"truncated variable"),
    "empty-name": (packet(GOOD + [("", "x")]), r"empty variable name"),
    "no-method": (packet(NO_METHOD), r"no REQUEST_METHOD"),
    "cl-letters": (packet(with_var("CONTENT_LENGTH", "12a")), r"CONTENT_LENGTH is not a number"),
    "cl-negative": (packet(with_var("CONTENT_LENGTH", "-1")), r"CONTENT_LENGTH is not a number"),
    "cl-space": (packet(with_var("CONTENT_LENGTH", " 5")), r"CONTENT_LENGTH is not a number"),
    "cl-too-long": (packet(with_var("CONTENT_LENGTH", "1" * 19)), r"CONTENT_LENGTH too long"),
    "http-request": (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                     r"unknown modifier1 \(0 is WSGI\): 71\b"),
}


def assert_refused(srv, data, reason, mark, peer=r"127\.0\.0\.1", sock=None):
    before = len(re.findall(r"uwsgi: .*; closing", srv.read_log()))
    raw = exchange(srv, data, sock)
    assert raw == b"", "answered a malformed packet: %r" % raw[:300]
    pattern = r"uwsgi: %s: %s.*; closing" % (peer, reason)
    wait_for(lambda: re.search(pattern, srv.read_log()), 5, what="the log line " + pattern)
    assert len(re.findall(r"uwsgi: .*; closing", srv.read_log())) == before + 1
    assert "/bad" not in marks(mark), "the app ran for a refused packet"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_packet_is_closed_without_an_answer(gangway, tmp_path, case):
    data, reason = MALFORMED[case]
    mark = str(tmp_path / "mark")
    srv = start(gangway, env={"GW_TEST_MARK": mark})
    pid_before = call(srv, request_packet("GET", "/pid")).body
    assert_refused(srv, data, reason, mark)
    # the same worker (nothing crashed or respawned) serves the next connection
    r = call(srv, request_packet("GET", "/pid"))
    assert (r.status, r.body) == (200, pid_before)
    assert environ_of(srv, request_packet("GET", "/env?after=1"))["QUERY_STRING"] == "after=1"
    assert srv.proc.poll() is None


def test_malformed_packet_on_a_unix_socket_is_logged_as_unix(gangway, tmp_path):
    path = str(tmp_path / "u.sock")
    mark = str(tmp_path / "mark")
    srv = start(gangway, unix=path, env={"GW_TEST_MARK": mark})
    assert_refused(srv, MALFORMED["no-method"][0], "no REQUEST_METHOD", mark, peer="unix",
                   sock=connect_unix(path))
    assert environ_of(srv, request_packet("GET", "/env"), connect_unix(path))["PATH_INFO"] == "/env"


def test_buffer_size_caps_the_variables_block(gangway, tmp_path):
    mark = str(tmp_path / "mark")
    srv = start(gangway, "--buffer-size", "512", env={"GW_TEST_MARK": mark})
    small = nginx_vars("GET", "/env")
    pad = 512 - len(block(small)) - 4 - len("HTTP_X_PAD")
    fits = packet(small + [("HTTP_X_PAD", "p" * pad)])
    assert len(fits) - 4 == 512
    assert environ_of(srv, fits)["HTTP_X_PAD"] == "p" * pad

    big = nginx_vars("GET", "/bad") + [("HTTP_X_PAD", "p" * (pad + 1))]
    assert len(block(big)) == 513
    assert_refused(srv, packet(big), r"--buffer-size is smaller than this request block size: 513",
                   mark)
    assert environ_of(srv, fits)["PATH_INFO"] == "/env"


def test_buffer_size_out_of_range_is_a_startup_error(tmp_path):
    for bad in ("3", "65536"):
        p = subprocess.run([BIN, "--uwsgi", "127.0.0.1:0", "--buffer-size", bad, "uw_app"],
                           cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=20)
        assert p.returncode != 0
        assert p.returncode == 2
        assert b"invalid value '%s' for --buffer-size (from 4 to 65535" % bad.encode() \
            in p.stdout


def test_limit_body_answers_413(gangway, tmp_path):
    mark = str(tmp_path / "mark")
    srv = start(gangway, "--limit-body", "100", env={"GW_TEST_MARK": mark})
    ok = b"x" * 100
    r = call(srv, request_packet("POST", "/sha256", ok))
    assert r.body == b"100 " + hashlib.sha256(ok).hexdigest().encode()
    r = call(srv, request_packet("POST", "/bad", b"y" * 101))
    assert r.status == 413
    assert r.version.startswith("HTTP/1.")
    assert "/bad" not in marks(mark)
    # a large declared body is refused from the variables alone
    s = connect(srv)
    try:
        s.sendall(packet(with_var("CONTENT_LENGTH", str(50 * 1024 * 1024))))
        assert parse(read_to_close(s)).status == 413
    finally:
        s.close()
    assert "/bad" not in marks(mark)
    assert call(srv, request_packet("GET", "/pid")).status == 200


def test_packet_cut_short_by_the_peer_is_dropped(gangway, tmp_path):
    mark = str(tmp_path / "mark")
    srv = start(gangway, env={"GW_TEST_MARK": mark})
    full = request_packet("POST", "/bad", b"z" * 100)
    for cut in (2, 20, len(full) - 50):  # in the header, the block, the body
        s = connect(srv)
        try:
            s.sendall(full[:cut])
            s.shutdown(socket.SHUT_WR)
            assert read_to_close(s, timeout=5) == b""
        finally:
            s.close()
    assert "/bad" not in marks(mark)
    assert call(srv, request_packet("GET", "/pid")).status == 200


# ---------------------------------------------------------------------------
# --uwsgi-allow-from
# ---------------------------------------------------------------------------

def has_ipv6():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_allow_from_refuses_other_peers_but_not_unix_or_http(gangway, tmp_path):
    path = str(tmp_path / "allow.sock")
    mark = str(tmp_path / "mark")
    srv = gangway("--http", "127.0.0.1:0", "--uwsgi", "127.0.0.1:0", "--uwsgi", path,
                  "--uwsgi-allow-from", "10.0.0.0/8", "uw_app", env={"GW_TEST_MARK": mark})
    assert exchange(srv, request_packet("GET", "/bad")) == b""
    wait_for(lambda: "uwsgi: refused a connection from 127.0.0.1 (not in --uwsgi-allow-from)"
             in srv.read_log(), 5, what="the refusal in the log")
    assert "/bad" not in marks(mark)
    # unix sockets are always allowed
    assert environ_of(srv, request_packet("GET", "/env"), connect_unix(path))["PATH_INFO"] == "/env"
    # the HTTP listener is not a uwsgi socket
    s = srv.connect()
    try:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert parse(read_to_close(s)).status == 200
    finally:
        s.close()


def test_refused_peers_are_logged_once_a_second_with_a_count(gangway):
    """Anyone who can connect makes a refusal: 300 of them in a burst are
    not 300 log lines. One line a second at most; the next line says how
    many went unsaid, so every refusal is counted. (Before: one line per
    connection, as fast as an outsider connects.)"""
    srv = start(gangway, "--workers", "1", "--uwsgi-allow-from", "10.0.0.0/8")
    host, port = uwsgi_tcp(srv)
    t0 = time.monotonic()
    for _ in range(300):
        socket.create_connection((host, port), timeout=10).close()
    refusals = re.compile(r"uwsgi: refused a connection from 127\.0\.0\.1 \(not in "
                          r"--uwsgi-allow-from\)(?:; (\d+) more refused since the last such "
                          r"line)?\n")

    def counted():
        # one more refusal a poll: the line after the second is out counts the burst
        socket.create_connection((host, port), timeout=10).close()
        found = refusals.findall(srv.read_log())
        return found if len(found) + sum(int(n or 0) for n in found) >= 300 else None
    found = wait_for(counted, 15, interval=0.1, what="a line counting the refused burst")
    took = time.monotonic() - t0
    assert len(found) <= 2 + took, (len(found), took)


def test_allow_from_list_and_single_address(gangway):
    srv = start(gangway, "--uwsgi-allow-from", "10.0.0.0/8",
                "--uwsgi-allow-from", "127.0.0.1")
    assert call(srv, request_packet("GET", "/pid")).status == 200
    srv2 = start(gangway, "--uwsgi-allow-from", "127.0.0.2/32")
    assert exchange(srv2, request_packet("GET", "/pid")) == b""
    wait_for(lambda: "refused a connection from 127.0.0.1" in srv2.read_log(), 5,
             what="the refusal in the log")


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
def test_allow_from_ipv6(gangway):
    srv = gangway("--uwsgi", "[::1]:0", "uw_app", listen=False)  # default: 127.0.0.0/8, ::1
    host, port = uwsgi_tcp(srv)
    assert host == "::1"
    s = socket.create_connection(("::1", port), timeout=10)
    assert environ_of(srv, request_packet("GET", "/env"), s)["PATH_INFO"] == "/env"

    srv4 = gangway("--uwsgi", "[::1]:0", "--uwsgi-allow-from", "127.0.0.0/8", "uw_app",
                   listen=False)
    s = socket.create_connection(("::1", uwsgi_tcp(srv4)[1]), timeout=10)
    assert exchange(srv4, request_packet("GET", "/pid"), s) == b""
    wait_for(lambda: "refused a connection from ::1" in srv4.read_log(), 5,
             what="the refusal in the log")


def test_bad_allow_from_is_a_startup_error():
    p = subprocess.run([BIN, "--uwsgi", "127.0.0.1:0", "--uwsgi-allow-from", "10.0.0.0/33",
                        "uw_app"], cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=20)
    assert p.returncode != 0
    assert p.returncode == 2
    assert b"invalid value '10.0.0.0/33' for --uwsgi-allow-from (an address or CIDR)" \
        in p.stdout
