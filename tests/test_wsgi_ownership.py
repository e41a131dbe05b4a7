"""Every byte gangway sends is owned (issue 14, "memory not owned").

An answer can wait for a slow client while other requests run the app, and
the app may change what it returned meanwhile: the list it answered with, the
file it wrapped, the bytes subclass whose finalizer runs later. gangway must
send what the app returned when it returned it. App: tests/apps/ownership_app.py.

The slow client is a socket with a small receive buffer that reads a few KiB at
a time: the server's socket fills, its answer pauses, and a request on another
connection runs the app in between (one worker, so it runs while the first
answer is paused).
"""
import hashlib
import re
import socket
import sys
import threading

import pytest

from conftest import APPS, RawReader

sys.path.insert(0, APPS)
import ownership_app as app  # noqa: E402  (the same code builds the expected bytes)

pytestmark = pytest.mark.usefixtures("sanitizer_reports")

CRASH_SIGNS = ("Fatal Python error", "Segmentation", "SystemError", "AddressSanitizer",
               "runtime error", "killed by signal")


class SlowReader(RawReader):
    """A RawReader that takes at most `step` bytes per recv()."""

    def __init__(self, sock, step=4096, timeout=30):
        super().__init__(sock, timeout)
        self.buf = bytearray()  # appends stay cheap with megabytes buffered
        self.step = step

    def _fill(self):
        b = self.sock.recv(self.step)
        if not b:
            raise EOFError("connection closed")
        self.buf += b

    def head_and_some(self, nbytes):
        """Reads the head and up to nbytes of the body (less when the body,
        by its framing, is shorter), leaving them buffered."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end].lower()
        cl = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if cl:
            nbytes = min(nbytes, int(cl.group(1)))
        while len(self.buf) < end + nbytes:
            if not cl and (self.buf[end:].startswith(b"0\r\n\r\n") or
                           b"\r\n0\r\n\r\n" in self.buf[end:]):
                return  # a chunked body that already ended
            self._fill()


def slow_connect(server, rcvbuf=4096):
    """A client whose small receive buffer and segment size keep the
    server's socket buffer small too (loopback's 64 KiB segments let the
    kernel take megabytes before the server ever sees EAGAIN)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(30)
    s.connect((server.host, server.port))
    return s


def get(server, path):
    s = server.connect(timeout=30)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        return RawReader(s, timeout=30).read_response()
    finally:
        s.close()


def pid(server):
    r = get(server, "/pid")
    assert r.status == 200, r.body[:200]
    return int(r.body.split(b"=")[1])


def no_crash(server):
    log = server.read_log()
    return [w for w in CRASH_SIGNS if w in log]


@pytest.fixture
def server(gangway):
    return gangway("--workers", "1", "ownership_app:application")


# ---------------------------------------------------------------------------
# (a) the reproduction: a module-level list changed while its answer waits
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["clear", "items", "assign", "shrink"])
def test_list_answer_survives_the_app_changing_the_list(server, how):
    before = pid(server)
    expected = b"".join(app.big_block(i) for i in range(app.NBLOCKS))
    s = slow_connect(server)
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        rd = SlowReader(s)
        # The answer pauses on a full socket; each /mutate runs meanwhile
        # (one worker), at the start, in the middle and near the end.
        for upto in (8 << 10, 4 << 20, 11 << 20):
            rd.head_and_some(upto)
            assert get(server, "/mutate?how=" + how).body == b"mutated"
        r = rd.read_response()
    finally:
        s.close()
    assert r.status == 200
    assert len(r.body) == len(expected)
    assert r.body == expected, "the answer changed with the list (first difference at %d)" % next(
        i for i in range(len(expected)) if r.body[i] != expected[i])
    assert pid(server) == before
    assert no_crash(server) == []


def test_file_answer_survives_the_app_closing_its_file(server):
    """A wrapped file closed by another request (its descriptor reused for
    another file) while its answer waits: the answer is still the first file."""
    before = pid(server)
    s = slow_connect(server)
    try:
        s.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        rd = SlowReader(s)
        rd.head_and_some(64 << 10)
        assert get(server, "/swap-file").body == b"swapped"
        r = rd.read_response()
    finally:
        s.close()
    assert r.status == 200
    assert len(r.body) == app.FILE_SIZE
    assert r.body.count(b"A") == app.FILE_SIZE, "bytes of another file were sent"
    assert pid(server) == before
    assert no_crash(server) == []


# ---------------------------------------------------------------------------
# (b) property: lists, tuples, generators, subclasses that lie and mutate
# ---------------------------------------------------------------------------

def test_answers_are_what_the_app_handed_over(server):
    """200 seeded cases (ownership_app.build_case), each under a slow socket,
    with the app changing every container it returned (and dropping the
    last references to its bytes subclasses) while the answer waits; the
    body must be what the app handed over (its own record), the framing
    sound (a second request on the connection works), the worker the same."""
    before = pid(server)
    for seed in range(200):
        s = slow_connect(server, rcvbuf=2048)
        mutated = []
        try:
            s.sendall(b"GET /case?seed=%d HTTP/1.1\r\nHost: t\r\n\r\n" % seed)
            rd = SlowReader(s, step=1 + seed * 37 % 4000)
            # The mutation runs when the worker is back in its loop: at once
            # when the answer is paused on the full socket, or once a write()
            # that waits for this client is done.
            t = threading.Thread(target=lambda: mutated.append(get(server, "/mutate-cases")))
            t.start()
            try:
                r = rd.read_response()
            finally:
                t.join(30)
            assert mutated and mutated[0].body == b"mutated", seed
            assert r.status == 200, (seed, r.status, r.body[:200])
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            r2 = rd.read_response()
            assert r2.body == b"pid=%d" % before, (seed, r2.status, r2.body[:100])
        finally:
            s.close()
        want = get(server, "/record?seed=%d" % seed).body.decode()
        got = "%d %s" % (len(r.body), hashlib.sha256(bytes(r.body)).hexdigest())
        assert got == want, "case %d (%s): sent %s, the app handed over %s" % (
            seed, app.build_case(seed)[0], got, want)
    assert pid(server) == before
    assert no_crash(server) == []


# ---------------------------------------------------------------------------
# (c) fuzz: start_response, write and the answer with objects of wrong types
# ---------------------------------------------------------------------------

def test_wrong_types_never_hurt_the_worker(server):
    """300 seeded cases (ownership_app.fuzz_case). Each answer is a whole
    HTTP response, or the connection ends after a partial one (the app failed
    after its headers went out); the worker stays the same process, and a
    plain request on the same connection afterwards, or on a new one, is
    answered right."""
    before = pid(server)
    outcomes = {}
    for seed in range(300):
        s = server.connect(timeout=30)
        try:
            s.sendall(b"GET /fuzz?seed=%d HTTP/1.1\r\nHost: t\r\n\r\n" % seed)
            rd = RawReader(s, timeout=30)
            try:
                r = rd.read_response()
                outcome = r.status
            except (EOFError, ConnectionResetError):
                outcome = "cut"
            else:
                if (r.header("connection") or "").lower() != "close":
                    s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                    r2 = rd.read_response()
                    assert r2.body == b"pid=%d" % before, (seed, r.status, r2.body[:100])
        finally:
            s.close()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert pid(server) == before, "fuzz case %d killed the worker" % seed
    assert no_crash(server) == []
    # The cases reach every outcome: refused (500), answered, and cut.
    assert {200, 500, "cut"} <= set(outcomes), outcomes
    # ... and gangway refused each kind of wrong object in the app.
    caught = get(server, "/fuzz-caught").body.decode()
    for what in ("TypeError: exc_info must be", "TypeError: write() takes bytes",
                 "TypeError: headers must be a list", "ValueError: status must look",
                 "ValueError: control character", "TypeError: start_response(status"):
        assert what in caught, (what, caught)
