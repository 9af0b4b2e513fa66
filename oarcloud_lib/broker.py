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

and of private networks (the nodes that host a network follow each change):

    broker net-create NAME CIDR [GATEWAY]    broker net-delete NAME
    broker net-rule-add NAME DIRECTION PROTO PORT|- REMOTE|-    broker net-rule-del NAME ID
    broker net-expose INSTANCE PORT PROTO [NETWORK]    broker net-unexpose INSTANCE PORT PROTO
    broker net-vpn NAME CLIENT       (the client's OpenVPN file on stdout)

and of the user's alarms and notification targets (URLs and alarm specs come
on stdin: they may hold secrets, which the command line shows to everyone):

    broker alarm-create  (a JSON spec on stdin)      broker alarm-delete NAME
    broker notify-add    (the URL on stdin)          broker notify-del  (id or URL on stdin)
    broker notify-test   (a test message to every target; waits for the outcome)
"""
import json
import logging
import os
import pwd
import re
import socket
import sys
import time

from oarcloud_lib import (accounts, catalog, commands, config, images, imagestore, instances,
                          joblog, jobspec, networks, oarssh, paths, progress, saves)
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.oar import job_state

LOG = logging.getLogger("oarcloud.broker")
INTERACTIVE = ("exec", "console", "proxy")
POWER = ("start", "stop", "reboot")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}\Z")
IMAGE_VERBS = {"image-import": (1, 2), "image-save": (2, 3), "image-share": (2, 2),
               "image-publish": (1, 1), "image-delete": (1, 1), "image-build": (2, 2)}
NET_VERBS = {"net-create": (2, 3), "net-delete": (1, 1), "net-rule-add": (5, 5),
             "net-rule-del": (2, 2), "net-expose": (3, 4), "net-unexpose": (3, 3),
             "net-vpn": (2, 2)}
MONITOR_VERBS = {"alarm-create": (0, 0), "alarm-delete": (1, 1), "notify-add": (0, 0),
                 "notify-del": (0, 0), "notify-test": (0, 0)}
MAX_STDIN = 65536


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
    state = job_state(row["job_id"])
    # Launching: the prologue is finishing (other nodes of the networks follow
    # the new addresses) while the instance already runs.
    if state not in ("Running", "Launching"):
        raise Conflict(what="instance", detail="%s: its job %s is %s" % (name, row["job_id"],
                                                                         state))
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
        images.check_description(description)
        # The user's `oarcloud image import` shows the progress (it knows the size).
        sha, size, unpacked = imagestore.ingest(sys.stdin.buffer)
        images.register(conn, name, sha, size, owner=user, unpacked=unpacked,
                        description=description)
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
        images.check_new_name(conn, name, site=True)
        print("building %s with debootstrap %s (a few minutes)..." % (name, suite),
              file=sys.stderr, flush=True)
        images.ensure_site_image(conn, name, lambda root: images.build_debootstrap_rootfs(
            root, suite), "Debian %s (debootstrap)" % suite)
        return "image %s built (public)" % name
    raise Refused(detail="unknown verb %s" % verb)


def _apply(conn, network_ids, extra_nodes=()):
    """Have the nodes hosting these networks follow the catalog; what to print."""
    from oarcloud_lib import nodeagent
    nodes = sorted(set(networks.hosting_nodes(conn, network_ids)) | set(extra_nodes))
    started = time.monotonic()
    errors = nodeagent.sync_nodes(nodes)
    if errors:
        raise OarcloudError("saved, but not applied on %s (the node's next change retries)"
                            % ", ".join(sorted(errors)))
    return "applied on %d node(s) in %.2fs" % (len(nodes), time.monotonic() - started) \
        if nodes else "no instance uses it yet"


def net_verb(conn, user, verb, args):
    """The network verbs; returns what to print."""
    if verb == "net-create":
        row = networks.create(conn, user, args[0], args[1], args[2] if len(args) > 2 else None,
                              reserved=networks.reserved_ranges(config.load()))
        return "network %s created: %s, gateway %s (VXLAN %d)" % (
            row["name"], row["cidr"], row["gateway"], row["vni"])
    if verb == "net-delete":
        vpn_node = networks.delete(conn, user, args[0])
        if vpn_node:
            _apply(conn, [], [vpn_node])
        return "network %s deleted" % args[0]
    if verb == "net-rule-add":
        port, remote = (None if a == "-" else a for a in args[3:5])
        row, rule_id, added = networks.add_rule(conn, user, args[0], args[1], args[2], port,
                                                remote)
        if not added:
            return "rule %d already in network %s" % (rule_id, row["name"])
        return "rule %d added to network %s: %s" % (rule_id, row["name"], _apply(conn, [row["id"]]))
    if verb == "net-rule-del":
        row = networks.delete_rule(conn, user, args[0], args[1])
        return "rule %s deleted from network %s: %s" % (args[1], row["name"],
                                                        _apply(conn, [row["id"]]))
    if verb in ("net-expose", "net-unexpose"):
        inst = owned_instance(conn, user, args[0])
        if verb == "net-unexpose":
            networks.unexpose(conn, inst, args[1], args[2])
            _apply(conn, [], [inst["node"]])
            return "%s port %s/%s no longer published" % (args[0], args[1], args[2])
        exp, added = networks.expose(conn, inst, args[1], args[2], args[3] if len(args) > 3
                                     else None)
        if added:
            _apply(conn, [], [inst["node"]])
        net = networks.get(conn, user, exp["network"])
        out = "%s %s/%s (%s) published at %s:%d" % (
            args[0], exp["port"], exp["proto"], exp["ip"], socket.gethostbyname(exp["node"]),
            exp["node_port"])
        if not networks.allows_ingress(networks.rules(conn, [net["id"]])[net["id"]],
                                       exp["proto"], exp["port"]):
            out += ("\nnote: no ingress rule lets it in yet: oarcloud net rule add %s"
                    " --direction ingress --proto %s --port %d" % (net["name"], exp["proto"],
                                                                   exp["port"]))
        return out
    if verb == "net-vpn":
        from oarcloud_lib import vpn
        return vpn.client_file(conn, user, args[0], args[1], _apply)
    raise Refused(detail="unknown verb %s" % verb)


def _stdin():
    data = sys.stdin.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise Refused(detail="more than %d bytes on stdin" % MAX_STDIN)
    return data.strip()


def monitor_verb(conn, user, verb, args):
    """The alarm and notification verbs -> (what to print, exit code)."""
    from oarcloud_lib import alarms, notify
    if verb == "alarm-create":
        try:
            spec = json.loads(_stdin())
        except ValueError:
            raise Refused(detail="alarm-create reads a JSON object on stdin") from None
        interval = config.load().monitor_interval
        names = {r["name"] for r in instances.live(conn, owner=user)}
        row = alarms.create_from_spec(conn, user, spec, interval, names)
        return ("alarm %s created: %s (%s until %d period(s) have values)"
                % (row["name"], alarms.describe(row), row["state"], row["periods"])), 0
    if verb == "alarm-delete":
        alarms.delete(conn, user, args[0])
        return "alarm %s deleted" % args[0], 0
    if verb == "notify-add":
        row, added = notify.add_target(conn, user, _stdin())
        return "target %d: %s (%s)" % (row["id"], notify.redact(row["url"]),
                                      "added" if added else "already there"), 0
    if verb == "notify-del":
        notify.delete_target(conn, user, _stdin())
        return "target removed", 0
    lines, ok = notify.test(conn, user, detail=False)  # no port scanner: no reasons for users
    return "\n".join(lines), 0 if ok else 1


def main(argv):
    commands.root_entry(paths.ROOT_PATH)
    # Warnings on the terminal; the job's events (INFO) go to the catalog.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, handlers=[stderr], format="%(message)s")
    verb = argv[0] if argv else ""
    catalog_verbs = dict(IMAGE_VERBS, **NET_VERBS, **MONITOR_VERBS)
    if verb in catalog_verbs:
        low, high = catalog_verbs[verb]
        if not low <= len(argv) - 1 <= high:
            print(__doc__, file=sys.stderr)
            return 2
        try:
            user = caller()
            with catalog.connect() as conn:
                if verb in MONITOR_VERBS:
                    out, code = monitor_verb(conn, user, verb, argv[1:])
                else:
                    out = (image_verb if verb in IMAGE_VERBS else net_verb)(conn, user, verb,
                                                                          argv[1:])
                    code = 0
            print(out)
            return code
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
                argv = oarssh.agent_argv(node, verb, domain, *args, tty=tty,
                                         module="oarcloud_lib.access")
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
    commands.exit_now(main(sys.argv[1:]))
