"""A real Flask app (tests/apps/flask_app.py) behind gangway, via http.client."""
import hashlib
import http.client
import json
import random

import pytest

from conftest import wait_for

FILE_DATA = random.Random(5).randbytes(256 * 1024 + 3)


@pytest.fixture
def flask_server(gangway, tmp_path):
    p = tmp_path / "download.bin"
    p.write_bytes(FILE_DATA)
    return gangway("flask_app:app", "--env", "GW_TEST_FLASK_FILE=%s" % p)


def call(server, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_routes(flask_server):
    assert call(flask_server, "GET", "/")[::2] == (200, b"flask index")
    assert call(flask_server, "GET", "/user/ada?lang=en")[::2] == (200, b"hello ada (en)")


def test_json_in_and_out(flask_server):
    payload = {"numbers": [1, 2, 3], "text": "caf\u00e9 \u2603", "nested": {"a": None}}
    status, headers, body = call(flask_server, "POST", "/json", json.dumps(payload),
                                 {"Content-Type": "application/json"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"received": payload, "doubled": [2, 4, 6], "method": "POST"}


def test_form_post(flask_server):
    body = "name=J%C3%BCrgen+M&tag=a&tag=b&note=x%26y%3Dz"
    status, _, out = call(flask_server, "POST", "/form", body,
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert json.loads(out) == {"name": "J\u00fcrgen M", "tags": ["a", "b"], "note": "x&y=z"}


def test_multipart_file_upload(flask_server):
    data = random.Random(11).randbytes(3 * 1024 * 1024 + 5)  # above the default 1 MiB buffer
    boundary = "gangwayBoundary7MA4YWxkTrZu0gW"
    body = b"".join([
        b"--%s\r\n" % boundary.encode(),
        b'Content-Disposition: form-data; name="field"\r\n\r\nfield-value\r\n',
        b"--%s\r\n" % boundary.encode(),
        b'Content-Disposition: form-data; name="file"; filename="blob.bin"\r\n',
        b"Content-Type: application/x-test\r\n\r\n", data, b"\r\n",
        b"--%s--\r\n" % boundary.encode(),
    ])
    status, _, out = call(flask_server, "POST", "/upload", body,
                          {"Content-Type": "multipart/form-data; boundary=" + boundary})
    assert status == 200, out[:300]
    assert json.loads(out) == {"filename": "blob.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "content_type": "application/x-test", "field": "field-value"}


def test_streaming_with_context(flask_server):
    status, headers, body = call(flask_server, "GET", "/stream?n=40&who=gw")
    assert status == 200
    assert body == b"".join(b"line %d of gw\n" % i for i in range(40))
    assert "content-length" not in headers
    assert headers.get("transfer-encoding") == "chunked"


def test_custom_404_handler(flask_server):
    status, _, body = call(flask_server, "GET", "/missing")
    assert (status, body) == (404, b"custom not found: /missing")
    status, _, body = call(flask_server, "GET", "/no/such/route")
    assert (status, body) == (404, b"custom not found: /no/such/route")


def test_custom_500_handler(flask_server):
    status, _, body = call(flask_server, "GET", "/boom")
    assert (status, body) == (500, b"custom 500 handler")
    # Flask logs the exception to wsgi.errors, which is the server's log.
    wait_for(lambda: "gangway-flask-boom" in flask_server.read_log(), 5,
             what="the exception in the log")
    assert call(flask_server, "GET", "/")[0] == 200


def test_send_file(flask_server):
    status, headers, body = call(flask_server, "GET", "/download")
    assert status == 200
    assert headers["content-length"] == str(len(FILE_DATA))
    assert headers["content-type"] == "application/octet-stream"
    assert "attachment" in headers["content-disposition"]
    assert body == FILE_DATA


def test_send_file_conditional_and_range(flask_server):
    status, headers, _ = call(flask_server, "GET", "/download")
    etag = headers["etag"]
    status, headers, body = call(flask_server, "GET", "/download", headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    status, headers, body = call(flask_server, "GET", "/download",
                                 headers={"Range": "bytes=1000-1999"})
    assert status == 206
    assert headers["content-length"] == "1000"
    assert headers["content-range"] == "bytes 1000-1999/%d" % len(FILE_DATA)
    assert body == FILE_DATA[1000:2000]


def test_keep_alive_across_flask_requests(flask_server):
    c = http.client.HTTPConnection(flask_server.host, flask_server.port, timeout=10)
    try:
        c.connect()
        first = c.sock
        for i in range(20):
            c.request("GET", "/user/u%d" % i)
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"hello u%d (none)" % i)
            c.request("GET", "/download")
            r = c.getresponse()
            assert r.read() == FILE_DATA
            assert c.sock is first  # the server kept the connection open
    finally:
        c.close()
