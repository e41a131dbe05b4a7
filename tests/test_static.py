"""Static files (--static-map and friends), over raw sockets and with curl.

The app behind every server is tests/apps/echo.py, which appends PATH_INFO to
$GW_TEST_MARK on every call: a static answer must leave that file untouched,
which proves Python never ran for it. tests/apps/static_django.py and
static_flask.py do the same for the Django FileResponse and Flask send_file
tests, and also record every use of wsgi.file_wrapper.

The document root is built once per module (build_site); a few tests that
change files or need big ones make their own directory. Every wait is a
bounded socket timeout or a bounded poll; the only sleeps are the deliberate
pauses of the slow reader.
"""
import email.utils
import errno
import gzip
import hashlib
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import time

import pytest

from conftest import APPS, BIN, RawReader, Server, request, wait_for

SECRET = b"TOP-SECRET: outside the static root\n"
HELLO = b"hello, static world\n"
HELLO_MTIME_NS = 1_700_000_000_500_000_000  # Tue, 14 Nov 2023 22:13:20.5 GMT
HELLO_LM = email.utils.formatdate(1_700_000_000, usegmt=True)
RANGE_DATA = random.Random(3).randbytes(100_000)
PASSWD_LINE = b"root:x:0:0"
ETAG_RE = re.compile(r'^"[^"]+"$')  # strong: no W/ prefix


# ------------------------------------------------------------------ the site

class Site:
    pass


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """base/secret.txt (outside) and base/root (the mapped directory)."""
    base = str(tmp_path_factory.mktemp("static"))
    root = os.path.join(base, "root")
    os.mkdir(root)
    s = Site()
    s.base, s.root = base, root
    s.secret = os.path.join(base, "secret.txt")
    _write(s.secret, SECRET)
    _write(os.path.join(base, "secret.txt.gz"), gzip.compress(SECRET))
    os.makedirs(os.path.join(base, "outdir"))
    _write(os.path.join(base, "outdir", "secret.txt"), SECRET)

    def w(rel, data):
        _write(os.path.join(root, rel), data)

    w("hello.txt", HELLO)
    os.utime(os.path.join(root, "hello.txt"), ns=(HELLO_MTIME_NS, HELLO_MTIME_NS))
    w("style.css", b"body { color: #123456; }\n" * 40)
    w("app.js", b"console.log('identity');\n" * 40)
    w("data.json", b'{"ok": true}\n')
    w("pic.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>\n')
    w("img.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    w("doc.odt", b"PK\x03\x04 not really an odt")
    w("bundle.js.map", b'{"version": 3}\n')
    w("blob.qqqzz", b"unknown extension")
    w("README", b"no extension")
    w("UPPER.CSS", b"p { }\n")
    w("v1.2/NOTES", b"no extension under a dotted directory")
    w("empty.txt", b"")
    w("range.bin", RANGE_DATA)
    w("sp ace.txt", b"a space in the name")
    w("caf\u00e9.txt", b"utf-8 name")
    w("A.txt", b"decoded twice: WRONG")
    w("%41.txt", b"literal percent-41 name")
    w("%2e%2e/secret.txt", b"a directory literally named %2e%2e")
    w("a\\b.txt", b"a backslash in the name")
    # directories and indexes
    w("sub/page.html", b"<p>page</p>\n")
    w("sub/index.html", b"<p>sub index</p>\n")
    w("sub/index.html.gz", gzip.compress(b"<p>sub index</p>\n"))
    w("noindex/file.txt", b"a directory without index.html")
    os.makedirs(os.path.join(root, "idxlink"))
    os.symlink("../sub/page.html", os.path.join(root, "idxlink", "index.html"))
    # dot-files
    w(".hidden", b"hidden file")
    w(".git/config", b"[core]\n")
    w("sub/.env", b"PASSWORD=hunter2\n")
    w(".well-known/security.txt", b"Contact: mailto:security@example.com\n")
    # precompressed variants
    s.js_plain = b"function gangway() { return 'plain'; }\n" * 50
    s.js_gz = gzip.compress(s.js_plain)
    s.js_br = b"pretend-brotli:" + s.js_plain[:100]
    w("gz/app.js", s.js_plain)
    w("gz/app.js.gz", s.js_gz)
    w("gz/app.js.br", s.js_br)
    s.css_plain = b".gangway { display: none; }\n" * 50
    s.css_gz = gzip.compress(s.css_plain)
    w("gz/style.css", s.css_plain)
    w("gz/style.css.gz", s.css_gz)
    w("gz/plain.txt", b"no variants here\n")
    w("gz/leak.txt", b"the real leak.txt\n")
    os.symlink("../../secret.txt.gz", os.path.join(root, "gz", "leak.txt.gz"))
    w("gz/fifovariant.txt", b"the variant is a FIFO\n")
    os.mkfifo(os.path.join(root, "gz", "fifovariant.txt.gz"))
    w("gz/dirvariant.txt", b"the variant is a directory\n")
    os.makedirs(os.path.join(root, "gz", "dirvariant.txt.gz"))
    # symlinks that stay inside
    os.symlink("hello.txt", os.path.join(root, "link.txt"))
    os.symlink("sub", os.path.join(root, "linkdir"))
    os.symlink("../hello.txt", os.path.join(root, "sub", "up.txt"))
    os.symlink(".hidden", os.path.join(root, "to_hidden"))  # the dot rule is the URL's
    # symlinks that lead out
    os.symlink("../secret.txt", os.path.join(root, "out_rel"))
    os.symlink(s.secret, os.path.join(root, "out_abs"))
    os.symlink("../outdir", os.path.join(root, "out_dir"))
    os.symlink("/etc/passwd", os.path.join(root, "out_etc"))
    os.symlink("/etc", os.path.join(root, "out_etcdir"))
    os.symlink("chain2", os.path.join(root, "chain1"))
    os.symlink("../secret.txt", os.path.join(root, "chain2"))
    os.symlink("/proc/self/root", os.path.join(root, "proc_root"))
    os.symlink("/proc/self/fd", os.path.join(root, "proc_fd"))
    # an absolute symlink whose target is inside the root (refused: documented)
    os.symlink(os.path.join(root, "hello.txt"), os.path.join(root, "abs_in"))
    # things that are not regular files
    os.mkfifo(os.path.join(root, "fifo"))
    os.symlink("fifo", os.path.join(root, "fifo_link"))
    s.has_device = False
    try:
        os.mknod(os.path.join(root, "zero"), 0o666 | stat.S_IFCHR, os.makedev(1, 5))
        s.has_device = True
    except OSError:
        pass
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.bind(os.path.join(root, "sock"))
    us.close()
    return s


# ------------------------------------------------------------------ helpers

def build(method="GET", path="/", headers=(), version="HTTP/1.1", body=b"", host="x"):
    if isinstance(path, str):
        path = path.encode("latin-1")
    lines = [b"%s %s %s" % (method.encode(), path, version.encode())]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    lines += [("%s: %s" % h).encode("latin-1") for h in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def fetch(server, path, headers=(), method="GET", version="HTTP/1.1", body=b""):
    return request(server, build(method, path, headers, version, body), head=method == "HEAD")


def values(resp, name):
    return [v for k, v in resp.headers if k == name.lower()]


def calls(server):
    try:
        with open(server.mark, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def curl(*args, timeout=20):
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "15"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p


@pytest.fixture
def serve(gangway, tmp_path, site):
    """serve(*options, maps=None, app="echo:application") -> a ready server.

    maps defaults to ["/static=ROOT"]; server.mark is the app's call log."""
    mark = str(tmp_path / "app-calls")

    def _serve(*options, maps=None, app="echo:application", env=None):
        argv = []
        for m in maps or ["/static=" + site.root]:
            argv += ["--static-map", m]
        e = {"GW_TEST_MARK": mark}
        e.update(env or {})
        srv = gangway(*argv, *options, app, env=e)
        srv.mark = mark
        return srv
    return _serve


def assert_not_found(r):
    assert r.status == 404, (r.status, r.body[:200])
    assert SECRET not in r.body and PASSWD_LINE not in r.body
    assert r.body == b"Not Found\n"


# ------------------------------------------------------------------ basics

def test_get_serves_the_file_without_python(serve, site):
    srv = serve()
    r = fetch(srv, "/static/hello.txt")
    assert r.status == 200
    assert r.body == HELLO
    assert r.header("content-length") == str(len(HELLO))
    assert r.header("content-type") == "text/plain; charset=utf-8"
    assert ETAG_RE.match(r.header("etag")), r.header("etag")
    assert r.header("last-modified") == HELLO_LM
    assert r.header("accept-ranges") == "bytes"
    assert r.header("date") and r.header("server") == "gangway"
    assert r.header("cache-control") is None and r.header("expires") is None
    assert r.header("vary") is None and r.header("content-encoding") is None
    assert calls(srv) == []
    # Outside every prefix the app answers, and does record the call.
    r = fetch(srv, "/app/x?y=1")
    assert r.status == 200 and b'"PATH_INFO": "/app/x"' in r.body
    r = fetch(srv, "/staticfile")  # shares the prefix's letters, not its segment
    assert r.status == 200 and b'"PATH_INFO": "/staticfile"' in r.body
    assert calls(srv) == ["/app/x", "/staticfile"]


def test_query_string_and_extra_slashes_are_ignored(serve):
    srv = serve()
    for path in ("/static/hello.txt?v=123&x", "/static//hello.txt", "/static/sub//page.html"):
        r = fetch(srv, path)
        assert r.status == 200, path
    assert fetch(srv, "/static/hello.txt?v=1").body == HELLO
    assert calls(srv) == []


@pytest.mark.parametrize("name,ctype", [
    ("hello.txt", "text/plain; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("pic.svg", "image/svg+xml; charset=utf-8"),
    ("sub/page.html", "text/html; charset=utf-8"),
    ("img.png", "image/png"),
    ("doc.odt", "application/vnd.oasis.opendocument.text"),  # only /etc/mime.types knows it
    ("bundle.js.map", "application/json; charset=utf-8"),    # only the built-in table knows it
    ("blob.qqqzz", "application/octet-stream"),
    ("README", "application/octet-stream"),
    ("UPPER.CSS", "text/css; charset=utf-8"),   # extensions are case-insensitive
    ("v1.2/NOTES", "application/octet-stream"),  # the dot is the directory's
    ("gz/app.js.gz", "application/gzip"),        # asked for by name: no Content-Encoding
])
def test_content_type(serve, name, ctype):
    srv = serve()
    r = fetch(srv, "/static/" + name)
    assert r.status == 200
    assert r.header("content-type") == ctype
    assert r.header("content-encoding") is None
    assert calls(srv) == []


def test_builtin_mime_table_without_etc_mime_types(site, tmp_path):
    """/etc/mime.types replaced by an empty file in a private mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    if probe.returncode != 0:
        pytest.skip("unshare --mount is not permitted here")
    empty = tmp_path / "empty-mime.types"
    empty.write_bytes(b"")

    class NsServer(Server):
        """conftest.Server, started through unshare + sh; sh execs gangway, so the
        PID that stop() signals is gangway's master."""
        def __init__(self, tmp_path, args):
            self.log_path = os.path.join(str(tmp_path), "gangway-ns.log")
            self.args = ["unshare", "--mount", "--propagation", "private", "--",
                         "/bin/sh", "-c", 'mount --bind "$0" /etc/mime.types && exec "$@"',
                         str(empty), BIN] + list(args)
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                         cwd=APPS)
            self.pid = self.proc.pid
            self.host = self.port = self.unix = None

    srv = NsServer(tmp_path, ["--http", "127.0.0.1:0", "--static-map", "/static=" + site.root,
                              "echo:application"])
    try:
        srv.wait_ready()
        expected = {
            "style.css": "text/css; charset=utf-8",
            "app.js": "text/javascript; charset=utf-8",
            "data.json": "application/json; charset=utf-8",
            "pic.svg": "image/svg+xml; charset=utf-8",
            "sub/page.html": "text/html; charset=utf-8",
            "hello.txt": "text/plain; charset=utf-8",
            "img.png": "image/png",
            "bundle.js.map": "application/json; charset=utf-8",
            "doc.odt": "application/octet-stream",  # not in the built-in table
        }
        got = {n: fetch(srv, "/static/" + n).header("content-type") for n in expected}
        assert got == expected
    finally:
        srv.stop()


def test_head_has_the_length_and_no_body(serve):
    srv = serve()
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(build("HEAD", "/static/range.bin") + build("GET", "/static/hello.txt"))
        r = rd.read_response(head=True)
        assert r.status == 200
        assert r.header("content-length") == str(len(RANGE_DATA))
        assert r.header("content-type") == "application/octet-stream"
        assert r.header("etag") and r.header("last-modified")
        # The next response starts right away: the HEAD sent no body bytes.
        r2 = rd.read_response()
        assert (r2.status, r2.body) == (200, HELLO)
    finally:
        s.close()
    get = fetch(srv, "/static/range.bin")
    assert get.header("etag") == r.header("etag")
    assert calls(srv) == []


def test_empty_file(serve):
    srv = serve()
    r = fetch(srv, "/static/empty.txt")
    assert (r.status, r.body, r.header("content-length")) == (200, b"", "0")
    r = fetch(srv, "/static/empty.txt", [("Range", "bytes=0-")])
    assert r.status == 416 and r.header("content-range") == "bytes */0"
    assert calls(srv) == []


def test_http10_request(serve):
    srv = serve()
    s = srv.connect()
    try:
        s.sendall(build("GET", "/static/hello.txt", version="HTTP/1.0"))
        rd = RawReader(s)
        r = rd.read_response()
        assert (r.version, r.status, r.body) == ("HTTP/1.0", 200, HELLO)
        assert rd.at_eof(5)
    finally:
        s.close()


def test_connection_close_is_honoured(serve):
    srv = serve()
    s = srv.connect()
    try:
        s.sendall(build("GET", "/static/range.bin", [("Connection", "close")]))
        rd = RawReader(s)
        r = rd.read_response()
        assert (r.status, r.body) == (200, RANGE_DATA)
        assert r.header("connection") == "close"
        assert rd.at_eof(5)
    finally:
        s.close()


def _worker_pids(srv):
    with open("/proc/%d/task/%d/children" % (srv.pid, srv.pid)) as f:
        return [int(x) for x in f.read().split()]


def _nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@pytest.mark.parametrize("cache", ["0", "60"])
def test_no_file_descriptor_leaks(serve, cache):
    srv = serve("--static-gzip", "--static-index", "index.html", "--static-cache", cache)
    (worker,) = _worker_pids(srv)
    base = _nfds(worker)  # before any connection
    etag = fetch(srv, "/static/range.bin").header("etag")
    batch = [
        (build("GET", "/static/range.bin"), False),
        (build("HEAD", "/static/range.bin"), True),
        (build("GET", "/static/range.bin", [("Range", "bytes=5-9")]), False),
        (build("GET", "/static/range.bin", [("Range", "bytes=999999-")]), False),
        (build("GET", "/static/range.bin", [("If-None-Match", etag)]), False),
        (build("GET", "/static/gz/app.js", [("Accept-Encoding", "br")]), False),
        (build("GET", "/static/gz/dirvariant.txt", [("Accept-Encoding", "gzip")]), False),
        (build("GET", "/static/gz/leak.txt", [("Accept-Encoding", "gzip")]), False),
        (build("GET", "/static/sub/"), False),
        (build("GET", "/static/noindex/"), False),
        (build("GET", "/static/idxlink/"), False),
        (build("GET", "/static/missing"), False),
        (build("GET", "/static/out_rel"), False),
        (build("GET", "/static/fifo"), False),
        (build("DELETE", "/static/range.bin"), False),
    ]
    s = srv.connect()
    try:
        rd = RawReader(s)
        for i in range(20):
            s.sendall(b"".join(raw for raw, _ in batch))
            for _, head in batch:
                rd.read_response(head=head)
            if i == 0:
                after_one = _nfds(worker)
            # Without the cache, nothing but this connection; with it, the
            # files the first round opened stay open, and no more.
            assert _nfds(worker) == (base + 1 if cache == "0" else after_one)
        assert after_one <= base + 1 + len(batch)
    finally:
        s.close()
    held = after_one - base - 1
    wait_for(lambda: _nfds(worker) <= base + held, 5,
             what="the worker back to %d fds" % (base + held))


def test_static_cache_serves_then_sees_a_change(serve, tmp_path):
    """--static-cache 1: a file replaced on disk may be served as it was for
    up to a second, then the new one is served (new content, new ETag)."""
    d = tmp_path / "cached"
    d.mkdir()
    f = d / "f.txt"
    f.write_bytes(b"old!")
    srv = serve("--static-cache", "1", maps=["/c=" + str(d)])
    r1 = fetch(srv, "/c/f.txt")
    assert r1.body == b"old!"
    tmp = d / "f.txt.new"
    tmp.write_bytes(b"new content")
    os.rename(tmp, f)  # a deploy: a new inode under the old name
    changed_at = time.monotonic()
    r2 = wait_for(lambda: (lambda r: r if r.body == b"new content" else None)(
        fetch(srv, "/c/f.txt")), 5, interval=0.05, what="the new file served")
    assert time.monotonic() - changed_at < 2.5
    assert r2.header("etag") != r1.header("etag")
    assert int(r2.header("content-length")) == len(b"new content")
    # A file that appears is found within the same second, and one that
    # goes away is gone.
    assert fetch(srv, "/c/later.txt").status == 404
    (d / "later.txt").write_bytes(b"here")
    wait_for(lambda: fetch(srv, "/c/later.txt").status == 200, 5, interval=0.05,
             what="the new file found")
    os.unlink(f)
    wait_for(lambda: fetch(srv, "/c/f.txt").status == 404, 5, interval=0.05,
             what="the removed file gone")
    assert calls(srv) == []


def _fds_to(pid, path):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def test_mapped_directory_is_held_open_once_per_worker(serve, site):
    """Each worker holds one descriptor of the mapped directory, and the master
    (which only checks the map) none: probing for openat2 at start-up used to
    leak one more in every process that opened the map."""
    srv = serve("--workers", "2")
    workers = wait_for(lambda: len(_worker_pids(srv)) == 2 and _worker_pids(srv), 10,
                       what="two workers")
    assert fetch(srv, "/static/hello.txt").body == HELLO
    assert _fds_to(srv.pid, site.root) == 0
    for pid in workers:
        assert _fds_to(pid, site.root) == 1, pid


def test_keep_alive_and_pipelining_mix_static_and_app(serve):
    srv = serve()
    etag = fetch(srv, "/static/hello.txt").header("etag")
    reqs = [
        (build("GET", "/static/hello.txt"), False),
        (build("HEAD", "/static/hello.txt"), True),
        (build("GET", "/static/range.bin", [("Range", "bytes=0-9")]), False),
        (build("GET", "/static/missing.txt"), False),
        (build("GET", "/app"), False),
        (build("POST", "/static/hello.txt", body=b"xyz"), False),
        (build("GET", "/static/hello.txt", [("If-None-Match", etag)]), False),
        (build("GET", "/static/empty.txt"), False),
        (build("GET", "/static/range.bin", [("Range", "bytes=99990-")]), False),
        (build("GET", "/static/hello.txt"), False),
    ]
    s = srv.connect()
    try:
        s.sendall(b"".join(raw for raw, _ in reqs))
        rd = RawReader(s)
        got = [rd.read_response(head=h) for _, h in reqs]
    finally:
        s.close()
    assert [r.status for r in got] == [200, 200, 206, 404, 200, 405, 304, 200, 206, 200]
    assert got[0].body == HELLO and got[1].body == b""
    assert got[2].body == RANGE_DATA[:10] and got[8].body == RANGE_DATA[99990:]
    assert b'"PATH_INFO": "/app"' in got[4].body
    assert got[9].body == HELLO
    assert calls(srv) == ["/app"]


# ------------------------------------------------------------------ prefixes, index, 405

def test_longest_prefix_wins_whatever_the_order(serve, tmp_path):
    dirs = {}
    for name in ("a", "abc", "ab"):
        d = tmp_path / ("map-" + name)
        d.mkdir()
        (d / "who.txt").write_bytes(name.encode())
        (d / "c").mkdir()
        (d / "c" / "who.txt").write_bytes(name.encode() + b"/c")
        dirs[name] = str(d)
    srv = serve(maps=["/a=" + dirs["a"], "/a/b/c=" + dirs["abc"], "/a/b/=" + dirs["ab"]])
    assert fetch(srv, "/a/who.txt").body == b"a"
    assert fetch(srv, "/a/b/who.txt").body == b"ab"
    assert fetch(srv, "/a/b/c/who.txt").body == b"abc"
    assert fetch(srv, "/a/b/c/c/who.txt").body == b"abc/c"
    assert fetch(srv, "/a/c/who.txt").body == b"a/c"
    assert fetch(srv, "/a/bc/who.txt").status == 404  # "/a" map: bc is a missing name
    assert calls(srv) == []
    r = fetch(srv, "/ab/who.txt")  # no map matches a partial segment
    assert r.status == 200 and b'"PATH_INFO": "/ab/who.txt"' in r.body
    assert calls(srv) == ["/ab/who.txt"]


def test_root_map_with_fallthrough(serve, site):
    srv = serve("--static-fallthrough", maps=["/=" + site.root])
    assert fetch(srv, "/hello.txt").body == HELLO
    assert fetch(srv, "/sub/page.html").status == 200
    assert calls(srv) == []
    r = fetch(srv, "/api/users?id=3")
    assert r.status == 200 and b'"PATH_INFO": "/api/users"' in r.body
    assert calls(srv) == ["/api/users"]


def test_index_file(serve, site):
    srv = serve("--static-index", "index.html")
    r = fetch(srv, "/static/sub/")
    assert r.status == 200
    assert r.body == b"<p>sub index</p>\n"
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert fetch(srv, "/static/linkdir/").body == b"<p>sub index</p>\n"
    assert fetch(srv, "/static/sub").body == b"<p>sub index</p>\n"  # no redirect to /sub/
    r = fetch(srv, "/static/noindex/")
    assert_not_found(r)
    assert b"file.txt" not in r.body
    assert_not_found(fetch(srv, "/static/"))  # the root has no index.html
    assert calls(srv) == []


def test_index_that_is_a_symlink_within_the_root(serve):
    """idxlink/index.html -> ../sub/page.html stays inside the root, so it works."""
    srv = serve("--static-index", "index.html")
    r = fetch(srv, "/static/idxlink/")
    assert r.status == 200, (r.status, r.body)
    assert r.body == b"<p>page</p>\n"
    assert calls(srv) == []


def test_no_directory_listings_without_index(serve):
    srv = serve()
    for path in ("/static/sub/", "/static/sub", "/static/", "/static", "/static/noindex/"):
        r = fetch(srv, path)
        assert_not_found(r)
        assert b"page.html" not in r.body and b"index.html" not in r.body
    assert calls(srv) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(serve, method):
    srv = serve()
    s = srv.connect()
    try:
        rd = RawReader(s)
        for path in ("/static/hello.txt", "/static/missing.txt", "/static/sub/"):
            s.sendall(build(method, path, body=b"name=value"))
            r = rd.read_response()
            assert r.status == 405, (path, r.status)
            assert r.header("allow") == "GET, HEAD"
        # The body was consumed: the connection goes on.
        s.sendall(build("GET", "/static/hello.txt"))
        assert rd.read_response().body == HELLO
    finally:
        s.close()
    assert calls(srv) == []
    r = fetch(srv, "/form", method=method, body=b"a=1")  # outside the prefix: the app
    assert r.status == 200 and ('"REQUEST_METHOD": "%s"' % method).encode() in r.body


# ------------------------------------------------------------------ caching validators

def test_expires_and_cache_control(serve):
    srv = serve("--static-expires", "3600")
    for r in (fetch(srv, "/static/hello.txt"),
              fetch(srv, "/static/hello.txt", method="HEAD"),
              fetch(srv, "/static/range.bin", [("Range", "bytes=0-1")])):
        assert r.header("cache-control") == "max-age=3600"
        date = email.utils.parsedate_to_datetime(r.header("date"))
        expires = email.utils.parsedate_to_datetime(r.header("expires"))
        assert abs((expires - date).total_seconds() - 3600) <= 2
    etag = fetch(srv, "/static/hello.txt").header("etag")
    r = fetch(srv, "/static/hello.txt", [("If-None-Match", etag)])
    assert r.status == 304
    assert r.header("cache-control") == "max-age=3600" and r.header("expires")
    assert calls(srv) == []


def test_expires_takes_time_units(serve):
    srv = serve("--static-expires", "2h")
    assert fetch(srv, "/static/hello.txt").header("cache-control") == "max-age=7200"


def test_expires_rules_in_uwsgi_form(serve, tmp_path):
    """uWSGI's forms: "REGEX SECONDS" on the file's path (static-expires) and
    on the request path (static-expires-uri, tried first); the first rule
    that matches wins; a bare number is every file; none: no header."""
    d = tmp_path / "assets"
    (d / "img").mkdir(parents=True)
    for name in ("site.css", "app.js", "img/logo.png", "readme.txt"):
        (d / name).write_bytes(b"x")
    srv = serve("--static-expires", r"/assets/.*\.(css|js)$ 3600",
                "--static-expires-uri", "^/a/img/ 1d",
                "--static-expires", r"\.js$ 7", maps=["/a=" + str(d)])
    got = {p: fetch(srv, "/a/" + p).header("cache-control")
           for p in ("site.css", "app.js", "img/logo.png", "readme.txt")}
    assert got == {"site.css": "max-age=3600", "app.js": "max-age=3600",
                   "img/logo.png": "max-age=86400", "readme.txt": None}
    r = fetch(srv, "/a/img/logo.png")
    date = email.utils.parsedate_to_datetime(r.header("date"))
    expires = email.utils.parsedate_to_datetime(r.header("expires"))
    assert abs((expires - date).total_seconds() - 86400) <= 2


@pytest.mark.parametrize("opt,value,why", [
    ("--static-expires", "(unclosed 60", "bad regular expression"),
    ("--static-expires", "abc", "wants [REGEX] SECONDS"),
    ("--static-expires-uri", "60", "wants REGEX SECONDS"),
    # now + the value must be a date: time options stop at 2^32 - 1 seconds
    ("--static-expires", "100000000000000d", "SECONDS (at most 4294967295)"),
    ("--static-expires", "4294967296", "SECONDS (at most 4294967295)"),
    ("--static-expires-uri", r"\.css$ 18446744073709551616", "SECONDS (at most 4294967295)"),
])
def test_bad_expires_rule_stops_the_start(gangway, site, opt, value, why):
    srv = gangway("--static-map", "/static=" + site.root, opt, value, "echo:application",
                  wait=False)
    assert srv.proc.wait(timeout=20) == 1
    assert why in srv.read_log()


def test_if_none_match(serve):
    srv = serve()
    etag = fetch(srv, "/static/hello.txt").header("etag")
    for inm in (etag, '"nope", ' + etag, etag + ', "nope"', "*", "W/" + etag):
        s = srv.connect()
        try:
            rd = RawReader(s)
            s.sendall(build("GET", "/static/hello.txt", [("If-None-Match", inm)]))
            r = rd.read_response()
            assert r.status == 304, inm
            assert r.body == b"" and r.header("content-length") is None
            assert r.header("etag") == etag
            assert r.header("last-modified") == HELLO_LM
            # no body went out: the next response on the connection is intact
            s.sendall(build("GET", "/static/hello.txt"))
            assert rd.read_response().body == HELLO
        finally:
            s.close()
    for inm in ('"nope"', etag[:-2] + '"', "W/" + etag[:-2] + '"'):
        r = fetch(srv, "/static/hello.txt", [("If-None-Match", inm)])
        assert (r.status, r.body) == (200, HELLO), inm
    r = fetch(srv, "/static/hello.txt", [("If-None-Match", etag)], method="HEAD")
    assert r.status == 304 and r.header("content-length") is None
    assert calls(srv) == []


def test_if_modified_since(serve):
    srv = serve()
    cases = [
        (HELLO_LM, 304),  # equal to Last-Modified (the file's .5 s does not count)
        (email.utils.formatdate(1_700_000_000 + 86400, usegmt=True), 304),
        (email.utils.formatdate(1_700_000_000 - 1, usegmt=True), 200),
        ("not a date", 200),
    ]
    for ims, status in cases:
        r = fetch(srv, "/static/hello.txt", [("If-Modified-Since", ims)])
        assert r.status == status, ims
        assert r.body == (HELLO if status == 200 else b"")
        if status == 304:
            assert r.header("content-length") is None
    assert calls(srv) == []


def test_if_modified_since_in_the_obsolete_date_formats(serve):
    """RFC 9110 5.6.7: a recipient MUST accept all three HTTP-date formats."""
    srv = serve()
    for ims in ("Tuesday, 14-Nov-23 22:13:20 GMT",   # RFC 850
                "Tue Nov 14 22:13:20 2023"):         # asctime
        r = fetch(srv, "/static/hello.txt", [("If-Modified-Since", ims)])
        assert r.status == 304, ims


def test_if_none_match_wins_over_if_modified_since(serve):
    srv = serve()
    etag = fetch(srv, "/static/hello.txt").header("etag")
    old = email.utils.formatdate(1_000_000_000, usegmt=True)
    r = fetch(srv, "/static/hello.txt", [("If-None-Match", '"other"'),
                                         ("If-Modified-Since", HELLO_LM)])
    assert (r.status, r.body) == (200, HELLO)
    r = fetch(srv, "/static/hello.txt", [("If-None-Match", etag), ("If-Modified-Since", old)])
    assert r.status == 304


def test_etag_follows_inode_size_and_mtime_ns(serve, tmp_path):
    d = tmp_path / "etags"
    d.mkdir()
    f, twin = d / "f.txt", d / "twin.txt"
    f.write_bytes(b"aaaa")
    twin.write_bytes(b"bbbb")
    t = 1_600_000_000_000_000_000
    os.utime(f, ns=(t, t))
    os.utime(twin, ns=(t, t))
    srv = serve("--static-cache", "0", maps=["/e=" + str(d)])  # every change seen at once
    e1 = fetch(srv, "/e/f.txt").header("etag")
    assert ETAG_RE.match(e1)
    # same size and mtime, another inode
    assert fetch(srv, "/e/twin.txt").header("etag") != e1
    # one nanosecond later, same size and same second
    os.utime(f, ns=(t, t + 1))
    r = fetch(srv, "/e/f.txt")
    e2 = r.header("etag")
    assert e2 != e1 and r.header("last-modified") == email.utils.formatdate(t // 10**9, usegmt=True)
    r = fetch(srv, "/e/f.txt", [("If-None-Match", e1)])
    assert (r.status, r.body) == (200, b"aaaa")
    # another size, same mtime
    f.write_bytes(b"aaaaa")
    os.utime(f, ns=(t, t + 1))
    e3 = fetch(srv, "/e/f.txt").header("etag")
    assert e3 not in (e1, e2)
    assert fetch(srv, "/e/f.txt", [("If-None-Match", e3)]).status == 304
    assert fetch(srv, "/e/f.txt", [("If-None-Match", e2)]).status == 200
    assert calls(srv) == []


# ------------------------------------------------------------------ ranges

@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-0", 0, 0),
    ("bytes=0-9", 0, 9),
    ("bytes=1000-1999", 1000, 1999),
    ("bytes=99999-99999", 99999, 99999),
    ("bytes=50000-", 50000, 99999),
    ("bytes=0-", 0, 99999),
    ("bytes=-1", 99999, 99999),
    ("bytes=-500", 99500, 99999),
    ("bytes=-100000", 0, 99999),
    ("bytes=-250000", 0, 99999),       # suffix longer than the file: all of it
    ("bytes=99000-250000", 99000, 99999),  # end past the file: clamped
])
def test_single_range(serve, spec, start, end):
    srv = serve()
    r = fetch(srv, "/static/range.bin", [("Range", spec)])
    assert r.status == 206, spec
    assert r.header("content-range") == "bytes %d-%d/%d" % (start, end, len(RANGE_DATA))
    assert r.header("content-length") == str(end - start + 1)
    assert r.body == RANGE_DATA[start:end + 1]
    assert r.header("etag") and r.header("accept-ranges") == "bytes"
    h = fetch(srv, "/static/range.bin", [("Range", spec)], method="HEAD")
    assert h.status == 206 and h.header("content-length") == str(end - start + 1)
    assert h.header("content-range") == r.header("content-range")
    assert calls(srv) == []


@pytest.mark.parametrize("spec", ["bytes=100000-", "bytes=100000-100005", "bytes=999999-",
                                  "bytes=-0"])
def test_unsatisfiable_range_is_416(serve, spec):
    srv = serve()
    s = srv.connect()
    try:
        rd = RawReader(s)
        s.sendall(build("GET", "/static/range.bin", [("Range", spec)]))
        r = rd.read_response()
        assert r.status == 416, spec
        assert r.header("content-range") == "bytes */%d" % len(RANGE_DATA)
        assert RANGE_DATA[:16] not in r.body
        s.sendall(build("GET", "/static/hello.txt"))
        assert rd.read_response().body == HELLO
    finally:
        s.close()
    assert calls(srv) == []


@pytest.mark.parametrize("spec", [
    "bytes=0-1,5-6",          # several ranges: decided, the whole file with 200
    "bytes=0-1, 10-20, 30-",
    "bytes=-5,0-0",
    "bytes=5-2",              # last < first: invalid, ignored
    "bytes=abc",
    "bytes=x-5",
    "items=0-5",              # another unit: ignored
    "bytes 0-5",
])
def test_several_or_invalid_ranges_get_the_whole_file(serve, spec):
    srv = serve()
    r = fetch(srv, "/static/range.bin", [("Range", spec)])
    assert r.status == 200, spec
    assert r.header("content-range") is None
    assert r.header("content-length") == str(len(RANGE_DATA))
    assert r.body == RANGE_DATA


@pytest.mark.parametrize("spec", ["bytes=--5", "bytes=-+5", "bytes=- 5", "bytes=-\t5"])
def test_suffix_range_takes_digits_only(serve, spec):
    """A suffix length is 1*DIGIT (RFC 9110 14.1.1): these are not ranges, so
    the whole file. strtoull() alone took "-5" (as 2^64 - 5), "+5" and " 5"."""
    srv = serve()
    r = fetch(srv, "/static/range.bin", [("Range", spec)])
    assert r.status == 200, spec
    assert r.header("content-range") is None
    assert r.body == RANGE_DATA
    assert calls(srv) == []


def test_if_range(serve):
    srv = serve()
    first = fetch(srv, "/static/range.bin")
    etag, lm = first.header("etag"), first.header("last-modified")
    mtime = email.utils.parsedate_to_datetime(lm).timestamp()
    earlier = email.utils.formatdate(mtime - 10, usegmt=True)
    cases = [(etag, 206), (lm, 206), ('"other"', 200), ("W/" + etag, 200), (earlier, 200),
             ("garbage", 200)]
    for ir, status in cases:
        r = fetch(srv, "/static/range.bin", [("Range", "bytes=10-19"), ("If-Range", ir)])
        assert r.status == status, ir
        if status == 206:
            assert r.body == RANGE_DATA[10:20]
        else:
            assert r.body == RANGE_DATA and r.header("content-range") is None
    # a stale If-Range with an unsatisfiable range: the whole file, not a 416
    r = fetch(srv, "/static/range.bin", [("Range", "bytes=200000-"), ("If-Range", '"old"')])
    assert (r.status, r.body) == (200, RANGE_DATA)
    # If-None-Match beats Range
    r = fetch(srv, "/static/range.bin", [("Range", "bytes=10-19"), ("If-None-Match", etag)])
    assert r.status == 304
    assert calls(srv) == []


# ------------------------------------------------------------------ precompressed variants

@pytest.mark.parametrize("accept,coding", [
    (None, None),
    ("gzip", "gzip"),
    ("br", "br"),
    ("gzip, br", "br"),
    ("br, gzip", "br"),
    ("br;q=0.1, gzip;q=1.0", "br"),   # br is preferred while it is accepted at all
    ("GZIP", "gzip"),
    ("deflate, gzip;q=0.5", "gzip"),
    ("gzip;q=0.001", "gzip"),
    ("br;q=0, gzip", "gzip"),
    ("gzip, br;q=0", "gzip"),
    ("br;q=0, gzip;q=0", None),
    ("gzip;q=0", None),
    ("gzip;q=0.000", None),
    ("br; q=0, gzip", "gzip"),   # RFC 9110 allows whitespace around ';'
    ("gzip; q=0", None),
    ("deflate", None),
    ("identity", None),
    ("", None),
    ("xgzip, brotli", None),     # other tokens that merely contain the names
])
def test_accept_encoding_picks_the_variant(serve, site, accept, coding):
    srv = serve("--static-gzip")
    hdrs = [("Accept-Encoding", accept)] if accept is not None else []
    r = fetch(srv, "/static/gz/app.js", hdrs)
    assert r.status == 200
    assert r.header("content-encoding") == coding, accept
    want = {None: site.js_plain, "gzip": site.js_gz, "br": site.js_br}[coding]
    assert r.body == want
    assert r.header("content-length") == str(len(want))
    assert r.header("content-type") == "text/javascript; charset=utf-8"  # the original's
    assert values(r, "vary") == ["Accept-Encoding"]
    assert calls(srv) == []


def test_variants_have_their_own_etags_and_ranges(serve, site):
    srv = serve("--static-gzip")
    path = "/static/gz/app.js"
    plain = fetch(srv, path)
    gz = fetch(srv, path, [("Accept-Encoding", "gzip")])
    br = fetch(srv, path, [("Accept-Encoding", "br")])
    etags = {plain.header("etag"), gz.header("etag"), br.header("etag")}
    assert len(etags) == 3 and all(ETAG_RE.match(e) for e in etags)
    # 304 only for the validator of the variant the request would get
    r = fetch(srv, path, [("Accept-Encoding", "gzip"), ("If-None-Match", gz.header("etag"))])
    assert r.status == 304
    assert r.header("etag") == gz.header("etag") and r.header("content-encoding") == "gzip"
    assert values(r, "vary") == ["Accept-Encoding"]
    r = fetch(srv, path, [("If-None-Match", gz.header("etag"))])
    assert (r.status, r.body) == (200, site.js_plain)
    # a range is a range of the variant's bytes
    r = fetch(srv, path, [("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")])
    assert r.status == 206
    assert r.header("content-range") == "bytes 0-9/%d" % len(site.js_gz)
    assert r.body == site.js_gz[:10] and r.header("content-encoding") == "gzip"
    assert values(r, "vary") == ["Accept-Encoding"]
    # If-Range with the identity ETag does not match the gzip variant
    r = fetch(srv, path, [("Accept-Encoding", "gzip"), ("Range", "bytes=0-9"),
                          ("If-Range", plain.header("etag"))])
    assert (r.status, r.body) == (200, site.js_gz)
    h = fetch(srv, path, [("Accept-Encoding", "br")], method="HEAD")
    assert h.header("content-length") == str(len(site.js_br))
    assert h.header("content-encoding") == "br" and values(h, "vary") == ["Accept-Encoding"]
    assert calls(srv) == []


def test_variant_fallbacks(serve, site):
    srv = serve("--static-gzip")
    # only a .gz exists
    r = fetch(srv, "/static/gz/style.css", [("Accept-Encoding", "br, gzip")])
    assert (r.header("content-encoding"), r.body) == ("gzip", site.css_gz)
    assert r.header("content-type") == "text/css; charset=utf-8"
    r = fetch(srv, "/static/gz/style.css", [("Accept-Encoding", "br")])
    assert (r.header("content-encoding"), r.body) == (None, site.css_plain)
    assert values(r, "vary") == ["Accept-Encoding"]
    # no variants at all: Vary all the same
    r = fetch(srv, "/static/gz/plain.txt", [("Accept-Encoding", "gzip, br")])
    assert r.header("content-encoding") is None and values(r, "vary") == ["Accept-Encoding"]
    # a variant that is a directory is no variant
    r = fetch(srv, "/static/gz/dirvariant.txt", [("Accept-Encoding", "gzip")])
    assert (r.header("content-encoding"), r.body) == (None, b"the variant is a directory\n")
    # nor is a FIFO, which is never opened for reading
    r = fetch(srv, "/static/gz/fifovariant.txt", [("Accept-Encoding", "gzip")])
    assert (r.header("content-encoding"), r.body) == (None, b"the variant is a FIFO\n")
    _assert_no_reader(os.path.join(site.root, "gz", "fifovariant.txt.gz"))
    # a variant that is a symlink out of the root is never opened
    r = fetch(srv, "/static/gz/leak.txt", [("Accept-Encoding", "gzip")])
    assert r.status == 200 and r.header("content-encoding") is None
    assert r.body == b"the real leak.txt\n"
    # the variant needs the original: no app.css, no app.css.gz answer
    assert_not_found(fetch(srv, "/static/gz/missing.js", [("Accept-Encoding", "gzip")]))
    assert calls(srv) == []


def test_variant_probes_never_break_the_answer_they_serve(serve, tmp_path):
    """Issue 14, item 4: the open-file cache is direct-mapped, and probing
    X.br / X.gz could evict the slot of the file being served (closing its
    descriptor, renaming it to X.br so the next probe looked for X.br.gz):
    about 1% of files answered 503 for ever. 2,000 small files, some with
    both variants, some with one, some with none; each asked for with
    Accept-Encoding: br, gzip and without, with a cache that keeps every
    entry: all 200, with the right bytes, coding and type."""
    d = tmp_path / "many"
    d.mkdir()
    want = {}
    for i in range(2000):
        name = "f%04d.txt" % i
        plain = b"file %d\n" % i
        (d / name).write_bytes(plain)
        variants = {None: plain}
        if i % 4 in (0, 1):
            variants["gzip"] = gzip.compress(plain)
            (d / (name + ".gz")).write_bytes(variants["gzip"])
        if i % 4 in (0, 2):
            variants["br"] = b"pretend-br %d\n" % i
            (d / (name + ".br")).write_bytes(variants["br"])
        want[name] = variants
    srv = serve("--static-gzip", "--static-cache", "600", maps=["/m=" + str(d)])
    asks = [(name, ae) for name in sorted(want) for ae in ("br, gzip", None)]
    bad = []
    s = srv.connect()
    try:
        rd = RawReader(s)
        for k in range(0, len(asks), 100):
            batch = asks[k:k + 100]
            s.sendall(b"".join(build("GET", "/m/" + name,
                                     [("Accept-Encoding", ae)] if ae else [])
                               for name, ae in batch))
            for name, ae in batch:
                r = rd.read_response()
                v = want[name]
                coding = None if ae is None else ("br" if "br" in v else
                                                  "gzip" if "gzip" in v else None)
                got = (r.status, r.header("content-encoding"), r.body,
                       r.header("content-type"))
                if got != (200, coding, v[coding], "text/plain; charset=utf-8"):
                    bad.append((name, ae, got))
    finally:
        s.close()
    assert bad == [], "%d bad answers, the first: %r" % (len(bad), bad[:5])
    assert calls(srv) == []


def test_index_gets_its_variant(serve):
    srv = serve("--static-gzip", "--static-index", "index.html")
    r = fetch(srv, "/static/sub/", [("Accept-Encoding", "gzip")])
    assert r.status == 200 and r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == b"<p>sub index</p>\n"
    assert r.header("content-type") == "text/html; charset=utf-8"


def test_no_variants_or_vary_without_static_gzip(serve, site):
    srv = serve()
    r = fetch(srv, "/static/gz/app.js", [("Accept-Encoding", "gzip, br")])
    assert r.body == site.js_plain
    assert r.header("content-encoding") is None and r.header("vary") is None


# ------------------------------------------------------------------ dot-files

DOTFILES = [
    ("/static/.hidden", b"hidden file"),
    ("/static/.git/config", b"[core]\n"),
    ("/static/sub/.env", b"PASSWORD=hunter2\n"),
    ("/static/%2ehidden", b"hidden file"),
    ("/static/.well-known/security.txt", b"Contact: mailto:security@example.com\n"),
]


@pytest.mark.parametrize("path,content", DOTFILES)
def test_dotfiles_are_404_by_default(serve, path, content):
    srv = serve()
    r = fetch(srv, path)
    assert_not_found(r)
    assert content not in r.body
    assert calls(srv) == []


@pytest.mark.parametrize("path,content", DOTFILES)
def test_static_dotfiles_serves_them(serve, path, content):
    srv = serve("--static-dotfiles")
    r = fetch(srv, path)
    assert (r.status, r.body) == (200, content)
    assert calls(srv) == []


# ------------------------------------------------------------------ fall-through

def test_fallthrough_sends_missing_files_to_the_app(serve):
    srv = serve("--static-fallthrough")
    assert fetch(srv, "/static/hello.txt").body == HELLO
    assert calls(srv) == []
    r = fetch(srv, "/static/missing.txt?x=1")
    assert r.status == 200 and b'"PATH_INFO": "/static/missing.txt"' in r.body
    assert calls(srv) == ["/static/missing.txt"]


def test_without_fallthrough_missing_is_404(serve):
    srv = serve()
    r = fetch(srv, "/static/missing.txt")
    assert_not_found(r)
    assert r.header("content-type") == "text/plain; charset=utf-8"
    r = fetch(srv, "/static/missing.txt", method="HEAD")
    assert r.status == 404
    assert calls(srv) == []


# ------------------------------------------------------------------ safety

ESCAPES = [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/../hello.txt",          # even one that would stay inside
    "/static/..",
    "/static/sub/..",
    "/static/./hello.txt",
    "/static/sub/./page.html",
    "/static/hello.txt/.",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e./secret.txt",
    "/static/%2e/hello.txt",
    "/static/sub/%2e%2e/%2e%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/static/sub%2fpage.html",           # an encoded slash never separates segments
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/..%5csecret.txt",
    "/static/%5c..%5csecret.txt",
    b"/static/..\\secret.txt",
    b"/static/sub\\..\\..\\secret.txt",
    "/static/a%5cb.txt",                 # that file exists: a backslash is never served
    b"/static/a\\b.txt",
    "/static/hello.txt%00",
    "/static/hello.txt%00.png",
    "/static/%00../secret.txt",
    "/static/..%00/secret.txt",
    "/static/%252e%252e/%252e%252e/secret.txt",  # literal names, which do not exist
    "http://x/static/../secret.txt",
    "http://x/static/%2e%2e/secret.txt",
    "/static/out_rel",
    "/static/out_abs",
    "/static/out_dir/secret.txt",
    "/static/out_etc",
    "/static/out_etcdir/passwd",
    "/static/chain1",
    "/static/proc_root/etc/passwd",
    "/static/proc_fd/0",
    "/static/%zz",
    "/static/hello.txt%2",
    "/static/%zz/../secret.txt",
    "/static/" + "a/" * 2500 + "x",      # longer than any path the server resolves
]


def _id(p):
    p = p.decode("latin-1") if isinstance(p, bytes) else p
    return p if len(p) < 60 else p[:40] + "...(%d)" % len(p)


@pytest.mark.parametrize("options", [(), ("--static-dotfiles",)], ids=["default", "dotfiles"])
@pytest.mark.parametrize("path", ESCAPES, ids=_id)
def test_escape_attempts_are_404(serve, options, path):
    srv = serve(*options)
    r = fetch(srv, path)
    assert_not_found(r)
    assert calls(srv) == []


def test_escape_attempts_through_curl_path_as_is(serve):
    srv = serve()
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt",
                 "/static/sub/../../secret.txt", "/static/out_rel"):
        p = curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}", srv.url + path)
        assert p.returncode == 0, p.stderr
        assert p.stdout.endswith(b"\n404"), (path, p.stdout[-200:])
        assert SECRET not in p.stdout
    assert calls(srv) == []


def test_single_decoding_and_literal_names(serve):
    srv = serve()
    cases = [
        ("/static/%41.txt", b"decoded twice: WRONG"),       # %41 is "A", once
        ("/static/%2541.txt", b"literal percent-41 name"),  # %25 is "%", and no more
        ("/static/%252e%252e/secret.txt", b"a directory literally named %2e%2e"),
        ("/static/sp%20ace.txt", b"a space in the name"),
        ("/static/caf%C3%A9.txt", b"utf-8 name"),
        ("/static/%68ello.txt", HELLO),
        ("/static/s%75b/page.html", b"<p>page</p>\n"),
    ]
    for path, body in cases:
        r = fetch(srv, path)
        assert (r.status, r.body) == (200, body), path
    assert calls(srv) == []


def test_symlinks_inside_the_root_work(serve):
    srv = serve()
    assert fetch(srv, "/static/link.txt").body == HELLO
    assert fetch(srv, "/static/linkdir/page.html").body == b"<p>page</p>\n"
    assert fetch(srv, "/static/sub/up.txt").body == HELLO  # ../ that stays inside
    assert fetch(srv, "/static/to_hidden").body == b"hidden file"  # documented
    assert calls(srv) == []


def test_absolute_symlinks_are_refused_even_into_the_root(serve):
    """RESOLVE_BENEATH rejects every absolute symlink (documented)."""
    srv = serve()
    assert_not_found(fetch(srv, "/static/abs_in"))


def _assert_no_reader(fifo):
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        assert e.errno == errno.ENXIO  # nobody holds the FIFO open for reading
    else:
        os.close(fd)
        pytest.fail("something holds the FIFO open for reading")


@pytest.mark.parametrize("name", ["fifo", "fifo_link", "zero", "sock"])
def test_fifos_devices_and_sockets_are_never_read(serve, site, name):
    if name == "zero" and not site.has_device:
        pytest.skip("cannot create a device node here")
    srv = serve("--static-dotfiles", "--static-gzip")
    t0 = time.monotonic()
    s = srv.connect()
    try:
        rd = RawReader(s, timeout=5)
        s.sendall(build("GET", "/static/" + name))
        r = rd.read_response()
        assert_not_found(r)
        assert time.monotonic() - t0 < 3
        s.sendall(build("HEAD", "/static/" + name, [("Range", "bytes=0-10")]))
        assert rd.read_response(head=True).status == 404
    finally:
        s.close()
    _assert_no_reader(os.path.join(site.root, "fifo"))
    # the worker is not stuck on it
    assert fetch(srv, "/static/hello.txt").body == HELLO
    assert calls(srv) == []


def test_index_that_is_a_fifo_is_never_read(serve, site, tmp_path):
    d = tmp_path / "fifoindex"
    (d / "dir").mkdir(parents=True)
    os.mkfifo(str(d / "dir" / "index.html"))
    srv = serve("--static-index", "index.html", maps=["/f=" + str(d)])
    assert_not_found(fetch(srv, "/f/dir/"))
    _assert_no_reader(str(d / "dir" / "index.html"))
    assert calls(srv) == []


# ------------------------------------------------------------------ headers and status lines

def test_status_lines_and_no_duplicate_headers(serve):
    srv = serve("--static-gzip", "--static-expires", "60")
    etag = fetch(srv, "/static/range.bin").header("etag")
    cases = [
        (("GET", "/static/range.bin", ()), 200, "OK"),
        (("GET", "/static/gz/app.js", [("Accept-Encoding", "gzip")]), 200, "OK"),
        (("GET", "/static/range.bin", [("Range", "bytes=1-2")]), 206, "Partial Content"),
        (("GET", "/static/range.bin", [("If-None-Match", etag)]), 304, "Not Modified"),
        (("GET", "/static/missing", ()), 404, "Not Found"),
        (("DELETE", "/static/range.bin", ()), 405, "Method Not Allowed"),
        (("GET", "/static/range.bin", [("Range", "bytes=999999-")]), 416,
         "Range Not Satisfiable"),
        (("HEAD", "/static/range.bin", ()), 200, "OK"),
    ]
    problems = []
    for (method, path, hdrs), status, reason in cases:
        r = fetch(srv, path, hdrs, method=method)
        names = [k for k, _ in r.headers]
        dups = sorted({n for n in names if names.count(n) > 1})
        if (r.status, r.reason) != (status, reason):
            problems.append("%s %s: status line %d %r, want %d %r"
                            % (method, path, r.status, r.reason, status, reason))
        if dups:
            problems.append("%s %s (%d): repeated headers %s: %r"
                            % (method, path, r.status, dups,
                               [(k, v) for k, v in r.headers if k in dups]))
    assert problems == [], "\n".join(problems)


# ------------------------------------------------------------------ curl

def test_curl_get_head_range_and_resume(serve, tmp_path):
    srv = serve()
    url = srv.url + "/static/range.bin"
    p = curl("-o", "-", "-w", "%{http_code} %{content_type}", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout == RANGE_DATA + b"200 application/octet-stream"
    p = curl("-I", url)
    assert p.returncode == 0 and b"HTTP/1.1 200 OK" in p.stdout
    assert ("Content-Length: %d" % len(RANGE_DATA)).encode() in p.stdout
    p = curl("-r", "100-199", "-o", "-", "-w", "%{http_code}", url)
    assert p.stdout == RANGE_DATA[100:200] + b"206"
    # resume an interrupted download: curl asks for bytes=N- and appends
    out = tmp_path / "resumed.bin"
    out.write_bytes(RANGE_DATA[:12345])
    p = curl("-C", "-", "-o", str(out), url)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == RANGE_DATA
    assert calls(srv) == []


def test_curl_etag_compare_and_if_modified_since(serve, tmp_path):
    srv = serve()
    url = srv.url + "/static/hello.txt"
    etag_file = tmp_path / "etag"
    p = curl("--etag-save", str(etag_file), "-o", "/dev/null", "-w", "%{http_code}", url)
    assert p.stdout == b"200" and etag_file.read_text().strip().startswith('"')
    p = curl("--etag-compare", str(etag_file), "-o", "-", "-w", "%{http_code}", url)
    assert p.stdout == b"304"
    stamp = tmp_path / "stamp"
    stamp.write_bytes(b"")
    os.utime(stamp, (1_700_000_000, 1_700_000_000))
    p = curl("-z", str(stamp), "-o", "-", "-w", "%{http_code}", url)
    assert p.stdout == b"304"
    os.utime(stamp, (1_600_000_000, 1_600_000_000))
    p = curl("-z", str(stamp), "-o", "-", "-w", "%{http_code}", url)
    assert p.stdout == HELLO + b"200"


def test_curl_compressed_decodes_the_gzip_variant(serve, site):
    srv = serve("--static-gzip")
    p = curl("--compressed", "-D", "-", "-o", "-", srv.url + "/static/gz/style.css")
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Vary: Accept-Encoding" in head
    assert body == site.css_plain  # curl undid the gzip of style.css.gz
    assert calls(srv) == []


# ------------------------------------------------------------------ big and slow

def _read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise EOFError("closed before the head")
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs, rest


def test_three_gib_sparse_file(serve, tmp_path):
    size = 3 << 30
    d = tmp_path / "huge"
    d.mkdir()
    path = str(d / "huge.bin")
    with open(path, "wb"):
        pass
    os.truncate(path, size)
    markers = [(0, b"GW-START"), ((1 << 31) - 4, b"ACROSS-2GiB"), ((1 << 32) - (1 << 30) - 8,
                                                                    b"GW---END")]
    fd = os.open(path, os.O_WRONLY)
    try:
        for off, data in markers:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    assert os.stat(path).st_size == size
    try:
        _three_gib(serve(maps=["/huge=" + str(d)]), size, markers)
    finally:
        os.unlink(path)  # pytest keeps old tmp dirs; sparse, but leave nothing big behind


def _three_gib(srv, size, markers):
    h = fetch(srv, "/huge/huge.bin", method="HEAD")
    assert h.status == 200 and h.header("content-length") == str(size)
    r = fetch(srv, "/huge/huge.bin", [("Range", "bytes=-8")])
    assert r.status == 206 and r.body == b"GW---END"
    assert r.header("content-range") == "bytes %d-%d/%d" % (size - 8, size - 1, size)
    r = fetch(srv, "/huge/huge.bin", [("Range", "bytes=%d-%d" % ((1 << 31) - 4, (1 << 31) + 6))])
    assert r.status == 206 and r.body == b"ACROSS-2GiB"

    # A 2 GiB range: its head, then the client gives up; the server lives on.
    s = srv.connect()
    try:
        s.sendall(build("GET", "/huge/huge.bin", [("Range", "bytes=%d-" % (1 << 30))]))
        status, hdrs, _ = _read_head(s)
        assert status.startswith("HTTP/1.1 206 ")
        assert hdrs["content-length"] == str(size - (1 << 30))
        assert hdrs["content-range"] == "bytes %d-%d/%d" % (1 << 30, size - 1, size)
    finally:
        s.close()
    assert fetch(srv, "/huge/huge.bin", [("Range", "bytes=0-7")]).body == b"GW-START"

    # The whole file, checked by length and markers, then the connection is reused.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(10)
    s.connect((srv.host, srv.port))
    try:
        t0 = time.monotonic()
        s.sendall(build("GET", "/huge/huge.bin"))
        status, hdrs, rest = _read_head(s)
        assert status == "HTTP/1.1 200 OK"
        assert hdrs["content-length"] == str(size)
        buf = bytearray(4 << 20)
        mv = memoryview(buf)
        pos = 0
        seen = []

        def check(chunk, at):
            for off, data in markers:
                lo, hi = max(off, at), min(off + len(data), at + len(chunk))
                if lo < hi:
                    assert bytes(chunk[lo - at:hi - at]) == data[lo - off:hi - off], off
                    seen.append((off, hi - lo))

        check(rest, 0)
        pos = len(rest)
        while pos < size:
            n = s.recv_into(mv, min(len(buf), size - pos))
            if not n:
                break
            check(mv[:n], pos)
            pos += n
            assert time.monotonic() - t0 < 15, "3 GiB took over 15 s (%d bytes read)" % pos
        assert pos == size
        assert sum(n for _, n in seen) == sum(len(d) for _, d in markers)
        # no byte beyond Content-Length: the next answer on this connection is clean
        s.sendall(build("GET", "/huge/huge.bin", [("Range", "bytes=0-7")]))
        rd = RawReader(s)
        r = rd.read_response()
        assert (r.status, r.body) == (206, b"GW-START")
    finally:
        s.close()
    assert calls(srv) == []


def test_slow_reader_does_not_hold_up_other_clients(serve, tmp_path):
    size = 50 << 20
    d = tmp_path / "big"
    d.mkdir()
    block = random.Random(9).randbytes(1 << 20)
    digest = hashlib.sha256()
    with open(d / "big.bin", "wb") as f:
        for i in range(size >> 20):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            digest.update(chunk)
    try:
        _slow_reader(serve(maps=["/big=" + str(d)]), size, digest)
    finally:
        os.unlink(str(d / "big.bin"))


def _slow_reader(srv, size, digest):
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    slow.settimeout(10)
    slow.connect((srv.host, srv.port))
    try:
        slow.sendall(build("GET", "/big/big.bin"))
        status, hdrs, rest = _read_head(slow)
        assert status == "HTTP/1.1 200 OK" and hdrs["content-length"] == str(size)
        got = hashlib.sha256(rest)
        received = len(rest)

        def read_slowly(seconds):
            nonlocal received
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                b = slow.recv(4096)
                assert b, "the slow connection closed early"
                got.update(b)
                received += len(b)
                time.sleep(0.01)  # the pause of a slow client, not a wait for an event

        read_slowly(0.5)
        for i in range(3):
            t0 = time.monotonic()
            r = fetch(srv, "/big/big.bin", [("Range", "bytes=0-3")])
            assert r.status == 206 and r.body == b"\0\0\0\0"
            r = fetch(srv, "/app-probe-%d" % i)
            assert r.status == 200 and b"app-probe" in r.body
            elapsed = time.monotonic() - t0
            assert elapsed < 1.0, "a fresh request took %.2f s behind the slow reader" % elapsed
            read_slowly(0.2)
        assert received < size // 4, "not mid-transfer: %d bytes already read" % received

        # now read the rest fast and check every byte
        deadline = time.monotonic() + 20
        while received < size:
            b = slow.recv(1 << 20)
            assert b, "closed after %d of %d bytes" % (received, size)
            got.update(b)
            received += len(b)
            assert time.monotonic() < deadline
        assert received == size
        assert got.hexdigest() == digest.hexdigest()
    finally:
        slow.close()
    assert calls(srv) == ["/app-probe-0", "/app-probe-1", "/app-probe-2"]


# ------------------------------------------------------------------ app-sent files

@pytest.fixture
def payload(tmp_path):
    p = tmp_path / "payload.bin"
    data = random.Random(21).randbytes(4 * 1024 * 1024 + 7)
    p.write_bytes(data)
    return str(p), data


def test_django_fileresponse_goes_through_file_wrapper(serve, site, payload, monkeypatch):
    pytest.importorskip("django")
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    path, data = payload
    srv = serve(app="static_django:application", env={"GW_TEST_STATIC_FILE": path})
    s = srv.connect()
    try:
        rd = RawReader(s)
        for _ in range(2):  # twice on one keep-alive connection
            s.sendall(build("GET", "/file"))
            r = rd.read_response()
            assert r.status == 200, r.body[:300]
            assert r.header("content-length") == str(len(data))
            assert r.header("content-type") == "application/octet-stream"
            assert r.header("content-disposition") == 'attachment; filename="report.bin"'
            assert r.body == data
        s.sendall(build("GET", "/hello"))
        assert rd.read_response().body == b"django says hi"
        s.sendall(build("GET", "/static/hello.txt"))
        assert rd.read_response().body == HELLO
    finally:
        s.close()
    assert calls(srv) == ["app /file", "file_wrapper payload.bin"] * 2 + ["app /hello"]


def test_flask_send_file_goes_through_file_wrapper(serve, payload):
    pytest.importorskip("flask")
    path, data = payload
    srv = serve(app="static_flask:application", env={"GW_TEST_STATIC_FILE": path})
    r = fetch(srv, "/download")
    assert r.status == 200
    assert r.header("content-length") == str(len(data)) and r.body == data
    assert fetch(srv, "/static/hello.txt").body == HELLO
    assert calls(srv) == ["app /download", "file_wrapper payload.bin"]


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("value,message", [
    ("/static={missing}", "cannot open directory"),
    ("static={root}", "wants /prefix=DIR"),
    ("/static", "wants /prefix=DIR"),
    ("/static=", "wants /prefix=DIR"),
    ("/static={file}", "cannot open directory"),
])
def test_bad_static_map_stops_the_start(gangway, site, tmp_path, value, message):
    v = value.format(missing=str(tmp_path / "nope"), root=site.root,
                     file=os.path.join(site.root, "hello.txt"))
    srv = gangway("--static-map", v, "echo:application", wait=False)
    rc = srv.proc.wait(15)
    assert rc == 1
    log = srv.read_log()
    assert message in log and "ready" not in log


@pytest.mark.parametrize("accept", [None, "gzip", "br"])
def test_expires_rules_name_the_file_asked_for_not_its_variant(serve, accept):
    """A file-path rule for \\.(css|js)$ covers style.css.gz and app.js.br
    when they answer for style.css and app.js (the variant's own name does
    not end in .css)."""
    srv = serve("--static-gzip", "--static-expires", r"\.(css|js)$ 600")
    hdrs = [("Accept-Encoding", accept)] if accept else []
    for path in ("/static/gz/style.css", "/static/gz/app.js"):
        r = fetch(srv, path, hdrs)
        assert r.status == 200
        assert r.header("cache-control") == "max-age=600", (path, accept, r.header("content-encoding"))
    assert fetch(srv, "/static/gz/plain.txt", hdrs).header("cache-control") is None
