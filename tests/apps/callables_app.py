"""start_response and write() as the app's threads and kept references use
them, and an app that forks (tests/test_wsgi_callables.py).

    /pid                  "pid=<pid>"
    /threads?n=N&kib=K&mark=PATH
                          N threads each write() one block of K KiB, all of
                          one letter (thread i: chr(65 + i % 26)), at once;
                          each appends a line to PATH before its write(); the
                          answer ends with "END" and what the writes raised,
                          also written to PATH.done
    /threads-gen?n=N&blocks=B&kib=K&mark=PATH
                          a generator yielding B blocks of K KiB of "g" while
                          N threads each write() B blocks of K KiB of their
                          letter (a line to PATH before each); its first
                          block waits until every thread is in write() (then
                          a line "y" to PATH), its last step for the threads
                          to end, then it yields "END" and what they raised
    /keep                 keeps its start_response and write
    /use-kept             a generator whose first step calls the kept write
                          and start_response (exc_info), then yields what
                          they raised
    /ids                  id() of this request's start_response and write
    /fork?where=W         os.fork() in the app (W=app), in a step of its
                          iterator (iter) or in its close() (close); the
                          child returns too; its pid in the X-Child header
                          (app) or the answer (iter), or to PATH (close:
                          &mark=PATH)
    /pool                 multiprocessing.Pool(2).map in a with block
    /terminate            a multiprocessing.Process sleeping, terminate()d: its exit code
    /subprocess           subprocess.run(["echo", "sub"]) output
    /fork-exit            os.fork(); the child ends with os._exit(0); waited
    /wrapper-past-end     a wsgi.file_wrapper whose file position is past its end
"""
import multiprocessing
import os
import subprocess
import tempfile
import threading
import time
from urllib.parse import parse_qs

TEXT = [("Content-Type", "text/plain")]
KEPT = {}


def square(x):
    return x * x


def _args(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def threads(environ, start_response):
    a = _args(environ)
    n, size, mark = int(a["n"]), int(a["kib"]) * 1024, a.get("mark")
    write = start_response("200 OK", TEXT)
    errors = []
    lock = threading.Lock()

    def run(i):
        if mark:
            with lock, open(mark, "a") as f:
                f.write("%d\n" % i)
        try:
            write(bytes([65 + i % 26]) * size)
        except Exception as e:  # noqa: BLE001 (reported in the answer)
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if mark:
        with open(mark + ".done", "w") as f:
            f.write(repr(sorted(errors)))
    return [b"END" + repr(errors).encode()]


def threads_gen(environ, start_response):
    a = _args(environ)
    n, blocks, size = int(a["n"]), int(a["blocks"]), int(a["kib"]) * 1024
    mark = a.get("mark")
    write = start_response("200 OK", TEXT)
    errors = []
    lock = threading.Lock()

    def run(i):
        try:
            for _ in range(blocks):
                if mark:
                    with lock, open(mark, "a") as f:
                        f.write("%d\n" % i)
                write(bytes([65 + i % 26]) * size)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]

    def entered():
        with lock, open(mark) as f:
            return len(f.read().split())

    def gen():
        for t in ts:
            t.start()
        if mark:
            # The client reads nothing yet: with every thread's chunk queued
            # or waiting for room, this block finds the queue full.
            deadline = time.monotonic() + 30
            while entered() < n and time.monotonic() < deadline:
                time.sleep(0.005)
            with lock, open(mark, "a") as f:
                f.write("y\n")
        for _ in range(blocks):
            yield b"g" * size
        for t in ts:
            t.join()
        yield b"END" + repr(errors).encode()
    return gen()


def use_kept(environ, start_response):
    start_response("200 OK", TEXT)

    def gen():
        out = []
        for name, call in (("write", lambda: KEPT["write"](b"INJECTED")),
                           ("start_response",
                            lambda: KEPT["sr"]("500 Oops", [("X-Injected", "yes")],
                                               (ValueError, ValueError("late"), None)))):
            try:
                call()
                out.append("%s: accepted" % name)
            except Exception as e:  # noqa: BLE001
                out.append("%s: %s: %s" % (name, type(e).__name__, e))
        yield ";".join(out).encode()
    return gen()


class ForkInClose:
    def __init__(self, mark):
        self.mark = mark

    def __iter__(self):
        return iter([b"from the parent"])

    def close(self):
        child = os.fork()
        if child:
            with open(self.mark, "w") as f:
                f.write(str(child))


def fork(environ, start_response):
    where = _args(environ).get("where", "app")
    if where == "app":
        child = os.fork()
        start_response("200 OK", TEXT + [("X-Child", str(child))])
        return [b"from the child" if child == 0 else b"from the parent"]
    start_response("200 OK", TEXT)
    if where == "close":
        return ForkInClose(_args(environ)["mark"])

    def gen():
        child = os.fork()
        yield b"from the child" if child == 0 else b"from the parent %d" % child
    return gen()


def wrapper_past_end(environ, start_response):
    f = tempfile.TemporaryFile()
    f.write(b"0123456789")
    f.seek(100)
    start_response("200 OK", TEXT)
    return environ["wsgi.file_wrapper"](f)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/threads":
        return threads(environ, start_response)
    if path == "/threads-gen":
        return threads_gen(environ, start_response)
    if path == "/keep":
        KEPT["sr"] = start_response
        KEPT["write"] = start_response("200 OK", TEXT)
        return [b"kept"]
    if path == "/use-kept":
        return use_kept(environ, start_response)
    if path == "/ids":
        write = start_response("200 OK", TEXT)
        return [b"%d %d" % (id(start_response), id(write))]
    if path == "/fork":
        return fork(environ, start_response)
    if path == "/pool":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            r = pool.map(square, range(10))
        start_response("200 OK", TEXT)
        return [repr(r).encode()]
    if path == "/terminate":
        p = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        p.start()
        p.terminate()  # SIGTERM
        p.join(10)
        code = p.exitcode
        if code is None:
            p.kill()
            p.join()
        start_response("200 OK", TEXT)
        return [b"exit code %r" % code]
    if path == "/subprocess":
        out = subprocess.run(["echo", "sub"], capture_output=True, check=True).stdout
        start_response("200 OK", TEXT)
        return [out]
    if path == "/fork-exit":
        child = os.fork()
        if child == 0:
            os._exit(0)
        _, status = os.waitpid(child, 0)
        start_response("200 OK", TEXT)
        return [b"child status %d" % status]
    if path == "/wrapper-past-end":
        return wrapper_past_end(environ, start_response)
    if path == "/pid":
        start_response("200 OK", TEXT)
        return [b"pid=%d" % os.getpid()]
    start_response("404 Not Found", TEXT)
    return [b"?"]

