"""wsgi.file_wrapper with a real file and with a file-like object (tests/test_wsgi.py).

The file to serve comes from GANGWAY_FW_FILE (passed with --env).
"""
import io
import os
from urllib.parse import parse_qs

PATH = os.environ.get("GANGWAY_FW_FILE", "")


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    headers = [("Content-Type", "application/octet-stream")]
    if path == "/file":
        f = open(PATH, "rb")
        size = os.fstat(f.fileno()).st_size
        offset = int(q.get("offset", 0))
        f.seek(offset)
        if "cl" in q:
            cl = q["cl"] if q["cl"] != "auto" else str(size - offset)
            headers.append(("Content-Length", cl))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, int(q.get("blksize", 8192)))
    if path == "/file-short":
        f = open(PATH, "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", headers + [("Content-Length", str(size + 100))])
        return environ["wsgi.file_wrapper"](f)
    if path == "/pipe":
        # A real fd that sendfile() cannot read from: the server must fall back.
        r, w = os.pipe()
        os.write(w, b"pipe-data:" + b"p" * 30000)
        os.close(w)
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](os.fdopen(r, "rb"), 4096)
    if path == "/bytesio":
        with open(PATH, "rb") as f:
            data = f.read()
        if "cl" in q:
            headers.append(("Content-Length", str(len(data))))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 4096)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
