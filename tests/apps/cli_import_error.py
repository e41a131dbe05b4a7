"""Raises while being imported; gangway must exit 1 and show the traceback (tests/test_cli.py)."""


def _configure():
    raise RuntimeError("gangway-import-boom")


_configure()


def application(environ, start_response):  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
