"""PEP 3333 app wrapped in wsgiref.validate.validator (tests/test_wsgi.py).

Any validator complaint raises inside the app, so the server answers 500
instead of the expected body; WSGIWarning is turned into an error as well.
"""
import hashlib
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)


def _read_all(inp):
    chunks = []
    while True:
        b = inp.read(65536)  # the validator insists on exactly one argument
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/get":
        body = ("%s %s?%s" % (environ["REQUEST_METHOD"], path, environ["QUERY_STRING"])).encode()
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/post":
        data = _read_all(environ["wsgi.input"])
        body = b"len=%d sha256=%s" % (len(data), hashlib.sha256(data).hexdigest().encode())
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        n = int(environ["QUERY_STRING"] or "10")
        start_response("200 OK", text)

        def gen():
            yield b""  # empty blocks must not end a chunked body early
            for i in range(n):
                yield b"chunk-%04d\n" % i
                if i % 7 == 0:
                    yield b""
        return gen()
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"via-write-1;")
        write(b"via-write-2;")
        return [b"via-iterable"]
    start_response("404 Not Found", text)
    return [b"not found"]


application = validator(_app)
