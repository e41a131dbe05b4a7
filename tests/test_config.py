"""The configuration layer: one option table read from the command line,
GANGWAY_* environment variables and uWSGI-style ini files; value types;
precedence and --print-config; --check-config; misspellings; the ini reader
(line rules, sections, placeholders, includes); uWSGI options that gangway
implements, accepts or only warns about; --strict.

Most checks read `gangway --print-config`, which parses everything and exits
without starting anything; every behaviour that matters at run time is also
checked against a running server (the `gangway` fixture, or the binary run
to completion). Apps: tests/apps/cfg_app.py (reports its pid, the pid that
imported it, cwd, sys.path, sys.prefix, environment variables) and
tests/apps/hello.py. Ini files are written into tmp_path, except
tests/ini/site.ini, a realistic uWSGI deployment file. Every wait is a
bounded poll; every process stopped here was started here, by pid.
"""
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess

import pytest

from conftest import APPS, BIN, PYTHON, RawReader, children, request, wait_for

TESTS = os.path.dirname(os.path.abspath(__file__))
INI_DIR = os.path.join(TESTS, "ini")
NCPU = os.sysconf("SC_NPROCESSORS_ONLN")
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------
# the sanitizer build (GW_TEST_BIN=.../gangway-asan GW_TEST_SANITIZED=1)
# ---------------------------------------------------------------------------

SANITIZED = os.environ.get("GW_TEST_SANITIZED") == "1"


pytestmark = pytest.mark.usefixtures("sanitizer_reports")  # (conftest.py)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def clean_env(extra=None):
    """The test's environment without GANGWAY_* (gangway would read them)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("GANGWAY_")}
    e.update(extra or {})
    return e


def run(*args, env=None, cwd=APPS, timeout=30):
    """Run the binary to completion; (rc, stdout, stderr)."""
    try:
        p = subprocess.run([BIN] + [str(a) for a in args], cwd=str(cwd), env=clean_env(env),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail("gangway %s did not exit within %ss; stderr so far:\n%s"
                    % (" ".join(map(str, args)), timeout,
                       (e.stderr or b"").decode(errors="replace")))
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def parse_config(text):
    """--print-config output -> {option: [(value, where), ...]}."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        assert line.endswith(")"), line
        i = line.rindex(" (")  # the origin is last and never contains " ("
        left, where = line[:i].rstrip(), line[i + 2:-1]
        name, sep, value = left.partition(" =")
        assert sep, line
        out.setdefault(name, []).append((value[1:] if value.startswith(" ") else value, where))
    return out


def config(*args, env=None, cwd=APPS):
    """--print-config with args: ({option: [(value, where)]}, stderr)."""
    rc, out, err = run("--print-config", *args, env=env, cwd=cwd)
    assert rc == 0, "exit %d, stderr:\n%s" % (rc, err)
    return parse_config(out), err


def one(cfg, name):
    """(value, where) of a single-valued option."""
    assert name in cfg, "%s missing from --print-config" % name
    assert len(cfg[name]) == 1, cfg[name]
    return cfg[name][0]


def values(cfg, name):
    return [v for v, _ in cfg.get(name, []) if v != ""]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def line_of(path, needle):
    """1-based number of the first line of path that contains needle."""
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if needle.encode() in line:
                return i
    raise AssertionError("%r not in %s" % (needle, path))


def err_lines(err):
    return [line for line in err.splitlines() if line.strip()]


def warnings_in(text):
    return [line for line in text.splitlines() if "gangway: warning:" in line]


def get(server, target="/", timeout=10):
    raw = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % target)
    return request(server, raw.encode("latin-1"), timeout=timeout)


def get_unix(path, target="/", timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % target).encode("latin-1"))
        return RawReader(s, timeout).read_response()
    finally:
        s.close()


def app_env(server, name):
    """os.environ[name] inside the app (cfg_app), or None when unset."""
    r = get(server, "/env/" + name)
    assert r.status in (200, 404), (r.status, r.body[:200])
    return r.body.decode("utf-8") if r.status == 200 else None


def app_info(server):
    r = get(server, "/")
    assert r.status == 200, (r.status, r.body[:300])
    return json.loads(r.body)


def uwsgi_packet(path, pad=0):
    """A uwsgi request (what nginx's uwsgi_pass sends) for GET path; pad adds an
    X-Pad header of that many bytes."""
    pairs = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", path), ("PATH_INFO", path),
             ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "test"),
             ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "5000"),
             ("HTTP_HOST", "test")] + ([("HTTP_X_PAD", "p" * pad)] if pad else [])
    blk = b""
    for k, v in pairs:
        k, v = k.encode(), v.encode()
        blk += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return struct.pack("<BHB", 0, len(blk), 0) + blk


def uwsgi_get(sock, path, timeout=10, pad=0):
    """Send a uwsgi request on a connected socket; read the HTTP answer to the close."""
    sock.settimeout(timeout)
    try:
        sock.sendall(uwsgi_packet(path, pad))
        return RawReader(sock, timeout).read_response()
    finally:
        sock.close()


def uwsgi_get_unix(path, target, timeout=10, pad=0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return uwsgi_get(s, target, timeout, pad)


def uwsgi_refused_unix(path, target, pad, timeout=10):
    """True when the server closes without an answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    try:
        try:
            s.sendall(uwsgi_packet(target, pad))
        except (BrokenPipeError, ConnectionResetError):
            return True
        data = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            data += b
        return data == b""
    finally:
        s.close()


def banner_workers(log, pid):
    m = re.search(r"master pid %d, (\d+) worker\(s\)" % pid, log)
    assert m, "no banner in the log:\n" + log
    return int(m.group(1))


def listening_tcp(port):
    """[(backlog)] of the LISTEN sockets on 127.0.0.1:port, from ss."""
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], stdout=subprocess.PIPE,
                         check=True, timeout=10).stdout.decode()
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# 1. one option table: --help, command line, ini, environment, man page
# ---------------------------------------------------------------------------

HELP_OPT_RE = re.compile(r"^  (?:-(?P<short>\S), |    )--(?P<name>[a-z][a-z0-9-]*)(?P<rest>.*)$")
ACTIONS = {"help", "version", "print-man", "print-config"}  # they act instead of configuring


def help_options():
    """[{name, short, meta, aliases, group}] from --help, in its order."""
    rc, out, err = run("--help")
    assert rc == 0, err
    opts, group = [], None
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z][A-Za-z ]*):$", line)
        if m:
            group = m.group(1)
            continue
        m = HELP_OPT_RE.match(line)
        if not m:
            continue
        rest = m.group("rest")
        meta = None
        toks = rest.split()
        if rest.startswith(" ") and toks and re.match(r"^[A-Z/][^ ]*$", toks[0]):
            meta = toks[0]
        a = re.search(r"\(also: ([^)]*)\)\s*$", rest)
        opts.append({"name": m.group("name"), "short": m.group("short"), "meta": meta,
                     "aliases": a.group(1).split() if a else [], "group": group})
    assert len(opts) > 50, out
    return opts


def test_help_is_grouped_and_lists_every_option():
    rc, out, err = run("--help")
    assert rc == 0 and not err
    headers = [l[:-1] for l in out.splitlines() if re.match(r"^[A-Za-z][A-Za-z ]*:$", l)]
    assert len(headers) == len(set(headers)) >= 6, headers  # each group once
    assert headers[:2] == ["Application", "Sockets"], headers
    assert headers[-1] == "uWSGI compatibility", headers
    for h in ("Processes", "Static files", "Limits", "Timeouts", "Configuration"):
        assert h in headers, (h, headers)
    assert [h for h in headers if h.startswith("Logging")], headers
    opts = help_options()
    assert all(o["group"] for o in opts)
    names = [o["name"] for o in opts]
    assert len(names) == len(set(names)), "an option listed twice"
    # --print-config prints every option that configures something
    cfg, _ = config("hello")
    assert set(cfg) == set(names) - ACTIONS, (set(cfg) ^ (set(names) - ACTIONS))
    for o in opts:
        assert o["group"] != "uWSGI compatibility" or o["name"] in (
            "plugins", "need-app", "die-on-term", "enable-threads",
            "single-interpreter", "thunder-lock"), o


def sample(o, ini_path):
    """(value to give, value --print-config shows) for option o."""
    meta = o["meta"]
    if meta is None:
        return None, "true"  # a flag
    if meta == "N|auto":
        return "3", "3"
    if meta in ("N", "BYTES", "MB", "KIB", "SECONDS"):
        return "7", "7"
    if o["name"] == "ini":
        return str(ini_path), str(ini_path)
    return "v-" + o["name"], "v-" + o["name"]


def env_name(name):
    return "GANGWAY_" + name.upper().replace("-", "_")


@pytest.mark.parametrize("source", ["cli", "cli-equals", "cli-short", "ini", "env"])
def test_every_option_from_every_source(tmp_path, source):
    """Every option of --help, under its name and each alias, is a command-line
    flag, an ini key and a GANGWAY_<NAME> variable, all landing in one field."""
    empty = write(tmp_path / "empty.ini", "[uwsgi]\n")
    failures, tried = [], 0
    for o in help_options():
        if o["name"] in ACTIONS:
            continue
        give, shown = sample(o, empty)
        names = [o["name"]] + o["aliases"]
        if source == "cli-short":
            names = ["-" + o["short"]] if o["short"] else []
        for n in names:
            env, args, where = None, [], None
            if source == "cli":
                args = ["--" + n] + ([give] if give is not None else [])
                where = "command line"
            elif source == "cli-short":
                args = [n] + ([give] if give is not None else [])
                where = "command line"
            elif source == "cli-equals":
                args = ["--%s=%s" % (n, give if give is not None else "yes")]
                where = "command line"
            elif source == "ini":
                if o["name"] == "ini":
                    continue  # `ini = FILE` in a file is an include (tested below)
                path = write(tmp_path / ("o-%s.ini" % n),
                             "[uwsgi]\n%s = %s\n" % (n, give if give is not None else "true"))
                args, where = [str(path)], "%s:2" % path
            else:
                env = {env_name(n): give if give is not None else "1"}
                where = env_name(n)
            tried += 1
            rc, out, err = run("--print-config", *args, env=env)
            got = parse_config(out).get(o["name"]) if rc == 0 else None
            if rc != 0 or got != [(shown, where)] or "warning" in err or "error" in err:
                failures.append("%s via %r: rc=%d got %r want %r; stderr %r"
                                % (o["name"], n, rc, got, [(shown, where)], err.strip()))
    assert tried > (8 if source == "cli-short" else 60), tried
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("args,name,want", [
    (["--max-requests", "5"], "max-requests", "5"),
    (["--max-requests=5"], "max-requests", "5"),
    (["-R", "5"], "max-requests", "5"),
    (["-p", "2"], "workers", "2"),
    (["--processes", "2"], "workers", "2"),
    (["--workers=2"], "workers", "2"),
    (["--http", "127.0.0.1:1", "--http=127.0.0.1:2"], "http", ["127.0.0.1:1", "127.0.0.1:2"]),
])
def test_command_line_forms(args, name, want):
    cfg, err = config(*(args + ["hello"]))
    got = values(cfg, name)
    assert got == (want if isinstance(want, list) else [want])
    assert all(w == "command line" for _, w in cfg[name])


def test_environment_aliases_and_internal_variables():
    cfg, err = config("hello", env={"GANGWAY_PROCESSES": "3", "GANGWAY_HTTP_SOCKET": "127.0.0.1:9",
                                    "GANGWAY_MAX_REQUESTS_DELTA": "4"})
    assert one(cfg, "workers") == ("3", "GANGWAY_PROCESSES")
    assert cfg["http"] == [("127.0.0.1:9", "GANGWAY_HTTP_SOCKET")]
    assert one(cfg, "max-requests-jitter") == ("4", "GANGWAY_MAX_REQUESTS_DELTA")
    # GANGWAY__* is gangway's own hand-over: not an option, no warning (even --strict)
    rc, out, err = run("--print-config", "--strict", "hello",
                       env={"GANGWAY__SOMETHING": "1", "GANGWAY__WORKERS": "9"})
    assert rc == 0 and err == "", err
    assert one(parse_config(out), "workers") == ("1", "default")


def test_unknown_environment_variable_warns_and_server_starts(gangway):
    s = gangway("cfg_app", env={"GANGWAY_WORKER": "2"})
    log = s.read_log()
    assert ("gangway: warning: GANGWAY_WORKER is not an option (did you mean GANGWAY_WORKERS?)"
            in log.splitlines()), log
    assert len(warnings_in(log)) == 1, log
    assert banner_workers(log, s.pid) == 1
    assert get(s, "/pid").status == 200


def test_print_man_lists_every_option(tmp_path):
    rc, man, err = run("--print-man")
    assert rc == 0 and not err
    assert man.startswith(".\\\"") or man.startswith(".TH"), man[:200]
    assert re.search(r"^\.TH GANGWAY 1 ", man, re.M)
    page = tmp_path / "gangway.1"
    page.write_text(man)
    if shutil.which("groff"):
        g = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert g.returncode == 0 and not g.stderr, g.stderr.decode()
        text = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=1000n",
                               str(page)], stdout=subprocess.PIPE, timeout=30,
                              check=True).stdout.decode()
    else:  # read the troff source: \- is a dash, \fX changes the font
        text = re.sub(r"\\f[BIRP]", "", man).replace("\\-", "-").replace("\\&", "")
    missing = []
    for o in help_options():
        for n in [o["name"]] + o["aliases"]:
            if not re.search(r"(?<![\w-])--%s(?![\w-])" % re.escape(n), text) and \
                    not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(n), text):
                missing.append(n)
        if not re.search(r"(?<![\w-])--%s(?![\w-])" % re.escape(o["name"]), text):
            missing.append("--" + o["name"])
        if o["short"] and not re.search(r"(?<![\w-])-%s(?![\w-])" % re.escape(o["short"]),
                                        text):
            missing.append("-" + o["short"])
        if o["group"] not in text:
            missing.append("group " + o["group"])
    assert not missing, "in --help but not in the man page: %s" % missing


# ---------------------------------------------------------------------------
# 2. value types and bad values
# ---------------------------------------------------------------------------

BOOLS = [("true", "true"), ("false", "false"), ("yes", "true"), ("no", "false"),
         ("on", "true"), ("off", "false"), ("1", "true"), ("0", "false"),
         ("TRUE", "true"), ("False", "false"), ("YeS", "true"), ("oFF", "false")]


@pytest.mark.parametrize("given,want", BOOLS, ids=[g for g, _ in BOOLS])
def test_bool_spellings(tmp_path, given, want):
    ini = write(tmp_path / "b.ini", "[uwsgi]\nvacuum = %s\n" % given)
    assert one(config("--vacuum=" + given, "hello")[0], "vacuum") == (want, "command line")
    assert one(config(ini, "hello")[0], "vacuum") == (want, "%s:2" % ini)
    assert one(config("hello", env={"GANGWAY_VACUUM": given})[0], "vacuum") == \
        (want, "GANGWAY_VACUUM")


def test_bare_flags_mean_true(tmp_path):
    cfg, _ = config("--vacuum", "--reuse-port", "hello")
    assert one(cfg, "vacuum") == ("true", "command line")
    assert one(cfg, "reuse-port") == ("true", "command line")
    ini = write(tmp_path / "bare.ini", "[uwsgi]\nmaster\nvacuum =\n  reuse-port  \n"
                "static-gzip=\n")
    cfg, err = config(ini, "hello")
    assert one(cfg, "master") == ("true", "%s:2" % ini)
    assert one(cfg, "vacuum") == ("true", "%s:3" % ini)
    assert one(cfg, "reuse-port") == ("true", "%s:4" % ini)
    assert one(cfg, "static-gzip") == ("true", "%s:5" % ini)
    assert "warning" not in err


SIZES = [("64k", 65536), ("64K", 65536), ("64kb", 65536), ("64KB", 65536), ("1m", 1 << 20),
         ("3M", 3 << 20), ("1mb", 1 << 20), ("1g", 1 << 30), ("2gb", 2 << 30), ("100", 100)]


@pytest.mark.parametrize("given,want", SIZES, ids=[g for g, _ in SIZES])
def test_sizes(tmp_path, given, want):
    ini = write(tmp_path / "s.ini", "[uwsgi]\nlimit-post = %s\n" % given)
    assert one(config("--limit-body", given, "hello")[0], "limit-body") == \
        (str(want), "command line")
    assert one(config(ini, "hello")[0], "limit-body") == (str(want), "%s:2" % ini)
    assert one(config("hello", env={"GANGWAY_BODY_BUFFER_SIZE": given})[0],
               "body-buffer-size") == (str(want), "GANGWAY_BODY_BUFFER_SIZE")


DURATIONS = [("30s", 30), ("2m", 120), ("1h", 3600), ("1d", 86400), ("45", 45), ("0", 0)]


@pytest.mark.parametrize("given,want", DURATIONS, ids=[g for g, _ in DURATIONS])
def test_durations(tmp_path, given, want):
    ini = write(tmp_path / "d.ini", "[uwsgi]\nharakiri = %s\n" % given)
    assert one(config("--max-worker-lifetime", given, "hello")[0], "max-worker-lifetime") == \
        (str(want), "command line")
    assert one(config(ini, "hello")[0], "harakiri") == (str(want), "%s:2" % ini)
    assert one(config("hello", env={"GANGWAY_GRACEFUL_TIMEOUT": given})[0],
               "graceful-timeout") == (str(want), "GANGWAY_GRACEFUL_TIMEOUT")


def test_workers_auto(tmp_path):
    ini = write(tmp_path / "w.ini", "[uwsgi]\nprocesses = auto\n")
    assert one(config("--workers", "auto", "hello")[0], "workers") == (str(NCPU), "command line")
    assert one(config(ini, "hello")[0], "workers") == (str(NCPU), "%s:2" % ini)
    assert one(config("hello", env={"GANGWAY_WORKERS": "auto"})[0], "workers") == \
        (str(NCPU), "GANGWAY_WORKERS")


BAD = [("max-requests", "x"), ("max-requests", "-1"), ("max-requests", "5x"),
       ("limit-body", "1t"), ("limit-body", "64kk"), ("harakiri", "1w"), ("harakiri", "5ms"),
       ("vacuum", "maybe"), ("workers", "0"), ("workers", "257"), ("workers", "many")]


@pytest.mark.parametrize("source", ["cli", "ini", "env"])
@pytest.mark.parametrize("name,bad", BAD, ids=["%s=%s" % b for b in BAD])
def test_bad_value_is_one_line_and_exit_2(tmp_path, source, name, bad):
    env, args = None, []
    if source == "cli":
        # a flag takes its value after '=' (a separate word would be the app)
        args = ["--%s=%s" % (name, bad)] if name == "vacuum" else ["--%s" % name, bad]
        want = "gangway: invalid value '%s' for --%s" % (bad, name)
    elif source == "ini":
        ini = write(tmp_path / "bad.ini", "[uwsgi]\n# a comment\nmaster = true\n%s = %s\n"
                    % (name, bad))
        args = [str(ini)]
        want = "gangway: %s:4: invalid value '%s' for %s" % (ini, bad, name)
    else:
        env = {env_name(name): bad}
        want = "gangway: %s: invalid value '%s' for %s" % (env_name(name), bad, name)
    rc, out, err = run(*(args + ["hello"]), env=env)
    assert rc == 2, (rc, err)
    assert err_lines(err) == [want]
    assert out == ""


# Values a number's type could hold but the server cannot use: past what a
# consumer can represent (seconds become 64-bit milliseconds; listen() and
# poll() take ints), or that make it useless (issues 14 and 20). Refused when
# parsed, with the range in the one line.
OUT_OF_RANGE = [
    ("harakiri", "18446744073709551615", "at most 4294967295 seconds"),
    ("keepalive-timeout", "99999999999999999", "at most 4294967295 seconds"),
    ("graceful-timeout", "99999999999999999999999", "at most 4294967295 seconds"),
    ("harakiri-grace", "4294967296", "at most 4294967295 seconds"),
    ("max-worker-lifetime", "71582789m", "at most 4294967295 seconds"),
    ("min-worker-lifetime", "49711d", "at most 4294967295 seconds"),
    ("shutdown-delay", "1193047h", "at most 4294967295 seconds"),
    ("static-cache", "4294967296s", "at most 4294967295 seconds"),
    ("defer-accept", "5000000000", "at most 4294967295 seconds"),
    ("header-timeout", "4294967296", "at most 4294967295 seconds"),
    ("body-timeout", "4294967296", "at most 4294967295 seconds"),
    ("write-timeout", "2147484", "at most 2147483 seconds"),
    ("limit-body", "17179869184g", "at most 18446744073709551615"),
    ("body-buffer-size", "18014398509481984m", "at most 18446744073709551615"),
    ("limit-request-headers", "99999999999999999999", "at most 18446744073709551615"),
    ("listen", "2147483648", "at most 2147483647"),
    ("max-requests", "4294967296", "at most 4294967295"),
    ("max-requests-jitter", "4294967296", "at most 4294967295"),
    ("max-connections", "0", "at least 1"),
    ("listen", "0", "at least 1"),
    ("header-timeout", "0", "at least 1 second"),
    ("body-timeout", "0s", "at least 1 second"),
    ("keepalive-timeout", "0", "at least 1 second"),
    ("write-timeout", "0", "at least 1 second"),
    ("limit-request-line", "0", "at least 1"),
    ("limit-request-field-size", "0k", "at least 1"),
    ("limit-request-fields", "0", "at least 1"),
    ("limit-request-headers", "0", "at least 1"),
]


@pytest.mark.parametrize("source", ["cli", "ini", "env"])
@pytest.mark.parametrize("name,bad,why", OUT_OF_RANGE,
                         ids=["%s=%s" % (n, b) for n, b, _ in OUT_OF_RANGE])
def test_out_of_range_value_is_one_line_and_exit_2(tmp_path, source, name, bad, why):
    env, args = None, ["--http", "127.0.0.1:0", "--check-config"]
    if source == "cli":
        args += ["--" + name, bad]
        want = "gangway: invalid value '%s' for --%s (%s)" % (bad, name, why)
    elif source == "ini":
        ini = write(tmp_path / "range.ini", "[uwsgi]\nmaster = true\n%s = %s\n" % (name, bad))
        args.append(str(ini))
        want = "gangway: %s:3: invalid value '%s' for %s (%s)" % (ini, bad, name, why)
    else:
        env = {env_name(name): bad}
        want = "gangway: %s: invalid value '%s' for %s (%s)" % (env_name(name), bad, name, why)
    rc, out, err = run(*(args + ["hello"]), env=env)
    assert (rc, err_lines(err)) == (2, [want])
    assert out == ""


def test_range_limits_themselves_are_accepted():
    cfg, err = config("--harakiri", "4294967295", "--max-worker-lifetime", "71582788m",
                      "--write-timeout", "2147483", "--listen", "2147483647",
                      "--max-connections", "1", "--keepalive-timeout", "1",
                      "--max-requests", "4294967295", "--max-requests-jitter", "4294967295",
                      "--limit-body", "17179869183g", "--limit-request-line", "1", "hello")
    assert one(cfg, "harakiri") == ("4294967295", "command line")
    assert one(cfg, "max-worker-lifetime") == (str(71582788 * 60), "command line")
    assert one(cfg, "write-timeout") == ("2147483", "command line")
    assert one(cfg, "listen") == ("2147483647", "command line")
    assert one(cfg, "max-connections") == ("1", "command line")
    assert one(cfg, "limit-body") == (str(17179869183 << 30), "command line")
    # 0 keeps its meaning where it has one
    cfg, err = config("--harakiri", "0", "--max-requests", "0", "--static-cache", "0",
                      "--graceful-timeout", "0", "--limit-body", "0",
                      "--body-buffer-size", "0", "hello")
    assert one(cfg, "harakiri") == ("0", "command line")
    assert one(cfg, "limit-body") == ("0", "command line")


LATE_CHECKED = [
    # (source, option, bad value): values checked only after parsing (src/proc/start.c)
    ("cli", "buffer-size", "3"),
    ("ini", "buffer-size", "70000"),
    ("ini", "chmod-socket", "999"),
    ("ini", "env", "NOEQUALS"),
    ("env", "umask", "9x"),
    ("ini", "uwsgi-allow-from", "10.0.0.0/99"),
]


@pytest.mark.parametrize("source,name,bad", LATE_CHECKED,
                         ids=["%s-%s" % (s, n) for s, n, _ in LATE_CHECKED])
def test_values_checked_after_parsing_report_like_bad_values(tmp_path, source, name, bad):
    env, args = None, ["--http", "127.0.0.1:0"]
    if source == "cli":
        args += ["--" + name, bad]
        want = "gangway: invalid value '%s' for --%s" % (bad, name)
    elif source == "ini":
        ini = write(tmp_path / "late.ini", "[uwsgi]\nmaster = true\n%s = %s\n" % (name, bad))
        args.append(str(ini))
        want = "gangway: %s:3: invalid value '%s' for %s" % (ini, bad, name)
    else:
        env = {env_name(name): bad}
        want = "gangway: %s: invalid value '%s' for %s" % (env_name(name), bad, name)
    rc, out, err = run(*(args + ["hello"]), env=env)
    lines = err_lines(err)
    # The same line as a value the option's parser refuses, plus why.
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(want + " ("), (rc, lines)


# ---------------------------------------------------------------------------
# 3. precedence and --print-config
# ---------------------------------------------------------------------------

def test_precedence_command_line_env_ini_default(tmp_path):
    ini = write(tmp_path / "p.ini", "[uwsgi]\nworkers = 3\nharakiri = 20\nmax-requests = 9\n")
    cfg, _ = config(ini, "hello")
    assert one(cfg, "workers") == ("3", "%s:2" % ini)
    env = {"GANGWAY_WORKERS": "2", "GANGWAY_HARAKIRI": "30"}
    cfg, _ = config(ini, "hello", env=env)
    assert one(cfg, "workers") == ("2", "GANGWAY_WORKERS")
    assert one(cfg, "harakiri") == ("30", "GANGWAY_HARAKIRI")
    assert one(cfg, "max-requests") == ("9", "%s:4" % ini)
    assert one(cfg, "max-worker-lifetime") == ("0", "default")
    cfg, _ = config(ini, "-p", "1", "hello", env=env)
    assert one(cfg, "workers") == ("1", "command line")
    assert one(cfg, "harakiri") == ("30", "GANGWAY_HARAKIRI")
    # the order on the command line does not matter: the ini is still weaker
    cfg, _ = config("-p", "1", ini, "hello", env=env)
    assert one(cfg, "workers") == ("1", "command line")


@pytest.mark.parametrize("env,cli,want", [
    ({}, [], 3),
    ({"GANGWAY_WORKERS": "2"}, [], 2),
    ({"GANGWAY_WORKERS": "2"}, ["--workers", "1"], 1),
], ids=["ini", "env-over-ini", "cli-over-env"])
def test_precedence_on_a_running_server(gangway, tmp_path, env, cli, want):
    ini = write(tmp_path / "w.ini", "[uwsgi]\nworkers = 3\nmodule = cfg_app\n")
    s = gangway(*(cli + [str(ini)]), env=env)
    log = s.read_log()
    assert banner_workers(log, s.pid) == want
    assert len(re.findall(r"worker \d+ ready \(pid \d+\)", log)) == want
    assert len(children(s.pid)) == want


def test_list_option_from_stronger_source_replaces(tmp_path):
    ini = write(tmp_path / "l.ini", "[uwsgi]\nhttp-socket = 127.0.0.1:1111\n"
                "http-socket = 127.0.0.1:2222\nenv = A=1\nenv = B=2\n")
    cfg, _ = config(ini, "hello")
    assert values(cfg, "http") == ["127.0.0.1:1111", "127.0.0.1:2222"]
    assert values(cfg, "env") == ["A=1", "B=2"]
    cfg, _ = config(ini, "hello", env={"GANGWAY_HTTP": "127.0.0.1:3333"})
    assert cfg["http"] == [("127.0.0.1:3333", "GANGWAY_HTTP")]
    assert values(cfg, "env") == ["A=1", "B=2"]  # not given elsewhere: the ini's stay
    cfg, _ = config(ini, "--http", "127.0.0.1:4444", "--http=:5555", "hello",
                    env={"GANGWAY_HTTP": "127.0.0.1:3333"})
    assert cfg["http"] == [("127.0.0.1:4444", "command line"), (":5555", "command line")]
    # repeated in two ini files (one source), values accumulate
    ini2 = write(tmp_path / "l2.ini", "[uwsgi]\nhttp-socket = 127.0.0.1:6666\n")
    cfg, _ = config("--ini", ini, "--ini", ini2, "hello")
    assert values(cfg, "http") == ["127.0.0.1:1111", "127.0.0.1:2222", "127.0.0.1:6666"]


def test_print_config_origin_of_each_list_value(tmp_path):
    ini = write(tmp_path / "l.ini", "[uwsgi]\nhttp-socket = 127.0.0.1:1111\n"
                "http-socket = 127.0.0.1:2222\n")
    cfg, _ = config(ini, "hello")
    assert cfg["http"] == [("127.0.0.1:1111", "%s:2" % ini), ("127.0.0.1:2222", "%s:3" % ini)]


def test_list_replaced_on_a_running_server(gangway, tmp_path):
    sock = tmp_path / "from-ini.sock"
    ini = write(tmp_path / "r.ini", "[uwsgi]\nhttp-socket = unix:%s\nmodule = cfg_app\n" % sock)
    s = gangway(str(ini))  # the fixture adds --http 127.0.0.1:0 on the command line
    log = s.read_log()
    assert len(re.findall(r"listening on ", log)) == 1, log
    assert "listening on http://127.0.0.1:%d" % s.port in log
    assert not os.path.exists(sock)
    assert get(s, "/pid").status == 200


def test_list_accumulates_on_a_running_server(gangway, tmp_path):
    sock = tmp_path / "second.sock"
    ini = write(tmp_path / "a.ini", "[uwsgi]\nhttp-socket = 127.0.0.1:0\n"
                "http-socket = unix:%s\nmodule = cfg_app\n" % sock)
    s = gangway(str(ini), listen=False)
    log = s.read_log()
    assert "listening on http://unix:%s" % sock in log
    assert s.port and get(s, "/pid").status == 200
    assert get_unix(sock, "/pid").status == 200


def test_print_config_starts_nothing(tmp_path):
    sock, pid = tmp_path / "s.sock", tmp_path / "g.pid"
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, out, err = run("--print-config", "--http", "unix:%s" % sock,
                           "--http", "127.0.0.1:%d" % port, "--pidfile", pid,
                           "--log-file", tmp_path / "log", "no_such_module_xyz")
    finally:
        busy.close()
    assert rc == 0, err
    assert err == ""
    cfg = parse_config(out)
    assert one(cfg, "module") == ("no_such_module_xyz", "command line")
    assert out.splitlines()[0].startswith("#")
    for line in out.splitlines()[1:]:
        assert re.match(r"^[a-z][a-z0-9-]* = .*\((default|command line|GANGWAY_[A-Z_]+|.+:\d+)\)$",
                        line), line
    assert not sock.exists() and not pid.exists() and not (tmp_path / "log").exists()


def test_print_config_prints_long_values_whole(tmp_path):
    long = "/srv/" + "d" * 995
    ini = write(tmp_path / "long.ini", "[uwsgi]\nchdir = %s\n" % long)
    assert one(config(ini, "hello")[0], "chdir") == (long, "%s:2" % ini)


# ---------------------------------------------------------------------------
# 4. --check-config
# ---------------------------------------------------------------------------

def test_check_config(tmp_path):
    sock, pid = tmp_path / "s.sock", tmp_path / "g.pid"
    ini = write(tmp_path / "ok.ini", "[uwsgi]\nmodule = cfg_app\nsocket = %s\n"
                "pidfile = %s\nprocesses = 2\n" % (sock, pid))
    busy = socket.socket()
    try:  # the address is in use: --check-config does not bind, so that is no error
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        rc, out, err = run("--check-config", ini, "--http", "127.0.0.1:%d"
                           % busy.getsockname()[1])
    finally:
        busy.close()
    assert (rc, err) == (0, "")
    assert not sock.exists() and not pid.exists()

    rc, out, err = run("--check-config", "no_such_module_xyz")
    assert rc == 1
    lines = err_lines(err)
    assert len(lines) == 1 and "cannot import module 'no_such_module_xyz'" in lines[0], err

    rc, out, err = run("--check-config", "cli_import_error")
    assert rc == 1
    assert "RuntimeError: gangway-import-boom" in err and "cli_import_error" in err

    rc, out, err = run("--check-config", "--workers", "x", "cfg_app")
    assert rc == 2 and err_lines(err) == ["gangway: invalid value 'x' for --workers"]

    bad = write(tmp_path / "bad.ini", "[uwsgi]\nmodule = cfg_app:no_such_callable\n")
    rc, out, err = run("--check-config", bad)
    assert rc == 1 and "no_such_callable" in err


def test_check_config_rejects_an_unparseable_address():
    rc, out, err = run("--check-config", "--http", "not an address", "cfg_app")
    assert rc != 0
    assert "not an address" in err


# ---------------------------------------------------------------------------
# 5. misspelt options
# ---------------------------------------------------------------------------

def test_misspelt_option_on_the_command_line():
    rc, out, err = run("--max-request", "5", "hello")
    assert rc == 2
    assert err_lines(err) == ["gangway: unknown option '--max-request' "
                              "(did you mean --max-requests?)"]
    rc, out, err = run("--max-request=5", "hello")
    assert rc == 2 and "did you mean --max-requests?" in err


def test_misspelt_ini_key_warns_and_server_starts(gangway, tmp_path):
    ini = write(tmp_path / "m.ini", "[uwsgi]\nmodule = cfg_app\nmax-request = 5\n")
    s = gangway(str(ini))
    log = s.read_log()
    want = "gangway: warning: %s:3: unknown option 'max-request' (did you mean max-requests?)" \
        % ini
    assert want in log.splitlines(), log
    assert warnings_in(log) == [want]
    assert get(s, "/pid").status == 200


# ---------------------------------------------------------------------------
# 6. ini files: sources, sections, line rules
# ---------------------------------------------------------------------------

def test_ini_sources(tmp_path):
    ini = write(tmp_path / "src.ini", "[uwsgi]\nworkers = 3\n")
    where = ("3", "%s:2" % ini)
    assert one(config("--ini", ini, "hello")[0], "workers") == where
    assert one(config("--ini=%s" % ini, "hello")[0], "workers") == where
    assert one(config(ini, "hello")[0], "workers") == where
    assert one(config("hello", env={"GANGWAY_INI": str(ini)})[0], "workers") == where
    # relative to the working directory
    assert one(config("src.ini", "hello", cwd=tmp_path)[0], "workers") == ("3", "src.ini:2")


def test_ini_sections(tmp_path):
    ini = write(tmp_path / "sec.ini",
                "[uwsgi]\nworkers = 2\nenv = A=uwsgi\n"
                "[other]\nworkers = 7\nenv = C=other\n"
                "[gangway]\nworkers = 4\nenv = B=gangway\n"
                "[uwsgi]\nharakiri = 9\n")
    cfg, _ = config(ini, "hello")
    assert one(cfg, "workers") == ("4", "%s:8" % ini)  # later wins, [gangway] after [uwsgi]
    assert values(cfg, "env") == ["A=uwsgi", "B=gangway"]
    assert one(cfg, "harakiri") == ("9", "%s:11" % ini)  # a section may come back
    cfg, _ = config("--ini", "%s:other" % ini, "hello")
    assert one(cfg, "workers") == ("7", "%s:5" % ini)
    assert values(cfg, "env") == ["C=other"]
    assert one(cfg, "harakiri") == ("0", "default")
    cfg, _ = config("--ini", "%s:gangway" % ini, "hello")
    assert one(cfg, "workers") == ("4", "%s:8" % ini)
    # [gangway] before [uwsgi] in the file: file order decides
    ini2 = write(tmp_path / "order.ini", "[gangway]\nworkers = 5\n[uwsgi]\nworkers = 6\n")
    assert one(config(ini2, "hello")[0], "workers") == ("6", "%s:4" % ini2)


def test_repeated_ini_files_later_wins(tmp_path):
    a = write(tmp_path / "a.ini", "[uwsgi]\nworkers = 2\nharakiri = 5\n")
    b = write(tmp_path / "b.ini", "[uwsgi]\nworkers = 3\n")
    cfg, _ = config("--ini", a, "--ini", b, "hello")
    assert one(cfg, "workers") == ("3", "%s:2" % b)
    assert one(cfg, "harakiri") == ("5", "%s:3" % a)
    cfg, _ = config(b, a, "hello")
    assert one(cfg, "workers") == ("2", "%s:2" % a)


def test_ini_line_rules(tmp_path):
    ini = write(tmp_path / "rules.ini", (
        "\ufeff[uwsgi]\n"                        # 1 BOM skipped
        "; workers = 9\n"                        # 2 comment
        "# workers = 8\n"                        # 3 comment
        "   ; harakiri = 7\n"                    # 4 indented comment
        "env = SEMI=a ;b\n"                      # 5 ; later is part of the value
        "env = HASH=c #d\n"                      # 6 # later too
        "env=TIGHT=1\n"                          # 7 no blanks
        "\t  env \t=\t  SPACED=x y  \t\n"        # 8 blanks trimmed, inner kept
        "env = COLON: x\n"                       # 9 ':' is no separator
        "env = EQ=a=b\n"                         # 10 only the first '=' separates
        "callable=\n"                            # 11 bare value
        "max-requests = 12\r\n"                  # 12 CRLF
        "\n"                                     # 13
        "   \n"                                  # 14
        "pidfile = /tmp/with space/g.pid\n"      # 15
    ).encode("utf-8"))
    cfg, err = config(ini, "hello")
    assert values(cfg, "env") == ["SEMI=a ;b", "HASH=c #d", "TIGHT=1", "SPACED=x y",
                                  "COLON: x", "EQ=a=b"]
    assert one(cfg, "workers") == ("1", "default")
    assert one(cfg, "harakiri") == ("0", "default")
    assert one(cfg, "callable") == ("", "%s:11" % ini)
    assert one(cfg, "max-requests") == ("12", "%s:12" % ini)
    assert one(cfg, "pidfile") == ("/tmp/with space/g.pid", "%s:15" % ini)
    assert err == ""
    # ':' does not separate a key from its value
    ini2 = write(tmp_path / "colon.ini", "[uwsgi]\nworkers: 3\n")
    cfg, err = config(ini2, "hello")
    assert one(cfg, "workers") == ("1", "default")
    assert "%s:2: unknown option 'workers: 3'" % ini2 in err


def test_semicolon_and_hash_in_a_value_reach_the_app(gangway, tmp_path):
    ini = write(tmp_path / "semi.ini", "[uwsgi]\nmodule = cfg_app\nenv = X=a ;b\n"
                "env = Y=#c ; d\n")
    s = gangway(str(ini))
    assert app_env(s, "X") == "a ;b"
    assert app_env(s, "Y") == "#c ; d"


def test_a_1000_byte_value_works(gangway, tmp_path):
    big = "".join(chr(ord("a") + i % 26) for i in range(1000))
    ini = write(tmp_path / "big.ini", "[uwsgi]\nmodule = cfg_app\nenv = BIG=%s\n" % big)
    assert values(config(ini)[0], "env") == ["BIG=" + big]
    s = gangway(str(ini))
    assert app_env(s, "BIG") == big


@pytest.mark.parametrize("bad,line,what", [
    (b"[uwsgi]\nworkers = 2\nenv = A\x01B\n", 3, "control character"),
    (b"[uwsgi]\nworkers = 2\nenv = A\x00B\n", 3, "control character"),
    (b"[uwsgi]\nworkers = 2\x7f\n", 2, "control character"),
    (b"[other]\nx = \x1b[31m\n", 2, "control character"),
    (b"[uwsgi]\nworkers = 2\n[gangway\nworkers = 3\n", 3, "section header"),
    (b"[uwsgi\n", 1, "section header"),
], ids=["soh", "nul", "del", "esc-in-unread-section", "unclosed-header", "first-line"])
def test_ini_errors_name_file_and_line(tmp_path, bad, line, what):
    ini = write(tmp_path / "err.ini", bad)
    rc, out, err = run(ini, "hello")
    assert rc == 2, (rc, err)
    lines = err_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("gangway: %s:%d: " % (ini, line)), lines
    assert what in lines[0]


# ---------------------------------------------------------------------------
# 7. placeholders and includes
# ---------------------------------------------------------------------------

def test_placeholders(tmp_path):
    d = tmp_path / "mysite"
    ini = write(d / "site.conf.ini", (
        "[uwsgi]\n"
        "project = mysite\n"
        "base = /srv/%(project)\n"
        "module = %(project).wsgi\n"
        "workers = %(%k + 1)\n"
        "env = ARITH=%(2 + 3 * 4 - 6 / 3)\n"
        "env = NEG=%(10 - 25)\n"
        "env = HOME_=$(HOME)\n"
        "env = D=%d\n"
        "env = P=%p\n"
        "env = N=%n\n"
        "env = X=%x\n"
        "env = C=%c\n"
        "env = K=%k\n"
        "env = H=%h\n"
        "env = U=%u\n"
        "env = G=%g\n"
        "env = UN=%U\n"
        "env = GN=%G\n"
        "env = PCT=100%%\n"
        "env = BASE=%(base)/static\n"
        "dup = first\n"
        "env = DUP=%(dup)\n"
        "env = LITERAL=%z\n"
    ))
    cfg, err = config(ini, env={"HOME": "/home/gw-test"})
    want = {
        "ARITH": "4", "NEG": "-15", "HOME_": "/home/gw-test",
        "D": os.path.realpath(d) + "/", "P": os.path.realpath(ini),
        "N": "site.conf", "X": "site.conf.ini",
        "C": "mysite", "K": str(NCPU), "H": socket.gethostname(),
        "U": str(os.getuid()), "G": str(os.getgid()),
        "UN": pwd.getpwuid(os.getuid()).pw_name, "GN": grp.getgrgid(os.getgid()).gr_name,
        "PCT": "100%", "BASE": "/srv/mysite/static", "DUP": "first", "LITERAL": "%z",
    }
    got = dict(v.split("=", 1) for v in values(cfg, "env"))
    assert got == want
    assert one(cfg, "module")[0] == "mysite.wsgi"
    assert one(cfg, "workers")[0] == str(NCPU + 1)
    # variables that a placeholder used are no typos: no warning for them
    assert err == "", err


def test_placeholder_first_value_wins(tmp_path):
    ini = write(tmp_path / "first.ini", "[uwsgi]\nname = one\nname = two\n"
                "env = NAME=%(name)\n")
    cfg, err = config(ini, "hello")
    assert values(cfg, "env") == ["NAME=one"]


def test_placeholder_names_an_option_and_an_earlier_file(tmp_path):
    a = write(tmp_path / "a.ini", "[uwsgi]\nchdir = /srv/app\nproject = shop\n")
    b = write(tmp_path / "b.ini", "[uwsgi]\npythonpath = %(chdir)/lib\nmodule = %(project).wsgi\n")
    cfg, err = config("--ini", a, "--ini", b)
    assert values(cfg, "pythonpath") == ["/srv/app/lib"]
    assert one(cfg, "module")[0] == "shop.wsgi"
    assert err == ""


def test_django_shape_with_a_variable_key(gangway, tmp_path):
    """project = mysite, then module = %(project).wsgi: the usual Django ini."""
    site = tmp_path / "srv"
    write(site / "mysite" / "__init__.py", "")
    write(site / "mysite" / "wsgi.py",
          "def application(environ, start_response):\n"
          "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
          "    return [b'django-shaped ' + __name__.encode()]\n")
    ini = write(site / "uwsgi.ini", "[uwsgi]\nproject = mysite\nbase = %d\n"
                "chdir = %(base)\nmodule = %(project).wsgi:application\nmaster = true\n"
                "processes = 2\n")
    s = gangway(str(ini), cwd=str(tmp_path))
    r = get(s, "/")
    assert (r.status, r.body) == (200, b"django-shaped mysite.wsgi")
    log = s.read_log()
    assert not warnings_in(log), log


def test_undefined_placeholders_are_left_with_a_warning(gangway, tmp_path):
    ini = write(tmp_path / "u.ini", "[uwsgi]\nmodule = cfg_app\nenv = A=%(nothing)/x\n"
                "env = B=$(GANGWAY_TEST_SURELY_UNSET)\nlater = 1\nenv = C=%(later)\n")
    cfg, err = config(ini)
    assert values(cfg, "env") == ["A=%(nothing)/x", "B=$(GANGWAY_TEST_SURELY_UNSET)", "C=1"]
    s = gangway(str(ini))
    log = s.read_log()
    assert ("gangway: warning: %s:3: placeholder %%(nothing) names nothing defined before it; "
            "left as written" % ini) in log.splitlines(), log
    assert ("gangway: warning: %s:4: environment variable $(GANGWAY_TEST_SURELY_UNSET) is not "
            "set; left as written" % ini) in log.splitlines(), log
    assert len(warnings_in(log)) == 2, log
    assert app_env(s, "A") == "%(nothing)/x"
    assert app_env(s, "B") == "$(GANGWAY_TEST_SURELY_UNSET)"


def test_placeholder_defined_after_its_use_warns(tmp_path):
    ini = write(tmp_path / "late.ini", "[uwsgi]\nenv = A=%(project)\nproject = x\n")
    cfg, err = config(ini, "hello")
    assert values(cfg, "env") == ["A=%(project)"]
    assert "%s:2: placeholder %%(project) names nothing defined before it" % ini in err


def test_includes(tmp_path):
    main = write(tmp_path / "etc" / "main.ini",
                 "[uwsgi]\nworkers = 2\nini = sub/child.ini\nini = sub/child.ini:extra\n"
                 "env = AFTER=%(child_var)\n")
    write(tmp_path / "etc" / "sub" / "child.ini",
          "[uwsgi]\nchild_var = from-child\nenv = CHILD_DIR=%d\nini = grand.ini\n"
          "[extra]\nenv = EXTRA=1\nworkers = 3\n")
    write(tmp_path / "etc" / "sub" / "grand.ini", "[uwsgi]\nenv = GRAND=%n\n")
    cfg, err = config(main, "hello")
    assert values(cfg, "env") == ["CHILD_DIR=%s/" % os.path.realpath(tmp_path / "etc" / "sub"),
                                  "GRAND=grand",
                                  "EXTRA=1", "AFTER=from-child"]
    assert one(cfg, "workers")[0] == "3"
    assert err == ""


def test_include_falls_back_to_the_working_directory(tmp_path):
    write(tmp_path / "shared.ini", "[uwsgi]\nenv = SHARED=cwd\n")
    write(tmp_path / "conf" / "site.ini", "[uwsgi]\nini = shared.ini\n")
    cfg, err = config("conf/site.ini", "hello", cwd=tmp_path)
    assert values(cfg, "env") == ["SHARED=cwd"]
    # next to the including file wins over the working directory
    write(tmp_path / "conf" / "shared.ini", "[uwsgi]\nenv = SHARED=next-to-it\n")
    cfg, err = config("conf/site.ini", "hello", cwd=tmp_path)
    assert values(cfg, "env") == ["SHARED=next-to-it"]


@pytest.mark.parametrize("shape", ["self", "pair"])
def test_include_loop_fails(tmp_path, shape):
    if shape == "self":
        a = write(tmp_path / "loop.ini", "[uwsgi]\nini = loop.ini\n")
    else:
        a = write(tmp_path / "a.ini", "[uwsgi]\nworkers = 2\nini = b.ini\n")
        write(tmp_path / "b.ini", "[uwsgi]\nini = a.ini\n")
    rc, out, err = run(a, "hello")
    assert rc == 2
    lines = err_lines(err)
    assert len(lines) == 1 and "includes nested more than 10 deep" in lines[0], err


def test_missing_include_fails(tmp_path):
    a = write(tmp_path / "a.ini", "[uwsgi]\nini = nowhere.ini\n")
    rc, out, err = run(a, "hello")
    assert rc == 2
    assert len(err_lines(err)) == 1 and "nowhere.ini" in err, err


# ---------------------------------------------------------------------------
# 8. uWSGI options gangway does not implement; --strict
# ---------------------------------------------------------------------------

UNIMPLEMENTED = ["cheaper = 2", "daemonize = /tmp/gangway-never-daemonized.log",
                 "stats = :9191", "mount = /app=cfg_app.py", "offload-threads = 2",
                 "route-if = equal:${PATH_INFO};/x break:"]


def unimplemented():
    """UNIMPLEMENTED without what gangway has since implemented (say, stats)."""
    have = {o["name"] for o in help_options()}
    return [u for u in UNIMPLEMENTED if u.split(" = ")[0] not in have]


def test_unimplemented_uwsgi_options_warn_once_each_and_server_starts(gangway, tmp_path):
    lines = unimplemented()
    assert len(lines) >= 4, lines
    ini = write(tmp_path / "u.ini", "[uwsgi]\nmodule = cfg_app\n" + "\n".join(lines) + "\n")
    s = gangway(str(ini))
    log = s.read_log()
    want = ["gangway: warning: %s:%d: '%s' is a uWSGI option that gangway does not implement"
            % (ini, i + 3, u.split(" = ")[0]) for i, u in enumerate(lines)]
    assert warnings_in(log) == want, log
    assert get(s, "/pid").status == 200
    assert not os.path.exists("/tmp/gangway-never-daemonized.log")


def test_accepted_uwsgi_options_are_silent(gangway, tmp_path):
    ini = write(tmp_path / "quiet.ini", "[uwsgi]\nmodule = cfg_app\nmaster = true\n"
                "die-on-term = true\nenable-threads = true\nsingle-interpreter = true\n"
                "thunder-lock = true\nneed-app = true\nthreads = 1\nlazy-apps = true\n")
    s = gangway(str(ini))
    log = s.read_log()
    assert not re.search(r"gangway: (warning|note|error):", log), log


def test_threads_are_served_and_plugins_get_a_note(gangway, tmp_path):
    """threads = N from a uwsgi.ini means N requests at once per worker
    (issue 16): no note any more; plugins still get theirs."""
    ini = write(tmp_path / "t.ini", "[uwsgi]\nmodule = cfg_app\nplugins = python3\n"
                "threads = 4\n")
    s = gangway(str(ini))
    log = s.read_log()
    notes = [l for l in log.splitlines() if "gangway: note:" in l]
    assert len(notes) == 1, log
    assert any("plugins are ignored" in n for n in notes), notes
    assert not warnings_in(log)
    assert banner_workers(log, s.pid) == 1


STRICT_CASES = {
    "unknown-key": ("[uwsgi]\nmodule = hello\nmax-request = 5\n", {},
                    "{ini}:3: unknown option 'max-request' (did you mean max-requests?)"),
    "uwsgi-option": ("[uwsgi]\nmodule = hello\ncheaper = 2\n", {},
                     "{ini}:3: 'cheaper' is a uWSGI option that gangway does not implement"),
    "placeholder": ("[uwsgi]\nmodule = hello\nenv = A=%(nope)\n", {},
                    "{ini}:3: placeholder %(nope) names nothing defined before it; left as "
                    "written"),
    "env-placeholder": ("[uwsgi]\nmodule = hello\nenv = A=$(GANGWAY_TEST_SURELY_UNSET)\n", {},
                        "{ini}:3: environment variable $(GANGWAY_TEST_SURELY_UNSET) is not set"
                        "; left as written"),
    "env-variable": ("[uwsgi]\nmodule = hello\n", {"GANGWAY_WORKER": "2"},
                     "GANGWAY_WORKER is not an option (did you mean GANGWAY_WORKERS?)"),
}


@pytest.mark.parametrize("how", ["cli", "ini", "env"])
@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_strict_turns_warnings_into_errors(tmp_path, how, case):
    text, env, msg = STRICT_CASES[case]
    if how == "ini":
        text = text.replace("[uwsgi]\n", "[uwsgi]\nstrict = true\n")
    ini = write(tmp_path / "s.ini", text)
    msg = msg.format(ini=ini)
    if how == "ini":
        msg = re.sub(r":(\d+):", lambda m: ":%d:" % (int(m.group(1)) + 1), msg, count=1)
    env = dict(env)
    args = ["--http", "127.0.0.1:0", str(ini)]
    if how == "cli":
        args.insert(0, "--strict")
    elif how == "env":
        env["GANGWAY_STRICT"] = "1"
    rc, out, err = run(*args, env=env)
    assert rc == 2, (rc, err)
    assert "gangway: error: " + msg in err_lines(err), err
    assert "gangway: warning:" not in err
    assert "ready" not in out + err
    # without --strict: the same is a warning and the server starts (checked: exit 0)
    if how != "cli":
        return
    rc, out, err = run("--check-config", str(ini), env=dict(STRICT_CASES[case][1]))
    assert rc == 0, err
    assert "gangway: warning: " + msg in err_lines(err), err


def test_strict_reports_every_problem_at_once(tmp_path):
    ini = write(tmp_path / "many.ini", "[uwsgi]\nmodule = hello\ncheaper = 2\n"
                "offload-threads = 1\nmax-request = 5\n")
    rc, out, err = run("--strict", ini, env={"GANGWAY_FOO_BAR_BAZ": "1"})
    assert rc == 2
    errors = [l for l in err_lines(err) if l.startswith("gangway: error: ")]
    assert len(errors) == 4, err


# ---------------------------------------------------------------------------
# 9. uWSGI options with their meaning
# ---------------------------------------------------------------------------

UWSGI_MAP = [
    # (ini line, gangway option, value --print-config shows)
    ("master = true", "master", "true"),
    ("processes = 3", "workers", "3"),
    ("workers = 3", "workers", "3"),
    ("socket = 127.0.0.1:3031", "uwsgi", "127.0.0.1:3031"),
    ("uwsgi-socket = /run/app.sock", "uwsgi", "/run/app.sock"),
    ("http-socket = :8080", "http", ":8080"),
    ("http = :8081", "http", ":8081"),
    ("module = mysite.wsgi:application", "module", "mysite.wsgi:application"),
    ("wsgi = mysite.wsgi", "module", "mysite.wsgi"),
    ("wsgi-file = /srv/site.wsgi", "wsgi-file", "/srv/site.wsgi"),
    ("file = /srv/site.wsgi", "wsgi-file", "/srv/site.wsgi"),
    ("callable = app", "callable", "app"),
    ("chdir = /srv", "chdir", "/srv"),
    ("pythonpath = /srv/lib", "pythonpath", "/srv/lib"),
    ("python-path = /srv/lib", "pythonpath", "/srv/lib"),
    ("home = /srv/venv", "virtualenv", "/srv/venv"),
    ("virtualenv = /srv/venv", "virtualenv", "/srv/venv"),
    ("venv = /srv/venv", "virtualenv", "/srv/venv"),
    ("pyhome = /srv/venv", "virtualenv", "/srv/venv"),
    ("env = A=b", "env", "A=b"),
    ("vacuum = true", "vacuum", "true"),
    ("chmod-socket = 660", "chmod-socket", "660"),
    ("chmod-socket", "chmod-socket", ""),
    ("chown-socket = www-data:www-data", "chown-socket", "www-data:www-data"),
    ("harakiri = 30", "harakiri", "30"),
    ("max-requests = 1000", "max-requests", "1000"),
    ("max-requests-delta = 50", "max-requests-jitter", "50"),
    ("reload-on-rss = 512", "reload-on-rss", "512"),
    ("max-worker-lifetime = 3600", "max-worker-lifetime", "3600"),
    ("uid = www-data", "uid", "www-data"),
    ("gid = www-data", "gid", "www-data"),
    ("pidfile = /run/app.pid", "pidfile", "/run/app.pid"),
    ("logto = /var/log/app.log", "log-file", "/var/log/app.log"),
    ("disable-logging = true", "disable-logging", "true"),
    ("buffer-size = 32768", "buffer-size", "32768"),
    ("post-buffering = 8192", "body-buffer-size", "8192"),
    ("limit-post = 1048576", "limit-body", "1048576"),
    ("lazy-apps = true", "lazy-apps", "true"),
    ("lazy-apps = false", "preload", "true"),
    ("static-map = /static=/srv/static", "static-map", "/static=/srv/static"),
    ("static-index = index.html", "static-index", "index.html"),
    ("listen = 4096", "listen", "4096"),
    ("reuse-port = true", "reuse-port", "true"),
    ("touch-reload = /srv/reload", "touch-reload", "/srv/reload"),
    ("die-on-term = true", "die-on-term", "true"),
    ("enable-threads = true", "enable-threads", "true"),
    ("single-interpreter = true", "single-interpreter", "true"),
    ("thunder-lock = true", "thunder-lock", "true"),
    ("need-app = true", "need-app", "true"),
    ("threads = 4", "threads", "4"),
    ("plugins = python3", "plugins", "python3"),
    ("plugin = python3", "plugins", "python3"),
    ("strict = false", "strict", "false"),
    ("show-config = false", "print-config", None),
]


@pytest.mark.parametrize("line,option,want", UWSGI_MAP, ids=[l for l, _, _ in UWSGI_MAP])
def test_uwsgi_key_maps_to_its_option(tmp_path, line, option, want):
    ini = write(tmp_path / "map.ini", "[uwsgi]\n%s\n" % line)
    rc, out, err = run("--print-config", ini)
    assert rc == 0, err
    assert "warning" not in err
    if want is None:
        return  # an action: accepted without a warning
    cfg = parse_config(out)
    if option == "preload":
        assert one(cfg, "lazy-apps") == ("false", "%s:2" % ini)
        assert one(cfg, "preload")[0] == "true"
        return
    assert cfg[option] == [(want, "%s:2" % ini)]


def app_ini(tmp_path, name, body):
    return write(tmp_path / name, "[uwsgi]\n" + body)


def test_module_callable_chdir_pythonpath(gangway, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ini = app_ini(tmp_path, "app.ini", "chdir = %s\npythonpath = %s\nmodule = cfg_app\n"
                  "callable = other_callable\n" % (work, APPS))
    s = gangway(str(ini), cwd=str(tmp_path))  # cfg_app is importable only via pythonpath
    info = app_info(s)
    assert info["callable"] == "other_callable"
    assert info["cwd"] == str(work)
    assert APPS in info["sys_path"]


def test_wsgi_file_and_module_with_callable(gangway, tmp_path):
    ini = app_ini(tmp_path, "file.ini", "wsgi-file = %s\ncallable = other_callable\n"
                  % os.path.join(APPS, "cfg_app.py"))
    assert app_info(gangway(str(ini), cwd=str(tmp_path)))["callable"] == "other_callable"
    ini = app_ini(tmp_path, "mod.ini", "pythonpath = %s\nmodule = cfg_app:other_callable\n"
                  % APPS)
    assert app_info(gangway(str(ini), cwd=str(tmp_path)))["callable"] == "other_callable"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(d)], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    return d


@pytest.mark.parametrize("key", ["home", "virtualenv", "venv"])
def test_virtualenv_keys(gangway, tmp_path, venv, key):
    ini = app_ini(tmp_path, "v.ini", "%s = %s\npythonpath = %s\nmodule = cfg_app\n"
                  % (key, venv, APPS))
    info = app_info(gangway(str(ini)))
    assert os.path.realpath(info["prefix"]) == os.path.realpath(str(venv))


def test_http_key_serves_http_with_one_note(gangway, tmp_path):
    ini = app_ini(tmp_path, "h.ini", "module = cfg_app\nhttp = 127.0.0.1:0\n")
    s = gangway(str(ini), listen=False)
    assert get(s, "/pid").status == 200
    notes = [l for l in s.read_log().splitlines() if "gangway: note:" in l]
    assert len(notes) == 1, s.read_log()
    assert "%s:3" % ini in notes[0] and "themselves" in notes[0] and "127.0.0.1:0" in notes[0]


def test_socket_key_serves_the_uwsgi_protocol(gangway, tmp_path):
    path = tmp_path / "app.sock"
    ini = app_ini(tmp_path, "s.ini", "module = cfg_app\nsocket = %s\nuwsgi-socket = "
                  "127.0.0.1:0\nchmod-socket\n" % path)
    s = gangway(str(ini), listen=False)
    log = s.read_log()
    assert "listening on uwsgi://unix:%s" % path in log
    m = re.search(r"listening on uwsgi://127\.0\.0\.1:(\d+)", log)
    assert m, log
    r = uwsgi_get_unix(path, "/env/PATH")
    assert r.status == 200
    r = uwsgi_get(socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10), "/pid")
    assert r.status == 200 and r.body.startswith(b"pid=")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # a bare chmod-socket is 666


def test_max_requests_from_ini_recycles(gangway, tmp_path):
    ini = app_ini(tmp_path, "mr.ini", "module = cfg_app\nmax-requests = 3\n")
    s = gangway(str(ini))
    pids = []
    # (past its limit a worker serves on until its replacement serves)
    while len(set(pids)) < 3:
        assert len(pids) < 3000, "no recycling"
        r = get(s, "/pid")
        assert r.status == 200
        pids.append(r.body)
    assert pids[0] == pids[1] == pids[2]
    assert s.read_log().count("max-requests reached") >= 2


def test_harakiri_from_ini(gangway, tmp_path):
    ini = app_ini(tmp_path, "hk.ini", "module = proc_app\nharakiri = 1\n")
    s = gangway(str(ini))
    r = get(s, "/spin", timeout=20)
    assert r.status == 500, (r.status, r.body[:200])
    wait_for(lambda: re.search(r"harakiri.*/spin", s.read_log()), 5, what="the harakiri log")


def test_max_worker_lifetime_from_ini(gangway, tmp_path):
    ini = app_ini(tmp_path, "mwl.ini", "module = cfg_app\nmax-worker-lifetime = 1\n")
    s = gangway(str(ini))
    first = get(s, "/pid").body
    wait_for(lambda: "max-worker-lifetime reached" in s.read_log(), 6,
             what="max-worker-lifetime")
    wait_for(lambda: get(s, "/pid").body != first, 10, what="a new worker")


def test_disable_logging_from_ini(gangway, tmp_path):
    ini = app_ini(tmp_path, "dl.ini", "module = cfg_app\ndisable-logging = true\n")
    s = gangway(str(ini))
    assert get(s, "/pid?no-access-line").status == 200
    assert s.stop() == 0
    assert "no-access-line" not in s.read_log()


def test_touch_reload_from_ini(gangway, tmp_path):
    touch = write(tmp_path / "reload-me", "x")
    ini = app_ini(tmp_path, "tr.ini", "module = cfg_app\ntouch-reload = %s\n" % touch)
    s = gangway(str(ini))
    first = get(s, "/pid").body
    st = os.stat(touch)
    os.utime(touch, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10 ** 9))
    wait_for(lambda: "touch-reload: graceful reload" in s.read_log(), 5,
             what="the touch-reload")
    wait_for(lambda: get(s, "/pid").body != first, 10, what="a new worker")


def test_listen_and_reuse_port_from_ini(gangway, tmp_path):
    ini = app_ini(tmp_path, "lr.ini", "module = cfg_app\nprocesses = 2\nlisten = 77\n")
    s = gangway(str(ini))
    assert listening_tcp(s.port) == [77]
    ini = app_ini(tmp_path, "rp.ini", "module = cfg_app\nprocesses = 2\nlisten = 78\n"
                  "reuse-port = true\n")
    s = gangway(str(ini))
    # one listening socket per worker (the master's only holds the address)
    assert listening_tcp(s.port) == [78, 78]
    assert get(s, "/pid").status == 200


def test_realistic_uwsgi_ini(gangway, tmp_path):
    """tests/ini/site.ini: a unix uwsgi socket for nginx, an HTTP socket,
    static files, env, pidfile, vacuum, two processes, placeholders."""
    ini = os.path.join(INI_DIR, "site.ini")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write(run_dir / "static" / "index.html", "<h1>static index</h1>\n")
    write(run_dir / "static" / "css" / "site.css", "body { color: red }\n")
    env = {"GW_TEST_RUN": str(run_dir)}
    sock, pidfile = run_dir / "site.sock", run_dir / "site.pid"

    # what gangway made of the file, line by line
    cfg, err = config(ini, env=env)
    for key, option, want in [
        ("processes", "workers", "2"), ("max-requests =", "max-requests", "5000"),
        ("max-requests-delta", "max-requests-jitter", "100"), ("harakiri", "harakiri", "60"),
        ("buffer-size", "buffer-size", "8192"), ("post-buffering", "body-buffer-size", "65536"),
        ("listen", "listen", "77"), ("vacuum", "vacuum", "true"),
        ("chmod-socket", "chmod-socket", "660"), ("pidfile", "pidfile", str(pidfile)),
        ("module", "module", "cfg_app:application"), ("socket =", "uwsgi", str(sock)),
        ("chdir", "chdir", INI_DIR + "/../apps"),
    ]:
        got = one(cfg, option) if option not in ("uwsgi",) else cfg[option][0]
        assert got == (want, "%s:%d" % (ini, line_of(ini, key + ("" if "=" in key else " ")))), \
            (option, got)
    assert not warnings_in(err), err

    s = gangway(ini, listen=False, env=env, cwd=str(tmp_path))
    log = s.read_log()
    assert not warnings_in(log), log
    assert banner_workers(log, s.pid) == 2
    assert len(children(s.pid)) == 2
    assert "listening on uwsgi://unix:%s" % sock in log
    assert s.port, log
    assert pidfile.read_text().strip() == str(s.pid)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert listening_tcp(s.port) == [77]
    # env, chdir, the app over HTTP and over the uwsgi socket
    assert app_env(s, "GW_SITE_NAME") == "site"
    assert app_env(s, "GW_SITE_NOTE") == "a ;b # not a comment"
    assert app_info(s)["cwd"] == os.path.realpath(APPS)
    r = uwsgi_get_unix(sock, "/env/GW_SITE_NAME")
    assert (r.status, r.body) == (200, b"site")
    # buffer-size = 8192 caps the uwsgi variables block
    r = uwsgi_get_unix(sock, "/env/GW_SITE_NAME", pad=7000)
    assert (r.status, r.body) == (200, b"site")
    assert uwsgi_refused_unix(sock, "/env/GW_SITE_NAME", pad=8200)
    wait_for(lambda: "--buffer-size is smaller than this request block size" in s.read_log(),
             5, what="the refused packet in the log")
    # static files, without Python
    r = get(s, "/static/")
    assert (r.status, r.body) == (200, b"<h1>static index</h1>\n")
    r = get(s, "/static/css/site.css")
    assert (r.status, r.body) == (200, b"body { color: red }\n")
    assert "css" in (r.header("content-type") or "")
    # vacuum: the socket and the pidfile go with the server
    assert s.stop() == 0
    assert not sock.exists() and not pidfile.exists()


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
@pytest.mark.parametrize("owner,want_user,want_group", [
    ("nobody:nogroup", "nobody", "nogroup"),
    ("nobody", "nobody", None),
    ("65534:65534", 65534, 65534),
    (":nogroup", None, "nogroup"),
])
def test_chown_socket(gangway, tmp_path, owner, want_user, want_group):
    path = tmp_path / "own.sock"
    ini = app_ini(tmp_path, "own.ini", "module = cfg_app\nsocket = %s\nhttp-socket = "
                  "127.0.0.1:0\nchown-socket = %s\nchmod-socket = 660\n" % (path, owner))
    s = gangway(str(ini), listen=False)
    st = os.stat(path)
    uid = want_user if isinstance(want_user, int) else (
        pwd.getpwnam(want_user).pw_uid if want_user else os.getuid())
    gid = want_group if isinstance(want_group, int) else (
        grp.getgrnam(want_group).gr_gid if want_group else os.getgid())
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert stat.S_IMODE(st.st_mode) == 0o660
    # the TCP socket is untouched and serves
    assert get(s, "/pid").status == 200


@pytest.mark.skipif(not IS_ROOT, reason="needs root to switch users")
def test_uid_gid_from_ini(gangway, tmp_path):
    pidfile = tmp_path / "root-only" / "g.pid"
    pidfile.parent.mkdir(mode=0o700)
    ini = app_ini(tmp_path, "ug.ini", "module = cfg_app\nprocesses = 2\nuid = nobody\n"
                  "gid = nogroup\npidfile = %s\n" % pidfile)
    s = gangway(str(ini))
    assert pidfile.read_text().strip() == str(s.pid)  # written before the drop
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for pid in children(s.pid) | {s.pid}:
        with open("/proc/%d/status" % pid) as f:
            status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        assert status["Uid"].split() == [str(nobody)] * 4
        assert status["Gid"].split() == [str(nogroup)] * 4
    assert get(s, "/pid").status == 200


def test_lazy_apps_false_means_preload(gangway, tmp_path):
    ini = app_ini(tmp_path, "pre.ini", "module = cfg_app\nprocesses = 2\nlazy-apps = false\n")
    s = gangway(str(ini))
    info = app_info(s)
    assert info["import_pid"] == s.pid != info["pid"]  # imported once, by the master
    ini = app_ini(tmp_path, "lazy.ini", "module = cfg_app\nprocesses = 2\nlazy-apps = true\n")
    s = gangway(str(ini))
    info = app_info(s)
    assert info["import_pid"] == info["pid"] != s.pid  # each worker imports it


def test_preload_is_visible_in_the_log(gangway, tmp_path):
    ini = app_ini(tmp_path, "pre.ini", "module = cfg_app\nlazy-apps = false\n")
    lazy = gangway("cfg_app").read_log()
    log = gangway(str(ini)).read_log()
    extra = [l for l in log.splitlines() if "master" in l and "import" in l]
    assert extra, "no line about the master importing the app:\n%s\n(lazy: %s)" % (log, lazy)


@pytest.mark.parametrize("ini_text,args,env,want", [
    ("lazy-apps = true", ["--preload"], {}, "true"),
    ("lazy-apps = true", [], {"GANGWAY_PRELOAD": "1"}, "true"),
    ("lazy-apps = false", ["--preload=false"], {}, "false"),
], ids=["cli-preload-over-ini-lazy", "env-preload-over-ini-lazy", "cli-no-preload-over-ini"])
def test_preload_from_a_stronger_source_wins_over_ini_lazy_apps(tmp_path, ini_text, args, env,
                                                                 want):
    ini = app_ini(tmp_path, "lz.ini", "module = cfg_app\n%s\n" % ini_text)
    rc, out, err = run("--print-config", *(args + [str(ini)]), env=env)
    assert rc == 0, err
    assert one(parse_config(out), "preload")[0] == want


@pytest.mark.parametrize("ini_text,args,want", [
    ("no-defer-accept = true", [], "0"),
    ("no-defer-accept = false", [], "1"),
    ("no-defer-accept = true", ["--defer-accept", "3"], "3"),
    ("defer-accept = 2", [], "2"),
], ids=["ini-off", "ini-false-keeps-default", "cli-time-over-ini-off", "ini-time"])
def test_uwsgi_no_defer_accept(tmp_path, ini_text, args, want):
    ini = app_ini(tmp_path, "nd.ini", "module = cfg_app\n%s\n" % ini_text)
    rc, out, err = run("--print-config", *(args + [str(ini)]))
    assert rc == 0, err
    assert "warning" not in err
    assert one(parse_config(out), "defer-accept")[0] == want


def test_logto_takes_both_logs_and_sigusr1_reopens(gangway, tmp_path):
    logf = tmp_path / "logs" / "gangway.log"
    logf.parent.mkdir()
    ini = app_ini(tmp_path, "lt.ini", "module = cfg_app\nprocesses = 2\nhttp-socket = "
                  "127.0.0.1:0\nlogto = %s\n" % logf)
    s = gangway(str(ini), listen=False, wait=False)
    text = wait_for(lambda: logf.exists() and "gangway: ready" in logf.read_text()
                    and logf.read_text(), 15, what="ready in the logto file")
    assert s.proc.poll() is None
    s.port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", text).group(1))
    s.host = "127.0.0.1"
    assert get(s, "/pid?before-rotate").status == 200
    wait_for(lambda: "/pid?before-rotate" in logf.read_text(), 5, what="the access line")
    rotated = logf.with_name("gangway.log.1")
    os.rename(logf, rotated)
    s.signal(signal.SIGUSR1)
    wait_for(logf.exists, 5, what="the reopened log file")
    # the workers reopen when the master passes the signal on: poll with requests
    found = False
    for k in range(50):
        assert get(s, "/pid?after-rotate-%d" % k).status == 200
        try:
            wait_for(lambda: "after-rotate" in logf.read_text(), 0.2, what="an access line")
            found = True
            break
        except TimeoutError:
            pass
    assert found, "no access line in the reopened file; old file:\n" + rotated.read_text()
    tags = ["/pid?later-%d" % k for k in range(6)]
    for t in tags:
        assert get(s, t).status == 200
    wait_for(lambda: all(t in logf.read_text() for t in tags), 5, what="the later access lines")
    # the master's error log follows too
    s.signal(signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN: 3 worker(s)" in logf.read_text(), 5, what="SIGTTIN in the new file")
    # the new worker is up before the stop (a SIGTERM right after a fork is lost)
    wait_for(lambda: "worker 3 ready" in logf.read_text(), 15, what="worker 3")
    assert s.stop() == 0
    new, old = logf.read_text(), rotated.read_text()
    assert "gangway: stopped" in new and "worker 1: SIGTERM" in new
    assert "/pid?before-rotate" in old and "gangway: ready" in old
    assert "later-" not in old and "SIGTTIN" not in old
    assert "ready" not in s.read_log() and "/pid" not in s.read_log()


def test_show_config_prints_then_serves(gangway, tmp_path):
    """uWSGI's show-config: the configuration goes to the log, and the server
    starts as usual (unlike --print-config, which exits)."""
    ini = write(tmp_path / "show.ini", "[uwsgi]\nmodule = cfg_app\nshow-config = true\n"
                                       "max-requests = 77\n")
    s = gangway(str(ini))
    log = s.read_log()
    assert re.search(r"^max-requests = 77 +\(%s:4\)$" % re.escape(str(ini)), log, re.M), log
    assert "ready" in log
