"""Per-instance pids limits on a fake /proc and cgroup tree (the files the kernel keeps)."""
import pytest

from oarcloud_lib.node import limits
from oarcloud_lib.errors import NotReady

LIBVIRT = "machine/lxc-9-oc1-0.libvirt-lxc"


def tree(tmp_path, cgroup_lines, dirs, procs=("42", "43"), zombies=()):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42/cgroup").write_text(cgroup_lines)
    for pid in tuple(procs) + tuple(zombies):
        (proc / pid).mkdir(exist_ok=True)
        (proc / pid / "stat").write_text("%s (a (b) c) %s 1 1 1\n" % (pid, "Z" if pid in zombies
                                                                      else "S"))
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/pid_max").write_text("100000\n")
    for d in dirs:
        (cg / d).mkdir(parents=True)
        (cg / d / "cgroup.procs").write_text("")
        if d.count("/") > 0:
            (cg / d / "pids.max").write_text("max\n")
    (cg / "memory" / LIBVIRT / "cgroup.procs").write_text("\n".join(tuple(procs) + tuple(zombies))
                                                        + "\n")
    return proc, cg


def test_an_instance_libvirt_left_in_the_pids_root_gets_its_own_capped_cgroup(tmp_path):
    proc, cg = tree(tmp_path, "8:pids:/\n4:memory:/%s\n0::/\n" % LIBVIRT,
                    ["pids", "pids/machine", "memory", "memory/machine", "memory/" + LIBVIRT])
    assert limits.pids_dir(42, cgroups=cg, proc=proc) is None
    d = limits.limit_pids(42, 4096, cgroups=cg, proc=proc)
    assert d == cg / "pids" / LIBVIRT
    assert (d / "pids.max").read_text() == "4096\n"
    assert (cg / "pids/machine/pids.max").read_text() == "50000\n"  # half the node's pid_max
    assert sorted((d / "cgroup.procs").read_text().split()) == ["42", "43"]  # all moved
    # gone with the instance (a real cgroup directory is removed by rmdir alone)
    (d / "pids.max").unlink()
    (d / "cgroup.procs").unlink()
    assert limits.release("oc1-0", cgroups=cg) == 1 and not d.exists()
    assert limits.release("oc1-0", cgroups=cg) == 0


def test_an_instance_libvirt_placed_is_capped_where_it_is(tmp_path):
    proc, cg = tree(tmp_path, "8:pids:/%s\n4:memory:/%s\n" % (LIBVIRT, LIBVIRT),
                    ["pids", "pids/machine", "pids/" + LIBVIRT, "memory/" + LIBVIRT])
    d = limits.limit_pids(42, 100, cgroups=cg, proc=proc)
    assert d == cg / "pids" / LIBVIRT and (d / "pids.max").read_text() == "100\n"
    assert (d / "cgroup.procs").read_text() == ""  # nothing moved


def test_an_init_in_no_cgroup_or_gone_is_refused(tmp_path):
    proc, cg = tree(tmp_path, "8:pids:/\n4:memory:/\n", ["pids", "memory/" + LIBVIRT])
    with pytest.raises(NotReady, match="no cgroup of its own"):
        limits.limit_pids(42, 100, cgroups=cg, proc=proc)
    with pytest.raises(NotReady):
        limits.limit_pids(44, 100, cgroups=cg, proc=proc)


def test_a_zombie_left_in_the_memory_cgroup_is_not_an_escape(tmp_path):
    proc, cg = tree(tmp_path, "8:pids:/\n4:memory:/%s\n0::/\n" % LIBVIRT,
                    ["pids", "pids/machine", "memory", "memory/machine", "memory/" + LIBVIRT],
                    zombies=("44",))
    d = limits.limit_pids(42, 4096, cgroups=cg, proc=proc)
    assert sorted((d / "cgroup.procs").read_text().split()) == ["42", "43"]


def test_io_device_is_the_whole_disk_of_a_partition(tmp_path):
    import os
    sys_dev = tmp_path / "sys/dev/block"
    disk = tmp_path / "sys/devices/virtual/block/vda"
    (disk / "vda1").mkdir(parents=True)
    (disk / "vda1/partition").write_text("1\n")
    sys_dev.mkdir(parents=True)
    st = os.stat(tmp_path)
    (sys_dev / ("%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)))).symlink_to(disk / "vda1")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/vda").write_text("")
    got = limits.io_device(tmp_path, sys_dev=sys_dev, dev_dir=tmp_path / "dev")
    if os.major(st.st_dev) == 0:
        assert got is None  # tmp on no block device here
    else:
        assert got == str(tmp_path / "dev/vda")  # the partition's disk
    assert limits.io_device(tmp_path / "missing", sys_dev=sys_dev) is None


def test_io_tune_scales_by_cores_and_skips_what_is_off():
    from oarcloud_lib.config import SiteConfig
    conf = SiteConfig(io_read_bytes_per_core=10, io_write_bytes_per_core=0,
                      io_read_iops_per_core=5, io_write_iops_per_core=7)
    assert limits.io_tune("/dev/vda", 3, conf) == {
        "path": "/dev/vda", "read_bytes_sec": 30, "read_iops_sec": 15, "write_iops_sec": 21}
    assert limits.io_tune(None, 3, conf) is None
    off = SiteConfig(io_read_bytes_per_core=0, io_write_bytes_per_core=0,
                     io_read_iops_per_core=0, io_write_iops_per_core=0)
    assert limits.io_tune("/dev/vda", 3, off) is None
