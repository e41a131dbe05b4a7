"""Installing gangway (issue 19): `make install`, --version, and the Debian
package built, installed, run, upgraded and removed on this machine.

The first part runs in `make test` (no root needed): --version, make
install/uninstall into a DESTDIR, the version the Makefile and debian/
agree on, and the build's clear refusal without Python headers.

The package part runs under `make test-package` (GW_TEST_PACKAGE=1), as
root, with Debian's packaging tools (scripts/install-deps --package). It
builds the .deb once (`make deb`), runs lintian, installs it with dpkg -i on
this machine (a throwaway CI machine) and always restores it: a finalizer
stops what the tests started, removes their ini files and purges the
package, and removes the gangway user and directories when the test created
them. A machine that already has a gangway package is left alone (skip).

systemd is not PID 1 here, so the test plays its part:
- An instance runs the installed unit's ExecStart (parsed from
  /lib/systemd/system/gangway@.service, %i substituted) the way the unit
  would: as User=/Group= with NoNewPrivileges (setpriv), in a mount
  namespace where ProtectSystem=strict leaves only RuntimeDirectory=,
  LogsDirectory= and ReadWritePaths= writable, ProtectHome= hides /home and
  PrivateTmp= gives a private /tmp; NOTIFY_SOCKET receives Type=notify's
  READY=1. Its pid is the master's (unshare, sh and setpriv exec each
  other), so it is MAINPID. The system call filter is checked apart, by
  strace against `systemd-analyze syscall-filter`.
- The maintainer scripts and logrotate's postrotate talk to systemd with
  systemctl and deb-systemd-invoke. They run in a private mount namespace
  where /run/systemd/system exists (as on a systemd host), policy-rc.d
  allows actions, and a stand-in `systemctl` comes first on PATH: it knows
  only the instances this test started and does what systemd would with
  the installed unit (reload runs ExecReload with $MAINPID, stop sends
  SIGTERM and waits, kill sends the signal to the main pid), and logs each
  call. The unit files themselves are checked by `systemd-analyze verify`,
  which needs no running systemd.
Every wait is bounded; the load is a bounded loop on loopback.
"""
import glob
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN, ROOT, live_children, wait_for

PACKAGE = "gangway"
UNIT_DIR = "/lib/systemd/system"
SERVICE = UNIT_DIR + "/gangway@.service"
SOCKET_UNIT = UNIT_DIR + "/gangway@.socket"
SANITIZED = os.environ.get("GW_TEST_SANITIZED") == "1"
SO_PASSCRED = getattr(socket, "SO_PASSCRED", 16)
SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", 2)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def makefile_version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return re.search(r"^VERSION\s*:=\s*(\S+)", f.read(), re.M).group(1)


def changelog_version(tree=ROOT):
    with open(os.path.join(tree, "debian", "changelog")) as f:
        return re.match(r"gangway \(([^)]+)\)", f.readline()).group(1)


def build_env():
    """The environment for a make run from inside a test: none of the outer
    make's variables (MAKEFLAGS carries CI=true and its jobserver)."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
         and not k.startswith("GANGWAY_")}
    e["LC_ALL"] = "C.UTF-8"
    return e


def http_get(addr, path="/", timeout=10):
    """One request on a new connection (Connection: close): (status, body).
    addr is (host, port) or a unix socket path."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
    else:
        s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: pkgtest\r\nConnection: close\r\n\r\n"
                   % path).encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return (int(m.group(1)) if m else None), body


# ---------------------------------------------------------------------------
# --version, make install, the build's checks (no root needed)
# ---------------------------------------------------------------------------

def test_version_names_the_python_and_the_build_options():
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "gangway " + makefile_version(), out.stdout
    py = subprocess.run(["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
                        capture_output=True, text=True, timeout=30).stdout.strip()
    assert re.match(r"Python %s, llhttp \d+\.\d+\.\d+$" % re.escape(py), lines[1]), out.stdout
    m = re.match(r"build: (.*)$", lines[2])
    assert m, out.stdout
    opts = dict(w.split("=", 1) for w in m.group(1).split())
    assert opts.get("tls") == "openssl", out.stdout
    # libpython=static means the interpreter is linked in: no libpython in
    # the binary's NEEDED list; shared means it is there.
    if shutil.which("objdump"):
        needed = subprocess.run(["objdump", "-p", BIN], capture_output=True, text=True,
                                timeout=60).stdout
        has_so = re.search(r"NEEDED\s+libpython3", needed) is not None
        assert opts.get("libpython") == ("shared" if has_so else "static"), (out.stdout, needed)
    else:
        assert opts.get("libpython") in ("static", "shared"), out.stdout


def test_debian_changelog_carries_the_makefiles_version():
    # A native package: the Debian version is the upstream one (the package
    # build passes it to make as VERSION, so they must agree).
    assert changelog_version() == makefile_version()


def test_make_install_and_uninstall_honour_prefix_and_destdir(tmp_path):
    if SANITIZED or os.path.realpath(BIN) != os.path.join(ROOT, "gangway"):
        pytest.skip("make install installs ./gangway; this run tests %s" % BIN)
    dest, prefix = str(tmp_path / "dest"), "/opt/gw"
    args = ["make", "-s", "-C", ROOT, "DESTDIR=" + dest, "PREFIX=" + prefix]
    r = subprocess.run(args + ["install"], capture_output=True, text=True, timeout=600,
                       env=build_env())
    assert r.returncode == 0, r.stdout + r.stderr
    root = dest + prefix
    files = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, _, fs in os.walk(dest) for f in fs)
    for want in ("bin/gangway", "share/man/man1/gangway.1", "share/gangway/hello.py",
                 "share/doc/gangway/README.md", "share/doc/gangway/docs/deploy-systemd.md",
                 "share/doc/gangway/examples/gangway@.service",
                 "share/doc/gangway/examples/gangway@.socket",
                 "share/doc/gangway/examples/example.ini",
                 "share/doc/gangway/examples/logrotate"):
        assert want in files, files
    assert os.stat(root + "/bin/gangway").st_mode & 0o777 == 0o755
    with open(root + "/bin/gangway", "rb") as a, open(BIN, "rb") as b:
        assert a.read() == b.read()
    # The examples name where this PREFIX put things, not the package's paths.
    with open(root + "/share/doc/gangway/examples/gangway@.service") as f:
        unit = f.read()
    assert "ExecStart=/opt/gw/bin/gangway /etc/gangway/%i.ini" in unit, unit
    with open(root + "/share/doc/gangway/examples/gangway.service") as f:
        assert "ExecStart=/opt/gw/bin/gangway " in f.read()
    with open(root + "/share/doc/gangway/examples/example.ini") as f:
        assert "wsgi-file = /opt/gw/share/gangway/hello.py" in f.read()
    r = subprocess.run([root + "/bin/gangway", "--version"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("gangway "), r.stderr

    r = subprocess.run(args + ["uninstall"], capture_output=True, text=True, timeout=120,
                       env=build_env())
    assert r.returncode == 0, r.stdout + r.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
    assert left == [], left
    assert not os.path.exists(root + "/share/doc/gangway")
    assert not os.path.exists(root + "/share/gangway")


def test_build_without_python_headers_stops_with_one_clear_line(tmp_path):
    """As root, a mount namespace hides the headers python3-dev installed
    (the machine is not changed); otherwise PY_INCLUDE points elsewhere."""
    build = str(tmp_path / "build")
    cmd = ["make", "-C", ROOT, "BUILD=" + build, "INSTALL_DEPS=:", build + "/py/wsgi.o"]
    inc = subprocess.run(["/usr/bin/python3", "-c",
                          "import sysconfig; print(sysconfig.get_config_var('INCLUDEPY'))"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    if os.geteuid() == 0 and shutil.which("unshare") and os.path.isdir(inc):
        cmd = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
               'mount -t tmpfs -o mode=0755 tmpfs "$0" && exec "$@"', inc] + cmd
    else:
        cmd += ["PY_INCLUDE=" + str(tmp_path / "no-such-include")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=build_env())
    assert r.returncode != 0, r.stdout
    lines = [l for l in r.stderr.splitlines() if "gangway needs" in l]
    assert len(lines) == 1 and "python3-dev" in lines[0] and "Python.h" in lines[0], r.stderr
    # It stopped before compiling anything.
    assert not glob.glob(build + "/**/*.o", recursive=True), os.listdir(build)
    assert " -c -o " not in r.stdout, r.stdout


# ---------------------------------------------------------------------------
# The package: preconditions, build, install, restore
# ---------------------------------------------------------------------------

def dpkg_status(pkg=PACKAGE):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                       text=True, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else ""


def need_package_run():
    if os.environ.get("GW_TEST_PACKAGE") != "1":
        pytest.skip("the package tests build and install the .deb: run `make test-package`")
    if os.geteuid() != 0:
        pytest.skip("the package tests install the .deb with dpkg -i: they need root")
    tools = ["dpkg-buildpackage", "dh", "dh_installsysusers", "lintian", "dpkg-deb",
             "systemd-analyze", "unshare", "setpriv", "logrotate", "strace"]
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip("missing %s: scripts/install-deps --package installs them" % " ".join(missing))
    if dpkg_status() not in ("", "unknown ok not-installed", "deinstall ok not-installed",
                             "purge ok not-installed"):
        pytest.skip("a gangway package is on this machine already (%s): not replacing it"
                    % dpkg_status())


def dpkg(*args, env=None, wrap=None, timeout=600):
    """dpkg ARGS, waiting (bounded) while another process holds dpkg's lock:
    the lock is taken before dpkg does anything, so a retry repeats nothing."""
    cmd = (wrap or []) + ["dpkg"] + list(args)
    deadline = time.monotonic() + 300
    while True:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=env or dict(build_env(), PATH=SYSTEM_PATH))
        locked = r.returncode != 0 and re.search(r"lock.*(held|locked) by another process",
                                                 r.stderr)
        if not locked or time.monotonic() > deadline:
            return r
        time.sleep(1)


def build_deb(tree, out_dir, extra_env=None):
    """`make deb` from tree into out_dir; the path of the gangway .deb."""
    env = build_env()
    # The unit tests ran in `make test`; -j2: the machine has two cores.
    env["DEB_BUILD_OPTIONS"] = "nocheck"
    env.update(extra_env or {})
    r = subprocess.run(["make", "-C", tree, "deb", "DEB_DIR=" + out_dir,
                        "DPKG_BUILDPACKAGE_OPTS=-j2"],
                       capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    debs = glob.glob(os.path.join(out_dir, "gangway_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


class Package:
    """What the module's tests share: the built .deb, the installed state,
    the processes the tests started and what to undo."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.deb = None
        self.src = None            # the built copy of the tree (make deb's DEB_DIR/gangway-V)
        self.files = []            # dpkg -L after the install
        self.conffiles = []
        self.inis = []             # /etc/gangway/*.ini the tests wrote
        self.instances = {}        # name -> Instance
        self.user_existed = pwd_exists("gangway")
        self.group_existed = grp_exists("gangway")
        self.dirs_existed = {d: os.path.exists(d) for d in ("/etc/gangway", "/var/log/gangway",
                                                             "/run/gangway")}


def pwd_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def grp_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    need_package_run()
    tmp = str(tmp_path_factory.mktemp("package"))
    p = Package(tmp)
    p.deb = build_deb(ROOT, os.path.join(tmp, "deb"))
    p.src = os.path.join(tmp, "deb", "gangway-" + makefile_version())
    try:
        r = dpkg("-i", p.deb)
        assert r.returncode == 0, r.stdout + r.stderr
        p.files = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True,
                                 check=True, timeout=60).stdout.split("\n")
        p.files = [f for f in p.files if f and f != "/."]
        with open("/var/lib/dpkg/info/gangway.conffiles") as f:
            p.conffiles = [l.strip() for l in f if l.strip()]
        yield p
    finally:
        restore(p)


def restore(p):
    """Undo everything, whatever failed: stop our processes, drop our inis,
    purge the package, remove the user and directories we created."""
    problems = []
    for inst in list(p.instances.values()):
        inst.stop()
    for ini in p.inis:
        if os.path.exists(ini):
            os.unlink(ini)
    if dpkg_status():
        r = dpkg("--purge", PACKAGE)
        if r.returncode != 0:
            problems.append("dpkg --purge: " + r.stdout + r.stderr)
    if not p.user_existed and pwd_exists("gangway"):
        subprocess.run(["userdel", "gangway"], capture_output=True, timeout=60)
    if not p.group_existed and grp_exists("gangway"):
        subprocess.run(["groupdel", "gangway"], capture_output=True, timeout=60)
    for d, existed in p.dirs_existed.items():
        if not existed and os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree("/run/gangway-pkgtest-%d" % os.getpid(), ignore_errors=True)
    assert not problems, problems


# ---------------------------------------------------------------------------
# systemd's part, played by the test
# ---------------------------------------------------------------------------

def read_unit(path, name=None):
    """{section: {key: [values]}} of a unit file, %i (and %I) replaced by name."""
    out, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = out.setdefault(line.strip("[]"), {})
                continue
            k, _, v = line.partition("=")
            if name is not None:
                v = v.replace("%i", name).replace("%I", name)
            section.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_value(unit, key, default=None, section="Service"):
    v = unit.get(section, {}).get(key)
    return v[-1] if v else default


def unit_words(unit, key, section="Service"):
    return [w for v in unit.get(section, {}).get(key, []) for w in v.split()]


class Notify:
    """NOTIFY_SOCKET: datagrams with their sender's pid. It lives under /run
    (not /tmp, which PrivateTmp hides) and the unit's user may send to it."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.got = []

    def wait(self, key, pid, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s=1 from pid %d; got %r" % (key, pid, self.got))
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            sender = None
            for level, typ, blob in anc:
                if level == socket.SOL_SOCKET and typ == SCM_CREDENTIALS:
                    sender = struct.unpack("3i", blob[:12])[0]
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            self.got.append((sender, fields))
            if fields.get(key) == "1" and sender == pid:
                return fields

    def close(self):
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class Instance:
    """gangway@NAME run as the installed unit would run it (see the module
    docstring): its pid is MAINPID; stderr goes to a file (the journal)."""

    def __init__(self, p, name, ini_text, activated=None, strace=None):
        self.p, self.name = p, name
        self.unit = read_unit(SERVICE, name)
        self.ini = "/etc/gangway/%s.ini" % name
        with open(self.ini, "w") as f:
            f.write(ini_text)
        p.inis.append(self.ini)
        self.journal = os.path.join(p.tmp, "journal-%s.log" % name)
        self.run_dir = "/run/gangway-pkgtest-%d" % os.getpid()
        os.makedirs(self.run_dir, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self.notify = Notify("%s/notify-%s" % (self.run_dir, name))
        user = unit_value(self.unit, "User")
        group = unit_value(self.unit, "Group", user)
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid
        # What systemd creates before ExecStart, owned by the unit's user:
        # RuntimeDirectory=, LogsDirectory= and their kin.
        writable = []
        for key, base in (("RuntimeDirectory", "/run"), ("LogsDirectory", "/var/log"),
                          ("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache")):
            for d in unit_words(self.unit, key):
                path = os.path.join(base, d)
                os.makedirs(path, exist_ok=True)
                os.chown(path, pw.pw_uid, gid)
                writable.append(path)
        writable += unit_words(self.unit, "ReadWritePaths")
        argv = shlex.split(unit_value(self.unit, "ExecStart"))
        script = ["set -e"]
        protect = unit_value(self.unit, "ProtectSystem", "no")
        if protect in ("strict", "full", "yes", "true"):
            ro = ["/"] if protect == "strict" else ["/usr", "/boot", "/efi"] + (
                ["/etc"] if protect == "full" else [])
            for d in ro:
                if os.path.isdir(d):
                    script.append("mount --bind %s %s" % (d, d))
            for d in writable:
                script.append("mount --bind %s %s" % (d, d))
            for d in ro:
                if os.path.isdir(d):
                    script.append("mount -o remount,bind,ro %s" % d)
        if unit_value(self.unit, "PrivateTmp") in ("yes", "true"):
            script += ["mount -t tmpfs -o mode=1777 tmpfs /tmp",
                       "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
        if unit_value(self.unit, "ProtectHome") in ("yes", "true"):
            script += ["mount -t tmpfs -o mode=0 tmpfs %s" % d
                       for d in ("/home", "/root", "/run/user") if os.path.isdir(d)]
        if activated is not None:
            # systemd hands the socket in as fd 3 to the process it starts;
            # $$ is that process: sh, setpriv and gangway exec each other.
            script.append('export LISTEN_FDS=1 LISTEN_PID=$$ LISTEN_FDNAMES=%s'
                          % unit_value(read_unit(SOCKET_UNIT, name), "FileDescriptorName",
                                       "gangway@%s.socket" % name, "Socket"))
        priv = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % gid, "--init-groups"]
        if unit_value(self.unit, "NoNewPrivileges") in ("yes", "true"):
            priv.append("--no-new-privs")
        if unit_value(self.unit, "CapabilityBoundingSet", None) == "":
            priv += ["--bounding-set=-all", "--inh-caps=-all"]
        # strace -D: the tracer is a detached grandchild, so the traced
        # process keeps this pid (MAINPID); it writes where the unit may.
        trace = ["strace", "-D", "-f", "-qq", "-o", strace, "--"] if strace else []
        script.append("exec " + " ".join(shlex.quote(a) for a in trace + priv + ["--"] + argv))
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "NOTIFY_SOCKET": self.notify.path,
               "USER": user, "LOGNAME": user, "HOME": pw.pw_dir, "SHELL": pw.pw_shell,
               "INVOCATION_ID": "0" * 32}
        self.log = open(self.journal, "wb")
        pre = None
        if activated is not None:
            fd = activated.fileno()

            def pre():
                os.dup2(fd, 3)  # dup2 clears close-on-exec: only fd 3 crosses
        # close_fds=False: subprocess would close fd 3 after preexec_fn; the
        # test's own descriptors are close-on-exec anyway.
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
             "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
            cwd="/", close_fds=False, preexec_fn=pre)
        self.pid = self.proc.pid
        p.instances[name] = self
        self.workers_seen = set()

    @property
    def unit_name(self):
        return "gangway@%s.service" % self.name

    def read_journal(self):
        with open(self.journal, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=60):
        try:
            return self.notify.wait("READY", self.pid, timeout)
        except TimeoutError:
            raise AssertionError("no READY=1 from %s: exit %s\n%s" % (
                self.unit_name, self.proc.poll(), self.read_journal()[-4000:]))

    def reload_command(self):
        return shlex.split(unit_value(self.unit, "ExecReload").replace("$MAINPID", str(self.pid)))

    def stop(self, timeout=60):
        """SIGTERM to the main pid (KillMode=mixed), SIGKILL to what is left
        after the wait, as systemd does after TimeoutStopSec."""
        if self.proc.poll() is None:
            kids = live_children(self.pid)
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log.close()
        self.notify.close()
        self.p.instances.pop(self.name, None)
        return self.proc.returncode


def port_from_log(text):
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
    return int(m.group(1)) if m else None


def process_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    uid = int(re.search(r"^Uid:\s+(\d+)", st, re.M).group(1))
    nnp = re.search(r"^NoNewPrivs:\s+(\d)", st, re.M)
    return uid, nnp and nnp.group(1) == "1"


def ini_for(name, extra=""):
    return ("[gangway]\n"
            "wsgi-file = /usr/share/gangway/hello.py\n"
            "http = 127.0.0.1:0\n"
            "http = unix:/run/gangway/%n/socket\n"
            "chmod-socket = 660\n"
            "workers = 2\n"
            "pidfile = /run/gangway/%n/pid\n"
            "log-file = /var/log/gangway/%n.log\n" + extra)


@pytest.fixture(scope="module")
def instance(pkg):
    """gangway@pkgtest: the example app, on 127.0.0.1 with a free port (port
    0 in the test's ini; the log says which), pidfile and log file where the
    unit lets them be."""
    inst = pkg.instances.get("pkgtest")
    if inst is None:
        inst = Instance(pkg, "pkgtest", ini_for("pkgtest"))
        inst.wait_ready()
    log = "/var/log/gangway/pkgtest.log"
    inst.port = wait_for(lambda: os.path.exists(log) and port_from_log(open(log).read()),
                         30, what="the port in " + log)
    return inst


class FakeSystemd:
    """The stand-in for systemd that maintainer scripts and logrotate talk
    to (module docstring). Commands run through run() see it."""

    SCRIPT = r'''#!/usr/bin/python3
# systemctl stand-in for tests/test_package.py: acts only on the pids in STATE.
import fnmatch, json, os, shlex, signal, subprocess, sys, time
STATE, LOG = %(state)r, %(log)r
args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps({"argv": args, "uid": os.getuid(), "euid": os.geteuid()}) + "\n")
opts = {}
words = []
for a in args:
    if a.startswith("--"):
        k, _, v = a[2:].partition("=")
        opts[k] = v
    elif not a.startswith("-"):
        words.append(a)
if not words:
    sys.exit(0)
cmd, names = words[0], words[1:]
with open(STATE) as f:
    units = json.load(f)
def alive(pid):
    try:
        with open("/proc/%%d/stat" %% pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"
def matching(patterns):
    return [u for u in sorted(units) if any(fnmatch.fnmatchcase(u, p) for p in patterns)]
if cmd == "list-units":
    for u in matching(names or ["*"]):
        if alive(units[u]["pid"]):
            print("%%s loaded active running %%s" %% (u, u))
elif cmd == "reload":
    rc = 0
    for u in matching(names):
        line = units[u]["reload"].replace("$MAINPID", str(units[u]["pid"]))
        rc |= subprocess.call(shlex.split(line))
    sys.exit(rc)
elif cmd == "stop":
    for u in matching(names):
        pid = units[u]["pid"]
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            sys.exit(1)
elif cmd == "kill":
    sig = getattr(signal, "SIG" + opts.get("signal", "TERM").replace("SIG", ""))
    for u in matching(names):
        os.kill(units[u]["pid"], sig)
elif cmd in ("is-active",):
    sys.exit(0 if matching(names) and all(alive(units[u]["pid"]) for u in matching(names)) else 3)
sys.exit(0)
'''

    def __init__(self, p):
        self.dir = os.path.join(p.tmp, "fake-systemd")
        os.makedirs(self.dir + "/bin", exist_ok=True)
        self.state = self.dir + "/units.json"
        self.log = self.dir + "/calls.log"
        open(self.log, "w").close()
        with open(self.dir + "/bin/systemctl", "w") as f:
            f.write(self.SCRIPT % {"state": self.state, "log": self.log})
        os.chmod(self.dir + "/bin/systemctl", 0o755)
        with open(self.dir + "/policy-rc.d", "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(self.dir + "/policy-rc.d", 0o755)
        # logrotate may run postrotate as the su user: let it reach the stand-in.
        for d in (p.tmp, self.dir, self.dir + "/bin"):
            os.chmod(d, 0o755)
        os.chmod(self.log, 0o666)
        self.set_units([])

    def set_units(self, instances):
        with open(self.state, "w") as f:
            json.dump({i.unit_name: {"pid": i.pid, "reload": unit_value(i.unit, "ExecReload")}
                       for i in instances}, f)
        os.chmod(self.state, 0o644)

    def calls(self):
        with open(self.log) as f:
            return [json.loads(l) for l in f if l.strip()]

    def run(self, cmd, timeout=600):
        script = ("set -e\n"
                  "[ -d /run/systemd ] || mkdir /run/systemd\n"
                  "mount -t tmpfs -o mode=0755 tmpfs /run/systemd\n"
                  "mkdir /run/systemd/system\n"
                  "if [ -e /usr/sbin/policy-rc.d ]; then mount --bind %s /usr/sbin/policy-rc.d; fi\n"
                  'exec "$@"\n' % shlex.quote(self.dir + "/policy-rc.d"))
        env = dict(build_env(), PATH=self.dir + "/bin:" + SYSTEM_PATH)
        env.pop("LC_ALL", None)
        wrap = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                "sh"]
        if cmd[0] == "dpkg":
            return dpkg(*cmd[1:], env=env, wrap=wrap, timeout=timeout)
        return subprocess.run(wrap + cmd, capture_output=True, text=True, timeout=timeout,
                              env=env)


@pytest.fixture(scope="module")
def fake_systemd(pkg):
    return FakeSystemd(pkg)


# ---------------------------------------------------------------------------
# The package's tests
# ---------------------------------------------------------------------------

LINTIAN_DOC = os.path.join(ROOT, "docs", "deploy-systemd.md")


def test_lintian_reports_no_error_and_documents_each_warning(pkg):
    r = subprocess.run(["lintian", "--pedantic", "--display-info", "--show-overrides",
                        "--no-tag-display-limit", pkg.deb],
                       capture_output=True, text=True, timeout=600)
    tags = re.findall(r"^([EWIPXO]): gangway(?:-dbgsym)?(?: \w+)?: (\S+)", r.stdout, re.M)
    assert tags, r.stdout + r.stderr
    errors = [t for k, t in tags if k == "E"]
    assert errors == [], r.stdout
    with open(LINTIAN_DOC) as f:
        doc = f.read()
    # Every warning, info or override is listed (with its reason) in the docs.
    for kind, tag in sorted(set(tags)):
        if kind in "WIPO":
            assert "`%s`" % tag in doc, "lintian %s: %s is not explained in %s" % (
                kind, tag, LINTIAN_DOC)


def test_installed_files_user_and_dependencies(pkg):
    for path in ("/usr/bin/gangway", "/usr/share/man/man1/gangway.1.gz", SERVICE, SOCKET_UNIT,
                 "/etc/gangway/example.ini", "/etc/logrotate.d/gangway",
                 "/usr/lib/sysusers.d/gangway.conf", "/usr/share/gangway/hello.py",
                 "/usr/share/doc/gangway/copyright",
                 "/usr/share/doc/gangway/docs/deploy-systemd.md"):
        assert path in pkg.files, (path, pkg.files)
        assert os.path.isfile(path), path
    assert sorted(pkg.conffiles) == ["/etc/gangway/example.ini", "/etc/logrotate.d/gangway"]
    assert os.access("/usr/bin/gangway", os.X_OK)
    # The units name files that exist (Documentation= too).
    for unit in (SERVICE, SOCKET_UNIT):
        for doc in unit_words(read_unit(unit), "Documentation", "Unit"):
            if doc.startswith("file:"):
                assert os.path.isfile(doc[5:]), doc
    v = subprocess.run(["/usr/bin/gangway", "--version"], capture_output=True, text=True,
                       timeout=30)
    assert v.returncode == 0, v.stderr
    assert v.stdout.splitlines()[0] == "gangway " + makefile_version(), v.stdout
    assert "build: libpython=static tls=openssl" in v.stdout, v.stdout
    # The system user the unit runs as, from sysusers.d.
    pw = pwd.getpwnam("gangway")
    assert pw.pw_uid < 1000 and pw.pw_shell.endswith("nologin"), pw
    # The interpreter it embeds: python3.X, X from the build's python3.
    fields = subprocess.run(["dpkg-query", "-W", "-f=${Depends}\n${Built-Using}", PACKAGE],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    pyver = "%d.%d" % sys.version_info[:2]
    assert re.search(r"\bpython%s \(>= %s\.[^)]*\)" % (re.escape(pyver), re.escape(pyver)),
                     fields), fields
    assert "libsystemd0" in fields and "-minimal" not in fields, fields
    assert re.search(r"python%s \(= " % re.escape(pyver), fields.split("\n")[1]), fields


def test_installed_binary_serves_the_example_app(pkg, tmp_path):
    ini = "/etc/gangway/example.ini"
    r = subprocess.run(["/usr/bin/gangway", ini, "--check-config"], capture_output=True,
                       text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    log = open(tmp_path / "example.log", "wb")
    # The example's own address is 127.0.0.1:8000; the command line moves it
    # to a free port.
    proc = subprocess.Popen(["/usr/bin/gangway", ini, "--http", "127.0.0.1:0"], stdout=log,
                            stderr=subprocess.STDOUT, cwd="/",
                            env=dict(PATH=SYSTEM_PATH, LANG="C.UTF-8"))
    try:
        port = wait_for(lambda: proc.poll() is None and
                        "ready" in (tmp_path / "example.log").read_text() and
                        port_from_log((tmp_path / "example.log").read_text()),
                        30, what="the example app ready")
        assert http_get(("127.0.0.1", port)) == (200, b"Hello, World!")
    finally:
        kids = live_children(proc.pid)
        proc.terminate()
        proc.wait(30)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def test_systemd_analyze_verify_accepts_the_units(pkg):
    r = subprocess.run(["systemd-analyze", "verify", SERVICE, SOCKET_UNIT],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    # The hardening, as systemd scores it (0 best, 10 worst):
    # the unit as shipped scores 1.7 (docs/deploy-systemd.md).
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", SERVICE],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_command_line_serves_under_the_units_sandbox(pkg, instance):
    """ExecStart as the unit runs it: Type=notify READY=1 from the main pid,
    the user and NoNewPrivileges it asks for, / read-only, and the pidfile,
    a unix socket and the log file in the directories the unit makes
    writable."""
    assert http_get(("127.0.0.1", instance.port)) == (200, b"Hello, World!")
    pw = pwd.getpwnam(unit_value(instance.unit, "User"))
    for pid in [instance.pid] + sorted(live_children(instance.pid)):
        uid, nnp = process_uid(pid)
        assert uid == pw.pw_uid and nnp, (pid, uid, nnp)
    with open("/proc/%d/mountinfo" % instance.pid) as f:
        mounts = f.read()
    assert re.search(r"^\S+ \S+ \S+ \S+ / ro[, ]", mounts, re.M), mounts
    with open("/run/gangway/pkgtest/pid") as f:
        assert int(f.read()) == instance.pid
    # A unix socket it bound itself in its RuntimeDirectory=.
    sock = "/run/gangway/pkgtest/socket"
    assert http_get(sock) == (200, b"Hello, World!")
    st = os.stat(sock)
    assert st.st_uid == pw.pw_uid and st.st_mode & 0o777 == 0o660, oct(st.st_mode)
    st = os.stat("/var/log/gangway/pkgtest.log")
    assert st.st_uid == pw.pw_uid
    # ExecReload, as systemctl reload runs it: new workers, same MAINPID.
    before = live_children(instance.pid)
    r = subprocess.run(instance.reload_command(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: live_children(instance.pid) and not (live_children(instance.pid) & before),
             60, what="the reload's new workers")
    assert instance.proc.poll() is None
    assert http_get(("127.0.0.1", instance.port)) == (200, b"Hello, World!")


def test_socket_unit_activates_the_service(pkg):
    """gangway@.socket: systemd binds ListenStream= with SocketUser/Group/
    Mode and hands the socket to the service as fd 3 (LISTEN_FDS); the ini
    names the same address, so gangway serves it without binding."""
    name = "pkgsock"
    sock_unit = read_unit(SOCKET_UNIT, name)
    path = unit_value(sock_unit, "ListenStream", section="Socket")
    assert path == "/run/gangway/%s/socket" % name, path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inst = None
    try:
        ls.bind(path)
        ls.listen(128)
        os.chown(path, pwd.getpwnam(unit_value(sock_unit, "SocketUser", "root", "Socket")).pw_uid,
                 grp.getgrnam(unit_value(sock_unit, "SocketGroup", "root", "Socket")).gr_gid)
        os.chmod(path, int(unit_value(sock_unit, "SocketMode", "0666", "Socket"), 8))
        inst = Instance(pkg, name, "[gangway]\nwsgi-file = /usr/share/gangway/hello.py\n"
                        "http = unix:/run/gangway/%n/socket\nworkers = 1\n", activated=ls)
        ls.close()
        inst.wait_ready()
        assert http_get(path) == (200, b"Hello, World!")
        journal = inst.read_journal()
        assert "listening on http://unix:%s" % path in journal, journal
        assert "matches no" not in journal, journal
        st = os.stat(path)
        assert oct(st.st_mode & 0o777) == oct(int(unit_value(sock_unit, "SocketMode",
                                                              section="Socket"), 8))
    finally:
        ls.close()
        if inst:
            inst.stop()
        if os.path.exists(path):
            os.unlink(path)


def test_logrotate_rotates_and_the_instance_reopens(pkg, instance, fake_systemd):
    log = "/var/log/gangway/pkgtest.log"
    assert http_get(("127.0.0.1", instance.port))[0] == 200
    wait_for(lambda: "GET / " in open(log).read(), 10, what="the access log line")
    fake_systemd.set_units([instance])
    state = os.path.join(pkg.tmp, "logrotate.state")
    r = fake_systemd.run(["logrotate", "-f", "-s", state, "/etc/logrotate.d/gangway"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(log + ".1"), os.listdir("/var/log/gangway")
    kills = [c for c in fake_systemd.calls() if c["argv"] and "kill" in c["argv"]]
    assert kills and "--signal=USR1" in kills[-1]["argv"], fake_systemd.calls()
    # As root: under `su gangway gangway` a postrotate run as that user could
    # not signal the instances through systemd.
    assert kills[-1]["euid"] == 0, kills
    # The instance writes to the new file: it reopened.
    wait_for(lambda: os.path.exists(log) and
             (http_get(("127.0.0.1", instance.port))[0] == 200) and
             "GET / " in open(log).read(), 15, interval=0.2, what="lines in the new log")
    assert os.stat(log).st_uid == pwd.getpwnam("gangway").pw_uid


def expand_syscall_filter(words):
    """The system calls a SystemCallFilter= allow-list lets through, from
    systemd's own tables (`systemd-analyze syscall-filter`)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            cur = groups.setdefault(s, set())
        elif cur is not None:
            cur.add(s)

    def expand(w, seen):
        if not w.startswith("@"):
            return {w}
        if w in seen:
            return set()
        return set().union(*(expand(x, seen | {w}) for x in groups[w]))
    return set().union(*(expand(w, set()) for w in words))


def test_system_calls_stay_inside_the_units_filter(pkg):
    """What gangway calls while starting, serving (app and static file),
    reloading, reopening logs and stopping is inside SystemCallFilter=: a
    call outside it would fail with SystemCallErrorNumber= under systemd."""
    unit = read_unit(SERVICE)
    words = unit_words(unit, "SystemCallFilter")
    assert words and not any(w.startswith("~") for w in words), words
    allowed = expand_syscall_filter(words)
    trace = "/run/gangway/pkgtrace/strace.out"
    if os.path.exists(trace):
        os.unlink(trace)
    inst = Instance(pkg, "pkgtrace", ini_for("pkgtrace", "static-map = /s=/usr/share/gangway\n"),
                    strace=trace)
    try:
        inst.wait_ready()
        port = wait_for(lambda: port_from_log(open("/var/log/gangway/pkgtrace.log").read()), 30)
        assert http_get(("127.0.0.1", port)) == (200, b"Hello, World!")
        assert http_get(("127.0.0.1", port), "/s/hello.py")[0] == 200
        before = live_children(inst.pid)
        subprocess.run(inst.reload_command(), check=True, timeout=30)
        wait_for(lambda: live_children(inst.pid) and not (live_children(inst.pid) & before),
                 60, what="the reload's new workers")
        assert http_get(("127.0.0.1", port)) == (200, b"Hello, World!")
        os.kill(inst.pid, signal.SIGUSR1)
        assert http_get(("127.0.0.1", port)) == (200, b"Hello, World!")
    finally:
        assert inst.stop() == 0
    with open(trace) as f:
        lines = f.read().splitlines()
    os.unlink(trace)
    # From gangway's own start on (setpriv's calls before it do not count).
    start = [i for i, l in enumerate(lines) if 'execve("/usr/bin/gangway"' in l]
    assert start, lines[:50]
    used = set()
    for l in lines[start[0]:]:
        m = re.match(r"\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", l)
        if m:
            used.add(m.group(1))
    used -= {"exit", "resumed", "killed"}
    assert len(used) > 30, used
    assert sorted(used - allowed) == [], "outside SystemCallFilter=%s" % " ".join(words)


@pytest.fixture(scope="module")
def upgraded(pkg, instance, fake_systemd):
    """Upgrades the package (a rebuilt one, version +pkgtest1) while a
    bounded load runs against gangway@pkgtest, through dpkg -i and the
    postinst's reload. Returns what happened."""
    # The rebuilt package: the built copy of the tree with one more changelog
    # entry, so only main.o (the version) is compiled again.
    up_dir = os.path.join(pkg.tmp, "upgrade")
    tree = os.path.join(up_dir, "gangway-" + makefile_version())
    shutil.copytree(pkg.src, tree, symlinks=True)
    new_version = changelog_version(tree) + "+pkgtest1"
    with open(os.path.join(tree, "debian", "changelog")) as f:
        old = f.read()
    with open(os.path.join(tree, "debian", "changelog"), "w") as f:
        f.write("gangway (%s) unstable; urgency=medium\n\n  * Rebuilt by tests/test_package.py."
                "\n\n -- Test <test@example.invalid>  %s\n\n%s"
                % (new_version, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                   old))
    stamp = os.path.join(tree, "debian", "debhelper-build-stamp")
    if os.path.exists(stamp):
        os.unlink(stamp)
    env = dict(build_env(), DEB_BUILD_OPTIONS="nocheck")
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b", "-nc", "-j2"], cwd=tree,
                       capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    deb = glob.glob(os.path.join(up_dir, "gangway_%s_*.deb" % new_version))
    assert len(deb) == 1, os.listdir(up_dir)

    result = {"version": new_version, "ok": 0, "failures": [], "master": instance.pid}
    result["workers_before"] = live_children(instance.pid)
    result["exe_before"] = os.stat("/proc/%d/exe" % instance.pid).st_ino
    stop = threading.Event()
    lock = threading.Lock()
    addr = ("127.0.0.1", instance.port)

    deadline = time.monotonic() + 600

    def load():
        # Paced (an Event wait, not a sleep: stop ends it at once) so that
        # closed connections do not pile up in TIME_WAIT.
        while not stop.wait(0.002) and time.monotonic() < deadline:
            try:
                got = http_get(addr)
                good = got == (200, b"Hello, World!")
            except OSError as e:
                got, good = repr(e), False
            with lock:
                if good:
                    result["ok"] += 1
                else:
                    result["failures"].append((time.monotonic(), got))
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: result["ok"] >= 50, 30, what="the load running")
        fake_systemd.set_units([instance])
        ok_at_upgrade = result["ok"]
        r = fake_systemd.run(["dpkg", "-i", deb[0]])
        result["dpkg"] = r
        assert r.returncode == 0, r.stdout + r.stderr
        result["calls"] = fake_systemd.calls()
        # The reload is done when none of the old workers is left.
        wait_for(lambda: instance.proc.poll() is not None or (
            live_children(instance.pid) and
            not (live_children(instance.pid) & result["workers_before"])),
            90, interval=0.05, what="the reload's new workers")
        at = result["ok"]
        result["ok_during_upgrade"] = at - ok_at_upgrade
        wait_for(lambda: result["ok"] >= at + 100 or instance.proc.poll() is not None,
                 30, what="requests after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    result["alive"] = instance.proc.poll() is None
    if result["alive"]:
        result["exe_after"] = os.stat("/proc/%d/exe" % instance.pid).st_ino
        result["exe_link"] = os.readlink("/proc/%d/exe" % instance.pid)
    result["journal"] = open("/var/log/gangway/pkgtest.log").read()
    return result


def test_upgrade_reloads_running_instances_without_a_failed_request(pkg, upgraded):
    reloads = [c for c in upgraded["calls"] if c["argv"][:1] == ["reload"]]
    assert [c["argv"] for c in reloads] == [["reload", "gangway@pkgtest.service"]], \
        upgraded["calls"]
    assert dpkg_status() == "install ok installed"
    v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True,
                       text=True, timeout=60).stdout
    assert v == upgraded["version"]
    assert upgraded["alive"], upgraded["journal"][-4000:]
    assert upgraded["failures"] == [], upgraded["failures"][:20]
    assert upgraded["ok"] >= 150, upgraded["ok"]
    # The load ran through the upgrade (dpkg -i, postinst, reload), not
    # just before and after it.
    assert upgraded["ok_during_upgrade"] >= 20, upgraded["ok_during_upgrade"]


def test_upgrade_reload_runs_the_new_binary(pkg, upgraded):
    """The master (same pid, as MAINPID must stay) now runs the new
    /usr/bin/gangway, and says its new version."""
    assert upgraded["alive"]
    assert upgraded["exe_after"] == os.stat("/usr/bin/gangway").st_ino, upgraded["exe_link"]
    assert upgraded["exe_after"] != upgraded["exe_before"]
    assert "gangway %s (" % upgraded["version"] in upgraded["journal"], \
        upgraded["journal"][-4000:]


def test_remove_stops_instances_and_purge_leaves_nothing(pkg, instance, fake_systemd):
    """dpkg -r: the prerm stops every instance; nothing of the package is
    left but its conffiles. dpkg --purge: those go too, and the logs."""
    assert instance.proc.poll() is None
    fake_systemd.set_units([instance])
    r = fake_systemd.run(["dpkg", "-r", PACKAGE])
    assert r.returncode == 0, r.stdout + r.stderr
    stops = [c["argv"] for c in fake_systemd.calls() if c["argv"][:1] == ["stop"]]
    assert stops and "gangway@pkgtest.service" in stops[-1], fake_systemd.calls()
    assert instance.proc.wait(30) == 0, instance.read_journal()[-4000:]
    instance.stop()
    assert dpkg_status() == "deinstall ok config-files"
    left = [f for f in pkg.files if os.path.lexists(f) and not os.path.isdir(f)]
    assert sorted(left) == sorted(pkg.conffiles), left
    for ini in pkg.inis:
        if os.path.exists(ini):
            os.unlink(ini)
    r = dpkg("--purge", PACKAGE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dpkg_status() in ("", "unknown ok not-installed", "purge ok not-installed"), \
        dpkg_status()
    left = [f for f in pkg.files if os.path.lexists(f) and not os.path.isdir(f)]
    assert left == [], left
    for d in ("/etc/gangway", "/var/log/gangway", "/usr/share/doc/gangway", "/usr/share/gangway"):
        assert not os.path.exists(d), d
