"""The server's image store: one zstd tar file per content, named by its sha256.

Everything that enters the store passes through `ingest`, which reads a plain
tar stream (an import, a save from a node, a site build) member by member,
refuses what a root filesystem image must not hold, and writes a normalized
archive: names relative to the root, numeric owners in the instances' range,
only the extended attributes an overlay layer needs.  The file has no name
until it is complete and checksummed, so a crash or a kill never leaves a
half image (nor a temporary file) in the store.
"""
import hashlib
import logging
import os
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from oarcloud_lib import paths
from oarcloud_lib.errors import CommandFailed, Refused

LOG = logging.getLogger("oarcloud.imagestore")
ZSTD_PACK = ["zstd", "-T0", "-3", "-q", "-c"]
CHUNK = 1 << 20
MAX_ID = 65535  # instances map ids 0..65535
# Device nodes an image may hold (char major, minor): overlay's whiteout and
# the usual /dev nodes of a root filesystem.  No block devices.
ALLOWED_CHAR_DEVICES = {
    (0, 0): "whiteout", (1, 3): "null", (1, 5): "zero", (1, 7): "full", (1, 8): "random",
    (1, 9): "urandom", (5, 0): "tty", (5, 1): "console", (5, 2): "ptmx",
}
# Extended attributes kept: overlay's opaque-directory mark and user.*.
KEPT_XATTRS = ("SCHILY.xattr.trusted.overlay.opaque",)
KEPT_XATTR_PREFIX = "SCHILY.xattr.user."


def path_of(sha256, store=None):
    return Path(store or paths.IMAGE_STORE) / ("%s.tar.zst" % sha256)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def member_name(name):
    """A member's name relative to the image root ('.' for the root).  Raises Refused."""
    if "\0" in name or len(name) > 4096:
        raise Refused(detail="bad member name %r in the archive" % name[:80])
    if name.startswith("/"):
        raise Refused(detail="absolute path %r in the archive" % name[:80])
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise Refused(detail="path %r in the archive leaves the image root ('..')" % name[:80])
    return "/".join(parts) or "."


class Checker:
    """Validates a tar stream's members one by one (what `ingest` keeps)."""

    def __init__(self):
        self.files = set()      # regular files seen: hard links may point to them
        self.symlinks = set()   # symlinks seen: nothing may be stored through them
        self.members = 0
        self.bytes = 0

    def check(self, m):
        """The member, normalized.  Raises Refused."""
        name = member_name(m.name)
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.symlinks:
                raise Refused(detail="%r in the archive is stored through the symlink %r"
                              % (name[:80], "/".join(parts[:i])[:80]))
        if not (0 <= m.uid <= MAX_ID and 0 <= m.gid <= MAX_ID):
            raise Refused(detail="%r in the archive has owner %d:%d, outside 0-%d"
                          % (name[:80], m.uid, m.gid, MAX_ID))
        if m.isblk():
            raise Refused(detail="block device %r in the archive (%d:%d): not allowed"
                          % (name[:80], m.devmajor, m.devminor))
        if m.ischr() and (m.devmajor, m.devminor) not in ALLOWED_CHAR_DEVICES:
            raise Refused(detail="device node %r in the archive (c %d:%d): only %s are allowed"
                          % (name[:80], m.devmajor, m.devminor,
                             ", ".join(sorted(set(ALLOWED_CHAR_DEVICES.values())))))
        if m.islnk():
            target = member_name(m.linkname)
            if target not in self.files:
                raise Refused(detail="hard link %r in the archive points to %r, not an earlier "
                              "file of the archive" % (name[:80], m.linkname[:80]))
            m.linkname = target
        elif m.issym():
            if len(m.linkname) > 4096 or "\0" in m.linkname:
                raise Refused(detail="bad symlink target for %r" % name[:80])
        elif not (m.isreg() or m.isdir() or m.ischr() or m.isfifo()):
            raise Refused(detail="%r in the archive has an unsupported type %r"
                          % (name[:80], m.type))
        if name == "." and not m.isdir():
            raise Refused(detail="the archive's root is not a directory")
        (self.symlinks.add if m.issym() else self.symlinks.discard)(name)
        if m.isreg():
            self.files.add(name)
            self.bytes += m.size
        m.name = name
        m.uname = m.gname = ""
        m.pax_headers = {k: v for k, v in m.pax_headers.items()
                         if k in KEPT_XATTRS or k.startswith(KEPT_XATTR_PREFIX)}
        self.members += 1
        return m


class _Counting:
    """A read-only file object that reports the bytes read through it."""

    def __init__(self, f, progress):
        self.f, self.progress, self.done = f, progress, 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.done += len(data)
        if self.progress:
            self.progress(self.done)
        return data


def ingest(src, store=None, progress=None):
    """Validate the plain tar stream src and store it; returns (sha256, size, unpacked bytes).

    The file is written unnamed (O_TMPFILE) and linked under its checksum only
    once complete: whatever kills the writer, the store holds no trace of it.
    Raises Refused for an archive that is not a clean root filesystem."""
    store = Path(store or paths.IMAGE_STORE)
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store, os.O_TMPFILE | os.O_RDWR, 0o644)
    checker = Checker()
    zstd = None
    try:
        zstd = subprocess.Popen(ZSTD_PACK, stdin=subprocess.PIPE, stdout=fd)
        with tarfile.open(fileobj=_Counting(src, progress), mode="r|") as tin, \
                tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.PAX_FORMAT,
                             copybufsize=CHUNK) as tout:
            for m in tin:
                m = checker.check(m)
                tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
        zstd.stdin.close()
        if zstd.wait() != 0:
            raise CommandFailed(code=zstd.returncode, argv=" ".join(ZSTD_PACK), stderr="")
        if checker.members == 0:
            raise Refused(detail="the archive is empty")
        os.fchmod(fd, 0o644)
        h = hashlib.sha256()
        os.lseek(fd, 0, os.SEEK_SET)
        for chunk in iter(lambda: os.read(fd, CHUNK), b""):
            h.update(chunk)
        final = path_of(h.hexdigest(), store)
        if not final.exists():
            # linkat(AT_SYMLINK_FOLLOW) of the fd's /proc link names the unnamed file
            # (a directory fd makes Python call linkat, not link).
            dirfd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link("/proc/self/fd/%d" % fd, final.name, dst_dir_fd=dirfd,
                        follow_symlinks=True)
            finally:
                os.close(dirfd)
        return h.hexdigest(), os.fstat(fd).st_size, checker.bytes
    except tarfile.TarError as e:
        raise Refused(detail="not a valid tar archive: %s" % e) from None
    finally:
        if zstd is not None and zstd.poll() is None:
            zstd.kill()
            zstd.wait()
        os.close(fd)


def pack(root, store=None):
    """A trusted directory (a site build) into the store, through ingest."""
    tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", "-",
                            "."], stdout=subprocess.PIPE)
    try:
        result = ingest(tar.stdout, store)
    except BaseException:
        tar.kill()
        raise
    finally:
        tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        remove(result[0], store)
        raise CommandFailed(code=tar.returncode, argv="tar -C %s -c ." % root, stderr="")
    return result


def remove(sha256, store=None):
    """Delete a store file (the caller checked nothing names it any more)."""
    try:
        path_of(sha256, store).unlink()
        return True
    except FileNotFoundError:
        return False
