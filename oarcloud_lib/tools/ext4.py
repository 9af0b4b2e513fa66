"""ext4 filesystems in files: instance disks (node.disk) and volumes (server.volumestore).

    make(image, size, allocation, uid)   a new file holding an empty filesystem
    grow(image, size)                    a larger file and filesystem, data kept
"""
import errno
import os
import shutil

from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady, Refused

ALLOCATIONS = ("reserved", "sparse")
# What a filesystem keeps free of the one holding it when it reserves its blocks.
FLOOR = 1 << 30


def _no_room(size, where, why):
    return NotReady(detail="no room for a %d MiB disk on %s (%s)" % (size >> 20, where, why))


def make(image, size, allocation="sparse", uid=0, runner=LOCAL, where="this node"):
    """A new file (0600, image must not exist) holding an ext4 filesystem of
    size bytes whose root is uid's: its blocks allocated now ("reserved") or
    as they are written ("sparse").  Raises Refused, NotReady (no room on
    `where`, for the message)."""
    if allocation not in ALLOCATIONS:
        raise Refused(detail="disk allocation must be one of %s, not %r"
                      % (", ".join(ALLOCATIONS), allocation))
    if allocation == "reserved":
        free = shutil.disk_usage(os.path.dirname(image)).free
        if free < size + FLOOR:
            raise _no_room(size, where, "%d MiB free, %d MiB kept" % (free >> 20, FLOOR >> 20))
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if allocation == "reserved":
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EFBIG):  # another one took it meanwhile
                    raise _no_room(size, where, e.strerror) from None
                raise
        else:
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(image)
        raise
    os.close(fd)
    try:
        # nodiscard: a reserved file keeps its blocks; no root reserve (-m 0).
        runner.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,"
                    "lazy_journal_init=1,nodiscard,root_owner=%d:%d" % (uid, uid), str(image)])
    except BaseException:
        os.unlink(image)
        raise


def grow(image, size, runner=LOCAL):
    """Grow the (unmounted) filesystem in image to size bytes; its data stays."""
    have = os.path.getsize(image)
    if size < have:
        raise Refused(detail="a filesystem only grows: %d MiB is below its %d MiB"
                      % (size >> 20, have >> 20))
    if size == have:
        return False
    runner.run(["e2fsck", "-f", "-p", str(image)])
    os.truncate(image, size)
    runner.run(["resize2fs", "-p", str(image)])
    return True
