"""environ, wsgi.input and wsgi.errors probes (tests/test_wsgi.py)."""
import hashlib
import json
import os

_remembered = []


def _jsonable(v):
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return repr(type(v))


def describe(environ):
    out = {}
    for k, v in environ.items():
        out[k] = {"type": type(v).__name__, "value": _jsonable(v)}
    inp, err = environ.get("wsgi.input"), environ.get("wsgi.errors")
    out["_input_methods"] = [m for m in ("read", "readline", "readlines", "__iter__")
                             if callable(getattr(inp, m, None))]
    out["_errors_methods"] = [m for m in ("write", "writelines", "flush")
                              if callable(getattr(err, m, None))]
    out["_file_wrapper_callable"] = callable(environ.get("wsgi.file_wrapper"))
    return out


def _digest(b):
    return [len(b), hashlib.sha256(b).hexdigest()]


def run_ops(f, scenario):
    """Apply a named sequence of file operations to f; the test runs the same
    function over io.BytesIO(body) to get the expected answer."""
    out = []
    rec = lambda b: out.append(_digest(b))  # noqa: E731
    if scenario == "read":
        rec(f.read())
        rec(f.read())
    elif scenario == "read_minus1":
        rec(f.read(-1))
        rec(f.read(-1))
    elif scenario.startswith("read_n:"):
        n = int(scenario.split(":")[1])
        while True:
            b = f.read(n)
            rec(b)
            if not b:
                break
    elif scenario == "readline":
        while True:
            b = f.readline()
            rec(b)
            if not b:
                break
    elif scenario.startswith("readline_n:"):
        n = int(scenario.split(":")[1])
        while True:
            b = f.readline(n)
            rec(b)
            if not b:
                break
    elif scenario == "readlines":
        lines = f.readlines()
        out.append(len(lines))
        for b in lines:
            rec(b)
        rec(f.read())
    elif scenario == "iter":
        for b in f:
            rec(b)
        rec(f.read())
    elif scenario == "mixed":
        rec(f.read(3))
        rec(f.readline())
        rec(f.readline(2))
        rec(f.read(10))
        rec(f.readline())
        lines = f.readlines()
        out.append(len(lines))
        for b in lines:
            rec(b)
        rec(f.read())
        rec(f.readline())
        rec(f.read(5))
    else:
        raise ValueError(scenario)
    return out


def spooled_files(expected_size):
    """Unlinked regular files this process holds open whose size is the body's."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
            st = os.fstat(int(fd))
        except OSError:
            continue
        if target.endswith("(deleted)") and st.st_size == expected_size:
            found.append(target)
    return found


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    status, body = "200 OK", None
    if path.startswith("/env"):
        body = json.dumps(describe(environ)).encode()
    elif path == "/input":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        spooled = spooled_files(n) if n else []
        body = json.dumps({"ops": run_ops(environ["wsgi.input"], qs),
                           "spooled": spooled}).encode()
    elif path == "/read-all":
        body = b"[" + environ["wsgi.input"].read() + b"]"
    elif path == "/ignore-body":
        body = b"ignored"
    elif path == "/errors":
        err = environ["wsgi.errors"]
        err.write("gangway-errors-write-%s\n" % qs)
        err.writelines(["gangway-errors-writelines-%s-a\n" % qs,
                        "gangway-errors-writelines-%s-b\n" % qs])
        err.flush()
        body = b"logged"
    elif path == "/remember":
        _remembered.append(environ)
        body = b"remembered"
    elif path == "/recall":
        old = _remembered[-1]
        body = json.dumps({"PATH_INFO": old.get("PATH_INFO"),
                           "QUERY_STRING": old.get("QUERY_STRING"),
                           "same_object": old is environ}).encode()
    else:
        status, body = "404 Not Found", b"not found"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]
