"""start_response, write() and the status line at their edges (issues 14 and 20).

App: tests/apps/wsgi_edges_app.py. Each test here failed on the code before
its fix (see the commit that added it).
"""
import socket
import time

import pytest

from conftest import RawReader

pytestmark = pytest.mark.usefixtures("sanitizer_reports")


def get(server, path, sock=None):
    s = sock or server.connect(timeout=30)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        return RawReader(s, timeout=30).read_response()
    finally:
        if sock is None:
            s.close()


def pid(server):
    return int(get(server, "/pid").body.split(b"=")[1])


def status_line(server, path):
    s = server.connect(timeout=30)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.split(b"\r\n", 1)[0]
    finally:
        s.close()


@pytest.fixture
def server(gangway):
    return gangway("--workers", "1", "wsgi_edges_app:application")


# ---------------------------------------------------------------------------
# exc_info (issue 20): checked before it is raised
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["none", "strs", "mismatch", "list", "short", "tbframe",
                                  "notype", "object"])
def test_exc_info_that_is_no_exception_raises_typeerror(server, kind):
    """After the headers went out, start_response(..., exc_info) re-raises
    exc_info; one that is no (type, exception, traceback) was handed to the
    interpreter unchecked, set a traceback into NoneType, and a later
    request crashed the worker."""
    before = pid(server)
    r = get(server, "/excinfo?kind=" + kind)
    assert r.status == 200
    assert r.body.startswith(b"head-sent;TypeError: exc_info must be"), r.body
    assert r.body.endswith(b";NoneType ok=True"), r.body
    for _ in range(3):
        assert get(server, "/nonecheck").body == b"NoneType ok=True"
    assert pid(server) == before


@pytest.mark.parametrize("kind,want", [
    ("valid", b"reraised Boom the original error tb=True"),
    ("class", b"reraised ValueError ValueError()"),
    ("class-tb", b"reraised Boom  tb=True"),
])
def test_exc_info_of_an_exception_is_reraised(server, kind, want):
    r = get(server, "/excinfo?kind=" + kind)
    assert r.body == b"head-sent;" + want + b";NoneType ok=True"


# ---------------------------------------------------------------------------
# write() after the answer ended (issue 20)
# ---------------------------------------------------------------------------

def test_write_from_close_after_the_end_raises_and_sends_nothing(server):
    s = server.connect(timeout=30)
    try:
        rd = RawReader(s, timeout=30)
        s.sendall(b"GET /write-in-close HTTP/1.1\r\nHost: t\r\n\r\n")
        r = rd.read_response()
        assert (r.status, r.body) == (200, b"body")
        # The keep-alive stream goes on right after the end of that answer.
        s.sendall(b"GET /close-result HTTP/1.1\r\nHost: t\r\n\r\n")
        r2 = rd.read_response()
    finally:
        s.close()
    assert r2.status == 200, r2.body
    assert r2.body == b"write: RuntimeError;start_response: RuntimeError"


# ---------------------------------------------------------------------------
# Connection from the app: a token list, case-insensitive (issue 20)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value,closes", [
    ("close", True), ("CLOSE", True), ("Close", True), ("keep-alive, Close", True),
    (" ,close ,", True), ("x-foo,\tcLoSe", True),
    ("closed", False), ("x-close", False), ("keep-alive", False), ("", False),
])
def test_connection_close_from_the_app(server, value, closes):
    from urllib.parse import quote
    s = server.connect(timeout=30)
    try:
        rd = RawReader(s, timeout=30)
        s.sendall(b"GET /conn?v=%s HTTP/1.1\r\nHost: t\r\n\r\n" % quote(value).encode())
        r = rd.read_response()
        assert (r.status, r.body) == (200, b"x")
        assert (r.header("connection") == "close") == closes
        if closes:
            assert rd.at_eof()
        else:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            assert rd.read_response().body.startswith(b"pid=")
    finally:
        s.close()


# ---------------------------------------------------------------------------
# The status line (issue 20): status-code SP [reason-phrase]
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("status,line", [
    ("200", b"HTTP/1.1 200 OK"),
    ("404", b"HTTP/1.1 404 Not Found"),
    ("429", b"HTTP/1.1 429 Too Many Requests"),
    ("299", b"HTTP/1.1 299 "),
    ("200 ", b"HTTP/1.1 200 "),
    ("200 Fine", b"HTTP/1.1 200 Fine"),
])
def test_status_without_reason_phrase_gets_one(server, status, line):
    from urllib.parse import quote
    assert status_line(server, "/status?s=" + quote(status)) == line


# ---------------------------------------------------------------------------
# Control characters in values (issue 20): only HTAB among them
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("byte", ["7f", "0b", "0c", "01", "1f", "00", "0d", "0a"])
def test_control_characters_in_header_values_are_refused(server, byte):
    assert get(server, "/ctl?c=" + byte).body == b"refused"


@pytest.mark.parametrize("byte", ["09", "20", "7e", "80", "ff"])
def test_tab_and_obs_text_in_header_values_are_accepted(server, byte):
    assert get(server, "/ctl?c=" + byte).body == b"accepted"


def test_every_byte_at_every_position(server):
    """The word-at-a-time check against the definition, for values of 1 to
    20 bytes, in the status and in a header value."""
    r = get(server, "/ctl-matrix")
    assert r.body == b"[]"


# ---------------------------------------------------------------------------
# --harakiri counts Python time only (issue 14)
# ---------------------------------------------------------------------------

def test_write_waiting_for_a_slow_client_is_not_python_time(gangway):
    """An app that write()s 20 MiB to a client reading 4 MiB/s waits in
    write() for 5 s, well past --harakiri 1 and its grace: neither the
    watchdog nor the master may count that wait. A pure-Python loop is
    still interrupted."""
    s = gangway("--workers", "1", "--harakiri", "1", "--harakiri-grace", "1",
                "wsgi_edges_app:application")
    before = pid(s)
    rate = 4 << 20
    c = s.connect(timeout=30)
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(b"GET /write-big?mb=20 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = bytearray()
        t0 = time.monotonic()
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += b
            end = got.find(b"\r\n\r\n")
            if end >= 0 and len(got) - end - 4 >= 20 << 20:
                break
            # A slow client by design: it reads at `rate` at most.
            ahead = len(got) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        took = time.monotonic() - t0
    finally:
        c.close()
    head, body = bytes(got).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert len(body) == 20 << 20 and body.count(b"w") == len(body)
    assert took > 3.5, "the client was not slow enough to test anything (%.1fs)" % took
    assert pid(s) == before
    assert "harakiri" not in s.read_log()
    # Python time still counts.
    t0 = time.monotonic()
    r = get(s, "/spin")
    assert r.status == 500
    assert time.monotonic() - t0 < 5
    assert pid(s) == before
    assert "harakiri" in s.read_log()


# ---------------------------------------------------------------------------
# uwsgi: the scheme variables compare case-insensitively too
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("var,value,scheme", [
    ("HTTPS", "OFF", "http"), ("HTTPS", "Off", "http"), ("HTTPS", "ON", "https"),
    ("REQUEST_SCHEME", "HTTPS", "https"), ("UWSGI_SCHEME", "Https", "https"),
])
def test_uwsgi_scheme_values_any_case(gangway, var, value, scheme):
    import test_uwsgi as U
    srv = U.start(gangway)
    pairs = [(k, v) for k, v in U.nginx_vars() if k not in ("REQUEST_SCHEME", var)]
    e = U.environ_of(srv, U.packet(pairs + [(var, value)]))
    assert e["wsgi.url_scheme"] == scheme
