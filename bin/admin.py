"""oarcloud-admin: the site administrator's command (runs as root)."""
import sys

from plumbum import cli

from oarcloud_cli.common import VERSION, Command, Group, is_root, machine, print_json, print_table


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
class SetupServer(Command):
    """PostgreSQL, the OAR server (hooks, admission rule, cloud property) and the catalog.

    A second run changes nothing and says so.
    """

    address = cli.SwitchAttr(["--address"], str, default="127.0.0.1",
                             help="address the nodes use to reach this server (DB, OAR)")
    nodes_cidr = cli.SwitchAttr(["--nodes-cidr"], str, default="",
                                help="network the nodes connect from (PostgreSQL access)")

    def run_command(self):
        from oarcloud_lib import serversetup
        serversetup.setup_server(self.address, self.nodes_cidr)


@Setup.subcommand("node")
class SetupNode(Command):
    """oar-node sshd, Open vSwitch (br-int, underlay bridge), libvirtd (LXC), the hooks,
    and this node's resources in OAR with cloud=YES.  Run on the node, as root.
    """

    name = cli.SwitchAttr(["--name"], str, help="node name in OAR (default: hostname)")
    cores = cli.SwitchAttr(["--cores"], cli.Range(1, 1024), help="cores to offer (default: all)")
    underlay_if = cli.SwitchAttr(["--underlay-if"], str,
                                 help="interface carrying the node's cluster address; it and "
                                      "its addresses move onto the OVS underlay bridge br-phy")

    def run_command(self):
        from oarcloud_lib import nodesetup
        nodesetup.setup_node(self.name, self.cores, self.underlay_if)


# -- lab -------------------------------------------------------------------

@Admin.subcommand("lab")
class LabCmd(Group):
    """The all-in-one lab: this machine as the OAR server plus N emulated nodes."""


@LabCmd.subcommand("up")
class LabUp(Command):
    """Set up the server here and N emulated nodes (namespaces), each running the real
    node setup; builds the `tiny` image.  A second run changes nothing."""

    nodes = cli.SwitchAttr(["-n", "--nodes"], int, default=2, help="number of emulated nodes")
    cores = cli.SwitchAttr(["--cores"], int, default=2, help="cores each node offers to OAR")
    with_debian = cli.Flag(["--with-debian"], help="also build the `bookworm` image (debootstrap)")

    def run_command(self):
        from oarcloud_lib import lab
        lab.Lab().up(self.nodes, self.cores, with_debian=self.with_debian)


@LabCmd.subcommand("down")
class LabDown(Command):
    """Stop everything the lab started and put the machine back as it was."""

    def run_command(self):
        from oarcloud_lib import lab
        lab.Lab().down()


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
                "ovs-vswitchd", "virtlogd", "libvirtd"]
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
class UserAdd(Command):
    """Create (or adopt) the Unix account NAME and register it; idempotent."""

    key = cli.SwitchAttr(["--key"], cli.ExistingFile,
                         help="public key file for reaching instances (default: generate a pair)")
    admin = cli.Flag(["--admin"], help="give the account the admin role")

    def run_command(self, name):
        from oarcloud_lib import accounts
        acc, changed = accounts.add(name, key_file=self.key, admin=self.admin)
        print("user %s %s (role %s, key %s)" % (acc["name"], "added" if changed else
                                                "already exists, nothing changed",
                                                acc["role"], acc["key_fingerprint"]))


@UserCmd.subcommand("list")
class UserList(Command):
    """Accounts known to oarcloud."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib import accounts
        rows = accounts.list_accounts()
        if self.json:
            print_json(rows)
        else:
            print_table(rows, [("name", "NAME"), ("uid", "UID"), ("role", "ROLE"),
                               ("key_fingerprint", "KEY"), ("created", "CREATED")])


@UserCmd.subcommand("del")
class UserDel(Command):
    """Delete an account: its OAR jobs, its catalog entries, and the Unix account
    if oarcloud created it."""

    def run_command(self, name):
        from oarcloud_lib import accounts
        accounts.delete(name)
        print("user %s deleted" % name)


# -- nodes ------------------------------------------------------------------------

@Admin.subcommand("node")
class NodeCmd(Group):
    """Nodes as OAR sees them, and their health."""


@NodeCmd.subcommand("heal")
class NodeHeal(Command):
    """Sweep HOST... (remove instances of jobs not running there, check libvirt and
    Open vSwitch) and set each sound node Alive in OAR.  What OAR's healing hook
    does for Suspected nodes, run once, now; idempotent."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, *hosts):
        from oarcloud_lib import healing
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


@Admin.subcommand("image")
class ImageAdmin(Group):
    """The site's images: every user's, builds, saves in progress."""


@ImageAdmin.subcommand("list")
class ImageAdminList(Command):
    """Every image in the catalog, private ones included."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib import catalog, images
        from oarcloud_cli.user_images import IMAGE_COLUMNS, _public
        with catalog.connect() as conn:
            rows = [_public(r) for r in images.list_usable(conn)]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, IMAGE_COLUMNS)


@ImageAdmin.subcommand("build")
class ImageAdminBuild(Command):
    """Build a public Debian image with debootstrap (minbase, sshd under tini).
    Idempotent: an image already built and in the store is left as it is."""

    debootstrap = cli.SwitchAttr(["--debootstrap"], str, mandatory=True,
                                 help="Debian suite, e.g. bookworm")
    name = cli.SwitchAttr(["--name"], str, mandatory=True, help="the image's name")
    mirror = cli.SwitchAttr(["--mirror"], str, help="Debian mirror (default: apt's)")

    def run_command(self):
        from oarcloud_lib import catalog, images
        print("building %s with debootstrap %s (a few minutes)..." % (self.name, self.debootstrap))
        with catalog.connect() as conn:
            built = images.ensure_site_image(
                conn, self.name, lambda root: images.build_debootstrap_rootfs(
                    root, self.debootstrap, self.mirror), "Debian %s (debootstrap)"
                % self.debootstrap)
        print("image %s %s" % (self.name, "built" if built else "already there, nothing changed"))


@ImageAdmin.subcommand("saves")
class ImageAdminSaves(Command):
    """Saves of every user; --run carries out the kept ones now (what OAR's server
    epilogue starts in the background)."""

    json = cli.Flag(["--json"], help="machine-readable output")
    run = cli.Flag(["--run"], help="run the saver now, in the foreground")

    def run_command(self):
        from oarcloud_lib import catalog, saves
        if self.run:
            saves.work(window=0)
        with catalog.connect() as conn:
            rows = saves.select(conn)
        for r in rows:
            r.update(created=str(r["created"]), updated=str(r["updated"]),
                     updated_h=str(r["updated"])[:19])
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("id", "ID"), ("owner", "OWNER"), ("image", "IMAGE"),
                               ("domain", "DOMAIN"), ("state", "STATE"), ("node", "NODE"),
                               ("updated_h", "UPDATED"), ("error", "ERROR")])


def main():
    Admin.run()


if __name__ == "__main__":
    main()
