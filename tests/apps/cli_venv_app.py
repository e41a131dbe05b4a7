"""Imports a module that only exists inside the --virtualenv (tests/test_cli.py)."""
import sys

import gangway_venv_probe


def application(environ, start_response):
    body = ("%s|%s" % (gangway_venv_probe.VALUE, sys.prefix)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
