"""Instance root filesystems on a node: an image cache and per-instance overlays.

The cache holds each image once, unpacked and shifted into the instances' uid
range (root in an instance is UID_BASE on the node); an instance's root is an
overlay of that (read-only lower) and its own upper directory, so N instances
of an image cost one unpacked copy plus what each changes.
"""
import fcntl
import logging
import os
import shutil
from pathlib import Path

from oarcloud_lib import images, paths
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotFound, NotReady

LOG = logging.getLogger(__name__)
# Instances map their uids 0..65535 to UID_BASE..UID_BASE+65535 on the node:
# root in an instance is not root on the node.  One range per node for now,
# so the cache can be shared; above the usual /etc/subuid ranges.
UID_BASE = 1000000
UID_COUNT = 65536
# The instance owner's uid inside the instance.
USER_UID = 1000


def shift_ownership(root, base=UID_BASE):
    """Add base to the owner and group of every file under root (no symlink following)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(name)
            if st.st_uid < base:
                mode = st.st_mode
                os.lchown(name, st.st_uid + base, st.st_gid + base)
                # chown clears setuid/setgid bits: put them back (not on symlinks).
                if mode & 0o6000 and not os.path.islink(name):
                    os.chmod(name, mode & 0o7777)


def cached(sha256, cache=paths.CACHE, store=paths.IMAGE_STORE, runner=LOCAL):
    """The unpacked, shifted image with this checksum, fetched from the store if needed."""
    cache = Path(cache)
    final = cache / sha256
    if (final / ".ready").exists():
        return final / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / (".%s.lock" % sha256), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".ready").exists():
            return final / "rootfs"
        source = Path(store) / ("%s.tar.zst" % sha256)
        if not source.exists():
            raise NotFound(what="image file in the store", name=str(source))
        if images.sha256_file(source) != sha256:
            raise NotReady(detail="image %s in the store is corrupt (checksum differs)" % sha256)
        tmp = cache / (".%s.tmp" % sha256)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rootfs").mkdir(parents=True)
        runner.run(["tar", "--numeric-owner", "--xattrs", "-I", "zstd", "-C", str(tmp / "rootfs"),
                    "-xf", str(source)], timeout=1800)
        shift_ownership(tmp / "rootfs")
        (tmp / ".ready").touch()
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    return final / "rootfs"


def instance_dir(domain, base=paths.INSTANCES):
    return Path(base) / domain


def prepare(domain, lower, base=paths.INSTANCES, runner=LOCAL):
    """Mount the instance's overlay root; returns its path.  Idempotent."""
    d = instance_dir(domain, base)
    root = d / "root"
    if os.path.ismount(root):
        return root
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    st = os.stat(lower)
    os.chown(d / "upper", st.st_uid, st.st_gid)
    os.chmod(d / "upper", st.st_mode & 0o7777)
    runner.run(["mount", "-t", "overlay", "overlay", "-o",
                "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, d / "upper", d / "work"),
                str(root)])
    return root


def remove(domain, base=paths.INSTANCES, runner=LOCAL):
    """Unmount and delete the instance's root; True if anything was there."""
    d = instance_dir(domain, base)
    if not d.exists():
        return False
    root = d / "root"
    if os.path.ismount(root):
        runner.run(["umount", str(root)], check=False)
        if os.path.ismount(root):
            runner.run(["umount", "-l", str(root)])
    shutil.rmtree(d)
    return True


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
    path, rel = Path(root), ""
    for part in Path(reldir.lstrip("/")).parts:
        path, rel = path / part, rel + "/" + part
        if not path.exists() and not path.is_symlink():
            _inside(root, rel)  # its parent, symlinks resolved, is in root
            path.mkdir(mode=mode)
            os.lchown(path, uid + UID_BASE, uid + UID_BASE)
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
    """Write a file inside an instance root, as instance uid (shifted)."""
    _makedirs(root, os.path.dirname(relpath.lstrip("/")), uid, dir_mode)
    target = _inside(root, relpath)
    if target.is_symlink():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.lchown(target, uid + UID_BASE, uid + UID_BASE)
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
