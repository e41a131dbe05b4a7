"""A real PostgreSQL (Debian's `postgresql` package) for the tests and the benchmark.

PostgreSQL(...).start() runs initdb into a fresh temporary directory and
starts the postmaster on it:

- as an unprivileged user: postgres refuses to run as root, so under root the
  cluster belongs to the `postgres` system user the package creates (or
  `nobody` when there is none), who owns the directory; as any other user it
  runs as that user;
- on a unix socket only, in that same directory (listen_addresses = '',
  unix_socket_directories = the directory): nothing listens on the network and
  no other cluster's socket or lock file can collide with it;
- fsync, full_page_writes and synchronous_commit off: a throwaway cluster
  needs no durability, and the tests and the benchmark then measure the
  servers, not the disk;
- started as `postgres -D ...` directly, not with pg_ctl, so the Popen PID is
  the postmaster's; waited for by connecting (bounded); stopped by that PID:
  SIGINT (fast shutdown: open transactions are rolled back, clients
  disconnected, a checkpoint written), a bounded wait, then SIGKILL of that
  PID only. Its backends exit by themselves once their postmaster is gone.

This module needs only the standard library (psycopg2 is imported when a
connection is made), so bench/run.py uses the same class. The `postgres`
fixture at the end gives the test suite one cluster for the whole session;
conftest.py imports it so that every test module shares that one.
"""
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

# Every database the tests and the benchmark create belongs to this role,
# the cluster's superuser (trust authentication on the private socket).
SUPERUSER = "gangway"
PORT = 5432   # only names the socket file (.s.PGSQL.5432) in the private directory


def bindir():
    """Debian's server binaries (/usr/lib/postgresql/<major>/bin), the newest
    major version installed, or None."""
    best = None
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        m = re.search(r"/(\d+)/bin$", d)
        if m and os.access(os.path.join(d, "postgres"), os.X_OK) and \
                os.access(os.path.join(d, "initdb"), os.X_OK):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), d)
    return best and best[1]


def missing():
    """Why a real PostgreSQL cannot run here (a skip reason), or None."""
    if bindir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (apt-get install python3-psycopg2)"
    if os.geteuid() == 0 and _unprivileged() is None:
        return "running as root and there is no postgres or nobody user to run PostgreSQL as"
    return None


def _unprivileged():
    """(name, uid, gid) of the user root runs postgres as."""
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0:
            return name, pw.pw_uid, pw.pw_gid
    return None


def _wait(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class PostgreSQL:
    """One throwaway cluster. prefix: programs that exec postgres in place
    (`taskset -c 0` in the benchmark), so that the PID is still the postmaster's."""

    def __init__(self, prefix=(), settings=None):
        self.prefix = list(prefix)
        self.settings = {
            "listen_addresses": "",
            "max_connections": "200",   # 3 servers x 16 threads in the benchmark, + tests
            "shared_buffers": "32MB",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            # files in the data directory rather than /dev/shm, which a
            # container may keep tiny
            "dynamic_shared_memory_type": "mmap",
            "log_min_messages": "warning",
        }
        self.settings.update(settings or {})
        self.dir = None
        self.proc = None
        self.log_path = None
        self.user = None
        self.commands = []   # initdb's and postgres's argv, as run (for reports)

    # -- life cycle ----------------------------------------------------------

    def _run_as(self):
        """subprocess keyword arguments that drop root for postgres."""
        if os.geteuid() != 0:
            return {}
        _, uid, gid = self.user
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self, timeout=60):
        bins = bindir()
        if bins is None:
            raise RuntimeError(missing())
        if os.geteuid() == 0:
            self.user = _unprivileged()
            if self.user is None:
                raise RuntimeError(missing())
        # Not under pytest's tmp_path: its parents are 0700 root, which the
        # postgres user could not enter. mkdtemp makes it 0700 in /tmp.
        self.dir = tempfile.mkdtemp(prefix="gangway-pg-")
        data = os.path.join(self.dir, "data")
        if self.user:
            os.chown(self.dir, self.user[1], self.user[2])
        self.log_path = os.path.join(self.dir, "postgres.log")
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        initdb = [os.path.join(bins, "initdb"), "-D", data, "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        self.commands = [initdb]
        p = subprocess.run(initdb, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir,
                           env=env, timeout=timeout, **self._run_as())
        if p.returncode != 0:
            raise RuntimeError("initdb failed:\n" + p.stdout.decode("utf-8", "replace"))
        argv = self.prefix + [os.path.join(bins, "postgres"), "-D", data, "-p", str(PORT),
                              "-k", self.dir]
        for k, v in self.settings.items():
            argv += ["-c", "%s=%s" % (k, v)]
        self.commands.append(argv)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                                         **self._run_as())
        try:
            _wait(self._answers, timeout, "PostgreSQL to accept connections")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise RuntimeError("postgres exited %s:\n%s" % (self.proc.returncode, self.read_log()))
        import psycopg2
        try:
            self.connect().close()
        except psycopg2.OperationalError:
            return False  # socket not there yet, or "the database system is starting up"
        return True

    def stop(self, timeout=15):
        """Fast shutdown by PID, SIGKILL of that PID after timeout seconds;
        then the directory goes. Safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return self.proc.returncode if self.proc else None

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    # -- clients ---------------------------------------------------------------

    def env(self, dbname):
        """libpq's own variables: psycopg2, psql and the Django settings of
        tests/apps/pgsite all read them."""
        return {"PGHOST": self.dir, "PGPORT": str(PORT), "PGUSER": SUPERUSER,
                "PGDATABASE": dbname}

    def connect(self, dbname="postgres"):
        import psycopg2
        return psycopg2.connect(host=self.dir, port=PORT, user=SUPERUSER, dbname=dbname,
                                connect_timeout=5)

    def create_database(self, name):
        """A new, empty database (dropped first if a previous run left one)."""
        assert re.match(r"^[a-z_][a-z0-9_]*$", name), name
        c = self.connect()
        try:
            c.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with c.cursor() as cur:
                cur.execute("DROP DATABASE IF EXISTS %s" % name)
                cur.execute("CREATE DATABASE %s" % name)
        finally:
            c.close()
        return name


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL for the whole session (skipped when not installed);
    each user makes its own database with create_database()."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    pg = PostgreSQL().start()
    yield pg
    pg.stop()
