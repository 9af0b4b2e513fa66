"""Instance root filesystems on a node: an image cache and per-instance overlays.

The node's cache (oarcloud_lib.imagecache) holds each image layer once,
unpacked and shifted into the instances' uid range (root in an instance is
UID_BASE on the node); an instance's root is an overlay of those (read-only
lowers) and its own upper directory, so N instances of an image cost one
unpacked copy plus what each changes.
"""
import logging
import os
import shutil
from pathlib import Path

from oarcloud_lib import imagecache, paths
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)
UID_BASE = imagecache.UID_BASE
UID_COUNT = imagecache.UID_COUNT
# The instance owner's uid inside the instance.
USER_UID = 1000


def instance_dir(domain, base=paths.INSTANCES):
    return Path(base) / domain


def prepare(domain, lowers, layers=(), base=paths.INSTANCES, runner=LOCAL):
    """Mount the instance's overlay root over lowers (cache entries, top first);
    returns its path.  layers (their checksums) are recorded so that the cache
    keeps them while the instance exists.  Idempotent."""
    d = instance_dir(domain, base)
    root = d / "root"
    if os.path.ismount(root):
        return root
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "layers").write_text("".join("%s\n" % sha for sha in layers))
    st = os.stat(lowers[0])
    os.chown(d / "upper", st.st_uid, st.st_gid)
    os.chmod(d / "upper", st.st_mode & 0o7777)
    runner.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s"
                % (":".join(map(str, lowers)), d / "upper", d / "work"), str(root)])
    return root


def unmount(domain, base=paths.INSTANCES, runner=LOCAL):
    root = instance_dir(domain, base) / "root"
    if os.path.ismount(root):
        runner.run(["umount", str(root)], check=False)
        if os.path.ismount(root):
            runner.run(["umount", "-l", str(root)])


def remove(domain, base=paths.INSTANCES, runner=LOCAL):
    """Unmount and delete the instance's root; True if anything was there."""
    d = instance_dir(domain, base)
    if not d.exists():
        return False
    unmount(domain, base, runner)
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
