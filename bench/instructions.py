#!/usr/bin/python3
"""Instructions per request on the hello-world path, counted by callgrind.

For each server: start it under
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=DIR/callgrind.out.%p
send N1 requests one after another on one keep-alive connection, stop it with
SIGTERM (callgrind writes one file per process), sum the Ir totals of all the
files; again with N2 requests; print (I2 - I1) / (N2 - N1). Start-up, the one
readiness request and shutdown cost the same in both runs and cancel out.

Rows: gangway (when ./gangway exists), and for reference nginx `return 200`
and uWSGI --http11-socket. Appends a dated row per server, with the git
commit, to bench/results/instructions.md (make bench-instructions).

    bench/instructions.py                  # N1=2000, N2=12000
    bench/instructions.py --n1 500 --n2 2500 --no-record   # a quick look
"""
import argparse
import glob
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
from benchlib import Skip  # noqa: E402

SERVERS = ["gangway", "nginx", "uwsgi"]
LABELS = {"gangway": "gangway", "nginx": "nginx return 200",
          "uwsgi": "uWSGI --http11-socket"}
TABLE = os.path.join(B.RESULTS, "instructions.md")
HEADER = """# Instructions per request: hello world on one keep-alive connection

Written by `bench/instructions.py` (`make bench-instructions`). Each row runs the
server under `valgrind --tool=callgrind --trace-children=yes` twice, sending N1
and then N2 requests one after another on one keep-alive connection, stops it
with SIGTERM, sums the `Ir` totals of every callgrind output file (all
processes) and reports (I(N2) - I(N1)) / (N2 - N1). Instruction counts do not
depend on machine load, so unlike req/s these rows compare across days and
machines (same compiler and libraries). nginx and uWSGI are for reference.

| date | commit | server | N1 | N2 | Ir(N1) | Ir(N2) | Ir / request | notes |
|---|---|---|---:|---:|---:|---:|---:|---|
"""


def launch(server, port, threads=1):
    if server == "gangway":
        extra = ("--threads", str(threads)) if threads > 1 else ()
        return B.gangway_launch("hello", port, extra=extra)
    if server == "nginx":
        # valgrind lowers the hard RLIMIT_NOFILE: no worker_rlimit_nofile here;
        # keepalive_requests raised so the one connection is never closed
        return B.nginx_launch(port, tag="nginx-cg", rlimit=False, keepalive_requests=1000000)
    if server == "uwsgi":
        return B.uwsgi_launch("hello", port, http11=True)
    raise ValueError(server)


def callgrind_total(path):
    """The Ir total of one callgrind output file ("totals:" or "summary:")."""
    total = summary = None
    with open(path, "rb") as f:
        for raw in f:
            if raw.startswith(b"totals:"):
                total = int(raw.split()[1])
            elif raw.startswith(b"summary:"):
                summary = int(raw.split()[1])
    v = total if total is not None else summary
    if v is None:
        raise Skip("no totals/summary line in " + path)
    return v


def measure(server, n, args):
    """Ir summed over all the server's processes for n requests (+ fixed costs)."""
    out_dir = os.path.join(B.WORK, "callgrind", "%s-%d" % (server, n))
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    os.chmod(out_dir, 0o777)   # nginx's worker runs as nobody and writes its own file
    port = B.free_port()
    wrap = ["valgrind", "--tool=callgrind", "--trace-children=yes",
            "--callgrind-out-file=%s/callgrind.out.%%p" % out_dir]
    la = launch(server, port, args.threads)
    if server == "gangway" and not os.access(B.GANGWAY, os.X_OK):
        raise Skip("./gangway not built (make gangway)")
    # fixed hash seed: Python servers then run the same instructions every time
    srv = B.Server(la, "callgrind-%s-%d.log" % (server, n), wrap=wrap,
                   env={"PYTHONHASHSEED": "0"})
    reconnects = 0
    try:
        # exactly one readiness request is served: refused connects cost nothing
        srv.wait_ready(lambda: B.check_get(port, "/", B.HELLO, timeout=args.timeout),
                       timeout=args.timeout)
        t0 = time.monotonic()
        c = B.KeepAliveClient(port, timeout=args.timeout)
        try:
            for i in range(n):
                st, body = c.get("/")
                if st != 200 or body != B.HELLO:
                    raise Skip("request %d: status %d, %d bytes" % (i, st, len(body)))
                if time.monotonic() - t0 > args.timeout * 10:
                    raise Skip("too slow: %d requests in %.0f s" % (i, time.monotonic() - t0))
            reconnects = c.reconnects
        finally:
            c.close()
        elapsed = time.monotonic() - t0
        srv.tree()
        seen = len(srv.known)
    finally:
        rc = srv.stop(timeout=args.timeout, grace=args.timeout)
    files = sorted(glob.glob(os.path.join(out_dir, "callgrind.out.*")))
    if not files:
        raise Skip("callgrind wrote no output (exit status %s): %s" % (rc, srv.tail()))
    total = sum(callgrind_total(f) for f in files)
    notes = []
    if len(files) < seen:
        notes.append("%d output files for %d processes" % (len(files), seen))
    if reconnects:
        notes.append("server closed the connection %d times" % reconnects)
    return total, len(files), elapsed, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=12000)
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated subset of: " + ",".join(SERVERS))
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds for start-up, for stopping, and x10 for the requests")
    ap.add_argument("--threads", type=int, default=1,
                    help="gangway --threads N (the hand-off's cost; its row is labelled so)")
    ap.add_argument("--no-record", action="store_true", help="do not append to " + os.path.relpath(TABLE, B.ROOT))
    args = ap.parse_args()
    if not 1 <= args.n1 < args.n2 <= 200000:
        ap.error("need 1 <= n1 < n2 <= 200000")
    servers = args.servers.split(",")
    bad = [s for s in servers if s not in SERVERS]
    if bad:
        ap.error("unknown server(s): " + ",".join(bad))
    if not shutil.which("valgrind"):
        print("valgrind not found: scripts/install-deps --bench", file=sys.stderr)
        return 1
    B.pin_self()
    B.raise_nofile()
    os.makedirs(B.WORK, exist_ok=True)
    B.clean_work(["nginx-cg-[0-9]*"])
    commit = B.git_commit()
    rows = []
    for server in servers:
        lab = LABELS[server]
        if server == "gangway" and args.threads > 1:
            lab += " --threads %d" % args.threads
        try:
            i1, f1, t1, n1notes = measure(server, args.n1, args)
            print("%-24s N=%-6d Ir=%d (%d files, %.1f s)" % (lab, args.n1, i1, f1, t1), flush=True)
            i2, f2, t2, n2notes = measure(server, args.n2, args)
            print("%-24s N=%-6d Ir=%d (%d files, %.1f s)" % (lab, args.n2, i2, f2, t2), flush=True)
            per = (i2 - i1) / (args.n2 - args.n1)
            notes = sorted(set(n1notes + n2notes))
            if f1 != f2:
                notes.append("%d vs %d output files" % (f1, f2))
            rows.append((lab, i1, i2, per, notes))
            print("%-24s %.0f instructions/request %s" % (lab, per, "; ".join(notes)), flush=True)
        except Skip as ex:
            rows.append((lab, None, None, None, ["skipped: %s" % ex]))
            print("%-24s skipped: %s" % (lab, ex), flush=True)
    if not args.no_record:
        os.makedirs(B.RESULTS, exist_ok=True)
        new = not os.path.exists(TABLE)
        with open(TABLE, "a") as f:
            if new:
                f.write(HEADER)
            for lab, i1, i2, per, notes in rows:
                f.write("| %s | %s | %s | %d | %d | %s | %s | %s | %s |\n" % (
                    B.today(), commit, lab, args.n1, args.n2,
                    "–" if i1 is None else "{:,}".format(i1),
                    "–" if i2 is None else "{:,}".format(i2),
                    "–" if per is None else "{:,.0f}".format(per),
                    "; ".join(notes)))
        print("appended %d rows to %s" % (len(rows), os.path.relpath(TABLE, B.ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
