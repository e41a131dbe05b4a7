"""A tiny WSGI app for tests/test_uwsgi_compat.py: what the server's
configuration made of this process (environment, working directory, pid),
and how many requests this process has served."""
import json
import os

served = 0


def application(environ, start_response):
    global served
    served += 1
    body = json.dumps({
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "served": served,
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("COMPAT_")},
        "path": environ.get("PATH_INFO"),
    }, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
