"""A real nginx (Debian's nginx-light) in front of gangway's --uwsgi sockets.

The site part of the configuration (an optional `upstream` block and the
`server` block) is rendered by site_config() from the template text below.
docs/deploy-nginx.md shows the same templates rendered with production values
(test_nginx.py::test_docs_show_the_tested_configs checks that every example
there is exactly what site_config() produces), so the documented configs are
the ones these tests run. Only the main/http wrapper around the site is
test-specific: daemon off, one worker, every path (pid, error log, temp
directories) inside the test's tmp_path, no access log.

nginx listens on a free 127.0.0.1 port: the port is picked by binding port 0
and closing; if nginx's error log then reports that its bind() failed (some
other process took the port meanwhile), that nginx is stopped and the start is
retried with a new port. nginx runs in its own session and is stopped by its
pid (SIGQUIT, then SIGKILL to its process group after a bounded wait).
"""
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# ---------------------------------------------------------------------------
# The site templates (docs/deploy-nginx.md shows them rendered).
# @name@ marks a value; nginx's own $variables are left alone.
# ---------------------------------------------------------------------------

UPSTREAM = """\
upstream @upstream@ {
@servers@}
"""

UPSTREAM_SERVER = "    server @backend@ max_fails=1 fail_timeout=@fail_timeout@;\n"

SERVER = """\
server {
    listen @listen@;
    server_name @server_name@;
    client_max_body_size @max_body@;

@static@    location / {
        include /etc/nginx/uwsgi_params;
@https@        uwsgi_pass @pass@;
        uwsgi_read_timeout @read_timeout@;
@failover@    }
}
"""

STATIC = """\
    location /static/ {
        alias @static_root@/;
    }

"""

FAILOVER = """\
        uwsgi_next_upstream error timeout;
        uwsgi_connect_timeout @connect_timeout@;
"""


# The HTTP alternative to uwsgi_pass: proxy_pass to gangway's --http
# listener over keep-alive connections, the client in X-Forwarded-For and
# the scheme in X-Forwarded-Proto (gangway believes them from nginx's
# address only: --forwarded-allow-ips).
PROXY_PASS = """\
upstream @upstream@ {
    server @backend@;
    keepalive 16;
}

server {
    listen @listen@;
    server_name @server_name@;
    client_max_body_size @max_body@;

    location / {
        proxy_pass http://@upstream@;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout @read_timeout@;
    }
}
"""


def _fill(template, **values):
    def sub(m):
        return str(values[m.group(1)])
    return re.sub(r"@([a-z_]+)@", sub, template)


def site_config(listen, backends, server_name="localhost", static_root=None,
                behind_tls=False, max_body="64m", read_timeout="60s", connect_timeout="1s",
                fail_timeout="10s", upstream="gangway", proxy_pass=False):
    """The upstream (with several backends) and server blocks, as text.

    backends: nginx addresses of gangway's --uwsgi sockets ("127.0.0.1:8001",
    "unix:/run/gangway/app.sock"). One backend is passed to directly; several
    become an upstream block with fail-over to the next one. behind_tls: the
    app is told HTTPS=on (wsgi.url_scheme 'https').
    """
    if proxy_pass:  # backends[0]: gangway's --http address
        return _fill(PROXY_PASS, upstream=upstream + "_http", backend=backends[0], listen=listen,
                     server_name=server_name, max_body=max_body, read_timeout=read_timeout)
    out = ""
    if len(backends) > 1:
        servers = "".join(_fill(UPSTREAM_SERVER, backend=b, fail_timeout=fail_timeout)
                          for b in backends)
        out += _fill(UPSTREAM, upstream=upstream, servers=servers) + "\n"
        pass_to = upstream
        failover = _fill(FAILOVER, connect_timeout=connect_timeout)
    else:
        pass_to = backends[0]
        failover = ""
    static = _fill(STATIC, static_root=static_root) if static_root else ""
    # TLS ends in front of nginx (at a load balancer): nginx sees plain HTTP,
    # $https is empty and uwsgi_params sends no HTTPS, so say it explicitly.
    https = "        uwsgi_param HTTPS on;\n" if behind_tls else ""
    out += _fill(SERVER, listen=listen, server_name=server_name, max_body=max_body,
                 static=static, read_timeout=read_timeout, failover=failover, https=https,
                 **{"pass": pass_to})
    return out


# The test-only wrapper: everything nginx writes stays in @dir@. The second
# server answers /nginx-ping (Host: nginx-ping.invalid) without gangway, so
# the start-up wait never depends on the backends.
MAIN = """\
# written by tests/nginx.py
daemon off;
master_process on;
worker_processes 1;
worker_shutdown_timeout 5s;
@user@pid @dir@/nginx.pid;
error_log @dir@/error.log notice;

events {
    worker_connections 1024;
}

http {
    access_log off;
    client_body_temp_path @dir@/client_body_temp;
    proxy_temp_path @dir@/proxy_temp;
    fastcgi_temp_path @dir@/fastcgi_temp;
    uwsgi_temp_path @dir@/uwsgi_temp;
    scgi_temp_path @dir@/scgi_temp;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;

@site@
    server {
        listen @listen@;
        server_name nginx-ping.invalid;
        location = /nginx-ping {
            return 204;
        }
    }
}
"""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _indent(text, n=4):
    return "".join((" " * n + line) if line.strip() else line
                   for line in text.splitlines(True))


class Nginx:
    """One nginx master (+1 worker) serving site_config(**site) on 127.0.0.1."""

    _seq = itertools.count(1)

    def __init__(self, tmp_path, backends, listen_options="", **site):
        self.dir = os.path.join(str(tmp_path), "nginx-%d" % next(Nginx._seq))
        os.makedirs(self.dir)
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.backends = list(backends)
        self.listen_options = listen_options  # e.g. "http2" (h2c, prior knowledge)
        self.site = site
        self.proc = None
        self.port = None
        self.config = None

    # -- life cycle --------------------------------------------------------

    def write_config(self, port):
        user = ""
        if os.geteuid() == 0:
            # As root nginx would run its worker as nobody, who cannot enter
            # tmp_path (0700) to reach a unix socket or the temp directories.
            user = "user root;\n"
        listen = ("127.0.0.1:%d %s" % (port, self.listen_options)).strip()
        site = site_config(listen, self.backends, **self.site)
        self.config = _fill(MAIN, user=user, dir=self.dir, listen=listen,
                            site=_indent(site))
        with open(self.conf_path, "w") as f:
            f.write(self.config)

    def read_error_log(self):
        try:
            with open(self.error_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout=15):
        for attempt in range(3):
            port = free_port()
            self.write_config(port)
            if os.path.exists(self.error_log):
                os.rename(self.error_log, self.error_log + ".%d" % attempt)
            with open(os.path.join(self.dir, "stderr.%d" % attempt), "wb") as err:
                self.proc = subprocess.Popen(
                    [NGINX, "-c", self.conf_path, "-e", self.error_log],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    start_new_session=True)
            state = wait_for(lambda: self._state(port), timeout, what="nginx to start")
            if state == "ready":
                self.port = port
                self._wait_answers(timeout)
                return self
            self._kill()  # "bind failed": another process took the port
        raise RuntimeError("nginx could not bind a free port 3 times:\n" + self.read_error_log())

    def _state(self, port):
        log = self.read_error_log()
        if re.search(r"bind\(\) to 127\.0\.0\.1:%d failed" % port, log):
            return "bind failed"
        if self.proc.poll() is not None:
            raise RuntimeError("nginx exited %s:\n%s" % (self.proc.returncode, log))
        if "[emerg]" in log:
            raise RuntimeError("nginx: " + log)
        # Logged once every listening socket is bound and the worker forked.
        return "start worker process " in log and "ready"

    def _wait_answers(self, timeout):
        def answers():
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            except OSError:
                return False
            try:
                s.settimeout(2)
                if "http2" in self.listen_options.split():
                    # h2c: the client preface and an empty SETTINGS frame; a
                    # serving nginx answers with its own SETTINGS frame (type 4)
                    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                              b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                    head = s.recv(9)
                    return len(head) >= 4 and head[3] == 4
                s.sendall(b"GET /nginx-ping HTTP/1.1\r\nHost: nginx-ping.invalid\r\n"
                          b"Connection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 204")
            except OSError:
                return False
            finally:
                s.close()
        wait_for(answers, timeout, interval=0.02, what="nginx to answer")

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: it and its worker
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self, timeout=10):
        if not self.proc:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()  # the group is signalled before the master is reaped
        return self.proc.returncode

    # -- client side ---------------------------------------------------------

    @property
    def host(self):
        return "127.0.0.1"

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def connect(self, timeout=10, source=None):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)


@pytest.fixture
def nginx(tmp_path):
    """nginx(backends, **site_config options) -> a started Nginx, stopped after the test."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    started = []

    def start(backends, **options):
        n = Nginx(tmp_path, backends, **options)
        started.append(n)
        return n.start()

    yield start
    for n in started:
        n.stop()


# ---------------------------------------------------------------------------
# The gangway side: where its --uwsgi sockets listen (from its log).
# ---------------------------------------------------------------------------

UWSGI_TCP_RE = re.compile(r"listening on uwsgi://(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d+)")
UWSGI_UNIX_RE = re.compile(r"listening on uwsgi://unix:(\S+)")


def uwsgi_tcp(server):
    """(host, port) of the server's first TCP --uwsgi listener."""
    m = UWSGI_TCP_RE.search(server.read_log())
    assert m, "no uwsgi TCP listener in the log:\n" + server.read_log()
    return m.group(1) or m.group(2), int(m.group(3))


def uwsgi_unix(server):
    m = UWSGI_UNIX_RE.search(server.read_log())
    assert m, "no uwsgi unix listener in the log:\n" + server.read_log()
    return m.group(1)


def nginx_address(server, unix=False):
    """The server's --uwsgi socket as nginx's uwsgi_pass / upstream server spells it."""
    if unix:
        return "unix:" + uwsgi_unix(server)
    host, port = uwsgi_tcp(server)
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
