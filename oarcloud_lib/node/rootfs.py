"""Instance root filesystems on a node: an image cache and per-instance overlays.

The node's cache (oarcloud_lib.node.imagecache) holds each image layer once,
unpacked and shifted into the cache's uid range, readable by root only.  An
instance's root is an overlay of those layers, each seen through an idmapped
mount (oarcloud_lib.node.idmap) in its tenant's own uid range, and of its own upper
directory: N instances of an image cost one unpacked copy plus what each
changes, and nothing a tenant's instance root owns on the node belongs to
another tenant.

    /var/lib/oarcloud/instances/           0711 root (no listing)
    /var/lib/oarcloud/instances/<domain>/  0700, owned by the tenant's instance root,
                                           the root of the instance's disk (node.disk)
        upper/ work/ root/ layers          (libvirt_lxc sets up the root as that uid)
"""
import contextlib
import logging
import os
import shutil
from pathlib import Path

from oarcloud_lib import paths
from oarcloud_lib.node import disk as disks, idmap
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)
UID_COUNT = idmap.COUNT
# The instance owner's uid inside the instance.
USER_UID = 1000


def instance_dir(domain, base=None):
    """An instance's directory on this node (under paths.INSTANCES by default)."""
    return Path(base or paths.INSTANCES) / domain


def disks_base(base):
    """Where the disks of the instances under base are (paths.DISKS by default)."""
    return Path(base).with_name("disks") if base else None


def base_of(path):
    """The node uid of root in the instance whose directory (or root) is path."""
    return os.lstat(path).st_uid


def prepare(domain, lowers, layers, uid_base, base=None, runner=LOCAL, userns=None, disk=None):
    """Mount the instance's overlay root over lowers (cache entries, top first),
    each seen in the tenant's uid range uid_base (through userns, an
    idmap.Userns of that range, when the caller holds one for several
    instances); returns its path.  layers (their checksums) are recorded so
    that the cache keeps them while the instance exists.  disk: (size in
    bytes, allocation) of the disk its changes land on, or None for the
    node's own.  Idempotent.  Raises NotReady (no idmapped mounts here, no
    room for the disk)."""
    paths.ensure_dir(base or paths.INSTANCES, 0o711)
    d = instance_dir(domain, base)
    root = d / "root"
    if os.path.ismount(root):
        return root
    d.mkdir(mode=0o700, exist_ok=True)
    if disk:
        disks.create(domain, disk[0], d, uid_base, disk[1], disks_base(base), runner)
    os.chown(d, uid_base, uid_base)
    os.chmod(d, 0o700)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(exist_ok=True)
    (d / "layers").write_text("".join("%s\n" % sha for sha in layers))
    st = os.stat(lowers[0])
    os.chown(d / "upper", uid_base + st.st_uid - idmap.CACHE_BASE,
             uid_base + st.st_gid - idmap.CACHE_BASE)
    os.chmod(d / "upper", st.st_mode & 0o7777)
    seen = []
    _unmount_lowers(d, runner)  # what a killed run may have left
    try:
        with contextlib.nullcontext(userns) if userns else idmap.Userns(uid_base) as ns:
            for i, lower in enumerate(lowers):
                target = d / ("lower%d" % i)
                target.mkdir(exist_ok=True)
                idmap.bind(lower, target, ns)
                seen.append(target)
        runner.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=%s,upperdir=%s,workdir=%s"
                    % (":".join(map(str, seen)), d / "upper", d / "work"), str(root)])
    finally:
        # The overlay holds its own references to its layers.
        _unmount_lowers(d, runner)
    return root


def _mount_points():
    """The mount points of this mount namespace, from /proc/self/mountinfo
    (os.path.ismount misses a bind mount from the same filesystem).  Ours hold
    no character that mountinfo escapes."""
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _unmount_lowers(d, runner=LOCAL):
    lowers = sorted(Path(d).glob("lower*"))
    mounted = _mount_points() if lowers else set()
    for lower in lowers:
        if str(lower) in mounted:
            runner.run(["umount", "-l", str(lower)], check=False)
        try:
            lower.rmdir()
        except OSError:
            pass


def unmount(domain, base=None, runner=LOCAL):
    d = instance_dir(domain, base)
    root = d / "root"
    if os.path.ismount(root):
        runner.run(["umount", str(root)], check=False)
        if os.path.ismount(root):
            runner.run(["umount", "-l", str(root)])
    _unmount_lowers(d, runner)


def remove(domain, base=None, runner=LOCAL):
    """Unmount and delete the instance's root and its disk; True if anything was there."""
    d = instance_dir(domain, base)
    found = d.exists()
    if found:
        unmount(domain, base, runner)
    found |= disks.remove(domain, d, disks_base(base), runner)
    if d.exists():
        shutil.rmtree(d)
    return found


def _inside(root, relpath):
    """The path of relpath in root, refusing any (symlinked) way out of root."""
    target = Path(root) / relpath.lstrip("/")
    real_root = os.path.realpath(root)
    parent_real = os.path.realpath(target.parent)
    if parent_real != real_root and not parent_real.startswith(real_root + os.sep):
        raise NotReady(detail="refusing %s: it leaves the instance root" % relpath)
    return target


def _makedirs(root, reldir, uid, mode=0o755):
    """Create the missing directories of reldir in root, owned by instance uid."""
    path, rel, base = Path(root), "", base_of(root)
    for part in Path(reldir.lstrip("/")).parts:
        path, rel = path / part, rel + "/" + part
        if not path.exists() and not path.is_symlink():
            _inside(root, rel)  # its parent, symlinks resolved, is in root
            path.mkdir(mode=mode)
            os.lchown(path, uid + base, uid + base)
            os.chmod(path, mode)
    _inside(root, reldir + "/x")  # and none of them leads out


def read_file(root, relpath):
    """The text of a file inside an instance root ('' when absent); never follows it out."""
    target = _inside(root, relpath)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return ""
    with os.fdopen(fd) as f:
        return f.read()


def write_file(root, relpath, content, mode=0o644, uid=0, dir_mode=0o755):
    """Write a file inside an instance root, as instance uid (in its tenant's
    range): content is text, or bytes."""
    _makedirs(root, os.path.dirname(relpath.lstrip("/")), uid, dir_mode)
    base = base_of(root)
    target = _inside(root, relpath)
    if target.is_symlink():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    os.lchown(target, uid + base, uid + base)
    os.chmod(target, mode)


def add_account(root, name, key=None, uid=USER_UID):
    """The instance owner's account in the instance: passwd, group, shadow (no
    password: keys only), a home with the owner's SSH key, and sudo when the
    image has it.  Root in the instance is the owner's anyway."""
    def append(relpath, line, mode):
        text = read_file(root, relpath)
        if not text and relpath != "/etc/shadow":
            return
        if any(l.split(":", 1)[0] == name for l in text.splitlines()):
            return
        write_file(root, relpath, text + ("" if text.endswith("\n") or not text else "\n") + line
                   + "\n", mode=mode)
    shell = "/bin/bash" if read_file(root, "/etc/shells").find("/bin/bash") >= 0 else "/bin/sh"
    append("/etc/passwd", "%s:x:%d:%d::/home/%s:%s" % (name, uid, uid, name, shell), 0o644)
    append("/etc/group", "%s:x:%d:" % (name, uid), 0o644)
    append("/etc/shadow", "%s:*:19000:0:99999:7:::" % name, 0o640)
    _makedirs(root, "/home/%s" % name, uid, 0o755)
    if key:
        write_file(root, "/home/%s/.ssh/authorized_keys" % name, key.strip() + "\n", mode=0o600,
                   uid=uid, dir_mode=0o700)
    if Path(root, "etc/sudoers.d").is_dir():
        write_file(root, "/etc/sudoers.d/oarcloud", "%s ALL=(ALL) NOPASSWD:ALL\n" % name,
                   mode=0o440)
