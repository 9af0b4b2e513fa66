"""The volumes' bytes (docs/storage.md): the `sharedfs` backend.

A volume is an ext4 filesystem in a sparse file of the site's shared
filesystem (paths.VOLUME_STORE, beside the image store: NFS on a real site,
the lab's shared directory), owned in the image cache's uid range (each
instance sees it through its tenant's mapping, node.volumes).  Every node
reaches every volume, so an instance finds its volumes on whichever node OAR
picks.  Only root reads or writes the store (0700).

The interface a backend gives (a Ceph RBD backend would map an image with
`rbd map` where this one sets up a loop device; docs/storage.md):

    create(volume_id, size)        an empty filesystem
    fill(volume_id, sha256, label) an image's files in it (one layer: a base or flattened image)
    grow(volume_id, size)          larger, data kept (not attached anywhere)
    copy(source_id, volume_id)     a snapshot: a new volume with the same data
    delete(volume_id)
    path(volume_id)                what a node mounts (a file; an RBD backend: a device)

and sweep(conn), the monitor's: the store's files that no volume names.
"""
import os
import re
import subprocess
import tempfile
from pathlib import Path

import psycopg

from oarcloud_lib import paths
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed, Refused
from oarcloud_lib.node.idmap import CACHE_BASE
from oarcloud_lib.server import imagestore
from oarcloud_lib.tools import ext4

BACKEND = "sharedfs"
path = paths.volume_image


def _store():
    paths.ensure_dir(paths.VOLUME_STORE, 0o700, 0, 0)


def create(volume_id, size, runner=LOCAL):
    _store()
    ext4.make(path(volume_id), size, "sparse", CACHE_BASE, runner, where="the volume store")


def grow(volume_id, size, runner=LOCAL):
    return ext4.grow(path(volume_id), size, runner)


def copy(source_id, volume_id):
    """A new volume with source's data (sparse: its holes stay holes)."""
    _store()
    tmp = path(volume_id).with_suffix(".tmp")
    res = subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(path(source_id)),
                          str(tmp)], capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CommandFailed(code=res.returncode, argv="cp", stderr=res.stderr.strip())
    os.chmod(tmp, 0o600)
    os.rename(tmp, path(volume_id))


def fill(volume_id, sha256, label, runner=LOCAL):
    """Unpack an image's store file (one layer) into the new, empty volume,
    its owners shifted into the cache's range like a node's cache entry.
    Raises Refused (it does not fit), NotReady (a corrupt store file)."""
    from oarcloud_lib.node import disk, imagecache
    paths.ensure_dir(paths.VOLUME_MOUNTS, 0o700, 0, 0)
    mnt = Path(tempfile.mkdtemp(prefix="fill-%d-" % volume_id, dir=paths.VOLUME_MOUNTS))
    try:
        disk.attach(path(volume_id), mnt, runner, options="loop,nosuid,nodev,noatime")
        try:
            imagecache.unpack(imagestore.path_of(sha256), mnt, sha256, label)
            imagecache.shift_ownership(mnt)
        except CommandFailed as e:
            if "No space left" in str(e):
                raise Refused(detail="image %s does not fit in the volume: give it a larger "
                                     "--size" % label) from None
            raise
        finally:
            disk.detach(mnt, runner)
    finally:
        mnt.rmdir()


def delete(volume_id):
    path(volume_id).unlink(missing_ok=True)


STORE_FILE = re.compile(r"([0-9]{1,18})\.(ext4|tmp)\Z")


def sweep(conn):
    """Delete the store's files that no volume names (a broker killed while it
    made a volume, or a snapshot's copy, leaves its file without a row: the
    row rolled back), and the mounts its fill left; return their names.
    Under the table lock that making a volume holds until it commits
    (catalog.volumes.create), so that a volume being made is never taken for
    one; when one is being made now, nothing (the next sweep)."""
    from oarcloud_lib.node import disk
    if not paths.VOLUME_STORE.is_dir():
        return []
    removed = []
    with conn.transaction():
        try:
            conn.execute("LOCK TABLE volumes IN SHARE ROW EXCLUSIVE MODE NOWAIT")
        except psycopg.errors.LockNotAvailable:
            return []
        for mnt in sorted(paths.VOLUME_MOUNTS.glob("fill-*")) \
                if paths.VOLUME_MOUNTS.is_dir() else []:
            disk.detach(mnt)
            try:
                mnt.rmdir()
            except OSError:
                pass
            removed.append(mnt.name)
        known = {i for (i,) in conn.execute("SELECT id FROM volumes").fetchall()}
        for f in sorted(paths.VOLUME_STORE.iterdir()):
            m = STORE_FILE.match(f.name)
            if m and (m[2] == "tmp" or int(m[1]) not in known):
                f.unlink(missing_ok=True)
                removed.append(f.name)
    return removed


def used(volume_id):
    """Bytes the volume's file holds in the store (sparse: what was written);
    None where the caller may not see the store (a user)."""
    try:
        return os.stat(path(volume_id)).st_blocks * 512
    except OSError:
        return None
