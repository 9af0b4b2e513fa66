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

It is also the one writer of images for users (the store is root's, the
catalog read-only to them):

    broker image-import NAME [DESCRIPTION]   (a plain tar stream on stdin, read by
                                              the user's own `oarcloud image import`)
    broker image-save INSTANCE NAME [flatten]
    broker image-share NAME USER     broker image-publish NAME     broker image-delete NAME
    broker image-build SUITE NAME    (admins: debootstrap)
"""
import logging
import os
import pwd
import re
import sys

from oarcloud_lib import (accounts, catalog, config, images, imagestore, instances, joblog,
                          jobspec, oarssh, progress, saves)
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.oar import get_job

LOG = logging.getLogger("oarcloud.broker")
INTERACTIVE = ("exec", "console", "proxy")
POWER = ("start", "stop", "reboot")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}\Z")
IMAGE_VERBS = {"image-import": (1, 2), "image-save": (2, 3), "image-share": (2, 2),
               "image-publish": (1, 1), "image-delete": (1, 1), "image-build": (2, 2)}


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


def is_admin(conn, user):
    row = conn.execute("SELECT role FROM accounts WHERE name = %s", (user,)).fetchone()
    if row is None:
        raise Refused(detail="%s has no oarcloud account (oarcloud-admin user add)" % user)
    return row[0] == "admin"


def image_verb(conn, user, verb, args):
    """The image verbs; returns what to print."""
    admin = is_admin(conn, user)
    if verb == "image-import":
        name, description = args[0], (args[1] if len(args) > 1 else "")
        images.check_new_name(conn, name)
        # The user's `oarcloud image import` shows the progress (it knows the size).
        sha, size, unpacked = imagestore.ingest(sys.stdin.buffer)
        images.register(conn, name, sha, size, owner=user, unpacked=unpacked,
                        description=description[:500])
        return "image %s imported (%d MB packed, %d MB unpacked, sha256 %s)" % (
            name, size >> 20, unpacked >> 20, sha[:12])
    if verb == "image-save":
        row = owned_instance(conn, user, args[0])
        meter = progress.Meter("save %s" % args[0])
        image = saves.save_live(conn, user, row, args[1], flatten=args[2:] == ["flatten"],
                                progress=meter)
        return "%s saved as image %s (%d MB, %s)" % (
            args[0], image["name"], image["size"] >> 20,
            "a layer over %s" % image["parent"] if image["depth"] else "flattened")
    if verb == "image-share":
        added = images.share(conn, args[0], user, args[1], admin)
        return "image %s %s with %s" % (args[0], "shared" if added else "already shared", args[1])
    if verb == "image-publish":
        changed = images.publish(conn, args[0], user, admin, config.load().image_publish_policy)
        return "image %s %s" % (args[0], "is now public" if changed else "was already public")
    if verb == "image-delete":
        images.delete(conn, args[0], user, admin)
        return "image %s deleted" % args[0]
    if verb == "image-build":
        if not admin:
            raise Refused(detail="only admins build images (oarcloud-admin user add --admin)")
        suite, name = args
        if not SUITE_RE.match(suite):
            raise Refused(detail="bad suite name %r" % suite[:40])
        images.check_new_name(conn, name)
        print("building %s with debootstrap %s (a few minutes)..." % (name, suite),
              file=sys.stderr, flush=True)
        images.ensure_site_image(conn, name, lambda root: images.build_debootstrap_rootfs(
            root, suite), "Debian %s (debootstrap)" % suite)
        return "image %s built (public)" % name
    raise Refused(detail="unknown verb %s" % verb)


def main(argv):
    # Warnings on the terminal; the job's events (INFO) go to the catalog.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, handlers=[stderr], format="%(message)s")
    verb = argv[0] if argv else ""
    if verb in IMAGE_VERBS:
        low, high = IMAGE_VERBS[verb]
        if not low <= len(argv) - 1 <= high:
            print(__doc__, file=sys.stderr)
            return 2
        try:
            user = caller()
            with catalog.connect() as conn:
                print(image_verb(conn, user, verb, argv[1:]))
            return 0
        except OarcloudError as e:
            print("oarcloud %s: error: %s" % (verb.replace("-", " "), e), file=sys.stderr)
            return e.exit_code
    if len(argv) < 2 or verb not in INTERACTIVE + POWER:
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
