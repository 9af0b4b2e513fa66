"""The integration tier: everything runs against the real lab on this machine.

Nothing here skips: a missing component is a failure (CI counts skips as such).
"""
import json
import os
import secrets
import subprocess
import time

import pytest

from oarcloud_lib.lab import Lab

ADMIN = "/usr/local/bin/oarcloud-admin"
USER_CLI = "/usr/local/bin/oarcloud"


def run(argv, check=False, timeout=600, **kwargs):
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                         timeout=timeout, **kwargs)
    if check and res.returncode != 0:
        raise AssertionError("%s failed (%s):\n%s\n%s" % (argv, res.returncode, res.stdout,
                                                         res.stderr))
    return res


def admin(*args, check=False, timeout=600):
    return run([ADMIN, *args], check=check, timeout=timeout)


def as_user(user, argv, check=False, timeout=120):
    """Run argv as user, from the user's home directory (what oarsub expects)."""
    home = os.path.expanduser("~%s" % user)
    env = dict(os.environ, HOME=home, PWD=home, USER=user, LOGNAME=user)
    return run(["runuser", "-u", user, "--", *argv], check=check, timeout=timeout, cwd=home,
               env=env)


def node_exec(node, *argv, check=False):
    return admin("lab", "exec", node, "--", *argv, check=check)


def wait_job(job_id, states=("Terminated", "Error"), timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(run(["oarstat", "-fj", job_id, "-J"], check=True).stdout)[str(job_id)]
        if job["state"] in states:
            return job
        time.sleep(0.5)
    raise AssertionError("job %s not in %s after %ss (state %s)" % (job_id, states, timeout,
                                                                    job["state"]))


def pids_where(match):
    """Pids of the processes whose argument list (bytes) satisfies match: the
    processes a test started and wants to find again (it kills by pid only)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if match(args):
            pids.append(int(pid))
    return pids


@pytest.fixture(scope="session")
def lab():
    assert os.geteuid() == 0, "the integration tests need root (they run the lab)"
    was_up = Lab().state() is not None
    admin("lab", "up", "--nodes", "2", "--with-debian", check=True)
    yield Lab()
    if not was_up:
        admin("lab", "down", check=True)


@pytest.fixture
def make_user(lab):
    made = []

    def make(*extra):
        name = "oct" + secrets.token_hex(3)
        admin("user", "add", name, *extra, check=True)
        made.append(name)
        return name
    yield make
    # Once more for those refused the first time (another one's instance was
    # on their network: its owner is gone now).
    left = [n for n in made if admin("user", "delete", n).returncode != 0]
    for name in left:
        admin("user", "delete", name)
