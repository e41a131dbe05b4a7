"""gangway behind a real nginx (uwsgi_pass), over TCP and over a unix socket.

nginx runs the configs of docs/deploy-nginx.md (tests/nginx.py renders them;
test_docs_show_the_tested_configs checks the doc). The Flask tests of
test_flask.py and the Django admin flow of test_django.py run here unchanged:
their `flask_server` / `site` fixtures are overridden to be nginx in front of
gangway. Then: the environ nginx builds (client address, HTTPS), uploads with
Content-Length and chunked, streaming, HEAD, 50 MiB downloads, static files,
timeouts, and scale-out over two gangway instances with one killed under
load. Every process is stopped by its pid; every wait is bounded.
"""
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT, RawReader, Server, children, wait_for
from nginx import Nginx, NGINX, nginx, nginx_address, site_config, uwsgi_tcp  # noqa: F401
from test_load import MiB, StreamReader, pattern
# Run as they are, against the fixtures below (nginx in front of gangway):
from test_flask import (FILE_DATA, test_custom_404_handler, test_custom_500_handler,  # noqa: F401
                        test_form_post, test_json_in_and_out, test_keep_alive_across_flask_requests,
                        test_multipart_file_upload, test_routes, test_send_file,
                        test_send_file_conditional_and_range, test_streaming_with_context)
from test_django import (project, test_admin_login_reaches_site_administration,  # noqa: F401
                         test_admin_login_wrong_password,
                         test_anonymous_admin_redirects_and_unknown_url_404,
                         test_post_without_csrf_token_is_403)

if not os.path.exists(NGINX):
    pytest.skip("nginx is not installed (apt-get install nginx-light)", allow_module_level=True)


class Front:
    """nginx as the client sees it, with the gangway behind it (for its log)."""

    def __init__(self, ngx, backend):
        self.nginx, self.backend = ngx, backend
        self.host, self.port, self.url = ngx.host, ngx.port, ngx.url

    def read_log(self):
        return self.backend.read_log()

    def connect(self, timeout=10, source=None):
        return self.nginx.connect(timeout, source)


def start_gangway(tmp, kind, *args, env=None, addr=None):
    """gangway with one --uwsgi listener: TCP on 127.0.0.1:0 or a unix socket in tmp."""
    if addr is None:
        addr = "127.0.0.1:0" if kind == "tcp" else "unix:" + os.path.join(str(tmp), "gw.sock")
    srv = Server(tmp, ["--uwsgi", addr] + list(args), env=env)
    try:
        return srv.wait_ready()
    except BaseException:
        srv.stop()
        raise


@pytest.fixture(scope="module", params=["tcp", "unix"])
def flask_server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flask-" + request.param)
    p = tmp / "download.bin"
    p.write_bytes(FILE_DATA)
    gw = start_gangway(tmp, request.param, "--env", "GW_TEST_FLASK_FILE=%s" % p,
                       "flask_app:app")
    ngx = Nginx(tmp, [nginx_address(gw, request.param == "unix")])
    try:
        ngx.start()
        yield Front(ngx, gw)
    finally:
        ngx.stop()
        gw.stop()


@pytest.fixture(scope="module", params=["tcp", "unix"])
def site(request, project, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("django-" + request.param)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DJANGO_SETTINGS_MODULE", raising=False)  # mysite/wsgi.py sets it
        gw = start_gangway(tmp, request.param, "--chdir", str(project),
                           "mysite.wsgi:application")
    ngx = Nginx(tmp, [nginx_address(gw, request.param == "unix")])
    try:
        ngx.start()
        yield Front(ngx, gw)
    finally:
        ngx.stop()
        gw.stop()


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


@pytest.fixture
def front(tmp_path, nginx, kind):
    """uw_app behind nginx, with /static/ served from tmp_path/static."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.css").write_bytes(b"body { color: #123456 }\n")
    gw = start_gangway(tmp_path, kind, "uw_app")
    try:
        ngx = nginx([nginx_address(gw, kind == "unix")], static_root=str(static))
        yield Front(ngx, gw)
    finally:
        gw.stop()


def fetch(front, method, path, body=None, headers=None, timeout=30, source=None):
    c = http.client.HTTPConnection(front.host, front.port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        headers = headers or {}
        chunked = headers.get("Transfer-Encoding") == "chunked"
        c.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------------------
# the environ nginx builds
# ---------------------------------------------------------------------------

def test_client_address_and_request_variables(front):
    # From 127.0.0.2: nginx itself talks to gangway from 127.0.0.1 (or a unix
    # socket), so REMOTE_ADDR can only be the client's if nginx's value is used.
    c = http.client.HTTPConnection(front.host, front.port, timeout=10,
                                   source_address=("127.0.0.2", 0))
    try:
        c.request("GET", "/some/path?x=1&y=%C3%A9", headers={"X-Custom": "custom-value"})
        r = c.getresponse()
        e = json.loads(r.read())
        client_port = c.sock.getsockname()[1]
    finally:
        c.close()
    assert r.status == 200
    assert e["REMOTE_ADDR"] == "127.0.0.2"
    assert e["REMOTE_PORT"] == str(client_port)
    assert e["REQUEST_METHOD"] == "GET"
    assert e["REQUEST_URI"] == "/some/path?x=1&y=%C3%A9"
    assert e["PATH_INFO"] == "/some/path"
    assert e["QUERY_STRING"] == "x=1&y=%C3%A9"
    assert e["SERVER_PORT"] == str(front.port)
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["HTTP_HOST"] == "127.0.0.1"  # Debian's uwsgi_params: $host
    assert e["HTTP_X_CUSTOM"] == "custom-value"
    assert e["REQUEST_SCHEME"] == "http" and e["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in e


def test_repeated_headers_are_joined(front):
    s = front.connect()
    try:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  b"X-Multi: a\r\nX-Multi: b\r\nCookie: c1=1\r\nCookie: c2=2\r\n\r\n")
        r = RawReader(s).read_response()
    finally:
        s.close()
    e = json.loads(r.body)
    assert r.status == 200
    assert e["HTTP_X_MULTI"] == "a, b"  # as gangway's --http gives it
    assert e["HTTP_COOKIE"] == "c1=1; c2=2"


def test_access_log_names_the_client(front):
    status, _, _ = fetch(front, "GET", "/pid?log=1", source="127.0.0.2",
                         headers={"Referer": "http://ref.example/", "User-Agent": "agent/1.0"})
    assert status == 200
    wait_for(lambda: re.search(r'^127\.0\.0\.2 - - \[[^]]+\] "GET /pid\?log=1 HTTP/1\.1" 200 \d+ '
                               r'"http://ref\.example/" "agent/1\.0"', front.read_log(), re.M),
             5, what="the access log line with the client's address")


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl (HTTP/2 client)")
def test_http2_client(tmp_path, nginx, kind):
    # Browsers talk HTTP/2 to nginx; nginx then sends SERVER_PROTOCOL=HTTP/2.0.
    gw = start_gangway(tmp_path, kind, "uw_app")
    try:
        ngx = nginx([nginx_address(gw, kind == "unix")], listen_options="http2")
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--interface", "127.0.0.2",
                            "-H", "Referer: http://h2.example/", "-A", "h2-agent",
                            "-w", "\n%{http_version} %{http_code}", ngx.url + "/env?h2=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode()
        body, _, tail = out.rpartition("\n")
        assert (p.returncode, tail) == (0, "2 200"), out
        e = json.loads(body)
        assert e["SERVER_PROTOCOL"] == "HTTP/2.0"
        assert e["REMOTE_ADDR"] == "127.0.0.2" and e["QUERY_STRING"] == "h2=1"
        lines = wait_for(lambda: [x for x in gw.read_log().splitlines() if '" 200 ' in x], 5,
                         what="the access log line")
        line = lines[-1]
        assert re.match(r'127\.0\.0\.2 - - \[[^]]+\] "GET /env\?h2=1 HTTP/2\.0" 200 \d+ '
                        r'"http://h2\.example/" "h2-agent"', line), line
    finally:
        gw.stop()


def test_https_on_becomes_url_scheme_https(front, nginx, kind):
    # A second nginx, as behind a TLS-terminating load balancer: HTTPS on.
    tls = Front(nginx([nginx_address(front.backend, kind == "unix")], behind_tls=True),
                front.backend)
    assert "uwsgi_param HTTPS on;" in tls.nginx.config
    status, _, body = fetch(tls, "GET", "/env")
    e = json.loads(body)
    assert status == 200
    assert e["HTTPS"] == "on"
    assert e["wsgi.url_scheme"] == "https"
    e = json.loads(fetch(front, "GET", "/env")[2])
    assert e["wsgi.url_scheme"] == "http" and "HTTPS" not in e


def test_static_files_are_nginx_s(front):
    status, headers, body = fetch(front, "GET", "/static/app.css")
    assert (status, body) == (200, b"body { color: #123456 }\n")
    assert headers["content-type"] == "text/css"
    assert fetch(front, "GET", "/env")[0] == 200
    wait_for(lambda: '"GET /env HTTP/1.1" 200' in front.read_log(), 5, what="the access log")
    assert "/static/" not in front.read_log()


def test_static_files_by_gangway_behind_nginx(tmp_path, nginx, kind):
    static = tmp_path / "gwstatic"
    static.mkdir()
    (static / "app.js").write_bytes(b"console.log('gangway');\n" * 100)
    gw = start_gangway(tmp_path, kind, "--static-map", "/static=%s" % static, "uw_app")
    try:
        f = Front(nginx([nginx_address(gw, kind == "unix")]), gw)
        status, headers, body = fetch(f, "GET", "/static/app.js")
        assert (status, body) == (200, b"console.log('gangway');\n" * 100)
        assert headers["content-length"] == str(len(body))
        status, _, _ = fetch(f, "GET", "/static/app.js", headers={"If-None-Match": headers["etag"]})
        assert status == 304
        status, headers, body = fetch(f, "GET", "/static/app.js", headers={"Range": "bytes=0-6"})
        assert (status, body) == (206, b"console")
        # nginx resolves the dot-segments itself: PATH_INFO is /uw_app.py (the app)
        assert b"def application" not in fetch(f, "GET", "/static/../uw_app.py")[2]
        assert b"def application" not in fetch(f, "GET", "/static/%2e%2e/uw_app.py")[2]
        assert fetch(f, "GET", "/static/missing.js")[0] == 404
        assert json.loads(fetch(f, "GET", "/env")[2])["PATH_INFO"] == "/env"
    finally:
        gw.stop()


def test_flask_head(flask_server):
    status, headers, body = fetch(flask_server, "HEAD", "/user/ada")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(b"hello ada (none)"))


def test_head(front):
    _, get_headers, get_body = fetch(front, "GET", "/pid")
    status, headers, body = fetch(front, "HEAD", "/pid")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))
    wait_for(lambda: '"HEAD /pid HTTP/1.1" 200' in front.read_log(), 5,
             what="HEAD reaching gangway as HEAD")


def test_streaming_response(front):
    status, headers, body = fetch(front, "GET", "/stream?n=2000")
    assert status == 200
    assert body == b"".join(b"line %d\n" % i for i in range(2000))
    assert "content-length" not in headers
    assert headers.get("transfer-encoding") == "chunked"  # nginx re-frames the close-delimited body


# ---------------------------------------------------------------------------
# uploads
# ---------------------------------------------------------------------------

def digest(data):
    return b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


UPLOAD = random.Random(60).randbytes(60 * MiB)


def pieces(data, size=1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_upload_60mib_with_content_length(front):
    status, _, body = fetch(front, "POST", "/sha256", UPLOAD,
                            {"Content-Type": "application/octet-stream"}, timeout=60)
    assert (status, body) == (200, digest(UPLOAD))


def test_upload_60mib_chunked(front):
    status, _, body = fetch(front, "POST", "/sha256", pieces(UPLOAD),
                            {"Transfer-Encoding": "chunked"}, timeout=60)
    assert (status, body) == (200, digest(UPLOAD))


def test_chunked_upload_arrives_with_content_length(front):
    data = b"chunked body " * 1000
    status, _, body = fetch(front, "POST", "/env", pieces(data, 4000),
                            {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
    e = json.loads(body)
    assert status == 200
    assert e["CONTENT_LENGTH"] == str(len(data))
    assert e["body"] == data.decode()
    assert e["CONTENT_TYPE"] == "text/plain"


def test_chunked_upload_environ_has_no_transfer_encoding(front):
    # nginx de-chunks the body and passes the client's Transfer-Encoding as
    # HTTP_TRANSFER_ENCODING; the app gets a plain body of CONTENT_LENGTH
    # bytes, so (as on gangway's --http sockets) the header must not claim
    # otherwise.
    status, _, body = fetch(front, "POST", "/env", pieces(b"x" * 5000, 1000),
                            {"Transfer-Encoding": "chunked"})
    e = json.loads(body)
    assert (status, e["CONTENT_LENGTH"]) == (200, "5000")
    assert "HTTP_TRANSFER_ENCODING" not in e, e.get("HTTP_TRANSFER_ENCODING")


def test_flask_multipart_upload_chunked(flask_server):
    data = random.Random(12).randbytes(2 * MiB + 1)
    boundary = "gangwayChunkedBoundary"
    body = b"".join([
        b"--%s\r\n" % boundary.encode(),
        b'Content-Disposition: form-data; name="field"\r\n\r\nchunked\r\n',
        b"--%s\r\n" % boundary.encode(),
        b'Content-Disposition: form-data; name="file"; filename="c.bin"\r\n',
        b"Content-Type: application/x-test\r\n\r\n", data, b"\r\n",
        b"--%s--\r\n" % boundary.encode(),
    ])
    status, _, out = fetch(flask_server, "POST", "/upload", pieces(body, 300000),
                           {"Content-Type": "multipart/form-data; boundary=" + boundary,
                            "Transfer-Encoding": "chunked"})
    assert status == 200, out[:300]
    assert json.loads(out) == {"filename": "c.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "content_type": "application/x-test", "field": "chunked"}


def test_body_over_client_max_body_size_never_reaches_gangway(front):
    s = front.connect()
    try:
        s.sendall(b"POST /sha256 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % (65 * MiB))
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
    finally:
        s.close()
    assert "/sha256" not in front.read_log()


def test_body_over_limit_body_is_gangway_s_413(tmp_path, nginx):
    gw = start_gangway(tmp_path, "tcp", "--limit-body", "1m", "uw_app")
    try:
        f = Front(nginx([nginx_address(gw)]), gw)
        ok = b"o" * MiB
        status, _, body = fetch(f, "POST", "/sha256", ok)
        assert (status, body) == (200, digest(ok))
        status, _, _ = fetch(f, "POST", "/sha256", b"t" * (10 * MiB))
        assert status == 413
        wait_for(lambda: '"POST /sha256 HTTP/1.1" 413 ' in gw.read_log(), 5,
                 what="gangway's 413 in its log")
    finally:
        gw.stop()


# ---------------------------------------------------------------------------
# 50 MiB downloads (tests/apps/load_app.py)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["content-length", "close-delimited"])
def test_download_50mib(tmp_path, nginx, kind, framing):
    gw = start_gangway(tmp_path, kind, "load_app:application")
    try:
        ngx = nginx([nginx_address(gw, kind == "unix")])
        size = 50 * MiB
        s = ngx.connect(timeout=30)
        try:
            s.sendall(b"GET /download?size=%d&chunked=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                      % (size, framing == "close-delimited"))
            status, headers, total, hexdigest = StreamReader(s).response()
        finally:
            s.close()
    finally:
        gw.stop()
    assert status == 200
    if framing == "content-length":
        assert headers["content-length"] == str(size)
    assert (total, hexdigest) == (size, pattern(size))


# ---------------------------------------------------------------------------
# timeouts and a missing backend
# ---------------------------------------------------------------------------

def test_harakiri_answers_before_uwsgi_read_timeout(tmp_path, nginx):
    gw = start_gangway(tmp_path, "tcp", "--harakiri", "1", "uw_app")
    try:
        ngx = nginx([nginx_address(gw)], read_timeout="10s")
        t0 = time.monotonic()
        status, _, _ = fetch(Front(ngx, gw), "GET", "/spin?s=8", timeout=20)
        took = time.monotonic() - t0
        assert status == 500  # gangway's answer, not nginx's 504
        assert took < 5
        assert fetch(Front(ngx, gw), "GET", "/pid")[0] == 200
    finally:
        gw.stop()


def test_harakiri_kill_of_a_request_stuck_in_c_is_502(tmp_path, nginx):
    # time.sleep cannot be interrupted: after --harakiri-grace the worker is
    # killed, nginx sees the connection close and answers 502.
    gw = start_gangway(tmp_path, "tcp", "--harakiri", "1", "--harakiri-grace", "1", "uw_app")
    try:
        ngx = nginx([nginx_address(gw)], read_timeout="20s")
        t0 = time.monotonic()
        status, _, _ = fetch(Front(ngx, gw), "GET", "/pid?sleep=30", timeout=30)
        took = time.monotonic() - t0
        assert status == 502
        assert took < 8
        # the master replaces the worker
        wait_for(lambda: fetch(Front(ngx, gw), "GET", "/pid")[0] == 200, 15, interval=0.1,
                 what="a new worker serving")
    finally:
        gw.stop()


def test_uwsgi_read_timeout_gives_504(tmp_path, nginx):
    gw = start_gangway(tmp_path, "tcp", "uw_app")
    try:
        ngx = nginx([nginx_address(gw)], read_timeout="1s")
        status, _, _ = fetch(Front(ngx, gw), "GET", "/pid?sleep=2.5", timeout=20)
        assert status == 504
        # the one worker finishes that request (nginx has gone), then serves on
        wait_for(lambda: "GET /pid?sleep=2.5 " in gw.read_log(), 10,
                 what="the slow request to finish")
        assert fetch(Front(ngx, gw), "GET", "/pid")[0] == 200
    finally:
        gw.stop()


def test_refused_peer_is_502(tmp_path, nginx):
    gw = start_gangway(tmp_path, "tcp", "--uwsgi-allow-from", "10.0.0.5", "uw_app")
    try:
        ngx = nginx([nginx_address(gw)])
        assert fetch(Front(ngx, gw), "GET", "/pid")[0] == 502
        wait_for(lambda: "refused a connection from 127.0.0.1 (not in --uwsgi-allow-from)"
                 in gw.read_log(), 5, what="the refusal in gangway's log")
        assert '"GET /pid ' not in gw.read_log()
    finally:
        gw.stop()


def test_buffer_size_too_small_is_502(tmp_path, nginx):
    gw = start_gangway(tmp_path, "tcp", "--buffer-size", "1024", "uw_app")
    try:
        f = Front(nginx([nginx_address(gw)]), gw)
        assert fetch(f, "GET", "/pid", headers={"Cookie": "c=" + "x" * 200})[0] == 200
        assert fetch(f, "GET", "/pid", headers={"Cookie": "c=" + "x" * 2000})[0] == 502
        wait_for(lambda: re.search(r"uwsgi: 127\.0\.0\.1: --buffer-size is smaller than this "
                                   r"request block size: \d+; closing", gw.read_log()), 5,
                 what="the refusal in gangway's log")
        assert fetch(f, "GET", "/pid")[0] == 200
    finally:
        gw.stop()


def test_backend_down_is_502(nginx):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        ngx = nginx(["127.0.0.1:%d" % s.getsockname()[1]])
        status, _, _ = fetch(ngx, "GET", "/pid")
    finally:
        s.close()
    assert status == 502


# ---------------------------------------------------------------------------
# scale-out: two gangway instances behind one upstream
# ---------------------------------------------------------------------------


def kill_instance(srv):
    """SIGKILL one gangway: its master and every worker, like a host going away.

    The master is stopped first, so it forks nothing new and reaps nothing:
    its workers' pids stay theirs (zombies at worst) while they are killed.
    """
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        workers = children(srv.pid)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(10)
    assert workers, "no workers under master %d" % srv.pid
    return workers


class Load:
    """Threads sending GET /pid on fresh connections until a deadline or a count."""

    def __init__(self, front, threads=4, path="/pid?sleep=0.005"):
        self.front, self.path, self.nthreads = front, path, threads
        self.results = []  # (start, end, ok, "pid ppid" or the error)
        self.lock = threading.Lock()
        self.stop_at = self.max_requests = None

    def _one(self):
        t0 = time.monotonic()
        try:
            status, _, body = fetch(self.front, "GET", self.path, timeout=10)
            ok, what = status == 200, body.decode() if status == 200 else "status %d" % status
        except Exception as e:  # noqa: BLE001 - every failure is a result
            ok, what = False, repr(e)
        return t0, time.monotonic(), ok, what

    def _run(self):
        while time.monotonic() < self.stop_at:
            with self.lock:
                if len(self.results) >= self.max_requests:
                    return
            r = self._one()
            with self.lock:
                self.results.append(r)

    def run(self, seconds, max_requests=5000, during=None):
        """Runs the load for `seconds`; during(load) runs in this thread meanwhile."""
        self.results, self.max_requests = [], max_requests
        self.stop_at = time.monotonic() + seconds
        ts = [threading.Thread(target=self._run, daemon=True) for _ in range(self.nthreads)]
        for t in ts:
            t.start()
        out = during(self) if during else None
        for t in ts:
            t.join(seconds + 30)
            assert not t.is_alive()
        return out


def masters_of(results):
    return {int(w.split()[1]) for _, _, ok, w in results if ok}


def test_scale_out_failover_and_return(tmp_path, nginx):
    # Two instances on two ports stand for two hosts.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_gangway(tmp_path / "a", "tcp", "-p", "2", "uw_app")
    servers = [a]
    try:
        b = start_gangway(tmp_path / "b", "tcp", "-p", "2", "uw_app")
        servers.append(b)
        port_a = uwsgi_tcp(a)[1]
        ngx = nginx([nginx_address(a), nginx_address(b)], fail_timeout="1s",
                    connect_timeout="1s")
        assert "upstream gangway" in ngx.config
        assert "uwsgi_next_upstream error timeout;" in ngx.config
        load = Load(Front(ngx, a))

        # 1. balanced: both instances serve, each a fair share
        load.run(1.5, max_requests=300)
        res = load.results
        assert res and all(ok for _, _, ok, _ in res), [r for r in res if not r[2]][:5]
        per = {m: sum(1 for _, _, ok, w in res if ok and int(w.split()[1]) == m)
               for m in (a.pid, b.pid)}
        assert masters_of(res) == {a.pid, b.pid}
        assert min(per.values()) >= len(res) // 4, per

        # 2. a dies (SIGKILL to its master and workers) under load
        marks = {}

        def kill_a(ld):
            wait_for(lambda: len(ld.results) >= 40, 10, what="load before the kill")
            marks["start"] = time.monotonic()
            marks["workers"] = kill_instance(a)
            marks["end"] = time.monotonic()
        load.run(4.0, during=kill_a)
        res = load.results
        failed = [r for r in res if not r[2]]
        assert len(failed) <= load.nthreads, failed
        # only requests already in flight at the kill may fail
        assert all(t0 <= marks["end"] for t0, _, _, _ in failed), (marks, failed)
        late = [r for r in res if r[0] >= marks["end"] + 1.0]
        assert len(late) >= 20, "too little load after the kill (%d)" % len(late)
        assert all(ok for _, _, ok, _ in late), [r for r in late if not r[2]][:5]
        assert masters_of(late) == {b.pid}
        print("scale-out: %d requests around the kill, %d failed, %d after kill+1s"
              % (len(res), len(failed), len(late)))

        # 3. a comes back on the same port and takes traffic again
        a2 = start_gangway(tmp_path / "a", "tcp", "-p", "2", "uw_app",
                           addr="127.0.0.1:%d" % port_a)
        servers.append(a2)
        seen = {}

        def until_a2(ld):
            wait_for(lambda: a2.pid in masters_of(list(ld.results)), 10, interval=0.05,
                     what="nginx sending traffic to the restarted instance")
            seen["at"] = time.monotonic()
            ld.stop_at = min(ld.stop_at, seen["at"] + 1.0)
        load.run(12.0, during=until_a2)
        res = load.results
        assert all(ok for _, _, ok, _ in res), [r for r in res if not r[2]][:5]
        assert masters_of(r for r in res if r[0] >= seen["at"]) == {a2.pid, b.pid}
    finally:
        for s in servers:
            s.stop()


# ---------------------------------------------------------------------------
# the documented configs are the tested ones
# ---------------------------------------------------------------------------

DOC = os.path.join(ROOT, "docs", "deploy-nginx.md")

# (what docs/deploy-nginx.md shows, and the same template as the tests run it)
DOC_EXAMPLES = [
    dict(listen="80", server_name="example.com", backends=["unix:/run/gangway/app.sock"],
         static_root="/srv/app/static"),
    dict(listen="80", server_name="example.com", backends=["127.0.0.1:8001"],
         static_root="/srv/app/static"),
    dict(listen="80", server_name="example.com",
         backends=["10.0.0.11:8001", "10.0.0.12:8001", "10.0.0.13:8001"],
         static_root="/srv/app/static", read_timeout="60s", connect_timeout="1s",
         fail_timeout="10s"),
    dict(listen="80", server_name="example.com", backends=["unix:/run/gangway/app.sock"],
         behind_tls=True),
    dict(listen="80", server_name="example.com", backends=["127.0.0.1:8001"], proxy_pass=True),
]


def test_docs_show_the_tested_configs():
    with open(DOC) as f:
        doc = f.read()
    for ex in DOC_EXAMPLES:
        ex = dict(ex)
        text = site_config(ex.pop("listen"), ex.pop("backends"), **ex)
        assert text in doc, "docs/deploy-nginx.md lacks this rendering of tests/nginx.py:\n" + text
