"""Per-tenant uid ranges on a node, through idmapped mounts (Linux 5.19+).

A node's image cache is unpacked once, owned in one range (CACHE_BASE..+65535),
and readable by root only.  Each tenant's instances run in a range of their
own (tenant_base), so that nothing one tenant's instance root owns on the node
belongs to another tenant.  An instance's overlay sees the cache through an
idmapped bind mount that shows CACHE_BASE+n as tenant_base+n: launch stays
O(1) in image size (no copy, no chown), and a setuid file of an image is only
ever its own tenant's.

    with idmap.Userns(tenant_base) as ns:
        idmap.bind(cache_rootfs, mountpoint, ns)   # then overlay on mountpoint

The mapping is carried by a user namespace: a `sleep` in a new user
namespace, its uid_map and gid_map written by us (root of the parent
namespace), its /proc/PID/ns/user held open for mount_setattr(2).
"""
import ctypes
import errno
import logging
import os
import subprocess
import time

from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)
COUNT = 65536
# The image cache's owners (the store's 0..65535 shifted once, at unpack).
CACHE_BASE = 1000000
# Tenants: TENANT_BASE + slot * COUNT, slot >= 1 (the account's id_slot).
TENANT_BASE = 1000000
MAX_SLOT = (2 ** 32 - 2 - TENANT_BASE) // COUNT - 1

# x86_64 and aarch64 share these numbers (the new mount API is in the generic table).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MOUNT_ATTR_IDMAP = 0x00100000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def tenant_base(slot):
    """The first node uid of a tenant's range.  Raises NotReady for a bad slot."""
    if not isinstance(slot, int) or not 1 <= slot <= MAX_SLOT:
        raise NotReady(detail="bad uid range slot %r for a tenant" % (slot,))
    return TENANT_BASE + slot * COUNT


def _check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        raise NotReady(detail="%s: %s" % (what, os.strerror(e)))
    return ret


class Userns:
    """A user namespace mapping CACHE_BASE.. to base.. (uids and gids), for the block."""

    def __init__(self, base, inner=CACHE_BASE, count=COUNT):
        self.base, self.inner, self.count = base, inner, count
        self.proc = self.fd = None

    def __enter__(self):
        own = os.readlink("/proc/self/ns/user")
        self.proc = subprocess.Popen(["unshare", "--user", "--", "sleep", "600"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while os.readlink("/proc/%d/ns/user" % self.proc.pid) == own:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise NotReady(detail="could not make a user namespace for uid range %d"
                                   % self.base)
                time.sleep(0.001)
            line = "%d %d %d\n" % (self.inner, self.base, self.count)
            for name in ("uid_map", "gid_map"):
                with open("/proc/%d/%s" % (self.proc.pid, name), "w") as f:
                    f.write(line)
            self.fd = os.open("/proc/%d/ns/user" % self.proc.pid, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
        self._stop()


def clone(source, userns, readonly=True):
    """A detached copy of the mount at source seen through userns's mapping,
    nosuid and nodev (read-only by default), as a file descriptor the caller
    closes: move_mount() puts it anywhere, also in another mount namespace.
    Raises NotReady."""
    fd = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source),
                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree %s" % source)
    try:
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                          | (MOUNT_ATTR_RDONLY if readonly else 0), userns_fd=userns.fd)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr))),
               "idmapped mount of %s (Linux 5.19+ with a filesystem that supports it)" % source)
    except BaseException:
        os.close(fd)
        raise
    return fd


def move(fd, target):
    """Attach the detached mount fd (clone) on target, in this process's mount namespace."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target),
                         MOVE_MOUNT_F_EMPTY_PATH), "move_mount to %s" % target)


def bind(source, target, userns, readonly=True):
    """Bind source on target (an empty directory) through userns's mapping,
    nosuid and nodev (read-only by default).  Raises NotReady."""
    fd = clone(source, userns, readonly)
    try:
        move(fd, target)
    finally:
        os.close(fd)


def supported():
    """True if this kernel has the new mount API (open_tree answers)."""
    ret = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, b"/nonexistent-oarcloud", OPEN_TREE_CLOEXEC)
    return not (ret < 0 and ctypes.get_errno() == errno.ENOSYS)
