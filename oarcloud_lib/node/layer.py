"""An instance's changes as a tar stream: what a save sends to the server.

Read on the node, as root, from the instance's overlay upper directory (only
what the instance changed: new and modified files, overlay's whiteouts for
deleted ones, its opaque-directory marks), or from the merged view for a
flattened save.  Owners go back from the node's shifted range to the
instance's own ids.  What oarcloud itself writes into every instance at
creation (hostname, hosts, the owner's keys, the sudo rule) is left out: a
saved image never carries one user's key to another.
"""
import os
import stat
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager

from oarcloud_lib.node import imagecache
from oarcloud_lib.errors import CommandFailed

CHUNK = 1 << 20
NOBODY = 65534
OPAQUE = "trusted.overlay.opaque"


def injected(owner):
    """Paths (relative to the root) oarcloud writes into each instance of owner."""
    return {"etc/hostname", "etc/hosts", "root/.ssh/authorized_keys", "etc/sudoers.d/oarcloud",
            "home/%s/.ssh/authorized_keys" % owner}


def _unshift(uid, bases):
    """An owner on the node back to the instance's own id (nobody if in no range)."""
    for base in bases:
        if base <= uid < base + imagecache.UID_COUNT:
            return uid - base
    return NOBODY


def _info(name, rel, st, dirfd):
    """The TarInfo of one entry (name, relative to dirfd), from its lstat."""
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dirfd)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None  # sockets
    return info


def export(root, out, skip=frozenset(), bases=None):
    """Write root as a tar stream to the binary file out; returns the member count.

    Walks with directory file descriptors (os.fwalk) and opens every entry
    relative to its directory without following links, so an instance that
    swaps a directory for a symlink meanwhile cannot make root read outside
    root.  Symlinks (to directories too) are kept as links, hard links as
    links.  Owners in one of bases (default: the cache's range and that of the
    owner of root) go back to 0..65535."""
    root = os.fspath(root)
    bases = tuple(bases or {imagecache.UID_BASE, os.lstat(root).st_uid})
    count, inodes = 0, {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      copybufsize=CHUNK) as tar:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            entries = [(rel_dir, None, os.fstat(dirfd))]
            # fwalk lists symlinks to directories among dirnames (and never enters them).
            for name in sorted(filenames + dirnames):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if name in filenames or stat.S_ISLNK(st.st_mode):
                    entries.append((os.path.normpath(os.path.join(rel_dir, name)), name, st))
            for rel, name, st in entries:
                if rel in skip:
                    continue
                info = _info(name, rel, st, dirfd)
                if info is None:
                    continue
                info.uid, info.gid = _unshift(st.st_uid, bases), _unshift(st.st_gid, bases)
                if name is None:
                    try:
                        if os.getxattr(dirfd, OPAQUE) == b"y":
                            info.pax_headers = {"SCHILY.xattr." + OPAQUE: "y"}
                    except OSError:
                        pass
                if info.isreg() and st.st_nlink > 1:
                    first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                    if first != rel:
                        info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
                if info.isreg():
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
                    with os.fdopen(fd, "rb") as f:
                        info.size = os.fstat(fd).st_size
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                count += 1
    return count


@contextmanager
def merged(upper, lowers):
    """A read-only overlay of upper over lowers (top first), mounted for the block."""
    target = tempfile.mkdtemp(prefix="oarcloud-merged-")
    res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=%s"
                          % ":".join(map(str, [upper] + list(lowers))), target],
                         capture_output=True, text=True)
    if res.returncode != 0:
        os.rmdir(target)
        raise CommandFailed(code=res.returncode, argv="mount overlay", stderr=res.stderr.strip())
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=False)
        os.rmdir(target)
