"""Volumes in a running instance on this node (docs/storage.md).

A volume is an ext4 filesystem in a file of the site's volume store
(server.volumestore: the shared filesystem every node sees).  To put it in an
instance, the node mounts the file through a loop device (read-only and
without journal replay for a read-only attachment), clones that mount
through the instance's tenant mapping (idmap.clone: the store's uids, the
cache's range, shown as the tenant's), and moves the clone into the
instance's own mount namespace at its path (move_mount), all in a forked
child with a mount namespace of its own: the node's namespace never holds
the volume, the instance holds the only mount, so the volume is released,
and its loop device freed, when the instance ends or detaches it, whatever
happens to the agent, even killed half way.

    attach_all(conn, domain, init_pid)     after each start (launch, start, reboot)
    attach(domain, volume_id)              the agent's volume-attach: a live attach
    detach(domain, volume_id)              the agent's volume-detach: refused while in use
"""
import ctypes
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from oarcloud_lib import paths
from oarcloud_lib.catalog import db
from oarcloud_lib.catalog import volumes as held
from oarcloud_lib.errors import CommandFailed, Conflict, NotReady
from oarcloud_lib.node import access, disk, idmap, rootfs

LOG = logging.getLogger("oarcloud.nodeagent")
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
# A volume outlives its instance: unlike an instance's disk, its fsync
# reaches the disk under the store (barriers on).
VOLUME_OPTIONS = "loop,nosuid,nodev,noatime"
_libc = ctypes.CDLL(None, use_errno=True)


class _Plain:
    """Commands for a child about to join another mount namespace: run with
    subprocess, never with a thread (plumbum's timeouts use one, and a thread
    shares the child's fs context, which setns(CLONE_NEWNS) refuses)."""

    def run(self, argv, check=True, timeout=120):
        argv = [str(a) for a in argv]
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise CommandFailed(code=res.returncode, argv=" ".join(argv),
                                stderr=(res.stderr or res.stdout).strip()[-2000:])
        return res


def _in_child(work):
    """Run work() (-> None, raises OSError) in a forked child (one thread, its
    own fs context); re-raise its error here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            work()
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 -- reported to the parent
            os.write(w, ("%s" % e).encode()[:500])
            os._exit(1)
    os.close(w)
    try:
        message = b""
        while True:
            chunk = os.read(r, 1024)
            if not chunk:
                break
            message += chunk
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(message.decode(errors="replace") or "exit status %d" % status)


def _join(ns_fd):
    """This (child) process into the mount namespace ns_fd: its root and
    working directory become that namespace's root."""
    if _libc.setns(ns_fd, CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _private_namespace():
    """This (child) process into a mount namespace of its own, whose mounts
    reach no other: they go when it ends."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")


def _in_namespace(init_pid, work):
    """Run work() in a child that joined the mount namespace of init_pid."""
    ns = os.open("/proc/%d/ns/mnt" % init_pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_child(lambda: (_join(ns), work()))
    finally:
        os.close(ns)


def inject(domain, init_pid, uid_base, volume_id, path, readonly):
    """Mount the volume in the running instance at path (made if missing, as
    the instance's root: uid_base on the node).  Raises NotReady.

    All in one child: in a mount namespace of its own, it mounts the volume's
    file (a loop device), clones that mount through the tenant's mapping,
    then joins the instance's namespace and moves the clone there.  The
    node's own namespace never holds the volume: whenever the agent or the
    child dies, the child's namespace goes, and with it every mount but the
    instance's."""
    image = paths.volume_image(volume_id)
    if not image.is_file():
        raise NotReady(detail="volume %s is not in the store (%s)" % (volume_id, image))
    paths.ensure_dir(paths.VOLUME_MOUNTS, 0o700, 0, 0)
    base = tempfile.mkdtemp(prefix="v%d-" % volume_id, dir=paths.VOLUME_MOUNTS)
    target = os.open("/proc/%d/ns/mnt" % init_pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with idmap.Userns(uid_base) as ns:
            def work():
                _private_namespace()
                disk.attach(image, base, _Plain(),
                            VOLUME_OPTIONS + (",ro,noload" if readonly else ""))
                fd = idmap.clone(base, ns, readonly)
                _join(target)
                # In the instance's namespace: its path resolves in its own
                # root, whatever links it holds; what is missing is made as
                # its root.
                missing, p = [], Path(path)
                while not os.path.lexists(p):
                    missing.append(p)
                    p = p.parent
                for d in reversed(missing):
                    os.mkdir(d, 0o755)
                    os.lchown(d, uid_base, uid_base)
                idmap.move(fd, path)
            try:
                _in_child(work)
            except OSError as e:
                raise NotReady(detail="volume %s could not be mounted on %s in %s: %s"
                               % (volume_id, path, domain, e)) from None
    finally:
        os.close(target)
        os.rmdir(base)
    LOG.info("%s: volume %s on %s%s", domain, volume_id, path, " (read-only)" if readonly else "")


def _mounts_of(init_pid, image):
    """The mount points (in the instance's namespace, deepest first) of the
    loop devices backed by image."""
    found = []
    for line in Path("/proc/%d/mountinfo" % init_pid).read_text().splitlines():
        fields = line.split()
        dev = fields[2]
        backing = Path("/sys/dev/block/%s/loop/backing_file" % dev)
        try:
            if backing.read_text().strip() == str(image):
                found.append(fields[4].replace("\\040", " "))
        except OSError:
            continue
    return sorted(found, key=len, reverse=True)


def eject(domain, init_pid, volume_id):
    """Unmount the volume from the running instance (every mount of it there);
    refused (Conflict) while the instance uses it.  True if it was mounted."""
    image = paths.volume_image(volume_id)
    points = _mounts_of(init_pid, image)

    def unmount():
        for point in points:
            if _libc.umount2(os.fsencode(point), 0) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    try:
        _in_namespace(init_pid, unmount)
    except OSError as e:
        raise Conflict(what="volume", detail="the instance still uses it (%s): stop what "
                       "runs in %s, or stop the instance, then detach" % (e, points[0])) from None
    if _mounts_of(init_pid, image):
        raise Conflict(what="volume", detail="it is still mounted in the instance")
    LOG.info("%s: volume %s detached", domain, volume_id)
    return bool(points)


def attach_all(conn, domain, init_pid, only=None):
    """Mount the instance's attachments (the catalog's; only: that volume's)
    in it, now running, and mark them attached.  Raises NotReady."""
    uid_base = rootfs.base_of(rootfs.instance_dir(domain))
    for a in held.for_domain(conn, domain):
        if only is None or a["volume"] == only:
            inject(domain, init_pid, uid_base, a["volume"], a["path"], a["readonly"])
            held.set_attached(conn, a["volume"], domain)


def attach(domain, volume_id=None, guest=None):
    """The agent's live attach (the broker made the catalog's row; volume_id
    None: all of the instance's, after a start): mounted now if the instance
    runs, else at its next start."""
    guest = guest or access.guest(domain)
    if guest.state() == "running":
        with db.connect() as conn:
            attach_all(conn, domain, guest.init_pid(), only=volume_id)
    return 0


def detach(domain, volume_id):
    """A live detach: unmounted from the instance if it runs (refused while
    in use); the broker then releases the catalog's row."""
    guest = access.guest(domain)
    if guest.state() == "running":
        eject(domain, guest.init_pid(), int(volume_id))
    return 0
