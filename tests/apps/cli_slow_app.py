"""Creates GW_TEST_SLOW_MARKER when a request starts, then takes ~1 s (tests/test_cli.py)."""
import os
import time


def application(environ, start_response):
    with open(os.environ["GW_TEST_SLOW_MARKER"], "w") as f:
        f.write("started\n")
    time.sleep(1.0)  # the request the server must finish during a graceful stop
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"slow done"]
