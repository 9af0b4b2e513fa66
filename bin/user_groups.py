"""oarcloud group ...: scaling groups (docs/groups.md).

list and show read the catalog as the user (row-level security); create,
set and delete go through the broker (settings as JSON on its stdin).  The
monitor launches and removes the members, as root for their owner.
"""
import json

from plumbum import cli

from oarcloud_cli.common import Changes, Command, Group, deletes, iso, machine, print_fields, \
    print_json, print_table, run_broker, store_user_data


class GroupCmd(Group):
    """Scaling groups: instances of one shape between --min and --max, at a
    desired size that a target on their metric moves (--target cpu=60), in an
    allocation or each in an OAR job of its own.  Members are NAME-0,
    NAME-1...; the monitor replaces those that end."""


def _seconds(text, what, zero=False):
    """'30s', '5m' or a bare number of seconds -> int (zero: 0 is one).
    Raises Refused."""
    from oarcloud_lib import metrics
    from oarcloud_lib.errors import Refused
    text = str(text)
    if text.isdigit():
        return int(text)
    if zero and text in ("0s", "0m", "0h"):
        return 0
    if text.startswith("-") or text in ("0s", "0m", "0h"):
        raise Refused(detail="bad --%s %r: a duration above 0, as 30s or 5m" % (what, text))
    return metrics.parse_duration(text)


def _sizes(cmd):
    """{min_size, max_size, desired} of those of cmd's --min, --max, --desired given."""
    from oarcloud_lib.catalog import groups
    from oarcloud_lib.errors import Refused
    out = {}
    for key, field in (("min", "min_size"), ("max", "max_size"), ("desired", "desired")):
        v = getattr(cmd, key)
        if v is not None:
            if not v.isdigit():
                raise Refused(detail="--%s must be a whole number from 0 to %d"
                              % (key, groups.MAX_SIZE))
            out[field] = int(v)
    return out


class _Settings:
    """The switches create and set share."""

    min = cli.SwitchAttr(["--min"], str, argname="N", help="fewest members (default 1)")
    max = cli.SwitchAttr(["--max"], str, argname="N", help="most members")
    desired = cli.SwitchAttr(["--desired"], str, argname="N",
                             help="members now (default: --min); the target moves it")
    target = cli.SwitchAttr(["--target"], str, argname="METRIC=VALUE",
                            help="target tracking on the members' mean metric, e.g. cpu=60 "
                                 "(cpu in %% of their cores), or on the group's balancer: "
                                 "lb.rate=N or lb.errors=N (a second, per member), "
                                 "lb.latency=MS; `none` removes it (set)")
    period = cli.SwitchAttr(["--period"], str, argname="DURATION",
                            help="how long the metric is averaged (default 60s)")
    cooldown_out = cli.SwitchAttr(["--cooldown-out"], str, argname="DURATION",
                                  help="no new scale-out before this after one (default 60s)")
    cooldown_in = cli.SwitchAttr(["--cooldown-in"], str, argname="DURATION",
                                 help="no scale-in before this after any scaling "
                                      "(default 5m)")
    window_in = cli.SwitchAttr(["--window-in"], str, argname="DURATION",
                               help="a scale-in waits until the target has asked for fewer "
                                    "members this long (default 5m)")
    replace_before = cli.SwitchAttr(["--replace-before"], str, argname="DURATION",
                                    help="a member in its own job is replaced this long before "
                                         "its walltime ends (default 5m; 0: never)")
    vertical_cores = cli.SwitchAttr(["--vertical-cores"], str, argname="C",
                                    help="vertical first: a scale-out grows running members "
                                         "up to C cores each (live) before it adds members; "
                                         "`none` turns it off (set)")
    extend_by = cli.SwitchAttr(["--extend-by"], str, argname="DURATION",
                               help="a member in its own job asks OAR for this much more "
                                    "walltime (at twice --replace-before from its end) before "
                                    "it is replaced; `none` turns it off (set)")
    deletion = cli.SwitchAttr(["--deletion"], cli.Set("oldest", "newest", "old-image"),
                              help="which members a scale-in removes first (default oldest; "
                                   "old-image: those not on the group's image, oldest first); "
                                   "protected members never")

    def settings(self):
        from oarcloud_lib.catalog import groups
        from oarcloud_lib.errors import Refused
        out = _sizes(self)
        for key in ("period", "cooldown_out", "cooldown_in", "window_in", "replace_before"):
            v = getattr(self, key)
            if v is not None:
                out[key] = _seconds(v, key.replace("_", "-"), zero=key == "replace_before")
        if self.target == "none":
            out["target"] = "none"
        elif self.target is not None:
            out["target_metric"], out["target_value"] = groups.parse_target(self.target)
        if self.deletion:
            out["deletion"] = self.deletion
        if self.extend_by == "none":
            out["extend"] = "none"
        elif self.extend_by is not None:
            out["extend_by"] = _seconds(self.extend_by, "extend-by")
        if self.vertical_cores == "none":
            out["vertical"] = "none"
        elif self.vertical_cores is not None:
            if not self.vertical_cores.isdigit():
                raise Refused(detail="--vertical-cores must be a whole number of cores")
            out["vertical_cores"] = int(self.vertical_cores)
        return out


@GroupCmd.subcommand("create")
class GroupCreate(Changes, _Settings, Command):
    """Create a scaling group NAME: --max members at most, of --image with
    --cores and --memory each, on --network(s), in allocation --in or each in
    an OAR job of its own (--walltime)."""

    image = cli.SwitchAttr(["--image"], str, help="the members' image (default: the site's)")
    cores = cli.SwitchAttr(["--cores"], cli.Range(1, 999), default=1,
                           help="cores of each member (default 1)")
    memory = cli.SwitchAttr(["--memory"], str, help="memory of each member, e.g. 512M")
    networks = cli.SwitchAttr(["--network"], str, list=True, argname="NET",
                              help="a network of yours (repeatable; default: default)")
    alloc = cli.SwitchAttr(["--in"], str, argname="ALLOC",
                           help="start the members in this allocation of yours, at once")
    walltime = cli.SwitchAttr(["--walltime"], str, default="1:00",
                              help="of each member's own job (H:MM, default 1:00; not with --in)")
    user_data = cli.SwitchAttr(["--user-data"], cli.ExistingFile, argname="FILE",
                               help="a script or #cloud-config each member runs at its first "
                                    "boot (as `launch --user-data`)")

    def run_command(self, name):
        from oarcloud_lib.catalog import jobspec
        spec = dict(self.settings(), name=name, image=self.image, cores=self.cores,
                    networks=list(self.networks), alloc=self.alloc, walltime=self.walltime)
        spec.pop("target", None)   # `none`: no target, as without --target
        spec.pop("vertical", None)
        spec.pop("extend", None)
        if self.memory:
            spec["memory"] = jobspec.parse_size(self.memory)
        if self.user_data:
            spec["user_data"] = store_user_data(self.user_data)
        return run_broker("group-create", data=json.dumps(spec), as_json=self.json)


@GroupCmd.subcommand("set")
class GroupSet(Changes, _Settings, Command):
    """Change a group's bounds, desired size, target or timings; the monitor
    follows within a cycle.  A new --image renews the members one at a time
    (the new one serves before the old one goes, drained out of the
    balancer); protected members keep theirs."""

    image = cli.SwitchAttr(["--image"], str, help="the members' image from now on")

    def run_command(self, name):
        spec = dict(self.settings(), **({"image": self.image} if self.image else {}))
        return run_broker("group-set", name, data=json.dumps(spec), as_json=self.json)


@GroupCmd.subcommand("protect")
class GroupProtect(Changes, Command):
    """Keep MEMBER out of scale-in and image renewal (a member that dies, or
    whose node is drained, is still replaced); --off lifts it."""

    off = cli.Flag(["--off"], help="no longer protected")

    def run_command(self, name, member):
        return run_broker("group-protect", name, member, *(["off"] if self.off else []),
                          as_json=self.json)


@GroupCmd.subcommand("rule")
class GroupRule(Group):
    """Step rules: when --metric, aggregated over the running members, breaches
    for --periods periods of the group's --period, the desired size changes
    by --change members (the cooldowns and bounds hold)."""


@GroupRule.subcommand("add")
class GroupRuleAdd(Changes, Command):
    """Add a step rule to group NAME, e.g.
    oarcloud group rule add web --metric cpu --agg max --op gt --threshold 80 --change +2"""

    metric = cli.SwitchAttr(["--metric"], str, mandatory=True,
                            help="an instance metric (cpu, memory, net_rx, net_tx, procs, "
                                 "rootfs) or the balancer's (lb.rate, lb.errors, lb.latency)")
    agg = cli.SwitchAttr(["--agg"], cli.Set("avg", "max", "min", "any", "all"), default="avg",
                         help="over the members: their avg, max or min, or any or all of "
                              "them breaching (default avg)")
    op = cli.SwitchAttr(["--op"], cli.Set("gt", "ge", "lt", "le"), mandatory=True,
                        help="breach when the value is gt, ge, lt or le the threshold")
    threshold = cli.SwitchAttr(["--threshold"], str, mandatory=True, help="a number")
    periods = cli.SwitchAttr(["--periods"], str, default="1",
                             help="how many periods in a row must breach (default 1)")
    change = cli.SwitchAttr(["--change"], str, mandatory=True, argname="+N|-N",
                            help="members to add (+N) or remove (-N)")

    def run_command(self, name):
        spec = {"metric": self.metric, "agg": self.agg, "op": self.op,
                "threshold": self.threshold, "periods": self.periods, "change": self.change}
        return run_broker("group-rule-add", name, data=json.dumps(spec), as_json=self.json)


@deletes(GroupRule)
class GroupRuleDelete(Changes, Command):
    """Delete a group's step rule by its id (group show lists them)."""

    def run_command(self, name, rule_id):
        return run_broker("group-rule-delete", name, rule_id, as_json=self.json)


@GroupCmd.subcommand("schedule")
class GroupSchedule(Changes, Command):
    """Schedule a group's size: at every time --cron gives (five fields,
    the server's local time, e.g. '0 8 * * 1-5': weekdays at 08:00), or
    once --at 'YYYY-MM-DD HH:MM', set its --desired size (and --min/--max).
    A target still moves it afterwards, within the bounds."""

    cron = cli.SwitchAttr(["--cron"], str, argname="'M H DOM MON DOW'", excludes=["--at"],
                          help="a cron expression (the server's local time)")
    at = cli.SwitchAttr(["--at"], str, argname="'YYYY-MM-DD HH:MM'",
                        help="once, at this time (the server's)")
    desired = cli.SwitchAttr(["--desired"], str, argname="N", help="members then")
    min = cli.SwitchAttr(["--min"], str, argname="N", help="fewest members from then")
    max = cli.SwitchAttr(["--max"], str, argname="N", help="most members from then")

    def run_command(self, name):
        spec = dict(_sizes(self), cron=self.cron, at=self.at)
        return run_broker("group-schedule", name, data=json.dumps(spec), as_json=self.json)


@GroupCmd.subcommand("unschedule")
class GroupUnschedule(Changes, Command):
    """Remove a group's schedule by its id (group show lists them)."""

    def run_command(self, name, schedule_id):
        return run_broker("group-unschedule", name, schedule_id, as_json=self.json)


def _shown(g):
    return dict(g, created=iso(g.get("created")), last_out=iso(g.get("last_out")),
                last_in=iso(g.get("last_in")),
                size_h="%d/%d (%d..%d)" % (g["size"], g["desired"], g["min_size"],
                                           g["max_size"]),
                members_h=", ".join("%s%s%s%s" % (
                    m["name"], "" if m["state"] == "running" else "(%s)" % (m["state"] or "queued"),
                    "" if m.get("image") in (None, g["image"]) else "[%s]" % m["image"],
                    "*" if m.get("protected") else "") for m in g["members"]) or "-",
                where_h="allocation %s" % g["alloc"] if g["alloc"] else "own jobs")


def _public(g):
    from oarcloud_lib.service import groups
    return groups.describe_public(g)


@GroupCmd.subcommand("list")
class GroupList(Command):
    """Your scaling groups: size against desired (min..max), target, members."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.service import groups, jobs
        with jobs.connect_as_user() as conn:
            rows = groups.listing(conn, jobs.current_user())
        if self.json:
            print_json([machine(_public(r)) for r in rows])
        else:
            print_table([_shown(r) for r in rows],
                        [("name", "NAME"), ("size_h", "SIZE/DESIRED"), ("target", "TARGET"),
                         ("where_h", "WHERE"), ("members_h", "MEMBERS")])


@GroupCmd.subcommand("show")
class GroupShow(Command):
    """One group: its settings, members (NAME[IMAGE] when on another image than
    the group's, * when protected) and what the scaler did (history)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.service import groups, jobs
        with jobs.connect_as_user() as conn:
            g = groups.show(conn, jobs.current_user(), name)
        if self.json:
            print_json(machine(_public(g)))
            return
        shown = _shown(g)
        print_fields(shown, ("name", "size_h", "target", "where_h", "image", "cores",
                             "period", "cooldown_out", "cooldown_in", "window_in", "deletion",
                             "replace_before", "extend_by", "vertical_cores",
                             "unreachable", "members_h", "created"))
        if g.get("rules"):
            print()
            print_table(g["rules"], [("id", "RULE"), ("condition", "WHEN")])
        if g.get("schedules"):
            print()
            print_table([dict(sc, when=sc["cron"] and "cron %s" % sc["cron"]
                              or "at %s" % iso(sc["at"]), last_run=iso(sc["last_run"]) or "-",
                              sizes=", ".join("%s %d" % (k.replace("_size", ""), sc[k])
                                              for k in ("desired", "min_size", "max_size")
                                              if sc[k] is not None))
                         for sc in g["schedules"]],
                        [("id", "SCHEDULE"), ("when", "WHEN"), ("sizes", "SETS"),
                         ("last_run", "LAST RUN")])
        print()
        print_table([dict(h, at=iso(h["at"]), change="%s -> %s" % (
            "-" if h["before"] is None else h["before"], "-" if h["after"] is None
            else h["after"])) for h in g["history"]],
                    [("at", "AT"), ("action", "ACTION"), ("change", "SIZE"),
                     ("reason", "REASON")])


@deletes(GroupCmd)
class GroupDelete(Changes, Command):
    """Delete a group and its members (each as `oarcloud delete` would)."""

    def run_command(self, name):
        return run_broker("group-delete", name, as_json=self.json)
