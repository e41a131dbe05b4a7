"""An app whose import fails on demand (tests/test_process.py).

The file named by $PROC_FLAKY, when it exists, says how the import of this
module fails in the worker that runs it:

    raise   RuntimeError (the worker cannot load the app: exit 3)
    segv    a segmentation fault in C (a broken native extension)
    exit0   os._exit(0) (a worker that ends quietly before it serves)
    later   loads, but a thread it starts segfaults 0.3 s later (once serving)

An import that takes one of the passes of $IMPORT_PASSES (import_passes.py)
loads normally whatever the file says: a reload's --check-config then passes
and its new workers fail.

Without the file (or empty) the app loads and answers like proc_app:
"pid=<pid>", and /sigs returns the signal lines of a child process it starts.
"""
import os

import import_passes

_flag = os.environ.get("PROC_FLAKY")
_how = ""
if _flag and not import_passes.take():
    try:
        with open(_flag) as f:
            _how = f.read().strip()
    except FileNotFoundError:
        pass

if _how == "raise":
    raise RuntimeError("proc_flaky broken on purpose")
if _how in ("segv", "later"):
    import ctypes
    import resource
    import threading
    import time
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files in tests/apps
    if _how == "segv":
        ctypes.string_at(0)
    threading.Thread(target=lambda: (time.sleep(0.3), ctypes.string_at(0)), daemon=True).start()
if _how == "exit0":
    os._exit(0)

from proc_app import application  # noqa: E402,F401
