"""A real Django site on a real PostgreSQL (psycopg2, the ORM) behind gangway,
under concurrent clients: reads, CSRF-protected writes and the admin login.

The project is tests/apps/pgsite (app `notes`); its database is a fresh one
in the session's cluster (tests/pg.py), migrated with `manage.py migrate`, a
superuser made with `createsuperuser`, a few rows seeded. Each test then runs
CLIENTS client threads, each on its own keep-alive connection, for ROUNDS
rounds; every answer is checked, and afterwards every note a client was told
was written is looked up in PostgreSQL directly (psycopg2): all there, with
the id the redirect named, nothing else written.

It runs with `--workers 2`, and with `--workers 2 --threads 4` (issue 16);
the threads case is skipped for a gangway without --threads.
"""
import http.client
import json
import os
import re
import subprocess
import threading
import urllib.parse
import uuid

import pytest

from conftest import APPS, BIN, PYTHON

PGSITE = os.path.join(APPS, "pgsite")
PASSWORD = "gangway-Secret-Pw-42"
SEEDED = 12
CLIENTS = 16
ROUNDS = 8            # each: GET /, and every other round a write (form, POST, the new note)
ADMINS = (0, 1)       # these clients also log in to the admin
NO_TOKEN = 2          # this one also POSTs without the CSRF token (403, nothing written)


def manage(args, env):
    p = subprocess.run([PYTHON, "manage.py"] + args, cwd=PGSITE, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
    assert p.returncode == 0, "manage.py %s failed:\n%s" % (
        " ".join(args), p.stdout.decode("utf-8", "replace"))
    return p.stdout.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def pgsite(postgres):
    """The migrated database: its environment for gangway and manage.py."""
    db = postgres.create_database("pgsite_tests")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "GANGWAY_", "PG"))}
    env.update(postgres.env(db))
    manage(["migrate", "--noinput"], env)
    manage(["createsuperuser", "--noinput", "--username", "admin",
            "--email", "admin@example.com"], dict(env, DJANGO_SUPERUSER_PASSWORD=PASSWORD))
    manage(["seed_notes", str(SEEDED)], env)
    return env


def help_lists_threads():
    p = subprocess.run([BIN, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return re.search(rb"^\s*--threads\b", p.stdout, re.M) is not None


class Client:
    """One keep-alive connection with the cookies Django sets (csrftoken,
    sessionid). Every call returns (status, headers, body text)."""

    def __init__(self, server):
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        self.cookies = {}

    def call(self, method, path, form=None, cookies=True):
        headers = {}
        if cookies and self.cookies:
            headers["Cookie"] = "; ".join("%s=%s" % kv for kv in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read().decode("utf-8", "replace")
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        if (r.getheader("Connection") or "").lower() == "close":
            self.conn.close()  # http.client reconnects on the next request
        return r.status, r, data

    def close(self):
        self.conn.close()


def form_token(html):
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, "no csrfmiddlewaretoken in the form:\n" + html[:500]
    return m.group(1)


def check_index(c):
    status, _, html = c.call("GET", "/")
    assert status == 200, html[:300]
    m = re.search(r'<p id="total">(\d+) notes</p>', html)
    assert m and int(m.group(1)) >= SEEDED, html[:500]
    assert '<ul id="notes" data-shown="10">' in html, html[:500]
    assert len(re.findall(r'<li><a href="/notes/\d+/">[^<]+</a></li>', html)) == 10, html[:800]


def write_note(c, title):
    """The form, the POST, the new note's page; returns its id."""
    status, _, html = c.call("GET", "/notes/new/")
    assert status == 200, html[:300]
    assert c.cookies.get("csrftoken"), "no csrftoken cookie"
    status, r, html = c.call("POST", "/notes/new/", {
        "csrfmiddlewaretoken": form_token(html), "title": title,
        "body": "Written by %s.\nSecond line." % title})
    assert status == 302, "POST /notes/new/ -> %d:\n%s" % (status, html[:500])
    m = re.match(r"^/notes/(\d+)/$", r.getheader("Location") or "")
    assert m, "redirect to %r" % r.getheader("Location")
    status, _, html = c.call("GET", m.group(0))
    assert status == 200 and '<h1 id="title">%s</h1>' % title in html, html[:500]
    return int(m.group(1))


def admin_login(c, title):
    """Log in to the admin and find the client's own note there."""
    status, _, html = c.call("GET", "/admin/login/?next=/admin/")
    assert status == 200 and "Django administration" in html, html[:300]
    status, r, html = c.call("POST", "/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": form_token(html), "username": "admin",
        "password": PASSWORD, "next": "/admin/"})
    assert status == 302 and r.getheader("Location") == "/admin/", (status, html[:500])
    assert c.cookies.get("sessionid"), "no session cookie after the login"
    status, _, html = c.call("GET", "/admin/")
    assert status == 200 and "Site administration" in html, html[:500]
    status, _, html = c.call("GET", "/admin/notes/note/?q=" + urllib.parse.quote(title))
    assert status == 200 and ">%s</a>" % title in html, html[:1000]


def client_run(server, i, tag, written, errors):
    c = Client(server)
    try:
        for j in range(ROUNDS):
            check_index(c)
            if j % 2 == 0:
                title = "%s-c%02d-r%02d" % (tag, i, j)
                written[title] = write_note(c, title)
                if j == 0 and i in ADMINS:
                    admin_login(c, title)
                if j == 0 and i == NO_TOKEN:
                    status, _, _ = c.call("POST", "/notes/new/",
                                          {"title": tag + "-forged", "body": "x"})
                    assert status == 403, "POST without a CSRF token -> %d" % status
    except Exception as ex:  # noqa: BLE001 -- reported by the test thread
        errors.append("client %d: %s: %s" % (i, type(ex).__name__, ex))
    finally:
        c.close()


@pytest.mark.parametrize("threads", [None, 4], ids=["workers2", "workers2-threads4"])
def test_concurrent_reads_writes_and_admin(gangway, pgsite, postgres, threads):
    args = ["--workers", "2"]
    if threads:
        if not help_lists_threads():
            pytest.skip("threads not built yet (issue 16): gangway --help has no --threads")
        args += ["--threads", str(threads)]
    server = gangway("pgsite.wsgi:application", "--chdir", PGSITE, *args, env=pgsite)
    c = Client(server)
    status, _, body = c.call("GET", "/wsgi/")
    c.close()
    assert status == 200, body[:300]
    if threads and not json.loads(body)["multithread"]:
        # --threads is accepted (uWSGI ini compatibility) but ignored so far
        pytest.skip("threads not built yet (issue 16): with --threads %d gangway still "
                    "says wsgi.multithread False" % threads)

    tag = "t" + uuid.uuid4().hex[:10]
    written, errors = {}, []
    clients = [threading.Thread(target=client_run, args=(server, i, tag, written, errors))
               for i in range(CLIENTS)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(240)
    assert not any(t.is_alive() for t in clients), "clients still running after 240 s"
    assert not errors, "\n".join(errors) + "\n--- gangway log:\n" + server.read_log()[-3000:]
    assert len(written) == CLIENTS * ((ROUNDS + 1) // 2)

    # Everything the site said it wrote is in PostgreSQL, under the id its
    # redirect named; nothing else with this run's tag (the forged POST).
    db = postgres.connect(pgsite["PGDATABASE"])
    try:
        with db.cursor() as cur:
            cur.execute("SELECT title, id, body FROM notes_note WHERE title LIKE %s",
                        (tag + "-%",))
            rows = cur.fetchall()
    finally:
        db.close()
    assert {t: i for t, i, _ in rows} == written
    assert all(b == "Written by %s.\nSecond line." % t for t, _, b in rows)
    assert server.stop() == 0
