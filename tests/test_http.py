"""HTTP/1.1 behaviour of gangway, exercised over raw sockets on 127.0.0.1.

Apps live in tests/apps: echo.py (JSON description of the request; appends
PATH_INFO to $GW_TEST_MARK on every call) and bodies.py (response framing).
Every wait is a bounded socket timeout on a condition; there are no bare sleeps.
"""
import email.utils
import json
import re
import socket
import threading
import time

import pytest

from conftest import RawReader, request, wait_for

import apps.bodies as bodies  # tests/apps imports as a namespace package


# ---------------------------------------------------------------- helpers

def req(method="GET", path="/", version="HTTP/1.1", headers=(), body=b"", host="x"):
    """Build one request. Adds Content-Length for a body unless framing is given."""
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None:
        lines.append("Host: " + host)
    lines += ["%s: %s" % h for h in headers]
    names = {k.lower() for k, _ in headers}
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts, trailers=b""):
    out = b""
    for p in parts:
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n" + trailers + b"\r\n"


def clean(resp):
    """The response started exactly at a status line (no stray bytes before it)."""
    assert resp.version in ("HTTP/1.1", "HTTP/1.0"), "stray bytes before status line: %r" % resp.version[:80]
    return resp


def echo_of(resp):
    clean(resp)
    assert resp.status == 200, (resp.status, resp.body[:300])
    return json.loads(resp.body)


def marks(path):
    try:
        with open(path, encoding="latin-1") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def send_quietly(sock, data):
    """sendall, tolerating a server that already answered and closed."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def recv_exact(sock, n, timeout=5):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        b = sock.recv(n - len(buf))
        if not b:
            break
        buf += b
    return buf


def closed_within(reader, timeout):
    """(closed?, seconds waited): waits for EOF; any stray byte counts as not closed."""
    t0 = time.monotonic()
    closed = reader.at_eof(timeout)
    return closed, time.monotonic() - t0


@pytest.fixture
def mark(tmp_path):
    return str(tmp_path / "app-calls")


@pytest.fixture
def start(gangway, mark):
    """start(*options, app="echo:application") -> ready server (options go first)."""
    def _start(*options, app="echo:application"):
        return gangway(*options, app, env={"GW_TEST_MARK": mark})
    return _start


@pytest.fixture
def echo(start):
    return start()


def assert_fresh_ok(server):
    """A normal request on a NEW connection still works."""
    r = request(server, req(path="/fresh-ok"), timeout=10)
    assert echo_of(r)["PATH_INFO"] == "/fresh-ok"


def assert_rejected(server, mark, raw, status, close=True):
    """raw gets `status`, the connection closes, the app never runs, and the
    server still serves a new connection afterwards."""
    s = server.connect(10)
    try:
        send_quietly(s, raw)
        rd = RawReader(s, 10)
        r = rd.read_response()
        assert r.status == status, "expected %d, got %d %s: %r" % (status, r.status, r.reason, r.body[:200])
        assert b"REQUEST_METHOD" not in r.body
        if close:
            assert rd.at_eof(5), "connection left open after %d" % status
    finally:
        s.close()
    assert marks(mark) == [], "rejected request reached the app"
    assert_fresh_ok(server)
    assert marks(mark) == ["/fresh-ok"]
    return r


# ---------------------------------------------------------------- basics

def test_echo_environ_basics(echo):
    r = request(echo, req("POST", "/p/q?a=1&b=2", headers=[("Content-Type", "text/x")], body=b"abc"))
    e = echo_of(r)
    assert e["REQUEST_METHOD"] == "POST"
    assert e["PATH_INFO"] == "/p/q"
    assert e["QUERY_STRING"] == "a=1&b=2"
    assert e["REQUEST_URI"] == "/p/q?a=1&b=2"
    assert e["SCRIPT_NAME"] == ""
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["CONTENT_LENGTH"] == "3"
    assert e["CONTENT_TYPE"] == "text/x"
    assert e["body"] == "abc"
    assert e["headers"]["HTTP_HOST"] == "x"
    assert "HTTP_CONTENT_LENGTH" not in e["headers"]
    assert "HTTP_CONTENT_TYPE" not in e["headers"]


def test_date_and_server_headers(echo):
    r = request(echo, req(path="/d"))
    assert r.status == 200
    assert r.header("server") == "gangway"
    date = r.header("date")
    assert date is not None, r.headers
    assert re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                    r"\d{4} \d\d:\d\d:\d\d GMT$", date), date
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 60


# ---------------------------------------------------------------- keep-alive

def test_http11_keepalive_by_default(echo):
    s = echo.connect()
    try:
        rd = RawReader(s)
        for i in range(3):
            s.sendall(req(path="/ka%d" % i))
            r = rd.read_response()
            assert echo_of(r)["PATH_INFO"] == "/ka%d" % i
            assert (r.header("connection") or "").lower() != "close"
    finally:
        s.close()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_http11_connection_close_honoured(echo, value):
    s = echo.connect()
    try:
        # A second request is pipelined behind it: it must not be answered.
        s.sendall(req(path="/c1", headers=[("Connection", value)]) + req(path="/c2"))
        rd = RawReader(s)
        r = rd.read_response()
        assert echo_of(r)["PATH_INFO"] == "/c1"
        assert (r.header("connection") or "").lower() == "close"
        assert rd.at_eof(5), "server did not close after Connection: close"
    finally:
        s.close()


def test_http10_closes_by_default(echo):
    s = echo.connect()
    try:
        s.sendall(req(path="/ten", version="HTTP/1.0"))
        rd = RawReader(s)
        r = rd.read_response()
        e = echo_of(r)
        assert e["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert (r.header("connection") or "").lower() != "keep-alive"
        assert rd.at_eof(5), "HTTP/1.0 connection without keep-alive left open"
    finally:
        s.close()


def test_http10_keepalive_on_request(echo):
    s = echo.connect()
    try:
        rd = RawReader(s)
        for i in range(2):
            s.sendall(req(path="/ten%d" % i, version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
            r = rd.read_response()
            assert echo_of(r)["PATH_INFO"] == "/ten%d" % i
            assert (r.header("connection") or "").lower() == "keep-alive"
        # and it still closes when the client stops asking for keep-alive
        s.sendall(req(path="/ten-last", version="HTTP/1.0"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/ten-last"
        assert rd.at_eof(5)
    finally:
        s.close()


def test_100_sequential_requests_one_connection(echo):
    s = echo.connect()
    try:
        rd = RawReader(s)
        for i in range(100):
            if i % 2:
                s.sendall(req("POST", "/seq/%d" % i, body=b"body-%d" % i))
            else:
                s.sendall(req(path="/seq/%d" % i))
            e = echo_of(rd.read_response())
            assert e["PATH_INFO"] == "/seq/%d" % i
            assert e["body"] == ("body-%d" % i if i % 2 else "")
    finally:
        s.close()


def test_20_pipelined_requests_in_order(echo):
    raw = b""
    for i in range(20):
        if i % 3 == 1:
            raw += req("POST", "/pipe/%d" % i, body=b"pipe-body-%d" % i)
        elif i % 3 == 2:
            raw += req("POST", "/pipe/%d" % i, headers=[("Transfer-Encoding", "chunked")],
                       body=chunked(b"pipe-", b"chunk-%d" % i))
        else:
            raw += req(path="/pipe/%d?i=%d" % (i, i))
    s = echo.connect()
    try:
        s.sendall(raw)
        rd = RawReader(s)
        for i in range(20):
            e = echo_of(rd.read_response())
            assert e["PATH_INFO"] == "/pipe/%d" % i
            if i % 3 == 1:
                assert e["body"] == "pipe-body-%d" % i
            elif i % 3 == 2:
                assert e["body"] == "pipe-chunk-%d" % i
            else:
                assert e["QUERY_STRING"] == "i=%d" % i and e["body"] == ""
    finally:
        s.close()


# ---------------------------------------------------------------- request bodies

def test_chunked_body_with_extensions_and_trailers(echo):
    body = (b"5;ext=1\r\nhello\r\n"
            b"1;c\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"a\r\nabcdefghij\r\n"
            b"0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n")
    s = echo.connect()
    try:
        s.sendall(req("POST", "/chunked", headers=[("Transfer-Encoding", "chunked")], body=body)
                  + req(path="/after-trailers"))
        rd = RawReader(s)
        e = echo_of(rd.read_response())
        assert e["body"] == "hello 0123456789abcdefghij"
        assert e["CONTENT_LENGTH"] == str(len(e["body"]))
        # the trailers were consumed: the next request on the connection parses
        assert echo_of(rd.read_response())["PATH_INFO"] == "/after-trailers"
    finally:
        s.close()


@pytest.mark.parametrize("ext", [b";a;b", b';q="x;y";z'], ids=["two-names", "quoted-then-name"])
def test_chunked_body_multiple_extensions(echo, ext):
    """RFC 9112 7.1.1: chunk-ext = *( ";" name [ "=" value ] ), any number of them."""
    body = b"5" + ext + b"\r\nhello\r\n0\r\n\r\n"
    e = echo_of(request(echo, req("POST", "/ext", headers=[("Transfer-Encoding", "chunked")], body=body)))
    assert e["body"] == "hello" and e["CONTENT_LENGTH"] == "5"


@pytest.mark.parametrize("ext", [b";a=b;c", b";a=1;b=2"], ids=["value-then-name", "two-values"])
def test_chunked_extension_after_unquoted_value_is_refused(echo, mark, ext):
    """Debian's llhttp 8.1 cannot parse another extension after an unquoted
    value; gangway keeps llhttp strict and answers 400 (documented in
    SECURITY.md). No known client sends chunk extensions at all."""
    body = b"5" + ext + b"\r\nhello\r\n0\r\n\r\n"
    assert_rejected(echo, mark, req("POST", "/ext", headers=[("Transfer-Encoding", "chunked")],
                                    body=body), 400)


def test_chunked_body_empty(echo):
    e = echo_of(request(echo, req("POST", "/empty", headers=[("Transfer-Encoding", "chunked")],
                                  body=b"0\r\n\r\n")))
    assert e["body"] == ""
    assert e.get("CONTENT_LENGTH") in ("0", None, "")


def test_chunked_body_large_many_chunks(echo):
    parts = [bytes([65 + i % 26]) * (1000 + i) for i in range(200)]
    e = echo_of(request(echo, req("POST", "/big", headers=[("Transfer-Encoding", "chunked")],
                                  body=chunked(*parts))))
    want = b"".join(parts).decode()
    assert e["CONTENT_LENGTH"] == str(len(want))
    assert e["body"] == want


def test_request_sent_one_byte_at_a_time(echo):
    raw = req("POST", "/bytewise?q=1", headers=[("Transfer-Encoding", "chunked"), ("X-A", "1")],
              body=chunked(b"abc", b"defg", trailers=b"T: 1\r\n"))
    s = echo.connect()
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            s.sendall(raw[i:i + 1])
        e = echo_of(RawReader(s).read_response())
        assert e["PATH_INFO"] == "/bytewise" and e["QUERY_STRING"] == "q=1"
        assert e["body"] == "abcdefg" and e["CONTENT_LENGTH"] == "7"
        assert e["headers"]["HTTP_X_A"] == "1"
    finally:
        s.close()


def test_expect_100_continue(echo):
    s = echo.connect()
    try:
        s.sendall(req("POST", "/expect", headers=[("Content-Length", "11"), ("Expect", "100-continue")]))
        interim = b"HTTP/1.1 100 Continue\r\n\r\n"
        assert recv_exact(s, len(interim), timeout=5) == interim
        s.sendall(b"hello world")
        rd = RawReader(s)
        e = echo_of(rd.read_response())
        assert e["body"] == "hello world"
        # the connection is still usable
        s.sendall(req(path="/after-expect"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/after-expect"
    finally:
        s.close()


def test_expect_100_continue_chunked(echo):
    s = echo.connect()
    try:
        s.sendall(req("POST", "/expect", headers=[("Transfer-Encoding", "chunked"),
                                                  ("Expect", "100-continue")]))
        interim = b"HTTP/1.1 100 Continue\r\n\r\n"
        assert recv_exact(s, len(interim), timeout=5) == interim
        s.sendall(chunked(b"chunky", b" body"))
        e = echo_of(RawReader(s).read_response())
        assert e["body"] == "chunky body" and e["CONTENT_LENGTH"] == "11"
    finally:
        s.close()


def test_expect_100_continue_body_sent_eagerly(echo):
    """A client that does not wait for 100 still gets exactly one final response."""
    s = echo.connect()
    try:
        s.sendall(req("POST", "/eager", headers=[("Content-Length", "5"), ("Expect", "100-continue")])
                  + b"hello" + req(path="/next"))
        rd = RawReader(s)
        r = rd.read_response()
        if r.status == 100:
            r = rd.read_response()
        assert echo_of(r)["body"] == "hello"
        assert echo_of(rd.read_response())["PATH_INFO"] == "/next"
    finally:
        s.close()


# ---------------------------------------------------------------- HEAD and response framing

@pytest.mark.parametrize("path", ["/cl", "/list", "/gen"])
def test_head_has_headers_but_no_body(start, path):
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req("HEAD", path))
        rd = RawReader(s)
        r = rd.read_response(head=True)
        assert r.status == 200
        if path == "/cl":
            assert r.header("content-length") == str(len(bodies.CL_BODY))
        # No body bytes were sent: the next response on the connection parses cleanly.
        s.sendall(req(path="/cl"))
        r2 = clean(rd.read_response())
        assert r2.status == 200 and r2.body == bodies.CL_BODY
    finally:
        s.close()


def test_head_echo_keeps_content_length(echo):
    get = request(echo, req("GET", "/h"))
    s = echo.connect()
    try:
        s.sendall(req("HEAD", "/h"))
        rd = RawReader(s)
        r = rd.read_response(head=True)
        assert r.status == 200
        # echo's JSON says "HEAD" where GET's says "GET": one byte longer
        assert r.header("content-length") == str(len(get.body) + 1)
        s.sendall(req(path="/after-head"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/after-head"
    finally:
        s.close()


@pytest.mark.parametrize("path,want", [("/cl", bodies.CL_BODY),
                                       ("/gen-cl", b"".join(bodies.GEN_PARTS))], ids=["list", "generator"])
def test_app_content_length_is_used(start, path, want):
    srv = start(app="bodies:application")
    r = request(srv, req(path=path))
    assert r.status == 200
    assert r.header("content-length") == str(len(want))
    assert r.header("transfer-encoding") is None
    assert r.body == want


GEN_WANT = {"/gen": b"".join(bodies.GEN_PARTS), "/gen-empty": b"",
            "/big": bodies.BIG_PIECE * bodies.BIG_COUNT}


@pytest.mark.parametrize("path", sorted(GEN_WANT))
def test_generator_without_length_is_chunked_on_11(start, path):
    want = GEN_WANT[path]
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path=path) + req(path="/cl"))
        rd = RawReader(s)
        r = rd.read_response()
        assert r.status == 200
        if path == "/gen-empty" and r.header("content-length") == "0":
            pass  # an exhausted generator may be sent as Content-Length: 0
        else:
            assert (r.header("transfer-encoding") or "").lower() == "chunked", r.headers
            assert r.header("content-length") is None
        assert r.body == want
        # framing ended exactly where it should: the pipelined request follows
        r2 = clean(rd.read_response())
        assert r2.body == bodies.CL_BODY
    finally:
        s.close()


def test_generator_without_length_is_close_delimited_on_10(start):
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path="/gen", version="HTTP/1.0"))
        rd = RawReader(s)
        r = rd.read_response()  # no length: reads until the server closes
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        assert r.header("content-length") is None
        assert r.body == b"".join(bodies.GEN_PARTS)
        assert rd.at_eof(1)
    finally:
        s.close()


def test_generator_on_10_keepalive_is_framed_or_closed(start):
    """HTTP/1.0 keep-alive cannot use chunked: either a Content-Length, or close."""
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path="/gen", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
        rd = RawReader(s)
        r = rd.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        assert r.body == b"".join(bodies.GEN_PARTS)
        if r.header("content-length") is None:
            assert (r.header("connection") or "").lower() != "keep-alive"
    finally:
        s.close()


def test_list_without_length(start):
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path="/list") + req(path="/cl"))
        rd = RawReader(s)
        r = rd.read_response()
        assert r.status == 200
        cl, te = r.header("content-length"), (r.header("transfer-encoding") or "").lower()
        assert (cl is not None) != (te == "chunked"), r.headers
        if cl is not None:
            assert cl == str(len(b"".join(bodies.LIST_PARTS)))
        assert r.body == b"".join(bodies.LIST_PARTS)
        assert clean(rd.read_response()).body == bodies.CL_BODY
    finally:
        s.close()


@pytest.mark.parametrize("code", [204, 304])
@pytest.mark.parametrize("variant", ["gen", "list", "cl", "cl&list"])
def test_204_304_never_carry_a_body(start, code, variant):
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path="/status/%d?%s" % (code, variant)) + req(path="/cl"))
        rd = RawReader(s)
        r = rd.read_response()
        assert r.status == code
        assert r.header("transfer-encoding") is None, r.headers
        if code == 204:
            assert r.header("content-length") in (None, "0"), r.headers
        r2 = clean(rd.read_response())
        assert bodies.LEAK[:10] not in r2.body
        assert r2.status == 200 and r2.body == bodies.CL_BODY
    finally:
        s.close()


def test_204_on_http10_does_not_close_delimit(start):
    srv = start(app="bodies:application")
    s = srv.connect()
    try:
        s.sendall(req(path="/status/204", version="HTTP/1.0"))
        data = b""
        s.settimeout(5)
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"204"
        assert rest == b""
    finally:
        s.close()


# ---------------------------------------------------------------- lingering close

def read_to_eof(sock, timeout=10):
    """Everything until the peer's FIN. A RST raises ConnectionResetError:
    the kernel drops whatever of the answer was still unread then."""
    sock.settimeout(timeout)
    out = b""
    while True:
        b = sock.recv(65536)
        if not b:
            return out
        out += b


class ReadBytes:
    """A socket stand-in for RawReader over bytes already read: then EOF."""

    def settimeout(self, t):
        pass

    def recv(self, n):
        return b""


def logged(server, needle):
    return lambda: needle in server.read_log()


@pytest.mark.parametrize("how", ["connection-close", "http10-close-delimited", "error-answer"])
def test_closing_answer_survives_bytes_the_client_sends_after_it(start, how):
    """The client sends its request (Connection: close, or HTTP/1.0 with a
    close-delimited answer, or a request the server refuses) and then 256
    KiB more, and reads nothing until the server is done with it. Closing a
    socket with unread bytes makes the kernel send a RST, which drops the
    answer from the client's receive queue: gangway shuts its side down
    and drains instead (a lingering close), so the client reads the whole
    answer and a clean EOF."""
    s = start("--access-log", "-", app="bodies:application")
    if how == "connection-close":
        head = req(path="/gen?lc", headers=[("Connection", "close")])
    elif how == "http10-close-delimited":
        head = req(path="/gen?lc", version="HTTP/1.0", host=None)
    else:
        head = b"GET /gen?lc HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    c = s.connect(10)
    sender = threading.Thread(target=send_quietly, args=(c, head + b"x" * (256 * 1024)))
    try:
        sender.start()
        wait_for(logged(s, ": 400 (" if how == "error-answer" else "/gen?lc"), 10,
                 what="the answer to be logged")
        # The server has answered and closed (or is lingering): only now read.
        data = read_to_eof(c)
    finally:
        sender.join(10)
        c.close()
    if how == "error-answer":
        assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"Bad Request\n"), data[:300]
        return
    assert data.startswith(b"HTTP/1.%d 200 " % (how == "connection-close")), data[:300]
    rd = RawReader(ReadBytes())  # parse the bytes already read
    rd.buf = data
    r = rd.read_response()
    assert r.body == b"".join(bodies.GEN_PARTS) and not rd.buf


# ---------------------------------------------------------------- environ details

def test_absolute_form_target(echo):
    e = echo_of(request(echo, req(path="http://example.com/a/b?x=1", host="example.com")))
    assert e["PATH_INFO"] == "/a/b"
    assert e["QUERY_STRING"] == "x=1"


@pytest.mark.parametrize("target,query", [("http://example.com", ""),
                                          ("http://example.com?q=1", "q=1"),
                                          ("https://[::1]:81?q", "q")])
def test_absolute_form_target_with_an_empty_path_is_for_root(echo, target, query):
    """RFC 9112 3.2.2, RFC 3986 6.2.3: "http://h" is "http://h/". (Before:
    PATH_INFO was "".)"""
    e = echo_of(request(echo, req(path=target, host="example.com")))
    assert (e["PATH_INFO"], e["QUERY_STRING"], e["REQUEST_URI"]) == ("/", query, target)


@pytest.mark.parametrize("host", ["", "a,b", "%c3%a9t%c3%a9.example", "[v1.x]:8", "h.example:"])
def test_valid_odd_hosts_are_served(echo, host):
    """What RFC 3986 3.2.2 allows passes untouched: an empty Host (RFC 9112
    3.2 permits it: the request's authority is then the server's own name,
    SERVER_NAME from the listener, 3.3), sub-delims, percent-encoded UTF-8,
    an IPvFuture literal, an empty port."""
    e = echo_of(request(echo, req(path="/ok", host=host)))
    assert e["PATH_INFO"] == "/ok"
    assert e["headers"]["HTTP_HOST"] == host


def test_absolute_form_target_names_the_host(gangway, tmp_path):
    """RFC 9112 3.2.2: with an absolute-form target the server MUST ignore
    Host and use the target's authority. SERVER_NAME and HTTP_HOST come
    from it (SERVER_PORT stays the port the request came in on, as CGI
    defines it), and the access log's %(host) shows the same host. A target
    with userinfo is refused (RFC 9110 4.2.4)."""
    log = tmp_path / "access.log"
    s = gangway("--access-log", str(log), "--log-format", "%(host) %(uri)",
                "pep3333_environ:application")

    def env_of(raw):
        r = request(s, raw)
        assert r.status == 200, (r.status, r.body[:300])
        return {k: v["value"] for k, v in json.loads(r.body).items() if isinstance(v, dict)}

    e = env_of(b"GET http://h.example:81/env?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
    assert (e["SERVER_NAME"], e["HTTP_HOST"], e["SERVER_PORT"]) == ("h.example", "h.example:81",
                                                                    str(s.port))
    assert (e["PATH_INFO"], e["QUERY_STRING"]) == ("/env", "x=1")
    e = env_of(b"GET https://[2001:db8::1]/env HTTP/1.0\r\n\r\n")  # no Host at all
    assert (e["SERVER_NAME"], e["HTTP_HOST"]) == ("2001:db8::1", "[2001:db8::1]")
    e = env_of(b"GET /env HTTP/1.1\r\nHost: plain.example:8080\r\n\r\n")  # origin-form
    assert (e["SERVER_NAME"], e["HTTP_HOST"]) == ("plain.example", "plain.example:8080")
    r = request(s, b"GET http://u:p@h.example/env HTTP/1.1\r\nHost: h.example\r\n\r\n")
    assert r.status == 400
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 10,
             what="three access log lines")
    assert log.read_text().splitlines()[:3] == [
        "h.example:81 http://h.example:81/env?x=1", "[2001:db8::1] https://[2001:db8::1]/env",
        "plain.example:8080 /env"]


def test_options_star(echo):
    r = request(echo, req("OPTIONS", "*"))
    assert r.status == 200
    assert echo_of(r)["REQUEST_METHOD"] == "OPTIONS"


def test_header_names_with_underscore_dropped(echo):
    e = echo_of(request(echo, req(path="/u", headers=[("X_Forwarded_For", "1.2.3.4"),
                                                      ("X-Forwarded-For", "5.6.7.8")])))
    assert e["headers"]["HTTP_X_FORWARDED_FOR"] == "5.6.7.8"
    e = echo_of(request(echo, req(path="/u", headers=[("X_Forwarded_For", "1.2.3.4"),
                                                      ("X-Real", "r")])))
    assert "HTTP_X_FORWARDED_FOR" not in e["headers"]
    assert e["headers"]["HTTP_X_REAL"] == "r"
    assert "1.2.3.4" not in json.dumps(e)


def test_repeated_headers_joined(echo):
    e = echo_of(request(echo, req(path="/r", headers=[("X-A", "1"), ("X-B", "b"), ("x-a", "2"),
                                                      ("X-A", "3")])))
    assert e["headers"]["HTTP_X_A"] == "1, 2, 3"
    assert e["headers"]["HTTP_X_B"] == "b"


def test_path_decoding_and_raw_query(echo):
    target = "/caf%C3%A9/a%20b?q=%C3%A9%20x+y&z=%2F"
    e = echo_of(request(echo, req(path=target)))
    assert e["PATH_INFO"] == b"/caf\xc3\xa9/a b".decode("latin-1")
    assert e["PATH_INFO"] == "/caf\u00c3\u00a9/a b"
    assert e["QUERY_STRING"] == "q=%C3%A9%20x+y&z=%2F"
    assert e["REQUEST_URI"] == target


def test_header_value_whitespace_trimmed(echo):
    e = echo_of(request(echo, req(path="/ws", headers=[("X-A", " \t padded \t ")])))
    assert e["headers"]["HTTP_X_A"] == "padded"


# ---------------------------------------------------------------- bad input

BAD_INPUTS = [
    ("cl-and-te", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("two-different-cl", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                         b"Content-Length: 6\r\n\r\nhello!", 400),
    ("cl-not-a-number", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc", 400),
    ("cl-overflow", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc", 400),
    ("cl-negative", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl-plus-sign", b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("te-gzip", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400),
    ("te-chunked-gzip", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-not-hex", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-wraps-to-zero", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"10000000000000000\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-no-crlf", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"5\r\nhelloXX0\r\n\r\n", 400),
    # a chunk-size line is at most --limit-request-field-size (8190) bytes,
    # extensions or leading zeros alike (llhttp reads any length)
    ("chunk-ext-too-long", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1;x=" + b"a" * 9000 + b"\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-ext-unending", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1;x=" + b"a" * 200000, 400),
    ("chunk-size-zeros-too-long", b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                  b"\r\n2\r\nab\r\n" + b"0" * 9000 + b"1\r\nx\r\n0\r\n\r\n", 400),
    ("bare-lf-request-line", b"GET /bad HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-lf-header", b"GET /bad HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400),
    ("bare-cr-header", b"GET /bad HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400),
    ("nul-header-value", b"GET /bad HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    ("obs-fold-space", b"GET /bad HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n continued\r\n\r\n", 400),
    ("obs-fold-tab", b"GET /bad HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tcontinued\r\n\r\n", 400),
    ("space-before-colon-host", b"GET /bad HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("space-before-colon", b"GET /bad HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400),
    ("invalid-method", b"G@T /bad HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("invalid-version", b"GET /bad HTTP/1.x\r\nHost: x\r\n\r\n", 400),
    ("http-2.0", b"GET /bad HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("target-not-origin-form", b"GET bad HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("target-star-not-options", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("missing-host", b"GET /bad HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET /bad HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("two-hosts-first-empty", b"GET /bad HTTP/1.1\r\nHost:\r\nHost: y\r\n\r\n", 400),
] + [
    # RFC 9112 3.2: a Host that is not uri-host [":" port] (RFC 3986 3.2.2)
    ("host-" + name, b"GET /bad HTTP/1.%d\r\nHost: %s\r\n\r\n" % (minor, value), 400)
    for name, value in [("space", b"a b"), ("slash", b"a/b"), ("dotdot", b"evil.com/../"),
                        ("at", b"a@b"), ("pct-nul", b"%00"), ("tab", b"a\tb"),
                        ("open-bracket", b"[::1"), ("bad-port", b"x:y:z"), ("port-only", b":80"),
                        ("backslash", b"a\\b"), ("zone-id", b"[fe80::1%25eth0]")]
    for minor in (0, 1)
] + [
    # ... and an absolute-form target whose authority is not one
    ("authority-" + name, b"GET http://%s/bad HTTP/1.1\r\nHost: x\r\n\r\n" % value, 400)
    for name, value in [("close-bracket", b"]"), ("open-bracket", b"["), ("port-only", b":80"),
                        ("unclosed-v6", b"[::1"), ("bad-port", b"a:b:c"), ("backslash", b"a\\b"),
                        ("quote", b'a"b'), ("braces", b"a{b}"), ("pct-nul", b"%00")]
]


@pytest.mark.parametrize("raw,status", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_rejected(echo, mark, raw, status):
    assert_rejected(echo, mark, raw, status)


def test_bad_input_after_good_request_on_same_connection(echo, mark):
    """A bad request pipelined behind a good one: good answered, then 400, then close."""
    s = echo.connect()
    try:
        s.sendall(req(path="/first") + b"GET /bad HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n" + req(path="/never"))
        rd = RawReader(s)
        assert echo_of(rd.read_response())["PATH_INFO"] == "/first"
        assert clean(rd.read_response()).status == 400
        assert rd.at_eof(5)
    finally:
        s.close()
    assert marks(mark) == ["/first"]


# ---------------------------------------------------------------- limits

def line_of(total, prefix="GET /", suffix=" HTTP/1.1"):
    """A request line of exactly `total` bytes (without CRLF)."""
    return prefix + "a" * (total - len(prefix) - len(suffix)) + suffix


@pytest.mark.parametrize("opts,limit", [((), 8190), (("--limit-request-line", "200"), 200)], ids=["default", "custom"])
def test_limit_request_line(start, mark, opts, limit):
    srv = start(*opts)
    ok = line_of(limit - 2)
    assert echo_of(request(srv, (ok + "\r\nHost: x\r\n\r\n").encode()))["PATH_INFO"] == ok.split()[1]
    assert marks(mark) == [ok.split()[1]]
    open(mark, "w").close()
    assert_rejected(srv, mark, (line_of(limit + 1) + "\r\nHost: x\r\n\r\n").encode(), 414)


def test_limit_request_line_much_too_long(echo, mark):
    assert_rejected(echo, mark, (line_of(70000) + "\r\nHost: x\r\n\r\n").encode(), 414)


def field_of(total, name="X-Long"):
    """A header line of exactly `total` bytes (without CRLF)."""
    prefix = name + ": "
    return prefix + "v" * (total - len(prefix))


@pytest.mark.parametrize("opts,limit", [((), 8190), (("--limit-request-field-size", "200"), 200)], ids=["default", "custom"])
def test_limit_request_field_size(start, mark, opts, limit):
    srv = start(*opts)
    ok = field_of(limit - 2)
    e = echo_of(request(srv, ("GET /f HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % ok).encode()))
    assert e["headers"]["HTTP_X_LONG"] == ok.split(": ")[1]
    open(mark, "w").close()
    bad = field_of(limit + 1)
    assert_rejected(srv, mark, ("GET /bad HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % bad).encode(), 431)


def many_headers(n):
    """A request with exactly n header fields, Host included."""
    return ("GET /many HTTP/1.1\r\nHost: x\r\n"
            + "".join("X-H%d: %d\r\n" % (i, i) for i in range(n - 1)) + "\r\n").encode()


@pytest.mark.parametrize("opts,limit", [((), 100), (("--limit-request-fields", "10"), 10)], ids=["default", "custom"])
def test_limit_request_fields(start, mark, opts, limit):
    srv = start(*opts)
    e = echo_of(request(srv, many_headers(limit)))
    assert len([k for k in e["headers"] if k.startswith("HTTP_X_H")]) == limit - 1
    open(mark, "w").close()
    assert_rejected(srv, mark, many_headers(limit + 1), 431)


def header_block(total_fields, field_len):
    return ("GET /hb HTTP/1.1\r\nHost: x\r\n"
            + "".join(field_of(field_len, "X-B%02d" % i) + "\r\n" for i in range(total_fields))
            + "\r\n").encode()


def test_limit_request_headers_default(echo, mark):
    ok = header_block(12, 4000)  # ~48 KB
    assert len(ok) < 65536 - 1000
    assert echo_of(request(echo, ok))["headers"]["HTTP_X_B11"].startswith("vvv")
    open(mark, "w").close()
    bad = header_block(20, 4000)  # ~80 KB
    assert len(bad) > 65536 + 1000
    assert_rejected(echo, mark, bad, 431)


def test_limit_request_headers_custom(start, mark):
    srv = start("--limit-request-headers", "1000")
    ok = header_block(5, 100)   # ~550 bytes
    assert echo_of(request(srv, ok))["headers"]["HTTP_X_B04"].startswith("vvv")
    open(mark, "w").close()
    assert_rejected(srv, mark, header_block(20, 100), 431)  # ~2 KB


def test_limit_body_content_length(start, mark):
    srv = start("--limit-body", "1000")
    e = echo_of(request(srv, req("POST", "/exact", body=b"b" * 1000)))
    assert len(e["body"]) == 1000
    open(mark, "w").close()
    # 413 must come after the headers alone, before any body is sent
    s = srv.connect()
    try:
        s.sendall(req("POST", "/bad", headers=[("Content-Length", "1001")]))
        r = RawReader(s, timeout=5).read_response()
        assert r.status == 413
    finally:
        s.close()
    assert marks(mark) == []
    assert_fresh_ok(srv)


def test_limit_body_expect_100_gets_413_instead(start, mark):
    srv = start("--limit-body", "1000")
    s = srv.connect()
    try:
        s.sendall(req("POST", "/bad", headers=[("Content-Length", "5000"), ("Expect", "100-continue")]))
        r = RawReader(s, timeout=5).read_response()
        assert r.status == 413, "got %d instead of 413 (no 100 Continue for a body over the limit)" % r.status
    finally:
        s.close()
    assert marks(mark) == []
    assert_fresh_ok(srv)


def test_limit_body_chunked(start, mark):
    srv = start("--limit-body", "1000")
    e = echo_of(request(srv, req("POST", "/exact", headers=[("Transfer-Encoding", "chunked")],
                                 body=chunked(b"a" * 500, b"b" * 500))))
    assert e["body"] == "a" * 500 + "b" * 500 and e["CONTENT_LENGTH"] == "1000"
    open(mark, "w").close()
    raw = req("POST", "/bad", headers=[("Transfer-Encoding", "chunked")],
              body=chunked(b"a" * 600, b"b" * 600))
    assert_rejected(srv, mark, raw, 413, close=False)


def test_limit_body_chunked_without_terminator(start, mark):
    """The 413 comes once the sum passes the limit, without waiting for the end."""
    srv = start("--limit-body", "1000")
    s = srv.connect()
    try:
        s.sendall(req("POST", "/bad", headers=[("Transfer-Encoding", "chunked")])
                  + b"258\r\n" + b"a" * 600 + b"\r\n" + b"258\r\n" + b"b" * 600 + b"\r\n")
        r = RawReader(s, timeout=5).read_response()
        assert r.status == 413
    finally:
        s.close()
    assert marks(mark) == []
    assert_fresh_ok(srv)


# ---------------------------------------------------------------- timeouts

@pytest.mark.parametrize("partial", [b"GET /slow HT", b"GET /slow HTTP/1.1\r\nHost: x\r\n",
                                     b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: 1"])
def test_header_timeout_sends_408(start, mark, partial):
    srv = start("--header-timeout", "1")
    s = srv.connect()
    try:
        t0 = time.monotonic()
        s.sendall(partial)
        rd = RawReader(s, timeout=6)
        r = rd.read_response()
        waited = time.monotonic() - t0
        assert r.status == 408
        assert 0.8 <= waited < 5, waited
        assert rd.at_eof(3)
    finally:
        s.close()
    assert marks(mark) == []
    assert_fresh_ok(srv)


def test_header_timeout_not_reset_by_trickling(start):
    """A client dribbling header bytes still gets 408 about N s after it began."""
    srv = start("--header-timeout", "1")
    s = srv.connect()
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        got = b""
        i = 0
        while time.monotonic() - t0 < 6 and not got:
            send_quietly(s, b"X-%d: y\r\n" % i)
            i += 1
            s.settimeout(0.2)  # paces the trickle while waiting for an answer
            try:
                got = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
        waited = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408"), (got[:100], waited)
        assert waited < 4, waited
    finally:
        s.close()


def test_header_timeout_does_not_hit_a_prompt_request(start):
    srv = start("--header-timeout", "1")
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(req(path="/quick"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/quick"
    finally:
        s.close()


def test_keepalive_timeout_closes_idle_connection(start):
    srv = start("--keepalive-timeout", "1")
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(req(path="/idle"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/idle"
        closed, waited = closed_within(rd, 6)
        assert closed, "idle keep-alive connection was not closed (or got stray bytes)"
        assert 0.5 <= waited < 5, waited
    finally:
        s.close()


def test_keepalive_timeout_resets_per_request(start):
    """Activity keeps the connection alive: requests spread over more than N s all work."""
    srv = start("--keepalive-timeout", "1")
    s = srv.connect()
    try:
        rd = RawReader(s)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.6:
            s.sendall(req(path="/busy%d" % n))
            assert echo_of(rd.read_response())["PATH_INFO"] == "/busy%d" % n
            n += 1
            # wait 0.3 s for the (absent) close, which also paces the requests
            assert not wait_closed_briefly(s, 0.3)
    finally:
        s.close()


def test_a_crlf_after_a_body_is_no_request(start):
    """RFC 9112 2.2: line ends before a request are ignored. A client that
    ends a POST's body with an extra CRLF (old browsers do) keeps an idle
    keep-alive connection: no 408 at --header-timeout (it was the start of
    a request that never came), and its next request, CRLFs first, works;
    in one packet with the next request too."""
    srv = start("--header-timeout", "1", "--keepalive-timeout", "30")
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(req("POST", "/form", body=b"a=1") + b"\r\n")
        assert echo_of(rd.read_response())["PATH_INFO"] == "/form"
        # past the header timeout: nothing comes (it was a 408 and a close)
        assert not wait_closed_briefly(s, 2.0), "the connection was closed"
        s.sendall(b"\r\n\r\n" + req(path="/next"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/next"
        s.sendall(req("POST", "/again", body=b"b=2") + b"\r\n" + req(path="/piped"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/again"
        assert echo_of(rd.read_response())["PATH_INFO"] == "/piped"
    finally:
        s.close()


def test_endless_line_ends_do_not_keep_a_connection(start):
    """Line ends only, sent on and on, start no request and do not restart
    the keep-alive timer: the connection still closes at
    --keepalive-timeout."""
    srv = start("--keepalive-timeout", "1")
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(req(path="/idle"))
        assert echo_of(rd.read_response())["PATH_INFO"] == "/idle"
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 6 and not closed:  # bounded
            try:
                s.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            closed = wait_closed_briefly(s, 0.2)
        waited = time.monotonic() - t0
        assert closed, "line ends kept the connection open for 6 s"
        assert waited < 4, waited
    finally:
        s.close()


def wait_closed_briefly(sock, timeout):
    """True if the peer closed within timeout; False if nothing arrived."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
