"""The server's image store: one zstd tar file per content, named by its sha256.

Everything that enters the store passes through `ingest`, which reads a plain
tar stream (an import, a save from a node, a site build) member by member,
refuses what a root filesystem image must not hold, and writes a normalized
archive: names relative to the root, numeric owners in the instances' range,
only the extended attributes an overlay layer needs.  The file has no name
until it is complete and checksummed, so a crash or a kill never leaves a
half image (nor a temporary file) in the store.

An archive is hostile input read by root, so what it may cost is bounded while
it streams (`Limits`): the regular file bytes it unpacks to, its member count,
and the extended headers (PAX records, GNU long names) that tarfile would read
into memory whole; the headers are checked from their 512-byte block, before
tarfile reads what they announce.  Sparse files are refused: their declared
size is not what they unpack to, and the store writes no sparse maps anyway.
"""
import hashlib
import logging
import os
import subprocess
import tarfile
from dataclasses import dataclass
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
MAX_NAME = 4096              # characters of a member name or link target
MAX_UNPACKED = 64 << 30      # bytes of regular file content in one archive
MAX_MEMBERS = 2_000_000      # members of one archive
MAX_HEADER = 1 << 20         # bytes of the extended headers before one member
MAX_HEADER_CHAIN = 4         # extended headers before one member (GNU tar writes 2 at most)
MAX_GLOBAL_HEADER = 4096     # bytes of all PAX global headers (applied to every member)
MAX_MTIME = 8 ** 11 - 1      # what a ustar header holds
EXTENDED_HEADERS = {
    tarfile.XHDTYPE: "PAX header", tarfile.SOLARIS_XHDTYPE: "PAX header",
    tarfile.XGLTYPE: "PAX global header", tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
}


@dataclass(frozen=True)
class Limits:
    """What one archive may cost ingest (beyond, it is refused while it streams)."""

    unpacked: int = MAX_UNPACKED  # bytes of regular file content
    members: int = MAX_MEMBERS
    header: int = MAX_HEADER      # bytes of the extended headers of one member


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
    if "\0" in name or len(name) > MAX_NAME:
        raise Refused(detail="bad member name %r in the archive" % name[:80])
    if name.startswith("/"):
        raise Refused(detail="absolute path %r in the archive" % name[:80])
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise Refused(detail="path %r in the archive leaves the image root ('..')" % name[:80])
    return "/".join(parts) or "."


def _refuse_sparse(name):
    """Refuse the sparse member name.  Raises Refused."""
    raise Refused(detail="sparse file %r in the archive: sparse files are not accepted "
                  "(archive it without --sparse)" % name[:80])


class Checker:
    """Validates a tar stream's headers and members one by one (what `ingest` keeps)."""

    def __init__(self, limits=None):
        self.limits = limits or Limits()
        self.files = set()      # regular files seen: hard links may point to them
        self.symlinks = {}      # symlinks seen, as a tree of name parts ("" marks a symlink)
        self.members = 0
        self.bytes = 0
        self.chain = 0          # extended headers read since the last member
        self.chain_bytes = 0
        self.global_bytes = 0
        checker = self

        class Header(tarfile.TarInfo):
            """tarfile's TarInfo, checked before tarfile reads what a header announces."""

            __slots__ = ()

            def _proc_member(self, tf):
                checker.header(self)
                return super()._proc_member(tf)

            def _proc_gnusparse_00(self, next, raw_headers):
                _refuse_sparse(next.name)

            def _proc_gnusparse_01(self, next, pax_headers):
                _refuse_sparse(pax_headers.get("GNU.sparse.name", next.name))

            def _proc_gnusparse_10(self, next, pax_headers, tf):
                _refuse_sparse(pax_headers.get("GNU.sparse.name", next.name))

            def _apply_pax_info(self, pax_headers, encoding, errors):
                if any(k.startswith("GNU.sparse.") for k in pax_headers):
                    _refuse_sparse(pax_headers.get("GNU.sparse.name", self.name))
                super()._apply_pax_info(pax_headers, encoding, errors)

        self.tarinfo = Header

    def header(self, h):
        """Check a raw header (its 512-byte block) before tarfile reads on.  Raises Refused."""
        kind = EXTENDED_HEADERS.get(h.type)
        if kind is None:
            if h.type == tarfile.GNUTYPE_SPARSE:
                _refuse_sparse(h.name)
            self.chain = self.chain_bytes = 0
            return
        self.chain += 1
        if self.chain > MAX_HEADER_CHAIN:
            raise Refused(detail="more than %d extended headers before one member of the archive "
                          "(the limit of extended headers per member)" % MAX_HEADER_CHAIN)
        if h.size < 0:
            raise Refused(detail="%s of negative size in the archive" % kind)
        if h.type == tarfile.XGLTYPE:
            self.global_bytes += h.size
            if self.global_bytes > MAX_GLOBAL_HEADER:
                raise Refused(detail="PAX global headers of %d bytes in the archive: over the "
                              "limit of %d bytes" % (self.global_bytes, MAX_GLOBAL_HEADER))
        self.chain_bytes += h.size
        if self.chain_bytes > self.limits.header:
            raise Refused(detail="%s of %d bytes in the archive: over the limit of %d bytes of "
                          "extended headers per member" % (kind, self.chain_bytes,
                                                           self.limits.header))

    def _through_symlink(self, parts):
        """The symlink among the leading parts of a name, or None."""
        node = self.symlinks
        for i, part in enumerate(parts[:-1]):
            node = node.get(part)
            if node is None:
                return None
            if "" in node:
                return "/".join(parts[:i + 1])
        return None

    def _mark_symlink(self, parts, symlink):
        """Record that the name is a symlink, or (stored again as something else) no more."""
        node = self.symlinks
        for part in parts:
            if not symlink and part not in node:
                return
            node = node.setdefault(part, {})
        if symlink:
            node[""] = True
        else:
            node.pop("", None)

    def check(self, m):
        """The member, normalized.  Raises Refused."""
        self.members += 1
        if self.members > self.limits.members:
            raise Refused(detail="the archive has more than %d members (the limit of members)"
                          % self.limits.members)
        name = member_name(m.name)
        parts = name.split("/")
        link = self._through_symlink(parts)
        if link is not None:
            raise Refused(detail="%r in the archive is stored through the symlink %r"
                          % (name[:80], link[:80]))
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
        if m.sparse is not None:
            _refuse_sparse(name)
        if m.islnk():
            target = member_name(m.linkname)
            if target not in self.files:
                raise Refused(detail="hard link %r in the archive points to %r, not an earlier "
                              "file of the archive" % (name[:80], m.linkname[:80]))
            m.linkname = target
        elif m.issym():
            if len(m.linkname) > MAX_NAME or "\0" in m.linkname:
                raise Refused(detail="bad symlink target for %r" % name[:80])
        elif not (m.isreg() or m.isdir() or m.ischr() or m.isfifo()):
            raise Refused(detail="%r in the archive has an unsupported type %r"
                          % (name[:80], m.type))
        if name == "." and not m.isdir():
            raise Refused(detail="the archive's root is not a directory")
        if m.isreg():
            if m.size < 0:
                raise Refused(detail="%r in the archive has a negative size" % name[:80])
            self.bytes += m.size
            if self.bytes > self.limits.unpacked:
                raise Refused(detail="%r in the archive takes it over the limit of %d unpacked "
                              "bytes" % (name[:80], self.limits.unpacked))
            self.files.add(name)
            m.type = tarfile.REGTYPE  # not AREGTYPE nor CONTTYPE: the node's tar warns on those
        else:
            # Only regular files have data: a size on anything else would make
            # tar on the node skip the members that follow.
            m.size = 0
        if not (m.issym() or m.islnk()):
            m.linkname = ""
        if not m.ischr():
            m.devmajor = m.devminor = 0
        self._mark_symlink(parts, m.issym())
        m.name = name
        m.uname = m.gname = ""
        # Whole seconds in the ustar range: a PAX mtime may be any float (nan, inf).
        m.mtime = int(m.mtime) if 0 <= m.mtime <= MAX_MTIME else 0
        m.pax_headers = {k: v for k, v in m.pax_headers.items()
                         if (k in KEPT_XATTRS or k.startswith(KEPT_XATTR_PREFIX))
                         and k.isascii() and k.isprintable()}
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


def ingest(src, store=None, progress=None, limits=None):
    """Validate the plain tar stream src and store it; returns (sha256, size, unpacked bytes).

    The file is written unnamed (O_TMPFILE) and linked under its checksum only
    once complete: whatever kills the writer, the store holds no trace of it.
    limits (default Limits()) bounds what the archive may cost.
    Raises Refused for an archive that is not a clean root filesystem or passes a limit."""
    store = Path(store or paths.IMAGE_STORE)
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store, os.O_TMPFILE | os.O_RDWR, 0o600)
    checker = Checker(limits)
    zstd = None
    try:
        zstd = subprocess.Popen(ZSTD_PACK, stdin=subprocess.PIPE, stdout=fd)
        with tarfile.open(fileobj=_Counting(src, progress), mode="r|",
                          tarinfo=checker.tarinfo) as tin, \
                tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.PAX_FORMAT,
                             copybufsize=CHUNK) as tout:
            while (m := tin.next()) is not None:
                m = checker.check(m)
                tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
                # Both keep every member they saw: memory would grow with the member count.
                tin.members.clear()
                tout.members.clear()
        zstd.stdin.close()
        if zstd.wait() != 0:
            raise CommandFailed(code=zstd.returncode, argv=" ".join(ZSTD_PACK), stderr="")
        if checker.members == 0:
            raise Refused(detail="the archive is empty")
        os.fchmod(fd, 0o600)  # the store is root's alone (docs/security.md)
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
