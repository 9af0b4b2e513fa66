"""Live resize, its pure logic: CPU lists, which CPUs an instance gets,
claims, both cgroup versions' writes on a fake tree (the real ones:
tests/integration/test_instance_resize.py), and the values refused."""
import os
import time
from collections import Counter

import pytest

from oarcloud_lib.errors import Refused
from oarcloud_lib.node import resize
from oarcloud_lib.service import resize as service

MiB = 1 << 20


@pytest.mark.parametrize("text, cpus", [("0", [0]), ("0-3", [0, 1, 2, 3]),
                                        ("0-1,4,6-7\n", [0, 1, 4, 6, 7]), ("", [])])
def test_cpu_lists_read_and_write_as_the_kernel_does(text, cpus):
    assert resize.parse_cpus(text) == cpus
    assert resize.format_cpus(cpus) == text.strip()


def test_an_instance_gets_the_least_used_cpus_and_keeps_its_own():
    online = [0, 1, 2, 3]
    assert resize.pick(2, Counter(), online) == [0, 1]
    assert resize.pick(2, Counter({0: 1, 1: 1}), online) == [2, 3]
    assert resize.pick(1, Counter({0: 2, 1: 1, 2: 1, 3: 1}), online) == [1]
    # growing keeps what it has and adds the least used
    assert resize.pick(3, Counter({1: 1, 2: 1}), online, keep=[0]) == [0, 1, 3]
    # shrinking keeps its least shared
    assert resize.pick(1, Counter({2: 3}), online, keep=[2, 3]) == [3]
    # a node with fewer CPUs than cores gives them all; a CPU gone offline is not kept
    assert resize.pick(8, Counter(), online) == online
    assert resize.pick(1, Counter(), [0, 1], keep=[5]) == [0]


def test_claims_spread_instances_and_drop_stale_ones(tmp_path):
    online = [0, 1]
    assert resize.claim("oc1-0", 1, set(), claims=tmp_path, online=online) == [0]
    # a create in flight (not yet defined, but fresh) counts
    assert resize.claim("oc1-1", 1, set(), claims=tmp_path, online=online) == [1]
    assert resize.claimed("oc1-1", claims=tmp_path) == [1]
    # a claim of a domain libvirt no longer knows, old: dropped
    old = time.time() - resize.CLAIM_TTL - 10
    os.utime(tmp_path / "oc1-0", (old, old))
    assert resize.claim("oc2-0", 1, {"oc1-1"}, claims=tmp_path, online=online) == [0]
    assert not (tmp_path / "oc1-0").exists()
    resize.forget("oc2-0", claims=tmp_path)
    resize.forget("oc2-0", claims=tmp_path)  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["oc1-1"]


def _v1_tree(tmp_path, limit=256 * MiB, usage=10 * MiB):
    path = "machine/lxc-1-oc1-0.libvirt-lxc"
    for controller, files in {
            "cpuset": {"cpuset.cpus": "0-1"},
            "cpu": {"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000",
                    "cpu.shares": "2048"},
            "memory": {"memory.limit_in_bytes": str(limit),
                       "memory.usage_in_bytes": str(usage)}}.items():
        d = tmp_path / "cg" / controller / path
        d.mkdir(parents=True)
        for name, value in files.items():
            (d / name).write_text(value + "\n")
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "7" / "cgroup").write_text(
        "3:cpuset:/%s\n2:cpu:/%s\n1:memory:/%s\n" % (path, path, path))
    return resize.Cgroups(7, tmp_path / "cg", tmp_path / "proc")


def _v2_tree(tmp_path, usage):
    path = "machine/lxc-1-oc1-0.libvirt-lxc"
    d = tmp_path / "cg" / path
    d.mkdir(parents=True)
    for name, value in {"cpuset.cpus": "0", "cpu.max": "100000 100000", "cpu.weight": "39",
                        "memory.max": str(256 * MiB), "memory.high": "max",
                        "memory.current": str(usage)}.items():
        (d / name).write_text(value + "\n")
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "7" / "cgroup").write_text("0::/%s\n" % path)
    return resize.Cgroups(7, tmp_path / "cg", tmp_path / "proc"), d


def test_cgroup_v1_cores_and_memory_are_written_and_read_back(tmp_path):
    groups = _v1_tree(tmp_path)
    assert not groups.v2 and groups.quota_cores() == 2 and groups.cpus() == [0, 1]
    groups.set_cores(1)
    groups.set_cpus([1])
    groups.set_memory(512 * MiB)
    assert groups.quota_cores() == 1 and groups.cpus() == [1]
    assert (groups.cpu / "cpu.shares").read_text() == "1024\n"
    assert groups.memory_limit() == 512 * MiB


def test_cgroup_v1_a_cpuset_below_the_instance_s_narrows_from_the_bottom(tmp_path):
    groups = _v1_tree(tmp_path)
    child = groups.cpuset / "inner"
    child.mkdir()
    (child / "cpuset.cpus").write_text("0-1\n")
    groups.set_cpus([1])
    assert (child / "cpuset.cpus").read_text() == "1\n" and groups.cpus() == [1]
    groups.set_cpus([0])  # neither a subset nor a superset: widened, then narrowed
    assert (child / "cpuset.cpus").read_text() == "0\n" and groups.cpus() == [0]


def test_cgroup_v2_a_shrink_goes_through_memory_high_first(tmp_path):
    groups, d = _v2_tree(tmp_path, usage=50 * MiB)
    assert groups.v2 and groups.quota_cores() == 1
    groups.set_memory(128 * MiB, wait=0.1)
    assert groups.memory_limit() == 128 * MiB
    assert (d / "memory.high").read_text().strip() == "max"
    groups.set_cores(2)
    assert (d / "cpu.max").read_text().strip() == "200000 100000"
    assert (d / "cpu.weight").read_text().strip() == "79"


def test_cgroup_v2_a_shrink_usage_cannot_follow_is_infeasible_and_keeps_the_limit(tmp_path):
    groups, d = _v2_tree(tmp_path, usage=200 * MiB)
    with pytest.raises(resize.Infeasible, match="200 MiB in use does not fit in 128 MiB: the "
                                                "instance keeps 256 MiB"):
        groups.set_memory(128 * MiB, wait=0.1)
    assert groups.memory_limit() == 256 * MiB
    assert (d / "memory.high").read_text().strip() == "max"


@pytest.mark.parametrize("text", ["0", "-1", "two", "1025", "", "1.5"])
def test_bad_core_counts_are_refused(text):
    with pytest.raises(Refused, match="bad --cores"):
        service.parse_cores(text)


@pytest.mark.parametrize("text, says", [("16M", "below 32 MiB"), ("12Q", "bad size"),
                                        ("300G", "above 256 GiB"), ("", "bad size")])
def test_bad_memory_sizes_are_refused(text, says):
    with pytest.raises(Refused, match=says):
        service.parse_memory(text)


def test_a_resize_is_described_by_what_changed():
    before = {"cores": 2, "memory": 256 * MiB}
    assert service.describe(before, {"cores": 1, "memory": 512 * MiB}) == \
        "cores 2 -> 1, memory 256 MiB -> 512 MiB"
    assert service.describe(before, {"cores": 4, "memory": 256 * MiB}) == "cores 2 -> 4"
