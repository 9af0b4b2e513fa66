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

from oarcloud_lib import imagecache
from oarcloud_lib.errors import CommandFailed

CHUNK = 1 << 20
NOBODY = 65534
OPAQUE = "trusted.overlay.opaque"


def injected(owner):
    """Paths (relative to the root) oarcloud writes into each instance of owner."""
    return {"etc/hostname", "etc/hosts", "root/.ssh/authorized_keys", "etc/sudoers.d/oarcloud",
            "home/%s/.ssh/authorized_keys" % owner}


def _unshift(uid, base=imagecache.UID_BASE, count=imagecache.UID_COUNT):
    return uid - base if base <= uid < base + count else NOBODY


def export(root, out, skip=frozenset()):
    """Write root as a tar stream to the binary file out; returns the member count."""
    root = os.fspath(root)
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      copybufsize=CHUNK) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for path in [dirpath] + [os.path.join(dirpath, n) for n in sorted(filenames)]:
                rel = os.path.relpath(path, root)
                if rel in skip:
                    continue
                st = os.lstat(path)
                if stat.S_ISSOCK(st.st_mode):
                    continue
                info = tar.gettarinfo(path, arcname=rel)
                info.uid, info.gid = _unshift(st.st_uid), _unshift(st.st_gid)
                info.uname = info.gname = ""
                if info.isdir():
                    try:
                        if os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y":
                            info.pax_headers = {"SCHILY.xattr." + OPAQUE: "y"}
                    except OSError:
                        pass
                if info.isreg():
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as f:
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
