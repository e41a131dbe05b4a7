#!/usr/bin/python3
"""Where gangway's worker spends its time on one scenario: perf and strace.

    bench/profile.py [--app hello|flask] [--seconds 3] [--out FILE]

Starts ./gangway pinned to the server CPU (one worker, as in bench/run.py),
warms it with wrk, then drives it with wrk twice more: once under
`strace -c` (system calls per request) and once under `perf record -g` on
the worker (the share of the kernel, libpython, libc and gangway itself,
and the hottest functions). Prints Markdown (or writes it to --out).
`make bench-profile` writes bench/results/profile-hello.md and profile-flask.md.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
from benchlib import Skip  # noqa: E402


def wrk(port, seconds):
    argv = ["taskset", "-c", B.CLIENT_CPU, "wrk", "-t1", "-c64", "-d%ds" % seconds]
    out = subprocess.run(argv + ["http://127.0.0.1:%d/" % port], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=seconds + 30).stdout.decode()
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise Skip("wrk: " + out.strip()[-300:])
    return int(m.group(1))


def tracer_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def under(tool_argv, port, seconds, traced=None):
    """Runs wrk while tool_argv (strace/perf attached to the worker) records;
    with traced, first waits (10 s at most) until that pid is being traced,
    so that every request of the run is counted."""
    tool = subprocess.Popen(tool_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while traced and not tracer_of(traced):
            if time.monotonic() > deadline or tool.poll() is not None:
                raise Skip("%s did not attach" % tool_argv[0])
            time.sleep(0.01)
        n = wrk(port, seconds)
    finally:
        tool.send_signal(signal.SIGINT)
        try:
            tool.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.wait()
    return n


def strace_table(path, n):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and p[0][0].isdigit() and p[-1] not in ("total",):
                calls, errors = int(p[3]), int(p[4]) if len(p) == 6 else 0
                rows.append((p[-1], calls / n, errors / n))
    return rows


def perf_rows(data):
    """[(percent, dso, symbol)] for every sampled function."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                          "-q", "-g", "none", "--percent-limit", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(4).strip()))
    return rows


def own_functions():
    """Names of the functions gangway's own objects define (src/ and llhttp):
    libpython is linked into the same executable, so the object alone does
    not tell them apart."""
    objs = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(B.ROOT, "build"))
            for f in names if f.endswith(".o") and "/unit" not in d]
    out = subprocess.run(["nm", "--defined-only"] + objs, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    return {p[2] for p in (l.split() for l in out.splitlines()) if len(p) == 3 and p[1] in "tT"}


def classify(rows, own):
    """Shares by part: the kernel, gangway's code, the Python interpreter, libc, other."""
    parts = {}
    for pct, dso, sym in rows:
        if dso.startswith("[kernel"):
            part = "kernel (system calls, TCP, scheduling)"
        elif sym.split(".")[0] in own:
            part = "gangway (src/, llhttp)"
        elif dso == os.path.basename(B.GANGWAY) or dso.startswith("libpython"):
            part = "Python interpreter and the app"
        elif dso.startswith("libc"):
            part = "libc"
        else:
            part = "other (%s)" % dso
        parts[part] = parts.get(part, 0) + pct
    return sorted(parts.items(), key=lambda kv: -kv[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default="hello", choices=["hello", "flask"])  # GET / answering HELLO
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 60:
        ap.error("--seconds out of range")
    for tool in ("wrk", "perf", "strace"):
        if not subprocess.run(["which", tool], stdout=subprocess.DEVNULL).returncode == 0:
            sys.exit("%s not found (scripts/install-deps --bench)" % tool)
    B.pin_self()
    port = B.free_port()
    srv = B.Server(B.gangway_launch(args.app, port), "profile-%s.log" % args.app)
    work = os.path.join(B.WORK, "profile")
    os.makedirs(work, exist_ok=True)
    L = []
    try:
        srv.wait_ready(lambda: B.check_get(port, "/", B.HELLO))
        tree = srv.tree()
        workers = [p for p in tree if p != srv.pid]
        if len(workers) != 1:
            raise Skip("expected one worker, found %s" % workers)
        w = workers[0]
        wrk(port, 1)
        st_out = os.path.join(work, "strace-%s.txt" % args.app)
        n_st = under(["strace", "-c", "-o", st_out, "-p", str(w)], port, args.seconds, traced=w)
        data = os.path.join(work, "perf-%s.data" % args.app)
        n_pf = under(["perf", "record", "-q", "-g", "-o", data, "-p", str(w)], port,
                     args.seconds)
        L.append("# Profile of gangway's worker: %s app, wrk -c64 keep-alive (%s, %s)"
                 % (args.app, B.today(), B.git_commit()))
        L.append("")
        L.append("`bench/profile.py --app %s --seconds %d`; server on CPU %s, wrk on CPU %s. "
                 "Under strace the server is much slower; the counts per request still hold."
                 % (args.app, args.seconds, B.SERVER_CPU, B.CLIENT_CPU))
        L.append("")
        L.append("## System calls per request (strace -c, %d requests)" % n_st)
        L.append("")
        L.append("| call | per request | errors per request |")
        L.append("|---|---:|---:|")
        for name, per, err in strace_table(st_out, n_st):
            L.append("| %s | %.3f | %.3f |" % (name, per, err))
        L.append("")
        L.append("## Where the worker's CPU goes (perf record -g, %d requests)" % n_pf)
        L.append("")
        rows = perf_rows(data)
        L.append("| share | part |")
        L.append("|---:|---|")
        for part, pct in classify(rows, own_functions()):
            L.append("| %.1f%% | %s |" % (pct, part))
        L.append("")
        L.append("| share | function | object |")
        L.append("|---:|---|---|")
        for pct, dso, sym in rows[:25]:
            L.append("| %.1f%% | `%s` | %s |" % (pct, sym, dso))
        L.append("")
    except Skip as ex:
        sys.exit("profile: %s (log: %s)" % (ex, srv.tail()))
    finally:
        srv.stop()
    text = "\n".join(L)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print("wrote " + args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
