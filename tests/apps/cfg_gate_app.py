"""An app whose import waits until the file named by $CFG_TEST_GATE exists
(at most 30 s), so a test can act while gangway is still starting
(tests/test_systemd.py), unless it takes one of the passes of
$IMPORT_PASSES (import_passes.py). Every answer is "pid=<pid>"."""
import os
import time

import import_passes

_gate = None if import_passes.take() else os.environ.get("CFG_TEST_GATE")
_deadline = time.monotonic() + 30
while _gate and not os.path.exists(_gate):
    if time.monotonic() > _deadline:
        raise RuntimeError("the gate %s never opened" % _gate)
    time.sleep(0.01)


def application(environ, start_response):
    body = b"pid=%d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
