"""A small Flask app for tests/test_static.py: send_file next to --static-map.

/download sends GW_TEST_STATIC_FILE with flask.send_file. Like
static_django.py, calls and wsgi.file_wrapper uses are appended to
GW_TEST_MARK.
"""
import os

from flask import Flask, send_file

FILE = os.environ.get("GW_TEST_STATIC_FILE", "")
MARK = os.environ.get("GW_TEST_MARK", "")

flask_app = Flask(__name__)


def record(line):
    if MARK:
        with open(MARK, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@flask_app.route("/download")
def download():
    return send_file(FILE, mimetype="application/octet-stream")


def application(environ, start_response):
    record("app " + environ.get("PATH_INFO", ""))
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        def recording_wrapper(filelike, *args):
            record("file_wrapper " + os.path.basename(getattr(filelike, "name", "?")))
            return wrapper(filelike, *args)
        environ["wsgi.file_wrapper"] = recording_wrapper
    return flask_app(environ, start_response)
