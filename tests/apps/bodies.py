"""Response-framing app for the HTTP tests; the path picks the response shape.

/cl        list body with Content-Length
/gen-cl    generator body with Content-Length
/list      list of several parts, no Content-Length
/gen       generator (including an empty b"" item), no Content-Length
/gen-empty generator yielding nothing, no Content-Length
/big       generator of 1 MiB in 64 KiB pieces, no Content-Length
/status/N  status N (204/304) with a body the server must not send;
           ?cl adds a Content-Length, ?list returns a list instead of a generator
"""
CL_BODY = b"fixed-length body"
LIST_PARTS = [b"list-", b"part-", b"three"]
GEN_PARTS = [b"gen-", b"", b"erated", b"-body"]
BIG_PIECE = bytes(range(256)) * 256  # 64 KiB
BIG_COUNT = 16
REASONS = {204: "No Content", 304: "Not Modified"}
LEAK = b"THIS-BODY-MUST-NOT-BE-SENT"


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    text = [("Content-Type", "text/plain")]
    if path == "/cl":
        start_response("200 OK", text + [("Content-Length", str(len(CL_BODY)))])
        return [CL_BODY]
    if path == "/gen-cl":
        start_response("200 OK", text + [("Content-Length", str(len(b"".join(GEN_PARTS))))])
        return iter(GEN_PARTS)
    if path == "/list":
        start_response("200 OK", text)
        return list(LIST_PARTS)
    if path == "/gen":
        start_response("200 OK", text)
        return (p for p in GEN_PARTS)
    if path == "/gen-empty":
        start_response("200 OK", text)
        return (p for p in ())
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (BIG_PIECE for _ in range(BIG_COUNT))
    if path.startswith("/status/"):
        code = int(path[len("/status/"):])
        headers = list(text)
        if "cl" in query.split("&"):
            headers.append(("Content-Length", str(len(LEAK))))
        start_response("%d %s" % (code, REASONS.get(code, "Whatever")), headers)
        if "list" in query.split("&"):
            return [LEAK]
        return (p for p in (LEAK[:10], LEAK[10:]))
    start_response("404 Not Found", text + [("Content-Length", "9")])
    return [b"not found"]
