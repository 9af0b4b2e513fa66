"""Metrics (F.u.4, F.a.5): what is measured, how raw counters are read and
turned into values, how series are thinned out and shown.

Pure functions and readers that take the text or the path they read, so they
are tested on literal strings and temporary files.  The monitor service, its
catalog tables and the `metrics` commands build on them (issue 6, in progress:
nothing collects or stores metrics yet).
"""
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


def parse_net_dev(text, iface, swap=False):
    """/proc/net/dev -> (rx_bytes, tx_bytes) of iface.  Raises NotFound.

    swap=True for the host end of an instance's veth pair: what the host end
    sends, the instance receives."""
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name.strip() == iface:
            fields = rest.split()
            rx, tx = int(fields[0]), int(fields[8])
            return (tx, rx) if swap else (rx, tx)
    raise NotFound(what="interface", name=iface)


def fs_usage(path):
    """(used, available) bytes of the filesystem holding path, as df counts them
    (blocks reserved to root are neither)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize


def percent_used(used, available):
    return 100.0 * used / (used + available) if used + available else 0.0


def instance_sample(cgroup):
    """Cumulative counters of one instance's cgroup v2 directory:
    {'cpu_usec', 'memory', 'procs'}."""
    cgroup = Path(cgroup)
    return {
        "cpu_usec": parse_cpu_stat((cgroup / "cpu.stat").read_text()),
        "memory": parse_counter((cgroup / "memory.current").read_text()),
        "procs": parse_counter((cgroup / "pids.current").read_text()),
    }


def node_sample(iface, proc="/proc"):
    """Cumulative counters of a node, read under proc: {'cpu': (busy, total),
    'memory', 'load', 'net': (rx, tx)}."""
    proc = Path(proc)
    return {
        "cpu": parse_proc_stat((proc / "stat").read_text()),
        "memory": memory_used(parse_meminfo((proc / "meminfo").read_text())),
        "load": parse_loadavg((proc / "loadavg").read_text())[0],
        "net": parse_net_dev((proc / "net" / "dev").read_text(), iface),
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
