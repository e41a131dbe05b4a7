"""Scale-out behind HAProxy (issue 18): Debian's haproxy, started by the test
on a generated config (tests/haproxy.py, the one docs/deploy-haproxy.md
shows), in front of two gangway instances standing for two hosts. The
PROXY protocol v2 carries the client's address (health checks send LOCAL);
HTTP health checks on /health; round robin; failover when an instance is
killed under a bounded load, with no failed request beyond those in
flight; a graceful stop with --shutdown-delay that fails nothing; Django's
is_secure() and build_absolute_uri() behind TLS terminated by HAProxy.
"""
import http.client
import json
import os
import signal
import ssl
import time

import pytest

from conftest import ROOT, wait_for
from haproxy import GLOBAL, HAPROXY, HAProxy, free_port, has_ssl, self_signed, site_config
from test_nginx import Load as NginxLoad, kill_instance

pytestmark = pytest.mark.skipif(not os.path.exists(HAPROXY),
                                reason="haproxy is not installed (scripts/install-deps)")

APP = "proxy_app:application"


def start_instance(gangway, name, *args, app=APP, port=None):
    port = port or free_port()
    srv = gangway("--http-proxy-protocol", "127.0.0.1:%d" % port, "-p", "2", *args, app,
                  listen=False, env={"GW_TEST_INSTANCE": name})
    assert srv.port == port and "(PROXY protocol)" in srv.read_log()
    return srv


@pytest.fixture
def front(tmp_path, gangway):
    """start(instances...) -> haproxy in front of them; its port."""
    procs = []

    def start(servers, tls=False):
        port = free_port()
        tls_port = free_port() if tls else None
        cert = self_signed(tmp_path) if tls else None
        cfg = GLOBAL + site_config("127.0.0.1:%d" % port,
                                   ["127.0.0.1:%d" % s.port for s in servers],
                                   tls_bind="127.0.0.1:%d" % tls_port if tls else None,
                                   cert=cert)
        h = HAProxy(tmp_path, cfg)
        procs.append(h)
        h.wait_listening(port)
        h.port, h.tls_port = port, tls_port
        return h

    yield start
    for h in procs:
        h.stop()


def fetch(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, body, c.sock.getsockname()[1] if c.sock else None
    finally:
        c.close()


class Load(NginxLoad):
    """The nginx test's bounded load, through HAProxy: threads sending GET on
    fresh connections until a deadline or a count: (start, end, ok, instance
    or the error)."""

    def __init__(self, port, threads=4, path="/slow"):
        super().__init__(None, threads, path)
        self.port = port

    def _one(self):
        t0 = time.monotonic()
        try:
            st, body, _ = fetch(self.port, self.path)
            ok = st == 200
            what = json.loads(body)["instance"] if ok else "status %d" % st
        except Exception as e:  # noqa: BLE001 - every failure is a result
            ok, what = False, repr(e)
        return t0, time.monotonic(), ok, what

    def run(self, seconds, max_requests=2000, during=None):
        return super().run(seconds, max_requests, during)


def both_up(h, names=("a", "b")):
    """Waits until HAProxy sends requests to every instance named."""
    seen = set()

    def check():
        st, body, _ = fetch(h.port, "/")
        if st == 200:
            seen.add(json.loads(body)["instance"])
        return seen >= set(names)
    wait_for(check, 20, interval=0.05, what="haproxy serving from %s" % (names,))


def test_haproxy_proxy_v2_health_checks_and_balance(gangway, front):
    a = start_instance(gangway, "a", "--log-format", "%(client) %(peer) %(uri) %(status)")
    b = start_instance(gangway, "b")
    h = front([a, b])
    both_up(h)
    # the client's own address and port came in the PROXY header
    st, body, local_port = fetch(h.port, "/who")
    env = json.loads(body)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(local_port)
    assert env["gangway.peer_addr"] == "127.0.0.1"
    # round robin: both serve a fair share
    load = Load(h.port, path="/")
    load.run(1.5, max_requests=200)
    res = load.results
    assert res and all(ok for _, _, ok, _ in res), [r for r in res if not r[2]][:5]
    per = {n: sum(1 for r in res if r[3] == n) for n in "ab"}
    assert min(per.values()) >= len(res) // 4, per
    # the health checks (PROXY v2 LOCAL) are answered, none refused
    wait_for(lambda: "127.0.0.1 127.0.0.1 /health 200" in a.read_log(), 10,
             what="a health check in a's access log")
    for s in (a, b):
        assert "proxy protocol:" not in s.read_log()


def test_haproxy_failover_when_an_instance_dies(gangway, front):
    a = start_instance(gangway, "a")
    b = start_instance(gangway, "b")
    h = front([a, b])
    both_up(h)
    load = Load(h.port)
    marks = {}

    def kill_a(ld):
        wait_for(lambda: len(ld.results) >= 20, 10, what="load before the kill")
        marks["start"] = time.monotonic()
        marks["workers"] = kill_instance(a)
        marks["end"] = time.monotonic()
    load.run(4.0, during=kill_a)
    res = load.results
    failed = [r for r in res if not r[2]]
    # at most the requests in flight in a's workers when they died
    assert len(failed) <= load.nthreads, failed
    assert all(t0 <= marks["end"] for t0, _, _, _ in failed), (marks, failed)
    late = [r for r in res if r[0] >= marks["end"] + 1.0]
    assert len(late) >= 10, "too little load after the kill (%d)" % len(late)
    assert all(ok and w == "b" for _, _, ok, w in late), [r for r in late if not r[2]][:5]
    print("haproxy failover: %d requests, %d failed (in flight at the kill)"
          % (len(res), len(failed)))


def test_haproxy_graceful_stop_with_shutdown_delay_fails_nothing(gangway, front):
    a = start_instance(gangway, "a", "--shutdown-delay", "1")
    b = start_instance(gangway, "b", "--shutdown-delay", "1")
    h = front([a, b])
    both_up(h)
    load = Load(h.port)
    marks = {}

    def stop_a(ld):
        wait_for(lambda: len(ld.results) >= 20, 10, what="load before the stop")
        marks["sent"] = time.monotonic()
        a.signal(signal.SIGTERM)
        assert a.proc.wait(30) == 0
        marks["gone"] = time.monotonic()
    load.run(6.0, during=stop_a)
    res = load.results
    assert all(ok for _, _, ok, _ in res), ([(r[0] - marks["sent"], r[3]) for r in res
                                             if not r[2]][:5], marks["gone"] - marks["sent"],
                                            h.read_log()[-3000:])
    # a served through its delay, then HAProxy sent everything to b
    assert any(w == "a" and t1 >= marks["sent"] + 0.5 for _, t1, _, w in res)
    late = [r for r in res if r[0] >= marks["gone"] + 0.5]
    assert late and all(w == "b" for _, _, _, w in late)
    assert "SIGTERM: serving 1s more (shutdown-delay)" in a.read_log()


@pytest.mark.skipif(not has_ssl(), reason="this haproxy has no TLS")
def test_django_is_secure_behind_haproxy_tls(gangway, front, tmp_path):
    pytest.importorskip("django")
    # As on the Internet: the client (127.0.0.1 here) is no trusted proxy,
    # so its own X-Forwarded-Proto would count for nothing; the scheme
    # comes from HAProxy's PROXY header (send-proxy-v2-ssl).
    a = start_instance(gangway, "a", "--forwarded-allow-ips", "192.0.2.1",
                       "--proxy-allow-from", "127.0.0.1", app="proxy_django:application")
    h = front([a], tls=True)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "crt.pem"))
    wait_for(lambda: fetch(h.port, "/health")[0] == 200, 20, interval=0.05,
             what="haproxy serving")

    c = http.client.HTTPSConnection("127.0.0.1", h.tls_port, timeout=10, context=ctx)
    try:
        c.request("GET", "/whoami", headers={"X-Forwarded-Proto": "http"})
        r = c.getresponse()
        assert r.status == 200
        got = json.loads(r.read())
        local_port = c.sock.getsockname()[1]
    finally:
        c.close()
    assert got["is_secure"] is True
    assert got["absolute"] == "https://127.0.0.1:%d/next?x=1" % h.tls_port
    assert got["remote_addr"] == "127.0.0.1" and got["remote_port"] == str(local_port)
    assert got["peer"] == "127.0.0.1"
    # the plain frontend: http, whatever the client claims
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    try:
        c.request("GET", "/whoami", headers={"X-Forwarded-Proto": "https",
                                             "X-Forwarded-For": "198.51.100.1"})
        body = c.getresponse().read()
    finally:
        c.close()
    got = json.loads(body)
    assert got["is_secure"] is False and got["remote_addr"] == "127.0.0.1"
    assert got["absolute"] == "http://127.0.0.1:%d/next?x=1" % h.port


DOC = os.path.join(ROOT, "docs", "deploy-haproxy.md")


def test_docs_show_the_tested_config():
    with open(DOC) as f:
        doc = f.read()
    text = site_config("*:80", ["10.0.0.11:8001", "10.0.0.12:8001"],
                       tls_bind="*:443", cert="/etc/haproxy/site.pem", inter="2s")
    assert text in doc, "docs/deploy-haproxy.md lacks this rendering of tests/haproxy.py:\n" + text
    assert GLOBAL.strip() in doc
