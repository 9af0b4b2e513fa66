"""First-boot user data, on the node: run once in each instance of a launch.

The prologue writes the script into the instance's root before it starts
(SCRIPT, 0700, the instance's root's) and, once the instance runs, starts

    python -m oarcloud_lib.node.userdata DOMAIN

detached.  That runs SCRIPT as root in the instance (all its namespaces and
cgroups, like `oarcloud exec`: never as the node's root), waits for it,
writes its output in the instance (LOG) and in the job's events (its last
lines, `oarcloud logs`), and records the outcome on the instance's row
(`user_data_state` running, done or failed, `user_data_exit`: `oarcloud
show`).  The row's state makes it run once: a restart, a reboot or a second
prologue never runs it again.
"""
import logging
import os
import subprocess
import sys

from oarcloud_lib import paths
from oarcloud_lib.catalog import db, joblog
from oarcloud_lib.names import DOMAIN_RE
from oarcloud_lib.node import access
from oarcloud_lib.tools.oarssh import this_node

LOG = logging.getLogger("oarcloud.userdata")
SCRIPT = "/var/lib/oarcloud/user-data"
LOG_FILE = "/var/log/oarcloud-user-data.log"
MAX_OUTPUT = 16 << 10   # bytes of output kept (the last ones)
EVENT_LINES = 20        # of them, lines copied into the job's events


def start(domain):
    """Run the instance's user data in a detached process of its own."""
    subprocess.Popen([sys.executable, "-I", "-m", "oarcloud_lib.node.userdata", domain],
                     cwd="/", env={"PATH": paths.ROOT_PATH}, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


def _in_instance(init, argv, **kw):
    return subprocess.Popen(["nsenter", "-t", str(init), "-a", "-r", "-w", "--", *argv],
                            env=access.instance_env(), cwd="/",
                            preexec_fn=lambda: access.join_cgroups(init), **kw)


def run(domain):
    """Run the user data of domain once; returns its exit code (None: not run).
    No catalog connection is held while the script runs (it may run for hours)."""
    if not DOMAIN_RE.match(domain or ""):
        raise SystemExit("bad domain name")
    with db.connect() as conn:
        row = conn.execute("UPDATE instances SET user_data_state = 'running' WHERE domain = %s"
                           " AND user_data IS NOT NULL AND user_data_state IS NULL"
                           " RETURNING job_id, name", (domain,)).fetchone()
    if row is None:
        return None  # none, or run already
    job_id, name = row
    output, code = b"", None
    try:
        init = access.guest(domain).init_pid()
        proc = _in_instance(init, [SCRIPT], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := proc.stdout.read(4096):
            output = (output + chunk)[-MAX_OUTPUT:]
        code = proc.wait()
        saver = _in_instance(init, ["/bin/sh", "-c", "cat > %s" % LOG_FILE],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        saver.communicate(output, timeout=30)
    except Exception as e:  # noqa: BLE001 - the outcome is the user's to see
        LOG.warning("user data of %s: %s", domain, e)
        output += ("\n(oarcloud: %s)" % e).encode()
    lines = [ln for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    ok = code == 0
    with db.connect() as conn:
        for line in lines[-EVENT_LINES:]:
            joblog.add_event(conn, job_id, "INFO", "%s user data: %s" % (name, line[:300]),
                             node=this_node())
        joblog.add_event(conn, job_id, "INFO" if ok else "ERROR", "%s: user data %s" % (
            name, "done" if ok else "failed (exit %s; its output is in %s in the instance)"
            % (code, LOG_FILE)), node=this_node())
        conn.execute("UPDATE instances SET user_data_state = %s, user_data_exit = %s"
                     " WHERE domain = %s", ("done" if ok else "failed", code, domain))
    return code


def main(argv):
    os.chdir("/")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(argv[0] if argv else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
