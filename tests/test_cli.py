"""Command line, app loading, environment, signals and the access log.

Startup failures run the binary directly (the fixture waits for "ready");
everything else goes through the `gangway` fixture. Apps: tests/apps/cli_*.py,
plus small modules written into tmp_path by the tests.
"""
import json
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import APPS, BIN, PYTHON, RawReader, live_children, request, wait_for


def run_gangway(*args, cwd=APPS, timeout=15):
    """Run the binary to completion; returns (rc, stdout, stderr)."""
    try:
        p = subprocess.run([BIN] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail("gangway %s did not exit within %ss; stderr so far:\n%s"
                    % (" ".join(args), timeout, (e.stderr or b"").decode(errors="replace")))
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def get(server, target, headers=()):
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % target
    head += "".join("%s: %s\r\n" % h for h in headers)
    return request(server, (head + "\r\n").encode("latin-1"))


def body_of(server, target="/"):
    r = get(server, target)
    assert r.status == 200, r.body[:300]
    return r.body.decode()


def write_app(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "def application(environ, start_response):\n"
        "    body = %r.encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(body)))])\n"
        "    return [body]\n" % text)
    return path


# ---------------------------------------------------------------------------
# --version, --help, usage errors
# ---------------------------------------------------------------------------

def _python_version():
    out = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout
    return out.decode().strip()


def _llhttp_version():
    try:
        with open("/usr/share/include/llhttp/llhttp.h") as f:
            h = f.read()
    except OSError:
        return None
    parts = [re.search(r"#define LLHTTP_VERSION_%s (\d+)" % k, h) for k in
             ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts) if all(parts) else None


def test_version():
    rc, out, err = run_gangway("--version")
    assert rc == 0, err
    assert "gangway" in out.lower()
    assert re.search(r"python\D{0,12}%s" % re.escape(_python_version()), out, re.I), out
    llhttp = _llhttp_version()
    assert re.search(r"llhttp\D{0,12}%s" % (re.escape(llhttp) if llhttp else r"\d+\.\d+\.\d+"),
                     out, re.I), out


def test_help_lists_options():
    rc, out, err = run_gangway("--help")
    assert rc == 0, err
    for opt in ("--http", "--module", "--wsgi-file", "--callable", "--chdir", "--pythonpath",
                "--virtualenv", "--env", "--access-log", "--disable-logging", "--version",
                "--help", "--body-buffer-size", "--limit-body"):
        assert opt in out, "%s missing from --help" % opt


def test_unknown_option_is_usage_error():
    rc, out, err = run_gangway("--http", "127.0.0.1:0", "--no-such-option-xyz", "hello")
    assert rc == 2
    assert "no-such-option-xyz" in err


def test_option_missing_its_value_is_usage_error():
    rc, out, err = run_gangway("hello", "--http")
    assert rc == 2
    assert "--http" in err or "http" in err


def test_option_with_bad_value_fails():
    rc, out, err = run_gangway("--http", "127.0.0.1:0", "--body-buffer-size", "lots", "hello")
    assert rc in (1, 2)
    assert "body-buffer-size" in err


# ---------------------------------------------------------------------------
# startup failures: exit 1 with one clear line
# ---------------------------------------------------------------------------

def assert_one_clear_line(rc, err, needle):
    assert rc == 1, "exit %s, stderr:\n%s" % (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, "expected one line on stderr, got:\n%s" % err
    assert needle in lines[0], err


@pytest.mark.parametrize("args,needle", [
    (["gangway_no_such_module_xyz:application"], "gangway_no_such_module_xyz"),
    (["cli_no_callable"], "application"),
    (["cli_custom_callable:no_such_callable_xyz"], "no_such_callable_xyz"),
    (["--callable", "no_such_callable_xyz", "cli_custom_callable"], "no_such_callable_xyz"),
    (["--wsgi-file", "/nonexistent-gangway-dir/site.wsgi"], "/nonexistent-gangway-dir/site.wsgi"),
    (["--chdir", "/nonexistent-gangway-dir", "hello"], "/nonexistent-gangway-dir"),
    (["--virtualenv", "/nonexistent-gangway-venv", "hello"], "/nonexistent-gangway-venv"),
    (["--access-log", "/nonexistent-gangway-dir/access.log", "hello"],
     "/nonexistent-gangway-dir/access.log"),
], ids=["missing-module", "no-callable", "missing-callable", "missing-callable-option",
        "missing-wsgi-file", "missing-chdir", "missing-virtualenv", "access-log-unwritable"])
def test_startup_failure_exits_1_with_one_line(args, needle):
    rc, out, err = run_gangway("--http", "127.0.0.1:0", *args)
    assert_one_clear_line(rc, err, needle)


def test_import_error_exits_1_with_traceback():
    rc, out, err = run_gangway("--http", "127.0.0.1:0", "cli_import_error:application")
    assert rc == 1, err
    assert "Traceback" in err
    assert "cli_import_error.py" in err and "_configure" in err
    assert "RuntimeError: gangway-import-boom" in err


def test_address_in_use_exits_1():
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        rc, out, err = run_gangway("--http", "127.0.0.1:%d" % port, "hello:application")
    finally:
        blocker.close()
    assert rc == 1, err
    assert str(port) in err or "in use" in err.lower(), err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


# ---------------------------------------------------------------------------
# finding the application
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected", [
    (["cli_custom_callable"], "callable: application"),
    (["cli_app_only"], "callable: app"),
    (["cli_custom_callable:serve_it"], "callable: serve_it"),
    (["--callable", "serve_it", "cli_custom_callable"], "callable: serve_it"),
    (["--module", "cli_custom_callable", "--callable", "serve_it"], "callable: serve_it"),
    (["-w", "cli_custom_callable:serve_it"], "callable: serve_it"),
    (["-w", "cli_app_only"], "callable: app"),
], ids=["default-application", "fallback-app", "positional-custom", "callable-option",
        "module-option", "w-with-callable", "w-fallback"])
def test_callable_selection(gangway, args, expected):
    assert body_of(gangway(*args)) == expected


@pytest.mark.parametrize("name", ["site.wsgi", "elsewhere/app_file.py"])
def test_wsgi_file(gangway, tmp_path, name):
    path = write_app(tmp_path / name, "wsgi-file " + name)
    assert body_of(gangway("--wsgi-file", str(path))) == "wsgi-file " + name


def test_wsgi_file_with_callable(gangway, tmp_path):
    path = tmp_path / "multi.wsgi"
    write_app(path, "default")
    with open(path, "a") as f:
        f.write("\n\ndef other(environ, start_response):\n"
                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                "    return [b'other callable']\n")
    assert body_of(gangway("--wsgi-file", str(path), "--callable", "other")) == "other callable"


def test_pythonpath_repeatable(gangway, tmp_path):
    a, b = tmp_path / "ppa", tmp_path / "ppb"
    a.mkdir()
    b.mkdir()
    (b / "gangway_pp_helper.py").write_text("VALUE = 'helper-from-b'\n")
    (a / "gangway_pp_app.py").write_text(
        "import gangway_pp_helper\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [gangway_pp_helper.VALUE.encode()]\n")
    s = gangway("--pythonpath", str(a), "--pythonpath", str(b), "gangway_pp_app:application")
    assert body_of(s) == "helper-from-b"


def test_chdir(gangway, tmp_path):
    d = tmp_path / "chdir-target"
    (d / "gangway_chdir_app.py").parent.mkdir()
    (d / "gangway_chdir_app.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.getcwd().encode()]\n")
    s = gangway("--chdir", str(d), "gangway_chdir_app:application")
    assert os.path.realpath(body_of(s)) == os.path.realpath(str(d))


def test_env_visible_in_os_environ(gangway):
    s = gangway("--env", "GANGWAY_CLI_A=alpha", "--env", "GANGWAY_CLI_B=b=c d",
                "cli_env_app:application")
    got = json.loads(body_of(s))
    want = {"GANGWAY_CLI_A": "alpha", "GANGWAY_CLI_B": "b=c d"}
    assert got["now"] == want
    assert got["at_import"] == want  # set before the app module is imported


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(d)], check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    sp = d / "lib" / ("python" + _python_version()) / "site-packages"
    assert sp.is_dir()
    (sp / "gangway_venv_probe.py").write_text("VALUE = 'from-venv'\n")
    return d


@pytest.mark.parametrize("opt", ["--virtualenv", "--home"])
def test_virtualenv_packages_importable(gangway, venv, opt):
    s = gangway(opt, str(venv), "cli_venv_app:application")
    value, prefix = body_of(s).split("|")
    assert value == "from-venv"


def test_virtualenv_sets_sys_prefix(gangway, venv):
    s = gangway("--virtualenv", str(venv), "cli_venv_app:application")
    value, prefix = body_of(s).split("|")
    assert os.path.realpath(prefix) == os.path.realpath(str(venv))


# ---------------------------------------------------------------------------
# dropping privileges: --uid and --gid (issue 14, item 5)
# ---------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


def ids_of(pid):
    """(Uid, Gid, Groups) of /proc/PID/status: real, effective, saved and
    filesystem ids as lists, the groups as a sorted list, all ints."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                got[k] = [int(x) for x in v.split()]
    return got["Uid"], got["Gid"], sorted(got["Groups"])


def unused_uid():
    """A uid no passwd entry names, and no group has as its gid."""
    import grp
    import pwd
    for uid in range(4242, 60000):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            return uid
    pytest.skip("no free uid")


def user_with_supplementary_group():
    """A passwd name that /etc/group lists as a member of a group other
    than its primary one, or None."""
    import grp
    import pwd
    for g in grp.getgrall():
        for name in g.gr_mem:
            try:
                if pwd.getpwnam(name).pw_gid != g.gr_gid:
                    return name
            except KeyError:
                pass
    return None


def assert_every_process_runs_as(server, uid, gid, groups):
    procs = [server.pid] + sorted(live_children(server.pid))
    assert len(procs) >= 2, procs  # the master and its worker
    for pid in procs:
        assert ids_of(pid) == ([uid] * 4, [gid] * 4, sorted(groups)), pid


@needs_root
@pytest.mark.parametrize("form", ["number", "name", "number-and-gid", "name-and-gid-name"])
def test_uid_sets_the_users_groups_whatever_its_form(gangway, form):
    """--uid 65534 (the form many uwsgi.ini files use) and --uid nobody both
    leave root's group 0 behind: gid, egid, saved gid and the group list are
    nobody's, in the master and in the workers."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    args = {"number": ["--uid", str(nobody.pw_uid)],
            "name": ["--uid", "nobody"],
            "number-and-gid": ["--uid", str(nobody.pw_uid), "--gid", str(nobody.pw_gid)],
            "name-and-gid-name": ["--uid", "nobody", "--gid", "nogroup"]}[form]
    s = gangway(*args, "hello")
    assert body_of(s) == "Hello, World!"
    assert_every_process_runs_as(s, nobody.pw_uid, nobody.pw_gid,
                                 os.getgrouplist("nobody", nobody.pw_gid))
    assert 0 not in ids_of(s.pid)[2]


@needs_root
@pytest.mark.parametrize("form", ["name", "number"])
def test_uid_takes_its_supplementary_groups(gangway, form):
    """A user's supplementary groups come with it, named or numbered (as
    initgroups gives them: uWSGI, nginx and systemd do the same)."""
    import pwd
    name = user_with_supplementary_group()
    if not name:
        pytest.skip("no user with a supplementary group on this system")
    pw = pwd.getpwnam(name)
    s = gangway("--uid", name if form == "name" else str(pw.pw_uid), "hello")
    want = os.getgrouplist(name, pw.pw_gid)
    assert len(set(want)) >= 2
    assert_every_process_runs_as(s, pw.pw_uid, pw.pw_gid, want)


@needs_root
def test_gid_beside_a_named_uid_is_the_primary_group(gangway):
    """--gid replaces the user's primary group; its supplementary groups
    stay (initgroups with that gid, as uWSGI does)."""
    import grp
    import pwd
    name = user_with_supplementary_group() or "nobody"
    pw = pwd.getpwnam(name)
    nogroup = grp.getgrnam("nogroup").gr_gid
    s = gangway("--uid", name, "--gid", "nogroup", "hello")
    assert_every_process_runs_as(s, pw.pw_uid, nogroup, os.getgrouplist(name, nogroup))


@needs_root
def test_no_initgroups_keeps_only_the_primary_group(gangway):
    """uWSGI's --no-initgroups: the user's (or --gid's) group, nothing else."""
    import pwd
    name = user_with_supplementary_group() or "nobody"
    pw = pwd.getpwnam(name)
    s = gangway("--uid", name, "--no-initgroups", "hello")
    assert_every_process_runs_as(s, pw.pw_uid, pw.pw_gid, [])
    s = gangway("--uid", str(pw.pw_uid), "--gid", "65534", "--no-initgroups", "hello")
    assert_every_process_runs_as(s, pw.pw_uid, 65534, [])


@needs_root
def test_uid_without_passwd_entry_needs_gid(gangway):
    """A uid no passwd entry names has no group: with --gid it runs with
    that group and no supplementary ones; without, the start is refused
    (exit 2, one line) rather than keep group 0."""
    uid = unused_uid()
    rc, out, err = run_gangway("--http", "127.0.0.1:0", "--uid", str(uid), "hello")
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert lines == ["gangway: invalid value '%d' for --uid (no passwd entry, so no group to "
                     "run as: add --gid (gangway will not keep root's group 0))" % uid], err
    rc, out, err = run_gangway("--check-config", "--uid", str(uid), "hello")
    assert rc == 2 and "--gid" in err, (rc, err)
    s = gangway("--uid", str(uid), "--gid", str(uid), "hello")
    assert body_of(s) == "Hello, World!"
    assert_every_process_runs_as(s, uid, uid, [])


@needs_root
def test_gid_alone_clears_the_supplementary_groups(gangway):
    s = gangway("--gid", "65534", "hello")
    assert_every_process_runs_as(s, 0, 65534, [])


@pytest.mark.parametrize("opt,value,why", [
    ("--uid", "no-such-user-xyz", "no such user"),
    ("--gid", "no-such-group-xyz", "no such group"),
])
def test_unknown_user_or_group_is_refused_at_start(opt, value, why):
    rc, out, err = run_gangway("--http", "127.0.0.1:0", opt, value, "hello")
    assert rc == 2, (rc, err)
    assert [line for line in err.splitlines() if line.strip()] == \
        ["gangway: invalid value '%s' for %s (%s)" % (value, opt, why)]


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------

def test_sigterm_finishes_inflight_request_then_exits_0(gangway, tmp_path):
    marker = tmp_path / "slow-started"
    s = gangway("--env", "GW_TEST_SLOW_MARKER=%s" % marker, "cli_slow_app:application")
    sock = s.connect(timeout=15)
    try:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(marker.exists, 10, what="the slow request to start")
        s.signal(signal.SIGTERM)
        r = RawReader(sock, timeout=15).read_response()
        assert (r.status, r.body) == (200, b"slow done")
        # The client still holds its keep-alive connection open: the stop must not wait on it.
        try:
            rc = s.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("gangway still running 10 s after SIGTERM")
    finally:
        sock.close()
    assert rc == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_idle_server_with_exit_0(gangway, sig):
    s = gangway("hello:application")
    assert body_of(s) == "Hello, World!"
    s.signal(sig)
    try:
        assert s.proc.wait(10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("gangway still running 10 s after %s" % sig.name)


# ---------------------------------------------------------------------------
# access log
# ---------------------------------------------------------------------------

AGENT = "gangway-test-agent/1.0"
REFERER = "http://referer.example/page"


def access_line_re(tag):
    # Combined Log Format, then the request duration.
    return re.compile(
        r'(?:^|\s)127\.0\.0\.1 \S+ \S+ \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
        r'"GET /cli-access-%s\?q=1 HTTP/1\.1" 200 13 "%s" "%s" '
        r'(?P<dur>\d+(?:\.\d+)?\s?(?:s|ms|us|\u00b5s|ns)?)[ \t]*$'
        % (tag, re.escape(REFERER), re.escape(AGENT)), re.M)


def hit(server, tag):
    r = get(server, "/cli-access-%s?q=1" % tag, headers=[("User-Agent", AGENT),
                                                          ("Referer", REFERER)])
    assert r.status == 200


def test_access_log_default_in_server_log(gangway):
    s = gangway("hello:application")
    hit(s, "default")
    wait_for(lambda: access_line_re("default").search(s.read_log()), 5,
             what="a combined-format access line")


def test_access_log_to_stdout(gangway):
    s = gangway("--access-log", "-", "hello:application")
    hit(s, "stdout")
    wait_for(lambda: access_line_re("stdout").search(s.read_log()), 5,
             what="a combined-format access line")


def test_access_log_to_file(gangway, tmp_path):
    path = tmp_path / "access.log"
    s = gangway("--access-log", str(path), "hello:application")
    hit(s, "file")

    def line():
        text = path.read_text() if path.exists() else ""
        return access_line_re("file").search(text)
    m = wait_for(line, 5, what="a combined-format access line in --access-log PATH")
    assert m.group(0).startswith("127.0.0.1 ")  # nothing before the combined fields
    assert "/cli-access-file" not in s.read_log()


def test_disable_logging_suppresses_access_log(gangway):
    s = gangway("--disable-logging", "hello:application")
    hit(s, "disabled")
    hit(s, "disabled")
    assert s.stop() == 0  # everything the server would log has been written now
    assert "/cli-access-disabled" not in s.read_log()
