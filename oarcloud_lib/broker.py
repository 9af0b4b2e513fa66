"""The instance broker: the one privileged door from a user to their instances.

Instances are containers that only root on their node can enter, and users
reach nodes only through OAR.  `oarcloud exec|ssh|console|start|stop|reboot`
run this module as root through sudo (a rule `setup server` installs).  It:

- takes the caller from sudo (SUDO_UID), never from its arguments;
- finds the caller's live instance by name in the catalog: another user's
  instance is "not found", exactly like a missing one;
- checks that the instance's OAR job is running;
- runs the node agent's verb on the instance's node over OAR's ssh
  (oarssh), where the domain name is checked again.

    broker exec NAME [-- CMD...]   broker console NAME   broker proxy NAME [PORT]
    broker start|stop|reboot NAME
"""
import logging
import os
import pwd
import sys

from oarcloud_lib import accounts, catalog, instances, joblog, jobspec, oarssh
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.oar import get_job

LOG = logging.getLogger("oarcloud.broker")
INTERACTIVE = ("exec", "console", "proxy")
POWER = ("start", "stop", "reboot")


def caller(environ=os.environ):
    """The Unix user who ran sudo.  Raises Refused."""
    uid = environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid.isdigit():
        raise Refused(detail="the broker runs as root through sudo (use oarcloud)")
    if int(uid) == 0:
        raise Refused(detail="root has no instances: run oarcloud as the instance's owner")
    name = pwd.getpwuid(int(uid)).pw_name
    if not accounts.NAME_RE.match(name):
        raise Refused(detail="unexpected user name %r" % name[:40])
    return name


def owned_instance(conn, owner, name):
    """The owner's live instance called name.  Raises NotFound, Conflict."""
    if not jobspec.NAME_PATTERN.match(name or ""):
        raise Refused(detail="bad instance name %r" % (name[:60],))
    rows = [r for r in instances.live(conn, owner=owner) if r["name"] == name]
    if not rows:
        raise NotFound(what="instance", name=name)
    row = rows[0]
    if row["state"] not in ("running", "stopped"):
        raise Conflict(what="instance", detail="%s is %s" % (name, row["state"]))
    job = get_job(row["job_id"])
    if job.get("state") != "Running":
        raise Conflict(what="instance", detail="%s: its job %s is %s" % (name, row["job_id"],
                                                                         job.get("state")))
    return row


def main(argv):
    # Warnings on the terminal; the job's events (INFO) go to the catalog.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, handlers=[stderr], format="%(message)s")
    if len(argv) < 2 or argv[0] not in INTERACTIVE + POWER:
        print(__doc__, file=sys.stderr)
        return 2
    verb, name, rest = argv[0], argv[1], argv[2:]
    try:
        owner = caller()
        with catalog.connect() as conn:
            row = owned_instance(conn, owner, name)
            node, domain = row["node"], row["domain"]
            if verb in INTERACTIVE:
                tty = verb == "console" or (verb == "exec" and os.isatty(0) and os.isatty(1))
                args = rest if verb != "exec" else ["--"] + (rest[1:] if rest[:1] == ["--"] else rest)
                argv = oarssh.agent_argv(node, verb, domain, *args, tty=tty)
                conn.close()
                os.execvp(argv[0], argv)
            with joblog.recording(conn, row["job_id"]):
                LOG.info("%s %s (%s) on %s, asked by %s", verb, name, domain, node, owner)
                state = LOCAL.out(oarssh.agent_argv(node, verb, domain), timeout=120).strip()
                instances.set_state(conn, domain, "running" if state == "running" else "stopped")
            print("%s: %s" % (name, state))
            return 0
    except OarcloudError as e:
        print("oarcloud %s: error: %s" % (verb, e), file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
