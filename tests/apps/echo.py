"""Echo app for the HTTP tests: replies with a JSON description of the request.

If GW_TEST_MARK names a file, every call appends PATH_INFO and a newline to it,
so a test can prove that a rejected request never reached the app.
"""
import json
import os

KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "SCRIPT_NAME",
        "SERVER_PROTOCOL", "CONTENT_LENGTH", "CONTENT_TYPE")


def application(environ, start_response):
    mark = os.environ.get("GW_TEST_MARK")
    if mark:
        with open(mark, "a", encoding="latin-1") as f:
            f.write(environ.get("PATH_INFO", "") + "\n")
    length = environ.get("CONTENT_LENGTH") or "0"
    body = environ["wsgi.input"].read(int(length)) if int(length) > 0 else b""
    out = {k: environ[k] for k in KEYS if k in environ}
    out["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    out["body"] = body.decode("latin-1")
    data = json.dumps(out, sort_keys=True).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
