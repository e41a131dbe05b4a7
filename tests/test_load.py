import os
"""Large bodies, keep-alive, concurrency and memory stability under load.

Apps: tests/apps/load_app.py and tests/apps/hello.py.
"""
import hashlib
import random
import re
import socket
import threading

import pytest

from conftest import RawReader

MiB = 1024 * 1024
BLOCK = 65536


def pattern(size):
    """The bytes load_app's /download streams: block i starts with i (8 bytes BE)."""
    base = bytes(range(256)) * (BLOCK // 256)
    h, sent, i = hashlib.sha256(), 0, 0
    while sent < size:
        b = (i.to_bytes(8, "big") + base[8:])[:size - sent]
        h.update(b)
        sent += len(b)
        i += 1
    return h.hexdigest()


class StreamReader:
    """Reads one response, hashing the body instead of keeping it."""

    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def _fill(self):
        b = self.sock.recv(1 << 20)
        if not b:
            raise EOFError("connection closed")
        self.buf += b

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            self._fill()

    def consume(self, n, h):
        while n:
            if not self.buf:
                self._fill()
            take = min(n, len(self.buf))
            h.update(self.buf[:take])
            del self.buf[:take]
            n -= take

    def response(self):
        status = int(self.line().split(b" ")[1])
        headers = {}
        while True:
            line = self.line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers[k.strip().lower()] = v.strip()
        h, total = hashlib.sha256(), 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line():
                        pass
                    break
                self.consume(size, h)
                total += size
                assert self.line() == b""
        else:
            total = int(headers["content-length"])
            self.consume(total, h)
        return status, headers, total, h.hexdigest()


@pytest.fixture
def load(gangway):
    return gangway("load_app:application")


@pytest.mark.parametrize("use_chunked", [False, True])
def test_upload_10mib(load, use_chunked):
    data = random.Random(10).randbytes(10 * MiB)
    s = load.connect(timeout=30)
    try:
        if use_chunked:
            s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), 1 << 20):
                piece = data[i:i + (1 << 20)]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        else:
            s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(data))
            s.sendall(data)
        r = RawReader(s, timeout=30).read_response()
    finally:
        s.close()
    assert r.status == 200
    assert r.body == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


@pytest.mark.parametrize("use_chunked", [False, True])
def test_download_50mib(load, use_chunked):
    size = 50 * MiB
    s = load.connect(timeout=30)
    try:
        s.sendall(b"GET /download?size=%d&chunked=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  % (size, use_chunked))
        status, headers, total, digest = StreamReader(s).response()
    finally:
        s.close()
    assert status == 200
    if not use_chunked:
        assert headers["content-length"] == str(size)
    assert total == size
    assert digest == pattern(size)


def test_download_one_huge_block(load):
    size = 30 * MiB  # one bytes object: the writer must handle partial writes
    s = load.connect(timeout=30)
    try:
        s.sendall(b"GET /download?size=%d&whole=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % size)
        status, headers, total, digest = StreamReader(s).response()
    finally:
        s.close()
    assert (status, total) == (200, size)
    assert digest == pattern(size)


def test_slow_reader_does_not_block_other_clients(load):
    size = 50 * MiB
    a = load.connect(timeout=30)
    try:
        a.sendall(b"GET /download?size=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % size)
        first = a.recv(4096)  # the response has started; now A stops reading
        assert first.startswith(b"HTTP/1.1 200 ")
        r = RawReader(load.connect(timeout=5), timeout=5)
        try:
            r.sock.sendall(b"GET /id?n=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert r.read_response().body == b"id=7"
        finally:
            r.sock.close()
        rd = StreamReader(a)
        rd.buf += first
        status, _, total, digest = rd.response()
        assert (status, total, digest) == (200, size, pattern(size))
    finally:
        a.close()


def test_slow_uploader_does_not_block_other_clients(load):
    data = random.Random(3).randbytes(4 * MiB)
    a = load.connect(timeout=30)
    try:
        a.sendall(b"POST /sha256 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                  % len(data) + data[:100000])
        r = RawReader(load.connect(timeout=5), timeout=5)
        try:
            r.sock.sendall(b"GET /id?n=8 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert r.read_response().body == b"id=8"
        finally:
            r.sock.close()
        a.sendall(data[100000:])
        out = RawReader(a, timeout=30).read_response()
        assert out.body == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())
    finally:
        a.close()


def test_100_sequential_requests_on_one_keepalive_connection(load):
    s = load.connect()
    try:
        rd = RawReader(s)
        for i in range(100):
            if i % 2:
                body = b"x" * i
                s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                expect = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
            else:
                s.sendall(b"GET /id?n=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i)
                expect = b"id=%d" % i
            r = rd.read_response()
            assert (r.status, r.body) == (200, expect), "request %d" % i
            assert (r.header("connection") or "").lower() != "close"
    finally:
        s.close()


def test_200_concurrent_clients(load):
    n = 200
    barrier = threading.Barrier(n, timeout=30)
    results = [None] * n

    def client(i):
        try:
            s = socket.create_connection((load.host, load.port), timeout=30)
            try:
                barrier.wait()
                s.sendall(b"GET /id?n=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n" % i)
                r = RawReader(s, timeout=30).read_response()
                results[i] = (r.status, r.body)
            finally:
                s.close()
        except Exception as e:  # reported below, per client
            results[i] = repr(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60 s"
    bad = {i: r for i, r in enumerate(results) if r != (200, b"id=%d" % i)}
    assert bad == {}


HELLO_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CL_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)


def read_responses(sock, buf, n):
    """Read n pipelined hello responses from sock; buf carries leftovers."""
    pos = 0
    for _ in range(n):
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end >= 0:
                m = CL_RE.search(buf, pos, end + 2)
                assert m, bytes(buf[pos:end])
                stop = end + 4 + int(m.group(1))
                if len(buf) >= stop:
                    break
            b = sock.recv(1 << 20)
            if not b:
                raise EOFError("server closed the keep-alive connection")
            buf += b
        assert buf.startswith(b"HTTP/1.1 200 ", pos)
        assert buf[end + 4:stop] == b"Hello, World!"
        pos = stop
    del buf[:pos]


def tree_rss_kib(server):
    """RSS of the server process plus any worker children it forked."""
    total = server.rss_kib()
    try:
        with open("/proc/%d/task/%d/children" % (server.pid, server.pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for pid in kids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


@pytest.mark.skipif(os.environ.get("GW_TEST_SANITIZED") == "1",
                    reason="ASan's quarantine holds freed memory, so RSS grows by design; "
                           "LeakSanitizer checks leaks in that build")
def test_rss_stable_over_100k_keepalive_requests(gangway):
    server = gangway("hello:application")
    socks = [server.connect(timeout=30) for _ in range(2)]
    bufs = [bytearray() for _ in socks]
    batch = HELLO_REQ * 100

    def run(total):
        done = 0
        while done < total:
            for s in socks:
                s.sendall(batch)
            for s, b in zip(socks, bufs):
                read_responses(s, b, 100)
            done += 100 * len(socks)

    try:
        run(10000)
        after_warmup = tree_rss_kib(server)
        run(90000)
        at_end = tree_rss_kib(server)
    finally:
        for s in socks:
            s.close()
    assert at_end - after_warmup < 1024, (
        "RSS grew by %d KiB (%d -> %d) over 90,000 requests"
        % (at_end - after_warmup, after_warmup, at_end))
