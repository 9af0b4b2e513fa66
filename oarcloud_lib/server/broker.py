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
    broker resize NAME CORES|- MEMORY|-   (live, within its job: service.resize)

and of instances in the caller's allocations (service.allocations: placed and
started at once, without OAR):

    broker alloc-launch ALLOC TYPE...   (the launch's cloud job types; JSON rows out)
    broker alloc-remove NAME            (one instance of an allocation)

and of the caller's scaling groups (service.groups; settings as JSON on stdin):

    broker group-create    broker group-set NAME    broker group-delete NAME
    broker group-schedule NAME    broker group-unschedule NAME ID
    broker group-protect NAME MEMBER [off]
    broker group-rule-add NAME (the rule as JSON on stdin)    broker group-rule-delete NAME ID

and of their load balancers (server.balancers):

    broker lb-create NAME GROUP PORT CHECK ALGORITHM   broker lb-delete|lb-show NAME
    broker lb-list

It is also the one writer of images for users (the store is root's, the
catalog read-only to them):

    broker image-import NAME [DESCRIPTION]   (a plain tar stream on stdin, read by
                                              the user's own `oarcloud image import`)
    broker image-save INSTANCE NAME [flatten]
    broker image-save-retry SAVE_ID [NAME]   broker image-save-discard SAVE_ID
    broker image-share NAME USER|@GROUP [off]
    broker image-publish NAME     broker image-delete NAME
    broker image-build SUITE NAME    (admins: debootstrap)

and of private networks (the nodes that host a network follow each change):

    broker net-create NAME CIDR [GATEWAY]    broker net-delete NAME
    broker net-rule-add NAME DIRECTION PROTO PORT|- REMOTE|-    broker net-rule-del NAME ID
    broker net-expose INSTANCE PORT PROTO [NETWORK]    broker net-unexpose INSTANCE PORT PROTO
    broker net-vpn NAME CLIENT [DAYS]   (the client's OpenVPN file on stdout)
    broker net-vpn-revoke NAME CLIENT    broker net-share NAME USER|@GROUP [off]

and of volumes (server.volumestore; the node mounts one in a running instance):

    broker volume-create NAME SIZE [IMAGE]    broker volume-delete NAME
    broker volume-resize NAME SIZE
    broker volume-snapshot NAME NEW   broker volume-share NAME USER [off]
    broker volume-attach NAME INSTANCE PATH [ro]    broker volume-detach NAME INSTANCE

and of the user's first-boot user data (a script or #cloud-config on stdin; its id out,
for the launch's cloud.userdata=ID):

    broker user-data-put

and of the files a launch copies in before its instances start (a JSON bundle on
stdin; its id out, for the launch's cloud.files=ID):

    broker files-put

and of the user's SSH keys (every new instance gets them all):

    broker key-add   (one public key on stdin; JSON out)    broker key-del FINGERPRINT|COMMENT

and of the user's quotas (JSON out: their groups' use is counted as root):

    broker quota

and, for operators (viewers and admins may list), of the site's nodes (JSON out):

    broker node-list    broker node-show HOST
    broker node-drain HOST [DEADLINE]    broker node-undrain HOST

and of the user's alarms and notification targets (URLs and alarm specs come
on stdin: they may hold secrets, which the command line shows to everyone):

    broker alarm-create  (a JSON spec on stdin)      broker alarm-delete NAME
    broker notify-add    (the URL on stdin)          broker notify-del  (id or URL on stdin)
    broker notify-test   (a test message to every target; waits for the outcome)

`broker --json VERB ...` answers a verb that changes something with what it
created or changed, as one JSON object, instead of a line for people.

OAR's admission rule asks it, as OAR's own user, whether a cloud job may be
submitted (the checks the prologue makes again, answered before the job exists):

    broker admit OWNER NODES TYPE...   (only for the caller "oar")
"""
import json
import logging
import os
import pwd
import re
import socket
import sys
import time

from oarcloud_lib import commands, config, metrics, paths, progress
from oarcloud_lib.catalog import (accounts, db, images, instances, joblog, jobspec, networks,
                                  nodesets, quotas)
from oarcloud_lib.server import imagestore, saves
from oarcloud_lib.service import fanout, lifecycle
from oarcloud_lib.tools import oar, oarssh
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Forbidden, NotFound, OarcloudError, Refused, from_foreign

LOG = logging.getLogger("oarcloud.broker")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}\Z")
MAX_STDIN = 65536
OAR_USER = "oar"


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


def _role(conn, user):
    role = accounts.role(conn, user)
    if role is None:
        raise Refused(detail="%s has no oarcloud account (oarcloud-admin user add)" % user)
    return role


def is_admin(conn, user):
    return _role(conn, user) == "admin"


def require_role(conn, user, roles, doing):
    """Refuse (Forbidden) unless user's role is one of roles."""
    role = _role(conn, user)
    if role not in roles:
        raise Forbidden(detail="%s is a %s: only %s may %s" % (
            user, role, " and ".join(r + "s" for r in roles), doing))


# -- images ---------------------------------------------------------------------------

def image_import(conn, user, name, description=""):
    is_admin(conn, user)  # an account, or Refused
    images.check_new_name(conn, name)
    images.check_description(description)
    quotas.require_room(conn, user, "images-bytes")  # again with the size, once stored
    # The user's `oarcloud image import` shows the progress (it knows the size).
    sha, size, unpacked = imagestore.ingest(sys.stdin.buffer)
    images.register(conn, name, sha, size, owner=user, unpacked=unpacked,
                    description=description)
    return Done("image %s imported (%d MB packed, %d MB unpacked, sha256 %s)" % (
        name, size >> 20, unpacked >> 20, sha[:12]),
        name=name, sha256=sha, size=size, unpacked=unpacked)


def image_save(conn, user, instance, name, *flatten):
    if flatten not in ((), ("flatten",)):
        raise Refused(detail="image-save takes INSTANCE NAME [flatten]")
    is_admin(conn, user)  # an account, or Refused
    row = lifecycle.reachable(conn, user, instance)
    meter = progress.Meter("save %s" % instance)
    image = saves.save_live(conn, user, row, name, flatten=bool(flatten), progress=meter)
    return Done("%s saved as image %s (%d MB, %s)" % (
        instance, image["name"], image["size"] >> 20,
        "a layer over %s" % image["parent"] if image["depth"] else "flattened"),
        instance=instance, image=image["name"], size=image["size"],
        parent=image["parent"] if image["depth"] else None)


def image_save_retry(conn, user, save_id, name=None):
    row = saves.retry(conn, user, save_id, name)
    data = {"save": row["id"], "state": row["state"], "image": row["image"],
            "error": row["error"]}
    if row["state"] == "done":
        return Done("save %d: the kept changes of %s are now image %s" % (
            row["id"], row["domain"], row["image"]), **data)
    if row["state"] == "failed":
        return Done("save %d failed again: %s" % (row["id"], row["error"]), code=1, **data)
    return Done("save %d is still %s: see oarcloud image saves" % (row["id"], row["state"]),
                code=1, **data)


def image_save_discard(conn, user, save_id):
    row = saves.discard(conn, user, save_id)
    return Done("save %d: the kept changes of %s were dropped from %s" % (
        row["id"], row["domain"], row["node"]), save=row["id"], discarded=True)


def _on_off(verb, args):
    """True for a share, False for `off` (the one optional word)."""
    if args not in ((), ("off",)):
        raise Refused(detail="%s: NAME USER|@GROUP [off]" % verb)
    return args != ("off",)


def _shared(what, name, other, on, changed):
    said = {(True, True): "shared with", (True, False): "was already shared with",
            (False, True): "no longer shared with", (False, False): "was not shared with"}
    return Done("%s %s %s %s" % (what, name, said[on, bool(changed)], other), name=name,
                shared_with=other, shared=on, changed=bool(changed))


def image_share(conn, user, name, other, *off):
    on = _on_off("image share", off)
    return _shared("image", name, other, on,
                   images.share(conn, name, user, other, is_admin(conn, user), on))


def image_publish(conn, user, name):
    changed = images.publish(conn, name, user, is_admin(conn, user),
                             config.load().image_publish_policy)
    return Done("image %s %s" % (name, "is now public" if changed else "was already public"),
                name=name, public=True, changed=bool(changed))


def image_delete(conn, user, name):
    images.delete(conn, name, user, is_admin(conn, user))
    return Done("image %s deleted" % name, name=name, deleted=True)


def image_build(conn, user, suite, name):
    if not is_admin(conn, user):
        raise Refused(detail="only admins build images (oarcloud-admin user add --admin)")
    if not SUITE_RE.match(suite):
        raise Refused(detail="bad suite name %r" % suite[:40])
    images.check_new_name(conn, name, site=True)
    print("building %s with debootstrap %s (a few minutes)..." % (name, suite),
          file=sys.stderr, flush=True)
    images.ensure_site_image(conn, name, lambda root: images.build_debootstrap_rootfs(
        root, suite), "Debian %s (debootstrap)" % suite)
    return Done("image %s built (public)" % name, name=name, suite=suite, public=True)


# -- private networks -------------------------------------------------------------------

def _apply(conn, network_ids, extra_nodes=()):
    """Have the nodes hosting these networks follow the catalog; what to print.
    Raises OarcloudError (saved, not applied everywhere)."""
    nodes = sorted(set(networks.hosting_nodes(conn, network_ids)) | set(extra_nodes))
    started = time.monotonic()
    errors = fanout.sync_nodes(nodes)
    if errors:
        raise OarcloudError("saved, but not applied on %s (the node's next change retries)"
                            % ", ".join(sorted(errors)))
    return "applied on %d node(s) in %.2fs" % (len(nodes), time.monotonic() - started) \
        if nodes else "no instance uses it yet"


def net_create(conn, user, name, cidr, gateway=None):
    row = networks.create(conn, user, name, cidr, gateway,
                          reserved=networks.reserved_ranges(config.load()))
    return Done("network %s created: %s, gateway %s (VXLAN %d)" % (
        row["name"], row["cidr"], row["gateway"], row["vni"]),
        **{k: str(row[k]) if k in ("cidr", "gateway") else row[k]
           for k in ("name", "cidr", "gateway", "vni")})


def quota(conn, user):
    """The user's quota report, with their groups' limits and what the members
    use together (which the user's own catalog role may not count)."""
    is_admin(conn, user)  # an account, or Refused
    return json.dumps(quotas.report(conn, user), default=str)


def net_share(conn, user, name, other, *off):
    on = _on_off("net share", off)
    row, changed = networks.share(conn, user, name, other, on)
    return _shared("network", row["name"], other, on, changed)


def net_delete(conn, user, name):
    net = networks.get(conn, user, name)
    vpn_node = networks.delete(conn, user, name)
    from oarcloud_lib.server import vpnca  # cryptography: only where it is used
    vpnca.forget(net["id"])
    if vpn_node:
        _apply(conn, [], [vpn_node])
    return Done("network %s deleted" % name, name=name, deleted=True)


def net_rule_add(conn, user, name, direction, proto, port, remote):
    port, remote = (None if a == "-" else a for a in (port, remote))
    row, rule_id, added = networks.add_rule(conn, user, name, direction, proto, port, remote)
    data = {"network": row["name"], "rule": rule_id, "added": bool(added)}
    if not added:
        return Done("rule %d already in network %s" % (rule_id, row["name"]), **data)
    return Done("rule %d added to network %s: %s" % (rule_id, row["name"],
                                                     _apply(conn, [row["id"]])), **data)


def net_rule_del(conn, user, name, rule_id):
    row = networks.delete_rule(conn, user, name, rule_id)
    return Done("rule %s deleted from network %s: %s" % (
        rule_id, row["name"], _apply(conn, [row["id"]])), network=row["name"],
        rule=int(rule_id), deleted=True)


def net_expose(conn, user, instance, port, proto, network=None):
    inst = lifecycle.reachable(conn, user, instance)
    exp, added = networks.expose(conn, inst, port, proto, network)
    if added:
        _apply(conn, [], [inst["node"]])
    net = networks.get(conn, user, exp["network"])
    address = socket.gethostbyname(exp["node"])
    out = "%s %s/%s (%s) published at %s:%d" % (
        instance, exp["port"], exp["proto"], exp["ip"], address, exp["node_port"])
    allowed = networks.allows_ingress(networks.rules(conn, [net["id"]])[net["id"]],
                                      exp["proto"], exp["port"])
    if not allowed:
        out += ("\nnote: no ingress rule lets it in yet: oarcloud net rule add %s"
                " --direction ingress --proto %s --port %d" % (net["name"], exp["proto"],
                                                               exp["port"]))
    return Done(out, instance=instance, port=exp["port"], proto=exp["proto"],
                ip=str(exp["ip"]), network=net["name"], node=exp["node"], address=address,
                node_port=exp["node_port"], added=bool(added), ingress_allowed=bool(allowed))


def net_unexpose(conn, user, instance, port, proto):
    inst = lifecycle.reachable(conn, user, instance)
    networks.unexpose(conn, inst, port, proto)
    _apply(conn, [], [inst["node"]])
    return Done("%s port %s/%s no longer published" % (instance, port, proto),
                instance=instance, port=int(port), proto=proto, published=False)


def net_vpn(conn, user, name, client, days=None):
    from oarcloud_lib.server import vpnca
    return vpnca.client_file(conn, user, name, client, days, _apply)


def net_vpn_revoke(conn, user, name, client):
    from oarcloud_lib.server import vpnca
    return Done(vpnca.revoke(conn, user, name, client, _apply), network=name, client=client,
                revoked=True)


# -- first-boot user data (on stdin) ----------------------------------------------------

def user_data_put(conn, user):
    from oarcloud_lib.catalog import userdata
    is_admin(conn, user)  # an account, or Refused
    data_id = userdata.store(conn, user, sys.stdin.buffer.read(userdata.MAX_BYTES + 1))
    return json.dumps({"id": data_id})


# -- the caller's SSH keys (a key on stdin) --------------------------------------------

def files_put(conn, user):
    from oarcloud_lib.catalog import launchfiles
    is_admin(conn, user)  # an account, or Refused
    bundle = sys.stdin.read(2 * launchfiles.MAX_TOTAL + (1 << 16))
    return json.dumps({"id": launchfiles.store(conn, user, bundle)})


def key_add(conn, user):
    is_admin(conn, user)  # an account, or Refused
    row, added = accounts.add_key(conn, user, sys.stdin.read(1 << 16))
    return json.dumps({"fingerprint": row["fingerprint"], "comment": row["comment"],
                       "added": added}, sort_keys=True)


def key_del(conn, user, ident):
    row = accounts.del_key(conn, user, ident)
    return json.dumps({"fingerprint": row["fingerprint"], "comment": row["comment"],
                       "deleted": True}, sort_keys=True)


# -- alarms and notification targets (specs and URLs on stdin: they may hold secrets) --

def _stdin():
    data = sys.stdin.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise Refused(detail="more than %d bytes on stdin" % MAX_STDIN)
    return data.strip()


def alarm_create(conn, user):
    from oarcloud_lib.catalog import alarms
    try:
        spec = json.loads(_stdin())
    except ValueError:
        raise Refused(detail="alarm-create reads a JSON object on stdin") from None
    interval = config.load().monitor_interval
    from oarcloud_lib.server import balancers
    subjects = {"instance": {r["name"] for r in instances.live(conn, owner=user)},
                "lb": {b["name"] for b in balancers.owned(conn, user)}}
    row = alarms.create_from_spec(conn, user, spec, interval, subjects)
    return Done("alarm %s created: %s (%s until %d period(s) have values)"
                % (row["name"], alarms.describe(row), row["state"], row["periods"]),
                name=row["name"], condition=alarms.describe(row), state=row["state"],
                periods=row["periods"])


def alarm_delete(conn, user, name):
    from oarcloud_lib.catalog import alarms
    alarms.delete(conn, user, name)
    return Done("alarm %s deleted" % name, name=name, deleted=True)


def notify_add(conn, user):
    from oarcloud_lib.server import notify
    row, added = notify.add_target(conn, user, _stdin())
    return Done("target %d: %s (%s)" % (row["id"], notify.redact(row["url"]),
                                       "added" if added else "already there"),
                id=row["id"], url=notify.redact(row["url"]), added=bool(added))


def notify_del(conn, user):
    from oarcloud_lib.server import notify
    notify.delete_target(conn, user, _stdin())
    return Done("target removed", deleted=True)


def notify_test(conn, user):
    from oarcloud_lib.server import notify
    lines, ok = notify.test(conn, user, detail=False)  # no port scanner: no reasons for users
    return Done("\n".join(lines), code=0 if ok else 1, ok=ok, report=lines)


# -- volumes (service.volumes: the catalog's rules, the store, the instance's node) -------

def _volume(name):
    def run(conn, user, *args):
        from oarcloud_lib.service import volumes
        is_admin(conn, user)  # an account, or Refused
        if name == "attach" and args[3:] not in ((), ("ro",)):
            raise Refused(detail="volume attach: NAME INSTANCE PATH [ro]")
        if name == "attach":
            args = args[:3] + (args[3:] == ("ro",),)
        if name == "share":
            args = args[:2] + (_on_off("volume share", args[2:]),)
        return json.dumps(getattr(volumes, name)(conn, user, *args), default=str)
    return run


# -- one instance: on its node, through the node agent -------------------------------------

def admit(conn, user, owner, nodes, *types):
    """The job's prologue checks, asked by OAR's admission rule while oarsub
    runs (as OAR's user, for the submitter `owner`): the image, the networks,
    a fixed address, the names.  An ordinary user may not ask it for another."""
    if user != OAR_USER:
        raise Refused(detail="admit is asked by OAR's admission rule only")
    if not accounts.NAME_RE.match(owner) or owner in accounts.RESERVED:
        raise Refused(detail="unexpected submitter %r" % owner[:40])
    if not nodes.isdigit():
        raise Refused(detail="bad node count %r" % nodes[:20])
    spec = jobspec.parse_types(types)
    if spec is None:
        return "not a cloud job"
    conf = config.load()
    lifecycle.admit(conn, owner, spec, max(1, int(nodes)), conf.default_image, conf=conf)
    keep_off = nodesets.clause(nodesets.barred(conn, owner))
    # The admission rule adds the clause to the job's properties.
    return "admitted" + ("\nproperties: " + keep_off if keep_off else "")


def _interactive(verb):
    def run(conn, user, name, *rest):
        row = lifecycle.reachable(conn, user, name)
        tty = verb == "console" or (verb == "exec" and os.isatty(0) and os.isatty(1))
        args = rest if verb != "exec" else ["--"] + list(rest[1:] if rest[:1] == ("--",)
                                                         else rest)
        argv = oarssh.agent_argv(row["node"], verb, row["domain"], *args, tty=tty,
                                 module="oarcloud_lib.node.access")
        conn.close()
        os.execvp(argv[0], argv)
    return run


def _power(verb):
    def run(conn, user, name):
        row = lifecycle.reachable(conn, user, name)
        node, domain = row["node"], row["domain"]
        with joblog.recording(conn, row["job_id"]):
            LOG.info("%s %s (%s) on %s, asked by %s", verb, name, domain, node, user)
            state = LOCAL.out(oarssh.agent_argv(node, verb, domain), timeout=120).strip()
            instances.set_state(conn, domain, "running" if state == "running" else "stopped")
        return Done("%s: %s" % (name, state), instance=name, state=state)
    return run


def resize(conn, user, name, cores, memory):
    from oarcloud_lib.service import resize as resizing
    out = resizing.resize(conn, user, name,
                          None if cores == "-" else resizing.parse_cores(cores),
                          None if memory == "-" else resizing.parse_memory(memory))
    change = resizing.describe(out["before"], out["after"])
    line = {"resized": "%s resized: %s" % (name, change),
            "at next start": "%s: %s at its next start (it is stopped)" % (name, change),
            "unchanged": "%s already has %d core(s) and %d MiB" % (
                name, out["before"]["cores"], out["before"]["memory"] >> 20),
            "infeasible": "%s: resize infeasible: %s" % (name, out["reason"])}[out["status"]]
    if out["cpus"] and out["status"] == "resized":
        line += " (CPUs %s)" % out["cpus"]
    return Done(line, code=1 if out["status"] == "infeasible" else 0, **out)


def alloc_launch(conn, user, alloc, *types):
    from oarcloud_lib.service import allocations
    is_admin(conn, user)  # an account, or Refused
    spec = jobspec.parse_types(list(types))
    if spec is None:
        raise Refused(detail="alloc-launch takes the launch's cloud job types")
    rows = allocations.launch_in(conn, user, alloc, spec)
    return json.dumps(rows, default=str)


def alloc_remove(conn, user, name):
    from oarcloud_lib.service import allocations
    row = lifecycle.find(conn, user, name)
    if row["state"] in ("deleted", "failed"):
        raise NotFound(what="instance", name=name)
    alloc = allocations.of_instance(conn, row)
    if alloc is None:
        raise Refused(detail="%s is not in an allocation (oarcloud delete ends its job)" % name)
    allocations.remove(conn, user, row)
    return Done("deleted %s from allocation %s" % (name, alloc), name=name, allocation=alloc,
                job_id=row["job_id"], deleted=True)


# -- scaling groups (service.groups; the monitor scales them) --------------------------

def _group_spec(verb):
    try:
        spec = json.loads(_stdin())
    except ValueError:
        raise Refused(detail="%s reads a JSON object on stdin" % verb) from None
    if not isinstance(spec, dict):
        raise Refused(detail="%s reads a JSON object on stdin" % verb)
    return spec


def _group_done(line, group):
    from oarcloud_lib.service import groups
    shown = groups.describe_public(group)
    return Done(line, **shown)


def group_create(conn, user):
    from oarcloud_lib.service import groups
    is_admin(conn, user)  # an account, or Refused
    row = groups.create(conn, user, _group_spec("group-create"))
    return _group_done("group %s created: %d to %d, desired %d%s; the monitor brings its "
                       "members" % (row["name"], row["min_size"], row["max_size"],
                                    row["desired"], ", in allocation %s" % row["alloc"]
                                    if row["alloc"] else ""), groups.show(conn, user,
                                                                          row["name"]))


def group_set(conn, user, name):
    from oarcloud_lib.service import groups
    row = groups.change(conn, user, name, _group_spec("group-set"))
    return _group_done("group %s: %d to %d, desired %d%s" % (
        name, row["min_size"], row["max_size"], row["desired"],
        ", target %s=%g" % (row["target_metric"], row["target_value"])
        if row["target_metric"] else ""), groups.show(conn, user, name))


def group_schedule(conn, user, name):
    from oarcloud_lib.service import groups
    row = groups.schedule(conn, user, name, _group_spec("group-schedule"))
    when = "cron '%s'" % row["cron"] if row["cron"] else "at %s" % row["at"].astimezone(
    ).strftime("%Y-%m-%d %H:%M")
    sizes = ", ".join("%s %d" % (k.replace("_size", ""), row[k])
                      for k in ("desired", "min_size", "max_size") if row[k] is not None)
    return Done("group %s: schedule %d, %s: %s" % (name, row["id"], when, sizes),
                group=name, id=row["id"], cron=row["cron"],
                at=row["at"].isoformat(timespec="seconds") if row["at"] else None,
                desired=row["desired"], min_size=row["min_size"], max_size=row["max_size"])


def group_rule_add(conn, user, name):
    from oarcloud_lib.catalog import groups as rows
    from oarcloud_lib.service import groups
    row = groups.add_rule(conn, user, name, _group_spec("group-rule-add"))
    return Done("group %s: rule %d, %s" % (name, row["id"], rows.describe_rule(row)),
                group=name, id=row["id"], condition=rows.describe_rule(row),
                **{k: row[k] for k in ("metric", "agg", "op", "threshold", "periods",
                                       "change")})


def group_rule_delete(conn, user, name, rule_id):
    from oarcloud_lib.service import groups
    groups.delete_rule(conn, user, name, rule_id)
    return Done("group %s: rule %s deleted" % (name, rule_id), group=name, id=int(rule_id),
                deleted=True)


def group_protect(conn, user, name, member, *off):
    from oarcloud_lib.service import groups
    if off not in ((), ("off",)):
        raise Refused(detail="group protect: NAME MEMBER [off]")
    on = off != ("off",)
    changed = groups.protect(conn, user, name, member, on)
    return Done("group %s: member %s %s%s" % (name, member, "protected" if on else
                                             "no longer protected",
                                             "" if changed else " (nothing changed)"),
                group=name, member=member, protected=on, changed=changed)


def group_unschedule(conn, user, name, sched_id):
    from oarcloud_lib.service import groups
    groups.unschedule(conn, user, name, sched_id)
    return Done("group %s: schedule %s removed" % (name, sched_id), group=name,
                id=int(sched_id), deleted=True)


def group_delete(conn, user, name):
    from oarcloud_lib.service import groups
    gone = groups.delete(conn, user, name)
    return Done("group %s deleted%s" % (name, " with its members %s" % ", ".join(gone)
                                        if gone else ""),
                name=name, deleted=True, members=gone)


# -- load balancers (server.balancers; HAProxy on this server) --------------------------

def _lb_public(conn, lb):
    from oarcloud_lib.server import balancers
    out = balancers.describe(conn, lb)
    out = {k: v for k, v in out.items() if k not in ("id", "group_id", "check_kind",
                                                    "check_path")}
    out["created"] = out["created"].isoformat(timespec="seconds")
    out["metrics"] = metrics.last_values(conn, "lb", lb["id"])
    return out


def lb_create(conn, user, name, group, port, check, algorithm):
    from oarcloud_lib.server import balancers
    is_admin(conn, user)  # an account, or Refused
    if not port.isdigit():
        raise Refused(detail="bad --port %r: a port from 1 to 65535" % port[:20])
    lb = balancers.create(conn, user, name, group, int(port), check, algorithm)
    out = _lb_public(conn, lb)
    return Done("balancer %s of group %s: %s -> members' port %d (%s checks, %s)" % (
        name, group, out["address"], lb["port"], out["check"], lb["algorithm"]), **out)


def lb_delete(conn, user, name):
    from oarcloud_lib.server import balancers
    balancers.delete(conn, user, name)
    return Done("balancer %s deleted" % name, name=name, deleted=True)


def lb_show(conn, user, name):
    from oarcloud_lib.server import balancers
    return json.dumps(_lb_public(conn, balancers.get(conn, user, name)), sort_keys=True,
                      default=str)


def lb_list(conn, user):
    from oarcloud_lib.server import balancers
    return json.dumps([_lb_public(conn, lb) for lb in balancers.owned(conn, user)],
                      sort_keys=True, default=str)


# -- nodes, for operators (server.nodeops; admins have oarcloud-admin node) ---------------

def node_list(conn, user):
    from oarcloud_lib.server import nodeops
    require_role(conn, user, accounts.SEE_ALL, "see the site's nodes")
    return json.dumps(nodeops.inventory(conn), sort_keys=True, default=str)


def node_show(conn, user, host):
    from oarcloud_lib.server import nodeops
    require_role(conn, user, accounts.SEE_ALL, "see the site's nodes")
    hosts = oar.OarServer().nodes()
    nodeops.check_host(host, hosts)
    return json.dumps(nodeops.inventory(conn, {host: hosts[host]})[0], sort_keys=True,
                      default=str)


def node_drain(conn, user, host, deadline=None):
    from oarcloud_lib.server import nodeops
    require_role(conn, user, accounts.OPERATE, "drain nodes")
    when = nodeops.parse_deadline(deadline, time.time()) if deadline else None
    out = nodeops.drain(conn, host, when)
    LOG.info("node %s drained by %s (deadline %s)", host, user, out["deadline"])
    return Done("node %s %s%s; %d instance(s) there, %d owner notification(s)" % (
        host, "drained" if out["changed"] else "already drained, nothing changed",
        ", jobs there end at %s" % out["deadline"] if out["deadline"] else "",
        len(out["instances"]), out["told"]), **out)


def node_undrain(conn, user, host):
    from oarcloud_lib.server import nodeops
    require_role(conn, user, accounts.OPERATE, "undrain nodes")
    was = nodeops.undrain(conn, host)
    LOG.info("node %s undrained by %s", host, user)
    return Done("node %s %s" % (host, "back in service" if was else "was not drained"),
                node=host, drained=False, changed=bool(was))


# -- API tokens (catalog.tokens; the web service and HTTP API) ----------------------------

def _token_public(row):
    return {"name": row["name"], "hint": row["hint"] + "...", "created": row["created"],
            "last_used": row["last_used"]}


def token_create(conn, user, name):
    from oarcloud_lib.catalog import tokens
    from oarcloud_lib.web import service as web
    is_admin(conn, user)  # an account, or Refused
    row, token = tokens.create(conn, user, name)
    return Done("token %s: %s\n(shown once; log in at %s or send it as "
                "`Authorization: Bearer TOKEN`)" % (name, token, web.url()),
                token=token, url=web.url(), **_token_public(row))


def token_list(conn, user):
    from oarcloud_lib.catalog import tokens
    return json.dumps([_token_public(r) for r in tokens.listing(conn, user)], sort_keys=True,
                      default=str)


def token_revoke(conn, user, name):
    from oarcloud_lib.catalog import tokens
    tokens.revoke(conn, user, name)
    return Done("token %s revoked" % name, name=name, revoked=True)


MANY = 1 << 16  # exec's command line
EXEC_FAILED = 125
# verb -> (function, fewest arguments, most arguments).  Each function gets the
# catalog, the caller and the verb's arguments; it returns what to print (and
# the exit code, 0 unless it says otherwise).
VERBS = {
    "image-import": (image_import, 1, 2), "image-save": (image_save, 2, 3),
    "image-save-retry": (image_save_retry, 1, 2), "image-save-discard": (image_save_discard, 1, 1),
    "image-share": (image_share, 2, 3), "image-publish": (image_publish, 1, 1),
    "image-delete": (image_delete, 1, 1), "image-build": (image_build, 2, 2),
    "net-create": (net_create, 2, 3), "net-delete": (net_delete, 1, 1),
    "net-rule-add": (net_rule_add, 5, 5), "net-rule-del": (net_rule_del, 2, 2),
    "net-expose": (net_expose, 3, 4), "net-unexpose": (net_unexpose, 3, 3),
    "net-vpn": (net_vpn, 2, 3), "net-vpn-revoke": (net_vpn_revoke, 2, 2),
    "net-share": (net_share, 2, 3), "quota": (quota, 0, 0),
    "node-list": (node_list, 0, 0), "node-show": (node_show, 1, 1),
    "node-drain": (node_drain, 1, 2), "node-undrain": (node_undrain, 1, 1),
    "key-add": (key_add, 0, 0), "key-del": (key_del, 1, 1),
    "user-data-put": (user_data_put, 0, 0), "files-put": (files_put, 0, 0),
    "volume-create": (_volume("create"), 2, 3), "volume-delete": (_volume("delete"), 1, 1),
    "volume-resize": (_volume("resize"), 2, 2), "volume-snapshot": (_volume("snapshot"), 2, 2),
    "volume-share": (_volume("share"), 2, 3), "volume-attach": (_volume("attach"), 3, 4),
    "volume-detach": (_volume("detach"), 2, 2),
    "alarm-create": (alarm_create, 0, 0), "alarm-delete": (alarm_delete, 1, 1),
    "notify-add": (notify_add, 0, 0), "notify-del": (notify_del, 0, 0),
    "notify-test": (notify_test, 0, 0),
    "admit": (admit, 2, 1024),
    "exec": (_interactive("exec"), 1, MANY), "console": (_interactive("console"), 1, 1),
    "console-log": (_interactive("console-log"), 1, 1),
    "proxy": (_interactive("proxy"), 1, 2),
    "start": (_power("start"), 1, 1), "stop": (_power("stop"), 1, 1),
    "reboot": (_power("reboot"), 1, 1), "resize": (resize, 3, 3),
    "alloc-launch": (alloc_launch, 2, 256), "alloc-remove": (alloc_remove, 1, 1),
    "group-create": (group_create, 0, 0), "group-set": (group_set, 1, 1),
    "group-delete": (group_delete, 1, 1), "group-schedule": (group_schedule, 1, 1),
    "group-unschedule": (group_unschedule, 2, 2), "group-protect": (group_protect, 2, 3),
    "group-rule-add": (group_rule_add, 1, 1), "group-rule-delete": (group_rule_delete, 2, 2),
    "lb-create": (lb_create, 5, 5), "lb-delete": (lb_delete, 1, 1), "lb-show": (lb_show, 1, 1),
    "lb-list": (lb_list, 0, 0),
    "token-create": (token_create, 1, 1), "token-list": (token_list, 0, 0),
    "token-revoke": (token_revoke, 1, 1),
}


# What a viewer (catalog.accounts.ROLES: sees everything, changes nothing)
# may ask of the broker: reading, and their own API tokens for the dashboard.
VIEWER_VERBS = {"quota", "node-list", "node-show", "lb-show", "lb-list", "token-create",
                "token-list", "token-revoke"}


def check_role(conn, user, verb):
    """Refuse a viewer's verbs that would change or create something."""
    if accounts.role(conn, user) == "viewer" and verb not in VIEWER_VERBS:
        raise Forbidden(detail="%s is a viewer: it reads, it does not %s" % (
            user, verb.replace("-", " ")))


class Done:
    """A verb's answer: a line for people, what it created or changed for
    --json (data), and its exit code."""

    def __init__(self, line, code=0, **data):
        self.line, self.code, self.data = line, code, data

    def said(self, as_json):
        return json.dumps(self.data, sort_keys=True, default=str) if as_json else self.line


def main(argv):
    commands.root_entry(paths.ROOT_PATH)
    # Warnings on the terminal; the job's events (INFO) go to the catalog.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, handlers=[stderr], format="%(message)s")
    as_json = argv[:1] == ["--json"]
    argv = argv[1:] if as_json else argv
    verb = argv[0] if argv else ""
    if verb not in VERBS or not VERBS[verb][1] <= len(argv) - 1 <= VERBS[verb][2]:
        print(__doc__, file=sys.stderr)
        return 2
    run = VERBS[verb][0]
    try:
        user = caller()
        with db.connect() as conn:
            check_role(conn, user, verb)
            out = run(conn, user, *argv[1:])
        if isinstance(out, Done):
            out = out.said(as_json), out.code
        out, code = out if isinstance(out, tuple) else (out, 0)
        print(out)
        return code
    except Exception as e:  # noqa: BLE001 -- ours, or a library's / the OS's in one line
        ours = e if isinstance(e, OarcloudError) else from_foreign(e)
        if ours is None:
            raise
        print("oarcloud %s: error: %s" % (verb.replace("-", " "), ours), file=sys.stderr)
        # exec passes its command's exit code through: its own failures are 125.
        return EXEC_FAILED if verb == "exec" else ours.exit_code


if __name__ == "__main__":
    commands.exit_now(main(sys.argv[1:]))
