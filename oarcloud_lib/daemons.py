"""Daemons started by oarcloud itself (no init system is assumed): pidfiles.

A daemon is 'ours' only through its pidfile; stopping never looks processes
up by name.
"""
import logging
import os
import signal
import time
from pathlib import Path

from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)


def spawn_and_wait(runner, argv, pidfile, what):
    """Run argv (a daemon that detaches and writes pidfile) and wait for a live
    pid in pidfile.  Raises NotReady."""
    runner.run(argv, timeout=60)
    if not wait_for(lambda: read_pid(pidfile), timeout=15):
        raise NotReady(detail="%s did not start (no live pid in %s)" % (what, pidfile))


def read_pid(pidfile, root="/"):
    """The pid in pidfile if that process is alive, else None."""
    path = Path(root) / str(pidfile).lstrip("/")
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid):
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def stop_pid(pid, timeout=10.0):
    """SIGTERM pid, then SIGKILL after timeout; True if it was running."""
    if pid is None or not alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    LOG.warning("pid %s ignored SIGTERM, killing it", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    return True


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll predicate until it returns a true value or timeout; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
