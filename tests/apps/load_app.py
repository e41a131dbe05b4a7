"""Large bodies and many clients (tests/test_load.py)."""
import hashlib
from urllib.parse import parse_qs

BLOCK = 65536


def pattern_block(i, base=bytes(range(256)) * (BLOCK // 256)):
    """Block i of the download pattern: its index, then a fixed filler."""
    return i.to_bytes(8, "big") + base[8:]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    text = [("Content-Type", "text/plain")]
    if path == "/sha256":
        h, n, inp = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            b = inp.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        body = b"%d %s" % (n, h.hexdigest().encode())
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/download":
        size = int(q["size"])
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("chunked") != "1":
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)

        if q.get("whole") == "1":  # the whole body as one bytes object
            return [b"".join(pattern_block(i) for i in range(size // BLOCK))]

        def gen():
            sent, i = 0, 0
            while sent < size:
                b = pattern_block(i)[:size - sent]
                sent += len(b)
                i += 1
                yield b
        return gen()
    if path == "/id":
        body = ("id=%s" % q.get("n", "")).encode()
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", text)
    return [b"not found"]
