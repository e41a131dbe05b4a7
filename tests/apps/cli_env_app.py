"""Reports what the process looks like from inside the app (tests/test_cli.py)."""
import json
import os
import sys

AT_IMPORT = {k: os.environ.get(k) for k in ("GANGWAY_CLI_A", "GANGWAY_CLI_B")}


def application(environ, start_response):
    body = json.dumps({
        "at_import": AT_IMPORT,
        "now": {k: os.environ.get(k) for k in ("GANGWAY_CLI_A", "GANGWAY_CLI_B")},
        "cwd": os.getcwd(),
        "prefix": sys.prefix,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
