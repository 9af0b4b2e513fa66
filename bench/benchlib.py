"""What the benchmarks share: the installed commands, and running as a user."""
import os
import subprocess
import sys
from pathlib import Path

TREE = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, TREE)
ADMIN = "/usr/local/bin/oarcloud-admin"
USER_CLI = "/usr/local/bin/oarcloud"
VENV_PY = "/opt/oarcloud/venv/bin/python"


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def run_as(user, argv):
    """argv as user, from their home (what oarsub expects)."""
    home = os.path.expanduser("~" + user)
    env = dict(os.environ, HOME=home, PWD=home, USER=user, LOGNAME=user)
    return run(["runuser", "-u", user, "--", *argv], cwd=home, env=env)
