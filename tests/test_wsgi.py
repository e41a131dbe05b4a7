"""PEP 3333 conformance, driven through the real gangway binary.

Apps: tests/apps/pep3333_*.py. Raw sockets are used wherever the exact bytes
on the wire matter (chunked uploads, header injection, truncated responses).
"""
import hashlib
import importlib.util
import io
import json
import os
import random
import socket

import pytest

from conftest import APPS, RawReader, request, wait_for


def raw_get(target, headers=(), version="HTTP/1.1"):
    head = "GET %s %s\r\nHost: 127.0.0.1\r\n" % (target, version)
    head += "".join("%s: %s\r\n" % h for h in headers)
    return (head + "\r\n").encode("latin-1")


def raw_post(target, body, ctype="application/octet-stream", headers=()):
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        target, ctype, len(body))
    head += "".join("%s: %s\r\n" % h for h in headers)
    return (head + "\r\n").encode("latin-1") + body


def chunked(body, sizes):
    """Encode body as a chunked request body using the given chunk sizes in turn."""
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        i += n
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    out.append(b"0\r\n\r\n")
    return out


def get(server, target, **kw):
    return request(server, raw_get(target, **kw))


def log_problems(server):
    """Validator complaints and stray tracebacks that should never be logged."""
    log = server.read_log()
    return [w for w in ("Traceback", "AssertionError", "WSGIWarning",
                        "garbage collected without being closed") if w in log]


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------
# 1. wsgiref.validate.validator around the app
# ---------------------------------------------------------------------------

@pytest.fixture
def validated(gangway):
    return gangway("pep3333_validated:application")


def test_validator_get(validated):
    r = get(validated, "/get?x=1&y=%20z")
    assert (r.status, r.body) == (200, b"GET /get?x=1&y=%20z")
    assert log_problems(validated) == []


@pytest.mark.parametrize("size", [0, 1, 3000, 200000])
def test_validator_post(validated, size):
    body = random.Random(size).randbytes(size)
    r = request(validated, raw_post("/post", body))
    assert r.status == 200
    assert r.body == b"len=%d sha256=%s" % (size, sha(body).encode())
    assert log_problems(validated) == []


def test_validator_chunked_upload(validated):
    body = random.Random(7).randbytes(150000)
    s = validated.connect()
    try:
        s.sendall(b"POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in chunked(body, [1, 15, 16, 4096, 100000, 777]):
            s.sendall(piece)
        r = RawReader(s).read_response()
    finally:
        s.close()
    assert r.status == 200
    assert r.body == b"len=%d sha256=%s" % (len(body), sha(body).encode())
    assert log_problems(validated) == []


def test_validator_streaming_generator(validated):
    s = validated.connect()
    try:
        s.sendall(raw_get("/stream?50"))
        rd = RawReader(s)
        r = rd.read_response()
        assert r.status == 200
        assert r.body == b"".join(b"chunk-%04d\n" % i for i in range(50))
        # No length was given, so HTTP/1.1 needs chunked framing to keep the
        # connection; the next request on it must work.
        assert "chunked" in (r.header("transfer-encoding") or "").lower()
        s.sendall(raw_get("/get?again"))
        r2 = rd.read_response()
        assert (r2.status, r2.body) == (200, b"GET /get?again")
    finally:
        s.close()
    assert log_problems(validated) == []


def test_validator_write_callable(validated):
    r = get(validated, "/write")
    assert r.status == 200
    assert r.body == b"via-write-1;via-write-2;via-iterable"
    assert log_problems(validated) == []


# ---------------------------------------------------------------------------
# 2. environ
# ---------------------------------------------------------------------------

@pytest.fixture
def envapp(gangway):
    return gangway("pep3333_environ:application")


def test_environ_required_keys_and_types(envapp):
    s = envapp.connect()
    try:
        local_port = s.getsockname()[1]
        body = b"a=1&b=2"
        s.sendall(b"POST /env/caf%C3%A9/x?q=1&r=%20 HTTP/1.1\r\n"
                  b"Host: 127.0.0.1:" + str(envapp.port).encode() + b"\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 7\r\nX-Custom-Header: hello\r\n\r\n" + body)
        r = RawReader(s).read_response()
    finally:
        s.close()
    assert r.status == 200
    env = json.loads(r.body)
    val = lambda k: env[k]["value"]  # noqa: E731
    typ = lambda k: env[k]["type"]  # noqa: E731

    required = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                "REMOTE_ADDR", "REMOTE_PORT", "wsgi.version", "wsgi.url_scheme", "wsgi.input",
                "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
                "wsgi.input_terminated", "wsgi.file_wrapper"]
    assert [k for k in required if k not in env] == []
    # Every CGI-style key (no dot in the name) is a native str.
    assert {k: typ(k) for k in env if "." not in k and not k.startswith("_")
            and typ(k) != "str"} == {}

    assert val("REQUEST_METHOD") == "POST"
    assert val("SCRIPT_NAME") == ""
    # PEP 3333: the undecoded-then-percent-decoded bytes, as latin-1 str.
    assert val("PATH_INFO") == "/env/caf\u00c3\u00a9/x"
    assert val("QUERY_STRING") == "q=1&r=%20"
    assert val("CONTENT_TYPE") == "application/x-www-form-urlencoded"
    assert val("CONTENT_LENGTH") == "7"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert val("SERVER_NAME")
    assert val("SERVER_PORT") == str(envapp.port)
    assert val("SERVER_PROTOCOL") == "HTTP/1.1"
    assert val("REMOTE_ADDR") == "127.0.0.1"
    assert val("REMOTE_PORT") == str(local_port)
    assert val("HTTP_HOST") == "127.0.0.1:%d" % envapp.port
    assert val("HTTP_X_CUSTOM_HEADER") == "hello"

    assert (typ("wsgi.version"), val("wsgi.version")) == ("tuple", [1, 0])
    assert val("wsgi.url_scheme") == "http"
    assert env["_input_methods"] == ["read", "readline", "readlines", "__iter__"]
    assert env["_errors_methods"] == ["write", "writelines", "flush"]
    assert (typ("wsgi.multithread"), val("wsgi.multithread")) == ("bool", False)
    assert typ("wsgi.multiprocess") == "bool"
    assert (typ("wsgi.run_once"), val("wsgi.run_once")) == ("bool", False)
    assert (typ("wsgi.input_terminated"), val("wsgi.input_terminated")) == ("bool", True)
    assert env["_file_wrapper_callable"] is True


def test_environ_get_http10_without_body(envapp):
    r = get(envapp, "/env", version="HTTP/1.0")
    assert r.status == 200
    env = json.loads(r.body)
    assert env["SERVER_PROTOCOL"]["value"] == "HTTP/1.0"
    assert env["REQUEST_METHOD"]["value"] == "GET"
    # With no query and no body these may be absent or empty, never another type.
    if "QUERY_STRING" in env:
        assert env["QUERY_STRING"] == {"type": "str", "value": ""}
    for k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if k in env:
            assert env[k]["type"] == "str"
            assert env[k]["value"] in ("", "0")


def test_environ_repeated_header_is_combined(envapp):
    r = get(envapp, "/env", headers=[("X-Dup", "a"), ("X-Dup", "b")])
    env = json.loads(r.body)
    assert env["HTTP_X_DUP"]["value"] in ("a,b", "a, b")


def test_environ_is_a_fresh_dict_per_request(envapp):
    s = envapp.connect()
    try:
        rd = RawReader(s)
        s.sendall(raw_get("/remember?k=v"))
        assert rd.read_response().body == b"remembered"
        s.sendall(raw_get("/recall?other"))
        got = json.loads(rd.read_response().body)
    finally:
        s.close()
    # The app kept the first environ: it must not have been cleared or reused.
    assert got == {"PATH_INFO": "/remember", "QUERY_STRING": "k=v", "same_object": False}


# ---------------------------------------------------------------------------
# 3. wsgi.input
# ---------------------------------------------------------------------------

def _load_environ_app():
    spec = importlib.util.spec_from_file_location(
        "_pep3333_environ_ref", os.path.join(APPS, "pep3333_environ.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _load_environ_app()


def make_body(size, seed):
    """Lines of many lengths (CRLF, bare CR, empty, one very long line),
    no trailing newline at the end."""
    rnd = random.Random(seed)
    parts, total = [], 0
    long_done = False
    while total < size:
        kind = rnd.random()
        if not long_done and total > size // 4 and size > 100000:
            n = size // 2
            long_done = True
        elif kind < 0.1:
            n = 0
        else:
            n = rnd.randrange(1, 200)
        line = bytes(rnd.choice(b"abcdefghij\r\x00\xff") for _ in range(min(n, 300)))
        if n > 300:
            line = line * (n // 300)
        line += rnd.choice([b"\n", b"\r\n"])
        parts.append(line)
        total += len(line)
    return b"".join(parts)[:size - 1] + b"z"  # no final newline


SMALL = make_body(700, 1)
LARGE = make_body(2 * 1024 * 1024 + 123, 2)
SCENARIOS = ["read", "read_minus1", "read_n:1000", "read_n:1", "readline", "readlines", "iter",
             "mixed"]


def _input_case(gangway, body, scenario, args, use_chunked=False):
    s = gangway("pep3333_environ:application", *args)
    sock = s.connect(timeout=20)
    try:
        if use_chunked:
            sock.sendall(b"POST /input?" + scenario.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            for piece in chunked(body, [65536, 1000, 7]):
                sock.sendall(piece)
        else:
            sock.sendall(raw_post("/input?" + scenario, body))
        r = RawReader(sock, timeout=20).read_response()
    finally:
        sock.close()
    assert r.status == 200, r.body[:500]
    got = json.loads(r.body)
    expected = json.loads(json.dumps(REF.run_ops(io.BytesIO(body), scenario)))
    assert got["ops"] == expected
    return got


@pytest.mark.parametrize("scenario", SCENARIOS + ["readline_n:7"])
def test_input_small_body_in_memory(gangway, scenario):
    _input_case(gangway, SMALL, scenario, ["--body-buffer-size", "1024"])


@pytest.mark.parametrize("scenario", ["read", "read_minus1", "read_n:1000", "readline",
                                      "readline_n:5000", "readlines", "iter", "mixed"])
def test_input_large_body_in_temp_file(gangway, scenario):
    got = _input_case(gangway, LARGE, scenario, ["--body-buffer-size", "1024"])
    # Above --body-buffer-size the body lives in an unlinked temp file.
    assert got["spooled"], "no unlinked temp file of the body's size is open in the server"


@pytest.mark.parametrize("scenario", ["read", "readline", "mixed"])
def test_input_large_chunked_body_in_temp_file(gangway, scenario):
    _input_case(gangway, LARGE, scenario, ["--body-buffer-size", "1024"], use_chunked=True)


def test_input_read_stops_at_content_length_with_pipelined_request(envapp):
    s = envapp.connect()
    try:
        s.sendall(raw_post("/read-all", b"first") + raw_post("/read-all", b"second"))
        rd = RawReader(s)
        r1, r2 = rd.read_response(), rd.read_response()
    finally:
        s.close()
    assert (r1.body, r2.body) == (b"[first]", b"[second]")


@pytest.mark.parametrize("size,use_chunked", [(10, False), (3 * 1024 * 1024, False),
                                             (3 * 1024 * 1024, True)],
                         ids=["small", "spooled", "spooled-chunked"])
def test_unread_body_is_discarded_before_next_request(gangway, size, use_chunked):
    s = gangway("pep3333_environ:application", "--body-buffer-size", "1024")
    # A body that looks like requests: misframing would show up as extra responses.
    body = (b"GET /errors?smuggled HTTP/1.1\r\nHost: x\r\n\r\n" * (size // 40 + 1))[:size]
    sock = s.connect(timeout=20)
    try:
        if use_chunked:
            sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunked(body, [65536])))
        else:
            sock.sendall(raw_post("/ignore-body", body))
        sock.sendall(raw_get("/read-all"))
        rd = RawReader(sock, timeout=20)
        r1, r2 = rd.read_response(), rd.read_response()
    finally:
        sock.close()
    assert (r1.status, r1.body) == (200, b"ignored")
    assert (r2.status, r2.body) == (200, b"[]")  # a GET's wsgi.input is empty
    assert "smuggled" not in s.read_log()


# ---------------------------------------------------------------------------
# 4. wsgi.errors
# ---------------------------------------------------------------------------

def test_wsgi_errors_reach_the_server_log(envapp):
    r = get(envapp, "/errors?m42")
    assert (r.status, r.body) == (200, b"logged")
    for line in ("gangway-errors-write-m42", "gangway-errors-writelines-m42-a",
                 "gangway-errors-writelines-m42-b"):
        wait_for(lambda: line in envapp.read_log(), 5, what=line + " in the log")


# ---------------------------------------------------------------------------
# 5. start_response validation, exc_info, exceptions
# ---------------------------------------------------------------------------

@pytest.fixture
def errapp(gangway):
    return gangway("pep3333_errors:application")


def wire(server, raw, timeout=5):
    """Send raw on a new connection; return (every byte received, whether the
    server closed the connection within timeout)."""
    s = server.connect(timeout)
    chunks, closed = [], False
    try:
        s.sendall(raw)
        s.settimeout(timeout)
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            chunks.append(b)
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    finally:
        s.close()
    return b"".join(chunks), closed


def assert_next_request_works(server):
    r = get(server, "/ok")
    assert (r.status, r.body) == (200, b"ok")


BAD_HEADERS = ["name-space", "name-colon", "name-empty", "name-nontoken", "name-bytes",
               "name-crlf", "value-cr", "value-lf", "value-crlf", "value-nul", "value-bytes",
               "value-nonlatin1"]
BAD_STATUS = ["status-bytes", "status-int", "status-crlf", "status-garbage"]


@pytest.mark.parametrize("case", ["bad-header/" + c for c in BAD_HEADERS] +
                         ["bad-status/" + c for c in BAD_STATUS] + ["return-none", "yield-str"])
def test_invalid_response_is_500_and_never_sent(errapp, case):
    data, closed = wire(errapp, raw_get("/" + case, headers=[("Connection", "close")]))
    assert data.startswith(b"HTTP/1.1 500 "), data[:300]
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"Injected" not in data and b"injected" not in data
    assert b"X-Evil" not in head and b"X-Bad" not in head and b"X-Ok" not in head
    assert b"gangway-leaked-body" not in data
    assert b"gangway-str-not-bytes" not in data
    assert_next_request_works(errapp)


def test_exc_info_replaces_status_before_anything_is_sent(errapp):
    r = get(errapp, "/exc-info/replace")
    assert (r.status, r.reason) == (500, "App Handled")
    assert r.header("x-second") == "1"
    assert r.header("x-first") is None
    assert r.body == b"custom error body"


def test_second_start_response_without_exc_info_raises(errapp):
    r = get(errapp, "/exc-info/second-call-without")
    assert r.status == 200
    assert r.body.startswith(b"raised "), r.body


def test_exc_info_after_headers_sent_reraises(errapp):
    data, closed = wire(errapp, raw_get("/exc-info/after-headers-sent"))
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"first-chunk;" in data
    assert b"replacement-sent" not in data and b"Too Late" not in data
    assert closed, "the aborted response left the connection open"
    wait_for(lambda: "gangway-exc-info-reraised-ok" in errapp.read_log()
             or "gangway-exc-info-did-not-reraise" in errapp.read_log(), 5,
             what="the app's exc_info verdict in the log")
    assert "gangway-exc-info-reraised-ok" in errapp.read_log()
    assert_next_request_works(errapp)


@pytest.mark.parametrize("path,marker", [("/raise-before-start", "gangway-kaboom-before-start"),
                                         ("/raise-after-start", "gangway-kaboom-after-start")])
def test_exception_before_body_is_500_with_traceback(errapp, path, marker):
    r = get(errapp, path)
    assert r.status == 500
    assert marker.encode() not in r.body  # no traceback to the client
    wait_for(lambda: marker in errapp.read_log(), 5, what=marker + " in the log")
    assert "Traceback" in errapp.read_log()
    assert_next_request_works(errapp)


def test_exception_midstream_chunked_closes_connection(errapp):
    data, closed = wire(errapp, raw_get("/raise-midstream-chunked"))
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"partial-data-1;" in data
    assert closed, "the aborted response left the connection open"
    # The response must be visibly incomplete: no terminating zero chunk.
    assert not data.endswith(b"0\r\n\r\n")
    wait_for(lambda: "gangway-kaboom-midstream" in errapp.read_log(), 5,
             what="the traceback in the log")
    assert_next_request_works(errapp)


def test_exception_midstream_with_length_closes_connection(errapp):
    s = errapp.connect()
    try:
        s.sendall(raw_get("/raise-midstream-length"))
        rd = RawReader(s)
        with pytest.raises(EOFError):
            rd.read_response()  # Content-Length 1000, only 100 bytes then close
    finally:
        s.close()
    assert_next_request_works(errapp)


def test_body_shorter_than_content_length_closes_connection(errapp):
    s = errapp.connect(timeout=5)
    try:
        s.sendall(raw_get("/length-short"))
        with pytest.raises(EOFError):  # 10 of 100 bytes, then the server must close
            RawReader(s, timeout=5).read_response()
    finally:
        s.close()
    assert_next_request_works(errapp)


def test_body_longer_than_content_length_is_cut(errapp):
    s = errapp.connect(timeout=5)
    try:
        s.sendall(raw_get("/length-long") + raw_get("/ok"))
        rd = RawReader(s, timeout=5)
        r1 = rd.read_response()
        assert (r1.status, r1.body) == (200, b"01234")
        try:
            r2 = rd.read_response()
        except EOFError:
            r2 = None  # closing after the cut is fine too
    finally:
        s.close()
    # Extra bytes would prefix the next status line ("56789HTTP/1.1 ...").
    assert r2 is None or (r2.version, r2.status, r2.body) == ("HTTP/1.1", 200, b"ok")


# ---------------------------------------------------------------------------
# 6. close() of the returned iterable
# ---------------------------------------------------------------------------

@pytest.fixture
def closeapp(gangway, tmp_path):
    log = tmp_path / "close.log"
    s = gangway("pep3333_close:application", "--env", "GANGWAY_CLOSE_LOG=%s" % log)
    s.close_log = log
    return s


def close_records(server, tag):
    try:
        text = server.close_log.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.split(" ")[1:2] == [tag]]


def sync_then_count(server, tag):
    """A later request has completed, so any duplicate close() has happened."""
    r = get(server, "/normal?sync-" + tag)
    assert r.status == 200
    wait_for(lambda: close_records(server, "sync-" + tag), 5, what="sync close()")
    return len(close_records(server, tag))


def test_close_called_once_on_normal_completion(closeapp):
    r = get(closeapp, "/normal?t-normal")
    assert (r.status, r.body) == (200, b"abc;abc;abc;")
    wait_for(lambda: close_records(closeapp, "t-normal"), 5, what="close()")
    assert sync_then_count(closeapp, "t-normal") == 1


@pytest.mark.parametrize("path", ["/fail-midway", "/fail-first"])
def test_close_called_once_when_iteration_raises(closeapp, path):
    tag = "t" + path.replace("/", "-")
    wire(closeapp, raw_get("%s?%s" % (path, tag), headers=[("Connection", "close")]))
    wait_for(lambda: close_records(closeapp, tag), 5, what="close()")
    assert sync_then_count(closeapp, tag) == 1


def test_close_called_on_client_disconnect_during_stream(closeapp):
    s = closeapp.connect()
    try:
        s.sendall(raw_get("/endless?t-disconnect"))
        s.settimeout(10)
        got = 0
        while got < 200000:
            b = s.recv(65536)
            assert b, "server closed the endless stream"
            got += len(b)
    finally:
        s.close()  # unread data pending: the kernel answers with RST
    recs = wait_for(lambda: close_records(closeapp, "t-disconnect"), 10,
                    what="close() after the client went away")
    blocks = int(recs[0].split()[2])
    assert blocks < 100000  # iteration stopped because of the disconnect
    assert sync_then_count(closeapp, "t-disconnect") == 1


def test_close_raising_is_logged_and_server_survives(closeapp):
    r = get(closeapp, "/close-raises?t-raises")
    assert (r.status, r.body) == (200, b"abc;")
    wait_for(lambda: "gangway-close-raised" in closeapp.read_log(), 5,
             what="the close() exception in the log")
    assert sync_then_count(closeapp, "t-raises") == 1


# ---------------------------------------------------------------------------
# 7. wsgi.file_wrapper
# ---------------------------------------------------------------------------

FW_DATA = random.Random(99).randbytes(300 * 1024 + 17)


@pytest.fixture
def fwapp(gangway, tmp_path):
    p = tmp_path / "served.bin"
    p.write_bytes(FW_DATA)
    return gangway("pep3333_filewrapper:application", "--env", "GANGWAY_FW_FILE=%s" % p)


def test_file_wrapper_real_file(fwapp):
    s = fwapp.connect()
    try:
        rd = RawReader(s)
        s.sendall(raw_get("/file?cl=auto"))
        r = rd.read_response()
        assert r.status == 200
        assert r.header("content-length") == str(len(FW_DATA))
        assert r.body == FW_DATA
        # Same connection: nothing extra was sent after the file.
        s.sendall(raw_get("/file?cl=auto&blksize=1000"))
        r2 = rd.read_response()
        assert r2.body == FW_DATA
    finally:
        s.close()


def test_file_wrapper_real_file_without_length(fwapp):
    s = fwapp.connect()
    try:
        rd = RawReader(s)
        s.sendall(raw_get("/file"))
        r = rd.read_response()
        assert r.status == 200
        assert r.body == FW_DATA
        cl, te = r.header("content-length"), r.header("transfer-encoding")
        assert cl == str(len(FW_DATA)) or "chunked" in (te or "").lower()
        s.sendall(raw_get("/file?cl=auto"))
        assert rd.read_response().body == FW_DATA
    finally:
        s.close()


def test_file_wrapper_starts_at_current_position(fwapp):
    r = get(fwapp, "/file?offset=1000&cl=auto")
    assert r.header("content-length") == str(len(FW_DATA) - 1000)
    assert r.body == FW_DATA[1000:]


def test_file_wrapper_sends_no_more_than_content_length(fwapp):
    s = fwapp.connect()
    try:
        rd = RawReader(s)
        s.sendall(raw_get("/file?cl=5000"))
        r = rd.read_response()
        assert r.body == FW_DATA[:5000]
        # Any byte past Content-Length would corrupt the next response.
        s.sendall(raw_get("/bytesio?cl=1"))
        r2 = rd.read_response()
        assert (r2.status, r2.body) == (200, FW_DATA)
    finally:
        s.close()


def test_file_wrapper_file_shorter_than_content_length_closes(fwapp):
    s = fwapp.connect(timeout=5)
    try:
        s.sendall(raw_get("/file-short"))
        with pytest.raises(EOFError):  # the file ends 100 bytes early
            RawReader(s, timeout=5).read_response()
    finally:
        s.close()
    assert get(fwapp, "/file?cl=auto").body == FW_DATA


def test_file_wrapper_pipe_fd(fwapp):
    r = get(fwapp, "/pipe")
    assert (r.status, r.body) == (200, b"pipe-data:" + b"p" * 30000)


@pytest.mark.parametrize("with_length", [False, True])
def test_file_wrapper_without_fileno_is_iterated(fwapp, with_length):
    r = get(fwapp, "/bytesio" + ("?cl=1" if with_length else ""))
    assert r.status == 200
    assert r.body == FW_DATA
    if with_length:
        assert r.header("content-length") == str(len(FW_DATA))


def test_extension_modules_load_and_work(gangway):
    """gangway links libpython in (not the shared library): C extensions from
    lib-dynload and dist-packages must still find the interpreter's symbols."""
    srv = gangway("ext_modules:application")
    r = request(srv, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.status == 200, r.body
    got = json.loads(r.body)
    bad = {k: v for k, v in got.items() if isinstance(v, str) and v.startswith("ERROR")}
    assert not bad, bad
    assert got["_ssl"].endswith(".so") and got["markupsafe._speedups"].endswith(".so")
    assert got["work"] == [4, "3.3", hashlib.sha256(b"gangway").hexdigest()[:8], 42]
