"""Metrics, alarms and notifications: the commands users and admins share.

Each command here is written once with `owner` and `submit` left to the CLI
that mounts it: a user's reads go through the catalog as themselves (row-level
security) and writes through the broker; an admin's go straight to the
catalog, with owner None (the admins' alarms and targets).
"""
import math
import sys
import time

from plumbum import cli

from oarcloud_cli.common import Command, iso, machine, print_fields, print_json, print_table

SPARK_WIDTH = 60


def _slots(points, start, seconds, finest):
    """points spread over equal slots from start, at most SPARK_WIDTH, none
    shorter than finest seconds (None: no value there)."""
    from oarcloud_lib import metrics
    step = max(1, finest, math.ceil(seconds / SPARK_WIDTH))
    width = math.ceil(seconds / step)
    slots = [None] * width
    for t, v in metrics.downsample(points, step):
        i = int((t - start) // step)
        if 0 <= i < width:
            slots[i] = v
    return slots


def plot(path, title, data, kind):
    """A PNG chart of data {metric: [(t, v)]}, one panel per metric."""
    import datetime

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oarcloud_lib import metrics
    from oarcloud_lib.errors import Refused
    if not str(path).lower().endswith(".png"):
        raise Refused(detail="--plot %s: the chart is a PNG file (name ending in .png)" % path)
    fig, axes = plt.subplots(len(data), 1, figsize=(9, 1.8 * len(data) + 0.6), sharex=True,
                             squeeze=False)
    for ax, (name, points) in zip(axes[:, 0], data.items()):
        unit = metrics.check_metric(name, kind).unit
        ax.plot([datetime.datetime.fromtimestamp(t) for t, _ in points],
                [v for _, v in points], linewidth=1)
        ax.set_ylabel("%s%s" % (name, " (%s)" % unit if unit else ""), fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.autofmt_xdate()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise Refused(detail="cannot write %s: %s" % (path, e.strerror)) from None
    finally:
        plt.close(fig)


def show_metrics(conn, kind, subject, title, metric, since, as_json, plot_file,
                 not_before=None):
    from oarcloud_lib import metrics
    names = [metrics.check_metric(metric, kind).name] if metric else list(metrics.METRICS[kind])
    seconds = metrics.parse_duration(since)
    if metrics.resolution(seconds) is None:
        from oarcloud_lib.errors import Refused
        raise Refused(detail="--since %s: values are kept %d days at most"
                      % (since, metrics.RETENTION[-1][1] // 86400))
    now = time.time()
    data = {m: metrics.series(conn, kind, subject, m, seconds, now, not_before) for m in names}
    if plot_file:
        plot(plot_file, title, data, kind)
    if as_json:
        print_json({"kind": kind, "subject": subject, "since": seconds,
                    "step": metrics.resolution(seconds),
                    "metrics": {m: {"unit": metrics.METRICS[kind][m].unit,
                                    "points": [[round(t, 3), v] for t, v in pts]}
                                for m, pts in data.items()}})
        return
    step = metrics.resolution(seconds)
    print("%s, last %s (%s)" % (title, since, "raw samples" if step == 0
                                else "means per %d s" % step))
    if not any(data.values()):
        print("no values yet: the monitor reads every few seconds "
              "(oarcloud-admin monitor status)")
        return
    start = now - seconds
    for m, pts in data.items():
        gaps = sorted(b[0] - a[0] for a, b in zip(pts, pts[1:]))
        finest = step or (round(gaps[len(gaps) // 2]) if gaps else 1)
        unit = metrics.METRICS[kind][m].unit
        values = [v for _, v in pts]
        fmt = (lambda v: metrics.format_value(v, unit))
        print("%-7s %s  now %-12s min %-12s max %s" % (
            m, metrics.sparkline(_slots(pts, start, seconds, finest)),
            fmt(values[-1] if values else None), fmt(min(values) if values else None),
            fmt(max(values) if values else None)))
    if plot_file:
        print("chart written to %s" % plot_file)


# -- alarms --------------------------------------------------------------------------

ALARM_COLUMNS = [("name", "NAME"), ("watches", "WATCHES"), ("state", "STATE"),
                 ("since_h", "SINCE"), ("value_h", "LAST VALUE")]


def alarm_public(row):
    from oarcloud_lib import metrics
    from oarcloud_lib.catalog import alarms
    from oarcloud_lib.server import notify
    out = {k: row[k] for k in ("name", "kind", "subject", "metric", "op", "threshold", "period",
                               "periods", "repeat", "state", "last_value")}
    out["notify"] = [notify.redact(u) for u in row["notify"]]
    out["state_since"] = str(row["state_since"])
    out["since_h"] = out["state_since"][:19]
    out["evaluated"] = str(row["evaluated"]) if row["evaluated"] else None
    out["watches"] = alarms.describe(row)
    out["value_h"] = metrics.format_value(row["last_value"],
                                          metrics.METRICS[row["kind"]][row["metric"]].unit)
    return out


class AlarmBase:
    """What the alarm commands need from the CLI that mounts them."""

    def owner(self):
        raise NotImplementedError

    def connect(self):
        raise NotImplementedError


class AlarmCreate(Command, AlarmBase):
    metric = cli.SwitchAttr(["--metric"], str, mandatory=True,
                            help="instance: cpu, memory, net_rx, net_tx, procs, rootfs; "
                                 "balancer: rate, errors, latency, up; "
                                 "node: cpu, memory, load, net_rx, net_tx, disk, alive")
    op = cli.SwitchAttr(["--op"], cli.Set("gt", "ge", "lt", "le"), default="gt",
                        help="breach when the value is gt, ge, lt or le the threshold")
    threshold = cli.SwitchAttr(["--threshold"], str, mandatory=True,
                               help="a number, in the metric's unit (%, bytes, bytes/s)")
    period = cli.SwitchAttr(["--period"], str, default=None,
                            help="length of a period, e.g. 10s or 5m (default: the monitor's "
                                 "interval)")
    periods = cli.SwitchAttr(["--periods"], str, default="3",
                             help="how many periods in a row must agree (default 3)")
    repeat = cli.Flag(["--repeat"], help="notify again every N periods while in alarm")
    notify = cli.SwitchAttr(["--notify"], str, list=True,
                            help="apprise URL for this alarm (repeatable; default: your "
                                 "`notify` targets)")

    def spec(self, name, subject):
        spec = {"name": name, "subject": subject, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "periods": self.periods, "repeat": self.repeat,
                "notify": list(self.notify)}
        if self.period:
            spec["period"] = self.period
        return spec


class AlarmList(Command, AlarmBase):
    """Alarms with what they watch and their state."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import alarms
        with self.connect() as conn:
            rows = [alarm_public(r) for r in alarms.owned(conn, self.owner())]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, ALARM_COLUMNS)


class AlarmShow(Command, AlarmBase):
    """One alarm: its rule, state and the history of its transitions."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import alarms
        with self.connect() as conn:
            row = alarms.get(conn, self.owner(), name)
            history = alarms.history(conn, row["id"])
        out = machine(alarm_public(row))
        out["history"] = [dict(h, at=str(h["at"])) for h in history]
        if self.json:
            print_json(out)
            return
        out["value"] = alarm_public(row)["value_h"]
        print_fields(out, ("name", "watches", "state", "state_since", "value", "evaluated",
                           "repeat", "notify"))
        print("\nhistory (newest first):")
        print_table([dict(h, at=h["at"][:19]) for h in out["history"]],
                    [("at", "AT"), ("old_state", "FROM"), ("new_state", "TO"),
                     ("value", "VALUE")])


# -- notification targets ------------------------------------------------------------

class NotifyList(Command, AlarmBase):
    """Notification targets (secrets in URLs masked)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.server import notify
        with self.connect() as conn:
            rows = [{"id": r["id"], "url": notify.redact(r["url"]), "created": iso(r["created"]),
                     "created_h": str(r["created"])[:16]}
                    for r in notify.targets(conn, self.owner())]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("id", "ID"), ("url", "URL"), ("created_h", "ADDED")])


class NotifyLog(Command, AlarmBase):
    """The last notifications and how their delivery went."""

    json = cli.Flag(["--json"], help="machine-readable output")
    limit = cli.SwitchAttr(["--limit"], cli.Range(1, 1000), default=20, help="how many")

    def run_command(self):
        from oarcloud_lib.server import notify
        with self.connect() as conn:
            rows = notify.history(conn, self.owner(), self.limit)
        for r in rows:
            r.update(created=iso(r["created"]), sent=iso(r["sent"]) if r["sent"] else None,
                     created_h=str(r["created"])[:19])
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("id", "ID"), ("created_h", "QUEUED"), ("event", "EVENT"),
                               ("state", "STATE"), ("attempts", "TRIES"), ("url", "URL"),
                               ("title", "TITLE"), ("last_error", "ERROR")])


def read_url(url):
    """The URL argument, or a line of stdin for '-' (keeps secrets out of ps)."""
    return sys.stdin.readline().strip() if url == "-" else url
