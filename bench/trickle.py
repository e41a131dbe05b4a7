#!/usr/bin/python3
"""Slow uploads: N clients on 127.0.0.1 that each send a POST's headers at
once and then its body a few bytes at a time, for the io-20ms-trickle
scenario of bench/run.py.

    bench/trickle.py --port P [--clients 500] [--interval 1.0] [--chunk 1]
                     [--length 1000000] [--max-seconds 300]

Each client connects (non-blocking), sends
`POST /upload HTTP/1.1` with `Content-Length: LENGTH`, then CHUNK bytes every
INTERVAL seconds (the clients spread over the interval, not all at once), so
its body never completes during a run. A connection the server closes (or
answers) is counted and opened again at the client's next turn, so the
pressure stays the same. Once every client has connected, or after
--connect-timeout seconds, it prints one line `READY {json}`; on SIGTERM or
SIGINT, end of standard input, or after --max-seconds, it closes every socket
and prints `DONE {json}`. One process, one epoll, every loop bounded.
"""
import argparse
import errno
import json
import os
import select
import signal
import socket
import sys
import time


class Slot:
    __slots__ = ("sock", "state", "due", "sent")

    def __init__(self):
        self.sock, self.state, self.due, self.sent = None, "idle", 0.0, 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/upload")
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between sends")
    ap.add_argument("--chunk", type=int, default=1, help="body bytes per send")
    ap.add_argument("--length", type=int, default=1000000, help="announced Content-Length")
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    args = ap.parse_args()
    if not 1 <= args.clients <= 20000 or not 0.01 <= args.interval <= 60 \
            or not 1 <= args.chunk <= 65536 or args.length < 1 or args.max_seconds > 3600:
        ap.error("argument out of range")

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n\r\n" % (args.path, args.length)).encode()
    chunk = b"x" * args.chunk
    ep = select.epoll()
    try:
        ep.register(sys.stdin.fileno(), select.EPOLLIN)   # a pipe: its end stops us too
    except OSError:
        pass   # /dev/null or a file: epoll cannot watch it
    slots = [Slot() for _ in range(args.clients)]
    byfd = {}
    st = dict(clients=args.clients, connects=0, connected=0, closed_by_server=0,
              answered=0, connect_failed=0, bytes=0, stalled_sends=0)

    def close(s, why):
        if s.sock is not None:
            fd = s.sock.fileno()
            byfd.pop(fd, None)
            try:
                ep.unregister(fd)
            except (OSError, ValueError):
                pass
            s.sock.close()
            s.sock = None
        if why:
            st[why] += 1
        s.state = "idle"

    def open_(s, now):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", args.port))
        st["connects"] += 1
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            st["connect_failed"] += 1
            s.due = now + args.interval
            return
        s.sock, s.state, s.sent = sock, "connecting", 0
        byfd[sock.fileno()] = s
        ep.register(sock.fileno(), select.EPOLLOUT)

    def send(s, data):
        try:
            n = s.sock.send(data)
        except (BlockingIOError, InterruptedError):
            st["stalled_sends"] += 1
            return True
        except OSError:
            close(s, "closed_by_server")
            return False
        st["bytes"] += n
        return True

    t0 = time.monotonic()
    for i, s in enumerate(slots):
        s.due = t0 + args.interval * i / args.clients   # spread the sends over the interval
        open_(s, t0)
    ready = False
    for _ in range(100000000):
        now = time.monotonic()
        if stop or now - t0 > args.max_seconds:
            break
        if not ready and (now - t0 > args.connect_timeout or
                          all(s.state == "open" for s in slots)):
            ready = True
            st["connected"] = sum(1 for s in slots if s.state == "open")
            print("READY " + json.dumps(st), flush=True)
        for fd, ev in ep.poll(0.02, 1024):
            if fd == sys.stdin.fileno():
                if not os.read(fd, 4096):
                    stop.append(1)
                    ep.unregister(fd)
                continue
            s = byfd.get(fd)
            if s is None:
                continue
            if s.state == "connecting":
                if s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    close(s, "connect_failed")
                    s.due = now + args.interval
                    continue
                s.state = "open"
                ep.modify(fd, select.EPOLLIN)
                send(s, head)
            elif ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    data = s.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                close(s, "answered" if data else "closed_by_server")
                s.due = now + args.interval
        for s in slots:
            if s.due > now:
                continue
            s.due += args.interval
            if s.due < now:
                s.due = now + args.interval
            if s.state == "idle":
                open_(s, now)
            elif s.state == "open" and s.sent + args.chunk <= args.length - 1:
                # never the last byte: the body must not complete
                if send(s, chunk):
                    s.sent += args.chunk
    if not ready:
        st["connected"] = sum(1 for s in slots if s.state == "open")
        print("READY " + json.dumps(st), flush=True)
    st["open_at_end"] = sum(1 for s in slots if s.state == "open")
    st["seconds"] = round(time.monotonic() - t0, 2)
    for s in slots:
        close(s, None)
    print("DONE " + json.dumps(st), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
