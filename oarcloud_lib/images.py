"""Images: root filesystem tarballs (zstd) in the server's store, listed in the catalog.

The store keeps one file per content, named by its sha256; the catalog maps
names to it.  This module builds the lab's images (a busybox `tiny` one, a
debootstrap `bookworm` one); importing, saving and node caches build on it.
"""
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from oarcloud_lib import jobspec, paths
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady, Refused

LOG = logging.getLogger(__name__)
NAME_RE = re.compile(jobspec.IMAGE_RE + r"\Z")
BUSYBOX = "/bin/busybox"
ZSTD = "zstd -T0 -3"


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad image name %r: 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit, no '..'" % (name,))
    return name


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_busybox_rootfs(root, runner=LOCAL):
    """A minimal root filesystem: busybox-static, its applets, init, passwd."""
    root = Path(root)
    if not os.path.exists(BUSYBOX):
        raise NotReady(detail="%s missing (Debian package busybox-static)" % BUSYBOX)
    for d in ("bin", "sbin", "etc/init.d", "proc", "sys", "dev", "tmp", "root", "run",
              "var/log", "home", "usr/bin", "usr/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in runner.out([BUSYBOX, "--list-full"]).split():
        target = root / applet
        if not target.exists() and not target.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            depth = len(Path(applet).parts) - 1
            target.symlink_to("../" * depth + "bin/busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hostname").write_text("tiny\n")
    (root / "etc/inittab").write_text(
        "::sysinit:/etc/init.d/rcS\n"
        "console::respawn:/bin/sh\n"
        "::ctrlaltdel:/sbin/reboot\n"
        "::shutdown:/bin/umount -a -r\n")
    rcs = root / "etc/init.d/rcS"
    rcs.write_text("#!/bin/sh\n"
                   "# oarcloud tiny image: the host configures the network.\n"
                   "mkdir -p /run /tmp /var/log\n"
                   "[ -s /etc/hostname ] && hostname -F /etc/hostname\n")
    os.chmod(rcs, 0o755)


DEBIAN_INIT = """#!/bin/sh
# oarcloud's init for Debian images: the host configures hostname files and the
# network; this starts sshd under tini, which reaps orphans and forwards signals.
[ -s /etc/hostname ] && hostname "$(cat /etc/hostname)"
mkdir -p /run/sshd
ssh-keygen -A >/dev/null 2>&1
exec /usr/bin/tini -- /usr/sbin/sshd -D -e
"""


def build_debootstrap_rootfs(root, suite="bookworm", mirror=None, runner=LOCAL):
    """A Debian root filesystem with sshd, by debootstrap from the site's mirror.

    Its init is a small script (sshd under tini), not systemd: instances are
    unprivileged containers that need no service manager to run a shell and sshd.
    """
    mirror = mirror or apt_mirror()
    runner.run(["debootstrap", "--variant=minbase",
                "--include=openssh-server,iproute2,iputils-ping,procps,sudo,ca-certificates,tini",
                suite, str(root), mirror], timeout=1800)
    # sshd needs its host keys generated inside the instance at first boot;
    # images ship without them.
    for key in Path(root, "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    init = Path(root, "sbin/init")
    if init.is_symlink() or init.exists():
        init.unlink()
    init.write_text(DEBIAN_INIT)
    init.chmod(0o755)


def apt_mirror(sources=("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")):
    """The Debian mirror this machine's apt uses (debootstrap uses the same)."""
    for src in sources:
        try:
            text = Path(src).read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+)", text, re.M) or \
            re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main", text, re.M)
        if m:
            return m.group(1)
    raise NotReady(detail="no Debian mirror found in apt's sources; pass one explicitly")


def pack(root, store=paths.IMAGE_STORE, runner=LOCAL):
    """tar | zstd root into the store; returns (path, sha256, size).  Atomic."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store, prefix=".incoming-", suffix=".tar.zst")
    os.close(fd)
    try:
        runner.run(["tar", "--numeric-owner", "--xattrs", "-I", ZSTD, "-C", str(root),
                    "-cf", tmp, "."], timeout=3600)
        digest = sha256_file(tmp)
        final = store / ("%s.tar.zst" % digest)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return final, digest, final.stat().st_size


def get(conn, name):
    row = conn.execute("SELECT name, owner, visibility, format, size, sha256, parent, created,"
                       " description FROM images WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    keys = ("name", "owner", "visibility", "format", "size", "sha256", "parent", "created",
            "description")
    return dict(zip(keys, row))


def register(conn, name, sha256, size, owner=None, visibility="private", parent=None,
             description=""):
    conn.execute("INSERT INTO images (name, owner, visibility, format, size, sha256, parent,"
                 " description) VALUES (%s, %s, %s, 'tar.zst', %s, %s, %s, %s)",
                 (name, owner, visibility, size, sha256, parent, description))


def ensure_site_image(conn, name, build, description, store=paths.IMAGE_STORE, runner=LOCAL):
    """Build and register a public site image unless it is there and intact; True if built."""
    check_name(name)
    row = get(conn, name)
    if row and (Path(store) / ("%s.tar.zst" % row["sha256"])).exists():
        return False
    with tempfile.TemporaryDirectory(prefix="oarcloud-image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        build(root)
        _, digest, size = pack(root, store, runner)
    with conn.transaction():
        if row:
            conn.execute("UPDATE images SET sha256 = %s, size = %s WHERE name = %s",
                         (digest, size, name))
        else:
            register(conn, name, digest, size, visibility="public", description=description)
    return True
