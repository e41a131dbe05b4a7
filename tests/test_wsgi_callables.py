"""start_response and write() belong to their request, whatever thread calls
them; an app's fork() leaves one answer.

App: tests/apps/callables_app.py. Each test failed on the code before its
fix (see the commit that added it):

- several app threads calling write() at once overflowed the 64-slot output
  queue while each waited for the socket (an assertion aborted the worker;
  without assertions the pushes failed silently and the chunked framing
  broke);
- write() and start_response were one pair per worker acting on whichever
  request ran: a kept reference wrote into, or restarted, another answer;
- a child the app forked and let return answered the request a second time
  and kept serving; a SIGTERM to a multiprocessing child (Process.terminate,
  Pool's) went into the worker's signal pipe: the worker stopped and the
  child lived on;
- a wsgi.file_wrapper positioned past its file's end raised OSError(0, 'Success').
"""
import ast
import re
import socket

import pytest

from conftest import RawReader, wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_reports")

CRASH_SIGNS = ("Fatal Python error", "Segmentation", "SystemError", "AddressSanitizer",
               "runtime error", "killed by signal", "Assertion")


@pytest.fixture
def server(gangway):
    return gangway("--workers", "1", "callables_app:application")


def get(server, path, close=False):
    s = server.connect(timeout=30)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"
                  % (path.encode(), b"Connection: close\r\n" if close else b""))
        return RawReader(s, timeout=30).read_response()
    finally:
        s.close()


def pid(server):
    return int(get(server, "/pid").body.split(b"=")[1])


def slow_socket(server):
    """A client socket with a small receive buffer: the server's socket fills
    and its write() calls wait."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect((server.host, server.port))
    return s


def read_chunks(sock):
    """The head and the list of chunk payloads of one chunked answer, each
    checked for its CRLF; fails on any framing error or an early close."""
    buf = bytearray()
    pos = 0

    def fill():
        b = sock.recv(1 << 20)
        if not b:
            raise EOFError("connection closed after %d bytes" % len(buf))
        buf.extend(b)

    while b"\r\n\r\n" not in buf:
        fill()
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    assert b"transfer-encoding: chunked" in head.lower(), head
    pos = end
    chunks = []
    while True:
        while b"\r\n" not in buf[pos:pos + 32]:
            fill()
        nl = buf.index(b"\r\n", pos)
        size = int(bytes(buf[pos:nl]), 16)
        pos = nl + 2
        while len(buf) < pos + size + 2:
            fill()
        assert buf[pos + size:pos + size + 2] == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            return head, chunks
        chunks.append(bytes(buf[pos:pos + size]))
        pos += size + 2


def one_letter(chunk):
    return chunk[:1] * len(chunk) == chunk


def test_threads_writing_at_once_each_chunk_goes_out_whole(server, tmp_path):
    """40 threads write() 256 KiB each while the client does not read: each
    waits for the socket with its chunk queued, and the others queue theirs."""
    before = pid(server)
    mark = tmp_path / "entered"
    n, kib = 40, 256
    s = slow_socket(server)
    try:
        s.sendall(b"GET /threads?n=%d&kib=%d&mark=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                  % (n, kib, str(mark).encode()))
        # Read nothing until every thread is in write(): the queue fills.
        wait_for(lambda: mark.exists() and len(mark.read_text().split()) == n, 30,
                 what="all threads in write()")
        head, chunks = read_chunks(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert chunks[-1] == b"END[]", chunks[-1][:200]
    body = chunks[:-1]
    assert [len(c) for c in body] == [kib * 1024] * n
    assert all(one_letter(c) for c in body), "a chunk mixes the bytes of several writes"
    letters = sorted(c[:1] for c in body)
    assert letters == sorted(bytes([65 + i % 26]) for i in range(n))
    assert pid(server) == before
    log = server.read_log()
    assert not any(sign in log for sign in CRASH_SIGNS), log[-3000:]


def test_threads_writing_while_the_generator_streams(server, tmp_path):
    """App threads write() while the answer's generator streams to a client
    that does not read at first: the pump pauses with the queue full of
    their chunks (its block waits for room), their write() may empty the
    queue the pump waits on, and the last chunk may wait for room too."""
    before = pid(server)
    mark = tmp_path / "entered"
    n, blocks, kib = 40, 4, 64
    s = slow_socket(server)
    try:
        s.sendall(b"GET /threads-gen?n=%d&blocks=%d&kib=%d&mark=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                  % (n, blocks, kib, str(mark).encode()))
        wait_for(lambda: mark.exists() and "y" in mark.read_text().split(), 30,
                 what="every thread in write(), and the first block")
        head, chunks = read_chunks(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert chunks[-1] == b"END[]", chunks[-1][:200]
    body = chunks[:-1]
    assert all(len(c) == kib * 1024 and one_letter(c) for c in body)
    want = sorted([b"g"] * blocks + [bytes([65 + i % 26]) for i in range(n)] * blocks)
    assert sorted(c[:1] for c in body) == want
    assert pid(server) == before


def test_threads_writing_to_a_client_that_stopped_reading_all_raise(gangway, tmp_path):
    """The client reads nothing: --write-timeout ends the answer, and every
    thread's write() (the one polling the socket, those waiting for it, those
    waiting for room in the queue) raises OSError; the access log line says
    aborted, and the worker serves on."""
    log = tmp_path / "access.log"
    server = gangway("--workers", "1", "--write-timeout", "1", "--access-log", str(log),
                     "--log-format", "%(uri) %(status) %(aborted)", "callables_app:application")
    before = pid(server)
    mark = tmp_path / "entered"
    n = 30
    s = slow_socket(server)
    try:
        s.sendall(b"GET /threads?n=%d&kib=1024&mark=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                  % (n, str(mark).encode()))
        done = tmp_path / "entered.done"
        wait_for(done.exists, 30, what="the app to end")
    finally:
        s.close()
    errors = ast.literal_eval(done.read_text())
    # The kernel's socket buffers take the first few MiB (tcp_wmem's 4 MiB
    # at most): those write()s return; every other one raises.
    assert set(errors) == {"OSError('client disconnected')"} and len(errors) >= n - 8, errors
    wait_for(lambda: log.exists() and "/threads" in log.read_text(), 10, what="the log line")
    line = [x for x in log.read_text().splitlines() if "/threads" in x][0]
    assert line.endswith(" 200 aborted"), line
    assert pid(server) == before


def test_kept_write_and_start_response_cannot_reach_another_request(server):
    """A request's write() and start_response, kept by the app and called
    while another request runs, raise RuntimeError and send nothing."""
    assert get(server, "/keep").body == b"kept"
    r = get(server, "/use-kept")
    assert r.status == 200
    assert r.header("x-injected") is None
    assert b"INJECTED" not in r.body
    parts = r.body.decode().split(";")
    assert parts[0].startswith("write: RuntimeError: the request is over"), r.body
    assert parts[1].startswith("start_response: RuntimeError: the request is over"), r.body
    # and once no request runs at all
    assert get(server, "/use-kept").body == r.body


def test_start_response_is_reused_unless_the_app_keeps_it(server):
    """No allocation per request: the pair serves the next request when
    nobody holds it; a pair the app kept stays the app's (and raises)."""
    first = get(server, "/ids").body
    assert get(server, "/ids").body == first
    get(server, "/keep")
    after = get(server, "/ids").body
    assert get(server, "/ids").body == after
    assert after != first  # the kept pair is not handed to another request


def _state(p):
    try:
        with open("/proc/%d/stat" % p) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rindex(")") + 2]


@pytest.mark.parametrize("where", ["app", "iter", "close"])
def test_forked_child_that_returns_exits_without_answering(server, tmp_path, where):
    """os.fork() in the app, in a step of its iterator or in its close(), and
    the child returns like the parent: one answer on the connection; the
    child logs one line and exits at once."""
    before = pid(server)
    mark = tmp_path / "child"
    s = server.connect(timeout=30)
    try:
        s.sendall(b"GET /fork?where=%s&mark=%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                  % (where.encode(), str(mark).encode()))
        data = bytearray()
        while True:
            b = s.recv(65536)
            if not b:
                break
            data.extend(b)
    finally:
        s.close()
    assert data.count(b"HTTP/1.1 ") == 1, bytes(data)
    assert b"from the child" not in data, bytes(data)
    if where == "app":
        assert data.endswith(b"from the parent"), bytes(data)
        child = int(re.search(rb"(?i)\r\nx-child: (\d+)", data).group(1))
    elif where == "iter":
        child = int(re.search(rb"from the parent (\d+)", data).group(1))
    else:
        assert b"from the parent" in data, bytes(data)
        wait_for(lambda: mark.exists() and mark.read_text(), 10, what="the child's pid")
        child = int(mark.read_text())
    # gone, or a zombie of the worker (the app did not wait for it)
    wait_for(lambda: _state(child) in (None, "Z"), 10, what="the forked child to exit")
    wait_for(lambda: "a child process the app forked returned into gangway" in server.read_log(),
             10, what="the child's log line")
    assert pid(server) == before
    assert server.read_log().count("returned into gangway") == 1


def test_multiprocessing_and_subprocess_work_from_the_app(server):
    """Children that exec or end themselves are not touched, and their
    signals are theirs: Pool's SIGTERM to its workers once stopped the
    gangway worker instead."""
    before = pid(server)
    assert get(server, "/pool").body == repr([x * x for x in range(10)]).encode()
    assert get(server, "/terminate").body == b"exit code -15"
    assert get(server, "/subprocess").body == b"sub\n"
    assert get(server, "/fork-exit").body == b"child status 0"
    assert get(server, "/pool").body == repr([x * x for x in range(10)]).encode()
    assert pid(server) == before
    log = server.read_log()
    assert "SIGTERM" not in log and "returned into gangway" not in log, log[-2000:]


def test_file_wrapper_positioned_past_its_end_is_a_clear_error(server):
    r = get(server, "/wrapper-past-end")
    assert r.status == 500
    log = server.read_log()
    assert "the file's position (100) is past its end (10 bytes)" in log, log[-2000:]
    assert "Success" not in log
