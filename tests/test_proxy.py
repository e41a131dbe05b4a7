"""Behind a proxy: trusted forwarded headers and the PROXY protocol (issue 18).

What the app sees (tests/apps/proxy_app.py answers the environ keys a proxy
changes): REMOTE_ADDR, the scheme and the host from trusted proxies only;
untrusted peers' headers passed on untouched; malformed values ignored; the
PROXY protocol v1 and v2 header read first on a PROXY listener, split
anywhere, refused when it is garbage; the uwsgi listener untouched.
Network on loopback only; every wait is bounded.
"""
import json
import os
import re
import socket
import struct
import time

import pytest

from conftest import RawReader, trickle_until_closed, wait_for
from nginx import nginx  # noqa: F401 - the fixture

APP = "proxy_app:application"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def start(gangway, *args, **kw):
    return gangway(*args, APP, **kw)


def listeners(srv):
    """[(host, port, is_proxy)] from the log's "listening on" lines, in order."""
    out = []
    for m in re.finditer(r"listening on http://(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d+)( \(PROXY protocol\))?",
                         srv.read_log()):
        out.append((m.group(1) or m.group(2), int(m.group(3)), bool(m.group(4))))
    return out


def proxy_addr(srv):
    return [(h, p) for h, p, px in listeners(srv) if px][0]


def send(addr, data, pieces=None, timeout=10):
    """Sends data (in pieces: a list of cut offsets, each piece its own
    segment), returns (status, environ dict or body) of one answer, or None
    when the connection closes without one."""
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if pieces:
            last = 0
            for cut in list(pieces) + [len(data)]:
                s.sendall(data[last:cut])
                last = cut
                # paces the pieces so that each is its own read
                time.sleep(0.005)
        else:
            s.sendall(data)
        try:
            r = RawReader(s, timeout).read_response()
        except (ConnectionError, EOFError, AssertionError, ValueError):
            return None
        if r is None:
            return None
        body = r.body
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body
    finally:
        s.close()


def get(path="/", headers=(), host="example.com"):
    lines = ["GET %s HTTP/1.1" % path, "Host: " + host, "Connection: close"]
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_addr(srv):
    return (srv.host, srv.port)


# ---------------------------------------------------------------------------
# forwarded headers
# ---------------------------------------------------------------------------

SPOOF = [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-Proto", "https"),
         ("X-Forwarded-Ssl", "on"), ("X-Forwarded-Host", "evil.example"),
         ("X-Forwarded-Port", "443"), ("Forwarded", "for=198.51.100.66;proto=https")]


@pytest.mark.parametrize("family", ["x-forwarded", "forwarded", "both"])
def test_untrusted_peer_spoofing_changes_nothing(gangway, family):
    # 127.0.0.1 is not in the list: its headers are the client's own say
    srv = start(gangway, "--forwarded-allow-ips", "10.0.0.0/8", "--forwarded-host",
                "--forwarded-headers", family)
    st, env = send(http_addr(srv), get(headers=SPOOF))
    assert st == 200
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
    assert env["HTTP_HOST"] == "example.com" and env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == str(srv.port)
    assert "gangway.peer_addr" not in env
    # passed on untouched, for an app that wants to judge them itself
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.66"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["HTTP_FORWARDED"] == "for=198.51.100.66;proto=https"


def test_trusted_proxy_sets_client_and_scheme(gangway):
    # loopback is trusted by default
    srv = start(gangway, "--log-format", "%(client) %(peer) %(uri)")
    st, env = send(http_addr(srv), get("/one", [("X-Forwarded-For", "203.0.113.7"),
                                                ("X-Forwarded-Proto", "https")]))
    assert st == 200
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["REMOTE_PORT"] == ""
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["gangway.peer_addr"] == "127.0.0.1"
    # the host stays the client's Host unless --forwarded-host
    assert env["HTTP_HOST"] == "example.com"
    wait_for(lambda: "203.0.113.7 127.0.0.1 /one" in srv.read_log(), 10,
             what="the access log's client and peer")
    # a request without the headers on the same server: the peer
    st, env = send(http_addr(srv), get("/two"))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert "gangway.peer_addr" not in env


def test_chain_of_proxies_skips_trusted_hops(gangway):
    srv = start(gangway, "--forwarded-allow-ips", "127.0.0.0/8, 10.0.0.0/8")
    # the client wrote 1.1.1.1 itself; 10.0.0.2 is a trusted inner proxy
    st, env = send(http_addr(srv), get(headers=[
        ("X-Forwarded-For", "1.1.1.1, 203.0.113.7"), ("X-Forwarded-For", "10.0.0.2"),
        ("X-Forwarded-Proto", "https, http")]))
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"  # the entry of the client's first proxy
    # every hop trusted: the leftmost is the client
    st, env = send(http_addr(srv), get(headers=[("X-Forwarded-For", "10.0.0.9, 10.0.0.2")]))
    assert env["REMOTE_ADDR"] == "10.0.0.9"
    # a client who sent X-Forwarded-Proto: https through an appending proxy
    st, env = send(http_addr(srv), get(headers=[("X-Forwarded-For", "203.0.113.7"),
                                                ("X-Forwarded-Proto", "https, http")]))
    assert env["wsgi.url_scheme"] == "http"
    # RFC 7239 the same way
    srv2 = start(gangway, "--forwarded-allow-ips", "127.0.0.0/8,10.0.0.0/8",
                 "--forwarded-headers", "forwarded")
    st, env = send(http_addr(srv2), get(headers=[
        ("Forwarded", 'for=1.1.1.1;proto=http, for=203.0.113.8;proto=https'),
        ("Forwarded", "for=10.0.0.2;proto=http")]))
    assert env["REMOTE_ADDR"] == "203.0.113.8" and env["wsgi.url_scheme"] == "https"


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_ipv6_in_both_header_forms(gangway):
    srv = start(gangway, "--forwarded-headers", "both")
    st, env = send(http_addr(srv), get(headers=[("X-Forwarded-For", "2001:db8::17")]))
    assert env["REMOTE_ADDR"] == "2001:db8::17"
    st, env = send(http_addr(srv), get(headers=[("Forwarded",
                                                 'for="[2001:db8:cafe::17]:4711";proto=https')]))
    assert env["REMOTE_ADDR"] == "2001:db8:cafe::17" and env["REMOTE_PORT"] == "4711"
    assert env["wsgi.url_scheme"] == "https"
    # both families, agreeing
    st, env = send(http_addr(srv), get(headers=[
        ("X-Forwarded-For", "[2001:db8::18]:4712"), ("Forwarded", 'for="[2001:db8::18]:4712"')]))
    assert env["REMOTE_ADDR"] == "2001:db8::18"
    # disagreeing: neither (a proxy wrote one, the client the other)
    st, env = send(http_addr(srv), get(headers=[
        ("X-Forwarded-For", "2001:db8::18"), ("Forwarded", 'for="[2001:db8::66]"')]))
    assert env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_peer_trusted_and_hops(gangway):
    srv = start(gangway, "--http", "[::1]:0", "--forwarded-allow-ips", "::1, 2001:db8:1::/48")
    st, env = send(http_addr(srv), get(headers=[
        ("X-Forwarded-For", "2001:db8::5, 2001:db8:1::9")]))
    assert env["REMOTE_ADDR"] == "2001:db8::5"
    assert env["gangway.peer_addr"] == "::1"


def test_malformed_values_are_ignored_and_logged(gangway):
    srv = start(gangway, "--log-forwarded", "--forwarded-allow-ips", "127.0.0.0/8,10.0.0.0/8")
    many = ", ".join("10.0.%d.%d" % (i // 250, i % 250) for i in range(40))
    huge = ", ".join("198.51.%d.%d" % (i // 250, i % 250) for i in range(600)) + ", 203.0.113.9"
    cases = [
        ([("X-Forwarded-For", "203.0.113.7, junk")], "not an address"),
        ([("X-Forwarded-For", "203.0.113.7, " + many)], "too many trusted hops"),
        ([("X-Forwarded-Proto", "gopher")], "neither http nor https"),
        ([("X-Forwarded-For", "010.1.1.1")], "not an address"),
    ]
    for headers, why in cases:
        st, env = send(http_addr(srv), get(headers=headers))
        assert st == 200
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http", headers
        wait_for(lambda: why in srv.read_log(), 10, what="the log line: " + why)
    # a huge list: the walk stops at the client, the rest is never read
    st, env = send(http_addr(srv), get(headers=[("X-Forwarded-For", huge)]))
    assert st == 200 and env["REMOTE_ADDR"] == "203.0.113.9"
    # without --log-forwarded nothing is logged
    quiet = start(gangway)
    send(http_addr(quiet), get(headers=[("X-Forwarded-For", "junk")]))
    send(http_addr(quiet), get("/health"))
    assert "forwarded:" not in quiet.read_log()


@pytest.mark.parametrize("family", ["x-forwarded", "forwarded"])
def test_client_junk_cannot_drop_its_address(gangway, family):
    # A client behind the trusted proxy (127.0.0.1) adds what it likes left
    # of the proxy's entries, or headers the proxy does not set: the address
    # the proxy wrote stays. Ignoring it all made REMOTE_ADDR the proxy's
    # own 127.0.0.1, which apps trust (INTERNAL_IPS, "local only" views).
    srv = start(gangway, "--forwarded-headers", family)
    c = "203.0.113.7"
    if family == "x-forwarded":
        cases = [
            [("X-Forwarded-For", "1.1.1.%d" % i) for i in range(16)] +
            [("X-Forwarded-For", c)],                  # HAProxy adds its own line
            [("X-Forwarded-For", "1.1.1.1, " + c),
             ("X-Forwarded-Proto", "https, " * 40 + "http")],  # an appending proxy
            [("X-Forwarded-For", c), ("X-Forwarded-Proto", "gopher")],
            [("X-Forwarded-For", c), ("X-Forwarded-Ssl", "bogus")],
        ]
    else:
        cases = [
            [("Forwarded", "for=1.1.1.%d" % i) for i in range(16)] + [("Forwarded", "for=" + c)],
            [("Forwarded", 'for="[::1, ;==, for=' + c)],  # one line, nginx-style appending
        ]
    for hd in cases:
        st, env = send(http_addr(srv), get(headers=hd))
        assert st == 200 and env["REMOTE_ADDR"] == c, hd
        assert env["wsgi.url_scheme"] == "http", hd


def test_forwarded_host_only_with_the_option(gangway):
    hdrs = [("X-Forwarded-Host", "www.example.org"), ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "8443")]
    srv = start(gangway)
    st, env = send(http_addr(srv), get(headers=hdrs))
    assert env["HTTP_HOST"] == "example.com" and env["SERVER_PORT"] == str(srv.port)
    srv2 = start(gangway, "--forwarded-host")
    st, env = send(http_addr(srv2), get(headers=hdrs))
    assert env["HTTP_HOST"] == "www.example.org" and env["SERVER_NAME"] == "www.example.org"
    assert env["SERVER_PORT"] == "8443" and env["wsgi.url_scheme"] == "https"
    st, env = send(http_addr(srv2), get(headers=[("X-Forwarded-Host", "www.example.org")]))
    assert env["SERVER_PORT"] == "80"
    st, env = send(http_addr(srv2), get(headers=[("X-Forwarded-Host", "evil/../x")]))
    assert env["HTTP_HOST"] == "example.com"


def test_unix_socket_peer_is_trusted(gangway, tmp_path):
    path = str(tmp_path / "g.sock")
    srv = start(gangway, "--http", "unix:" + path, "--forwarded-allow-ips", "10.0.0.0/8")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    try:
        s.sendall(get(headers=[("X-Forwarded-For", "203.0.113.7")]))
        env = json.loads(RawReader(s, 10).read_response().body)
    finally:
        s.close()
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_uwsgi_listener_is_unaffected(gangway):
    # even trusting everyone: nginx says REMOTE_ADDR and the scheme over uwsgi
    srv = start(gangway, "--uwsgi", "127.0.0.1:0", "--forwarded-allow-ips", "*")
    m = re.search(r"listening on uwsgi://([0-9.]+):(\d+)", srv.read_log())
    addr = (m.group(1), int(m.group(2)))

    def var(k, v):
        k, v = k.encode(), v.encode()
        return struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    block = b"".join(var(k, v) for k, v in [
        ("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("REQUEST_URI", "/"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "192.0.2.44"),
        ("HTTP_HOST", "example.com"), ("HTTP_X_FORWARDED_FOR", "203.0.113.7"),
        ("HTTP_X_FORWARDED_PROTO", "https"), ("SERVER_NAME", "example.com"),
        ("SERVER_PORT", "80")])
    s = socket.create_connection(addr, timeout=10)
    try:
        s.sendall(struct.pack("<BHB", 0, len(block), 0) + block)
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    env = json.loads(data.split(b"\r\n\r\n", 1)[1])
    # nginx's REMOTE_ADDR, as it said; the headers are the app's to read
    assert env["REMOTE_ADDR"] == "192.0.2.44"
    assert env["wsgi.url_scheme"] == "http"
    assert "gangway.peer_addr" not in env


@pytest.mark.parametrize("value", ["not-an-address", "10.0.0.0/33"])
def test_bad_allow_list_is_a_config_error(gangway, value):
    srv = start(gangway, "--forwarded-allow-ips", value, wait=False)
    assert srv.proc.wait(20) == 2
    assert "addresses or CIDRs, separated by commas, or '*'" in srv.read_log()


def test_star_trusts_everyone_with_a_warning(gangway):
    srv = start(gangway, "--forwarded-allow-ips", "*")
    assert "warning: --forwarded-allow-ips '*'" in srv.read_log()
    st, env = send(http_addr(srv), get(headers=[("X-Forwarded-For", "203.0.113.1, 198.51.100.2")]))
    assert env["REMOTE_ADDR"] == "203.0.113.1"


# ---------------------------------------------------------------------------
# the PROXY protocol
# ---------------------------------------------------------------------------

def v2(cmd, fam, block):
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(block)) + block


def v2_tcp4(src, dst, sport, dport, tlvs=b""):
    return v2(1, 0x11, socket.inet_pton(socket.AF_INET, src) +
              socket.inet_pton(socket.AF_INET, dst) + struct.pack(">HH", sport, dport) + tlvs)


def v2_tcp6(src, dst, sport, dport, tlvs=b""):
    return v2(1, 0x21, socket.inet_pton(socket.AF_INET6, src) +
              socket.inet_pton(socket.AF_INET6, dst) + struct.pack(">HH", sport, dport) + tlvs)


TLV_SSL = b"\x20" + struct.pack(">H", 5 + 3 + 7) + b"\x01\0\0\0\0" + b"\x21\x00\x07TLSv1.3"


@pytest.fixture
def proxied(gangway):
    """A gangway with a plain HTTP listener and a PROXY protocol one."""
    return start(gangway, "--http", "127.0.0.1:0", "--http-proxy-protocol", "127.0.0.1:0",
                 "--log-format", "%(client) %(peer) %(uri)")


@pytest.mark.parametrize("kind", ["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6", "v2-tcp6-ssl"])
def test_proxy_header_sets_the_client(proxied, kind):
    hdr, addr, port = {
        "v1-tcp4": (b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 80\r\n", "203.0.113.9", "40000"),
        "v1-tcp6": (b"PROXY TCP6 2001:db8::9 2001:db8::1 40001 443\r\n", "2001:db8::9", "40001"),
        "v2-tcp4": (v2_tcp4("203.0.113.10", "10.0.0.1", 40002, 80), "203.0.113.10", "40002"),
        "v2-tcp6": (v2_tcp6("2001:db8::a", "::1", 40003, 80,
                            b"\x04\x00\x03abc\x02\x00\x0bexample.com"), "2001:db8::a", "40003"),
        "v2-tcp6-ssl": (v2_tcp6("2001:db8::b", "::1", 40004, 443, TLV_SSL), "2001:db8::b",
                        "40004"),
    }[kind]
    st, env = send(proxy_addr(proxied), hdr + get("/" + kind))
    assert st == 200
    assert env["REMOTE_ADDR"] == addr and env["REMOTE_PORT"] == port
    assert env["gangway.peer_addr"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == ("https" if kind.endswith("ssl") else "http")
    wait_for(lambda: "%s 127.0.0.1 /%s" % (addr, kind) in proxied.read_log(), 10,
             what="the access log line")


def test_proxy_local_and_unknown_keep_the_real_peer(proxied):
    for hdr in [v2(0, 0x00, b""), v2(0, 0x11, b"\xff" * 12), b"PROXY UNKNOWN\r\n",
                b"PROXY UNKNOWN ::1 ::2 1 2\r\n", v2(1, 0x00, b"")]:
        st, env = send(proxy_addr(proxied), hdr + get("/health"))
        assert (st, env) == (200, b"ok"), hdr
        st, env = send(proxy_addr(proxied), hdr + get("/x"))
        assert env["REMOTE_ADDR"] == "127.0.0.1" and "gangway.peer_addr" not in env


def test_proxy_unix_source(proxied):
    st, env = send(proxy_addr(proxied), v2(1, 0x31, b"/run/haproxy.sock".ljust(216, b"\0")) +
                   get("/x"))
    assert st == 200 and env["REMOTE_ADDR"] == "" and env["gangway.peer_addr"] == "127.0.0.1"


def test_proxy_unnamed_source_is_not_trusted(gangway):
    # The balancer (127.0.0.1) is trusted for forwarded headers as well (the
    # default list). A client it relays but cannot name (a unix socket's, or
    # v1 UNKNOWN, v2 PROXY with no family) is not the balancer: its own
    # X-Forwarded-* must not count. LOCAL is the balancer's own request.
    srv = start(gangway, "--http-proxy-protocol", "127.0.0.1:0")
    spoof = get(headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")])
    for hdr, addr in [(v2(1, 0x31, b"/run/tls.sock".ljust(216, b"\0")), ""),
                      (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
                      (b"PROXY UNKNOWN ::1 ::2 1 2\r\n", "127.0.0.1"),
                      (v2(1, 0x00, b""), "127.0.0.1")]:
        st, env = send(proxy_addr(srv), hdr + spoof)
        assert st == 200 and env["REMOTE_ADDR"] == addr, (hdr, env)
        assert env["wsgi.url_scheme"] == "http", hdr
    st, env = send(proxy_addr(srv), v2(0, 0x00, b"") + spoof)
    assert env["REMOTE_ADDR"] == "6.6.6.6" and env["wsgi.url_scheme"] == "https"


def test_proxy_header_on_a_unix_listener(gangway, tmp_path):
    # the listener's own peer has no address: the log and gangway.peer_addr
    # say "unix" (this read 48 bytes of a 5-byte string: an ASan report)
    path = str(tmp_path / "px.sock")
    srv = start(gangway, "--http-proxy-protocol", "unix:" + path, "--log-format",
                "%(client) %(peer) %(uri)")
    for i, hdr in enumerate([b"PROXY TCP4 203.0.113.21 10.0.0.1 5 80\r\n",
                             v2_tcp4("203.0.113.22", "10.0.0.1", 6, 80)]):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(hdr + get("/u%d" % i))
            env = json.loads(RawReader(s, 10).read_response().body)
        finally:
            s.close()
        assert env["REMOTE_ADDR"] == "203.0.113.2%d" % (i + 1)
        assert env["gangway.peer_addr"] == "unix"
        wait_for(lambda: "203.0.113.2%d unix /u%d" % (i + 1, i) in srv.read_log(), 10,
                 what="the access log line")


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_proxy_header_split_across_reads(proxied, kind):
    hdr = (b"PROXY TCP4 203.0.113.11 10.0.0.1 1234 80\r\n" if kind == "v1"
           else v2_tcp4("203.0.113.11", "10.0.0.1", 1234, 80, b"\x04\x00\x02xy"))
    data = hdr + get("/split")
    # cuts inside the signature, the addresses, at the header's end, and
    # one that joins the header's last byte to the request's first
    cuts = sorted({1, 5, 7, 11, 13, len(hdr) - 2, len(hdr) - 1, len(hdr), len(hdr) + 3})
    st, env = send(proxy_addr(proxied), data, pieces=cuts)
    assert st == 200 and env["REMOTE_ADDR"] == "203.0.113.11"
    # byte by byte through the header
    st, env = send(proxy_addr(proxied), data, pieces=range(1, len(hdr) + 1))
    assert st == 200 and env["REMOTE_ADDR"] == "203.0.113.11"


def test_keep_alive_after_proxy_header(proxied):
    s = socket.create_connection(proxy_addr(proxied), timeout=10)
    try:
        s.sendall(b"PROXY TCP4 203.0.113.12 10.0.0.1 1 80\r\n")
        rd = RawReader(s, 10)
        for i in range(3):
            s.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            env = json.loads(rd.read_response().body)
            assert env["REMOTE_ADDR"] == "203.0.113.12"
    finally:
        s.close()


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                         # a client speaking HTTP
    b"PROXY TCP4 203.0.113.9 10.0.0.1 99999 80\r\n" + get(),       # a bad port
    b"PROXY TCP4 203.0.113.9 10.0.0.1 1 80\n" + get(),             # LF alone
    b"PROXY " + b"A" * 200 + b"\r\n" + get(),                      # past 107 bytes
    V2_SIG + b"\x21\x12\x00\x0c" + b"\0" * 12 + get(),             # UDP
    V2_SIG + b"\x11\x11\x00\x0c" + b"\0" * 12 + get(),             # version 1 in v2
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",               # a TLS ClientHello
])
def test_garbage_instead_of_a_header_closes(proxied, garbage):
    assert send(proxy_addr(proxied), garbage) is None
    wait_for(lambda: "proxy protocol: 127.0.0.1:" in proxied.read_log(), 10,
             what="the refusal's log line")
    # the server goes on
    st, env = send(proxy_addr(proxied), b"PROXY UNKNOWN\r\n" + get("/health"))
    assert st == 200


def test_plain_listener_takes_no_proxy_header(proxied):
    # the --http listener of the same server answers a PROXY line as a bad request
    st, body = send(http_addr(proxied), b"PROXY TCP4 203.0.113.9 10.0.0.1 1 80\r\n" + get())
    assert st == 400


def test_slow_proxy_header_times_out(gangway):
    srv = start(gangway, "--http-proxy-protocol", "127.0.0.1:0", "--header-timeout", "1")
    s = socket.create_connection(proxy_addr(srv), timeout=10)
    try:
        s.sendall(b"PROXY TCP4 ")
        closed, got, took = trickle_until_closed(s, b"1")
        assert closed and got == b"", got
        assert took < 4
    finally:
        s.close()


def test_proxy_allow_from_refuses_others(gangway):
    srv = start(gangway, "--http-proxy-protocol", "127.0.0.1:0", "--proxy-allow-from",
                "10.0.0.0/8")
    assert send(proxy_addr(srv), b"PROXY UNKNOWN\r\n" + get("/health")) is None
    wait_for(lambda: "not in --proxy-allow-from" in srv.read_log(), 10, what="the refusal")


def test_enable_proxy_protocol_covers_every_http_listener(gangway, tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nhttp-socket = 127.0.0.1:0\nenable-proxy-protocol = true\n"
                   "module = %s\n" % APP)
    srv = gangway(str(ini), listen=False)
    (h, p, px), = listeners(srv)
    assert px
    st, env = send((h, p), b"PROXY TCP4 203.0.113.13 10.0.0.1 5 80\r\n" + get())
    assert env["REMOTE_ADDR"] == "203.0.113.13"
    assert send((h, p), get()) is None


def test_proxy_source_is_the_peer_forwarded_headers_are_judged_by(gangway):
    # the balancer (127.0.0.1) may send PROXY headers; the trusted proxies are 10/8:
    # a client at 203.0.113.14 cannot set its address with X-Forwarded-For...
    srv = start(gangway, "--http-proxy-protocol", "127.0.0.1:0", "--forwarded-allow-ips",
                "10.0.0.0/8", "--proxy-allow-from", "127.0.0.1")
    st, env = send(proxy_addr(srv), b"PROXY TCP4 203.0.113.14 10.0.0.1 5 80\r\n" +
                   get(headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]))
    assert env["REMOTE_ADDR"] == "203.0.113.14" and env["wsgi.url_scheme"] == "http"
    # ...while one behind an inner proxy at 10.0.0.5 is named by it
    st, env = send(proxy_addr(srv), b"PROXY TCP4 10.0.0.5 10.0.0.1 5 80\r\n" +
                   get(headers=[("X-Forwarded-For", "203.0.113.15"),
                                ("X-Forwarded-Proto", "https")]))
    assert env["REMOTE_ADDR"] == "203.0.113.15" and env["wsgi.url_scheme"] == "https"


# ---------------------------------------------------------------------------
# nginx's proxy_pass in front of the HTTP listener (docs/deploy-nginx.md)
# ---------------------------------------------------------------------------

def test_nginx_proxy_pass_with_trusted_headers(gangway, nginx):
    # nginx (127.0.0.1) is the trusted proxy; the client comes from 127.0.0.2
    srv = start(gangway, "--forwarded-allow-ips", "127.0.0.1")
    ngx = nginx(["127.0.0.1:%d" % srv.port], proxy_pass=True)
    assert "proxy_pass http://gangway_http;" in ngx.config
    for i in range(2):  # the second over nginx's kept-alive upstream connection
        s = ngx.connect(source="127.0.0.2")
        try:
            s.sendall(get("/n%d" % i, [("X-Forwarded-For", "1.1.1.1"),
                                       ("X-Forwarded-Proto", "https")], host="localhost"))
            env = json.loads(RawReader(s, 10).read_response().body)
        finally:
            s.close()
        # the client's own entries count for nothing; nginx's do
        assert env["REMOTE_ADDR"] == "127.0.0.2"
        assert env["wsgi.url_scheme"] == "http"
        assert env["gangway.peer_addr"] == "127.0.0.1"
        assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1, 127.0.0.2"
