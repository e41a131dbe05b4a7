"""compat_app with an at-fork hook that makes the moment right after fork()
long enough to aim at: each new worker writes $(COMPAT_RUN)/forked-<pid>
and then takes a second before it returns to the server's code."""
import os
import time

from compat_app import application  # noqa: F401 - the app served


def _after_fork_in_child():
    run = os.environ.get("COMPAT_RUN")
    if run:
        with open(os.path.join(run, "forked-%d" % os.getpid()), "w"):
            pass
    time.sleep(1.0)


os.register_at_fork(after_in_child=_after_fork_in_child)
