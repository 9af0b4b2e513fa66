"""oarcloud-admin: the site administrator's command (runs as root)."""
import sys

from plumbum import cli

from oarcloud_cli.common import (VERSION, Changes, Command, Group, deletes, is_root, iso,
                                 machine, print_json, print_node, print_nodes,
                                 print_quota, print_table,
                                 run_quietly_piped, said, setup_steps)
from oarcloud_cli.monitoring import (AlarmCreate, AlarmList, AlarmShow, NotifyList, NotifyLog,
                                     read_url, show_metrics)


class Admin(Group):
    """Administer an oarcloud site: server and node setup, the lab, accounts."""

    PROGNAME = "oarcloud-admin"
    VERSION = VERSION

    def main(self, *args):
        code = super().main(*args)
        if code:
            return code
        if not is_root():
            print("oarcloud-admin: error: must run as root "
                  "(it configures OAR, PostgreSQL, nodes and accounts)", file=sys.stderr)
            return 2


# -- setup -----------------------------------------------------------------

@Admin.subcommand("setup")
class Setup(Group):
    """Install and configure oarcloud on this machine (server or node); idempotent."""


@Setup.subcommand("server")
class SetupServer(Changes, Command):
    """PostgreSQL, the OAR server (hooks, admission rule, cloud property) and the catalog.

    A second run changes nothing and says so.
    """

    address = cli.SwitchAttr(["--address"], str, default="127.0.0.1",
                             help="address the nodes use to reach this server (DB, OAR)")
    nodes_cidr = cli.SwitchAttr(["--nodes-cidr"], str, default="",
                                help="network the nodes connect from (PostgreSQL access)")

    def run_command(self):
        from oarcloud_lib.server import serversetup
        setup_steps(self.json, "setup server", lambda progress: serversetup.setup_server(
            self.address, self.nodes_cidr, progress=progress))


@Setup.subcommand("node")
class SetupNode(Changes, Command):
    """oar-node sshd, Open vSwitch (br-int, underlay bridge), libvirtd (LXC), the hooks,
    and this node's resources in OAR with cloud=YES.  Run on the node, as root.
    """

    name = cli.SwitchAttr(["--name"], str, help="node name in OAR (default: hostname)")
    cores = cli.SwitchAttr(["--cores"], cli.Range(1, 1024), help="cores to offer (default: all)")
    underlay_if = cli.SwitchAttr(["--underlay-if"], str,
                                 help="interface carrying the node's cluster address; it and "
                                      "its addresses move onto the OVS underlay bridge br-phy")

    def run_command(self):
        from oarcloud_lib.node import nodesetup
        setup_steps(self.json, "setup node", lambda progress: nodesetup.setup_node(
            self.name, self.cores, self.underlay_if, progress=progress))


# -- lab -------------------------------------------------------------------

@Admin.subcommand("lab")
class LabCmd(Group):
    """The all-in-one lab: this machine as the OAR server plus N emulated nodes."""


@LabCmd.subcommand("up")
class LabUp(Changes, Command):
    """Set up the server here and N emulated nodes (namespaces), each running the real
    node setup; builds the `tiny` image.  A second run changes nothing."""

    nodes = cli.SwitchAttr(["-n", "--nodes"], int, default=2, help="number of emulated nodes")
    cores = cli.SwitchAttr(["--cores"], int, default=2, help="cores each node offers to OAR")
    with_debian = cli.Flag(["--with-debian"], help="also build the `bookworm` image (debootstrap)")

    def run_command(self):
        from oarcloud_lib import lab
        setup_steps(self.json, "lab up", lambda progress: lab.Lab().up(
            self.nodes, self.cores, with_debian=self.with_debian, progress=progress))


@LabCmd.subcommand("down")
class LabDown(Changes, Command):
    """Stop everything the lab started and put the machine back as it was."""

    def run_command(self):
        from oarcloud_lib import lab
        setup_steps(self.json, "lab down", lambda progress: lab.Lab().down(progress=progress))


@LabCmd.subcommand("status")
class LabStatus(Command):
    """Daemons of the server and of each node (pid, or - when not running)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib import lab
        status = lab.Lab().status()
        if self.json:
            print_json(status)
            return 0 if status["lab"] == "up" else 3
        if status["lab"] == "down":
            print("lab: down")
            return 3
        print("server: " + "  ".join("%s=%s" % (k, v or "-") for k, v in status["server"].items()))
        rows = [dict(node=n, **{k: (",".join(v) if isinstance(v, list) else v or "-")
                                for k, v in s.items()}) for n, s in status["nodes"].items()]
        keys = ["node", "ip", "oar_state", "namespace", "oar-node-sshd", "ovsdb-server",
                "ovs-vswitchd", "virtlogd", "libvirtd", "lxcfs", "consoles"]
        print_table(rows, [(k, k) for k in keys])
        return 0


@LabCmd.subcommand("exec")
class LabExec(Command):
    """Run a command inside an emulated node: lab exec NODE -- CMD..."""

    def run_command(self, node, *argv):
        from oarcloud_lib import lab
        if not argv:
            print("usage: oarcloud-admin lab exec NODE -- CMD...", file=sys.stderr)
            return 2
        return lab.Lab().node_runner(node).passthrough(list(argv))


# -- accounts --------------------------------------------------------------

@Admin.subcommand("user")
class UserCmd(Group):
    """Accounts: a Unix account OAR accepts, an SSH key pair, a role."""


@UserCmd.subcommand("add")
class UserAdd(Changes, Command):
    """Create (or adopt) the Unix account NAME and register it; idempotent."""

    key = cli.SwitchAttr(["--key"], cli.ExistingFile,
                         help="public key file for reaching instances (default: generate a pair)")
    admin = cli.Flag(["--admin"], help="give the account the admin role (as --role admin)")
    role = cli.SwitchAttr(["--role"], cli.Set("user", "admin", "operator", "viewer"),
                          excludes=["--admin"],
                          help="user (default), admin, operator (node operations, sees "
                               "everything) or viewer (sees everything, changes nothing); "
                               "changes an existing account's")

    def run_command(self, name):
        from oarcloud_lib.service import accounts
        acc, changed = accounts.add(name, key_file=self.key, admin=self.admin, role=self.role)
        said(self.json, dict(acc, changed=bool(changed)), "user %s %s (role %s, key %s)" % (
            acc["name"], "added" if changed else "already exists, nothing changed",
            acc["role"], acc["key_fingerprint"]))


@UserCmd.subcommand("list")
class UserList(Command):
    """Accounts known to oarcloud."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import accounts
        rows = accounts.list_accounts()
        if self.json:
            print_json(rows)
        else:
            print_table(rows, [("name", "NAME"), ("uid", "UID"), ("role", "ROLE"),
                               ("key_fingerprint", "KEY"), ("created", "CREATED")])


@deletes(UserCmd)
class UserDel(Changes, Command):
    """Delete an account: its OAR jobs, its catalog entries, and the Unix account
    if oarcloud created it."""

    def run_command(self, name):
        from oarcloud_lib.service import accounts
        accounts.delete(name)
        said(self.json, {"name": name, "deleted": True}, "user %s deleted" % name)


# -- quotas -----------------------------------------------------------------------

@Admin.subcommand("quota")
class QuotaCmd(Group):
    """Limits on what each account holds at once (docs/quotas.md): checked where
    every object is created, counted from what is live."""


def _limit_switch(resource, unit):
    from oarcloud_lib.catalog import quotas  # light: no catalog connection
    return cli.SwitchAttr(["--" + resource], str, argname=unit,
                          help="most %s (none clears it)" % quotas.RESOURCES[resource][0])


@QuotaCmd.subcommand("set")
class QuotaSet(Command):
    """Set limits of USER, of @GROUP (what its members hold together, on top of
    each one's own limits), or with --default every account's default (an
    account's own limit wins).  Sizes take K, M, G or T; `none` clears a
    limit.  Idempotent: says what changed.  Lowering a limit below what is used
    ends nothing; it refuses new creations until use falls below it."""

    default = cli.Flag(["--default"], help="the site's default for every account")
    json = cli.Flag(["--json"], help="machine-readable output")
    instances = _limit_switch("instances", "N")
    cores = _limit_switch("cores", "N")
    memory = _limit_switch("memory", "SIZE")
    disk = _limit_switch("disk", "SIZE")
    images_bytes = _limit_switch("images-bytes", "SIZE")
    volumes_bytes = _limit_switch("volumes-bytes", "SIZE")
    networks = _limit_switch("networks", "N")
    published_ports = _limit_switch("published-ports", "N")
    vpn_clients = _limit_switch("vpn-clients", "N")
    alarms = _limit_switch("alarms", "N")
    targets = _limit_switch("targets", "N")
    group_size = _limit_switch("group-size", "N")

    def run_command(self, *user):
        from oarcloud_lib.catalog import db, quotas
        if len(user) != (0 if self.default else 1):
            print("oarcloud-admin: give either USER, @GROUP or --default (see --help)",
                  file=sys.stderr)
            return 2
        account = user[0] if user else None
        asked = {r: getattr(self, r.replace("-", "_")) for r in quotas.RESOURCES}
        changes = {r: quotas.parse_limit(r, v) for r, v in asked.items() if v is not None}
        if not changes:
            print("oarcloud-admin: nothing to set: give at least one of %s (see --help)"
                  % ", ".join("--" + r for r in quotas.RESOURCES), file=sys.stderr)
            return 2
        with db.connect() as conn:
            done = quotas.set_limits(conn, account, changes)
        who = account or "the site's default"
        if self.json:
            print_json({"account": account or "*", "changed": [
                {"resource": r, "old": old, "new": new} for r, old, new in done]})
        elif not done:
            print("quota of %s: nothing changed" % who)
        else:
            print("quota of %s: %s" % (who, ", ".join(
                "%s %s -> %s" % (r, quotas.shown(r, old), quotas.shown(r, new))
                for r, old, new in done)))


@QuotaCmd.subcommand("show")
class QuotaShow(Command):
    """What USER uses next to their limits, and who set each limit; for @GROUP,
    what its members use together next to the group's limits."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, user):
        from oarcloud_lib.catalog import accounts, db, quotas
        from oarcloud_lib.errors import NotFound
        if user.startswith("@"):
            with db.connect() as conn:
                print_quota(quotas.group_report(conn, user[1:]), self.json)
            return
        accounts.check_name(user)
        with db.connect() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = %s", (user,)).fetchone() is None:
                raise NotFound(what="oarcloud user", name=user)
            print_quota(quotas.report(conn, user), self.json)


@QuotaCmd.subcommand("list")
class QuotaList(Command):
    """Every limit set: the site's defaults (account *), each account's own and
    each group's (@GROUP)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db, quotas
        with db.connect() as conn:
            rows = quotas.listing(conn)
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("account", "ACCOUNT"), ("resource", "RESOURCE"),
                               ("max_h", "LIMIT")])


Admin.subcommand("usergroup", "oarcloud_cli.admin_access.UsergroupCmd")
Admin.subcommand("nodeset", "oarcloud_cli.admin_access.NodesetCmd")


# -- nodes ------------------------------------------------------------------------

@Admin.subcommand("node")
class NodeCmd(Group):
    """Nodes as OAR and oarcloud see them: list, show, drain, undrain, heal."""


@NodeCmd.subcommand("heal")
class NodeHeal(Command):
    """Sweep HOST... (remove instances of jobs not running there, check libvirt and
    Open vSwitch) and set each sound node Alive in OAR.  What OAR's healing hook
    does for Suspected nodes, run once, now; idempotent."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, *hosts):
        from oarcloud_lib.server import healing
        from oarcloud_lib.errors import Refused
        if not hosts or not all(healing.HOST_OK.match(h) for h in hosts):
            raise Refused(detail="give one or more node names")
        out = {h: healing.heal_once(h) for h in hosts}
        if self.json:
            print_json([{"node": h, "healthy": not p, "problems": p} for h, p in out.items()])
        else:
            for h, p in out.items():
                print("%s: %s" % (h, "Alive (clean and sound)" if not p else "; ".join(p)))
        return 0 if not any(out.values()) else 1


@NodeCmd.subcommand("list")
class NodeList(Command):
    """Every node in OAR: its state, drain (and deadline), cores used and free,
    instances, memory in use (the monitor's last reading) and image cache."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        with db.connect() as conn:
            rows = nodeops.inventory(conn)
        print_nodes(rows, self.json)
        return 0


@NodeCmd.subcommand("show")
class NodeShow(Command):
    """One node: what `node list` says, with its jobs and its instances."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, host):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        from oarcloud_lib.tools import oar
        hosts = oar.OarServer().nodes()
        nodeops.check_host(host, hosts)
        with db.connect() as conn:
            (row,) = nodeops.inventory(conn, {host: hosts[host]})
        print_node(row, self.json)
        return 0


@NodeCmd.subcommand("drain")
class NodeDrain(Command):
    """Take HOST out of service: OAR schedules no new job on any of its
    resources; what runs there goes on, and the owners of its instances are
    told.  With --deadline, jobs still there then are ended (never before).
    Idempotent; `node undrain` puts it back."""

    deadline = cli.SwitchAttr(["--deadline"], str, argname="WHEN",
                              help="30m, 2h, 1d from now, or a time (2026-12-24T08:00, UTC)")
    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, host):
        import time

        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        deadline = nodeops.parse_deadline(self.deadline, time.time()) if self.deadline else None
        with db.connect() as conn:
            out = nodeops.drain(conn, host, deadline)
        if self.json:
            print_json(out)
        else:
            print("node %s %s%s; %d instance(s) there, %d owner notification(s)" % (
                host, "drained" if out["changed"] else "already drained, nothing changed",
                ", jobs there end at %s" % out["deadline"] if out["deadline"] else "",
                len(out["instances"]), out["told"]))


@NodeCmd.subcommand("add")
class NodeAdd(Changes, Command):
    """Add HOST to OAR as a cloud node: one resource per core (cloud=YES and
    the --property values), Alive once its node agent answers through OAR's
    ssh (run `oarcloud-admin setup node` on it first).  Idempotent: again, it
    adds only what is missing and says what changed."""

    cores = cli.SwitchAttr(["--cores"], cli.Range(1, 1024), default=1,
                           help="its cores (OAR resources; default 1)")
    properties = cli.SwitchAttr(["--property"], str, list=True, argname="NAME=VALUE",
                                help="an OAR property of its resources (repeatable; the "
                                     "property must exist: oarproperty -a NAME)")

    def run_command(self, host):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        with db.connect() as conn:
            out = nodeops.add(conn, host, self.cores, list(self.properties))
        said(self.json, out, "node %s: %s; %d core(s) in OAR, %s%s" % (
            host, "%d resource(s) added" % out["added"] if out["added"] else
            "changed" if out["changed"] else "already there, nothing changed", out["cores"],
            out["state"], "" if out["reachable"] else " (its agent does not answer: run "
            "`oarcloud-admin setup node` on it, then node add again)"))


@NodeCmd.subcommand("remove")
class NodeRemove(Changes, Command):
    """Remove HOST from OAR (its resources, drain and maintenance windows).
    Refused while jobs run there; --force drains it, ends its jobs now and
    removes it once they have ended."""

    force = cli.Flag(["--force"], help="end what runs there now, then remove it")

    def run_command(self, host):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        with db.connect() as conn:
            out = nodeops.remove(conn, host, self.force)
        said(self.json, out, "node %s removed (%d resource(s)%s)" % (
            host, out["resources"], ", jobs ended: %s" % ", ".join(map(str, out["ended"]))
            if out["ended"] else ""))


@NodeCmd.subcommand("maintenance")
class NodeMaintenance(Changes, Command):
    """A maintenance window on HOST: from --at for --for, an advance
    reservation of the whole host in OAR, so that OAR schedules no job there
    that would still run then (refused when jobs already hold it then).
    --cancel removes its windows; without --at, lists them."""

    at = cli.SwitchAttr(["--at"], str, argname="WHEN",
                        help="30m, 2h, 1d from now, or a time (2026-12-24T08:00, UTC)")
    span = cli.SwitchAttr(["--for"], str, argname="DURATION", help="1m to 30d (4h, 2d)")
    cancel = cli.Flag(["--cancel"], excludes=["--at", "--for"], help="cancel its windows")

    def run_command(self, host):
        import time

        from oarcloud_lib.catalog import db
        from oarcloud_lib.errors import Refused
        from oarcloud_lib.server import nodeops
        with db.connect() as conn:
            if self.cancel:
                jobs = nodeops.cancel_maintenance(conn, host)
                said(self.json, {"node": host, "cancelled": jobs, "changed": bool(jobs)},
                     "node %s: %s" % (host, "maintenance cancelled (reservation %s)" % ", ".join(
                         map(str, jobs)) if jobs else "no maintenance window, nothing changed"))
                return 0
            if self.at is None and self.span is None:
                rows = nodeops.windows(conn, host)
                if self.json:
                    print_json(rows)
                else:
                    print_table(rows, [("node", "NODE"), ("starts", "STARTS"), ("ends", "ENDS"),
                                       ("job_id", "OAR JOB")])
                return 0
            if not (self.at and self.span):
                raise Refused(detail="give both --at and --for (or --cancel)")
            at = nodeops.parse_deadline(self.at, time.time())
            out = nodeops.maintenance(conn, host, at, nodeops.parse_span(self.span))
        said(self.json, out, "node %s: maintenance from %s to %s%s" % (
            host, out["starts"][:16], out["ends"][:16], " (OAR reservation %d)" % out["job_id"]
            if out["changed"] else ", already planned, nothing changed"))


@NodeCmd.subcommand("update")
class NodeUpdate(Command):
    """Rolling OS update of nodes (docs/nodes.md): each node drained, its
    jobs waited for (or ended at --drain-deadline), or with --reserve its
    earliest free gap reserved in OAR and waited for, the --command run on it
    (sh -e, as root), its health checked, then back in service; at most
    --max-unavailable nodes out at once, never below --min-capacity % of the
    cores in service.  Once --max-failures nodes fail, the run stops: the
    failed stay drained, the rest untouched.  Progress as it goes; Ctrl-C
    leaves it resumable (`node update resume`).  Also: `node update status`,
    `node update cancel`."""

    every = cli.Flag(["--all"], excludes=["--nodes"], help="every node OAR has, by name")
    nodes = cli.SwitchAttr(["--nodes"], str, argname="A,B", help="these nodes, in this order")
    command = cli.SwitchAttr(["--command"], str, argname="CMD",
                             help="what updates a node (sh -e, as root, on the node)")
    image = cli.SwitchAttr(["--image"], str, argname="NODE_IMAGE",
                           help="a node root image to swap in (not available yet)")
    max_unavailable = cli.SwitchAttr(["--max-unavailable"], cli.Range(1, 1024), default=1,
                                     help="nodes out of service at once (default 1)")
    min_capacity = cli.SwitchAttr(["--min-capacity"], str, default="50%", argname="P%",
                                  help="cores in service never below this share of all "
                                       "cores (default 50%%)")
    max_failures = cli.SwitchAttr(["--max-failures"], cli.Range(1, 1024), default=1,
                                  help="failed nodes that stop the run (default 1)")
    drain_deadline = cli.SwitchAttr(["--drain-deadline"], str, argname="DURATION",
                                    help="end a drained node's jobs after this (30m, 2h); "
                                         "default: wait for them to end")
    reserve = cli.SwitchAttr(["--reserve"], str, argname="DURATION",
                             excludes=["--drain-deadline"],
                             help="instead of a drain, reserve each node's earliest gap of "
                                  "this length (an OAR advance reservation: jobs that end "
                                  "before it still run there meanwhile), e.g. 30m")
    json = cli.Flag(["--json"], help="machine-readable output: the run's status at the end")

    def run_command(self):
        if self.nested_command:
            return None
        from oarcloud_lib.catalog import db
        from oarcloud_lib.errors import Refused
        from oarcloud_lib.server import nodeops, updates
        if self.image:
            raise Refused(detail="--image is not available yet: give --command")
        if not self.command or not (self.every or self.nodes):
            raise Refused(detail="give --all or --nodes A,B, and --command CMD")
        floor = self.min_capacity.rstrip("%")
        if not floor.isdigit() or not 0 <= int(floor) <= 100:
            raise Refused(detail="bad --min-capacity %r: a percentage from 0%% to 100%%"
                                 % self.min_capacity)
        deadline = nodeops.parse_span(self.drain_deadline) if self.drain_deadline else None
        reserve = nodeops.parse_span(self.reserve) if self.reserve else None
        nodes = None if self.every else [n.strip() for n in self.nodes.split(",") if n.strip()]
        with db.connect() as conn:
            run_id = updates.start(conn, nodes, self.command, self.max_unavailable, int(floor),
                                   self.max_failures, deadline, reserve=reserve)
            return _drive(self, conn, run_id)


def _drive(cmd, conn, run_id):
    import sys

    from oarcloud_lib.server import updates
    say = (lambda text: print(text, file=sys.stderr)) if cmd.json else print
    say("node update: run %d" % run_id)
    st = updates.drive(conn, run_id, say=say)
    if cmd.json:
        print_json(machine(st))
    return 0 if st["state"] == "done" else 1


@NodeUpdate.subcommand("resume")
class NodeUpdateResume(Command):
    """Carry the stopped run on from where it stopped (its failed nodes stay
    failed and drained; its failures so far no longer count)."""

    json = cli.Flag(["--json"], help="machine-readable output: the run's status at the end")

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import updates
        with db.connect() as conn:
            run = updates._run(conn)
            run_id = updates.resume(conn) if run["state"] == "stopped" else run["id"]
            return _drive(self, conn, run_id)


@NodeUpdate.subcommand("cancel")
class NodeUpdateCancel(Changes, Command):
    """Cancel the run that is not over: no other node is started; the nodes
    it drained and did not fail are undrained."""

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import updates
        with db.connect() as conn:
            run_id = updates.cancel(conn)
        said(self.json, {"run": run_id, "cancelled": True}, "run %d cancelled" % run_id)


@NodeUpdate.subcommand("status")
class NodeUpdateStatus(Command):
    """The last run: its state, each node's step and error, and the lowest
    capacity in service it went through."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import updates
        with db.connect() as conn:
            st = updates.status(conn)
        if self.json:
            print_json(machine(st))
            return 0
        print("run %d: %s%s; lowest capacity in service %s" % (
            st["id"], st["state"], " (%s)" % st["reason"] if st["reason"] else "",
            "%d of %d cores" % (st["lowest"], st["capacity"][0]["total"])
            if st["capacity"] else "-"))
        print_table([dict(n, error=n["error"] or "-") for n in st["nodes"]],
                    [("node", "NODE"), ("step", "STEP"), ("error", "ERROR")])
        return 0


@NodeCmd.subcommand("undrain")
class NodeUndrain(Changes, Command):
    """Put HOST back in service (idempotent)."""

    def run_command(self, host):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import nodeops
        with db.connect() as conn:
            was = nodeops.undrain(conn, host)
        said(self.json, {"node": host, "drained": False, "changed": bool(was)}, "node %s %s" % (
            host, "back in service" if was else "was not drained"))


# -- the web service and API tokens -----------------------------------------------

@Admin.subcommand("web")
class WebCmd(Group):
    """The web dashboard and JSON HTTP API (docs/web.md): HTTPS on the server
    (port 8443, a self-signed certificate unless the site gives one), one of
    the server's services that `setup server` and `lab up` start."""


def _web_state():
    from oarcloud_lib import config
    from oarcloud_lib.server import services
    from oarcloud_lib.web import service as web
    pid, conf = web.running_pid(), config.load()
    return {"running": pid is not None, "pid": pid, "url": web.url(conf),
            "enabled": services.enabled("web"),
            "certificate": web.cert_paths(conf)[0] if conf.web_tls else None}


@WebCmd.subcommand("start")
class WebStart(Changes, Command):
    """Start the web service (and keep it running); idempotent."""

    def run_command(self):
        from oarcloud_lib.server import services
        changed = services.set_enabled("web", True)
        st = _web_state()
        said(self.json, dict(st, changed=changed), "web service %s: %s (pid %d)" % (
            "started" if changed else "already running", st["url"], st["pid"]))


@WebCmd.subcommand("stop")
class WebStop(Changes, Command):
    """Stop the web service until `web start` (the other services go on)."""

    def run_command(self):
        from oarcloud_lib.server import services
        changed = services.set_enabled("web", False)
        said(self.json, dict(_web_state(), changed=changed),
             "web service stopped" if changed else "web service was not running")


@WebCmd.subcommand("status")
class WebStatus(Command):
    """Whether the web service runs, and its URL."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        st = _web_state()
        if self.json:
            print_json(st)
        else:
            print("web service: %s %s%s" % (
                "running (pid %d)," % st["pid"] if st["running"] else "not running,",
                st["url"], "" if st["enabled"] else " (stopped by an admin: web start)"))
        return 0 if st["running"] else 1


@Admin.subcommand("token")
class TokenAdmin(Group):
    """API tokens of any account (docs/web.md): an admin's, an operator's or
    a viewer's for the dashboard, or a user's on their behalf."""


@TokenAdmin.subcommand("create")
class TokenAdminCreate(Command):
    """Make token NAME for account --user; it is shown once."""

    user = cli.SwitchAttr(["--user"], str, mandatory=True, help="the account it acts as")
    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import accounts, db, tokens
        from oarcloud_lib.errors import NotFound
        from oarcloud_lib.web import service as web
        accounts.check_name(self.user)
        with db.connect() as conn:
            if accounts.get(conn, self.user) is None:
                raise NotFound(what="oarcloud user", name=self.user)
            row, token = tokens.create(conn, self.user, name)
        out = {"user": self.user, "name": name, "token": token, "url": web.url(),
               "created": iso(row["created"])}
        said(self.json, out, "token %s of %s: %s\n(shown once; log in at %s)"
             % (name, self.user, token, out["url"]))


@TokenAdmin.subcommand("list")
class TokenAdminList(Command):
    """Every account's tokens (never the tokens themselves)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.catalog.db import dicts
        with db.connect() as conn:
            rows = dicts(conn.execute("SELECT account AS user, name, hint || '...' AS hint,"
                                      " created, last_used FROM api_tokens ORDER BY account,"
                                      " name"))
        rows = [dict(r, created=iso(r["created"]), last_used=iso(r["last_used"])) for r in rows]
        if self.json:
            print_json(rows)
        else:
            print_table(rows, [("user", "USER"), ("name", "NAME"), ("hint", "TOKEN"),
                               ("created", "CREATED"), ("last_used", "LAST USED")])


@TokenAdmin.subcommand("revoke")
class TokenAdminRevoke(Changes, Command):
    """Revoke token NAME of account --user (its sessions end at once)."""

    user = cli.SwitchAttr(["--user"], str, mandatory=True, help="the account")

    def run_command(self, name):
        from oarcloud_lib.catalog import db, tokens
        with db.connect() as conn:
            tokens.revoke(conn, self.user, name)
        said(self.json, {"user": self.user, "name": name, "revoked": True},
             "token %s of %s revoked" % (name, self.user))


@Admin.subcommand("image")
class ImageAdmin(Group):
    """The site's images: every user's, builds, saves in progress."""


@ImageAdmin.subcommand("list")
class ImageAdminList(Command):
    """Every image in the catalog, private ones included."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db, images
        from oarcloud_cli.user_images import IMAGE_COLUMNS, _public
        with db.connect() as conn:
            rows = [_public(r) for r in images.list_usable(conn)]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, IMAGE_COLUMNS)


@ImageAdmin.subcommand("build")
class ImageAdminBuild(Changes, Command):
    """Build a public Debian image with debootstrap (minbase, sshd under tini).
    Idempotent: an image already built and in the store is left as it is."""

    debootstrap = cli.SwitchAttr(["--debootstrap"], str, mandatory=True,
                                 help="Debian suite, e.g. bookworm")
    name = cli.SwitchAttr(["--name"], str, mandatory=True, help="the image's name")
    mirror = cli.SwitchAttr(["--mirror"], str, help="Debian mirror (default: apt's)")

    def run_command(self):
        from oarcloud_lib.catalog import db, images
        print("building %s with debootstrap %s (a few minutes)..." % (self.name, self.debootstrap),
              file=sys.stderr, flush=True)
        with db.connect() as conn:
            built = images.ensure_site_image(
                conn, self.name, lambda root: images.build_debootstrap_rootfs(
                    root, self.debootstrap, self.mirror), "Debian %s (debootstrap)"
                % self.debootstrap)
        said(self.json, {"name": self.name, "suite": self.debootstrap, "changed": bool(built)},
             "image %s %s" % (self.name, "built" if built else "already there, nothing changed"))


@ImageAdmin.subcommand("saves")
class ImageAdminSaves(Command):
    """Saves of every user; --run carries out the kept ones now (what OAR's server
    epilogue starts in the background)."""

    json = cli.Flag(["--json"], help="machine-readable output")
    run_now = cli.Flag(["--run"], help="run the saver now, in the foreground")

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import saves
        if self.run_now:
            saves.work(window=None)  # the kept ones; pending ones keep their 5 minutes
        with db.connect() as conn:
            rows = saves.select(conn)
        for r in rows:
            r.update(created=iso(r["created"]), updated=iso(r["updated"]),
                     updated_h=str(r["updated"])[:19])
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("id", "ID"), ("owner", "OWNER"), ("image", "IMAGE"),
                               ("domain", "DOMAIN"), ("state", "STATE"), ("node", "NODE"),
                               ("updated_h", "UPDATED"), ("error", "ERROR")])


# -- monitoring ------------------------------------------------------------

@Admin.subcommand("monitor")
class MonitorCmd(Group):
    """The monitor service: probes every node, stores metrics, evaluates alarms,
    delivers notifications and serves Prometheus text on http://<monitor_listen>/metrics.
    `setup server` and `lab up` start it in the background."""


@MonitorCmd.subcommand("run")
class MonitorRun(Command):
    """Run the monitor in the foreground (logs on stderr; Ctrl-C stops it)."""

    interval = cli.SwitchAttr(["--interval"], cli.Range(1, 3600),
                              help="seconds between readings (default: monitor_interval)")

    def run_command(self):
        from oarcloud_lib.server import monitor
        return monitor.main(self.interval)


@MonitorCmd.subcommand("start")
class MonitorStart(Changes, Command):
    """Start the server's services (the monitor) under systemd, or under
    oarcloud's supervisor where no systemd runs; idempotent, restarts them
    after an upgrade."""

    def run_command(self):
        from oarcloud_lib.server import monitor, services
        started = services.ensure_running()
        said(self.json, {"running": True, "pid": monitor.running_pid(), "changed": bool(started)},
             "monitor %s (pid %d)" % ("started" if started else "already running",
                                      monitor.running_pid()))


@MonitorCmd.subcommand("stop")
class MonitorStop(Changes, Command):
    """Stop the server's services (the monitor) and their supervisor (idempotent)."""

    def run_command(self):
        from oarcloud_lib.server import services
        stopped = services.stop()
        said(self.json, {"running": False, "changed": bool(stopped)},
             "monitor stopped" if stopped else "monitor was not running")


@MonitorCmd.subcommand("status")
class MonitorStatus(Command):
    """Whether the monitor runs, and what it last read from each node."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        import time

        from oarcloud_lib.server import monitor
        st = monitor.status()
        if self.json:
            print_json(st or {"running": False})
            return 0 if st else 1
        if not st:
            print("monitor: not running (oarcloud-admin monitor start)")
            return 1
        print("monitor: pid %s, every %s s, Prometheus on http://%s/metrics, %s notification(s)"
              " pending" % (st.get("pid"), st.get("interval"), st.get("listen"),
                            st.get("pending_notifications")))
        rows = [{"node": n, "state": v["state"], "probing": "yes" if v["probing"] else "no",
                 "last": "%.0f s ago" % (time.time() - v["last_reading"])
                 if v["last_reading"] else "never",
                 "cpu": "%.2f s" % v["probe_cpu_seconds"] if v["probe_cpu_seconds"] else "-"}
                for n, v in sorted((st.get("nodes") or {}).items())]
        print_table(rows, [("node", "NODE"), ("state", "OAR STATE"), ("probing", "PROBING"),
                           ("last", "LAST READING"), ("cpu", "PROBE CPU")])
        return 0


@Admin.subcommand("service")
class ServiceCmd(Group):
    """The server's long-running services (the monitor): kept running by
    systemd units where systemd runs, by oarcloud's supervisor elsewhere;
    the admins are notified when one dies (docs/monitoring.md)."""


@ServiceCmd.subcommand("status")
class ServiceStatus(Command):
    """What manages the services, each one's pid, restarts and last death."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        import time

        from oarcloud_lib.server import services
        st = services.status()
        if self.json:
            print_json(st)
        else:
            print("manager: %s%s" % (st["manager"], " (pid %s)" % st["pid"]
                                     if st.get("pid") else ""))
            rows = [{"service": n, "pid": s.get("pid") or "-",
                     "restarts": s.get("restarts", "-"),
                     "last_death": "%s, %.0f s ago" % (s["last_death"]["how"],
                                                       time.time() - s["last_death"]["at"])
                     if s.get("last_death") else "-"} for n, s in st["services"].items()]
            print_table(rows, [("service", "SERVICE"), ("pid", "PID"),
                               ("restarts", "RESTARTS"), ("last_death", "LAST DEATH")])
        return 0 if all(s.get("pid") or not s.get("enabled", True)
                        for s in st["services"].values()) else 1


@ServiceCmd.subcommand("died")
class ServiceDied(Command):
    """What a systemd unit's ExecStopPost runs: tells the admins that service
    NAME did not end well ($SERVICE_RESULT); nothing when it ended well."""

    def run_command(self, name):
        from oarcloud_lib.server import services
        services.systemd_died(name)


class Admins:
    """Admin commands work on the admins' alarms and targets (owner None)."""

    def owner(self):
        return None

    def connect(self):
        from oarcloud_lib.catalog import db
        return db.connect()


@Admin.subcommand("metrics")
class MetricsAdmin(Command):
    """A node's metrics: cpu, memory, load, net_rx, net_tx, disk (the instance
    store), alive (OAR state).  Sparklines, --json, or --plot FILE.png."""

    metric = cli.SwitchAttr(["--metric"], str, help="only this metric")
    since = cli.SwitchAttr(["--since"], str, default="10m", help="how far back (default 10m)")
    json = cli.Flag(["--json"], help="machine-readable output")
    plot = cli.SwitchAttr(["--plot"], str, help="write a chart to this PNG file")

    def run_command(self, node):
        from oarcloud_lib.catalog import db
        with db.connect() as conn:
            show_metrics(conn, "node", node, "node %s" % node, self.metric, self.since,
                         self.json, self.plot)


@Admin.subcommand("alarm")
class AlarmAdmin(Group):
    """Admin alarms on nodes (memory or disk pressure, load, a node not Alive...).
    Node state changes and failed hooks always go to the admins' targets
    (`oarcloud-admin notify`)."""


@AlarmAdmin.subcommand("create")
class AlarmAdminCreate(Changes, Admins, AlarmCreate):
    """Create an alarm on a node, e.g. oarcloud-admin alarm create mem1 --node node-1
    --metric memory --op gt --threshold 3e9 --period 10s --periods 3"""

    node = cli.SwitchAttr(["--node"], str, mandatory=True, help="the node (OAR host name)")

    def run_command(self, name):
        from oarcloud_lib import config
        from oarcloud_lib.catalog import alarms, db
        from oarcloud_lib.tools import oar
        subjects = {"node": set(oar.resource_states())}
        with db.connect() as conn:
            row = alarms.create_from_spec(conn, None, self.spec(name, self.node),
                                          config.load().monitor_interval, subjects)
        said(self.json, {"name": row["name"], "condition": alarms.describe(row),
                         "state": row["state"], "periods": row["periods"]},
             "alarm %s created: %s" % (row["name"], alarms.describe(row)))


AlarmAdmin.subcommand("list", type("List", (Admins, AlarmList), {"__doc__": AlarmList.__doc__}))
AlarmAdmin.subcommand("show", type("Show", (Admins, AlarmShow), {"__doc__": AlarmShow.__doc__}))


@AlarmAdmin.subcommand("delete")
class AlarmAdminDelete(Changes, Command):
    """Delete an admin alarm."""

    def run_command(self, name):
        from oarcloud_lib.catalog import alarms, db
        with db.connect() as conn:
            alarms.delete(conn, None, name)
        said(self.json, {"name": name, "deleted": True}, "alarm %s deleted" % name)


@Admin.subcommand("notify")
class NotifyAdmin(Group):
    """The admins' notification targets (apprise URLs): node state changes,
    failed hooks, admin alarms."""


@NotifyAdmin.subcommand("add")
class NotifyAdminAdd(Changes, Command):
    """Add a target (- reads the URL from stdin)."""

    def run_command(self, url):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import notify
        with db.connect() as conn:
            row, added = notify.add_target(conn, None, read_url(url))
        said(self.json, {"id": row["id"], "url": notify.redact(row["url"]), "added": added},
             "target %d: %s (%s)" % (row["id"], notify.redact(row["url"]),
                                     "added" if added else "already there"))


@deletes(NotifyAdmin)
class NotifyAdminDel(Changes, Command):
    """Remove a target by id or URL."""

    def run_command(self, ref):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import notify
        with db.connect() as conn:
            notify.delete_target(conn, None, read_url(ref))
        said(self.json, {"deleted": True}, "target removed")


@NotifyAdmin.subcommand("test")
class NotifyAdminTest(Changes, Command):
    """Send a test message to every admin target and say how each went."""

    def run_command(self):
        from oarcloud_lib.catalog import db
        from oarcloud_lib.server import notify
        with db.connect() as conn:
            lines, ok = notify.test(conn, None)
        said(self.json, {"ok": ok, "report": lines}, "\n".join(lines))
        return 0 if ok else 1


NotifyAdmin.subcommand("list", type("List", (Admins, NotifyList), {"__doc__": NotifyList.__doc__}))
NotifyAdmin.subcommand("log", type("Log", (Admins, NotifyLog), {"__doc__": NotifyLog.__doc__}))


def main():
    run_quietly_piped(Admin)


if __name__ == "__main__":
    main()
