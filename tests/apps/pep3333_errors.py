"""start_response validation, exc_info and app exceptions (tests/test_wsgi.py)."""
import sys

TEXT = [("Content-Type", "text/plain")]
LEAK = b"gangway-leaked-body"

# Header (name, value) pairs that must never reach the wire.
BAD_HEADERS = {
    "name-space": ("X Bad", "v"),
    "name-colon": ("X-Bad:", "v"),
    "name-empty": ("", "v"),
    "name-nontoken": ("X-Bad(1)", "v"),
    "name-bytes": (b"X-Injected-Name", "v"),
    "name-crlf": ("X-Ok\r\nInjected", "v"),
    "value-cr": ("X-Evil", "a\rInjected: 1"),
    "value-lf": ("X-Evil", "a\nInjected: 1"),
    "value-crlf": ("X-Evil", "a\r\nInjected: 1"),
    "value-nul": ("X-Evil", "a\x00Injected: 1"),
    "value-bytes": ("X-Evil", b"Injected"),
    "value-nonlatin1": ("X-Evil", "Injected\u20ac"),
}

BAD_STATUS = {
    "status-bytes": b"200 OK",
    "status-int": 200,
    "status-crlf": "200 OK\r\nInjected: 1",
    "status-garbage": "Injected",
}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    name = path.rsplit("/", 1)[-1]
    if path == "/ok":
        start_response("200 OK", TEXT + [("Content-Length", "2")])
        return [b"ok"]

    if path.startswith("/bad-header/"):
        start_response("200 OK", TEXT + [BAD_HEADERS[name]])
        return [LEAK]
    if path.startswith("/bad-status/"):
        start_response(BAD_STATUS[name], TEXT)
        return [LEAK]
    if path == "/return-none":
        start_response("200 OK", TEXT)
        return None
    if path == "/yield-str":
        start_response("200 OK", TEXT)
        return ["gangway-str-not-bytes"]

    if path == "/exc-info/replace":
        start_response("200 OK", TEXT + [("X-First", "1")])
        try:
            raise ValueError("replace-me")
        except ValueError:
            start_response("500 App Handled", TEXT + [("X-Second", "1")], sys.exc_info())
        return [b"custom error body"]
    if path == "/exc-info/second-call-without":
        start_response("200 OK", TEXT)
        try:
            start_response("201 Created", TEXT)
        except Exception as e:  # the server must refuse this
            return [("raised " + type(e).__name__).encode()]
        return [b"did not raise"]
    if path == "/exc-info/after-headers-sent":
        start_response("200 OK", TEXT)

        def gen():
            yield b"first-chunk;"
            try:
                raise KeyError("late")
            except KeyError as exc:
                try:
                    start_response("500 Too Late", TEXT, sys.exc_info())
                except KeyError as again:
                    if again is exc:
                        environ["wsgi.errors"].write("gangway-exc-info-reraised-ok\n")
                        environ["wsgi.errors"].flush()
                    raise
                environ["wsgi.errors"].write("gangway-exc-info-did-not-reraise\n")
                environ["wsgi.errors"].flush()
            yield b"replacement-sent"
        return gen()

    if path == "/raise-before-start":
        raise RuntimeError("gangway-kaboom-before-start")
    if path == "/raise-after-start":
        start_response("200 OK", TEXT)
        raise RuntimeError("gangway-kaboom-after-start")
    if path == "/raise-midstream-chunked":
        start_response("200 OK", TEXT)

        def gen():
            yield b"partial-data-1;"
            raise RuntimeError("gangway-kaboom-midstream")
        return gen()
    if path == "/raise-midstream-length":
        start_response("200 OK", TEXT + [("Content-Length", "1000")])

        def gen():
            yield b"p" * 100
            raise RuntimeError("gangway-kaboom-midstream-length")
        return gen()

    if path == "/length-short":
        start_response("200 OK", TEXT + [("Content-Length", "100")])
        return [b"s" * 10]  # ends normally, 90 bytes short
    if path == "/length-long":
        start_response("200 OK", TEXT + [("Content-Length", "5")])
        return [b"01234", b"56789"]  # 5 bytes more than announced

    start_response("404 Not Found", TEXT)
    return [b"not found"]
