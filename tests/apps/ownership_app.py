"""Answers whose objects the app changes after handing them over
(tests/test_wsgi_ownership.py): gangway must send what the app returned when
it returned it, from memory it owns or holds a reference to.

    /pid                    "pid=<pid>"
    /big                    the module-level list RESP: 200 distinct 64 KiB blocks
    /mutate?how=H           changes RESP (clear, items, assign, shrink), then
                            allocates blocks of other bytes that reuse freed memory
    /file                   a FileWrapper around the module-level file FILE (4 MiB of A)
    /swap-file              closes FILE and opens another file (4 MiB of B), which
                            takes the same descriptor number
    /case?seed=N            property case N (build_case): a list, tuple, generator
                            or list subclass of bytes and bytes subclasses
    /record?seed=N          "<len> <sha256>" of what case N handed over
    /mutate-cases           changes every container a case returned
    /fuzz?seed=N            fuzz case N (fuzz_case): start_response, write and the
                            answer with objects of the wrong types
    /fuzz-caught            the errors the fuzz cases caught, one kind a line
"""
import gc
import hashlib
import os
import random
import sys
import tempfile

BLOCK = 65536
NBLOCKS = 200


def big_block(i):
    unit = b"block-%05d|" % i
    return (unit * (BLOCK // len(unit) + 1))[:BLOCK]


RESP = [big_block(i) for i in range(NBLOCKS)]
GARBAGE = []


def _answer(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def mutate(how):
    global RESP
    if how == "clear":
        RESP.clear()
    elif how == "items":
        for i in range(len(RESP)):
            RESP[i] = b"Z" * BLOCK
    elif how == "assign":
        RESP = [b"Y" * BLOCK for _ in range(NBLOCKS)]
    elif how == "shrink":
        del RESP[10:]
    # Reuse what was freed: blocks of other bytes, of the same size.
    GARBAGE.clear()
    for i in range(2 * NBLOCKS):
        GARBAGE.append(bytes([0x40 + i % 26]) * BLOCK)
    gc.collect()


# ---- a shared file whose descriptor is reused ----

_DIR = tempfile.mkdtemp(prefix="gw-ownership-")
FILE_SIZE = 4 << 20


def _make(name, byte):
    path = os.path.join(_DIR, name)
    with open(path, "wb") as f:
        f.write(bytes([byte]) * FILE_SIZE)
    return path


PATH_A = _make("a", ord("A"))
PATH_B = _make("b", ord("B"))
FILE = None
OTHER = []


class KeepOpen:
    """A file-like over FILE that ignores close(): the app closes FILE itself."""

    def __init__(self, f):
        self.f = f

    def read(self, n=-1):
        return self.f.read(n)

    def fileno(self):
        return self.f.fileno()

    def tell(self):
        return self.f.tell()


def serve_file(environ, start_response):
    global FILE
    if FILE is None or FILE.closed:
        FILE = open(PATH_A, "rb")
    FILE.seek(0)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](KeepOpen(FILE))


def swap_file():
    if FILE is not None:
        FILE.close()
    OTHER.append(open(PATH_B, "rb"))  # the lowest free descriptor: FILE's


# ---- property cases ----

KEPT = []       # containers the cases returned, for /mutate-cases
ALIVE = []      # the cases' items: their SubBytes die in /mutate-cases, not on return
RECORDS = {}    # seed -> what the case handed over


class SubBytes(bytes):
    """A bytes subclass whose finalizer changes every kept container."""

    def __del__(self):
        for c in KEPT:
            try:
                if isinstance(c, list):
                    c.clear()
                    c.append(b"from __del__")
            except Exception:
                pass


class LyingList(list):
    """Says it is something else through every method but iteration."""

    def __init__(self, items, done):
        super().__init__(items)
        self.done = done

    def __len__(self):
        return 0

    def __getitem__(self, i):
        return b"LIE"

    def __iter__(self):
        seen = []
        for x in list.__iter__(self):
            seen.append(bytes(x))
            yield x
        self.done(seen)


class ShrinkingList(list):
    """Drops its items as they are iterated."""

    def __init__(self, items, done):
        super().__init__(items)
        self.done = done

    def __iter__(self):
        seen = []
        while list.__len__(self):
            x = self.pop(0)
            seen.append(bytes(x))
            yield x
        self.done(seen)


def keep(container):
    KEPT.append(container)
    del KEPT[:-8]


def case_payloads(rnd):
    out = []
    for _ in range(rnd.randint(0, 10)):
        size = rnd.choice([0, 1, 7, 100, 4096, 20000, 70000, 150000])
        flavor = rnd.choice(["bytes", "bytes", "bytes", "sub"])
        data = rnd.randbytes(size)
        out.append(SubBytes(data) if flavor == "sub" else data)
    return out


# Every answer starts with this (after what write() sent): large enough that
# the socket fills while it goes out, so the items after it are still queued
# when the next request changes them.
FILLER = bytes(range(256)) * 1024


def build_case(seed):
    """(container kind, written items, answer items, content-length?) for case
    seed, deterministic. write() only ever sends small items: it waits for
    the client, which reads only once the case's mutation is under way."""
    rnd = random.Random(seed)
    kind = rnd.choice(["list", "tuple", "gen", "lying", "shrinking", "iter", "write"])
    items = case_payloads(rnd)
    written = [x for x in items if len(x) <= 4096] if kind == "write" else []
    answer = [FILLER] + [x for x in items if not any(x is w for w in written)]
    # A Content-Length only where the app knows the length: a lying or
    # shrinking list yields what its list holds when it gets there.
    with_length = rnd.random() < 0.3 and kind not in ("lying", "shrinking")
    return kind, written, answer, with_length


def run_case(seed, start_response):
    kind, written, items, with_length = build_case(seed)
    ALIVE.append((written, items))
    headers = [("Content-Type", "application/octet-stream")]
    if with_length:
        headers.append(("Content-Length", str(sum(len(x) for x in written + items))))
    write = start_response("200 OK", headers)
    sent = []
    for x in written:
        sent.append(bytes(x))
        write(x)

    def record(parts):
        b = b"".join(sent) + b"".join(bytes(p) for p in parts)
        RECORDS[seed] = "%d %s" % (len(b), hashlib.sha256(b).hexdigest())

    # keep() may drop an older container, whose SubBytes finalizers change
    # every kept one: what is handed over is recorded after it.
    if kind in ("list", "tuple", "write"):
        answer = tuple(items) if kind == "tuple" else list(items)
        if kind != "tuple":
            keep(answer)
        record(answer)
        return answer
    if kind == "iter":
        record(items)
        return iter(list(items))
    if kind == "lying":
        answer = LyingList(items, record)
    elif kind == "shrinking":
        answer = ShrinkingList(items, record)
    else:
        def gen():
            seen = []
            for x in items:
                seen.append(bytes(x))
                if isinstance(x, SubBytes):
                    yield SubBytes(x)  # gangway holds the only reference
                else:
                    yield x
            record(seen)
        return gen()
    keep(answer)
    return answer


def mutate_cases():
    ALIVE.clear()  # SubBytes finalizers run here, changing the kept containers too
    for c in list(KEPT):
        list.clear(c)
        list.extend(c, [b"M" * 70000, b"N" * 5])
    GARBAGE.clear()
    for i in range(64):
        GARBAGE.append(bytes([0x61 + i % 26]) * 70000)
    gc.collect()


# ---- the fuzz app: wrong types everywhere ----

class Boom(Exception):
    pass


class RaisingStr(str):
    def __str__(self):
        raise Boom("__str__")

    def __repr__(self):
        raise Boom("__repr__")

    def __len__(self):
        raise Boom("__len__")

    def __eq__(self, other):
        raise Boom("__eq__")

    __hash__ = str.__hash__


class Evil:
    def __len__(self):
        raise Boom("__len__")

    def __iter__(self):
        raise Boom("__iter__")

    def __getitem__(self, i):
        raise Boom("__getitem__")

    def __bool__(self):
        raise Boom("__bool__")

    def __index__(self):
        raise Boom("__index__")

    def __repr__(self):
        raise Boom("__repr__")


class DelRaises:
    def __del__(self):
        raise Boom("__del__")


class BadList(list):
    def __len__(self):
        return -1

    def __iter__(self):
        return iter([b"from __iter__", 5, "str"])

    def __getitem__(self, i):
        raise Boom("__getitem__")


class BadTuple(tuple):
    def __len__(self):
        return 99

    def __getitem__(self, i):
        raise Boom("__getitem__")


class WeirdFile:
    def __init__(self, rnd):
        self.rnd = rnd

    def read(self, n=-1):
        return self.rnd.choice([b"data", b"", "str", 5, None, bytearray(b"x"), SubBytes(b"s")])

    def fileno(self):
        v = self.rnd.choice([2 ** 40 + 1, -5, "x", 1.5, 0, 1, 2])
        if v == 0:
            raise Boom("fileno")
        return v

    def tell(self):
        return self.rnd.choice([0, -1, "x", 2 ** 70])

    def close(self):
        if self.rnd.random() < 0.3:
            raise Boom("close")


def exc_infos():
    try:
        raise Boom("real")
    except Boom:
        real = sys.exc_info()
    return [None, (None, None, None), ("x", "y", None), (ValueError, None, None),
            (KeyError, ValueError(), None), (Boom, Boom(), "tb"), real, real[:2],
            list(real), (type, type, None), (object, object(), None), (int, 5, None),
            (BaseException, BaseException(), None), (Boom, None, real[2]),
            (Boom, Boom(), real[2].tb_frame), BadTuple(real), 5, "exc", Evil()]


def objects(rnd):
    return [None, 0, -1, 2 ** 70, 3.5, "", "200 OK", "200", "0", "999 X", "abc",
            "200 OK\r\nX: y", "200\tOK", "200 \x7f", b"200 OK", bytearray(b"x"),
            memoryview(b"x"), (), ("a",), ("a", "b", "c"), [], [("A", "b")], [("A",)],
            [("A", 1)], [(1, "b")], [("A", "b\x7f")], [("A", "b\x0b")], [("Bad Name", "x")],
            ("X", "y"), [["A", "b"]], BadList([("A", "b")]), BadTuple(("A", "b")),
            [BadTuple(("A", "b"))], [(RaisingStr("A"), RaisingStr("b"))],
            RaisingStr("200 OK"), [("Content-Length", "x")], [("Content-Length", "3")],
            [("Connection", "CLOSE")], [("A", "\u0100")], Evil(), DelRaises(),
            SubBytes(b"xy"), b"", b"body", [b"a", b"b"], "\u20ac"] + exc_infos()


CAUGHT = {}  # "Type: message" -> count, of what the fuzz cases caught


def fuzz_case(seed, environ, start_response):
    rnd = random.Random(seed)
    pool = objects(rnd)
    write = None
    headers = [h for h in pool if isinstance(h, list)] + [[("Content-Type", "text/plain")]] * 4
    for _ in range(rnd.randint(1, 6)):
        act = rnd.choice(["sr", "sr", "sr_ok", "sr_ok", "write", "write", "write_ok"])
        try:
            if act == "sr_ok":
                exc = [rnd.choice(exc_infos())] if rnd.random() < 0.5 else []
                write = start_response("200 OK", rnd.choice(headers), *exc)
            elif act == "sr":
                args = [rnd.choice(pool) for _ in range(rnd.choice([0, 1, 2, 2, 3, 3, 4]))]
                kw = {"exc_info": rnd.choice(exc_infos())} if rnd.random() < 0.2 else {}
                write = start_response(*args, **kw)
            elif write is not None:
                write(b"ok" if act == "write_ok" else rnd.choice(pool))
        except Exception as e:
            what = "%s: %s" % (type(e).__name__, str(e)[:40])
            CAUGHT[what] = CAUGHT.get(what, 0) + 1
            if rnd.random() < 0.2:
                raise
    return fuzz_answer(rnd, environ, pool)


def fuzz_answer(rnd, environ, pool):
    kind = rnd.choice(["obj", "list", "gen", "file", "closer"])
    if kind == "obj":
        return rnd.choice(pool)
    if kind == "list":
        return [rnd.choice(pool + [b"ok"] * 5) for _ in range(rnd.randint(0, 4))]
    if kind == "file":
        return environ["wsgi.file_wrapper"](WeirdFile(rnd), rnd.choice([1, 8192, 0, -1]))
    if kind == "closer":
        sr, w = environ["fuzz.sr"], environ["fuzz.write"]

        class Closer:
            def __iter__(self):
                return iter([b"closer"])

            def close(self):
                for f in (lambda: w(b"after"), lambda: sr("200 OK", [])):
                    try:
                        f()
                    except Exception:
                        pass
        return Closer()

    def gen():
        for _ in range(rnd.randint(0, 4)):
            if rnd.random() < 0.1:
                raise Boom("in the generator")
            yield rnd.choice(pool + [b"ok"] * 5)
    return gen()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ.get("QUERY_STRING", "")
    arg = dict(p.split("=", 1) for p in q.split("&") if "=" in p)
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return RESP
    if path == "/mutate":
        mutate(arg.get("how", "clear"))
        return _answer(start_response, b"mutated")
    if path == "/file":
        return serve_file(environ, start_response)
    if path == "/swap-file":
        swap_file()
        return _answer(start_response, b"swapped")
    if path == "/case":
        return run_case(int(arg["seed"]), start_response)
    if path == "/record":
        return _answer(start_response, RECORDS.pop(int(arg["seed"]), "none").encode())
    if path == "/mutate-cases":
        mutate_cases()
        return _answer(start_response, b"mutated")
    if path == "/fuzz-caught":
        return _answer(start_response, "\n".join(sorted(CAUGHT)).encode())
    if path == "/fuzz":
        holder = {}

        def sr(*a, **k):
            holder["w"] = start_response(*a, **k)
            return holder["w"]

        environ["fuzz.sr"] = start_response
        environ["fuzz.write"] = lambda d: holder.get("w", lambda d: None)(d)
        return fuzz_case(int(arg["seed"]), environ, sr)
    return _answer(start_response, b"pid=%d" % os.getpid())
