"""Passes that let one import skip a deliberate wait or failure: the file
named by $IMPORT_PASSES holds a count; an import that finds it above zero
takes one (under flock, so concurrent imports never share a pass) and goes
on normally. A reload's `--check-config` imports the app once before any
new worker does, so one pass lets the check through and stops the workers
(tests/test_process.py)."""
import fcntl
import os


def take():
    path = os.environ.get("IMPORT_PASSES")
    if not path:
        return False
    try:
        f = open(path, "r+")
    except FileNotFoundError:
        return False
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        n = int(f.read().strip() or 0)
        if n <= 0:
            return False
        f.seek(0)
        f.truncate()
        f.write(str(n - 1))
        return True
