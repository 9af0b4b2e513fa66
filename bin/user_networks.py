"""oarcloud net ...: the user's private networks (F.u.8).

Listing reads the catalog as the user (row-level security: their own networks
and those shared with them); every change goes through the broker, which checks who asks and
has the nodes hosting the network follow at once.
"""
from plumbum import cli

from oarcloud_cli.common import (Changes, Command, Group, deletes, exec_broker, iso, machine,
                                 print_fields, print_json, print_table)

NET_COLUMNS = [("name", "NAME"), ("cidr", "CIDR"), ("gateway", "GATEWAY"), ("vni", "VNI"),
               ("in_use", "ADDRESSES"), ("created_h", "CREATED")]
RULE_COLUMNS = [("id", "ID"), ("direction", "DIRECTION"), ("proto", "PROTO"), ("ports", "PORTS"),
                ("remote_h", "REMOTE")]
MEMBER_COLUMNS = [("name", "NAME"), ("kind", "KIND"), ("ip", "ADDRESS"), ("mac", "MAC"),
                  ("node", "NODE")]


def _public(row):
    out = {k: row[k] for k in ("name", "cidr", "gateway", "vni")}
    out["created"] = iso(row["created"])
    out["created_h"] = out["created"][:16]
    if "in_use" in row:
        out["in_use"] = row["in_use"]
    return out


def _rule(rule):
    out = dict(rule)
    low, high = rule["port_low"], rule["port_high"]
    out["ports"] = "-" if low is None else str(low) if low == high else "%d-%d" % (low, high)
    out["remote_h"] = rule["remote"] or "any"
    return out


class NetCmd(Group):
    """Private networks: create, list, show, delete, rules, published ports, VPN.

    Every instance is on at least one network: your `default` network (made at
    your first launch) unless `oarcloud launch --network NAME` names others.
    Inside a network everything may talk; from outside, nothing comes in until a
    rule lets it; out, everything may go (through the network's gateway, NATed
    to the node's address)."""


@NetCmd.subcommand("create")
class NetCreate(Changes, Command):
    """Create a network: an IPv4 range of your own (/16 to /29), which other users'
    networks may reuse without ever seeing yours."""

    cidr = cli.SwitchAttr(["--cidr"], str, mandatory=True, help="e.g. 10.20.0.0/24")
    gateway = cli.SwitchAttr(["--gateway"], str, help="gateway address (default: the first one)")

    def run_command(self, name):
        exec_broker("net-create", name, self.cidr, *([self.gateway] if self.gateway else []),
                    as_json=self.json)


@NetCmd.subcommand("list")
class NetList(Command):
    """Your networks, with the number of addresses in use in each, then those
    shared with you (OWNER/NAME)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import networks
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            me = jobs.current_user()
            rows = [_public(r) for r in networks.owned(conn, me)]
            rows += [dict(_public(r), name=r["ref"], in_use="-")
                     for r in networks.shared_with(conn, me)]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, NET_COLUMNS)


@NetCmd.subcommand("show")
class NetShow(Command):
    """One network: its range, members (instances, VPN clients), rules, published
    ports, whom it is shared with.  OWNER/NAME: one shared with you (its
    members you see are your own instances)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import networks
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            me = jobs.current_user()
            row = networks.attachable(conn, me, name)
            out = machine(dict(_public(row), name=networks.ref(row, me), owner=row["owner"]))
            out["shared_with"] = networks.shares(conn, row["id"]) if row["owner"] == me else []
            out["members"] = networks.members(conn, row["id"])
            out["rules"] = networks.rules(conn, [row["id"]])[row["id"]]
            out["published"] = networks.exposures(conn, row["id"])
        if self.json:
            print_json(out)
            return
        print_fields(dict(out, shared_with=", ".join(out["shared_with"]) or "-"),
                     ("name", "owner", "cidr", "gateway", "vni", "created", "shared_with"),
                     width=12)
        print("\nmembers:")
        print_table(out["members"], MEMBER_COLUMNS)
        print("\nrules:")
        print_table([_rule(r) for r in out["rules"]], RULE_COLUMNS)
        if out["published"]:
            print("\npublished ports:")
            print_table(out["published"], [("instance", "INSTANCE"), ("proto", "PROTO"),
                                           ("port", "PORT"), ("node", "NODE"),
                                           ("node_port", "NODE PORT")])


@NetCmd.subcommand("share")
class NetShare(Changes, Command):
    """Let USER, or each member of @GROUP, attach instances to a network of yours
    (they name it YOU/NAME); --off stops new attachments (what runs keeps its
    address until it ends).  The rules, VPN and deletion stay yours."""

    off = cli.Flag(["--off"], help="stop sharing it")

    def run_command(self, name, user):
        exec_broker("net-share", name, user, *(["off"] if self.off else []), as_json=self.json)


@NetCmd.subcommand("delete")
class NetDelete(Changes, Command):
    """Delete a network with its rules and VPN (refused while an instance uses it)."""

    def run_command(self, name):
        exec_broker("net-delete", name, as_json=self.json)


class RuleCmd(Group):
    """A network's rules (stateful: replies of an allowed connection always pass)."""


NetCmd.subcommand("rule", RuleCmd)


@RuleCmd.subcommand("add")
class RuleAdd(Changes, Command):
    """Allow traffic of the network's instances; applied live to running instances."""

    direction = cli.SwitchAttr(["--direction"], cli.Set("ingress", "egress"), mandatory=True,
                               help="ingress: new connections to the instances; "
                                    "egress: new connections from them")
    proto = cli.SwitchAttr(["--proto"], cli.Set("tcp", "udp", "icmp", "any"), mandatory=True,
                           help="protocol")
    port = cli.SwitchAttr(["--port"], str, help="destination port P or range P-Q (tcp, udp)")
    remote = cli.SwitchAttr(["--remote"], str, help="the other end's CIDR (default: anywhere)")

    def run_command(self, name):
        exec_broker("net-rule-add", name, self.direction, self.proto, self.port or "-",
                    self.remote or "-", as_json=self.json)


@RuleCmd.subcommand("list")
class RuleList(Command):
    """The network's rules."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import networks
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            row = networks.get(conn, jobs.current_user(), name)
            rules = networks.rules(conn, [row["id"]])[row["id"]]
        if self.json:
            print_json(rules)
        else:
            print_table([_rule(r) for r in rules], RULE_COLUMNS)


@deletes(RuleCmd)
class RuleDel(Changes, Command):
    """Delete rule ID (see `rule list`); applied live."""

    def run_command(self, name, rule_id):
        exec_broker("net-rule-del", name, rule_id, as_json=self.json)


@NetCmd.subcommand("expose")
class NetExpose(Changes, Command):
    """Publish an instance's port on its node's address (a port from 30000-32767),
    for clients elsewhere in the cluster; an ingress rule must let them in."""

    proto = cli.SwitchAttr(["--proto"], cli.Set("tcp", "udp"), default="tcp", help="protocol")
    network = cli.SwitchAttr(["--network"], str, help="which NIC (default: the first)")

    def run_command(self, instance, port):
        exec_broker("net-expose", instance, port, self.proto,
                    *([self.network] if self.network else []), as_json=self.json)


@NetCmd.subcommand("unexpose")
class NetUnexpose(Changes, Command):
    """Stop publishing an instance's port."""

    proto = cli.SwitchAttr(["--proto"], cli.Set("tcp", "udp"), default="tcp", help="protocol")

    def run_command(self, instance, port):
        exec_broker("net-unexpose", instance, port, self.proto, as_json=self.json)


@NetCmd.subcommand("vpn")
class NetVpn(Command):
    """A network's VPN clients.  By default, make one and print its OpenVPN file:
    the machine using it joins the network (an address of its own, nothing else
    reachable).  Save it: the key in it is shown once.  --list shows the clients
    and their ends; --revoke ends a client for good (its file no longer
    connects, its session ends now, its address is freed)."""

    client = cli.SwitchAttr(["--client"], str, default="client",
                            help="a name for the new client (one address each)")
    days = cli.SwitchAttr(["--days"], str, help="days the new client's certificate lasts "
                                                "(default: the site's vpn_client_days, 90)")
    listing = cli.Flag(["--list"], excludes=["--revoke", "--days"],
                       help="the network's VPN clients, revoked ones included")
    revoke = cli.SwitchAttr(["--revoke"], str, excludes=["--days"],
                            help="revoke this client")
    json = cli.Flag(["--json"], help="machine-readable output (--list, --revoke)")

    def run_command(self, name):
        if self.revoke:
            exec_broker("net-vpn-revoke", name, self.revoke, as_json=self.json)
        if not self.listing:
            exec_broker("net-vpn", name, self.client, *([self.days] if self.days else []))
        from oarcloud_lib.catalog import networks
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            row = networks.get(conn, jobs.current_user(), name)
            out = networks.vpn(conn, row["id"])
        if self.json:
            print_json(out)
            return
        ep = out["endpoint"]
        if ep:
            print("endpoint: %s UDP %d, server certificate until %s, CA until %s\n" % (
                ep["node"], ep["udp_port"], str(ep["server_expires"])[:16],
                str(ep["ca_expires"])[:16]))
        rows = [dict(c, state="active", when=str(c["expires"])[:16]) for c in out["clients"]]
        rows += [dict(r, state="revoked", when=str(r["revoked"])[:16]) for r in out["revoked"]]
        print_table(rows, [("name", "CLIENT"), ("state", "STATE"), ("ip", "ADDRESS"),
                           ("when", "UNTIL/REVOKED"), ("serial", "SERIAL")])
