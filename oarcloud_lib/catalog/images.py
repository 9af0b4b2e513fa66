"""Images in the catalog: names, owners, rights, layers; and the site's builds.

An image is a file of the store (oarcloud_lib.server.imagestore) under a name.  A
saved image is a layer (the instance's changes) over its parent; launching it
stacks the chain of layers (depth 0 is a whole root filesystem).  Rights: the
owner and the users it is shared with may launch or save from a private
image; everybody may use a public one; only its owner (or an admin) may
share, publish or delete it.  Another user's private image is "not found",
exactly like a missing one.
"""
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from oarcloud_lib.catalog import jobspec, quotas, usergroups
from oarcloud_lib.server import imagestore
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, NotReady, Refused

LOG = logging.getLogger(__name__)
NAME_RE = re.compile(jobspec.IMAGE_RE + r"\Z")
BUSYBOX = "/bin/busybox"
SITE_NAMES = ("tiny", "bookworm")
# Characters that may not appear in a description (terminal escapes, controls):
# descriptions are printed in other users' listings.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad image name %r: 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit, no '..'" % (name,))
    return name


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
                "--include=openssh-server,iproute2,iputils-ping,procps,sudo,ca-certificates,tini,"
                "rsync",
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


# A chain deeper than this is flattened at save (each level is one more
# overlay lower directory on every launch).
MAX_DEPTH = 8
COLUMNS = ("name", "owner", "visibility", "format", "size", "sha256", "parent", "depth",
           "unpacked", "created", "description")
PUBLISH_POLICIES = ("owner", "admin")


def _rows(cur):
    return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def get(conn, name):
    rows = _rows(conn.execute("SELECT %s FROM images WHERE name = %%s" % ", ".join(COLUMNS),
                              (name,)))
    return rows[0] if rows else None


# An image row i that user (given three times) may launch or save from.
_USABLE = ("(i.visibility = 'public' OR i.owner = %%s OR EXISTS (SELECT 1 FROM image_shares s"
           " WHERE s.image = i.name AND %s))" % usergroups.granted("s"))


def usable(conn, name, user=None):
    """The image row if user may launch or save from it (user None: a user's own
    connection, where row-level security already hides the rest).  Raises NotFound."""
    check_name(name)
    sql = "SELECT %s FROM images i WHERE i.name = %%s" % ", ".join("i." + c for c in COLUMNS)
    args = [name]
    if user is not None:
        sql += " AND " + _USABLE
        args += [user, user, user]
    rows = _rows(conn.execute(sql, args))
    if not rows:
        raise NotFound(what="image", name=name)
    return rows[0]


def list_usable(conn, user=None):
    sql = "SELECT %s FROM images i" % ", ".join("i." + c for c in COLUMNS)
    args = []
    if user is not None:
        sql += " WHERE " + _USABLE
        args = [user, user, user]
    return _rows(conn.execute(sql + " ORDER BY i.name", args))


def shares(conn, name):
    """Whom the image is shared with: users, then @GROUPs."""
    return [r[0] for r in conn.execute(
        "SELECT coalesce(account, '@' || usergroup) FROM image_shares WHERE image = %s"
        " ORDER BY usergroup NULLS FIRST, account", (name,))]


def chain(conn, top):
    """The image row top and the parents it is a layer over, top first."""
    out = [top]
    while out[-1]["depth"] > 0:
        if len(out) > MAX_DEPTH + 1:
            raise Conflict(what="image", detail="%s: its chain of layers is too deep"
                           % top["name"])
        parent = get(conn, out[-1]["parent"])
        if parent is None:
            raise NotFound(what="image", name=out[-1]["parent"])
        out.append(parent)
    return out


def site_names():
    """Names only the site's own images may have: the built-in ones and the site's
    default image (a user's image by that name would become everyone's default)."""
    from oarcloud_lib import config
    try:
        return set(SITE_NAMES) | {config.load(missing_ok=True).default_image}
    except OSError:  # a user's own check (the config is root's): the broker checks again
        return set(SITE_NAMES)


def check_new_name(conn, name, site=False):
    """A name for a new image (a site image's when site): well formed, not reserved
    for the site, and neither an image nor asked by a save.  Raises Refused, Conflict."""
    check_name(name)
    if not site and name in site_names():
        raise Refused(detail="image name %s is reserved for the site's own image: pick "
                             "another" % name)
    if get(conn, name) is not None:
        raise Conflict(what="image", detail="an image named %s exists (pick another name)" % name)
    if conn.execute("SELECT 1 FROM image_saves WHERE image = %s AND state IN"
                    " ('pending', 'kept', 'saving')", (name,)).fetchone():
        raise Conflict(what="image", detail="a save to %s is under way" % name)
    return name


def check_description(text):
    """A description of at most 500 printable characters.  Raises Refused."""
    if not isinstance(text, str) or len(text) > 500 or CONTROL_RE.search(text):
        raise Refused(detail="bad description: at most 500 characters, no control characters "
                             "or terminal escapes")
    return text


def register(conn, name, sha256, size, owner=None, visibility="private", parent=None,
             depth=0, unpacked=0, description=""):
    """Record an image whose file is whole in the store; its bytes count against
    the owner's `images-bytes` quota.  Refused, the file leaves the store unless
    another image has the same content.  Raises Refused, OverQuota, Conflict."""
    try:
        check_description(description)
        with conn.transaction():
            quotas.require(conn, owner, {"images-bytes": size})
            conn.execute("INSERT INTO images (name, owner, visibility, format, size, sha256,"
                         " parent, depth, unpacked, description) VALUES (%s, %s, %s, 'tar.zst',"
                         " %s, %s, %s, %s, %s, %s)", (name, owner, visibility, size, sha256,
                                                      parent, depth, unpacked, description))
    except BaseException:
        if conn.execute("SELECT 1 FROM images WHERE sha256 = %s", (sha256,)).fetchone() is None:
            imagestore.remove(sha256)
        raise


def owned(conn, name, user, admin=False):
    """The image row if user may change it (its owner, or an admin).  Raises
    NotFound when user may not even see it, Refused when they may only use it."""
    row = get(conn, name) if admin else usable(conn, name, user)
    if row is None:
        raise NotFound(what="image", name=name)
    if not admin and row["owner"] != user:
        raise Refused(detail="image %s is not yours (owner: %s)" % (name, row["owner"] or "the site"))
    return row


def share(conn, name, user, grantee, admin=False, on=True):
    """Let grantee (a user, or @GROUP: each of its members) use the image, or
    stop it (on False); True if that changed anything.  An image shared with
    nobody any more is private again.  Raises NotFound, Refused."""
    owned(conn, name, user, admin)
    with conn.transaction():
        kind, who = usergroups.require_grantee(conn, grantee)
        if on:
            changed = conn.execute("INSERT INTO image_shares (image, %s) VALUES (%%s, %%s)"
                                   " ON CONFLICT DO NOTHING" % kind, (name, who)).rowcount == 1
            conn.execute("UPDATE images SET visibility = 'shared' WHERE name = %s"
                         " AND visibility = 'private'", (name,))
        else:
            changed = conn.execute("DELETE FROM image_shares WHERE image = %%s AND %s = %%s"
                                   % kind, (name, who)).rowcount == 1
            conn.execute("UPDATE images SET visibility = 'private' WHERE name = %s AND"
                         " visibility = 'shared' AND NOT EXISTS (SELECT 1 FROM image_shares"
                         " WHERE image = %s)", (name, name))
    return changed


def publish(conn, name, user, admin=False, policy="owner"):
    """Make the image public; True if it was not.  Owners may publish when the
    site's policy is `owner`; only admins when it is `admin`."""
    if policy not in PUBLISH_POLICIES:
        raise NotReady(detail="bad image publish policy %r in the site config" % policy)
    if policy == "admin" and not admin:
        raise Refused(detail="on this site only admins publish images (ask one)")
    row = owned(conn, name, user, admin)
    # A public layer is useless over a parent others may not read.
    for parent in chain(conn, row)[1:]:
        if parent["visibility"] != "public":
            raise Refused(detail="image %s is a layer over %s, which is not public: publish "
                          "that first" % (name, parent["name"]))
    if row["visibility"] == "public":
        return False
    conn.execute("UPDATE images SET visibility = 'public' WHERE name = %s", (name,))
    return True


def users_of(conn, name):
    """Why the image cannot go: its live instances, its layers, its pending saves."""
    why = ["instance %s (job %s)" % r for r in conn.execute(
        "SELECT name, job_id FROM instances WHERE image = %s AND state NOT IN"
        " ('deleted', 'failed') ORDER BY job_id, idx", (name,))]
    why += ["image %s (a layer over it)" % r for r in conn.execute(
        "SELECT name FROM images WHERE parent = %s AND depth > 0 ORDER BY name", (name,))]
    why += ["the save to %s of instance %s" % r for r in conn.execute(
        "SELECT s.image, i.name FROM image_saves s JOIN instances i ON i.domain = s.domain"
        " WHERE i.image = %s AND s.state IN ('pending', 'kept', 'saving')", (name,))]
    return why


def delete(conn, name, user, admin=False, store=None):
    """Delete the image (and its store file when no other image has the same
    content).  Refused while anything uses it."""
    with conn.transaction():
        conn.execute("LOCK TABLE images IN SHARE ROW EXCLUSIVE MODE")
        row = owned(conn, name, user, admin)
        why = users_of(conn, name)
        if why:
            raise Conflict(what="image", detail="%s is in use by %s" % (name, ", ".join(why[:5])))
        conn.execute("DELETE FROM images WHERE name = %s", (name,))
        last = conn.execute("SELECT 1 FROM images WHERE sha256 = %s",
                            (row["sha256"],)).fetchone() is None
    if last:
        imagestore.remove(row["sha256"], store)
    return row


def ensure_site_image(conn, name, build, description, store=None):
    """Build and register a public site image unless it is there and intact; True if built."""
    check_name(name)
    row = get(conn, name)
    if row and row["owner"] is not None:
        # Never adopt a user's image as the site's (anyone would launch it by default).
        raise Conflict(what="image %s" % name,
                       detail="it belongs to user %s, not to the site: an admin deletes it "
                              "(oarcloud-admin user delete, or the user's image delete), or the "
                              "site picks another name" % row["owner"])
    if row and imagestore.path_of(row["sha256"], store).exists():
        return False
    with tempfile.TemporaryDirectory(prefix="oarcloud-image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        build(root)
        digest, size, unpacked = imagestore.pack(root, store)
    with conn.transaction():
        if row:
            conn.execute("UPDATE images SET sha256 = %s, size = %s, unpacked = %s, depth = 0"
                         " WHERE name = %s", (digest, size, unpacked, name))
        else:
            register(conn, name, digest, size, visibility="public", unpacked=unpacked,
                     description=description)
    return True
