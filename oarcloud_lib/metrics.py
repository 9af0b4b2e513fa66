"""Metrics (F.u.4, F.a.5): what is measured, how raw counters are read and
turned into values, how series are thinned out and shown.

Pure functions and readers that take the text or the path they read, so they
are tested on literal strings and temporary files.  The monitor service, its
catalog functions below store and read what the monitor service
(oarcloud_lib.server.monitor) collects with oarcloud_lib.node.probes.
"""
import datetime
import math
import os
import re
from collections import namedtuple
from pathlib import Path

from oarcloud_lib.errors import NotFound, Refused

Metric = namedtuple("Metric", "kind name unit prom help")


def _table(kind, rows):
    return {name: Metric(kind, name, unit, prom, text) for name, unit, prom, text in rows}


# The metrics known to the system, per kind of thing measured.  prom is the
# name of the Prometheus family (unit suffix included, as its naming rules ask).
METRICS = {
    "node": _table("node", [
        ("cpu", "%", "oarcloud_node_cpu_percent", "CPU busy time, percent of all cores"),
        ("memory", "B", "oarcloud_node_memory_used_bytes",
         "Memory in use (MemTotal - MemAvailable)"),
        ("load", "", "oarcloud_node_load1", "Load average over one minute"),
        ("net_rx", "B/s", "oarcloud_node_network_receive_bytes_per_second",
         "Bytes received per second on the node's interface"),
        ("net_tx", "B/s", "oarcloud_node_network_transmit_bytes_per_second",
         "Bytes sent per second on the node's interface"),
        ("disk", "%", "oarcloud_node_disk_used_percent",
         "Space used on the instance store filesystem, percent"),
        ("alive", "", "oarcloud_node_alive", "1 when OAR has the node Alive, else 0"),
    ]),
    "instance": _table("instance", [
        ("cpu", "%", "oarcloud_instance_cpu_percent",
         "CPU time used, percent of the instance's cores"),
        ("memory", "B", "oarcloud_instance_memory_bytes",
         "Memory charged to the instance's cgroup"),
        ("net_rx", "B/s", "oarcloud_instance_network_receive_bytes_per_second",
         "Bytes received per second by the instance"),
        ("net_tx", "B/s", "oarcloud_instance_network_transmit_bytes_per_second",
         "Bytes sent per second by the instance"),
        ("procs", "", "oarcloud_instance_processes", "Processes (tasks) in the instance"),
        ("rootfs", "B", "oarcloud_instance_rootfs_bytes",
         "Bytes written to the instance's root filesystem"),
    ]),
    # A load balancer (server/balancers.py), from HAProxy's counters.
    "lb": _table("lb", [
        ("rate", "/s", "oarcloud_lb_requests_per_second", "Requests (sessions) a second"),
        ("errors", "/s", "oarcloud_lb_5xx_per_second", "5xx answers a second"),
        ("latency", "ms", "oarcloud_lb_response_time_ms",
         "Mean response time of the last 1024 requests"),
        ("up", "", "oarcloud_lb_members_up", "Members passing their health check"),
    ]),
}

DURATION_RE = re.compile(r"^([0-9]{1,9})([smhd])\Z")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer than anything kept (see RETENTION); a bound so that a typo is refused.
MAX_DURATION = 366 * 86400

# What is kept: (step in seconds, 0 for raw samples; how long, in seconds).
RETENTION = (
    (0, 3600),
    (60, 86400),
    (900, 30 * 86400),
)

SPARKS = "▁▂▃▄▅▆▇█"
PROM_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
PROM_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")


def check_metric(name, kind="instance"):
    """The Metric called name for kind ('node' or 'instance').  Raises Refused."""
    if kind not in METRICS:
        raise Refused(detail="bad kind %r: %s" % (kind, " or ".join(METRICS)))
    try:
        return METRICS[kind][name]
    except (KeyError, TypeError):
        raise Refused(detail="unknown %s metric %r: one of %s"
                      % (kind, name, ", ".join(METRICS[kind]))) from None


def parse_duration(text):
    """'10s', '5m', '2h' or '1d' -> seconds (> 0, at most a year).  Raises Refused."""
    m = DURATION_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise Refused(detail="bad duration %r: a number followed by s, m, h or d, as 10s or 5m"
                      % (text,))
    seconds = int(m.group(1)) * UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise Refused(detail="bad duration %r: must be more than 0" % text)
    if seconds > MAX_DURATION:
        raise Refused(detail="bad duration %r: at most %d days" % (text, MAX_DURATION // 86400))
    return seconds


# Readers of raw sources.  Each parse_* takes a file's text; the *_sample
# functions read the files under a directory given as argument.

def parse_cpu_stat(text):
    """usage_usec of a cgroup v2 cpu.stat (microseconds of CPU since creation).
    Raises ValueError, as every parse_* on text it cannot read."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise ValueError("cpu.stat has no usage_usec")


def parse_counter(text):
    """The single integer of memory.current, pids.current and the like."""
    return int(text.strip())


def parse_proc_stat(text):
    """The first 'cpu' line of /proc/stat -> (busy, total) in clock ticks.

    guest and guest_nice are left out: the kernel already counts them in user
    and nice.  iowait counts as idle (the CPU could have run something)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(f) for f in fields[1:9]]
            ticks += [0] * (8 - len(ticks))
            idle = ticks[3] + ticks[4]
            total = sum(ticks)
            return total - idle, total
    raise ValueError("/proc/stat has no cpu line")


def parse_meminfo(text):
    """/proc/meminfo -> {field: bytes} (the kernel writes kB, meaning KiB)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if not fields:
            continue
        value = int(fields[0])
        out[key.strip()] = value * 1024 if fields[1:] == ["kB"] else value
    return out


def memory_used(meminfo):
    """Bytes in use from parse_meminfo's dict: what could not be had without swapping."""
    return meminfo["MemTotal"] - meminfo["MemAvailable"]


def parse_loadavg(text):
    """/proc/loadavg -> (load1, load5, load15)."""
    fields = text.split()
    return float(fields[0]), float(fields[1]), float(fields[2])


def parse_net_dev_all(text):
    """/proc/net/dev -> {iface: (rx_bytes, tx_bytes)}."""
    out = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and len(fields) >= 9 and fields[0].isdigit():
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def parse_net_dev(text, iface, swap=False):
    """/proc/net/dev -> (rx_bytes, tx_bytes) of iface.  Raises NotFound.

    swap=True for the host end of an instance's veth pair: what the host end
    sends, the instance receives."""
    counters = parse_net_dev_all(text).get(iface)
    if counters is None:
        raise NotFound(what="interface", name=iface)
    rx, tx = counters
    return (tx, rx) if swap else (rx, tx)


def parse_proc_cgroup(text):
    """/proc/PID/cgroup -> {controller: path}; the cgroup v2 hierarchy is ''."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def parse_flat_keyed(text):
    """'key value' lines (memory.stat, cpu.stat) -> {key: int}."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def fs_usage(path):
    """(used, available) bytes of the filesystem holding path, as df counts them
    (blocks reserved to root are neither)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize


def percent_used(used, available):
    return 100.0 * used / (used + available) if used + available else 0.0


def instance_sample(groups, root="/sys/fs/cgroup", leave=()):
    """Cumulative counters of an instance from its cgroups (parse_proc_cgroup's
    dict), cgroup v1 (hybrid) or v2: {'cpu_usec', 'memory', 'procs'}.  memory
    is the working set (usage less inactive file cache, as cAdvisor counts it);
    procs leaves out the pids in leave (libvirt's controller)."""
    root = Path(root)
    if "cpuacct" in groups and "memory" in groups:
        cpu_dir = root / "cpuacct" / groups["cpuacct"].lstrip("/")
        mem_dir = root / "memory" / groups["memory"].lstrip("/")
        cpu_usec = parse_counter((cpu_dir / "cpuacct.usage").read_text()) // 1000
        usage = parse_counter((mem_dir / "memory.usage_in_bytes").read_text())
        inactive = parse_flat_keyed((mem_dir / "memory.stat").read_text()).get(
            "total_inactive_file", 0)
    else:
        cpu_dir = mem_dir = root / groups[""].lstrip("/")
        cpu_usec = parse_cpu_stat((cpu_dir / "cpu.stat").read_text())
        usage = parse_counter((mem_dir / "memory.current").read_text())
        inactive = parse_flat_keyed((mem_dir / "memory.stat").read_text()).get("inactive_file", 0)
    procs = [p for p in (cpu_dir / "cgroup.procs").read_text().split() if int(p) not in leave]
    return {"cpu_usec": cpu_usec, "memory": max(usage - inactive, 0), "procs": len(procs)}


def quota_cores(cpu_dir, v2):
    """The cores the CPU quota of a cgroup directory allows (its cpu
    controller's; cgroup v2 or v1), None when it has none."""
    cpu_dir = Path(cpu_dir)
    if v2:
        quota, period = (cpu_dir / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
    return None if quota < 0 else quota / int((cpu_dir / "cpu.cfs_period_us").read_text())


def instance_cores(groups, root="/sys/fs/cgroup"):
    """The cores of an instance (parse_proc_cgroup's dict) by its CPU quota:
    what a live resize left (None: no quota)."""
    if "cpu" in groups:
        return quota_cores(Path(root) / "cpu" / groups["cpu"].lstrip("/"), False)
    return quota_cores(Path(root) / groups[""].lstrip("/"), True)


def node_sample(proc="/proc"):
    """Counters of a node, read under proc: {'cpu': (busy, total), 'memory',
    'load'} (its network counters come with the instances' from /proc/net/dev)."""
    proc = Path(proc)
    return {
        "cpu": parse_proc_stat((proc / "stat").read_text()),
        "memory": memory_used(parse_meminfo((proc / "meminfo").read_text())),
        "load": parse_loadavg((proc / "loadavg").read_text())[0],
    }


# From two successive cumulative samples to a value.

def rate(prev, cur):
    """Per-second increase between two (time, counter) samples; None when it
    cannot be told (time not moving forward, counter reset by a restart)."""
    (t0, v0), (t1, v1) = prev, cur
    if t1 <= t0 or v1 < v0:
        return None
    return (v1 - v0) / (t1 - t0)


def cpu_percent(prev, cur, cores):
    """Percent of cores used between two (time, usage_usec) samples of a cgroup;
    None as rate.  Can pass 100 by a little: the two reads are not instantaneous."""
    r = rate(prev, cur)
    if r is None or cores <= 0:
        return None
    return 100.0 * r / (1e6 * cores)


def stat_cpu_percent(prev, cur):
    """Percent busy between two (busy, total) readings of /proc/stat; None when
    no tick went by or the counters went back."""
    busy = cur[0] - prev[0]
    total = cur[1] - prev[1]
    if total <= 0 or busy < 0:
        return None
    return 100.0 * busy / total


# Thinning out and showing series.

def downsample(points, step):
    """(time, value) points -> (bucket start, mean) per step seconds, in time
    order; points whose value is None or NaN are left out.  Raises Refused."""
    if not step or step <= 0:
        raise Refused(detail="bad step %r: must be more than 0" % (step,))
    buckets = {}
    for t, v in points:
        if v is None or math.isnan(v):
            continue
        b = buckets.setdefault(t - t % step, [0.0, 0])
        b[0] += v
        b[1] += 1
    return [(t, s / n) for t, (s, n) in sorted(buckets.items())]


def resolution(since):
    """The finest step (0: raw) kept for at least since seconds, or None when
    nothing is kept that long."""
    for step, keep in RETENTION:
        if since <= keep:
            return step
    return None


def sparkline(values, low=None, high=None):
    """One character per value from ▁ to █, scaled between low and high (by
    default the series' own bounds); a gap (None, NaN) is a space and a
    constant series sits at the bottom."""
    values = list(values)
    seen = [v for v in values if v is not None and not math.isnan(v)]
    if not seen:
        return " " * len(values)
    low = min(seen) if low is None else low
    high = max(seen) if high is None else high
    top = len(SPARKS) - 1
    out = []
    for v in values:
        if v is None or math.isnan(v):
            out.append(" ")
        elif high <= low:
            out.append(SPARKS[0])
        else:
            i = int((v - low) / (high - low) * top + 0.5)
            out.append(SPARKS[min(max(i, 0), top)])
    return "".join(out)


def format_value(value, unit):
    """A value for people: '97.3%', '1.5 GiB', '12.0 KiB/s', '0.42'; 'no data' for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if unit == "%":
        return "%.1f%%" % value
    if unit in ("B", "B/s"):
        size, prefix = float(value), ""
        for prefix in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
            if abs(size) < 1024 or prefix == "Pi":
                break
            size /= 1024
        text = ("%d " % size) if not prefix else ("%.1f %s" % (size, prefix))
        return text + unit
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "%.2f" % value


def _escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _prom_value(v):
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def render_prometheus(samples):
    """Samples (kind, metric, labels dict, value) in the Prometheus text
    exposition format (version 0.0.4): one HELP and one TYPE line per family,
    a family's samples together.  Raises Refused on an unknown metric or a bad
    label name."""
    families = {}
    for kind, name, labels, value in samples:
        families.setdefault(check_metric(name, kind), []).append((labels, value))
    lines = []
    for metric, rows in families.items():
        lines.append("# HELP %s %s" % (metric.prom, _escape_help(metric.help)))
        lines.append("# TYPE %s gauge" % metric.prom)
        for labels, value in rows:
            pairs = []
            for key in sorted(labels):
                if not PROM_LABEL_RE.match(key) or key.startswith("__"):
                    raise Refused(detail="bad Prometheus label name %r" % (key,))
                pairs.append('%s="%s"' % (key, _escape_label(labels[key])))
            lines.append("%s%s %s" % (metric.prom, "{%s}" % ",".join(pairs) if pairs else "",
                                      _prom_value(value)))
    return "".join(line + "\n" for line in lines)


# The catalog's samples table (migration 0006): written by the monitor service,
# read by `metrics` (users see their instances' rows only) and the alarms.

def store(conn, rows):
    """Write rows (kind, subject, owner, metric, time as epoch seconds, value)
    as raw samples."""
    with conn.cursor() as cur, cur.copy("COPY samples (kind, subject, owner, metric, step, t, value)"
                                        " FROM STDIN") as copy:
        for kind, subject, owner, metric, t, value in rows:
            copy.write_row((kind, subject, owner, metric, 0,
                            datetime.datetime.fromtimestamp(t, datetime.timezone.utc), value))


def rollup(conn, now):
    """Means per 60 s of the raw samples and per 900 s of those, over the last
    few finished buckets (again each time: idempotent); then drop what is older
    than its retention."""
    finer = 0
    for step, keep in RETENTION[1:]:
        end = now - now % step
        conn.execute(
            "INSERT INTO samples (kind, subject, owner, metric, step, t, value)"
            " SELECT kind, subject, owner, metric, %(step)s,"
            "  to_timestamp(floor(extract(epoch FROM t) / %(step)s) * %(step)s), avg(value)"
            " FROM samples WHERE step = %(finer)s AND t >= to_timestamp(%(start)s)"
            "  AND t < to_timestamp(%(end)s)"
            " GROUP BY kind, subject, owner, metric, 6"
            " ON CONFLICT (kind, subject, metric, step, t) DO UPDATE SET value = EXCLUDED.value",
            {"step": step, "finer": finer, "start": end - 3 * step, "end": end})
        finer = step
    for step, keep in RETENTION:
        conn.execute("DELETE FROM samples WHERE step = %s AND t < to_timestamp(%s)",
                     (step, now - keep))


def series(conn, kind, subject, metric, since, now, not_before=None):
    """[(epoch seconds, value)] of subject's metric over the last since seconds,
    at the finest step kept that long, oldest first."""
    step = resolution(since)
    if step is None:
        raise Refused(detail="nothing is kept for %d days" % (since // 86400))
    start = max(now - since, not_before or 0)
    cur = conn.execute("SELECT extract(epoch FROM t)::float8, value FROM samples"
                       " WHERE kind = %s AND subject = %s AND metric = %s AND step = %s"
                       " AND t >= to_timestamp(%s) ORDER BY t",
                       (kind, subject, metric, step, start))
    return cur.fetchall()


def last_values(conn, kind, subject):
    """{metric: its last raw value} of subject."""
    return dict(conn.execute("SELECT DISTINCT ON (metric) metric, value FROM samples WHERE"
                             " kind = %s AND subject = %s AND step = 0 ORDER BY metric, t DESC",
                             (kind, str(subject))).fetchall())


def period_means(conn, kind, subject, metric, period, periods, now):
    """The mean of each of the last periods periods of period seconds before
    now, oldest first; None for a period without samples."""
    window = period * periods
    step = resolution(window)
    step = RETENTION[-1][0] if step is None else step
    cur = conn.execute("SELECT floor((%(now)s - extract(epoch FROM t)) / %(period)s)::int,"
                       " avg(value) FROM samples"
                       " WHERE kind = %(kind)s AND subject = %(subject)s AND metric = %(metric)s"
                       " AND step = %(step)s AND t > to_timestamp(%(start)s)"
                       " AND t <= to_timestamp(%(now)s) GROUP BY 1",
                       {"now": now, "period": period, "kind": kind, "subject": subject,
                        "metric": metric, "step": step, "start": now - window})
    means = dict(cur.fetchall())
    return [means.get(k) for k in range(periods - 1, -1, -1)]
