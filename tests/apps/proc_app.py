"""The process-model app (tests/test_process.py).

Every answer names the worker's pid, so a test can tell which process served it.

    /           "pid=<pid>"
    /mp         "multiprocess=<wsgi.multiprocess> pid=<pid>"
    /slow       creates the file named by ?marker=PATH, then takes ~1 s
    /grow       allocates ~50 MB more (kept for the worker's life; reload-on-rss)
    /spin       loops in pure Python (harakiri interrupts it); gives up after 30 s
    /stuck      sleeps 60 s inside C with the GIL held (harakiri cannot interrupt it)
    /sigs       the SigIgn and SigBlk lines of a child process the app starts, as
                exec left them (restore_signals=False: subprocess would otherwise
                reset SIGPIPE itself), then "pid=<pid>"
"""
import ctypes
import os
import subprocess
import time
from urllib.parse import parse_qs

_kept = []


def _answer(start_response, text, status="200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    pid = os.getpid()
    if path == "/mp":
        return _answer(start_response,
                       "multiprocess=%s pid=%d" % (environ["wsgi.multiprocess"], pid))
    if path == "/slow":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        with open(q["marker"][0], "w") as f:
            f.write("started\n")
        time.sleep(1.0)
        return _answer(start_response, "slow done pid=%d" % pid)
    if path == "/grow":
        _kept.append(b"\x01" * (50 << 20))  # written, so resident
        return _answer(start_response, "grown=%d pid=%d" % (len(_kept), pid))
    if path == "/spin":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pass
        return _answer(start_response, "spin not interrupted pid=%d" % pid)
    if path == "/stuck":
        # PyDLL keeps the GIL held across the call: the watchdog cannot get in.
        ctypes.PyDLL(None).sleep(60)
        return _answer(start_response, "stuck not killed pid=%d" % pid)
    if path == "/sigs":
        out = subprocess.run(["/bin/cat", "/proc/self/status"], stdout=subprocess.PIPE,
                             restore_signals=False, check=True).stdout.decode()
        lines = [l for l in out.splitlines() if l.startswith(("SigIgn:", "SigBlk:"))]
        return _answer(start_response, "\n".join(lines) + "\npid=%d" % pid)
    return _answer(start_response, "pid=%d" % pid)
