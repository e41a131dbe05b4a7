"""The environ an --https socket gives the app, and the worker that answered
(tests/test_tls.py)."""
import json
import os

KEYS = ("wsgi.url_scheme", "HTTPS", "SERVER_PORT", "SSL_PROTOCOL", "SSL_CIPHER",
        "SSL_SESSION_RESUMED", "SSL_TLS_SNI", "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN",
        "SSL_CLIENT_I_DN", "SSL_CLIENT_M_SERIAL", "SSL_CLIENT_V_START", "SSL_CLIENT_V_END",
        "SSL_CLIENT_CERT", "HTTPS_DN", "HTTPS_CC", "HTTP_HTTPS")


def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        n = int(environ.get("QUERY_STRING") or 1 << 20)
        body = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if environ["PATH_INFO"] == "/echo":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    if environ["PATH_INFO"] == "/peer":  # who the client is (a PROXY header may say)
        out = {k: environ.get(k) for k in ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme",
                                           "HTTPS")}
        body = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    out = {k: environ[k] for k in KEYS if k in environ}
    out["pid"] = os.getpid()
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
