"""A real Django project (startproject + migrate + superuser) behind gangway.

The project is created once per module in a temporary directory; each test
starts gangway on it with --chdir and drives the admin login with a cookie jar.
"""
import http.cookiejar
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import PYTHON

PASSWORD = "gangway-Secret-Pw-42"


def run(args, cwd, env):
    p = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    assert p.returncode == 0, "%s failed:\n%s" % (args, p.stdout.decode(errors="replace"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("django")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    run([PYTHON, "-m", "django", "startproject", "mysite"], str(base), env)
    proj = base / "mysite"
    db = base / "db.sqlite3"
    with open(proj / "mysite" / "settings.py", "a") as f:
        f.write("\n# added by tests/test_django.py\n"
                "DEBUG = False\n"
                "ALLOWED_HOSTS = ['127.0.0.1', 'localhost']\n"
                "DATABASES['default']['NAME'] = %r\n" % str(db))
    run([PYTHON, "manage.py", "migrate", "--noinput"], str(proj), env)
    env_su = dict(env, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    run([PYTHON, "manage.py", "createsuperuser", "--noinput", "--username", "admin",
         "--email", "admin@example.com"], str(proj), env_su)
    assert db.exists()
    return proj


@pytest.fixture
def site(gangway, project, monkeypatch):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)  # mysite/wsgi.py sets it
    return gangway("mysite.wsgi:application", "--chdir", str(project))


class Browser:
    """urllib with a cookie jar and no proxies (all traffic stays on 127.0.0.1)."""

    def __init__(self, server):
        self.base = server.url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            r = self.opener.open(self.base + path, data=data, timeout=15)
            return r.status, r.geturl(), r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            return e.code, e.geturl(), e.read().decode("utf-8", "replace")

    def cookie(self, name):
        for c in self.jar:
            if c.name == name:
                return c.value
        return None


def login_form(browser):
    status, _, html = browser.open("/admin/login/?next=/admin/")
    assert status == 200
    assert "Django administration" in html
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, "no csrfmiddlewaretoken in the login page"
    assert browser.cookie("csrftoken"), "no csrftoken cookie set"
    return m.group(1)


def test_admin_login_reaches_site_administration(site):
    b = Browser(site)
    token = login_form(b)
    status, url, html = b.open("/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": token, "username": "admin", "password": PASSWORD,
        "next": "/admin/"})
    assert status == 200, html[:500]
    assert url == site.url + "/admin/"  # the 302 after login was followed
    assert "Site administration" in html
    assert b.cookie("sessionid")
    # The session keeps working on later requests.
    status, _, html = b.open("/admin/auth/user/")
    assert status == 200 and "admin@example.com" in html


def test_admin_login_wrong_password(site):
    b = Browser(site)
    token = login_form(b)
    status, url, html = b.open("/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": token, "username": "admin", "password": "wrong",
        "next": "/admin/"})
    assert status == 200
    assert "Please enter the correct username and password" in html
    assert b.cookie("sessionid") is None


def test_post_without_csrf_token_is_403(site):
    b = Browser(site)
    login_form(b)
    status, _, _ = b.open("/admin/login/", {"username": "admin", "password": PASSWORD})
    assert status == 403


def test_anonymous_admin_redirects_and_unknown_url_404(site):
    b = Browser(site)
    status, url, _ = b.open("/admin/")
    assert status == 200 and url.startswith(site.url + "/admin/login/")
    status, _, _ = b.open("/no-such-page/")
    assert status == 404
