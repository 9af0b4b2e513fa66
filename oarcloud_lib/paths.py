"""Where oarcloud keeps its files, on the server and on nodes."""
import os
import sys
from pathlib import Path

ETC = Path(os.environ.get("OARCLOUD_ETC", "/etc/oarcloud"))
SITE_CONF = ETC / "oarcloud.conf"
MONITOR_TOKEN = ETC / "monitor.token"  # Prometheus' credentials_file (0600)
STATE = Path("/var/lib/oarcloud")
# The server's image store: nodes read it (NFS on a real site, the shared
# filesystem in the lab) and copy what they use into their own cache.
IMAGE_STORE = Path("/srv/oarcloud/images")
# Volumes (server.volumestore): each an ext4 filesystem in a file, on the
# same shared filesystem as the image store.
VOLUME_STORE = Path("/srv/oarcloud/volumes")
def volume_image(volume_id):
    """A volume's file in the store, as the server and every node see it."""
    return VOLUME_STORE / ("%d.ext4" % int(volume_id))


# Where a node mounts a volume for the moment it takes to put it in an instance.
VOLUME_MOUNTS = Path("/var/lib/oarcloud/volmounts")
LXCFS = Path("/var/lib/lxcfs")  # lxcfs's mount on a node (Debian's own place)
CACHE = STATE / "cache"
INSTANCES = STATE / "instances"
# Each instance's disk: a file holding its filesystem (oarcloud_lib.node.disk).
DISKS = STATE / "disks"
# Changes of ended instances waiting for the server's saver (--save-on-exit).
KEPT = STATE / "kept"
LOG_DIR = Path("/var/log/oarcloud")
HOOKS_INSTALL_DIR = Path("/usr/local/lib/oarcloud/hooks")
ADMIN_CLI = Path("/usr/local/bin/oarcloud-admin")
LOGROTATE = Path("/etc/logrotate.d/oarcloud")
OAR_CONF = Path("/etc/oar/oar.conf")
LAB = Path("/var/lib/oarcloud-lab")
HEAL_LOCKS = Path("/run/oarcloud/heal")
# The digest of the flows netnode last wrote on the underlay bridge (a new
# ovs-vswitchd starts without them: setup node drops it then).
UNDERLAY_FLOWS_DIGEST = Path("/run/oarcloud/net/underlay-flows.digest")
# Hooks run as root with whatever environment OAR and oardodo pass: they use
# this PATH, never the inherited one (ethtool, ip and friends live in sbin).
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ensure_dir(path, mode, uid=None, gid=None):
    """path as a directory with exactly mode (and owner, when given); True if
    anything changed.  The private ones (docs/security.md): the store and the
    node cache 0700, the instances 0711 (each 0700, its tenant's), logs 0700."""
    path = Path(path)
    changed = not path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
        changed = True
    want = (st.st_uid if uid is None else uid, st.st_gid if gid is None else gid)
    if (st.st_uid, st.st_gid) != want:
        os.chown(path, *want)
        changed = True
    return changed


def write_atomic(path, text, mode=0o600, uid=0, gid=0):
    """path holds text with exactly mode and owner, written aside then renamed
    (a reader never sees half of it; it is never world-readable on the way);
    True if it changed."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def share_dir():
    """The directory holding templates/ and hooks/ (a checkout or an install)."""
    tree = Path(__file__).resolve().parent.parent
    if (tree / "templates").is_dir() and (tree / "setup.py").is_file():
        return tree
    return Path(sys.prefix) / "share" / "oarcloud"


def templates_dir():
    return share_dir() / "templates"


def hooks_source_dir():
    return share_dir() / "hooks"
