"""A minimal Django app (settings.configure, no project) for tests/test_static.py.

/file sends GW_TEST_STATIC_FILE with django.http.FileResponse. Every call
appends "app PATH_INFO" to GW_TEST_MARK, and every use of wsgi.file_wrapper
appends "file_wrapper NAME", so a test can prove both that Python ran (or did
not) and that Django handed the open file to the server's file_wrapper.
"""
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="gangway-tests-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

FILE = os.environ.get("GW_TEST_STATIC_FILE", "")
MARK = os.environ.get("GW_TEST_MARK", "")


def record(line):
    if MARK:
        with open(MARK, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def send(request):
    return FileResponse(open(FILE, "rb"), as_attachment=True, filename="report.bin")


def hello(request):
    return HttpResponse("django says hi", content_type="text/plain")


urlpatterns = [path("file", send), path("hello", hello)]

_django = get_wsgi_application()


def application(environ, start_response):
    record("app " + environ.get("PATH_INFO", ""))
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        def recording_wrapper(filelike, *args):
            record("file_wrapper " + os.path.basename(getattr(filelike, "name", "?")))
            return wrapper(filelike, *args)
        environ["wsgi.file_wrapper"] = recording_wrapper
    return _django(environ, start_response)
