"""HAProxy in front of gangway, for tests/test_haproxy.py: Debian's haproxy
started in the foreground (-db) on a generated config, stopped by its PID.

site_config() renders the configuration docs/deploy-haproxy.md shows (a
test checks the document holds the same text): HTTP health checks on a
health path, the PROXY protocol v2 to gangway (health checks too, as
LOCAL; the SSL TLV says whether the client spoke TLS), round robin, retries
on another server for what never reached the app, and optionally TLS
terminated by HAProxy.
"""
import os
import shutil
import signal
import socket
import subprocess

from conftest import wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port(host="127.0.0.1"):
    """A port nothing listens on now (bound once, then let go)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def site_config(bind, backends, tls_bind=None, cert=None, health="/health", inter="200ms"):
    """The frontend and backend sections (the part a site writes itself)."""
    lines = ["frontend www",
             "    bind %s" % bind]
    if tls_bind:
        lines.append("    bind %s ssl crt %s" % (tls_bind, cert))
    lines += ["    default_backend gangway",
              "",
              "backend gangway",
              "    balance roundrobin",
              "    option httpchk GET %s" % health,
              "    http-check expect status 200",
              "    # a request that never reached a server goes to another one",
              "    retries 3",
              "    option redispatch 1",
              "    retry-on conn-failure empty-response response-timeout",
              "    # gangway's --http-proxy-protocol listeners: the client's address,",
              "    # and whether it spoke TLS here, travel in a PROXY v2 header",
              "    # (health checks send LOCAL)",
              "    default-server check inter %s fall 2 rise 2 send-proxy-v2-ssl check-send-proxy"
              % inter]
    for i, b in enumerate(backends):
        lines.append("    server app%d %s" % (i + 1, b))
    return "\n".join(lines) + "\n"


GLOBAL = """global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 2s
    # a worker busy with a slow request answers the check late, not never
    timeout check 2s

"""


class HAProxy:
    def __init__(self, tmp_path, config):
        self.config = config
        self.path = os.path.join(str(tmp_path), "haproxy.cfg")
        with open(self.path, "w") as f:
            f.write(config)
        self.log_path = os.path.join(str(tmp_path), "haproxy.log")
        self.log = open(self.log_path, "wb")
        check = subprocess.run([HAPROXY, "-c", "-f", self.path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
        assert check.returncode == 0, check.stdout.decode(errors="replace") + "\n" + config
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.path], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_listening(self, port):
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited:\n" + self.read_log())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 15, interval=0.05, what="haproxy listening")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def has_ssl():
    try:
        out = subprocess.run([HAPROXY, "-vv"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=30).stdout.decode(errors="replace")
    except OSError:
        return False
    return "USE_OPENSSL=1" in out


def self_signed(tmp_path):
    """A certificate and key for 127.0.0.1 in one PEM (what `crt` takes)."""
    key, crt = str(tmp_path / "key.pem"), str(tmp_path / "crt.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    pem = str(tmp_path / "site.pem")
    with open(pem, "w") as out:
        for p in (crt, key):
            with open(p) as f:
                out.write(f.read())
    return pem
