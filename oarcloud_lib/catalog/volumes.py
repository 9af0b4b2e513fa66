"""Volumes in the catalog (docs/storage.md): who owns one, who may read it,
where it is attached.

The rules of attachment hold in the catalog, in the transaction that adds
one (the volume's row locked): read-write in one instance at a time,
read-only in many, never both at once (the index volume_one_writer backs the
first).  An attachment is released by the node that tore its instance down,
else by the server when the instance's job ends (release_domains): the
catalog never holds a volume for an instance that is gone.

    create(conn, owner, name, size)           the row (the backend makes the bytes)
    get(conn, user, name)                     user's volume NAME, or OWNER/NAME shared
    attach(conn, volume, domain, path, ro)    the rules, then the row
"""
import re

from oarcloud_lib.catalog import quotas
from oarcloud_lib.catalog.jobspec import KEYS, NAME_PATTERN
from oarcloud_lib.catalog.instances import MIN_DISK, MAX_DISK
from oarcloud_lib.errors import Conflict, NotFound, Refused

COLUMNS = ("id", "owner", "name", "size", "backend", "origin", "created")
PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}\Z")
# Where a volume may not go in an instance: what the system needs for itself.
SYSTEM_PATHS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run",
                "/sbin", "/sys", "/usr", "/var", "/tmp")
MAX_PER_INSTANCE = 8
SPEC_RE = KEYS["volume"]  # NAME or OWNER/NAME (shared), then :/PATH[:ro]


def check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise Refused(detail="bad volume name %r: lowercase letters, digits and '-', at most "
                             "32" % str(name)[:40])
    return name


def check_size(size):
    if not MIN_DISK <= size <= MAX_DISK:
        raise Refused(detail="a volume takes %d MiB to %d TiB" % (MIN_DISK >> 20, MAX_DISK >> 40))
    return size


def check_path(path):
    """An absolute path in an instance a volume may be mounted on.  Raises Refused."""
    if not isinstance(path, str) or not PATH_RE.match(path) or "//" in path \
            or any(p in (".", "..") for p in path.split("/")):
        raise Refused(detail="bad volume path %r: an absolute path of letters, digits, '.', "
                             "'_', '-' and '/', no '..'" % str(path)[:80])
    path = path.rstrip("/") or "/"
    if path in SYSTEM_PATHS or path.startswith(("/proc/", "/sys/", "/dev/", "/run/")):
        raise Refused(detail="a volume may not be mounted on %s: the system needs it "
                             "(use e.g. /data or /srv/NAME)" % path)
    return path


def parse_spec(text):
    """'NAME:/PATH[:ro]' or 'OWNER/NAME:/PATH[:ro]' -> (owner or None, name, path,
    readonly).  Raises Refused."""
    if not isinstance(text, str) or not re.fullmatch(SPEC_RE, text):
        raise Refused(detail="bad --volume %r: NAME:/PATH or NAME:/PATH:ro (OWNER/NAME for "
                             "one shared with you)" % str(text)[:80])
    ref, _, rest = text.partition(":")
    readonly = rest.endswith(":ro")
    path = check_path(rest[:-3] if readonly else rest)
    owner, _, name = ref.rpartition("/")
    return owner or None, check_name(name), path, readonly


def _rows(cur):
    return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def _select(where):
    return "SELECT %s FROM volumes WHERE %s" % (", ".join(COLUMNS), where)


def get(conn, user, name, owner=None, lock=False):
    """user's volume name, or owner's shared with user (read-only for them).
    Another user's volume is not found, exactly like a missing one.  Raises
    Refused, NotFound."""
    check_name(name)
    if owner in (None, user):
        sql, args = _select("owner = %s AND name = %s"), (user, name)
    else:
        sql = _select("owner = %s AND name = %s AND id IN (SELECT volume FROM volume_shares"
                      " WHERE account = %s)")
        args = (owner, name, user)
    rows = _rows(conn.execute(sql + (" FOR UPDATE" if lock else ""), args))
    if not rows:
        raise NotFound(what="volume", name=name if owner in (None, user) else
                       "%s/%s" % (owner, name))
    return rows[0]


def listing(conn, user):
    """user's volumes, then those shared with them, each with its attachments
    (those user may see: their own instances')."""
    rows = _rows(conn.execute(_select("owner = %s OR id IN (SELECT volume FROM volume_shares"
                                      " WHERE account = %s) ORDER BY owner <> %s, owner, name"),
                              (user, user, user)))
    return [describe(conn, r, user) for r in rows]


def describe(conn, vol, user):
    """vol with its attachments (those user may see) and, for its owner, with
    whom it is shared."""
    vol["attachments"] = attachments(conn, vol["id"])
    vol["shared_with"] = [a for (a,) in conn.execute(
        "SELECT account FROM volume_shares WHERE volume = %s ORDER BY account",
        (vol["id"],)).fetchall()] if vol["owner"] == user else []
    return vol


def attachments(conn, volume_id):
    rows = conn.execute("SELECT a.domain, i.name, i.node, a.path, a.readonly, a.state"
                        " FROM volume_attachments a LEFT JOIN instances i ON i.domain = a.domain"
                        " WHERE a.volume = %s ORDER BY a.created", (volume_id,)).fetchall()
    return [dict(zip(("domain", "instance", "node", "path", "readonly", "state"), r))
            for r in rows]


def create(conn, owner, name, size, origin=None):
    """The volume's row (the caller makes its bytes, then commits).  Raises
    Refused, Conflict (the name is taken), OverQuota."""
    check_name(name)
    check_size(size)
    conn.execute("LOCK TABLE volumes IN SHARE ROW EXCLUSIVE MODE")
    if conn.execute("SELECT 1 FROM volumes WHERE owner = %s AND name = %s",
                    (owner, name)).fetchone():
        raise Conflict(what="volume", detail="you already have a volume named %s" % name)
    quotas.require(conn, owner, {"volumes-bytes": size})
    return _rows(conn.execute("INSERT INTO volumes (owner, name, size, origin) VALUES"
                              " (%s, %s, %s, %s) RETURNING " + ", ".join(COLUMNS),
                              (owner, name, size, origin)))[0]


def require_detached(conn, vol, what):
    held = attachments(conn, vol["id"])
    if held:
        raise Conflict(what="volume", detail="%s is attached to %s: detach it first (oarcloud "
                       "volume detach %s INSTANCE) to %s it" % (
                           vol["name"], ", ".join(a["instance"] or a["domain"] for a in held),
                           vol["name"], what))


def resize(conn, vol, size):
    check_size(size)
    if size < vol["size"]:
        raise Refused(detail="a volume only grows: %s is %d MiB"
                      % (vol["name"], vol["size"] >> 20))
    quotas.require(conn, vol["owner"], {"volumes-bytes": size - vol["size"]})
    conn.execute("UPDATE volumes SET size = %s WHERE id = %s", (size, vol["id"]))


def delete(conn, vol):
    conn.execute("DELETE FROM volumes WHERE id = %s", (vol["id"],))


def share(conn, vol, account, on=True):
    if on:
        conn.execute("INSERT INTO volume_shares (volume, owner, account) VALUES (%s, %s, %s)"
                     " ON CONFLICT DO NOTHING", (vol["id"], vol["owner"], account))
    else:
        conn.execute("DELETE FROM volume_shares WHERE volume = %s AND account = %s",
                     (vol["id"], account))


def attach(conn, vol, user, domain, path, readonly):
    """Hold vol for the instance domain at path, in the caller's transaction
    with vol's row locked (get(..., lock=True)): the volume's rules, then the
    row ('attaching' until its node says 'attached').  Raises Refused, Conflict."""
    check_path(path)
    if vol["owner"] != user and not readonly:
        raise Refused(detail="%s/%s is shared with you read-only: add :ro"
                      % (vol["owner"], vol["name"]))
    held = attachments(conn, vol["id"])
    if any(a["domain"] == domain for a in held):
        raise Conflict(what="volume", detail="%s is already attached to that instance"
                       % vol["name"])
    why = _busy(held, vol, readonly)
    if why:
        raise Conflict(what="volume", detail=why)
    taken = conn.execute("SELECT count(*), bool_or(path = %s) FROM volume_attachments WHERE"
                         " domain = %s", (path, domain)).fetchone()
    if taken[1]:
        raise Conflict(what="volume", detail="another volume is mounted on %s there" % path)
    if taken[0] >= MAX_PER_INSTANCE:
        raise Refused(detail="an instance takes at most %d volumes" % MAX_PER_INSTANCE)
    conn.execute("INSERT INTO volume_attachments (volume, domain, path, readonly) VALUES"
                 " (%s, %s, %s, %s)", (vol["id"], domain, path, readonly))


def for_domain(conn, domain):
    """The attachments of an instance, with their volumes' ids and owners."""
    rows = conn.execute("SELECT a.volume, v.owner, v.name, a.path, a.readonly, a.state FROM"
                        " volume_attachments a JOIN volumes v ON v.id = a.volume WHERE"
                        " a.domain = %s ORDER BY a.created", (domain,)).fetchall()
    return [dict(zip(("volume", "owner", "name", "path", "readonly", "state"), r)) for r in rows]


def set_attached(conn, volume_id, domain):
    conn.execute("UPDATE volume_attachments SET state = 'attached' WHERE volume = %s AND"
                 " domain = %s", (volume_id, domain))


def release(conn, volume_id, domain):
    conn.execute("DELETE FROM volume_attachments WHERE volume = %s AND domain = %s",
                 (volume_id, domain))


def release_domains(conn, domains):
    """Release every attachment of these (ended) instances; returns how many."""
    if not domains:
        return 0
    return conn.execute("DELETE FROM volume_attachments WHERE domain = ANY(%s)",
                        (list(domains),)).rowcount


def _busy(held, vol, readonly):
    """Why vol, with its attachments held, cannot be attached (readonly or
    not) now, or None."""
    writer = [a for a in held if not a["readonly"]]
    if writer:
        return "%s is attached read-write to %s: a volume is read-write in one instance at a " \
               "time, or read-only in many" % (vol["name"], writer[0]["instance"]
                                                 or writer[0]["domain"])
    if held and not readonly:
        return "%s is attached read-only to %s: attach it with :ro, or detach it there first" \
               % (vol["name"], held[0]["instance"] or held[0]["domain"])
    return None


def check_launch(conn, owner, specs, count, job_id=None):
    """Refuse a launch's --volume list (CloudSpec.volumes) before anything is
    created: each volume is owner's or shared with them (then :ro), a
    read-write one goes to one instance and is free now, paths differ."""
    parsed = [parse_spec(s) for s in specs]
    if len(parsed) > MAX_PER_INSTANCE:
        raise Refused(detail="an instance takes at most %d volumes" % MAX_PER_INSTANCE)
    paths = [p for _, _, p, _ in parsed]
    if len(set(paths)) < len(paths):
        raise Refused(detail="two volumes on one path")
    for vowner, name, path, readonly in parsed:
        vol = get(conn, owner, name, vowner)
        if vol["owner"] != owner and not readonly:
            raise Refused(detail="%s/%s is shared with you read-only: add :ro" % (vowner, name))
        if not readonly and count > 1:
            raise Refused(detail="volume %s is read-write: it goes to one instance (--count 1, "
                                 "or :ro for all of them)" % name)
        # The job's own instances (a prologue run again) do not count.
        why = _busy([a for a in attachments(conn, vol["id"]) if job_id is None
                     or not a["domain"].startswith("oc%d-" % job_id)], vol, readonly)
        if why:
            raise Conflict(what="volume", detail=why)
    return parsed


def hold_for_launch(conn, owner, specs, rows):
    """Attach the launch's volumes to each of its (allocated) instances, in one
    transaction; idempotent (a prologue run again).  Raises Refused, Conflict."""
    with conn.transaction():
        for vowner, name, path, readonly in [parse_spec(s) for s in specs]:
            vol = get(conn, owner, name, vowner, lock=True)
            for row in rows:
                if not any(a["domain"] == row["domain"] for a in attachments(conn, vol["id"])):
                    attach(conn, vol, owner, row["domain"], path, readonly)
