"""Defines only `app`: the default callable lookup must fall back to it (tests/test_cli.py)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"callable: app"]
