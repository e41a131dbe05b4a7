"""Shared pieces of bench/run.py and bench/instructions.py.

How every server is started (one worker, 127.0.0.1 only), how it is found
ready, how its processes are accounted and how it is stopped -- by PID, never
by name. Every wait is bounded in time and every loop in count.
"""
import datetime
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
WORK = os.path.join(BENCH, "work")          # scratch, git-ignored
RESULTS = os.path.join(BENCH, "results")
APPS_REL = "bench/apps"                      # servers run with cwd=ROOT
STATIC_REL = "bench/work/static"
# GW_TEST_BIN overrides ./gangway (as in tests/conftest.py; not a GANGWAY_
# name, which gangway would read as an option)
GANGWAY = os.environ.get("GW_TEST_BIN") or os.path.join(ROOT, "gangway")
PYTHON = "/usr/bin/python3"
HZ = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"   # taskset -c 0 for every server process
CLIENT_CPU = "1"   # taskset -c 1 for wrk and our Python clients

HELLO = b"Hello, World!"

# module, callable, for each app in bench/apps
APPS = {
    "hello": ("hello", "application"),
    "flask": ("flaskapp", "app"),
    "echo": ("echo", "application"),
    "io20": ("io20", "application"),
    "pgsite": ("pgsite.wsgi", "application"),
}
# apps that live elsewhere than bench/apps (relative to ROOT): the Django +
# PostgreSQL site is the test suite's own (tests/test_django_pg.py)
APP_DIRS = {"pgsite": "tests/apps/pgsite"}


def app_dir(app):
    return APP_DIRS.get(app, APPS_REL)

SERVER_LABELS = {
    "gangway": "gangway",
    "uwsgi": "uWSGI",
    "gunicorn": "Gunicorn",
    "waitress": "waitress",
    "nginx": "nginx",
}


class Skip(Exception):
    """A row that cannot run here; the message goes to the report."""


# --------------------------------------------------------------- environment

def raise_nofile(want=65536):
    """Raise RLIMIT_NOFILE (inherited by the servers we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_self(cpu=CLIENT_CPU):
    """Keep the harness (and the Python clients) off the server's CPU."""
    try:
        os.sched_setaffinity(0, {int(cpu)})
    except (OSError, ValueError):
        pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def sh(argv, timeout=10):
    """Output of a short command, '' when it fails."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, cwd=ROOT)
        return p.stdout.decode("utf-8", "replace").strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit():
    c = sh(["git", "rev-parse", "--short=10", "HEAD"]) or "unknown"
    if sh(["git", "status", "--porcelain", "--untracked-files=no"]):
        c += "-dirty"
    return c


def machine_info():
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kb / 1048576)
    except (OSError, ValueError, IndexError):
        pass
    debian = ""
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        pass
    hv = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Hypervisor vendor:"):
            hv = line.split(":", 1)[1].strip()
    return {
        "cpu": model or "unknown",
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "memory": mem,
        "debian": debian,
        "hypervisor": hv,
    }


def dpkg_version(pkg):
    return sh(["dpkg-query", "-W", "-f=${Version}", pkg]) or "not installed"


def gangway_version():
    """Commit of the tree, and whether the binary is older than its sources."""
    c = "commit " + git_commit()
    if not os.access(GANGWAY, os.X_OK):
        return c + " (binary not built)"
    built = os.path.getmtime(GANGWAY)
    c += ", binary %s built %s" % (os.path.relpath(GANGWAY, ROOT),
                                   time.strftime("%Y-%m-%d %H:%M", time.localtime(built)))
    newer = []
    src = os.path.join(ROOT, "src")
    for d, _, names in sorted(os.walk(src)):
        for name in sorted(names):
            if name.endswith((".c", ".h")) and os.path.getmtime(os.path.join(d, name)) > built:
                newer.append(os.path.relpath(os.path.join(d, name), src))
    if newer:
        c += " (STALE: older than src/%s)" % ", src/".join(newer[:5])
    return c


def versions():
    v = {
        "gangway": gangway_version(),
        "uWSGI": sh(["uwsgi", "--version"]) + " (uwsgi-plugin-python3 %s)" % dpkg_version("uwsgi-plugin-python3"),
        "Gunicorn": dpkg_version("gunicorn"),
        "waitress": dpkg_version("python3-waitress"),
        "Flask": dpkg_version("python3-flask"),
        "nginx": dpkg_version("nginx-light"),
        "wrk": dpkg_version("wrk"),
        "Python": sh([PYTHON, "-c", "import sys; print(sys.version.split()[0])"]),
    }
    return v


def clean_work(patterns):
    """Drop generated server dirs of earlier runs (bench/work/<pattern>)."""
    import glob
    for pat in patterns:
        for d in glob.glob(os.path.join(WORK, pat)):
            if os.path.isdir(d):
                shutil.rmtree(d, ignore_errors=True)


def ensure_static_files():
    """bench/work/static/{4k,1m}.bin: deterministic pseudo-random bytes."""
    d = os.path.join(ROOT, STATIC_REL)
    os.makedirs(d, exist_ok=True)
    files = {}
    for name, size in (("4k.bin", 4096), ("1m.bin", 1048576)):
        path = os.path.join(d, name)
        data = _pattern(size)
        cur = None
        if os.path.exists(path):
            with open(path, "rb") as f:
                cur = f.read()
        if cur != data:
            with open(path, "wb") as f:
                f.write(data)
        files[name] = data
    return files


def _pattern(n):
    # xorshift bytes: incompressible enough, no randomness between runs
    out = bytearray(n)
    x = 0x2545F4914F6CDD1D
    for i in range(0, n, 8):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out[i:i + 8] = x.to_bytes(8, "little")[: n - i]
    return bytes(out)


# ------------------------------------------------------------ /proc accounting

def _stat(pid):
    """(ppid, utime+stime+cutime+cstime ticks, starttime) or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read().decode("latin-1")
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field n is rest[n - 3]
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    own = int(rest[11]) + int(rest[12])
    return ppid, ticks, int(rest[19]), own


def process_tree(roots):
    """{pid: (ticks, starttime, own_ticks)} for the roots and all their descendants."""
    children = {}
    info = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is None:
            continue
        info[int(name)] = st
        children.setdefault(st[0], []).append(int(name))
    out = {}
    todo = [r for r in roots if r in info]
    for _ in range(100000):
        if not todo:
            break
        p = todo.pop()
        if p in out:
            continue
        out[p] = (info[p][1], info[p][2], info[p][3])
        todo.extend(children.get(p, ()))
    return out


def cpu_delta(before, after):
    """CPU seconds used by the tree between two snapshots, and the busiest pid.

    Each live process counts utime+stime plus cutime+cstime of the children it
    reaped, so a worker that died in between is still counted once, in its
    parent: the difference of the two sums is exact either way."""
    total = sum(v[0] for v in after.values()) - sum(v[0] for v in before.values())
    busiest, most = None, -1
    for pid, (ticks, start, own) in after.items():
        b = before.get(pid)
        d = own - b[2] if b is not None and b[1] == start else own
        if d > most:
            busiest, most = pid, d
    return total / HZ, busiest


def worker_rss_kib(root):
    """{pid: VmRSS KiB} of root's direct children: the workers of gangway's,
    uWSGI's and Gunicorn's master (the master itself is not counted)."""
    out = {}
    for pid in process_tree([root]):
        st = _stat(pid)
        if pid != root and st is not None and st[0] == root:
            r = rss_kib(pid)
            if r is not None:
                out[pid] = r
    return out


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ------------------------------------------------------------- HTTP clients

def _read_response(sock, deadline, method="GET"):
    """(status, headers dict, body, closed) for one HTTP/1.x response."""
    buf = b""
    for _ in range(1000000):
        if b"\r\n\r\n" in buf:
            break
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ConnectionError("closed before headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    closed = False
    if method == "HEAD" or status in (204, 304):
        return status, headers, b"", closed
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = b""
        for _ in range(1000000):
            while b"\r\n" not in body:
                c = _recv(sock, deadline)
                if not c:
                    raise ConnectionError("closed in chunked body")
                body += c
            line, body = body.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(body) < size + 2:
                c = _recv(sock, deadline)
                if not c:
                    raise ConnectionError("closed in chunk")
                body += c
            if size == 0:
                break
            out += body[:size]
            body = body[size + 2:]
        return status, headers, out, closed
    if "content-length" in headers:
        n = int(headers["content-length"])
        for _ in range(1000000):
            if len(body) >= n:
                break
            c = _recv(sock, deadline)
            if not c:
                raise ConnectionError("closed in body")
            body += c
        return status, headers, body[:n], closed
    for _ in range(1000000):
        c = _recv(sock, deadline)
        if not c:
            closed = True
            break
        body += c
    return status, headers, body, closed


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("read timed out")
    sock.settimeout(left)
    return sock.recv(1 << 20)


def http_request(port, path="/", method="GET", body=None, headers=None, timeout=5.0,
                 host="127.0.0.1", tls=False):
    """One request on a new connection (tls: HTTPS, the bench certificate
    not verified): (status, headers, body)."""
    deadline = time.monotonic() + timeout
    s = socket.create_connection((host, port), timeout=timeout)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    try:
        s.sendall(build_request(path, method, body, headers))
        st, hd, b, _ = _read_response(s, deadline, method)
        return st, hd, b
    finally:
        s.close()


def build_request(path="/", method="GET", body=None, headers=None, keepalive=True):
    h = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        h.append("%s: %s" % (k, v))
    if body is not None:
        h.append("Content-Length: %d" % len(body))
    if not keepalive:
        h.append("Connection: close")
    return ("\r\n".join(h) + "\r\n\r\n").encode("latin-1") + (body or b"")


class KeepAliveClient:
    """Sends requests one after another on one connection."""

    def __init__(self, port, timeout=30.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reconnects = 0

    def get(self, path="/"):
        deadline = time.monotonic() + self.timeout
        self.sock.sendall(build_request(path))
        st, hd, body, closed = _read_response(self.sock, deadline)
        if closed or hd.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.reconnects += 1
        return st, body

    def close(self):
        self.sock.close()


# ----------------------------------------------------------------- servers

class Launch:
    """How to start one server: argv (without taskset), the signal that stops
    it, and an optional readiness marker in its log."""

    def __init__(self, name, argv, stop_sig=signal.SIGTERM, ready_marker=None,
                 cwd=ROOT, note="", env=None):
        self.name, self.argv, self.stop_sig = name, argv, stop_sig
        self.ready_marker, self.cwd, self.note = ready_marker, cwd, note
        self.env = env or {}  # added to the environment (the database's PG* variables)
        self.config = None   # generated config file text (nginx)

    def display(self):
        import shlex
        pre = "" if self.cwd == ROOT else "cd %s && " % os.path.relpath(self.cwd, ROOT)
        env = ["%s=%s" % kv for kv in sorted(self.env.items())]
        return pre + " ".join(shlex.quote(a) for a in env + ["taskset", "-c", SERVER_CPU] + self.argv)


# The TLS rows' certificate and key: ECDSA P-256 for localhost, made once by
# the openssl command in bench/work/tls/ (both servers get the same).
TLS_DIR = os.path.join(WORK, "tls")


def ensure_tls_cert():
    cert, key = os.path.join(TLS_DIR, "cert.pem"), os.path.join(TLS_DIR, "key.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        os.makedirs(TLS_DIR, exist_ok=True)
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], timeout=30)
        os.chmod(key, 0o600)
    return cert, key


def gangway_launch(app, port, static=False, uwsgi_port=None, extra=(), tls=False):
    mod, call = APPS[app]
    rel = os.path.relpath(GANGWAY, ROOT)
    argv = ["./" + rel if not rel.startswith("..") else GANGWAY]
    if uwsgi_port:
        argv += ["--uwsgi", "127.0.0.1:%d" % uwsgi_port]
    elif tls:
        argv += ["--https", "127.0.0.1:%d,%s,%s" % ((port,) + ensure_tls_cert())]
    else:
        argv += ["--http", "127.0.0.1:%d" % port]
    argv += ["--disable-logging", "--chdir", APPS_REL]
    if static:
        argv += ["--static-map", "/static=" + STATIC_REL]
    argv += list(extra) + ["%s:%s" % (mod, call)]
    return Launch("gangway", argv, signal.SIGTERM, ready_marker="ready")


def uwsgi_launch(app, port, static=False, uwsgi_port=None, http11=False, master=True):
    mod, call = APPS[app]
    argv = ["uwsgi", "--plugin", "python3"]
    if uwsgi_port:
        argv += ["--socket", "127.0.0.1:%d" % uwsgi_port]
    else:
        argv += ["--http11-socket" if http11 else "--http-socket", "127.0.0.1:%d" % port]
    if master:
        argv += ["--master"]
    argv += ["--processes", "1", "--disable-logging", "--die-on-term", "--need-app",
             "--wsgi-file", "%s/%s.py" % (APPS_REL, mod), "--callable", call]
    if static:
        argv += ["--static-map", "/static=" + STATIC_REL]
    return Launch("uwsgi", argv, signal.SIGTERM)


def threaded_launch(server, app, port, procs, threads, extra=(), env=None):
    """server with procs processes x threads threads each, the peers' own
    threaded modes: uWSGI --processes --threads (--http-socket, as in the other
    rows), Gunicorn's gthread worker, gangway --workers --threads."""
    mod, call = APPS[app]
    d = app_dir(app)
    if server == "gangway":
        rel = os.path.relpath(GANGWAY, ROOT)
        argv = ["./" + rel if not rel.startswith("..") else GANGWAY,
                "--http", "127.0.0.1:%d" % port, "--disable-logging", "--chdir", d,
                "--workers", str(procs), "--threads", str(threads)]
        argv += list(extra) + ["%s:%s" % (mod, call)]
        return Launch("gangway", argv, signal.SIGTERM, ready_marker="ready", env=env)
    if server == "uwsgi":
        argv = ["uwsgi", "--plugin", "python3", "--http-socket", "127.0.0.1:%d" % port,
                "--master", "--processes", str(procs), "--threads", str(threads),
                "--disable-logging", "--die-on-term", "--need-app", "--chdir", d,
                "--pythonpath", ".", "--module", "%s:%s" % (mod, call)]
        return Launch("uwsgi", argv, signal.SIGTERM, env=env)
    if server == "gunicorn":
        argv = ["gunicorn", "--workers", str(procs), "--worker-class", "gthread",
                "--threads", str(threads), "--bind", "127.0.0.1:%d" % port, "--chdir", d,
                "%s:%s" % (mod, call)]
        return Launch("gunicorn", argv, signal.SIGTERM, env=env)
    raise ValueError(server)


def gunicorn_launch(app, port):
    mod, call = APPS[app]
    argv = ["gunicorn", "--workers", "1", "--worker-class", "sync", "--bind",
            "127.0.0.1:%d" % port, "--chdir", APPS_REL, "%s:%s" % (mod, call)]
    return Launch("gunicorn", argv, signal.SIGTERM)


def waitress_launch(app, port):
    mod, call = APPS[app]
    argv = ["waitress-serve", "--listen=127.0.0.1:%d" % port, "%s:%s" % (mod, call)]
    return Launch("waitress", argv, signal.SIGTERM, cwd=os.path.join(ROOT, APPS_REL))


UWSGI_PARAMS = """
        uwsgi_param QUERY_STRING $query_string;
        uwsgi_param REQUEST_METHOD $request_method;
        uwsgi_param CONTENT_TYPE $content_type;
        uwsgi_param CONTENT_LENGTH $content_length;
        uwsgi_param REQUEST_URI $request_uri;
        uwsgi_param PATH_INFO $document_uri;
        uwsgi_param DOCUMENT_ROOT $document_root;
        uwsgi_param SERVER_PROTOCOL $server_protocol;
        uwsgi_param REQUEST_SCHEME $scheme;
        uwsgi_param HTTPS $https if_not_empty;
        uwsgi_param REMOTE_ADDR $remote_addr;
        uwsgi_param REMOTE_PORT $remote_port;
        uwsgi_param SERVER_PORT $server_port;
        uwsgi_param SERVER_NAME $server_name;"""


def nginx_launch(port, uwsgi_port=None, tag="nginx", rlimit=True, keepalive_requests=None,
                 tls=False, tls_tickets=True):
    """nginx with a generated config in bench/work/<tag>-<port>/: its own pid,
    error log and temp paths, daemon off, one worker, no access log. tls:
    the same certificate, versions and ciphers as gangway's defaults, tickets
    on (nginx's default) unless tls_tickets is false (and no session cache,
    nginx's default: every handshake full)."""
    d = os.path.join(WORK, "%s-%d" % (tag, port))
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    static_dir = os.path.join(ROOT, STATIC_REL)
    if uwsgi_port:
        root_loc = """        location / {
            uwsgi_pass 127.0.0.1:%d;%s
        }""" % (uwsgi_port, UWSGI_PARAMS)
    else:
        root_loc = """        location = / {
            return 200 "Hello, World!";
        }"""
    conf = """# generated by bench/benchlib.py
daemon off;
master_process on;
worker_processes 1;
{rlimit}pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
{kareq}    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
{tls_conf}{root_loc}
        location /static/ {{
            alias {static}/;
        }}
    }}
}}
""".format(d=d, port=port, root_loc=root_loc, static=static_dir,
           ssl=" ssl" if tls else "",
           tls_conf=(_nginx_tls() + ("" if tls_tickets else "        ssl_session_tickets off;\n"))
           if tls else "",
           rlimit="worker_rlimit_nofile 16384;\n" if rlimit else "",
           kareq="    keepalive_requests %d;\n" % keepalive_requests if keepalive_requests else "")
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    argv = ["nginx", "-e", os.path.join(d, "error.log"), "-p", d + "/", "-c", path]
    # SIGTERM is nginx's "fast shutdown": the master stops its worker and exits.
    la = Launch("nginx", argv, signal.SIGTERM)
    la.config = conf
    return la


def _nginx_tls():
    cert, key = ensure_tls_cert()
    return ("        ssl_certificate %s;\n        ssl_certificate_key %s;\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
            "        ssl_prefer_server_ciphers on;\n" % (cert, key))


class Server:
    """A started server: one root PID (taskset execs into the server)."""

    def __init__(self, launch, log_name, wrap=(), env=None):
        self.launch = launch
        os.makedirs(WORK, exist_ok=True)
        self.log_path = os.path.join(WORK, log_name)
        self.log = open(self.log_path, "wb")
        # taskset first: it execs into the wrapper (valgrind) or the server
        argv = ["taskset", "-c", SERVER_CPU] + list(wrap) + launch.argv
        e = dict(os.environ)
        e.update(launch.env)
        e.update(env or {})
        try:
            self.proc = subprocess.Popen(argv, cwd=launch.cwd, stdout=self.log,
                                         stderr=subprocess.STDOUT, env=e,
                                         stdin=subprocess.DEVNULL)
        except OSError as ex:
            self.log.close()
            raise Skip("cannot start %s: %s" % (launch.argv[0], ex))
        self.pid = self.proc.pid
        self.known = {}   # pid -> starttime of every process seen in its tree

    def alive(self):
        return self.proc.poll() is None

    def read_log(self, limit=200000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=3):
        lines = [l for l in self.read_log(20000).splitlines() if l.strip()]
        return " | ".join(lines[-n:])

    def tree(self):
        t = process_tree([self.pid])
        for pid, (_, start, _) in t.items():
            self.known[pid] = start
        return t

    def wait_ready(self, check, timeout=20.0, wrong_grace=1.0):
        """Poll until the marker shows up in the log (if any) and check()
        passes; check returns None when the answer is right, else a message.
        Refused connections are retried until timeout; a wrong answer only
        for wrong_grace seconds."""
        deadline = time.monotonic() + timeout
        first_wrong = None
        last = "no answer"
        marker = self.launch.ready_marker
        for _ in range(100000):
            if not self.alive():
                raise Skip("%s exited with status %s: %s" % (
                    self.launch.name, self.proc.returncode, self.tail()))
            now = time.monotonic()
            if now > deadline:
                raise Skip("%s not ready after %.0f s (%s): %s" % (
                    self.launch.name, timeout, last, self.tail()))
            if marker and marker not in self.read_log():
                last = "no %r in its log" % marker
                time.sleep(0.05)
                continue
            try:
                msg = check()
            except (OSError, ConnectionError, TimeoutError, ValueError, IndexError) as ex:
                last = "%s: %s" % (type(ex).__name__, ex)
                time.sleep(0.05)
                continue
            if msg is None:
                self.tree()
                return
            last = msg
            first_wrong = first_wrong or now
            if now - first_wrong > wrong_grace:
                raise Skip("wrong answer from %s: %s" % (self.launch.name, msg))
            time.sleep(0.05)

    def stop(self, timeout=15.0, grace=5.0):
        """Stop signal to the root PID, wait, then SIGKILL whatever is left of
        the processes we saw (PID + start time checked: no reused PIDs)."""
        try:
            self.tree()
        except OSError:
            pass
        if self.alive():
            try:
                os.kill(self.pid, self.launch.stop_sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        # leftovers (e.g. a worker orphaned by its master)
        deadline = time.monotonic() + grace
        for _ in range(int(grace * 20) + 40):
            left = [p for p, st in self.known.items()
                    if p != self.pid and _stat(p) is not None and _stat(p)[2] == st]
            if not left:
                break
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self.log.close()
        return self.proc.returncode


def check_get(port, path, expect_body, method="GET", body=None, headers=None, timeout=5.0,
              tls=False):
    """None when GET path answers 200 with exactly expect_body (or, when
    expect_body is a function, when it returns None for the body)."""
    st, hd, b = http_request(port, path, method=method, body=body, headers=headers,
                             timeout=timeout, tls=tls)
    if st != 200:
        return "status %d for %s %s" % (st, method, path)
    if callable(expect_body):
        return expect_body(b)
    if b != expect_body:
        return "wrong body for %s %s (%d bytes, expected %d)" % (
            method, path, len(b), len(expect_body))
    return None


def today():
    return datetime.date.today().isoformat()
