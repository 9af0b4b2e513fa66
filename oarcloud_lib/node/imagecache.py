"""A node's image cache: each image (or layer) unpacked once, keyed by its checksum.

    /var/lib/oarcloud/cache/<sha256>/rootfs       the unpacked tree, owned in the
                                                  instances' uid range (read-only lower)
    /var/lib/oarcloud/cache/<sha256>/entry.json   what was unpacked: name, files, bytes,
                                                  and a fingerprint of every file's metadata

First use pulls the file from the server's store in one pass: it is hashed
while `zstd -d | tar -x` unpacks it, and a file whose checksum differs is
thrown away.  An entry becomes visible only once complete (unpacked under a
temporary name, then renamed).  Before a job uses an entry, its fingerprint
(path, mode, owner, size, mtime and ctime of every file, so any write or
truncation changes it) is checked; a corrupt entry is put aside and fetched
again.  The least recently used entries that no instance (and no kept save)
uses are evicted when the cache grows past its budget.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from oarcloud_lib import paths
from oarcloud_lib.node import idmap
from oarcloud_lib.server import imagestore
from oarcloud_lib.errors import CommandFailed, NotFound, NotReady

LOG = logging.getLogger("oarcloud.imagecache")
UNPACK = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=trusted.overlay.*",
          "--xattrs-include=user.*", "-I", "zstd", "-xf", "-"]
CHUNK = 1 << 20
PROGRESS_FROM = 32 << 20  # bytes: smaller images say only when they are cached
SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")
# The cache's files are owned in UID_BASE..UID_BASE+65535 (the store's 0..65535
# shifted once, at unpack); instances see them in their tenant's own range
# through idmapped mounts (oarcloud_lib.node.idmap).  The cache is root's alone
# (0700): no user of the node can reach an image's files, setuid or not.
UID_BASE = idmap.CACHE_BASE
UID_COUNT = idmap.COUNT
MODE = 0o700


def cache_dir(cache=None):
    return Path(cache or paths.CACHE)


def shift_ownership(root, base=UID_BASE):
    """Add base to the owner and group of every file under root (no symlink following)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(name)
            if st.st_uid < base:
                os.lchown(name, st.st_uid + base, st.st_gid + base)
                # chown clears setuid/setgid bits: put them back (not on symlinks).
                if st.st_mode & 0o6000 and not os.path.islink(name):
                    os.chmod(name, st.st_mode & 0o7777)


def fingerprint(root):
    """(files, bytes, digest) of the metadata of every file under root."""
    h = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [dirpath] + [os.path.join(dirpath, n) for n in sorted(filenames)]:
            st = os.lstat(name)
            h.update(("%s\0%o\0%d\0%d\0%d\0%d\0%d\n" % (
                os.path.relpath(name, root), st.st_mode, st.st_uid, st.st_gid, st.st_size,
                st.st_mtime_ns, st.st_ctime_ns)).encode(errors="surrogateescape"))
            files += 1
            size += st.st_size
    return files, size, h.hexdigest()


def _entry(sha256, cache=None):
    try:
        return json.loads((cache_dir(cache) / sha256 / "entry.json").read_text())
    except (OSError, ValueError):
        return None


def unpack(source, dest, sha256, label, progress_every=0.25):
    """Hash source while `zstd -d | tar -x` unpacks it into dest.  Raises NotReady
    when the checksum differs (dest is then incomplete: the caller drops it)."""
    total = source.stat().st_size
    h = hashlib.sha256()
    done, next_report = 0, progress_every
    # tar's complaints go to a file: a pipe it fills (one line a file that does
    # not fit) would stop it, and us writing to it.
    with tempfile.TemporaryFile() as errors:
        tar = subprocess.Popen(UNPACK, cwd=dest, stdin=subprocess.PIPE, stderr=errors)
        try:
            with open(source, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
                    tar.stdin.write(chunk)
                    done += len(chunk)
                    if total > PROGRESS_FROM and done / total >= next_report and done < total:
                        LOG.info("image %s: %d%% of %d MB fetched", label, 100 * done // total,
                                 total >> 20)
                        next_report += progress_every
            tar.stdin.close()
        except BrokenPipeError:
            pass
        code = tar.wait()
        errors.seek(0)
        err = errors.read(1 << 16).decode(errors="replace")
    if code != 0:
        raise CommandFailed(code=code, argv=" ".join(UNPACK), stderr=err.strip()[:2000])
    if h.hexdigest() != sha256:
        raise NotReady(detail="image %s: the store's file %s is corrupt (checksum differs)"
                       % (label, source.name))


def _fetch(sha256, label, cache, store):
    cache = cache_dir(cache)
    source = imagestore.path_of(sha256, store)
    if not source.exists():
        raise NotFound(what="image file in the store", name=str(source))
    started = time.monotonic()
    LOG.info("image %s: fetching %d MB into the cache of %s", label, source.stat().st_size >> 20,
             os.uname().nodename)
    tmp = cache / (".%s.tmp" % sha256)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    (tmp / "rootfs").mkdir(mode=0o700)
    try:
        unpack(source, tmp / "rootfs", sha256, label)
        shift_ownership(tmp / "rootfs")
        files, size, digest = fingerprint(tmp / "rootfs")
        (tmp / "entry.json").write_text(json.dumps({
            "sha256": sha256, "name": label, "files": files, "bytes": size,
            "fingerprint": digest, "fetched": time.time()}))
        os.rename(tmp, cache / sha256)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.monotonic() - started
    LOG.info("image %s: cached in %.1fs (%d files, %d MB unpacked, %.0f MB/s from the store)",
             label, elapsed, files, size >> 20, (source.stat().st_size >> 20) / max(elapsed, 1e-3))


def _put_aside(sha256, cache):
    """Move a corrupt entry out of the way; instances mounted on it keep it until they end."""
    aside = cache_dir(cache) / (".corrupt-%s-%d" % (sha256, time.time_ns()))
    os.rename(cache_dir(cache) / sha256, aside)
    return aside


def ensure(sha256, label="", cache=None, store=None, verify=True):
    """The unpacked image with this checksum, fetched (again, if corrupt) when needed."""
    cache = cache_dir(cache)
    label = label or sha256[:12]
    final = cache / sha256
    paths.ensure_dir(cache, MODE)
    with open(cache / (".%s.lock" % sha256), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entry = _entry(sha256, cache)
        if entry is not None and verify:
            files, size, digest = fingerprint(final / "rootfs")
            if digest != entry["fingerprint"]:
                LOG.warning("image %s: cache entry on %s is corrupt (%d files now, %d before, "
                            "metadata differs): fetching it again", label, os.uname().nodename,
                            files, entry["files"])
                _put_aside(sha256, cache)
                entry = None
        elif entry is None and final.exists():
            shutil.rmtree(final)  # an entry without its record: never completed
        if entry is None:
            _fetch(sha256, label, cache, store)
        os.utime(final / "entry.json")  # last use, for eviction
    return final / "rootfs"


@contextlib.contextmanager
def using(cache=None):
    """Hold while choosing and mounting entries: eviction waits for it."""
    cache = cache_dir(cache)
    paths.ensure_dir(cache, MODE)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def in_use(holders=None):
    """Checksums named by the `layers` file of an instance or a kept save on this node."""
    used = set()
    for base in holders or (paths.INSTANCES, paths.KEPT):
        for layers in Path(base).glob("*/layers"):
            try:
                used.update(layers.read_text().split())
            except OSError:
                continue
    return used


def entries(cache=None, holders=None):
    """[{sha256, name, files, bytes, last_used, in_use}] of the cache, most recent first."""
    cache, used = cache_dir(cache), in_use(holders)
    out = []
    for d in cache.glob("*/entry.json"):
        if not SHA_RE.match(d.parent.name):
            continue
        e = _entry(d.parent.name, cache)
        if e:
            e.update(last_used=d.stat().st_mtime, in_use=e["sha256"] in used)
            out.append(e)
    return sorted(out, key=lambda e: -e["last_used"])


def evict(budget, cache=None, holders=None):
    """Remove least recently used entries nobody uses until the cache fits the
    budget (bytes), and corrupt entries put aside that nobody uses; returns the
    checksums removed.  Skipped while a job is choosing entries."""
    cache = cache_dir(cache)
    if not cache.exists():
        return []
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        used = in_use(holders)
        for aside in cache.glob(".corrupt-*"):
            if aside.name.split("-")[1] not in used:
                shutil.rmtree(aside, ignore_errors=True)
        all_entries = entries(cache, holders)
        total = sum(e["bytes"] for e in all_entries)
        removed = []
        for e in reversed(all_entries):
            if total <= budget:
                break
            if e["in_use"]:
                continue
            shutil.rmtree(cache / e["sha256"])
            total -= e["bytes"]
            removed.append(e["sha256"])
            LOG.info("image cache: evicted %s (%s, %d MB)", e["sha256"][:12], e["name"],
                     e["bytes"] >> 20)
        return removed
