"""oarcloud metrics | alarm | notify: a user's metrics, alarms and notification
targets (F.u.4, F.u.5).  Reads go through the catalog as the user; changes
through the broker, with URLs and specs on its stdin (never on a command line)."""
import json
import sys

from plumbum import cli

from oarcloud_cli.common import Changes, Command, Group, deletes, run_broker
from oarcloud_cli.monitoring import (AlarmCreate, AlarmList, AlarmShow, NotifyList, NotifyLog,
                                     read_url, show_metrics)


class Mine:
    """A user's commands read the catalog as the user: theirs only."""

    def owner(self):
        from oarcloud_lib.service import jobs
        return jobs.current_user()

    def connect(self):
        from oarcloud_lib.service import jobs
        return jobs.connect_as_user()


class Metrics(Mine, Command):
    """An instance's metrics: a sparkline per metric in the terminal, all values
    with --json, a chart with --plot.  Metrics: cpu (% of its cores), memory
    (bytes), net_rx and net_tx (bytes/s), procs, rootfs (bytes written)."""

    metric = cli.SwitchAttr(["--metric"], str, help="only this metric")
    since = cli.SwitchAttr(["--since"], str, default="10m",
                           help="how far back: 30s, 10m, 2h, 7d (default 10m)")
    json = cli.Flag(["--json"], help="machine-readable output (every value)")
    plot = cli.SwitchAttr(["--plot"], str, help="write a chart to this PNG file")

    def run_command(self, name):
        with self.connect() as conn:
            from oarcloud_lib.service import lifecycle
            row = lifecycle.find(conn, self.owner(), name)
            domain, node, created = row["domain"], row["node"], row["created"]
            show_metrics(conn, "instance", domain, "instance %s (%s on %s)" % (name, domain, node),
                         self.metric, self.since, self.json, self.plot,
                         not_before=created.timestamp())


class AlarmCmd(Group):
    """Alarms on your instances' metrics: to `alarm` when every one of the last N
    periods breaches the threshold, back to `ok` when every one is inside,
    `insufficient data` while a period has no value (e.g. the instance is gone).
    Entering and leaving `alarm` notify the alarm's --notify URLs, or else your
    `oarcloud notify` targets."""


@AlarmCmd.subcommand("create")
class Create(Changes, Mine, AlarmCreate):
    """Create an alarm on one of your instances or balancers, e.g.
    oarcloud alarm create hot --instance web --metric cpu --op gt --threshold 80 --period 10s --periods 3
    oarcloud alarm create busy --lb front --metric rate --op gt --threshold 200 --periods 2"""

    instance = cli.SwitchAttr(["--instance"], str, help="your instance's name")
    lb = cli.SwitchAttr(["--lb"], str, excludes=["--instance"],
                        help="your balancer's name (metrics: rate, errors, latency, up)")

    def run_command(self, name):
        if not (self.instance or self.lb):
            print("oarcloud: error: give --instance NAME or --lb NAME (see --help)",
                  file=sys.stderr)
            return 2
        spec = self.spec(name, self.instance or self.lb)
        if self.lb:
            spec["kind"] = "lb"
        return run_broker("alarm-create", data=json.dumps(spec), as_json=self.json)


AlarmCmd.subcommand("list", type("List", (Mine, AlarmList), {"__doc__": AlarmList.__doc__}))
AlarmCmd.subcommand("show", type("Show", (Mine, AlarmShow), {"__doc__": AlarmShow.__doc__}))


@AlarmCmd.subcommand("delete")
class Delete(Changes, Command):
    """Delete an alarm."""

    def run_command(self, name):
        return run_broker("alarm-delete", name, as_json=self.json)


class NotifyCmd(Group):
    """Where your notifications go: apprise URLs (mailto://, json://, slack://,
    matrix://... see https://github.com/caronc/apprise/wiki).  You are told when
    an instance runs or fails (with the reason), when its walltime ends soon,
    when an image is saved, and by your alarms.  Delivery is retried for about
    an hour and a half; `notify log` shows how it went."""


@NotifyCmd.subcommand("add")
class NotifyAdd(Changes, Command):
    """Add a target (give - to read the URL from stdin, out of sight of ps)."""

    def run_command(self, url):
        return run_broker("notify-add", data=read_url(url), as_json=self.json)


NotifyCmd.subcommand("list", type("List", (Mine, NotifyList), {"__doc__": NotifyList.__doc__}))
NotifyCmd.subcommand("log", type("Log", (Mine, NotifyLog), {"__doc__": NotifyLog.__doc__}))


@deletes(NotifyCmd)
class NotifyDel(Changes, Command):
    """Remove a target, by its id (see `notify list`) or its URL."""

    def run_command(self, ref):
        return run_broker("notify-del", data=read_url(ref), as_json=self.json)


@NotifyCmd.subcommand("test")
class NotifyTest(Changes, Command):
    """Send a test message to every target and say how each delivery went."""

    def run_command(self):
        return run_broker("notify-test", as_json=self.json)
