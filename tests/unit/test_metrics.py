"""Metrics: names, durations, readers of raw sources, rates, downsampling,
Prometheus text and sparklines."""
import math

import pytest

from oarcloud_lib import metrics
from oarcloud_lib.errors import NotFound, Refused

CPU_STAT = """usage_usec 8053911
user_usec 5310345
system_usec 2743566
nr_periods 0
nr_throttled 0
throttled_usec 0
"""
PROC_STAT = """cpu  4705 150 1120 16250 520 0 30 10 300 7
cpu0 2352 75 560 8125 260 0 15 5 150 3
intr 114930548 113199788 3 0 5 263 0 4 [...]
ctxt 1990473
"""
MEMINFO = """MemTotal:       16314084 kB
MemFree:         1243204 kB
MemAvailable:   10116408 kB
Buffers:          712340 kB
HugePages_Total:       0
"""
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1234567    1000    0    0    0     0          0         0  1234567    1000    0    0    0     0       0          0
  eth0:987654321  700000    0    0    0     0          0         0 123456789  400000    0    0    0     0       0          0
vnet12: 500 5 0 0 0 0 0 0 9000 20 0 0 0 0 0 0
"""


@pytest.mark.parametrize("kind, name", [("node", "cpu"), ("node", "load"), ("node", "disk"),
                                        ("instance", "procs"), ("instance", "rootfs"),
                                        ("instance", "net_tx")])
def test_known_metrics(kind, name):
    m = metrics.check_metric(name, kind)
    assert (m.kind, m.name) == (kind, name)
    assert metrics.PROM_NAME_RE.match(m.prom)


@pytest.mark.parametrize("kind, name", [("node", "procs"), ("instance", "load"),
                                        ("instance", "disk"), ("instance", "CPU"),
                                        ("instance", ""), ("instance", None),
                                        ("cluster", "cpu"), ("instance", ["cpu"])])
def test_unknown_metrics_are_refused(kind, name):
    with pytest.raises(Refused):
        metrics.check_metric(name, kind)


def test_every_family_name_is_unique():
    names = [m.prom for table in metrics.METRICS.values() for m in table.values()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("5m", 300), ("2h", 7200),
                                           ("1d", 86400), ("366d", 366 * 86400)])
def test_durations(text, seconds):
    assert metrics.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "0d", "-5m", "10", "s", "10x", "1.5h", " 10s", "10s ",
                                  "10 s", "10S", "", None, 10, "１０s", "367d", "99999999999s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(Refused):
        metrics.parse_duration(text)


def test_cgroup_v2_readers(tmp_path):
    d = tmp_path / "machine" / "lxc-1-oc1-0"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text(CPU_STAT)
    (d / "memory.current").write_text("104857600\n")
    (d / "memory.stat").write_text("anon 1000\ninactive_file 4857600\n")
    (d / "cgroup.procs").write_text("10\n11\n12\n")
    groups = metrics.parse_proc_cgroup("0::/machine/lxc-1-oc1-0\n")
    assert metrics.instance_sample(groups, tmp_path, leave={10}) == {
        "cpu_usec": 8053911, "memory": 100000000, "procs": 2}
    with pytest.raises(ValueError):
        metrics.parse_cpu_stat("user_usec 12\n")


def test_cgroup_v1_readers(tmp_path):
    """The hybrid layout of the lab's machine: controllers in their own trees."""
    text = ("9:name=systemd:/\n8:pids:/\n4:memory:/machine/x.libvirt-lxc\n"
            "2:cpu,cpuacct:/machine/x.libvirt-lxc\n0::/\n")
    groups = metrics.parse_proc_cgroup(text)
    assert groups["cpu"] == groups["cpuacct"] == "/machine/x.libvirt-lxc" and groups[""] == "/"
    cpu = tmp_path / "cpuacct" / "machine" / "x.libvirt-lxc"
    mem = tmp_path / "memory" / "machine" / "x.libvirt-lxc"
    cpu.mkdir(parents=True)
    mem.mkdir(parents=True)
    (cpu / "cpuacct.usage").write_text("2500000000\n")
    (cpu / "cgroup.procs").write_text("7\n8\n")
    (mem / "memory.usage_in_bytes").write_text("5000\n")
    (mem / "memory.stat").write_text("cache 100\ntotal_inactive_file 6000\n")
    assert metrics.instance_sample(groups, tmp_path) == {"cpu_usec": 2500000, "memory": 0,
                                                         "procs": 2}


def test_proc_stat():
    busy, total = metrics.parse_proc_stat(PROC_STAT)
    # guest (300) and guest_nice (7) are already in user and nice.
    assert total == 4705 + 150 + 1120 + 16250 + 520 + 0 + 30 + 10
    assert busy == total - 16250 - 520
    with pytest.raises(ValueError):
        metrics.parse_proc_stat("cpu0 1 2 3 4\n")


def test_meminfo_and_loadavg():
    info = metrics.parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 16314084 * 1024
    assert info["HugePages_Total"] == 0
    assert metrics.memory_used(info) == (16314084 - 10116408) * 1024
    assert metrics.parse_loadavg("0.42 1.05 2.50 3/512 12345\n") == (0.42, 1.05, 2.5)


def test_net_dev():
    assert metrics.parse_net_dev(NET_DEV, "eth0") == (987654321, 123456789)
    assert metrics.parse_net_dev(NET_DEV, "lo") == (1234567, 1234567)
    # The host end of an instance's veth: what it sends, the instance receives.
    assert metrics.parse_net_dev(NET_DEV, "vnet12", swap=True) == (9000, 500)
    for missing in ("eth", "eth1", "face"):
        with pytest.raises(NotFound):
            metrics.parse_net_dev(NET_DEV, missing)


def test_node_sample(tmp_path):
    (tmp_path / "stat").write_text(PROC_STAT)
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "loadavg").write_text("0.42 1.05 2.50 3/512 12345\n")
    got = metrics.node_sample(proc=tmp_path)
    assert got["load"] == 0.42
    assert got["memory"] == (16314084 - 10116408) * 1024
    assert got["cpu"] == metrics.parse_proc_stat(PROC_STAT)


def test_fs_usage(tmp_path):
    used, available = metrics.fs_usage(tmp_path)
    assert used >= 0 and available >= 0
    assert 0 <= metrics.percent_used(used, available) <= 100
    assert metrics.percent_used(25, 75) == 25.0
    assert metrics.percent_used(0, 0) == 0.0


def test_rates():
    assert metrics.rate((100.0, 1000), (102.0, 5000)) == 2000.0
    assert metrics.rate((100.0, 5000), (102.0, 1000)) is None     # counter reset
    assert metrics.rate((100.0, 1000), (100.0, 5000)) is None     # no time went by
    # 2 cores, 1.5 s of CPU in 1 s: 75%.
    assert metrics.cpu_percent((10.0, 0), (11.0, 1_500_000), cores=2) == 75.0
    assert metrics.cpu_percent((10.0, 0), (11.0, 1_500_000), cores=0) is None
    assert metrics.stat_cpu_percent((100, 400), (150, 500)) == 50.0
    assert metrics.stat_cpu_percent((100, 400), (100, 400)) is None


def test_downsample():
    points = [(0, 1.0), (30, 3.0), (59, 5.0), (60, 10.0), (185, 7.0), (190, None),
              (200, float("nan"))]
    assert metrics.downsample(points, 60) == [(0, 3.0), (60, 10.0), (180, 7.0)]
    assert metrics.downsample(reversed(points), 60) == [(0, 3.0), (60, 10.0), (180, 7.0)]
    assert metrics.downsample([], 60) == []
    for step in (0, -60, None):
        with pytest.raises(Refused):
            metrics.downsample(points, step)


def test_retention_plan():
    steps = [step for step, _ in metrics.RETENTION]
    keeps = [keep for _, keep in metrics.RETENTION]
    assert steps == sorted(steps) and keeps == sorted(keeps)
    assert metrics.resolution(600) == 0
    assert metrics.resolution(3600) == 0
    assert metrics.resolution(7200) == 60
    assert metrics.resolution(7 * 86400) == 900
    assert metrics.resolution(31 * 86400) is None


def test_sparkline():
    assert metrics.sparkline([]) == ""
    assert metrics.sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert metrics.sparkline([5, 5, 5]) == "▁▁▁"
    assert metrics.sparkline([0, None, 10, float("nan")]) == "▁ █ "
    assert metrics.sparkline([None, None]) == "  "
    assert metrics.sparkline(iter([0, 100])) == "▁█"
    # A fixed scale (percent): 50 sits in the middle, out-of-range values are clipped.
    assert metrics.sparkline([0, 50, 100, 150, -5], low=0, high=100) == "▁▅██▁"


@pytest.mark.parametrize("value, unit, text", [
    (97.26, "%", "97.3%"), (512, "B", "512 B"), (1536, "B", "1.5 KiB"),
    (3 << 30, "B", "3.0 GiB"), (12288.0, "B/s", "12.0 KiB/s"), (0.421, "", "0.42"),
    (17, "", "17"), (None, "%", "no data"),
])
def test_format_value(value, unit, text):
    assert metrics.format_value(value, unit) == text


def _parse_exposition(text):
    """A small reader of the text format: {(name, labels tuple): value}, plus HELP/TYPE."""
    samples, help_, types = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, rest = line[7:].partition(" ")
            help_[name] = rest
        elif line.startswith("# TYPE "):
            name, _, rest = line[7:].partition(" ")
            types[name] = rest
        else:
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            pairs, i, labels = [], 0, labels[:-1] if labels else ""
            while i < len(labels):
                key, _, rest = labels[i:].partition('="')
                j, val = 0, ""
                while rest[j] != '"':
                    if rest[j] == "\\":
                        j += 1
                        val += {"n": "\n", "\\": "\\", '"': '"'}[rest[j]]
                    else:
                        val += rest[j]
                    j += 1
                pairs.append((key, val))
                i += len(key) + 2 + j + 1
                if i < len(labels) and labels[i] == ",":
                    i += 1
            samples[(name, tuple(pairs))] = value
    return samples, help_, types


def test_prometheus_rendering():
    hostile = 'we"b\\1\nx'
    text = metrics.render_prometheus([
        ("instance", "cpu", {"instance": "web1", "owner": "alice"}, 12.5),
        ("node", "load", {"node": "node-1"}, 0.42),
        ("instance", "cpu", {"instance": hostile, "owner": "bob"}, float("nan")),
        ("instance", "memory", {"instance": "web1", "owner": "alice"}, 104857600),
        ("instance", "memory", {}, float("inf")),
    ])
    assert text.endswith("\n")
    lines = text.splitlines()
    # One HELP and one TYPE per family, before its samples, samples grouped.
    cpu = [i for i, line in enumerate(lines) if "oarcloud_instance_cpu_percent" in line]
    assert cpu == list(range(cpu[0], cpu[0] + 4))
    assert lines[cpu[0]].startswith("# HELP oarcloud_instance_cpu_percent ")
    assert lines[cpu[1]] == "# TYPE oarcloud_instance_cpu_percent gauge"
    assert sum(line.startswith("# TYPE") for line in lines) == 3
    assert '{instance="we\\"b\\\\1\\nx",owner="bob"} NaN' in text
    assert "oarcloud_instance_memory_bytes +Inf" in lines
    samples, help_, types = _parse_exposition(text)
    assert samples[("oarcloud_instance_cpu_percent",
                    (("instance", hostile), ("owner", "bob")))] == "NaN"
    assert samples[("oarcloud_instance_cpu_percent",
                    (("instance", "web1"), ("owner", "alice")))] == "12.5"
    assert samples[("oarcloud_instance_memory_bytes",
                    (("instance", "web1"), ("owner", "alice")))] == "104857600"
    assert samples[("oarcloud_node_load1", (("node", "node-1"),))] == "0.42"
    assert set(types.values()) == {"gauge"}
    assert help_["oarcloud_node_load1"] == metrics.METRICS["node"]["load"].help


def test_prometheus_refusals():
    assert metrics.render_prometheus([]) == ""
    for labels in ({"in-stance": "x"}, {"__name__": "x"}, {"1a": "x"}):
        with pytest.raises(Refused):
            metrics.render_prometheus([("instance", "cpu", labels, 1)])
    with pytest.raises(Refused):
        metrics.render_prometheus([("instance", "load", {}, 1)])


def test_prometheus_values_are_floats_go_can_read():
    text = metrics.render_prometheus([("node", "memory", {}, 1e20), ("node", "cpu", {}, -0.0),
                                      ("node", "disk", {}, True)])
    for line in text.splitlines():
        if not line.startswith("#"):
            value = line.rpartition(" ")[2]
            assert math.isfinite(float(value))
