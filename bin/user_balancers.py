"""oarcloud lb ...: load balancers in front of scaling groups (docs/balancers.md).

Every verb goes through the broker: the balancers are HAProxy processes of
the server's, whose state only root reads.
"""
from plumbum import cli

from oarcloud_cli.common import Changes, Command, Group, broker_json, deletes, print_fields, \
    print_json, print_table, run_broker


class LbCmd(Group):
    """Load balancers: HAProxy on the server in front of a scaling group's
    running members, following the group as it scales (members drained
    before they go, dead ones out within 3 s of failed health checks)."""


def _shown(lb):
    return dict(lb, members_h=", ".join("%s %s" % (m["name"], m["state"])
                                        for m in lb.get("members", [])) or "-",
                metrics_h=", ".join("%s %.1f" % (k, v) for k, v in
                                    sorted((lb.get("metrics") or {}).items())) or "-")


@LbCmd.subcommand("create")
class LbCreate(Changes, Command):
    """Create balancer NAME in front of your group --group on the members'
    --port; it listens on the server (HOST:PORT in its `address`).  The
    members' network needs an ingress rule for the port."""

    group = cli.SwitchAttr(["--group"], str, mandatory=True, help="your scaling group")
    port = cli.SwitchAttr(["--port"], str, mandatory=True, help="the members' port (1-65535)")
    check = cli.SwitchAttr(["--check"], str, default="tcp", argname="http:/PATH|tcp",
                           help="health check: an HTTP GET expecting 2xx/3xx, or a TCP "
                                "connect (default tcp)")
    algorithm = cli.SwitchAttr(["--algorithm"], cli.Set("roundrobin", "leastconn"),
                               default="roundrobin", help="default roundrobin")

    def run_command(self, name):
        return run_broker("lb-create", name, self.group, self.port, self.check, self.algorithm,
                          as_json=self.json)


@LbCmd.subcommand("list")
class LbList(Command):
    """Your balancers: address, group, members and their health."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        code, rows = broker_json("lb-list")
        if rows is None:
            return code
        if self.json:
            print_json(rows)
        else:
            print_table([_shown(r) for r in rows],
                        [("name", "NAME"), ("address", "ADDRESS"), ("group", "GROUP"),
                         ("port", "PORT"), ("check", "CHECK"), ("members_h", "MEMBERS")])
        return 0


@LbCmd.subcommand("show")
class LbShow(Command):
    """One balancer: its address, members as HAProxy sees them, last metrics
    (rate and errors a second, latency in ms, members up)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        code, lb = broker_json("lb-show", name)
        if lb is None:
            return code
        if self.json:
            print_json(lb)
        else:
            print_fields(_shown(lb), ("name", "address", "group", "port", "check", "algorithm",
                                      "running", "members_h", "metrics_h", "created"))
        return 0


@deletes(LbCmd)
class LbDelete(Changes, Command):
    """Stop and delete a balancer (its members stay, their port unpublished)."""

    def run_command(self, name):
        return run_broker("lb-delete", name, as_json=self.json)
