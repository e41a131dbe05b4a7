"""What the app sees of its client, for tests/test_proxy.py and tests/test_haproxy.py:
GET /health answers "ok"; anything else answers the environ keys a proxy
changes, as JSON; /slow waits a moment first (requests in flight)."""
import json
import os
import time

KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "SERVER_NAME",
        "SERVER_PORT", "gangway.peer_addr", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
        "HTTP_FORWARDED", "HTTP_X_FORWARDED_HOST")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/health":
        body = b"ok"
    else:
        if path == "/slow":
            time.sleep(0.2)
        seen = {k: environ[k] for k in KEYS if k in environ}
        seen["pid"] = os.getpid()
        seen["instance"] = os.environ.get("GW_TEST_INSTANCE", "")
        body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
