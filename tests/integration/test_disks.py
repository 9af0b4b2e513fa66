"""Instance disks (docs/storage.md): each instance's root holds what its disk
size allows and no more, on a filesystem of its own (oarcloud_lib.node.disk).

The first tests drive the node's disk code directly on this machine (real
loop devices, real ext4); the others launch instances on the lab as ordinary
users and fill their disks from inside."""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import admin, node_exec, run
from test_instances import launch, node_leftovers, oarcloud

from oarcloud_lib.node import disk
from oarcloud_lib.tools import ext4

MiB = 1 << 20


def loops_of(path):
    """The loop devices whose backing file is path."""
    out = run(["losetup", "-j", str(path)]).stdout
    return [line.split(":")[0] for line in out.splitlines()]


@pytest.fixture
def base():
    with tempfile.TemporaryDirectory(prefix="oarcloud-disks-") as tmp:
        yield Path(tmp)
        for m in sorted(Path(tmp).rglob("*"), reverse=True):
            if m.is_dir() and os.path.ismount(m):
                run(["umount", "-l", str(m)])


@pytest.mark.parametrize("allocation", ext4.ALLOCATIONS)
def test_a_disk_is_a_filesystem_of_its_size_that_leaves_nothing_when_removed(base, allocation):
    """df shows the disk's own size; a write past it gets ENOSPC; a reserved
    disk holds its blocks on the node's disk, a sparse one only what is
    written; removal leaves no mount, loop device or file."""
    mnt, image = base / "instances" / "oc1-0", base / "disks" / "oc1-0"
    mnt.parent.mkdir()
    mnt.mkdir()
    disk.create("oc1-0", 64 * MiB, mnt, 123456, allocation, base / "disks")
    st = os.statvfs(mnt)
    assert 40 * MiB < st.f_blocks * st.f_frsize <= 64 * MiB
    assert os.stat(mnt).st_uid == 123456 and not (mnt / "lost+found").exists()
    assert os.stat(image).st_mode & 0o777 == 0o600
    held = os.stat(image).st_blocks * 512
    assert held >= 64 * MiB if allocation == "reserved" else held < 16 * MiB
    assert len(loops_of(image)) == 1
    assert Path("/sys/block/%s/loop/dio" % loops_of(image)[0][5:]).read_text().strip() == "1"
    with pytest.raises(OSError) as e, open(mnt / "fill", "wb") as f:
        for _ in range(128):
            f.write(b"\0" * MiB)
            f.flush()
            os.fsync(f.fileno())
    assert e.value.errno == 28  # ENOSPC
    assert disk.usage(mnt)["free"] < MiB
    # Idempotent: a second create mounts nothing more.
    disk.create("oc1-0", 64 * MiB, mnt, 123456, allocation, base / "disks")
    assert len(loops_of(image)) == 1
    assert disk.remove("oc1-0", mnt, base / "disks")
    assert not image.exists() and not os.path.ismount(mnt) and not loops_of(image)
    assert not disk.remove("oc1-0", mnt, base / "disks")


def test_kept_changes_keep_their_disk_and_twenty_cycles_leave_nothing(base):
    (base / "instances").mkdir()
    (base / "kept").mkdir()
    for i in range(20):
        dom = "oc2-%d" % i
        mnt, kept = base / "instances" / dom, base / "kept" / dom
        mnt.mkdir()
        disk.create(dom, 32 * MiB, mnt, 0, "sparse", base / "disks")
        (mnt / "upper").mkdir()
        (mnt / "upper" / "f").write_text(dom)
        if i % 2:
            disk.keep(dom, mnt, kept, base / "disks")
            assert (kept / "upper" / "f").read_text() == dom and not os.path.ismount(mnt)
            disk.detach(kept)  # as after a node restart
            assert disk.ensure_kept(dom, kept, base / "disks")
            assert (kept / "upper" / "f").read_text() == dom
            disk.drop(dom, kept, base / "disks")
        disk.remove(dom, mnt, base / "disks")
    assert list((base / "disks").iterdir()) == []
    assert not run(["losetup", "-j", str(base / "disks" / "oc2-1.kept")]).stdout
    assert not [l for l in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(base) in l]


def test_a_reserved_disk_the_node_has_no_room_for_is_refused_and_leaves_nothing(base):
    with pytest.raises(Exception, match=r"no room for a .* MiB disk on this node "
                                        r"\(.* MiB free, 1024 MiB kept\)"):
        disk.create("oc3-0", shutil.disk_usage(base).free, base / "m", 0, "reserved",
                    base / "disks")
    assert list((base / "disks").iterdir()) == []


def df_root(user, name):
    """(size, used) in bytes of / inside the instance, as df shows them."""
    out = oarcloud(user, "exec", name, "--", "df", "-k", "/", check=True).stdout
    size, used = out.splitlines()[-1].split()[1:3]
    return int(size) << 10, int(used) << 10


def fill(user, name, path, mib):
    return oarcloud(user, "exec", name, "--", "sh", "-c",
                    "dd if=/dev/zero of=%s bs=1M count=%d conv=fsync 2>&1" % (path, mib))


def test_an_instance_fills_its_own_disk_and_its_neighbour_keeps_writing(make_user):
    """alice's instance gets ENOSPC past its 64 MiB, and root in it cannot
    get more room; bob's instance on the same node goes on writing; deleting
    them leaves no disk, mount or loop device on the node."""
    alice, bob = make_user(), make_user()
    (full,) = launch(alice, "--name", "full", "--disk", "64M", "--cores", "1",
                     "--property", "host='node-1'")
    (calm,) = launch(bob, "--name", "calm", "--cores", "1", "--property", "host='node-1'")
    assert full["disk"] == 64 * MiB and full["node"] == calm["node"] == "node-1"
    size, _ = df_root(alice, "full")
    assert 40 * MiB < size <= 64 * MiB
    assert df_root(bob, "calm")[0] > 3 << 30  # the site's default, 4 GiB
    res = fill(alice, "full", "/fill", 100)
    assert "No space left on device" in res.stdout + res.stderr, res.stdout + res.stderr
    # Root in the instance: its root is an overlay it cannot remount larger,
    # and the disk itself is not in its mount namespace.
    for attack in ("mount -o remount,size=1G /", "mount -t tmpfs none /mnt && "
                   "dd if=/dev/zero of=/mnt/x bs=1M count=8",
                   "ls /var/lib/oarcloud/disks"):
        oarcloud(alice, "exec", "full", "--", "sh", "-c", attack + " >/dev/null 2>&1")
    assert fill(alice, "full", "/more", 8).returncode != 0
    assert df_root(alice, "full")[0] == size
    res = fill(bob, "calm", "/data", 100)
    assert res.returncode == 0, res.stdout + res.stderr
    # On the node: alice's disk is a 64 MiB file, whatever she wrote.
    dom = "oc%d-0" % full["job_id"]
    out = node_exec("node-1", "stat", "-c", "%s", "/var/lib/oarcloud/disks/" + dom, check=True)
    assert int(out.stdout) == 64 * MiB
    shown = json.loads(oarcloud(alice, "show", "full", "--json", check=True).stdout)
    assert shown["disk"] == 64 * MiB and "disk_h" not in shown
    oarcloud(alice, "delete", "full", "--wait", check=True)
    oarcloud(bob, "delete", "calm", "--wait", check=True)
    for job in (full["job_id"], calm["job_id"]):
        assert node_leftovers("oc%d-" % job) == {}


@pytest.mark.parametrize("size, says", [
    ("0", "bad value for disk"), ("1.5G", "bad value for disk"), ("lots", "bad value for disk"),
    ("16M", "below the 32 MiB"),
    ("300G", "above the site's 256 GiB per instance")])
def test_a_bad_disk_size_is_refused_before_anything_is_created(make_user, size, says):
    user = make_user()
    res = oarcloud(user, "launch", "--name", "bad", "--disk", size, "--walltime", "0:05")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and says in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert json.loads(oarcloud(user, "list", "--json", check=True).stdout) == []
    jobs = run(["oarstat", "-u", user, "-J"]).stdout.strip()
    assert jobs in ("", "{}"), jobs


def test_the_disk_quota_counts_the_disks_of_live_instances(make_user):
    user = make_user()
    admin("quota", "set", user, "--disk", "1G", check=True)
    res = oarcloud(user, "launch", "--name", "big", "--disk", "2G", "--walltime", "0:05")
    assert res.returncode == 5, res.stdout + res.stderr
    assert re.search(r"quota: disk: 0 B used of 1 GiB, this asks 2 GiB more", res.stderr), \
        res.stderr
    launch(user, "--name", "small", "--disk", "768M", "--cores", "1")
    res = oarcloud(user, "launch", "--name", "more", "--disk", "512M", "--walltime", "0:05")
    assert res.returncode == 5 and "768 MiB used of 1 GiB" in res.stderr, res.stderr
    rows = {r["resource"]: r for r in json.loads(oarcloud(user, "quota", "--json").stdout)}
    assert rows["disk"]["used"] == 768 * MiB and rows["disk"]["limit"] == 1 << 30
    oarcloud(user, "delete", "small", "--wait", check=True)
