"""Per-instance limits on a node, beyond memory and CPU (the domain's XML).

I/O: the disk holding the instances' roots (io_device) gets a throttle per
instance, scaled by its cores (io_tune), which libvirt writes in the
instance's blkio cgroup (cgroup v1 blkio.throttle.*, v2 io.max) from the
domain's <blkiotune>.  A node whose instances live on no block device of its
own (tmpfs, NFS, btrfs subvolumes) gets none, and says so in its log.

Processes, which libvirt's LXC driver does not limit: the pids cgroup, so
that no instance can exhaust the node's process table for the others (a fork
bomb stops at its own limit).

libvirt puts an instance's processes in one cgroup per controller it knows
(/proc/INIT/cgroup names them), but not in the pids controller: there it
leaves them in libvirtd's own.  The instance then gets a pids cgroup of ours,
at the same path as its memory cgroup (machine/lxc-PID-DOMAIN.libvirt-lxc),
and every process of the instance is moved in; `release` removes it once the
instance is gone.
"""
import logging
import os
import re
import time
from pathlib import Path

from oarcloud_lib import metrics
from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)
MOVE_ROUNDS = 50
MOVE_AT_ONCE = 20  # rounds before the first pause
MOVE_PAUSE = 0.01  # s between two rounds: a fork in flight lands in a cgroup


IO_KEYS = ("read_bytes_sec", "write_bytes_sec", "read_iops_sec", "write_iops_sec")


def io_device(path, sys_dev="/sys/dev/block", dev_dir="/dev"):
    """The whole disk (/dev/NAME) holding path, or None when it is on no block
    device (a throttle applies to a disk: a partition's is its disk's)."""
    try:
        dev = os.stat(path).st_dev
    except FileNotFoundError:
        return None
    node = Path(sys_dev, "%d:%d" % (os.major(dev), os.minor(dev)))
    if os.major(dev) == 0 or not node.exists():
        return None
    real = node.resolve()
    disk = real.parent if (real / "partition").exists() else real
    found = Path(dev_dir, disk.name)
    return str(found) if found.exists() else None


def io_tune(device, cores, conf):
    """The domain's <blkiotune> device (path and throttles), or None: each
    throttle of the site (per core, 0 none) times the instance's cores."""
    per_core = {"read_bytes_sec": conf.io_read_bytes_per_core,
                "write_bytes_sec": conf.io_write_bytes_per_core,
                "read_iops_sec": conf.io_read_iops_per_core,
                "write_iops_sec": conf.io_write_iops_per_core}
    limits = {k: v * cores for k, v in per_core.items() if v > 0}
    if device is None or not limits:
        return None
    return dict(limits, path=device)


def _groups(init_pid, proc):
    try:
        return metrics.parse_proc_cgroup(Path(proc, str(init_pid), "cgroup").read_text())
    except OSError as e:
        raise NotReady(detail="instance init %s: %s" % (init_pid, e.strerror)) from None


def _hierarchies(groups, cgroups):
    """(pids hierarchy root, the instance's path in it, the path of a controller
    libvirt placed it in) for cgroup v1, or v2 (at the root or at unified/)."""
    cgroups = Path(cgroups)
    placed = next((groups[c] for c in ("memory", "cpu", "") if groups.get(c, "/").strip("/")),
                  None)
    if (cgroups / "pids" / "cgroup.procs").is_file():
        return cgroups / "pids", groups.get("pids", "/"), placed
    for root in (cgroups, cgroups / "unified"):
        controllers = root / "cgroup.controllers"
        if controllers.is_file() and "pids" in controllers.read_text().split():
            return root, groups.get("", "/"), placed
    raise NotReady(detail="no pids controller mounted under %s" % cgroups)


def pids_dir(init_pid, cgroups="/sys/fs/cgroup", proc="/proc"):
    """The instance's pids cgroup directory, or None while it is in its
    hierarchy's root.  Raises NotReady."""
    root, path, _ = _hierarchies(_groups(init_pid, proc), cgroups)
    return root / path.strip("/") if path.strip("/") else None


def _write(path, value):
    path.write_text("%s\n" % value)
    got = path.read_text().strip()
    if got != str(value):
        raise NotReady(detail="%s reads %s, not %s" % (path, got, value))


def _procs(d):
    try:
        return set((d / "cgroup.procs").read_text().split())
    except FileNotFoundError:
        return set()


def _alive(pid, proc):
    """Whether pid is a process that can still change cgroups (not a zombie)."""
    try:
        stat = Path(proc, pid, "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


def _move_all(source, d, init_pid, proc):
    """Move every process of source into d, until none is left outside: one
    that forks meanwhile has its child listed on the next round; a zombie (its
    parent not yet told) cannot move and counts for nothing."""
    for i in range(MOVE_ROUNDS):
        outside = {pid for pid in _procs(source) - _procs(d) if _alive(pid, proc)}
        if not outside:
            return
        for pid in outside:
            try:
                with open(d / "cgroup.procs", "a") as f:  # one pid per write
                    f.write("%s\n" % pid)
            except ProcessLookupError:
                pass
        if i >= MOVE_AT_ONCE:  # still forking: give it time (a busy boot)
            time.sleep(MOVE_PAUSE)
    raise NotReady(detail="the processes of instance init %s kept escaping %s" % (init_pid, d))


def limit_pids(init_pid, maximum, node_share=0.5, cgroups="/sys/fs/cgroup", proc="/proc"):
    """Cap the instance's processes at maximum (giving it a pids cgroup of its own
    when libvirt did not), and all instances' together (their partition, e.g.
    machine/) at node_share of the node's pid_max; values read back.  Returns
    the instance's directory.  Raises NotReady."""
    groups = _groups(init_pid, proc)
    root, path, placed = _hierarchies(groups, cgroups)
    if path.strip("/"):
        d, source = root / path.strip("/"), None
    elif placed:
        d, source = root / placed.strip("/"), Path(cgroups, "memory", placed.strip("/"))
        if not (source / "cgroup.procs").is_file():
            source = Path(cgroups, "cpu", placed.strip("/"))
        d.mkdir(parents=True, exist_ok=True)
    else:
        raise NotReady(detail="instance init %s is in no cgroup of its own" % init_pid)
    if d.parent != root and (d.parent / "pids.max").is_file():
        cap = max(maximum, int(int(Path(proc, "sys/kernel/pid_max").read_text()) * node_share))
        if (d.parent / "pids.max").read_text().strip() != str(cap):
            _write(d.parent / "pids.max", cap)
    _write(d / "pids.max", maximum)
    if source is not None:
        _move_all(source, d, init_pid, proc)
    return d


def release(domain, cgroups="/sys/fs/cgroup"):
    """Remove the (empty) pids cgroups of domain's past starts; returns how many."""
    name = re.compile(r"^lxc-[0-9]+-%s\.libvirt-lxc\Z" % re.escape(domain))
    removed = 0
    for root in (Path(cgroups, "pids"), Path(cgroups), Path(cgroups, "unified")):
        for d in (root / "machine").glob("lxc-*-%s.libvirt-lxc" % domain):
            if name.match(d.name):
                try:
                    d.rmdir()
                    removed += 1
                except OSError as e:
                    LOG.warning("pids cgroup %s of %s not removed: %s", d, domain, e.strerror)
    return removed
