"""Instance disks on a node: each instance's writes land on a filesystem of its own size.

An instance's directory (its overlay's upper and work directories, rootfs) is
the root of an ext4 filesystem of the instance's disk size, held in a file
under paths.DISKS and mounted through a loop device (direct I/O: the node's
page cache holds the instance's data once).  Inside, `df /` shows that size
and a write past it gets ENOSPC; the node's own disk and the other instances'
disks are untouched.  Why this and not project quotas (docs/storage.md): this
kernel has no quota support (CONFIG_QUOTA), and a filesystem of its own also
bounds inodes and metadata.

    /var/lib/oarcloud/disks/                 0700 root
        <domain>        the instance's disk (0600), mounted at instances/<domain>
        <domain>.kept   the disk of an ended instance whose changes wait for
                        the server's saver, mounted at kept/<domain>

A disk is reserved (its blocks allocated on the node's disk, so that the
instances of a node never take each other's space) or sparse
(disk_allocation: blocks taken as they are written; for a site whose nodes'
disks hold every instance's full size anyway, and for the lab).  The mounts
are autoclear loop mounts: unmounting, by us or by the namespace's end, frees
the loop device.
"""
import os
from pathlib import Path

from oarcloud_lib import paths
from oarcloud_lib.catalog.instances import MIN_DISK as MIN_SIZE
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady, Refused
from oarcloud_lib.tools import ext4
KEPT_SUFFIX = ".kept"
# nosuid, nodev: nothing of the instance's is ever a device or a set-uid file
# for the node (the instance sees its root through its overlay, whose own
# options are libvirt's).  nobarrier: an instance's fsync reaches its disk's
# file, not the node's disk cache (bench/disk.py: synchronous random writes
# 0.4x the node's disk with barriers, about 1x without).  The root dies with
# its job, also when its node crashes; changes kept for a save are flushed
# when they are kept (keep).
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime,nobarrier"


def image_of(domain, kept=False, base=None):
    return Path(base or paths.DISKS) / (domain + (KEPT_SUFFIX if kept else ""))


def mounted(path):
    """Whether a filesystem is mounted at path (a disk is another filesystem
    than its mount point's parent, which os.path.ismount sees)."""
    return os.path.ismount(path)


def _source(mountpoint):
    """The device mounted at mountpoint (from /proc/self/mountinfo), or None."""
    want = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == want:
                return fields[fields.index("-") + 2]
    return None


def attach(image, mountpoint, runner=LOCAL, options=MOUNT_OPTIONS):
    """Mount the disk image (an ext4 filesystem in a file) at mountpoint
    through a loop device with direct I/O (idempotent)."""
    if mounted(mountpoint):
        return
    Path(mountpoint).mkdir(mode=0o700, exist_ok=True)
    runner.run(["mount", "-t", "ext4", "-o", options, str(image), str(mountpoint)])
    device = _source(mountpoint)
    if device and device.startswith("/dev/loop"):
        # Best effort: a backing filesystem without O_DIRECT keeps buffered I/O.
        runner.run(["losetup", "--direct-io=on", device], check=False)


def create(domain, size, mountpoint, uid, allocation="reserved", base=None, runner=LOCAL):
    """The instance's disk of size bytes, its root owned by uid, mounted at
    mountpoint; idempotent (an existing disk is mounted as it is).  Raises
    Refused (a bad size or allocation), NotReady (no room on the node)."""
    if size < MIN_SIZE:
        raise Refused(detail="a disk of %d bytes is below the %d MiB minimum"
                      % (size, MIN_SIZE >> 20))
    if mounted(mountpoint):
        return mountpoint
    paths.ensure_dir(base or paths.DISKS, 0o700, 0, 0)
    image = image_of(domain, base=base)
    if not image.exists():
        ext4.make(image, size, allocation, uid, runner)
    attach(image, mountpoint, runner)
    lost = Path(mountpoint, "lost+found")
    if lost.is_dir():
        lost.rmdir()  # e2fsck makes it again when it needs one
    return mountpoint


def detach(mountpoint, runner=LOCAL):
    """Unmount the disk at mountpoint, if one is there (its loop device goes with it)."""
    if not mounted(mountpoint):
        return False
    runner.run(["umount", str(mountpoint)], check=False)
    if mounted(mountpoint):
        # Something still holds it (a process of a dying instance): go when it lets go.
        runner.run(["umount", "-l", str(mountpoint)])
    return True


def remove(domain, mountpoint, base=None, runner=LOCAL):
    """Unmount and delete the instance's disk; True if anything was there."""
    found = detach(mountpoint, runner)
    try:
        image_of(domain, base=base).unlink()
        found = True
    except FileNotFoundError:
        pass
    return found


def keep(domain, mountpoint, kept_mountpoint, base=None, runner=LOCAL):
    """Move the (unmounted-overlay) instance's disk to its kept place, its
    filesystem intact (no copy): mounted at kept_mountpoint under the kept name."""
    image, kept = image_of(domain, base=base), image_of(domain, kept=True, base=base)
    if not image.exists():
        raise NotReady(detail="the disk of %s is not on this node" % domain)
    if kept.exists():
        drop(domain, kept_mountpoint, base, runner)
    detach(mountpoint, runner)
    fd = os.open(image, os.O_RDONLY)
    try:
        os.fsync(fd)  # on the node's disk: kept changes outlive a node crash
    finally:
        os.close(fd)
    os.rename(image, kept)
    attach(kept, kept_mountpoint, runner)


def ensure_kept(domain, kept_mountpoint, base=None, runner=LOCAL):
    """The kept disk of domain mounted (again, after the node restarted); False if none."""
    kept = image_of(domain, kept=True, base=base)
    if not kept.exists():
        return False
    attach(kept, kept_mountpoint, runner)
    return True


def drop(domain, kept_mountpoint, base=None, runner=LOCAL):
    detach(kept_mountpoint, runner)
    try:
        image_of(domain, kept=True, base=base).unlink()
    except FileNotFoundError:
        pass


def usage(mountpoint):
    """{size, used, free} in bytes of the disk mounted at mountpoint, or None."""
    if not mounted(mountpoint):
        return None
    st = os.statvfs(mountpoint)
    size = st.f_blocks * st.f_frsize
    return {"size": size, "used": size - st.f_bfree * st.f_frsize,
            "free": st.f_bavail * st.f_frsize}


def domains(base=None):
    """The domains with a disk (live, not kept) in this node's disks directory."""
    d = Path(base or paths.DISKS)
    return sorted(p.name for p in d.glob("oc*") if not p.name.endswith(KEPT_SUFFIX)) \
        if d.is_dir() else []

