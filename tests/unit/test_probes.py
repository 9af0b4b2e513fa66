"""The node probe's readings, on a fake /proc and cgroup tree (pure logic: the
lab's tests read real nodes)."""
import os

import pytest

from oarcloud_lib.catalog import alarms
from oarcloud_lib.node import probes
from oarcloud_lib.server import monitor
from oarcloud_lib.errors import NotFound, NotReady, Refused
from test_metrics import MEMINFO, NET_DEV, PROC_STAT


class FakeGuest:
    def __init__(self, name, ctl, cores=2, ports=("vnet12",)):
        self.name, self.ctl, self.cores, self._ports = name, ctl, cores, list(ports)

    def controller_pid(self):
        return self.ctl

    def info(self):
        return {"cores": self.cores}

    def ports(self):
        return self._ports


class FakeDriver:
    def __init__(self, guests):
        self.guests, self.closed = guests, 0

    def running(self, prefix=""):
        if self.guests is None:
            raise NotReady(detail="libvirtd down")
        return [g for g in self.guests if g.name.startswith(prefix)]

    def close(self):
        self.closed += 1


def fake_tree(tmp_path, usage_ns, rx, tx):
    proc, cg, store = tmp_path / "proc", tmp_path / "cg", tmp_path / "store"
    (proc / "net").mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_text(PROC_STAT)
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    (proc / "net" / "dev").write_text(NET_DEV.replace("9000", str(tx)).replace(" 500 ",
                                                                                " %d " % rx))
    (proc / "77").mkdir(exist_ok=True)
    (proc / "77" / "cgroup").write_text("4:memory:/machine/a\n2:cpuacct:/machine/a\n0::/\n")
    cpu, mem = cg / "cpuacct" / "machine" / "a", cg / "memory" / "machine" / "a"
    cpu.mkdir(parents=True, exist_ok=True)
    mem.mkdir(parents=True, exist_ok=True)
    (cpu / "cpuacct.usage").write_text("%d\n" % usage_ns)
    (cpu / "cgroup.procs").write_text("77\n78\n79\n")
    (mem / "memory.usage_in_bytes").write_text("3000000\n")
    (mem / "memory.stat").write_text("total_inactive_file 1000000\n")
    upper = store / "oc1-0" / "upper" / "etc"
    upper.mkdir(parents=True, exist_ok=True)
    (upper / "hostname").write_text("x" * 5000)
    return proc, cg, store


def test_probe_cycles(tmp_path):
    proc, cg, store = fake_tree(tmp_path, 1_000_000_000, 500, 9000)
    driver = FakeDriver([FakeGuest("oc1-0", 77), FakeGuest("other", 88)])
    probe = probes.Probe("eth0", driver, proc=proc, cgroups=cg, store=store)
    first = probe.cycle(now=100.0)
    # no rates on a first reading; the controller is not one of the instance's processes
    assert first["instances"]["oc1-0"] == {"memory": 2000000, "procs": 2,
                                           "rootfs": first["instances"]["oc1-0"]["rootfs"]}
    assert first["instances"]["oc1-0"]["rootfs"] >= 5000
    assert "other" not in first["instances"] and "cpu" not in first["node"]
    assert first["cpu_seconds"] > 0
    fake_tree(tmp_path, 2_000_000_000, 500 + 2000, 9000 + 4000)   # 1 s of CPU in 2 s
    second = probe.cycle(now=102.0)
    inst = second["instances"]["oc1-0"]
    assert inst["cpu"] == pytest.approx(25.0)       # 1 s over 2 s on 2 cores
    assert inst["net_rx"] == pytest.approx(2000.0)  # the host end sent 4000 B... in 2 s
    assert inst["net_tx"] == pytest.approx(1000.0)
    assert second["node"]["load"] == 0.5 and 0 <= second["node"]["disk"] <= 100


def test_probe_survives_libvirtd_going_away(tmp_path):
    proc, cg, store = fake_tree(tmp_path, 1, 1, 1)
    driver = FakeDriver(None)
    probe = probes.Probe("eth0", driver, proc=proc, cgroups=cg, store=store)
    assert probe.cycle(now=1.0)["instances"] == {}
    assert driver.closed == 1
    driver.guests = [FakeGuest("oc1-0", 77)]
    assert "oc1-0" in probe.cycle(now=2.0)["instances"]


def test_a_vanished_instance_is_skipped(tmp_path):
    proc, cg, store = fake_tree(tmp_path, 1, 1, 1)
    probe = probes.Probe("eth0", FakeDriver([FakeGuest("oc1-0", 999)]), proc=proc, cgroups=cg,
                         store=store)
    assert probe.cycle(now=1.0)["instances"] == {}


def test_tree_bytes_counts_hard_links_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 8192)
    os.link(tmp_path / "a", tmp_path / "b")
    os.symlink("/etc/passwd", tmp_path / "c")
    (tmp_path / "d").mkdir()
    one = probes.tree_bytes(tmp_path)
    (tmp_path / "d" / "e").write_bytes(b"y" * 8192)
    assert 8192 <= one and probes.tree_bytes(tmp_path) >= one + 8192
    assert probes.tree_bytes(tmp_path / "missing") == 0


def test_host_states():
    nodes = {"n1": [{"state": "Alive"}, {"state": "Alive"}],
             "n2": [{"state": "Alive"}, {"state": "Suspected"}], "n3": []}
    assert monitor.host_states(nodes) == {"n1": "Alive", "n2": "Alive,Suspected", "n3": "absent"}


@pytest.mark.parametrize("spec,error", [
    ({"name": "a", "subject": "x", "metric": "cpu", "threshold": 1, "period": "1s"},
     "shorter than the monitor's interval"),
    ({"name": "a", "subject": "x", "metric": "cpu", "threshold": 1, "notify": "mailto://x"},
     "a list of URLs"),
    ({"name": "a", "subject": "x", "metric": "cpu", "threshold": 1, "evil": 1},
     "an alarm needs"),
    ({"name": "a", "subject": "x", "metric": "disk", "threshold": 1}, "unknown instance metric"),
    (["not", "a", "dict"], "an alarm needs"),
])
def test_alarm_specs_are_checked_before_anything(spec, error):
    with pytest.raises(Refused, match=error):
        alarms.create_from_spec(None, "alice", spec, 5, {"instance": {"x"}})


def test_an_alarm_on_a_stranger_is_not_found():
    with pytest.raises(NotFound):
        alarms.create_from_spec(None, "alice", {"name": "a", "subject": "bobs", "metric": "cpu",
                                                "threshold": 1}, 5, {"instance": {"x"}})


@pytest.mark.parametrize("domain", ["../x", "oc1-0; rm -rf /", "", "oc1", "OC1-0", "oc1-0\n"])
def test_access_checks_the_domain_before_libvirt(domain):
    from oarcloud_lib.node import access
    with pytest.raises(Refused):
        access.guest(domain, driver=object())


def test_access_usage():
    from oarcloud_lib.node import access
    assert access.main([]) == 2 and access.main(["exec"]) == 2 and access.main(["nope", "x"]) == 2
