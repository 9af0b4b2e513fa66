"""oarcloud node ...: the site's nodes, for operators (list and show for
viewers too).  Each goes through the broker, which checks the caller's role;
admins have the same and more in `oarcloud-admin node`."""
from plumbum import cli

from oarcloud_cli.common import (Changes, Command, Group, broker_json, exec_broker, print_node,
                                 print_nodes)


class NodeCmd(Group):
    """The site's nodes (operators: drain and undrain; viewers: list and show)."""


@NodeCmd.subcommand("list")
class NodeList(Command):
    """Every node: its OAR state, drain, cores used and free, instances, memory
    in use and image cache."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        code, out = broker_json("node-list")
        if out is None:
            return code
        print_nodes(out, self.json)


@NodeCmd.subcommand("show")
class NodeShow(Command):
    """One node: what `node list` says, with its jobs and instances."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, host):
        code, out = broker_json("node-show", host)
        if out is None:
            return code
        print_node(out, self.json)


@NodeCmd.subcommand("drain")
class NodeDrain(Changes, Command):
    """Take HOST out of service (OAR schedules nothing new on it; what runs goes
    on, its owners are told); with --deadline, what still runs then is ended."""

    deadline = cli.SwitchAttr(["--deadline"], str, argname="WHEN",
                              help="30m, 2h, 1d from now, or a time (2026-12-24T08:00, UTC)")

    def run_command(self, host):
        exec_broker("node-drain", host, *([self.deadline] if self.deadline else []),
                    as_json=self.json)


@NodeCmd.subcommand("undrain")
class NodeUndrain(Changes, Command):
    """Put HOST back in service (idempotent)."""

    def run_command(self, host):
        exec_broker("node-undrain", host, as_json=self.json)
